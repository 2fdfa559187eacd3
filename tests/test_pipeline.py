"""The training pipeline: typed configs, the run folder, resume after kill -9, multi-worker training."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import tfddim.models  # noqa: F401  (registers the networks for load_model)
from tfddim import sampling
from tfddim.diffusion import schedules
from tfddim.pipelines import config, train

TINY = [
    "train.epochs=2", "train.steps_per_epoch=5", "train.verbose=0", "train.sample_every=1",
    "train.num_sample_images=50", "data.batch_size=32", "model.config.hidden_units=32",
    "model.config.embedding_dim=16", "diffusion.num_timesteps=100", "sampling.num_steps=5",
]


@pytest.mark.parametrize("name", ["digits", "digits_conditional", "mixture2d", "cifar10", "imagenet64_adm", "mnist_ldm",
                                  "mnist_pixel"])
def test_shipped_configs_load_and_build(name):
    cfg = config.load(name)
    assert cfg.name == name
    from tfddim import models

    net = models.build({"class_name": cfg.model.class_name, "config": dict(cfg.model.config)})
    if cfg.model.class_name == "UNet" and cfg.model.config["image_size"] <= 32:  # ADM at 64x64 would take long to run
        c = cfg.model.config
        x = np.zeros((1, c["image_size"], c["image_size"], c["in_channels"]), np.float32)
        inputs = (x, np.zeros(1, np.int32)) + ((np.zeros(1, np.int32),) if c.get("num_classes") else ())
        assert net(inputs).shape[-1] == c["in_channels"] * (2 if c.get("learned_variance") else 1)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.epochz=3"], "unknown config key train.epochz"),
        (["optimizer.lr=3"], "unknown config key optimizer"),
        (["train.epochs=three"], "train.epochs must be int"),
        (["train.precision=float8"], "train.precision"),
        (["data.batch_size=0"], "batch_size"),
        (["diffusion.num_timesteps=true"], "diffusion.num_timesteps must be int"),
        (["model.class_name=Transformer"], "model.class_name"),
        (["train.epochs"], "key=value"),
    ],
)
def test_bad_config_values_name_the_key(overrides, match):
    with pytest.raises(ValueError, match=match):
        config.load("mixture2d", overrides)


def test_build_model_applies_clipping_warmup_and_precision():
    cfg = config.load("mixture2d", TINY + ["train.grad_clip_norm=0.5", "train.warmup_steps=10", "train.learning_rate=0.01"])
    model = train.build_model(cfg, (2,), None)
    assert model.optimizer.global_clipnorm == 0.5
    assert float(model.optimizer.learning_rate) == 0.0  # step 0 of the linear warm-up
    assert model.network.count_params() > 0 and model.ema_network.trainable is False


def test_overrides_are_json_values():
    cfg = config.load("digits", ["train.learning_rate=1e-3", "model.config.channel_mult=[1,2]", "data.source=digits"])
    assert cfg.train.learning_rate == 1e-3 and cfg.model.config["channel_mult"] == [1, 2]
    with pytest.raises(ValueError, match="neither a file nor a shipped config"):
        config.load("no_such_recipe")


def test_train_writes_a_complete_run_folder(tmp_path, capsys):
    cfg = config.load("mixture2d", TINY)
    meta = train.run(cfg, runs_dir=str(tmp_path))
    run_dir = tmp_path / "mixture2d"
    for name in ("config.json", "model.keras", "schedule.json", "metadata.json", "checkpoints/last.weights.h5"):
        assert (run_dir / name).exists(), name
    assert sorted(os.listdir(run_dir / "samples")) == ["epoch_0001.png", "epoch_0002.png"]
    assert any(f.startswith("events") for f in os.listdir(run_dir / "logs" / "train"))
    assert any(f.startswith("events") for f in os.listdir(run_dir / "logs" / "samples"))  # the TensorBoard grids
    assert meta["steps"] == 10 and np.isfinite(meta["final_metrics"]["loss"])
    assert "EMA model at" in capsys.readouterr().out
    # the saved EMA network and schedule are all a sampler needs
    net = keras.models.load_model(run_dir / "model.keras")
    sched = schedules.Schedule.from_config(json.loads((run_dir / "schedule.json").read_text()))
    out = sampling.sample(lambda x, t: net((x, t)), np.zeros((4, 2), np.float32), sched, schedules.spaced_timesteps(100, 5))
    assert out.shape == (4, 2) and np.all(np.isfinite(out))
    # the same command again does not retrain; another config in the same folder is refused
    assert train.run(cfg, runs_dir=str(tmp_path))["steps"] == 10
    assert "already trained" in capsys.readouterr().out
    with pytest.raises(ValueError, match="different config"):
        train.run(config.load("mixture2d", TINY + ["train.learning_rate=0.5"]), runs_dir=str(tmp_path))


def _cli(args, env=None, **kw):
    cmd = [sys.executable, "-m", "tfddim.cli", *args]
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_kill_9_then_the_same_command_resumes(tmp_path):
    args = ["train", "--config", "mixture2d", "--runs-dir", str(tmp_path), "--set", "train.epochs=6",
            "--set", "train.steps_per_epoch=40", "--set", "train.verbose=2", "--set", "train.sample_every=0",
            "--set", "diffusion.num_timesteps=100"]
    progress = tmp_path / "mixture2d" / "backup" / "training_metadata.json"
    first = _cli(args)
    deadline = time.time() + 240
    while time.time() < deadline:
        if progress.exists() and json.loads(progress.read_text() or "{}").get("epoch", 0) >= 2:
            break
        if first.poll() is not None:
            pytest.fail("the first run ended before it could be killed:\n" + first.stdout.read())
        time.sleep(0.2)
    else:
        first.kill()
        pytest.fail("no epoch was backed up in time")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = json.loads(progress.read_text())["epoch"]
    assert 2 <= killed_at < 6 and not (tmp_path / "mixture2d" / "model.keras").exists()

    second = _cli(args)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    epochs_run = [int(line.split()[1].split("/")[0]) for line in out.splitlines() if line.startswith("Epoch ")]
    assert epochs_run and epochs_run[0] == killed_at + 1, out  # continued, did not start over
    meta = json.loads((tmp_path / "mixture2d" / "metadata.json").read_text())
    assert meta["steps"] == 6 * 40  # the optimizer's step count came back with the weights


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_training_with_two_local_workers(tmp_path):
    """Two processes, TF_CONFIG on loopback: Keras fit under MultiWorkerMirroredStrategy, in sync."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = ["train", "--config", "mixture2d", "--runs-dir", str(tmp_path), *[a for o in TINY for a in ("--set", o)],
            "--set", "train.strategy=multi_worker", "--set", "train.sample_every=0"]
    workers = [
        _cli(args, env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)
    ]
    outputs = []
    try:
        for w in workers:
            outputs.append(w.communicate(timeout=300)[0])
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out
    chief = json.loads((tmp_path / "mixture2d" / "metadata.json").read_text())
    other = json.loads((tmp_path / "mixture2d" / "worker_1" / "metadata.json").read_text())
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["steps"] == other["steps"] == 10
    a = keras.models.load_model(tmp_path / "mixture2d" / "model.keras").get_weights()
    b = keras.models.load_model(tmp_path / "mixture2d" / "worker_1" / "model.keras").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # synchronous: both workers hold the same EMA weights


def test_export_cli_writes_a_versioned_savedmodel(tmp_path, capsys):
    from tfddim import cli

    train.run(config.load("mixture2d", TINY + ["train.sample_every=0"]), runs_dir=str(tmp_path))
    run_dir, base = str(tmp_path / "mixture2d"), str(tmp_path / "models")
    assert cli.main(["export", run_dir, "--name", "ring", "--base-dir", base]) == 0
    assert "SavedModel at" in capsys.readouterr().out
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(base, "ring", "1"))
    out = loaded.signatures["serving_default"](x_T=tf.zeros([4, 2]), num_steps=tf.constant(5), eta=tf.constant(0.0),
                                               seed=tf.constant(0, tf.int64))["x_0"]
    assert out.shape == (4, 2)
    with pytest.raises(SystemExit) as e:
        cli.main(["export", run_dir, "--name", "ring", "--base-dir", base])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err
    assert cli.main(["export", run_dir, "--name", "ring", "--base-dir", base, "--version", "2", "--onnx"]) == 0
    assert "ONNX graphs at" in capsys.readouterr().out
    assert sorted(os.listdir(os.path.join(base, "ring"))) == ["1", "2"]
    from tfddim.runtime import OnnxSampler, SavedModelSampler

    # 2-D data through both runtimes (tfddim export --onnx), eta = 0 with no noise
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    path2 = os.path.join(base, "ring", "2")
    np.testing.assert_allclose(OnnxSampler(path2).sample(x, 5), SavedModelSampler(path2).sample(x, 5), atol=2e-4)
    with pytest.raises(SystemExit):
        cli.main(["export", str(tmp_path / "nothing"), "--name", "x", "--base-dir", base])
    assert "not a finished training run" in capsys.readouterr().err


def test_sample_grids_trace_the_sampler_once_over_many_epochs(tmp_path, monkeypatch):
    # The sampling loop's Python body runs only while TensorFlow traces it: count those runs over 4 grids.
    # (A new sampler per grid traced every epoch and set off "triggered tf.function retracing".)
    traces = []
    loop = sampling.Sampler._sample_loop
    monkeypatch.setattr(sampling.Sampler, "_sample_loop", lambda self, *a, **k: traces.append(self) or loop(self, *a, **k))
    cfg = config.load("mixture2d", TINY + ["train.epochs=4", "train.steps_per_epoch=2", "train.sample_every=1"])
    train.run(cfg, runs_dir=str(tmp_path))
    assert sorted(os.listdir(tmp_path / "mixture2d" / "samples")) == [f"epoch_{e:04d}.png" for e in (1, 2, 3, 4)]
    assert len(traces) == 1
