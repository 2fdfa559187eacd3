"""tfddim.runs.RunDir, the one owner of runs/<name>/: paths, reading, the finished / different-config / overwrite rule."""

import json
import os
import re
import subprocess
import sys

import pytest

from tfddim.diffusion import schedules
from tfddim.runs import RunDir

CONFIG = {"name": "tiny", "train": {"epochs": 2, "seed": 0}, "sampling": {"clip_x0": [-1.0, 1.0]}}


def _write(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


def _finished(tmp_path, config=CONFIG) -> RunDir:
    """A fake finished run: the JSON files, and an empty file where model.keras goes."""
    run = RunDir.of(str(tmp_path), config["name"])
    os.makedirs(run.path)
    _write(run.config_path, config)
    _write(run.metadata_path, {"steps": 10, "model": run.model_path})
    run.write_schedule(schedules.get("linear", num_timesteps=100))
    open(run.model_path, "w").close()
    return run


def test_paths_name_every_entry(tmp_path):
    run = RunDir.of(str(tmp_path), "digits")
    assert run.path == os.path.join(str(tmp_path), "digits")
    assert [os.path.relpath(p, run.path) for p in (run.config_path, run.schedule_path, run.metadata_path, run.model_path,
                                                   run.backup_dir, run.checkpoint_path, run.logs_dir, run.samples_dir,
                                                   run.sample_logs_dir)] == [
        "config.json", "schedule.json", "metadata.json", "model.keras", "backup",
        os.path.join("checkpoints", "last.weights.h5"), "logs", "samples", os.path.join("logs", "samples")]
    # the non-chief workers of a multi-worker run keep their own folder
    assert RunDir.of(str(tmp_path), "digits", ("worker", 1)).path == os.path.join(str(tmp_path), "digits", "worker_1")
    with pytest.raises(ValueError, match="name"):
        RunDir.of(str(tmp_path), "")


def test_a_finished_run_reads_back(tmp_path):
    run = _finished(tmp_path)
    assert run.is_finished()
    assert run.read_config() == CONFIG and run.read_metadata()["steps"] == 10
    schedule = run.read_schedule()
    assert isinstance(schedule, schedules.Schedule) and schedule.num_timesteps == 100
    assert schedule.to_config() == schedules.get("linear", num_timesteps=100).to_config()


@pytest.mark.parametrize("missing", ["config.json", "metadata.json", "schedule.json", "model.keras"])
def test_a_missing_file_names_the_folder_and_the_file(tmp_path, missing):
    run = _finished(tmp_path)
    os.remove(run.file(missing))
    read = {"config.json": run.read_config, "metadata.json": run.read_metadata, "schedule.json": run.read_schedule,
            "model.keras": run.load_network}[missing]
    with pytest.raises(ValueError, match=f"^{re.escape(run.path)} is not a finished training run: {re.escape(missing)} is missing$"):
        read()
    assert run.is_finished() == (missing not in ("model.keras", "metadata.json"))


def test_a_missing_classifier_model_says_classifier_run(tmp_path):
    with pytest.raises(ValueError, match="is not a finished classifier run: model.keras is missing"):
        RunDir(str(tmp_path)).load_classifier()


def test_prepare_creates_the_folder_and_writes_the_config(tmp_path):
    run = RunDir.of(str(tmp_path), "tiny")
    assert run.prepare(CONFIG) is False
    assert run.read_config() == CONFIG and not run.is_finished()
    # an unfinished run with the same config resumes (not finished, the folder is kept)
    open(os.path.join(run.path, "keep"), "w").close()
    assert run.prepare(CONFIG) is False and os.path.exists(os.path.join(run.path, "keep"))


def test_prepare_says_finished_refuses_another_config_and_overwrites(tmp_path):
    run = _finished(tmp_path)
    assert run.prepare(json.loads(json.dumps(CONFIG))) is True
    other = dict(CONFIG, train={"epochs": 3, "seed": 0})
    with pytest.raises(ValueError, match="holds a run with a different config; pick another name or pass --overwrite"):
        run.prepare(other)
    assert run.read_config() == CONFIG  # refused: nothing changed
    assert run.prepare(other, overwrite=True) is False
    assert run.read_config() == other and not run.is_finished()
    assert sorted(os.listdir(run.path)) == ["config.json"]


def test_prepare_compares_the_config_as_json(tmp_path):
    """Tuples in the config dict are lists in config.json: the same run, not a different config."""
    run = _finished(tmp_path)
    assert run.prepare(dict(CONFIG, sampling={"clip_x0": (-1.0, 1.0)})) is True


def test_json_writes_are_atomic_and_sorted(tmp_path):
    run = RunDir(str(tmp_path))
    path = run.write_metadata({"b": 1, "a": 2})
    assert path == run.metadata_path and json.load(open(path)) == {"a": 2, "b": 1}
    assert open(path).read().index('"a"') < open(path).read().index('"b"')
    assert os.listdir(str(tmp_path)) == ["metadata.json"]  # no temp file left


def test_save_network_is_atomic(tmp_path):
    class Net:
        def save(self, path):
            assert path.endswith(".keras")  # Keras insists on the suffix
            open(path, "w").write("weights")

    run = RunDir(str(tmp_path))
    assert run.save_network(Net()) == run.model_path
    assert os.listdir(str(tmp_path)) == ["model.keras"]


def test_importing_runs_does_not_import_tensorflow():
    code = "import sys, tfddim.runs; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- the lock
def _dead_pid() -> int:
    pid = 999_999_999  # above any pid_max
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def test_the_lock_holds_the_pid_and_host_and_refuses_a_second_holder(tmp_path):
    import socket

    from tfddim.runs import RunLocked

    run = RunDir.of(str(tmp_path), "tiny")
    with run.lock() as held:
        assert held is run
        holder = json.load(open(run.lock_path))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunLocked, match=f"in use by PID {os.getpid()} on {re.escape(socket.gethostname())}"):
            with run.lock():
                pass
        assert isinstance(RunLocked("x"), FileExistsError)  # the CLI prints it as one line
        # an overwrite empties the folder but keeps the lock
        run.prepare(CONFIG)
        assert run.prepare(dict(CONFIG, name="other"), overwrite=True) is False
        assert sorted(os.listdir(run.path)) == ["config.json", "lock"]
    assert not os.path.exists(run.lock_path)  # released


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, capsys):
    import socket

    run = RunDir.of(str(tmp_path), "tiny")
    os.makedirs(run.path)
    pid = _dead_pid()
    _write(run.lock_path, {"pid": pid, "host": socket.gethostname()})
    with run.lock():
        assert json.load(open(run.lock_path))["pid"] == os.getpid()
    assert f"taking over the lock of {run.path} from PID {pid} on {socket.gethostname()}" in capsys.readouterr().out
    assert os.listdir(run.path) == []


def test_a_lock_of_another_host_or_being_written_is_not_taken_over(tmp_path):
    from tfddim.runs import RunLocked

    run = RunDir.of(str(tmp_path), "tiny")
    os.makedirs(run.path)
    _write(run.lock_path, {"pid": _dead_pid(), "host": "another-host.example"})
    with pytest.raises(RunLocked, match="on another-host.example"):
        with run.lock():
            pass
    open(run.lock_path, "w").close()  # just created, its content not yet written
    with pytest.raises(RunLocked, match="a process that is writing it now"):
        with run.lock():
            pass
    os.utime(run.lock_path, (0, 0))  # ... and empty for long: its writer died
    with run.lock():
        pass


# --------------------------------------------------------------------------- a run without progress
def test_a_run_that_never_completed_an_epoch_takes_another_config(tmp_path, capsys):
    run = RunDir.of(str(tmp_path), "tiny")
    run.prepare(CONFIG)
    os.makedirs(run.logs_dir)  # TensorBoard had started
    other = dict(CONFIG, train={"epochs": 3, "seed": 0})
    assert not run.has_progress() and run.prepare(other) is False
    assert run.read_config() == other and sorted(os.listdir(run.path)) == ["config.json"]
    assert "never completed an epoch; starting it again with the new config" in capsys.readouterr().out
    # a completed epoch (a backup, or a checkpoint) makes the config binding
    for progress in (os.path.join("backup", "latest.weights.h5"), os.path.join("checkpoints", "last.weights.h5")):
        os.makedirs(os.path.dirname(run.file(progress)), exist_ok=True)
        open(run.file(progress), "w").close()
        assert run.has_progress()
        with pytest.raises(ValueError, match="different config"):
            run.prepare(CONFIG)
        os.remove(run.file(progress))


def test_history_reads_back_and_is_empty_when_missing(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.read_history() == []
    run.write_history([{"loss": 1.0}, {"loss": 0.5}])
    assert run.read_history() == [{"loss": 1.0}, {"loss": 0.5}]


def test_a_damaged_model_file_is_named(tmp_path):
    from tfddim.runs import RunDir

    run = RunDir(str(tmp_path / "damaged"))
    os.makedirs(run.path, exist_ok=True)
    with open(run.model_path, "wb") as f:
        f.write(b"PK\x03\x04 not a whole zip")
    with pytest.raises(ValueError, match="model.keras cannot be read.*damaged"):
        run.load_network()
