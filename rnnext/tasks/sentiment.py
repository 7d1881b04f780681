"""Many-to-one sentiment classification: sentences as sequences of one-hot word vectors, a vanilla
RNN, a softmax over negative/positive on each sentence's last word (rnnext/data/sentiment.tsv,
written by rnnext.tasks.sentiment_grammar).

The label depends on order, not only on which words occur: "not" flips a clause, and after "but"
the second clause decides ("the food was bad but the music was great" is positive). The held-out
sentences are new combinations of words seen in training. A bag-of-words logistic regression on
the same split shows what the words alone give: about chance, as the RNN reaches 100%.
"""
import time

import numpy as np

from ..model import Model
from . import data_text
from .sentiment_grammar import LABELS

GOAL_ACCURACY = 0.9  # held-out accuracy that `rnnext sentiment` exits 0 for


def load():
    """{"train": [(label index, [words])], "test": [...]}: the shipped sentences by split, in
    file order."""
    rows = {"train": [], "test": []}
    for line in data_text("sentiment.tsv").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        part, label, sentence = line.split("\t")
        rows[part].append((LABELS.index(label), sentence.split()))
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


def logistic_regression(features, labels, l2=1e-2, iterations=30):
    """(weights (F,), bias) of a binary logistic regression minimising the mean cross-entropy
    plus l2/2 * |weights|^2, by Newton's method (the loss is convex: a few steps converge)."""
    X = np.hstack([features, np.ones((len(features), 1))]).astype(np.float64)
    penalty = np.full(X.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not penalised
    w = np.zeros(X.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        gradient = X.T @ (p - labels) / len(X) + penalty * w
        hessian = (X.T * (p * (1 - p))) @ X / len(X) + np.diag(penalty)
        w -= np.linalg.solve(hessian, gradient)
    return w[:-1], w[-1]


def bag_of_words_accuracy(x_train, y_train, x_test, y_test):
    """(training, held-out) accuracy of a logistic regression on word counts (one-hot x summed
    over time): what the words give without their order."""
    weights, bias = logistic_regression(x_train.sum(axis=1), y_train)
    return tuple(float(np.mean((x.sum(axis=1) @ weights + bias > 0) == y))
                 for x, y in ((x_train, y_train), (x_test, y_test)))


def run(hidden=32, epochs=30, batch_size=32, lr=0.01, seed=0, n_threads=None, verbose=True,
        backend="c", plot=None):
    """Trains the task's vanilla RNN (Adam, every gradient clipped to [-1, 1]) on the training
    sentences, with the held-out ones as validation data. Returns a dict: model, history
    (Model.fit's), train_accuracy and test_accuracy (Model.evaluate's at the end),
    bag_of_words (training and held-out accuracy of the bag-of-words baseline), seconds (of
    training), vocab. plot: a path to write the learning curves to (a PNG)."""
    rows = load()
    vocab = vocabulary(rows["train"])
    x, lengths, labels = encode(rows["train"], vocab)
    vx, vlengths, vlabels = encode(rows["test"], vocab)
    model = Model("rnn", len(vocab), hidden, output_size=2, output="many_to_one",
                  activation="softmax", seed=seed, backend=backend)
    if verbose:
        print(f"sentiment: {len(x)} training and {len(vx)} held-out sentences, {len(vocab)} "
              f"words as one-hot vectors\n{model}")
    start = time.perf_counter()
    history = model.fit(x, labels, lengths, epochs=epochs, batch_size=batch_size,
                        optimizer="adam", lr=lr, clip=("value", 1.0),
                        validation_data=(vx, vlabels, vlengths), seed=seed, verbose=verbose,
                        n_threads=n_threads)
    seconds = time.perf_counter() - start
    result = dict(model=model, history=history, seconds=seconds, vocab=vocab,
                  train_accuracy=model.evaluate(x, labels, lengths,
                                                n_threads=n_threads)["accuracy"],
                  test_accuracy=model.evaluate(vx, vlabels, vlengths,
                                               n_threads=n_threads)["accuracy"],
                  bag_of_words=bag_of_words_accuracy(x, labels, vx, vlabels))
    if plot is not None:
        from ..plot import plot_history

        plot_history(history, plot, title=f"rnnext sentiment: a vanilla RNN of {hidden} units on "
                     f"one-hot words (validation: the held-out sentences)")
    if verbose:
        bow_train, bow_test = result["bag_of_words"]
        print(f"trained in {seconds:.1f} s: training accuracy {result['train_accuracy']:.1%}, "
              f"held-out accuracy {result['test_accuracy']:.1%} (goal: {GOAL_ACCURACY:.0%})\n"
              f"a bag-of-words logistic regression on the same split, without the words' "
              f"order: training accuracy {bow_train:.1%}, held-out {bow_test:.1%}")
        show = slice(0, 8)
        probs = model.predict(vx[show], lengths=vlengths[show], n_threads=n_threads)
        print("held-out sentences (label -> prediction):")
        for (label, words), p in zip(rows["test"][show], probs):
            print(f"  {' '.join(words)!r}: {LABELS[label]} -> {LABELS[int(p.argmax())]} "
                  f"(p = {p.max():.3f})")
        if plot is not None:
            print(f"learning curves written to {plot}")
    return result
