"""The two-stage cascade export (ADM-U): base then upsampler in one graph, against the in-process samplers and ONNX."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfddim import models, sampling
from tfddim.diffusion import schedules
from tfddim.export import layout
from tfddim.export.cascade import UPSAMPLE_STREAM_OFFSET, export_cascade
from tfddim.export.saved_model import ONNX_TOLERANCE, ExportOptions

T = 50


def _net(size, seed, **kw):
    import keras

    keras.utils.set_random_seed(seed)
    net = models.UNet(image_size=size, in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(), num_groups=4, **kw)
    inputs = (tf.zeros([1, size, size, 1]), tf.zeros([1], tf.int32))
    if kw:
        inputs += (tf.zeros([1, size // 2, size // 2, 1]), tf.zeros([1], tf.int32))
    net(inputs)
    rng = np.random.default_rng(seed)
    net.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in net.get_weights()])
    return net


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    base, up = _net(4, 0), _net(8, 1, low_res_channels=1)
    sched = schedules.get("cosine", T)
    path = export_cascade(base, sched, up, sched, str(tmp_path_factory.mktemp("cas") / "cascade"),
                          base_options=ExportOptions(clip_x0=(-1, 1)),
                          up_options=ExportOptions(clip_x0=(-1, 1), low_res_size=4, low_res_t=2), onnx=True,
                          metadata={"steps": 0})
    return base, up, sched, path, tf.saved_model.load(path)


def _in_process(base, up, sched, x_T, x_T_up, s, s_up, eta, noise=None, noise_up=None, seed=None):
    """The cascade by hand: the base sampler, its output clipped, then the upsampler conditioned on it."""
    config = sampling.SamplerConfig(method="ddim", clip_x0=(-1.0, 1.0))
    low = sampling.Sampler(lambda x, t: base((x, t)), sched, config).sample(
        x_T, schedules.spaced_timesteps(T, s), eta=eta, noise=noise, seed=seed)
    low = tf.clip_by_value(low, -1.0, 1.0)
    upsampler = sampling.Sampler(lambda x, t, lo, lt: up((x, t, lo, lt)), sched, config)
    taus = schedules.spaced_timesteps(T, s_up)
    if seed is None:
        return upsampler.sample(x_T_up, taus, eta=eta, noise=noise_up, low_res=low, low_res_t=2), low
    # the upsampler's seed streams start at 2^31: its noise entry i is stateless_step_normal(seed, 2^31 + i)
    z = np.stack([tf.random.stateless_normal(x_T_up.shape, tf.constant([seed, UPSAMPLE_STREAM_OFFSET + i], tf.int64),
                                             alg="philox").numpy() for i in range(s_up)])
    z[-1] = 0.0
    return upsampler.sample(x_T_up, taus, eta=eta, noise=z, low_res=low, low_res_t=2), low


def test_the_cascade_is_the_two_samplers_in_sequence_in_the_savedmodel_and_onnx(cascade):
    base, up, sched, path, loaded = cascade
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal((3, 4, 4, 1)).astype(np.float32)
    x_T_up = rng.standard_normal((3, 8, 8, 1)).astype(np.float32)
    noise = rng.standard_normal((5, 3, 4, 4, 1)).astype(np.float32)
    noise_up = rng.standard_normal((4, 3, 8, 8, 1)).astype(np.float32)
    feed = dict(x_T=x_T, x_T_upsample=x_T_up, num_steps=np.int32(5), num_steps_upsample=np.int32(4),
                eta=np.float32(0.8), noise=noise, noise_upsample=noise_up)
    got = loaded.signatures["sample_with_noise"](**{k: tf.constant(v) for k, v in feed.items()})
    want, low = _in_process(base, up, sched, x_T, x_T_up, 5, 4, 0.8, noise=noise, noise_up=noise_up)
    np.testing.assert_allclose(got["x_0_low"].numpy(), low.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["x_0"].numpy(), want.numpy(), atol=1e-5)
    assert np.all(np.abs(got["x_0_low"].numpy()) <= 1.0)  # the base sample is clipped before it conditions
    import onnxruntime as ort

    session = ort.InferenceSession(layout.ExportLayout(path).onnx_graph("sample_with_noise"),
                                   providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {k: np.asarray(v) for k, v in feed.items()})))
    for key in ("x_0", "x_0_low"):
        assert np.max(np.abs(out[key] - got[key].numpy())) <= ONNX_TOLERANCE, key
    # serving_default draws from the seed: the base from streams 0.., the upsampler from 2^31 + i
    seeded = loaded.signatures["serving_default"](x_T=x_T, x_T_upsample=x_T_up, num_steps=tf.constant(5),
                                                   num_steps_upsample=tf.constant(4), eta=tf.constant(0.8),
                                                   seed=tf.constant(11, tf.int64))
    want, low = _in_process(base, up, sched, x_T, x_T_up, 5, 4, 0.8, seed=11)
    np.testing.assert_allclose(seeded["x_0_low"].numpy(), low.numpy(), atol=1e-5)
    np.testing.assert_allclose(seeded["x_0"].numpy(), want.numpy(), atol=1e-5)


def test_the_cascade_manifest_records_the_base_stage(cascade):
    base, up, sched, path, loaded = cascade
    manifest = layout.read_manifest(path)
    assert manifest.signatures == ("sample_with_noise", "serving_default")
    assert manifest.data_shape == (8, 8, 1) and manifest.cascade.data_shape == (4, 4, 1)
    assert manifest.cascade.low_res_t == 2 and manifest.cascade.num_timesteps == T
    assert manifest.cascade.model_config["config"]["image_size"] == 4
    again = layout.ExportManifest.from_json(json.load(open(layout.ExportLayout(path).export_json)))
    assert again == manifest
    assert sorted(layout.read_onnx_manifest(path).graphs) == ["sample_with_noise"]
    assert os.path.isfile(layout.ExportLayout(path).metadata_json)


@pytest.mark.parametrize("change, message", [
    (dict(x_T_upsample=np.zeros((2, 8, 8, 1), np.float32)), "x_T_upsample must have the batch of x_T"),
    (dict(x_T_upsample=np.zeros((3, 4, 4, 1), np.float32)), "x_T_upsample must have shape [B, 8, 8, 1]"),
    (dict(x_T=np.zeros((3, 8, 8, 1), np.float32)), "x_T must have shape [B, 4, 4, 1]"),
    (dict(num_steps_upsample=np.int32(0)), "num_steps_upsample must be in [1, T = 50]"),
    (dict(num_steps=np.int32(51)), "num_steps must be <= T = 50"),
    (dict(x_T_upsample=np.full((3, 8, 8, 1), np.nan, np.float32)), "x_T_upsample contains NaN or Inf"),
])
def test_a_bad_cascade_request_fails_by_name(cascade, change, message):
    loaded = cascade[4]
    request = dict(x_T=np.zeros((3, 4, 4, 1), np.float32), x_T_upsample=np.zeros((3, 8, 8, 1), np.float32),
                   num_steps=np.int32(2), num_steps_upsample=np.int32(2), eta=np.float32(0.0), seed=np.int64(0))
    request.update(change)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in request.items()})


def test_upsample_strength_starts_the_upsampler_from_the_noised_bilinear_image():
    """serving_default/sample_with_noise of an SR export with upsample_strength s < 1 = Sampler.edit of the bilinear
    upsampling of low_res at s, with x_T as its start noise (no save: the module's own functions)."""
    from tfddim.export.saved_model import SamplerModule

    up = _net(8, 1, low_res_channels=1)
    sched = schedules.get("cosine", T)
    module = SamplerModule(up, sched, (8, 8, 1), ExportOptions(clip_x0=(-1, 1), low_res_size=4, upsample_strength=0.6))
    rng = np.random.default_rng(2)
    low = rng.uniform(-1, 1, (2, 4, 4, 1)).astype(np.float32)
    x_T = rng.standard_normal((2, 8, 8, 1)).astype(np.float32)
    noise = rng.standard_normal((6, 2, 8, 8, 1)).astype(np.float32)
    got = module.serving_signatures["sample_with_noise"](tf.constant(x_T), tf.constant(6), tf.constant(1.0),
                                                         tf.constant(noise), tf.constant(low))["x_0"]
    sampler = sampling.Sampler(lambda x, t, lo, lt: up((x, t, lo, lt)), sched,
                               sampling.SamplerConfig(method="ddim", clip_x0=(-1.0, 1.0)))
    start = tf.image.resize(low, (8, 8), method="bilinear")
    want = sampler.edit(start, schedules.spaced_timesteps(T, 6), 0.6, eta=1.0, noise=noise, start_noise=x_T, low_res=low)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    manifest = __import__("tfddim.export.saved_model", fromlist=["export_manifest"]).export_manifest(module)
    assert manifest.upsample_strength == 0.6 and manifest.low_res_shape == (4, 4, 1)


def test_the_runtime_and_tfddim_sample_run_a_cascade_in_both_backends(cascade, tmp_path):
    from tfddim.cli import main
    from tfddim.runtime import OnnxSampler, SavedModelSampler

    path = cascade[3]
    rng = np.random.default_rng(4)
    x_T, x_T_up = rng.standard_normal((2, 4, 4, 1)), rng.standard_normal((2, 8, 8, 1))
    noise, noise_up = rng.standard_normal((3, 2, 4, 4, 1)), rng.standard_normal((3, 2, 8, 8, 1))
    tf_out = SavedModelSampler(path).sample_cascade(x_T, x_T_up, 3, 3, 0.5, noise=noise, noise_upsample=noise_up)
    onnx_out = OnnxSampler(path).sample_cascade(x_T, x_T_up, 3, 3, 0.5, noise=noise, noise_upsample=noise_up)
    for a, b in zip(tf_out, onnx_out):
        assert a.shape == b.shape and np.max(np.abs(a - b)) <= ONNX_TOLERANCE
    with pytest.raises(ValueError, match="x_T must have shape"):
        SavedModelSampler(path).sample_cascade(x_T_up, x_T_up, 3, 3)
    with pytest.raises(ValueError, match="x_T_upsample must have the batch"):
        SavedModelSampler(path).sample_cascade(x_T, x_T_up[:1], 3, 3)
    out = tmp_path / "c.png"
    assert main(["sample", "--model", path, "--n", "3", "--steps", "2", "--out", str(out), "--npz"]) == 0
    saved = np.load(tmp_path / "c.npz")
    assert saved["x_0"].shape == (3, 8, 8, 1) and saved["x_0_low"].shape == (3, 4, 4, 1) and out.exists()
