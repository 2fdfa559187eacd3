"""Measure and draw the MNIST editing/cascade models (the README's numbers and figures, the model cards').

    python tools/mnist_cascade_eval.py [--n 1000] [--steps 50] [--out docs/editing] [--json measurements.json]

Reads the shipped exports ``saved_models/mnist_base/1`` (14×14), ``mnist_sr/1`` (14→28) and
``mnist_cascade/1`` through their SavedModel signatures, the held-out MNIST split (1,000 digits, never trained
on) and the MNIST evaluation classifiers (``saved_models/mnist_classifier``, ``mnist14_classifier``). Writes:

- upsampling: the upsampler (DDIM, η = 0, ``--steps``) against bilinear upsampling of the held-out 14×14
  digits: FID to the held-out 28×28 digits and PSNR to them (each low-res image's own original);
- the cascade: FID of ``--n`` samples against the held-out 28×28 set, and the base stage's 14×14 FID;
- the noise floor: FID of ``--n`` training digits against the same held-out set (what a perfect model scores
  at this N);
- SDEdit on the base model (SDEdit's stroke-to-image setting): the guides are the held-out 14×14 digits
  pixelated to 7×7 blocks (area downsampling, nearest upsampling); realism is FID (14×14) against training
  digits, faithfulness the L2 distance to the guide, against the strength; and a figure of one guide;
- inpainting on the base model: a figure (the lower half generated from the upper half).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

from tfddim.data import load_mnist
from tfddim.evaluation import metrics
from tfddim.evaluation.features import DigitsFeatureNet
from tfddim.pipelines.callbacks import image_grid

STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)


def _batched(fn, n, batch=250):
    outs = [fn(i, min(n, i + batch)) for i in range(0, n, batch)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _noise(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _png(path, images, columns):
    grid = image_grid(np.clip(images, -1, 1), columns=columns, scale=3)
    tf.io.write_file(path, tf.image.encode_png(grid))
    print(f"wrote {path}")


def _fid(net, a, b):
    return float(metrics.fid(net.features(a), net.features(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--models", default="saved_models")
    parser.add_argument("--out", default=os.path.join("docs", "editing"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", choices=("all", "editing"), default="all")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    n, S = args.n, np.int32(args.steps)
    real28, _ = load_mnist("test")
    real14, _ = load_mnist("test", 14)
    train28, _ = load_mnist("train")
    train14, _ = load_mnist("train", 14)
    net28 = DigitsFeatureNet(os.path.join(args.models, "mnist_classifier"))
    net14 = DigitsFeatureNet(os.path.join(args.models, "mnist14_classifier"))
    out = {"n": n, "steps": int(S)}
    floor_idx = np.random.default_rng(0).permutation(len(train28))[:n]
    out["floor_fid28"] = _fid(net28, train28[floor_idx], real28[:n])
    out["floor_fid14"] = _fid(net14, train14[floor_idx], real14[:n])

    if args.only == "all":
        _upsampling_and_cascade(args, n, S, real28, real14, train28, net28, net14, out)
    _editing(args, n, S, real14, train14, net14, floor_idx, out)
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def _upsampling_and_cascade(args, n, S, real28, real14, train28, net28, net14, out):
    # ---- the upsampler against bilinear upsampling of the held-out 14x14 digits
    sr = tf.saved_model.load(os.path.join(args.models, "mnist_sr", "1")).signatures["serving_default"]
    x_T = _noise((len(real14), 28, 28, 1), 1)
    t0 = time.time()
    up = _batched(lambda i, j: {"x": sr(low_res=real14[i:j], x_T=x_T[i:j], num_steps=S, eta=tf.constant(0.0),
                                        seed=tf.constant(0, tf.int64))["x_0"].numpy()}, len(real14))["x"]
    out["sr_seconds_per_image"] = (time.time() - t0) / len(real14)
    bilinear = tf.image.resize(real14, (28, 28), method="bilinear").numpy()
    for name, images in (("sr", up), ("bilinear", bilinear)):
        out[f"{name}_fid28"] = _fid(net28, images[:n], real28[:n])
        mse = np.mean((np.clip(images, -1, 1) - real28) ** 2, axis=(1, 2, 3))
        out[f"{name}_psnr"] = float(np.mean(10 * np.log10(4.0 / mse)))
        # consistency: the area downsampling of the upsampled image against the low-res input
        out[f"{name}_low_res_rmse"] = float(np.sqrt(np.mean((tf.nn.avg_pool2d(np.clip(images, -1, 1), 2, 2, "VALID").numpy()
                                                             - real14) ** 2)))
    rows = np.concatenate([tf.image.resize(real14[:8], (28, 28), method="nearest").numpy(), bilinear[:8], up[:8], real28[:8]])
    _png(os.path.join(args.out, "super_resolution.png"), rows, 8)

    # ---- the cascade
    cascade = tf.saved_model.load(os.path.join(args.models, "mnist_cascade", "1")).signatures["serving_default"]
    z14, z28 = _noise((n, 14, 14, 1), 2), _noise((n, 28, 28, 1), 3)
    t0 = time.time()
    samples = _batched(lambda i, j: {k: v.numpy() for k, v in cascade(
        x_T=z14[i:j], x_T_upsample=z28[i:j], num_steps=S, num_steps_upsample=S, eta=tf.constant(0.0),
        seed=tf.constant(0, tf.int64)).items()}, n)
    out["cascade_seconds_per_image"] = (time.time() - t0) / n
    out["cascade_fid28"] = _fid(net28, samples["x_0"], real28[:n])
    out["base_fid14"] = _fid(net14, samples["x_0_low"], real14[:n])
    out["base_bilinear_fid28"] = _fid(net28, tf.image.resize(samples["x_0_low"], (28, 28)).numpy(), real28[:n])
    _png(os.path.join(args.out, "cascade_samples.png"), samples["x_0"][:64], 8)
    _png(os.path.join(args.out, "cascade_pairs.png"),
         np.concatenate([tf.image.resize(samples["x_0_low"][:8], (28, 28), method="nearest").numpy(), samples["x_0"][:8]]), 8)



def _editing(args, n, S, real14, train14, net14, floor_idx, out):
    # ---- SDEdit and inpainting on the base model (14x14)
    base = tf.saved_model.load(os.path.join(args.models, "mnist_base", "1")).signatures
    m = min(n, 500)
    reference = train14[floor_idx[:m]]
    guides = tf.image.resize(tf.nn.avg_pool2d(real14, 2, 2, "VALID"), (14, 14), method="nearest").numpy()
    out["sdedit_guide_fid14"] = _fid(net14, guides[:m], reference)
    out["sdedit_floor_fid14"] = _fid(net14, real14[:m], reference)
    curve = []
    for s in STRENGTHS:
        edited = _batched(lambda i, j: {"x": base["edit"](x_0=guides[i:j], strength=tf.constant(s), num_steps=S,
                                                          eta=tf.constant(0.0), seed=tf.constant(5, tf.int64))["x_0"].numpy()}, m)["x"]
        curve.append({"strength": s, "fid14": _fid(net14, edited, reference),
                      "l2": float(np.mean(np.sqrt(np.sum((edited - guides[:m]) ** 2, axis=(1, 2, 3)))))})
        print(curve[-1])
    out["sdedit_curve"] = curve
    one = np.repeat(guides[3:4], 4, axis=0)
    row = [guides[3:4]]
    for s in STRENGTHS:
        row.append(base["edit"](x_0=one, strength=tf.constant(s), num_steps=S, eta=tf.constant(0.0),
                                seed=tf.constant(7, tf.int64))["x_0"].numpy())
    grid = np.concatenate([np.repeat(row[0], 4, axis=0)[None]] + [r[None] for r in row[1:]])  # [6, 4, ...]
    _png(os.path.join(args.out, "sdedit_strengths.png"), grid.transpose(1, 0, 2, 3, 4).reshape(-1, 14, 14, 1), 6)
    _sdedit_curve_png(curve, out["sdedit_floor_fid14"], os.path.join(args.out, "sdedit_curve.png"), out["sdedit_guide_fid14"])

    mask = np.zeros((8, 14, 14, 1), np.float32)
    mask[:, :7] = 1.0  # keep the upper half
    x0 = real14[10:18]
    inpainted = [base["inpaint"](x_0=x0, mask=mask, num_steps=S, eta=tf.constant(0.0),
                                 seed=tf.constant(k, tf.int64))["x_0"].numpy() for k in range(3)]
    _png(os.path.join(args.out, "inpainting.png"), np.concatenate([np.where(mask > 0, x0, -1.0), *inpainted, x0]), 8)


def _sdedit_curve_png(curve, floor, path, guide_fid):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot([c["l2"] for c in curve], [c["fid14"] for c in curve], "o-")
    for c in curve:
        ax.annotate(f"s={c['strength']}", (c["l2"], c["fid14"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(floor, color="gray", ls="--", lw=1, label=f"held-out real digits {floor:.2f}")
    ax.plot([0], [guide_fid], "s", color="C3", label=f"the guides themselves {guide_fid:.1f}")
    ax.set_xlabel("L2 to the pixelated guide (faithfulness, lower = closer)")
    ax.set_ylabel("FID 14×14 (realism, lower = better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
