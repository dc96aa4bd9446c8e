"""Products and matrix structure: matmul, einsum, dot, vdot, inner, outer, tensordot, kron, cross,
trace, diag, diagonal, tril, triu.

The products are bilinear: the Jacobian with respect to one operand is the other operand
placed on einsum labels, and an index the operand shares with the output is a delta:
dY[out]/dX_k[in_k] = einsum(other operands) on labels (out, in_k). The structural ops only
select entries, so their Jacobians are 0/1 selections with deltas on the axes they keep.

Batched rules as one operation: a VJP or JVP rule receives many cotangents or tangents at
once (leading batch axes). The matrix-product rules fold those batch axes into a row or
column dimension of one operand (a reshape), so a batch of m matrix-vector products runs as
one matrix-matrix product (``_fold_left`` / ``_fold_right``).
"""
import math

import numpy as np

from .. import contract as _c
from ..core import PerArg, broadcast_jacobian, defprimitive
from ..errors import AxisError, ShapeError
from ..jacobian import Jacobian
from ..memory import check_bytes, nbytes
from ._util import (broadcast_partner, expand_to, nbatch, norm_axes, random_array, random_shape, sample,
                    unbroadcast)

__all__ = ["matmul", "einsum", "dot", "vdot", "inner", "outer", "tensordot", "kron", "cross", "trace", "diag",
           "diagonal", "tril", "triu"]


def _bsize(a, b):
    """The length two broadcast axes agree on (1 stretches to anything, including 0)."""
    return b if a == 1 else a


def _label_sizes(in_labels, operands):
    sizes = {}
    for ls, x in zip(in_labels, operands):
        for l, n in zip(ls, np.shape(x)):
            sizes[l] = _bsize(sizes[l], n) if l in sizes else n
    return sizes


def _einsum_jacobian(out_shape, in_labels, out_labels, operands, k, coef=1.0):
    """Jacobian of einsum(in_labels -> out_labels) w.r.t. operand k, as a structured Jacobian."""
    sizes = _label_sizes(in_labels, operands)
    x = operands[k]
    # an axis that operand k broadcasts (length 1 against a longer label) is free, not a delta
    in_lab = tuple(l if n == sizes[l] else ("bcast", a) for a, (l, n) in enumerate(zip(in_labels[k], np.shape(x))))
    factors = [(_arr(operands[j]), in_labels[j]) for j in range(len(operands)) if j != k]
    return Jacobian.from_labels(out_shape, np.shape(x), tuple(out_labels) + in_lab, factors, coef=coef)


def _arr(x):
    """A Python scalar operand (a constant) as a 0-d array, so einsum-based rules can take it."""
    return np.asarray(x, dtype=np.float64) if isinstance(x, (int, float)) else x


def _prod(shape):
    return math.prod(int(s) for s in shape)


# ---- batched matrix products as one operation -----------------------------------------------------
def _fold_left(T, B, nb):
    """``T @ B`` where T carries ``nb`` leading batch axes that B lacks (T: batch + Tb + (p, n), B: Bb + (n, k)).

    The batch axes join T's row axis, so the product is one GEMM when B is a matrix and one
    batched matmul over B's own batch axes otherwise (never one small product per batch entry).
    """
    if nb == 0:
        return T @ B
    ts = T.shape
    batch, rest = ts[:nb], ts[nb:]
    k = B.shape[-1]
    if B.ndim == 2:
        return (T.reshape((_prod(ts[:-1]), ts[-1])) @ B).reshape(ts[:-1] + (k,))
    nr = len(rest)
    perm = tuple(range(nb, nb + nr - 2)) + tuple(range(nb)) + (nb + nr - 2, nb + nr - 1)
    Tm = T.transpose(perm).reshape(rest[:-2] + (_prod(batch) * rest[-2], rest[-1]))
    R = Tm @ B
    bc = R.shape[:-2]
    R = R.reshape(bc + batch + (rest[-2], k))
    nc = len(bc)
    return R.transpose(tuple(range(nc, nc + nb)) + tuple(range(nc)) + (nc + nb, nc + nb + 1))


def _matmul(A, T):
    return A @ T


def _fold_right(A, T, nb, apply=_matmul):
    """``A @ T`` where T carries ``nb`` leading batch axes that A lacks (A: Ab + (p, n), T: batch + Tb + (n, k)).

    The batch axes join T's column axis: one GEMM when A is a matrix, one batched matmul over
    the operands' own batch axes otherwise. ``apply`` replaces the product by another map that acts
    on each column alike (``solve(A, T)``).
    """
    if nb == 0:
        return apply(A, T)
    ts = T.shape
    batch, rest = ts[:nb], ts[nb:]
    nr = len(rest)
    perm = tuple(range(nb, nb + nr - 1)) + tuple(range(nb)) + (nb + nr - 1,)
    Tm = T.transpose(perm).reshape(rest[:-2] + (rest[-2], _prod(batch) * rest[-1]))
    R = apply(A, Tm)
    bc, p = R.shape[:-2], R.shape[-2]
    R = R.reshape(bc + (p,) + batch + (rest[-1],))
    nc = len(bc)
    return R.transpose(tuple(range(nc + 1, nc + 1 + nb)) + tuple(range(nc)) + (nc, nc + 1 + nb))


# ---- matmul ------------------------------------------------------------------------------
def _bind_matmul(a, b):
    try:
        sa, sb = a.shape, b.shape
    except AttributeError:
        sa, sb = np.shape(a), np.shape(b)
    na, nb = len(sa), len(sb)
    if na and nb and sa[-1] == sb[-2 if nb > 1 else 0] and (na <= 2 or nb <= 2):
        return (a, b), {}  # the common case, checked cheaply
    if na == 0 or nb == 0:
        raise ShapeError(f"matmul: operands must be at least 1-d; got shapes {sa} and {sb} (use multiply for scalars)")
    ka, kb = sa[-1], sb[-2] if nb > 1 else sb[0]
    if ka != kb:
        raise ShapeError(f"matmul: a has shape {sa} and b has shape {sb}: the contracted dimensions "
                         f"(a's last, {ka}; b's {'second-to-last' if nb > 1 else 'only'}, {kb}) differ. "
                         f"Did you mean a @ b.T?")
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise ShapeError(f"matmul: batch dimensions {sa[:-2]} and {sb[:-2]} of shapes {sa} and {sb} "
                         f"do not broadcast") from None
    return (a, b), {}


def _matmul_labels(sa, sb):
    """einsum labels for numpy matmul incl. 1-d operands and broadcast batch axes."""
    batch = max(len(sa), len(sb)) - 2
    bl = [("b", k) for k in range(max(batch, 0))]
    la = (bl[len(bl) - (len(sa) - 2):] if len(sa) > 2 else []) + ([("i",)] if len(sa) > 1 else []) + [("k",)]
    lb = (bl[len(bl) - (len(sb) - 2):] if len(sb) > 2 else []) + [("k",)] + ([("j",)] if len(sb) > 1 else [])
    lo = bl + ([("i",)] if len(sa) > 1 else []) + ([("j",)] if len(sb) > 1 else [])
    return [la, lb], lo


def _matmul_jac(k):
    def rule(ans, a, b):
        ins, out = _matmul_labels(np.shape(a), np.shape(b))
        return _einsum_jacobian(np.shape(ans), ins, out, (a, b), k)
    return rule


def _row(x):
    """A 1-d left operand as a (1, n) matrix; matrices unchanged."""
    return x if x.ndim >= 2 else x.reshape((1, x.shape[0]))


def _col(x):
    """A 1-d right operand as an (n, 1) matrix; matrices unchanged."""
    return x if x.ndim >= 2 else x.reshape((x.shape[0], 1))


def _ans2(ans_shape, a, b):
    """The output shape with the length-1 axes a 1-d operand would have as a matrix."""
    nd = len(ans_shape) - (a.ndim >= 2) - (b.ndim >= 2)
    return tuple(ans_shape[:nd]) + (ans_shape[nd] if a.ndim >= 2 else 1,) + (ans_shape[-1] if b.ndim >= 2 else 1,)


def _matmul_vjp_a(g, ans, a, b):
    if a.ndim == 2 and b.ndim == 2 and g.ndim == 2:   # the common case: plain matrices
        return g @ b.swapaxes(-1, -2)
    nb = nbatch(g, ans)
    batch = g.shape[:nb]
    g2 = g.reshape(batch + _ans2(ans.shape, a, b))
    bt = b.swapaxes(-1, -2) if b.ndim >= 2 else b.reshape((1, b.shape[0]))
    ga = unbroadcast(_fold_left(g2, bt, nb), _row(a).shape, nb)  # batch + (p|1, n), summed over broadcast axes
    return ga if a.ndim >= 2 else ga.reshape(batch + a.shape)


def _matmul_vjp_b(g, ans, a, b):
    if a.ndim == 2 and b.ndim == 2 and g.ndim == 2:
        return a.swapaxes(-1, -2) @ g
    nb = nbatch(g, ans)
    batch = g.shape[:nb]
    g2 = g.reshape(batch + _ans2(ans.shape, a, b))
    at = a.swapaxes(-1, -2) if a.ndim >= 2 else a.reshape((a.shape[0], 1))
    gb = unbroadcast(_fold_right(at, g2, nb), _col(b).shape, nb)  # batch + (n, k|1)
    return gb if b.ndim >= 2 else gb.reshape(batch + b.shape)


def _matmul_jvp_a(t, ans, a, b):
    nb = t.ndim - a.ndim
    batch = t.shape[:nb]
    t2 = t if a.ndim >= 2 else t.reshape(batch + (1, a.shape[0]))
    r = _fold_left(t2, _col(b), nb)
    return r if r.shape == batch + ans.shape else r.reshape(batch + ans.shape)


def _matmul_jvp_b(t, ans, a, b):
    nb = t.ndim - b.ndim
    batch = t.shape[:nb]
    t2 = t if b.ndim >= 2 else t.reshape(batch + (b.shape[0], 1))
    r = _fold_right(_row(a), t2, nb)
    return r if r.shape == batch + ans.shape else r.reshape(batch + ans.shape)


def _gen_matmul(rng):
    n, p, k = (int(rng.integers(0 if rng.random() < 0.1 else 1, 5)) for _ in range(3))
    batch = random_shape(rng, 0, 2, 3)
    sa = [(n,), (p, n), batch + (p, n)][int(rng.integers(3))]
    sb = [(n,), (n, k), broadcast_partner(rng, batch) + (n, k)][int(rng.integers(3))]
    return (random_array(rng, sa), random_array(rng, sb)), {}


matmul = defprimitive(
    "matmul", np.matmul, bind=_bind_matmul, numpy=("matmul",),
    formula="dY[..,i,j]/dA[..,r,s] = delta(i,r) B[..,s,j];  dY[..,i,j]/dB[..,r,s] = A[..,i,r] delta(s,j)",
    doc="a @ b with numpy semantics: 1-d operands, batch axes, broadcasting. The VJP and JVP rules fold "
        "a batch of cotangents or tangents into one matrix product.",
    jac=[_matmul_jac(0), _matmul_jac(1)],
    vjp=[_matmul_vjp_a, _matmul_vjp_b],
    jvp=[_matmul_jvp_a, _matmul_jvp_b],
    battery=lambda rng, n: [((sample(rng, s), sample(rng, r)), {}) for s, r in [
        ((n,), (n,)), ((n,), (n, 2)), ((3, n), (n,)), ((3, n), (n, 2)),
        ((2, 3, n), (n, 2)), ((2, 1, 3, n), (4, n, 2)), ((n,), (2, n, 3)), ((2, 3, n), (n,)),
        ((3, 0), (0, 2)), ((0, 3, n), (n, 2))]],
    generate=_gen_matmul)


# ---- einsum --------------------------------------------------------------------------------
def _parse_einsum(spec, shapes):
    """'ij,jk->ik' (ellipsis, implicit output) -> integer labels per operand and output."""
    if not isinstance(spec, str):
        raise ShapeError(f"einsum: the first argument must be a subscripts string like 'ij,jk->ik'; got {spec!r}")
    s = spec.replace(" ", "")
    if s.count("->") > 1 or ("-" in s.replace("->", "")) or (">" in s.replace("->", "")):
        raise ShapeError(f"einsum: malformed subscripts {spec!r}: use one '->' between inputs and output")
    lhs, arrow, rhs = s.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ShapeError(f"einsum: subscripts {spec!r} name {len(terms)} operand(s) but {len(shapes)} were given")
    for t in terms + ([rhs] if arrow else []):
        bad = [c for c in t.replace("...", "") if not c.isalpha()]
        if bad or t.replace("...", "").count(".") or t.count("...") > 1:
            raise ShapeError(f"einsum: malformed subscripts {spec!r}: only letters and one '...' per operand")
    ell = max([len(shp) - len(t.replace("...", "")) for t, shp in zip(terms, shapes) if "..." in t] + [0])
    ell_labels = [("...", k) for k in range(ell)]
    in_labels, sizes = [], {}
    for k, (t, shp) in enumerate(zip(terms, shapes)):
        head, dots, tail = t.partition("...")
        n_ell = len(shp) - len(head) - len(tail) if dots else 0
        if n_ell < 0 or (not dots and len(t) != len(shp)):
            raise ShapeError(f"einsum: operand {k} has shape {shp} ({len(shp)} axes) but its subscripts "
                             f"{t!r} name {len(head) + len(tail)}")
        ls = list(head) + ell_labels[ell - n_ell:] + list(tail)
        for l, n in zip(ls, shp):
            if l in sizes and n != sizes[l] and 1 not in (n, sizes[l]):
                raise ShapeError(f"einsum: index {l if isinstance(l, str) else '...'!r} has length {sizes[l]} "
                                 f"in one operand and {n} in operand {k} ({spec!r})")
            sizes[l] = _bsize(sizes[l], n) if l in sizes else n
        in_labels.append(ls)
    if arrow:
        head, dots, tail = rhs.partition("...")
        out = list(head) + (ell_labels if dots else []) + list(tail)
        letters = {l for ls in in_labels for l in ls}
        for l in out:
            if l not in letters:
                raise ShapeError(f"einsum: output index {l!r} of {spec!r} does not appear in any input")
        if len(set(out)) != len(out):
            raise ShapeError(f"einsum: output subscripts of {spec!r} repeat an index")
    else:
        counts = {}
        for ls in in_labels:
            for l in ls:
                counts[l] = counts.get(l, 0) + 1
        out = ell_labels + sorted(l for l, c in counts.items() if c == 1 and isinstance(l, str))
    ids = {}
    num = lambda l: ids.setdefault(l, len(ids))  # noqa: E731
    return tuple(tuple(num(l) for l in ls) for ls in in_labels), tuple(num(l) for l in out)


def _bind_einsum(spec, *operands, optimize=True):
    # ``optimize`` is accepted for numpy compatibility; the order is always opt_einsum's choice
    ins, out = _parse_einsum(spec, [np.shape(x) for x in operands])
    return operands, {"ins": ins, "out": out}


def _einsum_impl(*operands, ins, out):
    return np.asarray(_c.contract([_arr(x) for x in operands], ins, out))


def _labels_einsum(operands, ins, out):
    """einsum on integer labels (used by the rules, so they stay differentiable)."""
    return einsum.bound(*[_arr(x) for x in operands], ins=tuple(map(tuple, ins)), out=tuple(out))


def _einsum_vjp(k):
    def rule(g, ans, *ops, ins, out):
        nb = nbatch(g, ans)
        fresh = iter(range(1 + max([l for ls in ins for l in ls] + [-1]), 1 << 20))
        batch = tuple(next(fresh) for _ in range(nb))
        sizes = _label_sizes(ins, ops)
        operands = [g] + [x for j, x in enumerate(ops) if j != k]
        labels = [batch + tuple(out)] + [ins[j] for j in range(len(ops)) if j != k]
        res, seen = [], set()
        present = set(out).union(*(set(ins[j]) for j in range(len(ops)) if j != k))
        for l, n in zip(ins[k], np.shape(ops[k])):
            if n != sizes[l]:                 # broadcast axis of operand k: summed, kept as length 1
                f = next(fresh)
                operands.append(np.ones(1))
                labels.append((f,))
                res.append(f)
            elif l in seen:                   # repeated index (a diagonal): a delta factor
                f = next(fresh)
                operands.append(np.eye(n))
                labels.append((l, f))
                res.append(f)
            else:
                if l not in present:          # index only operand k has: the cotangent is constant along it
                    operands.append(np.ones(n))
                    labels.append((l,))
                    present.add(l)
                res.append(l)
                seen.add(l)
        return _labels_einsum(operands, labels, batch + tuple(res))
    return rule


def _einsum_jvp(k):
    def rule(t, ans, *ops, ins, out):
        nb = np.ndim(t) - np.ndim(ops[k])
        fresh = 1 + max([l for ls in ins for l in ls] + [-1])
        batch = tuple(range(fresh, fresh + nb))
        operands = list(ops)
        operands[k] = t
        labels = list(ins)
        labels[k] = batch + tuple(ins[k])
        return _labels_einsum(operands, labels, batch + tuple(out))
    return rule


def _einsum_battery(rng, n):
    specs = [("ij,jk->ik", (3, n), (n, 2)), ("ii->", (n, n)), ("ij->ji", (n, 2)), ("i,i->", (n,), (n,)),
             ("bij,bjk->bik", (2, 3, n), (2, n, 2)), ("...ij,jk->...ik", (2, 3, n), (n, 2)),
             ("ij,ij->ij", (n, 2), (n, 2)), ("ij,jk", (2, n), (n, 3)), ("ii->i", (n, n)),
             ("ij->i", (n, 3)), ("i,j->ij", (n,), (2,)), ("ij,j->ij", (n, 1), (3,)),
             ("...ij,...jk->...ik", (3, 4, 0), (0, 2)), ("ij,jk->ik", (0, n), (n, 2))]
    return [((spec,) + tuple(sample(rng, s) for s in shapes), {}) for spec, *shapes in specs]


_EINSUM_SPECS = [  # (spec, operand shapes as letters -> sizes)
    "ij,jk->ik", "ij,jk", "i,i->", "i,j->ij", "ii->", "ii->i", "ij->ji", "ij->", "bij,bjk->bik", "...ij,jk->...ik",
    "...ij,...jk->...ik", "ij,ij->ij", "ijk,ik->j", "ij,j,k->ik", "i->i"]


def _gen_einsum(rng):
    spec = _EINSUM_SPECS[int(rng.integers(len(_EINSUM_SPECS)))]
    sizes = {c: int(rng.integers(0 if rng.random() < 0.08 else 1, 4)) for c in "ijkb"}
    ell = random_shape(rng, 0, 2, 3)
    lhs = spec.split("->")[0].split(",")
    ops = []
    for term in lhs:
        shape = tuple(sizes[c] for c in term.replace("...", ""))
        if "..." in term:
            shape = (broadcast_partner(rng, ell) if ops else ell) + shape
        ops.append(random_array(rng, shape))
    return (spec,) + tuple(ops), {}


einsum = defprimitive(
    "einsum", _einsum_impl, bind=_bind_einsum, numpy=(np.einsum,),
    formula="dY[out]/dX_k[in_k] = einsum(all operands but X_k) on labels (out, in_k); "
            "an index of X_k that is also in out is a delta",
    doc="einsum(subscripts, *operands): any valid spec (ellipsis, implicit output, repeated indices).",
    jac=PerArg(lambda k: lambda ans, *ops, ins, out: _einsum_jacobian(np.shape(ans), ins, out, ops, k)),
    vjp=PerArg(_einsum_vjp), jvp=PerArg(_einsum_jvp),
    battery=_einsum_battery, generate=_gen_einsum)


# ---- bilinear products on einsum labels: dot, inner, tensordot --------------------------------------
def _defbilinear(name, impl, bind, formula, doc, battery, generate, numpy=(), methods=()):
    """A product ``y = f(a, b)`` that is one einsum of a and b (labels in params ``ins``/``out``): the
    forward runs numpy's own function; the Jacobian, VJP and JVP are einsum's (one contraction each,
    opt_einsum's order, GEMM where the labels allow)."""
    def jac(k):
        return lambda ans, a, b, ins, out, **p: _einsum_jacobian(np.shape(ans), ins, out, (_arr(a), _arr(b)), k)

    def vjp(k):
        return lambda g, ans, a, b, ins, out, **p: _einsum_vjp(k)(g, ans, a, b, ins=ins, out=out)

    def jvp(k):
        return lambda t, ans, a, b, ins, out, **p: _einsum_jvp(k)(t, ans, a, b, ins=ins, out=out)

    return defprimitive(name, impl, bind=bind, formula=formula, doc=doc, jac=[jac(0), jac(1)],
                        vjp=[vjp(0), vjp(1)], jvp=[jvp(0), jvp(1)], battery=battery, generate=generate,
                        numpy=numpy, methods=methods)


def _bind_dot(a, b, out=None):
    _no_out("dot", out)
    sa, sb = np.shape(a), np.shape(b)
    la = tuple(range(len(sa)))
    if not sa or not sb:   # a scalar operand: the product is elementwise
        lb = tuple(range(len(sa), len(sa) + len(sb)))
        return (a, b), {"ins": (la, lb), "out": la + lb}
    kb = 0 if len(sb) == 1 else len(sb) - 2
    if sa[-1] != sb[kb]:
        where = "only axis" if len(sb) == 1 else "second-to-last axis"
        raise ShapeError(f"dot: shapes {sa} and {sb} are not aligned: a's last axis has length {sa[-1]} but b's "
                         f"{where} has length {sb[kb]} (numpy dot contracts these two); transpose an operand, "
                         f"e.g. np.dot(a, b.T)")
    k = len(sa) - 1
    rest = tuple(range(len(sa), len(sa) + len(sb) - 1))
    lb = rest[:kb] + (k,) + rest[kb:]
    return (a, b), {"ins": (la, lb), "out": la[:-1] + rest}


def _no_out(op, out):
    if out is not None:
        raise ShapeError(f"{op}: out= is not supported (jactensor returns new arrays); drop it and use the result")


def _dot_battery(rng, n):
    shapes = [((n,), (n,)), ((3, n), (n,)), ((3, n), (n, 2)), ((n,), (n, 2)), ((2, 3, n), (4, n, 2)),
              ((), (n, 2)), ((2, n), ()), ((0, n), (n, 3))]
    return [((sample(rng, a), sample(rng, b)), {}) for a, b in shapes] + [((sample(rng, (n, 2)), 1.5), {})]


def _gen_dot(rng):
    k = int(rng.integers(1, 4))
    r = rng.random()
    if r < 0.1:
        return (random_array(rng, random_shape(rng, 0, 2)), random_array(rng, ())), {}
    sa = random_shape(rng, 0, 2, 3) + (k,)
    sb = (k,) if r < 0.4 else random_shape(rng, 0, 1, 3) + (k, int(rng.integers(1, 4)))
    return (random_array(rng, sa), random_array(rng, sb)), {}


dot = _defbilinear(
    "dot", lambda a, b, ins, out: np.asarray(np.dot(a, b), dtype=np.float64), _bind_dot,
    formula="dY[i..,j..]/dA[r..,k] = delta(i..,r..) B[j..,k,..];  dY[i..,j..]/dB[..,k,j..] = A[i..,k] delta(j..)  "
            "(numpy dot: a's last axis against b's second-to-last, or only, axis; a scalar operand multiplies)",
    doc="numpy dot(a, b): 1-d x 1-d inner product, 2-d matrix product, N-d sum over a's last and b's "
        "second-to-last axis, a 0-d operand multiplies. Also the method x.dot(b).",
    battery=_dot_battery, generate=_gen_dot, numpy=(np.dot,), methods=("dot",))


def _bind_inner(a, b):
    sa, sb = np.shape(a), np.shape(b)
    la = tuple(range(len(sa)))
    if not sa or not sb:
        lb = tuple(range(len(sa), len(sa) + len(sb)))
        return (a, b), {"ins": (la, lb), "out": la + lb}
    if sa[-1] != sb[-1]:
        raise ShapeError(f"inner: shapes {sa} and {sb} do not match on their last axes ({sa[-1]} vs {sb[-1]}); "
                         f"numpy inner contracts the last axis of both")
    lb = tuple(range(len(sa), len(sa) + len(sb) - 1)) + (la[-1],)
    return (a, b), {"ins": (la, lb), "out": la[:-1] + lb[:-1]}


inner = _defbilinear(
    "inner", lambda a, b, ins, out: np.asarray(np.inner(a, b), dtype=np.float64), _bind_inner,
    formula="dY[i..,j..]/dA[r..,k] = delta(i..,r..) B[j..,k];  dY[i..,j..]/dB[s..,k] = A[i..,k] delta(j..,s..)",
    doc="numpy inner(a, b): sum over the last axes of a and b; out shape a.shape[:-1] + b.shape[:-1]; "
        "a 0-d operand multiplies.",
    battery=lambda rng, n: [((sample(rng, a), sample(rng, b)), {}) for a, b in
                            [((n,), (n,)), ((3, n), (n,)), ((3, n), (2, n)), ((2, 3, n), (4, n)), ((), (n,)),
                             ((0, n), (2, n))]],
    generate=lambda rng: _gen_inner(rng), numpy=(np.inner,))


def _gen_inner(rng):
    k = int(rng.integers(1, 4))
    if rng.random() < 0.1:
        return (random_array(rng, ()), random_array(rng, random_shape(rng, 0, 2))), {}
    return (random_array(rng, random_shape(rng, 0, 2, 3) + (k,)),
            random_array(rng, random_shape(rng, 0, 2, 3) + (k,))), {}


def _tensordot_axes(axes, sa, sb):
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        n = int(axes)
        if n < 0 or n > min(len(sa), len(sb)):
            raise AxisError(f"tensordot: axes={n} but a has {len(sa)} and b has {len(sb)} axes; an integer axes "
                            f"contracts a's last n axes with b's first n, so 0 <= n <= {min(len(sa), len(sb))}")
        return tuple(range(len(sa) - n, len(sa))), tuple(range(n))
    try:
        xa, xb = axes
    except (TypeError, ValueError):
        raise AxisError(f"tensordot: axes must be an int or a pair of sequences (axes of a, axes of b); "
                        f"got {axes!r}") from None
    xa = (xa,) if np.ndim(xa) == 0 else tuple(xa)
    xb = (xb,) if np.ndim(xb) == 0 else tuple(xb)
    if len(xa) != len(xb):
        raise AxisError(f"tensordot: {len(xa)} axes of a ({xa}) but {len(xb)} of b ({xb}); give one axis of b "
                        f"for each axis of a")
    out = []
    for name, xs, s in (("a", xa, sa), ("b", xb, sb)):
        norm = []
        for x in xs:
            if not isinstance(x, (int, np.integer)) or isinstance(x, bool) or not -len(s) <= x < len(s):
                raise AxisError(f"tensordot: axis {x!r} of {name} is out of range for shape {s}")
            norm.append(int(x) % len(s))
        if len(set(norm)) != len(norm):
            raise AxisError(f"tensordot: repeated axis in the axes of {name}: {xs}")
        out.append(tuple(norm))
    return tuple(out)


def _bind_tensordot(a, b, axes=2):
    sa, sb = np.shape(a), np.shape(b)
    xa, xb = _tensordot_axes(axes, sa, sb)
    for i, j in zip(xa, xb):
        if sa[i] != sb[j]:
            raise ShapeError(f"tensordot: axis {i} of a (length {sa[i]}, shape {sa}) is paired with axis {j} of b "
                             f"(length {sb[j]}, shape {sb}); paired axes must have equal lengths")
    la = tuple(range(len(sa)))
    lb = list(range(len(sa), len(sa) + len(sb)))
    for i, j in zip(xa, xb):
        lb[j] = la[i]
    out = tuple(l for i, l in enumerate(la) if i not in xa) + tuple(l for j, l in enumerate(lb) if j not in xb)
    return (a, b), {"ins": (la, tuple(lb)), "out": out, "axes": (xa, xb)}


def _gen_tensordot(rng):
    sa = random_shape(rng, 0, 3, 3)
    n = int(rng.integers(0, len(sa) + 1))
    if rng.random() < 0.5:
        xa = tuple(int(i) for i in rng.permutation(len(sa))[:n])
        xb = tuple(range(n))
        sb = tuple(sa[i] for i in xa) + random_shape(rng, 0, 2, 3)
        perm = rng.permutation(len(sb))
        sb = tuple(sb[p] for p in perm)
        inv = {int(p): q for q, p in enumerate(perm)}
        xb = tuple(inv[j] for j in xb)
        return (random_array(rng, sa), random_array(rng, sb)), {"axes": (xa, xb)}
    sb = sa[len(sa) - n:] + random_shape(rng, 0, 2, 3)
    return (random_array(rng, sa), random_array(rng, sb)), {"axes": n}


tensordot = _defbilinear(
    "tensordot", lambda a, b, ins, out, axes: np.asarray(np.tensordot(a, b, axes), dtype=np.float64),
    _bind_tensordot,
    formula="dY[i..,j..]/dA[r..,k..] = delta(i..,r..) B[k..,j..];  dY[i..,j..]/dB[k..,s..] = A[i..,k..] "
            "delta(j..,s..)   (k..: the paired axes)",
    doc="numpy tensordot(a, b, axes): axes=n pairs a's last n axes with b's first n; axes=(axes_a, axes_b) "
        "pairs them explicitly. Out: a's free axes then b's.",
    battery=lambda rng, n: [((sample(rng, a), sample(rng, b)), kw) for a, b, kw in
                            [((3, n), (n, 2), {"axes": 1}), ((2, 3, n), (3, n, 2), {}),
                             ((n, 2, 3), (3, n), {"axes": ([0, 2], [1, 0])}), ((n,), (2,), {"axes": 0}),
                             ((2, n), (n, 2), {"axes": ([-1], [0])}), ((0, n), (n,), {"axes": 1})]],
    generate=_gen_tensordot, numpy=(np.tensordot,))


# ---- vdot, outer: the operands are flattened ---------------------------------------------------------
def _bind_vdot(a, b):
    sa, sb = np.shape(a), np.shape(b)
    if _prod(sa) != _prod(sb):
        raise ShapeError(f"vdot: a has shape {sa} ({_prod(sa)} elements) and b has shape {sb} ({_prod(sb)} "
                         f"elements); vdot flattens both and needs equally many elements")
    return (a, b), {}


def _vdot_other(x, like):
    """The other operand laid out in this operand's shape (both are read in flat row-major order)."""
    x = _arr(x)
    return x if x.shape == np.shape(like) else x.reshape(np.shape(like))


def _vdot_jac(k):
    def rule(ans, a, b):
        x, y = (a, b) if k == 0 else (b, a)
        lab = tuple(range(np.ndim(x)))
        return Jacobian.from_labels((), np.shape(x), lab, [(_vdot_other(y, x), lab)])
    return rule


def _vdot_vjp(k):
    def rule(g, ans, a, b):
        x, y = (a, b) if k == 0 else (b, a)
        return g.reshape(g.shape + (1,) * np.ndim(x)) * _vdot_other(y, x)
    return rule


def _vdot_jvp(k):
    def rule(t, ans, a, b):
        x, y = (a, b) if k == 0 else (b, a)
        batch = t.shape[:t.ndim - np.ndim(x)]
        n = _prod(np.shape(x))
        yf = _arr(y).reshape((n,))
        return (t.reshape((_prod(batch), n)) @ yf).reshape(batch)   # one matrix-vector product for the batch
    return rule


def _gen_vdot(rng):
    s = random_shape(rng, 0, 3, 3)
    n = _prod(s)
    other = s if rng.random() < 0.6 else ((n,) if rng.random() < 0.5 else tuple(reversed(s)))
    if _prod(other) != n:
        other = (n,)
    return (random_array(rng, s), random_array(rng, other)), {}


vdot = defprimitive(
    "vdot", lambda a, b: np.asarray(np.vdot(a, b), dtype=np.float64), bind=_bind_vdot, numpy=(np.vdot,),
    formula="dY/dA[i..] = B.flat[flat(i..)];  dY/dB[j..] = A.flat[flat(j..)]   (flat: row-major position)",
    doc="numpy vdot(a, b) for real arrays: the sum of a.ravel() * b.ravel() (a and b may differ in shape "
        "but not in size); a 0-d result.",
    jac=[_vdot_jac(0), _vdot_jac(1)], vjp=[_vdot_vjp(0), _vdot_vjp(1)], jvp=[_vdot_jvp(0), _vdot_jvp(1)],
    battery=lambda rng, n: [((sample(rng, a), sample(rng, b)), {}) for a, b in
                            [((n,), (n,)), ((2, n), (2, n)), ((2, n), (2 * n,)), ((), ()), ((0,), (0, 3))]],
    generate=_gen_vdot)


def _flat(x):
    x = _arr(x)
    return x if x.ndim == 1 else x.reshape((_prod(x.shape),))


def _outer_jac(k):
    def rule(ans, a, b):
        x, y = (a, b) if k == 0 else (b, a)
        sx = np.shape(x)
        n = _prod(sx)
        own, other = ("i", "j") if k == 0 else ("j", "i")
        out = ("i", "j")
        factors = [(_flat(y), (other,))]
        if len(sx) == 1:
            in_lab = (own,)
        else:  # x is flattened: an identity regrouped from (n,) to x's shape
            in_lab = tuple(("x", q) for q in range(len(sx)))
            check_bytes(nbytes((n, n)), "outer: the flattening factor", (n,) + sx)
            factors.append((np.eye(n).reshape((n,) + sx), (own,) + in_lab))
        return Jacobian.from_labels(np.shape(ans), sx, out + in_lab, factors)
    return rule


def _outer_vjp_a(g, ans, a, b):
    nb = nbatch(g, ans)
    batch = g.shape[:nb]
    n, m = ans.shape
    return (g.reshape((_prod(batch) * n, m)) @ _flat(b)).reshape(batch + np.shape(a))  # one GEMV


def _outer_vjp_b(g, ans, a, b):
    nb = nbatch(g, ans)
    batch = g.shape[:nb]
    n = ans.shape[0]
    return _fold_right(_flat(a).reshape((1, n)), g, nb).reshape(batch + np.shape(b))


def _outer_jvp_a(t, ans, a, b):
    batch = t.shape[:t.ndim - np.ndim(a)]
    return t.reshape(batch + (ans.shape[0], 1)) * _flat(b)


def _outer_jvp_b(t, ans, a, b):
    batch = t.shape[:t.ndim - np.ndim(b)]
    return _flat(a).reshape((ans.shape[0], 1)) * t.reshape(batch + (1, ans.shape[1]))


outer = defprimitive(
    "outer", lambda a, b: np.outer(a, b).astype(np.float64, copy=False),
    bind=lambda a, b, out=None: (_no_out("outer", out), ((a, b), {}))[1], numpy=(np.outer,),
    formula="dY[i,j]/dA[r] = delta(i,r) B[j];  dY[i,j]/dB[s] = A[i] delta(j,s)   (N-d operands are flattened)",
    doc="numpy outer(a, b): out[i, j] = a.ravel()[i] * b.ravel()[j], shape (a.size, b.size).",
    jac=[_outer_jac(0), _outer_jac(1)], vjp=[_outer_vjp_a, _outer_vjp_b], jvp=[_outer_jvp_a, _outer_jvp_b],
    battery=lambda rng, n: [((sample(rng, a), sample(rng, b)), {}) for a, b in
                            [((n,), (3,)), ((2, n), (3,)), ((), (n,)), ((n,), (0,))]],
    generate=lambda rng: ((random_array(rng, random_shape(rng, 0, 2, 3)),
                           random_array(rng, random_shape(rng, 0, 2, 3))), {}))


# ---- kron ----------------------------------------------------------------------------------------
def _kron_shapes(sa, sb):
    nd = max(len(sa), len(sb))
    return (1,) * (nd - len(sa)) + tuple(sa), (1,) * (nd - len(sb)) + tuple(sb)


def _interleaved(sa, sb):
    return tuple(n for pair in zip(sa, sb) for n in pair)


def _kron_jac(k):
    def rule(ans, a, b):
        sa, sb = _kron_shapes(np.shape(a), np.shape(b))
        x, y = (a, b) if k == 0 else (b, a)
        nd, nx = len(sa), np.ndim(x)
        out_shape = np.shape(ans)
        out_lab = tuple(("o", d) for d in range(nd))
        in_lab = tuple(("x", d) for d in range(nd - nx, nd))
        # the other operand repeated over the blocks: b tiled (k = 0) or a with each entry repeated (k = 1)
        y_ext = np.kron(np.ones(sa), _arr(y).reshape(sb)) if k == 0 else np.kron(_arr(y).reshape(sa), np.ones(sb))
        factors = [(y_ext, out_lab)]
        for d in range(nd - nx, nd):
            # along axis d, out index o reads x index o // nb (k = 0) or o % nb (k = 1): a 0/1 factor
            o = np.arange(sa[d] * sb[d])
            sel = (o // sb[d]) if k == 0 else (o % sb[d])
            n_in = (sa if k == 0 else sb)[d]
            check_bytes(nbytes((o.size, n_in)), f"kron: the selection factor of axis {d}", (o.size, n_in))
            factors.append(((sel[:, None] == np.arange(n_in)).astype(np.float64), (("o", d), ("x", d))))
        return Jacobian.from_labels(out_shape, np.shape(x), out_lab + in_lab, factors)
    return rule


def _kron_vjp(k):
    def rule(g, ans, a, b):
        sa, sb = _kron_shapes(np.shape(a), np.shape(b))
        nb = nbatch(g, ans)
        batch = g.shape[:nb]
        nd = len(sa)
        gi = g.reshape(batch + _interleaved(sa, sb))
        bl = tuple(range(2 * nd, 2 * nd + nb))
        if k == 0:   # contract b's positions
            r = _labels_einsum([gi, _arr(b).reshape(sb)], [bl + tuple(range(2 * nd)), tuple(range(1, 2 * nd, 2))],
                               bl + tuple(range(0, 2 * nd, 2)))
        else:
            r = _labels_einsum([gi, _arr(a).reshape(sa)], [bl + tuple(range(2 * nd)), tuple(range(0, 2 * nd, 2))],
                               bl + tuple(range(1, 2 * nd, 2)))
        return r.reshape(batch + np.shape((a, b)[k]))
    return rule


def _kron_jvp(k):
    def rule(t, ans, a, b):
        sa, sb = _kron_shapes(np.shape(a), np.shape(b))
        x = (a, b)[k]
        nb = t.ndim - np.ndim(x)
        batch = t.shape[:nb]
        nd = len(sa)
        bl = tuple(range(2 * nd, 2 * nd + nb))
        ta = t.reshape(batch + (sa if k == 0 else sb))
        if k == 0:
            r = _labels_einsum([ta, _arr(b).reshape(sb)], [bl + tuple(range(0, 2 * nd, 2)), tuple(range(1, 2 * nd, 2))],
                               bl + tuple(range(2 * nd)))
        else:
            r = _labels_einsum([_arr(a).reshape(sa), ta], [tuple(range(0, 2 * nd, 2)), bl + tuple(range(1, 2 * nd, 2))],
                               bl + tuple(range(2 * nd)))
        return r.reshape(batch + ans.shape)
    return rule


kron = defprimitive(
    "kron", lambda a, b: np.asarray(np.kron(a, b), dtype=np.float64), bind=lambda a, b: ((a, b), {}),
    numpy=(np.kron,),
    formula="dY[.., i*nb+k, ..]/dA[.., r, ..] = delta(i,r) B[.., k, ..] per axis; "
            "dY[.., i*nb+k, ..]/dB[.., s, ..] = A[.., i, ..] delta(k,s)   (nb: b's length on that axis)",
    doc="numpy kron(a, b): the Kronecker product, block (i..) equal to a[i..] * b; the operand with fewer "
        "axes gets leading length-1 axes.",
    jac=[_kron_jac(0), _kron_jac(1)], vjp=[_kron_vjp(0), _kron_vjp(1)], jvp=[_kron_jvp(0), _kron_jvp(1)],
    battery=lambda rng, n: [((sample(rng, a), sample(rng, b)), {}) for a, b in
                            [((n,), (2,)), ((2, n), (n, 3)), ((n,), (2, 2)), ((), (n,)), ((2, 0), (n, 1))]],
    generate=lambda rng: ((random_array(rng, random_shape(rng, 0, 2, 3)),
                           random_array(rng, random_shape(rng, 0, 2, 3))), {}))


# ---- cross -----------------------------------------------------------------------------------------
_EPS = np.zeros((3, 3, 3))
for _i, _j, _k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
    _EPS[_i, _j, _k], _EPS[_i, _k, _j] = 1.0, -1.0


def _bind_cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    if axis is not None:
        axisa = axisb = axisc = axis
    sa, sb = np.shape(a), np.shape(b)
    if not sa or not sb:
        raise ShapeError(f"cross: a has shape {sa} and b has shape {sb}; both must hold 3-vectors along an axis")
    (xa,) = norm_axes("cross (axisa)", axisa, len(sa), allow_none=False)
    (xb,) = norm_axes("cross (axisb)", axisb, len(sb), allow_none=False)
    for name, s, x in (("a", sa, xa), ("b", sb, xb)):
        if s[x] != 3:
            hint = (" (2-vectors were deprecated in numpy 2.0: append a zero third component)" if s[x] == 2 else "")
            raise ShapeError(f"cross: {name} has shape {s} and its vector axis {x} has length {s[x]}; jactensor's "
                             f"cross takes 3-vectors{hint}")
    ra, rb = sa[:len(sa) + xa] + sa[len(sa) + xa + 1:], sb[:len(sb) + xb] + sb[len(sb) + xb + 1:]
    try:
        rest = np.broadcast_shapes(ra, rb)
    except ValueError:
        raise ShapeError(f"cross: the non-vector axes of a {ra} and b {rb} (shapes {sa}, {sb}) do not broadcast") \
            from None
    (xc,) = norm_axes("cross (axisc)", axisc, len(rest) + 1, allow_none=False)
    return (a, b), {"axisa": xa, "axisb": xb, "axisc": xc}


def _cross_impl(a, b, axisa, axisb, axisc):
    return np.cross(a, b, axisa=axisa, axisb=axisb, axisc=axisc)


def _moved_last(x, axis):
    """x with ``axis`` (negative) moved to the end (numpy values only: used in the Jacobian rule)."""
    return np.moveaxis(np.asarray(x), axis, -1)


def _cross_jac(k):
    def rule(ans, a, b, axisa, axisb, axisc):
        x, y = (a, b) if k == 0 else (b, a)
        xx, xy = (axisa, axisb) if k == 0 else (axisb, axisa)
        yl = _moved_last(_arr(y), xy)
        # dc_i/da_j = eps_ijk b_k;  dc_i/db_k = eps_ijk a_j = -eps_ikj a_j: the same form with a sign
        M = np.einsum("ijk,...k->...ij", _EPS, yl) * (1.0 if k == 0 else -1.0)
        no = np.ndim(ans)
        rest_lab = [("r", q) for q in range(no - 1)]
        out_lab = list(rest_lab)
        out_lab.insert(no + axisc, "i")
        sx = np.shape(x)
        nx = len(sx)
        rest_shape = np.shape(ans)[:no + axisc] + np.shape(ans)[no + axisc + 1:]
        xr = [n for q, n in enumerate(sx) if q != nx + xx]
        in_lab = [rest_lab[no - 1 - len(xr) + q] if n == rest_shape[no - 1 - len(xr) + q] else ("b", q)
                  for q, n in enumerate(xr)]
        in_lab.insert(nx + xx, "j")
        ny = yl.ndim - 1
        m_lab = tuple(rest_lab[no - 1 - ny:]) + ("i", "j")
        return Jacobian.from_labels(np.shape(ans), sx, tuple(out_lab) + tuple(in_lab), [(M, m_lab)])
    return rule


def _cross_vjp_a(g, ans, a, b, axisa, axisb, axisc):
    ga = cross.bound(b, g, axisa=axisb, axisb=axisc, axisc=axisa)   # (b x g)_j = eps_ijk g_i b_k
    return unbroadcast(ga, np.shape(a), nbatch(g, ans))


def _cross_vjp_b(g, ans, a, b, axisa, axisb, axisc):
    gb = cross.bound(g, a, axisa=axisc, axisb=axisa, axisc=axisb)   # (g x a)_k = eps_ijk g_i a_j
    return unbroadcast(gb, np.shape(b), nbatch(g, ans))


def _cross_jvp_a(t, ans, a, b, axisa, axisb, axisc):
    return cross.bound(expand_to(t, np.shape(a), ans.ndim), b, axisa=axisa, axisb=axisb, axisc=axisc)


def _cross_jvp_b(t, ans, a, b, axisa, axisb, axisc):
    return cross.bound(a, expand_to(t, np.shape(b), ans.ndim), axisa=axisa, axisb=axisb, axisc=axisc)


def _gen_cross(rng):
    rest = random_shape(rng, 0, 2, 3)
    ra = rest
    rb = broadcast_partner(rng, rest)
    if rng.random() < 0.5:
        ra, rb = rb, ra
    xa = int(rng.integers(0, len(ra) + 1))
    xb = int(rng.integers(0, len(rb) + 1))
    sa = ra[:xa] + (3,) + ra[xa:]
    sb = rb[:xb] + (3,) + rb[xb:]
    nc = len(np.broadcast_shapes(ra, rb)) + 1
    kw = {"axisa": xa - len(sa) if rng.random() < 0.5 else xa, "axisb": xb,
          "axisc": int(rng.integers(-nc, nc))}
    return (random_array(rng, sa), random_array(rng, sb)), kw


cross = defprimitive(
    "cross", _cross_impl, bind=_bind_cross, numpy=(np.cross,),
    formula="dC[..,i]/dA[..,j] = sum_k eps(i,j,k) B[..,k];  dC[..,i]/dB[..,k] = sum_j eps(i,j,k) A[..,j]   "
            "(eps: the Levi-Civita symbol; other axes broadcast)",
    doc="numpy cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None) for 3-vectors, broadcasting the other axes.",
    jac=[_cross_jac(0), _cross_jac(1)], vjp=[_cross_vjp_a, _cross_vjp_b], jvp=[_cross_jvp_a, _cross_jvp_b],
    battery=lambda rng, n: [((sample(rng, a), sample(rng, b)), kw) for a, b, kw in
                            [((3,), (3,), {}), ((n, 3), (3,), {}), ((3, n), (n, 3), {"axisa": 0}),
                             ((2, 1, 3), (n, 3), {"axisc": 0}), ((0, 3), (3,), {})]],
    generate=_gen_cross)


# ---- trace, diagonal, diag ----------------------------------------------------------------------------
def _bind_two_axes(op, a, offset, axis1, axis2):
    n = np.ndim(a)
    if n < 2:
        raise ShapeError(f"{op}: the input has shape {np.shape(a)}; it needs at least 2 dimensions "
                         f"(use jt.diag to build a matrix from a 1-d array)")
    (x1,) = norm_axes(f"{op} (axis1)", axis1, n, allow_none=False)
    (x2,) = norm_axes(f"{op} (axis2)", axis2, n, allow_none=False)
    if x1 == x2:
        raise AxisError(f"{op}: axis1 and axis2 are the same axis ({axis1}, {axis2}) of an input of shape "
                        f"{np.shape(a)}; give two different axes")
    if not isinstance(offset, (int, np.integer)) or isinstance(offset, bool):
        raise ShapeError(f"{op}: offset must be an integer; got {offset!r}")
    return (a,), {"offset": int(offset), "axis1": x1, "axis2": x2}


def _diag_selectors(n1, n2, offset):
    """0/1 matrices S1 (L, n1), S2 (L, n2): the d-th diagonal entry is at (r0 + d, c0 + d)."""
    r0, c0 = max(-offset, 0), max(offset, 0)
    L = max(0, min(n1 - r0, n2 - c0))
    S1, S2 = np.zeros((L, n1)), np.zeros((L, n2))
    S1[np.arange(L), r0 + np.arange(L)] = 1.0
    S2[np.arange(L), c0 + np.arange(L)] = 1.0
    return S1, S2


def _two_axes_labels(ndim, axis1, axis2):
    """In labels (rest axes shared with the output, 'r'/'c' on the two axes) and the rest labels."""
    p1, p2 = ndim + axis1, ndim + axis2
    rest = [q for q in range(ndim) if q not in (p1, p2)]
    in_lab = [("k", q) for q in range(ndim)]
    in_lab[p1], in_lab[p2] = "r", "c"
    return in_lab, [("k", q) for q in rest]


def _trace_jac(ans, a, offset, axis1, axis2):
    sa = np.shape(a)
    n = len(sa)
    in_lab, rest = _two_axes_labels(n, axis1, axis2)
    E = np.eye(sa[n + axis1], sa[n + axis2], k=offset)
    return Jacobian.from_labels(np.shape(ans), sa, tuple(rest) + tuple(in_lab), [(E, ("r", "c"))])


def _place_two_axes(x, shape, axis1, axis2):
    """Reshape a constant (n1, n2) array so it broadcasts against ``shape`` with n1, n2 at axis1, axis2."""
    s = [1] * len(shape)
    s[len(shape) + axis1], s[len(shape) + axis2] = x.shape
    return (x if axis1 < axis2 else x.T).reshape(s)


def _trace_vjp(g, ans, a, offset, axis1, axis2):
    sa = np.shape(a)
    n = len(sa)
    nb = nbatch(g, ans)
    E = np.eye(sa[n + axis1], sa[n + axis2], k=offset)
    s = list(sa)
    s[n + axis1] = s[n + axis2] = 1
    return g.reshape(g.shape[:nb] + tuple(s)) * _place_two_axes(E, sa, axis1, axis2)


trace = defprimitive(
    "trace", lambda a, offset, axis1, axis2: np.asarray(np.trace(a, offset, axis1, axis2), dtype=np.float64),
    bind=lambda a, offset=0, axis1=0, axis2=1, dtype=None, out=None: (
        _no_out("trace", out), _bind_two_axes("trace", a, offset, axis1, axis2))[1],
    numpy=(np.trace,), methods=("trace",),
    formula="dY[k..]/dA[k'..,r,c] = delta(k..,k'..) [c = r + offset]   (r, c: axis1, axis2)",
    doc="numpy trace(a, offset=0, axis1=0, axis2=1): the sum along a diagonal of the two axes; the other "
        "axes are kept in order. Also the method x.trace().",
    jac=[_trace_jac], vjp=[_trace_vjp],
    jvp=[lambda t, ans, a, offset, axis1, axis2: trace.bound(t, offset=offset, axis1=axis1, axis2=axis2)],
    battery=lambda rng, n: [((sample(rng, s),), kw) for s, kw in
                            [((n, n), {}), ((n, n + 1), {"offset": 1}), ((2, n, 3), {"axis1": -1, "axis2": 0}),
                             ((n, 3), {"offset": -1}), ((0, 3), {}), ((2, n), {"offset": 5})]],
    generate=lambda rng: _gen_two_axes(rng))


def _gen_two_axes(rng):
    s = random_shape(rng, 2, 4, 4)
    n = len(s)
    x1, x2 = (int(v) for v in rng.choice(n, size=2, replace=False))
    kw = {"axis1": x1 - n if rng.random() < 0.5 else x1, "axis2": x2,
          "offset": int(rng.integers(-2, 3)) if rng.random() < 0.6 else 0}
    return (random_array(rng, s),), kw


def _diag_embed(g, offset, n1, n2):
    """batch + (L,) -> batch + (n1, n2): the vector placed on diagonal ``offset`` (primitives only)."""
    S1, _ = _diag_selectors(n1, n2, offset)
    E = np.eye(n1, n2, k=offset)
    batch = g.shape[:-1]
    rows = (g.reshape((_prod(batch), S1.shape[0])) @ S1).reshape(batch + (n1, 1))   # g[d] at row r0 + d
    return rows * E


def _diagonal_jac(ans, a, offset, axis1, axis2):
    sa = np.shape(a)
    n = len(sa)
    in_lab, rest = _two_axes_labels(n, axis1, axis2)
    S1, S2 = _diag_selectors(sa[n + axis1], sa[n + axis2], offset)
    return Jacobian.from_labels(np.shape(ans), sa, tuple(rest) + ("d",) + tuple(in_lab),
                                [(S1, ("d", "r")), (S2, ("d", "c"))])


def _diagonal_vjp(g, ans, a, offset, axis1, axis2):
    sa = np.shape(a)
    n = len(sa)
    nb = nbatch(g, ans)
    G = _diag_embed(g, offset, sa[n + axis1], sa[n + axis2])   # batch + rest + (n1, n2)
    p1, p2 = n + axis1, n + axis2
    rest = [q for q in range(n) if q not in (p1, p2)]
    src = {q: i for i, q in enumerate(rest)}
    src[p1], src[p2] = n - 2, n - 1
    return G.transpose(tuple(range(nb)) + tuple(nb + src[q] for q in range(n)))


diagonal = defprimitive(
    "diagonal", lambda a, offset, axis1, axis2: np.diagonal(a, offset, axis1, axis2).copy(),
    bind=lambda a, offset=0, axis1=0, axis2=1: _bind_two_axes("diagonal", a, offset, axis1, axis2),
    numpy=(np.diagonal,), methods=("diagonal",),
    formula="dY[k..,d]/dA[k'..,r,c] = delta(k..,k'..) [r = r0 + d] [c = c0 + d]   "
            "(r0 = max(-offset, 0), c0 = max(offset, 0))",
    doc="numpy diagonal(a, offset=0, axis1=0, axis2=1): the diagonal as the last axis, other axes kept in "
        "order. numpy returns a read-only view; this returns a new array with the same values.",
    jac=[_diagonal_jac], vjp=[_diagonal_vjp],
    jvp=[lambda t, ans, a, offset, axis1, axis2: diagonal.bound(t, offset=offset, axis1=axis1, axis2=axis2)],
    battery=lambda rng, n: [((sample(rng, s),), kw) for s, kw in
                            [((n, n), {}), ((n, n + 2), {"offset": 1}), ((2, n, 3), {"axis1": -1, "axis2": 0}),
                             ((n + 1, 3), {"offset": -1}), ((0, 3), {}), ((2, n), {"offset": 5})]],
    generate=lambda rng: _gen_two_axes(rng))


def _bind_diag(v, k=0):
    if np.ndim(v) not in (1, 2):
        raise ShapeError(f"diag: the input has shape {np.shape(v)}; diag takes a 1-d array (to build a matrix) "
                         f"or a 2-d array (to read a diagonal). For more axes use jt.diagonal")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ShapeError(f"diag: k must be an integer; got {k!r}")
    return (v,), {"k": int(k)}


def _diag_jac(ans, v, k):
    if np.ndim(v) == 2:
        return _diagonal_jac(ans, v, k, -2, -1)
    N = np.shape(ans)[0]
    S1, S2 = _diag_selectors(N, N, k)
    return Jacobian.from_labels(np.shape(ans), np.shape(v), ("r", "c", "d"), [(S1, ("d", "r")), (S2, ("d", "c"))])


def _diag_vjp(g, ans, v, k):
    if np.ndim(v) == 2:
        return _diagonal_vjp(g, ans, v, k, -2, -1)
    return diagonal.bound(g, offset=k, axis1=-2, axis2=-1)


def _diag_jvp(t, ans, v, k):
    if np.ndim(v) == 2:
        return diagonal.bound(t, offset=k, axis1=-2, axis2=-1)
    N = np.shape(ans)[0]
    return _diag_embed(t, k, N, N)


diag = defprimitive(
    "diag", lambda v, k: np.diag(v, k).astype(np.float64, copy=True), bind=_bind_diag, numpy=(np.diag,),
    formula="1-d v: dY[r,c]/dV[d] = [r = r0 + d] [c = c0 + d];  2-d v: dY[d]/dV[r,c] = the same selection  "
            "(r0 = max(-k, 0), c0 = max(k, 0))",
    doc="numpy diag(v, k=0): a 1-d v gives the square matrix with v on diagonal k; a 2-d v gives its k-th "
        "diagonal (a new array).",
    jac=[_diag_jac], vjp=[_diag_vjp], jvp=[_diag_jvp],
    battery=lambda rng, n: [((sample(rng, s),), kw) for s, kw in
                            [((n,), {}), ((n,), {"k": 1}), ((n,), {"k": -2}), ((n, n + 1), {}),
                             ((n + 1, 3), {"k": -1}), ((0,), {}), ((2, n), {"k": 4})]],
    generate=lambda rng: ((random_array(rng, random_shape(rng, 1, 2, 4)),), {"k": int(rng.integers(-2, 3))}))


# ---- tril, triu ---------------------------------------------------------------------------------------
def _tri_mask(shape, k, lower):
    n1, n2 = (shape[-2], shape[-1]) if len(shape) >= 2 else (shape[-1], shape[-1])
    m = np.tri(n1, n2, k=k, dtype=bool)
    return (m if lower else ~np.tri(n1, n2, k=k - 1, dtype=bool)).astype(np.float64)


def _deftri(name, lower, numpy_fn):
    def bind(m, k=0):
        if np.ndim(m) < 1:
            raise ShapeError(f"{name}: the input is 0-d; {name} takes a matrix (..., M, N) (a 1-d input is "
                             f"broadcast to a square matrix, as numpy does)")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise ShapeError(f"{name}: k must be an integer; got {k!r}")
        return (m,), {"k": int(k)}

    def jac(ans, m, k):
        return broadcast_jacobian(_tri_mask(np.shape(m), k, lower), np.shape(ans), np.shape(m))

    def vjp(g, ans, m, k):
        return unbroadcast(g * _tri_mask(np.shape(m), k, lower), np.shape(m), nbatch(g, ans))

    def jvp(t, ans, m, k):
        return expand_to(t, np.shape(m), ans.ndim) * _tri_mask(np.shape(m), k, lower)

    side = "on and below" if lower else "on and above"
    return defprimitive(
        name, lambda m, k: numpy_fn(m, k).astype(np.float64, copy=False), bind=bind, numpy=(numpy_fn,),
        formula=f"dY[..,i,j]/dM[..,r,s] = delta(..) delta(i,r) delta(j,s) [j {'<=' if lower else '>='} i + k]",
        doc=f"numpy {name}(m, k=0): the entries {side} diagonal k of the last two axes kept, the others zero "
            f"(a 1-d m is broadcast to a square matrix, as numpy does).",
        jac=[jac], vjp=[vjp], jvp=[jvp],
        battery=lambda rng, n: [((sample(rng, s),), kw) for s, kw in
                                [((n, n), {}), ((n, n + 1), {"k": 1}), ((2, n, 3), {"k": -1}), ((n,), {}),
                                 ((0, 3), {})]],
        generate=lambda rng: ((random_array(rng, random_shape(rng, 1, 4, 4)),), {"k": int(rng.integers(-2, 3))}))


tril = _deftri("tril", True, np.tril)
triu = _deftri("triu", False, np.triu)
