"""ONNX import (from_onnx). Needs the optional onnx package.

Import first folds every tensor that only initializers and constants feed (onnx_fold: the
weights that torch.onnx.export(dynamo=True, optimize=False) slices and concatenates), then reads
the path from the graph's input to its first output and builds a layer list:
- an embedding: Gather of a constant table's rows by the graph input's token ids (B, T), or
  (T, B) where a Transpose follows;
- each LSTM, GRU or RNN node is a recurrent layer of its own (nodes of different types and
  sizes in a chain are different layers), with its direction (forward, reverse or
  bidirectional), activations with activation_alpha / activation_beta (as ONNX Runtime reads
  them: one value per function that uses one, in order), clip, input_forget, peepholes (P,
  ONNX order i, o, f; all zero means none) and linear_before_reset (0 is GRU(reset_after=False));
  gate blocks are permuted to ours (cells.CELLS[..].from_onnx); an RNN unrolled into per-step
  MatMul, Add and Tanh or Relu (how the dynamo exporter writes nn.RNN) is read as an RNN node
  (onnx_unrolled);
- how a bidirectional node's Y (T, D, B, H) is merged: Transpose and Reshape of (D, H) into one
  axis is merge "concat"; ReduceSum, ReduceMean or ReduceProd over D is "sum", "ave", "mul";
- the readout: the whole sequence (none), the last time step of Y (Gather or Slice of index -1:
  Readout("last")), Y_h (Readout("final"), merged the same ways; PyTorch's h_n[-1], a row of
  the Y_h of its layers concatenated, is the last node's Y_h, and torch.cat([h_n[-2], h_n[-1]],
  1) of a bidirectional node is merge "concat"), ReduceMean or ReduceMax over time
  (Readout("mean") / ("max"));
- dense layers: Gemm, or MatMul and Add, each optionally followed by Relu, Tanh, Sigmoid or
  Softmax (on the last axis).
Between them it follows the reshaping that exporters emit (Transpose, Reshape, Squeeze,
Unsqueeze, Flatten, Identity, Dropout), tracking what every axis means, and refuses by name
whatever it cannot map exactly. A Reshape target may be computed from Shape of the data (batch
and time sizes as the exporters write them for dynamic axes); a fixed size given to the time or
batch axis is the graph's own (the dynamo exporter fixes T at the example's even where the graph
input calls it dynamic): the imported Model runs at any batch and time.

What the imported Model computes, for batch-first x (B, T, I) whatever the graph's layout: the
graph's first output with its axes in batch-first order (a per-step output is zero past each
sequence's length, as ONNX's Y is; dense layers on every step past the lengths are refused
unless a Where zeroes those steps, as to_onnx writes it). sequence_lens, when the nodes take it
from a graph input, is Model's `lengths`. initial_h and initial_c taken from
graph inputs are Model's `state`: node k's [D, B, H] block (layout 0; [B, D, H] transposed for
layout 1) is recurrent layer k's state (rows k*D .. k*D+D-1 of the stacked (L*D, B, H) arrays
when the layers are uniform). Zero initial states, constant or computed (as PyTorch's exporter
does), are the default.

ONNX holds activation_alpha, activation_beta and clip as float32: a value that float32 does not
represent comes back rounded. Export (onnx_export.to_onnx) writes what maps back onto these ops,
and with its lengths input the patterns _over_lengths reads (readouts over each sequence's valid
steps); an embedding is a Gather of a constant table by the ids input (_embedding).
"""
import collections
from functools import lru_cache

import numpy as np

from . import layers as L
from .cells import (ACTIVATIONS, CELLS, EMBEDDING_PARAM, PEEPHOLE_FROM_ONNX,
                    activations_from_onnx, dense_param_name, param_name, permute_gates)
from .convert import recurrent_layer
from .model import Model
from .onnx_fold import fold, shape_entries, static_sizes
from .onnx_unrolled import unrolled_rnn

# ONNX's recurrent operators and the cell each one is with its default attributes
ONNX_CELLS = {c.onnx_op: c for c in CELLS.values() if c.name in ("rnn_tanh", "lstm", "gru")}
# a bidirectional output merged by reducing its direction axis
MERGE_OPS = {"ReduceSum": "sum", "ReduceMean": "ave", "ReduceProd": "mul"}
# readouts that reduce over time
TIME_OPS = {"ReduceMean": "mean", "ReduceMax": "max"}
# ops that only move or relabel the data on the path
SHAPE_OPS = ("Identity", "Dropout", "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Flatten",
             "Gather", "Slice")
# dense layers' activations by op
DENSE_OPS = {**{ACTIVATIONS[a].onnx: a for a in L.DENSE_ACTIVATIONS if a in ACTIVATIONS},
             "Softmax": "softmax"}
# ops on the path that read each sequence's valid steps from the lengths (see _over_lengths)
LENGTHS_OPS = ("Where", "GatherND", "Div")
# the model's metadata_props key that keeps an embedding's padding_idx (training only)
PADDING_IDX_KEY = "rnnext.embedding.padding_idx"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX import and export need the onnx package: pip install onnx") \
            from None
    return onnx


class OnnxImportError(ValueError):
    """A graph that rnnext cannot represent exactly; the message names the node and why."""


def _refuse(node, why):
    name = f"{node.op_type} node {node.name!r}" if node is not None else "graph"
    raise OnnxImportError(f"{name}: {why}")


# ------------------------------------------------------------------------------------------------
# reading the graph


class _Graph:
    """Lookups on an ONNX graph: who produces each tensor, constants, graph inputs."""

    def __init__(self, model):
        onnx = _onnx()
        self.numpy_helper, self.helper = onnx.numpy_helper, onnx.helper
        graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.producer = {out: (node, k) for node in graph.node
                         for k, out in enumerate(node.output) if out}
        self.values = fold(model, self.opset)
        initializers = {t.name for t in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in initializers]
        # each graph input's static sizes (None where the axis is dynamic)
        self.input_sizes = {i.name: static_sizes(i) for i in graph.input}
        self.outputs = [o.name for o in graph.output]

    def constant(self, name):
        """The value of a tensor that only initializers and constants feed (folded), else
        None."""
        return self.values.get(name)

    def is_zero(self, name):
        """Whether the tensor is all zeros: a zero constant, a ConstantOfShape of 0, or a
        slice, reshape or broadcast of one (PyTorch's exporter builds zero states so)."""
        value = self.constant(name)
        if value is not None:
            return value.dtype.kind in "biuf" and not np.any(value)
        node = self.producer.get(name, (None,))[0]
        if node is None:
            return False
        if node.op_type == "ConstantOfShape":
            attrs = self.attributes(node)
            return "value" not in attrs or not np.any(self.numpy_helper.to_array(attrs["value"]))
        if node.op_type in ("Slice", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Expand",
                            "Identity", "Gather", "Cast"):
            return self.is_zero(node.input[0])
        return False

    def attributes(self, node):
        return {a.name: self.helper.get_attribute_value(a) for a in node.attribute}

    def ints(self, node, index, attr):
        """Integer list from input `index` (newer opsets) or attribute `attr` (older)."""
        if len(node.input) > index and node.input[index]:
            value = self.constant(node.input[index])
            if value is None:
                _refuse(node, f"input {index} ({attr}) must be a constant")
            return [int(v) for v in np.atleast_1d(value)]
        value = self.attributes(node).get(attr)
        return None if value is None else [int(v) for v in np.atleast_1d(value)]


def _data_input(graph, node):
    """The input of `node` that carries the data path (the others must be constants)."""
    if node.op_type in ("MatMul", "Add"):
        variable = [i for i in node.input if graph.constant(i) is None]
        if len(variable) != 1:
            _refuse(node, "expected one constant operand (a dense layer's weight or bias)")
        return variable[0]
    if node.op_type == "Where":
        return node.input[1]
    if node.op_type == "Gather" and graph.constant(node.input[0]) is not None:
        return node.input[1]  # an embedding: the ids select rows of a constant table
    return node.input[0]


def _unstack(graph, gather):
    """A Gather of one row of stacked final states (PyTorch's h_n: Concat on axis 0 of the Y_h
    of its layers) as a Gather from that layer's Y_h; other Gathers unchanged."""
    source = graph.producer.get(gather.input[0], (None,))[0]
    index = graph.constant(gather.input[1]) if len(gather.input) > 1 else None
    if source is None or source.op_type != "Concat" or index is None or index.size != 1 or \
            graph.attributes(gather).get("axis", 0) != 0 or \
            graph.attributes(source).get("axis") != 0:
        return gather
    rows = []
    for name in source.input:
        node, k = graph.producer.get(name, (None, None))
        if node is None or node.op_type not in ONNX_CELLS or k != 1:
            return gather
        direction = _text(graph.attributes(node).get("direction", "forward"))
        rows += [(name, d) for d in range(2 if direction == "bidirectional" else 1)]
    row = int(index.flat[0])
    if not -len(rows) <= row < len(rows):
        _refuse(gather, f"index {row} is out of range for {len(rows)} stacked final states")
    name, local = rows[row]
    graph.values[f"{gather.output[0]}/row"] = np.full(index.shape, local, np.int64)
    return graph.helper.make_node("Gather", [name, f"{gather.output[0]}/row"],
                                  list(gather.output), name=gather.name, axis=0)


def _directions_concat(graph, concat):
    """The Concat on the feature axis of a bidirectional node's two final states, forward then
    backward (torch.cat([h_n[-2], h_n[-1]], 1)), as the Transpose and Reshape that merge the
    directions of its Y_h (in the chain's order, last first)."""
    gathers = [graph.producer.get(name, (None,))[0] for name in concat.input]
    gathers = [_unstack(graph, g) if g is not None and g.op_type == "Gather" else None
               for g in gathers]
    picked = [(g.input[0], graph.constant(g.input[1])) for g in gathers if g is not None]
    axis = graph.attributes(concat).get("axis")
    source, k = graph.producer.get(picked[0][0], (None, None)) if picked else (None, None)
    if len(picked) != 2 or len(gathers) != 2 or axis not in (1, -1) or k != 1 or \
            source.op_type not in ONNX_CELLS or \
            _text(graph.attributes(source).get("direction")) != "bidirectional" or \
            picked[0][0] != picked[1][0] or any(i is None or i.ndim for _, i in picked) or \
            [int(i) % 2 for _, i in picked] != [0, 1]:
        _refuse(concat, "only the concatenation, on the feature axis, of a bidirectional node's "
                        "forward and backward final states in that order maps (torch.cat([h_n[-2], "
                        "h_n[-1]], 1)), or that of an RNN's steps as torch.onnx.export(dynamo="
                        "True) unrolls nn.RNN (tanh or relu, no initial state)")
    states, out = picked[0][0], concat.output[0]
    graph.values[f"{out}/shape"] = np.array([0, -1], np.int64)
    return [graph.helper.make_node("Reshape", [f"{out}/directions", f"{out}/shape"], [out],
                                   name=concat.name),
            graph.helper.make_node("Transpose", [states], [f"{out}/directions"],
                                   name=concat.name, perm=[1, 0, 2])]


def _chain(graph):
    """[(node, output index)] from a graph input to the first output, along the data path."""
    if len(graph.outputs) == 0:
        _refuse(None, "has no outputs")
    chain, name = [], graph.outputs[0]
    while name not in graph.inputs:
        if name not in graph.producer:
            _refuse(None, f"tensor {name!r} on the path to the first output has no producer and "
                          f"is not a graph input")
        node, k = graph.producer[name]
        if node.op_type == "Concat":
            *rewritten, node = unrolled_rnn(graph, node) or _directions_concat(graph, node)
            chain += [(n, 0) for n in rewritten]
            k = 0
        elif node.op_type == "Gather":
            node = _unstack(graph, node)
        if node.op_type not in (*ONNX_CELLS, *SHAPE_OPS, *MERGE_OPS, *TIME_OPS, *DENSE_OPS,
                                *LENGTHS_OPS, "Gemm", "MatMul", "Add"):
            _refuse(node, "is not supported on the path from the input to the first output; "
                          "rnnext imports chains of LSTM, GRU or RNN nodes with their merges and "
                          "readouts, then dense layers (Gemm, or MatMul and Add) and their "
                          "activations (Relu, Tanh, Sigmoid, Softmax)")
        chain.append((node, k))
        name = _data_input(graph, node)
    return chain[::-1]


# ------------------------------------------------------------------------------------------------
# the data path, one axis label at a time
#
# labels: x0, x1, x2 the graph input's axes (before the first recurrent node; x2 an embedding's
# vectors after ids x0, x1); T time; B batch; F features (width); D the two directions and H one
# direction's units of an unmerged bidirectional output; 1 a unit axis.


class _Path:
    def __init__(self, input_sizes):
        self.input_sizes = input_sizes  # the graph input's static sizes (None where dynamic)
        self.axes = [f"x{i}" for i in range(len(input_sizes))]
        self.stage = "input"   # input -> seq (a recurrent output) -> readout -> dense
        self.readout = "sequence"
        self.width = None      # the size of an F axis
        self.units = None      # the size of an H axis
        self.layer = None      # the record of the last recurrent node (see _recurrent)
        self.static = {}       # the sizes of T and B where the graph fixes them (its input's
        #                        shape, or a Reshape target)
        self.inputs = {}       # x0.. as T, B, or the input's feature count (first recurrent node)
        self.shapes = {}       # {tensor: its axes} for the tensors on the path

    def size(self, label):
        return {"1": 1, "D": 2, "H": self.units, "F": self.width, **self.static}.get(label)

    def record(self, name):
        """Notes the axes of tensor `name`, the path's current tensor, for Shape of it."""
        self.shapes[name] = [a if self.size(a) is None else self.size(a) for a in self.axes]

    def entries(self, name):
        """Tensor `name`'s shape as ints and the labels of dynamic axes, or None off the path."""
        if name not in self.shapes:
            return None
        labels = [self.inputs.get(a, a) for a in self.shapes[name]]
        return [a if isinstance(a, int) or self.size(a) is None else self.size(a)
                for a in labels]

    def begin_sequence(self, want, input_size):
        """Names the graph input's axes, now reordered as `want` + features by the first
        recurrent node's input: T and B, with their static sizes, and the features."""
        for axis, label in zip(self.axes, want):
            self.inputs[axis] = label
            size = self.input_sizes[int(axis[1:])] if int(axis[1:]) < len(self.input_sizes) \
                else None
            if size:
                self.static[label] = size
        self.inputs[self.axes[-1]] = input_size


def _axis(node, axis, rank):
    if not -rank <= axis < rank:
        _refuse(node, f"axis {axis} is out of range for a rank-{rank} tensor")
    return axis % rank


def _merge(node, path, labels):
    """One label for a run of axes merged by Reshape or Flatten."""
    labels = [a for a in labels if a != "1"]
    if not labels:
        return "1"
    if len(labels) == 1:
        return labels[0]
    if labels == ["D", "H"]:
        return "F"
    _refuse(node, f"merges axes {tuple(labels)}, which has no meaning in rnnext's layout")


def _reshape(node, path, target):
    """Labels after Reshape to `target` (0 copies the axis at its position, -1 takes the rest, a
    label such as "B" is the size of that axis): each output axis must be a run of whole input
    axes."""
    axes = path.axes
    if target.count(-1) > 1 or any(isinstance(t, int) and t < -1 for t in target):
        _refuse(node, f"shape {target} is not a valid target")

    def match(specs, positions, order):
        """Runs of axes (taken in `order`) for each spec, and how many axes they took."""
        runs, i = [], 0
        for spec, position in zip(specs, positions):
            if spec == 0:
                if i >= len(order) or order[i] != position:
                    _refuse(node, f"shape {target} copies axis {position} of {tuple(axes)} after "
                                  f"merging others")
                runs.append([axes[order[i]]])
                i += 1
                continue
            if isinstance(spec, str):
                if i >= len(order) or axes[order[i]] != spec:
                    _refuse(node, f"shape {target} gives the size of axis {spec} to another axis "
                                  f"of {tuple(axes)}")
                runs.append([spec])
                i += 1
                continue
            run, product = [], 1
            while product < spec and i < len(order):
                size = path.size(axes[order[i]])
                if size is None and not run and axes[order[i]] in ("T", "B"):
                    # the graph runs at this size only (PyTorch's dynamo exporter fixes T so
                    # while the graph input calls it dynamic); the Model runs at any
                    size = path.static[axes[order[i]]] = spec
                if size is None:
                    _refuse(node, f"shape {target} gives the axis {axes[order[i]]} of "
                                  f"{tuple(axes)}, of variable size, a fixed size")
                run.append(axes[order[i]])
                product *= size
                i += 1
            if spec == 1 and not run and i < len(order) and path.size(axes[order[i]]) == 1:
                run.append(axes[order[i]])  # a unit axis, or T or B where the graph fixes it at 1
                i += 1
            if product != spec:
                _refuse(node, f"shape {target} splits an axis of {tuple(axes)}")
            runs.append(run)
        return runs, i

    split = target.index(-1) if -1 in target else len(target)
    left, taken = match(target[:split], range(split), list(range(len(axes))))
    if split == len(target):
        if taken != len(axes):
            _refuse(node, f"shape {target} drops axes of {tuple(axes)}")
        return [_merge(node, path, run) for run in left]
    right, taken_right = match(target[:split:-1], range(len(target) - 1, split, -1),
                               list(range(len(axes) - 1, taken - 1, -1)))
    middle = axes[taken:len(axes) - taken_right]
    runs = left + [middle] + [run[::-1] for run in right[::-1]]
    return [_merge(node, path, run) for run in runs]



def _last_step(node, path, label):
    """Marks the path as read out at the last step when an index or slice takes it from T."""
    if label != "T":
        return
    if path.stage != "seq":
        _refuse(node, "takes a time step of something that is not a recurrent output sequence")
    path.stage, path.readout = "readout", "last"


def _reduce(graph, node, path):
    """Updates path for a Reduce op: a merge of the directions or a readout over time."""
    op, attrs, rank = node.op_type, graph.attributes(node), len(path.axes)
    axes = graph.ints(node, 1, "axes")
    if axes is None or len(axes) != 1:
        _refuse(node, f"expected one axis to reduce, got {axes}")
    axis = _axis(node, axes[0], rank)
    label = path.axes[axis]
    if label == "D" and op in MERGE_OPS and path.stage != "masked":
        if path.readout == "max":
            _refuse(node, "merges the directions after a max over time, which does not commute: "
                          "rnnext's max readout is over the merged output")
        path.layer["merge"] = MERGE_OPS[op]
        path.axes = ["F" if a == "H" else a for a in path.axes]
        path.width = path.units
    elif label == "T" and (path.stage == "seq" and op in (*TIME_OPS, "ReduceSum") or
                           path.stage == "masked" and op == "ReduceMax"):
        # a sum over time is a mean once divided by the lengths (_over_lengths)
        path.stage, path.readout = "readout", TIME_OPS.get(op, "sum")
    else:
        _refuse(node, f"reduces axis {label} of {tuple(path.axes)}: only the directions (sum, "
                      f"mean, product) or the time steps of a sequence (mean, max) map")
    if attrs.get("keepdims", 1):
        path.axes[axis] = "1"
    else:
        del path.axes[axis]


def _shape_op(graph, node, path):
    """Updates path for an op of SHAPE_OPS."""
    op, attrs, rank = node.op_type, graph.attributes(node), len(path.axes)
    if op in ("Identity", "Dropout"):
        return
    if op == "Transpose":
        perm = attrs.get("perm", list(range(rank))[::-1])
        path.axes = [path.axes[p] for p in perm]
    elif op == "Squeeze":
        axes = graph.ints(node, 1, "axes")
        axes = [i for i, a in enumerate(path.axes) if a == "1"] if axes is None else \
            [_axis(node, a, rank) for a in axes]
        if any(path.axes[a] != "1" for a in axes):
            _refuse(node, f"squeezes an axis that is not known to be 1 (axes {tuple(path.axes)})")
        path.axes = [a for i, a in enumerate(path.axes) if i not in axes]
    elif op == "Unsqueeze":
        axes = graph.ints(node, 1, "axes")
        for a in sorted(_axis(node, a, rank + len(axes)) for a in axes):
            path.axes.insert(a, "1")
    elif op == "Reshape":
        target = graph.constant(node.input[1])
        if target is None:
            target = shape_entries(graph, node.input[1], path.entries)
        if target is None:
            _refuse(node, "its shape must be a constant or computed from constants and the "
                          "sizes of the batch and time axes (Shape of the data)")
        target = [t if isinstance(t, str) else int(t) for t in target]
        if attrs.get("allowzero", 0) and 0 in target:
            _refuse(node, "allowzero=1 with a zero in the shape is not supported")
        path.axes = _reshape(node, path, target)
    elif op == "Flatten":
        axis = attrs.get("axis", 1) + (rank if attrs.get("axis", 1) < 0 else 0)
        if not 0 <= axis <= rank:
            _refuse(node, f"axis {attrs.get('axis')} is out of range for a rank-{rank} tensor")
        path.axes = [_merge(node, path, path.axes[:axis]), _merge(node, path, path.axes[axis:])]
    elif op == "Gather":
        index = graph.constant(node.input[1])
        axis = _axis(node, attrs.get("axis", 0), rank)
        label = path.axes[axis]
        if label == "D":
            _refuse(node, "takes one direction of a bidirectional node's output (as h_n[-1] "
                          "or h_n[-2] alone does); rnnext's layers and final readout keep both "
                          "directions: concatenate them (torch.cat([h_n[-2], h_n[-1]], 1)) or "
                          "make the last layer unidirectional")
        if index is None or index.size != 1 or not (
                (label == "T" and int(index.flat[0]) == -1) or (label == "1" and
                                                                 int(index.flat[0]) in (0, -1))):
            _refuse(node, f"gathers {index!r} from axis {label}; only the last time step (index "
                          f"-1) is supported")
        _last_step(node, path, label)
        if index.ndim == 0:
            del path.axes[axis]
        else:
            path.axes[axis] = "1"
    elif op == "Slice":
        starts, ends = graph.ints(node, 1, "starts"), graph.ints(node, 2, "ends")
        axes = graph.ints(node, 3, "axes") or list(range(len(starts)))
        steps = graph.ints(node, 4, "steps") or [1] * len(starts)
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis = _axis(node, axis, rank)
            label, size = path.axes[axis], path.size(path.axes[axis])
            if step == 1 and start == -1 and end >= 2**31 - 1 and label == "T":
                _last_step(node, path, label)
                path.axes[axis] = "1"
            elif not (step == 1 and start == 0 and (end >= 2**31 - 1 or
                                                    (size is not None and end >= size))):
                _refuse(node, f"slices [{start}:{end}:{step}] of axis {label}; only the last "
                              f"time step ([-1:]) is supported")



# ------------------------------------------------------------------------------------------------
# recurrent nodes


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _recurrent(graph, node, path, info):
    """(the record of a recurrent node: its cell, units, direction, layer options and weights
    per direction in our layout; the axis labels of its outputs Y and Y_h), after checking its
    input against path."""
    op, attrs = node.op_type, graph.attributes(node)
    cell = ONNX_CELLS[op]
    W, R = graph.constant(node.input[1]), graph.constant(node.input[2])
    if W is None or R is None:
        _refuse(node, "W and R must be constants (initializers)")
    H = attrs.get("hidden_size", R.shape[-1])
    direction = _text(attrs.get("direction", "forward"))
    flags = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}
    if direction not in flags:
        _refuse(node, f"direction {direction!r} is not forward, reverse or bidirectional")
    D = len(flags[direction])
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        _refuse(node, f"layout {layout} is not 0 or 1")

    options = {}
    if "activations" in attrs:
        names, count = [_text(a) for a in attrs["activations"]], len(cell.activations)
        if len(names) != D * count:
            _refuse(node, f"activations: expected {D * count} names ({count} per direction), "
                          f"got {names}")
        try:
            functions = activations_from_onnx(names, attrs.get("activation_alpha"),
                                              attrs.get("activation_beta"))
        except ValueError as e:
            _refuse(node, str(e))
        per_direction = {tuple(f[d * count:(d + 1) * count] for f in functions)
                         for d in range(D)}
        if len(per_direction) != 1:
            _refuse(node, f"its directions' activations differ ({names}, alpha "
                          f"{attrs.get('activation_alpha')}, beta "
                          f"{attrs.get('activation_beta')}): an rnnext layer has one set")
        activations, alpha, beta = per_direction.pop()
        options.update(activations=activations, activation_alpha=alpha, activation_beta=beta)
        if activations == CELLS["rnn_relu"].activations and op == "RNN":
            cell = CELLS["rnn_relu"]
    if "clip" in attrs:
        options["clip"] = attrs["clip"]
    if op == "GRU" and not attrs.get("linear_before_reset", 0):
        cell = CELLS["gru_reset_before"]
    if op == "LSTM":
        options["input_forget"] = bool(attrs.get("input_forget", 0))

    def optional(index):
        return node.input[index] if len(node.input) > index and node.input[index] else None

    lengths = optional(4)
    if lengths is not None and lengths not in graph.inputs:
        _refuse(node, "sequence_lens must be a graph input (it becomes Model's lengths)")
    if info.setdefault("lengths", lengths) != lengths:
        _refuse(node, "takes sequence_lens differently from the first node; rnnext applies one "
                      "lengths array to the whole model")
    for index, what in ((5, "initial_h"), (6, "initial_c")):
        state = optional(index)
        if state is not None and state not in graph.inputs and not graph.is_zero(state):
            _refuse(node, f"{what} must be zeros or a graph input (Model's state), got a "
                          f"nonzero or computed tensor")

    # the input: (T, B, F) for layout 0, (B, T, F) for layout 1
    want = ["T", "B"] if layout == 0 else ["B", "T"]
    if path.stage == "input":
        if len(path.axes) != 3 or set(path.axes) != {"x0", "x1", "x2"}:
            _refuse(node, f"X must be the graph input, reordered at most, or its embedding; got "
                          f"axes {tuple(path.axes)}")
        info["input_size"] = W.shape[-1]
        path.begin_sequence(want, W.shape[-1])
    elif path.stage != "seq" or path.axes != want + ["F"]:
        _refuse(node, f"X must be the graph input or the previous node's output sequence as "
                      f"{tuple(want)} + features (layout {layout}); got axes {tuple(path.axes)}")
    G = cell.num_gates
    width = W.shape[-1] if path.stage == "input" else path.width
    if W.shape != (D, G * H, width) or R.shape != (D, G * H, H):
        _refuse(node, f"W {W.shape} or R {R.shape} do not fit hidden_size {H}, {D} directions "
                      f"and {width} input features")
    B = graph.constant(optional(3)) if optional(3) else np.zeros((D, 2 * G * H), np.float32)
    if B is None or B.shape != (D, 2 * G * H):
        _refuse(node, f"B must be a constant of shape {(D, 2 * G * H)}")
    weights = {reverse: {"weight_ih": W[d], "weight_hh": R[d], "bias_ih": B[d, :G * H],
                         "bias_hh": B[d, G * H:]} for d, reverse in enumerate(flags[direction])}
    weights = {reverse: {kind: permute_gates(value, cell.from_onnx).astype(np.float32)
                         for kind, value in w.items()} for reverse, w in weights.items()}
    if op == "LSTM" and optional(7) is not None and not graph.is_zero(optional(7)):
        P = graph.constant(optional(7))
        if P is None or P.shape != (D, 3 * H):
            _refuse(node, f"P (peepholes) must be a constant of shape {(D, 3 * H)}")
        options["peepholes"] = True
        for d, reverse in enumerate(flags[direction]):
            weights[reverse]["weight_peephole"] = \
                P[d].reshape(3, H)[list(PEEPHOLE_FROM_ONNX)].astype(np.float32)

    # the outputs: Y (T, D, B, H) or (B, T, D, H); Y_h, Y_c (D, B, H) or (B, D, H)
    path.units, path.width = H, D * H
    dir_label, unit = ("D", "H") if D == 2 else ("1", "F")
    outputs = {"Y": ["T", dir_label, "B", unit] if layout == 0 else ["B", "T", dir_label, unit],
               "Y_h": [dir_label, "B", unit] if layout == 0 else ["B", dir_label, unit]}
    return {"node": node, "cell": cell, "units": H, "direction": direction, "merge": "concat",
            "options": options, "weights": weights}, outputs


# ------------------------------------------------------------------------------------------------
# readouts over each sequence's valid steps, and embeddings (what onnx_export writes)
#
# The tensors computed from the lengths input are written by onnx_export.to_onnx and matched
# here from one description: an expression is the role of a graph input ("x" the model's input,
# "lengths" the nodes' sequence_lens), a constant (an int, a float, or a tuple of ints: int64 and
# float32 tensors), or Expr(op, inputs, attributes as (name, value) pairs).

Expr = collections.namedtuple("Expr", "op inputs attrs", defaults=((),))


@lru_cache(maxsize=1)
def lengths_expressions():
    """{name: Expr}: "valid" the (T, B, 1) mask of valid steps, "last" each sequence's last
    valid step (B, 1) as int64, "count" its number of valid steps (B, 1) as float32."""
    from onnx import TensorProto

    lengths64 = Expr("Cast", ("lengths",), (("to", TensorProto.INT64),))
    time_steps = Expr("Gather", (Expr("Shape", ("x",)), 1))
    steps = Expr("Unsqueeze", (Expr("Range", (0, time_steps, 1)), (1,)))
    return {"valid": Expr("Unsqueeze", (Expr("Less", (steps, lengths64)), (2,))),
            "last": Expr("Unsqueeze", (Expr("Sub", (lengths64, 1)), (1,))),
            "count": Expr("Unsqueeze", (Expr("Cast", ("lengths",), (("to", TensorProto.FLOAT),)),
                                        (1,)))}


def _computes(graph, name, expr, roles):
    """Whether tensor `name` is computed as expr, roles naming the graph inputs."""
    if isinstance(expr, str):
        return name == roles[expr]
    if not isinstance(expr, Expr):
        value = graph.constant(name)
        return value is not None and value.shape == np.shape(expr) and np.all(value == expr)
    node = graph.producer.get(name, (None,))[0]
    return node is not None and node.op_type == expr.op and \
        graph.attributes(node) == dict(expr.attrs) and len(node.input) == len(expr.inputs) and \
        all(_computes(graph, i, e, roles) for i, e in zip(node.input, expr.inputs))


def _over_lengths(graph, node, path, info):
    """Updates path for an op of LENGTHS_OPS, as to_onnx writes them with lengths: Where(valid,
    Y, -inf) then ReduceMax over time (max), ReduceSum over time then Div by the counts (mean),
    GatherND of the last valid steps (last), Where(valid, y, 0) after per-step dense layers."""
    roles = {"x": info["input"], "lengths": info.get("lengths")}

    def computes(index, name):
        return _computes(graph, node.input[index], lengths_expressions()[name], roles)

    op = node.op_type
    if op == "Where":
        fill = graph.constant(node.input[2])
        fill = None if fill is None or fill.size != 1 else float(fill.flat[0])
        if not computes(0, "valid") or path.axes != ["T", "B", "F"]:
            _refuse(node, "expected the (time, batch, 1) mask of the valid steps made from the "
                          "sequence_lens input, on a (time, batch, features) tensor")
        if fill == -np.inf and path.stage == "seq":
            path.stage = "masked"  # for ReduceMax over time
        elif fill != 0.0 or path.readout != "sequence" or path.stage == "masked":
            _refuse(node, f"fills {fill} past the lengths; only -inf before ReduceMax over "
                          f"time, or zeros on a per-step output, map")
    elif op == "GatherND":
        if path.stage != "seq" or path.axes != ["B", "T", "F"] or \
                graph.attributes(node).get("batch_dims") != 1 or not computes(1, "last"):
            _refuse(node, "expected the last valid step (sequence_lens - 1) of each sequence of "
                          "a (batch, time, features) output, with batch_dims=1")
        path.axes, path.stage, path.readout = ["B", "F"], "readout", "last"
    elif path.readout != "sum" or path.axes != ["B", "F"] or not computes(1, "count"):
        _refuse(node, "expected a sum over time divided by the sequence_lens input (a mean over "
                      "the valid steps)")
    else:
        path.readout = "mean"
    info["over_lengths"] = True


# ------------------------------------------------------------------------------------------------
# import


def _load(source):
    """The onnx.ModelProto of a path, a file's bytes or a ModelProto; ValueError naming source
    for what does not parse, TypeError for anything else."""
    import os

    from google.protobuf.message import DecodeError

    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        return source
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        raise TypeError(f"source: expected a path, the bytes of an ONNX file or an "
                        f"onnx.ModelProto, got {type(source).__name__}")
    if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
        raise ValueError(f"source: no file at {os.fspath(source)!r}")
    try:
        if isinstance(source, (str, os.PathLike)):
            return onnx.load(source)
        return onnx.load_from_string(bytes(source))
    except DecodeError as e:
        where = repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "bytes"
        raise ValueError(f"source: {where} is not an ONNX model ({e})") from None


def from_onnx(source, backend="c"):
    """A Model from an ONNX model (a path, the file's bytes, or an onnx.ModelProto); see the
    module's documentation for what is supported and what the Model's outputs mean."""
    layers, input_size, params = onnx_layers(source)
    return Model(layers, input_size, params=params, backend=backend)


def onnx_layers(source):
    """(layers, input_size, params) of from_onnx's Model."""
    model = _load(source)
    graph = _Graph(model)
    chain = _chain(graph)
    if not any(node.op_type in ONNX_CELLS for node, _ in chain):
        _refuse(None, "has no LSTM, GRU or RNN node on the path to its first output")
    first = _data_input(graph, chain[0][0])
    path, records, dense = _Path(graph.input_sizes[first]), [], []
    info = {"embedding": None, "input": first,
            "padding_idx": {p.key: p.value for p in model.metadata_props}.get(PADDING_IDX_KEY)}
    path.record(first)
    for node, k in chain:
        op = node.op_type
        if op == "Gather" and path.stage == "input" and graph.constant(node.input[0]) is not None:
            info["embedding"] = _embedding(graph, node, path)
        elif op in ONNX_CELLS:
            if path.stage not in ("input", "seq"):
                _refuse(node, "takes something other than the input or a recurrent output "
                              "sequence")
            path.layer, outputs = _recurrent(graph, node, path, info)
            records.append(path.layer)
            if k == 0:
                path.axes, path.stage = outputs["Y"], "seq"
            elif k == 1:
                path.axes, path.stage = outputs["Y_h"], "readout"
                path.readout = "final"
            else:
                _refuse(node, "its Y_c (final cell state) is used on the path to the output")
        elif op in LENGTHS_OPS:
            _over_lengths(graph, node, path, info)
        elif op in SHAPE_OPS:
            if path.stage == "input" and op not in ("Transpose", "Identity"):
                _refuse(node, "only Transpose may come between the graph input and the first "
                              "recurrent node")
            _shape_op(graph, node, path)
        elif op in MERGE_OPS or op in TIME_OPS:
            _reduce(graph, node, path)
        elif op in ("Gemm", "MatMul"):
            dense.append(_dense(graph, node, path))
        elif op == "Add":
            if path.stage != "dense" or dense[-1]["activation"] is not None:
                _refuse(node, "only a dense layer's bias may be added, right after its product")
            bias = [i for i in node.input if i != _data_input(graph, node)][0]
            dense[-1]["bias"] = dense[-1]["bias"] + _bias(graph, node, bias, dense[-1]["bias"])
        else:  # a dense layer's activation
            if path.stage != "dense" or dense[-1]["activation"] is not None:
                _refuse(node, "an activation must follow a dense layer, once")
            if op == "Softmax":
                axis = graph.attributes(node).get("axis", -1 if graph.opset >= 13 else 1)
                if _axis(node, axis, len(path.axes)) != len(path.axes) - 1:
                    _refuse(node, f"softmax over axis {axis}, not the last (the outputs)")
            dense[-1]["activation"] = DENSE_OPS[op]
        path.record(node.output[k])
    if path.stage == "masked" or path.readout == "sum":
        _refuse(None, "masks its output for a max over time, or sums over time, without "
                      "completing the readout (ReduceMax over time; Div by sequence_lens)")
    if info["lengths"] is not None and path.readout == "sequence" and dense and \
            not info.get("over_lengths"):
        _refuse(dense[0]["node"], "a dense layer on every step of outputs whose nodes take "
                                  "sequence_lens gives its bias past each length, where "
                                  "rnnext's per-step output is zero; zero those steps with "
                                  "Where(valid, y, 0) as to_onnx(lengths=True) writes, or "
                                  "drop sequence_lens")
    if info["lengths"] is not None and path.readout in ("last", "mean", "max") and \
            not info.get("over_lengths"):
        _refuse(None, f"reads its sequences' {path.readout} step(s) over all time steps while "
                      f"its nodes take sequence_lens: rnnext's readouts read each sequence's "
                      f"valid steps instead")
    return _layer_list(records, path.readout, dense, info)


def _embedding(graph, node, path):
    """The table (vocab, dim) of a Gather of its rows by the graph input's token ids."""
    table = graph.constant(node.input[0])
    if graph.attributes(node).get("axis", 0) != 0 or table.ndim != 2 or len(path.axes) != 2:
        _refuse(node, f"expected an embedding: rows (axis 0) of a 2-D constant table gathered by "
                      f"token ids (batch, time) from the graph input, got a table of shape "
                      f"{table.shape}, axis {graph.attributes(node).get('axis', 0)} and ids of "
                      f"rank {len(path.axes)}")
    path.axes = path.axes + ["x2"]
    return table.astype(np.float32)


def _dense(graph, node, path):
    """A dense layer's record (weight (O, F), bias, activation) from a Gemm or MatMul node."""
    if path.stage not in ("seq", "readout", "dense") or path.axes[-1] != "F":
        _refuse(node, f"a dense layer must act on the features (last axis) of a recurrent "
                      f"output, a readout or a dense layer, got axes {tuple(path.axes)}")
    attrs = graph.attributes(node)
    weight = graph.constant(node.input[1])
    if weight is None:
        _refuse(node, "its weight must be a constant")
    if node.op_type == "Gemm":
        if attrs.get("transA", 0) or path.axes != ["B", "F"]:
            _refuse(node, "expected A of shape (batch, features) and transA=0")
        weight = attrs.get("alpha", 1.0) * (weight if attrs.get("transB", 0) else weight.T)
    else:
        if node.input[0] != _data_input(graph, node) or weight.ndim != 2:
            _refuse(node, "expected features @ W with a 2-D constant W")
        weight = weight.T
    if weight.shape[1] != path.width:
        _refuse(node, f"its weight {weight.shape} does not fit {path.width} features")
    bias = np.zeros(weight.shape[0], np.float32)
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias = bias + attrs.get("beta", 1.0) * _bias(graph, node, node.input[2], bias)
    path.stage, path.width = "dense", weight.shape[0]
    return {"node": node, "weight": weight.astype(np.float32), "bias": bias, "activation": None}


def _bias(graph, node, name, head_bias):
    """A constant bias, broadcast to the dense layer's width."""
    value = graph.constant(name)
    if value is None or value.size not in (1, head_bias.size) or \
            (value.ndim and value.shape[-1] not in (1, head_bias.size)):
        _refuse(node, f"expected a constant bias of {head_bias.size} values")
    return np.broadcast_to(value.reshape(-1), head_bias.shape)




def _layer_list(records, readout, dense, info):
    """(layers, input_size, params) from the recurrent nodes' records, the readout, the
    dense layers' records and info's embedding table and input_size."""
    table, input_size, padding_idx = info["embedding"], info["input_size"], info["padding_idx"]
    layers = []
    if table is not None:
        if table.shape[1] != input_size:
            _refuse(None, f"the embedding's table {table.shape} does not fit the first recurrent "
                          f"node's {input_size} input features")
        try:
            layers.append(L.Embedding(*table.shape,
                                      None if padding_idx is None else int(padding_idx)))
        except (TypeError, ValueError) as e:
            _refuse(None, f"metadata_props[{PADDING_IDX_KEY!r}] = {padding_idx!r}: {e}")
        input_size = None
    for record in records:
        try:
            layers.append(recurrent_layer(record["cell"], record["units"],
                                          direction=record["direction"], merge=record["merge"],
                                          **record["options"]))
        except (TypeError, ValueError) as e:
            _refuse(record["node"], str(e))
    if readout != "sequence":
        layers.append(L.Readout(readout))
    layers += [L.Dense(d["weight"].shape[0], d["activation"]) for d in dense]
    spec = L.build(layers, input_size)
    params = {} if table is None else {EMBEDDING_PARAM: table}
    for record, r in zip(records, spec.recurrent):
        for reverse, weights in record["weights"].items():
            params.update({param_name(kind, r.index, reverse): value
                           for kind, value in weights.items()})
    for record, d in zip(dense, spec.dense):
        params[dense_param_name("weight", d.index)] = record["weight"]
        params[dense_param_name("bias", d.index)] = record["bias"].astype(np.float32)
    return layers, input_size, params
