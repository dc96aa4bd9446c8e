"""Function transforms over traced programs: jacobian, hessian, grad, value_and_grad, vjp, jvp.

Conventions follow JAX: ``jacobian(f, argnums=0, has_aux=False)`` returns a function;
an int argnums gives one result, a tuple gives a tuple; the Jacobian of an output
leaf of shape O with respect to an input leaf of shape I has shape O + I; pytrees
(tuples, lists, dicts, namedtuples; ``None`` is an empty node) of arrays work as
arguments and outputs. Results never share memory with the caller's arrays.
"""
import numpy as np

from . import backends as _backends
from .backends import LAZY_TYPES
from .core import as_input
from .errors import ArgnumError, NotDifferentiableError, ShapeError
from .jacobian import Jacobian
from .memory import check_bytes, nbytes, numel
from .passes import (Traced, backward, basis_chunk, batch_plan, chain_accumulate, forward,  # noqa: F401
                     trace)
from .pytree import tree_flatten, tree_unflatten
from .tracer import Tracer

__all__ = ["jacobian", "jacrev", "jacfwd", "hessian", "grad", "value_and_grad", "vjp", "jvp"]

METHODS = ("chain", "rev", "fwd")
HESSIAN_METHODS = ("auto", "chain", "fwdrev")


# ---- argument handling --------------------------------------------------------------------------
def _argnums(name, argnums, nargs):
    single = isinstance(argnums, (int, np.integer)) and not isinstance(argnums, bool)
    nums = (argnums,) if single else argnums
    if not isinstance(nums, (tuple, list)) or not nums or \
            not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in nums):
        raise ArgnumError(f"{name}: argnums must be an int or a non-empty tuple of ints; got {argnums!r}")
    for a in nums:
        if not -nargs <= a < nargs:
            raise ArgnumError(f"{name}: argnums {a} is out of range for a function called with {nargs} positional "
                              f"argument(s)")
    nums = tuple(int(a) % nargs for a in nums)
    if len(set(nums)) != len(nums):
        raise ArgnumError(f"{name}: argnums {argnums!r} repeats an argument")
    return nums, single


def _check_method(name, method, allowed=METHODS):
    if method not in allowed:
        raise ValueError(f"{name}: method must be one of {', '.join(repr(m) for m in allowed)}; got {method!r}")


# ---- results never alias the caller's arrays -------------------------------------------------------
def _root(a):
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return id(a)


class _Fresh:
    """Copies any returned array that is (a view of) one of the caller's arrays or of an earlier result."""

    def __init__(self, externals):
        self.seen = {_root(a) for a in externals if isinstance(a, np.ndarray)}

    def __call__(self, x):
        if isinstance(x, Jacobian):
            for t in x.terms:
                t.factors = tuple((self(a), ls) for a, ls in t.factors)
            return x
        if isinstance(x, np.ndarray):
            r = _root(x)
            if r in self.seen or not x.flags.writeable:
                x = x.copy()
                r = id(x)
            self.seen.add(r)
        elif isinstance(x, np.generic):
            x = np.asarray(x)
        return x

    def tree(self, tree):
        leaves, d = tree_flatten(tree)
        return tree_unflatten(d, [self(l) for l in leaves])


def _externals(*trees):
    out = []
    for t in trees:
        out += tree_flatten(t)[0]
    return out


# ---- Jacobians by the three methods -----------------------------------------------------------------
def _nested(tr):
    return any(type(t.value) is Tracer for arg in tr.inputs for t in arg)


def _collect(tr):
    """Are the basis results gathered with primitives rather than written into numpy arrays? Inside another
    trace, and for lazy (jt.jit) values, whose in-place writes could not be recorded."""
    return _nested(tr) or any(type(t.value) in LAZY_TYPES for arg in tr.inputs for t in arg)


def _lazy_inputs(tr):
    """One input value per lazy backend in use (for backends.basis); empty for plain numpy."""
    return tuple(t.value for arg in tr.inputs for t in arg if type(t.value) in LAZY_TYPES)[:1]


def _jacobian_values(tr, method, dense, name, structured=False):
    """per_out[o][a][i]: the Jacobian of output leaf o w.r.t. leaf i of argument group a."""
    outs = [np.shape(tr.out_value(t)) for t in tr.outputs]
    ins = [[np.shape(t.value) for t in arg] for arg in tr.inputs]
    if not (structured and method == "chain"):
        for o, os in enumerate(outs):
            for a, arg in enumerate(ins):
                for s in arg:
                    check_bytes(nbytes(os + s), f"{name}: the Jacobian of output {o} w.r.t. an input of argument "
                                                f"group {a}", os + s)
    per_out = [[[None] * len(arg) for arg in ins] for _ in outs]
    if method == "chain":
        for o in range(len(outs)):
            for a, row in enumerate(chain_accumulate(tr, o, dense=dense, lazy=structured)):
                for i, J in enumerate(row):
                    # J is internal to this call: a whole-tensor factor made for it is handed out uncopied
                    per_out[o][a][i] = J if structured or J is None else J._dense(consume=True)
    elif method == "rev":
        _rev_values(tr, outs, ins, per_out, name)
    elif method == "fwd":
        _fwd_values(tr, outs, ins, per_out, name)
    else:
        _check_method(name, method)
    for o, os in enumerate(outs):
        for a, arg in enumerate(ins):
            for i, s in enumerate(arg):
                J = per_out[o][a][i]
                if J is None:
                    J = Jacobian.zeros(os, s, name="zero") if structured else np.zeros(os + s)
                elif structured and not isinstance(J, Jacobian):
                    J = Jacobian.from_dense(J, len(os), name=f"d(output {o})/d(input)")
                per_out[o][a][i] = J
    return per_out


def _rev_values(tr, outs, ins, per_out, name):
    from .ops.shape import concatenate, reshape
    nested = _collect(tr)
    lazies = _lazy_inputs(tr)
    for o, os in enumerate(outs):
        t_out = tr.outputs[o]
        if not tr.is_ours(t_out):
            continue  # a constant output: its Jacobians are zero, no basis is built
        m = numel(os)
        chunk = m if _nested(tr) else batch_plan(tr, m, "rev", f"{name} (reverse mode, output {o})", {t_out.seq})
        results = [[[] for _ in arg] for arg in ins]
        dest = None if nested else [[None] * len(arg) for arg in ins]
        for start in range(0, max(m, 1), max(chunk, 1)):
            stop = min(m, start + chunk)
            cots = [None] * len(outs)
            cots[o] = _backends.basis(basis_chunk, (start, stop, m, os), *lazies)
            for a, row in enumerate(backward(tr, cots)):
                for i, c in enumerate(row):
                    if c is None:
                        continue
                    if nested:
                        results[a][i].append(c)
                    else:
                        if dest[a][i] is None:
                            dest[a][i] = np.zeros((m,) + ins[a][i])
                        dest[a][i][start:stop] = c
            if m == 0:
                break
        for a in range(len(ins)):
            for i, s in enumerate(ins[a]):
                if nested and results[a][i]:
                    c = results[a][i][0] if len(results[a][i]) == 1 else concatenate(results[a][i], axis=0)
                    per_out[o][a][i] = reshape(c, os + s)
                elif not nested and dest[a][i] is not None:
                    per_out[o][a][i] = dest[a][i].reshape(os + s)


def _fwd_values(tr, outs, ins, per_out, name):
    from .ops.shape import concatenate, reshape, transpose
    nested = _collect(tr)
    lazies = _lazy_inputs(tr)
    used = {p.seq for node in tr.nodes() for _, p in node.parents} | \
        {t.seq for t in tr.outputs if tr.is_ours(t)}
    for a, arg in enumerate(ins):
        for i, s in enumerate(arg):
            leaf = tr.inputs[a][i]
            if leaf.seq not in used:
                continue  # the output never reads this input: zero Jacobians, no basis built
            m = numel(s)
            chunk = m if _nested(tr) else batch_plan(tr, m, "fwd", f"{name} (forward mode, input {a}/{i})", {leaf.seq})
            parts = [[] for _ in outs]
            dest = [None] * len(outs)
            for start in range(0, max(m, 1), max(chunk, 1)):
                stop = min(m, start + chunk)
                tangents = [[None] * len(x) for x in ins]
                tangents[a][i] = _backends.basis(basis_chunk, (start, stop, m, s), *lazies)
                for o, (os, t) in enumerate(zip(outs, forward(tr, tangents))):
                    if t is None:
                        continue
                    if nested:
                        parts[o].append(t)
                    else:
                        if dest[o] is None:
                            dest[o] = np.zeros((numel(os), m))
                        dest[o][:, start:stop] = np.reshape(t, (stop - start, numel(os))).T
                if m == 0:
                    break
            for o, os in enumerate(outs):
                n = numel(os)
                if nested and parts[o]:
                    t = parts[o][0] if len(parts[o]) == 1 else concatenate(parts[o], axis=0)
                    per_out[o][a][i] = reshape(transpose(reshape(t, (m, n))), os + s)
                elif not nested and dest[o] is not None:
                    per_out[o][a][i] = dest[o].reshape(os + s)


def _assemble(tr, per_out, single):
    """per_out[o][a][leaf] -> output tree of (argnum tuple of) input trees."""
    leaves = []
    for o in range(len(tr.outputs)):
        per_arg = [tree_unflatten(tr.in_defs[a], per_out[o][a]) for a in range(len(tr.inputs))]
        leaves.append(per_arg[0] if single else tuple(per_arg))
    return tree_unflatten(tr.out_def, leaves)


def _tag(fn, kind, f, **info):
    """Remember what a transformed function is (explain() and jit() read it)."""
    fn.__name__ = f"{kind}({getattr(f, '__name__', 'f')})"
    fn.__wrapped__ = f
    fn._jactensor = dict(info, kind=kind, f=f)
    return fn


def jacobian(f, argnums=0, has_aux=False, method="chain", dense=False, structured=False):
    """The full Jacobian of ``f``: for an output of shape O and an argument of shape I, shape O + I.

    method: "chain" (each primitive's full Jacobian, accumulated with chain(): the explicit
    route), "rev" (VJPs of the output's basis vectors, vectorised) or "fwd" (JVPs of the input's
    basis vectors, vectorised). All three give the same numbers. ``dense=True`` (chain only)
    materialises every per-op Jacobian (the naive route). ``structured=True`` returns every leaf
    as a :class:`Jacobian` (factored; ``np.asarray(J)`` is the dense array), and with
    method="chain" nothing dense is built at all. Without it, a Jacobian above
    ``config.max_jacobian_bytes`` raises JacobianTooLargeError before anything is allocated;
    rev and fwd process the basis in chunks that fit the limit.

    >>> import numpy as np, jactensor as jt
    >>> jt.jacobian(lambda x: x * x)(np.array([1.0, 2.0]))
    array([[2., 0.],
           [0., 4.]])
    """
    _check_method("jacobian", method)

    def jac_fn(*args, **kwargs):
        nums, single = _argnums("jacobian", argnums, len(args))
        tr = trace(f, args, nums, has_aux, "jacobian", kwargs)
        per_out = _jacobian_values(tr, method, dense, "jacobian", structured)
        res = _assemble(tr, per_out, single)
        fresh = _Fresh(_externals(args, kwargs))
        res = fresh.tree(res)
        return (res, fresh.tree(tr.aux)) if has_aux else res
    return _tag(jac_fn, "jacobian", f, argnums=argnums, has_aux=has_aux, method=method, dense=dense,
                structured=structured)


def jacrev(f, argnums=0, has_aux=False):
    """``jacobian(f, method="rev")``: vectorised VJPs of the output's basis (like jax.jacrev)."""
    return jacobian(f, argnums, has_aux, method="rev")


def jacfwd(f, argnums=0, has_aux=False):
    """``jacobian(f, method="fwd")``: vectorised JVPs of the input's basis (like jax.jacfwd)."""
    return jacobian(f, argnums, has_aux, method="fwd")


# ---- hessian ---------------------------------------------------------------------------------
def hessian(f, argnums=0, has_aux=False, method="auto", structured=False):
    """Second derivative, shape out.shape + in.shape + in.shape (JAX's convention).

    method: "chain" (the Jacobian of the recorded gradient program, accumulated with
    ``chain()``: structured factors, often far cheaper), "fwdrev" (forward mode over
    reverse mode through differentiable VJP/JVP rules, like jax.hessian) or "auto" (the
    cheaper of the two by the planner's FLOP estimate; ``jt.explain(jt.hessian(f), *args)``
    shows both estimates and the choice). ``structured=True`` returns :class:`Jacobian`
    leaves (with "chain", nothing dense is built). With tuple argnums the result is nested
    as in JAX: ``H[i][j]`` is the block d2f / dx_i dx_j.
    """
    _check_method("hessian", method, HESSIAN_METHODS)

    def hess_fn(*args, **kwargs):
        nums, single = _argnums("hessian", argnums, len(args))
        an = nums[0] if single else nums
        inner = jacobian(f, an, has_aux=has_aux, method="rev")
        tr = trace(inner, args, nums, has_aux, "hessian", kwargs)
        chosen = method if method != "auto" else hessian_costs(tr)["chosen"]
        outer = "chain" if chosen == "chain" else "fwd"
        per_out = _jacobian_values(tr, outer, False, "hessian", structured)
        fresh = _Fresh(_externals(args, kwargs))
        res = fresh.tree(_assemble(tr, per_out, single))
        return (res, fresh.tree(tr.aux)) if has_aux else res
    return _tag(hess_fn, "hessian", f, argnums=argnums, has_aux=has_aux, method=method, structured=structured)


def hessian_costs(tr):
    """Planner's FLOP estimates of the two Hessian routes over a traced gradient program ``tr``:
    "chain" (the summed chain plans of the structured Jacobians) and "fwdrev" (one JVP pass per
    input element, each node's JVP costed as its Jacobian contracted with a tangent)."""
    from . import contract as _c
    plans = []
    for o in range(len(tr.outputs)):
        chain_accumulate(tr, o, plans=plans, symbolic=True)
    chain_flops = sum(p.chosen.flops for p in plans)
    m_in = sum(numel(np.shape(t.value)) for arg in tr.inputs for t in arg)
    per_vector = 0
    for node in tr.nodes():
        if node.prim is None:
            continue
        for k, _ in node.parents:
            J = node.prim._rule(node.prim.jac_rules, "Jacobian", k)(node.value, *node.args, **node.params)
            n_out = len(J.out_shape)
            for t in J.terms:
                labels = [ls for _, ls in t.factors] + [t.labels[n_out:]]
                shapes = [a.shape for a, _ in t.factors] + [J.in_shape]
                present = {l for ls in labels for l in ls}
                keep = tuple(l for l in dict.fromkeys(t.labels[:n_out]) if l in present)
                spread = numel(t.sizes[l] for l in dict.fromkeys(t.labels[:n_out]) if l not in present)
                per_vector += max(_c.plan(shapes, labels, keep).flops * spread, numel(J.out_shape))
    fwd_flops = m_in * per_vector
    # fwdrev must be estimated at least twice as cheap to be chosen: its estimate counts arithmetic only, not
    # the traffic of carrying n basis tangents through every intermediate, and the chain plan is an upper bound
    # (it assumes every sum goes dense)
    return {"chain": chain_flops, "fwdrev": fwd_flops,
            "chosen": "chain" if chain_flops <= 2 * fwd_flops else "fwdrev"}


# ---- grad, vjp, jvp -------------------------------------------------------------------------------
def _scalar_check(name, tr):
    if len(tr.outputs) != 1 or tr.out_def is not None or np.shape(tr.out_value(tr.outputs[0])) != ():
        shapes = [np.shape(tr.out_value(t)) for t in tr.outputs]
        kind = "pytree" if tr.out_def is None or not isinstance(tr.out_def.kind, type) else tr.out_def.kind.__name__
        what = f"shape {shapes[0]}" if tr.out_def is None else f"a {kind} of shapes {shapes}"
        raise NotDifferentiableError(
            f"{name}: f must return a scalar (shape ()), but it returned {what}. Use jt.jacobian for the full "
            f"Jacobian or jt.vjp to pull back a cotangent; or reduce the output (e.g. jt.sum).")


def value_and_grad(f, argnums=0, has_aux=False):
    """(f(*args), gradient) in one reverse pass; with has_aux, ((value, aux), gradient)."""
    def vg(*args, **kwargs):
        nums, single = _argnums("value_and_grad", argnums, len(args))
        tr = trace(f, args, nums, has_aux, "grad", kwargs)
        _scalar_check("grad", tr)
        cots = backward(tr, [np.ones(())])
        grads = [tree_unflatten(tr.in_defs[a], [np.zeros(np.shape(t.value)) if c is None else c
                                                for t, c in zip(tr.inputs[a], row)])
                 for a, row in enumerate(cots)]
        fresh = _Fresh(_externals(args, kwargs))
        g = fresh.tree(grads[0] if single else tuple(grads))
        value = fresh.tree(tr.out_values())
        return ((value, fresh.tree(tr.aux)) if has_aux else value), g
    return _tag(vg, "value_and_grad", f, argnums=argnums, has_aux=has_aux)


def grad(f, argnums=0, has_aux=False):
    """Gradient of a scalar-valued ``f`` by reverse mode (VJP rules only; no Jacobian is built)."""
    vg = value_and_grad(f, argnums, has_aux)

    def g(*args, **kwargs):
        (value, g_) = vg(*args, **kwargs)
        return (g_, value[1]) if has_aux else g_
    return _tag(g, "grad", f, argnums=argnums, has_aux=has_aux)


def vjp(f, *primals, has_aux=False, argnums=None):
    """(f(*primals), vjp_fn[, aux]); vjp_fn(cotangent) returns one cotangent per primal (or per argnum)."""
    nums = tuple(range(len(primals))) if argnums is None else _argnums("vjp", argnums, len(primals))[0]
    tr = trace(f, primals, nums, has_aux, "vjp")
    fresh = _Fresh(_externals(primals))
    out = fresh.tree(tr.out_values())

    def vjp_fn(cotangent):
        leaves, d = tree_flatten(cotangent)
        if d != tr.out_def or len(leaves) != len(tr.outputs):
            raise ShapeError(f"vjp_fn: the cotangent must have the structure of f's output ({len(tr.outputs)} "
                             f"leaves); got {len(leaves)} leaves")
        cots = []
        for k, (t, g) in enumerate(zip(tr.outputs, leaves)):
            g = as_input("vjp_fn", f"cotangent {k}", g)
            want = np.shape(tr.out_value(t))
            if np.shape(g) != want:
                raise ShapeError(f"vjp_fn: cotangent {k} has shape {np.shape(g)} but the output has shape {want}")
            cots.append(g if type(g) in LAZY_TYPES else np.asarray(g))  # a lazy (jt.jit) value stays recorded
        res = backward(tr, cots)
        out_ = tuple(tree_unflatten(tr.in_defs[a], [np.zeros(np.shape(t.value)) if c is None else c
                                                    for t, c in zip(tr.inputs[a], row)])
                     for a, row in enumerate(res))
        return _Fresh(_externals(primals, cotangent)).tree(out_)
    return (out, vjp_fn, fresh.tree(tr.aux)) if has_aux else (out, vjp_fn)


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
            v = as_input("jvp", f"tangent {a}", v)
            v = v if type(v) in LAZY_TYPES else np.asarray(v)  # a lazy (jt.jit) value stays recorded
            if v.shape != np.shape(x.value):
                raise ShapeError(f"jvp: tangent {a} has shape {v.shape} but primal {a} has shape {np.shape(x.value)}")
            row.append(v)
        tans.append(row)
    res = forward(tr, tans)
    t_out = tree_unflatten(tr.out_def, [np.zeros(np.shape(tr.out_value(o))) if r is None else r
                                        for o, r in zip(tr.outputs, res)])
    fresh = _Fresh(_externals(primals, tangents))
    out = fresh.tree(tr.out_values())
    t_out = fresh.tree(t_out)
    return (out, t_out, fresh.tree(tr.aux)) if has_aux else (out, t_out)
