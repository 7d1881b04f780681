"""The grammar that writes rnnext/data/sentiment.tsv: short sentences whose label depends on word
order and negation, split into training and held-out sentences that are new combinations of
words seen in training.

A clause states a feeling about a topic: "the food was not very good", "it is a lovely game",
"i do not like the music", "i was happy". Its sentiment is its sentiment word's (good, hate,
happy, ...) flipped by "not". A sentence is one clause, two clauses of the same sentiment joined
by "and", or two clauses of opposite sentiments joined by "but", where the second decides
("the food was bad but the music was great" is positive; "the music was great but the food was
bad" is negative, with the same words). So a model must read the order: a bag of words cannot
tell those two apart, and a linear model of word counts cannot flip "good" when "not" occurs
(the label is an exclusive or of the two).

The split holds out pairs: every clause has a topic (its noun, or "am"/"was" when the
speaker talks about themself) and a sentiment word, and a fifth of the (topic, sentiment word)
pairs the grammar can make are held out. A training sentence uses none of them; a held-out
sentence uses at least one, so no held-out sentence occurs in training, and each pairs a topic
with a sentiment word it is never paired with in training. text() checks that every word of a
held-out sentence occurs in training.

Deterministic: `python -m rnnext.tasks.sentiment_grammar` writes the shipped file again (Python's
random.Random with a fixed seed, whose sequence for a given seed is stable across versions).
"""
import random
import sys
from importlib import resources

NOUNS = ("movie", "food", "music", "service", "story", "room", "staff", "ending", "coffee",
         "game")
COUNTABLE = ("movie", "service", "story", "room", "ending", "game")  # "it was a good game"
POSITIVE = {"adjective": ("good", "great", "fun", "nice", "amazing", "lovely"),
            "verb": ("like", "love", "enjoy"), "feeling": ("happy", "glad", "pleased")}
NEGATIVE = {"adjective": ("bad", "boring", "awful", "dull", "terrible", "poor"),
            "verb": ("hate", "dislike"), "feeling": ("sad", "upset", "bored")}
INTENSIFIERS = ("very", "really", "truly")
LABELS = ("neg", "pos")


def _intensified(rng, word):
    """word, after an intensifier half of the time."""
    return [rng.choice(INTENSIFIERS), word] if rng.random() < 0.5 else [word]


def clause(rng, sentiment):
    """(words, (topic, sentiment word)) of a random clause whose sentiment is `sentiment`
    (1 positive, 0 negative): half of the time "not" flips a word of the other polarity."""
    negated = rng.random() < 0.5
    words = (POSITIVE, NEGATIVE)[sentiment == negated]
    form = rng.choice(("the noun is", "it is a", "i like", "i am"))
    noun = rng.choice(COUNTABLE if form == "it is a" else NOUNS)
    if form == "i like":
        verb = rng.choice(words["verb"])
        return ["i"] + ["do", "not"] * negated + [verb, "the", noun], (noun, verb)
    if form == "i am":
        copula = rng.choice(("am", "was"))
        feeling = rng.choice(words["feeling"])
        return ["i", copula] + ["not"] * negated + _intensified(rng, feeling), (copula, feeling)
    copula = rng.choice(("is", "was"))
    adjective = rng.choice(words["adjective"])
    if form == "it is a":
        return (["it", copula] + ["not"] * negated + ["a"] + _intensified(rng, adjective)
                + [noun], (noun, adjective))
    return (["the", noun, copula] + ["not"] * negated + _intensified(rng, adjective),
            (noun, adjective))


def sentence(rng, label):
    """(words, pairs) of a random sentence labelled `label`: one clause (2 in 5), two of the same
    sentiment joined by "and" (1 in 5), or two joined by "but" where the second has the label
    and the first the other sentiment (2 in 5)."""
    kind = rng.choice(("one", "one", "and", "but", "but"))
    last, pair = clause(rng, label)
    if kind == "one":
        return last, [pair]
    first, first_pair = clause(rng, label if kind == "and" else 1 - label)
    return first + [kind] + last, [first_pair, pair]


def all_pairs():
    """Every (topic, sentiment word) pair the grammar can make, in a fixed order."""
    pairs = []
    for words in (POSITIVE, NEGATIVE):
        pairs += [(noun, w) for noun in NOUNS for w in words["adjective"] + words["verb"]]
        pairs += [(copula, w) for copula in ("am", "was") for w in words["feeling"]]
    return pairs


def generate(train_size=1600, test_size=400, held_out_pairs=0.2, seed=0):
    """{"train": [(label, words)], "test": [(label, words)]}: distinct sentences, labels
    alternating within each part, the test sentences each with at least one held-out pair and
    the training sentences with none."""
    rng = random.Random(seed)
    pairs = all_pairs()
    held_out = set(rng.sample(pairs, round(len(pairs) * held_out_pairs)))
    rows = {"train": [], "test": []}
    sizes = {"train": train_size, "test": test_size}
    seen = set()
    draws = 0
    while any(len(rows[s]) < sizes[s] for s in rows):
        label, draws = draws % 2, draws + 1
        words, used = sentence(rng, label)
        part = "test" if held_out.intersection(used) else "train"
        wanted = len(rows[part]) < sizes[part] and label == len(rows[part]) % 2
        if wanted and tuple(words) not in seen:
            seen.add(tuple(words))
            rows[part].append((label, words))
    return rows


def text(**kwargs):
    """The data file's text: comment lines, then split<TAB>label<TAB>sentence per line. Raises
    ValueError if a held-out sentence has a word that no training sentence has."""
    rows = generate(**kwargs)
    vocabulary = {w for _, words in rows["train"] for w in words}
    unseen = sorted({w for _, words in rows["test"] for w in words} - vocabulary)
    if unseen:
        raise ValueError(f"held-out words: expected every one in the training sentences, got "
                         f"{unseen} only in held-out sentences")
    lines = ["# split<TAB>label<TAB>sentence, written by rnnext/tasks/sentiment_grammar.py",
             "# A sentence's label is the sentiment of its last clause; 'not' flips a clause.",
             "# Written for rnnext; dedicated to the public domain (CC0)."]
    for part in ("train", "test"):
        lines += [f"{part}\t{LABELS[label]}\t{' '.join(words)}" for label, words in rows[part]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # the package's own data file, wherever this runs from
    path = sys.argv[1] if len(sys.argv) > 1 else resources.files("rnnext") / "data" / \
        "sentiment.tsv"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text())
