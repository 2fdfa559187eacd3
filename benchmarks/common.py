"""What every benchmark shares: paired timing, the machine description, JSON results and README tables.

Timings on shared machines drift, so every figure a benchmark reports is a
*ratio* of two things timed in one process, interleaved call by call
(A, B, A, B, ...): drift hits both sides alike. :func:`paired` returns the
median of each side and the median of the per-round ratios.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(os.path.dirname(HERE), "README.md")


def machine() -> dict:
    """The machine the numbers come from (recorded in every JSON and under the README table)."""
    import tensorflow as tf

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "tensorflow": tf.__version__, "processor": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["processor"] = names[0]
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def exported_network(path: str):
    """An export's network rebuilt in Keras with the SavedModel's weights: ``(net, schedule, export_json, loaded)``.

    :func:`tfddim.export.saved_model.network_from_export` does the work; ``export_json`` is the manifest as JSON
    values (:meth:`~tfddim.export.layout.ExportManifest.to_json`).
    """
    from tfddim.export.saved_model import network_from_export

    exported = network_from_export(path)
    return exported.network, exported.schedule, exported.manifest.to_json(), exported.loaded


def once(fn: Callable) -> float:
    """Wall time of one call, in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(fns: Dict[str, Callable], rounds: int = 5, warmup: int = 1) -> Dict[str, dict]:
    """Time each function ``rounds`` times, interleaved; return ``{name: {"median_s", "min_s", "times_s"}}``.

    ``warmup`` untimed calls of each come first (tracing, allocation, ORT session set-up).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(once(fn))
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "times_s": [round(v, 6) for v in t]}
            for name, t in times.items()}


def round_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median of the per-round ratios of two interleaved series."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def write_result(name: str, payload: dict) -> str:
    """Write ``results/<name>.json`` (with the machine and the time it ran) and return its path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    payload = dict(payload, benchmark=name, machine=machine(), ran_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=float)
    os.replace(tmp, path)
    return path


def read_result(name: str) -> dict:
    with open(os.path.join(RESULTS, f"{name}.json")) as f:
        return json.load(f)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table; floats are printed with 3 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    """Replace what lies between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in ``text``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if start not in text or end not in text:
        raise ValueError(f"README has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"
