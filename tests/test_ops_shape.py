"""Shape functions against numpy and jax.numpy: values, Jacobians by all three methods, grad, hessian.

Each case is ``f(lib, *xs)`` with lib one of jactensor, numpy (also on traced values, through numpy's
dispatch) and jax.numpy, so the same expression is evaluated by all three. References are independent
of jactensor's rules: numpy's value and central differences of numpy's function (these maps are linear,
or locally linear, so differences are exact to rounding), and JAX at float64.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jactensor as jt
from jactensor import numpy_api
from jactensor.testing import finite_difference_jacobian

METHODS = ("chain", "rev", "fwd")
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


# ---- inputs -----------------------------------------------------------------------------------------
def make_array(seed, shape, layout="c"):
    """Distinct random values; 'strided', 'f' and 'reversed' give non-contiguous or Fortran-ordered inputs."""
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    if layout == "strided" and shape:
        return rng.normal(size=shape[:-1] + (2 * shape[-1],))[..., ::2]
    x = np.asarray(rng.normal(size=shape))
    if layout == "f" and shape:
        return np.asfortranarray(x)
    if layout == "reversed" and shape:
        return np.ascontiguousarray(x[::-1])[::-1]
    return x


@st.composite
def arrays(draw, min_dims=0, max_dims=3, max_side=4, shape=None, min_side=0):
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side))
    layout = draw(st.sampled_from(["c", "c", "strided", "f", "reversed"]))
    return make_array(draw(st.integers(0, 2**32 - 1)), shape, layout)


def axis_of(draw, ndim):
    """A valid axis, negative about half the time."""
    return draw(st.integers(-ndim, ndim - 1))


# ---- the checks -------------------------------------------------------------------------------------------
def leaves(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def weights(outs, seed=7):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=np.shape(o)) for o in outs]


def fd_jacobians(f, xs):
    """ref[o][a]: central differences of numpy's f, output leaf o w.r.t. argument a."""
    n_out = len(leaves(f(np, *xs)))
    ref = [[None] * len(xs) for _ in range(n_out)]
    for a in range(len(xs)):
        for o in range(n_out):
            def fa(xa, a=a, o=o):
                args = list(xs)
                args[a] = xa
                return np.asarray(leaves(f(np, *args))[o], dtype=np.float64)
            ref[o][a] = finite_difference_jacobian(fa, xs[a])
    return ref


def close(got, want, what, atol=1e-9):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-9, err_msg=what)


def jac_leaves(res, n_out):
    """jt.jacobian with tuple argnums: per output leaf, a tuple over arguments."""
    return [res] if n_out == 1 and not isinstance(res, list) else list(res)


def loss_terms(lib, outs, ws, power=1):
    total = 0.0
    for w, o in zip(ws, outs):
        total = total + lib.sum(w * o ** power if power != 1 else w * o)
    return total


def check_numpy(f, *xs, hessian=True, libs=(jt, np)):
    """Values against numpy; jacobian (chain, rev, fwd), grad and hessian against central differences."""
    want = leaves(f(np, *xs))
    for lib in libs:  # jactensor's own functions on plain arrays
        got = leaves(f(lib, *xs))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            close(g, w, f"value ({lib.__name__})", atol=0)
            assert np.asarray(g).dtype == np.float64
    ref = fd_jacobians(f, xs)
    argnums = tuple(range(len(xs)))
    for lib in libs:
        for m in METHODS:
            res = jac_leaves(jt.jacobian(lambda *a: f(lib, *a), argnums=argnums, method=m)(*xs), len(want))
            for o in range(len(want)):
                for a in argnums:
                    close(res[o][a], ref[o][a], f"jacobian method={m} lib={lib.__name__} out {o} arg {a}")
    ws = weights(want)
    gs = jt.grad(lambda *a: loss_terms(jt, leaves(f(libs[-1], *a)), ws), argnums=argnums)(*xs)
    for a in argnums:
        gref = sum(np.tensordot(w, r[a], axes=w.ndim) for w, r in zip(ws, ref))
        close(gs[a], gref, f"grad arg {a}")
    if hessian:  # f is (locally) affine: d2/dx2 sum(w f(x)^2) = 2 J^T diag(w) J
        H = jt.hessian(lambda x0: loss_terms(jt, leaves(f(libs[0], x0, *xs[1:])), ws, power=2))(xs[0])
        n = np.size(xs[0])
        Href = sum(2 * (r[0].reshape(w.size, n).T * w.reshape(-1)) @ r[0].reshape(w.size, n) for w, r in zip(ws, ref))
        close(H, Href.reshape(np.shape(xs[0]) * 2), "hessian")


def check_jax(f, *xs, hessian=True, libs=(jt, np)):
    """Values, the Jacobian by all three methods, grad and hessian against JAX at float64 (one jit per case).
    ``libs``: the libraries whose f runs on jactensor's traced values (jt, and numpy's dispatch)."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    ws = weights(leaves(jax.eval_shape(lambda *a: f(jnp, *a), *xs)))
    argnums = tuple(range(len(xs)))

    def everything(*a):
        outs = leaves(f(jnp, *a))
        J = jax.jacfwd(lambda *b: leaves(f(jnp, *b)), argnums=argnums)(*a)
        g = jax.grad(lambda *b: loss_terms(jnp, leaves(f(jnp, *b)), ws), argnums=argnums)(*a)
        H = jax.hessian(lambda x0: loss_terms(jnp, leaves(f(jnp, x0, *a[1:])), ws, 2))(a[0]) if hessian else None
        return outs, J, g, H

    outs, J, g, H = jax.jit(everything)(*xs)
    got = leaves(f(jt, *xs))
    assert len(got) == len(outs)
    for o, (v, w) in enumerate(zip(got, outs)):
        close(v, w, f"value against jax, output {o}", atol=1e-14)
    for lib in libs:
        for m in METHODS:
            res = jac_leaves(jt.jacobian(lambda *a: f(lib, *a), argnums=argnums, method=m)(*xs), len(outs))
            for o in range(len(outs)):
                for a in argnums:
                    close(res[o][a], J[o][a], f"jacobian method={m} lib={lib.__name__} against jax, out {o} arg {a}")
    gs = jt.grad(lambda *a: loss_terms(jt, leaves(f(libs[-1], *a)), ws), argnums=argnums)(*xs)
    for a in argnums:
        close(gs[a], g[a], f"grad against jax, arg {a}")
    if hessian:
        Hs = jt.hessian(lambda x0: loss_terms(jt, leaves(f(libs[0], x0, *xs[1:])), ws, power=2))(xs[0])
        close(Hs, H, "hessian against jax")


# ---- the cases: (f(lib, *xs), xs) drawn by hypothesis ---------------------------------------------------------
@st.composite
def reshape_case(draw):
    x = draw(arrays(max_dims=4))
    size = x.size
    if size == 0:
        new = (0,) + tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    else:  # the prime factors of the size in random order, some merged, maybe a 1 and a -1
        primes = [p for p in (2, 3) for e in range(1, 9) if size % p ** e == 0]
        new = list(draw(st.permutations(primes)))
        if draw(st.booleans()):
            new = [int(np.prod(new[k:k + 2])) for k in range(0, len(new), 2)]
        if draw(st.booleans()):
            new.insert(draw(st.integers(0, len(new))), 1)
        new = tuple(new) or (1,)
        if draw(st.booleans()):
            new = (-1,) + new[1:]
    form = draw(st.sampled_from(["function", "method", "method*"]))
    if form == "function":
        return (lambda lib, x: lib.reshape(x, new)), (x,)
    if form == "method":
        return (lambda lib, x: x.reshape(new)), (x,)
    return (lambda lib, x: x.reshape(*new)), (x,)


@st.composite
def transpose_case(draw):
    x = draw(arrays(max_dims=4))
    axes = draw(st.none() | st.permutations(range(x.ndim)).map(lambda p: tuple(a - x.ndim * (a % 2) for a in p)))
    form = draw(st.sampled_from(["function", "T", "method"]))
    if form == "T":
        return (lambda lib, x: x.T), (x,)
    if form == "method" and axes is not None:
        return (lambda lib, x: x.transpose(*axes)), (x,)
    return (lambda lib, x: lib.transpose(x, axes)), (x,)


@st.composite
def broadcast_to_case(draw):
    target = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    k = draw(st.integers(0, len(target)))
    shape = tuple(1 if draw(st.booleans()) else n for n in target[len(target) - k:])
    x = draw(arrays(shape=shape))
    return (lambda lib, x: lib.broadcast_to(x, target)), (x,)


@st.composite
def joined(draw, name):
    """Arrays for concatenate/stack/hstack/vstack/dstack/column_stack."""
    n = draw(st.integers(1, 3))
    if name == "concatenate":
        base = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3))
        axis = axis_of(draw, len(base))
        xs = []
        for _ in range(n):
            s = list(base)
            s[axis] = draw(st.integers(0, 3))
            xs.append(draw(arrays(shape=tuple(s))))
        return (lambda lib, *a: lib.concatenate(list(a), axis=axis)), tuple(xs)
    shape = draw(hnp.array_shapes(min_dims=0 if name != "concatenate" else 1, max_dims=3, min_side=0, max_side=3))
    xs = tuple(draw(arrays(shape=shape)) for _ in range(n))
    if name == "stack":
        axis = draw(st.integers(-len(shape) - 1, len(shape)))
        return (lambda lib, *a: lib.stack(a, axis=axis)), xs
    return (lambda lib, *a: getattr(lib, name)(list(a))), xs


@st.composite
def split_case(draw):
    name = draw(st.sampled_from(["split", "array_split", "hsplit", "vsplit", "dsplit"]))
    min_dims = {"vsplit": 2, "dsplit": 3}.get(name, 1)
    x = draw(arrays(min_dims=min_dims, max_dims=3))
    axis = {"hsplit": 1 if x.ndim > 1 else 0, "vsplit": 0, "dsplit": 2}.get(name) if name[0] in "hvd" \
        else axis_of(draw, x.ndim)
    n = x.shape[axis]
    if draw(st.booleans()):  # cut points, negative and out of range too
        sections = sorted(draw(st.lists(st.integers(-n - 1, n + 1), max_size=3)))
    elif name == "array_split":
        sections = draw(st.integers(1, 4))
    else:
        sections = draw(st.sampled_from([d for d in range(1, 5) if n % d == 0] or [1])) if n else 1
    if name[0] in "hvd":
        return (lambda lib, x: getattr(lib, name)(x, sections)), (x,)
    return (lambda lib, x: getattr(lib, name)(x, sections, axis=axis)), (x,)


@st.composite
def squeeze_case(draw):
    x = draw(arrays(max_dims=4, max_side=2))
    ones = [k for k, n in enumerate(x.shape) if n == 1]
    axis = None if not ones or draw(st.booleans()) else \
        tuple(a - x.ndim * draw(st.integers(0, 1)) for a in draw(st.lists(st.sampled_from(ones), min_size=1,
                                                                            unique=True)))
    if draw(st.booleans()):
        return (lambda lib, x: x.squeeze(axis)), (x,)
    return (lambda lib, x: lib.squeeze(x, axis)), (x,)


@st.composite
def expand_dims_case(draw):
    x = draw(arrays(max_dims=3))
    k = draw(st.integers(1, 2))
    nd = x.ndim + k
    axes = tuple(a - nd * draw(st.integers(0, 1)) for a in draw(st.lists(st.integers(0, nd - 1), min_size=k,
                                                                         max_size=k, unique=True)))
    return (lambda lib, x: lib.expand_dims(x, axes[0] if k == 1 else axes)), (x,)


@st.composite
def ravel_case(draw):
    x = draw(arrays(max_dims=3))
    order = draw(st.sampled_from(["C", "F"]))
    form = draw(st.sampled_from(["function", "ravel", "flatten"]))
    if form == "function":
        return (lambda lib, x: lib.ravel(x, order)), (x,)
    return (lambda lib, x: getattr(x, form)(order)), (x,)


@st.composite
def swap_move_case(draw):
    x = draw(arrays(min_dims=1, max_dims=4))
    nd = x.ndim
    if draw(st.booleans()):
        a, b = axis_of(draw, nd), axis_of(draw, nd)
        if draw(st.booleans()):
            return (lambda lib, x: x.swapaxes(a, b)), (x,)
        return (lambda lib, x: lib.swapaxes(x, a, b)), (x,)
    k = draw(st.integers(1, nd))
    src = draw(st.lists(st.integers(-nd, nd - 1), min_size=k, max_size=k, unique_by=lambda a: a % nd))
    dst = draw(st.lists(st.integers(-nd, nd - 1), min_size=k, max_size=k, unique_by=lambda a: a % nd))
    return (lambda lib, x: lib.moveaxis(x, src, dst)), (x,)


@st.composite
def flip_case(draw):
    name = draw(st.sampled_from(["flip", "flip", "fliplr", "flipud", "rot90"]))
    x = draw(arrays(min_dims={"fliplr": 2, "flipud": 1, "rot90": 2}.get(name, 0), max_dims=3))
    if name == "flip":
        axis = None if x.ndim == 0 or draw(st.booleans()) else \
            tuple(draw(st.lists(st.integers(-x.ndim, x.ndim - 1), min_size=1, max_size=x.ndim,
                                unique_by=lambda a: a % x.ndim)))
        return (lambda lib, x: lib.flip(x, axis)), (x,)
    if name == "rot90":
        k = draw(st.integers(-5, 5))
        p = draw(st.integers(-x.ndim, x.ndim - 1))
        q = draw(st.integers(-x.ndim, x.ndim - 1).filter(lambda q: q % x.ndim != p % x.ndim))
        return (lambda lib, x: lib.rot90(x, k, (p, q))), (x,)
    return (lambda lib, x: getattr(lib, name)(x)), (x,)


@st.composite
def roll_case(draw):
    x = draw(arrays(max_dims=3))
    if x.ndim == 0 or draw(st.booleans()):
        shift = draw(st.integers(-9, 9))
        return (lambda lib, x: lib.roll(x, shift)), (x,)
    k = draw(st.integers(1, 3))
    axes = tuple(draw(st.lists(st.integers(-x.ndim, x.ndim - 1), min_size=k, max_size=k)))
    shifts = tuple(draw(st.lists(st.integers(-9, 9), min_size=k, max_size=k)))
    return (lambda lib, x: lib.roll(x, shifts[0] if k == 1 else shifts, axes[0] if k == 1 else axes)), (x,)


@st.composite
def tile_case(draw):
    x = draw(arrays(max_dims=3, max_side=3))
    reps = tuple(draw(st.lists(st.integers(0, 3), max_size=4)))
    return (lambda lib, x: lib.tile(x, reps[0] if len(reps) == 1 else reps)), (x,)


@st.composite
def repeat_case(draw):
    x = draw(arrays(max_dims=3, max_side=3))
    axis = None if x.ndim == 0 or draw(st.booleans()) else axis_of(draw, x.ndim)
    n = x.size if axis is None else x.shape[axis]
    repeats = draw(st.integers(0, 3)) if n == 0 or draw(st.booleans()) else \
        np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    if draw(st.booleans()):
        return (lambda lib, x: x.repeat(repeats, axis)), (x,)
    return (lambda lib, x: lib.repeat(x, repeats, axis=axis)), (x,)


@st.composite
def pad_case(draw):
    x = draw(arrays(max_dims=3, max_side=3))
    form = draw(st.integers(0, 2 if x.ndim else 0))
    w = [draw(st.integers(0, 2)), (draw(st.integers(0, 2)), draw(st.integers(0, 2))),
         tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(x.ndim))][form]
    c = draw(st.sampled_from([None, 0.5, (-1.0, 2.0)]))
    if c is None:
        return (lambda lib, x: lib.pad(x, w)), (x,)
    return (lambda lib, x: lib.pad(x, w, mode="constant", constant_values=c)), (x,)


@st.composite
def atleast_case(draw):
    k = draw(st.integers(1, 3))
    xs = tuple(draw(arrays(max_dims=4, max_side=3)) for _ in range(draw(st.integers(1, 2))))
    return (lambda lib, *a: getattr(lib, f"atleast_{k}d")(*a)), xs


@st.composite
def diff_case(draw):
    x = draw(arrays(min_dims=1, max_dims=3, max_side=5))
    axis = axis_of(draw, x.ndim)
    n = draw(st.integers(0, 4))
    kw = {}
    for name in ("prepend", "append"):
        if draw(st.booleans()):
            s = list(x.shape)
            s[axis] = draw(st.integers(1, 2))
            kw[name] = 0.25 if draw(st.booleans()) else make_array(draw(st.integers(0, 99)), s)
    return (lambda lib, x: lib.diff(x, n, axis=axis, **kw)), (x,)


@st.composite
def copy_case(draw):
    x = draw(arrays(max_dims=3))
    form = draw(st.sampled_from(["copy", "method", "astype"]))
    if form == "copy":
        return (lambda lib, x: lib.copy(x)), (x,)
    if form == "method":
        return (lambda lib, x: x.copy()), (x,)
    return (lambda lib, x: x.astype(np.float64)), (x,)


CASES = {"reshape": reshape_case(), "transpose": transpose_case(), "broadcast_to": broadcast_to_case(),
         "concatenate": joined("concatenate"), "stack": joined("stack"), "hstack": joined("hstack"),
         "vstack": joined("vstack"), "dstack": joined("dstack"), "column_stack": joined("column_stack"),
         "split": split_case(), "squeeze": squeeze_case(), "expand_dims": expand_dims_case(), "ravel": ravel_case(),
         "swapaxes/moveaxis": swap_move_case(), "flip": flip_case(), "roll": roll_case(), "tile": tile_case(),
         "repeat": repeat_case(), "pad": pad_case(), "atleast_nd": atleast_case(), "diff": diff_case(),
         "copy": copy_case()}


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_against_numpy(name, data):
    f, xs = data.draw(CASES[name])
    check_numpy(f, *xs)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=3, **SETTINGS)
@given(data=st.data())
def test_against_jax(name, data):
    f, xs = data.draw(CASES[name])
    check_jax(f, *xs)


# ---- fixed cases: zero sizes, conventions, structure -----------------------------------------------------
ZERO = [(lambda lib, x: lib.reshape(x, (0, 1, 3)), np.zeros(0)),
        (lambda lib, x: lib.reshape(x, (3, 0)), np.zeros((0, 3))),
        (lambda lib, x: lib.transpose(x), np.zeros((2, 0, 3))),
        (lambda lib, x: lib.concatenate([x, x], axis=1), np.zeros((2, 0))),
        (lambda lib, x: lib.stack([x, x], axis=-1), np.zeros((0, 2))),
        (lambda lib, x: lib.split(x, 2, axis=1)[1], np.zeros((0, 4))),
        (lambda lib, x: lib.flip(x), np.zeros((3, 0))),
        (lambda lib, x: lib.roll(x, 2), np.zeros((0, 3))),
        (lambda lib, x: lib.tile(x, (2, 0)), np.ones((2, 3))),
        (lambda lib, x: lib.repeat(x, 0, axis=0), np.ones((2, 3))),
        (lambda lib, x: lib.pad(x, 1), np.zeros((0, 2))),
        (lambda lib, x: lib.diff(x, 5), np.ones(3)),
        (lambda lib, x: lib.squeeze(x), np.zeros((1, 0, 1))),
        (lambda lib, x: lib.broadcast_to(x, (0, 3)), np.ones((1, 3)))]


@pytest.mark.parametrize("k", range(len(ZERO)))
def test_zero_size_through_every_method(k):
    f, x = ZERO[k]
    want = f(np, x)
    assert 0 in np.shape(want) or 0 in x.shape
    for m in METHODS:
        J = jt.jacobian(lambda x: f(np, x), method=m)(x)
        assert J.shape == np.shape(want) + x.shape and not np.any(J)
    g = jt.grad(lambda x: jt.sum(f(jt, x) ** 2))(x)
    assert g.shape == x.shape and not np.any(g)
    H = jt.hessian(lambda x: jt.sum(f(jt, x) ** 2))(x)
    assert H.shape == x.shape * 2 and not np.any(H)


def test_reshape_jacobian_never_builds_the_dense_square():
    """Regrouping a (100, 100) matrix into (10000,) stores two digit factors, not a 10^8 identity."""
    (J,) = jt.reshape.jacobian(np.ones((100, 100)), (10000,))
    assert J.stored_bytes <= 8 * 10000 * 200 and J.nbytes == 8 * 10 ** 8
    x = np.random.default_rng(0).normal(size=(4, 6))
    (J,) = jt.reshape.jacobian(x, (3, 8))
    np.testing.assert_array_equal(J.as_matrix(), np.eye(24))


@pytest.mark.parametrize("make, bound", [
    (lambda x: jt.flip.jacobian(x, 0), 8 * 30 * 30),          # a reversed identity on axis 0
    (lambda x: jt.registry["roll"].jacobian(x, 3, 0), 8 * 30 * 30),  # a cyclic shift on axis 0
    (lambda x: jt.tile.jacobian(x, (2, 1)), 8 * 60 * 30),     # a tiling factor on axis 0
    (lambda x: jt.pad.jacobian(x, ((1, 2), (0, 0))), 8 * 33 * 30),
    (lambda x: jt.stack.jacobian([x, x, x]), 8 * 3),           # a one-hot over the new axis
    (lambda x: jt.diff.jacobian(x, axis=0), 8 * 30 * 30)])
def test_jacobians_are_per_axis_factors(make, bound):
    x = np.random.default_rng(1).normal(size=(30, 20))
    J = make(x)[0]
    assert J.stored_bytes <= bound < J.nbytes


def test_numpy_names_and_methods_dispatch_to_jactensor():
    for name in ["stack", "hstack", "vstack", "dstack", "column_stack", "split", "array_split", "hsplit", "vsplit",
                 "dsplit", "squeeze", "expand_dims", "ravel", "swapaxes", "moveaxis", "flip", "fliplr", "flipud",
                 "roll", "rot90", "tile", "repeat", "pad", "take", "take_along_axis", "sort", "partition", "argsort",
                 "argmax", "argmin", "atleast_1d", "atleast_2d", "atleast_3d", "diff", "zeros_like", "ones_like",
                 "full_like", "empty_like", "astype", "copy"]:
        assert getattr(np, name) in numpy_api.FUNCTIONS, name
        assert callable(getattr(jt, name)), name
    for m in ["squeeze", "ravel", "flatten", "astype", "copy", "repeat", "take", "swapaxes", "argsort", "argmax",
              "argmin"]:
        assert m in numpy_api.METHODS, m


def test_astype():
    x = np.array([1.0 + 2 ** -30, -2.5, 3.75])
    f32 = jt.jacobian(lambda x: x.astype(np.float32) * 2.0, method="rev")(x)
    np.testing.assert_array_equal(f32, 2 * np.eye(3))  # rounding has derivative 1, as in JAX
    np.testing.assert_array_equal(jt.astype(x, np.float32), x.astype(np.float32).astype(np.float64))
    assert jt.astype(x, np.float32)[0] != x[0]  # the value is rounded, as numpy's

    def scaled_by_int(x):
        i = x.astype(int)  # an integer result: a constant
        assert type(i) is np.ndarray and i.dtype.kind == "i"
        return x * i

    np.testing.assert_array_equal(jt.jacobian(scaled_by_int)(x), np.diag([1.0, -2.0, 3.0]))
    H = jt.hessian(lambda x: jt.sum(x.astype("float64") ** 3))(x)
    np.testing.assert_allclose(H, np.diag(6 * x))
    with pytest.raises(jt.DTypeError, match="complex"):
        jt.grad(lambda x: jt.sum(x.astype(complex)))(x)


def test_constants_shaped_like_a_traced_value():
    x = np.arange(6.0).reshape(2, 3)

    def f(x):
        z, o, e, c = np.zeros_like(x), np.ones_like(x), np.empty_like(x), np.full_like(x, 2.0)
        assert all(type(a) is np.ndarray and a.shape == (2, 3) for a in (z, o, e, c))
        return x * c + o + z

    np.testing.assert_array_equal(jt.jacobian(f)(x), 2 * np.eye(6).reshape(2, 3, 2, 3))
    # a traced fill value is differentiated, not dropped
    g = jt.grad(lambda s: jt.sum(jt.full_like(x, s) * x))(np.array(1.5))
    assert g == x.sum()


def test_ravel_orders_follow_numpy_on_views():
    b = np.random.default_rng(2).normal(size=(2, 3, 4))
    views = [b, b.T, b[:, ::-1], b[::-1, ::2, ::3], np.asfortranarray(b), b.transpose(1, 0, 2)[:, :, ::2],
             b[:, :1, :].transpose(2, 1, 0), b.transpose(2, 0, 1)[::-1, :, ::-1], b[0].T[::2]]
    for v in views:
        for order in "CFAK":
            np.testing.assert_array_equal(jt.ravel(v, order), np.ravel(v, order))
            J = jt.jacobian(lambda x: x.ravel(order), method="fwd")(v)
            want = np.ravel(v, order)[:, None] == v.ravel()[None, :]  # distinct values: entry i is v's entry j
            np.testing.assert_array_equal(J.reshape(v.size, v.size), want)


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: jt.pad(np.ones(3), 1, mode="reflect"), jt.NotDifferentiableError, r"pad: mode='reflect' is not supported"),
    (lambda: jt.pad(np.ones(3), -1), jt.ShapeError, r"pad: pad_width must be non-negative"),
    (lambda: jt.pad(np.ones((2, 2)), ((1, 1), (1, 1), (1, 1))), jt.ShapeError, r"pad: pad_width .* 2 axes"),
    (lambda: jt.split(np.ones(5), 2), jt.ShapeError, r"split: an axis of length 5 .* 2 equal sections.*array_split"),
    (lambda: jt.array_split(np.ones(5), 0), jt.ShapeError, r"number of sections must be larger than 0"),
    (lambda: jt.vsplit(np.ones(3), 1), jt.ShapeError, r"vsplit: .*2 or more dimensions"),
    (lambda: jt.squeeze(np.ones((2, 1)), 0), jt.ShapeError, r"squeeze: axis 0 has length 2"),
    (lambda: jt.stack([np.ones(2), np.ones(3)]), jt.ShapeError, r"stack: array 1 has shape \(3,\)"),
    (lambda: jt.tile(np.ones(2), -1), jt.ShapeError, r"tile: reps must be non-negative"),
    (lambda: jt.repeat(np.ones((2, 2)), [1, 2, 3], axis=0), jt.ShapeError, r"repeat: 3 repeats for an axis of "
                                                                             r"length 2"),
    (lambda: jt.diff(np.ones(()), 1), jt.ShapeError, r"diff: the input must be at least 1-d"),
    (lambda: jt.diff(np.ones(3), -1), jt.ShapeError, r"diff: the order n must be a non-negative int"),
    (lambda: jt.diff(np.ones((2, 3)), prepend=np.ones((3, 1))), jt.ShapeError, r"diff: prepend has shape \(3, 1\)"),
    (lambda: jt.moveaxis(np.ones((2, 3)), (0, 1), 0), jt.AxisError, r"moveaxis: source .* same number"),
    (lambda: jt.rot90(np.ones((2, 3)), 1, (0, 0)), jt.AxisError, r"rot90: the two axes must differ"),
    (lambda: jt.fliplr(np.ones(3)), jt.ShapeError, r"fliplr: the input must be at least 2-d"),
    (lambda: jt.roll(np.ones((2, 3)), (1, 2), (0, 1, 1)), jt.ShapeError, r"roll: shift .* do not broadcast"),
    (lambda: jt.reshape(np.ones(6), (-1, -1)), jt.ShapeError, r"reshape: at most one -1"),
    (lambda: jt.concatenate([np.ones(2)], axis=None), jt.AxisError, r"concatenate: axis=None"),
    (lambda: jt.astype(np.ones(2), "U3"), jt.DTypeError, r"astype: cannot convert"),
    (lambda: jt.grad(lambda x: jt.sum(jt.diff(np.ones(3), prepend=x)))(np.ones(1)), jt.NotDifferentiableError,
     r"diff: prepend is a traced value.*concatenate"),
])
def test_errors_name_the_op_and_a_remedy(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
