"""PyTorch is the outside source: rnnext.from_torch (compiled, float32) and the NumPy reference
(float64, PyTorch's own parameter names) against torch.nn.RNN / LSTM / GRU on the same weights,
with packed variable-length sequences and initial states."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import rnnext  # noqa: E402
from conftest import assert_f32_close, random_lengths, state_parts  # noqa: E402
from rnnext import reference  # noqa: E402

MODES = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
B, T, I, H = 5, 8, 4, 6


def torch_module(mode, num_layers, bidirectional, batch_first, bias=True, seed=0):
    torch.manual_seed(seed)
    kwargs = dict(input_size=I, hidden_size=H, num_layers=num_layers, bias=bias,
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


def random_inputs(rng, mode, num_layers, bidirectional, dtype=np.float32):
    """x (B, T, I), mixed lengths, and an initial state."""
    LD = num_layers * (2 if bidirectional else 1)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((LD, B, H))).astype(dtype)
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
    model = rnnext.from_torch(rnn)
    x, lengths, state = random_inputs(rng, mode, num_layers, bidirectional)
    got = model.forward(x, state=state, lengths=lengths)
    assert_close(got, torch_forward(rnn, x, lengths, state), 1e-4, 1e-5)
    assert not got[0][np.arange(T)[None, :] >= lengths[:, None]].any()
    assert_close(model.forward(x), torch_forward(rnn, x), 1e-4, 1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_from_torch_without_bias(mode, rng):
    rnn = torch_module(mode, 2, True, batch_first=True, bias=False)
    x, lengths, state = random_inputs(rng, mode, 2, True)
    assert_close(rnnext.from_torch(rnn).forward(x, state=state, lengths=lengths),
                 torch_forward(rnn, x, lengths, state), 1e-4, 1e-5)


ACTIVATIONS = {None: lambda z: z, "softmax": lambda z: torch.softmax(z, dim=-1),
               "sigmoid": torch.sigmoid}


@pytest.mark.parametrize("head_bias", [True, False])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("output", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_from_torch_with_linear_head(bidirectional, output, activation, head_bias, rng):
    rnn = torch_module("lstm", 2, bidirectional, batch_first=True)
    head = torch.nn.Linear((2 if bidirectional else 1) * H, 3, bias=head_bias)
    model = rnnext.from_torch(rnn, head, output=output, activation=activation)
    x, lengths, _ = random_inputs(rng, "lstm", 2, bidirectional)
    seq, _ = torch_forward(rnn, x, lengths)
    with torch.no_grad():
        z = ACTIVATIONS[activation](head(torch.from_numpy(seq))).numpy()
    valid = np.arange(T)[None, :] < lengths[:, None]
    y, _ = model.forward(x, lengths=lengths)
    if output == "many_to_one":
        assert_f32_close(y, z[np.arange(B), lengths - 1])
    else:
        assert_f32_close(y[valid], z[valid])
        assert not y[~valid].any()
    assert_f32_close(model.predict(x, lengths=lengths), y)


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


def test_from_torch_refuses_projections():
    with pytest.raises(ValueError, match="proj_size"):
        rnnext.from_torch(torch.nn.LSTM(I, H, proj_size=3))


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
