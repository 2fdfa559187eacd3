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
``encode``           x_0, num_steps (+ labels, guidance_scale)       x_T
``predict_x0``       x_t, t [B] i32 (+ labels)                       x_0, eps
==================== ============================================== ==============

Inputs are checked in the graph: ``num_steps`` outside [1, T], η < 0 or > 1, a
label outside [0, num_classes) or NaN/Inf in x_T fail with an
``InvalidArgumentError`` naming the input. ``sample_with_noise`` takes an
empty ``noise`` ``[0, B, H, W, C]`` for η = 0 (it stands for zeros). Conditional models are exported with
classifier-free guidance (``guidance_scale`` w; w = 1 is the plain conditional
model, its null label is ``num_classes``).

Writing is atomic: the export goes to a temporary folder, is reloaded and run
(and its ONNX graphs run in ONNX Runtime against it), and only then renamed to its version number; an existing version is never
replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Optional

import numpy as np
import tensorflow as tf

import tfddim
from tfddim import sampling
from tfddim.diffusion import steps
from tfddim.diffusion.kinds import FinalAlpha, Prediction, parse_kind
from tfddim.diffusion.schedules import Schedule
from tfddim.diffusion.spacing import GRAPH_SPACINGS, Spacing, graph_timesteps
from tfddim.export import layout
from tfddim.export import onnx as onnx_export
from tfddim.export import warmup as serving_warmup
from tfddim.sampling import Conditioning

__all__ = ["ExportOptions", "SamplerModule", "export_saved_model", "export_manifest", "SIGNATURE_METHODS", "ONNX_TOLERANCE"]

# ONNX Runtime vs the SavedModel on the same inputs, in data units (data lie in [-1, 1]):
# float32 rounding through a short loop is ~1e-6; 1e-4 is the bound of 1e-4 x range / 2.
ONNX_TOLERANCE = 1e-4

# The solver each signature runs (``export.json: methods``): the values are sampling.Method's where one applies;
# ``encode`` is the deterministic DDIM inversion, ``predict_x0`` one network call.
SIGNATURE_METHODS = {"serving_default": "ddim", "sample_with_noise": "ddim", "sample_dpmpp_2m": "dpmpp_2m",
                     "encode": "ddim_inversion", "predict_x0": "network"}


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What the exported sampler bakes in (recorded in the manifest, :class:`tfddim.export.layout.ExportManifest`).

    Attributes:
        spacing: :class:`~tfddim.diffusion.spacing.Spacing`, one of :data:`~tfddim.diffusion.spacing.GRAPH_SPACINGS`
            (``uniform``, ``linspace``, ``trailing``): the graph computes the timesteps from ``num_steps``.
        clip_x0: ``(low, high)`` to clip x̂₀ to, or None.
        final_alpha_cumprod: :class:`~tfddim.diffusion.kinds.FinalAlpha`.
    """

    spacing: Spacing = Spacing.UNIFORM
    clip_x0: Optional[tuple] = None
    final_alpha_cumprod: FinalAlpha = FinalAlpha.ONE

    def __post_init__(self):
        spacing = parse_kind(Spacing, self.spacing, "spacing")
        if spacing not in GRAPH_SPACINGS:
            raise ValueError(f"spacing must be one of {[s.value for s in GRAPH_SPACINGS]} for an export "
                             f"(the graph computes the timesteps from num_steps), got {self.spacing!r}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "final_alpha_cumprod", parse_kind(FinalAlpha, self.final_alpha_cumprod, "final_alpha_cumprod"))
        if self.clip_x0 is not None:
            object.__setattr__(self, "clip_x0", tuple(float(v) for v in self.clip_x0))


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
        common = dict(learned_variance=learned, clip_x0=options.clip_x0, final_alpha_cumprod=options.final_alpha_cumprod,
                      class_conditional=conditional)
        if classifier is not None:  # guided-diffusion: ε̂ = ε − s·√(1−ᾱ)·∇ₓ log p_φ(y | x_t, t), s = guidance_scale
            guidance = sampling.ClassifierGuidance(classifier.log_prob_fn())
        else:
            guidance = sampling.ClassifierFreeGuidance(null_label=self.num_classes) if conditional else None
        object.__setattr__(self, "guidance", guidance)  # untracked, like the network (the manifest reads it)
        # One traced network function shared by every loop and signature, so the graph
        # holds the network once. It is not a module attribute: saving would re-trace it.
        spec_x, spec_t = tf.TensorSpec([None, *self.data_shape], tf.float32), tf.TensorSpec([None], tf.int32)
        if conditional:
            fn = tf.function(lambda x, t, y: network((x, t, y), training=False),
                             input_signature=[spec_x, spec_t, tf.TensorSpec([None], tf.int32)])
        else:
            fn = tf.function(lambda x, t: network((x, t), training=False), input_signature=[spec_x, spec_t])
        self._sampler = sampling.Sampler(fn, schedule, sampling.SamplerConfig(method="ddim", guidance=guidance, **common))
        self._dpm_sampler = sampling.Sampler(fn, schedule, sampling.SamplerConfig(method="dpmpp_2m", guidance=guidance, **common))
        self._alphas_cumprod = tf.constant(schedule.alphas_cumprod, tf.float64)
        self.serving_signatures = self._make_signatures()

    # ------------------------------------------------------------ validation
    def _timesteps(self, num_steps):
        T = self.num_timesteps
        with tf.control_dependencies([
            tf.debugging.assert_greater_equal(num_steps, 1, message="num_steps must be >= 1"),
            tf.debugging.assert_less_equal(num_steps, T, message=f"num_steps must be <= T = {T}"),
        ]):
            return graph_timesteps(T, tf.identity(num_steps), self.options.spacing)

    @staticmethod
    def _noise(noise, timesteps, eta):
        """Explicit noise ``[S, B, ...]``; an empty ``[0, B, ...]`` stands for zeros when η = 0."""
        s, n = tf.size(timesteps), tf.shape(noise)[0]
        ok = tf.logical_or(tf.equal(n, s), tf.logical_and(tf.equal(n, 0), tf.equal(eta, 0.0)))
        with tf.control_dependencies([tf.debugging.Assert(ok, [
            "noise must have num_steps entries [S, B, ...] (or 0 entries when eta = 0); entries, num_steps:", n, s])]):
            pad = tf.concat([[[0, s - n]], tf.zeros([tf.rank(noise) - 1, 2], tf.int32)], axis=0)
            padded = tf.pad(noise, pad)
            padded.set_shape(noise.shape)  # a dynamic pad loses the static [.., H, W, C] the loop needs
            return padded

    def _labels(self, labels, x):
        checks = [
            tf.debugging.assert_greater_equal(labels, 0, message="labels must be >= 0"),
            tf.debugging.assert_less(labels, self.num_classes, message=f"labels must be < num_classes = {self.num_classes}"),
            tf.debugging.assert_equal(tf.shape(labels)[0], tf.shape(x)[0], message="labels must have one entry per sample"),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    # ------------------------------------------------------------ signatures
    def _make_signatures(self):
        shape = [None, *self.data_shape]
        conditional = self.num_classes is not None
        network_conditional = self.network_classes is not None
        extra = [tf.TensorSpec([None], tf.int32, name="labels"), tf.TensorSpec([], tf.float32, name="guidance_scale")] if conditional else []

        def sample(x_T, num_steps, eta, seed, *cond):
            return {"x_0": self._sampler.graph_sample(x_T, self._timesteps(num_steps), eta, seed=seed, cond=self._cond(cond, x_T))}

        def sample_with_noise(x_T, num_steps, eta, noise, *cond):
            timesteps = self._timesteps(num_steps)
            noise = self._noise(noise, timesteps, eta)
            return {"x_0": self._sampler.graph_sample(x_T, timesteps, eta, noise=noise, cond=self._cond(cond, x_T))}

        def sample_dpmpp_2m(x_T, num_steps, *cond):
            return {"x_0": self._dpm_sampler.graph_sample(x_T, self._timesteps(num_steps), cond=self._cond(cond, x_T))}

        def encode(x_0, num_steps, *cond):
            return {"x_T": self._sampler.graph_encode(x_0, self._timesteps(num_steps), cond=self._cond(cond, x_0))}

        def predict_x0(x_t, t, *labels):
            y = self._labels(labels[0], x_t) if network_conditional else None
            with tf.control_dependencies([
                tf.debugging.assert_greater_equal(t, 0, message="t must be >= 0"),
                tf.debugging.assert_less(t, self.num_timesteps, message=f"t must be < T = {self.num_timesteps}"),
            ]):
                t = tf.identity(t)
            out = self._sampler.model_fn(x_t, t, y) if network_conditional else self._sampler.model_fn(x_t, t)
            eps = out[..., : self.data_shape[-1]]
            ab = steps.select_timestep(self._alphas_cumprod, t, x_t)
            return {"x_0": steps.x0_from_eps(x_t, eps, ab), "eps": eps}

        specs = {
            "serving_default": (sample, [tf.TensorSpec(shape, tf.float32, name="x_T"), tf.TensorSpec([], tf.int32, name="num_steps"),
                                         tf.TensorSpec([], tf.float32, name="eta"), tf.TensorSpec([], tf.int64, name="seed"), *extra]),
            "sample_with_noise": (sample_with_noise, [tf.TensorSpec(shape, tf.float32, name="x_T"), tf.TensorSpec([], tf.int32, name="num_steps"),
                                                      tf.TensorSpec([], tf.float32, name="eta"),
                                                      tf.TensorSpec([None, *shape], tf.float32, name="noise"), *extra]),
            "sample_dpmpp_2m": (sample_dpmpp_2m, [tf.TensorSpec(shape, tf.float32, name="x_T"),
                                                  tf.TensorSpec([], tf.int32, name="num_steps"), *extra]),
            "encode": (encode, [tf.TensorSpec(shape, tf.float32, name="x_0"), tf.TensorSpec([], tf.int32, name="num_steps"), *extra]),
            "predict_x0": (predict_x0, [tf.TensorSpec(shape, tf.float32, name="x_t"), tf.TensorSpec([None], tf.int32, name="t"),
                                        *(extra[:1] if network_conditional else [])]),
        }
        return {name: tf.function(fn, input_signature=sig).get_concrete_function() for name, (fn, sig) in specs.items()}

    def _cond(self, inputs, x) -> Conditioning:
        """The signature's conditioning inputs (``labels``, ``guidance_scale``, when the export has classes) as one value."""
        if self.num_classes is None:
            return Conditioning()
        labels, scale = inputs
        return Conditioning(self._labels(labels, x), scale)


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
        prediction_type=Prediction.EPSILON,  # the exported loops run epsilon networks (SamplerConfig's default)
        learned_variance=module.learned_variance,
        conditioning=conditioning,
        data_shape=module.data_shape,
        num_timesteps=module.num_timesteps,
        schedule_sha256=layout.schedule_sha256(json.loads(module.schedule_json)),
        tfddim_version=tfddim.__version__,
    )


def _keras_config(model) -> dict:
    """``{"class_name", "config"}``, as :func:`tfddim.models.build` reads it."""
    return {"class_name": type(model).__name__, "config": model.get_config()}


def _write_assets(path: str, module: SamplerModule, metadata: Optional[dict]) -> None:
    """The assets folder, through :func:`tfddim.export.layout.write_export_assets` (the one writer of its files)."""
    layout.write_export_assets(
        layout.ExportLayout(path), export_manifest(module), model_config=_keras_config(module.network),
        schedule_config=json.loads(module.schedule_json), metadata=metadata,
        classifier_config=None if module.classifier is None else _keras_config(module.classifier))


def _check(path: str, module: SamplerModule):
    """Reload the written SavedModel and run one small sample; it must match the in-memory module."""
    loaded = tf.saved_model.load(path)
    x = tf.random.stateless_normal([2, *module.data_shape], seed=[0, 1])
    args = dict(x_T=x, num_steps=tf.constant(2), eta=tf.constant(0.5), seed=tf.constant(3, tf.int64))
    if module.num_classes is not None:
        args.update(labels=tf.zeros([2], tf.int32), guidance_scale=tf.constant(1.0))
    want = module.serving_signatures["serving_default"](**args)["x_0"].numpy()
    got = loaded.signatures["serving_default"](**args)["x_0"].numpy()
    if not np.allclose(got, want, rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"export check failed: reloaded model differs by {np.abs(got - want).max()}")
    return loaded


def export_saved_model(network, schedule: Schedule, data_shape, base_dir: str, version: int = 1,
                       options: ExportOptions = ExportOptions(), metadata: Optional[dict] = None,
                       overwrite: bool = False, onnx: bool = False, warmup: Optional[bool] = None,
                       classifier=None) -> str:
    """Write ``base_dir/<version>/`` atomically and return its path (see the module docstring).

    Args:
        onnx: also write ``onnx/`` (:mod:`tfddim.export.onnx`), checked against the SavedModel.
        classifier: a :class:`tfddim.models.NoisyClassifier` to bundle: the loops use classifier
            guidance (its gradient, in the graph) with ``labels`` and ``guidance_scale`` = s.
        warmup: write TF Serving warmup requests; ``None`` writes them when
            ``tensorflow-serving-api`` is installed (and says so when it is not).
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    final = os.path.join(base_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) or a new --version")
    os.makedirs(base_dir, exist_ok=True)
    if onnx and classifier is not None:
        # Measured with tf2onnx 1.17: the guidance gradient inside the loop brings TF gradient ops
        # (ShapeN from the convolutions' gradients, BroadcastGradientArgs) that it has no handler for.
        raise ValueError("ONNX export of classifier guidance is not supported: tf2onnx cannot convert the gradient "
                         "ops of ∇ log p(y|x_t) inside the loop; export without --onnx (the SavedModel has it), "
                         "or use classifier-free guidance")
    module = SamplerModule(network, schedule, data_shape, options, classifier=classifier)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base_dir)
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
                                                 module.data_shape, module.num_classes, module.network_classes is not None)
        if onnx:
            onnx_export.export_onnx(tmp)
            gap = onnx_export.check_onnx(tmp, loaded, module.data_shape, module.num_classes)
            if gap > ONNX_TOLERANCE:
                raise RuntimeError(f"ONNX check failed: ONNX Runtime differs from the SavedModel by {gap:.3g}")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model server may run as another user
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
