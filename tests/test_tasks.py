"""The classic tasks: their shipped data and its split, encodings, the bag-of-words baseline,
sampling, early stopping, and runs from the command line (sentiment with its defaults, seconds;
charlm in short runs: its defaults take about a minute).

Outside sources: an English reading of each sentence written here, torch's LBFGS for the
logistic regression, the PNG signature, and fit's history for the kept epoch."""
import collections
import re

import numpy as np
import pytest

from rnnext import Model, cli
from rnnext.io import load as load_model
from conftest import read_png
from rnnext.tasks import charlm, data_text, sentiment, sentiment_grammar


# English, written here rather than read from the grammar: the test's own reading of a sentence
POSITIVE = {"good", "great", "fun", "nice", "amazing", "lovely", "like", "love", "enjoy", "happy",
            "glad", "pleased"}
NEGATIVE = {"bad", "boring", "awful", "dull", "terrible", "poor", "hate", "dislike", "sad",
            "upset", "bored"}


def clauses(words):
    """The clauses of a sentence: its words split at "and" and "but"."""
    return [c.split() for c in re.split(r"\b(?:and|but)\b", " ".join(words))]


def read_clause(words):
    """(topic, sentiment word, sentiment) of a clause: its noun (the word after "the" or before
    the end of "it is a ... noun"), or the speaker's verb for "i am/was ..."."""
    [feeling] = [w for w in words if w in POSITIVE | NEGATIVE]
    if words[0] == "i" and words[1] in ("am", "was"):
        topic = words[1]
    else:
        topic = words[words.index("the") + 1] if "the" in words else words[-1]
    return topic, feeling, int((feeling in POSITIVE) != ("not" in words))


def test_sentiment_file_is_the_grammars_output_and_its_labels_read_right():
    assert sentiment_grammar.text() == data_text("sentiment.tsv")
    rows = sentiment.load()
    assert {k: len(v) for k, v in rows.items()} == {"train": 1600, "test": 400}
    for part in rows.values():
        assert abs(sum(label for label, _ in part) - len(part) / 2) <= 1
        for label, words in part:  # the last clause's sentiment, "not" flipping it
            assert label == read_clause(clauses(words)[-1])[2], words
    examples = {"pos": ["the food was bad but the music was great", "the movie is not bad",
                        "i do not hate the coffee", "i was not sad and it is a fun game"],
                "neg": ["the music was great but the food was bad", "the movie is not good",
                        "i do not like the coffee", "i was not very happy"]}
    for label, sentences in examples.items():
        for words in map(str.split, sentences):
            assert sentiment_grammar.LABELS[read_clause(clauses(words)[-1])[2]] == label


def test_sentiment_split_holds_out_new_combinations_of_known_words():
    rows = sentiment.load()
    train_words = set(sentiment.vocabulary(rows["train"]))
    assert {"not", "but", "and"} <= train_words
    assert set(sentiment.vocabulary(rows["test"])) <= train_words
    train_sentences = {tuple(words) for _, words in rows["train"]}
    assert not train_sentences & {tuple(words) for _, words in rows["test"]}
    assert len(train_sentences) == len(rows["train"])
    train_pairs = {read_clause(c)[:2] for _, words in rows["train"] for c in clauses(words)}
    for _, words in rows["test"]:  # each pairs a topic with a feeling never paired in training
        assert any(read_clause(c)[:2] not in train_pairs for c in clauses(words)), words
    # the words alone cannot tell: sentences with the same words and opposite labels
    bags = collections.defaultdict(set)
    for label, words in rows["train"] + rows["test"]:
        bags[tuple(sorted(words))].add(label)
    assert sum(len(labels) == 2 for labels in bags.values()) >= 3


def test_sentiment_encoding():
    rows = sentiment.load()["train"][:5]
    vocab = sentiment.vocabulary(sentiment.load()["train"])
    x, lengths, y = sentiment.encode(rows, vocab)
    assert x.shape == (5, max(len(w) for _, w in rows), len(vocab))
    for n, (label, words) in enumerate(rows):
        assert lengths[n] == len(words) and y[n] == label
        assert [vocab[i] for i in x[n, :lengths[n]].argmax(axis=1)] == words
        assert x[n, lengths[n]:].sum() == 0 and x[n, :lengths[n]].sum() == len(words)


def test_logistic_regression_is_torchs_minimum_of_the_same_loss():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    features = rng.poisson(1.0, (60, 5)).astype(np.float64)
    labels = (features @ [1.0, -2.0, 0.5, 0.0, 1.0] + rng.normal(0, 1, 60) > 0.5).astype(float)
    weights, bias = sentiment.logistic_regression(features, labels, l2=0.05)
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    X, t = torch.tensor(features), torch.tensor(labels)
    lbfgs = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-12, tolerance_change=0,
                              line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        z = X @ w[:5] + w[5]
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, t)
                + 0.05 / 2 * (w[:5] ** 2).sum())
        loss.backward()
        return loss

    lbfgs.step(closure)
    np.testing.assert_allclose(np.append(weights, bias), w.detach().numpy(), atol=1e-6)


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
    result = charlm.run(text=charlm.load()[:8000], hidden=32, epochs=3, streams_count=8,
                        bptt=25, sample_length=50, verbose=False)
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


def test_charlm_keeps_saves_and_reports_the_best_held_out_epoch(tmp_path):
    """A short run on the text's start that overfits (a large learning rate): early stopping
    ends it, the kept weights are those of the lowest held-out loss, and the saved file is them."""
    pytest.importorskip("matplotlib")
    path, png = tmp_path / "best.rnx", tmp_path / "curves.png"
    text = charlm.load()[:4000]
    result = charlm.run(text=text, hidden=64, lr=0.03, epochs=15, patience=3, streams_count=4,
                        bptt=25, input_dropout=0.0, head_dropout=0.0, sample_length=20,
                        verbose=False, save=path, plot=png)
    val_loss = result["history"]["val_loss"]
    best = int(np.argmin(val_loss)) + 1
    assert result["best_epoch"] == best and best < len(val_loss) < 15  # stopped, past the best
    assert result["test_bits"] * np.log(2) == pytest.approx(min(val_loss), rel=1e-6)
    vx, vy = charlm.streams(text[int(len(text) * 0.9):], result["chars"], 1)
    saved = load_model(path)
    np.testing.assert_allclose(saved.predict(vx), result["model"].predict(vx), rtol=1e-6)
    assert saved.evaluate(vx, vy, bptt=25)["loss"] == pytest.approx(min(val_loss), rel=1e-6)
    read_png(png)


def test_command_line_runs_both_tasks(tmp_path, capsys):
    """The exit status says whether the task reached its goal on the held-out data (sentiment:
    an accuracy of at least 90% with the defaults; charlm: fewer bits per character than
    GOAL_BITS, which a run this short does not reach)."""
    pytest.importorskip("matplotlib")
    png = tmp_path / "sentiment.png"
    assert cli.main(["sentiment", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    # the counts read from the shipped file here: "split<TAB>label<TAB>sentence" lines
    rows = [line.split("\t") for line in data_text("sentiment.tsv").splitlines()
            if line and not line.startswith("#")]
    counts = collections.Counter(split for split, _, _ in rows)
    words = {w for split, _, sentence in rows if split == "train" for w in sentence.split()}
    assert (f"{counts['train']} training and {counts['test']} held-out sentences, "
            f"{len(words)} words") in out
    accuracy = float(re.search(r"held-out accuracy ([0-9.]+)%", out).group(1))
    bow = float(re.search(r"logistic regression .*held-out ([0-9.]+)%", out).group(1))
    assert accuracy >= 90 and bow < 70  # the order of the words is what teaches
    assert "epoch 30/30  loss" in out
    assert len(re.findall(r"^  '[a-z ]+': (pos|neg) -> (pos|neg) \(p = ", out, re.M)) == 8
    read_png(png)
    status = cli.main(["charlm", "--epochs", "1", "--hidden", "16", "--length", "20"])
    out = capsys.readouterr().out
    assert "sample at temperature 0.7:" in out and "kept the weights of epoch 1" in out
    bits = float(re.search(r"([0-9.]+) on the held-out text", out).group(1))
    assert bits > charlm.GOAL_BITS and status == 1
