"""Shared fixtures: one schedule and one analytic mixture for the whole session (TensorFlow imports once)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

# Two logical CPU devices for MirroredStrategy tests; this must happen before TensorFlow
# initialises its devices, i.e. before any test runs an op.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from tfddim import export, models
from tfddim.data import mixture
from tfddim.diffusion import schedules


_LOAD = tf.saved_model.load
_LOADED: dict = {}


def _load_once(export_dir, tags=None, options=None):
    """``tf.saved_model.load`` of an unchanged folder returns the object loaded before.

    Every load registers the export's functions in TensorFlow's eager context for the life of the process:
    measured, +265 MB per load of ``saved_models/digits/1`` (12 signatures), not freed by ``del`` and ``gc``.
    The suite loads the same exports many times and ran out of the machine's 24 GB in one pytest process.
    The key includes ``saved_model.pb``'s mtime and size, so a folder rewritten by a test (an overwrite, a
    re-export) is loaded again. Tests about loading in a fresh process use subprocesses, untouched by this.
    """
    if tags is not None or options is not None:
        return _LOAD(export_dir, tags, options)
    path = os.path.realpath(os.fspath(export_dir))
    try:
        stat = os.stat(os.path.join(path, "saved_model.pb"))
    except OSError:
        return _LOAD(export_dir)  # let TensorFlow report the missing or broken folder
    key = (path, stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if key not in _LOADED:
        _LOADED[key] = _LOAD(export_dir)
    return _LOADED[key]


tf.saved_model.load = _load_once


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Separate strategies on the same devices reuse collective instance keys; a second
    strategy whose first all-reduce has another shape aborts with "Shape mismatch in
    the collective instance 100" (seen when the classifier test ran before the diffusion one).
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def sched():
    return schedules.get("linear", num_timesteps=1000)


@pytest.fixture(scope="session")
def mix():
    """Three well-separated, anisotropic, unequally weighted 2-D components."""
    means = np.array([[-4.0, 0.0], [3.0, 3.0], [2.0, -4.0]])
    covs = np.array([
        [[0.36, 0.10], [0.10, 0.25]],
        [[0.25, -0.05], [-0.05, 0.16]],
        [[0.16, 0.0], [0.0, 0.36]],
    ])
    return mixture.GaussianMixture(weights=np.array([0.2, 0.3, 0.5]), means=means, covs=covs)


@pytest.fixture(scope="session")
def eps_fn(mix, sched):
    return mix.eps_fn(sched)


# ---------------------------------------------------------------- exported tiny models
EXPORT_T = 50
COND_ONNX = ("sample_with_noise", "sample_ode", "encode")  # the conditional fixture's ONNX graphs
SR_ONNX = ("sample_with_noise", "inpaint_with_noise")  # the super-resolution fixture's


def tiny_unet(**kw):
    # Seeded: the ONNX parity tests compare max |Δ| over every pixel, and that maximum has a heavy
    # tail over random networks (S = T, batch 16: 4e-6 to 1.8e-4 across seeds 0-4), from float32
    # differences amplified by √(1−ᾱ)/√ᾱ ≈ 10³ at t = T−1 of the cosine schedule (see the issue note).
    import keras

    keras.utils.set_random_seed(0)
    net = models.UNet(image_size=8, in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(4,), num_heads=2, **kw)
    inputs = (tf.zeros([1, 8, 8, 1]), tf.zeros([1], tf.int32)) + ((tf.zeros([1], tf.int32),) if kw.get("num_classes") else ())
    if kw.get("low_res_channels"):
        inputs += (tf.zeros([1, 4, 4, kw["low_res_channels"]]), tf.zeros([1], tf.int32))
    net(inputs)
    # the output conv starts at zero; give it weights so the tests see a non-trivial network
    rng = np.random.default_rng(0)
    net.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in net.get_weights()])
    return net


@pytest.fixture(scope="session")
def export_sched():
    return schedules.get("cosine", EXPORT_T)


@pytest.fixture(scope="session")
def uncond(tmp_path_factory, export_sched):
    """(network, base folder, version folder, loaded SavedModel) of an unconditional export with ONNX graphs."""
    net = tiny_unet()
    base = str(tmp_path_factory.mktemp("sm") / "tiny")
    path = export.export_saved_model(net, export_sched, (8, 8, 1), base, 1, export.ExportOptions(clip_x0=(-1, 1)),
                                     metadata={"steps": 0}, onnx=True)
    return net, base, path, tf.saved_model.load(path)


@pytest.fixture(scope="session")
def cond(tmp_path_factory, export_sched):
    """The same for a 3-class conditional model (classifier-free guidance, trailing spacing).

    Its ONNX folder holds the graphs of COND_ONNX, whose conditioning inputs the tests check in ONNX Runtime;
    the DDPM and trajectory graphs are the same loop with another step or more outputs, converted and
    checked on ``uncond`` (each conversion costs ~15 s of tf2onnx).
    """
    net = tiny_unet(num_classes=3)
    base = str(tmp_path_factory.mktemp("smc") / "tiny_cond")
    path = export.export_saved_model(net, export_sched, (8, 8, 1), base, 1, export.ExportOptions(spacing="trailing"),
                                     onnx=True, onnx_signatures=COND_ONNX)
    return net, base, path, tf.saved_model.load(path)


@pytest.fixture(scope="session")
def sr(tmp_path_factory, export_sched):
    """The same for a super-resolution network (8x8 from a 4x4 ``low_res``, at low_res_t = 3).

    Its ONNX folder holds SR_ONNX: the low_res input through a sampling loop and through the inpainting hook;
    the other loops take it the same way and are converted on ``uncond``.
    """
    net = tiny_unet(low_res_channels=1)
    base = str(tmp_path_factory.mktemp("smsr") / "tiny_sr")
    path = export.export_saved_model(net, export_sched, (8, 8, 1), base, 1,
                                     export.ExportOptions(clip_x0=(-1, 1), low_res_size=4, low_res_t=3),
                                     onnx=True, onnx_signatures=SR_ONNX)
    return net, base, path, tf.saved_model.load(path)
