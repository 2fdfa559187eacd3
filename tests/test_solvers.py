"""The solver contract: every method of :class:`tfddim.sampling.Method` against the analytic oracle.

A new solver is one module, one enum value and its line in ``solvers.make``; these tests then run it
without being edited. Each clause is derived from the equations, not tuned:

- one step from τ into the clean level (ᾱ_prev = 1) is x̂₀ itself for every solver (eq. 12 with
  ᾱ_prev = 1; DDPM's posterior mean at ᾱ_prev = 1; DPM-Solver++'s first-order step with e^{−h} = 0),
  and no noise is added on the final step;
- with the exact ε of the mixture and S = T every solver samples the mixture (moments within 4
  standard errors at N = 10,000, the tolerance test_sampling first shows exact samples pass);
- the exact classifier's gradient at scale 1 makes ε the exact conditional ε (ADM eq. 14), so every
  solver samples the class; classifier-free guidance at w = 1 is the conditional model, at w = 0 the
  unconditional one;
- seeds, batch independence, dtype, retracing and trajectories behave the same for every solver.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfddim import sampling
from tfddim.diffusion import schedules
from tfddim.sampling import solvers

from test_sampling import moments_ok, np_eps

METHODS = list(sampling.Method)
N = 10000  # moments_ok's tolerance is 4 standard errors of this N


def taus(S):
    return schedules.spaced_timesteps(1000, S, "uniform")


def test_every_method_has_a_solver_module():
    for method in METHODS:
        solver = solvers.make(sampling.SamplerConfig(method=method))
        assert isinstance(solver, solvers.Solver)
        assert type(solver).__module__ == f"tfddim.sampling.solvers.{method.value}"


@pytest.mark.parametrize("method", METHODS)
def test_one_step_into_the_clean_level_is_x0_hat(mix, eps_fn, sched, method):
    x = np.random.default_rng(0).standard_normal((64, 2))
    for t in (0, 400, 999):
        ab = sched.alphas_cumprod[t]
        want = (x - np.sqrt(1 - ab) * np_eps(mix, ab, x)) / np.sqrt(ab)
        got = sampling.sample(eps_fn, x, sched, [t], method=method, seed=3).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_samples_the_mixture_with_the_exact_network(mix, eps_fn, sched, method):
    x_T = np.random.default_rng(123).standard_normal((N, 2))
    out = sampling.sample(eps_fn, x_T, sched, taus(1000), method=method, seed=11).numpy()
    assert moments_ok(out, mix) == []


@pytest.mark.parametrize("method", METHODS)
def test_exact_classifier_guidance_samples_the_class(mix, eps_fn, sched, method):
    guide = sampling.ClassifierGuidance(mix.classifier_log_prob_fn(sched))
    x = np.random.default_rng(5).standard_normal((1000, 2))  # > 0.99 of 1000: a miss rate of 1% shows as ~10
    labels = np.full(len(x), 1, np.int32)
    out = sampling.sample(eps_fn, x, sched, taus(1000), method=method, labels=labels, guidance=guide,
                          guidance_scale=1.0, seed=2).numpy()
    assert np.mean(mix.assign(out) == 1) > 0.99
    unguided = sampling.sample(eps_fn, x, sched, taus(1000), method=method, labels=labels, guidance=guide,
                               guidance_scale=0.0, seed=2).numpy()
    np.testing.assert_allclose(unguided, sampling.sample(eps_fn, x, sched, taus(1000), method=method, seed=2).numpy(),
                               atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_classifier_free_guidance_scales(mix, eps_fn, sched, method):
    cond = mix.conditional_eps_fn(sched)
    free = sampling.ClassifierFreeGuidance(null_label=mix.num_components)
    x = np.random.default_rng(6).standard_normal((256, 2))
    labels = np.full(len(x), 2, np.int32)
    run = lambda fn, **kw: sampling.sample(fn, x, sched, taus(20), method=method, seed=4, **kw).numpy()  # noqa: E731
    np.testing.assert_allclose(run(cond, labels=labels, guidance=free, guidance_scale=1.0),
                               run(cond, labels=labels, class_conditional=True), atol=1e-9)
    np.testing.assert_allclose(run(cond, labels=labels, guidance=free, guidance_scale=0.0), run(eps_fn), atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_seeds_batches_and_dtypes(eps_fn, sched, method):
    solver = solvers.make(sampling.SamplerConfig(method=method))
    x = np.random.default_rng(7).standard_normal((8, 2))
    eta = 0.5 if solver.takes_eta else 0.0  # DDIM with η = 0 is deterministic; with η > 0 it draws noise
    run = lambda x, seed: sampling.sample(eps_fn, x, sched, taus(10), method=method, eta=eta,  # noqa: E731
                                          seed=seed).numpy()
    a = run(x, 1)
    np.testing.assert_array_equal(a, run(x, 1))
    # a sample does not depend on the batch around it (to rounding: the batch changes the vectorisation)
    np.testing.assert_allclose(a[:3], run(x[:3], 1), rtol=0, atol=1e-12)
    if solver.uses_noise:
        assert np.abs(a - run(x, 2)).max() > 1e-3
    else:
        np.testing.assert_array_equal(a, run(x, 2))
    # float32 follows float64 to float32 rounding through 10 steps (|x| ~ 5: 1e-4 is ~100 ulps); the same
    # noise is given explicitly, since the in-graph stream draws other numbers in another dtype
    noise = np.random.default_rng(8).standard_normal((10, 8, 2)) if solver.uses_noise else None
    given = lambda x, n: sampling.sample(eps_fn, x, sched, taus(10), method=method, eta=eta, noise=n).numpy()  # noqa: E731
    np.testing.assert_allclose(given(x.astype(np.float32), None if noise is None else noise.astype(np.float32)),
                               given(x, noise), atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_one_trace_for_any_batch_and_steps_and_the_trajectory_ends_at_the_output(eps_fn, sched, method):
    sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method=method))
    for B, S in [(3, 10), (8, 25)]:
        sampler.sample(np.zeros((B, 2)), taus(S), seed=B)
    assert sampler.tracing_count() == 1
    out, traj = sampler.sample(np.ones((4, 2)), taus(10), seed=0, return_trajectory=True)
    assert traj.x.shape == (10, 4, 2) and traj.x0_hat.shape == (10, 4, 2)
    np.testing.assert_array_equal(traj.x[-1], out)
    np.testing.assert_array_equal(traj.x0_hat[-1], out)  # the final step lands on x̂₀


@pytest.mark.parametrize("method", METHODS)
def test_bad_input_names_the_argument(eps_fn, sched, method):
    with pytest.raises(ValueError, match="x_T contains NaN"):
        sampling.sample(eps_fn, np.full((2, 2), np.nan), sched, taus(5), method=method)
    sampler = sampling.Sampler(eps_fn, sched, sampling.SamplerConfig(method=method))
    graph = tf.function(lambda x: sampler.graph_sample(x, tf.constant([5, 9], tf.int32), seed=tf.constant(0, tf.int64)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="strictly descending"):
        graph(tf.zeros([2, 2], tf.float64))
