"""Ship ADM's "unconditional model + classifier guidance" row: ``saved_models/digits_guided/1``.

The shipped unconditional digits network (rebuilt from ``saved_models/digits/1``'s own weights,
:func:`tfddim.export.saved_model.network_from_export`) is exported with a noise-aware classifier run
(``tfddim train-classifier --config digits_classifier``) bundled, SavedModel and ONNX (the guided loop's
gradient converts through :mod:`tfddim.export.onnx_gradients`). Then the ONNX graph is measured as a user
runs it: ``OnnxSampler.sample_with_noise`` at η = 0, S = 50, N samples with labels i mod 10, every scale
from the same x_T, scored with the *evaluation* classifier (``saved_models/digits_classifier``): accuracy
against the requested label, FID against the real digits, and the SavedModel's max |Δ| to ONNX Runtime.

    python tools/export_guided.py runs/digits_classifier [--n 500] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SCALES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("classifier_run")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "saved_models", "digits_guided"))
    args = parser.parse_args(argv)

    from tfddim import export
    from tfddim.evaluation import features, metrics
    from tfddim.export.saved_model import network_from_export
    from tfddim.pipelines import evaluate
    from tfddim.runs import RunDir
    from tfddim.runtime import OnnxSampler, SavedModelSampler

    source = network_from_export(os.path.join(ROOT, "saved_models", "digits", "1"))
    classifier_run = RunDir(args.classifier_run)
    classifier = classifier_run.load_classifier()
    m = source.manifest
    options = export.ExportOptions(spacing=m.spacing, clip_x0=m.clip_x0, final_alpha_cumprod=m.final_alpha_cumprod,
                                   prediction_type=m.prediction_type, max_batch=m.max_batch)
    metadata = {"network": "saved_models/digits/1 (the shipped unconditional digits model, same weights)",
                "classifier_run": classifier_run.read_metadata()}
    start = time.perf_counter()
    path = export.export_saved_model(source.network, source.schedule, m.data_shape, args.out, 1, options,
                                     metadata=metadata, overwrite=args.overwrite, onnx=True, classifier=classifier)
    export_s = time.perf_counter() - start
    print(f"exported {path} with ONNX in {export_s:.0f} s", flush=True)

    onnx_s, tf_s = OnnxSampler(path), SavedModelSampler(path)
    net = features.DigitsFeatureNet(evaluate.DEFAULT_CLASSIFIER)
    real, _ = evaluate.real_data({"source": "digits"}, "all")
    real_features = net.features(real, batch_size=len(real))
    n = args.n
    x = onnx_s.starting_noise(n, seed=0)
    labels = (np.arange(n) % 10).astype(np.int32)
    empty = np.zeros((0, n, *m.data_shape), np.float32)
    rows = []
    for s in SCALES:
        t0 = time.perf_counter()
        x0 = onnx_s.sample_with_noise(x, args.steps, 0.0, empty, labels=labels, guidance_scale=s)
        seconds = time.perf_counter() - t0
        gap = float(np.max(np.abs(tf_s.sample_with_noise(x[:16], args.steps, 0.0, empty[:, :16], labels=labels[:16],
                                                        guidance_scale=s) - x0[:16])))
        x0 = np.clip(x0, -1, 1)
        accuracy = float(metrics.class_accuracy(net.logits(x0), labels))
        fid = float(metrics.fid(net.features(x0, batch_size=n), real_features))
        rows.append({"scale": s, "accuracy": accuracy, "fid": fid, "onnx_vs_savedmodel": gap, "onnx_seconds": seconds})
        print(f"s = {s:g}: accuracy {accuracy:.3f}, FID {fid:.2f}, |ONNX - SavedModel| {gap:.1e}, {seconds:.1f} s",
              flush=True)
    result = {"n": n, "steps": args.steps, "export_seconds": export_s, "rows": rows}
    with open(os.path.join(args.out, "measurements.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
