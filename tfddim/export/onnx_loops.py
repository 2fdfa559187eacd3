"""Take loop invariants out of the state of converted ONNX ``Loop`` nodes.

TensorFlow's ``while_loop`` (control flow v2) passes every tensor the body
captures, among them each network weight, through the loop as a loop variable
that the body returns unchanged; tf2onnx keeps them as ``Loop``-carried state.
ONNX Runtime then treats the weights as per-iteration values: it cannot fold
their HWIO→OIHW transposes, and its NCHWc convolution layout (applied to
constant weights only) never reaches the network inside the loop. Profiled on
the shipped digits model: 144 weights carried, 26 weight ``Transpose`` nodes
run every step, no ``ReorderOutput`` in the loop body; after hoisting, the
body has the same NCHWc convolutions as the bare forward graph.

:func:`hoist_loop_invariants` rewrites each ``Loop``: a carried value that the
body returns unchanged becomes a body initializer (if it starts as a graph
initializer) or an outer-scope reference (ONNX subgraphs may read outer
values). Outputs are unchanged; only state that never changes is removed.
"""

from __future__ import annotations

import collections
import copy

__all__ = ["hoist_loop_invariants"]


def _subgraphs(node):
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _uses(graph) -> collections.Counter:
    """How often each name is read in ``graph`` and its nested subgraphs (graph outputs count)."""
    names = collections.Counter()
    for node in graph.node:
        names.update(node.input)
        for sub in _subgraphs(node):
            names.update(_uses(sub))
    names.update(out.name for out in graph.output)
    return names


def _rename_reads(graph, old: str, new: str) -> None:
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for sub in _subgraphs(node):
            _rename_reads(sub, old, new)
    for out in graph.output:
        if out.name == old:
            out.name = new


def hoist_loop_invariants(model) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place; return how many carried values were hoisted.

    A ``Loop``'s carried value j (node input 2+j, body input 2+j, body output
    1+j, node output j) is invariant when the body output *is* the body input.
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    graph_outputs = {out.name for out in graph.output}
    hoisted = 0
    for node in graph.node:
        if node.op_type != "Loop":
            continue
        body = next(attr.g for attr in node.attribute if attr.name == "body")
        invariant = []
        for j in range(len(node.input) - 2):
            outer, inner = node.input[2 + j], body.input[2 + j].name
            if not outer or body.output[1 + j].name != inner or node.output[j] in graph_outputs:
                continue
            _rename_reads(graph, node.output[j], outer)  # the final value is the initial one
            if outer in initializers:
                local = copy.deepcopy(initializers[outer])
                local.name = inner
                body.initializer.append(local)
            else:
                _rename_reads(body, inner, outer)
            invariant.append(j)
        for j in reversed(invariant):
            del node.input[2 + j], body.input[2 + j], body.output[1 + j], node.output[j]
        hoisted += len(invariant)
    used = _uses(graph)
    for name, tensor in initializers.items():
        if not used[name]:
            graph.initializer.remove(tensor)
    return hoisted
