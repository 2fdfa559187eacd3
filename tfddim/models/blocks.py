"""The building blocks of :class:`tfddim.models.unet.UNet`: GroupNorm, residual, attention and resampling blocks.

The blocks follow ADM's ``unet.py`` (Dhariwal & Nichol 2021; guided-diffusion);
see :mod:`tfddim.models.unet` for how they are assembled.

Speed on CPU. The U-Nets here are small (8x8 to 32x32 images), so a training
step is dominated less by the convolutions than by the many full-size
element-wise ops around them, each a separate kernel launch over the whole
activation tensor. The blocks are written to launch few of them:

- :class:`GroupNorm` reduces a normalization to a per-(example, channel)
  affine map ``x·a + b``, takes its statistics with reductions TensorFlow's
  CPU kernels handle well, and has a hand-written gradient (Keras'
  ``GroupNormalization`` reduces over non-adjacent axes, which is slow on
  CPU, and its op-by-op gradient launches several more full-size ops,
  including ``Tile``s);
- AdaGN folds the embedding's scale and shift into those coefficients
  instead of applying them to the normalized tensor;
- attention splits q, k, v with one transpose and a ``split`` (whose gradient
  is a concatenation) instead of strided slices (whose gradient,
  ``StridedSliceGrad``, scatters into zeros) and uses batched matmuls without
  einsum's extra transposes.

Everything stays XLA-compilable and mixed-precision safe: statistics and
coefficients are float32, activations the layer's compute dtype.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

__all__ = [
    "GroupNorm",
    "ResBlock",
    "AttentionBlock",
    "Downsample",
    "Upsample",
    "group_count",
    "group_norm",
    "downsample_2x",
    "upsample_2x",
    "as_ints",
]


def as_ints(name, values):
    """``values`` as a tuple of ints (a network's ``channel_mult``, ``attention_resolutions``), or a ``ValueError`` naming it."""
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of integers, got {values!r}") from None


def group_count(channels, num_groups):
    """The largest divisor of ``channels`` that is at most ``num_groups``.

    ADM always uses 32 groups; this lets tiny test models (8 or 16 channels)
    and channel counts such as 48 use GroupNorm too.
    """
    for groups in range(min(int(num_groups), int(channels)), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def downsample_2x(h):
    """2x2 average pooling: the resampling inside an ADM up/down residual block."""
    return ops.average_pool(h, pool_size=2, strides=2, padding="valid")


def upsample_2x(h):
    """Nearest-neighbour 2x upsampling (DDPM's and ADM's ``F.interpolate(mode='nearest')``)."""
    shape = ops.shape(h)
    height, width, channels = shape[1], shape[2], shape[3]
    # Stack-and-reshape rather than repeat: it lowers to a broadcast and compiles quickly under XLA.
    h = ops.reshape(ops.stack([h, h], axis=3), (-1, height, 2 * width, channels))
    return ops.reshape(ops.stack([h, h], axis=2), (-1, 2 * height, 2 * width, channels))


def _spatial_size(x):
    """H·W of ``[B, H, W, C]``, static when known."""
    height, width = x.shape[1], x.shape[2]
    if height is not None and width is not None:
        return int(height) * int(width)
    shape = tf.shape(x)
    return shape[1] * shape[2]


@tf.autograph.experimental.do_not_convert  # autograph would unwrap the tf.custom_gradient inside
def group_moments(x, groups):
    """Mean and variance of float32 ``x [B, H, W, C]`` over H, W and each group's channels: ``[B, 1, G, 1]`` each.

    The variance is two-pass (mean of squared deviations), as in ``tf.nn.moments``.
    The gradient is written by hand: with N elements per group,
    dx = dmean/N + 2·(x − mean)·dvar/N = x·k + l, one multiply-add over ``x``.
    """
    x = tf.convert_to_tensor(x)
    channels = int(x.shape[-1])
    grouped = tf.reshape(x, [-1, _spatial_size(x), groups, channels // groups])

    def group_mean(t):
        # Over the positions, then over the group's channels: TensorFlow's CPU kernel for one reduction over
        # the non-adjacent axes [1, 3] is several times slower than these two.
        t = tf.reduce_mean(t, axis=1, keepdims=True)
        return t if channels == groups else tf.reduce_mean(t, axis=3, keepdims=True)

    @tf.custom_gradient
    def moments(grouped):
        mean = group_mean(grouped)
        var = group_mean(tf.math.squared_difference(grouped, mean))

        def grad(dmean, dvar):
            size = tf.cast(tf.shape(grouped)[1] * (channels // groups), grouped.dtype)
            k = dvar * (2.0 / size)
            return grouped * k + (dmean / size - k * mean)

        return (mean, var), grad

    return moments(grouped)


@keras.saving.register_keras_serializable(package="tfddim")
class GroupNorm(keras.layers.Layer):
    """Group normalization over the last axis of ``[B, H, W, C]`` (Wu & He 2018), as ``keras.layers.GroupNormalization``.

    y = (x − mean)/√(var + ε)·γ + β with mean and variance over H, W and the
    channels of each group, computed in float32 whatever the precision policy.
    It equals ``GroupNormalization(groups, epsilon=epsilon)`` (same γ and β,
    outputs equal up to rounding) but is faster on CPU: see the module docstring.

    :meth:`coefficients` exposes the normalization as the per-(example,
    channel) affine map ``x·a + b``, so a caller can fold a further affine map
    (AdaGN's scale and shift) into ``a`` and ``b``.

    Args:
        groups: number of groups; must divide the channel count.
        epsilon: added to the variance.
    """

    def __init__(self, groups, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or int(channels) % self.groups:
            raise ValueError(f"GroupNorm: groups ({self.groups}) must divide the channels, got shape {input_shape}")
        channels = int(channels)
        self.gamma = self.add_weight(shape=(channels,), name="gamma", initializer="ones", autocast=False)
        self.beta = self.add_weight(shape=(channels,), name="beta", initializer="zeros", autocast=False)
        self.built = True

    def coefficients(self, x):
        """float32 ``(a, b)``, each ``[B, 1, 1, C]``, with GN(x) = x·a + b."""
        x = tf.cast(x, tf.float32)
        channels = int(x.shape[-1])
        groups, per_group = self.groups, channels // self.groups
        mean, var = group_moments(x, groups)  # [B, 1, G, 1]
        a = tf.math.rsqrt(var + self.epsilon) * tf.reshape(tf.cast(self.gamma, tf.float32), [groups, per_group])
        b = tf.reshape(tf.cast(self.beta, tf.float32), [groups, per_group]) - mean * a  # [B, 1, G, C/G]
        return tf.reshape(a, [-1, 1, 1, channels]), tf.reshape(b, [-1, 1, 1, channels])

    @staticmethod
    def apply(x, a, b, dtype):
        """``x·a + b`` in float32, cast to ``dtype``."""
        return tf.cast(tf.cast(x, tf.float32) * a + b, dtype)

    def call(self, x):
        a, b = self.coefficients(x)
        return self.apply(x, a, b, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"groups": self.groups, "epsilon": self.epsilon})
        return config


def group_norm(channels, num_groups, name):
    """ADM's ``normalization(channels)``: a :class:`GroupNorm` with ε = 1e-5 and at most ``num_groups`` groups."""
    return GroupNorm(group_count(channels, num_groups), epsilon=1e-5, name=name)


@keras.saving.register_keras_serializable(package="tfddim")
class ResBlock(keras.layers.Layer):
    """A residual block conditioned on an embedding (DDPM Appendix B; ADM ``ResBlock``).

    h = conv(SiLU(GN(x))); the embedding is projected by SiLU → Dense and
    injected either by addition, h = GN(h + e) (DDPM), or by adaptive group
    normalization, GN(h)·(1 + y_s) + y_b with [y_s, y_b] = e (ADM §3, AdaGN);
    then SiLU → dropout → zero-initialized conv, and the result is added to
    x (through a 1x1 convolution when the channel count changes).

    Args:
        in_channels: channels of ``x``.
        out_channels: channels of the output.
        dropout: dropout rate before the last convolution.
        use_scale_shift_norm: AdaGN (True) or addition (False).
        num_groups: GroupNorm groups (see :func:`group_count`).
        resample: None, ``"down"`` or ``"up"``: BigGAN-style resampling of
            both branches after the first normalization (ADM's ``resblock_updown``).

    Call arguments:
        x: ``[B, H, W, in_channels]``.
        emb: ``[B, E]`` timestep (+ class) embedding.
        training: enables dropout.
    """

    def __init__(self, in_channels, out_channels, dropout=0.0, use_scale_shift_norm=True, num_groups=32,
                 resample=None, **kwargs):
        super().__init__(**kwargs)
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.dropout = float(dropout)
        self.use_scale_shift_norm = bool(use_scale_shift_norm)
        self.num_groups = int(num_groups)
        self.resample = resample

        self.norm1 = group_norm(self.in_channels, self.num_groups, "norm1")
        self.conv1 = keras.layers.Conv2D(self.out_channels, 3, padding="same", name="conv1")
        width = 2 * self.out_channels if self.use_scale_shift_norm else self.out_channels
        self.emb_proj = keras.layers.Dense(width, name="emb_proj")
        self.norm2 = group_norm(self.out_channels, self.num_groups, "norm2")
        self.drop = keras.layers.Dropout(self.dropout, name="dropout")
        self.conv2 = keras.layers.Conv2D(self.out_channels, 3, padding="same", kernel_initializer="zeros",
                                         name="conv2")
        self.skip = None
        if self.in_channels != self.out_channels:
            self.skip = keras.layers.Conv2D(self.out_channels, 1, name="skip")

    def build(self, x_shape, emb_shape):
        x_shape = tuple(x_shape)
        h_shape = x_shape[:-1] + (self.out_channels,)
        self.norm1.build(x_shape)
        self.conv1.build(x_shape)
        self.emb_proj.build(tuple(emb_shape))
        self.norm2.build(h_shape)
        self.conv2.build(h_shape)
        if self.skip is not None:
            self.skip.build(x_shape)
        self.built = True

    def call(self, x, emb, training=None):
        h = ops.silu(self.norm1(x))
        if self.resample == "down":
            h, x = downsample_2x(h), downsample_2x(x)
        elif self.resample == "up":
            h, x = upsample_2x(h), upsample_2x(x)
        h = self.conv1(h)
        e = self.emb_proj(ops.silu(emb))[:, None, None, :]
        if self.use_scale_shift_norm:
            # GN(h)·(1 + y_s) + y_b = h·a(1 + y_s) + (b(1 + y_s) + y_b): the scale and shift act on the
            # [B, 1, 1, C] coefficients, not on the full activation.
            scale, shift = ops.split(ops.cast(e, "float32"), 2, axis=-1)
            a, b = self.norm2.coefficients(h)
            a = a * (1.0 + scale)
            h = GroupNorm.apply(h, a, b * (1.0 + scale) + shift, self.compute_dtype)
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.drop(ops.silu(h), training=training))
        if self.skip is not None:
            x = self.skip(x)
        return x + h

    def get_config(self):
        config = super().get_config()
        config.update({
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "dropout": self.dropout,
            "use_scale_shift_norm": self.use_scale_shift_norm,
            "num_groups": self.num_groups,
            "resample": self.resample,
        })
        return config


@keras.saving.register_keras_serializable(package="tfddim")
class AttentionBlock(keras.layers.Layer):
    """Multi-head self-attention over the H·W positions, as a residual block (ADM ``AttentionBlock``).

    x + proj(softmax(q·kᵀ/√d)·v) with q, k, v a 1x1 projection of GN(x), d the
    head width, and ``proj`` zero-initialized. q and k are each scaled by
    d^(−1/4) before the product, and the softmax runs in float32, so the
    logits do not overflow in float16 (ADM's ``QKVAttention``).

    The qkv projection's output channels are laid out ``[3, heads, d]``
    (q, k, v outermost).

    Args:
        channels: channels of ``x``; a multiple of ``num_heads``.
        num_heads: number of attention heads.
        num_groups: GroupNorm groups (see :func:`group_count`).

    Call arguments:
        x: ``[B, H, W, channels]``.
    """

    def __init__(self, channels, num_heads=1, num_groups=32, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.num_heads = int(num_heads)
        self.num_groups = int(num_groups)
        if self.num_heads < 1 or self.channels % self.num_heads:
            raise ValueError(f"num_heads ({num_heads}) must be >= 1 and divide channels ({channels})")
        self.norm = group_norm(self.channels, self.num_groups, "norm")
        self.qkv = keras.layers.Dense(3 * self.channels, name="qkv")
        self.proj = keras.layers.Dense(self.channels, kernel_initializer="zeros", name="proj")

    def build(self, x_shape):
        x_shape = tuple(x_shape)
        self.norm.build(x_shape)
        self.qkv.build((None, self.channels))
        self.proj.build((None, self.channels))
        self.built = True

    def call(self, x):
        shape = ops.shape(x)
        height, width, channels, heads = shape[1], shape[2], self.channels, self.num_heads
        length, head_dim = height * width, channels // heads
        # Dense on [B·L, C]: one plain matmul.
        qkv = self.qkv(ops.reshape(self.norm(x), (-1, channels)))
        # [B, L, 3·heads, d] -> [B, 3·heads, L, d]: q, k, v heads on one axis, split without strided slices.
        qkv = ops.transpose(ops.reshape(qkv, (-1, length, 3 * heads, head_dim)), (0, 2, 1, 3))
        qk, v = ops.split(qkv, [2 * heads], axis=1)
        q, k = ops.split(qk * (1.0 / math.sqrt(math.sqrt(head_dim))), 2, axis=1)  # each [B, heads, L, d]
        logits = tf.linalg.matmul(q, k, transpose_b=True)  # [B, heads, L, L]
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), v.dtype)
        out = ops.transpose(tf.linalg.matmul(weights, v), (0, 2, 1, 3))  # [B, L, heads, d]
        out = self.proj(ops.reshape(out, (-1, channels)))
        return x + ops.reshape(out, (-1, height, width, channels))

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "num_heads": self.num_heads, "num_groups": self.num_groups})
        return config


@keras.saving.register_keras_serializable(package="tfddim")
class Downsample(keras.layers.Layer):
    """A 3x3 convolution with stride 2 (DDPM's and ADM's ``Downsample(use_conv=True)``)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.conv = keras.layers.Conv2D(self.channels, 3, strides=2, padding="same", name="conv")

    def build(self, x_shape):
        self.conv.build(tuple(x_shape))
        self.built = True

    def call(self, x):
        return self.conv(x)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels})
        return config


@keras.saving.register_keras_serializable(package="tfddim")
class Upsample(keras.layers.Layer):
    """Nearest-neighbour 2x upsampling then a 3x3 convolution (``Upsample(use_conv=True)``)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.conv = keras.layers.Conv2D(self.channels, 3, padding="same", name="conv")

    def build(self, x_shape):
        self.conv.build(tuple(x_shape))
        self.built = True

    def call(self, x):
        return self.conv(upsample_2x(x))

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels})
        return config
