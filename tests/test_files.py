"""Model files (safetensors layout, parsed by the C core) and pickling.

Outside sources: the safetensors library reads our files and writes files we read; numpy and
torch convert F16/BF16/F64; corrupt files are built by hand from the format's definition.
"""
import json
import multiprocessing
import os
import pickle
import shutil
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnext
from rnnext import Model
from rnnext.cells import ACTIVATIONS

from conftest import REPO, core_sources

ROOT = str(REPO)

ARCHITECTURES = [
    dict(cell="rnn", input_size=3, hidden_size=4),
    dict(cell="rnn", input_size=3, hidden_size=4, nonlinearity="relu", num_layers=2),
    dict(cell="lstm", input_size=5, hidden_size=6, num_layers=2, bidirectional=True),
    dict(cell="gru", input_size=2, hidden_size=7, bidirectional=True, output_size=3,
         activation="softmax"),
    dict(cell="lstm", input_size=4, hidden_size=3, output_size=2, output="many_to_many",
         activation="sigmoid"),
    dict(cell="gru", input_size=3, hidden_size=4, num_layers=2, linear_before_reset=False),
]


def small_file():
    """A version-2 file: one RNN layer of one unit (the shorthand without a head)."""
    return Model("rnn", 2, 1, seed=0).to_bytes()


# ------------------------------------------------------------------------------------------------
# version 1: a frozen copy of the version-1 writer (rnnext/io.py before format version 2), run on
# the architecture as the version-1 Model took it (its arguments as a dict) and its parameters
# under version 1's names (head.weight, head.bias for dense0's)

V1_NAMES = {"dense0.weight": "head.weight", "dense0.bias": "head.bias"}
V1_DEFAULTS = dict(num_layers=1, bidirectional=False, nonlinearity="tanh", output_size=None,
                   output="many_to_one", activation=None, linear_before_reset=True)


def v1_metadata(arch):
    """The architecture as safetensors metadata: a dict of strings (the version-1 _metadata,
    with the version-1 Model's defaults)."""
    a = {**V1_DEFAULTS, **arch}
    meta = {"format": "rnnext", "format_version": "1", "cell": a["cell"],
            "nonlinearity": a["nonlinearity"], "input_size": str(a["input_size"]),
            "hidden_size": str(a["hidden_size"]), "num_layers": str(a["num_layers"]),
            "bidirectional": "1" if a["bidirectional"] else "0"}
    if a["cell"] == "gru":
        meta["linear_before_reset"] = "1" if a["linear_before_reset"] else "0"
    if a["output_size"] is not None:
        meta.update(output_size=str(a["output_size"]), output=a["output"],
                    activation=a["activation"] or "none")
    return meta


def v1_bytes(arch, params):
    """The version-1 to_bytes: float32 tensors in PyTorch's parameter order, then the head."""
    header, chunks, offset = {"__metadata__": v1_metadata(arch)}, [], 0
    for name, value in params.items():
        data = np.ascontiguousarray(value, dtype="<f4").tobytes()
        header[V1_NAMES.get(name, name)] = {"dtype": "F32", "shape": list(value.shape),
                                            "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # the data starts 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def v1_model(arch, seed=0):
    """The model a version-1 file of `arch` describes, as a layer list written out by hand
    (LAYERS.md: a uniform stack, then with a head a readout "last" for many_to_one and one
    dense layer; without a head the sequence, whatever `output` says)."""
    a = {**V1_DEFAULTS, **arch}
    direction = "bidirectional" if a["bidirectional"] else "forward"
    make = {"rnn": lambda: rnnext.RNN(a["hidden_size"], nonlinearity=a["nonlinearity"],
                                      direction=direction),
            "lstm": lambda: rnnext.LSTM(a["hidden_size"], direction=direction),
            "gru": lambda: rnnext.GRU(a["hidden_size"], reset_after=a["linear_before_reset"],
                                      direction=direction)}[a["cell"]]
    layers = [make() for _ in range(a["num_layers"])]
    if a["output_size"] is not None:
        if a["output"] == "many_to_one":
            layers.append(rnnext.Readout("last"))
        layers.append(rnnext.Dense(a["output_size"], a["activation"]))
    return Model(layers, a["input_size"], seed=seed)


def small_v1_file():
    return v1_bytes(dict(cell="rnn", input_size=2, hidden_size=1),
                    v1_model(dict(cell="rnn", input_size=2, hidden_size=1)).params)


def split(data):
    """(header dict, data bytes) of a file."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def build(header, payload, raw_header=None):
    """A file from a header (dict, or raw bytes) and its data."""
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


def load_error(data):
    with pytest.raises(ValueError) as info:
        rnnext.load(data)
    return str(info.value)


# ------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: "-".join(map(str, a.values())))
def test_save_load_round_trip(tmp_path, arch):
    model = Model(seed=3, **arch)
    path = tmp_path / "model.rnx"
    model.save(path)
    for loaded in (rnnext.load(path), rnnext.load(str(path)), rnnext.load(path.read_bytes())):
        assert repr(loaded) == repr(model)
        assert loaded.params.keys() == model.params.keys()
        for name in model.params:
            np.testing.assert_array_equal(loaded.params[name], model.params[name])
        x = np.random.default_rng(0).standard_normal((3, 5, arch["input_size"]), np.float32)
        np.testing.assert_array_equal(loaded.forward(x)[0], model.forward(x)[0])


def test_file_layout_is_safetensors():
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")

    model = Model("lstm", 3, 4, num_layers=2, bidirectional=True, output_size=2, seed=1)
    data = model.to_bytes()
    tensors = safetensors_numpy.load(data)
    assert tensors.keys() == model.params.keys()
    for name, value in tensors.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, model.params[name])
    header_len = struct.unpack("<Q", data[:8])[0]
    assert (8 + header_len) % 8 == 0, "data should start 8-byte aligned"
    meta = split(data)[0]["__metadata__"]
    assert all(isinstance(v, str) for v in meta.values())
    recurrent = {"type": "lstm", "units": "4", "direction": "bidirectional", "merge": "concat",
                 "activations": "sigmoid,tanh,tanh", "activation_alpha": "0.0,0.0,0.0",
                 "activation_beta": "0.0,0.0,0.0", "clip": "none", "proj_size": "0",
                 "peepholes": "0", "input_forget": "0"}
    want = {"format": "rnnext", "format_version": "2", "layers": "4", "input_size": "3",
            **{f"layer0.{k}": v for k, v in recurrent.items()}, "layer0.input_size": "3",
            **{f"layer1.{k}": v for k, v in recurrent.items()}, "layer1.input_size": "8",
            "layer2.type": "readout", "layer2.mode": "last",
            "layer3.type": "dense", "layer3.units": "2", "layer3.activation": "none"}
    assert meta == want


def test_reads_files_written_by_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    model = Model("gru", 3, 5, bidirectional=True, output_size=2, seed=2)
    path = tmp_path / "model.safetensors"
    meta = {k: v for k, v in split(model.to_bytes())[0]["__metadata__"].items()}
    safetensors_numpy.save_file(dict(model.params), str(path), metadata=meta)
    loaded = rnnext.load(path)
    x = np.random.default_rng(1).standard_normal((2, 4, 3), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16"])
def test_reads_other_float_dtypes(dtype):
    """F16, BF16 and F64 tensors are read as float32, as numpy/torch convert them."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    model = Model("lstm", 3, 4, seed=4)
    meta = split(model.to_bytes())[0]["__metadata__"]
    if dtype == "bfloat16":
        torch = pytest.importorskip("torch", reason="torch not installed")
        from safetensors.torch import save

        source = {k: torch.from_numpy(v * 1e3).to(torch.bfloat16) for k, v in model.params.items()}
        data = save(source, metadata=meta)
        expected = {k: v.float().numpy() for k, v in source.items()}
    else:
        # include subnormals, large values and signed zeros to exercise the conversions
        source = {k: (v * 1e3).astype(dtype) for k, v in model.params.items()}
        source["bias_ih_l0"][:4] = np.array([6e-8, -0.0, 65504, -3e-5], dtype)
        data = safetensors_numpy.save(source, metadata=meta)
        expected = {k: v.astype(np.float32) for k, v in source.items()}
    loaded = rnnext.load(data)
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded.params[name], value)
        assert np.array_equal(np.signbit(loaded.params[name]), np.signbit(value))


def test_pickle_is_cheap_and_exact():
    model = Model("lstm", 8, 16, num_layers=2, output_size=3, activation="softmax", seed=5,
                  backend="numpy")
    x = np.random.default_rng(2).standard_normal((2, 6, 8), np.float32)
    model.predict(x, backend="c")  # builds the native handle, which must not travel
    blob = pickle.dumps(model)
    weights = sum(v.nbytes for v in model.params.values())
    assert len(blob) < weights + 2048
    clone = pickle.loads(blob)
    assert clone.backend == "numpy" and clone._cores == {}
    np.testing.assert_array_equal(clone.predict(x, backend="c"), model.predict(x, backend="c"))


def _predict_in_worker(model, x):
    return model.predict(x)


def test_pickle_ships_to_a_worker_process():
    model = Model("gru", 4, 8, bidirectional=True, output_size=2, seed=6)
    x = np.random.default_rng(3).standard_normal((3, 5, 4), np.float32)
    # spawn: a fresh interpreter, which has the model only as the pickle brings it
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        remote = pool.apply(_predict_in_worker, (model, x))
    np.testing.assert_array_equal(remote, model.predict(x))


def test_inspect_reports_architecture_and_sizes():
    model = Model("lstm", 3, 4, num_layers=2, output_size=2, seed=0)
    data = model.to_bytes()
    info = rnnext.io.inspect(data)
    assert info["file_bytes"] == len(data)
    assert info["parameters"] == sum(v.size for v in model.params.values())
    assert [t[0] for t in info["tensors"]] == list(model.param_shapes())
    assert repr(info["model"]) == repr(model)


# ------------------------------------------------------------------------------------------------
# version 2 round trips: every layer kind and option


V2_MODELS = {
    "embedding-final": ([
        rnnext.Embedding(11, 4, padding_idx=0, mask_zero=True),
        rnnext.LSTM(6, proj_size=3, peepholes=True, input_forget=True,
                    direction="bidirectional", merge="ave", clip=2.5),
        rnnext.GRU(5, reset_after=False, direction="reverse",
                   activations=("hard_sigmoid", "softsign"), activation_alpha=(0.3, 0.0),
                   activation_beta=(0.45, 0.0)),
        rnnext.RNN(4, nonlinearity="relu", direction="bidirectional", merge="mul"),
        rnnext.Readout("final"), rnnext.Dense(7, "relu"), rnnext.Dense(5, "tanh"),
        rnnext.Dense(3, "softmax")], None),
    "mean": ([
        rnnext.RNN(5, activations=("scaled_tanh",), activation_alpha=(1.2,),
                   activation_beta=(0.7,)),
        rnnext.LSTM(4, activations=("sigmoid", "elu", "softplus"),
                    activation_alpha=(0.0, 0.8, 0.0), direction="bidirectional", merge="sum"),
        rnnext.Readout("mean"), rnnext.Dense(2, "sigmoid")], 3),
    "max": ([rnnext.GRU(6, direction="bidirectional", clip=0.1), rnnext.Readout("max"),
             rnnext.Dense(2)], 3),
    "last-no-dense": ([rnnext.Embedding(9, 3, padding_idx=8), rnnext.LSTM(5),
                       rnnext.Readout("last")], None),
    "per-step": ([rnnext.LSTM(4, direction="reverse"), rnnext.GRU(3), rnnext.Dense(3)], 2),
    "explicit-sequence": ([rnnext.GRU(4), rnnext.Readout("sequence"),
                           rnnext.Dense(2, "softmax")], 2),
    # every activation function, with alpha and beta that need repr to round-trip
    "activations": ([rnnext.RNN(3, activations=(name,),
                                activation_alpha=(0.1 + i / 7 if f.uses_alpha else 0.0,),
                                activation_beta=(1 / 3 if f.uses_beta else 0.0,))
                     for i, (name, f) in enumerate(ACTIVATIONS.items())] +
                    [rnnext.Readout("last")], 2),
}


def v2_inputs(model, rng, B=3, T=5):
    if model.spec.embedding is not None:
        ids = rng.integers(0, model.spec.embedding.vocab_size, size=(B, T))
        ids[1, :2] = 0
        return ids
    return rng.standard_normal((B, T, model.input_size)).astype(np.float32)


@pytest.mark.parametrize("name", list(V2_MODELS))
def test_version_2_round_trip_of_every_layer_kind(tmp_path, name):
    layers, input_size = V2_MODELS[name]
    model = Model(layers, input_size, seed=4)
    data = model.to_bytes()
    header, _ = split(data)
    assert header["__metadata__"]["format_version"] == "2"
    assert [k for k in header if k != "__metadata__"] == list(model.param_shapes())
    model.save(tmp_path / "m.rnx")
    for loaded in (rnnext.load(data), rnnext.load(tmp_path / "m.rnx"), pickle.loads(
            pickle.dumps(model))):
        assert loaded.layers == model.layers and loaded.input_size == model.input_size
        assert repr(loaded) == repr(model)
        assert list(loaded.params) == list(model.params)
        for k in model.params:
            np.testing.assert_array_equal(loaded.params[k], model.params[k], err_msg=k)
        assert loaded.to_bytes() == data
        rng = np.random.default_rng(1)
        x = v2_inputs(model, rng)
        lengths = np.array([5, 2, 4])
        for backend in ("c", "numpy"):
            y, state = model.forward(x, lengths=lengths, backend=backend)
            y2, state2 = loaded.forward(x, lengths=lengths, backend=backend)
            np.testing.assert_array_equal(y2, y)
            for a, b in zip(state2, state):
                for p, q in zip(a if isinstance(a, tuple) else (a,),
                                b if isinstance(b, tuple) else (b,)):
                    np.testing.assert_array_equal(p, q)
    info = rnnext.io.inspect(data)
    assert info["error"] is None and info["model"].layers == model.layers
    assert info["parameters"] == sum(v.size for v in model.params.values())


def test_unused_alpha_or_beta_is_refused_before_any_file_is_written():
    """The core (and so the file's reader) takes 0 where a function has no alpha or beta
    (LAYERS.md); the layer refuses anything else when made, so no model saves a file that
    would not load."""
    with pytest.raises(ValueError, match=r"activation_alpha: expected 0.0 where the function "
                                         r"takes no alpha \('tanh'"):
        rnnext.GRU(3, activations=("hard_sigmoid", "tanh"), activation_alpha=(0.2, 0.5))
    with pytest.raises(ValueError, match="activation_beta: expected 0.0 where the function "
                                         "takes no beta"):
        rnnext.RNN(3, activations=("elu",), activation_beta=(0.5,))
    header, payload = split(Model([rnnext.RNN(3, activations=("elu",))], 2).to_bytes())
    header["__metadata__"]["layer0.activation_beta"] = "0.5"
    assert "layer0" in load_error(build(header, payload))


# ------------------------------------------------------------------------------------------------
# version 1 files (written by the frozen version-1 writer) load and run as they did


V1_ARCHITECTURES = ARCHITECTURES + [
    dict(cell="rnn", input_size=3, hidden_size=4, output_size=2, output="many_to_many"),
    dict(cell="gru", input_size=2, hidden_size=3, num_layers=2, bidirectional=True,
         output="many_to_many"),
    dict(cell="lstm", input_size=3, hidden_size=5, num_layers=3, bidirectional=True,
         output_size=4, activation="sigmoid"),
    dict(cell="gru", input_size=3, hidden_size=4, bidirectional=True, output_size=3,
         output="many_to_many", activation="softmax", linear_before_reset=False),
]


def _arch_id(arch):
    return "-".join(f"{v}" for v in arch.values())


@pytest.mark.parametrize("arch", V1_ARCHITECTURES, ids=_arch_id)
def test_version_1_files_load_and_run_the_same(arch):
    expected = v1_model(arch, seed=5)
    data = v1_bytes(arch, expected.params)
    assert split(data)[0]["__metadata__"]["format_version"] == "1"
    model = rnnext.load(data)
    assert model.layers == expected.layers and model.input_size == expected.input_size
    assert list(model.params) == list(expected.params)  # head.* read as dense0.*
    for name in expected.params:
        np.testing.assert_array_equal(model.params[name], expected.params[name])
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 6, arch["input_size"])).astype(np.float32)
    lengths = np.array([6, 1, 3, 5])
    for backend in ("c", "numpy"):
        y, state = model.forward(x, lengths=lengths, backend=backend)
        y_e, state_e = expected.forward(x, lengths=lengths, backend=backend)
        np.testing.assert_array_equal(y, y_e)
        for a, b in zip(state if isinstance(state, tuple) else (state,),
                        state_e if isinstance(state_e, tuple) else (state_e,)):
            np.testing.assert_array_equal(a, b)
    # saved again, the model is a version-2 file of the same layers and weights
    again = model.to_bytes()
    assert split(again)[0]["__metadata__"]["format_version"] == "2"
    assert rnnext.load(again).layers == model.layers


@pytest.mark.parametrize("arch", [
    dict(cell="lstm", input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
         output_size=2, activation="softmax"),
    dict(cell="gru", input_size=3, hidden_size=5, output_size=3, output="many_to_many"),
    dict(cell="rnn", input_size=3, hidden_size=4, nonlinearity="relu", num_layers=2,
         bidirectional=True, output_size=2, activation="sigmoid"),
    dict(cell="gru", input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
], ids=_arch_id)
def test_version_1_files_match_what_the_version_1_model_computed(arch):
    """What version 1 documented, computed with PyTorch from the file's tensors: a head on each
    sequence's last valid step (many_to_one) or on every step, zero past its length
    (many_to_many); without a head the output sequence."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    a = {**V1_DEFAULTS, **arch}
    torch.manual_seed(0)
    mode = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[a["cell"]]
    kwargs = {"nonlinearity": a["nonlinearity"]} if a["cell"] == "rnn" else {}
    rnn = getattr(torch.nn, mode)(a["input_size"], a["hidden_size"], num_layers=a["num_layers"],
                                  bidirectional=a["bidirectional"], batch_first=True, **kwargs)
    params = {n: p.detach().numpy() for n, p in rnn.named_parameters()}
    head = None
    if a["output_size"] is not None:
        D = 2 if a["bidirectional"] else 1
        head = torch.nn.Linear(D * a["hidden_size"], a["output_size"])
        params.update({f"dense0.{n}": p.detach().numpy() for n, p in head.named_parameters()})
    model = rnnext.load(v1_bytes(arch, params))
    rng = np.random.default_rng(7)
    B, T = 4, 6
    x = rng.standard_normal((B, T, a["input_size"])).astype(np.float32)
    lengths = np.array([6, 1, 3, 5])
    with torch.no_grad():
        packed = pack_padded_sequence(torch.from_numpy(x), torch.as_tensor(lengths),
                                      batch_first=True, enforce_sorted=False)
        out, _ = rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        if head is not None:
            if a["output"] == "many_to_one":
                out = head(out[torch.arange(B), torch.as_tensor(lengths) - 1])
            else:
                out = head(out)
            out = {"softmax": lambda z: torch.softmax(z, -1), "sigmoid": torch.sigmoid,
                   None: lambda z: z}[a["activation"]](out)
            if a["output"] == "many_to_many":
                out[torch.arange(T)[None, :] >= torch.as_tensor(lengths)[:, None]] = 0.0
    for backend in ("c", "numpy"):
        np.testing.assert_allclose(model.predict(x, lengths=lengths, backend=backend),
                                   out.numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# corrupt files: every failure is a ValueError that names it


def test_every_truncation_is_refused():
    data = small_file()
    for n in range(len(data)):
        message = load_error(data[:n])
        assert "truncated" in message or "header" in message, (n, message)
    assert "truncated: the tensors need" in load_error(data[:-1])


def test_trailing_bytes_are_refused():
    assert "bytes after the last tensor" in load_error(small_file() + b"\0")


def test_every_flipped_header_byte_is_refused():
    data = small_file()
    header_len = struct.unpack("<Q", data[:8])[0]
    for i in range(8 + header_len):
        corrupt = bytearray(data)
        corrupt[i] ^= 0xFF
        load_error(bytes(corrupt))


@pytest.mark.parametrize("length, expected", [
    (2**64 - 1, "exceeds the limit"),
    (100_000_001, "exceeds the limit"),
    (10**6, "truncated: the header length is 1000000"),
    (0, "does not start with '{'"),
])
def test_header_length_field_out_of_range(length, expected):
    data = small_file()
    assert expected in load_error(struct.pack("<Q", length) + data[8:])


def _with_tensor(change):
    """The small file with its first tensor's header entry changed by change(entry)."""
    header, payload = split(small_file())
    change(header["weight_ih_l0"])
    return build(header, payload)


@pytest.mark.parametrize("change, expected", [
    (lambda t: t.update(data_offsets=[0, 2**64 - 1]), "hold 18446744073709551615 bytes"),
    (lambda t: t.update(data_offsets=[8, 4]), "end before they begin"),
    (lambda t: t.update(data_offsets=[100, 108]), "'weight_hh_l0': data_offsets [8, 12] leave a gap of 8"),
    (lambda t: t.update(data_offsets=[2**64 - 9, 2**64 - 1]), "'weight_hh_l0': data_offsets [8, 12] leave a gap of 8"),
    (lambda t: t.update(data_offsets=[0, 8, 9]), "data_offsets has more than 2 entries"),
    (lambda t: t.update(data_offsets=[0]), "data_offsets has 1 entries"),
    (lambda t: t.update(shape=[1, 3]), "hold 8 bytes, but shape (1, 3) of F32 needs 12"),
    (lambda t: t.update(shape=[2**32, 2**32, 16]), "overflows 64 bits"),
    (lambda t: t.update(shape=[1] * 9), "shape has more than 8 entries"),
    (lambda t: t.update(shape=[1, -2]), "expected a non-negative integer"),
    (lambda t: t.update(shape=[1, 2.0]), "fraction or exponent"),
    (lambda t: t.update(dtype="I64"), "dtype 'I64' is not one of"),
    (lambda t: t.update(dtype=4), "expected a string"),
    (lambda t: t.update(extra=1), "unexpected key 'extra'"),
    (lambda t: t.pop("dtype"), "missing 'dtype'"),
    (lambda t: t.pop("data_offsets"), "missing 'data_offsets'"),
])
def test_bad_tensor_entries_name_the_tensor(change, expected):
    message = load_error(_with_tensor(change))
    assert "'weight_" in message and expected in message, message


def test_overlapping_tensors_are_refused():
    header, payload = split(small_file())
    header["bias_ih_l0"]["data_offsets"] = header["weight_hh_l0"]["data_offsets"]
    assert ("tensor 'bias_ih_l0': data_offsets [8, 12] overlap tensor 'weight_hh_l0'"
            in load_error(build(header, payload)))


def test_numbers_beyond_64_bits_are_refused():
    header, payload = split(small_file())
    text = json.dumps(header).replace('"data_offsets": [0, 8]',
                                      '"data_offsets": [0, 18446744073709551616]')
    assert "integer too large for 64 bits" in load_error(build(None, payload, text.encode()))


@pytest.mark.parametrize("text, expected", [
    (b'{"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}', "expected '}'"),
    (b'{"a" {}}', "expected ':'"),
    (b'{"a\x01": {}}', "control character"),
    (b'{"a\xc3\x28": {}}', "invalid UTF-8"),
    (b'{"\\ud800": {}}', "unpaired surrogate"),
    (b'{"a\\u0000": {}}', "NUL character"),
    (b'{"a\\x": {}}', "invalid escape"),
    (b'{"__metadata__": {"format": 1}}', "the value of 'format' is not a string"),
    (b'{"__metadata__": {}, "__metadata__": {}}', "duplicate key '__metadata__'"),
    (b'{"__metadata__": {"k": "a", "k": "b"}}', "duplicate key 'k'"),
    (b'{} x', "unexpected bytes after the JSON object"),
    (b'[]', "does not start with '{'"),
])
def test_malformed_json_is_refused(text, expected):
    assert expected in load_error(build(None, b"", text))


def test_duplicate_tensor_names_are_refused():
    entry = b'{"dtype": "F32", "shape": [], "data_offsets": [%d, %d]}'
    text = b'{"a": ' + entry % (0, 4) + b', "a": ' + entry % (4, 8) + b'}'
    assert "duplicate tensor 'a'" in load_error(build(None, b"\0" * 8, text))


def test_padding_and_escapes_are_accepted():
    """Spaces after the JSON object (safetensors pads with them) and escaped names parse."""
    header, payload = split(small_file())
    text = json.dumps(header, ensure_ascii=True).replace("weight_ih_l0", "weight\\u005fih_l0")
    model = rnnext.load(build(None, payload, text.encode() + b"     "))
    np.testing.assert_array_equal(model.params["weight_ih_l0"],
                                  rnnext.load(small_file()).params["weight_ih_l0"])


def _with_metadata(change):
    """The small version-1 file with its metadata changed (version 2's keys: test_file_v2.py)."""
    header, payload = split(small_v1_file())
    change(header["__metadata__"])
    return build(header, payload)


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.pop("format"), "missing 'format'"),
    (lambda m: m.update(format="pt"), "'format' is 'pt', expected 'rnnext'"),
    (lambda m: m.update(format_version="3"), "format_version 3 is newer"),
    (lambda m: m.update(format_version="x"), "'format_version' is 'x'"),
    (lambda m: m.update(cell="transformer"), "'cell' is 'transformer'"),
    (lambda m: m.update(hidden_size="0"), "'hidden_size' is '0'"),
    (lambda m: m.update(hidden_size="01"), "'hidden_size' is '01'"),
    (lambda m: m.update(input_size="99999999999"), "'input_size' is '99999999999'"),
    (lambda m: m.pop("num_layers"), "missing 'num_layers'"),
    (lambda m: m.update(bidirectional="2"), "'bidirectional' is '2'"),
    (lambda m: m.update(nonlinearity="gelu"), "'nonlinearity' is 'gelu'"),
    (lambda m: m.update(cell="lstm", nonlinearity="relu"), "'relu' is for the 'rnn' cell only"),
    (lambda m: m.update(input_size="3"), "tensor 'weight_ih_l0': expected shape (1, 3), got (1, 2)"),
    (lambda m: m.update(cell="lstm"), "expected shape (4, 2), got (1, 2)"),
    (lambda m: m.update(num_layers="2"), "missing tensor 'weight_ih_l1'"),
    (lambda m: m.update(bidirectional="1"), "missing tensor 'weight_ih_l0_reverse'"),
    (lambda m: m.update(output_size="2"), "missing tensor 'head.weight'"),
    (lambda m: m.update(hidden_size="16777217"), "expected a decimal integer in [1, 16777216]"),
    (lambda m: m.update(num_layers="1023"), "'num_layers' is '1023'"),
    (lambda m: m.update(linear_before_reset="0"), "'linear_before_reset' is for the 'gru' cell"),
    (lambda m: m.update(cell="gru", linear_before_reset="yes"), "'linear_before_reset' is 'yes'"),
])
def test_bad_architecture_is_refused(change, expected):
    assert expected in load_error(_with_metadata(change))


def test_unexpected_tensor_is_refused():
    header, payload = split(small_file())
    header["weight_ih_l00"] = {"dtype": "F32", "shape": [], "data_offsets": [len(payload),
                                                                              len(payload) + 4]}
    assert "unexpected tensor 'weight_ih_l00'" in load_error(build(header, payload + b"\0" * 4))


def test_bad_head_options_name_the_key():
    arch = dict(cell="rnn", input_size=2, hidden_size=3, output_size=2)
    header, payload = split(v1_bytes(arch, v1_model(arch).params))
    header["__metadata__"]["activation"] = "relu6"
    assert "'activation' is 'relu6'" in load_error(build(header, payload))
    header, payload = split(Model("rnn", 2, 3, output_size=2, seed=0).to_bytes())
    header["__metadata__"]["layer2.activation"] = "relu6"
    assert "'layer2.activation'" in load_error(build(header, payload))


def test_source_type_is_checked():
    with pytest.raises(TypeError, match="source: expected a path or bytes, got int"):
        rnnext.load(3)


# ------------------------------------------------------------------------------------------------
# fuzzing (bounded): the loader either returns a model or raises ValueError


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_loader(data):
    original = Model("gru", 2, 2, output_size=2, seed=0).to_bytes()
    corrupt = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(corrupt) - 1))
        corrupt[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(corrupt)))
    try:
        model = rnnext.load(bytes(corrupt[:cut]))
    except ValueError:
        return
    assert cut == len(original)
    assert model.predict(np.zeros((1, 2, 2), np.float32)).shape == (1, 2)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**64 + 1) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["weight_ih_l0", "__metadata__", "a", "head.bias"]),
                       json_values, max_size=4),
       st.binary(max_size=24))
def test_fuzz_headers(header, payload):
    try:
        rnnext.load(build(header, payload))
    except ValueError:
        pass


# ------------------------------------------------------------------------------------------------
# the C API reads the same files, under AddressSanitizer and UndefinedBehaviorSanitizer


def build_file_loader(tmp_path):
    """tests/c/file_loader.c with the C core's sources (csrc/sources.txt's, baseline kernels
    only) under the sanitizers, or a skip where gcc cannot."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: the C loader test needs it")
    exe = tmp_path / "file_loader"
    csrc = os.path.join(ROOT, "csrc")
    core, _ = core_sources()
    sources = [os.path.join(ROOT, "tests", "c", "file_loader.c")] + [
        os.path.join(csrc, name) for name in core]
    build_cmd = [gcc, "-std=gnu11", "-O1", "-g", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all", "-I" + os.path.join(csrc, "include"), "-I" + csrc,
                 *sources, "-o", str(exe), "-lm"]
    built = subprocess.run(build_cmd, capture_output=True, text=True)
    if built.returncode != 0 and "sanitize" in built.stderr:
        pytest.skip(f"this gcc cannot build with sanitizers: {built.stderr[-300:]}")
    assert built.returncode == 0, built.stderr
    return exe


def run_file_loader(exe, model_path, x, tmp_path):
    """Runs the loader on a model file and input x (B, T, I) float32 or (B, T) int32 ids;
    (stdout, y as a flat float32 array) after checking that every corrupt file was refused
    with a message."""
    x_path, y_path = tmp_path / "x.bin", tmp_path / "y.bin"
    x.tofile(x_path)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1")
    args = [str(exe), str(model_path), str(x_path), str(x.shape[0]), str(x.shape[1]), str(y_path)]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    if run.returncode != 0 and "LeakSanitizer does not work" in run.stderr:
        env["ASAN_OPTIONS"] = "detect_leaks=0"
        run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "truncations accepted 0" in run.stdout
    assert "failures without a message 0" in run.stdout
    return run.stdout, np.fromfile(y_path, np.float32)


def test_c_loader_under_sanitizers(tmp_path, source_tree):
    exe = build_file_loader(tmp_path)
    model = Model("lstm", 3, 2, bidirectional=True, seed=7)
    model.save(tmp_path / "m.rnx")
    x = np.random.default_rng(4).standard_normal((2, 3, 3)).astype(np.float32)
    stdout, y = run_file_loader(exe, tmp_path / "m.rnx", x, tmp_path)

    table = [line.split() for line in stdout.splitlines() if line.startswith("tensor ")]
    expected = rnnext.io.inspect(tmp_path / "m.rnx")["tensors"]
    assert [(t[1], t[2], tuple(map(int, t[4:-2])), int(t[-2]), int(t[-1])) for t in table] == \
        [(name, dtype, shape, offset, nbytes) for name, dtype, shape, offset, nbytes in expected]
    y_ref = model.forward(x, backend="numpy")[0]
    assert y_ref.shape == (2, 3, 4)  # the shorthand without a head: the stack's sequence
    np.testing.assert_allclose(y.reshape(y_ref.shape), y_ref, rtol=1e-4, atol=1e-5)
