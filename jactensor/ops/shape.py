"""Shape primitives: reshape, transpose, broadcast_to, getitem (and its adjoint), concatenate.

These only move entries, so every Jacobian is 0/1: deltas where an axis carries
over, a small selection factor where an axis is sliced or regrouped.
"""
import numpy as np

from ..core import PerArg, broadcast_jacobian, defprimitive
from ..errors import AxisError, IndexingError, ShapeError
from ..jacobian import Jacobian
from ._util import bcast, expand_to, nbatch, norm_axes, sample, unbroadcast

__all__ = ["reshape", "transpose", "broadcast_to", "getitem", "scatter_add", "concatenate"]


# ---- reshape -------------------------------------------------------------------------------
def _bind_reshape(x, shape):
    shape = (shape,) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    size = int(np.prod(np.shape(x), dtype=np.int64))
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: at most one -1 in the new shape {shape}")
    if -1 in shape:
        rest = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
        if rest == 0 or size % rest:
            raise ShapeError(f"reshape: cannot reshape an array of shape {np.shape(x)} ({size} elements) into {shape}")
        shape = tuple(size // rest if s == -1 else s for s in shape)
    if int(np.prod(shape, dtype=np.int64)) != size:
        raise ShapeError(f"reshape: cannot reshape an array of shape {np.shape(x)} ({size} elements) into {shape} "
                         f"({int(np.prod(shape, dtype=np.int64))} elements)")
    return (x,), {"shape": shape}


def _reshape_blocks(out_shape, in_shape):
    """Pair up runs of output and input axes with equal products (row-major order)."""
    blocks, i, j = [], 0, 0
    while i < len(out_shape) or j < len(in_shape):
        bo, bi, po, pi = [], [], 1, 1
        if i < len(out_shape):
            bo.append(i)
            po, i = po * out_shape[i], i + 1
        if j < len(in_shape):
            bi.append(j)
            pi, j = pi * in_shape[j], j + 1
        while po != pi:
            if po < pi and i < len(out_shape):
                bo.append(i)
                po, i = po * out_shape[i], i + 1
            elif j < len(in_shape):
                bi.append(j)
                pi, j = pi * in_shape[j], j + 1
            else:
                break
        blocks.append((bo, bi, po))
    return blocks


def _reshape_jac(ans, x, shape):
    out_shape, in_shape = tuple(shape), np.shape(x)
    no = len(out_shape)
    out_lab, in_lab, factors = [None] * no, [None] * len(in_shape), []
    for bo, bi, p in _reshape_blocks(out_shape, in_shape):
        if len(bo) == 1 and len(bi) == 1:
            out_lab[bo[0]] = in_lab[bi[0]] = ("d", bo[0])
            continue
        for k in bo:
            out_lab[k] = ("o", k)
        for k in bi:
            in_lab[k] = ("i", k)
        if p > 1:  # an identity regrouped: eye(p) seen as (block out dims) x (block in dims)
            eye = np.eye(p).reshape([out_shape[k] for k in bo] + [in_shape[k] for k in bi])
            factors.append((eye, [("o", k) for k in bo] + [("i", k) for k in bi]))
    return Jacobian.from_labels(out_shape, in_shape, out_lab + in_lab, factors)


reshape = defprimitive(
    "reshape", lambda x, shape: np.reshape(x, shape), bind=_bind_reshape, numpy=(np.reshape,),
    formula="dY[i..]/dX[j..] = delta(flat(i..), flat(j..))   (row-major flat index)",
    doc="numpy reshape (one -1 allowed).",
    jac=[_reshape_jac],
    vjp=[lambda g, ans, x, shape: g.reshape(np.shape(g)[:nbatch(g, ans)] + np.shape(x))],
    jvp=[lambda t, ans, x, shape: t.reshape(np.shape(t)[:np.ndim(t) - np.ndim(x)] + tuple(shape))],
    battery=lambda rng, n: [((sample(rng, (n, 6)),), {"shape": (3, 2 * n)}),
                            ((sample(rng, (2, n, 3)),), {"shape": (-1,)}),
                            ((sample(rng, (n,)),), {"shape": (1, n, 1)}),
                            ((sample(rng, ()),), {"shape": (1,)}),
                            ((sample(rng, (4, n)),), {"shape": (2, 2, n)})])


# ---- transpose -----------------------------------------------------------------------------
def _bind_transpose(x, axes=None):
    n = np.ndim(x)
    if axes is None:
        return (x,), {"axes": tuple(range(n - 1, -1, -1))}
    axes = tuple(int(a) for a in axes)
    if sorted(a % n if n else a for a in axes) != list(range(n)) or any(not -n <= a < n for a in axes):
        raise AxisError(f"transpose: axes {axes} are not a permutation of the {n} axes of an input of shape "
                        f"{np.shape(x)}")
    return (x,), {"axes": tuple(a % n for a in axes)}


def _transpose_batched(g, nb, perm):
    return g.transpose(tuple(range(nb)) + tuple(nb + int(a) for a in perm))


transpose = defprimitive(
    "transpose", lambda x, axes: np.transpose(x, axes), bind=_bind_transpose, numpy=(np.transpose,),
    formula="dY[i_0..i_n]/dX[j..] = prod_k delta(i_k, j_axes[k])",
    doc="Permute axes (default: reverse them), numpy semantics.",
    jac=[lambda ans, x, axes: Jacobian.from_labels(np.shape(ans), np.shape(x),
                                                   tuple(axes) + tuple(range(np.ndim(x))))],
    vjp=[lambda g, ans, x, axes: _transpose_batched(g, nbatch(g, ans), np.argsort(axes))],
    jvp=[lambda t, ans, x, axes: _transpose_batched(t, np.ndim(t) - np.ndim(x), axes)],
    battery=lambda rng, n: [((sample(rng, (n, n + 1)),), {}),
                            ((sample(rng, (2, n, 3)),), {"axes": (1, 2, 0)}),
                            ((sample(rng, (n,)),), {}),
                            ((sample(rng, ()),), {})])


# ---- broadcast_to --------------------------------------------------------------------------
def _bind_broadcast_to(x, shape):
    shape = (shape,) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    xs = np.shape(x)
    if len(xs) > len(shape) or any(a not in (1, b) for a, b in zip(xs[::-1], shape[::-1])):
        raise ShapeError(f"broadcast_to: an input of shape {xs} cannot be broadcast to {shape} "
                         f"(numpy rules: align from the right; each axis equal or 1)")
    return (x,), {"shape": shape}


broadcast_to = defprimitive(
    "broadcast_to", lambda x, shape: np.broadcast_to(x, shape), bind=_bind_broadcast_to, numpy=(np.broadcast_to,),
    formula="dY[i..]/dX[j..] = delta over the axes X keeps (axes X broadcasts along are free)",
    doc="numpy broadcast_to (a read-only view forward).",
    jac=[lambda ans, x, shape: broadcast_jacobian(None, tuple(shape), np.shape(x))],
    vjp=[lambda g, ans, x, shape: unbroadcast(g, np.shape(x), nbatch(g, ans))],
    jvp=[lambda t, ans, x, shape: bcast(expand_to(t, np.shape(x), len(shape)),
                                        np.shape(t)[:np.ndim(t) - np.ndim(x)] + tuple(shape))],
    battery=lambda rng, n: [((sample(rng, (n, 1)),), {"shape": (2, n, 3)}),
                            ((sample(rng, ()),), {"shape": (n,)}),
                            ((sample(rng, (n,)),), {"shape": (n,)})])


# ---- getitem and its adjoint ----------------------------------------------------------------
def _is_basic(i):
    return i is None or i is Ellipsis or isinstance(i, (slice, int, np.integer))


def _normalise_index(op, idx, shape):
    """Index -> tuple with Ellipsis expanded; integer lists -> arrays. Validated against ``shape``."""
    idx = idx if isinstance(idx, tuple) else (idx,)
    idx = tuple(np.asarray(i) if isinstance(i, (list, np.ndarray)) else i for i in idx)
    for i in idx:
        if isinstance(i, np.ndarray) and i.dtype.kind not in "iub":
            raise TypeError(f"{op}: index arrays must be integers or bools; got dtype {i.dtype}")
        if not (_is_basic(i) or isinstance(i, np.ndarray)):
            raise TypeError(f"{op}: unsupported index {i!r}; use ints, slices, None, Ellipsis or integer arrays")
    n_ell = sum(i is Ellipsis for i in idx)
    if n_ell > 1:
        raise IndexingError(f"{op}: an index can only have a single Ellipsis")
    used = sum(0 if (i is None or i is Ellipsis) else (i.ndim if isinstance(i, np.ndarray) and i.dtype == bool
                                                       else 1) for i in idx)
    if used > len(shape):
        raise IndexingError(f"{op}: too many indices ({used}) for an array of shape {shape}")
    if n_ell:
        k = idx.index(Ellipsis)
        idx = idx[:k] + (slice(None),) * (len(shape) - used) + idx[k + 1:]
    adv = [k for k, i in enumerate(idx) if isinstance(i, np.ndarray)]
    if adv and adv != list(range(adv[0], adv[-1] + 1)):
        raise IndexingError(f"{op}: advanced (array) indices separated by slices are not supported; index in two steps")
    try:
        np.broadcast_to(np.empty((), dtype=bool), shape)[idx]  # validates bounds without copying x
    except IndexError as e:
        raise IndexingError(f"{op}: index {idx!r} does not fit an array of shape {shape}: {e}") from None
    return idx


def _bind_getitem(x, idx):
    return (x,), {"idx": _normalise_index("getitem", idx, np.shape(x))}


def _index_labels(idx, in_shape, out_shape):
    """Labels and selection factors of y = x[idx]: (out labels, in labels, factors)."""
    if not all(_is_basic(i) for i in idx):
        # general fallback: a one-hot map from each output entry to the input entry it reads
        pos = np.arange(int(np.prod(in_shape, dtype=np.int64))).reshape(in_shape)[idx]
        onehot = (pos.reshape(-1, 1) == np.arange(int(np.prod(in_shape)))).astype(np.float64)
        onehot = onehot.reshape(tuple(out_shape) + tuple(in_shape))
        ol = [("o", k) for k in range(len(out_shape))]
        il = [("i", k) for k in range(len(in_shape))]
        return ol, il, [(onehot, ol + il)]
    out_lab, in_lab, factors = [], [], []
    a = 0  # input axis
    for i in idx:
        if i is None:
            out_lab.append(("new", len(out_lab)))
            continue
        n = in_shape[a]
        if isinstance(i, (int, np.integer)):
            e = np.zeros(n)
            e[int(i) % n] = 1.0
            in_lab.append(("i", a))
            factors.append((e, [("i", a)]))
        else:
            r = range(n)[i]
            if r == range(n):
                out_lab.append(("d", a))
                in_lab.append(("d", a))
            else:
                sel = np.zeros((len(r), n))
                sel[np.arange(len(r)), list(r)] = 1.0
                out_lab.append(("o", a))
                in_lab.append(("i", a))
                factors.append((sel, [("o", a), ("i", a)]))
        a += 1
    for b in range(a, len(in_shape)):
        out_lab.append(("d", b))
        in_lab.append(("d", b))
    return out_lab, in_lab, factors


def _getitem_jac(ans, x, idx):
    ol, il, factors = _index_labels(idx, np.shape(x), np.shape(ans))
    return Jacobian.from_labels(np.shape(ans), np.shape(x), ol + il, factors)


def _batched(idx, nb):
    return (slice(None),) * nb + tuple(idx)


getitem = defprimitive(
    "getitem", lambda x, idx: np.asarray(x[idx]), bind=_bind_getitem,
    formula="dY[i..]/dX[j..] = [X[j..] is the entry Y[i..] reads]   (a 0/1 selection per axis)",
    doc="x[idx]: basic indexing (ints, slices, None, Ellipsis) and integer/bool arrays.",
    jac=[_getitem_jac],
    vjp=[lambda g, ans, x, idx: scatter_add.bound(g, idx=idx, shape=np.shape(g)[:nbatch(g, ans)] + np.shape(x),
                                                  nb=nbatch(g, ans))],
    jvp=[lambda t, ans, x, idx: getitem.bound(t, idx=_batched(idx, np.ndim(t) - np.ndim(x)))],
    battery=lambda rng, n: [((sample(rng, (n, 4)),), {"idx": (slice(None), 1)}),
                            ((sample(rng, (n + 2, 3)),), {"idx": slice(1, None, 2)}),
                            ((sample(rng, (2, n, 3)),), {"idx": (Ellipsis, None, 0)}),
                            ((sample(rng, (n + 1,)),), {"idx": np.array([0, n, 0])}),
                            ((sample(rng, (n, 3)),), {"idx": 0})])


def _scatter_impl(g, idx, shape, nb):
    out = np.zeros(shape)
    if all(_is_basic(i) for i in idx):
        out[_batched(idx, nb)] = g  # basic indices never repeat an entry
    else:
        np.add.at(out, _batched(idx, nb), g)  # integer arrays may: accumulate
    return out


def _bind_scatter(g, idx, shape, nb=0):
    shape = tuple(int(s) for s in shape)
    want = np.broadcast_to(np.empty((), bool), shape)[_batched(idx, nb)].shape
    if np.shape(g) != want:
        raise ShapeError(f"scatter_add: values of shape {np.shape(g)} do not fit index {idx!r} into shape {shape} "
                         f"(expected values of shape {want})")
    return (g,), {"idx": tuple(idx), "shape": shape, "nb": int(nb)}


def _scatter_jac(ans, g, idx, shape, nb):
    ol, il, factors = _index_labels(_batched(idx, nb), shape, np.shape(g))
    # scatter is the transpose of gather: the same labels with the two roles swapped
    return Jacobian.from_labels(shape, np.shape(g), il + ol, factors)


scatter_add = defprimitive(
    "scatter_add", _scatter_impl, bind=_bind_scatter,
    formula="dY[j..]/dG[i..] = [entry j.. is where G[i..] is added]   (the transpose of getitem)",
    doc="zeros(shape) with g added at [(:,)*nb + idx] (nb leading batch axes); getitem's adjoint, "
        "repeated indices accumulate.",
    jac=[_scatter_jac],
    vjp=[lambda h, ans, g, idx, shape, nb: getitem.bound(h, idx=_batched(idx, nbatch(h, ans) + nb))],
    jvp=[lambda t, ans, g, idx, shape, nb: scatter_add.bound(t, idx=idx, shape=np.shape(t)[:np.ndim(t) - np.ndim(g)]
                                                             + shape, nb=np.ndim(t) - np.ndim(g) + nb)],
    battery=lambda rng, n: [((sample(rng, (n,)), (slice(None), 1), (n, 4)), {}),
                            ((sample(rng, (3,)), (np.array([0, n, 0]),), (n + 1,)), {}),
                            ((sample(rng, (2, 3)), (slice(1, 4),), (2, n + 4)), {"nb": 1})])


# ---- concatenate ---------------------------------------------------------------------------
def _bind_concatenate(arrays, axis=0):
    arrays = tuple(arrays)
    if not arrays:
        raise ShapeError("concatenate: needs at least one array")
    shapes = [np.shape(a) for a in arrays]
    n = len(shapes[0])
    if n == 0:
        raise ShapeError("concatenate: zero-dimensional arrays cannot be concatenated; reshape them to (1,) first")
    (ax,) = norm_axes("concatenate", axis, n, allow_none=False)
    for k, s in enumerate(shapes):
        if len(s) != n or any(a != b for d, (a, b) in enumerate(zip(s, shapes[0])) if d != n + ax):
            raise ShapeError(f"concatenate: array {k} has shape {s} but array 0 has shape {shapes[0]}; all "
                             f"dimensions except axis {axis} must match")
    return arrays, {"axis": ax}


def _concat_offsets(arrays, axis):
    sizes = [np.shape(a)[axis] for a in arrays]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int), sizes


def _concat_jac(k):
    def rule(ans, *arrays, axis):
        offs, sizes = _concat_offsets(arrays, axis)
        n = np.ndim(ans)
        sel = np.zeros((np.shape(ans)[axis], sizes[k]))
        sel[offs[k] + np.arange(sizes[k]), np.arange(sizes[k])] = 1.0
        lab = list(range(n))
        out_lab, in_lab = list(lab), list(lab)
        out_lab[n + axis], in_lab[n + axis] = "o", "i"
        return Jacobian.from_labels(np.shape(ans), np.shape(arrays[k]), out_lab + in_lab, [(sel, ("o", "i"))])
    return rule


def _concat_vjp(k):
    def rule(g, ans, *arrays, axis):
        offs, _ = _concat_offsets(arrays, axis)
        return g[(Ellipsis, slice(int(offs[k]), int(offs[k + 1]))) + (slice(None),) * (-axis - 1)]
    return rule


def _concat_jvp(k):
    def rule(t, ans, *arrays, axis):
        batch = np.shape(t)[:np.ndim(t) - np.ndim(arrays[k])]
        parts = [t if j == k else np.zeros(batch + np.shape(a)) for j, a in enumerate(arrays)]
        return concatenate.bound(*parts, axis=axis)
    return rule


concatenate = defprimitive(
    "concatenate", lambda *arrays, axis: np.concatenate(arrays, axis=axis), bind=_bind_concatenate, numpy=(np.concatenate,),
    formula="dY[..,i,..]/dX_k[..,j,..] = delta(others) delta(i, offset_k + j)",
    doc="numpy concatenate(arrays, axis).",
    jac=PerArg(_concat_jac), vjp=PerArg(_concat_vjp), jvp=PerArg(_concat_jvp),
    battery=lambda rng, n: [(([sample(rng, (n, 2)), sample(rng, (n, 3))],), {"axis": 1}),
                            (([sample(rng, (n,)), sample(rng, (2,)), sample(rng, (1,))],), {}),
                            (([sample(rng, (1, 3)), sample(rng, (n, 3))],), {"axis": 0})])
