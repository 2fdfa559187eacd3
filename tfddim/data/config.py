"""``DataConfig``: which data to load and how to batch it (parsed and checked once, at the edge)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

__all__ = ["DataConfig", "SPLITS", "check_split"]

SPLITS = ("train", "test", "all")
_NAMED_SOURCES = ("digits", "mnist", "mixture2d")
_SCHEMES = ("tfds", "folder", "npz")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data to load and how to batch it.

    Attributes:
        source: ``"digits"``, ``"mnist"`` (5,000 MNIST digits, 28×28), ``"mixture2d"``, ``"tfds:<name>"`` (e.g. ``"tfds:lsun/bedroom"``),
            ``"folder:<path>"`` or ``"npz:<path>"``.
        image_size: resize the shorter side to this and center-crop a square;
            None keeps the native size (required for sources of mixed sizes). For ``"mnist"`` a divisor
            of 28, reached by area (block-mean) downsampling: 14 is the cascade's base stage.
        low_res_size: yield ``((x, low_res), label)`` batches, ``low_res`` the area downsampling of the
            final (flipped, cropped) x to this size, which must divide x's size: the (image, low-res)
            pairs of a super-resolution model. None: ``(x, label)``.
        random_flip: random horizontal flips (training only).
        random_crop: pad each image by this many pixels (edge values) and crop
            back to its size at a random offset: random translations of up to
            ``random_crop`` pixels (training only; 0 = off).
        batch_size: the GLOBAL batch size; a distribution strategy splits it across replicas.
        shuffle_buffer: examples in the shuffle buffer.
        cache: cache the decoded, resized examples in memory. Turn it off for
            datasets that do not fit (LSUN, ImageNet).
        seed: seeds the shuffle and the flips; the data itself never depends on it.
        data_dir: the TFDS data directory (None: TFDS's default).
        download: TFDS may download and prepare a missing dataset.
        num_samples: ``mixture2d``: size of the fixed training set (the test set,
            drawn with another seed, has ``min(num_samples, 10000)`` points).
    """

    source: str = "digits"
    image_size: int | None = None
    random_flip: bool = False
    random_crop: int = 0
    batch_size: int = 64
    shuffle_buffer: int = 10000
    cache: bool = True
    seed: int = 0
    data_dir: str | None = None
    download: bool = False
    num_samples: int = 100000
    low_res_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise ValueError(f"source must be a string, got {self.source!r}")
        scheme, _, location = self.source.partition(":")
        if self.source not in _NAMED_SOURCES and (scheme not in _SCHEMES or not location):
            raise ValueError(
                f"source must be 'digits', 'mnist', 'mixture2d', 'tfds:<name>', 'folder:<path>' or 'npz:<path>', got {self.source!r}"
            )
        if self.image_size is not None:
            _check_int("image_size", self.image_size, minimum=1)
        if self.source == "mnist" and self.image_size is not None and 28 % self.image_size:
            raise ValueError(f"image_size must divide 28 for source 'mnist' (area downsampling), got {self.image_size}")
        if self.low_res_size is not None:
            _check_int("low_res_size", self.low_res_size, minimum=1)
            if self.source == "mixture2d":
                raise ValueError("low_res_size must be None for source 'mixture2d' (its points are not images)")
            if self.image_size is not None and self.image_size % self.low_res_size:
                raise ValueError(f"low_res_size ({self.low_res_size}) must divide image_size ({self.image_size})")
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("shuffle_buffer", self.shuffle_buffer, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("num_samples", self.num_samples, minimum=1)
        _check_int("random_crop", self.random_crop, minimum=0)
        for name in ("random_flip", "cache", "download"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.data_dir is not None:
            if not isinstance(self.data_dir, (str, os.PathLike)):
                raise ValueError(f"data_dir must be a path or None, got {self.data_dir!r}")
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        if self.source == "mixture2d" and self.image_size is not None:
            raise ValueError("image_size must be None for source 'mixture2d' (its points are 2-D vectors, not images)")
        if self.source == "mixture2d" and self.random_crop:
            raise ValueError("random_crop must be 0 for source 'mixture2d' (its points are not images)")
        if self.source == "mixture2d" and self.random_flip:
            raise ValueError("random_flip must be False for source 'mixture2d' (a horizontal flip is not defined for points)")

    @property
    def scheme(self) -> str:
        """``"digits"``, ``"mixture2d"``, ``"tfds"``, ``"folder"`` or ``"npz"``."""
        return self.source.partition(":")[0]

    @property
    def location(self) -> str:
        """What follows ``"<scheme>:"``: the TFDS name or the path ("" for named sources)."""
        return self.source.partition(":")[2]


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
