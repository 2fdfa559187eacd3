"""The noise-aware classifier p_φ(y | x_t, t) for classifier guidance (guided-diffusion §4).

ADM's classifier is "the downsampling trunk of the UNet model with an
attention pool at the 8x8 layer" (Dhariwal & Nichol 2021, §4; guided-diffusion
``EncoderUNetModel`` with ``pool="attention"``): the same residual blocks,
timestep embedding (AdaGN) and attention as :class:`tfddim.models.UNet`'s way
down and middle block, then GroupNorm–SiLU and :class:`AttentionPool2d`, whose
output is the class logits. Its gradient ∇ₓ log p_φ(y | x_t, t) guides the
sampler (:class:`tfddim.sampling.ClassifierGuidance`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from tfddim.models.blocks import AttentionBlock, Downsample, ResBlock, as_ints, group_norm
from tfddim.models.embedding import timestep_embedding, unpack_inputs

__all__ = ["NoisyClassifier", "AttentionPool2d"]


@keras.saving.register_keras_serializable(package="tfddim")
class AttentionPool2d(keras.layers.Layer):
    """CLIP/ADM attention pooling: one query (the mean token) attends over the H·W tokens + itself.

    tokens = [mean(x); x] + positional embedding; out = c_proj(attention(q = token 0))
    (guided-diffusion ``AttentionPool2d``), ``[B, H, W, C]`` → ``[B, out_channels]``.
    """

    def __init__(self, spatial, channels, num_heads, out_channels, **kwargs):
        super().__init__(**kwargs)
        self.spatial, self.channels = int(spatial), int(channels)
        self.num_heads, self.out_channels = int(num_heads), int(out_channels)
        if self.num_heads < 1 or self.channels % self.num_heads:
            raise ValueError(f"num_heads ({num_heads}) must be >= 1 and divide channels ({channels})")
        self.qkv = keras.layers.Dense(3 * self.channels, name="qkv")
        self.c_proj = keras.layers.Dense(self.out_channels, name="c_proj")

    def build(self, x_shape):
        scale = 1.0 / math.sqrt(self.channels)
        self.positional = self.add_weight(shape=(self.spatial**2 + 1, self.channels), name="positional",
                                          initializer=keras.initializers.RandomNormal(stddev=scale))
        self.qkv.build((None, self.channels))
        self.c_proj.build((None, self.channels))
        self.built = True

    def call(self, x):
        channels, heads = self.channels, self.num_heads
        head_dim = channels // heads
        tokens = ops.reshape(x, (-1, self.spatial**2, channels))
        tokens = ops.concatenate([ops.mean(tokens, axis=1, keepdims=True), tokens], axis=1) + self.positional
        length = self.spatial**2 + 1
        qkv = ops.reshape(self.qkv(ops.reshape(tokens, (-1, channels))), (-1, length, 3, heads, head_dim))
        q, k, v = (ops.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))  # [B, heads, L, d]
        q = q[:, :, :1] * (1.0 / math.sqrt(math.sqrt(head_dim)))
        k = k * (1.0 / math.sqrt(math.sqrt(head_dim)))
        weights = ops.cast(ops.softmax(ops.cast(tf.linalg.matmul(q, k, transpose_b=True), "float32"), axis=-1), v.dtype)
        pooled = ops.reshape(tf.linalg.matmul(weights, v), (-1, channels))  # [B, heads, 1, d] -> [B, C]
        return self.c_proj(pooled)

    def get_config(self):
        config = super().get_config()
        config.update({"spatial": self.spatial, "channels": self.channels, "num_heads": self.num_heads,
                       "out_channels": self.out_channels})
        return config


@keras.saving.register_keras_serializable(package="tfddim")
class NoisyClassifier(keras.Model):
    """Logits of p(y | x_t, t) from the U-Net's downsampling half with an attention pool.

    Args are :class:`tfddim.models.UNet`'s (same meaning) plus ``num_classes``,
    the number of logits. Called as ``model((x_t, t))`` with t the integer
    timestep index; returns float32 ``[B, num_classes]``.
    """

    def __init__(self, image_size=32, in_channels=3, num_classes=10, base_channels=128, channel_mult=(1, 2, 2, 2),
                 num_res_blocks=2, attention_resolutions=(16,), num_heads=4, dropout=0.0, resblock_updown=True,
                 use_scale_shift_norm=True, num_groups=32, **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.in_channels = int(image_size), int(in_channels)
        self.num_classes, self.base_channels = int(num_classes), int(base_channels)
        self.channel_mult = as_ints("channel_mult", channel_mult)
        self.num_res_blocks = int(num_res_blocks)
        self.attention_resolutions = as_ints("attention_resolutions", attention_resolutions)
        self.num_heads, self.dropout = int(num_heads), float(dropout)
        self.resblock_updown, self.use_scale_shift_norm = bool(resblock_updown), bool(use_scale_shift_norm)
        self.num_groups = int(num_groups)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.image_size < 1 or self.image_size % factor:
            raise ValueError(f"image_size ({image_size}) must be a positive multiple of 2**(len(channel_mult) - 1) = {factor}")

        base, emb_dim = self.base_channels, 4 * self.base_channels
        self.time_dense1 = keras.layers.Dense(emb_dim, name="time_dense1")
        self.time_dense2 = keras.layers.Dense(emb_dim, name="time_dense2")
        res = dict(dropout=self.dropout, use_scale_shift_norm=self.use_scale_shift_norm, num_groups=self.num_groups)
        ch = self.channel_mult[0] * base
        self.input_conv = keras.layers.Conv2D(ch, 3, padding="same", name="input_conv")
        self.trunk, resolution = [], self.image_size
        for level, mult in enumerate(self.channel_mult):
            for i in range(self.num_res_blocks):
                self.trunk.append(ResBlock(ch, mult * base, name=f"down{level}_res{i}", **res))
                ch = mult * base
                if resolution in self.attention_resolutions:
                    self.trunk.append(AttentionBlock(ch, self.num_heads, self.num_groups, name=f"down{level}_attn{i}"))
            if level != len(self.channel_mult) - 1:
                self.trunk.append(ResBlock(ch, ch, resample="down", name=f"down{level}_resample", **res)
                                  if self.resblock_updown else Downsample(ch, name=f"down{level}_resample"))
                resolution //= 2
        self.trunk += [ResBlock(ch, ch, name="middle_res0", **res),
                       AttentionBlock(ch, self.num_heads, self.num_groups, name="middle_attn"),
                       ResBlock(ch, ch, name="middle_res1", **res)]
        self.out_norm = group_norm(ch, self.num_groups, "out_norm")
        self.pool = AttentionPool2d(resolution, ch, self.num_heads, self.num_classes, dtype="float32", name="pool")
        self._channels = ch

    def build(self, input_shape):
        emb_shape = (None, 4 * self.base_channels)
        self.time_dense1.build((None, self.base_channels))
        self.time_dense2.build(emb_shape)
        self.input_conv.build((None, None, None, self.in_channels))
        for layer in self.trunk:
            if isinstance(layer, ResBlock):
                layer.build((None, None, None, layer.in_channels), emb_shape)
            else:
                layer.build((None, None, None, layer.channels))
        self.out_norm.build((None, None, None, self._channels))
        self.pool.build((None, None, None, self._channels))
        self.built = True

    def call(self, inputs, training=None):
        x, t, _ = unpack_inputs(inputs, None, self.in_channels, "NoisyClassifier")
        emb = self.time_dense2(ops.silu(self.time_dense1(timestep_embedding(t, self.base_channels))))
        h = self.input_conv(x)
        for layer in self.trunk:
            h = layer(h, emb, training=training) if isinstance(layer, ResBlock) else layer(h)
        return self.pool(ops.cast(ops.silu(self.out_norm(h)), "float32"))

    def log_prob_fn(self):
        """``log_prob_fn(x_t, t, y)`` = log p(y | x_t, t) per example, for :class:`tfddim.sampling.ClassifierGuidance`."""
        def log_prob(x_t, t, y):
            logits = self((x_t, t), training=False)
            return tf.gather(tf.nn.log_softmax(logits), tf.cast(y, tf.int32), axis=1, batch_dims=1)

        return log_prob

    def get_config(self):
        config = super().get_config()
        config.update({k: getattr(self, k) for k in (
            "image_size", "in_channels", "num_classes", "base_channels", "channel_mult", "num_res_blocks",
            "attention_resolutions", "num_heads", "dropout", "resblock_updown", "use_scale_shift_norm", "num_groups")})
        return config
