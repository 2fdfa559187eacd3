"""The guidance sweep: ``tfddim evaluate RUN_DIR --guidance-sweep`` → ``RUN_DIR/guidance.md`` (+ .csv, .png).

Two guidance kinds, each swept over its scale with DDIM (η = 0, 50 steps), the
requested labels balanced over the classes, every scale from the same x_T:

- **classifier guidance** (guided-diffusion §4): the run's network (conditional
  or not) plus a noise-aware classifier run (``--classifier-run``, a
  ``digits_classifier`` training run); ε̂ = ε − s·√(1−ᾱ)·∇ₓ log p_φ(y | x_t);
- **classifier-free guidance** (Ho & Salimans): a class-conditional run trained
  with label dropout; ε̂ = ε_u + w·(ε_c − ε_u) (w = 0: unconditional, 1: conditional).

Every row is scored with the *evaluation* classifier (not the guidance one):
class accuracy of the samples against the requested labels, FID, precision and
recall against half A of the real data, with the noise floor (real half B).
"""

from __future__ import annotations

import csv
import os
from typing import Optional, Sequence

import numpy as np

CLASSIFIER_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
FREE_SCALES = (0.0, 1.0, 2.0, 4.0)


def _load(run_dir: str):
    import keras

    import tfddim.models  # noqa: F401  (registers the networks)

    path = os.path.join(run_dir, "model.keras")
    if not os.path.exists(path):
        raise ValueError(f"{run_dir} is not a finished training run: model.keras is missing")
    return keras.models.load_model(path)


def run(run_dir: str, classifier_run: Optional[str] = None, classifier_scales: Sequence[float] = CLASSIFIER_SCALES,
        free_scales: Sequence[float] = FREE_SCALES, num_samples: int = 300, steps: int = 50, seed: int = 0,
        eval_classifier: Optional[str] = None, batch_size: int = 500, out: Optional[str] = None) -> dict:
    """Sweep the guidance scales; returns ``{"rows", "floor", "report"}``."""
    from tfddim import sampling
    from tfddim.evaluation import features, metrics, study
    from tfddim.pipelines import evaluate
    from tfddim.diffusion.schedules import Schedule
    from tfddim.diffusion.spacing import spaced_timesteps

    config = evaluate.read_run_file(run_dir, "config.json")
    schedule = Schedule.from_config(evaluate.read_run_file(run_dir, "schedule.json"))
    network = _load(run_dir)
    if hasattr(network, "log_prob_fn"):
        raise ValueError(f"{run_dir} is a classifier run; give a diffusion run (and the classifier as --classifier-run)")
    num_classes = getattr(network, "num_classes", None)
    if classifier_run is None and num_classes is None:
        raise ValueError("nothing to sweep: the run is unconditional and no --classifier-run was given")
    if not 1 <= steps <= schedule.num_timesteps:
        raise ValueError(f"steps must lie in [1, {schedule.num_timesteps}], got {steps}")
    guide = None if classifier_run is None else _load(classifier_run)
    if guide is not None and not hasattr(guide, "log_prob_fn"):
        raise ValueError(f"{classifier_run} does not hold a NoisyClassifier")
    out = out or run_dir
    clip = config.get("sampling", {}).get("clip_x0")
    options = {"clip_x0": None if clip is None else tuple(clip),
               "learned_variance": bool(getattr(network, "learned_variance", False))}

    real, real_labels = evaluate.real_data(config["data"], "train")
    perm = np.random.default_rng(seed).permutation(len(real))
    half = min(len(real) // 2, 10000)
    net = features.DigitsFeatureNet(eval_classifier or evaluate.DEFAULT_CLASSIFIER)
    reference = study.Reference.build(net, real[perm[:half]], real[perm[half:half + min(num_samples, half)]],
                                      kid_subset=min(1000, num_samples, half))
    classes = int(num_classes or guide.num_classes)
    labels = np.arange(num_samples, dtype=np.int32) % classes
    x_T = np.random.default_rng(seed).standard_normal((num_samples, *real.shape[1:])).astype(np.float32)
    timesteps = spaced_timesteps(schedule.num_timesteps, steps)
    if num_classes is None:
        model_fn = lambda x, t: network((x, t), training=False)  # noqa: E731
    else:
        model_fn = lambda x, t, y: network((x, t, y), training=False)  # noqa: E731

    def draw(guidance, scale):
        kwargs = dict(options, guidance=guidance, class_conditional=num_classes is not None)
        chunks = []
        for start in range(0, num_samples, batch_size):
            sl = slice(start, start + batch_size)
            chunks.append(np.asarray(sampling.sample(model_fn, x_T[sl], schedule, timesteps, eta=0.0, seed=seed,
                                                     labels=labels[sl], guidance_scale=scale, **kwargs)))
        return np.concatenate(chunks)

    sweeps = []
    if guide is not None:
        sweeps += [("classifier", s, sampling.ClassifierGuidance(guide.log_prob_fn())) for s in classifier_scales]
    if num_classes is not None:
        sweeps += [("classifier-free", w, sampling.ClassifierFreeGuidance(null_label=num_classes)) for w in free_scales]
    rows = []
    for i, (kind, scale, guidance) in enumerate(sweeps):
        print(f"[{i + 1}/{len(sweeps)}] {kind} guidance, scale {scale:g}", flush=True)
        samples = draw(guidance, scale)
        scores = study.score(net, samples, reference, labels=labels, kid_subset=min(1000, num_samples, half))
        rows.append({"guidance": kind, "scale": float(scale), **{k: float(v) for k, v in scores.items()}})
        evaluate.write_png(os.path.join(out, f"guidance_{kind}_{scale:g}.png"), samples[:40], 10)
    floor = {k: float(v) for k, v in reference.floor.items()}
    floor_idx = perm[half:half + min(num_samples, half)]  # the real images of the noise floor
    floor["class_accuracy"] = metrics.class_accuracy(net.logits(real[floor_idx]), real_labels[floor_idx])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "guidance.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow({"guidance": "real B vs A (noise floor)", "scale": "", **{k: floor.get(k, "") for k in rows[0]
                                                                                  if k not in ("guidance", "scale")}})
        writer.writerows(rows)
    plot = _plot(os.path.join(out, "guidance.png"), rows)
    report = _report(run_dir, classifier_run, rows, floor, steps, num_samples, plot)
    path = os.path.join(out, "guidance.md")
    with open(path, "w") as f:
        f.write(report)
    print(f"tfddim evaluate: guidance sweep at {path}")
    return {"rows": rows, "floor": floor, "report": path}


def _plot(path: str, rows: list) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for kind in dict.fromkeys(r["guidance"] for r in rows):
        pts = [r for r in rows if r["guidance"] == kind]
        scales = [r["scale"] for r in pts]
        axes[0].plot(scales, [r["class_accuracy"] for r in pts], marker="o", label=f"{kind}: accuracy")
        axes[0].plot(scales, [r["precision"] for r in pts], marker="s", linestyle="--", label=f"{kind}: precision")
        axes[0].plot(scales, [r["recall"] for r in pts], marker="^", linestyle=":", label=f"{kind}: recall")
        axes[1].plot(scales, [r["fid"] for r in pts], marker="o", label=kind)
    axes[0].set_xlabel("guidance scale")
    axes[0].legend(fontsize=6)
    axes[1].set_xlabel("guidance scale")
    axes[1].set_ylabel("FID")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.basename(path)


def _report(run_dir, classifier_run, rows, floor, steps, n, plot) -> str:
    head = "| guidance | scale | class accuracy | FID | precision | recall | IS |"
    lines = [f"# Guidance sweep of `{run_dir}`" + (f" with the classifier `{classifier_run}`" if classifier_run else ""),
             "", f"DDIM (η = 0, {steps} steps), {n} samples per row with labels cycling over the classes, all rows "
             "from the same x_T. Scored with the evaluation classifier (not the guidance one).", "",
             head, "|---|---|---|---|---|---|---|",
             f"| real B vs A (noise floor) | — | {floor['class_accuracy']:.3f} | {floor['fid']:.3f} | "
             f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor.get('is', float('nan')):.2f} |"]
    lines += [f"| {r['guidance']} | {r['scale']:g} | {r['class_accuracy']:.3f} | {r['fid']:.3f} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r.get('is', float('nan')):.2f} |" for r in rows]
    lines += ["", f"![accuracy, precision, recall and FID against the scale]({plot})", ""]
    return "\n".join(lines)
