"""``make bench``: run every benchmark, write ``benchmarks/results/<name>.json``, refresh the README tables.

    python -m benchmarks.run                 # all of them
    python -m benchmarks.run sampler memory  # some of them (the README keeps the others' last tables)
    python -m benchmarks.run --report        # only re-render the README from the stored JSON

Each benchmark module has ``run() -> dict`` (the JSON payload) and
``table(payload) -> str`` (its README section, between
``<!-- bench:NAME -->`` markers).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

BENCHMARKS = ("sampler", "serving", "training", "quality", "nfe", "memory")


def render_readme(names=BENCHMARKS) -> None:
    with open(common.README) as f:
        text = f.read()
    for name in names:
        try:
            payload = common.read_result(name)
        except FileNotFoundError:
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        body = module.table(payload) + f"\n\n<sub>{_machine_line(payload)}</sub>"
        text = common.replace_section(text, name, body)
    tmp = common.README + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, common.README)


def _machine_line(payload) -> str:
    m = payload["machine"]
    return (f"Measured {payload['ran_at']} on {m['processor']}, {m['cpus']} CPUs, {m.get('memory_gib', '?')} GiB, "
            f"TensorFlow {m['tensorflow']}, ONNX Runtime {m.get('onnxruntime', '-')}; "
            f"`make bench` wrote `benchmarks/results/{payload['benchmark']}.json` in {payload['seconds']:.0f} s.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=[], help=f"benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--report", action="store_true", help="only re-render the README from the stored JSON")
    args = parser.parse_args(argv)
    names = tuple(args.names) or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if not args.report:
        total = time.perf_counter()
        for name in names:
            start = time.perf_counter()
            print(f"== benchmark {name}", flush=True)
            payload = importlib.import_module(f"benchmarks.{name}").run()
            payload["seconds"] = time.perf_counter() - start
            print(f"== {name}: {payload['seconds']:.0f} s -> {common.write_result(name, payload)}", flush=True)
        print(f"== all benchmarks: {time.perf_counter() - total:.0f} s")
    render_readme(names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
