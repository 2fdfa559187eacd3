"""tf2onnx handlers for the TensorFlow gradient ops of classifier guidance.

Why this module exists. A classifier-guided sampling loop computes ∇ₓ log p(y | x_t) with
``tf.GradientTape`` inside its ``tf.while_loop`` (:meth:`tfddim.sampling.Sampler._denoise`), so the
exported SavedModel's loop body holds the *gradient* graph of the classifier. TensorFlow builds that
graph from internal gradient ops that tf2onnx 1.17 has no handlers for. Measured on a tiny guided export:
``BroadcastGradientArgs`` (42), ``RsqrtGrad`` (13), ``ShapeN`` (12), ``StridedSliceGrad`` (4),
``AvgPoolGrad`` (2), ``ConcatOffset`` (1). Where every shape is static TensorFlow can fold the shape
arithmetic into constants; inside the loop the batch size is dynamic, so these ops stay in the graph.

Importing this module registers one handler per op with tf2onnx's registry
(:class:`tf2onnx.handler.tf_op`, the decorator of tf2onnx's own handlers in
``tf2onnx/onnx_opset/*.py``). :func:`tfddim.export.onnx.convert_signature` imports it before it
converts, so it is only imported when tf2onnx is installed.

How the registry resolves names. ``tf_op`` stores, per domain, one dict per opset version mapping an op
name to its handler; ``tf_op.create_mapping`` (run at every conversion) walks the versions upwards, so the
handler of the highest version <= the target opset wins, and a second registration at the same version
replaces the first. None of the op names below has a tf2onnx handler, so nothing is overridden:
the registration is purely additive.

The other gradient ops of the loop (``Conv2DBackpropInput`` with a computed ``input_sizes``, ``Sum`` over
the computed axes of ``BroadcastGradientArgs``, which may be empty) already convert with tf2onnx's own
handlers at opset >= 13: its ``Sum`` handler sets ``noop_with_empty_axes=1``, so an empty axes list is
TensorFlow's identity, not ONNX's reduce-all.

Every handler's docstring gives the TensorFlow op's definition; the handlers build it from standard
ONNX ops (opset >= 11; :data:`tfddim.export.onnx.DEFAULT_OPSET` is 17) and work on dynamic shapes.
A handler that refuses a case (only ``AvgPoolGrad`` does: overlapping or padded windows) raises
``ValueError`` naming the node; tf2onnx's Python API converts with ``continue_on_error=True``, so that
error is logged and the TF op stays in the graph, which ONNX Runtime then refuses to load.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from tf2onnx import utils
from tf2onnx.graph_builder import GraphBuilder
from tf2onnx.handler import tf_op

__all__ = ["ShapeN", "RsqrtGrad", "BroadcastGradientArgs", "ConcatOffset", "AvgPoolGrad", "StridedSliceGrad"]

# pylint: disable=unused-argument


# ----------------------------------------------------------------------------- helpers
def _np_dtype(ctx, name):
    return utils.map_onnx_to_numpy_type(ctx.get_dtype(name))


def _const(ctx, base, value, dtype):
    return ctx.make_const(utils.make_name(base), np.asarray(value, dtype=dtype)).output[0]


def _op(ctx, op_type, inputs, base, **attr):
    """One new ONNX node, named after ``base``; its first output."""
    return ctx.make_node(op_type, list(inputs), attr=attr, name=utils.make_name(f"{base}_{op_type}")).output[0]


def _int_attr(node, name):
    attr = node.get_attr(name)
    return int(attr.i) if attr is not None else 0


def _ints_attr(node, name):
    attr = node.get_attr(name)
    return [int(v) for v in attr.ints] if attr is not None else None


def _str_attr(node, name, default):
    attr = node.get_attr(name)
    if attr is None:
        return default
    value = attr.s
    return value.decode() if isinstance(value, bytes) else str(value)


def _replace(ctx, node):
    """Remove ``node``; return its outputs with their shapes and dtypes (to give to the nodes replacing it)."""
    outputs = list(node.output)
    shapes = [ctx.get_shape(o) for o in outputs]
    dtypes = [ctx.get_dtype(o) for o in outputs]
    ctx.remove_node(node.name)
    return outputs, shapes, dtypes


def _finish(ctx, op_type, inputs, output, shape, dtype, base, **attr):
    """The node that writes the replaced op's ``output`` (same name, shape and dtype)."""
    ctx.make_node(op_type, list(inputs), attr=attr, outputs=[output], name=utils.make_name(base),
                  shapes=[shape], dtypes=[dtype])


def _static_length(ctx, name):
    """The static length of the 1-D tensor ``name``, or None."""
    shape = ctx.get_shape(name)
    if shape is None or len(shape) != 1 or not isinstance(shape[0], (int, np.integer)) or shape[0] < 0:
        return None
    return int(shape[0])


# ----------------------------------------------------------------------------- handlers
@tf_op("ShapeN")
class ShapeN:
    """``ShapeN(input_0, ..., input_{N-1}; out_type) -> (shape_0, ..., shape_{N-1})``.

    ``shape_i = Shape(input_i)`` as ``out_type`` (int32 or int64). TensorFlow's convolution gradients read the
    shapes of the input and the kernel with it (``tf.nn.conv2d``'s registered gradient).
    """

    @classmethod
    def version_1(cls, ctx, node, **kwargs):
        inputs = list(node.input)
        outputs, shapes, dtypes = _replace(ctx, node)
        for inp, out, shape, dtype in zip(inputs, outputs, shapes, dtypes):
            if dtype == TensorProto.INT64:
                _finish(ctx, "Shape", [inp], out, shape, dtype, node.name)
            else:
                _finish(ctx, "Cast", [_op(ctx, "Shape", [inp], node.name)], out, shape, dtype, node.name, to=dtype)


@tf_op("RsqrtGrad")
class RsqrtGrad:
    """``RsqrtGrad(y, dy) = dy · (-0.5) · y³``: the gradient of ``y = rsqrt(x)`` with respect to x.

    As TensorFlow's kernel (``scalar_rsqrt_gradient_op``, packet path): ``mul_no_nan(-0.5·y·y, mul_no_nan(y, dy))``
    where ``mul_no_nan(a, b)`` is 0 where b is 0, so a zero ``dy`` gives 0 even where y is infinite.
    """

    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        y, dy = node.input[0], node.input[1]
        dtype = _np_dtype(ctx, node.output[0])
        outputs, shapes, dtypes = _replace(ctx, node)
        zero = _const(ctx, "zero", 0.0, dtype)

        def mul_no_nan(a, b):
            return _op(ctx, "Where", [_op(ctx, "Equal", [b, zero], node.name), zero,
                                      _op(ctx, "Mul", [a, b], node.name)], node.name)

        y_dy = mul_no_nan(y, dy)
        half_y2 = _op(ctx, "Mul", [_const(ctx, "minus_half", -0.5, dtype), _op(ctx, "Mul", [y, y], node.name)],
                      node.name)
        product = _op(ctx, "Mul", [half_y2, y_dy], node.name)
        is_zero = _op(ctx, "Equal", [y_dy, zero], node.name)
        _finish(ctx, "Where", [is_zero, zero, product], outputs[0], shapes[0], dtypes[0], node.name)


@tf_op("BroadcastGradientArgs")
class BroadcastGradientArgs:
    """``BroadcastGradientArgs(s0, s1) -> (r0, r1)``: the axes to sum a broadcast gradient over.

    For ``z = f(x, y)`` with broadcasting (shapes s0 of x, s1 of y), TensorFlow's gradients take
    ``dx = Reshape(Sum(dz, r0), s0)`` and ``dy = Reshape(Sum(dz, r1), s1)``. Here, with both shapes padded
    on the left with 1s to the common rank, ``r_i`` = the axes j where ``padded_s_i[j] == 1``.

    TensorFlow leaves out the axes where *every* padded shape is 1 (when the output is not empty); this
    handler keeps them. There the gradient's dimension is also 1, so summing over it changes nothing:
    the gradients are identical. Output dtype = the input dtype (int32 or int64).
    """

    @classmethod
    def version_11(cls, ctx, node, **kwargs):
        shapes_in = [node.input[0], node.input[1]]
        dtype = _np_dtype(ctx, shapes_in[0])
        outputs, shapes, dtypes = _replace(ctx, node)
        lengths = [_static_length(ctx, s) for s in shapes_in]
        one = _const(ctx, "one", [1], dtype)
        if None not in lengths:
            rank = max(lengths)
            padded = [s if n == rank else _op(ctx, "Concat", [_const(ctx, "ones", [1] * (rank - n), dtype), s],
                                              node.name, axis=0)
                      for s, n in zip(shapes_in, lengths)]
        else:  # ranks known only at run time: pad with ConstantOfShape-like Expand of 1s
            dyn = [_op(ctx, "Shape", [s], node.name) for s in shapes_in]
            rank = _op(ctx, "Max", dyn, node.name)
            padded = [_op(ctx, "Concat", [_op(ctx, "Expand", [one, _op(ctx, "Sub", [rank, n], node.name)], node.name),
                                          s], node.name, axis=0)
                      for s, n in zip(shapes_in, dyn)]
        flat = _const(ctx, "flat", [-1], np.int64)
        for p, out, shape, out_dtype in zip(padded, outputs, shapes, dtypes):
            where_one = _op(ctx, "NonZero", [_op(ctx, "Equal", [p, one], node.name)], node.name)  # [1, k] int64
            axes = _op(ctx, "Reshape", [where_one, flat], node.name)
            if out_dtype == TensorProto.INT64:
                _finish(ctx, "Identity", [axes], out, [-1], out_dtype, node.name)
            else:
                _finish(ctx, "Cast", [axes], out, [-1], out_dtype, node.name, to=out_dtype)


@tf_op("ConcatOffset")
class ConcatOffset:
    """``ConcatOffset(concat_dim, shape_0, ..., shape_{N-1}) -> (offset_0, ..., offset_{N-1})``.

    Where each input of ``Concat(values, axis=concat_dim)`` starts in the output (ConcatV2's gradient slices
    it with these): ``offset_i`` is a zero vector of the rank's length with, at ``concat_dim``
    (negative: counted from the end), ``sum(shape_k[concat_dim] for k < i)``.
    """

    @classmethod
    def version_11(cls, ctx, node, **kwargs):
        axis_in, shapes_in = node.input[0], list(node.input[1:])
        dtype = _np_dtype(ctx, shapes_in[0])
        outputs, shapes, dtypes = _replace(ctx, node)
        rank = _static_length(ctx, shapes_in[0])
        if ctx.is_const(axis_in) and rank is not None:
            axis = int(ctx.get_tensor_value(axis_in))
            axis = axis + rank if axis < 0 else axis
            utils.make_sure(0 <= axis < rank, "ConcatOffset %s: concat_dim %s out of range for rank %s",
                            node.name, axis, rank)
            mask = _const(ctx, "axis_mask", np.arange(rank) == axis, dtype)
            index = _const(ctx, "axis", [axis], np.int64)
        else:
            rank_t = _op(ctx, "Cast", [_op(ctx, "Shape", [shapes_in[0]], node.name)], node.name,
                         to=TensorProto.INT64)
            axis_t = _op(ctx, "Reshape", [_op(ctx, "Cast", [axis_in], node.name, to=TensorProto.INT64),
                                          _const(ctx, "one_elem", [1], np.int64)], node.name)
            axis_t = _op(ctx, "Mod", [axis_t, rank_t], node.name, fmod=0)  # fmod=0: the divisor's sign, so >= 0
            positions = _op(ctx, "Range", [_const(ctx, "start", 0, np.int64),
                                           GraphBuilder(ctx).make_squeeze({"data": rank_t, "axes": [0]}),
                                           _const(ctx, "delta", 1, np.int64)], node.name)
            mask = _op(ctx, "Cast", [_op(ctx, "Equal", [positions, axis_t], node.name)], node.name,
                       to=ctx.get_dtype(shapes_in[0]))
            index = axis_t
        total = _const(ctx, "zero", [0], dtype)
        for i, (out, shape, out_dtype) in enumerate(zip(outputs, shapes, dtypes)):
            _finish(ctx, "Mul", [mask, total], out, shape, out_dtype, node.name)
            if i + 1 < len(outputs):
                total = _op(ctx, "Add", [total, _op(ctx, "Gather", [shapes_in[i], index], node.name, axis=0)],
                            node.name)


@tf_op("AvgPoolGrad")
class AvgPoolGrad:
    """``AvgPoolGrad(orig_input_shape, grad; ksize, strides, padding, data_format)``: the gradient of ``AvgPool``.

    Each value of ``grad`` (the gradient at one pooling window's output) is spread evenly over its window:
    ``grad · (1 / (kh·kw))`` (TensorFlow's kernel multiplies by the reciprocal) added to every input pixel of
    the window; pixels in no window get 0. Supported: windows that tile the input without overlap or
    padding (``ksize == strides``, ``padding="VALID"``), NHWC or NCHW, which covers ADM's 2x2 average-pool
    downsampling. Any other case raises ``ValueError`` naming the node.
    """

    @classmethod
    def version_11(cls, ctx, node, **kwargs):
        ksize, strides = _ints_attr(node, "ksize"), _ints_attr(node, "strides")
        padding, data_format = _str_attr(node, "padding", "VALID"), _str_attr(node, "data_format", "NHWC")
        spatial = [1, 2] if data_format == "NHWC" else [2, 3]
        if (data_format not in ("NHWC", "NCHW") or padding != "VALID" or ksize != strides or len(ksize) != 4
                or any(ksize[a] != 1 for a in range(4) if a not in spatial)):
            raise ValueError(f"AvgPoolGrad {node.name}: only non-overlapping windows are supported (ksize == strides, "
                             f"padding VALID, NHWC/NCHW, no pooling over batch or channels); got ksize={ksize}, "
                             f"strides={strides}, padding={padding}, data_format={data_format}")
        orig_shape, grad = node.input[0], node.input[1]
        dtype = _np_dtype(ctx, grad)
        out_shape_static = ctx.get_shape(node.output[0])
        grad_shape_static = ctx.get_shape(grad)
        outputs, shapes, dtypes = _replace(ctx, node)
        scale = np.ones(4, np.int64)
        scale[spatial] = [ksize[a] for a in spatial]
        window = int(np.prod(scale))
        g = _op(ctx, "Mul", [grad, _const(ctx, "inv_window", 1.0 / window, dtype)], node.name)
        # [.., Ho, .., Wo, ..] -> [.., Ho, kh, .., Wo, kw, ..] (Expand of a size-1 axis after each)
        # -> [.., Ho·kh, .., Wo·kw, ..]
        g_shape = _op(ctx, "Shape", [grad], node.name)
        inserted = [spatial[0] + 1, spatial[1] + 2]
        g = GraphBuilder(ctx).make_unsqueeze({"data": g, "axes": inserted})
        pieces = []
        for a in range(4):
            pieces.append(GraphBuilder(ctx).make_slice({"data": g_shape, "starts": [a], "ends": [a + 1], "axes": [0]}))
            if a in spatial:
                pieces.append(_const(ctx, "k", [ksize[a]], np.int64))
        g = _op(ctx, "Expand", [g, _op(ctx, "Concat", pieces, node.name, axis=0)], node.name)
        covered = _op(ctx, "Mul", [g_shape, _const(ctx, "scale", scale, np.int64)], node.name)
        g = _op(ctx, "Reshape", [g, covered], node.name)
        # rows/columns of the original input that no window covers (VALID pooling drops them) get 0
        static = (out_shape_static is not None and grad_shape_static is not None
                  and all(out_shape_static[a] is not None and out_shape_static[a] >= 0 for a in spatial)
                  and all(grad_shape_static[a] is not None and grad_shape_static[a] >= 0 for a in spatial))
        if static and all(out_shape_static[a] == grad_shape_static[a] * ksize[a] for a in spatial):
            _finish(ctx, "Identity", [g], outputs[0], shapes[0], dtypes[0], node.name)
            return
        orig = _op(ctx, "Cast", [orig_shape], node.name, to=TensorProto.INT64)
        pads = _op(ctx, "Concat", [_const(ctx, "zeros", np.zeros(4, np.int64), np.int64),
                                   _op(ctx, "Sub", [orig, covered], node.name)], node.name, axis=0)
        _finish(ctx, "Pad", [g, pads], outputs[0], shapes[0], dtypes[0], node.name, mode="constant")


@tf_op("StridedSliceGrad")
class StridedSliceGrad:
    """``StridedSliceGrad(shape, begin, end, strides, dy; begin_mask, end_mask, ellipsis_mask, new_axis_mask,
    shrink_axis_mask)``: the gradient of ``StridedSlice``.

    ``dy`` is the gradient of ``y = StridedSlice(x, begin, end, strides, masks)`` with ``x`` of shape ``shape``;
    the result is zeros of ``shape`` with ``dy`` placed where the slice read ``x``. Built as the transpose of
    the slice: the same ``StridedSlice`` (converted by tf2onnx's own handler) of the element indices
    ``Reshape(Range(prod(shape)), shape)`` says where each element of ``dy`` came from, and
    ``ScatterElements`` writes ``dy`` there into flat zeros. A slice reads each element at most once, so
    the result is exact, for every stride, mask and dynamic shape tf2onnx's ``StridedSlice`` handler
    accepts (it needs the rank of ``shape`` statically when there is an ellipsis).
    """

    @classmethod
    def version_11(cls, ctx, node, **kwargs):
        shape_in, begin, end, strides, dy = node.input[:5]
        dtype = _np_dtype(ctx, dy)
        rank = _static_length(ctx, shape_in)
        masks = {name: _int_attr(node, name) for name in
                 ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
        outputs, shapes, dtypes = _replace(ctx, node)
        shape64 = _op(ctx, "Cast", [shape_in], node.name, to=TensorProto.INT64)
        count = GraphBuilder(ctx).make_reduce_prod({"data": shape64, "keepdims": 0})  # scalar prod(shape)
        flat_positions = _op(ctx, "Range", [_const(ctx, "start", 0, np.int64), count,
                                            _const(ctx, "delta", 1, np.int64)], node.name)
        positions = ctx.make_node("Reshape", [flat_positions, shape64], name=utils.make_name(f"{node.name}_Reshape"),
                                  shapes=[[-1] * rank if rank is not None else None], dtypes=[TensorProto.INT64])
        sliced = ctx.make_node("StridedSlice", [positions.output[0], begin, end, strides], attr=masks,
                               name=utils.make_name(f"{node.name}_positions_slice"),
                               shapes=[None if masks["shrink_axis_mask"] else ctx.get_shape(dy)],
                               dtypes=[TensorProto.INT64])
        func, slice_kwargs = tf_op.find_effective_op("StridedSlice")
        func(ctx, sliced, **(slice_kwargs or {}))  # tf2onnx's own StridedSlice handler, on the index tensor
        flat = _const(ctx, "flat", [-1], np.int64)
        indices = _op(ctx, "Reshape", [sliced.output[0], flat], node.name)
        updates = _op(ctx, "Reshape", [dy, flat], node.name)
        zeros = _op(ctx, "Expand", [_const(ctx, "zero", [0], dtype),
                                    _op(ctx, "Reshape", [count, _const(ctx, "one_elem", [1], np.int64)], node.name)],
                    node.name)
        scattered = _op(ctx, "ScatterElements", [zeros, indices, updates], node.name, axis=0)
        _finish(ctx, "Reshape", [scattered, shape64], outputs[0], shapes[0], dtypes[0], node.name)
