"""The variational bound's terms: Gaussian KLs and the discretized decoder (pure TF).

Improved DDPM (Nichol & Dhariwal 2021, §2–3) writes the bound as
L_vlb = L_0 + L_1 + … + L_{T−1} + L_T with

    L_t     = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t))       (t ≥ 1)
    L_0     = −log p_θ(x_0 | x_1)   (discretized Gaussian decoder for 8-bit data)
    L_T     = KL(q(x_T | x_0) ‖ N(0, I))                          (no parameters)

All terms here are in bits per dimension (nats / log 2, averaged over every
axis but the batch). Our timesteps are 0-based, so "t = 0" below is L_0's
index and the network's timestep t ↔ the paper's t + 1.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfddim.diffusion import steps
from tfddim.diffusion.kinds import Decoder, Variance, parse_kind
from tfddim.diffusion.steps import select_timestep
from tfddim.diffusion.schedules import Schedule

__all__ = [
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_likelihood",
    "LikelihoodTerms",
]

_LOG2 = math.log(2.0)


def _mean_flat(x):
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) elementwise, in nats: ½(−1 + log σ₂² − log σ₁² + σ₁²/σ₂² + (μ₁−μ₂)²/σ₂²)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + tf.exp(logvar1 - logvar2) + tf.square(mean1 - mean2) * tf.exp(-logvar2))


def approx_standard_normal_cdf(x):
    """Φ(x) ≈ ½(1 + tanh(√(2/π)(x + 0.044715x³))) (the approximation DDPM's decoder uses)."""
    return 0.5 * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log p(x) of 8-bit data in [−1, 1] under N(means, exp(log_scales)²) integrated over each bin (DDPM §3.3).

    Bins have width 2/255; the outermost bins extend to ±∞. Elementwise, in nats.
    """
    centered = x - means
    inv_stdv = tf.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    tiny = tf.constant(1e-12, x.dtype)
    log_cdf_plus = tf.math.log(tf.maximum(cdf_plus, tiny))
    log_one_minus_cdf_min = tf.math.log(tf.maximum(1.0 - cdf_min, tiny))
    log_cdf_delta = tf.math.log(tf.maximum(cdf_plus - cdf_min, tiny))
    return tf.where(x < -0.999, log_cdf_plus, tf.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def gaussian_log_likelihood(x, means, log_scales):
    """log N(x; means, exp(log_scales)²) elementwise, in nats (the decoder for continuous data)."""
    return -0.5 * (math.log(2.0 * math.pi) + 2.0 * log_scales + tf.square(x - means) * tf.exp(-2.0 * log_scales))


class LikelihoodTerms:
    """Per-timestep bound terms L_t for a schedule (float64 arrays gathered per batch element).

    Args:
        schedule: the training schedule (full T, not respaced).
        decoder: a :class:`~tfddim.diffusion.kinds.Decoder`: ``"discretized"`` (8-bit images in [−1, 1])
            or ``"gaussian"`` (continuous data).
    """

    def __init__(self, schedule: Schedule, decoder=Decoder.DISCRETIZED):
        self.schedule = schedule
        self.decoder = parse_kind(Decoder, decoder, "decoder")
        pv = schedule.posterior_variance
        self._arrays = {
            "alphas_cumprod": tf.constant(schedule.alphas_cumprod),
            "alphas_cumprod_prev": tf.constant(schedule.alphas_cumprod_prev),
            "log_beta": tf.constant(np.log(schedule.betas)),
            # improved DDPM: log β̃ with β̃_0 := β̃_1 (β̃_0 = 0), and fixed_large with β_0 := β̃_1
            "log_beta_tilde": tf.constant(schedule.posterior_log_variance_clipped),
            "log_beta_large": tf.constant(np.log(np.append(pv[1], schedule.betas[1:]))),
        }

    def gather(self, name, t, x):
        return select_timestep(self._arrays[name], t, x)

    def model_log_variance(self, kind, t, x, v=None):
        """log Σ_θ at (full-schedule) timestep t for a :class:`~tfddim.diffusion.kinds.Variance` (``learned_range`` with v)."""
        kind = parse_kind(Variance, kind, "variance")
        log_beta_tilde = self.gather("log_beta_tilde", t, x)
        if kind is Variance.FIXED_SMALL:
            return log_beta_tilde + tf.zeros_like(x)
        if kind is Variance.FIXED_LARGE:
            return self.gather("log_beta_large", t, x) + tf.zeros_like(x)
        return steps.interpolate_log_variance(self.gather("log_beta", t, x), log_beta_tilde, v)

    def terms_bpd(self, x0, x_t, t, x0_hat, model_log_variance):
        """L_t in bits/dim per example: KL to the true posterior for t ≥ 1, the decoder NLL L_0 at t = 0.

        ``x0_hat`` is the model's x̂₀ (the mean is the posterior mean at x̂₀, DDPM eq. 7).
        """
        ab_t = self.gather("alphas_cumprod", t, x_t)
        ab_prev = self.gather("alphas_cumprod_prev", t, x_t)
        true_mean = steps.posterior_mean(x_t, x0, ab_t, ab_prev)
        true_logvar = self.gather("log_beta_tilde", t, x_t)
        model_mean = steps.posterior_mean(x_t, x0_hat, ab_t, ab_prev)
        kl = _mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_log_variance)) / _LOG2
        decoder = discretized_gaussian_log_likelihood if self.decoder is Decoder.DISCRETIZED else gaussian_log_likelihood
        nll = -_mean_flat(decoder(x0, model_mean, 0.5 * model_log_variance)) / _LOG2
        return tf.where(tf.equal(t, 0), nll, kl)

    def prior_bpd(self, x0):
        """L_T = KL(q(x_T | x_0) ‖ N(0, I)) in bits/dim per example."""
        last = tf.fill([tf.shape(x0)[0]], self.schedule.num_timesteps - 1)
        ab = self.gather("alphas_cumprod", last, x0)
        mean = tf.sqrt(ab) * x0
        logvar = tf.math.log(1.0 - ab) + tf.zeros_like(x0)
        return _mean_flat(normal_kl(mean, logvar, tf.zeros_like(x0), tf.zeros_like(x0))) / _LOG2
