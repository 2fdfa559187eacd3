"""Keras callbacks of the training pipeline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os

import keras
import numpy as np
import tensorflow as tf

from tfddim import data as data_lib
from tfddim.diffusion import schedules


def image_grid(images: np.ndarray, columns: int | None = None, scale: int = 1, pad: int = 1) -> np.ndarray:
    """[N, H, W, C] in [-1, 1] → one uint8 grid, tiles enlarged ``scale``× and separated by ``pad`` gray pixels."""
    images = np.repeat(np.repeat(np.asarray(images, np.float32), scale, axis=1), scale, axis=2)
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32)  # 0 is mid-gray
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = img
    return np.clip((grid + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def scatter_png(points: np.ndarray) -> np.ndarray:
    """A scatter plot of 2-D samples as an RGB uint8 image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3))
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    ax.set_aspect("equal")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return tf.image.decode_png(buf.getvalue(), channels=3).numpy()


class SampleGrid(keras.callbacks.Callback):
    """Every ``train.sample_every`` epochs, sample the EMA network from fixed noise; write a PNG and a TensorBoard image.

    The same x_T every time, so the grids show one set of samples improving. The sampler is built once per
    model and kept: its loop is traced on the first grid and reused by every later one (it reads the EMA
    weights as variables, so it always samples the current ones). A new sampler per grid would trace anew
    each time and trigger TensorFlow's "triggered tf.function retracing" warning.
    A latent diffusion model's grids show D(z_0 / scale_factor): ``decode`` maps its samples to pixels.
    """

    def __init__(self, cfg, png_dir: str, log_dir: str, decode=None):
        super().__init__()
        self.cfg = cfg
        self.decode = decode  # a latent model's decoder: scaled latents -> pixels
        self.png_dir = png_dir
        self.writer = tf.summary.create_file_writer(log_dir)
        self._grid_model = None
        self._request = None  # (sampler, x_T, timesteps, eta, labels, low_res), built once per model

    def _sampling_request(self):
        model = self.model
        if self._grid_model is not model:
            s = self.cfg.sampling
            n = self.cfg.train.num_sample_images
            x_T = tf.random.stateless_normal((n,) + tuple(model.data_shape), seed=[self.cfg.train.seed, 0])
            options = {"clip_x0": tuple(s.clip_x0)} if s.clip_x0 else {}
            sampler = model.sampler(method=s.method, **options)
            num_t = model.schedule.num_timesteps
            taus = schedules.spaced_timesteps(num_t, min(s.num_steps, num_t), s.spacing, schedule=model.schedule)
            labels = np.arange(n, dtype=np.int32) % model.num_classes if model.num_classes else None
            eta = s.eta if s.method == "ddim" else 0.0
            extra = {}
            if getattr(model, "low_res_size", None):  # a super-resolution model: the first n held-out low-res images
                data = dataclasses.replace(self.cfg.data, batch_size=n)
                (_, low), _ = next(iter(data_lib.make_dataset(data, "test", training=False)))
                extra = {"low_res": low[:n]}
                x_T = x_T[: low.shape[0]]
                labels = None if labels is None else labels[: low.shape[0]]
            self._grid_model, self._request = model, (sampler, x_T, taus, eta, labels, extra)
        return self._request

    @property
    def sampler(self):
        """The sampler of the grids (None before the first one)."""
        return None if self._request is None else self._request[0]

    def on_epoch_end(self, epoch, logs=None):
        every = self.cfg.train.sample_every
        if not every or (epoch + 1) % every:
            return
        sampler, x_T, taus, eta, labels, extra = self._sampling_request()
        x0 = sampler.sample(x_T, taus, eta=eta, seed=self.cfg.train.seed, labels=labels, **extra)
        x0 = (x0 if self.decode is None else self.decode(x0)).numpy()
        image = image_grid(x0, scale=max(1, 64 // x0.shape[1])) if x0.ndim == 4 else scatter_png(x0)
        os.makedirs(self.png_dir, exist_ok=True)
        tf.io.write_file(os.path.join(self.png_dir, f"epoch_{epoch + 1:04d}.png"), tf.image.encode_png(image))
        with self.writer.as_default():
            tf.summary.image("ema_samples", image[None], step=epoch + 1)
        self.writer.flush()


def _fsync(path: str) -> None:
    """Flush a written file (or a folder's entries) to disk, so a rename never publishes a hole after a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder
        pass
    finally:
        os.close(fd)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` whose backup survives a kill or a failed write at any instant.

    The latest copy keeps Keras' names (``latest.weights.h5``, ``training_metadata.json``, so a backup
    of Keras' own callback still resumes); the previous copy is ``previous.weights.h5`` and
    ``previous_training_metadata.json``. We roll our own because Keras 3.15's
    ``double_checkpoint=True`` does not make the backup safe:

    - it writes ``latest.weights.h5`` and ``training_metadata.json`` in place: a kill (or a full
      disk) mid-write leaves a truncated file, and a truncated JSON raises ``JSONDecodeError``,
      which its fallback (``except OSError``) does not catch, so every rerun fails;
    - it falls back only on ``OSError``, and silently;
    - the weights and the epoch they belong to are two files written one after the other, so a
      kill between them resumes the weights of epoch N at epoch N-1 (one epoch trained twice, a
      wrong step count), and nothing can tell.

    Here a backup is written to ``incoming.weights.h5``, flushed, and only then rotated in by
    ``os.replace`` (the latest copy becoming the previous one); each record (``training_metadata.json``, also
    replaced atomically) names the SHA-256 of the weights file it belongs to. On restore, the newest
    record whose weights file is present with that digest is loaded; a corrupt or half-written
    latest copy is skipped with a printed warning naming the file, and training resumes from the
    previous copy. At every instant between two steps of a save, one complete (weights, record) pair
    is on disk, so a kill loses at most the epoch being saved. A failed write (``OSError``, a full
    disk) removes the temp file and raises; the previous backup is untouched.

    Args:
        backup_dir: the folder of the backup (nothing else may write there).
        save_freq: ``"epoch"`` or a number of batches, as in Keras.
    """

    def __init__(self, backup_dir: str, save_freq="epoch"):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True, delete_checkpoint=False)
        self._incoming_weights_path = os.path.join(backup_dir, "incoming.weights.h5")
        # Keras names the previous copy ``latest.weights.h5.bkp``, which its own ``load_weights`` refuses
        # to read (the suffix must be ``.weights.h5``): Keras copies it over the latest file first. We keep
        # both copies as they are and load either directly.
        self._prev_weights_path = os.path.join(backup_dir, "previous.weights.h5")
        self._prev_training_metadata_path = os.path.join(backup_dir, "previous_training_metadata.json")

    # ------------------------------------------------------------------ saving
    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        incoming = self._incoming_weights_path
        try:
            self.model.save_weights(incoming, overwrite=True)
            _fsync(incoming)
            record = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "sha256": _sha256(incoming)}
        except BaseException:
            _remove(incoming)
            raise
        # Between any two of these lines a complete pair is on disk: the latest record names the digest
        # of a file that is either latest.weights.h5 or, just after the first rename, previous.weights.h5.
        if os.path.exists(self._weights_path):
            os.replace(self._weights_path, self._prev_weights_path)
        if os.path.exists(self._training_metadata_path):
            os.replace(self._training_metadata_path, self._prev_training_metadata_path)
        os.replace(incoming, self._weights_path)
        tmp = self._training_metadata_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._training_metadata_path)
        _fsync(self.backup_dir)

    # ------------------------------------------------------------------ restoring
    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError("To use the BackupAndRestore callback, the model must be built before fit()")
        _remove(self._incoming_weights_path)  # a save that was killed before its rename
        self._restore()

    def _warn(self, message: str) -> None:
        print(f"tfddim train: warning: {message}", flush=True)

    def _records(self, warn) -> list:
        """The readable records, newest first: ``(epoch, batch, sha256 or None, weights file of the same name)``."""
        records = []
        for meta_path, weights_path in ((self._training_metadata_path, self._weights_path),
                                        (self._prev_training_metadata_path, self._prev_weights_path)):
            if not os.path.exists(meta_path):
                continue
            try:
                with open(meta_path) as f:
                    record = json.load(f)
                records.append((int(record["epoch"]), int(record.get("batch", 0)), record.get("sha256"), weights_path))
            except (OSError, ValueError, KeyError, TypeError) as e:
                warn(f"{meta_path} is unreadable ({type(e).__name__}: {e}); ignoring it")
        return sorted(records, key=lambda r: r[0], reverse=True)

    def _candidates(self, warn: bool = True) -> list:
        """``(epoch, weights file)`` of each backup whose file matches its record, newest first."""
        say = self._warn if warn else (lambda message: None)
        digests = {}
        for path in (self._weights_path, self._prev_weights_path):
            if os.path.exists(path):
                try:
                    digests[path] = _sha256(path)
                except OSError as e:
                    say(f"cannot read {path} ({e}); ignoring it")
        candidates = []
        for epoch, _batch, sha, same_name in self._records(say):
            if sha is None:  # a record written by Keras' own BackupAndRestore: paired by name
                path = same_name if same_name in digests else None
            else:
                path = next((p for p, d in digests.items() if d == sha), None)
            if path is None:
                say(f"the backup of epoch {epoch} is corrupt or half-written ({same_name} does not match "
                    "its record); trying the previous copy")
                continue
            candidates.append((epoch, path))
        return candidates

    def resume_epoch(self) -> int:
        """The epoch training will resume from (0 for a fresh run), read before ``fit``: to position the data."""
        candidates = self._candidates(warn=False)
        return candidates[0][0] if candidates else 0

    def _restore(self):
        tried = []
        for epoch, path in self._candidates():
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            try:
                self.model.load_weights(path)
            except Exception as e:  # noqa: BLE001 (a legacy or damaged file: try the previous copy)
                tried.append(path)
                self._warn(f"cannot load {path} ({type(e).__name__}: {e}); trying the previous copy")
                continue
            if tried or path != self._weights_path:
                self._warn(f"resuming from {path} (epoch {epoch})")
            self.model._initial_epoch = epoch
            return
        if tried:  # a failed load may have assigned some variables: starting over from them would be wrong
            raise ValueError(f"no usable backup in {self.backup_dir} (tried {', '.join(tried)}); "
                             "delete that folder to start the run over, or pass --overwrite")
        if any(os.path.exists(p) for p in (self._weights_path, self._prev_weights_path, self._training_metadata_path)):
            self._warn(f"no usable backup in {self.backup_dir}; starting from epoch 0")


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite (a ``ValueError``: the CLI prints it as one line)."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop training with an error at the first step whose loss is NaN or infinite.

    ``keras.callbacks.TerminateOnNaN`` only sets ``stop_training``: ``fit`` would then return and
    the run be saved as finished with NaN weights. This raises instead, naming the step, so the run is
    not finished and its backup keeps the last good epoch.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(np.asarray(loss))
        if not np.isfinite(loss):
            step = int(self.model.optimizer.iterations.numpy())
            raise TrainingDiverged(
                f"the loss is {loss} at step {step} (epoch batch {batch + 1}): training diverged; "
                "try a lower train.learning_rate (or train.grad_clip_norm, train.warmup_steps)")


class MetricsHistory(keras.callbacks.Callback):
    """Write each epoch's metrics to the run folder (``history.json``, atomically) as the epoch ends.

    Placed before the backup in the callback list, so the record of an epoch is on disk before
    the epoch counts as done: a run killed after its last backup (e.g. while saving ``model.keras``)
    still has its final metrics when the rerun, which trains no further epoch, writes its metadata.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch, logs=None):
        history = self.run_dir.read_history()
        del history[epoch:]  # a resumed run rewrites the epochs after its backup
        history.extend({} for _ in range(epoch - len(history)))
        history.append({k: float(np.ravel(np.asarray(v))[0]) for k, v in (logs or {}).items()})
        self.run_dir.write_history(history)
