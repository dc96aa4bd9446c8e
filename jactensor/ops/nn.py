"""Neural-network primitives: softmax, log_softmax, layer_norm, cross_entropy, mse.

Row-wise ops keep their Jacobians block-diagonal (a delta between rows). Within a row of m entries the
coupling is a diagonal plus a rank-one part: softmax's S_i (delta(i,j) - S_j), layer_norm's
gamma_j / sigma (delta(j,s) - 1/d - xhat_j xhat_s / d). For short rows (m <= BLOCK_MAX) one factor
``B[k.., i, j]`` holds each row's block, which keeps chains of Jacobians to one cheap einsum; for long rows
(or when the blocks would not fit ``config.max_jacobian_bytes``) the Jacobian is kept as those terms,
whose factors are no larger than the input, so nothing of size rows x m x m is ever allocated.
"""
import numpy as np

from .. import backends as _backends
from ..backends import as_factor
from ..config import config
from ..core import defprimitive
from ..errors import LabelError, ShapeError
from ..jacobian import Jacobian
from ..memory import check_bytes, nbytes, numel
from ..tracer import getval
from ._util import (bcast, broadcast_partner, expand_to, nbatch, norm_axes, random_array, random_axis, random_shape,
                    sample, unbroadcast)

__all__ = ["softmax", "log_softmax", "layer_norm", "cross_entropy", "mse"]


BLOCK_MAX = 32  # rows of at most this many entries get one block factor (at most 32x the bytes of the input)


def _use_blocks(rows, m, what, shape):
    """One (rows, m, m) block factor for short rows when it fits the memory limit; else the factored terms."""
    if m > BLOCK_MAX or nbytes((rows, m, m)) > config.max_jacobian_bytes:
        return False
    check_bytes(nbytes((rows, m, m)), what, shape)
    return True


def _bind_axis(name):
    def bind(x, axis=-1):
        return (x,), {"axis": norm_axes(name, axis, np.ndim(x))}
    return bind


def _softmax(x, axis):
    if x.size == 0:  # an empty row has no max; numpy semantics: an empty result of the same shape
        return np.zeros(x.shape)
    z = x - x.max(axis=axis, keepdims=True)  # stable at |x| = 1e3
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis):
    if x.size == 0:
        return np.zeros(x.shape)
    z = x - np.max(x, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def _axis_generate(rng):
    """A random shape, values and axis (int, negative int, tuple or None; sometimes numpy's default, -1)."""
    x = random_array(rng, random_shape(rng))
    if x.ndim and rng.random() < 0.3:
        return (x,), {}
    return (x,), {"axis": random_axis(rng, x.ndim)}


def _axis_battery(rng, n):
    cases = [((sample(rng, s),), {"axis": a}) for s, a in
             [((n,), -1), ((3, n), -1), ((3, n), None), ((3, n), 0), ((2, n, 3), (0, 2)), ((2, n, 3), 1)]]
    return cases + [
        ((sample(rng, (2, 40)),), {"axis": -1}),            # rows longer than BLOCK_MAX: the factored terms
        ((sample(rng, (6, 7)),), {"axis": None}),           # the whole array, 42 entries: factored too
        ((sample(rng, (n, 0)),), {"axis": -1}),             # empty rows
        ((sample(rng, (0, n)),), {"axis": -1}),             # no rows
        ((random_array(rng, (n, 4), noncontiguous=True),), {"axis": 0}),
        ((sample(rng, ()),), {"axis": None})]


def _axis_labels(ndim, axis):
    """Axis labels (out, in): kept axes shared, softmax axes ('o', k) / ('i', k)."""
    red = {ndim + a for a in axis}
    out = tuple(("o", k) if k in red else k for k in range(ndim))
    inn = tuple(("i", k) if k in red else k for k in range(ndim))
    return out, inn


def _softmax_jac(ans, x, axis):
    """Short rows: one block per row, B[k.., i, j] = S[k.., i] (delta(i, j) - S[k.., j]). Long rows: two terms,
    delta(k,k') delta(i,j) S[k,i] and -delta(k,k') S[k,i] S[k,j] (factors of S's size only)."""
    S = as_factor(ans)  # float64 (a lazy jt.jit value stays lazy)
    n = S.ndim
    red = [n + a for a in axis]
    keep = [k for k in range(n) if k not in red]
    m = numel(S.shape[k] for k in red)
    rows = numel(S.shape[k] for k in keep)
    out, inn = _axis_labels(n, axis)
    if not _use_blocks(rows, m, "softmax: the Jacobian's per-row blocks", (rows, m, m)):
        diag = Jacobian.from_labels(S.shape, S.shape, inn + inn, [(S, inn)])
        return diag + Jacobian.from_labels(S.shape, S.shape, out + inn, [(S, out), (S, inn)], coef=-1.0)
    St = np.transpose(S, keep + red)
    S2 = St.reshape(St.shape[:len(keep)] + (m,))
    B = S2[..., :, None] * (np.eye(m) - S2[..., None, :])
    B = B.reshape(St.shape[:len(keep)] + tuple(S.shape[k] for k in red) * 2)
    labels = tuple(keep) + tuple(("o", k) for k in red) + tuple(("i", k) for k in red)
    return Jacobian.from_labels(S.shape, S.shape, out + inn, [(B, labels)])


softmax = defprimitive(
    "softmax", _softmax, bind=_bind_axis("softmax"),
    formula="dS[k..,i]/dX[k'..,j] = delta(k..,k'..) S[k..,i] (delta(i,j) - S[k..,j])   (i, j along axis)",
    doc="softmax(x, axis=-1): exp(x) / sum(exp(x)) along ``axis``, computed stably. The default axis is -1, the "
        "last axis (as jax.nn.softmax and torch.softmax); scipy.special.softmax's default is axis=None, the whole "
        "array: pass axis=None for that. ``axis`` may also be a tuple. A zero-length axis gives an empty result.",
    jac=[_softmax_jac],
    vjp=[lambda g, ans, x, axis: ans * (g - (g * ans).sum(axis=axis, keepdims=True))],
    jvp=[lambda t, ans, x, axis: ans * (t - (t * ans).sum(axis=axis, keepdims=True))],
    battery=_axis_battery, generate=_axis_generate)


def _log_softmax_jac(ans, x, axis):
    S = np.exp(ans)
    out, inn = _axis_labels(np.ndim(x), axis)
    shape = np.shape(ans)
    ident = Jacobian.from_labels(shape, shape, inn + inn)
    return ident + Jacobian.from_labels(shape, shape, out + inn, [(S, inn)], coef=-1.0)


log_softmax = defprimitive(
    "log_softmax", _log_softmax, bind=_bind_axis("log_softmax"),
    formula="dL[k..,i]/dX[k'..,j] = delta(k..,k'..) (delta(i,j) - S[k..,j]),  S = softmax(X)",
    doc="log_softmax(x, axis=-1): x - logsumexp(x) along ``axis`` (default -1, the last axis; None: the whole "
        "array), computed stably. Its Jacobian is two terms, the identity and a rank-one part with a factor of "
        "x's size. A zero-length axis gives an empty result.",
    jac=[_log_softmax_jac],
    vjp=[lambda g, ans, x, axis: g - np.exp(ans) * g.sum(axis=axis, keepdims=True)],
    jvp=[lambda t, ans, x, axis: t - (t * np.exp(ans)).sum(axis=axis, keepdims=True)],
    battery=_axis_battery, generate=_axis_generate)


# ---- layer_norm ----------------------------------------------------------------------------
def _bind_layer_norm(x, gamma=1.0, beta=0.0, eps=1e-5):
    sx = np.shape(x)
    if len(sx) == 0:
        raise ShapeError("layer_norm: x must be at least 1-d (it is normalised over its last axis)")
    for name, p in (("gamma", gamma), ("beta", beta)):
        sp = np.shape(p)
        if len(sp) > 1 or (len(sp) == 1 and sp[0] not in (1, sx[-1])):
            raise ShapeError(f"layer_norm: {name} has shape {sp} but x has shape {sx}; {name} must have shape "
                             f"({sx[-1]},) (one per feature of the last axis) or be a scalar")
    if not eps > 0:
        raise ValueError(f"layer_norm: eps must be positive; got {eps}")
    return (x, gamma, beta), {"eps": float(eps)}


def _stats(x, eps):
    """xhat and 1/sigma along the last axis, with primitives (so the rules differentiate again)."""
    if np.shape(x)[-1] == 0:  # no features: nothing to normalise (and no mean over an empty axis)
        return np.zeros(np.shape(x)), np.zeros(np.shape(x)[:-1] + (1,))
    xc = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    return xc * rstd, rstd


def _layer_norm(x, gamma, beta, eps):
    if x.shape[-1] == 0:  # no features: an empty result (numpy's mean over the empty axis would warn)
        return np.zeros(np.broadcast_shapes(x.shape, np.shape(gamma), np.shape(beta)))
    xc = x - np.mean(x, axis=-1, keepdims=True)
    return gamma * (xc / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)) + beta


def _ln_jac_x(ans, x, gamma, beta, eps):
    d = np.shape(x)[-1]
    if d == 0:
        return Jacobian.zeros(np.shape(ans), np.shape(x))
    xhat, rstd = _stats(x, eps)
    gam = np.broadcast_to(gamma, (d,))
    lab = tuple(range(np.ndim(x) - 1))
    out, inn = lab + ("j",), lab + ("s",)
    rows = numel(np.shape(x)[:-1])
    if not _use_blocks(rows, d, "layer_norm: the Jacobian's per-row blocks", (rows, d, d)):
        # gamma_j / sigma_k (delta(j,s) - 1/d - xhat_j xhat_s / d) as three terms of x-sized factors:
        # a diagonal, a term constant in s (its label s is free) and a rank-one term
        A = gam * rstd
        shapes = (np.shape(ans), np.shape(x))
        J = Jacobian.from_labels(*shapes, out + out, [(A, out)])
        J = J + Jacobian.from_labels(*shapes, out + inn, [(A, out)], coef=-1.0 / d)
        return J + Jacobian.from_labels(*shapes, out + inn, [(A * xhat, out), (xhat, inn)], coef=-1.0 / d)
    # B[k.., j, s] = gamma_j / sigma_k (delta(j,s) - 1/d - xhat_j xhat_s / d)
    B = (gam[:, None] * rstd[..., None]) * (np.eye(d) - 1.0 / d - xhat[..., :, None] * xhat[..., None, :] / d)
    return Jacobian.from_labels(np.shape(ans), np.shape(x), out + inn, [(B, lab + ("j", "s"))])


def _ln_vjp_x(g, ans, x, gamma, beta, eps):
    if np.shape(x)[-1] == 0:
        return np.zeros(np.shape(g)[:nbatch(g, ans)] + np.shape(x))
    xhat, rstd = _stats(x, eps)
    gg = g * gamma
    return rstd * (gg - gg.mean(axis=-1, keepdims=True) - xhat * (gg * xhat).mean(axis=-1, keepdims=True))


def _ln_jvp_x(t, ans, x, gamma, beta, eps):
    if np.shape(x)[-1] == 0:
        return np.zeros(np.shape(t)[:np.ndim(t) - np.ndim(x)] + np.shape(ans))
    xhat, rstd = _stats(x, eps)
    return gamma * rstd * (t - t.mean(axis=-1, keepdims=True) - xhat * (t * xhat).mean(axis=-1, keepdims=True))


def _ln_battery(rng, n):
    d = n + 2
    return [((sample(rng, s), sample(rng, (d,)), sample(rng, (d,))), {}) for s in [(d,), (3, d), (2, 3, d)]] + [
        ((sample(rng, (3, d)), 1.0, 0.0), {"eps": 1e-3}),
        ((sample(rng, (2, 40)), sample(rng, (40,)), sample(rng, (1,))), {}),   # d > BLOCK_MAX: the factored terms
        ((random_array(rng, (n, 4), noncontiguous=True), sample(rng, (4,)), 0.5), {}),
        ((sample(rng, (n, 1)), sample(rng, (1,)), sample(rng, (1,))), {}),      # one feature: xhat = 0
        ((sample(rng, (n, 0)), sample(rng, (0,)), sample(rng, ())), {}),       # no features
        ((sample(rng, (0, d)), sample(rng, (d,)), sample(rng, (d,))), {})]     # no rows


def _ln_generate(rng):
    s = random_shape(rng, min_ndim=1)
    d = s[-1]

    def param():
        r = rng.random()
        return float(rng.normal()) if r < 0.2 else random_array(rng, (1,) if r < 0.35 else (d,))
    kw = {"eps": float(rng.choice([1e-5, 1e-3, 0.1]))} if rng.random() < 0.5 else {}
    return (random_array(rng, s), param(), param()), kw


layer_norm = defprimitive(
    "layer_norm", _layer_norm, bind=_bind_layer_norm,
    formula="dY[k..,j]/dX[k'..,s] = delta(k..,k'..) gamma[j] / sigma[k..] (delta(j,s) - 1/d - xhat[k..,j] "
            "xhat[k..,s] / d);  dY[k..,j]/dgamma[s] = delta(j,s) xhat[k..,j];  dY[k..,j]/dbeta[s] = delta(j,s)",
    doc="gamma * (x - mean) / sqrt(var + eps) + beta over the last axis (d features); gamma, beta: (d,) or "
        "scalars (Python scalars are constants). For d > BLOCK_MAX the Jacobian w.r.t. x is three terms with "
        "factors of x's size (diagonal, constant, rank one), never a (rows, d, d) block. No features (d = 0): "
        "an empty result.",
    jac=[_ln_jac_x,
         lambda ans, x, gamma, beta, eps: _bcast_jac(_stats(x, eps)[0], ans, gamma),
         lambda ans, x, gamma, beta, eps: _bcast_jac(None, ans, beta)],
    vjp=[_ln_vjp_x,
         lambda g, ans, x, gamma, beta, eps: unbroadcast(g * _stats(x, eps)[0], np.shape(gamma), nbatch(g, ans)),
         lambda g, ans, x, gamma, beta, eps: unbroadcast(g, np.shape(beta), nbatch(g, ans))],
    jvp=[_ln_jvp_x,
         lambda t, ans, x, gamma, beta, eps: expand_to(t, np.shape(gamma), np.ndim(ans)) * _stats(x, eps)[0],
         lambda t, ans, x, gamma, beta, eps: bcast(
             expand_to(t, np.shape(beta), np.ndim(ans)), np.shape(t)[:np.ndim(t) - np.ndim(beta)] + np.shape(ans))],
    battery=_ln_battery, generate=_ln_generate)


def _bcast_jac(d, ans, p):
    from ..core import broadcast_jacobian
    return broadcast_jacobian(d, np.shape(ans), np.shape(p))


# ---- losses ------------------------------------------------------------------------------
def _bind_cross_entropy(logits, labels):
    sz = np.shape(logits)
    if len(sz) == 0:
        raise ShapeError("cross_entropy: logits must be at least 1-d (..., classes); got a scalar")
    y = getval(labels)
    y = y if type(y) in _backends.LAZY_TYPES else np.asarray(y)  # lazy (jt.jit) labels stay recorded
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and y.size and np.all(y == np.round(y)):
            raise LabelError(f"cross_entropy: labels must be an integer array; got dtype {y.dtype}. "
                             f"Pass labels.astype(int)")
        raise LabelError(f"cross_entropy: labels must be integer class indices; got dtype {y.dtype}")
    if y.shape != sz[:-1]:
        raise ShapeError(f"cross_entropy: labels have shape {y.shape} but logits {sz} need labels of shape "
                         f"{sz[:-1]} (one class index per row)")
    if sz[-1] == 0 and y.size:
        raise ShapeError(f"cross_entropy: logits have shape {sz}, with 0 classes on the last axis; each row needs at "
                         f"least one class")
    bad = (y < 0) | (y >= sz[-1])
    if np.any(bad):
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise LabelError(f"cross_entropy: label {int(y[where])} at index {where} is out of range for "
                         f"{sz[-1]} classes (valid: 0..{sz[-1] - 1})")
    return (logits,), {"labels": y}


def _onehot(labels, c):
    return (labels[..., None] == np.arange(c)).astype(np.float64)


def _cross_entropy(logits, labels):
    if labels.size == 0:  # no rows: numpy's mean of nothing, NaN (without its warning)
        return np.float64(np.nan)
    lsm = _log_softmax(logits, (-1,))
    return -np.mean(np.take_along_axis(lsm, labels[..., None], axis=-1))


def _ce_grad(logits, labels):
    """dL/dlogits = (softmax(logits) - onehot) / N, with primitives (differentiable again)."""
    n = max(int(np.prod(np.shape(logits)[:-1], dtype=np.int64)), 1)
    return (softmax.bound(logits, axis=(-1,)) - _onehot(labels, np.shape(logits)[-1])) * (1.0 / n)


def _ce_vjp(g, ans, logits, labels):
    nb = nbatch(g, ans)
    return g.reshape(np.shape(g)[:nb] + (1,) * np.ndim(logits)) * _ce_grad(logits, labels)


def _ce_jvp(t, ans, logits, labels):
    return (t * _ce_grad(logits, labels)).sum(axis=tuple(range(-np.ndim(logits), 0)))


def _ce_generate(rng):
    c = int(rng.integers(1, 5))
    batch = random_shape(rng, 0, 2)
    return (random_array(rng, batch + (c,)), rng.integers(0, c, size=batch)), {}


cross_entropy = defprimitive(
    "cross_entropy", _cross_entropy, bind=_bind_cross_entropy,
    formula="dL/dZ[n,c] = (softmax(Z)[n,c] - delta(c, y[n])) / N",
    doc="Mean over rows of -log softmax(logits)[row, label]; logits (..., C), integer labels (...).",
    jac=[lambda ans, logits, labels: Jacobian.from_labels(
        (), np.shape(logits), tuple(range(np.ndim(logits))),
        [(_ce_grad(logits, labels), tuple(range(np.ndim(logits))))])],
    vjp=[_ce_vjp], jvp=[_ce_jvp],
    battery=lambda rng, n: [((sample(rng, (n + 1, 4)), rng.integers(0, 4, size=n + 1)), {}),
                            ((sample(rng, (3,)), np.array(1)), {}),
                            ((sample(rng, (2, n, 3)), rng.integers(0, 3, size=(2, n))), {}),
                            ((random_array(rng, (n, 3), noncontiguous=True), rng.integers(0, 3, size=n)), {}),
                            ((sample(rng, (0, 3)), np.zeros(0, dtype=int)), {})],
    generate=_ce_generate)


def _bind_mse(pred, target):
    try:
        np.broadcast_shapes(np.shape(pred), np.shape(target))
    except ValueError:
        raise ShapeError(f"mse: pred has shape {np.shape(pred)} and target {np.shape(target)}; they must be equal "
                         f"or broadcast") from None
    return (pred, target), {}


def _mse_d(k):
    """dL/d(arg k) as an array of the broadcast shape: +-2 (pred - target) / N."""
    def d(pred, target):
        diff = pred - target
        return diff * ((2.0 if k == 0 else -2.0) / max(int(np.prod(np.shape(diff), dtype=np.int64)), 1))
    return d


def _mse_jac(k):
    def rule(ans, pred, target):
        x = (pred, target)[k]
        d = as_factor(unbroadcast(_mse_d(k)(pred, target), np.shape(x), 0))  # a lazy jt.jit value stays lazy
        lab = tuple(range(np.ndim(x)))
        return Jacobian.from_labels((), np.shape(x), lab, [(d, lab)])
    return rule


def _mse_vjp(k):
    def rule(g, ans, pred, target):
        d = _mse_d(k)(pred, target)
        nb = nbatch(g, ans)
        return unbroadcast(g.reshape(np.shape(g)[:nb] + (1,) * np.ndim(d)) * d, np.shape((pred, target)[k]), nb)
    return rule


def _mse_jvp(k):
    def rule(t, ans, pred, target):
        d = _mse_d(k)(pred, target)
        x = (pred, target)[k]
        return (expand_to(t, np.shape(x), np.ndim(d)) * d).sum(axis=tuple(range(-np.ndim(d), 0)))
    return rule


def _mse(pred, target):
    diff = pred - target
    if np.size(diff) == 0:  # numpy's mean of nothing, NaN (without its warning)
        return np.float64(np.nan)
    return np.mean(diff * diff)


def _mse_generate(rng):
    s = random_shape(rng)
    r = broadcast_partner(rng, s)
    if rng.random() < 0.5:
        s, r = r, s
    if numel(np.broadcast_shapes(s, r)) == 0:  # no entries: both empty (a non-empty one's differences are NaN)
        r = s
    return (random_array(rng, s), random_array(rng, r)), {}


mse = defprimitive(
    "mse", _mse, bind=_bind_mse,
    formula="dL/dP[i..] = 2 (P[i..] - T[i..]) / N;  dL/dT[i..] = -2 (P[i..] - T[i..]) / N",
    doc="Mean squared error mean((pred - target)**2) over all (broadcast) entries; NaN for empty inputs, as "
        "numpy's mean.",
    jac=[_mse_jac(0), _mse_jac(1)], vjp=[_mse_vjp(0), _mse_vjp(1)], jvp=[_mse_jvp(0), _mse_jvp(1)],
    battery=lambda rng, n: [((sample(rng, s), sample(rng, r)), {}) for s, r in
                            [((n,), (n,)), ((3, n), (3, n)), ((), ()), ((3, n), (n,)), ((n,), (2, 1)),
                             ((0, n), (0, 1))]]
    + [((random_array(rng, (n, 3), noncontiguous=True), random_array(rng, (3,), noncontiguous=True)), {})],
    generate=_mse_generate)
