"""The sampler against the analytic oracle, an independent numpy loop, and bad input.

Moment tolerances are z = 4 standard errors of the estimate at the sample size
used (weights: sqrt(w(1-w)/N); means: sqrt(Sigma_ii/n_k); covariances:
sqrt((Sigma_ii Sigma_jj + Sigma_ij^2)/n_k)), and the same check is first shown to
pass on exact samples of the same size.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfddim import sampling
from tfddim.data import mixture
from tfddim.diffusion import schedules

Z = 4.0
N = 20000


# ------------------------------------------------------------------ helpers
def moments_ok(x, mix):
    """Weights, means and covariances of the components of x within Z standard errors."""
    labels = mix.assign(x)
    n = len(x)
    w = np.bincount(labels, minlength=mix.num_components) / n
    problems = []
    se_w = np.sqrt(mix.weights * (1 - mix.weights) / n)
    if np.any(np.abs(w - mix.weights) > Z * se_w):
        problems.append(f"weights {w} vs {mix.weights}")
    for k in range(mix.num_components):
        xk = x[labels == k]
        nk = len(xk)
        sig = mix.covs[k]
        d = np.sqrt(np.diag(sig))
        if np.any(np.abs(xk.mean(0) - mix.means[k]) > Z * d / np.sqrt(nk)):
            problems.append(f"mean {k}: {xk.mean(0)} vs {mix.means[k]}")
        se_cov = np.sqrt((np.outer(np.diag(sig), np.diag(sig)) + sig**2) / nk)
        if np.any(np.abs(np.cov(xk.T) - sig) > Z * se_cov):
            problems.append(f"cov {k}: {np.cov(xk.T).round(4).tolist()} vs {sig.tolist()}")
    return problems


@pytest.fixture(scope="module")
def x_T():
    return np.random.default_rng(123).standard_normal((N, 2))


@pytest.fixture(scope="module")
def exact(mix):
    return mix.sample(N, np.random.default_rng(7))[0]


def taus(S, spacing="uniform"):
    return schedules.spaced_timesteps(1000, S, spacing)


# ------------------------------------------------------ numpy reference loop
def np_eps(mix, ab, x):
    """The mixture's optimal epsilon in plain numpy (explicit inverses; independent of tfddim.mixture)."""
    logs, grads = [], []
    for k in range(mix.num_components):
        cov = ab * mix.covs[k] + (1 - ab) * np.eye(2)
        inv = np.linalg.inv(cov)
        diff = x - np.sqrt(ab) * mix.means[k]
        logs.append(np.log(mix.weights[k]) - 0.5 * (np.einsum("bi,ij,bj->b", diff, inv, diff) + np.linalg.slogdet(cov)[1]))
        grads.append(diff @ inv.T)
    logs = np.stack(logs, 1)
    r = np.exp(logs - logs.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return np.sqrt(1 - ab) * np.einsum("bk,bkd->bd", r, np.stack(grads, 1))


def np_sample(mix, sched, x, ts, method, eta=0.0, noise=None, variance="fixed_small", final_ab=1.0):
    """DDIM eq. 12 / DDPM's posterior step, written out with scalars."""
    ac = sched.alphas_cumprod
    for i, t in enumerate(ts):
        a = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else final_ab
        eps = np_eps(mix, a, x)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        z = noise[i] if (noise is not None and i + 1 < len(ts)) else 0.0
        if method == "ddim":
            sigma = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
            x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
        else:
            beta = 1 - a / a_prev
            mean = np.sqrt(a_prev) * beta / (1 - a) * x0 + np.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * x
            var = beta if variance == "fixed_large" else (1 - a_prev) / (1 - a) * beta
            x = mean + np.sqrt(var) * z
    return x


def np_encode(mix, sched, x, ts):
    """DDIM inversion: up from the clean level (model queried at t = 0) through ts reversed, eps at the current level."""
    ac = sched.alphas_cumprod
    levels = [(1.0, ac[0])] + [(ac[t], ac[t]) for t in ts[::-1]]  # (abar of the level, abar the model sees)
    for (a, a_model), (a_next, _) in zip(levels[:-1], levels[1:]):
        eps = np_eps(mix, a_model, x)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        x = np.sqrt(a_next) * x0 + np.sqrt(1 - a_next) * eps
    return x


# ------------------------------------------------------------ the oracle contract
def test_tolerances_accept_exact_samples(mix, exact):
    assert moments_ok(exact, mix) == []


def test_a_encode_decode_error_falls_with_steps(mix, eps_fn, sched, exact):
    x0 = exact[:2000]
    errors = []
    for S in (10, 20, 50, 100):
        xT = sampling.encode(eps_fn, x0, sched, taus(S))
        back = sampling.decode(eps_fn, xT, sched, taus(S)).numpy()
        errors.append(np.mean(np.linalg.norm(back - x0, axis=1)))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # DDIM is Euler's method on the probability-flow ODE (seed 001): first order, error ~ 1/S,
    # so the log-log slope from S = 10 to 100 is about 1 (0.8 leaves room for the constant).
    slope = np.log(errors[0] / errors[-1]) / np.log(10)
    assert slope > 0.8, (slope, errors)


def test_b_ddim_100_steps_reproduces_the_mixture(mix, eps_fn, sched, x_T, exact):
    """At N = 5000 the check resolves component means to ~0.05 and variances to ~11%.

    DDIM's own error at S = 100 is below that but not zero: measured at N = 20000 on this
    mixture, component 2's mean moves by ~0.02 and its x-variance shrinks by ~4% against
    S = 1000 (first-order discretization; test (a) measures its rate).
    """
    n = 5000
    assert moments_ok(exact[:n], mix) == []
    x = sampling.sample(eps_fn, x_T[:n], sched, taus(100), method="ddim", eta=0.0).numpy()
    assert moments_ok(x, mix) == []


def test_c_one_x_T_lands_on_the_same_sample_for_any_S(mix, eps_fn, sched, x_T):
    xs = {S: sampling.decode(eps_fn, x_T[:4000], sched, taus(S)).numpy() for S in (20, 50, 100)}
    same = np.mean(mix.assign(xs[20]) == mix.assign(xs[100]))
    assert same > 0.98
    d20 = np.linalg.norm(xs[20] - xs[100], axis=1).mean()
    d50 = np.linalg.norm(xs[50] - xs[100], axis=1).mean()
    spread = np.linalg.norm(xs[100] - xs[100][::-1], axis=1).mean()  # two unrelated samples
    assert d50 < d20 < 0.1 * spread, (d20, d50, spread)


@pytest.mark.parametrize(
    "kwargs, S",
    [
        ({"method": "ddim", "eta": 1.0}, 1000),
        ({"method": "ddpm", "variance": "fixed_small"}, 1000),
        ({"method": "ddpm", "variance": "fixed_large"}, 1000),
    ],
    ids=["ddim-eta1-S1000", "ddpm-small-S1000", "ddpm-large-S1000"],
)
def test_d_stochastic_samplers_reproduce_the_mixture(mix, eps_fn, sched, x_T, kwargs, S):
    x = sampling.sample(eps_fn, x_T, sched, taus(S), seed=11, **kwargs).numpy()
    assert moments_ok(x, mix) == []


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("ddim", {"eta": 0.0}),
        ("ddim", {"eta": 0.3}),
        ("ddim", {"eta": 1.0, "final_alpha_cumprod": "alpha_0"}),
        ("ddpm", {"variance": "fixed_small"}),
        ("ddpm", {"variance": "fixed_large"}),
    ],
)
def test_e_float64_matches_plain_numpy_loop(mix, eps_fn, sched, method, kwargs):
    rng = np.random.default_rng(5)
    ts = taus(20, "trailing")
    x = rng.standard_normal((64, 2))
    noise = rng.standard_normal((20, 64, 2))
    final = kwargs.get("final_alpha_cumprod", "one")
    expected = np_sample(
        mix, sched, x, ts, method, eta=kwargs.get("eta", 0.0), noise=noise,
        variance=kwargs.get("variance", "fixed_small"), final_ab=1.0 if final == "one" else sched.alphas_cumprod[0],
    )
    got = sampling.sample(eps_fn, x, sched, ts, method=method, noise=noise, **kwargs)
    assert got.dtype == tf.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-9)


def test_e_float64_encode_matches_numpy(mix, eps_fn, sched, exact):
    ts = taus(25)
    got = sampling.encode(eps_fn, exact[:64], sched, ts).numpy()
    np.testing.assert_allclose(got, np_encode(mix, sched, exact[:64], ts), rtol=0, atol=1e-9)


# ----------------------------------------------------------- sampler semantics
def test_noise_i_is_used_by_the_step_from_timesteps_i(eps_fn, sched):
    ts = np.array([900, 600, 300, 0])
    x = np.random.default_rng(0).standard_normal((8, 2))
    base = np.zeros((4, 8, 2))
    ref = sampling.sample(eps_fn, x, sched, ts, method="ddpm", noise=base).numpy()
    # the last slice is never used: the final step adds no noise
    last = base.copy()
    last[3] = 5.0
    np.testing.assert_array_equal(sampling.sample(eps_fn, x, sched, ts, method="ddpm", noise=last).numpy(), ref)
    # noise[1] is scaled by sigma of the step 600 -> 300 and moves only what comes after it
    one = base.copy()
    one[1] = 1.0
    ab_t, ab_prev = sched.alphas_cumprod[600], sched.alphas_cumprod[300]
    sigma = np.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
    _, traj = sampling.sample(eps_fn, x, sched, ts, method="ddpm", noise=one, return_trajectory=True)
    _, traj0 = sampling.sample(eps_fn, x, sched, ts, method="ddpm", noise=base, return_trajectory=True)
    np.testing.assert_allclose(traj.x[0], traj0.x[0], atol=1e-12)  # step 0 untouched
    np.testing.assert_allclose(traj.x[1] - traj0.x[1], sigma, rtol=1e-10)  # step 1 moved by sigma * 1


def test_eta_one_is_ddpm_fixed_small_and_sigma_hat_is_fixed_large(eps_fn, sched):
    x = np.random.default_rng(1).standard_normal((32, 2))
    ts = taus(50)
    a = sampling.sample(eps_fn, x, sched, ts, method="ddim", eta=1.0, seed=4).numpy()
    b = sampling.sample(eps_fn, x, sched, ts, method="ddpm", variance="fixed_small", seed=4).numpy()
    np.testing.assert_allclose(a, b, atol=1e-10)
    c = sampling.sample(eps_fn, x, sched, ts, method="ddim", eta="sigma_hat", seed=4).numpy()
    d = sampling.sample(eps_fn, x, sched, ts, method="ddpm", variance="fixed_large", seed=4).numpy()
    np.testing.assert_array_equal(c, d)
    assert not np.allclose(a, c)


def test_seeded_noise_is_per_sample(eps_fn, sched):
    # float64, so that the model's batch-dependent float32 rounding (~1e-7) does not hide the noise
    x = np.random.default_rng(2).standard_normal((64, 2))
    ts = taus(20)
    full = sampling.sample(eps_fn, x, sched, ts, eta=0.7, seed=9).numpy()
    part = sampling.sample(eps_fn, x[:5], sched, ts, eta=0.7, seed=9).numpy()
    np.testing.assert_allclose(part, full[:5], rtol=0, atol=1e-12)
    again = sampling.sample(eps_fn, x, sched, ts, eta=0.7, seed=9).numpy()
    np.testing.assert_array_equal(again, full)
    other = sampling.sample(eps_fn, x, sched, ts, eta=0.7, seed=10).numpy()
    assert np.abs(other - full).max() > 1e-3
    det = sampling.sample(eps_fn, x, sched, ts, eta=0.0, seed=9).numpy()
    np.testing.assert_array_equal(det, sampling.sample(eps_fn, x, sched, ts, eta=0.0, seed=10).numpy())


def test_changing_batch_steps_eta_seed_does_not_retrace(mix, sched):
    traces = []
    oracle = mix.eps_fn(sched)

    def model_fn(x, t):  # runs in Python only while tracing
        traces.append(1)
        return oracle(x, t)

    rng = np.random.default_rng(3)
    cache = sampling.SamplerCache()  # compiled loops live in an object the caller holds, nowhere else
    for B, S, eta, seed in [(4, 10, 0.0, 1), (9, 25, 0.5, 2), (1, 3, 1.0, 3), (17, 100, 0.2, 4)]:
        sampling.sample(model_fn, rng.standard_normal((B, 2)).astype(np.float32), sched, taus(S), eta=eta, seed=seed,
                        cache=cache)
    assert len(traces) == 1 and len(cache) == 1
    sampling.sample(model_fn, np.zeros((2, 2), np.float32), sched, taus(5), seed=0)
    assert len(traces) == 2  # without a cache nothing is kept between calls: no hidden state
    sampler = sampling.Sampler(oracle, sched, sampling.SamplerConfig(method="ddpm"))
    for B, S in [(3, 10), (8, 50)]:
        sampler.sample(np.zeros((B, 2), np.float32), taus(S), seed=B)
    assert sampler.tracing_count() == 1


def test_trajectory_holds_each_step(eps_fn, sched):
    x = np.random.default_rng(4).standard_normal((6, 2))
    ts = taus(10)
    out, traj = sampling.sample(eps_fn, x, sched, ts, return_trajectory=True)
    assert traj.x.shape == (10, 6, 2) and traj.x0_hat.shape == (10, 6, 2)
    np.testing.assert_array_equal(traj.x[-1], out)
    np.testing.assert_allclose(traj.x0_hat[-1], out, atol=1e-12)  # the last step lands on its x0 prediction
    ab = sched.alphas_cumprod[ts[0]]
    eps0 = eps_fn(tf.constant(x), tf.fill([6], int(ts[0])))
    np.testing.assert_allclose(traj.x0_hat[0], (x - np.sqrt(1 - ab) * eps0) / np.sqrt(ab), rtol=1e-10)


def test_prediction_types_agree(eps_fn, sched):
    from tfddim.diffusion import steps

    ac = tf.constant(sched.alphas_cumprod)

    def x0_fn(x, t):
        ab = tf.gather(ac, t)[:, None]
        return steps.x0_from_eps(x, eps_fn(x, t), ab)

    def v_fn(x, t):
        ab = tf.gather(ac, t)[:, None]
        eps = eps_fn(x, t)
        return steps.v_from_x0_eps(steps.x0_from_eps(x, eps, ab), eps, ab)

    x = np.random.default_rng(6).standard_normal((32, 2))
    ts = taus(20)
    ref = sampling.sample(eps_fn, x, sched, ts, eta=0.5, seed=1).numpy()
    for fn, kind in ((x0_fn, "sample"), (v_fn, "v_prediction")):
        got = sampling.sample(fn, x, sched, ts, eta=0.5, seed=1, prediction_type=kind).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-9)


def test_learned_range_interpolates_between_the_fixed_variances(eps_fn, sched):
    def with_v(value):
        return lambda x, t: tf.concat([eps_fn(x, t), tf.fill(tf.shape(x), tf.cast(value, x.dtype))], -1)

    x = np.random.default_rng(7).standard_normal((16, 2))
    ts = taus(20)
    opts = dict(method="ddpm", seed=3, learned_variance=True, variance="learned_range")
    for v, fixed in ((0.0, "fixed_small"), (1.0, "fixed_large")):
        got = sampling.sample(with_v(v), x, sched, ts, **opts).numpy()
        ref = sampling.sample(eps_fn, x, sched, ts, method="ddpm", variance=fixed, seed=3).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-10)
    # DDIM ignores the variance channels
    ddim = sampling.sample(with_v(0.3), x, sched, ts, learned_variance=True).numpy()
    np.testing.assert_allclose(ddim, sampling.sample(eps_fn, x, sched, ts).numpy(), atol=1e-12)


def test_clipping_and_thresholding_bound_the_output(eps_fn, sched):
    x = np.random.default_rng(8).standard_normal((256, 2)).astype(np.float32)
    ts = taus(20)
    free = sampling.sample(eps_fn, x, sched, ts).numpy()
    assert np.abs(free).max() > 2  # the mixture lives well outside [-1, 1]
    clipped = sampling.sample(eps_fn, x, sched, ts, clip_x0=(-1, 1)).numpy()
    assert np.abs(clipped).max() <= 1.0 + 1e-6
    thresh = sampling.sample(eps_fn, x, sched, ts, dynamic_threshold=0.9, threshold_max=3.0).numpy()
    assert np.abs(thresh).max() <= 1.0 + 1e-6


def test_zero_terminal_snr_samples_with_v_prediction(mix):
    zs = schedules.get("linear", 1000, zero_terminal_snr=True)
    eps_fn = mix.eps_fn(zs)
    ac = tf.constant(zs.alphas_cumprod)

    def v_fn(x, t):
        # v = sqrt(ab) eps - sqrt(1-ab) x0 with x0 = (x - sqrt(1-ab) eps)/sqrt(ab) is (eps - sqrt(1-ab) x)/sqrt(ab);
        # at abar = 0, x0 = E[x0 | x_T] is the data mean, so v = -mean there.
        ab = tf.gather(ac, t)[:, None]
        eps = eps_fn(x, t)
        v = (eps - tf.sqrt(1 - ab) * x) / tf.sqrt(tf.maximum(ab, 1e-30))
        return tf.where(ab > 0, v, -tf.constant(mix.weights @ mix.means, x.dtype))

    ts = schedules.spaced_timesteps(1000, 50, "trailing")
    assert zs.alphas_cumprod[ts[0]] == 0.0
    x = np.random.default_rng(9).standard_normal((N // 4, 2))
    out = sampling.sample(v_fn, x, zs, ts, prediction_type="v_prediction").numpy()
    assert np.all(np.isfinite(out))
    w = np.bincount(mix.assign(out), minlength=3) / len(out)
    assert np.all(np.abs(w - mix.weights) < Z * np.sqrt(mix.weights * (1 - mix.weights) / len(out)))
    with pytest.raises(ValueError, match="alphas_cumprod = 0"):
        sampling.sample(eps_fn, x, zs, ts)


# ------------------------------------------------------------------ guidance
def test_classifier_guidance_with_the_exact_classifier_samples_the_class(mix, eps_fn, sched, x_T):
    """eps - sqrt(1-abar) grad log p(y|x_t) is the exact conditional epsilon: scale 1 samples component y."""
    guide = sampling.ClassifierGuidance(mix.classifier_log_prob_fn(sched))
    x = x_T[:4000]
    labels = np.full(len(x), 1, np.int32)
    out = sampling.sample(eps_fn, x, sched, taus(100), labels=labels, guidance=guide, guidance_scale=1.0).numpy()
    assert np.mean(mix.assign(out) == 1) > 0.999
    component = mixture.GaussianMixture(np.array([1.0]), mix.means[1:2], mix.covs[1:2])
    assert moments_ok(out, component) == []
    ddpm = sampling.sample(eps_fn, x, sched, taus(1000), method="ddpm", labels=labels, guidance=guide, seed=1).numpy()
    assert np.mean(mix.assign(ddpm) == 1) > 0.999
    unguided = sampling.sample(eps_fn, x, sched, taus(100), labels=labels, guidance=guide, guidance_scale=0.0).numpy()
    assert np.mean(mix.assign(unguided) == 1) < 0.5


def test_classifier_free_guidance_batches_both_branches(mix, eps_fn, sched, x_T):
    cond = mix.conditional_eps_fn(sched)
    x = x_T[:3000]
    calls = []

    def model_fn(x_in, t, y):  # one forward pass on [x; x] with [y; null]
        calls.append(1)
        with tf.control_dependencies([tf.debugging.assert_equal(tf.shape(x_in)[0], 2 * len(x))]):
            return cond(tf.identity(x_in), t, y)

    cfg = sampling.ClassifierFreeGuidance(null_label=mix.num_components)
    labels = np.full(len(x), 2, np.int32)
    out = sampling.sample(model_fn, x, sched, taus(50), labels=labels, guidance=cfg, guidance_scale=1.0).numpy()
    assert len(calls) == 1  # traced once, a single batched call per step
    assert np.mean(mix.assign(out) == 2) > 0.999
    w0 = sampling.sample(model_fn, x, sched, taus(50), labels=labels, guidance=cfg, guidance_scale=0.0).numpy()
    np.testing.assert_allclose(w0, sampling.sample(eps_fn, x, sched, taus(50)).numpy(), atol=1e-9)


# ------------------------------------------------------------ interpolation
def test_slerp_and_interpolate(eps_fn, sched):
    rng = np.random.default_rng(10)
    a, b = rng.standard_normal(2), rng.standard_normal(2)
    path = sampling.slerp(a, b, [0.0, 0.5, 1.0]).numpy()
    np.testing.assert_allclose(path[0], a, atol=1e-12)
    np.testing.assert_allclose(path[-1], b, atol=1e-12)
    theta = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    np.testing.assert_allclose(path[1], np.sin(theta / 2) / np.sin(theta) * (a + b), atol=1e-12)
    np.testing.assert_allclose(sampling.slerp(a, a, [0.25]).numpy()[0], a, atol=1e-12)  # theta = 0 falls back to lerp
    x0, latents = sampling.interpolate(eps_fn, a, b, sched, taus(20), num=5)
    assert x0.shape == (5, 2) and latents.shape == (5, 2)
    np.testing.assert_allclose(x0[0], sampling.decode(eps_fn, a[None], sched, taus(20))[0], atol=1e-12)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"timesteps": [5, 7, 2]}, "strictly descending"),
        ({"timesteps": [1000, 5]}, r"\[0, 999\]"),
        ({"timesteps": []}, "non-empty"),
        ({"eta": -0.1}, "eta"),
        ({"eta": 1.5}, "eta"),
        ({"eta": "sigma"}, "eta"),
        ({"x_T": np.array([[np.nan, 0.0]])}, "x_T contains NaN"),
        ({"x_T": np.array([[np.inf, 0.0]])}, "x_T contains NaN"),
        ({"x_T": np.zeros(3)}, "x_T must have a batch axis"),
        ({"noise": np.zeros((3, 4, 2))}, "noise must have shape"),
        ({"noise": np.zeros((10, 4, 2)), "seed": 1}, "noise or seed"),
        ({"method": "euler"}, "unknown method"),
        ({"method": "ddpm", "variance": "small"}, "unknown variance"),
        ({"method": "ddpm", "variance": "learned_range"}, "learned_variance"),
        ({"method": "ddpm", "eta": 0.5}, "eta applies only"),
        ({"prediction_type": "x0"}, "unknown prediction_type"),
        ({"clip_x0": (1, -1)}, "clip_x0"),
        ({"dynamic_threshold": 1.5}, "dynamic_threshold"),
        ({"final_alpha_cumprod": "zero"}, "final_alpha_cumprod"),
        ({"guidance": sampling.ClassifierFreeGuidance(3)}, "labels are required"),
        ({"labels": np.zeros(3, np.int32), "class_conditional": True}, "labels has 3 entries"),
        ({"labels": np.zeros(4, np.int32)}, "not class_conditional"),
        ({"class_conditional": True}, "labels are required"),
    ],
)
def test_bad_input_raises_a_clear_error(eps_fn, sched, kwargs, match):
    args = {"x_T": np.zeros((4, 2)), "timesteps": taus(10)}
    args.update(kwargs)
    x, ts = args.pop("x_T"), args.pop("timesteps")
    with pytest.raises(ValueError, match=match):
        sampling.sample(eps_fn, x, sched, ts, **args)


def test_spacing_errors_surface_through_spaced_timesteps():
    with pytest.raises(ValueError, match="num_steps"):
        schedules.spaced_timesteps(1000, 1001)
    with pytest.raises(ValueError, match="num_steps"):
        schedules.spaced_timesteps(1000, 0)
    with pytest.raises(ValueError, match="unknown spacing"):
        schedules.spaced_timesteps(1000, 10, "sideways")
    with pytest.raises(ValueError, match="num_timesteps"):
        schedules.get("linear", num_timesteps=1)


def test_graph_mode_checks_name_the_input(eps_fn, sched):
    """Inside a traced graph (as in an export) the same mistakes fail with an InvalidArgumentError."""
    sampler = sampling.Sampler(eps_fn, sched)

    @tf.function
    def run(x, ts, eta):
        return sampler.sample(x, ts, eta=eta, seed=0)

    good = tf.zeros([2, 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match="strictly descending"):
        run(good, tf.constant([5, 7, 2]), tf.constant(0.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="T-1"):
        run(good, tf.constant([1000, 7]), tf.constant(0.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="eta must be >= 0"):
        run(good, tf.constant([9, 7]), tf.constant(-1.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="x_T contains NaN"):
        run(tf.constant([[np.nan, 0.0]], tf.float32), tf.constant([9, 7]), tf.constant(0.0))


def test_model_output_shape_is_checked(sched):
    with pytest.raises(tf.errors.InvalidArgumentError, match="model_fn output has the wrong shape"):
        sampling.sample(lambda x, t: tf.zeros([tf.shape(x)[0], 3]), np.zeros((2, 2)), sched, taus(5))


@pytest.mark.parametrize("kwargs", [{"eta": 0.0}, {"eta": 0.5, "seed": 3}, {"method": "ddpm", "seed": 4},
                                    {"method": "dpmpp_2m"}])
def test_jit_compile_changes_nothing_but_speed(eps_fn, sched, kwargs):
    """XLA compiles only the network call: same loop, same noise; float64 makes the bound rounding-sized."""
    x = np.random.default_rng(5).standard_normal((64, 2))
    ts = taus(20)
    plain = sampling.sample(eps_fn, x, sched, ts, **kwargs).numpy()
    jit = sampling.sample(eps_fn, x, sched, ts, jit_compile=True, **kwargs).numpy()
    np.testing.assert_allclose(jit, plain, rtol=0, atol=1e-9)
