"""Batch inference on engines users already run: Dask (rnnext.engines.dask), Ray Data
(rnnext.engines.ray) and Spark (rnnext.engines.spark). Each is a few lines around Model.predict,
imported only when asked for; the engines stay optional extras.

What they share lives here: ragged sequences (a column of arrays of different lengths) become
one zero-padded batch plus lengths, and come back as one prediction per sequence. Threads are
the worker's share, resolved by rnnext at each call (rnnext.get_num_threads) unless the engine
states it (Spark's task CPUs)."""
import numpy as np

from ..model import Model


def check_model(model):
    """model, or a TypeError where it is not an rnnext.Model."""
    if not isinstance(model, Model):
        raise TypeError(f"model: expected an rnnext.Model, got {type(model).__name__}")
    return model


def check_columns(names, **columns):
    """Raises a ValueError for the first argument (argument=column) whose column is not None and
    not among names, the columns of a frame, dataset or batch."""
    for argument, column in columns.items():
        if column is not None and column not in names:
            raise ValueError(f"{argument}: expected one of the columns {list(names)}, got "
                             f"{column!r}")


def pad(sequences, dtype=None):
    """(x, lengths): sequences of token ids (T_i,) or features (T_i, I), zero-padded at the end to
    the longest into one batch-first array, and their lengths."""
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise ValueError("sequences: expected at least one sequence, got none")
    lengths = np.array([s.shape[0] if s.ndim else 0 for s in seqs], dtype=np.int64)
    if lengths.min() < 1:
        raise ValueError("sequences: expected every sequence to have at least one step, got an "
                         f"empty one at position {int(lengths.argmin())}")
    tail = seqs[0].shape[1:]
    for i, s in enumerate(seqs):
        if s.shape[1:] != tail:
            raise ValueError(f"sequences: expected every step to have shape {tail}, got "
                             f"{s.shape[1:]} at position {i}")
    x = np.zeros((len(seqs), int(lengths.max())) + tail, dtype=dtype or np.result_type(*seqs))
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
    return x, lengths


def predict_ragged(model, sequences, n_threads=None):
    """One prediction per sequence of a ragged batch: (F,) each for a model with a readout,
    (T_i, F) each (its valid steps) for a sequence model."""
    x, lengths = pad(sequences)
    y = model.predict(x, lengths=lengths, n_threads=n_threads)
    if y.ndim == 2:
        return list(y)
    return [y[i, :n] for i, n in enumerate(lengths)]
