"""Latent diffusion: the autoencoder, its scale factor and latent data, the latent sampler against the mixture
oracle through a linear autoencoder, and a tiny latent run end to end (train-autoencoder → train → export →
both runtimes), with its bad inputs."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfddim import data as data_lib
from tfddim import export, models
from tfddim.data.mixture import GaussianMixture
from tfddim.diffusion import schedules
from tfddim.export.latent import LatentModule
from tfddim.models.autoencoder import kl_to_standard_normal
from tfddim.training import AutoencoderModel


def tiny_autoencoder(**kw):
    keras.utils.set_random_seed(0)
    config = dict(image_size=8, in_channels=1, latent_channels=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
    config.update(kw)
    return models.Autoencoder(**config)


# ---------------------------------------------------------------- the network and its objective
def test_autoencoder_shapes_config_and_save_round_trip(tmp_path):
    ae = tiny_autoencoder()
    x = np.random.default_rng(0).uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32)
    mean, logvar = ae.encode(x)
    assert mean.shape == logvar.shape == (3, 4, 4, 2) and ae.latent_shape == (4, 4, 2) and ae.factor == 2
    assert ae.decode(mean).shape == (3, 8, 8, 1)
    again = models.build({"class_name": "Autoencoder", "config": ae.get_config()})
    again(x)
    again.set_weights(ae.get_weights())
    np.testing.assert_array_equal(again(x).numpy(), ae(x).numpy())
    ae.save(tmp_path / "ae.keras")
    loaded = keras.models.load_model(tmp_path / "ae.keras")
    np.testing.assert_array_equal(loaded(x).numpy(), ae(x).numpy())


@pytest.mark.parametrize("kw, name", [(dict(image_size=6, channel_mult=(1, 2, 2)), "image_size"),
                                      (dict(latent_channels=0), "latent_channels"),
                                      (dict(channel_mult=()), "channel_mult")])
def test_autoencoder_bad_config_names_the_argument(kw, name):
    with pytest.raises(ValueError, match=name):
        tiny_autoencoder(**kw)


def test_kl_term_is_the_closed_form():
    # KL(N(μ, σ²) ‖ N(0, 1)) = ½(μ² + σ² − 1 − log σ²): 0 at the prior, ½ at μ = 1, σ = 1, ½(4 − 1 − log 4) at σ = 2
    mean = tf.constant([0.0, 1.0, 0.0])
    logvar = tf.constant([0.0, 0.0, np.log(4.0)], tf.float32)
    np.testing.assert_allclose(kl_to_standard_normal(mean, logvar).numpy(), [0.0, 0.5, 0.5 * (3 - np.log(4))], atol=1e-6)


def test_autoencoder_model_fits_the_digits():
    """A few hundred steps of fit shrink the L1 reconstruction of the 8x8 digits below the untrained one's half."""
    ae = tiny_autoencoder()
    model = AutoencoderModel(ae, kl_weight=1e-6)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    ds = data_lib.make_dataset(data_lib.DataConfig(source="digits", batch_size=64), "train", training=True)
    x = next(iter(ds))[0]
    before = float(tf.reduce_mean(tf.reduce_sum(tf.abs(x - ae(x)), axis=[1, 2, 3])))
    history = model.fit(ds, steps_per_epoch=150, epochs=1, verbose=0).history
    after = float(tf.reduce_mean(tf.reduce_sum(tf.abs(x - ae(x)), axis=[1, 2, 3])))
    assert np.isfinite(history["loss"][-1]) and after < 0.5 * before, (before, after)


def test_scale_factor_is_one_over_the_latent_std():
    """Latents z = μ + σ·ε with μ = 0 and σ = 2 everywhere: scale_factor = 1/std(z) → 1/2. n = 6,400 latent values:
    the standard error of a sample std is σ/√(2n) = 0.018, so |std − 2| < 5 s.e. = 0.09."""
    from tfddim.pipelines.train_autoencoder import latent_statistics

    class Fixed:
        def encode(self, x):
            shape = (x.shape[0], 4, 4, 2)
            return tf.zeros(shape), tf.fill(shape, np.log(4.0).astype(np.float32))

    stats = latent_statistics(Fixed(), np.zeros((200, 8, 8, 1), np.float32))
    assert abs(stats["latent_std"] - 2.0) < 0.09
    assert stats["scale_factor"] == pytest.approx(1.0 / stats["latent_std"])


def test_latent_dataset_scales_and_draws_the_posterior():
    config = data_lib.DataConfig(source="digits", batch_size=100, seed=3)
    mean = np.arange(500 * 2, dtype=np.float32).reshape(500, 1, 1, 2) / 1000
    labels = np.arange(500) % 10
    # σ = 0: the latents are exactly μ·scale, every example once, in order
    z, y = next(iter(data_lib.latent_dataset(mean, np.zeros_like(mean), labels, 2.0, config, training=False)))
    np.testing.assert_array_equal(z.numpy(), 2.0 * mean[:100])
    np.testing.assert_array_equal(y.numpy(), labels[:100])
    # σ = 1, μ = 0, scale 0.5: z·scale has std 0.5 (2,000 values: |Δ| < 5·0.5/√4000 = 0.04); the stream is the seed's
    draw = lambda: np.concatenate([b[0].numpy() for b in data_lib.latent_dataset(  # noqa: E731
        np.zeros((1000, 1, 1, 2), np.float32), np.ones((1000, 1, 1, 2), np.float32), labels.repeat(2), 0.5, config,
        training=True).take(10)])
    first = draw()
    assert abs(first.std() - 0.5) < 0.04
    np.testing.assert_array_equal(first, draw())
    with pytest.raises(ValueError, match="scale_factor"):
        data_lib.latent_dataset(mean, mean, labels, 0.0, config)


# ---------------------------------------------------------------- the latent sampler against the mixture oracle
def call(module, name, **inputs):
    """An in-process signature called with its inputs by name (the concrete functions take them in order)."""
    sampler = module.sampler if isinstance(module, LatentModule) else module
    specs = sampler.signature_functions[name][1]
    return module.serving_signatures[name](*[tf.convert_to_tensor(inputs[s.name]) for s in specs])


class MixtureNet(keras.Model):
    """The mixture's exact ε as a network on [B, 1, 1, D] "images" (no weights)."""

    def __init__(self, mixture, schedule):
        super().__init__()
        self.eps = mixture.eps_fn(schedule)

    def call(self, inputs, training=False):
        x, t = inputs
        return tf.reshape(self.eps(tf.reshape(x, [-1, 2]), t), [-1, 1, 1, 2])


class _LinearAutoencoder:
    """E(x) = M x, D(z) = M⁻¹ z on [B, 1, 1, 2], with M = c·R (R a rotation): an invertible "autoencoder"."""

    image_size, in_channels, factor, latent_shape, weights = 1, 2, 1, (1, 1, 2), []

    def __init__(self, c, angle):
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        self.rotation = rot
        self.m = tf.constant(c * rot, tf.float32)
        self.m_inv = tf.constant(np.linalg.inv(c * rot), tf.float32)

    def encode(self, x):
        z = tf.reshape(tf.reshape(x, [-1, 2]) @ tf.transpose(self.m), [-1, 1, 1, 2])
        return z, tf.fill(tf.shape(z), -30.0)

    def decode(self, z):
        return tf.reshape(tf.reshape(z, [-1, 2]) @ tf.transpose(self.m_inv), [-1, 1, 1, 2])


def close(got, want):
    """Per sample: the median within 1e-5 and all within 1e-3 (see the test below for why)."""
    err = np.abs(got - want).reshape(len(want), -1).max(axis=1)
    assert np.median(err) < 1e-5 and err.max() < 1e-3, (np.median(err), err.max())


def test_latent_sampler_through_a_linear_autoencoder_is_the_rotated_pixel_sampler(mix, sched):
    """With E(x) = c·R·x and scale_factor 1/c the latents are R·x, distributed as the rotated mixture, whose exact ε
    is known. DDIM is equivariant to rotations (ε*_rot(Rx, t) = R ε*(x, t), and the noise is isotropic), so the
    latent export started from R·x_T with noise R·z must return exactly the pixel export's x_0 after the decoder,
    and its z_0 = R·x_0; encode (E, then DDIM inversion) must return R times the pixel inversion.

    Tolerance: both are float32 loops whose inputs differ by the rounding of a rotation (~6e-8 relative). The
    first step's x̂₀ = (x − √(1−ᾱ)ε)/√ᾱ multiplies it by 1/√ᾱ_{T−1} ≈ 160 (linear schedule), ~1e-5; a sample
    that starts between two components, where the responsibilities are steep, amplifies it further (measured:
    one of 64 at 2.4e-4). So: the median sample within 1e-5 and every sample within 1e-3, where an error of the
    wrapping (a missing scale, a transposed decoder) is of order 1."""
    c, angle = 3.0, 0.7
    ae = _LinearAutoencoder(c, angle)
    rot = ae.rotation
    rotated = GaussianMixture(weights=mix.weights, means=mix.means @ rot.T, covs=rot @ mix.covs @ rot.T)
    pixel = export.SamplerModule(MixtureNet(mix, sched), sched, (1, 1, 2))
    latent = LatentModule(export.SamplerModule(MixtureNet(rotated, sched), sched, (1, 1, 2)), ae, 1.0 / c)
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal((64, 1, 1, 2)).astype(np.float32)
    noise = rng.standard_normal((20, 64, 1, 1, 2)).astype(np.float32)
    turn = lambda a: (a.reshape(-1, 2) @ rot.T).reshape(a.shape).astype(np.float32)  # noqa: E731
    for eta in (0.0, 1.0):
        args = dict(num_steps=tf.constant(20), eta=tf.constant(eta))
        want = call(pixel, "sample_with_noise", x_T=x_T, noise=noise, **args)["x_0"].numpy()
        got = call(latent, "sample_with_noise", x_T=turn(x_T), noise=turn(noise), **args)
        close(got["x_0"].numpy(), want)
        close(got["z_0"].numpy(), turn(want))
    x0 = mix.sample(16, rng)[0].reshape(16, 1, 1, 2).astype(np.float32)
    want = call(pixel, "encode", x_0=x0, num_steps=tf.constant(20))["x_T"].numpy()
    got = call(latent, "encode", x_0=x0, num_steps=tf.constant(20))["x_T"].numpy()
    close(got, turn(want))
    # the jumping prediction decoded: predict_x0's x_0 = D(ẑ₀ / scale) = the pixel x̂₀
    t = tf.fill([64], 500)
    want = call(pixel, "predict_x0", x_t=x_T, t=t)["x_0"].numpy()
    close(call(latent, "predict_x0", x_t=turn(x_T), t=t)["x_0"].numpy(), want)


def test_latent_inpainting_masks_whole_cells_and_pastes_the_known_pixels():
    ae = tiny_autoencoder()
    module = LatentModule(export.SamplerModule(ZeroNet(), schedules.get("cosine", 20), ae.latent_shape), ae, 0.5)
    mask = np.ones((1, 8, 8, 1), np.float32)
    mask[0, 3, 5] = 0.0  # one generated pixel: its 2x2 cell (rows 2-3, cols 4-5) is generated in latent space
    cells = module.latent_mask(tf.constant(mask)).numpy()
    want = np.ones((1, 4, 4, 2), np.float32)
    want[0, 1, 2] = 0.0
    np.testing.assert_array_equal(cells, want)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 8, 8, 1)).astype(np.float32)
    out = call(module, "inpaint", x_0=x, mask=mask, num_steps=tf.constant(5), eta=tf.constant(0.0),
               seed=tf.constant(0, tf.int64))
    np.testing.assert_array_equal(out["x_0"].numpy()[mask == 1], x[mask == 1])
    assert out["z_0"].shape == (1, 4, 4, 2)


class ZeroNet(keras.Model):
    def call(self, inputs, training=False):
        return tf.zeros_like(inputs[0])


# ---------------------------------------------------------------- a tiny latent run, end to end
@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """train-autoencoder (8x8 digits → 4x4x2 latents) → a class-conditional latent run → export with ONNX."""
    from tfddim.pipelines import config as run_config
    from tfddim.pipelines import train, train_autoencoder

    runs = tmp_path_factory.mktemp("latent_runs")
    ae_cfg = train_autoencoder.load("mnist_vae", [
        "name=\"tiny_vae\"", "data.source=\"digits\"", "model.config.image_size=8", "model.config.latent_channels=2",
        "model.config.base_channels=8", "model.config.channel_mult=[1,2]", "train.epochs=1",
        "train.steps_per_epoch=20", "train.verbose=0"])
    ae_meta = train_autoencoder.run(ae_cfg, runs_dir=str(runs))
    cfg = run_config.load("mnist_ldm", [
        "name=\"tiny_ldm\"", "data.source=\"digits\"", f"diffusion.autoencoder=\"{runs / 'tiny_vae'}\"",
        "diffusion.num_timesteps=50", "model.config.image_size=4", "model.config.in_channels=2",
        "model.config.base_channels=16", "model.config.num_res_blocks=1", "model.config.attention_resolutions=[4]",
        "train.epochs=1", "train.steps_per_epoch=10", "train.sample_every=1", "train.num_sample_images=4",
        "train.verbose=0"])
    meta = train.run(cfg, runs_dir=str(runs))
    from tfddim.pipelines import export as export_pipeline
    from tfddim.runs import RunDir

    base = tmp_path_factory.mktemp("latent_models")
    ae, scale = RunDir(str(runs / "tiny_vae")).load_first_stage()
    run = RunDir(str(runs / "tiny_ldm"))
    path = export.export_saved_model(run.load_network(), run.read_schedule(), meta["data"]["image_shape"],
                                     str(base / "tiny_ldm"), 1, export_pipeline._export_options(run.read_config()),
                                     onnx=True, onnx_signatures=("sample_with_noise", "decode", "inpaint_with_noise"),
                                     autoencoder=ae, scale_factor=scale)
    return dict(runs=runs, ae_meta=ae_meta, meta=meta, path=path, ae=ae, scale=scale, cfg=cfg)


def test_autoencoder_run_records_the_latent_shape_scale_and_reconstruction(latent_run):
    meta = latent_run["ae_meta"]
    assert meta["kind"] == "autoencoder" and meta["latent_shape"] == [4, 4, 2]
    assert meta["scale_factor"] == pytest.approx(1.0 / meta["latent_std"])
    assert np.isfinite(meta["reconstruction"]["psnr"])
    ldm = latent_run["meta"]
    assert ldm["data"]["image_shape"] == [4, 4, 2] and ldm["data"]["pixel_shape"] == [8, 8, 1]
    assert ldm["autoencoder"]["scale_factor"] == meta["scale_factor"]
    assert (latent_run["runs"] / "tiny_ldm" / "samples" / "epoch_0001.png").exists()  # grids are decoded pixels


def test_latent_export_manifest_and_signatures(latent_run):
    from tfddim.export import layout

    manifest = layout.read_manifest(latent_run["path"])
    assert manifest.data_shape == (4, 4, 2) and manifest.pixel_shape == (8, 8, 1)
    assert manifest.latent.scale_factor == latent_run["scale"]
    assert manifest.latent.model_config["class_name"] == "Autoencoder"
    assert "decode" in manifest.signatures and manifest.input_shape("x_0") == [None, 8, 8, 1]
    assert manifest.input_shape("x_T") == [None, 4, 4, 2]


def test_latent_export_decodes_the_latent_sampler(latent_run):
    """serving_default's x_0 = D(z_0 / scale_factor) of its own z_0, the decoder run in Keras; z_0 is the latent
    loop's; ONNX Runtime agrees with the SavedModel (sample_with_noise, decode, inpaint_with_noise)."""
    from tfddim.runtime import open_sampler

    tf_sampler, onnx_sampler = open_sampler(latent_run["path"], "tf"), open_sampler(latent_run["path"], "onnx")
    loaded = tf.saved_model.load(latent_run["path"])
    x_T = tf_sampler.starting_noise(4, 0)
    out = loaded.signatures["serving_default"](x_T=x_T, num_steps=tf.constant(5), eta=tf.constant(0.0),
                                               seed=tf.constant(0, tf.int64), labels=tf.constant([0, 1, 2, 3]),
                                               guidance_scale=tf.constant(2.0))
    decoded = latent_run["ae"].decode(out["z_0"] / latent_run["scale"]).numpy()
    np.testing.assert_allclose(out["x_0"].numpy(), decoded, atol=1e-5)
    empty = np.zeros((0, 4, 4, 4, 2), np.float32)
    a = tf_sampler.sample_with_noise(x_T, 5, 0.0, empty, labels=[0, 1, 2, 3], guidance_scale=2.0)
    b = onnx_sampler.sample_with_noise(x_T, 5, 0.0, empty, labels=[0, 1, 2, 3], guidance_scale=2.0)
    np.testing.assert_allclose(a, out["x_0"].numpy(), atol=1e-5)
    np.testing.assert_allclose(b, a, atol=export.ONNX_TOLERANCE)
    z = np.asarray(out["z_0"])
    np.testing.assert_allclose(onnx_sampler.decode(z), tf_sampler.decode(z), atol=export.ONNX_TOLERANCE)
    x = np.clip(a, -1, 1)
    mask = np.ones_like(x)
    mask[:, :, 4:] = 0
    kw = dict(x_T=x_T, noise=np.random.default_rng(2).standard_normal((5, 4, 4, 4, 2)).astype(np.float32),
              labels=[0, 1, 2, 3])
    inpainted = tf_sampler.inpaint(x, mask, 5, **kw)
    np.testing.assert_allclose(onnx_sampler.inpaint(x, mask, 5, **kw), inpainted, atol=export.ONNX_TOLERANCE)
    np.testing.assert_array_equal(inpainted[mask == 1], x[mask == 1])


def test_latent_export_refuses_pixel_shaped_latents_by_name(latent_run):
    from tfddim.runtime import open_sampler

    loaded = tf.saved_model.load(latent_run["path"])
    common = dict(num_steps=tf.constant(5), eta=tf.constant(0.0), seed=tf.constant(0, tf.int64),
                  labels=tf.constant([0]), guidance_scale=tf.constant(1.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x_T must have shape \[B, 4, 4, 2\]"):
        loaded.signatures["serving_default"](x_T=tf.zeros([1, 8, 8, 1]), **common)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x_0 must have shape \[B, 8, 8, 1\] \(pixels\)"):
        loaded.signatures["edit"](x_0=tf.zeros([1, 4, 4, 2]), strength=tf.constant(0.5), **common)
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask must have the shape of x_0"):
        loaded.signatures["inpaint"](x_0=tf.zeros([1, 8, 8, 1]), mask=tf.zeros([1, 4, 4, 2]), **common)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"z_0 must have shape \[B, 4, 4, 2\]"):
        loaded.signatures["decode"](z_0=tf.zeros([1, 8, 8, 1]))
    for backend in ("tf", "onnx"):
        sampler = open_sampler(latent_run["path"], backend)
        with pytest.raises(ValueError, match=r"x_T must have shape \[B, 4, 4, 2\], got \[1, 8, 8, 1\]"):
            sampler.sample(np.zeros((1, 8, 8, 1)), 5, labels=[0])
        with pytest.raises(ValueError, match=r"z_0 must have shape \[B, 4, 4, 2\]"):
            sampler.decode(np.zeros((1, 8, 8, 1)))


def test_latent_configs_refuse_pixel_augmentations_and_a_changed_autoencoder(latent_run, tmp_path):
    from tfddim.pipelines import config as run_config
    from tfddim.pipelines import export as export_pipeline

    with pytest.raises(ValueError, match="random_flip"):
        run_config.load("mnist_ldm", ["data.random_flip=true"])
    with pytest.raises(ValueError, match="describes an Autoencoder: train it with tfddim train-autoencoder"):
        run_config.load("mnist_vae")
    from tfddim.pipelines import train_autoencoder

    with pytest.raises(ValueError, match="describes a diffusion model: train it with tfddim train"):
        train_autoencoder.load("mnist_ldm")
    with pytest.raises(ValueError, match="not a finished autoencoder run"):
        from tfddim.runs import RunDir

        RunDir(str(tmp_path)).load_first_stage()
    meta = dict(latent_run["meta"], autoencoder=dict(latent_run["meta"]["autoencoder"], weights="0" * 16))
    with pytest.raises(ValueError, match="weights or scale_factor changed"):
        export_pipeline._first_stage(dataclasses.asdict(latent_run["cfg"]), meta)
