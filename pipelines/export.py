"""Export a training run as a TF Serving SavedModel: ``tfddim export RUN_DIR --name NAME [--version N]``.

Reads ``RUN_DIR/model.keras`` (the EMA network), ``schedule.json``,
``config.json`` (its ``sampling`` section: spacing and x̂₀ clipping are baked
in) and ``metadata.json``, and writes ``saved_models/NAME/N/`` atomically
(:func:`tfddim.export.export_saved_model`); with ``--onnx`` also ``onnx/``
(tf2onnx graphs of ``sample_with_noise`` and ``encode``).
"""

from __future__ import annotations

import json
import os
import sys


def run(run_dir: str, name: str, version: int = 1, base_dir: str = "saved_models", overwrite: bool = False,
        onnx: bool = False, classifier_run: str = None) -> str:
    import keras

    import tfddim.models  # noqa: F401  (registers the networks for load_model)
    from tfddim import export
    from tfddim.diffusion.schedules import Schedule

    def read(fname):
        path = os.path.join(run_dir, fname)
        if not os.path.exists(path):
            raise ValueError(f"{run_dir} is not a finished training run: {fname} is missing")
        with open(path) as f:
            return json.load(f)

    schedule = Schedule.from_config(read("schedule.json"))
    config, metadata = read("config.json"), read("metadata.json")
    sampling_cfg = config.get("sampling", {})
    spacing = sampling_cfg.get("spacing", "uniform")
    if spacing not in ("uniform", "linspace", "trailing"):
        # The graph computes its timesteps from num_steps; quad and section strings cannot be.
        print(f"tfddim export: the run samples with spacing {spacing!r}, which a graph cannot compute from "
              "num_steps; the export uses 'uniform' (recorded in assets.extra/export.json)")
        spacing = "uniform"
    options = export.ExportOptions(spacing=spacing, clip_x0=sampling_cfg.get("clip_x0"))
    network = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    classifier = None
    if classifier_run is not None:  # bundle a noise-aware classifier: the loops use classifier guidance
        path = os.path.join(classifier_run, "model.keras")
        if not os.path.exists(path):
            raise ValueError(f"{classifier_run} is not a finished classifier run: model.keras is missing")
        classifier = keras.models.load_model(path)
        if not hasattr(classifier, "log_prob_fn"):
            raise ValueError(f"{classifier_run} does not hold a NoisyClassifier")
    path = export.export_saved_model(
        network, schedule, metadata["data"]["image_shape"], os.path.join(base_dir, name), version,
        options=options, metadata=dict(metadata, run_config=config), overwrite=overwrite, onnx=onnx, classifier=classifier,
    )
    with open(os.path.join(path, "assets.extra", "export.json")) as f:
        signatures = json.load(f)["signatures"]
    print(f"tfddim export: SavedModel at {path} (signatures: {', '.join(signatures)})")
    if onnx:
        from tfddim.export.onnx import ONNX_SIGNATURES

        print(f"tfddim export: ONNX graphs at {os.path.join(path, 'onnx')} ({', '.join(s + '.onnx' for s in ONNX_SIGNATURES)}), "
              "checked against the SavedModel in ONNX Runtime")
    return path


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
