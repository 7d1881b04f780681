"""A zoo of real model shapes, rnnext vs PyTorch vs ONNX Runtime, side by side in one run.

    PYTHONPATH=. python bench/bench_zoo.py              # the whole zoo, 2 threads (minutes)
    PYTHONPATH=. python bench/bench_zoo.py --quick      # short timings, to check it works
    PYTHONPATH=. python bench/bench_zoo.py --models text bigru --batch 64 --blocks 5

Each torch model is built in PyTorch with seeded weights; rnnext runs what a user gets from
it, rnnext.from_torch(module, example) (the module traced with torch.fx); ONNX Runtime runs its
torch.onnx.export(dynamo=False, opset 17). rnnext.from_onnx of that file and of the default
export (dynamo=True) are checked against torch too (the "imports" column). The Keras models are
built in Keras 3 (torch backend) and imported with rnnext.from_keras; Keras runs them
(model(x, training=False)), and ONNX Runtime runs the imported model's to_onnx (standard ONNX
LSTM/GRU nodes: Keras's own ONNX export on the torch backend traces one fixed shape).

  text      Embedding(20000, 128) -> LSTM(128->256) -> last step -> Linear(256->2) softmax,
            ids (B, T)
  bilstm    Embedding(20000, 128) -> bidirectional LSTM(128->128) -> cat(h_n[-2], h_n[-1])
            -> Linear(256->2)   (rnnext readout "final")
  bigru     x (B, T, 64) -> GRU(64->128, 2 layers, bidirectional) -> Linear(256->17) on every step
  lstm2     x (B, T, 40) -> LSTM(40->64) -> LSTM(64->32) (two modules) -> last step
            -> Linear(32->10)
  charrnn   Embedding(96, 64) -> LSTM(64->256) -> Linear(256->96) softmax, one token per call at
            batch 1, state carried: rnnext Model.stream(1).step(id), torch's module on one step,
            ONNX Runtime on a graph with the states as inputs and outputs
  reverse   LSTM(64->256) run in reverse (rnnext direction="reverse"; torch and ORT: the forward
            module on the time-flipped input, flipped back) against the same forward layer
  ktext     Keras: Embedding(20000, 128) -> LSTM(256) -> Dense(2, softmax), ids (B, T)
  kbigru    Keras: x (B, T, 64) -> Bidirectional(GRU(128), sum) x2 -> TimeDistributed(Dense(17))

Every backend's first call is checked against the source framework's output (max abs diff
reported); a wrong result stops the run before it is timed. Timing is in blocks: each block
times every backend of a point in turn (time_call: the median of its calls), the order rotating
from block to block, and the figure is the median of the block medians, so that load from other
users of the (shared) cores lands on every backend alike. Output: a Markdown report on stdout
and in <out>/<name>.md (default zoo.md), every number in <out>/<name>.json.
"""
import argparse
import io
import os
import statistics
import sys
import warnings

import numpy as np

import rnnext
from anchors import engine_label
from bench_forward import ONNX_OPSET, checked, ort_session, positive_int
from common import machine_info, optional_import, time_call, write_report

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODELS = ("text", "bilstm", "bigru", "lstm2", "charrnn", "reverse", "ktext", "kbigru")
BATCHED = ("text", "bilstm", "bigru", "lstm2")  # timed at every --batch with --threads
KERAS_MODELS = ("ktext", "kbigru")  # likewise, built in Keras
MAX_REPEATS = 100000
VOCAB, EMBED = 20000, 128
FOLD_VOCAB = 16000  # the text model's ids are below it (see fold_calls)
CHAR_VOCAB, CHAR_EMBED, CHAR_HIDDEN = 96, 64, 256
REVERSE_INPUT, REVERSE_HIDDEN = 64, 256


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODELS, help="default: all")
    p.add_argument("--batch", nargs="+", type=positive_int, help="default: 1 64")
    p.add_argument("--steps", type=positive_int, default=100, help="T (default 100)")
    p.add_argument("--threads", type=positive_int, default=2,
                   help="threads of every engine (torch.set_num_threads, ORT intra_op_num_threads, "
                        "rnnext n_threads); default 2")
    p.add_argument("--stream-steps", type=positive_int, default=200,
                   help="tokens per timed call of the char-rnn (default 200)")
    p.add_argument("--blocks", type=positive_int, help="timing blocks per point (default 3, "
                                                        "--quick 1)")
    p.add_argument("--target", type=float, help="seconds per backend and block (default 0.3, "
                                                "--quick 0.03)")
    p.add_argument("--quick", action="store_true", help="short timings, to check the script")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=RESULTS, help=f"folder for the report (default {RESULTS})")
    p.add_argument("--name", default="zoo", help="the report's files: <out>/<name>.md and "
                                                 "<name>.json (default zoo)")
    args = p.parse_args(argv)
    args.models = args.models or list(MODELS)
    args.batch = args.batch or [1, 64]
    args.blocks = args.blocks or (1 if args.quick else 3)
    args.target = args.target or (0.03 if args.quick else 0.3)
    return args


# ------------------------------------------------------------------------------------------------
# the torch models


def torch_models(torch):
    """{name: module class}; a class with input_size takes floats x (B, T, input_size), the
    others token ids."""
    nn = torch.nn

    class TextClassifier(nn.Module):

        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, EMBED)
            self.lstm = nn.LSTM(EMBED, 256, batch_first=True)
            self.fc = nn.Linear(256, 2)

        def forward(self, ids):
            y, _ = self.lstm(self.embedding(ids))
            return torch.softmax(self.fc(y[:, -1]), dim=-1)

    class BiLSTMClassifier(nn.Module):

        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, EMBED)
            self.lstm = nn.LSTM(EMBED, 128, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(256, 2)

        def forward(self, ids):
            _, (h_n, _) = self.lstm(self.embedding(ids))
            return self.fc(torch.cat([h_n[-2], h_n[-1]], dim=-1))

    class BiGRUTagger(nn.Module):
        input_size = 64

        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(64, 128, num_layers=2, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(256, 17)

        def forward(self, x):
            return self.fc(self.gru(x)[0])

    class TwoLSTMs(nn.Module):
        input_size = 40

        def __init__(self):
            super().__init__()
            self.lstm1 = nn.LSTM(40, 64, batch_first=True)
            self.lstm2 = nn.LSTM(64, 32, batch_first=True)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(self.lstm2(self.lstm1(x)[0])[0][:, -1])

    class CharRNN(nn.Module):
        """forward(ids (B, T), h0, c0) -> (probabilities (B, T, V), h_n, c_n)."""

        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(CHAR_VOCAB, CHAR_EMBED)
            self.lstm = nn.LSTM(CHAR_EMBED, CHAR_HIDDEN, batch_first=True)
            self.fc = nn.Linear(CHAR_HIDDEN, CHAR_VOCAB)

        def forward(self, ids, h0, c0):
            y, (h_n, c_n) = self.lstm(self.embedding(ids), (h0, c0))
            return torch.softmax(self.fc(y), dim=-1), h_n, c_n

    class CharRNNSequence(nn.Module):
        """A CharRNN's layers on a whole sequence from zero states: what rnnext imports (its
        stream then carries the state)."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, ids):
            y, _ = self.net.lstm(self.net.embedding(ids))
            return torch.softmax(self.net.fc(y), dim=-1)

    class Reversed(nn.Module):
        """A one-direction module run backwards in time: the reverse half of a bidirectional
        layer on full-length sequences, the layer rnnext calls direction="reverse"."""

        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(x.flip(1))[0].flip(1)

    class ReverseLSTM(nn.Module):
        input_size = REVERSE_INPUT

        def __init__(self):
            super().__init__()
            self.lstm = Reversed(nn.LSTM(REVERSE_INPUT, REVERSE_HIDDEN, batch_first=True))

        def forward(self, x):
            return self.lstm(x)

    class ForwardLSTM(nn.Module):
        input_size = REVERSE_INPUT

        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(REVERSE_INPUT, REVERSE_HIDDEN, batch_first=True)

        def forward(self, x):
            return self.lstm(x)[0]

    return {"text": TextClassifier, "bilstm": BiLSTMClassifier, "bigru": BiGRUTagger,
            "lstm2": TwoLSTMs, "charrnn": CharRNN, "reverse": ReverseLSTM,
            "forward": ForwardLSTM, "Reversed": Reversed, "CharRNNSequence": CharRNNSequence}


def build(torch, classes, name, seed):
    torch.manual_seed(seed)
    return classes[name]().eval()


# ------------------------------------------------------------------------------------------------
# rnnext


def rnnext_layers():
    """rnnext.layers (LAYERS.md), or a SystemExit that says it is missing."""
    try:
        from rnnext import layers
    except ImportError as e:
        raise SystemExit(f"rnnext.layers is not importable ({e}): this benchmark needs the "
                         f"layer-list API (LAYERS.md); build rnnext from a branch that has it")
    return layers


def folded(model):
    """Whether the compiled core folded the model's embedding into its first layer's input
    product (rnx_model_info.folded)."""
    return bool(model.core().info["folded"])


def from_torch(torch, module, x):
    """rnnext's import of a whole torch module, traced on the example input x (numpy)."""
    return rnnext.from_torch(module, torch.from_numpy(x))


def reversed_model(model):
    """A one-layer forward model's layer run in reverse (direction="reverse"), same weights."""
    L = rnnext_layers()
    (layer,) = model.layers
    params = {f"{name}_reverse": value for name, value in model.params.items()}
    return rnnext.Model([L.LSTM(layer.units, direction="reverse")], model.input_size,
                        params=params)


# ------------------------------------------------------------------------------------------------
# ONNX


def export_onnx(torch, module, inputs, input_names, output_names):
    """The module as ONNX bytes for the static shapes of `inputs` (torch tensors), by torch's
    TorchScript exporter (dynamo=False, deprecated in torch 2.13 but there)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs), buf, dynamo=False, input_names=input_names,
                          output_names=output_names, opset_version=ONNX_OPSET)
    return buf.getvalue()


def onnx_nodes(mods, onnx_bytes):
    if mods["onnx"] is None:
        return None
    ops = [n.op_type for n in mods["onnx"].load_from_string(onnx_bytes).graph.node]
    return {op: ops.count(op) for op in sorted(set(ops))}


# ------------------------------------------------------------------------------------------------
# timing


def timed_in_blocks(args, calls):
    """{name: {"ms", "block_ms", "repeats"}}: args.blocks blocks, each timing every call in turn
    (time_call's median), the order rotating; ms is the median of the block medians."""
    names = list(calls)
    blocks = {name: [] for name in names}
    repeats = {name: 0 for name in names}
    for b in range(args.blocks):
        shift = b % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, n = time_call(calls[name], args.target, 3, MAX_REPEATS)
            blocks[name].append(seconds * 1e3)
            repeats[name] += n
    return {name: {"ms": statistics.median(blocks[name]), "block_ms": blocks[name],
                   "repeats": repeats[name]} for name in names}


def checked_calls(what, calls, ref, steps):
    """{name: max abs diff from ref} of every call's first (warm-up) output."""
    diffs = {}
    for name, call in calls.items():
        diffs[name] = checked(f"{what}: {name}", call(), ref, steps)
    return diffs


def speedup(ms):
    """(the fastest other engine, its time / rnnext's) or (None, None)."""
    others = [f for f in ms if not f.startswith("rnnext")]
    if "rnnext" not in ms or not others:
        return None, None
    best = min(others, key=ms.get)
    return best, ms[best] / ms["rnnext"]


def progress(text):
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# the points


def model_inputs(name, module, batch, steps, rng):
    """The input of a batched model: floats x (B, T, I), or token ids (B, T) (int64)."""
    if hasattr(module, "input_size"):
        x = rng.standard_normal((batch, steps, module.input_size)).astype(np.float32)
        return x
    return rng.integers(0, FOLD_VOCAB if name == "text" else VOCAB, size=(batch, steps),
                        dtype=np.int64)


def engine_calls(mods, args, module, model, onnx_bytes, x, input_name="x"):
    """rnnext, the torch module and ONNX Runtime on x (see source_calls)."""
    torch = mods["torch"]
    xt = torch.from_numpy(x)

    def torch_call():
        with torch.inference_mode():
            return module(xt).numpy()

    return source_calls(mods, args, model, "torch", torch_call, onnx_bytes, x, input_name)


def source_calls(mods, args, model, source, source_call, onnx_bytes, x, input_name="x"):
    """{engine: call}: rnnext's model, the source framework's call (named `source`) and, with
    onnx_bytes, ONNX Runtime on x."""
    calls = {"rnnext": lambda: model.forward(x, n_threads=args.threads)[0], source: source_call}
    if onnx_bytes is not None:
        session = ort_session(mods["onnxruntime"], onnx_bytes, args.threads)
        calls["onnxruntime"] = lambda: session.run(None, {input_name: x})[0]
    return calls


def onnx_imports(mods, module, x, onnx_bytes, ref, steps):
    """{how: max abs diff from torch} of rnnext.from_onnx on the module's export by each of
    torch's exporters: onnx_bytes (dynamo=False) and, with onnxscript, the default
    (dynamo=True)."""
    exports = {"from_onnx dynamo=False": onnx_bytes}
    if mods["onnxscript"] is not None:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mods["torch"].onnx.export(module, (mods["torch"].from_numpy(x),), buf, verbose=False)
        exports["from_onnx dynamo=True"] = buf.getvalue()
    return {how: checked(how, rnnext.from_onnx(data).predict(x), ref, steps)
            for how, data in exports.items()}


def bench_batched(args, mods, classes, name, notes):
    torch = mods["torch"]
    module = build(torch, classes, name, args.seed)
    records, model = [], None
    for batch in args.batch:
        x = model_inputs(name, module, batch, args.steps, np.random.default_rng(args.seed))
        model = model or from_torch(torch, module, x)
        with torch.inference_mode():
            ref = module(torch.from_numpy(x)).numpy()
        onnx_bytes, imports = None, {}
        if mods["onnxruntime"] is not None:
            onnx_bytes = export_onnx(torch, module, [torch.from_numpy(x)], ["x"], ["y"])
            notes.setdefault("onnx_nodes", {})[name] = onnx_nodes(mods, onnx_bytes)
            imports = onnx_imports(mods, module, x, onnx_bytes, ref, args.steps)
        calls = engine_calls(mods, args, module, model, onnx_bytes, x)
        fold = None
        if name == "text":
            more, fold = fold_calls(args, module, model, x)
            calls.update(more)
        records.append(timed_point(args, name, batch, calls, ref, imports=imports,
                                   **({} if fold is None else {"folded": fold})))
    return records


def timed_point(args, name, batch, calls, ref, **extra):
    """A batched point's record: every call checked against ref, then timed in blocks; extra
    keys added to the record."""
    what = f"{name} B={batch}"
    diffs = checked_calls(what, calls, ref, args.steps)
    times = timed_in_blocks(args, calls)
    rec = {"model": name, "batch": batch, "steps": args.steps, "threads": args.threads,
           "engines": {e: dict(times[e], max_abs_diff=diffs[e]) for e in calls}, **extra}
    rec["best_framework"], rec["speedup"] = speedup({e: t["ms"] for e, t in times.items()})
    progress(f"  {what}: " + ", ".join(f"{e} {t['ms']:.3f} ms" for e, t in times.items()))
    return rec


def keras_model(keras, name, seed):
    """The Keras zoo model `name` (KERAS_MODELS), seeded, built for its input."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    if name == "ktext":
        return keras.Sequential([keras.Input((None,), dtype="int64"),
                                 layers.Embedding(VOCAB, EMBED), layers.LSTM(256),
                                 layers.Dense(2, activation="softmax")])
    return keras.Sequential([keras.Input((None, 64)),
                             layers.Bidirectional(layers.GRU(128, return_sequences=True),
                                                  merge_mode="sum"),
                             layers.Bidirectional(layers.GRU(128, return_sequences=True),
                                                  merge_mode="sum"),
                             layers.TimeDistributed(layers.Dense(17))])


def bench_keras(args, mods, name, notes):
    """A Keras model: rnnext.from_keras against Keras itself and ONNX Runtime (on the imported
    model's to_onnx)."""
    keras, torch = mods["keras"], mods["torch"]
    source = keras_model(keras, name, args.seed)
    model = rnnext.from_keras(source)
    onnx_bytes = None
    if mods["onnxruntime"] is not None:
        onnx_bytes = model.to_onnx().SerializeToString()
        notes.setdefault("onnx_nodes", {})[name] = onnx_nodes(mods, onnx_bytes)
    records = []
    for batch in args.batch:
        rng = np.random.default_rng(args.seed)
        x = (rng.integers(0, VOCAB, size=(batch, args.steps), dtype=np.int64) if name == "ktext"
             else rng.standard_normal((batch, args.steps, 64)).astype(np.float32))

        def keras_call():
            with torch.inference_mode():
                return keras.ops.convert_to_numpy(source(x, training=False))

        calls = source_calls(mods, args, model, "keras", keras_call, onnx_bytes, x)
        records.append(timed_point(args, name, batch, calls, keras_call()))
    return records


def fold_calls(args, module, model, ids):
    """Model text's first layer with and without the embedding fold. rnnext has no switch: the
    core folds the embedding into the first layer's input product (a row copy per token instead
    of the product) when V*G*H*D is at most 2^24 floats (csrc/head.c), which V=20000 at G*H=1024
    is not. So, on the same ids (all below FOLD_VOCAB) and weights:
      "rnnext V=16000": the model with the table cut to its first FOLD_VOCAB rows (folded);
      "rnnext floats x": the LSTM and head alone on the embedded floats x (B, T, 128), what an
      unfolded first layer costs (the lookup not timed)."""
    L = rnnext_layers()
    params = dict(model.params)
    cut = dict(params, **{"embedding.weight": params["embedding.weight"][:FOLD_VOCAB]})
    small = rnnext.Model([L.Embedding(FOLD_VOCAB, EMBED)] + list(model.layers[1:]), params=cut)
    del params["embedding.weight"]
    floats = rnnext.Model(list(model.layers[1:]), input_size=EMBED, params=params)
    x = module.embedding.weight.detach().numpy()[ids]
    return {"rnnext V=16000": lambda: small.forward(ids, n_threads=args.threads)[0],
            "rnnext floats x": lambda: floats.forward(x, n_threads=args.threads)[0]}, \
        {"rnnext": folded(model), "rnnext V=16000": folded(small), "rnnext floats x": False}


def bench_reverse(args, mods, classes, notes):
    """rnnext's reverse-only LSTM against the same forward layer (and torch / ORT running the
    forward module on the flipped sequence, for scale)."""
    torch = mods["torch"]
    rev = build(torch, classes, "reverse", args.seed)
    fwd = classes["forward"]().eval()
    fwd.lstm.load_state_dict(rev.lstm.rnn.state_dict())
    records = []
    for batch in args.batch:
        x = np.random.default_rng(args.seed).standard_normal(
            (batch, args.steps, REVERSE_INPUT)).astype(np.float32)
        with torch.inference_mode():
            ref = rev(torch.from_numpy(x)).numpy()
            ref_fwd = fwd(torch.from_numpy(x)).numpy()
        onnx_bytes = None
        if mods["onnxruntime"] is not None:
            onnx_bytes = export_onnx(torch, rev, [torch.from_numpy(x)], ["x"], ["y"])
            notes.setdefault("onnx_nodes", {})["reverse"] = onnx_nodes(mods, onnx_bytes)
        model_fwd = from_torch(torch, fwd, x)
        calls = engine_calls(mods, args, rev, reversed_model(model_fwd), onnx_bytes, x)
        diffs = checked_calls(f"reverse B={batch}", calls, ref, args.steps)
        calls["rnnext forward"] = lambda: model_fwd.forward(x, n_threads=args.threads)[0]
        diffs.update(checked_calls(f"forward B={batch}",
                                   {"rnnext forward": calls["rnnext forward"]}, ref_fwd,
                                   args.steps))
        times = timed_in_blocks(args, calls)
        rec = {"model": "reverse", "batch": batch, "steps": args.steps, "threads": args.threads,
               "input": REVERSE_INPUT, "hidden": REVERSE_HIDDEN,
               "engines": {e: dict(times[e], max_abs_diff=diffs[e]) for e in calls}}
        rec["best_framework"], rec["speedup"] = speedup({e: t["ms"] for e, t in times.items()})
        rec["reverse_over_forward"] = times["rnnext"]["ms"] / times["rnnext forward"]["ms"]
        progress(f"  reverse B={batch}: " +
                 ", ".join(f"{e} {t['ms']:.3f} ms" for e, t in times.items()))
        records.append(rec)
    return records


def bench_charrnn(args, mods, classes, notes):
    """Microseconds per token of the char-rnn at batch 1, one token per call, state carried."""
    torch = mods["torch"]
    module = build(torch, classes, "charrnn", args.seed)
    n = args.stream_steps
    tokens = np.random.default_rng(args.seed).integers(0, CHAR_VOCAB, size=n, dtype=np.int64)
    zeros = torch.zeros(1, 1, CHAR_HIDDEN)
    with torch.inference_mode():
        ref = module(torch.from_numpy(tokens)[None], zeros, zeros)[0][0].numpy()  # (n, V)
    token_tensors = [torch.from_numpy(tokens[t:t + 1])[None] for t in range(n)]  # (1, 1) each

    def torch_steps():
        with torch.inference_mode():
            h, c, outs = zeros, zeros, []
            for ids in token_tensors:
                p, h, c = module(ids, h, c)
                outs.append(p[0, 0])
            return torch.stack(outs).numpy()

    cell = torch.nn.LSTMCell(CHAR_EMBED, CHAR_HIDDEN).eval()
    with torch.no_grad():
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, kind).copy_(getattr(module.lstm, kind + "_l0"))

    def torch_cell_steps():
        # the same step written with nn.LSTMCell, which skips nn.LSTM's per-call oneDNN setup
        with torch.inference_mode():
            h, c, outs = zeros[0], zeros[0], []
            for ids in token_tensors:
                h, c = cell(module.embedding(ids[0]), (h, c))
                outs.append(torch.softmax(module.fc(h[0]), dim=-1))
            return torch.stack(outs).numpy()

    model = from_torch(torch, classes["CharRNNSequence"](module).eval(), tokens[None])
    token_ids = [int(t) for t in tokens]

    def rnnext_steps():
        stream = model.stream(1)
        return np.stack([stream.step(t) for t in token_ids])

    calls = {"rnnext": rnnext_steps, "torch": torch_steps, "torch LSTMCell": torch_cell_steps}
    if mods["onnxruntime"] is not None:
        onnx_bytes = export_onnx(torch, module, [token_tensors[0], zeros, zeros],
                                 ["ids", "h0", "c0"], ["p", "h_n", "c_n"])
        notes.setdefault("onnx_nodes", {})["charrnn"] = onnx_nodes(mods, onnx_bytes)
        session = ort_session(mods["onnxruntime"], onnx_bytes, args.stream_threads)
        ort_ids = [tokens[t:t + 1].reshape(1, 1) for t in range(n)]
        zeros_np = zeros.numpy()

        def ort_steps():
            h, c, outs = zeros_np, zeros_np, []
            for ids in ort_ids:
                p, h, c = session.run(None, {"ids": ids, "h0": h, "c0": c})
                outs.append(p[0, 0])
            return np.stack(outs)

        calls["onnxruntime"] = ort_steps
    torch.set_num_threads(args.stream_threads)
    try:
        diffs = checked_calls("charrnn", calls, ref, n)
        times = timed_in_blocks(args, calls)
    finally:
        torch.set_num_threads(args.threads)
    rec = {"model": "charrnn", "batch": 1, "steps_per_call": n, "threads": args.stream_threads,
           "engines": {e: dict(times[e], us_per_step=times[e]["ms"] * 1e3 / n,
                               max_abs_diff=diffs[e]) for e in calls}}
    rec["best_framework"], rec["speedup"] = speedup({e: t["ms"] for e, t in times.items()})
    progress("  charrnn: " + ", ".join(f"{e} {t['ms'] * 1e3 / n:.2f} us/step"
                                       for e, t in times.items()))
    return [rec]


# ------------------------------------------------------------------------------------------------
# report


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def engine_cell(rec, name, key="ms", spec=".3f"):
    e = rec["engines"].get(name)
    return fmt(None if e is None else e[key], spec)


def diff_cell(rec):
    return ", ".join(f"{engine_label(e)} {v['max_abs_diff']:.1e}"
                     for e, v in rec["engines"].items() if e not in ("torch", "keras"))


def spread(rec):
    """The spread of the block medians of every engine of a point, as (max - min) / median in
    %, the largest over the engines: how much the load moved the figures."""
    worst = max((max(e["block_ms"]) - min(e["block_ms"])) / e["ms"]
                for e in rec["engines"].values())
    return f"{100 * worst:.0f}%"


def vs_best(rec):
    if rec.get("speedup") is None:
        return "-"
    return f"{rec['speedup']:.2f}x ({engine_label(rec['best_framework'])})"


DESCRIPTIONS = {
    "text": "Embedding(20000,128) -> LSTM(256) -> last -> Dense(2) softmax, ids",
    "bilstm": "Embedding(20000,128) -> BiLSTM(128) -> final (cat h_n) -> Dense(2), ids",
    "bigru": "x (B,T,64) -> BiGRU(128) x2 -> Dense(17) every step",
    "lstm2": "x (B,T,40) -> LSTM(64) -> LSTM(32) -> last -> Dense(10)",
    "charrnn": "Embedding(96,64) -> LSTM(256) -> Dense(96) softmax, one token per call",
    "reverse": f"x (B,T,{REVERSE_INPUT}) -> LSTM({REVERSE_HIDDEN}) reverse-only, every step",
    "ktext": "Keras: Embedding(20000,128) -> LSTM(256) -> Dense(2, softmax), ids",
    "kbigru": "Keras: x (B,T,64) -> Bidirectional(GRU(128), sum) x2 -> TimeDistributed(Dense(17))",
}


def markdown(report):
    m, s = report["machine"], report["settings"]
    rc = m["rnnext"]
    lines = [
        "# rnnext model zoo: rnnext vs PyTorch, Keras and ONNX Runtime", "",
        f"{m['date']}; {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical "
        f"CPUs; load average {m['load_average'][0]:.2f} at start, "
        f"{report['load_average_end'][0]:.2f} at end.",
        f"rnnext {rc['version']} (ISA {rc['isa']}, OpenMP {rc['openmp']}, gcc {rc['compiler']}); "
        + ", ".join(f"{k} {v or 'not importable'}" for k, v in m["versions"].items()) + ".",
        "",
        f"Command: `{report['command']}`", "",
        f"T={s['steps']}, {s['threads']} threads for every engine (torch.set_num_threads, ORT "
        f"intra_op_num_threads with inter_op 1, rnnext n_threads), except the char-rnn "
        f"({s['stream_threads']} thread: rnnext's stream runs one). ms: median over "
        f"{s['blocks']} timing blocks of the median call in each block (the engines take turns "
        f"within a block), after a warm-up call checked against torch (diff: max abs "
        f"difference from torch's output). vs best: time of the fastest other engine "
        f"/ rnnext's (> 1: rnnext faster). spread: (max - min) / median of the block "
        f"medians, the largest over the point's engines (the load's effect).",
        "",
    ]
    lines += [f"- **warning**: {w}" for w in report["warnings"]]
    lines += [f"- {note}" for note in report["notes"].get("text", [])]
    for name, nodes in report["notes"].get("onnx_nodes", {}).items():
        if nodes:
            how = ("rnnext's to_onnx" if name in KERAS_MODELS else
                   f"torch.onnx.export dynamo=False, opset {ONNX_OPSET}")
            lines.append(f"- ONNX graph of {name} ({how}): " +
                         ", ".join(f"{op} x{c}" for op, c in nodes.items()))
    batched = [r for r in report["points"] if r["model"] in BATCHED]
    if batched:
        lines += ["", "PyTorch models, imported with rnnext.from_torch(module, example); imports: "
                      "rnnext.from_onnx of torch's two exports, max abs diff from torch.", "",
                  "| model | B | rnnext ms | torch ms | ORT ms | vs best | spread | diff "
                  "| imports |", "|---|--:|--:|--:|--:|--:|--:|---|---|"]
        for r in batched:
            imports = ", ".join(f"{k} {v:.1e}" for k, v in r.get("imports", {}).items())
            lines.append(f"| {r['model']}: {DESCRIPTIONS[r['model']]} | {r['batch']} "
                         f"| {engine_cell(r, 'rnnext')} | {engine_cell(r, 'torch')} "
                         f"| {engine_cell(r, 'onnxruntime')} | {vs_best(r)} | {spread(r)} "
                         f"| {diff_cell(r)} | {imports or '-'} |")
    from_keras = [r for r in report["points"] if r["model"] in KERAS_MODELS]
    if from_keras:
        lines += ["", f"Keras models (Keras {report['machine']['versions'].get('keras')}, torch "
                      f"backend), imported with rnnext.from_keras; ORT runs the imported "
                      f"model's to_onnx; diff: max abs difference from Keras.", "",
                  "| model | B | rnnext ms | Keras ms | ORT ms | vs best | spread | diff |",
                  "|---|--:|--:|--:|--:|--:|--:|---|"]
        for r in from_keras:
            lines.append(f"| {r['model']}: {DESCRIPTIONS[r['model']]} | {r['batch']} "
                         f"| {engine_cell(r, 'rnnext')} | {engine_cell(r, 'keras')} "
                         f"| {engine_cell(r, 'onnxruntime')} | {vs_best(r)} | {spread(r)} "
                         f"| {diff_cell(r)} |")
    text = [r for r in batched if r["model"] == "text" and "folded" in r]
    if text:
        f = text[0]["folded"]
        yes = {True: "folded", False: "not folded"}
        lines += ["", f"Embedding fold (model text): rnnext has no switch; the core folds the "
                      f"embedding into the first layer's input product (a row copy per token) "
                      f"when V*4H*D <= 2^24 floats. Same weights and ids (all < {FOLD_VOCAB}): "
                      f"ids with the V={VOCAB} table ({yes[f['rnnext']]}), ids with the "
                      f"table cut to V={FOLD_VOCAB} ({yes[f['rnnext V=16000']]}), and the "
                      f"LSTM and head alone on the embedded floats x (B, T, {EMBED}) (what an "
                      f"unfolded first layer costs; the lookup not timed).", "",
                  f"| B | ids V={VOCAB} ms | ids V={FOLD_VOCAB} ms | floats x ms "
                  f"| floats x / ids V={FOLD_VOCAB} |", "|--:|--:|--:|--:|--:|"]
        for r in text:
            e = r["engines"]
            lines.append(f"| {r['batch']} | {e['rnnext']['ms']:.3f} "
                         f"| {e['rnnext V=16000']['ms']:.3f} | {e['rnnext floats x']['ms']:.3f} "
                         f"| {e['rnnext floats x']['ms'] / e['rnnext V=16000']['ms']:.2f} |")
    for r in report["points"]:
        if r["model"] != "charrnn":
            continue
        lines += ["", f"char-rnn sampling step ({DESCRIPTIONS['charrnn']}), batch 1, state "
                      f"carried, median over calls of {r['steps_per_call']} steps:", "",
                  "| engine | µs per token | diff |", "|---|--:|--:|"]
        for e, v in r["engines"].items():
            lines.append(f"| {e} | {v['us_per_step']:.2f} | "
                         f"{format(v['max_abs_diff'], '.1e')} |")
        lines.append(f"\nvs best (the fastest of the others): {vs_best(r)}; spread {spread(r)}.")
    rev = [r for r in report["points"] if r["model"] == "reverse"]
    if rev:
        lines += ["", f"Reverse-only layer ({DESCRIPTIONS['reverse']}); torch and ORT run the "
                      f"forward module on the flipped input (two flips included).", "",
                  "| B | rnnext reverse ms | rnnext forward ms | reverse / forward | torch ms "
                  "| ORT ms | vs best | spread | diff |", "|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
        for r in rev:
            lines.append(f"| {r['batch']} | {engine_cell(r, 'rnnext')} "
                         f"| {engine_cell(r, 'rnnext forward')} "
                         f"| {fmt(r.get('reverse_over_forward'), '.2f')} "
                         f"| {engine_cell(r, 'torch')} | {engine_cell(r, 'onnxruntime')} "
                         f"| {vs_best(r)} | {spread(r)} | {diff_cell(r)} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    args.stream_threads = 1
    os.environ.setdefault("KERAS_BACKEND", "torch")
    mods = {name: optional_import(name)
            for name in ("numpy", "torch", "onnxruntime", "onnx", "threadpoolctl", "keras",
                         "onnxscript")}
    if mods["torch"] is None:
        raise SystemExit("torch is not importable: the zoo's models are built in PyTorch")
    report = {"machine": machine_info(mods), "notes": {"text": []},
              "command": "PYTHONPATH=. python bench/bench_zoo.py "
                         + " ".join(sys.argv[1:] if argv is None else argv)}
    report["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    rnnext_layers()  # the layer-list API: stops here, naming it, when missing
    if mods["onnxruntime"] is None:
        report["notes"]["text"].append("onnxruntime is not importable: no ORT columns")
    if mods["onnxscript"] is None:
        report["notes"]["text"].append("onnxscript is not importable: from_onnx of torch's "
                                       "default export (dynamo=True) is not checked")
    torch = mods["torch"]
    torch.set_num_threads(args.threads)
    classes = torch_models(torch)
    report["points"] = []
    for name in args.models:
        progress(f"{name} ...")
        if name in BATCHED:
            report["points"] += bench_batched(args, mods, classes, name, report["notes"])
        elif name in KERAS_MODELS:
            if mods["keras"] is None:
                report["notes"]["text"].append(f"keras is not importable: no {name}")
                continue
            report["points"] += bench_keras(args, mods, name, report["notes"])
        elif name == "charrnn":
            report["points"] += bench_charrnn(args, mods, classes, report["notes"])
        else:
            report["points"] += bench_reverse(args, mods, classes, report["notes"])
    report["load_average_end"] = list(os.getloadavg())
    load = report["machine"]["load_average"][0]
    report["warnings"] = ([f"load average {load:.2f} over the minute before the run: other "
                           f"processes were using the cores"] if load > 0.5 else [])
    write_report(args.out, args.name, markdown(report), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
