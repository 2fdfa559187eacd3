"""UniPC, DPM-Solver++(3M) and DPM-Solver++(2M) SDE against their defining equations and the analytic oracles.

- each against the algorithm written out independently in plain numpy float64 (a loop over the steps with λ,
  h and the r's as in the papers and the reference code: diffusers' schedulers and the authors' code, with
  ``np.linalg.solve`` for UniPC's ρ), on the mixture with its exact ε, to rounding;
- on Gaussian data the probability-flow ODE is solved in closed form (see tests/test_dpm_solver.py), so the
  global error of the deterministic solvers can be measured and their order read off;
- zero terminal SNR (λ_T = −∞) with a v-prediction network stays finite and samples the mixture;
- the degenerate cases with no room for a higher order are DDIM.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfddim import sampling
from tfddim.data import mixture
from tfddim.diffusion import schedules
from tfddim.sampling import solvers

from test_sampling import np_eps  # the mixture's exact ε in plain numpy

SPACINGS = [("uniform", "one"), ("trailing", "one"), ("linspace", "one"),
            ("uniform", "alpha_0"), ("trailing", "alpha_0"), ("linspace", "alpha_0")]


def lam(a):
    """λ = log(α/σ) = ½·log(ᾱ/(1−ᾱ)); +∞ at the clean level ᾱ = 1."""
    return np.inf if a == 1.0 else 0.5 * np.log(a / (1 - a))


def levels(sched, ts, final_ab):
    return [sched.alphas_cumprod[t] for t in ts] + [final_ab]


def x0_hat(mix, a, x):
    return (x - np.sqrt(1 - a) * np_eps(mix, a, x)) / np.sqrt(a)


# ------------------------------------------------------------------ numpy references
def np_unipc_coefficients(rks, h, p):
    """R and b of ``multistep_uni_pc_bh_update`` (B(h) = e^{hh} − 1, hh = −h for data prediction)."""
    hh = -h
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    B_h = np.expm1(hh)
    factorial_i = 1
    R, b = [], []
    for i in range(1, p + 1):
        R.append(np.power(rks, i - 1))
        b.append(h_phi_k * factorial_i / B_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    return np.stack(R), np.array(b), h_phi_1, B_h


def np_unipc(mix, sched, x, ts, final_ab=1.0, order=3):
    """UniPC-p, B(h) = e^h − 1, data prediction, written as diffusers' UniPCMultistepScheduler.step.

    The order of step i is diffusers' with lower_order_final: min(p, i + 1, S − i).
    """
    lv = levels(sched, ts, final_ab)
    S = len(ts)
    outputs, lams = [], []  # x̂₀ and λ of the steps so far
    last_sample, this_order = None, None
    for i in range(S):
        a, a_next = lv[i], lv[i + 1]
        m = x0_hat(mix, a, x)
        if i > 0:  # UniC-p (p = the last step's order) with the output at the predicted x: multistep_uni_c_bh_update
            m0 = outputs[-1]
            h = lam(a) - lams[-1]
            rks, D1s = [], []
            for k in range(1, this_order):
                rk = (lams[-(k + 1)] - lams[-1]) / h
                rks.append(rk)
                D1s.append((outputs[-(k + 1)] - m0) / rk)
            rks.append(1.0)
            R, b, h_phi_1, B_h = np_unipc_coefficients(np.array(rks), h, this_order)
            rhos_c = np.array([0.5]) if this_order == 1 else np.linalg.solve(R, b)
            corr_res = sum(r * d for r, d in zip(rhos_c[:-1], D1s)) if D1s else 0.0
            a_last = lv[i - 1]
            x_t_ = np.sqrt(1 - a) / np.sqrt(1 - a_last) * last_sample - np.sqrt(a) * h_phi_1 * m0
            x = x_t_ - np.sqrt(a) * B_h * (corr_res + rhos_c[-1] * (m - m0))
        outputs.append(m)
        lams.append(lam(a))
        this_order = min(order, i + 1, S - i)  # diffusers' lower_order_final
        last_sample = x
        # UniP-p: multistep_uni_p_bh_update
        h = lam(a_next) - lam(a)
        rks, D1s = [], []
        for k in range(1, this_order):
            rk = (lams[-(k + 1)] - lams[-1]) / h
            rks.append(rk)
            D1s.append((outputs[-(k + 1)] - m) / rk)
        rks.append(1.0)
        h_phi_1 = B_h = np.expm1(-h)
        pred_res = 0.0
        if D1s:
            R, b, h_phi_1, B_h = np_unipc_coefficients(np.array(rks), h, this_order)
            rhos_p = np.array([0.5]) if this_order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
            pred_res = sum(r * d for r, d in zip(rhos_p, D1s))
        x = np.sqrt(1 - a_next) / np.sqrt(1 - a) * x - np.sqrt(a_next) * h_phi_1 * m - np.sqrt(a_next) * B_h * pred_res
    return x


def np_dpmpp_3m(mix, sched, x, ts, final_ab=1.0):
    """DPM-Solver++(3M) as diffusers' first/second/third-order multistep updates (dpmsolver++), orders 1, 2, 3, …, 1."""
    lv = levels(sched, ts, final_ab)
    S = len(ts)
    outputs = []
    for i in range(S):
        a, a_next = lv[i], lv[i + 1]
        outputs.append(x0_hat(mix, a, x))
        order = 1 if i == 0 or i == S - 1 else min(3, i + 1)
        if S < 15 and i == S - 2:  # diffusers' lower_order_final
            order = min(order, 2)
        h = lam(a_next) - lam(a)
        sigma_t, sigma_s0, alpha_t = np.sqrt(1 - a_next), np.sqrt(1 - a), np.sqrt(a_next)
        m0 = outputs[-1]
        if order == 1:
            x = (sigma_t / sigma_s0) * x - (alpha_t * (np.exp(-h) - 1.0)) * m0
        elif order == 2:
            m1 = outputs[-2]
            h_0 = lam(a) - lam(lv[i - 1])
            r0 = h_0 / h
            D0, D1 = m0, (1.0 / r0) * (m0 - m1)
            x = ((sigma_t / sigma_s0) * x - (alpha_t * (np.exp(-h) - 1.0)) * D0
                 - 0.5 * (alpha_t * (np.exp(-h) - 1.0)) * D1)
        else:
            m1, m2 = outputs[-2], outputs[-3]
            h_0, h_1 = lam(a) - lam(lv[i - 1]), lam(lv[i - 1]) - lam(lv[i - 2])
            r0, r1 = h_0 / h, h_1 / h
            D0 = m0
            D1_0, D1_1 = (1.0 / r0) * (m0 - m1), (1.0 / r1) * (m1 - m2)
            D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
            D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
            x = ((sigma_t / sigma_s0) * x - (alpha_t * (np.exp(-h) - 1.0)) * D0
                 + (alpha_t * ((np.exp(-h) - 1.0) / h + 1.0)) * D1
                 - (alpha_t * ((np.exp(-h) - 1.0 + h) / h**2 - 0.5)) * D2)
    return x


def np_dpmpp_2m_sde(mix, sched, x, ts, noise, final_ab=1.0):
    """diffusers' sde-dpmsolver++ updates (midpoint), first order on the first and final step, noise[i] at step i."""
    lv = levels(sched, ts, final_ab)
    S = len(ts)
    m1 = None
    for i in range(S):
        a, a_next = lv[i], lv[i + 1]
        m0 = x0_hat(mix, a, x)
        z = noise[i] if i < S - 1 else 0.0
        sigma_t, sigma_s0, alpha_t = np.sqrt(1 - a_next), np.sqrt(1 - a), np.sqrt(a_next)
        h = lam(a_next) - lam(a)
        if i == 0 or i == S - 1:
            x = ((sigma_t / sigma_s0 * np.exp(-h)) * x + (alpha_t * (1 - np.exp(-2.0 * h))) * m0
                 + sigma_t * np.sqrt(1.0 - np.exp(-2.0 * h)) * z)
        else:
            r0 = (lam(a) - lam(lv[i - 1])) / h
            D0, D1 = m0, (1.0 / r0) * (m0 - m1)
            x = ((sigma_t / sigma_s0 * np.exp(-h)) * x + (alpha_t * (1 - np.exp(-2.0 * h))) * D0
                 + 0.5 * (alpha_t * (1 - np.exp(-2.0 * h))) * D1 + sigma_t * np.sqrt(1.0 - np.exp(-2.0 * h)) * z)
        m1 = m0
    return x


# ------------------------------------------------------------------ against the numpy algorithms
@pytest.fixture(scope="module")
def cache():
    """One compiled sampler per (method, final level) for the module: every spacing runs through one trace."""
    return sampling.SamplerCache()


def _final_ab(sched, final):
    return 1.0 if final == "one" else sched.alphas_cumprod[0]


@pytest.mark.parametrize("method, np_method", [("unipc", np_unipc), ("dpmpp_3m", np_dpmpp_3m)])
def test_matches_the_algorithm_written_out_in_numpy(mix, eps_fn, sched, cache, method, np_method):
    x = np.random.default_rng(0).standard_normal((16, 2))
    for spacing, final in SPACINGS:
        ts = schedules.spaced_timesteps(1000, 10, spacing)
        got = sampling.sample(eps_fn, x, sched, ts, method=method, final_alpha_cumprod=final, cache=cache).numpy()
        np.testing.assert_allclose(got, np_method(mix, sched, x, ts, _final_ab(sched, final)), rtol=0, atol=1e-9,
                                   err_msg=f"{spacing}, {final}")


def test_sde_matches_the_algorithm_in_numpy_given_the_same_noise(mix, eps_fn, sched, cache):
    rng = np.random.default_rng(1)
    x, noise = rng.standard_normal((16, 2)), rng.standard_normal((10, 16, 2))
    for spacing, final in SPACINGS:
        ts = schedules.spaced_timesteps(1000, 10, spacing)
        got = sampling.sample(eps_fn, x, sched, ts, method="dpmpp_2m_sde", noise=noise, final_alpha_cumprod=final,
                              cache=cache).numpy()
        np.testing.assert_allclose(got, np_dpmpp_2m_sde(mix, sched, x, ts, noise, _final_ab(sched, final)), rtol=0,
                                   atol=1e-9, err_msg=f"{spacing}, {final}")
    # the noise enters: other noise, another sample (and none on the final step: the last noise[i] is unused)
    other = noise.copy()
    other[-1] = rng.standard_normal((16, 2))

    def run(n):
        return sampling.sample(eps_fn, x, sched, ts, method="dpmpp_2m_sde", noise=n, cache=cache).numpy()

    np.testing.assert_array_equal(run(noise), run(other))
    assert np.abs(run(noise) - run(-noise)).max() > 1e-2


# ------------------------------------------------------------------ order on the exact Gaussian flow
def observed_orders(method, steps=(64, 128, 256)):
    """log2 of the error ratio between S and 2S on Gaussian data, against the exact ODE solution.

    tests/test_dpm_solver.py's protocol: linspace timesteps 999 … 0 and final_alpha_cumprod="alpha_0", so the
    last step (from t = 0 to ᾱ_0) has length 0 and the error is that of the S − 1 real steps.
    """
    sched = schedules.get("linear", num_timesteps=1000)
    mu, var = np.array([1.0, -2.0]), np.array([0.25, 1.0])
    gauss = mixture.GaussianMixture(np.array([1.0]), mu[None], np.diag(var)[None])
    ac = sched.alphas_cumprod
    x = np.random.default_rng(2).standard_normal((256, 2))
    sampler = sampling.Sampler(gauss.eps_fn(sched), sched, sampling.SamplerConfig(method=method,
                                                                                final_alpha_cumprod="alpha_0"))
    errors = []
    for S in steps:
        ts = schedules.spaced_timesteps(1000, S, "linspace")
        a_T, a_0 = ac[ts[0]], ac[0]
        z = (x - np.sqrt(a_T) * mu) / np.sqrt(a_T * var + 1 - a_T)
        exact = np.sqrt(a_0) * mu + np.sqrt(a_0 * var + 1 - a_0) * z
        errors.append(np.abs(sampler.sample(x, ts).numpy() - exact).max())
    return np.log2(np.array(errors[:-1]) / np.array(errors[1:])), errors


@pytest.fixture(scope="module")
def second_order_errors():
    return observed_orders("dpmpp_2m")[1]


@pytest.mark.parametrize("method", ["unipc", "dpmpp_3m"])
def test_third_order_on_the_exact_gaussian_flow(method, second_order_errors):
    """The issue's bound: an observed order > 2.5, i.e. 3 less the ±0.5 test_dpm_solver allows for pre-asymptotic terms.

    Measured (S = 64 → 128 → 256): DPM-Solver++(3M) 2.62, 2.99 (max error 5.8e-2, 9.5e-3, 1.2e-3); UniPC-3 2.78,
    3.08 (6.6e-2, 9.7e-3, 1.1e-3); DPM-Solver++(2M) reads 2.02, 2.04 there (3.2e-3 at S = 256). At S = 32 → 64
    the third-order solvers still read 1.99 and 2.08, hence S = 64, 128, 256: the last real step (t ≈ 999/S → 0) is
    long in λ and does not halve when S doubles (h = 1.89, 1.39, 0.97 at S = 64, 128, 256, where the median h is
    0.11, 0.05, 0.03), so the asymptotic regime starts later for a third-order error than for 2M's.
    (UniPC-p is of order p + 1, the paper's Theorem 3.1: UniPC-3 reads 3.26, 3.43 for S = 256 → 500 → 1000.)
    """
    orders, errors = observed_orders(method)
    assert np.all(orders > 2.5), (orders, errors)
    assert errors[-1] < second_order_errors[-1], (errors, second_order_errors)


# ------------------------------------------------------------------ zero terminal SNR, degenerate cases
@pytest.mark.parametrize("method", ["unipc", "dpmpp_3m", "dpmpp_2m_sde"])
def test_zero_terminal_snr_with_v_prediction_stays_finite(mix, method):
    """At ᾱ = 0 (λ = −∞) the first step is first order and its infinite h drops its point from the later steps."""
    zs = schedules.get("linear", 1000, zero_terminal_snr=True)
    eps_fn, ac = mix.eps_fn(zs), tf.constant(zs.alphas_cumprod)

    def v_fn(x, t):  # as in tests/test_dpm_solver.py: v = (ε − √(1−ᾱ)·x)/√ᾱ, and −E[x₀] at ᾱ = 0
        ab = tf.gather(ac, t)[:, None]
        v = (eps_fn(x, t) - tf.sqrt(1 - ab) * x) / tf.sqrt(tf.maximum(ab, 1e-30))
        return tf.where(ab > 0, v, -tf.constant(mix.weights @ mix.means, x.dtype))

    ts = schedules.spaced_timesteps(1000, 50, "trailing")
    x = np.random.default_rng(9).standard_normal((5000, 2))
    sampler = sampling.Sampler(v_fn, zs, sampling.SamplerConfig(method=method, prediction_type="v_prediction"))
    out = sampler.sample(x, ts, seed=0).numpy()
    assert np.all(np.isfinite(out))
    w = np.bincount(mix.assign(out), minlength=3) / len(out)
    assert np.all(np.abs(w - mix.weights) < 4 * np.sqrt(mix.weights * (1 - mix.weights) / len(out))), w


@pytest.mark.parametrize("final", ["one", "alpha_0"])
def test_with_no_room_for_a_higher_order_they_are_ddim(eps_fn, sched, cache, final):
    """S = 1: one first-order step, DDIM with η = 0 for all three (no noise on the final step).
    S = 2: first order, then the final step: DPM-Solver++(3M) is DDIM η = 0, the SDE is DDIM η = 1 (its first-order
    step has DDIM η = 1's mean and variance) given the same noise, and UniPC's corrector changes x_1, which the
    final step into ᾱ = 1 replaces by x̂₀(x̃_1): DDIM for final "one" only. S = 3: 3M's one inner step is 2M's.
    """
    x = np.random.default_rng(3).standard_normal((32, 2))
    noise = np.random.default_rng(4).standard_normal((2, 32, 2))

    def run(S, method, **kw):
        return sampling.sample(eps_fn, x, sched, schedules.spaced_timesteps(1000, S), method=method,
                               final_alpha_cumprod=final, cache=cache, **kw).numpy()

    def same(a, b):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)

    ddim = {S: run(S, "ddim", noise=0 * noise[:S]) for S in (1, 2)}  # (noise given: one trace for η = 0 and 1)
    for method in ("unipc", "dpmpp_3m"):
        same(run(1, method), ddim[1])
    same(run(1, "dpmpp_2m_sde", noise=noise[:1]), ddim[1])
    same(run(2, "dpmpp_3m"), ddim[2])
    same(run(2, "dpmpp_2m_sde", noise=noise), run(2, "ddim", eta=1.0, noise=noise))
    same(run(3, "dpmpp_3m"), run(3, "dpmpp_2m"))
    if final == "one":
        same(run(2, "unipc"), ddim[2])
    else:
        assert np.abs(run(2, "unipc") - ddim[2]).max() > 1e-6


def test_unipc_order_is_checked_and_the_solvers_take_no_eta(eps_fn, sched):
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        solvers.UniPC(order=4)
    ts = schedules.spaced_timesteps(1000, 5)
    for method in ("unipc", "dpmpp_3m", "dpmpp_2m_sde"):
        with pytest.raises(ValueError, match="eta applies only to method='ddim'"):
            sampling.sample(eps_fn, np.zeros((2, 2)), sched, ts, method=method, eta=0.5)
    for method in ("unipc", "dpmpp_3m"):
        with pytest.raises(ValueError, match="deterministic"):
            sampling.sample(eps_fn, np.zeros((2, 2)), sched, ts, method=method, noise=np.zeros((5, 2, 2)))
