"""Networks: one shared contract over tiny configs, then the pieces against hand computations."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfddim import models
from tfddim.models import MLP, UNet, timestep_embedding
from tfddim.models.blocks import AttentionBlock, GroupNorm, ResBlock, downsample_2x, group_count, upsample_2x

# Keras' own model.save()/get_weights() call np.array(variable), which numpy 2 flags; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

UNET = dict(image_size=8, in_channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,))
CONFIGS = {
    "unet_adagn_heads": ("UNet", dict(UNET, num_heads=2)),
    "unet_add_headch_updown_dropout": ("UNet", dict(
        UNET, in_channels=1, attention_resolutions=(8,), num_head_channels=8, use_scale_shift_norm=False,
        resblock_updown=True, dropout=0.1)),
    "unet_class_learned_var": ("UNet", dict(UNET, num_classes=3, learned_variance=True, num_groups=4)),
    "unet_super_resolution_class": ("UNet", dict(UNET, num_classes=3, low_res_channels=2, num_groups=4)),
    "mlp": ("MLP", dict(dim=2, hidden_units=32, num_layers=2, embedding_dim=16)),
    "mlp_class_learned_var": ("MLP", dict(dim=3, hidden_units=32, num_layers=2, embedding_dim=17, num_classes=4,
                                          learned_variance=True, dropout=0.1)),
}


def make_inputs(model, batch, seed=0):
    """(x_t, t[, y]) for ``model``: every label including the null one, timesteps across [0, 999]."""
    rng = np.random.default_rng(seed)
    shape = (model.image_size, model.image_size, model.in_channels) if isinstance(model, UNet) else (model.dim,)
    x = tf.constant(rng.standard_normal((batch,) + shape), tf.float32)
    t = tf.constant(rng.integers(0, 1000, batch), tf.int32)
    inputs = (x, t)
    if model.num_classes is not None:
        inputs += (tf.constant(np.arange(batch) % (model.num_classes + 1), tf.int32),)
    if getattr(model, "low_res_channels", None):  # a half-size image and its augmentation level
        low = rng.standard_normal((batch, model.image_size // 2, model.image_size // 2, model.low_res_channels))
        inputs += (tf.constant(low, tf.float32), tf.constant(rng.integers(0, 1000, batch), tf.int32))
    return inputs


def perturb(model, seed=0, scale=0.1):
    """Add noise to every weight: the zero-initialized output layers make a fresh model output exactly 0."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(v.value + scale * rng.standard_normal(v.shape).astype(np.float32))


def copy_weights(source, target):
    for src, dst in zip(source.weights, target.weights, strict=True):
        dst.assign(src.value)


def value(variable):
    return np.asarray(variable.value)


def expected_channels(model):
    c = model.in_channels if isinstance(model, UNet) else model.dim
    return 2 * c if model.learned_variance else c


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def built(request):
    """A built, perturbed model per config, shared by the contract tests (which do not modify it)."""
    class_name, config = CONFIGS[request.param]
    model = models.build({"class_name": class_name, "config": config})
    inputs = make_inputs(model, 3)
    model(inputs)
    perturb(model)
    return model, inputs


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- the contract every model honours -----------------------------------------------------------


def test_contract_output_shape_and_dtype(built):
    model, inputs = built
    out = model(inputs)
    assert out.dtype == tf.float32
    assert tuple(out.shape) == tuple(inputs[0].shape[:-1]) + (expected_channels(model),)
    assert np.all(np.isfinite(out)) and float(tf.math.reduce_std(out)) > 1e-3


def test_contract_config_round_trip(built):
    model, inputs = built
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    clone(inputs)
    copy_weights(model, clone)
    np.testing.assert_array_equal(clone(inputs), model(inputs))
    # the dict form used by config files accepts get_config() output too
    again = models.build({"class_name": type(model).__name__, "config": config})
    assert type(again) is type(model) and again.get_config() == config


def test_contract_save_and_load(built, tmp_path):
    model, inputs = built
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # registered classes: no custom_objects
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(inputs), model(inputs))


def test_contract_jit_compile_dynamic_batch(built):
    model, inputs = built
    # An unknown batch dimension in the traced signature: reading a static batch size would fail here.
    spec = [tf.TensorSpec([None] + list(a.shape[1:]), a.dtype) for a in inputs]
    fn = tf.function(lambda *a: model(a, training=False), jit_compile=True, input_signature=spec)
    for batch in (2, 5):
        batch_inputs = make_inputs(model, batch, seed=batch)
        out = fn(*batch_inputs)
        assert tuple(out.shape)[0] == batch and out.dtype == tf.float32
        np.testing.assert_allclose(out, model(batch_inputs, training=False), rtol=1e-4, atol=1e-5)


def test_contract_mixed_float16_outputs_float32(built, mixed_float16):
    model, inputs = built
    config = model.get_config()
    del config["dtype"]  # else from_config restores the float32 policy it was saved with
    half = type(model).from_config(config)
    out = half(inputs)
    assert half.compute_dtype == "float16" and half.time_dense1.compute_dtype == "float16"
    assert out.dtype == tf.float32
    copy_weights(model, half)  # variables stay float32 under a mixed policy
    out = half(inputs)
    assert out.dtype == tf.float32 and np.all(np.isfinite(out))
    reference = model(inputs)
    scale = float(tf.reduce_max(tf.abs(reference)))
    np.testing.assert_allclose(out, reference, atol=0.02 * scale)


# --- conditioning ------------------------------------------------------------------------------


def test_timestep_embedding_by_hand():
    t = tf.constant([0, 1, 7, 999], tf.int32)
    emb = timestep_embedding(t, 7)  # odd: three frequencies, sin then cos, then a zero column
    assert emb.dtype == tf.float32 and tuple(emb.shape) == (4, 7)
    freqs = [1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3)]
    for row, step in zip(np.asarray(emb), [0, 1, 7, 999]):
        expected = [math.sin(step * f) for f in freqs] + [math.cos(step * f) for f in freqs] + [0.0]
        np.testing.assert_allclose(row, expected, atol=2e-4)  # float32 arguments up to 999 rad
    np.testing.assert_allclose(timestep_embedding(t, 4, max_period=100)[2], [math.sin(7), math.sin(0.7),
                                                                             math.cos(7), math.cos(0.7)], atol=1e-6)


def test_timestep_reaches_the_output():
    for model in (UNet(**UNET), MLP(dim=2, hidden_units=32, num_layers=2, embedding_dim=16)):
        x, _ = make_inputs(model, 1)
        x = tf.repeat(x, 3, axis=0)
        model((x, tf.constant([0, 0, 0])))
        perturb(model)
        out = np.asarray(model((x, tf.constant([0, 0, 500]))))
        np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-6)  # same input, same t
        assert np.abs(out[2] - out[0]).max() > 1e-3 * np.abs(out[0]).max()


def test_labels_change_the_output_and_are_range_checked():
    for model in (UNet(**dict(UNET, num_classes=3)), MLP(dim=2, hidden_units=32, embedding_dim=16, num_classes=3)):
        x, t, _ = make_inputs(model, 1)
        x, t = tf.repeat(x, 4, axis=0), tf.repeat(t, 4, axis=0)
        model((x, t, tf.constant([0, 1, 2, 3])))
        perturb(model)
        out = np.asarray(model((x, t, tf.constant([0, 0, 1, 3]))))  # 3 = num_classes, the null label
        np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-6)
        assert np.abs(out[2] - out[0]).max() > 1e-3 * np.abs(out[0]).max()
        assert np.abs(out[3] - out[0]).max() > 1e-3 * np.abs(out[0]).max()
        for bad in (4, -1):
            with pytest.raises(ValueError, match="y must hold class labels in \\[0, 3\\]"):
                model((x, t, tf.constant([0, 1, 2, bad])))
        with pytest.raises(ValueError, match="needs labels y"):
            model((x, t))


def test_unconditional_model_rejects_labels_and_wrong_channels():
    model = MLP(dim=2, hidden_units=16, embedding_dim=8)
    with pytest.raises(ValueError, match="unconditional"):
        model((tf.zeros([2, 2]), tf.zeros([2], tf.int32), tf.zeros([2], tf.int32)))
    with pytest.raises(ValueError, match="x_t must have 2 channels"):
        model((tf.zeros([2, 3]), tf.zeros([2], tf.int32)))
    with pytest.raises(ValueError, match="x_t must have 3 channels"):
        UNet(**UNET)((tf.zeros([2, 8, 8, 1]), tf.zeros([2], tf.int32)))


def test_dropout_only_in_training():
    for model in (UNet(**dict(UNET, dropout=0.5)), MLP(dim=2, hidden_units=32, embedding_dim=16, dropout=0.5)):
        inputs = make_inputs(model, 2)
        model(inputs)
        perturb(model)
        infer = np.asarray(model(inputs, training=False))
        np.testing.assert_array_equal(model(inputs), infer)
        np.testing.assert_array_equal(model(inputs, training=False), infer)
        train_a, train_b = np.asarray(model(inputs, training=True)), np.asarray(model(inputs, training=True))
        assert np.abs(train_a - infer).max() > 1e-4 and np.abs(train_a - train_b).max() > 1e-4


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, kwargs, name", [
    (UNet, dict(image_size=10, channel_mult=(1, 2, 2)), "image_size"),
    (UNet, dict(attention_resolutions=(16,)), "attention_resolutions"),
    (UNet, dict(num_heads=None, num_head_channels=None), "num_heads"),
    (UNet, dict(num_heads=3), "num_heads"),
    (UNet, dict(num_head_channels=12), "num_head_channels"),
    (UNet, dict(dropout=1.0), "dropout"),
    (UNet, dict(dropout=-0.1), "dropout"),
    (UNet, dict(channel_mult=()), "channel_mult"),
    (UNet, dict(num_res_blocks=0), "num_res_blocks"),
    (UNet, dict(num_classes=0), "num_classes"),
    (MLP, dict(dim=0), "dim"),
    (MLP, dict(dropout=1.5), "dropout"),
    (MLP, dict(num_classes=0), "num_classes"),
    (MLP, dict(embedding_dim=1), "embedding_dim"),
])
def test_bad_constructor_arguments_name_the_argument(cls, kwargs, name):
    base = dict(UNET) if cls is UNet else dict(dim=2, hidden_units=16, embedding_dim=8)
    with pytest.raises(ValueError, match=name):
        cls(**dict(base, **kwargs))


def test_build_rejects_unknown_keys_and_classes():
    with pytest.raises(ValueError, match="Transformer"):
        models.build({"class_name": "Transformer", "config": {}})
    with pytest.raises(ValueError, match="chanel_mult"):
        models.build({"class_name": "UNet", "config": {"chanel_mult": (1, 2)}})
    with pytest.raises(ValueError, match="weights"):
        models.build({"class_name": "MLP", "config": {}, "weights": "x"})
    with pytest.raises(ValueError, match="class_name"):
        models.build({"config": {}})
    assert isinstance(models.build({"class_name": "MLP"}), MLP)


# --- the blocks against hand computations --------------------------------------------------------------


def group_norm(x, groups, eps=1e-5):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)


def silu(x):
    return x / (1.0 + np.exp(-x))


def identity_conv(layer, channels):
    kernel = np.zeros((3, 3, channels, channels), np.float32)
    kernel[1, 1] = np.eye(channels)
    layer.kernel.assign(kernel)


@pytest.mark.parametrize("shape, groups", [((3, 4, 5, 8), 4), ((2, 4, 4, 6), 6), ((2, 2, 2, 4), 1)])
def test_group_norm_matches_keras_group_normalization(shape, groups):
    """Our GroupNorm (hand-written gradient) against keras.layers.GroupNormalization: values and all gradients."""
    rng = np.random.default_rng(5)
    # A large common offset as well, so a one-pass variance would lose digits.
    x = tf.constant(3.0 + rng.standard_normal(shape), tf.float32)
    dy = tf.constant(rng.standard_normal(shape), tf.float32)
    ours, ref = GroupNorm(groups, epsilon=1e-5), keras.layers.GroupNormalization(groups=groups, epsilon=1e-5)
    ours.build(shape), ref.build(shape)
    for name in ("gamma", "beta"):
        w = 1.0 + rng.standard_normal(shape[-1]).astype(np.float32)
        getattr(ours, name).assign(w), getattr(ref, name).assign(w)

    def value_and_grads(layer, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * dy)
        return [y, *tape.gradient(loss, [x, layer.gamma, layer.beta])]

    expected = value_and_grads(ref, x)
    for got in (value_and_grads(ours, x), tf.function(value_and_grads, jit_compile=True)(ours, x)):
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours(x), group_norm(x.numpy(), groups) * value(ours.gamma) + value(ours.beta),
                               rtol=1e-4, atol=1e-4)


def test_group_norm_mixed_float16(mixed_float16):
    x = tf.constant(np.random.default_rng(6).standard_normal((2, 4, 4, 8)) * 100.0, tf.float16)
    layer = GroupNorm(4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
    grad = tape.gradient(loss, x)
    assert y.dtype == tf.float16 and layer.gamma.dtype == "float32" and grad.dtype == tf.float16
    np.testing.assert_allclose(tf.cast(y, tf.float32), group_norm(x.numpy().astype(np.float32), 4), atol=1e-2)


def test_group_count_and_resampling():
    assert [group_count(c, 32) for c in (8, 16, 32, 48, 128, 7)] == [8, 16, 32, 24, 32, 7]
    h = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    np.testing.assert_array_equal(upsample_2x(tf.constant(h)), h.repeat(2, axis=1).repeat(2, axis=2))
    up = h.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(downsample_2x(tf.constant(up)), h)  # 2x2 means of equal values


@pytest.mark.parametrize("scale_shift", [True, False])
def test_res_block_embedding_injection_by_hand(scale_shift):
    """Identity convolutions isolate the injection: AdaGN GN(h)(1 + y_s) + y_b, or DDPM's GN(h + e)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    emb = rng.standard_normal((2, 5)).astype(np.float32)
    block = ResBlock(4, 4, use_scale_shift_norm=scale_shift, num_groups=2)
    block(x, emb)
    identity_conv(block.conv1, 4)
    identity_conv(block.conv2, 4)
    kernel = rng.standard_normal(block.emb_proj.kernel.shape).astype(np.float32)
    bias = rng.standard_normal(block.emb_proj.bias.shape).astype(np.float32)
    block.emb_proj.kernel.assign(kernel)
    block.emb_proj.bias.assign(bias)

    h = silu(group_norm(x, 2))
    e = (silu(emb) @ kernel + bias)[:, None, None, :]
    if scale_shift:
        y_s, y_b = e[..., :4], e[..., 4:]
        h = group_norm(h, 2) * (1.0 + y_s) + y_b
    else:
        h = group_norm(h + e, 2)
    expected = x + silu(h)
    np.testing.assert_allclose(block(x, emb), expected, rtol=1e-4, atol=1e-4)


def test_attention_block_by_hand():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    block = AttentionBlock(4, num_heads=2, num_groups=2)
    block(x)
    for v in block.weights:
        v.assign(rng.standard_normal(v.shape).astype(np.float32))
    hn = (group_norm(x, 2) * value(block.norm.gamma) + value(block.norm.beta)).reshape(2, 6, 4)
    qkv = (hn @ value(block.qkv.kernel) + value(block.qkv.bias)).reshape(2, 6, 3, 2, 2)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, heads, d]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(2)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(2, 6, 4)
    out = out @ value(block.proj.kernel) + value(block.proj.bias)
    np.testing.assert_allclose(block(x), x + out.reshape(x.shape), rtol=1e-4, atol=1e-4)


def test_unet_layout_heads_and_attention_placement():
    model = UNet(image_size=8, in_channels=3, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=2,
                 attention_resolutions=(4,), num_head_channels=8)
    attention = [layer for layer in model._flatten_layers() if isinstance(layer, AttentionBlock)]
    # level 1 (4x4): 2 down + 3 up blocks, plus the middle block's
    assert len(attention) == 2 + 3 + 1
    assert {(a.channels, a.num_heads) for a in attention} == {(32, 4)}
    assert sum(isinstance(layer, ResBlock) for layer in model.up_layers) == 3 * 3


def test_the_low_res_image_and_its_level_reach_the_output_and_are_checked():
    model = models.build({"class_name": "UNet", "config": dict(UNET, low_res_channels=1)})
    x, t, low, level = make_inputs(model, 2)
    model((x, t, low, level))
    perturb(model)
    base = model((x, t, low, level)).numpy()
    assert not np.allclose(model((x, t, low + 1.0, level)).numpy(), base)
    assert not np.allclose(model((x, t, low, level + 100)).numpy(), base)
    with pytest.raises(ValueError, match="image-conditioned"):
        model((x, t))
    with pytest.raises(ValueError, match="low_res must have 1 channels"):
        model((x, t, tf.zeros([2, 4, 4, 2]), level))
