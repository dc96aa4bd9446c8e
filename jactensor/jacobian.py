"""The Jacobian type: full-tensor in meaning (shape out.shape + in.shape), factored inside.

A Jacobian is a sum of terms (``term.py``). Each term is ``coef * einsum(factors)``
with one label per axis of ``out + in``; the same label at several axes is a delta
(identity coupling), so ``dA[i,j]/dQ[r,s] = delta(i,r) K[s,j]`` is the single factor K
with labels (s, j) and axis labels (i, j, i, s). Nothing of the size
``prod(out + in)`` is allocated until ``dense()`` / ``np.asarray(J)`` asks, and every
allocation is checked against ``config.max_jacobian_bytes`` first.

The structure-preserving algebra (``J.T``, ``diagonal``, ``trace``, ``batch_diagonal``,
``nnz``, ``to_sparse``) lives in ``algebra.py``; composing Jacobians in ``chain.py``.
"""
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import backends as _backends
from .backends import as_factor
from .config import config
from .errors import ShapeError
from .memory import ITEMSIZE, check_bytes, fmt_bytes, nbytes, numel
from .plan import contract_term
from .term import Term, normalise_factor

__all__ = ["Jacobian"]


class Jacobian:
    """A Jacobian of shape ``out_shape + in_shape``, kept as a sum of factored terms.

    ``np.asarray(J)`` / ``J.dense()`` materialise the tensor; ``J.as_matrix()`` gives
    the prod(out) x prod(in) matrix (out and in axes each flattened in row-major, C,
    order); ``J.nbytes`` is known before anything is built, ``J.stored_bytes`` is what
    the factors hold.
    """

    __array_priority__ = 100

    def __init__(self, out_shape, in_shape, terms, name=None):
        self.out_shape, self.in_shape = tuple(out_shape), tuple(in_shape)
        self.terms = list(terms)
        self.name = name
        self.plan = None  # set by chain(): the ChainPlan that produced this Jacobian

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_labels(cls, out_shape, in_shape, labels, factors=(), coef=1.0, name=None):
        """Build from axis labels (any hashables, e.g. the characters of "ijis").

        ``labels`` has one entry per axis of out + in; equal labels are deltas.
        ``factors`` is a list of (array, labels); length-1 axes broadcast.
        """
        out_shape, in_shape = tuple(out_shape), tuple(in_shape)
        labels = tuple(labels)
        shape = out_shape + in_shape
        if len(labels) != len(shape):
            raise ShapeError(f"{name or 'Jacobian'}: {len(labels)} labels for shape {shape}")
        sizes = {}
        for n, l in zip(shape, labels):
            if sizes.setdefault(l, n) != n:
                raise ShapeError(f"{name or 'Jacobian'}: label {l!r} on axes of lengths {sizes[l]} and {n}")
        fs = [normalise_factor(a, ls, sizes) for a, ls in factors]
        term = Term(float(coef), fs, labels, sizes).canonical()
        return cls(out_shape, in_shape, [term], name=name)

    @classmethod
    def from_dense(cls, array, out_ndim, name=None):
        """Wrap a dense tensor whose first ``out_ndim`` axes are the output."""
        a = as_factor(array)
        if not 0 <= out_ndim <= a.ndim:
            raise ShapeError(f"Jacobian.from_dense: out_ndim={out_ndim} for an array of shape {a.shape}")
        lab = tuple(range(a.ndim))
        return cls.from_labels(a.shape[:out_ndim], a.shape[out_ndim:], lab, [(a, lab)], name=name)

    @classmethod
    def identity(cls, shape, name="identity"):
        shape = tuple(shape)
        lab = tuple(range(len(shape)))
        return cls.from_labels(shape, shape, lab + lab, name=name)

    @classmethod
    def zeros(cls, out_shape, in_shape, name=None):
        return cls(out_shape, in_shape, [], name=name)

    # ---- shape --------------------------------------------------------------------
    @property
    def shape(self):
        return self.out_shape + self.in_shape

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return numel(self.shape)

    @property
    def nbytes(self):
        """Bytes the dense tensor would take (float64), known without building it."""
        return nbytes(self.shape)

    @property
    def dtype(self):
        return np.dtype(np.float64)

    @property
    def stored_bytes(self):
        """Bytes the factored form actually holds."""
        return sum(t.stored_bytes for t in self.terms)

    def __repr__(self):
        return (f"Jacobian(out_shape={self.out_shape}, in_shape={self.in_shape}, terms={len(self.terms)}, "
                f"stored={fmt_bytes(self.stored_bytes)}, dense={fmt_bytes(self.nbytes)})")

    def _what(self):
        return f"the Jacobian of {self.name or 'this step'} (out {self.out_shape}, in {self.in_shape})"

    # ---- arithmetic -----------------------------------------------------------------
    def _check_same(self, other, op):
        if not isinstance(other, Jacobian) or other.out_shape != self.out_shape or other.in_shape != self.in_shape:
            got = getattr(other, "out_shape", type(other).__name__), getattr(other, "in_shape", None)
            raise ShapeError(f"Jacobian {op}: out/in shapes {self.out_shape}/{self.in_shape} against "
                             f"{got[0]}/{got[1]}; both operands must be Jacobians of the same out and in shapes")

    def __add__(self, other):
        if not isinstance(other, Jacobian):
            return NotImplemented
        self._check_same(other, "+")
        J = Jacobian(self.out_shape, self.in_shape, self.terms + other.terms, name=self.name)
        return J.reduced() if len(J.terms) > config.max_terms else J

    def scaled(self, c):
        return Jacobian(self.out_shape, self.in_shape, [t.scaled(c) for t in self.terms], name=self.name)

    def __neg__(self):
        return self.scaled(-1.0)

    def __pos__(self):
        return self

    def __sub__(self, other):
        if not isinstance(other, Jacobian):
            return NotImplemented
        return self + (-other)

    def __mul__(self, c):
        if isinstance(c, (bool, np.bool_)) or not np.isscalar(c) or isinstance(c, (str, bytes)):
            return NotImplemented
        c = float(c)
        return self.scaled(c)

    __rmul__ = __mul__

    def __truediv__(self, c):
        if not np.isscalar(c) or isinstance(c, (str, bytes, bool)):
            return NotImplemented
        return self.scaled(1.0 / float(c))

    # ---- contraction ------------------------------------------------------------------
    def compact(self):
        """Contract each term to a single factor; terms with the same delta pattern and the same labelled
        factor axes are summed into one; if more than config.max_terms remain, the cheapest pairs are merged
        into a shared pattern while the merged factor stays small (never over the memory limit)."""
        terms = _group_sum([contract_term(t, self._what())[0].canonical() for t in self.terms])
        if len(terms) > config.max_terms:
            terms = _merge_small(terms, self.ndim, self.shape, self._what())
        J = Jacobian(self.out_shape, self.in_shape, terms, name=self.name)
        J.plan = self.plan
        return J

    def reduced(self):
        """Fewer, cheaper terms without growing anything: a lazy product whose contracted factor is no bigger
        than the factors it holds is contracted; terms of one delta pattern and labelled axes are summed; if
        more than config.max_terms remain, the lazy products that grow least are contracted one by one (and
        the cheapest pairs merged) until they fit or nothing small is left. Unlike compact(), a product whose
        contraction would blow up (X(n,i) D(n,j) M(j,l) over (i,j,n,l)) stays factored."""
        what = self._what()
        lazy, flat = [], []
        for t in self.terms:
            g = _growth(t)
            if len(t.factors) > 1 and g > 2.0:
                lazy.append((g, t))
            else:
                flat.append(contract_term(t, what)[0].canonical())
        lazy.sort(key=lambda x: x[0])
        terms = _group_sum(flat)
        while len(terms) + len(lazy) > config.max_terms and lazy:
            _, t = lazy.pop(0)
            terms = _group_sum(terms + [contract_term(t, what)[0].canonical()])
        if len(terms) + len(lazy) > config.max_terms:
            terms = _merge_small(terms, self.ndim, self.shape, what)
        J = Jacobian(self.out_shape, self.in_shape, terms + [t for _, t in lazy], name=self.name)
        J.plan = self.plan
        return J

    def merged(self):
        """One term holding the whole sum: every term written into the finest delta pattern they share.

        The shared pattern can be much larger than the terms (a diagonal plus a rank-one term merge into
        a dense square), so its size is checked against the memory limit first; ``compact()`` is the
        route that keeps the terms apart."""
        if len(self.terms) <= 1:
            return self.compact() if self.terms else self
        term = _merge_terms(self.terms, self.ndim, self.shape, self._what())
        return Jacobian(self.out_shape, self.in_shape, [term], name=self.name)

    def densified(self):
        """The same Jacobian as a single dense factor (the naive materialise-everything route)."""
        return Jacobian.from_dense(self.dense(), len(self.out_shape), name=self.name)

    def dense(self):
        """The full tensor of shape out_shape + in_shape (checked against the memory limit first)."""
        return self._dense(consume=False)

    def _dense(self, consume):
        """``consume=True``: the caller discards this Jacobian afterwards, so a factor the engine made for it
        (``Term.owned``) that already is the whole tensor is returned as it is instead of copied."""
        check_bytes(self.nbytes, self._what(), self.shape)
        pattern = tuple(range(self.ndim))
        return _embed(self.terms, pattern, dict(zip(pattern, self.shape)), self._what(), consume)

    def __array__(self, dtype=None, copy=None):
        a = self.dense()
        return a if dtype is None else a.astype(dtype)

    def as_matrix(self):
        """The prod(out) x prod(in) matrix (e.g. the 9 x 9 of a 3 x 3 softmax); out and in axes are each
        flattened in row-major (C) order, as ``np.reshape`` does."""
        return self.dense().reshape(numel(self.out_shape), numel(self.in_shape))

    def vjp(self, g):
        """Contract a cotangent (shape out_shape) with J: ``sum_out g[out] J[out, in]``, shape in_shape;
        no dense J is built."""
        return self._contract_with(g, self.out_shape, 0, "vjp", "cotangent")

    def jvp(self, t):
        """Contract J with a tangent (shape in_shape): ``sum_in J[out, in] t[in]``, shape out_shape;
        no dense J is built."""
        return self._contract_with(t, self.in_shape, len(self.out_shape), "jvp", "tangent")

    def _contract_with(self, v, shape, start, op, what):
        v = np.asarray(v, dtype=np.float64)
        if v.shape != shape:
            raise ShapeError(f"Jacobian.{op}: a {what} of shape {v.shape} for a Jacobian with out {self.out_shape} "
                             f"and in {self.in_shape}; the {what} must have shape {shape}")
        keep_pos = range(len(self.out_shape), self.ndim) if op == "vjp" else range(len(self.out_shape))
        res_shape = tuple(self.shape[p] for p in keep_pos)
        res = Jacobian(res_shape, (), [], name=self.name)
        for t in self.terms:
            vl = t.labels[start:start + len(shape)]
            sizes = dict(t.sizes)
            fac = normalise_factor(v, vl, sizes)
            res.terms.append(Term(t.coef, list(t.factors) + [fac], [t.labels[p] for p in keep_pos], sizes))
        return res.dense().reshape(res_shape) if res.terms else np.zeros(res_shape)

    # ---- structure-preserving algebra (algebra.py) -------------------------------------
    @property
    def T(self):
        """The transpose: out and in swapped (shape in_shape + out_shape); ``chain(J.T, J)`` is J^T J."""
        from .algebra import transpose
        return transpose(self)

    def diagonal(self):
        """The diagonal of the matrix form (out_shape == in_shape), shaped out_shape, from the factors."""
        from .algebra import diagonal
        return diagonal(self)

    def trace(self):
        """The trace of the matrix form (out_shape == in_shape), from the factors."""
        from .algebra import trace
        return trace(self)

    def batch_diagonal(self, out_axis=0, in_axis=0, check=True):
        """Per-example blocks ``(B,) + out_rest + in_rest`` of a Jacobian block-diagonal along one out axis
        and one in axis of length B (see algebra.batch_diagonal)."""
        from .algebra import batch_diagonal
        return batch_diagonal(self, out_axis, in_axis, check)

    @property
    def nnz(self):
        """Structural non-zeros of the dense tensor (entries no term can reach are structural zeros)."""
        from .algebra import nnz
        return nnz(self)

    def to_sparse(self):
        """``J.as_matrix()`` as a scipy.sparse CSR array holding exactly the structural non-zeros (the
        ``sparse`` extra), built without the dense form."""
        from .algebra import to_sparse
        return to_sparse(self)

    def structure(self):
        """A one-line description of the structure: terms, deltas, block-diagonal axes, stored bytes."""
        from .algebra import describe
        return describe(self)

    # ---- past memory (backends/dask.py) ---------------------------------------------------
    def to_dask(self, chunks="auto", matrix=False):
        """The dense tensor (or, with matrix=True, the prod(out) x prod(in) matrix) as a lazy dask array
        built block by block from the factors (the ``dask`` extra)."""
        from .backends.dask import to_dask
        return to_dask(self, chunks=chunks, matrix=matrix)

    def as_matrix_dask(self, chunks="auto"):
        """``to_dask(matrix=True)``: the matrix form for dask.array.linalg."""
        return self.to_dask(chunks=chunks, matrix=True)

    def to_zarr(self, path, chunks="auto", overwrite=False, **zarr_kwargs):
        """Write the dense tensor to a zarr store chunk by chunk (atomically: temporary name, then rename);
        ``zarr_kwargs`` (e.g. ``compressors=None``) go to the store."""
        from .backends.dask import to_zarr
        return to_zarr(self, path, chunks=chunks, overwrite=overwrite, **zarr_kwargs)


def _growth(t):
    """How many times bigger a term's contracted factor is than the factors it holds."""
    present = t.present()
    out = numel(t.sizes[l] for l in dict.fromkeys(t.labels) if l in present)
    held = sum(numel(np.shape(a)) for a, _ in t.factors)
    return out / max(held, 1)


def _group_sum(terms):
    """Sum single-factor (canonical) terms that share a delta pattern and labelled factor axes."""
    groups = {}
    for t in terms:
        groups.setdefault((t.labels, frozenset(t.present())), []).append(t)
    return [_sum_same_pattern(ts) for ts in groups.values()]


def _sum_same_pattern(terms):
    """Sum terms of one delta pattern whose factors carry the same labels (so nothing grows)."""
    if len(terms) == 1:
        return terms[0]
    labels, sizes = terms[0].labels, terms[0].sizes
    keep = tuple(l for l in dict.fromkeys(labels) if l in terms[0].present())
    if not keep:  # scalar terms: fold any 0-d factor into the coefficient
        if any(_backends.lazy_backend(a) is not None for t in terms for a, _ in t.factors):  # lazy: a 0-d factor
            acc = sum(t.coef * math.prod(a.reshape(()) for a, _ in t.factors) for t in terms)
            return Term(1.0, [(as_factor(acc), ())], labels, sizes)
        return Term(float(sum(t.coef * float(np.prod([np.asarray(a).reshape(()) for a, _ in t.factors]))
                              for t in terms)), [], labels, sizes)
    if any(type(a) is not np.ndarray for t in terms for a, _ in t.factors):  # lazy (jt.jit) values stay lazy
        acc = sum(t.coef * _arrange(t, keep) for t in terms)
        return Term(1.0, [(as_factor(acc), keep)], labels, sizes)
    def scaled(t):
        a = _arrange(t, keep)
        return a if t.coef == 1.0 else a * t.coef
    # (two terms or more here) the first two summed in one pass into a C-ordered array of the result's size,
    # the rest added in place: no chain of temporaries
    acc = np.add(scaled(terms[0]), scaled(terms[1]), dtype=np.float64, order="C")
    full = tuple(sizes[l] for l in keep)
    if acc.shape != full:
        acc = np.broadcast_to(acc, full).copy()
    for t in terms[2:]:
        acc += scaled(t)
    return Term(1.0, [(acc, keep)], labels, sizes, True)


def _arrange(term, keep):
    """The compact term's factor transposed to ``keep`` order with new axes where absent (ones if none)."""
    if not term.factors:
        return np.ones([1] * len(keep))
    (a, ls), = term.factors
    a = np.transpose(a, [ls.index(l) for l in keep if l in ls])
    return a.reshape([term.sizes[l] if l in ls else 1 for l in keep])


def _shared_pattern(terms, n):
    keys = [tuple(t.labels[p] for t in terms) for p in range(n)]
    ids = {}
    return tuple(ids.setdefault(k, len(ids)) for k in keys)


def _merge_terms(terms, n, shape, what):
    pattern = _shared_pattern(terms, n)
    sizes = {pattern[p]: s for p, s in enumerate(shape)}
    groups = tuple(dict.fromkeys(pattern))
    check_bytes(nbytes([sizes[g] for g in groups]), f"{what} (merging {len(terms)} terms into one)",
                [sizes[g] for g in groups])
    target = _embed(terms, pattern, sizes, what)
    return Term(1.0, [(target, groups)], pattern, sizes)


def _merge_small(terms, n, shape, what):
    """Greedily merge the pair of terms whose shared pattern is smallest, while it stays within a few
    times the bytes the pair already holds; stop when no pair qualifies."""
    terms = list(terms)
    while len(terms) > config.max_terms:
        best = None
        for i in range(len(terms)):
            for j in range(i + 1, len(terms)):
                pattern = _shared_pattern([terms[i], terms[j]], n)
                groups = dict.fromkeys(pattern)
                size = numel([shape[pattern.index(g)] for g in groups]) * ITEMSIZE
                held = max(terms[i].stored_bytes + terms[j].stored_bytes, 8 * ITEMSIZE)
                if size <= 4 * held and (best is None or size < best[0]):
                    best = (size, i, j)
        if best is None:
            break
        _, i, j = best
        merged = _merge_terms([terms[i], terms[j]], n, shape, what)
        terms = [t for k, t in enumerate(terms) if k not in (i, j)] + [merged]
    return terms


def _embed(terms, pattern, sizes, what, consume=False):
    """Write the sum of terms into a zeros array over ``pattern``'s groups through diagonal views."""
    lazy = _backends.embed(terms, pattern, sizes, what)  # lazy factors: their backend materialises
    if lazy is not None:
        return lazy
    groups = tuple(dict.fromkeys(pattern))
    if len(terms) == 1:  # one term without deltas, its factor over every axis: no zeros, no second copy
        t0 = terms[0]
        t = contract_term(t0, what)[0]
        if len(t.factors) == 1 and len(set(t.labels)) == len(t.labels) == len(t.factors[0][1]) and \
                len(set(pattern)) == len(pattern):
            a, ls = t.factors[0]
            # made by the contraction (not a factor held), or made for a Jacobian being discarded
            fresh = all(a is not f for f, _ in t0.factors) or (consume and t0.owned and type(a) is np.ndarray)
            view = np.transpose(np.asarray(a), [ls.index(l) for l in t.labels])
            if t.coef != 1.0:
                if fresh and view.ndim:
                    view *= t.coef
                    return view
                return np.asarray(view * t.coef)  # (a 0-d product is a numpy scalar: keep an array)
            return view if fresh else np.array(view, order="C")
    target = np.zeros([sizes[g] for g in groups])
    strides = dict(zip(groups, target.strides))
    for t in terms:
        t = contract_term(t, what)[0]
        distinct = t.distinct()
        # each target group lies inside one term label: stride along a term label is the
        # sum of the strides of the groups it spans (that is the delta)
        spans = {l: set() for l in distinct}
        for p, l in enumerate(t.labels):
            spans[l].add(pattern[p])
        view = as_strided(target, shape=[t.sizes[l] for l in distinct],
                          strides=[sum(strides[g] for g in spans[l]) for l in distinct], writeable=True)
        view += t.coef * _arrange(t, distinct)
    return target
