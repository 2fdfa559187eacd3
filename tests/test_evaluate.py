"""`tfddim evaluate` on a tiny learned-variance digits run: the grid, the noise floor, figures, NLL, the report, the cache."""

import csv
import json
import os
import re

import numpy as np
import pytest

from tfddim.evaluation import study
from tfddim.pipelines import config, evaluate, train

TINY_DIGITS = [
    "train.epochs=1", "train.steps_per_epoch=3", "train.verbose=0", "train.sample_every=0",
    "diffusion.num_timesteps=50", "diffusion.loss=\"hybrid\"", "model.config.learned_variance=true",
    "model.config.base_channels=8", "model.config.channel_mult=[1]", "model.config.attention_resolutions=[]",
    "model.config.num_heads=1",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    train.run(config.load("digits", TINY_DIGITS), runs_dir=str(runs))
    return str(runs / "digits")


@pytest.fixture(scope="module")
def evaluated(tiny_run):
    result = evaluate.run(evaluate.EvaluateConfig(tiny_run, num_samples=40, steps=(2, 5), etas=(0.0, "sigma_hat"),
                                                  batch_size=40, nll_images=6))
    return tiny_run, result


def test_the_grid_has_every_cell_the_noise_floor_and_a_strided_ddpm_row(evaluated):
    run_dir, result = evaluated
    samplers = {(r["sampler"], r["steps"]) for r in result["rows"]}
    assert samplers == {(s, n) for s in ("DDIM η=0", "DDIM η=σ̂", "DDPM strided (learned Σ)") for n in (2, 5)}
    for row in result["rows"]:
        assert np.isfinite(row["fid"]) and row["fid"] >= 0 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
        assert row["is"] >= 1.0  # exp of a KL: never below 1
    floor = result["floor"]
    # half B of real digits against half A: far better than a 3-step-trained model's samples
    assert floor["fid"] < min(r["fid"] for r in result["rows"])
    # ... on the spatial features too (sFID, the classifier's conv2[..., :4])
    assert all(np.isfinite(r["sfid"]) for r in result["rows"])
    assert 0 < floor["sfid"] < min(r["sfid"] for r in result["rows"])
    with open(os.path.join(run_dir, "study.csv")) as f:
        table = list(csv.DictReader(f))
    assert table[0]["sampler"].startswith("real B vs A") and len(table) == 1 + len(result["rows"])
    header = list(table[0])
    assert header.index("sfid") == header.index("fid") + 1  # sFID beside FID
    assert float(table[0]["sfid"]) == floor["sfid"] and float(table[1]["sfid"]) == result["rows"][0]["sfid"]


def test_the_report_figures_and_nll(evaluated):
    run_dir, result = evaluated
    report = open(result["report"]).read()
    for needle in ("noise floor", "FID", "Consistency", "Interpolation", "Reconstruction", "trajectories", "bits/dim"):
        assert needle in report, needle
    for name in ("study_fid.png", "consistency.png", "interpolation.png", "reconstruction.png", "trajectories.png"):
        with open(os.path.join(run_dir, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in report, name
    assert set(result["nll"]) == {"learned_range"}
    nll = result["nll"]["learned_range"]
    # a barely trained net: the bound is positive and finite, and L_T of the cosine schedule at T = 50 is tiny
    assert 0 < nll["bpd"] < 100 and 0 <= nll["prior_bpd"] < 0.01
    assert [e["rmse"] >= 0 for e in result["reconstruction"]] == [True, True]
    saved = json.load(open(os.path.join(run_dir, "evaluation.json")))
    assert saved["features"] == "digits" and saved["reference_half"] == 748
    assert saved["spatial_features"] == "conv2[..., :4]" and "sfid" in saved["floor"]
    # an sFID table, with its noise-floor row, in the report and in study.md
    for text in (report, open(os.path.join(run_dir, "study.md")).read()):
        sfid_table = text.split("sFID (")[1].split("KID ×10³")[0]
        floor_row = next(line for line in sfid_table.splitlines() if line.startswith("| real B vs A"))
        assert f"{result['floor']['sfid']:.3f}" in floor_row
    assert "`conv2[..., :4]`, 256-d" in report


def test_figures_are_readable_and_kid_is_reported_x1000_with_raw_files(evaluated):
    run_dir, result = evaluated
    for name in ("consistency.png", "interpolation.png", "reconstruction.png", "trajectories.png"):
        with open(os.path.join(run_dir, name), "rb") as f:
            head = f.read(24)
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert width >= 600 and height >= 250, (name, width, height)  # labelled matplotlib figures, not 265-px grids
    report = open(result["report"]).read()
    assert "KID ×10³" in report and "kid_raw" in report
    kid_table = report.split("KID ×10³")[1].split("Precision")[0]
    floor_row = next(line for line in kid_table.splitlines() if line.startswith("| real B vs A"))
    floor = result["floor"]
    from tfddim.evaluation.metrics import format_kid
    assert format_kid(floor["kid"], floor["kid_std"]) in floor_row
    with open(os.path.join(run_dir, "study.csv")) as f:
        header = next(csv.reader(f))
    assert "kid_raw" in header and "kid_std_raw" in header and "kid" not in header
    saved = json.load(open(os.path.join(run_dir, "evaluation.json")))
    assert saved["floor"]["kid_raw"] == floor["kid"] and "kid" not in saved["rows"][0]
    assert set(result["reconstruction_by_steps"]) == {2, 5}


def test_the_demo_report_sets_the_run_against_the_shipped_model():
    from tfddim.pipelines import full

    text = full.shipped_comparison({"steps": 5000, "final_metrics": {"loss": 0.2}},
                                   {"10": {"rmse": 0.19}, "50": {"rmse": 0.14}, "100": {"rmse": 0.1}})
    assert "5000 steps" in text and "6,000 steps" in text and "0.200" in text and "MODEL_CARD" in text
    assert "| 10 | 0.190 | 0.107 |" in text and "| 50 | 0.140 | 0.024 |" in text and "| 100 | 0.100 | 0.013 |" in text
    # the shipped numbers are the README's own
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    assert "RMSE " + ", ".join(f"{full.SHIPPED_RECONSTRUCTION_RMSE[s]:.3f}" for s in (10, 20, 50)) in readme


def test_reference_statistics_are_cached_once(evaluated, monkeypatch):
    run_dir, _ = evaluated
    cache_dir = os.path.join(os.path.dirname(run_dir), "reference")
    files = os.listdir(cache_dir)
    assert len(files) == 1 and "digits" in files[0]
    with np.load(os.path.join(cache_dir, files[0])) as cached:  # the spatial statistics are cached too
        assert cached["spatial_sigma"].shape == (256, 256) and str(cached["spatial_layer"]) == "conv2[..., :4]"
    stamp = os.path.getmtime(os.path.join(cache_dir, files[0]))
    evaluate.run(evaluate.EvaluateConfig(run_dir, num_samples=20, steps=(1,), etas=(0.0,), batch_size=20, nll_images=0,
                                         figures=False, out=os.path.join(run_dir, "again")))
    assert os.listdir(cache_dir) == files and os.path.getmtime(os.path.join(cache_dir, files[0])) == stamp


def test_bad_requests_name_the_parameter(tiny_run, tmp_path, capsys):
    from tfddim import cli

    for argv, match in [
        (["evaluate", tiny_run, "--etas", "0,2"], "eta must lie in"),
        (["evaluate", tiny_run, "--etas", "fast"], "etas"),
        (["evaluate", tiny_run, "--steps", "10,60"], r"steps must lie in \[1, T = 50\]"),
        (["evaluate", str(tmp_path), "--steps", "2"], "not a finished training run"),
        (["evaluate", tiny_run, "--features", "inception", "--steps", "2"], "--inception-weights"),
    ]:
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and re.search(match, err), (argv, err)


def test_parse_etas_and_cells():
    assert study.parse_etas("0, 0.5,sigma_hat") == (0.0, 0.5, "sigma_hat")
    cells = study.grid_cells((10, 20), (0.0, 1.0), learned_variance=False, num_timesteps=100)
    assert [c.row for c in cells] == ["DDIM η=0"] * 2 + ["DDIM η=1"] * 2


def test_the_main_job_trains_exports_samples_both_runtimes_and_reports(tmp_path, capsys):
    """`tfddim pipeline` (make demo) end to end, with a tiny network and grid."""
    from tfddim.pipelines import full

    result = full.run(full.PipelineConfig(
        str(tmp_path), "job", epochs=1, num_samples=20, nll_images=4, steps=(2, 5), etas=(0.0,),
        overrides=[o for o in TINY_DIGITS if not o.startswith(("train.epochs", "train.verbose"))]))
    out = capsys.readouterr().out
    assert "4/4 evaluate" in out and "report at" in out
    assert os.path.exists(os.path.join(result["model"], "onnx", "sample_with_noise.onnx"))
    for name in ("samples_tf.png", "samples_onnx.png", "report.md"):
        assert os.path.exists(os.path.join(result["run_dir"], name)), name
    assert result["runtime_gap"] <= 2e-4  # the parity bound of the export tests (1e-4 of the data range)
    assert "## Runtimes" in open(result["report"]).read()
    assert "## This demo model and the shipped one" in open(result["report"]).read()


TINY_NET = ["model.config.base_channels=8", "model.config.channel_mult=[1]", "model.config.attention_resolutions=[]",
            "model.config.num_heads=1"]
TINY_TRAIN = ["train.epochs=1", "train.steps_per_epoch=3", "train.verbose=0", "train.sample_every=0",
              "diffusion.num_timesteps=50"]


def test_guidance_sweep_scores_both_kinds_with_the_evaluation_classifier(tmp_path, capsys):
    from tfddim import cli
    from tfddim.pipelines import guidance

    runs = str(tmp_path)
    train.run(config.load("digits_conditional", TINY_TRAIN + TINY_NET), runs_dir=runs)
    # the guidance classifier through its command: tfddim train-classifier --config digits_classifier
    assert cli.main(["train-classifier", "--config", "digits_classifier", "--runs-dir", runs,
                     *[a for o in TINY_TRAIN + TINY_NET for a in ("--set", o)]]) == 0
    with pytest.raises(SystemExit) as e:
        cli.main(["train-classifier", "--config", "digits", "--runs-dir", runs])
    assert e.value.code == 2 and "NoisyClassifier config" in capsys.readouterr().err
    meta = json.load(open(os.path.join(runs, "digits_classifier", "metadata.json")))
    assert len(meta["test_accuracy_by_t"]) >= 2  # accuracy by noise level on held-out digits
    result = guidance.run(guidance.GuidanceConfig(os.path.join(runs, "digits_conditional"),
                                                  os.path.join(runs, "digits_classifier"), classifier_scales=(0.0, 2.0),
                                                  free_scales=(0.0, 2.0), num_samples=20, steps=3))
    assert [(r["guidance"], r["scale"]) for r in result["rows"]] == [
        ("classifier", 0.0), ("classifier", 2.0), ("classifier-free", 0.0), ("classifier-free", 2.0)]
    for r in result["rows"]:
        assert 0.0 <= r["class_accuracy"] <= 1.0 and np.isfinite(r["fid"]) and np.isfinite(r["sfid"])
    # the real held-out half is classified almost perfectly by the 99.7% evaluation classifier
    assert result["floor"]["class_accuracy"] > 0.95
    report = open(result["report"]).read()
    assert "noise floor" in report and "classifier-free" in report
    assert "| FID | sFID |" in report
    floor_row = next(line for line in report.splitlines() if line.startswith("| real B vs A"))
    assert f"| {result['floor']['fid']:.3f} | {result['floor']['sfid']:.3f} |" in floor_row
    with open(os.path.join(runs, "digits_conditional", "guidance.csv")) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["sfid"]) == result["floor"]["sfid"] and len(rows) == 1 + len(result["rows"])
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", os.path.join(runs, "digits_classifier"), "--guidance-sweep"])
    assert e.value.code == 2
