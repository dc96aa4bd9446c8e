"""Structured results from the transforms, structured Hessians, the Jacobian algebra, and their worked uses
(Gauss-Newton, the empirical NTK, a Hessian diagonal, per-example Jacobians), each against the dense route."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jactensor as jt
from jactensor.testing import finite_difference_jacobian

from .programs import inputs, random_program


def _peak(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---- structured results equal the dense ones ---------------------------------------------------
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_structured_results_match_dense_on_generated_programs(seed):
    f = random_program(seed, n_steps=2 + seed % 6)
    args = inputs(seed)
    dense = jt.jacobian(f, argnums=(0, 1, 2), method="rev")(*args)
    for method in ("chain", "rev", "fwd"):
        res = jt.jacobian(f, argnums=(0, 1, 2), method=method, structured=True)(*args)
        for J, D in zip(res, dense):
            assert isinstance(J, jt.Jacobian)
            assert J.shape == D.shape
            np.testing.assert_allclose(np.asarray(J), D, atol=1e-11, rtol=1e-9)


def test_structured_chain_builds_nothing_dense(monkeypatch):
    """With structured=True and method="chain", no dense tensor of the result's size is built."""
    rng = np.random.default_rng(0)
    X, W = rng.normal(size=(256, 64)), rng.normal(size=(64, 64)) / 8
    f = lambda X: jt.tanh(X @ W)  # noqa: E731
    J, peak = _peak(lambda: jt.jacobian(f, structured=True)(X))
    assert J.nbytes == 256 * 64 * 256 * 64 * 8      # 2 GiB dense
    assert peak < 5 * 2**20, peak                   # factors only
    assert J.stored_bytes < 2**20


def test_pytrees_and_has_aux_keep_their_layout():
    rng = np.random.default_rng(1)
    p = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    x = rng.normal(size=(4, 3))

    def f(p, x):
        return jt.tanh(x @ p["W"] + p["b"]), "aux"
    res, aux = jt.jacobian(f, has_aux=True, structured=True)(p, x)
    dense, _ = jt.jacobian(f, has_aux=True)(p, x)
    assert aux == "aux" and set(res) == {"W", "b"}
    for k in res:
        assert isinstance(res[k], jt.Jacobian)
        np.testing.assert_allclose(np.asarray(res[k]), dense[k], atol=1e-12)


# ---- structured Hessians --------------------------------------------------------------------------
def _logreg(rng, n, m):
    X = rng.normal(size=(m, n)) / np.sqrt(n)
    y = rng.integers(0, 2, m) * 2.0 - 1.0

    def loss(w):
        return jt.mean(jt.log(1 + jt.exp(-y * (X @ w))))

    def closed(w, diagonal=False):
        z = y * (X @ w)
        s = 1 / (1 + np.exp(z))
        if diagonal:
            return (X * X).T @ (s * (1 - s) / m)
        return (X.T * (s * (1 - s) / m)) @ X
    return loss, closed


@pytest.mark.parametrize("method", ["auto", "chain", "fwdrev"])
def test_hessian_methods_agree_with_closed_forms(method):
    rng = np.random.default_rng(2)
    n = 7
    A = rng.normal(size=(n, n))
    x = rng.normal(size=n)
    np.testing.assert_allclose(jt.hessian(lambda x: x @ A @ x, method=method)(x), A + A.T, atol=1e-12)
    loss, closed = _logreg(rng, 5, 11)
    w = rng.normal(size=5)
    np.testing.assert_allclose(jt.hessian(loss, method=method)(w), closed(w), atol=1e-12)
    T, U, V = rng.normal(size=(4, 5)), rng.normal(size=(4, 2)), rng.normal(size=(5, 2))
    H = jt.hessian(lambda U: jt.sum((T - U @ V.T) ** 2), method=method)(U)
    np.testing.assert_allclose(H, 2 * np.einsum("ac,kl->akcl", np.eye(4), V.T @ V), atol=1e-12)


@pytest.mark.parametrize("method", ["chain", "fwdrev", "auto"])
def test_structured_hessian_of_generated_programs(method):
    for seed in range(6):
        f0 = random_program(seed, n_steps=3)
        args = inputs(seed)
        f = lambda x: jt.sum(f0(x, *args[1:]) ** 2)  # noqa: E731
        H = jt.hessian(f, method=method, structured=True)(args[0])
        assert isinstance(H, jt.Jacobian)
        ref = finite_difference_jacobian(jt.grad(f), args[0])
        np.testing.assert_allclose(np.asarray(H), ref, atol=1e-6, rtol=1e-5)


def test_hessian_tuple_argnums_nest_like_jax():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=3), rng.normal(size=2)
    B = rng.normal(size=(3, 2))
    f = lambda x, y: jt.sum(jt.tanh(x @ B * y))  # noqa: E731
    H = jt.hessian(f, argnums=(0, 1), method="chain")(x, y)
    H2 = jt.hessian(f, argnums=(0, 1), method="fwdrev")(x, y)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(H[i][j], H2[i][j], atol=1e-12)
    assert H[0][1].shape == (3, 2) and H[1][0].shape == (2, 3)


def test_explain_shows_the_hessian_route_and_both_estimates():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(40, 40))
    ex = jt.explain(jt.hessian(lambda x: x @ A @ x), rng.normal(size=40))
    note = "\n".join(ex.notes)
    assert "method='auto' ->" in note and "chain" in note and "fwdrev" in note
    costs = [int(s.replace(",", "")) for s in __import__("re").findall(r"(?:chain|fwdrev) ([\d,]+)", note)]
    assert len(costs) == 2 and all(c > 0 for c in costs)


def test_explain_describes_a_structured_result():
    rng = np.random.default_rng(5)
    X, W = rng.normal(size=(64, 8)), rng.normal(size=(8, 6))
    ex = jt.explain(jt.jacobian(lambda X: jt.tanh(X @ W), structured=True), X)
    note = "\n".join(ex.notes)
    assert "block-diagonal along out axis 0 / in axis 0 (B = 64)" in note
    assert "stored" in note and "dense" in note


# ---- the algebra against the dense route ------------------------------------------------------------
def _square_jacobians():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 3))
    W = rng.normal(size=(3, 3))
    fs = [lambda x: jt.softmax(x, axis=-1), lambda x: jt.softmax(x, axis=None), lambda x: jt.tanh(x) * x,
          lambda x: jt.layer_norm(x, 1.3, 0.2), lambda x: x @ W + jt.sum(x, axis=0, keepdims=True),
          lambda x: jt.broadcast_to(jt.mean(x, axis=1, keepdims=True), (4, 3)) * x]
    return [(jt.jacobian(f, structured=True)(x), jt.jacobian(f, method="rev")(x)) for f in fs]


def test_transpose_diagonal_trace_match_dense():
    for J, D in _square_jacobians():
        M = D.reshape(12, 12)
        np.testing.assert_allclose(np.asarray(J.T), D.transpose(2, 3, 0, 1), atol=1e-12)
        np.testing.assert_allclose(J.diagonal(), np.diag(M).reshape(4, 3), atol=1e-12)
        np.testing.assert_allclose(J.trace(), np.trace(M), atol=1e-12)
        np.testing.assert_allclose(np.asarray(jt.chain(J.T, J)).reshape(12, 12), M.T @ M, atol=1e-11)


def test_nnz_and_to_sparse_match_the_dense_nonzeros():
    pytest.importorskip("scipy")
    for J, D in _square_jacobians():
        M = D.reshape(12, 12)
        S = J.to_sparse()
        np.testing.assert_allclose(S.toarray(), M, atol=1e-12)
        assert J.nnz == S.nnz
        assert np.count_nonzero(M) <= J.nnz  # structural non-zeros include entries that cancel to 0
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 4))
    J = jt.jacobian(lambda x: jt.softmax(x, axis=-1), structured=True)(x)
    assert J.nnz == 5 * 4 * 4  # five 4x4 blocks
    J = jt.jacobian(lambda x: x[::2, 1:] * 2.0, structured=True)(x)
    assert J.nnz == 3 * 3 and J.to_sparse().nnz == 9


def test_nnz_counts_overlapping_terms_once():
    n = 6
    J = jt.Jacobian.identity((n,)) + jt.Jacobian.from_labels((n,), (n,), "ij", [(np.ones(n), "i")])
    assert J.nnz == n * n  # the diagonal lies inside the dense rank-one term
    K = jt.Jacobian.identity((n,)) + 2.0 * jt.Jacobian.identity((n,))
    assert K.nnz == n


def test_algebra_errors_name_the_problem():
    J = jt.jacobian(lambda x: x[:2], structured=True)(np.ones(3))
    with pytest.raises(jt.ShapeError, match="out_shape == in_shape"):
        J.diagonal()
    with pytest.raises(jt.ShapeError, match="out_shape == in_shape"):
        J.trace()
    with pytest.raises(jt.ShapeError, match="same length"):
        J.batch_diagonal()


def test_batch_diagonal_and_its_coupling_error():
    rng = np.random.default_rng(8)
    X, W = rng.normal(size=(6, 4)), rng.normal(size=(4, 3))
    J = jt.jacobian(lambda X: jt.tanh(X @ W), structured=True)(X)
    D = np.asarray(J)
    P = J.batch_diagonal()
    np.testing.assert_allclose(P, np.stack([D[b, :, b, :] for b in range(6)]), atol=1e-12)
    # a mean over the batch couples the examples: refused, named, and check=False takes the blocks anyway
    K = jt.jacobian(lambda X: X - jt.mean(X, axis=0), structured=True)(X)
    with pytest.raises(jt.ShapeError, match="couples example"):
        K.batch_diagonal()
    Dk = np.asarray(K)
    np.testing.assert_allclose(K.batch_diagonal(check=False), np.stack([Dk[b, :, b, :] for b in range(6)]),
                               atol=1e-12)
    # batch axis elsewhere
    Jt = jt.jacobian(lambda X: jt.tanh(X @ W).T, structured=True)(X)
    np.testing.assert_allclose(Jt.batch_diagonal(out_axis=1, in_axis=0), P, atol=1e-12)


# ---- worked uses -----------------------------------------------------------------------------------
def _mlp(rng, d, h, c):
    params = {"W1": rng.normal(size=(d, h)) / np.sqrt(d), "b1": 0.1 * rng.normal(size=h),
              "W2": rng.normal(size=(h, c)) / np.sqrt(h), "b2": 0.1 * rng.normal(size=c)}

    def net(p, X):
        return jt.tanh(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    return params, net


def _flat_jacobian(Js, keys, n_out):
    return np.concatenate([np.asarray(Js[k]).reshape(n_out, -1) for k in keys], axis=1)


def test_gauss_newton_matrix_of_a_least_squares_mlp():
    """G = J^T J with J the Jacobian of the residuals w.r.t. W1: chain(J.T, J) from the factors."""
    rng = np.random.default_rng(9)
    params, net = _mlp(rng, 4, 5, 3)
    X = rng.normal(size=(7, 4))
    f = lambda W1: net(dict(params, W1=W1), X)  # noqa: E731
    J = jt.jacobian(f, structured=True)(params["W1"])
    G = jt.chain(J.T, J)
    Jd = np.asarray(J).reshape(21, 20)
    np.testing.assert_allclose(np.asarray(G).reshape(20, 20), Jd.T @ Jd, atol=1e-11)
    # larger: the dense Jacobian (N*c x P) is 4.6x the budget, the factors and G fit
    N, d, h, c = 2000, 8, 16, 10
    params, net = _mlp(rng, d, h, c)
    X = rng.normal(size=(N, d))
    budget = 8 * 2**20
    with jt.config.override(max_jacobian_bytes=budget):
        f = lambda W1: net(dict(params, W1=W1), X)  # noqa: E731
        with pytest.raises(jt.JacobianTooLargeError):
            jt.jacobian(f)(params["W1"])
        G, peak = _peak(lambda: jt.chain(*(lambda J: (J.T, J))(jt.jacobian(f, structured=True)(params["W1"]))))
        G = np.asarray(G)
    assert peak < 3 * budget, peak
    # reference by summing per-sample dense Jacobians in blocks
    ref = np.zeros((d * h, d * h))
    for s in range(0, N, 250):
        Jb = jt.jacobian(lambda W1: net(dict(params, W1=W1), X[s:s + 250]), method="rev")(params["W1"])
        Jb = Jb.reshape(-1, d * h)
        ref += Jb.T @ Jb
    np.testing.assert_allclose(G.reshape(d * h, d * h), ref, rtol=1e-9, atol=1e-9)


def test_empirical_ntk_of_a_two_layer_mlp():
    """Theta(x1, x2) = sum over parameters of J(x1) J(x2)^T, contracted through the structured Jacobians."""
    rng = np.random.default_rng(10)
    params, net = _mlp(rng, 3, 6, 2)
    X1, X2 = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    keys = sorted(params)
    J1 = jt.jacobian(net, structured=True)(params, X1)
    J2 = jt.jacobian(net, structured=True)(params, X2)
    theta = sum(np.asarray(jt.chain(J1[k], J2[k].T)) for k in keys)
    D1 = _flat_jacobian(jt.jacobian(net, method="rev")(params, X1), keys, 8)
    D2 = _flat_jacobian(jt.jacobian(net, method="rev")(params, X2), keys, 10)
    np.testing.assert_allclose(theta.reshape(8, 10), D1 @ D2.T, atol=1e-11)
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def jnet(p, X):
        return jnp.tanh(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    jp = {k: jnp.asarray(v) for k, v in params.items()}
    a, b = jax.jacrev(jnet)(jp, X1), jax.jacrev(jnet)(jp, X2)
    ref = sum(jnp.einsum("nc...,md...->ncmd", a[k], b[k]) for k in keys)
    np.testing.assert_allclose(theta, np.asarray(ref), atol=1e-11)


def test_ntk_where_the_dense_jacobians_do_not_fit():
    rng = np.random.default_rng(11)
    params, net = _mlp(rng, 16, 256, 4)
    X1, X2 = rng.normal(size=(64, 16)), rng.normal(size=(64, 16))
    budget = 2 * 2**20  # J w.r.t. W1 alone is 64*4 x 16*256 doubles = 8 MiB
    with jt.config.override(max_jacobian_bytes=budget):
        with pytest.raises(jt.JacobianTooLargeError):
            jt.jacobian(net)(params, X1)

        def ntk():
            J1 = jt.jacobian(net, structured=True)(params, X1)
            J2 = jt.jacobian(net, structured=True)(params, X2)
            return sum(np.asarray(jt.chain(J1[k], J2[k].T)) for k in params)
        theta, peak = _peak(ntk)
    assert peak < 2 * budget, peak
    # reference: explicit features per parameter block
    A1, A2 = np.tanh(X1 @ params["W1"] + params["b1"]), np.tanh(X2 @ params["W1"] + params["b1"])
    D1, D2 = 1 - A1 ** 2, 1 - A2 ** 2
    W2 = params["W2"]
    eye = np.eye(4)
    ref = np.einsum("nh,mh,cd->ncmd", A1, A2, eye) + np.einsum("nm,cd->ncmd", np.ones((64, 64)), eye)
    ref += np.einsum("nh,mh,hc,hd,ni,mi->ncmd", D1, D2, W2, W2, X1, X2)
    ref += np.einsum("nh,mh,hc,hd->ncmd", D1, D2, W2, W2)
    np.testing.assert_allclose(theta, ref, atol=1e-10)


def test_hessian_diagonal_of_logistic_regression_without_the_hessian():
    rng = np.random.default_rng(12)
    loss, closed = _logreg(rng, 6, 9)
    w = rng.normal(size=6)
    H = jt.hessian(loss, structured=True)(w)
    np.testing.assert_allclose(H.diagonal(), np.diag(closed(w)), atol=1e-13)
    # n = 4000 features, m = 500 samples: the Hessian (128 MB) is over the budget; its diagonal is not
    loss, closed = _logreg(rng, 4000, 500)
    w = rng.normal(size=4000) * 0.01
    budget = 32 * 2**20
    with jt.config.override(max_jacobian_bytes=budget):
        with pytest.raises(jt.JacobianTooLargeError):
            jt.hessian(loss)(w)
        d, peak = _peak(lambda: jt.hessian(loss, structured=True, method="chain")(w).diagonal())
    assert peak < 4000 * 4000 * 8 / 2, peak  # intermediates the size of X (16 MB each), never the 128 MB Hessian
    np.testing.assert_allclose(d, closed(w, diagonal=True), atol=1e-13)


def test_per_example_gradients_without_a_python_loop():
    rng = np.random.default_rng(13)
    B, d = 32, 5
    X, y = rng.normal(size=(B, d)), rng.normal(size=B)
    w = rng.normal(size=d)
    per_example_losses = lambda w: (X @ w - y) ** 2  # noqa: E731
    G = jt.jacobian(per_example_losses, structured=True)(w)   # (B, d): row b is example b's gradient
    expected = 2 * (X @ w - y)[:, None] * X
    np.testing.assert_allclose(np.asarray(G), expected, atol=1e-12)
    # per-example Jacobians of a layer w.r.t. its batched input: B x out x in, never B^2 x out x in
    W = rng.normal(size=(d, 7))
    J = jt.jacobian(lambda X: jt.tanh(X @ W), structured=True)(X)
    P = J.batch_diagonal()
    ref = np.stack([jt.jacobian(lambda x: jt.tanh(x @ W))(X[b]) for b in range(B)])
    np.testing.assert_allclose(P, ref, atol=1e-12)
    Xb = rng.normal(size=(1024, 64))
    Wb = rng.normal(size=(64, 64)) / 8
    # the per-example result is 32 MiB; the dense Jacobian would be 1024 times that (32 GiB)
    with jt.config.override(max_jacobian_bytes=48 * 2**20):
        P, peak = _peak(lambda: jt.jacobian(lambda X: jt.tanh(X @ Wb), structured=True)(Xb).batch_diagonal())
    assert P.shape == (1024, 64, 64)
    assert peak < 2 * P.nbytes, peak
    b = 517
    np.testing.assert_allclose(P[b], (1 - np.tanh(Xb[b] @ Wb) ** 2)[:, None] * Wb.T, atol=1e-12)
