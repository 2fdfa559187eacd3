"""Train latent diffusion's first stage: ``tfddim train-autoencoder --config mnist_vae``.

A config (``pipelines/configs/mnist_vae.json``) has the sections ``data``, ``model`` (class
``Autoencoder``), ``train`` (as a diffusion run's; ``ema_*``, ``label_dropout`` and ``sample_every``
do not apply) and ``loss`` (:class:`AutoencoderLossConfig`). The run folder ``runs/<name>/`` is an
ordinary training run's (:class:`tfddim.runs.RunDir`: config, lock, atomic backup and resume,
checkpoints, TensorBoard, history), and when training ends it holds:

- ``model.keras``    the :class:`~tfddim.models.Autoencoder`
- ``metadata.json``  steps, time, and the first stage's numbers:
  ``latent_shape``; ``scale_factor`` = 1/std of latents z ~ q(z | x) over the training split (LDM's
  ``scale_factor``: latent diffusion trains on z·scale_factor, of unit variance);
  ``reconstruction``: PSNR and RMSE of D(μ(x)) on the held-out split, and with an evaluation classifier
  for the data (MNIST 28×28: ``saved_models/mnist_classifier``) the FID of reconstructions of
  training images against the held-out set next to the FID of those training images themselves (the
  noise floor): the ceiling of any latent model on this autoencoder.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from tfddim.data import DataConfig
from tfddim.pipelines.config import ModelConfig, TrainConfig
from tfddim.training.autoencoder import Reconstruction

__all__ = ["AutoencoderLossConfig", "AutoencoderRunConfig", "load", "run", "latent_statistics"]

FID_IMAGES = 1000  # as tools/mnist_cascade_eval.py: 1,000 training images against the 1,000 held out


@dataclasses.dataclass(frozen=True)
class AutoencoderLossConfig:
    """The first stage's objective: ``kl_weight`` (LDM: 1e-6, sums over pixels and latents) and ρ (``l1``, ``mse``)."""

    kl_weight: float = 1e-6
    reconstruction: Reconstruction = Reconstruction.L1

    def __post_init__(self):
        from tfddim.diffusion.kinds import parse_kind

        object.__setattr__(self, "reconstruction", parse_kind(Reconstruction, self.reconstruction, "loss.reconstruction"))
        if not 0.0 <= self.kl_weight < float("inf"):
            raise ValueError(f"loss.kl_weight must be a finite number >= 0, got {self.kl_weight}")


@dataclasses.dataclass(frozen=True)
class AutoencoderRunConfig:
    """A first-stage recipe: ``name`` names the run folder ``runs/<name>``."""

    name: str = "vae"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig(class_name="Autoencoder")
    train: TrainConfig = TrainConfig()
    loss: AutoencoderLossConfig = AutoencoderLossConfig()

    def __post_init__(self):
        if self.model.class_name != "Autoencoder":
            raise ValueError(f"model.class_name must be 'Autoencoder' for tfddim train-autoencoder, got "
                             f"{self.model.class_name!r} (train it with tfddim train)")
        if self.data.source == "mixture2d" or self.data.low_res_size is not None:
            raise ValueError("data: the autoencoder trains on images (not mixture2d, no low_res_size)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load(name_or_path: str, overrides=()) -> AutoencoderRunConfig:
    """A config file or shipped name (``mnist_vae``) with ``--set`` overrides, checked."""
    from tfddim.pipelines import config

    return config.load(name_or_path, overrides, kind=AutoencoderRunConfig)


def run(cfg: AutoencoderRunConfig, *, runs_dir: str = "runs", overwrite: bool = False) -> dict:
    """Train (or resume) the autoencoder of ``cfg``; returns the metadata (``metadata.json``)."""
    from tfddim.pipelines.train import _worker_task, make_strategy
    from tfddim.runs import RunDir

    strategy = make_strategy(cfg.train.strategy)
    run_dir = RunDir.of(runs_dir, cfg.name, _worker_task(strategy))
    with run_dir.lock():
        if run_dir.prepare(cfg.to_dict(), overwrite):
            meta = run_dir.read_metadata()
            print(f"tfddim train-autoencoder: {run_dir.path} is already trained ({meta['steps']} steps); "
                  f"model at {meta['model']}")
            return meta
        meta = _train(cfg, strategy, run_dir)
    rec = meta["reconstruction"]
    print(f"tfddim train-autoencoder: {meta['steps']} steps; held-out PSNR {rec['psnr']:.2f} dB; "
          f"scale_factor {meta['scale_factor']:.4f}; model at {meta['model']}")
    return meta


def _callbacks(run_dir) -> list:
    """As a diffusion run's (:func:`tfddim.pipelines.train._callbacks`), without the sample grids."""
    import keras

    from tfddim.pipelines.callbacks import AtomicBackupAndRestore, MetricsHistory, StopOnNonFinite

    return [
        StopOnNonFinite(),
        MetricsHistory(run_dir),
        AtomicBackupAndRestore(run_dir.backup_dir, save_freq="epoch"),
        keras.callbacks.ModelCheckpoint(run_dir.checkpoint_path, save_weights_only=True),
        keras.callbacks.TensorBoard(run_dir.logs_dir, update_freq="epoch"),
    ]


def latent_statistics(autoencoder, images: np.ndarray, seed: int = 0, batch_size: int = 500) -> dict:
    """``scale_factor`` = 1/std of z = μ + σ·ε over ``images`` (LDM: ``1 / z.flatten().std()``), and the
    latents' mean and std (after scaling the std is 1)."""
    rng = np.random.default_rng(seed)
    zs = []
    for i in range(0, len(images), batch_size):
        mean, logvar = autoencoder.encode(images[i:i + batch_size])
        mean, std = mean.numpy(), np.exp(0.5 * logvar.numpy())
        zs.append(mean + std * rng.standard_normal(mean.shape).astype(np.float32))
    z = np.concatenate(zs).astype(np.float64)
    std = float(z.std())
    if not std > 0:
        raise ValueError("the autoencoder's latents have zero variance: it did not train")
    return {"scale_factor": 1.0 / std, "latent_mean": float(z.mean()), "latent_std": std}


def reconstruct(autoencoder, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """D(μ(x)) for every image, batched."""
    return np.concatenate([autoencoder.decode(autoencoder.encode(images[i:i + batch_size])[0]).numpy()
                           for i in range(0, len(images), batch_size)])


def reconstruction_metrics(autoencoder, train: np.ndarray, test: np.ndarray, classifier_dir: str | None) -> dict:
    """PSNR/RMSE of held-out reconstructions; with a classifier, FID of reconstructed training images and the floor."""
    from tfddim.evaluation import metrics

    out = {k: v for k, v in metrics.reconstruction_error(test, np.clip(reconstruct(autoencoder, test), -1, 1)).items()
           if k in ("psnr", "rmse")}
    if classifier_dir is not None and os.path.exists(os.path.join(classifier_dir, "model.keras")):
        from tfddim.evaluation.features import DigitsFeatureNet

        net = DigitsFeatureNet(classifier_dir)
        n = min(FID_IMAGES, len(train), len(test))
        rec = np.clip(reconstruct(autoencoder, train[:n]), -1, 1)
        reference = net.features(test[:n])
        out["fid_reconstructions"] = float(metrics.fid(net.features(rec), reference))
        out["fid_floor"] = float(metrics.fid(net.features(train[:n]), reference))
        out["fid_images"] = n
        out["classifier"] = classifier_dir
    return out


def _classifier_dir(data_cfg: DataConfig) -> str | None:
    """The evaluation classifier of the data (MNIST at 28×28 or 14×14), or None."""
    if data_cfg.source != "mnist":
        return None
    size = data_cfg.image_size or 28
    return os.path.join("saved_models", "mnist_classifier" if size == 28 else f"mnist{size}_classifier")


def _train(cfg: AutoencoderRunConfig, strategy, run_dir) -> dict:
    import keras

    from tfddim import data as data_lib
    from tfddim import models
    from tfddim.pipelines.callbacks import AtomicBackupAndRestore
    from tfddim.training import AutoencoderModel, warmup_schedule

    keras.utils.set_random_seed(cfg.train.seed)
    info = data_lib.dataset_info(cfg.data)
    dataset = data_lib.make_dataset(cfg.data, "train", training=True)
    tr = cfg.train
    with strategy.scope():
        network = models.build({"class_name": "Autoencoder", "config": dict(cfg.model.config)})
        if tuple(info["image_shape"]) != (network.image_size, network.image_size, network.in_channels):
            raise ValueError(f"model.config: the autoencoder takes {network.image_size}x{network.image_size}x"
                             f"{network.in_channels} images, the data are {tuple(info['image_shape'])}")
        model = AutoencoderModel(network, kl_weight=cfg.loss.kl_weight, reconstruction=cfg.loss.reconstruction,
                                 seed=tr.seed)
        optimizer = keras.optimizers.Adam(learning_rate=warmup_schedule(tr.learning_rate, tr.warmup_steps),
                                          global_clipnorm=tr.grad_clip_norm)
        model.compile(optimizer=optimizer, jit_compile=tr.jit_compile)
    callbacks = _callbacks(run_dir)
    resume_epoch = next(c for c in callbacks if isinstance(c, AtomicBackupAndRestore)).resume_epoch()
    if resume_epoch:
        dataset = dataset.skip(resume_epoch * tr.steps_per_epoch)
    start = time.time()
    model.fit(dataset, epochs=tr.epochs, steps_per_epoch=tr.steps_per_epoch, callbacks=callbacks, verbose=tr.verbose,
              shuffle=False)
    seconds = time.time() - start
    model_path = run_dir.save_network(network)
    from tfddim.pipelines.train import split_arrays

    train_images, test_images = split_arrays(cfg.data, "train")[0], split_arrays(cfg.data, "test")[0]
    stats = latent_statistics(network, train_images, seed=tr.seed)
    history = run_dir.read_history()
    meta = {
        "name": cfg.name,
        "kind": "autoencoder",
        "steps": int(model.optimizer.iterations.numpy()),
        "epochs": tr.epochs,
        "global_batch_size": cfg.data.batch_size,
        "replicas": strategy.num_replicas_in_sync,
        "seconds_this_session": round(seconds, 1),
        "final_metrics": history[-1] if history else {},
        "model": model_path,
        "data": {"source": cfg.data.source, "image_shape": list(info["image_shape"]),
                 "num_classes": info.get("num_classes")},
        "parameters": int(network.count_params()),
        "latent_shape": list(network.latent_shape),
        **stats,
        "reconstruction": reconstruction_metrics(network, train_images, test_images, _classifier_dir(cfg.data)),
    }
    run_dir.write_metadata(meta)
    return meta


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["train-autoencoder", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
