"""Per-timestep weights of the MSE term: min-SNR-γ (Hang et al. 2023), as a pure function.

Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy" (ICCV), §3.4
("Min-SNR-γ loss weight strategy"): with SNR(t) = ᾱ_t/(1−ᾱ_t), the loss is, in x₀ units,
w_t·‖x₀ − x̂₀‖² with w_t = min{SNR(t), γ}. The same quantity written for the other targets
(the paper states the ε form too; the v form follows from the identities below):

- x₀ (``sample``):        w = min(SNR, γ)
- ε (``epsilon``):        w = min(SNR, γ)/SNR
- v (``v_prediction``):   w = min(SNR, γ)/(SNR + 1)

They agree because, for one network output converted between targets at a level with
x_t = √ᾱ·x₀ + √(1−ᾱ)·ε (write a = √ᾱ, s = √(1−ᾱ)):

- x̂₀ = (x_t − s·ε̂)/a, so x₀ − x̂₀ = −(s/a)·(ε − ε̂) and ‖x₀ − x̂₀‖² = ‖ε − ε̂‖²/SNR;
- v = a·ε − s·x₀, so v − v̂ = a·(ε − ε̂) − s·(x₀ − x̂₀) = (a + s²/a)·(ε − ε̂) = (ε − ε̂)/a, and
  ‖v − v̂‖² = ‖ε − ε̂‖²/ᾱ = ‖ε − ε̂‖²·(1 + SNR)/SNR.

Hence w_x0·‖x₀ − x̂₀‖² = w_ε·‖ε − ε̂‖² = w_v·‖v − v̂‖² = min(SNR, γ)/SNR·‖ε − ε̂‖² (a test holds this).

SNR = 0 (ᾱ = 0, the last level of a zero-terminal-SNR schedule, Lin et al. 2023): the ε weight
min(SNR, γ)/SNR is 0/0; it is defined as its limit, 1 (for SNR < γ, min(SNR, γ) = SNR, so the ratio
is 1 on the whole interval (0, γ)). The x₀ and v weights are 0 there by their formulas: with those
targets min-SNR-γ does not train the terminal level at all (there Δε = a·Δv = 0 whatever v̂ is, so
the ε-equivalent loss carries no signal); the network's output at t = T−1 is then what its timestep
embedding carries over from the neighbouring levels, whose weight is ≈ SNR ≈ 0 as well.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfddim.diffusion.kinds import Prediction, parse_kind

__all__ = ["min_snr_weight", "check_min_snr_gamma"]


def check_min_snr_gamma(gamma, name: str = "min_snr_gamma"):
    """``gamma`` as a float (or None: no weighting); a ``ValueError`` naming ``name`` unless finite and > 0.

    γ = 0 would zero every weight, and γ = ∞ (min(SNR, ∞) = SNR) is the plain ε loss written for
    the chosen target: both are refused (for no weighting, leave it None). The paper uses γ = 5.
    """
    if gamma is None:
        return None
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise ValueError(f"{name} must be a number > 0 or null, got {gamma!r}")
    gamma = float(gamma)
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"{name} must be a finite number > 0 (the paper uses 5) or null, got {gamma!r}")
    return gamma


def min_snr_weight(snr, gamma, prediction_type):
    """The min-SNR-γ weight of the MSE on the ``prediction_type`` target at ``snr`` (Hang et al. 2023, §3.4).

    ε: min(SNR, γ)/SNR (1 at SNR = 0, its limit); x₀ (``sample``): min(SNR, γ); v: min(SNR, γ)/(SNR + 1).
    See the module docstring for why these are one loss, and for SNR = 0.

    Args:
        snr: a float tensor (or array) of SNR = ᾱ/(1−ᾱ) ≥ 0; the result has its dtype and shape.
        gamma: γ > 0 (checked with :func:`check_min_snr_gamma`).
        prediction_type: a :class:`~tfddim.diffusion.kinds.Prediction` or its value.
    """
    prediction = parse_kind(Prediction, prediction_type, "prediction_type")
    gamma = check_min_snr_gamma(gamma, "gamma")
    if gamma is None:
        raise ValueError("gamma must be a finite number > 0, got None")
    snr = tf.convert_to_tensor(snr)
    if not snr.dtype.is_floating:
        snr = tf.cast(snr, tf.float64)
    clipped = tf.minimum(snr, tf.cast(tf.convert_to_tensor(gamma, dtype_hint=snr.dtype), snr.dtype))
    if prediction is Prediction.SAMPLE:
        return clipped
    if prediction is Prediction.V:
        return clipped / (snr + 1.0)
    positive = snr > 0
    safe = tf.where(positive, snr, tf.ones_like(snr))  # no 0/0 even in the unused branch
    return tf.where(positive, clipped / safe, tf.ones_like(snr))
