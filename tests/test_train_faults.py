"""Faults of a training run: a kill or a failed write at any instant of the backup, two trainers of one run,
a failed start, a diverging loss, a kill during the final save; and reproducible (also resumed) runs."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfddim.models  # noqa: F401  (registers the networks for load_model)
from tfddim.pipelines import callbacks as callbacks_lib
from tfddim.pipelines import config, train
from tfddim.runs import RunDir, RunLocked

EPOCHS, STEPS = 3, 4
TINY = [
    f"train.epochs={EPOCHS}", f"train.steps_per_epoch={STEPS}", "train.verbose=0", "train.sample_every=0",
    "data.batch_size=32", "model.config.hidden_units=32", "model.config.embedding_dim=16",
    "diffusion.num_timesteps=100", "sampling.num_steps=5",
]


def _cfg(*overrides):
    return config.load("mixture2d", TINY + list(overrides))


class _Interrupt(BaseException):
    """Stands for a kill: raised out of fit, nothing below it runs (not an Exception: nothing catches it)."""


class _StopBefore(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupt(f"interrupted before epoch {epoch + 1}")


def _interrupted(monkeypatch, cfg, runs_dir, before_epoch=2):
    """Train ``cfg`` until ``before_epoch`` epochs are backed up, then stop as a kill would."""
    make = train._callbacks
    with monkeypatch.context() as m:
        m.setattr(train, "_callbacks", lambda *a, **k: make(*a, **k) + [_StopBefore(before_epoch)])
        with pytest.raises(_Interrupt):
            train.run(cfg, runs_dir=runs_dir)


def _spy_resume(monkeypatch) -> list:
    """The epochs the backup resumes from, one per run."""
    seen = []
    resume = callbacks_lib.AtomicBackupAndRestore.resume_epoch

    def spy(self):
        seen.append(resume(self))
        return seen[-1]

    monkeypatch.setattr(callbacks_lib.AtomicBackupAndRestore, "resume_epoch", spy)
    return seen


def _weights(path):
    return keras.models.load_model(path).get_weights()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run of the tiny config: its folder and metadata."""
    runs_dir = str(tmp_path_factory.mktemp("straight"))
    meta = train.run(_cfg(), runs_dir=runs_dir)
    return RunDir.of(runs_dir, "mixture2d"), meta


# --------------------------------------------------------------------------- 1. the backup survives
@pytest.mark.parametrize("damage", ["weights_empty", "weights_half", "record_empty"])
def test_a_corrupt_latest_backup_falls_back_to_the_previous_copy(tmp_path, monkeypatch, capsys, damage):
    cfg = _cfg()
    _interrupted(monkeypatch, cfg, str(tmp_path))
    backup = RunDir.of(str(tmp_path), "mixture2d").backup_dir
    latest = os.path.join(backup, "training_metadata.json" if damage == "record_empty" else "latest.weights.h5")
    size = os.path.getsize(latest)
    with open(latest, "r+b") as f:
        f.truncate(size // 2 if damage == "weights_half" else 0)
    capsys.readouterr()
    seen = _spy_resume(monkeypatch)
    meta = train.run(cfg, runs_dir=str(tmp_path))
    out = capsys.readouterr().out
    assert "warning: " in out and latest in out, out  # a printed line names the damaged file
    assert f"resuming from {os.path.join(backup, 'previous.weights.h5')} (epoch 1)" in out, out
    assert seen == [1] and meta["steps"] == EPOCHS * STEPS and np.isfinite(meta["final_metrics"]["loss"])


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4])
def test_a_kill_between_any_two_steps_of_a_backup_loses_at_most_that_epoch(tmp_path, monkeypatch, kill_at):
    """The 2nd epoch's backup renames 4 times; stop before each (the files are as a kill leaves them)."""
    cfg = _cfg()
    backup = RunDir.of(str(tmp_path), "mixture2d").backup_dir
    calls = []
    replace = os.replace

    def replace_or_die(src, dst):
        if os.path.dirname(os.path.abspath(dst)) == os.path.abspath(backup):
            calls.append(dst)
            if len(calls) == 2 + kill_at:  # the 1st backup renames twice (no previous copy yet)
                raise _Interrupt(f"killed before renaming to {dst}")
        return replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(callbacks_lib.os, "replace", replace_or_die)
        with pytest.raises(_Interrupt):
            train.run(cfg, runs_dir=str(tmp_path))
    seen = _spy_resume(monkeypatch)
    meta = train.run(cfg, runs_dir=str(tmp_path))
    assert seen == [1]  # epoch 2 was being saved: resumed after epoch 1
    assert meta["steps"] == EPOCHS * STEPS


def test_a_failed_backup_write_keeps_the_previous_backup(tmp_path, monkeypatch):
    """A full disk while writing the 2nd backup: the error stops training, the 1st backup still resumes."""
    cfg = _cfg()
    save_weights = keras.Model.save_weights
    saves = []

    def full_disk(self, filepath, *a, **k):
        if os.sep + "backup" + os.sep in str(filepath):
            saves.append(filepath)
            if len(saves) == 2:
                with open(filepath, "wb") as f:
                    f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # a start, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device", filepath)
        return save_weights(self, filepath, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(keras.Model, "save_weights", full_disk)
        with pytest.raises(OSError, match="No space left"):
            train.run(cfg, runs_dir=str(tmp_path))
    backup = RunDir.of(str(tmp_path), "mixture2d").backup_dir
    assert not os.path.exists(saves[-1]), "the half-written temp file is removed"
    assert json.load(open(os.path.join(backup, "training_metadata.json")))["epoch"] == 1
    seen = _spy_resume(monkeypatch)
    assert train.run(cfg, runs_dir=str(tmp_path))["steps"] == EPOCHS * STEPS and seen == [1]


_KILL_IN_SAVE = '''
import os, sys

import h5py

# Test-only: SIGKILL this process in the middle of writing the 2nd backup file (h5py opened it and
# wrote the weights, but never closed it), then run the CLI with the given arguments.
backup = os.path.join(sys.argv[1], "backup")
writes = []
_init, _close = h5py.File.__init__, h5py.File.close


def init(self, name, mode="r", *a, **k):
    _init(self, name, mode, *a, **k)
    if mode == "w" and os.path.dirname(os.path.abspath(os.fspath(name))) == os.path.abspath(backup):
        writes.append(os.fspath(name))


def close(self):
    if len(writes) == 2 and self.id.valid and self.mode == "r+" and os.fspath(self.filename) == writes[1]:
        self.flush()  # some of the file is on disk, not all of it
        os.kill(os.getpid(), 9)
    _close(self)


h5py.File.__init__, h5py.File.close = init, close
from tfddim.cli import main

sys.exit(main(sys.argv[2:]))
'''


def test_kill_9_inside_the_backup_write_then_the_same_command_finishes(tmp_path):
    """A real SIGKILL from inside the 2nd epoch's backup write; the same command then resumes and finishes."""
    script = tmp_path / "kill_in_save.py"
    script.write_text(_KILL_IN_SAVE)
    runs_dir = tmp_path / "runs"
    args = ["train", "--config", "mixture2d", "--runs-dir", str(runs_dir), *[a for o in TINY for a in ("--set", o)]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    killed = subprocess.Popen([sys.executable, str(script), str(runs_dir / "mixture2d"), *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, out
    run_dir = RunDir.of(str(runs_dir), "mixture2d")
    assert os.path.exists(run_dir.lock_path) and not run_dir.is_finished()  # a dead trainer's lock is left
    assert json.load(open(os.path.join(run_dir.backup_dir, "training_metadata.json")))["epoch"] == 1

    again = subprocess.run([sys.executable, "-m", "tfddim.cli", *args], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"taking over the lock of {run_dir.path} from PID {killed.pid} on " in again.stdout, again.stdout
    meta = run_dir.read_metadata()
    assert meta["steps"] == EPOCHS * STEPS and len(run_dir.read_history()) == EPOCHS
    assert not os.path.exists(run_dir.lock_path)


# --------------------------------------------------------------------------- 2. the lock
def test_a_held_lock_refuses_a_second_trainer_at_once(tmp_path):
    run_dir = RunDir.of(str(tmp_path), "mixture2d")
    with run_dir.lock():
        with pytest.raises(RunLocked, match=f"in use by PID {os.getpid()} on "):
            train.run(_cfg(), runs_dir=str(tmp_path))
        assert not os.path.exists(run_dir.config_path)  # refused before touching the folder
    assert not os.path.exists(run_dir.lock_path)


def test_the_cli_prints_a_held_lock_as_one_line(tmp_path, capsys):
    from tfddim import cli

    run_dir = RunDir.of(str(tmp_path), "mixture2d")
    with run_dir.lock(), pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--config", "mixture2d", "--runs-dir", str(tmp_path), *[a for o in TINY for a in ("--set", o)]])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tfddim train: error: ") and f"PID {os.getpid()}" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- 3. a failed start
def test_a_run_that_failed_at_start_takes_the_corrected_config(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such file"):
        train.run(_cfg(f"data.source=npz:{tmp_path / 'missing.npz'}"), runs_dir=str(tmp_path))
    run_dir = RunDir.of(str(tmp_path), "mixture2d")
    assert os.path.exists(run_dir.config_path) and not run_dir.has_progress()
    fixed = _cfg("train.epochs=1", "train.steps_per_epoch=2")
    meta = train.run(fixed, runs_dir=str(tmp_path))
    assert "never completed an epoch; starting it again with the new config" in capsys.readouterr().out
    assert meta["steps"] == 2 and run_dir.read_config() == json.loads(json.dumps(fixed.to_dict()))
    # once an epoch is done, another config is refused again
    with pytest.raises(ValueError, match="different config"):
        train.run(_cfg(), runs_dir=str(tmp_path))


# --------------------------------------------------------------------------- 4. divergence
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "0"])
def test_a_non_finite_learning_rate_is_refused_at_config_load(value):
    with pytest.raises(ValueError, match="train.learning_rate must be a finite number > 0"):
        _cfg(f"train.learning_rate={value}")


def test_a_non_finite_loss_stops_with_an_error_naming_the_step(tmp_path):
    cfg = _cfg()
    object.__setattr__(cfg.train, "learning_rate", float("nan"))  # past the config check: divergence stand-in
    with pytest.raises(callbacks_lib.TrainingDiverged, match=r"the loss is nan at step 2 .*lower train\.learning_rate"):
        train.run(cfg, runs_dir=str(tmp_path))
    run_dir = RunDir.of(str(tmp_path), "mixture2d")
    assert not os.path.exists(run_dir.model_path) and not os.path.exists(run_dir.metadata_path)
    assert not run_dir.has_progress()  # no epoch completed: the corrected config may reuse the name
    assert isinstance(callbacks_lib.TrainingDiverged("x"), ValueError)  # the CLI prints it as one line


# --------------------------------------------------------------------------- 5. reproducible runs
def test_two_fresh_runs_of_one_config_give_identical_weights(tmp_path, straight):
    run_dir, meta = straight
    again = train.run(_cfg(), runs_dir=str(tmp_path))
    assert again["final_metrics"] == meta["final_metrics"]
    for a, b in zip(_weights(run_dir.model_path), _weights(again["model"])):
        np.testing.assert_array_equal(a, b)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch, straight):
    """The data order continues where it stopped (the stream skips the trained batches), and t/ε follow the step."""
    run_dir, meta = straight
    cfg = _cfg()
    _interrupted(monkeypatch, cfg, str(tmp_path), before_epoch=1)
    resumed = train.run(cfg, runs_dir=str(tmp_path))
    assert resumed["steps"] == meta["steps"] and resumed["final_metrics"] == meta["final_metrics"]
    for a, b in zip(_weights(run_dir.model_path), _weights(resumed["model"])):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- 6. a kill during the final save
def test_a_rerun_after_a_kill_during_the_model_save_keeps_the_final_metrics(tmp_path, straight):
    run_dir, meta = straight
    copy = RunDir(shutil.copytree(run_dir.path, tmp_path / "mixture2d"))
    os.remove(copy.model_path)  # killed while writing model.keras: neither it nor metadata.json is there
    os.remove(copy.metadata_path)
    again = train.run(_cfg(), runs_dir=str(tmp_path))
    assert again["steps"] == meta["steps"] and copy.is_finished()
    assert again["final_metrics"] == meta["final_metrics"] and "loss" in again["final_metrics"]
