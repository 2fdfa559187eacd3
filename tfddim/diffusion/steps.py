"""Pure step functions of the reverse process, in TensorFlow.

Each function is a pure function of tensors: no Python branching on values,
no random numbers drawn (noise is an argument), the dtype follows the input
(float64 works), and schedule coefficients arrive already gathered and shaped
to broadcast against ``x`` (see :func:`select_timestep`).

Symbols (DDPM names; seed 003 has the table to the DDIM paper's):

=================  ==========================================
``alpha_bar_t``    ᾱ_τi, cumulative product at the current step
``alpha_bar_prev`` ᾱ_τi−1, at the step the update goes to (1 after the last)
``eps``            ε̂ = ε_θ(x_t, t), the predicted noise
``x0``             x̂₀, the "jumping" prediction of the clean sample
``sigma``          σ_τi, the standard deviation of the added noise
=================  ==========================================

Equation numbers refer to the DDIM paper (Song et al., 2021) unless stated.
"""

from __future__ import annotations

import tensorflow as tf

from tfddim.diffusion.kinds import Variance, parse_kind

__all__ = [
    "as_dtype",
    "select_timestep",
    "stateless_step_normal",
    "q_sample",
    "x0_from_eps",
    "eps_from_x0",
    "v_from_x0_eps",
    "x0_from_v",
    "eps_from_v",
    "clip_x0",
    "dynamic_threshold",
    "ddim_sigma",
    "ddim_sigma_hat",
    "ddim_update",
    "ddim_step",
    "dpmpp_2m_x0",
    "dpmpp_update",
    "respaced_betas",
    "posterior_mean",
    "ddpm_log_variance",
    "interpolate_log_variance",
    "ddpm_step",
    "classifier_guided_eps",
    "classifier_guided_mean",
    "classifier_free_eps",
]


def as_dtype(value, dtype):
    """``value`` as a tensor of ``dtype`` without a float32 detour.

    ``tf.cast(0.3, tf.float64)`` first makes a float32 tensor and so returns
    0.30000001192...; Python numbers here are converted at the target dtype.
    """
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)


def select_timestep(values, t, x):
    """Gather ``values[t]`` for each batch element and shape it ``[B, 1, ..., 1]`` to broadcast against x.

    ``values`` is a float64 schedule array; the result has x's dtype (gathered
    first, then cast, so float64 samplers keep full precision). This is
    improved-diffusion's ``_extract_into_tensor``.
    """
    gathered = tf.cast(tf.gather(values, t), x.dtype)
    shape = tf.concat([tf.shape(t), tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
    return tf.reshape(gathered, shape)


def stateless_step_normal(seed, step, like):
    """Standard normal noise for one sampling step, from the stateless Philox stream (seed, step).

    Philox fills a tensor in row-major order from counter 0, so sample b's
    noise is the same for every batch of more than b samples: a sample does
    not change when the batch around it grows or shrinks (a test holds this).
    """
    pair = tf.stack([seed, tf.cast(step, tf.int64)])
    return tf.random.stateless_normal(tf.shape(like), seed=pair, dtype=like.dtype, alg="philox")


def q_sample(x0, eps, alpha_bar_t):
    """x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, a draw from q(x_t | x₀) (DDPM eq. 4)."""
    return tf.sqrt(alpha_bar_t) * x0 + tf.sqrt(1.0 - alpha_bar_t) * eps


def x0_from_eps(x_t, eps, alpha_bar_t):
    """x̂₀ = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t — the "predicted x₀" of eq. 12 (seed 003's jumping prediction)."""
    return (x_t - tf.sqrt(1.0 - alpha_bar_t) * eps) / tf.sqrt(alpha_bar_t)


def eps_from_x0(x_t, x0, alpha_bar_t):
    """ε̂ = (x_t − √ᾱ_t·x̂₀)/√(1−ᾱ_t), eq. 4 of DDPM solved for ε."""
    return (x_t - tf.sqrt(alpha_bar_t) * x0) / tf.sqrt(1.0 - alpha_bar_t)


def v_from_x0_eps(x0, eps, alpha_bar_t):
    """v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ (Salimans & Ho 2022, the v-prediction target)."""
    return tf.sqrt(alpha_bar_t) * eps - tf.sqrt(1.0 - alpha_bar_t) * x0


def x0_from_v(x_t, v, alpha_bar_t):
    """x̂₀ = √ᾱ_t·x_t − √(1−ᾱ_t)·v."""
    return tf.sqrt(alpha_bar_t) * x_t - tf.sqrt(1.0 - alpha_bar_t) * v


def eps_from_v(x_t, v, alpha_bar_t):
    """ε̂ = √(1−ᾱ_t)·x_t + √ᾱ_t·v."""
    return tf.sqrt(1.0 - alpha_bar_t) * x_t + tf.sqrt(alpha_bar_t) * v


def clip_x0(x0, low, high):
    """Clip x̂₀ to [low, high] (the seeds' ``tf.clip_by_value(predicted_x0, -1, 1)`` for images)."""
    return tf.clip_by_value(x0, as_dtype(low, x0.dtype), as_dtype(high, x0.dtype))


def dynamic_threshold(x0, percentile, max_value=1.0):
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3), per sample.

    s = the ``percentile`` quantile of |x̂₀| over each sample's elements
    (linear interpolation, as ``numpy.quantile``), clamped to [1, max_value];
    x̂₀ ← clip(x̂₀, −s, s)/s. With s = 1 this is static clipping to [−1, 1].
    """
    dtype = x0.dtype
    batch = tf.shape(x0)[0]
    flat = tf.reshape(tf.abs(x0), [batch, -1])
    n = tf.shape(flat)[1]
    ordered = tf.sort(flat, axis=1)
    pos = as_dtype(percentile, dtype) * tf.cast(n - 1, dtype)
    lo = tf.cast(tf.floor(pos), tf.int32)
    hi = tf.minimum(lo + 1, n - 1)
    frac = pos - tf.cast(lo, dtype)
    q = tf.gather(ordered, lo, axis=1) * (1.0 - frac) + tf.gather(ordered, hi, axis=1) * frac
    s = tf.clip_by_value(q, tf.constant(1.0, dtype), as_dtype(max_value, dtype))
    s = tf.reshape(s, tf.concat([[batch], tf.ones([tf.rank(x0) - 1], tf.int32)], axis=0))
    return tf.clip_by_value(x0, -s, s) / s


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    """σ_τi(η) = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev) (eq. 16); η = 1 is DDPM's β̃, η = 0 is DDIM."""
    eta = as_dtype(eta, alpha_bar_t.dtype)
    return eta * tf.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)) * tf.sqrt(1.0 - alpha_bar_t / alpha_bar_prev)


def ddim_sigma_hat(alpha_bar_t, alpha_bar_prev):
    """σ̂_τi = √(1 − ᾱ_t/ᾱ_prev) (DDIM paper, Table 1's σ̂): the respaced β, as a standard deviation.

    √(1 − ᾱ_prev − σ̂²) is imaginary for long jumps, so, as in the paper's
    code, σ̂ is used with the DDPM mean: it is :func:`ddpm_step` with the
    ``fixed_large`` variance.
    """
    return tf.sqrt(1.0 - alpha_bar_t / alpha_bar_prev)


def ddim_update(x0, eps, alpha_bar_prev, sigma, noise):
    """The generalized step of eq. 12, given x̂₀ and ε̂.

    x_prev = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z.
    (predicted x₀, "direction pointing to x_t", random noise.)
    """
    direction = tf.sqrt(tf.maximum(1.0 - alpha_bar_prev - sigma**2, 0.0)) * eps
    return tf.sqrt(alpha_bar_prev) * x0 + direction + sigma * noise


def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise):
    """One generalized DDIM step (eqs. 12 and 16) from ε̂: returns ``(x_prev, x0_hat)``."""
    x0 = x0_from_eps(x_t, eps, alpha_bar_t)
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    return ddim_update(x0, eps, alpha_bar_prev, sigma, noise), x0


def dpmpp_2m_x0(x0, x0_prev, h, h_prev, second_order):
    """DPM-Solver++(2M)'s data estimate D (Lu et al. 2022, Algorithm 2).

    D = (1 + 1/(2r))·x̂₀ − 1/(2r)·x̂₀_prev with r = h_prev/h, i.e. a linear
    extrapolation of x̂₀ in λ = ½·log(ᾱ/(1−ᾱ)); ``h = λ_prev − λ_t`` is this step's λ increment
    and ``h_prev`` the previous step's. Where ``second_order`` is false (the
    first step, and the final step into ᾱ = 1 where h = ∞) D = x̂₀, the
    first-order (DDIM) step. The unused branch gets safe values, so no 0/0 or
    ∞·0 ever appears (ONNX Runtime does not mask NaN through a select).
    """
    safe_h = tf.where(second_order, h, tf.ones_like(h))
    safe_h_prev = tf.where(second_order, h_prev, tf.ones_like(h_prev))
    c = tf.where(second_order, safe_h / (2.0 * safe_h_prev), tf.zeros_like(h))
    return x0 + c * (x0 - x0_prev)


def dpmpp_update(x_t, d, alpha_bar_t, alpha_bar_prev):
    """The DPM-Solver++ step x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^{−h} − 1)·D (Lu et al. 2022, eq. 9 / Alg. 2).

    With α = √ᾱ, σ = √(1−ᾱ): e^{−h} = σ_prev·α_t/(α_prev·σ_t), so no λ
    needs to be finite (ᾱ_prev = 1 gives x_prev = D). With D = x̂₀ it is the
    η = 0 DDIM step of eq. 12 (the first-order solver of the probability-flow ODE).
    """
    a_t, s_t = tf.sqrt(alpha_bar_t), tf.sqrt(1.0 - alpha_bar_t)
    a_prev, s_prev = tf.sqrt(alpha_bar_prev), tf.sqrt(1.0 - alpha_bar_prev)
    exp_neg_h = s_prev * a_t / (a_prev * s_t)
    return (s_prev / s_t) * x_t + a_prev * (1.0 - exp_neg_h) * d


def respaced_betas(alpha_bar_t, alpha_bar_prev):
    """β_S = 1 − ᾱ_t/ᾱ_prev and β̃_S = (1−ᾱ_prev)/(1−ᾱ_t)·β_S for a strided step (improved DDPM §4)."""
    beta = 1.0 - alpha_bar_t / alpha_bar_prev
    return beta, (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * beta


def posterior_mean(x_t, x0, alpha_bar_t, alpha_bar_prev):
    """μ̃(x_t, x̂₀) = √ᾱ_prev·β_S/(1−ᾱ_t)·x̂₀ + √(1−β_S)·(1−ᾱ_prev)/(1−ᾱ_t)·x_t (DDPM eq. 7, respaced)."""
    beta, _ = respaced_betas(alpha_bar_t, alpha_bar_prev)
    coef_x0 = tf.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar_t)
    coef_xt = tf.sqrt(1.0 - beta) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
    return coef_x0 * x0 + coef_xt * x_t


def ddpm_log_variance(kind, alpha_bar_t, alpha_bar_prev, v=None):
    """log Σ of the reverse step for a :class:`~tfddim.diffusion.kinds.Variance` (fixed at trace time; a name is parsed).

    - ``"fixed_small"``: β̃_S (DDPM's σ² = β̃).
    - ``"fixed_large"``: β_S (DDPM's σ² = β; = σ̂² of the DDIM paper). improved
      DDPM puts β̃₁ in place of β at t = 0; that only changes the likelihood's
      decoder term (no noise is added on the final step), so sampling uses β.
    - ``"learned_range"``: log Σ = v·log β_S + (1−v)·log β̃_S (improved DDPM eq. 15),
      ``v`` the network's interpolation output, unconstrained as in the paper.

    At a step into the clean level (ᾱ_prev = 1) β̃_S = 0; no noise is added there,
    and log β_S stands in for log β̃_S so the value stays finite (improved DDPM
    likewise clips β̃₀ to β̃₁).
    """
    kind = parse_kind(Variance, kind, "variance")
    beta, beta_tilde = respaced_betas(alpha_bar_t, alpha_bar_prev)
    log_beta = tf.math.log(beta)
    log_beta_tilde = tf.math.log(tf.where(beta_tilde > 0, beta_tilde, beta))
    if kind is Variance.FIXED_SMALL:
        return log_beta_tilde
    if kind is Variance.FIXED_LARGE:
        return log_beta
    if v is None:
        raise ValueError("variance 'learned_range' needs the network's v output")
    return interpolate_log_variance(log_beta, log_beta_tilde, v)


def interpolate_log_variance(log_beta, log_beta_tilde, v):
    """log Σ_θ = v·log β + (1−v)·log β̃ (improved DDPM eq. 15), v unconstrained as in the paper."""
    return v * log_beta + (1.0 - v) * log_beta_tilde


def ddpm_step(mean, log_variance, noise):
    """Ancestral sampling x_prev = μ + exp(½·log Σ)·z (DDPM Algorithm 2, line 4)."""
    return mean + tf.exp(0.5 * log_variance) * noise


def classifier_guided_eps(eps, alpha_bar_t, grad, scale):
    """ε̂ = ε − s·√(1−ᾱ_t)·∇ₓ log p(y|x_t) (Dhariwal & Nichol, eq. 14 / Algorithm 2, for DDIM)."""
    return eps - as_dtype(scale, eps.dtype) * tf.sqrt(1.0 - alpha_bar_t) * grad


def classifier_guided_mean(mean, log_variance, grad, scale):
    """μ + s·Σ·∇ₓ log p(y|x_t) (Dhariwal & Nichol, Algorithm 1, for DDPM)."""
    return mean + as_dtype(scale, mean.dtype) * tf.exp(log_variance) * grad


def classifier_free_eps(eps_uncond, eps_cond, scale):
    """ε̂ = ε_u + w·(ε_c − ε_u) (Ho & Salimans 2022; seed 003's guidance_scale)."""
    return eps_uncond + as_dtype(scale, eps_cond.dtype) * (eps_cond - eps_uncond)


def expm1(x):
    """e^x − 1 without cancellation for small x, as 2·e^{x/2}·sinh(x/2) (exact identity).

    ``tf.math.expm1`` has no ONNX operator (tf2onnx 1.17 cannot convert ``Expm1``); ``Exp`` and ``Sinh``
    convert, and sinh keeps the relative accuracy at small |x| that ``exp(x) − 1`` loses (the multistep
    solvers' φ-functions at small step sizes h).
    """
    return 2.0 * tf.exp(0.5 * x) * tf.sinh(0.5 * x)
