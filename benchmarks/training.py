"""Training throughput: images/s of ``DiffusionModel.fit``, per precision/compilation variant, and of the input pipeline alone.

Two models, each trained by :func:`pipelines.train.build_model` on the dataset
:func:`tfddim.data.make_dataset` builds for it (exactly what ``tfddim train``
feeds ``fit``):

- ``digits``: ``pipelines/configs/digits.json`` as shipped (8×8×1, batch 64);
- ``cifar_shaped``: the ``pipelines/configs/cifar10.json`` U-Net at reduced
  width (:data:`CIFAR_OVERRIDES`; the full 35.7M-parameter network is far too
  slow for the budget on 2 CPU cores), on random uint8 32×32×3 images written to a
  temporary ``.npz`` and read through ``make_dataset``'s ``npz:`` source, so
  they take the same cache → shuffle → batch → flip → prefetch path as CIFAR-10.

Variants: ``plain`` (float32), ``jit_compile`` (``compile(jit_compile=True)``),
``mixed_bfloat16`` (the Keras mixed policy that matters on CPUs) and
``input_only`` (iterating the same dataset object ``fit`` consumes, touching
nothing). Each variant gets a fresh model built under its own global policy;
the policy is set again around every call of that variant and restored after,
so the caller's policy is untouched. A warm-up ``fit`` of one step per variant
absorbs tracing and XLA compilation (its time is reported separately); then
``ROUNDS`` interleaved rounds (plain, jit, bf16, input, plain, ...) call
``fit(epochs=1, steps_per_epoch=k)`` and a callback times the epoch from
``on_epoch_begin`` to ``on_epoch_end``. Figures are medians over the rounds;
ratios are medians of per-round ratios (:func:`benchmarks.common.round_ratio`).

``mixed_float16`` is not run: this TensorFlow build has no fast float16 CPU
kernels (its start-up message lists AVX512_FP16 among the instructions it was
not compiled for), and a trial of the digits model under that policy took over
10 s per step, about 100× the float32 step: far outside the 3-minute budget.
A variant that fails is recorded as ``{"error": "..."}`` and shown as failed, never dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import statistics
import tempfile
import time
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from benchmarks import common

if TYPE_CHECKING:  # imported lazily: rendering the README must not load TensorFlow
    import keras

GOAL = 5.0  # input-only images/s over training images/s, at least
ROUNDS = 3
VARIANTS: Tuple[Tuple[str, str, bool], ...] = (
    # (name, Keras dtype policy, jit_compile)
    ("plain", "float32", False),
    ("jit_compile", "float32", True),
    ("mixed_bfloat16", "mixed_bfloat16", False),
)
CIFAR_OVERRIDES: Tuple[str, ...] = (
    "data.batch_size=32",
    "model.config.base_channels=32",
    "model.config.channel_mult=[1,2,2]",
    "model.config.num_res_blocks=1",
)
CIFAR_EXAMPLES = 10_000  # random images in the npz: as many as the shuffle buffer holds, as with CIFAR-10
# model -> (train steps per timed epoch, batches per input-only pass)
STEPS: Dict[str, Tuple[int, int]] = {"digits": (10, 200), "cifar_shaped": (2, 100)}


def _epoch_timer() -> keras.callbacks.Callback:
    """A Keras callback whose ``seconds`` lists each epoch's wall time (``on_epoch_begin`` → ``on_epoch_end``)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: List[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


@contextlib.contextmanager
def _policy(name: str) -> Iterator[None]:
    """Set the global Keras dtype policy for the block; restore the previous one after."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def _configs(tmp: str) -> Dict[str, object]:
    """The two run configs; the CIFAR-shaped one reads random images from ``tmp``."""
    from tfddim.pipelines import config as config_lib

    rng = np.random.default_rng(0)
    npz = os.path.join(tmp, "cifar_shaped.npz")
    np.savez(npz, images=rng.integers(0, 256, (CIFAR_EXAMPLES, 32, 32, 3), dtype=np.uint8),
             labels=rng.integers(0, 10, CIFAR_EXAMPLES).astype(np.int32))
    return {"digits": config_lib.load("digits"),
            "cifar_shaped": config_lib.load("cifar10", [f"data.source=npz:{npz}", *CIFAR_OVERRIDES])}


def _measure_model(name: str, cfg, rounds: int) -> dict:
    """Build every variant of one model, warm it up, then time the variants interleaved."""
    from tfddim.pipelines.train import build_model
    from tfddim import data as data_lib

    train_steps, input_batches = STEPS[name]
    info = data_lib.dataset_info(cfg.data)
    dataset = data_lib.make_dataset(cfg.data, "train", training=True)
    batch = cfg.data.batch_size
    result: dict = {
        "image_shape": list(info["image_shape"]), "batch_size": batch, "model": dict(cfg.model.config),
        "data_source": cfg.data.source if name == "digits" else "npz (random uint8 images)",
        "train_steps_per_round": train_steps, "input_batches_per_round": input_batches, "rounds": rounds,
        "variants": {},
    }
    timers: Dict[str, object] = {}
    fns: Dict[str, Callable[[], None]] = {}
    for variant, precision, jit in VARIANTS:
        run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision, jit_compile=jit))
        timer = _epoch_timer()
        try:
            with _policy(precision):
                model = build_model(run_cfg, info["image_shape"], info.get("num_classes"))
                model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[timer])
        except Exception as e:  # a variant that cannot run is a result, not a crash
            result["variants"][variant] = {"error": _error(e)}
            continue
        result["variants"][variant] = {"first_step_s": timer.seconds[0], "compute_dtype": model.network.compute_dtype}
        result.setdefault("parameters", int(model.network.count_params()))
        timer.seconds.clear()
        timers[variant] = timer

        def fit(model=model, timer=timer, precision=precision) -> None:
            with _policy(precision):
                model.fit(dataset, epochs=1, steps_per_epoch=train_steps, verbose=0, callbacks=[timer])

        fns[variant] = fit

    def input_only() -> None:
        for _ in dataset.take(input_batches):
            pass

    input_only()  # untimed: the cache is filled, the pipeline's threads exist
    fns["input_only"] = input_only
    timed = common.paired(fns, rounds=rounds, warmup=0)
    fns.clear()  # drops the models

    input_s = timed["input_only"]["times_s"]
    input_ips = [input_batches * batch / s for s in input_s]
    result["variants"]["input_only"] = {"images_per_s": statistics.median(input_ips), "seconds": input_s}
    plain_s = timers["plain"].seconds if "plain" in timers else None
    for variant, timer in timers.items():
        ips = [train_steps * batch / s for s in timer.seconds]
        entry = result["variants"][variant]
        entry.update(images_per_s=statistics.median(ips), epoch_s=[round(s, 6) for s in timer.seconds],
                     fit_call_s=timed[variant]["times_s"], input_over_this=common.round_ratio(input_ips, ips))
        if plain_s is not None:
            entry["speedup_vs_plain"] = common.round_ratio(plain_s, timer.seconds)
    ratios = {v: e["input_over_this"] for v, e in result["variants"].items() if "input_over_this" in e}
    if ratios:
        slowest_margin = min(ratios, key=ratios.get)
        result["input_over_training"] = {"plain": ratios.get("plain"), "min": ratios[slowest_margin],
                                         "min_variant": slowest_margin, "goal": GOAL,
                                         "passes": ratios[slowest_margin] >= GOAL}
    return result


def run(rounds: int = ROUNDS) -> dict:
    """Measure both models; returns the JSON payload (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="tfddim-bench-") as tmp:
        configs = _configs(tmp)
        models = {}
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            models[name] = _measure_model(name, cfg, rounds)
            models[name]["seconds"] = time.perf_counter() - t0
            gc.collect()
    return {"models": models, "goal_input_over_training": GOAL, "cifar_overrides": list(CIFAR_OVERRIDES),
            "not_run": {"mixed_float16": "no fast float16 CPU kernels in this TensorFlow build: "
                                         "~100x slower than float32 in a trial"}}


def _ratio(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(payload: dict) -> str:
    """The README section: one row per model and variant, then what was measured and the input/training verdict."""
    labels = {"plain": "plain", "jit_compile": "`jit_compile`", "mixed_bfloat16": "`mixed_bfloat16`",
              "input_only": "input only"}
    names = {"digits": "digits", "cifar_shaped": "CIFAR-shaped"}
    rows = []
    verdicts = []
    for name, m in payload["models"].items():
        for variant, entry in m["variants"].items():
            if "error" in entry:
                failed = "failed: " + entry["error"].replace("|", "\\|")
                rows.append([names.get(name, name), labels.get(variant, variant), failed, "–", "–", "–"])
                continue
            first = entry.get("first_step_s")
            rows.append([names.get(name, name), labels.get(variant, variant), f"{entry['images_per_s']:,.0f}",
                         _ratio(entry.get("speedup_vs_plain")), _ratio(entry.get("input_over_this")),
                         f"{first:.1f}" if first is not None else "–"])
        verdict = m.get("input_over_training")
        if verdict:
            verdicts.append(f"{names.get(name, name)} {_ratio(verdict['plain'])}× plain, "
                            f"{_ratio(verdict['min'])}× at worst ({labels.get(verdict['min_variant'])}), "
                            f"{'passes' if verdict['passes'] else 'FAILS'}")
    header = ["model", "variant", "images/s", "speed-up vs plain", "input ÷ this", "first step (trace + compile) s"]
    d, c = payload["models"].get("digits", {}), payload["models"].get("cifar_shaped", {})
    overrides = ", ".join(o.split("=", 1)[0].rsplit(".", 1)[-1] + " " + o.split("=", 1)[1] for o in payload["cifar_overrides"])
    passes = all(v["passes"] for v in (m.get("input_over_training") for m in payload["models"].values()) if v)
    text = (
        "Images/s of `DiffusionModel.fit`, timed by a Keras callback over epochs of "
        f"{d.get('train_steps_per_round')} (digits) and {c.get('train_steps_per_round')} (CIFAR-shaped) steps after a "
        "one-step warm-up fit per variant (tracing and XLA compilation: the last column), "
        f"{d.get('rounds')} interleaved rounds, medians, a fresh model per variant; digits is `digits.json` as shipped "
        f"(8×8×1, batch {d.get('batch_size')}, {d.get('parameters', 0):,} parameters), CIFAR-shaped is the "
        f"`cifar10.json` U-Net with {overrides} ({c.get('parameters', 0):,} parameters) on random uint8 32×32×3 "
        "images read by `make_dataset` from an `npz:` file (the same cache → shuffle → batch → flip → prefetch "
        "pipeline). Input only iterates the dataset object `fit` consumes, touching nothing; `mixed_float16` is not "
        "run (this TensorFlow build has no fast float16 CPU kernels: a trial was about 100× slower than float32). "
        f"Input-only over training throughput (goal ≥ {payload['goal_input_over_training']:g}): "
        + "; ".join(verdicts)
        + (": the input pipeline is not the bottleneck." if passes else ": the input pipeline IS a bottleneck.")
    )
    return common.markdown_table(header, rows) + "\n\n" + text
