"""The DDIM steps × η study (DDIM paper Table 1) and its figures, as arrays and rows (no files).

The grid: S ∈ {10, 20, 50, 100, 1000} × η ∈ {0, 0.2, 0.5, 1, σ̂}, DDIM's
generalised sampler on the S-step sub-sequence (eq. 16 with σ = η·σ_DDPM, and
σ̂ the larger DDPM variance, DDIM §5.1), plus improved DDPM's strided sampling
(§4: DDPM on the respaced betas, with the network's learned variance). For a
fixed-variance network the strided DDPM sampler *is* a grid row — β̃ is η = 1,
β is σ̂ — so it is only added for learned-variance networks.

Every cell starts from the same x_T (one seed), so cells differ only by the
sampler; each cell's metrics are computed against the same reference set, and
the same metrics between two disjoint halves of the real data give the noise
floor printed next to them. A feature network with a spatial map
(:class:`tfddim.evaluation.features.SpatialFeatureNet`) adds sFID beside FID,
from the same forward pass.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import numpy as np

from tfddim import sampling
from tfddim.evaluation import metrics
from tfddim.evaluation.features import ReferenceStatistics, extract
from tfddim.evaluation.seeds import batch_seed
from tfddim.diffusion.schedules import Schedule
from tfddim.diffusion.spacing import spaced_timesteps

__all__ = ["DEFAULT_STEPS", "DEFAULT_ETAS", "Cell", "grid_cells", "parse_etas", "FlatFeatures", "Reference",
           "sample_cell", "score", "consistency", "interpolation", "reconstruction", "trajectories"]

DEFAULT_STEPS = (10, 20, 50, 100, 1000)
DEFAULT_ETAS = (0.0, 0.2, 0.5, 1.0, sampling.SIGMA_HAT)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One sampler of the grid: DDIM with η (a number or σ̂, :data:`tfddim.sampling.SIGMA_HAT`), or strided DDPM."""

    method: sampling.Method
    eta: object
    steps: int

    def __post_init__(self):
        object.__setattr__(self, "method", sampling.Method(self.method))
        if self.eta is not None:
            object.__setattr__(self, "eta", sampling.parse_eta(self.eta))

    @property
    def row(self) -> str:
        if self.method is sampling.Method.DDPM:
            return "DDPM strided (learned Σ)"
        return "DDIM η=σ̂" if self.eta is sampling.SIGMA_HAT else f"DDIM η={float(self.eta):g}"


def parse_etas(text: str) -> tuple:
    """``"0,0.2,1,sigma_hat"`` → ``(0.0, 0.2, 1.0, SIGMA_HAT)``; η must lie in [0, 1]."""
    out = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        try:
            number = float(item)
        except ValueError:
            number = None
        if number is None and item not in ("sigma_hat", "σ̂"):
            raise ValueError(f"etas: expected numbers in [0, 1] or sigma_hat, got {item!r}")
        if number is not None and not 0.0 <= number <= 1.0:
            raise ValueError(f"etas: eta must lie in [0, 1], got {number}")
        out.append(sampling.parse_eta(item if number is None else number))
    if not out:
        raise ValueError("etas: give at least one eta")
    return tuple(out)


def grid_cells(steps: Sequence[int], etas: Sequence, learned_variance: bool, num_timesteps: int) -> list:
    """The cells in table order: one row per η (plus strided DDPM for learned Σ), one column per S."""
    bad = [s for s in steps if not 1 <= int(s) <= num_timesteps]
    if bad:
        raise ValueError(f"steps must lie in [1, T = {num_timesteps}], got {bad}")
    cells = [Cell(sampling.Method.DDIM, eta, int(s)) for eta in etas for s in steps]
    if learned_variance:
        cells += [Cell(sampling.Method.DDPM, None, int(s)) for s in steps]
    return cells


class FlatFeatures:
    """The identity feature map (flattened data): for low-dimensional data such as mixture2d."""

    identity = "raw"

    def features(self, images, batch_size: int = 256) -> np.ndarray:
        x = np.asarray(images, np.float64)
        return x.reshape(len(x), -1)

    def logits(self, images, batch_size: int = 256):
        return None


@dataclasses.dataclass
class Reference:
    """Features of the reference half A of the real data, and the noise floor (half B against A).

    ``spatial_mu``/``spatial_sigma``: the Gaussian fit of A's spatial features (sFID), None for a
    feature network without a spatial map.
    """

    features: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    floor: dict
    spatial_mu: Optional[np.ndarray] = None
    spatial_sigma: Optional[np.ndarray] = None

    @classmethod
    def build(cls, feature_net, half_a, half_b, stats=None, kid_subset: int = 1000) -> "Reference":
        """``stats``: A's cached :class:`~tfddim.evaluation.features.ReferenceStatistics` (or a ``(mu, sigma)``
        pair), None to fit them here; spatial statistics missing from ``stats`` are fitted here."""
        feats, spatial = extract(feature_net, half_a)
        if stats is not None and not isinstance(stats, ReferenceStatistics):
            stats = ReferenceStatistics(*stats)
        if stats is None:
            stats = ReferenceStatistics(*metrics.feature_statistics(feats))
        spatial_mu, spatial_sigma = stats.spatial_mu, stats.spatial_sigma
        if spatial is not None and spatial_mu is None:
            spatial_mu, spatial_sigma = metrics.feature_statistics(spatial)
        ref = cls(feats, stats.mu, stats.sigma, {}, spatial_mu, spatial_sigma)
        ref.floor = score(feature_net, half_b, ref, kid_subset=kid_subset)
        return ref


def score(feature_net, samples, reference: Reference, labels=None, kid_subset: int = 1000) -> dict:
    """FID, sFID (given spatial features and reference statistics for them), KID (mean, std), precision, recall
    (k = 5), the Inception-Score analogue and, given ``labels``, class accuracy, of ``samples`` against
    ``reference``. The features and spatial features come from one forward pass."""
    feats, spatial = extract(feature_net, samples)
    mu, sigma = metrics.feature_statistics(feats)
    out = {"fid": metrics.frechet_distance(mu, sigma, reference.mu, reference.sigma)}
    if spatial is not None and reference.spatial_mu is not None:
        spatial_mu, spatial_sigma = metrics.feature_statistics(spatial)
        out["sfid"] = metrics.frechet_distance(spatial_mu, spatial_sigma, reference.spatial_mu, reference.spatial_sigma)
    out["kid"], out["kid_std"] = metrics.kid(feats, reference.features, subset_size=kid_subset)
    out["precision"], out["recall"] = metrics.precision_recall(reference.features, feats, k=5)
    logits = feature_net.logits(samples)
    if logits is not None:
        out["is"], out["is_std"] = metrics.inception_score(logits, num_splits=min(10, len(samples)))
        if labels is not None:
            out["class_accuracy"] = metrics.class_accuracy(logits, labels)
    return out


def _batched(fn: Callable, x_T: np.ndarray, batch_size: int, progress=None) -> np.ndarray:
    out = []
    for start in range(0, len(x_T), batch_size):
        out.append(np.asarray(fn(x_T[start:start + batch_size], start)))
        if progress is not None:
            progress(min(len(x_T), start + batch_size))
    return np.concatenate(out)


def sample_cell(model_fn, schedule: Schedule, cell: Cell, x_T: np.ndarray, options: dict, batch_size: int = 500,
                seed: int = 0, spacing: str = "uniform", progress=None, cache: Optional[sampling.SamplerCache] = None
                ) -> np.ndarray:
    """Samples of one cell from the shared ``x_T`` (noise for η > 0 from ``seed`` and the batch start).

    ``cache`` keeps the compiled samplers between calls (one trace per sampler for the whole grid).
    """
    timesteps = spaced_timesteps(schedule.num_timesteps, cell.steps, spacing)
    opts = dict(options)
    if cell.method is sampling.Method.DDPM:
        opts.setdefault("variance", sampling.Variance.LEARNED_RANGE)
        opts["method"] = cell.method
    else:
        opts.update(method=cell.method, eta=cell.eta)
    cache = sampling.SamplerCache() if cache is None else cache
    run = lambda x, start: sampling.sample(model_fn, x, schedule, timesteps, seed=batch_seed(seed, start),  # noqa: E731
                                           cache=cache, **opts)
    return _batched(run, x_T, batch_size, progress)


def timed(fn: Callable, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)``."""
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


# ------------------------------------------------------------------------ figures (arrays)
def consistency(model_fn, schedule: Schedule, x_T: np.ndarray, steps: Sequence[int], options: dict,
                cache: Optional[sampling.SamplerCache] = None) -> np.ndarray:
    """DDIM (η = 0) decodings of the same x_T at each S: ``[len(steps), N, ...]`` (DDIM §5.2, Fig. 5)."""
    cache = sampling.SamplerCache() if cache is None else cache
    return np.stack([np.asarray(sampling.decode(model_fn, x_T, schedule, spaced_timesteps(schedule.num_timesteps, s),
                                                cache=cache, **options)) for s in steps])


def interpolation(model_fn, schedule: Schedule, x_a: np.ndarray, x_b: np.ndarray, num: int, steps: int,
                  options: dict, cache: Optional[sampling.SamplerCache] = None) -> np.ndarray:
    """Rows of DDIM decodings along slerp(x_a[i], x_b[i]): ``[P, num, ...]`` (DDIM §5.3, Fig. 6)."""
    timesteps = spaced_timesteps(schedule.num_timesteps, steps)
    cache = sampling.SamplerCache() if cache is None else cache
    return np.stack([np.asarray(sampling.interpolate(model_fn, a, b, schedule, timesteps, num, cache=cache, **options)[0])
                     for a, b in zip(x_a, x_b)])


def reconstruction(model_fn, schedule: Schedule, x0: np.ndarray, steps: Sequence[int], options: dict,
                   cache: Optional[sampling.SamplerCache] = None):
    """encode → decode of real ``x0`` at each S: (``[len(steps), N, ...]``, [{rmse, max_abs, psnr}]) (DDIM §5.4, Table 2)."""
    recs, errors = [], []
    cache = sampling.SamplerCache() if cache is None else cache
    for s in steps:
        timesteps = spaced_timesteps(schedule.num_timesteps, s)
        latent = sampling.encode(model_fn, x0, schedule, timesteps, cache=cache, **options)
        rec = np.asarray(sampling.decode(model_fn, latent, schedule, timesteps, cache=cache, **options))
        recs.append(rec)
        errors.append(metrics.reconstruction_error(x0, rec))
    return np.stack(recs), errors


def trajectories(model_fn, schedule: Schedule, x_T: np.ndarray, steps: int, options: dict,
                 cache: Optional[sampling.SamplerCache] = None) -> np.ndarray:
    """The x̂₀ predicted at every step of a DDIM (η = 0) run: ``[S, N, ...]`` (the "jumping" view)."""
    timesteps = spaced_timesteps(schedule.num_timesteps, steps)
    _, traj = sampling.sample(model_fn, x_T, schedule, timesteps, eta=0.0, return_trajectory=True, cache=cache,
                              **options)
    return np.asarray(traj.x0_hat)
