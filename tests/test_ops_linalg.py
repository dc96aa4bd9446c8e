"""Products, matrix structure and numpy.linalg against JAX at float64 (values, jacobian by every method, grad and
hessian of a scalar loss) on hypothesis-drawn shapes; gauge-invariant comparisons for eigenvectors and singular
vectors; structured Jacobians; numpy code written without jactensor in mind; clear errors."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jactensor as jt
import jactensor.linalg  # noqa: F401 - the jt.linalg namespace (registers np.linalg's functions)
from jactensor.testing import check, finite_difference_jacobian

from .support import TOL, _tree_close, against_jax, arrays, assert_close
from .support import shapes as _shapes

JAX_CASES = settings(max_examples=3, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CASES = settings(max_examples=12, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def shapes(**kw):
    return _shapes(**{"max_dims": 2, **kw})


def _partner(draw, batch):
    """A batch shape that broadcasts with ``batch``: a suffix of it with some axes set to 1."""
    k = draw(st.integers(0, len(batch)))
    return tuple(1 if draw(st.booleans()) else n for n in batch[len(batch) - k:])


# each product: draw(data) -> (args, kwargs); the jax function takes (jnp, *args, **kwargs)
def _draw_matmul(draw):
    n, p, k = (draw(st.integers(0, 3)) for _ in range(3))
    batch = draw(shapes(max_dims=2, max_side=2))
    sa = draw(st.sampled_from([(n,), (p, n), batch + (p, n)]))
    sb = draw(st.sampled_from([(n,), (n, k), _partner(draw, batch) + (n, k)]))
    return (draw(arrays(sa)), draw(arrays(sb))), {}


def _draw_dot(draw):
    k = draw(st.integers(1, 3))
    kind = draw(st.integers(0, 3))
    if kind == 0:   # a scalar operand multiplies
        return (draw(arrays(draw(shapes()))), draw(arrays(()))), {}
    sa = draw(shapes(max_dims=2)) + (k,)
    sb = (k,) if kind == 1 else draw(shapes(max_dims=1)) + (k, draw(st.integers(0, 3)))
    return (draw(arrays(sa)), draw(arrays(sb))), {}


def _draw_inner(draw):
    k = draw(st.integers(0, 3))
    return (draw(arrays(draw(shapes(max_dims=2)) + (k,))), draw(arrays(draw(shapes(max_dims=1)) + (k,)))), {}


def _draw_vdot(draw):
    s = draw(shapes(max_dims=3))
    n = int(np.prod(s, dtype=np.int64))
    other = draw(st.sampled_from([s, (n,), tuple(reversed(s))]))
    return (draw(arrays(s)), draw(arrays(other))), {}


def _draw_outer(draw):
    return (draw(arrays(draw(shapes(max_dims=2)))), draw(arrays(draw(shapes(max_dims=1))))), {}


def _draw_tensordot(draw):
    sa = draw(shapes(max_dims=3))
    n = draw(st.integers(0, len(sa)))
    if draw(st.booleans()):
        sb = sa[len(sa) - n:] + draw(shapes(max_dims=1))
        return (draw(arrays(sa)), draw(arrays(sb))), {"axes": n}
    xa = draw(st.permutations(range(len(sa))))[:n]
    rest = draw(shapes(max_dims=1))
    sb = rest + tuple(sa[i] for i in xa)
    xb = [len(rest) + q - len(sb) if draw(st.booleans()) else len(rest) + q for q in range(n)]
    return (draw(arrays(sa)), draw(arrays(sb))), {"axes": (list(xa), xb)}


def _draw_kron(draw):
    return (draw(arrays(draw(shapes(max_dims=2)))), draw(arrays(draw(shapes(max_dims=2))))), {}


def _draw_cross(draw):
    rest = draw(shapes(max_dims=2, max_side=2))
    ra, rb = rest, _partner(draw, rest)
    if draw(st.booleans()):
        ra, rb = rb, ra
    xa, xb = draw(st.integers(0, len(ra))), draw(st.integers(0, len(rb)))
    sa, sb = ra[:xa] + (3,) + ra[xa:], rb[:xb] + (3,) + rb[xb:]
    nc = max(len(ra), len(rb)) + 1
    kw = {"axisa": xa - len(sa), "axisb": xb, "axisc": draw(st.integers(-nc, nc - 1))}
    return (draw(arrays(sa)), draw(arrays(sb))), kw


def _draw_einsum(draw):
    spec, shapes_ = draw(st.sampled_from([
        ("ij,jk->ik", ("ij", "jk")), ("ii->", ("ii",)), ("ij->ji", ("ij",)), ("i,i->", ("i", "i")),
        ("bij,bjk->bik", ("bij", "bjk")), ("...ij,jk->...ik", ("bij", "jk")), ("ij,j,k->ik", ("ij", "j", "k")),
        ("ii->i", ("ii",)), ("ijk,ik->j", ("ijk", "ik"))]))
    sizes = {c: draw(st.integers(0, 3)) for c in "ijkb"}
    return (spec,) + tuple(draw(arrays(tuple(sizes[c] for c in s))) for s in shapes_), {}


def _draw_two_axes(draw, min_dims=2):
    s = draw(shapes(min_dims=min_dims, max_dims=3, max_side=3))
    n = len(s)
    a1, a2 = draw(st.permutations(range(n)))[:2]
    return (draw(arrays(s)),), {"offset": draw(st.integers(-2, 2)), "axis1": a1 - n if draw(st.booleans()) else a1,
                                "axis2": a2}


def _draw_diag(draw):
    s = draw(shapes(min_dims=1, max_dims=2, max_side=3))
    return (draw(arrays(s)),), {"k": draw(st.integers(-2, 2))}


def _draw_tri(draw):
    return (draw(arrays(draw(shapes(min_dims=2, max_dims=3)))),), {"k": draw(st.integers(-2, 2))}


PRODUCTS = {  # name: (draw, jax function(jnp, *args, **kwargs))
    "matmul": (_draw_matmul, lambda j, a, b: j.matmul(a, b)),
    "dot": (_draw_dot, lambda j, a, b: j.dot(a, b)),
    "vdot": (_draw_vdot, lambda j, a, b: j.vdot(a, b)),
    "inner": (_draw_inner, lambda j, a, b: j.inner(a, b)),
    "outer": (_draw_outer, lambda j, a, b: j.outer(a, b)),
    "tensordot": (_draw_tensordot, lambda j, a, b, axes: j.tensordot(a, b, axes)),
    "kron": (_draw_kron, lambda j, a, b: j.kron(a, b)),
    "cross": (_draw_cross, lambda j, a, b, **kw: j.cross(a, b, **kw)),
    "einsum": (_draw_einsum, lambda j, spec, *ops: j.einsum(spec, *ops)),
    "trace": (_draw_two_axes, lambda j, a, **kw: j.trace(a, **kw)),
    "diagonal": (_draw_two_axes, lambda j, a, **kw: j.diagonal(a, **kw)),
    "diag": (_draw_diag, lambda j, v, k: j.diag(v, k)),
    "tril": (_draw_tri, lambda j, m, k: j.tril(m, k)),
    "triu": (_draw_tri, lambda j, m, k: j.triu(m, k)),
}


def _split(args):
    """(array positions, constants): strings (einsum's spec) are not differentiated."""
    return [k for k, a in enumerate(args) if isinstance(a, np.ndarray)]


def _closures(name, jax_fn, args, kw, jnp):
    arr = _split(args)

    def place(xs):
        full = list(args)
        for k, x in zip(arr, xs):
            full[k] = x
        return full
    return (lambda *xs: jt.registry[name](*place(xs), **kw),
            lambda *xs: jax_fn(jnp, *place(xs), **kw), [args[k] for k in arr])


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_products_and_structure_match_jax(jx, name):
    draw_case, jax_fn = PRODUCTS[name]

    @JAX_CASES
    @given(data=st.data())
    def run(data):
        args, kw = draw_case(data.draw)
        f_jt, f_jax, xs = _closures(name, jax_fn, args, kw, jx.numpy)
        against_jax(jx, f_jt, f_jax, xs)
    run()


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_products_and_structure_against_finite_differences(name):
    draw_case, _ = PRODUCTS[name]

    @CASES
    @given(data=st.data())
    def run(data):
        args, kw = draw_case(data.draw)
        report = check(jt.registry[name], *args, **kw)
        assert all(r["ok"] for r in report.rows if r["check"] in
                   ("jacobian vs finite diff", "vjp vs jacobian", "batched vjp", "jvp vs jacobian", "batched jvp")), \
            str(report)
    run()


# ---- decompositions ------------------------------------------------------------------------------------------
def _well_conditioned(rng, batch, n, spd=False):
    """Q diag(s) Q^T with s in [1, 3] (sign flips unless spd), plus a small skew part unless spd."""
    out = np.empty(batch + (n, n))
    for idx in np.ndindex(*batch):
        Q = np.linalg.qr(rng.normal(size=(n, n)))[0]
        s = rng.uniform(1.0, 3.0, size=n) * (1.0 if spd else rng.choice([-1.0, 1.0], size=n))
        m = (Q * s) @ Q.T
        out[idx] = m if spd else m + 0.1 * (lambda k: k - k.T)(rng.normal(size=(n, n)))
    return out


def _distinct_spectrum(rng, batch, n):
    """Symmetric, eigenvalues at least 0.5 apart."""
    out = np.empty(batch + (n, n))
    for idx in np.ndindex(*batch):
        Q = np.linalg.qr(rng.normal(size=(n, n)))[0]
        out[idx] = (Q * (np.cumsum(rng.uniform(0.5, 1.5, size=n)) - n * 0.6)) @ Q.T
    return out


def _separated_singular(rng, batch, m, n):
    """Singular values at least 0.5 apart and at least 0.5."""
    k = min(m, n)
    out = np.empty(batch + (m, n))
    for idx in np.ndindex(*batch):
        U = np.linalg.qr(rng.normal(size=(m, m)))[0][:, :k]
        V = np.linalg.qr(rng.normal(size=(n, n)))[0][:, :k]
        out[idx] = (U * np.cumsum(rng.uniform(0.5, 1.5, size=k))[::-1]) @ V.T
    return out


@st.composite
def square(draw, kind="general", min_n=0):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch = draw(shapes(max_dims=2, max_side=2))
    n = draw(st.integers(min_n, 3))
    a = {"general": lambda: _well_conditioned(rng, batch, n), "spd": lambda: _well_conditioned(rng, batch, n, True),
         "sym": lambda: _distinct_spectrum(rng, batch, n)}[kind]()
    return np.asfortranarray(a) if draw(st.booleans()) else a


@st.composite
def rectangular(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch = draw(shapes(max_dims=1, max_side=2))
    return _separated_singular(rng, batch, draw(st.integers(0, 3)), draw(st.integers(0, 3)))


def _gauge(U):
    """Invariant to flipping the sign of any column: the squares of the entries."""
    return U * U


DECOMPS = {  # name: (strategy, jactensor function, jax function(jax, a))
    "inv": (square(), lambda a: jt.linalg.inv(a), lambda jx, a: jx.numpy.linalg.inv(a)),
    "det": (square(min_n=1), lambda a: jt.linalg.det(a), lambda jx, a: jx.numpy.linalg.det(a)),
    "slogdet": (square(min_n=1), lambda a: jt.linalg.slogdet(a)[1], lambda jx, a: jx.numpy.linalg.slogdet(a)[1]),
    "cholesky": (square("spd"), lambda a: jt.linalg.cholesky(a), lambda jx, a: jx.numpy.linalg.cholesky(a)),
    "cholesky_upper": (square("spd"), lambda a: jt.linalg.cholesky(a, upper=True),
                       lambda jx, a: jx.numpy.linalg.cholesky(a, upper=True)),
    "eigvalsh": (square("sym"), lambda a: jt.linalg.eigvalsh(a), lambda jx, a: jx.numpy.linalg.eigvalsh(a)),
    "eigh_vectors": (square("sym"), lambda a: _gauge(jt.linalg.eigh(a)[1]),
                     lambda jx, a: _gauge(jx.numpy.linalg.eigh(a)[1])),
    "svdvals": (rectangular(), lambda a: jt.linalg.svd(a, compute_uv=False),
                lambda jx, a: jx.numpy.linalg.svd(a, compute_uv=False)),
    "svd_u": (rectangular(), lambda a: _gauge(jt.linalg.svd(a, full_matrices=False)[0]),
              lambda jx, a: _gauge(jx.numpy.linalg.svd(a, full_matrices=False)[0])),
    "svd_vh": (rectangular(), lambda a: _gauge(jt.linalg.svd(a, full_matrices=False)[2]),
               lambda jx, a: _gauge(jx.numpy.linalg.svd(a, full_matrices=False)[2])),
    "svd_reconstruction": (rectangular(), lambda a: _weighted_svd(jt.linalg.svd(a, full_matrices=False), np),
                           lambda jx, a: _weighted_svd(jx.numpy.linalg.svd(a, full_matrices=False), jx.numpy)),
    "pinv": (rectangular(), lambda a: jt.linalg.pinv(a), lambda jx, a: jx.numpy.linalg.pinv(a)),
}


def _weighted_svd(usv, xp):
    """U diag(w) Vh with fixed weights w (not s): depends on the singular vectors, invariant to their signs."""
    U, s, Vh = usv
    w = np.arange(1.0, U.shape[-1] + 1.0)
    return (U * w) @ Vh + xp.sum(s, axis=-1)[..., None, None]


# The Hessians of eigenvectors and singular vectors carry 1/gap^2 factors (gaps >= 0.5 here), so LAPACK's and
# XLA's rounding in the decompositions shows at ~1e-10 relative: 1e-9 is the honest bound for those.
DECOMP_TOL = {"eigh_vectors": 1e-9, "svd_u": 1e-9, "svd_vh": 1e-9, "svd_reconstruction": 1e-9, "pinv": 1e-9}


@pytest.mark.parametrize("name", sorted(DECOMPS))
def test_decompositions_match_jax(jx, name):
    strategy, f_jt, f_jax = DECOMPS[name]

    @JAX_CASES
    @given(a=strategy)
    def run(a):
        against_jax(jx, f_jt, lambda a: f_jax(jx, a), [a], tol=DECOMP_TOL.get(name, TOL))
    run()


@JAX_CASES
@given(data=st.data(), vec=st.booleans())
def test_solve_matches_jax_with_numpy2_semantics(jx, data, vec):
    a = data.draw(square(min_n=1))
    M = a.shape[-1]
    if vec:
        b = data.draw(arrays((M,)))
    else:
        bb = a.shape[:-2][data.draw(st.integers(0, a.ndim - 2)):]
        b = data.draw(arrays(data.draw(st.sampled_from([bb, (2,) + a.shape[:-2]])) + (M, data.draw(st.integers(0, 2)))))
    against_jax(jx, lambda a, b: jt.linalg.solve(a, b), lambda a, b: jx.numpy.linalg.solve(a, b), [a, b])


def test_slogdet_sign_is_a_constant_and_det_matches(rng):
    a = _well_conditioned(rng, (3,), 3)
    sign, logabs = jt.linalg.slogdet(a)
    ws, wl = np.linalg.slogdet(a)
    np.testing.assert_array_equal(sign, ws)
    assert_close(logabs, wl)
    assert_close(sign * np.exp(logabs), np.linalg.det(a))
    assert type(jt.linalg.slogdet(a)).__name__ == "SlogdetResult" and jt.linalg.slogdet(a).logabsdet.shape == (3,)
    g = jt.grad(lambda a: jt.sum(jt.linalg.slogdet(a)[0] * 2.0 + jt.linalg.slogdet(a).logabsdet))(a)
    assert_close(g, np.swapaxes(np.linalg.inv(a), -1, -2))


# ---- numpy code that never heard of jactensor ----------------------------------------------------------------
def gaussian_loglik(S, d):
    """-0.5 (d^T S^-1 d + log|S|), written for numpy."""
    return -0.5 * (d @ np.linalg.solve(S, d) + np.linalg.slogdet(S)[1])


def logistic_loss(W, x, y):
    """Mean logistic loss of labels y in {-1, 1}, written for numpy."""
    z = x.dot(W)
    return np.mean(np.log(1.0 + np.exp(-y * z)))


def test_numpy_gaussian_loglik_differentiates(rng):
    S = _well_conditioned(rng, (), 4, spd=True)
    d = rng.normal(size=4)
    Si = np.linalg.inv(S)
    gS, gd = jt.grad(gaussian_loglik, argnums=(0, 1))(S, d)
    assert_close(gd, -Si @ d)                                         # closed forms (S symmetric)
    assert_close(gS, 0.5 * Si @ np.outer(d, d) @ Si - 0.5 * Si)
    for m in ("chain", "rev", "fwd"):
        J = jt.jacobian(gaussian_loglik, argnums=1, method=m)(S, d)
        assert_close(J, -Si @ d, what=m)
    H = jt.hessian(gaussian_loglik, argnums=1)(S, d)
    assert_close(H, -Si)
    HS = jt.hessian(gaussian_loglik)(S, d)
    assert_close(HS, finite_difference_jacobian(lambda S: jt.grad(gaussian_loglik)(S, d), S), 1e-6)


def test_numpy_logistic_regression_differentiates(rng, jx):
    jnp = jx.numpy
    x, W = rng.normal(size=(6, 3)), rng.normal(size=3)
    y = rng.choice([-1.0, 1.0], size=6)

    def ref(W, x):
        return jnp.mean(jnp.log(1.0 + jnp.exp(-y * x.dot(W))))
    want = jx.jit(lambda W, x: (jx.grad(ref, argnums=(0, 1))(W, x), jx.hessian(ref, argnums=(0, 1))(W, x)))(W, x)
    g = jt.grad(logistic_loss, argnums=(0, 1))(W, x, y)
    _tree_close(g, want[0], "grad")
    for m in ("chain", "rev", "fwd"):
        _tree_close(jt.jacobian(logistic_loss, argnums=(0, 1), method=m)(W, x, y), want[0], m)
    _tree_close(jt.hessian(logistic_loss, argnums=(0, 1))(W, x, y), want[1], "hessian")
    # differentiating W alone with x a plain array: numpy's ndarray.dot cannot hand a traced W to jactensor;
    # np.dot(x, W) and x @ W can
    gW = jt.grad(lambda W: np.mean(np.log(1.0 + np.exp(-y * np.dot(x, W)))))(W)
    assert_close(gW, g[0])


# ---- structure, shapes, edge cases ------------------------------------------------------------------------------
def test_jacobians_stay_structured(rng):
    a, b = rng.normal(size=(20, 30)), rng.normal(size=(30, 10))
    for J in jt.dot.jacobian(a, b) + jt.tensordot.jacobian(a, b, axes=1):
        assert J.stored_bytes <= 8 * 30 * 20 < J.nbytes
    v, w = rng.normal(size=50), rng.normal(size=40)
    (Jv, Jw) = jt.outer.jacobian(v, w)
    assert Jv.stored_bytes == 8 * 40 and Jw.stored_bytes == 8 * 50
    m = rng.normal(size=(30, 30))
    assert jt.trace.jacobian(m)[0].stored_bytes == 8 * 30 * 30     # the 0/1 diagonal selection
    for J in (jt.diagonal.jacobian(m)[0], jt.diag.jacobian(m)[0], jt.tril.jacobian(m)[0], jt.triu.jacobian(m)[0],
              jt.diag.jacobian(v)[0]):
        assert J.stored_bytes <= 2 * 8 * 50 * 50 < J.nbytes
    for Jk in jt.kron.jacobian(rng.normal(size=(6, 5)), rng.normal(size=(4, 3))):
        assert Jk.stored_bytes < Jk.nbytes / 5
    A = _well_conditioned(rng, (), 30)
    (Ji,) = jt.linalg.inv.jacobian(A)
    assert Ji.stored_bytes == 2 * 8 * 30 * 30 and Ji.nbytes == 8 * 30 ** 4
    (Jy,) = jt.linalg.inv.jacobian(np.linalg.inv(A))     # inv(inv(A)) = A: the chain is the identity
    np.testing.assert_allclose(np.asarray(jt.chain(Jy, Ji)).reshape(900, 900), np.eye(900), atol=1e-9)


def test_einsum_zero_length_contraction_gives_zero_size_gradients():
    a, b = np.ones((3, 4, 0)), np.ones((0, 2))
    ga, gb = jt.einsum.vjp(np.ones((3, 4, 2)), "...ij,...jk->...ik", a, b)
    assert ga.shape == (3, 4, 0) and gb.shape == (0, 2)
    y = jt.einsum("...ij,...jk->...ik", a, b)
    np.testing.assert_array_equal(y, np.zeros((3, 4, 2)))
    ga, gb = jt.grad(lambda a, b: jt.sum(jt.einsum("...ij,...jk->...ik", a, b)), argnums=(0, 1))(a, b)
    assert ga.shape == (3, 4, 0) and gb.shape == (0, 2)


ZERO_SIZE = [  # (primitive, numpy's function, args, kwargs)
    ("matmul", np.matmul, (np.ones((3, 0)), np.ones((0, 2))), {}), ("dot", np.dot, (np.ones((0, 3)), np.ones(3)), {}),
    ("tensordot", np.tensordot, (np.ones((2, 0)), np.ones((0, 3))), {"axes": 1}),
    ("kron", np.kron, (np.ones((2, 0)), np.ones((1, 3))), {}), ("outer", np.outer, (np.ones(0), np.ones(3)), {}),
    ("trace", np.trace, (np.ones((0, 3)),), {}), ("diagonal", np.diagonal, (np.ones((2, 0)),), {}),
    ("diag", np.diag, (np.ones(0),), {}), ("tril", np.tril, (np.ones((0, 3)),), {}),
    ("cross", np.cross, (np.ones((0, 3)), np.ones(3)), {}),
    ("inv", np.linalg.inv, (np.ones((0, 2, 2)),), {}), ("det", np.linalg.det, (np.ones((2, 0, 0)),), {}),
    ("solve", np.linalg.solve, (np.eye(3), np.ones((3, 0))), {}),
    ("cholesky", np.linalg.cholesky, (np.ones((0, 0)),), {}),
    ("eigvalsh", np.linalg.eigvalsh, (np.ones((0, 2, 2)),), {}),
    ("svdvals", np.linalg.svdvals, (np.ones((0, 3)),), {}), ("pinv", np.linalg.pinv, (np.ones((3, 0)),), {}),
]


@pytest.mark.parametrize("name,ref,args,kw", ZERO_SIZE, ids=[c[0] for c in ZERO_SIZE])
def test_zero_size_inputs_through_every_method(name, ref, args, kw):
    prim = jt.registry[name]
    nums = tuple(range(len(args)))

    def f(*xs):
        return prim(*xs, **kw)
    y = f(*args)
    np.testing.assert_array_equal(y, ref(*args, **kw))     # numpy's shape and values (matmul's zeros, det's 1s)
    for m in ("chain", "rev", "fwd"):
        for J, x in zip(jt.jacobian(f, argnums=nums, method=m)(*args), args):
            assert J.shape == np.shape(y) + x.shape, m

    def loss(*xs):
        return jt.sum(f(*xs) * 2.0)
    for g, x in zip(jt.grad(loss, argnums=nums)(*args), args):
        assert g.shape == x.shape
        np.testing.assert_array_equal(g, np.zeros(x.shape))
    for m in ("fwdrev", "chain"):
        H = jt.hessian(loss, argnums=nums, method=m)(*args)
        assert H[0][0].shape == args[0].shape * 2, m


def test_numpy_functions_and_methods_on_traced_values(rng):
    x, w = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    a = _well_conditioned(rng, (), 3)
    cases = [  # (numpy spelling, jactensor spelling), both applied to a traced value
        (lambda x: x.dot(w), lambda x: jt.dot(x, w)), (lambda x: np.dot(x, w), lambda x: jt.dot(x, w)),
        (lambda x: np.vdot(x, x), lambda x: jt.vdot(x, x)), (lambda x: np.inner(x, x), lambda x: jt.inner(x, x)),
        (lambda x: np.outer(x, w), lambda x: jt.outer(x, w)),
        (lambda x: np.tensordot(x, w, axes=1), lambda x: jt.tensordot(x, w, axes=1)),
        (lambda x: np.kron(x, w), lambda x: jt.kron(x, w)),
        (lambda x: np.cross(x[:, :3], w[:3, 0]), lambda x: jt.cross(x[:, :3], w[:3, 0])),
        (lambda x: np.trace(x, 1), lambda x: jt.trace(x, 1)), (lambda x: x.trace(), lambda x: jt.trace(x)),
        (lambda x: np.diagonal(x), lambda x: jt.diagonal(x)), (lambda x: x.diagonal(1), lambda x: jt.diagonal(x, 1)),
        (lambda x: np.diag(x), lambda x: jt.diag(x)), (lambda x: np.tril(x, -1), lambda x: jt.tril(x, -1)),
        (lambda x: np.triu(x), lambda x: jt.triu(x)), (lambda x: np.einsum("ij,jk", x, w), lambda x: x @ w),
        (lambda x: np.linalg.inv(a + x[:, :3] * 0.1), lambda x: jt.linalg.inv(a + x[:, :3] * 0.1)),
        (lambda x: np.linalg.det(a + x[:, :3] * 0.1), lambda x: jt.linalg.det(a + x[:, :3] * 0.1)),
        (lambda x: np.linalg.solve(a, x[:, :2]), lambda x: jt.linalg.solve(a, x[:, :2])),
        (lambda x: np.linalg.pinv(x), lambda x: jt.linalg.pinv(x)),
        (lambda x: np.linalg.svd(x, full_matrices=False)[1], lambda x: jt.linalg.svdvals(x)),
        (lambda x: np.linalg.svdvals(x), lambda x: jt.linalg.svd(x, compute_uv=False)),
        (lambda x: np.linalg.eigvalsh(x @ x.T), lambda x: jt.linalg.eigh(x @ x.T)[0]),
        (lambda x: np.linalg.cholesky(x @ x.T + np.eye(3)), lambda x: jt.linalg.cholesky(x @ x.T + np.eye(3))),
    ]
    for fn_np, fn_jt in cases:
        def loss(f):
            return lambda x: jt.sum(f(x) ** 2)
        assert_close(jt.grad(loss(fn_np))(x), jt.grad(loss(fn_jt))(x), what="np spelling under grad")
        assert_close(jt.grad(loss(fn_np))(x), finite_difference_jacobian(loss(fn_jt), x), 1e-6, "against FD")


def test_clear_errors(rng):
    a = np.array([[1.0, 2.0], [2.0, 4.0]])
    with pytest.raises(ValueError, match="singular"):      # jt.linalg.LinAlgError (a numpy LinAlgError too)
        jt.linalg.inv(a)
    with pytest.raises(ValueError, match=r"batch index \(1,\)"):
        jt.linalg.solve(np.stack([np.eye(2), a]), np.ones(2))
    with pytest.raises(ValueError, match="positive definite"):
        jt.linalg.cholesky(-np.eye(2))
    with pytest.raises(jt.NotDifferentiableError, match="singular"):
        jt.grad(lambda a: jt.linalg.det(a))(a)
    with pytest.raises(jt.NotDifferentiableError, match="repeated eigenvalues"):
        jt.grad(lambda a: jt.sum(jt.linalg.eigh(a)[1] ** 3))(np.eye(3))
    with pytest.raises(jt.NotDifferentiableError, match="full_matrices=False"):
        jt.linalg.svd(np.ones((3, 2)))
    with pytest.raises(jt.NotDifferentiableError, match="rank deficient"):
        jt.grad(lambda a: jt.sum(jt.linalg.pinv(a)))(np.ones((3, 2)))
    with pytest.raises(jt.ShapeError, match="square"):
        jt.linalg.inv(np.ones((2, 3)))
    with pytest.raises(jt.ShapeError, match=r"b\[\.\.\., None\]"):
        jt.linalg.solve(np.eye(3), np.ones((2, 3)))
    with pytest.raises(jt.ShapeError, match="not aligned"):
        jt.dot(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(jt.ShapeError, match="same number of elements|equally many"):
        jt.vdot(np.ones(3), np.ones(4))
    with pytest.raises(jt.AxisError, match="pair"):
        jt.tensordot(np.ones(3), np.ones(3), axes="x")
    with pytest.raises(jt.ShapeError, match="3-vectors"):
        jt.cross(np.ones(2), np.ones(2))
    with pytest.raises(jt.AxisError, match="same axis"):
        jt.trace(np.ones((2, 2)), axis1=0, axis2=-2)
    with pytest.raises(jt.ShapeError, match="1-d array .* or a 2-d"):
        jt.diag(np.ones((2, 2, 2)))
    with pytest.raises(jt.ShapeError, match="diag"):
        jt.diagonal(np.ones(3))
    assert issubclass(jt.linalg.LinAlgError, np.linalg.LinAlgError)


def test_eigh_and_svd_signs_and_reconstruction(rng):
    a = _distinct_spectrum(rng, (2,), 4)
    w, V = jt.linalg.eigh(a)
    assert_close((V * w[..., None, :]) @ np.swapaxes(V, -1, -2), a)
    top = np.take_along_axis(V, np.argmax(np.abs(V), axis=-2)[..., None, :], axis=-2)
    assert np.all(top > 0)
    x = _separated_singular(rng, (), 3, 5)
    U, s, Vh = jt.linalg.svd(x, full_matrices=False)
    assert_close((U * s) @ Vh, x)
    assert np.all(np.take_along_axis(U, np.argmax(np.abs(U), axis=0)[None], axis=0) > 0)
    assert_close(s, np.linalg.svd(x, compute_uv=False))


def test_array_api_names_in_numpy_linalg(rng):
    x = rng.normal(size=(2, 3, 3))
    v = rng.normal(size=3)
    cases = [
        lambda x: np.linalg.matrix_norm(x), lambda x: np.linalg.matrix_norm(x, ord=1, keepdims=True),
        lambda x: np.linalg.vector_norm(x), lambda x: np.linalg.vector_norm(x, axis=(0, 2), keepdims=True),
        lambda x: np.linalg.vector_norm(x, axis=1, ord=3), lambda x: np.linalg.trace(x, offset=1),
        lambda x: np.linalg.diagonal(x), lambda x: np.linalg.matmul(x, x), lambda x: np.linalg.outer(x[0, 0], v),
        lambda x: np.linalg.tensordot(x, x[0], axes=2), lambda x: np.linalg.cross(x, x[::-1]),
        lambda x: np.linalg.vecdot(x, x[::-1]), lambda x: np.linalg.matrix_transpose(x),
        lambda x: np.linalg.multi_dot([x[0, 0], x[0], x[1], v]), lambda x: np.linalg.multi_dot([x[0], x[1]]),
        lambda x: np.linalg.matrix_power(x + 3 * np.eye(3), 3), lambda x: np.linalg.matrix_power(x + 3 * np.eye(3), -2),
    ]
    for f in cases:
        def loss(x):
            return jt.sum(f(x) ** 2)
        assert_close(jt.grad(loss)(x), finite_difference_jacobian(lambda x: np.sum(f(x) ** 2), x), 1e-7)
    np.testing.assert_array_equal(jt.linalg.matrix_power(x, 0), np.broadcast_to(np.eye(3), x.shape))
    assert_close(jt.linalg.multi_dot([x[0], x[1], v]), np.linalg.multi_dot([x[0], x[1], v]))
    with pytest.raises(jt.ShapeError, match="1-d"):
        jt.linalg.outer(x, v)
