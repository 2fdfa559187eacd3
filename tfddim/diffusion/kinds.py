"""The choices the diffusion math itself knows: which variance, which decoder, what a network predicts.

They are enums, parsed once where a user's value enters (configs, the CLI,
:class:`tfddim.sampling.SamplerConfig`, an export manifest) with
:func:`parse_kind`, whose error names the option; the math compares members,
never strings.
"""

from __future__ import annotations

import enum

__all__ = ["Variance", "Decoder", "Prediction", "FinalAlpha", "parse_kind"]


def parse_kind(cls, value, name: str):
    """``cls(value)``, or a ``ValueError`` naming the option and its choices."""
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"unknown {name} {value!r}; expected one of {[m.value for m in cls]}") from None


class Variance(str, enum.Enum):
    """The reverse-process variance Σ (see :func:`tfddim.diffusion.steps.ddpm_log_variance`)."""

    FIXED_SMALL = "fixed_small"
    FIXED_LARGE = "fixed_large"
    LEARNED_RANGE = "learned_range"


class Decoder(str, enum.Enum):
    """The L_0 decoder of the bound: ``discretized`` (8-bit images in [−1, 1]) or ``gaussian`` (continuous data)."""

    DISCRETIZED = "discretized"
    GAUSSIAN = "gaussian"


class Prediction(str, enum.Enum):
    """What the network predicts (diffusers' ``prediction_type`` names)."""

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V = "v_prediction"


class FinalAlpha(str, enum.Enum):
    """ᾱ_prev after the last listed timestep: ``one`` (the clean level) or ``alpha_0`` (diffusers'
    ``set_alpha_to_one=False``)."""

    ONE = "one"
    ALPHA_0 = "alpha_0"
