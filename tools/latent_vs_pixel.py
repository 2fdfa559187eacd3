"""The latent diffusion argument, measured: pixel-space vs latent MNIST at equal CPU training time.

``--time``: the training step of each stage (the autoencoder of ``mnist_vae``, the latent U-Net of ``mnist_ldm``,
the pixel U-Net of ``mnist_pixel``), timed side by side in one process on one fixed batch, in interleaved
rounds (median of the rounds), so the machine's load hits all three alike. The pixel run's step budget for
equal CPU time is then (t_vae·steps_vae + t_ldm·steps_ldm) / t_pixel.

``--eval``: each exported model (``<models-dir>/mnist_ldm/1``, ``<models-dir>/mnist_pixel/1``; the pixel model is not
shipped: ``tfddim train --config mnist_pixel``, ``tfddim export runs/mnist_pixel --name mnist_pixel --base-dir
runs/exports``, then ``mnist_ldm`` copied or linked there) samples ``--n``
digits (labels cycling 0–9, DPM-Solver++(2M) on trailing spacing, ``--steps``, classifier-free
guidance w ∈ ``--scales``); FID against the 1,000 held-out digits with the MNIST evaluation classifier, the
noise floor (1,000 training digits), the classifier's accuracy on the asked labels, and the sampling time per
image (batches of 250, after a warm-up call). Writes ``docs/latent/latent_vs_pixel.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

OUT = os.path.join("docs", "latent")


def _fit_time(model, batch, steps):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensors(batch).repeat()
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps


def time_steps(rounds: int = 3, steps: int = 15) -> dict:
    import keras

    from tfddim import data as data_lib
    from tfddim import models
    from tfddim.pipelines import config as run_config
    from tfddim.pipelines import train, train_autoencoder
    from tfddim.training import AutoencoderModel

    vae_cfg = train_autoencoder.load("mnist_vae")
    ae = models.build({"class_name": "Autoencoder", "config": dict(vae_cfg.model.config)})
    vae = AutoencoderModel(ae, kl_weight=vae_cfg.loss.kl_weight)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    ldm_cfg, pix_cfg = run_config.load("mnist_ldm"), run_config.load("mnist_pixel")
    ldm = train.build_model(ldm_cfg, tuple(ae.latent_shape), 10)
    pix = train.build_model(pix_cfg, (28, 28, 1), 10)
    x, y = next(iter(data_lib.make_dataset(vae_cfg.data, "train", training=True)))
    z = np.random.default_rng(0).standard_normal((len(x), *ae.latent_shape)).astype(np.float32)
    batches = {"vae": (x, y), "ldm": (z, y), "pixel": (x, y)}
    stages = {"vae": vae, "ldm": ldm, "pixel": pix}
    for name, model in stages.items():  # trace once, untimed
        _fit_time(model, batches[name], 2)
    times = {name: [] for name in stages}
    for _ in range(rounds):
        for name, model in stages.items():
            times[name].append(_fit_time(model, batches[name], steps))
    return {name: statistics.median(v) for name, v in times.items()} | {"rounds": rounds, "steps_per_round": steps}


def evaluate(n: int, steps: int, scales, models=("mnist_ldm", "mnist_pixel"), models_dir: str = "saved_models",
             batch: int = 250) -> dict:
    from tfddim.data import load_mnist
    from tfddim.evaluation import metrics
    from tfddim.evaluation.features import DigitsFeatureNet
    from tfddim.runtime import open_sampler

    net = DigitsFeatureNet(os.path.join("saved_models", "mnist_classifier"))
    real = load_mnist("test")[0]
    train = load_mnist("train")[0]
    reference = net.features(real[:1000])
    out = {"floor_fid": float(metrics.fid(net.features(train[:1000]), reference)), "n": n, "steps": steps, "models": {}}
    labels = np.arange(n) % 10
    for name in models:
        sampler = open_sampler(os.path.join(models_dir, name, "1"), "tf")
        x_T = sampler.starting_noise(n, 0)
        sampler.sample_ode(x_T[:8], 2, "dpmpp_2m", "trailing", labels=labels[:8])  # warm-up
        rows = []
        for method, spacing in (("dpmpp_2m", "trailing"),):
            for w in scales:
                start = time.perf_counter()
                x = np.concatenate([sampler.sample_ode(x_T[i:i + batch], steps, method, spacing,
                                                       labels=labels[i:i + batch], guidance_scale=w)
                                    for i in range(0, n, batch)])
                seconds = time.perf_counter() - start
                x = np.clip(x, -1, 1)
                logits = net.logits(x) if hasattr(net, "logits") else None
                row = {"method": method, "spacing": spacing, "guidance_scale": w,
                       "fid": float(metrics.fid(net.features(x), reference)),
                       "ms_per_image": 1000 * seconds / n}
                if logits is not None:
                    row["accuracy"] = metrics.class_accuracy(logits, labels)
                rows.append(row)
                print(name, row, flush=True)
        out["models"][name] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", action="store_true")
    parser.add_argument("--eval", action="store_true")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", type=lambda s: s.split(","), default=["mnist_ldm", "mnist_pixel"])
    parser.add_argument("--models-dir", default="saved_models",
                        help="where the exports are (mnist_pixel is not shipped: export it to runs/exports)")
    parser.add_argument("--scales", type=lambda s: [float(v) for v in s.split(",")], default=[1.0, 2.0])
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "latent_vs_pixel.json")
    result = json.load(open(path)) if os.path.exists(path) else {}
    if args.time:
        result["step_seconds"] = time_steps()
        print(result["step_seconds"])
    if args.eval:
        evaluation = evaluate(args.n, args.steps, args.scales, args.models, args.models_dir)
        old = result.get("evaluation", {}).get("models", {})
        evaluation["models"] = {**old, **evaluation["models"]}
        result["evaluation"] = evaluation
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
