"""chain(): equals the Jacobian of the composition; the plan never costs more than forward or reverse."""
import numpy as np
import pytest

import jactensor as jt
from jactensor import Jacobian, chain, chain_plan
from jactensor.testing import finite_difference_jacobian

# steps that map an array to an array: (name, make(rng, x) -> (fn(x) using primitives))
STEPS = [
    ("exp", lambda rng, x: lambda v: jt.exp(v * 0.3)),
    ("tanh", lambda rng, x: jt.tanh),
    ("sigmoid", lambda rng, x: jt.sigmoid),
    ("softmax_rows", lambda rng, x: lambda v: jt.softmax(v, axis=-1)),
    ("softmax_all", lambda rng, x: lambda v: jt.softmax(v, axis=None)),
    ("log_softmax", lambda rng, x: lambda v: jt.log_softmax(v, axis=-1)),
    ("matmul_wide", lambda rng, x: (lambda W: lambda v: jt.matmul(v, W))(rng.normal(size=(x.shape[-1], 5)) * 0.5)),
    ("matmul_narrow", lambda rng, x: (lambda W: lambda v: jt.matmul(v, W))(rng.normal(size=(x.shape[-1], 2)) * 0.5)),
    ("left_matmul", lambda rng, x: (lambda W: lambda v: jt.matmul(W, v))(rng.normal(size=(3, x.shape[0])) * 0.5)),
    ("transpose", lambda rng, x: jt.transpose),
    ("square", lambda rng, x: lambda v: v * v),
    ("layer_norm", lambda rng, x: (lambda g: lambda v: jt.layer_norm(v, g, 0.1))(rng.normal(size=x.shape[-1]))),
    ("scale_sum", lambda rng, x: lambda v: jt.sum(v, axis=0, keepdims=True) * 0.5 + v),
]


def _prim_jacobian(fn, x):
    """The structured Jacobian of a one-primitive-deep step (traced, not densified)."""
    from jactensor.passes import chain_accumulate, trace
    tr = trace(fn, (x,))
    (row,) = chain_accumulate(tr, 0)
    return row[0], np.asarray(tr.out_values())


@pytest.mark.parametrize("seed", range(20))
def test_chain_of_2_to_6_primitives_equals_composition(seed):
    rng = np.random.default_rng(seed)
    length = 2 + seed % 5
    x0 = rng.normal(size=(3, 4))
    fns, jacs, x = [], [], x0
    for _ in range(length):
        name, make = STEPS[rng.integers(len(STEPS))]
        fn = make(rng, x)
        J, x = _prim_jacobian(fn, x)
        fns.append(fn)
        jacs.append(J)

    def composed(v):
        for fn in fns:
            v = fn(v)
        return v

    J = chain(*reversed(jacs))  # outermost first
    expected = jt.jacobian(composed, method="rev")(x0)
    np.testing.assert_allclose(np.asarray(J), expected, atol=1e-12, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(J), finite_difference_jacobian(composed, x0), atol=1e-7)
    dense = chain(*reversed(jacs), dense=True)
    np.testing.assert_allclose(np.asarray(dense), expected, atol=1e-12, rtol=1e-10)
    p = J.plan
    assert p.chosen.flops <= min(p.forward.flops, p.reverse.flops)


def _dense_chain(rng, dims):
    """Dense Jacobians for a chain of maps through vector sizes dims[0] -> dims[1] -> ... (innermost first)."""
    return [Jacobian.from_dense(rng.normal(size=(dims[k + 1], dims[k])), 1) for k in range(len(dims) - 1)][::-1]


@pytest.mark.parametrize("dims", [
    [2, 40, 60, 80, 100],          # narrow to wide: forward accumulation wins
    [100, 80, 60, 40, 2],          # wide to narrow: reverse wins
    [60, 2, 60, 2, 60],
    [80, 70, 2, 70, 80],           # hourglass
    [5, 50, 3, 40, 2, 60, 4, 30],  # mixed, 7 Jacobians
])
def test_plan_never_above_cheaper_of_forward_and_reverse(dims, rng):
    jacs = _dense_chain(rng, dims)
    plan = chain_plan(*jacs)
    assert plan.chosen.flops <= min(plan.forward.flops, plan.reverse.flops)
    J = chain(*jacs)
    expected = jacs[0].dense()
    for B in jacs[1:]:
        expected = expected @ B.dense()
    np.testing.assert_allclose(np.asarray(J), expected, rtol=1e-10, atol=1e-8)
    assert J.plan.chosen.flops == plan.chosen.flops


def test_forward_and_reverse_differ_by_orders_of_magnitude_on_hourglass(rng):
    # (80) <- (80) <- (2) <- (80) <- (80): the plan goes through the narrow waist
    jacs = _dense_chain(rng, [80, 80, 2, 80, 80])
    p = chain_plan(*jacs)
    assert max(p.forward.flops, p.reverse.flops) >= 10 * p.chosen.flops
    p = chain_plan(*_dense_chain(rng, [100, 100, 100, 2, 100, 100, 100]))
    assert min(p.forward.flops, p.reverse.flops) >= 10 * p.chosen.flops
    wide = chain_plan(*_dense_chain(rng, [200, 150, 100, 50, 1]))
    assert wide.forward.flops > 5 * wide.reverse.flops
    assert wide.chosen.flops <= wide.reverse.flops


def test_chain_shape_mismatch_names_positions():
    A = Jacobian.from_dense(np.ones((3, 4)), 1)
    B = Jacobian.from_dense(np.ones((5, 2)), 1)
    with pytest.raises(jt.ShapeError, match=r"Jacobian 0 has input shape \(4,\) but Jacobian 1 has output shape \(5,\)"):
        chain(A, B)
    with pytest.raises(TypeError, match="not a Jacobian"):
        chain(A, np.ones((4, 2)))


def test_structured_chain_keeps_deltas_symbolic(rng):
    """exp . tanh . exp on a (50, 50) array: every Jacobian is diagonal, so is the chain."""
    x = rng.normal(size=(50, 50))
    (J1,) = jt.exp.jacobian(x)
    (J2,) = jt.tanh.jacobian(np.exp(x))
    J = chain(J2, J1)
    assert J.stored_bytes == 8 * 2500  # one value per diagonal entry, not 2500 x 2500
    assert J.plan.chosen.flops < 10 * 2500
    d = (1 - np.tanh(np.exp(x)) ** 2) * np.exp(x)
    np.testing.assert_allclose(J.vjp(np.ones_like(x)), d)


def test_jacobian_dense_and_views(rng):
    K = rng.normal(size=(2, 3))
    J = Jacobian.from_labels((3, 3), (3, 2), "ijis", [(K, "sj")])
    np.testing.assert_array_equal(np.asarray(J), np.einsum("ir,sj->ijrs", np.eye(3), K))
    assert J.nbytes == 8 * 54 and J.stored_bytes == 8 * 6
    np.testing.assert_array_equal((J + J).dense(), 2 * J.dense())
    np.testing.assert_array_equal((J - J).dense(), 0 * J.dense())
    np.testing.assert_array_equal(J.as_matrix(), J.dense().reshape(9, 6))


def test_memory_guard_refuses_before_allocating():
    J = Jacobian.identity((300, 300))  # dense would be 300^4 * 8 bytes = 64.8 GB
    with pytest.raises(jt.JacobianTooLargeError, match=r"shape \(300, 300, 300, 300\).*jt.grad"):
        J.dense()
    with jt.config.override(max_jacobian_bytes=1000):
        (Js,) = jt.softmax.jacobian(np.zeros((4, 4)))
        with pytest.raises(jt.JacobianTooLargeError, match="softmax"):
            np.asarray(Js)
    np.asarray(Js)  # the limit is back


def test_chain_with_a_jacobian_whose_outputs_are_coupled_by_a_delta():
    """B's out and in labels match position by position, but two of its outputs share a label (a delta
    between them): not an elementwise map, so A's matching input axes must be coupled too. The fast path
    for elementwise maps once dropped that delta (a 6.0 error on this case)."""
    from jactensor.jacobian import Jacobian
    from jactensor.term import Term
    C = np.arange(6.0).reshape(2, 3) + 1
    A = Jacobian((3, 3, 2), (3, 3, 2), [Term(1.0, [], (0, 0, 1, 2, 3, 1), {0: 3, 1: 2, 2: 3, 3: 3})])
    B = Jacobian((3, 3, 2), (3, 3, 2), [Term(1.0, [(C, (1, 0))], (0, 0, 1, 0, 0, 1), {0: 3, 1: 2})])
    want = np.tensordot(np.asarray(A), np.asarray(B), axes=3)
    for order in ("best", "forward", "reverse"):
        np.testing.assert_allclose(jt.chain(A, B, order=order).dense(), want, atol=1e-12, err_msg=order)
    np.testing.assert_allclose(jt.chain(A, B.T).dense(), np.tensordot(np.asarray(A), np.asarray(B.T), axes=3),
                               atol=1e-12)
