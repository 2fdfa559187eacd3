"""A Gaussian mixture with its closed-form optimal ε-predictor: the analytic oracle.

If x₀ ~ Σ_k w_k·N(μ_k, Σ_k), then q(x_t) = Σ_k w_k·N(√ᾱ_t·μ_k, ᾱ_t·Σ_k + (1−ᾱ_t)·I),
and the minimiser of L_simple is ε*(x_t, t) = E[ε | x_t] = −√(1−ᾱ_t)·∇ log q(x_t)
(Tweedie's formula), i.e.

    ε*(x_t, t) = √(1−ᾱ_t) · Σ_k r_k(x_t) · C_k⁻¹ (x_t − √ᾱ_t·μ_k),
    C_k = ᾱ_t·Σ_k + (1−ᾱ_t)·I,  r_k ∝ w_k·N(x_t; √ᾱ_t·μ_k, C_k).

A sampler driven by this exact ε has no network error, so what it gets wrong
is its own. It is the demo's model and the tests' ``model_fn``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from tfddim.diffusion.schedules import Schedule

__all__ = ["GaussianMixture", "ring"]


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Σ_k w_k·N(μ_k, Σ_k) in D dimensions (float64; covariances positive definite).

    Attributes:
        weights: ``[K]``, positive, summing to 1.
        means: ``[K, D]``.
        covs: ``[K, D, D]``, symmetric positive definite.
    """

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        m = np.asarray(self.means, dtype=np.float64)
        c = np.asarray(self.covs, dtype=np.float64)
        if w.ndim != 1 or m.ndim != 2 or c.ndim != 3 or m.shape[0] != w.shape[0] or c.shape != (w.shape[0], m.shape[1], m.shape[1]):
            raise ValueError(f"mixture shapes must be weights [K], means [K, D], covs [K, D, D]; got {w.shape}, {m.shape}, {c.shape}")
        if np.any(w <= 0) or abs(w.sum() - 1.0) > 1e-9:
            raise ValueError("mixture weights must be positive and sum to 1")
        if not np.allclose(c, np.swapaxes(c, 1, 2)) or np.any(np.linalg.eigvalsh(c) <= 0):
            raise ValueError("mixture covariances must be symmetric positive definite")
        for name, value in (("weights", w), ("means", m), ("covs", c)):
            value.flags.writeable = False
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        return int(self.weights.shape[0])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n exact samples and their component labels, from ``rng``."""
        labels = rng.choice(self.num_components, size=n, p=self.weights)
        chol = np.linalg.cholesky(self.covs)
        z = rng.standard_normal((n, self.dim))
        x = self.means[labels] + np.einsum("nij,nj->ni", chol[labels], z)
        return x, labels

    def component_log_probs(self, x: np.ndarray) -> np.ndarray:
        """log(w_k·N(x; μ_k, Σ_k)) for each point and component, ``[N, K]`` (at t = 0)."""
        x = np.asarray(x, dtype=np.float64)
        out = np.empty((x.shape[0], self.num_components))
        for k in range(self.num_components):
            diff = x - self.means[k]
            inv = np.linalg.inv(self.covs[k])
            _, logdet = np.linalg.slogdet(self.covs[k])
            maha = np.einsum("ni,ij,nj->n", diff, inv, diff)
            out[:, k] = np.log(self.weights[k]) - 0.5 * (maha + logdet + self.dim * np.log(2 * np.pi))
        return out

    def assign(self, x: np.ndarray) -> np.ndarray:
        """The most likely component of each point."""
        return np.argmax(self.component_log_probs(x), axis=1)

    def eps_fn(self, schedule: Schedule) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
        """The optimal ε̂(x_t, t) for this mixture under ``schedule``, as a ``model_fn``.

        ``x_t`` is ``[B, D]`` (any float dtype; the result has the same dtype),
        ``t`` an int ``[B]`` of timestep indices. Graph-safe; no Python branching.
        """
        terms = self._noised_terms(schedule)

        def model_fn(x_t, t):
            ab, log_joint, cinv_diff = terms(x_t, t)
            r = tf.nn.softmax(log_joint, axis=-1)  # responsibilities r_k(x_t), [B, K]
            score_neg = tf.reduce_sum(r[:, :, None] * cinv_diff, axis=1)  # −∇ log q(x_t)
            return tf.sqrt(1.0 - ab[:, 0]) * score_neg

        return model_fn

    def conditional_eps_fn(self, schedule: Schedule) -> Callable:
        """The optimal class-conditional ε̂(x_t, t, y): component y's exact ε; y = K (the null label) is the mixture's.

        A ``model_fn(x_t, t, labels)`` for classifier-free guidance: with w = 1
        it samples component y exactly.
        """
        terms = self._noised_terms(schedule)
        null = self.num_components

        def model_fn(x_t, t, labels):
            ab, log_joint, cinv_diff = terms(x_t, t)
            one_hot = tf.one_hot(tf.minimum(labels, null - 1), null, dtype=x_t.dtype)
            r = tf.where((labels == null)[:, None], tf.nn.softmax(log_joint, axis=-1), one_hot)
            return tf.sqrt(1.0 - ab[:, 0]) * tf.reduce_sum(r[:, :, None] * cinv_diff, axis=1)

        return model_fn

    def classifier_log_prob_fn(self, schedule: Schedule) -> Callable:
        """The exact noisy classifier log p(y | x_t) = log r_y(x_t), as ``log_prob_fn(x_t, t, labels) -> [B]``.

        Its gradient added to the unconditional score is the conditional score,
        so classifier guidance at scale 1 samples component y exactly.
        """
        terms = self._noised_terms(schedule)

        def log_prob_fn(x_t, t, labels):
            _, log_joint, _ = terms(x_t, t)
            log_r = tf.nn.log_softmax(log_joint, axis=-1)
            return tf.gather(log_r, tf.cast(labels, tf.int32), axis=1, batch_dims=1)

        return log_prob_fn

    def _noised_terms(self, schedule: Schedule) -> Callable:
        """(ᾱ_t, log w_k N(x_t; √ᾱ μ_k, C_k) up to a constant, C_k⁻¹(x_t − √ᾱ μ_k)) for a batch."""
        lam, vecs = np.linalg.eigh(self.covs)  # Σ_k = U diag(λ) Uᵀ, so C_k⁻¹ = U diag(1/(ᾱλ+1−ᾱ)) Uᵀ
        consts = {
            "alphas_cumprod": schedule.alphas_cumprod,
            "log_w": np.log(self.weights),
            "means": self.means,
            "lam": lam,
            "vecs": vecs,
        }

        def terms(x_t, t):
            c = {k: tf.constant(v, dtype=x_t.dtype) for k, v in consts.items()}
            ab = tf.gather(c["alphas_cumprod"], tf.cast(t, tf.int32))[:, None, None]  # [B, 1, 1]
            diff = x_t[:, None, :] - tf.sqrt(ab) * c["means"][None]  # [B, K, D]
            proj = tf.einsum("bkd,kde->bke", diff, c["vecs"])  # Uᵀ(x − √ᾱ μ)
            var = ab * c["lam"][None] + (1.0 - ab)  # eigenvalues of C_k, [B, K, D]
            maha = tf.reduce_sum(proj**2 / var, axis=-1)
            log_joint = c["log_w"][None] - 0.5 * (maha + tf.reduce_sum(tf.math.log(var), axis=-1))
            cinv_diff = tf.einsum("bke,kde->bkd", proj / var, c["vecs"])  # C_k⁻¹(x − √ᾱ μ)
            return ab, log_joint, cinv_diff

        return terms


def ring(num_components: int = 8, radius: float = 4.0, std: float = 0.5, weights=None) -> GaussianMixture:
    """Isotropic 2-D components on a circle (the demo's default), optionally unequally weighted."""
    angles = 2 * np.pi * np.arange(num_components) / num_components
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    covs = np.tile(np.eye(2) * std**2, (num_components, 1, 1))
    w = np.full(num_components, 1.0 / num_components) if weights is None else np.asarray(weights, dtype=np.float64)
    return GaussianMixture(weights=w, means=means, covs=covs)
