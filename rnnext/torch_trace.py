"""Whole PyTorch modules as rnnext layer lists: from_torch(module, example).

torch.fx's symbolic trace records forward as a graph in which torch.nn modules (nn.LSTM,
nn.Linear, nn.Embedding, ...) stay single call_module nodes, so each maps to rnnext layers whole
with its parameters. (torch.export would decompose nn.LSTM into aten ops over flattened weights,
which would have to be recognised again.) The example input is run through the traced graph once
for the values that come from shapes (x.size(0) in an initial state of zeros, for instance).

The walk follows the nodes that reach the output, in order, and keeps what each one is: token
ids, a sequence with its axes (batch-first "BTF" or time-major "TBF"), a vector per sequence
("BF"), an RNN's output tuple, its h_n, one row of h_n, values computed from shapes only, zeros.
Each node either extends the layer list [Embedding]? (RNN|LSTM|GRU)+ [Readout]? Dense* at its
end or is refused with TorchImportError, naming the op, its fx node and its line of forward.
"""
import dataclasses
import inspect
import os
import re
from dataclasses import dataclass

import numpy as np

from . import layers as L
from .cells import EMBEDDING_PARAM
from .convert import _numpy, checked_params, linear_tensors, module_layers


class TorchImportError(ValueError):
    """A module that rnnext cannot represent exactly; the message names the op or module, its
    torch.fx node, the line of forward that made it and, where one exists, the workaround."""


WORKAROUND_SPLIT = ("run that part in PyTorch and import the module from its Embedding or "
                    "first recurrent layer on")
LAYER_LIST = "[Embedding]? (RNN|LSTM|GRU)+ [Readout]? Dense*"
LOG_SOFTMAX = ("log_softmax is not an activation of rnnext's Dense layer: import the module with "
               "softmax in its place and take np.log of what Model.predict returns")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "softmax")
DROPOUTS = ("dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d")
# ops that only read shapes, devices and dtypes, or compute with what those give
META_METHODS = ("size", "dim")
META_ATTRIBUTES = ("shape", "device", "dtype", "ndim", "is_cuda")
# ops that make zeros (an initial state) from shapes, and ops that keep them zeros
ZERO_MAKERS = ("zeros", "zeros_like", "new_zeros")
ZERO_KEEPERS = ("to", "cpu", "cuda", "contiguous", "detach", "float", "requires_grad_")
SWAPS = ("transpose", "swapaxes", "swapdims")
# the packages of the functions that the walk knows by name (others are a user's, fx.wrap'ed)
FUNCTION_PACKAGES = ("torch", "operator", "builtins")
# methods that leave a tensor as it is, by the kinds of value where they do (float32 features,
# int64 token ids)
IDENTITIES = {"contiguous": ("seq", "vector", "ids"), "float": ("seq", "vector"),
              "long": ("ids",)}
# reshapes, which only the output could take (a regression's .squeeze(-1))
RESHAPES = ("squeeze", "view", "reshape", "flatten")


@dataclass(frozen=True)
class Value:
    """What a node of the graph is. kind: "ids", "seq", "vector", "rnn_out" (an RNN module's
    output tuple), "state_pair" (an LSTM's (h_n, c_n)), "h_n", "c_n", "h_row" (one direction of
    the top layer's h_n), "max_pair" (max over time: values, indices), "meta" (computed from
    shapes only), "zeros". layout: the axes of a tensor (B batch, T time, F features). head:
    the layer count when it was made, so that a node that adds a layer reads the newest value.
    rnn: the recurrent module behind rnn_out, state_pair, h_n and h_row; row: h_row's direction.
    open_dense: a Linear's own output, which an activation joins."""
    kind: str
    layout: str = ""
    head: int = 0
    rnn: object = None
    row: int = 0
    open_dense: bool = False


def torch_module_layers(module, example):
    """(layers, input_size, params) of a torch.nn.Module traced on example (a batch-first
    tensor or array: float (B, T, I), or integer token ids (B, T) for an embedding front end),
    such that Model.predict(example) equals module.eval()(example)."""
    import torch

    example = _example(example)
    saved = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        gm = _trace(module)
        with torch.no_grad():
            concrete = _run(gm, example)
    finally:
        for m, training in saved:
            m.training = training
    walk = _Walk(gm, concrete, "ids" if example.dtype == torch.int64 else "seq")
    walk.run()
    input_size = None if walk.layers and isinstance(walk.layers[0], L.Embedding) else \
        example.shape[-1]
    return walk.layers, input_size, checked_params(walk.layers, input_size, walk.tensors,
                                                   "module")


def _example(example):
    """example as a torch tensor: float32 (B, T, I) or int64 token ids (B, T)."""
    import torch

    if not isinstance(example, torch.Tensor):
        array = np.asarray(example)
        if array.dtype.kind not in "iuf":
            raise TypeError(f"example: expected a tensor or array of floats or integer token "
                            f"ids, got {type(example).__name__} of {array.dtype}")
        example = torch.from_numpy(array)
    if example.is_floating_point():
        if example.dim() != 3:
            raise ValueError(f"example: expected a float batch (B, T, I), batch-first, got "
                             f"shape {tuple(example.shape)}")
        return example.float()
    if example.dtype in (torch.bool, torch.complex64, torch.complex128) or example.dim() != 2:
        raise ValueError(f"example: expected float (B, T, I) or integer token ids (B, T), got "
                         f"{example.dtype} of shape {tuple(example.shape)}")
    return example.long()


def _trace(module):
    """module's forward as a torch.fx GraphModule with each node's source line recorded;
    arguments after the first that have defaults are traced at their defaults."""
    import torch.fx as fx

    parameters = list(inspect.signature(module.forward).parameters.values())[1:]
    for p in parameters:
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL,
                                                                     p.VAR_KEYWORD):
            raise TorchImportError(f"module: {type(module).__name__}.forward takes a second "
                                   f"input {p.name!r}; rnnext's model takes one input x (give "
                                   f"{p.name} a default, such as None, to trace without it)")
    concrete = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    tracer = fx.Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(module, concrete_args=concrete or None)
    except Exception as e:
        raise TorchImportError(
            f"module: torch.fx cannot trace {type(module).__name__}.forward ({type(e).__name__}: "
            f"{e}); rnnext reads modules through torch.fx.symbolic_trace, so forward must not "
            f"branch on tensor values") from e
    return fx.GraphModule(tracer.root, graph)


def _run(gm, example):
    """{node: value} of the graph run on the example."""
    import torch.fx as fx

    interpreter = fx.Interpreter(gm, garbage_collect_values=False)
    try:
        interpreter.run(example)
    except Exception as e:
        raise ValueError(f"example: the module fails on it ({type(e).__name__}: {e})") from e
    return interpreter.env


def _live_nodes(graph):
    """The nodes the output depends on."""
    stack = [node for node in graph.nodes if node.op == "output"]
    live = set()
    while stack:
        node = stack.pop()
        if node not in live:
            live.add(node)
            stack.extend(node.all_input_nodes)
    return live


def _mutates(node, gm):
    """Whether the node changes a tensor in place (x.clamp_(...), F.relu(x, inplace=True),
    nn.ReLU(inplace=True), x[...] = v)."""
    import operator

    if node.op == "call_method":
        return node.target.endswith("_") and node.target != "requires_grad_"
    if node.op == "call_function":
        return node.target is operator.setitem or node.kwargs.get("inplace", False) is True or \
            getattr(node.target, "__name__", "").endswith("_")
    if node.op == "call_module":
        return getattr(gm.get_submodule(node.target), "inplace", False) is True
    return False


def _package(function):
    """The top package of a function: torch, operator, builtins or a user's own."""
    return (getattr(function, "__module__", None) or "").split(".")[0].lstrip("_")


def _op_name(node, gm):
    """How a user would name the node's op: the module class and attribute, torch.flip,
    Tensor.max, operator.add."""
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} module {node.target!r}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_function":
        module = getattr(node.target, "__module__", None) or ""
        return f"{module.lstrip('_')}.{node.target.__name__}" if module else str(node.target)
    return f"{node.op} {node.target!r}"


FRAME = re.compile(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)')


def _source_line(node):
    """'file:line `code`' of the line of forward that made the node (the last frame outside
    torch), or '' where torch.fx gives none."""
    import torch

    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in FRAME.findall(node.stack_trace or "") if not f[0].startswith(torch_dir)]
    if not frames:
        return ""
    path, line, code = frames[-1]
    return f", {os.path.basename(path)}:{line} `{code.strip()}`"


def _axis(dim, ndim):
    """dim (negative counts from the end) as an axis in [0, ndim), or None when out of range."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        return None
    return dim % ndim


def _index_text(index):
    """A getitem index as forward writes it: ':, -1' for (slice(None), -1)."""
    def one(entry):
        if isinstance(entry, slice):
            text = ":".join("" if v is None else repr(v) for v in (entry.start, entry.stop))
            return text + ("" if entry.step is None else f":{entry.step!r}")
        return "..." if entry is Ellipsis else repr(entry)

    return ", ".join(one(e) for e in (index if isinstance(index, tuple) else (index,)))


def _full(entry):
    return isinstance(entry, slice) and entry == slice(None)


def _index_entries(index, ndim):
    """A getitem index as one entry per axis (Ellipsis and the missing trailing axes as full
    slices), or None for an index that adds axes or does not fit."""
    index = index if isinstance(index, tuple) else (index,)
    if any(entry is None for entry in index):
        return None
    ellipses = [k for k, entry in enumerate(index) if entry is Ellipsis]
    if len(ellipses) > 1:
        return None
    if ellipses:
        k = ellipses[0]
        index = index[:k] + (slice(None),) * (ndim - len(index) + 1) + index[k + 1:]
    if len(index) > ndim:
        return None
    return index + (slice(None),) * (ndim - len(index))


class _Walk:
    """The walk over a traced graph (see the module's docstring): layers and tensors grow as
    the nodes map."""

    def __init__(self, gm, concrete, input_kind):
        self.gm, self.concrete, self.input_kind = gm, concrete, input_kind
        self.layers, self.tensors, self.values = [], {}, {}
        self.node = None

    # ---- errors and arguments

    def refuse(self, why, node=None):
        node = node or self.node
        raise TorchImportError(f"{_op_name(node, self.gm)} (fx node {node.name!r}"
                               f"{_source_line(node)}): {why}")

    def arg(self, position, name, default=None):
        """The node's argument by position or keyword, with Nodes that are meta resolved to
        their values."""
        node = self.node
        value = node.args[position] if len(node.args) > position else \
            node.kwargs.get(name, default)
        return self.constant(value)

    def constant(self, value):
        """value with every Node in it (in tuples, lists and slices) replaced by its concrete
        value; a Node that is not computed from shapes alone is refused."""
        import torch.fx as fx

        if isinstance(value, fx.Node):
            if self.values[value].kind != "meta":
                self.refuse(f"takes {value.name!r} where a constant is expected")
            return self.concrete[value]
        if isinstance(value, (tuple, list)):
            return type(value)(self.constant(v) for v in value)
        if isinstance(value, slice):
            return slice(self.constant(value.start), self.constant(value.stop),
                         self.constant(value.step))
        return value

    def tensor_args(self):
        """The Values of the node's Node arguments."""
        return [self.values[n] for n in self.node.all_input_nodes]

    # ---- the walk

    def run(self):
        graph = self.gm.graph
        live = _live_nodes(graph)
        first_input = next((n for n in graph.nodes if n.op == "placeholder"), None)
        for node in graph.nodes:
            if node not in live:
                if _mutates(node, self.gm):
                    self.node = node
                    self.refuse("changes a tensor in place and its result is not used: the "
                                "output would not see the change in rnnext's layers; write it "
                                "as y = op(y) so that it is on the path to the output")
                continue
            self.node = node
            if node.op == "placeholder":
                if node is not first_input:
                    self.refuse("a second input; rnnext's model takes one input x")
                self.values[node] = Value(self.input_kind, "BT" if self.input_kind == "ids"
                                          else "BTF")
            elif node.op == "output":
                self.output(node.args[0])
            else:
                self.values[node] = self.visit(node)

    def visit(self, node):
        if node.op == "get_attr":
            return Value("constant")
        if node.op == "call_module":
            return self.call_module(self.gm.get_submodule(node.target))
        name = node.target if node.op == "call_method" else node.target.__name__
        if node.op == "call_function" and _package(node.target) not in FUNCTION_PACKAGES:
            self.refuse(f"a function from outside torch does not map to an rnnext layer "
                        f"({LAYER_LIST})")
        kinds = [v.kind for v in self.tensor_args()]
        if name in META_METHODS or (name == "getattr" and node.args[1] in META_ATTRIBUTES) or \
                (set(kinds) <= {"meta"} and _package(node.target) in ("operator", "builtins")):
            return Value("meta")
        if name in ZERO_MAKERS[1:] or (name == "zeros" and set(kinds) <= {"meta"}) or \
                (name in ZERO_KEEPERS and kinds[:1] == ["zeros"] and set(kinds[1:]) <= {"meta"}):
            return Value("zeros")
        if set(kinds) <= {"meta", "zeros", "constant"}:
            return Value("constant")
        return self.call_function(name)

    def output(self, result):
        import torch.fx as fx

        if not isinstance(result, fx.Node):
            self.refuse(f"forward returns a {type(result).__name__}; rnnext's model gives one "
                        f"array: return the output alone")
        value = self.values[result]
        if not self.has_recurrent():
            self.refuse("no nn.RNN, LSTM or GRU reaches the output", result)
        if value.kind in ("seq", "vector") and value.layout not in ("BTF", "BF"):
            self.refuse(f"forward returns a {value.layout} tensor (B batch, T time, F "
                        f"features); rnnext's output is batch-first, (B, T, F) or (B, F): "
                        f"permute it back at the end of forward", result)
        if value.kind not in ("seq", "vector") or value.head != len(self.layers):
            self.refuse(f"forward returns {self.describe(value)}, not the output of the last "
                        f"layer", result)

    def describe(self, value):
        """What a Value is, in a user's words."""
        return {"rnn_out": "the output tuple of an RNN module", "state_pair": "(h_n, c_n)",
                "h_n": "h_n", "c_n": "c_n", "h_row": "one row of h_n", "ids": "the token ids",
                "max_pair": "a max's (values, indices)", "meta": "a shape",
                "zeros": "zeros", "constant": "a tensor that the input does not reach",
                "seq": "a sequence",
                "vector": "a vector per sequence"}[value.kind]

    # ---- layers

    def newest(self, value, what):
        """value, which a new layer reads: it must be the newest value of the list."""
        if value.head != len(self.layers):
            self.refuse(f"reads {what} from before layer {self.layers[value.head]!r}: a branching "
                        f"graph, which rnnext's layer list ({LAYER_LIST}) cannot hold")
        return value

    def count(self, kinds):
        """How many layers of the list so far are of the classes `kinds` (their next index)."""
        return sum(isinstance(layer, kinds) for layer in self.layers)

    def has_recurrent(self):
        return self.count(tuple(L.RECURRENT_TYPES)) > 0

    def append(self, layers, tensors=()):
        self.layers.extend(layers)
        self.tensors.update(tensors)

    def call_module(self, module):
        import torch

        nn = torch.nn
        if isinstance(module, (nn.Dropout, nn.AlphaDropout, nn.FeatureAlphaDropout,
                               nn.Identity)):
            return self.values[self.node.args[0]]
        if isinstance(module, nn.RNNBase):
            return self.recurrent(module)
        if isinstance(module, nn.Embedding):
            return self.embedding(module)
        if isinstance(module, nn.Linear):
            return self.linear(module)
        activation = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
                      nn.Softmax: "softmax"}.get(type(module))
        if activation is not None:
            return self.activation(activation, getattr(module, "dim", -1))
        if isinstance(module, nn.LogSoftmax):
            self.refuse(LOG_SOFTMAX)
        self.unmapped()

    def unmapped(self):
        pipeline = [v for v in self.tensor_args() if v.kind not in ("meta", "zeros", "constant")]
        if len(pipeline) > 1:
            self.refuse(f"joins two paths (a residual or branching graph), which rnnext's layer "
                        f"list ({LAYER_LIST}) cannot hold")
        if not self.has_recurrent():
            self.refuse(f"comes before the recurrent layers, where rnnext has only an "
                        f"Embedding: {WORKAROUND_SPLIT}")
        self.refuse(f"does not map to an rnnext layer ({LAYER_LIST})")

    def embedding(self, module):
        ids = self.newest(self.values[self.node.args[0]], "the token ids")
        if ids.kind != "ids":
            self.refuse("reads something other than the model's input token ids")
        if module.max_norm is not None:
            self.refuse(f"max_norm={module.max_norm} renormalises rows as it looks them up; "
                        f"rnnext's Embedding does not: renormalise the weight once and set "
                        f"max_norm=None")
        self.append([L.Embedding(module.num_embeddings, module.embedding_dim,
                                 padding_idx=module.padding_idx)],
                    {EMBEDDING_PARAM: _numpy(module.weight)})
        return Value("seq", ids.layout + "F", len(self.layers))

    def recurrent(self, module):
        x = self.newest(self.values[self.node.args[0]], "its input")
        if x.kind != "seq" or (self.layers and not isinstance(
                self.layers[-1], (L.Embedding,) + tuple(L.RECURRENT_TYPES))):
            after = f" after {self.layers[-1]!r}" if self.layers else ""
            self.refuse(f"reads {self.describe(x)}{after}; rnnext's recurrent layers read float "
                        f"input, an Embedding or another recurrent layer ({LAYER_LIST})")
        want = "BTF" if module.batch_first else "TBF"
        if x.layout != want:
            self.refuse(f"batch_first={module.batch_first} reads a {x.layout} tensor (B batch, "
                        f"T time, F features), so it takes its {x.layout[want.index('T')]} axis "
                        f"for time; rnnext's input is batch-first (B, T, I): transpose x to the "
                        f"module's layout before it")
        state = self.node.args[1] if len(self.node.args) > 1 else self.node.kwargs.get("hx")
        parts = state if isinstance(state, (tuple, list)) else [state]
        if any(p is not None and self.values[p].kind != "zeros" for p in parts):
            self.refuse("an initial state other than zeros; rnnext's model starts from zeros "
                        "(pass a state to Model.forward instead)")
        self.append(*module_layers(module, self.count(tuple(L.RECURRENT_TYPES))))
        return Value("rnn_out", head=len(self.layers), rnn=module)

    def linear(self, module):
        x = self.newest(self.values[self.node.args[0]], "its input")
        if not self.has_recurrent():
            self.refuse(f"a Linear before the recurrent layers; rnnext's dense layers come after "
                        f"them ({LAYER_LIST}): {WORKAROUND_SPLIT}")
        if x.kind not in ("seq", "vector") or x.layout[-1] != "F":
            self.refuse(f"reads {self.describe(x)} ({x.layout}: B batch, T time, F features); a "
                        f"Linear maps on the features (last axis) of the sequence or of a "
                        f"readout of it")
        self.append([L.Dense(module.out_features)],
                     linear_tensors(module, self.count(L.Dense)))
        return dataclasses.replace(x, head=len(self.layers), open_dense=True)

    def activation(self, name, dim):
        x = self.values[self.node.args[0]]
        if not x.open_dense or x.head != len(self.layers):
            self.refuse(f"{name} of a value that is not a Linear's output; rnnext applies "
                        f"{name} only as the activation of a Dense layer, right after a Linear")
        if name == "softmax":
            ndim = len(x.layout)
            axis = (0 if ndim == 3 else 1) if dim is None else _axis(dim, ndim)
            if axis != x.layout.index("F"):
                self.refuse(f"softmax over dim={dim} of a {x.layout} tensor (B batch, T time, F "
                            f"features); rnnext's softmax runs over the features only")
        self.layers[-1] = dataclasses.replace(self.layers[-1], activation=name)
        return dataclasses.replace(x, open_dense=False)

    def readout(self, x, mode):
        """Readout(mode) over sequence x: a vector per sequence."""
        self.newest(x, "the sequence")
        if x.layout not in ("BTF", "TBF"):
            self.refuse(f"a {mode} over time of a {x.layout} tensor (B batch, T time, F "
                        f"features); rnnext's readout reads (B, T, F) or (T, B, F)")
        if not isinstance(self.layers[-1], tuple(L.RECURRENT_TYPES)):
            self.refuse(f"a {mode} over time after {self.layers[-1]!r}; rnnext's readout reads "
                        f"the recurrent output ({LAYER_LIST}): take it before the Linear")
        self.append([L.Readout(mode)])
        return Value("vector", "BF", len(self.layers))

    # ---- functions and methods

    def call_function(self, name):
        import torch.fx as fx

        node = self.node
        if name == "cat":
            return self.cat()
        if not node.args or not isinstance(node.args[0], fx.Node):
            self.unmapped()
        x = self.values[node.args[0]]
        if name in DROPOUTS:
            if self.arg(2, "training", True):
                self.refuse("runs with training=True, so it drops in eval too: pass "
                            "training=self.training")
            return x
        if x.kind in IDENTITIES.get(name, ()):
            return x
        if name in RESHAPES and x.kind in ("seq", "vector"):
            self.refuse(f"{name} of {self.describe(x)}; rnnext's output keeps its axes, (B, F) "
                        f"or (B, T, F) (a width-1 output stays (B, 1)): reshape what "
                        f"Model.predict returns instead")
        if name.rstrip("_") in ACTIVATIONS:
            return self.activation(name.rstrip("_"), self.arg(1, "dim") if name == "softmax"
                                   else -1)
        if name in ("getitem", "getattr"):
            return self.select(x, self.arg(1, "index"))
        if x.kind == "seq" and name in ("mean", "max", "amax"):
            return self.reduce(x, name)
        if name in SWAPS + ("permute", "t"):
            return self.permute(x, name)
        if name == "log_softmax":
            self.refuse(LOG_SOFTMAX)
        if name == "squeeze" and x.kind == "h_n":
            return self.final_row(x, 0, squeeze=self.arg(1, "dim"))
        self.unmapped()

    def reduce(self, x, name):
        """out.mean(dim), out.max(dim), torch.amax(out, dim) over the time axis."""
        dim = self.arg(1, "dim")
        if isinstance(dim, (tuple, list)) and len(dim) == 1:
            dim = dim[0]
        if _axis(dim, 3) != x.layout.index("T"):
            self.refuse(f"{name} over dim={dim} of a {x.layout} sequence; rnnext's readouts "
                        f"reduce over time (dim={x.layout.index('T')})")
        if self.arg(2, "keepdim", False) or self.arg(3, "dtype") is not None:
            self.refuse("keepdim=True or a dtype; rnnext's readout gives (B, F)")
        vector = self.readout(x, "max" if name == "amax" else name)
        return dataclasses.replace(vector, kind="max_pair") if name == "max" else vector

    def permute(self, x, name):
        """transpose / permute / t: the layout's letters move; the layers that read the result
        check its layout."""
        if x.kind not in ("seq", "ids", "vector"):
            self.refuse(f"{name} of {self.describe(x)} does not map to an rnnext layer")
        ndim = len(x.layout)
        if name == "t":
            order = [1, 0]
        elif name == "permute":
            dims = list(self.constant(self.node.args[1:])) or list(self.arg(1, "dims"))
            if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
                dims = list(dims[0])
            order = [_axis(d, ndim) for d in dims]
        else:
            a, b = _axis(self.arg(1, "dim0"), ndim), _axis(self.arg(2, "dim1"), ndim)
            order = list(range(ndim))
            if a is not None and b is not None:
                order[a], order[b] = b, a
            else:
                order = [None]
        if None in order or sorted(order) != list(range(ndim)):
            self.refuse(f"{name} to axes {order} of a {ndim}-D tensor")
        return dataclasses.replace(x, layout="".join(x.layout[k] for k in order))

    def select(self, x, index):
        """getitem and attributes: the parts of an RNN's output, rows of h_n, the last step of
        a sequence, a max's values."""
        kind = x.kind
        if kind == "rnn_out" and index in (0, 1):
            if index == 0:
                return Value("seq", "BTF" if x.rnn.batch_first else "TBF", x.head)
            return dataclasses.replace(x, kind="state_pair" if x.rnn.mode == "LSTM" else "h_n")
        if kind == "state_pair" and index in (0, 1):
            return dataclasses.replace(x, kind=("h_n", "c_n")[index])
        if kind == "max_pair":
            if index in (0, "values"):
                return dataclasses.replace(x, kind="vector")
            self.refuse("the indices of a max over time; rnnext's Readout('max') gives the "
                        "values")
        if kind == "h_n":
            entries = _index_entries(index, 3)
            if entries is None or not isinstance(entries[0], int) or \
                    not all(_full(e) for e in entries[1:]):
                self.refuse(f"h_n[{_index_text(index)}]: only a row of h_n maps (h_n[-1], or "
                            f"h_n[-2] and h_n[-1] concatenated for a bidirectional top layer)")
            return self.final_row(x, entries[0])
        if kind == "seq":
            entries = _index_entries(index, 3)
            time = x.layout.index("T")
            if entries is not None and entries[time] == -1 and \
                    all(_full(e) for k, e in enumerate(entries) if k != time):
                return self.readout(x, "last")
            self.refuse(f"[{_index_text(index)}] of a {x.layout} sequence; only the last step "
                        f"(index -1 on the time axis, axis {time}) maps, as Readout('last')")
        if kind == "c_n":
            self.refuse("reads the LSTM's cell state c_n, which rnnext's readouts do not give; "
                        "read h_n instead")
        self.refuse(f"[{_index_text(index)}] of {self.describe(x)} does not map to an rnnext layer")

    def final_row(self, h_n, row, squeeze=False):
        """h_n[row], or h_n.squeeze(squeeze) for one row: the final state of the top layer."""
        rnn = h_n.rnn
        D = 2 if rnn.bidirectional else 1
        rows = rnn.num_layers * D
        if squeeze is not False and (_axis(squeeze, 3) != 0 or rows != 1):
            self.refuse(f"squeeze(dim={squeeze}) of h_n ({rows} rows); only squeeze(0) of a "
                        f"one-row h_n maps")
        row = _axis(row, rows)
        if row is None or row // D != rnn.num_layers - 1:
            self.refuse(f"reads a row of h_n that is not the top layer's final state (rows "
                        f"{list(range(rows - D, rows))} of {rows}); rnnext's Readout('final') "
                        f"gives the top layer's")
        if D == 1:
            return self.final(h_n)
        return dataclasses.replace(h_n, kind="h_row", row=row % D)

    def final(self, h_n):
        self.newest(h_n, "h_n")
        self.append([L.Readout("final")])
        return Value("vector", "BF", len(self.layers))

    def cat(self):
        """torch.cat([h_n[-2], h_n[-1]], dim=1): a bidirectional top layer's final states."""
        parts = self.node.args[0]
        values = [self.values.get(p) for p in parts] if isinstance(parts, (tuple, list)) else []
        dim = self.arg(1, "dim", 0)
        if len(values) == 2 and all(v is not None and v.kind == "h_row" for v in values) and \
                values[0].rnn is values[1].rnn and _axis(dim, 2) == 1:
            if [v.row for v in values] != [0, 1]:
                self.refuse("concatenates the reverse direction first; rnnext's "
                            "Readout('final') gives forward then reverse: write "
                            "torch.cat([h_n[-2], h_n[-1]], dim=1)")
            return self.final(values[0])
        if values and all(v is not None and v.kind == "h_row" for v in values):
            self.refuse(f"cat of rows of h_n along dim={dim}; only torch.cat([h_n[-2], "
                        f"h_n[-1]], dim=1) maps (Readout('final'))")
        self.unmapped()
