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

import os
import sys
import time

import numpy as np

REDUCED_STEPS = (10, 50, 100)
REDUCED_ETAS = (0.0, 1.0, "sigma_hat")


def run(runs_dir: str = "runs", name: str = "digits_demo", epochs: int = 25, num_samples: int = 300,
        nll_images: int = 100, seed: int = 0, steps=REDUCED_STEPS, etas=REDUCED_ETAS, overrides=()) -> dict:
    """Run the four stages; ``overrides`` are extra ``key=value`` config overrides (tests use a tiny network)."""
    from tfddim.pipelines import config, evaluate, export, sample, train

    if epochs < 1 or num_samples < 2 or nll_images < 0:
        raise ValueError("--epochs must be >= 1, --num-samples >= 2 and --nll-images >= 0")
    started = time.time()
    stage = lambda text: print(f"\n=== tfddim pipeline: {text} ({time.time() - started:.0f} s)", flush=True)  # noqa: E731

    stage(f"1/4 train the digits config for {epochs} epochs")
    cfg = config.load("digits", [f'name="{name}"', f"train.epochs={epochs}", "train.verbose=2", *overrides])
    train.run(cfg, runs_dir=runs_dir)
    run_dir = os.path.join(runs_dir, name)

    stage("2/4 export SavedModel + ONNX")
    model = export.run(run_dir, name, 1, base_dir=os.path.join(run_dir, "export"), overwrite=True, onnx=True)

    stage("3/4 sample 64 digits through TensorFlow and ONNX Runtime")
    grids = {}
    for backend in ("tf", "onnx"):
        grids[backend] = sample.run(model, n=64, steps=50, seed=seed, out=os.path.join(run_dir, f"samples_{backend}.png"),
                                    backend=backend)["x_0"]
    gap = float(np.max(np.abs(grids["tf"] - grids["onnx"])))
    print(f"max |TensorFlow - ONNX Runtime| over 64 samples x 50 steps: {gap:.2e}")

    stage("4/4 evaluate a reduced grid")
    result = evaluate.run(run_dir, num_samples=num_samples, steps=steps, etas=etas, seed=seed,
                          nll_images=nll_images)
    with open(result["report"], "a") as f:
        f.write(f"\n## Runtimes\n\nThe export at `{model}` sampled 64 digits (DDIM, 50 steps, same x_T) through "
                f"TensorFlow (`samples_tf.png`) and ONNX Runtime (`samples_onnx.png`); largest difference {gap:.2e}.\n")
    stage(f"done: report at {result['report']}")
    return {"run_dir": run_dir, "model": model, "runtime_gap": gap, **result}


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["pipeline", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
