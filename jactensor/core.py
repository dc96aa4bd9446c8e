"""The primitive record and the registry every test, doc and CLI command iterates over.

A primitive holds, side by side: its forward (numpy), one full-Jacobian rule, one
VJP rule and one JVP rule per array argument, and its Jacobian in index notation.

Rule conventions (stated once, here):
- ``jac[k](ans, *inputs, **params)`` returns a :class:`Jacobian` of shape
  ``ans.shape + inputs[k].shape``.
- ``vjp[k](g, ans, *inputs, **params)``: ``g`` has shape ``batch + ans.shape``
  (any number of leading batch axes); returns ``batch + inputs[k].shape``.
- ``jvp[k](t, ans, *inputs, **params)``: ``t`` has shape ``batch + inputs[k].shape``;
  returns ``batch + ans.shape``.
VJP and JVP rules never build a Jacobian and are written with jactensor
primitives, so they can be differentiated again (hessian).
"""
import inspect

import numpy as np

from . import backends as _backends
from . import numpy_api
from .config import config
from .errors import DTypeError, JactensorError, NonFiniteError, NotDifferentiableError, ShapeError
from .jacobian import Jacobian
from .term import Term
from .registry import Registry, registry
from .tracer import Tracer, count_step, level_name

__all__ = ["Primitive", "registry", "defprimitive", "Registry", "PerArg", "as_input", "check_finite"]

_F64 = np.dtype(np.float64)


def _arg(k):
    return f"argument {k}" if isinstance(k, (int, np.integer)) else str(k)


def as_input(op, k, x):
    """Validate one argument at the public boundary: arrays become float64, scalars stay constants.
    ``k`` is an argument position (int) or a description ("cotangent 0")."""
    if type(x) is np.ndarray and x.dtype is _F64 and not config.check_nan:
        return x
    if type(x) is Tracer:
        return x
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        if config.check_nan and not np.isfinite(x):
            raise NonFiniteError(f"{op}: {_arg(k)} is {x}; config.check_nan is on")
        return float(x)
    lazy = type(x) in _backends.LAZY_TYPES  # a lazy (jt.jit-recorded) value: checked as an array, kept lazy
    if lazy and x.dtype == _F64 and not config.check_nan:
        return x
    if not lazy and _backends.is_dask(x):
        raise DTypeError(f"{op}: {_arg(k)} is a dask array (shape {np.shape(x)}); primitives compute in memory "
                         f"with numpy. Pass np.asarray(x) if it fits, or wrap a huge Jacobian with "
                         f"jt.Jacobian.from_dense(x, out_ndim) and compose it with jt.chain")
    if not lazy and isinstance(x, np.ma.MaskedArray):
        raise DTypeError(f"{op}: {_arg(k)} is a masked array (shape {np.shape(x)}); jactensor would drop its "
                         f"mask and differentiate the hidden values. Pass x.filled(value) or x.compressed(), or "
                         f"select the valid entries with an index")
    a = x if lazy else np.asarray(x)
    kind = a.dtype.kind
    if kind == "c":
        raise DTypeError(f"{op}: {_arg(k)} is complex ({a.dtype}, shape {a.shape}); jactensor differentiates "
                         f"real functions: pass the real and imaginary parts as separate float arrays")
    if kind not in "fiub":
        raise DTypeError(f"{op}: {_arg(k)} has dtype {a.dtype} (shape {a.shape}), which cannot be "
                         f"differentiated; pass a float array (ints and bools are cast to float64)")
    if a.dtype != _F64:
        a = a.astype(np.float64)
    if config.check_nan and not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise NonFiniteError(f"{op}: {_arg(k)} (shape {a.shape}) holds {a[tuple(bad)]} at index "
                             f"{tuple(int(i) for i in bad)}; config.check_nan is on (turn it off to let "
                             f"NaN/Inf propagate as in numpy)")
    return a


def _is_array(x):
    return type(x) is not float


class Primitive:
    """A differentiable op: forward, per-argument Jacobian/VJP/JVP rules and its index formula."""

    def __init__(self, name, impl, *, bind, jac, vjp, jvp, formula, battery, doc="", generate=None, numpy=(),
                 methods=()):
        self.name, self.impl, self.bind = name, impl, bind
        self.jac_rules, self.vjp_rules, self.jvp_rules = jac, vjp, jvp
        self.formula, self.battery, self.generate = formula, battery, generate
        self.numpy, self.methods = tuple(numpy), tuple(methods)
        self.__doc__ = f"{doc.strip()}\n\nJacobian: {formula}" if doc else f"Jacobian: {formula}"
        self.__name__ = self.__qualname__ = name
        self.__module__ = "jactensor"
        try:
            self.__signature__ = inspect.signature(bind)
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            self.__signature__ = None

    def __get__(self, obj, objtype=None):
        # makes help(jt.softmax) document a callable with its signature (pydoc treats us as a routine);
        # a primitive stored on a class stays the primitive
        return self

    def _bad_call(self, args, kwargs, err):
        """Re-raise a binding TypeError (wrong keyword, missing argument) naming the primitive and its
        parameters; other TypeErrors pass through unchanged."""
        sig = self.__signature__
        if sig is not None:
            try:
                sig.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{self.name}{sig}: {e}".replace("bind()", self.name)) from None
        raise err

    def __repr__(self):
        return f"<jactensor primitive {self.name}>"

    # ---- binding ----------------------------------------------------------------
    def _bind(self, args, kwargs):
        try:
            inputs, params = self.bind(*args, **kwargs)
        except TypeError as e:
            self._bad_call(args, kwargs, e)
        return [as_input(self.name, k, x) for k, x in enumerate(inputs)], params

    def __call__(self, *args, **kwargs):
        """The forward value (plain numpy outside transforms; recorded inside them)."""
        try:
            inputs, params = self.bind(*args, **kwargs)
        except TypeError as e:
            self._bad_call(args, kwargs, e)
        # fast path (the common case inside grad): float64 arrays, Python floats and Tracers of one
        # level whose values are plain arrays; anything else goes through full validation
        top, plain = 0, not config.check_nan
        for x in inputs:
            tx = type(x)
            if tx is Tracer:
                if x.level > top:
                    top = x.level
                if type(x.value) is Tracer:
                    plain = False
            elif not ((tx is np.ndarray and x.dtype is _F64) or tx is float or tx is int or tx is np.float64):
                plain = False  # ints and numpy float scalars are constants the rules handle as they are
        if not plain:
            inputs, params = self._bind(args, kwargs)
            return self.apply(inputs, params)
        if not top:
            return self.forward(inputs, params)
        vals, parents = [], []
        for k, x in enumerate(inputs):
            if type(x) is Tracer:
                if x.level == top:
                    parents.append((k, x))
                    x = x.value
            vals.append(x)
        ans = self.forward(vals, params)
        return Tracer(ans, top, self, params, vals, parents)

    def apply(self, inputs, params):
        top = 0
        for x in inputs:
            if type(x) is Tracer and x.level > top:
                top = x.level
        if not top:
            ans = self.forward(inputs, params)
            if config.check_nan:
                check_finite(ans, f"{self.name}", f"inputs of shapes {[np.shape(x) for x in inputs]}")
            return ans
        vals, parents, nested = [], [], False
        for k, x in enumerate(inputs):
            if type(x) is Tracer and x.level == top:
                parents.append((k, x))
                x = x.value
            nested = nested or type(x) is Tracer
            vals.append(x)
        ans = self.apply(vals, params) if nested else self.forward(vals, params)
        out = Tracer(ans, top, self, params, vals, parents)
        if config.check_nan:
            step = count_step(top)
            if not nested:
                check_finite(ans, self.name, f"step {step} of the program traced from {level_name(top)}, inputs of "
                                             f"shapes {[np.shape(x) for x in vals]}")
        return out

    def bound(self, *inputs, **params):
        """Internal call with already-bound params: numpy straight away unless an input is traced.

        Derivative rules use it (and numpy operators, methods and ufuncs, which Tracers also
        implement), so a rule costs plain numpy when nothing is being traced around it.
        """
        for x in inputs:
            if type(x) is Tracer:
                return self.apply(inputs, params)
        if _backends.LAZY_TYPES and _backends.lazy_backend(*inputs, *params.values()):  # lazy (jt.jit) values:
            return _backends.call_primitive(self, inputs, params)                     # one call, recorded
        return self.impl(*inputs, **params)

    def forward(self, inputs, params):
        if _backends.LAZY_TYPES:
            for x in inputs:
                if type(x) in _backends.LAZY_TYPES:  # a jit-recorded (or other lazy) value: its backend runs it
                    return _backends.call_primitive(self, inputs, params)
        try:
            return self.impl(*inputs, **params)
        except (JactensorError, np.linalg.LinAlgError):
            raise
        except ValueError as e:
            shapes = ", ".join(str(np.shape(x)) for x in inputs)
            raise ShapeError(f"{self.name}: operands of shapes {shapes} do not fit ({e}); see "
                             f"help(jt.{self.name}) for the shapes it takes") from None

    def array_argnums(self, inputs):
        return tuple(k for k, x in enumerate(inputs) if _is_array(x))

    # ---- rules --------------------------------------------------------------------
    def _rule(self, rules, kind, k):
        rule = rules[k] if k < len(rules) else None
        if rule is None:
            raise NotDifferentiableError(f"{self.name}: no {kind} rule for argument {k}")
        return rule

    def jacobian(self, *args, **kwargs):
        """One full Jacobian per array argument, each of shape ``out.shape + arg.shape``."""
        inputs, params = self._bind(args, kwargs)
        ans = self.forward(inputs, params)
        out = []
        for k in self.array_argnums(inputs):
            J = self._rule(self.jac_rules, "Jacobian", k)(ans, *inputs, **params)
            J.name = f"{self.name} w.r.t. argument {k}"
            if config.debug and J.shape != np.shape(ans) + np.shape(inputs[k]):
                raise ShapeError(f"{self.name}: Jacobian rule {k} gave {J.shape}, expected "
                                 f"{np.shape(ans) + np.shape(inputs[k])}")
            out.append(J)
        return tuple(out)

    def vjp(self, g, *args, **kwargs):
        """Cotangents for every array argument, given ``g`` shaped like the output (no Jacobian built)."""
        inputs, params = self._bind(args, kwargs)
        ans = self.forward(inputs, params)
        g = as_input(self.name, "cotangent", g)
        if np.shape(g)[np.ndim(g) - np.ndim(ans):] != np.shape(ans):
            raise ShapeError(f"{self.name}.vjp: cotangent of shape {np.shape(g)} for an output of shape "
                             f"{np.shape(ans)}; it must end with the output shape")
        return tuple(self._rule(self.vjp_rules, "VJP", k)(g, ans, *inputs, **params)
                     for k in self.array_argnums(inputs))

    def jvp(self, tangents, *args, **kwargs):
        """Output tangent for ``tangents``, one per array argument (None for zero)."""
        inputs, params = self._bind(args, kwargs)
        ans = self.forward(inputs, params)
        argnums = self.array_argnums(inputs)
        if not isinstance(tangents, (tuple, list)):
            tangents = (tangents,)
        if len(tangents) != len(argnums):
            raise ShapeError(f"{self.name}.jvp: {len(tangents)} tangent(s) for {len(argnums)} array argument(s)")
        out = None
        for k, t in zip(argnums, tangents):
            if t is None:
                continue
            t = as_input(self.name, f"tangent {k}", t)
            if np.shape(t)[np.ndim(t) - np.ndim(inputs[k]):] != np.shape(inputs[k]):
                raise ShapeError(f"{self.name}.jvp: tangent of shape {np.shape(t)} for argument {k} of shape "
                                 f"{np.shape(inputs[k])}")
            y = self._rule(self.jvp_rules, "JVP", k)(t, ans, *inputs, **params)
            out = y if out is None else out + y
        return np.zeros(np.shape(ans)) if out is None else out


def check_finite(value, what, where):
    """With config.check_nan on: raise NonFiniteError if ``value`` holds NaN or Inf, naming who produced it."""
    v = value
    while type(v) is Tracer:
        v = v.value
    a = np.asarray(v)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))
        idx = tuple(int(i) for i in bad[0]) if a.ndim else ()
        raise NonFiniteError(f"{what} produced {a[idx]} at index {idx} (shape {a.shape}; {len(bad)} non-finite "
                             f"entries) in {where}; config.check_nan is on (turn it off to let NaN/Inf propagate "
                             f"as in numpy)")
    return value


class PerArg:
    """Rule list for a variadic primitive (einsum, concatenate): rule k is made on demand."""

    def __init__(self, make):
        self.make = make

    def __getitem__(self, k):
        return self.make(k)

    def __len__(self):
        return 1 << 30


def defprimitive(name, impl, *, bind, jac, vjp, jvp, formula, battery, doc="", generate=None, numpy=(),
                 methods=()):
    """Define and register a primitive: one record holding all of its maths.

    ``battery(rng, n)`` lists fixed (args, kwargs) cases (edge cases included); ``generate(rng)`` draws one
    random case (shapes, values and parameters) for property tests; ``numpy`` lists the numpy functions or
    ufuncs (objects or ufunc names) and ``methods`` the ndarray method names that call this primitive on
    traced values.
    """
    prim = registry.add(Primitive(name, impl, bind=bind, jac=jac, vjp=vjp, jvp=jvp, formula=formula,
                                  battery=battery, doc=doc, generate=generate, numpy=numpy, methods=methods))
    numpy_api.register(prim, numpy, methods)
    return prim


def unary_jacobian(d, shape):
    """Elementwise Jacobian: delta over every axis times ``d`` (shape ``shape``)."""
    lab = tuple(range(len(shape)))
    if isinstance(d, float):
        return Jacobian.from_labels(shape, shape, lab + lab, coef=d)
    if type(d) is np.ndarray and d.dtype == _F64 and d.shape == tuple(shape) and 1 not in d.shape:
        # the common case, built directly (canonical labels, nothing to broadcast): cheap per recorded op
        return Jacobian(shape, shape, [Term(1.0, [(d, lab)], lab + lab, dict(zip(lab, shape)))])
    return Jacobian.from_labels(shape, shape, lab + lab, [(d, lab)])


def broadcast_jacobian(d, out_shape, in_shape, coef=1.0):
    """Jacobian of an elementwise op w.r.t. an operand broadcast from ``in_shape`` to ``out_shape``.

    ``d`` (broadcastable to out_shape, or None for 1) is the local derivative;
    an axis the operand broadcasts along gets its own label (no delta).
    """
    no, ni = len(out_shape), len(in_shape)
    out_lab = tuple(range(no))
    in_lab = tuple(out_lab[no - ni + k] if n == out_shape[no - ni + k] else no + k for k, n in enumerate(in_shape))
    factors = []
    if d is not None:
        d = _backends.as_factor(d)  # float64 (a lazy jt.jit value stays lazy)
        factors.append((d, out_lab[no - d.ndim:]))
    return Jacobian.from_labels(out_shape, in_shape, out_lab + in_lab, factors, coef=coef)
