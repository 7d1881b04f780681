"""Keras import (from_keras). Needs the optional keras package (Keras 3, any backend).

A Sequential model, or a functional one whose layers form one chain (keras.Input -> layers ->
outputs, walked back from the output: a layer called twice is two layers of the same weights; a
call that takes more than one tensor, a branch's join or an initial_state, is refused by the
layer's name), becomes a layer list:
- Embedding(input_dim, output_dim, mask_zero) first is Embedding(vocab_size, dim, mask_zero):
  Keras's mask (id 0 is a masked step, anywhere in the sequence) is rnnext's: a masked step
  leaves the states as they are; Masking(mask_value) first is Masking(mask_value), the same
  mask for float steps whose features all equal mask_value;
- LSTM, GRU and SimpleRNN layers, each its own recurrent layer (any units and kinds in
  sequence), with their activation and recurrent_activation (cells.activation_from_keras: Keras
  3's hard_sigmoid is relu6(x + 3) / 6, ONNX's HardSigmoid with alpha 1/6, beta 0.5);
  go_backwards=True is direction "reverse"; Bidirectional(merge_mode "concat", "sum", "mul" or
  "ave") is direction "bidirectional" with that merge;
- a recurrent layer with return_sequences=False (the last one) is Readout("final"): the final
  state of each direction, merged (what Keras returns, Bidirectional included);
  GlobalAveragePooling1D / GlobalMaxPooling1D after a layer that returns sequences are
  Readout("mean") / Readout("max") over the valid steps;
- Dense layers (or TimeDistributed(Dense)) with activation linear, relu, tanh, sigmoid or
  softmax (in the layer, or as an Activation or Softmax layer right after it) are Dense layers;
  after a recurrent layer that returns sequences they act on every step.
Dropout, SpatialDropout1D, GaussianNoise, GaussianDropout and AlphaDropout act only in training
and are skipped, as are the recurrent layers' dropout options and a Flatten of a (B, F) output.

A go_backwards layer that returns its sequence returns it reversed in time. What reads such a
sequence is mapped exactly: a recurrent layer over it runs the other way in input time (a
Bidirectional one swaps its directions, so its merge must be symmetric: sum, mul or ave), and
a final state or a pooling does not depend on the order. Such a sequence reaching the output
is refused, and so is one under a mask (Keras passes the mask on unreversed).

Masks: where the model's output is per step, Keras's output at a masked step is the previous
step's (a layer's zero_output_for_mask=False, the default outside Bidirectional) or the Dense
layers applied to it, where rnnext's is zero: such a model is refused unless
zero_masked_steps=True, which accepts it knowing that only the valid steps are equal.
GlobalMaxPooling1D ignores the mask (its max takes the masked steps' outputs) and is refused
under one. A sequence with no valid step averages to NaN in Keras and to 0 in rnnext.

Anything else is refused by name (KerasImportError, a ValueError): stateful or return_state
layers (Model.forward(x, state=...) returns and takes the states between calls, and
Model.stream(batch) runs one step per call with the state kept inside).

Weights (Keras 3 layouts): kernel (I, G*H), recurrent_kernel (H, G*H), bias, permuted from
Keras's gate order to ours (cells.CELLS[..].from_keras: LSTM i, f, c, o is ours; GRU z, r, h
becomes r, z, n). A GRU with reset_after=True has a (2, 3H) bias (input and recurrent) and is
PyTorch's GRU; with reset_after=False it has one (3H,) input bias (GRU(reset_after=False)).

The imported Model takes the same batch-first input (floats (B, T, I), or ids (B, T) after an
Embedding) and Model.forward(x)[0] (or predict) is the Keras model's output.
"""
import os

import numpy as np

from . import layers as L
from .cells import (CELLS, EMBEDDING_PARAM, FROM_KERAS_ACTIVATION, activation_from_keras,
                    dense_param_name, param_name, permute_gates)
from .convert import recurrent_layer
from .model import Model

# the Keras layer classes we read, by name, and the cell each is (SimpleRNN's by activation)
KERAS_CELLS = {c.keras_layer: c for c in CELLS.values()
               if c.name in ("rnn_tanh", "lstm", "gru")}
# layers that act only in training
SKIPPED = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout")
# the pooling layers and the readouts they are
POOLINGS = {"GlobalAveragePooling1D": "mean", "GlobalMaxPooling1D": "max"}


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
    if config.get("stateful"):
        _refuse(layer, "stateful=True is not supported: an imported Model starts each predict "
                       "from zero states; import the model built with stateful=False and keep "
                       "the states between calls with y, state = model.forward(x, state=state), "
                       "or run one step per call with model.stream(batch)")
    if config.get("return_state"):
        _refuse(layer, "return_state=True is not supported (the model's output would be a "
                       "list); import the model without it: Model.forward(x) returns the final "
                       "states beside the output")
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
    """The layers the model's output is computed through, in order: a Sequential model's, or a
    functional model's, walked back from its one output through calls that each take one
    tensor (beside the mask Keras passes); a layer called twice is there twice."""
    import keras

    if not model.built:
        raise KerasImportError("model: not built, so it has no weights; start it with "
                               "keras.Input(shape) or call it on a batch first")
    if isinstance(model, keras.Sequential):
        return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise KerasImportError(f"model: expected one input and one output, got "
                               f"{len(model.inputs)} and {len(model.outputs)}")
    chain, tensor = [], model.outputs[0]
    while True:
        # Keras 3 has no public walk of a functional graph: a tensor's history names the call
        operation, node_index, _ = tensor._keras_history
        if type(operation).__name__ == "InputLayer":
            return chain[::-1]
        arguments = operation._inbound_nodes[node_index].arguments
        inputs = _tensors(arguments.args)
        others = [name for name, value in arguments.kwargs.items()
                  if name != "mask" and _tensors(value)]
        if len(inputs) != 1 or others:
            _refuse(operation, f"the model is not a single chain of layers: this call takes "
                               f"{len(inputs)} tensors" + "".join(f" and {n}" for n in others))
        if "mask" in arguments.kwargs and \
                arguments.kwargs["mask"] is not getattr(inputs[0], "_keras_mask", None):
            _refuse(operation, "this call is given a mask other than the one Keras passes with "
                               "its input; compute it with a Masking layer (or "
                               "Embedding(mask_zero=True)) in front instead")
        chain.append(operation)
        tensor = inputs[0]


def _tensors(value):
    """The Keras tensors in a call's argument (a tensor, or a list or dict of them)."""
    import keras

    return [t for t in keras.tree.flatten(value) if isinstance(t, keras.KerasTensor)]


def from_keras(model, backend="c", zero_masked_steps=False):
    """A Model from a Keras model (or the path of a .keras or legacy .h5 file, loaded with
    safe_mode); see the module's documentation. zero_masked_steps=True accepts a model with a
    mask and a per-step output, whose outputs rnnext zeroes at the masked steps (Keras's hold
    other values there); the valid steps are equal."""
    layers, input_size, params = keras_layers(model, zero_masked_steps)
    return Model(layers, input_size, params=params, backend=backend)


def keras_layers(model, zero_masked_steps=False):
    """(layers, input_size, params) of from_keras's Model."""
    import keras

    if isinstance(model, (str, os.PathLike)):
        model = keras.saving.load_model(model, safe_mode=True)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model: expected a keras.Model or the path of a .keras or .h5 file, "
                        f"got {type(model).__name__}")
    layers, sources, input_size = [], [], None  # sources: per layer, the Keras layers to read
    masked_by = None    # the Embedding (mask_zero) or Masking layer that masks steps
    reversed_by = None  # the go_backwards layer from which the flowing sequence runs backwards
    for layer in _layers(model):
        name = type(layer).__name__
        stage = _stage(layers)
        if name in SKIPPED or (name == "Flatten" and any(isinstance(ours, L.Readout)
                                                         for ours in layers)):
            continue
        if name == "Embedding" and not layers:
            config = layer.get_config()
            layers.append(L.Embedding(config["input_dim"], config["output_dim"],
                                      mask_zero=bool(config.get("mask_zero"))))
            sources.append((layer,))
            masked_by = layer if config.get("mask_zero") else None
            continue
        if name == "Masking" and not layers:
            layers.append(L.Masking(layer.get_config()["mask_value"]))
            sources.append(())
            masked_by = layer
            continue
        if name == "Bidirectional" or name in KERAS_CELLS:
            if stage > 1:
                _refuse(layer, "a recurrent layer must follow the input, an Embedding or a "
                               "recurrent layer that returns sequences")
            ours, per_direction, config, reverses = _read_recurrent(layer, reversed_by)
            if reverses and masked_by is not None:
                _refuse(layer, f"go_backwards=True with return_sequences=True under the mask "
                               f"of {masked_by.name!r}: Keras passes the mask on unreversed "
                               f"with the reversed sequence, which no rnnext layer does")
            reversed_by = (reversed_by or layer) if reverses else None
            if input_size is None and not any(isinstance(ours, L.Embedding)
                                              for ours in layers):
                input_size = per_direction[0].get_weights()[0].shape[0]
            layers.append(ours)
            sources.append(per_direction)
            if not config.get("return_sequences"):
                layers.append(L.Readout("final"))
                sources.append(())
            continue
        if name in POOLINGS and stage == 1:
            _check_pooling(layer, masked_by)
            layers.append(L.Readout(POOLINGS[name]))
            sources.append(())
            reversed_by = None
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
            rank = 2 if any(isinstance(ours, L.Readout) for ours in layers) else 3
            axis = config.get("axis", -1)
            if name == "Softmax" and (not isinstance(axis, int) or axis % rank != rank - 1):
                _refuse(layer, f"softmax over axis {axis} of a rank-{rank} output is not "
                               f"supported (only the last axis, the features)")
            act = "softmax" if name == "Softmax" else config.get("activation")
            layers[-1] = L.Dense(layers[-1].units, _dense_activation(layer, act))
            continue
        _refuse(layer, _unsupported(name, stage))
    if not any(type(layer) in L.RECURRENT_TYPES for layer in layers):
        raise KerasImportError("model: has no LSTM, GRU or SimpleRNN layer")
    spec = L.build(layers, input_size)
    if spec.readout == "sequence":
        _check_sequence_output(spec, sources, reversed_by, masked_by, zero_masked_steps)
    return layers, input_size, _params(spec, sources)


def _stage(layers):
    """Where a layer list stands: 0 empty, an embedding or a masking, 1 recurrent, 2 readout,
    3 dense."""
    if not layers:
        return 0
    return {L.Embedding: 0, L.Masking: 0, L.Readout: 2, L.Dense: 3}.get(type(layers[-1]), 1)


def _unsupported(name, stage):
    """Why a layer that no rule above reads is refused."""
    if name == "Masking":
        return "must come first (rnnext's Masking is the first layer)"
    if name == "Flatten":
        return "flattens a sequence (B, T, F), which no rnnext layer does"
    if name in POOLINGS:
        return "pools what is not a recurrent layer's sequence"
    return ("is not supported: rnnext imports an optional Embedding, LSTM, GRU or SimpleRNN "
            "layers (optionally Bidirectional), an optional pooling, then Dense layers with "
            "their activations")


def _check_pooling(layer, masked_by):
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last" or config.get("keepdims"):
        _refuse(layer, f"expected data_format 'channels_last' and keepdims False, got "
                       f"{config.get('data_format')!r} and {config.get('keepdims')!r}")
    if POOLINGS[type(layer).__name__] == "max" and masked_by is not None:
        _refuse(layer, f"Keras's GlobalMaxPooling1D ignores the mask of {masked_by.name!r} "
                       f"(its max takes the masked steps' outputs) where rnnext's max readout "
                       f"reads the valid steps; use GlobalAveragePooling1D, or mask_zero=False")


def _check_sequence_output(spec, sources, reversed_by, masked_by, zero_masked_steps):
    """Refuses a per-step output that is not Keras's: reversed in time, or under a mask with
    values other than zeros at the masked steps (unless zero_masked_steps)."""
    if reversed_by is not None:
        _refuse(reversed_by, "go_backwards=True with return_sequences=True returns the "
                             "sequence reversed in time up to the model's output, which no "
                             "rnnext layer does; use Bidirectional or return_sequences=False; "
                             "where it is the first recurrent layer, the model with "
                             "go_backwards=False there, fed x[:, ::-1], gives this output")
    top = [s for s, layer in zip(sources, spec.layers) if type(layer) in L.RECURRENT_TYPES][-1]
    zero_at_masked = not spec.dense and all(s.zero_output_for_mask for s in top)
    if masked_by is not None and not zero_at_masked and not zero_masked_steps:
        _refuse(top[0], f"its output is per step under the mask of {masked_by.name!r}: Keras "
                        f"outputs at a masked step the previous step's output (with "
                        f"zero_output_for_mask=False) or the Dense layers applied to it, where "
                        f"rnnext outputs zeros; pass zero_masked_steps=True to accept the model "
                        f"with zeros there (the valid steps are equal)")


def _read_recurrent(layer, reversed_by):
    """(our layer, the Keras layers behind our directions in order, the forward layer's
    config, whether the layer's sequence runs backwards in input time) of a Keras recurrent
    layer or Bidirectional wrapper; reversed_by: the layer whose sequence, backwards in input
    time, this one reads, or None."""
    time_reversed = reversed_by is not None
    if type(layer).__name__ != "Bidirectional":
        config = layer.get_config()
        backwards = bool(config.get("go_backwards"))
        direction = "reverse" if backwards != time_reversed else "forward"
        reverses = bool(config.get("return_sequences")) and backwards != time_reversed
        return _recurrent(layer, config, direction), (layer,), config, reverses
    merge = layer.get_config().get("merge_mode")
    if merge not in L.MERGES:
        _refuse(layer, f"merge_mode {merge!r} is not supported (only {L.MERGES}); for the "
                       f"two directions apart, use 'concat' and split the last axis in two")
    if time_reversed and merge == "concat":
        _refuse(layer, f"reads the sequence of {reversed_by.name!r} (go_backwards=True, "
                       f"reversed in time), over which its directions swap: merge_mode "
                       f"'concat' would put them in the other order; use sum, mul or ave")
    forward, backward = layer.forward_layer, layer.backward_layer
    config, backward_config = forward.get_config(), backward.get_config()
    if type(forward) is not type(backward) or config.get("go_backwards") or \
            not backward_config.get("go_backwards"):
        _refuse(layer, "expected a forward layer and a go_backwards layer of one class")
    ours = _recurrent(forward, config, "bidirectional", merge)
    if _recurrent(backward, backward_config, "bidirectional", merge) != ours or \
            bool(backward_config.get("return_sequences")) != bool(config.get("return_sequences")):
        _refuse(layer, "its backward layer's options differ from its forward layer's")
    per_direction = (backward, forward) if time_reversed else (forward, backward)
    return ours, per_direction, config, time_reversed and bool(config.get("return_sequences"))


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
        if isinstance(layer, L.Embedding):
            params[EMBEDDING_PARAM] = keras_layers_of_it[0].get_weights()[0].astype(np.float32)
        elif type(layer) in L.RECURRENT_TYPES:
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
