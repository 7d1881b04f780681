"""Importers: models trained elsewhere, as rnnext Models with the same outputs."""
import numpy as np

from .model import Model

TORCH_MODES = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"), "LSTM": ("lstm", "tanh"),
               "GRU": ("gru", "tanh")}


def _numpy(tensor):
    return tensor.detach().cpu().numpy().astype(np.float32)


def from_torch(rnn, head=None, output="many_to_many", activation=None, backend="c"):
    """A Model from a torch.nn.RNN, LSTM or GRU and an optional torch.nn.Linear head.

    Model.forward on batch-first input then returns what the module returns (its output
    sequence and h_n, or (h_n, c_n)), whatever the module's batch_first; with a head, the head
    applied to the output sequence (output="many_to_many", the default) or to each sequence's
    last valid step (output="many_to_one"). bias=False becomes zero biases. Dropout between
    layers only acts in training and is ignored. proj_size > 0 is refused.
    """
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
