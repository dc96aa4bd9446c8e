"""Array backends other than numpy. The contraction helper (``contract.py``) and the Jacobian type
dispatch here; derivative rules never branch on backends.

``dask.py``: Jacobians larger than memory, chunked on dask (the optional ``dask`` extra).
"""

__all__ = ["is_dask", "require"]

EXTRAS = {"dask": "dask", "zarr": "dask", "distributed": "dask", "scipy": "sparse"}


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
