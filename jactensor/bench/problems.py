"""The benchmark problems, written once per library: attention and the worked example's chain."""
import numpy as np

from .. import ops
from ..programs import attention

__all__ = ["attention_args", "worked_args", "worked_loss", "attention_loss", "hand_attention_grad",
           "hand_worked_grad", "peer_impls"]

C = 0.5


def attention_args(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s) / np.sqrt(s[0]) for s in [(n, d), (d, d), (d, d), (d, d)]]


def worked_args(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, d)), rng.normal(size=(d, n)), rng.normal(size=(n, n))]


def attention_loss(X, Wq, Wk, Wv):
    """sum(attention(X, Wq, Wk, Wv) ** 2)"""
    return ops.sum(attention(X, Wq, Wk, Wv) ** 2)


def worked_loss(Q, K, G):
    """The worked example's chain: L = sum(G * (C * softmax(Q K) row-wise)); G is dL/dB."""
    return ops.sum(G * (C * ops.softmax(Q @ K, axis=-1)))


def hand_attention_grad(X, Wq, Wk, Wv):
    """A hand-written numpy reverse pass for sum(attention**2): the reference a VJP engine should approach."""
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    s = 1.0 / np.sqrt(Q.shape[-1])
    A = (Q @ K.T) * s
    E = np.exp(A - A.max(-1, keepdims=True))
    S = E / E.sum(-1, keepdims=True)
    O = S @ V
    gO = 2.0 * O
    gS = gO @ V.T
    gV = S.T @ gO
    gA = S * (gS - (gS * S).sum(-1, keepdims=True)) * s
    gQ, gK = gA @ K, gA.T @ Q
    return gQ @ Wq.T + gK @ Wk.T + gV @ Wv.T, X.T @ gQ, X.T @ gK, X.T @ gV


def hand_worked_grad(Q, K, G):
    """Closed form of the worked example: dL/dA = S (CG - rowsum(CG S)); dL/dQ = dL/dA K^T; dL/dK = Q^T dL/dA."""
    A = Q @ K
    E = np.exp(A - A.max(-1, keepdims=True))
    S = E / E.sum(-1, keepdims=True)
    CG = C * G
    gA = S * (CG - (CG * S).sum(-1, keepdims=True))
    return gA @ K.T, Q.T @ gA


def peer_impls(lib):
    """(attention, attention_loss, worked_loss) written with ``lib`` in {"jax", "torch", "autograd"}."""
    if lib == "jax":
        import jax
        import jax.numpy as jnp

        def att(X, Wq, Wk, Wv):
            Q, K, V = X @ Wq, X @ Wk, X @ Wv
            return jax.nn.softmax(Q @ K.T / jnp.sqrt(Q.shape[-1]), axis=-1) @ V

        def wl(Q, K, G):
            return jnp.sum(G * (C * jax.nn.softmax(Q @ K, axis=-1)))
        return att, lambda *a: jnp.sum(att(*a) ** 2), wl
    if lib == "torch":
        import torch

        def att(X, Wq, Wk, Wv):
            Q, K, V = X @ Wq, X @ Wk, X @ Wv
            return torch.softmax(Q @ K.T / float(np.sqrt(Q.shape[-1])), dim=-1) @ V

        def wl(Q, K, G):
            return torch.sum(G * (C * torch.softmax(Q @ K, dim=-1)))
        return att, lambda *a: torch.sum(att(*a) ** 2), wl
    if lib == "autograd":
        import autograd.numpy as anp

        def softmax(z):
            e = anp.exp(z - anp.max(z, axis=-1, keepdims=True))
            return e / anp.sum(e, axis=-1, keepdims=True)

        def att(X, Wq, Wk, Wv):
            Q, K, V = anp.dot(X, Wq), anp.dot(X, Wk), anp.dot(X, Wv)
            return anp.dot(softmax(anp.dot(Q, K.T) / np.sqrt(Q.shape[-1])), V)

        def wl(Q, K, G):
            return anp.sum(G * (C * softmax(anp.dot(Q, K))))
        return att, lambda *a: anp.sum(att(*a) ** 2), wl
    raise ValueError(lib)
