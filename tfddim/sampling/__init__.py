"""Sampling: typed options, one solver module per method, ONE generic loop, and the functional API.

- :mod:`~tfddim.sampling.options`: enums, guidance, :class:`SamplerConfig` (parsed at the edge).
- :mod:`~tfddim.sampling.conditioning`: the one :class:`Conditioning` value the loop carries.
- :mod:`~tfddim.sampling.solvers`: DDIM, DDPM, DPM-Solver++(2M), DPM-Solver++(3M), DPM-Solver++(2M) SDE and
  UniPC, one module each, behind one interface.
- :mod:`~tfddim.sampling.recommended`: the measured best deterministic solver and spacing per step budget.
- :mod:`~tfddim.sampling.sampler`: :class:`Sampler`, the ``tf.while_loop`` that knows no method names.
- :mod:`~tfddim.sampling.functional`: ``sample``, ``encode``, ``decode``, ``slerp``, ``interpolate``.
"""

from tfddim.sampling.conditioning import Conditioning
from tfddim.sampling.functional import SamplerCache, config_for, decode, encode, interpolate, sample, slerp
from tfddim.sampling.options import (SIGMA_HAT, ClassifierFreeGuidance, ClassifierGuidance, FinalAlpha, Guidance,
                                     Method, Prediction, SamplerConfig, SigmaHat, Variance, parse_eta)
from tfddim.sampling.recommended import recommended
from tfddim.sampling.sampler import Sampler, Trajectory

__all__ = [
    "Method", "Variance", "Prediction", "FinalAlpha", "SigmaHat", "SIGMA_HAT", "parse_eta",
    "ClassifierGuidance", "ClassifierFreeGuidance", "Guidance", "SamplerConfig", "Conditioning",
    "Sampler", "Trajectory", "SamplerCache", "config_for",
    "sample", "encode", "decode", "slerp", "interpolate", "recommended",
]
