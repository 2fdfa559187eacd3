"""The solvers, one module each, behind one interface (:class:`~tfddim.sampling.solvers.base.Solver`).

Adding a solver: a module here with a :class:`Solver` subclass, a value in
:class:`tfddim.sampling.Method`, and its line in :func:`make`. The sampler's
loop does not change, and the oracle contract test (``tests/test_solvers.py``)
runs every :class:`Method` through it.
"""

from __future__ import annotations

from tfddim.sampling.options import Method, SamplerConfig
from tfddim.sampling.solvers.base import Coefficients, Denoised, Solver, guided_by_classifier
from tfddim.sampling.solvers.ddim import DDIM
from tfddim.sampling.solvers.ddpm import DDPM
from tfddim.sampling.solvers.dpmpp_2m import DPMSolverPP2M
from tfddim.sampling.solvers.dpmpp_2m_sde import DPMSolverPP2MSDE
from tfddim.sampling.solvers.dpmpp_3m import DPMSolverPP3M
from tfddim.sampling.solvers.unipc import UniPC

__all__ = ["Coefficients", "Denoised", "Solver", "guided_by_classifier", "make", "DDIM", "DDPM", "DPMSolverPP2M",
           "DPMSolverPP3M", "DPMSolverPP2MSDE", "UniPC"]


def make(config: SamplerConfig) -> Solver:
    """The solver for ``config.method`` with the options it reads."""
    builders = {
        Method.DDIM: DDIM,
        Method.DDPM: lambda: DDPM(config.variance),
        Method.DPMPP_2M: DPMSolverPP2M,
        Method.DPMPP_3M: DPMSolverPP3M,
        Method.DPMPP_2M_SDE: DPMSolverPP2MSDE,
        Method.UNIPC: UniPC,
    }
    return builders[config.method]()
