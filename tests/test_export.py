"""The SavedModel export: signatures equal the in-process sampler, in-graph checks, atomic versions, fresh process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfddim import export, sampling
from tfddim.diffusion import schedules
from tfddim.export import layout, saved_model

T = 50  # the exported models' T (tests/conftest.py)


@pytest.fixture(scope="module")
def sched(export_sched):
    return export_sched


def assert_close(got, want):
    """float32 graph vs eager: agreement to ~100 ulp of the largest value (rounding accumulates through the loop)."""
    got, want = np.asarray(got), np.asarray(want)
    assert np.max(np.abs(got - want)) <= 1e-5 * (1.0 + np.max(np.abs(want))), np.max(np.abs(got - want))


def x_T(batch=3, seed=0):
    return tf.random.stateless_normal([batch, 8, 8, 1], seed=[seed, 9])


def test_layout_and_assets(uncond):
    _, base, path, loaded = uncond
    assert sorted(os.listdir(base)) == ["1"]  # no temporary folder left behind
    for name in ("saved_model.pb", "variables", "assets.extra/model_config.json", "assets.extra/schedule.json",
                 "assets.extra/export.json", "assets.extra/metadata.json"):
        assert os.path.exists(os.path.join(path, name)), name
    info = json.load(open(layout.ExportLayout(path).export_json))
    assert info["spacing"] == "uniform" and info["clip_x0"] == [-1.0, 1.0]
    assert set(loaded.signatures) == {"serving_default", "sample_with_noise", "sample_dpmpp_2m", "sample_ode", "encode",
                                      "predict_x0", "sample_ddpm", "sample_trajectory", "edit", "edit_with_noise",
                                      "inpaint", "inpaint_with_noise"}
    assert sorted(loaded.signatures["serving_default"].structured_input_signature[1]) == ["eta", "num_steps", "seed", "x_T"]


def test_the_manifest_is_typed_and_machine_readable(uncond, cond, sched):
    """export.json (format 2) says what each signature runs and how it is conditioned, as values a program reads."""
    from tfddim.diffusion.spacing import Spacing

    methods = {"encode": "ddim_inversion", "predict_x0": "network", "sample_dpmpp_2m": "dpmpp_2m",
               "sample_with_noise": "ddim", "serving_default": "ddim", "sample_ode": "ode", "sample_ddpm": "ddpm",
               "sample_trajectory": "ddim", "edit": "ddim", "edit_with_noise": "ddim", "inpaint": "ddim",
               "inpaint_with_noise": "ddim"}
    u, c = layout.read_manifest(uncond[2]), layout.read_manifest(cond[2])
    for m, loaded in ((u, uncond[3]), (c, cond[3])):
        assert m.format_version == 2 and m.methods == methods and set(m.signatures) == set(loaded.signatures)
        assert m.num_timesteps == T and m.schedule_sha256 == layout.schedule_sha256(sched.to_config())
        assert m.prediction_type.value == "epsilon" and m.learned_variance is False and m.data_shape == (8, 8, 1)
    assert u.ode_methods == ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc")
    assert u.ode_spacings == ("uniform", "linspace", "trailing", "quad", "logsnr", "karras", "time_quadratic")
    assert u.ddpm_variances == c.ddpm_variances == ("fixed_small", "fixed_large") and not u.xla
    assert (u.spacing, u.clip_x0, u.conditioning) == (Spacing.UNIFORM, (-1.0, 1.0), layout.ExportConditioning())
    assert (c.spacing, c.clip_x0) == (Spacing.TRAILING, None)
    assert c.conditioning == layout.ExportConditioning(layout.GuidanceKind.CLASSIFIER_FREE, 3, 3, True)
    # the ONNX manifest carries the same export.json, so onnx/ reads alone
    assert layout.read_onnx_manifest(uncond[2]).export == u


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_serving_default_equals_the_in_process_sampler(uncond, sched, eta):
    net, _, _, loaded = uncond
    for batch, S in ((1, 5), (3, 12)):
        got = loaded.signatures["serving_default"](x_T=x_T(batch), num_steps=tf.constant(S), eta=tf.constant(eta),
                                                   seed=tf.constant(4, tf.int64))["x_0"]
        want = sampling.sample(lambda x, t: net((x, t)), x_T(batch), sched, schedules.spaced_timesteps(T, S),
                               eta=eta, seed=4, clip_x0=(-1, 1))
        assert_close(got, want)


ODE_CASES = [(m, sp) for m in ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc")
             for sp in ("uniform", "linspace", "trailing", "quad", "logsnr", "karras", "time_quadratic")]


def test_sample_ode_runs_every_solver_and_spacing_as_the_in_process_sampler(uncond, cond, sched):
    """sample_ode picks the solver and the spacing by index; each pair equals the in-process sampler with them."""
    from tfddim.export.saved_model import ODE_METHODS, ODE_SPACINGS

    cache = sampling.SamplerCache()  # one trace per solver: the spacings differ only in the timesteps tensor
    for (net, _, _, loaded), conditional in ((uncond, False), (cond, True)):
        labels = tf.constant([0, 2, 1])
        fn = (lambda x, t, y: net((x, t, y))) if conditional else (lambda x, t: net((x, t)))
        for method, spacing in ODE_CASES:
            S = 6
            extra = dict(labels=labels, guidance_scale=tf.constant(2.0)) if conditional else {}
            got = loaded.signatures["sample_ode"](x_T=x_T(), num_steps=tf.constant(S), method=tf.constant(ODE_METHODS.index(method)),
                                                  spacing=tf.constant(ODE_SPACINGS.index(spacing)), **extra)["x_0"]
            taus = schedules.spaced_timesteps(T, S, spacing, schedule=sched)
            if conditional:
                want = sampling.sample(fn, x_T(), sched, taus, method=method, labels=labels, cache=cache,
                                       guidance=sampling.ClassifierFreeGuidance(null_label=3), guidance_scale=2.0)
            else:
                want = sampling.sample(fn, x_T(), sched, taus, method=method, clip_x0=(-1, 1), cache=cache)
            assert_close(got, want)
            if not conditional and (method, spacing) == ("dpmpp_2m", "uniform"):  # the older signature: the same loop
                assert_close(got, loaded.signatures["sample_dpmpp_2m"](x_T=x_T(), num_steps=tf.constant(S))["x_0"])
        for name, bad in (("method", 4), ("method", -1), ("spacing", 7)):
            args = dict(dict(method=tf.constant(0), spacing=tf.constant(0)), **{name: tf.constant(bad)})
            extra = dict(labels=labels, guidance_scale=tf.constant(1.0)) if conditional else {}
            with pytest.raises(tf.errors.InvalidArgumentError, match=f"{name} must be an index in"):
                loaded.signatures["sample_ode"](x_T=x_T(), num_steps=tf.constant(3), **args, **extra)


def test_conditional_export_takes_labels_and_guidance(cond, sched):
    net, _, _, loaded = cond
    labels = tf.constant([0, 2, 1])
    got = loaded.signatures["serving_default"](x_T=x_T(), num_steps=tf.constant(5), eta=tf.constant(0.0),
                                               seed=tf.constant(0, tf.int64), labels=labels, guidance_scale=tf.constant(2.0))["x_0"]
    cfg = sampling.ClassifierFreeGuidance(null_label=3)
    want = sampling.sample(lambda x, t, y: net((x, t, y)), x_T(), sched, schedules.spaced_timesteps(T, 5, "trailing"),
                           labels=labels, guidance=cfg, guidance_scale=2.0)
    assert_close(got, want)
    dpm = loaded.signatures["sample_dpmpp_2m"](x_T=x_T(), num_steps=tf.constant(5), labels=labels,
                                              guidance_scale=tf.constant(2.0))["x_0"]
    assert_close(dpm, sampling.sample(lambda x, t, y: net((x, t, y)), x_T(), sched, schedules.spaced_timesteps(T, 5, "trailing"),
                                      method="dpmpp_2m", labels=labels, guidance=cfg, guidance_scale=2.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be < num_classes"):
        loaded.signatures["serving_default"](x_T=x_T(), num_steps=tf.constant(5), eta=tf.constant(0.0),
                                             seed=tf.constant(0, tf.int64), labels=tf.constant([0, 3, 1]), guidance_scale=tf.constant(1.0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_steps": 0}, "num_steps must be >= 1"),
        ({"num_steps": T + 1}, "num_steps must be <= T"),
        ({"eta": -0.5}, "eta must be >= 0"),
        ({"x_T": np.full((2, 8, 8, 1), np.nan, np.float32)}, "x_T contains NaN"),
    ],
)
def test_bad_inputs_fail_in_graph_naming_the_input(uncond, kwargs, match):
    _, _, _, loaded = uncond
    args = {"x_T": x_T(2), "num_steps": 5, "eta": 0.0, "seed": 0}
    args.update(kwargs)
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        loaded.signatures["serving_default"](x_T=tf.constant(args["x_T"]), num_steps=tf.constant(args["num_steps"]),
                                             eta=tf.constant(args["eta"]), seed=tf.constant(args["seed"], tf.int64))


def test_versions_are_never_overwritten_and_failures_leave_them_intact(uncond, sched, monkeypatch):
    net, base, path, _ = uncond
    before = open(os.path.join(path, "saved_model.pb"), "rb").read()
    with pytest.raises(FileExistsError, match="exists"):
        export.export_saved_model(net, sched, (8, 8, 1), base, 1)

    def broken(tmp, module):
        raise RuntimeError("simulated failure after writing")

    monkeypatch.setattr(saved_model, "_check", broken)  # the writer's module (tfddim.export only re-exports names)
    with pytest.raises(RuntimeError, match="simulated"):
        export.export_saved_model(net, sched, (8, 8, 1), base, 1, overwrite=True)
    assert sorted(os.listdir(base)) == ["1"]
    assert open(os.path.join(path, "saved_model.pb"), "rb").read() == before
    with pytest.raises(ValueError, match="version"):
        export.export_saved_model(net, sched, (8, 8, 1), base, 0)


def must_compile(path) -> bool:
    """Whether any function of the SavedModel carries ``_XlaMustCompile = true`` (``jit_compile=True``)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
    functions = proto.meta_graphs[0].graph_def.library.function
    return any(f.attr["_XlaMustCompile"].b for f in functions if "_XlaMustCompile" in f.attr)


def test_a_fresh_process_without_tfddim_gets_the_same_samples(uncond, sched):
    """Also for an export with --xla: the network is compiled inside the SavedModel (the graph carries
    _XlaMustCompile) and a plain TensorFlow process runs it to float rounding of the uncompiled export; its ONNX
    graphs come from an uncompiled twin (tf2onnx cannot convert a jit_compile function) and pass the export's
    own ONNX Runtime check."""
    net, _, path, loaded = uncond
    xla_path = export.export_saved_model(net, sched, (8, 8, 1), os.path.join(os.path.dirname(os.path.dirname(path)), "xla"),
                                         1, export.ExportOptions(clip_x0=(-1, 1), xla=True), onnx=True,
                                         onnx_signatures=("encode",), warmup=False)
    assert layout.read_manifest(xla_path).xla and not layout.read_manifest(path).xla
    assert must_compile(xla_path) and not must_compile(path)
    assert set(layout.read_onnx_manifest(xla_path).graphs) == {"encode"}
    want = loaded.signatures["serving_default"](x_T=x_T(), num_steps=tf.constant(7), eta=tf.constant(0.3),
                                                seed=tf.constant(5, tf.int64))["x_0"].numpy()
    script = f"""
import sys, json, numpy as np, tensorflow as tf
outs = []
for path in ({path!r}, {xla_path!r}):
    m = tf.saved_model.load(path)
    x = tf.random.stateless_normal([3, 8, 8, 1], seed=[0, 9])
    outs.append(m.signatures["serving_default"](x_T=x, num_steps=tf.constant(7), eta=tf.constant(0.3),
                                                seed=tf.constant(5, tf.int64))["x_0"].numpy())
assert "tfddim" not in sys.modules
np.save(sys.argv[1], np.stack(outs))
"""
    out_file = os.path.join(os.path.dirname(path), "fresh.npy")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script, out_file], env=env, capture_output=True, text=True, timeout=300, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    plain, compiled = np.load(out_file)
    assert_close(plain, want)
    assert_close(compiled, want)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "signature_def['serving_default']" in shown.stdout and "num_steps" in shown.stdout


def test_the_readme_rest_request_matches_the_signature(uncond):
    """The README's TF Serving request, fed to serving_default with the signature's dtypes."""
    import re

    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md")).read()
    block = re.search(r"```json\n(\{.*?\})\n```", readme, re.S).group(1)
    request = json.loads(block)
    assert request["signature_name"] == "serving_default"
    _, _, _, loaded = uncond
    fn = loaded.signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    assert set(request["inputs"]) == set(specs)
    args = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in request["inputs"].items()}
    assert specs["x_T"].shape.is_compatible_with(args["x_T"].shape)
    out = fn(**args)["x_0"]
    assert out.shape == (1, 8, 8, 1) and np.all(np.isfinite(out.numpy()))


# ------------------------------------------------------------------ runtime + `tfddim sample`
def test_savedmodel_sampler_is_numpy_in_numpy_out(uncond, cond):
    from tfddim.runtime import SavedModelSampler

    _, _, path, loaded = uncond
    s = SavedModelSampler(path)
    x = s.starting_noise(3, seed=1)
    got = s.sample(x, 6, eta=0.5, seed=2)
    want = loaded.signatures["serving_default"](x_T=tf.constant(x), num_steps=tf.constant(6), eta=tf.constant(0.5),
                                                seed=tf.constant(2, tf.int64))["x_0"].numpy()
    assert isinstance(got, np.ndarray) and np.array_equal(got, want)
    noise = np.zeros((6, 3, 8, 8, 1), np.float32)
    np.testing.assert_array_equal(s.sample_with_noise(x, 6, 0.0, noise), s.sample(x, 6, 0.0, seed=9))
    assert s.encode(got, 6).shape == (3, 8, 8, 1)
    for call, match in [
        (lambda: s.sample(x, 0), "num_steps"),
        (lambda: s.sample(x, T + 1), "num_steps"),
        (lambda: s.sample(x[:, :4], 5), "x_T must have shape"),
        (lambda: s.sample(np.full_like(x, np.nan), 5), "x_T contains NaN"),
        (lambda: s.sample(x, 5, eta=1.5), "eta"),
        (lambda: s.sample(x, 5, labels=[0, 1, 2]), "unconditional"),
        (lambda: s.sample_with_noise(x, 6, 0.0, noise[:2]), "noise must have shape"),
        (lambda: SavedModelSampler(os.path.dirname(path)), "no saved_model.pb"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()
    c = SavedModelSampler(cond[2])
    with pytest.raises(ValueError, match="class-conditional"):
        c.sample(x, 5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        c.sample(x, 5, labels=[0, 1, 3])
    assert c.sample(x, 5, labels=[0, 1, 2], guidance_scale=2.0).shape == (3, 8, 8, 1)
    # without sample_dpmpp_2m (as in the ONNX folder) DPM-Solver++(2M) runs through sample_ode, on the export's spacing
    want = s.sample_dpmpp_2m(x, 5)
    s._model = type("Ode", (), {"signatures": {k: v for k, v in loaded.signatures.items() if k != "sample_dpmpp_2m"}})()
    np.testing.assert_allclose(s.sample_dpmpp_2m(x, 5), want, atol=1e-6)
    # a model exported before either existed says so
    s._model = type("Old", (), {"signatures": {k: v for k, v in loaded.signatures.items()
                                               if k not in ("sample_dpmpp_2m", "sample_ode")}})()
    with pytest.raises(ValueError, match="no sample_dpmpp_2m signature .* re-export"):
        s.sample_dpmpp_2m(x, 5)


def test_sample_cli_writes_a_grid_and_batches_do_not_change_samples(uncond, tmp_path, capsys):
    from tfddim import cli

    path = uncond[2]
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    assert cli.main(["sample", "--model", path, "--n", "5", "--steps", "4", "--out", a, "--npz", "--batch-size", "2"]) == 0
    assert cli.main(["sample", "--model", path, "--n", "5", "--steps", "4", "--out", b, "--npz"]) == 0
    assert "wrote" in capsys.readouterr().out
    with open(a, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the same x_T whatever the batching; eta = 0, so only batch-dependent float32 rounding differs
    assert_close(np.load(str(tmp_path / "a.npz"))["x_0"], np.load(str(tmp_path / "b.npz"))["x_0"])
    with pytest.raises(SystemExit) as e:
        cli.main(["sample", "--model", str(tmp_path / "none"), "--out", a])
    assert e.value.code == 2 and "no saved_model.pb" in capsys.readouterr().err
