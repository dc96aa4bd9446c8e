"""Every registered primitive, automatically: Jacobian vs finite differences, VJP and JVP vs the Jacobian."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jactensor as jt
from jactensor.core import Primitive, Registry, defprimitive, registry, unary_jacobian
from jactensor.testing import check

NAMES = sorted(registry)
REQUIRED = ["matmul", "einsum", "add", "subtract", "multiply", "divide", "negative", "exp", "log", "sqrt", "power",
            "tanh", "sigmoid", "relu", "gelu", "softmax", "log_softmax", "sum", "mean", "max", "transpose", "reshape",
            "concatenate", "getitem", "broadcast_to", "layer_norm", "cross_entropy", "mse"]


def test_every_required_primitive_is_registered():
    missing = [n for n in REQUIRED if n not in registry]
    assert not missing


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_battery_three_way(name, n):
    prim = registry[name]
    cases = prim.battery(np.random.default_rng(n), n)
    assert cases, f"{name} has an empty battery"
    for args, kwargs in cases:
        report = check(prim, *args, **kwargs)
        assert report.ok, str(report)


@pytest.mark.parametrize("name", NAMES)
def test_battery_covers_several_ranks(name):
    """The battery exercises more than one input rank (0-d/1-d/2-d/batched/broadcast)."""
    cases = registry[name].battery(np.random.default_rng(0), 2)
    def arrays(args):
        for a in args:
            if isinstance(a, list):
                yield from arrays(a)
            elif isinstance(a, np.ndarray):
                yield a
    ranks = {tuple(a.ndim for a in arrays(args)) for args, _ in cases}
    assert len(ranks) >= 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(name=st.sampled_from(NAMES), n=st.integers(1, 4), seed=st.integers(0, 2**16), case=st.integers(0, 20))
def test_hypothesis_shapes_and_values(name, n, seed, case):
    prim = registry[name]
    cases = prim.battery(np.random.default_rng(seed), n)
    args, kwargs = cases[case % len(cases)]
    report = check(prim, *args, seed=seed, **kwargs)
    assert report.ok, str(report)


@pytest.mark.parametrize("name", NAMES)
def test_record_is_complete(name):
    prim = registry[name]
    assert prim.formula and "/d" in prim.formula
    assert prim.__doc__ and prim.formula in prim.__doc__


def _broken(name, jac=None, vjp=None, jvp=None):
    """A copy of exp with one rule deliberately wrong (never registered)."""
    ok_d = lambda ans, x: ans  # noqa: E731
    return Primitive(
        name, np.exp, bind=lambda x: ((x,), {}), formula="dY/dX = broken", battery=None,
        jac=[jac or (lambda ans, x: unary_jacobian(ok_d(ans, x), np.shape(ans)))],
        vjp=[vjp or (lambda g, ans, x: g * ans)],
        jvp=[jvp or (lambda t, ans, x: t * ans)])


@pytest.mark.parametrize("which", ["jac", "vjp", "jvp"])
def test_checker_catches_a_wrong_rule(which, rng):
    x = rng.normal(size=(3,))
    good = _broken("exp_ok")
    assert check(good, x).ok
    wrong = {"jac": lambda ans, x: unary_jacobian(ans * 1.001, np.shape(ans)),
             "vjp": lambda g, ans, x: g * ans * 1.001,
             "jvp": lambda t, ans, x: t * np.exp(x + 1e-3)}[which]
    report = check(_broken("exp_bad", **{which: wrong}), x)
    assert not report.ok
    failed = {r["check"] for r in report.failures()}
    expected = {"jac": "jacobian vs finite diff", "vjp": "vjp vs jacobian", "jvp": "jvp vs jacobian"}[which]
    assert expected in failed
    assert "FAIL" in str(report)


def test_checker_catches_a_wrong_broadcast_rule(rng):
    """A rule that forgets to sum over a broadcast axis is caught (shape or value)."""
    bad = Primitive("mul_bad", np.multiply, bind=lambda a, b: ((a, b), {}), formula="dZ/dA = broken", battery=None,
                    jac=registry["multiply"].jac_rules, jvp=registry["multiply"].jvp_rules,
                    vjp=[lambda g, ans, a, b: g * b, lambda g, ans, a, b: g * a])
    report = check(bad, rng.normal(size=(3, 4)), rng.normal(size=(4,)))
    assert not report.ok


def test_registry_refuses_duplicates_and_lists_names():
    reg = Registry()
    p = registry["exp"]
    reg.add(p)
    with pytest.raises(ValueError, match="already registered"):
        reg.add(p)
    with pytest.raises(KeyError, match="registered: .*exp"):
        registry["no_such_op"]
    with pytest.raises(ValueError, match="already registered"):
        defprimitive("exp", np.exp, bind=None, jac=[], vjp=[], jvp=[], formula="", battery=None)


def test_forward_matches_numpy(rng):
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    np.testing.assert_array_equal(jt.matmul(x, y), x @ y)
    np.testing.assert_array_equal(jt.sum(x, axis=0), x.sum(0))
    np.testing.assert_array_equal(jt.transpose(x), x.T)
    np.testing.assert_array_equal(jt.getitem(x, (slice(None), 1)), x[:, 1])
    np.testing.assert_allclose(jt.einsum("ij,jk->ik", x, y), x @ y)
    assert isinstance(jt.exp(x), np.ndarray)


def test_jacobian_shapes_out_plus_in(rng):
    a, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 5))
    Ja, Jb = jt.matmul.jacobian(a, b)
    assert Ja.shape == (2, 3, 5, 2, 3, 4) and Jb.shape == (2, 3, 5, 4, 5)
    assert Ja.out_shape == (2, 3, 5) and Ja.in_shape == (2, 3, 4)
    assert Ja.as_matrix().shape == (30, 24)
    (J,) = jt.add.jacobian(a, 2.0)  # a Python scalar is a constant: one Jacobian
    assert J.shape == a.shape * 2


def test_structured_storage_is_smaller_than_dense(rng):
    (J,) = jt.softmax.jacobian(rng.normal(size=(8, 8)), axis=-1)
    assert J.stored_bytes == 8 * 8 ** 3 and J.nbytes == 8 * 8 ** 4
    (Je,) = jt.exp.jacobian(rng.normal(size=(8, 8)))
    assert Je.stored_bytes == 8 * 64
