"""The seed rule of batched sampling: one request seed, one derived seed per batch.

A request for N samples with seed ``seed`` is cut into batches; the batch that starts at
example ``start`` draws its in-graph noise from :func:`batch_seed` ``(seed, start)``, so
batches draw independent noise and the same request always draws the same noise.
``tfddim sample``, the study's cells and the NLL bound all use this one rule.
"""

from __future__ import annotations

__all__ = ["batch_seed"]

# A prime larger than any batch start, so (seed, start) pairs do not collide for requests under a million.
_STRIDE = 1_000_003


def batch_seed(seed: int, start: int) -> int:
    """The noise seed of the batch starting at example ``start`` of a request seeded ``seed``."""
    return int(seed) * _STRIDE + int(start)
