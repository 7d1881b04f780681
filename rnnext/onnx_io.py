"""ONNX import (from_onnx) and export (to_onnx). Needs the optional onnx package.

Import reads graphs whose first output comes from the graph's input through a chain of LSTM,
GRU or RNN nodes (all of one op type and hidden_size), optionally followed by a dense layer
(Gemm, or MatMul and Add) and Softmax or Sigmoid. Between them it follows the reshaping that
exporters emit (Transpose, Reshape, Squeeze, Unsqueeze, Flatten, Identity, and Gather or Slice
of the last time step), tracking what every axis means, and refuses by name whatever it cannot
map exactly. Gate orders are permuted to PyTorch's (LSTM i,o,f,c -> i,f,g,o; GRU z,r,h -> r,z,n).

What the imported Model computes, for batch-first x (B, T, I) whatever the graph's layout:
- a graph that ends in the recurrent output sequence: Model.forward(x)[0], (B, T, D*H), is
  that sequence with its axes in batch-first order;
- one that reads the last step (Y_h of a forward node, or Y at time index -1): Model.predict(x);
- one that ends in a dense layer: Model.predict(x) (many-to-one on the last step) or
  Model.forward(x)[0] (many-to-many; zero past each sequence's length, where the graph's dense
  layer would give its bias).
sequence_lens, when the nodes take it from a graph input, is Model's `lengths`. initial_h and
initial_c taken from graph inputs are Model's `state`: layer l's [D, B, H] block (layout 0;
[B, D, H] transposed for layout 1) at rows l*D .. l*D+D-1 of (L*D, B, H). Zero initial states,
constant or computed (as PyTorch's exporter does), are the default.

A node with direction="reverse" (or a forward node in a stack that has reverse or bidirectional
ones) becomes a bidirectional layer whose other direction has zero weights: with a zero initial
state that direction outputs exact zeros, and the next layer's or the head's weights give those
features zero columns. The model's outputs then carry the zero half too.

Supported attributes: direction, hidden_size, layout 0 and 1, linear_before_reset (both
values; one for the whole stack), default activations (and Relu for RNN), clip >= CLIP_EXACT
(where clipping cannot change a float32 result: sigmoid and tanh are within e^-20 of their limits
there). Refused by name: other activations, activation_alpha/beta, smaller clips, input_forget,
nonzero peepholes, nonzero constant initial states.
"""
import numpy as np

from .model import Model

RECURRENT_OPS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
# ONNX gate blocks in PyTorch's order: LSTM i,o,f,c -> i,f,g(c),o; GRU z,r,h -> r,z,n
TORCH_FROM_ONNX = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}
ONNX_FROM_TORCH = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                       "RNN": ["Tanh"]}
# clip thresholds at least this large leave float32 results of sigmoid and tanh unchanged
CLIP_EXACT = 20.0
# ops that only move or relabel the data on the path
SHAPE_OPS = ("Identity", "Dropout", "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Flatten",
             "Gather", "Slice")


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
        self.initializers = {t.name: t for t in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in graph.output]

    def constant(self, name):
        """The value of a constant tensor (initializer or Constant node), else None."""
        if name in self.initializers:
            return self.numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name, (None,))[0]
        if node is not None and node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                return self.numpy_helper.to_array(attr.t)
            return np.array(self.helper.get_attribute_value(attr))
        return None

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
    return node.input[0]


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
        if node.op_type not in RECURRENT_OPS and node.op_type not in SHAPE_OPS and \
                node.op_type not in ("Gemm", "MatMul", "Add", "Softmax", "Sigmoid"):
            _refuse(node, "is not supported on the path from the input to the first output; "
                          "rnnext imports chains of LSTM, GRU or RNN nodes with an optional dense "
                          "layer (Gemm, or MatMul and Add) and Softmax or Sigmoid")
        chain.append((node, k))
        name = _data_input(graph, node)
    return chain[::-1]


# ------------------------------------------------------------------------------------------------
# the data path, one axis label at a time
#
# labels: x0, x1, x2 the graph input's axes (before the first recurrent node); T time; B batch;
# F features of the Model (through `cols`); D the two directions and H one direction's units of
# an unmerged bidirectional output; O the dense layer's outputs; 1 a unit axis.


class _Path:
    def __init__(self, axes):
        self.axes = list(axes)
        self.stage = "input"   # input -> seq (sequence) | last (one step) -> head
        self.cols = None       # Model feature index of each ONNX feature of an F axis
        self.H = None
        self.out_size = None
        self.from_time_index = False  # the last step was taken by index, not from Y_h

    def size(self, label):
        return {"1": 1, "D": 2, "H": self.H, "O": self.out_size,
                "F": None if self.cols is None else len(self.cols)}.get(label)


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
    """Labels after Reshape to `target` (0 copies the axis at its position, -1 takes the rest):
    each output axis must be a run of whole input axes."""
    axes = path.axes
    if target.count(-1) > 1 or any(t < -1 for t in target):
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
            run, product = [], 1
            while product < spec and i < len(order):
                size = path.size(axes[order[i]])
                if size is None:
                    _refuse(node, f"shape {target} gives the axis {axes[order[i]]} of "
                                  f"{tuple(axes)}, of variable size, a fixed size")
                run.append(axes[order[i]])
                product *= size
                i += 1
            if spec == 1 and i < len(order) and axes[order[i]] == "1":
                run.append("1")
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
    """Marks the path as one time step when an index or slice takes the last one of axis T."""
    if label != "T":
        return
    if path.stage != "seq":
        _refuse(node, "takes a time step of something that is not a recurrent output sequence")
    path.stage = "last"
    path.from_time_index = True


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
            _refuse(node, "its shape must be a constant")
        if attrs.get("allowzero", 0):
            _refuse(node, "allowzero=1 is not supported")
        path.axes = _reshape(node, path, [int(t) for t in target])
    elif op == "Flatten":
        axis = attrs.get("axis", 1) + (rank if attrs.get("axis", 1) < 0 else 0)
        if not 0 <= axis <= rank:
            _refuse(node, f"axis {attrs.get('axis')} is out of range for a rank-{rank} tensor")
        path.axes = [_merge(node, path, path.axes[:axis]), _merge(node, path, path.axes[axis:])]
    elif op == "Gather":
        index = graph.constant(node.input[1])
        axis = _axis(node, attrs.get("axis", 0), rank)
        label = path.axes[axis]
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
            elif not (step == 1 and start == 0 and size is not None and end >= size):
                _refuse(node, f"slices [{start}:{end}:{step}] of axis {label}; only the last "
                              f"time step ([-1:]) is supported")


# ------------------------------------------------------------------------------------------------
# recurrent nodes


class _Layer:
    """One recurrent node, its weights in PyTorch's layout and gate order, per direction."""

    def __init__(self, node, directions, weights, in_cols):
        self.node, self.directions, self.weights, self.in_cols = node, directions, weights, in_cols


def _recurrent(graph, node, path, model_D, first, info):
    op, attrs = node.op_type, graph.attributes(node)
    if info.setdefault("op", op) != op:
        _refuse(node, f"a stack of {info['op']} and {op} nodes: rnnext runs one cell type")
    H = attrs.get("hidden_size")
    W, R = graph.constant(node.input[1]), graph.constant(node.input[2])
    if W is None or R is None:
        _refuse(node, "W and R must be constants (initializers)")
    H = H if H is not None else R.shape[-1]
    if info.setdefault("H", H) != H:
        _refuse(node, f"hidden_size {H} differs from the first node's {info['H']}")
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    names = {"forward": ["forward"], "reverse": ["reverse"],
             "bidirectional": ["forward", "reverse"]}
    if direction not in names:
        _refuse(node, f"direction {direction!r} is not forward, reverse or bidirectional")
    D = len(names[direction])
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        _refuse(node, f"layout {layout} is not 0 or 1")

    activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    default = DEFAULT_ACTIVATIONS[op] * D
    nonlinearity = "tanh"
    if op == "RNN" and activations in (["Relu"] * D, ["Relu"]):
        nonlinearity = "relu"
    elif activations and activations != default and activations != DEFAULT_ACTIVATIONS[op]:
        _refuse(node, f"activations {activations} are not supported (only the defaults "
                      f"{DEFAULT_ACTIVATIONS[op]}" + (", or Relu" if op == "RNN" else "") + ")")
    if info.setdefault("nonlinearity", nonlinearity) != nonlinearity:
        _refuse(node, "mixes Tanh and Relu RNN nodes")
    for name in ("activation_alpha", "activation_beta"):
        if name in attrs:
            _refuse(node, f"{name} is not supported")
    if attrs.get("input_forget", 0):
        _refuse(node, "input_forget=1 (coupled input and forget gates) is not supported")
    clip = attrs.get("clip")
    if clip is not None and (clip < CLIP_EXACT or nonlinearity == "relu"):
        _refuse(node, f"clip={clip} is not supported: rnnext does not clip, which equals ONNX's "
                      f"clip only for thresholds >= {CLIP_EXACT} with sigmoid and tanh")
    linear_before_reset = bool(attrs.get("linear_before_reset", 0)) if op == "GRU" else True
    if info.setdefault("linear_before_reset", linear_before_reset) != linear_before_reset:
        _refuse(node, "mixes linear_before_reset 0 and 1 in one stack")

    def optional(index):
        return node.input[index] if len(node.input) > index and node.input[index] else None

    if op == "LSTM" and optional(7) is not None and not graph.is_zero(optional(7)):
        _refuse(node, "peepholes (a nonzero P) are not supported")
    lengths = optional(4)
    if lengths is not None and lengths not in graph.inputs:
        _refuse(node, "sequence_lens must be a graph input (it becomes Model's lengths)")
    if info.setdefault("lengths", lengths) != lengths:
        _refuse(node, "takes sequence_lens differently from the first node; rnnext applies one "
                      "lengths array to the whole stack")
    for index, what in ((5, "initial_h"), (6, "initial_c")):
        state = optional(index)
        if state is not None and state not in graph.inputs and not graph.is_zero(state):
            _refuse(node, f"{what} must be zeros or a graph input (Model's state), got a "
                          f"nonzero or computed tensor")

    # the input: (T, B, F) for layout 0, (B, T, F) for layout 1
    want = ["T", "B"] if layout == 0 else ["B", "T"]
    if first:
        if path.stage != "input" or len(path.axes) != 3 or set(path.axes) != {"x0", "x1", "x2"}:
            _refuse(node, f"X must be the graph input, reordered at most; got axes "
                          f"{tuple(path.axes)}")
        in_cols = np.arange(W.shape[-1])
    else:
        if path.stage != "seq" or path.axes != want + ["F"]:
            _refuse(node, f"X must be the previous node's output sequence as {tuple(want)} + "
                          f"features (layout {layout}); got axes {tuple(path.axes)}")
        in_cols = path.cols
    if W.shape != (D, len(TORCH_FROM_ONNX[op]) * H, len(in_cols)) or R.shape[1:] != (W.shape[1], H):
        _refuse(node, f"W {W.shape} or R {R.shape} do not fit hidden_size {H}, {D} directions "
                      f"and {len(in_cols)} input features")
    G = len(TORCH_FROM_ONNX[op])
    B = graph.constant(optional(3)) if optional(3) else np.zeros((D, 2 * G * H), np.float32)
    if B is None or B.shape != (D, 2 * G * H):
        _refuse(node, f"B must be a constant of shape {(D, 2 * G * H)}")

    def torch_order(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in TORCH_FROM_ONNX[op]])

    weights = {name: (torch_order(W[d]), torch_order(R[d]), torch_order(B[d, :G * H]),
                      torch_order(B[d, G * H:])) for d, name in enumerate(names[direction])}
    layer = _Layer(node, names[direction], weights, in_cols)

    # the outputs: Y (T, D, B, H) or (B, T, D, H); Y_h, Y_c (D, B, H) or (B, D, H)
    path.H = H
    offset = H if direction == "reverse" and model_D == 2 else 0
    path.cols = np.arange(D * H) if D == 2 else offset + np.arange(H)
    dir_label, unit = ("D", "H") if D == 2 else ("1", "F")
    return layer, {"Y": (["T", dir_label, "B", unit] if layout == 0 else
                         ["B", "T", dir_label, unit]),
                   "Y_h": [dir_label, "B", unit] if layout == 0 else ["B", dir_label, unit],
                   "direction": direction}


# ------------------------------------------------------------------------------------------------
# import


def _load(source):
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return onnx.load_from_string(bytes(source))
    return onnx.load(source)


def from_onnx(source, backend="c"):
    """A Model from an ONNX model (a path, the file's bytes, or an onnx.ModelProto); see the
    module's documentation for what is supported and what the Model's outputs mean."""
    graph = _Graph(_load(source))
    chain = _chain(graph)
    recurrent = [node for node, _ in chain if node.op_type in RECURRENT_OPS]
    if not recurrent:
        _refuse(None, "has no LSTM, GRU or RNN node on the path to its first output")
    directions = [graph.attributes(n).get("direction", b"forward") for n in recurrent]
    model_D = 1 if all(d in (b"forward", "forward") for d in directions) else 2

    path, info, layers = _Path(["x0", "x1", "x2"]), {}, []
    head_weight = head_bias = activation = None
    for node, k in chain:
        op = node.op_type
        if op in RECURRENT_OPS:
            if path.stage not in ("input", "seq"):
                _refuse(node, "takes something other than the input or a sequence")
            layer, outputs = _recurrent(graph, node, path, model_D, not layers, info)
            layers.append(layer)
            if k == 0:
                path.axes, path.stage = outputs["Y"], "seq"
            elif k == 1:
                if outputs["direction"] != "forward":
                    _refuse(node, "its Y_h (final state) is used: for a reverse or bidirectional "
                                  "node that is not the output at the last step, which is what "
                                  "rnnext's many-to-one reads; use Y's last step")
                path.axes, path.stage = outputs["Y_h"], "last"
            else:
                _refuse(node, "its Y_c (final cell state) is used on the path to the output")
        elif op in SHAPE_OPS:
            if path.stage == "input":
                if op != "Transpose" and op != "Identity":
                    _refuse(node, "only Transpose may come between the graph input and the "
                                  "first recurrent node")
            _shape_op(graph, node, path)
        elif op in ("Gemm", "MatMul"):
            if path.stage not in ("seq", "last") or path.axes[-1] != "F":
                _refuse(node, f"a dense layer must act on the recurrent features (last axis), "
                              f"got axes {tuple(path.axes)}")
            attrs = graph.attributes(node)
            weight = graph.constant(node.input[1])
            if weight is None:
                _refuse(node, "its weight must be a constant")
            if op == "Gemm":
                if attrs.get("transA", 0) or path.axes != ["B", "F"]:
                    _refuse(node, "expected A of shape (batch, features) and transA=0")
                weight = attrs.get("alpha", 1.0) * (weight if attrs.get("transB", 0) else weight.T)
            else:
                if node.input[0] != _data_input(graph, node) or weight.ndim != 2:
                    _refuse(node, "expected features @ W with a 2-D constant W")
                weight = weight.T
            if weight.shape[1] != len(path.cols):
                _refuse(node, f"its weight {weight.shape} does not fit {len(path.cols)} features")
            head_weight = weight.astype(np.float32)
            head_bias = np.zeros(weight.shape[0], np.float32)
            if op == "Gemm" and len(node.input) > 2 and node.input[2]:
                head_bias = head_bias + attrs.get("beta", 1.0) * _bias(graph, node,
                                                                       node.input[2], head_bias)
            info["many_to_one"] = path.stage == "last"
            path.stage, path.out_size = "head", weight.shape[0]
            path.axes[-1] = "O"
        elif op == "Add":
            if path.stage != "head" or activation is not None:
                _refuse(node, "only a dense layer's bias may be added, right after its product")
            bias = [i for i in node.input if i != _data_input(graph, node)][0]
            head_bias = head_bias + _bias(graph, node, bias, head_bias)
        else:  # Softmax, Sigmoid
            if path.stage != "head" or activation is not None:
                _refuse(node, "an activation must follow a dense layer, once")
            if op == "Softmax":
                axis = graph.attributes(node).get("axis", -1 if graph.opset >= 13 else 1)
                if _axis(node, axis, len(path.axes)) != len(path.axes) - 1:
                    _refuse(node, f"softmax over axis {axis}, not the last (the outputs)")
            activation = op.lower()

    if info["lengths"] is not None and getattr(path, "from_time_index", False):
        _refuse(None, "reads Y at time index -1 while its nodes take sequence_lens: rnnext's "
                      "many-to-one reads each sequence's last valid step instead")
    return _build_model(layers, info, model_D, head_weight, head_bias, activation, path, backend)


def _bias(graph, node, name, head_bias):
    """A constant bias, broadcast to the dense layer's width."""
    value = graph.constant(name)
    if value is None or value.size not in (1, head_bias.size) or \
            (value.ndim and value.shape[-1] not in (1, head_bias.size)):
        _refuse(node, f"expected a constant bias of {head_bias.size} values")
    return np.broadcast_to(value.reshape(-1), head_bias.shape)


def _build_model(layers, info, model_D, head_weight, head_bias, activation, path, backend):
    H, op = info["H"], info["op"]
    G = len(TORCH_FROM_ONNX[op])
    I = len(layers[0].in_cols)
    params = {}
    for l, layer in enumerate(layers):
        width = I if l == 0 else model_D * H
        for d, name in enumerate(["forward", "reverse"][:model_D]):
            suffix = f"_l{l}" + ("_reverse" if d else "")
            w_ih = np.zeros((G * H, width), np.float32)
            w_hh = np.zeros((G * H, H), np.float32)
            b_ih = np.zeros(G * H, np.float32)
            b_hh = np.zeros(G * H, np.float32)
            if name in layer.weights:
                onnx_ih, w_hh[:], b_ih[:], b_hh[:] = layer.weights[name]
                w_ih[:, layer.in_cols] = onnx_ih
            params.update({"weight_ih" + suffix: w_ih, "weight_hh" + suffix: w_hh,
                           "bias_ih" + suffix: b_ih, "bias_hh" + suffix: b_hh})
    head = {}
    if head_weight is not None:
        weight = np.zeros((head_weight.shape[0], model_D * H), np.float32)
        weight[:, path.cols if path.cols is not None else slice(None)] = head_weight
        params["head.weight"], params["head.bias"] = weight, head_bias.astype(np.float32)
        head = {"output_size": weight.shape[0], "activation": activation,
                "output": "many_to_one" if info["many_to_one"] else "many_to_many"}
    return Model(RECURRENT_OPS[op], I, H, num_layers=len(layers), bidirectional=model_D == 2,
                 nonlinearity=info["nonlinearity"],
                 linear_before_reset=info["linear_before_reset"], params=params, backend=backend,
                 **head)


# ------------------------------------------------------------------------------------------------
# export


def to_onnx(model, path=None, opset=17):
    """The model as an onnx.ModelProto (written to `path` when given), for ONNX Runtime.

    Inputs: x (B, T, I) float32, batch-first, B and T dynamic. Outputs: y, as Model.forward's
    first output for full-length sequences (the head's output, or the recurrent output sequence
    (B, T, D*H)); h_n (L*D, B, H); c_n (L*D, B, H) for the LSTM. The recurrent layers are ONNX
    LSTM/GRU/RNN nodes (layout 0, gate orders permuted back to ONNX's); the head is Gemm
    (many-to-one, on the last step) or MatMul + Add (many-to-many), then Softmax or Sigmoid.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if opset < 14:
        raise ValueError(f"opset: expected >= 14, got {opset}")
    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[model.cell]
    H, D, L = model.hidden_size, model.num_directions, model.num_layers
    nodes, initializers = [], []

    def constant(name, value):
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def onnx_order(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in ONNX_FROM_TORCH[op]])

    def stacked(kind, l):
        return np.stack([onnx_order(model.params[f"{kind}_l{l}" + ("_reverse" if d else "")])
                         for d in range(D)])

    nodes.append(helper.make_node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2]))
    seq, finals = "x_time_major", {"Y_h": [], "Y_c": []}
    attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if model.cell == "gru":
        attrs["linear_before_reset"] = int(model.linear_before_reset)
    if model.cell == "rnn" and model.nonlinearity == "relu":
        attrs["activations"] = ["Relu"] * D
    for l in range(L):
        W = constant(f"W_l{l}", stacked("weight_ih", l))
        R = constant(f"R_l{l}", stacked("weight_hh", l))
        B = constant(f"B_l{l}", np.concatenate([stacked("bias_ih", l), stacked("bias_hh", l)], 1))
        outputs = [f"Y_l{l}", f"Y_h_l{l}"] + ([f"Y_c_l{l}"] if op == "LSTM" else [])
        nodes.append(helper.make_node(op, [seq, W, R, B], outputs, name=f"{op.lower()}_l{l}",
                                      **attrs))
        finals["Y_h"].append(outputs[1])
        if op == "LSTM":
            finals["Y_c"].append(outputs[2])
        nodes.append(helper.make_node("Transpose", [outputs[0]], [f"Y_l{l}_tbdh"],
                                      perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"Y_l{l}_tbdh", constant(
            f"shape_l{l}", np.array([0, 0, -1], np.int64))], [f"seq_l{l}"]))
        seq = f"seq_l{l}"

    if model.output_size is None:
        nodes.append(helper.make_node("Transpose", [seq], ["y"], perm=[1, 0, 2]))
    else:
        weight, bias = model.params["head.weight"], model.params["head.bias"]
        head_out = "y" if model.activation is None else "logits"
        if model.output == "many_to_one":
            nodes.append(helper.make_node("Slice", [seq, constant("last_start", np.array([-1])),
                                                    constant("last_end", np.array([2**63 - 1])),
                                                    constant("last_axis", np.array([0]))],
                                          ["last_step"]))
            nodes.append(helper.make_node("Squeeze", ["last_step", "last_axis"], ["features"]))
            nodes.append(helper.make_node("Gemm", ["features", constant("head.weight", weight),
                                                   constant("head.bias", bias)], [head_out],
                                          transB=1))
        else:
            nodes.append(helper.make_node("Transpose", [seq], ["features"], perm=[1, 0, 2]))
            nodes.append(helper.make_node("MatMul", ["features", constant("head.weight_t",
                                                                          weight.T.copy())],
                                          ["projected"]))
            nodes.append(helper.make_node("Add", ["projected", constant("head.bias", bias)],
                                          [head_out]))
        if model.activation == "softmax":
            nodes.append(helper.make_node("Softmax", [head_out], ["y"], axis=-1))
        elif model.activation == "sigmoid":
            nodes.append(helper.make_node("Sigmoid", [head_out], ["y"]))

    if model.output_size is None:
        y_shape = ["batch", "time", D * H]
    else:
        y_shape = ["batch"] + (["time"] if model.output == "many_to_many" else []) + \
            [model.output_size]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)]
    for name, parts in (("h_n", finals["Y_h"]), ("c_n", finals["Y_c"])):
        if parts:
            nodes.append(helper.make_node("Concat", parts, [name], axis=0))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                         [L * D, "batch", H]))
    graph = helper.make_graph(
        nodes, "rnnext", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                        ["batch", "time", model.input_size])],
        outputs, initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="rnnext")
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, path)
    return proto
