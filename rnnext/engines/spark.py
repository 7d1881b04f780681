"""Batch inference on Spark: predict(model, df, column) adds a column of predictions to a Spark
DataFrame whose `column` holds one sequence per row.

The model is broadcast once; each task scores its partition in pandas batches (mapInPandas)
through rnnext.engines.predict_ragged, on the CPUs Spark gave the task (spark.task.cpus)."""
import numpy as np
from pyspark import TaskContext
from pyspark.errors import PySparkAttributeError
from pyspark.sql import DataFrame
from pyspark.sql.types import (ArrayType, DoubleType, FloatType, IntegralType, StructField,
                               StructType)

from . import check_columns, check_model, predict_ragged


def predict(model, df, column, output_column="prediction"):
    """df with output_column added: the model's prediction for the sequence in `column` of each
    row.

    column: array<int> or array<bigint> of token ids for a model with an Embedding, else
    array<array<float>> or array<array<double>> of steps of features; each row at least one step,
    of its own length. output_column: array<float> (the model's F outputs) for a model with a
    readout; array<array<float>> (one array of F per valid step) for a sequence model.
    Lazy like any DataFrame: the work happens when the result is used."""
    check_model(model)
    if not isinstance(df, DataFrame):
        raise TypeError(f"df: expected a Spark DataFrame, got {type(df).__name__}")
    try:
        context = df.sparkSession.sparkContext
    except PySparkAttributeError:
        raise TypeError("df: expected a DataFrame of a classic SparkSession, got one of a Spark "
                        "Connect session, which has no SparkContext to broadcast the model "
                        "with") from None
    check_columns(df.columns, column=column)
    if output_column in df.columns:
        raise ValueError(f"output_column: expected a name that is not yet a column of df, got "
                         f"{output_column!r}")
    _check_type(model, column, df.schema[column].dataType)
    steps = ArrayType(FloatType(), containsNull=False)
    schema = StructType(df.schema.fields + [StructField(
        output_column, ArrayType(steps, containsNull=False) if model.per_step else steps)])
    return df.mapInPandas(_scorer(context.broadcast(model), column, output_column), schema)


def _check_type(model, column, dtype):
    """Refuses a column whose Spark type is not the sequences the model takes."""
    if model.input_size is None:
        fits = isinstance(dtype, ArrayType) and isinstance(dtype.elementType, IntegralType)
        wanted = "array<int> or array<bigint> of token ids (the model starts with an Embedding)"
    else:
        fits = (isinstance(dtype, ArrayType) and isinstance(dtype.elementType, ArrayType)
                and isinstance(dtype.elementType.elementType, (FloatType, DoubleType)))
        wanted = (f"array<array<float>> or array<array<double>> of {model.input_size} features "
                  "per step")
    if not fits:
        raise TypeError(f"column: expected {wanted}, got column {column!r} of type "
                        f"{dtype.simpleString()}")


def _scorer(shipped, column, output_column):
    """The function mapInPandas runs on each partition: pandas batches in, the same batches with
    output_column added out."""
    def score(batches):
        model = shipped.value
        # The task's CPUs, stated rather than left to n_threads=None: Spark sets the Python
        # workers' OMP_NUM_THREADS to spark.task.cpus only where spark.executorEnv.OMP_NUM_THREADS
        # is unset (pyspark 4.3), and a reused worker keeps any rnnext.set_num_threads of an
        # earlier task; the task's CPUs are what the scheduler reserved for it.
        n_threads = TaskContext.get().cpus()
        for batch in batches:
            # Arrow hands an array column to pandas as NumPy arrays per row; a row of features
            # as an object array of per-step arrays, stacked here into (T_i, I).
            sequences = [np.stack(s) if s.dtype == object else s for s in batch[column]]
            predictions = predict_ragged(model, sequences, n_threads=n_threads)
            if model.per_step:   # Arrow takes nested lists of 1-D arrays, not 2-D arrays
                predictions = [list(p) for p in predictions]
            yield batch.assign(**{output_column: predictions})
    return score
