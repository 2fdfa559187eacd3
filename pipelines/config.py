"""Typed run configurations: JSON files in ``pipelines/configs/`` ↔ frozen dataclasses.

A config file has the sections ``data``, ``model``, ``diffusion``, ``train``
and ``sampling``. Loading is strict: an unknown key or a value of the wrong
type is a ``ValueError`` naming the key (``train.epochz``), and
``--set section.key=value`` overrides are parsed as JSON values (bare words
are strings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Any, Optional

from tfddim.data import DataConfig
from tfddim.diffusion.kinds import Decoder, Prediction, Variance, parse_kind
from tfddim.diffusion.spacing import parse_spacing
from tfddim.sampling.options import Method
from tfddim.training.base import Precision, Strategy
from tfddim.training.diffusion import Loss
from tfddim.training.weighting import check_min_snr_gamma

__all__ = [
    "check_at_least",
    "ModelConfig",
    "DiffusionConfig",
    "TrainConfig",
    "SamplingConfig",
    "RunConfig",
    "load",
    "apply_overrides",
    "config_path",
]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network: ``class_name`` ("UNet", "MLP", "NoisyClassifier" or "Autoencoder") and its constructor arguments."""

    class_name: str = "UNet"
    config: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.class_name not in ("UNet", "MLP", "NoisyClassifier", "Autoencoder"):
            raise ValueError("model.class_name must be 'UNet', 'MLP', 'NoisyClassifier' or 'Autoencoder', "
                             f"got {self.class_name!r}")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """The schedule and the objective (see :class:`tfddim.training.DiffusionModel`).

    ``loss``, ``variance``, ``decoder`` and ``prediction_type`` are parsed once, here, into
    :class:`~tfddim.training.Loss`, :class:`~tfddim.diffusion.kinds.Variance`,
    :class:`~tfddim.diffusion.kinds.Decoder` and :class:`~tfddim.diffusion.kinds.Prediction`; they are
    str enums, so ``to_dict()`` and a run's ``config.json`` hold the same strings as the file.

    ``autoencoder`` makes the run a latent diffusion model: the path of a finished ``tfddim
    train-autoencoder`` run folder whose encoder maps the data to latents E(x)·scale_factor (LDM's
    ``scale_factor``, stored by that run), on which the network trains; null: pixel space.

    ``prediction_type`` is the network's target (``epsilon``, ``sample`` = x₀, ``v_prediction``) and
    ``min_snr_gamma`` the γ of min-SNR-γ weighting of the MSE (null: none); ``low_res_augment_max`` the
    largest noise-augmentation timestep of a super-resolution model's low-resolution input; see
    :class:`tfddim.training.DiffusionModel` for the combinations it refuses (γ with loss ``vlb``,
    ``epsilon`` with ``zero_terminal_snr``), refused here too, at parse time. These two keys came
    later than the others: ``to_dict()`` leaves them out at their defaults (:data:`_ADDED_WITH_DEFAULTS`),
    so a run folder written before them still has the same ``config.json`` and resumes.
    """

    schedule: str = "linear"
    num_timesteps: int = 1000
    zero_terminal_snr: bool = False
    loss: Loss = Loss.SIMPLE
    vlb_weight: float = 0.001
    variance: Variance = Variance.FIXED_SMALL
    importance_sampling: bool = False
    decoder: Decoder = Decoder.DISCRETIZED
    prediction_type: Prediction = Prediction.EPSILON
    min_snr_gamma: Optional[float] = None
    low_res_augment_max: int = 0
    autoencoder: Optional[str] = None

    def __post_init__(self):
        for name, kind in (("loss", Loss), ("variance", Variance), ("decoder", Decoder),
                           ("prediction_type", Prediction)):
            object.__setattr__(self, name, parse_kind(kind, getattr(self, name), f"diffusion.{name}"))
        object.__setattr__(self, "min_snr_gamma", check_min_snr_gamma(self.min_snr_gamma, "diffusion.min_snr_gamma"))
        if self.min_snr_gamma is not None and self.loss is Loss.VLB:
            raise ValueError("diffusion.min_snr_gamma weights the MSE term, and diffusion.loss 'vlb' has none; "
                             "use loss 'simple' or 'hybrid', or min_snr_gamma null")
        if self.zero_terminal_snr and self.prediction_type is Prediction.EPSILON:
            raise ValueError("diffusion.prediction_type 'epsilon' cannot be trained with diffusion.zero_terminal_snr "
                             "(x0 is undetermined where alphas_cumprod = 0); use 'v_prediction' or 'sample'")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping.

    ``batch_size`` lives in ``data`` and is the global batch; ``learning_rate``
    applies to the mean loss over that global batch, whatever the number of
    replicas. ``strategy`` is parsed into :class:`~tfddim.training.Strategy`;
    ``precision`` is checked against :class:`~tfddim.training.Precision` and kept
    as its string, the name of a Keras dtype policy (Keras reads an enum member's
    ``.name``, ``"FLOAT32"``, as the dtype, so ``set_global_policy`` needs the string).
    """

    epochs: int = 10
    steps_per_epoch: int = 100
    learning_rate: float = 2e-4
    warmup_steps: int = 0
    grad_clip_norm: Optional[float] = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    label_dropout: float = 0.0
    precision: str = Precision.FLOAT32.value
    jit_compile: bool = False
    seed: int = 0
    strategy: Strategy = Strategy.DEFAULT
    sample_every: int = 0
    num_sample_images: int = 16
    verbose: int = 1

    def __post_init__(self):
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ValueError("train.epochs and train.steps_per_epoch must be >= 1")
        if not 0 < self.learning_rate < float("inf"):  # also refuses NaN
            raise ValueError(f"train.learning_rate must be a finite number > 0, got {self.learning_rate}")
        object.__setattr__(self, "precision", parse_kind(Precision, self.precision, "train.precision").value)
        object.__setattr__(self, "strategy", parse_kind(Strategy, self.strategy, "train.strategy"))
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError(f"train.grad_clip_norm must be > 0 or null, got {self.grad_clip_norm}")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How samples are drawn from the trained model (sample grids now; export bakes these in later).

    ``method`` is parsed into :class:`~tfddim.sampling.Method`. ``spacing`` is checked with
    :func:`~tfddim.diffusion.spacing.parse_spacing` and kept as written, so ``to_dict()`` and a
    run's ``config.json`` are unchanged; :attr:`spacing_spec` is its typed value.
    """

    method: Method = Method.DDIM
    num_steps: int = 50
    spacing: str = "uniform"
    eta: float = 0.0
    clip_x0: Optional[list] = None

    def __post_init__(self):
        object.__setattr__(self, "method", parse_kind(Method, self.method, "sampling.method"))
        try:
            parse_spacing(self.spacing)
        except ValueError as e:
            raise ValueError(f"sampling.spacing: {e}") from None

    @property
    def spacing_spec(self):
        """``spacing`` as a typed value: a :class:`~tfddim.diffusion.spacing.Spacing`, ``Sections`` or ``DdimStride``."""
        return parse_spacing(self.spacing)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole recipe: ``name`` names the run folder ``runs/<name>``."""

    name: str = "run"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    train: TrainConfig = TrainConfig()
    sampling: SamplingConfig = SamplingConfig()

    def __post_init__(self):
        if self.diffusion.autoencoder is not None:
            if self.data.low_res_size is not None or self.data.random_flip or self.data.random_crop:
                raise ValueError("diffusion.autoencoder: a latent model trains on the encoder's cached moments; "
                                 "data.low_res_size, data.random_flip and data.random_crop must be off")
            if self.model.class_name != "UNet":
                raise ValueError(f"diffusion.autoencoder: a latent model's network is a UNet, got {self.model.class_name}")

    def to_dict(self) -> dict:
        """The config as plain values; keys added after runs existed are left out at their defaults (resume)."""
        out = dataclasses.asdict(self)
        for section, key, default in _ADDED_WITH_DEFAULTS:
            if out[section].get(key, default) == default:
                out[section].pop(key, None)
        return out


# (section, key, default): config keys added after run folders were written. ``RunConfig.to_dict`` leaves
# them out while they hold their default, so an older run's ``config.json`` (compared on resume) still matches;
# ``from_dict`` fills them back in. Append-only.
_ADDED_WITH_DEFAULTS = (
    ("diffusion", "prediction_type", Prediction.EPSILON.value),
    ("diffusion", "min_snr_gamma", None),
    ("diffusion", "low_res_augment_max", 0),
    ("data", "low_res_size", None),
    ("diffusion", "autoencoder", None),
)


def check_at_least(cfg, **minimums) -> None:
    """``ValueError`` naming the first field of ``cfg`` below its minimum (None fields are skipped: unset)."""
    for name, minimum in minimums.items():
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_type(path: str, value: Any, annotation) -> Any:
    """Validate (and lightly coerce int → float) one value against its annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(path, value, inner[0])
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = origin or annotation
    if expected in (int, float, str, bool, dict, list) and not (isinstance(value, expected) and not (expected is int and isinstance(value, bool))):
        raise ValueError(f"{path} must be {expected.__name__}, got {value!r}")
    return value


def _build(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix or 'config'} must be an object, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"unknown config key {prefix}{unknown[0]!s} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        path = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, path + ".")
        else:
            kwargs[name] = _check_type(path, value, hint)
    try:
        return cls(**kwargs)
    except ValueError as e:
        message = str(e)
        raise ValueError(message if prefix.rstrip(".") in message or not prefix else f"{prefix.rstrip('.')}: {message}") from None


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply ``["train.epochs=3", "data.batch_size=32", ...]`` to a raw config dict (a new dict)."""
    out = json.loads(json.dumps(raw))
    for item in overrides or ():
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part} is not a section")
        node[parts[-1]] = _parse_value(value)
    return out


def config_path(name_or_path: str) -> str:
    """A file path, or the name of a config shipped in ``pipelines/configs`` (``digits`` → ``digits.json``)."""
    if os.path.exists(name_or_path):
        return name_or_path
    shipped = os.path.join(CONFIG_DIR, name_or_path if name_or_path.endswith(".json") else name_or_path + ".json")
    if os.path.exists(shipped):
        return shipped
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json")) if os.path.isdir(CONFIG_DIR) else []
    raise ValueError(f"config {name_or_path!r} is neither a file nor a shipped config ({', '.join(names)})")


def from_dict(raw: dict, kind=RunConfig):
    return _build(kind, raw, "")


def load(name_or_path: str, overrides=(), kind=RunConfig):
    """Load a config file (or shipped name), apply ``--set`` overrides, validate.

    ``kind`` is the config's dataclass: :class:`RunConfig` (a diffusion model or classifier), or another
    frozen dataclass of sections (``tfddim.pipelines.train_autoencoder.AutoencoderRunConfig``).
    A file that is not valid JSON is a ``ValueError`` naming it and the line and column.
    """
    path = config_path(name_or_path)
    with open(path) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"config {path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    raw = apply_overrides(raw, overrides)
    is_autoencoder = isinstance(raw, dict) and isinstance(raw.get("model"), dict) and \
        raw["model"].get("class_name") == "Autoencoder"
    if kind is RunConfig and is_autoencoder:
        raise ValueError(f"config {path} describes an Autoencoder: train it with tfddim train-autoencoder")
    if kind is not RunConfig and isinstance(raw, dict) and "diffusion" in raw and not is_autoencoder:
        raise ValueError(f"config {path} describes a diffusion model: train it with tfddim train")
    return from_dict(raw, kind)
