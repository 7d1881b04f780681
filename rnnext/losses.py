"""Losses on a model's outputs, each with its gradient, averaged as PyTorch's defaults do.

Every loss takes the head's pre-activation output z (N, O) (the rows are the valid steps or
sequences) and targets, and returns (loss, dLoss/dz):

- "cross_entropy": softmax cross-entropy with class-index targets (N,) in [0, O), the mean over
  rows (torch.nn.CrossEntropyLoss);
- "binary_cross_entropy": sigmoid binary cross-entropy with targets (N, O) in [0, 1], the mean
  over elements (torch.nn.BCEWithLogitsLoss);
- "mse": mean squared error between the model's output (z passed through the model's
  activation, if any) and targets (N, O), the mean over elements (torch.nn.MSELoss).
"""
import numpy as np

from .reference import sigmoid

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
CLASSIFICATION = ("cross_entropy", "binary_cross_entropy")  # the losses that have an accuracy


def log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(z, target):
    """Softmax cross-entropy of logits z (N, O) against class indices target (N,)."""
    logp = log_softmax(z)
    rows = np.arange(z.shape[0])
    loss = -logp[rows, target].mean()
    dz = np.exp(logp)
    dz[rows, target] -= 1.0
    return loss, dz / z.shape[0]


def binary_cross_entropy(z, target):
    """Sigmoid binary cross-entropy of logits z (N, O) against targets (N, O) in [0, 1]."""
    # log(1 + exp(-|z|)) + max(z, 0) - z*y is the stable form of -y log p - (1-y) log(1-p)
    loss = (np.maximum(z, 0.0) - z * target + np.log1p(np.exp(-np.abs(z)))).mean()
    return loss, (sigmoid(z) - target) / z.size


def mse(z, target, activation=None):
    """Mean squared error of activation(z) (N, O) against targets (N, O)."""
    if activation == "softmax":
        out = np.exp(log_softmax(z))
    elif activation == "sigmoid":
        out = sigmoid(z)
    else:
        out = z
    diff = out - target
    dout = 2.0 * diff / z.size
    if activation == "softmax":  # the softmax's Jacobian-vector product
        dz = out * (dout - (dout * out).sum(axis=-1, keepdims=True))
    elif activation == "sigmoid":
        dz = dout * out * (1.0 - out)
    else:
        dz = dout
    return (diff * diff).mean(), dz


def loss_and_grad(name, z, target, activation=None):
    """(loss, dLoss/dz) of the loss `name` (one of LOSSES); see the module's docstring."""
    if name == "cross_entropy":
        return cross_entropy(z, target)
    if name == "binary_cross_entropy":
        return binary_cross_entropy(z, target)
    return mse(z, target, activation)


def accuracy(name, z, target):
    """The fraction of rows classified right (cross_entropy: argmax; binary_cross_entropy: each
    element's z > 0, i.e. p > 0.5, against target > 0.5), or None for "mse"."""
    if name == "cross_entropy":
        return float(np.mean(z.argmax(axis=-1) == target))
    if name == "binary_cross_entropy":
        return float(np.mean((z > 0.0) == (target > 0.5)))
    return None  # "mse" is not in CLASSIFICATION
