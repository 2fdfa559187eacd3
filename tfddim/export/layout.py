"""The one owner of an export's on-disk layout: every file name, and the ``export.json`` / ``onnx.json`` schemas.

No TensorFlow here (json, hashlib, os, dataclasses and the TF-free enums of
:mod:`tfddim.diffusion`): a client can read what an export is before deciding
to load it. Writers (:mod:`tfddim.export.saved_model`, :mod:`tfddim.export.onnx`,
:mod:`tfddim.export.warmup`) and readers (:mod:`tfddim.runtime`, the benchmarks,
``tfddim export``) go through the names and functions below, never through
their own copies of the file names.

Why one module of ~600 lines: it owns one format whole (the names, the schema with a
check per key whose error names it, and the reader of format 1, the shipped exports).
Splitting the schema from the names would give the format two owners again.

The tree (:class:`ExportLayout` of ``saved_models/<name>/<version>``)::

    <version>/
        saved_model.pb, variables/          TensorFlow's own (tf.saved_model.save)
        assets.extra/                       TF Serving copies it untouched
            export.json                     ExportManifest: what the graph bakes in (table below)
            schedule.json                   the Schedule's config (float64 betas); its sha256 is in export.json
            model_config.json               {"class_name", "config"} of the network (tfddim.models.build)
            classifier_config.json          the same for a bundled guidance classifier (classifier guidance only)
            metadata.json                   the training run's metadata (free-form)
            tf_serving_warmup_requests      TF Serving warmup PredictionLogs (with tensorflow-serving-api)
        onnx/                               with ``--onnx``; TF Serving ignores it
            onnx.json                       OnnxManifest: graphs, their inputs/outputs, opset, the export.json
            <signature>.onnx                one graph per converted signature

``export.json`` (:class:`ExportManifest`; format 2):

======================== ================================== ===================================================
key                      JSON value                         meaning
======================== ================================== ===================================================
``format_version``       ``2``                              this schema; absent = format 1 (below)
``tfddim_version``       str or null                        ``tfddim.__version__`` that wrote it (null: upgraded
                                                            from format 1)
``signatures``           sorted [str]                       the SavedModel's signature names
``methods``              {signature: str}                   the solver each signature runs: ``ddim`` (η input;
                                                            η = 1 is DDPM with β̃), ``dpmpp_2m``, ``ode``
                                                            (``sample_ode``'s pick), ``ddpm`` (``sample_ddpm``),
                                                            ``ddim_inversion`` (``encode``), ``network``
                                                            (``predict_x0``: one network call)
``spacing``              a named spacing (``uniform``,        :class:`~tfddim.diffusion.spacing.Spacing` of the
                         ``trailing``, ...)                 in-graph timesteps (``GRAPH_SPACINGS``)
``clip_x0``              null or [lo, hi]                   x̂₀ clipping
``final_alpha_cumprod``  ``one``/``alpha_0``                :class:`~tfddim.diffusion.kinds.FinalAlpha`
``prediction_type``      ``epsilon``/``sample``/            :class:`~tfddim.diffusion.kinds.Prediction` of the
                         ``v_prediction``                   network
``learned_variance``     bool                               the network returns 2C channels (improved DDPM)
``conditioning``         {"kind", "num_classes",            ``kind``: null, ``classifier_free`` (null label
                         "null_label",                      ``null_label``) or ``classifier`` (a bundled noise-
                         "network_conditional"}             aware classifier); ``network_conditional``: the
                                                            network itself takes labels (``predict_x0`` does)
``num_classes``          int or null                        = ``conditioning.num_classes`` (kept for programs
                                                            written against format 1)
``data_shape``           [H, W, C]                          one sample's shape
``num_timesteps``        int                                T of the schedule
``schedule_sha256``      64 hex digits or null              sha256 of ``schedule.json``'s canonical JSON
                                                            (:func:`schedule_sha256`); checked on reading (null:
                                                            upgraded from format 1 without its schedule)
``max_batch``            int >= 1 or null                   the largest batch B of one request, checked in the
                                                            graph and by :mod:`tfddim.runtime` (null: no limit;
                                                            absent in format 1 and in format-2 files written
                                                            before it existed, which read as null)
``ode_methods``          [str] or null                      the solvers ``sample_ode``'s ``method`` input picks:
                                                            ``method = i`` runs ``ode_methods[i]`` (null: no
                                                            ``sample_ode``; absent before it existed)
``ode_spacings``         [str] or null                      the spacings ``sample_ode``'s ``spacing`` input picks,
                                                            by index as ``ode_methods``
``ddpm_variances``       [str] or null                      the DDPM variances ``sample_ddpm``'s ``variance`` input
                                                            picks, by index (``fixed_small``, ``fixed_large``,
                                                            ``learned_range`` for a learned-variance network)
``xla``                  bool                               the network is compiled with XLA inside the
                                                            SavedModel (``jit_compile``; absent reads as false)
``low_res_shape``        [h, w, C] or null                  a super-resolution export: every signature takes
                                                            ``low_res`` [B, h, w, C] (null: none; absent before)
``low_res_t``            int or null                        the noise-augmentation timestep the network is told
                                                            ``low_res`` carries (0: a clean image)
``upsample_strength``    float in (0, 1] or null            ``serving_default``/``sample_with_noise`` of a
                                                            super-resolution export start from the bilinear
                                                            upsampling of ``low_res`` noised to this SDEdit
                                                            strength (1: from pure noise)
``cascade``              object or null                     a two-stage cascade (:mod:`tfddim.export.cascade`):
                                                            the base stage's ``data_shape``, ``num_timesteps``,
                                                            ``spacing``, ``clip_x0``, ``prediction_type``,
                                                            ``schedule`` and ``model_config``, and the
                                                            upsampler's ``low_res_t``; the other keys describe
                                                            the upsampler
``latent``               object or null                     a latent diffusion export (:mod:`tfddim.export.latent`):
                                                            ``pixel_shape`` [H, W, C] of the decoded images,
                                                            ``scale_factor`` (latents are E(x)·scale_factor) and
                                                            the autoencoder's ``model_config``; ``data_shape`` is
                                                            the latent's; ``x_0`` and ``mask`` inputs and ``x_0``
                                                            outputs are pixels, ``z_0`` outputs latents
======================== ================================== ===================================================

Format versions of ``export.json``:

- **1** (no ``format_version``; the shipped ``saved_models/digits*/1``): ``spacing``, ``clip_x0``,
  ``final_alpha_cumprod``, ``data_shape``, ``num_classes``, ``signatures`` and two prose fields,
  ``method`` and ``guidance``. :func:`read_manifest` converts it to the same :class:`ExportManifest`
  (``format_version`` 1): conditioning from ``num_classes`` and the prose ``guidance``, methods from
  the signatures (format 1 knew only the five of today's table), prediction ``epsilon``, ``learned_variance``
  and ``network_conditional`` from ``model_config.json``, T and the hash from ``schedule.json``.
- **2**: the table above (``max_batch`` was added later without a new format number: it is optional on
  reading, and an export without it checks no maximum batch). Only format 2 is written (:meth:`ExportManifest.to_json` writes a manifest
  read from format 1 upgraded; its ``format_version`` attribute still says 1, where it came from).

``onnx/onnx.json`` (:class:`OnnxManifest`) keeps its format ``tfddim-onnx/1``: ``opset``,
``converter``, ``num_timesteps``, ``graphs`` ({signature: {"file", "inputs", "outputs"}}),
``noise`` (a note) and ``export`` (the export.json above, either format), so an ``onnx/``
folder is readable on its own.

Values are parsed to enums once, here; a wrong value is a ``ValueError`` naming the file and
key (``export.json: spacing: ...``).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from tfddim.diffusion.kinds import FinalAlpha, Prediction, parse_kind
from tfddim.diffusion.spacing import GRAPH_SPACINGS, Spacing

__all__ = [
    "ASSETS_DIR", "EXPORT_JSON", "SCHEDULE_JSON", "MODEL_CONFIG_JSON", "CLASSIFIER_CONFIG_JSON", "METADATA_JSON",
    "WARMUP_REQUESTS", "ONNX_DIR", "ONNX_MANIFEST", "SAVED_MODEL_PB", "FORMAT_VERSION", "ONNX_FORMAT", "IMAGE_INPUTS",
    "PIXEL_INPUTS", "LatentStage",
    "input_shape",
    "ExportLayout", "GuidanceKind", "ExportConditioning", "ExportManifest", "OnnxGraph", "OnnxManifest",
    "schedule_sha256", "write_json", "write_export_assets", "write_manifest", "read_manifest",
    "read_schedule_config", "read_model_config", "read_classifier_config", "read_metadata", "onnx_folder", "write_onnx_manifest", "read_onnx_manifest",
]

# ------------------------------------------------------------------ names
SAVED_MODEL_PB = "saved_model.pb"
ASSETS_DIR = "assets.extra"
EXPORT_JSON = "export.json"
SCHEDULE_JSON = "schedule.json"
MODEL_CONFIG_JSON = "model_config.json"
CLASSIFIER_CONFIG_JSON = "classifier_config.json"
METADATA_JSON = "metadata.json"
WARMUP_REQUESTS = "tf_serving_warmup_requests"
ONNX_DIR = "onnx"
ONNX_MANIFEST = "onnx.json"
ONNX_SUFFIX = ".onnx"

FORMAT_VERSION = 2
ONNX_FORMAT = "tfddim-onnx/1"
ONNX_NOISE_NOTE = "sample_with_noise takes noise [S, B, H, W, C]; for eta = 0 an empty noise [0, B, H, W, C] stands for zeros"

# Format 1 wrote exactly these signatures; the solver each ran is history and never changes.
_FORMAT1_METHODS = {"serving_default": "ddim", "sample_with_noise": "ddim", "sample_dpmpp_2m": "dpmpp_2m",
                    "encode": "ddim_inversion", "predict_x0": "network"}
# Format-2 keys added after format 2 was first written: absent, they read as None.
_OPTIONAL_KEYS = ("max_batch", "ode_methods", "ode_spacings", "ddpm_variances", "xla", "low_res_shape", "low_res_t",
                  "upsample_strength", "cascade", "latent")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class ExportLayout:
    """The paths of one export version folder (nothing is read or created here).

    Args:
        version_dir: ``saved_models/<name>/<version>``.
    """

    version_dir: str

    @property
    def saved_model_pb(self) -> str:
        return os.path.join(self.version_dir, SAVED_MODEL_PB)

    @property
    def assets_dir(self) -> str:
        return os.path.join(self.version_dir, ASSETS_DIR)

    @property
    def export_json(self) -> str:
        return os.path.join(self.assets_dir, EXPORT_JSON)

    @property
    def schedule_json(self) -> str:
        return os.path.join(self.assets_dir, SCHEDULE_JSON)

    @property
    def model_config_json(self) -> str:
        return os.path.join(self.assets_dir, MODEL_CONFIG_JSON)

    @property
    def classifier_config_json(self) -> str:
        return os.path.join(self.assets_dir, CLASSIFIER_CONFIG_JSON)

    @property
    def metadata_json(self) -> str:
        return os.path.join(self.assets_dir, METADATA_JSON)

    @property
    def warmup_requests(self) -> str:
        return os.path.join(self.assets_dir, WARMUP_REQUESTS)

    @property
    def onnx_dir(self) -> str:
        return os.path.join(self.version_dir, ONNX_DIR)

    @property
    def onnx_manifest(self) -> str:
        return os.path.join(self.onnx_dir, ONNX_MANIFEST)

    def onnx_graph(self, signature: str) -> str:
        """``onnx/<signature>.onnx``."""
        return os.path.join(self.onnx_dir, onnx_graph_file(signature))


# The image input of each signature (``x_T``, ``x_0`` of ``encode``, ``x_t`` of ``predict_x0``, ``z_0`` of a latent
# export's ``decode``), and the inputs shaped like it (``inpaint``'s ``mask``, ``edit_with_noise``'s ``start_noise``).
IMAGE_INPUTS = ("x_T", "x_0", "x_t", "mask", "start_noise", "z_0")
# A latent export's inputs that are pixels [B, *pixel_shape]; its other image inputs are latents [B, *data_shape].
PIXEL_INPUTS = ("x_0", "mask")


def input_shape(name: str, data_shape, low_res_shape=None, cascade_shape=None, pixel_shape=None) -> list:
    """The shape a signature input must have (None: any size): images [B, H, W, C], ``noise`` [S, B, H, W, C],
    ``low_res`` [B, h, w, C] (``low_res_shape``), ``labels`` and ``t`` [B], everything else a scalar; in a
    latent export (``pixel_shape``) ``x_0`` and ``mask`` are pixels [B, *pixel_shape].

    The SavedModel declares its inputs with unknown shapes and checks these in the graph
    (:mod:`tfddim.export.saved_model`); the ONNX graphs declare them (:mod:`tfddim.export.onnx`).
    """
    data_shape = [int(d) for d in data_shape]
    if pixel_shape is not None and name in PIXEL_INPUTS:
        return [None, *[int(d) for d in pixel_shape]]
    if cascade_shape is not None:  # a cascade: x_T and noise are the base stage's, the *_upsample ones the output's
        if name in ("x_T_upsample", "noise_upsample"):
            return input_shape(name[: -len("_upsample")], data_shape)
        if name in ("x_T", "noise"):
            return input_shape(name, cascade_shape)
    if name in IMAGE_INPUTS:
        return [None, *data_shape]
    if name == "noise":
        return [None, None, *data_shape]
    if name == "low_res":
        if low_res_shape is None:
            raise ValueError("low_res_shape is needed for the low_res input of a super-resolution export")
        return [None, *[int(d) for d in low_res_shape]]
    if name in ("labels", "t"):
        return [None]
    return []


def onnx_graph_file(signature: str) -> str:
    """The file name of a signature's ONNX graph (relative to ``onnx/``)."""
    return f"{signature}{ONNX_SUFFIX}"


def _as_layout(where) -> ExportLayout:
    return where if isinstance(where, ExportLayout) else ExportLayout(str(where))


# ------------------------------------------------------------------ checks (each error names the key)
def _fail(where: str, key: str, message: str):
    raise ValueError(f"{where}: {key}: {message}")


def _enum(cls, value, where: str, key: str):
    try:
        return parse_kind(cls, value, key)
    except ValueError as e:
        _fail(where, key, str(e))


def _optional_int(value, where: str, key: str, minimum: int = 0) -> Optional[int]:
    if value is None:
        return None
    return _int(value, where, key, minimum)


def _int(value, where: str, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(where, key, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _bool(value, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        _fail(where, key, f"must be true or false, got {value!r}")
    return value


def _clip(value, where: str, key: str = "clip_x0") -> Optional[Tuple[float, float]]:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        _fail(where, key, f"must be null or [low, high], got {value!r}")
    if not low < high:
        _fail(where, key, f"must have low < high, got {value!r}")
    return (low, high)


def _shape(value, where: str, key: str = "data_shape") -> Tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        _fail(where, key, f"must be a non-empty list of positive integers, got {value!r}")
    return tuple(_int(d, where, key, 1) for d in value)


def _optional_strength(value, where: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        _fail(where, "upsample_strength", f"must be a number in (0, 1] or null, got {value!r}")
    return float(value)


def _signatures(value, where: str, key: str = "signatures") -> Tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and _NAME.match(s) for s in value):
        _fail(where, key, f"must be a list of signature names, got {value!r}")
    return tuple(sorted(value))


def _spacing(value, where: str) -> Spacing:
    spacing = _enum(Spacing, value, where, "spacing")
    if spacing not in GRAPH_SPACINGS:
        _fail(where, "spacing", f"{spacing.value!r} cannot be computed in a graph; use one of "
                                f"{[s.value for s in GRAPH_SPACINGS]}")
    return spacing


def _methods(methods, signatures, where: str) -> Dict[str, str]:
    if not isinstance(methods, Mapping) or not all(isinstance(v, str) and _NAME.match(v) for v in methods.values()):
        _fail(where, "methods", f"must map signature names to method names, got {methods!r}")
    if set(methods) != set(signatures):
        _fail(where, "methods", f"must name a method for exactly the signatures {list(signatures)}, got {sorted(methods)}")
    return {k: methods[k] for k in sorted(methods)}


def _names(value, where: str, key: str) -> Optional[Tuple[str, ...]]:
    """An optional non-empty list of distinct lower-case names (``ode_methods``, ``ode_spacings``)."""
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or not value or len(set(value)) != len(value)
            or not all(isinstance(v, str) and _NAME.match(v) for v in value)):
        _fail(where, key, f"must be null or a non-empty list of distinct names, got {value!r}")
    return tuple(value)


def _set(frozen, **values) -> None:
    """Store parsed values on a frozen dataclass (from its ``__post_init__``)."""
    for key, value in values.items():
        object.__setattr__(frozen, key, value)


def _require(data: Mapping, key: str, where: str):
    if key not in data:
        _fail(where, key, "is missing")
    return data[key]


# ------------------------------------------------------------------ the manifest
class GuidanceKind(str, enum.Enum):
    """How the export's loops use labels: classifier-free guidance or a bundled classifier's gradient."""

    CLASSIFIER_FREE = "classifier_free"
    CLASSIFIER = "classifier"


@dataclasses.dataclass(frozen=True)
class ExportConditioning:
    """What the exported signatures are conditioned on (``export.json: conditioning``).

    Attributes:
        kind: None (unconditional), :attr:`GuidanceKind.CLASSIFIER_FREE` or :attr:`GuidanceKind.CLASSIFIER`.
        num_classes: the label range [0, num_classes) of the ``labels`` inputs (None when unconditional).
        null_label: the label of the unconditional branch (classifier-free guidance only).
        network_conditional: the network itself takes labels (``predict_x0`` has a ``labels`` input).
    """

    kind: Optional[GuidanceKind] = None
    num_classes: Optional[int] = None
    null_label: Optional[int] = None
    network_conditional: bool = False

    def __post_init__(self):
        where, key = EXPORT_JSON, "conditioning"
        kind = None if self.kind is None else _enum(GuidanceKind, self.kind, where, f"{key}.kind")
        _set(self, kind=kind, num_classes=_optional_int(self.num_classes, where, f"{key}.num_classes", 1),
             null_label=_optional_int(self.null_label, where, f"{key}.null_label", 0),
             network_conditional=_bool(self.network_conditional, where, f"{key}.network_conditional"))
        if kind is None and (self.num_classes, self.null_label, self.network_conditional) != (None, None, False):
            _fail(where, key, "an unconditional export has no num_classes, null_label or network_conditional")
        if kind is not None and self.num_classes is None:
            _fail(where, f"{key}.num_classes", f"a {kind.value} export needs num_classes")
        if kind is GuidanceKind.CLASSIFIER_FREE and (self.null_label is None or not self.network_conditional):
            _fail(where, key, "classifier-free guidance needs a null_label and a network that takes labels")
        if kind is GuidanceKind.CLASSIFIER and self.null_label is not None:
            _fail(where, f"{key}.null_label", "classifier guidance has no null label")

    def to_json(self) -> dict:
        return {"kind": None if self.kind is None else self.kind.value, "num_classes": self.num_classes,
                "null_label": self.null_label, "network_conditional": self.network_conditional}

    @classmethod
    def from_json(cls, data, where: str = EXPORT_JSON) -> "ExportConditioning":
        keys = ("kind", "num_classes", "null_label", "network_conditional")
        if not isinstance(data, Mapping) or set(data) != set(keys):
            _fail(where, "conditioning", f"must be an object with keys {list(keys)}, got {data!r}")
        return cls(**{k: data[k] for k in keys})


@dataclasses.dataclass(frozen=True)
class CascadeStage:
    """``export.json: cascade``: the base stage of a two-stage cascade export (:mod:`tfddim.export.cascade`)."""

    data_shape: Tuple[int, ...]
    num_timesteps: int
    spacing: str
    clip_x0: Optional[Tuple[float, float]]
    prediction_type: str
    low_res_t: int
    schedule: Mapping
    model_config: Mapping

    def __post_init__(self):
        where, key = EXPORT_JSON, "cascade"
        _set(self, data_shape=_shape(self.data_shape, where, f"{key}.data_shape"),
             num_timesteps=_int(self.num_timesteps, where, f"{key}.num_timesteps", 1),
             spacing=_spacing(self.spacing, where).value, clip_x0=_clip(self.clip_x0, where),
             prediction_type=_enum(Prediction, self.prediction_type, where, f"{key}.prediction_type").value,
             low_res_t=_int(self.low_res_t, where, f"{key}.low_res_t", 0))
        for name in ("schedule", "model_config"):
            if not isinstance(getattr(self, name), Mapping):
                _fail(where, f"{key}.{name}", f"must be an object, got {getattr(self, name)!r}")

    def to_json(self) -> dict:
        return {"data_shape": list(self.data_shape), "num_timesteps": self.num_timesteps, "spacing": self.spacing,
                "clip_x0": None if self.clip_x0 is None else list(self.clip_x0), "prediction_type": self.prediction_type,
                "low_res_t": self.low_res_t, "schedule": dict(self.schedule), "model_config": dict(self.model_config)}

    @classmethod
    def from_json(cls, data) -> "CascadeStage":
        keys = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, Mapping) or set(data) != set(keys):
            _fail(EXPORT_JSON, "cascade", f"must be an object with keys {keys}, got {data!r}")
        return cls(**{k: data[k] for k in keys})


@dataclasses.dataclass(frozen=True)
class LatentStage:
    """``export.json: latent``: the autoencoder of a latent diffusion export (:mod:`tfddim.export.latent`)."""

    pixel_shape: Tuple[int, ...]
    scale_factor: float
    model_config: Mapping

    def __post_init__(self):
        where, key = EXPORT_JSON, "latent"
        scale = self.scale_factor
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            _fail(where, f"{key}.scale_factor", f"must be a finite number > 0, got {scale!r}")
        if not isinstance(self.model_config, Mapping):
            _fail(where, f"{key}.model_config", f"must be an object, got {self.model_config!r}")
        _set(self, pixel_shape=_shape(self.pixel_shape, where, f"{key}.pixel_shape"), scale_factor=float(scale))

    def to_json(self) -> dict:
        return {"pixel_shape": list(self.pixel_shape), "scale_factor": self.scale_factor,
                "model_config": dict(self.model_config)}

    @classmethod
    def from_json(cls, data) -> "LatentStage":
        keys = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, Mapping) or set(data) != set(keys):
            _fail(EXPORT_JSON, "latent", f"must be an object with keys {keys}, got {data!r}")
        return cls(**{k: data[k] for k in keys})


@dataclasses.dataclass(frozen=True)
class ExportManifest:
    """``assets.extra/export.json``: what an exported sampler bakes in (the module docstring's table).

    Strings given for the enum fields are parsed on construction; every wrong value is a
    ``ValueError`` naming ``export.json: <key>``.
    """

    signatures: Tuple[str, ...]
    methods: Mapping[str, str]
    spacing: Spacing
    clip_x0: Optional[Tuple[float, float]]
    final_alpha_cumprod: FinalAlpha
    prediction_type: Prediction
    learned_variance: bool
    conditioning: ExportConditioning
    data_shape: Tuple[int, ...]
    num_timesteps: int
    schedule_sha256: Optional[str]
    tfddim_version: Optional[str]
    format_version: int = FORMAT_VERSION
    max_batch: Optional[int] = None
    ode_methods: Optional[Tuple[str, ...]] = None
    ode_spacings: Optional[Tuple[str, ...]] = None
    ddpm_variances: Optional[Tuple[str, ...]] = None
    xla: bool = False
    low_res_shape: Optional[Tuple[int, ...]] = None
    low_res_t: Optional[int] = None
    upsample_strength: Optional[float] = None
    cascade: Optional[CascadeStage] = None
    latent: Optional[LatentStage] = None

    def __post_init__(self):
        where = EXPORT_JSON
        version = _int(self.format_version, where, "format_version", 1)
        if version > FORMAT_VERSION:
            _fail(where, "format_version", f"{version} is newer than this tfddim reads ({FORMAT_VERSION}); upgrade tfddim")
        if not isinstance(self.conditioning, ExportConditioning):
            _fail(where, "conditioning", f"must be an ExportConditioning, got {self.conditioning!r}")
        signatures = _signatures(self.signatures, where)
        _set(self, format_version=version, signatures=signatures,
             methods=_methods(self.methods, signatures, where),
             spacing=_spacing(self.spacing, where),
             clip_x0=_clip(self.clip_x0, where),
             final_alpha_cumprod=_enum(FinalAlpha, self.final_alpha_cumprod, where, "final_alpha_cumprod"),
             prediction_type=_enum(Prediction, self.prediction_type, where, "prediction_type"),
             learned_variance=_bool(self.learned_variance, where, "learned_variance"),
             data_shape=_shape(self.data_shape, where),
             num_timesteps=_int(self.num_timesteps, where, "num_timesteps", 1),
             max_batch=_optional_int(self.max_batch, where, "max_batch", 1),
             ode_methods=_names(self.ode_methods, where, "ode_methods"),
             ode_spacings=_names(self.ode_spacings, where, "ode_spacings"),
             ddpm_variances=_names(self.ddpm_variances, where, "ddpm_variances"),
             xla=_bool(False if self.xla is None else self.xla, where, "xla"),
             low_res_shape=None if self.low_res_shape is None else _shape(self.low_res_shape, where, "low_res_shape"),
             low_res_t=_optional_int(self.low_res_t, where, "low_res_t", 0),
             upsample_strength=_optional_strength(self.upsample_strength, where))
        if self.cascade is not None and not isinstance(self.cascade, CascadeStage):
            _set(self, cascade=CascadeStage.from_json(self.cascade))
        if self.latent is not None and not isinstance(self.latent, LatentStage):
            _set(self, latent=LatentStage.from_json(self.latent))
        if (self.low_res_shape is None) != (self.low_res_t is None):
            _fail(where, "low_res_t", "and low_res_shape must be given together (a super-resolution export)")
        if ("sample_ddpm" in signatures) != (self.ddpm_variances is not None):
            _fail(where, "ddpm_variances", "must be given exactly when there is a sample_ddpm signature")
        if ("sample_ode" in signatures) != (self.ode_methods is not None and self.ode_spacings is not None):
            _fail(where, "ode_methods", "and ode_spacings must be given exactly when there is a sample_ode signature")
        sha, tfddim_version = self.schedule_sha256, self.tfddim_version
        if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha)):
            _fail(where, "schedule_sha256", f"must be 64 lower-case hex digits, got {sha!r}")
        if tfddim_version is not None and not isinstance(tfddim_version, str):
            _fail(where, "tfddim_version", f"must be a string, got {tfddim_version!r}")

    @property
    def num_classes(self) -> Optional[int]:
        """The label range of the ``labels`` inputs (``conditioning.num_classes``)."""
        return self.conditioning.num_classes

    @property
    def pixel_shape(self) -> Tuple[int, ...]:
        """[H, W, C] of the images the export returns: the latent's decoded shape, else ``data_shape``."""
        return self.data_shape if self.latent is None else self.latent.pixel_shape

    def input_shape(self, name: str) -> list:
        """The shape input ``name`` of this export's signatures must have (:func:`input_shape`)."""
        cascade = None if self.cascade is None else self.cascade.data_shape
        pixels = None if self.latent is None else self.latent.pixel_shape
        return input_shape(name, self.data_shape, self.low_res_shape, cascade, pixels)

    def to_json(self) -> dict:
        """The JSON object written as ``export.json``, always in the current format (plain values; enums as
        their strings): a manifest read from format 1 comes out upgraded."""
        return {
            "format_version": FORMAT_VERSION,
            "tfddim_version": self.tfddim_version,
            "signatures": list(self.signatures),
            "methods": dict(self.methods),
            "spacing": self.spacing.value,
            "clip_x0": None if self.clip_x0 is None else list(self.clip_x0),
            "final_alpha_cumprod": self.final_alpha_cumprod.value,
            "prediction_type": self.prediction_type.value,
            "learned_variance": self.learned_variance,
            "conditioning": self.conditioning.to_json(),
            "num_classes": self.num_classes,
            "data_shape": list(self.data_shape),
            "num_timesteps": self.num_timesteps,
            "schedule_sha256": self.schedule_sha256,
            "max_batch": self.max_batch,
            "ode_methods": None if self.ode_methods is None else list(self.ode_methods),
            "ode_spacings": None if self.ode_spacings is None else list(self.ode_spacings),
            "ddpm_variances": None if self.ddpm_variances is None else list(self.ddpm_variances),
            "xla": self.xla,
            "low_res_shape": None if self.low_res_shape is None else list(self.low_res_shape),
            "low_res_t": self.low_res_t,
            "upsample_strength": self.upsample_strength,
            "cascade": None if self.cascade is None else self.cascade.to_json(),
            "latent": None if self.latent is None else self.latent.to_json(),
        }

    @classmethod
    def from_json(cls, data, where: str = EXPORT_JSON, *, num_timesteps: Optional[int] = None,
                  schedule_sha256: Optional[str] = None, network_config: Optional[Mapping] = None) -> "ExportManifest":
        """Parse an ``export.json`` object of either format (module docstring).

        Args:
            data: the JSON object.
            where: the file named in errors.
            num_timesteps, schedule_sha256, network_config: format 1 only (it did not record them):
                T, the schedule's hash (None if unknown) and ``model_config.json``'s ``config`` (None: a
                network without labels or learned variance is assumed).
        """
        if not isinstance(data, Mapping):
            _fail(where, "(top level)", f"must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version", 1)
        if version == 1:
            return _from_format1(data, where, num_timesteps, schedule_sha256, network_config or {})
        keys = [f.name for f in dataclasses.fields(cls) if f.name not in _OPTIONAL_KEYS]
        values = {k: _require(data, k, where) for k in keys}
        values.update({k: data.get(k) for k in _OPTIONAL_KEYS})  # absent in files written before the key existed
        values["conditioning"] = ExportConditioning.from_json(values["conditioning"], where)
        manifest = cls(**values)
        if data.get("num_classes") != manifest.num_classes:
            _fail(where, "num_classes", f"{data.get('num_classes')!r} disagrees with conditioning.num_classes "
                                        f"{manifest.num_classes!r}")
        return manifest


def _from_format1(data: Mapping, where: str, num_timesteps, sha, network_config: Mapping) -> ExportManifest:
    """Format 1 (no ``format_version``; prose ``method`` and ``guidance``) as the typed manifest."""
    if num_timesteps is None:
        _fail(where, "num_timesteps", "format 1 did not record T; read it with its schedule.json")
    signatures = _signatures(_require(data, "signatures", where), where)
    unknown = sorted(set(signatures) - set(_FORMAT1_METHODS))
    if unknown:
        _fail(where, "signatures", f"{unknown} are not signatures of format 1")
    num_classes = _optional_int(data.get("num_classes"), where, "num_classes", 1)
    guidance = data.get("guidance")
    if guidance is None and num_classes is not None:
        _fail(where, "guidance", f"is null, but num_classes is {num_classes}")
    if guidance is None:
        conditioning = ExportConditioning()
    elif not isinstance(guidance, str):
        _fail(where, "guidance", f"must be null or a string, got {guidance!r}")
    elif guidance.startswith("classifier-free"):
        conditioning = ExportConditioning(GuidanceKind.CLASSIFIER_FREE, num_classes, num_classes, True)
    elif guidance.startswith("classifier ("):
        network_conditional = network_config.get("num_classes") is not None
        conditioning = ExportConditioning(GuidanceKind.CLASSIFIER, num_classes, None, network_conditional)
    else:
        _fail(where, "guidance", f"unknown format-1 guidance {guidance!r}")
    return ExportManifest(
        signatures=signatures,
        methods={s: _FORMAT1_METHODS[s] for s in signatures},
        spacing=_require(data, "spacing", where),
        clip_x0=data.get("clip_x0"),
        final_alpha_cumprod=data.get("final_alpha_cumprod", FinalAlpha.ONE),
        prediction_type=Prediction.EPSILON,  # format 1 exported epsilon networks only
        learned_variance=bool(network_config.get("learned_variance", False)),
        conditioning=conditioning,
        data_shape=_require(data, "data_shape", where),
        num_timesteps=num_timesteps,
        schedule_sha256=sha,
        tfddim_version=None,
        format_version=1,
    )


# ------------------------------------------------------------------ JSON files
def schedule_sha256(schedule_config: Mapping) -> str:
    """sha256 of a schedule config's canonical JSON (sorted keys, no spaces; floats round-trip exactly)."""
    text = json.dumps(schedule_config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_json(path: str, value: Any) -> None:
    """Write one layout JSON file (indented, sorted keys; values that are not JSON become strings)."""
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True, default=str)


def _read_json(path: str, what: str) -> Any:
    if not os.path.exists(path):
        raise ValueError(f"{what} is missing: {path} (export the model with `tfddim export`)")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what}: not valid JSON ({e}): {path}") from None


def write_manifest(layout, manifest: ExportManifest) -> str:
    """Write ``assets.extra/export.json`` in the current format (:meth:`ExportManifest.to_json`); return its path."""
    layout = _as_layout(layout)
    os.makedirs(layout.assets_dir, exist_ok=True)
    write_json(layout.export_json, manifest.to_json())
    return layout.export_json


def write_export_assets(layout, manifest: ExportManifest, model_config: Mapping, schedule_config: Mapping,
                        metadata: Optional[Mapping] = None, classifier_config: Optional[Mapping] = None) -> None:
    """Write ``assets.extra/``: the manifest, the schedule (checked against the manifest's hash and T),
    the network's config and, when given, the run's metadata and the bundled classifier's config."""
    layout = _as_layout(layout)
    if manifest.schedule_sha256 != schedule_sha256(schedule_config):
        _fail(EXPORT_JSON, "schedule_sha256", "does not match the schedule being written")
    if manifest.num_timesteps != int(schedule_config["num_timesteps"]):
        _fail(EXPORT_JSON, "num_timesteps", f"{manifest.num_timesteps} != the schedule's {schedule_config['num_timesteps']}")
    write_manifest(layout, manifest)
    write_json(layout.schedule_json, dict(schedule_config))
    write_json(layout.model_config_json, dict(model_config))
    if classifier_config is not None:
        write_json(layout.classifier_config_json, dict(classifier_config))
    if metadata is not None:
        write_json(layout.metadata_json, dict(metadata))


def read_schedule_config(version_dir) -> dict:
    """``assets.extra/schedule.json`` (:meth:`tfddim.diffusion.schedules.Schedule.from_config` takes it)."""
    return _read_json(_as_layout(version_dir).schedule_json, SCHEDULE_JSON)


def read_model_config(version_dir) -> dict:
    """``assets.extra/model_config.json`` (:func:`tfddim.models.build` takes it)."""
    return _read_json(_as_layout(version_dir).model_config_json, MODEL_CONFIG_JSON)


def read_classifier_config(version_dir) -> Optional[dict]:
    """``assets.extra/classifier_config.json`` of a bundled guidance classifier, or None when there is none."""
    layout = _as_layout(version_dir)
    return _read_json(layout.classifier_config_json, CLASSIFIER_CONFIG_JSON) if os.path.exists(layout.classifier_config_json) else None


def read_metadata(version_dir) -> Optional[dict]:
    """``assets.extra/metadata.json`` (the training run's metadata), or None when the export has none."""
    layout = _as_layout(version_dir)
    return _read_json(layout.metadata_json, METADATA_JSON) if os.path.exists(layout.metadata_json) else None


def read_manifest(version_dir) -> ExportManifest:
    """``assets.extra/export.json`` of either format as an :class:`ExportManifest`.

    The schedule's hash is checked against ``schedule.json`` (format 2) or computed from it (format 1).
    """
    layout = _as_layout(version_dir)
    data = _read_json(layout.export_json, EXPORT_JSON)
    schedule = read_schedule_config(layout)
    sha = schedule_sha256(schedule)
    if isinstance(data, Mapping) and data.get("format_version", 1) == 1:
        network = _read_json(layout.model_config_json, MODEL_CONFIG_JSON).get("config", {})
        return ExportManifest.from_json(data, num_timesteps=int(schedule["num_timesteps"]), schedule_sha256=sha,
                                        network_config=network)
    manifest = ExportManifest.from_json(data)
    if manifest.schedule_sha256 is not None and manifest.schedule_sha256 != sha:
        _fail(EXPORT_JSON, "schedule_sha256", f"does not match {layout.schedule_json} (changed after the export?)")
    return manifest


# ------------------------------------------------------------------ onnx/onnx.json
@dataclasses.dataclass(frozen=True)
class OnnxGraph:
    """One converted signature: its file in ``onnx/`` and its inputs/outputs ({"name", "dtype", "shape"})."""

    file: str
    inputs: Tuple[dict, ...]
    outputs: Tuple[dict, ...]

    def to_json(self) -> dict:
        return {"file": self.file, "inputs": list(self.inputs), "outputs": list(self.outputs)}


@dataclasses.dataclass(frozen=True)
class OnnxManifest:
    """``onnx/onnx.json`` (format ``tfddim-onnx/1``): the graphs and the export they came from."""

    opset: int
    converter: str
    num_timesteps: int
    export: ExportManifest
    graphs: Mapping[str, OnnxGraph]
    format: str = ONNX_FORMAT

    def __post_init__(self):
        where = f"{ONNX_DIR}/{ONNX_MANIFEST}"
        if self.format != ONNX_FORMAT:
            _fail(where, "format", f"expected {ONNX_FORMAT!r}, got {self.format!r}")
        if not isinstance(self.export, ExportManifest):
            _fail(where, "export", f"must be an ExportManifest, got {self.export!r}")
        _set(self, opset=_int(self.opset, where, "opset", 1), num_timesteps=_int(self.num_timesteps, where, "num_timesteps", 1))
        if self.num_timesteps != self.export.num_timesteps:
            _fail(where, "num_timesteps", f"{self.num_timesteps} != export.num_timesteps {self.export.num_timesteps}")
        if not isinstance(self.graphs, Mapping) or not all(isinstance(g, OnnxGraph) for g in self.graphs.values()):
            _fail(where, "graphs", "must map signature names to OnnxGraph")
        _set(self, graphs={k: self.graphs[k] for k in sorted(self.graphs)})

    def to_json(self) -> dict:
        return {"format": self.format, "opset": self.opset, "converter": self.converter,
                "num_timesteps": self.num_timesteps, "export": self.export.to_json(),
                "graphs": {k: g.to_json() for k, g in self.graphs.items()}, "noise": ONNX_NOISE_NOTE}

    @classmethod
    def from_json(cls, data, where: str = f"{ONNX_DIR}/{ONNX_MANIFEST}") -> "OnnxManifest":
        if not isinstance(data, Mapping):
            _fail(where, "(top level)", f"must be a JSON object, got {type(data).__name__}")
        num_timesteps = _require(data, "num_timesteps", where)
        graphs = _require(data, "graphs", where)
        if not isinstance(graphs, Mapping):
            _fail(where, "graphs", f"must be an object, got {graphs!r}")
        try:
            parsed = {name: OnnxGraph(file=g["file"], inputs=tuple(g["inputs"]), outputs=tuple(g["outputs"]))
                      for name, g in graphs.items()}
        except (KeyError, TypeError) as e:
            _fail(where, "graphs", f"each graph needs file, inputs and outputs ({e!r})")
        export = ExportManifest.from_json(_require(data, "export", where), f"{where}: export",
                                          num_timesteps=num_timesteps)
        return cls(opset=_require(data, "opset", where), converter=str(data.get("converter", "")),
                   num_timesteps=num_timesteps, export=export, graphs=parsed, format=_require(data, "format", where))


def onnx_folder(path: str) -> str:
    """The ``onnx/`` folder of ``path``: ``path`` itself if it holds ``onnx.json``, else ``path/onnx``."""
    return path if os.path.exists(os.path.join(path, ONNX_MANIFEST)) else os.path.join(path, ONNX_DIR)


def write_onnx_manifest(layout, manifest: OnnxManifest) -> str:
    """Write ``onnx/onnx.json``; return its path."""
    layout = _as_layout(layout)
    os.makedirs(layout.onnx_dir, exist_ok=True)
    write_json(layout.onnx_manifest, manifest.to_json())
    return layout.onnx_manifest


def read_onnx_manifest(path: str) -> OnnxManifest:
    """``onnx.json`` of a version folder or of its ``onnx/`` folder (:func:`onnx_folder`)."""
    file = os.path.join(onnx_folder(path), ONNX_MANIFEST)
    if not os.path.exists(file):
        raise ValueError(f"the ONNX export (tfddim export --onnx) is missing: {file}")
    return OnnxManifest.from_json(_read_json(file, ONNX_MANIFEST))
