"""Many-to-one sentiment classification: sentences as sequences of one-hot word vectors, a vanilla
RNN, a softmax over negative/positive on each sentence's last word (rnnext/data/sentiment.tsv).

The label depends on order, not only on which words occur: "not" flips a clause, and after "but"
the second clause decides ("i was upset but the food was great" is positive).
"""
import time

import numpy as np

from ..layers import random_generator
from ..model import Model
from . import data_text

LABELS = ("neg", "pos")


def load():
    """[(label index, [words])] of the shipped sentences, in file order."""
    rows = []
    for line in data_text("sentiment.tsv").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, sentence = line.split("\t")
        rows.append((LABELS.index(label), sentence.split()))
    return rows


def vocabulary(rows):
    """The sorted words of `rows`."""
    return sorted({w for _, words in rows for w in words})


def encode(rows, vocab):
    """One-hot arrays: x (N, T, V) with T the longest sentence, lengths (N,), labels (N,).
    Words outside vocab are left out."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = [[index[w] for w in words if w in index] for _, words in rows]
    T = max(len(s) for s in ids)
    x = np.zeros((len(rows), T, len(vocab)), np.float32)
    for n, s in enumerate(ids):
        x[n, np.arange(len(s)), s] = 1.0
    lengths = np.array([len(s) for s in ids], np.int32)
    labels = np.array([label for label, _ in rows], np.int64)
    return x, lengths, labels


def split(n, held_out, seed):
    """(train indices, held-out indices) of n rows, a fraction held_out of them held out."""
    order = random_generator(seed).permutation(n)
    cut = n - int(round(n * held_out))
    return np.sort(order[:cut]), np.sort(order[cut:])


def run(hidden=64, epochs=200, batch_size=16, lr=0.002, held_out=0.2, seed=0, n_threads=None,
        verbose=True, backend="c"):
    """Trains the task's vanilla RNN (Adam, every gradient clipped to [-1, 1]) on the sentences
    outside a held-out split. Returns a dict: model, history (Model.fit's, with the held-out
    split as validation data), train_accuracy and test_accuracy (Model.evaluate's at the end),
    seconds (of training), vocab."""
    rows = load()
    vocab = vocabulary(rows)
    x, lengths, labels = encode(rows, vocab)
    train, test = split(len(rows), held_out, seed)
    model = Model("rnn", len(vocab), hidden, output_size=2, output="many_to_one",
                  activation="softmax", seed=seed, backend=backend)
    if verbose:
        print(f"sentiment: {len(train)} training and {len(test)} held-out sentences, "
              f"{len(vocab)} words as one-hot vectors\n{model}")
    start = time.perf_counter()
    history = model.fit(x[train], labels[train], lengths[train], epochs=epochs,
                        batch_size=batch_size, optimizer="adam", lr=lr, clip=("value", 1.0),
                        validation_data=(x[test], labels[test], lengths[test]), seed=seed,
                        verbose=verbose, n_threads=n_threads)
    seconds = time.perf_counter() - start
    result = dict(model=model, history=history, seconds=seconds, vocab=vocab,
                  train_accuracy=model.evaluate(x[train], labels[train], lengths[train],
                                                n_threads=n_threads)["accuracy"],
                  test_accuracy=model.evaluate(x[test], labels[test], lengths[test],
                                               n_threads=n_threads)["accuracy"])
    if verbose:
        print(f"trained in {seconds:.1f} s: training accuracy {result['train_accuracy']:.1%}, "
              f"held-out accuracy {result['test_accuracy']:.1%}")
        probs = model.predict(x[test[:6]], lengths=lengths[test[:6]], n_threads=n_threads)
        print("held-out sentences (label -> prediction):")
        for i, p in zip(test[:6], probs):
            label, words = rows[i]
            print(f"  {' '.join(words)!r}: {LABELS[label]} -> {LABELS[int(p.argmax())]} "
                  f"(p = {p.max():.3f})")
    return result
