"""SDEdit and inpainting through tfddim.runtime (SavedModel and ONNX) and `tfddim edit` / `tfddim inpaint`;
a super-resolution export's ``low_res`` through the runtime and `tfddim sample --low-res`."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfddim import cli
from tfddim.export.saved_model import ONNX_TOLERANCE
from tfddim.runtime import OnnxSampler, SavedModelSampler
from test_bad_inputs_cli import fails  # the CLI's one-line-error check, shared

SHAPE = (8, 8, 1)
LOW = (4, 4, 1)  # the sr fixture's low_res_shape (tests/conftest.py)
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "saved_models", "digits", "1")


def gap(got, want):
    return float(np.max(np.abs(np.asarray(got) - np.asarray(want))))


def images(batch, seed=0):
    return np.tanh(np.random.default_rng(seed).standard_normal((batch, *SHAPE))).astype(np.float32)


def mask_of(batch, seed=1):
    return (np.random.default_rng(seed).uniform(size=(batch, *SHAPE)) < 0.5).astype(np.float32)


def normal(*shape, seed=2):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def t(value, dtype=None):
    return tf.constant(value, dtype)


@pytest.fixture(scope="module")
def samplers(uncond):
    return SavedModelSampler(uncond[2]), OnnxSampler(uncond[2])


@pytest.fixture(scope="module")
def sr_samplers(sr):
    return SavedModelSampler(sr[2]), OnnxSampler(sr[2])


def test_the_runtime_loads_without_tensorflow():
    code = "import sys, tfddim.runtime; assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ SavedModel = its signatures
def test_savedmodel_edit_calls_the_edit_signatures(uncond, samplers):
    tf_s, loaded = samplers[0], uncond[3]
    x = images(2)
    got = tf_s.edit(x, 0.6, 10, eta=0.5, seed=7)
    want = loaded.signatures["edit"](x_0=t(x), strength=t(0.6, tf.float32), num_steps=t(10), eta=t(0.5),
                                     seed=t(7, tf.int64))["x_0"].numpy()
    np.testing.assert_array_equal(got, want)
    assert gap(got, tf_s.edit(x, 0.6, 10, eta=0.5, seed=8)) > 1e-3  # the seed matters
    z, noise = normal(2, *SHAPE, seed=3), normal(10, 2, *SHAPE, seed=4)
    got = tf_s.edit(x, 0.6, 10, eta=0.5, start_noise=z, noise=noise)
    want = loaded.signatures["edit_with_noise"](x_0=t(x), strength=t(0.6, tf.float32), num_steps=t(10), eta=t(0.5),
                                                start_noise=t(z), noise=t(noise))["x_0"].numpy()
    np.testing.assert_array_equal(got, want)
    # eta = 0 with only start_noise: the empty noise stands for zeros
    np.testing.assert_allclose(tf_s.edit(x, 0.6, 10, start_noise=z),
                               tf_s.edit(x, 0.6, 10, start_noise=z, noise=np.zeros((10, 2, *SHAPE))), atol=1e-6)


def test_savedmodel_inpaint_calls_the_inpaint_signatures(uncond, samplers):
    tf_s, loaded = samplers[0], uncond[3]
    x, m = images(2), mask_of(2)
    got = tf_s.inpaint(x, m, 6, eta=0.3, seed=5)
    want = loaded.signatures["inpaint"](x_0=t(x), mask=t(m), num_steps=t(6), eta=t(0.3),
                                        seed=t(5, tf.int64))["x_0"].numpy()
    np.testing.assert_array_equal(got, want)
    x_T, noise = normal(2, *SHAPE, seed=3), normal(6, 2, *SHAPE, seed=4)
    got = tf_s.inpaint(x, m, 6, eta=0.3, x_T=x_T, noise=noise)
    want = loaded.signatures["inpaint_with_noise"](x_0=t(x), mask=t(m), num_steps=t(6), eta=t(0.3), x_T=t(x_T),
                                                   noise=t(noise))["x_0"].numpy()
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ ONNX = SavedModel, given the noise
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_onnx_edit_matches_the_savedmodel_with_the_same_noise(samplers, eta):
    tf_s, onnx_s = samplers
    x = images(3)
    for strength, steps in ((1.0, 5), (0.5, 10), (0.2, 7)):
        z = normal(3, *SHAPE, seed=steps)
        noise = normal(steps, 3, *SHAPE, seed=steps + 1) if eta > 0 else np.zeros((0, 3, *SHAPE), np.float32)
        want = tf_s.edit(x, strength, steps, eta=eta, start_noise=z, noise=noise)
        got = onnx_s.edit(x, strength, steps, eta=eta, start_noise=z, noise=noise)
        assert got.shape == x.shape and gap(got, want) <= ONNX_TOLERANCE, (strength, steps, gap(got, want))
        assert gap(want, x) > 1e-3  # an edit that returned its input would pass the parity above


def test_onnx_seeded_edit_and_inpaint_draw_the_documented_numpy_noise(samplers):
    """ONNX without explicit noise: sample i's steps from default_rng([seed, i]), its z / x_T from [seed, i, 1]."""
    tf_s, onnx_s = samplers
    x, m, seed, steps = images(2), mask_of(2), 11, 6
    noise = np.stack([np.random.default_rng([seed, i]).standard_normal((steps, *SHAPE)) for i in range(2)], axis=1)
    start = np.stack([np.random.default_rng([seed, i, 1]).standard_normal(SHAPE) for i in range(2)])
    noise, start = noise.astype(np.float32), start.astype(np.float32)
    edited = onnx_s.edit(x, 0.7, steps, eta=0.5, seed=seed)
    assert gap(edited, tf_s.edit(x, 0.7, steps, eta=0.5, start_noise=start, noise=noise)) <= ONNX_TOLERANCE
    inpainted = onnx_s.inpaint(x, m, steps, eta=0.0, seed=seed)
    assert gap(inpainted, tf_s.inpaint(x, m, steps, eta=0.0, x_T=start, noise=noise)) <= ONNX_TOLERANCE
    # batching does not change a sample (its noise depends on (seed, i) only)
    assert gap(onnx_s.edit(x[:1], 0.7, steps, eta=0.5, seed=seed), edited[:1]) <= 1e-6
    assert gap(onnx_s.inpaint(x[:1], m[:1], steps, seed=seed), inpainted[:1]) <= 1e-6


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_onnx_inpaint_matches_the_savedmodel_and_both_keep_the_known_pixels(samplers, eta):
    tf_s, onnx_s = samplers
    x, m = images(3, seed=5), mask_of(3, seed=6)
    x_T, noise = normal(3, *SHAPE, seed=7), normal(8, 3, *SHAPE, seed=8)
    want = tf_s.inpaint(x, m, 8, eta=eta, x_T=x_T, noise=noise)
    got = onnx_s.inpaint(x, m, 8, eta=eta, x_T=x_T, noise=noise)
    assert gap(got, want) <= ONNX_TOLERANCE
    keep = m == 1
    for out in (want, got, tf_s.inpaint(x, m, 8, eta=eta, seed=3), onnx_s.inpaint(x, m, 8, eta=eta, seed=3)):
        np.testing.assert_array_equal(out[keep], x[keep])
        assert gap(out[~keep], x[~keep]) > 1e-3  # the unknown pixels are generated


# ------------------------------------------------------------------------------ super-resolution: low_res
def test_sr_sample_and_inpaint_take_low_res_in_both_backends(sr_samplers):
    tf_s, onnx_s = sr_samplers
    assert tf_s.manifest.low_res_shape == onnx_s.manifest.low_res_shape == LOW
    x, low = normal(2, *SHAPE, seed=1), np.tanh(normal(2, *LOW, seed=2))
    noise = normal(4, 2, *SHAPE, seed=3)
    want = tf_s.sample_with_noise(x, 4, 0.5, noise, low_res=low)
    assert gap(onnx_s.sample_with_noise(x, 4, 0.5, noise, low_res=low), want) <= ONNX_TOLERANCE
    assert gap(want, tf_s.sample_with_noise(x, 4, 0.5, noise, low_res=-low)) > 1e-3  # low_res reaches the network
    det = tf_s.sample(x, 4, low_res=low)
    assert gap(onnx_s.sample(x, 4, low_res=low), det) <= ONNX_TOLERANCE  # eta = 0: both deterministic
    x0, m = images(2), mask_of(2)
    want = tf_s.inpaint(x0, m, 4, eta=0.5, x_T=x, noise=noise, low_res=low)
    assert gap(onnx_s.inpaint(x0, m, 4, eta=0.5, x_T=x, noise=noise, low_res=low), want) <= ONNX_TOLERANCE
    np.testing.assert_array_equal(want[m == 1], x0[m == 1])
    assert tf_s.inpaint(x0, m, 4, seed=1, low_res=low).shape == x0.shape


def sr_calls(low):
    """Every runtime method of a super-resolution SavedModel, with ``low`` as its low_res."""
    x = normal(2, *SHAPE, seed=1)
    return {
        "sample": lambda s: s.sample(x, 3, low_res=low),
        "sample_with_noise": lambda s: s.sample_with_noise(x, 3, 0.0, np.zeros((0, 2, *SHAPE)), low_res=low),
        "sample_dpmpp_2m": lambda s: s.sample_dpmpp_2m(x, 3, low_res=low),
        "sample_ode": lambda s: s.sample_ode(x, 3, "unipc", "trailing", low_res=low),
        "sample_ddpm": lambda s: s.sample_ddpm(x, 3, seed=1, low_res=low),
        "sample_trajectory": lambda s: s.sample_trajectory(x, 3, eta=0.5, low_res=low)[0],
        "encode": lambda s: s.encode(np.tanh(x), 3, low_res=low),
        "edit": lambda s: s.edit(np.tanh(x), 0.5, 6, low_res=low),
        "inpaint": lambda s: s.inpaint(np.tanh(x), mask_of(2), 3, low_res=low),
    }


@pytest.mark.parametrize("method", list(sr_calls(None)))
def test_every_method_takes_low_res_and_refuses_a_missing_or_misshapen_one(sr_samplers, method):
    tf_s = sr_samplers[0]
    low = np.tanh(normal(2, *LOW, seed=2))
    out = sr_calls(low)[method](tf_s)
    assert out.shape == (2, *SHAPE) and np.all(np.isfinite(out))
    for bad, match in ((None, "give low_res"), (low[:1], "low_res must have shape"),
                       (np.zeros((2, 8, 8, 1)), "low_res must have shape"),
                       (np.full_like(low, np.nan), "low_res contains NaN")):
        with pytest.raises(ValueError, match=match):
            sr_calls(bad)[method](tf_s)


def test_low_res_is_refused_where_the_export_takes_none(samplers, sr_samplers):
    x = normal(2, *SHAPE)
    for s in samplers:
        with pytest.raises(ValueError, match="low_res was given, but this export is not a super-resolution model"):
            s.sample(x, 3, low_res=np.zeros((2, *LOW)))
    onnx_sr = sr_samplers[1]  # the ONNX graphs cannot check: Python must
    for bad, match in ((None, "give low_res"), (np.zeros((2, 4, 4, 3)), r"low_res must have shape \[B, 4, 4, 1\]")):
        with pytest.raises(ValueError, match=match):
            onnx_sr.sample(x, 3, low_res=bad)
        with pytest.raises(ValueError, match=match):
            onnx_sr.inpaint(np.tanh(x), mask_of(2), 3, low_res=bad)


# ------------------------------------------------------------------------------ bad requests, by name
def bad_cases():
    x = images(2)
    m = mask_of(2)
    return [
        ("strength_0", lambda s: s.edit(x, 0.0, 5), "strength must be in (0, 1]"),
        ("strength_1.5", lambda s: s.edit(x, 1.5, 5), "strength must be in (0, 1]"),
        ("strength_nan", lambda s: s.edit(x, float("nan"), 5), "strength must be in (0, 1]"),
        ("strength_str", lambda s: s.edit(x, "0.5", 5), "strength must be a number"),
        ("strength_vector", lambda s: s.edit(x, np.array([0.5, 0.5]), 5), "strength must be a number"),
        ("start_noise_shape", lambda s: s.edit(x, 0.5, 5, start_noise=x[:1]), "start_noise must have the shape of x_0"),
        ("edit_noise_steps", lambda s: s.edit(x, 0.5, 5, eta=0.5, start_noise=x, noise=np.zeros((4, 2, *SHAPE))),
         "noise must have shape"),
        ("edit_x_0_nan", lambda s: s.edit(np.full_like(x, np.nan), 0.5, 5), "x_0 contains NaN or Inf"),
        ("mask_shape", lambda s: s.inpaint(x, m[:1], 5), "mask must have the shape of x_0"),
        ("mask_channels", lambda s: s.inpaint(x, np.ones((2, 8, 8, 3)), 5), "mask must have the shape of x_0"),
        ("mask_half", lambda s: s.inpaint(x, np.where(m == 1, 0.5, 0.0), 5), "mask must hold only 0 (generate) and 1"),
        ("mask_nan", lambda s: s.inpaint(x, np.full_like(m, np.nan), 5), "mask contains NaN"),
        ("inpaint_x_0_inf", lambda s: s.inpaint(np.full_like(x, np.inf), m, 5), "x_0 contains NaN or Inf"),
        ("inpaint_x_T_shape", lambda s: s.inpaint(x, m, 5, x_T=x[0]), "x_T must have the shape of x_0"),
        ("inpaint_empty_noise", lambda s: s.inpaint(x, m, 5, noise=np.zeros((0, 2, *SHAPE))), "noise must have shape"),
        ("inpaint_eta", lambda s: s.inpaint(x, m, 5, eta=2.0), "eta must be in [0, 1]"),
    ]


BAD = bad_cases()


@pytest.mark.parametrize("backend", [0, 1], ids=["tf", "onnx"])
@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_a_bad_edit_or_inpaint_request_is_refused_by_name(samplers, backend, case):
    _, call, match = case
    with pytest.raises(ValueError) as error:
        call(samplers[backend])
    assert match in str(error.value)


# ------------------------------------------------------------------------------ the CLI
def png(path, image):
    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(image, np.uint8)))
    return str(path)


def read_png(path):
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()


def tiles(grid, count, size=8, scale=8, pad=1):
    """The ``count`` tiles of a one-row image_grid, shrunk back to ``size`` x ``size``."""
    step = size * scale + pad
    assert grid.shape[:2] == (size * scale + 2 * pad, count * step + pad), grid.shape
    return [grid[pad:pad + size * scale:scale, pad + i * step:pad + i * step + size * scale:scale] for i in range(count)]


def as_uint8(x):
    """What image_grid writes for [-1, 1] data."""
    return np.clip((np.asarray(x, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def digit_like():
    image = np.zeros((8, 8, 1), np.uint8)
    image[1:7, 3:5] = 255
    image[1:3, 2:6] = 180
    return image


def test_cli_edit_writes_the_input_and_n_results_in_a_row(uncond, samplers, tmp_path, capsys):
    image = digit_like()
    inp, out = png(tmp_path / "in.png", image), str(tmp_path / "out" / "edit.png")
    assert cli.main(["edit", "--model", uncond[2], "--input", inp, "--strength", "0.5", "--steps", "10", "--eta", "0.5",
                     "--seed", "3", "--n", "2", "--out", out]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    first, *results = tiles(read_png(out), 3)
    np.testing.assert_array_equal(first, image)
    x = image[None].astype(np.float32) / 127.5 - 1.0
    for i, got in enumerate(results):  # result i is the runtime's edit with seed + i
        np.testing.assert_array_equal(got, as_uint8(samplers[0].edit(x, 0.5, 10, eta=0.5, seed=3 + i)[0]))
    assert not np.array_equal(results[0], results[1])


def test_cli_inpaint_keeps_the_white_mask_pixels(uncond, samplers, tmp_path, capsys):
    image = digit_like()
    mask = np.full((8, 8, 1), 255, np.uint8)
    mask[:, 4:] = 0
    inp, msk, out = png(tmp_path / "in.png", image), png(tmp_path / "mask.png", mask), str(tmp_path / "inpaint.png")
    assert cli.main(["inpaint", "--model", uncond[2], "--input", inp, "--mask", msk, "--steps", "6",
                     "--backend", "onnx", "--out", out]) == 0
    assert "backend onnx" in capsys.readouterr().out
    first, result = tiles(read_png(out), 2)
    np.testing.assert_array_equal(first, image)
    keep = mask == 255
    np.testing.assert_array_equal(result[keep], image[keep])
    x = image[None].astype(np.float32) / 127.5 - 1.0
    want = samplers[1].inpaint(x, (mask == 255)[None].astype(np.float32), 6, seed=0)[0]
    np.testing.assert_array_equal(result, as_uint8(want))


def test_cli_edit_refuses_an_input_of_another_size(uncond, tmp_path, capsys):
    inp = png(tmp_path / "big.png", np.zeros((16, 8, 1)))
    out = tmp_path / "x.png"
    fails(capsys, ["edit", "--model", uncond[2], "--input", inp, "--strength", "0.5", "--steps", "3", "--out", str(out)],
          "tfddim edit: error:", "--input", "16x8", "8x8")
    assert not out.exists()
    fails(capsys, ["edit", "--model", uncond[2], "--input", inp, "--strength", "1.5", "--steps", "3", "--out", str(out)],
          "--strength", "(0, 1]")


def test_cli_inpaint_refuses_a_grey_mask(uncond, tmp_path, capsys):
    inp = png(tmp_path / "in.png", digit_like())
    mask = np.full((8, 8, 1), 255, np.uint8)
    mask[0, 0] = 128
    msk = png(tmp_path / "mask.png", mask)
    out = tmp_path / "x.png"
    fails(capsys, ["inpaint", "--model", uncond[2], "--input", inp, "--mask", msk, "--steps", "3", "--out", str(out)],
          "tfddim inpaint: error:", "--mask", "128")
    assert not out.exists()


def test_cli_sample_takes_low_res_for_a_super_resolution_export(sr, sr_samplers, tmp_path, capsys):
    low = np.zeros((4, 4, 1), np.uint8)
    low[1:3] = 255
    path = png(tmp_path / "low.png", low)
    fails(capsys, ["sample", "--model", sr[2], "--n", "2", "--steps", "3", "--out", str(tmp_path / "x.png")],
          "--low-res", "super-resolution", "4x4")
    fails(capsys, ["sample", "--model", sr[2], "--n", "2", "--steps", "3", "--low-res", png(tmp_path / "l8.png", np.zeros(
        (8, 8, 1))), "--out", str(tmp_path / "x.png")], "--low-res", "4x4")
    x_0 = {}
    for backend in ("tf", "onnx"):  # the sr fixture's ONNX folder has sample_with_noise (eta > 0), not sample_ode
        out = str(tmp_path / f"{backend}.png")
        assert cli.main(["sample", "--model", sr[2], "--backend", backend, "--n", "3", "--steps", "3", "--eta", "0.5",
                         "--low-res", path, "--npz", "--out", out]) == 0
        x_0[backend] = np.load(out[:-4] + ".npz")["x_0"]
    capsys.readouterr()
    assert gap(x_0["tf"], x_0["onnx"]) <= ONNX_TOLERANCE
    noise = np.stack([np.random.default_rng([0, i]).standard_normal((3, *SHAPE)) for i in range(3)], axis=1)
    x_T = sr_samplers[0].starting_noise(3, 0)
    lows = np.repeat(low[None].astype(np.float32) / 127.5 - 1.0, 3, axis=0)
    want = sr_samplers[0].sample_with_noise(x_T, 3, 0.5, noise.astype(np.float32), low_res=lows)
    assert gap(x_0["tf"], want) <= 1e-6
    fails(capsys, ["sample", "--model", SHIPPED, "--n", "1", "--steps", "2", "--low-res", path,
                   "--out", str(tmp_path / "y.png")], "--low-res", "not a super-resolution model")
