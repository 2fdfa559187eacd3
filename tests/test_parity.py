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
EXPORTS = ("uncond", "cond", "sr")

# Signatures with no ONNX graph, and why (the README's signature table says the same).
NO_ONNX = {
    "serving_default": "draws its noise in the graph with TF's stateless RNG, which ONNX has no op for: "
                       "sample_with_noise takes the noise as an input",
    "sample_dpmpp_2m": "sample_ode runs DPM-Solver++(2M) (method index of dpmpp_2m)",
    "edit": "draws its noise in the graph (as serving_default): edit_with_noise takes it",
    "inpaint": "draws x_T and its noise in the graph (as serving_default): inpaint_with_noise takes them",
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

    def __init__(self, export, sched, conditional, super_resolution=False):
        net = export[0]
        self.loaded, self.path = export[3], export[2]
        self.manifest = layout.read_manifest(self.path)
        self.conditional = conditional
        self.fn = (lambda x, t, *args: net((x, t, *args))) if conditional or super_resolution else (lambda x, t: net((x, t)))
        self.sched = sched
        self.spacing = self.manifest.spacing.value
        self.labels = np.array([0, 2, 1], np.int32)
        self.cond_inputs = dict(labels=self.labels, guidance_scale=np.float32(2.0)) if conditional else {}
        rng = np.random.default_rng(7)
        if conditional:
            self.options = dict(labels=self.labels, guidance_scale=2.0,
                                guidance=sampling.ClassifierFreeGuidance(null_label=3))
        else:
            self.options = dict(clip_x0=(-1.0, 1.0))
        self.extra = {}  # the in-process sampler's image conditioning (every call)
        if super_resolution:  # the sr fixture: a 4x4 low_res at the manifest's low_res_t = 3
            low = rng.uniform(-1, 1, (3, 4, 4, 1)).astype(np.float32)
            self.cond_inputs = dict(low_res=low)
            self.extra = dict(low_res=low, low_res_t=self.manifest.low_res_t)
        self.x = rng.standard_normal((3, 8, 8, 1)).astype(np.float32)
        self.noise = lambda s: rng.standard_normal((s, 3, 8, 8, 1)).astype(np.float32)

    def sampler(self, method="ddim"):
        """The in-process :class:`~tfddim.sampling.Sampler` of this export's options (labels stay call arguments)."""
        options = {k: v for k, v in self.options.items() if k not in ("labels", "guidance_scale")}
        if self.conditional:
            options["class_conditional"] = True
        return sampling.Sampler(self.fn, self.sched, sampling.SamplerConfig(method=method, **options))

    @property
    def call_options(self):
        """labels, guidance_scale and the image conditioning, as Sampler call arguments."""
        return {k: v for k, v in {**self.options, **self.extra}.items() if k in ("labels", "guidance_scale", "low_res", "low_res_t")}

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
    return inputs, {"x_0": sampling.sample(s.fn, s.x, s.sched, s.taus(5), eta=0.7, seed=4, **s.options, **s.extra)}


@case("sample_with_noise")
def _with_noise(s: Setup):
    noise = s.noise(6)
    inputs = dict(x_T=s.x, num_steps=np.int32(6), eta=np.float32(1.0), noise=noise)
    return inputs, {"x_0": sampling.sample(s.fn, s.x, s.sched, s.taus(6), eta=1.0, noise=noise, **s.options, **s.extra)}


@case("sample_dpmpp_2m")
def _dpmpp_2m(s: Setup):
    inputs = dict(x_T=s.x, num_steps=np.int32(7))
    return inputs, {"x_0": sampling.sample(s.fn, s.x, s.sched, s.taus(7), method="dpmpp_2m", **s.options, **s.extra)}


@case("sample_ode")
def _ode(s: Setup):
    # one pair here; tests/test_export.py and tests/test_onnx.py run every solver x spacing
    inputs = dict(x_T=s.x, num_steps=np.int32(8), method=np.int32(s.manifest.ode_methods.index("unipc")),
                  spacing=np.int32(s.manifest.ode_spacings.index("karras")))
    return inputs, {"x_0": sampling.sample(s.fn, s.x, s.sched, s.taus(8, "karras"), method="unipc", **s.options, **s.extra)}


@case("sample_ddpm")
def _ddpm(s: Setup):
    noise = s.noise(6)
    inputs = dict(x_T=s.x, num_steps=np.int32(6), variance=np.int32(s.manifest.ddpm_variances.index("fixed_large")),
                  noise=noise)
    want = sampling.sample(s.fn, s.x, s.sched, s.taus(6), method="ddpm", variance="fixed_large", noise=noise, **s.options, **s.extra)
    return inputs, {"x_0": want}


@case("sample_trajectory")
def _trajectory(s: Setup):
    noise = s.noise(5)
    inputs = dict(x_T=s.x, num_steps=np.int32(5), eta=np.float32(0.5), noise=noise)
    x0, path = sampling.sample(s.fn, s.x, s.sched, s.taus(5), eta=0.5, noise=noise, return_trajectory=True, **s.options, **s.extra)
    return inputs, {"x_0": x0, "x_steps": path.x, "x0_steps": path.x0_hat}


@case("encode")
def _encode(s: Setup):
    inputs = dict(x_0=s.x, num_steps=np.int32(8))
    options = dict(s.options)
    labels, scale = options.pop("labels", None), options.pop("guidance_scale", 1.0)
    return inputs, {"x_T": sampling.encode(s.fn, s.x, s.sched, s.taus(8), labels=labels, guidance_scale=scale, **options,
                                           **s.extra)}


@case("edit")
def _edit(s: Setup):
    x0 = np.tanh(s.x)
    inputs = dict(x_0=x0, strength=np.float32(0.55), num_steps=np.int32(6), eta=np.float32(0.6), seed=np.int64(9))
    return inputs, {"x_0": s.sampler().edit(x0, s.taus(6), 0.55, eta=0.6, seed=9, **s.call_options)}


@case("edit_with_noise")
def _edit_with_noise(s: Setup):
    x0, z, noise = np.tanh(s.x), s.noise(1)[0], s.noise(6)
    inputs = dict(x_0=x0, strength=np.float32(0.7), num_steps=np.int32(6), eta=np.float32(1.0), start_noise=z, noise=noise)
    return inputs, {"x_0": s.sampler().edit(x0, s.taus(6), 0.7, eta=1.0, noise=noise, start_noise=z, **s.call_options)}


def _mask(s: Setup):
    return (np.arange(s.x.size).reshape(s.x.shape) % 3 == 0).astype(np.float32)


@case("inpaint")
def _inpaint(s: Setup):
    x0, mask = np.tanh(s.x), _mask(s)
    x_T = steps.stateless_step_normal(tf.constant(4, tf.int64), -1, tf.constant(x0)).numpy()  # the seed's stream −1
    inputs = dict(x_0=x0, mask=mask, num_steps=np.int32(5), eta=np.float32(0.0), seed=np.int64(4))
    return inputs, {"x_0": s.sampler().inpaint(x_T, x0, mask, s.taus(5), eta=0.0, seed=4, **s.call_options)}


@case("inpaint_with_noise")
def _inpaint_with_noise(s: Setup):
    x0, mask, noise = np.tanh(s.x), _mask(s), s.noise(5)
    inputs = dict(x_0=x0, mask=mask, num_steps=np.int32(5), eta=np.float32(0.5), x_T=s.x, noise=noise)
    return inputs, {"x_0": s.sampler().inpaint(s.x, x0, mask, s.taus(5), eta=0.5, noise=noise, **s.call_options)}


@case("predict_x0")
def _predict(s: Setup):
    t = np.array([0, 10, 49], np.int32)
    if s.extra:
        eps = s.fn(s.x, t, s.extra["low_res"], np.full([3], s.extra["low_res_t"], np.int32)).numpy()
        inputs = dict(x_t=s.x, t=t, low_res=s.extra["low_res"])
        ab = s.sched.alphas_cumprod[t].reshape(3, 1, 1, 1).astype(np.float32)
        x0 = steps.x0_from_eps(s.x, eps, ab)
        return inputs, {"x_0": x0, "eps": eps}
    eps = (s.fn(s.x, t, s.labels) if s.conditional else s.fn(s.x, t)).numpy()
    ab = s.sched.alphas_cumprod[t].reshape(3, 1, 1, 1).astype(np.float32)
    inputs = dict(x_t=s.x, t=t, **({"labels": s.labels} if s.conditional else {}))
    return inputs, {"x_0": steps.x0_from_eps(s.x, eps, ab), "eps": eps}


@pytest.fixture(scope="module")
def setups(request, export_sched):
    return {name: Setup(request.getfixturevalue(name), export_sched, name == "cond", name == "sr") for name in EXPORTS}


@pytest.fixture(scope="module")
def onnx_samplers(setups):
    return {name: OnnxSampler(s.path) for name, s in setups.items()}


def test_every_exported_signature_has_a_case(setups):
    from conftest import COND_ONNX, SR_ONNX

    for name, s in setups.items():
        assert set(s.manifest.signatures) == set(CASES), "give the new signature a case in tests/test_parity.py"
        graphs = set(layout.read_onnx_manifest(s.path).graphs)
        assert not graphs & set(NO_ONNX)
        # uncond has every graph; cond and sr those of conftest.COND_ONNX / SR_ONNX (their conditioning inputs' parity)
        assert graphs == {"uncond": set(CASES) - set(NO_ONNX), "cond": set(COND_ONNX), "sr": set(SR_ONNX)}[name]


@pytest.mark.parametrize("which", EXPORTS)
@pytest.mark.parametrize("signature", sorted(CASES))
def test_parity(setups, onnx_samplers, which, signature):
    s = setups[which]
    inputs, want = CASES[signature](s)
    if signature != "predict_x0":  # predict_x0 takes labels (or low_res) only: its case gives them
        inputs = {**inputs, **s.cond_inputs}
    got = s.loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    assert set(got) == set(want)
    for key in want:
        assert close(got[key], want[key]), (signature, key, np.max(np.abs(got[key].numpy() - np.asarray(want[key]))))
    if signature in NO_ONNX or not onnx_samplers[which].has_signature(signature):
        return  # no graph (NO_ONNX), or one the conditional fixture does not convert (the test above)
    onnx_out = onnx_samplers[which]._call(signature, **inputs)
    onnx_out = {k[:-4] if k.endswith("_out") else k: v for k, v in onnx_out.items()}  # edit/inpaint's x_0_out
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
