"""The main job, ``make demo`` / ``tfddim pipeline``: train → export → sample (both runtimes) → evaluate → report.

On the embedded digits, offline, in about a quarter of an hour on 2 CPU cores:

1. train the ``digits`` config for a fixed budget (``--epochs``, 25 × 200 steps
   by default: about 9 minutes) into ``<runs>/<name>/``; running the command
   again resumes an interrupted run and skips a finished one;
2. export it (SavedModel + ONNX, checked against each other) to
   ``<runs>/<name>/export/<name>/1``;
3. sample 64 digits through TensorFlow and through ONNX Runtime from the same
   x_T (DDIM, 50 steps) and report their largest difference;
4. evaluate a reduced grid (S ∈ {10, 50, 100} × η ∈ {0, 1, σ̂}) with the
   noise floor, the figures and the NLL bound → ``<runs>/<name>/report.md``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from tfddim.pipelines.config import check_at_least

REDUCED_STEPS = (10, 50, 100)
REDUCED_ETAS = (0.0, 1.0, "sigma_hat")

# The shipped model the README's figures describe (saved_models/digits/1), for the report's comparison.
# Training steps and final loss: saved_models/digits/MODEL_CARD.md ("6,000 steps (30 epochs × 200)", "final
# training loss 0.131"; also its assets.extra/metadata.json). Reconstruction RMSE of the first 8 held-out digits
# (encode → decode, DDIM η = 0, x̂₀ clipped, as `tfddim evaluate` does): README, "The shipped digits model".
SHIPPED_MODEL = "saved_models/digits/1"
SHIPPED_TRAINING_STEPS = 6000
SHIPPED_FINAL_LOSS = 0.131
SHIPPED_RECONSTRUCTION_RMSE = {10: 0.107, 20: 0.053, 50: 0.024, 100: 0.013}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The options of ``tfddim pipeline`` (``make demo``).

    Attributes:
        runs_dir: the parent of the run folder.
        name: the run name: the folder ``<runs_dir>/<name>``.
        epochs: training epochs of the digits config; >= 1.
        num_samples: samples per evaluated cell; >= 2.
        nll_images: test images of the NLL bound (0: skip); >= 0.
        seed: sampling and evaluation seed.
        steps: the step counts S of the reduced grid.
        etas: the etas of the reduced grid.
        overrides: extra ``key=value`` overrides of the digits config (tests use a tiny network).
    """

    runs_dir: str = "runs"
    name: str = "digits_demo"
    epochs: int = 25
    num_samples: int = 300
    nll_images: int = 100
    seed: int = 0
    steps: tuple = REDUCED_STEPS
    etas: tuple = REDUCED_ETAS
    overrides: tuple = ()

    def __post_init__(self):
        for name in ("steps", "etas", "overrides"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        check_at_least(self, epochs=1, num_samples=2, nll_images=0)


def run(cfg: PipelineConfig = PipelineConfig()) -> dict:
    """Run the four stages; returns the evaluation result with ``run_dir``, ``model`` and ``runtime_gap``."""
    from tfddim.pipelines import config, evaluate, export, sample, train
    from tfddim.runs import RunDir

    started = time.time()
    stage = lambda text: print(f"\n=== tfddim pipeline: {text} ({time.time() - started:.0f} s)", flush=True)  # noqa: E731

    stage(f"1/4 train the digits config for {cfg.epochs} epochs")
    run_cfg = config.load("digits", [f'name="{cfg.name}"', f"train.epochs={cfg.epochs}", "train.verbose=2", *cfg.overrides])
    train.run(run_cfg, runs_dir=cfg.runs_dir)
    run_dir = RunDir.of(cfg.runs_dir, cfg.name).path

    stage("2/4 export SavedModel + ONNX")
    model = export.run(export.ExportConfig(run_dir, cfg.name, 1, base_dir=os.path.join(run_dir, "export"),
                                           overwrite=True, onnx=True))

    stage("3/4 sample 64 digits through TensorFlow and ONNX Runtime")
    grids = {}
    for backend in ("tf", "onnx"):
        grids[backend] = sample.run(sample.SampleConfig(model, n=64, steps=50, seed=cfg.seed, backend=backend,
                                                        out=os.path.join(run_dir, f"samples_{backend}.png")))["x_0"]
    gap = float(np.max(np.abs(grids["tf"] - grids["onnx"])))
    print(f"max |TensorFlow - ONNX Runtime| over 64 samples x 50 steps: {gap:.2e}")

    stage("4/4 evaluate a reduced grid")
    result = evaluate.run(evaluate.EvaluateConfig(run_dir, num_samples=cfg.num_samples, steps=cfg.steps, etas=cfg.etas,
                                                  seed=cfg.seed, nll_images=cfg.nll_images))
    with open(result["report"], "a") as f:
        f.write(f"\n## Runtimes\n\nThe export at `{model}` sampled 64 digits (DDIM, 50 steps, same x_T) through "
                f"TensorFlow (`samples_tf.png`) and ONNX Runtime (`samples_onnx.png`); largest difference {gap:.2e}.\n")
        f.write(shipped_comparison(RunDir(run_dir).read_metadata(), result["reconstruction_by_steps"], cfg.overrides))
    stage(f"done: report at {result['report']}")
    return {"run_dir": run_dir, "model": model, "runtime_gap": gap, **result}


def shipped_comparison(metadata: dict, reconstruction: dict, overrides=()) -> str:
    """The report section that sets this demo run against the shipped model the README describes.

    ``metadata``: the run's ``metadata.json``; ``reconstruction``: ``{S: {"rmse", ...}}`` of its evaluation.
    """
    steps = metadata.get("steps")
    loss = (metadata.get("final_metrics") or {}).get("loss")
    lines = ["", "## This demo model and the shipped one", "",
             f"This run trained {steps if steps is not None else '?'} steps "
             f"(final training loss {'?' if loss is None else f'{loss:.3f}'}); the shipped `{SHIPPED_MODEL}`, whose "
             f"numbers the README's evaluation section shows, trained {SHIPPED_TRAINING_STEPS:,} steps with the same "
             f"config (final loss {SHIPPED_FINAL_LOSS}; `saved_models/digits/MODEL_CARD.md`). The demo's budget is "
             "smaller, so its figures are not the README's: expect worse samples and, above all, a less exact "
             "DDIM inversion (reconstruction below)."]
    if overrides:
        lines.append(f"This run also overrides the config (`{'`, `'.join(overrides)}`), so it is not the same network.")
    rows = [(int(s), e["rmse"]) for s, e in sorted(reconstruction.items(), key=lambda kv: int(kv[0]))]
    if rows:
        lines += ["", "Reconstruction RMSE of the same 8 held-out digits (encode → decode, DDIM η = 0):", "",
                  "| S | this run | shipped model (README) |", "|---|---|---|"]
        lines += [f"| {s} | {rmse:.3f} | {SHIPPED_RECONSTRUCTION_RMSE[s]:.3f} |" if s in SHIPPED_RECONSTRUCTION_RMSE
                  else f"| {s} | {rmse:.3f} | — |" for s, rmse in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["pipeline", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
