"""Batch inference on Ray Data: `predict_dataset` adds a prediction column to a Dataset, scored
by a pool of actors that each hold the model (Predictor, a callable class for map_batches).

Threads: Ray sets OMP_NUM_THREADS to the CPUs a task or actor reserved (num_cpus, rounded down,
at least 1) unless the environment already sets it; rnnext reads it at each call, so an actor
with num_cpus=k predicts on k threads.

    import ray
    from rnnext.engines.ray import predict_dataset

    ds = ray.data.from_items([{"x": ids} for ids in sequences])   # ragged token ids
    out = predict_dataset(model, ds, concurrency=2).take_all()   # rows gain "prediction"
"""
import numpy as np
import ray
import ray.data

from . import check_columns, check_model, predict_ragged


class Predictor:
    """A callable class for Dataset.map_batches(batch_format="numpy"): it gets the model once,
    when Ray constructs it in an actor, and adds `output_column` to every batch it is called on.

    model: an rnnext.Model or an ObjectRef of one (fetched here: Ray Data does not resolve
    references in fn_constructor_args). column holds the inputs: either ragged sequences (an
    object array of token ids (T_i,) or features (T_i, I)), scored through predict_ragged, or a
    tensor (B, T) / (B, T, I), scored by model.predict with lengths_column's (B,) valid steps
    where given. The output column holds (F,) per row for a model with a readout, else
    (T_i, F) per ragged row or (T, F) per tensor row. Threads follow OMP_NUM_THREADS at each
    call, which Ray sets to the actor's num_cpus."""

    def __init__(self, model, column="x", lengths_column=None, output_column="prediction"):
        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        self.model = check_model(model)
        self.column = column
        self.lengths_column = lengths_column
        self.output_column = output_column

    def __call__(self, batch):
        check_columns(batch, column=self.column, lengths_column=self.lengths_column)
        x = batch[self.column]
        if x.dtype == object:
            if self.lengths_column is not None:
                raise ValueError(f"lengths_column: expected None for the ragged column "
                                 f"{self.column!r} (its arrays carry their lengths), got "
                                 f"{self.lengths_column!r}")
            rows = predict_ragged(self.model, x)
            if rows[0].ndim == 1:   # a readout: (F,) each
                y = np.stack(rows)
            else:                   # (T_i, F) each: an object array, as Ray gives ragged columns
                y = np.empty(len(rows), dtype=object)
                for i, row in enumerate(rows):
                    y[i] = row
        else:
            lengths = None if self.lengths_column is None else batch[self.lengths_column]
            y = self.model.predict(x, lengths=lengths)
        batch[self.output_column] = y
        return batch


def predict_dataset(model, ds, column="x", lengths_column=None, output_column="prediction",
                    concurrency=None, num_cpus=1, batch_size=256):
    """The lazy Dataset `ds` with `output_column` added: the model's predictions for `column`
    (see Predictor for the kinds of columns and outputs), in rows of `batch_size` per call.

    The model is put in the object store once and fetched once by each actor. concurrency: the
    number of actors (None: Ray Data's autoscaling pool from 1 up); num_cpus: the CPUs each
    actor reserves, which are the threads it predicts on. Leave CPUs free for the tasks that
    read `ds`: actors holding every CPU wait for blocks that no read task can make."""
    check_model(model)
    names = ds.columns(fetch_if_missing=False)
    if names is not None:
        check_columns(names, column=column, lengths_column=lengths_column)
    compute = None if concurrency is None else ray.data.ActorPoolStrategy(size=concurrency)
    return ds.map_batches(Predictor, fn_constructor_args=(ray.put(model), column, lengths_column,
                                                          output_column),
                          compute=compute, num_cpus=num_cpus, batch_size=batch_size,
                          batch_format="numpy")
