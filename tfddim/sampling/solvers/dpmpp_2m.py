"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): the second-order multistep ODE solver in data prediction.

With h = λ_prev − λ_t and r = h_prev/h, D = (1 + 1/(2r))·x̂₀ − 1/(2r)·x̂₀_prev and
x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^{−h} − 1)·D. The first step (nothing to extrapolate from) and
the final step (into ᾱ = 1, h = ∞) are first order, i.e. DDIM with η = 0. State: the previous x̂₀
and the previous step's h.
"""

from __future__ import annotations

import tensorflow as tf

from tfddim.diffusion import steps
from tfddim.sampling.solvers.base import Coefficients, Denoised, Solver, guided_by_classifier

__all__ = ["DPMSolverPP2M"]


class DPMSolverPP2M(Solver):
    def init(self, x):
        ones = tf.ones(tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0), x.dtype)
        return tf.zeros_like(x), ones

    def extrapolated(self, x, d: Denoised, c: Coefficients, scale, state):
        """(d guided, D, h): the second-order data estimate, first order on the first and the final step."""
        x0_prev, h_prev = state
        d = guided_by_classifier(x, d, c.alpha_bar_t, scale)
        h = c.half_log_snr_prev - c.half_log_snr_t
        second_order = tf.logical_and(tf.logical_not(c.first), c.has_next)
        return d, steps.dpmpp_2m_x0(d.x0, x0_prev, h, h_prev, second_order), h

    def step(self, x, d: Denoised, c: Coefficients, scale, noise, state):
        d, data, h = self.extrapolated(x, d, c, scale, state)
        return steps.dpmpp_update(x, data, c.alpha_bar_t, c.alpha_bar_prev), d.x0, (d.x0, h)
