"""The analytic oracle: its closed-form epsilon against autodiff of an independent log-density."""

import numpy as np
import pytest
import tensorflow as tf

from tfddim.data import mixture


def _log_q_t(x, mix, ab):
    """log q(x_t) = log sum_k w_k N(x; sqrt(ab) mu_k, ab Sigma_k + (1 - ab) I), with explicit inverses."""
    comps = []
    d = mix.dim
    for k in range(mix.num_components):
        cov = ab * mix.covs[k] + (1 - ab) * np.eye(d)
        inv = tf.constant(np.linalg.inv(cov))
        diff = x - np.sqrt(ab) * mix.means[k]
        maha = tf.einsum("bi,ij,bj->b", diff, inv, diff)
        comps.append(np.log(mix.weights[k]) - 0.5 * (maha + np.linalg.slogdet(cov)[1] + d * np.log(2 * np.pi)))
    return tf.reduce_logsumexp(tf.stack(comps, 1), axis=1)


@pytest.mark.parametrize("t", [0, 10, 300, 999])
def test_eps_is_minus_sqrt_one_minus_abar_times_the_score(mix, sched, eps_fn, t):
    x = tf.constant(np.random.default_rng(t).normal(size=(64, 2)) * 3.0)
    ab = float(sched.alphas_cumprod[t])
    with tf.GradientTape() as tape:
        tape.watch(x)
        logq = _log_q_t(x, mix, ab)
    score = tape.gradient(logq, x)
    got = eps_fn(x, tf.fill([64], t))
    np.testing.assert_allclose(got, -np.sqrt(1 - ab) * score, rtol=1e-9, atol=1e-12)
    assert eps_fn(tf.cast(x, tf.float32), tf.fill([64], t)).dtype == tf.float32


def test_conditional_and_classifier_oracles(mix, sched, eps_fn):
    x = tf.constant(np.random.default_rng(1).normal(size=(32, 2)) * 3.0)
    t = tf.fill([32], 200)
    cond = mix.conditional_eps_fn(sched)
    np.testing.assert_allclose(cond(x, t, tf.fill([32], mix.num_components)), eps_fn(x, t), rtol=1e-12)
    # sum_k p(k | x_t) eps_k = eps: the mixture's epsilon is the posterior average of the components'
    log_p = mix.classifier_log_prob_fn(sched)
    probs = [tf.exp(log_p(x, t, tf.fill([32], k))) for k in range(3)]
    np.testing.assert_allclose(tf.add_n(probs), np.ones(32), rtol=1e-12)
    avg = tf.add_n([p[:, None] * cond(x, t, tf.fill([32], k)) for k, p in enumerate(probs)])
    np.testing.assert_allclose(avg, eps_fn(x, t), rtol=1e-9, atol=1e-12)


def test_sampling_and_validation(mix):
    x, labels = mix.sample(20000, np.random.default_rng(0))
    w = np.bincount(labels) / len(labels)
    assert np.all(np.abs(w - mix.weights) < 4 * np.sqrt(mix.weights * (1 - mix.weights) / len(labels)))
    assert (mix.assign(x) == labels).mean() > 0.999
    with pytest.raises(ValueError, match="weights"):
        mixture.GaussianMixture(np.array([0.5, 0.6]), np.zeros((2, 2)), np.tile(np.eye(2), (2, 1, 1)))
    with pytest.raises(ValueError, match="positive definite"):
        mixture.GaussianMixture(np.array([1.0]), np.zeros((1, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="shapes"):
        mixture.GaussianMixture(np.array([1.0]), np.zeros((2, 2)), np.tile(np.eye(2), (1, 1, 1)))
