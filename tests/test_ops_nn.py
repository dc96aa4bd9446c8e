"""softmax, log_softmax, layer_norm, cross_entropy, mse: closed forms, JAX, the memory guard, empty inputs."""
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jactensor as jt
import jactensor.special as jsp
from jactensor.ops import nn
from jactensor.testing import check

METHODS = ("chain", "rev", "fwd")
BUDGET = 64 * 2**20


from .support import assert_close  # noqa: E402


def peak_bytes(fn):
    """(result, peak bytes numpy and Python allocated while ``fn`` ran) under tracemalloc."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---- closed forms (numpy, written out here) -------------------------------------------------------
def softmax_rows(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_jacobian_closed(x):
    """Whole-array softmax of a vector: diag(s) - s s^T."""
    s = softmax_rows(x.reshape(-1))
    return np.diag(s) - np.outer(s, s)


def layer_norm_jacobian_closed(x, g):
    """Per row: g_j / sigma (delta(j,s) - 1/d - xhat_j xhat_s / d), eps = 1e-5."""
    d = x.shape[-1]
    mu = x.mean(-1, keepdims=True)
    sig = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    xh = (x - mu) / sig
    blocks = g[None, :, None] / sig[:, :, None] * (np.eye(d) - 1.0 / d - xh[:, :, None] * xh[:, None, :] / d)
    J = np.zeros(x.shape + x.shape)
    for k in range(x.shape[0]):
        J[k, :, k, :] = blocks[k]
    return J


# ---- the memory guard: structured Jacobians stay small ----------------------------------------------
def test_softmax_program_through_chain_stays_within_the_budget():
    """jacobian(sum(softmax(x, -1) * w)) at 600 x 600 by chain: the old rule built one 600 x 600 x 600 block
    factor (600**3 * 8 B = 1.6 GiB; 3.3 GiB peak with the contraction) for a 2.7 MiB result; the two terms
    S delta and -S S hold two 2.7 MiB factors."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(600, 600)), rng.normal(size=(600, 600))
    f = lambda x: jt.sum(jt.softmax(x, axis=-1) * w)  # noqa: E731
    with jt.config.override(max_jacobian_bytes=BUDGET):
        J, peak = peak_bytes(lambda: jt.jacobian(f, method="chain")(x))
    assert peak < BUDGET / 2, f"peak {peak / 2**20:.1f} MiB"
    s = softmax_rows(x)
    assert_close(J, s * (w - (s * w).sum(-1, keepdims=True)))  # d/dx of sum(S w): S (w - <S, w>) per row
    assert_close(J, jt.grad(f)(x))


def test_whole_array_softmax_jacobian_is_two_small_terms():
    """softmax.jacobian(80 x 80, axis=None): the old rule built the 6400 x 6400 block (312 MiB)."""
    rng = np.random.default_rng(1)
    x, g = rng.normal(size=(80, 80)), rng.normal(size=(80, 80))
    with jt.config.override(max_jacobian_bytes=BUDGET):
        (J,), peak = peak_bytes(lambda: jt.softmax.jacobian(x, axis=None))
        assert J.nbytes == 6400**2 * 8 and J.stored_bytes <= 3 * x.nbytes  # S, and S twice in S S^T (one array)
        with pytest.raises(jt.JacobianTooLargeError):
            J.dense()  # 312 MiB dense: refused before allocating
        (gx,) = jt.softmax.vjp(g, x, axis=None)
        assert_close(J.vjp(g), gx)
        assert_close(J.jvp(g), jt.softmax.jvp(g, x, axis=None))
    assert peak < 2**20, f"peak {peak / 2**20:.2f} MiB"
    s = softmax_rows(x.reshape(-1)).reshape(x.shape)
    assert_close(gx, s * (g - (s * g).sum()))  # closed form of the VJP
    # small enough to compare with the dense closed form
    y = rng.normal(size=(6, 7))
    (J,) = jt.softmax.jacobian(y, axis=None)
    assert len(J.terms) == 2
    assert_close(np.asarray(J).reshape(42, 42), softmax_jacobian_closed(y))


def test_layer_norm_jacobian_is_three_small_terms():
    """layer_norm.jacobian on (2, 5000): the old rule built a (2, 5000, 5000) block (381 MiB, ~1 GiB peak)."""
    rng = np.random.default_rng(2)
    x, g = rng.normal(size=(2, 5000)), rng.normal(size=(2, 5000))
    gam, beta = rng.normal(size=5000), rng.normal(size=5000)
    with jt.config.override(max_jacobian_bytes=BUDGET):
        (Jx, Jg, Jb), peak = peak_bytes(lambda: jt.layer_norm.jacobian(x, gam, beta))
        assert Jx.stored_bytes <= 4 * x.nbytes
        vx = jt.layer_norm.vjp(g, x, gam, beta)[0]
        assert_close(Jx.vjp(g), vx)
        assert_close(Jx.jvp(g), jt.layer_norm.jvp((g, None, None), x, gam, beta))
        loss = lambda x: jt.sum(jt.layer_norm(x, gam, beta) * g)  # noqa: E731
        Jc, peak_chain = peak_bytes(lambda: jt.jacobian(loss, method="chain")(x))
    assert peak < 2**20 and peak_chain < 8 * 2**20, (peak, peak_chain)
    assert_close(Jc, vx)
    # the VJP against the closed form, and the terms against the dense closed form at a small size
    mu, sig = x.mean(-1, keepdims=True), np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    xh, gg = (x - mu) / sig, g * gam
    assert_close(vx, (gg - gg.mean(-1, keepdims=True) - xh * (gg * xh).mean(-1, keepdims=True)) / sig)
    y, gy = rng.normal(size=(3, 40)), rng.normal(size=40)
    (J, _, _) = jt.layer_norm.jacobian(y, gy, 0.0 * gy)
    assert len(J.terms) == 3
    assert_close(np.asarray(J), layer_norm_jacobian_closed(y, gy))


@pytest.mark.parametrize("m", [4, nn.BLOCK_MAX, nn.BLOCK_MAX + 1, 50])
def test_short_rows_one_block_long_rows_factored_terms(m):
    """Rows of at most BLOCK_MAX entries: one (rows, m, m) block factor; longer rows: factors of the input's
    size. Both equal the closed form."""
    rng = np.random.default_rng(m)
    x, gam = rng.normal(size=(3, m)), rng.normal(size=m)
    (J,) = jt.softmax.jacobian(x, axis=-1)
    (L, _) = jt.layer_norm.jacobian(x, gam, 0.0)
    if m <= nn.BLOCK_MAX:
        assert len(J.terms) == 1 and J.stored_bytes == 3 * m * m * 8
        assert len(L.terms) == 1 and L.stored_bytes == 3 * m * m * 8
    else:
        assert J.stored_bytes <= 3 * x.nbytes and L.stored_bytes <= 4 * x.nbytes
    want = np.zeros((3, m, 3, m))
    for k in range(3):
        want[k, :, k, :] = softmax_jacobian_closed(x[k])
    assert_close(np.asarray(J), want)
    assert_close(np.asarray(L), layer_norm_jacobian_closed(x, gam))


def test_blocks_that_do_not_fit_the_budget_become_terms():
    """Short rows but many of them: when the blocks would exceed the limit, the factored terms are used
    (no JacobianTooLargeError for a Jacobian whose factors fit)."""
    rng = np.random.default_rng(5)
    x, g = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8))  # blocks: 4000 * 8 * 8 * 8 B = 2 MiB
    with jt.config.override(max_jacobian_bytes=2**20):
        (J,) = jt.softmax.jacobian(x, axis=-1)
        (L, _) = jt.layer_norm.jacobian(x, np.ones(8), 0.0)
        assert len(J.terms) == 2 and len(L.terms) == 3
        assert_close(J.vjp(g), jt.softmax.vjp(g, x)[0])
        assert_close(L.vjp(g), jt.layer_norm.vjp(g, x, np.ones(8), 0.0)[0])


# ---- empty inputs (numpy semantics, every method) -----------------------------------------------
@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("shape, axis", [((3, 0), -1), ((0, 4), -1), ((0, 4), 0), ((2, 0, 3), (1, 2)), ((0,), None)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_over_empty_axes(no_warnings, name, shape, axis):
    f = lambda x: getattr(jt, name)(x, axis=axis)  # noqa: E731
    x = np.zeros(shape)
    assert f(x).shape == shape
    for m in METHODS:
        assert np.asarray(jt.jacobian(f, method=m)(x)).shape == shape + shape
    assert jt.grad(lambda x: jt.sum(f(x)))(x).shape == shape
    assert jt.hessian(lambda x: jt.sum(f(x) * x))(x).shape == shape + shape
    assert check(getattr(jt, name), x, axis=axis).ok


def test_layer_norm_without_features_or_rows(no_warnings):
    for shape, g in (((3, 0), np.zeros(0)), ((3, 0), 2.0), ((0, 5), np.ones(5))):
        x = np.zeros(shape)
        assert jt.layer_norm(x, g, 0.0).shape == shape
        for m in METHODS:
            J = jt.jacobian(lambda x, g: jt.layer_norm(x, g, 0.0), argnums=(0, 1), method=m)(x, g)
            assert np.shape(J[0]) == shape + shape and np.shape(J[1]) == shape + np.shape(g)
        assert jt.grad(lambda x: jt.sum(jt.layer_norm(x, g, 0.0)))(x).shape == shape
        assert jt.hessian(lambda x: jt.sum(jt.layer_norm(x, g, 0.0) * x))(x).shape == shape + shape


def test_mse_and_cross_entropy_of_nothing_are_nan(no_warnings):
    p, t = np.zeros((0, 3)), np.zeros((0, 3))
    assert np.isnan(jt.mse(p, t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(np.mean((p - t) ** 2))  # numpy's value, which jactensor gives without the warning
    for m in METHODS:
        assert np.shape(jt.jacobian(jt.mse, method=m)(p, t)) == (0, 3)
    assert jt.grad(jt.mse, argnums=(0, 1))(p, t)[1].shape == (0, 3)
    z, y = np.zeros((0, 4)), np.zeros(0, dtype=int)
    assert np.isnan(jt.cross_entropy(z, y))
    assert jt.grad(lambda z: jt.cross_entropy(z, y))(z).shape == (0, 4)
    assert jt.hessian(lambda z: jt.cross_entropy(z, y))(z).shape == (0, 4, 0, 4)
    with pytest.raises(jt.ShapeError, match="0 classes"):
        jt.cross_entropy(np.zeros((2, 0)), np.zeros(2, dtype=int))


# ---- documentation of the default axis --------------------------------------------------------------
def test_softmax_default_axis_is_documented_and_scipy_namespace_follows_scipy():
    import inspect
    assert inspect.signature(jt.softmax).parameters["axis"].default == -1
    assert "default axis is -1" in jt.softmax.__doc__ and "axis=None" in jt.softmax.__doc__
    assert inspect.signature(jsp.softmax).parameters["axis"].default is None
    x = np.random.default_rng(0).normal(size=(3, 4))
    e = np.exp(x - x.max())
    assert_close(jsp.softmax(x), e / e.sum())  # scipy's default: the whole array
    assert_close(jt.softmax(x), softmax_rows(x))
    assert_close(jsp.log_softmax(x), np.log(e / e.sum()))
    sp = pytest.importorskip("scipy.special")
    assert_close(jsp.softmax(x), sp.softmax(x))
    assert_close(jsp.log_softmax(x, axis=0), sp.log_softmax(x, axis=0))


# ---- against PyTorch (torch.func, float64) ------------------------------------------------------------
@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch.func")
    return torch


def _tree_close(got, want, what):
    if isinstance(want, (tuple, list)):
        assert len(got) == len(want), what
        for k, (g, w) in enumerate(zip(got, want)):
            _tree_close(g, w, f"{what}[{k}]")
    else:
        assert_close(got, want.detach().numpy() if hasattr(want, "detach") else want, what=what)


def _compare(torch, f_jt, f_t, args, argnums, what):
    """Value, jacobian (chain, rev, fwd), grad of sum(w * f) and its hessian against torch.func."""
    from torch.func import hessian, jacrev
    targs = [torch.tensor(np.asarray(a), dtype=torch.float64) for a in args]
    want = f_t(*targs)
    assert_close(f_jt(*args), want.detach().numpy(), what=f"{what} value")
    for m in METHODS:
        _tree_close(jt.jacobian(f_jt, argnums=argnums, method=m)(*args), jacrev(f_t, argnums=argnums)(*targs),
                    f"{what} jacobian {m}")
    w = np.cos(np.arange(want.numel(), dtype=np.float64)).reshape(tuple(want.shape)) + 0.5
    wt = torch.tensor(w)
    loss_jt = lambda *a: jt.sum(f_jt(*a) * w)  # noqa: E731
    loss_t = lambda *a: (f_t(*a) * wt).sum()  # noqa: E731
    _tree_close(jt.grad(loss_jt, argnums=argnums)(*args), jacrev(loss_t, argnums=argnums)(*targs), f"{what} grad")
    _tree_close(jt.hessian(loss_jt, argnums=argnums)(*args), hessian(loss_t, argnums=argnums)(*targs),
                f"{what} hessian")


def _torch_softmax(torch, v, axis, log):
    """softmax over ``axis`` (None, an int or a tuple) with torch's one-dimension softmax: the axes moved last
    and flattened."""
    n = v.dim()
    if n == 0:
        return (torch.log_softmax if log else torch.softmax)(v.reshape(1), dim=-1).reshape(())
    axes = list(range(n)) if axis is None else sorted(a % n for a in ((axis,) if np.ndim(axis) == 0 else axis))
    keep = [k for k in range(n) if k not in axes]
    p = v.permute(*(keep + axes))
    m = int(np.prod([v.shape[a] for a in axes], dtype=np.int64))
    flat = p.reshape(tuple(p.shape[:len(keep)]) + (m,))
    out = (torch.log_softmax if log else torch.softmax)(flat, dim=-1).reshape(p.shape)
    return out.permute(*np.argsort(keep + axes).tolist())


SETTINGS = settings(max_examples=8, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def array_and_axis(draw, min_dims=0):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=0, max_side=4))
    n = len(shape)
    axes = st.none() if n == 0 else st.one_of(
        st.none(), st.integers(-n, n - 1),
        st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True).map(
            lambda a: tuple(k - n if k % 2 else k for k in a)))
    x = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=shape) * 2.0
    if draw(st.booleans()) and x.ndim:  # a non-contiguous view of the same values
        big = np.zeros(shape[:-1] + (2 * shape[-1],))
        big[..., ::2] = x
        x = big[..., ::2]
    return x, draw(axes)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@SETTINGS
@given(case=array_and_axis())
def test_softmax_family_against_torch(torch, name, case):
    x, axis = case
    _compare(torch, lambda x: getattr(jt, name)(x, axis=axis),
             lambda v: _torch_softmax(torch, v, axis, name == "log_softmax"), (x,), 0, f"{name} axis={axis}")


@SETTINGS
@given(case=array_and_axis(min_dims=1), params=st.sampled_from(["vectors", "scalars", "ones"]),
       eps=st.sampled_from([1e-5, 0.1]))
def test_layer_norm_against_torch(torch, case, params, eps):
    x, _ = case
    d = x.shape[-1]
    rng = np.random.default_rng(d)
    g, b = {"vectors": (rng.normal(size=d), rng.normal(size=d)), "scalars": (np.array(1.5), np.array(-0.5)),
            "ones": (rng.normal(size=1), rng.normal(size=1))}[params]

    def ln_torch(x, g, b):
        mu = x.mean(-1, keepdim=True)
        return g * (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps) + b

    if d == 0:  # a mean over the empty axis is NaN (with a warning) in torch: compare shapes only
        assert jt.layer_norm(x, g, b, eps=eps).shape == x.shape
        return
    _compare(torch, lambda x, g, b: jt.layer_norm(x, g, b, eps=eps), ln_torch, (x, g, b), (0, 1, 2), "layer_norm")


@SETTINGS
@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3), c=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_cross_entropy_against_torch(torch, batch, c, seed):
    rng = np.random.default_rng(seed)
    z, y = rng.normal(size=batch + (c,)) * 2.0, rng.integers(0, c, size=batch)
    yt = torch.tensor(y)[..., None]

    def ce_torch(z):
        return -torch.take_along_dim(torch.log_softmax(z, dim=-1), yt, dim=-1).mean()

    _compare(torch, lambda z: jt.cross_entropy(z, y), ce_torch, (z,), 0, "cross_entropy")


@SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=3),
       seed=st.integers(0, 2**16))
def test_mse_against_torch(torch, shapes, seed):
    rng = np.random.default_rng(seed)
    p, t = (rng.normal(size=s) for s in shapes.input_shapes)
    _compare(torch, jt.mse, lambda p, t: ((p - t) ** 2).mean(), (p, t), (0, 1), "mse")


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "layer_norm", "cross_entropy", "mse"])
def test_generated_cases_pass_the_three_way_check(name):
    prim, rng = jt.registry[name], np.random.default_rng(11)
    for _ in range(40):
        args, kwargs = prim.generate(rng)
        report = check(prim, *args, **kwargs)
        assert report.ok, str(report)
