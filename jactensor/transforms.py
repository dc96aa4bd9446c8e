"""Function transforms over traced programs: jacobian, hessian, grad, value_and_grad, vjp, jvp.

Conventions follow JAX: ``jacobian(f, argnums=0, has_aux=False)`` returns a function;
an int argnums gives one result, a tuple gives a tuple; the Jacobian of an output
leaf of shape O with respect to an input leaf of shape I has shape O + I; pytrees
(tuples, lists, dicts) of arrays work as arguments and outputs.
"""
import numpy as np

from .config import config
from .core import as_input
from .errors import ArgnumError, NotDifferentiableError, ShapeError
from .jacobian import (ITEMSIZE, Jacobian, _contract_with_plan, _product, check_bytes, plan_only,
                       shape_only_dense)
from .trace import Tracer, new_level, toposort

__all__ = ["jacobian", "jacrev", "jacfwd", "hessian", "grad", "value_and_grad", "vjp", "jvp",
           "trace", "Traced", "tree_flatten", "tree_unflatten"]


# ---- pytrees ---------------------------------------------------------------------------------
def tree_flatten(tree):
    """Leaves (depth first; dict keys sorted) and a structure to rebuild the tree."""
    if isinstance(tree, (tuple, list)):
        leaves, defs = [], []
        for t in tree:
            l, d = tree_flatten(t)
            leaves += l
            defs.append(d)
        return leaves, (type(tree), tuple(defs))
    if isinstance(tree, dict):
        keys = sorted(tree)
        leaves, defs = [], []
        for k in keys:
            l, d = tree_flatten(tree[k])
            leaves += l
            defs.append(d)
        return leaves, (dict, (tuple(keys), tuple(defs)))
    return [tree], None


def tree_unflatten(treedef, leaves):
    if treedef is None:  # a single array, the common case
        return leaves[0]
    it = iter(leaves)
    out = _build(treedef, it)
    return out


def _build(d, it):
    if d is None:
        return next(it)
    kind, rest = d
    if kind is dict:
        keys, defs = rest
        return {k: _build(s, it) for k, s in zip(keys, defs)}
    return kind(_build(s, it) for s in rest)


# ---- tracing -----------------------------------------------------------------------------
def _argnums(name, argnums, nargs):
    single = isinstance(argnums, (int, np.integer)) and not isinstance(argnums, bool)
    nums = (argnums,) if single else argnums
    if not isinstance(nums, (tuple, list)) or not all(isinstance(a, (int, np.integer)) for a in nums) or not nums:
        raise ArgnumError(f"{name}: argnums must be an int or a non-empty tuple of ints; got {argnums!r}")
    for a in nums:
        if not -nargs <= a < nargs:
            raise ArgnumError(f"{name}: argnums {a} is out of range for a function called with {nargs} positional "
                              f"argument(s)")
    return tuple(int(a) % nargs for a in nums), single


class Traced:
    """A program recorded at one trace level: inputs per argnum, output leaves, aux."""

    def __init__(self, level, inputs, in_defs, outputs, out_def, aux):
        self.level, self.inputs, self.in_defs = level, inputs, in_defs
        self.outputs, self.out_def, self.aux = outputs, out_def, aux

    def out_value(self, t):
        return t.value if self.is_ours(t) else t

    def is_ours(self, t):
        return type(t) is Tracer and t.level == self.level

    def out_values(self):
        return tree_unflatten(self.out_def, [self.out_value(t) for t in self.outputs])

    def nodes(self):
        return toposort([t for t in self.outputs if self.is_ours(t)])


def trace(f, args, argnums=(0,), has_aux=False, name="trace", kwargs=None):
    """Run ``f`` on ``args`` with the leaves of ``args[argnums]`` traced (keyword arguments are passed
    through as constants); returns a Traced."""
    level = new_level()
    args = list(args)
    inputs, in_defs = [], []
    for a in argnums:
        leaves, d = tree_flatten(args[a])
        boxed = []
        for leaf in leaves:
            v = as_input(name, f"argument {a}", leaf)
            v = np.asarray(v) if type(v) is float else v
            boxed.append(Tracer(v, level))
        inputs.append(boxed)
        in_defs.append(d)
        args[a] = tree_unflatten(d, boxed)
    out = f(*args, **(kwargs or {}))
    aux = None
    if has_aux:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise NotDifferentiableError(f"{name}: has_aux=True needs f to return a pair (output, aux)")
        out, aux = out
        aux = tree_unflatten(*_strip(aux, level))
    leaves, out_def = tree_flatten(out)
    leaves = [np.asarray(l) if not isinstance(l, Tracer) else l for l in leaves]
    return Traced(level, inputs, in_defs, leaves, out_def, aux)


def _strip(tree, level):
    leaves, d = tree_flatten(tree)
    return d, [l.value if type(l) is Tracer and l.level == level else l for l in leaves]


# ---- the two passes ----------------------------------------------------------------------------
def backward(tr, cotangents):
    """Reverse pass: cotangents (one per output leaf, None for zero; any leading batch axes)
    -> cotangents per input leaf (None where unreached). Only VJP rules run."""
    cot = {}
    for t, g in zip(tr.outputs, cotangents):
        if g is not None and tr.is_ours(t):
            k = t.seq
            cot[k] = g if k not in cot else cot[k] + g
    for node in reversed(tr.nodes()):
        prim = node.prim
        if prim is None:
            continue
        g = cot.pop(node.seq, None)
        if g is None:
            continue
        rules, ans, args, params = prim.vjp_rules, node.value, node.args, node.params
        for k, parent in node.parents:
            try:
                rule = rules[k]
            except IndexError:
                rule = None
            c = (rule or prim._rule(rules, "VJP", k))(g, ans, *args, **params)
            p = parent.seq
            old = cot.get(p)
            cot[p] = c if old is None else old + c
    return [[cot.get(t.seq) for t in arg] for arg in tr.inputs]


def forward(tr, tangents):
    """Forward pass over the recorded graph: tangents per input leaf (None for zero; any leading
    batch axes) -> tangent per output leaf (None where independent). Only JVP rules run."""
    tan = {}
    for arg, ts in zip(tr.inputs, tangents):
        for t, v in zip(arg, ts):
            if v is not None:
                tan[t.seq] = v
    for node in tr.nodes():
        if node.prim is None:
            continue
        acc = None
        for k, parent in node.parents:
            v = tan.get(parent.seq)
            if v is None:
                continue
            y = node.prim._rule(node.prim.jvp_rules, "JVP", k)(v, node.value, *node.args, **node.params)
            acc = y if acc is None else acc + y
        if acc is not None:
            tan[node.seq] = acc
    return [tan.get(t.seq) if tr.is_ours(t) else None for t in tr.outputs]


def chain_accumulate(tr, out_index, dense=False, plans=None, symbolic=False):
    """Structured Jacobians of output leaf ``out_index`` w.r.t. every input leaf, by chain().

    Each recorded primitive contributes its full Jacobian; they are multiplied lazily
    along the graph (so a chain-shaped stretch becomes one einsum whose order opt_einsum
    picks) and contracted where paths meet, where their contributions are summed.
    ``dense=True`` materialises every per-op Jacobian and contracts step by step.
    ``symbolic=True`` only plans: factors become shapes and nothing is contracted.
    """
    out = tr.outputs[out_index]
    oshape = np.shape(tr.out_value(out))
    if not tr.is_ours(out):
        return [[None for _ in arg] for arg in tr.inputs]
    adj = {out.seq: Jacobian.identity(oshape, name="output")}

    def settle(J):
        J = plan_only(J) if symbolic else _contract_with_plan(J)
        if plans is not None:
            plans.append(J.plan)
        return J

    def add(A, B):
        A = A if _settled(A) else settle(A)
        B = B if _settled(B) else settle(B)
        if symbolic:
            return _symbolic_sum(A, B)
        return A + B

    for node in reversed(tr.nodes()):
        if node.prim is None:
            continue
        A = adj.pop(node.seq, None)
        if A is None:
            continue
        for k, parent in node.parents:
            if any(type(x) is Tracer for x in node.args) or type(node.value) is Tracer:
                raise NotDifferentiableError("jacobian(method='chain') cannot run inside another transform; "
                                             "use method='rev' or 'fwd' (e.g. for hessian)")
            Jk = node.prim._rule(node.prim.jac_rules, "Jacobian", k)(node.value, *node.args, **node.params)
            Jk.name = f"{node.prim.name} w.r.t. argument {k}"
            if dense:
                Jk = shape_only_dense(Jk) if symbolic else Jk.densified()
                contrib = settle(_product(A, Jk))
            else:
                contrib = _product(A, Jk)
                if len(contrib.terms) > config.max_terms:
                    contrib = settle(contrib)
            p = parent.seq
            adj[p] = add(adj[p], contrib) if p in adj else contrib
    res = []
    for arg in tr.inputs:
        row = []
        for t in arg:
            J = adj.get(t.seq)
            row.append(None if J is None else (J if _settled(J) else settle(J)))
        res.append(row)
    return res


def _symbolic_sum(A, B):
    terms = A.terms + B.terms
    if len(terms) <= config.max_terms:
        return Jacobian(A.out_shape, A.in_shape, terms, name=A.name)
    return shape_only_dense(A)  # planning: assume the sum goes dense (an upper bound)


def _settled(J):
    return all(len(t.factors) <= 1 for t in J.terms)


# ---- user-facing transforms ---------------------------------------------------------------------
def _zeros_jac(oshape, ishape, what):
    check_bytes(int(np.prod(oshape + ishape, dtype=np.int64)) * ITEMSIZE, what, oshape + ishape)
    return np.zeros(oshape + ishape)


def _assemble(tr, per_out, single):
    """per_out[o][a][leaf] -> output tree of (argnum tuple of) input trees."""
    leaves = []
    for o in range(len(tr.outputs)):
        per_arg = [tree_unflatten(tr.in_defs[a], per_out[o][a]) for a in range(len(tr.inputs))]
        leaves.append(per_arg[0] if single else tuple(per_arg))
    return tree_unflatten(tr.out_def, leaves)


def _check_batched(tr, m, name, what):
    """The vectorised passes carry m basis vectors through every intermediate: refuse before starting
    if the largest of those batched arrays would exceed the memory limit."""
    biggest = max((t for t in tr.nodes()), key=lambda t: np.size(t.value), default=None)
    if biggest is not None:
        shape = (m,) + np.shape(biggest.value)
        check_bytes(int(np.prod(shape, dtype=np.int64)) * ITEMSIZE,
                    f"{name}: {m} batched {what} through the intermediate "
                    f"{biggest.prim.name if biggest.prim else 'input'} of shape {np.shape(biggest.value)}", shape)


def _jacobian_values(tr, method, dense, name):
    from .ops.shape import reshape, transpose
    outs = [np.shape(tr.out_value(t)) for t in tr.outputs]
    ins = [[np.shape(t.value) for t in arg] for arg in tr.inputs]
    for o, os in enumerate(outs):
        for a, arg in enumerate(ins):
            for s in arg:
                check_bytes(int(np.prod(os + s, dtype=np.int64)) * ITEMSIZE,
                            f"{name}: the Jacobian of output {o} w.r.t. an input of argument group {a}", os + s)
    per_out = [[[None] * len(arg) for arg in ins] for _ in outs]
    if method == "chain":
        for o in range(len(outs)):
            Js = chain_accumulate(tr, o, dense=dense)
            for a, row in enumerate(Js):
                for i, J in enumerate(row):
                    per_out[o][a][i] = J.dense() if J is not None else None
    elif method == "rev":
        for o, os in enumerate(outs):
            m = int(np.prod(os, dtype=np.int64))
            _check_batched(tr, m, name, "cotangents")
            cots = [None] * len(outs)
            cots[o] = np.eye(m).reshape((m,) + os)
            res = backward(tr, cots)
            for a, row in enumerate(res):
                for i, c in enumerate(row):
                    per_out[o][a][i] = None if c is None else reshape(c, os + ins[a][i])
    elif method == "fwd":
        for a, arg in enumerate(ins):
            for i, s in enumerate(arg):
                m = int(np.prod(s, dtype=np.int64))
                _check_batched(tr, m, name, "tangents")
                tangents = [[None] * len(x) for x in ins]
                tangents[a][i] = np.eye(m).reshape((m,) + s)
                res = forward(tr, tangents)
                for o, (os, t) in enumerate(zip(outs, res)):
                    if t is None:
                        continue
                    n = int(np.prod(os, dtype=np.int64))
                    per_out[o][a][i] = reshape(transpose(reshape(t, (m, n))), os + s)
    else:
        raise ValueError(f"{name}: method must be 'chain', 'rev' or 'fwd'; got {method!r}")
    for o, os in enumerate(outs):
        for a, arg in enumerate(ins):
            for i, s in enumerate(arg):
                if per_out[o][a][i] is None:
                    per_out[o][a][i] = _zeros_jac(os, s, name)
    return per_out


def jacobian(f, argnums=0, has_aux=False, method="chain", dense=False):
    """The full Jacobian of ``f``: for an output of shape O and an argument of shape I, shape O + I.

    method: "chain" (each primitive's full Jacobian, accumulated with chain(): the explicit
    route), "rev" (one VJP per output element, vectorised) or "fwd" (one JVP per input
    element, vectorised). All three give the same numbers. ``dense=True`` (chain only)
    materialises every per-op Jacobian (the naive route). A Jacobian above
    ``config.max_jacobian_bytes`` raises JacobianTooLargeError before anything is allocated.

    >>> import numpy as np, jactensor as jt
    >>> jt.jacobian(lambda x: x * x)(np.array([1.0, 2.0]))
    array([[2., 0.],
           [0., 4.]])
    """
    def jac_fn(*args, **kwargs):
        nums, single = _argnums("jacobian", argnums, len(args))
        tr = trace(f, args, nums, has_aux, "jacobian", kwargs)
        per_out = _jacobian_values(tr, method, dense, "jacobian")
        res = _assemble(tr, per_out, single)
        return (res, tr.aux) if has_aux else res
    jac_fn.__name__ = f"jacobian({getattr(f, '__name__', 'f')})"
    return jac_fn


def jacrev(f, argnums=0, has_aux=False):
    """``jacobian(f, method="rev")``: one vectorised VJP per output element (like jax.jacrev)."""
    return jacobian(f, argnums, has_aux, method="rev")


def jacfwd(f, argnums=0, has_aux=False):
    """``jacobian(f, method="fwd")``: one vectorised JVP per input element (like jax.jacfwd)."""
    return jacobian(f, argnums, has_aux, method="fwd")


def hessian(f, argnums=0, has_aux=False):
    """Second derivative, shape out.shape + in.shape + in.shape (JAX's convention): the Jacobian
    (forward mode) of the Jacobian (reverse mode), both through differentiable VJP/JVP rules."""
    def hess_fn(*args, **kwargs):
        nums, single = _argnums("hessian", argnums, len(args))
        inner = jacobian(f, nums if not single else nums[0], has_aux=has_aux, method="rev")
        outer = jacobian(inner, nums if not single else nums[0], has_aux=has_aux, method="fwd")
        return outer(*args, **kwargs)
    return hess_fn


def _scalar_check(name, tr):
    if len(tr.outputs) != 1 or tr.out_def is not None or np.shape(tr.out_value(tr.outputs[0])) != ():
        shapes = [np.shape(tr.out_value(t)) for t in tr.outputs]
        what = f"shape {shapes[0]}" if tr.out_def is None else f"a {tr.out_def[0].__name__} of shapes {shapes}"
        raise NotDifferentiableError(
            f"{name}: f must return a scalar (shape ()), but it returned {what}. Use jt.jacobian for the full "
            f"Jacobian or jt.vjp to pull back a cotangent; or reduce the output (e.g. jt.sum).")


def value_and_grad(f, argnums=0, has_aux=False):
    """(f(*args), gradient) in one reverse pass; with has_aux, ((value, aux), gradient)."""
    def vg(*args, **kwargs):
        nums, single = _argnums("value_and_grad", argnums, len(args))
        tr = trace(f, args, nums, has_aux, "grad", kwargs)
        _scalar_check("grad", tr)
        (cots,) = [backward(tr, [np.ones(())])]
        grads = [tree_unflatten(tr.in_defs[a], [np.zeros(np.shape(t.value)) if c is None else c
                                                for t, c in zip(tr.inputs[a], row)])
                 for a, row in enumerate(cots)]
        g = grads[0] if single else tuple(grads)
        value = tr.out_values()
        return ((value, tr.aux) if has_aux else value), g
    return vg


def grad(f, argnums=0, has_aux=False):
    """Gradient of a scalar-valued ``f`` by reverse mode (VJP rules only; no Jacobian is built)."""
    vg = value_and_grad(f, argnums, has_aux)

    def g(*args, **kwargs):
        (value, g_) = vg(*args, **kwargs)
        return (g_, value[1]) if has_aux else g_
    return g


def vjp(f, *primals, has_aux=False, argnums=None):
    """(f(*primals), vjp_fn[, aux]); vjp_fn(cotangent) returns one cotangent per primal (or per argnum)."""
    nums = tuple(range(len(primals))) if argnums is None else _argnums("vjp", argnums, len(primals))[0]
    tr = trace(f, primals, nums, has_aux, "vjp")
    out = tr.out_values()

    def vjp_fn(cotangent):
        leaves, d = tree_flatten(cotangent)
        if d != tr.out_def or len(leaves) != len(tr.outputs):
            raise ShapeError("vjp_fn: the cotangent must have the structure of f's output")
        cots = []
        for k, (t, g) in enumerate(zip(tr.outputs, leaves)):
            g = as_input("vjp_fn", f"cotangent {k}", g)
            want = np.shape(tr.out_value(t))
            if np.shape(g) != want:
                raise ShapeError(f"vjp_fn: cotangent {k} has shape {np.shape(g)} but the output has shape {want}")
            cots.append(np.asarray(g))
        res = backward(tr, cots)
        return tuple(tree_unflatten(tr.in_defs[a], [np.zeros(np.shape(t.value)) if c is None else c
                                                    for t, c in zip(tr.inputs[a], row)])
                     for a, row in enumerate(res))
    return (out, vjp_fn, tr.aux) if has_aux else (out, vjp_fn)


def jvp(f, primals, tangents, has_aux=False):
    """(f(*primals), J tangents[, aux]): forward mode, JVP rules only."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ShapeError(f"jvp: {len(primals)} primal(s) but {len(tangents)} tangent(s)")
    nums = tuple(range(len(primals)))
    tr = trace(f, primals, nums, has_aux, "jvp")
    tans = []
    for a, (arg, t) in enumerate(zip(tr.inputs, tangents)):
        leaves, d = tree_flatten(t)
        if d != tr.in_defs[a] or len(leaves) != len(arg):
            raise ShapeError(f"jvp: tangent {a} must have the structure of primal {a}")
        row = []
        for x, v in zip(arg, leaves):
            v = np.asarray(as_input("jvp", f"tangent {a}", v))
            if v.shape != np.shape(x.value):
                raise ShapeError(f"jvp: tangent {a} has shape {v.shape} but primal {a} has shape {np.shape(x.value)}")
            row.append(v)
        tans.append(row)
    res = forward(tr, tans)
    t_out = tree_unflatten(tr.out_def, [np.zeros(np.shape(tr.out_value(o))) if r is None else r
                                        for o, r in zip(tr.outputs, res)])
    out = tr.out_values()
    return (out, t_out, tr.aux) if has_aux else (out, t_out)
