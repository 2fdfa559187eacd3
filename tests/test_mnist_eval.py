"""MNIST evaluation: the DigitsClassifier at 28x28 / 14x14, the shipped MNIST classifiers, `features="auto"` for
mnist data, and the super-resolution helpers (per-image PSNR, the bilinear baseline)."""

import json
import os

import numpy as np
import pytest

from tfddim.data import load_mnist
from tfddim.evaluation import metrics
from tfddim.evaluation.features import DigitsClassifier, DigitsFeatureNet, SpatialFeatureNet
from tfddim.evaluation.upsampling import bilinear_upsample, psnr
from tfddim.pipelines import evaluate, train_classifier

SHIPPED = {28: evaluate.mnist_classifier(28), 14: evaluate.mnist_classifier(14)}


@pytest.fixture(scope="module")
def mnist_test():
    return {s: load_mnist("test", s) for s in SHIPPED}


@pytest.fixture(scope="module")
def shipped():
    return {s: DigitsFeatureNet(path) for s, path in SHIPPED.items()}


# ----------------------------------------------------------------------------- the generalised CNN
@pytest.mark.parametrize("size, final, spatial", [(28, 7, ("conv3", 14)), (14, 7, ("conv2", 14)), (8, 4, ("conv2", 8))])
def test_classifier_sizes_config_round_trip_and_shapes(size, final, spatial):
    model = DigitsClassifier(image_size=size)
    model.build((None, size, size, 1))
    assert model.get_config()["image_size"] == size
    assert model.final_size == final and (model.spatial_layer_name, model.spatial_size) == spatial
    x = np.random.default_rng(0).uniform(-1, 1, (3, size, size, 1)).astype(np.float32)
    assert model(x).shape == (3, 10)
    feats, mid = model.features_and_map(x)
    assert feats.shape == (3, 64) and tuple(mid.shape) == (3, spatial[1], spatial[1], 64)
    fresh = DigitsClassifier.from_config(model.get_config())
    fresh.build((None, size, size, 1))
    fresh.set_weights(model.get_weights())
    np.testing.assert_allclose(fresh(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=f"\\[B, {size}, {size}, 1\\]"):
        DigitsClassifier(image_size=size).build((None, size + 2, size + 2, 1))


def test_a_config_without_image_size_is_the_8x8_network():
    config = DigitsClassifier().get_config()
    del config["image_size"]  # as saved before the argument existed
    model = DigitsClassifier.from_config(config)
    assert model.image_size == 8 and model.pool2 is None
    with pytest.raises(ValueError, match="image_size"):
        DigitsClassifier(image_size=3)


# ----------------------------------------------------------------------------- the shipped classifiers
@pytest.mark.parametrize("size", sorted(SHIPPED))
def test_shipped_mnist_classifier_loads_and_is_accurate_on_held_out_digits(size, shipped, mnist_test):
    net = shipped[size]
    assert isinstance(net, SpatialFeatureNet) and net.image_size == size
    with open(os.path.join(SHIPPED[size], "classifier.json")) as f:
        saved = json.load(f)
    assert net.identity == saved["identity"] == f"digits_classifier_{size}x{size}:" + net.identity.split(":")[1]
    assert saved["source"] == "mnist" and saved["image_size"] == size and saved["num_test"] == 1000
    x, y = mnist_test[size]
    acc = metrics.class_accuracy(net.logits(x, batch_size=500), y)
    assert acc >= 0.95
    assert abs(acc - saved["test_accuracy"]) <= 1 / 1000 + 1e-9  # the saved model is the one evaluated
    feats, spatial = net.features_and_spatial(x[:10])
    assert feats.shape == (10, 64) and spatial.shape == (10, int(np.prod(net.spatial_shape)))
    assert net.spatial_shape == (14, 14, 4)  # 784-d at both sizes (conv3 at 28x28, conv2 at 14x14)
    np.testing.assert_allclose(net.features(x[:10].reshape(10, size * size)), feats)  # flattened accepted
    with pytest.raises(ValueError, match=f"\\[N, {size}, {size}, 1\\]"):
        net.features(np.zeros((2, 8, 8, 1), np.float32))


def test_fid_of_held_out_digits_is_small_next_to_shifted_and_blurred_ones(shipped, mnist_test):
    net = shipped[28]
    x_test, _ = mnist_test[28]
    x_train, _ = load_mnist("train")
    n = 1000
    ref = net.features(x_train[:n], batch_size=500)
    real = metrics.fid(net.features(x_test, batch_size=500), ref)
    # two pixels right (background -1 comes in) and a 3x3 box blur: the same digits, degraded
    shifted = np.concatenate([np.full_like(x_test[:, :, :2], -1.0), x_test[:, :, :-2]], axis=2)
    pad = np.pad(x_test[..., 0], ((0, 0), (1, 1), (1, 1)), constant_values=-1.0)
    blurred = np.mean([pad[:, i:i + 28, j:j + 28] for i in range(3) for j in range(3)], axis=0)[..., None]
    worse = min(metrics.fid(net.features(shifted, batch_size=500), ref),
                metrics.fid(net.features(blurred, batch_size=500), ref))
    assert real * 3 < worse, (real, worse)


# ----------------------------------------------------------------------------- evaluate: features="auto"
def test_auto_features_pick_the_mnist_classifier_of_the_data_size():
    for size in (28, 14):
        net, kind = evaluate._feature_net("auto", "mnist", 3, evaluate.DEFAULT_CLASSIFIER, None, size)
        assert kind == "digits" and net.image_size == size
        assert os.path.dirname(net.path) == SHIPPED[size]
    net, kind = evaluate._feature_net("auto", "digits", 3, evaluate.DEFAULT_CLASSIFIER, None, 8)
    assert kind == "digits" and net.image_size == 8
    with pytest.raises(ValueError, match="takes 8x8 images; the data are 28x28"):  # an explicit folder is used as given
        evaluate._feature_net("digits", "mnist", 3, os.path.dirname(evaluate.DEFAULT_CLASSIFIER) + "/digits_classifier/",
                              None, 28)


def test_auto_features_say_how_to_train_a_missing_mnist_classifier(monkeypatch, tmp_path):
    monkeypatch.setattr(evaluate, "REPO_ROOT", str(tmp_path))
    with pytest.raises(ValueError, match="train-classifier --source mnist --image-size 7"):
        evaluate._feature_net("auto", "mnist", 3, evaluate.DEFAULT_CLASSIFIER, None, 7)


# ----------------------------------------------------------------------------- train-classifier --source mnist
def test_classifier_config_defaults_by_source():
    cfg = train_classifier.ClassifierConfig()
    assert (cfg.out_dir, cfg.epochs, cfg.size) == (train_classifier.DEFAULT_OUT_DIR, 20, 8)
    cfg = train_classifier.ClassifierConfig(source="mnist")
    assert (cfg.out_dir, cfg.epochs, cfg.size) == (os.path.join("saved_models", "mnist_classifier"), 10, 28)
    cfg = train_classifier.ClassifierConfig(source="mnist", image_size=14)
    assert (cfg.out_dir, cfg.size) == (os.path.join("saved_models", "mnist14_classifier"), 14)
    for bad in (dict(source="mnist", image_size=5), dict(source="digits", image_size=28), dict(source="cifar"),
                dict(source="mnist", out_dir="saved_models/digits_classifier")):  # never over the 8x8 classifier
        with pytest.raises(ValueError):
            train_classifier.ClassifierConfig(**bad)


def test_train_classifier_on_mnist_writes_a_loadable_classifier(tmp_path):
    out = str(tmp_path / "m7")
    result = train_classifier.run(train_classifier.ClassifierConfig(out, epochs=1, source="mnist", image_size=7))
    assert result["source"] == "mnist" and result["image_size"] == 7 and result["num_train"] == 4000
    assert result["test_accuracy"] > 0.5  # one epoch on 7x7 digits; chance is 0.1
    net = DigitsFeatureNet(out)
    assert net.identity == result["identity"] and net.image_size == 7 and net.spatial_shape == (7, 7, 4)


# ----------------------------------------------------------------------------- SR helpers
def test_psnr_matches_a_hand_computation():
    x = np.zeros((2, 2, 2, 1))
    y = x.copy()
    y[0, 0, 0, 0] = 1.0  # image 0: MSE = 1/4 → 10·log10(4 / 0.25) = 10·log10(16)
    y[1] = 0.5  # image 1: MSE = 1/4 too
    y[1, 0, 0, 0] = -0.5  # still 0.25 everywhere
    assert psnr(x, y) == pytest.approx(10 * np.log10(16))
    y[1] = 0.1  # image 1: MSE = 0.01 → 10·log10(400)
    assert psnr(x, y) == pytest.approx((10 * np.log10(16) + 10 * np.log10(400)) / 2)
    assert psnr(x, y, data_range=1.0) == pytest.approx((10 * np.log10(4) + 10 * np.log10(100)) / 2)
    assert psnr(x, x) == np.inf
    with pytest.raises(ValueError, match="shape"):
        psnr(x, y[:1])


def test_bilinear_upsample_of_a_constant_is_that_constant():
    low = np.full((2, 7, 7, 1), 0.3, np.float32)
    up = bilinear_upsample(low, 14)
    assert up.shape == (2, 14, 14, 1) and up.dtype == np.float32
    np.testing.assert_allclose(up, 0.3, atol=1e-6)
    assert bilinear_upsample(low, (28, 21)).shape == (2, 28, 21, 1)
    x14, _ = load_mnist("test", 14)
    x28, _ = load_mnist("test", 28)
    baseline = psnr(bilinear_upsample(x14[:100], 28), x28[:100])
    assert 10 < baseline < 40  # a real but imperfect baseline (dB, range 2)
