"""Training of layer lists in C (rnx_forward_train, rnx_backward) through the binding alone
(rnnext._core.CoreModel from layer dicts, CoreTape):

- against torch.nn.LSTM/GRU/RNN autograd for what one module can be: stacks, bidirectional,
  proj_size, a reverse-only layer as a module run on the flipped sequence;
- against autograd of the float64 torch maths of torch_cells.py (checked against ONNX Runtime
  and torch in test_general.py) for layers of different sizes and cells, every merge, reverse-
  only layers, lengths and Keras masks, and the options torch lacks (peepholes, input_forget,
  activations, clip, the reset-before GRU);
- against central differences of the C forward for those options;
- 1, 2 and 3 threads bitwise equal; statuses.
"""
import numpy as np
import pytest

from rnnext import _core

torch = pytest.importorskip("torch")
from torch_cells import torch_direction  # noqa: E402

GATES = {"lstm": 4, "gru": 3, "gru_reset_before": 3, "rnn_tanh": 1, "rnn_relu": 1}
ISA = "avx512" if _core.isa_supported("avx512") else "scalar"


def recurrent(cell, I, H, direction="forward", merge="concat", **options):
    return dict(kind="recurrent", cell=cell, input_size=I, units=H, direction=direction,
                merge=merge if direction == "bidirectional" else "concat", **options)


def state_size(layer):
    return layer.get("proj_size") or layer["units"]


def width(layer):
    concat = layer["direction"] == "bidirectional" and layer["merge"] == "concat"
    return 2 * state_size(layer) if concat else state_size(layer)


def stack(*specs, I):
    """Recurrent layers from (cell, H, options) specs, each fed by the one below."""
    layers = []
    for cell, H, options in specs:
        layers.append(recurrent(cell, I, H, **options))
        I = width(layers[-1])
    return layers


def directions(layer):
    return {"forward": [0], "reverse": [1], "bidirectional": [0, 1]}[layer["direction"]]


def param_shapes(layer):
    """One direction's parameters in the flat order (LAYERS.md)."""
    G, H, I, S = GATES[layer["cell"]], layer["units"], layer["input_size"], state_size(layer)
    shapes = {"w_ih": (G * H, I), "w_hh": (G * H, S), "b_ih": (G * H,), "b_hh": (G * H,)}
    if layer.get("proj_size"):
        shapes["w_hr"] = (layer["proj_size"], H)
    if layer.get("peepholes"):
        shapes["peephole"] = (3, H)
    return shapes


def random_params(layers, rng):
    """[(layer, direction, {name: float32 array})] as PyTorch initialises them."""
    out = []
    for k, layer in enumerate(layers):
        bound = 1 / np.sqrt(layer["units"])
        for d in directions(layer):
            out.append((k, d, {n: rng.uniform(-bound, bound, s).astype(np.float32)
                               for n, s in param_shapes(layer).items()}))
    return out


def flat(params):
    return np.concatenate([a.ravel() for _, _, p in params for a in p.values()])


def state_blocks(layers, B, rng):
    """Random h0 and c0, flat as the core's: per layer and direction (B, S) blocks (c: (B, H),
    LSTM layers only)."""
    h = [rng.uniform(-0.5, 0.5, (B, state_size(l))).astype(np.float32)
         for l in layers for _ in directions(l)]
    c = [rng.uniform(-0.5, 0.5, (B, l["units"])).astype(np.float32)
         for l in layers for _ in directions(l) if l["cell"] == "lstm"]
    return h, c


def cat(blocks):
    return np.concatenate([b.ravel() for b in blocks]).astype(np.float32) if blocks else None


def merge(a, b, mode):
    return {"concat": lambda: torch.cat([a, b], -1), "sum": lambda: a + b,
            "mul": lambda: a * b, "ave": lambda: (a + b) / 2}[mode]()


def reference(layers, params, x, h0, c0, active):
    """The top layer's sequence and the final states (lists of blocks) in float64 torch."""
    seq, h_n, c_n, i, ci = x, [], [], 0, 0
    for k, layer in enumerate(layers):
        outs = []
        for d in directions(layer):
            p = params[i][2]
            c_init = c0[ci] if layer["cell"] == "lstm" else torch.zeros(x.shape[0], layer["units"],
                                                                          dtype=torch.float64)
            if d:  # the reverse direction: the same loop over the flipped sequence
                out, h, c = torch_direction(layer, p, seq.flip(1), h0[i], c_init, active.flip(1))
                out = out.flip(1)
            else:
                out, h, c = torch_direction(layer, p, seq, h0[i], c_init, active)
            outs.append(out)
            h_n.append(h)
            if layer["cell"] == "lstm":
                c_n.append(c)
                ci += 1
            i += 1
        seq = merge(outs[0], outs[1], layer["merge"]) if len(outs) == 2 else outs[0]
    return seq, h_n, c_n


def run_c(layers, params, x, h0, c0, lengths, mask, dseq, dh_n, dc_n, n_threads=1, isa=ISA):
    """forward_train then backward on the C core: (seq, h_n, c_n, grads, dx, dh0, dc0)."""
    core = _core.CoreModel(layers, flat(params), isa)
    B, T, _ = x.shape
    S, C = core.info["state_size"], core.info["cell_size"]
    tape = _core.CoreTape(core, B, T)
    seq = np.empty((B, T, core.train_sizes[1]), np.float32)
    h_n = np.empty(B * S, np.float32)
    c_n = np.empty(B * C, np.float32) if C else None
    core.forward_train(tape, seq, h_n, c_n, x, h0, c0, lengths, mask, n_threads)
    grads = np.empty(core.info["recurrent_param_count"], np.float32)
    dx = np.empty_like(x)
    dh0 = np.empty(B * S, np.float32)
    dc0 = np.empty(B * C, np.float32) if C else None
    core.backward(tape, grads, dx, dh0, dc0, x, dseq, dh_n, dc_n, n_threads)
    return seq, h_n, c_n, grads, dx, dh0, dc0


def active_of(lengths, mask, B, T):
    if mask is not None:
        return mask.astype(bool)
    if lengths is not None:
        return np.arange(T)[None, :] < lengths[:, None]
    return np.ones((B, T), bool)


def check_against_autograd(layers, B=3, T=5, seed=0, lengths=None, mask=None, rtol=1e-4,
                           atol=2e-5):
    rng = np.random.default_rng(seed)
    I = layers[0]["input_size"]
    params = random_params(layers, rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0, c0 = state_blocks(layers, B, rng)
    W = width(layers[-1])
    dseq = rng.standard_normal((B, T, W)).astype(np.float32)
    dh_n, dc_n = state_blocks(layers, B, rng)

    seq, h_n, c_n, grads, dx, dh0, dc0 = run_c(layers, params, x, cat(h0), cat(c0), lengths,
                                               mask, dseq, cat(dh_n), cat(dc_n))

    f64 = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    tp = [(k, d, {n: f64(a) for n, a in p.items()}) for k, d, p in params]
    tx, th0, tc0 = f64(x), [f64(h) for h in h0], [f64(c) for c in c0]
    active = torch.as_tensor(active_of(lengths, mask, B, T))
    ref_seq, ref_h, ref_c = reference(layers, tp, tx, th0, tc0, active)
    loss = (ref_seq * torch.tensor(dseq)).sum()
    loss = loss + sum((h * torch.tensor(w)).sum() for h, w in zip(ref_h, dh_n))
    loss = loss + sum((c * torch.tensor(w)).sum() for c, w in zip(ref_c, dc_n))
    loss.backward()

    np.testing.assert_allclose(seq, ref_seq.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(h_n, cat([h.detach().numpy() for h in ref_h]), rtol=rtol, atol=atol)
    if c0:
        np.testing.assert_allclose(c_n, cat([c.detach().numpy() for c in ref_c]), rtol=rtol,
                                   atol=atol)
    want = np.concatenate([a.grad.numpy().ravel() for _, _, p in tp for a in p.values()])
    np.testing.assert_allclose(grads, want, rtol=rtol, atol=atol * max(1.0, np.abs(want).max()))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(dh0, cat([h.grad.numpy() for h in th0]), rtol=rtol, atol=atol)
    if c0:
        np.testing.assert_allclose(dc0, cat([c.grad.numpy() for c in tc0]), rtol=rtol, atol=atol)
    return params, x


# ------------------------------------------------------------------------------------------------
# packed kernels: stacks of different sizes and cells, merges, reverse-only layers, lengths, masks

LENGTHS = np.array([5, 2, 4], np.int32)
MASK = np.array([[1, 0, 1, 1, 0], [0, 0, 1, 0, 1], [1, 1, 1, 1, 1]], np.uint8)

PACKED_STACKS = {
    "lstm-gru-rnn": [("lstm", 6, {}), ("gru", 5, {}), ("rnn_tanh", 3, {})],
    "bi-concat-sizes": [("gru", 4, {"direction": "bidirectional"}),
                        ("lstm", 7, {"direction": "bidirectional"}), ("rnn_relu", 5, {})],
    "merges": [("lstm", 5, {"direction": "bidirectional", "merge": "sum"}),
               ("gru", 6, {"direction": "bidirectional", "merge": "mul"}),
               ("rnn_tanh", 4, {"direction": "bidirectional", "merge": "ave"})],
    "reverse-only": [("gru", 5, {"direction": "reverse"}), ("lstm", 3, {}),
                     ("rnn_tanh", 6, {"direction": "reverse"})],
    "wide": [("lstm", 37, {"direction": "bidirectional"}), ("gru", 19, {})],
}


@pytest.mark.parametrize("steps", ["full", "lengths", "mask"])
@pytest.mark.parametrize("name", list(PACKED_STACKS))
def test_packed_stacks_match_autograd(name, steps):
    layers = stack(*PACKED_STACKS[name], I=4)
    check_against_autograd(layers, lengths=LENGTHS if steps == "lengths" else None,
                           mask=MASK if steps == "mask" else None)


def test_forward_train_sequence_matches_forward():
    layers = stack(*PACKED_STACKS["merges"], I=4)
    rng = np.random.default_rng(3)
    params = random_params(layers, rng)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    core = _core.CoreModel(layers, flat(params), ISA)
    y = np.empty((3, 5, width(layers[-1])), np.float32)
    core.forward(y, None, None, x, None, None, None, None, MASK, 1)
    seq = run_c(layers, params, x, None, None, None, MASK, None, None, None)[0]
    np.testing.assert_allclose(seq, y, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# torch.nn modules' own autograd


def module_grads(module, x, flip=False):
    xt = torch.tensor(x, requires_grad=True)
    out, _ = module(xt.flip(1) if flip else xt)
    if flip:
        out = out.flip(1)
    return out, xt


@pytest.mark.parametrize("kind, options", [
    ("lstm", {"num_layers": 2, "bidirectional": True}),
    ("lstm", {"num_layers": 2, "proj_size": 3}),
    ("lstm", {"bidirectional": True, "proj_size": 2}),
    ("gru", {"num_layers": 3}),
    ("rnn_tanh", {"num_layers": 2, "bidirectional": True}),
])
def test_torch_modules_autograd(kind, options):
    torch.manual_seed(0)
    I, H, B, T = 4, 6, 3, 5
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[kind]
    module = cls(I, H, batch_first=True, **options)
    L, bi, P = options.get("num_layers", 1), options.get("bidirectional", False), \
        options.get("proj_size", 0)
    if P and not _general_available():
        pytest.skip("proj_size trains on the plain path, which this model build lacks")
    spec = {"direction": "bidirectional"} if bi else {}
    if P:
        spec["proj_size"] = P
    layers = stack(*[(kind, H, spec)] * L, I=I)
    params = []
    for k in range(L):
        for d, s in enumerate(["", "_reverse"][:1 + bi]):
            names = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih",
                     "b_hh": "bias_hh", "w_hr": "weight_hr"}
            params.append((k, d, {n: getattr(module, f"{t}_l{k}{s}").detach().numpy().copy()
                                  for n, t in names.items() if n != "w_hr" or P}))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    dseq = rng.standard_normal((B, T, width(layers[-1]))).astype(np.float32)
    out, xt = module_grads(module, x)
    (out * torch.tensor(dseq)).sum().backward()
    seq, _, _, grads, dx, _, _ = run_c(layers, params, x, None, None, None, None, dseq, None,
                                       None)
    np.testing.assert_allclose(seq, out.detach().numpy(), rtol=1e-4, atol=1e-5)
    want = np.concatenate([getattr(module, f"{t}_l{k}{s}").grad.numpy().ravel()
                           for k in range(L) for s in ["", "_reverse"][:1 + bi]
                           for t in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] +
                           (["weight_hr"] if P else [])])
    np.testing.assert_allclose(grads, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn_tanh"])
def test_reverse_only_layer_is_a_module_on_the_flipped_sequence(kind):
    torch.manual_seed(1)
    I, H, B, T = 3, 5, 2, 6
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[kind]
    module = cls(I, H, batch_first=True)
    layers = [recurrent(kind, I, H, direction="reverse")]
    params = [(0, 1, {n: getattr(module, f"{t}_l0").detach().numpy().copy() for n, t in
                      {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih",
                       "b_hh": "bias_hh"}.items()})]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    dseq = rng.standard_normal((B, T, H)).astype(np.float32)
    out, xt = module_grads(module, x, flip=True)
    (out * torch.tensor(dseq)).sum().backward()
    seq, _, _, grads, dx, _, _ = run_c(layers, params, x, None, None, None, None, dseq, None,
                                       None)
    np.testing.assert_allclose(seq, out.detach().numpy(), rtol=1e-4, atol=1e-5)
    want = np.concatenate([getattr(module, f"{t}_l0").grad.numpy().ravel()
                           for t in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]])
    np.testing.assert_allclose(grads, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# the plain path: options the packed kernels lack


def _general_available():
    """Whether this build's model runs (and so trains) the plain path."""
    try:
        _core.CoreModel([recurrent("lstm", 2, 3, proj_size=2)],
                        np.zeros(4 * 3 * (2 + 2 + 2) + 6, np.float32), ISA)
    except ValueError:
        return False
    return True


needs_general = pytest.mark.skipif(not _general_available(),
                                   reason="this model build lacks the plain path (general.c)")

OPTION_STACKS = {
    "proj": [("lstm", 6, {"proj_size": 3, "direction": "bidirectional"}), ("gru", 4, {})],
    "peepholes-input_forget": [("lstm", 5, {"peepholes": 1, "input_forget": 1}),
                               ("lstm", 4, {"peepholes": 1, "direction": "reverse"})],
    "clip-acts": [("gru", 5, {"clip": 0.8, "activations": ["hard_sigmoid", "softsign"],
                              "alpha": [0.3, 0.0], "beta": [0.45, 0.0]}),
                  ("rnn_tanh", 4, {"activations": ["scaled_tanh"], "alpha": [1.2],
                                   "beta": [0.7], "direction": "bidirectional",
                                   "merge": "mul"})],
    "reset-before": [("gru_reset_before", 5, {"direction": "bidirectional", "merge": "ave"}),
                     ("lstm", 4, {"activations": ["sigmoid", "elu", "softplus"],
                                  "alpha": [0.0, 0.8, 0.0]})],
    "mixed": [("lstm", 6, {"proj_size": 2}), ("lstm", 5, {}),
              ("gru", 3, {"clip": 0.5, "direction": "reverse"})],
}


@needs_general
@pytest.mark.parametrize("steps", ["full", "lengths", "mask"])
@pytest.mark.parametrize("name", list(OPTION_STACKS))
def test_options_match_autograd(name, steps):
    layers = stack(*OPTION_STACKS[name], I=4)
    check_against_autograd(layers, lengths=LENGTHS if steps == "lengths" else None,
                           mask=MASK if steps == "mask" else None)


@needs_general
@pytest.mark.parametrize("name", ["peepholes-input_forget", "proj"])
def test_options_match_central_differences(name):
    """The C gradients along random directions against central differences of the C forward
    (float32, smooth functions only: a step across a kink measures neither side)."""
    layers = stack(*OPTION_STACKS[name], I=4)
    rng = np.random.default_rng(5)
    params = random_params(layers, rng)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    dseq = rng.standard_normal((3, 5, width(layers[-1]))).astype(np.float32)
    grads, dx = run_c(layers, params, x, None, None, LENGTHS, None, dseq, None, None)[3:5]
    base = flat(params)

    def loss(p, x_):
        core = _core.CoreModel(layers, p, ISA)
        tape = _core.CoreTape(core, 3, 5)
        seq = np.empty_like(dseq)
        core.forward_train(tape, seq, None, None, x_, None, None, LENGTHS, None, 1)
        return float(np.sum(seq.astype(np.float64) * dseq))

    eps = 2e-3
    for _ in range(4):
        v = rng.standard_normal(base.size).astype(np.float32)
        numeric = (loss(base + eps * v, x) - loss(base - eps * v, x)) / (2 * eps)
        analytic = float(np.dot(grads.astype(np.float64), v))
        assert abs(numeric - analytic) <= 2e-3 * (abs(analytic) + np.linalg.norm(grads))
    v = rng.standard_normal(x.shape).astype(np.float32)
    numeric = (loss(base, x + eps * v) - loss(base, x - eps * v)) / (2 * eps)
    analytic = float(np.sum(dx.astype(np.float64) * v))
    assert abs(numeric - analytic) <= 2e-3 * (abs(analytic) + np.linalg.norm(dx))


# ------------------------------------------------------------------------------------------------
# threads, instruction sets, statuses


def thread_stacks():
    stacks = [("packed", [("lstm", 64, {"direction": "bidirectional", "merge": "mul"}),
                          ("gru", 48, {"direction": "reverse"}), ("rnn_relu", 40, {})])]
    if _general_available():
        stacks.append(("plain", [("lstm", 48, {"proj_size": 24, "direction": "bidirectional"}),
                                 ("gru_reset_before", 40, {}), ("lstm", 32, {"peepholes": 1})]))
    return stacks


@pytest.mark.parametrize("name, specs", thread_stacks())
def test_threads_bitwise_equal(name, specs):
    """Big enough that 3 threads each get their share of work (the call takes fewer threads
    for small work)."""
    layers = stack(*specs, I=32)
    rng = np.random.default_rng(4)
    params = random_params(layers, rng)
    B, T = 30, 40
    x = rng.standard_normal((B, T, 32)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B).astype(np.int32)
    dseq = rng.standard_normal((B, T, width(layers[-1]))).astype(np.float32)
    h0, c0 = state_blocks(layers, B, rng)
    dh_n, dc_n = state_blocks(layers, B, rng)
    runs = [run_c(layers, params, x, cat(h0), cat(c0), lengths, None, dseq, cat(dh_n),
                  cat(dc_n), n_threads=n) for n in (1, 2, 3)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            if a is not None:
                assert np.array_equal(a, b)


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_every_isa_matches_autograd(isa):
    if not _core.isa_supported(isa):
        pytest.skip(f"{isa} is not supported here")
    global ISA
    saved, ISA = ISA, isa
    try:
        check_against_autograd(stack(*PACKED_STACKS["merges"], I=4), mask=MASK)
    finally:
        ISA = saved


def test_statuses():
    layers = stack(("lstm", 4, {}), I=3)
    rng = np.random.default_rng(0)
    core = _core.CoreModel(layers, flat(random_params(layers, rng)), ISA)
    tape = _core.CoreTape(core, 2, 3)
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    grads = np.empty(core.info["recurrent_param_count"], np.float32)
    with pytest.raises(ValueError, match="tape"):
        core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    with pytest.raises(ValueError, match="forward_train"):
        core.forward_train(tape, None, None, None, x, None, None, np.array([1, 2], np.int32),
                           np.ones((2, 3), np.uint8), 1)
    with pytest.raises(ValueError, match="forward_train"):
        core.forward_train(tape, None, None, None, x, None, None, None,
                           np.full((2, 3), 2, np.uint8), 1)
    with pytest.raises(ValueError, match="forward_train"):
        big = rng.standard_normal((3, 3, 3)).astype(np.float32)
        core.forward_train(tape, None, None, None, big, None, None, None, None, 1)
    core.forward_train(tape, None, None, None, x, None, None, None, None, 1)
    other = _core.CoreModel(layers, flat(random_params(layers, rng)), ISA)
    with pytest.raises(ValueError, match="backward"):
        other.backward(tape, grads, None, None, None, x, None, None, None, 1)
    core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    with pytest.raises(ValueError, match="backward"):  # the tape was consumed
        core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    assert tape.fits(other, 2, 3) and not tape.fits(core, 3, 3)
    scalar = _core.CoreModel(layers, flat(random_params(layers, rng)), "scalar")
    if ISA != "scalar":  # another instruction set packs other panels: the tape does not fit
        assert not tape.fits(scalar, 2, 3)
        with pytest.raises(ValueError, match="forward_train"):
            scalar.forward_train(tape, None, None, None, x, None, None, None, None, 1)


def test_embedding_and_head_models_train_their_recurrent_layers():
    """An embedding (mask_zero) and a readout with dense layers around the recurrent layers: the
    caller gives the embedded vectors and mask_zero's mask; grads hold the recurrent layers'
    parameters only, from info["recurrent_param_offset"] in params."""
    rng = np.random.default_rng(6)
    V, E, B, T = 7, 4, 3, 5
    body = stack(("lstm", 5, {"direction": "bidirectional", "merge": "sum"}), ("gru", 3, {}), I=E)
    layers = [dict(kind="embedding", input_size=V, units=E, mask_zero=1), *body,
              dict(kind="readout", readout="final"), dict(kind="dense", input_size=3, units=2)]
    embedding = rng.standard_normal((V, E)).astype(np.float32)
    params = random_params(body, rng)
    head = rng.uniform(-0.5, 0.5, 2 * 3 + 2).astype(np.float32)
    core = _core.CoreModel(layers, np.concatenate([embedding.ravel(), flat(params), head]), ISA)
    assert core.info["recurrent_param_offset"] == V * E
    assert core.info["recurrent_param_count"] == flat(params).size
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    ids[0, 1] = ids[1, 0] = 0
    x = np.ascontiguousarray(embedding[ids])
    mask = (ids != 0).astype(np.uint8)
    dseq = rng.standard_normal((B, T, 3)).astype(np.float32)
    tape = _core.CoreTape(core, B, T)
    seq = np.empty((B, T, 3), np.float32)
    core.forward_train(tape, seq, None, None, x, None, None, None, mask, 1)
    grads = np.empty(core.info["recurrent_param_count"], np.float32)
    dx = np.empty_like(x)
    core.backward(tape, grads, dx, None, None, x, dseq, None, None, 1)

    f64 = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    tp = [(k, d, {n: f64(a) for n, a in p.items()}) for k, d, p in params]
    tx = f64(x)
    h0, c0 = state_blocks(body, B, rng)
    zeros = [torch.zeros(h.shape, dtype=torch.float64) for h in h0]
    czeros = [torch.zeros(c.shape, dtype=torch.float64) for c in c0]
    ref, _, _ = reference(body, tp, tx, zeros, czeros, torch.as_tensor(mask.astype(bool)))
    (ref * torch.tensor(dseq)).sum().backward()
    np.testing.assert_allclose(seq, ref.detach().numpy(), rtol=1e-4, atol=2e-5)
    want = np.concatenate([a.grad.numpy().ravel() for _, _, p in tp for a in p.values()])
    np.testing.assert_allclose(grads, want, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", ["packed", "plain"])
def test_nan_padding_and_a_larger_tape(name):
    """Inputs past a sequence's length (NaN here) reach no output or gradient, on either path;
    a tape made for more sequences and steps than a pass gives the same results bitwise."""
    if name == "plain" and not _general_available():
        pytest.skip("this model build lacks the plain path (general.c)")
    specs = PACKED_STACKS["merges"] if name == "packed" else OPTION_STACKS["mixed"]
    layers = stack(*specs, I=4)
    rng = np.random.default_rng(8)
    params = random_params(layers, rng)
    B, T = 3, 5
    x = rng.standard_normal((B, T, 4)).astype(np.float32)
    dseq = rng.standard_normal((B, T, width(layers[-1]))).astype(np.float32)
    padded = x.copy()
    for b, n in enumerate(LENGTHS):
        padded[b, n:] = np.nan
    want = run_c(layers, params, x, None, None, LENGTHS, None, dseq, None, None)
    got = run_c(layers, params, padded, None, None, LENGTHS, None, dseq, None, None)
    assert all(np.isfinite(b).all() for b in got if b is not None)
    valid = np.arange(T)[None, :] < LENGTHS[:, None]
    np.testing.assert_array_equal(got[4][valid], want[4][valid])
    np.testing.assert_array_equal(got[4][~valid], 0.0)
    for a, b in zip(want[:4], got[:4]):
        if a is not None:
            np.testing.assert_array_equal(a, b)

    core = _core.CoreModel(layers, flat(params), ISA)
    big = _core.CoreTape(core, B + 2, T + 3)
    seq = np.empty_like(want[0])
    core.forward_train(big, seq, None, None, x, None, None, LENGTHS, None, 1)
    grads = np.empty_like(want[3])
    core.backward(big, grads, None, None, None, x, dseq, None, None, 1)
    np.testing.assert_array_equal(seq, want[0])
    np.testing.assert_array_equal(grads, want[3])
