"""Re-export the shipped models (``saved_models/digits/1``, ``saved_models/digits_conditional/1``) with this tfddim.

Each model's network is rebuilt from its own export (``model_config.json`` and the SavedModel's variables,
:func:`tfddim.export.saved_model.network_from_export`) and exported again in place with the options it was
exported with (spacing, clipping, final ᾱ, bundled classifier, run metadata; ONNX graphs and TF Serving warmup
requests if it had them) and ``overwrite=True``. No training run is needed, and the weights are the same bits, so
the new graph's signatures (e.g. the request checks of issue 13) come without changing a sample: the tool runs the
old and the new export on the same requests and fails if any output moved by more than 1e-5. ``MODEL_CARD.md``
lives beside the version folder and is kept.

Usage::

    python tools/reexport_shipped.py [digits digits_conditional] [--max-batch 4096]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ("digits", "digits_conditional")
TOLERANCE = 1e-5  # tests/test_pinned_outputs.py's: the same graph math, possibly another thread split


def _requests(manifest) -> dict:
    """A few requests of every signature (batch 3, a handful of steps) to compare old and new exports on."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *manifest.data_shape)).astype(np.float32)
    noise = rng.standard_normal((4, 3, *manifest.data_shape)).astype(np.float32)
    cond = {} if manifest.num_classes is None else {"labels": np.array([0, 1, 2], np.int32) % manifest.num_classes,
                                                    "guidance_scale": np.float32(2.0)}
    steps = np.int32(4)
    requests = {
        "serving_default": dict(x_T=x, num_steps=steps, eta=np.float32(1.0), seed=np.int64(7), **cond),
        "sample_with_noise": dict(x_T=x, num_steps=steps, eta=np.float32(0.5), noise=noise, **cond),
        "sample_dpmpp_2m": dict(x_T=x, num_steps=steps, **cond),
        "encode": dict(x_0=np.clip(x, -1, 1), num_steps=steps, **cond),
        "predict_x0": dict(x_t=x, t=np.array([0, 500, manifest.num_timesteps - 1], np.int32),
                           **({"labels": cond["labels"]} if manifest.conditioning.network_conditional else {})),
    }
    return {name: request for name, request in requests.items() if name in manifest.signatures}


def _outputs(loaded, requests) -> dict:
    import tensorflow as tf

    return {f"{name}/{key}": value.numpy() for name, request in requests.items()
            for key, value in loaded.signatures[name](**{k: tf.constant(v) for k, v in request.items()}).items()}


def reexport(version_dir: str, max_batch) -> float:
    """Re-export one version folder in place; return the largest output difference from before."""
    from tfddim.export import layout
    from tfddim.export.saved_model import ExportOptions, export_saved_model, network_from_export

    before = network_from_export(version_dir)
    manifest, files = before.manifest, layout.ExportLayout(version_dir)
    requests = _requests(manifest)
    old = _outputs(before.loaded, requests)
    options = ExportOptions(spacing=manifest.spacing, clip_x0=manifest.clip_x0,
                            final_alpha_cumprod=manifest.final_alpha_cumprod, max_batch=max_batch,
                            prediction_type=manifest.prediction_type)
    base, version = os.path.split(os.path.normpath(version_dir))
    path = export_saved_model(before.network, before.schedule, manifest.data_shape, base, int(version), options,
                              metadata=layout.read_metadata(version_dir), overwrite=True,
                              onnx=os.path.exists(files.onnx_manifest), warmup=os.path.exists(files.warmup_requests),
                              classifier=before.classifier)
    import tensorflow as tf

    new = _outputs(tf.saved_model.load(path), requests)
    return max(float(np.max(np.abs(new[k] - old[k]))) for k in old)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(SHIPPED), help=f"models under saved_models/ (default: {' '.join(SHIPPED)})")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="the exports' max_batch (default: ExportOptions' default; 0 for no limit)")
    args = parser.parse_args(argv)
    from tfddim.export.saved_model import DEFAULT_MAX_BATCH

    max_batch = DEFAULT_MAX_BATCH if args.max_batch is None else (None if args.max_batch == 0 else args.max_batch)
    worst = 0.0
    for name in args.names:
        version_dir = str(ROOT / "saved_models" / name / "1")
        gap = reexport(version_dir, max_batch)
        print(f"{version_dir}: re-exported; outputs moved by at most {gap:.3g} (tolerance {TOLERANCE:g})")
        worst = max(worst, gap)
    if not worst <= TOLERANCE:
        print(f"re-export changed outputs by {worst:.3g} > {TOLERANCE:g}: restore saved_models/ from git", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
