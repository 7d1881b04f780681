"""Whole PyTorch modules, written as users write them, imported with from_torch(module, example)
(torch.fx): the layer list through Model (the reference, the compiled core checked against it)
against the module's own eval() output on a batch of another size and length than the example;
and the refusals, which name the op, its fx node and its line of forward."""
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: module import skipped")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import rnnext  # noqa: E402
from conftest import assert_f32_close, forward_imported  # noqa: E402
from rnnext import layers as L  # noqa: E402
from rnnext.convert import torch_layers  # noqa: E402
from rnnext.torch_trace import TorchImportError  # noqa: E402

I, V, E = 6, 20, 8  # input features, vocabulary, embedding width
B, T = 3, 9


class EmbeddingLSTMClassifier(nn.Module):
    def __init__(self, softmax_module=False):
        super().__init__()
        self.embedding = nn.Embedding(V, E, padding_idx=0)
        self.lstm = nn.LSTM(E, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)
        self.softmax = nn.Softmax(dim=1) if softmax_module else None

    def forward(self, x):
        out, _ = self.lstm(self.embedding(x))
        logits = self.fc(out[:, -1, :])
        return self.softmax(logits) if self.softmax is not None else F.softmax(logits, dim=-1)


class BiLSTMSentiment(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, 12, num_layers=2, bidirectional=True, batch_first=True,
                            dropout=0.3)
        self.fc = nn.Linear(24, 2)

    def forward(self, text):
        embedded = self.embedding(text)
        _, (hidden, _) = self.lstm(embedded)
        hidden = torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1)
        return self.fc(hidden)


class GRUTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(I, 10, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(20, 5)

    def forward(self, x, hidden=None):
        out, _ = self.gru(x.float().contiguous(), hidden)
        return F.softmax(self.fc(out), dim=2)


class StackedLSTMs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm1 = nn.LSTM(40, 64, batch_first=True)
        self.dropout = nn.Dropout(0.2)
        self.lstm2 = nn.LSTM(64, 32, batch_first=True)
        self.fc1 = nn.Linear(32, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        out, _ = self.lstm1(x)
        out = self.dropout(out)
        out, _ = self.lstm2(out)
        out = self.relu(self.fc1(out[:, -1]))
        return self.fc2(out)


class BiGRULast(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(I, 5, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        output, hidden = self.gru(x)
        return self.fc(output[:, -1])


class TimeMajorRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(I, 9, num_layers=2, nonlinearity="relu")
        self.fc = nn.Linear(9, 2)

    def forward(self, x):
        x = x.transpose(0, 1)
        out, h = self.rnn(x)
        return self.fc(out[-1])


class TimeMajorPerStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(I, 7)
        self.fc = nn.Linear(7, 4)

    def forward(self, x):
        out, _ = self.gru(x.permute(1, 0, 2))
        return torch.tanh(self.fc(out)).transpose(0, 1)


POOLS = {
    "Tensor.mean": lambda out: out.mean(1),
    "torch.mean": lambda out: torch.mean(out, dim=1),
    "max[0]": lambda out: out.max(1)[0],
    "max.values": lambda out: out.max(dim=1).values,
    "torch.amax": lambda out: torch.amax(out, 1),
}


class PooledLSTM(nn.Module):
    def __init__(self, pool):
        super().__init__()
        self.pool = POOLS[pool]
        self.lstm = nn.LSTM(I, 5, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(self.pool(out))


class ProjectedLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(I, 12, num_layers=2, proj_size=5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return torch.sigmoid(self.fc(h_n[-1]))


class TutorialLSTM(nn.Module):
    """Zeros as the initial state, dropout in forward and an MLP head."""

    def __init__(self):
        super().__init__()
        self.hidden_size, self.num_layers = 10, 2
        self.lstm = nn.LSTM(I, 10, 2, batch_first=True, dropout=0.5)
        self.head = nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 6),
                                  nn.ReLU(), nn.Linear(6, 2), nn.Sigmoid())

    def forward(self, x):
        h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(x.device)
        c0 = torch.zeros_like(h0)
        out, _ = self.lstm(x, (h0, c0))
        out = F.dropout(out[:, -1, :], p=0.5, training=self.training)
        return self.head(out)


class GRUFinalSqueezed(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(I, 6, batch_first=True)
        self.fc = nn.Linear(6, 4, bias=False)

    def forward(self, x):
        _, h = self.gru(x)
        return F.relu(self.fc(h.squeeze(0)))


class TimeMajorEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, E, padding_idx=1)
        self.lstm = nn.LSTM(E, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        out, (h, c) = self.lstm(self.embedding(x.long().t()))
        return self.fc(h[-1])


class BiaslessGRUIntoRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(I, 6, bias=False, batch_first=True)
        self.rnn = nn.RNN(6, 5, batch_first=True)

    def forward(self, x):
        out, _ = self.gru(x)
        out, _ = self.rnn(out)
        return out


ZOO = {
    "embedding-lstm-last-softmax": (EmbeddingLSTMClassifier, "ids"),
    "embedding-lstm-last-softmax-module": (lambda: EmbeddingLSTMClassifier(True), "ids"),
    "embedding-bilstm-cat-final": (BiLSTMSentiment, "ids"),
    "bigru-2-layers-per-step-softmax": (GRUTagger, "floats"),
    "two-lstms-last-mlp": (StackedLSTMs, "floats"),
    "bigru-last": (BiGRULast, "floats"),
    "rnn-relu-time-major-last": (TimeMajorRNN, "floats"),
    "gru-time-major-per-step-tanh": (TimeMajorPerStep, "floats"),
    **{f"pool-{name}": ((lambda name=name: PooledLSTM(name)), "floats") for name in POOLS},
    "lstm-proj-size-final": (ProjectedLSTM, "floats"),
    "zeros-state-dropout-mlp": (TutorialLSTM, "floats"),
    "gru-squeeze-final-no-bias-head": (GRUFinalSqueezed, "floats"),
    "embedding-time-major-final": (TimeMajorEmbedding, "ids"),
    "biasless-gru-into-rnn": (BiaslessGRUIntoRNN, "floats"),
}


def random_input(module, kind, rng, batch, steps):
    if kind == "ids":
        return rng.integers(0, V, size=(batch, steps))
    features = next(m for m in module.modules() if isinstance(m, nn.RNNBase)).input_size
    return rng.standard_normal((batch, steps, features)).astype(np.float32)


def module_output(module, x):
    with torch.no_grad():
        return module.eval()(torch.as_tensor(x)).numpy()


def assert_imports(module, kind, rng):
    """module imported on a small example, against module.eval() on another batch (its own
    size and length); returns the imported layers. The import leaves the module in training
    mode, where it found it."""
    module.train()
    imported = torch_layers(module, random_input(module, kind, rng, 2, 4))
    assert module.training and all(m.training for m in module.modules())
    x = random_input(module, kind, rng, B, T)
    got, want = forward_imported(imported, x)[0], module_output(module, x)
    assert got.shape == want.shape
    assert_f32_close(got, want)
    return imported[0]


@pytest.mark.parametrize("name", list(ZOO))
def test_module_matches_its_eval_output(name, rng):
    make, kind = ZOO[name]
    torch.manual_seed(0)
    assert_imports(make(), kind, rng)


@pytest.mark.parametrize("name, expected", [
    ("embedding-bilstm-cat-final",
     [L.Embedding(V, E), L.LSTM(12, direction="bidirectional"),
      L.LSTM(12, direction="bidirectional"), L.Readout("final"), L.Dense(2)]),
    ("two-lstms-last-mlp",
     [L.LSTM(64), L.LSTM(32), L.Readout("last"), L.Dense(16, "relu"), L.Dense(4)]),
    ("zeros-state-dropout-mlp",
     [L.LSTM(10), L.LSTM(10), L.Readout("last"), L.Dense(8, "tanh"), L.Dense(6, "relu"),
      L.Dense(2, "sigmoid")]),
    ("pool-max.values",
     [L.LSTM(5, direction="bidirectional"), L.Readout("max"), L.Dense(3)]),
    ("embedding-time-major-final",
     [L.Embedding(V, E, padding_idx=1), L.LSTM(8), L.Readout("final"), L.Dense(2)]),
])
def test_module_layer_lists(name, expected, rng):
    """The layers that the graph maps to (their outputs are checked above)."""
    make, kind = ZOO[name]
    assert assert_imports(make(), kind, rng) == expected


def test_from_torch_takes_the_example_positionally_or_by_keyword(rng):
    torch.manual_seed(3)
    module = BiLSTMSentiment()
    example = rng.integers(0, V, size=(2, 5))
    x = rng.integers(0, V, size=(B, T))
    for model in (rnnext.from_torch(module, example),
                  rnnext.from_torch(module, example=torch.as_tensor(example))):
        assert model.backend == "c"
        assert_f32_close(model.predict(x), module_output(module, x))


# ----------------------------------------------------------------------------------------------
# refusals


class Conv1dFront(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(I, 8, 3, padding=1)
        self.lstm = nn.LSTM(8, 6, batch_first=True)

    def forward(self, x):
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        out, _ = self.lstm(x)
        return out[:, -1]


class LSTMBody(nn.Module):
    """An LSTM and a Linear, and a forward that a test sets (`tail`) after the LSTM."""

    def __init__(self, tail, bidirectional=False, num_layers=1, batch_first=True):
        super().__init__()
        self.tail = tail
        self.lstm = nn.LSTM(I, I, num_layers=num_layers, bidirectional=bidirectional,
                            batch_first=batch_first)
        self.fc = nn.Linear(I * (2 if bidirectional else 1), 3)

    def forward(self, x):
        return self.tail(self, x)


def flipped(self, x):
    out, _ = self.lstm(torch.flip(x, [1]))
    return out


def residual(self, x):
    out, _ = self.lstm(x)
    return out + x


def softmax_over_time(self, x):
    out, _ = self.lstm(x)
    return F.softmax(self.fc(out), dim=1)


def linear_first(self, x):
    out, _ = self.lstm(self.fc2(x))
    return out


def dropout_always_on(self, x):
    out, _ = self.lstm(x)
    return self.fc(F.dropout(out[:, -1], 0.5))


def cell_state(self, x):
    _, (h, c) = self.lstm(x)
    return self.fc(c[-1])


def lower_layer(self, x):
    _, (h, c) = self.lstm(x)
    return self.fc(h[0])


def reverse_first(self, x):
    _, (h, _) = self.lstm(x)
    return self.fc(torch.cat([h[-1], h[-2]], dim=1))


def reverse_alone(self, x):
    _, (h, _) = self.lstm(x)
    return self.fc2(torch.cat([h[-1]], dim=1))


def returns_tuple(self, x):
    out, state = self.lstm(x)
    return out, state


def sum_over_time(self, x):
    out, _ = self.lstm(x)
    return self.fc(out.sum(1))


def tanh_of_lstm(self, x):
    out, _ = self.lstm(x)
    return self.fc(torch.tanh(out[:, -1]))


def first_step(self, x):
    out, _ = self.lstm(x)
    return self.fc(out[:, 0])


def readout_after_linear(self, x):
    out, _ = self.lstm(x)
    return self.fc(out).mean(1)


def branches_on_values(self, x):
    out, _ = self.lstm(x)
    return out if out.sum() > 0 else -out


def learned_state(self, x):
    out, _ = self.lstm(x, (self.h0.expand(-1, x.size(0), -1).contiguous(),) * 2)
    return out


def ones_state(self, x):
    ones = torch.ones(1, x.size(0), I)
    out, _ = self.lstm(x, (ones, ones))
    return out


def log_softmax(self, x):
    out, _ = self.lstm(x)
    return self.fc(out[:, -1]).log_softmax(-1)


def time_major_without_transpose(self, x):
    out, _ = self.lstm(x)
    return out[-1]


def returns_time_major(self, x):
    out, _ = self.lstm(x.transpose(0, 1))
    return self.fc(out)


def squeezed_output(self, x):
    out, _ = self.lstm(x)
    return self.fc(out[:, -1]).squeeze(-1)


def linear_between_lstms(self, x):
    out, _ = self.lstm(x)
    out, _ = self.lstm(self.fc2(out))
    return out


def layer_norm_head(self, x):
    out, _ = self.lstm(x)
    return self.norm(self.fc(out[:, -1]))


def clamped_in_place(self, x):
    out, _ = self.lstm(x)
    out.clamp_(max=0.1)
    return out[:, -1]


def relu_in_place(self, x):
    out, _ = self.lstm(x)
    torch.nn.functional.relu(out, inplace=True)
    return out.mean(1)


def filled_state(self, x):
    h0 = torch.zeros(1, x.size(0), I)
    h0.fill_(0.5)
    out, _ = self.lstm(x, (h0, h0))
    return out


def scaled_by_parameter(self, x):
    return self.lstm(x * self.h0)[0]


REFUSALS = {
    "conv1d-front": (Conv1dFront, "Conv1d module 'conv'", "conv",
                     "comes before the recurrent layers"),
    "flip": (lambda: LSTMBody(flipped), "torch.flip", "flip", "before the recurrent layers"),
    "residual-add": (lambda: LSTMBody(residual), "operator.add", "add",
                     "joins two paths .a residual or branching graph"),
    "softmax-over-time": (lambda: LSTMBody(softmax_over_time), "torch.nn.functional.softmax",
                          "softmax", "softmax over dim=1 of a BTF tensor"),
    "linear-first": (lambda: LSTMBody(linear_first), "Linear module 'fc2'", "fc2",
                     "a Linear before the recurrent layers"),
    "dropout-in-eval": (lambda: LSTMBody(dropout_always_on), "torch.nn.functional.dropout",
                        "dropout", "training=True.*pass training=self.training"),
    "cell-state": (lambda: LSTMBody(cell_state), "operator.getitem", "getitem_4",
                   "cell state c_n"),
    "lower-layer": (lambda: LSTMBody(lower_layer, num_layers=2), "operator.getitem",
                    "getitem_4", "not the top layer's final state"),
    "reverse-first": (lambda: LSTMBody(reverse_first, bidirectional=True), "torch.cat", "cat",
                      r"reverse direction first.*torch.cat\(\[h_n\[-2\], h_n\[-1\]\], dim=1\)"),
    "reverse-alone": (lambda: LSTMBody(reverse_alone, bidirectional=True), "torch.cat", "cat",
                      r"only torch.cat\(\[h_n\[-2\], h_n\[-1\]\], dim=1\) maps"),
    "returns-tuple": (lambda: LSTMBody(returns_tuple), "output 'output'", "output",
                      "returns a tuple"),
    "sum-over-time": (lambda: LSTMBody(sum_over_time), "Tensor.sum", "sum_1",
                      "does not map to an rnnext layer"),
    "tanh-of-lstm": (lambda: LSTMBody(tanh_of_lstm), "torch.tanh", "tanh",
                     "not a Linear's output"),
    "first-step": (lambda: LSTMBody(first_step), "operator.getitem", "getitem_2",
                   r"\[:, 0\] of a BTF sequence; only the last step \(index -1 on the time "
                   r"axis"),
    "readout-after-linear": (lambda: LSTMBody(readout_after_linear), "Tensor.mean", "mean",
                             "take it before the Linear"),
    "learned-initial-state": (lambda: LSTMBody(learned_state), "LSTM module 'lstm'", "lstm",
                              r"an initial state other than zeros.*pass a state to "
                              r"Model.forward"),
    "ones-initial-state": (lambda: LSTMBody(ones_state), "LSTM module 'lstm'", "lstm",
                           "an initial state other than zeros"),
    "log-softmax": (lambda: LSTMBody(log_softmax), "Tensor.log_softmax", "log_softmax",
                    "softmax in its place and take np.log of what Model.predict returns"),
    "time-major-without-transpose": (lambda: LSTMBody(time_major_without_transpose,
                                                      batch_first=False),
                                     "LSTM module 'lstm'", "lstm",
                                     r"batch_first=False reads a BTF tensor .*, so it takes "
                                     r"its B axis for time"),
    "returns-time-major": (lambda: LSTMBody(returns_time_major, batch_first=False),
                           "Linear module 'fc'", "fc", "returns a TBF tensor"),
    "squeezed-output": (lambda: LSTMBody(squeezed_output), "Tensor.squeeze", "squeeze",
                        "reshape what Model.predict returns instead"),
    "linear-between-lstms": (lambda: LSTMBody(linear_between_lstms), "LSTM module 'lstm'",
                             "lstm_1", r"reads a sequence after Dense\(6\); rnnext's recurrent "
                                       r"layers read float input"),
    "layer-norm": (lambda: LSTMBody(layer_norm_head), "LayerNorm module 'norm'", "norm",
                   "does not map to an rnnext layer"),
    "clamp-in-place": (lambda: LSTMBody(clamped_in_place), "Tensor.clamp_", "clamp_",
                       "changes a tensor in place and its result is not used.*y = op\\(y\\)"),
    "relu-in-place": (lambda: LSTMBody(relu_in_place), "torch.nn.functional.relu", "relu",
                      "changes a tensor in place"),
    "state-filled-in-place": (lambda: LSTMBody(filled_state), "Tensor.fill_", "fill_",
                              "changes a tensor in place"),
    "scaled-by-a-parameter": (lambda: LSTMBody(scaled_by_parameter), "operator.mul", "mul",
                              "comes before the recurrent layers"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals_name_the_op_node_and_line(name, rng):
    make, op, node, why = REFUSALS[name]
    module = make()
    module.fc2 = nn.Linear(I, I)
    module.norm = nn.LayerNorm(3)
    module.h0 = nn.Parameter(torch.zeros(1, 1, I))
    with pytest.raises(TorchImportError) as raised:
        torch_layers(module, rng.standard_normal((2, 4, I)).astype(np.float32))
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert message.startswith(f"{op} (fx node {node!r}"), message
    assert re.search(why, message), message
    if not op.startswith("output"):
        assert re.search(r", test_torch_modules\.py:\d+ `.+`\): ", message), message


def test_untraceable_forward_is_refused_with_the_reason(rng):
    with pytest.raises(TorchImportError, match=r"^module: torch.fx cannot trace LSTMBody."
                                               r"forward \(TraceError: .*must not branch"):
        torch_layers(LSTMBody(branches_on_values), rng.standard_normal((2, 4, I)))


def test_a_second_input_is_refused():
    class TwoInputs(nn.Module):
        def forward(self, x, lengths):
            return x

    with pytest.raises(TorchImportError, match=r"^module: TwoInputs.forward takes a second "
                                               r"input 'lengths'.*give lengths a default"):
        torch_layers(TwoInputs(), np.zeros((1, 2, I), np.float32))


def test_argument_errors_name_the_argument():
    module, example = GRUTagger(), np.zeros((2, 3, I), np.float32)
    with pytest.raises(TypeError, match=r"^rnn: .*a whole module with an example input.*got "
                                        r"GRUTagger without one"):
        rnnext.from_torch(module)
    with pytest.raises(TypeError, match=r"^output: a whole module's graph decides its layers; "
                                        r"expected 'many_to_many', got 'many_to_one'"):
        rnnext.from_torch(module, example, output="many_to_one")
    with pytest.raises(TypeError, match=r"^example: give a whole module's example once"):
        rnnext.from_torch(module, example, example=example)
    with pytest.raises(TypeError, match=r"^example: only a whole module takes one .*GRU"):
        rnnext.from_torch(nn.GRU(I, 4), example=example)
    with pytest.raises(ValueError, match=r"^example: expected a float batch \(B, T, I\), "
                                         r"batch-first, got shape \(3, 6\)"):
        rnnext.from_torch(module, np.zeros((3, I), np.float32))
    with pytest.raises(ValueError, match=r"^example: the module fails on it \(RuntimeError"):
        rnnext.from_torch(module, np.zeros((2, 3, I + 1), np.float32))
