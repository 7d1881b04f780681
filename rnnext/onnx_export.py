"""ONNX export (to_onnx): an rnnext layer list as ONNX LSTM, GRU and RNN nodes with their
merges, readouts and dense layers, for ONNX Runtime; from_onnx (onnx_io) reads it back exactly.
Needs the optional onnx package."""
import numpy as np

from . import layers as L
from .cells import ACTIVATIONS, CELLS, EMBEDDING_PARAM, PEEPHOLE_FROM_ONNX, dense_param_name, \
    onnx_alpha_beta, param_name, permute_gates
from .onnx_io import DENSE_OPS, MERGE_OPS, ONNX_CELLS, PADDING_IDX_KEY, TIME_OPS, Expr, _onnx, \
    lengths_expressions


def to_onnx(model, path=None, opset=17, lengths=False):
    """The model as an onnx.ModelProto (written to `path` when given), for ONNX Runtime.

    Inputs: x, batch-first with B and T dynamic: float32 (B, T, I), or int64 token ids (B, T)
    for a model with an embedding; with lengths=True also lengths, int32 (B,), each sequence's
    valid steps (1 to T), as Model.forward's `lengths`. Without it every sequence is T steps.
    Outputs: y, as Model.forward's first output (zero past each length for a per-step output);
    the final states (at each sequence's last valid step): h_n (and c_n for LSTMs) stacked as
    Model's for a uniform stack, else h_n_l{k} (and c_n_l{k}) per recurrent layer k.

    An embedding is a Gather of its table (padding_idx, which only acts in training, is kept in
    the model's metadata_props for from_onnx). Each recurrent layer is an ONNX LSTM, GRU or RNN
    node (layout 0, gate orders permuted back to ONNX's) with its direction, activations (with
    alpha and beta), clip, input_forget and peepholes, and lengths as its sequence_lens; a
    bidirectional layer's merge is Transpose + Reshape (concat) or ReduceSum / ReduceMean /
    ReduceProd over the directions. Readouts: the final states (Y_h, merged); without lengths
    the last step (Slice) and mean or max over time (ReduceMean / ReduceMax); with lengths the
    last valid step (GatherND of lengths - 1), the mean over the valid steps (ReduceSum / Div
    by lengths) and their max (Where(valid, Y, -inf), ReduceMax). Dense layers are MatMul + Add
    and their activation; on a per-step output with lengths, Where zeroes the invalid steps.
    Refused, naming the layer: a Masking layer and an embedding's mask_zero (a masked step
    keeps the state, which ONNX's nodes cannot do; pad on the right and export with lengths),
    proj_size (ONNX's LSTM has no projection) and the activations ONNX's recurrent nodes do not
    take (linear: affine with alpha 1, beta 0 is the same function; Keras's others).
    """
    return spec_to_onnx(model.spec, model.params, path, opset, lengths)


def _refuse_layer(spec, index, why):
    layer = spec.layers[index]
    raise ValueError(f"layers[{index}] ({type(layer).__name__}): {why}")


def spec_to_onnx(spec, params, path=None, opset=17, lengths=False):
    """to_onnx for a resolved layer list (layers.Spec) and its parameters."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if opset < 14:
        raise ValueError(f"opset: expected >= 14, got {opset}")
    if not isinstance(lengths, bool):
        raise TypeError(f"lengths: expected a bool, got {type(lengths).__name__} {lengths!r}")
    if spec.masking is not None:
        _refuse_layer(spec, 0, "a masked step keeps the state, which ONNX's recurrent nodes "
                               "cannot do; pad the sequences on the right, drop the Masking "
                               "layer and export with lengths=True")
    if spec.embedding is not None and spec.embedding.mask_zero:
        _refuse_layer(spec, 0, "mask_zero=True: a masked step keeps the state, which ONNX's "
                               "recurrent nodes cannot do; pad the ids on the right, build the "
                               "model with mask_zero=False and export with lengths=True")
    nodes, initializers, computed = [], [], {}
    positions = [i for i, layer in enumerate(spec.layers) if type(layer) in L.RECURRENT_TYPES]

    def constant(name, value):
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    def reduce(op, data, axis, out):
        """op over one axis, dropped (axes an input from opset 18, and for ReduceSum 13)."""
        if opset >= 18 or op == "ReduceSum":
            return node(op, [data, constant(f"{out}_axes", np.array([axis]))], [out], keepdims=0)
        return node(op, [data], [out], axes=[axis], keepdims=0)

    def merged(r, data, axis, out):
        """A layer's directions, on `axis` of data (features last), merged as the layer does."""
        if r.num_directions == 1:
            return node("Squeeze", [data, constant(f"{out}_axes", np.array([axis]))], [out])
        if r.merge != "concat":
            return reduce({v: k for k, v in MERGE_OPS.items()}[r.merge], data, axis, out)
        rank = 4 if axis == 1 else 3  # Y (T, D, B, H) or Y_h (D, B, H): D goes before H
        perm = list(range(rank))
        perm.remove(axis)
        perm.insert(rank - 2, axis)
        moved = node("Transpose", [data], [f"{out}_moved"], perm=perm)
        shape = [0] * (rank - 2) + [-1]
        return node("Reshape", [moved, constant(f"{out}_shape", np.array(shape))], [out])

    def emit(expr):
        """The tensor of an onnx_io.Expr over the inputs, each part written once."""
        if isinstance(expr, str):
            return expr
        key = repr(expr)
        if key not in computed:
            if isinstance(expr, Expr):
                inputs = [emit(e) for e in expr.inputs]
                name = node(expr.op, inputs, [f"lengths_{len(computed)}"], **dict(expr.attrs))
            else:
                name = constant(f"lengths_{len(computed)}",
                                np.array(expr, np.float32 if isinstance(expr, float) else np.int64))
            computed[key] = name
        return computed[key]

    def where_valid(data, fill, out):
        """data (T, B, F) with fill past each sequence's length."""
        return node("Where", [emit(lengths_expressions()["valid"]), data,
                              constant(f"{out}_fill", np.float32(fill))], [out])

    x_input = "x"
    if spec.embedding is not None:
        x_input = node("Gather", [constant(EMBEDDING_PARAM, params[EMBEDDING_PARAM]), "x"],
                       ["embedded"])
    seq = node("Transpose", [x_input], ["x_time_major"], perm=[1, 0, 2])
    finals = []
    for r, position in zip(spec.recurrent, positions):
        cell = CELLS[r.cell]
        op, k = cell.onnx_op, r.index
        if r.proj_size:
            _refuse_layer(spec, position, f"proj_size={r.proj_size}: ONNX's LSTM has no "
                                          f"projection")
        unnamed = [a for a in r.activations if ACTIVATIONS[a].onnx is None]
        if unnamed:
            hint = (" (affine with alpha 1, beta 0 is the same function)"
                    if unnamed[0] == "linear" else "")
            _refuse_layer(spec, position, f"activation {unnamed[0]!r} is not one of the "
                                          f"functions ONNX's recurrent nodes take{hint}")
        attrs = {"hidden_size": r.units, "direction": r.direction}
        default = ONNX_CELLS[op]
        if (r.activations, r.activation_alpha, r.activation_beta) != (
                default.activations, *([tuple(getattr(ACTIVATIONS[a], p) for a in
                                              default.activations)] for p in ("alpha", "beta"))):
            alpha, beta = onnx_alpha_beta(r.activations, r.activation_alpha, r.activation_beta)
            attrs["activations"] = [ACTIVATIONS[a].onnx for a in r.activations] * \
                r.num_directions
            if alpha:
                attrs["activation_alpha"] = alpha * r.num_directions
            if beta:
                attrs["activation_beta"] = beta * r.num_directions
        if r.clip:
            attrs["clip"] = r.clip
        if r.input_forget:
            attrs["input_forget"] = 1
        if op == "GRU":
            attrs["linear_before_reset"] = int(r.cell == "gru")

        def stacked(kind, order=cell.to_onnx):
            return np.stack([permute_gates(params[param_name(kind, k, reverse)], order)
                             for reverse in r.reverse_flags])

        inputs = [seq, constant(f"W_l{k}", stacked("weight_ih")),
                  constant(f"R_l{k}", stacked("weight_hh")),
                  constant(f"B_l{k}", np.concatenate([stacked("bias_ih"), stacked("bias_hh")],
                                                     1)), "lengths" if lengths else ""]
        if r.peepholes:
            P = stacked("weight_peephole", tuple(np.argsort(PEEPHOLE_FROM_ONNX)))
            inputs += ["", "", constant(f"P_l{k}", P.reshape(r.num_directions, -1))]
        while not inputs[-1]:
            inputs.pop()
        outputs = [f"Y_l{k}", f"Y_h_l{k}"] + ([f"Y_c_l{k}"] if op == "LSTM" else [])
        node(op, inputs, outputs, name=f"{op.lower()}_l{k}", **attrs)
        finals.append(outputs[1:])
        seq = merged(r, outputs[0], 1, f"seq_l{k}")

    top, out = spec.recurrent[-1], seq  # (T, B, F) for the sequence readout
    if spec.readout == "last" and lengths:
        batch_major = node("Transpose", [seq], ["batch_major"], perm=[1, 0, 2])
        out = node("GatherND", [batch_major, emit(lengths_expressions()["last"])], ["readout"],
                   batch_dims=1)
    elif spec.readout == "last":
        step = node("Slice", [seq, constant("last_start", np.array([-1])),
                              constant("last_end", np.array([2**63 - 1])),
                              constant("last_axis", np.array([0]))], ["last_step"])
        out = node("Squeeze", [step, "last_axis"], ["readout"])
    elif spec.readout == "final":
        out = merged(top, finals[-1][0], 0, "readout")
    elif spec.readout == "mean" and lengths:  # Y is zero past each length
        total = reduce("ReduceSum", seq, 0, "total")
        out = node("Div", [total, emit(lengths_expressions()["count"])], ["readout"])
    elif spec.readout in ("mean", "max"):
        if lengths:
            seq = where_valid(seq, -np.inf, "valid_or_minus_inf")
        out = reduce({v: k for k, v in TIME_OPS.items()}[spec.readout], seq, 0, "readout")
    for d in spec.dense:
        weight = params[dense_param_name("weight", d.index)]
        out = node("MatMul", [out, constant(f"dense{d.index}_weight_t", weight.T.copy())],
                   [f"dense{d.index}_product"])
        out = node("Add", [out, constant(f"dense{d.index}.bias",
                                         params[dense_param_name("bias", d.index)])],
                   [f"dense{d.index}_z"])
        if d.activation is not None:
            op = {v: k for k, v in DENSE_OPS.items()}[d.activation]
            out = node(op, [out], [f"dense{d.index}_out"], **({"axis": -1} if op == "Softmax"
                                                               else {}))
    if spec.readout == "sequence":
        if lengths and spec.dense:  # as Model: a dense layer's output is zero past the length
            out = where_valid(out, 0.0, "valid_or_zero")
        out = node("Transpose", [out], ["sequence"], perm=[1, 0, 2])
    node("Identity", [out], ["y"])

    y_shape = ["batch"] + (["time"] if spec.readout == "sequence" else []) + [spec.output_size]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)]
    if spec.uniform:  # stacked as PyTorch's
        states = [(kind, [parts[j] for parts in finals], sum(r.num_directions for r in
                                                             spec.recurrent), width)
                  for j, (kind, width) in enumerate((("h_n", top.state_size),
                                                     ("c_n", top.units))[:len(finals[0])])]
    else:  # per layer, as Model's state list
        states = [(f"{kind}_l{r.index}", [name], r.num_directions, width)
                  for r, parts in zip(spec.recurrent, finals)
                  for kind, name, width in zip(("h_n", "c_n"), parts, (r.state_size, r.units))]
    for name, parts, rows, width in states:
        node("Concat", parts, [name], axis=0)
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                     [rows, "batch", width]))
    if spec.embedding is None:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                ["batch", "time", spec.input_size])]
    else:
        inputs = [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "time"])]
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]))
    graph = helper.make_graph(nodes, "rnnext", inputs, outputs, initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="rnnext")
    if spec.embedding is not None and spec.embedding.padding_idx is not None:
        helper.set_model_props(proto, {PADDING_IDX_KEY: str(spec.embedding.padding_idx)})
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, path)
    return proto
