"""Crash safety of export_saved_model: a kill between the steps of --overwrite, killed exports' temporaries, NaN weights."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tfddim import export
from tfddim.export import saved_model, versions

CLIP = export.ExportOptions(clip_x0=(-1, 1))  # the options of the session's `uncond` export


def dead_pid() -> int:
    """The id of a process that has exited (a killed export's)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def samples_from(path):
    """A version folder loads and samples (what a model server would do with it)."""
    from tfddim.runtime import SavedModelSampler

    s = SavedModelSampler(path)
    out = s.sample(s.starting_noise(2, seed=0), 2)
    assert out.shape == (2, 8, 8, 1) and np.all(np.isfinite(out))
    return out


def copy_of(uncond, tmp_path) -> str:
    """The session's tiny export (its version folder only: other tests leave files beside it) copied, to break."""
    base = str(tmp_path / "tiny")
    os.makedirs(base)
    shutil.copytree(uncond[2], os.path.join(base, os.path.basename(uncond[2])))
    return base


def test_a_kill_between_the_overwrite_steps_leaves_the_old_version_to_restore(uncond, export_sched, tmp_path, monkeypatch):
    net = uncond[0]
    base = copy_of(uncond, tmp_path)
    pb = os.path.join(base, "1", "saved_model.pb")
    before = open(pb, "rb").read()
    monkeypatch.setattr(versions, "_exchange", lambda a, b: False)  # the three-rename path (no RENAME_EXCHANGE)
    real_rename, renames = os.rename, []

    def killed_after_the_first_rename(src, dst, *args, **kwargs):
        renames.append((src, dst))
        if len(renames) > 1:  # the process dies: no later rename (not even the undo) happens
            raise KeyboardInterrupt("simulated kill")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", killed_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(net, export_sched, (8, 8, 1), base, 1, CLIP, overwrite=True, warmup=False)
    monkeypatch.setattr(os, "rename", real_rename)
    # step 1 happened (the old version aside, under a name TF Serving ignores), step 2 did not
    assert renames[0] == (os.path.join(base, "1"), os.path.join(base, f".old-1-{os.getpid()}"))
    assert sorted(os.listdir(base)) == [f".old-1-{os.getpid()}"]

    # the next run restores the old export first, then refuses to replace it without --overwrite
    with pytest.raises(FileExistsError, match="exists"):
        export.export_saved_model(net, export_sched, (8, 8, 1), base, 1, CLIP, warmup=False)
    assert sorted(os.listdir(base)) == ["1"]
    assert open(pb, "rb").read() == before
    samples_from(os.path.join(base, "1"))


def test_an_incomplete_version_beside_its_old_copy_is_restored(uncond, export_sched, tmp_path):
    """variables/ without saved_model.pb (what deleting before renaming could leave) loses to the .old copy."""
    net = uncond[0]
    base = copy_of(uncond, tmp_path)
    old = os.path.join(base, f".old-1-{dead_pid()}")
    shutil.copytree(os.path.join(base, "1"), old)
    os.remove(os.path.join(base, "1", "saved_model.pb"))
    path = export.export_saved_model(net, export_sched, (8, 8, 1), base, 2, CLIP, warmup=False)  # any export recovers
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert os.path.isfile(os.path.join(base, "1", "saved_model.pb"))
    np.testing.assert_array_equal(samples_from(os.path.join(base, "1")), samples_from(path))


def test_an_overwrite_replaces_completely_and_killed_exports_leftovers_go(uncond, export_sched, tmp_path):
    net = uncond[0]
    base = copy_of(uncond, tmp_path)
    gone = dead_pid()
    stale = [f".tmp-1-{gone}-x", f".tmp-3-{gone}-abc", f".old-1-{gone}"]  # killed exports (a complete 1 beside .old)
    live = [".tmp-1-1-y", ".tmp-1-k2j4hs8a"]  # a live process's (pid 1), and one named before pids were (unknown)
    for name in stale + live:
        os.makedirs(os.path.join(base, name, "variables"))
    path = export.export_saved_model(net, export_sched, (8, 8, 1), base, 1, CLIP, overwrite=True, warmup=False)
    assert sorted(os.listdir(base)) == sorted(["1", *live])
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    np.testing.assert_array_equal(samples_from(path), samples_from(uncond[2]))


def test_the_temporary_folder_is_named_by_the_process(uncond, export_sched, tmp_path, monkeypatch):
    seen = []

    def fail(tmp, module):
        seen.append(os.path.basename(tmp))
        raise RuntimeError("stop after writing")

    monkeypatch.setattr(saved_model, "_check", fail)
    with pytest.raises(RuntimeError, match="stop"):
        export.export_saved_model(uncond[0], export_sched, (8, 8, 1), str(tmp_path / "m"), 4, warmup=False)
    assert seen[0].startswith(f".tmp-4-{os.getpid()}-")
    assert os.listdir(tmp_path / "m") == []


def test_non_finite_weights_are_refused_before_tracing(export_sched, tmp_path, monkeypatch):
    from conftest import tiny_unet

    net = tiny_unet()
    weight = net.weights[2]
    value = weight.numpy()
    value.flat[0] = np.nan
    weight.assign(value)

    def traced(*args, **kwargs):
        raise AssertionError("traced a network with NaN weights")

    monkeypatch.setattr(saved_model, "SamplerModule", traced)
    base = tmp_path / "nan"
    with pytest.raises(ValueError, match=r"network weights contain NaN/Inf \(a diverged run\?\): ") as e:
        export.export_saved_model(net, export_sched, (8, 8, 1), str(base), 1, warmup=False)
    assert (getattr(weight, "path", None) or weight.name) in str(e.value)
    assert not base.exists() or os.listdir(base) == []
