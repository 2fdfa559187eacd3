"""FID of digits training recipes: DDIM@10, DDIM@50, the recommended solver@10/@20 and DDPM@1000, over 3 seeds.

    python tools/recipe_fid.py NAME=EXPORT_DIR [NAME=EXPORT_DIR ...] [--n 1000] [--out recipes.json]

Each export (a version folder, e.g. ``saved_models/digits/1``) is rebuilt in-process from its weights
(:func:`tfddim.export.saved_model.network_from_export`, with its prediction type, clipping and final ᾱ)
and sampled from N starting points per seed (seeds 0, 1, 2: x_T and the DDPM noise both change). FID
is on the digits classifier's features (``saved_models/digits_classifier``) against the real digits
left after taking N for the floor; the floor is N real digits against the same reference, over the
same 3 seeds' splits. Printed and written as JSON: mean ± standard deviation over the seeds.

The digits set has 1,797 images, so N = 1000 leaves 797 as the reference: every FID here, the floor
included, carries that reference's sampling error (the floor row shows its size).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SEEDS = (0, 1, 2)


def cells():
    """(label, method, steps, spacing, eta) of every column."""
    from tfddim.sampling import recommended

    best10, best20 = recommended(10), recommended(20)
    return (("DDIM@10", "ddim", 10, "trailing", 0.0), ("DDIM@50", "ddim", 50, "trailing", 0.0),
            (f"{best10[0]}@10 ({best10[1]})", best10[0], 10, best10[1], 0.0),
            (f"{best20[0]}@20 ({best20[1]})", best20[0], 20, best20[1], 0.0),
            ("DDPM@1000 (η=1)", "ddim", 1000, "trailing", 1.0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=EXPORT_DIR")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from tfddim import sampling
    from tfddim.diffusion.spacing import spaced_timesteps
    from tfddim.evaluation import features, metrics
    from tfddim.export.saved_model import network_from_export
    from tfddim.pipelines import evaluate

    real, _ = evaluate.real_data({"source": "digits"}, "all")
    net = features.DigitsFeatureNet(evaluate.DEFAULT_CLASSIFIER)
    real_features = net.features(real, batch_size=len(real))
    n = args.n
    splits = [np.random.default_rng(seed).permutation(len(real)) for seed in SEEDS]
    floors = [metrics.fid(real_features[p[:n]], real_features[p[n:]]) for p in splits]
    results = {"n": n, "seeds": list(SEEDS), "floor": floors, "models": {}}
    print(f"floor: {np.mean(floors):.3f} ± {np.std(floors):.3f}", flush=True)
    for spec in args.models:
        name, path = spec.split("=", 1)
        exported = network_from_export(path)
        m = exported.manifest
        shape = m.data_shape
        fn = tf.function(lambda x, t, _net=exported.network: _net((x, t), training=False),
                         input_signature=[tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None], tf.int32)])
        base = dict(clip_x0=m.clip_x0, final_alpha_cumprod=m.final_alpha_cumprod, prediction_type=m.prediction_type,
                    jit_compile=True)
        cache = sampling.SamplerCache()
        rows = {}
        for label, method, steps, spacing, eta in cells():
            values, seconds = [], []
            for seed, p in zip(SEEDS, splits):
                x_T = np.random.default_rng(100 + seed).standard_normal((n, *shape)).astype(np.float32)
                taus = spaced_timesteps(m.num_timesteps, steps, spacing, schedule=exported.schedule)
                t0 = time.perf_counter()
                x0 = sampling.sample(fn, x_T, exported.schedule, taus, method=method, eta=eta, seed=seed, cache=cache,
                                     **base).numpy()
                seconds.append(time.perf_counter() - t0)
                values.append(metrics.fid(net.features(np.clip(x0, -1, 1), batch_size=500), real_features[p[n:]]))
            rows[label] = {"fid": values, "seconds": seconds}
            print(f"{name:<16} {label:<32} FID {np.mean(values):.3f} ± {np.std(values):.3f}  ({np.mean(seconds):.0f} s)",
                  flush=True)
        results["models"][name] = {"path": path, "prediction_type": m.prediction_type.value, "cells": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
