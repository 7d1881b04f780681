"""The two classic tasks, with their data shipped in rnnext/data/ (see rnnext/data/README.md):

- sentiment: many-to-one classification of short sentences (one-hot words, a vanilla RNN, a
  softmax over positive/negative);
- charlm: a character-level LSTM language model trained with truncated backpropagation through
  time, then sampled with a temperature.

Each runs from the command line (`rnnext sentiment`, `rnnext charlm`) and from Python
(rnnext.tasks.sentiment.run, rnnext.tasks.charlm.run).
"""
from importlib import resources


def data_text(name):
    """The text of the data file `name` shipped in rnnext/data/."""
    return resources.files("rnnext").joinpath("data", name).read_text(encoding="utf-8")
