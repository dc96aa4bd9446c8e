"""jacobian / grad / vjp / jvp / hessian over traced programs."""
import sys

import numpy as np
import pytest

import jactensor as jt
from jactensor.testing import finite_difference_jacobian

from .programs import inputs, random_program


def attention(X, Wq, Wk, Wv):
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    return jt.softmax(Q @ K.T / np.sqrt(Q.shape[-1]), axis=-1) @ V


@pytest.fixture
def attn_args(rng):
    n, d = 5, 3
    return [rng.normal(size=s) for s in [(n, d), (d, d), (d, d), (d, d)]]


@pytest.mark.parametrize("seed", range(40))
def test_random_programs_three_methods_and_finite_differences(seed):
    f = random_program(seed, n_steps=3 + seed % 6)
    args = inputs(seed)
    Js = {m: jt.jacobian(f, argnums=(0, 1, 2), method=m)(*args) for m in ("chain", "rev", "fwd")}
    for a in range(3):
        fd = finite_difference_jacobian(lambda v: f(*[v if k == a else args[k] for k in range(3)]), args[a])
        for m in Js:
            np.testing.assert_allclose(Js[m][a], fd, atol=2e-7, rtol=1e-6, err_msg=f"{m} arg {a}")
        np.testing.assert_allclose(Js["chain"][a], Js["rev"][a], atol=1e-12, rtol=1e-10)
        np.testing.assert_allclose(Js["fwd"][a], Js["rev"][a], atol=1e-12, rtol=1e-10)
    # grad == VJP path == chained Jacobian contracted with the output cotangent
    out = np.asarray(f(*args))
    W = np.random.default_rng(seed).normal(size=out.shape)
    g = jt.grad(lambda *a: jt.sum(f(*a) * W), argnums=(0, 1, 2))(*args)
    _, vjp_fn = jt.vjp(f, *args)
    v = vjp_fn(W)
    for a in range(3):
        contracted = np.tensordot(W, Js["chain"][a], axes=out.ndim)
        np.testing.assert_allclose(g[a], contracted, atol=1e-12, rtol=1e-10)
        np.testing.assert_allclose(v[a], g[a], atol=1e-14, rtol=1e-12)
    # jvp == chained Jacobian contracted with the tangents
    T = [np.random.default_rng(seed + 5).normal(size=x.shape) for x in args]
    _, t_out = jt.jvp(f, args, T)
    expected = sum(np.tensordot(Js["chain"][a], T[a], axes=T[a].ndim) for a in range(3))
    np.testing.assert_allclose(t_out, expected, atol=1e-12, rtol=1e-10)


def test_dense_route_gives_the_same_numbers(attn_args):
    a = jt.jacobian(attention, argnums=(0, 1))(*attn_args)
    b = jt.jacobian(attention, argnums=(0, 1), dense=True)(*attn_args)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-13)


def test_attention_shapes_like_the_issue(attn_args):
    JX, JWq = jt.jacobian(attention, argnums=(0, 1))(*attn_args)
    assert JX.shape == (5, 3, 5, 3) and JWq.shape == (5, 3, 3, 3)
    grads = jt.grad(lambda *a: jt.sum(attention(*a) ** 2), argnums=(0, 1, 2, 3))(*attn_args)
    assert [g.shape for g in grads] == [x.shape for x in attn_args]


def test_grad_never_forms_a_jacobian(attn_args, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a Jacobian rule ran during grad")
    for prim in jt.registry.values():
        monkeypatch.setattr(prim, "jac_rules", [boom] * 8)
    monkeypatch.setattr(jt.Jacobian, "dense", boom)
    g = jt.grad(lambda *a: jt.sum(attention(*a) ** 2), argnums=(0, 1, 2, 3))(*attn_args)
    _, fn = jt.vjp(attention, *attn_args)
    fn(np.ones((5, 3)))
    jt.jvp(attention, attn_args, [np.ones_like(x) for x in attn_args])
    jt.jacobian(attention, method="rev")(*attn_args)
    jt.jacobian(attention, method="fwd")(*attn_args)
    assert len(g) == 4
    with pytest.raises(AssertionError, match="Jacobian rule ran"):
        jt.jacobian(attention, method="chain")(*attn_args)


def test_explain_allocates_no_jacobian(attn_args, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a Jacobian was materialised")
    monkeypatch.setattr(jt.Jacobian, "dense", boom)
    monkeypatch.setattr(sys.modules["jactensor.jacobian"], "_embed", boom)
    monkeypatch.setattr(sys.modules["jactensor.contract"], "contract", boom)  # no contraction either
    e = jt.explain(attention, *attn_args, argnums=(0, 1))
    text = str(e)
    assert "softmax" in text and "(5, 5, 5, 5)" in text and "chosen" in text and "VJP path" in text
    p = e.plans["output"]
    assert p.chosen.flops <= min(p.forward.flops, p.reverse.flops)
    assert e.dense_plans["output"].chosen.flops > p.chosen.flops
    assert e.full_bytes > e.vjp_bytes


# ---- hessian ---------------------------------------------------------------------------------
def test_hessian_quadratic_form(rng):
    A = rng.normal(size=(4, 4))
    H = jt.hessian(lambda x: x @ A @ x)(rng.normal(size=4))
    np.testing.assert_allclose(H, A + A.T, atol=1e-13)


def test_hessian_cross_entropy_of_softmax(rng):
    z = rng.normal(size=5)
    H = jt.hessian(lambda z: jt.cross_entropy(z, np.array(3)))(z)
    p = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(H, np.diag(p) - np.outer(p, p), atol=1e-14)


@pytest.mark.parametrize("seed", range(6))
def test_hessian_against_finite_differences_of_grad(seed):
    f0 = random_program(seed, n_steps=4)
    args = inputs(seed)
    f = lambda x: jt.sum(f0(x, *args[1:]))  # noqa: E731
    H = jt.hessian(f)(args[0])
    assert H.shape == args[0].shape * 2
    g = jt.grad(f)
    fd = finite_difference_jacobian(lambda x: g(x), args[0], eps=1e-5)
    np.testing.assert_allclose(H, fd, atol=1e-6, rtol=1e-5)


def test_hessian_shape_for_vector_output(rng):
    x = rng.normal(size=3)
    H = jt.hessian(lambda x: jt.tanh(x) * x[0])(x)
    assert H.shape == (3, 3, 3)
    fd = finite_difference_jacobian(jt.jacobian(lambda x: jt.tanh(x) * x[0], method="rev"), x, eps=1e-5)
    np.testing.assert_allclose(H, fd, atol=1e-7)


# ---- API ---------------------------------------------------------------------------------
def test_argnums_int_tuple_negative(attn_args):
    J0 = jt.jacobian(attention)(*attn_args)
    assert isinstance(J0, np.ndarray) and J0.shape == (5, 3, 5, 3)
    (Jlast,) = jt.jacobian(attention, argnums=(-1,))(*attn_args)
    assert Jlast.shape == (5, 3, 3, 3)
    with pytest.raises(jt.ArgnumError, match="argnums 4 is out of range for a function called with 4"):
        jt.jacobian(attention, argnums=4)(*attn_args)
    with pytest.raises(jt.ArgnumError, match="int or a non-empty tuple"):
        jt.grad(attention, argnums="x")(*attn_args)


def test_has_aux(rng):
    x = rng.normal(size=3)
    J, aux = jt.jacobian(lambda x: (jt.tanh(x), {"norm": jt.sum(x * x)}), has_aux=True)(x)
    assert J.shape == (3, 3) and np.isclose(aux["norm"], x @ x) and isinstance(aux["norm"], (float, np.floating,
                                                                                             np.ndarray))
    (v, a), g = jt.value_and_grad(lambda x: (jt.sum(x * x), x * 2), has_aux=True)(x)
    np.testing.assert_allclose(g, 2 * x)
    np.testing.assert_allclose(a, 2 * x)
    out, fn, aux = jt.vjp(lambda x: (x * 3, "tag"), x, has_aux=True)
    assert aux == "tag"
    out, t, aux = jt.jvp(lambda x: (x * 3, 7), (x,), (np.ones(3),), has_aux=True)
    np.testing.assert_allclose(t, 3 * np.ones(3))
    with pytest.raises(jt.NotDifferentiableError, match="pair"):
        jt.grad(lambda x: jt.sum(x), has_aux=True)(x)


def test_pytrees_in_and_out(rng):
    params = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2), "layers": [rng.normal(size=2)]}
    x = rng.normal(size=(4, 3))

    def model(p, x):
        h = jt.tanh(x @ p["W"] + p["b"]) * p["layers"][0]
        return {"mean": jt.mean(h), "sum": jt.sum(h)}, h

    g = jt.grad(lambda p, x: model(p, x)[0]["mean"])(params, x)
    assert set(g) == {"W", "b", "layers"} and g["W"].shape == (3, 2) and isinstance(g["layers"], list)
    J = jt.jacobian(model)(params, x)
    assert J[0]["mean"]["W"].shape == (3, 2) and J[1]["b"].shape == (4, 2, 2)
    np.testing.assert_allclose(J[0]["mean"]["W"], g["W"], atol=1e-14)
    Jr = jt.jacobian(model, method="rev")(params, x)
    np.testing.assert_allclose(Jr[1]["layers"][0], J[1]["layers"][0], atol=1e-14)
    out, fn = jt.vjp(model, params, x)
    gp, gx = fn(({"mean": np.array(1.0), "sum": np.array(0.0)}, np.zeros((4, 2))))
    np.testing.assert_allclose(gp["W"], g["W"], atol=1e-14)
    assert gx.shape == x.shape


def test_constants_and_independent_outputs(rng):
    x, c = rng.normal(size=3), rng.normal(size=3)
    J = jt.jacobian(lambda x, c: x * c, argnums=0)(x, c)
    np.testing.assert_allclose(J, np.diag(c))
    J = jt.jacobian(lambda x: (x * 2, np.ones(2)))(x)
    np.testing.assert_array_equal(J[1], np.zeros((2, 3)))
    assert jt.grad(lambda x, y: jt.sum(y * 2.0), argnums=0)(x, c).tolist() == [0.0, 0.0, 0.0]
    # ints are cast to float64 for differentiation
    np.testing.assert_allclose(jt.grad(lambda x: jt.sum(x * x))(np.array([1, 2, 3])), [2.0, 4.0, 6.0])


def test_grad_of_non_scalar_points_to_jacobian_or_vjp(rng):
    with pytest.raises(TypeError, match=r"scalar.*shape \(3,\).*jt.jacobian.*jt.vjp"):
        jt.grad(lambda x: x * 2)(rng.normal(size=3))


def test_memory_guard_in_transforms(rng):
    x = rng.normal(size=(30, 30))
    with jt.config.override(max_jacobian_bytes=100_000):
        for m in ("chain", "rev", "fwd"):
            with pytest.raises(jt.JacobianTooLargeError, match=r"\(30, 30, 30, 30\).*jt.grad or jt.vjp"):
                jt.jacobian(jt.tanh, method=m)(x)
        g = jt.grad(lambda x: jt.sum(jt.tanh(x)))(x)  # the VJP path is not limited
        assert g.shape == x.shape
    assert jt.jacobian(jt.tanh)(x).shape == (30, 30, 30, 30)


def test_tracer_operators_and_methods(rng):
    x = rng.normal(size=(2, 3))

    def f(x):
        y = (x + 1) * 2 - x / 3 + 2 ** x + x ** 2
        y = 1 - y + (-y) @ x.T @ x
        return y.sum(axis=0) + y.mean() + y.reshape(3, 2).transpose().max(axis=1).sum() + y[0, 1] + x.T.shape[0]

    J = jt.jacobian(f)(x)
    np.testing.assert_allclose(J, finite_difference_jacobian(f, x), atol=1e-6)
    # numpy functions with a primitive of the same name record it; others say what to use
    np.testing.assert_allclose(jt.grad(lambda x: np.sum(np.exp(x)))(x), np.exp(x))
    np.testing.assert_allclose(jt.grad(lambda x: np.mean(np.reshape(x, (3, 2)) * 2))(x), np.full(x.shape, 2 / 6))
    with pytest.raises(jt.NotDifferentiableError, match=r"np.fft.fft is not differentiable in jactensor"):
        jt.grad(lambda x: np.sum(np.fft.fft(x)))(x)
    with pytest.raises(jt.ConcretizationError, match="np.asarray.*jt.getval"):
        jt.grad(lambda x: jt.sum(np.asarray(x)))(x)


def test_nested_jacobian_of_jacobian_matches_hessian(rng):
    x = rng.normal(size=3)
    f = lambda x: jt.sum(jt.sigmoid(x) * x)  # noqa: E731
    H1 = jt.jacobian(jt.jacobian(f, method="rev"), method="rev")(x)
    H2 = jt.jacobian(jt.jacobian(f, method="fwd"), method="fwd")(x)
    np.testing.assert_allclose(H1, jt.hessian(f)(x), atol=1e-14)
    np.testing.assert_allclose(H2, H1, atol=1e-14)
    with pytest.raises(jt.NotDifferentiableError, match="method='rev' or 'fwd'"):
        jt.jacobian(jt.jacobian(f, method="chain"), method="rev")(x)


def test_batched_passes_chunk_the_basis_to_fit_the_memory_limit(rng):
    """The final Jacobian (30,) x (30,) is small, but rev/fwd would carry 30 basis vectors through a
    (30, 30, 30) intermediate (6.5 MB at once): under a 1 MB limit the basis is processed in chunks that
    fit, with the same numbers; under a limit one vector cannot meet, it is refused before starting."""
    import tracemalloc
    x = rng.normal(size=30)
    f = lambda x: jt.sum(jt.tanh(x[:, None, None] * x[None, :, None] * x[None, None, :]), axis=(1, 2))  # noqa: E731
    ref = jt.jacobian(f, method="chain")(x)
    for m in ("rev", "fwd"):
        with jt.config.override(max_jacobian_bytes=1_000_000):
            tracemalloc.start()
            J = jt.jacobian(f, method=m)(x)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        np.testing.assert_allclose(J, ref, atol=1e-12)
        assert peak < 1_500_000, (m, peak)  # the limit plus the recorded forward values (~0.6 MB)
        with jt.config.override(max_jacobian_bytes=100_000):
            with pytest.raises(jt.JacobianTooLargeError, match="one basis vector alone needs"):
                jt.jacobian(f, method=m)(x)


def test_keyword_arguments_pass_through_as_constants(rng):
    x = rng.normal(size=3)
    f = lambda x, scale=1.0: jt.sum(jt.tanh(x) * scale)  # noqa: E731
    np.testing.assert_allclose(jt.grad(f)(x, scale=3.0), 3.0 * (1 - np.tanh(x) ** 2))
    assert jt.jacobian(lambda x, k=2: x * k)(x, k=5).trace() == 15.0
    np.testing.assert_allclose(jt.hessian(f)(x, scale=2.0), np.diag(2.0 * -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)))
