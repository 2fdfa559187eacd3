"""Latent diffusion's DDIM parameters (CompVis/latent-diffusion), in numpy float64.

LDM's ``DDIMSampler.make_schedule`` (``ldm/models/diffusion/ddim.py``) builds its
sampling arrays with two helpers of ``ldm/modules/diffusionmodules/util.py``;
:func:`ldm_ddim_timesteps` and :func:`ddim_sampling_parameters` are those two
(``make_ddim_timesteps(ddim_discr_method="uniform", ...)`` and
``make_ddim_sampling_parameters``), with named errors where LDM would index out
of bounds or return NaN.

Equations (T training steps, S sampling steps, c = ⌊T/S⌋, 0-based t):

- timesteps, LDM's "uniform" method: τ_i = c·i + 1 for c·i < T, i.e.
  ``np.asarray(list(range(0, T, c))) + 1``. The +1 is LDM's ("add one to get the
  final alpha values right"). The list has ⌈T/c⌉ entries, which is S when S
  divides T and can be more otherwise (LDM's own length assert is commented
  out; T = 1000, S = 7 gives 8 entries). When c divides T − 1 (S > T/2, or
  T = 1000 with S = 3) the last entry is T, past the schedule's end: refused.
- ``ddim_alphas[i]`` = ᾱ_{τ_i}.
- ``ddim_alphas_prev[i]`` = ᾱ_{τ_{i−1}} for i ≥ 1 and ᾱ_0 (``alphacums[0]``) for i = 0.
- ``ddim_sigmas[i]`` = η·√((1 − ᾱ_prev)/(1 − ᾱ)·(1 − ᾱ/ᾱ_prev)), the DDIM paper's
  σ_τi(η), eq. 16 (Song et al. 2021, "Denoising Diffusion Implicit Models");
  η = 1 gives the posterior variance β̃ of the strided step, η = 0 the
  deterministic DDIM.

Notation and order:

- LDM names ᾱ ``alphas_cumprod``/``alphacums`` (DDPM's names; the DDIM paper
  calls it α_t) and its DDIM arrays ``ddim_alphas`` (ᾱ, not α).
- LDM's lists run forward in time (increasing t); ``DDIMSampler.ddim_sampling``
  walks ``np.flip(ddim_timesteps)`` and reads entry ``index = S − 1 − i`` at its
  step i. This project's sampler (:class:`tfddim.sampling.Sampler`) takes
  strictly *descending* timesteps: give it ``timesteps[::-1]``, and its step i
  from ``timesteps[::-1][i]`` uses entry S − 1 − i of these arrays.
- LDM's ᾱ_prev at its last sampling step (the smallest t, τ_0 = 1) is ᾱ_0, the
  first level of the schedule: this project's ``FinalAlpha.ALPHA_0``
  (:mod:`tfddim.diffusion.kinds`; diffusers' ``set_alpha_to_one=False``), kept
  here as :data:`LDM_FINAL_ALPHA`. It is not the DDIM paper's clean level
  α_0 := 1 (ᾱ_{−1} = 1 in 0-based time), which is ``FinalAlpha.ONE``, the
  sampler's default.
- LDM adds σ·z on every step, its last too; this project's sampler adds no
  noise on its final step. The parameters agree; for η > 0 the final step's
  noise term does not.
- LDM computes these arrays from its model's float32 ``alphas_cumprod``; here
  everything is float64, so LDM's values agree to float32 rounding.
- LDM's "linear" β schedule is linspace(√β_1, √β_T, T)², this project's
  ``"quad"`` (``schedules.get("quad", T, beta_start=..., beta_end=...)``).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from tfddim.diffusion.kinds import FinalAlpha

__all__ = ["DdimParameters", "LDM_FINAL_ALPHA", "ldm_ddim_timesteps", "ddim_sampling_parameters"]

#: ᾱ_prev after LDM's last sampling step: ᾱ_0, not 1 (see the module docstring).
LDM_FINAL_ALPHA = FinalAlpha.ALPHA_0


class DdimParameters(NamedTuple):
    """LDM's DDIM arrays, in LDM's order (increasing t) and its return order (σ, ᾱ, ᾱ_prev); float64, shape ``[S]``.

    Attributes:
        ddim_sigmas: σ_i = η·√((1 − ᾱ_prev)/(1 − ᾱ)·(1 − ᾱ/ᾱ_prev)) (DDIM eq. 16).
        ddim_alphas: ᾱ at each listed timestep.
        ddim_alphas_prev: ᾱ at the previous listed timestep; ᾱ_0 for the first.
    """

    ddim_sigmas: np.ndarray
    ddim_alphas: np.ndarray
    ddim_alphas_prev: np.ndarray


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def ldm_ddim_timesteps(num_steps: int, num_timesteps: int) -> np.ndarray:
    """LDM's ``make_ddim_timesteps("uniform", num_steps, num_timesteps)``: ``range(0, T, T // S)`` + 1.

    Args:
        num_steps: S, the number of DDIM steps asked for (1 <= S <= T).
        num_timesteps: T, the length of the training process (>= 2).

    Returns:
        int64 numpy array, strictly increasing, in [1, T − 1]; ⌈T/⌊T/S⌋⌉ entries (S when S divides T).
        S = 50, T = 1000 gives 1, 21, …, 981.

    Raises:
        ValueError: naming ``num_steps`` or ``num_timesteps``; also when the +1 would put the last
            timestep at T (the stride T // S divides T − 1, e.g. S = T), where LDM indexes past the schedule.
    """
    num_timesteps = _check_int(num_timesteps, "num_timesteps", 2)
    num_steps = _check_int(num_steps, "num_steps", 1)
    if num_steps > num_timesteps:
        raise ValueError(f"num_steps must be <= num_timesteps = {num_timesteps}, got {num_steps}")
    stride = num_timesteps // num_steps
    timesteps = np.arange(0, num_timesteps, stride, dtype=np.int64) + 1
    if timesteps[-1] > num_timesteps - 1:
        raise ValueError(
            f"num_steps={num_steps}: LDM's uniform timesteps range(0, {num_timesteps}, {stride}) + 1 end at "
            f"{timesteps[-1]}, past T-1 = {num_timesteps - 1} (the stride T // num_steps = {stride} divides T - 1); "
            "LDM would index alphas_cumprod out of bounds. Choose another num_steps"
        )
    return timesteps


def _check_alphas_cumprod(alphas_cumprod) -> np.ndarray:
    try:
        ac = np.asarray(alphas_cumprod, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"alphas_cumprod must be a 1-D array of numbers, got {type(alphas_cumprod).__name__}") from None
    if ac.ndim != 1 or ac.size < 2:
        raise ValueError(f"alphas_cumprod must be a 1-D array of length T >= 2, got shape {ac.shape}")
    if not np.all(np.isfinite(ac)) or np.any(ac < 0.0) or np.any(ac > 1.0):
        raise ValueError("alphas_cumprod must be finite and lie in [0, 1]")
    if np.any(np.diff(ac) > 0.0):
        raise ValueError("alphas_cumprod must be non-increasing (a cumulative product of 1 - beta_t)")
    return ac


def _check_timesteps(timesteps, num_timesteps: int) -> np.ndarray:
    arr = np.asarray(timesteps)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D list, got shape {arr.shape}")
    integral = np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
    )
    if arr.dtype == np.bool_ or not integral:
        raise ValueError(f"timesteps must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() > num_timesteps - 1:
        raise ValueError(f"timesteps must lie in [0, T-1 = {num_timesteps - 1}], got min {arr.min()}, max {arr.max()}")
    if np.any(np.diff(arr) <= 0):
        raise ValueError("timesteps must be strictly increasing (LDM's order, smallest first; "
                         "this project's sampler takes the reverse)")
    return arr


def _check_eta(eta) -> float:
    if isinstance(eta, (bool, np.bool_)) or not isinstance(eta, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    return float(eta)


def ddim_sampling_parameters(alphas_cumprod, timesteps, eta: float) -> DdimParameters:
    """LDM's ``make_ddim_sampling_parameters(alphacums, ddim_timesteps, eta)``, in float64.

    ``alphas = alphacums[ddim_timesteps]``,
    ``alphas_prev = [alphacums[0]] + alphacums[ddim_timesteps[:-1]]``,
    ``sigmas = eta·sqrt((1 − alphas_prev)/(1 − alphas)·(1 − alphas/alphas_prev))`` (DDIM eq. 16).

    Args:
        alphas_cumprod: ᾱ_t for t = 0 … T−1 (``Schedule.alphas_cumprod``), non-increasing, in [0, 1].
        timesteps: strictly increasing ints in [0, T−1], LDM's order (:func:`ldm_ddim_timesteps`).
        eta: DDIM's η in [0, 1].

    Returns:
        :class:`DdimParameters` ``(ddim_sigmas, ddim_alphas, ddim_alphas_prev)``, float64 ``[S]``, increasing t.

    Raises:
        ValueError: naming ``alphas_cumprod``, ``timesteps`` or ``eta``.
    """
    ac = _check_alphas_cumprod(alphas_cumprod)
    ts = _check_timesteps(timesteps, ac.size)
    eta = _check_eta(eta)
    alphas = ac[ts]
    alphas_prev = np.concatenate([ac[:1], ac[ts[:-1]]])
    if np.any(alphas >= 1.0):
        raise ValueError("alphas_cumprod must be < 1 at every listed timestep (sigma divides by 1 - alphas_cumprod[t])")
    if np.any(alphas_prev <= 0.0):
        raise ValueError("alphas_cumprod must be > 0 at alphas_cumprod[0] and at every listed timestep but the last "
                         "(sigma divides by alphas_prev)")
    sigmas = eta * np.sqrt((1.0 - alphas_prev) / (1.0 - alphas) * (1.0 - alphas / alphas_prev))
    return DdimParameters(ddim_sigmas=sigmas, ddim_alphas=alphas, ddim_alphas_prev=alphas_prev)
