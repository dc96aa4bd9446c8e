"""Reductions against JAX at float64 (values, jacobian by every method, grad and hessian of a scalar loss) on
hypothesis-drawn shapes, axes and values; exactness with zeros; the conventions at kinks; empty axes; numpy
dispatch and ndarray methods on traced values; clear errors."""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jactensor as jt
import jactensor.linalg  # noqa: F401 - registers np.linalg.norm's primitive
from jactensor.testing import finite_difference_jacobian

from .support import TOL, against_jax, arrays, assert_close, shapes

JAX_CASES = settings(max_examples=6, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CASES = settings(max_examples=25, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def axes(draw, ndim, allow_none=True):
    """None, one axis (either sign) or a tuple of distinct axes (either sign), valid for ``ndim``."""
    if ndim == 0 or (allow_none and draw(st.booleans())):
        return None
    picked = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    signed = [a - ndim if draw(st.booleans()) else a for a in picked]
    return signed[0] if len(signed) == 1 and draw(st.booleans()) else tuple(signed)


def _distinct(rng, shape):
    """Values no two within 0.3 of each other (no ties at max/min or norm kinks)."""
    n = int(np.prod(shape, dtype=np.int64))
    return ((rng.permutation(n) - n / 2) * 0.5 + rng.uniform(-0.1, 0.1, size=n)).reshape(shape)


def _red_axes(ndim, axis):
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in ((axis,) if np.ndim(axis) == 0 else axis))


# ---- against JAX ------------------------------------------------------------------------------------------
@JAX_CASES
@given(data=st.data(), name=st.sampled_from(["sum", "mean", "var", "std", "logsumexp"]))
def test_smooth_reductions_match_jax(jx, data, name):
    s = data.draw(shapes(min_dims=1 if name == "std" else 0, max_side=4 if name == "std" else 3))
    axis = data.draw(axes(len(s)))
    keepdims = data.draw(st.booleans())
    red = _red_axes(len(s), axis)
    n = int(np.prod([s[a] for a in red], dtype=np.int64))
    if name == "std":   # std's kink is at zero variance: reduce over >= 2 entries
        s = tuple(max(k, 2) if i in red else k for i, k in enumerate(s))
    x = data.draw(arrays(s))
    jnp = jx.numpy
    if name in ("var", "std"):
        ddof = data.draw(st.integers(0, 1)) if n > 1 else 0
        f_jt = lambda x: getattr(jt, name)(x, axis=axis, ddof=ddof, keepdims=keepdims)  # noqa: E731
        f_jax = lambda x: getattr(jnp, name)(x, axis=axis, ddof=ddof, keepdims=keepdims)  # noqa: E731
    elif name == "logsumexp":
        from jax.scipy.special import logsumexp as lse
        f_jt = lambda x: jt.logsumexp(x, axis=axis, keepdims=keepdims)  # noqa: E731
        f_jax = lambda x: lse(x, axis=axis, keepdims=keepdims)  # noqa: E731
    else:
        f_jt = lambda x: getattr(jt, name)(x, axis=axis, keepdims=keepdims)  # noqa: E731
        f_jax = lambda x: getattr(jnp, name)(x, axis=axis, keepdims=keepdims)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # jax's mean/var of an empty axis
        against_jax(jx, f_jt, f_jax, [x])


@JAX_CASES
@given(data=st.data(), name=st.sampled_from(["max", "min", "amax", "amin"]))
def test_max_min_match_jax(jx, data, name):
    s = data.draw(shapes(min_side=1))
    axis = data.draw(axes(len(s)))
    keepdims = data.draw(st.booleans())
    x = _distinct(np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))), s)
    against_jax(jx, lambda x: getattr(jt, name)(x, axis=axis, keepdims=keepdims),
                lambda x: getattr(jx.numpy, name)(x, axis=axis, keepdims=keepdims), [x])


@JAX_CASES
@given(data=st.data(), zeros=st.integers(0, 2))
def test_prod_matches_jax_also_with_zeros(jx, data, zeros):
    s = data.draw(shapes(max_side=3))
    axis = data.draw(axes(len(s)))
    keepdims = data.draw(st.booleans())
    x = np.array(data.draw(arrays(s)))
    if x.size:
        x.flat[np.random.default_rng(x.size).choice(x.size, size=min(zeros, x.size), replace=False)] = 0.0
    against_jax(jx, lambda x: jt.prod(x, axis=axis, keepdims=keepdims),
                lambda x: jx.numpy.prod(x, axis=axis, keepdims=keepdims), [x])


@JAX_CASES
@given(data=st.data(), name=st.sampled_from(["cumsum", "cumprod"]), zeros=st.booleans())
def test_cumulative_match_jax(jx, data, name, zeros):
    s = data.draw(shapes(max_side=4))
    axis = None if not s or data.draw(st.booleans()) else data.draw(st.integers(-len(s), len(s) - 1))
    x = np.array(data.draw(arrays(s)))
    if zeros and x.size:
        x.flat[::3] = 0.0
    against_jax(jx, lambda x: getattr(jt, name)(x, axis=axis), lambda x: getattr(jx.numpy, name)(x, axis=axis), [x])


@JAX_CASES
@given(data=st.data())
def test_logsumexp_with_weights_matches_jax(jx, data):
    from jax.scipy.special import logsumexp as lse
    s = data.draw(shapes(min_dims=1, min_side=1))
    axis = data.draw(axes(len(s)))
    x = data.draw(arrays(s))
    b = data.draw(arrays(s[data.draw(st.integers(0, len(s))):], "positive"))
    against_jax(jx, lambda x, b: jt.logsumexp(x, axis=axis, b=b), lambda x, b: lse(x, axis=axis, b=b), [x, b])


@JAX_CASES
@given(data=st.data(), form=st.sampled_from(["none", "full", "axis"]))
def test_average_matches_jax(jx, data, form):
    s = data.draw(shapes(min_dims=1, min_side=1))
    x = data.draw(arrays(s))
    if form == "none":
        axis = data.draw(axes(len(s)))
        against_jax(jx, lambda x: jt.average(x, axis=axis), lambda x: jx.numpy.average(x, axis=axis), [x])
        return
    axis = data.draw(axes(len(s), allow_none=form == "full"))
    wshape = s if form == "full" else tuple(s[a] for a in ((axis,) if np.ndim(axis) == 0 else axis))
    w = data.draw(arrays(wshape, "positive"))
    against_jax(jx, lambda x, w: jt.average(x, axis=axis, weights=w),
                lambda x, w: jx.numpy.average(x, axis=axis, weights=w), [x, w])


@JAX_CASES
@given(data=st.data(), ord=st.sampled_from([None, 1, 2, 3, 1.5, np.inf, -np.inf, -1]))
def test_vector_norms_match_jax(jx, data, ord):
    s = data.draw(shapes(min_dims=1, min_side=1))
    axis = data.draw(st.integers(-len(s), len(s) - 1)) if len(s) > 1 or data.draw(st.booleans()) else None
    keepdims = data.draw(st.booleans())
    x = _distinct(np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))), s)
    x = x + np.where(x >= 0, 0.3, -0.3)      # away from |x| = 0
    if axis is None and len(s) > 1:
        axis = -1
    against_jax(jx, lambda x: jt.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims),
                lambda x: jx.numpy.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims), [x])


def _matrix(rng, batch, m, n):
    """Singular values 1, 2, ... apart (times a random scale), random singular vectors."""
    k = min(m, n)
    out = np.empty(batch + (m, n))
    for idx in np.ndindex(*batch):
        U = np.linalg.qr(rng.normal(size=(m, m)))[0][:, :k]
        V = np.linalg.qr(rng.normal(size=(n, n)))[0][:, :k]
        out[idx] = (U * (np.arange(k, 0, -1) * rng.uniform(0.8, 1.2))) @ V.T
    return out


@JAX_CASES
@given(data=st.data(), ord=st.sampled_from([None, "fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf]))
def test_matrix_norms_match_jax(jx, data, ord):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    batch = data.draw(shapes(max_dims=1, min_side=1))
    m, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x = _matrix(rng, batch, m, n)
    axis = data.draw(st.sampled_from([(-2, -1), (-1, -2)])) if batch else None
    keepdims = data.draw(st.booleans())
    # 2 and nuc go through the SVD: rounding in the singular vectors makes 1e-9 the honest tolerance there
    tol = 1e-9 if ord in (2, -2, "nuc") else TOL
    against_jax(jx, lambda x: jt.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims),
                lambda x: jx.numpy.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims), [x], tol=tol)


# ---- finite differences (no peer needed) ------------------------------------------------------------------
@CASES
@given(data=st.data(), name=st.sampled_from(["sum", "mean", "prod", "var", "std", "cumsum", "cumprod", "logsumexp"]))
def test_reductions_against_finite_differences(data, name):
    s = data.draw(shapes(min_side=1, max_side=3))
    x = data.draw(arrays(s, "nonzero"))
    if name in ("cumsum", "cumprod"):
        kw = {"axis": None if not s else data.draw(st.integers(-len(s), len(s) - 1))}
    else:
        kw = {"axis": data.draw(axes(len(s))), "keepdims": data.draw(st.booleans())}
        if name == "std" and np.size(x) and all(s[a] == 1 for a in _red_axes(len(s), kw["axis"])):
            return   # std of one value is 0 for every x: the kink
    f = lambda x: getattr(jt, name)(x, **kw)  # noqa: E731
    fd = finite_difference_jacobian(f, x)
    for m in ("chain", "rev", "fwd"):
        assert_close(jt.jacobian(f, method=m)(x), fd, 1e-7, m)
    loss = lambda x: jt.sum(jt.sin(f(x)))  # noqa: E731
    assert_close(jt.grad(loss)(x), finite_difference_jacobian(loss, x), 1e-7, "grad")
    assert_close(jt.hessian(loss)(x), finite_difference_jacobian(jt.grad(loss), x), 1e-6, "hessian")


# ---- exact with zeros ----------------------------------------------------------------------------------------
def test_prod_derivative_with_zeros_is_the_product_of_the_others():
    g = jt.grad(lambda x: jt.prod(x))
    np.testing.assert_array_equal(g(np.array([0.0, 2.0, 3.0])), [6.0, 0.0, 0.0])      # one zero
    np.testing.assert_array_equal(g(np.array([0.0, 2.0, 0.0])), [0.0, 0.0, 0.0])      # two zeros: 0
    np.testing.assert_array_equal(g(np.array([2.0, 3.0, 4.0])), [12.0, 8.0, 6.0])
    x = np.array([[1.0, 0.0, 5.0], [2.0, 3.0, 0.5]])
    J = jt.jacobian(lambda x: jt.prod(x, axis=1))(x)
    np.testing.assert_array_equal(J[0, 0], [0.0, 5.0, 0.0])
    # Hessian of a product with one zero: d2/dx0 dx1 of x0 x1 x2 = x2
    H = jt.hessian(lambda x: jt.prod(x))(np.array([0.0, 2.0, 3.0]))
    np.testing.assert_array_equal(H, [[0.0, 3.0, 2.0], [3.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    # tiny entries: the product of the others does not underflow through a division
    x = np.array([1e-200, 1e-200, 1e200])
    np.testing.assert_allclose(g(x), [1.0, 1.0, 0.0], rtol=1e-12)   # (1e-200 * 1e-200 underflows)


def test_cumprod_derivative_with_zeros_never_divides():
    x = np.array([2.0, 0.0, 3.0, 4.0])
    J = jt.jacobian(jt.cumprod)(x)
    # y = [2, 0, 0, 0]; dy_k/dx_j = prod_{i<=k, i != j} x_i
    want = np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 6, 0, 0], [0, 24, 0, 0]], dtype=float)
    for m in ("chain", "rev", "fwd"):
        np.testing.assert_array_equal(jt.jacobian(jt.cumprod, method=m)(x), want)
    np.testing.assert_array_equal(J, want)
    assert np.all(np.isfinite(jt.hessian(lambda x: jt.sum(jt.cumprod(x)))(x)))


# ---- conventions at kinks, and edge cases --------------------------------------------------------------------
def test_max_ties_share_and_min_matches():
    x = np.array([1.0, 3.0, 3.0, -2.0])
    np.testing.assert_array_equal(jt.grad(jt.max)(x), [0, 0.5, 0.5, 0])
    np.testing.assert_array_equal(jt.grad(jt.min)(np.array([2.0, -1.0, -1.0, -1.0])), [0, 1 / 3, 1 / 3, 1 / 3])
    assert jt.amax is jt.max and jt.amin is jt.min


def test_std_at_zero_variance_has_zero_derivative():
    x = np.full((2, 3), 1.5)
    g = jt.grad(lambda x: jt.sum(jt.std(x, axis=1)))(x)
    np.testing.assert_array_equal(g, np.zeros((2, 3)))
    assert_close(jt.jacobian(lambda x: jt.std(x, axis=1))(np.array([[1.0, 2.0, 4.0]])),
                 finite_difference_jacobian(lambda x: jt.std(x, axis=1), np.array([[1.0, 2.0, 4.0]])), 1e-7)


def test_norm_conventions_at_zero():
    z = np.zeros(3)
    np.testing.assert_array_equal(jt.grad(lambda x: jt.linalg.norm(x))(z), z)
    np.testing.assert_array_equal(jt.grad(lambda x: jt.linalg.norm(x, 1))(np.array([0.0, -2.0, 3.0])), [0, -1, 1])
    np.testing.assert_array_equal(jt.grad(lambda x: jt.linalg.norm(x, 0))(np.array([0.0, -2.0, 3.0])), [0, 0, 0])
    np.testing.assert_array_equal(jt.grad(lambda x: jt.linalg.norm(x, np.inf))(np.array([3.0, -3.0, 1.0])),
                                  [0.5, -0.5, 0.0])


def test_mean_over_an_empty_axis_is_nan_without_error_or_warning():
    x = np.zeros((3, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = jt.mean(x, axis=1)
        assert y.shape == (3,) and np.all(np.isnan(y))
        np.testing.assert_array_equal(y, np.full(3, np.nan))
        np.testing.assert_array_equal(jt.mean.jvp(np.ones((3, 0)), x, axis=1), np.zeros(3))
        assert jt.mean.vjp(np.ones(3), x, axis=1)[0].shape == (3, 0)
        for m in ("chain", "rev", "fwd"):
            assert jt.jacobian(lambda x: jt.mean(x, axis=1), method=m)(x).shape == (3, 3, 0)
        assert jt.grad(lambda x: jt.sum(jt.mean(x, axis=0)))(x).shape == (3, 0)
        assert jt.hessian(lambda x: jt.sum(jt.mean(x, axis=0) ** 2))(x).shape == (3, 0, 3, 0)
        assert np.isnan(jt.mean(np.zeros(0)))


ZERO_SIZE = [
    ("sum", {"axis": 0}), ("mean", {"axis": 1}), ("prod", {"axis": 1}), ("var", {"axis": 0}),
    ("std", {"axis": 0}), ("max", {"axis": 1}), ("min", {"axis": 1}), ("cumsum", {"axis": 0}),
    ("cumprod", {}), ("logsumexp", {"axis": 1}),
]


@pytest.mark.parametrize("name,kw", ZERO_SIZE)
def test_zero_size_inputs_through_every_method(name, kw):
    x = np.zeros((0, 3))
    f = lambda x: getattr(jt, name)(x, **kw)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = getattr(np, name if name != "logsumexp" else "sum")(x, **kw)
    y = f(x)
    assert y.shape == np.shape(want)
    for m in ("chain", "rev", "fwd"):
        assert jt.jacobian(f, method=m)(x).shape == y.shape + x.shape, m
    loss = lambda x: jt.sum(f(x) * 2.0)  # noqa: E731
    assert jt.grad(loss)(x).shape == x.shape
    for m in ("fwdrev", "chain"):
        assert jt.hessian(loss, method=m)(x).shape == x.shape * 2


def test_logsumexp_is_stable_and_handles_empty_sums():
    x = np.array([1000.0, 999.0, -3.0])
    y = jt.logsumexp(x)
    assert np.isfinite(y) and abs(y - (1000 + np.log1p(np.exp(-1.0) + np.exp(-1003.0)))) < 1e-12
    g = jt.grad(jt.logsumexp)(x)
    np.testing.assert_allclose(g, np.exp(x - y), rtol=1e-14)
    assert jt.logsumexp(np.zeros((2, 0)), axis=1).tolist() == [-np.inf, -np.inf]
    with pytest.raises(jt.NotDifferentiableError, match="return_sign"):
        jt.logsumexp(x, return_sign=True)


# ---- numpy dispatch and ndarray methods on traced values ----------------------------------------------------------
def test_numpy_functions_and_methods_on_traced_values(rng):
    x = rng.uniform(0.5, 2.0, size=(3, 4))
    w = np.arange(1.0, 5.0)
    cases = [  # (numpy function, ndarray method or None, jactensor function)
        (lambda x: np.prod(x, axis=1), lambda x: x.prod(axis=1), lambda x: jt.prod(x, axis=1)),
        (lambda x: np.var(x, axis=0, ddof=1), lambda x: x.var(axis=0, ddof=1), lambda x: jt.var(x, axis=0, ddof=1)),
        (lambda x: np.std(x), lambda x: x.std(), lambda x: jt.std(x)),
        (lambda x: np.cumsum(x, axis=1), lambda x: x.cumsum(axis=1), lambda x: jt.cumsum(x, axis=1)),
        (lambda x: np.cumprod(x), lambda x: x.cumprod(), lambda x: jt.cumprod(x)),
        (lambda x: np.min(x, axis=0), lambda x: x.min(axis=0), lambda x: jt.min(x, axis=0)),
        (lambda x: np.amin(x), lambda x: x.min(), lambda x: jt.min(x)),
        (lambda x: np.amax(x, axis=1), lambda x: x.max(axis=1), lambda x: jt.max(x, axis=1)),
        (lambda x: np.sum(x, axis=0), lambda x: x.sum(axis=0), lambda x: jt.sum(x, axis=0)),
        (lambda x: np.mean(x), lambda x: x.mean(), lambda x: jt.mean(x)),
        (lambda x: np.average(x, axis=1, weights=w), None, lambda x: jt.average(x, axis=1, weights=w)),
        (lambda x: np.linalg.norm(x, axis=1), None, lambda x: jt.linalg.norm(x, axis=1)),
        (lambda x: np.linalg.norm(x, "nuc"), None, lambda x: jt.linalg.norm(x, "nuc")),
    ]
    for fn_np, fn_method, fn_jt in cases:
        assert_close(fn_jt(x), fn_np(x), what="value")
        if fn_method is not None:
            assert_close(fn_method(x), fn_np(x), what="method value")

        def loss(f):
            return lambda x: jt.sum(f(x) ** 2)
        want = finite_difference_jacobian(loss(fn_np), x)
        assert_close(jt.grad(loss(fn_jt))(x), want, 1e-7, "jt function under grad")
        assert_close(jt.grad(loss(fn_np))(x), want, 1e-7, "np function under grad")
        if fn_method is not None:
            assert_close(jt.grad(loss(fn_method))(x), want, 1e-7, "method under grad")


def test_average_returned_and_errors():
    a = np.arange(6.0).reshape(2, 3)
    avg, scl = jt.average(a, axis=1, weights=[1.0, 2.0, 3.0], returned=True)
    want, wscl = np.average(a, axis=1, weights=[1.0, 2.0, 3.0], returned=True)
    assert_close(avg, want)
    assert_close(scl, wscl)
    avg, scl = jt.average(a, axis=0, returned=True)
    assert_close(scl, np.average(a, axis=0, returned=True)[1])
    with pytest.raises(ZeroDivisionError, match="sum to zero"):
        jt.average(a, axis=1, weights=[1.0, -1.0, 0.0])
    with pytest.raises(jt.ShapeError, match="give axis"):
        jt.average(a, weights=[1.0, 2.0, 3.0])
    with pytest.raises(jt.ShapeError, match=r"\(2, 3\) or \(3,\)"):
        jt.average(a, axis=1, weights=[1.0, 2.0])
    g = jt.grad(lambda w: jt.average(a, axis=1, weights=w)[1])(np.array([1.0, 2.0, 3.0]))
    assert_close(g, finite_difference_jacobian(lambda w: np.average(a, axis=1, weights=w)[1], np.array([1.0, 2, 3])),
                 1e-8)


def test_clear_errors():
    x = np.ones((2, 3))
    with pytest.raises(jt.NotDifferentiableError, match="initial"):
        jt.max(x, initial=0.0)
    with pytest.raises(jt.NotDifferentiableError, match="initial"):
        jt.grad(lambda x: np.max(x, initial=0.0))(x)
    with pytest.raises(jt.NotDifferentiableError, match="initial"):
        jt.prod(x, initial=2.0)
    with pytest.raises(jt.NotDifferentiableError, match="where"):
        jt.sum(x, where=np.array([True, False, True]))
    with pytest.raises(jt.ShapeError, match="length 0"):
        jt.max(np.zeros((2, 0)), axis=1)
    with pytest.raises(jt.AxisError, match="out of range"):
        jt.var(x, axis=2)
    with pytest.raises(ValueError, match="ddof=1 and correction=1"):
        jt.var(x, ddof=1, correction=1)
    assert_close(jt.var(x * np.arange(3.0), correction=1), np.var(x * np.arange(3.0), ddof=1))
    with pytest.raises(jt.NotDifferentiableError, match="mean"):
        jt.var(x, mean=np.ones((1, 1)))
    with pytest.raises(jt.AxisError, match="0-d"):
        jt.cumsum(np.float64(1.0), axis=0)
    with pytest.raises(ValueError, match="matrix norm"):
        jt.linalg.norm(np.ones(3), "fro")
    with pytest.raises(ValueError, match="invalid matrix norm order 3"):
        jt.linalg.norm(x, 3)
    with pytest.raises(jt.ShapeError, match="1-d or 2-d"):
        jt.linalg.norm(np.ones((2, 2, 2)), 1)
    with pytest.raises(jt.AxisError, match="names 3 axes"):
        jt.linalg.norm(np.ones((2, 2, 2)), axis=(0, 1, 2))
    with pytest.raises(jt.ShapeError, match="empty axis"):
        jt.linalg.norm(np.zeros((0, 2)), -np.inf, axis=0)


def test_var_degenerate_degrees_of_freedom_follow_numpy():
    x = np.array([[1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = jt.var(x, axis=1, ddof=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(y, np.var(x, axis=1, ddof=2))
