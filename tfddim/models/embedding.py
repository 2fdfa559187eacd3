"""The conditioning signals of a denoising network: timestep index and class label.

:func:`timestep_embedding` is the Transformer positional encoding applied to
the integer timestep index (DDPM §B, Ho et al. 2020; ADM's
``timestep_embedding``, Dhariwal & Nichol 2021). :func:`unpack_inputs` is the
one place that parses and checks the ``(x_t, t[, y])`` calling convention
shared by every network in :mod:`tfddim.models`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from keras import ops

__all__ = ["timestep_embedding", "unpack_inputs", "split_low_res"]


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding of timestep indices, ``int [B] -> float32 [B, dim]``.

    With half = ⌊dim/2⌋ and frequencies ωᵢ = exp(−log(max_period)·i/half),
    i = 0..half−1 (ADM's spacing; DDPM divides by half − 1), the embedding is
    ``[sin(t·ω₀..), cos(t·ω₀..)]`` (DDPM's sin-then-cos order), with a zero
    column appended when ``dim`` is odd. ``t`` is the timestep *index* in
    [0, T−1], never rescaled, so the highest frequency is one radian per step.

    Args:
        t: int (or float) ``[B]`` timestep indices.
        dim: embedding width, >= 2.
        max_period: the longest wavelength, in steps.
    """
    if int(dim) < 2:
        raise ValueError(f"dim must be >= 2, got {dim!r}")
    half = int(dim) // 2
    # Frequencies are constants computed once in float64, then stored as float32.
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half).astype(np.float32)
    args = ops.cast(ops.reshape(t, (-1, 1)), "float32") * ops.convert_to_tensor(freqs)[None, :]
    emb = ops.concatenate([ops.sin(args), ops.cos(args)], axis=-1)
    if int(dim) % 2:
        emb = ops.pad(emb, [[0, 0], [0, 1]])
    return emb


def _check_labels(y, num_classes):
    """Eagerly reject labels outside [0, num_classes] (num_classes is the null label).

    In a graph the embedding gather itself fails on CPU, but silently returns
    zeros on GPU and under XLA, so the eager check is the one users see first.
    """
    if not (isinstance(y, np.ndarray) or (tf.executing_eagerly() and hasattr(y, "numpy"))):
        return
    values = np.asarray(y)
    if values.size and (values.min() < 0 or values.max() > num_classes):
        raise ValueError(
            f"y must hold class labels in [0, {num_classes}] ({num_classes} is the null label "
            f"for classifier-free guidance), got values in [{values.min()}, {values.max()}]"
        )


def unpack_inputs(inputs, num_classes, channels, name):
    """Split ``(x_t, t)`` or ``(x_t, t, y)`` and check them against the network's configuration.

    Args:
        inputs: a tuple or list of tensors.
        num_classes: None for an unconditional network, else the number of
            classes (labels then range over [0, num_classes]).
        channels: the size x_t must have on its last axis.
        name: the network's class name, for error messages.

    Returns:
        ``(x_t, t, y)`` with ``t`` and ``y`` int32 (``y`` is None when unconditional).
    """
    if not isinstance(inputs, (tuple, list)) or len(inputs) not in (2, 3):
        raise ValueError(f"{name} is called as model((x_t, t)) or model((x_t, t, y)), got {type(inputs).__name__}")
    x_t, t = inputs[0], inputs[1]
    y = inputs[2] if len(inputs) == 3 else None
    if x_t.shape[-1] is not None and int(x_t.shape[-1]) != channels:
        raise ValueError(f"x_t must have {channels} channels on its last axis, got shape {tuple(x_t.shape)}")
    if num_classes is None and y is not None:
        raise ValueError(f"this {name} is unconditional (num_classes=None) but was given labels y")
    if num_classes is not None and y is None:
        raise ValueError(f"this {name} is class-conditional (num_classes={num_classes}) and needs labels y")
    t = ops.cast(t, "int32")
    if y is not None:
        _check_labels(y, num_classes)
        y = ops.cast(y, "int32")
    return x_t, t, y


def split_low_res(inputs, low_res_channels, name):
    """Split an image-conditioned network's ``(x_t, t[, y], low_res, low_res_t)`` into ``(x_t, t[, y])`` and the rest.

    ``low_res`` is float ``[B, h, w, C_low]``; ``low_res_t`` int ``[B]`` the timestep index of the noise
    augmentation it carries (0 = a clean low-resolution image; cascaded diffusion's conditioning augmentation).
    """
    if not isinstance(inputs, (tuple, list)) or len(inputs) not in (4, 5):
        raise ValueError(f"this {name} is image-conditioned (low_res_channels={low_res_channels}) and is called as "
                         f"model((x_t, t, low_res, low_res_t)) or model((x_t, t, y, low_res, low_res_t)); "
                         f"got {len(inputs) if isinstance(inputs, (tuple, list)) else type(inputs).__name__} inputs")
    low_res, low_t = inputs[-2], inputs[-1]
    if low_res.shape.rank is not None and low_res.shape.rank != 4:
        raise ValueError(f"low_res must have shape [B, h, w, {low_res_channels}], got {tuple(low_res.shape)}")
    if low_res.shape[-1] is not None and int(low_res.shape[-1]) != low_res_channels:
        raise ValueError(f"low_res must have {low_res_channels} channels on its last axis, got shape {tuple(low_res.shape)}")
    return tuple(inputs[:-2]), low_res, ops.cast(low_t, "int32")
