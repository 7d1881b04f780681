"""A character-level LSTM language model (rnnext/data/alice.txt: Lewis Carroll, 1865, public
domain), trained with truncated backpropagation through time, then sampled with a temperature.

The text becomes one-hot characters. Its first 90% is cut into `streams` equal parts read side
by side (a batch of long sequences), trained on in chunks of `bptt` steps that carry the LSTM's
state from one chunk to the next; the last 10% is held out: never trained on, it is the
validation data that early stopping watches, and the kept model is the epoch that did best on
it. Losses are in nats per character; the report gives bits per character next to the text's
unigram entropy (the loss of a model that knows only how often each character occurs).

The defaults (size, dropout, learning rate and its schedule, patience) were chosen by runs on
the training text alone: its first 90% trained on, its last 10% as validation data
(run(text=load()[:int(len(load()) * 0.9)])), the held-out text unseen while choosing.
"""
import time

import numpy as np

from ..layers import random_generator
from ..model import Model
from . import data_text

GOAL_BITS = 2.7  # held-out bits/char that `rnnext charlm` exits 0 below


def load():
    """The shipped text."""
    return data_text("alice.txt")


def alphabet(text):
    """The sorted characters of text."""
    return sorted(set(text))


def unigram_entropy(text):
    """Bits per character of the text's character frequencies."""
    _, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), np.uint32), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def one_hot(ids, size):
    x = np.zeros(ids.shape + (size,), np.float32)
    np.put_along_axis(x, ids[..., None], 1.0, axis=-1)
    return x


def streams(text, chars, count):
    """(x (count, L, V) one-hot, y (count, L) next-character indices): text cut into `count`
    consecutive parts of L + 1 characters each (the tail that does not fit is dropped)."""
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in text], np.int64)
    L = (len(ids) - 1) // count
    if L < 1:
        raise ValueError(f"streams: expected a text longer than {count} characters, got "
                         f"{len(ids)}")
    rows = np.stack([ids[i * L:i * L + L + 1] for i in range(count)])
    return one_hot(rows[:, :-1], len(chars)), rows[:, 1:]


def sample(model, chars, length, temperature=1.0, prime="Alice ", seed=0):
    """`length` characters drawn one at a time from the model after reading `prime`, each from
    the softmax of the logits divided by `temperature` (below 1: safer, above 1: wilder).

    The prime runs as one sequence (Model.forward); the characters drawn then run one step at
    a time on a stream (Model.stream) that starts from the state the prime ended in."""
    if not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature}")
    index = {c: i for i, c in enumerate(chars)}
    unknown = sorted(set(prime) - set(index))
    if unknown or not prime:
        raise ValueError(f"prime: expected a non-empty text of the model's characters, got "
                         f"{prime!r} (unknown: {unknown})")
    rng = random_generator(seed)
    V = len(chars)
    probs, state = model.forward(one_hot(np.array([[index[c] for c in prime]]), V))
    stream = model.stream(1)
    stream.state = state
    p = probs[0, -1]
    out = []
    for _ in range(length):
        logp = np.log(np.maximum(p, 1e-30)) / temperature
        q = np.exp(logp - logp.max())
        c = int(rng.choice(V, p=q / q.sum()))
        out.append(chars[c])
        p = stream.step(one_hot(np.array(c), V))
    return prime + "".join(out)


def sample_saved(path, sample_length=400, temperature=0.7, prime="Alice ", seed=0):
    """Text sampled from a model saved by run(save=path): its characters are the shipped text's
    alphabet, in the order alphabet() gives."""
    from ..io import load as load_model

    model = load_model(path)
    chars = alphabet(load())
    if model.input_size != len(chars) or model.output_size != len(chars):
        raise ValueError(f"path: expected a charlm model of {len(chars)} characters in and out, "
                         f"got input_size {model.input_size} and output_size "
                         f"{model.output_size}")
    return sample(model, chars, sample_length, temperature, prime, seed)


def run(hidden=256, epochs=100, patience=5, streams_count=8, bptt=50, lr=0.004, clip=5.0,
        input_dropout=0.2, head_dropout=0.5, temperature=0.7, sample_length=400, seed=0,
        n_threads=None, verbose=True, backend="c", save=None, plot=None, text=None):
    """Trains the task's LSTM (Adam, gradients clipped to a global norm, dropout on the one-hot
    input characters and on the features the output layer reads) with the held-out text as
    validation data. The learning rate drops to 0.3 times after two epochs in a row that did not
    improve the held-out loss; training stops when `patience` epochs in a row did not (or after
    `epochs`), keeps the weights of the best held-out epoch, and samples from them.

    Returns a dict: model, history (Model.fit's), best_epoch (from 1), train_bits and test_bits
    (per character, Model.evaluate's of the kept model, without dropout), unigram_bits,
    seconds (of training), chars, sample. save: a path to save the kept model to; plot: a path
    to write the learning curves to (a PNG); text: the text to train on and hold out the last
    10% of (default: the shipped text)."""
    from ..callbacks import EarlyStopping, ReduceLROnPlateau

    text = load() if text is None else text
    chars = alphabet(text)
    cut = int(len(text) * 0.9)
    x, y = streams(text[:cut], chars, streams_count)
    vx, vy = streams(text[cut:], chars, 1)
    model = Model("lstm", len(chars), hidden, output_size=len(chars), output="many_to_many",
                  activation="softmax", seed=seed, backend=backend)
    unigram = unigram_entropy(text)
    if verbose:
        print(f"charlm: {len(text)} characters ({len(chars)} distinct), {cut} for training as "
              f"{streams_count} streams of {x.shape[1]}, {len(text) - cut} held out; unigram "
              f"entropy {unigram:.3f} bits/char\n{model}\nthe training loss and accuracy are "
              f"measured with dropout on (input {input_dropout}, output layer {head_dropout}), "
              f"the held-out ones (val_) without")
    stopping = EarlyStopping("val_loss", patience=patience, restore_best_weights=True)
    start = time.perf_counter()
    slowing = ReduceLROnPlateau("val_loss", factor=0.3, patience=1)
    history = model.fit(x, y, epochs=epochs, batch_size=streams_count, optimizer="adam", lr=lr,
                        clip=clip, bptt=bptt, shuffle=False, validation_data=(vx, vy),
                        seed=seed, verbose=verbose, n_threads=n_threads,
                        callbacks=[stopping, slowing], input_dropout=input_dropout,
                        head_dropout=head_dropout)
    seconds = time.perf_counter() - start
    nats = np.log(2.0)
    result = dict(model=model, history=history, seconds=seconds, chars=chars,
                  unigram_bits=unigram, best_epoch=stopping.best_epoch,
                  train_bits=model.evaluate(x, y, bptt=bptt, n_threads=n_threads)["loss"] / nats,
                  test_bits=model.evaluate(vx, vy, bptt=bptt, n_threads=n_threads)["loss"] / nats)
    result["sample"] = sample(model, chars, sample_length, temperature, seed=seed)
    if save is not None:
        model.save(save)
    if plot is not None:
        from ..plot import plot_history

        plot_history(history, plot, title=f"rnnext charlm: an LSTM of {hidden} units, dropout "
                     f"{input_dropout} in, {head_dropout} out (validation: the held-out text)")
    if verbose:
        ran = len(history["loss"])
        print(f"trained in {seconds:.1f} s, {ran} epochs; kept the weights of epoch "
              f"{stopping.best_epoch}, the best on the held-out text: "
              f"{result['train_bits']:.3f} bits/char on the training text, "
              f"{result['test_bits']:.3f} on the held-out text (goal: below {GOAL_BITS}), "
              f"against a unigram entropy of {unigram:.3f}\nsample at temperature "
              f"{temperature}:\n\n{result['sample']}\n")
        for path, what in ((save, "model"), (plot, "learning curves")):
            if path is not None:
                print(f"{what} written to {path}")
    return result
