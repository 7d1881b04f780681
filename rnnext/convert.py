"""PyTorch import (from_torch): torch.nn.RNN, LSTM or GRU modules (or their state_dicts) with an
optional torch.nn.Linear head, as rnnext layer lists with the same outputs."""
import re
from collections.abc import Mapping

import numpy as np

from . import layers as L
from .cells import CELLS, RECURRENT_PARAMS, dense_param_name, param_name
from .model import Model

OUTPUTS = ("many_to_many", "many_to_one")
# the recurrent layer classes by the cells' layer_type
LAYER_CLASSES = {layer_type: cls for cls, layer_type in L.RECURRENT_TYPES.items()}


def _numpy(tensor):
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu().numpy()
    return np.asarray(tensor, dtype=np.float32)


def from_torch(rnn, head=None, output="many_to_many", activation=None, backend="c", *,
               cell=None, nonlinearity="tanh", prefix="", head_prefix=None, example=None):
    """A Model from a whole torch.nn.Module and an example input, or from a torch.nn.RNN, LSTM
    or GRU and an optional torch.nn.Linear head, or from a state_dict.

    from_torch(module, example) (or example=...): any other module is traced with torch.fx on
    the example, a batch-first tensor or array (float (B, T, I), or integer token ids (B, T)
    for an nn.Embedding front end), and its graph becomes the layer list, so that
    Model.predict(x) equals module.eval()(x). What maps: nn.Embedding; nn.RNN, LSTM and GRU
    modules, one or several in sequence, time-major ones included where forward transposes;
    readouts out[:, -1] (out[-1] time-major), h_n[-1], torch.cat([h_n[-2], h_n[-1]], dim=1),
    mean and max over time; nn.Linear with ReLU, Tanh, Sigmoid or Softmax(dim=-1) (modules or
    functions) after it; dropout (identity in eval). Anything else raises
    rnnext.torch_trace.TorchImportError (a ValueError) naming the op, its fx node and its line.

    The layer list is the module's layers (LSTM proj_size included), then for
    output="many_to_one" Readout("last") (each sequence's last valid step, PyTorch's
    out[:, -1] for full-length sequences), then the head as Dense(out_features, activation)
    (activation None, "relu", "tanh", "sigmoid" or "softmax"). With output="many_to_many" (the
    default) the head applies to every step. Model.forward on batch-first input returns what
    the module (and head) return, whatever the module's batch_first. bias=False becomes zero
    biases. Dropout between layers only acts in training and is ignored.

    rnn may also be a state_dict (a mapping of names to tensors or arrays) with its
    configuration: cell ("rnn", "lstm" or "gru") and nonlinearity (for "rnn"); the sizes, the
    layer count, the directions and proj_size (weight_hr_l{k}) are read from the names and
    shapes (so are rnnext's own weight_peephole_l{k}, for LSTM peepholes). prefix selects the
    recurrent module's entries (e.g. "rnn." in a larger module's state_dict) and head_prefix a
    Linear head's (e.g. "fc."), whose bias may be absent.
    """
    layers, input_size, params = torch_layers(rnn, head, output, activation, cell=cell,
                                              nonlinearity=nonlinearity, prefix=prefix,
                                              head_prefix=head_prefix, example=example)
    return Model(layers, input_size, params=params, backend=backend)


def torch_layers(rnn, head=None, output="many_to_many", activation=None, *, cell=None,
                 nonlinearity="tanh", prefix="", head_prefix=None, example=None):
    """(layers, input_size, params) of from_torch's Model (same arguments)."""
    if not isinstance(rnn, Mapping) and _whole_module(rnn):
        if head is not None and example is not None:
            raise TypeError("example: give a whole module's example once, as the second "
                            "argument or as example=")
        options = {"output": (output, "many_to_many"), "activation": (activation, None),
                   "cell": (cell, None), "nonlinearity": (nonlinearity, "tanh"),
                   "prefix": (prefix, ""), "head_prefix": (head_prefix, None)}
        for name, (value, default) in options.items():
            if value != default:
                raise TypeError(f"{name}: a whole module's graph decides its layers; expected "
                                f"{default!r}, got {value!r}")
        example = head if example is None else example
        if example is None:
            raise TypeError(f"rnn: expected a torch.nn.RNN, LSTM or GRU, or a whole module with "
                            f"an example input (from_torch(module, example)), got "
                            f"{type(rnn).__name__} without one")
        from .torch_trace import torch_module_layers

        return torch_module_layers(rnn, example)
    if example is not None:
        raise TypeError(f"example: only a whole module takes one (not a torch.nn.RNN, LSTM, GRU "
                        f"or a state_dict), got it with {type(rnn).__name__}")
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {OUTPUTS}, got {output!r}")
    if isinstance(rnn, Mapping):
        if head is not None:
            raise TypeError("head: with a state_dict, name the head's entries with head_prefix "
                            f"instead, got {type(head).__name__}")
        return _state_dict_layers(rnn, cell, nonlinearity, prefix, head_prefix, output,
                                  activation)
    recurrent, tensors = module_layers(rnn)
    if head is not None:
        import torch

        if not isinstance(head, torch.nn.Linear):
            raise TypeError(f"head: expected a torch.nn.Linear or None, got {type(head).__name__}")
        width = L.build(recurrent, rnn.input_size).recurrent[-1].output_size
        if head.in_features != width:
            raise ValueError(f"head: expected in_features = {width} (the recurrent output "
                             f"width: directions x hidden_size or proj_size), got "
                             f"{head.in_features}")
        tensors.update(linear_tensors(head, 0))
        head = head.out_features
    return _assemble(recurrent, rnn.input_size, tensors, head, output, activation, "rnn")


def _whole_module(rnn):
    """Whether rnn is a torch.nn.Module other than an RNN, LSTM or GRU."""
    import torch

    return isinstance(rnn, torch.nn.Module) and not isinstance(rnn, torch.nn.RNNBase)


def module_layers(rnn, first_index=0):
    """(layers, tensors) of a torch.nn.RNN, LSTM or GRU: one rnnext recurrent layer per layer
    of the module, and its parameters by rnnext's names, the layers numbered from first_index
    on (the module's place in a stack of modules); zeros stand for a bias=False module's
    biases."""
    import torch

    modes = {c.torch_mode: c for c in CELLS.values() if c.torch_mode}
    mode = getattr(rnn, "mode", None)
    if not isinstance(rnn, torch.nn.RNNBase) or mode not in modes:
        raise TypeError(f"rnn: expected a torch.nn.RNN, LSTM or GRU, got {type(rnn).__name__}")
    direction = "bidirectional" if rnn.bidirectional else "forward"
    layer = recurrent_layer(modes[mode], rnn.hidden_size, direction=direction,
                            **_lstm_options(modes[mode], getattr(rnn, "proj_size", 0)))
    tensors = {}
    for name, p in rnn.named_parameters():
        kind, k, reverse = STATE_KEY.fullmatch(name).groups()
        tensors[param_name(kind, first_index + int(k), reverse is not None)] = _numpy(p)
        if not rnn.bias and kind == "weight_ih":
            for bias in ("bias_ih", "bias_hh"):
                tensors[param_name(bias, first_index + int(k), reverse is not None)] = \
                    np.zeros(p.shape[0], np.float32)
    return [layer] * rnn.num_layers, tensors


def linear_tensors(linear, index):
    """A torch.nn.Linear's weight and bias as the index-th dense layer's (a zero bias where it
    has none)."""
    bias = np.zeros(linear.out_features, np.float32) if linear.bias is None else \
        _numpy(linear.bias)
    return {dense_param_name("weight", index): _numpy(linear.weight),
            dense_param_name("bias", index): bias}


def recurrent_layer(cell, units, **options):
    """The layer object (layers.RNN, LSTM or GRU) of a cell (a cells.CELLS entry) with the
    options its class takes (direction, merge, activations, proj_size, ...); the cell sets the
    RNN's nonlinearity and the GRU's reset_after. Every importer makes its layers here."""
    if cell.layer_type == "rnn":
        options["nonlinearity"] = cell.activations[0]
    elif cell.layer_type == "gru":
        options["reset_after"] = cell.name != "gru_reset_before"
    return LAYER_CLASSES[cell.layer_type](units, **options)


def _lstm_options(cell, proj_size=0, peepholes=False):
    """PyTorch's options of a layer: an LSTM's proj_size (and rnnext's peepholes)."""
    return dict(proj_size=proj_size, peepholes=peepholes) if cell.layer_type == "lstm" else {}


def _assemble(recurrent, input_size, tensors, head_units, output, activation, source):
    """(layers, input_size, params): the recurrent layers, Readout("last") for many_to_one, a
    Dense(head_units, activation) when head_units is given, and their parameters from tensors
    (see checked_params)."""
    layers = list(recurrent)
    if output == "many_to_one":
        layers.append(L.Readout("last"))
    if head_units is not None:
        layers.append(L.Dense(head_units, activation))
    elif activation is not None:
        raise ValueError(f"activation: needs a head (a dense layer), got {activation!r}")
    return layers, input_size, checked_params(layers, input_size, tensors, source)


def checked_params(layers, input_size, tensors, source):
    """The parameters of a layer list from tensors (by our names), each checked against its
    shape. Zeros stand for the recurrent biases when there are none at all (a bias=False
    state_dict) and for an absent first dense bias. source names the argument in errors."""
    spec = L.build(layers, input_size)
    shapes = L.param_shapes(spec)
    extra = [name for name in tensors if name not in shapes]
    if extra:
        raise ValueError(f"{source}: {extra[0]!r} does not fit the layers read from it "
                         f"(expected names {list(shapes)})")
    no_bias = not any(name.startswith("bias_") for name in tensors)
    params = {}
    for name, shape in shapes.items():
        if name not in tensors and ((no_bias and name.startswith("bias_")) or
                                    name == dense_param_name("bias", 0)):
            tensors[name] = np.zeros(shape, np.float32)
        if name not in tensors:
            raise ValueError(f"{source}: missing {name!r}")
        if tensors[name].shape != shape:
            raise ValueError(f"{source}: {name!r} expected shape {shape}, got "
                             f"{tensors[name].shape}")
        params[name] = tensors[name]
    return params


STATE_KEY = re.compile(rf"({'|'.join(RECURRENT_PARAMS)})_l(0|[1-9][0-9]*)(_reverse)?")


def _state_dict_layers(state, cell, nonlinearity, prefix, head_prefix, output, activation):
    """torch_layers for a state_dict: names and shapes give the sizes, `cell` the rest."""
    if cell not in LAYER_CLASSES:
        raise ValueError(f"cell: a state_dict needs its cell, one of {tuple(LAYER_CLASSES)}; "
                         f"got {cell!r}")
    if nonlinearity not in ("tanh", "relu") or (cell != "rnn" and nonlinearity != "tanh"):
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu' (rnn only), got "
                         f"{nonlinearity!r}")
    tensors, reverse = {}, {}
    for key, value in state.items():
        if not key.startswith(prefix) or (head_prefix and key.startswith(head_prefix)):
            continue
        name = key[len(prefix):]
        match = STATE_KEY.fullmatch(name)
        if match is None:
            raise ValueError(f"state_dict: {key!r} is not a parameter of torch.nn.RNN, LSTM or "
                             f"GRU{_prefix_hint(state, prefix, head_prefix)}")
        tensors[name] = _numpy(value)
        k = int(match.group(2))
        reverse[k] = reverse.get(k, False) or match.group(3) is not None
    if "weight_hh_l0" not in tensors or "weight_ih_l0" not in tensors:
        raise ValueError(f"state_dict: expected {prefix}weight_ih_l0 and {prefix}weight_hh_l0, "
                         f"got keys {list(state)[:8]}{_prefix_hint(state, prefix, head_prefix)}")
    core = CELLS[f"rnn_{nonlinearity}" if cell == "rnn" else cell]
    recurrent = []
    for k in range(max(reverse) + 1):
        w_hh, w_hr = tensors.get(f"weight_hh_l{k}"), tensors.get(f"weight_hr_l{k}")
        if w_hh is None:
            raise ValueError(f"state_dict: missing {prefix}weight_hh_l{k}")
        recurrent.append(recurrent_layer(
            core, w_hh.shape[0] // core.num_gates,
            direction="bidirectional" if reverse[k] else "forward",
            **_lstm_options(core, 0 if w_hr is None else w_hr.shape[0],
                            f"weight_peephole_l{k}" in tensors)))
    head_units = None
    if head_prefix:
        if head_prefix + "weight" not in state:
            raise ValueError(f"state_dict: head_prefix {head_prefix!r} names no "
                             f"{head_prefix}weight")
        tensors[dense_param_name("weight", 0)] = _numpy(state[head_prefix + "weight"])
        if head_prefix + "bias" in state:
            tensors[dense_param_name("bias", 0)] = _numpy(state[head_prefix + "bias"])
        head_units = tensors[dense_param_name("weight", 0)].shape[0]
    return _assemble(recurrent, tensors["weight_ih_l0"].shape[-1], tensors, head_units, output,
                     activation, "state_dict")


def _prefix_hint(state, prefix, head_prefix):
    """For a larger module's state_dict read with the wrong prefix: the prefixes its keys
    suggest (those before recurrent parameter names, and before a weight that is not one)."""
    recurrent, heads = [], []
    for key in state:
        found = STATE_KEY.search(key)
        if found is not None and found.end() == len(key):
            recurrent.append(key[:found.start()])
        elif key.endswith("weight"):
            heads.append(key[:-len("weight")])
    recurrent = [p for p in dict.fromkeys(recurrent) if p != prefix]
    if not recurrent:
        return ""
    hint = (f"prefix={recurrent[0]!r}" if len(recurrent) == 1 else
            f"prefix= one of {recurrent} (one recurrent module per call)")
    heads = [p for p in dict.fromkeys(heads) if p not in recurrent]
    if len(heads) == 1 and head_prefix is None:
        hint += f" and head_prefix={heads[0]!r}"
    return f"; the keys look like a larger module's state_dict: pass {hint}"
