"""The graph-mode sampler: ONE ``tf.while_loop`` over a timestep tensor, for every solver.

``model_fn(x_t, t)`` (or ``model_fn(x_t, t, labels)`` for a conditional model)
returns the network's prediction for a batch; ``t`` is an int32 ``[B]`` tensor
of *original* timestep indices, so a network trained on T steps works with any
spaced subsequence. Per-step coefficients are gathered from the schedule at
each batch element's t (:func:`tfddim.diffusion.steps.select_timestep`, as in the seeds).

The loop body is method-agnostic: coefficients → one network call
(:meth:`Sampler._denoise`) → this step's noise if the solver uses any →
``solver.step`` (:mod:`tfddim.sampling.solvers`). The conditioning is one
:class:`~tfddim.sampling.conditioning.Conditioning` value.

The loop is traced once per (rank, dtype, noise mode, trajectory): batch size, image shape, number of steps, the timesteps, η, the
seed and the guidance scale are all tensors, so changing them does not retrace.

Conventions (the defaults, with no options given): nothing is clipped or
thresholded, ᾱ_prev = 1 after the last listed timestep, and no noise is added
on the final step (its output is x₀).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from tfddim.diffusion import editing, steps
from tfddim.diffusion.schedules import Schedule
from tfddim.diffusion.spacing import spaced_timesteps
from tfddim.diffusion.steps import select_timestep
from tfddim.sampling import solvers
from tfddim.sampling.conditioning import Conditioning
from tfddim.sampling.options import (ClassifierFreeGuidance, ClassifierGuidance, FinalAlpha, Prediction,
                                     SamplerConfig)

__all__ = ["Sampler", "Trajectory"]


class Trajectory(NamedTuple):
    """Per-step history, ``[S, B, ...]`` each: ``x`` after step i, and the jumping prediction x̂₀ at step i."""

    x: tf.Tensor
    x0_hat: tf.Tensor


class Sampler:
    """A compiled sampler for one network, schedule and :class:`~tfddim.sampling.options.SamplerConfig`.

    It holds its compiled loops (one per rank, dtype, noise mode and trajectory flag): keep the object
    to reuse them. Nothing is cached elsewhere.

    Args:
        model_fn: ``model_fn(x_t, t[, labels])`` → prediction (see module docstring).
        schedule: the :class:`~tfddim.diffusion.schedules.Schedule` the network was trained with.
        config: the trace-time options.

    Call arguments of :meth:`sample`:
        x_T: ``[B, ...]`` starting noise (float32 or float64; the dtype is kept).
        timesteps: strictly descending ints in [0, T−1] (:func:`tfddim.schedules.spaced_timesteps`).
        eta: DDIM's η in [0, 1] (only for solvers that take it).
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
        self.solver = solvers.make(config)
        self._alphas_cumprod = tf.constant(schedule.alphas_cumprod, tf.float64)
        # λ_t, gathered like ᾱ. A zero-terminal-SNR level has λ = −∞: only ever the start of a
        # first-order step, and its infinite h only zeroes the next step's extrapolation (h/(2·h_prev) = 0).
        self._half_log_snr = tf.constant(schedule.half_log_snr, tf.float64)
        self._functions: dict = {}

    # ----------------------------------------------------------------- model
    def _denoise(self, x, t_b, ab_t, cond: Conditioning) -> solvers.Denoised:
        """One model call → x̂₀, ε̂, v and ∇log p(y|x) after prediction conversion, clipping/thresholding and
        classifier-free guidance. Classifier guidance's gradient is returned for the solver to apply."""
        cfg = self.config
        out = self._call_model(x, t_b, cond)
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
                log_p = cfg.guidance.log_prob_fn(x, t_b, cond.labels)
            grad = tape.gradient(log_p, x)
        return solvers.Denoised(x0, eps, v, grad)

    def _call_model(self, x, t_b, cond: Conditioning):
        cfg = self.config
        expected_channels = tf.shape(x)[-1] * (2 if cfg.learned_variance else 1)
        if isinstance(cfg.guidance, ClassifierFreeGuidance):
            both = Conditioning.concat(cond, cond.unconditional(cfg.guidance.null_label))
            out = tf.cast(self._network(tf.concat([x, x], 0), tf.concat([t_b, t_b], 0), *both.model_args()), x.dtype)
            cond_out, uncond_out = tf.split(out, 2, axis=0)
            scale = cond.guidance_scale
            if cfg.learned_variance:  # guide the prediction, keep the conditional variance (as GLIDE)
                cond_pred, cond_v = tf.split(cond_out, 2, axis=-1)
                uncond_pred, _ = tf.split(uncond_out, 2, axis=-1)
                out = tf.concat([steps.classifier_free_eps(uncond_pred, cond_pred, scale), cond_v], axis=-1)
            else:
                out = steps.classifier_free_eps(uncond_out, cond_out, scale)
        else:
            out = tf.cast(self._network(x, t_b, *cond.model_args(labels=cfg.class_conditional)), x.dtype)
        expected = tf.concat([tf.shape(x)[:-1], [expected_channels]], axis=0)
        with tf.control_dependencies([tf.debugging.assert_equal(tf.shape(out), expected, message="model_fn output has the wrong shape")]):
            return tf.identity(out)

    def _final_alpha(self, dtype):
        if self.config.final_alpha_cumprod is FinalAlpha.ONE:
            return tf.constant(1.0, dtype)
        return tf.cast(self._alphas_cumprod[0], dtype)

    def _final_half_log_snr(self, dtype):
        # λ = +∞ at ᾱ = 1: a finite stand-in (the final step is first order for every multistep solver)
        offset = 1.0 if self.config.final_alpha_cumprod is FinalAlpha.ONE else 0.0
        return tf.cast(self._half_log_snr[0] + offset, dtype)

    def _coefficients(self, i, num_steps, timesteps, x, eta) -> solvers.Coefficients:
        """The schedule at step i from ``timesteps[i]`` to ``timesteps[i+1]`` (or the final level)."""
        batch = tf.shape(x)[0]
        has_next = i + 1 < num_steps
        t = tf.fill([batch], timesteps[i])
        t_next = tf.fill([batch], timesteps[tf.minimum(i + 1, num_steps - 1)])
        ab_prev = tf.where(has_next, select_timestep(self._alphas_cumprod, t_next, x), self._final_alpha(x.dtype))
        lam_prev = tf.where(has_next, select_timestep(self._half_log_snr, t_next, x), self._final_half_log_snr(x.dtype))
        return solvers.Coefficients(
            alpha_bar_t=select_timestep(self._alphas_cumprod, t, x), alpha_bar_prev=ab_prev,
            half_log_snr_t=select_timestep(self._half_log_snr, t, x), half_log_snr_prev=lam_prev,
            first=tf.equal(i, 0), has_next=has_next, eta=eta, steps_left=num_steps - 1 - i, num_steps=num_steps)

    # ------------------------------------------------------------ graph loops
    def _graph_checks(self, x, timesteps, eta, noise, allow_empty=False):
        num_t = self.schedule.num_timesteps
        checks = [
            tf.debugging.assert_all_finite(x, "x_T contains NaN or Inf"),
            tf.debugging.assert_greater_equal(eta, tf.cast(0.0, eta.dtype), message="eta must be >= 0"),
            tf.debugging.assert_less_equal(eta, tf.cast(1.0, eta.dtype), message="eta must be <= 1"),
            tf.debugging.assert_greater_equal(timesteps, 0, message="timesteps must be >= 0"),
            tf.debugging.assert_less_equal(timesteps, num_t - 1, message=f"timesteps must be <= T-1 = {num_t - 1}"),
            tf.debugging.assert_less(timesteps[1:], timesteps[:-1], message="timesteps must be strictly descending"),
        ]
        if not allow_empty:  # an edit keeps none of the list when s·(T−1) is below its last level: x₀ is returned
            checks.append(tf.debugging.assert_positive(tf.size(timesteps), message="timesteps must not be empty"))
        if noise is not None:
            expected = tf.concat([tf.shape(timesteps), tf.shape(x)], axis=0)
            checks.append(
                tf.debugging.assert_equal(tf.shape(noise), expected, message="noise must have shape [S, B, *x_T.shape[1:]]")
            )
        return checks

    def _sample_loop(self, x, timesteps, eta, cond: Conditioning, noise, seed, trajectory, solver=None, moves=None,
                     step_offset=0, allow_empty=False):
        """The one loop: x_{τ_i} → x_{τ_{i+1}} by ``solver`` (``self.solver`` by default) for i = 0 … S−1.

        Per-step hook: with ``cond.mask`` (inpainting) the known pixels of every step's output are replaced by
        q(x_{τ_{i+1}} | x₀) drawn with the step's own noise entry (x₀ itself after the final step), and x_T's
        by √ᾱ_{τ_0}·x₀ + √(1−ᾱ_{τ_0})·x_T, as latent diffusion's DDIM sampler does with ``mask``/``x0``.
        ``moves`` (RePaint, :func:`tfddim.diffusion.editing.repaint_moves`): the list positions to visit, a
        step down where the next is larger, the forward jump back up where it is smaller; noise entries
        are then numbered by move. ``step_offset``: the seed's stream index of step 0 (an edit's kept steps
        are the last K of the list and draw the plain sampler's noise for them).
        """
        solver = self.solver if solver is None else solver
        checks = self._graph_checks(x, timesteps, eta, noise, allow_empty)
        inpainting = cond.mask is not None
        if (solver.uses_noise or inpainting) and noise is None and seed is None:
            needed = tf.constant(True) if inpainting else solver.needs_noise(eta)
            checks.append(tf.debugging.Assert(tf.logical_not(needed),
                                              ["this solver draws noise here (eta > 0, a stochastic method, or inpainting): "
                                               "give seed or noise"]))
        with tf.control_dependencies(checks):
            x = tf.identity(x)
        num_steps = tf.shape(timesteps)[0]
        eta = steps.as_dtype(eta, x.dtype)

        def draw(k, x):  # the noise entry k: noise[k], or the seed's stream at k
            if noise is not None:
                return noise[k]
            return steps.stateless_step_normal(seed, tf.cast(k, tf.int64) + tf.cast(step_offset, tf.int64), x)  # 2^31 + i

        def step_noise(k, x, c):
            if not solver.uses_noise:
                return None  # a deterministic solver's graph holds no random op (ONNX has none to convert to)
            if noise is None and seed is None:  # graph_sample without a noise source: η = 0 (asserted above)
                return tf.zeros_like(x)
            if noise is not None:
                z = noise[k]
            else:
                needed = tf.logical_and(c.has_next, solver.needs_noise(eta))
                z = tf.cond(needed, lambda: draw(k, x), lambda: tf.zeros_like(x))
            return z * tf.cast(c.has_next, x.dtype)  # no noise on the final step: its output is x_0

        def keep_known(x_next, c, z):
            known = tf.where(c.has_next, steps.q_sample(cond.known, z, c.alpha_bar_prev), cond.known)
            return cond.mask * known + (1.0 - cond.mask) * x_next

        def down(i, k, x, state):
            """The solver's step from position i (noise entry k); returns (x_next, x̂₀, state)."""
            c = self._coefficients(i, num_steps, timesteps, x, eta)
            d = self._denoise(x, tf.fill([tf.shape(x)[0]], timesteps[i]), c.alpha_bar_t, cond)
            x_next, x0, state = solver.step(x, d, c, cond.guidance_scale, step_noise(k, x, c), state)
            if inpainting:
                x_next = keep_known(x_next, c, draw(k, x))
            return x_next, x0, state

        if inpainting:  # x_T's known pixels: x₀ at the first level, with x_T as its noise
            ab0 = select_timestep(self._alphas_cumprod, tf.fill([tf.shape(x)[0]], timesteps[0]), x)
            x = cond.mask * steps.q_sample(cond.known, x, ab0) + (1.0 - cond.mask) * x

        if moves is not None:
            return self._moves_loop(x, timesteps, moves, solver, down, draw)

        def body(i, x, state, hist):
            x_next, x0, state = down(i, i, x, state)
            if trajectory:
                hist = (hist[0].write(i, x_next), hist[1].write(i, x0))
            return i + 1, x_next, state, hist

        hist = tuple(tf.TensorArray(x.dtype, size=num_steps) for _ in range(2)) if trajectory else ()
        _, x, _, hist = tf.while_loop(lambda i, *_: i < num_steps, body, [tf.constant(0), x, solver.init(x), hist])
        if trajectory:
            return x, hist[0].stack(), hist[1].stack()
        return x

    def _moves_loop(self, x, timesteps, moves, solver, down, draw):
        """RePaint's schedule: along ``moves``, a sampler step down or the forward jump q(x_{τ_p} | x_{τ_{p+1}}) up."""
        num_steps = tf.shape(timesteps)[0]

        def level(p):  # ᾱ at list position p (the final ᾱ at p = S)
            return tf.where(p < num_steps,
                            select_timestep(self._alphas_cumprod, tf.fill([tf.shape(x)[0]], timesteps[tf.minimum(p, num_steps - 1)]), x),
                            self._final_alpha(x.dtype))

        def up(p, k, x):  # from position p + 1 back to p (Lugmayr et al. 2022, eq. 8's forward step)
            ratio = level(p) / level(p + 1)
            return tf.sqrt(ratio) * x + tf.sqrt(1.0 - ratio) * draw(k, x)

        def body(k, x, state):
            p, q = moves[k], moves[k + 1]
            x = tf.cond(q > p, lambda: down(p, k, x, state)[0], lambda: up(q, k, x))
            return k + 1, x, state

        _, x, _ = tf.while_loop(lambda k, *_: k < tf.shape(moves)[0] - 1, body, [tf.constant(0), x, solver.init(x)])
        return x

    def _encode_loop(self, x, timesteps, cond: Conditioning):
        """DDIM inversion: the η = 0 step of eq. 12 run upwards (classifier guidance as DDIM applies it)."""
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
            d = solvers.guided_by_classifier(x, self._denoise(x, t_cur, ab_cur, cond), ab_cur, cond.guidance_scale)
            return i - 1, steps.ddim_update(d.x0, d.eps, ab_next, tf.zeros_like(ab_next), zero)

        _, x = tf.while_loop(lambda i, x: i >= 0, body, [num_steps - 1, x])
        return x

    def _conditioning(self, labels, scale, base: Conditioning = Conditioning()) -> Conditioning:
        return base._replace(labels=labels if self.config.needs_labels else None, guidance_scale=scale)

    def _edit_loop(self, x0, timesteps, strength, eta, cond: Conditioning, noise, seed, start_noise, solver=None,
                   step_offset=0):
        """SDEdit: x₀ noised to the first level of the kept list (:mod:`tfddim.diffusion.editing`), then the loop.

        ``start_noise`` (z of the noising; else the seed's stream −1) and ``noise[S−K:]`` for the K kept steps.
        With nothing kept the result is x₀ itself (the noising at ᾱ = 1 and a loop of no steps).
        """
        check = tf.debugging.Assert(tf.logical_and(strength > 0, strength <= 1),
                                    ["strength must be in (0, 1]; got", strength])
        with tf.control_dependencies([check]):
            kept = editing.graph_strength_timesteps(timesteps, strength, self.schedule.num_timesteps)
        num_kept, num_steps = tf.size(kept), tf.size(timesteps)
        first = tf.fill([tf.shape(x0)[0]], tf.concat([kept, [0]], 0)[0])
        ab = tf.where(num_kept > 0, select_timestep(self._alphas_cumprod, first, x0), tf.ones([], x0.dtype))
        z = start_noise if start_noise is not None else steps.stateless_step_normal(seed, tf.cast(step_offset, tf.int64) - 1, x0)
        x = steps.q_sample(x0, z, ab)
        noise = None if noise is None else noise[num_steps - num_kept:]
        return self._sample_loop(x, kept, eta, cond, noise, seed, False, solver,
                                 step_offset=step_offset + num_steps - num_kept, allow_empty=True)

    # the conditioning inputs a compiled function may take, beside x, timesteps, η, scale, labels and noise/seed
    @staticmethod
    def _extra_spec(name, rank, dtype):
        return {"low_res": tf.TensorSpec([None] * rank, dtype), "low_res_t": tf.TensorSpec([None], tf.int32),
                "mask": tf.TensorSpec([None] * rank, dtype), "known": tf.TensorSpec([None] * rank, dtype),
                "strength": tf.TensorSpec([], dtype), "start_noise": tf.TensorSpec([None] * rank, dtype),
                "moves": tf.TensorSpec([None], tf.int32)}[name]

    def _function(self, kind, rank, dtype, noise_mode, trajectory, extras=()):
        key = (kind, rank, dtype, noise_mode, trajectory, tuple(extras))
        if key in self._functions:
            return self._functions[key]
        spec_x = tf.TensorSpec([None] * rank, dtype)
        spec_t = tf.TensorSpec([None], tf.int32)
        spec_s = tf.TensorSpec([], dtype)
        spec_y = tf.TensorSpec([None], tf.int32)
        spec_e = {name: self._extra_spec(name, rank, dtype) for name in extras}

        def conditioning(labels, scale, extra):
            base = Conditioning(low_res=extra.get("low_res"), low_res_t=extra.get("low_res_t"),
                                mask=extra.get("mask"), known=extra.get("known"))
            return self._conditioning(labels, scale, base)

        if kind == "encode":
            def fn(x, timesteps, scale, labels, extra):
                return self._encode_loop(x, timesteps, conditioning(labels, scale, extra))

            signature = [spec_x, spec_t, spec_s, spec_y, spec_e]
        else:
            spec_n = tf.TensorSpec([None] * (rank + 1), dtype) if noise_mode == "explicit" else tf.TensorSpec([], tf.int64)

            def fn(x, timesteps, eta, scale, labels, noise_or_seed, extra):
                noise, seed = (noise_or_seed, None) if noise_mode == "explicit" else (None, noise_or_seed)
                cond = conditioning(labels, scale, extra)
                if kind == "edit":
                    return self._edit_loop(x, timesteps, extra["strength"], eta, cond, noise, seed,
                                           extra.get("start_noise"))
                return self._sample_loop(x, timesteps, eta, cond, noise, seed, trajectory, moves=extra.get("moves"))

            signature = [spec_x, spec_t, spec_s, spec_s, spec_y, spec_n, spec_e]
        compiled = tf.function(fn, input_signature=signature, reduce_retracing=False)
        self._functions[key] = compiled
        return compiled

    def graph_sample(self, x_T, timesteps, eta=0.0, seed=None, noise=None, cond: Conditioning = Conditioning(),
                     solver: solvers.Solver | None = None, trajectory: bool = False, step_offset: int = 0):
        """The sampling loop as graph ops, for use inside another ``tf.function`` (exported signatures).

        No Python-side validation: only the in-graph assertions run. Give
        ``seed`` (int64 scalar) or ``noise`` (``[S, B, ...]``) when the solver draws noise; with neither,
        η must be 0 (asserted) and the graph holds no random op. ``solver`` replaces the configured one
        for this call (``sample_ode``'s :class:`~tfddim.sampling.solvers.select.Selected`). With
        ``trajectory`` it returns ``(x_0, x_steps, x0_steps)``: x after each step and x̂₀ at each step,
        ``[S, B, ...]`` each (memory O(S·B)). With ``cond.mask`` it inpaints (see :meth:`inpaint`; noise
        or seed is then always needed). ``step_offset``: the seed's stream index of step 0 (a cascade's second
        stage draws from streams that its first stage does not use).
        """
        x = tf.convert_to_tensor(x_T)
        seed = None if seed is None else tf.cast(seed, tf.int64)
        noise = None if noise is None else tf.cast(noise, x.dtype)
        cond = self._conditioning(cond.labels, steps.as_dtype(cond.guidance_scale, x.dtype), cond)
        return self._sample_loop(x, tf.cast(timesteps, tf.int32), steps.as_dtype(eta, x.dtype), cond, noise, seed,
                                 bool(trajectory), solver, step_offset=step_offset)

    def graph_edit(self, x0, timesteps, strength, eta=0.0, seed=None, noise=None, start_noise=None,
                   cond: Conditioning = Conditioning(), solver: solvers.Solver | None = None, step_offset: int = 0):
        """SDEdit as graph ops (see :meth:`edit`): ``noise`` ``[S, B, ...]`` for the whole list (the kept steps
        use its last K entries), ``start_noise`` ``[B, ...]``; or ``seed`` for both."""
        x = tf.convert_to_tensor(x0)
        seed = None if seed is None else tf.cast(seed, tf.int64)
        noise = None if noise is None else tf.cast(noise, x.dtype)
        start_noise = None if start_noise is None else tf.cast(start_noise, x.dtype)
        cond = self._conditioning(cond.labels, steps.as_dtype(cond.guidance_scale, x.dtype), cond)
        return self._edit_loop(x, tf.cast(timesteps, tf.int32), steps.as_dtype(strength, x.dtype),
                               steps.as_dtype(eta, x.dtype), cond, noise, seed, start_noise, solver, step_offset)

    def graph_encode(self, x0, timesteps, cond: Conditioning = Conditioning()):
        """DDIM inversion as graph ops (see :meth:`encode`), for exported signatures."""
        x = tf.convert_to_tensor(x0)
        cond = self._conditioning(cond.labels, steps.as_dtype(cond.guidance_scale, x.dtype), cond)
        return self._encode_loop(x, tf.cast(timesteps, tf.int32), cond)

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

    def _low_res(self, x, low_res, low_res_t) -> dict:
        """The checked image conditioning of a super-resolution network (``{}`` without one)."""
        if low_res is None:
            if low_res_t is not None:
                raise ValueError("low_res_t was given without low_res")
            return {}
        low = tf.convert_to_tensor(low_res, x.dtype)
        if low.shape.rank != x.shape.rank or (x.shape[0] is not None and low.shape[0] != x.shape[0]):
            raise ValueError(f"low_res must have shape [B, h, w, C] with the batch of x ({x.shape[0]}), got {low.shape}")
        if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(low))):
            raise ValueError("low_res contains NaN or Inf")
        if low_res_t is None:
            t = tf.zeros([tf.shape(x)[0]], tf.int32)
        else:
            t = tf.cast(tf.broadcast_to(tf.convert_to_tensor(low_res_t), [tf.shape(x)[0]]), tf.int32)
            if tf.executing_eagerly():
                values = t.numpy()
                if values.min() < 0 or values.max() > self.schedule.num_timesteps - 1:
                    raise ValueError(f"low_res_t must be in [0, T-1 = {self.schedule.num_timesteps - 1}], got {values}")
        return {"low_res": low, "low_res_t": t}

    def _noise_source(self, x, count, noise, seed, takes_noise=True):
        """(mode, tensor) for the compiled loop: explicit ``noise`` ``[count, B, ...]`` or an int64 seed."""
        if not takes_noise and noise is not None:
            raise ValueError(f"method={self.config.method.value!r} is deterministic: it takes no noise")
        if noise is not None and seed is not None:
            raise ValueError("give noise or seed, not both")
        if noise is not None:
            noise = steps.as_dtype(noise, x.dtype)
            if tf.executing_eagerly():
                expected = [int(count)] + [int(d) for d in tf.shape(x)]
                if list(noise.shape) != expected:
                    raise ValueError(f"noise must have shape [S, B, *x.shape[1:]] = {expected}, got {list(noise.shape)}")
            return "explicit", noise
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        return "seed", tf.constant(seed, tf.int64)

    def _check_eta(self, eta):
        if isinstance(eta, (int, float, np.floating, np.integer)) and not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if not self.solver.takes_eta and isinstance(eta, (int, float)) and eta != 0.0:
            raise ValueError("eta applies only to method='ddim'")

    def sample(self, x_T, timesteps, eta=0.0, noise=None, seed=None, labels=None, guidance_scale=1.0,
               return_trajectory=False, low_res=None, low_res_t=None):
        """Run the reverse process from ``x_T`` along ``timesteps``; returns x₀ (and a :class:`Trajectory`).

        ``low_res`` ``[B, h, w, C]`` (and its noise-augmentation timestep ``low_res_t``, default 0) for an
        image-conditioned (super-resolution) network.
        """
        x, taus, y = self._prepare(x_T, "x_T", timesteps, labels)
        self._check_eta(eta)
        extra = self._low_res(x, low_res, low_res_t)
        mode, source = self._noise_source(x, tf.shape(taus)[0], noise, seed, self.solver.uses_noise)
        fn = self._function("sample", x.shape.rank, x.dtype, mode, bool(return_trajectory), tuple(extra))
        out = fn(x, taus, steps.as_dtype(eta, x.dtype), steps.as_dtype(guidance_scale, x.dtype), y, source, extra)
        if return_trajectory:
            return out[0], Trajectory(out[1], out[2])
        return out

    def edit(self, x0, timesteps, strength, eta=0.0, noise=None, seed=None, start_noise=None, labels=None,
             guidance_scale=1.0, low_res=None, low_res_t=None):
        """SDEdit (Meng et al. 2022): noise ``x0`` to the level ``strength`` picks and sample back from there.

        The kept steps are the listed timesteps τ ≤ strength·(T−1) (:mod:`tfddim.diffusion.editing`, which
        also compares this with diffusers' ``strength``); x₀ is noised to the first with ``q_sample`` and the
        same loop runs over the rest. strength = 1 is plain sampling from x_T = q_sample(x₀, τ_0, z); a
        strength below the list's last level returns x₀. Noise: ``seed``, or ``noise`` ``[S, B, ...]`` for
        the whole list (the kept K steps use its last K entries) with ``start_noise`` ``[B, ...]`` z.
        """
        x, taus, y = self._prepare(x0, "x0", timesteps, labels)
        self._check_eta(eta)
        strength = editing.check_strength(strength)
        extra = self._low_res(x, low_res, low_res_t)
        if (noise is None) != (start_noise is None) and seed is None:
            raise ValueError("give noise and start_noise together (explicit noise), or a seed")
        if start_noise is not None:
            start = steps.as_dtype(start_noise, x.dtype)
            if list(start.shape) != list(x.shape):
                raise ValueError(f"start_noise must have the shape of x0 {list(x.shape)}, got {list(start.shape)}")
            if seed is not None:
                raise ValueError("give noise and start_noise, or seed, not both")
            extra["start_noise"] = start
        if noise is None and start_noise is not None:  # a deterministic solver takes no step noise: none needed
            noise = tf.zeros([int(tf.shape(taus)[0])] + [int(d) for d in tf.shape(x)], x.dtype)
            noise_allowed = True
        else:
            noise_allowed = self.solver.uses_noise
        mode, source = self._noise_source(x, tf.shape(taus)[0], noise, seed, noise_allowed)
        extra["strength"] = tf.constant(strength, x.dtype)
        fn = self._function("edit", x.shape.rank, x.dtype, mode, False, tuple(extra))
        return fn(x, taus, steps.as_dtype(eta, x.dtype), steps.as_dtype(guidance_scale, x.dtype), y, source, extra)

    def inpaint(self, x_T, x0, mask, timesteps, eta=0.0, noise=None, seed=None, labels=None, guidance_scale=1.0,
                jump_length=10, resample=1, low_res=None, low_res_t=None):
        """Inpainting: sample x where ``mask`` is 0, keeping ``x0`` where it is 1 (exactly, in the output).

        After every step the known pixels are replaced by q_sample(x₀, τ_{i+1}, z_i) with the step's own
        noise entry z_i (latent diffusion's DDIM ``mask``/``x0``; RePaint's known-region update), and x_T's by
        q_sample(x₀, τ_0, x_T). ``resample`` r > 1 adds RePaint's resampling (Lugmayr et al. 2022): every
        ``jump_length`` j positions the sampler jumps j positions back up by the forward process, r − 1
        times (:func:`tfddim.diffusion.editing.repaint_moves`); it needs a one-step solver (DDIM, DDPM) and a
        ``seed``. Noise: ``seed``, or ``noise`` ``[S, B, ...]`` (always needed: the known pixels use it, even at η = 0).
        """
        x, taus, y = self._prepare(x_T, "x_T", timesteps, labels)
        self._check_eta(eta)
        known = tf.convert_to_tensor(x0, x.dtype)
        m = tf.convert_to_tensor(mask, x.dtype)
        for name, value in (("x0", known), ("mask", m)):
            if list(value.shape) != list(x.shape):
                raise ValueError(f"{name} must have the shape of x_T {list(x.shape)}, got {list(value.shape)}")
        if tf.executing_eagerly():
            if not bool(tf.reduce_all(tf.math.is_finite(known))):
                raise ValueError("x0 contains NaN or Inf")
            if not bool(tf.reduce_all(tf.logical_or(tf.equal(m, 0.0), tf.equal(m, 1.0)))):
                raise ValueError("mask must hold only 0 (generate) and 1 (keep)")
        extra = self._low_res(x, low_res, low_res_t)
        extra.update(mask=m, known=known)
        num_steps = int(tf.shape(taus)[0])
        if isinstance(resample, bool) or not isinstance(resample, (int, np.integer)) or resample < 1:
            raise ValueError(f"resample must be an integer >= 1, got {resample!r}")
        if resample > 1:
            if noise is not None:
                raise ValueError("resample > 1 draws fresh noise for every revisit: give seed, not noise")
            if self.solver.init(tf.zeros([1])):
                raise ValueError(f"resample > 1 needs a one-step solver (ddim, ddpm); method={self.config.method.value!r} "
                                 "carries state between steps")
            extra["moves"] = tf.constant(editing.repaint_moves(num_steps, jump_length, resample), tf.int32)
        mode, source = self._noise_source(x, num_steps, noise, seed)
        fn = self._function("inpaint", x.shape.rank, x.dtype, mode, False, tuple(extra))
        return fn(x, taus, steps.as_dtype(eta, x.dtype), steps.as_dtype(guidance_scale, x.dtype), y, source, extra)

    def encode(self, x0, timesteps, labels=None, guidance_scale=1.0, low_res=None, low_res_t=None):
        """Deterministic DDIM inversion x₀ → x_T along the same descending ``timesteps`` used to sample.

        Runs the η = 0 update of eq. 12 upwards (seed 003's inversion), from the
        clean level to ``timesteps[-1]``, ..., to ``timesteps[0]``, with ε
        evaluated at the current level (t = 0 for the clean level).
        """
        x, taus, y = self._prepare(x0, "x0", timesteps, labels)
        extra = self._low_res(x, low_res, low_res_t)
        fn = self._function("encode", x.shape.rank, x.dtype, None, False, tuple(extra))
        return fn(x, taus, steps.as_dtype(guidance_scale, x.dtype), y, extra)
