"""Peak memory of sampling: 1,024 digits-shaped images at S = 10, 100 and 1000 (and 1000 with the trajectory kept).

The sampling loop is one ``tf.while_loop`` that carries only x (and, for
DPM-Solver++, the previous x̂₀): without ``return_trajectory`` nothing grows
with S. Each measurement runs in a fresh subprocess (``python -m
benchmarks.memory --child S [--trajectory]``) so one run's allocations cannot
raise another's peak. The child builds a one-layer network of the digits'
shape (8×8×1: a 3×3 convolution of x plus a t-embedding; the measurement is
about what the loop keeps, and a U-Net at batch 1,024 × 1,000 steps takes
minutes on 2 cores), traces the sampler on the same 1,024-image batch at S = 2
(tracing and the per-step buffers are then in the baseline), reads the peak
RSS (``VmHWM`` in ``/proc/self/status``), samples at S and reads it again.
(Not ``getrusage().ru_maxrss``: Linux carries the parent's high-water mark
across fork and exec into it, so a child of a big process reads the parent's peak.)
With the trajectory kept, the loop also stacks x and x̂₀ after every step:
2·S·1024·64·4 bytes (500 MiB at S = 1000) must show up in the growth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

if __package__ in (None, ""):  # python benchmarks/memory.py --child ...
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

ROOT = os.path.dirname(common.HERE)
BATCH = 1024
SHAPE = (8, 8, 1)
# (S, keep the trajectory)
CASES = ((10, False), (100, False), (1000, False), (1000, True))
NETWORK = "3x3 Conv2D(1 -> 1) of x_t + Embedding(T, 1)(t), random weights"
CHILD_TIMEOUT_S = 600
MARK = "MEMORY_RESULT "


def _status_kib(field: str) -> int | None:
    """A memory field of /proc/self/status in KiB (Linux): ``VmRSS`` (now) or ``VmHWM`` (peak), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _child(steps: int, trajectory: bool) -> dict:
    """In the subprocess: build, trace at S = 2, measure, sample at S, measure."""

    import keras
    import numpy as np
    import tensorflow as tf

    from tfddim import sampling
    from tfddim.diffusion import schedules

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    sched = schedules.get("cosine", 1000)
    conv = keras.layers.Conv2D(SHAPE[-1], 3, padding="same")
    embed = keras.layers.Embedding(sched.num_timesteps, SHAPE[-1])
    model_fn = tf.function(lambda x, t: conv(x) + embed(t)[:, None, None, :],
                           input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32), tf.TensorSpec([None], tf.int32)])
    x_T = rng.standard_normal((BATCH, *SHAPE)).astype(np.float32)

    def run(s):
        # the outputs as sample() returns them (eager tensors, already computed); no numpy copies
        taus = schedules.spaced_timesteps(sched.num_timesteps, s)
        out = sampling.sample(model_fn, x_T, sched, taus, method="ddim", seed=0, return_trajectory=trajectory)
        return [out[0], *out[1]] if trajectory else [out]

    run(2)  # trace (same batch, same trajectory flag: the S-step call does not retrace)
    base_peak = _status_kib("VmHWM")
    base_current = _status_kib("VmRSS")
    start = time.perf_counter()
    outputs = run(steps)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return {"steps": steps, "trajectory": trajectory, "batch": BATCH, "baseline_peak_kib": base_peak,
            "baseline_current_kib": base_current, "peak_kib": peak, "after_current_kib": _status_kib("VmRSS"),
            "sample_seconds": round(seconds, 2),
            "output_bytes": int(sum(int(tf.size(o)) * o.dtype.size for o in outputs)),
            "x0_finite": bool(np.all(np.isfinite(outputs[0].numpy())))}


def _measure(steps: int, trajectory: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", str(steps)] + (["--trajectory"] if trajectory else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    row = {"steps": steps, "trajectory": trajectory}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
        if proc.returncode != 0 or not lines:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            row["error"] = f"child exited with {proc.returncode}: {tail}"
        else:
            row.update(json.loads(lines[-1][len(MARK):]))
    except subprocess.TimeoutExpired:
        row["error"] = f"child timed out after {CHILD_TIMEOUT_S} s"
    except Exception as e:  # noqa: BLE001 - record, do not stop
        row["error"] = f"{type(e).__name__}: {e}"
    row["wall_seconds"] = round(time.perf_counter() - start, 1)
    return row


def run() -> dict:
    rows = []
    for steps, trajectory in CASES:
        row = _measure(steps, trajectory)
        rows.append(row)
        if "error" in row:
            print(f"  memory S={steps} trajectory={trajectory}: {row['error']}", flush=True)
        else:
            print(f"  memory S={steps:<5} trajectory={trajectory!s:<5} baseline {row['baseline_peak_kib'] / 1024:.0f} MiB, "
                  f"peak {row['peak_kib'] / 1024:.0f} MiB ({row['wall_seconds']:.0f} s)", flush=True)
    payload = {"batch": BATCH, "shape": list(SHAPE), "network": NETWORK, "schedule": "cosine, T = 1000",
               "sampler": "sampling.sample(method='ddim', eta=0)", "rows": rows}
    by = {(r["steps"], r["trajectory"]): r for r in rows if "error" not in r}
    if (1000, False) in by and (10, False) in by:
        payload["peak_ratio_1000_vs_10"] = by[(1000, False)]["peak_kib"] / by[(10, False)]["peak_kib"]
        payload["growth_1000_minus_growth_10_mib"] = (_growth(by[(1000, False)]) - _growth(by[(10, False)])) / 1024
    if (1000, True) in by:
        payload["trajectory_expected_mib"] = _expected_trajectory(1000) / 2**20
    return payload


def _growth(row) -> int:
    return row["peak_kib"] - row["baseline_peak_kib"]


def _expected_trajectory(steps: int) -> int:
    """Bytes of the kept trajectory: x and x̂₀ after each of S steps, float32."""
    size = 1
    for d in SHAPE:
        size *= d
    return 2 * steps * BATCH * size * 4


def table(payload) -> str:
    rows = []
    for r in payload["rows"]:
        label = f"{r['steps']}" + (" + trajectory" if r["trajectory"] else "")
        if "error" in r:
            rows.append([label, "error", "", "", "", r["error"].splitlines()[0][:120]])
            continue
        expected = f"{_expected_trajectory(r['steps']) / 2**20:.0f}" if r["trajectory"] else "0"
        rows.append([label, f"{r['baseline_peak_kib'] / 1024:.0f}", f"{r['peak_kib'] / 1024:.0f}",
                     f"{_growth(r) / 1024:.1f}", expected, f"{r['sample_seconds']:.1f}"])
    lines = [
        f"Peak RSS of one process sampling {payload['batch']:,} images of 8×8×1 with DDIM (η = 0) and a one-layer "
        f"network ({payload['network']}), each row in a fresh subprocess; the baseline is the peak after building the network and tracing the "
        f"sampler on the same batch at S = 2.",
        "",
        common.markdown_table(["S", "baseline peak (MiB)", "peak after sampling (MiB)", "growth (MiB)",
                               "trajectory size (MiB)", "sampling (s)"], rows),
        "",
    ]
    by = {(r["steps"], r["trajectory"]): r for r in payload["rows"] if "error" not in r}
    if "peak_ratio_1000_vs_10" in payload:
        text = (f"Without the trajectory the peak stays flat in S: peak(S = 1000) / peak(S = 10) = "
                f"{payload['peak_ratio_1000_vs_10']:.3f}, and sampling 100× more steps adds "
                f"{payload['growth_1000_minus_growth_10_mib']:.1f} MiB of growth.")
        if (1000, True) in by:
            traj = by[(1000, True)]
            text += (f" Keeping the trajectory (`return_trajectory=True`) grows the peak by {_growth(traj) / 1024:.0f} "
                     f"MiB at S = 1000, against {payload['trajectory_expected_mib']:.0f} MiB of x and x̂₀ kept "
                     f"(2·S·1024·64·4 bytes; the loop's buffers plus the stacked copy account for the rest).")
        lines.append(text)
    else:
        lines.append("The S = 10 or S = 1000 measurement failed; see the errors above.")
    return "\n".join(lines)


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--child", type=int, required=True, help="measure one run at this S (internal)")
    parser.add_argument("--trajectory", action="store_true")
    args = parser.parse_args(argv)
    print(MARK + json.dumps(_child(args.child, args.trajectory)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
