"""Export a trained network with its whole sampling loop as a SavedModel in TF Serving's layout.

``saved_models/<name>/<version>/`` holds ``saved_model.pb``, ``variables/`` and
the assets folder (the network's config, the schedule, the typed manifest of
the baked-in sampling choices, the training run's metadata and TF Serving's
warmup requests), and with ``onnx=True`` an ``onnx/`` folder
(:mod:`tfddim.export.onnx`; TF Serving ignores it). The tree, its file names
and the manifest's schema belong to :mod:`tfddim.export.layout`.

Signatures (dynamic batch; every loop is a ``tf.while_loop`` in the graph):

==================== ============================================== ==============
name                 inputs                                         outputs
==================== ============================================== ==============
``serving_default``  x_T [B,H,W,C] f32, num_steps i32, eta f32,     x_0
                     seed i64 (+ labels [B] i32, guidance_scale f32)
``sample_with_noise`` x_T, num_steps, eta, noise [S,B,H,W,C] f32     x_0
                     (+ labels, guidance_scale)
``sample_dpmpp_2m``  x_T, num_steps (+ labels, guidance_scale)       x_0
                     (DPM-Solver++(2M), deterministic)
``sample_ode``       x_T, num_steps, method i32, spacing i32         x_0
                     (+ labels, guidance_scale) (deterministic solvers)
``sample_ddpm``      x_T, num_steps, variance i32, noise             x_0
                     (+ labels, guidance_scale) (improved DDPM's
                     strided ancestral sampler)
``sample_trajectory`` x_T, num_steps, eta, noise (+ labels,          x_0, x_steps, x0_steps
                     guidance_scale)                                ([S,B,H,W,C] each)
``encode``           x_0, num_steps (+ labels, guidance_scale)       x_T
``predict_x0``       x_t, t [B] i32 (+ labels)                       x_0, eps
==================== ============================================== ==============

``sample_ddpm`` is the seeds' strided DDPM (improved DDPM §4): the posterior mean and variance of the
respaced β_S on the export's spacing, with ``variance`` an index into ``export.json``'s ``ddpm_variances``
(β̃ ``fixed_small``, β ``fixed_large``, and ``learned_range`` — improved DDPM eq. 15 — for a network with
a learned variance); it always takes ``noise`` [S, B, H, W, C]. ``sample_trajectory`` is
``sample_with_noise`` that also returns x after each step (``x_steps``) and the "jumping" prediction x̂₀ at
each step (``x0_steps``); only it holds O(S·B) memory.

Every input is checked in the graph before any network op runs, and a bad request
fails with an ``InvalidArgumentError`` naming the input and what it must be
(:meth:`SamplerModule._checked`): the rank of every input, H, W, C of the image
(``x_T``/``x_0``/``x_t``), a batch B from 1 to ``max_batch``
(:class:`ExportOptions`), ``labels`` and ``t`` of shape [B], ``noise`` of shape
[S, B, H, W, C] with S = ``num_steps``, scalars that are scalars, NaN/Inf in the
image, in ``noise`` (even at η = 0) and in ``guidance_scale``, ``num_steps``
outside [1, T], η outside [0, 1], a label outside [0, num_classes), ``t`` outside
[0, T). So that the checks cannot be optimised away, the signatures declare
their inputs with unknown shapes (dtype only; see ``_checked``). ``sample_with_noise`` takes an
empty ``noise`` ``[0, B, H, W, C]`` for η = 0 (it stands for zeros). Conditional models are exported with
classifier-free guidance (``guidance_scale`` w; w = 1 is the plain conditional
model, its null label is ``num_classes``).

Writing is atomic: the export goes to a temporary folder, is reloaded and run
(and its ONNX graphs run in ONNX Runtime against it), and only then renamed to its version number; an existing version is never
replaced unless ``overwrite=True``.

Why this module passes 400 lines: it owns the exported ``tf.Module`` whole, its signatures with the
input checks that keep a bad request from reaching a kernel, the manifest it records, the rebuild of a
network from an export, and the writer; the version-folder protocol is :mod:`tfddim.export.versions`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

import tfddim
from tfddim import models, sampling
from tfddim.diffusion import editing, steps
from tfddim.diffusion.kinds import FinalAlpha, Prediction, Variance, parse_kind
from tfddim.diffusion.schedules import Schedule
from tfddim.diffusion.spacing import GRAPH_SPACINGS, Spacing, graph_timesteps
from tfddim.export import layout, versions
from tfddim.export import onnx as onnx_export
from tfddim.export import warmup as serving_warmup
from tfddim.sampling import Conditioning, solvers
from tfddim.sampling.solvers.select import Selected

__all__ = ["ODE_METHODS", "ODE_SPACINGS", "DDPM_VARIANCES", "ExportOptions", "SamplerModule", "export_saved_model", "export_manifest", "network_from_export",
           "ExportedNetwork", "SIGNATURE_METHODS", "ONNX_TOLERANCE", "DEFAULT_MAX_BATCH"]

# ONNX Runtime vs the SavedModel on the same inputs, in data units (data lie in [-1, 1]):
# float32 rounding through a short loop is ~1e-6; 1e-4 is the bound of 1e-4 x range / 2.
ONNX_TOLERANCE = 1e-4

# The solver each signature runs (``export.json: methods``): the values are sampling.Method's where one applies;
# ``encode`` is the deterministic DDIM inversion, ``predict_x0`` one network call.
SIGNATURE_METHODS = {"serving_default": "ddim", "sample_with_noise": "ddim", "sample_dpmpp_2m": "dpmpp_2m",
                     "encode": "ddim_inversion", "predict_x0": "network", "sample_ode": "ode", "sample_ddpm": "ddpm",
                     "sample_trajectory": "ddim", "edit": "ddim", "edit_with_noise": "ddim", "inpaint": "ddim",
                     "inpaint_with_noise": "ddim", "decode": "decoder"}

# ``sample_ode``'s choices, by index (``export.json: ode_methods, ode_spacings``): every deterministic solver
# (DDIM at η = 0) and every spacing the graph computes.
ODE_METHODS = tuple(m for m in ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc") if m in {v.value for v in sampling.Method})
ODE_SPACINGS = tuple(s.value for s in GRAPH_SPACINGS)
# ``sample_ddpm``'s variances, by index (``export.json: ddpm_variances``); learned_range only for a
# learned-variance network.
DDPM_VARIANCES = (Variance.FIXED_SMALL.value, Variance.FIXED_LARGE.value)


# The default bound on a request's batch (ExportOptions.max_batch); see there for why there is one.
DEFAULT_MAX_BATCH = 4096


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What the exported sampler bakes in (recorded in the manifest, :class:`tfddim.export.layout.ExportManifest`).

    Attributes:
        spacing: :class:`~tfddim.diffusion.spacing.Spacing`, one of :data:`~tfddim.diffusion.spacing.GRAPH_SPACINGS`
            (every named spacing): the graph computes the timesteps from ``num_steps``; ``sample_ode`` takes any
            of them per request.
        clip_x0: ``(low, high)`` to clip x̂₀ to, or None.
        final_alpha_cumprod: :class:`~tfddim.diffusion.kinds.FinalAlpha`.
        prediction_type: :class:`~tfddim.diffusion.kinds.Prediction`, what the network was trained to output
            (``DiffusionModel.prediction_type``; a run's ``diffusion.prediction_type``): the loops and
            ``predict_x0`` convert its output by it, and the manifest records it.
        max_batch: the largest batch B one request may ask for (``export.json: max_batch``), checked in the
            graph before any network op and by :mod:`tfddim.runtime`; None for no limit. A model server runs
            every request in one process: memory grows linearly with B (the loop's x, x̂₀ and solver
            state, the network's activations, twice that under classifier-free guidance), and running out of
            memory is not an error TensorFlow can return but the process being killed, taking every other
            request and model with it. The default, 4096, is far above a useful request (``tfddim sample``
            sends batches of 256) and bounds what one request of the shipped 8×8 models can cost; a client
            with more samples splits them into requests. For larger images set it from what one request may
            cost on your server (memory per sample x max_batch must fit beside everything else it serves).
        xla: compile the network with XLA inside the SavedModel (``tf.function(jit_compile=True)``; the
            manifest's ``xla``). The loop, its input checks and the stateless noise stay uncompiled, so the
            outputs equal the uncompiled export's to float rounding. A server runs it compiled when its
            TensorFlow has XLA: TF Serving on CPU needs ``--xla_cpu_compilation_enabled=true`` (on GPU the
            XLA JIT is built in). The ONNX graphs are converted from the same SavedModel and are unaffected.
        low_res_size: h of a super-resolution network's ``low_res`` input [B, h, h, C] (the run's
            ``data.low_res_size``); required exactly when the network has ``low_res_channels``.
        low_res_t: the noise-augmentation timestep the network is told ``low_res`` carries (0: clean, the
            default; cascaded diffusion's augmentation is a training-time regulariser here).
        upsample_strength: a super-resolution export's ``serving_default`` and ``sample_with_noise`` (and a
            cascade's upsampler) start from the bilinear upsampling of ``low_res`` noised to this strength,
            SDEdit's start (:meth:`tfddim.sampling.Sampler.edit`, with ``x_T`` as its noise z), instead of
            from pure noise (1, the default). An ε-network barely uses ``low_res`` at the noisiest levels,
            where ε̂ ≈ x_t whatever the image (the README's super-resolution section measures it), so
            starting there leaves the image's global brightness to chance; the manifest records the value.
    """

    spacing: Spacing = Spacing.UNIFORM
    clip_x0: Optional[tuple] = None
    final_alpha_cumprod: FinalAlpha = FinalAlpha.ONE
    max_batch: Optional[int] = DEFAULT_MAX_BATCH
    prediction_type: Prediction = Prediction.EPSILON
    xla: bool = False
    low_res_size: Optional[int] = None
    low_res_t: int = 0
    upsample_strength: float = 1.0

    def __post_init__(self):
        spacing = parse_kind(Spacing, self.spacing, "spacing")
        if spacing not in GRAPH_SPACINGS:
            raise ValueError(f"spacing must be one of {[s.value for s in GRAPH_SPACINGS]} for an export "
                             f"(the graph computes the timesteps from num_steps), got {self.spacing!r}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "final_alpha_cumprod", parse_kind(FinalAlpha, self.final_alpha_cumprod, "final_alpha_cumprod"))
        object.__setattr__(self, "prediction_type", parse_kind(Prediction, self.prediction_type, "prediction_type"))
        if self.clip_x0 is not None:
            object.__setattr__(self, "clip_x0", tuple(float(v) for v in self.clip_x0))
        m = self.max_batch
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1 or m > 2**31 - 1):
            raise ValueError(f"max_batch must be None (no limit) or an integer in [1, 2^31 - 1], got {m!r}")
        if m is not None:
            object.__setattr__(self, "max_batch", int(m))
        if not isinstance(self.xla, (bool, np.bool_)):
            raise ValueError(f"xla must be True or False, got {self.xla!r}")
        object.__setattr__(self, "xla", bool(self.xla))
        if self.low_res_size is not None and (isinstance(self.low_res_size, bool) or int(self.low_res_size) < 1):
            raise ValueError(f"low_res_size must be None or a positive integer, got {self.low_res_size!r}")
        if isinstance(self.low_res_t, bool) or not isinstance(self.low_res_t, (int, np.integer)) or self.low_res_t < 0:
            raise ValueError(f"low_res_t must be a timestep index >= 0, got {self.low_res_t!r}")
        object.__setattr__(self, "upsample_strength", editing.check_strength(self.upsample_strength))
        if self.upsample_strength < 1.0 and self.low_res_size is None:
            raise ValueError("upsample_strength < 1 applies to a super-resolution export (low_res_size)")


class SamplerModule(tf.Module):
    """The network, its schedule and the sampling loops as ``tf.function`` signatures."""

    def __init__(self, network, schedule: Schedule, data_shape, options: ExportOptions = ExportOptions(),
                 classifier=None):
        super().__init__()
        # Only the weights are tracked: tracking the Keras object would also save its
        # own default signature, a second copy of the network graph.
        object.__setattr__(self, "network", network)
        object.__setattr__(self, "classifier", classifier)
        self.network_weights = list(network.weights)
        self.classifier_weights = [] if classifier is None else list(classifier.weights)
        self.schedule_json = schedule.to_json()
        self.num_timesteps = schedule.num_timesteps
        self.data_shape = tuple(int(d) for d in data_shape)
        self.options = options
        # labels condition the network (classifier-free guidance) or only the bundled classifier
        self.network_classes = getattr(network, "num_classes", None)
        if classifier is not None and self.network_classes not in (None, classifier.num_classes):
            raise ValueError(f"the classifier has {classifier.num_classes} classes, the network {self.network_classes}")
        self.num_classes = self.network_classes if classifier is None else int(classifier.num_classes)
        self.learned_variance = learned = bool(getattr(network, "learned_variance", False))
        conditional = self.network_classes is not None
        low_channels = getattr(network, "low_res_channels", None)
        if (low_channels is None) != (options.low_res_size is None):
            raise ValueError(f"ExportOptions.low_res_size={options.low_res_size} but the network has "
                             f"low_res_channels={low_channels}: a super-resolution network needs the low-res size")
        self.low_res_shape = None if low_channels is None else (options.low_res_size, options.low_res_size, low_channels)
        if options.low_res_t > schedule.num_timesteps - 1:
            raise ValueError(f"low_res_t must be <= T-1 = {schedule.num_timesteps - 1}, got {options.low_res_t}")
        common = dict(learned_variance=learned, clip_x0=options.clip_x0, final_alpha_cumprod=options.final_alpha_cumprod,
                      class_conditional=conditional, prediction_type=options.prediction_type)
        if classifier is not None:  # guided-diffusion: ε̂ = ε − s·√(1−ᾱ)·∇ₓ log p_φ(y | x_t, t), s = guidance_scale
            guidance = sampling.ClassifierGuidance(classifier.log_prob_fn())
        else:
            guidance = sampling.ClassifierFreeGuidance(null_label=self.num_classes) if conditional else None
        object.__setattr__(self, "guidance", guidance)  # untracked, like the network (the manifest reads it)
        # One traced network function shared by every loop and signature, so the graph
        # holds the network once. It is not a module attribute: saving would re-trace it.
        spec_x, spec_t = tf.TensorSpec([None, *self.data_shape], tf.float32), tf.TensorSpec([None], tf.int32)
        xla = options.xla  # XLA compiles the network call only (see ExportOptions.xla)
        spec_low = [] if low_channels is None else [tf.TensorSpec([None, *self.low_res_shape], tf.float32),
                                                    tf.TensorSpec([None], tf.int32)]
        if conditional:
            fn = tf.function(lambda x, t, y, *low: network((x, t, y, *low), training=False), jit_compile=xla,
                             input_signature=[spec_x, spec_t, tf.TensorSpec([None], tf.int32), *spec_low])
        else:
            fn = tf.function(lambda x, t, *low: network((x, t, *low), training=False), jit_compile=xla,
                             input_signature=[spec_x, spec_t, *spec_low])
        self._sampler = sampling.Sampler(fn, schedule, sampling.SamplerConfig(method="ddim", guidance=guidance, **common))
        self._dpm_sampler = sampling.Sampler(fn, schedule, sampling.SamplerConfig(method="dpmpp_2m", guidance=guidance, **common))
        # sample_ode: the candidates' step functions, picked per request inside the DDIM sampler's loop
        self._ode_solvers = [solvers.make(sampling.SamplerConfig(method=m)) for m in ODE_METHODS]
        # sample_ddpm: the DDPM step with each variance, picked per request the same way
        self.ddpm_variances = DDPM_VARIANCES + ((Variance.LEARNED_RANGE.value,) if learned else ())
        self._ddpm_solvers = [solvers.DDPM(Variance(v)) for v in self.ddpm_variances]
        object.__setattr__(self, "schedule", schedule)  # untracked: logsnr/karras read its λ when traced
        self._alphas_cumprod = tf.constant(schedule.alphas_cumprod, tf.float64)
        self.serving_signatures = self._make_signatures()

    # ------------------------------------------------------------ validation (before any network op)
    # The signatures declare every input with an unknown shape (dtype only) and check it here. A declared
    # static shape is enforced neither when a server feeds the graph's placeholders (TF Serving) nor when a
    # loaded signature is called, and it lets TensorFlow fold a rank or shape assertion away as always true
    # (measured: a rank assertion on a [None, 8, 8, 1] input never fired). A rank-3 x_T then reaches the
    # oneDNN convolution kernel at run time, whose layout code aborts the process (``Check failed: index >= 0
    # && index < num_total_dims``, in MklConvOp::Compute) instead of returning an error.
    def _checked(self, image: str, inputs: dict) -> dict:
        """The request's inputs, checked in the graph, with their static shapes set; nothing runs before the checks.

        Three stages, each waiting for the one before, so a request fails on its most basic fault and every
        check may assume the earlier ones (a dimension is read only once its rank is known): (1) the rank of
        every input and H, W, C of the image; (2) 1 <= B <= max_batch and the shapes of ``labels``, ``t`` and
        ``noise`` against B; (3) values: NaN/Inf in the image, ``noise`` (even at η = 0, where it is unused)
        and ``guidance_scale``, the ranges of ``num_steps``, ``labels`` and ``t``, and the number of noise
        entries. Each failure is an ``InvalidArgumentError`` naming the input and what it must be.
        """
        data = self.data_shape
        x = inputs[image]
        shape_x = tf.shape(x)
        batch = _dims(shape_x, 1)[0]
        scalars = [name for name in ("num_steps", "eta", "seed", "guidance_scale", "method", "spacing", "variance",
                                     "strength") if name in inputs]
        # inputs shaped like the image ([B, H, W, C], B of the image): inpaint's mask, the edit's start noise,
        # inpaint_with_noise's x_T
        alike = [name for name in layout.IMAGE_INPUTS if name in inputs and name != image]

        def ranks():
            out = [_assert(_shape_is(x, [None, *data]),
                           f"{image} must have shape [B, {', '.join(map(str, data))}] (B >= 1); got shape", shape_x)]
            for name in scalars:
                out.append(_assert(tf.equal(tf.rank(inputs[name]), 0), f"{name} must be a scalar; got shape",
                                   tf.shape(inputs[name])))
            for name in alike:
                out.append(_assert(_shape_is(inputs[name], [None, *data]), f"{name} must have the shape of {image} "
                                   f"[B, {', '.join(map(str, data))}]; got shape", tf.shape(inputs[name])))
            if "low_res" in inputs:
                low = self.low_res_shape
                out.append(_assert(_shape_is(inputs["low_res"], [None, *low]),
                                   f"low_res must have shape [B, {', '.join(map(str, low))}]; got shape",
                                   tf.shape(inputs["low_res"])))
            return out

        def shapes():
            low, high = 1, self.options.max_batch
            ok = batch >= low if high is None else tf.logical_and(batch >= low, batch <= high)
            limit = "at least 1" if high is None else f"from 1 to max_batch = {high}"
            out = [_assert(ok, f"{image} must have a batch of {limit} samples; got batch", batch)]
            for name in alike + (["low_res"] if "low_res" in inputs else []):
                out.append(_assert(tf.equal(tf.shape(inputs[name])[0], batch),
                                   f"{name} must have the batch of {image}; got, B:", tf.shape(inputs[name])[0], batch))
            for name in ("labels", "t"):
                if name in inputs:
                    out.append(_assert(_shape_is(inputs[name], [batch]),
                                       f"{name} must have shape [B] (one entry per sample of {image}); got shape, B:",
                                       tf.shape(inputs[name]), batch))
            if "noise" in inputs:
                out.append(_assert(_shape_is(inputs["noise"], [None, batch, *data]),
                                   f"noise must have shape [S, B, {', '.join(map(str, data))}] (B of {image}); "
                                   "got shape, B:", tf.shape(inputs["noise"]), batch))
            return out

        def values():
            out = [_assert(_all_finite(x), f"{image} contains NaN or Inf")]
            for name in alike + (["low_res"] if "low_res" in inputs else []):
                out.append(_assert(_all_finite(inputs[name]), f"{name} contains NaN or Inf"))
            if "mask" in inputs:
                binary = tf.reduce_all(tf.logical_or(tf.equal(inputs["mask"], 0.0), tf.equal(inputs["mask"], 1.0)))
                out.append(_assert(binary, "mask must hold only 0 (generate) and 1 (keep)"))
            if "strength" in inputs:
                st = inputs["strength"]
                out.append(_assert(tf.logical_and(st > 0.0, st <= 1.0), "strength must be in (0, 1]; got", st))
            if "noise" in inputs:
                out.append(_assert(_all_finite(inputs["noise"]), "noise contains NaN or Inf"))
            if "guidance_scale" in inputs:
                out.append(_assert(_all_finite(inputs["guidance_scale"]), "guidance_scale must be finite; got",
                                   inputs["guidance_scale"]))
            if "num_steps" in inputs:
                T, s = self.num_timesteps, inputs["num_steps"]
                out += [tf.debugging.assert_greater_equal(s, 1, message="num_steps must be >= 1"),
                        tf.debugging.assert_less_equal(s, T, message=f"num_steps must be <= T = {T}")]
            for name, choices in (("method", ODE_METHODS), ("spacing", ODE_SPACINGS), ("variance", self.ddpm_variances)):
                if name in inputs:
                    names = ", ".join(f"{i} = {c}" for i, c in enumerate(choices))
                    ok = tf.logical_and(inputs[name] >= 0, inputs[name] < len(choices))
                    out.append(_assert(ok, f"{name} must be an index in [0, {len(choices) - 1}] ({names}); got", inputs[name]))
            if "labels" in inputs:
                out += [tf.debugging.assert_greater_equal(inputs["labels"], 0, message="labels must be >= 0"),
                        tf.debugging.assert_less(inputs["labels"], self.num_classes,
                                                 message=f"labels must be < num_classes = {self.num_classes}")]
            if "t" in inputs:
                out += [tf.debugging.assert_greater_equal(inputs["t"], 0, message="t must be >= 0"),
                        tf.debugging.assert_less(inputs["t"], self.num_timesteps,
                                                 message=f"t must be < T = {self.num_timesteps}")]
            if "noise" in inputs and "eta" in inputs and "mask" not in inputs:  # an empty [0, B, ...]: zeros at η = 0
                n, s = tf.shape(inputs["noise"])[0], inputs["num_steps"]
                ok = tf.logical_or(tf.equal(n, s), tf.logical_and(tf.equal(n, 0), tf.equal(inputs["eta"], 0.0)))
                out.append(_assert(ok, "noise must have num_steps entries [S, B, ...] (or 0 entries when eta = 0); "
                                       "entries, num_steps:", n, s))
            elif "noise" in inputs:  # sample_ddpm and inpaint_with_noise: every step draws noise
                n, s = tf.shape(inputs["noise"])[0], inputs["num_steps"]
                out.append(_assert(tf.equal(n, s), "noise must have num_steps entries [S, B, ...]; entries, num_steps:",
                                   n, s))
            return out

        checks = []
        for stage in (ranks, shapes, values):
            with tf.control_dependencies(checks):
                checks = stage()
        # A reshape to the checked shape gives the loop its static shape. Not tf.ensure_shape: in an eager call
        # (the input shapes known when the function is optimised) its error came ahead of the assertions it
        # depends on (TF 2.21), and that error names a lower-cased graph tensor, not the input.
        def checked_shape(name):
            if name == "noise":  # [S, B, H, W, C]: two sizes given by the request
                return tf.stack([-1, batch, *data])
            return [-1 if d is None else d for d in layout.input_shape(name, data, self.low_res_shape)]

        with tf.control_dependencies(checks):
            out = {name: tf.reshape(value, checked_shape(name)) for name, value in inputs.items()}
        if "noise" in out:
            out["noise"].set_shape([None, None, *data])  # a reshape to a shape tensor knows only its length
        return out

    def _timesteps(self, num_steps):
        """The in-graph timesteps for a checked ``num_steps`` (in [1, T])."""
        return graph_timesteps(self.num_timesteps, num_steps, self.options.spacing, schedule=self.schedule)

    def _ode(self, x, num_steps, method, spacing, cond):
        """``sample_ode``'s loop: the timesteps of every graph spacing, one picked by ``spacing`` (all have S
        entries, so a gather needs no branch), and one loop whose step is the solver picked by ``method``
        (:class:`~tfddim.sampling.solvers.select.Selected`; no ``If``, so ONNX converts it)."""
        timesteps = tf.gather(tf.stack([graph_timesteps(self.num_timesteps, num_steps, sp, schedule=self.schedule)
                                        for sp in ODE_SPACINGS]), spacing)
        return self._sampler.graph_sample(x, timesteps, cond=cond, solver=Selected(self._ode_solvers, method))

    @staticmethod
    def _noise(noise, timesteps):
        """A checked ``noise`` ``[S, B, ...]``, an empty ``[0, B, ...]`` padded with zeros to S entries (η = 0)."""
        s, n = tf.size(timesteps), tf.shape(noise)[0]
        pad = tf.concat([[[0, s - n]], tf.zeros([tf.rank(noise) - 1, 2], tf.int32)], axis=0)
        padded = tf.pad(noise, pad)
        padded.set_shape(noise.shape)  # a dynamic pad loses the static [.., H, W, C] the loop needs
        return padded

    # ------------------------------------------------------------ signatures
    def _make_signatures(self):
        conditional = self.num_classes is not None
        network_conditional = self.network_classes is not None
        # Every input is declared with an unknown shape, its dtype only: _checked checks the shapes (see there).
        def f32(name):
            return tf.TensorSpec(None, tf.float32, name=name)

        def i32(name):
            return tf.TensorSpec(None, tf.int32, name=name)

        def i64(name):
            return tf.TensorSpec(None, tf.int64, name=name)

        extra = [i32("labels"), f32("guidance_scale")] if conditional else []
        cond_names = ("labels", "guidance_scale") if conditional else ()
        if self.low_res_shape is not None:  # a super-resolution network: every signature takes the low-res image
            extra, cond_names = extra + [f32("low_res")], cond_names + ("low_res",)

        def sample(x_T, num_steps, eta, seed, *cond):
            r = self._checked("x_T", dict(x_T=x_T, num_steps=num_steps, eta=eta, seed=seed, **dict(zip(cond_names, cond))))
            return {"x_0": self.generate(r["x_T"], self._timesteps(r["num_steps"]), r["eta"], self._cond(r), seed=r["seed"])}

        def sample_with_noise(x_T, num_steps, eta, noise, *cond):
            r = self._checked("x_T", dict(x_T=x_T, num_steps=num_steps, eta=eta, noise=noise, **dict(zip(cond_names, cond))))
            timesteps = self._timesteps(r["num_steps"])
            return {"x_0": self.generate(r["x_T"], timesteps, r["eta"], self._cond(r),
                                         noise=self._noise(r["noise"], timesteps))}

        def sample_dpmpp_2m(x_T, num_steps, *cond):
            r = self._checked("x_T", dict(x_T=x_T, num_steps=num_steps, **dict(zip(cond_names, cond))))
            return {"x_0": self._dpm_sampler.graph_sample(r["x_T"], self._timesteps(r["num_steps"]), cond=self._cond(r))}

        def sample_ode(x_T, num_steps, method, spacing, *cond):
            r = self._checked("x_T", dict(x_T=x_T, num_steps=num_steps, method=method, spacing=spacing,
                                          **dict(zip(cond_names, cond))))
            return {"x_0": self._ode(r["x_T"], r["num_steps"], r["method"], r["spacing"], self._cond(r))}

        def sample_ddpm(x_T, num_steps, variance, noise, *cond):
            r = self._checked("x_T", dict(x_T=x_T, num_steps=num_steps, variance=variance, noise=noise,
                                          **dict(zip(cond_names, cond))))
            solver = Selected(self._ddpm_solvers, r["variance"])
            return {"x_0": self._sampler.graph_sample(r["x_T"], self._timesteps(r["num_steps"]), noise=r["noise"],
                                                      cond=self._cond(r), solver=solver)}

        def sample_trajectory(x_T, num_steps, eta, noise, *cond):
            r = self._checked("x_T", dict(x_T=x_T, num_steps=num_steps, eta=eta, noise=noise, **dict(zip(cond_names, cond))))
            timesteps = self._timesteps(r["num_steps"])
            x_0, x_steps, x0_steps = self._sampler.graph_sample(
                r["x_T"], timesteps, r["eta"], noise=self._noise(r["noise"], timesteps), cond=self._cond(r),
                trajectory=True)
            return {"x_0": x_0, "x_steps": x_steps, "x0_steps": x0_steps}

        def encode(x_0, num_steps, *cond):
            r = self._checked("x_0", dict(x_0=x_0, num_steps=num_steps, **dict(zip(cond_names, cond))))
            return {"x_T": self._sampler.graph_encode(r["x_0"], self._timesteps(r["num_steps"]), cond=self._cond(r))}

        def edit(x_0, strength, num_steps, eta, seed, *cond):
            r = self._checked("x_0", dict(x_0=x_0, strength=strength, num_steps=num_steps, eta=eta, seed=seed,
                                          **dict(zip(cond_names, cond))))
            return {"x_0": self._sampler.graph_edit(r["x_0"], self._timesteps(r["num_steps"]), r["strength"], r["eta"],
                                                    seed=r["seed"], cond=self._cond(r))}

        def edit_with_noise(x_0, strength, num_steps, eta, start_noise, noise, *cond):
            r = self._checked("x_0", dict(x_0=x_0, strength=strength, num_steps=num_steps, eta=eta,
                                          start_noise=start_noise, noise=noise, **dict(zip(cond_names, cond))))
            timesteps = self._timesteps(r["num_steps"])
            return {"x_0": self._sampler.graph_edit(r["x_0"], timesteps, r["strength"], r["eta"],
                                                    noise=self._noise(r["noise"], timesteps),
                                                    start_noise=r["start_noise"], cond=self._cond(r))}

        def inpaint(x_0, mask, num_steps, eta, seed, *cond):
            r = self._checked("x_0", dict(x_0=x_0, mask=mask, num_steps=num_steps, eta=eta, seed=seed,
                                          **dict(zip(cond_names, cond))))
            x_T = steps.stateless_step_normal(r["seed"], -1, r["x_0"])  # the seed's stream −1, as an edit's z
            known = self._cond(r)._replace(mask=r["mask"], known=r["x_0"])
            return {"x_0": self._sampler.graph_sample(x_T, self._timesteps(r["num_steps"]), r["eta"], seed=r["seed"],
                                                      cond=known)}

        def inpaint_with_noise(x_0, mask, num_steps, eta, x_T, noise, *cond):
            r = self._checked("x_0", dict(x_0=x_0, mask=mask, num_steps=num_steps, eta=eta, x_T=x_T, noise=noise,
                                          **dict(zip(cond_names, cond))))
            known = self._cond(r)._replace(mask=r["mask"], known=r["x_0"])
            return {"x_0": self._sampler.graph_sample(r["x_T"], self._timesteps(r["num_steps"]), r["eta"],
                                                      noise=r["noise"], cond=known)}

        def predict_x0(x_t, t, *labels):
            inputs = dict(x_t=x_t, t=t, **({"labels": labels[0]} if network_conditional else {}))
            if self.low_res_shape is not None:
                inputs["low_res"] = labels[-1]
            r = self._checked("x_t", inputs)
            x_t, t = r["x_t"], r["t"]
            args = ((r["labels"],) if network_conditional else ()) + self._cond(r).model_args(labels=False)
            out = self._sampler.model_fn(x_t, t, *args)
            pred = out[..., : self.data_shape[-1]]
            ab = steps.select_timestep(self._alphas_cumprod, t, x_t)
            kind = self.options.prediction_type
            if kind is Prediction.EPSILON:
                return {"x_0": steps.x0_from_eps(x_t, pred, ab), "eps": pred}
            if kind is Prediction.SAMPLE:
                return {"x_0": pred, "eps": steps.eps_from_x0(x_t, pred, ab)}
            return {"x_0": steps.x0_from_v(x_t, pred, ab), "eps": steps.eps_from_v(x_t, pred, ab)}

        specs = {
            "serving_default": (sample, [f32("x_T"), i32("num_steps"), f32("eta"), i64("seed"), *extra]),
            "sample_with_noise": (sample_with_noise, [f32("x_T"), i32("num_steps"), f32("eta"), f32("noise"), *extra]),
            "sample_dpmpp_2m": (sample_dpmpp_2m, [f32("x_T"), i32("num_steps"), *extra]),
            "sample_ode": (sample_ode, [f32("x_T"), i32("num_steps"), i32("method"), i32("spacing"), *extra]),
            "sample_ddpm": (sample_ddpm, [f32("x_T"), i32("num_steps"), i32("variance"), f32("noise"), *extra]),
            "sample_trajectory": (sample_trajectory, [f32("x_T"), i32("num_steps"), f32("eta"), f32("noise"), *extra]),
            "encode": (encode, [f32("x_0"), i32("num_steps"), *extra]),
            "edit": (edit, [f32("x_0"), f32("strength"), i32("num_steps"), f32("eta"), i64("seed"), *extra]),
            "edit_with_noise": (edit_with_noise, [f32("x_0"), f32("strength"), i32("num_steps"), f32("eta"),
                                                  f32("start_noise"), f32("noise"), *extra]),
            "inpaint": (inpaint, [f32("x_0"), f32("mask"), i32("num_steps"), f32("eta"), i64("seed"), *extra]),
            "inpaint_with_noise": (inpaint_with_noise, [f32("x_0"), f32("mask"), i32("num_steps"), f32("eta"),
                                                        f32("x_T"), f32("noise"), *extra]),
            "predict_x0": (predict_x0, [f32("x_t"), i32("t"), *(extra[:1] if network_conditional else []),
                                        *([f32("low_res")] if self.low_res_shape is not None else [])]),
        }
        # The Python functions and input specs, untracked: a wrapping module (a latent export's) traces them into
        # its own signatures, so the loops are inlined once rather than called as a second saved function.
        object.__setattr__(self, "signature_functions", specs)
        return {name: tf.function(fn, input_signature=sig).get_concrete_function() for name, (fn, sig) in specs.items()}

    def generate(self, x_T, timesteps, eta, cond: Conditioning, seed=None, noise=None, step_offset=0):
        """DDIM from ``x_T`` (``serving_default``, ``sample_with_noise``, a cascade's stages); a super-resolution
        export with ``upsample_strength`` s < 1 starts from the bilinear upsampling of ``low_res`` noised to s,
        with ``x_T`` as the noise (:class:`ExportOptions`)."""
        s = self.options.upsample_strength
        if self.low_res_shape is None or s >= 1.0:
            return self._sampler.graph_sample(x_T, timesteps, eta, seed=seed, noise=noise, cond=cond,
                                              step_offset=step_offset)
        up = tf.image.resize(cond.low_res, self.data_shape[:2], method="bilinear")
        return self._sampler.graph_edit(up, timesteps, tf.constant(s, x_T.dtype), eta, seed=seed, noise=noise,
                                        start_noise=x_T, cond=cond, step_offset=step_offset)

    def _cond(self, checked: dict) -> Conditioning:
        """The checked conditioning inputs (``labels``, ``guidance_scale``, when the export has classes; ``low_res``
        of a super-resolution export, at the manifest's ``low_res_t``) as one value."""
        cond = Conditioning()
        if self.num_classes is not None and "labels" in checked:
            cond = Conditioning(checked["labels"], checked.get("guidance_scale", 1.0))
        if self.low_res_shape is not None:
            low = checked["low_res"]
            cond = cond._replace(low_res=low, low_res_t=tf.fill([tf.shape(low)[0]], self.options.low_res_t))
        return cond


def _assert(condition, message: str, *data):
    """An assertion whose ``InvalidArgumentError`` reads ``assertion failed: [<message>] [<data>...]``."""
    return tf.debugging.Assert(condition, [message, *data], summarize=8)


def _all_finite(value):
    return tf.reduce_all(tf.math.is_finite(value))


def _dims(shape, n: int):
    """The first ``n`` entries of a shape vector of any length (-1 where it is shorter), safe to index."""
    return tf.concat([shape, tf.fill([n], -1)], axis=0)[:n]


def _shape_is(value, expected):
    """Whether ``value``'s run-time shape is ``expected`` (ints, scalar tensors, or None for any size) — for any rank."""
    shape = tf.shape(value)
    dims = _dims(shape, len(expected))
    want = tf.stack([dims[i] if e is None else tf.cast(e, tf.int32) for i, e in enumerate(expected)])
    return tf.logical_and(tf.equal(tf.size(shape), len(expected)), tf.reduce_all(tf.equal(dims, want)))


def export_manifest(module: SamplerModule) -> layout.ExportManifest:
    """The typed ``export.json`` of a module (what its signatures bake in)."""
    if isinstance(module.guidance, sampling.ClassifierGuidance):
        conditioning = layout.ExportConditioning(layout.GuidanceKind.CLASSIFIER, module.num_classes, None,
                                                 module.network_classes is not None)
    elif isinstance(module.guidance, sampling.ClassifierFreeGuidance):
        conditioning = layout.ExportConditioning(layout.GuidanceKind.CLASSIFIER_FREE, module.num_classes,
                                                 module.guidance.null_label, True)
    else:
        conditioning = layout.ExportConditioning()
    signatures = sorted(module.serving_signatures)
    return layout.ExportManifest(
        signatures=signatures,
        methods={name: SIGNATURE_METHODS[name] for name in signatures},
        spacing=module.options.spacing,
        clip_x0=module.options.clip_x0,
        final_alpha_cumprod=module.options.final_alpha_cumprod,
        prediction_type=module.options.prediction_type,  # the loops convert the network's output by it
        learned_variance=module.learned_variance,
        conditioning=conditioning,
        data_shape=module.data_shape,
        num_timesteps=module.num_timesteps,
        schedule_sha256=layout.schedule_sha256(json.loads(module.schedule_json)),
        tfddim_version=tfddim.__version__,
        max_batch=module.options.max_batch,
        ode_methods=ODE_METHODS if "sample_ode" in signatures else None,
        ode_spacings=ODE_SPACINGS if "sample_ode" in signatures else None,
        ddpm_variances=module.ddpm_variances if "sample_ddpm" in signatures else None,
        xla=module.options.xla,
        low_res_shape=module.low_res_shape,
        low_res_t=None if module.low_res_shape is None else module.options.low_res_t,
        upsample_strength=None if module.low_res_shape is None else module.options.upsample_strength,
    )


class ExportedNetwork(NamedTuple):
    """What :func:`network_from_export` rebuilds from a version folder."""

    network: object  #: the Keras network, with the SavedModel's weights
    schedule: Schedule
    manifest: layout.ExportManifest
    classifier: object  #: the bundled guidance classifier with its weights, or None
    loaded: object  #: the SavedModel, as ``tf.saved_model.load`` returns it


def _rebuilt(config: dict, variables, data_shape, where: str, what: str):
    """A Keras model built from its config and given the SavedModel's ``variables`` in order (checked)."""
    model = models.build(config)
    labels = (tf.zeros([1], tf.int32),) if getattr(model, "num_classes", None) is not None and what == "network" else ()
    model((tf.zeros([1, *data_shape]), tf.zeros([1], tf.int32), *labels))
    variables = list(variables)
    if len(variables) != len(model.weights) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(model.weights, variables)):
        raise ValueError(f"{where}: the SavedModel's {what}_weights do not match the exported {what} config "
                         f"({len(variables)} vs {len(model.weights)} variables, or their shapes)")
    for variable, value in zip(model.weights, variables):
        variable.assign(value)
    return model


def network_from_export(version_dir: str) -> ExportedNetwork:
    """An export's network (and bundled classifier) rebuilt in Keras with the SavedModel's weights.

    The network and the schedule come from the export's configs (``model_config.json``, ``schedule.json``,
    read through :mod:`tfddim.export.layout`); the network's variables take the SavedModel's
    ``network_weights`` in order (checked by count and shape), a classifier's its ``classifier_weights``.
    This is what re-exporting a model with a newer tfddim starts from (``tools/reexport_shipped.py``).
    """
    manifest = layout.read_manifest(version_dir)
    schedule = Schedule.from_config(layout.read_schedule_config(version_dir))
    loaded = tf.saved_model.load(version_dir)
    network = _rebuilt(layout.read_model_config(version_dir), loaded.network_weights, manifest.data_shape,
                       version_dir, "network")
    classifier_config = layout.read_classifier_config(version_dir)
    classifier = None if classifier_config is None else _rebuilt(
        classifier_config, loaded.classifier_weights, manifest.data_shape, version_dir, "classifier")
    return ExportedNetwork(network, schedule, manifest, classifier, loaded)


def _keras_config(model) -> dict:
    """``{"class_name", "config"}``, as :func:`tfddim.models.build` reads it."""
    return {"class_name": type(model).__name__, "config": model.get_config()}


def _manifest_of(module) -> layout.ExportManifest:
    """``export.json`` of a :class:`SamplerModule`, or of a :class:`~tfddim.export.latent.LatentModule` around one."""
    if isinstance(module, SamplerModule):
        return export_manifest(module)
    from tfddim.export.latent import latent_manifest

    return latent_manifest(module, export_manifest(module.sampler))


def _module(network, schedule, data_shape, options, classifier=None, autoencoder=None, scale_factor=None):
    """The module to save: a :class:`SamplerModule`, wrapped in a :class:`~tfddim.export.latent.LatentModule`
    when an autoencoder is given (a latent diffusion model)."""
    sampler = SamplerModule(network, schedule, data_shape, options, classifier=classifier)
    if autoencoder is None:
        return sampler
    from tfddim.export.latent import LatentModule

    return LatentModule(sampler, autoencoder, scale_factor)


def _write_assets(path: str, module, metadata: Optional[dict]) -> None:
    """The assets folder, through :func:`tfddim.export.layout.write_export_assets` (the one writer of its files)."""
    layout.write_export_assets(
        layout.ExportLayout(path), _manifest_of(module), model_config=_keras_config(module.network),
        schedule_config=json.loads(module.schedule_json), metadata=metadata,
        classifier_config=None if module.classifier is None else _keras_config(module.classifier))


def _check(path: str, module):
    """Reload the written SavedModel and run one small sample; it must match the in-memory module."""
    loaded = tf.saved_model.load(path)
    x = tf.random.stateless_normal([2, *module.data_shape], seed=[0, 1])
    args = dict(x_T=x, num_steps=tf.constant(2), eta=tf.constant(0.5), seed=tf.constant(3, tf.int64))
    if module.num_classes is not None:
        args.update(labels=tf.zeros([2], tf.int32), guidance_scale=tf.constant(1.0))
    if module.low_res_shape is not None:
        args.update(low_res=tf.random.stateless_uniform([2, *module.low_res_shape], seed=[0, 2], minval=-1.0))
    want = module.serving_signatures["serving_default"](**args)["x_0"].numpy()
    got = loaded.signatures["serving_default"](**args)["x_0"].numpy()
    if not np.all(np.isfinite(want)):
        raise ValueError("export check failed: the network's samples contain NaN/Inf (a diverged run?)")
    if not np.allclose(got, want, rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"export check failed: reloaded model differs by {np.abs(got - want).max()}")
    return loaded


def _check_finite_weights(model, what: str) -> None:
    """Refuse NaN/Inf weights before tracing: the export would run, and serve NaN images."""
    for weight in model.weights:
        value = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            name = getattr(weight, "path", None) or getattr(weight, "name", "?")
            raise ValueError(f"{what} weights contain NaN/Inf (a diverged run?): {name}")


def export_saved_model(network, schedule: Schedule, data_shape, base_dir: str, version: int = 1,
                       options: ExportOptions = ExportOptions(), metadata: Optional[dict] = None,
                       overwrite: bool = False, onnx: bool = False, warmup: Optional[bool] = None,
                       classifier=None, onnx_signatures=None, autoencoder=None, scale_factor=None) -> str:
    """Write ``base_dir/<version>/`` atomically and return its path (see the module docstring).

    Crash safety: a model server polling ``base_dir`` sees a version folder only when it is a complete
    export, and with ``overwrite`` at every instant either the complete old one or the complete new one
    (:mod:`tfddim.export.versions` has the protocol and the recovery after a kill).

    Network (and classifier) weights with NaN or Inf are refused with a ``ValueError`` naming the
    variable, before anything is traced or written.

    Args:
        onnx: also write ``onnx/`` (:mod:`tfddim.export.onnx`), checked against the SavedModel.
        onnx_signatures: the ONNX graphs to write (default: every one of ``ONNX_SIGNATURES``); each costs a
            tf2onnx conversion (about a minute for a classifier-guided loop on 2 cores).
        classifier: a :class:`tfddim.models.NoisyClassifier` to bundle: the loops use classifier
            guidance (its gradient, in the graph) with ``labels`` and ``guidance_scale`` = s.
        warmup: write TF Serving warmup requests; ``None`` writes them when
            ``tensorflow-serving-api`` is installed (and says so when it is not).
        autoencoder, scale_factor: a latent diffusion model's first stage (:class:`tfddim.models.Autoencoder`
            and the run's 1/std of its latents): ``network`` samples latents of ``data_shape`` and the export
            decodes them in the graph (:mod:`tfddim.export.latent`).
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    final = os.path.join(base_dir, str(version))
    versions.recover(base_dir, version)
    if os.path.lexists(final) and not overwrite:
        incomplete = "" if versions.complete(final) else f" but is not a complete export (no {layout.SAVED_MODEL_PB})"
        raise FileExistsError(f"{final} exists{incomplete}; pass overwrite=True (--overwrite) or a new --version")
    _check_finite_weights(network, "network")
    if classifier is not None:
        _check_finite_weights(classifier, "classifier")
    if autoencoder is not None:
        _check_finite_weights(autoencoder, "autoencoder")
    os.makedirs(base_dir, exist_ok=True)
    module = _module(network, schedule, data_shape, options, classifier, autoencoder, scale_factor)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-{os.getpid()}-", dir=base_dir)
    try:
        tf.saved_model.save(module, tmp, signatures=module.serving_signatures)
        _write_assets(tmp, module, metadata)
        loaded = _check(tmp, module)
        if warmup is None:
            warmup = serving_warmup.available()
            if not warmup:
                print("tfddim export: tensorflow-serving-api is not installed; no TF Serving warmup requests written "
                      "(pip install 'tfddim[serving]')")
        if warmup:
            serving_warmup.write_warmup_requests(tmp, os.path.basename(os.path.normpath(base_dir)),
                                                 module.data_shape, module.num_classes, module.network_classes is not None,
                                                 module.low_res_shape, getattr(module, "pixel_shape", None))
        if onnx:
            source = tmp
            if options.xla:  # tf2onnx cannot convert a jit_compile function: convert an uncompiled twin
                source = tempfile.mkdtemp(prefix=f".tmp-{version}-{os.getpid()}-plain-", dir=base_dir)
                plain = _module(network, schedule, data_shape, dataclasses.replace(options, xla=False), classifier,
                                autoencoder, scale_factor)
                tf.saved_model.save(plain, source, signatures=plain.serving_signatures)
                _write_assets(source, plain, metadata)
            try:
                onnx_export.export_onnx(tmp, source_dir=source, signatures=onnx_signatures)
            finally:
                if source != tmp:
                    shutil.rmtree(source, ignore_errors=True)
            gap = onnx_export.check_onnx(tmp, loaded, module.data_shape, module.num_classes)
            if gap > ONNX_TOLERANCE:
                raise RuntimeError(f"ONNX check failed: ONNX Runtime differs from the SavedModel by {gap:.3g}")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model server may run as another user
        versions.install(tmp, final, base_dir, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
