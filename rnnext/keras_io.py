"""Keras import (from_keras). Needs the optional keras package (Keras 3, any backend).

A model is read as a chain of layers and becomes a layer list:
- LSTM, GRU and SimpleRNN layers, each its own recurrent layer (any units and kinds in
  sequence), with their activation and recurrent_activation (cells.activation_from_keras: Keras
  3's hard_sigmoid is relu6(x + 3) / 6, ONNX's HardSigmoid with alpha 1/6, beta 0.5);
  go_backwards=True is direction "reverse"; Bidirectional(merge_mode "concat", "sum", "mul" or
  "ave") is direction "bidirectional" with that merge;
- a recurrent layer with return_sequences=False (the last one) is Readout("final"): the final
  state of each direction, merged (what Keras returns, Bidirectional included);
- Dense layers (or TimeDistributed(Dense)) with activation linear, relu, tanh, sigmoid or
  softmax (in the layer, or as an Activation or Softmax layer right after it) are Dense layers;
  after a recurrent layer that returns sequences they act on every step.
Dropout layers and the layers' dropout options act only in training and are skipped. Anything
else is refused by name: a go_backwards layer that returns its sequence (Keras returns it
reversed in time), stateful or return_state layers, masking.

Weights (Keras 3 layouts): kernel (I, G*H), recurrent_kernel (H, G*H), bias, permuted from
Keras's gate order to ours (cells.CELLS[..].from_keras: LSTM i, f, c, o is ours; GRU z, r, h
becomes r, z, n). A GRU with reset_after=True has a (2, 3H) bias (input and recurrent) and is
PyTorch's GRU; with reset_after=False it has one (3H,) input bias (GRU(reset_after=False)).

The imported Model takes the same (B, T, I) input and Model.forward(x)[0] (or predict) is the
Keras model's output.
"""
import os

import numpy as np

from . import layers as L
from .cells import (CELLS, FROM_KERAS_ACTIVATION, activation_from_keras, dense_param_name,
                    param_name, permute_gates)
from .convert import recurrent_layer
from .model import Model

# the Keras layer classes we read, by name, and the cell each is (SimpleRNN's by activation)
KERAS_CELLS = {c.keras_layer: c for c in CELLS.values()
               if c.name in ("rnn_tanh", "lstm", "gru")}


class KerasImportError(ValueError):
    """A Keras model that rnnext cannot represent exactly; the message names the layer."""


def _refuse(layer, why):
    raise KerasImportError(f"{type(layer).__name__} layer {layer.name!r}: {why}")


def _activation_name(value):
    return value if isinstance(value, str) else getattr(value, "__name__", str(value))


def _activations(layer, config, cell):
    """(activations, alpha, beta) of a Keras recurrent layer in ONNX order, from the options
    cell.keras_activations names: RNN (activation,), LSTM (recurrent_activation, activation,
    activation), GRU (recurrent_activation, activation)."""
    functions = []
    for option in cell.keras_activations:
        name = _activation_name(config[option])
        if name not in FROM_KERAS_ACTIVATION:
            _refuse(layer, f"{option} {name!r} is not supported (only "
                           f"{sorted(FROM_KERAS_ACTIVATION)})")
        functions.append(activation_from_keras(name))
    return tuple(zip(*functions))


def _recurrent(layer, config, direction, merge="concat"):
    """Our layer object of a Keras LSTM, GRU or SimpleRNN layer."""
    for option in ("stateful", "return_state"):
        if config.get(option):
            _refuse(layer, f"{option}=True is not supported")
    cell = KERAS_CELLS[type(layer).__name__]
    if cell.layer_type == "gru" and not config.get("reset_after", True):
        cell = CELLS["gru_reset_before"]
    activations, alpha, beta = _activations(layer, config, cell)
    if cell.layer_type == "rnn" and activations == ("relu",):
        cell = CELLS["rnn_relu"]
    return recurrent_layer(cell, config["units"], direction=direction, merge=merge,
                           activations=activations, activation_alpha=alpha,
                           activation_beta=beta)


def _direction_params(layer, config, r, reverse):
    """{our name: array} of one Keras recurrent layer (one direction of ours)."""
    cell = CELLS[r.cell]
    weights = layer.get_weights()
    kernel, recurrent = weights[0], weights[1]
    G, H = r.num_gates, r.units
    if config.get("use_bias", True):
        bias = weights[2]
    else:
        bias = np.zeros((2, G * H) if r.cell == "gru" else (G * H,), np.float32)
    bias_ih, bias_hh = (bias[0], bias[1]) if bias.ndim == 2 else (bias, np.zeros_like(bias))
    values = {"weight_ih": kernel.T, "weight_hh": recurrent.T, "bias_ih": bias_ih,
              "bias_hh": bias_hh}
    return {param_name(kind, r.index, reverse): permute_gates(value, cell.from_keras)
            .astype(np.float32) for kind, value in values.items()}


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
    layers, input_size, params = keras_layers(model)
    return Model(layers, input_size, params=params, backend=backend)


def keras_layers(model):
    """(layers, input_size, params) of from_keras's Model."""
    if isinstance(model, (str, os.PathLike)):
        import keras

        model = keras.saving.load_model(model, safe_mode=True)
    layers, sources, input_size = [], [], None  # sources: per layer, the Keras layers to read
    for layer in _layers(model):
        name = type(layer).__name__
        if name == "Dropout":
            continue
        stage = _stage(layers)
        if name == "Bidirectional" or name in KERAS_CELLS:
            if stage > 1:
                _refuse(layer, "a recurrent layer must follow the input or a recurrent layer "
                               "that returns sequences")
            ours, per_direction, config = _read_recurrent(layer)
            if input_size is None:
                input_size = per_direction[0].get_weights()[0].shape[0]
            layers.append(ours)
            sources.append(per_direction)
            if not config.get("return_sequences"):
                layers.append(L.Readout("final"))
                sources.append(())
            continue
        if name == "TimeDistributed" and type(layer.layer).__name__ == "Dense":
            layer, name = layer.layer, "Dense"
        if name == "Dense" and stage >= 1:
            config = layer.get_config()
            activation = _dense_activation(layer, config.get("activation", "linear"))
            layers.append(L.Dense(config["units"], activation))
            sources.append((layer,))
            continue
        if name in ("Activation", "Softmax") and stage == 3 and layers[-1].activation is None:
            config = layer.get_config()
            if name == "Softmax" and config.get("axis", -1) != -1:
                _refuse(layer, f"softmax over axis {config.get('axis')} is not supported")
            act = "softmax" if name == "Softmax" else config.get("activation")
            layers[-1] = L.Dense(layers[-1].units, _dense_activation(layer, act))
            continue
        _refuse(layer, "is not supported: rnnext imports LSTM, GRU or SimpleRNN layers "
                       "(optionally Bidirectional), then Dense layers with their activations")
    if not any(type(layer) in L.RECURRENT_TYPES for layer in layers):
        raise KerasImportError("model: has no LSTM, GRU or SimpleRNN layer")
    spec = L.build(layers, input_size)
    return layers, input_size, _params(spec, sources)


def _stage(layers):
    """Where a layer list stands: 0 empty, 1 recurrent, 2 readout, 3 dense."""
    if not layers:
        return 0
    return {L.Readout: 2, L.Dense: 3}.get(type(layers[-1]), 1)


def _read_recurrent(layer):
    """(our layer, the Keras layers per direction, the forward layer's config) of a Keras
    recurrent layer or Bidirectional wrapper."""
    if type(layer).__name__ != "Bidirectional":
        config = layer.get_config()
        backwards = bool(config.get("go_backwards"))
        if backwards and config.get("return_sequences"):
            _refuse(layer, "go_backwards=True with return_sequences=True returns the sequence "
                           "reversed in time, which no rnnext layer does; use Bidirectional or "
                           "return_sequences=False")
        return _recurrent(layer, config, "reverse" if backwards else "forward"), (layer,), config
    merge = layer.get_config().get("merge_mode")
    if merge not in L.MERGES:
        _refuse(layer, f"merge_mode {merge!r} is not supported (only {L.MERGES})")
    forward, backward = layer.forward_layer, layer.backward_layer
    config, backward_config = forward.get_config(), backward.get_config()
    if type(forward) is not type(backward) or config.get("go_backwards") or \
            not backward_config.get("go_backwards"):
        _refuse(layer, "expected a forward layer and a go_backwards layer of one class")
    ours = _recurrent(forward, config, "bidirectional", merge)
    if _recurrent(backward, backward_config, "bidirectional", merge) != ours or \
            bool(backward_config.get("return_sequences")) != bool(config.get("return_sequences")):
        _refuse(layer, "its backward layer's options differ from its forward layer's")
    return ours, (forward, backward), config


def _dense_activation(layer, value):
    """Our Dense activation of a Keras activation (linear is None)."""
    name = _activation_name(value)
    ours = "softmax" if name == "softmax" else FROM_KERAS_ACTIVATION.get(name, (None,))[0]
    if ours == "linear":
        return None
    if ours is None or ours not in L.DENSE_ACTIVATIONS:
        _refuse(layer, f"activation {name!r} is not supported (only "
                       f"{[a for a in L.DENSE_ACTIVATIONS if a]} and linear)")
    return ours


def _params(spec, sources):
    """{name: array} of the layer list, read from the Keras layers behind each entry."""
    params = {}
    recurrent, dense = iter(spec.recurrent), iter(spec.dense)
    for layer, keras_layers_of_it in zip(spec.layers, sources):
        if type(layer) in L.RECURRENT_TYPES:
            r = next(recurrent)
            for reverse, source in zip(r.reverse_flags, keras_layers_of_it):
                params.update(_direction_params(source, source.get_config(), r, reverse))
        elif isinstance(layer, L.Dense):
            d, (source,) = next(dense), keras_layers_of_it
            weights = source.get_weights()
            params[dense_param_name("weight", d.index)] = weights[0].T.astype(np.float32)
            params[dense_param_name("bias", d.index)] = (
                weights[1].astype(np.float32) if source.get_config().get("use_bias", True)
                else np.zeros(d.units, np.float32))
    return params
