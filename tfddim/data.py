"""tf.data pipelines: the embedded digits, a 2-D mixture, TFDS, image folders and npz files.

Every source yields ``(x, label)`` batches: ``x`` float32 in [-1, 1], ``[B, H, W, C]``
for images or ``[B, 2]`` for ``mixture2d``; ``label`` int32 ``[B]`` (zeros where a
source has no labels). :class:`DataConfig` names the source:

=====================  =======================================================
``source``             data
=====================  =======================================================
``"digits"``           scikit-learn's 8x8 handwritten digits, vendored in
                       ``tfddim/assets/digits.npz`` (no download, no sklearn)
``"mixture2d"``        :func:`mixture2d_distribution`: an 8-component ring
``"tfds:<name>"``      a prepared TensorFlow Datasets builder, e.g. ``tfds:cifar10``
``"folder:<path>"``    one subfolder per class (or images directly in ``path``)
``"npz:<path>"``       arrays ``images``/``x`` and optional ``labels``/``y``
=====================  =======================================================

Training pipeline (``make_dataset(..., training=True)``)::

    source → resize + center crop → cache → shuffle(seed) → repeat
           → batch(drop_remainder) → flip + scale to [-1, 1] → prefetch

Flip and scaling run on whole batches (vectorised; per-example flips come from
a stateless seed per batch), which is the per-example augmentation of the
contract done once per batch instead of once per image. Images from uint8
sources stay uint8 through cache and shuffle, so the shuffle buffer holds a
quarter of the bytes it would as float32.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
import pathlib

import numpy as np
import tensorflow as tf

from tfddim.mixture import GaussianMixture, ring

__all__ = [
    "DataConfig",
    "load_digits",
    "make_dataset",
    "dataset_info",
    "mixture2d_distribution",
    "resize_and_center_crop",
]

SPLITS = ("train", "test", "all")
_NAMED_SOURCES = ("digits", "mixture2d")
_SCHEMES = ("tfds", "folder", "npz")

# The digits' held-out split: indices RandomState(0).permutation(1797)[:300] are the
# test set. RandomState, not default_rng: its stream is frozen by NumPy's policy
# (NEP 19), so the split cannot drift with a NumPy upgrade.
DIGITS_SPLIT_SEED = 0
DIGITS_NUM_TEST = 300
DIGITS_NUM_CLASSES = 10

MIXTURE_TRAIN_SEED = 0
MIXTURE_TEST_SEED = 1
MIXTURE_NUM_TEST = 10_000
MIXTURE_SCALE = 0.25  # ring(8, radius=4, std=0.5) / 4: radius 1, so the data lies in about [-1.5, 1.5]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data to load and how to batch it.

    Attributes:
        source: ``"digits"``, ``"mixture2d"``, ``"tfds:<name>"`` (e.g. ``"tfds:lsun/bedroom"``),
            ``"folder:<path>"`` or ``"npz:<path>"``.
        image_size: resize the shorter side to this and center-crop a square;
            None keeps the native size (required for sources of mixed sizes).
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

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise ValueError(f"source must be a string, got {self.source!r}")
        scheme, _, location = self.source.partition(":")
        if self.source not in _NAMED_SOURCES and (scheme not in _SCHEMES or not location):
            raise ValueError(
                f"source must be 'digits', 'mixture2d', 'tfds:<name>', 'folder:<path>' or 'npz:<path>', got {self.source!r}"
            )
        if self.image_size is not None:
            _check_int("image_size", self.image_size, minimum=1)
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


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """The vendored arrays: uint8 images [1797, 8, 8] in 0..16 and their labels."""
    asset = importlib.resources.files("tfddim").joinpath("assets", "digits.npz")
    with asset.open("rb") as f, np.load(f) as npz:
        images, labels = npz["images"], npz["labels"]
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _digits_indices(split: str, n: int) -> np.ndarray:
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(n)
    # Sorted: each split keeps the file's order, so evaluation order is stable and readable.
    if split == "test":
        return np.sort(perm[:DIGITS_NUM_TEST])
    if split == "train":
        return np.sort(perm[DIGITS_NUM_TEST:])
    return np.arange(n)


def load_digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits: float32 images ``[N, 8, 8, 1]`` in [-1, 1] (x/16·2 − 1) and int32 labels ``[N]``.

    ``split`` is ``"train"`` (1,497), ``"test"`` (300) or ``"all"`` (1,797). The
    held-out split is fixed: the test set is ``RandomState(0).permutation(1797)[:300]``
    (:data:`DIGITS_SPLIT_SEED`), so every call returns the same (fresh) arrays.
    """
    _check_split(split)
    images, labels = _digits_raw()
    idx = _digits_indices(split, images.shape[0])
    x = images[idx].astype(np.float32)[..., None] / np.float32(8.0) - np.float32(1.0)
    return x, labels[idx].astype(np.int32)


# --------------------------------------------------------------------------- mixture2d


def mixture2d_distribution() -> GaussianMixture:
    """The ``mixture2d`` data distribution: ``ring(8, radius=4.0, std=0.5)`` scaled by 1/4.

    Its :meth:`~tfddim.mixture.GaussianMixture.eps_fn` is the exact ε-predictor for
    models trained on ``source="mixture2d"``.
    """
    base = ring(8, radius=4.0, std=0.5)
    return GaussianMixture(weights=base.weights, means=base.means * MIXTURE_SCALE, covs=base.covs * MIXTURE_SCALE**2)


def _mixture2d_size(config: DataConfig, split: str) -> int:
    return config.num_samples if split == "train" else min(config.num_samples, MIXTURE_NUM_TEST)


def _mixture2d_arrays(config: DataConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split == "all":
        raise ValueError("split 'all' is not defined for source 'mixture2d'; use 'train' or 'test'")
    seed = MIXTURE_TRAIN_SEED if split == "train" else MIXTURE_TEST_SEED
    x, labels = ring(8, radius=4.0, std=0.5).sample(_mixture2d_size(config, split), np.random.default_rng(seed))
    return (x * MIXTURE_SCALE).astype(np.float32), labels.astype(np.int32)


# --------------------------------------------------------------------------- npz

_NPZ_IMAGE_KEYS = {"train": ("images_train", "x_train", "images", "x"), "test": ("images_test", "x_test"), "all": ("images", "x")}
_NPZ_LABEL_KEY = {"images": "labels", "x": "y"}


def _npz_label_key(image_key: str) -> str:
    base, _, suffix = image_key.partition("_")
    return _NPZ_LABEL_KEY[base] + (f"_{suffix}" if suffix else "")


def _load_npz(path: str, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (uint8 0..255 or float32 in [-1, 1], ``[N, H, W, C]``) and labels (int32 or None).

    Keys: ``images`` or ``x`` (labels ``labels`` or ``y``) hold the whole set; Keras-style
    ``x_train``/``x_test`` (``images_train``/``images_test``) hold splits. Without split
    keys, "train" and "all" are the whole file and "test" is an error.
    Values: integer arrays are taken as 0..255 and scaled later; float arrays are
    taken as already in [-1, 1] and checked.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"source npz:{path}: no such file")
    with np.load(path) as f:
        keys = set(f.files)
        image_key = next((k for k in _NPZ_IMAGE_KEYS[split] if k in keys), None)
        if image_key is None and split == "all" and {"x_train", "x_test"} <= keys:
            parts = [_load_npz(path, s) for s in ("train", "test")]
            labels = None if any(p[1] is None for p in parts) else np.concatenate([p[1] for p in parts])
            return np.concatenate([p[0] for p in parts]), labels
        if image_key is None:
            wanted = _NPZ_IMAGE_KEYS[split]
            raise ValueError(f"source npz:{path}: split {split!r} needs one of the arrays {wanted}, found {sorted(keys)}")
        images = f[image_key]
        label_key = _npz_label_key(image_key)
        labels = f[label_key] if label_key in keys else None
    where = f"source npz:{path}, array {image_key!r}"
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"{where}: images must be [N, H, W] or [N, H, W, C] with N > 0, got shape {images.shape}")
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise ValueError(f"{where}: integer images must lie in 0..255, got {images.min()}..{images.max()}")
        images = images.astype(np.uint8)
    elif np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)) or images.min() < -1.0 or images.max() > 1.0:
            raise ValueError(
                f"{where}: float images are taken as already scaled to [-1, 1], got {images.min()}..{images.max()}; "
                "store uint8 0..255 or scale them first"
            )
        images = images.astype(np.float32)
    else:
        raise ValueError(f"{where}: images must be uint8 (0..255) or float (in [-1, 1]), got dtype {images.dtype}")
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != images.shape[:1] or labels.min() < 0:
            raise ValueError(
                f"{where}: labels must be non-negative integers of shape {images.shape[:1]}, got {labels.dtype} {labels.shape}"
            )
        labels = labels.astype(np.int32)
    return images, labels


# --------------------------------------------------------------------------- image folders


@dataclasses.dataclass(frozen=True)
class _Folder:
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]  # empty: images directly in the folder, unlabeled
    first_shape: tuple[int, int, int]  # (H, W, C) of the first image after channel normalisation


def _is_image(p: pathlib.Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def _scan_folder(root: str) -> _Folder:
    path = pathlib.Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"source folder:{root}: no such directory")
    subdirs = sorted(p for p in path.iterdir() if p.is_dir())
    paths: list[str] = []
    labels: list[int] = []
    if subdirs:
        for index, d in enumerate(subdirs):
            files = sorted(str(p) for p in d.rglob("*") if _is_image(p))
            paths += files
            labels += [index] * len(files)
    else:
        paths = sorted(str(p) for p in path.iterdir() if _is_image(p))
        labels = [0] * len(paths)
    if not paths:
        raise ValueError(f"source folder:{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    first = tf.io.decode_image(tf.io.read_file(paths[0]), expand_animations=False)
    h, w, c = first.shape
    # Grayscale (with or without alpha) stays one channel; anything else becomes RGB (alpha dropped).
    channels = 1 if c in (1, 2) else 3
    return _Folder(tuple(paths), tuple(labels), tuple(p.name for p in subdirs), (int(h), int(w), channels))


def _folder_dataset(folder: _Folder, image_size: int | None) -> tf.data.Dataset:
    h, w, channels = folder.first_shape

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        if image_size is None:
            # Fail with a message naming the fix, not inside batch() with a shape mismatch.
            check = tf.debugging.Assert(
                tf.reduce_all(tf.shape(image)[:2] == [h, w]),
                [f"image_size is None, so every image must be {h}x{w} like the first; "
                 "set image_size to resize and center-crop. Offending file and shape:", path, tf.shape(image)],
            )
            with tf.control_dependencies([check]):
                image = tf.identity(image)
            image = tf.ensure_shape(image, (h, w, channels))
        else:
            image.set_shape((None, None, channels))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((list(folder.paths), np.asarray(folder.labels, dtype=np.int32)))
    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- TFDS


def _tfds_module():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # an optional dependency
        raise ImportError("TFDS sources need tensorflow-datasets: pip install 'tfddim[tfds]'") from e
    return tfds


def _tfds_builder(config: DataConfig):
    return _tfds_module().builder(config.location, data_dir=config.data_dir)


def _tfds_split(builder, split: str) -> str:
    known = builder.info.splits
    # LSUN and others have no "test" split; their "validation" plays its part.
    if split == "test" and known and "test" not in known and "validation" in known:
        return "validation"
    return split


def _tfds_dataset(config: DataConfig, split: str, training: bool) -> tf.data.Dataset:
    tfds = _tfds_module()
    builder = _tfds_builder(config)
    name = config.location
    # Checked before anything else: download_and_prepare is the only step that may
    # reach the network, and an unprepared dataset must fail at once, not hang.
    if not builder.is_prepared():
        if not config.download:
            data_dir = f" --data_dir {config.data_dir}" if config.data_dir else ""
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared (looked in {builder.data_dir}). Prepare it once with "
                f"`tfds build {name}{data_dir}`, or pass download=True "
                "(`--set data.download=true`) to download and prepare it now."
            )
        builder.download_and_prepare()
    features = builder.info.features
    if "image" not in features:
        raise ValueError(f"source {config.source!r}: the dataset has no 'image' feature (features: {list(features)})")
    if config.image_size is None and None in tuple(features["image"].shape)[:2]:
        shape = features["image"].shape
        raise ValueError(f"image_size must be set for source {config.source!r}: its images vary in size {shape}")
    has_label = "label" in features
    ds = builder.as_dataset(
        split=_tfds_split(builder, split),
        shuffle_files=training,
        read_config=tfds.ReadConfig(shuffle_seed=config.seed),
    )

    def to_pair(example):
        label = tf.cast(example["label"], tf.int32) if has_label else tf.zeros([], tf.int32)
        return example["image"], label

    return ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- pipeline


def resize_and_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize the shorter side to ``size`` and crop the central ``size x size`` square.

    ``image`` is ``[H, W, C]`` or ``[B, H, W, C]``, any dtype, any (even dynamic) H and W.
    Bilinear with antialiasing, as the DDPM code's LSUN/CelebA pipeline: a convex
    filter, so the float32 result stays within the input's range.
    """
    shape = tf.shape(image)
    h = tf.cast(shape[-3], tf.float32)
    w = tf.cast(shape[-2], tf.float32)
    scale = size / tf.minimum(h, w)
    # max(): rounding must never leave the shorter side a pixel short of the crop.
    new_h = tf.maximum(size, tf.cast(tf.round(h * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(w * scale), tf.int32))
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    return tf.image.crop_to_bounding_box(resized, (new_h - size) // 2, (new_w - size) // 2, size, size)


def _resize_stored(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize/crop, keeping the stored dtype: uint8 stays uint8 (for cache and shuffle)."""
    out = resize_and_center_crop(image, size)
    if image.dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
    return tf.cast(out, image.dtype)


def _source(config: DataConfig, split: str, training: bool):
    """The unbatched ``(x, label)`` dataset and its auto-shard policy.

    ``x`` is uint8 (0..255, scaled at the end) or float32 (already in [-1, 1]).
    """
    data = tf.data.experimental.AutoShardPolicy.DATA
    scheme = config.scheme
    if scheme == "digits":
        return tf.data.Dataset.from_tensor_slices(load_digits(split)), data
    if scheme == "mixture2d":
        return tf.data.Dataset.from_tensor_slices(_mixture2d_arrays(config, split)), data
    if scheme == "npz":
        images, labels = _load_npz(config.location, split)
        labels = np.zeros(images.shape[0], np.int32) if labels is None else labels
        return tf.data.Dataset.from_tensor_slices((images, labels)), data
    if scheme == "folder":
        if split == "test":
            raise ValueError(f"source {config.source!r} has no 'test' split; point a second config at a held-out folder")
        # DATA: the files are read by a map over in-memory paths, which FILE sharding cannot see.
        return _folder_dataset(_scan_folder(config.location), config.image_size), data
    # DATA, not FILE: small TFDS datasets (MNIST, CIFAR-10) keep a split in one file, and FILE
    # sharding over fewer files than workers fails; DATA is correct for any file count.
    return _tfds_dataset(config, split, training), data


def make_dataset(config: DataConfig, split: str = "train", training: bool = True) -> tf.data.Dataset:
    """Batches of ``(x, label)``: x float32 in [-1, 1] (``[B, H, W, C]``, or ``[B, 2]`` for mixture2d), label int32 ``[B]``.

    ``training=True``: cache (if ``config.cache``), shuffle with ``config.seed``,
    repeat forever, random flips (if ``config.random_flip``), full batches only.
    ``training=False``: every example of ``split`` once, in order, last batch partial.
    The result depends only on the config: the same seed gives the same batches.
    """
    _check_split(split)
    ds, shard_policy = _source(config, split, training)
    if config.image_size is not None:
        size = config.image_size
        ds = ds.map(lambda x, y: (_resize_stored(x, size), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        if config.cache:
            ds = ds.cache()
        # Every worker must shuffle identically for DATA sharding to partition the
        # examples; the fixed seed guarantees it.
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
    ds = ds.batch(config.batch_size, drop_remainder=training)
    flip = training and config.random_flip
    crop = config.random_crop if training else 0
    if flip or crop:
        # A stateless seed per batch: deterministic, yet different for every batch.
        seed = tf.constant(config.seed, tf.int64)
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))
        ds = ds.map(lambda xy, i: _finish_batch(*xy, tf.stack([seed, i]) if flip else None,
                                                crop, tf.stack([seed + 1, i])),
                    num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: _finish_batch(x, y, None), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = shard_policy
    return ds.with_options(options)


def _finish_batch(x: tf.Tensor, y: tf.Tensor, flip_seed: tf.Tensor | None, crop: int = 0, crop_seed=None):
    """Scale a stored batch to float32 [-1, 1]; given a seed, flip half of it left-right;
    with ``crop`` > 0, translate each image by up to ``crop`` pixels (edge-padded random crop)."""
    if x.dtype == tf.uint8:
        x = tf.cast(x, tf.float32) / 127.5 - 1.0
    if flip_seed is not None:
        flip = tf.random.stateless_uniform(tf.shape(x)[:1], seed=flip_seed) < 0.5
        x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
    if crop:
        shape = tf.shape(x)
        padded = tf.pad(x, [[0, 0], [crop, crop], [crop, crop], [0, 0]], mode="SYMMETRIC")
        offsets = tf.random.stateless_uniform([shape[0], 2], seed=crop_seed, minval=0, maxval=2 * crop + 1, dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(shape[1])[None]  # [B, H]
        cols = offsets[:, 1:] + tf.range(shape[2])[None]  # [B, W]
        x = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    return x, y


def dataset_info(config: DataConfig) -> dict:
    """``{"image_shape": (H, W, C) or (D,), "num_classes": int or None, "num_examples": {split: n}}``.

    ``num_examples`` lists the splits whose size is known without reading the data
    (an unprepared TFDS dataset has none). ``num_classes`` is None for unlabeled sources.
    """
    scheme = config.scheme
    size = config.image_size

    def shape(native: tuple) -> tuple:
        return (size, size, native[-1]) if size is not None else tuple(native)

    def info(image_shape, num_classes, num_examples) -> dict:
        return {"image_shape": image_shape, "num_classes": num_classes, "num_examples": num_examples}

    if scheme == "digits":
        n = _digits_raw()[0].shape[0]
        return info(shape((8, 8, 1)), DIGITS_NUM_CLASSES, {"train": n - DIGITS_NUM_TEST, "test": DIGITS_NUM_TEST})
    if scheme == "mixture2d":
        return info((2,), 8, {split: _mixture2d_size(config, split) for split in ("train", "test")})
    if scheme == "npz":
        counts, image_shape, num_classes = {}, None, None
        for split in ("train", "test"):
            try:
                images, labels = _load_npz(config.location, split)
            except ValueError:
                if split == "train":
                    raise
                continue
            counts[split] = int(images.shape[0])
            image_shape = image_shape or images.shape[1:]
            if labels is not None:
                num_classes = max(num_classes or 0, int(labels.max()) + 1)
        return info(shape(image_shape), num_classes, counts)
    if scheme == "folder":
        folder = _scan_folder(config.location)
        return info(shape(folder.first_shape), len(folder.class_names) or None, {"train": len(folder.paths)})
    builder = _tfds_builder(config)
    features = builder.info.features
    label = features["label"] if "label" in features else None
    counts = {}
    for split in ("train", "test"):
        name = _tfds_split(builder, split)
        if name in builder.info.splits:
            counts[split] = int(builder.info.splits[name].num_examples)
    image_shape = tuple(features["image"].shape) if "image" in features else None
    return info(shape(image_shape) if image_shape else None, getattr(label, "num_classes", None), counts)
