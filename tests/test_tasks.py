"""The classic tasks: their shipped data, encodings, sampling, and short smoke runs (the full
runs take about a minute each: `rnnext sentiment`, `rnnext charlm`)."""
import collections
import re

import numpy as np
import pytest

from rnnext import Model, cli
from rnnext.tasks import charlm, sentiment


def test_sentiment_data_and_encoding():
    rows = sentiment.load()
    assert len(rows) == 420
    labels = collections.Counter(label for label, _ in rows)
    assert set(labels) == {0, 1} and min(labels.values()) > 150
    vocab = sentiment.vocabulary(rows)
    assert len(vocab) == 87 and "not" in vocab and "but" in vocab
    x, lengths, y = sentiment.encode(rows[:5], vocab)
    assert x.shape == (5, max(len(w) for _, w in rows[:5]), 87)
    for n, (label, words) in enumerate(rows[:5]):
        assert lengths[n] == len(words) and y[n] == label
        assert [vocab[i] for i in x[n, :lengths[n]].argmax(axis=1)] == words
        assert x[n, lengths[n]:].sum() == 0 and x[n, :lengths[n]].sum() == len(words)
    train, test = sentiment.split(420, 0.2, seed=0)
    assert len(test) == 84 and not set(train) & set(test) and len(train) + len(test) == 420


def test_sentiment_short_run_learns():
    result = sentiment.run(epochs=40, verbose=False)
    history = result["history"]
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert result["train_accuracy"] > 0.8
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_charlm_text_streams_and_entropy():
    text = charlm.load()
    assert text.startswith("CHAPTER I.") and len(text) > 20000
    chars = charlm.alphabet(text)
    counts = collections.Counter(text)
    p = np.array(list(counts.values())) / len(text)
    assert charlm.unigram_entropy(text) == pytest.approx(float(-(p * np.log2(p)).sum()))
    x, y = charlm.streams("abcdefghij", ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], 3)
    assert x.shape == (3, 3, 10)
    np.testing.assert_array_equal(x.argmax(-1), [[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    np.testing.assert_array_equal(y, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert len(chars) == len(counts)


def test_charlm_short_run_and_sampling():
    result = charlm.run(hidden=32, epochs=3, streams_count=8, bptt=25, sample_length=50,
                        verbose=False)
    history = result["history"]
    assert history["loss"][-1] < history["loss"][0]
    assert result["train_bits"] < result["unigram_bits"]
    sample = result["sample"]
    assert sample.startswith("Alice ") and len(sample) == 56
    assert set(sample) <= set(result["chars"])
    # near zero temperature each draw is the most likely character: greedy decoding by hand
    model, chars = result["model"], result["chars"]
    greedy = "Alice "
    for _ in range(20):
        probs, _ = model.forward(charlm.one_hot(np.array([chars.index(c) for c in greedy]),
                                                len(chars)))
        greedy += chars[int(probs[-1].argmax())]
    assert charlm.sample(model, chars, 20, temperature=1e-4, seed=1) == greedy
    with pytest.raises(ValueError, match="temperature: expected a number > 0, got 0"):
        charlm.sample(result["model"], result["chars"], 5, temperature=0)
    with pytest.raises(ValueError, match="prime: expected a non-empty text"):
        charlm.sample(result["model"], result["chars"], 5, prime="\u00e9")


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_charlm_sampling_on_a_stream_draws_what_forward_gives(backend):
    """sample runs the drawn characters on a stream from the prime's state: the same text as
    running Model.forward on each character with the state passed back, by hand."""
    chars = [chr(ord("a") + i) for i in range(12)]
    V = len(chars)
    model = Model("lstm", V, 24, output_size=V, output="many_to_many", activation="softmax",
                  seed=1, backend=backend)
    rng = np.random.default_rng(4)
    probs, state = model.forward(charlm.one_hot(np.array([chars.index(c) for c in "bad"]), V))
    p, text = probs[-1], "bad"
    for _ in range(60):
        logp = np.log(np.maximum(p, 1e-30)) / 1.3
        q = np.exp(logp - logp.max())
        c = int(rng.choice(V, p=q / q.sum()))
        text += chars[c]
        probs, state = model.forward(charlm.one_hot(np.array([c]), V), state=state)
        p = probs[-1]
    assert charlm.sample(model, chars, 60, temperature=1.3, prime="bad", seed=4) == text


def test_charlm_samples_from_a_saved_model(tmp_path, capsys):
    path = tmp_path / "charlm.rnx"
    result = charlm.run(hidden=16, epochs=1, streams_count=4, bptt=25, sample_length=10,
                        verbose=False, save=path)
    expected = charlm.sample(result["model"], result["chars"], 30, temperature=0.5, seed=3)
    assert charlm.sample_saved(path, 30, temperature=0.5, seed=3) == expected
    assert cli.main(["charlm", "--load", str(path), "--length", "30", "--temperature", "0.5",
                     "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == expected.strip()
    other = tmp_path / "other.rnx"
    Model("lstm", 3, 4, output_size=3).save(other)
    with pytest.raises(ValueError, match="path: expected a charlm model"):
        charlm.sample_saved(other)


def test_command_line_runs_both_tasks(capsys):
    """The exit status says whether the task reached its goal (100% training accuracy; fewer
    bits per character than the unigram entropy), which a run this short need not."""
    status = cli.main(["sentiment", "--epochs", "2"])
    out = capsys.readouterr().out
    assert "336 training and 84 held-out sentences, 87 words" in out
    assert status == (0 if "training accuracy 100.0%" in out else 1)
    status = cli.main(["charlm", "--epochs", "1", "--hidden", "16", "--length", "20"])
    out = capsys.readouterr().out
    assert "sample at temperature 0.7:" in out and "unigram entropy" in out
    bits = re.search(r"([0-9.]+) bits/char on the training text.* unigram entropy of ([0-9.]+)",
                     out)
    assert status == (0 if float(bits.group(1)) < float(bits.group(2)) else 1)
