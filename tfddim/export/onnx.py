"""Convert an exported SavedModel's sampling loops to ONNX graphs (tf2onnx, opset 17+).

``export_onnx(version_dir)`` writes ``<version_dir>/onnx/``:

- ``sample_with_noise.onnx``: inputs ``x_T`` [B,H,W,C] f32, ``num_steps`` i32,
  ``eta`` f32, ``noise`` [S,B,H,W,C] f32 (+ ``labels`` [B] i32,
  ``guidance_scale`` f32); output ``x_0``. For η = 0 the noise is never used:
  pass an *empty* ``noise`` of shape ``[0, B, H, W, C]`` (it stands for zeros).
- ``sample_ode.onnx``: ``x_T``, ``num_steps``, ``method`` i32, ``spacing`` i32 (+ labels, guidance_scale)
  → ``x_0``: every deterministic solver and graph spacing, picked by index (``export.json``'s
  ``ode_methods`` and ``ode_spacings``); the solvers are nested ``If`` nodes.
- ``sample_ddpm.onnx``: ``x_T``, ``num_steps``, ``variance`` i32, ``noise`` [S,B,H,W,C] (+ labels,
  guidance_scale) → ``x_0``: improved DDPM's strided ancestral sampler (``export.json``'s ``ddpm_variances``).
- ``sample_trajectory.onnx``: the inputs of ``sample_with_noise`` → ``x_0``, ``x_steps`` and ``x0_steps``
  ([S,B,H,W,C] each: x after each step and the jumping prediction x̂₀ at each step).
- ``encode.onnx``: ``x_0``, ``num_steps`` (+ labels, guidance_scale) → ``x_T``.
- ``decode.onnx`` (latent exports, :mod:`tfddim.export.latent`): ``z_0`` [B,h,w,c] → ``x_0`` [B,H,W,C]; the other
  graphs of a latent export take latent ``x_T`` and ``noise`` and return pixels ``x_0`` and latents ``z_0``.
- the ONNX manifest (:class:`tfddim.export.layout.OnnxManifest`, which writes and reads it):
  input/output names, dtypes and shapes, the opset, converter versions and the
  SavedModel's manifest (spacing, clipping, T, ...).

The conversion starts from the SavedModel (``tf2onnx.tf_loader.from_saved_model``),
the path tf2onnx supports for loops that read variables. The converted loops'
network weights are then taken out of the ``Loop`` state
(:func:`tfddim.export.onnx_loops.hoist_loop_invariants`), so ONNX Runtime optimises the
network inside the loop as it does a bare forward graph. Two things differ from
the SavedModel, and :class:`tfddim.runtime.OnnxSampler` covers both in Python:

- tf2onnx drops ``tf.debugging`` assertions, so the graph does not check its inputs;
- the graph has no random-number op (tf2onnx cannot convert TF's stateless RNG):
  noise for η > 0 is always an input.

Classifier-guided exports convert too: the gradient ∇ₓ log p(y|x_t) inside the loop brings TF gradient ops
that tf2onnx 1.17 has no handlers for, and :mod:`tfddim.export.onnx_gradients` registers them. A conversion
that leaves any TensorFlow op in the graph is refused (``ValueError`` naming the ops).

TensorFlow lower-cases function argument names in the graph (``x_T`` → ``x_t``);
the ONNX inputs are renamed back to the signature's keys.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np

from tfddim.export import layout, onnx_loops

__all__ = ["ONNX_SIGNATURES", "DEFAULT_OPSET", "export_onnx", "convert_signature", "onnx_output_name"]

# sample_dpmpp_2m has no ONNX graph of its own any more: sample_ode runs it (method dpmpp_2m), and each
# converted loop costs about a minute of tf2onnx on the digits network.
ONNX_SIGNATURES = ("sample_with_noise", "sample_ode", "sample_ddpm", "sample_trajectory", "encode", "edit_with_noise",
                   "inpaint_with_noise", "decode")
DEFAULT_OPSET = 17


def _require():
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as e:
        raise ValueError(
            "ONNX export needs tf2onnx and onnx: pip install 'tfddim[onnx]' (or pip install tf2onnx onnxruntime)"
        ) from e


def convert_signature(saved_model_dir: str, signature: str, opset: int = DEFAULT_OPSET, loaded=None):
    """One SavedModel signature → an ``onnx.ModelProto`` whose input/output names are the signature's keys.

    The SavedModel must not compile its network with XLA (``ExportOptions.xla``): tf2onnx does not inline a
    ``jit_compile`` function (measured: ``StatefulPartitionedCall`` unsupported, the convolutions' kernel
    shapes lost). :func:`tfddim.export.export_saved_model` converts an XLA export from an uncompiled twin.
    """
    _require()
    import tensorflow as tf
    from tf2onnx import convert, tf_loader

    from tfddim.export import onnx_gradients  # noqa: F401  (registers tf2onnx handlers for TF's gradient ops)

    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    graph_def, inputs, outputs, _, renames = tf_loader.from_saved_model(
        saved_model_dir, None, None, "serve", [signature], None, False,
        return_initialized_tables=True, return_tensors_to_rename=True)
    # ``loaded``: the same SavedModel already loaded (each load keeps its functions in the process: load once)
    loaded = tf.saved_model.load(saved_model_dir) if loaded is None else loaded
    keys = loaded.signatures[signature].structured_input_signature[1]
    for key in keys:  # the graph's placeholders carry lower-cased names
        if f"{key.lower()}:0" in renames:
            renames[f"{key.lower()}:0"] = key
    for tensor, name in list(renames.items()):  # an ONNX graph cannot name an input and an output alike
        if name in keys and tensor != f"{name.lower()}:0":
            renames[tensor] = onnx_output_name(name, keys)
    # The SavedModel declares its inputs with unknown shapes (its graph checks them); tf2onnx would take such a
    # placeholder for a scalar, so it is given the shape each input must have.
    manifest = layout.read_manifest(saved_model_dir)
    shapes = {f"{key.lower()}:0": manifest.input_shape(key) for key in keys}
    model, _ = convert.from_graph_def(graph_def, name=signature, input_names=inputs, output_names=outputs,
                                      opset=opset, tensors_to_rename=renames,
                                      shape_override={name: shape for name, shape in shapes.items() if name in inputs})
    left = _unconverted_ops(model.graph)
    if left:  # tf2onnx logs a failed node and keeps the TF op; ONNX Runtime would refuse the file later
        raise ValueError(f"ONNX export of {signature}: tf2onnx left TensorFlow ops it could not convert: "
                         f"{', '.join(sorted(left))}")
    return model


def onnx_output_name(name: str, inputs) -> str:
    """The ONNX name of a signature output: its own, or ``<name>_out`` when an input has that name
    (``edit_with_noise`` and ``inpaint_with_noise`` take ``x_0`` and return ``x_0``)."""
    return f"{name}_out" if name in inputs else name


def _unconverted_ops(graph) -> set:
    """Op types in ``graph`` and its subgraphs that no ONNX operator set defines (TF ops tf2onnx kept)."""
    import onnx

    left = set()
    for node in graph.node:
        if not onnx.defs.has(node.op_type, node.domain or ""):
            left.add(node.op_type)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                left |= _unconverted_ops(sub)
    return left


def _describe(model, signature: str) -> layout.OnnxGraph:
    import onnx

    def entry(value):
        t = value.type.tensor_type
        dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
        return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}

    return layout.OnnxGraph(file=layout.onnx_graph_file(signature), inputs=tuple(entry(v) for v in model.graph.input),
                            outputs=tuple(entry(v) for v in model.graph.output))


def export_onnx(version_dir: str, opset: int = DEFAULT_OPSET, source_dir: str = None,
                signatures: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Write ``version_dir/onnx/`` (see the module docstring); return ``{signature: path}``.

    ``source_dir``: the SavedModel to convert (default ``version_dir``): the same weights and signatures
    without XLA when ``version_dir`` compiles its network (see :func:`convert_signature`).
    ``signatures``: the graphs to write, of :data:`ONNX_SIGNATURES` (default: all the export has).
    """
    if signatures is not None:
        unknown = sorted(set(signatures) - set(ONNX_SIGNATURES))
        if unknown or not signatures:
            raise ValueError(f"onnx signatures must be a non-empty subset of {list(ONNX_SIGNATURES)}, got {list(signatures)}")
    _require()
    import onnx
    import tf2onnx

    files = layout.ExportLayout(version_dir)
    export = layout.read_manifest(version_dir)
    info = json.dumps(export.to_json(), sort_keys=True)
    os.makedirs(files.onnx_dir, exist_ok=True)
    paths, graphs = {}, {}
    wanted = ONNX_SIGNATURES if signatures is None else tuple(signatures)
    source = version_dir if source_dir is None else source_dir
    loaded = None
    for signature in (name for name in ONNX_SIGNATURES if name in export.signatures and name in wanted):  # older exports lack some
        if loaded is None:
            import tensorflow as tf

            loaded = tf.saved_model.load(source)
        model = convert_signature(source, signature, opset, loaded=loaded)
        onnx_loops.hoist_loop_invariants(model)  # the weights leave the loop state (see tfddim.export.onnx_loops)
        onnx.helper.set_model_props(model, {"tfddim.signature": signature, "tfddim.export": info,
                                            "tfddim.num_timesteps": str(export.num_timesteps)})
        onnx.checker.check_model(model)
        paths[signature] = files.onnx_graph(signature)
        onnx.save(model, paths[signature])
        graphs[signature] = _describe(model, signature)
    layout.write_onnx_manifest(files, layout.OnnxManifest(
        opset=opset, converter=f"tf2onnx {tf2onnx.__version__}, onnx {onnx.__version__}",
        num_timesteps=export.num_timesteps, export=export, graphs=graphs))
    return paths


def check_onnx(version_dir: str, loaded_saved_model, data_shape, num_classes) -> float:
    """Run the ONNX graphs and the SavedModel on one small input; return the largest (scaled) difference."""
    import onnxruntime as ort

    manifest = layout.read_manifest(version_dir)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *data_shape)).astype(np.float32)
    pixels = np.tanh(x) if manifest.latent is None else rng.uniform(-1, 1, (2, *manifest.pixel_shape)).astype(np.float32)
    noise = rng.standard_normal((2, 2, *data_shape)).astype(np.float32)
    cond = {} if num_classes is None else {"labels": np.zeros([2], np.int32), "guidance_scale": np.float32(1.0)}
    if manifest.low_res_shape is not None:
        cond["low_res"] = rng.uniform(-1, 1, (2, *manifest.low_res_shape)).astype(np.float32)
    mask = (rng.uniform(size=pixels.shape) < 0.5).astype(np.float32)
    feeds = {
        "sample_with_noise": dict(x_T=x, num_steps=np.int32(2), eta=np.float32(0.5), noise=noise, **cond),
        # Every candidate solver's update runs at every step whatever `method` picks (solvers/select.py), so one
        # pick checks the converted ops of all. The export's own spacing, as the other graphs: a spacing that
        # starts at t = T-1 of the cosine schedule makes an epsilon network's x0 = (x - sqrt(1-a)·eps)/sqrt(a)
        # amplify float32 rounding by 1/sqrt(a_{T-1}) ~ 1e3 (measured 6e-4 between the runtimes on the digits
        # model, 2e-6 from its own spacing): that is float32 arithmetic, not the conversion.
        "sample_ode": dict(x_T=x, num_steps=np.int32(4), method=np.int32(manifest.ode_methods.index("dpmpp_2m")),
                           spacing=np.int32(manifest.ode_spacings.index(manifest.spacing.value)), **cond),
        "sample_ddpm": dict(x_T=x, num_steps=np.int32(2), variance=np.int32(len(manifest.ddpm_variances or ()) - 1),
                            noise=noise, **cond),
        "sample_trajectory": dict(x_T=x, num_steps=np.int32(2), eta=np.float32(0.5), noise=noise, **cond),
        "encode": dict(x_0=x if manifest.latent is None else pixels, num_steps=np.int32(2), **cond),
        "edit_with_noise": dict(x_0=pixels, strength=np.float32(0.7), num_steps=np.int32(3), eta=np.float32(0.5),
                                start_noise=x, noise=rng.standard_normal((3, 2, *data_shape)).astype(np.float32), **cond),
        "inpaint_with_noise": dict(x_0=pixels, mask=mask, num_steps=np.int32(2), eta=np.float32(0.5), x_T=x,
                                   noise=noise, **cond),
        "decode": dict(z_0=x),
    }
    worst = 0.0
    written = layout.read_onnx_manifest(version_dir).graphs
    for signature, feed in feeds.items():
        if signature not in written:
            continue
        session = ort.InferenceSession(layout.ExportLayout(version_dir).onnx_graph(signature),
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        outputs = session.run(names, {k: np.asarray(v) for k, v in feed.items()})  # ORT takes arrays, not numpy scalars
        expected = loaded_saved_model.signatures[signature](**feed)
        for name, got in zip(names, outputs):
            want = expected[name[:-4] if name.endswith("_out") and name[:-4] in feed else name].numpy()
            # in data units, relative to the output's scale when that exceeds the data range
            # (an unclipped x̂₀ of an untrained net can reach 1e3, where one float32 ulp is ~1e-4)
            gap = float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))
            worst = max(worst, gap if np.isfinite(gap) else np.inf)  # NaN must fail the check, not vanish in max()
    return worst
