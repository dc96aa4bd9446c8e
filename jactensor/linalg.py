"""``jt.linalg``: numpy.linalg's functions on jactensor primitives (decompositions in ops/decomp.py, norm in
ops/reduce.py).

Functions numpy returns as tuples return the same named tuples here; outputs without a derivative
(slogdet's sign) are constants.
"""
from collections import namedtuple

import numpy as np

from . import numpy_api
from .errors import NotDifferentiableError, ShapeError
from .ops import linalg as _products
from .ops import reduce as _reduce
from .ops.decomp import (LinAlgError, cholesky, det, eigvalsh, eigvecsh, inv, logabsdet, pinv, slogdet_sign,
                         solve, svd_u, svd_vh, svdvals)
from .ops.reduce import norm
from .registry import registry

__all__ = ["LinAlgError", "inv", "det", "slogdet", "solve", "cholesky", "eigh", "eigvalsh", "svd", "svdvals",
           "pinv", "norm", "matrix_norm", "vector_norm", "trace", "diagonal", "matmul", "outer", "tensordot", "cross",
           "vecdot", "matrix_transpose", "multi_dot", "matrix_power", "SlogdetResult", "EighResult", "SVDResult"]

SlogdetResult = namedtuple("SlogdetResult", "sign logabsdet")
EighResult = namedtuple("EighResult", "eigenvalues eigenvectors")
SVDResult = namedtuple("SVDResult", "U S Vh")


@numpy_api.implements(np.linalg.slogdet)
def slogdet(a):
    """numpy.linalg.slogdet(a): (sign, logabsdet) of (..., M, M). The sign is a constant array (its derivative
    is zero wherever it is defined); logabsdet is the primitive ``logabsdet``."""
    return SlogdetResult(slogdet_sign(a), logabsdet(a))


@numpy_api.implements(np.linalg.eigh)
def eigh(a, UPLO="L"):
    """numpy.linalg.eigh(a, UPLO='L'): (eigenvalues, eigenvectors) of the symmetric part of (..., M, M),
    eigenvalues ascending, each eigenvector's largest-magnitude entry positive. Both are differentiable (the
    eigenvectors need distinct eigenvalues); one decomposition serves both."""
    return EighResult(eigvalsh(a, UPLO=UPLO), eigvecsh(a, UPLO=UPLO))


@numpy_api.implements(np.linalg.svd)
def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """numpy.linalg.svd(a, full_matrices=True, compute_uv=True, hermitian=False) for (..., M, N).

    compute_uv=False returns the singular values (descending). Otherwise (U, S, Vh) of the reduced SVD:
    full_matrices=True is accepted for square inputs (where it is the same); for M != N the extra singular
    vectors are not unique, so pass full_matrices=False. hermitian is accepted and ignored (the general SVD
    gives the same factorisation). U's columns have their largest-magnitude entry positive, Vh's rows follow.
    The singular vectors' derivatives need distinct (and, for M != N, nonzero) singular values.
    """
    if not compute_uv:
        return svdvals(a)
    m, n = np.shape(a)[-2:] if np.ndim(a) >= 2 else (None, None)
    if full_matrices and m != n and m is not None:
        raise NotDifferentiableError(
            f"svd: full_matrices=True for a {m} x {n} input: the extra {abs(m - n)} singular vectors are not unique "
            f"and have no derivative; pass full_matrices=False (the reduced SVD)")
    return SVDResult(svd_u(a), svdvals(a), svd_vh(a))


# ---- numpy.linalg's array-API functions: the same primitives on the last axes ---------------------------------
@numpy_api.implements(np.linalg.matrix_norm)
def matrix_norm(x, /, *, keepdims=False, ord="fro"):
    """numpy.linalg.matrix_norm: ``norm(x, ord, axis=(-2, -1), keepdims)``."""
    return norm(x, ord=ord, axis=(-2, -1), keepdims=keepdims)


@numpy_api.implements(np.linalg.vector_norm)
def vector_norm(x, /, *, axis=None, keepdims=False, ord=2):
    """numpy.linalg.vector_norm: the vector ``ord``-norm over ``axis`` (None: all axes, as one vector; a tuple:
    those axes taken together)."""
    nd = np.ndim(x)
    axes = tuple(range(nd)) if axis is None else tuple(a % nd for a in ((axis,) if np.ndim(axis) == 0 else axis))
    if len(axes) == 1 and nd:
        return norm(x, ord=ord, axis=axes[0], keepdims=keepdims)
    shape = np.shape(x)
    rest = [q for q in range(nd) if q not in axes]
    xt = x if tuple(rest) + axes == tuple(range(nd)) else registry["transpose"](x, tuple(rest) + axes)
    flat = registry["reshape"](xt, tuple(shape[q] for q in rest) + (int(np.prod([shape[q] for q in axes])),))
    y = norm(flat, ord=ord, axis=-1)
    if keepdims:
        y = registry["reshape"](y, tuple(1 if q in axes else n for q, n in enumerate(shape)))
    return y


@numpy_api.implements(np.linalg.trace)
def trace(x, /, *, offset=0, dtype=None):
    """numpy.linalg.trace: the trace of the last two axes."""
    _reduce._refuse("linalg.trace", dtype=dtype)
    return _products.trace(x, offset=offset, axis1=-2, axis2=-1)


@numpy_api.implements(np.linalg.diagonal)
def diagonal(x, /, *, offset=0):
    """numpy.linalg.diagonal: the diagonal of the last two axes."""
    return _products.diagonal(x, offset=offset, axis1=-2, axis2=-1)


@numpy_api.implements(np.linalg.matmul)
def matmul(x1, x2, /):
    """numpy.linalg.matmul: ``x1 @ x2``."""
    return _products.matmul(x1, x2)


@numpy_api.implements(np.linalg.outer)
def outer(x1, x2, /):
    """numpy.linalg.outer: the outer product of two 1-d arrays."""
    if np.ndim(x1) != 1 or np.ndim(x2) != 1:
        raise ShapeError(f"linalg.outer: x1 and x2 must be 1-d; got shapes {np.shape(x1)} and {np.shape(x2)} "
                         f"(np.outer flattens N-d inputs)")
    return _products.outer(x1, x2)


@numpy_api.implements(np.linalg.tensordot)
def tensordot(x1, x2, /, *, axes=2):
    """numpy.linalg.tensordot: ``tensordot(x1, x2, axes)``."""
    return _products.tensordot(x1, x2, axes=axes)


@numpy_api.implements(np.linalg.cross)
def cross(x1, x2, /, *, axis=-1):
    """numpy.linalg.cross: the cross product of 3-vectors along ``axis``."""
    return _products.cross(x1, x2, axis=axis)


@numpy_api.implements(np.linalg.vecdot)
def vecdot(x1, x2, /, *, axis=-1):
    """numpy.linalg.vecdot: ``sum(x1 * x2, axis)`` (real inputs), broadcasting the other axes."""
    return _reduce.sum(x1 * x2, axis=axis)


@numpy_api.implements(np.linalg.matrix_transpose)
def matrix_transpose(x, /):
    """numpy.linalg.matrix_transpose: the last two axes swapped."""
    nd = np.ndim(x)
    if nd < 2:
        raise ShapeError(f"linalg.matrix_transpose: the input has shape {np.shape(x)}; it needs at least 2 axes")
    return registry["transpose"](x, tuple(range(nd - 2)) + (nd - 1, nd - 2))


@numpy_api.implements(np.linalg.multi_dot)
def multi_dot(arrays, *, out=None):
    """numpy.linalg.multi_dot: the product of a chain of matrices (the first may be 1-d: a row; the last may be
    1-d: a column), contracted as one einsum so opt_einsum picks the cheapest order."""
    if out is not None:
        raise NotDifferentiableError("linalg.multi_dot: out= is not supported; use the result")
    arrays = list(arrays)
    if len(arrays) < 2:
        raise ShapeError(f"linalg.multi_dot: needs at least two arrays; got {len(arrays)}")
    subs = []
    for k, a in enumerate(arrays):
        nd, end = np.ndim(a), k in (0, len(arrays) - 1)
        if nd != 2 and not (nd == 1 and end):
            raise ShapeError(f"linalg.multi_dot: array {k} has shape {np.shape(a)}; the arrays must be 2-d (the "
                             f"first and last may be 1-d)")
        if nd == 1:
            subs.append([k + 1] if k == 0 else [k])
        else:
            subs.append([k, k + 1])
    out_sub = ([0] if np.ndim(arrays[0]) == 2 else []) + ([len(arrays)] if np.ndim(arrays[-1]) == 2 else [])
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if len(arrays) >= len(letters):
        raise ShapeError(f"linalg.multi_dot: at most {len(letters) - 1} arrays; got {len(arrays)}")
    spec = ",".join("".join(letters[i] for i in s) for s in subs) + "->" + "".join(letters[i] for i in out_sub)
    return _products.einsum(spec, *arrays)


@numpy_api.implements(np.linalg.matrix_power)
def matrix_power(a, n):
    """numpy.linalg.matrix_power(a, n) for an integer n: repeated squaring with matmul (inv first for n < 0;
    n = 0 gives the identity, a constant)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"linalg.matrix_power: the exponent must be an integer; got {n!r}")
    shape = np.shape(a)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ShapeError(f"linalg.matrix_power: the input has shape {shape}; it must be square (..., M, M)")
    n = int(n)
    if n == 0:
        return np.broadcast_to(np.eye(shape[-1]), shape).copy()
    if n < 0:
        a, n = inv(a), -n
    result, base = None, a
    while n:
        if n & 1:
            result = base if result is None else _products.matmul(result, base)
        n >>= 1
        if n:
            base = _products.matmul(base, base)
    return result
