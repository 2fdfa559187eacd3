"""SDEdit (strength) and inpainting (+ RePaint's resampling) in the sampler: the kept list, the equalities that
define them, and the mixture oracle's closed-form conditional."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tfddim import sampling
from tfddim.diffusion import editing, schedules, steps
from tfddim.diffusion.spacing import GRAPH_SPACINGS


# ------------------------------------------------------------------ strength → kept timesteps
@settings(max_examples=150, deadline=None)
@given(T=st.integers(2, 1200), S=st.integers(1, 60), s=st.floats(1e-4, 1.0),
       spacing=st.sampled_from(["uniform", "linspace", "trailing", "quad"]))
def test_strength_keeps_exactly_the_levels_at_or_below_s_times_T_minus_1(T, S, s, spacing):
    S = min(S, T)
    taus = schedules.spaced_timesteps(T, S, spacing)
    kept = editing.strength_timesteps(taus, s, T)
    level = s * (T - 1)
    k = len(kept)
    assert kept.tolist() == taus[len(taus) - k:].tolist()  # a suffix of the list: the last K steps
    assert np.all(kept <= level)
    assert np.all(taus[: len(taus) - k] > level)  # nothing at or below the level is dropped (no off-by-one)
    graph = editing.graph_strength_timesteps(tf.constant(taus, tf.int32), tf.constant(s, tf.float32), T).numpy()
    # the graph compares in float64 from a float32 strength: equal unless s·(T−1) sits within float32 rounding of a level
    if not np.any(np.abs(taus - level) < 1e-6 * T):
        assert graph.tolist() == kept.tolist()


def test_strength_one_keeps_every_step_and_trailing_agrees_with_diffusers_count():
    for spacing in GRAPH_SPACINGS[:4]:
        taus = schedules.spaced_timesteps(1000, 10, spacing.value)
        assert editing.strength_timesteps(taus, 1.0, 1000).tolist() == taus.tolist()
    taus = schedules.spaced_timesteps(1000, 10, "trailing")  # 999, 899, ..., 99
    for s in (0.2, 0.4, 0.5, 0.6, 0.8, 1.0):
        assert len(editing.strength_timesteps(taus, s, 1000)) == int(10 * s)  # diffusers' init_timestep


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), True, "0.5", None])
def test_strength_outside_0_1_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="strength"):
        editing.check_strength(bad)


def test_repaint_moves_is_get_schedule_jump():
    # RePaint's get_schedule_jump(t_T=6, jump_length=2, jump_n_sample=2) = [5,4,3,2,3,4,3,2,1,0,1,2,1,0,-1]
    assert editing.repaint_moves(6, 2, 2).tolist() == [5 - t for t in [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]]
    assert editing.repaint_moves(4, 10, 1).tolist() == [0, 1, 2, 3, 4]
    moves = editing.repaint_moves(50, 5, 3)
    assert np.all(np.abs(np.diff(moves)) == 1) and moves[0] == 0 and moves[-1] == 50
    assert np.sum(np.diff(moves) > 0) == 50 + 9 * 2 * 5  # every down step, plus r−1 = 2 revisits of 5 for 9 jumps


# ------------------------------------------------------------------ SDEdit in the sampler
def _data(mix, n, seed=0):
    return tf.constant(mix.sample(n, np.random.default_rng(seed))[0])


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_edit_at_strength_one_is_sampling_from_q_sample_of_x0(mix, eps_fn, sched, eta):
    sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method="ddim"))
    taus = schedules.spaced_timesteps(1000, 20, "trailing")  # τ_0 = T − 1
    x0 = _data(mix, 64)
    z = tf.random.stateless_normal(x0.shape, [1, 2], dtype=tf.float64)
    noise = tf.random.stateless_normal([20, *x0.shape], [3, 4], dtype=tf.float64)
    ab = sched.alphas_cumprod[taus[0]]
    want = sampler.sample(steps.q_sample(x0, z, ab), taus, eta=eta, noise=noise)
    got = sampler.edit(x0, taus, 1.0, eta=eta, noise=noise, start_noise=z)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-12)
    # with a seed: the start noise is the seed's stream −1, the steps its streams 0..S−1 as plain sampling's
    start = steps.stateless_step_normal(tf.constant(7, tf.int64), -1, x0)
    want = sampler.sample(steps.q_sample(x0, start, ab), taus, eta=eta, seed=7)
    np.testing.assert_allclose(sampler.edit(x0, taus, 1.0, eta=eta, seed=7).numpy(), want.numpy(), rtol=0, atol=1e-12)


def test_edit_runs_the_last_k_steps_with_their_noise_entries(mix, eps_fn, sched):
    sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method="ddim"))
    taus = schedules.spaced_timesteps(1000, 10, "uniform")  # 900, ..., 0
    x0 = _data(mix, 32)
    z = tf.random.stateless_normal(x0.shape, [1, 2], dtype=tf.float64)
    noise = tf.random.stateless_normal([10, *x0.shape], [5, 6], dtype=tf.float64)
    kept = editing.strength_timesteps(taus, 0.45, 1000)  # 400, ..., 0
    assert kept.tolist() == [400, 300, 200, 100, 0]
    x_start = steps.q_sample(x0, z, sched.alphas_cumprod[400])
    want = sampler.sample(x_start, kept, eta=1.0, noise=noise[5:])
    got = sampler.edit(x0, taus, 0.45, eta=1.0, noise=noise, start_noise=z)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-12)


def test_a_small_strength_returns_x0_within_the_schedules_bound(mix, eps_fn, sched):
    """One kept step from level t with the oracle ε̂ = E[ε | x_t]: x_out − x₀ = √((1−ᾱ_t)/ᾱ_t)·(z − ε̂), and
    E|z − ε̂|² = E|z|² − E|ε̂|² ≤ d, so E|x_out − x₀|² ≤ d·(1−ᾱ_t)/ᾱ_t."""
    sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method="ddim"))
    taus = schedules.spaced_timesteps(1000, 50, "uniform")  # ..., 20, 0: s = 0.015 keeps [0] only? no: 0.015·999 = 14.985
    x0 = _data(mix, 8000)
    for s, level in ((0.0005, 0), (0.021, 20)):
        kept = editing.strength_timesteps(taus, s, 1000)
        assert kept.tolist() == ([20, 0] if level == 20 else [0])
        out = sampler.edit(x0, taus, s, seed=3).numpy()
        ab = sched.alphas_cumprod[level]
        bound = 2 * (1 - ab) / ab
        msd = np.mean(np.sum((out - x0.numpy()) ** 2, axis=1))
        # the sample mean of |Δ|² over N = 8000: its relative s.e. is ≤ √(2/N)·(a chi-square's 2 dof) ≈ 0.016
        assert msd <= bound * (1 + 4 * 0.016), (s, msd, bound)
    nothing = editing.strength_timesteps(schedules.spaced_timesteps(1000, 10, "trailing"), 0.05, 1000)
    assert nothing.size == 0
    out = sampler.edit(x0, schedules.spaced_timesteps(1000, 10, "trailing"), 0.05, seed=3)
    np.testing.assert_array_equal(out.numpy(), x0.numpy())  # nothing kept: x₀ itself


def test_edit_refuses_bad_inputs_by_name(mix, eps_fn, sched):
    sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method="ddim"))
    x0 = _data(mix, 4)
    taus = schedules.spaced_timesteps(1000, 5)
    for bad in (0.0, 1.2, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            sampler.edit(x0, taus, bad, seed=0)
    with pytest.raises(ValueError, match="start_noise"):
        sampler.edit(x0, taus, 0.5, noise=tf.zeros([5, 4, 2], tf.float64), start_noise=tf.zeros([3, 2], tf.float64))


# ------------------------------------------------------------------ inpainting
X1 = 2.5  # where two of the three components overlap in x1: the conditional of x2 is bimodal


def _closed_form_conditional(mix):
    """p(x2 | x1 = X1) of the fixture's mixture: per component N(μ2 + Σ21/Σ11·(X1 − μ1), Σ22 − Σ21²/Σ11),
    weighted by π_k·N(X1; μ1, Σ11)."""
    m, c = mix.means, mix.covs
    w = np.array([mix.weights[k] * stats.norm.pdf(X1, m[k, 0], np.sqrt(c[k, 0, 0])) for k in range(3)])
    mu = np.array([m[k, 1] + c[k, 1, 0] / c[k, 0, 0] * (X1 - m[k, 0]) for k in range(3)])
    sd = np.array([np.sqrt(c[k, 1, 1] - c[k, 1, 0] ** 2 / c[k, 0, 0]) for k in range(3)])
    return w / w.sum(), mu, sd


def test_inpainting_one_coordinate_reproduces_the_closed_form_conditional_and_resampling_helps(mix, eps_fn, sched):
    w, mu, sd = _closed_form_conditional(mix)
    upper_w, upper_mu, lower_mu = w[1], mu[1], mu[2]  # x2 ≈ 3.1 (component 1) or −4 (component 2); w[0] ≈ 0
    assert w[0] < 1e-20 and upper_mu > 2 and lower_mu < -2
    n = 20000
    x0 = np.zeros([n, 2]); x0[:, 0] = X1
    mask = np.zeros([n, 2]); mask[:, 0] = 1.0
    x_T = np.random.default_rng(0).standard_normal([n, 2])
    sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method="ddim"))
    taus = schedules.spaced_timesteps(1000, 100)

    def stats_of(out):
        assert np.all(out[:, 0] == X1)  # the known coordinate is x₀ exactly
        up = out[:, 1] > 0
        return up.mean(), out[up, 1].mean(), out[~up, 1].mean(), out[up, 1].std(), out[~up, 1].std(), up.sum()

    plain = stats_of(sampler.inpaint(x_T, x0, mask, taus, eta=1.0, seed=1).numpy())
    resampled = stats_of(sampler.inpaint(x_T, x0, mask, taus, eta=1.0, seed=1, resample=5, jump_length=5).numpy())
    se_w = np.sqrt(upper_w * (1 - upper_w) / n)
    for frac, m_up, m_lo, s_up, s_lo, n_up in (resampled,):
        se_up, se_lo = s_up / np.sqrt(n_up), s_lo / np.sqrt(n - n_up)
        assert abs(frac - upper_w) < 4 * se_w, (frac, upper_w)
        assert abs(m_lo - lower_mu) < 4 * se_lo, (m_lo, lower_mu)
        # the upper mode's mean is also biased by the 100-step discretisation (its sd is 0.34, not 0.39): 6 s.e.
        assert abs(m_up - upper_mu) < 6 * se_up, (m_up, upper_mu)
    # plain replacement (no resampling) is measurably off in the mode means, and resampling brings both closer
    assert abs(plain[1] - upper_mu) > abs(resampled[1] - upper_mu) + 4 * plain[3] / np.sqrt(plain[5])
    assert abs(plain[2] - lower_mu) > abs(resampled[2] - lower_mu) + 4 * plain[4] / np.sqrt(n - plain[5])
    assert abs(plain[0] - upper_w) > abs(resampled[0] - upper_w)


def test_inpainting_keeps_known_pixels_exactly_and_explicit_noise_is_the_seed_stream(mix, eps_fn, sched):
    x0 = _data(mix, 16).numpy()
    mask = (np.arange(32).reshape(16, 2) % 3 == 0).astype(np.float64)
    x_T = np.random.default_rng(1).standard_normal([16, 2])
    taus = schedules.spaced_timesteps(1000, 8)
    for method in ("ddim", "dpmpp_2m", "unipc"):
        sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method=method))
        out = sampler.inpaint(x_T, x0, mask, taus, seed=5).numpy()
        np.testing.assert_array_equal(out[mask == 1], x0[mask == 1])
        assert np.all(np.isfinite(out))
        noise = np.stack([steps.stateless_step_normal(tf.constant(5, tf.int64), i, tf.constant(x_T)).numpy() for i in range(8)])
        np.testing.assert_allclose(sampler.inpaint(x_T, x0, mask, taus, noise=noise).numpy(), out, rtol=0, atol=1e-12)
    # an all-zero mask is plain sampling from x_T (η = 0: the noise only ever touches known pixels)
    sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method="ddim"))
    np.testing.assert_allclose(sampler.inpaint(x_T, x0, np.zeros_like(mask), taus, seed=5).numpy(),
                               sampler.sample(x_T, taus).numpy(), rtol=0, atol=1e-12)


def test_inpainting_refuses_bad_inputs_by_name(mix, eps_fn, sched):
    sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method="ddim"))
    x0 = _data(mix, 4).numpy()
    taus = schedules.spaced_timesteps(1000, 5)
    x_T = np.zeros([4, 2])
    with pytest.raises(ValueError, match="mask must have the shape"):
        sampler.inpaint(x_T, x0, np.ones([4, 1]), taus, seed=0)
    with pytest.raises(ValueError, match="mask must hold only 0"):
        sampler.inpaint(x_T, x0, np.full([4, 2], 0.5), taus, seed=0)
    with pytest.raises(ValueError, match="x0 must have the shape"):
        sampler.inpaint(x_T, x0[:2], np.ones([4, 2]), taus, seed=0)
    with pytest.raises(ValueError, match="resample"):
        sampler.inpaint(x_T, x0, np.ones([4, 2]), taus, seed=0, resample=0)
    with pytest.raises(ValueError, match="one-step solver"):
        sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method="dpmpp_2m")).inpaint(
            x_T, x0, np.ones([4, 2]), taus, seed=0, resample=2)
