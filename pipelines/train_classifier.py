"""Train an evaluation classifier: ``tfddim train-classifier [--source digits|mnist] [--image-size S] [--out DIR] [--epochs N]``.

Fits :class:`tfddim.evaluation.features.DigitsClassifier` with Keras ``fit`` on
a train split, evaluates it on the held-out test split, and writes
``DIR/model.keras`` (atomically) and ``DIR/classifier.json`` (``test_accuracy``,
``train_accuracy``, ``epochs``, ``parameters``, ``seconds``, ``identity``; for
MNIST also ``source``, ``image_size``, ``num_train``, ``num_test``).
:class:`tfddim.evaluation.features.DigitsFeatureNet` loads it.

=========  ========================================  ===================================  ========
source     data                                      default ``DIR``                      epochs
=========  ========================================  ===================================  ========
digits     the 8x8 digits: 1497 train, 300 test      ``saved_models/digits_classifier``   20
mnist      MNIST train split (4,000), test (1,000),  ``saved_models/mnist_classifier``    10
           28x28, or area-downsampled to S           (S = 28), ``mnist<S>_classifier``
                                                     (e.g. ``mnist14_classifier``)
=========  ========================================  ===================================  ========

Augmentation: random shifts of up to ±1 pixel (±2 at 28x28: ``max(1, S // 14)``),
no flips (a flipped digit is another symbol).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Optional

from tfddim.pipelines.config import check_at_least

DEFAULT_OUT_DIR = os.path.join("saved_models", "digits_classifier")
DEFAULT_EPOCHS = 20
SOURCES = ("digits", "mnist")
MNIST_SIZE = 28
DEFAULT_MNIST_EPOCHS = 10


def default_out_dir(source: str = "digits", image_size: int | None = None) -> str:
    """``saved_models/digits_classifier``; for MNIST ``saved_models/mnist_classifier`` at 28x28 and
    ``saved_models/mnist<S>_classifier`` at S x S (e.g. ``mnist14_classifier``)."""
    if source == "digits":
        return DEFAULT_OUT_DIR
    size = MNIST_SIZE if image_size is None else int(image_size)
    return os.path.join("saved_models", "mnist_classifier" if size == MNIST_SIZE else f"mnist{size}_classifier")


def _write_atomic(path: str, write) -> None:
    """``write(tmp_path)`` then ``os.replace`` onto ``path``; the temp keeps ``path``'s extension."""
    folder, name = os.path.split(path)
    base, ext = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{base}-", suffix=f".tmp{ext}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """The options of ``tfddim train-classifier`` without ``--config`` (an evaluation classifier).

    Attributes:
        out_dir: the output folder (``model.keras`` and ``classifier.json``); None: :func:`default_out_dir`
            of ``source`` and ``image_size``.
        epochs: training epochs; >= 1; None: 20 for digits, 10 for MNIST.
        batch_size: examples per step; >= 1.
        seed: weights, shuffling and augmentation.
        augment: random shifts of up to ±1 pixel (±2 at 28x28).
        source: ``"digits"`` (the 8x8 digits) or ``"mnist"`` (the MNIST train split, 4,000 digits).
        image_size: MNIST only: the side S, a divisor of 28 that is >= 4 (28, 14, 7, 4; area downsampling);
            None: native (8 for digits, 28 for MNIST).
    """

    out_dir: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: int = 64
    seed: int = 0
    augment: bool = True
    source: str = "digits"
    image_size: Optional[int] = None

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be 'digits' or 'mnist', got {self.source!r}")
        if self.image_size is not None:
            object.__setattr__(self, "image_size", int(self.image_size))
            if self.source == "digits" and self.image_size != 8:
                raise ValueError(f"image_size: the digits are 8x8 (no resizing), got {self.image_size}")
            if self.source == "mnist" and (MNIST_SIZE % self.image_size or self.image_size < 4):
                raise ValueError(f"image_size must be a divisor of 28 that is >= 4 (28, 14, 7, 4) for MNIST, "
                                 f"got {self.image_size}")
        if self.out_dir is None:
            object.__setattr__(self, "out_dir", default_out_dir(self.source, self.image_size))
        elif self.source != "digits" and os.path.normpath(self.out_dir) == os.path.normpath(DEFAULT_OUT_DIR):
            raise ValueError(f"out_dir {self.out_dir} holds the 8x8 digits classifier; an MNIST classifier goes to "
                             f"{default_out_dir(self.source, self.image_size)} (the default)")
        if self.epochs is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS if self.source == "digits" else DEFAULT_MNIST_EPOCHS)
        object.__setattr__(self, "epochs", int(self.epochs))
        object.__setattr__(self, "batch_size", int(self.batch_size))
        check_at_least(self, epochs=1, batch_size=1)

    @property
    def size(self) -> int:
        """The side of the training images (8 for digits, 28 or ``image_size`` for MNIST)."""
        if self.source == "digits":
            return 8
        return MNIST_SIZE if self.image_size is None else self.image_size


def run(cfg: ClassifierConfig = ClassifierConfig()) -> dict:
    """Train, evaluate and save the classifier; returns the ``classifier.json`` dict."""
    out_dir, epochs, batch_size, seed, augment = cfg.out_dir, cfg.epochs, cfg.batch_size, cfg.seed, cfg.augment
    size = cfg.size

    import keras
    import tensorflow as tf

    from tfddim.data import load_digits, load_mnist
    from tfddim.evaluation.features import DigitsClassifier, classifier_identity

    keras.utils.set_random_seed(seed)
    if cfg.source == "digits":
        x_train, y_train = load_digits("train")
        x_test, y_test = load_digits("test")
    else:
        x_train, y_train = load_mnist("train", cfg.image_size)
        x_test, y_test = load_mnist("test", cfg.image_size)

    ds = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train), seed=seed)
    ds = ds.batch(batch_size)
    if augment:
        # factor 1/8 of an 8-pixel side = up to ±1 pixel (±2 of 28, ±1 of 14); nearest keeps whole-pixel
        # shifts; the background of the [-1, 1] digits is -1.
        pixels = max(1, size // 14)
        shift = keras.layers.RandomTranslation(pixels / size, pixels / size, fill_mode="constant", fill_value=-1.0,
                                               interpolation="nearest", seed=seed)
        ds = ds.map(lambda x, y: (shift(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)

    steps = epochs * -(-len(x_train) // batch_size)
    model = DigitsClassifier(image_size=size)
    model.build((None, size, size, 1))
    model.compile(
        optimizer=keras.optimizers.AdamW(keras.optimizers.schedules.CosineDecay(3e-3, steps), weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, shuffle=False, verbose=2)  # ds is shuffled already
    seconds = time.perf_counter() - start
    _, train_acc = model.evaluate(x_train, y_train, batch_size=256, verbose=0)
    _, test_acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)

    # Save an uncompiled copy: the evaluation network needs no optimizer state (AdamW's two
    # slots would triple the file).
    inference = DigitsClassifier.from_config(model.get_config())
    inference.build((None, size, size, 1))
    inference.set_weights(model.get_weights())
    os.makedirs(out_dir, exist_ok=True)
    _write_atomic(os.path.join(out_dir, "model.keras"), inference.save)
    result = {
        "test_accuracy": float(test_acc),
        "train_accuracy": float(train_acc),
        "epochs": epochs,
        "parameters": int(model.count_params()),
        "seconds": round(seconds, 2),
        "identity": classifier_identity(model),
    }
    if cfg.source != "digits":
        result.update(source=cfg.source, image_size=size, num_train=len(x_train), num_test=len(x_test))

    def write_json(tmp):
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")

    _write_atomic(os.path.join(out_dir, "classifier.json"), write_json)
    print(f"tfddim train-classifier: held-out accuracy {test_acc:.4f} on {len(x_test)} {cfg.source} {size}x{size} test digits "
          f"(train {train_acc:.4f}, {epochs} epochs, {seconds:.1f} s); wrote {os.path.join(out_dir, 'model.keras')}")
    return result


def run_noisy(config_name: str, overrides=(), *, runs_dir: str = "runs", overwrite: bool = False) -> dict:
    """Train the noise-aware guidance classifier of a ``NoisyClassifier`` config (``tfddim train-classifier --config``).

    The run is an ordinary training run (:func:`tfddim.pipelines.train.run`): run folder,
    resume, strategies; its ``metadata.json`` holds the held-out accuracy by t.
    """
    from tfddim.pipelines import config, train

    cfg = config.load(config_name, list(overrides))
    if cfg.model.class_name != "NoisyClassifier":
        raise ValueError(f"--config {config_name} trains a {cfg.model.class_name}; "
                         "train-classifier takes a NoisyClassifier config (e.g. digits_classifier)")
    return train.run(cfg, runs_dir=runs_dir, overwrite=overwrite)


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["train-classifier", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
