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
        low_res: ``[B, h, w, C]`` the low-resolution image of a super-resolution network, or None.
        low_res_t: int32 ``[B]``, the noise-augmentation timestep ``low_res`` carries (0: clean).
        mask: ``[B, ...]`` like x, 1 where a pixel is known (inpainting), or None. Not a network input:
            the loop's per-step hook (:meth:`tfddim.sampling.Sampler.graph_sample`) replaces known pixels.
        known: ``[B, ...]`` the known clean image x₀ under ``mask``.
    """

    labels: Optional[tf.Tensor] = None
    guidance_scale: tf.Tensor = 1.0
    low_res: Optional[tf.Tensor] = None
    low_res_t: Optional[tf.Tensor] = None
    mask: Optional[tf.Tensor] = None
    known: Optional[tf.Tensor] = None

    def model_args(self, labels: bool = True) -> tuple:
        """The extra positional arguments of ``model_fn(x_t, t, *args)``: the labels (unless ``labels`` is
        False: they may be there only for a classifier), then ``low_res, low_res_t`` of an image-conditioned network."""
        args = (self.labels,) if labels and self.labels is not None else ()
        if self.low_res is not None:
            args += (self.low_res, self.low_res_t)
        return args

    def unconditional(self, null_label: int) -> "Conditioning":
        """The same batch with every label replaced by ``null_label`` (classifier-free guidance's ε_u branch)."""
        labels = tf.fill(tf.shape(self.labels), tf.cast(null_label, self.labels.dtype))
        return self._replace(labels=labels)

    @staticmethod
    def concat(a: "Conditioning", b: "Conditioning") -> "Conditioning":
        """Two conditionings' network inputs stacked on the batch axis (both branches of classifier-free guidance
        in one call)."""
        out = a._replace(labels=tf.concat([a.labels, b.labels], 0))
        if a.low_res is not None:
            out = out._replace(low_res=tf.concat([a.low_res, b.low_res], 0),
                               low_res_t=tf.concat([a.low_res_t, b.low_res_t], 0))
        return out
