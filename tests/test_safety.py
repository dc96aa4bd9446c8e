"""No silent wrong answers: what used to lose a derivative, hide a NaN, drop a mask or alias the caller's
arrays now raises or copies.

- A traced value turned into a Python/numpy scalar (float(x), math.exp(x), x.item(), an index or a size,
  np.asarray(x)) raises ConcretizationError naming the function being differentiated, why, and what to
  use instead; comparisons and Python control flow on them keep working.
- With config.check_nan on, a NaN/Inf produced anywhere (a forward value inside a traced function, a
  cotangent in the reverse pass, a tangent in the forward pass) raises NonFiniteError naming the primitive
  and its step in the program.
- Masked arrays are refused (their mask would be dropped).
- Results never share memory with the caller's arrays or with each other.
"""
import math

import numpy as np
import pytest

import jactensor as jt


def _named(name, f):
    f.__name__ = name
    return f


# ---- concretization -----------------------------------------------------------------------------------
V = np.array([2.0, 1.0, 0.5])
CONCRETE = [  # (name of the traced function, f: scalar output, argument)
    _named("times_float_of_itself", lambda x: x * float(x)),          # returned 3 for d(x^2)/dx at 3: true 6
    _named("math_exp", lambda x: math.exp(x) * x),
    _named("math_sin", lambda x: x + math.sin(x)),
    _named("numpy_float64", lambda x: np.float64(x) * x),
    _named("float_of_entry", lambda x: float(x[0]) * jt.sum(x)),
    _named("int_of_value", lambda x: int(x) * x),
    _named("item", lambda x: x.item() * x),
    _named("tolist", lambda x: jt.sum(x) * x.tolist()[0]),
    _named("complex_of_value", lambda x: complex(x).real * x),
    _named("bool_of_value", lambda x: x if x else -x),                # `if x:` on the value itself
    _named("list_index", lambda x: [1.0, 2.0, 3.0][x] * x),           # __index__
    _named("array_index", lambda x: V[x] * x),
    _named("range_size", lambda x: sum(range(x)) * x),
    _named("shape_entry", lambda x: jt.sum(np.ones((x,))) * x),
    _named("slice_bound", lambda x: jt.sum(x[:x[0]])),
    _named("reshape_size", lambda x: jt.sum(jt.reshape(x, (x[0], -1)))),
    _named("numpy_asarray", lambda x: jt.sum(np.asarray(x))),
    _named("numpy_array", lambda x: jt.sum(np.array(x) * 2.0)),
    _named("numpy_array_of_entries", lambda x: jt.sum(np.array([x[0], x[1]]))),
]
NOT_NUMPY = {"list_index", "array_index", "range_size", "shape_entry", "slice_bound", "reshape_size"}  # float sizes
SCALAR_ARG = {"times_float_of_itself", "math_exp", "math_sin", "numpy_float64", "int_of_value", "item",
              "complex_of_value", "bool_of_value", "list_index", "array_index", "range_size", "shape_entry"}


def _arg(f):
    return np.array(2.0) if f.__name__ in SCALAR_ARG else np.array([2.0, 1.0, 1.0, 1.0])


def _transforms(f):
    s = _named(f.__name__, lambda x: jt.sum(f(x)))  # the same name: the message must show it
    return {
        "grad": lambda x: jt.grad(s)(x),
        "value_and_grad": lambda x: jt.value_and_grad(s)(x),
        "jacobian chain": lambda x: jt.jacobian(f, method="chain")(x),
        "jacobian rev": lambda x: jt.jacobian(f, method="rev")(x),
        "jacobian fwd": lambda x: jt.jacobian(f, method="fwd")(x),
        "hessian": lambda x: jt.hessian(s)(x),
        "vjp": lambda x: jt.vjp(f, x),
        "jvp": lambda x: jt.jvp(f, (x,), (np.ones_like(x),)),
        "explain": lambda x: jt.explain(f, x),
    }


@pytest.mark.parametrize("f", CONCRETE, ids=[f.__name__ for f in CONCRETE])
def test_concretizing_a_traced_value_raises(f):
    x = _arg(f)
    if f.__name__ not in NOT_NUMPY:
        f(x)  # fine on plain arrays: the function itself is valid numpy code
    for route, run in _transforms(f).items():
        with pytest.raises(jt.ConcretizationError) as info:
            run(x)
        msg = str(info.value)
        assert f.__name__ in msg, (route, msg)                     # which function was being differentiated
        assert "derivative" in msg and "lost" in msg, (route, msg)  # why
        assert "jt.getval" in msg and "jt.exp" in msg, (route, msg)  # the remedies


def test_the_original_silent_wrong_gradient_now_raises():
    with pytest.raises(jt.ConcretizationError, match=r"float\(\)"):
        jt.grad(lambda x: x * float(x))(3.0)
    assert jt.grad(lambda x: x * x)(3.0) == 6.0  # written with the traced value: right


def test_concretization_error_is_a_type_error_and_a_jactensor_error():
    assert issubclass(jt.ConcretizationError, TypeError) and issubclass(jt.ConcretizationError, jt.JactensorError)


def test_traced_value_as_an_array_size_does_not_pass_silently():
    # numpy's own shape conversion replaces our message with its TypeError; it still refuses
    with pytest.raises(TypeError):
        jt.grad(lambda x: jt.sum(np.zeros(x)) * x)(np.array(2.0))


def test_control_flow_on_comparisons_keeps_working():
    def piecewise(x):
        if (x > 0).all():
            return jt.sum(x * x)
        if jt.getval(x).sum() < -10:
            return jt.sum(-x)
        y = x
        while (jt.abs(y) < 4).any():
            y = y * 2.0
        return jt.sum(y * x)

    a, b, c = np.array([1.0, 2.0]), np.array([-6.0, -5.0]), np.array([-1.0, 0.5])
    np.testing.assert_allclose(jt.grad(piecewise)(a), 2 * a)
    np.testing.assert_allclose(jt.grad(piecewise)(b), [-1.0, -1.0])
    # c: y = 8c after three doublings (|0.5| needs three), so f = 8 sum(c^2) and the gradient is 16c
    np.testing.assert_allclose(jt.grad(piecewise)(c), 16 * c)
    assert isinstance(jt.grad(lambda x: (x > 0).astype(float).sum() * jt.sum(x))(a), np.ndarray)


def test_getval_takes_a_deliberate_constant():
    # d/dx [x * const(x)] = const(x): the remedy the error message names
    np.testing.assert_allclose(jt.grad(lambda x: jt.sum(x * jt.getval(x)))(V), V)
    np.testing.assert_allclose(jt.grad(lambda x: jt.sum(x * jt.exp(x)))(V), np.exp(V) * (1 + V))


# ---- check_nan ----------------------------------------------------------------------------------------------
def _program_steps(f, x):
    """(step, primitive) of every recorded call, as jt.explain numbers them."""
    return [(r["step"], r["prim"]) for r in jt.explain(f, x).rows]


def test_nan_in_a_forward_value_names_the_primitive_and_its_step():
    # step 1 multiply, step 2 subtract, step 3 log (of -1: NaN), step 4 exp, step 5 sum
    def f(x):
        return jt.sum(jt.exp(jt.log(x * 2.0 - 3.0)))
    x = np.array([1.0, 2.0])
    assert _program_steps(f, x)[2] == (3, "log")
    with np.errstate(invalid="ignore"):
        assert np.isnan(jt.grad(f)(x)[0])  # check_nan off (the default): NaN propagates as in numpy
        with jt.config.override(check_nan=True):
            for route, run in [("grad", jt.grad(f)), ("jacobian chain", jt.jacobian(f)),
                               ("jacobian rev", jt.jacobian(f, method="rev")),
                               ("jacobian fwd", jt.jacobian(f, method="fwd")), ("hessian", jt.hessian(f)),
                               ("vjp", lambda x: jt.vjp(f, x)), ("jvp", lambda x: jt.jvp(f, (x,), (x,)))]:
                with pytest.raises(jt.NonFiniteError, match=r"\blog\b.*\bstep 3\b.*\bf\b"):
                    run(x)
            with pytest.raises(jt.NonFiniteError, match=r"\blog\b"):
                jt.log(np.array([-1.0, 1.0]))  # outside any transform too


def test_the_original_silent_nan_gradient_now_raises():
    def f(x):
        return jt.sum(jt.exp(jt.log(x)))
    x = np.array([-1.0, 1.0])
    with np.errstate(invalid="ignore"), jt.config.override(check_nan=True):
        for run in (jt.grad(f), jt.jacobian(f, method="rev"), jt.jacobian(f, method="fwd"), jt.hessian(f),
                    lambda x: jt.jvp(f, (x,), (x,)), lambda x: jt.vjp(f, x)):
            with pytest.raises(jt.NonFiniteError, match=r"\blog\b.*\bf\b"):
                run(x)


def _g(x):
    # sqrt(0) = 0 is finite, but its cotangent g / (2 sqrt(0)) and tangent t / (2 sqrt(0)) are Inf: only the
    # reverse and forward passes see them. Step 1 multiply, step 2 sqrt, step 3 multiply, step 4 sum.
    return jt.sum(jt.sqrt(x * 1.0) * 3.0)


def _reverse_routes(x):
    _, vjp_fn = jt.vjp(_g, x)
    return [("grad", lambda: jt.grad(_g)(x)), ("value_and_grad", lambda: jt.value_and_grad(_g)(x)),
            ("vjp", lambda: vjp_fn(np.array(1.0))), ("jacobian rev", lambda: jt.jacobian(_g, method="rev")(x))]


def _forward_routes(x):
    return [("jvp", lambda: jt.jvp(_g, (x,), (np.ones(2),))),
            ("jacobian fwd", lambda: jt.jacobian(_g, method="fwd")(x))]


@pytest.mark.parametrize("passes", ["reverse", "forward"])
def test_inf_in_a_derivative_pass_raises_naming_the_rule_and_the_function(passes):
    x = np.array([0.0, 1.0])
    rule = "VJP" if passes == "reverse" else "JVP"
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isinf(jt.grad(_g)(x)[0])  # check_nan off: Inf propagates as in numpy
        with jt.config.override(check_nan=True):
            _g(x)  # the forward alone is finite
            with np.errstate(divide="ignore", invalid="ignore"):
                for route, run in (_reverse_routes if passes == "reverse" else _forward_routes)(x):
                    with pytest.raises(jt.NonFiniteError, match=rf"{rule} of sqrt.*\b_g\b") as info:
                        run()
                    assert "inf" in str(info.value), route


@pytest.mark.parametrize("passes", ["reverse", "forward"])
def test_inf_in_a_derivative_pass_names_its_step(passes):
    x = np.array([0.0, 1.0])
    assert _program_steps(_g, x)[1] == (2, "sqrt")
    with np.errstate(divide="ignore", invalid="ignore"), jt.config.override(check_nan=True):
        for route, run in (_reverse_routes if passes == "reverse" else _forward_routes)(x):
            with pytest.raises(jt.NonFiniteError, match=r"sqrt.*\bstep 2\b"):
                run()


@pytest.mark.parametrize("method", ["fwdrev", "chain", "auto"])
def test_non_finite_hessian_entries_raise_on_every_route(method):
    # f = sum(x^1.5): gradient 1.5 sqrt(x) is finite at 0, the Hessian 0.75 / sqrt(x) is not
    def f(x):
        return jt.sum(x ** 1.5)
    x = np.array([0.0, 1.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_allclose(jt.grad(f)(x), [0.0, 1.5])
        with jt.config.override(check_nan=True):
            jt.grad(f)(x)
            with pytest.raises(jt.NonFiniteError, match="power"):
                jt.hessian(f, method=method)(x)


def test_non_finite_jacobian_entries_raise_on_the_chain_route():
    x = np.array([0.0, 1.0])
    with np.errstate(divide="ignore", invalid="ignore"), jt.config.override(check_nan=True):
        jt.sqrt(x)  # finite
        with pytest.raises(jt.NonFiniteError, match="sqrt"):  # the Jacobian of sqrt at 0 is Inf
            jt.jacobian(lambda x: jt.sqrt(x), method="chain")(x)


def test_non_finite_cotangents_and_tangents_from_the_caller_are_refused():
    x = np.array([1.0, 2.0])
    with jt.config.override(check_nan=True):
        _, vjp_fn = jt.vjp(jt.exp, x)
        with pytest.raises(jt.NonFiniteError, match="cotangent"):
            vjp_fn(np.array([np.nan, 1.0]))
        with pytest.raises(jt.NonFiniteError, match="tangent"):
            jt.jvp(jt.exp, (x,), (np.array([1.0, np.inf]),))
        with pytest.raises(jt.NonFiniteError):
            jt.grad(lambda x: jt.sum(jt.exp(x)))(np.array([1.0, np.nan]))


# ---- masked arrays ---------------------------------------------------------------------------------------------
M = np.ma.masked_array([1.0, 100.0, 3.0], mask=[False, True, False])


@pytest.mark.parametrize("route", ["primitive", "primitive jacobian", "primitive vjp", "constant operand", "grad",
                                   "jacobian", "vjp cotangent", "jvp tangent"])
def test_masked_arrays_are_refused(route):
    x = np.ones(3)
    run = {
        "primitive": lambda: jt.sum(M),                              # gave 104: the hidden 100 counted
        "primitive jacobian": lambda: jt.exp.jacobian(M),
        "primitive vjp": lambda: jt.exp.vjp(M, x),
        "constant operand": lambda: jt.grad(lambda x: jt.sum(x * M))(x),
        "grad": lambda: jt.grad(lambda x: jt.sum(x))(M),
        "jacobian": lambda: jt.jacobian(jt.exp)(M),
        "vjp cotangent": lambda: jt.vjp(jt.exp, x)[1](M),
        "jvp tangent": lambda: jt.jvp(jt.exp, (x,), (M,)),
    }[route]
    with pytest.raises(jt.DTypeError, match=r"masked array.*(filled|compressed)"):
        run()


# ---- results never alias the caller's arrays or each other --------------------------------------------------------
def _leaves(tree):
    if isinstance(tree, jt.Jacobian):
        return [a for t in tree.terms for a, _ in t.factors if isinstance(a, np.ndarray)]
    if isinstance(tree, dict):
        return [l for v in tree.values() for l in _leaves(v)]
    if isinstance(tree, (list, tuple)):
        return [l for v in tree for l in _leaves(v)]
    return [tree] if isinstance(tree, np.ndarray) else []


def _assert_fresh(result, *inputs, allow_empty=False):
    res, ins = _leaves(result), _leaves(inputs)
    assert res or allow_empty, "nothing to check"
    for i, r in enumerate(res):
        for x in ins:
            assert not np.shares_memory(r, x), f"result leaf {i} (shape {r.shape}) shares memory with an input"
        for j in range(i):
            assert not np.shares_memory(r, res[j]), f"result leaves {j} and {i} share memory"


def _identity(x):
    return x


def _plus_zero(x):
    return x + 0.0


def _add(x, y):
    return x + y


def _tree(p):
    return {"a": p["a"], "b": p["a"] + 0.0, "c": [p["c"][0], p["c"][0]]}


def _pairs():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=3), rng.normal(size=3)
    p = {"a": rng.normal(size=2), "c": [rng.normal(size=(2, 2))]}
    s = np.array(1.5)
    return [("identity", _identity, (x,)), ("x + 0.0", _plus_zero, (x,)), ("x + y", _add, (x, y)),
            ("pytree", _tree, (p,)), ("0-d identity", _identity, (s,))]


def _sum_all(f):
    def s(*a):
        return jt.sum(jt.concatenate([jt.reshape(l, (-1,)) for l in _traced_leaves(f(*a))]))
    return s


def _traced_leaves(t):
    if isinstance(t, dict):
        return [l for k in sorted(t) for l in _traced_leaves(t[k])]
    if isinstance(t, (list, tuple)):
        return [l for v in t for l in _traced_leaves(v)]
    return [t]


def _cotangent_like(out):
    if isinstance(out, dict):
        return {k: _cotangent_like(v) for k, v in out.items()}
    if isinstance(out, list):
        return [_cotangent_like(v) for v in out]
    return np.full(np.shape(out), 0.5)


def _routes(name, f, args):
    """(transform, thunk returning (results, inputs that results must not alias)) for f at args."""
    nums = tuple(range(len(args)))
    s = _sum_all(f)
    routes = [("grad", lambda: (jt.grad(s, argnums=nums)(*args), args)),
              ("value_and_grad", lambda: (jt.value_and_grad(s, argnums=nums)(*args), args))]
    if name == "0-d identity":  # f(x) = x is itself a scalar: its value passes the input through
        routes.append(("value_and_grad of x -> x", lambda: (jt.value_and_grad(f)(*args), args)))

    def vjp_route():
        out, vjp_fn = jt.vjp(f, *args)
        g = _cotangent_like(out)
        return (out, vjp_fn(g)), (args, g)

    def vjp_twice():
        out, vjp_fn = jt.vjp(f, *args)
        g = _cotangent_like(out)
        return (vjp_fn(g), vjp_fn(g)), (args, g)

    def jvp_route():
        tangents = tuple(_cotangent_like(a) for a in args)
        return jt.jvp(f, args, tangents), (args, tangents)

    routes += [("vjp and vjp_fn", vjp_route), ("vjp_fn called twice", vjp_twice), ("jvp", jvp_route)]
    for m in ("chain", "rev", "fwd"):
        routes.append((f"jacobian {m}", lambda m=m: (jt.jacobian(f, argnums=nums, method=m)(*args), args)))
        routes.append((f"jacobian {m} has_aux", lambda m=m: (
            jt.jacobian(lambda *a: (f(*a), a), argnums=nums, method=m, has_aux=True)(*args), args)))
    routes += [("jacobian dense=True", lambda: (jt.jacobian(f, argnums=nums, dense=True)(*args), args)),
               ("hessian", lambda: (jt.hessian(s, argnums=nums)(*args), args)),
               ("hessian has_aux", lambda: (jt.hessian(lambda *a: (s(*a), a), argnums=nums, has_aux=True)(*args),
                                            args))]
    return routes


ALIAS_CASES = [(name, route, f, args) for name, f, args in _pairs() for route, _ in _routes(name, f, args)]


@pytest.mark.parametrize("name, route, f, args", ALIAS_CASES, ids=[f"{c[0]}: {c[1]}" for c in ALIAS_CASES])
def test_no_transform_returns_memory_of_its_inputs(name, route, f, args):
    run = dict(_routes(name, f, args))[route]
    result, inputs = run()
    _assert_fresh(result, inputs)


@pytest.mark.parametrize("name, f, args", _pairs(), ids=[p[0] for p in _pairs()])
def test_structured_jacobians_hold_no_memory_of_the_inputs(name, f, args):
    nums = tuple(range(len(args)))
    _assert_fresh(jt.jacobian(f, argnums=nums, structured=True)(*args), args, allow_empty=True)


def test_vjp_fn_result_is_not_the_callers_cotangent():
    g = np.array([1.0, 2.0, 3.0])
    _, vjp_fn = jt.vjp(lambda x: x + 0.0, np.ones(3))   # returned g itself
    (r,) = vjp_fn(g)
    r[0] = 99.0
    assert g[0] == 1.0


def test_structured_jacobian_factors_are_not_the_callers_arrays():
    x, w = np.ones(3), np.arange(3.0)
    J = jt.jacobian(lambda x, w: x * w, argnums=0, structured=True)(x, w)
    _assert_fresh(J, (x, w))
    np.testing.assert_array_equal(np.asarray(J), np.diag(w))


def test_writing_into_a_result_leaves_the_inputs_alone():
    x = np.array([1.0, 2.0])
    out, t = jt.jvp(_identity, (x,), (x,))
    out[:] = -1.0
    t[:] = -2.0
    value, g = jt.value_and_grad(lambda v: v)(np.array(3.0))
    np.testing.assert_array_equal(x, [1.0, 2.0])
