"""Recurrences that an exporter unrolled into per-step ops, read back as ONNX RNN nodes.

torch.onnx.export(dynamo=True) writes nn.RNN (tanh or relu) without an RNN node, for the
example's number of steps T:
    P = X @ W_ih^T + b_ih                      (T, B, H), X (T, B, I); reversed: P flipped on T
    h_t = act(h_{t-1} @ W_hh^T + b_hh + P[t])  (1, B, H), h_{-1} = 0, t = 0 .. T-1
    Y = Concat(h_0 .. h_{T-1}, axis 0)          reversed: Concat(h_{T-1} .. h_0)
and a bidirectional layer as the Concat on the feature axis of a forward and a reversed Y of
the same X. unrolled_rnn(graph, concat) returns, for such a Concat, the equivalent nodes: an RNN
node (its W, R, B added to graph.values) and the Squeeze, or the Transpose and Reshape, that
give the Concat's layout; the Model runs it at any T.
"""
from collections import namedtuple

import numpy as np

STEP_ACTIVATIONS = ("Tanh", "Relu")

# one unrolled direction: its input X, activation op, W_ih (H, I), W_hh (H, H), b_ih + b_hh (2H)
Direction = namedtuple("Direction", "x activation w_ih w_hh bias reverse")


def _producer(graph, name):
    return graph.producer.get(name, (None,))[0]


def _affine(graph, name):
    """(x, W (out, in), b or None) for name = x @ W^T [+ b] with constant W and b, else None."""
    node, bias = _producer(graph, name), None
    if node is not None and node.op_type == "Add":
        values = [graph.constant(i) for i in node.input]
        if (values[0] is None) == (values[1] is None):
            return None
        bias = values[0] if values[1] is None else values[1]
        node = _producer(graph, node.input[0] if values[1] is not None else node.input[1])
    if node is None or node.op_type != "MatMul" or graph.constant(node.input[0]) is not None:
        return None
    weight = graph.constant(node.input[1])
    if weight is None or weight.ndim != 2 or (bias is not None and
                                              bias.shape not in ((weight.shape[1],), ())):
        return None
    return node.input[0], weight.T, bias


def _step_input(graph, name):
    """(P, t) for name = Squeeze(Slice(P, [t], [t + 1], axes [0]), [0]), else None."""
    squeeze = _producer(graph, name)
    if squeeze is None or squeeze.op_type != "Squeeze" or len(squeeze.input) < 2 or \
            list(np.atleast_1d(graph.constant(squeeze.input[1]))) != [0]:
        return None
    slice_ = _producer(graph, squeeze.input[0])
    if slice_ is None or slice_.op_type != "Slice" or len(slice_.input) < 4:
        return None
    args = [graph.constant(i) for i in slice_.input[1:]]
    if any(a is None for a in args) or [a.size for a in args] != [1] * len(args):
        return None
    start, end, axis = (int(a.flat[0]) for a in args[:3])
    step = int(args[3].flat[0]) if len(args) > 3 else 1
    return (slice_.input[0], start) if (end, axis, step) == (start + 1, 0, 1) else None


def _flipped(graph, name):
    """P for name = P reversed on axis 0 (a Slice with step -1 over all of it), else None."""
    node = _producer(graph, name)
    if node is None or node.op_type != "Slice" or len(node.input) != 5:
        return None
    start, end, axis, step = (graph.constant(i) for i in node.input[1:])
    if any(a is None or a.size != 1 for a in (start, end, axis, step)):
        return None
    if (int(start.flat[0]), int(axis.flat[0]), int(step.flat[0])) != (-1, 0, -1) or \
            int(end.flat[0]) > -2**31:
        return None
    return node.input[0]


def _direction(graph, concat):
    """The Direction of one unrolled direction's output Concat (on time), else None."""
    steps = [_producer(graph, name) for name in concat.input]
    if graph.attributes(concat).get("axis") != 0 or any(
            s is None or s.op_type != steps[0].op_type for s in steps) or \
            steps[0].op_type not in STEP_ACTIVATIONS:
        return None
    parsed = []
    for step in steps:
        add = _producer(graph, step.input[0])
        if add is None or add.op_type != "Add":
            return None
        for a, b in (add.input, add.input[::-1]):
            # the first step's h_{-1} @ W_hh^T + b_hh is b_hh, folded where h_{-1} is constant
            constant = graph.constant(b)
            given = _step_input(graph, a)
            recurrent = _affine(graph, b) if constant is None else (None, None, constant)
            if given is not None and recurrent is not None:
                parsed.append((given, recurrent))
                break
        else:
            return None
    for reverse in (False, True):
        order = parsed[::-1] if reverse else parsed
        outputs = [s.output[0] for s in (steps[::-1] if reverse else steps)]
        previous = [recurrent[0] for _, recurrent in order]
        if (previous[0] is None or graph.is_zero(previous[0])) and \
                previous[1:] == outputs[:-1]:
            break
    else:
        return None
    sources = {given[0] for given, _ in order}
    if len(sources) != 1 or [given[1] for given, _ in order] != list(range(len(order))):
        return None
    source = sources.pop()
    source = _flipped(graph, source) if reverse else source
    projection = None if source is None else _affine(graph, source)
    if projection is None or len(order) < 2:
        return None
    x, w_ih, b_ih = projection
    w_hh, H = order[1][1][1], w_ih.shape[0]
    if w_hh.shape != (H, H):
        return None

    def full(bias):
        return np.zeros(H, np.float32) if bias is None else np.broadcast_to(bias, (H,))

    b_hh = full(order[1][1][2])
    for _, (_, w, b) in order:
        same = (b.shape[-1:] == (H,) and np.all(b == b_hh)) if w is None else \
            (np.array_equal(w, w_hh) and np.array_equal(full(b), b_hh))
        if not same:
            return None
    return Direction(x, steps[0].op_type, w_ih, w_hh, np.concatenate([full(b_ih), b_hh]),
                     reverse)


def unrolled_rnn(graph, concat):
    """The nodes (last first) equivalent to an unrolled RNN layer's output Concat, else None."""
    parts = [concat]
    if graph.attributes(concat).get("axis") in (2, -1) and len(concat.input) == 2:
        parts = [_producer(graph, name) for name in concat.input]
        if any(p is None or p.op_type != "Concat" for p in parts):
            return None
    directions = [_direction(graph, p) for p in parts]
    if any(d is None for d in directions) or \
            len({(d.x, d.activation, d.w_hh.shape) for d in directions}) != 1 or \
            [d.reverse for d in directions] not in ([False], [True], [False, True]):
        return None
    out, first = concat.output[0], directions[0]
    for kind, field in (("W", "w_ih"), ("R", "w_hh"), ("B", "bias")):
        graph.values[f"{out}/{kind}"] = np.stack([getattr(d, field) for d in directions]) \
            .astype(np.float32)
    direction = "bidirectional" if len(directions) == 2 else \
        ("reverse" if first.reverse else "forward")
    rnn = graph.helper.make_node("RNN", [first.x, f"{out}/W", f"{out}/R", f"{out}/B"],
                                 [f"{out}/Y"], name=concat.name, hidden_size=first.w_hh.shape[0],
                                 direction=direction,
                                 activations=[first.activation] * len(directions))
    if len(directions) == 1:
        graph.values[f"{out}/axes"] = np.array([1], np.int64)
        return [graph.helper.make_node("Squeeze", [f"{out}/Y", f"{out}/axes"],
                                       [out], name=concat.name), rnn]
    graph.values[f"{out}/shape"] = np.array([0, 0, -1], np.int64)
    return [graph.helper.make_node("Reshape", [f"{out}/YT", f"{out}/shape"],
                                   [out], name=concat.name),
            graph.helper.make_node("Transpose", [f"{out}/Y"], [f"{out}/YT"], name=concat.name,
                                   perm=[0, 2, 1, 3]),
            rnn]
