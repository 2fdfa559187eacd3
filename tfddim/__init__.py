"""tfddim: denoising diffusion models and fast DDIM sampling in TensorFlow/Keras.

Layers, imports pointing down only (``docs/architecture.md``; ``tests/test_layers.py`` holds it)::

    cli → pipelines → runtime / runs / export / evaluation / training / sampling → data / models → diffusion

``tfddim.schedules`` (the README's name) is :mod:`tfddim.diffusion.schedules`::

    from tfddim import schedules, sampling
"""

from tfddim.diffusion import schedules  # noqa: F401  (the public name tfddim.schedules; numpy only)

__version__ = "0.1.0"
