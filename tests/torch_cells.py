"""The recurrent maths of the layer contract (LAYERS.md) in float64 torch, for autograd: one
direction of an RNN, LSTM or GRU layer with every option (activations with alpha/beta, ONNX's
clip, peepholes, input_forget, PyTorch's proj_size, both GRU resets) and Keras step masks. Its
forward is checked against ONNX Runtime and torch.nn.LSTM in test_general.py."""
import torch

DEFAULT_ACTS = {"rnn_tanh": ["tanh"], "rnn_relu": ["relu"], "lstm": ["sigmoid", "tanh", "tanh"],
                "gru": ["sigmoid", "tanh"], "gru_reset_before": ["sigmoid", "tanh"]}


def torch_act(name, x, a, b):
    return {"linear": lambda: x, "sigmoid": lambda: torch.sigmoid(x),
            "tanh": lambda: torch.tanh(x), "relu": lambda: torch.relu(x),
            "hard_sigmoid": lambda: torch.clamp(a * x + b, 0.0, 1.0),
            "affine": lambda: a * x + b,
            "leaky_relu": lambda: torch.where(x >= 0, x, a * x),
            "thresholded_relu": lambda: torch.where(x > a, x, torch.zeros_like(x)),
            "scaled_tanh": lambda: a * torch.tanh(b * x),
            "elu": lambda: torch.where(x >= 0, x, a * torch.expm1(x)),
            "softsign": lambda: x / (1 + torch.abs(x)),
            "softplus": lambda: torch.nn.functional.softplus(x)}[name]()


def torch_direction(layer, p, x, h0, c0, active):
    """One direction walking t = 0 .. T-1 (flip x and active for the other): outputs (B, T, S)
    zero at inactive steps, h_n, c_n. layer: a dict with cell (a name), units and optionally
    activations (names), alpha, beta, clip, proj_size, peepholes, input_forget; p: {w_ih, w_hh,
    b_ih, b_hh, [w_hr], [peephole]}; active (B, T) bool: a step the sequence takes."""
    cell, H = layer["cell"], layer["units"]
    names = list(layer.get("activations") or DEFAULT_ACTS[cell])
    alpha = list(layer.get("alpha") or [0.0] * 3) + [0.0] * 3
    beta = list(layer.get("beta") or [0.0] * 3) + [0.0] * 3
    clip = layer.get("clip") or 0.0

    def f(k, v):
        if clip > 0:
            v = torch.clamp(v, -clip, clip)
        return torch_act(names[k], v, alpha[k], beta[k])

    h, c, ys = h0, c0, []
    for t in range(x.shape[1]):
        xp = x[:, t] @ p["w_ih"].T + p["b_ih"]
        if cell == "lstm":
            a = xp + h @ p["w_hh"].T + p["b_hh"]
            ai, af, ag, ao = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            if layer.get("peepholes"):
                ai, af = ai + p["peephole"][0] * c, af + p["peephole"][1] * c
            i = f(0, ai)
            fg = 1 - i if layer.get("input_forget") else f(0, af)
            c_new = fg * c + i * f(1, ag)
            if layer.get("peepholes"):
                ao = ao + p["peephole"][2] * c_new
            # h applies to c' unclipped (ONNX Runtime clips pre-activations only)
            h_new = f(0, ao) * torch_act(names[2], c_new, alpha[2], beta[2])
            if layer.get("proj_size"):
                h_new = h_new @ p["w_hr"].T
        elif cell in ("gru", "gru_reset_before"):
            hh = h @ p["w_hh"].T + p["b_hh"]
            r = f(0, xp[:, :H] + hh[:, :H])
            z = f(0, xp[:, H:2 * H] + hh[:, H:2 * H])
            if cell == "gru":
                n = f(1, xp[:, 2 * H:] + r * hh[:, 2 * H:])
            else:
                n = f(1, xp[:, 2 * H:] + (r * h) @ p["w_hh"][2 * H:].T + p["b_hh"][2 * H:])
            h_new, c_new = (1 - z) * n + z * h, c
        else:
            h_new, c_new = f(0, xp + h @ p["w_hh"].T + p["b_hh"]), c
        on = active[:, t, None]
        h = torch.where(on, h_new, h)
        c = torch.where(on, c_new, c)
        ys.append(torch.where(on, h, torch.zeros_like(h)))
    return torch.stack(ys, 1), h, c
