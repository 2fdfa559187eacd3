"""Training with Keras ``fit``: the diffusion objectives and the noise-aware classifier.

- :mod:`~tfddim.training.diffusion`: :class:`DiffusionModel` (L_simple, L_hybrid, L_vlb, EMA, label dropout).
- :mod:`~tfddim.training.classifier`: :class:`NoisyClassifierModel` (guided-diffusion's p_φ(y | x_t, t)).
"""

from tfddim.training.classifier import NoisyClassifierModel, accuracy_by_t
from tfddim.training.diffusion import DiffusionModel, warmup_schedule

__all__ = ["DiffusionModel", "warmup_schedule", "NoisyClassifierModel", "accuracy_by_t"]
