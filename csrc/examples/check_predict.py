"""Runs an example program of this folder (rnx_predict, rnx_predict_cpp) on a model file and
checks what it prints against the Python package on the same input: the batch's y against
Model.predict (rtol = atol = 1e-5) and against the NumPy reference (backend="numpy", the float32
tolerance rtol 1e-4, atol 1e-5), and each streamed sequence, step by step, against predict on
that sequence's prefixes.

    python check_predict.py --model MODEL [--model MODEL ...] PROGRAM [PROGRAM ...]

runs each program on each model (with its default B and T). Exits with 1 when anything
disagrees, after printing the differences. Needs rnnext installed."""
import argparse
import os
import subprocess
import sys

import numpy as np

import rnnext


def parse(text):
    """The program's lines as {key: [words]}; a stream line's key is ("stream", b)."""
    lines = {}
    for line in text.splitlines():
        key, *words = line.split()
        if key == "stream":
            key = (key, int(words.pop(0)))
        lines[key] = words
    return lines


def compare(model_path, text):
    """Raises AssertionError where the printed output of rnx_predict (or rnx_predict_cpp) for the
    model file at model_path disagrees with the Python package; returns the names of the arrays
    checked ("y", "stream 0", ...)."""
    model = rnnext.load(model_path)
    lines = parse(text)
    B, T = map(int, lines["shape"])
    lengths = np.array(lines["lengths"], np.int32)
    if "ids" in lines:
        x = np.array(lines["ids"], np.int32).reshape(B, T)
    else:
        x = np.array(lines["x"], np.float32).reshape(B, T, -1)
    expected = model.predict(x, lengths=lengths)
    y = np.array(lines["y"], np.float32).reshape(expected.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5, err_msg="y vs Model.predict")
    np.testing.assert_allclose(y, model.predict(x, lengths=lengths, backend="numpy"), rtol=1e-4,
                               atol=1e-5, err_msg="y vs the NumPy reference")
    checked = ["y"]
    streams = sorted(key[1] for key in lines if key[0] == "stream")
    assert streams in ([], list(range(B))), f"stream lines for sequences {streams} of {B}"
    for b in streams:
        steps = np.array(lines["stream", b], np.float32).reshape(lengths[b], -1)
        for t in range(lengths[b]):
            prefix = model.predict(x[b:b + 1, :t + 1])[0]
            np.testing.assert_allclose(steps[t], prefix[-1] if expected.ndim == 3 else prefix,
                                       rtol=1e-5, atol=1e-5,
                                       err_msg=f"stream {b}, step {t} vs Model.predict")
        checked.append(f"stream {b}")
    return checked


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="a model file saved from Python (repeat for more)")
    parser.add_argument("programs", nargs="+", help="example programs to run on each model")
    args = parser.parse_args(argv)
    failures = 0
    for program in args.programs:
        for model_path in args.model:
            name = f"{os.path.basename(program)} {os.path.basename(model_path)}"
            try:
                run = subprocess.run([program, model_path], capture_output=True, text=True,
                                     timeout=300)
                assert run.returncode == 0, f"exit status {run.returncode}: {run.stderr}"
                checked = compare(model_path, run.stdout)
            except (AssertionError, OSError, subprocess.TimeoutExpired) as error:
                failures += 1
                print(f"FAIL {name}: {error}")
            else:
                print(f"ok   {name}: {', '.join(checked)} agree with Python")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
