"""Streams: one time step per call, the state kept inside (Model.stream)."""
import dataclasses
import functools

import numpy as np

from . import reference
from .model import _float32_array


class Stream:
    """Runs a Model one step at a time over `batch` sequences.

    step(x_t): x_t (batch, I) floats, or token ids (batch,) for a model with an Embedding; for
    batch 1 also (I,) or one id. Returns that step's output: the model's output for the step
    (its dense layers on the top layer's new h, or that h), (batch, F) or (F,).
    reset() sets the states to zeros; `state` reads or sets them as Model.forward takes them.
    A stream follows the model's parameters: after set_params, apply_grads or fit its next step
    runs on the new ones, its states kept.
    Every recurrent layer must run forward (a reverse direction needs the future) and the
    readout be none, "last" or "final" (which are the top layer's h after each step).
    """

    def __init__(self, model, batch, backend, precision):
        spec = model.spec
        for r in spec.recurrent:
            if r.direction != "forward":
                raise ValueError(f"model: recurrent layer {r.index} runs {r.direction!r}, which "
                                 f"needs the future; a stream runs only forward layers")
        if spec.readout in ("mean", "max"):
            raise ValueError(f"model: a stream gives each step's output; readout "
                             f"{spec.readout!r} needs the whole sequence")
        self.model = model
        self.batch = batch
        self.backend = backend
        self.precision = precision
        # each step's output is the top layer's h after it; for a step masked by mask_zero that
        # is the kept state's (as the C stream), which a one-step "last" readout would zero
        self._spec = dataclasses.replace(spec, readout="final") if spec.readout == "last" \
            else spec
        self._check = functools.partial(step_input, model, batch)
        # the C stream moves to the model's new compiled model when its parameters change
        current = functools.partial(model.core, precision)
        self._core = current().stream(batch, self._check, current) if backend == "c" else None
        self.reset()
        if self._core is not None:
            self.step = self._core.step  # x in the core's form goes straight to C; any other
            # goes through step_input first: no Python frame per step on the hot path

    def reset(self):
        """All states to zeros."""
        self.state = None

    @property
    def state(self):
        if self._core is None:
            states = self._states
        else:
            h, c, shapes = self.model._state_buffers(self.batch)
            self._core.state(h, c)
            states = self.model._split_states(h, c, shapes)
        return self.model._state_out([(h.copy(), None if c is None else c.copy())
                                      for h, c in states], unbatched=False)

    @state.setter
    def state(self, value):
        states = self.model._state(value, self.batch, unbatched=False)
        if self._core is not None:
            self._core.reset(*self.model._flat_states(states))
            return
        if states is None:
            states = [(np.zeros(h, np.float32), None if c is None else np.zeros(c, np.float32))
                      for h, c in self.model._state_shapes(self.batch)]
        self._states = states

    def step(self, x):
        """One step: x_t (or token ids) in, the step's output out (a new array)."""
        x = self._check(x)
        ids = self.model.spec.embedding is not None
        steps = x.reshape((self.batch, 1) if ids else (self.batch, 1, -1))
        params = self.model._params_at(self.precision)  # rounded once, not at every step
        y, self._states = reference.forward_model(self._spec, params, steps, self._states)
        y = y[:, 0] if y.ndim == 3 else y
        return y[0] if x.ndim == (0 if ids else 1) else y


def step_input(model, batch, x):
    """x_t of a step as the compiled stream takes it: float32 (batch, I), or (I,) for a batch of
    one; int32 token ids (batch,), or one id for a batch of one. The one check of a step's x, on
    both backends: forward's checks of x and their messages, with a step's shapes."""
    if model.spec.embedding is not None:
        ids = model._id_array(x)
        if ids.shape != (batch,) and not (batch == 1 and ids.ndim == 0):
            one = " or one id" if batch == 1 else ""
            raise ValueError(f"x: expected {batch} token ids, shape ({batch},){one}, got shape "
                             f"{ids.shape}")
        return model._in_vocabulary(ids)
    arr = _float32_array("x", x)
    I = model.input_size
    if arr.shape != (batch, I) and not (batch == 1 and arr.shape == (I,)):
        flat = f" or ({I},)" if batch == 1 else ""
        raise ValueError(f"x: expected shape ({batch}, {I}){flat}, got {arr.shape}")
    return arr
