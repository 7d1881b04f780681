"""Model files of format version 2: the layer list in the metadata (LAYERS.md, "Files: format
version 2"), parsed and checked in C (rnx_file_model_layers) and read through
TensorFile.model_layers.

Outside source: the contract. The files are written here by a small writer that follows
LAYERS.md from plain dicts (field spellings, tensor names, shapes and order), and the expected
layers are rnx_layer's values (csrc/include/rnnext.h) worked out by hand from the same dicts.
Version-1 files are written by a frozen copy of the version-1 writer.
"""
import json
import locale
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnext import Model
from rnnext._core import TensorFile

from test_files import ARCHITECTURES, build, build_file_loader, run_file_loader, split

# rnx_layer's enums, as the header numbers them
KINDS = {"embedding": 0, "recurrent": 1, "readout": 2, "dense": 3}
DIRECTIONS = {"forward": 0, "reverse": 1, "bidirectional": 2}
MERGES = {"concat": 0, "sum": 1, "mul": 2, "ave": 3}
READOUTS = {"sequence": 0, "last": 1, "final": 2, "mean": 3, "max": 4}
ACTS = {name: i for i, name in enumerate(
    ["linear", "sigmoid", "tanh", "relu", "hard_sigmoid", "affine", "leaky_relu",
     "thresholded_relu", "scaled_tanh", "elu", "softsign", "softplus", "softmax"])}
CELLS = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3, "gru_reset_before": 4}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
STATUS_FILE_MODEL, STATUS_FILE_VERSION = 11, 12

# ------------------------------------------------------------------------------------------------
# a writer of LAYERS.md's format from plain dicts


def _text(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (tuple, list)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def describe(layers, input_size=None):
    """(the layers with each recurrent layer's input_size filled in, {tensor name: shape} in
    parameter order) for a list of layer dicts in the file's fields."""
    done, shapes, width, k, j = [], {}, input_size, 0, 0
    for layer in layers:
        layer, kind = dict(layer), layer["type"]
        if kind == "embedding":
            shapes["embedding.weight"] = (layer["vocab_size"], layer["dim"])
            width = layer["dim"]
        elif kind in GATES:
            layer["input_size"] = width
            H, P = layer["units"], layer.get("proj_size", 0)
            S, GH = P or H, GATES[kind] * H
            suffixes = {"forward": [""], "reverse": ["_reverse"],
                        "bidirectional": ["", "_reverse"]}[layer["direction"]]
            for s in suffixes:
                shapes[f"weight_ih_l{k}{s}"] = (GH, width)
                shapes[f"weight_hh_l{k}{s}"] = (GH, S)
                shapes[f"bias_ih_l{k}{s}"] = (GH,)
                shapes[f"bias_hh_l{k}{s}"] = (GH,)
                if P:
                    shapes[f"weight_hr_l{k}{s}"] = (P, H)
                if layer.get("peepholes"):
                    shapes[f"weight_peephole_l{k}{s}"] = (3, H)
            concat = layer["direction"] == "bidirectional" and layer["merge"] == "concat"
            width, k = 2 * S if concat else S, k + 1
        elif kind == "dense":
            shapes[f"dense{j}.weight"] = (layer["units"], width)
            shapes[f"dense{j}.bias"] = (layer["units"],)
            width, j = layer["units"], j + 1
        done.append(layer)
    return done, shapes


def metadata(layers, input_size=None):
    meta = {"format": "rnnext", "format_version": "2", "layers": str(len(layers))}
    if input_size is not None:
        meta["input_size"] = str(input_size)
    for i, layer in enumerate(describe(layers, input_size)[0]):
        meta.update({f"layer{i}.{field}": _text(value) for field, value in layer.items()})
    return meta


def random_tensors(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def write(meta, tensors):
    """A safetensors file: tensors {name: array} in that order, the metadata as given."""
    header, chunks, offset = {"__metadata__": meta}, [], 0
    for name, value in tensors.items():
        data = np.ascontiguousarray(value).tobytes()
        header[name] = {"dtype": {"float32": "F32", "float64": "F64", "float16": "F16"}[
            value.dtype.name], "shape": list(value.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def model_file(layers, input_size=None, seed=0):
    return write(metadata(layers, input_size), random_tensors(describe(layers, input_size)[1], seed))


def layers_of(data):
    return TensorFile(data).model_layers()


def error_of(data):
    with pytest.raises(ValueError) as info:
        layers_of(data)
    return str(info.value)


# ------------------------------------------------------------------------------------------------
# the expected rnx_layer values


def f32(values):
    return [float(np.float32(v)) for v in values]


def blank(kind, **fields):
    layer = dict(kind=KINDS[kind], input_size=0, units=0, padding_idx=0, mask_zero=0, cell=0,
                 direction=0, merge=0, proj_size=0, peepholes=0, input_forget=0, clip=0.0,
                 activations=[0, 0, 0], alpha=[0.0] * 3, beta=[0.0] * 3, readout=0, activation=0,
                 mask_value=0.0)
    layer.update(fields)
    return layer


def pad3(values, fill):
    return list(values) + [fill] * (3 - len(values))


def expected_layers(layers, input_size=None):
    out, width = [], input_size
    for layer in describe(layers, input_size)[0]:
        kind = layer["type"]
        if kind == "embedding":
            padding = layer["padding_idx"]
            out.append(blank("embedding", input_size=layer["vocab_size"], units=layer["dim"],
                             padding_idx=-1 if padding is None else padding,
                             mask_zero=int(layer["mask_zero"])))
            width = layer["dim"]
        elif kind in GATES:
            cell = {"rnn": "rnn_" + layer.get("nonlinearity", "tanh"), "lstm": "lstm",
                    "gru": "gru" if layer.get("reset_after", True) else "gru_reset_before"}[kind]
            bidirectional = layer["direction"] == "bidirectional"
            S = layer.get("proj_size", 0) or layer["units"]
            out.append(blank(
                "recurrent", input_size=width, units=layer["units"], cell=CELLS[cell],
                direction=DIRECTIONS[layer["direction"]],
                merge=MERGES[layer["merge"]] if bidirectional else 0,
                proj_size=layer.get("proj_size", 0), peepholes=int(layer.get("peepholes", 0)),
                input_forget=int(layer.get("input_forget", 0)),
                clip=0.0 if layer["clip"] is None else f32([layer["clip"]])[0],
                activations=pad3([ACTS[a] for a in layer["activations"]], 0),
                alpha=pad3(f32(layer["activation_alpha"]), 0.0),
                beta=pad3(f32(layer["activation_beta"]), 0.0)))
            width = 2 * S if bidirectional and layer["merge"] == "concat" else S
        elif kind == "readout":
            out.append(blank("readout", readout=READOUTS[layer["mode"]]))
        else:
            out.append(blank("dense", input_size=width, units=layer["units"],
                             activation=ACTS["linear" if layer["activation"] is None
                                             else layer["activation"]]))
            width = layer["units"]
    return out


# ------------------------------------------------------------------------------------------------
# models with every layer type and option


def lstm(units, direction="forward", merge="concat", proj_size=0, peepholes=False,
         input_forget=False, activations=("sigmoid", "tanh", "tanh"), alpha=(0.0, 0.0, 0.0),
         beta=(0.0, 0.0, 0.0), clip=None):
    return dict(type="lstm", units=units, direction=direction, merge=merge,
                activations=activations, activation_alpha=alpha, activation_beta=beta, clip=clip,
                proj_size=proj_size, peepholes=peepholes, input_forget=input_forget)


def gru(units, direction="forward", merge="concat", reset_after=True,
        activations=("sigmoid", "tanh"), alpha=(0.0, 0.0), beta=(0.0, 0.0), clip=None):
    return dict(type="gru", units=units, direction=direction, merge=merge,
                activations=activations, activation_alpha=alpha, activation_beta=beta, clip=clip,
                reset_after=reset_after)


def rnn(units, direction="forward", merge="concat", nonlinearity="tanh", activations=None,
        alpha=(0.0,), beta=(0.0,), clip=None):
    return dict(type="rnn", units=units, direction=direction, merge=merge,
                activations=activations or (nonlinearity,), activation_alpha=alpha,
                activation_beta=beta, clip=clip, nonlinearity=nonlinearity)


def dense(units, activation=None):
    return dict(type="dense", units=units, activation=activation)


def readout(mode):
    return dict(type="readout", mode=mode)


MODELS = {
    # ids in; an LSTM with every option, bidirectional; a reverse GRU of the other variant; the
    # final states; dense layers
    "embedding-lstm-gru-final-dense": (None, [
        dict(type="embedding", vocab_size=11, dim=4, padding_idx=0, mask_zero=True),
        lstm(5, "bidirectional", "concat", proj_size=3, peepholes=True, input_forget=True,
             activations=("hard_sigmoid", "scaled_tanh", "elu"), alpha=(0.2, 1.5, 0.7),
             beta=(0.5, 0.25, 0.0), clip=3.5),
        gru(4, "reverse", reset_after=False, activations=("sigmoid", "softsign"), clip=1e-3),
        readout("final"),
        dense(6, "relu"),
        dense(3, "softmax"),
    ]),
    # float x in; every merge mode and cell; the mean readout; three dense layers
    "rnn-rnn-gru-lstm-mean-dense": (7, [
        rnn(3, nonlinearity="relu", activations=("leaky_relu",), alpha=(1e-05,)),
        rnn(4, "bidirectional", "sum"),
        gru(2, "bidirectional", "mul", activations=("affine", "thresholded_relu"),
            alpha=(-2.5, 1.0), beta=(0.125, 0.0)),
        lstm(3, "bidirectional", "ave", activations=("linear", "softplus", "relu"),
             alpha=(0.0, 0.0, 0.0), beta=(-0.0, 0.0, 0.0)),
        readout("mean"),
        dense(4, "tanh"),
        dense(2, "sigmoid"),
        dense(1),
    ]),
    # dense layers on every step, without a readout; an embedding without padding
    "embedding-gru-sequence-dense": (None, [
        dict(type="embedding", vocab_size=3, dim=2, padding_idx=None, mask_zero=False),
        gru(3, "bidirectional", "concat"),
        dense(2),
    ]),
    "rnn-last": (2, [rnn(3), readout("last")]),
    "lstm-max-dense": (3, [lstm(2, "reverse", proj_size=1), readout("max"), dense(2)]),
    "gru-sequence": (1, [gru(1), readout("sequence")]),
    "lstm-alone": (2, [lstm(2)]),
}


@pytest.mark.parametrize("name", MODELS)
def test_v2_files_parse_to_their_layers(name):
    input_size, layers = MODELS[name]
    assert layers_of(model_file(layers, input_size)) == expected_layers(layers, input_size)


def test_every_option_is_covered():
    """The models above spell every name the format has."""
    spelled = {(field, v) for _, layers in MODELS.values() for layer in layers
               for field, value in layer.items() if field != "units"
               for v in (value if isinstance(value, tuple) else (value,))}
    for field, names in [("direction", DIRECTIONS), ("merge", MERGES), ("mode", READOUTS),
                         ("type", ["embedding", "rnn", "lstm", "gru", "readout", "dense"]),
                         ("nonlinearity", ["tanh", "relu"])]:
        assert {(field, n) for n in names} <= spelled, field
    cell_acts = {v for f, v in spelled if f == "activations"}
    assert cell_acts == set(ACTS) - {"softmax"}
    dense_acts = {v for f, v in spelled if f == "activation"}
    assert dense_acts == {None, "relu", "tanh", "sigmoid", "softmax"}
    for flag in ["peepholes", "input_forget", "reset_after", "mask_zero"]:
        assert {(flag, True), (flag, False)} <= spelled, flag


def test_tensor_order_and_dtypes_do_not_matter():
    input_size, layers = MODELS["embedding-lstm-gru-final-dense"]
    tensors = random_tensors(describe(layers, input_size)[1])
    shuffled = {name: tensors[name].astype(np.float64 if i % 2 else np.float16)
                for i, name in enumerate(reversed(list(tensors)))}
    assert (layers_of(write(metadata(layers, input_size), shuffled))
            == expected_layers(layers, input_size))


def test_other_top_level_keys_are_ignored():
    input_size, layers = MODELS["rnn-last"]
    meta = dict(metadata(layers, input_size), author="me", layer="x", layersx="y")
    tensors = random_tensors(describe(layers, input_size)[1])
    assert layers_of(write(meta, tensors)) == expected_layers(layers, input_size)


def _comma_locale(tmp_path):
    """The name of a locale whose decimal point is ',' (LOCPATH set for one built with
    localedef into tmp_path where none is installed), or None."""
    for name in ["de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"]:
        try:
            locale.setlocale(locale.LC_NUMERIC, name)
            return name
        except locale.Error:
            pass
    if shutil.which("localedef") and subprocess.run(
            ["localedef", "-i", "de_DE", "-f", "UTF-8", str(tmp_path / "de_DE.UTF-8")],
            capture_output=True).returncode == 0:
        os.environ["LOCPATH"] = str(tmp_path)
        return "de_DE.UTF-8"
    return None


def test_floats_do_not_depend_on_the_locale(tmp_path, monkeypatch):
    """A host program may set LC_NUMERIC to a locale that writes 0,5: the file's 0.5 still
    reads as 0.5 (strtof alone would stop at the '.')."""
    monkeypatch.delenv("LOCPATH", raising=False)
    before = locale.setlocale(locale.LC_NUMERIC)
    try:
        name = _comma_locale(tmp_path)
        if name is None:
            pytest.skip("no locale with a decimal comma, and localedef cannot build one")
        locale.setlocale(locale.LC_NUMERIC, name)
        assert locale.localeconv()["decimal_point"] == ","
        for input_size, layers in MODELS.values():
            assert layers_of(model_file(layers, input_size)) == expected_layers(layers,
                                                                                input_size)
        assert "'layer0.clip' is '0,5'" in error_of(
            _with_meta("rnn-last", lambda m: m.update({"layer0.clip": "0,5"})))
    finally:
        locale.setlocale(locale.LC_NUMERIC, before)


# ------------------------------------------------------------------------------------------------
# version 1 files: a frozen copy of the version-1 writer (rnnext/io.py before version 2)


def v1_metadata(arch):
    """(the metadata, {tensor name: shape}) of a version-1 file of Model(**arch)."""
    cell, I, H = arch["cell"], arch["input_size"], arch["hidden_size"]
    L, bi = arch.get("num_layers", 1), arch.get("bidirectional", False)
    O = arch.get("output_size")
    meta = {"format": "rnnext", "format_version": "1", "cell": cell,
            "nonlinearity": arch.get("nonlinearity", "tanh"), "input_size": str(I),
            "hidden_size": str(H), "num_layers": str(L), "bidirectional": "1" if bi else "0"}
    if cell == "gru":
        meta["linear_before_reset"] = "1" if arch.get("linear_before_reset", True) else "0"
    shapes, G, D = {}, GATES[cell], 2 if bi else 1
    for layer in range(L):
        for s in ["", "_reverse"][:D]:
            shapes[f"weight_ih_l{layer}{s}"] = (G * H, I if layer == 0 else D * H)
            shapes[f"weight_hh_l{layer}{s}"] = (G * H, H)
            shapes[f"bias_ih_l{layer}{s}"] = (G * H,)
            shapes[f"bias_hh_l{layer}{s}"] = (G * H,)
    if O is not None:
        meta.update(output_size=str(O), output=arch.get("output", "many_to_one"),
                    activation=arch.get("activation") or "none")
        shapes["head.weight"], shapes["head.bias"] = (O, D * H), (O,)
    return meta, shapes


def v1_file(arch, seed=0):
    meta, shapes = v1_metadata(arch)
    return write(meta, random_tensors(shapes, seed))


def expected_v1(arch):
    """Version 1 as version 2's layers: the stack, then with a head a readout (many_to_one:
    last; many_to_many: none) and one dense layer."""
    cell = arch["cell"]
    bi = arch.get("bidirectional", False)
    kind = {"rnn": rnn, "lstm": lstm, "gru": gru}[cell]
    options = {"nonlinearity": arch.get("nonlinearity", "tanh")} if cell == "rnn" else {}
    if cell == "gru":
        options["reset_after"] = arch.get("linear_before_reset", True)
    layers = [kind(arch["hidden_size"], "bidirectional" if bi else "forward", **options)
              for _ in range(arch.get("num_layers", 1))]
    if arch.get("output_size") is not None:
        if arch.get("output", "many_to_one") == "many_to_one":
            layers.append(readout("last"))
        layers.append(dense(arch["output_size"], arch.get("activation")))
    return expected_layers(layers, arch["input_size"])


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: "-".join(map(str, a.values())))
def test_v1_files_parse_to_layers(arch):
    assert layers_of(v1_file(arch)) == expected_v1(arch)


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.update(output="one_to_many"), "'output' is 'one_to_many', expected 'many_to_one' or 'many_to_many'"),
    (lambda m: m.update(activation="relu"), "'activation' is 'relu', expected 'none', 'softmax' or 'sigmoid'"),
    (lambda m: m.update(num_layers="1023"), "'num_layers' is '1023', expected a decimal integer in [1, 1022]"),
    (lambda m: m.update(output_size="-1"), "'output_size' is '-1'"),
    (lambda m: m.update(hidden_size="99999999999999999999"), "'hidden_size' is '99999999999999999999'"),
    (lambda m: m.update(hidden_size="16777217"), "expected a decimal integer in [1, 16777216]"),
])
def test_bad_v1_metadata_names_the_key(change, expected):
    header, payload = split(v1_file(dict(cell="gru", input_size=2, hidden_size=3, output_size=2)))
    change(header["__metadata__"])
    assert expected in error_of(build(header, payload))


def test_v1_head_options_have_defaults():
    """output many_to_one and activation none, as the version-1 reader in Python had them."""
    arch = dict(cell="lstm", input_size=2, hidden_size=3, output_size=4)
    header, payload = split(v1_file(arch))
    del header["__metadata__"]["output"], header["__metadata__"]["activation"]
    assert layers_of(build(header, payload)) == expected_v1(arch)
    assert [layer["kind"] for layer in expected_v1(arch)] == [1, 2, 3]


def test_v1_head_options_without_a_head_are_ignored():
    header, payload = split(v1_file(dict(cell="rnn", input_size=2, hidden_size=3)))
    header["__metadata__"].update(output="bogus", activation="bogus")
    assert layers_of(build(header, payload)) == expected_v1(dict(cell="rnn", input_size=2,
                                                                 hidden_size=3))


# ------------------------------------------------------------------------------------------------
# every metadata key: missing, or a bad value, is a ValueError that names it

INTEGERS = ["x", "-1", "99999999999999999999", "2147483648", "3x", " 3", "3 ", "+3", "3.0", "0x3",
            ""]
FLAGS = ["2", "-1", "x", "1x", "99999999999999999999", "", "true"]
NAMES = ["bogus", "", " tanh", "TANH", "concat,sum"]
FLOATS = ["nan", "inf", "-inf", "1e999", "1.0x", "0x1p3", " 1.0", "", "x", "1,,"]
BAD_VALUES = {
    "format_version": ["x", "-1", "0", "99999999999999999999", "2x", ""],
    "layers": INTEGERS + ["0", "1025"], "input_size": INTEGERS + ["0", "16777217"],
    "units": INTEGERS + ["0"], "vocab_size": INTEGERS + ["0"], "dim": INTEGERS + ["0"],
    "padding_idx": INTEGERS + ["nonex"], "proj_size": INTEGERS,
    "mask_zero": FLAGS, "peepholes": FLAGS, "input_forget": FLAGS, "reset_after": FLAGS,
    "format": ["bogus", "RNNEXT"], "type": NAMES, "direction": NAMES, "merge": NAMES,
    "nonlinearity": NAMES, "mode": NAMES, "activation": NAMES + ["linear", "elu"],
    "clip": ["nan", "inf", "1e999", "-1.0", "0", "0.0", "x", "1.5x", "", "None"],
}


def bad_values(field, value):
    """Values of a metadata entry that the parser must refuse."""
    if field in BAD_VALUES:
        return BAD_VALUES[field]
    items = value.split(",")
    if field == "activations":
        return ["bogus", "softmax", value + ",tanh", ",".join(items[1:]), value + ",", "",
                value.replace(items[0], items[0].upper())]
    assert field in ("activation_alpha", "activation_beta"), field
    return [",".join([bad] + items[1:]) for bad in FLOATS] + [value + ",0.0", ",".join(items[1:])]


RICH = ["embedding-lstm-gru-final-dense", "rnn-rnn-gru-lstm-mean-dense"]


def _cases():
    for name in RICH:
        input_size, layers = MODELS[name]
        for key, value in metadata(layers, input_size).items():
            yield name, key, None
            for bad in bad_values(key.split(".")[-1], value):
                yield name, key, bad


@pytest.mark.parametrize("name, key, bad", list(_cases()))
def test_bad_metadata_names_the_key(name, key, bad):
    input_size, layers = MODELS[name]
    meta = metadata(layers, input_size)
    if bad is None:
        del meta[key]
    else:
        meta[key] = bad
    message = error_of(write(meta, random_tensors(describe(layers, input_size)[1])))
    assert f"'{key}'" in message, message
    assert ("missing" if bad is None else "is '") in message, message
    if bad is not None and key != "format":
        assert "expected" in message, message


def _with_meta(name, change, tensors_change=None):
    input_size, layers = MODELS[name]
    meta = metadata(layers, input_size)
    change(meta)
    tensors = random_tensors(describe(layers, input_size)[1])
    if tensors_change:
        tensors_change(tensors)
    return write(meta, tensors)


@pytest.mark.parametrize("name, change, expected", [
    ("rnn-last", lambda m: m.update({"layer0.input_size": "3"}),
     "'layer0.input_size' is '3', expected 2, the width of the model's 'input_size'"),
    ("rnn-rnn-gru-lstm-mean-dense", lambda m: m.update({"layer1.input_size": "4"}),
     "'layer1.input_size' is '4', expected 3, the width of the layer below"),
    ("embedding-lstm-gru-final-dense", lambda m: m.update({"layer2.input_size": "10"}),
     "'layer2.input_size' is '10', expected 6"),
    ("embedding-lstm-gru-final-dense", lambda m: m.update({"layer1.proj_size": "5"}),
     "'layer1.proj_size' is '5', expected a decimal integer in [0, 4]"),
    ("embedding-lstm-gru-final-dense", lambda m: m.update({"layer0.padding_idx": "11"}),
     "'layer0.padding_idx' is '11', expected a decimal integer in [0, 10] or 'none'"),
    ("embedding-lstm-gru-final-dense", lambda m: m.update(input_size="4"),
     "unexpected 'input_size': a model with an embedding takes token ids"),
    ("rnn-last", lambda m: m.update(layers="3"), "missing 'layer2.type'"),
    ("rnn-last", lambda m: m.update(layers="1"),
     "unexpected key 'layer1.mode': the file has 1 layers"),
    ("rnn-last", lambda m: m.update({"layer0.proj_size": "0"}),
     "unexpected key 'layer0.proj_size': a 'rnn' layer has no such field"),
    ("rnn-last", lambda m: m.update({"layer0.units.x": "1"}), "unexpected key 'layer0.units.x'"),
    ("rnn-last", lambda m: m.update({"layer01.units": "1"}), "unexpected key 'layer01.units'"),
    ("rnn-last", lambda m: m.update({"layer99999999999.units": "1"}), "unexpected key 'layer99999999999.units'"),
    ("rnn-last", lambda m: m.update({"layer0": "1"}), "unexpected key 'layer0'"),
    ("rnn-last", lambda m: m.update({"layer1.type": "dense", "layer1.units": "3",
                                     "layer1.activation": "none"}),
     "unexpected key 'layer1.mode': a 'dense' layer has no such field"),
    ("rnn-last", lambda m: (m.pop("layer1.mode"), m.update({
        "layer1.type": "dense", "layer1.units": "3", "layer1.activation": "none"})),
     "missing tensor 'dense0.weight'"),
    ("rnn-last", lambda m: m.update({"layer1.type": "readout", "layer0.type": "readout",
                                     "layer0.mode": "last"}),
     "'layer0.type' is 'readout', which cannot come first"),
    ("rnn-last", lambda m: m.update({"layer1.type": "embedding"}),
     "'layer1.type' is 'embedding', which cannot follow a recurrent layer"),
    ("lstm-max-dense", lambda m: m.update({"layer2.type": "readout"}),
     "'layer2.type' is 'readout', which cannot follow a readout layer"),
    ("embedding-gru-sequence-dense", lambda m: m.update({"layer1.type": "dense"}),
     "'layer1.type' is 'dense', which cannot follow an embedding layer"),
    ("embedding-gru-sequence-dense", lambda m: m.update(layers="1"),
     "'layers' is '1', an embedding alone"),
    ("rnn-last", lambda m: m.update(format_version="1"), "missing 'cell'"),
    ("rnn-last", lambda m: m.update({"layer0.units": "4"}),
     "tensor 'weight_ih_l0': expected shape (4, 2), got (3, 2)"),
    ("rnn-rnn-gru-lstm-mean-dense", lambda m: m.update({"layer1.merge": "concat"}),
     "'layer2.input_size' is '4', expected 8, the width of the layer below"),
    ("rnn-rnn-gru-lstm-mean-dense", lambda m: m.update({"layer1.merge": "concat",
                                                        "layer2.input_size": "8"}),
     "tensor 'weight_ih_l2': expected shape (6, 8), got (6, 4)"),
    ("rnn-rnn-gru-lstm-mean-dense", lambda m: m.update({"layer0.nonlinearity": "tanh"}), None),
])
def test_inconsistent_metadata_is_refused(name, change, expected):
    data = _with_meta(name, change)
    if expected is None:  # valid: the activations list, not the nonlinearity, says what runs
        assert layers_of(data)[0]["activations"][0] == ACTS["leaky_relu"]
    else:
        assert expected in error_of(data)


def test_newer_format_version_is_its_own_status():
    message = error_of(_with_meta("rnn-last", lambda m: m.update(format_version="3")))
    assert "format_version 3 is newer than this library's (2)" in message
    assert f"(rnnext status {STATUS_FILE_VERSION})" in message
    message = error_of(_with_meta("rnn-last", lambda m: m.update(format_version="x")))
    assert f"(rnnext status {STATUS_FILE_MODEL})" in message


def test_the_most_layers():
    layers = [rnn(1)] * 1024
    assert len(layers_of(model_file(layers, 1))) == 1024
    meta = metadata(layers + [rnn(1)], 1)
    assert "'layers' is '1025', expected a decimal integer in [1, 1024]" in error_of(
        write(meta, {}))


# ------------------------------------------------------------------------------------------------
# the tensors: exactly LAYERS.md's names and shapes


def _tensor_cases():
    for name in RICH:
        input_size, layers = MODELS[name]
        for tensor, shape in describe(layers, input_size)[1].items():
            yield name, tensor, shape


@pytest.mark.parametrize("name, tensor, shape", list(_tensor_cases()))
def test_each_tensor_missing_or_misshaped_is_named(name, tensor, shape):
    assert f"missing tensor '{tensor}'" in error_of(
        _with_meta(name, lambda m: None, lambda t: t.pop(tensor)))
    wrong = [(shape[0] + 1,) + shape[1:], shape + (1,), shape[::-1] if len(shape) == 2 and
             shape[0] != shape[1] else (shape[0], 1, 1)]
    for bad in wrong:
        message = error_of(_with_meta(name, lambda m: None, lambda t: t.update(
            {tensor: np.zeros(bad, np.float32)})))
        assert f"tensor '{tensor}': expected shape" in message, message


@pytest.mark.parametrize("extra", ["dense9.weight", "weight_ih_l9", "weight_hr_l2",
                                   "weight_peephole_l0", "head.weight", "embedding.weight",
                                   "weight_ih_l0_reverse", "bias_ih_l00", ""])
def test_extra_tensors_are_named(extra):
    name = "rnn-rnn-gru-lstm-mean-dense"
    message = error_of(_with_meta(name, lambda m: None, lambda t: t.update(
        {extra: np.zeros(2, np.float32)})))
    assert f"unexpected tensor '{extra}'" in message, message


# ------------------------------------------------------------------------------------------------
# truncation and fuzzing, as test_files.py does for version 1

SMALL = model_file(*MODELS["embedding-gru-sequence-dense"][::-1])


def test_every_truncation_is_refused():
    for n in range(len(SMALL)):
        message = error_of(SMALL[:n])
        assert "truncated" in message or "header" in message, (n, message)


def test_every_flipped_header_byte_is_refused():
    header_len = struct.unpack("<Q", SMALL[:8])[0]
    for i in range(8 + header_len):
        corrupt = bytearray(SMALL)
        corrupt[i] ^= 0xFF
        error_of(bytes(corrupt))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_v2(data):
    corrupt = bytearray(SMALL)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(corrupt) - 1))
        corrupt[i] = data.draw(st.integers(32, 126) if data.draw(st.booleans())
                               else st.integers(0, 255))
    cut = data.draw(st.integers(0, len(corrupt)))
    try:
        layers = layers_of(bytes(corrupt[:cut]))
    except ValueError:
        return
    assert cut == len(SMALL)
    assert [layer["kind"] for layer in layers] == [0, 1, 3]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["layers", "input_size", "layer0.type", "layer0.units",
                                        "layer0.input_size", "layer0.direction",
                                        "layer1.type", "layer1.mode", "layer0.activations",
                                        "layer0.activation_alpha", "layer0.clip"]),
                       st.text(alphabet="0123456789.,-e+ naxrstlmgu", max_size=8), max_size=8))
def test_fuzz_metadata_values(values):
    input_size, layers = MODELS["rnn-last"]
    meta = dict(metadata(layers, input_size), **values)
    try:
        layers_of(write(meta, random_tensors(describe(layers, input_size)[1])))
    except ValueError:
        pass


# ------------------------------------------------------------------------------------------------
# rnx_model_load in C, under AddressSanitizer and UndefinedBehaviorSanitizer


def test_c_loader_v2_under_sanitizers(tmp_path):
    """One model written as version 1 (stack and head) and as version 2 (its layers, the head as
    dense0; F32 or F64 tensors) gives the same y from rnx_model_load and rnx_forward, which
    agrees with the NumPy reference; a model with every layer type loads and runs from token
    ids. Every truncation and corruption of each file is refused with a message."""
    exe = build_file_loader(tmp_path)
    arch = dict(cell="lstm", input_size=3, hidden_size=2, bidirectional=True, output_size=2,
                activation="softmax")
    model = Model(seed=7, **arch)
    meta, shapes = v1_metadata(arch)
    v2_names = {"head.weight": "dense0.weight", "head.bias": "dense0.bias"}
    (tmp_path / "v1.rnx").write_bytes(write(meta, {
        name: model.params[v2_names.get(name, name)] for name in shapes}))
    layers = [lstm(2, "bidirectional"), readout("last"), dense(2, "softmax")]
    assert [v2_names.get(name, name) for name in shapes] == list(describe(layers, 3)[1])
    (tmp_path / "v2.rnx").write_bytes(write(metadata(layers, 3), {
        v2_names.get(name, name): model.params[v2_names.get(name, name)] for name in shapes}))
    x = np.random.default_rng(4).standard_normal((2, 3, 3)).astype(np.float32)
    (tmp_path / "v2_f64.rnx").write_bytes(write(metadata(layers, 3), {
        v2_names.get(name, name): model.params[v2_names.get(name, name)].astype(np.float64)
        for name in shapes}))
    out1, y1 = run_file_loader(exe, tmp_path / "v1.rnx", x, tmp_path)
    out2, y2 = run_file_loader(exe, tmp_path / "v2.rnx", x, tmp_path)
    assert "layers 3" in out1 and "layers 3" in out2
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(run_file_loader(exe, tmp_path / "v2_f64.rnx", x, tmp_path)[1],
                                  y2)  # F64 tensors of float32 values read exactly
    np.testing.assert_allclose(y2.reshape(2, 2), model.predict(x, backend="numpy"), rtol=1e-4,
                               atol=1e-5)

    layers = [dict(type="embedding", vocab_size=11, dim=4, padding_idx=0, mask_zero=True),
              lstm(5, "bidirectional", "concat"), gru(4, "reverse", reset_after=False),
              readout("final"), dense(6, "relu"), dense(3, "softmax")]
    (tmp_path / "rich.rnx").write_bytes(model_file(layers))
    ids = np.random.default_rng(5).integers(0, 11, (3, 4)).astype(np.int32)
    y = run_file_loader(exe, tmp_path / "rich.rnx", ids, tmp_path)[1].reshape(3, 3)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)  # the top dense layer's softmax
