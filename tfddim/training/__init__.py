"""Training with Keras ``fit``: a shared noised-training base, the diffusion objectives and the noise-aware classifier.

- :mod:`~tfddim.training.base`: :class:`NoisedTrainer` (stateless global-batch draws of t and ε, the EMA
  network, the multi-worker build, ``train_step``/``test_step`` templates) and the run-level enums
  :class:`Precision`, :class:`Strategy`.
- :mod:`~tfddim.training.diffusion`: :class:`DiffusionModel` (L_simple, L_hybrid, L_vlb as :class:`Loss`,
  importance sampling, label dropout).
- :mod:`~tfddim.training.classifier`: :class:`NoisyClassifierModel` (guided-diffusion's p_φ(y | x_t, t)).
- :mod:`~tfddim.training.autoencoder`: :class:`AutoencoderModel` (latent diffusion's KL-regularised first stage).
"""

from tfddim.training.autoencoder import AutoencoderModel, Reconstruction
from tfddim.training.base import NoisedTrainer, Precision, Strategy
from tfddim.training.classifier import NoisyClassifierModel, accuracy_by_t
from tfddim.training.diffusion import DiffusionModel, Loss, warmup_schedule

__all__ = ["NoisedTrainer", "Precision", "Strategy", "DiffusionModel", "Loss", "warmup_schedule",
           "NoisyClassifierModel", "accuracy_by_t", "AutoencoderModel", "Reconstruction"]
