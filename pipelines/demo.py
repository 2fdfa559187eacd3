"""The demo: DDIM (η = 0, 1) and DDPM on the analytic 2-D mixture, against the number of steps.

The model is the mixture's exact ε (:mod:`tfddim.mixture`), so every error in
the table is the sampler's own. For each method and each S, ``num_samples``
points are drawn from the same x_T and compared with fresh exact samples by the
sliced Wasserstein distance; the first row is the distance between two exact
sample sets of the same size (the noise floor no sampler can beat).

Run it as ``tfddim demo`` or ``python pipelines/demo.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
import time

import numpy as np

from tfddim.pipelines.config import check_at_least

DEFAULT_STEPS = (5, 10, 20, 50, 100, 1000)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's options (the CLI flags of ``tfddim demo``)."""

    out_dir: str = "runs/demo"
    num_samples: int = 10000
    steps: tuple = DEFAULT_STEPS
    num_timesteps: int = 1000
    schedule: str = "linear"
    spacing: str = "uniform"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        check_at_least(self, num_samples=2)
        if not self.steps:
            raise ValueError("steps: give at least one step count")


# (label, method, eta): the rows of the study.
# DDIM with eta=1 is DDPM with the fixed_small variance (eq. 16 gives sigma^2 = beta-tilde and
# the same mean), so the third row shows DDPM's other variance, beta (= the DDIM paper's sigma-hat).
METHODS = (
    ("DDIM eta=0", {"method": "ddim", "eta": 0.0}),
    ("DDIM eta=1 (= DDPM fixed_small)", {"method": "ddim", "eta": 1.0}),
    ("DDPM fixed_large (= sigma-hat)", {"method": "ddpm", "variance": "fixed_large"}),
)


def run(config: DemoConfig = DemoConfig()) -> dict:
    """Sample, measure, write ``table.md``, ``table.csv`` and ``samples.png`` under ``config.out_dir``; print the table.

    Returns ``{"rows": [...], "noise_floor": float, "files": [...]}``.
    """
    print(f"tfddim demo: sampling the 8-component ring mixture, S in {list(config.steps)}", flush=True)
    result = _study(config)
    with open(result["files"][0]) as f:
        print(f.read())
    print("wrote " + ", ".join(result["files"]))
    return result


def _study(config: DemoConfig) -> dict:
    """The rows, the noise floor and the written files of the demo (no summary printed)."""
    from tfddim import sampling
    from tfddim.data import mixture
    from tfddim.diffusion import schedules
    from tfddim.evaluation.distances import sliced_wasserstein

    sched = schedules.get(config.schedule, num_timesteps=config.num_timesteps)
    all_taus = {s: schedules.spaced_timesteps(config.num_timesteps, s, spacing=config.spacing, schedule=sched) for s in config.steps}
    mix = mixture.ring(8, radius=4.0, std=0.5)
    model_fn = mix.eps_fn(sched)
    rng = np.random.default_rng(config.seed)
    x_T = rng.standard_normal((config.num_samples, mix.dim)).astype(np.float32)
    # A reference set 10x larger than the samples, so the noise floor is mostly the samples' own.
    reference, _ = mix.sample(10 * config.num_samples, rng)
    floor = sliced_wasserstein(mix.sample(config.num_samples, rng)[0], reference, num_projections=64)

    rows, panels = [], {}
    samplers = sampling.SamplerCache()  # one compiled loop per method for every S
    for label, options in METHODS:
        for s in config.steps:
            start = time.perf_counter()
            x0 = sampling.sample(model_fn, x_T, sched, all_taus[s], seed=config.seed, cache=samplers, **options).numpy()
            seconds = time.perf_counter() - start
            distance = sliced_wasserstein(x0, reference, num_projections=64)
            rows.append({"method": label, "steps": s, "sliced_w2": distance, "seconds": seconds})
            panels[(label, s)] = x0
            print(f"  {label:<18} S={s:<5} SW2={distance:.4f}  ({seconds:.1f}s)", flush=True)

    os.makedirs(config.out_dir, exist_ok=True)
    files = [_write_table(config, rows, floor), _write_csv(config, rows, floor), _write_figure(config, panels, reference)]
    return {"rows": rows, "noise_floor": floor, "files": files}


def _table_lines(config: DemoConfig, rows, floor) -> list:
    header = "| method | " + " | ".join(f"S={s}" for s in config.steps) + " |"
    lines = [header, "|---|" + "---|" * len(config.steps)]
    lines.append("| exact samples (noise floor) | " + " | ".join(f"{floor:.4f}" for _ in config.steps) + " |")
    for label, _ in METHODS:
        vals = [r["sliced_w2"] for r in rows if r["method"] == label]
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    return lines


def _write_table(config: DemoConfig, rows, floor) -> str:
    path = os.path.join(config.out_dir, "table.md")
    with open(path, "w") as f:
        f.write(
            f"# Sampler error on the analytic mixture\n\n"
            f"Sliced Wasserstein-2 distance between {config.num_samples} samples and {10 * config.num_samples} exact ones "
            f"(8-component ring, exact epsilon; {config.schedule} schedule, T={config.num_timesteps}, "
            f"{config.spacing} spacing, seed {config.seed}). Lower is better; the noise floor is the distance "
            f"from {config.num_samples} exact samples to the same reference.\n\n"
        )
        f.write("\n".join(_table_lines(config, rows, floor)) + "\n")
    return path


def _write_csv(config: DemoConfig, rows, floor) -> str:
    path = os.path.join(config.out_dir, "table.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "steps", "sliced_w2", "seconds"])
        writer.writeheader()
        for s in config.steps:
            writer.writerow({"method": "exact samples (noise floor)", "steps": s, "sliced_w2": floor, "seconds": 0.0})
        writer.writerows(rows)
    return path


def _write_figure(config: DemoConfig, panels, reference) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = len(config.steps) + 1
    fig, axes = plt.subplots(len(METHODS), ncols, figsize=(2.2 * ncols, 2.2 * len(METHODS)), squeeze=False)
    lim = np.abs(reference).max() * 1.3
    for r, (label, _) in enumerate(METHODS):
        for c in range(ncols):
            ax = axes[r][c]
            pts = reference[: config.num_samples] if c == 0 else panels[(label, config.steps[c - 1])]
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4, color="gray" if c == 0 else "C0")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("exact" if c == 0 else f"S={config.steps[c - 1]}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label.replace(" (", "\n("), fontsize=8)
    fig.tight_layout()
    path = os.path.join(config.out_dir, "samples.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
