"""Super-resolution scoring helpers: per-image PSNR and the bilinear baseline.

A super-resolution (cascade) stage turns a low-resolution image into a high-resolution
one; :func:`bilinear_upsample` is the baseline it has to beat (no learning: bilinear
interpolation of the low-resolution image), and :func:`psnr` scores either against the
real high-resolution image.

:func:`psnr` averages the per-image PSNR (the usual super-resolution convention, e.g.
SR3, Saharia et al. 2021), unlike :func:`tfddim.evaluation.metrics.reconstruction_error`,
whose PSNR is of the MSE pooled over all images; the two agree when every image has the
same MSE.
"""

from __future__ import annotations

import numpy as np

__all__ = ["psnr", "bilinear_upsample"]


def psnr(x, y, data_range: float = 2.0) -> float:
    """Mean over images of the per-image PSNR in dB.

    For image i, MSE_i = mean over its pixels and channels of (x_i − y_i)², and
    PSNR_i = 10·log10(data_range² / MSE_i); the result is mean_i PSNR_i.
    ``data_range`` is the span of the pixel values: 2 for images in [-1, 1].
    An image with MSE_i = 0 has PSNR_i = +inf (and so does the mean).

    Args:
        x, y: images ``[N, ...]`` of the same shape (N >= 1), e.g. ``[N, H, W, C]`` in [-1, 1].
        data_range: > 0.

    Returns:
        the mean PSNR (float, dB).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and y shape mismatch: {a.shape} vs {b.shape}")
    if a.ndim < 2 or a.shape[0] == 0 or a[0].size == 0:
        raise ValueError(f"x must be [N, ...] with N >= 1 images of at least one value, got shape {a.shape}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    mse = np.mean((a - b).reshape(len(a), -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        per_image = 10.0 * np.log10(float(data_range) ** 2 / mse)  # mse = 0 → +inf
    return float(np.mean(per_image))


def bilinear_upsample(low, size) -> np.ndarray:
    """Bilinear interpolation of ``low`` ``[N, h, w, C]`` to ``size`` (``s`` or ``(H, W)``): the SR baseline.

    ``tf.image.resize(method="bilinear")`` (half-pixel centres, no antialiasing: that only
    matters when shrinking). Returns float32 ``[N, H, W, C]`` (values stay within ``low``'s range).
    """
    import tensorflow as tf

    low = np.asarray(low, dtype=np.float32)
    if low.ndim != 4:
        raise ValueError(f"low must be [N, h, w, C], got shape {low.shape}")
    if np.ndim(size) == 0:
        size = (int(size), int(size))
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive side or (H, W), got {size!r}")
    return tf.image.resize(low, size, method="bilinear").numpy().astype(np.float32)
