"""Array backends other than numpy, and the one place the engine dispatches to them.

A *lazy* array is one the engine must not turn into numpy: a dask array (``dask.py``: Jacobians larger than
memory) or a value recorded by ``jt.jit`` (``jit.py``: compiled replay). A backend registers a predicate and
handlers with :func:`register_lazy`; the engine calls the functions below at its few hook points
(factors entering a Jacobian, a contraction, a dense materialisation, a primitive's forward), never branching
on backends itself, and derivative rules never see the difference.
"""

__all__ = ["is_dask", "require", "register_lazy", "lazy_backend", "as_factor", "contract", "embed",
           "call_primitive", "basis", "LAZY_TYPES"]

EXTRAS = {"dask": "dask", "zarr": "dask", "distributed": "dask", "scipy": "sparse"}

_BACKENDS = []          # (name, predicate(x) -> bool, handlers dict)
LAZY_TYPES = set()      # exact types known to be lazy (fast check on hot paths)


def is_dask(x):
    """True for a dask array, checked without importing dask."""
    return type(x).__module__.startswith("dask.")


def require(module):
    """Import an optional dependency, or raise ImportError naming the extra that installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        extra = EXTRAS.get(top, top)
        raise ImportError(f"this needs {top}, which is not installed: pip install 'jactensor[{extra}]'") from None


def register_lazy(name, predicate, types=(), **handlers):
    """Register a lazy backend. Handlers (each optional):
    ``as_factor(x)`` -> x as a Jacobian factor (float64, still lazy);
    ``contract(expr, operands)`` -> the contraction of a cached opt_einsum expression over the operands;
    ``embed(terms, pattern, sizes, what)`` -> the dense sum of terms (see jacobian._embed);
    ``call_primitive(prim, inputs, params)`` -> the primitive's forward value;
    ``basis(make, args, like)`` -> ``make(*args)``, the basis block of a batched rev/fwd pass, as a value of
    the backend (so what is computed from it is not taken as a constant)."""
    _BACKENDS.append((name, predicate, handlers))
    LAZY_TYPES.update(types)


def lazy_backend(*xs):
    """The handlers of the first registered backend that claims one of ``xs`` (None for plain numpy)."""
    if not _BACKENDS:
        return None
    for x in xs:
        if type(x) in LAZY_TYPES or (not isinstance(x, (float, int)) and type(x).__module__ != "numpy"):
            for _, pred, handlers in _BACKENDS:
                if pred(x):
                    return handlers
    return None


def as_factor(x):
    """A Jacobian factor: float64 numpy, or the lazy array as its backend keeps it."""
    import numpy as np
    b = lazy_backend(x)
    if b is not None and "as_factor" in b:
        return b["as_factor"](x)
    return np.asarray(x, dtype=np.float64)


def contract(expr, operands):
    b = lazy_backend(*operands)
    if b is not None and "contract" in b:
        return b["contract"](expr, operands)
    return None


def embed(terms, pattern, sizes, what):
    for t in terms:
        b = lazy_backend(*(a for a, _ in t.factors))
        if b is not None and "embed" in b:
            return b["embed"](terms, pattern, sizes, what)
    return None


def call_primitive(prim, inputs, params):
    b = lazy_backend(*inputs, *params.values())  # a lazy value may sit in the params (jt.jit: labels, indices)
    if b is not None and "call_primitive" in b:
        return b["call_primitive"](prim, inputs, params)
    return None


def basis(make, args, *like):
    """The basis block ``make(*args)`` (numpy) of a batched reverse/forward pass over values ``like``; a lazy
    backend may return it as one of its own values instead."""
    b = lazy_backend(*like)
    if b is not None and "basis" in b:
        return b["basis"](make, args, like)
    return make(*args)


def _dask_handler(name):
    """A handler that imports backends/dask.py (and dask) on first use: `import jactensor` never imports dask."""
    def handler(*args):
        from . import dask as backend
        return getattr(backend, name)(*args)
    handler.__name__ = name
    return handler


# dask arrays as Jacobian factors: kept lazy, contracted by opt_einsum's dask backend, computed when materialised.
# Other dask collections are claimed too, so as_factor refuses them with a message instead of computing them.
register_lazy("dask", is_dask, as_factor=_dask_handler("as_factor"), contract=_dask_handler("contract"),
              embed=_dask_handler("embed"))
