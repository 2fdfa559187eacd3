"""Train the digits evaluation classifier: ``tfddim train-classifier [--out DIR] [--epochs N]``.

Fits :class:`tfddim.evaluation.features.DigitsClassifier` with Keras ``fit`` on
the digits train split (1497 images; random shifts of up to ±1 pixel, no flips:
a flipped digit is another symbol), evaluates it on the 300 held-out test
digits, and writes ``DIR/model.keras`` (atomically) and ``DIR/classifier.json``
(``test_accuracy``, ``train_accuracy``, ``epochs``, ``parameters``, ``seconds``,
``identity``). :class:`tfddim.evaluation.features.DigitsFeatureNet` loads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time

from tfddim.pipelines.config import check_at_least

DEFAULT_OUT_DIR = os.path.join("saved_models", "digits_classifier")
DEFAULT_EPOCHS = 20


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
    """The options of ``tfddim train-classifier`` without ``--config`` (the digits evaluation classifier).

    Attributes:
        out_dir: the output folder (``model.keras`` and ``classifier.json``).
        epochs: training epochs; >= 1.
        batch_size: examples per step; >= 1.
        seed: weights, shuffling and augmentation.
        augment: random shifts of up to ±1 pixel.
    """

    out_dir: str = DEFAULT_OUT_DIR
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 64
    seed: int = 0
    augment: bool = True

    def __post_init__(self):
        object.__setattr__(self, "epochs", int(self.epochs))
        object.__setattr__(self, "batch_size", int(self.batch_size))
        check_at_least(self, epochs=1, batch_size=1)


def run(cfg: ClassifierConfig = ClassifierConfig()) -> dict:
    """Train, evaluate and save the classifier; returns the ``classifier.json`` dict."""
    out_dir, epochs, batch_size, seed, augment = cfg.out_dir, cfg.epochs, cfg.batch_size, cfg.seed, cfg.augment

    import keras
    import tensorflow as tf

    from tfddim.data import load_digits
    from tfddim.evaluation.features import DigitsClassifier, weights_digest

    keras.utils.set_random_seed(seed)
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")

    ds = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train), seed=seed)
    ds = ds.batch(batch_size)
    if augment:
        # factor 1/8 of an 8-pixel side = up to ±1 pixel; nearest keeps whole-pixel shifts;
        # the background of the [-1, 1] digits is -1.
        shift = keras.layers.RandomTranslation(1 / 8, 1 / 8, fill_mode="constant", fill_value=-1.0,
                                               interpolation="nearest", seed=seed)
        ds = ds.map(lambda x, y: (shift(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)

    steps = epochs * -(-len(x_train) // batch_size)
    model = DigitsClassifier()
    model.build((None, 8, 8, 1))
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
    inference.build((None, 8, 8, 1))
    inference.set_weights(model.get_weights())
    os.makedirs(out_dir, exist_ok=True)
    _write_atomic(os.path.join(out_dir, "model.keras"), inference.save)
    result = {
        "test_accuracy": float(test_acc),
        "train_accuracy": float(train_acc),
        "epochs": epochs,
        "parameters": int(model.count_params()),
        "seconds": round(seconds, 2),
        "identity": f"digits_classifier:{weights_digest(model)}",
    }

    def write_json(tmp):
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")

    _write_atomic(os.path.join(out_dir, "classifier.json"), write_json)
    print(f"tfddim train-classifier: held-out accuracy {test_acc:.4f} on {len(x_test)} test digits "
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
