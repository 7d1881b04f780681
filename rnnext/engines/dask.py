"""Batch inference on Dask: predict_array over a dask array of padded rows, predict_frame over a
dask DataFrame with a column of ragged sequences.

The model travels once per worker. It is wrapped as dask.delayed(model, pure=True): one key in
the graph that every block's task names as a dependency, so the model is pickled once into the
graph; distributed materializes that key on one worker and copies it once to each other
worker that runs a block, where it stays while the blocks need it. Passed bare, dask would embed
the model in every task (it wraps only arguments that dask.sizeof reports above 1 MB, and a Model
reports a few bytes). A delayed key rather than client.scatter(model, broadcast=True): it needs no Client
when the graph is built, works the same on the threaded and process schedulers, and ships
nothing until a graph is computed and nothing that outlives it.

Threads: every block runs Model.predict with n_threads=None, which rnnext resolves in the worker
process at call time from OMP_NUM_THREADS (capped by the CPUs the process may use). A
distributed Nanny sets OMP_NUM_THREADS=1 in its worker processes by default (the
distributed.nanny.pre-spawn-environ config), so each of a worker's `threads_per_worker` tasks
runs on one core; a worker started with env={"OMP_NUM_THREADS": "k"} gives each task k threads.
A worker forked (multiprocessing-method "fork") from a parent that had run rnnext's threads runs
on one thread, which keeps OpenMP from hanging there. On dask's local threaded scheduler every
block would take all the cores at once: compute within rnnext.threads(1) there.
"""
import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

from ..model import Model
from . import check_columns, check_model, predict_ragged


def predict_array(model, x, lengths=None):
    """Lazy predictions of `model` over a dask array, one Model.predict per block of rows.

    x: a dask array chunked along its batch axis, of float features (B, T, I), or of token ids
    (B, T) for a model that starts with an Embedding; its other axes are rechunked to one chunk.
    lengths: None, or each row's valid steps (B,): a NumPy array, or a dask array with x's
    chunks along the batch axis. Returns a lazy float32 dask array with x's batch chunks:
    (B, F) for a model with a readout, (B, T, F) for a sequence model.
    """
    check_model(model)
    if not isinstance(x, da.Array):
        raise TypeError(f"x: expected a dask array, got {type(x).__name__}")
    if model.input_size is None and x.ndim != 2:
        raise ValueError(f"x: expected token ids (B, T) for a model with an Embedding, got shape "
                         f"{x.shape}")
    if model.input_size is not None and (x.ndim != 3 or x.shape[2] != model.input_size):
        raise ValueError(f"x: expected features (B, T, {model.input_size}), got shape {x.shape}")
    x = x.rechunk({axis: -1 for axis in range(1, x.ndim)})
    x_index = "bt" if x.ndim == 2 else "bti"
    lengths_block = []
    if lengths is not None:
        if not isinstance(lengths, da.Array):
            lengths = np.asarray(lengths)
            if lengths.shape != x.shape[:1]:
                raise ValueError(f"lengths: expected shape {x.shape[:1]}, got {lengths.shape}")
            lengths = da.from_array(lengths, chunks=x.chunks[:1])
        elif lengths.chunks != x.chunks[:1]:
            raise ValueError(f"lengths: expected a dask array with x's batch chunks {x.chunks[:1]}"
                             f", got shape {lengths.shape} in chunks {lengths.chunks} (rechunk it "
                             f"with lengths.rechunk(x.chunks[0]))")
        lengths_block = [lengths, "b"]
    # blockwise rather than map_blocks: it names the batch axis of x and lengths alike, where
    # map_blocks would line (B,) up with x's last axis. Indices t and i, one chunk each, are
    # dropped where the output has no such axis; f is the new output axis.
    out_index = "btf" if model.per_step else "bf"
    return da.blockwise(Model.predict, out_index, dask.delayed(model, pure=True), None,
                        x, x_index, *lengths_block, new_axes={"f": model.output_size},
                        concatenate=True, dtype=np.float32,
                        meta=np.empty((0,) * len(out_index), np.float32), token="rnnext-predict")


def _predict_partition(part, model, column, output_column):
    """The pandas partition with output_column added: predict_ragged over part[column], one
    array per row (an empty partition, as the frame's meta is, predicts nothing)."""
    out = part.copy()
    out[output_column] = pd.Series(predict_ragged(model, part[column]) if len(part) else [],
                                   index=part.index, dtype=object)
    return out


def predict_frame(model, df, column, output_column="prediction"):
    """The dask DataFrame `df` with an object column `output_column` added: per row the
    prediction of the sequence in `column`, which holds NumPy arrays of token ids (T_i,) or
    features (T_i, I) of any lengths: (F,) with a readout, (T_i, F) for a sequence model.

    The column must have dtype object: dask turns object columns into strings when it makes a
    frame from pandas (dd.from_pandas, the default dataframe.convert-string), so make such a
    frame within dask.config.set({"dataframe.convert-string": False}).
    """
    check_model(model)
    if not isinstance(df, dd.DataFrame):
        raise TypeError(f"df: expected a dask DataFrame, got {type(df).__name__}")
    check_columns(df.columns, column=column)
    if df[column].dtype != object:
        raise ValueError(f"column: expected {column!r} to be an object column of arrays, got "
                         f"dtype {df[column].dtype}; dask made it strings if the frame came from "
                         "pandas: make it within dask.config.set({'dataframe.convert-string': "
                         "False})")
    meta = _predict_partition(df._meta, model, column, output_column)
    return df.map_partitions(_predict_partition, dask.delayed(model, pure=True), column,
                             output_column, meta=meta)
