"""UniPC (Zhao et al. 2023, arXiv:2302.04867): the unified predictor-corrector, multistep, data prediction, bh2.

The variant B(h) = e^h − 1 ("bh2") of the authors' ``multistep_uni_pc_bh_update`` and of diffusers'
``UniPCMultistepScheduler`` (``solver_type="bh2"``, ``predict_x0=True``). For a step s → t in λ = log(α/σ) with
h = λ_t − λ_s, m = x̂₀, earlier points r_j = (λ_{s_j} − λ_s)/h < 0 and D_j = (m_{s_j} − m_s)/r_j:

- UniP-p (order p, the paper's Corollary 3.2):
  x̃_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·m_s − α_t·B(h)·Σ_{j<p} ρ_j·D_j, with Σ_j ρ_j·r_j^{k−1} = b_k
  (k = 1 … p−1), b_k = k!·φ_{k+1}(−h)·(−h)/B(−h), φ_k(z) = Σ_n zⁿ/(n+k)!; ρ = ½ for p = 2.
- UniC-p (order p + 1, Theorem 3.1): the same from x_s with the point r = 1, D = m_t − m_s, added and
  k = 1 … p (ρ = ½ for p = 1); m_t is the network's output at the predicted x̃_t, which the next step needs
  anyway: one call per step.

The loop calls the network at x̃_t and hands it here, so the step from x̃_t first corrects x̃_t to x_t^c (UniC
with the last step's order), then predicts from x_t^c (UniP-p) while m_t stays the output at x̃_t, as the
reference does. Orders as diffusers' default (``lower_order_final``): min(p, i + 1, S − i) on step i, so the
second-to-last step is at most second order and the final step into the clean level first order, with no
corrector after it (σ = 0: it returns m_t). State: the last step's corrected x and its ᾱ, the last three
x̂₀, the last two h, UniC's weights for the last step's prediction (formed with UniP's, from the same points)
and the last step's order.
"""

from __future__ import annotations

import tensorflow as tf

from tfddim.diffusion import steps
from tfddim.sampling.solvers.base import Coefficients, Denoised, Solver, guided_by_classifier

__all__ = ["UniPC"]


def _b(h):
    """b_1, b_2, b_3 at −h by the reference's recurrence (h > 0 and finite)."""
    hh = -h
    em1 = steps.expm1(hh)
    q, out = em1 / hh - 1.0, []
    for fact, nxt in ((1.0, 2.0), (2.0, 6.0), (6.0, 24.0)):
        out.append(q * fact / em1)
        q = q / hh - 1.0 / nxt
    return out


def _lagrange(us, b):
    """w_j = ρ_j/r_j for Σ_j ρ_j·r_j^{k−1} = b_k (k = 1 … K), written in u_j = 1/r_j (Lagrange on K ≤ 3 points).

    In u a point infinitely far back (r = −∞: after a zero-terminal-SNR start, λ = −∞) is u = 0 and drops
    out, the limit of the reference's solve. One point is the reference's ρ = ½.
    """
    if len(us) == 1:
        return [0.5 * us[0]]
    out = []
    for a, ua in enumerate(us):
        o = us[:a] + us[a + 1:]
        if len(us) == 2:
            num, den = o[0] * b[1] - b[0], o[0] - ua
        else:
            num, den = b[0] - (o[0] + o[1]) * b[1] + o[0] * o[1] * b[2], (o[0] - ua) * (o[1] - ua)
        out.append(ua ** len(us) * num / den)
    return out


def _select(order, candidates, n):
    """The n weights of the order taken: ``candidates[q]`` for order q (zeros past its length), zeros for no other."""
    out = None
    for q, ws in candidates.items():
        ws = ws + [tf.zeros_like(ws[0])] * (n - len(ws))
        out = [tf.zeros_like(w) for w in ws] if out is None else out
        out = [tf.where(order == q, w, o) for w, o in zip(ws, out)]
    return out


def _step_weights(h, h1, h2, p, max_order=3):
    """The weights of a step of order p, ``[B, 1, ..]`` each (formed before they meet x-sized tensors).

    UniP-p's of (m₁ − m₀, m₂ − m₀) and UniC-p's of (m_t − m₀, m₁ − m₀, m₂ − m₀), where UniC-p corrects this
    step's prediction at the next step: the two share h, the points r_j = −(h₁ + … + h_j)/h and b. The orders
    not taken get safe values (h = 1, distinct points), so nothing is 0/0 even where not selected; ∞ enters only
    as the first h after a zero-terminal-SNR start (λ = −∞), whose point then has u = −h/∞ = 0 and drops out.
    """
    one = tf.ones_like(h)
    two, three = p >= 2, p == 3
    h = tf.where(two, h, one)
    u1 = -h / tf.where(two, h1, one)
    u1_3, u2_3 = tf.where(three, u1, -one), tf.where(three, -h / (h1 + h2), -0.5 * one)
    b = _b(h) if max_order > 1 else None
    pred_points = {2: [u1], 3: [u1_3, u2_3]}
    corr_points = {1: [one], 2: [one, u1], 3: [one, u1_3, u2_3]}
    pred = {q: _lagrange(pred_points[q], b) for q in range(2, max_order + 1)}
    corr = {q: _lagrange(corr_points[q], b) for q in range(1, max_order + 1)}
    return (_select(p, pred, max_order - 1) if pred else []), _select(p, corr, max_order)


class UniPC(Solver):
    """UniPC-p with p = ``order`` (1, 2 or 3; 3 is diffusers' and the paper's default for unconditional sampling)."""

    def __init__(self, order: int = 3):
        if order not in (1, 2, 3):
            raise ValueError(f"UniPC order must be 1, 2 or 3, got {order!r}")
        self.order = order

    def init(self, x):
        ones = tf.ones(tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0), x.dtype)
        zeros = tf.zeros_like(x)
        return (zeros, 0.5 * ones, zeros, zeros, zeros, ones, ones) + (0.0 * ones,) * self.order + (tf.constant(0),)

    def step(self, x, d: Denoised, c: Coefficients, scale, noise, state):
        x_s, ab_s, m1, m2, m3, h1, h2 = state[:7]
        w_c, p_last = state[7:-1], state[-1]
        d = guided_by_classifier(x, d, c.alpha_bar_t, scale)
        m0 = d.x0
        # UniC-p_last corrects x̃_t (the last step's prediction, from x_s) with m0, the output at x̃_t
        res_c = tf.add_n([w * dm for w, dm in zip(w_c, [m0 - m1, m2 - m1, m3 - m1])])
        ab_t = tf.where(p_last > 0, c.alpha_bar_t, ab_s)  # (the first step has nothing to correct)
        x = tf.where(p_last > 0, steps.dpmpp_update(x_s, m1 + res_c, ab_s, ab_t), x)
        # UniP-p from the corrected x_t; first order on the final step into the clean level
        h = c.half_log_snr_prev - c.half_log_snr_t
        p = tf.minimum(tf.minimum(p_last + 1, self.order), c.steps_left + 1)  # lower_order_final: 1 on the last
        w_p, w_c = _step_weights(h, h1, h2, p, self.order)
        data = m0 + tf.add_n([w * dm for w, dm in zip(w_p, [m1 - m0, m2 - m0])]) if w_p else m0
        x_next = steps.dpmpp_update(x, data, c.alpha_bar_t, c.alpha_bar_prev)
        return x_next, m0, (x, c.alpha_bar_t, m0, m1, m2, h, h1) + tuple(w_c) + (p,)
