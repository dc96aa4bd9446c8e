"""Differential test against JAX: every registered primitive that names a numpy function or ufunc is compared
with the jax.numpy / jax.numpy.linalg / jax.scipy.special function of the same name, at float64.

For each primitive, a few cases from its ``generate(rng)`` (its battery until it has one): the value, the
Jacobian by all three methods (chain, rev, fwd) against ``jax.jacrev``, and ``jt.grad`` of ``sum(f(x) * w)``
against ``jax.grad``, within 1e-10 relative. Elementwise ufuncs are also compared at special points (0, +-1,
ties between the two operands), where a derivative may be a convention: jactensor's are JAX's, except where a
table below records a documented difference. Primitives added later are picked up automatically; a small
table maps the few names whose signatures differ (and a few registered primitives without a numpy name).
"""
import numpy as np
import pytest

import jactensor as jt

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = pytest.importorskip("jax.numpy")
jsp = pytest.importorskip("jax.scipy.special")

CASES_PER_PRIMITIVE = 2
RTOL = 1e-10

# registered primitives whose jax twin has another name or signature (name -> function of jactensor's signature)
SIGNATURES = {
    "softmax": lambda x, axis=-1: jax.nn.softmax(x, axis=axis),
    "log_softmax": lambda x, axis=-1: jax.nn.log_softmax(x, axis=axis),
    "relu": lambda x: jax.nn.relu(x),
    "gelu": lambda x, approximate=True: jax.nn.gelu(x, approximate=approximate),
    "logsumexp": lambda x, axis=None, keepdims=False: jsp.logsumexp(x, axis=axis, keepdims=keepdims),
    "getitem": lambda x, idx: x[idx],
    "roll": lambda x, shift, axis=None: jnp.roll(x, shift, axis=axis),
    "repeat": lambda x, repeats, axis=None: jnp.repeat(x, repeats, axis=axis),
    "take_along_axis": lambda x, indices, axis: jnp.take_along_axis(x, indices, axis=axis),
    "clip": lambda a, a_min=None, a_max=None: jnp.clip(a, a_min, a_max),
}

# derivatives at a kink that jactensor documents differently from JAX: (name, point) -> why
DOCUMENTED_DIFFERENCES = {
    ("abs", 0.0): "jactensor documents |x|'(0) = 0 (PyTorch's sign(0)); JAX 0.10 takes 1",
    ("hypot", (0.0, 0.0)): "jactensor documents a zero derivative at the origin; JAX 0.10 gives 0.5 to each",
}


def _jax_twin(prim):
    if prim.name in SIGNATURES:
        return SIGNATURES[prim.name]
    for f in prim.numpy:
        if isinstance(f, str):
            name, homes = f, (jnp, jsp)
        else:
            name = getattr(f, "__name__", "")
            mod = getattr(f, "__module__", "") or ""
            homes = (jnp.linalg,) if "linalg" in mod else (jsp,) if "scipy.special" in mod else (jnp,)
        for home in homes:
            fn = getattr(home, name, None)
            if callable(fn):
                return fn
    return None


TWINS = {name: _jax_twin(p) for name, p in sorted(jt.registry.items())}
COMPARED = [name for name, fn in TWINS.items() if fn is not None]


def test_the_comparison_covers_the_numpy_names():
    """Every primitive that names a numpy function or ufunc has a jax twin here (or the table says why not)."""
    missing = [n for n, p in jt.registry.items() if p.numpy and TWINS[n] is None]
    assert not missing, f"no jax.numpy / jax.scipy.special function for: {missing}; add them to SIGNATURES"


# ---- helpers -----------------------------------------------------------------------------------------------
def _leaves(args):
    """Float arrays in args (nested lists/tuples): what is differentiated; everything else is a constant."""
    out = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out += _leaves(a)
        elif isinstance(a, np.ndarray) and a.dtype.kind == "f":
            out.append(a)
    return out


def _rebuild(args, leaves):
    it = iter(leaves)

    def go(a):
        if isinstance(a, (list, tuple)):
            return type(a)(go(x) for x in a)
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            return next(it)
        return a
    return tuple(go(a) for a in args)


def _close(got, want, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, jax {want.shape}"
    finite = np.isfinite(want)
    scale = max(1.0, float(np.max(np.abs(want[finite]))) if finite.any() else 1.0)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def _cases(prim):
    if prim.generate is not None:
        return [prim.generate(np.random.default_rng(seed)) for seed in range(CASES_PER_PRIMITIVE)]
    return list(prim.battery(np.random.default_rng(0), 2))[:CASES_PER_PRIMITIVE]


def _strip(kwargs):
    return {k: v for k, v in kwargs.items() if not k.startswith("fd_")}  # checker settings, not arguments


# ---- generated cases -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", COMPARED)
def test_value_jacobian_and_grad_match_jax(name):
    prim, twin = jt.registry[name], TWINS[name]
    for case, (args, kwargs) in enumerate(_cases(prim)):
        kwargs = _strip(kwargs)
        leaves = _leaves(args)
        where = f"{name} case {case}: shapes {[np.shape(a) for a in leaves]}, kwargs {kwargs}"
        value = prim(*args, **kwargs)
        _close(value, twin(*args, **kwargs), f"{where}: value")
        if not leaves:
            continue
        nums = tuple(range(len(leaves)))

        def f_jt(*ls):
            return prim(*_rebuild(args, ls), **kwargs)

        def f_jax(*ls):
            return twin(*_rebuild(args, ls), **kwargs)

        w = np.random.default_rng(case).normal(size=np.shape(value))
        # one compiled call for jax.jacrev and jax.grad: op-by-op JAX costs ~4x the CPU here
        J_jax, g_jax = jax.jit(lambda *ls: (jax.jacrev(f_jax, argnums=nums)(*ls),
                                            jax.grad(lambda *m: jnp.sum(f_jax(*m) * w), argnums=nums)(*ls)))(*leaves)
        for method in ("chain", "rev", "fwd"):
            J = jt.jacobian(f_jt, argnums=nums, method=method)(*leaves)
            for k in nums:
                _close(J[k], J_jax[k], f"{where}: jacobian {method} w.r.t. array {k}")
        g = jt.grad(lambda *ls: jt.sum(f_jt(*ls) * w), argnums=nums)(*leaves)
        for k in nums:
            _close(g[k], g_jax[k], f"{where}: grad w.r.t. array {k}")


# ---- special points of elementwise ufuncs ---------------------------------------------------------------------
POINTS = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
PAIRS = np.array([(a, b) for a in (-1.0, 0.0, 0.5, 1.0, 2.0) for b in (-1.0, 0.0, 0.5, 1.0, 2.0)])


def _ufunc_arity(prim):
    """Number of operands of the elementwise ufunc the primitive names (0 if none; matmul is a gufunc)."""
    for f in prim.numpy:
        u = getattr(np, f, None) if isinstance(f, str) else f
        if isinstance(u, np.ufunc) and u.signature is None:
            return u.nin
    return 0


UNARY = [n for n in COMPARED if _ufunc_arity(jt.registry[n]) == 1]
BINARY = [n for n in COMPARED if _ufunc_arity(jt.registry[n]) == 2]


@pytest.mark.parametrize("name", UNARY)
def test_unary_special_points_match_jax(name):
    prim, twin = jt.registry[name], TWINS[name]
    with np.errstate(all="ignore"):
        d_jax = np.asarray(jax.vmap(jax.grad(lambda x: twin(x)))(POINTS))
        v_jax = np.asarray(twin(POINTS))
        ok = np.isfinite(d_jax) & np.isfinite(v_jax)
        ok &= [(name, float(p)) not in DOCUMENTED_DIFFERENCES for p in POINTS]
        x = POINTS[ok]
        _close(prim(x), v_jax[ok], f"{name} at {x}: value")
        _close(jt.grad(lambda v: jt.sum(prim(v)))(x), d_jax[ok], f"{name} at {x}: derivative")
        _close(np.diagonal(jt.jacobian(prim, method="chain")(x)), d_jax[ok], f"{name} at {x}: jacobian")


@pytest.mark.parametrize("name", BINARY)
def test_binary_special_points_match_jax(name):
    """Ties (a == b), zeros and signs: maximum/minimum split a tie evenly, as JAX does."""
    prim, twin = jt.registry[name], TWINS[name]
    a, b = PAIRS[:, 0], PAIRS[:, 1]
    with np.errstate(all="ignore"):
        da, db = (np.asarray(d) for d in jax.vmap(jax.grad(lambda x, y: twin(x, y), argnums=(0, 1)))(a, b))
        v = np.asarray(twin(a, b))
        ok = np.isfinite(da) & np.isfinite(db) & np.isfinite(v)
        ok &= [(name, (float(p), float(q))) not in DOCUMENTED_DIFFERENCES for p, q in PAIRS]
        ga, gb = jt.grad(lambda x, y: jt.sum(prim(x, y)), argnums=(0, 1))(a[ok], b[ok])
        _close(prim(a[ok], b[ok]), v[ok], f"{name}: value at {PAIRS[ok].tolist()}")
        _close(ga, da[ok], f"{name}: d/da at {PAIRS[ok].tolist()}")
        _close(gb, db[ok], f"{name}: d/db at {PAIRS[ok].tolist()}")
