"""jacobian / grad / vjp / jvp / hessian over traced programs."""
import sys

import numpy as np
import pytest

import jactensor as jt
from jactensor.pytree import tree_flatten
from jactensor.testing import finite_difference_jacobian
from jactensor.tracer import Tracer

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
    for k, g in enumerate(grads):  # d sum(A^2) / dx = 2 A . dA/dx, the Jacobian by finite differences
        fd = finite_difference_jacobian(lambda v: attention(*[v if j == k else a for j, a in enumerate(attn_args)]),
                                        attn_args[k])
        np.testing.assert_allclose(g, np.tensordot(2 * attention(*attn_args), fd, axes=2), atol=1e-7)


def test_grad_never_forms_a_jacobian(attn_args, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a Jacobian rule ran during grad")
    J = jt.jacobian(attention, argnums=(0, 1, 2, 3))(*attn_args)  # the chain route, before breaking it
    for prim in jt.registry.values():
        monkeypatch.setattr(prim, "jac_rules", [boom] * 8)
    monkeypatch.setattr(jt.Jacobian, "dense", boom)
    g = jt.grad(lambda *a: jt.sum(attention(*a) ** 2), argnums=(0, 1, 2, 3))(*attn_args)
    _, fn = jt.vjp(attention, *attn_args)
    pulled = fn(np.ones((5, 3)))
    _, pushed = jt.jvp(attention, attn_args, [np.ones_like(x) for x in attn_args])
    Jr = jt.jacobian(attention, method="rev")(*attn_args)
    Jf = jt.jacobian(attention, method="fwd")(*attn_args)
    A = attention(*attn_args)
    for k in range(4):
        np.testing.assert_allclose(g[k], np.tensordot(2 * A, J[k], axes=2), atol=1e-12)
        np.testing.assert_allclose(pulled[k], np.tensordot(np.ones((5, 3)), J[k], axes=2), atol=1e-12)
    np.testing.assert_allclose(pushed, sum(np.tensordot(J[k], np.ones_like(attn_args[k]), axes=2) for k in range(4)),
                               atol=1e-12)
    np.testing.assert_allclose(Jr, J[0], atol=1e-12)
    np.testing.assert_allclose(Jf, J[0], atol=1e-12)
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
    np.testing.assert_allclose(v, x @ x)
    out, fn, aux = jt.vjp(lambda x: (x * 3, "tag"), x, has_aux=True)
    assert aux == "tag"
    np.testing.assert_allclose(out, 3 * x)
    np.testing.assert_allclose(fn(np.arange(3.0))[0], 3 * np.arange(3.0))
    out, t, aux = jt.jvp(lambda x: (x * 3, 7), (x,), (np.ones(3),), has_aux=True)
    np.testing.assert_allclose(t, 3 * np.ones(3))
    np.testing.assert_allclose(out, 3 * x)
    assert aux == 7
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
    ref = model(params, x)
    np.testing.assert_allclose(out[0]["mean"], ref[0]["mean"])
    np.testing.assert_allclose(out[1], ref[1])
    gp, gx = fn(({"mean": np.array(1.0), "sum": np.array(0.0)}, np.zeros((4, 2))))
    np.testing.assert_allclose(gp["W"], g["W"], atol=1e-14)
    gx_ref = jt.grad(lambda p, x: model(p, x)[0]["mean"], argnums=1)(params, x)
    np.testing.assert_allclose(gx, gx_ref, atol=1e-14)
    np.testing.assert_allclose(gx, finite_difference_jacobian(lambda v: model(params, v)[0]["mean"], x), atol=1e-8)


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
        np.testing.assert_allclose(g, 1 - np.tanh(x) ** 2, atol=1e-15)
    J = jt.jacobian(jt.tanh)(x)
    assert J.shape == (30, 30, 30, 30)
    np.testing.assert_allclose(J.reshape(900, 900), np.diag((1 - np.tanh(x) ** 2).ravel()), atol=1e-15)


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


@pytest.mark.eager_only  # measures one uncompiled call's peak; test_jit checks the compiled one
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


# ---- generated programs with kinks, broadcast-then-reduce and negative indices ----------------------------------
@pytest.mark.parametrize("seed", range(24))
def test_random_programs_with_kinks_follow_the_documented_convention(seed):
    """Programs evaluated exactly at kinks (relu at 0, tied maxima): every method's Jacobian equals the finite
    differences of the program with each kink linearised under the documented convention."""
    f = random_program(seed, n_steps=2 + seed % 5, kinks=True)
    args = inputs(seed)
    assert f.has_kinks
    ref = f.reference(*args)
    np.testing.assert_allclose(ref(*args), f(*args), atol=1e-14)
    Js = {m: jt.jacobian(f, argnums=(0, 1, 2), method=m)(*args) for m in ("chain", "rev", "fwd")}
    out = np.asarray(f(*args))
    W = np.random.default_rng(seed).normal(size=out.shape)
    g = jt.grad(lambda *a: jt.sum(f(*a) * W), argnums=(0, 1, 2))(*args)
    for a in range(3):
        fd = finite_difference_jacobian(lambda v: ref(*[v if k == a else args[k] for k in range(3)]), args[a])
        for m in Js:
            np.testing.assert_allclose(Js[m][a], fd, atol=2e-7, rtol=1e-6, err_msg=f"{m} arg {a}")
        np.testing.assert_allclose(g[a], np.tensordot(W, fd, axes=out.ndim), atol=1e-6, err_msg=f"grad arg {a}")


@pytest.mark.parametrize("shape, r", [((), 5), ((3,), 2), ((2, 1), 4)])
def test_broadcast_then_reduce_counts_the_copies(shape, r):
    """sum(broadcast_to(y, (r,) + y.shape), axis=0) = r y: the derivative is r on every route."""
    y = np.random.default_rng(0).normal(size=shape)

    def f(y):
        return jt.sum(jt.broadcast_to(y, (r,) + shape), axis=0)
    expected = r * np.eye(max(y.size, 1)).reshape(shape + shape)
    for m in ("chain", "rev", "fwd"):
        np.testing.assert_allclose(jt.jacobian(f, method=m)(y), expected, err_msg=m)
        np.testing.assert_allclose(jt.jacobian(f, method=m, dense=(m == "chain"))(y), expected, err_msg=m)
    np.testing.assert_allclose(jt.grad(lambda y: jt.sum(f(y)))(y), np.full(shape, float(r)))
    np.testing.assert_allclose(jt.jvp(f, (y,), (np.ones(shape),))[1], np.full(shape, float(r)))
    np.testing.assert_allclose(jt.hessian(lambda y: jt.sum(f(y) * f(y)))(y), 2 * r * r * np.eye(max(y.size, 1))
                               .reshape(shape + shape))


def test_explain_counts_eight_bytes_per_entry(attn_args):
    """explain's totals from the shapes of the recorded steps (float64: 8 bytes an entry)."""
    n, d = attn_args[0].shape
    nd, dd, nn = n * d, d * d, n * n
    # (output size, [input sizes]) of each step of attention w.r.t. X and Wq: Q = X Wq, K = X Wk, V = X Wv,
    # K.T, Q K^T, / sqrt(d), softmax, S V
    steps = [(nd, [nd, dd]), (nd, [nd]), (nd, [nd]), (nd, [nd]), (nn, [nd, nd]), (nn, [nn]), (nn, [nn]),
             (nd, [nn, nd])]
    e = jt.explain(attention, *attn_args, argnums=(0, 1))
    assert [len(r["jacs"]) for r in e.rows] == [len(ins) for _, ins in steps]
    assert e.full_bytes == 8 * sum(o * i for o, ins in steps for i in ins)
    assert e.vjp_bytes == 8 * (nd + dd + sum(o for o, _ in steps))
    assert [b for r in e.rows for b in r["bytes"]] == [8 * o * i for o, ins in steps for i in ins]


@pytest.mark.parametrize("method", ["chain", "rev", "fwd"])
def test_empty_arrays_have_empty_jacobians(method):
    """A zero-size output or input: the Jacobian is an empty array of shape out + in, on every route."""
    for shape in [(0,), (2, 0), (0, 3)]:
        x = np.ones(shape)
        J = jt.jacobian(jt.exp, method=method)(x)
        assert J.shape == shape + shape
        J = jt.jacobian(lambda v: jt.sum(v) * np.ones(2), method=method)(x)   # empty input, non-empty output
        np.testing.assert_array_equal(J, np.zeros((2,) + shape))
        J = jt.jacobian(lambda v: v[:0] * 2.0, method=method)(np.ones(3))      # empty output
        assert J.shape == (0, 3)
    assert jt.hessian(lambda v: jt.sum(v * v))(np.ones(0)).shape == (0, 0)


TRANSFORMS = ("grad", "value_and_grad", "jacobian", "jacfwd", "jacrev", "hessian")


@pytest.fixture(params=["eager", "jit"], autouse=True)
def both_ways(request, monkeypatch):
    """Every test in this file runs twice: once as written, once with each transform's result compiled by
    jt.jit. Compiled, each call runs the uncompiled function too and asserts that the compiled program (first
    call and a replay) agrees with it to 1e-12 before handing the compiled result to the test."""
    if request.param == "eager" or request.node.get_closest_marker("eager_only"):
        return
    for name in TRANSFORMS:
        monkeypatch.setattr(jt, name, _compiled_twin(getattr(jt, name)))


def _compiled_twin(transform):
    def make(*targs, **tkw):
        f = transform(*targs, **tkw)
        cf = jt.jit(f)

        def run(*args, **kw):
            if any(isinstance(x, Tracer) for x in tree_flatten((args, kw))[0]):
                return cf(*args, **kw)  # inside another transform: values are traced, compared by the caller
            want = f(*args, **kw)
            got = cf(*args, **kw)
            again = cf(*args, **kw)
            for g in (got, again):
                _agree(g, want)
            return got
        return run
    return make


def _agree(got, want):
    g, w = tree_flatten(got)[0], tree_flatten(want)[0]
    assert len(g) == len(w)
    for a, b in zip(g, w):
        a = a.dense() if isinstance(a, jt.Jacobian) else np.asarray(a)
        b = b.dense() if isinstance(b, jt.Jacobian) else np.asarray(b)
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg="compiled vs uncompiled")
