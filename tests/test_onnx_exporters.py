"""ONNX import of what torch.onnx.export writes, the way people call it: the default exporter
(dynamo=True), the same without its graph optimizer (optimize=False) and the TorchScript one
(dynamo=False), with dynamic batch and time axes where the exporter keeps them. from_onnx's
Model must give the torch module's eval() output and ONNX Runtime's output of the same file, at
a batch and time different from the export's example where they are dynamic."""
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed")
onnx = pytest.importorskip("onnx", reason="onnx not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

from rnnext.onnx_io import OnnxImportError, from_onnx  # noqa: E402

from conftest import assert_f32_close  # noqa: E402

nn = torch.nn
I, H, VOCAB, OUT = 3, 4, 11, 2
EXAMPLE_B, EXAMPLE_T = 2, 5   # the export's example input
B, T = 3, 7                   # the test input, on the axes the graph keeps dynamic

EXPORTERS = {"dynamo": {"dynamo": True}, "dynamo-unoptimized": {"dynamo": True, "optimize": False},
             "torchscript": {"dynamo": False}}
# torch 2.13's dynamo exporter fixes the time axis of recurrent modules at the example's:
# torch.export traces them with a static T (Dim.DYNAMIC on that axis fails with "tracing
# inferred a static shape"; a named Dim is specialized without a word, left dynamic in the graph
# input of a time-major module but fixed in its Reshape targets): its graphs run at that T only


# ------------------------------------------------------------------------------------------------
# the modules: each takes x (float features, or int64 token ids) batch-first unless time_major


class Sequence(nn.Module):
    """A recurrent module's output sequence (what nn.LSTM(...)(x)[0] is)."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


class EmbeddingLastStep(nn.Module):
    """Token ids -> LSTM -> the last step -> Linear -> softmax."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, I)
        self.rnn = nn.LSTM(I, H, batch_first=True)
        self.fc = nn.Linear(H, OUT)

    def forward(self, ids):
        return torch.softmax(self.fc(self.rnn(self.embedding(ids))[0][:, -1]), -1)


class EmbeddingBidirectionalFinal(nn.Module):
    """Time-major token ids -> bidirectional LSTM -> cat(h_n[-2], h_n[-1]) -> Linear."""

    def __init__(self, layers):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, I)
        self.rnn = nn.LSTM(I, H, num_layers=layers, bidirectional=True)
        self.fc = nn.Linear(2 * H, OUT)

    def forward(self, ids):
        _, (h_n, _) = self.rnn(self.embedding(ids))
        return self.fc(torch.cat([h_n[-2], h_n[-1]], 1))


class TwoModules(nn.Module):
    """LSTM -> bidirectional GRU of another size, two modules in a row."""

    def __init__(self):
        super().__init__()
        self.first = nn.LSTM(I, 5, batch_first=True)
        self.second = nn.GRU(5, H, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.second(self.first(x)[0])[0]


class PooledMLP(nn.Module):
    """GRU -> mean or max over time -> Linear, tanh -> Linear, sigmoid."""

    def __init__(self, pool):
        super().__init__()
        self.pool = pool
        self.rnn = nn.GRU(I, H, batch_first=True)
        self.hidden = nn.Linear(H, 6)
        self.fc = nn.Linear(6, OUT)

    def forward(self, x):
        y = self.rnn(x)[0]
        y = y.mean(1) if self.pool == "mean" else y.amax(1)
        return torch.sigmoid(self.fc(torch.tanh(self.hidden(y))))


class FinalStateMLP(nn.Module):
    """2-layer LSTM -> h_n[-1] -> Linear, relu -> Linear (MatMul and Add: no batch axis)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(I, H, num_layers=2, batch_first=True)
        self.hidden = nn.Linear(H, 6)
        self.fc = nn.Linear(6, OUT)

    def forward(self, x):
        return self.fc(torch.relu(self.hidden(self.rnn(x)[1][0][-1])))


class SequenceMLP(nn.Module):
    """Bidirectional RNN (tanh) -> Linear, relu on every step -> Linear, softmax."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(I, H, batch_first=True, bidirectional=True)
        self.hidden = nn.Linear(2 * H, 6)
        self.fc = nn.Linear(6, OUT)

    def forward(self, x):
        return torch.softmax(self.fc(torch.relu(self.hidden(self.rnn(x)[0]))), -1)


class LastStep(nn.Module):
    """Time-major 2-layer RNN (tanh) -> y[-1] -> Linear."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(I, H, num_layers=2)
        self.fc = nn.Linear(H, OUT)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][-1])


# name: (module factory, takes token ids, time-major input, returns a sequence)
ZOO = {
    "lstm": (lambda: Sequence(nn.LSTM(I, H)), False, True, True),
    "gru-2-bidirectional": (lambda: Sequence(nn.GRU(I, H, num_layers=2, bidirectional=True,
                                                    batch_first=True)), False, False, True),
    "rnn-relu": (lambda: Sequence(nn.RNN(I, H, nonlinearity="relu", batch_first=True)),
                 False, False, True),
    "rnn-2-last-step": (LastStep, False, True, False),
    "embedding-lstm-last-softmax": (EmbeddingLastStep, True, False, False),
    "embedding-bilstm-final-cat": (lambda: EmbeddingBidirectionalFinal(1), True, True, False),
    "embedding-bilstm-2-final-cat": (lambda: EmbeddingBidirectionalFinal(2), True, True, False),
    "lstm-then-bigru": (TwoModules, False, False, True),
    "gru-mean-mlp": (lambda: PooledMLP("mean"), False, False, False),
    "gru-max-mlp": (lambda: PooledMLP("max"), False, False, False),
    "lstm-2-final-mlp": (FinalStateMLP, False, False, False),
    "birnn-sequence-mlp": (SequenceMLP, False, False, True),
}


def inputs(ids, time_major, batch, steps, seed=0):
    """(batch-first x for rnnext, the same x as the module and the graph take)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, (batch, steps)) if ids else \
        rng.standard_normal((batch, steps, I)).astype(np.float32)
    return x, (np.ascontiguousarray(x.swapaxes(0, 1)) if time_major else x)


def export(module, x, exporter, dynamic):
    """The bytes of torch.onnx.export(module, (x,), f, **exporter's arguments), with the batch
    and time axes dynamic or not."""
    time_axis, batch_axis = (0, 1) if module.time_major else (1, 0)
    kwargs = dict(EXPORTERS[exporter])
    if kwargs["dynamo"]:
        pytest.importorskip("onnxscript", reason="torch's dynamo exporter needs onnxscript")
    if dynamic and kwargs["dynamo"]:
        kwargs["dynamic_shapes"] = ({batch_axis: torch.export.Dim("batch"),
                                     time_axis: torch.export.Dim("time")},)
    elif dynamic:
        kwargs.update(input_names=["x"], dynamic_axes={"x": {batch_axis: "batch",
                                                             time_axis: "time"}})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), buffer, **kwargs)
    return buffer.getvalue()


def build(name):
    factory, ids, time_major, sequence = ZOO[name]
    torch.manual_seed(sum(map(ord, name)))
    module = factory().eval()
    module.ids, module.time_major, module.sequence = ids, time_major, sequence
    return module


def dynamic_axes(model):
    """The axes of the graph input that the graph leaves dynamic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [k for k, d in enumerate(dims) if not d.HasField("dim_value")]


def check_import(module, data, batch, steps):
    """from_onnx(data).predict equals the module and ONNX Runtime on a (batch, steps) input."""
    x, x_graph = inputs(module.ids, module.time_major, batch, steps)
    with torch.no_grad():
        expected = module(torch.from_numpy(x_graph)).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    from_ort = session.run(None, {name: x_graph})[0]
    got = from_onnx(data).predict(x)
    if module.sequence and module.time_major:
        got = got.swapaxes(0, 1)
    assert_f32_close(from_ort, expected, "onnxruntime against torch")
    assert_f32_close(got, expected, "rnnext against torch")
    assert_f32_close(got, from_ort, "rnnext against onnxruntime")


# ------------------------------------------------------------------------------------------------
# the zoo


# the unoptimized dynamo export (weights computed by ops) on the modules of different structure
UNOPTIMIZED = ["lstm", "rnn-2-last-step", "embedding-bilstm-2-final-cat", "lstm-then-bigru",
               "gru-max-mlp", "lstm-2-final-mlp", "birnn-sequence-mlp"]


@pytest.mark.parametrize("name, exporter",
                         [(name, e) for name in ZOO for e in ("dynamo", "torchscript")] +
                         [(name, "dynamo-unoptimized") for name in UNOPTIMIZED])
def test_exported_graphs_match_torch_and_onnxruntime(name, exporter):
    module = build(name)
    example = inputs(module.ids, module.time_major, EXAMPLE_B, EXAMPLE_T)[1]
    data = export(module, example, exporter, dynamic=True)
    model = onnx.load_from_string(data)
    time_axis, batch_axis = (0, 1) if module.time_major else (1, 0)
    assert batch_axis in dynamic_axes(model)
    keeps_time = not EXPORTERS[exporter]["dynamo"]
    assert (time_axis in dynamic_axes(model)) >= keeps_time
    check_import(module, data, B, T if keeps_time else EXAMPLE_T)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", ["lstm", "rnn-relu", "lstm-then-bigru",
                                  "embedding-bilstm-final-cat"])
def test_static_exports_import_and_run_at_their_shape(name, exporter):
    """Without dynamic axes the exporters write the example's batch and time into the Reshape
    targets: the importer reads them from the graph input's static shape."""
    module = build(name)
    example = inputs(module.ids, module.time_major, EXAMPLE_B, EXAMPLE_T)[1]
    data = export(module, example, exporter, dynamic=False)
    assert dynamic_axes(onnx.load_from_string(data)) == []
    check_import(module, data, EXAMPLE_B, EXAMPLE_T)


@pytest.mark.parametrize("name", ["embedding-lstm-last-softmax", "lstm-then-bigru", "lstm"])
def test_default_exports_of_a_batch_of_one_import(name):
    """torch.onnx.export(m, (x,), f) on a batch of one, as a user tracing one example calls it:
    the dynamo exporter fixes B at 1 and writes Reshape targets such as (T, 1, H) for Y's
    (T, B, 1, H); the imported model still runs any batch (against the torch module there,
    where ONNX Runtime cannot run the graph)."""
    module = build(name)
    example = inputs(module.ids, module.time_major, 1, EXAMPLE_T)[1]
    data = export(module, example, "dynamo", dynamic=False)
    check_import(module, data, 1, EXAMPLE_T)
    x, x_graph = inputs(module.ids, module.time_major, B, EXAMPLE_T)
    with torch.no_grad():
        expected = module(torch.from_numpy(x_graph)).numpy()
    got = from_onnx(data).predict(x)
    assert_f32_close(got.swapaxes(0, 1) if module.sequence and module.time_major else got,
                     expected, "rnnext at another batch against torch")


# ------------------------------------------------------------------------------------------------
# what the exporters write, so that the tests above prove the folding


def _recurrent_nodes(model):
    return [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]


def _computed_reshape_targets(model):
    """Reshape nodes whose target is computed (from Shape of data), not a stored constant."""
    constants = {t.name for t in model.graph.initializer} | \
        {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n for n in model.graph.node if n.op_type == "Reshape" and n.input[1] not in constants]


def test_unoptimized_dynamo_graph_computes_its_weights():
    """dynamo=True, optimize=False slices PyTorch's weights into gate blocks and concatenates
    them: W, R and B of the LSTM nodes are computed tensors, folded on import."""
    module = build("lstm-2-final-mlp")
    example = inputs(False, False, EXAMPLE_B, EXAMPLE_T)[1]
    data = export(module, example, "dynamo-unoptimized", dynamic=True)
    model = onnx.load_from_string(data)
    initializers = {t.name for t in model.graph.initializer}
    nodes = _recurrent_nodes(model)
    assert len(nodes) == 2
    assert all(name not in initializers for node in nodes for name in node.input[1:4])
    check_import(module, data, B, EXAMPLE_T)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dynamic_graphs_compute_reshape_targets_from_shape(exporter):
    """A bidirectional stack's Y is reshaped to (T, B, 2H) with a target computed from Shape of
    Y by the default exporter (the TorchScript exporter stores [0, 0, -1]); its zero initial
    states are Expand or ConstantOfShape of Shape(x) in both."""
    module = build("gru-2-bidirectional")
    example = inputs(False, False, EXAMPLE_B, EXAMPLE_T)[1]
    data = export(module, example, exporter, dynamic=True)
    model = onnx.load_from_string(data)
    assert len(_computed_reshape_targets(model)) == (2 if exporter == "dynamo" else 0)
    assert {n.op_type for n in model.graph.node} & {"Expand", "ConstantOfShape"}
    check_import(module, data, B, EXAMPLE_T if exporter == "dynamo" else T)


def test_dynamo_unrolls_nn_rnn_into_steps():
    """The default exporter writes a bidirectional nn.RNN as per-step MatMul, Add and Tanh
    nodes, no RNN node: the importer reads the steps back as one bidirectional layer."""
    module = build("birnn-sequence-mlp")
    example = inputs(False, False, EXAMPLE_B, EXAMPLE_T)[1]
    data = export(module, example, "dynamo", dynamic=True)
    model = onnx.load_from_string(data)
    assert _recurrent_nodes(model) == []
    assert sum(n.op_type == "Tanh" for n in model.graph.node) == 2 * EXAMPLE_T
    check_import(module, data, B, EXAMPLE_T)


# ------------------------------------------------------------------------------------------------
# refusals name the node and why


class LastDirectionOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(I, H, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.rnn(x)[1][-1]


class BackwardThenForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(I, H, batch_first=True, bidirectional=True)

    def forward(self, x):
        h_n = self.rnn(x)[1]
        return torch.cat([h_n[-1], h_n[-2]], 1)


class CellState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(I, H, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[1][1][-1]


class LearnedInitialState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(I, H, batch_first=True)
        self.h0 = nn.Parameter(torch.ones(1, 1, H))

    def forward(self, x):
        return self.rnn(x, self.h0.expand(1, x.shape[0], H).contiguous())[0]


REFUSALS = {  # module: what both exporters' graphs are refused for, or each one's
    LastDirectionOnly: r"Gather node .*one direction.*torch.cat\(\[h_n\[-2\], h_n\[-1\]\], 1\)",
    BackwardThenForward: r"Concat node .*forward and backward final states in that order",
    CellState: r"LSTM node .*Y_c",
    LearnedInitialState: {"dynamo": r"Concat node .*unrolls nn.RNN \(tanh or relu, no initial "
                                    r"state\)",
                          "torchscript": r"RNN node .*initial_h must be zeros or a graph input"},
}


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("module", REFUSALS, ids=lambda m: m.__name__)
def test_refusals_name_the_node_and_why(module, exporter):
    expected = REFUSALS[module]
    expected = expected if isinstance(expected, str) else expected[exporter]
    torch.manual_seed(0)
    example = inputs(False, False, EXAMPLE_B, EXAMPLE_T)[1]
    module = module().eval()
    module.time_major = False
    data = export(module, example, exporter, dynamic=True)
    with pytest.raises(OnnxImportError, match=expected):
        from_onnx(data)


# ------------------------------------------------------------------------------------------------
# shape arithmetic on a graph written by hand


def _reshape_by_shape_graph(target_from_data):
    """X (T, B, I) -> bidirectional LSTM -> Y (T, B, 2H) by a Reshape whose target is
    [T, B, -1] read from Shape(X) (Gather, Cast, Unsqueeze, Concat), or, with
    target_from_data, computed from X's values."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(3)
    weights = {"W": (2, 4 * H, I), "R": (2, 4 * H, H), "B": (2, 8 * H)}
    inits = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, s).astype(np.float32), n)
             for n, s in weights.items()]
    inits += [numpy_helper.from_array(np.array(v, np.int64), n)
              for n, v in (("zero", 0), ("one", 1), ("axes", [0]), ("rest", [-1]))]
    nodes = [helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=H,
                              direction="bidirectional"),
             helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
             helper.make_node("Shape", ["X"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["time"], axis=0),
             helper.make_node("Gather", ["shape", "one"], ["batch64"], axis=0),
             helper.make_node("Cast", ["batch64"], ["batch"], to=TensorProto.INT64)]
    if target_from_data:
        nodes += [helper.make_node("ReduceMax", ["X"], ["top"], keepdims=0),
                  helper.make_node("Cast", ["top"], ["batch_from_data"], to=TensorProto.INT64)]
    batch = "batch_from_data" if target_from_data else "batch"
    nodes += [helper.make_node("Unsqueeze", ["time", "axes"], ["time1"]),
              helper.make_node("Unsqueeze", [batch, "axes"], ["batch1"]),
              helper.make_node("Concat", ["time1", "batch1", "rest"], ["target"], axis=0),
              helper.make_node("Reshape", ["Yt", "target"], ["out"], name="merge")]
    graph = helper.make_graph(
        nodes, "reshape_by_shape",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["T", "B", 2 * H])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_reshape_target_read_from_the_input_shape_matches_onnxruntime():
    model = _reshape_by_shape_graph(target_from_data=False)
    x = inputs(False, False, B, T)[0]
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    expected = session.run(None, {"X": np.ascontiguousarray(x.swapaxes(0, 1))})[0]
    assert_f32_close(from_onnx(model).predict(x), expected.swapaxes(0, 1))


def test_reshape_target_computed_from_data_values_is_refused():
    with pytest.raises(OnnxImportError, match="Reshape node 'merge': its shape must be a "
                                              "constant or computed from constants and the sizes"):
        from_onnx(_reshape_by_shape_graph(target_from_data=True))
