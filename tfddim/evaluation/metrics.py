"""Sample-quality metrics on feature vectors and logits (numpy/scipy, float64).

FID, sFID, KID, improved precision/recall, Inception Score, classifier accuracy and
reconstruction error. Every function takes plain arrays (features or logits that
some network already produced), so this module knows no TensorFlow.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.special

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "fid",
    "sfid",
    "kid",
    "KID_SCALE",
    "KID_RAW_COLUMNS",
    "format_kid",
    "raw_kid_columns",
    "precision_recall",
    "inception_score",
    "class_accuracy",
    "reconstruction_error",
]

# Rows of query points per block of pairwise distances in precision_recall:
# a block is [_BATCH_ROWS, N] float64, i.e. 80 MB for N = 10 000.
_BATCH_ROWS = 1000


def _as_features(features, name: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {x.shape}")
    return x


def _feature_pair(a, b, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_features(a, name_a), _as_features(b, name_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} dimension mismatch: {a.shape[1]} vs {b.shape[1]}")
    return a, b


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of features ``[N, D]``.

    μ = (1/N) Σ_i x_i,  Σ = 1/(N-1) Σ_i (x_i - μ)(x_i - μ)ᵀ  (``np.cov(rowvar=False)``),
    the Gaussian fit of Heusel et al. 2017 (FID).
    """
    x = _as_features(features, "features")
    if len(x) < 2:
        raise ValueError(f"features needs at least 2 rows (N >= 2) for a covariance, got N={len(x)}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """The Fréchet (2-Wasserstein) distance between N(μ1, Σ1) and N(μ2, Σ2).

    d² = ||μ1 - μ2||² + Tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^{1/2})   (Heusel et al. 2017, eq. in §3;
    Dowson & Landau 1982). Numerics follow the TTUR reference / pytorch-fid: if
    ``sqrtm(Σ1 Σ2)`` is not finite (singular product), it is recomputed with
    ``eps·I`` added to both covariances; an imaginary part of the square root's
    diagonal (the only part the trace uses) up to 1e-3 in absolute value is
    numerical noise and dropped, a larger one raises ValueError. The value is
    returned as computed, without clamping: a tiny negative number (rounding)
    is possible when the two distributions coincide.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"sigma1 and sigma2 must be [{d}, {d}] to match mu1, got {sigma1.shape} and {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError("frechet_distance: sqrtm(sigma1 @ sigma2) is not finite even with eps added")
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > 1e-3:
            raise ValueError(f"frechet_distance: sqrtm(sigma1 @ sigma2) has imaginary component {imag:.3g} > 1e-3")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(value)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` without its singular-matrix warning (the caller checks finiteness)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return scipy.linalg.sqrtm(a)


def fid(features_a, features_b) -> float:
    """Fréchet Inception Distance between two feature sets ``[N, D]`` and ``[M, D]``.

    FID = frechet_distance(feature_statistics(a), feature_statistics(b))  (Heusel et al. 2017).
    Biased at finite N (≈ (Tr Σa + Tr Σb)/N from the means alone): compare FIDs only
    at equal sample sizes.
    """
    a, b = _feature_pair(features_a, features_b, "features_a", "features_b")
    mu_a, sigma_a = feature_statistics(a)
    mu_b, sigma_b = feature_statistics(b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def sfid(spatial_a, spatial_b) -> float:
    """sFID (Nash et al. 2021; ADM, Dhariwal & Nichol 2021): :func:`fid` on *spatial* features.

    The same Fréchet distance of Gaussian fits, on a flattened intermediate feature map
    ``[N, H·W·k]`` instead of the pooled features (ADM: the first 7 channels of InceptionV3's
    17x17 ``mixed_6/conv``, 2023-d; tfddim's maps are in :mod:`tfddim.evaluation.features`).
    Pooling discards where features are; the flattened map keeps it, so sFID also responds to
    spatial structure (a shift, a misplaced stroke). Biased at finite N as FID is, more so for
    its higher dimension: compare sFIDs at equal sample sizes and against the noise floor.
    """
    a, b = _feature_pair(spatial_a, spatial_b, "spatial_a", "spatial_b")
    return fid(a, b)


def _polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(x, y) = (xᵀy/d + 1)³ for equal-size sets (Gretton et al. 2012, eq. 3)."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def kid(features_a, features_b, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs"), (mean, std).

    KID = MMD²_u with the cubic polynomial kernel k(x, y) = (xᵀy/d + 1)³:
      MMD²_u = 1/(m(m-1)) Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m² Σ_{i,j} k(x_i, y_j),
    unbiased (the diagonal k(x_i, x_i) terms are excluded), so it can be negative and
    averages to 0 for equal distributions. It is computed on ``num_subsets`` pairs of
    subsets of size m = min(subset_size, len(a), len(b)), each drawn without replacement
    with ``np.random.default_rng(seed)`` (indices into a, then into b, per subset);
    returns the mean and the (population, ddof=0) standard deviation over subsets.
    """
    a, b = _feature_pair(features_a, features_b, "features_a", "features_b")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(
            f"kid: subset size m = min(subset_size, len(a), len(b)) must be >= 2, got {m} "
            f"(subset_size={subset_size}, len(a)={len(a)}, len(b)={len(b)})"
        )
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    for s in range(num_subsets):
        ia = rng.choice(len(a), size=m, replace=False)
        ib = rng.choice(len(b), size=m, replace=False)
        values[s] = _polynomial_mmd2_unbiased(a[ia], b[ib])
    return float(values.mean()), float(values.std())


KID_SCALE = 1e3
"""Tables print KID ×10³, as the literature does (Bińkowski et al. 2018; Karras et al. 2020)."""

KID_RAW_COLUMNS = {"kid": "kid_raw", "kid_std": "kid_std_raw"}
"""The names KID's mean and std take in written CSV/JSON files, which keep the raw (unscaled) MMD²."""


def format_kid(mean: float, std: float, scale: float = KID_SCALE) -> str:
    """One table cell for KID: ``mean ± std`` ×``scale`` to three significant figures of the larger,
    or ``unresolved (mean ± std)`` when |mean| < 2·std (the subsets' spread covers 0 and the sign).

    >>> format_kid(-0.1199, 1.0497)
    'unresolved (-120 ± 1050)'
    >>> format_kid(0.00321, 0.00045)
    '3.21 ± 0.45'
    """
    mean, std = float(mean), float(std)
    if not (np.isfinite(mean) and np.isfinite(std)):
        return f"{mean * scale:g} ± {std * scale:g}"
    m, s = mean * scale, std * scale
    largest = max(abs(m), abs(s))
    decimals = 2 if largest == 0 else max(0, 2 - int(np.floor(np.log10(largest))))
    text = f"{m:.{decimals}f} ± {s:.{decimals}f}"
    return f"unresolved ({text})" if abs(mean) < 2.0 * std else text


def raw_kid_columns(values: dict) -> dict:
    """``values`` with KID's keys renamed for a file (``kid`` → ``kid_raw``, ``kid_std`` → ``kid_std_raw``),
    order kept: the written numbers are MMD² as computed, not the ×10³ of the tables."""
    return {KID_RAW_COLUMNS.get(k, k): v for k, v in values.items()}


def _sq_dists(x: np.ndarray, y: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[len(x), len(y)]`` = |x|² + |y|² - 2xᵀy, clamped at 0."""
    d2 = np.sum(x * x, axis=1)[:, None] + y_sq[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d2, 0.0)


def _knn_sq_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row (self excluded)."""
    x_sq = np.sum(x * x, axis=1)
    radii = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), _BATCH_ROWS):
        block = _sq_dists(x[start:start + _BATCH_ROWS], x, x_sq)
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = 0.0  # self-distance is exactly 0, whatever the rounding
        # Sorted row: index 0 is the point itself (0), index k its k-th nearest neighbour.
        radii[start:start + _BATCH_ROWS] = np.partition(block, k, axis=1)[:, k]
    return radii


def _inside_fraction(queries: np.ndarray, points: np.ndarray, sq_radii: np.ndarray) -> float:
    """Fraction of queries q with |q - p_j|² <= r_j² for some j (inside the union of balls)."""
    p_sq = np.sum(points * points, axis=1)
    inside = 0
    for start in range(0, len(queries), _BATCH_ROWS):
        block = _sq_dists(queries[start:start + _BATCH_ROWS], points, p_sq)
        inside += int(np.count_nonzero(np.any(block <= sq_radii[None, :], axis=1)))
    return inside / len(queries)


def precision_recall(real_features, fake_features, k: int = 5) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), (precision, recall).

    The manifold of a set Φ is ∪_{φ∈Φ} B(φ, NN_k(φ)), a ball around each point with radius
    its distance to its k-th nearest neighbour in Φ (itself excluded). With
    f(x, Φ) = 1 iff |x - φ| <= NN_k(φ) for some φ ∈ Φ:
      precision = mean_{fake x} f(x, Φ_real),   recall = mean_{real x} f(x, Φ_fake).
    Distances are exact (Euclidean, float64), computed in blocks of ``_BATCH_ROWS`` rows.
    """
    real, fake = _feature_pair(real_features, fake_features, "real_features", "fake_features")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= min(len(real), len(fake)):
        raise ValueError(
            f"k must be < the size of each set (k-th neighbour excluding itself), "
            f"got k={k} with {len(real)} real and {len(fake)} fake points"
        )
    precision = _inside_fraction(fake, real, _knn_sq_radii(real, k))
    recall = _inside_fraction(real, fake, _knn_sq_radii(fake, k))
    return precision, recall


def inception_score(logits, num_splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016) from classifier logits ``[N, C]``, (mean, std).

    IS = exp(E_x KL(p(y|x) || p(y))), p(y) = E_x p(y|x), computed on each of ``num_splits``
    consecutive splits of the rows (``np.array_split``, in order) and returned as the mean
    and (ddof=0) standard deviation over splits, as in the reference code. Softmax is done
    in log space (log p = logits - logsumexp), so large logits and zero probabilities are safe.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D [N, C], got shape {z.shape}")
    n = len(z)
    if num_splits < 1 or num_splits > n:
        raise ValueError(f"num_splits must be in [1, N={n}], got {num_splits}")
    log_p = z - scipy.special.logsumexp(z, axis=1, keepdims=True)
    scores = []
    for part in np.array_split(log_p, num_splits, axis=0):
        log_py = scipy.special.logsumexp(part, axis=0) - np.log(len(part))
        kl = np.sum(np.exp(part) * (part - log_py[None, :]), axis=1)
        scores.append(np.exp(np.mean(kl)))
    scores = np.asarray(scores)
    return float(scores.mean()), float(scores.std())


def class_accuracy(logits, labels) -> float:
    """Top-1 accuracy: mean_i [argmax_c logits[i, c] == labels[i]] for logits ``[N, C]``, labels ``[N]``.

    Used e.g. for class-conditional samples scored by a classifier (the fraction generated
    in the requested class).
    """
    z = np.asarray(logits)
    y = np.asarray(labels)
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D [N, C], got shape {z.shape}")
    if y.ndim != 1 or len(y) != len(z):
        raise ValueError(f"labels must be [N] with N={len(z)} matching logits, got shape {y.shape}")
    if len(z) == 0:
        raise ValueError("logits must have at least one row")
    return float(np.mean(np.argmax(z, axis=1) == y))


def reconstruction_error(x, x_rec, data_range: float = 2.0) -> dict:
    """Errors of a reconstruction (e.g. DDIM encode → decode, Song et al. 2021 Table 2).

    rmse = sqrt(mean (x - x_rec)²) over all elements, max_abs = max |x - x_rec|,
    psnr = 20 log10(data_range / rmse) in dB (data_range = 2 for data in [-1, 1];
    +inf when rmse = 0).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(x_rec, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and x_rec shape mismatch: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("x must have at least one element")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    err = a - b
    rmse = float(np.sqrt(np.mean(err * err)))
    psnr = float("inf") if rmse == 0.0 else float(20.0 * np.log10(data_range / rmse))
    return {"rmse": rmse, "max_abs": float(np.max(np.abs(err))), "psnr": psnr}
