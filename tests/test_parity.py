"""One parity contract for every exported signature: in-process sampler = SavedModel = ONNX Runtime.

Each signature has one case here: its inputs and what the in-process sampler (:mod:`tfddim.sampling`) returns
for them. The contract runs every case on the unconditional export (clipping, uniform spacing) and on the
conditional one (classifier-free guidance, trailing spacing) of tests/conftest.py:

- the SavedModel equals the in-process sampler to float32 rounding through the loop (``close``);
- where the export has an ONNX graph of the signature, ONNX Runtime equals the SavedModel within the issue's
  bound, 1e-4 of the data range (``PARITY``); a signature without a graph must say why in ``NO_ONNX``.

A new signature fails ``test_every_exported_signature_has_a_case`` until it has a case here.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfddim import sampling
from tfddim.diffusion import schedules, steps
from tfddim.export import layout
from tfddim.runtime import OnnxSampler

T = 50  # the exported models' T (tests/conftest.py)
# ONNX vs SavedModel: the 1e-4 of the data range [-1, 1]; float32 rounding through a short loop is ~1e-6.
PARITY = 1e-4 * 2.0
EXPORTS = ("uncond", "cond")

# Signatures with no ONNX graph, and why (the README's signature table says the same).
NO_ONNX = {
    "serving_default": "draws its noise in the graph with TF's stateless RNG, which ONNX has no op for: "
                       "sample_with_noise takes the noise as an input",
    "sample_dpmpp_2m": "sample_ode runs DPM-Solver++(2M) (method index of dpmpp_2m)",
    "predict_x0": "one network call; convert the network itself where a bare forward pass is wanted",
}


def close(got, want):
    """float32 graph vs eager: ~100 ulp of the largest value (rounding accumulates through the loop)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    return np.max(np.abs(got - want)) <= 1e-5 * (1.0 + np.max(np.abs(want)))


def onnx_gap(got, want):
    """max |Δ| in data units, scaled by max |want| where that exceeds 1 (an unclipped x̂₀ of the tiny
    conditional net reaches ~3e3 at the noisiest level, where one float32 ulp is 2.4e-4)."""
    return np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))


class Setup:
    """The in-process counterpart of one export: its network function, schedule, options and conditioning."""

    def __init__(self, export, sched, conditional):
        net = export[0]
        self.loaded, self.path = export[3], export[2]
        self.manifest = layout.read_manifest(self.path)
        self.conditional = conditional
        self.fn = (lambda x, t, y: net((x, t, y))) if conditional else (lambda x, t: net((x, t)))
        self.sched = sched
        self.spacing = self.manifest.spacing.value
        self.labels = np.array([0, 2, 1], np.int32)
        self.cond_inputs = dict(labels=self.labels, guidance_scale=np.float32(2.0)) if conditional else {}
        if conditional:
            self.options = dict(labels=self.labels, guidance_scale=2.0,
                                guidance=sampling.ClassifierFreeGuidance(null_label=3))
        else:
            self.options = dict(clip_x0=(-1.0, 1.0))
        rng = np.random.default_rng(7)
        self.x = rng.standard_normal((3, 8, 8, 1)).astype(np.float32)
        self.noise = lambda s: rng.standard_normal((s, 3, 8, 8, 1)).astype(np.float32)

    def taus(self, s, spacing=None):
        return schedules.spaced_timesteps(T, s, spacing or self.spacing, schedule=self.sched)


CASES = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


@case("serving_default")
def _serving(s: Setup):
    inputs = dict(x_T=s.x, num_steps=np.int32(5), eta=np.float32(0.7), seed=np.int64(4))
    return inputs, {"x_0": sampling.sample(s.fn, s.x, s.sched, s.taus(5), eta=0.7, seed=4, **s.options)}


@case("sample_with_noise")
def _with_noise(s: Setup):
    noise = s.noise(6)
    inputs = dict(x_T=s.x, num_steps=np.int32(6), eta=np.float32(1.0), noise=noise)
    return inputs, {"x_0": sampling.sample(s.fn, s.x, s.sched, s.taus(6), eta=1.0, noise=noise, **s.options)}


@case("sample_dpmpp_2m")
def _dpmpp_2m(s: Setup):
    inputs = dict(x_T=s.x, num_steps=np.int32(7))
    return inputs, {"x_0": sampling.sample(s.fn, s.x, s.sched, s.taus(7), method="dpmpp_2m", **s.options)}


@case("sample_ode")
def _ode(s: Setup):
    # one pair here; tests/test_export.py and tests/test_onnx.py run every solver x spacing
    inputs = dict(x_T=s.x, num_steps=np.int32(8), method=np.int32(s.manifest.ode_methods.index("unipc")),
                  spacing=np.int32(s.manifest.ode_spacings.index("karras")))
    return inputs, {"x_0": sampling.sample(s.fn, s.x, s.sched, s.taus(8, "karras"), method="unipc", **s.options)}


@case("sample_ddpm")
def _ddpm(s: Setup):
    noise = s.noise(6)
    inputs = dict(x_T=s.x, num_steps=np.int32(6), variance=np.int32(s.manifest.ddpm_variances.index("fixed_large")),
                  noise=noise)
    want = sampling.sample(s.fn, s.x, s.sched, s.taus(6), method="ddpm", variance="fixed_large", noise=noise, **s.options)
    return inputs, {"x_0": want}


@case("sample_trajectory")
def _trajectory(s: Setup):
    noise = s.noise(5)
    inputs = dict(x_T=s.x, num_steps=np.int32(5), eta=np.float32(0.5), noise=noise)
    x0, path = sampling.sample(s.fn, s.x, s.sched, s.taus(5), eta=0.5, noise=noise, return_trajectory=True, **s.options)
    return inputs, {"x_0": x0, "x_steps": path.x, "x0_steps": path.x0_hat}


@case("encode")
def _encode(s: Setup):
    inputs = dict(x_0=s.x, num_steps=np.int32(8))
    options = dict(s.options)
    labels, scale = options.pop("labels", None), options.pop("guidance_scale", 1.0)
    return inputs, {"x_T": sampling.encode(s.fn, s.x, s.sched, s.taus(8), labels=labels, guidance_scale=scale, **options)}


@case("predict_x0")
def _predict(s: Setup):
    t = np.array([0, 10, 49], np.int32)
    eps = (s.fn(s.x, t, s.labels) if s.conditional else s.fn(s.x, t)).numpy()
    ab = s.sched.alphas_cumprod[t].reshape(3, 1, 1, 1).astype(np.float32)
    inputs = dict(x_t=s.x, t=t, **({"labels": s.labels} if s.conditional else {}))
    return inputs, {"x_0": steps.x0_from_eps(s.x, eps, ab), "eps": eps}


@pytest.fixture(scope="module")
def setups(request, export_sched):
    return {name: Setup(request.getfixturevalue(name), export_sched, name == "cond") for name in EXPORTS}


@pytest.fixture(scope="module")
def onnx_samplers(setups):
    return {name: OnnxSampler(s.path) for name, s in setups.items()}


def test_every_exported_signature_has_a_case(setups):
    from conftest import COND_ONNX

    for name, s in setups.items():
        assert set(s.manifest.signatures) == set(CASES), "give the new signature a case in tests/test_parity.py"
        graphs = set(layout.read_onnx_manifest(s.path).graphs)
        assert not graphs & set(NO_ONNX)
        # uncond has every graph; cond those of conftest.COND_ONNX (its conditioning inputs' parity)
        assert graphs == (set(CASES) - set(NO_ONNX) if name == "uncond" else set(COND_ONNX))


@pytest.mark.parametrize("which", EXPORTS)
@pytest.mark.parametrize("signature", sorted(CASES))
def test_parity(setups, onnx_samplers, which, signature):
    s = setups[which]
    inputs, want = CASES[signature](s)
    if signature != "predict_x0":  # predict_x0 takes labels only (no guidance): its case gives them
        inputs = {**inputs, **s.cond_inputs}
    got = s.loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    assert set(got) == set(want)
    for key in want:
        assert close(got[key], want[key]), (signature, key, np.max(np.abs(got[key].numpy() - np.asarray(want[key]))))
    if signature in NO_ONNX or not onnx_samplers[which].has_signature(signature):
        return  # no graph (NO_ONNX), or one the conditional fixture does not convert (the test above)
    onnx_out = onnx_samplers[which]._call(signature, **inputs)
    assert set(onnx_out) == set(want)
    for key in want:
        assert onnx_gap(onnx_out[key], got[key].numpy()) <= PARITY, (signature, key)


def test_sample_ddpm_serves_a_learned_variance_network_with_learned_range(tmp_path, export_sched):
    """Improved DDPM's learned Σ (eq. 15) in the exported strided sampler: SavedModel = in-process, ONNX = SavedModel."""
    from conftest import tiny_unet
    from tfddim import export

    net = tiny_unet(learned_variance=True)
    path = export.export_saved_model(net, export_sched, (8, 8, 1), str(tmp_path / "lv"), 1,
                                     export.ExportOptions(clip_x0=(-1, 1)), onnx=True, onnx_signatures=("sample_ddpm",),
                                     warmup=False)
    manifest = layout.read_manifest(path)
    assert manifest.learned_variance and manifest.ddpm_variances == ("fixed_small", "fixed_large", "learned_range")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 8, 1)).astype(np.float32)
    noise = rng.standard_normal((7, 2, 8, 8, 1)).astype(np.float32)
    loaded, onnx_s = tf.saved_model.load(path), OnnxSampler(path)
    outs = {}
    for variance in manifest.ddpm_variances:
        got = loaded.signatures["sample_ddpm"](x_T=tf.constant(x), num_steps=tf.constant(7), noise=tf.constant(noise),
                                               variance=tf.constant(manifest.ddpm_variances.index(variance)))["x_0"]
        want = sampling.sample(lambda a, t: net((a, t)), x, export_sched, schedules.spaced_timesteps(T, 7), method="ddpm",
                               variance=variance, noise=noise, learned_variance=True, clip_x0=(-1, 1))
        assert close(got, want), variance
        assert onnx_gap(onnx_s.sample_ddpm(x, 7, variance, noise), got.numpy()) <= PARITY
        outs[variance] = got.numpy()
    assert np.max(np.abs(outs["learned_range"] - outs["fixed_small"])) > 1e-3  # the learned Σ is used
