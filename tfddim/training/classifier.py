"""Training the noise-aware classifier p_φ(y | x_t, t) with Keras ``fit`` (guided-diffusion §4).

The classifier sees q_sample-noised images at uniformly drawn t (x_t = √ᾱ_t·x₀ +
√(1−ᾱ_t)·ε, DDPM eq. 4) and is trained with cross-entropy on the clean label.
Everything but that loss is :class:`~tfddim.training.base.NoisedTrainer`'s: the
stateless (seed, step) draws of t and ε for the global batch sliced per
replica, the EMA copy (``ema_network``, the one exported and used for
guidance), and the distribution workarounds (the per-replica loss divided by
the number of replicas; under ``MultiWorkerMirroredStrategy`` ``[1]``-shaped
metrics and the optimizer built up front instead of Keras' symbolic build,
keras-team/keras#20585). Metrics: ``loss``, ``accuracy`` and the accuracy by
quarter of t (``acc_q0`` least noisy … ``acc_q3`` noisiest).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfddim.diffusion import steps
from tfddim.training.base import NoisedTrainer, as_network

__all__ = ["NoisyClassifierModel", "accuracy_by_t"]


@keras.saving.register_keras_serializable(package="tfddim")
class NoisyClassifierModel(NoisedTrainer):
    """Trains a :class:`tfddim.models.NoisyClassifier` on noised images with cross-entropy.

    Args:
        network: the classifier (``network((x_t, t))`` → logits), or its serialized config.
        schedule: the diffusion schedule the guided sampler uses.
        data_shape: shape of one image.
        ema_decay: the EMA decay (guided-diffusion's classifier: 0.999).
        ema_warmup: use min(decay, (1+n)/(10+n)) at update n.
        seed: base seed of the stateless noise.

    Call arguments:
        inputs: ``(x_t, t)``, passed to the *training* classifier.

    References:
        Dhariwal & Nichol 2021 (ADM), §4: classifier guidance with a noise-aware classifier.
    """

    def __init__(self, network, schedule, data_shape, ema_decay=0.999, ema_warmup=True, seed=0, **kwargs):
        network = as_network(network)
        if not hasattr(network, "log_prob_fn"):
            raise ValueError(f"NoisyClassifierModel trains a NoisyClassifier, got {type(network).__name__}")
        super().__init__(network, schedule, data_shape, ema_decay=ema_decay, ema_warmup=ema_warmup, seed=seed, **kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.quartile_trackers = self._make_quartile_trackers("acc")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker, *self.quartile_trackers]

    def _unpack(self, data):
        if not isinstance(data, (tuple, list)) or len(data) < 2:
            raise ValueError("the noisy classifier trains on (images, labels) batches")
        return tf.cast(data[0], tf.float32), tf.cast(data[1], tf.int32)

    def compute_losses(self, network, x0, x_t, t, eps, y, weights, training):
        """Per-example (cross-entropy −log p_φ(y | x_t, t), correct) for one batch; labels are targets, never dropped."""
        logits = tf.cast(network((x_t, t), training=training), tf.float32)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y), tf.float32)
        return loss, correct

    def update_metrics(self, t, values):
        loss, correct = values
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(correct)
        self._track_quartiles(correct, t)
        return self._logs()

    def load_own_variables(self, store):
        """Load the model's own variables (it has none), accepting pre-``NoisedTrainer`` checkpoints.

        Checkpoints and ``BackupAndRestore`` state written while this class derived
        from :class:`~tfddim.training.DiffusionModel` carry that model's two
        importance-sampling variables (``loss_history``, ``loss_counts``), which a
        classifier never used: they are skipped, so such a run still resumes.
        """
        if len(store.keys()) != 2:
            super().load_own_variables(store)


def accuracy_by_t(network, schedule, x0, labels, timesteps=None, seed=0, batch_size=500) -> dict:
    """Held-out accuracy of p_φ(y | x_t, t) at fixed t: ``{t: accuracy}`` (x_t drawn once per t from ``seed``).

    ``timesteps`` defaults to t = 0, T/10, T/4, T/2, 3T/4 and T−1.
    """
    if timesteps is None:
        T = schedule.num_timesteps
        timesteps = sorted({0, T // 10, T // 4, T // 2, 3 * T // 4, T - 1})
    ab_all = tf.constant(schedule.alphas_cumprod)
    x0 = tf.convert_to_tensor(x0, tf.float32)
    labels = tf.convert_to_tensor(labels, tf.int32)
    out = {}
    for t_value in timesteps:
        if not 0 <= int(t_value) < schedule.num_timesteps:
            raise ValueError(f"timesteps must lie in [0, {schedule.num_timesteps - 1}], got {t_value}")
        correct = []
        for start in range(0, int(x0.shape[0]), batch_size):
            x = x0[start:start + batch_size]
            t = tf.fill([tf.shape(x)[0]], int(t_value))
            eps = tf.random.stateless_normal(tf.shape(x), seed=[seed, start * 1000 + int(t_value)])
            x_t = steps.q_sample(x, eps, steps.select_timestep(ab_all, t, x))
            pred = tf.argmax(network((x_t, t), training=False), axis=-1, output_type=tf.int32)
            correct.append(tf.cast(tf.equal(pred, labels[start:start + batch_size]), tf.float32))
        out[int(t_value)] = float(tf.reduce_mean(tf.concat(correct, 0)))
    return out
