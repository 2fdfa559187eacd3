"""DiffusionModel: reported losses against independent computations, EMA, distribution, precision, typed options."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import keras

from tfddim import models, sampling
from tfddim.data import mixture
from tfddim.diffusion import schedules
from tfddim.diffusion.kinds import Decoder, Variance
from tfddim.pipelines import config as run_config
from tfddim.sampling import Method
from tfddim.training import DiffusionModel, Loss, NoisedTrainer, Strategy, warmup_schedule


def tiny_mlp(**kw):
    return models.MLP(dim=2, hidden_units=32, num_layers=2, embedding_dim=16, **kw)


def make_model(loss="simple", T=100, compile_kw=None, lr=1e-3, **kw):
    learned = loss == "hybrid" or kw.pop("learned", False)
    num_classes = kw.get("num_classes")
    net = tiny_mlp(learned_variance=learned, num_classes=num_classes)
    model = DiffusionModel(net, schedules.get("cosine", T), (2,), loss=loss, decoder="gaussian", **kw)
    model.compile(optimizer=keras.optimizers.Adam(lr), **(compile_kw or {}))
    return model


@pytest.fixture(scope="module")
def data():
    x, y = mixture.ring(4, 1.0, 0.2).sample(512, np.random.default_rng(0))
    return x.astype(np.float32), y.astype(np.int32)


def dataset(data, batch=64):
    return tf.data.Dataset.from_tensor_slices(data).repeat().batch(batch)


def test_reported_loss_equals_an_independent_computation(data):
    model = make_model("simple")
    x, y = data[0][:64], data[1][:64]
    # the step's randomness is a pure function of (seed, step): draw it as the step will
    x_t, t, eps, _, _ = model.noisy_batch(tf.constant(x), None, model._step_seeds())
    ab = model.schedule.alphas_cumprod[t.numpy()][:, None]
    np.testing.assert_allclose(x_t, np.sqrt(ab) * x + np.sqrt(1 - ab) * eps.numpy(), rtol=1e-5, atol=1e-6)
    eps_hat = model.network((x_t, t), training=True).numpy()
    expected = np.mean((eps.numpy() - eps_hat) ** 2)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert logs["mse"] == pytest.approx(expected, rel=1e-5)
    assert logs["loss"] > 0.01  # not Keras' silent 0.0
    history = model.fit(dataset(data), epochs=2, steps_per_epoch=3, verbose=0).history
    assert len(history["loss"]) == 2 and all(v > 0.01 for v in history["loss"])
    assert set(history) >= {"loss", "mse", "vlb", "loss_q0", "loss_q3"}
    assert int(model.optimizer.iterations) == 7


def test_hybrid_loss_adds_lambda_times_the_bound(data):
    model = make_model("hybrid", vlb_weight=0.001)
    logs = model.train_on_batch(data[0][:64], data[1][:64], return_dict=True)
    assert logs["loss"] == pytest.approx(logs["mse"] + 0.001 * logs["vlb"], rel=1e-5)
    assert logs["vlb"] > 0


def test_hybrid_bound_does_not_move_the_mean():
    """Stop-gradient: the bound term's gradient reaches only the variance output."""
    model = make_model("hybrid")
    x0 = tf.constant(np.random.default_rng(1).normal(size=(32, 2)), tf.float32)
    x_t, t, eps, _, w = model.noisy_batch(x0, None, model._step_seeds())
    with tf.GradientTape() as tape:
        out = model.network((x_t, t), training=True)
        tape.watch(out)
        _, mse, vlb = model.compute_losses(lambda inputs, training: out, x0, x_t, t, eps, None, w, True)
        target = tf.reduce_mean(vlb)
    g = tape.gradient(target, out).numpy()
    assert np.all(g[:, :2] == 0) and np.any(g[:, 2:] != 0)


def test_ema_follows_the_warmup_recursion(data):
    model = make_model("simple", ema_decay=0.9, ema_warmup=True)
    snapshots = []

    class Grab(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            snapshots.append([w.copy() for w in model.network.get_weights()])

    init = [w.copy() for w in model.network.get_weights()]
    model.fit(dataset(data), epochs=1, steps_per_epoch=5, verbose=0, callbacks=[Grab()])
    expected = init
    for n, weights in enumerate(snapshots, start=1):
        d = min(0.9, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights)]
    for got, want in zip(model.ema_network.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(model.ema_network.get_weights()[0], model.network.get_weights()[0])


def test_label_dropout_rate_and_null_label():
    model = make_model("simple", num_classes=4, label_dropout=0.25)
    y = tf.zeros([20000], tf.int32)
    _, _, _, y_in, _ = model.noisy_batch(tf.zeros([20000, 2]), y, model._step_seeds())
    frac = float(np.mean(y_in.numpy() == 4))
    assert abs(frac - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 20000)
    assert set(np.unique(y_in.numpy())) == {0, 4}


def test_importance_sampling_uses_the_second_moment_history(data):
    model = make_model("vlb", T=8, importance_sampling=True)
    model.fit(dataset(data), epochs=1, steps_per_epoch=6, verbose=0)
    counts = model.loss_counts.numpy()
    assert np.all(counts == 10)  # 6 steps x 64 examples fill every one of 8 histories
    hist = model.loss_history.numpy()
    w = np.sqrt(np.mean(hist**2, axis=1))
    expected = w / w.sum() * 0.999 + 0.001 / 8
    np.testing.assert_allclose(model.importance_probs().numpy(), expected, rtol=1e-5)
    t, weights = model.sample_timesteps(40000, tf.constant([3, 4], tf.int64))
    freq = np.bincount(t.numpy(), minlength=8) / 40000
    assert np.all(np.abs(freq - expected) < 4 * np.sqrt(expected * (1 - expected) / 40000) + 1e-9)
    np.testing.assert_allclose(weights.numpy(), 1 / (8 * expected[t.numpy()]), rtol=1e-5)


def test_replicas_draw_different_noise_and_timesteps(mirrored_strategy):
    strategy = mirrored_strategy
    with strategy.scope():
        model = make_model("simple")
    x0 = tf.zeros([16, 2])

    def draw():
        _, t, eps, _, _ = model.noisy_batch(x0, None, model._step_seeds())
        return t, eps

    t, eps = strategy.run(draw)
    t0, t1 = (v.numpy() for v in strategy.experimental_local_results(t))
    e0, e1 = (v.numpy() for v in strategy.experimental_local_results(eps))
    assert not np.array_equal(t0, t1) and not np.allclose(e0, e1)
    # and together they are exactly what one device draws for the global batch of 32
    _, t_all, eps_all, _, _ = model.noisy_batch(tf.zeros([32, 2]), None, model._step_seeds())
    np.testing.assert_array_equal(np.concatenate([t0, t1]), t_all.numpy())
    np.testing.assert_array_equal(np.concatenate([e0, e1]), eps_all.numpy())


def test_mirrored_training_matches_one_device(data, mirrored_strategy):
    """Same global batches: the loss, step count and final weights agree (up to float summation order)."""
    ds = tf.data.Dataset.from_tensor_slices(data).batch(64, drop_remainder=True).repeat()

    def train(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = make_model("simple", lr=1e-2)
        init = model.network.get_weights()
        history = model.fit(ds, epochs=2, steps_per_epoch=4, verbose=0).history
        return model, init, history

    single, init_a, h_a = train(tf.distribute.get_strategy())
    mirrored, init_b, h_b = train(mirrored_strategy)
    for a, b in zip(init_a, init_b):
        np.testing.assert_array_equal(a, b)
    assert single.optimizer.iterations.numpy() == mirrored.optimizer.iterations.numpy() == 8
    np.testing.assert_allclose(h_a["loss"], h_b["loss"], rtol=1e-4)
    for a, b in zip(single.network.get_weights(), mirrored.network.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    for a, b in zip(single.ema_network.get_weights(), mirrored.ema_network.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_gives_finite_losses(data, precision):
    keras.mixed_precision.set_global_policy(precision)
    try:
        net = tiny_mlp()
        model = DiffusionModel(net, schedules.get("linear", 100), (2,), decoder="gaussian")
        opt = keras.optimizers.Adam(1e-3)
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(opt) if precision == "mixed_float16" else opt)
        history = model.fit(dataset(data), epochs=1, steps_per_epoch=5, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] > 0
    assert model.network.compute_dtype != "float32"


def test_jit_compile_gives_finite_losses(data):
    model = make_model("simple", compile_kw={"jit_compile": True})
    history = model.fit(dataset(data), epochs=1, steps_per_epoch=5, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] > 0


def test_warmup_schedule_is_linear_then_constant():
    sched = warmup_schedule(1e-3, 10)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 10, 50)], [0.0, 5e-4, 1e-3, 1e-3], rtol=1e-6)
    assert warmup_schedule(1e-3, 0) == 1e-3


def test_sampler_is_bound_to_the_ema_network(data):
    model = make_model("simple", num_classes=4, label_dropout=0.1)
    model.fit(dataset(data), epochs=1, steps_per_epoch=2, verbose=0)
    sampler = model.sampler()
    x_T = np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)
    labels = np.arange(8, dtype=np.int32) % 4
    out = sampler.sample(x_T, schedules.spaced_timesteps(100, 5), labels=labels)
    direct = sampling.sample(
        model.model_fn(use_ema=True), x_T, model.schedule, schedules.spaced_timesteps(100, 5),
        labels=labels, class_conditional=True,
    )
    np.testing.assert_allclose(out, direct, rtol=1e-6)
    with pytest.raises(ValueError, match="labels are required"):
        sampler.sample(x_T, schedules.spaced_timesteps(100, 5))


def test_save_and_reload_keeps_both_networks(tmp_path, data):
    model = make_model("hybrid")
    model.fit(dataset(data), epochs=1, steps_per_epoch=3, verbose=0)
    path = str(tmp_path / "dm.keras")
    model.save(path)
    back = keras.models.load_model(path)
    assert back.get_config()["loss"] == "hybrid" and back.schedule == model.schedule
    for a, b in zip(back.ema_network.get_weights(), model.ema_network.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(back.network.get_weights(), model.network.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": "l1"}, "unknown loss 'l1'"),
        ({"loss": "hybrid", "learned": False}, None),
        ({"importance_sampling": True}, "importance_sampling"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"label_dropout": 0.2}, "label_dropout needs num_classes"),
        ({"variance": "learned_range"}, "variance must be"),
        ({"variance": "tiny"}, "unknown variance 'tiny'"),
        ({"decoder": "bernoulli"}, "unknown decoder 'bernoulli'"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    if match is None:  # hybrid on a fixed-variance network
        with pytest.raises(ValueError, match="learned_variance"):
            DiffusionModel(tiny_mlp(), schedules.get("linear", 100), (2,), loss="hybrid")
        return
    loss = kwargs.pop("loss", "simple")
    with pytest.raises(ValueError, match=match):
        DiffusionModel(tiny_mlp(), schedules.get("linear", 100), (2,), loss=loss, **kwargs)


# The keys DiffusionModel.get_config() wrote before the NoisedTrainer base: a saved model.keras holds these.
SAVED_CONFIG_KEYS = ["data_shape", "decoder", "dtype", "ema_decay", "ema_warmup", "importance_sampling", "label_dropout", "loss", "low_res_augment_max", "low_res_size",
                     "min_snr_gamma", "name", "network", "num_classes", "prediction_type", "schedule", "seed", "trainable",
                     "variance", "vlb_weight"]


def test_options_are_enums_inside_and_strings_in_the_saved_config():
    model = make_model("vlb", T=8, importance_sampling=True, variance="fixed_large")
    assert isinstance(model, NoisedTrainer)
    assert (model.loss_kind, model.variance, model.decoder) == (Loss.VLB, Variance.FIXED_LARGE, Decoder.GAUSSIAN)
    assert all(type(v) is not str for v in (model.loss_kind, model.variance, model.decoder))  # members, not strings
    saved = json.loads(json.dumps(model.get_config()))  # as model.keras stores it
    assert sorted(saved) == SAVED_CONFIG_KEYS
    assert (saved["loss"], saved["variance"], saved["decoder"]) == ("vlb", "fixed_large", "gaussian")
    back = DiffusionModel.from_config(saved)
    assert (back.loss_kind, back.variance, back.decoder) == (Loss.VLB, Variance.FIXED_LARGE, Decoder.GAUSSIAN)
    assert json.dumps(back.get_config(), sort_keys=True) == json.dumps(saved, sort_keys=True)
    members = DiffusionModel(tiny_mlp(), schedules.get("linear", 100), (2,), loss=Loss.VLB, decoder=Decoder.GAUSSIAN)
    assert members.get_config()["loss"] == "vlb"
    with pytest.raises(ValueError, match="unknown method 'euler'"):
        model.sampler(method="euler")
    assert model.sampler(method=Method.DDPM).config.method is Method.DDPM


SHIPPED = sorted(f[:-5] for f in os.listdir(run_config.CONFIG_DIR) if f.endswith(".json"))


@pytest.mark.parametrize("name", SHIPPED)
def test_run_config_json_round_trip_keeps_the_strings(name):
    """A run's config.json is compared on resume: the typed fields must dump exactly as the strings of the file."""
    with open(run_config.config_path(name)) as f:
        raw = json.load(f)
    if raw["model"]["class_name"] == "Autoencoder":  # tfddim train-autoencoder's config (its own sections)
        from tfddim.pipelines import train_autoencoder

        cfg = train_autoencoder.load(name)
        dumped = json.loads(json.dumps(cfg.to_dict()))
        for section in ("train", "loss"):
            for key, value in raw.get(section, {}).items():
                assert dumped[section][key] == value and type(dumped[section][key]) is type(value), f"{section}.{key}"
        assert run_config.from_dict(dumped, train_autoencoder.AutoencoderRunConfig) == cfg
        return
    cfg = run_config.load(name)
    assert isinstance(cfg.diffusion.loss, Loss) and isinstance(cfg.diffusion.variance, Variance)
    assert isinstance(cfg.diffusion.decoder, Decoder) and isinstance(cfg.sampling.method, Method)
    assert isinstance(cfg.train.strategy, Strategy) and type(cfg.train.precision) is str
    text = json.dumps(cfg.to_dict())
    dumped = json.loads(text)
    for section in ("diffusion", "train", "sampling"):
        for key, value in raw.get(section, {}).items():
            assert dumped[section][key] == value and type(dumped[section][key]) is type(value), f"{section}.{key}"
    again = run_config.from_dict(dumped)
    assert again == cfg and json.dumps(again.to_dict()) == text


def test_run_config_defaults_dump_as_before():
    dumped = json.loads(json.dumps(run_config.RunConfig().to_dict()))
    assert dumped["diffusion"] == {"schedule": "linear", "num_timesteps": 1000, "zero_terminal_snr": False, "loss": "simple",
                                   "vlb_weight": 0.001, "variance": "fixed_small", "importance_sampling": False,
                                   "decoder": "discretized"}
    assert dumped["sampling"] == {"method": "ddim", "num_steps": 50, "spacing": "uniform", "eta": 0.0, "clip_x0": None}
    assert (dumped["train"]["precision"], dumped["train"]["strategy"]) == ("float32", "default")
    assert str(run_config.SamplingConfig(spacing="ddim25").spacing_spec) == "DdimStride(num_steps=25)"


@pytest.mark.parametrize("override", ["diffusion.loss=l1", "diffusion.variance=big", "diffusion.decoder=x",
                                      "sampling.method=euler", "sampling.spacing=sideways", "train.strategy=tpu",
                                      "train.precision=float8"])
def test_bad_run_config_options_name_the_key(override):
    key, value = override.split("=")
    with pytest.raises(ValueError, match=f"{key}.*{value}"):
        run_config.load("mixture2d", [override])


def test_a_super_resolution_model_trains_on_pairs_with_conditioning_augmentation(tmp_path):
    """(image, low-res) batches; each low-res image noised to s ~ U{0..max} (q_sample with its own ε) and s given
    to the network; the sampler, save and reload take the image through the same conditioning."""
    from tfddim.sampling.conditioning import Conditioning

    net = models.UNet(image_size=8, in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(), num_groups=4, low_res_channels=1)
    sched = schedules.get("cosine", 100)
    model = DiffusionModel(net, sched, (8, 8, 1), low_res_size=4, low_res_augment_max=30, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 8, 8, 1)).astype(np.float32)
    low = tf.nn.avg_pool2d(x, 2, 2, "VALID").numpy()
    x0, cond = model._unpack(((tf.constant(x), tf.constant(low)), tf.zeros([64], tf.int32)))
    _, _, _, aug, _ = model.noisy_batch(x0, cond, model._step_seeds())
    s = aug.low_res_t.numpy()
    assert s.min() >= 0 and s.max() <= 30 and len(set(s)) > 10  # uniform over {0..30}
    ab = sched.alphas_cumprod[s].astype(np.float32)[:, None, None, None]
    eps = (aug.low_res.numpy() - np.sqrt(ab) * low) / np.sqrt(1 - ab)  # the implied ε' is standard normal
    assert abs(eps.std() - 1) < 0.1 and abs(eps.mean()) < 0.1
    history = model.fit(tf.data.Dataset.from_tensor_slices(((x, low), np.zeros(64, np.int32))).repeat().batch(16),
                        epochs=1, steps_per_epoch=3, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    sampler = model.sampler("ddim")
    out = sampler.sample(tf.zeros([2, 8, 8, 1]), [50, 20, 0], low_res=low[:2], seed=0)
    other = sampler.sample(tf.zeros([2, 8, 8, 1]), [50, 20, 0], low_res=low[:2] + 0.5, seed=0)
    assert out.shape == (2, 8, 8, 1) and not np.allclose(out.numpy(), other.numpy())
    with pytest.raises(ValueError, match="low_res_t"):
        sampler.sample(tf.zeros([2, 8, 8, 1]), [50, 20, 0], low_res=low[:2], low_res_t=100, seed=0)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert (again.low_res_size, again.low_res_augment_max) == (4, 30)
    np.testing.assert_allclose(again.sampler("ddim").sample(tf.zeros([2, 8, 8, 1]), [50, 20, 0], low_res=low[:2],
                                                            seed=0).numpy(), out.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="low_res_size"):
        DiffusionModel(net, sched, (8, 8, 1))
    assert isinstance(cond, Conditioning)
