"""Helpers shared by the op test files: comparison with JAX at float64 and hypothesis strategies for shapes
and values. (Not a test module: its name does not start with test_.)"""
import numpy as np
from hypothesis import strategies as st

import jactensor as jt
from jactensor.ops._util import random_array

TOL = 1e-10


def assert_close(got, want, tol=TOL, what=""):
    """Equal within ``tol`` relative to the scale of ``want`` (NaN matches NaN)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} against {want.shape}"
    fin = np.isfinite(want)
    scale = max(1.0, float(np.max(np.abs(want[fin])))) if fin.any() else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, equal_nan=True, err_msg=what)


def _tree_close(got, want, what, tol=TOL):
    if isinstance(want, (tuple, list)):
        assert len(got) == len(want), what
        for k, (g, w) in enumerate(zip(got, want)):
            _tree_close(g, w, f"{what}[{k}]", tol)
    else:
        assert_close(got, want, tol, what)


def against_jax(jax, f_jt, f_jax, args, tol=TOL, hessian=True):
    """f_jt and f_jax compute the same function of the arrays ``args``: compare the value, the Jacobian by
    chain/rev/fwd, and the gradient and Hessian (fwdrev and chain) of L = sum(c y + y^2 / 2)."""
    jnp = jax.numpy
    xs = [np.asarray(a, dtype=np.float64) for a in args]
    nums = tuple(range(len(xs)))
    y = f_jt(*xs)
    c = np.random.default_rng(np.size(y)).normal(size=np.shape(y))

    def loss_jax(*a):
        v = f_jax(*a)
        return jnp.sum(c * v + 0.5 * v * v)

    def loss_jt(*a):
        v = f_jt(*a)
        return jt.sum(c * v + 0.5 * v * v)

    def refs(*a):
        out = (f_jax(*a), jax.jacfwd(f_jax, argnums=nums)(*a), jax.grad(loss_jax, argnums=nums)(*a))
        return out + ((jax.hessian(loss_jax, argnums=nums)(*a),) if hessian else ())

    ref = jax.jit(refs)(*xs)
    assert_close(y, ref[0], tol, "value")
    for m in ("chain", "rev", "fwd"):
        _tree_close(jt.jacobian(f_jt, argnums=nums, method=m)(*xs), ref[1], f"jacobian ({m})", tol)
    _tree_close(jt.grad(loss_jt, argnums=nums)(*xs), ref[2], "grad", tol)
    if hessian:
        for m in ("fwdrev", "chain"):
            _tree_close(jt.hessian(loss_jt, argnums=nums, method=m)(*xs), ref[3], f"hessian ({m})", tol)


# ---- hypothesis strategies ----------------------------------------------------------------------------
@st.composite
def shapes(draw, min_dims=0, max_dims=3, min_side=0, max_side=3):
    return tuple(draw(st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims)))


@st.composite
def arrays(draw, shape, domain="real"):
    """Values from a drawn seed; a strided or Fortran-ordered view half of the time."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return random_array(rng, shape, domain, noncontiguous=draw(st.booleans()))
