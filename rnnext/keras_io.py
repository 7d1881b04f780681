"""Keras import (from_keras). Needs the optional keras package (Keras 3, any backend).

A model is read as a chain of layers: LSTM, GRU or SimpleRNN layers (all of one type, units and
direction), each optionally wrapped in Bidirectional(merge_mode="concat"), then optionally one
Dense layer (or TimeDistributed(Dense)) and a softmax or sigmoid activation (in the Dense layer
or as an Activation/Softmax layer). Dropout layers and the layers' dropout options act only in
training and are skipped. Anything else is refused by name.

Weights (Keras 3 layouts): kernel (I, G*H), recurrent_kernel (H, G*H), bias. Keras's LSTM gate
order i, f, c, o is PyTorch's i, f, g, o; the GRU's z, r, h is permuted to r, z, n. A GRU with
reset_after=True has a (2, 3H) bias (input and recurrent) and is PyTorch's GRU; with
reset_after=False it has one (3H,) input bias and applies the reset before the recurrent product
(Model's linear_before_reset=False).

The imported Model takes the same (B, T, I) input: if the last recurrent layer returns
sequences, Model.forward(x)[0] is the Keras model's output (the recurrent sequence, or the Dense
layer on every step); otherwise Model.predict(x) is (the last step's features, or the Dense
layer on them).
"""
import os

import numpy as np

from .model import Model

RECURRENT = {"LSTM": ("lstm", 4), "GRU": ("gru", 3), "SimpleRNN": ("rnn", 1)}
# Keras gate blocks in PyTorch's order: GRU z, r, h -> r, z, n (LSTM and SimpleRNN keep theirs)
TORCH_FROM_KERAS = {"LSTM": [0, 1, 2, 3], "GRU": [1, 0, 2], "SimpleRNN": [0]}
ACTIVATIONS = {"linear": None, "softmax": "softmax", "sigmoid": "sigmoid"}


class KerasImportError(ValueError):
    """A Keras model that rnnext cannot represent exactly; the message names the layer."""


def _refuse(layer, why):
    raise KerasImportError(f"{type(layer).__name__} layer {layer.name!r}: {why}")


def _activation_name(value):
    name = value if isinstance(value, str) else getattr(value, "__name__", str(value))
    return name


def _recurrent_params(layer, H, G, kind):
    """(weight_ih, weight_hh, bias_ih, bias_hh) in PyTorch's layout from a Keras layer."""
    config = layer.get_config()
    weights = layer.get_weights()
    kernel, recurrent = weights[0], weights[1]
    if config.get("use_bias", True):
        bias = weights[2]
    else:
        bias = np.zeros((2, G * H) if config.get("reset_after") else (G * H,), np.float32)
    bias_ih, bias_hh = (bias[0], bias[1]) if bias.ndim == 2 else (bias, np.zeros_like(bias))

    def torch_order(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in TORCH_FROM_KERAS[kind]])

    return (torch_order(kernel.T), torch_order(recurrent.T), torch_order(bias_ih),
            torch_order(bias_hh))


def _check_recurrent(layer, config, kind, backward=False):
    activation = _activation_name(config.get("activation", "tanh"))
    allowed = ("tanh", "relu") if kind == "SimpleRNN" else ("tanh",)
    if activation not in allowed:
        _refuse(layer, f"activation {activation!r} is not supported (only {allowed})")
    if kind != "SimpleRNN":
        recurrent_activation = _activation_name(config.get("recurrent_activation", "sigmoid"))
        if recurrent_activation != "sigmoid":
            _refuse(layer, f"recurrent_activation {recurrent_activation!r} is not supported "
                           f"(only 'sigmoid')")
    if bool(config.get("go_backwards")) != backward:
        _refuse(layer, "go_backwards=True is not supported outside Bidirectional")
    for option in ("stateful", "return_state"):
        if config.get(option):
            _refuse(layer, f"{option}=True is not supported")
    return activation


def _layers(model):
    """The model's layers in order: a Sequential model's, or a functional model's checked to
    form one chain (each layer fed by the one before)."""
    import keras

    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if isinstance(model, keras.Sequential):
        return layers
    for previous, layer in zip([None] + layers[:-1], layers):
        sources = {id(getattr(t, "_keras_history", (None,))[0])
                   for t in keras.tree.flatten(layer.input)}
        if previous is not None and sources != {id(previous)}:
            _refuse(layer, "the model is not a single chain of layers")
    return layers


def from_keras(model, backend="c"):
    """A Model from a Keras model (or the path of a .keras file, loaded with safe_mode); see
    the module's documentation."""
    if isinstance(model, (str, os.PathLike)):
        import keras

        model = keras.saving.load_model(model, safe_mode=True)
    stack, head, activation, features = [], None, None, None
    for layer in _layers(model):
        name = type(layer).__name__
        if name == "Dropout":
            continue
        wrapped = layer
        bidirectional = name == "Bidirectional"
        if bidirectional:
            config = layer.get_config()
            if config.get("merge_mode") != "concat":
                _refuse(layer, f"merge_mode {config.get('merge_mode')!r} is not supported "
                               f"(only 'concat')")
            wrapped = layer.forward_layer
        kind = type(wrapped).__name__
        if kind in RECURRENT:
            if head is not None or (stack and not stack[-1]["return_sequences"]):
                _refuse(layer, "a recurrent layer must follow the input or a recurrent layer "
                               "that returns sequences")
            config = wrapped.get_config()
            nonlinearity = _check_recurrent(wrapped, config, kind)
            if bidirectional:
                _check_recurrent(layer.backward_layer, layer.backward_layer.get_config(), kind,
                                 backward=True)
                if not config.get("return_sequences"):
                    _refuse(layer, "Bidirectional with return_sequences=False concatenates the "
                                   "backward layer's final state (its output at the first step),"
                                   " which rnnext's many-to-one head does not read; use "
                                   "return_sequences=True")
            units = config["units"]
            entry = {"kind": kind, "units": units, "bidirectional": bidirectional,
                     "nonlinearity": nonlinearity, "reset_after": config.get("reset_after", True),
                     "return_sequences": bool(config.get("return_sequences")),
                     "layers": [wrapped] + ([layer.backward_layer] if bidirectional else [])}
            if stack:
                first = stack[0]
                for key in ("kind", "units", "bidirectional", "nonlinearity", "reset_after"):
                    if entry[key] != first[key]:
                        _refuse(layer, f"its {key} {entry[key]!r} differs from the first "
                                       f"recurrent layer's {first[key]!r}: rnnext runs one "
                                       f"kind of layer")
            stack.append(entry)
            continue
        if name == "TimeDistributed" and type(layer.layer).__name__ == "Dense":
            layer = layer.layer
            name = "Dense"
        if name == "Dense" and stack and head is None:
            config = layer.get_config()
            weights = layer.get_weights()
            bias = weights[1] if config.get("use_bias", True) else \
                np.zeros(config["units"], np.float32)
            head = (weights[0].T, bias)
            features = _activation_name(config.get("activation", "linear"))
            if features not in ACTIVATIONS:
                _refuse(layer, f"activation {features!r} is not supported (only "
                               f"{list(ACTIVATIONS)})")
            activation = ACTIVATIONS[features]
            continue
        if name in ("Activation", "Softmax") and head is not None and activation is None:
            config = layer.get_config()
            act = "softmax" if name == "Softmax" else _activation_name(config.get("activation"))
            if name == "Softmax" and config.get("axis", -1) != -1:
                _refuse(layer, f"softmax over axis {config.get('axis')} is not supported")
            if act not in ACTIVATIONS:
                _refuse(layer, f"activation {act!r} is not supported (only {list(ACTIVATIONS)})")
            activation = ACTIVATIONS[act]
            continue
        _refuse(layer, "is not supported: rnnext imports LSTM, GRU or SimpleRNN layers "
                       "(optionally Bidirectional), then one Dense layer and softmax or sigmoid")
    if not stack:
        raise KerasImportError("model: has no LSTM, GRU or SimpleRNN layer")
    return _build(stack, head, activation, backend)


def _build(stack, head, activation, backend):
    first = stack[0]
    cell, G = RECURRENT[first["kind"]]
    H = first["units"]
    params = {}
    for l, entry in enumerate(stack):
        for d, layer in enumerate(entry["layers"]):
            suffix = f"_l{l}" + ("_reverse" if d else "")
            w_ih, w_hh, b_ih, b_hh = _recurrent_params(layer, H, G, entry["kind"])
            params.update({"weight_ih" + suffix: w_ih, "weight_hh" + suffix: w_hh,
                           "bias_ih" + suffix: b_ih, "bias_hh" + suffix: b_hh})
    options = {}
    if head is not None:
        params["head.weight"], params["head.bias"] = head
        options = {"output_size": head[0].shape[0], "activation": activation,
                   "output": "many_to_many" if stack[-1]["return_sequences"] else "many_to_one"}
    return Model(cell, params["weight_ih_l0"].shape[1], H, num_layers=len(stack),
                 bidirectional=first["bidirectional"], nonlinearity=first["nonlinearity"],
                 linear_before_reset=first["reset_after"] if cell == "gru" else True,
                 params=params, backend=backend, **options)
