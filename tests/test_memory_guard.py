"""The memory guard (config.max_jacobian_bytes): its boundary, exact sizes, validated settings, context-local
overrides, and peak memory against the budget on the programs that used to blow it.

Peaks are measured with tracemalloc, which sees every numpy allocation. The budget bounds what any one
Jacobian, factor, contraction intermediate or batch of tangents may take; the process also holds the
inputs, the recorded forward values and the result, so a run passes if its peak stays within twice the
budget. Each problem is scaled down (with its budget) so it runs in about a second, while the way it
used to be computed would still need many times the budget: each test says how much, from the formula
for the old peak.
"""
import threading
import time
import tracemalloc

import numpy as np
import pytest

import jactensor as jt
from jactensor.memory import check_bytes

MiB = 2**20


def _peak(run, budget):
    """(result, peak bytes) of ``run()`` under ``max_jacobian_bytes=budget``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with jt.config.override(max_jacobian_bytes=budget):
            out = run()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _within(run, budget):
    out, peak = _peak(run, budget)
    assert peak <= 2 * budget, f"peak {peak / MiB:.1f} MiB under a budget of {budget / MiB:.1f} MiB"
    return out


# ---- the boundary ----------------------------------------------------------------------------------------
def test_exactly_at_the_limit_passes_and_one_byte_over_refuses():
    J = jt.Jacobian.from_dense(np.arange(12.0).reshape(3, 4), 1)
    assert J.nbytes == 96
    with jt.config.override(max_jacobian_bytes=96):
        np.testing.assert_array_equal(np.asarray(J), np.arange(12.0).reshape(3, 4))
        check_bytes(96, "test")
    with jt.config.override(max_jacobian_bytes=95):
        with pytest.raises(jt.JacobianTooLargeError, match=r"96 B.*above config.max_jacobian_bytes = 95 B"):
            J.dense()
        with pytest.raises(jt.JacobianTooLargeError):
            check_bytes(96, "test")


@pytest.mark.parametrize("method", ["chain", "rev", "fwd"])
def test_transform_boundary(method):
    x = np.linspace(-1, 1, 5)
    expected = np.diag(1 - np.tanh(x) ** 2)  # 5 x 5 float64: 200 bytes
    with jt.config.override(max_jacobian_bytes=200):
        np.testing.assert_allclose(jt.jacobian(jt.tanh, method=method)(x), expected, atol=1e-15)
    with jt.config.override(max_jacobian_bytes=199):
        with pytest.raises(jt.JacobianTooLargeError, match=r"\(5, 5\)"):
            jt.jacobian(jt.tanh, method=method)(x)


# ---- exact sizes ---------------------------------------------------------------------------------------------
def test_sizes_are_exact_python_ints():
    big = jt.Jacobian.identity((2**16,) * 3)           # nbytes was 0 (int64 wrapped around)
    assert big.nbytes == 8 * 2**96 and type(big.nbytes) is int
    assert big.size == 2**96 and big.shape == (2**16,) * 6
    long = jt.Jacobian.identity((3 * 2**30,))          # nbytes was negative
    assert long.nbytes == 8 * 9 * 2**60 and long.nbytes > 0
    assert big.stored_bytes == 0
    for J in (big, long):
        with pytest.raises(jt.JacobianTooLargeError):
            J.dense()
        with pytest.raises(jt.JacobianTooLargeError):
            J.as_matrix()


def test_explain_counts_huge_jacobians_exactly():
    x = np.zeros(2**16)
    e = jt.explain(lambda x: jt.broadcast_to(x, (2**16,) * 3), x)  # a read-only view: nothing allocated
    assert e.full_bytes == 8 * 2**64                               # out (2^16)^3 x in 2^16
    assert e.vjp_bytes == 8 * (2**16 + 2**48)


# ---- validated settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), -1, 1.5, "1000000", True, [100]])
def test_the_limit_is_validated(bad):
    before = jt.config.max_jacobian_bytes
    with pytest.raises(ValueError, match="max_jacobian_bytes"):
        with jt.config.override(max_jacobian_bytes=bad):
            pass  # None or NaN used to switch the guard off silently
    with pytest.raises(ValueError, match="max_jacobian_bytes"):
        jt.config.max_jacobian_bytes = bad
    assert jt.config.max_jacobian_bytes == before


def test_other_settings_are_validated():
    for name, bad in [("check_nan", "yes"), ("check_nan", 2), ("debug", None), ("max_terms", 0), ("max_terms", 2.5)]:
        with pytest.raises(ValueError, match=name):
            with jt.config.override(**{name: bad}):
                pass
    with pytest.raises(TypeError, match="unknown setting"):
        with jt.config.override(max_bytes=1):
            pass
    with jt.config.override(max_jacobian_bytes=1e6):   # a whole number given as a float is fine
        assert jt.config.max_jacobian_bytes == 1_000_000 and type(jt.config.max_jacobian_bytes) is int


def test_override_restores_on_error_and_nests():
    before = jt.config.max_jacobian_bytes
    with pytest.raises(RuntimeError):
        with jt.config.override(max_jacobian_bytes=123):
            raise RuntimeError
    assert jt.config.max_jacobian_bytes == before
    with jt.config.override(max_jacobian_bytes=10):
        with jt.config.override(check_nan=True):
            assert jt.config.max_jacobian_bytes == 10 and jt.config.check_nan
        assert not jt.config.check_nan
    assert jt.config.max_jacobian_bytes == before


def test_overrides_are_local_to_each_thread():
    """Each thread overrides the limit and, over many interleaved iterations, sees only its own value
    (and its own refusals); a thread that never overrides sees the default throughout."""
    default = jt.config.max_jacobian_bytes
    x = np.linspace(-1, 1, 10)          # its Jacobian takes 800 bytes
    limits = [100, 800, 5_000, 10**6, 10**9]
    barrier = threading.Barrier(len(limits) + 1)
    errors = []

    def overriding(limit):
        try:
            barrier.wait()
            for i in range(300):
                with jt.config.override(max_jacobian_bytes=limit):
                    time.sleep(0)  # let the other threads run (and override) in between
                    assert jt.config.max_jacobian_bytes == limit
                    if i % 25 == 0:
                        try:
                            jt.jacobian(jt.tanh)(x)
                            refused = False
                        except jt.JacobianTooLargeError:
                            refused = True
                        assert refused == (limit < 800), (limit, refused)
                    time.sleep(0)
                    assert jt.config.max_jacobian_bytes == limit
                assert jt.config.max_jacobian_bytes == default
        except Exception as e:  # reported below: assertion errors in threads do not fail the test alone
            errors.append((limit, repr(e)))

    def plain():
        try:
            barrier.wait()
            for _ in range(1000):
                time.sleep(0)
                assert jt.config.max_jacobian_bytes == default
        except Exception as e:
            errors.append(("never overrides", repr(e)))

    threads = [threading.Thread(target=overriding, args=(lim,)) for lim in limits] + [threading.Thread(target=plain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert jt.config.max_jacobian_bytes == default


# ---- peak memory of programs that used to blow the budget ----------------------------------------------------------
def test_row_softmax_jacobian_within_budget():
    """jacobian(sum(softmax(x, -1) * w)) for x of (n, n): the per-row block factor S_i (delta - S_j) alone
    was (n, n, n), 8 n^3 = 8 MB at n = 100 (with temporaries ~3x that), for a 80 KB result: at n = 600
    under 64 MiB it peaked at 3.3 GiB."""
    n, budget = 100, 2 * MiB
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(n, n)), rng.normal(size=(n, n))

    def f(x):
        return jt.sum(jt.softmax(x, axis=-1) * w)

    J = _within(lambda: jt.jacobian(f)(x), budget)
    S = np.exp(x - x.max(-1, keepdims=True))
    S /= S.sum(-1, keepdims=True)
    np.testing.assert_allclose(J, S * (w - (S * w).sum(-1, keepdims=True)), atol=1e-14)  # closed form
    e = _within(lambda: jt.explain(f, x), budget)
    assert e.full_bytes > budget  # the dense per-op route would not fit: explain only reports it


def test_whole_array_softmax_jacobian_within_budget():
    """softmax.jacobian(x, axis=None) on (30, 30): one dense block of (900, 900), 6.5 MB with its identity
    and temporaries ~20 MB (80 x 80 took 312 MiB); the Jacobian is diag(S) - S S^T: two 900-vectors."""
    rng = np.random.default_rng(1)
    x, u = rng.normal(size=(30, 30)), rng.normal(size=(30, 30))
    (J,) = _within(lambda: jt.softmax.jacobian(x, axis=None), MiB)
    S = np.exp(x - x.max())
    S /= S.sum()
    g = _within(lambda: J.vjp(u), MiB)
    np.testing.assert_allclose(g, S * (u - (S * u).sum()), atol=1e-15)
    np.testing.assert_allclose(_within(lambda: J.jvp(u), MiB), S * (u - (S * u).sum()), atol=1e-15)  # symmetric


def test_layer_norm_jacobian_within_budget():
    """layer_norm.jacobian on (2, 1000): the per-row block (2, 1000, 1000) was 16 MB (plus temporaries) for a
    Jacobian that is a diagonal, a constant and a rank-one term per row; (2, 5000) took ~1 GiB."""
    rng = np.random.default_rng(2)
    d = 1000
    x, gamma, beta, u = rng.normal(size=(2, d)), rng.normal(size=d), rng.normal(size=d), rng.normal(size=(2, d))
    Js = _within(lambda: jt.layer_norm.jacobian(x, gamma, beta), MiB)
    mu = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    xhat = (x - mu) * rstd
    gg = u * gamma
    expected = rstd * (gg - gg.mean(-1, keepdims=True) - xhat * (gg * xhat).mean(-1, keepdims=True))
    np.testing.assert_allclose(_within(lambda: Js[0].vjp(u), MiB), expected, atol=1e-12)
    np.testing.assert_allclose(_within(lambda: Js[1].vjp(u), MiB), (u * xhat).sum(0), atol=1e-12)


def _multi_term(n, rng):
    a, b, c, d = rng.normal(size=(4, n))

    def F(v):
        return v * a + v * b + v * c + v * d + jt.sum(v) * a
    return F, (a, b, c, d)


def test_multi_term_chain_within_budget():
    """x scalar, v = broadcast_to(x, (n,)), f = v a + v b + v c + v d + sum(v) a: merging the diagonal and
    rank-one terms at v into one (n, n) factor took 8 n^2 = 32 MB at n = 2000 (3.1 GiB at n = 20000) for a
    16 KB Jacobian."""
    n, budget = 2000, MiB
    F, (a, b, c, d) = _multi_term(n, np.random.default_rng(3))
    J = _within(lambda: jt.jacobian(lambda x: F(jt.broadcast_to(x, (n,))))(np.array(1.5)), budget)
    np.testing.assert_allclose(J, a + b + c + d + n * a, rtol=1e-12)


def test_multi_term_merged_refuses_and_chain_fits():
    n, budget = 2000, MiB
    F, (a, b, c, d) = _multi_term(n, np.random.default_rng(4))
    def term(v, labels):
        return jt.Jacobian.from_labels((n,), (n,), labels, [(v, (0,))])
    Jv = term(a, (0, 0)) + term(b, (0, 0)) + term(c, (0, 0)) + term(d, (0, 0)) + term(a, (0, 1))  # 4 diagonals + a 1^T
    (Jb,) = jt.broadcast_to.jacobian(np.array(1.5), (n,))
    # one term for the sum is a dense (n, n): refused before allocating it
    _, peak = _peak(lambda: pytest.raises(jt.JacobianTooLargeError, Jv.merged), budget)
    assert peak <= budget
    for route in (lambda: jt.chain(Jv, Jb), lambda: jt.chain(Jv, Jb).merged(), lambda: jt.chain(Jv.compact(), Jb)):
        J = _within(route, budget)
        np.testing.assert_allclose(np.asarray(J), a + b + c + d + n * a, rtol=1e-12)
    traced = jt.jacobian(F, structured=True)(np.ones(n))  # the same Jacobian, recorded
    np.testing.assert_allclose(_within(lambda: traced.vjp(np.ones(n)), budget), Jv.vjp(np.ones(n)), rtol=1e-12)


def test_unused_input_and_constant_output_build_no_basis():
    """method='fwd' pushed an identity basis through an input the output never reads, and method='rev'
    pulled one back from a constant output: np.eye(m), 8 m^2 = 128 MB at m = 4000 (3 GiB at m = 20000)."""
    m, budget = 4000, MiB
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=2), rng.normal(size=m)
    Jx, Jy = _within(lambda: jt.jacobian(lambda x, y: x * 2.0, argnums=(0, 1), method="fwd")(x, y), budget)
    np.testing.assert_array_equal(Jx, 2 * np.eye(2))
    assert Jy.shape == (2, m) and not Jy.any()
    for method in ("rev", "fwd", "chain"):
        J = _within(lambda: jt.jacobian(lambda x: np.ones(m), method=method)(x), budget)
        assert J.shape == (m, 2) and not J.any()


def _tanh_chain(x, k=40):
    for _ in range(k):
        x = jt.tanh(x)
    return x


def _tanh_chain_derivatives(x, k=40):
    d, dd = np.ones_like(x), np.zeros_like(x)  # first and second derivative of the k-fold tanh
    for _ in range(k):
        y = np.tanh(x)
        s = 1 - y * y
        dd = s * dd - 2 * y * s * d * d
        d = s * d
        x = y
    return d, dd


@pytest.mark.parametrize("method", ["fwd", "rev", "chain"])
def test_long_chain_jacobian_releases_tangents(method):
    """40 tanh steps on x of size 300: keeping every step's batch of 300 tangents took 40 * 8 * 300^2 =
    29 MB (400 steps on 1000 took 3.1 GiB for a 7.6 MiB result); now each is released after its last use
    and the basis is chunked to the budget."""
    x = np.random.default_rng(6).normal(size=300) * 0.5
    J = _within(lambda: jt.jacobian(_tanh_chain, method=method)(x), 4 * MiB)
    np.testing.assert_allclose(J, np.diag(_tanh_chain_derivatives(x)[0]), atol=1e-14)


@pytest.mark.parametrize("method", ["fwdrev", "chain", "auto"])
def test_long_chain_hessian_within_budget(method):
    """The Hessian of sum(tanh^40(x)), x of size 300: forward mode over the gradient program kept every
    tangent batch (at 400 steps on 1000, 11.6 GB); the chain route held one (300, 300) adjoint per node of
    the gradient program (~30 MB here)."""
    x = np.random.default_rng(7).normal(size=300) * 0.5
    H = _within(lambda: jt.hessian(lambda x: jt.sum(_tanh_chain(x)), method=method)(x), 4 * MiB)
    np.testing.assert_allclose(H, np.diag(_tanh_chain_derivatives(x)[1]), atol=1e-12)
