"""The recommended deterministic solver and spacing for a step budget, chosen by measurement.

``make bench``'s solver-error table (:mod:`benchmarks.nfe`: every deterministic solver × spacing at
NFE ∈ {5, 10, 15, 20, 25, 50}, exact ε of two Gaussian mixtures, RMS distance to the probability-flow
ODE's endpoint, float64) ranks the settings by the geometric mean of the two mixtures' errors. Measured
2026-12-02 (``benchmarks/results/nfe.json``):

- below 8 steps UniPC-3 with ``trailing`` is first (5 NFE: 0.30 against DPM-Solver++(3M)'s 0.34);
- from 8 to 14 steps DPM-Solver++(3M) with ``trailing`` (10 NFE: 0.18, third; the two ahead, DPM-Solver++(2M)
  on ``quad`` at 0.145 and 3M on ``logsnr`` at 0.149, are fragile: ``quad`` starts at 0.8·T and is 7× worse
  on one mixture than the other, and ``logsnr`` follows the schedule's λ, which for the cosine schedule
  spends most steps next to t = T − 1);
- from 15 steps DPM-Solver++(3M) with ``time_quadratic`` is first (20 NFE: 0.016; 50 NFE: within 2× of UniPC's
  0.0009, both far below what a network's error leaves visible).

``trailing`` and ``time_quadratic`` start at t = T − 1 and do not depend on the schedule. The benchmark prints
this table's place in its measured ranking, so a change that moves the ranking shows there.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["recommended"]

_FEW, _FINE = 8, 15  # the step counts where the choice changes (see the module docstring)


def recommended(num_steps: int, method: Optional[str] = None) -> tuple:
    """``(method, spacing)`` for ``num_steps`` steps; with ``method`` given, only its spacing is chosen.

    DDIM at η = 0 is first order: ``trailing`` (within 1% of ``uniform``, and it starts at T − 1) is its
    best or near-best spacing at every budget measured.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if method is None:
        method = "unipc" if num_steps < _FEW else "dpmpp_3m"
    if method == "ddim":
        return method, "trailing"
    return method, "trailing" if num_steps < _FINE else "time_quadratic"
