"""tfddim.export.onnx_gradients: tf2onnx handlers for TF's gradient ops, each against TensorFlow on tiny graphs.

Every function is converted once with dynamic shapes (as inside the exported loops, where the batch is
dynamic and TensorFlow cannot fold the ops away), then run by ONNX Runtime on several inputs.
"""

import numpy as np
import pytest
import tensorflow as tf

tf2onnx = pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

from tfddim.export import onnx_gradients  # noqa: E402,F401  (registers the handlers)

OPSET = 17
i32, i64 = tf.int32, tf.int64


def convert(fn, signature, op_types=()):
    """``fn`` as a tf.function → an ONNX Runtime session; checks that TF's graph holds ``op_types``."""
    fn = tf.function(fn, input_signature=signature)
    graph_ops = {op.type for op in fn.get_concrete_function().graph.get_operations()}
    assert set(op_types) <= graph_ops, f"{set(op_types) - graph_ops} not in the TF graph: the test misses its op"
    model, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=OPSET)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return fn, session


def run(fn, session, *feed, same_shapes=True):
    """(ONNX Runtime's outputs, TensorFlow's outputs) for one input."""
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(feed)
    got = session.run(None, {name: np.asarray(v) for name, v in zip(names, feed)})
    want = fn(*[tf.constant(v) for v in feed])
    want = [w.numpy() for w in (want if isinstance(want, (list, tuple)) else [want])]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and (g.shape == w.shape or not same_shapes), (g.shape, w.shape, g.dtype, w.dtype)
    return got, want


def assert_close(got, want, rtol=1e-6):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(w), initial=0.0))))


# ------------------------------------------------------------------ ShapeN
@pytest.mark.parametrize("out_type", [i32, i64])
def test_shape_n(out_type):
    fn, session = convert(lambda a, b, c: tf.raw_ops.ShapeN(input=[a, b, c], out_type=out_type),
                          [tf.TensorSpec([None, 3]), tf.TensorSpec([None, None, None]), tf.TensorSpec([])], ["ShapeN"])
    for shape_b in [(5, 1, 1), (0, 2, 3), (2, 4, 3)]:
        got, want = run(fn, session, np.zeros((2, 3), np.float32), np.zeros(shape_b, np.float32), np.float32(1))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------ RsqrtGrad
def test_rsqrt_grad_raw_and_through_the_gradient():
    fn, session = convert(lambda y, dy: tf.raw_ops.RsqrtGrad(y=y, dy=dy), [tf.TensorSpec([None])] * 2, ["RsqrtGrad"])
    y = np.array([1.0, 2.0, 0.5, 3e-3, np.inf, 0.0, np.inf, 7.0], np.float32)
    dy = np.array([1.0, -3.0, 0.7, 2.0, 0.0, 2.0, 1.0, 0.0], np.float32)  # dy = 0 at y = inf gives 0, not NaN
    got, want = run(fn, session, y, dy)
    np.testing.assert_array_equal(got[0], want[0])

    def grad(x, w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tf.math.rsqrt(x) * w
        return tape.gradient(out, x)

    fn, session = convert(grad, [tf.TensorSpec([None, 3])] * 2, ["RsqrtGrad"])
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        x = rng.uniform(0.1, 4.0, (batch, 3)).astype(np.float32)
        assert_close(*run(fn, session, x, rng.standard_normal((batch, 3)).astype(np.float32)))


# ------------------------------------------------------------------ BroadcastGradientArgs
BROADCASTS = [
    ([2, 3], [2, 3]),  # equal shapes: both reductions empty (a Sum over no axes is the identity)
    ([2, 1, 3], [3]),  # rank difference
    ([], [4]),  # scalar
    ([1, 1], [1, 5]),  # a dim of 1 on both sides
    ([4, 1], [1, 1, 3]),
    ([1], [1]),  # all ones: TF gives no axes, the handler [0]; the sums agree
    ([3, 1, 1], [1, 1, 1]),
    ([1, 2, 1], [2, 1, 1]),
]


@pytest.mark.parametrize("dtype", [i32, i64])
def test_broadcast_gradient_args(dtype):
    def reduce(s0, s1, out_shape, g):
        # (tf2onnx takes an input of unknown rank for a scalar: g comes flat, of any rank after the Reshape)
        g = tf.reshape(g, out_shape)
        r0, r1 = tf.raw_ops.BroadcastGradientArgs(s0=s0, s1=s1)
        # how TF's gradients use them: Sum over r_i (non-constant, possibly empty axes), then Reshape to s_i
        return r0, r1, tf.reshape(tf.reduce_sum(g, r0), s0), tf.reshape(tf.reduce_sum(g, r1), s1)

    fn, session = convert(reduce, [tf.TensorSpec([None], dtype)] * 3 + [tf.TensorSpec([None])],
                          ["BroadcastGradientArgs"])
    rng = np.random.default_rng(0)
    np_dtype = dtype.as_numpy_dtype
    for s0, s1 in BROADCASTS:
        out = np.broadcast_shapes(tuple(s0), tuple(s1))
        g = rng.standard_normal(out).astype(np.float32)
        got, want = run(fn, session, np.array(s0, np_dtype), np.array(s1, np_dtype), np.array(out, np_dtype),
                        g.reshape(-1), same_shapes=False)
        assert_close(got[2:], want[2:])
        padded = [[1] * (len(out) - len(s)) + list(s) for s in (s0, s1)]
        for r_got, r_want, p in zip(got[:2], want[:2], padded):
            # the handler's axes: every 1 of the padded shape; TF's leave out those where the output is 1 too
            assert r_got.tolist() == [j for j, d in enumerate(p) if d == 1]
            assert set(r_want.tolist()) <= set(r_got.tolist())
            assert all(out[j] == 1 for j in set(r_got.tolist()) - set(r_want.tolist()))


def test_broadcast_gradients_of_mul_and_add():
    def grads(x, y, z):
        with tf.GradientTape() as tape:
            tape.watch([x, y, z])
            out = tf.reduce_sum(tf.sin(x * y + z))
        return tape.gradient(out, [x, y, z])

    fn, session = convert(grads, [tf.TensorSpec([None, None, None]), tf.TensorSpec([None, None, None]),
                                  tf.TensorSpec([None])], ["BroadcastGradientArgs"])
    rng = np.random.default_rng(1)
    for sx, sy, sz in [((2, 3, 4), (2, 3, 4), (4,)), ((2, 1, 4), (1, 3, 1), (1,)), ((1, 1, 1), (1, 1, 1), (1,)),
                       ((2, 3, 1), (1, 3, 1), (5,)), ((1, 3, 1), (2, 1, 1), (1,))]:
        feed = [rng.standard_normal(s).astype(np.float32) for s in (sx, sy, sz)]
        assert_close(*run(fn, session, *feed), rtol=1e-5)


# ------------------------------------------------------------------ ConcatOffset
def test_concat_offset():
    shapes = [np.array(s, np.int32) for s in ([2, 3, 4], [2, 5, 4], [2, 0, 4], [2, 1, 4])]
    spec = [tf.TensorSpec([3], i32)] * 4
    for axis in (1, -2):
        fn, session = convert(lambda a, b, c, d, axis=axis: tf.raw_ops.ConcatOffset(
            concat_dim=tf.constant(axis), shape=[a, b, c, d]), spec, ["ConcatOffset"])
        got, want = run(fn, session, *shapes)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    # concat_dim known only at run time
    fn, session = convert(lambda axis, a, b: tf.raw_ops.ConcatOffset(concat_dim=axis, shape=[a, b]),
                          [tf.TensorSpec([], i32)] + [tf.TensorSpec([None], i32)] * 2, ["ConcatOffset"])
    for axis, (a, b) in [(0, ([1, 3], [4, 3])), (1, ([2, 3], [2, 6])), (-1, ([2, 3], [2, 6]))]:
        got, want = run(fn, session, np.int32(axis), np.array(a, np.int32), np.array(b, np.int32))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_concat_gradient():
    def grads(x, y):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            out = tf.concat([x, y, x], axis=1)
        return tape.gradient(out, [x, y], output_gradients=tf.sin(out))

    fn, session = convert(grads, [tf.TensorSpec([None, None, 2])] * 2, ["ConcatOffset"])
    rng = np.random.default_rng(2)
    for nx, ny in [(1, 3), (4, 2)]:
        feed = [rng.standard_normal((3, n, 2)).astype(np.float32) for n in (nx, ny)]
        assert_close(*run(fn, session, *feed))


# ------------------------------------------------------------------ AvgPoolGrad
@pytest.mark.parametrize("k", [2, 3])
def test_avg_pool_grad_nhwc(k):
    def grad(shape, g):
        return tf.raw_ops.AvgPoolGrad(orig_input_shape=shape, grad=g, ksize=[1, k, k, 1], strides=[1, k, k, 1],
                                      padding="VALID")

    fn, session = convert(grad, [tf.TensorSpec([4], i32), tf.TensorSpec([None, None, None, 3])], ["AvgPoolGrad"])
    rng = np.random.default_rng(3)
    for batch, height, width in [(2, 2 * k, 3 * k), (1, 2 * k + 1, 2 * k + k - 1)]:  # the second leaves rows uncovered
        g = rng.standard_normal((batch, height // k, width // k, 3)).astype(np.float32)
        got, want = run(fn, session, np.array([batch, height, width, 3], np.int32), g)
        np.testing.assert_array_equal(got[0], want[0])  # TF multiplies by 1/(k·k) as the handler does


def test_avg_pool_gradient_static_spatial_and_nchw():
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tf.nn.avg_pool2d(x, 2, 2, "VALID")
        return tape.gradient(out, x, output_gradients=tf.cos(out))

    fn, session = convert(grad, [tf.TensorSpec([None, 8, 8, 2])], ["AvgPoolGrad"])
    rng = np.random.default_rng(4)
    for batch in (1, 3):
        assert_close(*run(fn, session, rng.standard_normal((batch, 8, 8, 2)).astype(np.float32)))

    # NCHW: TensorFlow's CPU kernel only runs NHWC, so compare with it transposed
    nchw = tf.function(lambda shape, g: tf.raw_ops.AvgPoolGrad(
        orig_input_shape=shape, grad=g, ksize=[1, 1, 2, 2], strides=[1, 1, 2, 2], padding="VALID",
        data_format="NCHW"), input_signature=[tf.TensorSpec([4], i32), tf.TensorSpec([None, 3, None, None])])
    model, _ = tf2onnx.convert.from_function(nchw, input_signature=nchw.input_signature, opset=OPSET)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    g = rng.standard_normal((2, 3, 2, 3)).astype(np.float32)
    got = session.run(None, dict(zip([i.name for i in session.get_inputs()], [np.array([2, 3, 5, 6], np.int32), g])))
    want = tf.raw_ops.AvgPoolGrad(orig_input_shape=[2, 5, 6, 3], grad=np.transpose(g, (0, 2, 3, 1)),
                                  ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="VALID").numpy()
    np.testing.assert_array_equal(got[0], np.transpose(want, (0, 3, 1, 2)))


def test_avg_pool_grad_refuses_overlapping_windows(caplog):
    fn = tf.function(lambda shape, g: tf.raw_ops.AvgPoolGrad(orig_input_shape=shape, grad=g, ksize=[1, 3, 3, 1],
                                                             strides=[1, 2, 2, 1], padding="VALID"),
                     input_signature=[tf.TensorSpec([4], i32), tf.TensorSpec([None, None, None, 3])])
    # tf2onnx's Python API converts with continue_on_error=True: it logs the handler's ValueError and leaves
    # the TF op in the graph, which ONNX Runtime then refuses to load
    model, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=OPSET)
    assert "non-overlapping windows" in caplog.text
    assert "AvgPoolGrad" in {node.op_type for node in model.graph.node}
    with pytest.raises(Exception, match="AvgPoolGrad"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------ StridedSliceGrad
SLICES = [
    lambda x: x[:, :, 1],  # shrink axis (AttentionPool2d's qkv[:, :, i])
    lambda x: x[:, :, :1],  # begin/end masks (AttentionPool2d's q[:, :, :1])
    lambda x: x[:, 1:3],
    lambda x: x[..., -2:],  # ellipsis, negative begin
    lambda x: x[1:, ::2],  # stride 2
    lambda x: x[::-1, -3:-1],  # negative stride
    lambda x: x[:, None, 0],  # new axis + shrink
    lambda x: x[-1],
]


def test_strided_slice_grad():
    def grads(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            outs = [s(x) for s in SLICES]
        return [tape.gradient(out, x, output_gradients=out + 1.0) for out in outs]

    fn, session = convert(grads, [tf.TensorSpec([None, None, 5])], ["StridedSliceGrad"])
    rng = np.random.default_rng(5)
    for shape in [(3, 4, 5), (4, 7, 5)]:
        got, want = run(fn, session, rng.standard_normal(shape).astype(np.float32))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------ end to end
def test_noisy_classifier_log_prob_gradient():
    import keras

    from tfddim import models

    keras.utils.set_random_seed(0)
    clf = models.NoisyClassifier(image_size=8, in_channels=1, num_classes=10, base_channels=8, channel_mult=(1, 1),
                                 num_res_blocks=1, attention_resolutions=(4,), num_heads=2, num_groups=4)
    clf((tf.zeros([1, 8, 8, 1]), tf.zeros([1], tf.int32)))
    log_prob = clf.log_prob_fn()

    def grad(x, t, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            lp = log_prob(x, t, y)
        return tape.gradient(lp, x)

    signature = [tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], i32), tf.TensorSpec([None], i32)]
    fn, session = convert(grad, signature,
                          ["ShapeN", "RsqrtGrad", "BroadcastGradientArgs", "AvgPoolGrad", "StridedSliceGrad",
                           "ConcatOffset"])
    rng = np.random.default_rng(6)
    for batch in (1, 3):
        feed = (rng.standard_normal((batch, 8, 8, 1)).astype(np.float32),
                rng.integers(0, 50, batch).astype(np.int32), rng.integers(0, 10, batch).astype(np.int32))
        (got,), (want,) = run(fn, session, *feed)
        assert np.max(np.abs(want)) > 0
        assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
