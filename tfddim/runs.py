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

The non-chief workers of a multi-worker run keep their own copy in ``runs/<name>/<task_type>_<task_id>/``.
A run is *finished* when ``model.keras`` and ``metadata.json`` exist (they are written last).

No TensorFlow import at module import time: Keras is imported by :meth:`RunDir.load_network`
and :meth:`RunDir.save_network` only.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional, Tuple

__all__ = ["RunDir", "CONFIG", "SCHEDULE", "METADATA", "MODEL"]

CONFIG = "config.json"
SCHEDULE = "schedule.json"
METADATA = "metadata.json"
MODEL = "model.keras"
BACKUP = "backup"
CHECKPOINT = os.path.join("checkpoints", "last.weights.h5")
LOGS = "logs"
SAMPLES = "samples"


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

        return keras.models.load_model(path)

    def load_classifier(self, kind: str = "classifier"):
        """``model.keras`` of a noise-aware classifier run; a ``ValueError`` if it holds another network."""
        network = self.load_network(kind)
        if not hasattr(network, "log_prob_fn"):
            raise ValueError(f"{self.path} does not hold a NoisyClassifier")
        return network

    def is_finished(self) -> bool:
        """True once training wrote its last files, ``model.keras`` and ``metadata.json``."""
        return os.path.exists(self.model_path) and os.path.exists(self.metadata_path)

    # ------------------------------------------------------------------ writing
    def prepare(self, config: dict, overwrite: bool = False) -> bool:
        """Make the folder ready for training with ``config``; True if it already holds that run, finished.

        A folder with another ``config.json`` is refused (``ValueError``) unless ``overwrite``,
        which deletes the folder first. Otherwise the folder is created and ``config.json``
        (re)written, and training starts or resumes from ``backup/``.
        """
        if overwrite and os.path.isdir(self.path):
            shutil.rmtree(self.path)
        elif os.path.exists(self.config_path):
            if self.read_config() != json.loads(json.dumps(config)):
                raise ValueError(f"{self.path} holds a run with a different config; "
                                 "pick another name or pass --overwrite")
            if self.is_finished():
                return True
        os.makedirs(self.path, exist_ok=True)
        self.write_json(CONFIG, config)
        return False

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
