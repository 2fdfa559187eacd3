"""One conditioning value, from the sampler's caller to ``model_fn`` and to the export's signatures.

The sampling loop carries a single :class:`Conditioning` and never looks
inside it: the sampler's network call (:meth:`Conditioning.model_args`) and
classifier-free guidance's unconditional branch (:meth:`Conditioning.unconditional`)
are the only places that do. A new kind of conditioning (a low-resolution
image for super-resolution, an inpainting mask with its known pixels) is a new
field here plus its line in those methods; the loop and the solvers do not
change. ``docs/architecture.md`` has the recipe.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import tensorflow as tf

__all__ = ["Conditioning"]


class Conditioning(NamedTuple):
    """What a sampling call is conditioned on (a nest of tensors, so it passes through ``tf.function``).

    Attributes:
        labels: int32 ``[B]`` class labels, or None for an unconditional call.
        guidance_scale: float scalar tensor: s of classifier guidance or w of
            classifier-free guidance (1 = the plain conditional model).
    """

    labels: Optional[tf.Tensor] = None
    guidance_scale: tf.Tensor = 1.0

    def model_args(self) -> tuple:
        """The extra positional arguments of ``model_fn(x_t, t, *args)``."""
        return () if self.labels is None else (self.labels,)

    def unconditional(self, null_label: int) -> "Conditioning":
        """The same batch with every label replaced by ``null_label`` (classifier-free guidance's ε_u branch)."""
        labels = tf.fill(tf.shape(self.labels), tf.cast(null_label, self.labels.dtype))
        return self._replace(labels=labels)

    @staticmethod
    def concat(a: "Conditioning", b: "Conditioning") -> "Conditioning":
        """Two conditionings stacked on the batch axis (both branches of classifier-free guidance in one call)."""
        return a._replace(labels=tf.concat([a.labels, b.labels], 0))
