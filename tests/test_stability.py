"""Extreme inputs (|x| up to 1e3, nearly constant rows): finite values and finite, correct Jacobians."""
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
