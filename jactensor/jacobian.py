"""The Jacobian type: full-tensor in meaning (shape out.shape + in.shape), factored inside.

A Jacobian is a sum of terms. Each term is ``coef * einsum(factors)`` with one
label per axis of ``out + in``; the same label at several axes is a delta
(identity coupling), so ``dA[i,j]/dQ[r,s] = delta(i,r) K[s,j]`` is the single
factor K with labels (s, j) and axis labels (i, j, i, s). Nothing of the size
``prod(out + in)`` is allocated until ``dense()`` / ``np.asarray(J)`` asks.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import contract as _c
from .config import config
from .errors import JacobianTooLargeError, ShapeError

__all__ = ["Jacobian", "chain", "chain_plan", "ChainPlan", "check_bytes"]

ITEMSIZE = 8  # float64 throughout


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def check_bytes(nbytes, what, shape):
    """Refuse (before allocating) anything above config.max_jacobian_bytes."""
    limit = config.max_jacobian_bytes
    if nbytes > limit:
        raise JacobianTooLargeError(
            f"{what}: shape {tuple(shape)} would take {_fmt_bytes(nbytes)} as float64, above "
            f"config.max_jacobian_bytes = {_fmt_bytes(limit)}; nothing was allocated. Use jt.grad or "
            f"jt.vjp (reverse mode never builds the Jacobian), or raise the limit with "
            f"jt.config.override(max_jacobian_bytes=...)."
        )


class Term:
    """coef * einsum(factors) laid out on axis ``labels``; ``sizes`` maps every label to its length."""

    __slots__ = ("coef", "factors", "labels", "sizes")

    def __init__(self, coef, factors, labels, sizes):
        self.coef, self.factors, self.labels, self.sizes = coef, tuple(factors), tuple(labels), sizes

    def present(self):
        """Labels carried by some factor."""
        return {l for _, ls in self.factors for l in ls}

    def distinct(self):
        return tuple(dict.fromkeys(self.labels))

    def canonical(self):
        """Relabel to 0..k-1 (axis labels first), so equal structures give equal einsum specs."""
        order = dict.fromkeys(self.labels)
        for _, ls in self.factors:
            order.update(dict.fromkeys(ls))
        m = {l: i for i, l in enumerate(order)}
        return Term(self.coef, [(a, tuple(m[l] for l in ls)) for a, ls in self.factors],
                    tuple(m[l] for l in self.labels), {m[l]: s for l, s in self.sizes.items() if l in m})

    def compact(self, what="Jacobian"):
        """Contract all factors into one over the distinct axis labels they carry."""
        return contract_term(self, what)[0]


def _normalise_factor(arr, labels, sizes):
    """Squeeze broadcast (length-1) axes whose label is longer, so einsum sees true sizes."""
    arr = np.asarray(arr, dtype=np.float64)
    labels = tuple(labels)
    if arr.ndim != len(labels):
        raise ShapeError(f"factor of shape {arr.shape} given {len(labels)} labels {labels}")
    squeeze = tuple(k for k, (n, l) in enumerate(zip(arr.shape, labels)) if n == 1 and sizes.get(l, 1) != 1)
    if squeeze:
        arr = arr.reshape([n for k, n in enumerate(arr.shape) if k not in squeeze])
        labels = tuple(l for k, l in enumerate(labels) if k not in squeeze)
    for n, l in zip(arr.shape, labels):
        if sizes.setdefault(l, n) != n:
            raise ShapeError(f"label {l!r}: factor axis of length {n} against length {sizes[l]}")
    return arr, labels


class Jacobian:
    """A Jacobian of shape ``out_shape + in_shape``, kept as a sum of factored terms.

    ``np.asarray(J)`` / ``J.dense()`` materialise the tensor; ``J.as_matrix()`` gives
    the prod(out) x prod(in) matrix; ``J.nbytes`` is known before anything is built.
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
        fs = [_normalise_factor(a, ls, sizes) for a, ls in factors]
        term = Term(float(coef), fs, labels, sizes).canonical()
        return cls(out_shape, in_shape, [term], name=name)

    @classmethod
    def from_dense(cls, array, out_ndim, name=None):
        """Wrap a dense tensor whose first ``out_ndim`` axes are the output."""
        a = np.asarray(array, dtype=np.float64)
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
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self):
        """Bytes the dense tensor would take (float64), known without building it."""
        return self.size * ITEMSIZE

    @property
    def dtype(self):
        return np.dtype(np.float64)

    @property
    def stored_bytes(self):
        """Bytes the factored form actually holds."""
        return sum(a.nbytes for t in self.terms for a, _ in t.factors)

    def __repr__(self):
        return (f"Jacobian(out_shape={self.out_shape}, in_shape={self.in_shape}, terms={len(self.terms)}, "
                f"stored={_fmt_bytes(self.stored_bytes)}, dense={_fmt_bytes(self.nbytes)})")

    # ---- arithmetic -----------------------------------------------------------------
    def _check_same(self, other, op):
        if not isinstance(other, Jacobian) or other.shape != self.shape or other.out_shape != self.out_shape:
            got = getattr(other, "out_shape", None), getattr(other, "in_shape", None)
            raise ShapeError(f"Jacobian {op}: out/in shapes {self.out_shape}/{self.in_shape} against {got[0]}/{got[1]}")

    def __add__(self, other):
        self._check_same(other, "+")
        J = Jacobian(self.out_shape, self.in_shape, self.terms + other.terms, name=self.name)
        return J.merged() if len(J.terms) > config.max_terms else J

    def scaled(self, c):
        return Jacobian(self.out_shape, self.in_shape,
                        [Term(t.coef * c, t.factors, t.labels, t.sizes) for t in self.terms], name=self.name)

    def __neg__(self):
        return self.scaled(-1.0)

    def __sub__(self, other):
        return self + (-other)

    def __mul__(self, c):
        if not np.isscalar(c):
            return NotImplemented
        return self.scaled(float(c))

    __rmul__ = __mul__

    # ---- contraction ------------------------------------------------------------------
    def compact(self):
        """Contract each term to a single factor; equal delta patterns are summed into one."""
        groups = {}
        for t in self.terms:
            t = t.compact(self._what()).canonical()
            key = t.labels
            groups.setdefault(key, []).append(t)
        terms = [_sum_same_pattern(ts) for ts in groups.values()]
        J = Jacobian(self.out_shape, self.in_shape, terms, name=self.name)
        J.plan = self.plan
        return J.merged() if len(terms) > config.max_terms else J

    def merged(self):
        """One term: every term written into the finest delta pattern they share."""
        if len(self.terms) <= 1:
            return self.compact() if self.terms else self
        n = self.ndim
        keys = [tuple(t.labels[p] for t in self.terms) for p in range(n)]
        ids = {}
        pattern = tuple(ids.setdefault(k, len(ids)) for k in keys)
        sizes = {pattern[p]: s for p, s in enumerate(self.shape)}
        target = _embed(self.terms, pattern, sizes, self._what())
        labels = tuple(range(len(sizes)))
        term = Term(1.0, [(target, labels)], pattern, sizes)
        return Jacobian(self.out_shape, self.in_shape, [term], name=self.name)

    def densified(self):
        """The same Jacobian as a single dense factor (the naive materialise-everything route)."""
        return Jacobian.from_dense(self.dense(), len(self.out_shape), name=self.name)

    def dense(self):
        """The full tensor of shape out_shape + in_shape (checked against the memory limit first)."""
        check_bytes(self.nbytes, self._what(), self.shape)
        pattern = tuple(range(self.ndim))
        return _embed(self.terms, pattern, dict(zip(pattern, self.shape)), self._what())

    def __array__(self, dtype=None, copy=None):
        a = self.dense()
        return a if dtype is None else a.astype(dtype)

    def as_matrix(self):
        """The prod(out) x prod(in) matrix (e.g. the 9 x 9 of a 3 x 3 softmax)."""
        m = int(np.prod(self.out_shape, dtype=np.int64))
        return self.dense().reshape(m, -1)

    def vjp(self, g):
        """Contract a cotangent (shape out_shape) with J: shape in_shape, no dense J built."""
        G = Jacobian.from_dense(np.broadcast_to(g, self.out_shape), 0, name="cotangent")
        return chain(G, self).dense()

    def jvp(self, t):
        """Contract J with a tangent (shape in_shape): shape out_shape, no dense J built."""
        T = Jacobian.from_dense(np.broadcast_to(t, self.in_shape), len(self.in_shape), name="tangent")
        return chain(self, T).dense()

    def _what(self):
        return f"the Jacobian of {self.name or 'this step'} (out {self.out_shape}, in {self.in_shape})"


def _sum_same_pattern(terms):
    if len(terms) == 1:
        return terms[0]
    labels, sizes = terms[0].labels, terms[0].sizes
    union = set().union(*(t.present() for t in terms))
    keep = tuple(l for l in dict.fromkeys(labels) if l in union)
    acc = sum(t.coef * _arrange(t, keep) for t in terms)  # broadcasts to the full keep shape
    return Term(1.0, [(np.asarray(acc), keep)], labels, sizes)


def _arrange(term, keep):
    """The compact term's factor transposed to ``keep`` order with new axes where absent (ones if none)."""
    if not term.factors:
        return np.ones([1] * len(keep))
    (a, ls), = term.factors
    a = np.transpose(a, [ls.index(l) for l in keep if l in ls])
    return a.reshape([term.sizes[l] if l in ls else 1 for l in keep])


def _embed(terms, pattern, sizes, what):
    """Write the sum of terms into a zeros array over ``pattern``'s groups through diagonal views."""
    groups = tuple(dict.fromkeys(pattern))
    target = np.zeros([sizes[g] for g in groups])
    strides = dict(zip(groups, target.strides))
    for t in terms:
        t = t.compact(what)
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


# ---- chain ---------------------------------------------------------------------------------
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


def _product(A, B):
    terms = [_product_term(ta, tb, len(A.out_shape), len(A.in_shape)) for ta in A.terms for tb in B.terms]
    names = [n for n in (A.name, B.name) if n]
    return Jacobian(A.out_shape, B.in_shape, terms, name=" . ".join(names) or None)


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
        J = _product(J, B)
    return J


class _ShapeOnly:
    """Stands in for a factor when only its shape is needed (plans)."""

    def __init__(self, shape):
        self.shape = tuple(shape)


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


def _term_paths(t):
    """Chosen, forward-sequential and reverse-sequential costs for contracting one term."""
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


ORDERS = ("best", "forward", "reverse")


def _choose(opt, fwd, rev, order="best"):
    """(cost, which) of the order to use: forced, or the cheapest (None = opt_einsum's own path)."""
    forced = {"forward": (fwd, "fwd"), "reverse": (rev, "rev")}.get(order)
    return forced or min((opt, None), (rev, "rev"), (fwd, "fwd"), key=lambda x: x[0].flops)


def contract_term(t, what="Jacobian", order="best"):
    """Contract one term's factors into a single factor over the distinct axis labels they carry.

    order="best": the cheapest of opt_einsum's path and the two sequential orders (so never
    costlier than forward or reverse accumulation); "forward" / "reverse" force that order.
    Returns (term, (chosen, forward, reverse) PathCosts). The memory guard runs first.
    """
    if order not in ORDERS:
        raise ValueError(f"chain: order must be one of {ORDERS}; got {order!r}")
    opt, fwd, rev, keep = _term_paths(t)
    cost, which = _choose(opt, fwd, rev, order)
    if not t.factors or (len(t.factors) == 1 and t.factors[0][1] == keep):
        return t, (cost, fwd, rev)
    check_bytes(cost.largest * ITEMSIZE, f"{what} (largest contraction intermediate)", (cost.largest,))
    check_bytes(int(np.prod([t.sizes[l] for l in keep], dtype=np.int64)) * ITEMSIZE,
                f"{what} (contracted factor)", [t.sizes[l] for l in keep])
    ops = [a for a, _ in t.factors]
    labels = [ls for _, ls in t.factors]
    if which == "fwd":
        ops, labels = ops[::-1], labels[::-1]
    value = _c.contract(ops, labels, keep, _c.sequential_path(len(ops)) if which else None)
    return Term(t.coef, [(value, keep)], t.labels, t.sizes), (cost, fwd, rev)


def _contract_with_plan(J, order="best"):
    """Contract every term of a lazy product (see contract_term) and attach the summed ChainPlan."""
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
    return _contract_with_plan(lazy_chain(jacs), order)


def plan_only(J):
    """What contracting J would cost (the same choice as chain()), each term's result a shape placeholder."""
    chosen = forward = reverse = _c.ZERO_COST
    terms = []
    for t in J.terms:
        opt, fwd, rev, keep = _term_paths(t)
        chosen, forward, reverse = chosen + _choose(opt, fwd, rev)[0], forward + fwd, reverse + rev
        fs = [(_ShapeOnly([t.sizes[l] for l in keep]), keep)] if t.factors else []
        terms.append(Term(t.coef, fs, t.labels, t.sizes))
    out = Jacobian(J.out_shape, J.in_shape, terms, name=J.name)
    out.plan = ChainPlan(chosen, forward, reverse, len(J.terms), out.nbytes)
    return out


def shape_only_dense(J):
    """J as one dense factor of placeholder shape: plans the dense route without allocating it."""
    lab = tuple(range(J.ndim))
    return Jacobian(J.out_shape, J.in_shape, [Term(1.0, [(_ShapeOnly(J.shape), lab)], lab, dict(zip(lab, J.shape)))],
                    name=J.name)


def chain_plan(*jacobians, dense=False):
    """The ChainPlan of ``chain(*jacobians)`` without contracting anything."""
    jacs = list(jacobians)
    _check_chain(jacs)
    if dense:
        jacs = [shape_only_dense(J) for J in jacs]
    return plan_only(lazy_chain(jacs)).plan
