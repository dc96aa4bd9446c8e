"""Every registered primitive, automatically: Jacobian vs finite differences, VJP and JVP vs the Jacobian.

Three sources of cases: each primitive's fixed ``battery`` (edge cases it names), its ``generate(rng)``
(random shapes, axes and values, drawn by hypothesis), and the explicit cases below for what
batteries tend to miss (negative and mixed indices, the kinks at their documented convention).
"""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jactensor as jt
from jactensor.core import Primitive, Registry, defprimitive, registry, unary_jacobian
from jactensor.testing import check

NAMES = sorted(registry)
GENERATED = [n for n in NAMES if registry[n].generate is not None]
REQUIRED = ["matmul", "einsum", "add", "subtract", "multiply", "divide", "negative", "exp", "log", "sqrt", "power",
            "tanh", "sigmoid", "relu", "gelu", "softmax", "log_softmax", "sum", "mean", "max", "transpose", "reshape",
            "concatenate", "getitem", "broadcast_to", "layer_norm", "cross_entropy", "mse"]


def test_every_required_primitive_is_registered():
    missing = [n for n in REQUIRED if n not in registry]
    assert not missing


def _battery(name, n):
    return registry[name].battery(np.random.default_rng(n), n)


# one test per battery case, so that one failing case does not hide the others
BATTERY = [(name, n, k) for name in NAMES for n in (1, 2, 3) for k in range(len(_battery(name, n)))]


def test_every_battery_has_cases():
    empty = [name for name in NAMES if not _battery(name, 2)]
    assert not empty, f"empty batteries: {empty}"


@pytest.mark.parametrize("name, n, k", BATTERY, ids=[f"{name}-{n}-{k}" for name, n, k in BATTERY])
def test_battery_three_way(name, n, k):
    args, kwargs = _battery(name, n)[k]
    report = check(registry[name], *args, **kwargs)
    assert report.ok, f"{name} battery(rng({n}), {n})[{k}]: args {args!r}, kwargs {kwargs!r}\n{report}"


def _arrays(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _arrays(a)
        elif isinstance(a, np.ndarray):
            yield a


@pytest.mark.parametrize("name", NAMES)
def test_battery_covers_several_ranks(name):
    """The battery exercises more than one input rank (0-d/1-d/2-d/batched/broadcast)."""
    cases = registry[name].battery(np.random.default_rng(0), 2)
    ranks = {tuple(a.ndim for a in _arrays(args)) for args, _ in cases}
    assert len(ranks) >= 2


# ---- random cases from each primitive's generator ------------------------------------------------------
def test_every_primitive_has_a_generator():
    """Every primitive draws random cases for the property test below (``generate(rng)``)."""
    missing = [n for n in NAMES if registry[n].generate is None]
    assert not missing, f"{len(missing)} primitive(s) without generate(rng): {', '.join(missing)}"


def _generated_case(prim, seed):
    case = prim.generate(np.random.default_rng(seed))
    assert isinstance(case, tuple) and len(case) == 2 and isinstance(case[1], dict), \
        f"{prim.name}.generate must return one (args, kwargs) pair; got {case!r}"
    return case


@pytest.mark.parametrize("name", GENERATED)
@settings(max_examples=24, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_generated_cases_three_way(name, seed):
    prim = registry[name]
    args, kwargs = _generated_case(prim, seed)
    report = check(prim, *args, seed=seed % 1000, **kwargs)
    assert report.ok, f"{name}.generate(np.random.default_rng({seed})) -> args {args!r}, kwargs {kwargs!r}\n{report}"


@pytest.mark.parametrize("name", GENERATED)
def test_generator_varies_shapes(name):
    """A generator that always draws the same shapes is a battery in disguise."""
    prim = registry[name]
    shapes = set()
    for seed in range(30):
        args, kwargs = _generated_case(prim, seed)
        shapes.add((tuple(a.shape for a in _arrays(args)), repr(sorted(kwargs.items()))))
    assert len(shapes) >= 3, f"{name}.generate drew only {shapes}"


# ---- the index formula against the Jacobian's rank -----------------------------------------------------
_SEGMENT = re.compile(r"d(\w+)(?:\[([^\]]*)\])?\s*/\s*d(\w+)(?:\[([^\]]*)\])?")


def _indices(text):
    """(explicit index count, variadic?) of "i..", "..,i,j", "n,c", "" (no brackets: a scalar)."""
    if text is None or not text.strip():
        return 0, False
    entries = [e.strip() for e in text.split(",")]
    return sum(".." not in e for e in entries), any(".." in e for e in entries)


def _fits(count, variadic, ranks):
    return any((r >= count) if variadic else (r == count) for r in ranks)


def _cases(prim):
    cases = list(prim.battery(np.random.default_rng(0), 2))
    if prim.generate is not None:
        cases += [prim.generate(np.random.default_rng(s)) for s in range(10)]
    return cases


@pytest.mark.parametrize("name", NAMES)
def test_formula_indices_fit_the_jacobian_rank(name):
    """The formula's dOUT[...]/dIN[...] index lists are consistent with the ranks the primitive computes:
    a fixed list (``[n,c]``) matches the output/input rank of some case; a variadic one (``[k..,j]``) needs
    at most that many axes; one denominator per array argument, or one that stands for all of them."""
    prim = registry[name]
    assert prim.formula and "/d" in prim.formula
    segments = _SEGMENT.findall(prim.formula)
    assert segments, f"{name}: no dY[..]/dX[..] in its formula {prim.formula!r}"
    out_ranks, in_ranks = set(), {}
    for args, kwargs in _cases(prim):
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("fd_")}
        inputs, params = prim._bind(args, kwargs)
        out_ranks.add(np.ndim(prim.forward(inputs, params)))
        for j, k in enumerate(prim.array_argnums(inputs)):
            in_ranks.setdefault(j, set()).add(np.ndim(inputs[k]))
    denominators = list(dict.fromkeys(s[2] for s in segments))
    n_arrays = max(len(in_ranks), 1)
    assert len(denominators) in (1, n_arrays), \
        f"{name}: the formula differentiates w.r.t. {denominators} but the primitive has {n_arrays} array argument(s)"
    for num, out_idx, den, in_idx in segments:
        count, var = _indices(out_idx)
        assert _fits(count, var, out_ranks), \
            f"{name}: d{num}[{out_idx}] has {count} index(es) but the output ranks are {sorted(out_ranks)}"
        which = [denominators.index(den)] if len(denominators) > 1 else list(in_ranks)
        for j in which:
            count, var = _indices(in_idx)
            assert _fits(count, var, in_ranks.get(j, {0})), \
                f"{name}: d{den}[{in_idx}] has {count} index(es) but that input's ranks are {sorted(in_ranks[j])}"


def test_formula_check_can_fail():
    """The consistency rule above rejects a formula with the wrong number of indices."""
    assert not _fits(*_indices("i,j"), {1})
    assert _fits(*_indices("k..,j"), {1, 3}) and not _fits(*_indices("k..,i,j"), {1})
    assert _SEGMENT.findall("dY[i,j]/dA[r,s] = delta(i,r) B[s,j];  dL/dZ[n,c] = x") == \
        [("Y", "i,j", "A", "r,s"), ("L", "", "Z", "n,c")]


# ---- cases batteries miss: negative and mixed indices ------------------------------------------------------
_X = np.random.default_rng(5).normal(size=(5, 4))
INDEX_CASES = [-1, (-1, -2), (Ellipsis, -1), (slice(None), -3), np.array([-1, 0, -5, -1]),
               (slice(None), np.array([-1, 0, -1])), (np.array([-1, 1]), -1), (np.array([-2, 0]), slice(-2, None)),
               slice(-3, None), slice(None, None, -2), slice(-1, -4, -1), (None, -2, slice(None, None, -1)),
               (Ellipsis, None, -4), (-5, np.array([3, -4]))]


@pytest.mark.parametrize("idx", INDEX_CASES, ids=repr)
def test_getitem_negative_and_mixed_indices(idx):
    report = check(jt.getitem, _X, idx)
    assert report.ok, str(report)
    np.testing.assert_array_equal(jt.getitem(_X, idx), _X[idx])
    # the VJP puts each cotangent entry where numpy's indexing reads it from (np.add.at is the reference)
    g = np.random.default_rng(1).normal(size=np.shape(_X[idx]))
    expected = np.zeros_like(_X)
    np.add.at(expected, idx, g)
    np.testing.assert_array_equal(jt.getitem.vjp(g, _X, idx)[0], expected)
    np.testing.assert_array_equal(jt.grad(lambda x: jt.sum(x[idx] * g))(_X), expected)


@pytest.mark.parametrize("idx", INDEX_CASES, ids=repr)
def test_scatter_add_negative_and_mixed_indices(idx):
    g = np.random.default_rng(2).normal(size=np.shape(_X[idx]))
    expected = np.zeros(_X.shape)
    np.add.at(expected, idx, g)
    np.testing.assert_array_equal(jt.scatter_add(g, idx, _X.shape), expected)
    report = check(jt.scatter_add, g, idx, _X.shape)
    assert report.ok, str(report)


# ---- kinks: the derivative the docs define, on every route ---------------------------------------------------
def _routes(f, x):
    """d sum(f(x) * w) / dx by every route, for a random w: the primitive Jacobian is not used here."""
    w = np.random.default_rng(3).normal(size=np.shape(f(x)))
    out = {"grad": jt.grad(lambda v: jt.sum(f(v) * w))(x)}
    for m in ("chain", "rev", "fwd"):
        J = jt.jacobian(f, method=m)(x)
        out[f"jacobian {m}"] = np.tensordot(w, J, axes=np.ndim(w))
    _, fn = jt.vjp(f, x)
    out["vjp"] = fn(w)[0]
    return out, w


KINKS = [  # (name, f, x, d f_i / d x_j by the documented convention, as a dense matrix)
    ("relu'(0) = 0", jt.relu, np.array([-1.0, 0.0, 2.0, 0.0, -0.0]), np.diag([0.0, 0.0, 1.0, 0.0, 0.0])),
    ("max: tied maxima share equally", lambda x: jt.max(x), np.array([1.0, 3.0, 3.0, 0.0]),
     np.array([0.0, 0.5, 0.5, 0.0])),
    ("max along an axis, three-way tie", lambda x: jt.max(x, axis=-1), np.array([[2.0, 2.0, 2.0], [1.0, 4.0, 0.0]]),
     np.array([[[1 / 3, 1 / 3, 1 / 3], [0, 0, 0]], [[0, 0, 0], [0, 1, 0]]])),
]


@pytest.mark.parametrize("name, f, x, expected", KINKS, ids=[k[0] for k in KINKS])
def test_kinks_follow_the_documented_convention(name, f, x, expected):
    out_shape = np.shape(f(x))
    expected = np.reshape(expected, out_shape + x.shape)
    routes, w = _routes(f, x)
    for route, got in routes.items():
        np.testing.assert_allclose(got, np.tensordot(w, expected, axes=len(out_shape)), atol=1e-15, err_msg=route)
    for m in ("chain", "rev", "fwd"):
        np.testing.assert_allclose(jt.jacobian(f, method=m)(x), expected, atol=1e-15, err_msg=m)
    t = np.random.default_rng(4).normal(size=x.shape)
    np.testing.assert_allclose(jt.jvp(f, (x,), (t,))[1], np.tensordot(expected, t, axes=x.ndim), atol=1e-15)


def test_kink_conventions_on_the_primitive_rules():
    x = np.array([-1.0, 0.0, 2.0])
    (J,) = jt.relu.jacobian(x)
    np.testing.assert_array_equal(np.asarray(J), np.diag([0.0, 0.0, 1.0]))
    np.testing.assert_array_equal(jt.relu.vjp(np.ones(3), x)[0], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(jt.relu.jvp(np.ones(3), x), [0.0, 0.0, 1.0])
    y = np.array([1.0, 3.0, 3.0])
    np.testing.assert_array_equal(np.asarray(jt.max.jacobian(y)[0]), [0.0, 0.5, 0.5])
    np.testing.assert_array_equal(jt.max.vjp(np.array(2.0), y)[0], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(jt.max.jvp(np.array([5.0, 1.0, 3.0]), y), 2.0)


# ---- the checker itself --------------------------------------------------------------------------------------
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


def test_checker_catches_a_batched_rule_that_ignores_the_batch_axis(rng):
    """Right for one cotangent, wrong for a batch of them (the rules receive batch + out shapes)."""
    bad = _broken("exp_batch", vjp=lambda g, ans, x: (g if g.ndim == ans.ndim else g.sum(0)) * ans)
    report = check(bad, rng.normal(size=3))
    assert not report.ok and {r["check"] for r in report.failures()} == {"batched vjp"}


def test_checker_catches_a_wrong_forward_value(rng):
    """A Jacobian rule that is right for a different forward (exp(x) + x) fails against finite differences."""
    bad = Primitive("exp_plus", lambda x: np.exp(x) + x, bind=lambda x: ((x,), {}), formula="dY/dX", battery=None,
                    jac=[lambda ans, x: unary_jacobian(np.exp(x), np.shape(ans))],
                    vjp=[lambda g, ans, x: g * np.exp(x)], jvp=[lambda t, ans, x: t * np.exp(x)])
    assert not check(bad, rng.normal(size=3)).ok


def test_checker_catches_a_structured_jacobian_whose_methods_disagree(rng, monkeypatch):
    """The checker also contracts the structured Jacobian itself (J.vjp, J.jvp) against its dense form."""
    x = rng.normal(size=(3, 2))
    assert check(jt.exp, x).ok
    monkeypatch.setattr(jt.Jacobian, "jvp", lambda self, t: self.vjp(t))  # J^T t instead of J t
    y = rng.normal(size=(3,))
    report = check(jt.matmul, rng.normal(size=(2, 3)), y)
    assert not report.ok and any("Jacobian.jvp" in r["check"] for r in report.failures())


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
    assert J.stored_bytes <= 8 * 8 ** 3 and J.nbytes == 8 * 8 ** 4
    (Je,) = jt.exp.jacobian(rng.normal(size=(8, 8)))
    assert Je.stored_bytes == 8 * 64
