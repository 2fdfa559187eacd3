"""The diffusion math, importing nothing else of tfddim (a test holds this).

- :mod:`~tfddim.diffusion.schedules`: β, ᾱ and friends in numpy float64; a :class:`Schedule` is data.
- :mod:`~tfddim.diffusion.spacing`: which S of the T levels to visit, in numpy and as graph ops side by side.
- :mod:`~tfddim.diffusion.steps`: pure step functions of tensors (noise is an argument) and ``select_timestep``.
- :mod:`~tfddim.diffusion.likelihood`: the variational bound's terms.

Nothing is imported here, so ``import tfddim.diffusion.schedules`` loads numpy only.
"""
