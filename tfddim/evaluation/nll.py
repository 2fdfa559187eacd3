"""Negative log-likelihood in bits/dim from the variational bound (DDPM §3.3, improved DDPM §2–3).

    −log p(x₀) ≤ L_vlb = L_0 + Σ_{t=1}^{T−1} L_t + L_T

evaluated exactly over every t (T network passes per image), one fixed draw of
x_t ~ q(x_t | x₀) per t, as improved-diffusion's ``calc_bpd_loop``. The terms
are :class:`tfddim.likelihood.LikelihoodTerms`; x̂₀ is clipped to [−1, 1] as in
that loop. The bound depends on the reverse variance Σ_θ: ``fixed_small`` (β̃),
``fixed_large`` (β) or the network's ``learned_range`` — improved DDPM's point
is that learning Σ_θ tightens the bound.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfddim.diffusion import steps
from tfddim.diffusion.likelihood import LikelihoodTerms
from tfddim.diffusion.steps import select_timestep
from tfddim.diffusion.schedules import Schedule
from tfddim.evaluation.seeds import batch_seed

__all__ = ["nll_bpd"]


def nll_bpd(model_fn: Callable, schedule: Schedule, x0, variance: str = "fixed_small", *, learned_variance: bool = False,
            decoder: str = "discretized", batch_size: int = 256, seed: int = 0, labels=None,
            clip_x0: Optional[tuple] = (-1.0, 1.0), progress: bool = True) -> dict:
    """The bound in bits/dim for images ``x0`` ``[N, ...]`` (see the module docstring).

    Args:
        model_fn: ``model_fn(x_t, t[, labels])`` → ε (``[..., C]``) or [ε, v] (``[..., 2C]``).
        variance: ``fixed_small``, ``fixed_large`` or ``learned_range`` (needs ``learned_variance``).
        decoder: ``discretized`` (8-bit-style bins of width 2/255) or ``gaussian``.

    Returns:
        ``{"bpd": mean bound, "bpd_sem": its standard error over images, "prior_bpd": mean L_T,
        "decoder_bpd": mean L_0, "terms_bpd": [T] mean L_t per t, "per_image": [N]}``.
    """
    if variance not in ("fixed_small", "fixed_large", "learned_range"):
        raise ValueError(f"variance must be fixed_small, fixed_large or learned_range, got {variance!r}")
    if variance == "learned_range" and not learned_variance:
        raise ValueError("variance='learned_range' needs a learned-variance network (learned_variance=True)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x0 = np.asarray(x0, np.float32)
    if x0.ndim < 2 or len(x0) == 0:
        raise ValueError(f"x0 must be a non-empty batch [N, ...], got shape {list(x0.shape)}")
    terms = LikelihoodTerms(schedule, decoder)
    alphas_cumprod = tf.constant(schedule.alphas_cumprod, tf.float32)
    channels = x0.shape[-1]
    conditional = labels is not None
    T = schedule.num_timesteps

    @tf.function(reduce_retracing=True)
    def term(x, t_scalar, y, noise_seed):
        t = tf.fill([tf.shape(x)[0]], t_scalar)
        noise = tf.random.stateless_normal(tf.shape(x), seed=noise_seed, dtype=x.dtype)
        ab = select_timestep(alphas_cumprod, t, x)
        x_t = steps.q_sample(x, noise, ab)
        out = model_fn(x_t, t, y) if conditional else model_fn(x_t, t)
        out = tf.cast(out, x.dtype)
        eps, v = out[..., :channels], (out[..., channels:] if learned_variance else None)
        x0_hat = steps.x0_from_eps(x_t, eps, ab)
        if clip_x0 is not None:
            x0_hat = tf.clip_by_value(x0_hat, clip_x0[0], clip_x0[1])
        x64, xt64, x0h64 = (tf.cast(a, tf.float64) for a in (x, x_t, x0_hat))
        log_var = terms.model_log_variance(variance, t, x64, None if v is None else tf.cast(v, tf.float64))
        return terms.terms_bpd(x64, xt64, t, x0h64, log_var)

    per_t = np.zeros((T, len(x0)))
    prior = np.zeros(len(x0))
    bar = tf.keras.utils.Progbar(T * len(range(0, len(x0), batch_size)), unit_name="pass") if progress else None
    done = 0
    for start in range(0, len(x0), batch_size):
        x = tf.constant(x0[start:start + batch_size])
        y = None if labels is None else tf.constant(np.asarray(labels, np.int32)[start:start + batch_size])
        prior[start:start + len(x)] = terms.prior_bpd(tf.cast(x, tf.float64)).numpy()
        for t in range(T - 1, -1, -1):
            step_seed = tf.constant([batch_seed(seed, start), t], tf.int64)
            per_t[t, start:start + len(x)] = term(x, tf.constant(t, tf.int32), y, step_seed).numpy()
            done += 1
            if bar is not None and (done % 50 == 0 or t == 0):
                bar.update(done)
    total = per_t.sum(axis=0) + prior
    return {
        "bpd": float(total.mean()),
        "bpd_sem": float(total.std(ddof=1) / np.sqrt(len(total))) if len(total) > 1 else float("nan"),
        "prior_bpd": float(prior.mean()),
        "decoder_bpd": float(per_t[0].mean()),
        "terms_bpd": per_t.mean(axis=1),
        "per_image": total,
    }
