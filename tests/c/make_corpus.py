"""Writes tests/c/corpus/: the seed corpus of the fuzz target tests/c/fuzz_loader.c, which the C
test runner also loads (tests/c/runner/test_files.c: each valid_* file must load and run, each
broken_* file must be refused with a message). Small models of several layer kinds saved by
rnnext.io (one at int8: I8 weights with their row scales), a format-version-1 file, one with
F16, BF16 and F64 tensors, and files that break one rule each. The output is the same on every
run, so the committed corpus can be remade. Inputs the fuzzer found (found_*, committed as it
wrote them) are left alone:

    PYTHONPATH=. python tests/c/make_corpus.py   (rnnext built in place; or installed)
"""
import json
import pathlib
import struct

import numpy as np

from rnnext import Model
from rnnext import layers as L
from rnnext.io import to_bytes

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": None, "F64": "<f8"}


def valid_models():
    """{name: Model}: every layer kind, direction, merge, readout and cell option, tiny."""
    return {
        "lstm_bidirectional": Model([L.LSTM(3, direction="bidirectional")], 2, seed=1),
        "gru_reset_before_reverse": Model([L.GRU(3, reset_after=False, direction="reverse")],
                                          2, seed=2),
        "rnn_relu_under_tanh": Model([L.RNN(2, nonlinearity="relu"), L.RNN(3)], 2, seed=3),
        "embedding_lstm_projection_head": Model(
            [L.Embedding(5, 2, padding_idx=0, mask_zero=True),
             L.LSTM(3, proj_size=2, peepholes=True), L.Readout("last"), L.Dense(2, "softmax")],
            seed=4),
        "gru_sum_mean_dense": Model([L.GRU(2, direction="bidirectional", merge="sum"),
                                     L.Readout("mean"), L.Dense(2, "tanh")], 2, seed=5),
        "lstm_options_final": Model(
            [L.LSTM(2, input_forget=True, clip=3.5, direction="bidirectional", merge="ave"),
             L.Readout("final"), L.Dense(1, "sigmoid")], 2, seed=6),
        "masking_gru_last": Model([L.Masking(-1.0), L.GRU(3), L.Readout("last"), L.Dense(2)], 2,
                                  seed=7),
        "int8_lstm_bidirectional_gru": Model([L.LSTM(3, direction="bidirectional"), L.GRU(2)],
                                             2, seed=8, precision="int8"),
    }


def split(data):
    """(header dict, the data bytes) of a safetensors file."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def join(header, data):
    """A safetensors file of a header dict and the data bytes, the header padded to 8 bytes."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


def tensors(header, data):
    """[(name, float32 array)] of a file's float32 tensors, in file order."""
    entries = sorted((v["data_offsets"], k, v["shape"]) for k, v in header.items()
                     if k != "__metadata__")
    return [(name, np.frombuffer(data[begin:end], "<f4").reshape(shape))
            for (begin, end), name, shape in entries]


def encode(metadata, arrays, dtypes=None):
    """A file of float arrays [(name, array)], each stored as dtypes[i] (F32 by default)."""
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for i, (name, array) in enumerate(arrays):
        dtype = dtypes[i % len(dtypes)] if dtypes else "F32"
        if dtype == "BF16":  # the upper half of each float32
            raw = (np.asarray(array, "<f4").view("<u4") >> 16).astype("<u2").tobytes()
        else:
            raw = np.asarray(array).astype(NUMPY_DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(array)),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    return join(header, b"".join(chunks))


def version1_file():
    """A format-version-1 file: a one-layer GRU with a many-to-one softmax head."""
    rng = np.random.default_rng(7)
    H, I, O = 3, 2, 2
    shapes = [("weight_ih_l0", (3 * H, I)), ("weight_hh_l0", (3 * H, H)), ("bias_ih_l0", (3 * H,)),
              ("bias_hh_l0", (3 * H,)), ("head.weight", (O, H)), ("head.bias", (O,))]
    meta = {"format": "rnnext", "format_version": "1", "cell": "gru", "input_size": str(I),
            "hidden_size": str(H), "num_layers": "1", "bidirectional": "0",
            "output_size": str(O), "activation": "softmax"}
    return encode(meta, [(n, rng.uniform(-0.5, 0.5, s).astype(np.float32)) for n, s in shapes])


def broken_files(base):
    """{name: bytes}, each from `base` (a valid file) with one rule broken."""
    header, data = split(base)
    meta, arrays = header["__metadata__"], tensors(header, data)
    first = next(k for k in header if k != "__metadata__")
    bad_dtype = dict(header, **{first: dict(header[first], dtype="I32")})
    overlap = dict(header, **{first: dict(header[first], data_offsets=[
        header[first]["data_offsets"][0], header[first]["data_offsets"][1] + 4])})
    text = json.dumps(header, separators=(",", ":")).encode()
    return {
        "truncated": base[:-3],
        "trailing_byte": base + b"\0",
        "json_syntax": struct.pack("<Q", len(text) - 1) + text[:-1] + data,
        "dtype": join(bad_dtype, data),
        "offsets_disagree": join(overlap, data),
        "missing_tensor": encode(meta, arrays[:-1]),
        "newer_version": encode(dict(meta, format_version="3"), arrays),
        "leading_zero": encode(dict(meta, **{"layer0.units": "03"}), arrays),
        "alpha_of_sigmoid": encode(dict(meta, **{"layer0.activation_alpha": "0.4,0.0,0.0"}),
                                   arrays),
    }


def zero_scale(base):
    """`base` (an int8 file) with the first row scale of its first I8 tensor set to 0."""
    header, data = split(base)
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "I8")
    begin = header[name + ".scale"]["data_offsets"][0]
    return join(header, data[:begin] + bytes(4) + data[begin + 4:])


def corpus():
    """{file name: bytes} of the whole corpus."""
    files = {f"valid_{name}.rnx": to_bytes(model) for name, model in valid_models().items()}
    files["valid_version1_gru_head.rnx"] = version1_file()
    header, data = split(files["valid_lstm_bidirectional.rnx"])
    files["valid_dtypes_f16_bf16_f64.rnx"] = encode(header["__metadata__"],
                                                    tensors(header, data),
                                                    ["F16", "BF16", "F64", "F32"])
    for name, content in broken_files(files["valid_lstm_bidirectional.rnx"]).items():
        files[f"broken_{name}.rnx"] = content
    header, data = split(files["valid_masking_gru_last.rnx"])
    files["broken_mask_value_nan.rnx"] = encode(
        dict(header["__metadata__"], **{"layer0.mask_value": "nan"}), tensors(header, data))
    files["broken_int8_scale_zero.rnx"] = zero_scale(files["valid_int8_lstm_bidirectional_gru.rnx"])
    return files


def main():
    CORPUS.mkdir(exist_ok=True)
    files = corpus()
    for name, content in sorted(files.items()):
        (CORPUS / name).write_bytes(content)
    print(f"wrote {len(files)} files to {CORPUS}")


if __name__ == "__main__":
    main()
