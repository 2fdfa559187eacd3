"""User errors through `tfddim.cli.main` in-process: one line naming the thing, exit status 2, no traceback;
--debug shows the traceback; only user-facing exceptions are caught. Also the sample command's seeding rule
(sample i depends only on (seed, i)), its default output path, and the quiet logs."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tfddim import cli

SHIPPED = os.path.join(os.path.dirname(__file__), os.pardir, "saved_models", "digits", "1")


def fails(capsys, argv, *needles):
    """Run the CLI; it must exit with 2 and print one line holding every needle (and no traceback)."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def not_called(*args, **kwargs):
    raise AssertionError("the work started before the inputs were checked")


# ------------------------------------------------------------------------------------------ data sources
def test_a_missing_npz_is_one_line(tmp_path, capsys):
    fails(capsys, ["train", "--config", "digits", "--set", "data.source=npz:/nope.npz", "--runs-dir", str(tmp_path)],
          "tfddim train: error:", "/nope.npz", "no such file")


def test_a_corrupt_npz_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    fails(capsys, ["train", "--config", "digits", "--set", f"data.source=npz:{bad}", "--runs-dir", str(tmp_path)],
          str(bad), "cannot read it as an .npz file")




def png_bytes():
    import tensorflow as tf

    return tf.io.encode_png(np.zeros((8, 8, 1), np.uint8)).numpy()


@pytest.mark.parametrize("content", [b"this is not an image", b"\x89PNG\r\n\x1a\n and then garbage"],
                         ids=["not-an-image", "broken-png"])
def test_a_folder_with_an_undecodable_image_names_the_file(tmp_path, capsys, content):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a_bad.png").write_bytes(content)  # sorted first: also the image whose shape is read
    (folder / "b_good.png").write_bytes(png_bytes())
    fails(capsys, ["train", "--config", "digits", "--set", f"data.source=folder:{folder}", "--runs-dir",
                   str(tmp_path / "runs")], "cannot decode image", str(folder / "a_bad.png"))


# ------------------------------------------------------------------------------------------ damaged exports
@pytest.mark.parametrize("file, backend, named", [
    ("saved_model.pb", "tf", "saved_model.pb"),
    ("variables/variables.data-00000-of-00001", "tf", "variables.data-00000-of-00001"),
    ("variables/variables.index", "tf", "variables.index"),
    ("onnx/sample_with_noise.onnx", "onnx", "sample_with_noise.onnx"),
])
def test_a_truncated_export_file_is_named_with_re_export(uncond, tmp_path, capsys, file, backend, named):
    model = str(tmp_path / "1")
    shutil.copytree(uncond[2], model)
    path = os.path.join(model, file)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    line = fails(capsys, ["sample", "--model", model, "--backend", backend, "--n", "2", "--steps", "2",
                          "--out", str(tmp_path / "x.png")], named, "re-export")
    assert "tfddim sample: error:" in line


def test_malformed_export_json_is_named(uncond, tmp_path, capsys):
    model = str(tmp_path / "1")
    shutil.copytree(uncond[2], model)
    with open(os.path.join(model, "assets.extra", "export.json"), "w") as f:
        f.write('{"signatures": [')
    fails(capsys, ["sample", "--model", model, "--n", "2", "--steps", "2", "--out", str(tmp_path / "x.png")],
          os.path.join("assets.extra", "export.json"), "not valid JSON")


# ------------------------------------------------------------------------------------------ configs and flags
def test_malformed_json_config_is_named(tmp_path, capsys):
    config = tmp_path / "mine.json"
    config.write_text('{"data": {"source": "digits",}}')
    fails(capsys, ["train", "--config", str(config), "--runs-dir", str(tmp_path)], str(config), "not valid JSON",
          "line 1")


@pytest.mark.parametrize("command", [["sample"], ["demo"], ["evaluate", "runs/x"], ["pipeline"]])
def test_a_negative_seed_names_the_flag(capsys, command):
    fails(capsys, [*command, "--seed", "-1"], "--seed", ">= 0")


# ------------------------------------------------------------------------------------------ outputs, checked first
def a_file(tmp_path):
    """A regular file: nothing can be created under it, whoever runs the tests (root ignores permissions)."""
    f = tmp_path / "a_file"
    f.write_text("")
    return f


def test_an_unwritable_sample_out_fails_before_sampling(tmp_path, capsys, monkeypatch):
    import tfddim.runtime

    monkeypatch.setattr(tfddim.runtime, "open_sampler", not_called)
    out = a_file(tmp_path) / "grid.png"
    fails(capsys, ["sample", "--n", "2", "--steps", "2", "--out", str(out)], "--out", str(out), "cannot write")
    fails(capsys, ["sample", "--n", "2", "--steps", "2", "--out", str(tmp_path)], "--out", "is a folder")


def test_an_unwritable_runs_dir_fails_before_training(tmp_path, capsys, monkeypatch):
    from tfddim.pipelines import full, train

    monkeypatch.setattr(train, "run", not_called)
    monkeypatch.setattr(full, "run", not_called)
    runs = a_file(tmp_path) / "runs"
    fails(capsys, ["train", "--config", "digits", "--runs-dir", str(runs)], "--runs-dir", str(runs))
    fails(capsys, ["pipeline", "--runs-dir", str(runs)], "--runs-dir", str(runs))


def test_an_unwritable_base_dir_fails_before_exporting(tmp_path, capsys, monkeypatch):
    from tfddim.pipelines import export

    monkeypatch.setattr(export, "run", not_called)
    base = a_file(tmp_path) / "saved_models"
    fails(capsys, ["export", str(tmp_path), "--name", "m", "--base-dir", str(base)], "--base-dir", str(base))


def test_sample_writes_under_runs_samples_by_default(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sample", "--n", "2", "--steps", "2"]) == 0
    assert os.path.isfile(tmp_path / "runs" / "samples" / "samples.png")
    assert os.listdir(tmp_path) == ["runs"]
    ignored = open(os.path.join(os.path.dirname(__file__), os.pardir, ".gitignore")).read().split()
    assert "runs/" in ignored and "/samples.png" in ignored


# ------------------------------------------------------------------------------------------ --debug, and what is not caught
def test_debug_shows_the_traceback_before_or_after_the_subcommand(tmp_path, capsys):
    missing = str(tmp_path / "none")
    for argv in (["--debug", "sample", "--model", missing], ["sample", "--model", missing, "--debug"]):
        with pytest.raises(ValueError, match="no saved_model.pb"):
            cli.main(argv + ["--out", str(tmp_path / "x.png")])
    help_text = cli.build_parser().format_help()
    assert "--debug" in help_text


def test_only_user_facing_exceptions_are_caught(monkeypatch, tmp_path):
    from tfddim.pipelines import sample

    def bug(cfg):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(sample, "run", bug)
    with pytest.raises(KeyError):
        cli.main(["sample", "--out", str(tmp_path / "x.png")])


# ------------------------------------------------------------------------------------------ seeding: sample i <- (seed, i)
def sample_npz(tmp_path, name, *flags):
    out = tmp_path / f"{name}.png"
    assert cli.main(["sample", "--model", SHIPPED, "--n", "5", "--steps", "3", "--npz", "--out", str(out), *flags]) == 0
    return np.load(str(tmp_path / f"{name}.npz"))["x_0"]


def test_stochastic_samples_do_not_depend_on_the_batch_size_or_the_backend(tmp_path, capsys):
    a = sample_npz(tmp_path, "a", "--eta", "1", "--batch-size", "3")
    b = sample_npz(tmp_path, "b", "--eta", "1", "--batch-size", "8")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)  # float32 rounding of a different batch shape at most
    # ONNX Runtime gets the same per-sample noise through sample_with_noise
    c = sample_npz(tmp_path, "c", "--eta", "1", "--batch-size", "2", "--backend", "onnx")
    np.testing.assert_allclose(c, a, rtol=0, atol=1e-4)
    # the noise is there: another seed, or eta = 0, changes the samples
    assert np.max(np.abs(sample_npz(tmp_path, "d", "--eta", "1", "--seed", "1") - a)) > 0.1
    assert np.max(np.abs(sample_npz(tmp_path, "e", "--eta", "0") - a)) > 0.1


# ------------------------------------------------------------------------------------------ quiet logs
def test_the_command_prints_only_what_a_user_needs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    tfddim = os.path.join(os.path.dirname(sys.executable), "tfddim")
    command = [tfddim, "sample", "--n", "2", "--steps", "2", "--out", str(tmp_path / "x.png")]
    quiet = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    lines = (quiet.stdout + quiet.stderr).strip().splitlines()
    assert len(lines) == 1 and "wrote" in lines[0], lines
