"""``AutoencoderModel``: trains an :class:`~tfddim.models.Autoencoder` with Keras ``fit`` (LDM's first stage).

Per image (sums over its pixels and latent elements, as LDM's ``LPIPSWithDiscriminator`` without the
perceptual and adversarial terms):

    L = Σ_pixels ρ(x − D(z)) + kl_weight · Σ_latent KL(q(z | x) ‖ N(0, I)),   z = μ(x) + σ(x)·ε

with ρ = |·| (``"l1"``, LDM's choice) or (·)² (``"mse"``), and the reparameterised z (Kingma & Welling
2014, eq. 10). The loss is the mean over the global batch: the per-replica sum is divided by the global
batch size, so the learning rate means the same on any number of replicas. ε is stateless, drawn from
(seed, step) for the global batch and sliced per replica, as :class:`~tfddim.training.NoisedTrainer` does.

Metrics: ``loss``, ``reconstruction`` (the ρ sum per image), ``kl`` (per image) and ``psnr`` in dB for data in
[-1, 1], of the sampled reconstruction D(z) in training and of the deterministic one D(μ(x)) in evaluation.

References:
    Rombach et al. 2022 (latent diffusion, §3.1: "KL-reg."); LDM's ``AutoencoderKL.training_step``.
"""

from __future__ import annotations

import enum

import keras
import tensorflow as tf

from tfddim.models.autoencoder import kl_to_standard_normal
from tfddim.training.base import as_network

__all__ = ["AutoencoderModel", "Reconstruction"]


class Reconstruction(str, enum.Enum):
    """The reconstruction penalty ρ of :class:`AutoencoderModel`."""

    L1 = "l1"
    MSE = "mse"


class AutoencoderModel(keras.Model):
    """Fits an autoencoder on ``(x, label)`` batches (labels are ignored).

    Args:
        autoencoder: the :class:`~tfddim.models.Autoencoder` (or its serialized config).
        kl_weight: the KL term's weight (LDM's ``kl_weight``: 1e-6 with sums over pixels and latents).
        reconstruction: ``"l1"`` or ``"mse"`` (:class:`Reconstruction`).
        seed: base seed of the stateless ε.
    """

    def __init__(self, autoencoder, kl_weight=1e-6, reconstruction=Reconstruction.L1, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.autoencoder = as_network(autoencoder)
        if not 0.0 <= float(kl_weight) < float("inf"):
            raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight}")
        self.kl_weight = float(kl_weight)
        self.reconstruction = Reconstruction(reconstruction)
        self.seed = int(seed)
        size, channels = self.autoencoder.image_size, self.autoencoder.in_channels
        self.autoencoder(tf.zeros([1, size, size, channels]))
        self.built = True
        self._trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "reconstruction", "kl", "psnr")}

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, x, training=False):
        return self.autoencoder(x, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build the optimizer's slots up front (the networks are built in ``__init__``; keras-team/keras#20585)."""
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.autoencoder.trainable_variables)

    @staticmethod
    def _replica():
        """``(replica id, replicas in sync)`` of the current replica context."""
        ctx = tf.distribute.get_replica_context()
        if ctx is None:
            return tf.constant(0, tf.int32), 1
        return tf.cast(ctx.replica_id_in_sync_group, tf.int32), ctx.num_replicas_in_sync

    def _epsilon(self, mean):
        """ε ~ N(0, I) for this replica's rows of the global batch, from (seed, step)."""
        step = tf.cast(self.optimizer.iterations if self.optimizer is not None else 0, tf.int64)
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        replica, replicas = self._replica()
        batch = tf.shape(mean)[0]
        eps = tf.random.stateless_normal(tf.concat([[batch * replicas], tf.shape(mean)[1:]], 0), seed)
        return eps[replica * batch:(replica + 1) * batch]

    def losses_of(self, x, training):
        """Per-example ``(loss, reconstruction, kl)``, μ(x) and D(z), for a batch x in [-1, 1]."""
        mean, logvar = self.autoencoder.encode(x)
        eps = self._epsilon(mean)
        x_rec = self.autoencoder.decode(mean + tf.exp(0.5 * logvar) * eps)
        err = x - x_rec
        rho = tf.abs(err) if self.reconstruction is Reconstruction.L1 else tf.square(err)
        rec = tf.reduce_sum(rho, axis=[1, 2, 3])
        kl = tf.reduce_sum(kl_to_standard_normal(mean, logvar), axis=[1, 2, 3])
        return rec + self.kl_weight * kl, rec, kl, mean, x_rec

    def _update(self, x, x_rec, values):
        loss, rec, kl = values
        mse = tf.reduce_mean(tf.square(x - x_rec), axis=[1, 2, 3])
        psnr = 20.0 * tf.math.log(2.0 / tf.sqrt(tf.maximum(mse, 1e-20))) / tf.math.log(10.0)
        for name, value in zip(("loss", "reconstruction", "kl", "psnr"), (loss, rec, kl, psnr)):
            self._trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        with tf.GradientTape() as tape:
            loss, rec, kl, _, x_rec = self.losses_of(x, training=True)
            objective = tf.reduce_sum(loss) / tf.cast(tf.shape(x)[0] * self._replica()[1], tf.float32)
            scaled = self.optimizer.scale_loss(objective) if hasattr(self.optimizer, "scale_loss") else objective
        grads = tape.gradient(scaled, self.autoencoder.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.autoencoder.trainable_variables))
        return self._update(x, x_rec, (loss, rec, kl))

    def test_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        loss, rec, kl, mean, _ = self.losses_of(x, training=False)
        return self._update(x, self.autoencoder.decode(mean), (loss, rec, kl))

    def get_config(self):
        return {**super().get_config(), "autoencoder": keras.saving.serialize_keras_object(self.autoencoder),
                "kl_weight": self.kl_weight, "reconstruction": self.reconstruction.value, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
