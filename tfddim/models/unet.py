"""The U-Net noise predictor ε_θ(x_t, t[, y]), from the DDPM baseline up to ADM.

The layout follows ADM's ``UNetModel`` (Dhariwal & Nichol 2021, §3 and
Appendix; guided-diffusion ``unet.py``), which generalizes DDPM's network
(Ho et al. 2020, Appendix B): residual blocks with the embedding injected
after the first convolution, self-attention at chosen resolutions, a middle
res-attn-res stack, and skip connections concatenated on the way up. ADM's
options are constructor arguments: several heads or fixed head width,
BigGAN-style up/down-sampling residual blocks, adaptive group normalization
(AdaGN) and a class embedding.

Image conditioning (super-resolution, guided-diffusion's ``SuperResModel``): with
``low_res_channels`` the network also takes a low-resolution image, upsamples it
bilinearly to x_t's size and concatenates it to x_t before the first
convolution; the timestep of the Gaussian noise augmentation that image carries
is embedded like t (its own two dense layers) and added to the embedding, as
cascaded diffusion models condition on the augmentation level (Ho et al. 2021, §3.2).

The blocks (:class:`ResBlock`, :class:`AttentionBlock`, :class:`Downsample`,
:class:`Upsample`, :class:`GroupNorm`) are in :mod:`tfddim.models.blocks`.

Initialization: Keras' default ``glorot_uniform`` is DDPM's
``variance_scaling(1, 'fan_avg', 'uniform')``; the last convolution of every
residual branch and the network's output convolution start at zero (ADM's
``zero_module``), so each block starts as the identity.
"""

from __future__ import annotations

import keras
from keras import ops

# The blocks live in tfddim.models.blocks; the public ones are re-exported here, where they used to be defined.
from tfddim.models.blocks import (AttentionBlock, Downsample, GroupNorm, ResBlock, Upsample, as_ints, group_count,
                                  group_norm)
from tfddim.models.embedding import split_low_res, timestep_embedding, unpack_inputs

__all__ = ["UNet", "ResBlock", "AttentionBlock", "Downsample", "Upsample", "GroupNorm", "group_count"]


@keras.saving.register_keras_serializable(package="tfddim")
class UNet(keras.Model):
    """U-Net predicting ε (and optionally the variance interpolation v) from (x_t, t[, y]).

    The network knows no noise schedule: ``t`` is the integer timestep index.
    The defaults are ADM's CIFAR-scale settings with DDPM's channel layout;
    ADM's ImageNet 64 model is ``base_channels=192, channel_mult=(1, 2, 3, 4),
    num_res_blocks=3, attention_resolutions=(32, 16, 8), num_head_channels=64,
    resblock_updown=True, num_classes=1000, learned_variance=True``.

    Args:
        image_size: height and width of the images, divisible by
            2**(len(channel_mult) − 1).
        in_channels: channels C of x_t.
        base_channels: channels at the first level; the timestep embedding is
            4·base_channels wide.
        channel_mult: per-level channel multipliers; one level per entry, the
            resolution halves between levels.
        num_res_blocks: residual blocks per level on the way down (one more on
            the way up, which also takes the skip connections).
        attention_resolutions: resolutions in pixels (e.g. 16 for 16x16
            feature maps) at which a self-attention block follows each
            residual block. The middle block always has attention.
        num_heads: attention heads, used when ``num_head_channels`` is None.
        num_head_channels: fixed width per head (ADM uses 64); heads =
            channels // num_head_channels.
        dropout: dropout rate in the residual blocks, in [0, 1).
        resblock_updown: resample inside residual blocks (BigGAN/ADM) instead
            of a strided convolution / nearest upsampling + convolution.
        use_scale_shift_norm: AdaGN (ADM) instead of adding the embedding (DDPM).
        num_classes: None for an unconditional model; else the number of
            classes, with one more embedding row for the null label
            ``num_classes`` used by classifier-free guidance.
        learned_variance: output 2C channels, ε then v (improved DDPM §3.1).
        num_groups: GroupNorm groups, reduced per layer to a divisor of its channels.
        low_res_channels: None, or the channels of a low-resolution conditioning image (super-resolution):
            the network is then called with ``(x_t, t[, y], low_res, low_res_t)``.

    Call arguments:
        inputs: ``(x_t, t)`` or, when class-conditional, ``(x_t, t, y)``:
            x_t float ``[B, H, W, C]``, t int ``[B]`` timestep indices in
            [0, T−1], y int ``[B]`` labels in [0, num_classes]. With ``low_res_channels``, two more:
            ``low_res`` float ``[B, h, w, low_res_channels]`` (any h, w; upsampled to H×W) and
            ``low_res_t`` int ``[B]``, the noise-augmentation timestep of ``low_res`` (0 = clean).
        training: enables dropout.

    Returns:
        float32 ``[B, H, W, C]`` ε, or ``[B, H, W, 2C]`` [ε, v] with ``learned_variance``.

    References:
        - Ho, Jain, Abbeel. Denoising Diffusion Probabilistic Models. NeurIPS 2020.
        - Nichol, Dhariwal. Improved Denoising Diffusion Probabilistic Models. ICML 2021.
        - Dhariwal, Nichol. Diffusion Models Beat GANs on Image Synthesis. NeurIPS 2021.

    Example:
        >>> model = UNet(image_size=8, in_channels=1, base_channels=16, channel_mult=(1, 2),
        ...              num_res_blocks=1, attention_resolutions=(4,))
        >>> eps = model((tf.zeros([2, 8, 8, 1]), tf.constant([0, 999])))
    """

    def __init__(self, image_size=32, in_channels=3, base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                 attention_resolutions=(16,), num_heads=4, num_head_channels=None, dropout=0.0,
                 resblock_updown=False, use_scale_shift_norm=True, num_classes=None, learned_variance=False,
                 num_groups=32, low_res_channels=None, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.base_channels = int(base_channels)
        self.channel_mult = as_ints("channel_mult", channel_mult)
        self.num_res_blocks = int(num_res_blocks)
        self.attention_resolutions = as_ints("attention_resolutions", attention_resolutions)
        self.num_heads = None if num_heads is None else int(num_heads)
        self.num_head_channels = None if num_head_channels is None else int(num_head_channels)
        self.dropout = float(dropout)
        self.resblock_updown = bool(resblock_updown)
        self.use_scale_shift_norm = bool(use_scale_shift_norm)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.learned_variance = bool(learned_variance)
        self.num_groups = int(num_groups)
        self.low_res_channels = None if low_res_channels is None else int(low_res_channels)
        self._validate()

        base, emb_dim = self.base_channels, 4 * self.base_channels
        self.time_dense1 = keras.layers.Dense(emb_dim, name="time_dense1")
        self.time_dense2 = keras.layers.Dense(emb_dim, name="time_dense2")
        self.label_embedding = None
        if self.num_classes is not None:
            # N(0, 1) rows as torch.nn.Embedding (ADM's label_emb); row num_classes is the null label.
            self.label_embedding = keras.layers.Embedding(
                self.num_classes + 1, emb_dim, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
                name="label_embedding")
        self.low_res_dense1 = self.low_res_dense2 = None
        if self.low_res_channels is not None:
            self.low_res_dense1 = keras.layers.Dense(emb_dim, name="low_res_dense1")
            self.low_res_dense2 = keras.layers.Dense(emb_dim, name="low_res_dense2")

        res_kwargs = dict(dropout=self.dropout, use_scale_shift_norm=self.use_scale_shift_norm,
                          num_groups=self.num_groups)
        ch = self.channel_mult[0] * base
        self.input_conv = keras.layers.Conv2D(ch, 3, padding="same", name="input_conv")
        # Flat layer lists with flags: push a skip after a down layer, concatenate one before an up layer.
        self.down_layers, self._push_skip, skip_channels = [], [], [ch]
        resolution, last = self.image_size, len(self.channel_mult) - 1
        for level, mult in enumerate(self.channel_mult):
            for i in range(self.num_res_blocks):
                self.down_layers.append(ResBlock(ch, mult * base, name=f"down{level}_res{i}", **res_kwargs))
                ch = mult * base
                if resolution in self.attention_resolutions:
                    self._push_skip.append(False)
                    self.down_layers.append(self._attention(ch, f"down{level}_attn{i}"))
                self._push_skip.append(True)
                skip_channels.append(ch)
            if level != last:
                self.down_layers.append(
                    ResBlock(ch, ch, resample="down", name=f"down{level}_resample", **res_kwargs)
                    if self.resblock_updown else Downsample(ch, name=f"down{level}_resample"))
                self._push_skip.append(True)
                skip_channels.append(ch)
                resolution //= 2

        self.middle_layers = [
            ResBlock(ch, ch, name="middle_res0", **res_kwargs),
            self._attention(ch, "middle_attn"),
            ResBlock(ch, ch, name="middle_res1", **res_kwargs),
        ]

        self.up_layers, self._concat_skip = [], []
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                self.up_layers.append(
                    ResBlock(ch + skip_channels.pop(), mult * base, name=f"up{level}_res{i}", **res_kwargs))
                self._concat_skip.append(True)
                ch = mult * base
                if resolution in self.attention_resolutions:
                    self.up_layers.append(self._attention(ch, f"up{level}_attn{i}"))
                    self._concat_skip.append(False)
            if level:
                self.up_layers.append(
                    ResBlock(ch, ch, resample="up", name=f"up{level}_resample", **res_kwargs)
                    if self.resblock_updown else Upsample(ch, name=f"up{level}_resample"))
                self._concat_skip.append(False)
                resolution *= 2

        self.out_norm = group_norm(ch, self.num_groups, "out_norm")
        out_channels = 2 * self.in_channels if self.learned_variance else self.in_channels
        # float32 output layer: the loss sees float32 under a mixed precision policy.
        self.out_conv = keras.layers.Conv2D(out_channels, 3, padding="same", kernel_initializer="zeros",
                                            dtype="float32", name="out_conv")

    def _heads(self, channels):
        return channels // self.num_head_channels if self.num_head_channels is not None else self.num_heads

    def _attention(self, channels, name):
        return AttentionBlock(channels, self._heads(channels), self.num_groups, name=name)

    def _validate(self):
        positive = {"image_size": self.image_size, "in_channels": self.in_channels,
                    "base_channels": self.base_channels, "num_res_blocks": self.num_res_blocks,
                    "num_groups": self.num_groups}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty sequence of positive integers, got {self.channel_mult}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size ({self.image_size}) must be divisible by 2**(len(channel_mult) - 1) = "
                             f"{factor}, the total downsampling of channel_mult={self.channel_mult}")
        resolutions = [self.image_size // 2**level for level in range(len(self.channel_mult))]
        for res in self.attention_resolutions:
            if res not in resolutions:
                raise ValueError(f"attention_resolutions entry {res} never occurs; "
                                 f"the resolutions of this UNet are {resolutions}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be None or >= 1, got {self.num_classes}")
        if self.low_res_channels is not None and self.low_res_channels < 1:
            raise ValueError(f"low_res_channels must be None or >= 1, got {self.low_res_channels}")
        # Every attention block's channel count: the listed levels and the middle block.
        attn_channels = {self.base_channels * self.channel_mult[-1]}
        attn_channels |= {self.base_channels * m for m, r in zip(self.channel_mult, resolutions)
                          if r in self.attention_resolutions}
        if self.num_head_channels is not None:
            if self.num_head_channels < 1:
                raise ValueError(f"num_head_channels must be None or >= 1, got {self.num_head_channels}")
            bad = sorted(c for c in attn_channels if c % self.num_head_channels)
            if bad:
                raise ValueError(f"num_head_channels ({self.num_head_channels}) must divide the channels of "
                                 f"every attention block, {sorted(attn_channels)}; it does not divide {bad}")
        else:
            if self.num_heads is None or self.num_heads < 1:
                raise ValueError("set num_heads >= 1 or num_head_channels >= 1; "
                                 f"got num_heads={self.num_heads}, num_head_channels=None")
            bad = sorted(c for c in attn_channels if c % self.num_heads)
            if bad:
                raise ValueError(f"num_heads ({self.num_heads}) must divide the channels of every attention "
                                 f"block, {sorted(attn_channels)}; it does not divide {bad}")

    def build(self, input_shape):
        # Explicit, so a bad input fails here with our message (not inside Keras' symbolic trace)
        # and load_model() rebuilds the variables from the saved input shapes.
        x_shape = tuple(input_shape[0])
        if x_shape[-1] is not None and int(x_shape[-1]) != self.in_channels:
            raise ValueError(f"x_t must have {self.in_channels} channels on its last axis, got shape {x_shape}")
        emb_shape = (None, 4 * self.base_channels)
        self.time_dense1.build((None, self.base_channels))
        self.time_dense2.build(emb_shape)
        if self.label_embedding is not None:
            self.label_embedding.build((None,))
        if self.low_res_channels is not None:
            self.low_res_dense1.build((None, self.base_channels))
            self.low_res_dense2.build(emb_shape)
        self.input_conv.build((None, None, None, self.in_channels + (self.low_res_channels or 0)))
        for layer in [*self.down_layers, *self.middle_layers, *self.up_layers]:
            if isinstance(layer, ResBlock):
                layer.build((None, None, None, layer.in_channels), emb_shape)
            else:
                layer.build((None, None, None, layer.channels))
        ch = self.base_channels * self.channel_mult[0]
        self.out_norm.build((None, None, None, ch))
        self.out_conv.build((None, None, None, ch))
        self.built = True

    def _embed(self, t, y, low_t=None):
        emb = self.time_dense2(ops.silu(self.time_dense1(timestep_embedding(t, self.base_channels))))
        if y is not None:
            emb = emb + self.label_embedding(y)
        if low_t is not None:
            emb = emb + self.low_res_dense2(ops.silu(self.low_res_dense1(timestep_embedding(low_t, self.base_channels))))
        return emb

    @staticmethod
    def _apply(layer, h, emb, training):
        if isinstance(layer, ResBlock):
            return layer(h, emb, training=training)
        return layer(h)

    def call(self, inputs, training=None):
        low_res = low_t = None
        if self.low_res_channels is not None:
            inputs, low_res, low_t = split_low_res(inputs, self.low_res_channels, "UNet")
        x, t, y = unpack_inputs(inputs, self.num_classes, self.in_channels, "UNet")
        emb = self._embed(t, y, low_t)
        if low_res is not None:  # SuperResModel: bilinear upsampling to x's size, then concatenated as channels
            up = ops.image.resize(ops.cast(low_res, x.dtype), (self.image_size, self.image_size), interpolation="bilinear")
            x = ops.concatenate([x, up], axis=-1)
        h = self.input_conv(x)
        skips = [h]
        for layer, push in zip(self.down_layers, self._push_skip):
            h = self._apply(layer, h, emb, training)
            if push:
                skips.append(h)
        for layer in self.middle_layers:
            h = self._apply(layer, h, emb, training)
        for layer, concat in zip(self.up_layers, self._concat_skip):
            if concat:
                h = ops.concatenate([h, skips.pop()], axis=-1)
            h = self._apply(layer, h, emb, training)
        return self.out_conv(ops.silu(self.out_norm(h)))

    def get_config(self):
        config = super().get_config()
        config.update({
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "base_channels": self.base_channels,
            "channel_mult": self.channel_mult,
            "num_res_blocks": self.num_res_blocks,
            "attention_resolutions": self.attention_resolutions,
            "num_heads": self.num_heads,
            "num_head_channels": self.num_head_channels,
            "dropout": self.dropout,
            "resblock_updown": self.resblock_updown,
            "use_scale_shift_norm": self.use_scale_shift_norm,
            "num_classes": self.num_classes,
            "learned_variance": self.learned_variance,
            "num_groups": self.num_groups,
            "low_res_channels": self.low_res_channels,
        })
        return config
