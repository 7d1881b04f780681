"""ONNX export (to_onnx), against ONNX Runtime: every layer kind and readout, with and without
the lengths input (random lengths, 1 and T among them); from_onnx reads every export back to
the same layer list and bitwise-equal parameters."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
from onnx import helper, numpy_helper  # noqa: E402

import rnnext  # noqa: E402
from rnnext import layers as L  # noqa: E402
from rnnext.onnx_export import spec_to_onnx  # noqa: E402
from rnnext.onnx_io import PADDING_IDX_KEY, OnnxImportError, onnx_layers  # noqa: E402

from conftest import F32_ATOL, F32_RTOL, forward_imported, state_parts  # noqa: E402
from test_onnx import run_ort  # noqa: E402

I, H, B, T = 3, 4, 6, 7
VOCAB = 11


def model_inputs(spec, lengths, seed):
    """(x: float32 (B, T, I), or int64 ids (B, T) with an embedding; lengths (B,) int32 with 1
    and T among them, or None)."""
    rng = np.random.default_rng(seed)
    if spec.embedding is None:
        x = rng.standard_normal((B, T, I)).astype(np.float32)
    else:
        x = rng.integers(0, spec.embedding.vocab_size, (B, T))
    if not lengths:
        return x, None
    lens = rng.integers(1, T + 1, B).astype(np.int32)
    lens[:2] = 1, T
    return x, lens


def check_export(tmp_path, layers, input_size, opset=17, lengths=False, seed=3):
    """Exports random parameters of the layer list; ONNX Runtime's outputs (y and the final
    states) against Model.forward (the reference, the compiled core checked on the way), with
    the lengths when the graph takes them; from_onnx gives back the layers, the parameters
    bit for bit and the same predictions."""
    spec = L.build(layers, input_size)
    params = L.init_params(spec, seed=seed)
    path = tmp_path / "model.onnx"
    spec_to_onnx(spec, params, path, opset=opset, lengths=lengths)
    x, lens = model_inputs(spec, lengths, seed + 1)
    feeds = {"x": x} if lens is None else {"x": x, "lengths": lens}
    outputs = run_ort(onnx.load(path), feeds)
    y, state = forward_imported((layers, input_size, params), x, lengths=lens)
    expected = [y, *state_parts(state)]
    assert len(outputs) == len(expected)
    for k, (got, want) in enumerate(zip(outputs, expected)):
        np.testing.assert_allclose(got, want, rtol=F32_RTOL, atol=F32_ATOL,
                                   err_msg=f"output {k}")
    back_layers, back_input_size, back_params = onnx_layers(str(path))
    assert (back_layers, back_input_size) == (list(layers), input_size)
    assert list(back_params) == list(params)
    for name, value in params.items():
        np.testing.assert_array_equal(back_params[name], value, err_msg=name)
    original = rnnext.Model(layers, input_size, params=params)
    np.testing.assert_array_equal(rnnext.from_onnx(str(path)).predict(x, lengths=lens),
                                  original.predict(x, lengths=lens))


EXPORTS = {
    "lstm-2-bi-softmax": L.shorthand("lstm", I, H, 2, True, output_size=3, activation="softmax"),
    "lstm": L.shorthand("lstm", I, H),
    "gru-2-many-sigmoid": L.shorthand("gru", I, H, 2, output_size=2, output="many_to_many",
                                      activation="sigmoid"),
    "gru-before-bi": L.shorthand("gru", I, H, bidirectional=True, linear_before_reset=False),
    "rnn-relu-3": L.shorthand("rnn", I, H, 3, nonlinearity="relu", output_size=4),
    "rnn-bi-many": L.shorthand("rnn", I, H, bidirectional=True, output_size=2,
                               output="many_to_many"),
    "reverse-activations-clip": ([
        L.LSTM(H, direction="reverse", activations=("hard_sigmoid", "leaky_relu", "elu"),
               activation_alpha=(0.25, 0.125, 0.5), activation_beta=(0.375, 0.0, 0.0), clip=1.5),
        L.LSTM(H, direction="reverse", peepholes=True, input_forget=True)], I),
    "chain-merges-final-dense": ([
        L.LSTM(5, direction="bidirectional", merge="sum", peepholes=True),
        L.GRU(3, reset_after=False, direction="bidirectional", merge="mul", clip=0.5),
        L.RNN(6, activations=("softsign",), direction="bidirectional", merge="ave"),
        L.Readout("final"), L.Dense(4, "relu"), L.Dense(2, "tanh")], I),
    "chain-last": ([L.GRU(2, direction="reverse"), L.LSTM(5, direction="bidirectional"),
                    L.Readout("last"), L.Dense(3, "sigmoid")], I),
    "mean": ([L.RNN(5, activations=("scaled_tanh",), activation_alpha=(1.5,),
                    activation_beta=(0.5,)), L.Readout("mean")], I),
    "max-bi": ([L.GRU(3, direction="bidirectional", activations=("affine", "thresholded_relu"),
                      activation_alpha=(0.5, 0.25), activation_beta=(0.5, 0.0)),
                L.Readout("max"), L.Dense(2)], I),
    "embedding-padding-gru": ([L.Embedding(VOCAB, 5, padding_idx=0), L.GRU(H)], None),
    "embedding-lstm-last-dense": ([L.Embedding(VOCAB, I), L.LSTM(H, direction="bidirectional"),
                                   L.Readout("last"), L.Dense(2, "softmax")], None),
}


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("arch", EXPORTS)
def test_to_onnx_runs_in_onnxruntime_and_imports_back(tmp_path, arch, opset, lengths):
    check_export(tmp_path, *EXPORTS[arch], opset=opset, lengths=lengths)


@pytest.mark.parametrize("embedding", [False, True], ids=["x", "ids"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("readout", L.READOUTS)
def test_every_readout_reads_the_valid_steps(tmp_path, readout, direction, embedding):
    """Each readout with lengths, after two layers (the top one merged by sum when
    bidirectional) and before two dense layers: on every step for "sequence" (zero past each
    length, as Model), else on the last valid step, Y_h, or the mean or max over the valid
    steps; a reverse direction's last valid output is its step len-1."""
    layers = [L.Embedding(VOCAB, I, padding_idx=2)] if embedding else []
    layers += [L.LSTM(H, direction=direction, peepholes=True),
               L.GRU(3, direction=direction,
                     merge="sum" if direction == "bidirectional" else "concat")]
    layers += [] if readout == "sequence" else [L.Readout(readout)]
    layers += [L.Dense(5, "relu"), L.Dense(2, "softmax")]
    check_export(tmp_path, layers, None if embedding else I, lengths=True)


@pytest.mark.parametrize("readout", L.READOUTS)
def test_opset_14_with_lengths(tmp_path, readout):
    """The oldest opset to_onnx writes: Reduce ops take their axes as attributes."""
    layers = [L.RNN(H, direction="bidirectional", merge="ave"), L.Readout(readout), L.Dense(2)]
    check_export(tmp_path, layers if readout != "sequence" else layers[::2], I, opset=14,
                 lengths=True)


def test_model_to_onnx_and_from_onnx(tmp_path):
    """The public functions: Model.to_onnx (lengths=True: a second input) and from_onnx give
    back the same Model, whose predictions with lengths equal ONNX Runtime's."""
    model = rnnext.Model([L.Embedding(VOCAB, I, padding_idx=3), L.LSTM(H, direction="reverse"),
                          L.GRU(2), L.Readout("mean"), L.Dense(3)], seed=1)
    proto = model.to_onnx(tmp_path / "m.onnx", lengths=True)
    assert [i.name for i in proto.graph.input] == ["x", "lengths"]
    back = rnnext.from_onnx(tmp_path / "m.onnx")
    assert back.layers == model.layers
    x, lens = model_inputs(model.spec, True, 4)
    np.testing.assert_array_equal(back.predict(x, lengths=lens), model.predict(x, lengths=lens))
    np.testing.assert_allclose(run_ort(proto, {"x": x, "lengths": lens})[0],
                               model.predict(x, lengths=lens), rtol=F32_RTOL, atol=F32_ATOL)
    assert [i.name for i in model.to_onnx().graph.input] == ["x"]


@pytest.mark.parametrize("layers, expected", [
    ([L.Embedding(10, I, mask_zero=True), L.GRU(H)],
     r"layers\[0\] \(Embedding\): mask_zero=True: .*pad the ids on the right.*lengths=True"),
    ([L.Masking(0.0), L.GRU(H)],
     r"layers\[0\] \(Masking\): a masked step keeps the state.*lengths=True"),
    ([L.GRU(H), L.LSTM(H, proj_size=2)], r"layers\[1\] \(LSTM\): proj_size=2"),
    ([L.RNN(H, activations=("linear",))],
     r"layers\[0\] \(RNN\): activation 'linear' .*affine with alpha 1, beta 0"),
])
def test_to_onnx_refuses_what_does_not_map_naming_the_layer(layers, expected):
    spec = L.build(layers, None if isinstance(layers[0], L.Embedding) else I)
    with pytest.raises(ValueError, match=expected):
        spec_to_onnx(spec, L.init_params(spec, seed=0), lengths=True)


def test_to_onnx_checks_its_arguments():
    spec = L.build([L.GRU(3)], 2)
    with pytest.raises(ValueError, match="opset: expected >= 14, got 11"):
        spec_to_onnx(spec, L.init_params(spec), opset=11)
    with pytest.raises(TypeError, match="lengths: expected a bool, got int 1"):
        spec_to_onnx(spec, L.init_params(spec), lengths=1)


def exported(layers, lengths=True):
    spec = L.build(layers, I if not isinstance(layers[0], L.Embedding) else None)
    return spec_to_onnx(spec, L.init_params(spec, seed=0), lengths=lengths)


def producer(graph, op):
    return next(node for node in graph.node if node.op_type == op)


def output_from(model, name):
    """The graph with `name` as its first output (what follows it left dangling)."""
    model.graph.output[0].name = name
    return model


def set_input(model, op, index, value):
    """The graph with input `index` of its first `op` node a new constant."""
    name = f"{op}_{index}_changed"
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    producer(model.graph, op).input[index] = name
    return model


def zeroed_after_mask(model):
    """The graph with Where(valid, ., 0) between the -inf mask and ReduceMax."""
    where = producer(model.graph, "Where")
    model.graph.initializer.append(numpy_helper.from_array(np.float32(0.0), "zero"))
    model.graph.node.append(helper.make_node("Where", [where.input[0], where.output[0], "zero"],
                                             ["zeroed"]))
    producer(model.graph, "ReduceMax").input[0] = "zeroed"
    return model


BROKEN = {
    "last-step-2": ("last", lambda m: set_input(m, "Sub", 1, np.int64(2)),
                    "GatherND node .*expected the last valid step"),
    "mask-only": ("max", lambda m: output_from(m, producer(m.graph, "Where").output[0]),
                  "masks its output for a max over time"),
    "zero-after-mask": ("max", zeroed_after_mask, "Where node .*fills 0.0 past the lengths"),
    "sum-only": ("mean", lambda m: output_from(m, producer(m.graph, "ReduceSum").output[0]),
                 "sums over time"),
    "div-by-constant": ("mean", lambda m: set_input(m, "Div", 1, np.float32(2.0)),
                       "Div node .*divided by the sequence_lens"),
    "fill-1": ("sequence", lambda m: set_input(m, "Where", 2, np.float32(1.0)),
               "Where node .*fills 1.0 past the lengths"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_import_refuses_a_lengths_readout_it_cannot_map_exactly(case):
    readout, change, expected = BROKEN[case]
    model = exported([L.GRU(H), L.Readout(readout) if readout != "sequence" else L.Dense(2)])
    with pytest.raises(OnnxImportError, match=expected):
        onnx_layers(change(model))


def test_padding_idx_travels_in_metadata_props():
    model = exported([L.Embedding(VOCAB, I, padding_idx=4), L.GRU(H)])
    assert {p.key: p.value for p in model.metadata_props} == {PADDING_IDX_KEY: "4"}
    assert onnx_layers(model)[0][0] == L.Embedding(VOCAB, I, padding_idx=4)
    helper.set_model_props(model, {PADDING_IDX_KEY: str(VOCAB)})
    with pytest.raises(OnnxImportError, match=f"metadata_props.*padding_idx.*'{VOCAB}'"):
        onnx_layers(model)
