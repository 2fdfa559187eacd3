"""Denoising networks: they map ``(x_t, t[, y])`` to ε (and v), and know no noise schedule.

``t`` is always the integer timestep *index* in [0, T−1]; ``y`` a class label
in [0, num_classes], where ``num_classes`` is the null label of classifier-free
guidance. Outputs are float32 under any precision policy. Every class here is
registered with Keras (package ``"tfddim"``), so ``keras.models.load_model``
restores a saved ``.keras`` file without ``custom_objects``.

A model is described in configs as ``{"class_name": "UNet", "config": {...}}``
and built with :func:`build`.
"""

from __future__ import annotations

import inspect

import keras

from tfddim.models.autoencoder import Autoencoder
from tfddim.models.classifier import NoisyClassifier
from tfddim.models.embedding import timestep_embedding
from tfddim.models.mlp import MLP
from tfddim.models.unet import UNet

__all__ = ["Autoencoder", "UNet", "MLP", "NoisyClassifier", "timestep_embedding", "build", "MODELS"]

MODELS = {"UNet": UNet, "MLP": MLP, "NoisyClassifier": NoisyClassifier, "Autoencoder": Autoencoder}

# Base-layer keys that get_config() adds; accepted so build({"class_name": ..., "config": m.get_config()}) works.
_BASE_KEYS = {"name", "trainable", "dtype"}


def build(config: dict) -> keras.Model:
    """Build a network from ``{"class_name": "UNet" | "MLP", "config": {constructor kwargs}}``.

    Unknown top-level keys, class names and constructor arguments raise
    ValueError naming them, so a typo in a config file fails at start-up and
    not as a silently ignored option.
    """
    if not isinstance(config, dict):
        raise ValueError(f"a model config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - {"class_name", "config"})
    if unknown:
        raise ValueError(f"unknown model config key(s) {unknown}; expected 'class_name' and 'config'")
    if "class_name" not in config:
        raise ValueError(f"model config needs 'class_name', one of {sorted(MODELS)}")
    name = config["class_name"]
    if name not in MODELS:
        raise ValueError(f"unknown model class_name {name!r}; expected one of {sorted(MODELS)}")
    cls = MODELS[name]
    kwargs = dict(config.get("config") or {})
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    bad = sorted(set(kwargs) - allowed - _BASE_KEYS)
    if bad:
        raise ValueError(f"unknown {name} argument(s) {bad}; expected some of {sorted(allowed)}")
    return cls.from_config(kwargs)
