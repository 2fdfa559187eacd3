"""Training targets (ε, x₀, v) and min-SNR-γ weighting: the weight's closed forms, the three weighted losses as one
quantity, compute_losses against numpy, zero-terminal-SNR v-prediction trained end to end, configs and the export.

Algebra the tests rely on (write a = √ᾱ, s = √(1−ᾱ), SNR = a²/s², x_t = a·x₀ + s·ε): for one network output
converted between targets, x̂₀ = (x_t − s·ε̂)/a gives x₀ − x̂₀ = −(s/a)(ε − ε̂), so ‖x₀ − x̂₀‖² = ‖ε − ε̂‖²/SNR;
v = a·ε − s·x₀ gives v − v̂ = a(ε − ε̂) − s(x₀ − x̂₀) = (a + s²/a)(ε − ε̂) = (ε − ε̂)/a, so
‖v − v̂‖² = ‖ε − ε̂‖²/ᾱ = ‖ε − ε̂‖²·(1 + SNR)/SNR. With the min-SNR-γ weights w_ε = min(SNR, γ)/SNR,
w_x0 = min(SNR, γ), w_v = min(SNR, γ)/(SNR + 1), all three weighted losses are min(SNR, γ)/SNR·‖ε − ε̂‖².
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfddim import export, models
from tfddim.data import mixture
from tfddim.diffusion import schedules
from tfddim.diffusion.kinds import Prediction
from tfddim.export import layout
from tfddim.pipelines import config as run_config
from tfddim.pipelines import export as export_pipeline
from tfddim.pipelines import train as train_pipeline
from tfddim.training import DiffusionModel
from tfddim.training.weighting import min_snr_weight

TARGETS = ["epsilon", "sample", "v_prediction"]


def tiny_mlp(seed=0, **kw):
    """The real MLP with fixed, non-trivial weights (its output layer starts at zero)."""
    net = models.MLP(dim=2, hidden_units=16, num_layers=1, embedding_dim=8, **kw)
    net((tf.zeros([1, 2]), tf.zeros([1], tf.int32)))
    rng = np.random.default_rng(seed)
    net.set_weights([w + 0.3 * rng.standard_normal(w.shape).astype(w.dtype) for w in net.get_weights()])
    return net


# ------------------------------------------------------------------ the weight function
def test_min_snr_weight_closed_forms_including_snr_to_zero_and_above_gamma():
    g = 5.0
    snr = np.array([0.0, 1e-300, 1e-8, 0.5, 5.0, 12.0])
    want = {
        "epsilon": [1.0, 1.0, 1.0, 1.0, 1.0, 5.0 / 12.0],  # min(SNR,γ)/SNR; 1 at SNR = 0 (its limit)
        "sample": [0.0, 1e-300, 1e-8, 0.5, 5.0, 5.0],  # min(SNR,γ)
        "v_prediction": [0.0, 1e-300, 1e-8 / (1 + 1e-8), 0.5 / 1.5, 5.0 / 6.0, 5.0 / 13.0],  # min(SNR,γ)/(SNR+1)
    }
    for kind, expected in want.items():
        got = min_snr_weight(tf.constant(snr, tf.float64), g, kind).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, err_msg=kind)
        assert min_snr_weight(tf.constant(snr, tf.float32), g, Prediction(kind)).dtype == tf.float32
    for bad in (0.0, -1.0, float("inf"), float("nan"), True, "5"):
        with pytest.raises(ValueError, match="gamma"):
            min_snr_weight(snr, bad, "epsilon")
    with pytest.raises(ValueError, match="unknown prediction_type 'x0'"):
        min_snr_weight(snr, g, "x0")


@pytest.mark.parametrize("gamma", [None, 5.0, 0.3])
def test_the_three_weighted_losses_are_one_quantity(gamma):
    """‖ε−ε̂‖²·w_ε = ‖x₀−x̂₀‖²·w_x0 = ‖v−v̂‖²·w_v for one output converted between targets (module docstring);
    through compute_losses, at levels with SNR far below and far above γ."""
    sched = schedules.get("linear", 1000)
    rng = np.random.default_rng(3)
    t = np.array([0, 10, 100, 300, 500, 700, 900, 999], np.int32)
    x0, eps, eps_hat = (rng.standard_normal((len(t), 2)) for _ in range(3))
    ab = sched.alphas_cumprod[t][:, None]
    snr = sched.snr[t]
    assert snr.min() < 0.3 and snr.max() > 5  # both sides of every γ used
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    x0_hat = (x_t - np.sqrt(1 - ab) * eps_hat) / np.sqrt(ab)
    outputs = {"epsilon": eps_hat, "sample": x0_hat, "v_prediction": np.sqrt(ab) * eps_hat - np.sqrt(1 - ab) * x0_hat}
    d_eps = np.mean((eps - eps_hat) ** 2, axis=1)
    np.testing.assert_allclose(np.mean((x0 - x0_hat) ** 2, axis=1), d_eps / snr, rtol=1e-9)
    v = np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0
    np.testing.assert_allclose(np.mean((v - outputs["v_prediction"]) ** 2, axis=1), d_eps * (1 + snr) / snr, rtol=1e-9)
    common = np.minimum(snr, gamma) / snr * d_eps if gamma is not None else None
    losses = {}
    for kind, out in outputs.items():
        model = DiffusionModel(tiny_mlp(), sched, (2,), decoder="gaussian", prediction_type=kind, min_snr_gamma=gamma)
        f32 = lambda a: tf.constant(a, tf.float32)  # noqa: E731
        loss, _, _ = model.compute_losses(lambda inputs, training: f32(out), f32(x0), f32(x_t), tf.constant(t), f32(eps),
                                          None, tf.ones([len(t)]), False)
        losses[kind] = loss.numpy()
    if gamma is None:  # unweighted: the targets' MSEs differ by exactly the factors above
        np.testing.assert_allclose(losses["sample"], d_eps / snr, rtol=2e-4)
        np.testing.assert_allclose(losses["v_prediction"], d_eps * (1 + snr) / snr, rtol=2e-4)
        np.testing.assert_allclose(losses["epsilon"], d_eps, rtol=2e-4)
    else:
        for kind in TARGETS:
            np.testing.assert_allclose(losses[kind], common, rtol=2e-4, err_msg=kind)


# ------------------------------------------------------------------ compute_losses against numpy
@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("gamma", [None, 2.0])
def test_compute_losses_against_a_numpy_computation(kind, gamma):
    """The real MLP with fixed weights on a tiny batch: loss = w(SNR)·mean(‖target − f(x_t, t)‖²), computed in numpy."""
    sched = schedules.get("cosine", 100)
    net = tiny_mlp(seed=1)
    model = DiffusionModel(net, sched, (2,), decoder="gaussian", prediction_type=kind, min_snr_gamma=gamma)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))  # the step's seeds follow the optimizer's step
    rng = np.random.default_rng(4)
    x0 = rng.standard_normal((6, 2)).astype(np.float32)
    x_t, t, eps, _, w = model.noisy_batch(tf.constant(x0), None, model._step_seeds())
    loss, mse, vlb = (v.numpy() for v in model.compute_losses(net, tf.constant(x0), x_t, t, eps, None, w, False))
    out = net((x_t, t)).numpy().astype(np.float64)
    ab = sched.alphas_cumprod[t.numpy()][:, None]
    e = eps.numpy().astype(np.float64)
    target = {"epsilon": e, "sample": x0, "v_prediction": np.sqrt(ab) * e - np.sqrt(1 - ab) * x0}[kind]
    want_mse = np.mean((target - out) ** 2, axis=1)
    snr = sched.snr[t.numpy()]
    weight = 1.0 if gamma is None else {"epsilon": np.minimum(snr, gamma) / snr, "sample": np.minimum(snr, gamma),
                                        "v_prediction": np.minimum(snr, gamma) / (snr + 1)}[kind]
    np.testing.assert_allclose(mse, want_mse, rtol=1e-5)
    np.testing.assert_allclose(loss, weight * want_mse, rtol=1e-5)
    assert np.all(np.isfinite(vlb))


def test_hybrid_mean_sees_the_target_converted_with_a_stop_gradient():
    """L_hybrid with v-prediction: the bound's x̂₀ = √ᾱ·x_t − √(1−ᾱ)·v̂ is frozen; only the variance output moves."""
    sched = schedules.get("linear", 100, zero_terminal_snr=True)
    net = tiny_mlp(learned_variance=True)
    model = DiffusionModel(net, sched, (2,), loss="hybrid", decoder="gaussian", prediction_type="v_prediction",
                           min_snr_gamma=5.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x0 = tf.constant(np.random.default_rng(1).normal(size=(32, 2)), tf.float32)
    x_t, t, eps, _, w = model.noisy_batch(x0, None, model._step_seeds())
    with tf.GradientTape() as tape:
        out = net((x_t, t), training=True)
        tape.watch(out)
        loss, mse, vlb = model.compute_losses(lambda inputs, training: out, x0, x_t, t, eps, None, w, True)
        target = tf.reduce_mean(vlb)
    g = tape.gradient(target, out).numpy()
    assert np.all(g[:, :2] == 0) and np.any(g[:, 2:] != 0)
    assert np.all(np.isfinite(loss.numpy())) and np.all(np.isfinite(vlb.numpy()))


def test_refused_combinations_name_the_option():
    ztsnr = schedules.get("linear", 100, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="prediction_type 'epsilon' cannot be trained on a zero-terminal-SNR"):
        DiffusionModel(tiny_mlp(), ztsnr, (2,), decoder="gaussian")
    with pytest.raises(ValueError, match="min_snr_gamma weights the MSE term, and loss 'vlb'"):
        DiffusionModel(tiny_mlp(), schedules.get("linear", 100), (2,), loss="vlb", decoder="gaussian", min_snr_gamma=5)
    with pytest.raises(ValueError, match="min_snr_gamma must be a finite number > 0"):
        DiffusionModel(tiny_mlp(), schedules.get("linear", 100), (2,), decoder="gaussian", min_snr_gamma=-1)
    with pytest.raises(ValueError, match="unknown prediction_type 'x0'"):
        DiffusionModel(tiny_mlp(), schedules.get("linear", 100), (2,), decoder="gaussian", prediction_type="x0")
    model = DiffusionModel(tiny_mlp(), ztsnr, (2,), decoder="gaussian", prediction_type="v_prediction")
    assert model.sampler().config.prediction_type is Prediction.V
    with pytest.raises(ValueError, match="the model predicts 'v_prediction'"):
        model.sampler(prediction_type="epsilon")


def test_get_config_round_trip_and_old_configs_load_as_epsilon(tmp_path):
    model = DiffusionModel(tiny_mlp(), schedules.get("linear", 100), (2,), decoder="gaussian", prediction_type="sample",
                           min_snr_gamma=5)
    saved = json.loads(json.dumps(model.get_config()))
    assert (saved["prediction_type"], saved["min_snr_gamma"]) == ("sample", 5.0)
    back = DiffusionModel.from_config(saved)
    assert (back.prediction_type, back.min_snr_gamma) == (Prediction.SAMPLE, 5.0)
    assert json.dumps(back.get_config(), sort_keys=True) == json.dumps(saved, sort_keys=True)
    old = {k: v for k, v in saved.items() if k not in ("prediction_type", "min_snr_gamma")}  # a model.keras from before
    legacy = DiffusionModel.from_config(old)
    assert (legacy.prediction_type, legacy.min_snr_gamma) == (Prediction.EPSILON, None)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    path = str(tmp_path / "dm.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert (loaded.prediction_type, loaded.min_snr_gamma) == (Prediction.SAMPLE, 5.0)


# ------------------------------------------------------------------ end to end: zero terminal SNR + v-prediction
# Three unequally weighted components; a sampler that ignored the weights (1/3 each) would miss the largest by 0.22.
E2E_MIX = mixture.ring(3, radius=1.0, std=0.15, weights=[0.15, 0.3, 0.55])
E2E_SAMPLES = 4000
Z = 4.0  # standard errors of a binomial proportion at E2E_SAMPLES (as tests/test_sampling.py)
# Model error of 600 Adam steps of a 2×64 MLP: measured |ŵ − w| ≤ 0.018 over seeds 0, 1, 2 (4000 samples, so
# sampling error included); the allowance is 0.03 per component, on top of the Z-s.e. sampling tolerance.
MODEL_ALLOWANCE = 0.03
# Samples within 3σ of a component mean: exactly 1 − e^{−4.5} = 0.989 for these isotropic components; the trained
# model blurs them (measured 0.92–0.95); 0.85 is its allowance. A blob that only split correctly would fail it.
NEAR_MIN = 0.85


def test_zero_terminal_snr_v_prediction_with_min_snr_learns_the_mixture_weights():
    seed = 0
    x, _ = E2E_MIX.sample(20000, np.random.default_rng(seed))
    keras.utils.set_random_seed(seed)
    sched = schedules.get("linear", 1000, zero_terminal_snr=True)
    assert sched.alphas_cumprod[-1] == 0.0 and sched.snr[-1] == 0.0
    net = models.MLP(dim=2, hidden_units=64, num_layers=2, embedding_dim=32)
    model = DiffusionModel(net, sched, (2,), decoder="gaussian", prediction_type="v_prediction", min_snr_gamma=5.0,
                           ema_decay=0.99, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    ds = tf.data.Dataset.from_tensor_slices(x.astype(np.float32)).repeat().shuffle(2048, seed=seed).batch(256)
    history = model.fit(ds, epochs=1, steps_per_epoch=600, verbose=0).history
    assert np.isfinite(history["loss"][-1])
    ts = schedules.spaced_timesteps(1000, 50, "trailing")
    assert ts[0] == 999 and sched.alphas_cumprod[ts[0]] == 0.0  # the loop starts from pure noise
    x_T = np.random.default_rng(seed + 100).standard_normal((E2E_SAMPLES, 2)).astype(np.float32)
    out = model.sampler(method="ddim").sample(x_T, ts).numpy()
    assert np.all(np.isfinite(out))
    w = np.bincount(E2E_MIX.assign(out), minlength=3) / len(out)
    tol = Z * np.sqrt(E2E_MIX.weights * (1 - E2E_MIX.weights) / len(out)) + MODEL_ALLOWANCE
    assert np.all(np.abs(w - E2E_MIX.weights) < tol), (w, tol)
    dist = np.min(np.linalg.norm(out[:, None, :] - E2E_MIX.means[None], axis=-1), axis=1) / 0.15
    assert np.mean(dist < 3) > NEAR_MIN


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize("override, match", [
    ("diffusion.prediction_type=x0", "diffusion.prediction_type.*x0"),
    ("diffusion.min_snr_gamma=-1", "diffusion.min_snr_gamma.*-1"),
    ("diffusion.min_snr_gamma=0", "diffusion.min_snr_gamma.*0"),
    ("diffusion.min_snr_gamma=five", "diffusion.min_snr_gamma must be float"),
])
def test_bad_target_configs_name_the_key(override, match):
    with pytest.raises(ValueError, match=match):
        run_config.load("mixture2d", [override])


def test_refused_config_combinations_name_the_keys():
    with pytest.raises(ValueError, match="diffusion.min_snr_gamma.*diffusion.loss 'vlb'"):
        run_config.load("mixture2d", ["diffusion.min_snr_gamma=5", "diffusion.loss=vlb"])
    with pytest.raises(ValueError, match="diffusion.prediction_type 'epsilon'.*diffusion.zero_terminal_snr"):
        run_config.load("mixture2d", ["diffusion.zero_terminal_snr=true"])


def test_config_round_trips_and_builds_the_model():
    cfg = run_config.load("mixture2d", ["diffusion.prediction_type=v_prediction", "diffusion.min_snr_gamma=5",
                                        "diffusion.zero_terminal_snr=true", "diffusion.num_timesteps=100",
                                        "model.config.hidden_units=16", "model.config.embedding_dim=8"])
    assert (cfg.diffusion.prediction_type, cfg.diffusion.min_snr_gamma) == (Prediction.V, 5.0)
    text = json.dumps(cfg.to_dict())  # what the run's config.json holds
    dumped = json.loads(text)
    assert (dumped["diffusion"]["prediction_type"], dumped["diffusion"]["min_snr_gamma"]) == ("v_prediction", 5.0)
    again = run_config.from_dict(dumped)
    assert again == cfg and json.dumps(again.to_dict()) == text
    model = train_pipeline.build_model(cfg, (2,), None)
    assert (model.prediction_type, model.min_snr_gamma) == (Prediction.V, 5.0)
    assert model.sampler().config.prediction_type is Prediction.V
    # at their defaults the new keys stay out of config.json, so a run folder written before them still resumes
    default = run_config.load("mixture2d").to_dict()["diffusion"]
    assert "prediction_type" not in default and "min_snr_gamma" not in default
    assert run_config.from_dict(run_config.load("mixture2d").to_dict()).diffusion.prediction_type is Prediction.EPSILON


# ------------------------------------------------------------------ export
def test_export_of_a_v_model_records_and_uses_its_prediction_type(tmp_path):
    options = export_pipeline._export_options({"diffusion": {"prediction_type": "v_prediction"},
                                               "sampling": {"spacing": "trailing"}})
    assert options.prediction_type is Prediction.V
    assert export_pipeline._export_options({"sampling": {}}).prediction_type is Prediction.EPSILON  # an old run
    sched = schedules.get("linear", 50, zero_terminal_snr=True)
    model = DiffusionModel(tiny_mlp(seed=2), sched, (2,), decoder="gaussian", prediction_type="v_prediction")
    path = export.export_saved_model(model.ema_network, sched, (2,), str(tmp_path / "v"), 1, options, warmup=False)
    assert layout.read_manifest(path).prediction_type is Prediction.V
    assert json.load(open(layout.ExportLayout(path).export_json))["prediction_type"] == "v_prediction"
    loaded = tf.saved_model.load(path)
    x = tf.random.stateless_normal([5, 2], seed=[0, 3])
    got = loaded.signatures["sample_with_noise"](x_T=x, num_steps=tf.constant(6), eta=tf.constant(0.0),
                                                 noise=tf.zeros([0, 5, 2]))["x_0"].numpy()
    want = model.sampler().sample(x, schedules.spaced_timesteps(50, 6, "trailing")).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # starts at ᾱ = 0: only a v-sampler is finite there
    t = tf.constant([0, 20, 49])
    pred = loaded.signatures["predict_x0"](x_t=x[:3], t=t)
    v = model.ema_network((x[:3], t)).numpy()
    ab = sched.alphas_cumprod[[0, 20, 49]][:, None]
    np.testing.assert_allclose(pred["x_0"].numpy(), np.sqrt(ab) * x[:3].numpy() - np.sqrt(1 - ab) * v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pred["eps"].numpy(), np.sqrt(1 - ab) * x[:3].numpy() + np.sqrt(ab) * v, rtol=1e-5, atol=1e-5)
