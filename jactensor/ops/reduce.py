"""Reductions along axes: sum, mean, max, min, prod, var, std, logsumexp, norm, and the
cumulative cumsum and cumprod; average (a composition of primitives).

Kept axes are deltas between output and input; reduced input axes are free (every element
of a reduced group feeds its result). So a reduction's Jacobian is one factor D shaped like
the input, dY[k..]/dX[k'..,r..] = delta(k..,k'..) D[k..,r..], with D the derivative of the
reduced value with respect to each entry of its group: 1 for sum, 1/N for mean, the argmax
mask for max, the product of the other entries for prod, 2 (x - mean) / (N - ddof) for var,
softmax weights for logsumexp, x / ||x|| for the 2-norm. The VJP is g * D (g broadcast over
the reduced axes) and the JVP is sum(t * D) over them: one elementwise product and one sum
for any number of batched cotangents or tangents.
"""
import builtins
import math
import warnings

import numpy as np

from .. import numpy_api
from ..core import defprimitive
from ..errors import AxisError, NotDifferentiableError, ShapeError
from ..jacobian import Jacobian
from ..memory import check_bytes, nbytes
from ..registry import registry
from ..tracer import Tracer, getval
from ._util import (bcast, expand_to, norm_axes, random_array, random_axis, random_shape, sample, unary_shapes,
                    unbroadcast)

__all__ = ["sum", "mean", "max", "min", "amax", "amin", "prod", "var", "std", "cumsum", "cumprod", "logsumexp",
           "average"]   # norm is numpy.linalg's: exported as jt.linalg.norm

_NoValue = np._NoValue


def _refuse(op, **kwargs):
    """numpy keywords jactensor does not support, refused unless given at numpy's default."""
    for k, v in kwargs.items():
        if v is _NoValue or v is None or (k == "where" and v is True) or \
                (k == "dtype" and np.dtype(v).kind == "f"):
            continue
        what = {"out": "jactensor returns new arrays; use the result",
                "dtype": "jactensor computes in float64",
                "initial": "reduce the array and combine with the initial value yourself, e.g. "
                           "jt.maximum(jt.max(x), v) or jt.prod(x) * v",
                "where": "select the entries first (x[mask]) or combine with a mask",
                "mean": "let the op compute the mean (it is differentiated too)"}.get(k, "drop it")
        raise NotDifferentiableError(f"{op}: the argument {k}={v!r} is not supported; {what}")


def _keepdims(k):
    return False if k is _NoValue else bool(k)


def _bind(name):
    def bind(x, axis=None, dtype=None, out=None, keepdims=False, initial=_NoValue, where=_NoValue):
        _refuse(name, dtype=dtype, out=out, initial=initial, where=where)
        return (x,), {"axis": norm_axes(name, axis, np.ndim(x)), "keepdims": _keepdims(keepdims)}
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


def _kept(ans, x, axis, keepdims):
    """The result with the reduced axes as length 1 (so it broadcasts against x)."""
    return ans if keepdims else ans.reshape(_kept_shape(np.shape(x), axis))


def _count(x, axis):
    n = np.ndim(x)
    return math.prod(np.shape(x)[n + a] for a in axis)


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


def _gen_reduce(rng, domain="real", nonempty=False, extra=None):
    """One random reduction call: shape (empty axes sometimes), axis (None, int, negative, tuple), keepdims."""
    s = random_shape(rng, 0, 3, 4)
    axis = random_axis(rng, len(s))
    if nonempty:  # the reduced axes must hold something (max/min of nothing is an error in numpy too)
        red = norm_axes("gen", axis, len(s))
        s = tuple(builtins.max(n, 1) if k - len(s) in red else n for k, n in enumerate(s))
    kw = {"axis": axis, "keepdims": bool(rng.random() < 0.3)}
    if extra:
        kw.update(extra(rng, s, axis))
    return (random_array(rng, s, domain),), kw


def _separated(rng, shape):
    """Values with no two closer than 0.3 (no ties: finite differences stay away from max/min kinks)."""
    n = math.prod(shape)
    return np.asarray((rng.permutation(n) * 0.5 + rng.uniform(-0.1, 0.1, size=n)).reshape(shape) - 0.25 * n)


def _defweighted(name, impl, deriv, formula, doc, bind=None, battery=_reduce_battery, generate=None, numpy=(),
                 methods=()):
    """A reduction y = f(x) over ``axis`` whose Jacobian is delta(kept axes) times D = deriv(ans, x, **p),
    an array shaped like x (written with primitives, so the rules differentiate again)."""
    def jac(ans, x, axis, keepdims, **p):
        out_lab, in_lab = _labels(np.ndim(x), axis, keepdims)
        D = np.asarray(deriv(ans, x, axis=axis, keepdims=keepdims, **p), dtype=np.float64)
        return Jacobian.from_labels(np.shape(ans), np.shape(x), out_lab + in_lab, [(D, in_lab)])

    def vjp(g, ans, x, axis, keepdims, **p):
        return _expand(g, ans, x, axis, keepdims) * deriv(ans, x, axis=axis, keepdims=keepdims, **p)

    def jvp(t, ans, x, axis, keepdims, **p):
        return (t * deriv(ans, x, axis=axis, keepdims=keepdims, **p)).sum(axis=axis, keepdims=keepdims)

    return defprimitive(name, impl, bind=bind or _bind(name), formula=formula, doc=doc, jac=[jac], vjp=[vjp],
                        jvp=[jvp], battery=battery, generate=generate, numpy=numpy, methods=methods)


# ---- sum, mean -------------------------------------------------------------------------------------
def _sum_jac(scale):
    def rule(ans, x, axis, keepdims):
        out_lab, in_lab = _labels(np.ndim(x), axis, keepdims)
        return Jacobian.from_labels(np.shape(ans), np.shape(x), out_lab + in_lab, coef=scale(x, axis))
    return rule


sum = defprimitive(
    "sum", lambda x, axis, keepdims: x.sum(axis=axis, keepdims=keepdims), bind=_bind("sum"),
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..)   (k: kept axes, r: summed axes)",
    doc="Sum over ``axis`` (int, tuple or None), numpy semantics incl. keepdims; an empty sum is 0.",
    jac=[_sum_jac(lambda x, axis: 1.0)],
    vjp=[lambda g, ans, x, axis, keepdims: _broadcast_back(g, ans, x, axis, keepdims)],
    jvp=[lambda t, ans, x, axis, keepdims: t.sum(axis=axis, keepdims=keepdims)],
    battery=_reduce_battery, generate=_gen_reduce, numpy=(np.sum,))


def _inv_count(x, axis):
    """1/N, or 0 for an empty group (its mean is nan but depends on no input: the tangent is 0)."""
    n = _count(x, axis)
    return 1.0 / n if n else 0.0


def _mean_impl(x, axis, keepdims):
    if _count(x, axis):
        return x.mean(axis=axis, keepdims=keepdims)
    # numpy's value for an empty group (nan), without numpy's "Mean of empty slice" warning
    return np.full(np.shape(x.sum(axis=axis, keepdims=keepdims)), np.nan)


mean = defprimitive(
    "mean", _mean_impl, bind=_bind("mean"),
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..) / N   (N: number of elements averaged)",
    doc="Mean over ``axis`` (int, tuple or None), numpy semantics incl. keepdims. The mean of an empty "
        "group is nan (as numpy, without its warning); it depends on no input, so its tangent is 0.",
    jac=[_sum_jac(_inv_count)],
    vjp=[lambda g, ans, x, axis, keepdims: _broadcast_back(g, ans, x, axis, keepdims) * _inv_count(x, axis)],
    jvp=[lambda t, ans, x, axis, keepdims: t.sum(axis=axis, keepdims=keepdims) * _inv_count(x, axis)],
    battery=_reduce_battery, generate=_gen_reduce, numpy=(np.mean,))


# ---- max, min ----------------------------------------------------------------------------------------
def _extreme_mask(ans, x, axis, keepdims):
    """1/m at the m positions that attain the extreme (ties share the derivative, as in JAX)."""
    xv, av = getval(x), getval(ans)
    hit = (xv == (av if keepdims else np.reshape(av, _kept_shape(np.shape(xv), axis)))).astype(np.float64)
    return hit / np.sum(hit, axis=axis, keepdims=True)


def _bind_extreme(name):
    plain = _bind(name)

    def bind(x, axis=None, out=None, keepdims=False, initial=_NoValue, where=_NoValue):
        inputs, params = plain(x, axis, None, out, keepdims, initial, where)
        shape = np.shape(x)
        empty = [a for a in params["axis"] if shape[len(shape) + a] == 0]
        if empty:
            raise ShapeError(f"{name}: axis {len(shape) + empty[0]} of the input (shape {shape}) has length 0 and "
                             f"the {'maximum' if name == 'max' else 'minimum'} of no values is undefined (numpy "
                             f"raises too); reduce over non-empty axes")
        return inputs, params
    return bind


def _gen_extreme(rng):
    (x,), kw = _gen_reduce(rng, nonempty=True)
    return (_separated(rng, x.shape),), kw


max = _defweighted(
    "max", lambda x, axis, keepdims: x.max(axis=axis, keepdims=keepdims), _extreme_mask,
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..) [X[k..,r..] = Y[k..]] / (number of maxima)",
    doc="Maximum over ``axis`` (numpy's max/amax; ``initial`` and ``where`` are not supported). Tied maxima "
        "share the derivative equally (as in JAX).",
    bind=_bind_extreme("max"), generate=_gen_extreme, numpy=(np.max, np.amax))

min = _defweighted(
    "min", lambda x, axis, keepdims: x.min(axis=axis, keepdims=keepdims), _extreme_mask,
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..) [X[k..,r..] = Y[k..]] / (number of minima)",
    doc="Minimum over ``axis`` (numpy's min/amin; ``initial`` and ``where`` are not supported). Tied minima "
        "share the derivative equally (as in JAX).",
    bind=_bind_extreme("min"), generate=_gen_extreme, numpy=(np.min, np.amin), methods=("min",))

amax, amin = max, min


# ---- prod, cumsum, cumprod -----------------------------------------------------------------------------
def _concat(parts, axis=-1):
    return registry["concatenate"].bound(*parts, axis=axis)


def _flip_last(x):
    return x[..., ::-1]


def _to_last(x, axis):
    """x with the negative ``axis`` moved to the end, and the permutation that moves it back."""
    n = x.ndim
    if axis == -1:
        return x, None
    perm = [q for q in range(n) if q != n + axis] + [n + axis]
    back = [0] * n
    for i, q in enumerate(perm):
        back[q] = i
    return x.transpose(tuple(perm)), tuple(back)


def _from_last(x, back):
    return x if back is None else x.transpose(back)


def _exclusive_cumprod(x):
    """prod_{i<j} x[..., i] for each j along the last axis (no division: exact with zeros)."""
    m = x.shape[-1]
    if m == 0:
        return x
    return _concat([np.ones(x.shape[:-1] + (1,)), cumprod.bound(x[..., :-1], axis=-1)])


def _others_product(x):
    """prod_{i != j} x[..., i] for each j along the last axis: left and right exclusive products."""
    m = x.shape[-1]
    if m == 0:
        return x
    right = _flip_last(_exclusive_cumprod(_flip_last(x)))
    return _exclusive_cumprod(x) * right


def _prod_deriv(ans, x, axis, keepdims):
    """D[k.., r..] = product of the other entries of the reduced group (computed without dividing by x)."""
    n = x.ndim
    red = [n + a for a in axis]
    keep = [q for q in range(n) if q not in red]
    perm = tuple(keep + red)
    xt = x.transpose(perm) if perm != tuple(range(n)) else x
    m = math.prod(xt.shape[len(keep):])
    D = _others_product(xt.reshape(xt.shape[:len(keep)] + (m,))).reshape(xt.shape)
    if perm == tuple(range(n)):
        return D
    back = [0] * n
    for i, q in enumerate(perm):
        back[q] = i
    return D.transpose(tuple(back))


def _gen_prod(rng):
    (x,), kw = _gen_reduce(rng, domain="nonzero")
    if x.size and rng.random() < 0.3:  # exact zeros: the derivative is the product of the others
        x = np.array(x)
        x.flat[rng.integers(x.size, size=int(rng.integers(1, 3)))] = 0.0
    return (x,), kw


def _prod_battery(rng, n):
    cases = _reduce_battery(rng, n)
    x = sample(rng, (3, n + 1))
    x[0, 1] = 0.0
    x[2, :2] = 0.0
    cases += [((x,), {"axis": -1}), ((x,), {}), ((np.zeros((2, 0)),), {"axis": 1})]
    return cases


prod = _defweighted(
    "prod", lambda x, axis, keepdims: x.prod(axis=axis, keepdims=keepdims), _prod_deriv,
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..) prod_{r' != r..} X[k..,r']   (exact with zeros: with one "
            "zero it is the product of the others, with two or more 0)",
    doc="Product over ``axis`` (numpy's prod; ``initial`` and ``where`` are not supported); an empty product "
        "is 1. The derivative is the product of the other entries, formed from left and right cumulative "
        "products, never by dividing by x, so it is exact when x holds zeros.",
    battery=_prod_battery, generate=_gen_prod, numpy=(np.prod,), methods=("prod",))


def _bind_cum(name):
    def bind(a, axis=None, dtype=None, out=None):
        _refuse(name, dtype=dtype, out=out)
        if axis is None:
            return (a,), {"axis": None}
        if np.ndim(a) == 0:
            raise AxisError(f"{name}: axis {axis} given for a 0-d input; use axis=None")
        (ax,) = norm_axes(name, axis, np.ndim(a), allow_none=False)
        return (a,), {"axis": ax}
    return bind


def _cum_layout(t, x, axis):
    """A tangent (batch + x.shape) with the cumulative axis last: (array, permutation back or None, flat)."""
    nb = t.ndim - np.ndim(x)
    if axis is None:  # numpy flattens first
        return t.reshape(t.shape[:nb] + (math.prod(np.shape(x)),)), None
    return _to_last(t, axis)


def _tri_block(m):
    check_bytes(nbytes((m, m)), "a cumulative op: its triangular factor", (m, m))
    return np.tri(m)


def _cum_jac(block):
    """Jacobian of a cumulative op: along the axis a (batch-of-rows) block B[.., k, j], delta elsewhere."""
    def rule(ans, x, axis):
        sx = np.shape(x)
        xv = np.asarray(x, dtype=np.float64)
        if not sx:  # a 0-d input: the result is x itself as shape (1,)
            return Jacobian.from_labels(np.shape(ans), sx, ("o",))
        if axis is None:
            flat = xv.reshape(-1)
            B = block(flat)                   # (N, N), out index k, input index j (flat)
            in_lab = tuple(("i", q) for q in range(len(sx)))
            return Jacobian.from_labels(np.shape(ans), sx, ("o",) + in_lab, [(B.reshape((flat.size,) + sx),
                                                                             ("o",) + in_lab)])
        n = len(sx)
        last = np.moveaxis(xv, axis, -1)
        B = block(last)                       # rest + (m, m)
        out_lab = [("k", q) for q in range(n)]
        in_lab = list(out_lab)
        out_lab[n + axis], in_lab[n + axis] = "o", "i"
        rest = [("k", q) for q in range(n) if q != n + axis]
        factors = [(B, tuple(rest) + ("o", "i"))] if B.ndim > 2 else [(B, ("o", "i"))]
        return Jacobian.from_labels(np.shape(ans), sx, tuple(out_lab) + tuple(in_lab), factors)
    return rule


def _cumsum_vjp(g, ans, x, axis):
    nb = g.ndim - np.ndim(ans)
    if axis is None:
        r = _flip_last(cumsum.bound(_flip_last(g), axis=-1))   # the reversed cumulative sum
        return r.reshape(g.shape[:nb] + np.shape(x))
    gl, back = _to_last(g, axis)
    return _from_last(_flip_last(cumsum.bound(_flip_last(gl), axis=-1)), back)


def _cumsum_jvp(t, ans, x, axis):
    if axis is None:
        tl, _ = _cum_layout(t, x, None)
        return cumsum.bound(tl, axis=-1)
    return cumsum.bound(t, axis=axis)


def _gen_cum(rng, domain="real"):
    s = random_shape(rng, 0, 3, 4)
    if not s or rng.random() < 0.25:
        return (random_array(rng, s, domain),), {}
    return (random_array(rng, s, domain),), {"axis": random_axis(rng, len(s), allow_none=False, allow_tuple=False)}


def _cum_battery(domain):
    def battery(rng, n):
        cases = [((sample(rng, s, domain),), kw) for s, kw in
                 [((n,), {"axis": 0}), ((3, n + 1), {"axis": -1}), ((2, n, 3), {"axis": 1}), ((2, n), {}),
                  ((), {}), ((2, 0), {"axis": 1})]]
        if domain == "nonzero":
            x = sample(rng, (2, n + 2))
            x[0, 1] = 0.0
            x[1, 0] = x[1, 2] = 0.0
            cases.append(((x,), {"axis": -1}))
        return cases
    return battery


cumsum = defprimitive(
    "cumsum", lambda a, axis: np.cumsum(a, axis=axis), bind=_bind_cum("cumsum"), numpy=(np.cumsum,),
    methods=("cumsum",),
    formula="dY[..,k,..]/dX[..,j,..] = delta(..) [j <= k]   (along axis; axis=None: flat row-major order)",
    doc="numpy cumsum(a, axis=None): running sums along ``axis``; axis=None runs over the flattened array.",
    jac=[_cum_jac(lambda x: _tri_block(x.shape[-1]))],
    vjp=[_cumsum_vjp], jvp=[_cumsum_jvp],
    battery=_cum_battery("real"), generate=_gen_cum)


def _linear_scan(a, b):
    """u[..., k] = a[..., k] u[..., k-1] + b[..., k] along the last axis (u[-1] = 0), by doubling: log2(m)
    rounds of shifted products and sums (primitives only), no division; ``a`` and ``b`` broadcast."""
    m = b.shape[-1]
    A, U = a, b
    d = 1
    while d < m:
        zeros = np.zeros(U.shape[:-1] + (d,))
        U = U + A * _concat([zeros, U[..., :m - d]])
        if 2 * d < m:
            A = A * _concat([np.ones(A.shape[:-1] + (d,)), A[..., :m - d]])
        d *= 2
    return U


def _cumprod_block(x):
    """rest + (m, m): B[.., k, j] = [j <= k] prod_{i<j} x_i prod_{j<i<=k} x_i (exact with zeros)."""
    m = x.shape[-1]
    check_bytes(nbytes(x.shape + (m,)), "cumprod: its per-row triangular block", x.shape + (m,))
    left = np.concatenate([np.ones(x.shape[:-1] + (1,)), np.cumprod(x[..., :-1], axis=-1)], axis=-1)
    upper = np.triu(np.ones((m, m)), 1).astype(bool)          # [i > j]
    X = np.where(upper, x[..., None, :], 1.0)                 # X[.., j, i] = x_i if i > j else 1
    R = np.cumprod(X, axis=-1)                                # R[.., j, k] = prod_{j<i<=k} x_i
    return np.swapaxes(R, -1, -2) * left[..., None, :] * np.tri(m)


def _cumprod_jvp(t, ans, x, axis):
    """ty_k = sum_{j<=k} t_j prod_{i<=k, i != j} x_i, i.e. u_k = x_k u_{k-1} + t_k prod_{i<k} x_i."""
    tl, back = _cum_layout(t, x, axis)
    xl, _ = _cum_layout(x, x, axis)
    return _from_last(_linear_scan(xl, tl * _exclusive_cumprod(xl)), back)


def _cumprod_vjp(g, ans, x, axis):
    """gx_j = prod_{i<j} x_i S_j with S_j = g_j + x_{j+1} S_{j+1}: a reversed linear scan."""
    nb = g.ndim - np.ndim(ans)
    xl, _ = _cum_layout(x, x, axis)
    gl, back = _cum_layout(g, ans, axis) if axis is not None else (g, None)
    m = xl.shape[-1]
    if m == 0:
        return g.reshape(g.shape[:nb] + np.shape(x)) if axis is None else g
    nxt = _concat([xl[..., 1:], np.zeros(xl.shape[:-1] + (1,))])   # x_{j+1}, and 0 past the end
    S = _flip_last(_linear_scan(_flip_last(nxt), _flip_last(gl)))
    r = S * _exclusive_cumprod(xl)
    if axis is None:
        return r.reshape(g.shape[:nb] + np.shape(x))
    return _from_last(r, back)


cumprod = defprimitive(
    "cumprod", lambda a, axis: np.cumprod(a, axis=axis), bind=_bind_cum("cumprod"), numpy=(np.cumprod,),
    methods=("cumprod",),
    formula="dY[..,k,..]/dX[..,j,..] = delta(..) [j <= k] prod_{i <= k, i != j} X[..,i,..]   (along axis)",
    doc="numpy cumprod(a, axis=None): running products along ``axis`` (axis=None: the flattened array). The "
        "derivative never divides by x (exact with zeros): the VJP and JVP are linear recurrences solved by "
        "log2(n) rounds of doubling.",
    jac=[_cum_jac(_cumprod_block)], vjp=[_cumprod_vjp], jvp=[_cumprod_jvp],
    battery=_cum_battery("nonzero"), generate=lambda rng: _gen_cum(rng, "nonzero"))


# ---- var, std -------------------------------------------------------------------------------------------
def _bind_moment(name):
    def bind(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=_NoValue, mean=_NoValue,
             correction=_NoValue):
        _refuse(name, dtype=dtype, out=out, where=where, mean=mean)
        if correction is not _NoValue:
            if ddof != 0:
                raise ValueError(f"{name}: ddof={ddof!r} and correction={correction!r} both given; they are the "
                                 f"same parameter (numpy's array-API name), give one")
            ddof = correction
        if isinstance(ddof, bool) or not isinstance(ddof, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: ddof must be a number (delta degrees of freedom); got {ddof!r}")
        return (a,), {"axis": norm_axes(name, axis, np.ndim(a)), "keepdims": _keepdims(keepdims),
                      "ddof": float(ddof)}
    return bind


def _quiet(f, *args, **kwargs):
    """numpy's value for degenerate groups (N - ddof <= 0: inf or nan) without its RuntimeWarning."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return f(*args, **kwargs)


def _dof_scale(c, x, axis, ddof):
    """c / (N - ddof) as numpy computes it (inf or nan when N - ddof <= 0)."""
    return float(_quiet(np.divide, c, _count(x, axis) - ddof))


def _centered(x, axis):
    return x - x.mean(axis=axis, keepdims=True) if _count(x, axis) else x


def _var_deriv(ans, x, axis, keepdims, ddof):
    return _centered(x, axis) * _dof_scale(2.0, x, axis, ddof)


def _std_deriv(ans, x, axis, keepdims, ddof):
    s = _kept(ans, x, axis, keepdims)
    # at zero spread the centred values are exactly 0, so adding 1 to the denominator there gives 0:
    # the derivative of std at zero variance is taken as 0 (a subgradient; JAX gives nan)
    zero = (getval(s) == 0).astype(np.float64)
    return _centered(x, axis) * _dof_scale(1.0, x, axis, ddof) / (s + zero)


def _gen_moment(rng):
    def extra(rng, s, axis):
        n = _count(np.empty(s), norm_axes("gen", axis, len(s)))
        return {"ddof": int(rng.integers(0, n)) if n > 1 and rng.random() < 0.3 else 0}
    (x,), kw = _gen_reduce(rng, extra=extra)
    return (x,), kw


def _moment_battery(rng, n):
    cases = _reduce_battery(rng, n)
    x = sample(rng, (3, n + 2))
    cases += [((x,), {"axis": 1, "ddof": 1}), ((x,), {"ddof": 2, "keepdims": True}),
              ((np.ones((2, 3)),), {"axis": 1}), ((sample(rng, (0, 3)),), {"axis": 1})]
    return cases


var = _defweighted(
    "var", lambda x, axis, keepdims, ddof: _quiet(np.var, x, axis=axis, ddof=ddof, keepdims=keepdims),
    _var_deriv, bind=_bind_moment("var"),
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..) 2 (X[k..,r..] - mean_r X[k..,r]) / (N - ddof)",
    doc="numpy var(a, axis=None, ddof=0, keepdims=False) (``correction`` is accepted as ddof); N - ddof <= 0 "
        "gives inf or nan as in numpy (without its warning).",
    battery=_moment_battery, generate=_gen_moment, numpy=(np.var,), methods=("var",))

std = _defweighted(
    "std", lambda x, axis, keepdims, ddof: _quiet(np.std, x, axis=axis, ddof=ddof, keepdims=keepdims),
    _std_deriv, bind=_bind_moment("std"),
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..) (X[k..,r..] - mean_r X[k..,r]) / ((N - ddof) Y[k..]);  "
            "0 where Y = 0",
    doc="numpy std(a, axis=None, ddof=0, keepdims=False): sqrt(var). At zero variance (all entries of a group "
        "equal) std is not differentiable; its derivative is taken as 0 there (a subgradient of this convex "
        "function; JAX returns nan).",
    battery=_moment_battery, generate=_gen_moment, numpy=(np.std,), methods=("std",))


# ---- logsumexp ------------------------------------------------------------------------------------------
def _bind_logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    if return_sign:
        raise NotDifferentiableError("logsumexp: return_sign=True is not supported (the sign is a constant); "
                                     "keep the weights b >= 0, or split positive and negative weights")
    axes = norm_axes("logsumexp", axis, np.ndim(a))
    params = {"axis": axes, "keepdims": _keepdims(keepdims)}
    if b is None:
        return (a,), params
    sa, sb = np.shape(a), np.shape(b)
    if len(sb) > len(sa) or any(m not in (1, n) for m, n in zip(sb[::-1], sa[::-1])):
        raise ShapeError(f"logsumexp: the weights b have shape {sb}, which does not broadcast to a's shape {sa} "
                         f"without enlarging it; give b the shape of a (or one that broadcasts to it)")
    return (a, b), params


def _logsumexp_impl(a, b=None, *, axis, keepdims):
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0 or not _count(a, axis):
        s = np.zeros(np.shape(a.sum(axis=axis, keepdims=True)))
        m = s
    else:
        m = a.max(axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)   # all -inf (or an inf): shift by 0, numpy's arithmetic decides
        e = np.exp(a - m)
        s = (e if b is None else e * b).sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        out = np.log(s) + m
    return out if keepdims else out.reshape(np.shape(a.sum(axis=axis)))


def _softmax_weights(ans, a, axis, keepdims):
    return np.exp(a - _kept(ans, a, axis, keepdims))


def _lse_jac(k):
    def rule(ans, a, *rest, axis, keepdims):
        out_lab, in_lab = _labels(np.ndim(a), axis, keepdims)
        w = _softmax_weights(ans, a, axis, keepdims)
        if k == 0:
            D = w if not rest else w * np.asarray(rest[0])
            return Jacobian.from_labels(np.shape(ans), np.shape(a), out_lab + in_lab, [(np.asarray(D), in_lab)])
        sb, sa = np.shape(rest[0]), np.shape(a)
        off = len(sa) - len(sb)
        b_lab = tuple(in_lab[off + q] if n == sa[off + q] else ("b", q) for q, n in enumerate(sb))
        return Jacobian.from_labels(np.shape(ans), sb, out_lab + b_lab, [(np.asarray(w), in_lab)])
    return rule


def _lse_vjp(k):
    def rule(g, ans, a, *rest, axis, keepdims):
        w = _softmax_weights(ans, a, axis, keepdims)
        ge = _expand(g, ans, a, axis, keepdims)
        if k == 0:
            return ge * (w if not rest else w * rest[0])
        return unbroadcast(ge * w, np.shape(rest[0]), np.ndim(g) - np.ndim(ans))
    return rule


def _lse_jvp(k):
    def rule(t, ans, a, *rest, axis, keepdims):
        w = _softmax_weights(ans, a, axis, keepdims)
        if k == 0:
            D = w if not rest else w * rest[0]
            return (t * D).sum(axis=axis, keepdims=keepdims)
        return (expand_to(t, np.shape(rest[0]), np.ndim(a)) * w).sum(axis=axis, keepdims=keepdims)
    return rule


def _gen_logsumexp(rng):
    (x,), kw = _gen_reduce(rng)
    if rng.random() < 0.3 and x.size:  # (with b, an empty sum is log(0) = -inf: no finite differences)
        kw["b"] = random_array(rng, x.shape if rng.random() < 0.5 else x.shape[1:], "positive")
    return (x,), kw


logsumexp = defprimitive(
    "logsumexp", _logsumexp_impl, bind=_bind_logsumexp,
    formula="dY[k..]/dA[k'..,r..] = delta(k..,k'..) B exp(A[k..,r..] - Y[k..]);  "
            "dY[k..]/dB[k'..,r..] = delta(k..,k'..) exp(A[k..,r..] - Y[k..])",
    doc="log(sum(b * exp(a))) over ``axis`` (scipy.special.logsumexp's signature; b optional, b >= 0, "
        "return_sign not supported), computed stably: the maximum is subtracted first. An empty sum gives "
        "-inf.",
    jac=[_lse_jac(0), _lse_jac(1)], vjp=[_lse_vjp(0), _lse_vjp(1)], jvp=[_lse_jvp(0), _lse_jvp(1)],
    battery=lambda rng, n: _reduce_battery(rng, n) + [
        ((sample(rng, (3, n)),), {"axis": -1, "b": sample(rng, (3, n), "positive")}),
        ((sample(rng, (3, n)),), {"b": sample(rng, (n,), "positive")}),
        ((sample(rng, (3, n)),), {"axis": 0, "b": 2.0}),
        ((np.array([1000.0, 999.0, -3.0]),), {})],
    generate=_gen_logsumexp)


# ---- average: a composition of primitives ---------------------------------------------------------
@numpy_api.implements(np.average)
def average(a, axis=None, weights=None, returned=False, *, keepdims=_NoValue):
    """numpy average(a, axis=None, weights=None, returned=False, keepdims=False).

    Without weights: mean(a, axis). With weights w (a's shape, or the shape of the averaged axes):
    sum(a * w, axis) / sum(w, axis); both a and w are differentiated. ``returned=True`` also returns
    sum(w) (broadcast to the result's shape). Weights that sum to zero raise ZeroDivisionError, as in numpy.
    """
    kd = _keepdims(keepdims)
    a = a if type(a) is Tracer else np.asarray(a, dtype=np.float64)
    if weights is not None and type(weights) is not Tracer:
        weights = np.asarray(weights, dtype=np.float64)
    nd = np.ndim(a)
    axes = None if axis is None else norm_axes("average", axis, nd)
    if weights is None:
        avg = mean(a, axis=axis, keepdims=kd)
        if not returned:
            return avg
        scl = float(np.size(getval(a)) / builtins.max(np.size(getval(avg)), 1))
        return avg, np.full(np.shape(getval(avg)), scl)
    sa, sw = np.shape(a), np.shape(weights)
    if sw != sa:
        if axis is None:
            raise ShapeError(f"average: weights of shape {sw} for a of shape {sa}: give axis when their shapes "
                             f"differ (numpy raises too)")
        given = (axis,) if np.ndim(axis) == 0 else tuple(axis)
        want = tuple(sa[int(ax)] for ax in given)
        if sw != want:
            raise ShapeError(f"average: weights of shape {sw} do not fit a of shape {sa} along axis {axis}; give "
                             f"weights of shape {sa} or {want}")
        order = np.argsort([int(ax) % nd for ax in given])
        w = weights if list(order) == list(range(len(order))) else registry["transpose"](weights, tuple(order))
        weights = registry["reshape"](w, tuple(s if k - nd in axes else 1 for k, s in enumerate(sa)))
    scl = sum(registry["broadcast_to"](weights, sa) if np.shape(weights) != sa else weights, axis=axis,
              keepdims=kd)
    if np.any(getval(scl) == 0.0):
        raise ZeroDivisionError(f"average: the weights sum to zero along axis {axis} (a of shape {sa}), so the "
                                f"average is undefined (numpy raises too); check the weights")
    avg = sum(a * weights, axis=axis, keepdims=kd) / scl
    if not returned:
        return avg
    return avg, scl if np.shape(scl) == np.shape(avg) else registry["broadcast_to"](scl, np.shape(avg))


# ---- norm (numpy.linalg.norm) -----------------------------------------------------------------------------
_MATRIX_ORDS = ("fro", "nuc", np.inf, -np.inf, 1, -1, 2, -2)


def _bind_norm(x, ord=None, axis=None, keepdims=False):
    nd = np.ndim(x)
    if isinstance(ord, str) and ord not in ("fro", "nuc"):
        raise ValueError(f"norm: invalid norm order {ord!r}; use None, 'fro', 'nuc' or a number")
    if ord is not None and not isinstance(ord, str):
        if isinstance(ord, bool) or not isinstance(ord, (int, float, np.integer, np.floating)):
            raise ValueError(f"norm: invalid norm order {ord!r}; use None, 'fro', 'nuc' or a number")
        ord = float(ord)
    if axis is None:
        if ord is None:
            axes = tuple(range(-nd, 0))
        elif nd in (1, 2):
            axes = tuple(range(-nd, 0))
        else:
            raise ShapeError(f"norm: ord={ord!r} with axis=None needs a 1-d or 2-d input; got shape {np.shape(x)}. "
                             f"Give axis (an int for vector norms, a pair for matrix norms)")
    else:
        given = (axis,) if np.ndim(axis) == 0 else tuple(axis)
        norm_axes("norm", given, nd, allow_none=False)  # validates range and repeats
        if len(given) not in (1, 2):
            raise AxisError(f"norm: axis {axis!r} names {len(given)} axes; give one (vector norm) or two (matrix "
                            f"norm)")
        axes = tuple(int(a) % nd - nd for a in given)  # negative, in the order given (it matters for 1/inf)
    if len(axes) == 1 and isinstance(ord, str):
        raise ValueError(f"norm: ord={ord!r} is a matrix norm; for a vector norm (one axis) use a number")
    if len(axes) == 2 and ord is not None and ord not in _MATRIX_ORDS:
        raise ValueError(f"norm: invalid matrix norm order {ord!r}; use 'fro', 'nuc', 1, -1, 2, -2, inf or -inf")
    if ord is not None and 0 in np.shape(x):  # some orders take a minimum over nothing: numpy raises
        try:
            np.linalg.norm(np.zeros(np.shape(x)), ord=ord, axis=axes)
        except ValueError:
            raise ShapeError(f"norm: ord={ord!r} over axis {axis!r} of an input of shape {np.shape(x)} takes a "
                             f"minimum over an empty axis, which is undefined (numpy raises too)") from None
    return (x,), {"ord": ord, "axis": axes, "keepdims": bool(keepdims)}


def _norm_impl(x, ord, axis, keepdims):
    if ord is None and len(axis) != 1 and len(axis) != 2:  # numpy: the 2-norm of the flattened array
        return np.asarray(np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)), dtype=np.float64)
    return np.asarray(_quiet(np.linalg.norm, x, ord=ord, axis=axis, keepdims=keepdims), dtype=np.float64)


def _sign(x):
    return np.sign(getval(x))


def _share(values, target, axis):
    """1/m at the m positions along ``axis`` where ``values`` equals ``target`` (ties share)."""
    hit = (values == target).astype(np.float64)
    return hit / np.sum(hit, axis=axis, keepdims=True)


def _norm_deriv(ans, x, ord, axis, keepdims):
    """D = d norm / dx, shaped like x (with primitives where it depends on x smoothly)."""
    y = _kept(ans, x, axis, keepdims)
    if ord is None or ord == "fro" or (len(axis) == 1 and ord == 2.0):
        # x / ||x||; 0 at x = 0 (a subgradient; JAX gives nan)
        return x / (y + (getval(y) == 0).astype(np.float64))
    s = _sign(x)
    xv = getval(x)
    if len(axis) == 1:
        (ax,) = axis
        if ord == 1.0:
            return s
        if ord == 0.0:
            return np.zeros(np.shape(xv))
        if ord in (np.inf, -np.inf):
            return s * _share(np.abs(xv), getval(y), ax)
        p = ord
        ax_abs = x * s                               # |x|, differentiable away from 0
        yz = (getval(y) == 0).astype(np.float64)
        return s * ax_abs ** (p - 1.0) / (y + yz) ** (p - 1.0)
    r, c = axis
    if ord in (1.0, -1.0):   # max/min over columns of the column sums of |x|
        colsum = np.sum(np.abs(xv), axis=r, keepdims=True)
        return s * _share(colsum, getval(y), c)
    if ord in (np.inf, -np.inf):   # max/min over rows of the row sums of |x|
        rowsum = np.sum(np.abs(xv), axis=c, keepdims=True)
        return s * _share(rowsum, getval(y), r)
    # 2, -2, nuc: from the singular vectors, with the matrix axes moved last
    from .decomp import svd_u, svd_vh
    n = x.ndim
    rest = [q for q in range(n) if q not in (n + r, n + c)]
    perm = tuple(rest + [n + r, n + c])
    xm = x.transpose(perm) if perm != tuple(range(n)) else x
    U, Vh = svd_u.bound(xm), svd_vh.bound(xm)
    if ord == "nuc":
        Dm = U @ Vh
    else:
        k = 0 if ord == 2.0 else -1
        Dm = U[..., :, k:k + 1 if k == 0 else None] @ Vh[..., k:k + 1 if k == 0 else None, :]
    if perm == tuple(range(n)):
        return Dm
    back = [0] * n
    for i, q in enumerate(perm):
        back[q] = i
    return Dm.transpose(tuple(back))


def _gen_norm(rng):
    r = rng.random()
    if r < 0.3:   # vector norms along one axis, entries away from 0 and without ties
        s = random_shape(rng, 1, 3, 4, zero=0.0)
        ax = random_axis(rng, len(s), allow_none=False, allow_tuple=False)
        ord = [None, 1, 2, 3, 1.5, np.inf, -np.inf, 0.5][int(rng.integers(8))]
        x = _separated(rng, s)
        x = x + np.where(x >= 0, 0.2, -0.2)
        return (x,), {"ord": ord, "axis": ax, "keepdims": bool(rng.random() < 0.3)}
    if r < 0.45:  # ord=None over all axes
        return (random_array(rng, random_shape(rng, 0, 3, 4), "nonzero"),), {"keepdims": bool(rng.random() < 0.3)}
    # matrix norms: singular values well apart, no ties in row or column sums
    batch = random_shape(rng, 0, 1, 3, zero=0.0)
    m, n = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    ord = ["fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf][int(rng.integers(8))]
    x = _well_separated_matrix(rng, batch, m, n)
    if not batch:
        return (x,), {"ord": ord}
    if rng.random() < 0.5:
        return (x,), {"ord": ord, "axis": (-1, -2) if rng.random() < 0.5 else (-2, -1)}
    return (np.moveaxis(x, 0, -1),), {"ord": ord, "axis": (0, 1), "keepdims": bool(rng.random() < 0.5)}


def _well_separated_matrix(rng, batch, m, n):
    """batch + (m, n) with singular values 1, 2, 3, ... times a scale and random singular vectors, plus
    jitter that keeps row/column absolute sums apart."""
    k = builtins.min(m, n)
    out = np.empty(batch + (m, n))
    for idx in np.ndindex(*batch):
        U = np.linalg.qr(rng.normal(size=(m, m)))[0][:, :k]
        V = np.linalg.qr(rng.normal(size=(n, n)))[0][:, :k]
        s = (1.0 + np.arange(k)[::-1]) * rng.uniform(0.8, 1.2)
        out[idx] = (U * s) @ V.T
    return out


norm = defprimitive(
    "norm", _norm_impl, bind=_bind_norm, numpy=(np.linalg.norm,),
    formula="dY[k..]/dX[k'..,r..] = delta(k..,k'..) D[k..,r..];  D = X/Y (2-norm, fro), sign(X) (1), "
            "sign(X) [|X| = Y]/#ties (inf, -inf), sign(X) |X|^(p-1) / Y^(p-1) (p), U V^T (nuc), u1 v1^T (2), "
            "sign(X) [column (row) sum of |X| = Y]/#ties (matrix 1, -1 (inf, -inf))",
    doc="numpy.linalg.norm(x, ord=None, axis=None, keepdims=False): vector norms along one axis (None/2, 1, "
        "inf, -inf, 0, other p), matrix norms over two axes ('fro', 'nuc', 1, -1, inf, -inf, 2, -2), and "
        "ord=None over all axes. Conventions where the norm is not differentiable: 0 at x = 0 (2-norm, fro, "
        "p-norms), abs'(0) = 0 (1-norms), ties in max/min share equally; the matrix 2-norm and nuclear norm "
        "need distinct, nonzero singular values for their second derivatives.",
    jac=[lambda ans, x, ord, axis, keepdims: Jacobian.from_labels(
        np.shape(ans), np.shape(x), _norm_labels(np.ndim(x), axis, keepdims),
        [(np.asarray(_norm_deriv(ans, x, ord, axis, keepdims), dtype=np.float64), tuple(range(np.ndim(x))))])],
    vjp=[lambda g, ans, x, ord, axis, keepdims: _expand(g, ans, x, tuple(sorted(axis)), keepdims)
         * _norm_deriv(ans, x, ord, axis, keepdims)],
    jvp=[lambda t, ans, x, ord, axis, keepdims: (t * _norm_deriv(ans, x, ord, axis, keepdims)).sum(
        axis=axis, keepdims=keepdims)],
    battery=lambda rng, n: [((sample(rng, s, "nonzero"),), kw) for s, kw in
                            [((n,), {}), ((3, n), {}), ((2, n, 3), {"keepdims": True}), ((n, 3), {"axis": 0}),
                             ((n, 3), {"ord": 1, "axis": 1}), ((3, n), {"ord": 3, "axis": -1}),
                             ((3, n + 1), {"ord": np.inf, "axis": -1}), ((0, 3), {})]] + [
        ((_well_separated_matrix(rng, (), 3, n + 1),), {"ord": o}) for o in ("fro", "nuc", 1, -1, 2, -2, np.inf)] + [
        ((_well_separated_matrix(rng, (2,), n + 1, 3),), {"ord": 2, "axis": (-1, -2), "keepdims": True})],
    generate=_gen_norm)


def _norm_labels(ndim, axis, keepdims):
    out_lab, in_lab = _labels(ndim, tuple(sorted(axis)), keepdims)
    return out_lab + in_lab
