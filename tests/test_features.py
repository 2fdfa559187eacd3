"""Feature networks: the digits classifier trains and round-trips, InceptionV3 plumbing, cached reference statistics."""

import json
import os

import numpy as np
import pytest

from tfddim.data import load_digits
from tfddim.evaluation import features
from tfddim.evaluation.features import (DigitsClassifier, DigitsFeatureNet, FeatureNet, InceptionFeatureNet,
                                        ReferenceStatistics, SpatialFeatureNet, reference_statistics)
from tfddim.pipelines import train_classifier

QUICK_EPOCHS = 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("clf"))
    return out, train_classifier.run(train_classifier.ClassifierConfig(out, epochs=QUICK_EPOCHS, seed=0))


def test_classifier_trains_to_high_accuracy(trained):
    out, result = trained
    # A sanity bound, not the shipped number: 5 epochs (~120 steps) of this CNN reach ~0.98 on the
    # 300 held-out digits (the shipped 20-epoch model ~0.99+); 0.9 leaves room for seed and
    # platform differences while still failing on a broken network, loss or augmentation (chance is 0.1).
    assert result["test_accuracy"] >= 0.9
    with open(os.path.join(out, "classifier.json")) as f:
        saved = json.load(f)
    assert saved == result
    assert set(saved) == {"test_accuracy", "train_accuracy", "epochs", "parameters", "seconds", "identity"}
    assert saved["epochs"] == QUICK_EPOCHS
    assert os.path.getsize(os.path.join(out, "model.keras")) < 1_000_000
    assert not [f for f in os.listdir(out) if ".tmp" in f]  # no temp files left behind


def test_saved_classifier_round_trips(trained):
    out, result = trained
    net = DigitsFeatureNet(out)
    assert isinstance(net, FeatureNet)
    assert net.identity == result["identity"]
    x, y = load_digits("test")
    logits = net.logits(x[:50], batch_size=16)  # several batches
    direct = net.model(x[:50], training=False).numpy()
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-5)
    # same logits from a model rebuilt from its config with the trained weights
    fresh = DigitsClassifier.from_config(net.model.get_config())
    fresh.build((None, 8, 8, 1))
    fresh.set_weights(net.model.get_weights())
    np.testing.assert_allclose(fresh(x[:50]).numpy(), logits, rtol=1e-5, atol=1e-5)
    # the saved model is the one the pipeline evaluated: the same held-out accuracy (up to one digit of 300)
    all_logits = net.logits(x)
    assert abs(np.mean(np.argmax(all_logits, axis=1) == y) - result["test_accuracy"]) <= 1 / 300 + 1e-9
    feats = net.features(x[:20])
    assert feats.shape == (20, 64) and feats.dtype == np.float64
    np.testing.assert_allclose(net.features(x[:20].reshape(20, 64)), feats)  # flattened digits accepted
    with pytest.raises(ValueError, match="images"):
        net.features(np.zeros((2, 4, 4, 1)))


def test_identity_changes_with_weights(trained, tmp_path):
    out, _ = trained
    net = DigitsFeatureNet(os.path.join(out, "model.keras"))
    model = net.model
    model.set_weights([w + 0.01 for w in model.get_weights()])
    model.save(str(tmp_path / "model.keras"))
    other = DigitsFeatureNet(str(tmp_path))
    assert other.identity != net.identity and other.identity.startswith("digits_classifier:")
    assert DigitsFeatureNet(out).identity == net.identity  # same weights, same identity


def test_missing_classifier_says_how_to_train(tmp_path):
    with pytest.raises(ValueError, match="tfddim train-classifier"):
        DigitsFeatureNet(str(tmp_path / "nope"))


def test_inception_random_weights_plumbing():
    import keras
    import tensorflow as tf

    x, _ = load_digits("test")
    net = InceptionFeatureNet(random_weights=True, seed=0)
    assert isinstance(net, FeatureNet) and isinstance(net, SpatialFeatureNet)
    assert net.identity == "inception_v3:random-seed0"
    feats, spatial = net.features_and_spatial(x[:4], batch_size=2)
    assert feats.shape == (4, 2048) and feats.dtype == np.float64
    assert np.all(np.isfinite(feats)) and np.std(feats) > 0
    # sFID's map: the first 7 channels of mixed6 (TF graph mixed_6/conv), 17 x 17 x 7 = 2023-d as in ADM
    assert net.spatial_shape == (17, 17, 7) and spatial.shape == (4, 2023) and np.std(spatial) > 0
    # ... which are the first 7 channels of the block's 1x1 branch (mixed_6/conv proper): mixed6 concatenates
    # conv(1x1, 192) -> batch norm -> ReLU on mixed5 first (checked on the graph: Keras leaves those layers unnamed)
    by_output = {id(layer.output): layer for layer in net.model.layers}
    mixed6 = net.model.get_layer("mixed6")
    relu = by_output[id(mixed6.input[0])]
    conv = by_output[id(by_output[id(relu.input)].input)]
    assert isinstance(relu, keras.layers.Activation) and isinstance(conv, keras.layers.Conv2D)
    assert conv.kernel_size == (1, 1) and conv.filters == 192 and conv.input is net.model.get_layer("mixed5").output
    assert tuple(mixed6.input[0].shape[1:]) == (17, 17, 192)
    # one forward pass for both: the traced graph runs each of the 94 convolutions once
    graph = net._both.get_concrete_function(tf.TensorSpec([2, 8, 8, 1], tf.float32)).graph
    num_convs = sum(isinstance(layer, keras.layers.Conv2D) for layer in net.model.layers)
    assert num_convs == 94 and sum(op.type == "Conv2D" for op in graph.get_operations()) == num_convs
    assert net.logits(x[:4]) is None


def test_inception_missing_weights_errors(tmp_path):
    with pytest.raises(ValueError, match="--inception-weights") as e:
        InceptionFeatureNet()
    assert features.INCEPTION_WEIGHTS_FILE in str(e.value)
    missing = str(tmp_path / "no_such_weights.h5")
    with pytest.raises(ValueError, match="no_such_weights.h5"):
        InceptionFeatureNet(weights_path=missing)


class CountingNet:
    """A fake FeatureNet that counts calls: the caching test is about the cache, not a network."""

    def __init__(self, identity="fake:1"):
        self.identity = identity
        self.calls = 0

    def features(self, images, batch_size=256):
        self.calls += 1
        flat = np.asarray(images, np.float64).reshape(len(images), -1)
        return flat[:, :3] * 2.0 + 1.0

    def logits(self, images, batch_size=256):
        return None


def test_reference_statistics_cache(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (20, 8, 8, 1)).astype(np.float32)
    path = str(tmp_path / "stats" / "ref.npz")
    net = CountingNet()
    assert isinstance(net, FeatureNet)

    stats = reference_statistics(net, images, path)
    mu, sigma = stats.mu, stats.sigma
    assert net.calls == 1 and stats.spatial_mu is None and stats.spatial_sigma is None  # no spatial map
    feats = images.reshape(20, -1)[:, :3].astype(np.float64) * 2.0 + 1.0
    np.testing.assert_allclose(mu, feats.mean(0))
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False))
    with np.load(path) as cached:
        assert str(cached["identity"]) == "fake:1" and int(cached["num_images"]) == 20
        assert len(str(cached["images_sha256"])) == 64

    again = reference_statistics(net, images, path)  # cache hit
    assert net.calls == 1
    np.testing.assert_array_equal(again.mu, mu)
    np.testing.assert_array_equal(again.sigma, sigma)

    other = CountingNet("fake:2")  # different identity: recompute and overwrite
    reference_statistics(other, images, path)
    assert other.calls == 1
    with np.load(path) as cached:
        assert str(cached["identity"]) == "fake:2"

    changed = images.copy()
    changed[0, 0, 0, 0] += 0.5  # different images: recompute
    mu3 = reference_statistics(other, changed, path).mu
    assert other.calls == 2 and not np.allclose(mu3, mu)
    reference_statistics(other, changed, path)
    assert other.calls == 2
    assert sorted(os.listdir(tmp_path / "stats")) == ["ref.npz"]  # no temp files left behind

    with pytest.raises(ValueError, match="images"):
        reference_statistics(net, images[:1], path)


class SpatialCountingNet(CountingNet):
    """A fake SpatialFeatureNet: pooled = CountingNet's, spatial = the first 5 pixels, both from one counted call."""

    def __init__(self, identity="fake:1", spatial_layer="pixels[:5]"):
        super().__init__(identity)
        self.spatial_layer = spatial_layer
        self.spatial_shape = (5, 1, 1)

    def features_and_spatial(self, images, batch_size=256):
        self.calls += 1
        flat = np.asarray(images, np.float64).reshape(len(images), -1)
        return flat[:, :3] * 2.0 + 1.0, flat[:, :5]


def test_reference_statistics_cache_holds_spatial_stats_and_recomputes_caches_without_them(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (20, 8, 8, 1)).astype(np.float32)
    flat = images.reshape(20, -1).astype(np.float64)
    path = str(tmp_path / "ref.npz")
    net = SpatialCountingNet()
    assert isinstance(net, SpatialFeatureNet) and not isinstance(CountingNet(), SpatialFeatureNet)

    stats = reference_statistics(net, images, path)
    assert net.calls == 1  # features and spatial features from the same call
    np.testing.assert_allclose(stats.mu, (flat[:, :3] * 2.0 + 1.0).mean(0))
    np.testing.assert_allclose(stats.spatial_mu, flat[:, :5].mean(0))
    np.testing.assert_allclose(stats.spatial_sigma, np.cov(flat[:, :5], rowvar=False))
    with np.load(path) as cached:
        assert str(cached["spatial_layer"]) == "pixels[:5]" and cached["spatial_sigma"].shape == (5, 5)

    reloaded = reference_statistics(net, images, path)  # cache hit, spatial statistics included
    assert net.calls == 1 and isinstance(reloaded, ReferenceStatistics)
    for name in ("mu", "sigma", "spatial_mu", "spatial_sigma"):
        np.testing.assert_array_equal(getattr(reloaded, name), getattr(stats, name))

    # a cache written before sFID: same identity and images, no spatial statistics
    old = dict(mu=stats.mu, sigma=stats.sigma, identity=np.str_("fake:1"), num_images=np.int64(20),
               images_sha256=np.str_(features._images_digest(images)))
    np.savez(path, **old)
    plain = CountingNet()
    reference_statistics(plain, images, path)
    assert plain.calls == 0  # still valid for a network without a spatial map
    refreshed = reference_statistics(net, images, path)
    assert net.calls == 2  # recomputed for the spatial one, and rewritten with the spatial statistics
    np.testing.assert_array_equal(refreshed.spatial_sigma, stats.spatial_sigma)
    with np.load(path) as cached:
        assert "spatial_mu" in cached.files and str(cached["spatial_layer"]) == "pixels[:5]"
    reference_statistics(net, images, path)
    assert net.calls == 2

    other_layer = SpatialCountingNet(spatial_layer="pixels[:4]")  # same weights, another spatial map: recompute
    reference_statistics(other_layer, images, path)
    assert other_layer.calls == 1
    assert sorted(os.listdir(tmp_path)) == ["ref.npz"]  # no temp files left behind
