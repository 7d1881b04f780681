"""`rnnext convert IN OUT` and `rnnext inspect FILE`.

Formats are told by the file's extension: .onnx (ONNX), .keras or .h5 (Keras), .pt, .pth or
.ckpt (a PyTorch state_dict, read with torch.load(weights_only=True), which runs no code; its
cell and head are given as options), anything else an rnnext file (safetensors layout). convert
writes ONNX for a .onnx OUT (with --lengths: taking each sequence's valid steps as a second
input) and an rnnext file otherwise.
"""
import os
import sys

import numpy as np

TORCH_EXTENSIONS = (".pt", ".pth", ".ckpt")
KERAS_EXTENSIONS = (".keras", ".h5")


def _kind(path):
    ext = os.path.splitext(str(path))[1].lower()
    if ext == ".onnx":
        return "onnx"
    if ext in KERAS_EXTENSIONS:
        return "keras"
    if ext in TORCH_EXTENSIONS:
        return "torch"
    return "rnnext"


def read_model(path, args):
    """A Model from any supported file; args carries the options of a PyTorch state_dict."""
    kind = _kind(path)
    if kind == "onnx":
        from .onnx_io import from_onnx

        return from_onnx(path)
    if kind == "keras":
        from .keras_io import from_keras

        return from_keras(path)
    if kind == "torch":
        import torch

        from .convert import from_torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}; save "
                             f"the module's state_dict() instead of the module")
        if args.cell is None:
            raise ValueError(f"{path}: a state_dict needs --cell (rnn, lstm or gru)")
        return from_torch(state, cell=args.cell, nonlinearity=args.nonlinearity,
                          prefix=args.prefix, head_prefix=args.head_prefix,
                          output=args.output_mode, activation=args.activation)
    from .io import load

    return load(path)


def _parameters(model):
    return sum(int(np.prod(v.shape)) for v in model.params.values())


def convert(args):
    if args.lengths and _kind(args.output) != "onnx":
        raise ValueError(f"--lengths: only for a .onnx output, got {args.output}")
    model = read_model(args.input, args)
    if _kind(args.output) == "onnx":
        model.to_onnx(args.output, opset=args.opset, lengths=args.lengths)
    else:
        model.save(args.output)
    print(f"wrote {args.output}: {model!r}, {_parameters(model)} parameters")
    return 0


def inspect(args):
    if _kind(args.file) != "rnnext":
        model = read_model(args.file, args)
        print(f"{args.file} ({_kind(args.file)}): {model!r}")
        print(f"parameters: {_parameters(model)}")
        return 0
    from .io import inspect as inspect_file

    info = inspect_file(args.file)
    print(f"{args.file}: {info['file_bytes']} bytes, safetensors layout, "
          f"{len(info['tensors'])} tensors, {info['parameters']} parameters")
    if info["model"] is not None:
        print(f"model: {info['model']!r}")
    else:
        print(f"not a valid rnnext model: {info['error']}")
    print("metadata:")
    for key in _metadata_order(info["metadata"]):
        print(f"  {key}: {info['metadata'][key]}")
    print("tensors:")
    for name, dtype, shape, offset, nbytes in info["tensors"]:
        print(f"  {name:24s} {dtype:4s} {str(shape):14s} {nbytes:10d} bytes at {offset}")
    return 0 if info["model"] is not None else 1


def _metadata_order(meta):
    """The metadata's keys for reading: the file's own keys first, then each layer's (format
    version 2) in layer order, its type first and its fields in LAYERS.md's order."""
    from .layers import METADATA_KEYS

    layer_keys, top = {}, []
    for key in meta:
        head, dot, field = key.partition(".")
        if dot and head.startswith("layer") and head[5:].isdigit():
            layer_keys.setdefault(int(head[5:]), []).append(field)
        else:
            top.append(key)
    ordered = list(top)
    for i in sorted(layer_keys):
        known = ["type"] + list(METADATA_KEYS.get(meta.get(f"layer{i}.type"), {})) + \
            ["input_size"]
        fields = sorted(layer_keys[i], key=lambda f: (known.index(f) if f in known
                                                      else len(known), f))
        ordered += [f"layer{i}.{field}" for field in fields]
    return ordered


def _run(func):
    def checked(args):
        try:
            return func(args)
        except (ValueError, TypeError, ImportError, OSError) as e:
            print(f"rnnext {args.command}: error: {e}", file=sys.stderr)
            return 1
    return checked


def _state_dict_options(parser):
    group = parser.add_argument_group("options for a PyTorch state_dict")
    group.add_argument("--cell", choices=["rnn", "lstm", "gru"])
    group.add_argument("--nonlinearity", choices=["tanh", "relu"], default="tanh")
    group.add_argument("--prefix", default="", help="the recurrent module's key prefix, e.g. rnn.")
    group.add_argument("--head-prefix", default=None, help="a Linear head's key prefix, e.g. fc.")
    group.add_argument("--output", dest="output_mode", default="many_to_many",
                       choices=["many_to_one", "many_to_many"], help="where the head applies")
    group.add_argument("--activation", default=None, choices=["softmax", "sigmoid"])


def add_commands(sub):
    """Adds convert and inspect to the rnnext command line's subparsers."""
    p = sub.add_parser("convert", help="convert a PyTorch, ONNX, Keras or rnnext model file to an "
                                       "rnnext file or ONNX")
    p.add_argument("input", help="the model: .pt/.pth/.ckpt state_dict, .onnx, .keras/.h5, or "
                                 "an rnnext file")
    p.add_argument("output", help="the file to write: .onnx for ONNX, else an rnnext file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset of a .onnx output")
    p.add_argument("--lengths", action="store_true",
                   help="give a .onnx output a second input, lengths (batch,) int32: each "
                        "sequence's valid steps")
    _state_dict_options(p)
    p.set_defaults(func=_run(convert))
    p = sub.add_parser("inspect", help="print a model file's architecture, tensors and sizes")
    p.add_argument("file")
    _state_dict_options(p)
    p.set_defaults(func=_run(inspect))
