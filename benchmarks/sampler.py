"""Sampler overhead, runtimes and retracing.

1. **Overhead**: the limit for S-step sampling is S forward passes of the
   network. ratio = time(S-step sampler) / time(S forward passes), same
   batch, same runtime. SavedModel: ``serving_default`` at η = 0 against
   S chained calls of ``predict_x0`` in one graph (a ``tf.while_loop``, so
   neither side pays Python's per-call cost more than once). ONNX Runtime:
   ``sample_with_noise`` with the empty η = 0 noise against S calls of
   ``predict_x0`` converted the same way (ORT's per-call cost is ~0.1 ms).
   Models: the shipped digits model, and a CIFAR-10-shaped U-Net (32×32×3,
   random weights, reduced width so that batch 128 × 50 steps fits the 2-core
   budget), exported here as ``tfddim export`` does, with its
   ``sample_with_noise`` converted as ``--onnx`` converts it.
2. **Runtimes**: one sample of the digits model (same weights, same x_T,
   S = 20, η = 0) through a Keras eager Python loop, the ``tf.function``
   sampler, the same with ``SamplerConfig(jit_compile=True)`` (the network
   under XLA), the SavedModel and ONNX
   Runtime, as ratios to the fastest, with each one's max |Δ| to the
   ``tf.function`` sampler (they compute the same thing).
   **Before/after** the ONNX fix (:mod:`tfddim.onnx_loops`): the digits
   ``sample_with_noise`` graph as tf2onnx leaves it (every weight carried as
   ``Loop`` state) against the exported one (weights hoisted), side by side.
3. **Retracing**: the number of traces of one :class:`tfddim.sampling.Sampler`
   over calls that change batch size, S, η and seed (``make test`` asserts the
   same in ``tests/test_sampling.py``).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from benchmarks import common
from tfddim.export import layout  # file names of an export (no TensorFlow)

DIGITS = os.path.join(os.path.dirname(common.HERE), "saved_models", "digits", "1")
BATCHES = (1, 16, 128)
STEPS = (10, 50)
ROUNDS = 3
GOAL = 1.05
# The CIFAR-10-shaped network: the cifar10 config's layout (32×32×3, attention at 16×16,
# BigGAN up/down, AdaGN) at a width a 2-core CPU can run at batch 128 × 50 steps.
CIFAR_SHAPED = dict(image_size=32, in_channels=3, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1,
                    attention_resolutions=(16,), num_heads=4, resblock_updown=True, use_scale_shift_norm=True)


# ----------------------------------------------------------------- models
def export_cifar_shaped(base_dir: str) -> tuple:
    """A random CIFAR-10-shaped U-Net exported as ``tfddim export`` does; (version folder, parameters).

    Only ``sample_with_noise`` is converted to ONNX (as ``--onnx`` converts it, loop invariants
    hoisted): the other graphs are not timed and each conversion costs half a minute.
    """
    import keras
    import onnx
    import tensorflow as tf

    from tfddim import export, models
    from tfddim.diffusion import schedules
    from tfddim.export import onnx as onnx_export, onnx_loops

    keras.utils.set_random_seed(0)
    net = models.UNet(**CIFAR_SHAPED)
    net((tf.zeros([1, 32, 32, 3]), tf.zeros([1], tf.int32)))
    path = export.export_saved_model(net, schedules.get("linear", num_timesteps=1000), (32, 32, 3), base_dir,
                                     options=export.ExportOptions(clip_x0=(-1.0, 1.0)), warmup=False)
    model = onnx_export.convert_signature(path, "sample_with_noise")
    onnx_loops.hoist_loop_invariants(model)
    files = layout.ExportLayout(path)
    os.makedirs(files.onnx_dir)
    onnx.save(model, files.onnx_graph("sample_with_noise"))
    return path, int(net.count_params())


def onnx_forward(path: str, out_dir: str):
    """``predict_x0`` converted to ONNX the way the export converts the loops; an ORT session."""
    import onnx
    import onnxruntime as ort

    from tfddim.export import onnx as onnx_export

    model = onnx_export.convert_signature(path, "predict_x0")
    file = os.path.join(out_dir, "predict_x0.onnx")
    onnx.save(model, file)
    return ort.InferenceSession(file, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------- 1. overhead
def overhead(path: str, label: str, work_dir: str) -> list:
    """Rows of sampler / (S × forward) for both runtimes at every batch size and S."""
    import onnxruntime as ort
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    sample_tf, predict = loaded.signatures["serving_default"], loaded.signatures["predict_x0"]

    @tf.function
    def forward_chain(x, t, n):
        """n forward passes, each fed the previous ε̂ (bounded), in one graph call."""
        return tf.while_loop(lambda i, x: i < n, lambda i, x: (i + 1, predict(x_t=x, t=t)["eps"]), [0, x])[1]

    sample_onnx = ort.InferenceSession(layout.ExportLayout(path).onnx_graph("sample_with_noise"),
                                       providers=["CPUExecutionProvider"])
    forward_onnx = onnx_forward(path, work_dir)
    shape = layout.read_manifest(path).data_shape
    rows = []
    for batch in BATCHES:
        x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
        t = np.full([batch], 500, np.int32)
        empty = np.zeros((0, batch, *shape), np.float32)
        xt, tt = tf.constant(x), tf.constant(t)
        calls = {}
        for s in STEPS:
            calls[f"tf forward x{s}"] = lambda s=s: forward_chain(xt, tt, tf.constant(s)).numpy()
            calls[f"onnx forward x{s}"] = lambda s=s: [forward_onnx.run(None, {"x_t": x, "t": t}) for _ in range(s)]
            calls[f"tf S={s}"] = (lambda s=s: sample_tf(x_T=xt, num_steps=tf.constant(s), eta=tf.constant(0.0),
                                                        seed=tf.constant(0, tf.int64))["x_0"].numpy())
            calls[f"onnx S={s}"] = (lambda s=s: sample_onnx.run(None, {"x_T": x, "num_steps": np.asarray(s, np.int32),
                                                                       "eta": np.asarray(0.0, np.float32), "noise": empty}))
        for name, fn in calls.items():  # warm-up (first-call costs do not depend on S): the S = 10 calls only
            if name.endswith(("x10", "=10")):
                fn()
        times = common.paired(calls, rounds=ROUNDS, warmup=0)
        for backend in ("tf", "onnx"):
            for s in STEPS:
                rows.append({
                    "model": label, "backend": backend, "batch": batch, "steps": s,
                    "forward_ms": 1e3 * times[f"{backend} forward x{s}"]["median_s"] / s,
                    "sampler_ms": 1e3 * times[f"{backend} S={s}"]["median_s"],
                    "ratio": common.round_ratio(times[f"{backend} S={s}"]["times_s"], times[f"{backend} forward x{s}"]["times_s"]),
                })
                print(f"  {label:<14} {backend:<4} B={batch:<4} S={s:<3} ratio {rows[-1]['ratio']:.3f}", flush=True)
    return rows


def hoisting(path: str, work_dir: str, batch: int = 16) -> dict:
    """The ONNX loop before and after :func:`tfddim.export.onnx_loops.hoist_loop_invariants`, timed side by side."""
    import onnx
    import onnxruntime as ort

    from tfddim.export import onnx as onnx_export, onnx_loops

    raw = onnx_export.convert_signature(path, "sample_with_noise")  # as tf2onnx leaves it
    loop = next(n for n in raw.graph.node if n.op_type == "Loop")
    carried = len(loop.input) - 2
    file = os.path.join(work_dir, "sample_with_noise_unhoisted.onnx")
    onnx.save(raw, file)
    hoisted = onnx_loops.hoist_loop_invariants(raw)
    sessions = {"tf2onnx as is": ort.InferenceSession(file, providers=["CPUExecutionProvider"]),
                "hoisted (exported)": ort.InferenceSession(layout.ExportLayout(path).onnx_graph("sample_with_noise"),
                                                           providers=["CPUExecutionProvider"])}
    x = np.random.default_rng(1).standard_normal((batch, 8, 8, 1)).astype(np.float32)
    empty = np.zeros((0, batch, 8, 8, 1), np.float32)
    rows = []
    for s in STEPS:
        feed = {"x_T": x, "num_steps": np.asarray(s, np.int32), "eta": np.asarray(0.0, np.float32), "noise": empty}
        times = common.paired({name: (lambda sess=sess: sess.run(None, feed)) for name, sess in sessions.items()}, rounds=ROUNDS)
        rows.append({"steps": s, **{name: 1e3 * t["median_s"] for name, t in times.items()},
                     "speedup": common.round_ratio(times["tf2onnx as is"]["times_s"], times["hoisted (exported)"]["times_s"])})
        print(f"  onnx hoisting B={batch} S={s}: speed-up {rows[-1]['speedup']:.2f}", flush=True)
    return {"batch": batch, "loop_carried_values": carried, "hoisted": hoisted, "rows": rows}


# ----------------------------------------------------------------- 2. runtimes
def runtimes(batch: int = 16, num_steps: int = 20) -> dict:
    """One digits sample through five runtimes; times as ratios to the fastest."""
    import onnxruntime as ort
    import tensorflow as tf

    from tfddim import sampling
    from tfddim.diffusion import schedules, steps

    net, schedule, _, _ = common.exported_network(DIGITS)
    taus = schedules.spaced_timesteps(schedule.num_timesteps, num_steps)
    x = np.random.default_rng(0).standard_normal((batch, 8, 8, 1)).astype(np.float32)
    xt = tf.constant(x)
    config = sampling.SamplerConfig(clip_x0=(-1.0, 1.0))
    sampler = sampling.Sampler(lambda x, t: net((x, t), training=False), schedule, config)
    ac = schedule.alphas_cumprod

    def eager_loop():
        """The naive approach: a Python loop calling the Keras model eagerly, DDIM eq. 12 per step."""
        x_t = xt
        for i, t in enumerate(taus):
            ab = tf.constant(ac[t], tf.float32)
            ab_prev = tf.constant(ac[taus[i + 1]] if i + 1 < len(taus) else 1.0, tf.float32)
            eps = net((x_t, tf.fill([batch], int(t))), training=False)
            x0 = tf.clip_by_value(steps.x0_from_eps(x_t, eps, ab), -1.0, 1.0)
            x_t = steps.ddim_update(x0, steps.eps_from_x0(x_t, x0, ab), ab_prev, 0.0, 0.0)
        return x_t.numpy()

    jit = sampling.Sampler(lambda x, t: net((x, t), training=False), schedule,
                           sampling.SamplerConfig(clip_x0=(-1.0, 1.0), jit_compile=True))
    loaded = tf.saved_model.load(DIGITS)
    serving = loaded.signatures["serving_default"]
    session = ort.InferenceSession(layout.ExportLayout(DIGITS).onnx_graph("sample_with_noise"), providers=["CPUExecutionProvider"])
    empty = np.zeros((0, batch, 8, 8, 1), np.float32)
    calls = {
        "Keras eager Python loop": eager_loop,
        "tf.function sampler": lambda: sampler.sample(xt, taus, eta=0.0, seed=0).numpy(),
        "tf.function sampler, jit_compile=True": lambda: jit.sample(xt, taus, eta=0.0, seed=0).numpy(),
        "SavedModel (serving_default)": lambda: serving(x_T=xt, num_steps=tf.constant(num_steps), eta=tf.constant(0.0),
                                                        seed=tf.constant(0, tf.int64))["x_0"].numpy(),
        "ONNX Runtime (sample_with_noise)": lambda: session.run(None, {"x_T": x, "num_steps": np.asarray(num_steps, np.int32),
                                                                      "eta": np.asarray(0.0, np.float32), "noise": empty})[0],
    }
    reference = calls["tf.function sampler"]()
    # the first call of each is its warm-up (tracing, XLA compilation, session set-up) and checks it agrees
    gaps = {name: float(np.max(np.abs(np.asarray(fn()) - reference))) for name, fn in calls.items()}
    times = common.paired(calls, rounds=ROUNDS, warmup=0)
    fastest = min(t["median_s"] for t in times.values())
    return {"batch": batch, "steps": num_steps, "rows": [
        {"runtime": name, "ms": 1e3 * t["median_s"], "ratio_to_fastest": t["median_s"] / fastest, "max_abs_diff": gaps[name]}
        for name, t in times.items()]}


# ----------------------------------------------------------------- 3. retracing
def retracing() -> dict:
    """Traces of one Sampler over calls that vary batch, S, η and seed."""
    from tfddim import sampling
    from tfddim.data import mixture
    from tfddim.diffusion import schedules

    schedule = schedules.get("linear", num_timesteps=1000)
    sampler = sampling.Sampler(mixture.ring().eps_fn(schedule), schedule)
    calls = [(4, 10, 0.0, 1), (9, 25, 0.5, 2), (1, 3, 1.0, 3), (17, 100, 0.2, 4), (128, 50, 0.0, 5)]
    rng = np.random.default_rng(0)
    for batch, s, eta, seed in calls:
        sampler.sample(rng.standard_normal((batch, 2)).astype(np.float32),
                       schedules.spaced_timesteps(1000, s), eta=eta, seed=seed)
    return {"calls": [dict(zip(("batch", "steps", "eta", "seed"), c)) for c in calls], "traces": sampler.tracing_count()}


def run() -> dict:
    with tempfile.TemporaryDirectory() as work:
        cifar, parameters = export_cifar_shaped(os.path.join(work, "cifar_shaped"))
        rows = overhead(DIGITS, "digits (shipped)", work) + overhead(cifar, "CIFAR-10-shaped", work)
        before_after = hoisting(DIGITS, work)
    return {"goal": GOAL, "overhead": rows, "onnx_hoisting": before_after, "runtimes": runtimes(), "retracing": retracing(),
            "cifar_shaped": dict({k: list(v) if isinstance(v, tuple) else v for k, v in CIFAR_SHAPED.items()},
                                 parameters=parameters)}


def table(payload: dict) -> str:
    rows = payload["overhead"]
    keys = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda k: (k[0] != "digits (shipped)", k[1]))
    by = {(r["model"], r["batch"], r["backend"], r["steps"]): r for r in rows}
    body = [[m, b, f"{by[(m, b, 'tf', 10)]['forward_ms']:.3g}", *(f"{by[(m, b, be, s)]['ratio']:.3f}"
                                                                 for be in ("tf", "onnx") for s in STEPS),
             f"{by[(m, b, 'onnx', 10)]['forward_ms']:.3g}"] for m, b in keys]
    ratios = sorted(r["ratio"] for r in rows)
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else 0.5 * (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2])
    rt = payload["runtimes"]
    text = [
        f"**Overhead** = time(S-step sampler) / time(S forward passes), same runtime, same batch; goal ≤ {payload['goal']}. "
        "SavedModel: `serving_default` against S chained `predict_x0` calls in one graph; ONNX: `sample_with_noise` "
        "(one `Loop`) against S calls of `predict_x0` converted to ONNX. Forward ms is per pass.",
        "",
        common.markdown_table(["model", "batch", "TF forward ms", "SavedModel S=10", "SavedModel S=50",
                               "ONNX S=10", "ONNX S=50", "ONNX forward ms"], body),
        "",
        f"Median over the {len(ratios)} cells {median:.3f}, range {ratios[0]:.3f}–{ratios[-1]:.3f}. A loop cannot cost less "
        "than its forward passes, so cells below 1 measure the timing noise of this shared machine, and cells above "
        "1.05 sit as far from 1 as those below. The CIFAR-10-shaped U-Net is the cifar10 config's layout (32×32×3, attention at 16×16, "
        f"BigGAN up/down, AdaGN) at {payload['cifar_shaped']['base_channels']} base channels, channel_mult "
        f"{payload['cifar_shaped']['channel_mult']}, {payload['cifar_shaped']['num_res_blocks']} block per level: "
        f"{payload['cifar_shaped']['parameters']:,} random parameters (the full 35.7M config is far beyond a 2-core "
        "budget at batch 128 × 50 steps).",
        "",
        f"**The ONNX fix, before and after** (digits `sample_with_noise`, batch {payload['onnx_hoisting']['batch']}): "
        f"tf2onnx carries {payload['onnx_hoisting']['loop_carried_values']} values through the `Loop`, "
        f"{payload['onnx_hoisting']['hoisted']} of them invariants (the network weights); hoisted, ONNX Runtime folds "
        "and lays out the weights once instead of every step (`tfddim/export/onnx_loops.py`).",
        "",
        common.markdown_table(["S", "tf2onnx as is (ms)", "hoisted (ms)", "speed-up"],
                              [[r["steps"], f"{r['tf2onnx as is']:.0f}", f"{r['hoisted (exported)']:.0f}", f"{r['speedup']:.2f}"]
                               for r in payload["onnx_hoisting"]["rows"]]),
        "",
        f"**Runtimes**: one digits sample, batch {rt['batch']}, S = {rt['steps']}, η = 0, the same weights and x_T.",
        "",
        common.markdown_table(["runtime", "ms", "× fastest", "max abs diff to tf.function"],
                              [[r["runtime"], f"{r['ms']:.0f}", f"{r['ratio_to_fastest']:.2f}", f"{r['max_abs_diff']:.1e}"]
                               for r in rt["rows"]]),
        "",
        f"**Retracing**: {len(payload['retracing']['calls'])} calls of one `Sampler` with different batch, S, η and seed "
        f"traced its loop {payload['retracing']['traces']} time(s).",
    ]
    return "\n".join(text)
