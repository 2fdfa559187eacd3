"""The bits/dim bound against closed forms: an oracle that knows x₀ makes every KL term computable by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfddim.diffusion import schedules
from tfddim.evaluation.nll import nll_bpd

T = 40


@pytest.fixture(scope="module")
def small_sched():
    return schedules.get("linear", T)


def bins(n=6, d=5, seed=0):
    """Images on the 8-bit grid of [−1, 1] (the discretized decoder's bins)."""
    k = np.random.default_rng(seed).integers(0, 256, size=(n, d, 1))
    return (k / 127.5 - 1.0).astype(np.float32)


def oracle(x0_all, sched, learned=False, v=0.0):
    """ε that reproduces x₀ exactly from x_t: then x̂₀ = x₀ and the posterior means coincide."""
    ab_all = tf.constant(sched.alphas_cumprod, tf.float32)
    x0_all = tf.constant(x0_all)

    def fn(x_t, t):
        ab = tf.reshape(tf.gather(ab_all, t), [-1, 1, 1])
        eps = (x_t - tf.sqrt(ab) * x0_all) / tf.sqrt(1.0 - ab)
        return tf.concat([eps, tf.fill(tf.shape(eps), v)], -1) if learned else eps

    return fn


def phi(x):  # the decoder's tanh approximation of the normal CDF
    return 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def by_hand(x0, sched, variance):
    """L_T + Σ_{t≥1} KL(N(m, β̃_t) ‖ N(m, σ_t²)) + L_0 in bits/dim, from the formulas in improved DDPM §2."""
    x0 = x0.astype(np.float64)
    ab_T = sched.alphas_cumprod[-1]
    prior = 0.5 * (-1.0 - np.log(1.0 - ab_T) + (1.0 - ab_T) + ab_T * x0**2)  # KL(N(√ᾱx₀, 1−ᾱ) ‖ N(0, 1))
    log_tilde = sched.posterior_log_variance_clipped
    log_model = log_tilde if variance == "fixed_small" else np.log(np.append(sched.posterior_variance[1], sched.betas[1:]))
    kl = 0.5 * (-1.0 + log_model[1:] - log_tilde[1:] + np.exp(log_tilde[1:] - log_model[1:]))  # same means
    sigma = np.exp(0.5 * log_model[0])  # L_0: the posterior mean at t = 0 is x₀ itself
    cdf_plus, cdf_min = phi((1 / 255) / sigma), phi((-1 / 255) / sigma)
    dec = np.where(x0 < -0.999, np.log(cdf_plus), np.where(x0 > 0.999, np.log(1 - cdf_min), np.log(cdf_plus - cdf_min)))
    per_dim = prior + kl.sum() - dec
    return per_dim.reshape(len(x0), -1).mean(axis=1) / math.log(2.0)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_the_bound_of_an_x0_oracle_equals_the_hand_computation(small_sched, variance):
    x0 = bins()
    out = nll_bpd(oracle(x0, small_sched), small_sched, x0, variance, batch_size=len(x0), progress=False)
    want = by_hand(x0, small_sched, variance)
    # float32 x_t and ε round-trip x̂₀ to ~1e-6; the KL terms are float64 sums of T values
    np.testing.assert_allclose(out["per_image"], want, rtol=1e-5, atol=1e-4)
    assert out["terms_bpd"].shape == (T,) and out["bpd"] == pytest.approx(want.mean(), rel=1e-5, abs=1e-4)
    if variance == "fixed_small":
        assert np.allclose(out["terms_bpd"][1:], 0.0, atol=1e-4)  # same mean, same variance: no KL


def test_learned_variance_at_v0_is_fixed_small_and_errors_name_the_parameter(small_sched):
    x0 = bins(n=4)
    fixed = nll_bpd(oracle(x0, small_sched), small_sched, x0, "fixed_small", batch_size=4, progress=False)
    learned = nll_bpd(oracle(x0, small_sched, learned=True, v=0.0), small_sched, x0, "learned_range",
                      learned_variance=True, batch_size=4, progress=False)
    np.testing.assert_allclose(learned["per_image"], fixed["per_image"], rtol=1e-6)
    with pytest.raises(ValueError, match="variance"):
        nll_bpd(oracle(x0, small_sched), small_sched, x0, "huge", progress=False)
    with pytest.raises(ValueError, match="learned_variance"):
        nll_bpd(oracle(x0, small_sched), small_sched, x0, "learned_range", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        nll_bpd(oracle(x0, small_sched), small_sched, x0, batch_size=0, progress=False)


def test_a_worse_model_has_a_larger_bound(small_sched):
    x0 = bins(n=4)
    good = nll_bpd(oracle(x0, small_sched), small_sched, x0, batch_size=4, progress=False)
    bad = nll_bpd(lambda x, t: tf.zeros_like(x), small_sched, x0, batch_size=4, progress=False)
    assert bad["bpd"] > good["bpd"] + 1.0
