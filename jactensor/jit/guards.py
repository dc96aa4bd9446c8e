"""Guards: the compile-time facts a replay re-checks before trusting the recorded program.

A guard is recorded wherever the function's Python code saw a *value* rather than a recorded
array: ``if x.sum() > 0`` (``bool``), ``range(int(n))`` (``int``), ``math.exp(x)`` (``float``),
``x.item()``, ``np.asarray(x)`` (the whole value), and the shape of an array whose length depends
on values (``x[mask]``, ``np.nonzero``). At replay each guard recomputes its value at the point
where it was recorded and compares it with the compile-time one (exactly: ``-0.0`` differs from
``0.0``, NaN equals NaN). On a mismatch the replay stops with :class:`GuardFailed`; the compiled
function then traces afresh for this call and keeps the new program as a variant keyed by the
guard and the value it saw, so a later call that takes the same branch replays it.
"""
import math
import operator

import numpy as np

__all__ = ["Guard", "GuardFailed", "same_scalar", "same_array", "same_bytes", "scalar_key", "array_key",
           "SCALAR_CONVERT"]


class GuardFailed(Exception):
    """Raised inside a replay: guard ``index`` saw ``key`` (a hashable summary of the value)."""

    def __init__(self, index, key):
        super().__init__(index, key)
        self.index, self.key = index, key


SCALAR_CONVERT = {"bool": bool, "int": int, "float": float, "complex": complex, "index": operator.index,
                  "item": lambda v, *a: v.item(*a)}


def same_scalar(a, b):
    """Exact equality of two Python scalars (type, sign of zero, NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if a != a:
            return b != b
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is complex:
        return same_scalar(a.real, b.real) and same_scalar(a.imag, b.imag)
    return a == b


def same_bytes(a, b):
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


def same_array(a, expected):
    """Same shape, dtype and bytes (so NaN payloads and signed zeros count)."""
    a = np.asarray(a)
    return a.shape == expected.shape and a.dtype == expected.dtype and a.tobytes() == expected.tobytes()


def scalar_key(v):
    return ("scalar", type(v).__name__, repr(v))


def array_key(a):
    a = np.asarray(a)
    return ("array", a.shape, a.dtype.str, a.tobytes())


class Guard:
    """``kind`` of check on the buffer ``ref`` (a template): bool, int, index, float, complex, item (the
    Python value of the conversion), result (a Python value a numpy function returned), shape, value (the
    whole array). ``expected`` is the compile-time value (for ``value``: the constant holding it)."""

    __slots__ = ("kind", "ref", "expected", "site", "args", "index", "shown")

    def __init__(self, kind, ref, expected, site, args=()):
        self.kind, self.ref, self.expected, self.site, self.args = kind, ref, expected, site, args
        self.index, self.shown = None, None

    def describe(self):
        shown = self.shown if self.shown is not None else repr(self.expected)
        return f"{self.kind} == {shown}: {self.site}"

    def render(self, x, const, lit):
        """Python source checking this guard on the expression ``x``; ``const(v)`` names a constant,
        ``lit(v)`` spells a literal."""
        i, k, e = self.index, self.kind, self.expected
        if k == "bool":
            return f"if bool({x}) is not {e!r}: raise _GuardFailed({i}, {not e!r})"
        if k in ("int", "index") and type(e) is int:
            conv = "int" if k == "int" else "_index"
            return f"if (_g := {conv}({x})) != {e!r}: raise _GuardFailed({i}, _g)"
        if k == "shape":
            return f"if _shape({x}) != {lit(tuple(e))}: raise _GuardFailed({i}, _shape({x}))"
        if k == "value":
            return f"if not _same_array({x}, {const(e)}): raise _GuardFailed({i}, _array_key({x}))"
        if k == "result":
            val = x
        elif k == "item":
            val = f"{x}.item({', '.join(lit(a) for a in self.args)})"
        else:
            val = f"{ {'int': 'int', 'index': '_index', 'float': 'float', 'complex': 'complex'}[k]}({x})"
        return f"if not _same_scalar(_g := {val}, {const(e)}): raise _GuardFailed({i}, _scalar_key(_g))"


RUNTIME = {"_GuardFailed": GuardFailed, "_index": operator.index, "_shape": np.shape, "_same_array": same_array,
           "_array_key": array_key, "_same_scalar": same_scalar, "_scalar_key": scalar_key}
