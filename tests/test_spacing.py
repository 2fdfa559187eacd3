"""Timestep selection: known lists, properties over T and S, and errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfddim.diffusion import schedules
from tfddim.diffusion.spacing import DdimStride, Sections, Spacing, parse_spacing

spaced = schedules.spaced_timesteps


def test_uniform_is_the_ddim_papers_linear_tau():
    assert spaced(1000, 10, "uniform").tolist() == list(range(900, -1, -100))
    # c = T // S = 33 for S = 30: exactly 30 steps, not len(range(0, 1000, 33)) = 31
    taus = spaced(1000, 30, "uniform")
    assert len(taus) == 30 and taus[0] == 29 * 33 and taus[-1] == 0
    assert spaced(1000, 10, "uniform", offset=1).tolist() == list(range(901, 0, -100))  # diffusers' steps_offset


def test_quad_matches_ddim_code_and_resolves_collisions():
    expected = (np.linspace(0, np.sqrt(1000 * 0.8), 10) ** 2).astype(int)[::-1]
    assert spaced(1000, 10, "quad").tolist() == expected.tolist()
    taus = spaced(1000, 100, "quad")  # the raw formula repeats 0 four times here
    raw = (np.linspace(0, np.sqrt(800), 100) ** 2).astype(int)
    assert len(np.unique(raw)) < 100
    assert len(np.unique(taus)) == 100 and taus[0] == 800


def test_linspace_is_improved_ddpm_striding():
    assert spaced(1000, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    # seed 000: K evenly spaced reals over 1..T, rounded (1-based) -- the same set for this case
    seed_version = np.unique(np.linspace(1, 1000, 10).round().astype(int))[::-1] - 1
    assert spaced(1000, 10, "linspace").tolist() == seed_version.tolist()


def test_trailing_is_diffusers_trailing():
    assert spaced(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert spaced(1000, 3, "trailing").tolist() == [999, 666, 332]  # round(1000, 666.67, 333.33) - 1


def test_improved_diffusion_strings():
    assert spaced(1000, None, "ddim50").tolist() == list(range(980, -1, -20))
    assert spaced(1000, 50, "ddim50").tolist() == list(range(980, -1, -20))
    # improved-diffusion's docstring example: 300 steps, sections [10, 15, 20]
    taus = spaced(300, None, "10,15,20")[::-1]
    assert len(taus) == 45
    assert taus[:10].tolist() == [round(i * 99 / 9) for i in range(10)]
    assert taus[10:25].tolist() == [100 + round(i * 99 / 14) for i in range(15)]
    assert taus[25:].tolist() == [200 + round(i * 99 / 19) for i in range(20)]


def test_explicit_list_is_kept():
    assert spaced(1000, None, [999, 500, 3]).tolist() == [999, 500, 3]
    assert spaced(1000, 3, np.array([10, 5, 0])).tolist() == [10, 5, 0]


def test_parse_spacing_is_typed():
    assert parse_spacing("Uniform") is Spacing.UNIFORM
    assert parse_spacing("ddim25") == DdimStride(25)
    assert parse_spacing("10, 15,20") == Sections((10, 15, 20))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1000, 1001, "uniform"), {}, "num_steps"),
        ((1000, 0, "uniform"), {}, "num_steps"),
        ((1000, -3, "quad"), {}, "num_steps"),
        ((1, 1, "uniform"), {}, "num_timesteps"),
        ((1000, 10, "leading"), {}, "unknown spacing"),
        ((1000, None, "uniform"), {}, "num_steps is required"),
        ((1000, 10, "uniform"), {"offset": 100}, "offset"),
        ((1000, 10, "trailing"), {"offset": 1}, "offset"),
        ((1000, None, "ddim0"), {}, "ddimN"),
        ((100, None, "ddim51"), {}, "no integer stride"),
        ((1000, 20, "ddim10"), {}, "num_steps"),
        ((30, None, "5,11,5"), {}, "section"),
        ((30, 3, "1,1"), {}, "sum"),
        ((1000, None, [5, 7, 2]), {}, "strictly descending"),
        ((1000, None, [5, 5, 2]), {}, "strictly descending"),
        ((1000, None, [1000, 5]), {}, r"\[0, 999\]"),
        ((1000, None, [5, -1]), {}, r"\[0, 999\]"),
        ((1000, 3, [5, 1]), {}, "num_steps"),
        ((1000, None, [5.5, 1]), {}, "integers"),
        ((1000, None, []), {}, "non-empty"),
    ],
)
def test_errors_name_the_parameter(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        spaced(*args, **kwargs)


def _check(taus, T, S):
    assert taus.dtype == np.int64 and taus.shape == (S,)
    assert np.all(np.diff(taus) < 0), "strictly descending, hence unique"
    assert taus.min() >= 0 and taus.max() <= T - 1


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_named_spacing_gives_exactly_s_valid_steps(data):
    T = data.draw(st.integers(2, 5000), label="T")
    S = data.draw(st.integers(1, T), label="S")
    sched = schedules.from_betas(np.linspace(1e-4, 0.02, T))  # DDPM's β range at any T
    for name in ("uniform", "quad", "linspace", "trailing", "logsnr", "karras", "time_quadratic"):
        _check(spaced(T, S, name, schedule=sched), T, S)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_sections_and_ddim_strings(data):
    T = data.draw(st.integers(2, 3000), label="T")
    n = data.draw(st.integers(1, min(T, 5)), label="sections")
    size = T // n
    counts = data.draw(st.lists(st.integers(1, size), min_size=n, max_size=n), label="counts")
    _check(spaced(T, None, ",".join(map(str, counts))), T, sum(counts))
    stride = data.draw(st.integers(1, T), label="stride")
    S = len(range(0, T, stride))
    _check(spaced(T, None, f"ddim{S}"), T, S)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5, 60), min_size=1, max_size=12))
def test_explicit_lists_are_accepted_exactly_when_valid(values):
    T = 50
    valid = all(0 <= v <= T - 1 for v in values) and all(a > b for a, b in zip(values, values[1:]))
    if valid:
        assert spaced(T, None, values).tolist() == values
    else:
        with pytest.raises(ValueError):
            spaced(T, None, values)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 3000), st.data())
def test_too_many_or_too_few_steps_raise(T, data):
    S = data.draw(st.one_of(st.integers(-5, 0), st.integers(T + 1, T + 50)))
    for name in ("uniform", "quad", "linspace", "trailing"):
        with pytest.raises(ValueError, match="num_steps"):
            spaced(T, S, name)


GRAPH_NAMES = ["uniform", "linspace", "trailing", "quad", "logsnr", "karras", "time_quadratic"]


GRAPH_CASES = [(T, "linear", name) for T in (2, 7, 50, 1000, 4000) for name in GRAPH_NAMES] + [
    (T, schedule, name) for T, schedule in ((7, "cosine"), (1000, "cosine"), (1000, "zero_snr")) for name in ("logsnr", "karras")]


@pytest.mark.parametrize("T, schedule, spacing", GRAPH_CASES)
def test_graph_version_equals_the_numpy_version(T, schedule, spacing):
    """The exports compute their timesteps from a tensor S (graph_timesteps); every S gives spaced_timesteps."""
    import tensorflow as tf

    from tfddim.diffusion.spacing import graph_timesteps

    if schedule == "linear":
        sched = schedules.from_betas(np.linspace(1e-4, 0.02, T))  # DDPM's β range at any T
    else:
        sched = schedules.get("linear" if schedule == "zero_snr" else schedule, T, zero_terminal_snr=schedule == "zero_snr")
    fn = tf.function(lambda s: graph_timesteps(T, s, spacing, schedule=sched), input_signature=[tf.TensorSpec([], tf.int32)])
    for S in sorted({s for s in (1, 2, 3, T // 3, T // 2, T - 1, T) if 1 <= s <= T} | set(range(1, min(T, 60) + 1))):
        np.testing.assert_array_equal(fn(tf.constant(S)).numpy(), spaced(T, S, spacing, schedule=sched), err_msg=f"S={S}")


def test_graph_version_refuses_a_spacing_it_cannot_compute():
    from tfddim.diffusion.spacing import graph_timesteps

    with pytest.raises(ValueError, match="cannot be computed in a graph"):
        graph_timesteps(100, 10, "10,20")
    with pytest.raises(ValueError, match="schedule="):
        graph_timesteps(100, 10, "logsnr")


def test_logsnr_is_uniform_in_lambda_up_to_rounding():
    """Each step lands on the level nearest its target λ: |λ_τ − target| ≤ half the local λ gap (where unpushed)."""
    sched = schedules.get("linear", 1000)
    lam = sched.half_log_snr
    taus = spaced(1000, 20, "logsnr", schedule=sched)[::-1]
    targets = np.linspace(lam[0], lam[-1], 20)
    gaps = np.abs(np.diff(lam))
    for t, target in zip(taus, targets):
        local = max(gaps[max(t - 1, 0)], gaps[min(t, 998)])
        assert abs(lam[t] - target) <= local / 2 + 1e-12, (t, target)
    assert taus[0] == 0 and taus[-1] == 999


def test_karras_follows_edm_sigmas():
    """σ_k = (σ_min^{1/7} + k/(S−1)(σ_max^{1/7} − σ_min^{1/7}))^7 with σ = e^{−λ}: the nearest level in λ."""
    sched = schedules.get("linear", 1000)
    lam = sched.half_log_snr
    S = 12
    sig = np.exp(-lam)
    edm = (sig[0] ** (1 / 7) + np.arange(S) / (S - 1) * (sig[-1] ** (1 / 7) - sig[0] ** (1 / 7))) ** 7
    want = np.array([np.argmin(np.abs(lam + np.log(s))) for s in edm])
    got = spaced(1000, S, "karras", schedule=sched)[::-1]
    assert len(np.unique(want)) == S  # no collisions at this S, so the push rule does not act
    np.testing.assert_array_equal(got, want)


def test_time_quadratic_is_dpm_solvers():
    """DPM-Solver's t = (√(1/N) + k/(S−1)(1 − √(1/N)))² in (0, 1], discrete T·t − 1."""
    S = 10
    t = (np.sqrt(1e-3) + np.arange(S) / (S - 1) * (1 - np.sqrt(1e-3))) ** 2
    np.testing.assert_array_equal(spaced(1000, S, "time_quadratic")[::-1], np.round(1000 * t - 1).astype(int))


def test_zero_terminal_snr_still_starts_at_pure_noise():
    sched = schedules.get("linear", 1000, zero_terminal_snr=True)
    for name in ("logsnr", "karras"):
        taus = spaced(1000, 10, name, schedule=sched)
        assert taus[0] == 999 and taus[-1] == 0 and np.all(np.diff(taus) < 0)


def test_schedule_spacings_need_the_schedule():
    with pytest.raises(ValueError, match="schedule="):
        spaced(1000, 10, "logsnr")
    with pytest.raises(ValueError, match="timesteps"):
        spaced(100, 10, "karras", schedule=schedules.get("linear", 1000))
