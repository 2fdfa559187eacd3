"""The solver interface: what the one sampling loop hands each solver, and what a solver gives back.

The loop (:class:`tfddim.sampling.Sampler`) knows no method names. At step i
it gathers the step's coefficients (:class:`Coefficients`), calls the network
once (:class:`Denoised`: x̂₀ and ε̂ after prediction-type conversion, clipping
and classifier-free guidance, plus ∇ log p(y|x_t) for classifier guidance),
draws this step's noise if the solver uses noise, and calls
``solver.step``. A solver's memory between steps (DPM-Solver++'s previous x̂₀
and λ step, UniPC's corrector history) is its ``state``: a tuple of tensors
made by ``init`` and carried as ``tf.while_loop`` variables.
"""

from __future__ import annotations

import abc
from typing import NamedTuple, Optional

import tensorflow as tf

from tfddim.diffusion import steps

__all__ = ["Coefficients", "Denoised", "Solver", "guided_by_classifier"]


class Coefficients(NamedTuple):
    """The schedule at one step, gathered per sample and shaped ``[B, 1, ..., 1]`` against x.

    Attributes:
        alpha_bar_t: ᾱ at the current timestep τ_i.
        alpha_bar_prev: ᾱ at the step's target τ_{i+1} (the final ᾱ after the last listed timestep).
        half_log_snr_t: λ_t = ½·log(ᾱ_t/(1−ᾱ_t)) (−∞ at zero terminal SNR).
        half_log_snr_prev: λ at the target (a finite stand-in above λ_0 for the clean level, where λ = +∞).
        first: bool scalar, this is the first step.
        has_next: bool scalar, a listed timestep follows (false on the final step into the clean level).
        eta: DDIM's η, a scalar of x's dtype (0 for solvers that take none).
        steps_left: int32 scalar, the steps after this one (0 on the final step): multistep solvers lower
            their order near the end (diffusers' ``lower_order_final``).
        num_steps: int32 scalar, S.
    """

    alpha_bar_t: tf.Tensor
    alpha_bar_prev: tf.Tensor
    half_log_snr_t: tf.Tensor
    half_log_snr_prev: tf.Tensor
    first: tf.Tensor
    has_next: tf.Tensor
    eta: tf.Tensor
    steps_left: tf.Tensor
    num_steps: tf.Tensor


class Denoised(NamedTuple):
    """One network evaluation at x_t, converted: x̂₀, ε̂, the variance output v and the guidance gradient.

    ``v`` is None unless the network has a learned variance; ``grad`` (∇ₓ log p(y|x_t)) is None unless
    classifier guidance is on. The solver decides where the gradient enters.
    """

    x0: tf.Tensor
    eps: tf.Tensor
    v: Optional[tf.Tensor] = None
    grad: Optional[tf.Tensor] = None


def guided_by_classifier(x, d: Denoised, alpha_bar_t, scale) -> Denoised:
    """Classifier guidance on ε̂ (Dhariwal & Nichol eq. 14): ε̂ ← ε̂ − s·√(1−ᾱ_t)·∇, x̂₀ recomputed from it.

    The DDIM-style solvers (DDIM, DPM-Solver++, DDIM inversion) guide this way. Without a gradient
    ``d`` is returned as it is.
    """
    if d.grad is None:
        return d
    eps = steps.classifier_guided_eps(d.eps, alpha_bar_t, d.grad, scale)
    return d._replace(eps=eps, x0=steps.x0_from_eps(x, eps, alpha_bar_t))


class Solver(abc.ABC):
    """One sampling method. Subclasses are small modules in :mod:`tfddim.sampling.solvers`.

    Class attributes:
        uses_noise: the step can take noise z (the loop then draws or slices it; a deterministic
            solver's graph holds no random op, which ONNX export needs).
        takes_eta: the method has DDIM's η (for any other a nonzero η is refused).
    """

    uses_noise: bool = False
    takes_eta: bool = False

    def needs_noise(self, eta):
        """Whether this step draws noise (a bool tensor; only asked when ``uses_noise``)."""
        return tf.constant(False)

    def init(self, x) -> tuple:
        """The state before the first step (a tuple of tensors; empty for a one-step method)."""
        return ()

    @abc.abstractmethod
    def step(self, x, d: Denoised, c: Coefficients, scale, noise, state: tuple):
        """One step from x_t: returns ``(x_next, x0_hat, state)``.

        Args:
            x: x_t, ``[B, ...]``.
            d: the network's evaluation at x_t.
            c: the step's coefficients.
            scale: the guidance scale (for classifier guidance's gradient in ``d.grad``).
            noise: z ``[B, ...]`` for this step (zeros on the final step), or None if not ``uses_noise``.
            state: what the previous step returned (``init(x)`` on the first).
        """
