"""The plain, exact path of csrc/general.c (the recurrent layers' options the packed kernels lack),
through ctypes on conftest's general_lib, built from csrc/ with its internal names visible.

Forward: against ONNX Runtime on hand-built ONNX graphs (activations with alpha/beta, clip,
input_forget, peepholes, both GRUs, sequence lengths) and against torch.nn.LSTM (proj_size).
Backward: against torch autograd of the same maths written in float64 torch (itself checked
against ONNX Runtime's forward here), and against central differences of the C forward.
"""
import ctypes

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from conftest import RnxLayer  # noqa: E402
from torch_cells import torch_act, torch_direction  # noqa: E402

RNN_TANH, RNN_RELU, LSTM, GRU, GRU_RESET_BEFORE = range(5)
ACTS = ["linear", "sigmoid", "tanh", "relu", "hard_sigmoid", "affine", "leaky_relu",
        "thresholded_relu", "scaled_tanh", "elu", "softsign", "softplus"]
ONNX_ACT = {"linear": None, "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu",
            "hard_sigmoid": "HardSigmoid", "affine": "Affine", "leaky_relu": "LeakyRelu",
            "thresholded_relu": "ThresholdedRelu", "scaled_tanh": "ScaledTanh", "elu": "Elu",
            "softsign": "Softsign", "softplus": "Softplus"}
# the functions that read alpha, beta (ONNX Runtime takes a list entry only for those)
USES_ALPHA = {"hard_sigmoid", "affine", "leaky_relu", "thresholded_relu", "scaled_tanh", "elu"}
USES_BETA = {"hard_sigmoid", "affine", "scaled_tanh"}
CELL_NAMES = ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before"]
GATES = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 4, GRU: 3, GRU_RESET_BEFORE: 3}


class Params(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p)
                for name in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "peephole")]


@pytest.fixture
def lib(general_lib):
    return general_lib


def rows(a):
    """An array of pointers to the rows of a C-contiguous 2-D float32 array."""
    assert a.flags.c_contiguous and a.dtype == np.float32
    return (ctypes.c_void_p * a.shape[0])(*[a.ctypes.data + i * a.strides[0]
                                            for i in range(a.shape[0])])


def ptr_list(addresses):
    return (ctypes.c_void_p * max(len(addresses), 1))(*addresses)


# ----------------------------------------------------------------------------------------------
# Layers: options, parameters in the flat order
# ----------------------------------------------------------------------------------------------

def make_layer(cell, I, H, proj=0, peepholes=False, input_forget=False, clip=0.0,
               acts=None, alpha=None, beta=None):
    defaults = {RNN_TANH: ["tanh"], RNN_RELU: ["relu"], LSTM: ["sigmoid", "tanh", "tanh"],
                GRU: ["sigmoid", "tanh"], GRU_RESET_BEFORE: ["sigmoid", "tanh"]}[cell]
    acts = acts or defaults
    layer = RnxLayer(kind=1, input_size=I, units=H, padding_idx=-1, cell=cell, proj_size=proj,
                  peepholes=int(peepholes), input_forget=int(input_forget), clip=clip)
    for k, name in enumerate(acts):
        layer.activations[k] = ACTS.index(name)
        layer.alpha[k] = (alpha or [0.0] * 3)[k]
        layer.beta[k] = (beta or [0.0] * 3)[k]
    return layer


def param_shapes(layer):
    G, H, I, P = GATES[layer.cell], layer.units, layer.input_size, layer.proj_size
    S = P or H
    shapes = {"w_ih": (G * H, I), "w_hh": (G * H, S), "b_ih": (G * H,), "b_hh": (G * H,)}
    if P:
        shapes["w_hr"] = (P, H)
    if layer.peepholes:
        shapes["peephole"] = (3, H)
    return shapes


def split(layer, flat):
    out, at = {}, 0
    for name, shape in param_shapes(layer).items():
        n = int(np.prod(shape))
        out[name] = flat[at:at + n].reshape(shape)
        at += n
    return out


class General:
    """One direction of a layer on the C path: forward with a tape, then backward."""

    def __init__(self, lib, layer, flat):
        self.lib, self.layer = lib, layer
        self.flat = np.ascontiguousarray(flat, dtype=np.float32)
        assert lib.rnx_general_param_count(ctypes.byref(layer)) == self.flat.size
        self.g = ctypes.create_string_buffer(512)
        taken = lib.rnx_general_init(self.g, ctypes.byref(layer),
                                     self.flat.ctypes.data_as(ctypes.c_void_p))
        assert taken == self.flat.size
        self.H, self.I = layer.units, layer.input_size
        self.S = layer.proj_size or self.H
        self.G = GATES[layer.cell]
        self.width = lib.rnx_general_tape_width(self.g)
        self.scratch = np.zeros(lib.rnx_general_scratch_size(self.g), np.float32)
        self.lstm = layer.cell == LSTM

    def forward(self, x, h0, c0, lengths):
        lib, B, T = self.lib, x.shape[0], x.shape[1]
        h = np.ascontiguousarray(h0, np.float32).copy()
        c = np.ascontiguousarray(c0, np.float32).copy()
        self.x = np.ascontiguousarray(x, np.float32)
        self.active = (np.arange(T)[None, :] < lengths[:, None]).astype(np.uint8)
        self.tape = np.zeros((T, B, self.width), np.float32)
        self.h_hist = np.zeros((T, B, self.S), np.float32)
        self.c_hist = np.zeros((T, B, self.H), np.float32)
        y = np.zeros((B, T, self.S), np.float32)
        xp = np.zeros((B, self.G * self.H), np.float32)
        for t in range(T):
            xt = np.ascontiguousarray(self.x[:, t])
            lib.rnx_general_project(self.g, rows(xp), rows(xt),
                                    self.scratch.ctypes.data_as(ctypes.c_void_p), B)
            self.h_hist[t], self.c_hist[t] = h, c
            active = np.ascontiguousarray(self.active[:, t])
            lib.rnx_general_step(self.g, rows(h), rows(c), rows(xp),
                                 active.ctypes.data_as(ctypes.c_void_p), rows(self.tape[t]),
                                 self.scratch.ctypes.data_as(ctypes.c_void_p), B)
            y[:, t] = np.where(active[:, None] == 1, h, 0.0)
        self.h_n, self.c_n = h, c
        return y, h, c

    def backward(self, dy, dh_n, dc_n):
        lib, (B, T) = self.lib, self.active.shape
        dh = np.ascontiguousarray(dh_n, np.float32).copy()
        dc = np.ascontiguousarray(dc_n, np.float32).copy()
        dx = np.zeros((B, T, self.I), np.float32)
        for t in reversed(range(T)):
            active = np.ascontiguousarray(self.active[:, t])
            dh += np.where(active[:, None] == 1, dy[:, t], 0.0).astype(np.float32)
            lib.rnx_general_step_backward(self.g, rows(dh), rows(dc), rows(self.tape[t]),
                                          rows(self.h_hist[t]), rows(self.c_hist[t]),
                                          active.ctypes.data_as(ctypes.c_void_p),
                                          self.scratch.ctypes.data_as(ctypes.c_void_p), B)
            dxt = np.zeros((B, self.I), np.float32)
            lib.rnx_general_input_grad(self.g, rows(dxt), rows(self.tape[t]), B, 0)
            dx[:, t] = np.where(active[:, None] == 1, dxt, 0.0)
        grads = np.zeros_like(self.flat)
        placed = Params()
        lib.rnx_general_place(ctypes.byref(placed), ctypes.byref(self.layer),
                              grads.ctypes.data_as(ctypes.c_void_p))
        pairs = [(t, b) for t in range(T) for b in range(B) if self.active[b, t]]
        addr = lambda a, t, b: a.ctypes.data + (t * a.shape[1] + b) * a.strides[1]  # noqa: E731
        x_rows = ptr_list([self.x.ctypes.data + (b * T + t) * self.x.strides[1]
                           for t, b in pairs])
        slots = lib.rnx_general_grad_slots(self.g)
        lib.rnx_general_weight_grads(
            self.g, ctypes.byref(placed), 0, slots,
            ptr_list([addr(self.tape, t, b) for t, b in pairs]), x_rows,
            ptr_list([addr(self.h_hist, t, b) for t, b in pairs]),
            ptr_list([addr(self.c_hist, t, b) for t, b in pairs]), len(pairs))
        return grads, dx, dh, dc


def torch_layer(layer, p, x, h0, c0, lengths):
    """torch_cells.torch_direction of a ctypes RnxLayer, p: {name: float64 tensor}."""
    spec = {"cell": CELL_NAMES[layer.cell], "units": layer.units, "clip": layer.clip,
            "proj_size": layer.proj_size, "peepholes": layer.peepholes,
            "input_forget": layer.input_forget,
            "activations": [ACTS[layer.activations[k]] for k in range(3)],
            "alpha": list(layer.alpha), "beta": list(layer.beta)}
    active = torch.as_tensor(np.arange(x.shape[1])[None, :] < lengths[:, None])
    return torch_direction(spec, p, x, h0, c0, active)


# ----------------------------------------------------------------------------------------------
# ONNX graphs
# ----------------------------------------------------------------------------------------------

def onnx_run(layer, p, x, h0, c0, lengths):
    """ONNX Runtime's LSTM / GRU / RNN op on layer's options: y (B, T, H), h_n, c_n."""
    cell, H = layer.cell, layer.units
    B, T, I = x.shape
    names = [ACTS[layer.activations[k]] for k in range(3)]
    n_acts = {LSTM: 3, GRU: 2, GRU_RESET_BEFORE: 2}.get(cell, 1)
    attrs = {"hidden_size": H, "activations": [ONNX_ACT[n] for n in names[:n_acts]]}
    alpha = [float(layer.alpha[k]) for k in range(n_acts) if names[k] in USES_ALPHA]
    beta = [float(layer.beta[k]) for k in range(n_acts) if names[k] in USES_BETA]
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    if layer.clip > 0:
        attrs["clip"] = float(layer.clip)

    def gates(w, order):  # PyTorch gate blocks -> ONNX's order
        return np.concatenate([w[k * H:(k + 1) * H] for k in order])[None]

    if cell == LSTM:
        order, op = [0, 3, 1, 2], "LSTM"  # i, o, f, c
        attrs["input_forget"] = int(layer.input_forget)
    elif cell in (GRU, GRU_RESET_BEFORE):
        order, op = [1, 0, 2], "GRU"  # z, r, h
        attrs["linear_before_reset"] = int(cell == GRU)
    else:
        order, op = [0], "RNN"
    inits = {"W": gates(p["w_ih"], order), "R": gates(p["w_hh"], order),
             "B": np.concatenate([gates(p["b_ih"], order), gates(p["b_hh"], order)], axis=1)}
    feeds = {"X": np.ascontiguousarray(x.transpose(1, 0, 2)), "sequence_lens": lengths,
             "initial_h": h0[None]}
    inputs = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    outputs = ["Y", "Y_h"]
    if cell == LSTM:
        feeds["initial_c"] = c0[None]
        inputs.append("initial_c")
        outputs.append("Y_c")
        if layer.peepholes:
            inits["P"] = p["peephole"][[0, 2, 1]].reshape(1, 3 * H)  # i, o, f
            inputs.append("P")
    node = helper.make_node(op, inputs, outputs, **attrs)
    shapes = {"X": [T, B, I], "sequence_lens": [B], "initial_h": [1, B, H], "initial_c": [1, B, H]}
    graph = helper.make_graph(
        [node], "cell",
        [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens"
                                       else TensorProto.FLOAT, shapes[n]) for n in feeds],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [helper.make_tensor(n, TensorProto.FLOAT, v.shape, v.astype(np.float32).ravel())
         for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    result = session.run(None, feeds)
    y = result[0][:, 0].transpose(1, 0, 2)
    return y, result[1][0], (result[2][0] if cell == LSTM else c0)


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

def case(cell, **options):
    return pytest.param(cell, options, id="-".join(
        [["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_rb"][cell]] +
        [f"{k}={v}" for k, v in options.items()]))


ONNX_CASES = [
    case(LSTM),
    case(LSTM, peepholes=True),
    case(LSTM, input_forget=True),
    case(LSTM, peepholes=True, input_forget=True, clip=0.7),
    case(LSTM, clip=0.5),
    case(LSTM, acts=["hard_sigmoid", "elu", "scaled_tanh"], alpha=[0.3, 0.8, 1.5],
         beta=[0.4, 0.0, 0.7]),
    case(LSTM, acts=["sigmoid", "softsign", "softplus"], peepholes=True),
    case(LSTM, acts=["sigmoid", "leaky_relu", "affine"], alpha=[0.0, 0.1, 0.9],
         beta=[0.0, 0.0, 0.2]),
    case(GRU),
    case(GRU, clip=0.6),
    case(GRU, acts=["hard_sigmoid", "leaky_relu"], alpha=[0.25, 0.05], beta=[0.45, 0.0]),
    case(GRU_RESET_BEFORE),
    case(GRU_RESET_BEFORE, acts=["sigmoid", "softsign"], clip=0.8),
    case(RNN_TANH),
    case(RNN_RELU),
    case(RNN_TANH, clip=0.4),
    case(RNN_TANH, acts=["thresholded_relu"], alpha=[0.2]),
    case(RNN_TANH, acts=["scaled_tanh"], alpha=[1.3], beta=[0.6]),
    case(RNN_TANH, acts=["elu"], alpha=[0.7]),
    case(RNN_TANH, acts=["softplus"]),
]

B, T, I, H = 3, 5, 4, 6
LENGTHS = np.array([5, 2, 4], np.int32)


def setup_case(cell, options, seed=0, proj=0):
    rng = np.random.default_rng(seed)
    layer = make_layer(cell, I, H, proj=proj, **options)
    shapes = param_shapes(layer)
    flat = np.concatenate([rng.uniform(-0.6, 0.6, int(np.prod(s))) for s in shapes.values()])
    S = proj or H
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0 = rng.uniform(-0.5, 0.5, (B, S)).astype(np.float32)
    c0 = rng.uniform(-0.5, 0.5, (B, H)).astype(np.float32)
    return layer, flat.astype(np.float32), x, h0, c0


@pytest.mark.parametrize("cell, options", ONNX_CASES)
def test_forward_matches_onnxruntime_and_torch_maths(lib, cell, options):
    layer, flat, x, h0, c0 = setup_case(cell, options)
    y, h_n, c_n = General(lib, layer, flat).forward(x, h0, c0, LENGTHS)
    y_ort, h_ort, c_ort = onnx_run(layer, split(layer, flat), x, h0, c0, LENGTHS)
    np.testing.assert_allclose(y, y_ort, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n, h_ort, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_n, c_ort, rtol=1e-5, atol=1e-6)
    # the float64 torch maths that the gradients are checked with is ONNX Runtime's too
    p = {k: torch.tensor(v, dtype=torch.float64) for k, v in split(layer, flat).items()}
    y_t, h_t, c_t = torch_layer(layer, p, torch.tensor(x, dtype=torch.float64),
                                torch.tensor(h0, dtype=torch.float64),
                                torch.tensor(c0, dtype=torch.float64), LENGTHS)
    np.testing.assert_allclose(y_t.numpy(), y_ort, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_t.numpy(), h_ort, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("proj", [2, 4])
def test_proj_size_matches_torch_lstm(lib, proj):
    layer, flat, x, h0, c0 = setup_case(LSTM, {}, seed=1, proj=proj)
    y, h_n, c_n = General(lib, layer, flat).forward(x, h0, c0, np.full(B, T, np.int32))
    module = torch.nn.LSTM(I, H, proj_size=proj, batch_first=True)
    p = split(layer, flat)
    with torch.no_grad():
        for name, key in [("weight_ih_l0", "w_ih"), ("weight_hh_l0", "w_hh"),
                          ("bias_ih_l0", "b_ih"), ("bias_hh_l0", "b_hh"), ("weight_hr_l0", "w_hr")]:
            getattr(module, name).copy_(torch.tensor(p[key]))
        y_t, (h_t, c_t) = module(torch.tensor(x), (torch.tensor(h0)[None], torch.tensor(c0)[None]))
    np.testing.assert_allclose(y, y_t.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n, h_t[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_n, c_t[0].numpy(), rtol=1e-5, atol=1e-6)


GRAD_CASES = ONNX_CASES + [case(LSTM, proj=3), case(LSTM, proj=2, peepholes=True, clip=0.9,
                                                    input_forget=True)]


def loss_weights(seed, S, H):
    rng = np.random.default_rng(seed + 100)
    return (rng.standard_normal((B, T, S)).astype(np.float32),
            rng.standard_normal((B, S)).astype(np.float32),
            rng.standard_normal((B, H)).astype(np.float32))


@pytest.mark.parametrize("cell, options", GRAD_CASES)
def test_backward_matches_torch_autograd(lib, cell, options):
    options = dict(options)
    proj = options.pop("proj", 0)
    layer, flat, x, h0, c0 = setup_case(cell, options, proj=proj)
    S = proj or H
    general = General(lib, layer, flat)
    general.forward(x, h0, c0, LENGTHS)
    wy, wh, wc = loss_weights(0, S, H)
    lstm = cell == LSTM
    grads, dx, dh0, dc0 = general.backward(wy, wh, wc if lstm else np.zeros_like(wc))

    leaf = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    p = {k: leaf(v) for k, v in split(layer, flat).items()}
    xt, h0t, c0t = leaf(x), leaf(h0), leaf(c0)
    y, h_n, c_n = torch_layer(layer, p, xt, h0t, c0t, LENGTHS)
    loss = (y * torch.tensor(wy)).sum() + (h_n * torch.tensor(wh)).sum()
    if lstm:
        loss = loss + (c_n * torch.tensor(wc)).sum()
    loss.backward()
    expected = np.concatenate([p[k].grad.numpy().ravel() for k in param_shapes(layer)])
    scale = np.abs(expected).max()
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), rtol=1e-4, atol=1e-5)
    if lstm:
        np.testing.assert_allclose(dc0, c0t.grad.numpy(), rtol=1e-4, atol=1e-5)


# functions with a kink, where a difference quotient straddling it measures neither side
KINKED = {"relu", "hard_sigmoid", "leaky_relu", "thresholded_relu", "elu"}
SMOOTH_CASES = [c for c in GRAD_CASES if not c.values[1].get("clip")
                and not KINKED & set(c.values[1].get("acts", []))]


@pytest.mark.parametrize("cell, options", SMOOTH_CASES)
def test_backward_matches_central_differences(lib, cell, options):
    """The C gradient along random directions against central differences of the C forward, in
    float32 with a step where rounding and curvature both stay near 1e-3 of the slope. Clip and
    kinked functions are left to the autograd test above: a step across a kink measures neither
    side."""
    options = dict(options)
    proj = options.pop("proj", 0)
    layer, flat, x, h0, c0 = setup_case(cell, options, seed=2, proj=proj)
    S = proj or H
    wy, wh, wc = loss_weights(2, S, H)
    lstm = cell == LSTM

    def loss(flat_, x_):
        y, h_n, c_n = General(lib, layer, flat_).forward(x_, h0, c0, LENGTHS)
        total = np.sum(y.astype(np.float64) * wy) + np.sum(h_n.astype(np.float64) * wh)
        return total + (np.sum(c_n.astype(np.float64) * wc) if lstm else 0.0)

    general = General(lib, layer, flat)
    general.forward(x, h0, c0, LENGTHS)
    grads, dx, _, _ = general.backward(wy, wh, wc if lstm else np.zeros_like(wc))
    rng = np.random.default_rng(7)
    eps = 2e-3
    for name, shape in param_shapes(layer).items():
        mask = np.zeros_like(flat)
        at = 0
        for k, s in param_shapes(layer).items():
            n = int(np.prod(s))
            if k == name:
                mask[at:at + n] = 1.0
            at += n
        v = (rng.standard_normal(flat.size) * mask).astype(np.float32)
        numeric = (loss(flat + eps * v, x) - loss(flat - eps * v, x)) / (2 * eps)
        analytic = float(np.dot(grads.astype(np.float64), v))
        assert abs(numeric - analytic) <= 2e-3 * (abs(analytic) + np.linalg.norm(grads * mask)), \
            (name, numeric, analytic)
    v = rng.standard_normal(x.shape).astype(np.float32)
    numeric = (loss(flat, x + eps * v) - loss(flat, x - eps * v)) / (2 * eps)
    analytic = float(np.sum(dx.astype(np.float64) * v))
    assert abs(numeric - analytic) <= 2e-3 * (abs(analytic) + np.linalg.norm(dx)), (numeric,
                                                                                     analytic)


def test_activations_match_torch_and_their_derivatives(lib):
    xs = np.linspace(-3, 3, 61).astype(np.float32) + 0.013
    for k, name in enumerate(ACTS):
        a, b = 0.7, 0.3
        xt = torch.tensor(xs.astype(np.float64), requires_grad=True)
        y = torch_act(name, xt, a, b)
        y.sum().backward()
        got = np.array([lib.rnx_act_value(k, float(v), a, b) for v in xs])
        slope = np.array([lib.rnx_act_derivative(k, float(v), a, b) for v in xs])
        np.testing.assert_allclose(got, y.detach().numpy(), rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(slope, xt.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
