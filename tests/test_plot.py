"""rnnext.plot_history: a PNG that matplotlib reads back, an optional dependency.

Outside sources: the PNG signature and matplotlib's own reader; a fresh interpreter for what
`import rnnext` imports and for the message without matplotlib.
"""
import sys

import numpy as np
import pytest

import rnnext
from conftest import read_png, run_python
from rnnext.plot import _best_epoch

HISTORY = {"loss": [0.9, 0.6, 0.4, 0.3], "accuracy": [0.5, 0.7, 0.8, 0.9],
           "val_loss": [0.8, 0.5, 0.55, 0.7], "val_accuracy": [0.55, 0.75, 0.7, 0.7],
           "lr": [0.1, 0.1, 0.01, 0.01]}


def test_plot_history_writes_a_png_with_one_panel_per_kind_of_curve(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()
    both = rnnext.plot_history(HISTORY, tmp_path / "both.png", title="GRU")
    assert both == tmp_path / "both.png"
    losses_only = {k: HISTORY[k] for k in ("loss", "val_loss")}
    loss_path = str(tmp_path / "loss.png")
    assert rnnext.plot_history(losses_only, loss_path) == loss_path
    two, one = read_png(both), read_png(loss_path)
    assert two.shape[0] == one.shape[0] and two.shape[1] == 2 * one.shape[1]
    assert two.shape[2] in (3, 4) and two[..., :3].std() > 0.05  # drawn on, not blank
    assert matplotlib.get_backend() == backend
    if "matplotlib.pyplot" in sys.modules:  # no figure of the user's pyplot was opened
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_a_fit_history_plots(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 4, 2)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64)
    model = rnnext.Model("rnn", 2, 4, output_size=2, seed=0)
    history = model.fit(x, y, epochs=3, validation_data=(x, y), verbose=False)
    read_png(rnnext.plot_history(history, tmp_path / "fit.png"))


def test_the_marked_epoch_is_numpys_nanargmin():
    rng = np.random.default_rng(1)
    for values in [rng.choice([0.1, 0.2, 0.3, np.nan], size=7) for _ in range(20)]:
        expected = None if np.isnan(values).all() else int(np.nanargmin(values)) + 1
        assert _best_epoch(list(values)) == expected
    assert _best_epoch([np.nan, np.nan]) is None


def test_import_rnnext_does_not_import_matplotlib():
    result = run_python("import sys, rnnext; print('matplotlib' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_without_matplotlib_the_message_says_how_to_install_it():
    result = run_python("""
        import sys
        sys.modules["matplotlib"] = None
        import rnnext
        try:
            rnnext.plot_history({"loss": [1.0]}, "never.png")
        except ImportError as e:
            print(e)
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("plot_history needs matplotlib: pip install 'rnnext[plot]' "
                                     "(or pip install matplotlib)")


@pytest.mark.parametrize("history,path,title,exc,match", [
    ([0.5, 0.4], "h.png", None, TypeError,
     r"^history: expected fit's history \(a dict of lists per epoch\), got list$"),
    ({"val_loss": [0.5]}, "h.png", None, ValueError,
     r"^history: expected a 'loss' key \(fit's history\), got keys \['val_loss'\]$"),
    ({"loss": [0.5, 0.4], "val_loss": [0.5]}, "h.png", None, ValueError,
     r"^history: expected lists of one length >= 1 .*got lengths \{'loss': 2, 'val_loss': 1\}"),
    ({"loss": []}, "h.png", None, ValueError, r"^history: expected lists of one length >= 1"),
    ({"loss": ["a"]}, "h.png", None, TypeError,
     r"^history\['loss'\]: expected a list of numbers, got \['a'\]$"),
    ({"loss": [0.5]}, 3, None, TypeError,
     r"^path: expected a file path \(str or os.PathLike\), got int$"),
    ({"loss": [0.5]}, "h.png", 7, TypeError, r"^title: expected None or a str, got int$"),
])
def test_bad_plot_arguments_are_refused(tmp_path, history, path, title, exc, match):
    pytest.importorskip("matplotlib")
    with pytest.raises(exc, match=match):
        rnnext.plot_history(history, tmp_path / path if isinstance(path, str) else path, title)
    assert not (tmp_path / "h.png").exists()
