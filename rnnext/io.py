"""Model files: the safetensors layout, written here and read by the C core's parser.

A file is 8 bytes of little-endian header length, a JSON header (each tensor's dtype, shape and
data_offsets, and ``__metadata__`` with the architecture and the format version, all strings),
then the tensors' raw little-endian bytes; see "Files" in csrc/include/rnnext.h. The safetensors
tools open it. Loading parses the header in C (csrc/safetensors.c), which checks every length,
offset, shape and dtype and the architecture, and never runs code from the file; every failure is
a ValueError that says what is wrong.
"""
import json
import os
import struct

import numpy as np

from .model import ACTIVATIONS, OUTPUTS, Model

FORMAT_VERSION = 1


def _metadata(model):
    """The architecture as safetensors metadata: a dict of strings."""
    meta = {"format": "rnnext", "format_version": str(FORMAT_VERSION), "cell": model.cell,
            "nonlinearity": model.nonlinearity, "input_size": str(model.input_size),
            "hidden_size": str(model.hidden_size), "num_layers": str(model.num_layers),
            "bidirectional": "1" if model.bidirectional else "0"}
    if model.cell == "gru":
        meta["linear_before_reset"] = "1" if model.linear_before_reset else "0"
    if model.output_size is not None:
        meta.update(output_size=str(model.output_size), output=model.output,
                    activation=model.activation or "none")
    return meta


def to_bytes(model):
    """The model as the bytes of an rnnext file (float32 tensors, in PyTorch's parameter order)."""
    header, chunks, offset = {"__metadata__": _metadata(model)}, [], 0
    for name in model.param_shapes():
        data = np.ascontiguousarray(model.params[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(model.params[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # the data starts 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(model, path):
    """Writes the model to `path` as an rnnext (safetensors) file."""
    data = to_bytes(model)
    with open(path, "wb") as f:
        f.write(data)


def _read(source):
    """(bytes, a name for messages) of a path or a bytes-like object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "rnnext file (bytes)"
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read(), f"rnnext file {os.fspath(source)!r}"
    raise TypeError(f"source: expected a path or bytes, got {type(source).__name__}")


def _head_option(meta, key, allowed, default, what):
    value = meta.get(key, default)
    choices = {"none" if a is None else a: a for a in allowed}
    if value not in choices:
        raise ValueError(f"{what}: metadata {key!r} is {value!r}, expected one of "
                         f"{list(choices)}")
    return choices[value]


def load(source, backend="c"):
    """A Model from an rnnext file: a path, or the file's bytes."""
    from ._core import TensorFile

    data, what = _read(source)
    table = TensorFile(data, what)
    config = table.model_config(what)
    meta = table.metadata()
    params = {name: table.read(i) for i, (name, *_) in enumerate(table.tensors())}
    head = {}
    if config["output_size"] is not None:
        head = {"output_size": config["output_size"],
                "output": _head_option(meta, "output", OUTPUTS, "many_to_one", what),
                "activation": _head_option(meta, "activation", ACTIVATIONS, "none", what)}
    return Model(config["cell"], config["input_size"], config["hidden_size"],
                 num_layers=config["num_layers"], bidirectional=config["bidirectional"],
                 nonlinearity=config["nonlinearity"],
                 linear_before_reset=config["linear_before_reset"], backend=backend,
                 params=params, **head)


def inspect(source):
    """What a file holds: {"metadata", "tensors" [(name, dtype, shape, offset, nbytes)],
    "file_bytes", "parameters" (elements of all tensors), "model" (the Model, or None with the
    reason in "error" when the file is a safetensors file but not a valid rnnext model)}."""
    from ._core import TensorFile

    data, what = _read(source)
    table = TensorFile(data, what)
    info = {"metadata": table.metadata(), "tensors": table.tensors(), "file_bytes": len(data),
            "parameters": sum(int(np.prod(shape)) for _, _, shape, _, _ in table.tensors()),
            "model": None, "error": None}
    try:
        info["model"] = load(data)
    except ValueError as e:
        info["error"] = str(e)
    return info


def _unpickle(data, backend):
    return load(data, backend=backend)
