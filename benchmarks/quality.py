"""Quality per network evaluation: a distribution distance against the number of steps (NFE = S), per sampler.

Two models, one protocol (``pipelines/demo.py``'s): every cell of a model
starts from the same x_T, stochastic cells draw their noise from the same seed,
and each distance sits next to a noise floor (the same distance between two
real/exact sample sets of the same size).

- **Analytic mixture** (``tfddim.data.mixture.ring(8, 4.0, 0.5)``, linear schedule,
  T = 1000): the model is the exact ε, so the distance measures the sampler's
  own error. Sliced W2 (64 projections) of 10,000 samples against 100,000
  exact ones, for DDIM η = 0, DDIM η = 1 (= DDPM with β̃), DDPM with σ̂
  (``fixed_large``) and DPM-Solver++(2M), at S ∈ {5, 10, 20, 25, 50, 100, 1000}
  and three spacings (uniform, quad, trailing).
- **Shipped digits model** (``saved_models/digits/1``), rebuilt in-process from
  the SavedModel's weights so every sampler runs on one network (checked against
  the SavedModel's own DDIM and DPM-Solver++ signatures); FID on the digits
  classifier's features of N samples against the real digits (train + held
  out), with the export's spacing and clipping; N = 256 (the rest of the 1,797
  real digits is the reference).

The DDIM claim checked: 20–50 steps get close to S = 1000. The DPM-Solver++
claim: at S = 10 it beats DDIM at S = 10 and matches DDIM at S ≥ 25.
``docs/benchmarks/quality_nfe.png`` draws the curves.

Why this file passes 400 lines: every benchmark module is one unit of ``make bench`` that owns its
measurement, its figure and its README table (``benchmarks/run.py`` calls ``run()`` and ``table()``
of each); here two models and two claims make each part long. The sections are in that order.
"""

from __future__ import annotations

import os
import time
import traceback

import numpy as np

from benchmarks import common

ROOT = os.path.dirname(common.HERE)
FIGURE = os.path.join("docs", "benchmarks", "quality_nfe.png")  # relative to the repository root (the README links it)

SEED = 0

# (key, label, sampling.sample options)
METHODS = (
    ("ddim_eta0", "DDIM η=0", {"method": "ddim", "eta": 0.0}),
    ("ddim_eta1", "DDIM η=1 (= DDPM β̃)", {"method": "ddim", "eta": 1.0}),
    ("ddpm_sigma_hat", "DDPM σ̂ (fixed_large)", {"method": "ddpm", "variance": "fixed_large"}),
    ("dpmpp_2m", "DPM-Solver++(2M)", {"method": "dpmpp_2m"}),
)
LABELS = {key: label for key, label, _ in METHODS}

MIX = {"components": 8, "radius": 4.0, "std": 0.5, "schedule": "linear", "num_timesteps": 1000,
       "num_samples": 10000, "reference_samples": 100000, "projections": 64}
MIX_STEPS = (5, 10, 20, 25, 50, 100, 1000)
MIX_SPACINGS = ("uniform", "quad", "trailing")

DIGITS_STEPS = (10, 20, 50, 100)
DIGITS_FULL = ("ddim_eta0",)  # also at S = T: the reference the DDIM claim compares with
DIGITS_EXTRA_SPACING = ("quad", ("ddim_eta0", "dpmpp_2m"), (10, 20))  # does the mixture's spacing finding carry over?
DIGITS_N = 256  # the real digits are 1,797: N for the floor, the rest is the reference
CLOSE = 0.10  # "close to S = 1000": within 10 % of its distance
FLOOR_DRAWS = 5  # exact sets (mixture) / real splits (digits) for the spread of the noise floor


# ----------------------------------------------------------------------------- helpers
class _SlicedW2:
    """``sliced_wasserstein(x, reference, num_projections, seed)`` with the reference projected and sorted once.

    The library function re-sorts the 100,000-point reference on every call
    (~2 s each); this computes the same number (same directions, same quantile
    levels, same formula), and :func:`_mixture` checks it against the library.
    """

    def __init__(self, reference, num_projections, seed=0):
        from tfddim.evaluation import distances

        self._quantiles = distances._quantiles
        reference = np.asarray(reference, dtype=np.float64)
        theta = np.random.default_rng(seed).standard_normal((reference.shape[1], num_projections))
        theta /= np.linalg.norm(theta, axis=0, keepdims=True)
        self.theta = theta
        self.sorted_reference = np.sort(reference @ theta, axis=0)

    def __call__(self, x) -> float:
        x = np.asarray(x, dtype=np.float64)
        n = len(self.sorted_reference)
        if len(x) > n:
            raise ValueError("_SlicedW2 expects at most as many points as the reference")
        qa = self._quantiles(x @ self.theta, n)
        return float(np.mean(np.abs(qa - self.sorted_reference) ** 2) ** 0.5)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"


def _best(cells, method, steps):
    """The lowest-distance cell of ``method`` at ``steps`` over the spacings measured (None if none)."""
    candidates = [c for c in cells if c["method"] == method and c["steps"] == steps and c.get("distance") is not None]
    return min(candidates, key=lambda c: c["distance"]) if candidates else None


def _value(cells, method, steps, spacing=None):
    if spacing is None:
        best = _best(cells, method, steps)
        return None if best is None else best["distance"]
    for c in cells:
        if c["method"] == method and c["steps"] == steps and c["spacing"] == spacing:
            return c.get("distance")
    return None


# ----------------------------------------------------------------------------- the mixture
def _mixture() -> dict:
    from tfddim import sampling
    from tfddim.data import mixture
    from tfddim.diffusion import schedules
    from tfddim.evaluation.distances import sliced_wasserstein

    start = time.perf_counter()
    T, n = MIX["num_timesteps"], MIX["num_samples"]
    sched = schedules.get(MIX["schedule"], num_timesteps=T)
    mix = mixture.ring(MIX["components"], radius=MIX["radius"], std=MIX["std"])
    model_fn = mix.eps_fn(sched)
    rng = np.random.default_rng(SEED)
    x_T = rng.standard_normal((n, mix.dim)).astype(np.float32)
    reference, _ = mix.sample(MIX["reference_samples"], rng)
    exact, _ = mix.sample(n, rng)
    distance = _SlicedW2(reference, MIX["projections"])
    floor = sliced_wasserstein(exact, reference, num_projections=MIX["projections"])
    check_gap = abs(distance(exact) - floor)
    # how much the distance of an exact set moves from draw to draw: differences below that are not resolved
    floor_draws = [floor] + [distance(mix.sample(n, rng)[0]) for _ in range(FLOOR_DRAWS - 1)]

    cells, done = [], {}
    cache = sampling.SamplerCache()  # one compiled loop per method: S and the timesteps are tensors
    for key, _, options in METHODS:
        for s in MIX_STEPS:
            for spacing in MIX_SPACINGS:
                taus = schedules.spaced_timesteps(T, s, spacing=spacing)
                cell = {"method": key, "steps": s, "nfe": s, "spacing": spacing}
                same = done.get((key, tuple(taus.tolist())))
                if same is not None:  # e.g. S = T: every spacing visits every timestep
                    cell.update(distance=same["distance"], seconds=0.0, same_timesteps_as=same["spacing"])
                    cells.append(cell)
                    continue
                try:
                    t0 = time.perf_counter()
                    x0 = sampling.sample(model_fn, x_T, sched, taus, seed=SEED, cache=cache, **options).numpy()
                    cell["seconds"] = round(time.perf_counter() - t0, 3)
                    cell["distance"] = distance(x0) if np.all(np.isfinite(x0)) else float("nan")
                    done[(key, tuple(taus.tolist()))] = cell
                except Exception as e:  # noqa: BLE001 - a benchmark records failures, it does not stop on them
                    cell["error"] = _error(e)
                cells.append(cell)
                print(f"  mixture {key:<15} S={s:<5} {spacing:<9} "
                      f"{cell.get('distance', float('nan')):.4f}  ({cell.get('seconds', 0):.1f}s)", flush=True)
    return {"config": dict(MIX, steps=list(MIX_STEPS), spacings=list(MIX_SPACINGS), seed=SEED),
            "distance": "sliced W2", "noise_floor": floor, "noise_floor_draws": floor_draws,
            "cached_distance_gap": check_gap, "cells": cells,
            "dpm_claim": _dpm_claim(cells), "ddim_claim": _ddim_claim(cells, "mixture"),
            "seconds": round(time.perf_counter() - start, 1)}


def _dpm_claim(cells) -> dict:
    """DPM-Solver++(2M) at S = 10 against DDIM η = 0 at S = 10 and at S = 25, per spacing and best-vs-best."""
    def verdict(dpm10, ddim10, ddim25):
        if None in (dpm10, ddim10, ddim25):
            return None
        return {"dpm_10": dpm10, "ddim_10": ddim10, "ddim_25": ddim25, "beats_ddim_10": dpm10 < ddim10,
                "matches_ddim_25": dpm10 <= ddim25, "pass": dpm10 < ddim10 and dpm10 <= ddim25}

    out = {"per_spacing": {sp: verdict(_value(cells, "dpmpp_2m", 10, sp), _value(cells, "ddim_eta0", 10, sp),
                                       _value(cells, "ddim_eta0", 25, sp)) for sp in MIX_SPACINGS}}
    best_dpm = _best(cells, "dpmpp_2m", 10)
    best = verdict(_value(cells, "dpmpp_2m", 10), _value(cells, "ddim_eta0", 10), _value(cells, "ddim_eta0", 25))
    if best is not None:
        best["dpm_spacing"] = best_dpm["spacing"]
        best["ddim_10_spacing"] = _best(cells, "ddim_eta0", 10)["spacing"]
        best["ddim_25_spacing"] = _best(cells, "ddim_eta0", 25)["spacing"]
        # the fewest DDIM steps (best spacing) that reach DPM-Solver++'s S = 10 distance
        reach = [s for s in MIX_STEPS if (_value(cells, "ddim_eta0", s) or np.inf) <= best["dpm_10"]]
        best["ddim_steps_to_match"] = reach[0] if reach else None
    out["best_spacing"] = best
    out["pass"] = None if best is None else best["pass"]
    return out


def _ddim_claim(cells, part: str, full: int = 1000) -> dict:
    """For DDIM η = 0 and η = 1: the distance at S = 20 and 50 over the one at S = 1000, and the first S within CLOSE."""
    out = {}
    steps = sorted({c["steps"] for c in cells})
    for key in ("ddim_eta0", "ddim_eta1"):
        ref = _value(cells, key, full)
        if ref is None:
            continue
        entry = {"at_1000": ref}
        for s in (20, 50):
            v = _value(cells, key, s)
            if v is not None:
                entry[f"at_{s}"] = v
                entry[f"ratio_{s}"] = v / ref
        close = [s for s in steps if s < full and (_value(cells, key, s) or np.inf) <= (1 + CLOSE) * ref]
        entry["first_close_steps"] = close[0] if close else None
        out[key] = entry
    return {"part": part, "close_within": CLOSE, "methods": out}


# ----------------------------------------------------------------------------- the digits model
def _load_digits_model(path):
    import tensorflow as tf

    net, schedule, export, loaded = common.exported_network(path)
    shape = tuple(export["data_shape"])
    model_fn = tf.function(lambda x, t: net((x, t), training=False),
                           input_signature=[tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None], tf.int32)])
    return loaded, model_fn, schedule, export


def _digits_cells():
    cells = [(key, s, None) for key, _, _ in METHODS for s in DIGITS_STEPS]
    spacing, keys, steps = DIGITS_EXTRA_SPACING
    cells += [(key, s, spacing) for key in keys for s in steps]
    cells += [(key, 1000, None) for key in DIGITS_FULL]
    return cells


def _digits() -> dict:
    import tensorflow as tf

    from tfddim.pipelines import evaluate
    from tfddim.pipelines import sample as sample_pipeline
    from tfddim import sampling
    from tfddim.evaluation import features, metrics
    from tfddim.diffusion.spacing import spaced_timesteps

    start = time.perf_counter()
    path = sample_pipeline.DEFAULT_MODEL
    loaded, model_fn, sched, export = _load_digits_model(path)
    T = sched.num_timesteps
    shape = tuple(export["data_shape"])
    # jit_compile: the network under XLA, ~3x faster here, the same samples to rounding (tests/test_sampling.py)
    base = {"clip_x0": None if export.get("clip_x0") is None else tuple(export["clip_x0"]),
            "final_alpha_cumprod": export.get("final_alpha_cumprod", "one"), "jit_compile": True}
    spacing = export.get("spacing", "uniform")
    methods = {key: dict(options, **base) for key, _, options in METHODS}
    cache = sampling.SamplerCache()

    def run(key, x, s, sp=None):
        taus = spaced_timesteps(T, s, spacing=sp or spacing)
        return sampling.sample(model_fn, x, sched, taus, seed=SEED, cache=cache, **methods[key]).numpy()

    # trace every sampler once (S = 2, a few images)
    t0 = time.perf_counter()
    for key in methods:
        run(key, np.zeros((4, *shape), np.float32), 2)
    trace_s = time.perf_counter() - t0
    cells = _digits_cells()
    n = DIGITS_N

    # the real digits (train + held out): N of them for the floor, the rest is the reference
    real, _ = evaluate.real_data({"source": "digits"}, "all")
    net = features.DigitsFeatureNet(evaluate.DEFAULT_CLASSIFIER)
    feats = lambda images: net.features(images, batch_size=len(images))  # noqa: E731 - one batch, no progress bar
    real_features = feats(real)
    perm = np.random.default_rng(SEED).permutation(len(real))
    ref_features = real_features[perm[n:]]
    # the floor on the first split; more random splits show how far an FID at this N moves by chance
    floor_draws = []
    for k in range(FLOOR_DRAWS):
        p = perm if k == 0 else np.random.default_rng(SEED + k).permutation(len(real))
        floor_draws.append(metrics.fid(real_features[p[:n]], real_features[p[n:]]))
    floor = floor_draws[0]

    x_T = np.random.default_rng(SEED).standard_normal((n, *shape)).astype(np.float32)
    rows, outputs = [], {}
    for key, s, sp in cells:
        row = {"method": key, "steps": s, "nfe": s, "spacing": sp or spacing}
        try:
            t0 = time.perf_counter()
            x0 = run(key, x_T, s, sp)
            row["seconds"] = round(time.perf_counter() - t0, 2)
            row["fid"] = metrics.fid(feats(np.clip(x0, -1.0, 1.0)), ref_features)
            outputs[(key, s, sp)] = x0
        except Exception as e:  # noqa: BLE001
            row["error"] = _error(e)
        rows.append(row)
        print(f"  digits {key:<15} S={s:<5} {row['spacing']:<8} FID {row.get('fid', float('nan')):.3f}  "
              f"({row.get('seconds', 0):.1f}s)", flush=True)

    # the in-process network against the SavedModel's own signatures (same x_T, S = 10)
    check = {}
    for key, signature, call in (
        ("ddim_eta0", "serving_default", lambda: loaded.signatures["serving_default"](
            x_T=tf.constant(x_T), num_steps=tf.constant(10), eta=tf.constant(0.0), seed=tf.constant(SEED, tf.int64))),
        ("dpmpp_2m", "sample_dpmpp_2m", lambda: loaded.signatures["sample_dpmpp_2m"](
            x_T=tf.constant(x_T), num_steps=tf.constant(10))),
    ):
        try:
            if (key, 10, None) not in outputs:
                raise ValueError(f"the in-process {key} S=10 cell failed")
            if signature not in loaded.signatures:
                raise ValueError(f"{path} has no {signature} signature")
            theirs = call()["x_0"].numpy()
            check[signature] = {"max_abs_diff": float(np.max(np.abs(theirs - outputs[(key, 10, None)]))),
                                "steps": 10, "images": n}
        except Exception as e:  # noqa: BLE001
            check[signature] = {"error": _error(e)}
    print(f"  digits: in-process vs SavedModel {check}", flush=True)

    return {"model": os.path.relpath(path, ROOT), "features": net.identity, "num_samples": n,
            "reference_images": int(len(ref_features)), "real_source": "digits train + held out (1,797)",
            "spacing": spacing, "options": {k: v for k, v in base.items()}, "noise_floor": floor, "noise_floor_draws": floor_draws,
            "cells": rows,
            "savedmodel_check": check, "trace_s": round(trace_s, 1), "ddim_claim": _ddim_claim(
                [dict(r, distance=r.get("fid")) for r in rows if r["spacing"] == spacing], "digits"),
            "seconds": round(time.perf_counter() - start, 1)}


# ----------------------------------------------------------------------------- figure
def _draw_floor(ax, part: dict, pair: str, draws_name: str, title: str, ylabel: str) -> None:
    """The noise floor (dashed), its spread over the draws (shaded), the panel's title and y label."""
    ax.axhline(part["noise_floor"], color="gray", linestyle="--", label=f"noise floor ({pair})")
    draws = part.get("noise_floor_draws") or [part["noise_floor"]]
    ax.axhspan(min(draws), max(draws), color="gray", alpha=0.15, label=f"floor over {len(draws)} {draws_name}")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel)


def _figure(payload) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    mix, dig = payload.get("mixture", {}), payload.get("digits", {})
    ax = axes[0]
    if "cells" in mix:
        for i, (key, label, _) in enumerate(METHODS):
            pts = [(s, _value(mix["cells"], key, s)) for s in MIX_STEPS]
            pts = [(s, v) for s, v in pts if v is not None and np.isfinite(v)]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=f"C{i}", label=f"{label}, best spacing")
            uni = [(s, _value(mix["cells"], key, s, "uniform")) for s in MIX_STEPS]
            uni = [(s, v) for s, v in uni if v is not None and np.isfinite(v)]
            if uni:
                ax.plot(*zip(*uni), color=f"C{i}", alpha=0.35, linestyle=":", label=f"{label}, uniform")
        _draw_floor(ax, mix, "exact vs exact", "draws", f"Analytic mixture (exact ε): sliced W2, N = {MIX['num_samples']}",
                    "sliced W2 (lower is better)")
    else:
        ax.set_title("mixture failed", fontsize=9)
    ax = axes[1]
    if "cells" in dig:
        spacing = dig["spacing"]
        for i, (key, label, _) in enumerate(METHODS):
            pts = sorted((r["nfe"], r["fid"]) for r in dig["cells"] if r["method"] == key and r["spacing"] == spacing
                         and r.get("fid") is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", color=f"C{i}", label=f"{label}, {spacing}")
            other = sorted((r["nfe"], r["fid"]) for r in dig["cells"] if r["method"] == key and r["spacing"] != spacing
                           and r.get("fid") is not None)
            if other:
                sp = next(r["spacing"] for r in dig["cells"] if r["method"] == key and r["spacing"] != spacing)
                ax.plot(*zip(*other), marker="s", color=f"C{i}", linestyle=":", label=f"{label}, {sp}")
        _draw_floor(ax, dig, "real vs real", "splits", f"Digits model: FID on classifier features, N = {dig['num_samples']}",
                    "FID (lower is better)")
    else:
        ax.set_title("digits failed", fontsize=9)
    digit_steps = sorted({r["nfe"] for r in dig.get("cells", [])}) or list(MIX_STEPS)
    mix_ticks = [s for s in MIX_STEPS if s != 25]  # 25 sits too close to 20 for a label of its own
    for ax, ticks in zip(axes, (mix_ticks, digit_steps)):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(s) for s in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("network evaluations (NFE = S)")
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    path = os.path.join(ROOT, FIGURE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return FIGURE


# ----------------------------------------------------------------------------- run / table
def run() -> dict:
    payload = {}
    print("  quality: analytic mixture", flush=True)
    try:
        payload["mixture"] = _mixture()
    except Exception as e:  # noqa: BLE001
        payload["mixture"] = {"error": _error(e)}
    print("  quality: digits model", flush=True)
    try:
        payload["digits"] = _digits()
    except Exception as e:  # noqa: BLE001
        payload["digits"] = {"error": _error(e)}
    try:
        payload["figure"] = _figure(payload)
    except Exception as e:  # noqa: BLE001
        payload["figure_error"] = _error(e)
    return payload


def _fmt(v, digits=3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and not np.isfinite(v):
        return "nan"
    return f"{v:.{digits}g}"


_SHORT = {"uniform": "u", "quad": "q", "trailing": "t"}


def _mixture_section(mix) -> list:
    if "error" in mix:
        return [f"**Mixture: failed** — `{mix['error'].splitlines()[0]}`"]
    cells = mix["cells"]
    floor = mix["noise_floor"]
    header = ["sampler (best spacing)", *[f"S={s}" for s in MIX_STEPS]]
    rows = [["exact samples (noise floor)", *[_fmt(floor) for _ in MIX_STEPS]]]
    for key, label, _ in METHODS:
        row = [label]
        for s in MIX_STEPS:
            best = _best(cells, key, s)
            if best is None:
                row.append("error")
            elif s == MIX["num_timesteps"]:
                row.append(_fmt(best["distance"]))  # every spacing is every timestep
            else:
                row.append(f"{_fmt(best['distance'])} ({_SHORT[best['spacing']]})")
        rows.append(row)
    grid_rows = []
    for key, label, _ in METHODS:
        for sp in MIX_SPACINGS:
            grid_rows.append([label, sp, *[_fmt(_value(cells, key, s, sp)) for s in MIX_STEPS]])
    claim = mix["dpm_claim"]
    best = claim.get("best_spacing")
    draws = mix.get("noise_floor_draws") or [floor]
    lines = [
        f"**Analytic mixture** (8-Gaussian ring, exact ε, linear schedule, T = {MIX['num_timesteps']}): sliced W2 "
        f"({MIX['projections']} projections) of {MIX['num_samples']:,} samples from one x_T against "
        f"{MIX['reference_samples']:,} exact samples; the smallest distance over the spacings uniform (u), "
        f"quad (q) and trailing (t). Lower is better.",
        "",
        common.markdown_table(header, rows),
        "",
        f"The floor over {len(draws)} fresh exact draws spans {_fmt(min(draws))}–{_fmt(max(draws))}: that is how far "
        "a new set of points moves the number. Every cell shares one x_T (and one noise seed), so the deterministic "
        "samplers compare more finely than that; the stochastic ones, and taking the best of three spacings, do not.",
        "",
        "<details><summary>Every spacing</summary>",
        "",
        common.markdown_table(["sampler", "spacing", *[f"S={s}" for s in MIX_STEPS]], grid_rows),
        "",
        "</details>",
        "",
    ]
    # per-spacing findings at S = 10 (where the spacing matters most)
    at10 = "; ".join(f"{LABELS[key]}: " + ", ".join(f"{sp} {_fmt(_value(cells, key, 10, sp))}" for sp in MIX_SPACINGS)
                     for key in ("ddim_eta0", "dpmpp_2m"))
    lines.append(f"Spacing at S = 10 — {at10}.")
    lines.append("")
    if best is not None:
        per = "; ".join(
            f"{sp}: {_fmt(v['dpm_10'])} vs {_fmt(v['ddim_10'])} / {_fmt(v['ddim_25'])} "
            f"({'pass' if v['pass'] else 'fail'})" for sp, v in claim["per_spacing"].items() if v is not None)
        match = best.get("ddim_steps_to_match")
        lines.append(
            f"**DPM-Solver++ claim: {'PASS' if claim['pass'] else 'FAIL'}.** At S = 10 it reaches "
            f"{_fmt(best['dpm_10'])} ({best['dpm_spacing']} spacing) against DDIM η = 0's {_fmt(best['ddim_10'])} at "
            f"S = 10 and {_fmt(best['ddim_25'])} at S = 25 (each at its best spacing): "
            f"{'beats' if best['beats_ddim_10'] else 'does not beat'} DDIM at 10, "
            f"{'matches or beats' if best['matches_ddim_25'] else 'does not match'} DDIM at 25"
            + (f"; DDIM needs S = {match} to get as close." if match else "; no DDIM S below 1000 gets as close.")
            + f" With the same spacing for both (DPM 10 vs DDIM 10 / DDIM 25): {per}.")
    return lines


def _spread(part) -> float | None:
    draws = part.get("noise_floor_draws")
    return None if not draws else max(draws) - min(draws)


def _ddim_sentence(claim, what, spread) -> str:
    parts = []
    for key, entry in claim.get("methods", {}).items():
        if "at_20" not in entry or "at_50" not in entry:
            continue
        first = entry.get("first_close_steps")
        text = (f"{LABELS[key]} {_fmt(entry['at_20'])} at S = 20, {_fmt(entry['at_50'])} at S = 50, "
                f"{_fmt(entry['at_1000'])} at S = 1000 ("
                + (f"within {CLOSE:.0%} of S = 1000 from S = {first}" if first else f"not within {CLOSE:.0%} below 1000"))
        if spread is not None:
            near = [s for s in (20, 50) if abs(entry[f"at_{s}"] - entry["at_1000"]) <= spread]
            text += (f"; S = {' and '.join(map(str, near))} within the floor's draw-to-draw spread {_fmt(spread, 2)}"
                     if near else f"; neither within the floor's draw-to-draw spread {_fmt(spread, 2)}")
        parts.append(text + ")")
    return f"**DDIM claim ({what}):** " + "; ".join(parts) + "." if parts else ""


def _digits_section(dig) -> list:
    if "error" in dig:
        return [f"**Digits: failed** — `{dig['error'].splitlines()[0]}`"]
    draws = dig.get("noise_floor_draws") or [dig["noise_floor"]]
    steps = sorted({r["steps"] for r in dig["cells"]})
    header = ["sampler", "spacing", *[f"S={s}" for s in steps]]
    rows = [["real vs real (noise floor)", "", *[_fmt(dig["noise_floor"]) for _ in steps]]]
    seen = []
    for r in dig["cells"]:
        if (r["method"], r["spacing"]) not in seen:
            seen.append((r["method"], r["spacing"]))
    for key, sp in seen:
        by_s = {r["steps"]: ("error" if "error" in r else _fmt(r.get("fid"))) for r in dig["cells"]
                if r["method"] == key and r["spacing"] == sp}
        rows.append([LABELS[key], sp, *[by_s.get(s, "—") for s in steps]])
    check = dig.get("savedmodel_check", {})
    gaps = ", ".join(f"`{name}` {_fmt(c['max_abs_diff'], 2)}" if "max_abs_diff" in c else f"`{name}` failed"
                     for name, c in check.items())
    return [
        f"**Shipped digits model** (`{dig['model']}`, cosine schedule): FID on the digits classifier's features of "
        f"N = {dig['num_samples']} samples (one x_T, one noise seed, clip x̂₀ to [-1, 1] as exported) against "
        f"{dig['reference_images']} real digits; the floor is {dig['num_samples']} other real digits against the same "
        f"reference. S = 1000 is run for DDIM η = 0 only (the reference of the DDIM claim). The network is rebuilt from the "
        f"SavedModel's weights; max |Δx₀| against the SavedModel's own signatures at S = 10: {gaps}.",
        "",
        common.markdown_table(header, rows),
        "",
        f"The floor over {len(draws)} random real splits spans {_fmt(min(draws))}–{_fmt(max(draws))}: at this N an "
        f"FID moves by about {_fmt(max(draws) - min(draws), 2)} with the draw, so smaller differences between cells "
        "(which share one x_T) are not conclusive.",
    ]


def table(payload) -> str:
    mix, dig = payload.get("mixture", {}), payload.get("digits", {})
    lines = _mixture_section(mix) + [""] + _digits_section(dig) + [""]
    if "figure" in payload:
        lines += [f"![distance against NFE]({payload['figure']})", ""]
    elif "figure_error" in payload:
        lines += [f"(figure failed: `{payload['figure_error'].splitlines()[0]}`)", ""]
    conclusions = [s for s in (_ddim_sentence(mix.get("ddim_claim", {}), "mixture, best spacing", _spread(mix)),
                               _ddim_sentence(dig.get("ddim_claim", {}), "digits FID", _spread(dig))) if s]
    for c in conclusions:
        lines += [c, ""]
    return "\n".join(lines).rstrip()
