"""A bad request never takes a server down (issue 13, section 1).

Each malformed request of the table below is sent (a) to the SavedModel signatures of the tiny exports
(``uncond``, ``cond`` in conftest.py) in ONE child process, because a request that reaches the network
malformed can abort the process (SIGABRT in the oneDNN convolution's layout code, not an exception): the
child catches the expected ``InvalidArgumentError``, checks that its message names the input and what it
must be, and prints one JSON line per case; the test asserts the child exited with 0, not a signal; and
(b) to ``SavedModelSampler`` / ``OnnxSampler`` in this process, each expecting a ``ValueError`` naming the
argument. The shipped models are checked the same way in a second child.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfddim.runtime import OnnxSampler, SavedModelSampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 1)  # the tiny exports' and the shipped models' data shape
MAX_BATCH = 4096  # ExportOptions' default, which the fixtures use
B = 2
STEPS = 2

# ------------------------------------------------------------------ (a) the SavedModel signatures, in a child
IMAGE = {"serving_default": "x_T", "sample_with_noise": "x_T", "sample_dpmpp_2m": "x_T", "encode": "x_0",
         "predict_x0": "x_t", "sample_ode": "x_T", "sample_ddpm": "x_T", "sample_trajectory": "x_T", "edit": "x_0",
         "edit_with_noise": "x_0", "inpaint": "x_0", "inpaint_with_noise": "x_0"}
NOISY = ("sample_with_noise", "sample_ddpm", "sample_trajectory", "edit_with_noise", "inpaint_with_noise")  # a noise input
ALIKE = {"edit_with_noise": "start_noise", "inpaint": "mask", "inpaint_with_noise": "x_T"}  # inputs shaped like the image


def tensor(shape, dtype="float32", value=0, poison=None):
    """A JSON description of one input (the child builds it): ``value`` everywhere, ``poison`` (nan/inf) at one entry."""
    return {"shape": list(shape), "dtype": dtype, "value": value, "poison": poison}


def valid_request(signature, conditional, batch=B):
    """A request the signature accepts (batch ``batch``, two steps)."""
    image = tensor([batch, *SHAPE])
    cond = {"labels": tensor([batch], "int32"), "guidance_scale": tensor([], value=1.0)} if conditional else {}
    steps = tensor([], "int32", STEPS)
    return {
        "serving_default": lambda: dict(x_T=image, num_steps=steps, eta=tensor([]), seed=tensor([], "int64"), **cond),
        "sample_with_noise": lambda: dict(x_T=image, num_steps=steps, eta=tensor([], value=0.5),
                                          noise=tensor([STEPS, batch, *SHAPE]), **cond),
        "sample_dpmpp_2m": lambda: dict(x_T=image, num_steps=steps, **cond),
        "sample_ode": lambda: dict(x_T=image, num_steps=steps, method=tensor([], "int32"), spacing=tensor([], "int32"),
                                   **cond),
        "sample_ddpm": lambda: dict(x_T=image, num_steps=steps, variance=tensor([], "int32", 1),
                                    noise=tensor([STEPS, batch, *SHAPE]), **cond),
        "sample_trajectory": lambda: dict(x_T=image, num_steps=steps, eta=tensor([], value=0.5),
                                          noise=tensor([STEPS, batch, *SHAPE]), **cond),
        "encode": lambda: dict(x_0=image, num_steps=steps, **cond),
        "predict_x0": lambda: dict(x_t=image, t=tensor([batch], "int32"), **({"labels": cond["labels"]} if conditional else {})),
        "edit": lambda: dict(x_0=image, strength=tensor([], value=0.5), num_steps=steps, eta=tensor([]),
                             seed=tensor([], "int64"), **cond),
        "edit_with_noise": lambda: dict(x_0=image, strength=tensor([], value=0.5), num_steps=steps,
                                        eta=tensor([], value=0.5), start_noise=image,
                                        noise=tensor([STEPS, batch, *SHAPE]), **cond),
        "inpaint": lambda: dict(x_0=image, mask=image, num_steps=steps, eta=tensor([]), seed=tensor([], "int64"), **cond),
        "inpaint_with_noise": lambda: dict(x_0=image, mask=image, num_steps=steps, eta=tensor([], value=0.5), x_T=image,
                                           noise=tensor([STEPS, batch, *SHAPE]), **cond),
    }[signature]()


def expected_shape(name):
    return f"{name} must have shape [B, {', '.join(map(str, SHAPE))}]"


def savedmodel_cases():
    """``[(case id, model, signature, request, the text the error must contain)]``: every malformed request."""
    cases = []

    def add(name, model, signature, request, expect):
        cases.append((f"{model}-{signature}-{name}", model, signature, request, expect))

    for model in ("uncond", "cond"):
        conditional = model == "cond"
        for signature, image in IMAGE.items():
            base = lambda batch=B: valid_request(signature, conditional, batch)  # noqa: E731
            add("valid", model, signature, base(), None)
            for name, shape in [("rank2", SHAPE[:2]), ("rank3", SHAPE), ("rank5", [1, B, *SHAPE]), ("H", [B, 9, 8, 1]),
                                ("W", [B, 8, 7, 1]), ("C", [B, 8, 8, 3])]:
                add(f"{image}_{name}", model, signature, dict(base(), **{image: tensor(shape)}), expected_shape(image))
            for name, batch in [("batch0", 0), ("batch_over_max", MAX_BATCH + 1)]:
                add(f"{image}_{name}", model, signature, base(batch),
                    f"{image} must have a batch of from 1 to max_batch = {MAX_BATCH}")
            for poison in ("nan", "inf"):
                add(f"{image}_{poison}", model, signature, dict(base(), **{image: tensor([B, *SHAPE], poison=poison)}),
                    f"{image} contains NaN or Inf")
            for scalar in ("num_steps", "eta", "seed", "guidance_scale", "method", "spacing", "variance", "strength"):
                request = base()
                if scalar in request:
                    given = request[scalar]
                    add(f"{scalar}_vector", model, signature, dict(request, **{scalar: dict(given, shape=[2])}),
                        f"{scalar} must be a scalar")
            if conditional and signature != "predict_x0":
                for poison in ("nan", "inf"):
                    add(f"guidance_scale_{poison}", model, signature,
                        dict(base(), guidance_scale=tensor([], poison=poison)), "guidance_scale must be finite")
            for name in ("labels", "t"):
                if name in base():
                    for what, shape in [("long", [B + 1]), ("rank2", [B, 1]), ("scalar", [])]:
                        add(f"{name}_{what}", model, signature, dict(base(), **{name: tensor(shape, "int32")}),
                            f"{name} must have shape [B]")
            for name, value in (("method", 4), ("spacing", -1), ("variance", 2)):
                if name in base():
                    add(f"{name}_out_of_range", model, signature, dict(base(), **{name: tensor([], "int32", value)}),
                        f"{name} must be an index in")
            if "strength" in base():
                for value in (0.0, 1.5):
                    add(f"strength_{value}", model, signature, dict(base(), strength=tensor([], value=value)),
                        "strength must be in (0, 1]")
            if "mask" in base():
                add("mask_half", model, signature, dict(base(), mask=tensor([B, *SHAPE], value=0.5)),
                    "mask must hold only 0 (generate) and 1 (keep)")
            if signature in ALIKE:
                other = ALIKE[signature]
                add(f"{other}_C", model, signature, dict(base(), **{other: tensor([B, 8, 8, 2])}),
                    f"{other} must have the shape of x_0")
                add(f"{other}_batch", model, signature, dict(base(), **{other: tensor([B + 1, *SHAPE])}),
                    f"{other} must have the batch of x_0")
                add(f"{other}_nan", model, signature, dict(base(), **{other: tensor([B, *SHAPE], poison="nan")}),
                    f"{other} contains NaN or Inf")
            if signature in NOISY:
                noise_shape = [STEPS, B, *SHAPE]
                for eta in ((0.0, 0.5) if "eta" in base() else (None,)):
                    extra = {} if eta is None else {"eta": tensor([], value=eta)}
                    for poison in ("nan", "inf"):
                        add(f"noise_{poison}_eta{eta}", model, signature,
                            dict(base(), **extra, noise=tensor(noise_shape, poison=poison)),
                            "noise contains NaN or Inf")
                for name, shape in [("rank4", [B, *SHAPE]), ("batch", [STEPS, B + 1, *SHAPE]), ("C", [STEPS, B, 8, 8, 2])]:
                    add(f"noise_{name}", model, signature, dict(base(), noise=tensor(shape)),
                        "noise must have shape [S, B, 8, 8, 1]")
                add("noise_steps", model, signature, dict(base(), noise=tensor([STEPS + 1, B, *SHAPE])),
                    "noise must have num_steps entries")
    # the super-resolution fixture: every signature takes low_res [B, 4, 4, 1] (a few signatures suffice: one check)
    for signature in ("serving_default", "inpaint", "predict_x0"):
        image = IMAGE[signature]
        base = lambda batch=B: dict(valid_request(signature, False, batch), low_res=tensor([batch, 4, 4, 1]))  # noqa: E731
        add("valid", "sr", signature, base(), None)
        add("low_res_missing_batch", "sr", signature, dict(base(), low_res=tensor([4, 4, 1])),
            "low_res must have shape [B, 4, 4, 1]")
        add("low_res_size", "sr", signature, dict(base(), low_res=tensor([B, 8, 8, 1])), "low_res must have shape [B, 4, 4, 1]")
        add("low_res_batch", "sr", signature, dict(base(), low_res=tensor([B + 1, 4, 4, 1])),
            f"low_res must have the batch of {image}")
        add("low_res_nan", "sr", signature, dict(base(), low_res=tensor([B, 4, 4, 1], poison="nan")),
            "low_res contains NaN or Inf")
    return cases


CASES = savedmodel_cases()

# The child: for each case, build the tensors, call the signature and print one JSON line; a case that should
# fail must raise InvalidArgumentError containing the expected text. The valid requests run again at the end:
# the process still serves after every bad request.
CHILD = r"""
import json, sys
import numpy as np
import tensorflow as tf

spec = json.load(open(sys.argv[1]))
models = {name: tf.saved_model.load(path) for name, path in spec["models"].items()}

def build(t):
    value = np.full(t["shape"], t["value"], dtype=t["dtype"])
    if t["poison"] and value.size:
        value.reshape(-1)[0] = {"nan": np.nan, "inf": np.inf}[t["poison"]]
    return tf.constant(value)

def run(case):
    cid, model, signature, request, expect = case
    fn = models[model].signatures[signature]
    try:
        out = fn(**{k: build(v) for k, v in request.items()})
    except tf.errors.InvalidArgumentError as e:
        message = e.message
        ok = expect is not None and expect in message
        return {"id": cid, "ok": ok, "error": message.splitlines()[0][:300] if ok else message[:1500]}
    except Exception as e:  # a wrong kind of error is a failure too
        return {"id": cid, "ok": False, "error": f"{type(e).__name__}: {str(e)[:1500]}"}
    shapes = {k: list(v.shape) for k, v in out.items()}
    return {"id": cid, "ok": expect is None, "outputs": shapes}

for case in spec["cases"]:
    print(json.dumps({"start": case[0]}), flush=True)
    print(json.dumps(run(case)), flush=True)
for case in spec["cases"]:
    if case[4] is None:
        result = run(case)
        print(json.dumps(dict(result, id=case[0] + "-after")), flush=True)
print(json.dumps({"done": True}), flush=True)
"""


def run_child(tmp_path, models, cases):
    """Run CHILD on ``cases`` in a fresh process; return (return code, {case id: result}, stderr tail)."""
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps({"models": models, "cases": cases}))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(spec)], capture_output=True, text=True, timeout=900, env=env)
    results, started = {}, None
    for line in proc.stdout.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "start" in item:
            started = item["start"]
        elif "id" in item:
            results[item["id"]] = item
        elif item.get("done"):
            results["done"] = item
    return proc.returncode, results, started, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def child(uncond, cond, sr, tmp_path_factory):
    return run_child(tmp_path_factory.mktemp("bad"), {"uncond": uncond[2], "cond": cond[2], "sr": sr[2]}, CASES)


def test_the_child_survives_every_bad_request(child):
    code, results, started, stderr = child
    assert code == 0, f"the child died with {code} ({'signal ' + str(-code) if code < 0 else 'exit'}) at case {started}:\n{stderr}"
    assert "done" in results
    after = [r for k, r in results.items() if k.endswith("-after")]
    assert after and all(r["ok"] for r in after), after  # still serving after the bad requests


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_request_fails_by_name_in_the_graph(child, case):
    code, results, started, stderr = child
    result = results.get(case[0])
    assert result is not None, f"no result (child exit {code}, last case started {started})"
    assert result["ok"], (case[4], result)
    if case[4] is None:
        per_step = {"x_steps", "x0_steps"}  # sample_trajectory's [S, B, ...] outputs
        assert all(shape == ([STEPS, B, *SHAPE] if key in per_step else [B, *SHAPE])
                   for key, shape in result["outputs"].items()), result


SHIPPED = {name: os.path.join(ROOT, "saved_models", name, "1") for name in ("digits", "digits_conditional")}


def test_the_shipped_models_refuse_an_image_without_its_batch_axis_by_name(tmp_path):
    from tfddim.export import layout

    cases = []
    for model in SHIPPED:
        exported = layout.read_manifest(SHIPPED[model]).signatures  # the shipped exports predate sample_ddpm/_trajectory
        for signature, image in ((k, v) for k, v in IMAGE.items() if k in exported):
            request = dict(valid_request(signature, model == "digits_conditional", batch=1), **{image: tensor(SHAPE)})
            cases.append((f"{model}-{signature}-{image}_rank3", model, signature, request, expected_shape(image)))
    code, results, started, stderr = run_child(tmp_path, SHIPPED, cases)
    assert code == 0, f"the child died with {code} at case {started}:\n{stderr}"
    bad = {c[0]: results.get(c[0]) for c in cases if not (results.get(c[0]) or {}).get("ok")}
    assert not bad, bad
    assert all(r.get("ok") for k, r in results.items() if k.endswith("-after"))


# ------------------------------------------------------------------ (b) the runtime samplers, in-process
def runtime_cases():
    """``[(case id, conditional, call(sampler), the text of the ValueError)]``."""
    x = np.zeros((B, *SHAPE), np.float32)
    nan, inf = np.full_like(x, np.nan), np.full_like(x, np.inf)
    noise = np.zeros((STEPS, B, *SHAPE), np.float32)
    lab = dict(labels=[0, 1], guidance_scale=1.0)
    shape = expected_shape
    cases = []
    for cond in (False, True):
        kw = lab if cond else {}
        cases += [(f"{'cond' if cond else 'uncond'}-{cid}", cond, call, match) for cid, call, match in [
            ("x_T_rank2", lambda s: s.sample(x[0, ..., 0], STEPS, **kw), shape("x_T")),
            ("x_T_rank3", lambda s: s.sample(x[0], STEPS, **kw), shape("x_T")),
            ("x_T_rank5", lambda s: s.sample(x[None], STEPS, **kw), shape("x_T")),
            ("x_T_H", lambda s: s.sample(np.zeros((B, 9, 8, 1)), STEPS, **kw), shape("x_T")),
            ("x_T_W", lambda s: s.sample_dpmpp_2m(np.zeros((B, 8, 7, 1)), STEPS, **kw), shape("x_T")),
            ("x_T_C", lambda s: s.sample_with_noise(np.zeros((B, 8, 8, 3)), STEPS, 0.0, noise, **kw), shape("x_T")),
            ("x_0_rank3", lambda s: s.encode(x[0], STEPS, **kw), shape("x_0")),
            ("x_T_batch0", lambda s: s.sample(x[:0], STEPS, **({} if not cond else dict(kw, labels=[]))),
             "x_T must have a batch of at least 1"),
            ("x_T_batch_over_max", lambda s: s.sample(np.zeros((MAX_BATCH + 1, *SHAPE)), STEPS,
                                                      **({} if not cond else dict(kw, labels=[0] * (MAX_BATCH + 1)))),
             f"x_T has a batch of {MAX_BATCH + 1}, more than this export's max_batch = {MAX_BATCH}"),
            ("x_0_batch_over_max", lambda s: s.encode(np.zeros((MAX_BATCH + 1, *SHAPE)), STEPS), "x_0 has a batch of"),
            ("x_T_nan", lambda s: s.sample(nan, STEPS, **kw), "x_T contains NaN or Inf"),
            ("x_T_inf_dpm", lambda s: s.sample_dpmpp_2m(inf, STEPS, **kw), "x_T contains NaN or Inf"),
            ("x_0_nan", lambda s: s.encode(nan, STEPS, **kw), "x_0 contains NaN or Inf"),
            ("x_0_inf", lambda s: s.encode(inf, STEPS, **kw), "x_0 contains NaN or Inf"),
            ("noise_nan_eta0", lambda s: s.sample_with_noise(x, STEPS, 0.0, np.full_like(noise, np.nan), **kw),
             "noise contains NaN or Inf"),
            ("noise_inf_eta05", lambda s: s.sample_with_noise(x, STEPS, 0.5, np.full_like(noise, np.inf), **kw),
             "noise contains NaN or Inf"),
            ("noise_rank4", lambda s: s.sample_with_noise(x, STEPS, 0.5, noise[0], **kw), "noise must have shape"),
            ("noise_steps", lambda s: s.sample_with_noise(x, STEPS, 0.5, noise[:1], **kw), "noise must have shape"),
            ("num_steps_vector", lambda s: s.sample(x, np.array([2, 3]), **kw), "num_steps must be a scalar integer"),
            ("num_steps_float", lambda s: s.encode(x, 2.0, **kw), "num_steps must be a scalar integer"),
            ("eta_vector", lambda s: s.sample(x, STEPS, eta=[0.1, 0.2], **kw), "eta must be a scalar"),
            ("eta_nan", lambda s: s.sample(x, STEPS, eta=float("nan"), **kw), "eta must be in [0, 1]"),
            ("seed_vector", lambda s: s.sample(x, STEPS, seed=np.array([1, 2]), **kw), "seed must be a scalar integer"),
        ]]
    cases += [(f"cond-{cid}", True, call, match) for cid, call, match in [
        ("labels_float", lambda s: s.sample(x, STEPS, labels=[0.5, 1.0]), "labels must be integers"),
        ("labels_float_integral", lambda s: s.sample_dpmpp_2m(x, STEPS, labels=np.array([0.0, 1.0])), "labels must be integers"),
        ("labels_long", lambda s: s.sample(x, STEPS, labels=[0, 1, 2]), "labels must have shape [B] = [2]"),
        ("labels_rank2", lambda s: s.encode(x, STEPS, labels=[[0], [1]]), "labels must have shape [B] = [2]"),
        ("labels_scalar", lambda s: s.sample(x, STEPS, labels=1), "labels must have shape [B] = [2]"),
        ("labels_range", lambda s: s.sample(x, STEPS, labels=[0, 3]), "labels must lie in [0, 3)"),
        ("guidance_scale_nan", lambda s: s.sample(x, STEPS, labels=[0, 1], guidance_scale=float("nan")),
         "guidance_scale must be finite"),
        ("guidance_scale_inf", lambda s: s.sample_with_noise(x, STEPS, 0.0, noise, labels=[0, 1], guidance_scale=np.inf),
         "guidance_scale must be finite"),
        ("guidance_scale_vector", lambda s: s.encode(x, STEPS, labels=[0, 1], guidance_scale=[1.0, 2.0]),
         "guidance_scale must be a scalar"),
    ]]
    return cases


RUNTIME_CASES = runtime_cases()


@pytest.fixture(scope="module")
def samplers(uncond, cond):
    return {(backend.backend, conditional): backend(fixture[2])
            for backend in (SavedModelSampler, OnnxSampler) for conditional, fixture in ((False, uncond), (True, cond))}


@pytest.mark.parametrize("backend", ["tf", "onnx"])
@pytest.mark.parametrize("case", RUNTIME_CASES, ids=[c[0] for c in RUNTIME_CASES])
def test_the_runtime_refuses_a_bad_request_by_name(samplers, backend, case):
    _, conditional, call, match = case
    sampler = samplers[(backend, conditional)]
    with pytest.raises(ValueError) as error:
        call(sampler)
    assert match in str(error.value)


def test_the_runtime_reads_max_batch_and_takes_the_largest_batch(samplers):
    for sampler in samplers.values():
        assert sampler.max_batch == MAX_BATCH == sampler.manifest.to_json()["max_batch"]
    s = samplers[("tf", False)]
    x = np.zeros((1, *SHAPE), np.float32)
    assert s.sample(x, 1).shape == (1, *SHAPE)
    object.__setattr__(s.manifest, "max_batch", None)  # an export written before max_batch: no limit in Python
    try:
        assert s.max_batch is None
        with pytest.raises(ValueError, match="x_T must have shape"):
            s.sample(x[0], 1)
    finally:
        object.__setattr__(s.manifest, "max_batch", MAX_BATCH)
