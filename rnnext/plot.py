"""Learning curves of fit's history as a PNG (matplotlib, an optional extra: rnnext[plot]).

matplotlib is imported when a plot is drawn, never by `import rnnext`; the figure is drawn on
its own Agg canvas, so the user's pyplot backend and open figures are left alone.
"""
import math
import os
from collections.abc import Mapping

MISSING = ("plot_history needs matplotlib: pip install 'rnnext[plot]' (or pip install "
           "matplotlib)")
PANELS = ("loss", "accuracy")  # each the ylabel and the training curve's key


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(MISSING) from None
    return Figure, FigureCanvasAgg


def _curves(history):
    """{key: list of floats} of the history's curves, all of one length, checked."""
    if not isinstance(history, Mapping):
        raise TypeError(f"history: expected fit's history (a dict of lists per epoch), got "
                        f"{type(history).__name__}")
    if "loss" not in history:
        raise ValueError(f"history: expected a 'loss' key (fit's history), got keys "
                         f"{list(history)}")
    curves = {}
    for key, values in history.items():
        try:
            curves[key] = [float(v) for v in values]
        except (TypeError, ValueError):
            raise TypeError(f"history[{key!r}]: expected a list of numbers, got "
                            f"{values!r}") from None
    epochs = len(curves["loss"])
    if epochs == 0 or any(len(v) != epochs for v in curves.values()):
        raise ValueError(f"history: expected lists of one length >= 1 (one value per epoch), "
                         f"got lengths { {k: len(v) for k, v in curves.items()} }")
    return curves


def _best_epoch(values):
    """The epoch (from 1) of the lowest finite value (the first one on a tie), or None."""
    finite = [(v, epoch) for epoch, v in enumerate(values, 1) if math.isfinite(v)]
    return min(finite)[1] if finite else None


def plot_history(history, path, title=None):
    """Writes fit's history as a PNG at `path` and returns path: the loss curves (loss,
    val_loss) and, if the history has them, the accuracy curves (accuracy, val_accuracy) in a
    second panel, epochs on x; the epoch of the lowest val_loss is marked when there is one."""
    Figure, FigureCanvasAgg = _matplotlib()
    curves = _curves(history)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got "
                        f"{type(path).__name__}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title: expected None or a str, got {type(title).__name__}")
    panels = [key for key in PANELS if key in curves]
    epochs = range(1, len(curves["loss"]) + 1)
    best = _best_epoch(curves["val_loss"]) if "val_loss" in curves else None

    figure = Figure(figsize=(6.4 * len(panels), 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    for i, key in enumerate(panels, 1):
        axes = figure.add_subplot(1, len(panels), i)
        axes.plot(epochs, curves[key], marker=".", label=f"training {key}")
        if "val_" + key in curves:
            axes.plot(epochs, curves["val_" + key], marker=".", label=f"validation {key}")
        if best is not None:
            axes.axvline(best, color="0.4", linestyle=":", label=f"best val_loss (epoch {best})")
        axes.set_xlabel("epoch")
        axes.set_ylabel(key)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend()
    if title is not None:
        figure.suptitle(title)
    figure.savefig(path, format="png", dpi=100)
    return path
