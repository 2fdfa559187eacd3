"""Export a training run as a TF Serving SavedModel: ``tfddim export RUN_DIR --name NAME [--version N]``.

Reads ``RUN_DIR/model.keras`` (the EMA network), ``schedule.json``,
``config.json`` (its ``sampling`` section: spacing and x̂₀ clipping are baked
in; ``diffusion.prediction_type``: what the network outputs, recorded in the
manifest) and ``metadata.json``, and writes ``saved_models/NAME/N/`` atomically. A latent diffusion
run (``diffusion.autoencoder``) is exported with its autoencoder's decoder and encoder in the graph
(:mod:`tfddim.export.latent`): the autoencoder run must still hold the weights the model was trained on
(its weights digest, recorded in the run's metadata, is checked)
(:func:`tfddim.export.export_saved_model`); with ``--onnx`` also ``onnx/``
(tf2onnx graphs of ``sample_with_noise`` and ``encode``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The options of ``tfddim export RUN_DIR --name NAME``.

    Attributes:
        run_dir: a finished training run folder, e.g. ``runs/digits``.
        name: the model name: the folder under ``base_dir``.
        version: the integer version folder; >= 1.
        base_dir: where models live.
        overwrite: replace an existing version.
        onnx: also write the ONNX graphs to ``VERSION/onnx/``, checked in ONNX Runtime.
        classifier_run: a noise-aware classifier run to bundle (the loops then use classifier guidance).
        xla: compile the network with XLA inside the SavedModel (:class:`tfddim.export.ExportOptions`).
        upsample_strength: a super-resolution run: start ``serving_default``/``sample_with_noise`` (and a cascade's
            upsampler) from the noised bilinear upsampling of ``low_res`` at this SDEdit strength
            (:class:`tfddim.export.ExportOptions`); None: 1 (pure noise).
        cascade_base_run: export a two-stage cascade (:mod:`tfddim.export.cascade`): this run is the base
            stage and ``run_dir`` (a super-resolution run) the upsampler, in one graph.
    """

    run_dir: str
    name: str
    version: int = 1
    base_dir: str = "saved_models"
    overwrite: bool = False
    onnx: bool = False
    classifier_run: Optional[str] = None
    xla: bool = False
    cascade_base_run: Optional[str] = None
    upsample_strength: Optional[float] = None

    def __post_init__(self):
        if not self.name:
            raise ValueError(f"name must be a non-empty model name, got {self.name!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"version must be an integer >= 1, got {self.version!r}")
        if self.cascade_base_run is not None and (self.classifier_run is not None or self.xla):
            raise ValueError("a cascade export takes neither a classifier run nor xla")


def _export_options(config: dict, upsample_strength=None):
    """The sampling choices of the run's ``sampling`` section that the graph bakes in, and its network's
    ``diffusion.prediction_type``."""
    from tfddim import export

    sampling_cfg = config.get("sampling", {})
    spacing = sampling_cfg.get("spacing", "uniform")
    if spacing not in ("uniform", "linspace", "trailing"):
        # The graph computes its timesteps from num_steps; quad and section strings cannot be.
        print(f"tfddim export: the run samples with spacing {spacing!r}, which a graph cannot compute from "
              "num_steps; the export uses 'uniform' (recorded in assets.extra/export.json)")
        spacing = "uniform"
    # the network's target: a run written before diffusion.prediction_type existed (or at its default) trained epsilon
    prediction_type = config.get("diffusion", {}).get("prediction_type", "epsilon")
    # a super-resolution run: the low-res size its data paired it with, sampled as a clean image (low_res_t = 0)
    low_res_size = config.get("data", {}).get("low_res_size")
    return export.ExportOptions(spacing=spacing, clip_x0=sampling_cfg.get("clip_x0"), prediction_type=prediction_type,
                                low_res_size=low_res_size,
                                upsample_strength=1.0 if upsample_strength is None else upsample_strength)


def run(cfg: ExportConfig) -> str:
    """Export ``cfg.run_dir`` to ``<base_dir>/<name>/<version>/``; returns that path."""
    from tfddim import export
    from tfddim.runs import RunDir

    if cfg.cascade_base_run is not None:
        return _run_cascade(cfg)
    run_dir = RunDir(cfg.run_dir)
    schedule = run_dir.read_schedule()
    config, metadata = run_dir.read_config(), run_dir.read_metadata()
    options = dataclasses.replace(_export_options(config, cfg.upsample_strength), xla=bool(cfg.xla))
    network = run_dir.load_network()
    # bundle a noise-aware classifier: the loops use classifier guidance
    classifier = None if cfg.classifier_run is None else RunDir(cfg.classifier_run).load_classifier()
    autoencoder, scale_factor = _first_stage(config, metadata)
    onnx = cfg.onnx
    path = export.export_saved_model(
        network, schedule, metadata["data"]["image_shape"], os.path.join(cfg.base_dir, cfg.name), cfg.version,
        options=options, metadata=dict(metadata, run_config=config), overwrite=cfg.overwrite, onnx=onnx,
        classifier=classifier, autoencoder=autoencoder, scale_factor=scale_factor,
    )
    from tfddim.export import layout

    print(f"tfddim export: SavedModel at {path} (signatures: {', '.join(layout.read_manifest(path).signatures)})")
    if onnx:
        graphs = layout.read_onnx_manifest(path).graphs
        print(f"tfddim export: ONNX graphs at {layout.ExportLayout(path).onnx_dir} "
              f"({', '.join(g.file for g in graphs.values())}), checked against the SavedModel in ONNX Runtime")
    return path


def _first_stage(config: dict, metadata: dict):
    """``(autoencoder, scale_factor)`` of a latent diffusion run, or ``(None, None)``; a ``ValueError`` if the
    autoencoder run's weights are not the ones the model trained on."""
    path = config.get("diffusion", {}).get("autoencoder")
    if path is None:
        return None, None
    from tfddim.evaluation.features import weights_digest
    from tfddim.runs import RunDir

    autoencoder, scale = RunDir(path).load_first_stage()
    trained = metadata.get("autoencoder", {})
    if trained.get("weights") not in (None, weights_digest(autoencoder)) or trained.get("scale_factor") not in (None, scale):
        raise ValueError(f"diffusion.autoencoder {path}: its weights or scale_factor changed since this model was "
                         "trained on its latents; export with the autoencoder run it was trained with")
    return autoencoder, scale


def _run_cascade(cfg: ExportConfig) -> str:
    """The base run and the upsampler run (``run_dir``) as one cascade export (:func:`tfddim.export.cascade.export_cascade`)."""
    from tfddim.export import cascade, layout
    from tfddim.runs import RunDir

    base, up = RunDir(cfg.cascade_base_run), RunDir(cfg.run_dir)
    metadata = {"base": dict(base.read_metadata(), run_config=base.read_config()),
                "upsampler": dict(up.read_metadata(), run_config=up.read_config())}
    path = cascade.export_cascade(base.load_network(), base.read_schedule(), up.load_network(), up.read_schedule(),
                                  os.path.join(cfg.base_dir, cfg.name), cfg.version,
                                  base_options=_export_options(base.read_config()),
                                  up_options=_export_options(up.read_config(), cfg.upsample_strength), metadata=metadata,
                                  overwrite=cfg.overwrite, onnx=cfg.onnx)
    print(f"tfddim export: cascade SavedModel at {path} (signatures: {', '.join(layout.read_manifest(path).signatures)})")
    return path


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
