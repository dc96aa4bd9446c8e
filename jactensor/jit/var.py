"""``Var``: a value that computes eagerly on its concrete numpy value and records what it did.

While ``jt.jit`` compiles a function, every non-static array leaf of the arguments is a Var.
Whatever happens to a Var -- numpy ufuncs (``__array_ufunc__``), numpy functions
(``__array_function__``), operators, indexing, ndarray methods -- runs on the concrete value
straight away (so the first call gives ordinary numbers) and appends one instruction to the
program being recorded (``record.py``). A primitive applied to a Var records one call of its
numpy implementation through the engine's lazy-backend hook, not the calls inside it.

Shapes, ``ndim``, ``size`` and ``dtype`` are static: they come from the call signature and cost
nothing at replay. Turning a Var into a Python value -- ``bool``, ``int``, ``float``, ``index``,
``.item()``, ``.tolist()`` -- records a *guard*: the replay checks that the value is the one seen
at compile time and recompiles for this call if not. ``np.asarray(var)`` (or anything numpy
converts through ``__array__``: an ``ndarray`` indexed by a Var, a Var written into an
``ndarray``) guards on the whole value: correct, but the function recompiles whenever that value
changes -- compute with the Var itself (``np.where(mask, a, b)``, ``x * (x > 0)``) to avoid it.
"""
import operator

import numpy as np

__all__ = ["Var"]

# ndarray methods that change the array in place (recorded as writes, never merged or dropped)
INPLACE_METHODS = frozenset({"fill", "sort", "partition", "put", "itemset", "resize", "setflags", "setfield",
                             "byteswap"})
# attributes that depend on the memory layout of this call's value
_LAYOUT_ATTRS = frozenset({"flags", "strides", "base", "data", "ctypes"})
# plain types a Var operates with (anything else with its own numpy protocol -- a Tracer, a
# Jacobian -- gets the first say, so an AD tracer wraps the Var rather than the other way round)
_PLAIN = (np.ndarray, np.generic, int, float, bool, complex, list, tuple, type(None))


def _foreign(xs):
    for x in xs:
        t = type(x)
        if t is Var or isinstance(x, _PLAIN):
            continue
        if hasattr(t, "__array_ufunc__") or hasattr(t, "__array_function__"):
            return True
    return False


def _binop(sym, reflected=False):
    def op(self, other):
        if type(other) is not Var and not isinstance(other, _PLAIN):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        return self.rec.binop(sym, a, b)
    op.__name__ = f"__{'r' if reflected else ''}{sym}__"
    return op


def _ibinop(sym):
    def op(self, other):
        if type(other) is not Var and not isinstance(other, _PLAIN):
            return NotImplemented
        return self.rec.inplace_binop(sym, self, other)
    return op


class Var:
    """A recorded value: ``value`` is this call's concrete array, ``slot`` its buffer in the program
    that ``rec`` (a :class:`~jactensor.jit.record.Recorder`) is building."""

    __slots__ = ("value", "slot", "rec")
    __array_priority__ = 900  # below Tracer (1000): a Tracer operand handles mixed operations

    def __init__(self, value, slot, rec):
        self.value, self.slot, self.rec = value, slot, rec

    # ---- static attributes ---------------------------------------------------------------------
    shape = property(lambda self: np.shape(self.value))
    ndim = property(lambda self: np.ndim(self.value))
    size = property(lambda self: np.size(self.value))
    dtype = property(lambda self: self.value.dtype)
    itemsize = property(lambda self: self.value.itemsize)
    nbytes = property(lambda self: self.value.nbytes)
    T = property(lambda self: self.rec.getattr(self, "T"))
    mT = property(lambda self: self.rec.getattr(self, "mT"))
    real = property(lambda self: self.rec.getattr(self, "real"))
    imag = property(lambda self: self.rec.getattr(self, "imag"))

    def __len__(self):
        return len(self.value)

    def __iter__(self):
        if not np.ndim(self.value):
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self.value)))

    def __repr__(self):
        return f"jit.Var(shape={self.shape}, dtype={self.dtype}, slot={self.slot})"

    __str__ = __repr__
    __hash__ = object.__hash__  # == is elementwise (numpy's), identity hashes

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self.value, name)  # AttributeError as numpy would raise it
        if name in _LAYOUT_ATTRS:
            return attr  # memory layout of this call's value (not guarded)
        if callable(attr):
            return lambda *args, **kwargs: self.rec.method(self, name, args, kwargs,
                                                           inplace=name in INPLACE_METHODS)
        return self.rec.getattr(self, name)

    def __reduce__(self):
        raise TypeError("a value being recorded by jt.jit cannot be pickled; return it from the function instead")

    def __copy__(self):
        return self.rec.method(self, "copy", (), {})

    def __deepcopy__(self, memo):
        return self.rec.method(self, "copy", (), {})

    # ---- numpy protocols ------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out", ())
        if _foreign(inputs) or _foreign(out if isinstance(out, tuple) else (out,)):
            return NotImplemented
        return self.rec.ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        for t in types:
            if t is not Var and not issubclass(t, np.ndarray):
                return NotImplemented
        return self.rec.function(func, args, kwargs)

    def __array__(self, dtype=None, copy=None):
        value = self.rec.guard_value(self, "np.asarray / an ndarray operation that converts it")
        return value if dtype is None else value.astype(dtype)

    # ---- becoming a Python value: guards ---------------------------------------------------------
    def __bool__(self):
        return self.rec.guard_scalar(self, "bool")

    def __int__(self):
        return self.rec.guard_scalar(self, "int")

    def __float__(self):
        return self.rec.guard_scalar(self, "float")

    def __complex__(self):
        return self.rec.guard_scalar(self, "complex")

    def __index__(self):
        return self.rec.guard_scalar(self, "index")

    def item(self, *args):
        return self.rec.guard_scalar(self, "item", args)

    def tolist(self):
        return self.rec.guard_value(self, ".tolist()").tolist()

    # ---- operators ---------------------------------------------------------------------------------
    __add__, __radd__ = _binop("add"), _binop("add", True)
    __sub__, __rsub__ = _binop("sub"), _binop("sub", True)
    __mul__, __rmul__ = _binop("mul"), _binop("mul", True)
    __truediv__, __rtruediv__ = _binop("truediv"), _binop("truediv", True)
    __floordiv__, __rfloordiv__ = _binop("floordiv"), _binop("floordiv", True)
    __mod__, __rmod__ = _binop("mod"), _binop("mod", True)
    __pow__, __rpow__ = _binop("pow"), _binop("pow", True)
    __matmul__, __rmatmul__ = _binop("matmul"), _binop("matmul", True)
    __and__, __rand__ = _binop("and"), _binop("and", True)
    __or__, __ror__ = _binop("or"), _binop("or", True)
    __xor__, __rxor__ = _binop("xor"), _binop("xor", True)
    __lshift__, __rlshift__ = _binop("lshift"), _binop("lshift", True)
    __rshift__, __rrshift__ = _binop("rshift"), _binop("rshift", True)
    __lt__, __le__, __gt__, __ge__ = _binop("lt"), _binop("le"), _binop("gt"), _binop("ge")
    __eq__, __ne__ = _binop("eq"), _binop("ne")
    __divmod__, __rdivmod__ = _binop("divmod"), _binop("divmod", True)

    __iadd__, __isub__, __imul__ = _ibinop("add"), _ibinop("sub"), _ibinop("mul")
    __itruediv__, __ifloordiv__, __imod__ = _ibinop("truediv"), _ibinop("floordiv"), _ibinop("mod")
    __ipow__, __imatmul__ = _ibinop("pow"), _ibinop("matmul")
    __iand__, __ior__, __ixor__ = _ibinop("and"), _ibinop("or"), _ibinop("xor")
    __ilshift__, __irshift__ = _ibinop("lshift"), _ibinop("rshift")

    def __neg__(self):
        return self.rec.unop("neg", self)

    def __pos__(self):
        return self.rec.unop("pos", self)

    def __abs__(self):
        return self.rec.unop("abs", self)

    def __invert__(self):
        return self.rec.unop("invert", self)

    def __getitem__(self, idx):
        return self.rec.getitem(self, idx)

    def __setitem__(self, idx, value):
        self.rec.setitem(self, idx, value)

    def __contains__(self, x):
        return bool(self.rec.binop("eq", self, x).any())


BINOPS = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**",
          "matmul": "@", "and": "&", "or": "|", "xor": "^", "lshift": "<<", "rshift": ">>", "lt": "<", "le": "<=",
          "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
UNOPS = {"neg": "-", "pos": "+", "invert": "~"}
OPERATOR_FNS = {"divmod": divmod, "abs": operator.abs}
