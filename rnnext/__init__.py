"""rnnext: fast recurrent neural networks (RNN, LSTM, GRU) on CPUs."""
from .config import __version__, show_config
from .convert import from_torch
from .model import Model

__all__ = ["Model", "from_torch", "show_config", "__version__"]
