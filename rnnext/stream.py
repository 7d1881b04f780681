"""Streams: one time step per call, the state kept inside (Model.stream)."""
import dataclasses

import numpy as np

from . import reference


class Stream:
    """Runs a Model one step at a time over `batch` sequences.

    step(x_t): x_t (batch, I) floats, or token ids (batch,) for a model with an Embedding; for
    batch 1 also (I,) or one id. Returns that step's output: the model's output for the step
    (its dense layers on the top layer's new h, or that h), (batch, F) or (F,).
    reset() sets the states to zeros; `state` reads or sets them as Model.forward takes them.
    Every recurrent layer must run forward (a reverse direction needs the future) and the
    readout be none, "last" or "final" (which are the top layer's h after each step).
    """

    def __init__(self, model, batch, backend):
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
        # each step's output is the top layer's h after it; for a step masked by mask_zero that
        # is the kept state's (as the C stream), which a one-step "last" readout would zero
        self._spec = dataclasses.replace(spec, readout="final") if spec.readout == "last" \
            else spec
        self._core = model.core().stream(batch) if backend == "c" else None
        self.reset()
        if self._core is not None and spec.embedding is None:
            self.step = self._core.step  # the core checks x itself: no Python frame per step

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
        model, batch = self.model, self.batch
        if model.spec.embedding is not None:
            ids = np.asarray(x)
            flat = ids.ndim == 0 and batch == 1
            if self._core is not None:
                y = self._core.step(ids.reshape(1) if flat else ids)
                return y[0] if flat else y
            if ids.shape != (() if flat else (batch,)):
                raise ValueError(f"x: expected {batch} token ids, shape ({batch},), got shape "
                                 f"{ids.shape}")
            steps, _ = model._ids(ids.reshape(batch, 1))
        else:
            arr = np.asarray(x)
            flat = arr.ndim == 1 and batch == 1
            I = model.input_size
            if arr.shape != ((I,) if flat else (batch, I)):
                raise ValueError(f"x: expected shape ({batch}, {I}), got {arr.shape}")
            steps = model._inputs(arr.reshape(batch, 1, I), None, None)[0]
        y, self._states = reference.forward_model(self._spec, model.params, steps, self._states)
        y = y[:, 0] if y.ndim == 3 else y
        return y[0] if flat else y
