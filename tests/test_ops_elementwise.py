"""Elementwise and special-function primitives against JAX at float64 (values, jacobian by every method,
grad, hessian) on hypothesis-drawn shapes; the conventions at kinks; numpy dispatch on traced values."""
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jactensor as jt
import jactensor.special as jsp
from jactensor.core import Primitive
from jactensor.ops import elementwise as E
from jactensor.ops import special as S
from jactensor.testing import finite_difference_jacobian
from jactensor.tracer import Tracer

TOL = 1e-10
METHODS = ("chain", "rev", "fwd")


from .support import _tree_close, assert_close  # noqa: E402


# ---- the functions and their JAX counterparts ------------------------------------------------------
def _sinc_values(rng, s):
    """Normal values, one in five exactly 0, none in 0 < |x| < 0.05: JAX differentiates sin(pi x) / (pi x) as
    written and loses digits to cancellation there (its exact-zero case uses a Maclaurin rule, as ours)."""
    x = rng.normal(size=s)
    x = np.where(np.abs(x) < 0.05, np.sign(x) * 0.05 + x, x)
    return np.where(rng.random(size=s) < 0.2, 0.0, x)


def _xlogy_x(rng, s):
    return rng.normal(size=s) * (rng.random(size=s) > 0.25)


def _above_m1(rng, s):
    return rng.uniform(-0.8, 2.0, size=s)


UNARY = {  # name: (domain, jax function from (jnp, jss, jnn))
    "negative": ("real", lambda j, s, n: j.negative), "positive": ("real", lambda j, s, n: j.positive),
    "abs": ("nonzero", lambda j, s, n: j.abs), "sign": ("nonzero", lambda j, s, n: j.sign),
    "exp": ("real", lambda j, s, n: j.exp), "exp2": ("real", lambda j, s, n: j.exp2),
    "expm1": ("real", lambda j, s, n: j.expm1), "log": ("positive", lambda j, s, n: j.log),
    "log2": ("positive", lambda j, s, n: j.log2), "log10": ("positive", lambda j, s, n: j.log10),
    "log1p": ("unit", lambda j, s, n: j.log1p), "sqrt": ("positive", lambda j, s, n: j.sqrt),
    "square": ("real", lambda j, s, n: j.square), "reciprocal": ("nonzero", lambda j, s, n: j.reciprocal),
    "sin": ("real", lambda j, s, n: j.sin), "cos": ("real", lambda j, s, n: j.cos),
    "tan": ("tan", lambda j, s, n: j.tan), "arcsin": ("unit", lambda j, s, n: j.arcsin),
    "arccos": ("unit", lambda j, s, n: j.arccos), "arctan": ("real", lambda j, s, n: j.arctan),
    "sinh": ("real", lambda j, s, n: j.sinh), "cosh": ("real", lambda j, s, n: j.cosh),
    "tanh": ("real", lambda j, s, n: j.tanh), "arcsinh": ("real", lambda j, s, n: j.arcsinh),
    "arccosh": ("above1", lambda j, s, n: j.arccosh), "arctanh": ("unit", lambda j, s, n: j.arctanh),
    "deg2rad": ("real", lambda j, s, n: j.deg2rad), "rad2deg": ("real", lambda j, s, n: j.rad2deg),
    "sinc": (_sinc_values, lambda j, s, n: j.sinc), "floor": ("offint", lambda j, s, n: j.floor),
    "ceil": ("offint", lambda j, s, n: j.ceil), "rint": ("offint", lambda j, s, n: j.rint),
    "trunc": ("offint", lambda j, s, n: j.trunc), "sigmoid": ("real", lambda j, s, n: n.sigmoid),
    "relu": ("nonzero", lambda j, s, n: n.relu), "erf": ("real", lambda j, s, n: s.erf),
    "logit": ("prob", lambda j, s, n: s.logit), "erfc": ("real", lambda j, s, n: s.erfc),
    "gammaln": ("gamma", lambda j, s, n: s.gammaln), "digamma": ("gamma", lambda j, s, n: s.digamma),
    "entr": ("positive", lambda j, s, n: s.entr),
}

BINARY = {  # name: (domains, jax function)
    "add": (("real", "real"), lambda j, s: j.add), "subtract": (("real", "real"), lambda j, s: j.subtract),
    "multiply": (("real", "real"), lambda j, s: j.multiply), "divide": (("real", "nonzero"), lambda j, s: j.divide),
    "power": (("positive", "real"), lambda j, s: j.power),
    "remainder": (("halfint", "smallint"), lambda j, s: j.remainder),
    "arctan2": (("nonzero", "nonzero"), lambda j, s: j.arctan2),
    "hypot": (("nonzero", "nonzero"), lambda j, s: j.hypot),
    "logaddexp": (("real", "real"), lambda j, s: j.logaddexp),
    "logaddexp2": (("real", "real"), lambda j, s: j.logaddexp2),
    "maximum": (("grid", "halfgrid"), lambda j, s: j.maximum),
    "minimum": (("grid", "halfgrid"), lambda j, s: j.minimum),
    "fmax": (("grid", "halfgrid"), lambda j, s: j.fmax), "fmin": (("grid", "halfgrid"), lambda j, s: j.fmin),
    "xlogy": ((_xlogy_x, "positive"), lambda j, s: s.xlogy), "xlog1py": ((_xlogy_x, _above_m1), lambda j, s: s.xlog1py),
}


def _jt(name):
    return getattr(jsp, name, None) if name in S.__all__ else getattr(jt, name)


def _layout(x, noncontiguous):
    """The same values as a strided view of a larger array (non-contiguous), when asked."""
    if not noncontiguous or x.ndim == 0:
        return x
    big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],))
    big[..., ::2] = x
    return big[..., ::2]


# The reference: JAX's value and first and second derivatives of the elementwise function, evaluated on the
# broadcast entries (flattened and padded to one length, so each function compiles once under jax.jit),
# assembled into the expected Jacobian, gradient and Hessian below. Every op here is elementwise, so these
# numbers determine all three.
PAD = 32
_REFERENCES = {}


def _reference(jax, key, fn, argnums):
    """jit of (f, [df/dx_k], [[d2f/dx_k dx_l]]) (k, l in argnums) for an elementwise ``fn`` of arrays of
    length PAD."""
    if key not in _REFERENCES:
        jnp = jax.numpy

        def partial(fun, k):  # elementwise: d/dx_k is a JVP with a tangent of ones in argument k
            def d(*xs):
                def along(v):
                    return fun(*[v if i == k else x for i, x in enumerate(xs)])
                return jax.jvp(along, (xs[k],), (jnp.ones_like(xs[k]),))[1]
            return d

        def everything(*xs):
            return (fn(*xs), [partial(fn, k)(*xs) for k in argnums],
                    [[partial(partial(fn, k), q)(*xs) for q in argnums] for k in argnums])
        _REFERENCES[key] = jax.jit(everything)
    return _REFERENCES[key]


def _sum_to(x, lead, shape):
    """Sum the axes of ``x`` after the first ``lead`` (a broadcast shape) down to ``shape``."""
    extra = x.ndim - lead - len(shape)
    x = x.sum(axis=tuple(range(lead, lead + extra)))
    axes = tuple(lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def _diag(v, shape):
    """delta(o, o') v[o] as an array of shape + shape."""
    n = int(np.prod(shape, dtype=np.int64))
    out = np.zeros((n, n))
    out[np.arange(n), np.arange(n)] = v.reshape(-1)
    return out.reshape(tuple(shape) * 2)


def _compare(jax, key, f_jax, f_jt, args, argnums, pads, what):
    """Value, jacobian (chain, rev, fwd), grad of sum(w * f) and its hessian against JAX's pointwise
    derivatives of the elementwise ``f_jax`` (arguments: arrays, Python scalars or constant masks)."""
    out = np.broadcast_shapes(*(np.shape(a) for a in args))
    size = int(np.prod(out, dtype=np.int64))
    flat = []
    for a, pad in zip(args, pads):
        v = np.array(pad, dtype=np.asarray(a).dtype)
        v[:size] = np.broadcast_to(a, out).reshape(-1)
        flat.append(v)
    val, d1, d2 = (jax.tree_util.tree_map(lambda v: np.asarray(v)[:size].reshape(out), r)
                   for r in _reference(jax, (key, tuple(argnums)), f_jax, tuple(argnums))(*flat))
    assert_close(f_jt(*args), val, what=f"{what} value")
    shapes = [np.shape(args[k]) for k in argnums]
    Js = [_sum_to(_diag(d1[i], out), len(out), s) for i, s in enumerate(shapes)]
    for m in METHODS:
        _tree_close(jt.jacobian(f_jt, argnums=tuple(argnums), method=m)(*args), Js, f"{what} jacobian ({m})")
    w = np.cos(np.arange(size, dtype=np.float64)).reshape(out) + 0.5  # fixed weights
    loss = lambda *a: jt.sum(f_jt(*a) * w)  # noqa: E731
    _tree_close(jt.grad(loss, argnums=tuple(argnums))(*args), [_sum_to(w * d1[i], 0, s) for i, s in enumerate(shapes)],
                f"{what} grad")
    H = [[_hess_block(w * d2[i][j], out, si, sj) for j, sj in enumerate(shapes)] for i, si in enumerate(shapes)]
    _tree_close(jt.hessian(loss, argnums=tuple(argnums))(*args), H, f"{what} hessian")


def _hess_block(v, out, sk, sq):
    """sum_o v[o] [o reaches i in an argument of shape sk] [o reaches j in one of shape sq]."""
    E = _diag(v, out)                      # (out, out)
    E = _sum_to(E, len(out), sq)           # (out, sq)
    E = np.moveaxis(E, list(range(len(out))), list(range(len(sq), len(sq) + len(out))))  # (sq, out)
    E = _sum_to(E, len(sq), sk)            # (sq, sk)
    return np.moveaxis(E, list(range(len(sq))), list(range(len(sk), len(sk) + len(sq))))  # (sk, sq)


def _pads(domains, rng):
    return [E.values(rng, (PAD,), d) for d in domains]


SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
PAIRS = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=3)
TRIPLES = hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, min_side=0, max_side=3)
SETTINGS = settings(max_examples=5, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", sorted(UNARY))
@SETTINGS
@given(shape=SHAPES, seed=st.integers(0, 2**16), noncontiguous=st.booleans())
def test_unary_against_jax(jx, name, shape, seed, noncontiguous):
    domain, make = UNARY[name]
    rng = np.random.default_rng(seed)
    x = _layout(E.values(rng, shape, domain), noncontiguous)
    _compare(jx, name, make(jx.numpy, jx.scipy.special, jx.nn), _jt(name), (x,), (0,), _pads([domain], rng), name)


@pytest.mark.parametrize("name", sorted(BINARY))
@SETTINGS
@given(shapes=PAIRS, seed=st.integers(0, 2**16), noncontiguous=st.booleans(), const=st.sampled_from([None, 0, 1]))
def test_binary_against_jax(jx, name, shapes, seed, noncontiguous, const):
    """Broadcasting across ranks; now and then one operand a Python scalar (a constant, not differentiated)."""
    domains, make = BINARY[name]
    rng = np.random.default_rng(seed)
    args = [_layout(E.values(rng, s, d), noncontiguous) for s, d in zip(shapes.input_shapes, domains)]
    if const is not None:
        args[const] = float(E.values(rng, (), domains[const]))
    argnums = tuple(k for k in range(2) if k != const)
    pads = _pads(domains, rng)
    _compare(jx, name, make(jx.numpy, jx.scipy.special), _jt(name), tuple(args), argnums, pads, name)


@SETTINGS
@given(shapes=TRIPLES, seed=st.integers(0, 2**16), bounds=st.sampled_from(["both", "min", "max", "scalars"]))
def test_clip_against_jax(jx, shapes, seed, bounds):
    rng = np.random.default_rng(seed)
    a = E.values(rng, shapes.input_shapes[0], "grid")
    lo = E.values(rng, shapes.input_shapes[1], "halfgrid") - 0.5
    hi = E.values(rng, shapes.input_shapes[2], "halfgrid") + 0.5
    if bounds == "scalars":
        args, keep = (a, -0.375, 0.625), (0, 1, 2)
        argnums = (0,)
    else:
        args = (a, None if bounds == "max" else lo, None if bounds == "min" else hi)
        keep = tuple(k for k, v in enumerate(args) if v is not None)
        argnums = tuple(range(len(keep)))

    def full(f):
        return lambda *v: f(*[v[keep.index(k)] if k in keep else None for k in range(3)])

    pads = _pads(["grid", "halfgrid", "halfgrid"], rng)
    _compare(jx, f"clip-{bounds}", full(jx.numpy.clip), full(jt.clip), tuple(args[k] for k in keep), argnums,
             [pads[k] for k in keep], f"clip({bounds})")


@SETTINGS
@given(shapes=TRIPLES, seed=st.integers(0, 2**16), noncontiguous=st.booleans())
def test_where_against_jax(jx, shapes, seed, noncontiguous):
    rng = np.random.default_rng(seed)
    cond = rng.random(size=shapes.input_shapes[0]) < 0.5
    x, y = (_layout(rng.normal(size=s), noncontiguous) for s in shapes.input_shapes[1:])
    pads = [np.ones(PAD, dtype=bool)] + _pads(["real", "real"], rng)
    _compare(jx, "where", jx.numpy.where, jt.where, (cond, x, y), (1, 2), pads, "where")


@pytest.mark.parametrize("name, kwargs", [("round", {"decimals": 0}), ("round", {"decimals": 1}),
                                          ("gelu", {"approximate": True}), ("gelu", {"approximate": False}),
                                          ("nan_to_num", {"nan": 1.5, "posinf": 2.0, "neginf": None})])
@SETTINGS
@given(shape=SHAPES, seed=st.integers(0, 2**16))
def test_keyword_functions_against_jax(jx, name, kwargs, shape, seed):
    rng = np.random.default_rng(seed)
    domain = "offint" if name == "round" else "real"
    x = E.values(rng, shape, domain)
    pad = E.values(rng, (PAD,), domain)
    if name == "round":  # still between the rounding jumps
        x, pad = x * 10.0 ** -kwargs["decimals"], pad * 10.0 ** -kwargs["decimals"]
    f_jax = {"round": jx.numpy.round, "gelu": jx.nn.gelu, "nan_to_num": jx.numpy.nan_to_num}[name]
    _compare(jx, f"{name}{sorted(kwargs.items())}", lambda x: f_jax(x, **kwargs),
             lambda x: getattr(jt, name)(x, **kwargs), (x,), (0,), [pad], name)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
@SETTINGS
@given(shape=SHAPES, seed=st.integers(0, 2**16))
def test_polygamma_against_jax(jx, n, shape, seed):
    rng = np.random.default_rng(seed)
    x = E.values(rng, shape, "gamma")
    _compare(jx, f"polygamma{n}", lambda x: jx.scipy.special.polygamma(n, x), lambda x: jsp.polygamma(n, x), (x,),
             (0,), _pads(["gamma"], rng), f"polygamma({n})")


@SETTINGS
@given(shape=SHAPES, seed=st.integers(0, 2**16), exponent=st.sampled_from([2, 3, 0, -1, 2.0, 0.5, -1.5]))
def test_power_with_constant_exponent_against_jax(jx, shape, seed, exponent):
    """x ** c and c ** x with a Python scalar c (a constant): the operator form."""
    rng = np.random.default_rng(seed)
    domain = "positive" if exponent != int(exponent) else "nonzero"
    x = E.values(rng, shape, domain)
    e = np.full(PAD, float(exponent))
    _compare(jx, "x**c", lambda x, c: x ** c, lambda x, c: x ** exponent, (x, exponent), (0,),
             [E.values(rng, (PAD,), domain), e], f"x ** {exponent}")
    _compare(jx, "c**x", lambda c, x: c ** x, lambda c, x: 2.5 ** x, (2.5, x), (1,), [np.full(PAD, 2.5),
                                                                                      E.values(rng, (PAD,), domain)],
             "2.5 ** x")


# ---- conventions where the derivative is undefined ---------------------------------------------------
def _all_methods(f, *args, argnums=0):
    """The Jacobian by chain, rev and fwd (checked equal), and grad of sum(f)."""
    Js = [np.asarray(jt.jacobian(f, argnums=argnums, method=m)(*args)) for m in METHODS]
    for J in Js[1:]:
        np.testing.assert_array_equal(J, Js[0])
    return Js[0]


def test_kink_abs_sign_relu_are_zero_at_zero(jx):
    """abs'(0) = sign(0) = 0 (as PyTorch; JAX 0.10 returns 1); sign' = 0 everywhere; relu'(0) = 0 (JAX, PyTorch)."""
    x = np.array([0.0, -2.0, 3.0])
    assert_close(np.diag(_all_methods(jt.abs, x)), [0.0, -1.0, 1.0])
    assert_close(np.diag(_all_methods(jt.sign, x)), [0.0, 0.0, 0.0])
    assert_close(np.diag(_all_methods(jt.relu, x)), [0.0, 0.0, 1.0])
    assert_close(_all_methods(jt.relu, x), jx.jacobian(jx.nn.relu)(x))
    assert_close(_all_methods(jt.sign, x), jx.jacobian(jx.numpy.sign)(x))
    assert_close(jt.grad(lambda v: jt.sum(abs(v)))(x), [0.0, -1.0, 1.0])
    assert_close(jt.hessian(lambda v: jt.sum(abs(v) * v))(x), np.diag([0.0, -2.0, 2.0]))  # d2(x|x|) = 2 sign(x)
    torch = pytest.importorskip("torch")
    t = torch.tensor(x, requires_grad=True)
    torch.abs(t).sum().backward()
    assert_close(jt.grad(lambda v: jt.sum(abs(v)))(x), t.grad.numpy())


def test_kink_maximum_minimum_split_ties_fmax_fmin_give_them_to_b(jx):
    a, b = np.array([1.0, 2.0, -1.0]), np.array([1.0, 0.0, 3.0])
    for f, want_a in ((jt.maximum, [0.5, 1.0, 0.0]), (jt.minimum, [0.5, 0.0, 1.0]),
                      (jt.fmax, [0.0, 1.0, 0.0]), (jt.fmin, [0.0, 0.0, 1.0])):
        Ja, Jb = (np.diag(_all_methods(f, a, b, argnums=k)) for k in (0, 1))
        assert_close(Ja, want_a, what=f.name)
        assert_close(Jb, 1.0 - np.array(want_a), what=f.name)
        jf = getattr(jx.numpy, f.name)
        assert_close(Ja, np.diag(jx.jacobian(jf, argnums=0)(a, b)), what=f.name)
        assert_close(Jb, np.diag(jx.jacobian(jf, argnums=1)(a, b)), what=f.name)


def test_kink_fmax_fmin_take_the_non_nan_argument():
    a, b = np.array([np.nan, 1.0]), np.array([2.0, np.nan])
    for f in (jt.fmax, jt.fmin):
        np.testing.assert_array_equal(f(a, b), [2.0, 1.0])
        Ja, Jb = jt.jacobian(f, argnums=(0, 1))(a, b)
        np.testing.assert_array_equal(np.diag(Ja), [0.0, 1.0])
        np.testing.assert_array_equal(np.diag(Jb), [1.0, 0.0])


def test_kink_clip_at_its_bounds_is_jax_split(jx):
    """clip = minimum(maximum(a, lo), hi): at a == lo or a == hi the derivative is shared half and half."""
    a = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    lo, hi = np.array(0.0), np.array(1.0)
    got = [np.asarray(J) for J in jt.jacobian(jt.clip, argnums=(0, 1, 2))(a, lo, hi)]
    assert_close(np.diag(got[0]), [0.0, 0.5, 1.0, 0.5, 0.0])
    assert_close(got[1], [1.0, 0.5, 0.0, 0.0, 0.0])
    assert_close(got[2], [0.0, 0.0, 0.0, 0.5, 1.0])
    want = jx.jacobian(jx.numpy.clip, argnums=(0, 1, 2))(a, lo, hi)
    for g, w in zip(got, want):
        assert_close(g, w)
    # a == lo == hi: both ties (0.25 to a and to lo, 0.5 to hi), and lo > hi gives hi (numpy's order)
    b = np.array([0.5, 0.0])
    got = jt.jacobian(jt.clip, argnums=(0, 1, 2))(b, np.array([0.5, 0.5]), np.array([0.5, -1.0]))
    want = jx.jacobian(jx.numpy.clip, argnums=(0, 1, 2))(b, np.array([0.5, 0.5]), np.array([0.5, -1.0]))
    for g, w in zip(got, want):
        assert_close(g, w)
    assert_close(np.diag(got[0]), [0.25, 0.0])


def test_kink_steps_have_zero_derivative_at_their_jumps(jx):
    x = np.array([-1.0, 0.0, 0.5, 1.5, 2.0])
    for name in ("floor", "ceil", "rint", "trunc", "round", "sign"):
        J = _all_methods(getattr(jt, name), x)
        np.testing.assert_array_equal(J, np.zeros((5, 5)))
        assert_close(J, jx.jacobian(getattr(jx.numpy, name))(x), what=name)
        np.testing.assert_array_equal(jt.hessian(lambda v: jt.sum(getattr(jt, name)(v) * v))(x), np.zeros((5, 5)))


def test_kink_hypot_at_the_origin_is_zero_arctan2_is_nan(jx):
    """hypot: 0 at the origin (a subgradient, symmetric in a and b; JAX 0.5, PyTorch NaN); arctan2: NaN (JAX)."""
    z = np.array([0.0, 3.0])
    for k in (0, 1):
        J = np.diag(_all_methods(jt.hypot, z, np.array([0.0, 4.0]), argnums=k))
        assert_close(J, [0.0, (0.6, 0.8)[k]])
    J = np.diag(np.asarray(jt.jacobian(jt.arctan2)(z, np.array([0.0, 4.0]))))
    assert np.isnan(J[0]) and J[1] == pytest.approx(4.0 / 25.0)
    assert np.isnan(np.asarray(jx.jacobian(jx.numpy.arctan2)(z, np.array([0.0, 4.0])))[0, 0])


def test_kink_power_at_zero_base_and_zero_exponent(jx):
    """d(a**b)/da = 0 where b == 0 (no 0 * inf); d(a**b)/db = 0 where a == 0 (JAX replaces log 0 by log 1)."""
    a, b = np.array([0.0, 0.0, 2.0]), np.array([0.0, 2.0, 0.0])
    Ja, Jb = (np.diag(_all_methods(jt.power, a, b, argnums=k)) for k in (0, 1))
    assert_close(Ja, [0.0, 0.0, 0.0])
    assert_close(Jb, [0.0, 0.0, math.log(2.0)])
    assert_close(Jb, np.diag(jx.jacobian(jx.numpy.power, argnums=1)(a, b)))
    np.testing.assert_array_equal(np.diag(np.asarray(jt.jacobian(lambda v: v ** 0)(a))), [0.0, 0.0, 0.0])


def test_kink_nan_to_num_passes_finite_entries_only(jx):
    x = np.array([np.nan, np.inf, -np.inf, 1.5])
    y = jt.nan_to_num(x, nan=-1.0, posinf=7.0)
    np.testing.assert_array_equal(y, np.nan_to_num(x, nan=-1.0, posinf=7.0))
    for m in METHODS:
        J = np.asarray(jt.jacobian(lambda v: jt.nan_to_num(v, nan=-1.0, posinf=7.0), method=m)(x))
        np.testing.assert_array_equal(J, np.diag([0.0, 0.0, 0.0, 1.0]))
    assert_close(np.asarray(jt.jacobian(jt.nan_to_num)(x)), jx.jacobian(jx.numpy.nan_to_num)(x))


def test_kink_entr_at_zero_and_below(jx):
    """entr' = -(1 + log x): +inf at 0 (JAX's rule); 0 for x < 0, where entr is the constant -inf (JAX: NaN)."""
    x = np.array([0.0, -1.0, 0.5])
    np.testing.assert_array_equal(jsp.entr(x), [0.0, -np.inf, 0.5 * math.log(2.0)])
    d = np.diag(np.asarray(jt.jacobian(jsp.entr)(x)))
    np.testing.assert_array_equal(d[:2], [np.inf, 0.0])
    assert d[2] == pytest.approx(-(1.0 + math.log(0.5)))
    dj = np.diag(jx.jacobian(jx.scipy.special.entr)(x))
    assert_close(d[[0, 2]], dj[[0, 2]])


def test_kink_xlogy_at_zero(jx):
    """xlogy(0, y) = 0 for every y (also y = 0); d/dx = log(y), d/dy = x / y (JAX's rule)."""
    x, y = np.array([0.0, 0.0, 2.0]), np.array([0.0, 3.0, 4.0])
    np.testing.assert_array_equal(jsp.xlogy(x, y), [0.0, 0.0, 2.0 * math.log(4.0)])
    Jx, Jy = jt.jacobian(jsp.xlogy, argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(np.diag(Jx)[1:], np.log(y[1:]))
    assert np.diag(Jx)[0] == -np.inf
    assert_close(np.diag(Jy)[1:], [0.0, 0.5])
    np.testing.assert_array_equal(jsp.xlog1py(np.array([0.0, 1.0]), np.array([-1.0, 1.0])), [0.0, math.log(2.0)])


def test_sinc_derivatives_of_every_order(jx):
    """sinc is smooth at 0: derivatives of order 1..4 against mpmath (or JAX's Maclaurin rule at 0)."""
    mpmath = pytest.importorskip("mpmath")
    x = np.array([0.0, 1e-3, 0.3, -0.7, 1.0, 2.5, -4.2])
    for k in range(1, 5):
        want = [float(mpmath.diff(lambda t: mpmath.sinc(mpmath.pi * t), mpmath.mpf(v), k)) for v in x]
        assert_close(jt.sinc(x, order=k), want, tol=1e-12, what=f"order {k}")
    H = jt.hessian(lambda v: jt.sum(np.sinc(v)))(np.array([0.0]))
    assert_close(H, [[-math.pi ** 2 / 3]])
    assert_close(H, jx.hessian(lambda v: jx.numpy.sum(jx.numpy.sinc(v)))(np.array([0.0])))


# ---- numpy dispatch, methods and operators on traced values ---------------------------------------
FAMILY = sorted({p.name for m in (E, S) for n in m.__all__ if isinstance(p := getattr(m, n), Primitive)})


def _recorded(call, args):
    """Name of the primitive that ``call`` records on traced array arguments (a function of them)."""
    arrays = [k for k, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    seen = {}

    def f(*vals):
        full = list(args)
        for k, v in zip(arrays, vals):
            full[k] = v
        out = call(*full)
        assert type(out) is Tracer, f"{call} returned {type(out).__name__}, not a traced value"
        seen["name"] = out.prim.name
        return jt.sum(out)

    jt.grad(f, argnums=tuple(range(len(arrays))))(*[args[k] for k in arrays])
    return seen["name"]


def _numpy_callable(spec):
    if not isinstance(spec, str):
        return spec
    if hasattr(np, spec):
        return getattr(np, spec)
    scipy_special = pytest.importorskip("scipy.special")
    return getattr(scipy_special, spec)


@pytest.mark.parametrize("name", FAMILY)
def test_numpy_names_and_methods_record_the_primitive(name):
    prim = jt.registry[name]
    rng = np.random.default_rng(0)
    for _ in range(20):  # a case with a traced (float array) argument
        args, kwargs = prim.generate(rng)
        if any(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in args):
            break
    for spec in prim.numpy:
        fn = _numpy_callable(spec)
        assert _recorded(lambda *a: fn(*a, **kwargs), args) == name, spec
    for m in prim.methods:
        assert _recorded(lambda x, *rest: getattr(x, m)(*rest, **kwargs), args) == name, m


def test_operators_and_aliases_record_the_primitives():
    x, y = np.array([0.5, 1.5]), np.array([2.0, -1.0])
    assert _recorded(lambda v: abs(v), (x,)) == "abs"
    assert _recorded(lambda v, w: v ** w, (x, y)) == "power"
    assert _recorded(lambda w: 2.0 ** w, (y,)) == "power"
    assert _recorded(lambda w: x ** w, (y,)) == "power"  # an ndarray on the left: np.power via the ufunc protocol
    assert _recorded(lambda v: v ** 2, (x,)) == "power"
    assert _recorded(lambda v: v.round(1), (x,)) == "round"
    assert _recorded(lambda v: v.clip(min=0.0, max=1.0), (x,)) == "clip"
    assert _recorded(lambda v: np.mod(v, 0.7), (x,)) == "remainder"
    assert _recorded(lambda v: np.true_divide(v, 3.0), (x,)) == "divide"
    assert _recorded(lambda v: np.float_power(v, 3.0), (x,)) == "power"
    assert _recorded(lambda v: np.radians(v), (x,)) == "deg2rad"
    assert _recorded(lambda v: np.degrees(v), (x,)) == "rad2deg"
    for alias, prim in (("absolute", "abs"), ("mod", "remainder"), ("true_divide", "divide"),
                        ("float_power", "power")):
        assert getattr(jt, alias) is jt.registry[prim]
    assert jsp.psi is jsp.digamma and jsp.expit is jt.sigmoid and jsp.erf is jt.erf


def test_plain_numpy_program_differentiates():
    """A function written with numpy (and scipy.special) calls and operators: its value is numpy's own, and
    jt.grad, jt.jacobian (three methods) and jt.hessian agree with central differences of that numpy code."""
    sp = pytest.importorskip("scipy.special")

    def f(x, y):
        return (np.clip(x, -1, 1) * abs(x) + np.abs(x) ** y + 2.0 ** x + np.where(x > 0, np.sin(x), np.cos(y))
                + x.clip(-0.5, 0.5) + np.round(x) + np.sinc(x) + np.maximum(x, y) + np.hypot(x, y)
                + np.arctan2(x, y) + np.logaddexp(x, y) + np.float_power(y, x) + np.true_divide(x, y) + np.mod(x, y)
                + np.square(np.tanh(x)) + np.fmax(x, 0.1) + sp.expit(x) + sp.erf(y) + sp.gammaln(y)
                + sp.xlogy(x, y) + np.log1p(np.exp(-np.abs(x))))

    def loss(x, y):
        return (f(x, y) * np.arange(1.0, 4.0)).sum()

    x, y = np.array([0.3, -1.2, 2.0]), np.array([1.5, 0.7, 2.2])
    assert_close(jt.jacobian(f, argnums=0)(x, y).shape, (3, 3))
    assert np.asarray(f(x, y)).dtype == np.float64  # numpy itself evaluates the same code
    fd = [finite_difference_jacobian(lambda v: f(v, y), x), finite_difference_jacobian(lambda v: f(x, v), y)]
    for m in METHODS:
        J = jt.jacobian(f, argnums=(0, 1), method=m)(x, y)
        for k in (0, 1):
            assert_close(J[k], fd[k], tol=1e-7, what=f"jacobian {m} arg {k}")
    g = jt.grad(loss, argnums=(0, 1))(x, y)
    assert_close(g[0], np.arange(1.0, 4.0) @ fd[0], tol=1e-7)
    assert_close(g[1], np.arange(1.0, 4.0) @ fd[1], tol=1e-7)
    H = jt.hessian(loss, argnums=0)(x, y)
    assert_close(H, finite_difference_jacobian(lambda v: jt.grad(loss)(v, y), x), tol=1e-6)
    assert_close(H, H.T, tol=1e-12)


# ---- bad input -----------------------------------------------------------------------------------
def test_clear_errors():
    x = np.ones((2, 3))
    with pytest.raises(jt.NotDifferentiableError, match=r"where: the one-argument form.*np.nonzero"):
        jt.grad(lambda v: jt.sum(np.where(v)))(x)
    with pytest.raises(jt.ShapeError, match=r"clip: a has shape \(2, 3\) and a_min has shape \(2,\)"):
        jt.clip(x, np.zeros(2), 1.0)
    with pytest.raises(ValueError, match="clip: both a_min and its alias min"):
        jt.clip(x, 0.0, a_max=1.0, min=0.0)
    with pytest.raises(jt.ShapeError, match=r"maximum: a has shape \(2, 3\) and b has shape \(2,\).*broadcast"):
        jt.maximum(x, np.ones(2))
    with pytest.raises(jt.ShapeError, match=r"where: condition has shape \(4,\)"):
        jt.where(np.ones(4, dtype=bool), x, 0.0)
    with pytest.raises(jt.DTypeError, match="where: condition has dtype <U1"):
        jt.where(np.array(["a", "b", "c"]), x, 0.0)
    with pytest.raises(ValueError, match="round: decimals must be an int"):
        jt.round(x, 1.5)
    with pytest.raises(ValueError, match="nan_to_num: copy=False"):
        jt.nan_to_num(x, copy=False)
    with pytest.raises(ValueError, match="nan_to_num: nan must be a real scalar"):
        jt.nan_to_num(x, nan=np.ones(2))
    with pytest.raises(ValueError, match="polygamma: n must be a non-negative integer"):
        jsp.polygamma(-1, x)
    with pytest.raises(ValueError, match="polygamma: n must be a non-negative integer"):
        jsp.polygamma(np.array([0, 1]), x)
    with pytest.raises(ValueError, match="sinc: order must be a non-negative int"):
        jt.sinc(x, order=1.5)


# ---- scipy is optional -----------------------------------------------------------------------------
def test_importing_jactensor_does_not_import_scipy():
    code = "import sys, jactensor, jactensor.special; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_scipy_the_fallbacks_agree_with_scipy(monkeypatch):
    """erf, erfc, gammaln, digamma and polygamma through the primitives with scipy made unimportable,
    against scipy's own values (and their derivatives, which never need scipy)."""
    sp = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(0.05, 30.0, 40), -rng.integers(0, 20, 20) - rng.uniform(0.05, 0.95, 20),
                        [0.5, 1.0, 2.0, 1e-6, -1e-6]])
    want = {"erf": sp.erf(x), "erfc": sp.erfc(x), "gammaln": sp.gammaln(x), "digamma": sp.psi(x),
            "polygamma": [sp.polygamma(n, x) for n in range(4)]}
    dwant = sp.polygamma(1, x)
    caches = [f.cache for f in S.SCIPY_BACKED.values()]
    try:
        for c in caches:
            c.clear()
        monkeypatch.setitem(sys.modules, "scipy.special", None)  # `import scipy.special` now fails
        got = {"erf": jt.erf(x), "erfc": jsp.erfc(x), "gammaln": jsp.gammaln(x), "digamma": jsp.digamma(x),
               "polygamma": [jsp.polygamma(n, x) for n in range(4)]}
        dgot = np.diag(np.asarray(jt.jacobian(jsp.digamma)(x)))
        assert all(f.cache[0] is f.fallback for f in S.SCIPY_BACKED.values() if f.cache)
    finally:
        for c in caches:
            c.clear()  # the next call resolves scipy again
    for k in ("erf", "erfc", "gammaln", "digamma"):
        assert_close(got[k], want[k], tol=1e-12, what=k)
    for n in range(4):
        assert_close(got["polygamma"][n] / np.abs(want["polygamma"][n]), np.sign(want["polygamma"][n]), tol=1e-12,
                     what=f"polygamma {n}")
    assert_close(dgot / np.abs(dwant), np.sign(dwant), tol=1e-12)
    poles = np.array([0.0, -1.0, -2.0, np.inf])
    np.testing.assert_array_equal(S.polygamma_series(0, poles), sp.psi(poles))
    np.testing.assert_array_equal(S.polygamma_series(1, poles[:3]), sp.polygamma(1, poles[:3]))
