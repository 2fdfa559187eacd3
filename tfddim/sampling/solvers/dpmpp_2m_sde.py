"""DPM-Solver++(2M) SDE: the second-order multistep solver of the reverse SDE in data prediction, the SDE variant of
DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095, as diffusers cites it: ``algorithm_type="sde-dpmsolver++"``,
``solver_type="midpoint"``; k-diffusion's ``sample_dpmpp_2m_sde``).

With h = λ_prev − λ_t, r = h_prev/h and D = m + 1/(2r)·(m − m_prev) (2M's midpoint estimate, m = x̂₀),
x_prev = (σ_prev/σ_t)·e^{−h}·x_t + α_prev·(1 − e^{−2h})·D + σ_prev·√(1 − e^{−2h})·z.
In ᾱ: e^{−h} = σ_prev·α_t/(α_prev·σ_t) and 1 − e^{−2h} = (ᾱ_prev − ᾱ_t)/(ᾱ_prev·(1 − ᾱ_t)), exact at ᾱ_prev = 1
(x_prev = D) and at ᾱ_t = 0. First order (D = x̂₀, which is DDIM with η = 1) on the first step and on the final
step into the clean level, where the loop gives z = 0. State: the previous x̂₀ and h.
"""

from __future__ import annotations

import tensorflow as tf

from tfddim.sampling.solvers.base import Coefficients, Denoised
from tfddim.sampling.solvers.dpmpp_2m import DPMSolverPP2M

__all__ = ["DPMSolverPP2MSDE"]


class DPMSolverPP2MSDE(DPMSolverPP2M):
    """DPM-Solver++(2M)'s state and data estimate D, with the SDE's update (module docstring)."""

    uses_noise = True

    def needs_noise(self, eta):
        return tf.constant(True)

    def step(self, x, d: Denoised, c: Coefficients, scale, noise, state):
        d, data, h = self.extrapolated(x, d, c, scale, state)
        ab_t, ab_prev = c.alpha_bar_t, c.alpha_bar_prev
        exp_neg_h = tf.sqrt(1.0 - ab_prev) * tf.sqrt(ab_t) / (tf.sqrt(ab_prev) * tf.sqrt(1.0 - ab_t))
        one_minus = (ab_prev - ab_t) / (ab_prev * (1.0 - ab_t))  # 1 − e^{−2h}
        x_prev = (tf.sqrt(1.0 - ab_prev) / tf.sqrt(1.0 - ab_t) * exp_neg_h * x + tf.sqrt(ab_prev) * one_minus * data
                  + tf.sqrt(1.0 - ab_prev) * tf.sqrt(one_minus) * noise)
        return x_prev, d.x0, (d.x0, h)
