"""Optimizers and gradient clipping, with PyTorch's update rules (torch.optim.SGD, Adam, AdamW,
torch.nn.utils.clip_grad_norm_ and clip_grad_value_), on {name: array} dicts.

An optimizer updates the arrays of a params dict in place and keeps its own state per name. Its
`lr` is a plain attribute: the learning-rate schedules of rnnext.callbacks set it between epochs.
"""
import math

import numpy as np


def _real(name, value):
    """value as a float, refused unless it is a real number (an int beyond the floats is inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _positive(name, value):
    """value as a float, refused unless it is a finite number > 0 (learning rates, eps, clip
    limits: inf would turn the parameters into inf and NaN, or clip nothing)."""
    number = _real(name, value)
    if not 0 < number < math.inf:
        raise ValueError(f"{name}: expected a finite number > 0, got {value}")
    return number


def _nonnegative(name, value):
    """value as a float, refused unless it is a finite number >= 0 (weight decay, eta_min)."""
    number = _real(name, value)
    if not 0 <= number < math.inf:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value}")
    return number


def _fraction(name, value):
    number = _real(name, value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value}")
    return number


def _with_l2(g, p, weight_decay):
    """The gradient of loss + weight_decay/2 * |p|^2: PyTorch's coupled weight decay."""
    return g + (weight_decay * p).astype(g.dtype, copy=False) if weight_decay else g


class SGD:
    """p -= lr * v with v = momentum * v + g (v = g when momentum is 0); weight_decay adds
    weight_decay * p to g first (L2, as torch.optim.SGD)."""

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0):
        self.lr = _positive("lr", lr)
        self.momentum = _fraction("momentum", momentum)
        self.weight_decay = _nonnegative("weight_decay", weight_decay)
        self.velocity = {}

    def step(self, params, grads):
        for name, g in grads.items():
            g = _with_l2(g, params[name], self.weight_decay)
            if self.momentum:
                v = self.velocity.get(name)
                v = g.copy() if v is None else self.momentum * v + g
                self.velocity[name] = v
                g = v
            params[name] -= (self.lr * g).astype(params[name].dtype, copy=False)

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"


class Adam:
    """Adam (Kingma and Ba) with bias correction: p -= lr * m_hat / (sqrt(v_hat) + eps);
    weight_decay adds weight_decay * p to the gradient first (L2, as torch.optim.Adam)."""

    decoupled = False  # AdamW's decay shrinks the parameters instead of entering m and v

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr = _positive("lr", lr)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        self.betas = (_fraction("betas[0]", betas[0]), _fraction("betas[1]", betas[1]))
        self.eps = _positive("eps", eps)
        self.weight_decay = _nonnegative("weight_decay", weight_decay)
        self.m, self.v, self.t = {}, {}, 0

    def step(self, params, grads):
        self.t += 1
        b1, b2 = self.betas
        for name, g in grads.items():
            p = params[name]
            if self.decoupled:
                p *= 1.0 - self.lr * self.weight_decay
            else:
                g = _with_l2(g, p, self.weight_decay)
            m = self.m.get(name, 0.0) * b1 + (1.0 - b1) * g
            v = self.v.get(name, 0.0) * b2 + (1.0 - b2) * (g * g)
            self.m[name], self.v[name] = m, v
            m_hat = m / (1.0 - b1 ** self.t)
            v_hat = v / (1.0 - b2 ** self.t)
            p -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(p.dtype, copy=False)

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, torch.optim.AdamW): each step
    first shrinks the parameters, p *= 1 - lr * weight_decay, then takes Adam's step on the
    gradient alone."""

    decoupled = True

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(optimizer, lr=None, weight_decay=None):
    """An optimizer from a name ("sgd", "adam", "adamw", with lr and weight_decay or the
    default's) or an instance (with lr and weight_decay None: the instance has its own)."""
    if isinstance(optimizer, (SGD, Adam)):
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            if value is not None:
                raise ValueError(f"{name}: expected None when optimizer is an instance "
                                 f"({optimizer!r}, which has its own {name}), got {value}")
        return optimizer
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {tuple(OPTIMIZERS)} or an SGD, Adam or "
                         f"AdamW instance, got {optimizer!r}")
    given = {"lr": lr, "weight_decay": weight_decay}
    return OPTIMIZERS[optimizer](**{k: v for k, v in given.items() if v is not None})


def global_norm(grads):
    """sqrt of the sum of every gradient's squared entries."""
    return float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))


def clip_by_norm(grads, max_norm):
    """Scales all gradients in place by max_norm / (norm + 1e-6) when their global norm exceeds
    max_norm (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping."""
    norm = global_norm(grads)
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return norm


def clip_by_value(grads, limit):
    """Clips every gradient entry in place to [-limit, limit] (clip_grad_value_)."""
    for g in grads.values():
        np.clip(g, -limit, limit, out=g)


def parse_clip(clip):
    """None, a number (the global norm), ("norm", x) or ("value", x) -> (kind, x) or None."""
    if clip is None:
        return None
    if isinstance(clip, (tuple, list)) and len(clip) == 2 and clip[0] in ("norm", "value"):
        return clip[0], _positive(f"clip[1] ({clip[0]})", clip[1])
    if isinstance(clip, (int, float, np.floating, np.integer)) and not isinstance(clip, bool):
        return "norm", _positive("clip", clip)
    raise TypeError(f"clip: expected None, a number (global norm), ('norm', x) or ('value', x), "
                    f"got {clip!r}")


def clip_grads(grads, clip):
    """Applies parse_clip(clip) to grads in place."""
    rule = parse_clip(clip)
    if rule is None:
        return
    if rule[0] == "norm":
        clip_by_norm(grads, rule[1])
    else:
        clip_by_value(grads, rule[1])
