"""A latent diffusion model with its decoder inside the exported loop (Rombach et al. 2022, §3.2 and §4).

:class:`LatentModule` wraps a latent-space :class:`~tfddim.export.saved_model.SamplerModule` (the network,
its schedule and every loop, on latents z = E(x)·scale_factor) and the first stage's
:class:`~tfddim.models.Autoencoder`, and gives each of the sampler's signatures pixels at its edges:

=======================  =========================================================================================
``serving_default`` …    the sampler's signatures on latent ``x_T`` [B, h, w, c] (and latent ``noise``
                         [S, B, h, w, c]); each returns ``x_0`` = D(z_0 / scale_factor) [B, H, W, C] and the
                         latent ``z_0`` (``sample_trajectory``'s ``x_steps`` and ``x0_steps`` stay latents)
``predict_x0``           latent ``x_t``, ``t`` → ``x_0`` = D(ẑ₀ / scale_factor), ``z_0`` = ẑ₀, ``eps``: the
                         seeds' "jumping" prediction, decoded
``encode``               pixels ``x_0`` → z = E(x_0)·scale_factor (the posterior mean) → DDIM inversion → ``x_T``
``edit`` (+ noise)       pixels ``x_0`` → z → SDEdit in latent space (``start_noise``/``noise`` latent) → pixels
``inpaint`` (+ noise)    pixels ``x_0`` and a pixel ``mask`` (1 = keep): the latent mask keeps a latent cell only
                         where every pixel of its f×f block is kept (a min-pool: a cell that touches a pixel to
                         generate is generated), the latent loop inpaints z, and the decoded image takes the
                         known pixels back exactly, x = mask·x_0 + (1 − mask)·D(z_0 / scale_factor) (latent
                         diffusion's ``mask``/``x0`` blending, then the pixel paste the editing issue asks of
                         every export)
``decode``               a latent ``z_0`` [B, h, w, c] → ``x_0`` (to decode a trajectory)
=======================  =========================================================================================

The encoder uses the posterior mean μ(x), so the graph is deterministic (diffusers' ``latent_dist.mode()``;
LDM's img2img samples the posterior instead). Pixel inputs are checked in the graph before the encoder
runs (shape, batch, NaN/Inf, a binary mask), each error naming the input; the latents then pass the
wrapped sampler's own checks. The manifest's ``latent`` entry records the pixel shape, the scale factor and
the autoencoder's config (:class:`tfddim.export.layout.LatentStage`).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfddim.export import layout
from tfddim.export.saved_model import SamplerModule, _assert, _keras_config, _shape_is

__all__ = ["LatentModule", "latent_manifest", "PIXEL_SIGNATURES"]

# The signatures whose x_0 input is an image in pixels (encoded first); the inpainting ones also take a pixel mask.
PIXEL_SIGNATURES = ("encode", "edit", "edit_with_noise", "inpaint", "inpaint_with_noise")


class LatentModule(tf.Module):
    """A latent :class:`SamplerModule` between an autoencoder's encoder and decoder (see the module docstring)."""

    def __init__(self, sampler: SamplerModule, autoencoder, scale_factor: float):
        super().__init__()
        if sampler.low_res_shape is not None or sampler.classifier is not None:
            raise ValueError("a latent export takes a plain or class-conditional latent network "
                             "(no super-resolution network, no bundled guidance classifier)")
        if tuple(autoencoder.latent_shape) != tuple(sampler.data_shape):
            raise ValueError(f"the autoencoder's latents are {list(autoencoder.latent_shape)}, the network samples "
                             f"{list(sampler.data_shape)}")
        if not 0 < float(scale_factor) < float("inf"):
            raise ValueError(f"scale_factor must be a finite number > 0, got {scale_factor}")
        object.__setattr__(self, "sampler", sampler)  # untracked, as a cascade's stages: only weights are saved
        object.__setattr__(self, "autoencoder", autoencoder)
        self.network_weights = list(sampler.network_weights)
        self.autoencoder_weights = list(autoencoder.weights)
        self.scale_factor = float(scale_factor)
        self.pixel_shape = (autoencoder.image_size, autoencoder.image_size, autoencoder.in_channels)
        self.factor = int(autoencoder.factor)
        # what the export writer and its checks read of a module, as a SamplerModule has them
        self.data_shape = sampler.data_shape
        self.num_classes, self.network_classes = sampler.num_classes, sampler.network_classes
        self.low_res_shape, self.options, self.num_timesteps = None, sampler.options, sampler.num_timesteps
        self.schedule_json = sampler.schedule_json
        object.__setattr__(self, "network", sampler.network)
        object.__setattr__(self, "classifier", None)
        self.serving_signatures = self._make_signatures()

    # ------------------------------------------------------------ the first stage
    def encode_pixels(self, x):
        """z = μ(x)·scale_factor: checked pixels → the latent the sampler works on."""
        return self.autoencoder.encode(x)[0] * self.scale_factor

    def decode_latents(self, z):
        """x = D(z / scale_factor)."""
        return self.autoencoder.decode(z / self.scale_factor)

    def latent_mask(self, mask):
        """A pixel mask [B, H, W, C] → [B, h, w, c]: 1 where every pixel (and channel) of the cell's f×f block is 1."""
        keep = -tf.nn.max_pool2d(-tf.reduce_min(mask, axis=-1, keepdims=True), self.factor, self.factor, "VALID")
        return tf.tile(keep, [1, 1, 1, self.data_shape[-1]])

    def _pixel_checked(self, inputs: dict) -> dict:
        """``x_0`` (and ``mask``) in pixels, checked in stages as :meth:`SamplerModule._checked` does: shapes,
        then the batch, then values (NaN/Inf, a mask of 0 and 1 only); returned with their static shapes."""
        pixels, dims = self.pixel_shape, ", ".join(map(str, self.pixel_shape))
        x, mask = inputs["x_0"], inputs.get("mask")
        first = [_assert(_shape_is(x, [None, *pixels]), f"x_0 must have shape [B, {dims}] (pixels); got shape",
                         tf.shape(x))]
        if mask is not None:
            first.append(_assert(_shape_is(mask, [None, *pixels]), f"mask must have the shape of x_0 [B, {dims}]; "
                                 "got shape", tf.shape(mask)))
        with tf.control_dependencies(first):
            batch, high = tf.shape(x)[0], self.options.max_batch
            ok = batch >= 1 if high is None else tf.logical_and(batch >= 1, batch <= high)
            second = [_assert(ok, f"x_0 must have a batch of {'at least 1' if high is None else f'from 1 to max_batch = {high}'}"
                                  " samples; got batch", batch)]
            if mask is not None:
                second.append(_assert(tf.equal(tf.shape(mask)[0], batch), "mask must have the batch of x_0; got, B:",
                                      tf.shape(mask)[0], batch))
        with tf.control_dependencies(second):
            third = [_assert(tf.reduce_all(tf.math.is_finite(x)), "x_0 contains NaN or Inf")]
            if mask is not None:
                binary = tf.reduce_all(tf.logical_or(tf.equal(mask, 0.0), tf.equal(mask, 1.0)))
                third.append(_assert(binary, "mask must hold only 0 (generate) and 1 (keep)"))
        with tf.control_dependencies(third):
            return {name: tf.reshape(value, [-1, *pixels]) for name, value in inputs.items()}

    # ------------------------------------------------------------ signatures
    def _wrapped(self, name: str):
        """The sampler's signature ``name`` with pixels at its edges (see the module docstring)."""
        fn, _ = self.sampler.signature_functions[name]
        inpainting = name.startswith("inpaint")

        def latent_fn(*args):
            args, pixels = list(args), None
            if name in PIXEL_SIGNATURES:
                pixels = self._pixel_checked({"x_0": args[0], **({"mask": args[1]} if inpainting else {})})
                args[0] = self.encode_pixels(pixels["x_0"])
                if inpainting:
                    args[1] = self.latent_mask(pixels["mask"])
            out = dict(fn(*args))
            if name == "encode":
                return out
            z = out.pop("x_0")
            x = self.decode_latents(z)
            if inpainting:
                x = pixels["mask"] * pixels["x_0"] + (1.0 - pixels["mask"]) * x
            return {**out, "x_0": x, "z_0": z}

        return latent_fn

    def _decode_signature(self, z_0):
        data, dims = self.data_shape, ", ".join(map(str, self.data_shape))
        first = [_assert(_shape_is(z_0, [None, *data]), f"z_0 must have shape [B, {dims}] (latents); got shape",
                         tf.shape(z_0))]
        with tf.control_dependencies(first):
            batch, high = tf.shape(z_0)[0], self.options.max_batch
            ok = batch >= 1 if high is None else tf.logical_and(batch >= 1, batch <= high)
            second = [_assert(ok, "z_0 must have a batch of at least 1 (and at most max_batch); got batch", batch)]
        with tf.control_dependencies(second):
            third = [_assert(tf.reduce_all(tf.math.is_finite(z_0)), "z_0 contains NaN or Inf")]
        with tf.control_dependencies(third):
            z = tf.reshape(z_0, [-1, *data])
        return {"x_0": self.decode_latents(z)}

    def _make_signatures(self):
        specs = {name: (self._wrapped(name), sig) for name, (_, sig) in self.sampler.signature_functions.items()}
        specs["decode"] = (self._decode_signature, [tf.TensorSpec(None, tf.float32, name="z_0")])
        return {name: tf.function(fn, input_signature=sig).get_concrete_function() for name, (fn, sig) in specs.items()}


def latent_manifest(module: LatentModule, sampler_manifest: layout.ExportManifest) -> layout.ExportManifest:
    """The latent sampler's ``export.json`` with ``decode`` among the signatures and the ``latent`` entry."""
    signatures = sorted(module.serving_signatures)
    return dataclasses.replace(
        sampler_manifest, signatures=signatures, methods={**sampler_manifest.methods, "decode": "decoder"},
        latent=layout.LatentStage(pixel_shape=module.pixel_shape, scale_factor=module.scale_factor,
                                  model_config=_keras_config(module.autoencoder)))
