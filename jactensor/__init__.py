"""jactensor: explicit Jacobian tensors for tensor programs.

Every primitive returns its full Jacobian (shape ``out.shape + in.shape``), its
VJP and JVP, and states its Jacobian in index notation; ``chain`` composes
Jacobians with one einsum whose order opt_einsum picks.
"""
from .config import config
from .core import Primitive
from .registry import registry
from .errors import (ArgnumError, AxisError, ConcretizationError, DTypeError, FormulaError, IndexingError,
                     JacobianTooLargeError,
                     JactensorError, LabelError, NonFiniteError, NotDifferentiableError, ShapeError)
from .jacobian import Jacobian
from .chain import ChainPlan, chain, chain_plan
from .ops import *  # noqa: F401,F403 - the primitives, numpy names
from .ops import __all__ as _ops_all
from .tracer import getval, install_operators

install_operators(registry)

__version__ = "0.2.0"

__all__ = ["config", "Primitive", "registry", "Jacobian", "chain", "chain_plan", "ChainPlan", "getval",
           "JactensorError", "ShapeError", "AxisError", "IndexingError", "DTypeError", "NonFiniteError",
           "JacobianTooLargeError", "LabelError", "ArgnumError", "NotDifferentiableError",
           "ConcretizationError", "FormulaError"] + list(_ops_all)

from .transforms import grad, hessian, jacfwd, jacobian, jacrev, jvp, value_and_grad, vjp  # noqa: E402

__all__ += ["jacobian", "jacrev", "jacfwd", "hessian", "grad", "value_and_grad", "vjp", "jvp"]
from .formula import check_formula  # noqa: E402
from . import testing  # noqa: E402,F401

__all__ += ["check_formula", "testing"]
from .explain import explain  # noqa: E402
from .jit import jit  # noqa: E402
from . import special  # noqa: E402 - jt.special.NAME: scipy.special's names
from . import linalg  # noqa: E402 - jt.linalg.NAME: numpy.linalg's names

__all__ += ["explain", "jit", "special", "linalg"]


def __getattr__(name):  # jt.plot without importing matplotlib (or the plotting module) at import time
    if name == "plot":
        import importlib
        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
