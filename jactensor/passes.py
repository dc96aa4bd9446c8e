"""The passes over a recorded program: tracing it, the reverse (VJP) pass, the forward (JVP)
pass, and the accumulation of structured Jacobians with ``chain()``.

The batched passes carry many cotangents or tangents at once (one per basis vector of a
Jacobian). ``batch_plan`` measures the largest set of them alive at any time (each is
released after its last use) and splits the basis into chunks that fit the memory limit.
"""
import numpy as np

from .chain import contract_with_plan, plan_only, product, shape_only_dense
from .config import config
from .core import as_input, check_finite
from .errors import JacobianTooLargeError, NotDifferentiableError
from .jacobian import Jacobian, _growth
from .memory import ITEMSIZE, fmt_bytes, numel
from .pytree import tree_flatten, tree_unflatten
from .backends import LAZY_TYPES
from .tracer import Tracer, new_level, release_level, toposort

__all__ = ["Traced", "trace", "backward", "forward", "chain_accumulate", "batch_plan"]


class Traced:
    """A program recorded at one trace level: inputs per argnum, output leaves, aux."""

    def __init__(self, level, inputs, in_defs, outputs, out_def, aux, name="f"):
        self.level, self.inputs, self.in_defs = level, inputs, in_defs
        self.outputs, self.out_def, self.aux, self.name = outputs, out_def, aux, name
        self._nodes = None

    def out_value(self, t):
        return t.value if self.is_ours(t) else t

    def is_ours(self, t):
        return type(t) is Tracer and t.level == self.level

    def out_values(self):
        return tree_unflatten(self.out_def, [self.out_value(t) for t in self.outputs])

    def nodes(self):
        if self._nodes is None:
            self._nodes = toposort([t for t in self.outputs if self.is_ours(t)])
        return self._nodes

    def step(self, node):
        """1-based position of ``node`` among the recorded primitive calls (the numbering explain() prints)."""
        calls = [n.seq for n in self.nodes() if n.prim is not None]
        return calls.index(node.seq) + 1 if node.seq in calls else 0


def _fname(f):
    return getattr(f, "__name__", None) or type(f).__name__


def trace(f, args, argnums=(0,), has_aux=False, name="trace", kwargs=None):
    """Run ``f`` on ``args`` with the leaves of ``args[argnums]`` traced (keyword arguments are passed
    through as constants); returns a Traced."""
    level = new_level(f"{name}({_fname(f)})")
    try:
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
            aux = _strip(aux, level)
        leaves, out_def = tree_flatten(out)
        leaves = [l if isinstance(l, Tracer) else v if type(v := as_input(name, "output", l)) in LAZY_TYPES
                  else np.asarray(v) for l in leaves]  # a lazy (jt.jit) output stays recorded
        return Traced(level, inputs, in_defs, leaves, out_def, aux, _fname(f))
    finally:
        release_level(level)


def _strip(tree, level):
    leaves, d = tree_flatten(tree)
    return tree_unflatten(d, [l.value if type(l) is Tracer and l.level == level else l for l in leaves])


# ---- the reverse pass ---------------------------------------------------------------------------
def backward(tr, cotangents):
    """Reverse pass: cotangents (one per output leaf, None for zero; any leading batch axes)
    -> cotangents per input leaf (None where unreached). Only VJP rules run; each node's
    cotangent is released as soon as its rules have run."""
    cot = {}
    check = config.check_nan
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
            if check:
                check_finite(c, f"the VJP of {prim.name} (argument {k})",
                             f"step {tr.step(node)} of the program traced from {tr.name}")
            p = parent.seq
            old = cot.get(p)
            cot[p] = c if old is None else old + c
    return [[cot.get(t.seq) for t in arg] for arg in tr.inputs]


# ---- the forward pass ---------------------------------------------------------------------------
def _last_uses(tr):
    """seq -> seq of the last node that reads it (outputs are read at the end)."""
    last = {}
    for node in tr.nodes():
        for _, p in node.parents:
            last[p.seq] = node.seq
    for t in tr.outputs:
        if tr.is_ours(t):
            last[t.seq] = float("inf")
    return last


def forward(tr, tangents):
    """Forward pass over the recorded graph: tangents per input leaf (None for zero; any leading
    batch axes) -> tangent per output leaf (None where independent). Only JVP rules run; a
    tangent is released right after the last node that reads it."""
    tan = {}
    check = config.check_nan
    for arg, ts in zip(tr.inputs, tangents):
        for t, v in zip(arg, ts):
            if v is not None:
                tan[t.seq] = v
    last = _last_uses(tr)
    for node in tr.nodes():
        if node.prim is None:
            continue
        acc = None
        for k, parent in node.parents:
            v = tan.get(parent.seq)
            if v is None:
                continue
            y = node.prim._rule(node.prim.jvp_rules, "JVP", k)(v, node.value, *node.args, **node.params)
            if check:
                check_finite(y, f"the JVP of {node.prim.name} (argument {k})",
                             f"step {tr.step(node)} of the program traced from {tr.name}")
            acc = y if acc is None else acc + y
        for _, parent in node.parents:
            if last.get(parent.seq) == node.seq:
                tan.pop(parent.seq, None)
        if acc is not None:
            tan[node.seq] = acc
    return [tan.get(t.seq) if tr.is_ours(t) else None for t in tr.outputs]


# ---- memory of the batched passes -------------------------------------------------------------------
def _size(x):
    return numel(np.shape(x))


def batch_plan(tr, m, mode, what, seeds=None):
    """How many of ``m`` basis vectors one batched pass may carry at once within the memory limit.

    The largest set of per-vector arrays alive at any time is found from the graph (a node's
    tangent lives from its computation to its last reader; a cotangent from its first
    contribution to its own rule), plus two output-sized temporaries of the rule running and
    the basis itself. Returns the chunk size (>= 1); refuses when not even one vector fits.
    ``seeds``: seqs of the inputs (fwd) or outputs (rev) that carry the basis.
    """
    if m == 0:  # an empty output (rev) or input (fwd): no basis vector to carry
        return 1
    nodes = tr.nodes()
    peak = 0
    if mode == "fwd":
        last = _last_uses(tr)
        live = 0
        alive = {}
        for t in (x for arg in tr.inputs for x in arg):
            if seeds is None or t.seq in seeds:
                if t.seq in last:
                    alive[t.seq] = _size(t.value)
                    live += alive[t.seq]
        for node in nodes:
            if node.prim is None or not any(p.seq in alive for _, p in node.parents):
                continue
            s = _size(node.value)
            peak = max(peak, live + 2 * s + max(_size(node.args[k]) for k, _ in node.parents))
            for _, p in node.parents:
                if last.get(p.seq) == node.seq and p.seq in alive:
                    live -= alive.pop(p.seq)
            alive[node.seq] = s
            live += s
        peak = max(peak, live)
    else:
        alive, live = {}, 0
        for t in tr.outputs:
            if tr.is_ours(t) and (seeds is None or t.seq in seeds) and t.seq not in alive:
                alive[t.seq] = _size(t.value)
                live += alive[t.seq]
        for node in reversed(nodes):
            if node.prim is None or node.seq not in alive:
                continue
            s = alive.pop(node.seq)
            biggest = max(_size(node.args[k]) for k, _ in node.parents) if node.parents else 0
            peak = max(peak, live + s + 2 * biggest)
            live -= s
            for _, p in node.parents:
                if p.seq not in alive:
                    alive[p.seq] = _size(p.value)
                    live += alive[p.seq]
        peak = max(peak, live)
    per_vector = max(peak, 1) * ITEMSIZE
    limit = config.max_jacobian_bytes
    chunk = min(m, limit // per_vector)
    if chunk < 1:
        raise JacobianTooLargeError(
            f"{what}: one basis vector alone needs {fmt_bytes(per_vector)} of {mode} intermediates, above "
            f"config.max_jacobian_bytes = {fmt_bytes(limit)}; nothing was allocated. Use jt.grad / jt.vjp, "
            f"method='chain' (structured), or raise the limit with jt.config.override(max_jacobian_bytes=...).")
    return int(max(chunk, 1))


def basis_chunk(start, stop, m, shape):
    """Rows start..stop-1 of the identity of size m, shaped (stop - start,) + shape."""
    e = np.zeros((stop - start, m))
    e[np.arange(stop - start), np.arange(start, stop)] = 1.0
    return e.reshape((stop - start,) + tuple(shape))


# ---- chain accumulation ---------------------------------------------------------------------------------
SETTLE_FACTORS = 8     # a lazy term is contracted once it holds this many factors ...
SETTLE_GROWTH = 4      # ... if its contracted factor is at most this many times the bytes its factors hold,
FORCE_FACTORS = 32     # and in any case at this many (so accumulation stays linear in program length)


def _settle_long(J):
    """Contract the lazy products that grew long (bounded re-walks: linear-time chains): at SETTLE_FACTORS
    factors if that does not grow the term much, at FORCE_FACTORS in any case."""
    from .plan import contract_term
    if all(len(t.factors) < SETTLE_FACTORS for t in J.terms):
        return J
    terms = []
    for t in J.terms:
        n = len(t.factors)
        if n >= FORCE_FACTORS or (n >= SETTLE_FACTORS and _growth(t) <= SETTLE_GROWTH):
            t = contract_term(t, J._what())[0].canonical()
        terms.append(t)
    return Jacobian(J.out_shape, J.in_shape, terms, name=J.name)


def chain_accumulate(tr, out_index, dense=False, plans=None, symbolic=False, lazy=False):
    """Structured Jacobians of output leaf ``out_index`` w.r.t. every input leaf, by chain().

    Each recorded primitive contributes its full Jacobian; they are multiplied lazily
    along the graph (so a chain-shaped stretch becomes one einsum whose order opt_einsum
    picks) and contracted where paths meet, where their contributions are summed, and
    when a stretch grows long (so the cost stays linear in the program's length).
    ``dense=True`` materialises every per-op Jacobian and contracts step by step.
    ``symbolic=True`` only plans: factors become shapes and nothing is contracted.
    ``lazy=True`` leaves the final products uncontracted (structured results: a Hessian X^T diag(d) X stays
    three factors, so its diagonal, trace or a product with it never forms the n x n matrix; np.asarray(J)
    contracts it when asked).
    """
    out = tr.outputs[out_index]
    oshape = np.shape(tr.out_value(out))
    if not tr.is_ours(out):
        return [[None for _ in arg] for arg in tr.inputs]
    adj = {out.seq: Jacobian.identity(oshape, name="output")}
    check = config.check_nan and not symbolic

    def settle(J):
        J = plan_only(J) if symbolic else contract_with_plan(J)
        if plans is not None:
            plans.append(J.plan)
        return J

    def add(A, B):
        if symbolic or dense:
            A = A if _settled(A) else settle(A)
            B = B if _settled(B) else settle(B)
            return _symbolic_sum(A, B) if symbolic else A + B
        return Jacobian(A.out_shape, A.in_shape, A.terms + B.terms, name=A.name).reduced()

    for node in reversed(tr.nodes()):
        if node.prim is None:
            continue
        A = adj.pop(node.seq, None)
        if A is None:
            continue
        if any(type(x) is Tracer for x in node.args) or type(node.value) is Tracer:
            raise NotDifferentiableError("jacobian(method='chain') cannot run inside another transform; "
                                         "use method='rev' or 'fwd' (e.g. for hessian)")
        for k, parent in node.parents:
            Jk = node.prim._rule(node.prim.jac_rules, "Jacobian", k)(node.value, *node.args, **node.params)
            Jk.name = f"{node.prim.name} w.r.t. argument {k}"
            if check:
                for t in Jk.terms:
                    for a, _ in t.factors:
                        check_finite(a, f"the Jacobian of {node.prim.name} (argument {k})",
                                     f"step {tr.step(node)} of the program traced from {tr.name}")
            if dense:
                Jk = shape_only_dense(Jk) if symbolic else Jk.densified()
                contrib = settle(product(A, Jk))
            else:
                contrib = product(A, Jk)
                if symbolic:
                    if len(contrib.terms) > config.max_terms or any(len(t.factors) >= FORCE_FACTORS
                                                                    for t in contrib.terms):
                        contrib = settle(contrib)
                else:
                    if len(contrib.terms) > config.max_terms:
                        contrib = contrib.reduced()
                    contrib = _settle_long(contrib)
            p = parent.seq
            adj[p] = add(adj[p], contrib) if p in adj else contrib
    res = []
    for arg in tr.inputs:
        row = []
        for t in arg:
            J = adj.get(t.seq)
            if J is not None and not _settled(J) and not (lazy and not symbolic and not dense):
                J = settle(J)
            row.append(J)
        res.append(row)
    return res


def _symbolic_sum(A, B):
    terms = A.terms + B.terms
    if len(terms) <= config.max_terms:
        return Jacobian(A.out_shape, A.in_shape, terms, name=A.name)
    return shape_only_dense(A)  # planning: assume the sum goes dense (an upper bound)


def _settled(J):
    return all(len(t.factors) <= 1 for t in J.terms)
