"""rnnext: fast recurrent neural networks (RNN, LSTM, GRU) on CPUs."""
try:
    from . import _core  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on how Python was started
    raise ImportError(
        "rnnext's compiled core (rnnext._core) cannot be imported. If Python runs inside the "
        "rnnext source tree, it imports the uncompiled sources here instead of the installed "
        "package: run from another directory, or build in place with "
        "`python setup.py build_ext --inplace`.") from e
from .config import __version__, show_config
from .convert import from_torch
from .model import Model

__all__ = ["Model", "from_torch", "show_config", "__version__"]
