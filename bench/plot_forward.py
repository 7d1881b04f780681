"""bench_forward.py --plot: ms per forward against H, one panel per (cell, batch, threads), one
line per backend and precision (solid fp32, dashed bf16, dotted int8), on a log scale (times
span three orders of magnitude)."""
import math

from anchors import engine_label, precision_of
from common import optional_import

PANEL_COLUMNS = 3
LINE_STYLES = {"fp32": "-", "bf16": "--", "int8": ":"}


def plot_ms(points, path):
    """Writes the PNG of bench_forward's point records to path; None, or why there is no plot.
    Matplotlib's object API (no pyplot), so the caller's pyplot backend does not matter."""
    figure_module = optional_import("matplotlib.figure")
    if figure_module is None:
        return "matplotlib not importable (pip install matplotlib)"
    panels = list(dict.fromkeys((r["cell"], r["batch"], r["threads"]) for r in points))
    columns = min(PANEL_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = figure_module.Figure(figsize=(5 * columns, 4 * rows))
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for ax, (cell, batch, threads) in zip(axes, panels):
        records = [r for r in points if (r["cell"], r["batch"], r["threads"]) ==
                   (cell, batch, threads)]
        for name in dict.fromkeys(n for r in records for n in r["backends"]):
            timed = sorted((r["hidden"], r["backends"][name]["ms"]) for r in records
                           if "ms" in r["backends"].get(name, {}))
            if timed:
                ax.plot(*zip(*timed), LINE_STYLES[precision_of(name)], marker="o",
                        label=engine_label(name, with_precision=True))
        ax.set(title=f"{cell} B={batch} threads={threads}", xlabel="H (hidden size)",
               ylabel="ms per forward", yscale="log")
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return None
