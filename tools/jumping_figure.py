"""The seed's "jumping prediction" figure for the latent model: one generation, decoded at every step.

Rows, one column per DDIM step (``sample_trajectory`` of ``saved_models/mnist_ldm/1``, η = 0): D(ẑ₀) (the
decoded prediction of z₀ made at that step), D(z) (the decoded latent after the step) and
δ = (D(ẑ₀) − D(z)) / max|D(ẑ₀) − D(z)| (per column, shown in [-1, 1]): what the prediction "jumps" over.
Writes ``docs/latent/jumping.png``.

    python tools/jumping_figure.py [--label 3] [--steps 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join("saved_models", "mnist_ldm", "1"))
    parser.add_argument("--label", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--out", default=os.path.join("docs", "latent", "jumping.png"))
    args = parser.parse_args()
    import tensorflow as tf

    from tfddim.pipelines.callbacks import image_grid
    from tfddim.runtime import open_sampler

    sampler = open_sampler(args.model, "tf")
    x_T = sampler.starting_noise(1, args.seed)
    _, z_steps, z0_steps = sampler.sample_trajectory(x_T, args.steps, labels=[args.label],
                                                     guidance_scale=args.guidance_scale)
    jump = sampler.decode(z0_steps[:, 0])  # [S, H, W, C]
    now = sampler.decode(z_steps[:, 0])
    delta = jump - now
    delta = delta / np.maximum(np.abs(delta).reshape(len(delta), -1).max(axis=1), 1e-12)[:, None, None, None]
    rows = np.concatenate([np.clip(jump, -1, 1), np.clip(now, -1, 1), delta])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tf.io.write_file(args.out, tf.image.encode_png(image_grid(rows, columns=len(jump), scale=3)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
