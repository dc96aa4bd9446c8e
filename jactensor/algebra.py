"""Structure-preserving algebra on Jacobians: transpose, diagonal, trace, per-example blocks, structural
non-zeros and sparse export -- each computed from the factors, at the cost of its result.

The trick throughout is the one ``chain()`` uses: identifying two axes of a term (the out axis p with the in
axis q) is a union of their labels; a delta between them then costs nothing, and a factor that carries both
is read along its diagonal. So the diagonal of a Hessian ``X^T diag(d) X`` is ``einsum('ij,i,ij->j')``,
never the n x n matrix.
"""
import itertools

import numpy as np

from .errors import ShapeError
from .memory import ITEMSIZE, check_bytes, fmt_bytes, nbytes, numel
from .plan import contract_term
from .term import Term

__all__ = ["transpose", "diagonal", "trace", "batch_diagonal", "nnz", "to_sparse", "describe",
           "block_diagonal_axes"]


def _jac():
    from .jacobian import Jacobian
    return Jacobian


# ---- label surgery ---------------------------------------------------------------------------
class _Union:
    def __init__(self):
        self.parent = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _identify(term, pairs, keep_positions):
    """The term with the axes of each (p, q) in ``pairs`` identified, laid out on ``keep_positions``.

    Labels summed away (in no factor and not kept) multiply the coefficient by their length."""
    uf = _Union()
    live = set(term.labels).union(*(set(ls) for _, ls in term.factors))  # sizes may hold stale labels
    for l in live:
        uf.find(l)
    for p, q in pairs:
        uf.union(term.labels[p], term.labels[q])
    labels = tuple(uf.find(term.labels[p]) for p in keep_positions)
    factors = [(a, tuple(uf.find(l) for l in ls)) for a, ls in term.factors]
    sizes = {}
    for l in live:
        sizes[uf.find(l)] = term.sizes[l]
    used = set(labels).union(*(set(ls) for _, ls in factors))
    coef = term.coef
    for l, s in sizes.items():
        if l not in used:
            coef *= s
    return Term(coef, factors, labels, {l: s for l, s in sizes.items() if l in used}).canonical()


def _square(J, op):
    if J.out_shape != J.in_shape:
        raise ShapeError(f"Jacobian.{op}: needs out_shape == in_shape (a square matrix form); got out {J.out_shape} "
                         f"and in {J.in_shape}")


# ---- transpose, diagonal, trace ----------------------------------------------------------------
def transpose(J):
    """J.T: dJT[in.., out..] = J[out.., in..]; the same factors, labels swapped (nothing is copied)."""
    n = len(J.out_shape)
    terms = [Term(t.coef, t.factors, t.labels[n:] + t.labels[:n], t.sizes) for t in J.terms]
    name = f"({J.name})^T" if J.name else None
    return _jac()(J.in_shape, J.out_shape, terms, name=name)


def diagonal(J):
    """D[i..] = J[i.., i..] for out_shape == in_shape: the diagonal of the matrix form, shaped out_shape.

    Each term's out axis p is identified with in axis p and contracted to out_shape: a delta costs
    nothing and a factor is read along its diagonal, so the cost is that of the diagonal alone."""
    _square(J, "diagonal")
    n = len(J.out_shape)
    check_bytes(nbytes(J.out_shape), f"{J._what()} (diagonal)", J.out_shape)
    pairs = [(p, n + p) for p in range(n)]
    terms = [_identify(t, pairs, range(n)) for t in J.terms]
    D = _jac()(J.out_shape, (), terms, name=J.name)
    return D.dense() if terms else np.zeros(J.out_shape)


def trace(J):
    """sum_i J[i.., i..] for out_shape == in_shape, contracted from the factors to a scalar."""
    _square(J, "trace")
    n = len(J.out_shape)
    pairs = [(p, n + p) for p in range(n)]
    total = 0.0
    for t in J.terms:
        s = _identify(t, pairs, ())
        s, _ = contract_term(s, f"{J._what()} (trace)")
        total += s.coef * (float(np.asarray(s.factors[0][0]).reshape(())) if s.factors else 1.0)
    return float(total)


# ---- per-example blocks ------------------------------------------------------------------------
def _axis(J, axis, ndim, which):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ShapeError(f"Jacobian.batch_diagonal: {which}_axis={axis!r} is not an axis of the {which} shape "
                         f"{J.out_shape if which == 'out' else J.in_shape}")
    return int(axis) % ndim


def block_diagonal_axes(J):
    """Pairs (out axis, in axis) of equal length along which every term carries a delta (so J is
    block-diagonal along them), e.g. [(0, 0)] for a batched map with the batch axis first."""
    n = len(J.out_shape)
    out = []
    for p in range(n):
        for q in range(len(J.in_shape)):
            if J.out_shape[p] == J.in_shape[q] and J.terms and \
                    all(t.labels[p] == t.labels[n + q] for t in J.terms):
                out.append((p, q))
    return out


def batch_diagonal(J, out_axis=0, in_axis=0, check=True):
    """The per-example Jacobians of a batched map, shape ``(B,) + out_rest + in_rest``:
    ``R[b, o.., i..] = J[o.. with b at out_axis, i.. with b at in_axis]``.

    With ``check=True`` every term must carry a delta between the two axes (block-diagonal along the
    batch); otherwise a ShapeError names the coupling (a mean over the batch or batch normalisation
    couples examples). ``check=False`` returns the diagonal blocks regardless. Costs the size of the
    result, never the B^2 blocks."""
    no, ni = len(J.out_shape), len(J.in_shape)
    p = _axis(J, out_axis, no, "out")
    q = _axis(J, in_axis, ni, "in")
    B = J.out_shape[p]
    if J.in_shape[q] != B:
        raise ShapeError(f"Jacobian.batch_diagonal: out axis {p} has length {B} but in axis {q} has length "
                         f"{J.in_shape[q]}; the batch axes must have the same length")
    if check and B > 1:
        for k, t in enumerate(J.terms):
            if t.labels[p] != t.labels[no + q]:
                carried = [a.shape for a, ls in t.factors if t.labels[p] in ls or t.labels[no + q] in ls]
                how = (f"a factor of shape {carried[0]} links them" if carried else
                       "an entry depends on the whole batch (e.g. a sum or mean over examples)")
                raise ShapeError(
                    f"Jacobian.batch_diagonal: term {k} of {J._what()} couples example b of out axis {p} with "
                    f"example b' != b of in axis {q} ({how}), so the Jacobian is not block-diagonal along the "
                    f"batch (batch normalisation or a mean over the batch do this). Pass check=False to take the "
                    f"diagonal blocks anyway, or use the full Jacobian.")
    out_rest = tuple(s for k, s in enumerate(J.out_shape) if k != p)
    in_rest = tuple(s for k, s in enumerate(J.in_shape) if k != q)
    shape = (B,) + out_rest + in_rest
    check_bytes(nbytes(shape), f"{J._what()} (per-example blocks)", shape)
    keep = [p] + [k for k in range(no) if k != p] + [no + k for k in range(ni) if k != q]
    terms = [_identify(t, [(p, no + q)], keep) for t in J.terms]
    R = _jac()(shape, (), terms, name=J.name)
    return R.dense() if terms else np.zeros(shape)


# ---- structural non-zeros and sparse export -------------------------------------------------------
def _compact_terms(J):
    """Each term contracted to at most one factor (nnz and sparse export read supports from it)."""
    return [contract_term(t, J._what())[0] for t in J.terms]


def _mask_term(t):
    """The term with its factor replaced by the 0/1 mask of its non-zeros (coef 1): its support."""
    return Term(1.0, [((np.asarray(a) != 0).astype(np.float64), ls) for a, ls in t.factors], t.labels, t.sizes)


def _support_count(terms, n):
    """Number of index tuples in the intersection of the supports of ``terms`` (identified per axis)."""
    uf = _Union()
    renamed = []
    for k, t in enumerate(terms):
        renamed.append(Term(1.0, [(a, tuple((k, l) for l in ls)) for a, ls in t.factors],
                            tuple((k, l) for l in t.labels), {(k, l): s for l, s in t.sizes.items()}))
    sizes = {}
    for t in renamed:
        live = set(t.labels).union(*(set(ls) for _, ls in t.factors))
        for l, s in t.sizes.items():
            if l in live:
                uf.find(l)
                sizes[l] = s
    for p in range(n):
        for t in renamed[1:]:
            uf.union(renamed[0].labels[p], t.labels[p])
    merged_sizes = {}
    for l, s in sizes.items():
        merged_sizes[uf.find(l)] = s
    factors = [(a, tuple(uf.find(l) for l in ls)) for t in renamed for a, ls in t.factors]
    used = set().union(*(set(ls) for _, ls in factors)) if factors else set()
    count = 1.0
    for l, s in merged_sizes.items():
        if l not in used:
            count *= s
    if not factors:
        return count
    t = Term(count, factors, (), {l: s for l, s in merged_sizes.items() if l in used}).canonical()
    t, _ = contract_term(t, "structural non-zero count")
    return t.coef * float(np.asarray(t.factors[0][0]).reshape(()))


def nnz(J):
    """Structural non-zeros: the entries of the dense tensor that some term can reach (its delta pattern
    allows them and its contracted factor is non-zero there), counted exactly from the factors by
    inclusion-exclusion over the terms (each intersection is a contraction of 0/1 masks)."""
    terms = [_mask_term(t) for t in _compact_terms(J) if t.coef != 0]  # a zero coefficient reaches nothing
    if not terms:
        return 0
    if len(terms) > 12:
        raise ShapeError(f"Jacobian.nnz: {len(terms)} terms; compact() the Jacobian first")
    n = J.ndim
    total = 0.0
    for r in range(1, len(terms) + 1):
        for subset in itertools.combinations(terms, r):
            total += (-1) ** (r + 1) * _support_count(list(subset), n)
    return int(round(total))


def _term_entries(t, shape, n_out):
    """(row, col, value) of every entry in one compact term's support."""
    distinct = list(dict.fromkeys(t.labels))
    present = t.present()
    if t.factors and np.ndim(t.factors[0][0]):
        (a, ls), = t.factors
        a = np.asarray(a)
        nz = np.nonzero(a)
        coords = {l: nz[ls.index(l)] for l in ls}
        vals = t.coef * a[nz]
    else:  # no factor, or a 0-d one: a coefficient (no entries at all if it is zero)
        c = t.coef * (float(np.asarray(t.factors[0][0])) if t.factors else 1.0)
        coords, vals = {}, np.array([c] if c != 0 else [])
    free = [l for l in distinct if l not in present]
    m = vals.size
    for l in free:  # every value repeats along a label no factor carries
        s = t.sizes[l]
        coords = {k: np.repeat(v, s) for k, v in coords.items()}
        coords[l] = np.tile(np.arange(s), m)
        vals = np.repeat(vals, s)
        m = vals.size
    idx = [coords[l] if l in coords else np.zeros(m, dtype=np.intp) for l in t.labels]
    out_shape, in_shape = shape[:n_out], shape[n_out:]
    rows = np.ravel_multi_index(idx[:n_out], out_shape) if n_out else np.zeros(m, dtype=np.intp)
    cols = np.ravel_multi_index(idx[n_out:], in_shape) if in_shape else np.zeros(m, dtype=np.intp)
    return rows, cols, vals


def to_sparse(J):
    """``J.as_matrix()`` as a scipy.sparse CSR array holding exactly the structural non-zeros (entries where
    terms cancel numerically stay stored, as explicit zeros), built from the factors without the dense
    form. Needs scipy (the ``sparse`` extra)."""
    from .backends import require
    sp = require("scipy.sparse")
    terms = [t for t in _compact_terms(J) if t.coef != 0]  # as nnz: a zero coefficient reaches nothing
    n_out = len(J.out_shape)
    m, n = numel(J.out_shape), numel(J.in_shape)
    entries = sum(numel(np.shape(t.factors[0][0])) * numel(t.sizes[l] for l in dict.fromkeys(t.labels)
                                                            if l not in t.present()) if t.factors else
                  numel(t.sizes[l] for l in dict.fromkeys(t.labels)) for t in terms)
    check_bytes(entries * (ITEMSIZE + 2 * 8), f"{J._what()} (sparse export: {entries:,} stored entries before "
                                              f"summing terms)")
    rows, cols, vals = [], [], []
    for t in terms:
        r, c, v = _term_entries(t, J.shape, n_out)
        rows.append(r)
        cols.append(c)
        vals.append(v)
    if rows:
        rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    else:
        rows = cols = np.zeros(0, dtype=np.intp)
        vals = np.zeros(0)
    M = sp.coo_array((vals, (rows, cols)), shape=(m, n)).tocsr()
    M.sum_duplicates()
    return M


# ---- a description ------------------------------------------------------------------------------
def describe(J):
    """Stored bytes against dense bytes, the number of terms and the block structure found."""
    parts = [f"{len(J.terms)} term(s)", f"stored {fmt_bytes(J.stored_bytes)} of {fmt_bytes(J.nbytes)} dense"]
    if J.nbytes:
        parts[-1] += f" ({J.stored_bytes / J.nbytes:.2%})"
    blocks = block_diagonal_axes(J)
    if blocks and len(blocks) == len(J.out_shape) == len(J.in_shape) and all(p == q for p, q in blocks):
        parts.append("diagonal (elementwise)")
    elif blocks:
        parts.append("block-diagonal along " + ", ".join(
            f"out axis {p} / in axis {q} (B = {J.out_shape[p]})" for p, q in blocks))
    return "; ".join(parts)
