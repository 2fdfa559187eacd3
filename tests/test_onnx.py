"""ONNX graphs and TF Serving warmup requests of an export: parity with the SavedModel, checks, the CLI backend."""

import json
import os

import numpy as np
import onnx
import pytest
import tensorflow as tf

from tfddim.export import onnx_loops, warmup as serving_warmup
from tfddim.export.onnx import ONNX_SIGNATURES
from tfddim.runtime import OnnxSampler, SavedModelSampler, open_sampler

T = 50  # the exported models' T (tests/conftest.py)
# The bound: 1e-4 of the data range ([-1, 1], so 2e-4). float32 rounding through a
# short loop is ~1e-6, so a real conversion error (a wrong op, a dropped input) cannot hide under it.
PARITY = 1e-4 * 2.0


def gap(got, want):
    """max |Δ| in data units; scaled by max |want| where that exceeds 1: the unclipped conditional
    tiny net's x̂₀ reaches ~3e3 at the noisiest level, where one float32 ulp is already 2.4e-4."""
    return np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))


def backends(export):
    path = export[2]
    return SavedModelSampler(path), OnnxSampler(path)


def test_onnx_layout_names_and_opset(uncond):
    path = uncond[2]
    manifest = json.load(open(os.path.join(path, "onnx", "onnx.json")))
    assert manifest["opset"] >= 17 and manifest["num_timesteps"] == T
    loaded = uncond[3]
    assert not os.path.exists(os.path.join(path, "onnx", "sample_dpmpp_2m.onnx"))  # sample_ode runs it
    for name in (n for n in ONNX_SIGNATURES if n in loaded.signatures):  # decode: latent exports only
        model = onnx.load(os.path.join(path, "onnx", f"{name}.onnx"))
        assert {o.domain: o.version for o in model.opset_import}[""] >= 17
        # the ONNX inputs carry the SavedModel signature's keys (x_T, not TF's lower-cased x_t)
        keys = set(loaded.signatures[name].structured_input_signature[1])
        assert {i.name for i in model.graph.input} == keys == {i["name"] for i in manifest["graphs"][name]["inputs"]}
        props = {p.key: p.value for p in model.metadata_props}
        assert props["tfddim.signature"] == name and json.loads(props["tfddim.export"])["data_shape"] == [8, 8, 1]
        # the network weights are not loop state: nothing is left to hoist (tfddim.onnx_loops)
        assert onnx_loops.hoist_loop_invariants(model) == 0
        # no random-number op survives: noise is always an input
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}


@pytest.mark.parametrize("eta", [0.0, 0.6, 1.0])
def test_onnx_runtime_matches_the_savedmodel_with_the_same_noise(uncond, eta):
    tf_s, onnx_s = backends(uncond)
    rng = np.random.default_rng(1)
    for batch, S in ((1, 1), (3, 7), (2, T)):
        x = rng.standard_normal((batch, 8, 8, 1)).astype(np.float32)
        noise = rng.standard_normal((S, batch, 8, 8, 1)).astype(np.float32)
        want = tf_s.sample_with_noise(x, S, eta, noise)
        got = onnx_s.sample_with_noise(x, S, eta, noise)
        assert np.max(np.abs(got - want)) <= PARITY, (S, np.max(np.abs(got - want)))
        if eta > 0:  # the noise matters, so a runtime that ignored it would fail above
            other = tf_s.sample_with_noise(x, S, eta, -noise)
            assert S == 1 or np.max(np.abs(other - want)) > 100 * PARITY


def test_eta_zero_takes_an_empty_noise_and_both_backends_agree(uncond):
    tf_s, onnx_s = backends(uncond)
    x = tf_s.starting_noise(3, seed=4)
    empty = np.zeros((0, 3, 8, 8, 1), np.float32)
    want = tf_s.sample(x, 9, eta=0.0, seed=123)  # serving_default, in-graph RNG unused at eta = 0
    np.testing.assert_allclose(tf_s.sample_with_noise(x, 9, 0.0, empty), want, atol=1e-6)
    assert np.max(np.abs(onnx_s.sample_with_noise(x, 9, 0.0, empty) - want)) <= PARITY
    assert np.max(np.abs(onnx_s.sample(x, 9, eta=0.0, seed=5) - want)) <= PARITY
    # an empty noise with eta > 0 is refused: in the SavedModel graph and in Python
    loaded = uncond[3]
    with pytest.raises(tf.errors.InvalidArgumentError, match="noise must have num_steps entries"):
        loaded.signatures["sample_with_noise"](x_T=tf.constant(x), num_steps=tf.constant(9), eta=tf.constant(0.5),
                                               noise=tf.constant(empty))
    with pytest.raises(ValueError, match="noise must have shape"):
        onnx_s.sample_with_noise(x, 9, 0.5, empty)


def test_onnx_encode_and_dpm_solver_match_and_the_onnx_sampler_is_stochastic_by_seed(uncond):
    tf_s, onnx_s = backends(uncond)
    x0 = np.tanh(tf_s.starting_noise(2, seed=7))
    for S in (1, 10):
        assert np.max(np.abs(onnx_s.encode(x0, S) - tf_s.encode(x0, S))) <= PARITY
    for S in (1, 2, 10, T):
        assert np.max(np.abs(onnx_s.sample_dpmpp_2m(x0, S) - tf_s.sample_dpmpp_2m(x0, S))) <= PARITY, S
    x = onnx_s.starting_noise(2, seed=0)
    a, b, c = (onnx_s.sample(x, 6, eta=1.0, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 1e-3


def test_sample_ode_matches_in_onnx_for_every_solver_and_spacing(uncond, cond):
    """The one ONNX graph of sample_ode (no If: the solver is picked inside the loop) against the SavedModel."""
    for export, conditional in ((uncond, False), (cond, True)):
        tf_s, onnx_s = backends(export)
        x = tf_s.starting_noise(2, seed=3)
        extra = dict(labels=[2, 0], guidance_scale=2.0) if conditional else {}
        # every pair on the unconditional export; on the conditional one the spacings that start at T-1 (the
        # graph of each pair is the same loop, so this checks the labels and guidance inputs, not the spacings)
        spacings = tf_s.manifest.ode_spacings if not conditional else ("trailing", "logsnr", "time_quadratic")
        for method in tf_s.manifest.ode_methods:
            for spacing in spacings:
                for S in (9,):
                    want = tf_s.sample_ode(x, S, method, spacing, **extra)
                    assert gap(onnx_s.sample_ode(x, S, method, spacing, **extra), want) <= PARITY, (method, spacing, S)
        with pytest.raises(ValueError, match="method must be one of"):
            onnx_s.sample_ode(x, 5, "dpmpp_2m_sde", "uniform", **extra)
        with pytest.raises(ValueError, match="spacing must be one of"):
            tf_s.sample_ode(x, 5, "unipc", "ddim10", **extra)


def test_onnx_sampler_checks_requests_in_python(uncond, cond):
    onnx_s = OnnxSampler(uncond[2])
    x = onnx_s.starting_noise(2, 0)
    for call, match in [
        (lambda: onnx_s.sample(x, 0), "num_steps"),
        (lambda: onnx_s.sample(x, T + 1), "num_steps"),
        (lambda: onnx_s.sample(x, 5, eta=-0.1), "eta"),
        (lambda: onnx_s.sample(x[..., :0], 5), "x_T must have shape"),
        (lambda: onnx_s.encode(np.full_like(x, np.inf), 5), "x_0 contains NaN or Inf"),
        (lambda: onnx_s.sample_with_noise(x, 5, 0.5, np.zeros((4, 2, 8, 8, 1))), "noise must have shape"),
        (lambda: onnx_s.sample_with_noise(x, 2, 0.5, np.full((2, 2, 8, 8, 1), np.nan)), "noise contains NaN"),
        (lambda: OnnxSampler(os.path.dirname(uncond[2])), "ONNX export"),
        (lambda: open_sampler(uncond[2], "torch"), "backend must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        OnnxSampler(cond[2]).sample(x, 5, labels=[0, 5])


def test_sample_cli_onnx_backend_draws_the_same_deterministic_samples(uncond, tmp_path, capsys):
    from tfddim import cli

    path = uncond[2]
    for backend in ("tf", "onnx"):
        out = str(tmp_path / f"{backend}.png")
        assert cli.main(["sample", "--model", path, "--backend", backend, "--n", "3", "--steps", "5", "--out", out,
                         "--npz"]) == 0
        assert f"backend {backend}" in capsys.readouterr().out
    a, b = (np.load(str(tmp_path / f"{k}.npz"))["x_0"] for k in ("tf", "onnx"))
    assert np.max(np.abs(a - b)) <= PARITY


def test_warmup_requests_replay_through_every_signature(uncond, cond):
    for net, base, path, loaded in (uncond, cond):
        requests = serving_warmup.read_warmup_requests(path)
        assert sorted(name for name, _ in requests) == sorted(loaded.signatures)
        for name, inputs in requests:
            fn = loaded.signatures[name]
            assert set(inputs) == set(fn.structured_input_signature[1])
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
            assert all(np.all(np.isfinite(v.numpy())) for v in out.values())


def test_the_shipped_model_samples_through_both_backends_without_a_model_flag(tmp_path):
    """saved_models/digits/1 is committed; `tfddim sample` with no --model uses it."""
    from tfddim.pipelines import sample

    assert os.path.exists(os.path.join(sample.DEFAULT_MODEL, "saved_model.pb")), sample.DEFAULT_MODEL
    card = os.path.join(os.path.dirname(sample.DEFAULT_MODEL), "MODEL_CARD.md")
    assert "## Reproduce" in open(card).read()
    out = {b: sample.run(sample.SampleConfig(n=4, steps=5, out=str(tmp_path / f"{b}.png"), backend=b))["x_0"]
           for b in ("tf", "onnx")}
    assert out["tf"].shape == (4, 8, 8, 1) and np.all(np.abs(out["tf"]) <= 1.0)  # x̂₀ clipping is baked in
    assert gap(out["onnx"], out["tf"]) <= PARITY
    assert serving_warmup.read_warmup_requests(sample.DEFAULT_MODEL)  # TF Serving warmup is shipped too


def test_the_shipped_conditional_model_draws_the_requested_digits(tmp_path):
    """saved_models/digits_conditional/1 with --labels, scored by the shipped evaluation classifier."""
    from tfddim import cli
    from tfddim.evaluation.features import DigitsFeatureNet
    from tfddim.evaluation.metrics import class_accuracy
    from tfddim.pipelines import evaluate, sample

    model = os.path.join(os.path.dirname(os.path.dirname(sample.DEFAULT_MODEL)), "digits_conditional", "1")
    out = str(tmp_path / "cond.png")
    assert cli.main(["sample", "--model", model, "--n", "30", "--steps", "20", "--labels", "0,1,2,3,4,5,6,7,8,9",
                     "--out", out, "--npz"]) == 0
    drawn = np.load(str(tmp_path / "cond.npz"))
    np.testing.assert_array_equal(drawn["labels"], np.arange(30) % 10)
    accuracy = class_accuracy(DigitsFeatureNet(evaluate.DEFAULT_CLASSIFIER).logits(drawn["x_0"]), drawn["labels"])
    # measured 0.97 on 100 samples at 50 steps; at p = 0.97, P(fewer than 24 of 30 right) < 1e-3
    assert accuracy >= 0.8, accuracy
    # the command's default, the recommended solver and spacing for 20 steps, through the ONNX sample_ode
    method, spacing = sample.SampleConfig(steps=20).solver()
    onnx_x0 = OnnxSampler(model).sample_ode(drawn["x_T"][:10], 20, method, spacing, labels=drawn["labels"][:10])
    assert gap(onnx_x0, drawn["x_0"][:10]) <= PARITY


def test_the_shipped_models_have_the_dpm_solver_signature(tmp_path):
    """Both shipped models were re-exported with sample_dpmpp_2m; the CLI reaches it with --method."""
    from tfddim import cli
    from tfddim.pipelines import sample

    x = SavedModelSampler(sample.DEFAULT_MODEL).starting_noise(3, seed=1)
    tf_x0 = SavedModelSampler(sample.DEFAULT_MODEL).sample_dpmpp_2m(x, 10)
    assert gap(OnnxSampler(sample.DEFAULT_MODEL).sample_dpmpp_2m(x, 10), tf_x0) <= PARITY
    out = str(tmp_path / "dpm.png")
    assert cli.main(["sample", "--method", "dpmpp_2m", "--spacing", "uniform", "--n", "3", "--steps", "10", "--seed", "1",
                     "--out", out, "--npz"]) == 0
    np.testing.assert_allclose(np.load(str(tmp_path / "dpm.npz"))["x_0"], tf_x0, atol=1e-6)
    with pytest.raises(ValueError, match="--eta applies only to --method ddim"):
        sample.run(sample.SampleConfig(n=2, steps=5, eta=0.5, method="dpmpp_2m", out=out))
