"""Evaluate a training run: ``tfddim evaluate runs/digits`` → ``runs/digits/report.md`` with tables and figures.

1. Reference: the run's training split, shuffled with ``seed`` and cut into two
   disjoint halves A and B. Samples are scored against A; B against A is the
   noise floor printed next to every number.
2. The study (:mod:`tfddim.evaluation.study`): S × η grid (+ strided DDPM for
   learned-variance networks), every cell from the same x_T, scored with FID,
   sFID (on the network's spatial map; not for ``raw``), KID, precision/recall
   (k = 5) and the Inception-Score analogue on the chosen feature network.
   Writes ``study.csv``, ``study.md`` and ``study_fid.png``.
3. Figures: consistency, interpolation, reconstruction (with its error table)
   and x̂₀ trajectories (image data only).
4. NLL in bits/dim on the test split (fixed β̃ and β variances, or the learned one).

Feature networks: ``digits`` (the classifier in ``saved_models/digits_classifier``,
``tfddim train-classifier``; for ``mnist`` data the MNIST classifier of the
data's size, ``saved_models/mnist_classifier`` at 28x28 and
``saved_models/mnist14_classifier`` at 14x14, unless ``classifier`` names
another), ``inception`` (InceptionV3 pool features from ``--inception-weights``),
``raw`` (the data itself, for 2-D data); ``auto`` picks by data source (digits
and mnist → ``digits``). Reference statistics are cached in ``<runs>/reference/``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

from tfddim.evaluation.study import DEFAULT_ETAS, DEFAULT_STEPS
from tfddim.sampling.options import parse_eta
from tfddim.pipelines.config import check_at_least

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CLASSIFIER = os.path.join(REPO_ROOT, "saved_models", "digits_classifier")
METRICS = ("fid", "sfid", "kid", "precision", "recall", "is")
TITLES = {
    "fid": "FID (lower is better; 0 for identical feature statistics)",
    "sfid": "sFID (Fréchet distance on the spatial features, which keep where things are; lower is better)",
    "kid": "KID ×10³ (unbiased MMD², cubic kernel; mean ± std over subsets; lower is better; \"unresolved\" where "
           "|mean| < 2·std, i.e. not told apart from 0)",
    "precision": "Precision (k = 5; higher is better)",
    "recall": "Recall (k = 5; higher is better)",
    "is": "Inception-Score analogue (classifier logits)",
}
FEATURES = ("auto", "digits", "inception", "raw")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The options of ``tfddim evaluate RUN_DIR`` (the study, figures and NLL of a finished run).

    Attributes:
        run_dir: a finished training run folder, e.g. ``runs/digits``.
        num_samples: samples per cell (None: the size of a reference half, at most 10000); >= 2.
        steps: the step counts S of the grid (each in [1, T], checked against the run's schedule).
        etas: DDIM etas, numbers in [0, 1] or ``"sigma_hat"``.
        features: the feature network: ``auto``, ``digits``, ``inception`` or ``raw``.
        inception_weights: the InceptionV3 no-top weights file for ``features="inception"``.
        classifier: the digits classifier folder for ``features="digits"`` (left at the default, ``mnist`` data
            use :func:`mnist_classifier` of their size instead).
        batch_size: samples per graph call; >= 1.
        seed: x_T, the reference halves and the sampling noise.
        nll_images: test images of the NLL bound (0: skip); >= 0.
        figures: draw the consistency, interpolation, reconstruction and trajectory figures.
        out: the output folder (None: ``run_dir``).
    """

    run_dir: str
    num_samples: Optional[int] = None
    steps: tuple = DEFAULT_STEPS
    etas: tuple = DEFAULT_ETAS
    features: str = "auto"
    inception_weights: Optional[str] = None
    classifier: str = DEFAULT_CLASSIFIER
    batch_size: int = 500
    seed: int = 0
    nll_images: int = 300
    figures: bool = True
    out: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        check_at_least(self, num_samples=2, batch_size=1, nll_images=0)
        if not self.steps:
            raise ValueError("steps: give at least one step count")
        if not self.etas:
            raise ValueError("etas: give at least one eta")
        try:  # numbers in [0, 1] or σ̂, parsed once into floats and sampling.SIGMA_HAT
            object.__setattr__(self, "etas", tuple(parse_eta(e) for e in self.etas))
        except ValueError as e:
            raise ValueError(f"etas: {e}") from None
        if self.features not in FEATURES:
            raise ValueError(f"features must be auto, digits, inception or raw, got {self.features!r}")

    @property
    def out_dir(self) -> str:
        """Where the report goes: ``out``, or the run folder."""
        return self.out or self.run_dir


def real_data(data_section: dict, split: str) -> tuple:
    from tfddim.data import DataConfig, make_dataset

    cfg = DataConfig(**dict(data_section, batch_size=512))
    xs, ys = [], []
    for x, y in make_dataset(cfg, split, training=False):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def mnist_classifier(image_size: Optional[int]) -> str:
    """The shipped MNIST evaluation classifier folder for ``image_size`` x ``image_size`` data (None: 28):
    ``saved_models/mnist_classifier`` (28), ``saved_models/mnist14_classifier`` (14), ``mnist<S>_classifier``."""
    from tfddim.pipelines.train_classifier import default_out_dir

    return os.path.join(REPO_ROOT, default_out_dir("mnist", image_size))


def _feature_net(kind: str, source: str, data_rank: int, classifier: str, inception_weights: Optional[str],
                 image_size: Optional[int] = None):
    """(the feature network, its kind); ``image_size``: the side of the (square) data images, for MNIST."""
    from tfddim.evaluation import features, study

    if kind == "auto":
        kind = "raw" if data_rank == 1 else ("digits" if source in ("digits", "mnist") else "inception")
    if kind == "raw":
        return study.FlatFeatures(), kind
    if kind == "digits":
        if source == "mnist" and classifier == DEFAULT_CLASSIFIER:  # the 8x8 default cannot score MNIST
            classifier = mnist_classifier(image_size)
            if not os.path.isfile(os.path.join(classifier, "model.keras")):
                size = 28 if image_size is None else int(image_size)
                raise ValueError(
                    f"no MNIST evaluation classifier for {size}x{size} images at {classifier}: train it with "
                    f"`tfddim train-classifier --source mnist --image-size {size}` (from the repository root), "
                    "or pass another folder as the classifier, or features inception/raw")
        net = features.DigitsFeatureNet(os.path.join(classifier, "model.keras"))
        if image_size is not None and net.image_size != image_size:
            raise ValueError(f"the classifier in {classifier} takes {net.image_size}x{net.image_size} images; "
                             f"the data are {image_size}x{image_size}")
        return net, kind
    if kind == "inception":
        return features.InceptionFeatureNet(inception_weights), kind
    raise ValueError(f"features must be auto, digits, inception or raw, got {kind!r}")


def write_png(path: str, images: np.ndarray, columns: int) -> str:
    import tensorflow as tf

    from tfddim.pipelines.callbacks import image_grid

    scale = max(1, 32 // images.shape[1])
    tf.io.write_file(path, tf.image.encode_png(image_grid(images, columns=columns, scale=scale)))
    return os.path.basename(path)


FIGURE_WIDTH_IN, FIGURE_DPI = 7.5, 110  # ≈ 825 px before the tight crop; the image area alone is > 600 px


def write_labelled_grid(path: str, images: np.ndarray, row_labels: Sequence[str], title: str,
                        col_labels: Optional[Sequence[str]] = None, xlabel: Optional[str] = None) -> str:
    """A PNG of ``images`` ``[R, C, H, W, ch]`` in [-1, 1] as a grid with a label per row (and per column),
    a title and an x-axis label: one matplotlib ``imshow`` of the tiled grid, about 700–800 px wide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfddim.pipelines.callbacks import image_grid

    images = np.asarray(images)
    rows, cols, h, w = images.shape[:4]
    if len(row_labels) != rows or (col_labels is not None and len(col_labels) != cols):
        raise ValueError(f"{len(row_labels)} row labels / {None if col_labels is None else len(col_labels)} column "
                         f"labels for a {rows} x {cols} grid")
    grid = image_grid(images.reshape(rows * cols, h, w, -1), columns=cols)  # uint8, 1-px gray gaps
    gray = grid.shape[-1] == 1
    image_width = FIGURE_WIDTH_IN * 0.78
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN, image_width * grid.shape[0] / grid.shape[1] + 1.0))
    ax.imshow(grid[..., 0] if gray else grid, cmap="gray" if gray else None, vmin=0, vmax=255,
              interpolation="nearest")
    centre = lambda i, size: 1 + i * (size + 1) + (size - 1) / 2  # noqa: E731
    ax.set_yticks([centre(i, h) for i in range(rows)])
    ax.set_yticklabels(row_labels, fontsize=9)
    if col_labels is None:
        ax.set_xticks([])
    else:
        ax.set_xticks([centre(j, w) for j in range(cols)])
        ax.set_xticklabels(col_labels, fontsize=8)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return os.path.basename(path)


def _plot(path: str, rows: list, steps: Sequence[int], floor: float, metric: str = "fid") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label in dict.fromkeys(r["sampler"] for r in rows):
        pts = sorted((r["steps"], r[metric]) for r in rows if r["sampler"] == label)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.axhline(floor, color="gray", linestyle="--", label="noise floor (real B vs A)")
    ax.set_xscale("log")
    ax.set_xticks(list(steps))
    ax.set_xticklabels([str(s) for s in steps])
    ax.set_xlabel("sampling steps S")
    ax.set_ylabel(metric.upper())
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.basename(path)


def _table(rows: list, steps: Sequence[int], metric: str, floor: dict, fmt: str = "{:.3f}") -> str:
    """One row per sampler, one column per S. KID is shown ×10³ with its spread over subsets
    (:func:`tfddim.evaluation.metrics.format_kid`: "unresolved" when |mean| < 2·std)."""
    from tfddim.evaluation.metrics import format_kid

    def cell(values: dict) -> str:
        if metric == "kid":
            return format_kid(values["kid"], values["kid_std"])
        text = fmt.format(values[metric])
        return f"{text} ± {fmt.format(values[metric + '_std'])}" if metric + "_std" in values else text

    head = "| sampler | " + " | ".join(f"S={s}" for s in steps) + " |"
    lines = [head, "|---" * (len(steps) + 1) + "|"]
    lines.append("| real B vs A (noise floor) | " + " | ".join(cell(floor) for _ in steps) + " |")
    for label in dict.fromkeys(r["sampler"] for r in rows):
        by_s = {r["steps"]: cell(r) for r in rows if r["sampler"] == label}
        lines.append(f"| {label} | " + " | ".join(by_s.get(s, "—") for s in steps) + " |")
    return "\n".join(lines)


def run(cfg: EvaluateConfig) -> dict:
    """Run the evaluation of ``cfg.run_dir`` and write the report.

    Returns ``{"rows", "floor", "nll", "report", "reconstruction", "reconstruction_by_steps"}`` (the last
    ``{S: errors}``; KID in ``rows``/``floor`` is raw, the files name it ``kid_raw``).
    """
    from tfddim.runs import RunDir

    run_dir = RunDir(cfg.run_dir)
    config, metadata, schedule = run_dir.read_config(), run_dir.read_metadata(), run_dir.read_schedule()
    network = run_dir.load_network()
    learned = bool(getattr(network, "learned_variance", False))
    if getattr(network, "num_classes", None) is not None:
        raise ValueError("this run is class-conditional; the study samples unconditional models "
                         "(guided sampling has its own sweep)")
    from tfddim import sampling
    from tfddim.evaluation import metrics, study

    cells = study.grid_cells(cfg.steps, cfg.etas, learned, schedule.num_timesteps)
    out = cfg.out_dir
    os.makedirs(out, exist_ok=True)
    model_fn = lambda x, t: network((x, t), training=False)  # noqa: E731
    clip = config.get("sampling", {}).get("clip_x0")
    prediction = config.get("diffusion", {}).get("prediction_type", "epsilon")  # runs before the key: epsilon
    options = {"learned_variance": learned, "clip_x0": None if clip is None else tuple(clip), "prediction_type": prediction}

    data_section = config["data"]
    real, _ = real_data(data_section, "train")
    ref = _reference(cfg, real, data_section, len(cells))
    x_T = np.random.default_rng(cfg.seed).standard_normal((ref["n"], *real.shape[1:])).astype(np.float32)
    samplers = sampling.SamplerCache()  # every cell and figure reuses its compiled loop (S and η are tensors)
    rows = _grid(cfg, cells, model_fn, schedule, x_T, options, ref, samplers)
    floor = {k: float(v) for k, v in ref["reference"].floor.items()}
    tables, files = _write_study(cfg, out, rows, floor)
    if cfg.figures and real.ndim == 4:
        fig_steps, recon_errors, figure_files = _figures(cfg, out, model_fn, schedule, x_T, options, real, data_section,
                                                               samplers)
        files.update(figure_files)
    else:
        fig_steps, recon_errors = [], []
    nll = _nll(cfg, _as_eps(model_fn, schedule, prediction, learned), schedule, learned, real.ndim, data_section)

    report = _report(cfg.run_dir, metadata, ref["kind"], ref["net"], ref["half"], ref["n"], cfg.seed, tables, files,
                     fig_steps, recon_errors, nll, rows, min(50, schedule.num_timesteps))
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write(report)
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump({"rows": [metrics.raw_kid_columns(r) for r in rows], "floor": metrics.raw_kid_columns(floor), "nll": nll, "reconstruction": dict(zip(map(str, fig_steps), recon_errors)),
                   "features": ref["kind"], "feature_identity": ref["net"].identity,
                   "spatial_features": getattr(ref["net"], "spatial_layer", None), "reference_half": ref["half"],
                   "num_samples": ref["n"], "seed": cfg.seed, "written": time.strftime("%Y-%m-%d %H:%M:%S")}, f, indent=2)
    print(f"tfddim evaluate: report at {path}")
    return {"rows": rows, "floor": floor, "nll": nll, "report": path, "reconstruction": recon_errors,
            "reconstruction_by_steps": dict(zip(fig_steps, recon_errors))}


def _reference(cfg: EvaluateConfig, real: np.ndarray, data_section: dict, num_cells: int) -> dict:
    """The real training data shuffled with ``seed`` and cut into halves A (reference) and B (noise floor).

    Returns ``{"reference", "net", "kind", "half", "n", "kid_subset"}``; A's feature statistics (and its
    spatial ones, for sFID) are cached in ``<runs>/reference/``.
    """
    from tfddim.evaluation import features as feature_nets
    from tfddim.evaluation import study

    perm = np.random.default_rng(cfg.seed).permutation(len(real))
    half = min(len(real) // 2, 10000)
    n = cfg.num_samples or half
    # the floor compares as many real images as each cell has samples (FID is biased by the count)
    half_a, half_b = real[perm[:half]], real[perm[half:half + min(n, half)]]
    image_size = real.shape[1] if real.ndim == 4 else None
    net, kind = _feature_net(cfg.features, data_section.get("source", ""), real.ndim - 1, cfg.classifier,
                             cfg.inception_weights, image_size)
    cache_dir = os.path.join(os.path.dirname(os.path.abspath(cfg.run_dir)), "reference")
    os.makedirs(cache_dir, exist_ok=True)
    # the size only in the name of a resized source (mnist 28 and 14 would otherwise take turns overwriting one file)
    size_tag = f"_{image_size}px" if data_section.get("image_size") is not None and image_size is not None else ""
    cache = os.path.join(cache_dir, f"{data_section.get('source', 'data').replace(':', '_').replace('/', '_')}"
                                    f"{size_tag}_train_half{half}_seed{cfg.seed}_{kind}.npz")
    stats = feature_nets.reference_statistics(net, half_a, cache)
    kid_subset = min(1000, n, half)
    print(f"tfddim evaluate: reference {half} + {min(n, half)} real images ({kind} features); {n} samples per cell, "
          f"{num_cells} cells", flush=True)
    reference = study.Reference.build(net, half_a, half_b, stats=stats, kid_subset=kid_subset)
    return {"reference": reference, "net": net, "kind": kind, "half": half, "n": n, "kid_subset": kid_subset}


def _grid(cfg: EvaluateConfig, cells: list, model_fn, schedule, x_T: np.ndarray, options: dict, ref: dict,
          samplers) -> list:
    """Sample and score every cell from the shared ``x_T``: one row per cell."""
    import keras

    from tfddim.evaluation import study

    rows = []
    for i, cell in enumerate(cells):
        bar = keras.utils.Progbar(len(x_T), unit_name="sample")
        print(f"[{i + 1}/{len(cells)}] {cell.row}, S={cell.steps}", flush=True)
        samples, seconds = study.timed(study.sample_cell, model_fn, schedule, cell, x_T, options, cfg.batch_size,
                                       cfg.seed, progress=bar.update, cache=samplers)
        scores = study.score(ref["net"], samples, ref["reference"], kid_subset=ref["kid_subset"])
        rows.append({"sampler": cell.row, "steps": cell.steps, "nfe": cell.steps, "seconds": round(seconds, 1),
                     **{k: float(v) for k, v in scores.items()}})
    return rows


def _write_study(cfg: EvaluateConfig, out: str, rows: list, floor: dict) -> tuple:
    """``study.csv``, ``study.md`` and ``study_fid.png``; returns (the markdown tables by metric, ``{"plot": file}``).

    The CSV holds KID as computed (MMD², columns ``kid_raw``/``kid_std_raw``); the tables show it ×10³.
    """
    from tfddim.evaluation.metrics import raw_kid_columns

    with open(os.path.join(out, "study.csv"), "w", newline="") as f:
        keys = ["sampler", "steps", "nfe", "seconds", *[k for k in rows[0] if k not in ("sampler", "steps", "nfe", "seconds")]]
        writer = csv.DictWriter(f, fieldnames=list(raw_kid_columns(dict.fromkeys(keys))))
        writer.writeheader()
        writer.writerow(raw_kid_columns({"sampler": "real B vs A (noise floor)", "steps": "", "nfe": 0, "seconds": 0,
                                         **floor}))
        writer.writerows(raw_kid_columns(r) for r in rows)
    tables = {m: _table(rows, cfg.steps, m, floor) for m in METRICS if m in floor}
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write("\n\n".join(f"{TITLES[m]}\n\n{t}" for m, t in tables.items()) + "\n")
    return tables, {"plot": _plot(os.path.join(out, "study_fid.png"), rows, cfg.steps, floor["fid"])}


def _figures(cfg: EvaluateConfig, out: str, model_fn, schedule, x_T: np.ndarray, options: dict, real: np.ndarray,
             data_section: dict, samplers) -> tuple:
    """Consistency, interpolation, reconstruction and trajectories (DDIM §5); returns (S of the figures,
    the reconstruction errors, ``{figure: file}``)."""
    from tfddim.diffusion.spacing import spaced_timesteps
    from tfddim.evaluation import study

    shape = real.shape[1:]
    fig_steps = [s for s in cfg.steps if s <= 100] or list(cfg.steps)[:1]
    k, interp_steps = 8, min(50, schedule.num_timesteps)
    files = {}
    consistency = study.consistency(model_fn, schedule, x_T[:k], fig_steps, options, samplers)  # [len(S), k, ...]
    files["consistency"] = write_labelled_grid(
        os.path.join(out, "consistency.png"), consistency, [f"S = {s}" for s in fig_steps],
        "Consistency: the same x_T decoded by DDIM (η = 0) at each S", xlabel=f"{k} samples (one x_T per column)")
    rng = np.random.default_rng(cfg.seed + 1)
    pairs = rng.standard_normal((2, 4, *shape)).astype(np.float32)
    num_interp = 9
    interp = study.interpolation(model_fn, schedule, pairs[0], pairs[1], num_interp, interp_steps, options, samplers)
    files["interpolation"] = write_labelled_grid(
        os.path.join(out, "interpolation.png"), interp, [f"pair {i + 1}" for i in range(len(interp))],
        f"Interpolation: DDIM (η = 0, S = {interp_steps}) decodings of slerp(x_T^a, x_T^b, α)",
        col_labels=[f"{a:.3g}" for a in np.linspace(0.0, 1.0, num_interp)], xlabel="α (0: x_T^a, 1: x_T^b)")
    test_x, _ = real_data(data_section, "test")
    recs, recon_errors = study.reconstruction(model_fn, schedule, test_x[:k], fig_steps, options, samplers)
    files["reconstruction"] = write_labelled_grid(
        os.path.join(out, "reconstruction.png"), np.concatenate([test_x[:k][None], recs]),
        ["real"] + [f"S = {s} (RMSE {e['rmse']:.3g})" for s, e in zip(fig_steps, recon_errors)],
        "Real / reconstructed: held-out images encoded to x_T and decoded back (DDIM η = 0)",
        xlabel=f"{k} held-out images")
    traj_steps = min(10, schedule.num_timesteps)
    traj = study.trajectories(model_fn, schedule, x_T[:6], traj_steps, options, samplers)  # [S, N, ...]
    taus = spaced_timesteps(schedule.num_timesteps, traj_steps)
    files["trajectories"] = write_labelled_grid(
        os.path.join(out, "trajectories.png"), np.swapaxes(traj, 0, 1), [f"sample {i + 1}" for i in range(traj.shape[1])],
        rf"$\hat{{x}}_0$ at step i of a {traj_steps}-step DDIM (η = 0) run",
        col_labels=[f"{i + 1}\nt={t}" for i, t in enumerate(taus)], xlabel=r"step i (timestep t): the $\hat{x}_0$ it predicts")
    return fig_steps, recon_errors, files


def _as_eps(model_fn, schedule, prediction_type: str, learned: bool):
    """``model_fn`` with its prediction converted to ε (the NLL code reads ε; a learned variance passes through)."""
    if prediction_type == "epsilon":
        return model_fn
    import tensorflow as tf

    from tfddim.diffusion import steps

    table = tf.constant(schedule.alphas_cumprod, tf.float32)

    def fn(x, t):
        out = model_fn(x, t)
        pred, rest = tf.split(out, 2, axis=-1) if learned else (out, None)
        ab = steps.select_timestep(table, t, x)
        eps = steps.eps_from_x0(x, pred, ab) if prediction_type == "sample" else steps.eps_from_v(x, pred, ab)
        return eps if rest is None else tf.concat([eps, rest], axis=-1)

    return fn


def _nll(cfg: EvaluateConfig, model_fn, schedule, learned: bool, data_ndim: int, data_section: dict) -> dict:
    """The NLL bound in bits/dim on ``nll_images`` test images, per reverse variance (``{}`` for 0 images)."""
    from tfddim.evaluation import nll as nll_lib

    nll = {}
    if cfg.nll_images == 0:
        return nll
    test_x, _ = real_data(data_section, "test")
    test_x = test_x[:cfg.nll_images]
    decoder = "discretized" if data_ndim == 4 else "gaussian"
    for variance in (["learned_range"] if learned else ["fixed_small", "fixed_large"]):
        print(f"NLL ({variance}) on {len(test_x)} test images, {schedule.num_timesteps} passes each", flush=True)
        res = nll_lib.nll_bpd(model_fn, schedule, test_x, variance, learned_variance=learned, decoder=decoder,
                              batch_size=cfg.batch_size, seed=cfg.seed)
        nll[variance] = {k: res[k] for k in ("bpd", "bpd_sem", "prior_bpd", "decoder_bpd")}
    return nll


def _shown_path(path: str) -> str:
    """``path`` relative to the repository when inside it (``saved_models/...``), else as given."""
    rel = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    return path if rel.startswith("..") else rel


def _report(run_dir, metadata, kind, net, half, n, seed, tables, files, fig_steps, recon_errors, nll, rows,
            interp_steps) -> str:
    feature_text = {
        "digits": "the penultimate layer of the digits classifier "
                  f"(`{_shown_path(os.path.dirname(getattr(net, 'path', DEFAULT_CLASSIFIER)))}`)",
        "inception": "InceptionV3 pool features (2048-d, Keras weights; comparable within tfddim only)",
        "raw": "the data themselves (no feature network)",
    }[kind]
    lines = [
        f"# Evaluation of `{run_dir}`",
        "",
        f"Model: {metadata.get('parameters', '?')} parameters, {metadata.get('steps', '?')} training steps "
        f"({metadata.get('name', '')}). Features: {feature_text}; identity `{net.identity}`.",
        "",
        f"Every cell draws {n} samples from the same x_T (seed {seed}) and is scored against half A "
        f"({half} real training images); the **noise floor** row scores {min(n, half)} other real images "
        "(from half B) against A the same way: differences smaller than the gap between the floor and 0 are not resolved.",
        "",
        "## Sample quality against the number of steps and η (DDIM Table 1)",
        "",
        f"{TITLES['fid']}:",
        "",
        tables["fid"],
        "",
        f"![FID against S]({files['plot']})",
        "",
    ]
    if "sfid" in tables:
        lines += [f"{TITLES['sfid']}; features: `{net.spatial_layer}`, {int(np.prod(net.spatial_shape))}-d "
                  f"({' × '.join(map(str, net.spatial_shape))} flattened):", "", tables["sfid"], ""]
    for m in ("kid", "precision", "recall", "is"):
        if m in tables:
            lines += [f"{TITLES[m]}:", "", tables[m], ""]
    lines += ["`study.csv` and `evaluation.json` keep KID as computed (MMD², not ×10³): columns `kid_raw`, "
              "`kid_std_raw`.", ""]
    fastest = min(rows, key=lambda r: r["fid"])
    lines += [f"Lowest FID: {fastest['sampler']} at S = {fastest['steps']} ({fastest['fid']:.3f}). "
              f"Seconds per cell are in `study.csv`.", ""]
    if fig_steps:
        lines += [
            "## Figures",
            "",
            f"**Consistency** (DDIM §5.2): the same 8 x_T decoded with η = 0 at S = {', '.join(map(str, fig_steps))} "
            "(one row per S). DDIM's deterministic map keeps the high-level content as S changes.",
            "",
            f"![consistency]({files['consistency']})",
            "",
            f"**Interpolation** (DDIM §5.3): each row decodes slerp(x_T^a, x_T^b) at 9 points, S = {interp_steps}.",
            "",
            f"![interpolation]({files['interpolation']})",
            "",
            "**Reconstruction** (DDIM §5.4): held-out images (top row, \"real\") encoded to x_T and decoded back, "
            "one row per S.",
            "",
            f"![reconstruction]({files['reconstruction']})",
            "",
            "| S | RMSE | max abs error | PSNR (dB, range 2) |",
            "|---|---|---|---|",
            *[f"| {s} | {e['rmse']:.4f} | {e['max_abs']:.4f} | {e['psnr']:.1f} |" for s, e in zip(fig_steps, recon_errors)],
            "",
            "**x̂₀ trajectories**: the x̂₀ each step of a 10-step DDIM run predicts (left to right), 6 samples.",
            "",
            f"![trajectories]({files['trajectories']})",
            "",
        ]
    if nll:
        lines += ["## Likelihood", "", "Bits/dim from the variational bound on held-out images (T network passes per "
                  "image; standard error over images):", "", "| reverse variance | NLL bound (bits/dim) | L_T | L_0 |",
                  "|---|---|---|---|"]
        lines += [f"| {v} | {r['bpd']:.3f} ± {r['bpd_sem']:.3f} | {r['prior_bpd']:.4f} | {r['decoder_bpd']:.3f} |"
                  for v, r in nll.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
