"""DDIM: the generalized step of eq. 12 with σ(η) of eq. 16 (Song et al. 2021).

x_prev = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z, σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev).
η = 0 is deterministic (the first-order solver of the probability-flow ODE); η = 1 is DDPM with β̃.
"""

from __future__ import annotations

from tfddim.diffusion import steps
from tfddim.sampling.solvers.base import Coefficients, Denoised, Solver, guided_by_classifier

__all__ = ["DDIM"]


class DDIM(Solver):
    uses_noise = True
    takes_eta = True

    def needs_noise(self, eta):
        return eta > 0

    def step(self, x, d: Denoised, c: Coefficients, scale, noise, state):
        d = guided_by_classifier(x, d, c.alpha_bar_t, scale)
        sigma = steps.ddim_sigma(c.alpha_bar_t, c.alpha_bar_prev, c.eta)
        return steps.ddim_update(d.x0, d.eps, c.alpha_bar_prev, sigma, noise), d.x0, state
