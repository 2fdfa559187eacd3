"""Hoisting loop invariants out of ONNX Loop state: a hand-built Loop, checked in ONNX Runtime."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tfddim.export.onnx_loops import hoist_loop_invariants


def loop_model():
    """x_{k+1} = x_k · W + b for n steps; W (an initializer) and b (a graph input) ride along as loop state."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_in", "w_in"], ["xw"]), helper.make_node("Add", ["xw", "b_in"], ["x_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [None, None]), helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [None, None]),
         helper.make_tensor_value_info("b_in", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [None, None]),
         helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [None, None]), helper.make_tensor_value_info("b_in", TensorProto.FLOAT, [2])],
    )
    w = numpy_helper.from_array(np.array([[0.5, -1.0], [2.0, 0.25]], np.float32), "W")
    true = numpy_helper.from_array(np.array(True), "true")
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "true", "x", "W", "b"], ["x_final", "w_final", "b_final"], body=body),
         helper.make_node("Identity", ["b_final"], ["b_used"])],
        "main",
        [helper.make_tensor_value_info("n", TensorProto.INT64, []), helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("x_final", TensorProto.FLOAT, [None, None]), helper.make_tensor_value_info("b_used", TensorProto.FLOAT, [2])],
        [w, true],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model, feed):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_invariants_leave_the_state_and_results_do_not_change():
    model = loop_model()
    feed = {"n": np.array(4, np.int64), "x": np.arange(6, dtype=np.float32).reshape(3, 2), "b": np.array([1.0, -2.0], np.float32)}
    before = run(model, feed)
    want = feed["x"]
    for _ in range(4):
        want = want @ np.array([[0.5, -1.0], [2.0, 0.25]], np.float32) + feed["b"]
    np.testing.assert_allclose(before[0], want, rtol=1e-6)
    assert hoist_loop_invariants(model) == 2
    onnx.checker.check_model(model)
    loop = model.graph.node[0]
    body = loop.attribute[0].g
    assert list(loop.input) == ["n", "true", "x"] and list(loop.output) == ["x_final"]
    assert [t.name for t in body.initializer] == ["w_in"]  # W became a body constant
    assert [t.name for t in model.graph.initializer] == ["true"]  # and left the main graph
    assert "b" in body.node[1].input  # b is read from the outer scope
    after = run(model, feed)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], feed["b"])  # a read of the final invariant reads the initial value
