"""``DiffusionModel``: Keras training of a diffusion network with the DDPM / improved-DDPM objectives.

The network knows no schedule; this model owns it. Each train step draws t and
ε, forms x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (DDPM eq. 4) and minimises one :class:`Loss`:

- ``Loss.SIMPLE``: L_simple = ‖target − f_θ(x_t, t)‖² (DDPM eq. 14 for the ε target);
- ``Loss.HYBRID``: L_simple + λ·L_vlb with λ = 0.001 and a stop-gradient on the
  mean inside L_vlb (improved DDPM §3.1), for learned-variance networks;
- ``Loss.VLB``: L_vlb alone, optionally with importance sampling of t,
  p_t ∝ √E[L_t²] over the last 10 values of each L_t, uniform until every t
  has 10 (improved DDPM §3.3).

The network's output (its first C channels with a learned variance) is the ``prediction_type``
target, a :class:`~tfddim.diffusion.kinds.Prediction`: ε (``epsilon``), x₀ (``sample``) or
v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ (``v_prediction``, Salimans & Ho 2022). The bound's mean uses
x̂₀ converted from that output (:mod:`tfddim.diffusion.steps`). With ``min_snr_gamma`` = γ the
MSE of L_simple (alone, or inside L_hybrid) is weighted per example by the min-SNR-γ weight of
the target, :func:`tfddim.training.weighting.min_snr_weight` (Hang et al. 2023); L_vlb is a
likelihood bound and is never reweighted (``loss="vlb"`` with γ is refused).

A zero-terminal-SNR schedule (ᾱ_{T−1} = 0) needs ``sample`` or ``v_prediction``: at that level an
ε-network cannot give x̂₀ (x̂₀ = (x_t − √(1−ᾱ)ε̂)/√ᾱ divides by 0; the sampler refuses it and the
bound would be infinite), so ε with such a schedule is refused here, when the model is built
(Lin et al. 2023, §3.2, train it with v-prediction).

L_vlb is estimated as T·L_t (bits/dim) for the sampled t; its terms come from
:mod:`tfddim.diffusion.likelihood`. Everything that is not the objective (the
EMA network, the stateless global-batch draws of t and ε sliced per replica,
the multi-worker build, the ``train_step``/``test_step`` templates) is
:class:`~tfddim.training.base.NoisedTrainer`'s.

Distribution (the global-batch loss scaling and the MultiWorkerMirroredStrategy workaround for
keras-team/keras#20585) is explained in :mod:`tfddim.training.base`.
"""

from __future__ import annotations

import enum

import keras
import tensorflow as tf

from tfddim import sampling
from tfddim.diffusion import steps
from tfddim.sampling.conditioning import Conditioning
from tfddim.diffusion.kinds import Decoder, Prediction, Variance, parse_kind
from tfddim.diffusion.likelihood import LikelihoodTerms
from tfddim.training.base import NoisedTrainer, as_network
from tfddim.training.weighting import check_min_snr_gamma, min_snr_weight

__all__ = ["DiffusionModel", "Loss", "warmup_schedule"]

_HISTORY = 10  # improved DDPM keeps the last 10 values of each L_t
_FIXED_VARIANCES = (Variance.FIXED_SMALL, Variance.FIXED_LARGE)


class Loss(str, enum.Enum):
    """The training objective: L_simple (DDPM eq. 14), L_hybrid = L_simple + λ·L_vlb or L_vlb (improved DDPM §3.1)."""

    SIMPLE = "simple"
    HYBRID = "hybrid"
    VLB = "vlb"


def warmup_schedule(learning_rate: float, warmup_steps: int):
    """A constant learning rate after a linear warm-up from 0 (DDPM: 5000 steps), with Keras' ``CosineDecay``.

    ``alpha=1`` makes the cosine part constant, so only the warm-up remains.
    """
    if warmup_steps <= 0:
        return learning_rate
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=1, alpha=1.0, warmup_target=learning_rate, warmup_steps=warmup_steps
    )


def _check_objective(network, loss, variance, importance_sampling):
    """Reject objectives the network or the bound cannot train."""
    if loss is Loss.HYBRID and not getattr(network, "learned_variance", False):
        raise ValueError("loss 'hybrid' trains the variance: the network needs learned_variance=True")
    if variance not in _FIXED_VARIANCES:
        raise ValueError(f"variance must be 'fixed_small' or 'fixed_large', got {variance.value!r} "
                         "(a learned-variance network always uses 'learned_range')")
    if importance_sampling and loss is not Loss.VLB:
        raise ValueError("importance_sampling applies to loss 'vlb' only (it does not help L_hybrid)")


def _check_target(schedule, loss, prediction, min_snr_gamma):
    """Reject a target the schedule cannot sample from, and min-SNR-γ where there is no MSE to weight."""
    if min_snr_gamma is not None and loss is Loss.VLB:
        raise ValueError("min_snr_gamma weights the MSE term, and loss 'vlb' has none (the bound is not reweighted); "
                         "use loss 'simple' or 'hybrid', or min_snr_gamma=None")
    if prediction is Prediction.EPSILON and schedule.alphas_cumprod[-1] <= 0:
        raise ValueError("prediction_type 'epsilon' cannot be trained on a zero-terminal-SNR schedule "
                         "(alphas_cumprod[T-1] = 0, where x0 = (x_t - sqrt(1-abar)*eps)/sqrt(abar) divides by 0 "
                         "and the sampler refuses to start); use prediction_type 'v_prediction' or 'sample'")


def _check_labels(network, num_classes, label_dropout):
    """Reject label settings that do not match the network."""
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
    if label_dropout > 0 and num_classes is None:
        raise ValueError("label_dropout needs num_classes (a class-conditional network)")
    if num_classes is not None and getattr(network, "num_classes", None) != num_classes:
        raise ValueError(f"num_classes={num_classes} but the network has num_classes={getattr(network, 'num_classes', None)}")


@keras.saving.register_keras_serializable(package="tfddim")
class DiffusionModel(NoisedTrainer):
    """Trains ``network`` under ``schedule``; keeps an EMA copy for sampling and export.

    Args:
        network: a tfddim network (``UNet``/``MLP``): ``network((x_t, t[, y]))`` → the ``prediction_type``
            target (then the variance interpolation, with a learned variance).
        schedule: the :class:`~tfddim.diffusion.schedules.Schedule` (or its config dict).
        data_shape: the shape of one example, e.g. ``(8, 8, 1)`` or ``(2,)``.
        loss: a :class:`Loss` (or its value): ``"simple"``, ``"hybrid"`` or ``"vlb"``.
        vlb_weight: λ of L_hybrid.
        variance: the :class:`~tfddim.diffusion.kinds.Variance` the bound uses for a fixed-variance
            network, ``"fixed_small"`` or ``"fixed_large"`` (learned networks use ``learned_range``).
        importance_sampling: sample t ∝ √E[L_t²] (``loss="vlb"`` only).
        ema_decay: the EMA decay (ADM: 0.9999).
        ema_warmup: use min(decay, (1+n)/(10+n)) at update n, so early EMA weights are not stuck at init.
        num_classes: for a class-conditional network; label ``num_classes`` is the null label.
        label_dropout: probability of replacing a label by the null label (classifier-free guidance).
        decoder: the L_0 :class:`~tfddim.diffusion.kinds.Decoder`, ``"discretized"`` (8-bit images)
            or ``"gaussian"`` (continuous data).
        seed: base seed of the stateless noise.
        prediction_type: the network's target, a :class:`~tfddim.diffusion.kinds.Prediction` (or its value):
            ``"epsilon"`` (ε), ``"sample"`` (x₀) or ``"v_prediction"`` (v = √ᾱ·ε − √(1−ᾱ)·x₀). A model saved
            before this option existed loads as ``"epsilon"``.
        min_snr_gamma: γ of min-SNR-γ weighting of the MSE (Hang et al. 2023; the paper uses 5), or None for
            none. A finite number > 0; with ``loss`` ``"simple"`` or ``"hybrid"`` only.
        low_res_size: for an image-conditioned network (``UNet(low_res_channels=...)``, super-resolution): the
            size h of the low-resolution images; batches are then ``((x, low_res), label)``
            (``DataConfig.low_res_size``). None: no image conditioning.
        low_res_augment_max: Gaussian conditioning augmentation (cascaded diffusion, Ho et al. 2021 §3.2):
            each example's low-resolution image is noised to a level s drawn uniformly from
            {0, …, low_res_augment_max} (s = 0: clean), x_s = √ᾱ_s·low + √(1−ᾱ_s)·ε', and s is given to the
            network beside t, so it learns to correct a base model's imperfect samples.

    The ``mse`` metric is the unweighted MSE on the target; ``loss`` is what is minimised.

    Call arguments:
        inputs: ``(x_t, t[, y])``, passed to the *training* network.

    References:
        Ho et al. 2020 (DDPM); Nichol & Dhariwal 2021 (improved DDPM); Ho & Salimans 2022 (label dropout);
        Salimans & Ho 2022 (v-prediction); Hang et al. 2023 (min-SNR-γ); Lin et al. 2023 (zero terminal SNR).
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
        prediction_type="epsilon",
        min_snr_gamma=None,
        low_res_size=None,
        low_res_augment_max=0,
        **kwargs,
    ):
        network = as_network(network)
        low_channels = getattr(network, "low_res_channels", None)
        if (low_res_size is None) != (low_channels is None):
            raise ValueError(f"low_res_size={low_res_size} but the network has low_res_channels={low_channels}: "
                             "an image-conditioned network needs low_res_size, and only it takes one")
        # read by network_inputs while the base class builds the networks, before Keras tracks attributes
        object.__setattr__(self, "_low_res_shape", None if low_res_size is None else
                           (int(low_res_size), int(low_res_size), int(low_channels)))
        loss = parse_kind(Loss, loss, "loss")
        variance = parse_kind(Variance, variance, "variance")
        decoder = parse_kind(Decoder, decoder, "decoder")
        prediction = parse_kind(Prediction, prediction_type, "prediction_type")
        min_snr_gamma = check_min_snr_gamma(min_snr_gamma)
        _check_objective(network, loss, variance, importance_sampling)
        _check_labels(network, num_classes, label_dropout)
        super().__init__(network, schedule, data_shape, ema_decay=ema_decay, ema_warmup=ema_warmup, seed=seed,
                         label_inputs=num_classes is not None, **kwargs)
        _check_target(self.schedule, loss, prediction, min_snr_gamma)
        self.prediction_type = prediction
        self.min_snr_gamma = min_snr_gamma
        self.low_res_size = None if low_res_size is None else int(low_res_size)
        T = self.schedule.num_timesteps
        if isinstance(low_res_augment_max, bool) or not 0 <= int(low_res_augment_max) <= T - 1:
            raise ValueError(f"low_res_augment_max must be a timestep in [0, T-1 = {T - 1}], got {low_res_augment_max!r}")
        self.low_res_augment_max = int(low_res_augment_max)
        # The weight of each t, computed once in float64 from the schedule's SNR (0 where ᾱ = 0).
        self._mse_weights = None if min_snr_gamma is None else tf.constant(
            min_snr_weight(self.schedule.snr, min_snr_gamma, prediction).numpy(), tf.float32)
        self.loss_kind = loss  # not ``self.loss``: Keras' compile owns that name
        self.vlb_weight = float(vlb_weight)
        self.variance = variance
        self.importance_sampling = bool(importance_sampling)
        self.num_classes = num_classes
        self.label_dropout = float(label_dropout)
        self.decoder = decoder
        self.learned_variance = bool(getattr(network, "learned_variance", False))
        self.terms = LikelihoodTerms(self.schedule, decoder)
        T = self.schedule.num_timesteps
        self.loss_history = self.add_weight(
            shape=(T, _HISTORY), initializer="zeros", trainable=False, name="loss_history", aggregation="only_first_replica"
        )
        self.loss_counts = self.add_weight(
            shape=(T,), initializer="zeros", dtype="int32", trainable=False, name="loss_counts", aggregation="only_first_replica"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mse_tracker = keras.metrics.Mean(name="mse")
        self.vlb_tracker = keras.metrics.Mean(name="vlb")
        self.quartile_trackers = self._make_quartile_trackers("loss")

    @property
    def metrics(self):
        return [self.loss_tracker, self.mse_tracker, self.vlb_tracker, *self.quartile_trackers]

    # ------------------------------------------------------------- randomness
    def sample_timesteps(self, batch, seed):
        """t for a batch and the importance weights 1/(T·p_t) (1 when sampling uniformly)."""
        uniform, ones = super().sample_timesteps(batch, seed)
        if not self.importance_sampling:
            return uniform, ones
        T = self.schedule.num_timesteps
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

    def noisy_batch(self, x0, y, seeds):
        """(x_t, t, ε, y_in, importance weights) for this replica's batch (DDPM eq. 4).

        As :meth:`NoisedTrainer.noisy_batch`, and the label-dropout draws are made
        for the global batch from the step's third seed too, each replica taking its slice.
        """
        x_t, t, eps, y, weights = super().noisy_batch(x0, y, seeds)
        if isinstance(y, Conditioning):  # image-conditioned: labels inside, and the low-res image to augment
            labels = y.labels
            if labels is not None and self.label_dropout > 0:
                labels = self._drop_labels(labels, seeds[2])
            return x_t, t, eps, self._augment(y._replace(labels=labels), seeds[2]), weights
        if y is not None and self.label_dropout > 0:
            y = self._drop_labels(y, seeds[2])
        return x_t, t, eps, y, weights

    def _augment(self, cond: Conditioning, seed) -> Conditioning:
        """Conditioning augmentation: low_res noised to s ~ U{0..low_res_augment_max} (global-batch draws, sliced)."""
        low = tf.cast(cond.low_res, tf.float32)
        batch = tf.shape(low)[0]
        start, total = self._replica_rows(batch)
        seed_s, seed_e = tf.unstack(tf.random.experimental.stateless_split(seed, 3))[1:]
        s = tf.random.stateless_uniform([total], seed_s, 0, self.low_res_augment_max + 1, dtype=tf.int32)[start:start + batch]
        shape = tf.concat([[total], tf.shape(low)[1:]], axis=0)
        eps = tf.random.stateless_normal(shape, seed_e)[start:start + batch]
        return cond._replace(low_res=steps.q_sample(low, eps, steps.select_timestep(self._alphas_cumprod, s, low)),
                             low_res_t=s)

    def _drop_labels(self, y, seed):
        """Replace each label by the null label ``num_classes`` with probability ``label_dropout``."""
        batch = tf.shape(y)[0]
        start, total = self._replica_rows(batch)
        drop = tf.random.stateless_uniform([total], seed)[start:start + batch] < self.label_dropout
        return tf.where(drop, tf.fill([batch], self.num_classes), y)

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
    def network_inputs(self, x, t, y=None):
        """``(x_t, t[, y])``, then ``low_res, low_res_t`` for an image-conditioned network (zeros if not given)."""
        if isinstance(y, Conditioning):
            return (x, t, *y.model_args())
        inputs = super().network_inputs(x, t, y)
        if self._low_res_shape is None:
            return inputs
        batch = tf.shape(x)[0]
        return (*inputs, tf.zeros(tf.concat([[batch], self._low_res_shape], 0)), tf.zeros([batch], tf.int32))

    def _unpack(self, data):
        if isinstance(data, (tuple, list)):
            x0 = data[0]
            y = data[1] if len(data) > 1 else None
        else:
            x0, y = data, None
        if self._low_res_shape is not None:  # ((x, low_res), label): the pair of a super-resolution model
            if not isinstance(x0, (tuple, list)) or len(x0) != 2:
                raise ValueError("an image-conditioned DiffusionModel needs ((images, low_res), labels) batches "
                                 "(DataConfig.low_res_size)")
            x0, low = x0
            labels = None if self.num_classes is None else tf.cast(y, tf.int32)
            return tf.cast(x0, tf.float32), Conditioning(labels=labels, low_res=tf.cast(low, tf.float32))
        if self.num_classes is None:
            return tf.cast(x0, tf.float32), None  # an unconditional model ignores the dataset's labels
        if y is None:
            raise ValueError("a class-conditional DiffusionModel needs (images, labels) batches")
        return tf.cast(x0, tf.float32), tf.cast(y, tf.int32)

    def target(self, x0, eps, alpha_bar_t):
        """What the network is trained to output: ε, x₀ or v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ (Salimans & Ho 2022)."""
        if self.prediction_type is Prediction.EPSILON:
            return eps
        if self.prediction_type is Prediction.SAMPLE:
            return x0
        return steps.v_from_x0_eps(x0, eps, alpha_bar_t)

    def x0_from_output(self, x_t, output, alpha_bar_t):
        """x̂₀ from the network's (target) output, as the sampler converts it."""
        if self.prediction_type is Prediction.EPSILON:
            return steps.x0_from_eps(x_t, output, alpha_bar_t)
        if self.prediction_type is Prediction.SAMPLE:
            return output
        return steps.x0_from_v(x_t, output, alpha_bar_t)

    def mse_weights(self, t):
        """The per-example weight of the MSE: min-SNR-γ's for each t (:mod:`~tfddim.training.weighting`), or 1."""
        if self._mse_weights is None:
            return tf.ones(tf.shape(t), tf.float32)
        return tf.gather(self._mse_weights, t)

    def compute_losses(self, network, x0, x_t, t, eps, y, weights, training):
        """Per-example (loss, mse, T·L_t) for one batch (DDPM eq. 14; improved DDPM §3.1).

        ``mse`` is the unweighted MSE on the target; the loss weights it by :meth:`mse_weights`.
        """
        inputs = self.network_inputs(x_t, t, y) if isinstance(y, Conditioning) else ((x_t, t) if y is None else (x_t, t, y))
        out = tf.cast(network(inputs, training=training), tf.float32)
        if self.learned_variance:
            pred, var_interp = tf.split(out, 2, axis=-1)
        else:
            pred, var_interp = out, None
        axes = list(range(1, len(self.data_shape) + 1))
        ab = steps.select_timestep(self._alphas_cumprod, t, x0)
        mse = tf.reduce_mean(tf.square(self.target(x0, eps, ab) - pred), axis=axes)
        weighted_mse = mse * self.mse_weights(t) if self._mse_weights is not None else mse
        # The bound trains only the variance in L_hybrid: the mean sees a frozen prediction.
        pred_for_mean = tf.stop_gradient(pred) if self.loss_kind is Loss.HYBRID else pred
        x0_hat = self.x0_from_output(x_t, pred_for_mean, ab)
        kind = Variance.LEARNED_RANGE if self.learned_variance else self.variance
        log_var = self.terms.model_log_variance(kind, t, x0, var_interp)
        T = float(self.schedule.num_timesteps)
        vlb = T * self.terms.terms_bpd(x0, x_t, t, x0_hat, log_var) * weights
        if self.loss_kind is Loss.SIMPLE:
            loss = weighted_mse
        elif self.loss_kind is Loss.HYBRID:
            loss = weighted_mse + self.vlb_weight * vlb
        else:
            loss = vlb
        return loss, mse, vlb

    def update_metrics(self, t, values):
        loss, mse, vlb = values
        self.loss_tracker.update_state(loss)
        self.mse_tracker.update_state(mse)
        self.vlb_tracker.update_state(vlb)
        self._track_quartiles(loss, t)
        return self._logs()

    def after_train_step(self, t, weights, values):
        """Importance sampling: record L_t = vlb / (T·weight) of every example of the step."""
        if self.importance_sampling:
            self._record_losses(t, values[2] / (weights * self.schedule.num_timesteps))

    # ---------------------------------------------------------------- sampling
    def model_fn(self, use_ema=True):
        """The network as a sampler ``model_fn(x_t, t[, labels])``.

        It returns the model's ``prediction_type`` target: sample it with that prediction type
        (``sampling.sample(..., prediction_type=model.prediction_type)``), or use :meth:`sampler`, which does.
        """
        network = self.ema_network if use_ema else self.network
        if self.num_classes is not None or self._low_res_shape is not None:  # (x, t[, y][, low_res, low_res_t])
            return lambda x, t, *args: network((x, t, *args), training=False)
        return lambda x, t: network((x, t), training=False)

    def sampler(self, method="ddim", use_ema=True, **options) -> sampling.Sampler:
        """The core graph sampler bound to the EMA network (see :class:`tfddim.sampling.SamplerConfig`)."""
        method = parse_kind(sampling.Method, method, "method")
        if "prediction_type" in options and parse_kind(Prediction, options["prediction_type"], "prediction_type") \
                is not self.prediction_type:
            raise ValueError(f"the model predicts {self.prediction_type.value!r}; a sampler with prediction_type "
                             f"{options['prediction_type']!r} would misread its output")
        options["prediction_type"] = self.prediction_type
        options.setdefault("learned_variance", self.learned_variance)
        if method is sampling.Method.DDPM and self.learned_variance:
            options.setdefault("variance", Variance.LEARNED_RANGE)
        if self.num_classes is not None and "guidance" not in options:
            options.setdefault("class_conditional", True)
        config = sampling.SamplerConfig(method=method, **options)
        return sampling.Sampler(self.model_fn(use_ema), self.schedule, config)

    # ----------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "loss": self.loss_kind.value,
                "vlb_weight": self.vlb_weight,
                "variance": self.variance.value,
                "importance_sampling": self.importance_sampling,
                "num_classes": self.num_classes,
                "label_dropout": self.label_dropout,
                "decoder": self.decoder.value,
                "prediction_type": self.prediction_type.value,
                "min_snr_gamma": self.min_snr_gamma,
                "low_res_size": self.low_res_size,
                "low_res_augment_max": self.low_res_augment_max,
            }
        )
        return config
