"""One of several solvers, picked per request by an index tensor (``sample_ode``, ``sample_ddpm`` in the exports).

Every step evaluates the network once (the loop's :class:`~tfddim.sampling.solvers.base.Denoised`), runs
each candidate's ``step`` on it — element-wise work, small beside the network call — and keeps the picked
one's x and x̂₀. Each candidate carries its own state, and the picked one always sees the x it produced,
so the result is that solver's trajectory exactly; the others' states are computed and discarded. Unlike
a ``tf.cond`` around whole loops this is one loop with no branch, which ONNX converts (tf2onnx cannot
give a convolution inside an ``If`` the weights' shapes).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfddim.sampling.solvers.base import Coefficients, Denoised, Solver

__all__ = ["Selected"]


class Selected(Solver):
    """``solvers[index]``, with ``index`` an int32 scalar tensor in [0, len(solvers)) checked by the caller.

    Either every candidate takes noise (the DDPM variances of ``sample_ddpm``): then this solver takes the
    loop's noise and hands each candidate the same z; or not all do (``sample_ode``): then a candidate that
    can take noise (DDIM) gets zeros, so the mix runs deterministic solvers only (DDIM at η = 0).
    """

    def __init__(self, candidates: Sequence[Solver], index):
        self.candidates = tuple(candidates)
        self.index = index
        self.uses_noise = all(s.uses_noise for s in self.candidates)

    def needs_noise(self, eta):
        if not self.uses_noise:
            return tf.constant(False)
        return tf.reduce_any(tf.stack([s.needs_noise(eta) for s in self.candidates]))

    def init(self, x):
        return tuple(s.init(x) for s in self.candidates)

    def step(self, x, d: Denoised, c: Coefficients, scale, noise, state):
        z = noise if self.uses_noise else tf.zeros_like(x)
        outs = [s.step(x, d, c, scale, z if s.uses_noise else None, st) for s, st in zip(self.candidates, state)]
        x_next, x0 = outs[-1][0], outs[-1][1]
        for k in range(len(outs) - 2, -1, -1):
            picked = tf.equal(self.index, k)
            x_next, x0 = tf.where(picked, outs[k][0], x_next), tf.where(picked, outs[k][1], x0)
        return x_next, x0, tuple(out[2] for out in outs)
