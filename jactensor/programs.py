"""Named example programs (for ``jactensor explain --program``, check-formula and the benchmarks)."""
import numpy as np

from . import ops

__all__ = ["attention", "worked_example", "mlp", "ln_block", "PROGRAMS", "make_args"]


def attention(X, Wq, Wk, Wv):
    """Single-head self-attention: softmax(Q K^T / sqrt(d)) V with Q, K, V = X Wq, X Wk, X Wv.
    X: (n, d); W*: (d, d); out: (n, d)."""
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    return ops.softmax(Q @ K.T / np.sqrt(Q.shape[-1]), axis=-1) @ V


def worked_example(Q, K, C=0.5):
    """B = C * softmax(Q K) row-wise. Q: (n, d); K: (d, n); out: (n, n)."""
    return C * ops.softmax(Q @ K, axis=-1)


def mlp(X, W1, b1, W2, b2):
    """tanh(X W1 + b1) W2 + b2."""
    return ops.tanh(X @ W1 + b1) @ W2 + b2


def ln_block(X, W, g, b):
    """Pre-LayerNorm residual block X + gelu(layer_norm(X; g, b) W)."""
    return X + ops.gelu(ops.layer_norm(X, g, b) @ W)


def make_args(name, n=8, d=4, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"attention": [(n, d), (d, d), (d, d), (d, d)],
              "worked_example": [(n, d), (d, n)],
              "mlp": [(n, d), (d, 2 * d), (2 * d,), (2 * d, d), (d,)],
              "ln_block": [(n, d), (d, d), (d,), (d,)]}[name]
    return [rng.normal(size=s) / np.sqrt(s[0]) for s in shapes]


PROGRAMS = {"attention": attention, "worked_example": worked_example, "mlp": mlp, "ln_block": ln_block}
