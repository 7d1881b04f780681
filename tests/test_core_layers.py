"""The C core's layer lists through the binding alone (rnnext._core.CoreModel from layer dicts),
against PyTorch: torch.nn.LSTM/GRU/RNN modules themselves for the stacks one module can be, and
for everything else a float64 step loop over torch's own cells (nn.LSTMCell, nn.GRUCell,
nn.RNNCell), nn.Embedding and torch.nn.functional's dense maths, with Keras' mask semantics
(a masked step keeps the state and outputs zeros) written out here."""
import numpy as np
import pytest

from rnnext import _core

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the layer-list tests "
                            "against it skipped")

ISAS = ["scalar", "avx2", "avx512"]
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
RTOL, ATOL = 1e-4, 2e-5


def supported(isa):
    if not _core.isa_supported(isa):
        pytest.skip(f"the {isa} kernels are not supported by this CPU/OS")


# ------------------------------------------------------------------------------------------------
# models: layer dicts (names for enums) and PyTorch-initialised flat parameters


def recurrent(cell, I, H, direction="forward", merge="concat"):
    return dict(kind="recurrent", cell=cell, input_size=I, units=H, direction=direction,
                merge=merge if direction == "bidirectional" else "concat")


def state(layer):
    return layer.get("proj_size") or layer["units"]


def width(layer):
    return 2 * state(layer) if (layer["direction"] == "bidirectional"
                                and layer["merge"] == "concat") else state(layer)


def stack(cell, I, sizes, direction="forward", merge="concat"):
    """Recurrent layers of hidden sizes `sizes`, each fed by the one below."""
    out = []
    for H in sizes:
        out.append(recurrent(cell, I, H, direction, merge))
        I = width(out[-1])
    return out


def param_shapes(layers):
    shapes, k, j = [], 0, 0
    for l in layers:
        if l["kind"] == "embedding":
            shapes.append(("embedding.weight", (l["input_size"], l["units"])))
        elif l["kind"] == "recurrent":
            G, H, I = GATES[l["cell"]], l["units"], l["input_size"]
            suffixes = {"forward": [""], "reverse": ["_reverse"],
                        "bidirectional": ["", "_reverse"]}[l["direction"]]
            for s in suffixes:
                shapes += [(f"weight_ih_l{k}{s}", (G * H, I)),
                           (f"weight_hh_l{k}{s}", (G * H, state(l))),
                           (f"bias_ih_l{k}{s}", (G * H,)), (f"bias_hh_l{k}{s}", (G * H,))]
                if l.get("proj_size"):
                    shapes.append((f"weight_hr_l{k}{s}", (l["proj_size"], H)))
                if l.get("peepholes"):
                    shapes.append((f"weight_peephole_l{k}{s}", (3, H)))
            k += 1
        elif l["kind"] == "dense":
            shapes += [(f"dense{j}.weight", (l["units"], l["input_size"])),
                       (f"dense{j}.bias", (l["units"],))]
            j += 1
    return shapes


def random_params(layers, rng):
    """Named float32 parameters as PyTorch initialises them: recurrent U(+-1/sqrt(H)), dense
    U(+-1/sqrt(F)), embedding N(0, 1)."""
    bound, k, j, params = {}, 0, 0, {}
    for l in layers:
        if l["kind"] == "recurrent":
            bound[f"_l{k}"] = 1 / np.sqrt(l["units"])
            k += 1
        elif l["kind"] == "dense":
            bound[f"dense{j}."] = 1 / np.sqrt(l["input_size"])
            j += 1
    for name, shape in param_shapes(layers):
        if name.startswith("embedding"):
            params[name] = rng.standard_normal(shape).astype(np.float32)
            continue
        b = next(v for key, v in bound.items()
                 if key in name and (key.startswith("dense") or name.split("_l")[1].split("_")[0]
                                     == key[2:]))
        params[name] = rng.uniform(-b, b, shape).astype(np.float32)
    return params


def flat(params):
    return np.concatenate([p.ravel() for p in params.values()]).astype(np.float32)


def core(layers, params, isa="avx512"):
    supported(isa)
    return _core.CoreModel(layers, flat(params), isa)


# ------------------------------------------------------------------------------------------------
# the reference: float64 torch cells, Keras masks


DEFAULT_ACTS = {"lstm": ["sigmoid", "tanh", "tanh"], "gru": ["sigmoid", "tanh"],
                "rnn_tanh": ["tanh"], "rnn_relu": ["relu"]}
OPTIONS = ("proj_size", "peepholes", "input_forget", "clip", "activations")


def torch_act(name, x, a, b):
    return {"linear": lambda: x, "sigmoid": lambda: torch.sigmoid(x),
            "tanh": lambda: torch.tanh(x), "relu": lambda: torch.relu(x),
            "hard_sigmoid": lambda: torch.clamp(a * x + b, 0.0, 1.0),
            "affine": lambda: a * x + b, "leaky_relu": lambda: torch.where(x >= 0, x, a * x),
            "thresholded_relu": lambda: torch.where(x > a, x, torch.zeros_like(x)),
            "scaled_tanh": lambda: a * torch.tanh(b * x),
            "elu": lambda: torch.where(x >= 0, x, a * torch.expm1(x)),
            "softsign": lambda: x / (1 + torch.abs(x)),
            "softplus": lambda: torch.nn.functional.softplus(x)}[name]()


def option_cell(layer, params, k, suffix):
    """A cell with LAYERS.md's options (ONNX's clip, peepholes, input_forget, activations with
    alpha/beta; PyTorch's proj_size) in float64 torch: (x, (h, c)) -> (h', c') for the LSTM,
    (x, h) -> h' otherwise, as torch's cells."""
    cell, H = layer["cell"], layer["units"]
    p = {n: torch.from_numpy(params[f"{n}_l{k}{suffix}"]).double()
         for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_peephole")
         if f"{n}_l{k}{suffix}" in params}
    names = list(layer.get("activations") or DEFAULT_ACTS[cell])
    alpha = list(layer.get("alpha") or [0, 0, 0])
    beta = list(layer.get("beta") or [0, 0, 0])
    clip = layer.get("clip") or 0.0

    def f(j, v):
        if clip:
            v = torch.clamp(v, -clip, clip)
        return torch_act(names[j], v, alpha[j], beta[j])

    def lstm(x, state):
        h, c = state
        a = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
        ai, af, ag, ao = a.split(H, -1)
        peep = p.get("weight_peephole")
        if peep is not None:
            ai, af = ai + peep[0] * c, af + peep[1] * c
        i = f(0, ai)
        fg = 1 - i if layer.get("input_forget") else f(0, af)
        c_new = fg * c + i * f(1, ag)
        if peep is not None:
            ao = ao + peep[2] * c_new
        h_new = f(0, ao) * torch_act(names[2], c_new, alpha[2], beta[2])
        if "weight_hr" in p:
            h_new = h_new @ p["weight_hr"].T
        return h_new, c_new

    def gru(x, h):
        xp = x @ p["weight_ih"].T + p["bias_ih"]
        hh = h @ p["weight_hh"].T + p["bias_hh"]
        r = f(0, xp[:, :H] + hh[:, :H])
        z = f(0, xp[:, H:2 * H] + hh[:, H:2 * H])
        n = f(1, xp[:, 2 * H:] + r * hh[:, 2 * H:])
        return (1 - z) * n + z * h

    def rnn(x, h):
        return f(0, x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"])

    return {"lstm": lstm, "gru": gru}.get(cell, rnn)


def torch_cell(layer, params, k, suffix):
    if any(layer.get(o) for o in OPTIONS):
        return option_cell(layer, params, k, suffix)
    I, H, cell = layer["input_size"], layer["units"], layer["cell"]
    if cell == "lstm":
        mod = torch.nn.LSTMCell(I, H)
    elif cell == "gru":
        mod = torch.nn.GRUCell(I, H)
    else:
        mod = torch.nn.RNNCell(I, H, nonlinearity=cell[4:])
    mod = mod.double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(mod, name).copy_(torch.from_numpy(params[f"{name}_l{k}{suffix}"]))
    return mod


def merge(a, b, mode):
    return {"concat": lambda: torch.cat([a, b], -1), "sum": lambda: a + b,
            "mul": lambda: a * b, "ave": lambda: (a + b) / 2}[mode]()


def reference(layers, params, inputs, mask, h0=None, c0=None):
    """(y, h_n, c_n) in float64 numpy: states flat as the core's (per layer and direction,
    (B, S) blocks)."""
    with torch.no_grad():
        i = 0
        if layers[0]["kind"] == "embedding":
            emb = torch.nn.Embedding(layers[0]["input_size"], layers[0]["units"]).double()
            emb.weight.copy_(torch.from_numpy(params["embedding.weight"]))
            ids = torch.from_numpy(inputs.astype(np.int64))
            seq = emb(ids)
            if layers[0].get("mask_zero"):
                mask = mask & (inputs != 0)
            i = 1
        else:
            seq = torch.from_numpy(inputs.astype(np.float64))
        B, T = seq.shape[:2]
        m = torch.from_numpy(mask)
        h_n, c_n, k, hoff, coff = [], [], 0, 0, 0
        finals = None
        while i < len(layers) and layers[i]["kind"] == "recurrent":
            l = layers[i]
            H, S = l["units"], state(l)
            dirs = {"forward": [(0, "")], "reverse": [(1, "_reverse")],
                    "bidirectional": [(0, ""), (1, "_reverse")]}[l["direction"]]
            outs, finals = [], []
            for d, suffix in dirs:
                cell = torch_cell(l, params, k, suffix)
                h = torch.zeros(B, S, dtype=torch.float64)
                c = torch.zeros(B, H, dtype=torch.float64)
                if h0 is not None:
                    h = torch.from_numpy(h0[hoff:hoff + B * S].reshape(B, S).astype(np.float64))
                if c0 is not None and l["cell"] == "lstm":
                    c = torch.from_numpy(c0[coff:coff + B * H].reshape(B, H).astype(np.float64))
                hoff += B * S
                coff += B * H if l["cell"] == "lstm" else 0
                out = torch.zeros(B, T, S, dtype=torch.float64)
                for t in (reversed(range(T)) if d else range(T)):
                    if l["cell"] == "lstm":
                        hn, cn = cell(seq[:, t], (h, c))
                        c = torch.where(m[:, t, None], cn, c)
                    else:
                        hn = cell(seq[:, t], h)
                    h = torch.where(m[:, t, None], hn, h)
                    out[:, t] = torch.where(m[:, t, None], hn, torch.zeros_like(hn))
                outs.append(out)
                finals.append(h)
                h_n.append(h.reshape(-1))
                if l["cell"] == "lstm":
                    c_n.append(c.reshape(-1))
            seq = merge(outs[0], outs[1], l["merge"]) if len(outs) == 2 else outs[0]
            if len(finals) == 2:
                finals = [merge(finals[0], finals[1], l["merge"])]
            k += 1
            i += 1
        mode = "sequence"
        if i < len(layers) and layers[i]["kind"] == "readout":
            mode = layers[i]["readout"]
            i += 1
        mf = m[:, :, None].double()
        count = m.sum(1)[:, None].double()
        if mode == "sequence":
            z = seq
        elif mode == "last":
            z = torch.zeros(B, seq.shape[2], dtype=torch.float64)
            for b in range(B):
                valid = torch.nonzero(m[b]).flatten()
                if len(valid):
                    z[b] = seq[b, valid[-1]]
        elif mode == "final":
            z = finals[0]
        elif mode == "mean":
            z = torch.where(count > 0, (seq * mf).sum(1) / count.clamp(min=1), 0.0)
        else:
            z = torch.where(m[:, :, None], seq, -torch.inf).amax(1)
            z = torch.where(count > 0, z, 0.0)
        j = 0
        for l in layers[i:]:
            z = torch.nn.functional.linear(z, torch.from_numpy(params[f"dense{j}.weight"]).double(),
                                           torch.from_numpy(params[f"dense{j}.bias"]).double())
            act = l.get("activation", "linear")
            if act == "softmax":
                z = torch.softmax(z, -1)
            elif act != "linear":
                z = getattr(torch, act)(z)
            j += 1
        if mode == "sequence":
            z = z * mf
        cat = lambda parts: torch.cat(parts).numpy() if parts else np.zeros(0)
        return z.numpy(), cat(h_n), cat(c_n)


def run(model, inputs, mask=None, lengths=None, h0=None, c0=None, n_threads=1):
    info = model.info
    B, T = inputs.shape[:2]
    y = np.full((B, T, info["output_size"]) if info["per_step"] else (B, info["output_size"]),
                np.nan, np.float32)
    h_n = np.full(B * info["state_size"], np.nan, np.float32)
    c_n = np.full(B * info["cell_size"], np.nan, np.float32)
    ids = inputs if info["takes_ids"] else None
    x = None if info["takes_ids"] else inputs
    model.forward(y, h_n, c_n, x, ids, h0, c0, lengths, mask, n_threads)
    return y, h_n, c_n


def effective_mask(B, T, mask=None, lengths=None):
    if mask is not None:
        return mask.astype(bool)
    if lengths is not None:
        return np.arange(T)[None, :] < lengths[:, None]
    return np.ones((B, T), bool)


def check(layers, params, inputs, mask=None, lengths=None, h0=None, c0=None, isa="avx512",
          threads=(1, 2, 3)):
    """The core on every thread count (bitwise the same) against the reference."""
    model = core(layers, params, isa)
    B, T = inputs.shape[:2]
    results = [run(model, inputs, mask, lengths, h0, c0, n) for n in threads]
    for n, r in zip(threads[1:], results[1:]):
        for a, b in zip(results[0], r):
            np.testing.assert_array_equal(a, b, err_msg=f"{n} threads differ from 1")
    y_ref, h_ref, c_ref = reference(layers, params, inputs, effective_mask(B, T, mask, lengths),
                                    h0, c0)
    y, h_n, c_n = results[0]
    np.testing.assert_allclose(y, y_ref, RTOL, ATOL, err_msg="y")
    np.testing.assert_allclose(h_n, h_ref, RTOL, ATOL, err_msg="h_n")
    np.testing.assert_allclose(c_n, c_ref, RTOL, ATOL, err_msg="c_n")
    return model, results[0]


def random_mask(rng, B, T):
    mask = rng.random((B, T)) < 0.7
    mask[0] = True
    if B > 1:
        mask[-1] = False  # a sequence without a valid step
    return mask


# ------------------------------------------------------------------------------------------------
# against torch's modules: uniform stacks, lengths through packed sequences


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_uniform_stack_matches_torch_module(cell, isa, rng):
    I, H, L, B, T = 5, 19, 2, 6, 9
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell, torch.nn.RNN)
    kw = {"nonlinearity": cell[4:]} if cell.startswith("rnn") else {}
    torch.manual_seed(0)
    mod = cls(I, H, num_layers=L, bidirectional=True, batch_first=True, **kw)
    layers = stack(cell, I, [H] * L, "bidirectional")
    params = {n: p.detach().numpy().copy() for n, p in mod.named_parameters()}
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B).astype(np.int32)
    lengths[0] = T
    h0 = rng.standard_normal((2 * L, B, H)).astype(np.float32)
    c0 = rng.standard_normal((2 * L, B, H)).astype(np.float32)
    model = core(layers, params, isa)
    y, h_n, c_n = run(model, x, lengths=lengths, h0=h0.ravel(), c0=c0.ravel() if cell == "lstm"
                      else None)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), lengths, True, False)
    state = (torch.from_numpy(h0), torch.from_numpy(c0)) if cell == "lstm" else torch.from_numpy(h0)
    with torch.no_grad():
        out, st = mod(packed, state)
    y_t = torch.nn.utils.rnn.pad_packed_sequence(out, True, total_length=T)[0].numpy()
    h_t = (st[0] if cell == "lstm" else st).numpy()
    np.testing.assert_allclose(y, y_t, RTOL, ATOL)
    np.testing.assert_allclose(h_n, h_t.ravel(), RTOL, ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(c_n, st[1].numpy().ravel(), RTOL, ATOL)


# ------------------------------------------------------------------------------------------------
# layer lists against the torch-cell reference, every ISA, 1/2/3 threads bitwise equal


@pytest.mark.parametrize("isa", ISAS)
def test_different_sizes_per_layer_all_forward(isa, rng):
    layers = [recurrent("lstm", 4, 9), recurrent("gru", 9, 33), recurrent("rnn_tanh", 33, 6)]
    params = random_params(layers, rng)
    x = rng.standard_normal((7, 150, 4)).astype(np.float32)  # several chunks
    lengths = rng.integers(1, 151, 7).astype(np.int32)
    S = 9 + 33 + 6
    h0 = (0.5 * rng.standard_normal(7 * S)).astype(np.float32)
    c0 = (0.5 * rng.standard_normal(7 * 9)).astype(np.float32)
    model, _ = check(layers, params, x, lengths=lengths, h0=h0, c0=c0, isa=isa)
    assert model.info["state_size"] == S and model.info["cell_size"] == 9


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_merges(merge_mode, isa, rng):
    layers = [recurrent("gru", 3, 11, "bidirectional", merge_mode),
              recurrent("lstm", 22 if merge_mode == "concat" else 11, 7, "bidirectional",
                        merge_mode)]
    params = random_params(layers, rng)
    x = rng.standard_normal((5, 12, 3)).astype(np.float32)
    check(layers, params, x, lengths=np.array([12, 3, 1, 7, 12], np.int32), isa=isa)


@pytest.mark.parametrize("isa", ISAS)
def test_reverse_only_layer_is_a_flipped_forward_layer(isa, rng):
    layers = [recurrent("lstm", 4, 10, "reverse"), recurrent("rnn_relu", 10, 5)]
    params = random_params(layers, rng)
    B, T = 4, 11
    x = rng.standard_normal((B, T, 4)).astype(np.float32)
    lengths = np.array([11, 5, 1, 8], np.int32)
    check(layers, params, x, lengths=lengths, isa=isa)
    # with torch's module: a reverse-only layer over each sequence is nn.LSTM over its valid
    # steps flipped, outputs flipped back
    mod = torch.nn.LSTM(4, 10, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(mod, name + "_l0").copy_(torch.from_numpy(params[name + "_l0_reverse"]))
    model = core(layers[:1], {k: v for k, v in params.items() if k.endswith("l0_reverse")}, isa)
    y, h_n, _ = run(model, x, lengths=lengths)
    for b in range(B):
        n = lengths[b]
        with torch.no_grad():
            out, (h, _) = mod(torch.from_numpy(x[b:b + 1, :n][:, ::-1].copy()))
        np.testing.assert_allclose(y[b, :n], out[0].numpy()[::-1], RTOL, ATOL)
        np.testing.assert_allclose(y[b, n:], 0.0)
        np.testing.assert_allclose(h_n[b * 10:(b + 1) * 10], h[0, 0].numpy(), RTOL, ATOL)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("mode", ["sequence", "last", "final", "mean", "max"])
def test_readouts_and_dense_chains(mode, isa, rng):
    layers = [recurrent("gru", 3, 8), recurrent("lstm", 8, 6, "bidirectional", "concat"),
              dict(kind="readout", readout=mode), dict(kind="dense", input_size=12, units=9,
                                                      activation="relu"),
              dict(kind="dense", input_size=9, units=5, activation="tanh"),
              dict(kind="dense", input_size=5, units=4, activation="softmax")]
    params = random_params(layers, rng)
    x = rng.standard_normal((6, 10, 3)).astype(np.float32)
    model, (y, _, _) = check(layers, params, x, mask=random_mask(rng, 6, 10), isa=isa)
    assert model.info["per_step"] == (mode == "sequence") and model.info["output_size"] == 4


@pytest.mark.parametrize("mode", ["last", "mean", "max", "final"])
def test_readouts_without_dense_and_sigmoid_head(mode, rng):
    for top in ("forward", "bidirectional"):
        layers = [recurrent("rnn_tanh", 2, 7, top, "sum"), dict(kind="readout", readout=mode)]
        params = random_params(layers, rng)
        x = rng.standard_normal((4, 9, 2)).astype(np.float32)
        check(layers, params, x, lengths=np.array([9, 1, 4, 6], np.int32))
        layers.append(dict(kind="dense", input_size=7, units=1, activation="sigmoid"))
        params = random_params(layers, rng)
        check(layers, params, x, mask=random_mask(rng, 4, 9))


@pytest.mark.parametrize("isa", ISAS)
def test_masks_keep_states_in_both_directions(isa, rng):
    layers = [recurrent("lstm", 3, 6, "bidirectional", "ave"), recurrent("gru", 6, 5, "reverse")]
    params = random_params(layers, rng)
    B, T = 5, 13
    x = rng.standard_normal((B, T, 3)).astype(np.float32)
    mask = random_mask(rng, B, T)
    mask[1, :4] = False  # pre-padded
    check(layers, params, x, mask=mask, isa=isa)


@pytest.mark.parametrize("isa", ISAS)
def test_embedding_with_mask_zero_and_lengths(isa, rng):
    layers = [dict(kind="embedding", input_size=30, units=6, mask_zero=1),
              recurrent("lstm", 6, 10), recurrent("gru", 10, 4, "bidirectional"),
              dict(kind="readout", readout="mean"), dict(kind="dense", input_size=8, units=3)]
    params = random_params(layers, rng)
    ids = rng.integers(0, 30, (6, 14)).astype(np.int32)
    lengths = rng.integers(1, 15, 6).astype(np.int32)
    model, _ = check(layers, params, ids, lengths=lengths, isa=isa)
    assert model.info["takes_ids"] and model.info["folded"]
    # mask_zero and lengths combine: the effective mask the reference used
    assert model.info["input_size"] == 30


def test_folded_embedding_is_bitwise_the_lookup_and_product(rng):
    """The fold precomputes each token's input projection with the kernels' own product."""
    for isa in ISAS:
        if not _core.isa_supported(isa):
            continue
        emb = [dict(kind="embedding", input_size=50, units=7)]
        body = [recurrent("gru", 7, 20, "bidirectional"), recurrent("lstm", 40, 9)]
        params = random_params(emb + body, rng)
        folded = core(emb + body, params, isa)
        plain = core(body, {k: v for k, v in params.items() if k != "embedding.weight"}, isa)
        assert folded.info["folded"] and not plain.info["folded"]
        ids = rng.integers(0, 50, (3, 17)).astype(np.int32)
        x = params["embedding.weight"][ids]
        for a, b in zip(run(folded, ids), run(plain, x)):
            np.testing.assert_array_equal(a, b)


def test_embedding_over_the_fold_bound_looks_up_rows(rng):
    # V * G*H * D = 200000 * 48 * 2 floats: over the 2^24 bound, so no fold
    layers = [dict(kind="embedding", input_size=200000, units=2), recurrent("gru", 2, 16,
                                                                            "bidirectional")]
    params = random_params(layers, rng)
    ids = rng.integers(0, 200000, (3, 6)).astype(np.int32)
    model, _ = check(layers, params, ids)
    assert not model.info["folded"]


def test_team_path_with_merges_and_readouts(rng):
    """B < 2 * threads: a team splits each step's panels; rows of merges and readouts split."""
    layers = [recurrent("lstm", 5, 130, "bidirectional", "sum"), recurrent("gru", 130, 140),
              dict(kind="readout", readout="max"), dict(kind="dense", input_size=140, units=3,
                                                       activation="softmax")]
    params = random_params(layers, rng)
    for B in (1, 2):
        x = rng.standard_normal((B, 20, 5)).astype(np.float32)
        check(layers, params, x, mask=random_mask(rng, B, 20))
    seq = [recurrent("rnn_tanh", 5, 300), recurrent("lstm", 300, 70),
           dict(kind="dense", input_size=70, units=6)]
    params = random_params(seq, rng)
    x = rng.standard_normal((2, 70, 5)).astype(np.float32)
    check(seq, params, x, lengths=np.array([70, 33], np.int32))


# ------------------------------------------------------------------------------------------------
# streams


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("mode", ["sequence", "last", "final"])
def test_stream_steps_equal_forward(mode, isa, rng):
    layers = [dict(kind="embedding", input_size=20, units=5), recurrent("lstm", 5, 12),
              recurrent("gru", 12, 7), dict(kind="readout", readout=mode),
              dict(kind="dense", input_size=7, units=4, activation="tanh")]
    params = random_params(layers, rng)
    model = core(layers, params, isa)
    assert model.info["streamable"]
    B, T = 3, 9
    ids = rng.integers(0, 20, (B, T)).astype(np.int32)
    S, C = model.info["state_size"], model.info["cell_size"]
    h0 = (0.3 * rng.standard_normal(B * S)).astype(np.float32)
    c0 = (0.3 * rng.standard_normal(B * C)).astype(np.float32)
    y, h_n, c_n = run(model, ids, h0=h0, c0=c0)
    stream = model.stream(B)
    stream.reset(h0, c0)
    steps = [stream.step(np.ascontiguousarray(ids[:, t])) for t in range(T)]
    if mode == "sequence":
        np.testing.assert_array_equal(np.stack(steps, 1), y)
    else:
        np.testing.assert_array_equal(steps[-1], y)
    h, c = stream.state()
    np.testing.assert_array_equal(h, h_n)
    np.testing.assert_array_equal(c, c_n)
    stream.reset()
    np.testing.assert_array_equal(stream.state()[0], 0.0)


def test_stream_of_float_inputs_without_dense(rng):
    layers = [recurrent("rnn_relu", 3, 17), recurrent("lstm", 17, 5)]
    params = random_params(layers, rng)
    model = core(layers, params, "avx512")
    x = rng.standard_normal((1, 6, 3)).astype(np.float32)
    y, _, _ = run(model, x)
    stream = model.stream(1)
    np.testing.assert_array_equal(np.stack([stream.step(x[0, t]) for t in range(6)]), y[0])


def test_streams_refuse_what_needs_the_future_and_bad_steps(rng):
    for layers in ([recurrent("gru", 3, 4, "bidirectional")], [recurrent("gru", 3, 4, "reverse")],
                   [recurrent("gru", 3, 4), dict(kind="readout", readout="mean")]):
        model = core(layers, random_params(layers, rng))
        assert not model.info["streamable"]
        with pytest.raises(ValueError, match="status 2"):
            model.stream(1)
    layers = [dict(kind="embedding", input_size=10, units=3), recurrent("gru", 3, 4)]
    stream = core(layers, random_params(layers, rng)).stream(2)
    with pytest.raises(ValueError, match=r"^x: .*out of range \(rnnext status"):
        stream.step(np.array([1, 10], np.int32))
    # a retired model's stream moves to current()'s, which must have the same layers and sizes
    other = [dict(kind="embedding", input_size=10, units=3), recurrent("gru", 3, 5)]
    moving = core(layers, random_params(layers, rng)).stream(
        2, None, lambda: core(other, random_params(other, rng)))
    moving.model.retire()
    with pytest.raises(ValueError, match=r"^current: expected a model of the stream's layers"):
        moving.step(np.array([1, 2], np.int32))
    # without a check_x (Model.stream's), only the core's form goes in
    for bad in (np.array([1, 2]), np.array([1, 2, 3], np.int32), np.arange(4, dtype=np.int32)[::2]):
        with pytest.raises(TypeError, match=r"^x: expected a C-contiguous, aligned int32 .*\(2,\), got"):
            stream.step(bad)


# ------------------------------------------------------------------------------------------------
# validation and statuses


def test_ids_out_of_range_refused_before_any_work(rng):
    layers = [dict(kind="embedding", input_size=10, units=3), recurrent("gru", 3, 4)]
    model = core(layers, random_params(layers, rng))
    for bad in (10, -1):
        ids = np.zeros((2, 5), np.int32)
        ids[1, 4] = bad
        y = np.full((2, 5, 4), 7.0, np.float32)
        with pytest.raises(ValueError, match="ids"):
            model.forward(y, None, None, None, ids, None, None, np.array([5, 3], np.int32), None,
                          1)
        np.testing.assert_array_equal(y, 7.0)  # nothing written


def test_forward_argument_errors(rng):
    layers = [recurrent("lstm", 3, 4)]
    model = core(layers, random_params(layers, rng))
    x = np.zeros((2, 5, 3), np.float32)
    y = np.zeros((2, 5, 4), np.float32)
    with pytest.raises(ValueError, match="not both"):
        model.forward(y, None, None, x, None, None, None, np.array([5, 5], np.int32),
                      np.ones((2, 5), bool), 1)
    with pytest.raises(ValueError, match="lengths"):
        model.forward(y, None, None, x, None, None, None, np.array([0, 5], np.int32), None, 1)
    with pytest.raises(ValueError, match="y: expected shape"):
        model.forward(np.zeros((2, 4), np.float32), None, None, x, None, None, None, None, None,
                      1)
    with pytest.raises(ValueError, match="h0: expected shape"):
        model.forward(y, None, None, x, None, np.zeros((1, 2, 4), np.float32), None, None, None,
                      1)
    with pytest.raises(ValueError, match="ids: expected None"):
        model.forward(y, None, None, x, np.zeros((2, 5), np.int32), None, None, None, None, 1)
    with pytest.raises(TypeError, match="x"):
        model.forward(y, None, None, x.astype(np.float64), None, None, None, None, None, 1)


BAD_LISTS = [
    [],  # no layers
    [dict(kind="readout")],  # no recurrent layer
    [dict(kind="dense", input_size=3, units=2)],
    [recurrent("lstm", 3, 4), recurrent("gru", 5, 4)],  # width mismatch
    [recurrent("lstm", 3, 4), dict(kind="embedding", input_size=5, units=3)],  # order
    [recurrent("lstm", 3, 4), dict(kind="dense", input_size=4, units=2), dict(kind="readout")],
    [recurrent("lstm", 3, 4), dict(kind="readout"), dict(kind="readout")],
    [recurrent("lstm", 3, 4), dict(kind="dense", input_size=5, units=2)],
    [dict(recurrent("lstm", 3, 4), cell=9)],
    [dict(recurrent("lstm", 3, 4), units=0)],
    [dict(recurrent("lstm", 3, 4), units=_core.MAX_SIZE + 1)],
    [dict(recurrent("lstm", 3, 4), direction=3)],
    [dict(recurrent("lstm", 3, 4), merge="sum")],  # merge without bidirectional
    [dict(recurrent("lstm", 3, 4), proj_size=4)],  # proj_size must be < H
    [dict(recurrent("gru", 3, 4), peepholes=1)],  # LSTM only
    [dict(recurrent("lstm", 3, 4), peepholes=2)],
    [dict(recurrent("lstm", 3, 4), clip=-1.0)],
    [dict(recurrent("lstm", 3, 4), clip=float("nan"))],
    [dict(recurrent("lstm", 3, 4), mask_zero=1)],  # an embedding's field
    [dict(recurrent("rnn_tanh", 3, 4), activations=["tanh", "sigmoid"])],  # unused slot set
    [dict(recurrent("lstm", 3, 4), activations=["sigmoid", "tanh", "softmax"])],
    [dict(recurrent("lstm", 3, 4), alpha=[0.5, 0, 0])],  # sigmoid takes no alpha
    [dict(kind="embedding", input_size=5, units=3, padding_idx=5), recurrent("lstm", 3, 4)],
    [dict(kind="embedding", input_size=5, units=3, readout=1), recurrent("lstm", 3, 4)],
    [recurrent("lstm", 3, 4), dict(kind="readout", readout=5)],
    [recurrent("lstm", 3, 4), dict(kind="readout", units=1)],
    [recurrent("lstm", 3, 4), dict(kind="dense", input_size=4, units=2, activation="elu")],
    [recurrent("lstm", 3, 4), dict(kind="dense", input_size=4, units=2, cell=2)],
    [dict(kind=7)],
]


@pytest.mark.parametrize("layers", BAD_LISTS, ids=range(len(BAD_LISTS)))
def test_invalid_lists_are_refused(layers):
    with pytest.raises(ValueError):
        _core.param_count(layers)


# ------------------------------------------------------------------------------------------------
# layers on the plain path (general.c): options the packed kernels lack, within whole models


@pytest.mark.parametrize("isa", ISAS)
def test_proj_size_matches_torch_module(isa, rng):
    I, H, P, L, B, T = 4, 9, 3, 2, 5, 8
    torch.manual_seed(1)
    mod = torch.nn.LSTM(I, H, num_layers=L, bidirectional=True, batch_first=True, proj_size=P)
    layers = [dict(recurrent("lstm", I if k == 0 else 2 * P, H, "bidirectional"), proj_size=P)
              for k in range(L)]
    params = {n: p.detach().numpy().copy() for n, p in mod.named_parameters()}
    assert [n for n, _ in param_shapes(layers)] == list(params)
    model = core(layers, params, isa)
    assert model.info["state_size"] == 2 * L * P and model.info["cell_size"] == 2 * L * H
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([8, 2, 5, 1, 8], np.int32)
    h0 = rng.standard_normal((2 * L, B, P)).astype(np.float32)
    c0 = rng.standard_normal((2 * L, B, H)).astype(np.float32)
    y, h_n, c_n = run(model, x, lengths=lengths, h0=h0.ravel(), c0=c0.ravel())
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), lengths, True, False)
    with torch.no_grad():
        out, (h_t, c_t) = mod(packed, (torch.from_numpy(h0), torch.from_numpy(c0)))
    y_t = torch.nn.utils.rnn.pad_packed_sequence(out, True, total_length=T)[0].numpy()
    np.testing.assert_allclose(y, y_t, RTOL, ATOL)
    np.testing.assert_allclose(h_n, h_t.numpy().ravel(), RTOL, ATOL)
    np.testing.assert_allclose(c_n, c_t.numpy().ravel(), RTOL, ATOL)


def test_options_match_onnxruntime_bidirectional_lstm(rng):
    """Peepholes, input_forget, clip and other activations: ONNX Runtime's LSTM op."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    I, H, B, T = 3, 6, 4, 7
    layer = dict(recurrent("lstm", I, H, "bidirectional"), peepholes=1, input_forget=1,
                 clip=1.5, activations=["hard_sigmoid", "scaled_tanh", "softsign"],
                 alpha=[0.3, 0.8, 0], beta=[0.4, 1.2, 0])
    params = random_params([layer], rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([7, 3, 1, 5], np.int32)
    y, h_n, c_n = run(core([layer], params), x, lengths=lengths)

    def gates(w):  # PyTorch's i, f, g, o -> ONNX's i, o, f, c
        return np.concatenate([w[k * H:(k + 1) * H] for k in (0, 3, 1, 2)])

    sfx = ["", "_reverse"]
    W = np.stack([gates(params[f"weight_ih_l0{s}"]) for s in sfx])
    R = np.stack([gates(params[f"weight_hh_l0{s}"]) for s in sfx])
    Bias = np.stack([np.concatenate([gates(params[f"bias_ih_l0{s}"]),
                                     gates(params[f"bias_hh_l0{s}"])]) for s in sfx])
    Peep = np.stack([params[f"weight_peephole_l0{s}"][[0, 2, 1]].ravel() for s in sfx])
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "L", "", "", "P"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H, direction="bidirectional", input_forget=1, clip=1.5,
                            activations=["HardSigmoid", "ScaledTanh", "Softsign"] * 2,
                            activation_alpha=[0.3, 0.8] * 2, activation_beta=[0.4, 1.2] * 2)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, v.shape, v.astype(np.float32).ravel())
             for n, v in (("W", W), ("R", R), ("B", Bias), ("P", Peep))]
    graph = helper.make_graph([node], "g", [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I]),
        helper.make_tensor_value_info("L", TensorProto.INT32, [B])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
        inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    sess = ort.InferenceSession(onnx_model.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    Y, Y_h, Y_c = sess.run(None, {"X": np.ascontiguousarray(x.transpose(1, 0, 2)), "L": lengths})
    np.testing.assert_allclose(y, Y.transpose(2, 0, 1, 3).reshape(B, T, 2 * H), RTOL, ATOL)
    np.testing.assert_allclose(h_n, Y_h.ravel(), RTOL, ATOL)
    np.testing.assert_allclose(c_n, Y_c.ravel(), RTOL, ATOL)


@pytest.mark.parametrize("isa", ISAS)
def test_plain_and_packed_layers_mixed_with_masks_and_heads(isa, rng):
    layers = [dict(kind="embedding", input_size=12, units=4, mask_zero=1),
              dict(recurrent("gru", 4, 7, "bidirectional", "sum"), clip=2.0),
              recurrent("lstm", 7, 8),
              dict(recurrent("lstm", 8, 6, "reverse"), peepholes=1, proj_size=3),
              dict(recurrent("rnn_tanh", 3, 5), activations=["leaky_relu"], alpha=[0.1, 0, 0]),
              dict(kind="readout", readout="mean"),
              dict(kind="dense", input_size=5, units=3, activation="softmax")]
    params = random_params(layers, rng)
    ids = rng.integers(0, 12, (5, 9)).astype(np.int32)
    model, _ = check(layers, params, ids, mask=random_mask(rng, 5, 9), isa=isa)
    assert not model.info["folded"]  # the first recurrent layer runs the plain path
    stream_layers = [layers[0], dict(layers[2], input_size=4), dict(layers[4], input_size=8),
                     dict(kind="dense", input_size=5, units=2)]
    params = random_params(stream_layers, rng)
    model, (y, _, _) = check(stream_layers, params, ids, isa=isa)
    stream = model.stream(5)
    steps = [stream.step(np.ascontiguousarray(ids[:, t])) for t in range(9)]
    np.testing.assert_array_equal(np.stack(steps, 1), y)


def test_param_count_and_info_and_layers_round_trip(rng):
    layers = [dict(kind="embedding", input_size=11, units=3),
              recurrent("lstm", 3, 5, "bidirectional"), recurrent("rnn_tanh", 10, 2, "reverse"),
              dict(kind="readout", readout="last"), dict(kind="dense", input_size=2, units=6)]
    n = _core.param_count(layers)
    assert n == sum(int(np.prod(s)) for _, s in param_shapes(layers))
    model = core(layers, random_params(layers, rng))
    info = model.info
    assert info["recurrent_param_offset"] == 33
    assert info["recurrent_param_count"] == 2 * 20 * (3 + 5 + 2) + 2 * (10 + 2 + 2)
    assert (info["state_size"], info["cell_size"], info["n_recurrent"]) == (12, 10, 2)
    assert info["output_size"] == 6 and not info["per_step"] and not info["streamable"]
    got = model.layers
    assert [l["kind"] for l in got] == [0, 1, 1, 2, 3]
    assert got[1]["activations"] == [_core.ACTS["sigmoid"], _core.ACTS["tanh"], _core.ACTS["tanh"]]
    assert got[0]["padding_idx"] == -1
    with pytest.raises(ValueError, match="params"):
        _core.CoreModel(layers, np.zeros(n - 1, np.float32))
