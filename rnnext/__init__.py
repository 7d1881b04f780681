"""rnnext: fast recurrent neural networks (RNN, LSTM, GRU) on CPUs."""
try:
    from . import _core  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on how Python was started
    raise ImportError(
        "rnnext's compiled core (rnnext._core) cannot be imported. If Python runs inside the "
        "rnnext source tree, it imports the uncompiled sources here instead of the installed "
        "package: run from another directory, or build in place with "
        "`python setup.py build_ext --inplace`.") from e
from . import callbacks, config, layers, optim
from .config import __version__, get_num_threads, set_num_threads, show_config, threads
from .convert import from_torch
from .layers import GRU, LSTM, RNN, Dense, Embedding, Masking, Readout
from .plot import plot_history
from .model import Model
from .io import load

config._register_threadpoolctl()

__all__ = ["Model", "layers", "Embedding", "Masking", "RNN", "LSTM", "GRU", "Readout", "Dense",
           "from_torch", "load", "from_onnx", "from_keras", "show_config", "set_num_threads",
           "get_num_threads", "threads", "__version__", "callbacks", "optim", "plot_history"]


def from_onnx(source, backend="c"):
    """A Model from an ONNX graph of LSTM, GRU or RNN nodes (see rnnext.onnx_io.from_onnx)."""
    from .onnx_io import from_onnx

    return from_onnx(source, backend=backend)


def from_keras(model, backend="c", zero_masked_steps=False):
    """A Model from a Keras model (or the path of a .keras or .h5 file) of an optional
    Embedding, LSTM, GRU or SimpleRNN layers, a pooling and Dense layers (see rnnext.keras_io)."""
    from .keras_io import from_keras

    return from_keras(model, backend=backend, zero_masked_steps=zero_masked_steps)
