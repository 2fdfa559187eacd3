"""The guidance sweep: ``tfddim evaluate RUN_DIR --guidance-sweep`` → ``RUN_DIR/guidance.md`` (+ .csv, .png).

Two guidance kinds, each swept over its scale with DDIM (η = 0, 50 steps), the
requested labels balanced over the classes, every scale from the same x_T:

- **classifier guidance** (guided-diffusion §4): the run's network (conditional
  or not) plus a noise-aware classifier run (``--classifier-run``, a
  ``digits_classifier`` training run); ε̂ = ε − s·√(1−ᾱ)·∇ₓ log p_φ(y | x_t);
- **classifier-free guidance** (Ho & Salimans): a class-conditional run trained
  with label dropout; ε̂ = ε_u + w·(ε_c − ε_u) (w = 0: unconditional, 1: conditional).

Every row is scored with the *evaluation* classifier (not the guidance one):
class accuracy of the samples against the requested labels, FID, sFID (on the
classifier's ``conv2[..., :4]`` map), KID, precision and recall against half A
of the real data, with the noise floor (real half B).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Optional

import numpy as np

from tfddim.pipelines.config import check_at_least

CLASSIFIER_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
FREE_SCALES = (0.0, 1.0, 2.0, 4.0)
DEFAULT_NUM_SAMPLES = 300


@dataclasses.dataclass(frozen=True)
class GuidanceConfig:
    """The options of ``tfddim evaluate RUN_DIR --guidance-sweep``.

    Attributes:
        run_dir: a finished diffusion run (conditional for classifier-free guidance).
        classifier_run: a finished noise-aware classifier run for classifier guidance (None: none).
        classifier_scales: classifier guidance scales s (>= 0).
        free_scales: classifier-free guidance scales w (>= 0).
        num_samples: samples per row; >= 2.
        steps: DDIM steps (in [1, T], checked against the run's schedule).
        seed: x_T, the reference halves and the sampling noise.
        eval_classifier: the evaluation classifier's folder or ``.keras`` file (None: the shipped one).
        batch_size: samples per graph call; >= 1.
        out: the output folder (None: ``run_dir``).
    """

    run_dir: str
    classifier_run: Optional[str] = None
    classifier_scales: tuple = CLASSIFIER_SCALES
    free_scales: tuple = FREE_SCALES
    num_samples: int = DEFAULT_NUM_SAMPLES
    steps: int = 50
    seed: int = 0
    eval_classifier: Optional[str] = None
    batch_size: int = 500
    out: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "classifier_scales", tuple(self.classifier_scales))
        object.__setattr__(self, "free_scales", tuple(self.free_scales))
        for name in ("classifier_scales", "free_scales"):
            if any(s < 0 for s in getattr(self, name)):
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_at_least(self, num_samples=2, steps=1, batch_size=1)

    @property
    def out_dir(self) -> str:
        """Where the sweep goes: ``out``, or the run folder."""
        return self.out or self.run_dir


def _load_runs(cfg: GuidanceConfig) -> tuple:
    """The diffusion run's config, schedule and network, and the guidance classifier (or None); checks they fit."""
    from tfddim.runs import RunDir

    run_dir = RunDir(cfg.run_dir)
    config, schedule = run_dir.read_config(), run_dir.read_schedule()
    network = run_dir.load_network()
    if hasattr(network, "log_prob_fn"):
        raise ValueError(f"{cfg.run_dir} is a classifier run; give a diffusion run (and the classifier as --classifier-run)")
    if cfg.classifier_run is None and getattr(network, "num_classes", None) is None:
        raise ValueError("nothing to sweep: the run is unconditional and no --classifier-run was given")
    if not 1 <= cfg.steps <= schedule.num_timesteps:
        raise ValueError(f"steps must lie in [1, {schedule.num_timesteps}], got {cfg.steps}")
    # a missing classifier model keeps the "not a finished training run" wording
    guide = None if cfg.classifier_run is None else RunDir(cfg.classifier_run).load_classifier(kind="training")
    return config, schedule, network, guide


def run(cfg: GuidanceConfig) -> dict:
    """Sweep the guidance scales; returns ``{"rows", "floor", "report"}``."""
    from tfddim import sampling
    from tfddim.evaluation import features, metrics, study
    from tfddim.pipelines import evaluate
    from tfddim.diffusion.spacing import spaced_timesteps

    run_dir, classifier_run, num_samples, steps, seed, batch_size = (
        cfg.run_dir, cfg.classifier_run, cfg.num_samples, cfg.steps, cfg.seed, cfg.batch_size)
    config, schedule, network, guide = _load_runs(cfg)
    num_classes = getattr(network, "num_classes", None)
    out = cfg.out_dir
    clip = config.get("sampling", {}).get("clip_x0")
    options = {"clip_x0": None if clip is None else tuple(clip),
               "learned_variance": bool(getattr(network, "learned_variance", False)),
               "prediction_type": config.get("diffusion", {}).get("prediction_type", "epsilon")}

    real, real_labels = evaluate.real_data(config["data"], "train")
    perm = np.random.default_rng(seed).permutation(len(real))
    half = min(len(real) // 2, 10000)
    net = features.DigitsFeatureNet(cfg.eval_classifier or evaluate.DEFAULT_CLASSIFIER)
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

    samplers = sampling.SamplerCache()  # one compiled loop per kind of guidance; the scale is a tensor

    def draw(guidance, scale):
        kwargs = dict(options, guidance=guidance, class_conditional=num_classes is not None, cache=samplers)
        chunks = []
        for start in range(0, num_samples, batch_size):
            sl = slice(start, start + batch_size)
            chunks.append(np.asarray(sampling.sample(model_fn, x_T[sl], schedule, timesteps, eta=0.0, seed=seed,
                                                     labels=labels[sl], guidance_scale=scale, **kwargs)))
        return np.concatenate(chunks)

    sweeps = []
    if guide is not None:
        classifier = sampling.ClassifierGuidance(guide.log_prob_fn())
        sweeps += [("classifier", s, classifier) for s in cfg.classifier_scales]
    if num_classes is not None:
        sweeps += [("classifier-free", w, sampling.ClassifierFreeGuidance(null_label=num_classes)) for w in cfg.free_scales]
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
    with open(os.path.join(out, "guidance.csv"), "w", newline="") as f:  # KID as computed: kid_raw, kid_std_raw
        writer = csv.DictWriter(f, fieldnames=list(metrics.raw_kid_columns(rows[0])))
        writer.writeheader()
        writer.writerow(metrics.raw_kid_columns(
            {"guidance": "real B vs A (noise floor)", "scale": "", **{k: floor.get(k, "") for k in rows[0]
                                                                      if k not in ("guidance", "scale")}}))
        writer.writerows(metrics.raw_kid_columns(r) for r in rows)
    plot = _plot(os.path.join(out, "guidance.png"), rows)
    report = _report(run_dir, classifier_run, rows, floor, steps, num_samples, plot, net.spatial_layer)
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


def _report(run_dir, classifier_run, rows, floor, steps, n, plot, spatial_layer: str = "conv2[..., :4]") -> str:
    from tfddim.evaluation.metrics import format_kid

    head = "| guidance | scale | class accuracy | FID | sFID | KID ×10³ | precision | recall | IS |"
    kid = lambda r: format_kid(r["kid"], r["kid_std"]) if "kid" in r else "—"  # noqa: E731
    sfid = lambda r: f"{r['sfid']:.3f}" if "sfid" in r else "—"  # noqa: E731
    lines = [f"# Guidance sweep of `{run_dir}`" + (f" with the classifier `{classifier_run}`" if classifier_run else ""),
             "", f"DDIM (η = 0, {steps} steps), {n} samples per row with labels cycling over the classes, all rows "
             "from the same x_T. Scored with the evaluation classifier (not the guidance one). sFID is the Fréchet "
             f"distance on its spatial features (`{spatial_layer}`), which keep where strokes are. KID ×10³ "
             "is the mean ± std over subsets, \"unresolved\" where |mean| < 2·std; `guidance.csv` keeps it as computed "
             "(`kid_raw`, `kid_std_raw`).", "",
             head, "|---|---|---|---|---|---|---|---|---|",
             f"| real B vs A (noise floor) | — | {floor['class_accuracy']:.3f} | {floor['fid']:.3f} | {sfid(floor)} | "
             f"{kid(floor)} | {floor['precision']:.3f} | {floor['recall']:.3f} | {floor.get('is', float('nan')):.2f} |"]
    lines += [f"| {r['guidance']} | {r['scale']:g} | {r['class_accuracy']:.3f} | {r['fid']:.3f} | {sfid(r)} | {kid(r)} | "
              f"{r['precision']:.3f} | {r['recall']:.3f} | {r.get('is', float('nan')):.2f} |" for r in rows]
    lines += ["", f"![accuracy, precision, recall and FID against the scale]({plot})", ""]
    return "\n".join(lines)
