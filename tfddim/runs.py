"""The run folder ``runs/<name>/``: :class:`RunDir` is the one module that writes and reads it.

A training run (``tfddim train``) holds:

- ``config.json``     the resolved config (a rerun with a different one is refused without ``overwrite``)
- ``backup/``         ``keras.callbacks.BackupAndRestore`` state, saved every epoch (resume after a kill)
- ``checkpoints/``    ``last.weights.h5``: the latest full weights (training network, EMA network, optimizer)
- ``logs/``           TensorBoard scalars; ``logs/samples/`` the EMA sample grids
- ``samples/``        the same grids as PNG files
- ``model.keras``     the EMA network, written atomically when training ends
- ``schedule.json``   the schedule (:class:`tfddim.diffusion.schedules.Schedule`), to sample the model with
- ``metadata.json``   steps, epochs, time, final metrics, data
- ``history.json``    each completed epoch's metrics, written as the epoch ends (before its backup)
- ``lock``            the PID and host of the trainer using the folder (:meth:`RunDir.lock`)

An autoencoder run (``tfddim train-autoencoder``) has the same files without ``schedule.json``;
``model.keras`` is the :class:`~tfddim.models.Autoencoder` and ``metadata.json`` adds ``kind``
``"autoencoder"``, ``latent_shape``, ``scale_factor`` and the reconstruction metrics
(:meth:`RunDir.load_first_stage`).

The non-chief workers of a multi-worker run keep their own copy in ``runs/<name>/<task_type>_<task_id>/``.
A run is *finished* when ``model.keras`` and ``metadata.json`` exist (they are written last). A run
has *progress* once an epoch completed (a backup, a checkpoint or a final file exists); a run without progress may be
started again with another config.

No TensorFlow import at module import time: Keras is imported by :meth:`RunDir.load_network`
and :meth:`RunDir.save_network` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from typing import Any, Iterator, Optional, Tuple

__all__ = ["RunDir", "RunLocked", "CONFIG", "SCHEDULE", "METADATA", "MODEL", "HISTORY", "LOCK"]

CONFIG = "config.json"
SCHEDULE = "schedule.json"
METADATA = "metadata.json"
MODEL = "model.keras"
HISTORY = "history.json"
LOCK = "lock"
BACKUP = "backup"
# The weights files of the backup (pipelines.callbacks.AtomicBackupAndRestore, Keras' names for the
# latest copy; Keras' own previous copy, .bkp): one of them means an epoch completed.
BACKUP_WEIGHTS = ("latest.weights.h5", "previous.weights.h5", "latest.weights.h5.bkp")
CHECKPOINT = os.path.join("checkpoints", "last.weights.h5")
LOGS = "logs"
SAMPLES = "samples"


class RunLocked(FileExistsError):
    """Another live process holds the run folder's lock (a ``FileExistsError``: the CLI prints it as one line)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunDir:
    """One run folder: its paths, its JSON files and its network.

    Args:
        path: the folder, e.g. ``runs/digits`` (kept as given: error messages quote it).
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    @classmethod
    def of(cls, runs_dir: str, name: str, task: Optional[Tuple[str, int]] = None) -> "RunDir":
        """The folder of run ``name`` under ``runs_dir``; ``task=(task_type, task_id)`` for a non-chief worker."""
        if not name:
            raise ValueError(f"name must be a non-empty run name, got {name!r}")
        suffix = "" if task is None else f"{task[0]}_{task[1]}"
        return cls(os.path.normpath(os.path.join(runs_dir, name, suffix)))

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    # ------------------------------------------------------------------ paths
    def file(self, name: str) -> str:
        """The path of entry ``name`` in the folder."""
        return os.path.join(self.path, name)

    @property
    def config_path(self) -> str:
        return self.file(CONFIG)

    @property
    def schedule_path(self) -> str:
        return self.file(SCHEDULE)

    @property
    def metadata_path(self) -> str:
        return self.file(METADATA)

    @property
    def model_path(self) -> str:
        return self.file(MODEL)

    @property
    def history_path(self) -> str:
        return self.file(HISTORY)

    @property
    def lock_path(self) -> str:
        return self.file(LOCK)

    @property
    def backup_dir(self) -> str:
        return self.file(BACKUP)

    @property
    def checkpoint_path(self) -> str:
        return self.file(CHECKPOINT)

    @property
    def logs_dir(self) -> str:
        return self.file(LOGS)

    @property
    def sample_logs_dir(self) -> str:
        """TensorBoard images of the EMA sample grids."""
        return os.path.join(self.logs_dir, SAMPLES)

    @property
    def samples_dir(self) -> str:
        """The EMA sample grids as PNG files."""
        return self.file(SAMPLES)

    # ------------------------------------------------------------------ reading
    def require(self, name: str, kind: str = "training") -> str:
        """The path of entry ``name``; a ``ValueError`` if it is missing (the run is not finished)."""
        path = self.file(name)
        if not os.path.exists(path):
            raise ValueError(f"{self.path} is not a finished {kind} run: {name} is missing")
        return path

    def read_json(self, name: str) -> Any:
        """The JSON entry ``name`` (``ValueError`` naming the file if it is missing)."""
        with open(self.require(name)) as f:
            return json.load(f)

    def read_config(self) -> dict:
        """``config.json``: the resolved run config as a dict."""
        return self.read_json(CONFIG)

    def read_metadata(self) -> dict:
        """``metadata.json``: steps, epochs, time, final metrics, data."""
        return self.read_json(METADATA)

    def read_schedule(self):
        """``schedule.json`` as a :class:`tfddim.diffusion.schedules.Schedule`."""
        from tfddim.diffusion.schedules import Schedule

        return Schedule.from_config(self.read_json(SCHEDULE))

    def load_network(self, kind: str = "training"):
        """``model.keras`` (the EMA network) through ``keras.models.load_model``.

        Args:
            kind: the word in the error of a missing model: "``<dir> is not a finished <kind> run``".
        """
        path = self.require(MODEL, kind)
        import keras

        import tfddim.models  # noqa: F401  (registers the networks for load_model)

        try:
            return keras.models.load_model(path)
        except (OSError, ValueError, KeyError, EOFError) as e:  # a truncated zip, a damaged config or weights file
            raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else e!r}); "
                             "the file is damaged: train the run again or restore it") from e

    def load_first_stage(self):
        """``(autoencoder, scale_factor)`` of a finished autoencoder run: latent diffusion's first stage.

        A ``ValueError`` names the folder if it is not a finished run or holds another network, or if its
        ``scale_factor`` is missing or not a finite number > 0.
        """
        meta = self.read_metadata() if os.path.exists(self.metadata_path) else None
        if meta is None or meta.get("kind") != "autoencoder":
            raise ValueError(f"{self.path} is not a finished autoencoder run (tfddim train-autoencoder): "
                             f"{'metadata.json is missing' if meta is None else 'its metadata has no kind autoencoder'}")
        network = self.load_network("autoencoder")
        if not (hasattr(network, "encode") and hasattr(network, "decode")):
            raise ValueError(f"{self.path}/model.keras is not an Autoencoder")
        scale = meta.get("scale_factor")
        if not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise ValueError(f"{self.metadata_path}: scale_factor must be a finite number > 0, got {scale!r}")
        return network, float(scale)

    def load_classifier(self, kind: str = "classifier"):
        """``model.keras`` of a noise-aware classifier run; a ``ValueError`` if it holds another network."""
        network = self.load_network(kind)
        if not hasattr(network, "log_prob_fn"):
            raise ValueError(f"{self.path} does not hold a NoisyClassifier")
        return network

    def is_finished(self) -> bool:
        """True once training wrote its last files, ``model.keras`` and ``metadata.json``."""
        return os.path.exists(self.model_path) and os.path.exists(self.metadata_path)

    def has_progress(self) -> bool:
        """True once an epoch completed: a backup of the training state, a checkpoint or a final file exists."""
        return any(os.path.exists(p) for p in (self.checkpoint_path, self.model_path, self.metadata_path)) or any(
            os.path.exists(os.path.join(self.backup_dir, name)) for name in BACKUP_WEIGHTS)

    def read_history(self) -> list:
        """``history.json``: one dict of metrics per completed epoch; ``[]`` if none was written."""
        try:
            with open(self.history_path) as f:
                history = json.load(f)
        except (OSError, ValueError):
            return []
        return history if isinstance(history, list) else []

    # ------------------------------------------------------------------ the lock
    def _read_lock(self) -> Optional[dict]:
        try:
            with open(self.lock_path) as f:
                holder = json.load(f)
            return holder if isinstance(holder, dict) else None
        except (OSError, ValueError):
            return None

    def _lock_is_stale(self, holder: Optional[dict]) -> bool:
        """A lock of a dead process on this host (or an unreadable one, older than a few seconds)."""
        if holder is None:
            try:
                return time.time() - os.path.getmtime(self.lock_path) > 10
            except OSError:
                return True  # gone meanwhile
        if holder.get("host") != socket.gethostname():
            return False  # cannot tell whether a process on another host lives
        try:
            return not _pid_alive(int(holder["pid"]))
        except (KeyError, TypeError, ValueError):
            return False

    @contextlib.contextmanager
    def lock(self) -> Iterator["RunDir"]:
        """Hold the folder for one trainer: ``with run_dir.lock(): ...``.

        The lock is the file ``lock``, created with ``O_CREAT | O_EXCL`` and holding the PID and host of
        its owner, removed on exit. A second trainer is refused at once (:class:`RunLocked`, naming the
        PID and host). A lock left by a process that no longer runs on this host (``kill -9``) is taken
        over, with a printed note. A lock from another host is never taken over: delete it by hand if
        that process is gone.
        """
        os.makedirs(self.path, exist_ok=True)
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(5):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_lock()
                if not self._lock_is_stale(holder):
                    who = (f"PID {holder.get('pid')} on {holder.get('host')}" if holder
                           else "a process that is writing it now")
                    raise RunLocked(f"{self.path} is in use by {who} (lock file {self.lock_path}); wait for it to "
                                    "finish, or delete the lock file if that process is gone") from None
                self._take_over(holder)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            break
        else:
            raise RunLocked(f"could not take the lock {self.lock_path}: other processes keep taking it")
        try:
            yield self
        finally:
            if self._read_lock() == json.loads(json.dumps(mine)):  # still ours (an overwrite keeps it)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.lock_path)

    def _take_over(self, holder: Optional[dict]) -> None:
        """Remove a stale lock; renamed aside first, so a live lock that replaced it meanwhile is put back."""
        aside = f"{self.lock_path}.stale.{os.getpid()}"
        try:
            os.rename(self.lock_path, aside)
        except FileNotFoundError:
            return  # another process took it over first
        try:
            with open(aside) as f:
                moved = json.load(f)
        except (OSError, ValueError):
            moved = None
        if moved != holder:  # a fresh lock slipped in between: put it back unless yet another one exists
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.lock_path)
        else:
            who = f"PID {holder['pid']} on {holder['host']}" if holder else "an unknown process"
            print(f"tfddim: taking over the lock of {self.path} from {who}, which is no longer running")
        os.remove(aside)

    # ------------------------------------------------------------------ writing
    def prepare(self, config: dict, overwrite: bool = False) -> bool:
        """Make the folder ready for training with ``config``; True if it already holds that run, finished.

        A folder with another ``config.json`` is refused (``ValueError``) unless ``overwrite``,
        which empties the folder first, or unless the run never completed an epoch (no backup, no
        checkpoint: e.g. it failed at start), which is emptied and started again with a printed note.
        Otherwise the folder is created and ``config.json`` (re)written, and training starts or
        resumes from ``backup/``. The ``lock`` file, if any, is kept.
        """
        if overwrite and os.path.isdir(self.path):
            self._clear()
        elif os.path.exists(self.config_path):
            if self.read_config() != json.loads(json.dumps(config)):
                if self.has_progress():
                    raise ValueError(f"{self.path} holds a run with a different config; "
                                     "pick another name or pass --overwrite")
                print(f"tfddim: {self.path} never completed an epoch; starting it again with the new config")
                self._clear()
            elif self.is_finished():
                return True
        os.makedirs(self.path, exist_ok=True)
        self.write_json(CONFIG, config)
        return False

    def _clear(self) -> None:
        """Delete everything in the folder but its lock."""
        for name in os.listdir(self.path):
            if name == LOCK:
                continue
            path = self.file(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def write_history(self, history: list) -> str:
        """``history.json``: one dict of metrics per completed epoch."""
        return self.write_json(HISTORY, history)

    def write_json(self, name: str, value) -> str:
        """Write ``value`` to entry ``name`` atomically (a temp file, then ``os.replace``); returns the path."""
        path = self.file(name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
        return path

    def write_schedule(self, schedule) -> str:
        """``schedule.json`` from a :class:`~tfddim.diffusion.schedules.Schedule`."""
        return self.write_json(SCHEDULE, schedule.to_config())

    def write_metadata(self, metadata: dict) -> str:
        return self.write_json(METADATA, metadata)

    def save_network(self, network) -> str:
        """Save ``network`` to ``model.keras`` atomically (Keras needs the ``.keras`` suffix on the temp file)."""
        path = self.model_path
        tmp = path + ".tmp.keras"
        network.save(tmp)
        os.replace(tmp, path)
        return path
