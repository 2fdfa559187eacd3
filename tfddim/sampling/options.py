"""The sampler's typed options, parsed once at the edge: enums, guidance, :class:`SamplerConfig`.

Every option that is a choice is an enum here (strings are accepted and
parsed once, in ``__post_init__`` or :func:`parse_enum`, with an error naming
the option); nothing inside a step compares strings.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Optional, Union

# FinalAlpha lives in diffusion.kinds so that the export manifest (tfddim.export.layout) reads it without TensorFlow
from tfddim.diffusion.kinds import FinalAlpha, Prediction, Variance
from tfddim.diffusion.kinds import parse_kind as parse_enum

__all__ = [
    "Method",
    "Variance",
    "Prediction",
    "FinalAlpha",
    "SigmaHat",
    "SIGMA_HAT",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "Guidance",
    "SamplerConfig",
    "parse_enum",
    "parse_eta",
]


class Method(str, enum.Enum):
    """The solver (one module each in :mod:`tfddim.sampling.solvers`).

    ``ddim``: the generalized step of eq. 12 with σ(η); ``ddpm``: ancestral sampling with a DDPM variance;
    ``dpmpp_2m``: DPM-Solver++(2M), the second-order multistep solver of the probability-flow ODE in its
    data-prediction form (Lu et al. 2022), first order on the first and the final step (deterministic);
    ``dpmpp_3m``: DPM-Solver++(3M), its third-order multistep form, warming up at orders 1 and 2 (deterministic);
    ``dpmpp_2m_sde``: DPM-Solver++(2M) SDE, the second-order multistep solver of the reverse SDE (midpoint
    variant; stochastic, takes noise but no η);
    ``unipc``: UniPC-3 (Zhao et al. 2023), a predictor-corrector multistep solver with B(h) = e^h − 1 in data
    prediction whose corrector reuses the next step's network call (deterministic).
    """

    DDIM = "ddim"
    DDPM = "ddpm"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_3M = "dpmpp_3m"
    DPMPP_2M_SDE = "dpmpp_2m_sde"
    UNIPC = "unipc"


class SigmaHat(str, enum.Enum):
    """The DDIM paper's σ̂ = √(1 − ᾱ_t/ᾱ_prev) as a value of η (Table 1's σ̂ row).

    √(1 − ᾱ_prev − σ̂²) can be imaginary, so, as in the paper's code, σ̂ is the
    DDPM mean with variance β: ``Method.DDPM`` with ``Variance.FIXED_LARGE``.
    """

    SIGMA_HAT = "sigma_hat"


SIGMA_HAT = SigmaHat.SIGMA_HAT


def parse_eta(value):
    """η as given by a user: a number in [0, 1] (returned as float) or σ̂ (``"sigma_hat"``, ``"σ̂"``, :data:`SIGMA_HAT`)."""
    if isinstance(value, str):
        if value in ("sigma_hat", "σ̂"):
            return SIGMA_HAT
        raise ValueError(f"eta must be a number in [0, 1] or 'sigma_hat', got {value!r}")
    try:
        eta = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"eta must be a number in [0, 1] or 'sigma_hat', got {value!r}") from None
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {value}")
    return eta


@dataclasses.dataclass(frozen=True)
class ClassifierGuidance:
    """Guide with a noise-aware classifier's gradient (Dhariwal & Nichol).

    ``log_prob_fn(x_t, t, labels)`` returns log p(y | x_t) as ``[B]``; its
    gradient in x_t is taken with ``tf.GradientTape`` inside the loop. Each
    solver applies it where its paper says: DDIM and DPM-Solver++ use
    ε̂ = ε − s·√(1−ᾱ)·∇ (eq. 14 of the ADM paper); DDPM shifts the mean by s·Σ·∇.
    """

    log_prob_fn: Callable


@dataclasses.dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Classifier-free guidance ε_u + w·(ε_c − ε_u) for a model trained with label dropout.

    The unconditional branch calls the model with ``null_label``; both branches
    run in one batched forward pass.
    """

    null_label: int


Guidance = Union[None, ClassifierGuidance, ClassifierFreeGuidance]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Everything about a sampler that is fixed at trace time.

    Attributes:
        method: :class:`Method` (``"ddim"``, ``"ddpm"``, ``"dpmpp_2m"``, ``"dpmpp_3m"``, ``"dpmpp_2m_sde"``,
            ``"unipc"``).
        variance: DDPM variance, :class:`Variance`: ``"fixed_small"`` (β̃), ``"fixed_large"`` (β), ``"learned_range"``.
        prediction_type: :class:`Prediction`: ``"epsilon"``, ``"sample"`` (x₀) or ``"v_prediction"``.
        learned_variance: the network returns 2C channels on the last axis,
            the prediction then the variance interpolation v (improved DDPM).
        clip_x0: ``(low, high)`` to clip x̂₀ to, or None.
        dynamic_threshold: a percentile in (0, 1] for Imagen's dynamic
            thresholding of x̂₀, or None; ``threshold_max`` bounds s.
        final_alpha_cumprod: :class:`FinalAlpha`: ``"one"`` (ᾱ_prev = 1 after the last step) or
            ``"alpha_0"`` (ᾱ_prev = ᾱ_0, diffusers' ``set_alpha_to_one=False``).
        guidance: None, :class:`ClassifierGuidance` or :class:`ClassifierFreeGuidance`.
        class_conditional: the network takes labels, ``model_fn(x_t, t, labels)``
            (implied by classifier-free guidance).
        jit_compile: compile the network call with XLA (``tf.function(jit_compile=True)``),
            once per input shape. The loop, its checks and its random numbers stay
            as they are, so samples equal the uncompiled ones to float rounding.
            (Compiling the whole loop was measured barely faster, 175 against 188 ms,
            but XLA then draws different stateless noise and drops the assertions.)
    """

    method: Method = Method.DDIM
    variance: Variance = Variance.FIXED_SMALL
    prediction_type: Prediction = Prediction.EPSILON
    learned_variance: bool = False
    clip_x0: Optional[tuple] = None
    dynamic_threshold: Optional[float] = None
    threshold_max: float = 1.0
    final_alpha_cumprod: FinalAlpha = FinalAlpha.ONE
    guidance: Guidance = None
    class_conditional: bool = False
    jit_compile: bool = False

    def __post_init__(self) -> None:
        for name, cls in (("method", Method), ("variance", Variance), ("prediction_type", Prediction),
                          ("final_alpha_cumprod", FinalAlpha)):
            object.__setattr__(self, name, parse_enum(cls, getattr(self, name), name))
        if self.variance is Variance.LEARNED_RANGE and not self.learned_variance:
            raise ValueError("variance 'learned_range' needs learned_variance=True (a network with 2C output channels)")
        if self.clip_x0 is not None:
            low, high = (float(v) for v in self.clip_x0)
            if not low < high:
                raise ValueError(f"clip_x0 must be (low, high) with low < high, got {self.clip_x0!r}")
            object.__setattr__(self, "clip_x0", (low, high))
        if self.dynamic_threshold is not None and not 0.0 < float(self.dynamic_threshold) <= 1.0:
            raise ValueError(f"dynamic_threshold must be a percentile in (0, 1], got {self.dynamic_threshold!r}")
        if self.clip_x0 is not None and self.dynamic_threshold is not None:
            raise ValueError("use either clip_x0 or dynamic_threshold, not both")
        if float(self.threshold_max) < 1.0:
            raise ValueError(f"threshold_max must be >= 1, got {self.threshold_max!r}")
        if self.guidance is not None and not isinstance(self.guidance, (ClassifierGuidance, ClassifierFreeGuidance)):
            raise ValueError("guidance must be None, ClassifierGuidance(...) or ClassifierFreeGuidance(...)")
        if isinstance(self.guidance, ClassifierFreeGuidance):
            object.__setattr__(self, "class_conditional", True)

    @property
    def needs_labels(self) -> bool:
        return self.class_conditional or self.guidance is not None
