"""Importers: models trained elsewhere, as rnnext Models with the same outputs."""
import re
from collections.abc import Mapping

import numpy as np

from .model import Model

TORCH_MODES = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"), "LSTM": ("lstm", "tanh"),
               "GRU": ("gru", "tanh")}


def _numpy(tensor):
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu().numpy()
    return np.asarray(tensor, dtype=np.float32)


def from_torch(rnn, head=None, output="many_to_many", activation=None, backend="c", *,
               cell=None, nonlinearity="tanh", prefix="", head_prefix=None):
    """A Model from a torch.nn.RNN, LSTM or GRU and an optional torch.nn.Linear head.

    Model.forward on batch-first input then returns what the module returns (its output
    sequence and h_n, or (h_n, c_n)), whatever the module's batch_first; with a head, the head
    applied to the output sequence (output="many_to_many", the default) or to each sequence's
    last valid step (output="many_to_one"). bias=False becomes zero biases. Dropout between
    layers only acts in training and is ignored. proj_size > 0 is refused.

    rnn may also be a state_dict (a mapping of names to tensors or arrays) with its
    configuration: cell ("rnn", "lstm" or "gru") and nonlinearity (for "rnn"); the sizes, the
    layer count and the directions are read from the names and shapes. prefix selects the
    recurrent module's entries (e.g. "rnn." in a larger module's state_dict) and head_prefix a
    Linear head's (e.g. "fc."), whose bias may be absent.
    """
    if isinstance(rnn, Mapping):
        return _from_state_dict(rnn, cell, nonlinearity, prefix, head_prefix, head=head,
                                output=output, activation=activation, backend=backend)
    import torch

    mode = getattr(rnn, "mode", None)
    if not isinstance(rnn, torch.nn.RNNBase) or mode not in TORCH_MODES:
        raise TypeError(f"rnn: expected a torch.nn.RNN, LSTM or GRU, got {type(rnn).__name__}")
    if getattr(rnn, "proj_size", 0):
        raise ValueError(f"rnn: LSTM projections (proj_size={rnn.proj_size}) are not supported")
    cell, nonlinearity = TORCH_MODES[mode]
    D = 2 if rnn.bidirectional else 1
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    params = {}
    for layer in range(rnn.num_layers):
        for direction in range(D):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            for kind in ("weight_ih", "weight_hh"):
                params[kind + suffix] = _numpy(getattr(rnn, kind + suffix))
            for kind in ("bias_ih", "bias_hh"):
                params[kind + suffix] = (_numpy(getattr(rnn, kind + suffix)) if rnn.bias
                                         else np.zeros(G * rnn.hidden_size, np.float32))
    output_size = None
    if head is not None:
        if not isinstance(head, torch.nn.Linear):
            raise TypeError(f"head: expected a torch.nn.Linear or None, got {type(head).__name__}")
        if head.in_features != D * rnn.hidden_size:
            raise ValueError(f"head: expected in_features = {D * rnn.hidden_size} (directions x "
                             f"hidden_size), got {head.in_features}")
        output_size = head.out_features
        params["head.weight"] = _numpy(head.weight)
        params["head.bias"] = (_numpy(head.bias) if head.bias is not None
                               else np.zeros(output_size, np.float32))
    return Model(cell, rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers,
                 bidirectional=rnn.bidirectional, nonlinearity=nonlinearity,
                 output_size=output_size, output=output, activation=activation, backend=backend,
                 params=params)


STATE_KEY = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh)_l(0|[1-9][0-9]*)(_reverse)?")


def _from_state_dict(state, cell, nonlinearity, prefix, head_prefix, **options):
    """from_torch for a state_dict: names and shapes give the sizes, `cell` the rest."""
    if cell not in ("rnn", "lstm", "gru"):
        raise ValueError(f"cell: a state_dict needs its cell, one of 'rnn', 'lstm', 'gru'; got "
                         f"{cell!r}")
    head = options.pop("head")
    if head is not None:
        raise TypeError("head: with a state_dict, name the head's entries with head_prefix "
                        f"instead, got {type(head).__name__}")
    params, layers, reverse = {}, set(), False
    for key, value in state.items():
        if not key.startswith(prefix) or (head_prefix and key.startswith(head_prefix)):
            continue
        match = STATE_KEY.fullmatch(key[len(prefix):])
        if match is None:
            raise ValueError(f"state_dict: {key!r} is not a parameter of torch.nn.RNN, LSTM or GRU"
                             " that rnnext supports (LSTM projections, weight_hr, are not)")
        params[key[len(prefix):]] = _numpy(value)
        layers.add(int(match.group(2)))
        reverse = reverse or match.group(3) is not None
    if "weight_hh_l0" not in params or "weight_ih_l0" not in params:
        raise ValueError(f"state_dict: expected {prefix}weight_ih_l0 and {prefix}weight_hh_l0, "
                         f"got keys {list(state)[:8]}")
    num_layers, hidden_size = max(layers) + 1, params["weight_hh_l0"].shape[-1]
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    if not any(k.startswith("bias_") for k in params):  # bias=False
        for name in list(params):
            params[name.replace("weight_", "bias_")] = np.zeros(gates * hidden_size, np.float32)
    head_params = {}
    if head_prefix:
        for name in ("weight", "bias"):
            if head_prefix + name in state:
                head_params["head." + name] = _numpy(state[head_prefix + name])
        if "head.weight" not in head_params:
            raise ValueError(f"state_dict: head_prefix {head_prefix!r} names no "
                             f"{head_prefix}weight")
        output_size = head_params["head.weight"].shape[0]
        head_params.setdefault("head.bias", np.zeros(output_size, np.float32))
        options["output_size"] = output_size
    return Model(cell, params["weight_ih_l0"].shape[-1], hidden_size, num_layers=num_layers,
                 bidirectional=reverse, nonlinearity=nonlinearity, params={**params, **head_params},
                 **options)
