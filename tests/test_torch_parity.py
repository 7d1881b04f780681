"""PyTorch is the outside source: rnnext.from_torch's layer lists (float32, through Model: the
reference, the compiled core checked against it) and the NumPy reference (float64, PyTorch's own
parameter names) against torch.nn.RNN / LSTM / GRU (proj_size included) on the same weights, with
packed variable-length sequences and initial states."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import rnnext  # noqa: E402
from conftest import assert_f32_close, forward_imported, random_lengths, state_parts  # noqa: E402
from rnnext import layers as L  # noqa: E402
from rnnext import reference  # noqa: E402
from rnnext.convert import torch_layers  # noqa: E402

MODES = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
B, T, I, H = 5, 8, 4, 6


def torch_module(mode, num_layers, bidirectional, batch_first, bias=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.update(input_size=I, hidden_size=H, num_layers=num_layers, bias=bias,
                  bidirectional=bidirectional, batch_first=batch_first)
    if mode.startswith("rnn_"):
        return torch.nn.RNN(nonlinearity=mode[4:], **kwargs)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[mode](**kwargs)


def torch_forward(rnn, x, lengths=None, state=None):
    """The module on batch-first x (B, T, I) in the module's layout, packed when lengths are
    given. Returns batch-first numpy (y (B, T, D*H), h_n) or (y, (h_n, c_n))."""
    dtype = next(rnn.parameters()).dtype
    xt = torch.as_tensor(x, dtype=dtype)
    if not rnn.batch_first:
        xt = xt.transpose(0, 1)
    if lengths is not None:
        xt = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=rnn.batch_first,
                                  enforce_sorted=False)
    if state is not None:
        state = tuple(torch.as_tensor(p, dtype=dtype) for p in state_parts(state))
        state = state if len(state) == 2 else state[0]
    with torch.no_grad():
        out, s = rnn(xt, state)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=rnn.batch_first, total_length=x.shape[1])
    if not rnn.batch_first:
        out = out.transpose(0, 1)
    s = tuple(p.numpy() for p in s) if isinstance(s, tuple) else s.numpy()
    return out.numpy(), s


def random_inputs(rng, mode, num_layers, bidirectional, dtype=np.float32, proj_size=0):
    """x (B, T, I), mixed lengths, and an initial state."""
    LD = num_layers * (2 if bidirectional else 1)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((LD, B, proj_size or H))).astype(dtype)
    state = (h0, (0.5 * rng.standard_normal((LD, B, H))).astype(dtype)) if mode == "lstm" else h0
    return x, random_lengths(rng, "mixed", B, T), state


def assert_close(got, want, rtol, atol):
    (y1, s1), (y2, s2) = got, want
    np.testing.assert_allclose(y1, y2, rtol=rtol, atol=atol, err_msg="y")
    for name, a, b in zip(("h_n", "c_n"), state_parts(s1), state_parts(s2)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_from_torch_matches_torch(mode, num_layers, bidirectional, batch_first, rng):
    rnn = torch_module(mode, num_layers, bidirectional, batch_first)
    imported = torch_layers(rnn)
    assert len(imported[0]) == num_layers
    x, lengths, state = random_inputs(rng, mode, num_layers, bidirectional)
    got = forward_imported(imported, x, state=state, lengths=lengths)
    assert_close(got, torch_forward(rnn, x, lengths, state), 1e-4, 1e-5)
    assert not got[0][np.arange(T)[None, :] >= lengths[:, None]].any()
    assert_close(forward_imported(imported, x), torch_forward(rnn, x), 1e-4, 1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_from_torch_lstm_projections_match_torch(num_layers, bidirectional, rng):
    rnn = torch_module("lstm", num_layers, bidirectional, batch_first=True, proj_size=3)
    imported = torch_layers(rnn)
    assert imported[0][0] == L.LSTM(H, proj_size=3, direction="bidirectional" if bidirectional
                                    else "forward")
    x, lengths, state = random_inputs(rng, "lstm", num_layers, bidirectional, proj_size=3)
    assert_close(forward_imported(imported, x, state=state, lengths=lengths),
                 torch_forward(rnn, x, lengths, state), 1e-4, 1e-5)
    from_state_dict = torch_layers(rnn.state_dict(), cell="lstm")
    assert from_state_dict[0] == imported[0]
    for name, value in imported[2].items():
        np.testing.assert_array_equal(from_state_dict[2][name], value)


@pytest.mark.parametrize("mode", MODES)
def test_from_torch_without_bias(mode, rng):
    rnn = torch_module(mode, 2, True, batch_first=True, bias=False)
    x, lengths, state = random_inputs(rng, mode, 2, True)
    assert_close(forward_imported(torch_layers(rnn), x, state=state, lengths=lengths),
                 torch_forward(rnn, x, lengths, state), 1e-4, 1e-5)


ACTIVATIONS = {None: lambda z: z, "softmax": lambda z: torch.softmax(z, dim=-1),
               "sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


@pytest.mark.parametrize("head_bias", [True, False])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("output", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_from_torch_with_linear_head(bidirectional, output, activation, head_bias, rng):
    rnn = torch_module("lstm", 2, bidirectional, batch_first=True)
    head = torch.nn.Linear((2 if bidirectional else 1) * H, 3, bias=head_bias)
    imported = torch_layers(rnn, head, output=output, activation=activation)
    assert imported[0][2:] == ([L.Readout("last")] if output == "many_to_one" else []) + \
        [L.Dense(3, activation)]
    x, lengths, _ = random_inputs(rng, "lstm", 2, bidirectional)
    seq, _ = torch_forward(rnn, x, lengths)
    with torch.no_grad():
        z = ACTIVATIONS[activation](head(torch.from_numpy(seq))).numpy()
    valid = np.arange(T)[None, :] < lengths[:, None]
    y, _ = forward_imported(imported, x, lengths=lengths)
    if output == "many_to_one":
        assert_f32_close(y, z[np.arange(B), lengths - 1])
    else:
        assert_f32_close(y[valid], z[valid])
        assert not y[~valid].any()


def test_from_torch_state_dict_with_head_matches_the_module(rng):
    torch.manual_seed(1)
    net = torch.nn.ModuleDict({"rnn": torch.nn.GRU(I, H, num_layers=2, batch_first=True),
                               "fc": torch.nn.Linear(H, 2, bias=False)})
    imported = torch_layers(net.state_dict(), cell="gru", prefix="rnn.", head_prefix="fc.",
                            output="many_to_one", activation="softmax")
    x, lengths, _ = random_inputs(rng, "gru", 2, False)
    seq, _ = torch_forward(net["rnn"], x, lengths)
    with torch.no_grad():
        z = torch.softmax(net["fc"](torch.from_numpy(seq[np.arange(B), lengths - 1])), -1)
    assert_f32_close(forward_imported(imported, x, lengths=lengths)[0], z.numpy())


@pytest.mark.parametrize("mode", MODES)
def test_from_torch_builds_a_compiled_model(mode, rng):
    """The public function: torch_layers' list in a Model on the compiled core, against torch."""
    rnn = torch_module(mode, 2, True, batch_first=False)
    torch.manual_seed(2)
    head = torch.nn.Linear(2 * H, 3)
    model = rnnext.from_torch(rnn, head, output="many_to_one", activation="softmax")
    assert model.backend == "c"
    x, lengths, state = random_inputs(rng, mode, 2, True)
    seq, _ = torch_forward(rnn, x, lengths, state)
    with torch.no_grad():
        z = torch.softmax(head(torch.from_numpy(seq[np.arange(B), lengths - 1])), -1).numpy()
    y, s = model.forward(x, state=state, lengths=lengths)
    assert_f32_close(y, z)
    for got, want in zip(state_parts(s), state_parts(torch_forward(rnn, x, lengths, state)[1])):
        assert_f32_close(got, want)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_reference_float64_matches_torch(mode, num_layers, bidirectional, rng):
    """The oracle itself: reference.forward on the module's float64 parameters, by PyTorch's
    own names, agrees with PyTorch to 1e-10."""
    rnn = torch_module(mode, num_layers, bidirectional, batch_first=True).double()
    params = {name: p.detach().numpy() for name, p in rnn.named_parameters()}
    x, lengths, state = random_inputs(rng, mode, num_layers, bidirectional, np.float64)
    h0, c0 = (state if mode == "lstm" else (state, None))
    y, h_n, c_n = reference.forward(mode, params, x, num_layers, bidirectional, h0, c0, lengths)
    assert y.dtype == h_n.dtype == np.float64
    got = (y, (h_n, c_n) if mode == "lstm" else h_n)
    assert_close(got, torch_forward(rnn, x, lengths, state), 1e-10, 1e-10)


@pytest.mark.parametrize("head", [
    torch.nn.Sequential(torch.nn.Linear(H, 2)),
    torch.nn.Conv1d(H, 2, 1),
    torch.nn.Bilinear(H, H, 2),
], ids=["sequential", "conv1d", "bilinear"])
def test_from_torch_refuses_a_head_that_is_not_linear(head):
    with pytest.raises(TypeError, match=r"^head: .*" + type(head).__name__):
        rnnext.from_torch(torch.nn.GRU(I, H), head)


def test_from_torch_refuses_a_head_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"^head: .*12.*6"):
        rnnext.from_torch(torch.nn.GRU(I, H, bidirectional=True), torch.nn.Linear(H, 2))


def test_from_torch_refuses_other_modules():
    with pytest.raises(TypeError, match=r"^rnn: .*Linear"):
        rnnext.from_torch(torch.nn.Linear(I, H))


def test_from_torch_state_dict_errors_name_the_entry():
    state = torch.nn.LSTM(I, H, num_layers=2).state_dict()
    with pytest.raises(ValueError, match="cell: a state_dict needs its cell"):
        torch_layers(state)
    with pytest.raises(ValueError,
                       match=r"^state_dict: 'weight_hh_l0' expected shape \(24, 8\), got \(24, 6\)"):
        torch_layers(state, cell="gru")
    del state["weight_ih_l1"]
    with pytest.raises(ValueError, match=r"^state_dict: missing 'weight_ih_l1'"):
        torch_layers(state, cell="lstm")
    with pytest.raises(ValueError, match=r"^state_dict: 'lstm.weight_ih_l0' is not a parameter"):
        torch_layers({"lstm.weight_ih_l0": np.zeros((4, I))}, cell="rnn")
    with pytest.raises(ValueError, match=r"^output: expected one of"):
        torch_layers(torch.nn.GRU(I, H), output="last")
    with pytest.raises(ValueError, match=r"^activation: needs a head"):
        torch_layers(torch.nn.GRU(I, H), activation="relu")


def test_from_torch_state_dict_of_a_larger_module_hints_the_prefixes(rng):
    """A whole module's state_dict read without prefix: the error names the prefixes its keys
    carry, and with them the import matches the module."""
    torch.manual_seed(4)
    net = torch.nn.ModuleDict({"rnn": torch.nn.LSTM(I, H, batch_first=True),
                               "fc": torch.nn.Linear(H, 2)})
    hint = r"the keys look like a larger module's state_dict: pass prefix='rnn\.' and " \
           r"head_prefix='fc\.'$"
    with pytest.raises(ValueError, match=r"^state_dict: 'rnn.weight_ih_l0' is not a parameter "
                                         r"of torch.nn.RNN, LSTM or GRU; " + hint):
        torch_layers(net.state_dict(), cell="lstm")
    with pytest.raises(ValueError, match=r"^state_dict: expected lstm.weight_ih_l0 .*; " + hint):
        torch_layers(net.state_dict(), cell="lstm", prefix="lstm.")
    two = torch.nn.ModuleDict({"encoder": torch.nn.GRU(I, H), "decoder": torch.nn.GRU(H, H)})
    with pytest.raises(ValueError, match=r"pass prefix= one of \['encoder\.', 'decoder\.'\] "
                                         r"\(one recurrent module per call\)$"):
        torch_layers(two.state_dict(), cell="gru")
    imported = torch_layers(net.state_dict(), cell="lstm", prefix="rnn.", head_prefix="fc.")
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    with torch.no_grad():
        want = net["fc"](net["rnn"](torch.from_numpy(x))[0]).numpy()
    assert_f32_close(forward_imported(imported, x)[0], want)
