"""ONNX import, against ONNX Runtime (and onnx's reference evaluator for layout 1,
which ONNX Runtime does not run) and against PyTorch for graphs its exporter writes."""
import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from rnnext import layers as L  # noqa: E402
from rnnext.cells import activation_from_onnx  # noqa: E402
from rnnext.onnx_io import OnnxImportError, from_onnx, onnx_layers  # noqa: E402

from conftest import F32_ATOL, F32_RTOL, forward_imported  # noqa: E402

G = {"LSTM": 4, "GRU": 3, "RNN": 1}
I, H, B, T = 3, 4, 3, 6


def run_ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def chain_graph(layers, layout=0, lengths=False, states=False, seed=0, scale=1.0):
    """A graph of recurrent nodes with random weights, one per entry of `layers`: dicts with op,
    H (default H), direction, attrs (node attributes), peepholes (random P, LSTM) and merge (how
    its Y feeds the next node: concat, or ReduceSum / ReduceMean / ReduceProd over D). Inputs X
    (and lengths, initial states h0_k, c0_k), outputs the last node's Y and Y_h."""
    rng = np.random.default_rng(seed)
    nodes, inits, inputs = [], [], []
    x_shape = [T, B, I] if layout == 0 else [B, T, I]
    inputs.append(helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape))
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, [B]))
    seq, width = "X", I
    for k, layer in enumerate(layers):
        op, h = layer["op"], layer.get("H", H)
        direction = layer.get("direction", "forward")
        D, g = 2 if direction == "bidirectional" else 1, G[op]
        for name, shape in (("W", (D, g * h, width)), ("R", (D, g * h, h)), ("B", (D, 2 * g * h)),
                            ("P", (D, 3 * h))):
            value = (scale * rng.uniform(-0.5, 0.5, shape)).astype(np.float32)
            inits.append(numpy_helper.from_array(value, f"{name}{k}"))
        node_inputs = [seq, f"W{k}", f"R{k}", f"B{k}", "lengths" if lengths else "", "", ""]
        if states:
            state_shape = [D, B, h] if layout == 0 else [B, D, h]
            for j, kind in enumerate(("h", "c")[:2 if op == "LSTM" else 1]):
                inputs.append(helper.make_tensor_value_info(f"{kind}0_{k}", TensorProto.FLOAT,
                                                            state_shape))
                node_inputs[5 + j] = f"{kind}0_{k}"
        if layer.get("peepholes"):
            node_inputs.append(f"P{k}")
        while not node_inputs[-1]:
            node_inputs.pop()
        nodes.append(helper.make_node(op, node_inputs, [f"Y{k}", f"Y_h{k}"], hidden_size=h,
                                      direction=direction, layout=layout,
                                      **layer.get("attrs", {})))
        if k + 1 == len(layers):
            break
        axis = 1 if layout == 0 else 2
        merge = layer.get("merge", "concat")
        if merge == "concat":
            if layout == 0:
                nodes.append(helper.make_node("Transpose", [f"Y{k}"], [f"Yt{k}"],
                                              perm=[0, 2, 1, 3]))
            inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"shape{k}"))
            nodes.append(helper.make_node("Reshape", [f"Yt{k}" if layout == 0 else f"Y{k}",
                                                      f"shape{k}"], [f"seq{k}"]))
            width = D * h
        else:
            if merge == "ReduceSum":  # axes an input from opset 13, the others' from 18
                inits.append(numpy_helper.from_array(np.array([axis], np.int64), f"axes{k}"))
                nodes.append(helper.make_node(merge, [f"Y{k}", f"axes{k}"], [f"seq{k}"],
                                              keepdims=0))
            else:
                nodes.append(helper.make_node(merge, [f"Y{k}"], [f"seq{k}"], axes=[axis],
                                              keepdims=0))
            width = h
        seq = f"seq{k}"
    graph = helper.make_graph(nodes, "g", inputs, [
        helper.make_tensor_value_info(f"Y{len(layers) - 1}", TensorProto.FLOAT, None),
        helper.make_tensor_value_info(f"Y_h{len(layers) - 1}", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def recurrent_graph(op, direction="forward", layout=0, layers=1, lengths=False, states=False,
                    seed=0, scale=1.0, **attrs):
    """chain_graph of `layers` alike nodes of `op` with attributes attrs."""
    return chain_graph([dict(op=op, direction=direction, attrs=attrs)] * layers, layout, lengths,
                       states, seed, scale)


def with_layout_0(model):
    """The same graph with layout 0 on every node (ONNX Runtime runs only that); Transposes
    between layers follow, as for layout-0 graphs built here."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    for node in twin.graph.node:
        for attr in node.attribute:
            if attr.name == "layout":
                attr.i = 0
    for value in twin.graph.input:
        value.type.tensor_type.ClearField("shape")
    nodes = list(twin.graph.node)
    del twin.graph.node[:]
    for node in nodes:
        if node.op_type == "Reshape":
            twin.graph.node.append(helper.make_node("Transpose", [node.input[0]],
                                                    [node.input[0] + "_t"], perm=[0, 2, 1, 3]))
            node.input[0] = node.input[0] + "_t"
        twin.graph.node.append(node)
    return twin


def random_inputs(op, D, layers, lengths, states, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lens = np.array([T, 2, 5][:B], np.int32) if lengths else None
    h0 = rng.standard_normal((layers * D, B, H)).astype(np.float32) if states else None
    c0 = rng.standard_normal((layers * D, B, H)).astype(np.float32) if states and op == "LSTM" \
        else None
    return x, lens, h0, c0


def feeds_for(layout, x, lens, h0, c0, D, layers):
    feeds = {"X": x.transpose(1, 0, 2) if layout == 0 else x}
    if lens is not None:
        feeds["lengths"] = lens
    for kind, state in (("h", h0), ("c", c0)):
        if state is None:
            continue
        for layer in range(layers):
            block = state[layer * D:(layer + 1) * D]
            feeds[f"{kind}0_{layer}"] = block if layout == 0 else block.transpose(1, 0, 2).copy()
    return feeds


def compare_sequence(imported, op, direction, layout, outputs, x, lens, h0, c0):
    """The imported list's output sequence and final states against a graph's Y and Y_h."""
    D = 2 if direction == "bidirectional" else 1
    y_onnx, yh_onnx = outputs
    if layout == 0:
        y_onnx, yh_onnx = y_onnx.transpose(2, 0, 1, 3), yh_onnx.transpose(1, 0, 2)
    y_onnx, yh_onnx = y_onnx.reshape(B, T, D * H), yh_onnx.reshape(B, D * H)  # (B, D, H) rows
    state = None if h0 is None else (h0, c0) if op == "LSTM" else h0
    y, state = forward_imported(imported, x, state=state, lengths=lens)
    h_n = state[0] if op == "LSTM" else state
    np.testing.assert_allclose(y, y_onnx, rtol=F32_RTOL, atol=F32_ATOL)
    np.testing.assert_allclose(h_n[-D:].transpose(1, 0, 2).reshape(B, D * H), yh_onnx,
                               rtol=F32_RTOL, atol=F32_ATOL)


CASES = [(op, attrs) for op, attrs in (("LSTM", {}), ("GRU", {"linear_before_reset": 1}),
                                       ("GRU", {"linear_before_reset": 0}), ("RNN", {}),
                                       ("RNN", {"activations": ["Relu"]}))]


def per_direction(attrs, D):
    """attrs with activations and their alpha and beta repeated for each of D directions."""
    return {k: v * D if k.startswith("activation") else v for k, v in attrs.items()}


@pytest.mark.parametrize("op, attrs", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layers, lengths, states", [(1, False, False), (2, True, True)])
def test_recurrent_nodes_match_onnxruntime(op, attrs, direction, layers, lengths, states):
    D = 2 if direction == "bidirectional" else 1
    graph = recurrent_graph(op, direction, 0, layers, lengths, states, **per_direction(attrs, D))
    imported = onnx_layers(graph)
    assert [layer.direction for layer in imported[0]] == [direction] * layers
    x, lens, h0, c0 = random_inputs(op, D, layers, lengths, states)
    outputs = run_ort(graph, feeds_for(0, x, lens, h0, c0, D, layers))
    compare_sequence(imported, op, direction, 0, outputs, x, lens, h0, c0)


@pytest.mark.parametrize("op, attrs", CASES[:3], ids=lambda c: str(c))
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_layout_1_matches_onnx_reference_evaluator(op, attrs, direction):
    from onnx.reference import ReferenceEvaluator

    graph = recurrent_graph(op, direction, 1, layers=2, **attrs)
    x, *_ = random_inputs(op, 2 if direction == "bidirectional" else 1, 2, False, False)
    outputs = ReferenceEvaluator(graph).run(None, {"X": x})
    compare_sequence(onnx_layers(graph), op, direction, 1, outputs, x, None, None, None)


@pytest.mark.parametrize("op, attrs", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_layout_1_with_lengths_and_states_matches_onnxruntime(op, attrs, direction):
    """ONNX Runtime runs only layout 0: the layout-1 graph is compared through its layout-0
    twin, fed the transposed inputs."""
    D = 2 if direction == "bidirectional" else 1
    graph = recurrent_graph(op, direction, 1, 2, True, True, **per_direction(attrs, D))
    x, lens, h0, c0 = random_inputs(op, D, 2, True, True)
    outputs = run_ort(with_layout_0(graph), feeds_for(0, x, lens, h0, c0, D, 2))
    compare_sequence(onnx_layers(graph), op, direction, 0, outputs, x, lens, h0, c0)


# every attribute, per op: activations with alpha and beta (ONNX Runtime's reading: one value
# per function that uses one), clip, input_forget, peepholes, linear_before_reset
ATTRIBUTE_CASES = [
    ("LSTM", dict(activations=["HardSigmoid", "LeakyRelu", "ScaledTanh"],
                  activation_alpha=[0.25, 0.125, 1.5], activation_beta=[0.375, 0.75]), False),
    ("LSTM", dict(clip=0.75), True),
    ("LSTM", dict(input_forget=1, clip=2.5, activations=["Sigmoid", "Softsign", "Elu"],
                  activation_alpha=[0.5]), True),
    ("LSTM", dict(activations=["Affine", "Tanh", "Softplus"], activation_alpha=[0.5],
                  activation_beta=[0.25]), False),
    ("GRU", dict(linear_before_reset=0, clip=0.5), False),
    ("GRU", dict(linear_before_reset=1, activations=["HardSigmoid", "ThresholdedRelu"],
                 activation_alpha=[0.3, 0.25]), False),
    ("GRU", dict(activations=["Sigmoid", "ScaledTanh"], activation_alpha=[0.75],
                 activation_beta=[1.25]), False),
    ("RNN", dict(activations=["LeakyRelu"], activation_alpha=[0.25], clip=1.5), False),
    ("RNN", dict(activations=["Softsign"]), False),
    ("GRU", dict(activations=["HardSigmoid", "ThresholdedRelu"]), False),  # ORT's absent alpha
    ("RNN", dict(activations=["Affine"], activation_alpha=[0.5], activation_beta=[0.125]), False),
]


@pytest.mark.parametrize("op, attrs, peepholes", ATTRIBUTE_CASES,
                         ids=lambda c: str(c) if not isinstance(c, bool) else f"P={c}")
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_node_attributes_map_and_match_onnxruntime(op, attrs, peepholes, direction):
    D = 2 if direction == "bidirectional" else 1
    graph = chain_graph([dict(op=op, direction=direction, attrs=per_direction(attrs, D),
                              peepholes=peepholes)] * 2, lengths=True, states=True, scale=2.0)
    layers, _, params = imported = onnx_layers(graph)
    first = layers[0]
    if "clip" in attrs:
        assert first.clip == attrs["clip"]
    if op == "LSTM":
        assert (first.peepholes, first.input_forget) == (peepholes, bool(attrs.get("input_forget")))
    if "activations" in attrs:
        assert first.activations == tuple(activation_from_onnx(a) for a in attrs["activations"])
    x, lens, h0, c0 = random_inputs(op, D, 2, True, True)
    outputs = run_ort(graph, feeds_for(0, x, lens, h0, c0, D, 2))
    compare_sequence(imported, op, direction, 0, outputs, x, lens, h0, c0)


def test_zero_peepholes_are_no_peepholes():
    graph = recurrent_graph("LSTM")
    graph.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 3 * H), np.float32), "P"))
    graph.graph.node[0].input.extend(["", "", "", "P"])
    imported = onnx_layers(graph)
    assert not imported[0][0].peepholes
    x, *_ = random_inputs("LSTM", 1, 1, False, False)
    compare_sequence(imported, "LSTM", "forward", 0, run_ort(graph, {"X": x.transpose(1, 0, 2)}),
                     x, None, None, None)


CHAINS = {
    "lstm-gru-rnn": [dict(op="LSTM", H=5, direction="bidirectional", merge="ReduceSum"),
                     dict(op="GRU", H=3, direction="reverse"),
                     dict(op="RNN", H=H, direction="bidirectional")],
    "rnn-lstm-gru": [dict(op="RNN", H=2, attrs=dict(activations=["Relu"])),
                     dict(op="LSTM", H=6, direction="bidirectional", merge="ReduceMean",
                          peepholes=True),
                     dict(op="GRU", H=H, direction="bidirectional",
                          attrs=dict(linear_before_reset=1))],
    "gru-gru-lstm": [dict(op="GRU", H=3, direction="bidirectional", merge="ReduceProd"),
                     dict(op="GRU", H=5, attrs=dict(linear_before_reset=1)),
                     dict(op="LSTM", H=H, direction="reverse", attrs=dict(clip=1.0))],
}


@pytest.mark.parametrize("name", CHAINS)
def test_chains_of_different_nodes_are_separate_layers(name):
    layers = CHAINS[name]
    graph = chain_graph(layers, lengths=True, states=True)
    imported = onnx_layers(graph)
    merges = {"concat": "concat", "ReduceSum": "sum", "ReduceMean": "ave", "ReduceProd": "mul"}
    assert [(type(layer).__name__, layer.units, layer.direction, layer.merge)
            for layer in imported[0]] == [
        (entry["op"], entry["H"], entry.get("direction", "forward"),
         merges[entry.get("merge", "concat")]) for entry in layers]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lens = np.array([T, 2, 5], np.int32)
    feeds, state = {"X": x.transpose(1, 0, 2), "lengths": lens}, []
    for k, entry in enumerate(layers):
        D = 2 if entry.get("direction") == "bidirectional" else 1
        parts = [rng.standard_normal((D, B, entry["H"])).astype(np.float32)
                 for _ in range(2 if entry["op"] == "LSTM" else 1)]
        feeds.update({f"{kind}0_{k}": p for kind, p in zip("hc", parts)})
        state.append(tuple(parts) if entry["op"] == "LSTM" else parts[0])
    y_onnx, yh_onnx = run_ort(graph, feeds)
    y, states = forward_imported(imported, x, state=state, lengths=lens)
    D = y_onnx.shape[1]
    np.testing.assert_allclose(y, y_onnx.transpose(2, 0, 1, 3).reshape(B, T, D * H),
                               rtol=F32_RTOL, atol=F32_ATOL)
    h_n = states[-1][0] if layers[-1]["op"] == "LSTM" else states[-1]
    np.testing.assert_allclose(h_n, yh_onnx, rtol=F32_RTOL, atol=F32_ATOL)


def _append(graph, op, inputs, output, **attrs):
    graph.graph.node.append(helper.make_node(op, inputs, [output], **attrs))
    del graph.graph.output[:]
    graph.graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, None))


def _constant(graph, name, value):
    graph.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def test_per_step_dense_layers_past_the_lengths_are_refused():
    """ONNX Runtime gives a per-step dense layer's bias past each length, rnnext zeros: without
    the Where that zeroes those steps (to_onnx's), the graph is refused; ORT's output shows the
    difference the refusal prevents."""
    graph = recurrent_graph("LSTM", lengths=True)
    y = graph.graph.output[0].name  # (T, 1, B, H)
    _append(graph, "Squeeze", [y, _constant(graph, "one", np.array([1]))], "tbh")
    _append(graph, "MatMul", ["tbh", _constant(graph, "w", np.ones((H, 2), np.float32))], "mm")
    _append(graph, "Add", ["mm", _constant(graph, "b", np.array([1.0, -1.0], np.float32))], "z")
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    z = run_ort(graph, {"X": x, "lengths": np.array([T, 2, 1], np.int32)})[0]
    np.testing.assert_array_equal(z[2:, 1], np.broadcast_to([1.0, -1.0], (T - 2, 2)))
    with pytest.raises(OnnxImportError, match="MatMul node .*dense layer on every step .*"
                                              "sequence_lens gives its bias past each length"):
        onnx_layers(graph)


@pytest.mark.parametrize("readout, merge", [
    ("final", "concat"), ("final", "ReduceSum"), ("final", "ReduceMean"), ("last", "concat"),
    ("last", "ReduceProd"), ("mean", "concat"), ("mean", "ReduceMean"), ("max", "concat")])
def test_readouts_and_dense_layers_match_onnxruntime(readout, merge):
    """Y_h (final), Y's last step, ReduceMean / ReduceMax over time; the directions merged;
    then two dense layers (Gemm with alpha and beta, MatMul + Add) with activations."""
    graph = recurrent_graph("GRU", "bidirectional", layers=2, linear_before_reset=1)
    source = "Y_h1" if readout == "final" else "Y1"
    if readout == "final":  # (D, B, H)
        axis = 0
    elif readout == "last":  # (T, D, B, H) -> (D, B, H)
        graph.graph.node.append(helper.make_node("Gather", ["Y1", _constant(
            graph, "last", np.array(-1, np.int64))], ["last_step"], axis=0))
        source, axis = "last_step", 0
    else:  # over time: (T, D, B, H) -> (D, B, H)
        op = {"mean": "ReduceMean", "max": "ReduceMax"}[readout]
        graph.graph.node.append(helper.make_node(op, ["Y1"], ["pooled"], axes=[0], keepdims=0))
        source, axis = "pooled", 0
    if merge == "concat":
        graph.graph.node.append(helper.make_node("Transpose", [source], ["bdh"], perm=[1, 0, 2]))
        graph.graph.node.append(helper.make_node("Reshape", ["bdh", _constant(
            graph, "bf", np.array([0, -1], np.int64))], ["features"]))
        width = 2 * H
    elif merge == "ReduceSum":
        graph.graph.node.append(helper.make_node(merge, [source, _constant(
            graph, "daxis", np.array([axis], np.int64))], ["features"], keepdims=0))
        width = H
    else:
        graph.graph.node.append(helper.make_node(merge, [source], ["features"], axes=[axis],
                                                 keepdims=0))
        width = H
    rng = np.random.default_rng(5)
    W1 = rng.standard_normal((5, width)).astype(np.float32)
    W2 = rng.standard_normal((5, 3)).astype(np.float32)
    graph.graph.node.append(helper.make_node("Gemm", [
        "features", _constant(graph, "dense_W1", W1),
        _constant(graph, "dense_b1", np.ones(5, np.float32))], ["z1"], transB=1, alpha=0.5,
        beta=2.0))
    graph.graph.node.append(helper.make_node("Tanh", ["z1"], ["a1"]))
    graph.graph.node.append(helper.make_node("MatMul", ["a1", _constant(graph, "dense_W2", W2)],
                                             ["p2"]))
    graph.graph.node.append(helper.make_node("Add", [_constant(
        graph, "dense_b2", rng.standard_normal((1, 3)).astype(np.float32)), "p2"], ["z2"]))
    _append(graph, "Softmax", ["z2"], "probs", axis=-1)
    layers, _, params = imported = onnx_layers(graph)
    merges = {"concat": "concat", "ReduceSum": "sum", "ReduceMean": "ave", "ReduceProd": "mul"}
    assert layers[1:] == [L.GRU(H, direction="bidirectional", merge=merges[merge]),
                          L.Readout(readout), L.Dense(5, "tanh"), L.Dense(3, "softmax")]
    x, *_ = random_inputs("GRU", 2, 2, False, False)
    expected = run_ort(graph, {"X": x.transpose(1, 0, 2)})[0]
    np.testing.assert_allclose(forward_imported(imported, x)[0], expected, rtol=F32_RTOL,
                               atol=F32_ATOL)


@pytest.mark.parametrize("attrs, expected", [
    ({"activations": ["Gelu", "Tanh", "Tanh"]}, "LSTM node .*expected ONNX names.*'Gelu'"),
    ({"activations": ["Sigmoid", "Tanh"]}, r"LSTM node .*activations: expected 3 names"),
    ({"clip": -1.0}, "LSTM node .*clip: expected None or a float > 0"),
])
def test_unsupported_attributes_are_refused_by_name(attrs, expected):
    with pytest.raises(OnnxImportError, match=expected):
        onnx_layers(recurrent_graph("LSTM", **attrs))


def test_directions_with_different_activations_are_refused():
    graph = recurrent_graph("GRU", "bidirectional", activations=["Sigmoid", "Tanh", "Sigmoid",
                                                                 "Relu"])
    with pytest.raises(OnnxImportError, match="GRU node .*directions' activations differ"):
        onnx_layers(graph)


def test_unsupported_graphs_are_refused_by_name():
    graph = recurrent_graph("GRU")
    _append(graph, "Abs", ["Y0"], "out")
    with pytest.raises(OnnxImportError, match="Abs node .* is not supported on the path"):
        onnx_layers(graph)

    graph = recurrent_graph("GRU")
    _append(graph, "Relu", ["Y0"], "out")
    with pytest.raises(OnnxImportError, match="Relu node .*must follow a dense layer"):
        onnx_layers(graph)

    graph = recurrent_graph("LSTM", "bidirectional")
    graph.graph.node[0].output.append("Y_c0")
    _append(graph, "Identity", ["Y_c0"], "out")
    with pytest.raises(OnnxImportError, match="its Y_c .* is used"):
        onnx_layers(graph)

    graph = recurrent_graph("GRU")
    _constant(graph, "h0", np.ones((1, B, H), np.float32))
    graph.graph.node[0].input.extend(["", "h0"])
    with pytest.raises(OnnxImportError, match="initial_h must be zeros or a graph input"):
        onnx_layers(graph)

    graph = recurrent_graph("RNN", lengths=True)
    _append(graph, "Gather", ["Y0", _constant(graph, "last", np.array(-1, np.int64))], "out",
            axis=0)
    with pytest.raises(OnnxImportError, match="last step.* while its nodes take sequence_lens"):
        onnx_layers(graph)

    graph = recurrent_graph("RNN", "bidirectional")
    graph.graph.node.append(helper.make_node("Gather", ["Y0", _constant(
        graph, "last", np.array(-1, np.int64))], ["dbh"], axis=0))
    _append(graph, "Reshape", ["dbh", _constant(graph, "bf", np.array([0, -1], np.int64))],
            "out")  # (D, B, H) -> (D, B*H): meaningless
    with pytest.raises(OnnxImportError, match=r"merges axes \('B', 'H'\)"):
        onnx_layers(graph)

    graph = recurrent_graph("RNN")
    _append(graph, "Gather", ["Y0", _constant(graph, "first", np.array(0, np.int64))], "out",
            axis=0)
    with pytest.raises(OnnxImportError, match="only the last time step"):
        onnx_layers(graph)

    graph = recurrent_graph("RNN", "bidirectional")
    _append(graph, "ReduceMax", ["Y0"], "out", axes=[1], keepdims=0)
    with pytest.raises(OnnxImportError, match="ReduceMax node .*reduces axis D"):
        onnx_layers(graph)

    graph = recurrent_graph("RNN", "bidirectional")
    graph.graph.node.append(helper.make_node("ReduceMax", ["Y0"], ["pooled"], axes=[0],
                                             keepdims=0))
    _append(graph, "ReduceSum", ["pooled", _constant(graph, "d", np.array([0]))], "out",
            keepdims=0)
    with pytest.raises(OnnxImportError, match="ReduceSum node .*after a max over time"):
        onnx_layers(graph)


# ------------------------------------------------------------------------------------------------
# graphs from PyTorch's exporter


class TorchNet:
    """A torch recurrent module with a Linear head, as people export it."""

    @staticmethod
    def build(mode, batch_first, many_to_one, activation):
        torch = pytest.importorskip("torch", reason="torch not installed")

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                kwargs = {"nonlinearity": "relu"} if mode == "RNN" else {}
                self.rnn = getattr(torch.nn, mode)(I, H, num_layers=2, bidirectional=True,
                                                   batch_first=batch_first, **kwargs)
                self.fc = torch.nn.Linear(2 * H, 3)

            def forward(self, x):
                y, _ = self.rnn(x)
                if many_to_one:
                    y = y[:, -1] if batch_first else y[-1]
                z = self.fc(y)
                return torch.softmax(z, -1) if activation == "softmax" else torch.sigmoid(z)

        torch.manual_seed(0)
        return Net().eval()


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first, many_to_one, activation",
                         [(True, True, "softmax"), (False, False, "sigmoid")])
def test_torch_exported_graphs_match_torch(mode, batch_first, many_to_one, activation):
    torch = pytest.importorskip("torch", reason="torch not installed")
    net = TorchNet.build(mode, batch_first, many_to_one, activation)
    example = torch.zeros((2, 5, I) if batch_first else (5, 2, I))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "a", 1: "b"}})
    imported = onnx_layers(buffer.getvalue())
    x = np.random.default_rng(2).standard_normal((B, T, I)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x if batch_first else x.transpose(1, 0, 2).copy()))
    expected = expected.numpy() if many_to_one else expected.numpy().transpose(1, 0, 2)
    np.testing.assert_allclose(forward_imported(imported, x)[0], expected, rtol=F32_RTOL,
                               atol=F32_ATOL)


def test_a_source_that_is_not_an_onnx_model_is_refused_by_name(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"garbage")
    for source, error, expected in [
            (3, TypeError, "source: expected a path, the bytes of an ONNX file or an "
                           "onnx.ModelProto, got int"),
            (None, TypeError, "got NoneType"),
            (b"garbage", ValueError, "source: bytes is not an ONNX model"),
            (str(garbage), ValueError, f"source: '{garbage}' is not an ONNX model"),
            (tmp_path / "missing.onnx", ValueError, "source: no file at .*missing.onnx")]:
        with pytest.raises(error, match=expected):
            from_onnx(source)

