"""Sample an exported model to a PNG grid (and .npz): ``tfddim sample --model saved_models/digits/1 --n 64``.

``--backend tf`` runs the SavedModel, ``--backend onnx`` its ONNX graphs in ONNX
Runtime (:mod:`tfddim.runtime`); without ``--model`` the shipped digits model is used.

Requests are cut into batches of ``batch_size`` so memory stays bounded, with a
Keras progress bar. Sample i depends only on ``seed`` and i: x_T comes from
``seed`` for all n samples up front, and for eta > 0 sample i's per-step noise
``[S, ...]`` is drawn with numpy from ``np.random.default_rng([seed, i])`` and
passed to the export's ``sample_with_noise``, so neither ``batch_size`` nor the
backend changes the samples (TensorFlow and ONNX Runtime agree to float32
rounding). The deterministic solvers (``--method`` ddim at eta = 0, dpmpp_2m, dpmpp_3m,
unipc) use no noise and run the export's ``sample_ode`` with ``--spacing``; ``--method auto``
(the default) picks the recommended solver and spacing for ``--steps``
(:func:`tfddim.sampling.recommended`, chosen by ``make bench``'s solver-error table).

A super-resolution export takes ``--low-res LOW.png`` (its h x w low-res image), the same for every sample.

The output folder is created and checked writable before the model is opened,
so a bad ``--out`` costs nothing; a damaged export (a truncated
``saved_model.pb``, variables file or ``.onnx``) is a ``ValueError`` naming the
file and saying to re-export it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Optional

import numpy as np

from tfddim.pipelines.config import check_at_least

METHODS = ("auto", "ddim", "ddpm", "dpmpp_2m", "dpmpp_3m", "unipc")
VARIANCES = ("fixed_small", "fixed_large", "learned_range")
SPACINGS = ("auto", "uniform", "linspace", "trailing", "quad", "logsnr", "karras", "time_quadratic")
BACKENDS = ("tf", "onnx")
# The model that ships with the project (MODEL_CARD.md beside it), found from the checkout.
DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models", "digits", "1")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """The options of ``tfddim sample``.

    Attributes:
        model: an exported version folder (None: the shipped ``saved_models/digits/1``).
        n: the number of samples; >= 1.
        steps: sampling steps S; >= 1.
        eta: DDIM eta (``method="ddim"`` only; 1 = DDPM).
        seed: >= 0; x_T of all ``n`` samples and, for eta > 0, sample i's noise from ``default_rng([seed, i])``.
        labels: class labels cycled over the samples (None: unconditional).
        guidance_scale: the classifier(-free) guidance scale.
        out: the output PNG (its folder is created); the ``.npz`` goes beside it.
        npz: also write the samples as ``.npz`` (always for data that are not images).
        batch_size: samples per graph call; >= 1.
        backend: ``tf`` (the SavedModel) or ``onnx`` (its ONNX graphs in ONNX Runtime).
        method: ``auto`` (the recommended deterministic solver for ``steps``,
            :func:`tfddim.sampling.recommended`; DDIM when ``eta`` > 0), ``ddim``, or a deterministic
            higher-order solver: ``dpmpp_2m``, ``dpmpp_3m``, ``unipc``; or ``ddpm``, improved DDPM's strided
            ancestral sampler on the export's spacing (``sample_ddpm``, noise as for eta > 0).
        variance: the DDPM variance of ``method="ddpm"``: ``fixed_small`` (β̃), ``fixed_large`` (β) or
            ``learned_range`` (a learned-variance network; ``export.json: ddpm_variances``).
        spacing: ``auto`` (the recommended spacing for the solver; the export's own spacing for
            stochastic DDIM, which runs ``sample_with_noise``) or a spacing the export computes in its
            graph (``export.json: ode_spacings``).
        low_res: a super-resolution export's low-res PNG (its h x w; :func:`tfddim.pipelines.edit.load_low_res`),
            used for every sample; required for such an export, refused for another.
    """

    model: Optional[str] = None
    n: int = 64
    steps: int = 50
    eta: float = 0.0
    seed: int = 0
    labels: Optional[tuple] = None
    guidance_scale: float = 1.0
    out: str = os.path.join("runs", "samples", "samples.png")
    npz: bool = False
    batch_size: int = 256
    backend: str = "tf"
    method: str = "auto"
    spacing: str = "auto"
    variance: str = "fixed_small"
    low_res: Optional[str] = None

    def __post_init__(self):
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(int(y) for y in np.ravel(self.labels)))
        if self.n < 1 or self.batch_size < 1:
            raise ValueError("--n and --batch-size must be >= 1")
        check_at_least(self, steps=1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {self.method!r}")
        if self.spacing not in SPACINGS:
            raise ValueError(f"--spacing must be one of {SPACINGS}, got {self.spacing!r}")
        if self.variance not in VARIANCES:
            raise ValueError(f"--variance must be one of {VARIANCES}, got {self.variance!r}")
        if self.method not in ("auto", "ddim") and self.eta != 0.0:
            kind = "its variance is --variance" if self.method == "ddpm" else f"{self.method} is deterministic"
            raise ValueError(f"--eta applies only to --method ddim ({kind})")
        if self.method != "ddpm" and self.variance != "fixed_small":
            raise ValueError("--variance applies only to --method ddpm")

    @property
    def stochastic(self) -> bool:
        """DDIM with η > 0 (``sample_with_noise``) or DDPM (``sample_ddpm``): per-sample numpy noise, on the
        export's spacing."""
        return (self.method in ("auto", "ddim") and self.eta > 0) or self.method == "ddpm"

    def solver(self) -> tuple:
        """(method, spacing) of a deterministic request, ``auto`` resolved (:func:`tfddim.sampling.recommended`)."""
        from tfddim.sampling.recommended import recommended

        method, spacing = recommended(self.steps)
        method = method if self.method == "auto" else self.method
        if self.spacing != "auto":
            spacing = self.spacing
        elif self.method != "auto":
            spacing = recommended(self.steps, method)[1]
        return method, spacing

    @property
    def model_dir(self) -> str:
        """The export to sample: ``model``, or the shipped digits model."""
        return DEFAULT_MODEL if self.model is None else self.model


def run(cfg: SampleConfig) -> dict:
    """Draw ``cfg.n`` samples in batches; write the PNG grid (images) and/or the ``.npz``.

    Returns ``{"x_0": samples, "files": [written paths]}``.
    """
    import tensorflow as tf

    from tfddim.pipelines.callbacks import image_grid
    from tfddim.pipelines.edit import load_low_res
    from tfddim.runtime import open_sampler

    n, out = cfg.n, cfg.out
    _check_writable(out)  # before sampling, which may take long
    sampler = _open(cfg.model_dir, cfg.backend, open_sampler)
    if sampler.manifest.cascade is not None:
        return _run_cascade(cfg, sampler, image_grid)
    low = load_low_res(cfg.low_res, sampler, cfg.model_dir)
    x_T = sampler.starting_noise(n, cfg.seed)
    y = None if cfg.labels is None else np.resize(np.asarray(cfg.labels, np.int32), n)  # cycle the given labels over n
    chunks = _draw(cfg, sampler, x_T, y, low)
    x0 = np.concatenate(chunks)
    files = []
    if len(sampler.pixel_shape) == 3:
        scale = max(1, 64 // sampler.pixel_shape[0])
        tf.io.write_file(out, tf.image.encode_png(image_grid(x0, scale=scale)))
        files.append(out)
    if cfg.npz or len(sampler.pixel_shape) != 3:
        path = os.path.splitext(out)[0] + ".npz"
        np.savez_compressed(path, x_0=x0, x_T=x_T, **({} if y is None else {"labels": y}))
        files.append(path)
    if cfg.method == "ddpm":
        what = f"DDPM steps, variance {cfg.variance}, spacing {sampler.manifest.spacing.value}"
    elif cfg.stochastic:
        what = f"DDIM steps, eta={cfg.eta}, spacing {sampler.manifest.spacing.value}"
    else:
        what = "{} steps, spacing {}".format(*cfg.solver())
    print(f"tfddim sample: {n} samples, {cfg.steps} {what}, backend {cfg.backend}; wrote {', '.join(files)}")
    return {"x_0": x0, "files": files}


def _check_writable(out: str) -> None:
    """Create ``out``'s folder and check a file can be written there (a ``PermissionError`` naming ``--out``)."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(out))
    try:
        if os.path.isdir(out):
            raise IsADirectoryError(21, "it is a folder; give a file name such as samples.png")
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        if os.path.exists(out) and not os.access(out, os.W_OK):
            raise PermissionError(13, "the file is read-only")
    except OSError as e:
        raise PermissionError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def _load_errors() -> tuple:
    """What loading a damaged export raises: TensorFlow's errors, protobuf's, OSError/IndexError from reading it."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    errors = [tf.errors.OpError, DecodeError, OSError, IndexError]
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        errors += [ort_state.Fail, ort_state.InvalidProtobuf, ort_state.InvalidGraph, ort_state.NoSuchFile]
    except (ImportError, AttributeError):
        pass
    return tuple(errors)


def _open(model_dir: str, backend: str, open_sampler):
    """``open_sampler``, with a damaged export's load error turned into a ``ValueError`` naming the file."""
    try:
        load_errors = _load_errors()
    except ImportError:
        load_errors = ()
    try:
        return open_sampler(model_dir, backend)
    except load_errors as e:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise  # already a user-facing error naming its file
        reason = " ".join(str(e).split())[:300]
        raise ValueError(f"{_damaged_file(model_dir, backend, reason)} cannot be loaded ({reason}); the export is "
                         "damaged or incomplete: re-export it with `tfddim export`") from e


def _damaged_file(model_dir: str, backend: str, reason: str) -> str:
    """The file of the export that failed to load, as far as the error tells."""
    from tfddim.export import layout

    named = re.search(r"Load model from (\S+?) failed", reason) or re.search(r"file b?'([^']+)'", reason)
    if named:
        return named.group(1)
    if backend == "onnx":
        return layout.onnx_folder(model_dir)
    if "saved_model.pb" in reason or "SavedModel" in reason:
        return layout.ExportLayout(model_dir).saved_model_pb
    return _damaged_variables(os.path.join(model_dir, "variables"))


def _damaged_variables(folder: str) -> str:
    """Which file of the ``variables/`` checkpoint cannot be read: its index, else its data shards."""
    import glob

    import tensorflow as tf

    prefix = os.path.join(folder, "variables")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception:  # noqa: BLE001 -- a diagnosis only: whatever fails here points at the index
        return prefix + ".index"
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception:  # noqa: BLE001 -- as above, for the data
        return ", ".join(sorted(glob.glob(prefix + ".data-*"))) or prefix + ".data-*"
    return folder


# Per-call cap on the explicit noise [S, B, ...] (float32) of eta > 0; a smaller call changes no sample.
_NOISE_BYTES = 256 * 2**20


def _sample_noise(seed: int, indices, steps: int, shape) -> np.ndarray:
    """``[S, B, *shape]`` float32: sample i's noise from ``default_rng([seed, i])`` (independent of batching)."""
    return np.stack([np.random.default_rng([seed, int(i)]).standard_normal((steps, *shape)).astype(np.float32)
                     for i in indices], axis=1)


def _draw(cfg: SampleConfig, sampler, x_T: np.ndarray, y, low=None) -> list:
    """The samples of ``x_T`` in batches of ``cfg.batch_size`` (a progress bar when there is more than one);
    ``low``: a super-resolution export's low-res image ``[h, w, C]``, the same for every sample.

    Sample i depends only on ``(cfg.seed, i)`` (see the module docstring): eta > 0 goes through
    ``sample_with_noise``, every deterministic request through ``sample_ode`` (or, for an export written
    before it, ``sample_with_noise`` with empty noise / ``sample_dpmpp_2m`` on the export's spacing).
    """
    import keras

    n, shape = len(x_T), tuple(sampler.data_shape)
    stochastic = cfg.stochastic
    if stochastic and cfg.spacing not in ("auto", sampler.manifest.spacing.value):
        raise ValueError(f"--spacing {cfg.spacing}: DDPM and stochastic DDIM (eta > 0) run on the export's own spacing, "
                         f"{sampler.manifest.spacing.value}; leave --spacing out or use --eta 0")
    method, spacing = (None, None) if stochastic else cfg.solver()
    if cfg.method == "ddpm" and not sampler.has_signature("sample_ddpm"):
        raise ValueError(f"{cfg.model_dir} has no sample_ddpm signature (exported before it existed): re-export the "
                         "model with `tfddim export`")
    if not stochastic and not sampler.has_signature("sample_ode"):  # exports written before sample_ode: their own signatures
        if method not in ("ddim", "dpmpp_2m") or spacing != sampler.manifest.spacing.value:
            raise ValueError(f"{cfg.model_dir} has no sample_ode signature (exported before it existed), so it runs only "
                             f"ddim or dpmpp_2m on its spacing {sampler.manifest.spacing.value}: pass --method ddim "
                             f"--spacing {sampler.manifest.spacing.value}, or re-export the model with `tfddim export`")
    batch = cfg.batch_size
    if stochastic:  # bound the numpy noise held per call
        batch = max(1, min(batch, _NOISE_BYTES // (4 * cfg.steps * int(np.prod(shape)))))
    chunks = []
    bar = keras.utils.Progbar(n, unit_name="sample") if n > batch else None
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        x, chunk_labels = x_T[start:stop], None if y is None else y[start:stop]
        cond = dict(labels=chunk_labels, guidance_scale=cfg.guidance_scale,
                    low_res=None if low is None else np.repeat(low[None], stop - start, axis=0))
        if cfg.method == "ddpm":
            noise = _sample_noise(cfg.seed, range(start, stop), cfg.steps, shape)
            chunks.append(sampler.sample_ddpm(x, cfg.steps, cfg.variance, noise, **cond))
        elif stochastic:
            noise = _sample_noise(cfg.seed, range(start, stop), cfg.steps, shape)
            chunks.append(sampler.sample_with_noise(x, cfg.steps, cfg.eta, noise, **cond))
        elif sampler.has_signature("sample_ode"):
            chunks.append(sampler.sample_ode(x, cfg.steps, method, spacing, **cond))
        elif method == "dpmpp_2m":
            chunks.append(sampler.sample_dpmpp_2m(x, cfg.steps, **cond))
        else:
            chunks.append(sampler.sample_with_noise(x, cfg.steps, 0.0, np.zeros((0, *x.shape), np.float32), **cond))
        if bar is not None:
            bar.update(stop)
    return chunks


def _run_cascade(cfg: SampleConfig, sampler, image_grid):
    """A cascade export: DDIM with ``--steps`` in both stages (``--eta``); the PNG shows the upsampled samples."""
    import tensorflow as tf

    if cfg.method not in ("auto", "ddim") or cfg.spacing != "auto" or cfg.labels is not None or cfg.low_res is not None:
        raise ValueError("a cascade export samples with DDIM on its own spacing, unconditionally: leave out --method, "
                         "--spacing, --labels and --low-res")
    rng = np.random.default_rng(cfg.seed)
    x_T = rng.standard_normal((cfg.n, *sampler.manifest.cascade.data_shape)).astype(np.float32)
    x_T_up = rng.standard_normal((cfg.n, *sampler.data_shape)).astype(np.float32)
    outs = [sampler.sample_cascade(x_T[i:i + cfg.batch_size], x_T_up[i:i + cfg.batch_size], cfg.steps, cfg.steps,
                                   cfg.eta, seed=cfg.seed + i)
            for i in range(0, cfg.n, cfg.batch_size)]
    x0, low = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
    tf.io.write_file(cfg.out, tf.image.encode_png(image_grid(x0, scale=max(1, 64 // sampler.data_shape[0]))))
    files = [cfg.out]
    if cfg.npz:
        path = os.path.splitext(cfg.out)[0] + ".npz"
        np.savez_compressed(path, x_0=x0, x_0_low=low, x_T=x_T, x_T_upsample=x_T_up)
        files.append(path)
    print(f"tfddim sample: {cfg.n} cascade samples ({cfg.steps} DDIM steps per stage, eta={cfg.eta}), backend "
          f"{cfg.backend}; wrote {', '.join(files)}")
    return files


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["sample", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
