"""Numpy-in, numpy-out samplers over an exported model (no tfddim model code needed at run time).

Two backends with one interface (``sample``, ``sample_with_noise``,
``sample_dpmpp_2m``, ``sample_ode``, ``sample_ddpm``, ``sample_trajectory``, ``encode``, ``edit`` (SDEdit),
``inpaint``, ``starting_noise``, ``decode`` of a latent export):

- :class:`SavedModelSampler` calls the SavedModel's signatures (TensorFlow);
- :class:`OnnxSampler` runs the ``onnx/`` graphs in ONNX Runtime.

Both check requests in Python first, as the SavedModel's graph does (a ``ValueError``
naming the argument): shapes ``[B, H, W, C]`` with 1 <= B <= ``max_batch`` (from the
manifest; None for exports written before it existed), NaN/Inf in ``x_T``/``x_0``,
``noise`` (even at η = 0), ``low_res`` and ``guidance_scale``, integer ``labels`` of shape [B]
(floats are refused, not truncated), scalar ``num_steps``/``eta``/``seed``. The
ONNX graphs carry no assertions, so for them this is the only check. Given the same ``x_T`` and ``noise``,
``sample_with_noise`` agrees between the backends to float32 rounding.
``sample`` with η > 0 draws its noise differently: the SavedModel in the graph
(stateless Philox from ``seed``), the ONNX sampler with numpy from ``seed``
(ONNX has no matching random op). For η = 0 both are deterministic and agree.

``edit`` (SDEdit: x₀ noised to the level ``strength`` in (0, 1] picks, then sampled back) and ``inpaint``
(``mask`` 1 = keep x₀'s pixel, 0 = generate it; the kept pixels are returned exactly) draw their starting
noise and step noise the same way: without explicit noise the SavedModel calls its ``edit``/``inpaint``
signatures (noise in the graph from ``seed``), the ONNX sampler its ``edit_with_noise``/``inpaint_with_noise``
graphs with numpy noise from ``seed`` (sample i's step noise from ``default_rng([seed, i])``, its start noise
z / x_T from ``default_rng([seed, i, 1])``, so batching does not change it). So, as for ``sample`` with
η > 0, the two backends' seeded results differ (here at every η: the start noise is seeded too); given the noise (``start_noise``/``x_T`` and ``noise``; a
part not given is drawn with numpy as the ONNX sampler does) both call ``*_with_noise`` and agree to float32
rounding. ``inpaint`` always draws step noise, even at η = 0 (the known pixels are re-noised with it).

A super-resolution export (``manifest.low_res_shape`` = [h, w, C]) takes ``low_res`` [B, h, w, C] in every
method (required there, refused elsewhere).

A latent diffusion export (``manifest.latent``; :mod:`tfddim.export.latent`) samples latents: ``x_T``,
``noise``, ``start_noise`` and inpainting's ``x_T`` have the latents' shape ``data_shape`` (``starting_noise``
draws it), while ``x_0`` inputs, ``mask`` and every returned ``x_0`` are images of ``pixel_shape`` (the
decoder runs in the graph); ``decode`` maps latents (a trajectory's steps) to images.

``open_sampler(path, backend)`` picks one: ``backend`` is ``"tf"`` or ``"onnx"``.
Both read what the export bakes in through :mod:`tfddim.export.layout` (``manifest``:
an :class:`~tfddim.export.layout.ExportManifest`; exports of either format load).
"""

from __future__ import annotations

import abc
import os

import numpy as np

from tfddim.export import layout
from tfddim.export.onnx import onnx_output_name  # numpy only at import (tf2onnx/onnx are imported in its functions)

__all__ = ["SavedModelSampler", "OnnxSampler", "open_sampler", "onnx_session_options", "BACKENDS"]

BACKENDS = ("tf", "onnx")


class _CheckedSampler(abc.ABC):
    """Request checks and the public API shared by the backends; subclasses set ``manifest`` and define ``_call``."""

    manifest: layout.ExportManifest

    @property
    def num_timesteps(self) -> int:
        return self.manifest.num_timesteps

    @property
    def data_shape(self) -> tuple:
        return self.manifest.data_shape

    @property
    def num_classes(self):
        """The label range [0, num_classes) of conditional exports; None when unconditional."""
        return self.manifest.num_classes

    @property
    def info(self) -> dict:
        """The manifest as JSON values (what ``export.json`` holds in the current format)."""
        return self.manifest.to_json()

    @property
    def max_batch(self):
        """The largest batch one call may have (``export.json: max_batch``); None: no limit (older exports)."""
        return self.manifest.max_batch

    # ---------------------------------------------------------------- checks
    # What the SavedModel's graph checks (tfddim.export.saved_model.SamplerModule._checked), checked here first,
    # with a ValueError naming the argument: the ONNX graphs cannot assert, and a request refused here costs no
    # graph call.
    @property
    def pixel_shape(self) -> tuple:
        """[H, W, C] of the returned images: a latent export's decoded shape, else ``data_shape``."""
        return self.manifest.pixel_shape

    def _x(self, x, name):
        """A checked image input: ``data_shape`` (the latents of a latent export), pixels for a latent export's ``x_0``."""
        x = np.asarray(x, np.float32)
        shape = tuple(self.manifest.input_shape(name)[1:]) if name in layout.IMAGE_INPUTS else self.data_shape
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            what = " (pixels)" if self.manifest.latent is not None and name in layout.PIXEL_INPUTS else ""
            raise ValueError(f"{name} must have shape [B, {', '.join(map(str, shape))}]{what}, got {list(x.shape)}")
        if x.shape[0] < 1:
            raise ValueError(f"{name} must have a batch of at least 1 sample, got shape {list(x.shape)}")
        if self.max_batch is not None and x.shape[0] > self.max_batch:
            raise ValueError(f"{name} has a batch of {x.shape[0]}, more than this export's max_batch = {self.max_batch}; "
                             "split it into several calls")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or Inf")
        return x

    @staticmethod
    def _int_scalar(value, name, what):
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            shape = f" of shape {list(np.shape(value))}" if np.ndim(value) else ""
            raise ValueError(f"{name} must be {what}, got {type(value).__name__}{shape} {value!r}")
        return int(value)

    def _steps(self, num_steps):
        what = f"a scalar integer in [1, {self.num_timesteps}]"
        s = self._int_scalar(num_steps, "num_steps", what)
        if not 1 <= s <= self.num_timesteps:
            raise ValueError(f"num_steps must be {what}, got {s}")
        return np.int32(s)

    def _seed(self, seed):
        return np.int64(self._int_scalar(seed, "seed", "a scalar integer"))

    @staticmethod
    def _float_scalar(value, name):
        if np.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {list(np.shape(value))}")
        try:
            return np.float32(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None

    def _low_res(self, low_res, batch) -> dict:
        """``{"low_res": [B, h, w, C]}`` of a super-resolution export (``manifest.low_res_shape``), else ``{}``."""
        shape = self.manifest.low_res_shape
        if shape is None:
            if low_res is not None:
                raise ValueError("low_res was given, but this export is not a super-resolution model "
                                 "(export.json: low_res_shape is null)")
            return {}
        dims = ", ".join(map(str, shape))
        if low_res is None:
            raise ValueError(f"this export is a super-resolution model: give low_res, the low-resolution images "
                             f"of shape [B, {dims}]")
        try:
            low = np.asarray(low_res, np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"low_res must be a float array of shape [B, {dims}], got {low_res!r:.80}") from None
        if low.shape != (batch, *shape):
            raise ValueError(f"low_res must have shape [B, {dims}] = {[batch, *shape]} (B of the image), "
                             f"got {list(low.shape)}")
        if not np.all(np.isfinite(low)):
            raise ValueError("low_res contains NaN or Inf")
        return {"low_res": low}

    def _cond(self, labels, guidance_scale, batch, low_res=None) -> dict:
        """The conditioning inputs: ``labels``/``guidance_scale`` of a conditional export, ``low_res`` of a
        super-resolution one."""
        return {**self._labels(labels, guidance_scale, batch), **self._low_res(low_res, batch)}

    def _labels(self, labels, guidance_scale, batch) -> dict:
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("labels were given, but this model is unconditional")
            return {}
        if labels is None:
            raise ValueError(f"this model is class-conditional: give labels in [0, {self.num_classes})")
        arr = np.asarray(labels)
        if arr.dtype.kind not in "iu":  # a float label is refused, not truncated (0.9 is not class 0)
            raise ValueError(f"labels must be integers in [0, {self.num_classes}), got {arr.dtype} values")
        if arr.ndim != 1 or arr.shape[0] != batch:
            raise ValueError(f"labels must have shape [B] = [{batch}] (one per sample), got {list(arr.shape)}")
        if arr.min() < 0 or arr.max() >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {arr.min()}..{arr.max()}")
        scale = self._float_scalar(guidance_scale, "guidance_scale")
        if not np.isfinite(scale):
            raise ValueError(f"guidance_scale must be finite, got {scale}")
        return {"labels": arr.astype(np.int32), "guidance_scale": scale}

    def _eta(self, eta):
        eta = self._float_scalar(eta, "eta")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        return eta

    def _noise(self, noise, num_steps, eta, x):
        noise = np.asarray(noise, np.float32)
        if noise.shape == (0, *x.shape) and eta == 0.0:
            return noise  # the documented stand-in for zeros at eta = 0
        if noise.shape != (int(num_steps), *x.shape):
            raise ValueError(f"noise must have shape {[int(num_steps), *x.shape]}"
                             f"{' (or [0, ...] for eta = 0)' if eta == 0 else ''}, got {list(noise.shape)}")
        if not np.all(np.isfinite(noise)):  # even at eta = 0, where it is unused: garbage in is refused, not ignored
            raise ValueError("noise contains NaN or Inf")
        return noise

    def _noise_all_steps(self, noise, num_steps, x):
        """A checked ``noise`` of exactly ``num_steps`` entries ``[S, B, ...]`` (every step draws noise)."""
        z = np.asarray(noise, np.float32)
        if z.shape != (int(num_steps), *x.shape):
            raise ValueError(f"noise must have shape {[int(num_steps), *x.shape]}, got {list(z.shape)}")
        if not np.all(np.isfinite(z)):
            raise ValueError("noise contains NaN or Inf")
        return z

    @staticmethod
    def _like(value, name, x, image="x_0"):
        """A checked array of the shape of the (checked) image ``x``: ``start_noise``, ``x_T``, ``mask``."""
        try:
            arr = np.asarray(value, np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a float array of the shape of {image} {list(x.shape)}, "
                             f"got {value!r:.80}") from None
        if arr.shape != x.shape:
            raise ValueError(f"{name} must have the shape of {image} {list(x.shape)}, got {list(arr.shape)}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or Inf")
        return arr

    def _latents_of(self, x):
        """A shape template ``[B, *data_shape]`` for the noise of a request on ``x``: x itself, or in a latent
        export (whose ``x_0`` is pixels) zeros of the latents' shape."""
        return x if tuple(x.shape[1:]) == self.data_shape else np.zeros((len(x), *self.data_shape), np.float32)

    def _mask(self, mask, x):
        m = self._like(mask, "mask", x)
        if not np.all((m == 0.0) | (m == 1.0)):
            bad = m[(m != 0.0) & (m != 1.0)]
            raise ValueError(f"mask must hold only 0 (generate) and 1 (keep), got {bad.size} other values "
                             f"(e.g. {float(bad.flat[0])})")
        return m

    @staticmethod
    def _strength(strength):
        """SDEdit's strength as a float32 in (0, 1] (:func:`tfddim.diffusion.editing.check_strength`'s rule)."""
        if isinstance(strength, np.ndarray) and strength.ndim == 0:
            strength = strength[()]
        if isinstance(strength, bool) or not isinstance(strength, (int, float, np.integer, np.floating)):
            raise ValueError(f"strength must be a number in (0, 1], got {strength!r}")
        value = np.float32(strength)
        if not 0.0 < value <= 1.0:  # NaN fails too
            raise ValueError(f"strength must be in (0, 1] (1 = start from pure noise), got {strength!r}")
        return value

    def has_signature(self, name: str) -> bool:
        """Whether the export holds the signature (or ONNX graph) ``name``; older exports lack newer ones."""
        return self._has(name)

    @abc.abstractmethod
    def _has(self, name: str) -> bool:
        """Whether the export holds the function ``name``."""

    @abc.abstractmethod
    def _call(self, name: str, **inputs) -> dict:
        """Run the exported function ``name`` on numpy inputs; return its outputs by name."""

    # ------------------------------------------------------------------ API
    @abc.abstractmethod
    def sample(self, x_T, num_steps: int, eta: float = 0.0, seed: int = 0, labels=None, guidance_scale: float = 1.0,
               low_res=None) -> np.ndarray:
        """x₀ from x_T; the per-step noise for η > 0 comes from ``seed`` (see the module docstring)."""

    def sample_with_noise(self, x_T, num_steps: int, eta: float, noise, labels=None, guidance_scale: float = 1.0,
                          low_res=None) -> np.ndarray:
        """x₀ from x_T with explicit per-step noise ``[S, B, ...]`` (an empty ``[0, B, ...]`` for η = 0)."""
        x = self._x(x_T, "x_T")
        s, eta = self._steps(num_steps), self._eta(eta)
        inputs = dict(x_T=x, num_steps=s, eta=eta, noise=self._noise(noise, s, eta, x))
        return self._call("sample_with_noise", **inputs, **self._cond(labels, guidance_scale, len(x), low_res))["x_0"]

    def sample_dpmpp_2m(self, x_T, num_steps: int, labels=None, guidance_scale: float = 1.0,
                        low_res=None) -> np.ndarray:
        """x₀ from x_T with DPM-Solver++(2M) on the export's spacing (deterministic; ``sample_dpmpp_2m``, or
        ``sample_ode`` where that signature has no graph of its own: the ONNX folder)."""
        if not self._has("sample_dpmpp_2m") and self._has("sample_ode"):  # the ONNX graphs run it through sample_ode
            return self.sample_ode(x_T, num_steps, "dpmpp_2m", self.manifest.spacing.value, labels, guidance_scale,
                                   low_res)
        self._missing("sample_dpmpp_2m")
        x = self._x(x_T, "x_T")
        inputs = dict(x_T=x, num_steps=self._steps(num_steps))
        return self._call("sample_dpmpp_2m", **inputs, **self._cond(labels, guidance_scale, len(x), low_res))["x_0"]

    def sample_ode(self, x_T, num_steps: int, method: str, spacing: str, labels=None,
                   guidance_scale: float = 1.0, low_res=None) -> np.ndarray:
        """x₀ from x_T with a deterministic solver and spacing picked by name (``sample_ode``).

        ``method`` is one of the export's ``ode_methods`` (``ddim`` at η = 0, ``dpmpp_2m``, ``dpmpp_3m``,
        ``unipc``) and ``spacing`` one of its ``ode_spacings``; the graph takes their indices.
        """
        self._missing("sample_ode")
        picks = {}
        for name, value, choices in (("method", method, self.manifest.ode_methods),
                                     ("spacing", spacing, self.manifest.ode_spacings)):
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"{name} must be one of {list(choices)} for this export, got {value!r}")
            picks[name] = np.int32(choices.index(value))
        x = self._x(x_T, "x_T")
        inputs = dict(x_T=x, num_steps=self._steps(num_steps), **picks)
        return self._call("sample_ode", **inputs, **self._cond(labels, guidance_scale, len(x), low_res))["x_0"]

    def _missing(self, name: str):
        if not self._has(name):
            raise ValueError(f"{self.path} has no {name} signature (exported before it existed): "
                             "re-export the model with `tfddim export`")

    def _seeded_noise(self, noise, seed, num_steps, x):
        """``noise`` as given, or ``[S, B, ...]`` drawn with numpy from ``seed`` (sample i from
        ``default_rng([seed, i])``, so batching does not change it)."""
        if noise is not None:
            return noise
        seed = int(self._seed(seed))
        return np.stack([np.random.default_rng([seed, i]).standard_normal((int(num_steps), *x.shape[1:]))
                         for i in range(len(x))], axis=1).astype(np.float32)

    def _seeded_start(self, seed, x):
        """``[B, ...]`` starting noise (an edit's z, an inpainting's x_T) drawn with numpy from ``seed``: sample i
        from ``default_rng([seed, i, 1])``, a stream apart from its step noise's ``[seed, i]``."""
        seed = int(self._seed(seed))
        return np.stack([np.random.default_rng([seed, i, 1]).standard_normal(x.shape[1:])
                         for i in range(len(x))]).astype(np.float32)

    def sample_ddpm(self, x_T, num_steps: int, variance: str = "fixed_small", noise=None, seed: int = 0,
                    labels=None, guidance_scale: float = 1.0, low_res=None) -> np.ndarray:
        """x₀ from x_T with improved DDPM's strided ancestral sampler (``sample_ddpm``).

        ``variance`` is one of the export's ``ddpm_variances`` (``fixed_small`` β̃, ``fixed_large`` β,
        ``learned_range`` for a learned-variance network). The per-step noise is ``noise`` ``[S, B, ...]``,
        or drawn with numpy from ``seed`` (the same in both backends).
        """
        self._missing("sample_ddpm")
        choices = self.manifest.ddpm_variances
        if not isinstance(variance, str) or variance not in choices:
            raise ValueError(f"variance must be one of {list(choices)} for this export, got {variance!r}")
        x = self._x(x_T, "x_T")
        s = self._steps(num_steps)
        z = self._noise_all_steps(self._seeded_noise(noise, seed, s, x), s, x)
        inputs = dict(x_T=x, num_steps=s, variance=np.int32(choices.index(variance)), noise=z)
        return self._call("sample_ddpm", **inputs, **self._cond(labels, guidance_scale, len(x), low_res))["x_0"]

    def sample_trajectory(self, x_T, num_steps: int, eta: float = 0.0, noise=None, seed: int = 0, labels=None,
                          guidance_scale: float = 1.0, low_res=None):
        """``(x_0, x_steps, x0_steps)``: DDIM with η as ``sample_with_noise``, plus x after each step and the
        jumping prediction x̂₀ at each step (``[S, B, ...]`` each; ``sample_trajectory``). Without ``noise``,
        η > 0 draws it with numpy from ``seed``."""
        self._missing("sample_trajectory")
        x = self._x(x_T, "x_T")
        s, eta = self._steps(num_steps), self._eta(eta)
        if noise is None:
            noise = self._seeded_noise(None, seed, s, x) if eta > 0 else np.zeros((0, *x.shape), np.float32)
        inputs = dict(x_T=x, num_steps=s, eta=eta, noise=self._noise(noise, s, eta, x))
        out = self._call("sample_trajectory", **inputs, **self._cond(labels, guidance_scale, len(x), low_res))
        return out["x_0"], out["x_steps"], out["x0_steps"]

    def encode(self, x_0, num_steps: int, labels=None, guidance_scale: float = 1.0, low_res=None) -> np.ndarray:
        """Deterministic DDIM inversion x₀ → x_T (``encode``)."""
        x = self._x(x_0, "x_0")
        inputs = dict(x_0=x, num_steps=self._steps(num_steps))
        return self._call("encode", **inputs, **self._cond(labels, guidance_scale, len(x), low_res))["x_T"]

    # Whether the backend draws noise from a seed inside its graphs (the SavedModel's stateless RNG); the ONNX
    # graphs have no random op, so their noise is always an input.
    _seeds_in_graph = False

    def edit(self, x_0, strength: float, num_steps: int, eta: float = 0.0, seed: int = 0, noise=None,
             start_noise=None, labels=None, guidance_scale: float = 1.0, low_res=None) -> np.ndarray:
        """SDEdit (Meng et al. 2022): ``x_0`` noised to the level ``strength`` picks, then sampled back with DDIM.

        ``strength`` in (0, 1]: the steps kept of the ``num_steps`` list are those at τ ≤ strength·(T−1)
        (1 = start from pure noise; a strength below the list's last level returns x_0). ``start_noise``
        ``[B, H, W, C]`` is the z of the noising, ``noise`` ``[S, B, H, W, C]`` the step noise for the whole list
        of ``num_steps`` (the kept K steps use its last K entries; an empty ``[0, B, ...]`` for η = 0). Without
        either, the SavedModel draws both in the graph from ``seed`` (``edit``); otherwise, and always for
        ONNX, ``edit_with_noise`` runs, a part not given drawn with numpy from ``seed`` (see the module docstring).
        """
        seeded = self._seeds_in_graph and noise is None and start_noise is None
        self._missing("edit" if seeded else "edit_with_noise")
        x = self._x(x_0, "x_0")
        st, s, eta = self._strength(strength), self._steps(num_steps), self._eta(eta)
        seed = self._seed(seed)
        cond = self._cond(labels, guidance_scale, len(x), low_res)
        if seeded:
            return self._call("edit", x_0=x, strength=st, num_steps=s, eta=eta, seed=seed, **cond)["x_0"]
        lat = self._latents_of(x)  # a latent export's start and step noise are latents
        image = "x_0" if lat is x else "the latents"
        z = self._seeded_start(seed, lat) if start_noise is None else self._like(start_noise, "start_noise", lat, image)
        if noise is None:
            noise = self._seeded_noise(None, seed, s, lat) if eta > 0 else np.zeros((0, *lat.shape), np.float32)
        inputs = dict(x_0=x, strength=st, num_steps=s, eta=eta, start_noise=z, noise=self._noise(noise, s, eta, lat))
        return self._call("edit_with_noise", **inputs, **cond)["x_0"]

    def inpaint(self, x_0, mask, num_steps: int, eta: float = 0.0, seed: int = 0, x_T=None, noise=None,
                labels=None, guidance_scale: float = 1.0, low_res=None) -> np.ndarray:
        """Inpainting: sample the pixels where ``mask`` is 0, keep ``x_0``'s where it is 1 (exactly, in the output).

        ``mask`` has the shape of ``x_0`` and holds only 0 and 1. ``x_T`` ``[B, H, W, C]`` is the starting noise,
        ``noise`` ``[S, B, H, W, C]`` the step noise, always ``num_steps`` entries (the known pixels are re-noised
        with it, even at η = 0). Without either, the SavedModel draws both in the graph from ``seed``
        (``inpaint``); otherwise, and always for ONNX, ``inpaint_with_noise`` runs, a part not given drawn with
        numpy from ``seed`` (see the module docstring).
        """
        seeded = self._seeds_in_graph and x_T is None and noise is None
        self._missing("inpaint" if seeded else "inpaint_with_noise")
        x = self._x(x_0, "x_0")
        m = self._mask(mask, x)
        s, eta = self._steps(num_steps), self._eta(eta)
        seed = self._seed(seed)
        cond = self._cond(labels, guidance_scale, len(x), low_res)
        if seeded:
            return self._call("inpaint", x_0=x, mask=m, num_steps=s, eta=eta, seed=seed, **cond)["x_0"]
        lat = self._latents_of(x)
        start = self._seeded_start(seed, lat) if x_T is None else self._like(x_T, "x_T", lat,
                                                                               "x_0" if lat is x else "the latents")
        z = self._noise_all_steps(self._seeded_noise(noise, seed, s, lat), s, lat)
        inputs = dict(x_0=x, mask=m, num_steps=s, eta=eta, x_T=start, noise=z)
        return self._call("inpaint_with_noise", **inputs, **cond)["x_0"]

    def decode(self, z_0) -> np.ndarray:
        """A latent export's decoder: latents ``[B, *data_shape]`` (``z_0``, a trajectory's steps) → images."""
        self._missing("decode")
        return self._call("decode", z_0=self._x(z_0, "z_0"))["x_0"]

    def starting_noise(self, n: int, seed: int) -> np.ndarray:
        """n starting latents x_T ~ N(0, I) from ``seed`` (numpy; the same whatever the batching later)."""
        return np.random.default_rng(seed).standard_normal((n, *self.data_shape)).astype(np.float32)

    def sample_cascade(self, x_T, x_T_upsample, num_steps: int, num_steps_upsample: int, eta: float = 0.0,
                       seed: int = 0, noise=None, noise_upsample=None):
        """``(x_0, x_0_low)`` of a cascade export (:mod:`tfddim.export.cascade`): the base stage from ``x_T``
        (``[B, *manifest.cascade.data_shape]``), then the upsampler from ``x_T_upsample`` (``[B, *data_shape]``).

        Noise as ``sample``/``sample_with_noise``: the SavedModel draws it in the graph from ``seed`` unless
        ``noise``/``noise_upsample`` are given; the ONNX graph takes it, drawn with numpy from ``seed`` (the
        upsampler's from ``default_rng([seed, i, 2])``) when η > 0, empty at η = 0.
        """
        stage = self.manifest.cascade
        if stage is None:
            raise ValueError(f"{self.path} is not a cascade export (export.json has no cascade stage)")
        low_shape = tuple(stage.data_shape)
        x = np.asarray(x_T, np.float32)
        if x.ndim != len(low_shape) + 1 or tuple(x.shape[1:]) != low_shape:
            raise ValueError(f"x_T must have shape [B, {', '.join(map(str, low_shape))}] (the base stage's), got {list(x.shape)}")
        if x.shape[0] < 1 or not np.all(np.isfinite(x)):
            raise ValueError("x_T must have a batch of at least 1 sample and be finite")
        up = self._x(x_T_upsample, "x_T_upsample")
        if len(up) != len(x):
            raise ValueError(f"x_T_upsample must have the batch of x_T ({len(x)}), got {len(up)}")
        s = self._int_scalar(num_steps, "num_steps", "an integer in [1, T]")
        if not 1 <= s <= stage.num_timesteps:
            raise ValueError(f"num_steps must be in [1, {stage.num_timesteps}], got {s}")
        s_up = self._steps(num_steps_upsample)
        eta = self._eta(eta)
        explicit = noise is not None or noise_upsample is not None
        if not explicit and self._has("serving_default") and self.backend == "tf":
            out = self._call("serving_default", x_T=x, x_T_upsample=up, num_steps=np.int32(s),
                             num_steps_upsample=np.int32(s_up), eta=eta, seed=self._seed(seed))
            return out["x_0"], out["x_0_low"]

        def drawn(steps, shape, tag):
            if eta == 0.0:
                return np.zeros((0, len(x), *shape), np.float32)
            seed_ = int(self._seed(seed))
            return np.stack([np.random.default_rng([seed_, i, tag]).standard_normal((int(steps), *shape))
                             for i in range(len(x))], axis=1).astype(np.float32)

        z = drawn(s, low_shape, 3) if noise is None else np.asarray(noise, np.float32)
        z_up = drawn(s_up, self.data_shape, 2) if noise_upsample is None else np.asarray(noise_upsample, np.float32)
        for name, value, steps, shape in (("noise", z, s, low_shape), ("noise_upsample", z_up, s_up, self.data_shape)):
            if value.shape not in ((int(steps), len(x), *shape), (0, len(x), *shape)) or (value.shape[0] == 0 and eta > 0):
                raise ValueError(f"{name} must have shape {[int(steps), len(x), *shape]} (or 0 entries at eta = 0), "
                                 f"got {list(value.shape)}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} contains NaN or Inf")
        out = self._call("sample_with_noise", x_T=x, x_T_upsample=up, num_steps=np.int32(s),
                         num_steps_upsample=np.int32(s_up), eta=eta, noise=z, noise_upsample=z_up)
        return out["x_0"], out["x_0_low"]


class SavedModelSampler(_CheckedSampler):
    """The exported SavedModel's signatures, called through TensorFlow.

    Args:
        path: a version folder, e.g. ``saved_models/digits/1``.
    """

    backend = "tf"
    _seeds_in_graph = True

    def __init__(self, path: str):
        if not os.path.exists(layout.ExportLayout(path).saved_model_pb):
            raise ValueError(f"model path {path!r} holds no {layout.SAVED_MODEL_PB} (export one with `tfddim export`)")
        import tensorflow as tf

        self.path = path
        self.manifest = layout.read_manifest(path)
        self._tf = tf
        self._model = tf.saved_model.load(path)

    def _has(self, name):
        return name in self._model.signatures

    def _call(self, name, **inputs):
        tf = self._tf
        out = self._model.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    def sample(self, x_T, num_steps: int, eta: float = 0.0, seed: int = 0, labels=None, guidance_scale: float = 1.0,
               low_res=None) -> np.ndarray:
        """x₀ from x_T with the noise drawn in the graph from ``seed`` (``serving_default``)."""
        x = self._x(x_T, "x_T")
        inputs = dict(x_T=x, num_steps=self._steps(num_steps), eta=self._eta(eta), seed=self._seed(seed))
        return self._call("serving_default", **inputs, **self._cond(labels, guidance_scale, len(x), low_res))["x_0"]


class OnnxSampler(_CheckedSampler):
    """The exported ONNX graphs (``sample_with_noise``, ``sample_ode``, ``sample_ddpm``, ``sample_trajectory``,
    ``encode``, ``edit_with_noise``, ``inpaint_with_noise``: those the export has), run in ONNX Runtime.

    Args:
        path: a version folder with an ``onnx/`` subfolder (``tfddim export --onnx``), or that subfolder.
        providers: ONNX Runtime execution providers (default: CPU).
    """

    backend = "onnx"

    def __init__(self, path: str, providers=("CPUExecutionProvider",)):
        onnx_manifest = layout.read_onnx_manifest(path)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ValueError("the onnx backend needs onnxruntime: pip install 'tfddim[onnx]'") from e
        self.path = folder = layout.onnx_folder(path)
        self.manifest = onnx_manifest.export
        self._sessions = {
            name: ort.InferenceSession(os.path.join(folder, graph.file), sess_options=onnx_session_options(),
                                       providers=list(providers))
            for name, graph in onnx_manifest.graphs.items()
        }

    def _has(self, name):
        return name in self._sessions

    def _call(self, name, **inputs):
        """The graph's outputs by the signature's names: an output an ONNX graph had to rename because an input
        has its name (``edit_with_noise``'s and ``inpaint_with_noise``'s ``x_0`` → ``x_0_out``,
        :func:`tfddim.export.onnx.onnx_output_name`) is returned under its own name."""
        session = self._sessions[name]
        names = [o.name for o in session.get_outputs()]
        input_names = [i.name for i in session.get_inputs()]
        signature_name = {onnx_output_name(key, input_names): key for key in input_names}
        outputs = session.run(names, {k: np.asarray(v) for k, v in inputs.items()})
        return {signature_name.get(n, n): value for n, value in zip(names, outputs)}

    def sample(self, x_T, num_steps: int, eta: float = 0.0, seed: int = 0, labels=None, guidance_scale: float = 1.0,
               low_res=None) -> np.ndarray:
        """x₀ from x_T; for η > 0 the noise ``[S, B, ...]`` is drawn with numpy from ``seed``."""
        x = self._x(x_T, "x_T")
        s, eta = self._steps(num_steps), self._eta(eta)
        shape = (int(s) if eta > 0 else 0, *x.shape)
        noise = np.random.default_rng(int(self._seed(seed))).standard_normal(shape).astype(np.float32)
        return self.sample_with_noise(x, int(s), float(eta), noise, labels, guidance_scale, low_res)


def onnx_session_options(threads: int = 0):
    """The ONNX Runtime session options tfddim's exported loops run with (``make bench``'s serving table).

    - ``graph_optimization_level = ORT_ENABLE_ALL``: constant folding, node fusions and the NCHWc
      convolution layout, which reach the network inside the loop once its weights are hoisted out of
      the loop state (:mod:`tfddim.export.onnx_loops`);
    - ``execution_mode = ORT_SEQUENTIAL``: the loop is a chain of dependent steps, so there is nothing
      for ORT's inter-op parallelism to run side by side;
    - ``intra_op_num_threads``: ``threads``, or 0 for ORT's choice (one per physical core); a server that
      runs several sessions side by side should give each its share.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads)
    return options


def open_sampler(path: str, backend: str = "tf") -> _CheckedSampler:
    """The sampler for ``backend`` (``"tf"``: the SavedModel, ``"onnx"``: its ONNX graphs)."""
    if backend == "tf":
        return SavedModelSampler(path)
    if backend == "onnx":
        return OnnxSampler(path)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
