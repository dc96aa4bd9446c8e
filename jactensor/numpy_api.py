"""Which numpy functions, ufuncs and ndarray methods work on traced values, and what they call.

Three tables, filled at import by the op families (``defprimitive(..., numpy=...)`` or the
``implements`` decorator) and read by ``Tracer``:

- FUNCTIONS: numpy function object (``np.where``) -> jactensor function, via ``__array_function__``;
- UFUNCS: ufunc name (``"sin"``, also scipy.special's ``"expit"``) -> jactensor function, via
  ``__array_ufunc__``;
- METHODS: ndarray method name (``"dot"``) -> jactensor function taking the array first.

A jactensor function registered here accepts numpy's signature for that name; keyword
arguments numpy passes with their default values (``out=None``, ``dtype=None``) are dropped
before the call, anything else it does not support raises a clear error.
"""
import difflib

import numpy as np

__all__ = ["FUNCTIONS", "UFUNCS", "METHODS", "implements", "register", "supported_names", "unsupported",
           "strip_defaults"]

FUNCTIONS = {}
UFUNCS = {}
METHODS = {}


def _np_name(f):
    mod = getattr(f, "__module__", "") or ""
    name = getattr(f, "__name__", repr(f))
    if isinstance(f, np.ufunc) or not mod or "._" in mod:
        return f"np.{name}"
    if mod.startswith("scipy.special"):
        return f"scipy.special.{name}"
    return mod.replace("numpy", "np", 1) + "." + name


def register(fn, numpy=(), methods=()):
    """Map numpy callables (functions or ufuncs; ufuncs may be given by name) and ndarray method names to
    ``fn``."""
    for f in numpy:
        if isinstance(f, str) or isinstance(f, np.ufunc) or type(f).__name__ == "ufunc":
            name = f if isinstance(f, str) else f.__name__
            if name in UFUNCS and UFUNCS[name] is not fn:
                raise ValueError(f"the ufunc {name!r} is already mapped to {UFUNCS[name]!r}")
            UFUNCS[name] = fn
        else:
            if f in FUNCTIONS and FUNCTIONS[f] is not fn:
                raise ValueError(f"{_np_name(f)} is already mapped to {FUNCTIONS[f]!r}")
            FUNCTIONS[f] = fn
    for m in methods:
        if m in METHODS and METHODS[m] is not fn:
            raise ValueError(f"the method {m!r} is already mapped to {METHODS[m]!r}")
        METHODS[m] = fn
    return fn


def implements(*numpy, methods=()):
    """Decorator: ``@implements(np.var, methods=("var",))`` on a jactensor function with numpy's signature."""
    def deco(fn):
        return register(fn, numpy, methods)
    return deco


def supported_names():
    """Every numpy name reachable on traced values: functions, ufuncs and methods (sorted, deduplicated)."""
    names = {_np_name(f) for f in FUNCTIONS} | {f"np.{n}" if hasattr(np, n) else f"scipy.special.{n}" for n in UFUNCS}
    return sorted(names), sorted(f"ndarray.{m}" for m in METHODS)


def _all_names():
    funcs, methods = supported_names()
    return funcs + methods


def unsupported(what, kind="function"):
    """The one error for a numpy callable with no derivative here, with the closest supported names."""
    from .errors import NotDifferentiableError
    base = what.split(".")[-1]
    pool = _all_names()
    close = difflib.get_close_matches(what, pool, n=4, cutoff=0.6) or \
        [n for n in pool if n.split(".")[-1] in difflib.get_close_matches(base, [p.split(".")[-1] for p in pool],
                                                                           n=4, cutoff=0.6)][:4]
    hint = f"closest supported: {', '.join(close)}" if close else \
        "see jactensor.numpy_api.supported_names() for the list"
    return NotDifferentiableError(
        f"{what} is not differentiable in jactensor (no derivative rule for this {kind} on traced values); "
        f"{hint}. To use a value as a constant, take it out with jt.getval(x).")


_NUMPY_ONLY = {  # keyword -> test that its value is numpy's default (then it is dropped)
    "out": lambda v: v is None,
    "dtype": lambda v: v is None or np.dtype(v).kind == "f",
    "casting": lambda v: v == "same_kind",
    "order": lambda v: v in ("K", "C", "A"),
    "where": lambda v: v is True,
    "subok": lambda v: v is True,
    "copy": lambda v: v is None or v is True,
    "signature": lambda v: v is None,
}


def strip_defaults(name, kwargs, keep=()):
    """Drop numpy-only keyword arguments passed at their defaults (out=None, dtype=float, ...) and those
    passed as np._NoValue; refuse numpy-only ones with other values. Everything else is kept, and so are the
    names in ``keep`` (a function that handles e.g. ``order`` or ``dtype`` itself declares them in its
    ``numpy_kwargs`` attribute)."""
    out = {}
    for k, v in kwargs.items():
        if v is np._NoValue:
            continue
        test = None if k in keep else _NUMPY_ONLY.get(k)
        if test is None:
            out[k] = v
        elif not test(v):
            from .errors import NotDifferentiableError
            raise NotDifferentiableError(f"{name}: the argument {k}={v!r} is not supported on traced values; "
                                         f"drop it (jactensor computes in float64 and returns new arrays)")
    return out


# ---- shape queries: no derivative involved, answered from the value -------------------------------
def _value(x):
    from .tracer import getval
    return getval(x)


register(lambda a: np.shape(_value(a)), [np.shape])
register(lambda a: np.ndim(_value(a)), [np.ndim])
register(lambda a, axis=None: np.size(_value(a), axis), [np.size])
register(lambda *a: np.result_type(*[_value(x) for x in a]), [np.result_type])
register(lambda x: False, [np.iscomplexobj])
register(lambda x: True, [np.isrealobj])
register(lambda x: np.isfinite(_value(x)), [np.isfinite])
register(lambda x: np.isnan(_value(x)), [np.isnan])
register(lambda x: np.isinf(_value(x)), [np.isinf])


def support_table():
    """Markdown: every numpy (and scipy.special) name that works on traced values, grouped by kind, with the
    jactensor function it calls. The README's table is this text (a test checks they match)."""
    import jactensor  # noqa: F401 - every op family registered
    rows, queries = {}, []
    for f, fn in FUNCTIONS.items():
        if getattr(fn, "__name__", "") == "<lambda>":  # a shape query (np.shape, np.ndim, ...): no derivative
            queries.append(_np_name(f))
            continue
        rows.setdefault(_np_name(f), _jt_name(fn))
    for name, fn in UFUNCS.items():
        key = f"np.{name}" if isinstance(getattr(np, name, None), np.ufunc) else f"scipy.special.{name}"
        if getattr(fn, "__name__", "") == "<lambda>":
            queries.append(key)
            continue
        rows.setdefault(key, _jt_name(fn))
    methods = sorted(m for m in METHODS if not m.startswith("__"))
    groups = {"numpy functions and ufuncs": sorted(k for k in rows if k.startswith("np.") and
                                                   not k.startswith("np.linalg.")),
              "numpy.linalg": sorted(k for k in rows if k.startswith("np.linalg.")),
              "scipy.special (ufuncs)": sorted(k for k in rows if k.startswith("scipy.special."))}
    out = []
    for title, names in groups.items():
        out.append(f"**{title}** ({len(names)}): " + ", ".join(
            f"`{n}`" + ("" if rows[n] in (n.split(".")[-1], f"jt.{n.split('.')[-1]}") else f" ({rows[n]})")
            for n in names))
        out.append("")
    allm = sorted(set(methods) | {"sum", "mean", "max", "reshape", "transpose", "swapaxes"})
    out.append(f"**ndarray methods on traced values** ({len(allm)}): " + ", ".join(f"`.{m}`" for m in allm)
               + "; also the operators, `abs(x)`, `x.T`, `len(x)` and iteration.")
    out.append("")
    out.append("**answered from the value (no derivative involved)**: " + ", ".join(f"`{q}`" for q in sorted(queries)))
    return "\n".join(out)


def _jt_name(fn):
    name = getattr(fn, "__name__", "?")
    mod = getattr(fn, "__module__", "") or ""
    if "linalg" in mod or "decomp" in mod:
        return f"jt.linalg.{name}"
    if mod.endswith("special") and name not in ("erf", "sigmoid"):
        return f"jt.special.{name}"
    return f"jt.{name}"
