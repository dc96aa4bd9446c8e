"""Tracing: values that record the primitives applied to them as a graph.

A Tracer wraps a value at one trace level; nested transforms (hessian) use higher
levels, so a derivative rule run inside an outer trace is recorded there too.
Operators, ndarray methods, numpy functions and ufuncs on a Tracer call the
registered primitives (see ``numpy_api.py`` for the tables).

Python control flow on values works because every call is traced afresh: a
comparison (``x > 0``) gives a constant boolean array, so ``if jt.getval(x).sum() > 0``
or ``if (x > 0).all()`` branch on this call's values. What cannot work is turning a
traced value into a Python or numpy scalar (``float(x)``, ``math.exp(x)``,
``np.float64(x)``, ``x.item()``): the derivative would silently be lost, so those raise
:class:`ConcretizationError`.
"""
import itertools

import numpy as np

from . import numpy_api
from .errors import ConcretizationError, NotDifferentiableError
from .registry import registry

__all__ = ["Tracer", "new_level", "release_level", "level_name", "count_step", "toposort", "getval", "install_operators"]

_levels = itertools.count(1)
_seq = itertools.count()  # creation order of Tracers: parents are always created before children
_active = {}  # level -> [name of the function being traced, recorded calls counted]: live traces only


def new_level(name="f", start=None):
    """A fresh trace level, higher than every level created before, for tracing the function ``name``."""
    level = next(_levels)
    _active[level] = [name, 0]
    return level


def release_level(level):
    _active.pop(level, None)


def level_name(level):
    return _active.get(level, ("a function",))[0]


def count_step(level):
    """Count one more primitive call recorded at ``level``; returns its 1-based step number. (Only the NaN check
    counts, so tracing pays nothing for it otherwise.)"""
    entry = _active.get(level)
    if entry is None:
        return 0
    entry[1] += 1
    return entry[1]


def getval(x):
    """The plain numpy value under any number of trace levels (a deliberate constant: no derivative flows
    through it)."""
    while type(x) is Tracer:
        x = x.value
    return x


def _concrete(self, what):
    fname = level_name(self.level)
    return ConcretizationError(
        f"{what} on a traced value of shape {self.shape} while differentiating {fname}: the value would become a "
        f"plain Python/numpy scalar and its derivative would be silently lost. Use the jactensor function instead "
        f"(jt.exp(x), not math.exp(x); x * y, not x * float(y)), or take the value as a deliberate constant with "
        f"jt.getval(x). Comparisons (x > 0) and Python `if` on them still work: each call is traced afresh.")


class Tracer:
    """A value being traced at ``level``, and the graph node that made it.

    A traced input has ``prim`` None; otherwise ``prim`` was applied with ``params`` to
    ``args`` (the inputs unwrapped at this level), and ``parents`` lists (argnum, Tracer)
    for the inputs traced at this level. ``seq`` is the creation order, which is a
    topological order of the graph. One object per recorded call keeps tracing cheap.
    """

    __slots__ = ("value", "level", "prim", "params", "args", "parents", "seq")
    __array_priority__ = 1000

    def __init__(self, value, level, prim=None, params=None, args=(), parents=()):
        self.value, self.level, self.prim, self.params, self.args, self.parents = \
            value, level, prim, params, args, parents
        self.seq = next(_seq)

    # numpy-like attributes
    shape = property(lambda self: self.value.shape)  # values are arrays, numpy scalars or Tracers
    ndim = property(lambda self: self.value.ndim)
    size = property(lambda self: np.size(self.value))
    dtype = property(lambda self: np.result_type(getval(self.value)))
    T = property(lambda self: registry["transpose"](self))
    mT = property(lambda self: self.swapaxes(-1, -2))

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d traced array")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d traced array")
        getitem = registry["getitem"]
        return (getitem(self, i) for i in range(self.shape[0]))

    def __repr__(self):
        return f"Tracer(shape={self.shape}, level={self.level})"

    __hash__ = object.__hash__

    # ---- numpy protocols ----------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """numpy ufuncs (and scipy.special's) with a jactensor function of the same name record it."""
        fn = numpy_api.UFUNCS.get(ufunc.__name__)
        if method != "__call__" or fn is None:
            what = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
            raise numpy_api.unsupported(what, "ufunc")
        kwargs = numpy_api.strip_defaults(f"np.{ufunc.__name__}", kwargs, getattr(fn, "numpy_kwargs", ()))
        return fn(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        fn = numpy_api.FUNCTIONS.get(func)
        if fn is None:
            raise numpy_api.unsupported(numpy_api._np_name(func))
        return fn(*args, **numpy_api.strip_defaults(numpy_api._np_name(func), kwargs,
                                                    getattr(fn, "numpy_kwargs", ())))

    def __array__(self, dtype=None, copy=None):
        name = _scipy_converter()
        if name is not None:
            raise ConcretizationError(
                f"scipy.special.{name} converts its argument to a numpy array, so it cannot see a traced value "
                f"(shape {self.shape}) and its derivative would be lost; call jt.special.{name} instead (same "
                f"arguments and defaults)")
        raise _concrete(self, "np.asarray / np.array (or a plain ndarray's method such as X.dot(W) with a traced "
                              "W: numpy's C method cannot be intercepted; write np.dot(X, W) or X @ W)")

    def __bool__(self):
        raise _concrete(self, "bool() (an `if` or `while` on the traced value itself)")

    def __float__(self):
        raise _concrete(self, "float()")

    def __int__(self):
        raise _concrete(self, "int()")

    def __index__(self):
        raise _concrete(self, "use as an index or size")

    def __complex__(self):
        raise _concrete(self, "complex()")

    def item(self, *args):
        raise _concrete(self, ".item()")

    def tolist(self):
        raise _concrete(self, ".tolist()")

    def __setitem__(self, idx, value):
        raise NotDifferentiableError(
            "item assignment (x[idx] = v) on a traced value: arrays are not updated in place inside a transform. "
            "Write it functionally: jt.where(mask, v, x), x + jt.scatter_add(v - x[idx], idx, x.shape), or "
            "jt.at_set(x, idx, v) (a new array equal to x with x[idx] = v); `x += 1` rebinds the name and works.")

    # comparisons give constant masks (derivative zero almost everywhere)
    def __gt__(self, other):
        return getval(self) > getval(other)

    def __lt__(self, other):
        return getval(self) < getval(other)

    def __ge__(self, other):
        return getval(self) >= getval(other)

    def __le__(self, other):
        return getval(self) <= getval(other)

    def __eq__(self, other):
        return getval(self) == getval(other)

    def __ne__(self, other):
        return getval(self) != getval(other)

    # operators (rebound straight to the primitives by install_operators)
    __add__ = lambda a, b: registry["add"](a, b)
    __radd__ = lambda a, b: registry["add"](b, a)
    __sub__ = lambda a, b: registry["subtract"](a, b)
    __rsub__ = lambda a, b: registry["subtract"](b, a)
    __mul__ = lambda a, b: registry["multiply"](a, b)
    __rmul__ = lambda a, b: registry["multiply"](b, a)
    __truediv__ = lambda a, b: registry["divide"](a, b)
    __rtruediv__ = lambda a, b: registry["divide"](b, a)
    __matmul__ = lambda a, b: registry["matmul"](a, b)
    __rmatmul__ = lambda a, b: registry["matmul"](b, a)
    __pow__ = lambda a, b: registry["power"](a, b)
    __rpow__ = lambda a, b: registry["power"](b, a)
    __neg__ = lambda a: registry["negative"](a)
    __pos__ = lambda a: a
    __getitem__ = lambda a, idx: registry["getitem"](a, idx)

    def __abs__(self):
        fn = numpy_api.METHODS.get("__abs__") or numpy_api.UFUNCS.get("absolute")
        if fn is None:
            raise numpy_api.unsupported("abs")
        return fn(self)

    # ---- ndarray methods ------------------------------------------------------------------------
    # numpy's np.sum(x) / np.mean / np.max / np.reshape call these methods with dtype/out/order
    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **np_kwargs):
        _plain("sum", dtype, out, np_kwargs)
        return registry["sum"](self, axis=axis, keepdims=_kd(keepdims))

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **np_kwargs):
        _plain("mean", dtype, out, np_kwargs)
        return registry["mean"](self, axis=axis, keepdims=_kd(keepdims))

    def max(self, axis=None, out=None, keepdims=False, **np_kwargs):
        _plain("max", None, out, np_kwargs)
        return registry["max"](self, axis=axis, keepdims=_kd(keepdims))

    def reshape(self, *shape, order="C", **np_kwargs):
        if order != "C":
            raise NotDifferentiableError("reshape: only order='C' is supported on traced arrays")
        shape = np_kwargs.pop("shape", shape)
        _plain("reshape", None, None, np_kwargs)
        return registry["reshape"](self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return registry["transpose"](self, (axes[0] if len(axes) == 1 else axes) or None)

    def swapaxes(self, a, b):
        n = self.ndim
        axes = list(range(n))
        axes[a], axes[b] = axes[b], axes[a]
        return registry["transpose"](self, tuple(axes))

    def __getattr__(self, name):
        fn = numpy_api.METHODS.get(name)
        if fn is None or name.startswith("__"):
            if name.startswith("__"):
                raise AttributeError(name)
            import difflib
            known = sorted(set(numpy_api.METHODS) | {"sum", "mean", "max", "reshape", "transpose", "swapaxes", "T",
                                                     "shape", "ndim", "size", "dtype"})
            close = difflib.get_close_matches(name, known, n=4)
            raise AttributeError(f"a traced array has no method {name!r} that jactensor can differentiate"
                                 + (f"; closest: {', '.join(close)}" if close else f"; supported: {', '.join(known)}"))
        return lambda *args, **kwargs: fn(self, *args, **kwargs)


_SCIPY_PYTHON_FUNCTIONS = {"softmax", "log_softmax", "logsumexp", "polygamma"}


def _scipy_converter():
    """The name of the scipy.special Python function (not a ufunc) that is converting a traced value, if any:
    its error then names the jt.special equivalent."""
    import sys
    f = sys._getframe(2)
    for _ in range(8):
        if f is None:
            return None
        if f.f_code.co_name in _SCIPY_PYTHON_FUNCTIONS and \
                str(f.f_globals.get("__name__", "")).startswith("scipy.special"):
            return f.f_code.co_name
        f = f.f_back
    return None


def _kd(keepdims):
    return False if keepdims is np._NoValue else bool(keepdims)


def _plain(name, dtype, out, np_kwargs):
    extra = numpy_api.strip_defaults(name, dict(np_kwargs, dtype=dtype, out=out))
    if extra:
        raise NotDifferentiableError(f"{name}: unsupported argument(s) {sorted(extra)} on a traced array")


def toposort(outputs):
    """Tracers reachable from the output Tracers, parents before children."""
    seen = {}
    stack = list(outputs)
    while stack:
        node = stack.pop()
        if node.seq in seen:
            continue
        seen[node.seq] = node
        for _, p in node.parents:
            if p.seq not in seen:
                stack.append(p)
    return [seen[k] for k in sorted(seen)]  # creation order is a topological order


def install_operators(registry):
    """Bind Tracer's operators straight to the registered primitives (called once, after import)."""
    r = registry
    add, sub, mul, div, mm, pw = (r[n] for n in ("add", "subtract", "multiply", "divide", "matmul", "power"))
    ops = {"__add__": lambda a, b: add(a, b), "__radd__": lambda a, b: add(b, a),
           "__sub__": lambda a, b: sub(a, b), "__rsub__": lambda a, b: sub(b, a),
           "__mul__": lambda a, b: mul(a, b), "__rmul__": lambda a, b: mul(b, a),
           "__truediv__": lambda a, b: div(a, b), "__rtruediv__": lambda a, b: div(b, a),
           "__matmul__": lambda a, b: mm(a, b), "__rmatmul__": lambda a, b: mm(b, a),
           "__pow__": lambda a, b: pw(a, b), "__rpow__": lambda a, b: pw(b, a)}
    for name, fn in ops.items():
        setattr(Tracer, name, fn)
