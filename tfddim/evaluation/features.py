"""Feature networks for sample-quality measures, and cached reference statistics.

Two networks implement :class:`FeatureNet`:

==========================  ==================================================
:class:`DigitsFeatureNet`   :class:`DigitsClassifier`, a small CNN trained on
                            the embedded 8x8 digits (``tfddim train-classifier``);
                            64-d penultimate features and 10 logits; spatial
                            features: ``conv2[..., :4]``, 8x8x4 = 256-d. The
                            same CNN at 28x28 / 14x14, trained on the MNIST
                            train split (``saved_models/mnist_classifier``,
                            ``saved_models/mnist14_classifier``), scores
                            ``mnist`` data: spatial features 14x14x4 = 784-d.
:class:`InceptionFeatureNet` Keras' InceptionV3 pool features (2048-d), the
                            network FID is defined with (Heusel et al. 2017);
                            spatial features: the first 7 channels of ``mixed6``
                            (TF graph ``mixed_6/conv``), 17x17x7 = 2023-d.
==========================  ==================================================

Both also implement :class:`SpatialFeatureNet`: ``features_and_spatial`` returns
the pooled features and a flattened intermediate feature map from *one* forward
pass, for sFID (the Fréchet distance on spatial features, Nash et al. 2021, used
by ADM, Dhariwal & Nichol 2021): pooled features are insensitive to where things
are, the spatial map is not. :func:`extract` gives ``(features, spatial or None)``
for any :class:`FeatureNet`.

Every network has an ``identity`` string naming it *and* its weights; it keys
the cache of :func:`reference_statistics`, so statistics computed with one set
of weights are never reused with another.

References:
    - Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter. GANs Trained by a Two
      Time-Scale Update Rule Converge to a Local Nash Equilibrium. NeurIPS 2017 (FID).
    - Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. Rethinking the Inception
      Architecture for Computer Vision. CVPR 2016 (InceptionV3).
    - Nash, Menick, Dieleman, Battaglia. Generating Images with Sparse
      Representations. ICML 2021 (sFID).
    - Dhariwal, Nichol. Diffusion Models Beat GANs on Image Synthesis. NeurIPS
      2021 (ADM; guided-diffusion ``evaluations/evaluator.py``: sFID on
      ``mixed_6/conv:0[..., :7]``).
"""

from __future__ import annotations

import dataclasses
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
    "SpatialFeatureNet",
    "DigitsFeatureNet",
    "InceptionFeatureNet",
    "ReferenceStatistics",
    "extract",
    "reference_statistics",
    "weights_digest",
    "classifier_identity",
    "DEFAULT_CLASSIFIER_DIR",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
]

DEFAULT_CLASSIFIER_DIR = os.path.join("saved_models", "digits_classifier")
CLASSIFIER_FILE = "model.keras"
DIGITS_SIZE = 8
DIGITS_SHAPE = (DIGITS_SIZE, DIGITS_SIZE, 1)
MIN_CLASSIFIER_SIZE = 4
FINAL_MAP_MAX = 7  # a second MaxPool(2) follows conv3 when the map after the first pool is larger than this
INCEPTION_SIZE = 299
INCEPTION_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + INCEPTION_WEIGHTS_FILE
)


# ----------------------------------------------------------------------------- the digits CNN
@keras.saving.register_keras_serializable(package="tfddim")
class DigitsClassifier(keras.Model):
    """A small CNN classifying s x s digits, whose penultimate layer is the feature space.

    Conv(c1, 3)-ReLU → Conv(c2, 3)-ReLU → MaxPool(2) → Conv(c2, 3)-ReLU →
    [MaxPool(2), only when s // 2 > 7] → Flatten → Dropout →
    Dense(feature_dim)-ReLU ("features") → Dropout → Dense(num_classes) logits.
    All convolutions are ``same``-padded, so the small map that is flattened
    keeps where a stroke is (global pooling would drop it, and position
    separates e.g. 6 from 9).

    The size ``s`` (``image_size``) only changes the pooling, never the layers
    or their weights' shapes apart from the feature layer's input:

    =====  =============================================  ===========  ===============
    s      maps                                            flattened    spatial map
    =====  =============================================  ===========  ===============
    8      8x8 (conv1, conv2) → 4x4 (conv3)               4·4·c2       conv2, 8x8
    14     14x14 (conv1, conv2) → 7x7 (conv3)             7·7·c2       conv2, 14x14
    28     28x28 (conv1, conv2) → 14x14 (conv3) → 7x7     7·7·c2       conv3, 14x14
    =====  =============================================  ===========  ===============

    The rule: a second MaxPool(2) after conv3 only when the map after the first
    pool is larger than 7x7 (s >= 16), so the flattened map is at most 7x7
    (1/4 of a 28x28 digit per cell). For s = 14 the first pool already gives
    7x7; a second would floor it to 3x3 and drop the last row and column.
    s = 8 is the original network, unchanged (same layers, same weights).

    The *spatial map* (:meth:`features_and_map`, for sFID) is the one the last
    pooling reduces: the deepest map at the second-to-last resolution (``conv2``
    for s = 8 and 14, ``conv3`` for s = 28).

    Args:
        filters: ``(c1, c2)`` convolution widths.
        feature_dim: width of the penultimate (feature) layer.
        num_classes: number of logits.
        dropout: dropout rate before the feature and logit layers, in [0, 1).
        image_size: the side s of the square inputs, >= 4 (8: the embedded
            digits; 28 and 14: MNIST). A saved model without it is an 8x8 one.

    Call arguments:
        x: float ``[B, s, s, 1]`` in [-1, 1] (as :func:`tfddim.data.load_digits`
            or :func:`tfddim.data.load_mnist` give).
        training: enables dropout.

    Returns:
        float32 ``[B, num_classes]`` logits; :meth:`features` gives ``[B, feature_dim]``.
    """

    def __init__(self, filters=(32, 64), feature_dim=64, num_classes=10, dropout=0.3, image_size=DIGITS_SIZE,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.image_size = int(image_size)
        if len(self.filters) != 2 or min(self.filters) < 1:
            raise ValueError(f"filters must be two positive widths (c1, c2), got {filters!r}")
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {self.feature_dim}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size < MIN_CLASSIFIER_SIZE:
            raise ValueError(f"image_size must be >= {MIN_CLASSIFIER_SIZE}, got {self.image_size}")
        c1, c2 = self.filters
        self.conv1 = keras.layers.Conv2D(c1, 3, padding="same", activation="relu", name="conv1")
        self.conv2 = keras.layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv2")
        self.pool = keras.layers.MaxPooling2D(2, name="pool")
        self.conv3 = keras.layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv3")
        # no weights, so the 8x8 network (which has none) keeps its exact variable list
        self.pool2 = keras.layers.MaxPooling2D(2, name="pool2") if self.extra_pool else None
        self.flatten = keras.layers.Flatten(name="flatten")
        self.drop1 = keras.layers.Dropout(self.dropout, name="dropout1")
        self.feature_dense = keras.layers.Dense(self.feature_dim, activation="relu", name="features")
        self.drop2 = keras.layers.Dropout(self.dropout, name="dropout2")
        self.logits_dense = keras.layers.Dense(self.num_classes, dtype="float32", name="logits")

    @property
    def image_shape(self) -> tuple:
        """``(s, s, 1)``."""
        return (self.image_size, self.image_size, 1)

    @property
    def extra_pool(self) -> bool:
        """Whether a second MaxPool(2) follows conv3 (the map after the first pool is larger than 7x7)."""
        return self.image_size // 2 > FINAL_MAP_MAX

    @property
    def final_size(self) -> int:
        """Side of the map that is flattened (4 for s = 8, 7 for s = 14 and 28)."""
        side = self.image_size // 2
        return side // 2 if self.extra_pool else side

    @property
    def spatial_layer_name(self) -> str:
        """The layer whose map :meth:`features_and_map` returns: ``conv3`` with the extra pool, else ``conv2``."""
        return "conv3" if self.extra_pool else "conv2"

    @property
    def spatial_size(self) -> int:
        """Side of that map: s for ``conv2``, s // 2 for ``conv3``."""
        return self.image_size // 2 if self.extra_pool else self.image_size

    def build(self, input_shape):
        # Explicit, so load_model() rebuilds the variables from the saved input shape.
        shape = tuple(input_shape)
        s = self.image_size
        if len(shape) != 4 or tuple(shape[1:]) != self.image_shape:
            raise ValueError(f"DigitsClassifier(image_size={s}) expects inputs [B, {s}, {s}, 1], got shape {shape}")
        c1, c2 = self.filters
        self.conv1.build((None, s, s, 1))
        self.conv2.build((None, s, s, c1))
        self.conv3.build((None, s // 2, s // 2, c2))
        self.feature_dense.build((None, self.final_size * self.final_size * c2))
        self.logits_dense.build((None, self.feature_dim))
        self.built = True

    def _forward(self, x, training=None):
        """(penultimate features, the spatial map: ``conv2`` ``[B, s, s, c2]`` or ``conv3`` ``[B, s/2, s/2, c2]``)."""
        mid = self.conv2(self.conv1(x))
        h = self.conv3(self.pool(mid))
        if self.pool2 is not None:
            mid = h
            h = self.pool2(h)
        return self.feature_dense(self.drop1(self.flatten(h), training=training)), mid

    def _features(self, x, training=None):
        return self._forward(x, training=training)[0]

    def call(self, x, training=False):
        return self.logits_dense(self.drop2(self._features(x, training=training), training=training))

    def features(self, x):
        """Penultimate activations ``[B, feature_dim]`` (inference mode: no dropout)."""
        return self._features(x, training=False)

    def features_and_map(self, x):
        """``(features [B, feature_dim], spatial map)`` from one forward pass (inference mode); the map is
        ``conv2`` ``[B, s, s, c2]`` (s = 8, 14) or ``conv3`` ``[B, s/2, s/2, c2]`` (s = 28), see :attr:`spatial_layer_name`."""
        return self._forward(x, training=False)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": list(self.filters),
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            "image_size": self.image_size,
        })
        return config


def classifier_identity(model: "DigitsClassifier") -> str:
    """``"digits_classifier:<weights_digest>"`` for the 8x8 network, ``"digits_classifier_<s>x<s>:<digest>"``
    for another size (the identity keys cached reference statistics)."""
    s = model.image_size
    name = "digits_classifier" if s == DIGITS_SIZE else f"digits_classifier_{s}x{s}"
    return f"{name}:{weights_digest(model)}"


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


@runtime_checkable
class SpatialFeatureNet(FeatureNet, Protocol):
    """A :class:`FeatureNet` that also exposes a spatial feature map (for sFID).

    Attributes:
        spatial_layer: which map and channels, e.g. ``"conv2[..., :4]"``; stored
            with the cached reference statistics (a different choice recomputes them).
        spatial_shape: ``(H, W, k)`` of the kept map; the spatial features are it
            flattened, ``H·W·k``-d.
    """

    spatial_layer: str
    spatial_shape: tuple

    def features_and_spatial(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Float64 ``([N, D], [N, H·W·k])``: the features and the flattened spatial map, from one forward pass."""
        ...


def extract(feature_net: FeatureNet, images, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(features, spatial)`` of ``images``: one forward pass of a :class:`SpatialFeatureNet`, or
    ``(feature_net.features(images), None)`` for a network without a spatial map (e.g. raw data)."""
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    if isinstance(feature_net, SpatialFeatureNet):
        feats, spatial = feature_net.features_and_spatial(images, **kwargs)
        return np.asarray(feats, np.float64), np.asarray(spatial, np.float64)
    return np.asarray(feature_net.features(images, **kwargs), np.float64), None


def _check_batch_size(batch_size) -> int:
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def _batched(fn, images: np.ndarray, batch_size: int, label: str):
    """Apply ``fn`` (a tensor → tensor, or → tuple of tensors, graph) to ``images`` in batches; float64 numpy out
    (a tuple of arrays for a tuple-valued ``fn``)."""
    n = len(images)
    progbar = keras.utils.Progbar(n, unit_name=label) if n > batch_size else None
    out = []
    for start in range(0, n, batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        value = fn(batch)
        out.append(tuple(np.asarray(v, dtype=np.float64) for v in value) if isinstance(value, (tuple, list))
                   else np.asarray(value, dtype=np.float64))
        if progbar is not None:
            progbar.update(min(start + batch_size, n))
    if isinstance(out[0], tuple):
        return tuple(np.concatenate(parts, axis=0) for parts in zip(*out))
    return np.concatenate(out, axis=0)


# ----------------------------------------------------------------------------- the digits net
class DigitsFeatureNet:
    """:class:`FeatureNet` over a trained :class:`DigitsClassifier` saved as ``.keras``.

    Args:
        path: the ``.keras`` file, or the folder holding ``model.keras``
            (default ``saved_models/digits_classifier``, written by
            ``tfddim train-classifier``; the MNIST ones are
            ``saved_models/mnist_classifier`` (28x28) and
            ``saved_models/mnist14_classifier`` (14x14)).

    Images are of the classifier's size s (``image_size``, 8 for the digits):
    ``[N, s, s, 1]``, ``[N, s, s]`` or flattened ``[N, s·s]``, in [-1, 1].
    ``identity`` is ``"digits_classifier:<weights_digest>"`` for s = 8 and
    ``"digits_classifier_<s>x<s>:<weights_digest>"`` otherwise
    (:func:`classifier_identity`).

    Spatial features (sFID): the first ``SPATIAL_CHANNELS = 4`` channels of
    ``conv2`` (after its ReLU), ``[N, 8, 8, 4]`` flattened to 256-d. Why this map:

    - *the analogue of ADM's*: ADM takes ``mixed_6/conv`` of InceptionV3, a
      block deep inside the second-to-last resolution (17x17; the last is 8x8,
      which feeds the pooled features). The classifier has two resolutions,
      8x8 (conv1, conv2) and 4x4 (conv3, which feeds the feature layer); conv2
      is the deepest map at the second-to-last one. Its 5x5-pixel receptive
      field sees stroke fragments, not whole digits (conv3's 10x10 sees the
      whole 8x8 image and already feeds the FID features);
    - *the dimension*: 8·8·k grows by 64 per channel. ADM's 2023-d sFID is
      estimated from 50 000 images (~25 per dimension); here the reference
      half A holds 748 digits and the README's study scores 300 samples per
      cell, so k = 4 (256-d) keeps the dimension below both sample sizes
      (256 < 300 < 748; a covariance of N samples has rank <= N - 1), where
      ADM's k = 7 (448-d) would exceed the 300 samples of a cell;
    - *taking the first k*, as ADM does: which channels of a trained network
      are "first" is arbitrary, and so is any other choice without a criterion.

    Post-ReLU conv2 is sparse (about 13% active), so some of the 256
    dimensions have zero variance (34 of 256 for the shipped classifier on the
    1497 training digits: positions where a channel never fires); the Fréchet
    distance copes with the singular covariances (``sqrtm`` of a singular
    product, eps·I added if that is not finite), as it does for ADM's
    post-ReLU Inception map.

    On the shipped classifier (half A = 748 vs 300 other real digits), moving
    every digit one pixel right raises FID 4x over its noise floor (2.75 →
    11.2) and this sFID 13x (0.24 → 3.1): the spatial map sees position where
    the penultimate features partly abstract from it.

    MNIST (28x28 and 14x14 classifiers): the same rule, the deepest map at the
    second-to-last resolution, picks ``conv3[..., :4]`` (14x14, receptive field
    10x10 of 28 pixels: stroke fragments) at 28x28 and ``conv2[..., :4]``
    (14x14, 5x5 of 14 pixels) at 14x14, 784-d for both, below the 2000 images
    of a reference half of the 4,000-digit train split (conv2 at 28x28 would be
    3136-d, above it, and its sqrtm ~64x slower).
    """

    SPATIAL_LAYER = "conv2"  # of the 8x8 and 14x14 networks; the 28x28 one uses conv3 (DigitsClassifier.spatial_layer_name)
    SPATIAL_CHANNELS = 4

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
        self.image_size = self.model.image_size
        self.identity = classifier_identity(self.model)
        self.spatial_layer = f"{self.model.spatial_layer_name}[..., :{self.SPATIAL_CHANNELS}]"
        side = self.model.spatial_size
        self.spatial_shape = (side, side, min(self.SPATIAL_CHANNELS, self.model.filters[1]))
        self._both = tf.function(self._graph, reduce_retracing=True)
        self._logits = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def _graph(self, x):
        """One forward pass: (features ``[B, feature_dim]``, the flattened spatial map ``[B, H·W·k]``)."""
        feats, mid = self.model.features_and_map(x)
        spatial = mid[..., :self.SPATIAL_CHANNELS]
        return feats, tf.reshape(spatial, (tf.shape(spatial)[0], -1))

    def _prepare(self, images) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        s = self.image_size
        if images.ndim == 2 and images.shape[1] == s * s or images.ndim == 3 and images.shape[1:] == (s, s):
            images = images.reshape(-1, s, s, 1)
        if images.ndim != 4 or images.shape[1:] != (s, s, 1):
            raise ValueError(f"images must be [N, {s}, {s}, 1], [N, {s}, {s}] or [N, {s * s}] digits "
                             f"(this classifier's size), got shape {images.shape}")
        return images

    def features(self, images, batch_size: int = 256) -> np.ndarray:
        return self.features_and_spatial(images, batch_size)[0]

    def features_and_spatial(self, images, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``([N, feature_dim], [N, H·W·4])`` float64: penultimate features and the flattened spatial map
        (``conv2[..., :4]``, 256-d, for the 8x8 digits), one pass."""
        return _batched(self._both, self._prepare(images), _check_batch_size(batch_size), "images")

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

    Spatial features (sFID): the first 7 channels of Keras' ``mixed6`` output,
    ``[N, 17, 17, 7]`` flattened to 2023-d, from the same forward pass (one
    two-output model). ADM takes ``mixed_6/conv:0[..., :7]`` of the TF1 graph.
    The correspondence, since the names differ:

    - the TF1 graph names its mixed blocks ``mixed, mixed_1, ..., mixed_10``;
      ``mixed_3`` is the 35→17 reduction and ``mixed_4..mixed_7`` the four
      17x17 blocks (TF-slim ``Mixed_6b..Mixed_6e``), so ``mixed_6`` is TF-slim
      ``Mixed_6d`` (not ``Mixed_6e``) and Keras' ``mixed6`` (Keras counts
      ``mixed0..mixed10`` the same way: ``mixed3`` the reduction, ``mixed4``
      to ``mixed7`` the 17x17 blocks);
    - ``mixed_6/conv`` is that block's 1x1 branch (192 channels, conv →
      batch norm → ReLU). Keras builds it with unnamed layers (``activation_50``
      in a fresh session, a session-dependent name), but concatenates the block
      as ``[branch1x1, branch7x7, branch7x7dbl, branch_pool]``, so the first 7
      channels of ``mixed6`` *are* the first 7 of the 1x1 branch; the
      constructor checks that the first input of ``mixed6`` is 17x17x192.
    - the same position in the architecture is not the same features: Keras'
      weights were trained separately from the TF1 graph's, so channel i here
      is not channel i there. sFIDs, like FIDs, compare within tfddim only.

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

    SPATIAL_LAYER = "mixed6"
    SPATIAL_CHANNELS = 7

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
        mixed = self.model.get_layer(self.SPATIAL_LAYER)
        branch = mixed.input[0]  # the 1x1 branch (TF graph mixed_6/conv): the first channels of the concatenation
        if tuple(branch.shape[1:]) != (17, 17, 192) or tuple(mixed.output.shape[1:3]) != (17, 17):
            raise ValueError(f"InceptionV3 layout changed: {self.SPATIAL_LAYER} starts with {branch.shape}, "
                             "expected the 17x17x192 1x1 branch")
        self.spatial_layer = f"{self.SPATIAL_LAYER}[..., :{self.SPATIAL_CHANNELS}] (TF graph mixed_6/conv)"
        self.spatial_shape = (17, 17, self.SPATIAL_CHANNELS)
        # one forward pass, two outputs (the layers and weights are the InceptionV3's own)
        self._two_outputs = keras.Model(self.model.input, [self.model.output, mixed.output], name="inception_v3_sfid")
        if weights_path is None:
            self._randomize(self.seed)
            self.identity = f"inception_v3:random-seed{self.seed}"
        else:
            self.identity = f"inception_v3:{_file_digest(weights_path)}"
        self._both = tf.function(self._graph, reduce_retracing=True)

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
        pooled, mixed = self._two_outputs(x, training=False)
        spatial = mixed[..., :self.SPATIAL_CHANNELS]
        return pooled, tf.reshape(spatial, (tf.shape(spatial)[0], -1))

    def features(self, images, batch_size: int = 64) -> np.ndarray:
        """2048-d features; ``batch_size`` defaults to 64 (a 299x299 batch of 256 needs several GB)."""
        return self.features_and_spatial(images, batch_size)[0]

    def features_and_spatial(self, images, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """``([N, 2048], [N, 2023])`` float64: pool features and flattened ``mixed6[..., :7]``, one forward pass."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be [N, H, W, 1 or 3] in [-1, 1], got shape {images.shape}")
        return _batched(self._both, images, _check_batch_size(batch_size), "images")

    def logits(self, images, batch_size: int = 64) -> None:
        return None


# ----------------------------------------------------------------------------- reference statistics
def _images_digest(images: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{images.dtype.str}{images.shape};".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class ReferenceStatistics:
    """Gaussian fits of a reference set's features: (μ, Σ) of the pooled features and, for a
    :class:`SpatialFeatureNet`, of the spatial ones (None otherwise)."""

    mu: np.ndarray
    sigma: np.ndarray
    spatial_mu: np.ndarray | None = None
    spatial_sigma: np.ndarray | None = None


def _write_atomically(cache_path: str, arrays: dict) -> None:
    folder = os.path.dirname(os.path.abspath(cache_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".refstats-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, cache_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read_cache(cache_path: str, identity: str, digest: str, spatial_layer: str | None):
    """The cached statistics if they match (identity, image hash and, for a spatial net, the spatial layer), else None."""
    try:
        with np.load(cache_path, allow_pickle=False) as cached:
            if str(cached["identity"]) != identity or str(cached["images_sha256"]) != digest:
                return None
            stats = {"mu": np.asarray(cached["mu"], np.float64), "sigma": np.asarray(cached["sigma"], np.float64)}
            if spatial_layer is not None:
                # a cache written before sFID (no spatial keys) or with another spatial layer: KeyError / None
                if str(cached["spatial_layer"]) != spatial_layer:
                    return None
                stats.update(spatial_mu=np.asarray(cached["spatial_mu"], np.float64),
                             spatial_sigma=np.asarray(cached["spatial_sigma"], np.float64))
            return ReferenceStatistics(**stats)
    except (OSError, KeyError, ValueError):
        return None  # unreadable or from an older layout: recompute and overwrite


def reference_statistics(feature_net: FeatureNet, images, cache_path: str | None = None) -> ReferenceStatistics:
    """Mean and covariance of ``feature_net``'s features of ``images`` (and of its spatial features), cached in an ``.npz``.

    μ = mean of the features, Σ = ``np.cov(features, rowvar=False)`` (the
    statistics of FID's Fréchet distance, Heusel et al. 2017, eq. 6); for a
    :class:`SpatialFeatureNet` the same of its spatial features (sFID), from the
    same forward pass. The cache file holds ``mu``, ``sigma``, ``identity`` (the
    feature net's), ``num_images`` and ``images_sha256`` (over the array's
    dtype, shape and bytes), and for a spatial net ``spatial_mu``,
    ``spatial_sigma`` and ``spatial_layer``. It is reused only when identity and
    image hash both match and, for a spatial net, it holds spatial statistics of
    the same ``spatial_layer`` (a cache written before sFID existed is
    recomputed); otherwise it is recomputed and replaced atomically (temp file +
    ``os.replace``).

    Args:
        feature_net: any :class:`FeatureNet`.
        images: the reference images, ``[N, ...]`` with N >= 2.
        cache_path: the ``.npz`` to read or write; None computes without caching.

    Returns:
        :class:`ReferenceStatistics` (float64; ``spatial_*`` None for a net without a spatial map).
    """
    images = np.asarray(images)
    if len(images) < 2:
        raise ValueError(f"images: a covariance needs at least 2 images, got {len(images)}")
    digest = _images_digest(images)
    identity = str(feature_net.identity)
    spatial_layer = str(feature_net.spatial_layer) if isinstance(feature_net, SpatialFeatureNet) else None
    if cache_path is not None and os.path.isfile(cache_path):
        cached = _read_cache(cache_path, identity, digest, spatial_layer)
        if cached is not None:
            return cached
    feats, spatial = extract(feature_net, images)
    stats = ReferenceStatistics(feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False)))
    if spatial is not None:
        stats = dataclasses.replace(stats, spatial_mu=spatial.mean(axis=0),
                                    spatial_sigma=np.atleast_2d(np.cov(spatial, rowvar=False)))
    if cache_path is not None:
        arrays = dict(mu=stats.mu, sigma=stats.sigma, identity=np.str_(identity), num_images=np.int64(len(images)),
                      images_sha256=np.str_(digest))
        if spatial is not None:
            arrays.update(spatial_mu=stats.spatial_mu, spatial_sigma=stats.spatial_sigma,
                          spatial_layer=np.str_(spatial_layer))
        _write_atomically(cache_path, arrays)
    return stats
