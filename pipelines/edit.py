"""Edit or inpaint one PNG with an exported model: ``tfddim edit`` (SDEdit) and ``tfddim inpaint``.

``tfddim edit --model DIR --input IN.png --strength S --steps N --out OUT.png`` noises the image to the level
``strength`` in (0, 1] picks and samples it back (SDEdit; :meth:`tfddim.runtime.SavedModelSampler.edit`);
``tfddim inpaint --model DIR --input IN.png --mask MASK.png --steps N --out OUT.png`` keeps the pixels where
the mask is white (255) and generates those where it is black (0) (:meth:`~tfddim.runtime.SavedModelSampler.inpaint`).

``IN.png`` (and ``MASK.png``) must have the model's H x W; they are read with the model's C channels (a
colour PNG is converted to grey for a C = 1 model, a grey one repeated for C = 3). Pixels map uint8 0..255 to
the model's [-1, 1] by x / 127.5 - 1, and back with rounding and clipping. A super-resolution export takes
``--low-res LOW.png`` of its low-res h x w, used for every result.

``--n`` edits the same input with n seeds ``seed``, ``seed + 1``, ...: result i depends only on ``seed + i``
and the backend (``--backend tf`` draws its noise in the graph, ``--backend onnx`` with numpy: the two give
different, equally valid results; see :mod:`tfddim.runtime`). The PNG is one row: the input, then the n
results, enlarged as ``tfddim sample``'s grid for small images.

As for ``tfddim sample``, ``--out``'s folder is created and checked writable before the model is opened, and a
bad input is a one-line ``ValueError`` naming its flag.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional

import numpy as np

from tfddim.pipelines.sample import BACKENDS, _check_writable, _open

KINDS = ("edit", "inpaint")


@dataclasses.dataclass(frozen=True)
class EditConfig:
    """The options of ``tfddim edit`` and ``tfddim inpaint``.

    Attributes:
        kind: ``edit`` (SDEdit, needs ``strength``) or ``inpaint`` (needs ``mask``).
        model: an exported version folder.
        input: the PNG to edit, of the model's H x W.
        out: the output PNG (its folder is created): the input, then the ``n`` results, in one row.
        steps: sampling steps S (of the whole list; an edit runs those at τ ≤ strength·(T−1)); >= 1.
        strength: SDEdit's strength in (0, 1] (``edit`` only; 1 = start from pure noise).
        mask: the mask PNG, same size: white (255) = keep, black (0) = generate (``inpaint`` only).
        eta: DDIM eta in [0, 1].
        seed: >= 0; result i uses ``seed + i``.
        n: the number of results; >= 1.
        backend: ``tf`` (the SavedModel) or ``onnx`` (its ONNX graphs in ONNX Runtime).
        low_res: the low-res PNG of a super-resolution export (required there, refused elsewhere).
        label: the class of a conditional export (required there), used for every result.
        guidance_scale: the classifier(-free) guidance scale of a conditional export.
    """

    kind: str
    model: str
    input: str
    out: str
    steps: int = 50
    strength: Optional[float] = None
    mask: Optional[str] = None
    eta: float = 0.0
    seed: int = 0
    n: int = 1
    backend: str = "tf"
    low_res: Optional[str] = None
    label: Optional[int] = None
    guidance_scale: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for flag, value in (("--steps", self.steps), ("--n", self.n)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{flag} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 0.0 <= float(self.eta) <= 1.0:  # NaN fails too
            raise ValueError(f"--eta must be in [0, 1], got {self.eta!r}")
        if self.kind == "edit":
            if self.strength is None:
                raise ValueError("--strength is required: a number in (0, 1] (1 = start from pure noise)")
            if not 0.0 < float(self.strength) <= 1.0:
                raise ValueError(f"--strength must be in (0, 1] (1 = start from pure noise), got {self.strength!r}")
            if self.mask is not None:
                raise ValueError("--mask applies to tfddim inpaint, not edit")
        else:
            if self.mask is None:
                raise ValueError("--mask is required: a PNG of the input's size, white (255) = keep, black (0) = generate")
            if self.strength is not None:
                raise ValueError("--strength applies to tfddim edit, not inpaint")
        if not np.isfinite(float(self.guidance_scale)):
            raise ValueError(f"--guidance-scale must be finite, got {self.guidance_scale!r}")


def read_png(path: str, flag: str, shape) -> np.ndarray:
    """The PNG at ``path`` as uint8 ``[H, W, C]`` of ``shape`` = (H, W, C) (C channels by conversion), or a
    ``ValueError`` naming ``flag`` (a missing file: ``FileNotFoundError``)."""
    import tensorflow as tf

    h, w, c = (int(d) for d in shape)
    if c not in (1, 3):
        raise ValueError(f"{flag}: the model's images have {c} channels; PNG input needs 1 (grey) or 3 (RGB)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: no such file")
    try:
        data = tf.io.read_file(path)
        image = tf.io.decode_png(data, channels=c).numpy()
    except (tf.errors.OpError, OSError) as e:
        reason = " ".join(str(getattr(e, "message", e)).split())[:200]
        raise ValueError(f"{flag} {path}: cannot decode it as a PNG ({reason})") from None
    if image.shape[:2] != (h, w):
        raise ValueError(f"{flag} {path} is {image.shape[0]}x{image.shape[1]} pixels; the model takes {h}x{w} "
                         f"images ({c} channel{'s' if c > 1 else ''})")
    return image


def to_model(image: np.ndarray) -> np.ndarray:
    """uint8 0..255 → float32 [-1, 1] (x / 127.5 - 1; the PNG's
    :func:`tfddim.pipelines.callbacks.image_grid` maps back, rounding and clipping)."""
    return np.asarray(image, np.float32) / 127.5 - 1.0


def read_mask(path: str, shape) -> np.ndarray:
    """The mask PNG as float32 ``[H, W, C]``: 1 where it is 255 (keep), 0 where it is 0 (generate)."""
    image = read_png(path, "--mask", shape)
    other = (image != 0) & (image != 255)
    if other.any():
        raise ValueError(f"--mask {path} must be only black (0 = generate) and white (255 = keep), "
                         f"got {int(other.sum())} pixels of other values (e.g. {int(image[other][0])})")
    return (image == 255).astype(np.float32)


def load_low_res(path: Optional[str], sampler, model_dir: str) -> Optional[np.ndarray]:
    """``--low-res`` as float32 ``[h, w, C]`` for a super-resolution export (required there, refused elsewhere)."""
    shape = sampler.manifest.low_res_shape
    if shape is None:
        if path is not None:
            raise ValueError(f"--low-res: {model_dir} is not a super-resolution model (it takes no low-res image)")
        return None
    if path is None:
        raise ValueError(f"--low-res: {model_dir} is a super-resolution model: give --low-res LOW.png, a "
                         f"{shape[0]}x{shape[1]} image")
    return to_model(read_png(path, "--low-res", shape))


def _label_kwargs(cfg: EditConfig, sampler, model_dir: str) -> dict:
    """``labels``/``guidance_scale`` for one sample of a conditional export (``--label``), else ``{}``."""
    if sampler.num_classes is None:
        if cfg.label is not None:
            raise ValueError(f"--label: {model_dir} is unconditional (it takes no class label)")
        return {}
    if cfg.label is None or not 0 <= cfg.label < sampler.num_classes:
        raise ValueError(f"--label: {model_dir} is class-conditional: give --label in [0, {sampler.num_classes}), "
                         f"got {cfg.label}")
    return {"labels": np.array([cfg.label], np.int32), "guidance_scale": float(cfg.guidance_scale)}


def run(cfg: EditConfig) -> dict:
    """Edit (or inpaint) ``cfg.input`` ``cfg.n`` times; write the row PNG.

    Returns ``{"input": [H, W, C] in [-1, 1], "x_0": [n, H, W, C] results, "files": [written paths]}``.
    """
    import tensorflow as tf

    from tfddim.pipelines.callbacks import image_grid
    from tfddim.runtime import open_sampler

    _check_writable(cfg.out)  # before the model is opened and run
    sampler = _open(cfg.model, cfg.backend, open_sampler)
    shape = tuple(sampler.pixel_shape)
    if len(shape) != 3:
        raise ValueError(f"--model {cfg.model}: its data are not images (shape {list(shape)})")
    x = to_model(read_png(cfg.input, "--input", shape))[None]
    mask = None if cfg.mask is None else read_mask(cfg.mask, shape)[None]
    low = load_low_res(cfg.low_res, sampler, cfg.model)
    cond = _label_kwargs(cfg, sampler, cfg.model)
    if low is not None:
        cond["low_res"] = low[None]
    results = []
    for i in range(cfg.n):
        seed = cfg.seed + i
        if cfg.kind == "edit":
            results.append(sampler.edit(x, cfg.strength, cfg.steps, eta=cfg.eta, seed=seed, **cond))
        else:
            results.append(sampler.inpaint(x, mask, cfg.steps, eta=cfg.eta, seed=seed, **cond))
    x0 = np.concatenate(results)
    scale = max(1, 64 // shape[0])
    grid = image_grid(np.concatenate([x, x0]), columns=cfg.n + 1, scale=scale)
    tf.io.write_file(cfg.out, tf.io.encode_png(grid))
    what = f"strength {cfg.strength}" if cfg.kind == "edit" else f"mask {cfg.mask}"
    print(f"tfddim {cfg.kind}: {cfg.n} result{'s' if cfg.n > 1 else ''} of {cfg.input} ({what}, {cfg.steps} steps, "
          f"eta={cfg.eta}, seeds {cfg.seed}..{cfg.seed + cfg.n - 1}), backend {cfg.backend}; wrote {cfg.out}")
    return {"input": x[0], "x_0": x0, "files": [cfg.out]}


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["edit", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
