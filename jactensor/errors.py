"""Exception types; each message names the op, the argument, the shapes and a remedy."""

__all__ = [
    "JactensorError", "ShapeError", "AxisError", "IndexingError", "DTypeError", "NonFiniteError",
    "JacobianTooLargeError", "LabelError", "ArgnumError", "NotDifferentiableError", "ConcretizationError", "FormulaError",
]


class JactensorError(Exception):
    """Base class of every error jactensor raises on purpose."""


class ShapeError(JactensorError, ValueError):
    """Operand shapes do not fit the op (or two Jacobians do not chain)."""


class AxisError(ShapeError):
    """An axis argument is out of range for the operand."""


class IndexingError(ShapeError, IndexError):
    """An index does not fit the array (also an IndexError, as in numpy)."""


class DTypeError(JactensorError, TypeError):
    """An input has a dtype that cannot be differentiated (complex, object, str)."""


class NonFiniteError(JactensorError, ValueError):
    """NaN or Inf in an input while ``config.check_nan`` is on."""


class JacobianTooLargeError(JactensorError, ValueError):
    """A Jacobian would exceed ``config.max_jacobian_bytes``; nothing was allocated."""


class LabelError(JactensorError, ValueError):
    """Integer class labels out of range or not integers (cross_entropy)."""


class ArgnumError(JactensorError, ValueError):
    """argnums out of range or of the wrong type."""


class NotDifferentiableError(JactensorError, TypeError):
    """A derivative rule is missing, or the output is not what the transform needs."""


class ConcretizationError(NotDifferentiableError):
    """A traced value was turned into a Python or numpy scalar (float(x), math.exp(x)) inside a transform."""


class FormulaError(JactensorError, ValueError):
    """An index formula given to check_formula is malformed or uses something outside its grammar."""
