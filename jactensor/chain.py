"""Composing Jacobians: ``chain()``, its plan, and the lazy product it is built on.

``chain(J2, J1)`` renames labels apart, identifies J2's input labels with J1's output
labels position by position (a union-find over labels handles the deltas), and
contracts all factors of a term with one einsum whose order is the cheapest of
opt_einsum's path, forward and reverse accumulation (see ``plan.py``).
"""
from . import contract as _c
from .errors import ShapeError
from .jacobian import Jacobian
from .plan import ChainPlan, ShapeOnly, choose, contract_term, fold_scalars, term_paths
from .term import Term

__all__ = ["chain", "chain_plan", "ChainPlan", "lazy_chain", "product", "contract_with_plan", "plan_only",
           "shape_only_dense"]


class _UnionFind:
    def __init__(self):
        self.parent = {}

    def find(self, x):
        p = self.parent.setdefault(x, x)
        while p != x:
            self.parent[x] = self.parent.setdefault(p, p)
            x, p = p, self.parent[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _product_term(ta, tb, n_out_a, n_mid):
    """Term of A @ B: A's input axes identified with B's output axes, position by position."""
    if len(tb.labels) == 2 * n_mid and tb.labels[:n_mid] == tb.labels[n_mid:] and \
            len(set(tb.labels[:n_mid])) == n_mid:
        # B is diagonal (an elementwise map): its factors move onto A's input labels; nothing else changes,
        # so a long elementwise chain costs O(1) bookkeeping per step. (Distinct labels only: a label
        # repeated among B's outputs also couples those axes of A, which the general product handles.)
        m = dict(zip(tb.labels[:n_mid], ta.labels[n_out_a:]))
        if all(l in m for _, ls in tb.factors for l in ls):
            return Term(ta.coef * tb.coef, ta.factors + tuple((a, tuple(m[l] for l in ls)) for a, ls in tb.factors),
                        ta.labels, ta.sizes)
    uf = _UnionFind()
    off = 1 + max(list(ta.sizes) + [0])
    lb = lambda l: l + off  # noqa: E731 - B's labels, renamed apart
    for p in range(n_mid):
        uf.union(ta.labels[n_out_a + p], lb(tb.labels[p]))
    sizes = {}
    for l, s in ta.sizes.items():
        sizes[uf.find(l)] = s
    for l, s in tb.sizes.items():
        sizes[uf.find(lb(l))] = s
    labels = tuple(uf.find(l) for l in ta.labels[:n_out_a]) + tuple(uf.find(lb(l)) for l in tb.labels[n_mid:])
    factors = [(a, tuple(uf.find(l) for l in ls)) for a, ls in ta.factors] + \
              [(a, tuple(uf.find(lb(l)) for l in ls)) for a, ls in tb.factors]
    coef = ta.coef * tb.coef
    used = set(labels).union(*(set(ls) for _, ls in factors)) if factors else set(labels)
    for l, s in sizes.items():  # an index summed with nothing depending on it counts its length
        if l not in used:
            coef *= s
    return Term(coef, factors, labels, {l: s for l, s in sizes.items() if l in used}).canonical()


def product(A, B):
    """The lazy product A @ B (A's input = B's output): terms multiply, nothing is contracted."""
    terms = [_product_term(ta, tb, len(A.out_shape), len(A.in_shape)) for ta in A.terms for tb in B.terms]
    name = A.name if not B.name else B.name if not A.name else f"{A.name} . {B.name}"
    if name and len(name) > 120:  # a long chain: name its ends, not every step (names are for messages)
        name = f"{name[:50]} ... {name[-50:]}"
    return Jacobian(A.out_shape, B.in_shape, terms, name=name)


def _check_chain(jacs):
    if not jacs:
        raise ShapeError("chain() needs at least one Jacobian")
    for k, J in enumerate(jacs):
        if not isinstance(J, Jacobian):
            raise TypeError(f"chain(): argument {k} is {type(J).__name__}, not a Jacobian; "
                            f"wrap a dense tensor with Jacobian.from_dense(array, out_ndim)")
    for k in range(len(jacs) - 1):
        a, b = jacs[k], jacs[k + 1]
        if a.in_shape != b.out_shape:
            raise ShapeError(
                f"chain(): Jacobian {k} has input shape {a.in_shape} but Jacobian {k + 1} has output shape "
                f"{b.out_shape}; outermost first, as in f(g(h(x))): chain(df/dg, dg/dh, dh/dx)")


def lazy_chain(jacs):
    """The product of Jacobians as one sum of einsums, not yet contracted."""
    J = jacs[0]
    for B in jacs[1:]:
        J = product(J, B)
    return J


def contract_with_plan(J, order="best"):
    """Contract every term of a lazy product (see plan.contract_term) and attach the summed ChainPlan."""
    chosen = forward = reverse = _c.ZERO_COST
    terms = []
    for t in J.terms:
        t, (c, f, r) = contract_term(t, J._what(), order)
        chosen, forward, reverse = chosen + c, forward + f, reverse + r
        terms.append(t)
    out = Jacobian(J.out_shape, J.in_shape, terms, name=J.name).compact()
    out.plan = ChainPlan(chosen, forward, reverse, len(J.terms), out.nbytes)
    return out


def chain(*jacobians, dense=False, order="best"):
    """Compose Jacobians, outermost first as in f(g(h(x))): ``chain(df/dg, dg/dh, dh/dx)``.

    Neighbours are contracted over their shared intermediate shape; the result has
    shape ``out(first) + in(last)``. All factors of all operands go into one einsum per
    term and opt_einsum picks the order (forward, reverse or mixed), never costlier than
    the cheaper of forward and reverse accumulation. ``result.plan`` reports the FLOPs.

    ``dense=True`` materialises every Jacobian first (the naive route, for contrast);
    ``order="forward"`` or ``"reverse"`` forces that accumulation order.
    """
    jacs = list(jacobians)
    _check_chain(jacs)
    if dense:
        jacs = [J.densified() for J in jacs]
    return contract_with_plan(lazy_chain(jacs), order)


def plan_only(J):
    """What contracting J would cost (the same choice as chain()), each term's result a shape placeholder."""
    chosen = forward = reverse = _c.ZERO_COST
    terms = []
    for t in J.terms:
        t = fold_scalars(t)
        opt, fwd, rev, keep = term_paths(t)
        chosen, forward, reverse = chosen + choose(opt, fwd, rev)[0], forward + fwd, reverse + rev
        fs = [(ShapeOnly([t.sizes[l] for l in keep]), keep)] if t.factors else []
        terms.append(Term(t.coef, fs, t.labels, t.sizes))
    out = Jacobian(J.out_shape, J.in_shape, terms, name=J.name)
    out.plan = ChainPlan(chosen, forward, reverse, len(J.terms), out.nbytes)
    return out


def shape_only_dense(J):
    """J as one dense factor of placeholder shape: plans the dense route without allocating it."""
    lab = tuple(range(J.ndim))
    return Jacobian(J.out_shape, J.in_shape, [Term(1.0, [(ShapeOnly(J.shape), lab)], lab, dict(zip(lab, J.shape)))],
                    name=J.name)


def chain_plan(*jacobians, dense=False):
    """The ChainPlan of ``chain(*jacobians)`` without contracting anything."""
    jacs = list(jacobians)
    _check_chain(jacs)
    if dense:
        jacs = [shape_only_dense(J) for J in jacs]
    return plan_only(lazy_chain(jacs)).plan
