"""DPM-Solver++(3M): the multistep solver of DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095, Algorithm 2) taken
to third order, in data prediction, as the authors' ``multistep_dpm_solver_third_update`` and diffusers'
``multistep_dpm_solver_third_order_update`` (``algorithm_type="dpmsolver++"``).

With h = λ_prev − λ_t, h₀ and h₁ the two previous steps' h, and m₀, m₁, m₂ the x̂₀ of this and the two
previous steps: D1₀ = (h/h₀)(m₀ − m₁), D1₁ = (h/h₁)(m₁ − m₂), D1 = D1₀ + h₀/(h₀+h₁)·(D1₀ − D1₁),
D2 = h/(h₀+h₁)·(D1₀ − D1₁), and x_prev = (σ_prev/σ_t)·x_t − α_prev(e^{−h} − 1)·m₀
+ α_prev((e^{−h} − 1)/h + 1)·D1 − α_prev((e^{−h} − 1 + h)/h² − ½)·D2.
Warm-up as the reference: first order on step 1, second order (2M's midpoint, D = m₀ + ½·D1₀) on step 2.
The final step (into ᾱ = 1, h = ∞) is first order; as diffusers (``lower_order_final``, always with
``final_sigmas_type="zero"``), with fewer than 15 steps the second-to-last step is at most second order. State: m₁, m₂, h₀, h₁ and the count of previous steps (≤ 2).
"""

from __future__ import annotations

import tensorflow as tf

from tfddim.diffusion import steps
from tfddim.sampling.solvers.base import Coefficients, Denoised, Solver, guided_by_classifier

__all__ = ["DPMSolverPP3M", "dpmpp_3m_x0"]

_LOWER_ORDER_FINAL_BELOW = 15  # diffusers' DPMSolverMultistepScheduler: lower_order_final applies when S < 15


def dpmpp_3m_x0(m0, m1, m2, h, h0, h1, order):
    """The data estimate D with x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^{−h} − 1)·D, for ``order`` 1, 2 or 3.

    The module docstring's update with D1 and D2 expanded: D = m₀ + a·(m₀ − m₁) + b·(m₁ − m₂), where
    D1 = (1+ρ)·(h/h₀)(m₀ − m₁) − ρ·(h/h₁)(m₁ − m₂) with ρ = h₀/(h₀+h₁), D2 = h/(h₀+h₁)·(D1₀ − D1₁), and
    D = m₀ − k₁·D1 + k₂·D2 with k₁ = ((e^{−h} − 1)/h + 1)/(e^{−h} − 1), k₂ = ((e^{−h} − 1 + h)/h² − ½)/(e^{−h} − 1).
    a and b are per-sample ``[B, 1, ..]`` and meet x-sized tensors once. The unused orders get safe values (no
    0/0 or ∞/∞ even where not selected). At zero terminal SNR the first h is ∞: the later terms in it vanish
    (h/∞ = 0), as in DPM-Solver++(2M).
    """
    second, third = order == 2, order == 3
    h2, h0_2 = (tf.where(second, v, tf.ones_like(v)) for v in (h, h0))
    h3, h0_3, h1_3 = (tf.where(third, v, tf.ones_like(v)) for v in (h, h0, h1))
    em1 = steps.expm1(-h3)
    k1 = (em1 / h3 + 1.0) / em1
    k2 = ((em1 + h3) / h3**2 - 0.5) / em1
    rho, c2 = h0_3 / (h0_3 + h1_3), h3 / (h0_3 + h1_3)
    a3 = h3 / h0_3 * (k2 * c2 - k1 * (1.0 + rho))
    b3 = h3 / h1_3 * (k1 * rho - k2 * c2)
    zero = tf.zeros_like(h)
    a = tf.where(third, a3, tf.where(second, 0.5 * h2 / h0_2, zero))
    b = tf.where(third, b3, zero)
    return m0 + a * (m0 - m1) + b * (m1 - m2)


class DPMSolverPP3M(Solver):
    def init(self, x):
        ones = tf.ones(tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0), x.dtype)
        return tf.zeros_like(x), tf.zeros_like(x), ones, ones, tf.constant(0)

    def step(self, x, d: Denoised, c: Coefficients, scale, noise, state):
        m1, m2, h0, h1, taken = state
        d = guided_by_classifier(x, d, c.alpha_bar_t, scale)
        h = c.half_log_snr_prev - c.half_log_snr_t
        order = tf.where(c.has_next, tf.minimum(taken + 1, 3), 1)
        # diffusers' lower_order_final below 15 steps: at most second order on the second-to-last step
        order = tf.where(tf.logical_and(c.num_steps < _LOWER_ORDER_FINAL_BELOW, tf.equal(c.steps_left, 1)),
                         tf.minimum(order, 2), order)
        data = dpmpp_3m_x0(d.x0, m1, m2, h, h0, h1, order)
        return steps.dpmpp_update(x, data, c.alpha_bar_t, c.alpha_bar_prev), d.x0, (d.x0, m1, h, h0,
                                                                                   tf.minimum(taken + 1, 2))
