"""Tracing: values that record the primitives applied to them as a graph.

A Tracer wraps a value at one trace level; nested transforms (hessian) use
higher levels, so a derivative rule run inside an outer trace is recorded
there too. Operators and methods on a Tracer call the registered primitives.
"""
import itertools

import numpy as np

__all__ = ["Tracer", "new_level", "toposort", "getval"]

_levels = itertools.count(1)
_seq = itertools.count()  # creation order of Tracers: parents are always created before children


def new_level():
    """A fresh trace level, higher than every level created before."""
    return next(_levels)


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
    dtype = property(lambda self: np.result_type(self.value))
    T = property(lambda self: _p("transpose")(self))
    mT = property(lambda self: self.swapaxes(-1, -2))

    def __len__(self):
        return len(self.value)

    def __repr__(self):
        return f"Tracer(shape={self.shape}, level={self.level})"

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """numpy ufuncs with a registered primitive of the same name record it (np.exp(x) == jt.exp(x))."""
        name = _UFUNCS.get(ufunc.__name__)
        if method != "__call__" or name is None or kwargs:
            raise TypeError(
                f"np.{ufunc.__name__}{'' if method == '__call__' else '.' + method} has no derivative rule in "
                f"jactensor; inside a transform use jactensor primitives (jt.{', jt.'.join(sorted(set(_UFUNCS.values())))})")
        return _p(name)(*inputs)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "a traced value cannot become a numpy array inside a jactensor transform: np.* functions "
            "do not record derivatives. Use the jactensor function of the same name (jt.exp, jt.sum, ...)."
        )

    def __bool__(self):
        raise TypeError("the truth value of a traced array is not defined inside a transform; "
                        "branch on shapes or on jt.getval(x) instead")

    def __float__(self):
        return float(getval(self))

    # operators
    __add__ = lambda a, b: _p("add")(a, b)
    __radd__ = lambda a, b: _p("add")(b, a)
    __sub__ = lambda a, b: _p("subtract")(a, b)
    __rsub__ = lambda a, b: _p("subtract")(b, a)
    __mul__ = lambda a, b: _p("multiply")(a, b)
    __rmul__ = lambda a, b: _p("multiply")(b, a)
    __truediv__ = lambda a, b: _p("divide")(a, b)
    __rtruediv__ = lambda a, b: _p("divide")(b, a)
    __matmul__ = lambda a, b: _p("matmul")(a, b)
    __rmatmul__ = lambda a, b: _p("matmul")(b, a)
    __pow__ = lambda a, b: _p("power")(a, b)
    __rpow__ = lambda a, b: _p("power")(b, a)
    __neg__ = lambda a: _p("negative")(a)
    __pos__ = lambda a: a
    __getitem__ = lambda a, idx: _p("getitem")(a, idx)
    # comparisons give constant masks (derivative zero almost everywhere)
    __gt__ = lambda a, b: getval(a) > getval(b)
    __lt__ = lambda a, b: getval(a) < getval(b)
    __ge__ = lambda a, b: getval(a) >= getval(b)
    __le__ = lambda a, b: getval(a) <= getval(b)

    # methods
    # numpy's np.sum(x) / np.mean / np.max / np.reshape call these methods with dtype/out/order
    def sum(self, axis=None, keepdims=False, **np_kwargs):
        return _p("sum")(self, axis=axis, keepdims=_plain(keepdims, np_kwargs))

    def mean(self, axis=None, keepdims=False, **np_kwargs):
        return _p("mean")(self, axis=axis, keepdims=_plain(keepdims, np_kwargs))

    def max(self, axis=None, keepdims=False, **np_kwargs):
        return _p("max")(self, axis=axis, keepdims=_plain(keepdims, np_kwargs))

    def reshape(self, *shape, order="C"):
        if order != "C":
            raise ValueError("reshape: only order='C' is supported on traced arrays")
        return _p("reshape")(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return _p("transpose")(self, (axes[0] if len(axes) == 1 else axes) or None)

    def swapaxes(self, a, b):
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return _p("transpose")(self, tuple(axes))


_UFUNCS = {"add": "add", "subtract": "subtract", "multiply": "multiply", "divide": "divide",
           "true_divide": "divide", "negative": "negative", "exp": "exp", "log": "log", "sqrt": "sqrt",
           "tanh": "tanh", "power": "power", "matmul": "matmul"}


def _plain(keepdims, np_kwargs):
    bad = {k: v for k, v in np_kwargs.items() if v is not None and v is not np._NoValue}
    if bad:
        raise TypeError(f"arguments {sorted(bad)} are not supported on traced arrays")
    return False if keepdims is np._NoValue else keepdims


def getval(x):
    """The plain numpy value under any number of trace levels."""
    while type(x) is Tracer:
        x = x.value
    return x


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


_registry = None


def _p(name):
    global _registry  # the registry is filled at import; look it up once (cycle: core imports trace)
    if _registry is None:
        from .core import registry
        _registry = registry
    return _registry[name]


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
