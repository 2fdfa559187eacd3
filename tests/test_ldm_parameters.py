"""Latent diffusion's DDIM parameters (tfddim.diffusion.ldm): by hand, against the equations, and against
the ᾱ, ᾱ_prev and σ this project's sampler uses at each step of the same timestep list."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tfddim.diffusion import schedules
from tfddim.diffusion.kinds import FinalAlpha
from tfddim.diffusion.ldm import LDM_FINAL_ALPHA, DdimParameters, ddim_sampling_parameters, ldm_ddim_timesteps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS64 = np.finfo(np.float64).eps

# T = 10 linear betas 0.05, 0.10, …, 0.50: α_t = 1 − 0.05·(t+1), so ᾱ is a product of short decimals.
TINY_BETAS = np.linspace(0.05, 0.5, 10)


def tiny_alphas_cumprod():
    out, prod = [], 1.0
    for beta in TINY_BETAS:
        prod *= 1.0 - beta
        out.append(prod)
    return np.array(out)


def expected_by_equation(alphas_cumprod, timesteps, eta):
    """LDM's arrays written out from the equations, one step at a time, in plain float64."""
    sigmas, alphas, alphas_prev = [], [], []
    for i, t in enumerate(timesteps):
        a = float(alphas_cumprod[t])
        a_prev = float(alphas_cumprod[0]) if i == 0 else float(alphas_cumprod[timesteps[i - 1]])
        sigmas.append(eta * math.sqrt((1.0 - a_prev) / (1.0 - a)) * math.sqrt(1.0 - a / a_prev))  # DDIM eq. 16
        alphas.append(a)
        alphas_prev.append(a_prev)
    return np.array(sigmas), np.array(alphas), np.array(alphas_prev)


# ------------------------------------------------------------------ timesteps
def test_ldm_timesteps_50_of_1000():
    ts = ldm_ddim_timesteps(50, 1000)
    assert ts.dtype == np.int64 and ts.shape == (50,)
    assert ts[0] == 1 and ts[-1] == 981
    assert np.all(np.diff(ts) == 20)


def test_ldm_timesteps_tiny_and_uneven():
    np.testing.assert_array_equal(ldm_ddim_timesteps(5, 10), [1, 3, 5, 7, 9])
    # S not dividing T: LDM's range(0, T, T // S) gives more than S entries (its length assert is commented out)
    np.testing.assert_array_equal(ldm_ddim_timesteps(7, 1000), np.arange(0, 1000, 142) + 1)
    assert len(ldm_ddim_timesteps(7, 1000)) == 8
    np.testing.assert_array_equal(ldm_ddim_timesteps(1, 1000), [1])


@pytest.mark.parametrize(
    "args, name",
    [
        ((0, 10), "num_steps"),
        ((11, 10), "num_steps"),
        ((2.0, 10), "num_steps"),
        ((True, 10), "num_steps"),
        ((1000, 1000), "num_steps"),  # range(0, 1000, 1) + 1 ends at T = 1000
        ((3, 1000), "num_steps"),  # stride 333 divides 999: ends at 1000
        ((6, 10), "num_steps"),  # stride 1: ends at 10
        ((1, 1), "num_timesteps"),
        ((1, "10"), "num_timesteps"),
    ],
)
def test_ldm_timesteps_bad_inputs_name_the_argument(args, name):
    with pytest.raises(ValueError, match=name):
        ldm_ddim_timesteps(*args)


# ----------------------------------------------------------------- parameters
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_tiny_schedule_matches_the_equations(eta):
    ac = tiny_alphas_cumprod()
    ts = ldm_ddim_timesteps(5, 10)
    got = ddim_sampling_parameters(ac, ts, eta)
    assert isinstance(got, DdimParameters)
    assert all(a.dtype == np.float64 and a.shape == (5,) for a in got)
    want = expected_by_equation(ac, ts, eta)
    for name, g, w in zip(DdimParameters._fields, got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=0, err_msg=name)
    # by hand: ᾱ_0 = 0.95, ᾱ_1 = 0.95·0.9 = 0.855, ᾱ_3 = 0.855·0.85·0.8 = 0.5814
    np.testing.assert_allclose(got.ddim_alphas[:2], [0.855, 0.5814], rtol=1e-12)
    np.testing.assert_allclose(got.ddim_alphas_prev[:2], [0.95, 0.855], rtol=1e-12)
    # σ_0² = η²·(0.05/0.145)·(1 − 0.9) = η²/29; σ_1² = η²·(0.145/0.4186)·(1 − 0.68) = η²·232/2093
    np.testing.assert_allclose(got.ddim_sigmas[:2] ** 2, [eta**2 / 29, eta**2 * 232 / 2093], rtol=1e-12)


def test_first_prev_is_alpha_0_and_the_rest_shift_by_one():
    ac = schedules.get("linear", 1000).alphas_cumprod
    ts = ldm_ddim_timesteps(50, 1000)
    p = ddim_sampling_parameters(ac, ts, 0.0)
    assert p.ddim_alphas_prev[0] == ac[0]
    np.testing.assert_array_equal(p.ddim_alphas, ac[ts])
    np.testing.assert_array_equal(p.ddim_alphas_prev[1:], ac[ts[:-1]])
    assert LDM_FINAL_ALPHA is FinalAlpha.ALPHA_0


def test_eta_zero_gives_zero_sigmas_and_eta_scales_them():
    ac = schedules.get("linear", 1000).alphas_cumprod
    ts = ldm_ddim_timesteps(50, 1000)
    np.testing.assert_array_equal(ddim_sampling_parameters(ac, ts, 0.0).ddim_sigmas, np.zeros(50))
    one = ddim_sampling_parameters(ac, ts, 1.0).ddim_sigmas
    np.testing.assert_array_equal(ddim_sampling_parameters(ac, ts, 0.5).ddim_sigmas, 0.5 * one)  # × 0.5 is exact


def test_eta_one_is_the_posterior_variance_of_the_strided_step():
    sched = schedules.get("linear", 1000)
    ac = sched.alphas_cumprod
    ts = ldm_ddim_timesteps(50, 1000)
    p = ddim_sampling_parameters(ac, ts, 1.0)
    a, a_prev = p.ddim_alphas, p.ddim_alphas_prev
    beta_s = 1.0 - a / a_prev  # the strided step's β
    beta_tilde = (1.0 - a_prev) / (1.0 - a) * beta_s
    np.testing.assert_allclose(p.ddim_sigmas**2, beta_tilde, rtol=1e-12, atol=0)


def test_eta_one_on_adjacent_steps_is_the_schedules_posterior_variance():
    """Stride 1 (t = 1 … T−1, ᾱ_prev = ᾱ_{t−1}): σ² = β̃_t = β_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t) (DDPM eq. 7)."""
    sched = schedules.get("linear", 1000)
    ts = np.arange(1, 1000)
    p = ddim_sampling_parameters(sched.alphas_cumprod, ts, 1.0)
    # 1 − ᾱ_t/ᾱ_{t−1} recovers β_t = 1 − α_t from the rounded product ᾱ_{t−1}·α_t with an absolute error of
    # a few ulp of 1, i.e. a relative error of a few EPS64/β_t: the bound comes from the smallest β.
    rtol = 8 * EPS64 / sched.betas.min()
    np.testing.assert_allclose(p.ddim_sigmas**2, sched.posterior_variance[1:], rtol=rtol, atol=0)


@pytest.mark.parametrize(
    "alphas_cumprod, timesteps, eta, name",
    [
        (None, [1, 3], -0.1, "eta"),
        (None, [1, 3], 1.5, "eta"),
        (None, [1, 3], float("nan"), "eta"),
        (None, [1, 3], "0.5", "eta"),
        (None, [1, 3], True, "eta"),
        (None, [3, 1], 0.5, "timesteps"),  # the sampler's order, not LDM's
        (None, [1, 1, 3], 0.5, "timesteps"),
        (None, [-1, 3], 0.5, "timesteps"),
        (None, [1, 10], 0.5, "timesteps"),  # T = 10
        (None, [], 0.5, "timesteps"),
        (None, [[1, 3]], 0.5, "timesteps"),
        (None, [1.5, 3], 0.5, "timesteps"),
        (None, [True, False], 0.5, "timesteps"),
        ([[0.9, 0.8]], [0], 0.5, "alphas_cumprod"),
        ([0.9], [0], 0.5, "alphas_cumprod"),
        ([0.9, 1.2], [0], 0.5, "alphas_cumprod"),
        ([0.9, float("nan")], [0], 0.5, "alphas_cumprod"),
        ([0.5, 0.9], [0], 0.5, "alphas_cumprod"),  # increasing
        ([1.0, 0.5], [0, 1], 0.5, "alphas_cumprod"),  # ᾱ = 1 at a listed step: 1 − ᾱ_t = 0
        ([0.5, 0.0, 0.0], [1, 2], 0.5, "alphas_cumprod"),  # ᾱ_prev = 0 for the second step
        ("abc", [0], 0.5, "alphas_cumprod"),
    ],
)
def test_parameters_bad_inputs_name_the_argument(alphas_cumprod, timesteps, eta, name):
    ac = tiny_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
    with pytest.raises(ValueError, match=name):
        ddim_sampling_parameters(ac, timesteps, eta)


def test_zero_terminal_snr_schedule_is_accepted():
    sched = schedules.get("linear", 1000, zero_terminal_snr=True)
    ts = np.array([1, 500, 999])
    p = ddim_sampling_parameters(sched.alphas_cumprod, ts, 1.0)
    assert p.ddim_alphas[-1] == 0.0 and np.all(np.isfinite(p.ddim_sigmas))
    np.testing.assert_allclose(p.ddim_sigmas, expected_by_equation(sched.alphas_cumprod, ts, 1.0)[0], rtol=1e-12)


def test_loads_without_tensorflow():
    code = "import sys, tfddim.diffusion.ldm; assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# ------------------------------------------- equality with the project's sampler
S_REAL, T_REAL = 50, 1000


def eps_fn(x, t):
    """A network-free ε̂ that depends on x and on the timestep the sampler passes (original index t)."""
    import tensorflow as tf

    return 0.5 * x + tf.reshape(tf.cast(t, x.dtype), [-1, 1]) / 1000.0


@pytest.fixture(scope="module")
def ldm_sampler():
    from tfddim.sampling import Sampler, SamplerConfig

    sched = schedules.get("linear", T_REAL)
    return Sampler(eps_fn, sched, SamplerConfig(method="ddim", final_alpha_cumprod=LDM_FINAL_ALPHA))


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_sampler_coefficients_equal_ldm_arrays(ldm_sampler, eta):
    """Step i of the sampler (from the flipped list, largest t first) uses LDM's entry S − 1 − i.

    ᾱ and ᾱ_prev are gathered from the same float64 array, so they are equal exactly; σ is
    ``steps.ddim_sigma`` (what the DDIM solver's step computes) against numpy's form of eq. 16, equal to a
    few float64 ulp.
    """
    import tensorflow as tf

    from tfddim.diffusion import steps

    ts = ldm_ddim_timesteps(S_REAL, T_REAL)
    p = ddim_sampling_parameters(ldm_sampler.schedule.alphas_cumprod, ts, eta)
    descending = tf.constant(np.flip(ts).copy(), tf.int32)  # what LDM's ddim_sampling walks: np.flip(ddim_timesteps)
    x = tf.zeros([1, 1], tf.float64)
    num_steps = tf.constant(S_REAL)
    got = np.zeros((3, S_REAL))
    for i in range(S_REAL):
        c = ldm_sampler._coefficients(tf.constant(i), num_steps, descending, x, steps.as_dtype(eta, tf.float64))
        sigma = steps.ddim_sigma(c.alpha_bar_t, c.alpha_bar_prev, c.eta)
        got[:, S_REAL - 1 - i] = [float(c.alpha_bar_t[0, 0]), float(c.alpha_bar_prev[0, 0]), float(sigma[0, 0])]
    np.testing.assert_array_equal(got[0], p.ddim_alphas)
    np.testing.assert_array_equal(got[1], p.ddim_alphas_prev)  # incl. ᾱ_0 after the last step (FinalAlpha.ALPHA_0)
    np.testing.assert_allclose(got[2], p.ddim_sigmas, rtol=16 * EPS64, atol=0)


def test_sampler_refuses_ldms_ascending_order(ldm_sampler):
    x = np.zeros((1, 1))
    with pytest.raises(ValueError, match="descending"):
        ldm_sampler.sample(x, ldm_ddim_timesteps(S_REAL, T_REAL), eta=0.0)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_sampler_steps_are_ldms_p_sample_ddim(ldm_sampler, eta):
    """A float64 run of the sampler, each step checked against LDM's ``p_sample_ddim`` arithmetic on LDM's arrays.

    x_prev = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z with x̂₀ = (x − √(1−ᾱ)·ε̂)/√ᾱ, at entry S − 1 − i.
    The only difference: this sampler adds no noise on its final step (LDM adds σ·z there too), so z = 0 there.
    """
    rng = np.random.default_rng(3)
    ts = ldm_ddim_timesteps(S_REAL, T_REAL)
    p = ddim_sampling_parameters(ldm_sampler.schedule.alphas_cumprod, ts, eta)
    x_T = rng.standard_normal((4, 3))
    noise = rng.standard_normal((S_REAL, 4, 3))
    out, traj = ldm_sampler.sample(x_T, np.flip(ts).copy(), eta=eta, noise=noise, return_trajectory=True)
    xs, x0s = traj.x.numpy(), traj.x0_hat.numpy()
    assert xs.dtype == np.float64
    np.testing.assert_array_equal(out.numpy(), xs[-1])
    for i, step in enumerate(np.flip(ts)):
        index = S_REAL - 1 - i
        x = x_T if i == 0 else xs[i - 1]
        a_t, a_prev, sigma_t = p.ddim_alphas[index], p.ddim_alphas_prev[index], p.ddim_sigmas[index]
        e_t = 0.5 * x + step / 1000.0
        pred_x0 = (x - np.sqrt(1.0 - a_t) * e_t) / np.sqrt(a_t)
        dir_xt = np.sqrt(1.0 - a_prev - sigma_t**2) * e_t
        z = noise[i] if i < S_REAL - 1 else np.zeros_like(x)
        x_prev = np.sqrt(a_prev) * pred_x0 + dir_xt + sigma_t * z
        # one step is ~10 float64 operations on values of size ≤ max|x|·(1 + |√(ᾱ_prev/ᾱ)|) with
        # √(ᾱ_prev/ᾱ) ≤ 1.3 for a 20-step stride: an error of ~1e-14·max|x|; 1e-12·max|x| bounds it.
        for name, g, w in (("x0_hat", x0s[i], pred_x0), ("x", xs[i], x_prev)):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-12 * max(1.0, np.abs(w).max()), err_msg=f"step {i} {name}")
