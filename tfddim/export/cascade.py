"""A two-stage cascade (ADM-U: a base model, then an upsampler conditioned on its output) as one SavedModel.

Dhariwal & Nichol (2021, §5 and Table 5, "ADM-G, ADM-U") and cascaded diffusion models (Ho et al. 2021)
sample a low-resolution image with a base model and hand it to a super-resolution model as its
``low_res`` conditioning. :class:`CascadeModule` holds both stages' :class:`SamplerModule` s and runs them
in one graph:

=====================  ==========================================================================================
``serving_default``    ``x_T`` [B, h, w, C], ``x_T_upsample`` [B, H, W, C], ``num_steps``, ``num_steps_upsample``,
                       ``eta``, ``seed`` → ``x_0`` [B, H, W, C], ``x_0_low`` [B, h, w, C]
``sample_with_noise``  the same with ``noise`` [S, B, h, w, C] and ``noise_upsample`` [S_up, B, H, W, C] for
                       ``seed`` (an empty ``[0, B, ...]`` stands for zeros at η = 0): the ONNX graph
=====================  ==========================================================================================

The upsampler runs as a super-resolution export's ``serving_default`` does (from the bilinear upsampling of
the base sample at its ``upsample_strength``, :class:`~tfddim.export.saved_model.ExportOptions`, with
``x_T_upsample`` as the noise). The base sample is clipped to [-1, 1] before it conditions the upsampler (the data range the upsampler
was trained on, as ADM's cascade clips its base samples when it stores them as 8-bit images). With a
seed, the upsampler's noise comes from the seed's streams 2³¹ + i, which the base stage never uses.
Each stage's inputs are checked in the graph as a single export's are (:meth:`SamplerModule._checked`),
after the cascade's own checks of the names only it has.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

import tfddim
from tfddim.export import layout, versions
from tfddim.export import onnx as onnx_export
from tfddim.export.saved_model import (ONNX_TOLERANCE, ExportOptions, SamplerModule, _assert, _check_finite_weights,
                                       _keras_config, _shape_is)
from tfddim.sampling.conditioning import Conditioning

__all__ = ["CascadeModule", "export_cascade", "UPSAMPLE_STREAM_OFFSET"]

UPSAMPLE_STREAM_OFFSET = 2**31  # the upsampler's seed streams: 2³¹ + i (the base uses 0 … S−1)


class CascadeModule(tf.Module):
    """A base :class:`SamplerModule` and an image-conditioned upsampler one, sampled in sequence."""

    def __init__(self, base: SamplerModule, upsampler: SamplerModule):
        super().__init__()
        if base.num_classes is not None or upsampler.num_classes is not None:
            raise ValueError("a cascade export takes unconditional stages (class-conditional cascades are not built)")
        if upsampler.low_res_shape is None:
            raise ValueError("the upsampler must be a super-resolution network (low_res_channels)")
        if tuple(upsampler.low_res_shape) != tuple(base.data_shape):
            raise ValueError(f"the upsampler takes low_res of shape {list(upsampler.low_res_shape)}, "
                             f"but the base model samples {list(base.data_shape)}")
        object.__setattr__(self, "base", base)  # untracked: only the weights are saved (their own signatures
        object.__setattr__(self, "upsampler", upsampler)  # would be second copies of both networks)
        self.base_weights = list(base.network_weights)
        self.upsampler_weights = list(upsampler.network_weights)
        self.data_shape = upsampler.data_shape
        self.low_shape = base.data_shape
        self.serving_signatures = self._make_signatures()

    def _cascade_checks(self, x_T, x_T_up, num_steps_up, noise_up=None):
        """The inputs only the cascade has: ``x_T_upsample`` (shape, batch of x_T, finite), ``num_steps_upsample``
        and ``noise_upsample``; in stages, as :meth:`SamplerModule._checked`."""
        data, T = self.data_shape, self.upsampler.num_timesteps
        batch = tf.shape(x_T)[0]
        first = [_assert(_shape_is(x_T_up, [None, *data]),
                         f"x_T_upsample must have shape [B, {', '.join(map(str, data))}]; got shape", tf.shape(x_T_up)),
                 _assert(tf.equal(tf.rank(num_steps_up), 0), "num_steps_upsample must be a scalar; got shape",
                         tf.shape(num_steps_up))]
        if noise_up is not None:
            first.append(_assert(tf.equal(tf.rank(noise_up), len(data) + 2),
                                 f"noise_upsample must have shape [S, B, {', '.join(map(str, data))}]; got shape",
                                 tf.shape(noise_up)))
        with tf.control_dependencies(first):
            second = [_assert(tf.equal(tf.shape(x_T_up)[0], tf.shape(x_T)[0]),
                              "x_T_upsample must have the batch of x_T; got, B:", tf.shape(x_T_up)[0], tf.shape(x_T)[0]),
                      _assert(tf.logical_and(num_steps_up >= 1, num_steps_up <= T),
                              f"num_steps_upsample must be in [1, T = {T}]; got", num_steps_up),
                      _assert(tf.reduce_all(tf.math.is_finite(x_T_up)), "x_T_upsample contains NaN or Inf")]
            if noise_up is not None:
                shape = tf.shape(noise_up)
                entries_ok = tf.logical_or(tf.equal(shape[0], num_steps_up), tf.equal(shape[0], 0))
                second += [_assert(tf.logical_and(entries_ok, tf.reduce_all(tf.equal(shape[1:], tf.concat([[batch], data], 0)))),
                                   "noise_upsample must have shape [num_steps_upsample or 0, B, H, W, C]; got shape",
                                   shape),
                           _assert(tf.reduce_all(tf.math.is_finite(noise_up)), "noise_upsample contains NaN or Inf")]
        return second

    def _run(self, x_T, x_T_up, num_steps, num_steps_up, eta, seed=None, noise=None, noise_up=None):
        checks = self._cascade_checks(x_T, x_T_up, num_steps_up, noise_up)
        with tf.control_dependencies(checks):
            x_T = tf.identity(x_T)
        base, up = self.base, self.upsampler
        inputs = dict(x_T=x_T, num_steps=num_steps, eta=eta)
        inputs.update(seed=seed) if noise is None else inputs.update(noise=noise)
        r = base._checked("x_T", inputs)
        taus = base._timesteps(r["num_steps"])
        if noise is None:
            low = base._sampler.graph_sample(r["x_T"], taus, r["eta"], seed=r["seed"], cond=Conditioning())
        else:
            low = base._sampler.graph_sample(r["x_T"], taus, r["eta"], noise=base._noise(r["noise"], taus),
                                             cond=Conditioning())
        low = tf.clip_by_value(low, -1.0, 1.0)
        inputs = dict(x_T=x_T_up, num_steps=num_steps_up, eta=eta, low_res=low)
        inputs.update(seed=seed) if noise_up is None else inputs.update(noise=noise_up)
        r = up._checked("x_T", inputs)
        taus = up._timesteps(r["num_steps"])
        cond = up._cond(r)
        if noise_up is None:
            x0 = up.generate(r["x_T"], taus, r["eta"], cond, seed=r["seed"], step_offset=UPSAMPLE_STREAM_OFFSET)
        else:
            x0 = up.generate(r["x_T"], taus, r["eta"], cond, noise=up._noise(r["noise"], taus))
        return {"x_0": x0, "x_0_low": low}

    def _make_signatures(self):
        def f32(name):
            return tf.TensorSpec(None, tf.float32, name=name)

        def i32(name):
            return tf.TensorSpec(None, tf.int32, name=name)

        def sample(x_T, x_T_upsample, num_steps, num_steps_upsample, eta, seed):
            return self._run(x_T, x_T_upsample, num_steps, num_steps_upsample, eta, seed=seed)

        def sample_with_noise(x_T, x_T_upsample, num_steps, num_steps_upsample, eta, noise, noise_upsample):
            return self._run(x_T, x_T_upsample, num_steps, num_steps_upsample, eta, noise=noise, noise_up=noise_upsample)

        common = [f32("x_T"), f32("x_T_upsample"), i32("num_steps"), i32("num_steps_upsample"), f32("eta")]
        specs = {"serving_default": (sample, [*common, tf.TensorSpec(None, tf.int64, name="seed")]),
                 "sample_with_noise": (sample_with_noise, [*common, f32("noise"), f32("noise_upsample")])}
        return {name: tf.function(fn, input_signature=sig).get_concrete_function() for name, (fn, sig) in specs.items()}


def cascade_manifest(module: CascadeModule) -> layout.ExportManifest:
    """``export.json`` of a cascade: the upsampler's output shape and schedule, and ``cascade`` (the base stage)."""
    up, base = module.upsampler, module.base
    signatures = sorted(module.serving_signatures)
    return layout.ExportManifest(
        signatures=signatures, methods={name: "ddim" for name in signatures}, spacing=up.options.spacing,
        clip_x0=up.options.clip_x0, final_alpha_cumprod=up.options.final_alpha_cumprod,
        prediction_type=up.options.prediction_type, learned_variance=up.learned_variance,
        conditioning=layout.ExportConditioning(), data_shape=up.data_shape, num_timesteps=up.num_timesteps,
        schedule_sha256=layout.schedule_sha256(json.loads(up.schedule_json)), tfddim_version=tfddim.__version__,
        max_batch=up.options.max_batch, upsample_strength=up.options.upsample_strength,
        cascade=layout.CascadeStage(data_shape=base.data_shape, num_timesteps=base.num_timesteps,
                                    spacing=base.options.spacing.value, clip_x0=base.options.clip_x0,
                                    prediction_type=base.options.prediction_type.value, low_res_t=up.options.low_res_t,
                                    schedule=json.loads(base.schedule_json), model_config=_keras_config(base.network)))


def export_cascade(base_network, base_schedule, upsampler, up_schedule, base_dir: str, version: int = 1,
                   base_options: ExportOptions = ExportOptions(), up_options: ExportOptions = ExportOptions(),
                   metadata=None, overwrite: bool = False, onnx: bool = False) -> str:
    """Write ``base_dir/<version>/``: the cascade SavedModel (and ``onnx/sample_with_noise.onnx``), atomically.

    The folder has the layout of a single export (:mod:`tfddim.export.layout`): ``export.json`` is the
    upsampler's with a ``cascade`` entry for the base stage (its shape, schedule, spacing and network
    config); ``model_config.json`` and ``schedule.json`` are the upsampler's.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    final = os.path.join(base_dir, str(version))
    versions.recover(base_dir, version)
    if os.path.lexists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) or a new --version")
    _check_finite_weights(base_network, "base network")
    _check_finite_weights(upsampler, "upsampler network")
    base = SamplerModule(base_network, base_schedule, tuple(base_options_shape(base_network)), base_options)
    up = SamplerModule(upsampler, up_schedule, tuple(base_options_shape(upsampler)), up_options)
    module = CascadeModule(base, up)
    os.makedirs(base_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-{os.getpid()}-", dir=base_dir)
    try:
        tf.saved_model.save(module, tmp, signatures=module.serving_signatures)
        layout.write_export_assets(layout.ExportLayout(tmp), cascade_manifest(module),
                                   model_config=_keras_config(upsampler), schedule_config=json.loads(up.schedule_json),
                                   metadata=metadata)
        loaded = tf.saved_model.load(tmp)
        feed = _small_request(module)
        want = module.serving_signatures["sample_with_noise"](**feed)
        got = loaded.signatures["sample_with_noise"](**feed)
        for key in ("x_0", "x_0_low"):
            if not np.all(np.isfinite(want[key].numpy())):
                raise ValueError("export check failed: the cascade's samples contain NaN/Inf (a diverged run?)")
            if not np.allclose(got[key].numpy(), want[key].numpy(), rtol=1e-5, atol=1e-6):
                raise RuntimeError(f"export check failed: the reloaded cascade's {key} differs")
        if onnx:
            onnx_export.export_onnx(tmp, signatures=("sample_with_noise",))
            import onnxruntime as ort

            session = ort.InferenceSession(layout.ExportLayout(tmp).onnx_graph("sample_with_noise"),
                                           providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            outs = dict(zip(names, session.run(names, {k: np.asarray(v) for k, v in feed.items()})))
            gap = max(float(np.max(np.abs(outs[k] - got[k].numpy()))) for k in ("x_0", "x_0_low"))
            if not gap <= ONNX_TOLERANCE:
                raise RuntimeError(f"ONNX check failed: ONNX Runtime differs from the SavedModel by {gap:.3g}")
        os.chmod(tmp, 0o755)
        versions.install(tmp, final, base_dir, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def base_options_shape(network) -> tuple:
    """A UNet's data shape [H, W, C]."""
    return (network.image_size, network.image_size, network.in_channels)


def _small_request(module: CascadeModule) -> dict:
    rng = np.random.default_rng(0)
    low, data = module.low_shape, module.data_shape
    return dict(x_T=rng.standard_normal((2, *low)).astype(np.float32),
                x_T_upsample=rng.standard_normal((2, *data)).astype(np.float32),
                num_steps=np.int32(2), num_steps_upsample=np.int32(2), eta=np.float32(0.5),
                noise=rng.standard_normal((2, 2, *low)).astype(np.float32),
                noise_upsample=rng.standard_normal((2, 2, *data)).astype(np.float32))
