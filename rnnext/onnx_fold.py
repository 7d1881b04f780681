"""What the ONNX importer computes before it maps ops: constant folding and shape arithmetic.

Exporters build weights and shapes with ops: torch.onnx.export(dynamo=True, optimize=False)
slices PyTorch's weight_ih into gate blocks and concatenates them in ONNX's order; both torch
exporters compute Reshape targets and zero initial states from Shape of the data. So:
- fold(model, opset) evaluates, with onnx's reference evaluator, every tensor that only depends
  on initializers and Constant nodes (the weights above; the shape of a constant zero state);
- shape_entries(graph, name, dims) evaluates a small integer tensor computed from Shape of data
  tensors (through Gather, Slice, Concat, Unsqueeze, Squeeze, Reshape, Cast, Identity and Mul by
  constants), as entries that are ints or axis labels ("B", "T"): dims(tensor) gives the entries
  of a data tensor's shape as the importer knows them.
"""
import numpy as np

# ops whose output is not a function of their inputs' values, and those that hold subgraphs
UNFOLDABLE = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Multinomial", "Bernoulli", "If", "Loop", "Scan")


def fold(model, opset):
    """{tensor: value} of every tensor of model's graph that only initializers and constants
    feed, evaluated in the graph's order (ONNX's nodes are sorted topologically) by onnx's
    reference evaluator; Shape of a data tensor is one where shape inference fixes the sizes it
    reads (the hidden size of a zero state of dynamic batch)."""
    from onnx.numpy_helper import to_array
    from onnx.reference import ReferenceEvaluator
    from onnx.shape_inference import infer_shapes
    graph = model.graph
    values = {t.name: to_array(t) for t in graph.initializer}
    inferred = infer_shapes(model).graph
    sizes = {v.name: static_sizes(v) for v in (*inferred.value_info, *inferred.input)
             if v.type.tensor_type.HasField("shape")}
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] not in values:
            attrs = {a.name: a.i for a in node.attribute}
            read = sizes.get(node.input[0], [None])
            read = read[attrs.get("start", 0):attrs.get("end", len(read))]
            if None not in read:
                values[node.output[0]] = np.array(read, np.int64)
            continue
        if node.op_type in UNFOLDABLE or node.domain not in ("", "ai.onnx") or \
                any(i and i not in values for i in node.input):
            continue
        feeds = {i: values[i] for i in node.input if i}
        outputs = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
        values.update((out, np.asarray(v)) for out, v in zip(node.output, outputs) if out)
    return values


def static_sizes(value_info):
    """A tensor's sizes as its type gives them: ints, None for a dynamic axis."""
    return [d.dim_value if d.HasField("dim_value") else None
            for d in value_info.type.tensor_type.shape.dim]


def _product(a, b):
    """An entry times an entry: ints multiply; a label times 1 stays the label."""
    if isinstance(a, str) and b == 1:
        return a
    if isinstance(b, str) and a == 1:
        return b
    if isinstance(a, str) or isinstance(b, str):
        raise _Unknown
    return a * b


class _Unknown(Exception):
    """A shape entry that is neither an int nor one axis's size."""


def _ints(value):
    """Entries that must be ints (indices, axes, a Reshape's own target) as a list."""
    value = np.atleast_1d(value)
    if any(isinstance(v, str) for v in value.flat):
        raise _Unknown
    return [int(v) for v in value.flat]


def shape_entries(graph, name, dims):
    """The entries (an object array of ints and labels) of the integer tensor `name`, computed
    from constants and Shape of data tensors, or None where it is computed otherwise."""
    try:
        return _entries(graph, name, dims)
    except _Unknown:
        return None


def _entries(graph, name, dims):
    value = graph.constant(name)
    if value is not None:
        if value.dtype.kind not in "iu":
            raise _Unknown
        return value.astype(object)
    node = graph.producer.get(name, (None,))[0]
    if node is None:
        raise _Unknown
    op, attrs = node.op_type, graph.attributes(node)
    if op == "Shape":
        shape = dims(node.input[0])
        if shape is None:
            raise _Unknown
        return np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))] or [],
                        dtype=object).reshape(-1)
    args = [_entries(graph, i, dims) if i else None for i in node.input]
    if op in ("Cast", "Identity"):
        return args[0]
    if op == "Mul":
        return np.frompyfunc(_product, 2, 1)(args[0], args[1])
    if op == "Gather":
        indices = np.reshape(_ints(args[1]), np.shape(args[1]))
        return np.take(args[0], indices, axis=attrs.get("axis", 0))
    if op == "Concat":
        return np.concatenate(args, axis=attrs.get("axis", 0))
    if op == "Reshape":  # 0 copies the size at its position
        return args[0].reshape([args[0].shape[i] if t == 0 else t
                                for i, t in enumerate(_ints(args[1]))])
    if op in ("Unsqueeze", "Squeeze"):
        axes = _ints(args[1]) if len(args) > 1 and args[1] is not None else attrs.get("axes")
        if op == "Unsqueeze":
            return np.expand_dims(args[0], tuple(axes))
        return np.squeeze(args[0], None if axes is None else tuple(axes))
    if op == "Slice" and args[0].ndim == 1 and len(args) > 2:
        starts, ends = _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else [0]
        steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1]
        if axes not in ([0], [-1]):
            raise _Unknown
        return args[0][starts[0]:ends[0]:steps[0]]
    raise _Unknown
