"""The functional API: ``sample``, ``encode``, ``decode``, ``slerp``, ``interpolate``.

Each call builds a :class:`~tfddim.sampling.sampler.Sampler` for its options,
or takes it from a :class:`SamplerCache` the caller holds and passes as
``cache=`` (a loop over batches or over S then traces once). There is no
module-level state.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfddim.diffusion import steps
from tfddim.diffusion.schedules import Schedule
from tfddim.sampling.options import SIGMA_HAT, Method, SamplerConfig, Variance, parse_enum, parse_eta
from tfddim.sampling.sampler import Sampler

__all__ = ["SamplerCache", "config_for", "sample", "encode", "decode", "slerp", "interpolate"]


def config_for(method="ddim", eta=0.0, **options):
    """The :class:`SamplerConfig` and the effective η of the functional API's ``method``, ``eta`` and options.

    ``eta`` = σ̂ (``"sigma_hat"`` or :data:`~tfddim.sampling.options.SIGMA_HAT`) is DDIM's σ̂, i.e. the
    DDPM mean with the ``fixed_large`` variance (the respaced β); its effective η is 0.
    """
    if isinstance(eta, str):
        if parse_eta(eta) is SIGMA_HAT:
            if parse_enum(Method, method, "method") is not Method.DDIM:
                raise ValueError("eta='sigma_hat' is a DDIM option; use method='ddim'")
            return SamplerConfig(method=Method.DDPM, variance=Variance.FIXED_LARGE, **options), 0.0
    return SamplerConfig(method=method, **options), eta


class SamplerCache:
    """Compiled samplers by (model_fn, schedule, config), held by the caller.

    ``cache.get(model_fn, schedule, config)`` returns the same :class:`Sampler`
    (and so its traced loops) for equal keys; an unhashable ``model_fn`` gets a
    fresh sampler each time. Results never depend on the cache, only the tracing cost does.
    """

    def __init__(self):
        self._samplers: dict = {}

    def get(self, model_fn: Callable, schedule: Schedule, config: SamplerConfig) -> Sampler:
        key = (model_fn, schedule, config)
        try:
            hash(key)
        except TypeError:  # an unhashable model_fn: compile afresh
            return Sampler(model_fn, schedule, config)
        if key not in self._samplers:
            self._samplers[key] = Sampler(model_fn, schedule, config)
        return self._samplers[key]

    def __len__(self) -> int:
        return len(self._samplers)


def _sampler(model_fn, schedule, config, cache: Optional[SamplerCache]) -> Sampler:
    return Sampler(model_fn, schedule, config) if cache is None else cache.get(model_fn, schedule, config)


def sample(model_fn, x_T, schedule, timesteps, method="ddim", eta=0.0, noise=None, seed=None, *,
           labels=None, guidance_scale=1.0, return_trajectory=False, cache: Optional[SamplerCache] = None,
           low_res=None, low_res_t=None, **options):
    """Sample x₀ from ``x_T`` along ``timesteps`` with any solver (DDIM with any η or ``eta="sigma_hat"``, DDPM,
    DPM-Solver++(2M)).

    ``options`` are the :class:`SamplerConfig` fields: ``variance``,
    ``prediction_type``, ``learned_variance``, ``clip_x0``, ``dynamic_threshold``,
    ``threshold_max``, ``final_alpha_cumprod``, ``guidance``, ``class_conditional``,
    ``jit_compile``. See :class:`Sampler` for the call arguments (``low_res``, ``low_res_t``: a
    super-resolution network's conditioning); ``cache`` reuses compiled loops.
    """
    config, eta = config_for(method, eta, **options)
    return _sampler(model_fn, schedule, config, cache).sample(
        x_T, timesteps, eta=eta, noise=noise, seed=seed, labels=labels,
        guidance_scale=guidance_scale, return_trajectory=return_trajectory, low_res=low_res, low_res_t=low_res_t,
    )


def encode(model_fn, x0, schedule, timesteps, *, labels=None, guidance_scale=1.0,
           cache: Optional[SamplerCache] = None, low_res=None, low_res_t=None, **options):
    """DDIM inversion x₀ → x_T (see :meth:`Sampler.encode`)."""
    config, _ = config_for("ddim", 0.0, **options)
    return _sampler(model_fn, schedule, config, cache).encode(x0, timesteps, labels=labels, guidance_scale=guidance_scale,
                                                              low_res=low_res, low_res_t=low_res_t)


def decode(model_fn, x_T, schedule, timesteps, *, labels=None, guidance_scale=1.0,
           cache: Optional[SamplerCache] = None, **options):
    """Deterministic DDIM (η = 0) decoding x_T → x₀, the inverse of :func:`encode`."""
    return sample(model_fn, x_T, schedule, timesteps, method="ddim", eta=0.0, labels=labels,
                  guidance_scale=guidance_scale, cache=cache, **options)


def slerp(z0, z1, alpha):
    """Spherical interpolation between latents (DDIM paper §5.3 / Appendix D.5).

    z(α) = sin((1−α)θ)/sin θ · z0 + sin(αθ)/sin θ · z1, θ = arccos(⟨z0, z1⟩/(‖z0‖‖z1‖)).
    ``z0`` and ``z1`` are single latents of one shape; ``alpha`` is ``[N]``; the
    result is ``[N, *z0.shape]``. Falls back to linear interpolation when θ ≈ 0.
    """
    z0 = tf.convert_to_tensor(z0)
    z1 = steps.as_dtype(z1, z0.dtype)
    alpha = tf.reshape(steps.as_dtype(alpha, z0.dtype), [-1])
    a, b = tf.reshape(z0, [-1]), tf.reshape(z1, [-1])
    cos = tf.reduce_sum(a * b) / (tf.norm(a) * tf.norm(b))
    theta = tf.acos(tf.clip_by_value(cos, -1.0, 1.0))
    sin = tf.sin(theta)
    small = sin < 1e-6
    safe_sin = tf.where(small, tf.ones_like(sin), sin)
    w0 = tf.where(small, 1.0 - alpha, tf.sin((1.0 - alpha) * theta) / safe_sin)
    w1 = tf.where(small, alpha, tf.sin(alpha * theta) / safe_sin)
    out = w0[:, None] * a[None] + w1[:, None] * b[None]
    return tf.reshape(out, tf.concat([tf.shape(alpha), tf.shape(z0)], axis=0))


def interpolate(model_fn, x_T_a, x_T_b, schedule, timesteps, num=8, *, cache: Optional[SamplerCache] = None, **options):
    """Decode ``num`` latents slerped from ``x_T_a`` to ``x_T_b`` (single latents, no batch axis).

    Returns ``(x0 [num, ...], latents [num, ...])``.
    """
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    latents = slerp(x_T_a, x_T_b, np.linspace(0.0, 1.0, num))
    return decode(model_fn, latents, schedule, timesteps, cache=cache, **options), latents
