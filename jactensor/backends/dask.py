"""Jacobians larger than memory: the dense tensor as a lazy dask array, built block by block from the factors.

The dense Jacobian of attention at n = 512, d = 64 w.r.t. X is a 32,768 x 32,768 matrix (8 GiB in float64)
while its structured factors take a few MiB. ``to_dask(J)`` returns that tensor (shape ``out_shape + in_shape``)
as a ``dask.array.Array`` whose blocks are computed on demand, each from the slices of the factors that reach it:

    block[I] = sum_t coef_t * einsum(factors of term t, each sliced to the ranges block I gives its labels)

written onto the diagonals the term's deltas select. A delta couples axes that carry the same label (say out
axis i and in axis r: delta(i,r)); a block reaches the term only where the ranges of those axes overlap, so a
block that no term reaches is a structural zero: its task is ``np.zeros(shape)``, with no computation and no
dependency on the factors. The graph has one task per block; each numpy factor enters it once, as a shared
input that block tasks slice, so a block task holds its block, the factors and one contraction's temporaries.

``to_dask(J, matrix=True)`` is the prod(out) x prod(in) matrix (row-major flattening, as ``np.reshape``) for
``dask.array.linalg``; its blocks are built directly (a block whose rows or columns do not follow the tensor's
axes is assembled from the few rectangular tensor boxes its flattened ranges cover). ``to_zarr`` writes the
tensor chunk by chunk to a zarr store, atomically.

Factors may be dask arrays themselves (``Jacobian.from_dense(dask_array, out_ndim)``): they stay lazy, chain()
contracts them through opt_einsum's dask backend, and a block task depends on the slice of such a factor it
needs. Memory accounting: a lazy result is not allocated, but the guard (``config.max_jacobian_bytes``) counts
every dask factor and contraction at its full float64 size, as if computed: chain() refuses a contraction whose
intermediate or result would exceed the limit if materialised, ``np.asarray(J)`` / ``J.dense()`` compute the whole
tensor and are refused above the limit, and ``to_dask`` / ``to_zarr`` are refused only when one block (or one
block's contraction) would exceed it, because they never hold more than a few blocks per worker thread.

Everything runs on dask's default local scheduler with no set-up, and unchanged on a ``dask.distributed`` cluster
once a ``Client`` is active. Needs the ``dask`` extra (dask, zarr, distributed).
"""
import math
import os
import shutil
import uuid

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import contract as _c
from ..errors import DTypeError, ShapeError
from ..memory import ITEMSIZE, check_bytes, numel
from . import require

__all__ = ["AUTO_BLOCK_BYTES", "as_factor", "auto_chunks", "contract", "describe_graph", "embed", "to_dask",
           "to_zarr"]

AUTO_BLOCK_BYTES = 64 * 2**20  # blocks of chunks="auto": large enough to amortise a task, small enough for RAM


# ---- hooks the engine calls for dask factors (registered in backends/__init__.py) ----------------------------
def as_factor(x):
    """A dask array as a Jacobian factor: float64, still lazy."""
    da = require("dask.array")
    if not isinstance(x, da.Array):
        raise DTypeError(f"a Jacobian factor is a {type(x).__module__}.{type(x).__name__}; only dask arrays are "
                         f"supported among dask collections: convert it with .to_dask_array() or np.asarray")
    if any(isinstance(n, float) and math.isnan(n) for n in x.shape):
        raise ShapeError(f"a dask array factor has unknown chunk sizes (shape {x.shape}); call "
                         f"x.compute_chunk_sizes() first")
    if x.dtype.kind not in "fiub":
        raise DTypeError(f"a dask array factor has dtype {x.dtype} (shape {x.shape}), which cannot be "
                         f"differentiated; pass a float array (ints and bools are cast to float64)")
    return x if x.dtype == np.float64 else x.astype(np.float64)


def contract(expr, operands):
    """A cached opt_einsum expression over operands of which one or more are dask arrays: lazy."""
    return expr(*operands, backend="dask")


def embed(terms, pattern, sizes, what):
    """The dense sum of ``terms`` over ``pattern``'s groups (see jacobian._embed), computed from lazy factors.

    The caller has checked the size against the memory limit; this computes it in memory, block by block."""
    groups = tuple(dict.fromkeys(pattern))
    first = {g: pattern.index(g) for g in groups}
    shape = tuple(sizes[g] for g in groups)
    specs = [(t.coef, t.factors, tuple(t.labels[first[g]] for g in groups), t.sizes) for t in terms]
    x = _build(specs, shape, len(shape), "auto", False, what)
    return np.asarray(x.compute(), dtype=np.float64).reshape(shape)


# ---- public ----------------------------------------------------------------------------------------------
def to_dask(J, chunks="auto", matrix=False):
    """The dense tensor of ``J`` (shape ``out_shape + in_shape``) as a lazy ``dask.array.Array``, or with
    ``matrix=True`` the prod(out) x prod(in) matrix in row-major order (for ``dask.array.linalg``).

    ``chunks``: "auto" (blocks of about ``AUTO_BLOCK_BYTES``, split along leading axes only, so that every
    tensor block is a rectangle of the matrix form and the matrix costs nothing extra); an int; or a tuple per
    axis (of the tensor, or of the matrix with ``matrix=True``) in any form ``dask.array`` accepts.
    Entry ``J[o, i] = sum_t coef_t * einsum(factors_t)[labels at o + i]``, zero off the deltas' diagonals.
    """
    specs = [(t.coef, t.factors, tuple(t.labels), t.sizes) for t in J.terms]
    return _build(specs, J.shape, len(J.out_shape), chunks, matrix, _what(J, "to_dask"))


def to_zarr(J, path, chunks="auto", overwrite=False, **zarr_kwargs):
    """Write the dense tensor of ``J`` (shape ``out_shape + in_shape``) to a zarr store at the local directory
    ``path``, chunk by chunk (chunks as in :func:`to_dask`); returns the path.

    Atomic at the store level: the store is written under a temporary name next to ``path`` and renamed to
    ``path`` only once every chunk is written, so an interrupted or failed write never leaves a store at
    ``path`` (a failed one removes its temporary directory). An existing ``path`` is refused unless
    ``overwrite=True``, which replaces it only after the new store is complete. ``zarr_kwargs`` go to zarr's
    array creation (e.g. ``compressors=None`` for zarr 3). Read it back with ``dask.array.from_zarr(path)``.
    """
    require("zarr")
    da = require("dask.array")
    if not isinstance(path, (str, os.PathLike)) or "://" in os.fspath(path):
        raise ValueError(f"Jacobian.to_zarr: path must be a local directory (str or os.PathLike), got {path!r}; "
                         f"for other stores call dask.array.to_zarr(J.to_dask(), url) (not atomic)")
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"Jacobian.to_zarr: {path} already exists; pass overwrite=True to replace it "
                              f"or choose another path")
    x = to_dask(J, chunks=chunks)  # errors (chunks, memory guard) before anything touches the disk
    parent, base = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = os.path.join(parent, f".{base}.partial-{tag}")
    try:
        _store_all(da.to_zarr(x, tmp, mode="w-", compute=False, **zarr_kwargs))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.lexists(path):  # overwrite=True: move the old store aside, put the new one in place, drop the old
        old = os.path.join(parent, f".{base}.replaced-{tag}")
        os.rename(path, old)
        os.rename(tmp, path)
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)
    else:
        os.rename(tmp, path)
    return path


def _store_all(store):
    """Compute the delayed chunk writes of ``store``. On dask's default threaded scheduler the writes run on a
    pool of our own that is drained before this returns or raises: dask raises the first failure while other
    threads may still be writing chunks, and a chunk written after the clean-up would bring the partial store
    back. Under another scheduler (a distributed ``Client``) its own compute runs as configured."""
    import dask
    import dask.threaded
    from concurrent.futures import ThreadPoolExecutor
    if dask.base.get_scheduler(collections=[store]) is not dask.threaded.get:
        dask.compute(store)
        return
    workers = dask.config.get("num_workers", None) or dask.system.CPU_COUNT
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        dask.compute(store, scheduler="threads", pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def auto_chunks(out_shape, in_shape, block_bytes=None):
    """The "auto" blocking: per-axis chunk sizes (for the tensor) whose blocks are contiguous row ranges and
    column ranges of the matrix form, about ``block_bytes`` each, as square in the matrix as the shapes allow.

    Each side (out, in) is split along one axis k: axes before k in chunks of 1, axis k in chunks of a, axes
    after k whole. Sides grow by doubling, the smaller matrix side first, while a block fits."""
    from ..config import config
    if block_bytes is None:
        block_bytes = max(ITEMSIZE, min(AUTO_BLOCK_BYTES, config.max_jacobian_bytes // 4))
    target = max(1, block_bytes // ITEMSIZE)
    sides = [tuple(out_shape), tuple(in_shape)]
    state = [(len(s) - 1, 1) if s else None for s in sides]

    def count(s, st):
        return 1 if st is None else st[1] * numel(s[st[0] + 1:])

    def grow(s, st):
        if st is None:
            return None
        k, a = st
        if a < s[k]:
            return k, min(2 * a, s[k])
        return (k - 1, min(2, s[k - 1])) if k > 0 else None

    while True:
        options = []
        for i in (0, 1):
            nxt = grow(sides[i], state[i])
            if nxt is not None and count(sides[i], nxt) * count(sides[1 - i], state[1 - i]) <= target:
                options.append((count(sides[i], state[i]), i, nxt))
        if not options:
            break
        _, i, nxt = min(options)
        state[i] = nxt
    out = []
    for s, st in zip(sides, state):
        if st is not None:
            k, a = st
            out += [1] * k + [a] + list(s[k + 1:])
    return tuple(max(c, 1) for c in out)


# ---- building the graph --------------------------------------------------------------------------------------
def _what(J, op):
    return f"Jacobian.{op} of {J.name or 'a Jacobian'} (out {J.out_shape}, in {J.in_shape})"


class _Term:
    """One term prepared for slicing: where each label sits among the target axes, and its factor groups.

    Factors joined by a summed label (one no axis carries) form a group that one einsum contracts to the axis
    labels it carries; the groups then meet in a broadcast product (an outer product along the axes), which
    is written straight into the block: the einsum never forms anything of the block's size with summed
    labels still in it."""

    def __init__(self, coef, factors, axis_labels, sizes):
        self.coef, self.factors, self.axis_labels = float(coef), list(factors), axis_labels
        self.distinct = tuple(dict.fromkeys(axis_labels))
        self.axes_of = {l: tuple(k for k, m in enumerate(axis_labels) if m == l) for l in self.distinct}
        self.present = {l for _, ls in self.factors for l in ls}
        self.sizes = sizes
        self.whole = len(self.distinct) == len(axis_labels)  # no delta: the term fills every block it reaches
        kept = set(self.distinct)
        parent = list(range(len(self.factors)))

        def find(i):
            while parent[i] != i:
                i = parent[i]
            return i
        owner = {}
        for i, (_, ls) in enumerate(self.factors):
            for l in ls:
                if l not in kept:
                    if l in owner:
                        parent[find(i)] = find(owner[l])
                    else:
                        owner[l] = i
        members = {}
        for i in range(len(self.factors)):
            members.setdefault(find(i), []).append(i)
        self.groups = []  # (factor indices, labels kept in the term's order, new axes for the labels missing)
        for idx in members.values():
            carried = {l for i in idx for l in self.factors[i][1]}
            keep = tuple(l for l in self.distinct if l in carried)
            self.groups.append((tuple(idx), keep, tuple(k for k, l in enumerate(self.distinct) if l not in carried)))


class _Piece:
    """One term restricted to one box: factor slices, the einsum, and the strided view it is added through."""

    __slots__ = ("coef", "args", "shapes", "in_labels", "groups", "rshape", "offset", "vshape", "vstrides",
                 "whole")


class _Part:
    """One rectangular tensor box of a block: its shape, its place in the block (None: it is the block)."""

    __slots__ = ("shape", "dest", "pieces")

    def __init__(self, shape, dest, pieces):
        self.shape, self.dest, self.pieces = shape, dest, pieces


class _BlockPlan:
    """What one block task computes (an opaque object to dask: never scanned for keys)."""

    __slots__ = ("shape", "parts")

    def __init__(self, shape, parts):
        self.shape, self.parts = shape, parts

    def __repr__(self):
        return f"<jactensor block {self.shape}: {sum(len(p.pieces) for p in self.parts)} term slice(s)>"


def _piece(term, box, arg_of):
    """``term`` restricted to ``box`` ((start, stop) per target axis); None where it does not reach the box."""
    rng = {}
    for l in term.distinct:
        lo = max(box[k][0] for k in term.axes_of[l])
        hi = min(box[k][1] for k in term.axes_of[l])
        if hi <= lo:
            return None  # the delta's axes do not overlap in this box: a structural zero of this term
        rng[l] = (lo, hi)
    shape = [b - a for a, b in box]
    es = [numel(shape[k + 1:]) for k in range(len(shape))]  # element strides of the C-contiguous box
    p = _Piece()
    p.coef = term.coef
    slices = [tuple(slice(*rng[l]) if l in rng else slice(None) for l in ls) for _, ls in term.factors]
    p.args = [arg_of(f, slc) for (f, _), slc in zip(term.factors, slices)]
    p.shapes = [_sliced_shape(f.shape, slc) for (f, _), slc in zip(term.factors, slices)]
    p.in_labels = [tuple(ls) for _, ls in term.factors]
    p.groups = term.groups
    p.vshape = tuple(rng[l][1] - rng[l][0] for l in term.distinct)
    p.vstrides = tuple(sum(es[k] for k in term.axes_of[l]) for l in term.distinct)
    p.offset = sum((rng[l][0] - box[k][0]) * es[k] for l in term.distinct for k in term.axes_of[l])
    p.rshape = tuple(n if l in term.present else 1 for l, n in zip(term.distinct, p.vshape))
    p.whole = term.whole
    return p


def _boxes(shape, lo, hi):
    """The flattened row-major range [lo, hi) of ``shape`` as at most 2 * ndim rectangular boxes:
    [(offset from lo, ((start, stop) per axis))]."""
    if lo >= hi:
        return []
    if not shape:
        return [(0, ())]
    s = numel(shape[1:])
    if s == 0:
        return []
    i0, r0 = divmod(lo, s)
    i1, r1 = divmod(hi, s)
    if i0 == i1 or (i1 == i0 + 1 and r1 == 0):  # inside one row of axis 0
        return [(off, ((i0, i0 + 1),) + b) for off, b in _boxes(shape[1:], r0, r1 if i0 == i1 else s)]
    out = []
    if r0:
        out += [(off, ((i0, i0 + 1),) + b) for off, b in _boxes(shape[1:], r0, s)]
        i0 += 1
    if i1 > i0:
        out.append(((i0 * s) - lo, ((i0, i1),) + tuple((0, n) for n in shape[1:])))
    if r1:
        out += [(i1 * s - lo + off, ((i1, i1 + 1),) + b) for off, b in _boxes(shape[1:], 0, r1)]
    return out


def _normalize(da, chunks, shape, what):
    try:
        return da.core.normalize_chunks(chunks, shape, dtype=np.float64,
                                        limit=AUTO_BLOCK_BYTES if not isinstance(chunks, str) else None)
    except (ValueError, TypeError) as e:
        raise ShapeError(f"{what}: chunks={chunks!r} do not fit an array of shape {shape} ({e}); pass "
                         f"\"auto\", an int, or one chunk size (or tuple of sizes) per axis") from None


def _build(specs, shape, n_out, chunks, matrix, what):
    da = require("dask.array")
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    shape = tuple(int(s) for s in shape)
    out_shape, in_shape = shape[:n_out], shape[n_out:]
    mshape = (numel(out_shape), numel(in_shape))
    tshape = mshape if matrix else shape
    if isinstance(chunks, str) and chunks == "auto":
        tchunks = _normalize(da, auto_chunks(out_shape, in_shape), shape, what)
        nchunks = (_side_rows(tchunks[:n_out], out_shape), _side_rows(tchunks[n_out:], in_shape)) if matrix \
            else tchunks
    else:
        nchunks = _normalize(da, chunks, tshape, what)
    if numel(shape) == 0:
        return da.zeros(tshape, chunks=nchunks, dtype=np.float64)
    terms = [_Term(*s) for s in specs]

    name = "jacobian-" + tokenize(shape, n_out, matrix, nchunks,
                                  [(t.coef, t.axis_labels, [(f, ls) for f, ls in t.factors]) for t in terms])
    shared_key = ("jacobian-factors-" + name[len("jacobian-"):], 0)
    layer, shared, shared_at, lazy_deps = {}, [], {}, []

    def arg_of(f, slices):
        """(key or None, index, slices to apply in the task) for a factor. numpy factors go into one shared
        input (so each block task has a single dependency, and a distributed scheduler treats block tasks as
        roots and queues them instead of computing them all ahead); a dask factor is sliced lazily, one chunk."""
        if isinstance(f, np.ndarray) or np.isscalar(f):
            if id(f) not in shared_at:
                shared_at[id(f)] = len(shared)
                shared.append(np.asarray(f, dtype=np.float64))
            return None, shared_at[id(f)], slices
        sub = f[slices]
        sub = sub.rechunk(sub.shape) if sub.npartitions > 1 else sub
        lazy_deps.append(sub)
        return _first_key(sub.__dask_keys__()), None, None

    limit_hint = ("Pass smaller chunks to to_dask / to_zarr (e.g. chunks=\"auto\"), or raise the limit with "
                  "jt.config.override(max_jacobian_bytes=...).")
    checked = set()

    def parts_of(block_ranges):
        """The tensor boxes that make one block (one, unless a matrix block cuts across tensor axes)."""
        if not matrix:
            return [(None, tuple(block_ranges))]
        (r0, r1), (c0, c1) = block_ranges
        rows, cols = _boxes(out_shape, r0, r1), _boxes(in_shape, c0, c1)
        if len(rows) == 1 and len(cols) == 1:
            return [(None, rows[0][1] + cols[0][1])]
        out = []
        for ro, rb in rows:
            for co, cb in cols:
                nr, nc = numel([b - a for a, b in rb]), numel([b - a for a, b in cb])
                out.append(((slice(ro, ro + nr), slice(co, co + nc)), rb + cb))
        return out

    starts = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in nchunks]
    for idx in np.ndindex(*[len(c) for c in nchunks]):
        ranges = [(int(starts[a][i]), int(starts[a][i + 1])) for a, i in enumerate(idx)]
        bshape = tuple(b - a for a, b in ranges)
        key = (name,) + idx
        if bshape not in checked:
            check_bytes(numel(bshape) * ITEMSIZE, f"{what}: one block", bshape, limit_hint)
            checked.add(bshape)
        parts, args = [], _TaskArgs(shared_key, arg_of)
        for dest, box in parts_of(ranges):
            pieces = [p for p in (_piece(t, box, args) for t in terms) if p is not None]
            for p in pieces:
                _check_piece(p, what, limit_hint)
            if pieces:
                parts.append(_Part(tuple(b - a for a, b in box), dest, pieces))
        if parts:
            layer[key] = (_block, _BlockPlan(bshape, parts)) + args.inputs()
        else:  # no term reaches this block: a structural zero, with no dependency on the factors
            layer[key] = (np.zeros, bshape)
    if shared:
        layer[shared_key] = _Shared(shared)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=lazy_deps)
    return da.Array(graph, name, nchunks, dtype=np.float64, meta=np.empty((0,) * len(tshape), dtype=np.float64))


class _TaskArgs:
    """The inputs of one block task: the shared numpy factors (slot 0, None when unused) and the slices of
    dask factors; called on a factor, returns where the task finds it and the slices still to apply."""

    def __init__(self, shared_key, arg_of):
        self.keys, self.pos, self.arg_of, self.uses_shared = [shared_key], {}, arg_of, False

    def __call__(self, f, slices):
        k, i, slc = self.arg_of(f, slices)
        if k is None:
            self.uses_shared = True
            return (0, i), slc
        if k not in self.pos:
            self.pos[k] = len(self.keys)
            self.keys.append(k)
        return (self.pos[k], None), slc

    def inputs(self):
        return (self.keys[0] if self.uses_shared else None,) + tuple(self.keys[1:])


def _first_key(keys):
    while isinstance(keys, list):
        keys = keys[0]
    return keys


def _side_rows(chunks, side_shape):
    """Matrix row (or column) chunk sizes of one side blocked by auto_chunks: prefix axes come in 1s."""
    if not side_shape:
        return (1,)
    k = next((i for i, c in enumerate(chunks) if c != tuple([1] * len(c))), len(chunks) - 1)
    inner = numel(side_shape[k + 1:])
    return tuple(c * inner for _ in range(numel(side_shape[:k])) for c in chunks[k])


def _check_piece(p, what, hint):
    """The memory guard for one block's contractions (each group's largest intermediate), from shapes only."""
    for idx, keep, _ in p.groups:
        if len(idx) > 1 or set(p.in_labels[idx[0]]) - set(keep):
            cost = _c.plan([p.shapes[i] for i in idx], [p.in_labels[i] for i in idx], keep)
            check_bytes(cost.largest * ITEMSIZE, f"{what}: the contraction of one block (largest intermediate)",
                        (cost.largest,), hint)


def _sliced_shape(shape, slc):
    return tuple(len(range(*s.indices(n))) for s, n in zip(slc, shape))


# ---- the block task ----------------------------------------------------------------------------------------
class _Shared:
    """The numpy factors of a Jacobian, one input of the graph shared by every block task."""

    __slots__ = ("arrays",)

    def __init__(self, arrays):
        self.arrays = tuple(arrays)

    def __sizeof__(self):  # what dask reports and counts for this input
        return sum(a.nbytes for a in self.arrays) + 64


def _block(plan, *inputs):
    """Compute one block of the dense tensor (or of the matrix form): ``inputs`` are the shared factors (or
    None) and the slices of any dask factors."""
    parts = plan.parts
    if len(parts) == 1 and parts[0].dest is None:
        return _box(parts[0], inputs).reshape(plan.shape)
    out = np.zeros(plan.shape)
    for part in parts:
        out[part.dest] = _box(part, inputs).reshape(out[part.dest].shape)
    return out


def _operands(p, inputs):
    """The term's group values on this box, each laid out on the term's labels (new axes where it lacks one),
    the coefficient folded into the smallest."""
    ops = []
    for (k, i), slc in p.args:
        a = inputs[k].arrays[i] if i is not None else inputs[k]
        ops.append(a if slc is None else a[slc])
    vals = []
    for idx, keep, new in p.groups:
        v = _c.contract([ops[i] for i in idx], [p.in_labels[i] for i in idx], keep)
        vals.append(np.expand_dims(np.ascontiguousarray(v), new))
    if vals and p.coef != 1.0:
        j = min(range(len(vals)), key=lambda k: vals[k].size)
        vals[j] = vals[j] * p.coef
    return vals


def _product(vals, out):
    """The broadcast product of ``vals`` written into ``out``: the smaller values are multiplied first (their
    product is still small), so only one pass runs over the block."""
    vals = sorted(vals, key=np.size)
    acc = vals[0]
    for v in vals[1:-1]:
        acc = acc * v
    return np.multiply(acc, vals[-1], out=out)


def _box(part, inputs):
    """One tensor box: the sum of its term pieces, each added through the strided view its deltas select.

    A piece is a broadcast product of its group values, formed straight into the box (the first piece that
    fills it) or into one reused buffer, then added."""
    B = buf = None
    for p in part.pieces:
        vals = _operands(p, inputs)
        full = p.rshape == p.vshape
        if B is None and p.whole and full:  # the first piece fills the box: write it in place, no zeros pass
            B = np.empty(part.shape)
            if len(vals) >= 2:
                _product(vals, B)
            else:
                B[...] = vals[0] if vals else p.coef
            continue
        if B is None:
            B = np.zeros(part.shape)
        view = as_strided(B.reshape(-1)[p.offset:], shape=p.vshape,
                          strides=tuple(s * ITEMSIZE for s in p.vstrides), writeable=True)
        if not vals:
            view += p.coef
        elif len(vals) >= 2 and full:
            if buf is None or buf.shape != p.vshape:
                buf = np.empty(p.vshape)
            view += _product(vals, buf)
        else:
            res = vals[0]
            for v in vals[1:]:
                res = res * v
            view += res
    return B if B is not None else np.zeros(part.shape)


def describe_graph(x):
    """{blocks, zero_blocks, factor_inputs, factor_arrays, factor_bytes} of an array made by to_dask: how many
    block tasks, how many of them structural zeros, and the shared factor inputs they read."""
    layer = dict(x.__dask_graph__().layers[x.name])
    blocks = [v for k, v in layer.items() if k[0] == x.name]
    shared = [v for k, v in layer.items() if k[0] != x.name]
    arrays = [a for v in shared for a in getattr(v, "arrays", ())]
    return {"blocks": len(blocks), "zero_blocks": sum(isinstance(v, tuple) and v[0] is np.zeros for v in blocks),
            "factor_inputs": len(shared), "factor_arrays": len(arrays),
            "factor_bytes": sum(a.nbytes for a in arrays)}
