"""Streams: one time step per call, the state kept inside (Model.stream)."""
import numpy as np

from . import reference


class Stream:
    """Runs a unidirectional Model one step at a time over `batch` sequences.

    step(x_t): x_t (batch, I), or (I,) when batch is 1 -> that step's output: the top layer's h
    (batch, H), or the head's output where the model has one (many-to-many). reset() sets the
    states to zeros; `state` reads or sets them as in Model.forward: h, or (h, c) for the LSTM,
    each (L, batch, H).
    """

    def __init__(self, model, batch, backend):
        if model.bidirectional:
            raise ValueError("model: a bidirectional model cannot stream (its reverse direction "
                             "needs the future); got bidirectional=True")
        self.model = model
        self.batch = batch
        self.backend = backend
        self._shape = (model.num_layers, batch, model.hidden_size)
        self._core = model.core().stream(batch) if backend == "c" else None
        self.reset()
        if self._core is not None and model.output_size is None:
            self.step = self._core.step  # no Python frame on the hot path

    def reset(self):
        """All states to zeros."""
        self.state = None

    @property
    def state(self):
        if self._core is None:
            h, c = self._h.copy(), self._c.copy()
        else:
            h = np.empty(self._shape, np.float32)
            c = np.empty(self._shape, np.float32) if self.model.cell == "lstm" else None
            self._core.state(h, c)
        return (h, c) if self.model.cell == "lstm" else h

    @state.setter
    def state(self, value):
        if value is None:
            h0 = c0 = None
        else:
            h0, c0 = self.model._state(value, self.batch, unbatched=False)
        if self._core is None:
            self._h = np.zeros(self._shape, np.float32) if h0 is None else h0.copy()
            self._c = np.zeros(self._shape, np.float32) if c0 is None else c0.copy()
        else:
            self._core.reset(h0, c0)

    def _recurrent_step(self, x):
        if self._core is not None:
            return self._core.step(x)
        x = np.asarray(x, dtype=np.float32)
        flat = x.ndim == 1
        if x.shape != ((self.model.input_size,) if flat and self.batch == 1 else
                       (self.batch, self.model.input_size)):
            raise ValueError(f"x: expected shape ({self.batch}, {self.model.input_size}), got "
                             f"{x.shape}")
        inp = x.reshape(self.batch, -1)
        cell, params = self.model.core_cell, self.model.params
        for layer in range(self.model.num_layers):
            w_ih = params[reference.param_name("weight_ih", layer, 0)]
            b_ih = params[reference.param_name("bias_ih", layer, 0)]
            self._h[layer], c_new = reference.cell_step(
                cell, inp @ w_ih.T + b_ih, self._h[layer], self._c[layer],
                params[reference.param_name("weight_hh", layer, 0)],
                params[reference.param_name("bias_hh", layer, 0)])
            if c_new is not None:
                self._c[layer] = c_new
            inp = self._h[layer]
        return inp[0].copy() if flat else inp.copy()

    def step(self, x):
        y = self._recurrent_step(x)
        return y if self.model.output_size is None else self.model._head(y)
