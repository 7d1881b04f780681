"""from_torch on state_dicts, and the command line's convert and inspect, against PyTorch and
ONNX Runtime."""
import warnings

import numpy as np
import pytest

import rnnext
from rnnext.cli import main

from conftest import F32_ATOL, F32_RTOL, keras_module

torch = pytest.importorskip("torch", reason="torch not installed")

I, H, B, T = 3, 5, 4, 6


class Net(torch.nn.Module):
    """A recurrent module with a Linear head on the last step, as people write them."""

    def __init__(self, mode="LSTM", bias=True, **kwargs):
        super().__init__()
        self.rnn = getattr(torch.nn, mode)(I, H, batch_first=True, bias=bias, **kwargs)
        D = 2 if kwargs.get("bidirectional") else 1
        self.fc = torch.nn.Linear(D * H, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        return torch.softmax(self.fc(y[:, -1]), -1)


def inputs(seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, I)).astype(np.float32)


def torch_output(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("mode, cell, kwargs", [
    ("LSTM", "lstm", dict(num_layers=2, bidirectional=True)),
    ("GRU", "gru", dict(num_layers=3)),
    ("RNN", "rnn", dict(nonlinearity="relu", bidirectional=True)),
])
def test_state_dict_with_prefixes_matches_torch(mode, cell, kwargs):
    torch.manual_seed(0)
    net = Net(mode, **kwargs).eval()
    model = rnnext.from_torch(net.state_dict(), cell=cell, prefix="rnn.", head_prefix="fc.",
                              nonlinearity=kwargs.get("nonlinearity", "tanh"),
                              output="many_to_one", activation="softmax")
    direction = "bidirectional" if kwargs.get("bidirectional") else "forward"
    layer = {"lstm": rnnext.LSTM(H, direction=direction), "gru": rnnext.GRU(H, direction=direction),
             "rnn": rnnext.RNN(H, nonlinearity=kwargs.get("nonlinearity", "tanh"),
                               direction=direction)}[cell]
    assert model.layers == tuple([layer] * kwargs.get("num_layers", 1) +
                                 [rnnext.Readout("last"), rnnext.Dense(3, "softmax")])
    x = inputs()
    np.testing.assert_allclose(model.predict(x), torch_output(net, x), rtol=F32_RTOL,
                               atol=F32_ATOL)


def test_state_dict_without_bias_and_as_numpy_matches_torch():
    torch.manual_seed(1)
    rnn = torch.nn.GRU(I, H, num_layers=2, bias=False, batch_first=True)
    state = {k: v.numpy() for k, v in rnn.state_dict().items()}
    model = rnnext.from_torch(state, cell="gru")
    x = inputs(1)
    with torch.no_grad():
        expected = rnn(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(model.forward(x)[0], expected, rtol=F32_RTOL, atol=F32_ATOL)


def test_state_dict_errors_name_the_problem():
    state = {**torch.nn.LSTM(I, H).state_dict(), "weight_xh_l0": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="'weight_xh_l0' is not a parameter"):
        rnnext.from_torch(state, cell="lstm")
    with pytest.raises(ValueError, match="cell: a state_dict needs its cell"):
        rnnext.from_torch(torch.nn.GRU(I, H).state_dict())
    with pytest.raises(ValueError, match="weight_ih_l0"):
        rnnext.from_torch(torch.nn.GRU(I, H).state_dict(), cell="lstm")
    with pytest.raises(ValueError, match="head_prefix 'head.' names no head.weight"):
        rnnext.from_torch(torch.nn.GRU(I, H).state_dict(), cell="gru", head_prefix="head.")


def test_convert_state_dict_to_rnnext_and_onnx_and_inspect(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    torch.manual_seed(2)
    net = Net("LSTM", num_layers=2).eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    options = ["--cell", "lstm", "--prefix", "rnn.", "--head-prefix", "fc.", "--output",
               "many_to_one", "--activation", "softmax"]
    assert main(["convert", str(tmp_path / "net.pt"), str(tmp_path / "net.rnx"), *options]) == 0
    assert main(["convert", str(tmp_path / "net.rnx"), str(tmp_path / "net.onnx")]) == 0
    x = inputs(3)
    expected = torch_output(net, x)
    np.testing.assert_allclose(rnnext.load(tmp_path / "net.rnx").predict(x), expected,
                               rtol=F32_RTOL, atol=F32_ATOL)
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], expected, rtol=F32_RTOL,
                               atol=F32_ATOL)
    assert main(["convert", str(tmp_path / "net.onnx"), str(tmp_path / "back.rnx")]) == 0
    np.testing.assert_allclose(rnnext.load(tmp_path / "back.rnx").predict(x), expected,
                               rtol=F32_RTOL, atol=F32_ATOL)

    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "net.rnx")]) == 0
    printed = capsys.readouterr().out
    count = sum(p.numel() for p in net.parameters())
    assert f"{count} parameters" in printed
    assert ("model: Model([LSTM(5), LSTM(5), Readout('last'), Dense(3, activation='softmax')], "
            "input_size=3" in printed)
    metadata = printed.split("metadata:\n")[1].split("tensors:\n")[0].splitlines()
    assert metadata[:4] == ["  format: rnnext", "  format_version: 2", "  input_size: 3",
                            "  layers: 4"]
    assert metadata[4:6] == ["  layer0.type: lstm", "  layer0.units: 5"]
    assert "  layer1.input_size: 5" in metadata
    assert metadata[-5:] == ["  layer2.type: readout", "  layer2.mode: last",
                             "  layer3.type: dense", "  layer3.units: 3",
                             "  layer3.activation: softmax"]
    assert "weight_hh_l1             F32  (20, 5)" in printed
    assert "dense0.weight            F32  (3, 5)" in printed
    assert main(["inspect", str(tmp_path / "net.onnx")]) == 0
    assert f"parameters: {count}" in capsys.readouterr().out


def test_version_1_file_inspects_and_converts_to_version_2(tmp_path, capsys):
    """A file of the version-1 writer (test_files' frozen copy): inspect shows its metadata and
    the model it reads as; convert writes it as version 2, which runs the same."""
    from test_files import v1_bytes, v1_model

    arch = dict(cell="gru", input_size=I, hidden_size=H, num_layers=2, bidirectional=True,
                output_size=3, activation="softmax")
    model = v1_model(arch, seed=1)
    (tmp_path / "v1.rnx").write_bytes(v1_bytes(arch, model.params))
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "v1.rnx")]) == 0
    printed = capsys.readouterr().out
    assert "format_version: 1" in printed and "cell: gru" in printed
    assert f"model: {model!r}" in printed
    assert "head.weight              F32  (3, 10)" in printed
    assert main(["convert", str(tmp_path / "v1.rnx"), str(tmp_path / "v2.rnx")]) == 0
    converted = rnnext.load(tmp_path / "v2.rnx")
    assert rnnext.io.inspect(tmp_path / "v2.rnx")["metadata"]["format_version"] == "2"
    assert converted.layers == model.layers
    x = inputs(5)
    np.testing.assert_array_equal(converted.predict(x), model.predict(x))


def test_convert_a_layer_list_to_onnx_and_back(tmp_path, capsys):
    """Layers of different cells and sizes, a final-state readout and a dense chain: rnnext file
    -> ONNX (run by ONNX Runtime) -> rnnext file, the same outputs; what ONNX cannot hold is
    refused in one line that names the layer."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    model = rnnext.Model([rnnext.LSTM(6, direction="bidirectional"),
                          rnnext.GRU(5, direction="bidirectional", merge="sum"),
                          rnnext.Readout("final"), rnnext.Dense(7, "relu"),
                          rnnext.Dense(3, "softmax")], I, seed=0)
    model.save(tmp_path / "m.rnx")
    assert main(["convert", str(tmp_path / "m.rnx"), str(tmp_path / "m.onnx")]) == 0
    assert main(["convert", str(tmp_path / "m.onnx"), str(tmp_path / "back.rnx")]) == 0
    x = inputs(6)
    expected = model.predict(x, backend="numpy")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], expected, rtol=F32_RTOL,
                               atol=F32_ATOL)
    back = rnnext.load(tmp_path / "back.rnx")
    assert back.layers == model.layers
    np.testing.assert_allclose(back.predict(x), expected, rtol=F32_RTOL, atol=F32_ATOL)
    rnnext.Model([rnnext.Embedding(9, 3, mask_zero=True), rnnext.GRU(4)], seed=0).save(
        tmp_path / "e.rnx")
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "e.rnx"), str(tmp_path / "e.onnx")]) == 1
    assert "layers[0] (Embedding): mask_zero=True" in capsys.readouterr().err


def test_convert_keras(tmp_path):
    keras = keras_module()
    model = keras.Sequential([keras.Input((T, I)), keras.layers.GRU(H, reset_after=False),
                              keras.layers.Dense(2, activation="sigmoid")])
    model.save(tmp_path / "m.keras")
    assert main(["convert", str(tmp_path / "m.keras"), str(tmp_path / "m.rnx")]) == 0
    x = inputs(4)
    np.testing.assert_allclose(rnnext.load(tmp_path / "m.rnx").predict(x),
                               model.predict(x, verbose=0), rtol=F32_RTOL, atol=F32_ATOL)


def test_command_errors_are_one_line(tmp_path, capsys):
    torch.save(torch.nn.GRU(I, H).state_dict(), tmp_path / "gru.pt")
    assert main(["convert", str(tmp_path / "gru.pt"), str(tmp_path / "out.rnx")]) == 1
    assert "a state_dict needs --cell" in capsys.readouterr().err
    (tmp_path / "bad.rnx").write_bytes(b"\x05" + b"\0" * 7 + b"{}")
    assert main(["inspect", str(tmp_path / "bad.rnx")]) == 1
    assert "truncated" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "bad.rnx"), str(tmp_path / "out.rnx"),
                 "--lengths"]) == 1
    assert "--lengths: only for a .onnx output" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# convert and inspect on each kind of file


def rnnext_source(tmp_path, kind):
    """An rnnext file: token ids through an embedding (.rnx) or a chain of different layers
    (.safetensors, the same layout)."""
    extension = kind.split("-")[1]
    if extension == "rnx":
        model = rnnext.Model([rnnext.Embedding(13, I, padding_idx=0),
                              rnnext.GRU(H, direction="bidirectional"), rnnext.Readout("last"),
                              rnnext.Dense(3, "softmax")], seed=1)
        x = np.random.default_rng(7).integers(0, 13, (B, T))
    else:
        model = rnnext.Model([rnnext.LSTM(H, direction="bidirectional", merge="ave"),
                              rnnext.RNN(4, direction="reverse"), rnnext.Readout("max"),
                              rnnext.Dense(2, "sigmoid")], I, seed=2)
        x = inputs(7)
    path = tmp_path / f"source.{extension}"
    model.save(path)
    return path, x, model.predict(x, backend="numpy"), []


def onnx_source(tmp_path, kind):
    """A .onnx file from to_onnx, or from PyTorch's exporter (dynamo=False) with the outputs
    of the module it exported."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    path, x = tmp_path / "source.onnx", inputs(7)
    if kind == "onnx-rnnext":
        rnnext.Model([rnnext.GRU(H, reset_after=False), rnnext.LSTM(4, direction="reverse"),
                      rnnext.Dense(2, "tanh")], I, seed=3).to_onnx(path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return path, x, session.run(["y"], {"x": x})[0], []
    torch.manual_seed(3)
    net = Net("GRU", num_layers=2, bidirectional=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the module's shape checks
        torch.onnx.export(net, (torch.zeros(2, T, I),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 1: "time"}})
    return path, x, torch_output(net, x), []


def torch_source(tmp_path, kind):
    """A PyTorch state_dict (.pt), with the options that describe it."""
    torch.manual_seed(4)
    net = Net("RNN", nonlinearity="relu", bidirectional=True).eval()
    torch.save(net.state_dict(), tmp_path / "source.pt")
    x = inputs(7)
    return tmp_path / "source.pt", x, torch_output(net, x), [
        "--cell", "rnn", "--nonlinearity", "relu", "--prefix", "rnn.", "--head-prefix", "fc.",
        "--output", "many_to_one", "--activation", "softmax"]


def keras_source(tmp_path, kind):
    """A .keras file of Keras on the torch backend, random weights (biases too)."""
    keras = keras_module()
    model = keras.Sequential([keras.Input((T, I)), keras.layers.LSTM(H, return_sequences=True),
                              keras.layers.GRU(4), keras.layers.Dense(3, activation="softmax")])
    rng = np.random.default_rng(5)
    for layer in model.layers:
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    model.save(tmp_path / "source.keras")
    x = inputs(7)
    return tmp_path / "source.keras", x, np.asarray(model.predict(x, verbose=0)), []


# by the kind inspect names, then the source
SOURCES = {"rnnext-rnx": rnnext_source, "rnnext-safetensors": rnnext_source,
           "onnx-rnnext": onnx_source, "onnx-torch": onnx_source, "torch-pt": torch_source,
           "keras": keras_source}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's torch backend's numpy use
@pytest.mark.parametrize("kind", SOURCES)
def test_inspect_and_convert_each_kind_of_file(tmp_path, capsys, kind):
    """inspect prints the model a file reads as; convert writes an rnnext file and an ONNX file
    with lengths whose predictions equal the source's (ONNX Runtime's on full-length batches,
    and the converted model's with random lengths)."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    source, x, expected, options = SOURCES[kind](tmp_path, kind)
    for out in ("m.rnx", "m.safetensors"):
        assert main(["convert", str(source), str(tmp_path / out), *options]) == 0
        converted = rnnext.load(tmp_path / out)
        np.testing.assert_allclose(converted.predict(x), expected, rtol=F32_RTOL, atol=F32_ATOL)
    capsys.readouterr()
    assert main(["inspect", str(source), *options]) == 0
    printed = capsys.readouterr().out
    count = sum(v.size for v in converted.params.values())
    if kind.startswith("rnnext"):
        assert f"model: {converted!r}" in printed and f" {count} parameters" in printed
    else:
        assert f"{source} ({kind.split('-')[0]}): {converted!r}" in printed
        assert f"parameters: {count}\n" in printed
    assert main(["convert", str(source), str(tmp_path / "m.onnx"), "--lengths", *options]) == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    full = np.full(B, T, np.int32)
    np.testing.assert_allclose(session.run(["y"], {"x": x, "lengths": full})[0], expected,
                               rtol=F32_RTOL, atol=F32_ATOL)
    lengths = np.array([1, T, 3, 2], np.int32)
    np.testing.assert_allclose(session.run(["y"], {"x": x, "lengths": lengths})[0],
                               converted.predict(x, lengths=lengths), rtol=F32_RTOL,
                               atol=F32_ATOL)
