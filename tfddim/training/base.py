"""``NoisedTrainer``: the Keras training machinery shared by every model trained on noised data.

A network that sees x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (DDPM eq. 4) at random t, the
diffusion model's ε-network as the noise-aware classifier p_φ(y | x_t, t),
trains the same way; only the per-example loss differs. This base class owns
everything else:

- the network and its EMA copy (``ema_network``, built from ``data_shape``,
  updated as ema ← d·ema + (1−d)·w with ADM's warm-up d = min(decay, (1+n)/(10+n)));
- stateless randomness, seeded by (seed, step) and drawn for the global
  batch, each replica taking its slice: replicas draw different t and ε,
  R replicas match one device on the same global batch, a resumed run
  continues the same stream, and nothing runs on the host (TPU-safe);
- ``train_step``/``test_step`` as templates around two hooks a subclass
  implements, :meth:`NoisedTrainer.compute_losses` (per-example values, the
  first one minimised) and :meth:`NoisedTrainer.update_metrics`.

Distribution: the per-replica loss is divided by the number of replicas
(gradients are summed across replicas), so the learning rate applies to the
mean over the *global* batch, exactly as on one device. ``fit`` itself runs
under ``MultiWorkerMirroredStrategy`` with the same ``train_step``; two things
in how the step meets Keras make that work (keras-team/keras#20585): the
metrics (Keras ``Mean`` trackers) are reported as ``[1]``-shaped tensors there,
because Keras' cross-worker mean reduces along axis 0, and Keras' symbolic
build, which averages a distributed batch in a way that strategy rejects, is
replaced by building the optimizer up front (:meth:`NoisedTrainer._maybe_symbolic_build`).
"""

from __future__ import annotations

import abc
import enum

import keras
import tensorflow as tf

from tfddim.diffusion import steps
from tfddim.diffusion.schedules import Schedule

__all__ = ["NoisedTrainer", "as_network", "Precision", "Strategy"]


class Precision(str, enum.Enum):
    """The Keras dtype policy a run trains under (``keras.mixed_precision.set_global_policy``)."""

    FLOAT32 = "float32"
    MIXED_FLOAT16 = "mixed_float16"
    MIXED_BFLOAT16 = "mixed_bfloat16"


class Strategy(str, enum.Enum):
    """The ``tf.distribute`` strategy of a run: one device, all local devices, or several workers (TF_CONFIG)."""

    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi_worker"


def as_network(network):
    """A network, deserialized first if given as its Keras config (as ``from_config`` passes it)."""
    if isinstance(network, dict):
        return keras.saving.deserialize_keras_object(network)
    return network


def _is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class NoisedTrainer(keras.Model, metaclass=abc.ABCMeta):
    """Trains ``network`` on q_sample-noised examples; keeps an EMA copy for sampling, guidance and export.

    Subclasses implement :meth:`compute_losses`, :meth:`update_metrics`,
    :meth:`_unpack` and the ``metrics`` property, and may override
    :meth:`sample_timesteps` (importance sampling), :meth:`noisy_batch` (label
    dropout) and :meth:`after_train_step`.

    Args:
        network: the trained network (or its serialized config), called as
            ``network((x_t, t))``, or ``network((x_t, t, y))`` with ``label_inputs``.
        schedule: the :class:`~tfddim.diffusion.schedules.Schedule` (or its config dict) that noises x₀.
        data_shape: the shape of one example, e.g. ``(8, 8, 1)`` or ``(2,)``.
        ema_decay: the EMA decay (ADM: 0.9999).
        ema_warmup: use min(decay, (1+n)/(10+n)) at update n, so early EMA weights are not stuck at init.
        seed: base seed of the stateless noise.
        label_inputs: the network takes labels, ``network((x_t, t, y))``. Not saved: a
            subclass derives it from its own arguments (a class-conditional generator).

    Call arguments:
        inputs: ``(x_t, t[, y])``, passed to the *training* network.

    References:
        Ho et al. 2020 (DDPM, eq. 4); Dhariwal & Nichol 2021 (ADM: EMA, noise-aware classifier).
    """

    def __init__(self, network, schedule, data_shape, ema_decay=0.9999, ema_warmup=True, seed=0, label_inputs=False,
                 **kwargs):
        super().__init__(**kwargs)
        network = as_network(network)
        if isinstance(schedule, dict):
            schedule = Schedule.from_config(schedule)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.network = network
        self.schedule = schedule
        self.data_shape = tuple(int(d) for d in data_shape)
        self.ema_decay = float(ema_decay)
        self.ema_warmup = bool(ema_warmup)
        self.seed = int(seed)
        self.label_inputs = bool(label_inputs)
        self._alphas_cumprod = tf.constant(schedule.alphas_cumprod)
        self.ema_network = network.__class__.from_config(network.get_config())
        self._build_networks()
        # Updated by _update_ema only: keeps it out of trainable_variables, so the optimizer
        # (and a restored optimizer state) covers exactly the training network.
        self.ema_network.trainable = False
        self.built = True  # both networks were built above, from data_shape

    # ------------------------------------------------------------------ setup
    def network_inputs(self, x, t, y=None):
        """The network's input structure: ``(x, t, y)`` with ``label_inputs``, else ``(x, t)``."""
        return (x, t, y) if self.label_inputs else (x, t)

    def _example_inputs(self, batch=1):
        zeros = tf.zeros((batch,), tf.int32)
        return self.network_inputs(tf.zeros((batch,) + self.data_shape), zeros, zeros)

    def _build_networks(self):
        inputs = self._example_inputs()
        self.network(inputs)
        self.ema_network(inputs)
        self.ema_network.set_weights(self.network.get_weights())

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build the optimizer up front instead of Keras' symbolic build.

        Under a strategy Keras first averages a distributed batch with
        ``strategy.reduce(..., axis=None)`` to trace the model symbolically, which
        MultiWorkerMirroredStrategy rejects (keras-team/keras#20585). Both networks
        are already built in ``__init__``; only the optimizer's slots are left, and
        they must be created in cross-replica context, as here.
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.network.trainable_variables)

    def call(self, inputs, training=False):
        """The training network on ``(x_t, t[, y])``; a bare x_t (Keras' symbolic build) is taken at t = 0."""
        if not isinstance(inputs, (tuple, list)):
            zeros = tf.zeros([tf.shape(inputs)[0]], tf.int32)
            inputs = self.network_inputs(inputs, zeros, zeros)
        return self.network(inputs, training=training)

    # ------------------------------------------------------------- randomness
    def _step_seeds(self):
        """Three independent stateless seeds for (t, ε, labels) of the current step.

        Always three, whether or not a subclass draws anything per label (label
        dropout), so the t and ε streams of a (seed, step) are the same for every trainer.
        """
        step = tf.cast(self.optimizer.iterations if self.optimizer is not None else 0, tf.int64)
        base = tf.stack([tf.constant(self.seed, tf.int64), step])
        return tf.unstack(tf.random.experimental.stateless_split(base, 3))

    def _replica_rows(self, batch):
        """``(start, total)``: this replica's rows ``[start, start + batch)`` of the global batch of ``total``."""
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        return tf.cast(replica, tf.int32) * batch, batch * replicas

    def sample_timesteps(self, batch, seed):
        """t ~ U{0, …, T−1} for a batch, and the importance weights 1/(T·p_t) (all 1 here)."""
        T = self.schedule.num_timesteps
        return tf.random.stateless_uniform([batch], seed, 0, T, dtype=tf.int32), tf.ones([batch])

    def noisy_batch(self, x0, y, seeds):
        """(x_t, t, ε, y, importance weights) for this replica's batch (DDPM eq. 4).

        t and ε are drawn for the whole global batch from the step's seeds, and
        each replica takes its own slice: replicas never share noise, and R
        replicas of b examples see exactly the noise one device sees for the
        same R·b examples. ``y`` passes through unchanged.
        """
        seed_t, seed_eps, _ = seeds
        batch = tf.shape(x0)[0]
        start, total = self._replica_rows(batch)
        t_all, w_all = self.sample_timesteps(total, seed_t)
        t, weights = t_all[start:start + batch], w_all[start:start + batch]
        eps_shape = tf.concat([[total], tf.shape(x0)[1:]], axis=0)
        eps = tf.random.stateless_normal(eps_shape, seed_eps)[start:start + batch]
        ab = steps.select_timestep(self._alphas_cumprod, t, x0)
        x_t = steps.q_sample(x0, eps, ab)
        return x_t, t, eps, y, weights

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _unpack(self, data):
        """``(x₀, y)`` of a dataset batch: x₀ float32, y int32 or None."""

    @abc.abstractmethod
    def compute_losses(self, network, x0, x_t, t, eps, y, weights, training):
        """Per-example values for one batch; the first is the loss the step minimises (its mean)."""

    @abc.abstractmethod
    def update_metrics(self, t, values):
        """Feed :meth:`compute_losses`' ``values`` to the trackers; return :meth:`_logs`."""

    def after_train_step(self, t, weights, values):
        """Called after each optimizer step with the step's draws and per-example values (nothing by default)."""

    # --------------------------------------------------------------- metrics
    @staticmethod
    def _make_quartile_trackers(prefix):
        """``Mean`` trackers ``{prefix}_q0`` … ``{prefix}_q3``, for t in each quarter of [0, T)."""
        return [keras.metrics.Mean(name=f"{prefix}_q{q}") for q in range(4)]

    def _track_quartiles(self, values, t):
        """Per-example ``values`` into ``quartile_trackers[q]`` for t in the q-th quarter of [0, T)."""
        quartile = t * 4 // self.schedule.num_timesteps
        for q, tracker in enumerate(self.quartile_trackers):
            tracker.update_state(values, sample_weight=tf.cast(tf.equal(quartile, q), tf.float32))

    def _logs(self):
        logs = {m.name: m.result() for m in self.metrics}
        if _is_multi_worker(self.distribute_strategy):  # [1]-shaped: Keras reduces them along axis 0 across workers
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        x0, y = self._unpack(data)
        x_t, t, eps, y_in, weights = self.noisy_batch(x0, y, self._step_seeds())
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            values = self.compute_losses(self.network, x0, x_t, t, eps, y_in, weights, training=True)
            # gradients are summed over replicas: divide so the step follows the global-batch mean
            scaled = self.optimizer.scale_loss(tf.reduce_mean(values[0]) / replicas)
        grads = tape.gradient(scaled, self.network.trainable_weights)
        self.optimizer.apply(grads, self.network.trainable_weights)
        self._update_ema()
        self.after_train_step(t, weights, values)
        return self.update_metrics(t, values)

    def test_step(self, data):
        x0, y = self._unpack(data)
        x_t, t, eps, y_in, weights = self.noisy_batch(x0, y, self._step_seeds())
        values = self.compute_losses(self.ema_network, x0, x_t, t, eps, y_in, weights, training=False)
        return self.update_metrics(t, values)

    # -------------------------------------------------------------------- EMA
    def ema_decay_at(self, step):
        """The decay used at update ``step`` (1-based): min(decay, (1+n)/(10+n)) with warm-up."""
        decay = tf.constant(self.ema_decay, tf.float32)
        if not self.ema_warmup:
            return decay
        n = tf.cast(step, tf.float32)
        return tf.minimum(decay, (1.0 + n) / (10.0 + n))

    def _update_ema(self):
        """ema ← d·ema + (1−d)·w for every weight, applied per device in cross-replica context (as Keras' optimizer)."""
        decay = self.ema_decay_at(self.optimizer.iterations)
        pairs = [(e.value, w.value) for e, w in zip(self.ema_network.weights, self.network.weights)]

        def update(distribution, pairs, decay):
            for ema, var in pairs:
                distribution.extended.update(
                    ema, lambda a, b, d: a.assign(d * a + (1.0 - d) * tf.cast(b, a.dtype)), args=(var, decay), group=False
                )

        tf.__internal__.distribute.interim.maybe_merge_call(update, tf.distribute.get_strategy(), pairs, decay)

    # ----------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "network": keras.saving.serialize_keras_object(self.network),
                "schedule": self.schedule.to_config(),
                "data_shape": list(self.data_shape),
                "ema_decay": self.ema_decay,
                "ema_warmup": self.ema_warmup,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
