"""A recorded program made fast: dead code removed, repeated calls merged, buffers released after
their last use, and the whole replay generated as one Python function of numpy calls.

The generated function keeps every buffer in a local variable (``v12 = matmul(v3, v7)``), deletes
it right after its last reader (``del v3``), checks guards where they were recorded, and returns the
output buffers. Locals are per call, so concurrent replays share nothing mutable; no tracer, graph
walk, contraction-path search or pytree validation runs at replay.

Optimisations (all on the recorded instructions, before code generation):
- identities: arithmetic that returns its operand unchanged (``0 + v``, ``1.0 * v``, ``v * ones``
  with the shape and dtype unchanged) is dropped and its result is the operand;
- dead code: an instruction whose result reaches no output, no guard and no in-place write is
  dropped (e.g. the forward value a gradient program does not return and no rule reads);
- common subexpressions: two pure instructions with the same function and the same arguments become
  one (e.g. layer_norm's statistics recomputed by each of its VJP rules).
Identities and merging are skipped in a program that writes into arrays in place, where two
equal-looking values may hold different data.
"""
import keyword
import re
import time

import numpy as np

from ..errors import JactensorError, NotDifferentiableError
from ..jacobian import Jacobian
from ..pytree import tree_flatten, tree_unflatten
from ..term import Term
from ..tracer import Tracer
from . import guards as G
from .record import Dct, K, S, Seq, Slc
from .var import Var

__all__ = ["Program", "check_same"]


def _root(a):
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return id(a)


class _Names:
    """Global names of the generated module: callables and constants, each bound once."""

    def __init__(self, consts):
        self.ns = dict(G.RUNTIME)
        self.by_id = {}
        self.consts = consts
        self.const_names = {}

    def fn(self, fn, label):
        key = id(fn)
        name = self.by_id.get(key)
        if name is None:
            base = re.sub(r"\W+", "_", label or getattr(fn, "__name__", "f")).strip("_") or "f"
            if base[0].isdigit() or keyword.iskeyword(base):
                base = "f_" + base
            name, k = base, 1
            while name in self.ns:
                k += 1
                name = f"{base}_{k}"
            self.by_id[key] = name
            self.ns[name] = fn
        return name

    def obj(self, obj):
        key = ("obj", id(obj))
        name = self.by_id.get(key)
        if name is None:
            name = f"k{len(self.by_id)}"
            self.by_id[key] = name
            self.ns[name] = obj
        return name

    def const(self, index):
        name = self.const_names.get(index)
        if name is None:
            name = f"c{index}"
            self.const_names[index] = name
            self.ns[name] = self.consts[index]
        return name


def _resolve(remap, s):
    """The buffer a slot stands for after merging (a chain: v18 -> v17 -> v13)."""
    while s in remap:
        s = remap[s]
    return s


def _all_equal(value, unit):
    """Is ``value`` (a Python number or an array) exactly ``unit`` everywhere (and not a bool)?"""
    if type(value) in (int, float):
        return value == unit
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu" and value.size:
        return bool(np.all(value == unit))
    return False


def lit(v):
    if v is Ellipsis:
        return "..."
    s = repr(v)
    return f"({s})" if s.startswith("-") else s


class Program:
    """One compiled variant: the generated replay function, what it returns, its guards and its
    statistics. ``children`` maps (guard index, observed value) to the variant compiled when that
    guard failed."""

    def __init__(self, rec, out):
        t0 = time.perf_counter()
        self.name = rec.name
        self.guards = rec.guards
        self.n_inputs = rec.n_inputs
        self.children = {}
        self._specs(rec, out)
        instrs = list(rec.instrs)
        self.has_writes = any(ins.writes for ins in instrs)
        remap = {}
        if not self.has_writes:   # with in-place writes, two equal-looking values may differ: no merging
            self._identities(instrs, rec, remap)
            self._merge(instrs, rec, remap)
        instrs = self._dead_code([ins for ins in instrs if ins is not None], remap)
        self.instrs = instrs
        self.remap = remap
        self.source = self._codegen(rec, instrs, remap)
        self.const_roots = {_root(c) for c in rec.consts if isinstance(c, np.ndarray)}
        self._const_ids = frozenset(id(c) for c in rec.consts if isinstance(c, np.ndarray))
        self._flat = all(sp[0] == "slot" for sp in self.out_specs) and (
            self.out_def is None or (self.out_def.kind is tuple and all(c is None for c in self.out_def.children)))
        self._stats(rec, instrs, remap)
        self.trace_seconds = t0 - rec.t0
        self.build_seconds = time.perf_counter() - t0

    # ---- what the function returns --------------------------------------------------------------------
    def _specs(self, rec, out):
        leaves, self.out_def = tree_flatten(out)
        self.out_specs = [self._spec(rec, x, k) for k, x in enumerate(leaves)]
        self.out_slots = []
        for sp in self.out_specs:
            if sp[0] == "slot":
                self.out_slots.append(sp[1])
            elif sp[0] == "jac":
                for t in sp[5]:
                    self.out_slots += [f[1] for f, _ in t[1] if f[0] == "slot"]

    def _spec(self, rec, x, k):
        t = type(x)
        if t is Var:
            if x.rec is not rec:
                raise JactensorError("jt.jit: the function returned a value recorded by another compilation")
            return ("slot", x.slot)
        if t is Tracer:
            raise NotDifferentiableError(
                f"jt.jit({rec.name}): output leaf {k} is a value being differentiated (a Tracer); return the "
                f"transform's result (jt.grad(f)(x)), not a value traced inside it")
        if isinstance(x, Jacobian):
            terms = [(tm.coef, [(self._spec(rec, a, k), ls) for a, ls in tm.factors], tm.labels, tm.sizes)
                     for tm in x.terms]
            return ("jac", x.out_shape, x.in_shape, x.name, x.plan, terms)
        if isinstance(x, np.ndarray):
            return ("const", np.array(x, copy=True))
        if callable(x) and not isinstance(x, type):
            raise NotDifferentiableError(
                f"jt.jit({rec.name}): output leaf {k} is a function ({getattr(x, '__name__', type(x).__name__)}); "
                f"a compiled function returns arrays -- call it inside the compiled function instead (e.g. "
                f"jt.jit(lambda x, g: jt.vjp(f, x)[1](g)))")
        return ("static", x)

    # ---- optimisation ---------------------------------------------------------------------------------
    def _dead_code(self, instrs, remap):
        live = {_resolve(remap, s) for s in self.out_slots}
        kept = []
        for ins in reversed(instrs):
            if not ins.pure or ins.writes or ins.kind == "guard" or (ins.out is not None and ins.out in live):
                kept.append(ins)
                live.discard(ins.out)
                live |= {_resolve(remap, s) for s in ins.reads()}
        kept.reverse()
        return kept

    def _identities(self, instrs, rec, remap):
        """Arithmetic that returns its operand unchanged (0 + v, 1.0 * v, v * ones, v - 0, v / 1, the shape
        and dtype unchanged): the instruction is dropped and its result is the operand. The derivative
        rules produce these (a sum's start, a unit coefficient, an all-ones cotangent)."""
        ops = {np.add: "+", np.multiply: "*", np.subtract: "-", np.divide: "/"}
        for i, ins in enumerate(instrs):
            if ins.kind == "binop":
                sym = ins.name
            elif ins.kind == "call" and ins.fn in ops and not ins.kwargs:
                sym = ops[ins.fn]
            else:
                continue
            if sym not in ("+", "*", "-", "/") or len(ins.args) != 2 or ins.out is None:
                continue
            a, b = ins.args
            for var, const, left in ((a, b, True), (b, a, False)):
                if type(var) is not S or type(const) is not K:
                    continue
                if rec.meta.get(var.slot) != rec.meta.get(ins.out):
                    continue
                value = const.literal if const.index is None else rec.consts[const.index]
                unit = 1 if sym in ("*", "/") else 0
                if sym in ("-", "/") and not left:
                    continue
                if _all_equal(value, unit):
                    remap[ins.out] = _resolve(remap, var.slot)
                    instrs[i] = None
                    break

    def _merge(self, instrs, rec, remap):
        """Common subexpressions: pure instructions with equal function and arguments (after merging)."""
        seen = {}
        names = _Names(rec.consts)
        for i, ins in enumerate(instrs):
            if ins is None:
                continue
            if ins.kind == "guard":
                key = ("guard", ins.guard.kind, repr(ins.guard.expected) if ins.guard.kind != "value" else
                       id(ins.guard.expected), self._render_t(ins.guard.ref, names, remap))
                if ins.guard.kind != "value" and key in seen:
                    instrs[i] = None
                else:
                    seen[key] = None
                continue
            if not ins.pure or ins.out is None:
                continue
            key = (ins.kind, id(ins.fn), ins.name, tuple(self._render_t(a, names, remap) for a in ins.args),
                   None if not ins.kwargs else tuple((k, self._render_t(v, names, remap))
                                                     for k, v in ins.kwargs.items()))
            prev = seen.get(key)
            if prev is not None:
                remap[ins.out] = prev
                instrs[i] = None
            else:
                seen[key] = ins.out

    # ---- code generation -----------------------------------------------------------------------------
    @staticmethod
    def _slot(s, remap):
        return f"v{_resolve(remap, s)}"

    def _render_t(self, t, names, remap):
        tt = type(t)
        if tt is S:
            return self._slot(t.slot, remap)
        if tt is K:
            return lit(t.literal) if t.index is None else names.const(t.index)
        if tt is Seq:
            items = [self._render_t(e, names, remap) for e in t.items]
            if t.kind is tuple:
                return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
            if t.kind is list:
                return "[" + ", ".join(items) + "]"
            return f"{names.obj(t.kind)}({', '.join(items)})"
        if tt is Dct:
            return "{" + ", ".join(f"{self._render_t(k, names, remap)}: {self._render_t(v, names, remap)}"
                                   for k, v in zip(t.keys, t.items)) + "}"
        if tt is Slc:
            return f"slice({', '.join(self._render_t(e, names, remap) for e in t.items)})"
        raise AssertionError(f"unknown template {t!r}")

    def _call_args(self, ins, names, remap, skip=0):
        parts = [self._render_t(a, names, remap) for a in ins.args[skip:]]
        if ins.kwargs:
            if all(k.isidentifier() and not keyword.iskeyword(k) for k in ins.kwargs):
                parts += [f"{k}={self._render_t(v, names, remap)}" for k, v in ins.kwargs.items()]
            else:
                parts.append("**{" + ", ".join(f"{k!r}: {self._render_t(v, names, remap)}"
                                               for k, v in ins.kwargs.items()) + "}")
        return ", ".join(parts)

    def _line(self, ins, names, remap):
        r = lambda t: self._render_t(t, names, remap)  # noqa: E731
        k = ins.kind
        if k == "guard":
            g = ins.guard
            return g.render(r(g.ref), names.obj, lit)
        if k == "call":
            expr = f"{names.fn(ins.fn, ins.label)}({self._call_args(ins, names, remap)})"
        elif k == "method":
            expr = f"{r(ins.args[0])}.{ins.name}({self._call_args(ins, names, remap, skip=1)})"
        elif k == "getattr":
            expr = f"{r(ins.args[0])}.{ins.name}"
        elif k == "binop":
            expr = f"{r(ins.args[0])} {ins.name} {r(ins.args[1])}"
        elif k == "unop":
            expr = f"{ins.name}({r(ins.args[0])})"
        elif k == "getitem":
            expr = f"{r(ins.args[0])}[{r(ins.args[1])}]"
        elif k == "setitem":
            return f"{r(ins.args[0])}[{r(ins.args[1])}] = {r(ins.args[2])}"
        elif k == "ibinop":
            return f"{r(ins.args[0])} {ins.name}= {r(ins.args[1])}"
        else:
            raise AssertionError(k)
        return expr if ins.out is None else f"{self._slot(ins.out, remap)} = {expr}"

    def _codegen(self, rec, instrs, remap):
        names = _Names(rec.consts)
        outs = {_resolve(remap, s) for s in self.out_slots}
        last = {}
        for i, ins in enumerate(instrs):
            for s in ins.reads():
                last[_resolve(remap, s)] = i
        for i, ins in enumerate(instrs):   # defined and never read: released at once
            if ins.out is not None and ins.out not in last:
                last[ins.out] = i
        dels = {}
        for s, i in last.items():
            if s not in outs:
                dels.setdefault(i, []).append(s)
        params = ", ".join(f"v{s}" for s in range(rec.n_inputs))
        lines = [f"def _program({params}):"]
        for i, ins in enumerate(instrs):
            lines.append("    " + self._line(ins, names, remap))
            if i in dels:
                lines.append("    del " + ", ".join(f"v{s}" for s in sorted(dels[i])))
        lines.append("    return (" + "".join(f"v{_resolve(remap, s)}, " for s in self.out_slots) + ")")
        src = "\n".join(lines) + "\n"
        code = compile(src, f"<jt.jit program of {rec.name}>", "exec")
        exec(code, names.ns)
        self.fn = names.ns["_program"]
        self.names = names
        self._last = last
        return src

    # ---- statistics (explain) --------------------------------------------------------------------------
    def _stats(self, rec, instrs, remap):
        calls = [ins for ins in instrs if ins.kind != "guard"]
        self.n_calls = len(calls)
        prims = _primitive_names()
        self.n_primitive_calls = sum(1 for ins in calls if ins.kind == "call" and ins.label in prims)
        self.n_contractions = sum(1 for ins in calls if (ins.label or "").startswith("contract") or
                                  ins.label in ("np.dot", "np.einsum"))
        self.n_embeds = sum(1 for ins in calls if ins.label == "embed")
        nbytes = rec.nbytes
        defined_primal = {}
        for ins in instrs:
            if ins.out is not None and ins.phase == "primal":
                defined_primal[ins.out] = ins
        kept = set()
        for ins in instrs:
            if ins.phase == "derivative":
                for s in ins.reads():
                    s = _resolve(remap, s)
                    if s in defined_primal:
                        kept.add(s)
        self.saved_slots = sorted(kept)
        self.saved_bytes = sum(nbytes.get(s, 0) for s in kept)
        live, peak, cur = set(), 0, 0
        for i, ins in enumerate(instrs):
            if ins.out is not None:
                live.add(ins.out)
                cur += nbytes.get(ins.out, 0)
            peak = max(peak, cur)
            for s in list(live):
                if self._last.get(s, -1) == i and s not in self.out_slots:
                    live.discard(s)
                    cur -= nbytes.get(s, 0)
        self.peak_bytes = peak
        self.const_bytes = sum(int(getattr(c, "nbytes", 0)) for c in rec.consts if isinstance(c, np.ndarray))
        self.n_consts = len(rec.consts)

    # ---- replay ----------------------------------------------------------------------------------------------
    def outputs(self, vals, leaves):
        """The output tree from the replay's buffers; arrays that alias an input, a constant, a read-only
        view or another output are copied, so no two calls (and no call and its caller) share memory.
        An array that owns its memory aliases only if it *is* one of those objects; the base chain of a
        view is followed to the array that owns its memory."""
        owned = set(self._const_ids)
        owned.update(map(id, leaves))
        roots = None
        res = []
        for x in vals:
            if type(x) is np.ndarray:
                if x.base is None:
                    if id(x) in owned or not x.flags.writeable:
                        x = x.copy()
                else:
                    if roots is None:
                        roots = self.const_roots.union(_root(a) for a in leaves if isinstance(a, np.ndarray))
                        roots.update(owned)
                    r = _root(x)
                    if r in roots or not x.flags.writeable:
                        x = x.copy()
                    else:
                        roots.add(r)
                owned.add(id(x))
            elif isinstance(x, np.generic):
                x = np.asarray(x)
            elif isinstance(x, np.ndarray):   # a subclass: the general rule
                if roots is None:
                    roots = self.const_roots.union(_root(a) for a in leaves if isinstance(a, np.ndarray))
                    roots.update(owned)
                r = _root(x)
                if r in roots or not x.flags.writeable:
                    x = x.copy()
                roots.add(_root(x))
            res.append(x)
        if self._flat:
            return res[0] if self.out_def is None else tuple(res)
        it = iter(res)

        def build(sp):
            kind = sp[0]
            if kind == "slot":
                return next(it)
            if kind == "const":
                return sp[1].copy()
            if kind == "static":
                return sp[1]
            _, out_shape, in_shape, name, plan, terms = sp
            J = Jacobian(out_shape, in_shape, [Term(c, [(build(f), ls) for f, ls in fs], labels, dict(sizes))
                                               for c, fs, labels, sizes in terms], name=name)
            J.plan = plan
            return J

        return tree_unflatten(self.out_def, [build(sp) for sp in self.out_specs])

    def describe_guards(self):
        return [g.describe() for g in self.guards]


def _primitive_names():
    from ..registry import registry
    return set(registry)


def check_same(got, expected, name):
    """The first replay against the values computed while recording (they must agree to rounding)."""
    a_leaves, _ = tree_flatten(got)
    b_leaves, _ = tree_flatten(expected)
    for k, (a, b) in enumerate(zip(a_leaves, b_leaves)):
        if isinstance(b, Var):
            b = b.value
        if isinstance(a, Jacobian) or isinstance(b, Jacobian):
            continue
        if isinstance(a, (np.ndarray, np.generic)) and np.shape(a) != np.shape(b):
            raise JactensorError(f"jt.jit({name}): internal check failed: output {k} has shape {np.shape(a)} at "
                                 f"replay but {np.shape(b)} when recorded; please report this")
        if isinstance(a, (np.ndarray, np.generic)) and np.asarray(a).dtype.kind in "fc" and \
                not np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True):
            raise JactensorError(f"jt.jit({name}): internal check failed: output {k} differs between the replay "
                                 f"and the recording (max |diff| {np.max(np.abs(np.asarray(a) - b))}); please "
                                 f"report this")

