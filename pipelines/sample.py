"""Sample an exported model to a PNG grid (and .npz): ``tfddim sample --model saved_models/digits/1 --n 64``.

``--backend tf`` runs the SavedModel, ``--backend onnx`` its ONNX graphs in ONNX
Runtime (:mod:`tfddim.runtime`); without ``--model`` the shipped digits model is used.

Requests are cut into batches of ``batch_size`` so memory stays bounded, with a
Keras progress bar. x_T comes from ``seed`` for all n samples up front, so the
samples do not depend on the batch size.
"""

from __future__ import annotations

import os
import sys

import numpy as np

# The model that ships with the project (MODEL_CARD.md beside it), found from the checkout.
METHODS = ("ddim", "dpmpp_2m")
DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models", "digits", "1")


def run(model: str = None, n: int = 64, steps: int = 50, eta: float = 0.0, seed: int = 0, labels=None,
        guidance_scale: float = 1.0, out: str = "samples.png", npz: bool = False, batch_size: int = 256,
        backend: str = "tf", method: str = "ddim") -> dict:
    import keras
    import tensorflow as tf

    from tfddim.pipelines.callbacks import image_grid
    from tfddim.runtime import open_sampler

    if n < 1 or batch_size < 1:
        raise ValueError("--n and --batch-size must be >= 1")
    if method not in METHODS:
        raise ValueError(f"--method must be one of {METHODS}, got {method!r}")
    if method == "dpmpp_2m" and eta != 0.0:
        raise ValueError("--eta applies only to --method ddim (dpmpp_2m is deterministic)")
    sampler = open_sampler(DEFAULT_MODEL if model is None else model, backend)
    x_T = sampler.starting_noise(n, seed)
    y = None if labels is None else np.resize(np.asarray(labels, np.int32), n)  # cycle the given labels over n
    chunks = []
    bar = keras.utils.Progbar(n, unit_name="sample") if n > batch_size else None
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        chunk_labels = None if y is None else y[start:stop]
        # each batch draws its in-graph noise from its own seed, derived from (seed, start)
        if method == "dpmpp_2m":
            chunks.append(sampler.sample_dpmpp_2m(x_T[start:stop], steps, labels=chunk_labels, guidance_scale=guidance_scale))
        else:
            chunks.append(sampler.sample(x_T[start:stop], steps, eta, seed=seed * 1_000_003 + start, labels=chunk_labels,
                                         guidance_scale=guidance_scale))
        if bar is not None:
            bar.update(stop)
    x0 = np.concatenate(chunks)
    files = []
    if len(sampler.data_shape) == 3:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        scale = max(1, 64 // sampler.data_shape[0])
        tf.io.write_file(out, tf.image.encode_png(image_grid(x0, scale=scale)))
        files.append(out)
    if npz or len(sampler.data_shape) != 3:
        path = os.path.splitext(out)[0] + ".npz"
        np.savez_compressed(path, x_0=x0, x_T=x_T, **({} if y is None else {"labels": y}))
        files.append(path)
    what = f"DDIM steps, eta={eta}" if method == "ddim" else "DPM-Solver++(2M) steps"
    print(f"tfddim sample: {n} samples, {steps} {what}, backend {backend}; wrote {', '.join(files)}")
    return {"x_0": x0, "files": files}


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["sample", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
