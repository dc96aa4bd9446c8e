"""Shape primitives: entries moved, copied or framed, never combined (diff excepted, which subtracts them).

reshape, transpose, broadcast_to, concatenate, stack, flip, roll, tile, repeat, pad, diff, copy, astype
are primitives; squeeze, expand_dims, ravel, swapaxes, moveaxis, hstack / vstack / dstack /
column_stack, the split family, fliplr / flipud / rot90, atleast_1d/2d/3d are the primitives they
truly are (a reshape, a transpose, a concatenate, getitems, flips). Every Jacobian is 0/1 (diff's
holds its finite-difference coefficients) and kept per axis: a delta where an axis carries over, a
small factor on each axis that moves (a selection, a reversed identity, a cyclic shift, a tiling or
repeating map, a one-hot over a new axis), a free label where an axis broadcasts.
"""
import numpy as np

from ..core import PerArg, broadcast_jacobian, defprimitive, unary_jacobian
from ..errors import AxisError, DTypeError, NotDifferentiableError, ShapeError
from ..jacobian import Jacobian
from ..memory import check_bytes, nbytes, numel
from ..numpy_api import implements
from ..tracer import Tracer, getval
from ._util import (bcast, broadcast_partner, expand_to, nbatch, norm_axes, random_array, random_axis, random_shape,
                    sample, unbroadcast)

__all__ = ["reshape", "transpose", "broadcast_to", "concatenate", "stack", "hstack", "vstack", "dstack",
           "column_stack", "split", "array_split", "hsplit", "vsplit", "dsplit", "squeeze", "expand_dims", "ravel",
           "swapaxes", "moveaxis", "flip", "fliplr", "flipud", "roll", "rot90", "tile", "repeat", "pad",
           "atleast_1d", "atleast_2d", "atleast_3d", "diff", "zeros_like", "ones_like", "full_like", "empty_like",
           "astype", "copy"]


def _one_axis(op, axis, ndim):
    """A single int axis -> its non-negative position."""
    if np.ndim(axis) != 0 or axis is None:
        raise AxisError(f"{op}: axis must be a single int; got {axis!r}")
    (a,) = norm_axes(op, axis, ndim, allow_none=False)
    return a + ndim


def _factor(shape, what):
    check_bytes(nbytes(shape), what, shape)
    return np.zeros(shape)


# ---- reshape -------------------------------------------------------------------------------
def _bind_reshape(x, shape):
    shape = (shape,) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    size = numel(np.shape(x))
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: at most one -1 in the new shape {shape}")
    if any(s < -1 for s in shape):
        raise ShapeError(f"reshape: negative dimension in the new shape {shape}")
    if -1 in shape:
        rest = numel(s for s in shape if s != -1)
        if rest == 0 or size % rest:
            raise ShapeError(f"reshape: cannot reshape an array of shape {np.shape(x)} ({size} elements) into {shape}")
        shape = tuple(size // rest if s == -1 else s for s in shape)
    if numel(shape) != size:
        raise ShapeError(f"reshape: cannot reshape an array of shape {np.shape(x)} ({size} elements) into {shape} "
                         f"({numel(shape)} elements)")
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


def _digit_factors(from_shape, to_shape, from_labels, to_labels, what):
    """Factors F_k[from.., t_k] = [digit k of flat(from..) in to_shape == t_k], one per axis of ``to_shape``
    longer than 1: their product is delta(flat(from..), flat(to..)), the regrouping of one block."""
    p = numel(from_shape)
    digits = np.unravel_index(np.arange(p), to_shape)
    out = []
    for k, n in enumerate(to_shape):
        check_bytes(nbytes((p, n)), what, tuple(from_shape) + (n,))
        f = (digits[k][:, None] == np.arange(n)).astype(np.float64).reshape(tuple(from_shape) + (n,))
        out.append((f, list(from_labels) + [to_labels[k]]))
    return out


def _reshape_jac(ans, x, shape):
    out_shape, in_shape = tuple(shape), np.shape(x)
    if numel(in_shape) == 0:
        return Jacobian.zeros(out_shape, in_shape)
    out_lab = [("o", k) for k in range(len(out_shape))]  # length-1 axes keep these free labels
    in_lab = [("i", k) for k in range(len(in_shape))]
    # pair the axes longer than 1 into blocks of equal products; a block of one axis each side is a delta
    oa = [k for k, n in enumerate(out_shape) if n != 1]
    ia = [k for k, n in enumerate(in_shape) if n != 1]
    factors = []
    for bo, bi, p in _reshape_blocks([out_shape[k] for k in oa], [in_shape[k] for k in ia]):
        bo, bi = [oa[k] for k in bo], [ia[k] for k in bi]
        if len(bo) == 1 and len(bi) == 1:
            out_lab[bo[0]] = in_lab[bi[0]] = ("d", bo[0])
            continue
        # the identity of the block, regrouped: one digit factor per axis of the side with the shorter axes
        os_, is_ = [out_shape[k] for k in bo], [in_shape[k] for k in bi]
        ol, il = [out_lab[k] for k in bo], [in_lab[k] for k in bi]
        if sum(is_) <= sum(os_):
            factors += _digit_factors(os_, is_, ol, il, "reshape: a regrouping factor")
        else:
            factors += _digit_factors(is_, os_, il, ol, "reshape: a regrouping factor")
    return Jacobian.from_labels(out_shape, in_shape, out_lab + in_lab, factors)


def _reshape_generate(rng):
    shape = random_shape(rng, 0, 4, max_size=4)
    size = numel(shape)
    if size == 0:
        new = [0] + [int(rng.integers(1, 4)) for _ in range(int(rng.integers(0, 3)))]
        rng.shuffle(new)
    else:  # a random factorisation of the size, with some length-1 axes
        new, rest = [], size
        for f in (2, 3, 5, 7):
            while rest % f == 0:
                new.append(f)
                rest //= f
        new.append(rest)
        rng.shuffle(new)
        merged = []
        for f in new:
            if merged and rng.random() < 0.5:
                merged[-1] *= f
            else:
                merged.append(f)
        new = [n for n in merged if n != 1 or rng.random() < 0.5]
        for _ in range(int(rng.integers(0, 2))):
            new.insert(int(rng.integers(0, len(new) + 1)), 1)
        if new and rng.random() < 0.3:
            new[int(rng.integers(0, len(new)))] = -1
    return (random_array(rng, shape), tuple(new)), {}


reshape = defprimitive(
    "reshape", lambda x, shape: np.reshape(x, shape), bind=_bind_reshape, numpy=(np.reshape,),
    formula="dY[i..]/dX[j..] = delta(flat(i..), flat(j..))   (row-major flat index; per regrouped block of axes, "
            "one 0/1 digit factor per axis)",
    doc="numpy reshape (one -1 allowed), row-major order.",
    jac=[_reshape_jac],
    vjp=[lambda g, ans, x, shape: g.reshape(np.shape(g)[:nbatch(g, ans)] + np.shape(x))],
    jvp=[lambda t, ans, x, shape: t.reshape(np.shape(t)[:np.ndim(t) - np.ndim(x)] + tuple(shape))],
    battery=lambda rng, n: [((sample(rng, (n, 6)),), {"shape": (3, 2 * n)}),
                            ((sample(rng, (2, n, 3)),), {"shape": (-1,)}),
                            ((sample(rng, (n,)),), {"shape": (1, n, 1)}),
                            ((sample(rng, ()),), {"shape": (1,)}),
                            ((sample(rng, (4, n)),), {"shape": (2, 2, n)}),
                            ((sample(rng, (2, 3, 2)),), {"shape": (3, 4)}),
                            ((sample(rng, (0,)),), {"shape": (0, 1, 3)}),
                            ((sample(rng, (3, 4))[:, ::-1],), {"shape": (2, 6)})],
    generate=_reshape_generate)


# ---- transpose -----------------------------------------------------------------------------
def _bind_transpose(x, axes=None):
    n = np.ndim(x)
    if axes is None:
        return (x,), {"axes": tuple(range(n - 1, -1, -1))}
    axes = (axes,) if np.ndim(axes) == 0 else tuple(int(a) for a in axes)
    if sorted(a % n if n else a for a in axes) != list(range(n)) or any(not -n <= a < n for a in axes):
        raise AxisError(f"transpose: axes {axes} are not a permutation of the {n} axes of an input of shape "
                        f"{np.shape(x)}")
    return (x,), {"axes": tuple(a % n for a in axes)}


def _transpose_batched(g, nb, perm):
    return g.transpose(tuple(range(nb)) + tuple(nb + int(a) for a in perm))


def _transpose_generate(rng):
    shape = random_shape(rng, 0, 4)
    axes = None if rng.random() < 0.25 else tuple(int(a) - (len(shape) if rng.random() < 0.5 else 0)
                                                  for a in rng.permutation(len(shape)))
    return (random_array(rng, shape),), {"axes": axes}


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
                            ((sample(rng, (2, n, 3)),), {"axes": (-1, 0, -2)}),
                            ((sample(rng, (n, 0, 2)),), {}),
                            ((sample(rng, (n,)),), {}),
                            ((sample(rng, ()),), {})],
    generate=_transpose_generate)


# ---- broadcast_to --------------------------------------------------------------------------
def _bind_broadcast_to(x, shape, subok=False):
    shape = (shape,) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    xs = np.shape(x)
    if len(xs) > len(shape) or any(a not in (1, b) for a, b in zip(xs[::-1], shape[::-1])) or min(shape, default=0) < 0:
        raise ShapeError(f"broadcast_to: an input of shape {xs} cannot be broadcast to {shape} "
                         f"(numpy rules: align from the right; each axis equal or 1)")
    return (x,), {"shape": shape}


def _broadcast_to_generate(rng):
    target = random_shape(rng, 0, 4)
    return (random_array(rng, broadcast_partner(rng, target)), target), {}


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
                            ((sample(rng, (n,)),), {"shape": (n,)}),
                            ((sample(rng, (1, n)),), {"shape": (0, n)})],
    generate=_broadcast_to_generate)


# ---- concatenate ---------------------------------------------------------------------------
def _bind_concatenate(arrays, axis=0):
    if type(arrays) is Tracer or isinstance(arrays, np.ndarray):
        arrays = list(arrays)  # numpy concatenates the rows of a single array
    arrays = tuple(arrays)
    if not arrays:
        raise ShapeError("concatenate: needs at least one array")
    shapes = [np.shape(a) for a in arrays]
    n = len(shapes[0])
    if axis is None:
        raise AxisError("concatenate: axis=None (flatten first) is not supported here; concatenate the ravelled "
                        "arrays: jt.concatenate([jt.ravel(a) for a in arrays])")
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
        sel = _factor((np.shape(ans)[axis], sizes[k]), "concatenate: the selection factor")
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


def _concat_generate(rng):
    shape = random_shape(rng, 1, 3)
    axis = random_axis(rng, len(shape), allow_none=False, allow_tuple=False)
    arrays = []
    for _ in range(int(rng.integers(1, 4))):
        s = list(shape)
        s[axis] = int(rng.integers(0, 4))
        arrays.append(random_array(rng, tuple(s)))
    return (arrays,), {"axis": axis}


concatenate = defprimitive(
    "concatenate", lambda *arrays, axis: np.concatenate(arrays, axis=axis), bind=_bind_concatenate,
    numpy=(np.concatenate,),
    formula="dY[..,i,..]/dX_k[..,j,..] = delta(others) delta(i, offset_k + j)",
    doc="numpy concatenate(arrays, axis).",
    jac=PerArg(_concat_jac), vjp=PerArg(_concat_vjp), jvp=PerArg(_concat_jvp),
    battery=lambda rng, n: [(([sample(rng, (n, 2)), sample(rng, (n, 3))],), {"axis": 1}),
                            (([sample(rng, (n,)), sample(rng, (2,)), sample(rng, (1,))],), {}),
                            (([sample(rng, (1, 3)), sample(rng, (n, 3))],), {"axis": 0}),
                            (([sample(rng, (2, 0)), sample(rng, (2, n))],), {"axis": -1})],
    generate=_concat_generate)


# ---- stack ---------------------------------------------------------------------------------
def _bind_stack(arrays, axis=0, out=None):
    if out is not None:
        raise NotDifferentiableError("stack: out= is not supported (jactensor returns new arrays)")
    if type(arrays) is Tracer or isinstance(arrays, np.ndarray):
        arrays = list(arrays)
    arrays = tuple(arrays)
    if not arrays:
        raise ShapeError("stack: needs at least one array")
    shapes = [np.shape(a) for a in arrays]
    for k, s in enumerate(shapes):
        if s != shapes[0]:
            raise ShapeError(f"stack: array {k} has shape {s} but array 0 has shape {shapes[0]}; all arrays must "
                             f"have the same shape")
    n = len(shapes[0]) + 1
    (ax,) = norm_axes("stack", axis, n, allow_none=False)
    return arrays, {"axis": ax}


def _stack_jac(k):
    def rule(ans, *arrays, axis):
        n = np.ndim(ans)
        in_lab = list(range(n - 1))
        out_lab = in_lab[:n + axis] + ["s"] + in_lab[n + axis:]
        e = np.zeros(len(arrays))
        e[k] = 1.0
        return Jacobian.from_labels(np.shape(ans), np.shape(arrays[k]), out_lab + in_lab, [(e, ("s",))])
    return rule


def _stack_vjp(k):
    def rule(g, ans, *arrays, axis):
        return g[(Ellipsis, k) + (slice(None),) * (-axis - 1)]
    return rule


def _stack_jvp(k):
    def rule(t, ans, *arrays, axis):
        batch = np.shape(t)[:np.ndim(t) - np.ndim(arrays[k])]
        parts = [t if j == k else np.zeros(batch + np.shape(a)) for j, a in enumerate(arrays)]
        return stack.bound(*parts, axis=axis)
    return rule


def _stack_generate(rng):
    shape = random_shape(rng, 0, 3)
    k = int(rng.integers(1, 4))
    axis = int(rng.integers(-len(shape) - 1, len(shape) + 1))
    return ([random_array(rng, shape) for _ in range(k)],), {"axis": axis}


stack = defprimitive(
    "stack", lambda *arrays, axis: np.stack(arrays, axis=axis), bind=_bind_stack, numpy=(np.stack,),
    formula="dY[..,s,..]/dX_k[..] = delta(others) [s = k]   (a one-hot factor on the new axis)",
    doc="numpy stack(arrays, axis): arrays of one shape joined along a new axis.",
    jac=PerArg(_stack_jac), vjp=PerArg(_stack_vjp), jvp=PerArg(_stack_jvp),
    battery=lambda rng, n: [(([sample(rng, (n, 2)), sample(rng, (n, 2))],), {"axis": 1}),
                            (([sample(rng, ()), sample(rng, ()), sample(rng, ())],), {}),
                            (([sample(rng, (n,))],), {"axis": -1}),
                            (([sample(rng, (2, 0)), sample(rng, (2, 0))],), {"axis": -2})],
    generate=_stack_generate)


# ---- compositions: joining ------------------------------------------------------------------
def _seq(op, tup):
    if type(tup) is Tracer or isinstance(tup, np.ndarray):
        return list(tup)
    tup = list(tup)
    if not tup:
        raise ShapeError(f"{op}: needs at least one array")
    return tup


@implements(np.hstack)
def hstack(tup):
    """np.hstack: concatenate along axis 1 (axis 0 for 1-d inputs), after atleast_1d. Jacobian: concatenate's,
    dY[..,i,..]/dX_k[..,j,..] = delta(others) delta(i, offset_k + j)."""
    arrs = [atleast_1d(a) for a in _seq("hstack", tup)]
    return concatenate(arrs, axis=0 if np.ndim(arrs[0]) == 1 else 1)


@implements(np.vstack)
def vstack(tup):
    """np.vstack: concatenate along axis 0 after atleast_2d ((n,) becomes (1, n)). Jacobian: concatenate's."""
    return concatenate([atleast_2d(a) for a in _seq("vstack", tup)], axis=0)


@implements(np.dstack)
def dstack(tup):
    """np.dstack: concatenate along axis 2 after atleast_3d ((n,) becomes (1, n, 1), (m, n) becomes (m, n, 1)).
    Jacobian: concatenate's."""
    return concatenate([atleast_3d(a) for a in _seq("dstack", tup)], axis=2)


@implements(np.column_stack)
def column_stack(tup):
    """np.column_stack: 1-d arrays become columns ((n,) -> (n, 1)); concatenate along axis 1. Jacobian:
    concatenate's."""
    cols = []
    for a in _seq("column_stack", tup):
        nd = np.ndim(a)
        cols.append(reshape(a, (-1, 1)) if nd < 2 else a)
    return concatenate(cols, axis=1)


# ---- compositions: splitting (one getitem per piece) ----------------------------------------------
def _pieces(op, ary, indices_or_sections, axis, equal):
    from .indexing import getitem
    nd = np.ndim(ary)
    if nd == 0:
        raise ShapeError(f"{op}: a 0-d array cannot be split")
    ax = _one_axis(op, axis, nd)
    n = np.shape(ary)[ax]
    if np.ndim(indices_or_sections) == 0:
        sections = int(indices_or_sections)
        if sections <= 0:
            raise ShapeError(f"{op}: the number of sections must be larger than 0; got {sections}")
        if equal and n % sections:
            raise ShapeError(f"{op}: an axis of length {n} does not split into {sections} equal sections; use "
                             f"jt.array_split for unequal pieces")
        each, extra = divmod(n, sections)
        sizes = [each + 1] * extra + [each] * (sections - extra)
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        cuts = list(zip(bounds[:-1], bounds[1:]))
    else:
        points = [int(i) for i in np.asarray(indices_or_sections).ravel()]
        edges = [0] + points + [n]
        cuts = list(zip(edges[:-1], edges[1:]))  # as Python slices: negative points count from the end
    return [getitem(ary, (slice(None),) * ax + (slice(a, b),)) for a, b in cuts]


@implements(np.split)
def split(ary, indices_or_sections, axis=0):
    """np.split: a list of pieces along ``axis``: ``sections`` equal pieces or cuts at ``indices`` (Python slice
    semantics: negative cuts count from the end). Each piece is a getitem with a slice: its Jacobian is
    delta(others) [i + start = j] on ``axis``."""
    return _pieces("split", ary, indices_or_sections, axis, equal=True)


@implements(np.array_split)
def array_split(ary, indices_or_sections, axis=0):
    """np.array_split: like split, but n sections of an axis of length l need not be equal (the first
    l % n pieces are one longer)."""
    return _pieces("array_split", ary, indices_or_sections, axis, equal=False)


@implements(np.hsplit)
def hsplit(ary, indices_or_sections):
    """np.hsplit: split along axis 1 (axis 0 for 1-d arrays)."""
    if np.ndim(ary) == 0:
        raise ShapeError("hsplit: works on arrays of 1 or more dimensions")
    return split(ary, indices_or_sections, axis=1 if np.ndim(ary) > 1 else 0)


@implements(np.vsplit)
def vsplit(ary, indices_or_sections):
    """np.vsplit: split along axis 0 (arrays of 2 or more dimensions)."""
    if np.ndim(ary) < 2:
        raise ShapeError(f"vsplit: works on arrays of 2 or more dimensions; got shape {np.shape(ary)}")
    return split(ary, indices_or_sections, axis=0)


@implements(np.dsplit)
def dsplit(ary, indices_or_sections):
    """np.dsplit: split along axis 2 (arrays of 3 or more dimensions)."""
    if np.ndim(ary) < 3:
        raise ShapeError(f"dsplit: works on arrays of 3 or more dimensions; got shape {np.shape(ary)}")
    return split(ary, indices_or_sections, axis=2)


# ---- compositions: reshapes and transposes ----------------------------------------------------
@implements(np.squeeze, methods=("squeeze",))
def squeeze(a, axis=None):
    """np.squeeze: drop length-1 axes (all of them, or those in ``axis``, which must have length 1). A reshape:
    dY[i..]/dX[j..] = delta(i.., j.. without the dropped axes)."""
    shape = np.shape(a)
    if axis is None:
        drop = {k for k, n in enumerate(shape) if n == 1}
    else:
        drop = {len(shape) + k for k in norm_axes("squeeze", axis, len(shape))}
        bad = [k for k in sorted(drop) if shape[k] != 1]
        if bad:
            raise ShapeError(f"squeeze: axis {bad[0]} has length {shape[bad[0]]} (input of shape {shape}); only axes "
                             f"of length 1 can be squeezed")
    return reshape(a, tuple(n for k, n in enumerate(shape) if k not in drop))


@implements(np.expand_dims)
def expand_dims(a, axis):
    """np.expand_dims: insert length-1 axes at the positions ``axis`` of the result. A reshape: deltas between
    the kept axes, the new axes free."""
    shape = np.shape(a)
    nd = len(shape) + (1 if np.ndim(axis) == 0 else len(tuple(axis)))
    new = {nd + k for k in norm_axes("expand_dims", axis, nd)}
    it = iter(shape)
    return reshape(a, tuple(1 if k in new else next(it) for k in range(nd)))


def _memory_order(a, order):
    """numpy's 'A' and 'K' orders depend on the value's memory layout: -> 'C', 'F', or a permutation of the
    axes (for 'K' on a non-contiguous value: axes by decreasing |stride|, as numpy iterates them; a
    broadcast (zero-stride) axis keeps row-major order, as numpy does)."""
    v = np.asarray(getval(a))
    if order == "A" or v.ndim < 2:
        return "F" if v.flags.f_contiguous and not v.flags.c_contiguous else "C"
    if v.flags.c_contiguous:
        return "C"
    if v.flags.f_contiguous:
        return "F"
    if any(s == 0 and n > 1 for s, n in zip(v.strides, v.shape)):
        return "C"
    return tuple(sorted(range(v.ndim), key=lambda k: -abs(v.strides[k])))


@implements(np.ravel, methods=("ravel",))
def ravel(a, order="C"):
    """np.ravel: the entries as a 1-d array, read in ``order``: 'C' row-major, 'F' column-major, 'A' and 'K'
    as numpy reads the value's memory layout. A reshape (after a transpose for 'F' and 'K')."""
    if order not in ("C", "F", "A", "K"):
        raise ValueError(f"ravel: order must be one of 'C', 'F', 'A', 'K'; got {order!r}")
    if order in ("A", "K"):
        order = _memory_order(a, order)
    if order == "F":
        a = transpose(a)
    elif order != "C":
        a = transpose(a, order)
    return reshape(a, (-1,))


@implements(methods=("flatten",))
def _flatten(a, order="C"):
    """ndarray.flatten: a copy of the entries as a 1-d array (see ravel for ``order``)."""
    return ravel(a, order)


@implements(np.swapaxes, methods=("swapaxes",))
def swapaxes(a, axis1, axis2):
    """np.swapaxes: exchange two axes. A transpose: dY[..,i,..,j,..]/dX[..,j',..,i',..] = delta(i,i') delta(j,j')
    (and deltas elsewhere)."""
    nd = np.ndim(a)
    i, j = _one_axis("swapaxes", axis1, nd), _one_axis("swapaxes", axis2, nd)
    perm = list(range(nd))
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(a, tuple(perm))


@implements(np.moveaxis)
def moveaxis(a, source, destination):
    """np.moveaxis: move axes ``source`` to positions ``destination``, others keep their order. A transpose:
    one delta per axis."""
    nd = np.ndim(a)
    src = [source] if np.ndim(source) == 0 else list(source)
    dst = [destination] if np.ndim(destination) == 0 else list(destination)
    if len(src) != len(dst):
        raise AxisError(f"moveaxis: source {source!r} and destination {destination!r} must have the same number "
                        f"of elements")
    src = [_one_axis("moveaxis", s, nd) for s in src]
    dst = [_one_axis("moveaxis", d, nd) for d in dst]
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise AxisError(f"moveaxis: repeated axis in source {source!r} or destination {destination!r}")
    order = [k for k in range(nd) if k not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(a, tuple(order))


def _atleast(op, k, arys):
    out = []
    for a in arys:
        s = np.shape(a)
        if len(s) >= k:
            out.append(a if type(a) is Tracer else reshape(a, s))
        elif k == 3 and len(s) == 2:
            out.append(reshape(a, s + (1,)))
        elif k == 3:
            out.append(reshape(a, (1,) + (s or (1,)) + (1,)))
        else:
            out.append(reshape(a, (1,) * (k - len(s)) + s))
    return out[0] if len(out) == 1 else tuple(out)


@implements(np.atleast_1d)
def atleast_1d(*arys):
    """np.atleast_1d: 0-d inputs become shape (1,); one array in, one out (several: a tuple). A reshape: the
    Jacobian is an identity (the new length-1 axes are free)."""
    return _atleast("atleast_1d", 1, arys)


@implements(np.atleast_2d)
def atleast_2d(*arys):
    """np.atleast_2d: () -> (1, 1), (n,) -> (1, n). A reshape (identity Jacobian)."""
    return _atleast("atleast_2d", 2, arys)


@implements(np.atleast_3d)
def atleast_3d(*arys):
    """np.atleast_3d: () -> (1, 1, 1), (n,) -> (1, n, 1), (m, n) -> (m, n, 1). A reshape (identity Jacobian)."""
    return _atleast("atleast_3d", 3, arys)


# ---- flip ----------------------------------------------------------------------------------
def _bind_flip(m, axis=None):
    return (m,), {"axes": norm_axes("flip", axis, np.ndim(m))}


def _flip_jac(ans, x, axes):
    shape = np.shape(x)
    nd = len(shape)
    out_lab, in_lab, factors = [("d", k) for k in range(nd)], [("d", k) for k in range(nd)], []
    for a in axes:
        k = nd + a
        out_lab[k], in_lab[k] = ("o", k), ("i", k)
        R = _factor((shape[k], shape[k]), "flip: the reversed identity")
        R[np.arange(shape[k]), np.arange(shape[k])[::-1]] = 1.0
        factors.append((R, [("o", k), ("i", k)]))
    return Jacobian.from_labels(shape, shape, out_lab + in_lab, factors)


def _flip_generate(rng):
    shape = random_shape(rng, 0, 4)
    return (random_array(rng, shape),), {"axis": random_axis(rng, len(shape))}


flip = defprimitive(
    "flip", lambda m, axes: np.flip(m, axes), bind=_bind_flip, numpy=(np.flip,),
    formula="dY[..,i,..]/dX[..,j,..] = delta(others) [i + j = n - 1] on each flipped axis (a reversed identity)",
    doc="np.flip(m, axis): reverse the order of the entries along ``axis`` (None: every axis).",
    jac=[_flip_jac],
    vjp=[lambda g, ans, x, axes: flip.bound(g, axes=axes)],
    jvp=[lambda t, ans, x, axes: flip.bound(t, axes=axes)],
    battery=lambda rng, n: [((sample(rng, (n, 3)),), {"axis": 0}),
                            ((sample(rng, (2, n, 3)),), {"axis": (-1, 0)}),
                            ((sample(rng, (n,)),), {}),
                            ((sample(rng, ()),), {}),
                            ((sample(rng, (0, n)),), {"axis": 1})],
    generate=_flip_generate)


@implements(np.fliplr)
def fliplr(m):
    """np.fliplr: flip axis 1 (arrays of 2 or more dimensions). Jacobian: flip's, a reversed identity on axis 1."""
    if np.ndim(m) < 2:
        raise ShapeError(f"fliplr: the input must be at least 2-d; got shape {np.shape(m)}")
    return flip(m, 1)


@implements(np.flipud)
def flipud(m):
    """np.flipud: flip axis 0 (arrays of 1 or more dimensions). Jacobian: flip's, a reversed identity on axis 0."""
    if np.ndim(m) < 1:
        raise ShapeError("flipud: the input must be at least 1-d")
    return flip(m, 0)


@implements(np.rot90)
def rot90(m, k=1, axes=(0, 1)):
    """np.rot90: rotate by 90 degrees k times in the plane of ``axes``, from the first axis towards the
    second; a flip and a transpose (k = 1: flip the second axis, then swap the two). For k = 1 on a matrix,
    dY[i,j]/dX[r,s] = delta(i, n - 1 - s) delta(j, r) with n = X.shape[1]."""
    axes = tuple(axes)
    nd = np.ndim(m)
    if len(axes) != 2:
        raise AxisError(f"rot90: axes must name 2 axes; got {axes!r}")
    if nd < 2:
        raise AxisError(f"rot90: the input must be at least 2-d; got shape {np.shape(m)}")
    p, q = (_one_axis("rot90", a, nd) for a in axes)
    if p == q:
        raise AxisError(f"rot90: the two axes must differ; got {axes!r}")
    k = int(k) % 4
    if k == 0:
        return m if type(m) is Tracer else copy(m)
    if k == 2:
        return flip(m, (p, q))
    perm = list(range(nd))
    perm[p], perm[q] = perm[q], perm[p]
    if k == 1:
        return transpose(flip(m, q), tuple(perm))
    return flip(transpose(m, tuple(perm)), q)


# ---- roll ----------------------------------------------------------------------------------
def _bind_roll(a, shift, axis):
    shape = np.shape(a)
    if axis is None:
        raise AxisError("roll: the primitive rolls along given axes; jt.roll(a, shift) (axis=None) flattens first")
    sh, ax_ = np.asarray(shift), np.asarray(axis)
    if sh.dtype.kind not in "iu" or ax_.dtype.kind not in "iu":
        raise ShapeError(f"roll: shift and axis must be integers (or tuples of them); got shift={shift!r}, "
                         f"axis={axis!r}")
    try:
        pairs = np.broadcast(sh, ax_)
    except ValueError:
        raise ShapeError(f"roll: shift {shift!r} and axis {axis!r} do not broadcast together") from None
    total = {}
    for s, ax in pairs:
        (k,) = norm_axes("roll", int(ax), len(shape), allow_none=False)
        total[k] = total.get(k, 0) + int(s)  # numpy: shifts on a repeated axis add up
    shifts = tuple(sorted((k, s % shape[k]) for k, s in total.items() if shape[k] and s % shape[k]))
    return (a,), {"shifts": shifts}


def _roll_impl(x, shifts):
    if not shifts:
        return np.array(x, dtype=np.float64)
    return np.roll(x, [s for _, s in shifts], axis=[k for k, _ in shifts])


def _roll_jac(ans, x, shifts):
    shape = np.shape(x)
    nd = len(shape)
    out_lab, in_lab, factors = [("d", k) for k in range(nd)], [("d", k) for k in range(nd)], []
    for a, s in shifts:
        k, n = nd + a, shape[nd + a]
        out_lab[k], in_lab[k] = ("o", k), ("i", k)
        C = _factor((n, n), "roll: the cyclic shift")
        C[(np.arange(n) + s) % n, np.arange(n)] = 1.0  # Y[(j + s) mod n] = X[j]
        factors.append((C, [("o", k), ("i", k)]))
    return Jacobian.from_labels(shape, shape, out_lab + in_lab, factors)


def _neg(shifts):
    return tuple((k, -s) for k, s in shifts)


def _roll_generate(rng):
    shape = random_shape(rng, 1, 3)
    nd = len(shape)
    k = int(rng.integers(1, 3))
    axes = [int(rng.integers(-nd, nd)) for _ in range(k)]
    shifts = [int(rng.integers(-7, 8)) for _ in range(k)]
    return (random_array(rng, shape), tuple(shifts) if k > 1 else shifts[0], tuple(axes) if k > 1 else axes[0]), {}


_roll = defprimitive(
    "roll", _roll_impl, bind=_bind_roll,
    formula="dY[..,i,..]/dX[..,j,..] = delta(others) [i = (j + shift) mod n] on each rolled axis (a cyclic shift)",
    doc="np.roll(a, shift, axis) along given axes (a repeated axis adds its shifts); jt.roll also takes axis=None.",
    jac=[_roll_jac],
    vjp=[lambda g, ans, x, shifts: _roll.bound(g, shifts=_neg(shifts))],
    jvp=[lambda t, ans, x, shifts: _roll.bound(t, shifts=shifts)],
    battery=lambda rng, n: [((sample(rng, (n + 2,)), 1, 0), {}),
                            ((sample(rng, (n, 4)), (-1, 5), (1, 0)), {}),
                            ((sample(rng, (2, n, 3)), 2, -1), {}),
                            ((sample(rng, (n, 3)), (1, 1), (1, 1)), {}),
                            ((sample(rng, (0, 3)), 1, 0), {})],
    generate=_roll_generate)


@implements(np.roll)
def roll(a, shift, axis=None):
    """np.roll: entries shifted cyclically by ``shift`` along ``axis`` (None: along the flattened array,
    shape restored). Jacobian: a cyclic shift factor on each rolled axis."""
    if axis is None:
        shape = np.shape(a)
        return reshape(_roll(reshape(a, (-1,)), int(np.sum(shift)), 0), shape)
    return _roll(a, shift, axis)


# ---- tile ----------------------------------------------------------------------------------
def _bind_tile(A, reps):
    reps = (reps,) if np.ndim(reps) == 0 else tuple(reps)
    try:
        reps = tuple(int(r) for r in reps)
    except (TypeError, ValueError):
        raise ShapeError(f"tile: reps must be integers; got {reps!r}") from None
    if any(r < 0 for r in reps):
        raise ShapeError(f"tile: reps must be non-negative; got {reps}")
    d = max(np.ndim(A), len(reps))
    return (A,), {"reps": (1,) * (d - len(reps)) + reps}


def _tile_promoted(x, reps):
    return (1,) * (len(reps) - np.ndim(x)) + np.shape(x)


def _tile_jac(ans, x, reps):
    shape = np.shape(x)
    d, nd = len(reps), len(shape)
    out_lab, in_lab, factors = [], [None] * nd, []
    for k, r in enumerate(reps):
        j = k - (d - nd)
        if j < 0:  # a new leading axis: every output entry along it reads the same input entry
            out_lab.append(("t", k))
            continue
        n = shape[j]
        if r == 1:
            out_lab.append(("d", j))
            in_lab[j] = ("d", j)
            continue
        T = _factor((r * n, n), "tile: the tiling factor")
        if n:
            T[np.arange(r * n), np.arange(r * n) % n] = 1.0
        out_lab.append(("o", k))
        in_lab[j] = ("i", j)
        factors.append((T, [("o", k), ("i", j)]))
    return Jacobian.from_labels(np.shape(ans), shape, out_lab + in_lab, factors)


def _tile_vjp(g, ans, x, reps):
    nb = nbatch(g, ans)
    batch = np.shape(g)[:nb]
    s = _tile_promoted(x, reps)
    split_shape = batch + tuple(v for r, n in zip(reps, s) for v in (r, n))
    summed = g.reshape(split_shape).sum(axis=tuple(nb + 2 * k for k in range(len(reps))))
    return summed.reshape(batch + np.shape(x))


def _tile_jvp(t, ans, x, reps):
    nb = np.ndim(t) - np.ndim(x)
    t = t.reshape(np.shape(t)[:nb] + _tile_promoted(x, reps))
    return tile.bound(t, reps=(1,) * nb + tuple(reps))


def _tile_generate(rng):
    shape = random_shape(rng, 0, 3, max_size=3)
    k = int(rng.integers(0, 4))
    reps = tuple(int(rng.integers(0, 4)) if rng.random() < 0.2 else int(rng.integers(1, 4)) for _ in range(k))
    return (random_array(rng, shape), reps[0] if k == 1 and rng.random() < 0.5 else reps), {}


tile = defprimitive(
    "tile", lambda A, reps: np.tile(A, reps), bind=_bind_tile, numpy=(np.tile,),
    formula="dY[..,i,..]/dX[..,j,..] = delta(others) [i mod n = j] on each tiled axis; axes tile adds in front "
            "are free",
    doc="np.tile(A, reps): A repeated reps[k] times along axis k (reps shorter than A.ndim is padded with ones in "
        "front; A with fewer axes than reps gains leading axes).",
    jac=[_tile_jac], vjp=[_tile_vjp], jvp=[_tile_jvp],
    battery=lambda rng, n: [((sample(rng, (n,)),), {"reps": 3}),
                            ((sample(rng, (n, 2)),), {"reps": (2, 1)}),
                            ((sample(rng, (2,)),), {"reps": (n, 2)}),
                            ((sample(rng, ()),), {"reps": (2, n)}),
                            ((sample(rng, (n, 2)),), {"reps": (0, 2)})],
    generate=_tile_generate)


# ---- repeat --------------------------------------------------------------------------------
def _bind_repeat(a, repeats, axis):
    from .indexing import parse_index
    shape = np.shape(a)
    if axis is None:
        raise AxisError("repeat: the primitive repeats along one axis; jt.repeat(a, repeats) (axis=None) flattens "
                        "first")
    ax = _one_axis("repeat", axis, len(shape))
    n = shape[ax]
    r = np.asarray(repeats)
    if r.dtype.kind not in "iu" or r.ndim > 1:
        raise ShapeError(f"repeat: repeats must be an int or a 1-d array of ints; got {repeats!r}")
    if r.ndim == 1 and r.size not in (1, n):
        raise ShapeError(f"repeat: {r.size} repeats for an axis of length {n}; give one count, or one per entry")
    if np.any(r < 0):
        raise ShapeError(f"repeat: repeats must be non-negative; got {repeats!r}")
    owner = np.repeat(np.arange(n), np.broadcast_to(r, (n,)) if r.ndim else int(r))
    index = parse_index("repeat", (slice(None),) * ax + (owner,), shape)
    return (a,), {"index": index}


def _repeat_generate(rng):
    shape = random_shape(rng, 1, 3)
    axis = random_axis(rng, len(shape), allow_none=False, allow_tuple=False)
    n = shape[axis]
    repeats = int(rng.integers(0, 4)) if rng.random() < 0.5 else rng.integers(0, 4, size=n)
    return (random_array(rng, shape), repeats, axis), {}


def _repeat_jvp(t, ans, x, index):
    from .indexing import getitem
    return getitem.bound(t, idx=index.batched(np.ndim(t) - np.ndim(x)))


def _repeat_vjp(g, ans, x, index):
    from .indexing import scatter_add
    nb = nbatch(g, ans)
    return scatter_add.bound(g, idx=index.batched(nb), shape=np.shape(g)[:nb] + np.shape(x))


def _repeat_jac(ans, x, index):
    from .indexing import gather_jacobian
    return gather_jacobian(index, np.shape(ans), np.shape(x))


_repeat = defprimitive(
    "repeat", lambda a, index: index.gather(a), bind=_bind_repeat,
    formula="dY[..,i,..]/dX[..,j,..] = delta(others) [owner(i) = j]   (a 0/1 factor: output entry i is a copy of "
            "input entry owner(i))",
    doc="np.repeat(a, repeats, axis) along one axis; jt.repeat also takes axis=None (flattened).",
    jac=[_repeat_jac], vjp=[_repeat_vjp], jvp=[_repeat_jvp],
    battery=lambda rng, n: [((sample(rng, (n, 2)), 2, 0), {}),
                            ((sample(rng, (2, n + 1)), np.arange(n + 1) % 3, -1), {}),
                            ((sample(rng, (n,)), 0, 0), {}),
                            ((sample(rng, (2, 0, 2)), 3, 1), {})],
    generate=_repeat_generate)


@implements(np.repeat, methods=("repeat",))
def repeat(a, repeats, axis=None):
    """np.repeat: each entry repeated ``repeats`` times (an int, or one count per entry) along ``axis``
    (None: of the flattened array). Jacobian: a 0/1 factor on that axis."""
    if axis is None:
        return _repeat(reshape(a, (-1,)), repeats, 0)
    return _repeat(a, repeats, axis)


# ---- pad -----------------------------------------------------------------------------------
def _bind_pad(array, pad_width, mode="constant", **kwargs):
    nd = np.ndim(array)
    if mode != "constant":
        raise NotDifferentiableError(
            f"pad: mode={mode!r} is not supported; only mode='constant' (with constant_values). Other modes are "
            f"compositions you can write: e.g. 'edge' along axis 0 is jt.concatenate([x[:1]] * k + [x], axis=0), "
            f"'reflect' uses jt.flip of slices")
    extra = set(kwargs) - {"constant_values"}
    if extra:
        raise TypeError(f"pad: unexpected argument(s) {sorted(extra)} for mode='constant' (only constant_values)")
    values = kwargs.get("constant_values", 0)
    if type(values) is Tracer or (isinstance(values, (list, tuple)) and any(type(v) is Tracer for v in
                                                                           np.ravel(np.asarray(values, object)))):
        raise NotDifferentiableError("pad: constant_values is a traced value; the padding constants are not "
                                     "differentiated. Pad with zeros and add the frame: jt.pad(x, w) + c * "
                                     "(1 - jt.pad(ones_like(x), w))")
    w = np.asarray(pad_width)
    if w.dtype.kind not in "iu" and not (w.dtype.kind == "f" and np.all(w == np.round(w))):
        raise ShapeError(f"pad: pad_width must be integers; got {pad_width!r}")
    try:
        w = np.broadcast_to(w.astype(np.int64), (nd, 2))
        c = np.broadcast_to(np.asarray(values, dtype=np.float64), (nd, 2))
    except ValueError:
        raise ShapeError(f"pad: pad_width {pad_width!r} or constant_values {values!r} do not fit an array with {nd} "
                         f"axes (give one value, a (before, after) pair, or one pair per axis)") from None
    if np.any(w < 0):
        raise ShapeError(f"pad: pad_width must be non-negative; got {pad_width!r}")
    return (array,), {"widths": tuple((int(b), int(a)) for b, a in w),
                      "values": tuple((float(b), float(a)) for b, a in c)}


def _pad_impl(x, widths, values):
    if not widths:
        return np.array(x, dtype=np.float64)
    return np.pad(x, widths, mode="constant", constant_values=values)


def _pad_jac(ans, x, widths, values):
    shape = np.shape(x)
    nd = len(shape)
    out_lab, in_lab, factors = [("d", k) for k in range(nd)], [("d", k) for k in range(nd)], []
    for k, (b, a) in enumerate(widths):
        if b or a:
            n = shape[k]
            P = _factor((n + b + a, n), "pad: the framing factor")
            P[b + np.arange(n), np.arange(n)] = 1.0
            out_lab[k], in_lab[k] = ("o", k), ("i", k)
            factors.append((P, [("o", k), ("i", k)]))
    return Jacobian.from_labels(np.shape(ans), shape, out_lab + in_lab, factors)


def _pad_vjp(g, ans, x, widths, values):
    key = (Ellipsis,) + tuple(slice(b, b + n) for (b, _), n in zip(widths, np.shape(x)))
    return g[key]


def _pad_jvp(t, ans, x, widths, values):
    nb = np.ndim(t) - np.ndim(x)
    return pad_axes(t, ((0, 0),) * nb + tuple(widths))


def pad_axes(t, widths):
    """Zero padding by ``widths`` (one (before, after) pair per axis of t), recorded on traced values."""
    return pad.bound(t, widths=tuple(widths), values=((0.0, 0.0),) * len(widths))


def _pad_generate(rng):
    shape = random_shape(rng, 0, 3)
    nd = len(shape)
    r = rng.random()
    if r < 0.3 or nd == 0:
        width = int(rng.integers(0, 3))
    elif r < 0.5:
        width = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    else:
        width = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(nd))
    kwargs = {} if rng.random() < 0.4 else {"constant_values": float(rng.normal())
                                            if rng.random() < 0.5 else (float(rng.normal()), float(rng.normal()))}
    return (random_array(rng, shape), width), kwargs


pad = defprimitive(
    "pad", _pad_impl, bind=_bind_pad, numpy=(np.pad,),
    formula="dY[..,i,..]/dX[..,j,..] = delta(others) [i = before + j] on each padded axis (the constants have no "
            "derivative)",
    doc="np.pad(array, pad_width, mode='constant', constant_values=0): a frame of constants around the array "
        "(pad_width: one int, a (before, after) pair, or one pair per axis). Other modes are refused.",
    jac=[_pad_jac], vjp=[_pad_vjp], jvp=[_pad_jvp],
    battery=lambda rng, n: [((sample(rng, (n, 3)), 1), {}),
                            ((sample(rng, (n, 3)), ((0, 2), (1, 0))), {"constant_values": 2.5}),
                            ((sample(rng, (n,)), (2, 1)), {"constant_values": (-1.0, 3.0)}),
                            ((sample(rng, ()), 2), {}),
                            ((sample(rng, (0, 2)), 1), {})],
    generate=_pad_generate)


# ---- diff ----------------------------------------------------------------------------------
def _bind_diff(a, n=1, axis=-1, prepend=None, append=None):
    nd = np.ndim(a)
    if nd == 0:
        raise ShapeError("diff: the input must be at least 1-d")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ShapeError(f"diff: the order n must be a non-negative int; got {n!r}")
    ax = _one_axis("diff", axis, nd) - nd
    shape = np.shape(a)
    ends = []
    for name, c in (("prepend", prepend), ("append", append)):
        if c is None or c is np._NoValue:
            ends.append(None)
            continue
        if type(c) is Tracer:
            raise NotDifferentiableError(f"diff: {name} is a traced value; the values framing the difference are "
                                         f"constants here. Concatenate first: jt.diff(jt.concatenate([p, x], axis), "
                                         f"n, axis)")
        c = np.asarray(c, dtype=np.float64)
        if c.ndim == 0:
            c = np.broadcast_to(c, shape[:nd + ax] + (1,) + shape[nd + ax + 1:])
        elif c.ndim != nd or any(c.shape[k] != shape[k] for k in range(nd) if k != nd + ax):
            raise ShapeError(f"diff: {name} has shape {c.shape} but the input has shape {shape}; it must match every "
                             f"axis except axis {axis} (or be a scalar)")
        ends.append(c)
    if n == 0:  # numpy returns the input itself: prepend and append are not used
        ends = [None, None]
    return (a,), {"n": int(n), "axis": ax, "pre": ends[0], "app": ends[1]}


def _diff_impl(x, n, axis, pre, app):
    kw = {}
    if pre is not None:
        kw["prepend"] = pre
    if app is not None:
        kw["append"] = app
    return np.diff(x, n, axis=axis, **kw)


def _ends(pre, app, axis):
    return (0 if pre is None else pre.shape[axis]), (0 if app is None else app.shape[axis])


def _diff_jac(ans, x, n, axis, pre, app):
    shape = np.shape(x)
    nd = len(shape)
    b, e = _ends(pre, app, axis)
    m = shape[axis]
    L = b + m + e
    check_bytes(nbytes((L, L)), "diff: the difference factor", (L, L))
    D = np.diff(np.eye(L), n, axis=0)[:, b:b + m]  # row i: the coefficients (-1)^(n-k) C(n, k) of entries i..i+n
    k = nd + axis
    out_lab, in_lab = [("d", a) for a in range(nd)], [("d", a) for a in range(nd)]
    out_lab[k], in_lab[k] = ("o", k), ("i", k)
    return Jacobian.from_labels(np.shape(ans), shape, out_lab + in_lab, [(D, [("o", k), ("i", k)])])


def _diff_vjp(g, ans, x, n, axis, pre, app):
    nb = nbatch(g, ans)
    b, e = _ends(pre, app, axis)
    m = np.shape(x)[axis]
    if n >= b + m + e:  # nothing is left of the axis: the derivative is zero
        return np.zeros(np.shape(g)[:nb] + np.shape(x))
    h = g
    nd = np.ndim(g)
    for _ in range(n):  # the adjoint of one difference: (D^T h)[i] = h[i - 1] - h[i]
        w_before = [(0, 0)] * nd
        w_after = [(0, 0)] * nd
        w_before[nd + axis] = (1, 0)
        w_after[nd + axis] = (0, 1)
        h = pad_axes(h, w_before) - pad_axes(h, w_after)
    return h[(Ellipsis, slice(b, b + m)) + (slice(None),) * (-axis - 1)]


def _diff_jvp(t, ans, x, n, axis, pre, app):
    b, e = _ends(pre, app, axis)
    if b or e:
        w = [(0, 0)] * np.ndim(t)
        w[np.ndim(t) + axis] = (b, e)
        t = pad_axes(t, w)
    return diff.bound(t, n=n, axis=axis, pre=None, app=None)


def _diff_generate(rng):
    shape = random_shape(rng, 1, 3, max_size=5)
    nd = len(shape)
    axis = int(rng.integers(-nd, nd))
    kw = {"n": int(rng.integers(0, 4)), "axis": axis}
    for name in ("prepend", "append"):
        if rng.random() < 0.25:
            if rng.random() < 0.5:
                kw[name] = float(rng.normal())
            else:
                s = list(shape)
                s[axis] = int(rng.integers(1, 3))
                kw[name] = rng.normal(size=s)
    return (random_array(rng, shape),), kw


diff = defprimitive(
    "diff", _diff_impl, bind=_bind_diff, numpy=(np.diff,),
    formula="dY[..,i,..]/dX[..,j,..] = delta(others) (-1)^(n-k) C(n, k) with k = j + len(prepend) - i in 0..n "
            "(the n-th forward difference along the axis)",
    doc="np.diff(a, n=1, axis=-1, prepend, append): n-th discrete difference along ``axis``; prepend/append "
        "are constants (scalars broadcast to one slice).",
    jac=[_diff_jac], vjp=[_diff_vjp], jvp=[_diff_jvp],
    battery=lambda rng, n: [((sample(rng, (n + 2,)),), {}),
                            ((sample(rng, (n + 3, 2)),), {"n": 2, "axis": 0}),
                            ((sample(rng, (2, n + 1)),), {"prepend": 0.5, "append": sample(rng, (2, 2))}),
                            ((sample(rng, (n,)),), {"n": 0}),
                            ((sample(rng, (2,)),), {"n": 3}),
                            ((sample(rng, (0, 3)),), {"axis": 0})],
    generate=_diff_generate)


# ---- copy and astype -----------------------------------------------------------------------
def _bind_copy(a, order="K", subok=False):
    return (a,), {}


def _identity_generate(rng):
    return (random_array(rng, random_shape(rng, 0, 3)),), {}


copy = defprimitive(
    "copy", lambda a: np.array(a, dtype=np.float64), bind=_bind_copy, numpy=(np.copy,), methods=("copy",),
    formula="dY[i..]/dX[j..] = delta(i..,j..)",
    doc="np.copy(a): a new array with the same values.",
    jac=[lambda ans, x: unary_jacobian(1.0, np.shape(ans))],
    vjp=[lambda g, ans, x: g], jvp=[lambda t, ans, x: t],
    battery=lambda rng, n: [((sample(rng, s),), {}) for s in [(), (n,), (n, 2), (0, n)]],
    generate=_identity_generate)


def _bind_astype(x, dtype):
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise DTypeError(f"astype: the primitive keeps float targets; got {dt} (jt.astype handles the others)")
    return (x,), {"dtype": dt}


_astype = defprimitive(
    "astype", lambda x, dtype: np.asarray(x).astype(dtype).astype(np.float64), bind=_bind_astype,
    formula="dY[i..]/dX[j..] = delta(i..,j..)   (the rounding to a narrower float has derivative 1, as in JAX)",
    doc="x.astype(float dtype): values rounded to that precision, kept in float64; derivative 1.",
    jac=[lambda ans, x, dtype: unary_jacobian(1.0, np.shape(ans))],
    vjp=[lambda g, ans, x, dtype: g], jvp=[lambda t, ans, x, dtype: t],
    battery=lambda rng, n: [((sample(rng, s),), {"dtype": np.float64}) for s in [(), (n,), (n, 2), (0,)]],
    generate=lambda rng: ((random_array(rng, random_shape(rng, 0, 3)),),
                          {"dtype": [np.float64, "float64", float, np.longdouble][int(rng.integers(0, 4))]}))


@implements(np.astype, methods=("astype",))
def astype(x, dtype, order="K", casting="unsafe", subok=True, copy=True, device=None):
    """x.astype(dtype) / np.astype(x, dtype).

    A float target keeps the derivative (1, as in JAX): the values are rounded to that precision (float16,
    float32) and kept as float64, jactensor's working type. An integer or bool target returns a plain numpy
    array of that dtype computed from the value: a constant, through which no derivative flows (as for any
    integer result). Complex targets are refused.
    """
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return _astype(x, dt)
    if dt.kind in "iub":
        return np.asarray(getval(x)).astype(dt)
    if dt.kind == "c":
        raise DTypeError(f"astype: complex target {dt}; jactensor differentiates real functions. Keep the real "
                         f"part as a float array")
    raise DTypeError(f"astype: cannot convert a float array to {dt}")


# ---- constants shaped like a traced value ----------------------------------------------------
def _like_shape(a, shape):
    return np.shape(a) if shape is None else ((int(shape),) if np.ndim(shape) == 0 else tuple(shape))


def _like_dtype(a, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    return np.asarray(getval(a)).dtype if type(a) is Tracer else np.result_type(np.asarray(a))


@implements(np.zeros_like)
def zeros_like(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """np.zeros_like: a plain array of zeros (a constant) with a's shape."""
    return np.zeros(_like_shape(a, shape), dtype=_like_dtype(a, dtype))


@implements(np.ones_like)
def ones_like(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """np.ones_like: a plain array of ones (a constant) with a's shape."""
    return np.ones(_like_shape(a, shape), dtype=_like_dtype(a, dtype))


@implements(np.empty_like)
def empty_like(prototype, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """np.empty_like: a plain uninitialised array (a constant) with the prototype's shape."""
    return np.empty(_like_shape(prototype, shape), dtype=_like_dtype(prototype, dtype))


@implements(np.full_like)
def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """np.full_like: an array of a's shape filled with ``fill_value``; a constant, unless fill_value is itself
    traced (then it is broadcast to the shape and differentiated)."""
    s = _like_shape(a, shape)
    if type(fill_value) is Tracer:
        if dtype is not None and np.dtype(dtype).kind != "f":
            raise DTypeError(f"full_like: a traced fill_value with dtype={np.dtype(dtype)}; the result would lose "
                             f"its derivative. Use a float dtype, or jt.getval(fill_value)")
        return broadcast_to(fill_value, s) if np.shape(fill_value) != s else copy(fill_value)
    return np.full(s, fill_value, dtype=_like_dtype(a, dtype))


# these handle numpy's layout and dtype arguments themselves (the dispatcher must not strip them)
ravel.numpy_kwargs = ("order",)
for _f in (zeros_like, ones_like, empty_like, full_like):
    _f.numpy_kwargs = ("dtype", "order", "subok")
del _f
