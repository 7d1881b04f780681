"""Gradient check: backpropagation through time against central finite differences.

For a vanilla RNN, an LSTM and a GRU (two stacked layers each), with a many-to-one head (the
last valid step) and a many-to-many head (every valid step), softmax cross-entropy, sequences
of different lengths and a given initial state, this compares every entry of the analytic
gradient (rnnext.backward on the NumPy backend, in float64) with the central difference

    (loss(theta + eps) - loss(theta - eps)) / (2 eps)

and prints, per model, the largest error of a parameter's gradient relative to that gradient's
largest entry. It exits with status 1 when any exceeds TOLERANCE. See docs/maths.md.

Run it where `import rnnext` finds a built rnnext: after `pip install .`, or from the checkout
after `python setup.py build_ext --inplace` as `PYTHONPATH=. python docs/gradcheck.py`.
"""
import sys

import numpy as np

import rnnext
from rnnext.train import loss_and_grads

EPS = 1e-5         # the finite-difference step
TOLERANCE = 1e-6   # far above what float64 central differences at this step leave (1e-8)
B, T, I, H, O = 3, 6, 3, 4, 3   # batch, time steps, input features, hidden units, classes
LENGTHS = np.array([6, 4, 1])   # each sequence's valid steps


def loss_and_gradients(model, params, x, y, state):
    """(loss, {name: gradient}) in float64 on the NumPy reference, the initial state's gradient
    as "state" (a tuple (h, c) for the LSTM)."""
    return loss_and_grads(model, x, y, lengths=LENGTHS, state=state, params=params,
                          backend="numpy")


def as_arrays(state):
    """The arrays of a state: h, or h and c."""
    return list(state) if isinstance(state, tuple) else [state]


def numeric_gradient(f, array):
    """The central-difference gradient of f() with respect to `array`, changed in place and
    restored entry by entry."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        kept = array[index]
        array[index] = kept + EPS
        up = f()
        array[index] = kept - EPS
        down = f()
        array[index] = kept
        grad[index] = (up - down) / (2.0 * EPS)
    return grad


def check(cell, output, rng):
    """(worst relative error, its parameter's name, entries compared) for one model."""
    model = rnnext.Model(cell, input_size=I, hidden_size=H, num_layers=2, output_size=O,
                         activation="softmax", output=output, seed=0)
    params = {name: value.astype(np.float64) for name, value in model.params.items()}
    x = rng.standard_normal((B, T, I))
    y = rng.integers(0, O, size=(B, T) if output == "many_to_many" else (B,))
    h0 = 0.5 * rng.standard_normal((2, B, H))
    state = (h0, 0.5 * rng.standard_normal((2, B, H))) if cell == "lstm" else h0

    _, grads = loss_and_gradients(model, params, x, y, state)
    analytic = dict(grads)
    del analytic["state"]
    targets = dict(params)
    for k, (array, grad) in enumerate(zip(as_arrays(state), as_arrays(grads["state"]))):
        name = "state" if cell != "lstm" else ("state h", "state c")[k]
        analytic[name], targets[name] = grad, array

    def loss():
        return loss_and_gradients(model, params, x, y, state)[0]

    worst, worst_name, count = 0.0, None, 0
    for name, array in targets.items():
        numeric = numeric_gradient(loss, array)
        error = np.abs(analytic[name] - numeric).max() / max(np.abs(numeric).max(), 1e-12)
        count += array.size
        if error >= worst:
            worst, worst_name = error, name
    return worst, worst_name, count


def main():
    rng = np.random.default_rng(0)
    print(f"float64, B={B} T={T} I={I} H={H} classes={O}, lengths {LENGTHS.tolist()}, "
          f"2 layers, eps={EPS:g}")
    failed = False
    for cell in ("rnn", "lstm", "gru"):
        for output in ("many_to_one", "many_to_many"):
            worst, name, count = check(cell, output, rng)
            verdict = "ok" if worst <= TOLERANCE else "FAIL"
            failed |= verdict == "FAIL"
            print(f"{cell:5s} {output:13s} {count:4d} entries  max relative error "
                  f"{worst:.1e} ({name})  {verdict}")
    print(f"tolerance {TOLERANCE:g}: {'FAILED' if failed else 'all passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
