"""DDPM ancestral sampling on the (respaced) schedule: x_prev = μ̃(x_t, x̂₀) + Σ^½·z (DDPM Algorithm 2).

The mean is the posterior mean of DDPM eq. 7 with the strided β (improved DDPM §4); Σ is β̃, β or the
learned interpolation of improved DDPM eq. 15 (:class:`~tfddim.diffusion.kinds.Variance`). Classifier
guidance shifts the mean: μ + s·Σ·∇ₓ log p(y|x_t) (Dhariwal & Nichol, Algorithm 1).
"""

from __future__ import annotations

import tensorflow as tf

from tfddim.diffusion import steps
from tfddim.diffusion.kinds import Variance
from tfddim.sampling.solvers.base import Coefficients, Denoised, Solver

__all__ = ["DDPM"]


class DDPM(Solver):
    uses_noise = True

    def __init__(self, variance: Variance = Variance.FIXED_SMALL):
        self.variance = Variance(variance)

    def needs_noise(self, eta):
        return tf.constant(True)

    def step(self, x, d: Denoised, c: Coefficients, scale, noise, state):
        mean = steps.posterior_mean(x, d.x0, c.alpha_bar_t, c.alpha_bar_prev)
        log_var = steps.ddpm_log_variance(self.variance, c.alpha_bar_t, c.alpha_bar_prev, d.v)
        if d.grad is not None:
            mean = steps.classifier_guided_mean(mean, log_var, d.grad, scale)
        return steps.ddpm_step(mean, log_var, noise), d.x0, state
