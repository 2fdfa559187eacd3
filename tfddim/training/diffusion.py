"""``DiffusionModel``: Keras training of an ε-network with the DDPM / improved-DDPM objectives.

The network knows no schedule; this model owns it. Each train step draws t and
ε, forms x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (DDPM eq. 4) and minimises

- ``"simple"``: L_simple = ‖ε − ε_θ(x_t, t)‖² (DDPM eq. 14);
- ``"hybrid"``: L_simple + λ·L_vlb with λ = 0.001 and a stop-gradient on the
  mean inside L_vlb (improved DDPM §3.1), for learned-variance networks;
- ``"vlb"``: L_vlb alone, optionally with importance sampling of t,
  p_t ∝ √E[L_t²] over the last 10 values of each L_t, uniform until every t
  has 10 (improved DDPM §3.3).

L_vlb is estimated as T·L_t (bits/dim) for the sampled t; its terms come from
:mod:`tfddim.likelihood`. Randomness is stateless, seeded by (seed, step) and
drawn for the global batch, each replica taking its slice: replicas draw
different t and ε, R replicas match one device on the same global batch, a
resumed run continues the same stream, and nothing runs on the host (TPU-safe).

Distribution: the per-replica loss is divided by the number of replicas
(gradients are summed across replicas), so the learning rate applies to the
mean over the *global* batch, exactly as on one device. ``fit`` itself runs
under ``MultiWorkerMirroredStrategy`` with the same ``train_step``; two things
in how the step meets Keras make that work (keras-team/keras#20585): the
metrics (Keras ``Mean`` trackers) are reported as ``[1]``-shaped tensors there,
because Keras' cross-worker mean reduces along axis 0, and Keras' symbolic
build, which averages a distributed batch in a way that strategy rejects, is
replaced by building the optimizer up front (:meth:`_maybe_symbolic_build`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfddim import sampling
from tfddim.diffusion import steps
from tfddim.diffusion.likelihood import LikelihoodTerms
from tfddim.diffusion.schedules import Schedule

__all__ = ["DiffusionModel", "warmup_schedule"]

LOSSES = ("simple", "hybrid", "vlb")
_HISTORY = 10  # improved DDPM keeps the last 10 values of each L_t


def warmup_schedule(learning_rate: float, warmup_steps: int):
    """A constant learning rate after a linear warm-up from 0 (DDPM: 5000 steps), with Keras' ``CosineDecay``.

    ``alpha=1`` makes the cosine part constant, so only the warm-up remains.
    """
    if warmup_steps <= 0:
        return learning_rate
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=1, alpha=1.0, warmup_target=learning_rate, warmup_steps=warmup_steps
    )


def _is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


@keras.saving.register_keras_serializable(package="tfddim")
class DiffusionModel(keras.Model):
    """Trains ``network`` under ``schedule``; keeps an EMA copy for sampling and export.

    Args:
        network: a tfddim network (``UNet``/``MLP``): ``network((x_t, t[, y]))`` → ε (or ε and v).
        schedule: the :class:`~tfddim.schedules.Schedule` (or its config dict).
        data_shape: the shape of one example, e.g. ``(8, 8, 1)`` or ``(2,)``.
        loss: ``"simple"``, ``"hybrid"`` or ``"vlb"``.
        vlb_weight: λ of L_hybrid.
        variance: the variance the bound uses for a fixed-variance network,
            ``"fixed_small"`` or ``"fixed_large"`` (learned networks use ``learned_range``).
        importance_sampling: sample t ∝ √E[L_t²] (``loss="vlb"`` only).
        ema_decay: the EMA decay (ADM: 0.9999).
        ema_warmup: use min(decay, (1+n)/(10+n)) at update n, so early EMA weights are not stuck at init.
        num_classes: for a class-conditional network; label ``num_classes`` is the null label.
        label_dropout: probability of replacing a label by the null label (classifier-free guidance).
        decoder: the L_0 decoder, ``"discretized"`` (8-bit images) or ``"gaussian"`` (continuous data).
        seed: base seed of the stateless noise.

    Call arguments:
        inputs: ``(x_t, t[, y])``, passed to the *training* network.

    References:
        Ho et al. 2020 (DDPM); Nichol & Dhariwal 2021 (improved DDPM); Ho & Salimans 2022 (label dropout).
    """

    def __init__(
        self,
        network,
        schedule,
        data_shape,
        loss="simple",
        vlb_weight=0.001,
        variance="fixed_small",
        importance_sampling=False,
        ema_decay=0.9999,
        ema_warmup=True,
        num_classes=None,
        label_dropout=0.0,
        decoder="discretized",
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(network, dict):
            network = keras.saving.deserialize_keras_object(network)
        if isinstance(schedule, dict):
            schedule = Schedule.from_config(schedule)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        learned = bool(getattr(network, "learned_variance", False))
        if loss == "hybrid" and not learned:
            raise ValueError("loss 'hybrid' trains the variance: the network needs learned_variance=True")
        if variance not in ("fixed_small", "fixed_large"):
            raise ValueError(f"variance must be 'fixed_small' or 'fixed_large', got {variance!r}")
        if importance_sampling and loss != "vlb":
            raise ValueError("importance_sampling applies to loss 'vlb' only (it does not help L_hybrid)")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        if label_dropout > 0 and num_classes is None:
            raise ValueError("label_dropout needs num_classes (a class-conditional network)")
        if num_classes is not None and getattr(network, "num_classes", None) != num_classes:
            raise ValueError(f"num_classes={num_classes} but the network has num_classes={getattr(network, 'num_classes', None)}")
        self.network = network
        self.schedule = schedule
        self.data_shape = tuple(int(d) for d in data_shape)
        self.loss_kind = loss
        self.vlb_weight = float(vlb_weight)
        self.variance = variance
        self.importance_sampling = bool(importance_sampling)
        self.ema_decay = float(ema_decay)
        self.ema_warmup = bool(ema_warmup)
        self.num_classes = num_classes
        self.label_dropout = float(label_dropout)
        self.decoder = decoder
        self.seed = int(seed)
        self.learned_variance = learned
        self.terms = LikelihoodTerms(schedule, decoder)
        self._alphas_cumprod = tf.constant(schedule.alphas_cumprod)
        self.ema_network = network.__class__.from_config(network.get_config())
        self._build_networks()
        # Updated by _update_ema only: keeps it out of trainable_variables, so the optimizer
        # (and a restored optimizer state) covers exactly the training network.
        self.ema_network.trainable = False
        T = schedule.num_timesteps
        self.loss_history = self.add_weight(
            shape=(T, _HISTORY), initializer="zeros", trainable=False, name="loss_history", aggregation="only_first_replica"
        )
        self.loss_counts = self.add_weight(
            shape=(T,), initializer="zeros", dtype="int32", trainable=False, name="loss_counts", aggregation="only_first_replica"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mse_tracker = keras.metrics.Mean(name="mse")
        self.vlb_tracker = keras.metrics.Mean(name="vlb")
        self.quartile_trackers = [keras.metrics.Mean(name=f"loss_q{q}") for q in range(4)]
        self.built = True  # both networks were built above, from data_shape

    # ------------------------------------------------------------------ setup
    def _example_inputs(self, batch=1):
        x = tf.zeros((batch,) + self.data_shape)
        t = tf.zeros((batch,), tf.int32)
        if self.num_classes is not None:
            return (x, t, tf.zeros((batch,), tf.int32))
        return (x, t)

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

    @property
    def metrics(self):
        return [self.loss_tracker, self.mse_tracker, self.vlb_tracker, *self.quartile_trackers]

    def call(self, inputs, training=False):
        """The training network on ``(x_t, t[, y])``; a bare x_t (Keras' symbolic build) is taken at t = 0."""
        if not isinstance(inputs, (tuple, list)):
            batch = tf.shape(inputs)[0]
            zeros = tf.zeros([batch], tf.int32)
            inputs = (inputs, zeros) if self.num_classes is None else (inputs, zeros, zeros)
        return self.network(inputs, training=training)

    # ------------------------------------------------------------- randomness
    def _step_seeds(self):
        """Three independent stateless seeds for (t, ε, label dropout) of the current step."""
        step = tf.cast(self.optimizer.iterations if self.optimizer is not None else 0, tf.int64)
        base = tf.stack([tf.constant(self.seed, tf.int64), step])
        return tf.unstack(tf.random.experimental.stateless_split(base, 3))

    def sample_timesteps(self, batch, seed):
        """t for a batch and the importance weights 1/(T·p_t) (1 when sampling uniformly)."""
        T = self.schedule.num_timesteps
        uniform = tf.random.stateless_uniform([batch], seed, 0, T, dtype=tf.int32)
        ones = tf.ones([batch])
        if not self.importance_sampling:
            return uniform, ones
        probs = self.importance_probs()
        warm = tf.reduce_all(self.loss_counts >= _HISTORY)
        drawn = tf.cast(tf.random.stateless_categorical(tf.math.log(probs)[None], batch, seed)[0], tf.int32)
        t = tf.where(warm, drawn, uniform)
        weights = tf.where(warm, 1.0 / (T * tf.gather(probs, t)), ones)
        return t, weights

    def importance_probs(self):
        """p_t ∝ √E[L_t²] over the history, mixed with 0.1% uniform (improved-diffusion's resampler)."""
        T = self.schedule.num_timesteps
        w = tf.sqrt(tf.reduce_mean(tf.square(self.loss_history), axis=-1))
        w = w / tf.maximum(tf.reduce_sum(w), 1e-12)
        return w * (1.0 - 0.001) + 0.001 / T

    def _record_losses(self, t, vlb_t):
        """Push every replica's (t, L_t) into the history, identically on all replicas."""
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            t = ctx.all_gather(t, axis=0)
            vlb_t = ctx.all_gather(vlb_t, axis=0)

        def body(i, history, counts):
            row = history[t[i]]
            history = tf.tensor_scatter_nd_update(history, [[t[i]]], [tf.concat([row[1:], vlb_t[i:i + 1]], 0)])
            counts = tf.tensor_scatter_nd_add(counts, [[t[i]]], [1])
            return i + 1, history, counts

        _, history, counts = tf.while_loop(
            lambda i, *_: i < tf.shape(t)[0], body, [0, tf.convert_to_tensor(self.loss_history), tf.convert_to_tensor(self.loss_counts)]
        )
        self.loss_history.assign(history)
        self.loss_counts.assign(tf.minimum(counts, _HISTORY))

    # ----------------------------------------------------------------- losses
    def _unpack(self, data):
        if isinstance(data, (tuple, list)):
            x0 = data[0]
            y = data[1] if len(data) > 1 else None
        else:
            x0, y = data, None
        if self.num_classes is None:
            return tf.cast(x0, tf.float32), None  # an unconditional model ignores the dataset's labels
        if y is None:
            raise ValueError("a class-conditional DiffusionModel needs (images, labels) batches")
        return tf.cast(x0, tf.float32), tf.cast(y, tf.int32)

    def noisy_batch(self, x0, y, seeds):
        """(x_t, t, ε, y_in, importance weights) for this replica's batch (DDPM eq. 4).

        t, ε and the label-dropout draws are made for the whole global batch
        from the step's seeds, and each replica takes its own slice: replicas
        never share noise, and R replicas of b examples see exactly the noise
        one device sees for the same R·b examples.
        """
        seed_t, seed_eps, seed_y = seeds
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        batch = tf.shape(x0)[0]
        start = tf.cast(replica, tf.int32) * batch
        total = batch * replicas
        t_all, w_all = self.sample_timesteps(total, seed_t)
        t, weights = t_all[start:start + batch], w_all[start:start + batch]
        eps_shape = tf.concat([[total], tf.shape(x0)[1:]], axis=0)
        eps = tf.random.stateless_normal(eps_shape, seed_eps)[start:start + batch]
        ab = steps.select_timestep(self._alphas_cumprod, t, x0)
        x_t = steps.q_sample(x0, eps, ab)
        if y is not None and self.label_dropout > 0:
            drop = tf.random.stateless_uniform([total], seed_y)[start:start + batch] < self.label_dropout
            y = tf.where(drop, tf.fill([batch], self.num_classes), y)
        return x_t, t, eps, y, weights

    def compute_losses(self, network, x0, x_t, t, eps, y, weights, training):
        """Per-example (loss, mse, T·L_t) for one batch."""
        inputs = (x_t, t) if y is None else (x_t, t, y)
        out = tf.cast(network(inputs, training=training), tf.float32)
        if self.learned_variance:
            eps_hat, v = tf.split(out, 2, axis=-1)
        else:
            eps_hat, v = out, None
        axes = list(range(1, len(self.data_shape) + 1))
        mse = tf.reduce_mean(tf.square(eps - eps_hat), axis=axes)
        ab = steps.select_timestep(self._alphas_cumprod, t, x0)
        # The bound trains only the variance in L_hybrid: the mean sees a frozen ε̂.
        eps_for_mean = tf.stop_gradient(eps_hat) if self.loss_kind == "hybrid" else eps_hat
        x0_hat = steps.x0_from_eps(x_t, eps_for_mean, ab)
        kind = "learned_range" if self.learned_variance else self.variance
        log_var = self.terms.model_log_variance(kind, t, x0, v)
        T = float(self.schedule.num_timesteps)
        vlb = T * self.terms.terms_bpd(x0, x_t, t, x0_hat, log_var) * weights
        if self.loss_kind == "simple":
            loss = mse
        elif self.loss_kind == "hybrid":
            loss = mse + self.vlb_weight * vlb
        else:
            loss = vlb
        return loss, mse, vlb

    def _update_metrics(self, loss, mse, vlb, t):
        self.loss_tracker.update_state(loss)
        self.mse_tracker.update_state(mse)
        self.vlb_tracker.update_state(vlb)
        self._track_quartiles(loss, t)
        return self._logs()

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
            loss, mse, vlb = self.compute_losses(self.network, x0, x_t, t, eps, y_in, weights, training=True)
            # gradients are summed over replicas: divide so the step follows the global-batch mean
            scaled = self.optimizer.scale_loss(tf.reduce_mean(loss) / replicas)
        grads = tape.gradient(scaled, self.network.trainable_weights)
        self.optimizer.apply(grads, self.network.trainable_weights)
        self._update_ema()
        if self.importance_sampling:
            self._record_losses(t, vlb / (weights * self.schedule.num_timesteps))
        return self._update_metrics(loss, mse, vlb, t)

    def test_step(self, data):
        x0, y = self._unpack(data)
        x_t, t, eps, y_in, weights = self.noisy_batch(x0, y, self._step_seeds())
        loss, mse, vlb = self.compute_losses(self.ema_network, x0, x_t, t, eps, y_in, weights, training=False)
        return self._update_metrics(loss, mse, vlb, t)

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

    # ---------------------------------------------------------------- sampling
    def model_fn(self, use_ema=True):
        """The network as a sampler ``model_fn(x_t, t[, labels])``."""
        network = self.ema_network if use_ema else self.network
        if self.num_classes is not None:
            return lambda x, t, y: network((x, t, y), training=False)
        return lambda x, t: network((x, t), training=False)

    def sampler(self, method="ddim", use_ema=True, **options) -> sampling.Sampler:
        """The core graph sampler bound to the EMA network (see :class:`tfddim.sampling.SamplerConfig`)."""
        options.setdefault("learned_variance", self.learned_variance)
        if method == "ddpm" and self.learned_variance:
            options.setdefault("variance", "learned_range")
        if self.num_classes is not None and "guidance" not in options:
            options.setdefault("class_conditional", True)
        config = sampling.SamplerConfig(method=method, **options)
        return sampling.Sampler(self.model_fn(use_ema), self.schedule, config)

    # ----------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "network": keras.saving.serialize_keras_object(self.network),
                "schedule": self.schedule.to_config(),
                "data_shape": list(self.data_shape),
                "loss": self.loss_kind,
                "vlb_weight": self.vlb_weight,
                "variance": self.variance,
                "importance_sampling": self.importance_sampling,
                "ema_decay": self.ema_decay,
                "ema_warmup": self.ema_warmup,
                "num_classes": self.num_classes,
                "label_dropout": self.label_dropout,
                "decoder": self.decoder,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
