"""Sample an exported model to a PNG grid (and .npz): ``tfddim sample --model saved_models/digits/1 --n 64``.

``--backend tf`` runs the SavedModel, ``--backend onnx`` its ONNX graphs in ONNX
Runtime (:mod:`tfddim.runtime`); without ``--model`` the shipped digits model is used.

Requests are cut into batches of ``batch_size`` so memory stays bounded, with a
Keras progress bar. x_T comes from ``seed`` for all n samples up front, so it
does not depend on the batch size; each batch draws its noise (eta > 0) from
:func:`tfddim.evaluation.seeds.batch_seed`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional

import numpy as np

from tfddim.pipelines.config import check_at_least

METHODS = ("ddim", "dpmpp_2m")
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
        seed: x_T of all ``n`` samples, and each batch's noise (:func:`tfddim.evaluation.seeds.batch_seed`).
        labels: class labels cycled over the samples (None: unconditional).
        guidance_scale: the classifier(-free) guidance scale.
        out: the output PNG; the ``.npz`` goes beside it.
        npz: also write the samples as ``.npz`` (always for data that are not images).
        batch_size: samples per graph call; >= 1.
        backend: ``tf`` (the SavedModel) or ``onnx`` (its ONNX graphs in ONNX Runtime).
        method: ``ddim`` or ``dpmpp_2m`` (DPM-Solver++(2M), deterministic).
    """

    model: Optional[str] = None
    n: int = 64
    steps: int = 50
    eta: float = 0.0
    seed: int = 0
    labels: Optional[tuple] = None
    guidance_scale: float = 1.0
    out: str = "samples.png"
    npz: bool = False
    batch_size: int = 256
    backend: str = "tf"
    method: str = "ddim"

    def __post_init__(self):
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(int(y) for y in np.ravel(self.labels)))
        if self.n < 1 or self.batch_size < 1:
            raise ValueError("--n and --batch-size must be >= 1")
        check_at_least(self, steps=1)
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {self.method!r}")
        if self.method == "dpmpp_2m" and self.eta != 0.0:
            raise ValueError("--eta applies only to --method ddim (dpmpp_2m is deterministic)")

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
    from tfddim.runtime import open_sampler

    sampler = open_sampler(cfg.model_dir, cfg.backend)
    n, out = cfg.n, cfg.out
    x_T = sampler.starting_noise(n, cfg.seed)
    y = None if cfg.labels is None else np.resize(np.asarray(cfg.labels, np.int32), n)  # cycle the given labels over n
    chunks = _draw(cfg, sampler, x_T, y)
    x0 = np.concatenate(chunks)
    files = []
    if len(sampler.data_shape) == 3:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        scale = max(1, 64 // sampler.data_shape[0])
        tf.io.write_file(out, tf.image.encode_png(image_grid(x0, scale=scale)))
        files.append(out)
    if cfg.npz or len(sampler.data_shape) != 3:
        path = os.path.splitext(out)[0] + ".npz"
        np.savez_compressed(path, x_0=x0, x_T=x_T, **({} if y is None else {"labels": y}))
        files.append(path)
    what = f"DDIM steps, eta={cfg.eta}" if cfg.method == "ddim" else "DPM-Solver++(2M) steps"
    print(f"tfddim sample: {n} samples, {cfg.steps} {what}, backend {cfg.backend}; wrote {', '.join(files)}")
    return {"x_0": x0, "files": files}


def _draw(cfg: SampleConfig, sampler, x_T: np.ndarray, y) -> list:
    """The samples of ``x_T`` in batches of ``cfg.batch_size`` (a progress bar when there is more than one)."""
    import keras

    from tfddim.evaluation.seeds import batch_seed

    n = len(x_T)
    chunks = []
    bar = keras.utils.Progbar(n, unit_name="sample") if n > cfg.batch_size else None
    for start in range(0, n, cfg.batch_size):
        stop = min(n, start + cfg.batch_size)
        chunk_labels = None if y is None else y[start:stop]
        if cfg.method == "dpmpp_2m":
            chunks.append(sampler.sample_dpmpp_2m(x_T[start:stop], cfg.steps, labels=chunk_labels,
                                                  guidance_scale=cfg.guidance_scale))
        else:  # each batch draws its in-graph noise from its own seed, derived from (seed, start)
            chunks.append(sampler.sample(x_T[start:stop], cfg.steps, cfg.eta, seed=batch_seed(cfg.seed, start),
                                         labels=chunk_labels, guidance_scale=cfg.guidance_scale))
        if bar is not None:
            bar.update(stop)
    return chunks


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["sample", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
