"""The graph-mode sampler: one ``tf.while_loop`` over a timestep tensor.

``model_fn(x_t, t)`` (or ``model_fn(x_t, t, labels)`` for a conditional model)
returns the network's prediction for a batch; ``t`` is an int32 ``[B]`` tensor
of *original* timestep indices, so a network trained on T steps works with any
spaced subsequence. Per-step coefficients are gathered from the schedule at
each batch element's t (:func:`select_timestep`, as in the seeds).

The loop is traced once per (rank, dtype, noise mode, trajectory): batch size, image shape, number of steps, the timesteps, η, the
seed and the guidance scale are all tensors, so changing them does not retrace.

Conventions (the defaults, with no options given): nothing is clipped or
thresholded, ᾱ_prev = 1 after the last listed timestep, and no noise is added
on the final step (its output is x₀).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Callable, NamedTuple, Optional, Union

import numpy as np
import tensorflow as tf

from tfddim import steps
from tfddim.schedules import Schedule
from tfddim.spacing import spaced_timesteps

__all__ = [
    "Method",
    "Variance",
    "Prediction",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "SamplerConfig",
    "Sampler",
    "Trajectory",
    "select_timestep",
    "graph_timesteps",
    "sample",
    "encode",
    "decode",
    "slerp",
    "interpolate",
]


class Method(str, enum.Enum):
    """``ddim``: the generalized step of eq. 12 with σ(η); ``ddpm``: ancestral sampling with a DDPM variance;
    ``dpmpp_2m``: DPM-Solver++(2M), the second-order multistep solver of the probability-flow ODE in its
    data-prediction form (Lu et al. 2022), first order on the first and the final step (deterministic)."""

    DDIM = "ddim"
    DDPM = "ddpm"
    DPMPP_2M = "dpmpp_2m"


class Variance(str, enum.Enum):
    """The reverse-process variance of the ``ddpm`` method (see :func:`tfddim.steps.ddpm_log_variance`)."""

    FIXED_SMALL = "fixed_small"
    FIXED_LARGE = "fixed_large"
    LEARNED_RANGE = "learned_range"


class Prediction(str, enum.Enum):
    """What the network predicts (diffusers' ``prediction_type`` names)."""

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V = "v_prediction"


@dataclasses.dataclass(frozen=True)
class ClassifierGuidance:
    """Guide with a noise-aware classifier's gradient (Dhariwal & Nichol).

    ``log_prob_fn(x_t, t, labels)`` returns log p(y | x_t) as ``[B]``; its
    gradient in x_t is taken with ``tf.GradientTape`` inside the loop. DDIM uses
    ε̂ = ε − s·√(1−ᾱ)·∇; DDPM shifts the mean by s·Σ·∇.
    """

    log_prob_fn: Callable


@dataclasses.dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Classifier-free guidance ε_u + w·(ε_c − ε_u) for a model trained with label dropout.

    The unconditional branch calls the model with ``null_label``; both branches
    run in one batched forward pass.
    """

    null_label: int


Guidance = Union[None, ClassifierGuidance, ClassifierFreeGuidance]


def _enum(cls, value, name):
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"unknown {name} {value!r}; expected one of {[m.value for m in cls]}") from None


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Everything about a sampler that is fixed at trace time.

    Attributes:
        method: ``"ddim"``, ``"ddpm"`` or ``"dpmpp_2m"``.
        variance: DDPM variance: ``"fixed_small"`` (β̃), ``"fixed_large"`` (β), ``"learned_range"``.
        prediction_type: ``"epsilon"``, ``"sample"`` (x₀) or ``"v_prediction"``.
        learned_variance: the network returns 2C channels on the last axis,
            the prediction then the variance interpolation v (improved DDPM).
        clip_x0: ``(low, high)`` to clip x̂₀ to, or None.
        dynamic_threshold: a percentile in (0, 1] for Imagen's dynamic
            thresholding of x̂₀, or None; ``threshold_max`` bounds s.
        final_alpha_cumprod: ``"one"`` (ᾱ_prev = 1 after the last step) or
            ``"alpha_0"`` (ᾱ_prev = ᾱ_0, diffusers' ``set_alpha_to_one=False``).
        guidance: None, :class:`ClassifierGuidance` or :class:`ClassifierFreeGuidance`.
        class_conditional: the network takes labels, ``model_fn(x_t, t, labels)``
            (implied by classifier-free guidance).
        jit_compile: compile the network call with XLA (``tf.function(jit_compile=True)``),
            once per input shape. The loop, its checks and its random numbers stay
            as they are, so samples equal the uncompiled ones to float rounding.
            (Compiling the whole loop was measured barely faster, 175 against 188 ms,
            but XLA then draws different stateless noise and drops the assertions.)
    """

    method: Method = Method.DDIM
    variance: Variance = Variance.FIXED_SMALL
    prediction_type: Prediction = Prediction.EPSILON
    learned_variance: bool = False
    clip_x0: Optional[tuple] = None
    dynamic_threshold: Optional[float] = None
    threshold_max: float = 1.0
    final_alpha_cumprod: str = "one"
    guidance: Guidance = None
    class_conditional: bool = False
    jit_compile: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", _enum(Method, self.method, "method"))
        object.__setattr__(self, "variance", _enum(Variance, self.variance, "variance"))
        object.__setattr__(self, "prediction_type", _enum(Prediction, self.prediction_type, "prediction_type"))
        if self.variance is Variance.LEARNED_RANGE and not self.learned_variance:
            raise ValueError("variance 'learned_range' needs learned_variance=True (a network with 2C output channels)")
        if self.clip_x0 is not None:
            low, high = (float(v) for v in self.clip_x0)
            if not low < high:
                raise ValueError(f"clip_x0 must be (low, high) with low < high, got {self.clip_x0!r}")
            object.__setattr__(self, "clip_x0", (low, high))
        if self.dynamic_threshold is not None and not 0.0 < float(self.dynamic_threshold) <= 1.0:
            raise ValueError(f"dynamic_threshold must be a percentile in (0, 1], got {self.dynamic_threshold!r}")
        if self.clip_x0 is not None and self.dynamic_threshold is not None:
            raise ValueError("use either clip_x0 or dynamic_threshold, not both")
        if float(self.threshold_max) < 1.0:
            raise ValueError(f"threshold_max must be >= 1, got {self.threshold_max!r}")
        if self.final_alpha_cumprod not in ("one", "alpha_0"):
            raise ValueError(f"final_alpha_cumprod must be 'one' or 'alpha_0', got {self.final_alpha_cumprod!r}")
        if self.guidance is not None and not isinstance(self.guidance, (ClassifierGuidance, ClassifierFreeGuidance)):
            raise ValueError("guidance must be None, ClassifierGuidance(...) or ClassifierFreeGuidance(...)")
        if isinstance(self.guidance, ClassifierFreeGuidance):
            object.__setattr__(self, "class_conditional", True)

    @property
    def needs_labels(self) -> bool:
        return self.class_conditional or self.guidance is not None


class Trajectory(NamedTuple):
    """Per-step history, ``[S, B, ...]`` each: ``x`` after step i, and the jumping prediction x̂₀ at step i."""

    x: tf.Tensor
    x0_hat: tf.Tensor


def select_timestep(values, t, x):
    """Gather ``values[t]`` for each batch element and shape it ``[B, 1, ..., 1]`` to broadcast against x.

    ``values`` is a float64 schedule array; the result has x's dtype (gathered
    first, then cast, so float64 samplers keep full precision).
    """
    gathered = tf.cast(tf.gather(values, t), x.dtype)
    shape = tf.concat([tf.shape(t), tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
    return tf.reshape(gathered, shape)


def _per_sample_normal(seed, step, like):
    """Standard normal noise for one step, from the stateless Philox stream (seed, step).

    Philox fills a tensor in row-major order from counter 0, so sample b's
    noise is the same for every batch of more than b samples: a sample does
    not change when the batch around it grows or shrinks (a test holds this).
    """
    pair = tf.stack([seed, tf.cast(step, tf.int64)])
    return tf.random.stateless_normal(tf.shape(like), seed=pair, dtype=like.dtype, alg="philox")


class Sampler:
    """A compiled sampler for one network, schedule and :class:`SamplerConfig`.

    Args:
        model_fn: ``model_fn(x_t, t[, labels])`` → prediction (see module docstring).
        schedule: the :class:`~tfddim.schedules.Schedule` the network was trained with.
        config: the trace-time options.

    Call arguments of :meth:`sample`:
        x_T: ``[B, ...]`` starting noise (float32 or float64; the dtype is kept).
        timesteps: strictly descending ints in [0, T−1] (:func:`tfddim.schedules.spaced_timesteps`).
        eta: DDIM's η in [0, 1] (ignored by ``ddpm``).
        noise: optional ``[S, B, ...]``; ``noise[i]`` is used by the step from ``timesteps[i]``.
        seed: optional int; noise drawn in-graph per sample (stateless). Without
            ``noise`` or ``seed`` a fresh seed is drawn when noise is needed.
        labels: int ``[B]`` class labels for a conditional model or for guidance.
        guidance_scale: s (classifier) or w (classifier-free).
        return_trajectory: also return a :class:`Trajectory` (memory O(S); off by default, O(1)).
    """

    def __init__(self, model_fn: Callable, schedule: Schedule, config: SamplerConfig = SamplerConfig()):
        if not callable(model_fn):
            raise ValueError("model_fn must be callable: model_fn(x_t, t) -> prediction")
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a tfddim.schedules.Schedule, got {type(schedule).__name__}")
        self.model_fn = model_fn
        self._network = tf.function(model_fn, jit_compile=True) if config.jit_compile else model_fn
        self.schedule = schedule
        self.config = config
        self._alphas_cumprod = tf.constant(schedule.alphas_cumprod, tf.float64)
        # λ_t for DPM-Solver++, gathered like ᾱ. A zero-terminal-SNR level has λ = −∞: only ever the start
        # of a first-order step, and its infinite h only zeroes the next step's extrapolation (h/(2·h_prev) = 0).
        self._half_log_snr = tf.constant(schedule.half_log_snr, tf.float64)
        self._functions: dict = {}

    # ----------------------------------------------------------------- model
    def _denoise(self, x, t_b, ab_t, labels, scale):
        """Model call → (x̂₀, ε̂, v, ∇log p(y|x)) after guidance, clipping and thresholding."""
        cfg = self.config
        out = self._call_model(x, t_b, labels, scale)
        v = None
        if cfg.learned_variance:
            out, v = tf.split(out, 2, axis=-1)
        if cfg.prediction_type is Prediction.EPSILON:
            eps, x0 = out, steps.x0_from_eps(x, out, ab_t)
        elif cfg.prediction_type is Prediction.SAMPLE:
            eps, x0 = steps.eps_from_x0(x, out, ab_t), out
        else:
            eps, x0 = steps.eps_from_v(x, out, ab_t), steps.x0_from_v(x, out, ab_t)
        if cfg.clip_x0 is not None or cfg.dynamic_threshold is not None:
            if cfg.clip_x0 is not None:
                x0 = steps.clip_x0(x0, *cfg.clip_x0)
            else:
                x0 = steps.dynamic_threshold(x0, cfg.dynamic_threshold, cfg.threshold_max)
            # keep ε̂ consistent with the clipped x̂₀ (as improved-diffusion); at the clean level
            # (ᾱ = 1, the start of encode) ε̂ does not determine x̂₀ and is kept. The unused branch
            # gets a safe ᾱ so it never holds 0/0 (ONNX Runtime let that NaN through the select).
            noisy = ab_t < 1.0
            eps = tf.where(noisy, steps.eps_from_x0(x, x0, tf.where(noisy, ab_t, tf.ones_like(ab_t) * 0.5)), eps)
        grad = None
        if isinstance(cfg.guidance, ClassifierGuidance):
            with tf.GradientTape() as tape:
                tape.watch(x)
                log_p = cfg.guidance.log_prob_fn(x, t_b, labels)
            grad = tape.gradient(log_p, x)
            if cfg.method is not Method.DDPM:  # DDIM and DPM-Solver++ guide ε̂ (and so x̂₀)
                eps = steps.classifier_guided_eps(eps, ab_t, grad, scale)
                x0 = steps.x0_from_eps(x, eps, ab_t)
        return x0, eps, v, grad

    def _call_model(self, x, t_b, labels, scale):
        cfg = self.config
        expected_channels = tf.shape(x)[-1] * (2 if cfg.learned_variance else 1)
        if isinstance(cfg.guidance, ClassifierFreeGuidance):
            null = tf.fill(tf.shape(labels), tf.cast(cfg.guidance.null_label, labels.dtype))
            both = self._network(tf.concat([x, x], 0), tf.concat([t_b, t_b], 0), tf.concat([labels, null], 0))
            both = tf.cast(both, x.dtype)
            cond, uncond = tf.split(both, 2, axis=0)
            if cfg.learned_variance:  # guide the prediction, keep the conditional variance (as GLIDE)
                cond_pred, cond_v = tf.split(cond, 2, axis=-1)
                uncond_pred, _ = tf.split(uncond, 2, axis=-1)
                out = tf.concat([steps.classifier_free_eps(uncond_pred, cond_pred, scale), cond_v], axis=-1)
            else:
                out = steps.classifier_free_eps(uncond, cond, scale)
        elif cfg.class_conditional:
            out = tf.cast(self._network(x, t_b, labels), x.dtype)
        else:
            out = tf.cast(self._network(x, t_b), x.dtype)
        expected = tf.concat([tf.shape(x)[:-1], [expected_channels]], axis=0)
        with tf.control_dependencies([tf.debugging.assert_equal(tf.shape(out), expected, message="model_fn output has the wrong shape")]):
            return tf.identity(out)

    def _final_alpha(self, dtype):
        if self.config.final_alpha_cumprod == "one":
            return tf.constant(1.0, dtype)
        return tf.cast(self._alphas_cumprod[0], dtype)

    # ------------------------------------------------------------ graph loops
    def _graph_checks(self, x, timesteps, eta, noise):
        num_t = self.schedule.num_timesteps
        checks = [
            tf.debugging.assert_all_finite(x, "x_T contains NaN or Inf"),
            tf.debugging.assert_greater_equal(eta, tf.cast(0.0, eta.dtype), message="eta must be >= 0"),
            tf.debugging.assert_less_equal(eta, tf.cast(1.0, eta.dtype), message="eta must be <= 1"),
            tf.debugging.assert_positive(tf.size(timesteps), message="timesteps must not be empty"),
            tf.debugging.assert_greater_equal(timesteps, 0, message="timesteps must be >= 0"),
            tf.debugging.assert_less_equal(timesteps, num_t - 1, message=f"timesteps must be <= T-1 = {num_t - 1}"),
            tf.debugging.assert_less(timesteps[1:], timesteps[:-1], message="timesteps must be strictly descending"),
        ]
        if noise is not None:
            expected = tf.concat([tf.shape(timesteps), tf.shape(x)], axis=0)
            checks.append(
                tf.debugging.assert_equal(tf.shape(noise), expected, message="noise must have shape [S, B, *x_T.shape[1:]]")
            )
        return checks

    def _sample_loop(self, x, timesteps, eta, scale, labels, noise, seed, trajectory):
        cfg = self.config
        with tf.control_dependencies(self._graph_checks(x, timesteps, eta, noise)):
            x = tf.identity(x)
        num_steps = tf.shape(timesteps)[0]
        batch = tf.shape(x)[0]
        eta = steps.as_dtype(eta, x.dtype)
        final_ab = self._final_alpha(x.dtype)
        stochastic = cfg.method is Method.DDPM
        multistep = cfg.method is Method.DPMPP_2M
        if cfg.final_alpha_cumprod == "one":  # λ = +∞ at ᾱ = 1; a finite stand-in, the final step is first order
            final_lam = tf.cast(self._half_log_snr[0] + 1.0, x.dtype)
        else:
            final_lam = tf.cast(self._half_log_snr[0], x.dtype)

        def body(i, x, hist_x, hist_x0, x0_prev, h_prev):
            t_b = tf.fill([batch], timesteps[i])
            has_next = i + 1 < num_steps
            ab_t = select_timestep(self._alphas_cumprod, t_b, x)
            t_next = tf.fill([batch], timesteps[tf.minimum(i + 1, num_steps - 1)])
            ab_prev = tf.where(has_next, select_timestep(self._alphas_cumprod, t_next, x), final_ab)
            x0, eps, v, grad = self._denoise(x, t_b, ab_t, labels, scale)
            if multistep:
                # second order except on the first step and the final one (into ᾱ = 1, h = ∞)
                lam_prev = tf.where(has_next, select_timestep(self._half_log_snr, t_next, x), final_lam)
                h = lam_prev - select_timestep(self._half_log_snr, t_b, x)
                second = tf.logical_and(i > 0, has_next)
                d = steps.dpmpp_2m_x0(x0, x0_prev, h, h_prev, second)
                x_next = steps.dpmpp_update(x, d, ab_t, ab_prev)
                if trajectory:
                    hist_x = hist_x.write(i, x_next)
                    hist_x0 = hist_x0.write(i, x0)
                return i + 1, x_next, hist_x, hist_x0, x0, h
            if noise is not None:
                z = noise[i]
            else:
                needed = has_next if stochastic else tf.logical_and(has_next, eta > 0)
                z = tf.cond(needed, lambda: _per_sample_normal(seed, i, x), lambda: tf.zeros_like(x))
            z = z * tf.cast(has_next, x.dtype)  # no noise on the final step: its output is x_0
            if stochastic:
                mean = steps.posterior_mean(x, x0, ab_t, ab_prev)
                log_var = steps.ddpm_log_variance(cfg.variance.value, ab_t, ab_prev, v)
                if grad is not None:
                    mean = steps.classifier_guided_mean(mean, log_var, grad, scale)
                x_next = steps.ddpm_step(mean, log_var, z)
            else:
                sigma = steps.ddim_sigma(ab_t, ab_prev, eta)
                x_next = steps.ddim_update(x0, eps, ab_prev, sigma, z)
            if trajectory:
                hist_x = hist_x.write(i, x_next)
                hist_x0 = hist_x0.write(i, x0)
            return i + 1, x_next, hist_x, hist_x0, x0_prev, h_prev

        hist = [tf.TensorArray(x.dtype, size=num_steps) for _ in range(2)] if trajectory else [0, 0]
        # the multistep solver carries the previous x̂₀ and λ step; the other methods pass dummies through
        if multistep:
            ones = tf.ones_like(select_timestep(self._alphas_cumprod, tf.fill([batch], timesteps[0]), x))
            memory = [tf.zeros_like(x), ones]
        else:
            memory = [tf.constant(0.0, x.dtype), tf.constant(0.0, x.dtype)]
        _, x, hist_x, hist_x0, _, _ = tf.while_loop(
            lambda i, *_: i < num_steps, body, [tf.constant(0), x, *hist, *memory]
        )
        if trajectory:
            return x, hist_x.stack(), hist_x0.stack()
        return x

    def _encode_loop(self, x, timesteps, scale, labels):
        with tf.control_dependencies(self._graph_checks(x, timesteps, tf.constant(0.0, x.dtype), None)):
            x = tf.identity(x)
        num_steps = tf.shape(timesteps)[0]
        batch = tf.shape(x)[0]
        final_ab = self._final_alpha(x.dtype)
        zero = tf.zeros_like(x)

        def body(i, x):
            # Go up from the level after timesteps[i] (the clean level for the last one) to timesteps[i],
            # with ε evaluated at the current level; the clean level is evaluated at t = 0.
            at_clean = i + 1 >= num_steps
            t_cur = tf.fill([batch], tf.where(at_clean, 0, timesteps[tf.minimum(i + 1, num_steps - 1)]))
            ab_cur = tf.where(at_clean, final_ab, select_timestep(self._alphas_cumprod, t_cur, x))
            ab_next = select_timestep(self._alphas_cumprod, tf.fill([batch], timesteps[i]), x)
            x0, eps, _, _ = self._denoise(x, t_cur, ab_cur, labels, scale)
            return i - 1, steps.ddim_update(x0, eps, ab_next, tf.zeros_like(ab_next), zero)

        _, x = tf.while_loop(lambda i, x: i >= 0, body, [num_steps - 1, x])
        return x

    def _function(self, kind, rank, dtype, noise_mode, trajectory):
        key = (kind, rank, dtype, noise_mode, trajectory)
        conditional = self.config.needs_labels
        if key in self._functions:
            return self._functions[key]
        spec_x = tf.TensorSpec([None] * rank, dtype)
        spec_t = tf.TensorSpec([None], tf.int32)
        spec_s = tf.TensorSpec([], dtype)
        spec_y = tf.TensorSpec([None], tf.int32)
        if kind == "encode":
            def fn(x, timesteps, scale, labels):
                return self._encode_loop(x, timesteps, scale, labels if conditional else None)

            signature = [spec_x, spec_t, spec_s, spec_y]
        else:
            spec_n = tf.TensorSpec([None] * (rank + 1), dtype) if noise_mode == "explicit" else tf.TensorSpec([], tf.int64)

            def fn(x, timesteps, eta, scale, labels, noise_or_seed):
                noise, seed = (noise_or_seed, None) if noise_mode == "explicit" else (None, noise_or_seed)
                return self._sample_loop(x, timesteps, eta, scale, labels if conditional else None, noise, seed, trajectory)

            signature = [spec_x, spec_t, spec_s, spec_s, spec_y, spec_n]
        compiled = tf.function(fn, input_signature=signature, reduce_retracing=False)
        self._functions[key] = compiled
        return compiled

    def graph_sample(self, x_T, timesteps, eta=0.0, seed=None, noise=None, labels=None, guidance_scale=1.0):
        """The sampling loop as graph ops, for use inside another ``tf.function`` (exported signatures).

        No Python-side validation: only the in-graph assertions run. Give
        exactly one of ``seed`` (int64 scalar) and ``noise`` (``[S, B, ...]``).
        """
        x = tf.convert_to_tensor(x_T)
        seed = None if seed is None else tf.cast(seed, tf.int64)
        noise = None if noise is None else tf.cast(noise, x.dtype)
        y = labels if self.config.needs_labels else None
        return self._sample_loop(x, tf.cast(timesteps, tf.int32), steps.as_dtype(eta, x.dtype),
                                 steps.as_dtype(guidance_scale, x.dtype), y, noise, seed, False)

    def graph_encode(self, x0, timesteps, labels=None, guidance_scale=1.0):
        """DDIM inversion as graph ops (see :meth:`encode`), for exported signatures."""
        x = tf.convert_to_tensor(x0)
        y = labels if self.config.needs_labels else None
        return self._encode_loop(x, tf.cast(timesteps, tf.int32), steps.as_dtype(guidance_scale, x.dtype), y)

    def tracing_count(self) -> int:
        """How many times this sampler's loops have been traced (for retracing tests and benchmarks)."""
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())

    # ------------------------------------------------------------- public API
    def _prepare(self, x, name, timesteps, labels):
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            x = tf.cast(x, tf.float32)
        if x.shape.rank is None or x.shape.rank < 2:
            raise ValueError(f"{name} must have a batch axis and at least one more, got shape {x.shape}")
        if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(x))):
            raise ValueError(f"{name} contains NaN or Inf")
        if isinstance(timesteps, tf.Tensor) and not tf.executing_eagerly():
            taus = tf.cast(timesteps, tf.int32)
        else:
            arr = np.asarray(timesteps.numpy() if isinstance(timesteps, tf.Tensor) else timesteps)
            try:
                arr = spaced_timesteps(self.schedule.num_timesteps, None, spacing=arr)
            except ValueError as e:
                raise ValueError(f"timesteps: {e}") from None
            if self.config.prediction_type is Prediction.EPSILON and np.any(self.schedule.alphas_cumprod[arr] <= 0):
                raise ValueError(
                    "timesteps include a level with alphas_cumprod = 0 (zero terminal SNR), where an epsilon "
                    "prediction cannot determine x0; use prediction_type 'v_prediction' or 'sample'"
                )
            taus = tf.constant(arr, tf.int32)
        if labels is None:
            if self.config.needs_labels:
                raise ValueError("labels are required for a class_conditional model or with guidance")
            y = tf.zeros([tf.shape(x)[0]], tf.int32)
        elif not self.config.needs_labels:
            raise ValueError("labels were given, but the model is not class_conditional and no guidance is set")
        else:
            y = tf.cast(tf.convert_to_tensor(labels), tf.int32)
            if y.shape.rank != 1:
                raise ValueError(f"labels must be a 1-D int tensor [B], got shape {y.shape}")
            if tf.executing_eagerly() and int(tf.shape(y)[0]) != int(tf.shape(x)[0]):
                raise ValueError(f"labels has {int(tf.shape(y)[0])} entries but {name} has batch {int(tf.shape(x)[0])}")
        return x, taus, y

    def sample(self, x_T, timesteps, eta=0.0, noise=None, seed=None, labels=None, guidance_scale=1.0, return_trajectory=False):
        """Run the reverse process from ``x_T`` along ``timesteps``; returns x₀ (and a :class:`Trajectory`)."""
        x, taus, y = self._prepare(x_T, "x_T", timesteps, labels)
        if isinstance(eta, (int, float, np.floating, np.integer)) and not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if self.config.method is not Method.DDIM and isinstance(eta, (int, float)) and eta != 0.0:
            raise ValueError("eta applies only to method='ddim'")
        if self.config.method is Method.DPMPP_2M and noise is not None:
            raise ValueError("method='dpmpp_2m' is deterministic: it takes no noise")
        if noise is not None and seed is not None:
            raise ValueError("give noise or seed, not both")
        if noise is not None:
            noise = steps.as_dtype(noise, x.dtype)
            if tf.executing_eagerly():
                expected = [int(tf.shape(taus)[0])] + [int(d) for d in tf.shape(x)]
                if list(noise.shape) != expected:
                    raise ValueError(f"noise must have shape [S, B, *x_T.shape[1:]] = {expected}, got {list(noise.shape)}")
            mode, extra = "explicit", noise
        else:
            if seed is None:
                seed = int(np.random.SeedSequence().generate_state(1)[0])
            if isinstance(seed, (bool, float)):
                raise ValueError(f"seed must be an integer, got {seed!r}")
            mode, extra = "seed", tf.constant(seed, tf.int64)
        fn = self._function("sample", x.shape.rank, x.dtype, mode, bool(return_trajectory))
        out = fn(x, taus, steps.as_dtype(eta, x.dtype), steps.as_dtype(guidance_scale, x.dtype), y, extra)
        if return_trajectory:
            return out[0], Trajectory(out[1], out[2])
        return out

    def encode(self, x0, timesteps, labels=None, guidance_scale=1.0):
        """Deterministic DDIM inversion x₀ → x_T along the same descending ``timesteps`` used to sample.

        Runs the η = 0 update of eq. 12 upwards (seed 003's inversion), from the
        clean level to ``timesteps[-1]``, ..., to ``timesteps[0]``, with ε
        evaluated at the current level (t = 0 for the clean level).
        """
        x, taus, y = self._prepare(x0, "x0", timesteps, labels)
        fn = self._function("encode", x.shape.rank, x.dtype, None, False)
        return fn(x, taus, steps.as_dtype(guidance_scale, x.dtype), y)


def graph_timesteps(num_timesteps: int, num_steps, spacing: str = "uniform"):
    """:func:`tfddim.spacing.spaced_timesteps` for a *tensor* S, as int32 graph ops (exports).

    Supports ``uniform``, ``linspace`` and ``trailing``, with the same rounding
    (half to even) as the numpy version; ``num_steps`` must already be in [1, T].
    """
    T = num_timesteps
    s = tf.cast(num_steps, tf.int32)
    i = tf.range(s)
    if spacing == "uniform":
        asc = i * (T // s)
    elif spacing == "linspace":
        stride = tf.where(s > 1, tf.cast(T - 1, tf.float64) / tf.cast(tf.maximum(s - 1, 1), tf.float64), 1.0)
        asc = tf.cast(tf.round(tf.cast(i, tf.float64) * stride), tf.int32)
    elif spacing == "trailing":
        desc = tf.cast(tf.round(T - tf.cast(i, tf.float64) * (T / tf.cast(s, tf.float64))), tf.int32) - 1
        return desc
    else:
        raise ValueError(f"spacing {spacing!r} cannot be computed in a graph; use uniform, linspace or trailing")
    return tf.reverse(asc, [0])


def _config(method="ddim", eta=0.0, **options):
    """Map the functional API's options to a :class:`SamplerConfig` (and the effective η)."""
    if isinstance(eta, str):
        if eta != "sigma_hat":
            raise ValueError(f"eta must be a number in [0, 1] or 'sigma_hat', got {eta!r}")
        if _enum(Method, method, "method") is not Method.DDIM:
            raise ValueError("eta='sigma_hat' is a DDIM option; use method='ddim'")
        # σ̂ = √(1 − ᾱ_t/ᾱ_prev) is the respaced β: the DDPM mean with the fixed_large variance.
        return SamplerConfig(method=Method.DDPM, variance=Variance.FIXED_LARGE, **options), 0.0
    return SamplerConfig(method=method, **options), eta


@functools.lru_cache(maxsize=64)
def _cached_sampler(model_fn, schedule, config) -> Sampler:
    # Compiled loops are reused across calls with the same (model_fn, schedule, config);
    # results never depend on the cache, only the tracing cost does.
    return Sampler(model_fn, schedule, config)


def _sampler(model_fn, schedule, config) -> Sampler:
    try:
        return _cached_sampler(model_fn, schedule, config)
    except TypeError:  # an unhashable model_fn: compile afresh
        return Sampler(model_fn, schedule, config)


def sample(model_fn, x_T, schedule, timesteps, method="ddim", eta=0.0, noise=None, seed=None, *,
           labels=None, guidance_scale=1.0, return_trajectory=False, **options):
    """Sample x₀ from ``x_T`` along ``timesteps`` with DDIM (any η, or ``eta="sigma_hat"``), DDPM or DPM-Solver++(2M).

    ``options`` are the :class:`SamplerConfig` fields: ``variance``,
    ``prediction_type``, ``learned_variance``, ``clip_x0``, ``dynamic_threshold``,
    ``threshold_max``, ``final_alpha_cumprod``, ``guidance``. See :class:`Sampler`
    for the call arguments.
    """
    config, eta = _config(method, eta, **options)
    return _sampler(model_fn, schedule, config).sample(
        x_T, timesteps, eta=eta, noise=noise, seed=seed, labels=labels,
        guidance_scale=guidance_scale, return_trajectory=return_trajectory,
    )


def encode(model_fn, x0, schedule, timesteps, *, labels=None, guidance_scale=1.0, **options):
    """DDIM inversion x₀ → x_T (see :meth:`Sampler.encode`)."""
    config, _ = _config("ddim", 0.0, **options)
    return _sampler(model_fn, schedule, config).encode(x0, timesteps, labels=labels, guidance_scale=guidance_scale)


def decode(model_fn, x_T, schedule, timesteps, *, labels=None, guidance_scale=1.0, **options):
    """Deterministic DDIM (η = 0) decoding x_T → x₀, the inverse of :func:`encode`."""
    return sample(model_fn, x_T, schedule, timesteps, method="ddim", eta=0.0, labels=labels,
                  guidance_scale=guidance_scale, **options)


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


def interpolate(model_fn, x_T_a, x_T_b, schedule, timesteps, num=8, **options):
    """Decode ``num`` latents slerped from ``x_T_a`` to ``x_T_b`` (single latents, no batch axis).

    Returns ``(x0 [num, ...], latents [num, ...])``.
    """
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    latents = slerp(x_T_a, x_T_b, np.linspace(0.0, 1.0, num))
    return decode(model_fn, latents, schedule, timesteps, **options), latents
