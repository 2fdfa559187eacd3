"""The export layout (tfddim.export.layout): the typed export.json round trip, errors naming the key,
the format-1 exports that ship in saved_models/, onnx.json, and no TensorFlow on import."""

import copy
import json
import os
import subprocess
import sys

import pytest

from tfddim.diffusion import schedules
from tfddim.diffusion.kinds import FinalAlpha, Prediction
from tfddim.diffusion.spacing import Spacing
from tfddim.export import layout
from tfddim.export.layout import ExportConditioning, ExportManifest, GuidanceKind

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
SHIPPED = {name: os.path.join(ROOT, "saved_models", name, "1") for name in ("digits", "digits_conditional")}
# the shipped models' manifests as they were in format 1 (before their re-export with input checks)
FORMAT1 = {name: os.path.join(ROOT, "tests", "data", "format1", name, "1") for name in SHIPPED}
SIGNATURES = {"encode": "ddim_inversion", "predict_x0": "network", "sample_dpmpp_2m": "dpmpp_2m",
              "sample_with_noise": "ddim", "serving_default": "ddim"}


@pytest.fixture
def schedule_config():
    return schedules.get("cosine", 20).to_config()


def a_manifest(schedule_config, **changes) -> ExportManifest:
    """A format-2 manifest of a classifier-free 3-class export (strings where a writer might pass them)."""
    values = dict(signatures=sorted(SIGNATURES, reverse=True), methods=SIGNATURES, spacing="trailing", clip_x0=[-1, 1],
                  final_alpha_cumprod="alpha_0", prediction_type="epsilon", learned_variance=False,
                  conditioning=ExportConditioning("classifier_free", 3, 3, True), data_shape=[8, 8, 1],
                  num_timesteps=20, schedule_sha256=layout.schedule_sha256(schedule_config), tfddim_version="0.1.0")
    return ExportManifest(**dict(values, **changes))


def test_the_manifest_parses_once_and_round_trips(tmp_path, schedule_config):
    m = a_manifest(schedule_config)
    assert m.spacing is Spacing.TRAILING and m.final_alpha_cumprod is FinalAlpha.ALPHA_0
    assert m.prediction_type is Prediction.EPSILON and m.conditioning.kind is GuidanceKind.CLASSIFIER_FREE
    assert m.signatures == tuple(sorted(SIGNATURES)) and m.clip_x0 == (-1.0, 1.0) and m.data_shape == (8, 8, 1)
    assert m.format_version == layout.FORMAT_VERSION == 2 and m.num_classes == 3
    files = layout.ExportLayout(str(tmp_path))
    layout.write_export_assets(files, m, model_config={"class_name": "UNet", "config": {}}, schedule_config=schedule_config,
                               metadata={"steps": 1})
    assert layout.read_manifest(str(tmp_path)) == m == ExportManifest.from_json(json.loads(json.dumps(m.to_json())))
    written = json.load(open(files.export_json))
    assert written["methods"]["encode"] == "ddim_inversion" and written["spacing"] == "trailing"
    assert written["conditioning"] == {"kind": "classifier_free", "num_classes": 3, "null_label": 3, "network_conditional": True}
    assert layout.read_schedule_config(files) == schedule_config and os.path.exists(files.metadata_json)
    assert not os.path.exists(files.classifier_config_json)


@pytest.mark.parametrize("key, value, match", [
    ("spacing", "leading", "export.json: spacing"),  # every Spacing member now has a graph version
    ("spacing", "bogus", "export.json: spacing: unknown spacing"),
    ("final_alpha_cumprod", "two", "export.json: final_alpha_cumprod"),
    ("prediction_type", "noise", "export.json: prediction_type"),
    ("clip_x0", [1, -1], "export.json: clip_x0"),
    ("data_shape", [0, 8], "export.json: data_shape"),
    ("learned_variance", "no", "export.json: learned_variance"),
    ("num_timesteps", 0, "export.json: num_timesteps"),
    ("methods", {"encode": "ddim_inversion"}, "export.json: methods"),
    ("methods", dict(SIGNATURES, encode="DDIM inversion (prose)"), "export.json: methods"),
    ("conditioning", {"kind": "text", "num_classes": 3, "null_label": 3, "network_conditional": True},
     "export.json: conditioning.kind"),
    ("conditioning", {"kind": None, "num_classes": 3, "null_label": None, "network_conditional": False},
     "export.json: conditioning"),
    ("num_classes", 4, "export.json: num_classes"),
    ("schedule_sha256", "abc", "export.json: schedule_sha256"),
    ("tfddim_version", 1, "export.json: tfddim_version"),
    ("format_version", 3, "export.json: format_version: 3 is newer"),
])
def test_a_wrong_value_names_its_key(schedule_config, key, value, match):
    data = a_manifest(schedule_config).to_json()
    data[key] = value
    with pytest.raises(ValueError, match=match):
        ExportManifest.from_json(data)


def test_a_missing_key_and_a_changed_schedule_are_named(tmp_path, schedule_config):
    data = a_manifest(schedule_config).to_json()
    del data["methods"]
    with pytest.raises(ValueError, match="export.json: methods: is missing"):
        ExportManifest.from_json(data)
    files = layout.ExportLayout(str(tmp_path))
    layout.write_export_assets(files, a_manifest(schedule_config), {"class_name": "UNet", "config": {}}, schedule_config)
    layout.write_json(files.schedule_json, schedules.get("linear", 20).to_config())
    with pytest.raises(ValueError, match="export.json: schedule_sha256: does not match"):
        layout.read_manifest(files)
    with pytest.raises(ValueError, match="export.json is missing"):
        layout.read_manifest(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="export.json: schedule_sha256"):  # the writer checks what it writes
        layout.write_export_assets(files, a_manifest(schedule_config), {}, schedules.get("linear", 20).to_config())


@pytest.mark.parametrize("name, conditioning", [
    ("digits", ExportConditioning()),
    ("digits_conditional", ExportConditioning(GuidanceKind.CLASSIFIER_FREE, 10, 10, True)),
])
def test_the_format_1_exports_read_into_the_typed_manifest(name, conditioning):
    raw = json.load(open(layout.ExportLayout(FORMAT1[name]).export_json))
    assert "format_version" not in raw and isinstance(raw["method"], str)  # format 1, prose method/guidance
    m = layout.read_manifest(FORMAT1[name])
    assert m.format_version == 1 and m.tfddim_version is None
    assert m.conditioning == conditioning and m.num_classes == raw["num_classes"]
    assert m.methods == SIGNATURES and m.signatures == tuple(sorted(SIGNATURES))
    assert (m.spacing, m.clip_x0, m.final_alpha_cumprod) == (Spacing.UNIFORM, (-1.0, 1.0), FinalAlpha.ONE)
    assert m.prediction_type is Prediction.EPSILON and m.learned_variance is False
    assert m.data_shape == (8, 8, 1) and m.num_timesteps == 1000
    assert m.schedule_sha256 == layout.schedule_sha256(layout.read_schedule_config(FORMAT1[name]))
    # onnx/onnx.json (tfddim-onnx/1) embeds the same format-1 export.json; it reads alone, without schedule.json
    for path in (FORMAT1[name], layout.ExportLayout(FORMAT1[name]).onnx_dir):
        onnx = layout.read_onnx_manifest(path)
        assert onnx.format == "tfddim-onnx/1" and onnx.opset == 17 and onnx.num_timesteps == 1000
        assert onnx.export == ExportManifest(**{**vars(m), "schedule_sha256": None})
        assert {g.file for g in onnx.graphs.values()} == {f"{s}.onnx" for s in ("encode", "sample_dpmpp_2m", "sample_with_noise")}
    # written again, it is format 2; read back, the same manifest but for where it came from
    upgraded = m.to_json()
    assert upgraded["format_version"] == 2 and upgraded["conditioning"] == conditioning.to_json()
    assert ExportManifest.from_json(upgraded) == ExportManifest(**{**vars(m), "format_version": 2})


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_exports_are_format_2_with_a_maximum_batch(name):
    m = layout.read_manifest(SHIPPED[name])
    assert m.format_version == 2 and m.max_batch == 4096
    # re-exported with tools/reexport_shipped.py: every signature of this version (the same weights)
    assert m.methods == dict(SIGNATURES, sample_ode="ode", sample_ddpm="ddpm", sample_trajectory="ddim", edit="ddim",
                             edit_with_noise="ddim", inpaint="ddim", inpaint_with_noise="ddim")
    assert m.data_shape == (8, 8, 1) and m.ddpm_variances == ("fixed_small", "fixed_large")
    assert m.ode_methods == ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc") and "time_quadratic" in m.ode_spacings


def test_format_1_classifier_guidance_and_unknown_prose(schedule_config):
    old = {"spacing": "uniform", "clip_x0": None, "final_alpha_cumprod": "one", "data_shape": [8, 8, 1], "num_classes": 10,
           "guidance": "classifier (noise-aware classifier bundled; guidance_scale = s)", "method": "ddim (...)",
           "signatures": sorted(SIGNATURES)}
    m = ExportManifest.from_json(old, num_timesteps=50, network_config={"num_classes": None, "learned_variance": True})
    assert m.conditioning == ExportConditioning(GuidanceKind.CLASSIFIER, 10, None, False) and m.learned_variance
    with pytest.raises(ValueError, match="export.json: guidance: unknown format-1 guidance"):
        ExportManifest.from_json(dict(old, guidance="something else"), num_timesteps=50)
    with pytest.raises(ValueError, match="export.json: num_timesteps"):
        ExportManifest.from_json(old)
    with pytest.raises(ValueError, match="export.json: signatures"):
        ExportManifest.from_json(dict(old, signatures=["sample_unipc"]), num_timesteps=50)


def test_onnx_manifest_round_trip(tmp_path, schedule_config):
    graph = layout.OnnxGraph(file="encode.onnx", inputs=({"name": "x_0", "dtype": "float32", "shape": [None, 8, 8, 1]},),
                             outputs=({"name": "x_T", "dtype": "float32", "shape": [None, 8, 8, 1]},))
    manifest = layout.OnnxManifest(opset=17, converter="tf2onnx x, onnx y", num_timesteps=20,
                                   export=a_manifest(schedule_config), graphs={"encode": graph})
    layout.write_onnx_manifest(str(tmp_path), manifest)
    assert layout.read_onnx_manifest(str(tmp_path)) == manifest
    data = copy.deepcopy(manifest.to_json())
    data["num_timesteps"] = 21
    with pytest.raises(ValueError, match="onnx/onnx.json: num_timesteps"):
        layout.OnnxManifest.from_json(data)
    with pytest.raises(ValueError, match="tfddim export --onnx"):
        layout.read_onnx_manifest(str(tmp_path / "none"))


def test_layout_imports_without_tensorflow():
    code = "import sys, tfddim.export.layout; assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]


def test_export_options_parse_the_spacing_once():
    from tfddim import export  # TensorFlow (saved_model), imported on first use of the name

    assert export.ExportOptions(spacing="linspace").spacing is Spacing.LINSPACE
    assert export.ExportOptions().final_alpha_cumprod is FinalAlpha.ONE
    assert export.ExportOptions(spacing="quad").spacing is Spacing.QUAD  # every named spacing has a graph version
    for bad in ("ddim10", "10,20"):
        with pytest.raises(ValueError, match="spacing"):
            export.ExportOptions(spacing=bad)
