"""Schedules against values derived by hand from the seeds' equations."""

import math

import numpy as np
import pytest

from tfddim.diffusion import schedules


def test_linear_endpoints_and_scaling():
    s = schedules.get("linear", num_timesteps=1000)
    assert s.betas[0] == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[-1] == pytest.approx(0.02, rel=1e-12)
    assert np.allclose(np.diff(s.betas), (0.02 - 1e-4) / 999, rtol=1e-9)
    # improved DDPM: for other T both ends scale by 1000/T
    s4k = schedules.get("linear", num_timesteps=4000)
    assert s4k.betas[0] == pytest.approx(2.5e-5) and s4k.betas[-1] == pytest.approx(0.005)
    s500 = schedules.get("linear", num_timesteps=500)
    assert s500.betas[0] == pytest.approx(2e-4) and s500.betas[-1] == pytest.approx(0.04)


def test_cosine_matches_f_ratio_and_clips():
    T, s_ = 1000, 0.008
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    sch = schedules.get("cosine", num_timesteps=T)
    # alphas_cumprod[i] is the level after i+1 steps: f(i+1)/f(0) wherever beta was not clipped
    for i in (0, 10, 500, 900, 990):
        assert sch.alphas_cumprod[i] == pytest.approx(f(i + 1) / f(0), rel=1e-9)
    assert sch.betas[-1] == 0.999  # f(T) = 0 would make beta_T = 1
    assert np.all(sch.betas <= 0.999)


def test_quad_and_sigmoid():
    q = schedules.get("quad", num_timesteps=1000)
    assert q.betas[0] == pytest.approx(1e-4) and q.betas[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(np.sqrt(q.betas)), (math.sqrt(0.02) - 0.01) / 999)
    sg = schedules.get("sigmoid", num_timesteps=1001)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert sg.betas[0] == pytest.approx(sig(-6) * (0.02 - 1e-4) + 1e-4)
    assert sg.betas[500] == pytest.approx(0.5 * (0.02 - 1e-4) + 1e-4)  # the midpoint, sigmoid(0)


def test_cumulative_and_posterior_terms_by_hand():
    s = schedules.get("linear", num_timesteps=1000)
    b = s.betas
    ab = np.cumprod(1 - b)
    t = 7
    assert s.alphas_cumprod[t] == pytest.approx(np.prod(1 - b[: t + 1]), rel=1e-12)
    assert s.alphas_cumprod_prev[0] == 1.0 and s.alphas_cumprod_prev[t] == ab[t - 1]
    # Posterior variance from Bayes: precision alpha_t/beta_t + 1/(1 - abar_{t-1}) (DDPM eq. 6-7).
    var = 1.0 / ((1 - b[t]) / b[t] + 1.0 / (1 - ab[t - 1]))
    assert s.posterior_variance[t] == pytest.approx(var, rel=1e-10)
    assert s.posterior_variance[0] == 0.0
    assert s.posterior_log_variance_clipped[0] == pytest.approx(math.log(s.posterior_variance[1]))
    # Posterior mean coefficients from the same Gaussian product: var * (sqrt(a_t)/b_t, sqrt(ab_{t-1})/(1-ab_{t-1}))
    assert s.posterior_mean_coef2[t] == pytest.approx(var * math.sqrt(1 - b[t]) / b[t], rel=1e-10)
    assert s.posterior_mean_coef1[t] == pytest.approx(var * math.sqrt(ab[t - 1]) / (1 - ab[t - 1]), rel=1e-10)
    assert s.snr[t] == pytest.approx(ab[t] / (1 - ab[t]))
    assert s.half_log_snr[t] == pytest.approx(math.log(math.sqrt(ab[t]) / math.sqrt(1 - ab[t])), rel=1e-12)


def test_zero_terminal_snr():
    base = schedules.get("linear", num_timesteps=1000)
    z = schedules.get("linear", num_timesteps=1000, zero_terminal_snr=True)
    assert z.alphas_cumprod[-1] == 0.0 and z.betas[-1] == 1.0
    assert z.alphas_cumprod[0] == pytest.approx(base.alphas_cumprod[0], rel=1e-12)
    assert np.all(np.diff(z.alphas_cumprod) < 0)
    # sqrt(abar) is an affine map of the original (Lin et al., Algorithm 1)
    a, c = np.sqrt(base.alphas_cumprod), np.sqrt(z.alphas_cumprod)
    expected = (a - a[-1]) * a[0] / (a[0] - a[-1])
    assert np.allclose(c, expected, rtol=1e-10, atol=1e-15)
    assert z.params["zero_terminal_snr"] is True


@pytest.mark.parametrize("name", ["linear", "cosine", "quad", "sigmoid"])
def test_json_round_trip_is_exact(name):
    s = schedules.get(name, num_timesteps=64, zero_terminal_snr=(name == "linear"))
    back = schedules.Schedule.from_json(s.to_json())
    assert back == s and back.name == name and back.params == s.params
    assert np.array_equal(back.alphas_cumprod, s.alphas_cumprod)
    assert hash(back) == hash(s)


def test_from_betas_and_immutability():
    s = schedules.from_betas([0.1, 0.2, 0.3])
    assert s.num_timesteps == 3 and s.name == "custom"
    assert np.allclose(s.alphas_cumprod, [0.9, 0.72, 0.504])
    with pytest.raises(ValueError):
        s.betas[0] = 0.5
    with pytest.raises(Exception):
        s.betas = np.ones(3)  # frozen dataclass
    assert not s.alphas_cumprod.flags.writeable


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: schedules.get("linear", num_timesteps=1), "num_timesteps"),
        (lambda: schedules.get("linear", num_timesteps=0), "num_timesteps"),
        (lambda: schedules.get("linear", num_timesteps=2.5), "num_timesteps"),
        (lambda: schedules.get("exponential"), "unknown schedule"),
        (lambda: schedules.get("linear", num_timesteps=10, bogus=1), "bogus"),
        (lambda: schedules.from_betas([0.1]), "num_timesteps"),
        (lambda: schedules.from_betas([0.1, -0.2]), r"\(0, 1\]"),
        (lambda: schedules.from_betas([0.1, float("nan")]), "finite"),
        (lambda: schedules.from_betas([[0.1, 0.2]]), "1-D"),
        (lambda: schedules.from_betas([1.0, 0.2]), "last beta"),
        (lambda: schedules.Schedule.from_config({"betas": [0.1, 0.2], "num_timesteps": 3}), "num_timesteps"),
        (lambda: schedules.Schedule.from_config({"name": "linear"}), "betas"),
    ],
)
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()
