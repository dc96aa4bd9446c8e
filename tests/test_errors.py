"""Bad input gets a clear, documented error: op, argument, shapes or values, and what to do instead."""
import numpy as np
import pytest

import jactensor as jt

ones = np.ones


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: jt.add(ones(3), ones(4)), jt.ShapeError, r"add: a has shape \(3,\) and b has shape \(4,\).*broadcast"),
    (lambda: jt.multiply(ones((2, 3)), ones((3, 2))), jt.ShapeError, r"multiply: .*\(2, 3\).*\(3, 2\)"),
    (lambda: jt.matmul(ones((3, 2)), ones((3, 2))), jt.ShapeError, r"matmul: .*\(3, 2\).*differ.*a @ b.T"),
    (lambda: jt.matmul(ones(3), 2.0), jt.ShapeError, r"matmul: operands must be at least 1-d"),
    (lambda: jt.matmul(ones((2, 3, 4)), ones((3, 4, 5))), jt.ShapeError, r"matmul: batch dimensions"),
    (lambda: jt.reshape(ones(6), (4, 2)), jt.ShapeError, r"reshape: cannot reshape .*\(6,\).*\(4, 2\)"),
    (lambda: jt.concatenate([ones((2, 3)), ones((2, 4))]), jt.ShapeError, r"concatenate: array 1 has shape \(2, 4\)"),
    (lambda: jt.broadcast_to(ones(3), (4, 2)), jt.ShapeError, r"broadcast_to: .*\(3,\).*\(4, 2\)"),
    (lambda: jt.layer_norm(ones((2, 3)), ones(4), 0.0), jt.ShapeError, r"layer_norm: gamma has shape \(4,\)"),
    (lambda: jt.mse(ones(3), ones(2)), jt.ShapeError, r"mse: pred has shape \(3,\) and target \(2,\)"),
    (lambda: jt.cross_entropy(ones((2, 3)), np.array([0, 1, 2])), jt.ShapeError, r"labels have shape \(3,\)"),
    (lambda: jt.getitem(ones(3), 5), jt.IndexingError, r"getitem: index .* shape \(3,\)"),
    (lambda: jt.sum(ones((2, 3)), axis=2), jt.AxisError, r"sum: axis 2 is out of range.*-2..1"),
    (lambda: jt.softmax(ones(3), axis=1), jt.AxisError, r"softmax: axis 1"),
    (lambda: jt.mean(ones(3), axis=(0, 0)), jt.AxisError, r"repeated axis"),
    (lambda: jt.transpose(ones((2, 3)), (0, 0)), jt.AxisError, r"transpose: axes \(0, 0\)"),
    (lambda: jt.concatenate([ones(2), ones(3)], axis=1), jt.AxisError, r"concatenate: axis 1"),
    (lambda: jt.einsum("ij,jk->il", ones((2, 3)), ones((3, 4))), jt.ShapeError, r"output index 'l'"),
    (lambda: jt.einsum("ij,jk", ones((2, 3)), ones((4, 4))), jt.ShapeError, r"index 'j' has length 3 .* 4"),
    (lambda: jt.einsum("ij->i->j", ones((2, 3))), jt.ShapeError, r"malformed subscripts"),
    (lambda: jt.einsum("ij,j->i", ones((2, 3))), jt.ShapeError, r"name 2 operand\(s\) but 1"),
    (lambda: jt.einsum("ijk->i", ones((2, 3))), jt.ShapeError, r"operand 0 has shape \(2, 3\)"),
    (lambda: jt.einsum(3, ones(2)), jt.ShapeError, r"subscripts string"),
    (lambda: jt.exp(ones(3, dtype=complex)), jt.DTypeError, r"exp: argument 0 is complex.*real and imaginary"),
    (lambda: jt.exp(np.array(["a"])), jt.DTypeError, r"exp: argument 0 has dtype <U1"),
    (lambda: jt.add(ones(2), np.array([object(), object()])), jt.DTypeError, r"add: argument 1 has dtype object"),
    (lambda: jt.cross_entropy(ones((2, 3)), np.array([0, 3])), jt.LabelError, r"label 3 at index \(1,\).*0..2"),
    (lambda: jt.cross_entropy(ones((2, 3)), np.array([-1, 0])), jt.LabelError, r"label -1"),
    (lambda: jt.cross_entropy(ones((2, 3)), np.array([0.0, 1.0])), jt.LabelError, r"integer.*astype\(int\)"),
    (lambda: jt.cross_entropy(ones((2, 3)), np.array([0.5, 1.0])), jt.LabelError, r"integer class indices"),
])
def test_error_messages(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_error_types_subclass_numpy_expectations():
    assert issubclass(jt.ShapeError, ValueError) and issubclass(jt.AxisError, ValueError)
    assert issubclass(jt.DTypeError, TypeError) and issubclass(jt.IndexingError, IndexError)
    assert issubclass(jt.LabelError, ValueError) and issubclass(jt.JacobianTooLargeError, ValueError)
    assert issubclass(jt.NotDifferentiableError, TypeError) and issubclass(jt.ArgnumError, ValueError)


def test_integer_and_bool_inputs_are_cast_to_float64():
    y = jt.multiply(np.array([1, 2]), np.array([True, False]))
    assert y.dtype == np.float64
    (J,) = jt.exp.jacobian(np.array([0, 1]))
    np.testing.assert_allclose(np.asarray(J), np.diag(np.exp([0.0, 1.0])))


def test_nan_propagates_by_default_and_is_an_error_when_configured():
    assert np.isnan(jt.exp(np.array([np.nan]))[0])
    with jt.config.override(check_nan=True):
        with pytest.raises(jt.NonFiniteError, match=r"exp: argument 0 .* holds nan at index \(1,\)"):
            jt.exp(np.array([1.0, np.nan]))
        with pytest.raises(jt.NonFiniteError, match="inf"):
            jt.add(np.ones(2), np.array([np.inf, 0.0]))
    report = jt.testing.check(jt.exp, np.array([1.0, np.nan]))
    assert not report.ok and "finite input" in str(report)


def test_grad_of_non_scalar():
    with pytest.raises(TypeError, match=r"grad: f must return a scalar .*shape \(2,\).*jt.jacobian.*jt.vjp"):
        jt.grad(lambda x: x * 2)(ones(2))
    with pytest.raises(TypeError, match=r"a tuple of shapes"):
        jt.grad(lambda x: (jt.sum(x), jt.sum(x)))(ones(2))


def test_argnums_out_of_range():
    with pytest.raises(jt.ArgnumError, match=r"argnums 2 is out of range for a function called with 2"):
        jt.grad(lambda a, b: jt.sum(a * b), argnums=2)(ones(2), ones(2))
    with pytest.raises(jt.ArgnumError, match=r"argnums -3"):
        jt.jacobian(lambda a, b: a * b, argnums=(0, -3))(ones(2), ones(2))


def test_jacobian_above_memory_limit():
    with jt.config.override(max_jacobian_bytes=10_000):
        with pytest.raises(jt.JacobianTooLargeError,
                           match=r"output 0 .* shape \(20, 20, 20, 20\) would take 1.2 MiB .* above .*9.8 KiB.*jt.grad"):
            jt.jacobian(lambda x: jt.softmax(x, axis=-1))(np.ones((20, 20)))
    with pytest.raises(TypeError, match="unknown setting"):
        with jt.config.override(max_bytes=1):
            pass


def test_vjp_and_jvp_cotangent_shapes():
    with pytest.raises(jt.ShapeError, match=r"cotangent of shape \(3,\) for an output of shape \(2,\)"):
        jt.exp.vjp(ones(3), ones(2))
    with pytest.raises(jt.ShapeError, match=r"tangent of shape \(3,\) for argument 0 of shape \(2,\)"):
        jt.exp.jvp(ones(3), ones(2))
    _, fn = jt.vjp(jt.exp, ones(2))
    with pytest.raises(jt.ShapeError, match=r"cotangent 0 has shape \(3,\) but the output has shape \(2,\)"):
        fn(ones(3))
    with pytest.raises(jt.ShapeError, match=r"jvp: tangent 0 has shape \(3,\) but primal 0 has shape \(2,\)"):
        jt.jvp(jt.exp, (ones(2),), (ones(3),))


def test_missing_rule_names_op_and_argument():
    prim = jt.Primitive("half", lambda x: x / 2, bind=lambda x: ((x,), {}), jac=[], vjp=[], jvp=[], formula="?",
                        battery=None)
    with pytest.raises(jt.NotDifferentiableError, match="half: no VJP rule for argument 0"):
        jt.grad(lambda x: jt.sum(prim(x)))(ones(2))


def test_unknown_primitive_lists_the_valid_ones():
    with pytest.raises(KeyError, match="no primitive named 'softmx'; closest: softmax.*registered: .*softmax"):
        jt.registry["softmx"]


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "divide", "power"])
def test_every_binary_primitive_names_both_shapes(name):
    with pytest.raises(jt.ShapeError, match=rf"{name}: a has shape \(2, 3\) and b has shape \(4,\).*broadcast"):
        jt.registry[name](np.ones((2, 3)), np.ones(4))


@pytest.mark.parametrize("name", ["sum", "mean", "max", "softmax", "log_softmax"])
def test_every_axis_primitive_names_the_axis(name):
    with pytest.raises(jt.AxisError, match=rf"{name}: axis 3 is out of range for an input with 2 dimension"):
        jt.registry[name](np.ones((2, 3)), axis=3)


def test_scatter_add_shape_mismatch():
    with pytest.raises(jt.ShapeError, match=r"scatter_add: values of shape \(3,\) do not fit .*expected values of shape \(2,\)"):
        jt.scatter_add(np.ones(3), (slice(None), 0), (2, 4))


def test_every_error_type_is_exported():
    for name in ["ShapeError", "AxisError", "IndexingError", "DTypeError", "NonFiniteError", "JacobianTooLargeError",
                 "LabelError", "ArgnumError", "NotDifferentiableError"]:
        assert issubclass(getattr(jt, name), jt.JactensorError)
