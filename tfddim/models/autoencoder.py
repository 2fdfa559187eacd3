"""``Autoencoder``: latent diffusion's KL-regularised autoencoder (Rombach et al. 2022, §3.1 and Appendix G).

An encoder E maps an image x ``[B, H, W, C]`` to a diagonal Gaussian posterior
q(z | x) = N(μ(x), diag σ²(x)) over latents ``[B, H/f, W/f, c]`` (f = 2^(len(channel_mult) − 1),
the downsampling factor: 4 for ``channel_mult=(1, 2, 2)``); a decoder D maps a latent back to an
image. Trained with a reconstruction term and a small KL(q(z | x) ‖ N(0, I)) weight
(:class:`tfddim.training.AutoencoderModel`), the latents stay close to an image-shaped code with
an arbitrary scale, which latent diffusion divides out with ``scale_factor`` = 1/std(z) (LDM's
``scale_factor``; stored by the training run, not here: the network knows no data).

The layout is LDM's ``Encoder``/``Decoder`` (``ldm/modules/diffusionmodules/model.py``) without
attention: conv_in → per level ``num_res_blocks`` residual blocks (GroupNorm, SiLU, 3×3 conv, twice)
and a stride-2 convolution between levels → a middle block → GroupNorm, SiLU, conv to 2c channels
(μ and log σ²); the decoder mirrors it with nearest-neighbour upsampling + 3×3 conv between levels.

Call arguments (``call``): ``x`` ``[B, H, W, C]``; returns D(μ(x)), the deterministic reconstruction.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfddim.models.blocks import GroupNorm, as_ints, group_count

__all__ = ["Autoencoder", "kl_to_standard_normal"]

LOGVAR_RANGE = (-30.0, 20.0)  # LDM's DiagonalGaussianDistribution clamps log σ² to this range


def kl_to_standard_normal(mean, logvar):
    """KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − 1 − log σ²), per element (Kingma & Welling 2014, Appendix B)."""
    return 0.5 * (tf.square(mean) + tf.exp(logvar) - 1.0 - logvar)


@keras.saving.register_keras_serializable(package="tfddim")
class _AEResBlock(keras.layers.Layer):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), through a 1×1 conv when the channels change (LDM ``ResnetBlock``, no t)."""

    def __init__(self, in_channels, out_channels, num_groups=32, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels, self.num_groups = int(in_channels), int(out_channels), int(num_groups)
        self.norm1 = GroupNorm(group_count(self.in_channels, self.num_groups), name="norm1")
        self.conv1 = keras.layers.Conv2D(self.out_channels, 3, padding="same", name="conv1")
        self.norm2 = GroupNorm(group_count(self.out_channels, self.num_groups), name="norm2")
        self.conv2 = keras.layers.Conv2D(self.out_channels, 3, padding="same", name="conv2")
        self.skip = (keras.layers.Conv2D(self.out_channels, 1, name="skip")
                     if self.in_channels != self.out_channels else None)

    def call(self, x):
        h = self.conv1(tf.nn.silu(self.norm1(x)))
        h = self.conv2(tf.nn.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "out_channels": self.out_channels,
                "num_groups": self.num_groups}


@keras.saving.register_keras_serializable(package="tfddim")
class Autoencoder(keras.Model):
    """A KL-regularised convolutional autoencoder (LDM's ``AutoencoderKL``, without the attention blocks).

    Args:
        image_size: height and width of the images; divisible by the factor f = 2^(len(channel_mult) − 1).
        in_channels: image channels (1 for MNIST).
        latent_channels: c, the channels of a latent ``[H/f, W/f, c]``.
        base_channels: channels at full resolution; level i has ``base_channels * channel_mult[i]``.
        channel_mult: one entry per resolution; a stride-2 convolution between consecutive levels.
        num_res_blocks: residual blocks per level.
        num_groups: GroupNorm groups (at most; :func:`~tfddim.models.blocks.group_count`).

    Example:
        >>> ae = Autoencoder(image_size=28, in_channels=1, latent_channels=4, base_channels=32, channel_mult=(1, 2, 2))
        >>> mean, logvar = ae.encode(x)          # [B, 7, 7, 4] each
        >>> x_rec = ae.decode(mean)              # [B, 28, 28, 1]
    """

    def __init__(self, image_size=28, in_channels=1, latent_channels=4, base_channels=32, channel_mult=(1, 2, 2),
                 num_res_blocks=1, num_groups=32, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.latent_channels = int(latent_channels)
        self.base_channels = int(base_channels)
        self.channel_mult = as_ints("channel_mult", channel_mult)
        self.num_res_blocks = int(num_res_blocks)
        self.num_groups = int(num_groups)
        positive = {"image_size": self.image_size, "in_channels": self.in_channels,
                    "latent_channels": self.latent_channels, "base_channels": self.base_channels,
                    "num_res_blocks": self.num_res_blocks, "num_groups": self.num_groups}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of integers >= 1, got {list(self.channel_mult)}")
        if self.image_size % self.factor:
            raise ValueError(f"image_size ({self.image_size}) must be divisible by the downsampling factor "
                             f"2**(len(channel_mult) - 1) = {self.factor}")
        widths = [self.base_channels * m for m in self.channel_mult]
        groups = self.num_groups

        self.enc_in = keras.layers.Conv2D(widths[0], 3, padding="same", name="enc_in")
        self.enc_blocks, ch = [], widths[0]
        for level, width in enumerate(widths):
            for i in range(self.num_res_blocks):
                self.enc_blocks.append(_AEResBlock(ch, width, groups, name=f"enc{level}_res{i}"))
                ch = width
            if level < len(widths) - 1:
                self.enc_blocks.append(keras.layers.Conv2D(ch, 3, strides=2, padding="same", name=f"enc{level}_down"))
        self.enc_mid = _AEResBlock(ch, ch, groups, name="enc_mid")
        self.enc_norm = GroupNorm(group_count(ch, groups), name="enc_norm")
        self.enc_out = keras.layers.Conv2D(2 * self.latent_channels, 3, padding="same", name="enc_out")

        self.dec_in = keras.layers.Conv2D(widths[-1], 3, padding="same", name="dec_in")
        self.dec_mid = _AEResBlock(widths[-1], widths[-1], groups, name="dec_mid")
        self.dec_blocks, ch = [], widths[-1]
        for level in reversed(range(len(widths))):
            for i in range(self.num_res_blocks):
                self.dec_blocks.append(_AEResBlock(ch, widths[level], groups, name=f"dec{level}_res{i}"))
                ch = widths[level]
            if level > 0:
                self.dec_blocks.append(keras.layers.UpSampling2D(2, interpolation="nearest", name=f"dec{level}_up"))
                self.dec_blocks.append(keras.layers.Conv2D(ch, 3, padding="same", name=f"dec{level}_upconv"))
        self.dec_norm = GroupNorm(group_count(ch, groups), name="dec_norm")
        self.dec_out = keras.layers.Conv2D(self.in_channels, 3, padding="same", name="dec_out")

    @property
    def factor(self) -> int:
        """f, the downsampling factor: 2^(len(channel_mult) − 1)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_shape(self) -> tuple:
        """``(H/f, W/f, c)``: one latent."""
        side = self.image_size // self.factor
        return (side, side, self.latent_channels)

    def encode(self, x):
        """``(μ, log σ²)`` of q(z | x), each ``[B, H/f, W/f, c]`` float32; log σ² clamped as LDM's."""
        h = self.enc_in(x)
        for layer in self.enc_blocks:
            h = layer(h)
        h = self.enc_out(tf.nn.silu(self.enc_norm(self.enc_mid(h))))
        h = tf.cast(h, tf.float32)
        mean, logvar = tf.split(h, 2, axis=-1)
        return mean, tf.clip_by_value(logvar, *LOGVAR_RANGE)

    def decode(self, z):
        """D(z): ``[B, H/f, W/f, c]`` → ``[B, H, W, in_channels]`` float32."""
        h = self.dec_mid(self.dec_in(z))
        for layer in self.dec_blocks:
            h = layer(h)
        return tf.cast(self.dec_out(tf.nn.silu(self.dec_norm(h))), tf.float32)

    def call(self, x, training=None):
        return self.decode(self.encode(x)[0])

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "in_channels": self.in_channels,
                "latent_channels": self.latent_channels, "base_channels": self.base_channels,
                "channel_mult": list(self.channel_mult), "num_res_blocks": self.num_res_blocks,
                "num_groups": self.num_groups}
