"""Feature networks for sample-quality measures, and cached reference statistics.

Two networks implement :class:`FeatureNet`:

==========================  ==================================================
:class:`DigitsFeatureNet`   :class:`DigitsClassifier`, a small CNN trained on
                            the embedded 8x8 digits (``tfddim train-classifier``);
                            64-d penultimate features and 10 logits.
:class:`InceptionFeatureNet` Keras' InceptionV3 pool features (2048-d), the
                            network FID is defined with (Heusel et al. 2017).
==========================  ==================================================

Every network has an ``identity`` string naming it *and* its weights; it keys
the cache of :func:`reference_statistics`, so statistics computed with one set
of weights are never reused with another.

References:
    - Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter. GANs Trained by a Two
      Time-Scale Update Rule Converge to a Local Nash Equilibrium. NeurIPS 2017 (FID).
    - Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. Rethinking the Inception
      Architecture for Computer Vision. CVPR 2016 (InceptionV3).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Protocol, runtime_checkable

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "DigitsClassifier",
    "FeatureNet",
    "DigitsFeatureNet",
    "InceptionFeatureNet",
    "reference_statistics",
    "weights_digest",
    "DEFAULT_CLASSIFIER_DIR",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
]

DEFAULT_CLASSIFIER_DIR = os.path.join("saved_models", "digits_classifier")
CLASSIFIER_FILE = "model.keras"
DIGITS_SHAPE = (8, 8, 1)
INCEPTION_SIZE = 299
INCEPTION_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + INCEPTION_WEIGHTS_FILE
)


# ----------------------------------------------------------------------------- the digits CNN
@keras.saving.register_keras_serializable(package="tfddim")
class DigitsClassifier(keras.Model):
    """A small CNN classifying 8x8 digits, whose penultimate layer is the feature space.

    Conv(c1, 3)-ReLU → Conv(c2, 3)-ReLU → MaxPool(2) → Conv(c2, 3)-ReLU →
    Flatten → Dropout → Dense(feature_dim)-ReLU ("features") → Dropout →
    Dense(num_classes) logits. All convolutions are ``same``-padded, so the
    4x4 map after pooling keeps where a stroke is (global pooling would drop
    it, and position separates e.g. 6 from 9 on an 8x8 grid).

    Args:
        filters: ``(c1, c2)`` convolution widths.
        feature_dim: width of the penultimate (feature) layer.
        num_classes: number of logits.
        dropout: dropout rate before the feature and logit layers, in [0, 1).

    Call arguments:
        x: float ``[B, 8, 8, 1]`` in [-1, 1] (as :func:`tfddim.data.load_digits` gives).
        training: enables dropout.

    Returns:
        float32 ``[B, num_classes]`` logits; :meth:`features` gives ``[B, feature_dim]``.
    """

    def __init__(self, filters=(32, 64), feature_dim=64, num_classes=10, dropout=0.3, **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        if len(self.filters) != 2 or min(self.filters) < 1:
            raise ValueError(f"filters must be two positive widths (c1, c2), got {filters!r}")
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {self.feature_dim}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        c1, c2 = self.filters
        self.conv1 = keras.layers.Conv2D(c1, 3, padding="same", activation="relu", name="conv1")
        self.conv2 = keras.layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv2")
        self.pool = keras.layers.MaxPooling2D(2, name="pool")
        self.conv3 = keras.layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv3")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.drop1 = keras.layers.Dropout(self.dropout, name="dropout1")
        self.feature_dense = keras.layers.Dense(self.feature_dim, activation="relu", name="features")
        self.drop2 = keras.layers.Dropout(self.dropout, name="dropout2")
        self.logits_dense = keras.layers.Dense(self.num_classes, dtype="float32", name="logits")

    def build(self, input_shape):
        # Explicit, so load_model() rebuilds the variables from the saved input shape.
        shape = tuple(input_shape)
        if len(shape) != 4 or tuple(shape[1:]) != DIGITS_SHAPE:
            raise ValueError(f"DigitsClassifier expects inputs [B, 8, 8, 1], got shape {shape}")
        c1, c2 = self.filters
        self.conv1.build((None, 8, 8, 1))
        self.conv2.build((None, 8, 8, c1))
        self.conv3.build((None, 4, 4, c2))
        self.feature_dense.build((None, 4 * 4 * c2))
        self.logits_dense.build((None, self.feature_dim))
        self.built = True

    def _features(self, x, training=None):
        h = self.conv3(self.pool(self.conv2(self.conv1(x))))
        return self.feature_dense(self.drop1(self.flatten(h), training=training))

    def call(self, x, training=False):
        return self.logits_dense(self.drop2(self._features(x, training=training), training=training))

    def features(self, x):
        """Penultimate activations ``[B, feature_dim]`` (inference mode: no dropout)."""
        return self._features(x, training=False)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": list(self.filters),
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "dropout": self.dropout,
        })
        return config


def weights_digest(model: keras.Model) -> str:
    """The first 16 hex digits of a sha256 over a model's weights (shapes, dtypes and values, in order).

    The weights, not the ``.keras`` file: the file embeds the date it was
    saved, so saving the same weights twice would change a file hash.
    """
    h = hashlib.sha256()
    for w in model.get_weights():
        w = np.ascontiguousarray(w)
        h.update(f"{w.dtype.str}{w.shape};".encode())
        h.update(w.tobytes())
    return h.hexdigest()[:16]


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the interface
@runtime_checkable
class FeatureNet(Protocol):
    """What the sample-quality measures need from a feature network.

    Attributes:
        identity: names the network and its weights, e.g.
            ``"digits_classifier:3f2a..."`` or ``"inception_v3:random-seed0"``;
            the cache key of :func:`reference_statistics`.
    """

    identity: str

    def features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Float64 ``[N, D]`` features of images in [-1, 1], computed in batches of ``batch_size``."""
        ...

    def logits(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray | None:
        """Float64 ``[N, C]`` class logits, or None for a network without a classifier head."""
        ...


def _check_batch_size(batch_size) -> int:
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def _batched(fn, images: np.ndarray, batch_size: int, label: str) -> np.ndarray:
    """Apply ``fn`` (a tensor → tensor graph) to ``images`` in batches; float64 numpy out."""
    n = len(images)
    progbar = keras.utils.Progbar(n, unit_name=label) if n > batch_size else None
    out = []
    for start in range(0, n, batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        out.append(np.asarray(fn(batch), dtype=np.float64))
        if progbar is not None:
            progbar.update(min(start + batch_size, n))
    return np.concatenate(out, axis=0)


# ----------------------------------------------------------------------------- the digits net
class DigitsFeatureNet:
    """:class:`FeatureNet` over a trained :class:`DigitsClassifier` saved as ``.keras``.

    Args:
        path: the ``.keras`` file, or the folder holding ``model.keras``
            (default ``saved_models/digits_classifier``, written by
            ``tfddim train-classifier``).

    Images are ``[N, 8, 8, 1]``, ``[N, 8, 8]`` or flattened ``[N, 64]``, in [-1, 1].
    ``identity`` is ``"digits_classifier:<weights_digest>"``.
    """

    def __init__(self, path: str = DEFAULT_CLASSIFIER_DIR):
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, CLASSIFIER_FILE)
        if not os.path.isfile(path):
            raise ValueError(
                f"no digits classifier at {path}: run `tfddim train-classifier` to train one "
                f"(it writes {os.path.join(DEFAULT_CLASSIFIER_DIR, CLASSIFIER_FILE)})")
        self.path = path
        self.model = keras.models.load_model(path)
        if not isinstance(self.model, DigitsClassifier):
            raise ValueError(f"{path} holds a {type(self.model).__name__}, not a DigitsClassifier")
        self.identity = f"digits_classifier:{weights_digest(self.model)}"
        self._features = tf.function(self.model.features, reduce_retracing=True)
        self._logits = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    @staticmethod
    def _prepare(images) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2 and images.shape[1] == 64 or images.ndim == 3 and images.shape[1:] == (8, 8):
            images = images.reshape(-1, *DIGITS_SHAPE)
        if images.ndim != 4 or images.shape[1:] != DIGITS_SHAPE:
            raise ValueError(f"images must be [N, 8, 8, 1], [N, 8, 8] or [N, 64] digits, got shape {images.shape}")
        return images

    def features(self, images, batch_size: int = 256) -> np.ndarray:
        return _batched(self._features, self._prepare(images), _check_batch_size(batch_size), "images")

    def logits(self, images, batch_size: int = 256) -> np.ndarray:
        return _batched(self._logits, self._prepare(images), _check_batch_size(batch_size), "images")


# ----------------------------------------------------------------------------- InceptionV3
class InceptionFeatureNet:
    """:class:`FeatureNet` over Keras' InceptionV3: 2048-d average-pool features, the FID standard.

    ``keras.applications.InceptionV3(include_top=False, pooling="avg")`` at
    299x299. Images in [-1, 1] (InceptionV3's own preprocessing range) with 1
    or 3 channels are resized bilinearly to 299x299 and grey is repeated to RGB.

    This is the Keras InceptionV3 with Keras' ImageNet weights, *not* the TF1
    graph (``pt_inception-2015-12-05``) that published FIDs use: its numbers are
    comparable between tfddim runs, not with FIDs in papers.

    Args:
        weights_path: Keras' ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``
            (from the keras-applications GitHub releases or
            ``storage.googleapis.com/tensorflow/keras-applications/inception_v3/``).
            Nothing is downloaded at run time.
        random_weights: use seeded random weights instead (for tests of the
            plumbing: the features measure nothing).
        seed: seed of the random weights.

    ``identity`` is ``"inception_v3:<sha256 of the weights file, 16 hex>"`` or
    ``"inception_v3:random-seed<seed>"``. ``logits`` returns None (no top).
    """

    def __init__(self, weights_path: str | None = None, random_weights: bool = False, seed: int = 0):
        if random_weights and weights_path is not None:
            raise ValueError("pass either weights_path or random_weights=True, not both")
        if weights_path is None and not random_weights:
            raise ValueError(
                "InceptionV3 features need Keras' ImageNet weights, which tfddim does not download: fetch "
                f"{INCEPTION_WEIGHTS_FILE} (keras-applications GitHub releases, or {INCEPTION_WEIGHTS_URL}) "
                "and pass it with --inception-weights PATH")
        if weights_path is not None:
            weights_path = os.fspath(weights_path)
            if not os.path.isfile(weights_path):
                raise ValueError(f"--inception-weights: no such file {weights_path}")
        self.weights_path = weights_path
        self.seed = int(seed)
        self.model = keras.applications.InceptionV3(
            include_top=False, weights=weights_path, pooling="avg",
            input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
        if weights_path is None:
            self._randomize(self.seed)
            self.identity = f"inception_v3:random-seed{self.seed}"
        else:
            self.identity = f"inception_v3:{_file_digest(weights_path)}"
        self._features = tf.function(self._graph, reduce_retracing=True)

    def _randomize(self, seed: int) -> None:
        """Seeded He-normal kernels (variance-preserving through the ReLUs); other weights keep their constant init.

        Set from numpy, not by reseeding Keras' global generator, so building one
        of these leaves the caller's random state alone.
        """
        rng = np.random.default_rng(seed)
        for v in self.model.weights:
            if v.path.endswith("kernel"):
                shape = tuple(v.shape)
                fan_in = int(np.prod(shape[:-1]))
                v.assign((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(v.dtype))

    def _graph(self, images):
        x = tf.image.resize(images, (INCEPTION_SIZE, INCEPTION_SIZE), method="bilinear")
        if x.shape[-1] == 1:
            x = tf.repeat(x, 3, axis=-1)
        return self.model(x, training=False)

    def features(self, images, batch_size: int = 64) -> np.ndarray:
        """2048-d features; ``batch_size`` defaults to 64 (a 299x299 batch of 256 needs several GB)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be [N, H, W, 1 or 3] in [-1, 1], got shape {images.shape}")
        return _batched(self._features, images, _check_batch_size(batch_size), "images")

    def logits(self, images, batch_size: int = 64) -> None:
        return None


# ----------------------------------------------------------------------------- reference statistics
def _images_digest(images: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{images.dtype.str}{images.shape};".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


def reference_statistics(feature_net: FeatureNet, images, cache_path: str | None = None):
    """Mean and covariance of ``feature_net``'s features of ``images``, cached in an ``.npz``.

    μ = mean of the features, Σ = ``np.cov(features, rowvar=False)`` (the
    statistics of FID's Fréchet distance, Heusel et al. 2017, eq. 6). The cache
    file holds ``mu``, ``sigma``, ``identity`` (the feature net's),
    ``num_images`` and ``images_sha256`` (over the array's dtype, shape and
    bytes); it is reused only when identity and image hash both match, and is
    otherwise recomputed and replaced atomically (temp file + ``os.replace``).

    Args:
        feature_net: any :class:`FeatureNet`.
        images: the reference images, ``[N, ...]`` with N >= 2.
        cache_path: the ``.npz`` to read or write; None computes without caching.

    Returns:
        ``(mu [D], sigma [D, D])`` float64.
    """
    images = np.asarray(images)
    if len(images) < 2:
        raise ValueError(f"images: a covariance needs at least 2 images, got {len(images)}")
    digest = _images_digest(images)
    identity = str(feature_net.identity)
    if cache_path is not None and os.path.isfile(cache_path):
        try:
            with np.load(cache_path, allow_pickle=False) as cached:
                if str(cached["identity"]) == identity and str(cached["images_sha256"]) == digest:
                    return np.asarray(cached["mu"], np.float64), np.asarray(cached["sigma"], np.float64)
        except (OSError, KeyError, ValueError):
            pass  # unreadable or from an older layout: recompute and overwrite
    feats = np.asarray(feature_net.features(images), dtype=np.float64)
    mu = feats.mean(axis=0)
    sigma = np.atleast_2d(np.cov(feats, rowvar=False))
    if cache_path is not None:
        folder = os.path.dirname(os.path.abspath(cache_path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".refstats-", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, mu=mu, sigma=sigma, identity=np.str_(identity), num_images=np.int64(len(images)),
                         images_sha256=np.str_(digest))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
            os.replace(tmp, cache_path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    return mu, sigma
