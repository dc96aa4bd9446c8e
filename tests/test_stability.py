"""Extreme inputs (|x| up to 1e3, nearly constant rows): finite values and finite, correct Jacobians."""
import math
import warnings

import numpy as np
import pytest

import jactensor as jt

BIG = np.array([1000.0, -1000.0, 0.0, 3.0])


@pytest.fixture(autouse=True)
def no_floating_point_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise", under="ignore"):
            yield


def _all_finite(*arrays):
    return all(np.all(np.isfinite(np.asarray(a))) for a in arrays)


def test_softmax_extreme():
    x = np.array([[1000.0, 0.0, -1000.0], [1e3, 1e3, -1e3]])
    S = jt.softmax(x, axis=-1)
    np.testing.assert_allclose(S, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-300)
    J = np.asarray(jt.softmax.jacobian(x, axis=-1)[0])
    assert _all_finite(S, J)
    # analytic limit: row 0 is one-hot -> zero Jacobian; row 1 is [1/2, 1/2, 0] -> block [[1/4, -1/4], [-1/4, 1/4]]
    np.testing.assert_allclose(J[0, :, 0, :], 0, atol=1e-300)
    np.testing.assert_allclose(J[1, :2, 1, :2], [[0.25, -0.25], [-0.25, 0.25]], atol=1e-15)
    g = jt.grad(lambda x: jt.sum(jt.softmax(x, axis=-1) * np.arange(3.0)))(x)
    assert _all_finite(g)


def test_log_softmax_and_cross_entropy_extreme():
    x = np.array([1000.0, 0.0, -1000.0])
    L = jt.log_softmax(x)
    np.testing.assert_allclose(L, [0.0, -1000.0, -2000.0])
    J = np.asarray(jt.log_softmax.jacobian(x)[0])
    np.testing.assert_allclose(J, np.eye(3) - np.array([1.0, 0.0, 0.0]), atol=1e-300)  # I - 1 s^T, s one-hot
    logits = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    loss = jt.cross_entropy(logits, np.array([1, 1]))
    assert loss == pytest.approx(1000.0)  # (2000 + 0) / 2
    g = jt.grad(lambda z: jt.cross_entropy(z, np.array([1, 1])))(logits)
    np.testing.assert_allclose(g, [[0.5, -0.5], [0.0, 0.0]], atol=1e-300)
    H = jt.hessian(lambda z: jt.cross_entropy(z, np.array(0)))(np.array([1000.0, -1000.0]))
    assert _all_finite(H)


@pytest.mark.parametrize("name, limit_pos, limit_neg", [
    ("sigmoid", (1.0, 0.0), (0.0, 0.0)),
    ("tanh", (1.0, 0.0), (-1.0, 0.0)),
    ("gelu", (1000.0, 1.0), (0.0, 0.0)),
])
def test_saturating_elementwise(name, limit_pos, limit_neg):
    prim = jt.registry[name]
    variants = [{}] if name != "gelu" else [{"approximate": True}, {"approximate": False}]
    for kw in variants:
        y = prim(BIG, **kw)
        d = np.diag(np.asarray(prim.jacobian(BIG, **kw)[0]))
        assert _all_finite(y, d)
        assert y[0] == pytest.approx(limit_pos[0]) and d[0] == pytest.approx(limit_pos[1], abs=1e-12)
        assert y[1] == pytest.approx(limit_neg[0], abs=1e-12) and d[1] == pytest.approx(limit_neg[1], abs=1e-12)
        g = jt.grad(lambda x: jt.sum(prim(x, **kw)))(BIG)
        np.testing.assert_allclose(g, d)


def test_layer_norm_nearly_constant_rows():
    rng = np.random.default_rng(0)
    d = 6
    x = 5.0 + 1e-9 * rng.normal(size=(3, d))
    x[2] = 1e3  # exactly constant
    g, b = rng.normal(size=d), rng.normal(size=d)
    y = jt.layer_norm(x, g, b, eps=1e-5)
    J = np.asarray(jt.layer_norm.jacobian(x, g, b, eps=1e-5)[0])
    assert _all_finite(y, J)
    # higher-precision evaluation of the same closed form in long double
    xl = x.astype(np.longdouble)
    mu = xl.mean(-1, keepdims=True)
    var = ((xl - mu) ** 2).mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(var + np.longdouble(1e-5))
    xhat = (xl - mu) * rstd
    ref = np.einsum("j,k,js->kjs", g.astype(np.longdouble), rstd[:, 0],
                    np.eye(d, dtype=np.longdouble)) - np.einsum("j,k->kj", g.astype(np.longdouble), rstd[:, 0])[..., None] / d \
        - np.einsum("j,k,kj,ks->kjs", g.astype(np.longdouble), rstd[:, 0], xhat, xhat) / d
    for k in range(3):
        np.testing.assert_allclose(J[k, :, k, :], ref[k].astype(np.float64), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(y, (g * xhat + b).astype(np.float64), rtol=1e-9, atol=1e-9)
    gx = jt.grad(lambda x: jt.sum(jt.layer_norm(x, g, b) * x))(x)
    assert _all_finite(gx)


def test_softmax_long_rows_extreme():
    """Rows longer than nn.BLOCK_MAX keep the Jacobian as terms (S delta and -S S): same limits as above."""
    from jactensor.ops.nn import BLOCK_MAX
    m = BLOCK_MAX + 8
    x = np.full((2, m), -1e3)
    x[0, 0] = 1e3           # one-hot row: zero Jacobian
    x[1, :2] = 1e3          # two equal maxima: [1/2, 1/2, 0, ...]
    (J,) = jt.softmax.jacobian(x, axis=-1)
    assert len(J.terms) == 2
    J = np.asarray(J)
    assert _all_finite(jt.softmax(x, axis=-1), J)
    np.testing.assert_allclose(J[0, :, 0, :], 0, atol=1e-300)
    want = np.zeros((m, m))
    want[:2, :2] = [[0.25, -0.25], [-0.25, 0.25]]
    np.testing.assert_allclose(J[1, :, 1, :], want, atol=1e-15)
    np.testing.assert_allclose(J[0, :, 1, :], 0, atol=0)  # rows do not couple
    (L,) = jt.log_softmax.jacobian(x, axis=-1)
    s1 = np.r_[0.5, 0.5, np.zeros(m - 2)]
    np.testing.assert_allclose(np.asarray(L)[1, :, 1, :], np.eye(m) - s1, atol=1e-15)


def test_layer_norm_nearly_constant_long_rows():
    """d > nn.BLOCK_MAX (the Jacobian as three terms) on nearly constant rows, against long double."""
    from jactensor.ops.nn import BLOCK_MAX
    rng = np.random.default_rng(1)
    d = BLOCK_MAX + 8
    x = 5.0 + 1e-9 * rng.normal(size=(2, d))
    x[1] = -3.0
    g = rng.normal(size=d)
    (J, _) = jt.layer_norm.jacobian(x, g, 0.0)
    assert len(J.terms) == 3
    J = np.asarray(J)
    xl = x.astype(np.longdouble)
    mu = xl.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((xl - mu) ** 2).mean(-1, keepdims=True) + np.longdouble(1e-5))
    xhat = (xl - mu) * rstd
    gl = g.astype(np.longdouble)
    for k in range(2):
        ref = gl[:, None] * rstd[k] * (np.eye(d, dtype=np.longdouble) - 1 / np.longdouble(d)
                                       - np.outer(xhat[k], xhat[k]) / d)
        np.testing.assert_allclose(J[k, :, k, :], ref.astype(np.float64), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", ["logaddexp", "logaddexp2", "hypot", "expit", "logit", "erfc", "gammaln", "sinc",
                                  "expm1_log1p"])
def test_special_and_elementwise_extremes(case):
    """Values and derivatives stay finite and take their limits at extreme arguments (no overflow warnings)."""
    import jactensor.special as jsp

    def diag(f, *args):
        return np.diag(np.asarray(jt.jacobian(f)(*args)))

    if case in ("logaddexp", "logaddexp2"):
        f, base = (jt.logaddexp, math.e) if case == "logaddexp" else (jt.logaddexp2, 2.0)
        a = np.array([1e3, -1e3, 0.0])
        y = f(a, 0.0)
        np.testing.assert_allclose(y, [1e3, 0.0, math.log(2.0, base)], rtol=1e-15, atol=1e-300)
        np.testing.assert_allclose(diag(f, a, 0.0), [1.0, 0.0, 0.5], atol=1e-300)
    elif case == "hypot":
        a, b = np.array([1e200, 3.0]), np.array([1e200, 4.0])
        np.testing.assert_allclose(jt.hypot(a, b), [math.sqrt(2.0) * 1e200, 5.0], rtol=1e-15)
        np.testing.assert_allclose(diag(jt.hypot, a, b), [math.sqrt(0.5), 0.6], rtol=1e-15)
    elif case == "expit":
        np.testing.assert_allclose(diag(jsp.expit, BIG), [0.0, 0.0, 0.25, math.exp(-3.0) / (1 + math.exp(-3.0)) ** 2],
                                   rtol=1e-14, atol=1e-300)
    elif case == "logit":
        p = np.array([1e-300, 0.5])
        np.testing.assert_allclose(jsp.logit(p), [math.log(1e-300), 0.0], rtol=1e-15)
        np.testing.assert_allclose(diag(jsp.logit, p), [1e300, 4.0], rtol=1e-15)
    elif case == "erfc":
        x = np.array([30.0, -30.0, 0.0])
        np.testing.assert_allclose(jsp.erfc(x), [0.0, 2.0, 1.0], atol=1e-300)
        np.testing.assert_allclose(diag(jsp.erfc, x), [0.0, 0.0, -2.0 / math.sqrt(math.pi)], atol=1e-300)
    elif case == "gammaln":
        x = np.array([1e5, 1e-5])
        np.testing.assert_allclose(jsp.gammaln(x), [math.lgamma(1e5), math.lgamma(1e-5)], rtol=1e-14)
        # digamma(x) = log x - 1/(2x) - 1/(12 x^2) + ... at 1e5; -1/x - gamma_E + (pi^2/6) x + O(x^2) at 1e-5
        np.testing.assert_allclose(diag(jsp.gammaln, x), [math.log(1e5) - 0.5e-5 - 1 / 12e10,
                                                          -1e5 - 0.5772156649015329 + math.pi ** 2 / 6 * 1e-5],
                                   rtol=1e-14)
    elif case == "sinc":
        x = np.array([1e8 + 0.5, 1e-8])
        np.testing.assert_allclose(jt.sinc(x), [1.0 / (math.pi * (1e8 + 0.5)), 1.0], rtol=1e-6)
        # sinc'(x) = (cos(pi x) - sinc(x)) / x; near 0: -pi^2 x / 3
        np.testing.assert_allclose(diag(jt.sinc, x)[1], -math.pi ** 2 * 1e-8 / 3, rtol=1e-12)
        assert _all_finite(diag(jt.sinc, x))
    else:
        x = np.array([1e-20, -1e-20])
        np.testing.assert_array_equal(jt.expm1(x), x)
        np.testing.assert_array_equal(jt.log1p(x), x)
        np.testing.assert_allclose(diag(jt.expm1, x), [1.0, 1.0], rtol=1e-15)
        np.testing.assert_allclose(diag(jt.log1p, x), [1.0, 1.0], rtol=1e-15)
