"""ONNX import and export, against ONNX Runtime (and onnx's reference evaluator for layout 1,
which ONNX Runtime does not run) and against PyTorch for graphs its exporter writes."""
import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rnnext  # noqa: E402
from rnnext.onnx_io import OnnxImportError  # noqa: E402

from conftest import F32_ATOL, F32_RTOL  # noqa: E402

G = {"LSTM": 4, "GRU": 3, "RNN": 1}
I, H, B, T = 3, 4, 3, 6


def run_ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def recurrent_graph(op, direction="forward", layout=0, layers=1, lengths=False, states=False,
                    seed=0, scale=1.0, **attrs):
    """A graph of `layers` nodes of `op` with random weights: inputs X (and lengths, initial
    states), outputs the last node's Y and Y_h. Returns (model, feeds maker)."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    nodes, inits, inputs = [], [], []
    x_shape = [T, B, I] if layout == 0 else [B, T, I]
    inputs.append(helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape))
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, [B]))
    seq, width = "X", I
    for layer in range(layers):
        g = G[op]
        for name, shape in (("W", (D, g * H, width)), ("R", (D, g * H, H)), ("B", (D, 2 * g * H))):
            value = (scale * rng.uniform(-0.5, 0.5, shape)).astype(np.float32)
            inits.append(numpy_helper.from_array(value, f"{name}{layer}"))
        node_inputs = [seq, f"W{layer}", f"R{layer}", f"B{layer}", "lengths" if lengths else ""]
        if states:
            state_shape = [D, B, H] if layout == 0 else [B, D, H]
            for kind in ("h", "c")[:2 if op == "LSTM" else 1]:
                inputs.append(helper.make_tensor_value_info(f"{kind}0_{layer}", TensorProto.FLOAT,
                                                            state_shape))
                node_inputs.append(f"{kind}0_{layer}")
        outputs = [f"Y{layer}", f"Y_h{layer}"]
        nodes.append(helper.make_node(op, node_inputs, outputs, hidden_size=H, direction=direction,
                                      layout=layout, **attrs))
        if layer + 1 < layers:
            if layout == 0:
                nodes.append(helper.make_node("Transpose", [f"Y{layer}"], [f"Yt{layer}"],
                                              perm=[0, 2, 1, 3]))
            inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"shape{layer}"))
            nodes.append(helper.make_node("Reshape", [f"Yt{layer}" if layout == 0 else f"Y{layer}",
                                                      f"shape{layer}"], [f"seq{layer}"]))
            seq, width = f"seq{layer}", D * H
    graph = helper.make_graph(nodes, "g", inputs, [
        helper.make_tensor_value_info(f"Y{layers - 1}", TensorProto.FLOAT, None),
        helper.make_tensor_value_info(f"Y_h{layers - 1}", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


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


def model_state(model, op, h0, c0, D):
    """The graph's per-layer states as Model's (L*D, B, H) state, with zero rows for the zero
    half of a padded direction."""
    if h0 is None:
        return None
    if model.num_directions == D:
        return (h0, c0) if op == "LSTM" else h0
    pad = [np.zeros_like(h0), h0] if D == 1 else None  # reverse-only nodes: the reverse row
    h = np.stack(pad, 1).reshape(-1, B, H)
    if op == "LSTM":
        return h, np.stack([np.zeros_like(c0), c0], 1).reshape(-1, B, H)
    return h


def compare_sequence(model, op, direction, layout, outputs, x, lens, h0, c0, layers):
    D = 2 if direction == "bidirectional" else 1
    y_onnx, yh_onnx = outputs
    if layout == 0:
        y_onnx, yh_onnx = y_onnx.transpose(2, 0, 1, 3), yh_onnx.transpose(1, 0, 2)
    y_onnx, yh_onnx = y_onnx.reshape(B, T, D * H), yh_onnx.reshape(B, D * H)  # (B, D, H) rows
    y, state = model.forward(x, state=model_state(model, op, h0, c0, D), lengths=lens)
    h_n = state[0] if op == "LSTM" else state
    if direction == "reverse":
        assert not np.any(y[..., :H]), "the zero forward half must output zeros"
        y, last = y[..., H:], h_n[-1]
    else:
        last = h_n[-D:].transpose(1, 0, 2).reshape(B, D * H)
    np.testing.assert_allclose(y, y_onnx, rtol=F32_RTOL, atol=F32_ATOL)
    np.testing.assert_allclose(last, yh_onnx, rtol=F32_RTOL, atol=F32_ATOL)


CASES = [(op, attrs) for op, attrs in (("LSTM", {}), ("GRU", {"linear_before_reset": 1}),
                                       ("GRU", {"linear_before_reset": 0}), ("RNN", {}),
                                       ("RNN", {"activations": ["Relu"]}))]


@pytest.mark.parametrize("op, attrs", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layers, lengths, states", [(1, False, False), (2, True, True)])
def test_recurrent_nodes_match_onnxruntime(op, attrs, direction, layers, lengths, states):
    D = 2 if direction == "bidirectional" else 1
    if "activations" in attrs:
        attrs = {"activations": attrs["activations"] * D}
    graph = recurrent_graph(op, direction, 0, layers, lengths, states, **attrs)
    model = rnnext.from_onnx(graph)
    assert model.num_layers == layers
    x, lens, h0, c0 = random_inputs(op, D, layers, lengths, states)
    outputs = run_ort(graph, feeds_for(0, x, lens, h0, c0, D, layers))
    compare_sequence(model, op, direction, 0, outputs, x, lens, h0, c0, layers)


@pytest.mark.parametrize("op, attrs", CASES[:3], ids=lambda c: str(c))
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_layout_1_matches_onnx_reference_evaluator(op, attrs, direction):
    from onnx.reference import ReferenceEvaluator

    graph = recurrent_graph(op, direction, 1, layers=2, **attrs)
    x, *_ = random_inputs(op, 2 if direction == "bidirectional" else 1, 2, False, False)
    outputs = ReferenceEvaluator(graph).run(None, {"X": x})
    compare_sequence(rnnext.from_onnx(graph), op, direction, 1, outputs, x, None, None, None, 2)


@pytest.mark.parametrize("op, attrs", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_layout_1_with_lengths_and_states_matches_onnxruntime(op, attrs, direction):
    """ONNX Runtime runs only layout 0: the layout-1 graph is compared through its layout-0
    twin, fed the transposed inputs."""
    D = 2 if direction == "bidirectional" else 1
    if "activations" in attrs:
        attrs = {"activations": attrs["activations"] * D}
    graph = recurrent_graph(op, direction, 1, 2, True, True, **attrs)
    x, lens, h0, c0 = random_inputs(op, D, 2, True, True)
    outputs = run_ort(with_layout_0(graph), feeds_for(0, x, lens, h0, c0, D, 2))
    compare_sequence(rnnext.from_onnx(graph), op, direction, 0, outputs, x, lens, h0, c0, 2)


def test_large_clip_is_exact_and_small_clip_is_refused():
    graph = recurrent_graph("LSTM", "bidirectional", clip=25.0, scale=40.0)
    x, *_ = random_inputs("LSTM", 2, 1, False, False)
    outputs = run_ort(graph, {"X": x.transpose(1, 0, 2)})
    compare_sequence(rnnext.from_onnx(graph), "LSTM", "bidirectional", 0, outputs, x, None, None,
                     None, 1)
    with pytest.raises(OnnxImportError, match="LSTM node.*clip=3.0 is not supported"):
        rnnext.from_onnx(recurrent_graph("LSTM", clip=3.0))


def test_zero_peepholes_are_accepted_and_others_refused():
    for value, ok in ((0.0, True), (0.1, False)):
        graph = recurrent_graph("LSTM")
        graph.graph.initializer.append(numpy_helper.from_array(
            np.full((1, 3 * H), value, np.float32), "P"))
        node = graph.graph.node[0]
        node.input.extend(["", "", "P"])
        if ok:
            x, *_ = random_inputs("LSTM", 1, 1, False, False)
            compare_sequence(rnnext.from_onnx(graph), "LSTM", "forward", 0,
                             run_ort(graph, {"X": x.transpose(1, 0, 2)}), x, None, None, None, 1)
        else:
            with pytest.raises(OnnxImportError, match="peepholes"):
                rnnext.from_onnx(graph)


@pytest.mark.parametrize("attrs, expected", [
    ({"activations": ["HardSigmoid", "Tanh", "Tanh"]}, "activations .* are not supported"),
    ({"activation_alpha": [0.5]}, "activation_alpha is not supported"),
    ({"input_forget": 1}, "input_forget=1"),
])
def test_unsupported_attributes_are_refused_by_name(attrs, expected):
    with pytest.raises(OnnxImportError, match=expected):
        rnnext.from_onnx(recurrent_graph("LSTM", **attrs))


def _append(graph, op, inputs, output, **attrs):
    graph.graph.node.append(helper.make_node(op, inputs, [output], **attrs))
    del graph.graph.output[:]
    graph.graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, None))


def test_unsupported_graphs_are_refused_by_name():
    graph = recurrent_graph("GRU")
    _append(graph, "Relu", ["Y0"], "out")
    with pytest.raises(OnnxImportError, match="Relu node .* is not supported on the path"):
        rnnext.from_onnx(graph)

    graph = recurrent_graph("GRU", "bidirectional")
    del graph.graph.output[0]
    with pytest.raises(OnnxImportError, match="its Y_h .* is used"):
        rnnext.from_onnx(graph)

    graph = recurrent_graph("GRU")
    graph.graph.initializer.append(numpy_helper.from_array(np.ones((1, B, H), np.float32), "h0"))
    graph.graph.node[0].input.extend(["h0"])
    with pytest.raises(OnnxImportError, match="initial_h must be zeros or a graph input"):
        rnnext.from_onnx(graph)

    graph = recurrent_graph("RNN", lengths=True)
    graph.graph.initializer.append(numpy_helper.from_array(np.array(-1, np.int64), "last"))
    _append(graph, "Gather", ["Y0", "last"], "out", axis=0)
    with pytest.raises(OnnxImportError, match="time index -1 while its nodes take sequence_lens"):
        rnnext.from_onnx(graph)

    graph = recurrent_graph("RNN", "bidirectional")
    graph.graph.initializer.extend([numpy_helper.from_array(np.array(-1, np.int64), "last"),
                                    numpy_helper.from_array(np.array([0, -1], np.int64), "bf")])
    graph.graph.node.append(helper.make_node("Gather", ["Y0", "last"], ["dbh"], axis=0))
    _append(graph, "Reshape", ["dbh", "bf"], "out")  # (D, B, H) -> (D, B*H): meaningless
    with pytest.raises(OnnxImportError, match=r"merges axes \('B', 'H'\)"):
        rnnext.from_onnx(graph)

    graph = recurrent_graph("RNN")
    graph.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "first"))
    _append(graph, "Gather", ["Y0", "first"], "out", axis=0)
    with pytest.raises(OnnxImportError, match="only the last time step"):
        rnnext.from_onnx(graph)


def test_dense_head_gemm_and_matmul_add_match_onnxruntime():
    rng = np.random.default_rng(5)
    for kind in ("gemm", "matmul"):
        graph = recurrent_graph("GRU", "bidirectional", layers=2)
        W = rng.standard_normal((2, 2 * H)).astype(np.float32)
        b = rng.standard_normal(2).astype(np.float32)
        graph.graph.initializer.extend([numpy_helper.from_array(np.array(-1, np.int64), "last"),
                                        numpy_helper.from_array(np.array([0, -1], np.int64), "bf"),
                                        numpy_helper.from_array(W, "W"),
                                        numpy_helper.from_array(W.T.copy(), "Wt"),
                                        numpy_helper.from_array(b[None], "b")])
        graph.graph.node.append(helper.make_node("Gather", ["Y1", "last"], ["last_step"], axis=0))
        graph.graph.node.append(helper.make_node("Transpose", ["last_step"], ["bdh"],
                                                 perm=[1, 0, 2]))
        graph.graph.node.append(helper.make_node("Reshape", ["bdh", "bf"], ["features"]))
        if kind == "gemm":
            graph.graph.node.append(helper.make_node("Gemm", ["features", "W", "b"], ["logits"],
                                                     transB=1, alpha=0.5, beta=2.0))
        else:
            graph.graph.node.append(helper.make_node("MatMul", ["features", "Wt"], ["proj"]))
            graph.graph.node.append(helper.make_node("Add", ["b", "proj"], ["logits"]))
        _append(graph, "Softmax", ["logits"], "probs", axis=-1)
        model = rnnext.from_onnx(graph)
        assert (model.output, model.activation) == ("many_to_one", "softmax")
        x, *_ = random_inputs("GRU", 2, 2, False, False)
        expected = run_ort(graph, {"X": x.transpose(1, 0, 2)})[0]
        np.testing.assert_allclose(model.predict(x), expected, rtol=F32_RTOL, atol=F32_ATOL)


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
    model = rnnext.from_onnx(buffer.getvalue())
    x = np.random.default_rng(2).standard_normal((B, T, I)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x if batch_first else x.transpose(1, 0, 2).copy()))
    expected = expected.numpy()
    if many_to_one:
        np.testing.assert_allclose(model.predict(x), expected, rtol=F32_RTOL, atol=F32_ATOL)
    else:
        np.testing.assert_allclose(model.forward(x)[0], expected.transpose(1, 0, 2),
                                   rtol=F32_RTOL, atol=F32_ATOL)


# ------------------------------------------------------------------------------------------------
# export


EXPORTS = [
    dict(cell="lstm", num_layers=2, bidirectional=True, output_size=3, activation="softmax"),
    dict(cell="lstm", num_layers=1),
    dict(cell="gru", num_layers=2, output_size=2, output="many_to_many", activation="sigmoid"),
    dict(cell="gru", bidirectional=True, linear_before_reset=False),
    dict(cell="rnn", nonlinearity="relu", num_layers=3, output_size=4),
    dict(cell="rnn", bidirectional=True, output_size=2, output="many_to_many"),
]


@pytest.mark.parametrize("arch", EXPORTS, ids=lambda a: "-".join(map(str, a.values())))
def test_to_onnx_runs_in_onnxruntime_and_imports_back(tmp_path, arch):
    model = rnnext.Model(input_size=I, hidden_size=H, seed=3, **arch)
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    x = np.random.default_rng(4).standard_normal((B, T, I)).astype(np.float32)
    outputs = run_ort(onnx.load(path), {"x": x})
    y, state = model.forward(x)
    states = state if isinstance(state, tuple) else (state,)
    assert len(outputs) == 1 + len(states)
    for got, want in zip(outputs, (y, *states)):
        np.testing.assert_allclose(got, want, rtol=F32_RTOL, atol=F32_ATOL)
    back = rnnext.from_onnx(str(path))
    assert repr(back) == repr(model)
    for name, value in model.params.items():
        np.testing.assert_array_equal(back.params[name], value)


def test_to_onnx_checks_opset():
    with pytest.raises(ValueError, match="opset: expected >= 14, got 11"):
        rnnext.Model("gru", 2, 3).to_onnx(opset=11)
