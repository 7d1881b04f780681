"""Streams: one time step per call, the state kept inside (Model.stream)."""
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
        self._core = model.core().stream(batch) if backend == "c" else None
        self.reset()

    def reset(self):
        """All states to zeros."""
        self.state = None

    @property
    def state(self):
        shapes = self.model._state_shapes(self.batch)
        if self._core is None:
            states = self._states
        else:
            h = np.empty(sum(int(np.prod(s)) for s, _ in shapes), np.float32)
            c = np.empty(sum(int(np.prod(s)) for _, s in shapes if s is not None), np.float32)
            self._core.state(h, c)
            states = self.model._split_states(h, c, shapes)
        return self.model._state_out([(h.copy(), None if c is None else c.copy())
                                      for h, c in states], unbatched=False)

    @state.setter
    def state(self, value):
        states = self.model._state(value, self.batch, unbatched=False)
        if self._core is not None:
            if states is None:
                self._core.reset(None, None)
            else:
                self._core.reset(np.concatenate([h.ravel() for h, _ in states]),
                                 np.concatenate([c.ravel() for _, c in states if c is not None]
                                                or [np.empty(0, np.float32)]))
            return
        if states is None:
            states = [(np.zeros(h, np.float32), None if c is None else np.zeros(c, np.float32))
                      for h, c in self.model._state_shapes(self.batch)]
        self._states = states

    def _input(self, x):
        """x as one step of forward's input: (batch, 1, I) floats or (batch, 1) ids, and whether
        the caller dropped the batch axis."""
        model, batch = self.model, self.batch
        if model.spec.embedding is not None:
            arr = np.asarray(x)
            flat = arr.ndim == 0
            if arr.shape != (() if flat and batch == 1 else (batch,)):
                raise ValueError(f"x: expected {batch} token ids, shape ({batch},), got shape "
                                 f"{arr.shape}")
            ids, _ = model._ids(arr.reshape(batch, 1))
            return ids, flat
        arr = np.asarray(x)
        flat = arr.ndim == 1
        I = model.input_size
        if arr.shape != ((I,) if flat and batch == 1 else (batch, I)):
            raise ValueError(f"x: expected shape ({batch}, {I}), got {arr.shape}")
        steps, *_ = model._inputs(arr.reshape(batch, 1, I), None, None)
        return steps, flat

    def step(self, x):
        """One step: x_t in, the step's output out (a new array)."""
        steps, flat = self._input(x)
        if self._core is not None:
            y = self._core.step(steps[:, 0])
        else:
            y, self._states = reference.forward_model(self.model.spec, self.model.params, steps,
                                                      self._states)
            if y.ndim == 3:
                y = y[:, 0]
        return y[0] if flat else y
