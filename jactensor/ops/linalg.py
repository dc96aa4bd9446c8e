"""matmul and einsum.

The Jacobian of an einsum with respect to one operand is itself an einsum of the
other operands, with the operand's own indices as deltas:
dY[out]/dX_k[in_k] = einsum(other operands) placed on labels (out, in_k).
"""
import numpy as np

from .. import contract as _c
from ..core import PerArg, defprimitive
from ..errors import ShapeError
from ..jacobian import Jacobian
from ._util import expand_to, nbatch, sample, unbroadcast

__all__ = ["matmul", "einsum"]


def _einsum_jacobian(out_shape, in_labels, out_labels, operands, k, coef=1.0):
    """Jacobian of einsum(in_labels -> out_labels) w.r.t. operand k, as a structured Jacobian."""
    sizes = {}
    for ls, x in zip(in_labels, operands):
        for l, n in zip(ls, np.shape(x)):
            sizes[l] = max(sizes.get(l, 1), n)
    x = operands[k]
    # an axis that operand k broadcasts (length 1 against a longer label) is free, not a delta
    in_lab = tuple(l if n == sizes[l] else ("bcast", a) for a, (l, n) in enumerate(zip(in_labels[k], np.shape(x))))
    factors = [(operands[j], in_labels[j]) for j in range(len(operands)) if j != k]
    return Jacobian.from_labels(out_shape, np.shape(x), tuple(out_labels) + in_lab, factors, coef=coef)


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


def _swap(x):
    return x.swapaxes(-1, -2)


def _add_axis(x, where):
    s = x.shape
    return x.reshape(s + (1,) if where == -1 else s[:-1] + (1,) + s[-1:])


def _drop_axis(x, where):
    s = list(x.shape)
    del s[where]
    return x.reshape(tuple(s))


def _matmul_vjp_a(g, ans, a, b):
    if a.ndim == 2 and b.ndim == 2 and g.ndim == 2:   # the common case: plain matrices
        return g @ b.swapaxes(-1, -2)
    nb = nbatch(g, ans)
    if b.ndim == 1:               # out[..., i] = a[..., i, k] b[k]  (or both 1-d)
        ga = _add_axis(g, -1) * b
    elif a.ndim == 1:             # out[..., j] = a[k] b[..., k, j]
        ga = _drop_axis(b @ _add_axis(g, -1), -1)
    else:
        ga = g @ _swap(b)
    return unbroadcast(ga, a.shape, nb)


def _matmul_vjp_b(g, ans, a, b):
    if a.ndim == 2 and b.ndim == 2 and g.ndim == 2:
        return a.swapaxes(-1, -2) @ g
    nb = nbatch(g, ans)
    if a.ndim == 1 and b.ndim == 1:
        gb = _add_axis(g, -1) * a
    elif a.ndim == 1:             # gb[..., k, j] = a[k] g[..., j]
        gb = _add_axis(a, -1) * _add_axis(g, -2)
    elif b.ndim == 1:             # gb[k] = sum a[..., i, k] g[..., i]
        gb = _drop_axis(_swap(a) @ _add_axis(g, -1), -1)
    else:
        gb = _swap(a) @ g
    return unbroadcast(gb, b.shape, nb)


def _matmul_jvp_a(t, ans, a, b):
    batch = t.shape[:t.ndim - a.ndim]
    if a.ndim == 1:               # a row vector per batch entry, aligned with b's batch axes
        t = t.reshape(batch + (1,) * max(b.ndim - 2, 0) + (1,) + a.shape)
    else:
        t = expand_to(t, a.shape, ans.ndim + (b.ndim == 1))
    return (t @ b).reshape(batch + ans.shape)


def _matmul_jvp_b(t, ans, a, b):
    batch = t.shape[:t.ndim - b.ndim]
    if b.ndim == 1:               # a column vector per batch entry, aligned with a's batch axes
        t = t.reshape(batch + (1,) * max(a.ndim - 2, 0) + b.shape + (1,))
    else:
        t = expand_to(t, b.shape, ans.ndim + (a.ndim == 1))
    return (a @ t).reshape(batch + ans.shape)


matmul = defprimitive(
    "matmul", np.matmul, bind=_bind_matmul, numpy=("matmul",),
    formula="dY[..,i,j]/dA[..,r,s] = delta(i,r) B[..,s,j];  dY[..,i,j]/dB[..,r,s] = A[..,i,r] delta(s,j)",
    doc="a @ b with numpy semantics: 1-d operands, batch axes, broadcasting.",
    jac=[_matmul_jac(0), _matmul_jac(1)],
    vjp=[_matmul_vjp_a, _matmul_vjp_b],
    jvp=[_matmul_jvp_a, _matmul_jvp_b],
    battery=lambda rng, n: [((sample(rng, s), sample(rng, r)), {}) for s, r in [
        ((n,), (n,)), ((n,), (n, 2)), ((3, n), (n,)), ((3, n), (n, 2)),
        ((2, 3, n), (n, 2)), ((2, 1, 3, n), (4, n, 2)), ((n,), (2, n, 3))]])


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
            sizes[l] = max(sizes.get(l, n), n)
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
    return np.asarray(_c.contract(list(operands), ins, out))


def _labels_einsum(operands, ins, out):
    """einsum on integer labels (used by the rules, so they stay differentiable)."""
    return einsum.bound(*operands, ins=tuple(map(tuple, ins)), out=tuple(out))


def _einsum_vjp(k):
    def rule(g, ans, *ops, ins, out):
        nb = nbatch(g, ans)
        fresh = iter(range(1 + max([l for ls in ins for l in ls] + [-1]), 1 << 20))
        batch = tuple(next(fresh) for _ in range(nb))
        sizes = {}
        for ls, x in zip(ins, ops):
            for l, n in zip(ls, np.shape(x)):
                sizes[l] = max(sizes.get(l, 1), n)
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
             ("ij->i", (n, 3)), ("i,j->ij", (n,), (2,)), ("ij,j->ij", (n, 1), (3,))]
    return [((spec,) + tuple(sample(rng, s) for s in shapes), {}) for spec, *shapes in specs]


einsum = defprimitive(
    "einsum", _einsum_impl, bind=_bind_einsum, numpy=(np.einsum,),
    formula="dY[out]/dX_k[in_k] = einsum(all operands but X_k) on labels (out, in_k); "
            "an index of X_k that is also in out is a delta",
    doc="einsum(subscripts, *operands): any valid spec (ellipsis, implicit output, repeated indices).",
    jac=PerArg(lambda k: lambda ans, *ops, ins, out: _einsum_jacobian(np.shape(ans), ins, out, ops, k)),
    vjp=PerArg(_einsum_vjp), jvp=PerArg(_einsum_jvp),
    battery=_einsum_battery)
