"""Helpers shared by the op families: axis handling, broadcasting in rules, input batteries."""
import numpy as np

from .. import backends as _backends
from ..errors import AxisError
from ..tracer import Tracer

__all__ = ["norm_axes", "unbroadcast", "expand_to", "nbatch", "battery", "bcast"]


def bcast(x, shape):
    """broadcast_to inside rules: a filled new array (cheaper than np.broadcast_to's Python wrapper,
    and writable), or the primitive for a traced value."""
    if type(x) is Tracer:
        from .shape import broadcast_to
        return broadcast_to.apply((x,), {"shape": tuple(shape)})
    if type(x) in _backends.LAZY_TYPES:  # a lazy (jt.jit) value: one recorded call (a read-only view)
        return np.broadcast_to(x, tuple(shape))
    out = np.empty(shape)
    out[...] = x
    return out


def norm_axes(op, axis, ndim, allow_none=True):
    """Axis argument -> sorted tuple of negative axes (valid with leading batch axes)."""
    if axis is None:
        if not allow_none:
            raise AxisError(f"{op}: axis=None is not allowed here; pass an integer axis")
        return tuple(range(-ndim, 0))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise AxisError(f"{op}: axis must be an int, a tuple of ints or None; got {axis!r}")
        if not -ndim <= a < ndim:
            raise AxisError(f"{op}: axis {a} is out of range for an input with {ndim} dimension(s); "
                            f"valid axes are {-ndim}..{ndim - 1}" if ndim else
                            f"{op}: axis {a} given for a 0-d input; use axis=None")
        out.append(int(a) - ndim if a >= 0 else int(a))
    if len(set(out)) != len(out):
        raise AxisError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def nbatch(g, ans):
    """Number of leading batch axes a cotangent carries beyond the output's shape."""
    return g.ndim - ans.ndim


def unbroadcast(x, shape, nb):
    """Sum ``x`` (batch + broadcast shape) back to batch + ``shape``."""
    shape = tuple(shape)
    xs = x.shape
    if xs[nb:] == shape:
        return x
    extra = len(xs) - nb - len(shape)
    if extra > 0:
        x = x.sum(axis=tuple(range(nb, nb + extra)))
    xs = x.shape
    axes = tuple(nb + i for i, n in enumerate(shape) if n == 1 and xs[nb + i] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


def expand_to(t, shape, ndim):
    """Reshape a tangent (batch + shape) to batch + (1,)*k + shape so it broadcasts to ndim axes."""
    k = ndim - len(shape)
    if k <= 0:
        return t
    nb = t.ndim - len(shape)
    return t.reshape(t.shape[:nb] + (1,) * k + tuple(shape))


# ---- input batteries: 0-d, 1-d, 2-d, batched and broadcast cases ---------------------------
DOMAINS = {
    "real": lambda rng, s: rng.normal(size=s),
    "positive": lambda rng, s: rng.uniform(0.5, 2.0, size=s),
    "nonzero": lambda rng, s: rng.choice([-1.0, 1.0], size=s) * rng.uniform(0.2, 2.0, size=s),
}


def sample(rng, shape, domain="real"):
    return np.asarray(DOMAINS[domain](rng, shape), dtype=np.float64)


def unary_shapes(n):
    return [(), (n,), (n, n + 1), (2, n, 3)]


def binary_shapes(n):
    return [((), ()), ((n,), (n,)), ((n, n + 1), (n, n + 1)), ((n, 1), (n + 1,)),
            ((2, n, 3), (n, 3)), ((n,), ()), ((1, n), (2, 1))]


def battery(kind, domains=("real",), **params):
    """A standard battery: ``battery(rng, n)`` returns a list of (args, kwargs) calls."""
    def unary(rng, n):
        return [((sample(rng, s, domains[0]),), dict(params)) for s in unary_shapes(n)]

    def binary(rng, n):
        cases = [((sample(rng, a, domains[0]), sample(rng, b, domains[-1])), dict(params))
                 for a, b in binary_shapes(n)]
        cases.append(((sample(rng, (n, 2), domains[0]), 1.5), dict(params)))  # python scalar: a constant
        return cases

    return {"unary": unary, "binary": binary}[kind]


# ---- random cases for property tests (each primitive's ``generate(rng)``) ------------------------
def random_shape(rng, min_ndim=0, max_ndim=3, max_size=4, zero=0.1, min_size=1):
    """A random shape: rank in [min_ndim, max_ndim], lengths in [min_size, max_size], each length 0 with
    probability ``zero`` (empty axes) and 1 often (broadcasting edge cases)."""
    nd = int(rng.integers(min_ndim, max_ndim + 1))
    out = []
    for _ in range(nd):
        r = rng.random()
        out.append(0 if r < zero else (1 if r < zero + 0.2 else int(rng.integers(min_size, max_size + 1))))
    return tuple(out)


def broadcast_partner(rng, shape, zero=0.0):
    """A shape that broadcasts with ``shape``: fewer leading axes, some axes 1 (on either side)."""
    k = int(rng.integers(0, len(shape) + 1))
    other = [1 if rng.random() < 0.3 else n for n in shape[len(shape) - k:]]
    return tuple(other)


def random_axis(rng, ndim, allow_none=True, allow_tuple=True):
    """None, an int (negative half the time) or a tuple of distinct axes, valid for ``ndim``."""
    if ndim == 0 or (allow_none and rng.random() < 0.2):
        return None
    if allow_tuple and ndim >= 2 and rng.random() < 0.3:
        k = int(rng.integers(1, ndim + 1))
        axes = rng.choice(ndim, size=k, replace=False)
        return tuple(int(a) - ndim if rng.random() < 0.5 else int(a) for a in axes)
    a = int(rng.integers(0, ndim))
    return a - ndim if rng.random() < 0.5 else a


def random_array(rng, shape, domain="real", noncontiguous=None):
    """Values in the op's domain (see DOMAINS); sometimes a non-contiguous view (strided or transposed)."""
    x = sample(rng, shape, domain)
    if noncontiguous is None:
        noncontiguous = rng.random() < 0.25
    if noncontiguous and x.ndim:
        if rng.random() < 0.5:  # every other entry of a twice-as-long array
            big = sample(rng, shape[:-1] + (2 * shape[-1],), domain)
            x = big[..., ::2]
        else:                   # a transposed copy, transposed back: same values, Fortran order
            x = np.asfortranarray(x)
    return x
