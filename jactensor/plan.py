"""Planning and contracting one term: opt_einsum's path against forward and reverse accumulation.

Costs come from ``contract.plan`` (FLOPs and the largest intermediate, from shapes alone),
so the memory guard runs before any einsum does.
"""
import numpy as np

from . import contract as _c
from .backends import as_factor, is_dask
from .memory import ITEMSIZE, check_bytes, numel
from .term import Term

__all__ = ["ChainPlan", "ORDERS", "term_paths", "choose", "contract_term", "ShapeOnly"]

ORDERS = ("best", "forward", "reverse")


class ShapeOnly:
    """Stands in for a factor when only its shape is needed (plans)."""

    __slots__ = ("shape",)
    nbytes = 0

    def __init__(self, shape):
        self.shape = tuple(shape)

    @property
    def ndim(self):
        return len(self.shape)


class ChainPlan:
    """FLOPs and largest intermediate for the chosen order against forward and reverse accumulation."""

    def __init__(self, chosen, forward, reverse, n_terms, out_bytes):
        self.chosen, self.forward, self.reverse = chosen, forward, reverse
        self.n_terms, self.out_bytes = n_terms, out_bytes

    def __repr__(self):
        return (f"ChainPlan(chosen={self.chosen.flops}, forward={self.forward.flops}, "
                f"reverse={self.reverse.flops}, terms={self.n_terms})")

    def __str__(self):
        rows = [("order", "FLOPs", "largest intermediate")]
        for name, c in (("chosen", self.chosen), ("forward (right to left)", self.forward),
                        ("reverse (left to right)", self.reverse)):
            rows.append((name, f"{c.flops:,}", f"{c.largest:,} elements"))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}" for r in rows)

    @staticmethod
    def total(plans):
        c = f = r = _c.ZERO_COST
        n = 0
        for p in plans:
            c, f, r, n = c + p.chosen, f + p.forward, r + p.reverse, n + p.n_terms
        return ChainPlan(c, f, r, n, 0)


def term_paths(t):
    """Chosen (opt_einsum), forward-sequential and reverse-sequential costs of contracting one term,
    and the labels the contracted factor keeps."""
    present = t.present()
    keep = tuple(l for l in t.distinct() if l in present)
    shapes = [a.shape for a, _ in t.factors]
    labels = [ls for _, ls in t.factors]
    n = len(shapes)
    if n <= 1:
        c = _c.plan(shapes, labels, keep) if n else _c.ZERO_COST
        return c, c, c, keep
    rev = _c.plan(shapes, labels, keep, _c.sequential_path(n))
    fwd = _c.plan(shapes[::-1], labels[::-1], keep, _c.sequential_path(n))
    opt = _c.plan(shapes, labels, keep)
    return opt, fwd, rev, keep


def choose(opt, fwd, rev, order="best"):
    """(cost, which) of the order to use: forced, or the cheapest (None = opt_einsum's own path)."""
    forced = {"forward": (fwd, "fwd"), "reverse": (rev, "rev")}.get(order)
    return forced or min((opt, None), (rev, "rev"), (fwd, "fwd"), key=lambda x: x[0].flops)


def fold_scalars(t):
    """Factors holding a single number (every axis of length 1: plain numpy, or a shape placeholder when only
    planning) go into the coefficient instead of the contraction, where a scalar times a big factor would
    cost a full copy of it. Their labels have length 1, so dropping them changes no value (a length-1 delta
    or broadcast is 1). Decided by shapes alone, so a plan (chain_plan) and the contraction agree."""
    if len(t.factors) < 2:
        return t
    scalars = [k for k, (a, ls) in enumerate(t.factors)
               if (type(a) is np.ndarray or type(a) is ShapeOnly) and numel(a.shape) == 1 and
               all(t.sizes.get(l, 1) == 1 for l in ls)]  # (a length-1 axis on a longer label is a broadcast)
    if not scalars:
        return t
    if len(scalars) == len(t.factors):
        scalars = scalars[1:]  # keep one factor
    c = t.coef
    for k in scalars:
        a = t.factors[k][0]
        if type(a) is np.ndarray:
            c *= float(a.reshape(()))
    drop = set(scalars)
    return Term(c, [f for k, f in enumerate(t.factors) if k not in drop], t.labels, t.sizes, t.owned)


def contract_term(t, what="Jacobian", order="best"):
    """Contract one term's factors into a single factor over the distinct axis labels they carry.

    order="best": the cheapest of opt_einsum's path and the two sequential orders (so never
    costlier than forward or reverse accumulation); "forward" / "reverse" force that order.
    Returns (term, (chosen, forward, reverse) PathCosts). The memory guard runs first.
    """
    if order not in ORDERS:
        raise ValueError(f"chain: order must be one of {ORDERS}; got {order!r}")
    t = fold_scalars(t)
    if len(t.factors) > 1 and all(ls == t.factors[0][1] for _, ls in t.factors[1:]) and \
            all(type(a) is np.ndarray for a, _ in t.factors) and \
            tuple(l for l in dict.fromkeys(t.labels) if l in t.factors[0][1]) == t.factors[0][1]:
        # a Hadamard product (an elementwise chain): multiply in place, no path search, no einsum
        a0, keep = t.factors[0]
        value = a0 * t.factors[1][0]
        for a, _ in t.factors[2:]:
            value *= a
        n = numel(value.shape)
        c = _c.PathCost((len(t.factors) - 1) * n, n, None)
        return Term(t.coef, [(value, keep)], t.labels, {l: s for l, s in t.sizes.items()
                                                        if l in set(t.labels) | set(keep)}, True), (c, c, c)
    opt, fwd, rev, keep = term_paths(t)
    cost, which = choose(opt, fwd, rev, order)
    if not t.factors or (len(t.factors) == 1 and len(set(t.factors[0][1])) == len(t.factors[0][1]) and
                         set(t.factors[0][1]) == set(keep)):
        return t, (cost, fwd, rev)  # one factor over the kept labels (in any order): nothing to contract
    ops = [a for a, _ in t.factors]
    if not any(is_dask(a) for a in ops):  # a dask contraction allocates nothing now: np.asarray(J) is guarded
        check_bytes(cost.largest * ITEMSIZE, f"{what} (largest contraction intermediate)", (cost.largest,))
        out_shape = [t.sizes[l] for l in keep]
        check_bytes(numel(out_shape) * ITEMSIZE, f"{what} (contracted factor)", out_shape)
    labels = [ls for _, ls in t.factors]
    if which == "fwd":
        ops, labels = ops[::-1], labels[::-1]
    value = _c.contract(ops, labels, keep, _c.sequential_path(len(ops)) if which else None)
    if type(value) is np.ndarray and any(type(a) is np.ndarray and np.may_share_memory(value, a) for a in ops):
        value = value.copy()  # einsum of one operand may return a view (a diagonal, a transpose): never alias
    live = set(t.labels) | set(keep)  # summed labels are gone: drop their sizes (they would count again)
    return Term(t.coef, [(as_factor(value), keep)], t.labels, {l: s for l, s in t.sizes.items() if l in live},
                type(value) is np.ndarray), \
        (cost, fwd, rev)
