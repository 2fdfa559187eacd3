"""sFID on the shipped digits classifier: the spatial map, one forward pass, and what sFID responds to."""

import numpy as np
import pytest
import tensorflow as tf

from tfddim.data import load_digits
from tfddim.evaluation import features, metrics
from tfddim.pipelines import evaluate


@pytest.fixture(scope="module")
def net():
    return features.DigitsFeatureNet(evaluate.DEFAULT_CLASSIFIER)


@pytest.fixture(scope="module")
def halves():
    """The shipped study's split: half A = 748 training digits, 300 others from half B."""
    x, _ = load_digits("train")
    perm = np.random.default_rng(0).permutation(len(x))
    return x[perm[:748]], x[perm[748:1048]]


def test_spatial_features_are_conv2_first_4_channels_from_one_forward_pass(net, halves):
    x = halves[0][:50]
    assert isinstance(net, features.SpatialFeatureNet)
    assert net.spatial_layer == "conv2[..., :4]" and net.spatial_shape == (8, 8, 4)
    # the documented budget: 256-d, below the 300 samples per cell of the README's study and the 748 of half A
    assert int(np.prod(net.spatial_shape)) == 256 < 300 < 748
    feats, spatial = net.features_and_spatial(x, batch_size=16)  # several batches
    assert feats.shape == (50, 64) and spatial.shape == (50, 256)
    assert feats.dtype == np.float64 and spatial.dtype == np.float64
    model = net.model
    conv2 = model.conv2(model.conv1(x)).numpy()
    np.testing.assert_allclose(spatial, conv2[..., :4].reshape(50, -1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats, model.features(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net.features(x, batch_size=16), feats)
    # one pass: the traced graph holds the network's three convolutions once (a second pass for the
    # spatial map would add conv1 and conv2 again)
    graph = net._both.get_concrete_function(tf.TensorSpec([None, 8, 8, 1], tf.float32)).graph
    assert sum(op.type == "Conv2D" for op in graph.get_operations()) == 3
    assert features.extract(net, x)[1].shape == (50, 256)


def test_sfid_is_zero_for_identical_sets_and_sees_a_shift_more_than_fid(net, halves):
    a, b = halves
    fa, sa = net.features_and_spatial(a)
    fb, sb = net.features_and_spatial(b)
    shifted = np.full_like(b, -1.0)  # every digit one pixel to the right, the background filling in
    shifted[:, :, 1:] = b[:, :, :-1]
    fs, ss = net.features_and_spatial(shifted)
    # identical sets: 0 up to sqrtm's rounding (relative to the trace; 256-d, singular covariance)
    assert abs(metrics.sfid(sa, sa)) <= 1e-8 * np.trace(np.cov(sa, rowvar=False))
    floor_s, shift_s = metrics.sfid(sa, sb), metrics.sfid(sa, ss)
    floor_f, shift_f = metrics.fid(fa, fb), metrics.fid(fa, fs)
    assert 0 < floor_s < shift_s and 0 < floor_f < shift_f
    # Relative to its own noise floor, sFID reacts to the shift more than FID (shipped classifier:
    # FID 2.75 -> 11.2, 4.1x; sFID 0.24 -> 3.1, 13x). Would fail if the "spatial" features were as
    # position-blind as the pooled ones (equal ratios) or more so.
    assert shift_s / floor_s > 2 * (shift_f / floor_f)
