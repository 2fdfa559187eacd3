"""Step functions against numbers worked out by hand from the seeds' equations."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfddim.diffusion import steps


def c(v, dtype=tf.float64):
    return tf.constant(v, dtype)


def test_prediction_conversions_by_hand():
    ab, x_t, eps = c(0.25), c(1.0), c(0.5)
    x0 = steps.x0_from_eps(x_t, eps, ab)
    assert float(x0) == pytest.approx((1 - math.sqrt(0.75) * 0.5) / 0.5, rel=1e-14)
    assert float(steps.eps_from_x0(x_t, x0, ab)) == pytest.approx(0.5, rel=1e-14)
    v = steps.v_from_x0_eps(x0, eps, ab)
    assert float(v) == pytest.approx(0.5 * 0.5 - math.sqrt(0.75) * float(x0), rel=1e-14)
    # x_t = sqrt(ab) x0 + sqrt(1-ab) eps, so v recovers both
    assert float(steps.x0_from_v(x_t, v, ab)) == pytest.approx(float(x0), rel=1e-13)
    assert float(steps.eps_from_v(x_t, v, ab)) == pytest.approx(0.5, rel=1e-13)


def test_q_sample_by_hand():
    assert float(steps.q_sample(c(2.0), c(-1.0), c(0.36))) == pytest.approx(0.6 * 2 - 0.8, rel=1e-14)


def test_ddim_sigma_and_update_by_hand():
    ab_t, ab_prev = c(0.5), c(0.8)
    s = steps.ddim_sigma(ab_t, ab_prev, 0.5)
    assert float(s) == pytest.approx(0.5 * math.sqrt(0.2 / 0.5) * math.sqrt(1 - 0.5 / 0.8), rel=1e-14)
    assert float(steps.ddim_sigma(ab_t, ab_prev, 0.0)) == 0.0
    # eta = 1 gives DDPM's posterior std sqrt(beta-tilde) of the strided step
    _, bt = steps.respaced_betas(ab_t, ab_prev)
    assert float(steps.ddim_sigma(ab_t, ab_prev, 1.0)) == pytest.approx(math.sqrt(float(bt)), rel=1e-14)
    assert float(steps.ddim_sigma_hat(ab_t, ab_prev)) == pytest.approx(math.sqrt(1 - 0.5 / 0.8), rel=1e-14)
    # eq. 12 with x0 = 2, eps = -1, sigma = 0.1, z = 3
    out = steps.ddim_update(c(2.0), c(-1.0), ab_prev, c(0.1), c(3.0))
    assert float(out) == pytest.approx(math.sqrt(0.8) * 2 + math.sqrt(1 - 0.8 - 0.01) * -1 + 0.1 * 3, rel=1e-14)
    x_prev, x0 = steps.ddim_step(c(1.0), c(0.5), ab_t, ab_prev, 0.0, c(0.0))
    assert float(x0) == pytest.approx((1 - math.sqrt(0.5) * 0.5) / math.sqrt(0.5), rel=1e-14)
    assert float(x_prev) == pytest.approx(math.sqrt(0.8) * float(x0) + math.sqrt(0.2) * 0.5, rel=1e-14)


def test_adjacent_steps_reproduce_ddpm_coefficients(sched):
    """A respaced step from t to t-1 is DDPM's own step: same beta, beta-tilde, mean coefficients."""
    t = np.array([1, 5, 500, 999])
    ab_t, ab_prev = c(sched.alphas_cumprod[t]), c(sched.alphas_cumprod[t - 1])
    beta, beta_tilde = steps.respaced_betas(ab_t, ab_prev)
    np.testing.assert_allclose(beta, sched.betas[t], rtol=1e-10)
    np.testing.assert_allclose(beta_tilde, sched.posterior_variance[t], rtol=1e-10)
    x_t, x0 = c([0.3, -1.0, 2.0, 0.7]), c([1.0, 0.5, -0.2, 0.1])
    mean = steps.posterior_mean(x_t, x0, ab_t, ab_prev)
    expected = sched.posterior_mean_coef1[t] * x0.numpy() + sched.posterior_mean_coef2[t] * x_t.numpy()
    np.testing.assert_allclose(mean, expected, rtol=1e-10)
    np.testing.assert_allclose(steps.ddpm_log_variance("fixed_small", ab_t, ab_prev), np.log(sched.posterior_variance[t]), rtol=1e-10)
    np.testing.assert_allclose(steps.ddpm_log_variance("fixed_large", ab_t, ab_prev), np.log(sched.betas[t]), rtol=1e-10)
    v = c([0.3, 0.3, 0.3, 0.3])
    learned = 0.3 * np.log(sched.betas[t]) + 0.7 * np.log(sched.posterior_variance[t])
    np.testing.assert_allclose(steps.ddpm_log_variance("learned_range", ab_t, ab_prev, v), learned, rtol=1e-10)


def test_ddim_with_eta_one_is_the_ddpm_step():
    """eq. 16: with sigma(eta=1) the DDIM mean is DDPM's posterior mean."""
    ab_t, ab_prev = c([0.3, 0.6, 0.02]), c([0.5, 0.9, 1.0])
    x_t, eps, z = c([0.4, -1.2, 2.0]), c([0.7, 0.1, -0.3]), c([0.5, -0.5, 1.5])
    x_ddim, x0 = steps.ddim_step(x_t, eps, ab_t, ab_prev, 1.0, z)
    mean = steps.posterior_mean(x_t, x0, ab_t, ab_prev)
    x_ddpm = steps.ddpm_step(mean, steps.ddpm_log_variance("fixed_small", ab_t, ab_prev), z * [1, 1, 0])
    np.testing.assert_allclose(x_ddim[:2], x_ddpm[:2], rtol=1e-12)
    # into the clean level sigma = 0 and log-variance stays finite
    assert float(x_ddim[2]) == pytest.approx(float(x0[2]), rel=1e-12)
    assert np.isfinite(steps.ddpm_log_variance("fixed_small", ab_t, ab_prev).numpy()).all()


def test_clip_and_dynamic_threshold():
    x = c([[-3.0, 0.5, 2.0], [0.2, -0.4, 0.9]])
    np.testing.assert_array_equal(steps.clip_x0(x, -1, 1), [[-1, 0.5, 1], [0.2, -0.4, 0.9]])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 5, 3)) * np.array([0.3, 1.5, 3.0, 10.0])[:, None, None, None]
    got = steps.dynamic_threshold(c(x), 0.9, max_value=5.0).numpy()
    for b in range(4):  # per sample, Imagen / diffusers: s = clamp(quantile(|x|, p), 1, max)
        s = np.clip(np.quantile(np.abs(x[b]), 0.9), 1.0, 5.0)
        np.testing.assert_allclose(got[b], np.clip(x[b], -s, s) / s, rtol=1e-12)
    assert np.abs(got).max() <= 1.0
    np.testing.assert_array_equal(got[0], x[0])  # |x| mostly below 1: s = 1 and nothing moves
    # changing one sample does not move another's threshold
    x2 = x.copy()
    x2[3] *= 100
    np.testing.assert_allclose(steps.dynamic_threshold(c(x2), 0.9, 5.0).numpy()[:3], got[:3], rtol=1e-12)


def test_guidance_formulas_by_hand():
    eps, ab, grad = c(0.5), c(0.64), c(2.0)
    assert float(steps.classifier_guided_eps(eps, ab, grad, 3.0)) == pytest.approx(0.5 - 3 * 0.6 * 2, rel=1e-14)
    assert float(steps.classifier_guided_mean(c(1.0), c(math.log(0.25)), grad, 3.0)) == pytest.approx(1 + 3 * 0.25 * 2)
    assert float(steps.classifier_free_eps(c(1.0), c(3.0), 2.5)) == pytest.approx(1 + 2.5 * 2)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_dtype_follows_input_and_batch_is_dynamic(dtype):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], dtype)])
    def f(x):
        ab_t = tf.fill([tf.shape(x)[0], 1, 1, 1], tf.cast(0.5, dtype))
        ab_prev = tf.fill([tf.shape(x)[0], 1, 1, 1], tf.cast(0.7, dtype))
        x_prev, x0 = steps.ddim_step(x, x, ab_t, ab_prev, 0.3, tf.zeros_like(x))
        return steps.dynamic_threshold(x_prev, 0.99, 2.0), x0

    for b in (1, 3):
        out, x0 = f(tf.ones([b, 4, 4, 1], dtype))
        assert out.dtype == dtype and out.shape == (b, 4, 4, 1) and x0.dtype == dtype
    assert f.experimental_get_tracing_count() == 1


def test_unknown_variance_is_named():
    with pytest.raises(ValueError, match="unknown variance"):
        steps.ddpm_log_variance("fixed_medium", c(0.5), c(0.6))
    with pytest.raises(ValueError, match="learned_range"):
        steps.ddpm_log_variance("learned_range", c(0.5), c(0.6))
