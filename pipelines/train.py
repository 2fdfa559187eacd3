"""Train a diffusion model from a config: ``tfddim train --config digits`` or ``python pipelines/train.py``.

The run folder ``runs/<name>/`` (written and read only through :class:`tfddim.runs.RunDir`) holds:

- ``config.json``     the resolved config (a rerun with a different one is refused without --overwrite)
- ``backup/``         the training state, saved atomically every epoch (``AtomicBackupAndRestore``,
                      Keras' ``BackupAndRestore`` files): kill the process at any instant and run the
                      same command again to continue from the last completed epoch
- ``checkpoints/``    the latest full weights (training network, EMA network, optimizer)
- ``logs/``           TensorBoard scalars, and EMA sample grids every ``train.sample_every`` epochs
- ``samples/``        the same grids as PNG files
- ``model.keras``     the EMA network, written atomically when training ends
- ``schedule.json``   the schedule, to sample the model with
- ``metadata.json``   steps, epochs, time, final metrics, data
- ``history.json``    each epoch's metrics, written as the epoch ends
- ``lock``            the PID and host of the trainer, while it runs: a second one is refused

A non-finite loss stops training with an error naming the step (the run is not marked finished).
``train.seed`` seeds the weight initialisation (``keras.utils.set_random_seed``) and the t/ε draws.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def make_strategy(name: str):
    """``default`` (one device), ``mirrored`` (all local devices) or ``multi_worker`` (TF_CONFIG)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def build_model(cfg, data_shape, num_classes):
    """The compiled :class:`~tfddim.training.DiffusionModel` of a run config (call inside the strategy scope)."""
    import keras

    from tfddim import models
    from tfddim.diffusion import schedules
    from tfddim.training import DiffusionModel, warmup_schedule

    d, tr = cfg.diffusion, cfg.train
    network = models.build({"class_name": cfg.model.class_name, "config": dict(cfg.model.config)})
    schedule = schedules.get(d.schedule, num_timesteps=d.num_timesteps, zero_terminal_snr=d.zero_terminal_snr)
    conditional = getattr(network, "num_classes", None)
    if conditional is not None and num_classes is not None and conditional != num_classes:
        raise ValueError(f"model.config.num_classes={conditional} but the data has {num_classes} classes")
    if isinstance(network, models.NoisyClassifier):
        from tfddim.training.classifier import NoisyClassifierModel

        model = NoisyClassifierModel(network, schedule, data_shape, ema_decay=tr.ema_decay, ema_warmup=tr.ema_warmup,
                                     seed=tr.seed)
    else:
        model = DiffusionModel(
            network,
            schedule,
            data_shape,
            loss=d.loss,
            vlb_weight=d.vlb_weight,
            variance=d.variance,
            importance_sampling=d.importance_sampling,
            ema_decay=tr.ema_decay,
            ema_warmup=tr.ema_warmup,
            num_classes=conditional,
            label_dropout=tr.label_dropout,
            decoder=d.decoder,
            seed=tr.seed,
            prediction_type=d.prediction_type,
            low_res_size=cfg.data.low_res_size,
            low_res_augment_max=d.low_res_augment_max,
            min_snr_gamma=d.min_snr_gamma,
        )
    optimizer = keras.optimizers.Adam(
        learning_rate=warmup_schedule(tr.learning_rate, tr.warmup_steps), global_clipnorm=tr.grad_clip_norm
    )
    if tr.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=tr.jit_compile)
    return model


def latent_stage(cfg, info: dict) -> dict:
    """A latent diffusion run's data: the autoencoder run of ``cfg.diffusion.autoencoder``, its encoder run
    once over the training split (:func:`tfddim.data.encode_moments`), and the batches of
    z·scale_factor (:func:`tfddim.data.latent_dataset`).

    Returns ``{"dataset", "latent_shape", "decode", "run", "scale_factor", "weights", "encode_seconds"}``;
    ``decode`` maps scaled latents to pixels (the sample grids), ``weights`` is the autoencoder's weights
    digest, checked again at export.
    """
    import os

    from tfddim import data as data_lib
    from tfddim.evaluation.features import weights_digest
    from tfddim.runs import RunDir

    autoencoder, scale = RunDir(cfg.diffusion.autoencoder).load_first_stage()
    pixels = (autoencoder.image_size, autoencoder.image_size, autoencoder.in_channels)
    if tuple(info["image_shape"]) != pixels:
        raise ValueError(f"diffusion.autoencoder {cfg.diffusion.autoencoder} encodes {pixels[0]}x{pixels[1]}x{pixels[2]} "
                         f"images; the data are {tuple(info['image_shape'])}")
    images, labels = split_arrays(cfg.data, "train")
    start = time.time()
    mean, std = data_lib.encode_moments(autoencoder.encode, images)
    encode_seconds = time.time() - start

    def decode(z):
        return autoencoder.decode(z / scale)

    return {"dataset": data_lib.latent_dataset(mean, std, labels, scale, cfg.data, training=True),
            "latent_shape": tuple(autoencoder.latent_shape), "decode": decode,
            "run": os.path.normpath(cfg.diffusion.autoencoder), "scale_factor": scale,
            "weights": weights_digest(autoencoder), "encode_seconds": round(encode_seconds, 2)}


def split_arrays(data_cfg, split: str):
    """Every example of ``split`` as arrays ``(x, labels)``, in order."""
    import dataclasses

    from tfddim import data as data_lib

    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in
                   data_lib.make_dataset(dataclasses.replace(data_cfg, batch_size=512), split, training=False)))
    return np.concatenate(xs), np.concatenate(ys)


def _worker_task(strategy):
    """None for the chief; ``(task_type, task_id)`` for the other workers of a multi-worker run (each keeps its own files)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)
    return None if is_chief else (resolver.task_type, resolver.task_id)


def run(cfg, *, runs_dir: str = "runs", overwrite: bool = False) -> dict:
    """Train (or resume) the run described by ``cfg`` (a :class:`~tfddim.pipelines.config.RunConfig`).

    Args:
        cfg: the run config; ``cfg.name`` names the folder ``<runs_dir>/<name>``.
        runs_dir: the parent of run folders.
        overwrite: delete an existing folder of the same name first.

    Returns the metadata dict (the one in ``metadata.json``).
    """
    import keras

    from tfddim.runs import RunDir

    # A multi-worker strategy must exist before any other TensorFlow op runs.
    strategy = make_strategy(cfg.train.strategy)
    run_dir = RunDir.of(runs_dir, cfg.name, _worker_task(strategy))
    with run_dir.lock():  # a second trainer of the same run is refused at once
        if run_dir.prepare(cfg.to_dict(), overwrite):
            meta = run_dir.read_metadata()
            print(f"tfddim train: {run_dir.path} is already trained ({meta['steps']} steps); model at {meta['model']}")
            return meta

        previous_policy = keras.mixed_precision.global_policy().name
        keras.mixed_precision.set_global_policy(cfg.train.precision)
        try:
            meta = _train(cfg, strategy, run_dir)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
    loss = meta["final_metrics"].get("loss")
    print(f"tfddim train: {meta['steps']} steps, loss {loss:.4f}; EMA model at {meta['model']}" if loss is not None
          else f"tfddim train: model at {meta['model']}")
    return meta


def _callbacks(cfg, run_dir, is_classifier: bool, decode=None) -> list:
    """The epoch's metrics, the stop on a non-finite loss, the backup (resume), the latest full weights,
    TensorBoard and, for diffusion models, the EMA sample grids (a latent model's decoded to pixels by ``decode``).

    The metrics are written before the backup: once an epoch counts as done, its metrics are on disk.
    """
    import keras

    from tfddim.pipelines.callbacks import AtomicBackupAndRestore, MetricsHistory, SampleGrid, StopOnNonFinite

    callbacks = [
        StopOnNonFinite(),
        MetricsHistory(run_dir),
        AtomicBackupAndRestore(run_dir.backup_dir, save_freq="epoch"),
        keras.callbacks.ModelCheckpoint(run_dir.checkpoint_path, save_weights_only=True),
        keras.callbacks.TensorBoard(run_dir.logs_dir, update_freq="epoch"),
    ]
    if cfg.train.sample_every and not is_classifier:
        callbacks.append(SampleGrid(cfg, run_dir.samples_dir, run_dir.sample_logs_dir, decode=decode))
    return callbacks


def _train(cfg, strategy, run_dir) -> dict:
    """Fit the model of ``cfg`` in ``run_dir`` (a prepared :class:`~tfddim.runs.RunDir`); write its files; the metadata."""
    import keras

    from tfddim import data as data_lib
    from tfddim import models

    from tfddim.pipelines.callbacks import AtomicBackupAndRestore

    # The initial weights (and any unseeded draw) follow train.seed; set before the dataset is made, so
    # its shuffle seed (TensorFlow's global seed with data.seed) is the same in every process.
    keras.utils.set_random_seed(cfg.train.seed)
    info = data_lib.dataset_info(cfg.data)
    latent = None
    if cfg.diffusion.autoencoder is not None:
        latent = latent_stage(cfg, info)
        dataset, data_shape = latent["dataset"], latent["latent_shape"]
    else:
        dataset, data_shape = data_lib.make_dataset(cfg.data, "train", training=True), info["image_shape"]
    with strategy.scope():
        model = build_model(cfg, data_shape, info.get("num_classes"))
    is_classifier = isinstance(model.network, models.NoisyClassifier)
    callbacks = _callbacks(cfg, run_dir, is_classifier, decode=latent["decode"] if latent else None)
    resume_epoch = next(c for c in callbacks if isinstance(c, AtomicBackupAndRestore)).resume_epoch()
    if resume_epoch:
        # A new iterator starts the shuffled stream over: skip the batches the backup already trained on,
        # so a resumed run sees the batches an uninterrupted run would (the t/ε draws follow the step).
        dataset = dataset.skip(resume_epoch * cfg.train.steps_per_epoch)
    start = time.time()
    model.fit(
        dataset, epochs=cfg.train.epochs, steps_per_epoch=cfg.train.steps_per_epoch,
        callbacks=callbacks, verbose=cfg.train.verbose,
        shuffle=False,  # the tf.data pipeline shuffles with the run's seed; Keras' own flag would only warn
    )
    seconds = time.time() - start
    model_path = run_dir.save_network(model.ema_network)
    run_dir.write_schedule(model.schedule)
    # From history.json, not fit's History: a rerun after a kill during the model save trains no epoch.
    epochs_logged = run_dir.read_history()
    final = epochs_logged[-1] if epochs_logged else {}
    meta = {
        "name": cfg.name,
        "steps": int(model.optimizer.iterations.numpy()),
        "epochs": cfg.train.epochs,
        "global_batch_size": cfg.data.batch_size,
        "replicas": strategy.num_replicas_in_sync,
        "seconds_this_session": round(seconds, 1),
        "final_metrics": final,
        "model": model_path,
        "data": {"source": cfg.data.source, "image_shape": list(data_shape), "num_classes": info.get("num_classes")},
        "parameters": int(model.network.count_params()),
    }
    if latent is not None:
        meta["data"]["pixel_shape"] = list(info["image_shape"])
        meta["autoencoder"] = {k: latent[k] for k in ("run", "scale_factor", "weights", "encode_seconds")}
    if is_classifier:  # guided-diffusion reports the classifier's accuracy by noise level
        from tfddim.training.classifier import accuracy_by_t

        x_test, y_test = data_lib.load_digits("test") if cfg.data.source == "digits" else split_arrays(cfg.data, "test")
        meta["test_accuracy_by_t"] = accuracy_by_t(model.ema_network, model.schedule, x_test, y_test, seed=cfg.train.seed)
        print("tfddim train: held-out accuracy by t: "
              + ", ".join(f"t={t}: {a:.3f}" for t, a in meta["test_accuracy_by_t"].items()))
    run_dir.write_metadata(meta)
    return meta


def main(argv=None) -> int:
    from tfddim.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
