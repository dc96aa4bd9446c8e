"""Reductions along axes: sum, mean, max.

Kept axes are deltas between output and input; reduced input axes are free
(every element feeds the result), so these Jacobians have no factor at all
except max's argmax mask.
"""
import numpy as np

from ..core import defprimitive
from ..jacobian import Jacobian
from ..tracer import getval
from ._util import bcast, norm_axes, sample, unary_shapes

__all__ = ["sum", "mean", "max"]

def _bind(name):
    def bind(x, axis=None, keepdims=False):
        return (x,), {"axis": norm_axes(name, axis, np.ndim(x)), "keepdims": bool(keepdims)}
    return bind


def _labels(in_ndim, axis, keepdims):
    """Axis labels: input axes 0..n-1; a reduced axis kept as length 1 gets its own label."""
    red = {in_ndim + a for a in axis}
    in_lab = tuple(range(in_ndim))
    out_lab = tuple(in_ndim + k if k in red else k for k in range(in_ndim)) if keepdims else \
        tuple(k for k in range(in_ndim) if k not in red)
    return out_lab, in_lab


def _kept_shape(shape, axis):
    """The keepdims shape: reduced axes as 1."""
    n = len(shape)
    return tuple(1 if k - n in axis else s for k, s in enumerate(shape))


def _expand(g, ans, x, axis, keepdims):
    """Cotangent (batch + out) reshaped to batch + keepdims shape, ready to broadcast over x."""
    nb = np.ndim(g) - np.ndim(ans)
    return g if keepdims else g.reshape(np.shape(g)[:nb] + _kept_shape(np.shape(x), axis))


def _count(x, axis):
    n = np.ndim(x)
    return int(np.prod([np.shape(x)[n + a] for a in axis], dtype=np.int64))


def _reduce_battery(rng, n):
    cases = []
    for s in unary_shapes(n):
        x = sample(rng, s)
        cases.append(((x,), {}))
        if x.ndim:
            cases.append(((x,), {"axis": -1}))
            cases.append(((x,), {"axis": 0, "keepdims": True}))
        if x.ndim >= 2:
            cases.append(((x,), {"axis": (0, -1)}))
    return cases


def _broadcast_back(g, ans, x, axis, keepdims):
    nb = np.ndim(g) - np.ndim(ans)
    return bcast(_expand(g, ans, x, axis, keepdims), np.shape(g)[:nb] + np.shape(x))


def _sum_jac(scale):
    def rule(ans, x, axis, keepdims):
        out_lab, in_lab = _labels(np.ndim(x), axis, keepdims)
        return Jacobian.from_labels(np.shape(ans), np.shape(x), out_lab + in_lab, coef=scale(x, axis))
    return rule


sum = defprimitive(
    "sum", lambda x, axis, keepdims: x.sum(axis=axis, keepdims=keepdims), bind=_bind("sum"),
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..)   (k: kept axes, r: summed axes)",
    doc="Sum over ``axis`` (int, tuple or None), numpy semantics incl. keepdims.",
    jac=[_sum_jac(lambda x, axis: 1.0)],
    vjp=[lambda g, ans, x, axis, keepdims: _broadcast_back(g, ans, x, axis, keepdims)],
    jvp=[lambda t, ans, x, axis, keepdims: t.sum(axis=axis, keepdims=keepdims)],
    battery=_reduce_battery, numpy=(np.sum,))

mean = defprimitive(
    "mean", lambda x, axis, keepdims: x.mean(axis=axis, keepdims=keepdims), bind=_bind("mean"),
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..) / N   (N: number of elements averaged)",
    doc="Mean over ``axis`` (int, tuple or None), numpy semantics incl. keepdims.",
    jac=[_sum_jac(lambda x, axis: 1.0 / _count(x, axis))],
    vjp=[lambda g, ans, x, axis, keepdims: _broadcast_back(g, ans, x, axis, keepdims) * (1.0 / _count(x, axis))],
    jvp=[lambda t, ans, x, axis, keepdims: t.mean(axis=axis, keepdims=keepdims)],
    battery=_reduce_battery, numpy=(np.mean,))


def _argmax_mask(ans, x, axis, keepdims):
    """1/m at the m positions that attain the max (ties share the derivative, as in JAX)."""
    xv, av = getval(x), getval(ans)
    hit = (xv == (av if keepdims else np.reshape(av, _kept_shape(np.shape(xv), axis)))).astype(np.float64)
    return hit / np.sum(hit, axis=axis, keepdims=True)


def _max_jac(ans, x, axis, keepdims):
    out_lab, in_lab = _labels(np.ndim(x), axis, keepdims)
    return Jacobian.from_labels(np.shape(ans), np.shape(x), out_lab + in_lab,
                                [(_argmax_mask(ans, x, axis, keepdims), in_lab)])


max = defprimitive(
    "max", lambda x, axis, keepdims: x.max(axis=axis, keepdims=keepdims), bind=_bind("max"),
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..) [X[k..,r..] = Y[k..]] / (number of maxima)",
    doc="Maximum over ``axis``; tied maxima share the derivative equally.",
    jac=[_max_jac],
    vjp=[lambda g, ans, x, axis, keepdims: _expand(g, ans, x, axis, keepdims) * _argmax_mask(ans, x, axis, keepdims)],
    jvp=[lambda t, ans, x, axis, keepdims: (t * _argmax_mask(ans, x, axis, keepdims)).sum(axis=axis,
                                                                                           keepdims=keepdims)],
    battery=_reduce_battery, numpy=(np.max, np.amax))
