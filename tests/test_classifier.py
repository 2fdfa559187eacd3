"""The noise-aware classifier: the attention pool against its formula, training on noised digits, guidance wiring."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from tfddim import data as data_lib
from tfddim import models, sampling
from tfddim.diffusion import schedules
from tfddim.training.classifier import NoisyClassifierModel, accuracy_by_t
from tfddim.models.classifier import AttentionPool2d

T = 50


def tiny_classifier():
    net = models.NoisyClassifier(image_size=8, in_channels=1, num_classes=10, base_channels=8, channel_mult=(1, 1),
                                 num_res_blocks=1, attention_resolutions=(4,), num_heads=2, num_groups=8)
    net((tf.zeros([1, 8, 8, 1]), tf.zeros([1], tf.int32)))
    return net


def test_attention_pool_equals_the_formula():
    """tokens = [mean; x] + pos; out = W_c · softmax(q₀kᵀ/√d)·v per head (ADM AttentionPool2d), in numpy."""
    pool = AttentionPool2d(spatial=2, channels=4, num_heads=2, out_channels=3)
    x = np.random.default_rng(0).standard_normal((2, 2, 2, 4)).astype(np.float32)
    got = pool(x).numpy()
    pos, (wq, bq), (wc, bc) = pool.positional.numpy(), pool.qkv.get_weights(), pool.c_proj.get_weights()
    tokens = x.reshape(2, 4, 4)
    tokens = np.concatenate([tokens.mean(1, keepdims=True), tokens], 1) + pos  # [B, 5, C]
    qkv = (tokens @ wq + bq).reshape(2, 5, 3, 2, 2)  # [B, L, (q,k,v), heads, d]
    q, k, v = qkv[:, 0, 0], qkv[:, :, 1], qkv[:, :, 2]  # q of token 0: [B, heads, d]; k, v: [B, L, heads, d]
    logits = np.einsum("bhd,blhd->bhl", q, k) / np.sqrt(2)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    pooled = np.einsum("bhl,blhd->bhd", w, v).reshape(2, 4)
    np.testing.assert_allclose(got, pooled @ wc + bc, rtol=1e-5, atol=1e-5)


def test_classifier_shapes_round_trip_and_log_prob(tmp_path):
    net = tiny_classifier()
    x, t = tf.random.normal([3, 8, 8, 1]), tf.constant([0, 10, 49])
    logits = net((x, t))
    assert logits.shape == (3, 10) and logits.dtype == tf.float32
    path = str(tmp_path / "c.keras")
    net.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)((x, t)), logits, rtol=1e-6)
    y = tf.constant([1, 4, 9])
    want = tf.nn.log_softmax(logits).numpy()[np.arange(3), y.numpy()]
    np.testing.assert_allclose(net.log_prob_fn()(x, t, y), want, rtol=1e-6)
    assert models.build({"class_name": "NoisyClassifier", "config": net.get_config()}).num_classes == 10
    with pytest.raises(ValueError, match="num_classes"):
        models.NoisyClassifier(num_classes=1)
    with pytest.raises(ValueError, match="image_size"):
        models.NoisyClassifier(image_size=6, channel_mult=(1, 2, 2))


def test_training_on_noised_digits_learns_and_reports_accuracy_by_t():
    keras.utils.set_random_seed(0)
    sched = schedules.get("cosine", T)
    model = NoisyClassifierModel(tiny_classifier(), sched, (8, 8, 1), ema_decay=0.9)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    ds = data_lib.make_dataset(data_lib.DataConfig(source="digits", batch_size=64, random_crop=1), "train")
    history = model.fit(ds, epochs=2, steps_per_epoch=40, verbose=0).history
    assert set(history) == {"loss", "accuracy", "acc_q0", "acc_q1", "acc_q2", "acc_q3"}
    assert history["loss"][-1] < history["loss"][0]
    x, y = data_lib.load_digits("test")
    acc = accuracy_by_t(model.ema_network, sched, x, y, timesteps=(0, T - 1))
    # 80 steps of a tiny net: far above chance (0.1) on clean digits, near chance at the noisiest t
    # (cosine ᾱ_{T−1} ≈ 0: x_t carries almost no signal); the binomial s.e. over 300 digits is ≤ 0.03
    assert acc[0] > 0.5 and acc[T - 1] < 0.3 and acc[0] > acc[T - 1] + 0.2, acc


def test_mirrored_classifier_training_matches_one_device(mirrored_strategy):
    x, y = data_lib.load_digits("train")
    # unshuffled batches, as the diffusion test: the comparison is about the step, not the input order
    ds = tf.data.Dataset.from_tensor_slices((x[:256], y[:256])).batch(32, drop_remainder=True).repeat()

    def train(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = NoisyClassifierModel(tiny_classifier(), schedules.get("cosine", T), (8, 8, 1))
            # SGD: Adam divides by √v, which turns float rounding in near-zero gradients (the
            # zero-initialized convolutions) into lr-sized weight differences (measured: 5e-5)
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        return model, model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0).history

    single, h_a = train(tf.distribute.get_strategy())
    mirrored, h_b = train(mirrored_strategy)
    np.testing.assert_allclose(h_a["loss"], h_b["loss"], rtol=1e-4)
    for a, b in zip(single.network.get_weights(), mirrored.network.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_the_classifier_guides_both_samplers_in_graph(method):
    """∇ₓ log p(y | x_t, t) of the classifier enters the loop: scale 0 is unguided, scale > 0 moves the samples."""
    net, sched = tiny_classifier(), schedules.get("cosine", T)
    eps_fn = lambda x, t, y: 0.1 * x  # noqa: E731  (any ε-net; the guidance term is what is under test)
    guidance = sampling.ClassifierGuidance(net.log_prob_fn())
    x_T = tf.random.stateless_normal([4, 8, 8, 1], seed=[1, 2])
    ts = schedules.spaced_timesteps(T, 5)
    labels = tf.constant([0, 1, 2, 3])
    run = lambda s: sampling.sample(eps_fn, x_T, sched, ts, method=method, seed=0, labels=labels,  # noqa: E731
                                    guidance=guidance, guidance_scale=s, class_conditional=True)
    unguided = sampling.sample(lambda x, t: 0.1 * x, x_T, sched, ts, method=method, seed=0)
    np.testing.assert_allclose(run(0.0), unguided, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(run(5.0) - unguided)) > 1e-3


def test_random_crop_translates_by_at_most_the_padding():
    img = tf.reshape(tf.range(16, dtype=tf.float32), [1, 4, 4, 1])
    out, _ = data_lib.pipeline._finish_batch(tf.repeat(img, 64, 0), tf.zeros([64]), None, 1, tf.constant([0, 1], tf.int64))
    padded = np.pad(img.numpy()[0, :, :, 0], 1, mode="symmetric")
    found = set()
    for o in out.numpy()[..., 0]:
        hits = [(r - 1, c - 1) for r in range(3) for c in range(3) if np.array_equal(padded[r:r + 4, c:c + 4], o)]
        assert hits, o  # every output is one of the 9 shifted windows
        found.update(hits)
    assert len(found) == 9  # 64 draws over 9 offsets: missing one has probability < 9·(8/9)^64 ≈ 0.005
    with pytest.raises(ValueError, match="random_crop"):
        data_lib.DataConfig(source="digits", random_crop=-1)


def test_a_classifier_guided_export_bundles_the_classifier(tmp_path):
    import os

    from conftest import tiny_unet
    from tfddim import export
    from tfddim.export import layout, warmup as serving_warmup

    net, clf, sched = tiny_unet(), tiny_classifier(), schedules.get("cosine", T)
    opts = export.ExportOptions(clip_x0=(-1, 1))
    # the guided loop holds the classifier's gradient: its ONNX graph needs tfddim.export.onnx_gradients
    # (one graph here: each guided conversion costs about a minute of tf2onnx)
    path = export.export_saved_model(net, sched, (8, 8, 1), str(tmp_path / "cg"), 1, opts, classifier=clf, onnx=True,
                                     onnx_signatures=("sample_with_noise",))
    loaded = tf.saved_model.load(path)
    x = tf.random.stateless_normal([3, 8, 8, 1], seed=[3, 4])
    y = tf.constant([0, 5, 9])
    ts = schedules.spaced_timesteps(T, 6)
    for s in (0.0, 4.0):
        got = loaded.signatures["serving_default"](x_T=x, num_steps=tf.constant(6), eta=tf.constant(0.0),
                                                   seed=tf.constant(0, tf.int64), labels=y, guidance_scale=tf.constant(s))
        want = sampling.sample(lambda a, t: net((a, t)), x, sched, ts, labels=y, clip_x0=(-1, 1), guidance_scale=s,
                               guidance=sampling.ClassifierGuidance(clf.log_prob_fn()))
        np.testing.assert_allclose(got["x_0"], want, atol=1e-5)
    unguided = sampling.sample(lambda a, t: net((a, t)), x, sched, ts, clip_x0=(-1, 1))
    assert np.max(np.abs(got["x_0"] - unguided)) > 1e-3  # s = 4 moved the samples
    manifest = layout.read_manifest(path)  # the typed export.json: classifier guidance, an unconditional network
    assert manifest.conditioning == layout.ExportConditioning(layout.GuidanceKind.CLASSIFIER, 10, None, False)
    assert manifest.num_classes == 10
    assert os.path.exists(layout.ExportLayout(path).classifier_config_json)
    assert sorted(loaded.signatures["predict_x0"].structured_input_signature[1]) == ["t", "x_t"]  # the net is unconditional
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be < num_classes"):
        loaded.signatures["serving_default"](x_T=x, num_steps=tf.constant(2), eta=tf.constant(0.0),
                                             seed=tf.constant(0, tf.int64), labels=tf.constant([0, 10, 1]),
                                             guidance_scale=tf.constant(1.0))
    for name, inputs in serving_warmup.read_warmup_requests(path):
        loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
    # ONNX Runtime runs the whole guided loop, gradient included, as the SavedModel does (issue's bound: 1e-4 of
    # the data range [-1, 1]); the noise matters (eta = 1) and so does the scale
    from tfddim.runtime import OnnxSampler, SavedModelSampler

    tf_s, onnx_s = SavedModelSampler(path), OnnxSampler(path)
    assert set(layout.read_onnx_manifest(path).graphs) == {"sample_with_noise"}
    noise = np.random.default_rng(5).standard_normal((6, 3, 8, 8, 1)).astype(np.float32)
    outs = {}
    for s in (0.0, 4.0):
        outs[s] = tf_s.sample_with_noise(x.numpy(), 6, 1.0, noise, labels=[0, 5, 9], guidance_scale=s)
        assert np.max(np.abs(onnx_s.sample_with_noise(x.numpy(), 6, 1.0, noise, labels=[0, 5, 9], guidance_scale=s)
                             - outs[s])) <= 2e-4
    assert np.max(np.abs(outs[4.0] - outs[0.0])) > 1e-3


def test_the_classifier_trainer_shares_the_base_not_the_diffusion_losses(tmp_path):
    """NoisyClassifierModel is a NoisedTrainer, not a DiffusionModel: same t and ε draws, its own config chained to Keras'."""
    import h5py
    from conftest import tiny_unet
    from tfddim.training import DiffusionModel, NoisedTrainer

    sched = schedules.get("cosine", T)
    model = NoisyClassifierModel(tiny_classifier(), sched, (8, 8, 1), ema_decay=0.9, seed=3)
    assert isinstance(model, NoisedTrainer) and not isinstance(model, DiffusionModel)
    assert not any(hasattr(model, a) for a in ("loss_history", "sampler", "vlb_tracker", "importance_probs"))
    config = model.get_config()
    assert {"name", "trainable", "dtype"} <= set(config)  # chained to keras.Model.get_config
    assert sorted(set(config) - {"name", "trainable", "dtype"}) == ["data_shape", "ema_decay", "ema_warmup", "network",
                                                                   "schedule", "seed"]
    # the same (seed, step) draws the same t and ε as a DiffusionModel; labels pass through, never dropped
    diffusion = DiffusionModel(tiny_unet(), sched, (8, 8, 1), seed=3)
    for trainer in (model, diffusion):
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))  # the step seeds read optimizer.iterations
    x0, y = tf.random.stateless_normal([16, 8, 8, 1], seed=[0, 1]), tf.range(16) % 10
    mine, theirs = model.noisy_batch(x0, y, model._step_seeds()), diffusion.noisy_batch(x0, None, diffusion._step_seeds())
    for a, b in zip(mine[:3] + mine[4:], theirs[:3] + theirs[4:]):  # x_t, t, ε, weights
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mine[3], y)
    # the trainer now saves and reloads (registered, config chained)
    path = str(tmp_path / "clf.keras")
    model.save(path)
    back = keras.models.load_model(path)
    assert type(back) is NoisyClassifierModel and back.get_config()["seed"] == 3
    for a, b in zip(back.ema_network.get_weights(), model.ema_network.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a checkpoint from when it derived from DiffusionModel carries two importance-sampling variables: skipped
    weights = str(tmp_path / "old.weights.h5")
    model.save_weights(weights)
    with h5py.File(weights, "a") as f:
        own = f.require_group("vars")
        own.create_dataset("0", data=np.zeros((T, 10), np.float32))
        own.create_dataset("1", data=np.zeros((T,), np.int32))
    back.load_weights(weights)
    for a, b in zip(back.network.get_weights(), model.network.get_weights()):
        np.testing.assert_array_equal(a, b)
