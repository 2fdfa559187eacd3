"""Noise schedules: betas, alphas and their cumulative products, in numpy float64.

Notation (DDPM names throughout; seed 003 maps them to the DDIM paper's):

=====================  ==========================  ======================
code                   DDPM paper                  DDIM paper
=====================  ==========================  ======================
``betas[t]``           β_t                         1 − α_t/α_{t−1}
``alphas[t]``          α_t = 1 − β_t               α_t/α_{t−1}
``alphas_cumprod[t]``  ᾱ_t = ∏_{s≤t} α_s           α_t
=====================  ==========================  ======================

Timesteps are 0-based: ``alphas_cumprod[0]`` is ᾱ after one noising step and
``alphas_cumprod[T-1]`` is the most noised level. As in improved-diffusion, the
coefficient arrays are computed once in float64; samplers gather them per
timestep (see :func:`tfddim.diffusion.steps.select_timestep`).

Schedule names are append-only: a saved schedule stores its betas, so a model
reproduces even if a named recipe were ever to change.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Mapping

import numpy as np

from tfddim.diffusion.spacing import parse_spacing, spaced_timesteps  # noqa: F401  (public API)

__all__ = [
    "Schedule",
    "get",
    "from_betas",
    "names",
    "linear_betas",
    "cosine_betas",
    "quad_betas",
    "sigmoid_betas",
    "rescale_zero_terminal_snr",
    "spaced_timesteps",
    "parse_spacing",
]


def _check_num_timesteps(num_timesteps: int) -> int:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)):
        raise ValueError(f"num_timesteps must be an integer, got {num_timesteps!r}")
    if num_timesteps < 2:
        raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
    return int(num_timesteps)


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's linear schedule, β_t = linspace(β_1, β_T).

    The endpoints are given for T = 1000; for other T both are scaled by 1000/T,
    as improved-diffusion's ``get_named_beta_schedule("linear", T)`` does, so
    that ᾱ_T stays close to the same value.
    """
    num_timesteps = _check_num_timesteps(num_timesteps)
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)


def _betas_for_alpha_bar(num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float) -> np.ndarray:
    """β_t = min(1 − ᾱ(t+1/T)/ᾱ(t/T), max_beta): improved DDPM's ``betas_for_alpha_bar``."""
    betas = []
    for i in range(num_timesteps):
        t1 = i / num_timesteps
        t2 = (i + 1) / num_timesteps
        betas.append(min(1.0 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.asarray(betas, dtype=np.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Improved DDPM's cosine schedule (Nichol & Dhariwal, eq. 17).

    ᾱ(t) = f(t)/f(0) with f(t) = cos²(((t/T) + s)/(1 + s) · π/2); β_t = 1 − ᾱ_t/ᾱ_{t−1},
    clipped at ``max_beta`` (0.999) to avoid the singularity at t = T.
    """
    num_timesteps = _check_num_timesteps(num_timesteps)

    def f(t: float) -> float:
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    return _betas_for_alpha_bar(num_timesteps, f, max_beta)


def quad_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """The DDIM code's "quad" schedule: β = linspace(√β_1, √β_T, T)²."""
    num_timesteps = _check_num_timesteps(num_timesteps)
    return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2


def sigmoid_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """The DDIM code's "sigmoid" schedule: β = sigmoid(linspace(−6, 6, T))·(β_T − β_1) + β_1."""
    num_timesteps = _check_num_timesteps(num_timesteps)
    x = np.linspace(-6.0, 6.0, num_timesteps, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x)) * (beta_end - beta_start) + beta_start


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale betas so that ᾱ_{T−1} = 0 (Lin et al. 2023, Algorithm 1).

    √ᾱ is shifted so its last value is 0 and scaled so its first value is
    unchanged; the last β becomes 1. Sampling at the terminal step then needs a
    prediction type that determines x̂₀ there ("v_prediction" or "sample"):
    ε alone cannot, since x̂₀ = (x_t − √(1−ᾱ)ε)/√ᾱ divides by zero.
    """
    betas = np.asarray(betas, dtype=np.float64)
    sqrt_ab = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


_NAMED: dict[str, Callable[..., np.ndarray]] = {
    # Append-only: a name, once shipped, keeps its meaning.
    "linear": linear_betas,
    "cosine": cosine_betas,
    "quad": quad_betas,
    "sigmoid": sigmoid_betas,
}


def names() -> tuple[str, ...]:
    """The registered schedule names."""
    return tuple(_NAMED)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """An immutable diffusion schedule: β_t and every term derived from it.

    Build one with :func:`get` or :func:`from_betas`; save it with
    :meth:`to_config` / :meth:`to_json` and load it with :meth:`from_config`.
    All arrays are float64 numpy arrays of shape ``[T]`` and read-only.

    Attributes:
        betas: β_t.
        name: the recipe it came from ("linear", "cosine", ..., or "custom").
        params: the recipe's keyword arguments (for the record; ``betas`` rule).
    """

    betas: np.ndarray
    name: str = "custom"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1:
            raise ValueError(f"betas must be 1-D, got shape {betas.shape}")
        _check_num_timesteps(betas.shape[0])
        if not np.all(np.isfinite(betas)):
            raise ValueError("betas must be finite")
        if np.any(betas <= 0.0) or np.any(betas > 1.0):
            raise ValueError("betas must lie in (0, 1]")
        if np.any(betas[:-1] >= 1.0):
            raise ValueError("only the last beta may equal 1 (zero terminal SNR)")
        object.__setattr__(self, "betas", _readonly(betas))
        object.__setattr__(self, "params", dict(self.params))

    # Identity is the content, so equal schedules share compiled samplers.
    def _key(self) -> tuple:
        return (self.betas.tobytes(),)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def num_timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return int(self.betas.shape[0])

    @property
    def alphas(self) -> np.ndarray:
        """α_t = 1 − β_t."""
        return _readonly(1.0 - self.betas)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """ᾱ_t = ∏_{s≤t} α_s (the DDIM paper's α_t)."""
        return _readonly(np.cumprod(1.0 - self.betas))

    @property
    def alphas_cumprod_prev(self) -> np.ndarray:
        """ᾱ_{t−1}, with ᾱ_{−1} = 1."""
        return _readonly(np.append(1.0, self.alphas_cumprod[:-1]))

    @property
    def sqrt_alphas_cumprod(self) -> np.ndarray:
        """√ᾱ_t, the signal scale of q(x_t | x_0) (DDPM eq. 4)."""
        return _readonly(np.sqrt(self.alphas_cumprod))

    @property
    def sqrt_one_minus_alphas_cumprod(self) -> np.ndarray:
        """√(1 − ᾱ_t), the noise scale of q(x_t | x_0) (DDPM eq. 4)."""
        return _readonly(np.sqrt(1.0 - self.alphas_cumprod))

    @property
    def posterior_variance(self) -> np.ndarray:
        """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t (DDPM eq. 7); β̃_0 = 0."""
        ab, ab_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        return _readonly(self.betas * (1.0 - ab_prev) / (1.0 - ab))

    @property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        """log β̃_t with β̃_0 replaced by β̃_1 (improved-diffusion), since β̃_0 = 0."""
        pv = self.posterior_variance
        return _readonly(np.log(np.append(pv[1], pv[1:])))

    @property
    def posterior_mean_coef1(self) -> np.ndarray:
        """Coefficient of x_0 in μ̃_t(x_t, x_0): √ᾱ_{t−1}·β_t/(1 − ᾱ_t) (DDPM eq. 7)."""
        return _readonly(self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod))

    @property
    def posterior_mean_coef2(self) -> np.ndarray:
        """Coefficient of x_t in μ̃_t(x_t, x_0): √α_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t) (DDPM eq. 7)."""
        return _readonly(
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        )

    @property
    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio ᾱ_t/(1 − ᾱ_t)."""
        ab = self.alphas_cumprod
        return _readonly(ab / (1.0 - ab))

    @property
    def half_log_snr(self) -> np.ndarray:
        """λ_t = log(α_t/σ_t) = ½·log(ᾱ_t/(1 − ᾱ_t)), DPM-Solver's time variable (−∞ where ᾱ_t = 0)."""
        ab = self.alphas_cumprod
        with np.errstate(divide="ignore"):
            return _readonly(0.5 * (np.log(ab) - np.log1p(-ab)))

    def to_config(self) -> dict:
        """A JSON-serialisable dict; floats round-trip exactly."""
        return {
            "name": self.name,
            "num_timesteps": self.num_timesteps,
            "params": dict(self.params),
            "betas": [float(b) for b in self.betas],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Schedule":
        """Inverse of :meth:`to_config`; the stored betas are authoritative."""
        if "betas" not in config:
            raise ValueError("schedule config needs 'betas'")
        betas = np.asarray(config["betas"], dtype=np.float64)
        if "num_timesteps" in config and int(config["num_timesteps"]) != betas.shape[0]:
            raise ValueError(
                f"schedule config: num_timesteps={config['num_timesteps']} but {betas.shape[0]} betas"
            )
        return cls(betas=betas, name=config.get("name", "custom"), params=config.get("params", {}))

    def to_json(self) -> str:
        return json.dumps(self.to_config())

    @classmethod
    def from_json(cls, text: str) -> "Schedule":
        return cls.from_config(json.loads(text))


def get(name: str, num_timesteps: int = 1000, *, zero_terminal_snr: bool = False, **params: Any) -> Schedule:
    """A named schedule: "linear", "cosine", "quad" or "sigmoid".

    Args:
        name: the recipe.
        num_timesteps: T (>= 2).
        zero_terminal_snr: rescale so that ᾱ_{T−1} = 0 (:func:`rescale_zero_terminal_snr`).
        **params: the recipe's own options (``beta_start``/``beta_end``, ``s``, ``max_beta``).
    """
    if name not in _NAMED:
        raise ValueError(f"unknown schedule name {name!r}; expected one of {sorted(_NAMED)}")
    try:
        betas = _NAMED[name](num_timesteps, **params)
    except TypeError as e:
        raise ValueError(f"schedule {name!r}: {e}") from None
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    record = dict(params, zero_terminal_snr=bool(zero_terminal_snr))
    return Schedule(betas=betas, name=name, params=record)


def from_betas(betas, *, zero_terminal_snr: bool = False) -> Schedule:
    """A schedule from explicit β_t values (1-D, in (0, 1], length >= 2)."""
    betas = np.asarray(betas, dtype=np.float64)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return Schedule(betas=betas, name="custom", params={"zero_terminal_snr": bool(zero_terminal_snr)})
