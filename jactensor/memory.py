"""The memory guard: sizes in exact integers, and the refusal before anything over budget is allocated."""
import math

from .config import config
from .errors import JacobianTooLargeError

__all__ = ["ITEMSIZE", "fmt_bytes", "nbytes", "numel", "check_bytes", "check_shape"]

ITEMSIZE = 8  # float64 throughout


def numel(shape):
    """Number of elements of ``shape`` as a Python int (never overflows, unlike np.prod in int64)."""
    return math.prod(int(s) for s in shape)


def nbytes(shape):
    """Bytes of a float64 array of ``shape``, exactly."""
    return numel(shape) * ITEMSIZE


def fmt_bytes(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def check_bytes(n, what, shape=None, hint=None):
    """Refuse (before allocating) anything above config.max_jacobian_bytes. ``n`` in bytes."""
    limit = config.max_jacobian_bytes
    if n > limit:
        shp = "" if shape is None else f"shape {tuple(shape)} "
        raise JacobianTooLargeError(
            f"{what}: {shp}would take {fmt_bytes(n)} as float64, above config.max_jacobian_bytes = "
            f"{fmt_bytes(limit)}; nothing was allocated. "
            + (hint or "Use jt.grad or jt.vjp (reverse mode never builds the Jacobian), keep it factored with "
                       "jacobian(..., structured=True) (and J.to_dask() for a dense form past memory), or raise "
                       "the limit with jt.config.override(max_jacobian_bytes=...)."))


def check_shape(shape, what, count=1):
    """check_bytes for ``count`` float64 arrays of ``shape``; returns the shape as a tuple."""
    shape = tuple(int(s) for s in shape)
    check_bytes(count * nbytes(shape), what, shape)
    return shape
