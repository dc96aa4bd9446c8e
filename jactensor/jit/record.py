"""Recording a program: the instructions Vars append while a function runs on them once.

An instruction is one numpy-level call -- a ufunc, a numpy function, an operator, an indexing
operation, an ndarray method, one primitive's implementation (through the engine's
``call_primitive`` hook), one pairwise step of a cached ``opt_einsum`` contraction (``contract``
hook) or one dense materialisation of a structured Jacobian (``embed`` hook) -- with its arguments
kept as a
*template*: a Var becomes a reference to its buffer (slot), anything else a constant. Arrays
captured as constants are copied when first seen (a later change to them cannot leak into the
program, as with ``jax.jit``); a Var inside a primitive's parameters or an index (integer labels,
an index array computed from the values) stays a reference and is read afresh at every replay.

Guards are instructions too: where Python code turned a Var into a Python value, the replay
recomputes that value and compares it with the compile-time one (``guards.py``).
"""
import os
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from .. import backends as _backends
from ..errors import JactensorError
from . import guards as G
from .var import BINOPS, OPERATOR_FNS, UNOPS, Var

__all__ = ["Recorder", "Instr", "recording", "ESCAPED", "owner"]

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_JIT_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))

ESCAPED = ("a value recorded by jt.jit was used after its function finished compiling (was it stored in a "
           "global, an attribute or a closure?); return it from the compiled function instead")

# numpy functions whose output shape depends on the input values (a shape guard follows them)
_DATA_SHAPED = {np.nonzero, np.argwhere, np.flatnonzero, np.unique, np.extract, np.compress, np.trim_zeros,
                np.arange, np.linspace, np.repeat, np.bincount, np.where, np.histogram, np.resize}
# numpy functions and methods whose output shape does not depend on the values of integer arguments
# (indices, labels, reductions): no shape guard after them
_SHAPE_STATIC_FUNCS = {np.take, np.take_along_axis, np.choose, np.select, np.isin, np.searchsorted, np.digitize,
                       np.clip, np.where, np.any, np.all, np.sum, np.prod, np.mean, np.max, np.min, np.amax, np.amin,
                       np.argmax, np.argmin, np.round, np.abs, np.einsum, np.dot, np.matmul, np.stack, np.concatenate,
                       np.equal}
_SHAPE_STATIC_METHODS = frozenset({"take", "clip", "searchsorted", "choose", "astype", "round", "sum", "prod", "mean",
                                   "max", "min", "any", "all", "argmax", "argmin", "dot", "copy"})
_DATA_SHAPED_METHODS = frozenset({"nonzero", "compress", "repeat", "resize"})
# numpy functions that write into an argument
_MUTATORS = {np.copyto, np.put, np.place, np.putmask, np.fill_diagonal, np.put_along_axis}
# numpy functions answered from the static signature alone (no instruction)
_STATIC_FUNCS = {np.shape, np.ndim, np.size, np.result_type, np.iscomplexobj, np.isrealobj, np.may_share_memory,
                 np.shares_memory}


# ---- templates: how an argument is rebuilt at replay -----------------------------------------------
class S:
    """Reference to a buffer."""
    __slots__ = ("slot",)

    def __init__(self, slot):
        self.slot = slot


class K:
    """A constant (index into the recorder's constants, or an inline literal)."""
    __slots__ = ("index", "literal")

    def __init__(self, index=None, literal=None):
        self.index, self.literal = index, literal


class Seq:
    """A tuple, list or namedtuple holding references."""
    __slots__ = ("kind", "items")

    def __init__(self, kind, items):
        self.kind, self.items = kind, items


class Dct:
    """A dict holding references (keys are constants)."""
    __slots__ = ("keys", "items")

    def __init__(self, keys, items):
        self.keys, self.items = keys, items


class Slc:
    """A slice with a reference among its bounds."""
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items


def _inline(x):
    """Is ``x`` a literal the generated source can spell (so it costs nothing at replay)?"""
    t = type(x)
    if x is None or x is Ellipsis or t in (bool, int, str):
        return True
    if t is float:
        return x == x and x not in (float("inf"), float("-inf"))
    if t is tuple:
        return all(_inline(e) for e in x)
    return False


def reads(t, out):
    """Slots a template reads."""
    tt = type(t)
    if tt is S:
        out.add(t.slot)
    elif tt in (Seq, Slc):
        for e in t.items:
            reads(e, out)
    elif tt is Dct:
        for e in t.items:
            reads(e, out)
    return out


class Instr:
    """One recorded call. ``kind``: call, method, getattr, binop, unop, getitem, setitem, ibinop, guard.
    ``args``/``kwargs`` are templates; ``out`` the slot it defines (None for a pure write or a guard);
    ``writes`` the slots it changes in place."""

    __slots__ = ("kind", "fn", "name", "args", "kwargs", "out", "writes", "pure", "phase", "label", "guard")

    def __init__(self, kind, fn=None, name=None, args=(), kwargs=None, pure=True, label=None):
        self.kind, self.fn, self.name, self.args, self.kwargs = kind, fn, name, args, kwargs
        self.out, self.writes, self.pure, self.phase, self.label, self.guard = None, (), pure, "primal", label, None

    def reads(self):
        out = set()
        for a in self.args:
            reads(a, out)
        if self.kwargs:
            for a in self.kwargs.values():
                reads(a, out)
        if self.guard is not None:
            reads(self.guard.ref, out)
        return out


# ---- the recording context ------------------------------------------------------------------------
_LOCK = threading.RLock()  # one compilation at a time (the engine's lazy-type set is process-wide)
_depth = [0]


@contextmanager
def recording(rec):
    """Compile under the lock, with Var known to the engine as a lazy type for the duration."""
    with _LOCK:
        _depth[0] += 1
        _backends.LAZY_TYPES.add(Var)
        rec.open = True
        try:
            yield rec
        finally:
            rec.open = False
            _depth[0] -= 1
            if not _depth[0]:
                _backends.LAZY_TYPES.discard(Var)


def _deriv_codes():
    from .. import passes
    return {passes.backward.__code__, passes.forward.__code__, passes.chain_accumulate.__code__}


def owner(*trees):
    """The recorder of the first Var found in ``trees`` (nested tuples, lists, dicts)."""
    stack = list(trees)
    while stack:
        x = stack.pop()
        t = type(x)
        if t is Var:
            return x.rec
        if t in (tuple, list) or isinstance(x, tuple):
            stack.extend(x)
        elif t is dict:
            stack.extend(x.values())
        elif t is slice:
            stack.extend((x.start, x.stop, x.step))
    return None


class Recorder:
    """Collects the instructions, buffers, constants and guards of one compilation."""

    def __init__(self, name="f"):
        self.name = name
        self.instrs, self.consts, self.guards = [], [], []
        self.nslots, self.n_inputs = 0, 0
        self.nbytes = {}        # slot -> bytes of its compile-time value (explain)
        self.meta = {}          # slot -> (shape, dtype) of its compile-time value
        self._snap = {}         # id(original) -> (original, snapshot index)
        self.open = False
        self._deriv = _deriv_codes()
        self.t0 = time.perf_counter()

    # ---- buffers ---------------------------------------------------------------------------------
    def _slot(self, value):
        s = self.nslots
        self.nslots += 1
        self.nbytes[s] = int(getattr(value, "nbytes", 0) or 0)
        if isinstance(value, (np.ndarray, np.generic)):
            self.meta[s] = (value.shape, value.dtype)
        return s

    def input(self, value):
        v = Var(value, self._slot(value), self)
        self.n_inputs += 1
        return v

    # ---- constants -----------------------------------------------------------------------------------
    def const(self, x):
        """A constant of the program; arrays are snapshot (copied) the first time they are captured."""
        if isinstance(x, np.ndarray):
            hit = self._snap.get(id(x))
            if hit is not None and hit[0] is x:
                snap = self.consts[hit[1]]
                if snap.shape == x.shape and snap.dtype == x.dtype and G.same_bytes(snap, x):
                    return K(hit[1])
            self.consts.append(np.array(x, copy=True, subok=True))
            self._snap[id(x)] = (x, len(self.consts) - 1)
            return K(len(self.consts) - 1)
        if _inline(x):
            return K(literal=x)
        self.consts.append(x)
        return K(len(self.consts) - 1)

    def walk(self, x):
        """(template, concrete value) of an argument: Vars become buffer references."""
        t = type(x)
        if t is Var:
            if x.rec is not self:
                raise JactensorError(ESCAPED if not x.rec.open else
                                     "jt.jit: a value from another function's compilation reached this one")
            return S(x.slot), x.value
        if t is tuple or t is list or (isinstance(x, tuple) and hasattr(t, "_fields")):
            ts, cs, any_var = [], [], False
            for e in x:
                te, ce = self.walk(e)
                any_var = any_var or type(te) is not K
                ts.append(te)
                cs.append(ce)
            concrete = t(*cs) if t not in (tuple, list) else t(cs)
            if not any_var:
                return self.const(x if t is not list else list(x)), concrete
            return Seq(t, ts), concrete
        if t is dict:
            keys, ts, cs, any_var = list(x), [], {}, False
            for k in keys:
                te, ce = self.walk(x[k])
                any_var = any_var or type(te) is not K
                ts.append(te)
                cs[k] = ce
            if not any_var:
                return self.const(dict(x)), cs
            return Dct([self.const(k) for k in keys], ts), cs
        if t is slice and (type(x.start) is Var or type(x.stop) is Var or type(x.step) is Var):
            parts = [self.walk(e) for e in (x.start, x.stop, x.step)]
            return Slc([p[0] for p in parts]), slice(*[p[1] for p in parts])
        return self.const(x), x

    # ---- appending -----------------------------------------------------------------------------------
    def _check_open(self):
        if not self.open:
            raise JactensorError(ESCAPED)

    def _append(self, ins):
        self._check_open()
        f = sys._getframe(2)
        deriv = self._deriv
        while f is not None:
            if f.f_code in deriv:
                ins.phase = "derivative"
                break
            f = f.f_back
        self.instrs.append(ins)
        return ins

    def _result(self, ins, value, shape_guard=False):
        """Append ``ins`` defining ``value`` and return what the caller should see."""
        if isinstance(value, (np.ndarray, np.generic)):
            ins.out = self._slot(value)
            self._append(ins)
            v = Var(value, ins.out, self)
            if shape_guard:
                self._guard(G.Guard("shape", S(ins.out), np.shape(value), self._site("an output shape that depends "
                                                                                     "on values")))
            return v
        if isinstance(value, (tuple, list)):
            ins.out = self._slot(None)
            self._append(ins)
            items = [self._result(Instr("getitem", args=(S(ins.out), K(literal=k)), label="[]"), e, shape_guard)
                     for k, e in enumerate(value)]
            t = type(value)
            return t(*items) if hasattr(t, "_fields") else t(items)
        if value is None:
            ins.pure = False
            self._append(ins)
            return None
        if isinstance(value, (bool, int, float, complex, str)):
            ins.out = self._slot(None)
            self._append(ins)
            self._guard(G.Guard("result", S(ins.out), value, self._site(f"the Python value {ins.label} returned")))
            return value
        raise JactensorError(f"jt.jit: {ins.label} returned a {type(value).__name__}, which a compiled program "
                             f"cannot carry; return arrays, or mark the argument it depends on static "
                             f"(static_argnums)")

    def _guard(self, g):
        ins = Instr("guard", pure=False, label=g.kind)
        ins.guard = g
        g.index = len(self.guards)
        self.guards.append(g)
        self._append(ins)

    def _site(self, what):
        """Where a guard arises: the innermost frame outside jit and numpy, and the first frame outside
        jactensor that led there (the caller's own line) when they differ."""
        f = sys._getframe(1)
        inner = outer = None
        while f is not None:
            fn = os.path.abspath(f.f_code.co_filename)
            if not fn.startswith(_JIT_DIR) and not fn.startswith(_NUMPY_DIR):
                if inner is None:
                    inner = f
                if not fn.startswith(_PKG_DIR):
                    outer = f
                    break
            f = f.f_back
        at = lambda fr: f"{fr.f_code.co_filename}:{fr.f_lineno} ({fr.f_code.co_name})"  # noqa: E731
        if inner is None:
            return what
        if outer is None or outer is inner:
            return f"{what} at {at(inner)}"
        return f"{what} at {at(inner)}, called from {at(outer)}"

    # ---- what Vars call -------------------------------------------------------------------------------
    def args(self, args, kwargs):
        """(templates, concretes) of positional and keyword arguments."""
        ta, ca = [], []
        for a in args:
            t, c = self.walk(a)
            ta.append(t)
            ca.append(c)
        if not kwargs:
            return tuple(ta), ca, None, {}
        tk, ck = {}, {}
        for k, v in kwargs.items():
            tk[k], ck[k] = self.walk(v)
        return tuple(ta), ca, tk, ck

    def call(self, fn, args, kwargs, label, pure=True, shape_guard=False):
        ta, ca, tk, ck = self.args(args, kwargs)
        value = fn(*ca, **ck)
        ins = Instr("call", fn=fn, args=ta, kwargs=tk, pure=pure, label=label)
        return self._result(ins, value, shape_guard)

    def ufunc(self, ufunc, method, inputs, kwargs):
        fn = ufunc if method == "__call__" else getattr(ufunc, method)
        label = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        out = kwargs.get("out")
        targets = out if isinstance(out, tuple) else ((out,) if out is not None else ())
        if method == "at":
            targets = (inputs[0],)
        if targets:
            if any(type(t) is not Var for t in targets):
                return self._escape(fn, inputs, kwargs)   # writing a recorded value into a plain array
            ta, ca, tk, ck = self.args(inputs, kwargs)
            value = fn(*ca, **ck)
            ins = Instr("call", fn=fn, args=ta, kwargs=tk, pure=False, label=label)
            ins.writes = tuple(t.slot for t in targets)
            self._append(ins)
            for t in targets:
                self.nbytes[t.slot] = int(getattr(t.value, "nbytes", 0) or 0)
            if value is None:
                return None
            if isinstance(value, tuple):
                return tuple(targets)
            return targets[0]
        return self.call(fn, inputs, kwargs, label)

    def function(self, func, args, kwargs):
        if func in _STATIC_FUNCS:
            _, ca, _, ck = self.args(args, kwargs)
            return func(*ca, **ck)
        label = f"np.{func.__name__}"
        if func in _MUTATORS:
            target = args[0] if args else kwargs.get("dst", kwargs.get("a"))
            if type(target) is not Var:
                return self._escape(func, args, kwargs)
            ta, ca, tk, ck = self.args(args, kwargs)
            func(*ca, **ck)
            ins = Instr("call", fn=func, args=ta, kwargs=tk, pure=False, label=label)
            ins.writes = (target.slot,)
            self._append(ins)
            return None
        out = kwargs.get("out")
        if out is not None:
            if type(out) is not Var:
                return self._escape(func, args, kwargs)
            ta, ca, tk, ck = self.args(args, kwargs)
            func(*ca, **ck)
            ins = Instr("call", fn=func, args=ta, kwargs=tk, pure=False, label=label)
            ins.writes = (out.slot,)
            self._append(ins)
            return out
        shaped = (func in _DATA_SHAPED and not (func is np.where and len(args) + len(kwargs) == 3)) or \
            (func not in _SHAPE_STATIC_FUNCS and _vars_of_kind(args[1:], kwargs, "iub"))
        return self.call(func, args, kwargs, label, shape_guard=shaped)

    def _escape(self, fn, args, kwargs):
        """A recorded value written into a plain array: the array cannot be followed, so every recorded
        value involved is guarded on its full value (recompiles when it changes) and the call runs now."""
        stack = [args, kwargs]
        while stack:
            x = stack.pop()
            if type(x) is Var:
                self.guard_value(x, f"writing into a plain array with {getattr(fn, '__name__', fn)}")
            elif isinstance(x, (tuple, list)):
                stack.extend(x)
            elif isinstance(x, dict):
                stack.extend(x.values())
        _, ca, _, ck = self.args(args, kwargs)
        return fn(*ca, **ck)

    def method(self, var, name, args, kwargs, inplace=False):
        ta, ca, tk, ck = self.args(args, kwargs)
        value = getattr(var.value, name)(*ca, **ck)
        ins = Instr("method", name=name, args=(S(var.slot),) + ta, kwargs=tk,
                    pure=not inplace, label=f".{name}")
        if inplace:
            ins.writes = (var.slot,)
            self._append(ins)
            return value
        shaped = name in _DATA_SHAPED_METHODS or \
            (name not in _SHAPE_STATIC_METHODS and _vars_of_kind(args, kwargs, "iub"))
        return self._result(ins, value, shaped)

    def getattr(self, var, name):
        return self._result(Instr("getattr", name=name, args=(S(var.slot),), label=f".{name}"),
                            getattr(var.value, name))

    def binop(self, sym, a, b):
        ta, ca = self.walk(a)
        tb, cb = self.walk(b)
        if sym in OPERATOR_FNS:
            value = OPERATOR_FNS[sym](ca, cb)
            return self._result(Instr("call", fn=OPERATOR_FNS[sym], args=(ta, tb), label=sym), value)
        value = _PY_BINOPS[sym](ca, cb)
        return self._result(Instr("binop", name=BINOPS[sym], args=(ta, tb), label=BINOPS[sym]), value)

    def inplace_binop(self, sym, var, b):
        tb, cb = self.walk(b)
        value = _PY_IBINOPS[sym](var.value, cb)
        ins = Instr("ibinop", name=BINOPS[sym], args=(S(var.slot), tb), pure=False, label=BINOPS[sym] + "=")
        ins.writes = (var.slot,)
        self._append(ins)
        var.value = value  # a numpy scalar is rebound, an array changed in place: both like numpy
        return var

    def unop(self, sym, a):
        value = (OPERATOR_FNS[sym] if sym in OPERATOR_FNS else _PY_UNOPS[sym])(a.value)
        if sym in OPERATOR_FNS:
            return self._result(Instr("call", fn=OPERATOR_FNS[sym], args=(S(a.slot),), label=sym), value)
        return self._result(Instr("unop", name=UNOPS[sym], args=(S(a.slot),), label=UNOPS[sym]), value)

    def getitem(self, var, idx):
        ti, ci = self.walk(idx)
        value = var.value[ci]
        return self._result(Instr("getitem", args=(S(var.slot), ti), label="[]"), value,
                            shape_guard=_vars_of_kind((idx,), None, "b", slices=True))

    def setitem(self, var, idx, val):
        ti, ci = self.walk(idx)
        tv, cv = self.walk(val)
        var.value[ci] = cv
        ins = Instr("setitem", args=(S(var.slot), ti, tv), pure=False, label="[]=")
        ins.writes = (var.slot,)
        self._append(ins)

    # ---- guards ------------------------------------------------------------------------------------------
    def guard_scalar(self, var, kind, args=()):
        self._check_open()
        value = G.SCALAR_CONVERT[kind](var.value, *args)
        g = G.Guard(kind, S(var.slot), value, self._site(f"{kind}() of a recorded value"), args=args)
        self._guard(g)
        return value

    def guard_value(self, var, what):
        self._check_open()
        snap = np.array(var.value, copy=True)
        g = G.Guard("value", S(var.slot), snap, self._site(what))
        g.shown = f"array of shape {snap.shape}"
        self._guard(g)
        return np.array(snap, copy=True)


def _vars_of_kind(args, kwargs, kinds, slices=False):
    """Does a Var of a dtype kind in ``kinds`` (or, with ``slices``, any Var inside a slice) appear in the
    arguments? Such a value may set an output's shape: a boolean mask's count, a shape or repeat count."""
    stack = [args, kwargs]
    while stack:
        x = stack.pop()
        t = type(x)
        if t is Var:
            if np.result_type(x.value).kind in kinds:
                return True
        elif t in (tuple, list) or isinstance(x, tuple):
            stack.extend(x)
        elif t is dict:
            stack.extend(x.values())
        elif t is slice:
            if slices and any(type(e) is Var for e in (x.start, x.stop, x.step)):
                return True
    return False


import operator as _op  # noqa: E402

_PY_BINOPS = {"add": _op.add, "sub": _op.sub, "mul": _op.mul, "truediv": _op.truediv, "floordiv": _op.floordiv,
              "mod": _op.mod, "pow": _op.pow, "matmul": _op.matmul, "and": _op.and_, "or": _op.or_, "xor": _op.xor,
              "lshift": _op.lshift, "rshift": _op.rshift, "lt": _op.lt, "le": _op.le, "gt": _op.gt, "ge": _op.ge,
              "eq": _op.eq, "ne": _op.ne}
_PY_IBINOPS = {"add": _op.iadd, "sub": _op.isub, "mul": _op.imul, "truediv": _op.itruediv,
               "floordiv": _op.ifloordiv, "mod": _op.imod, "pow": _op.ipow, "matmul": _op.imatmul, "and": _op.iand,
               "or": _op.ior, "xor": _op.ixor, "lshift": _op.ilshift, "rshift": _op.irshift}
_PY_UNOPS = {"neg": _op.neg, "pos": _op.pos, "invert": _op.invert}
