"""Elementwise primitives: unary maps and broadcasting binary arithmetic.

A unary op y = f(x) has the diagonal Jacobian dY[i..]/dX[j..] = delta(i..,j..) f'(X[i..]);
each op below states f' once and the Jacobian, VJP and JVP all use it.
"""
import math

import numpy as np

from ..errors import ShapeError
from ..core import broadcast_jacobian, defprimitive, unary_jacobian
from ..tracer import getval
from ._util import battery, bcast, expand_to, unbroadcast

__all__ = ["negative", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu", "erf",
           "add", "subtract", "multiply", "divide", "power"]


def _bind_unary(x):
    return (x,), {}


def _binder(name):
    def bind(a, b):
        if type(a) is float or type(b) is float or isinstance(a, (int, float)) or isinstance(b, (int, float)):
            return (a, b), {}
        sa, sb = np.shape(a), np.shape(b)
        if sa != sb:
            try:
                np.broadcast_shapes(sa, sb)
            except ValueError:
                raise ShapeError(f"{name}: a has shape {sa} and b has shape {sb}, which do not broadcast (numpy rules: "
                                 f"align from the right, each axis equal or 1); reshape or transpose one operand, "
                                 f"e.g. b[:, None]") from None
        return (a, b), {}
    return bind


def defunary(name, impl, deriv, formula, domain="real", doc="", bind=_bind_unary, params=None):
    """Register y = f(x) from its derivative ``deriv(ans, x, **params)`` (written with primitives)."""
    return defprimitive(
        name, impl, bind=bind, formula=formula, doc=doc,
        jac=[lambda ans, x, **p: unary_jacobian(deriv(ans, x, **p), np.shape(ans))],
        vjp=[lambda g, ans, x, **p: g * deriv(ans, x, **p)],
        jvp=[lambda t, ans, x, **p: t * deriv(ans, x, **p)],
        battery=battery("unary", (domain,), **(params or {})),
        numpy=_ufunc_names(name),
    )


def defbinary(name, impl, derivs, formula, domains=("real", "real"), doc=""):
    """Register z = f(a, b) with numpy broadcasting from ``derivs[k](ans, a, b)`` (a constant, None for 1)."""
    def jac(k):
        def rule(ans, a, b):
            d = derivs[k](ans, a, b)
            return broadcast_jacobian(_dval(d), ans.shape, (a, b)[k].shape, coef=_dcoef(d))
        return rule

    def vjp(k):
        def rule(g, ans, a, b):
            d = derivs[k](ans, a, b)
            y = g if d is None else g * d
            shape = (a, b)[k].shape
            if y.shape == shape:  # no broadcasting and no batch: nothing to sum
                return y
            return unbroadcast(y, shape, g.ndim - ans.ndim)
        return rule

    def jvp(k):
        def rule(t, ans, a, b):
            x = (a, b)[k]
            d = derivs[k](ans, a, b)
            y = expand_to(t, x.shape, ans.ndim)
            y = y if d is None else y * d
            full = t.shape[:t.ndim - x.ndim] + ans.shape
            return y if y.shape == full else bcast(y, full)
        return rule

    return defprimitive(name, impl, bind=_binder(name), formula=formula, doc=doc,
                        jac=[jac(0), jac(1)], vjp=[vjp(0), vjp(1)], jvp=[jvp(0), jvp(1)],
                        battery=battery("binary", domains), numpy=_ufunc_names(name))


def _ufunc_names(name):
    """The numpy ufunc of the same name, if there is one (np.exp on a traced value records exp)."""
    return (name,) if isinstance(getattr(np, name, None), np.ufunc) else ()


def _dval(d):
    return None if d is None or isinstance(d, float) else d


def _dcoef(d):
    return d if isinstance(d, float) else 1.0


# ---- unary -------------------------------------------------------------------------------
negative = defunary(
    "negative", np.negative, lambda ans, x: -1.0,
    "dY[i..]/dX[j..] = -delta(i..,j..)", doc="y = -x, any shape.")

exp = defunary(
    "exp", np.exp, lambda ans, x: ans,
    "dY[i..]/dX[j..] = delta(i..,j..) exp(X[i..])", doc="y = e**x elementwise, any shape.")

log = defunary(
    "log", np.log, lambda ans, x: 1.0 / x,
    "dY[i..]/dX[j..] = delta(i..,j..) / X[i..]", domain="positive", doc="Natural log elementwise; x > 0.")

sqrt = defunary(
    "sqrt", np.sqrt, lambda ans, x: 0.5 / ans,
    "dY[i..]/dX[j..] = delta(i..,j..) / (2 sqrt(X[i..]))", domain="positive", doc="Square root; x > 0.")

tanh = defunary(
    "tanh", np.tanh, lambda ans, x: 1.0 - ans * ans,
    "dY[i..]/dX[j..] = delta(i..,j..) (1 - tanh(X[i..])^2)", doc="Hyperbolic tangent elementwise.")


def _sigmoid(x):
    e = np.exp(-np.abs(x))  # never overflows: stable at |x| = 1e3
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


sigmoid = defunary(
    "sigmoid", _sigmoid, lambda ans, x: ans * (1.0 - ans),
    "dY[i..]/dX[j..] = delta(i..,j..) s(X[i..]) (1 - s(X[i..])),  s = sigmoid",
    doc="Logistic sigmoid 1 / (1 + e**-x), evaluated without overflow.")


def _relu_mask(x):
    return (getval(x) > 0).astype(np.float64)  # a constant: the derivative of the mask is zero


relu = defunary(
    "relu", lambda x: np.maximum(x, 0.0), lambda ans, x: _relu_mask(x),
    "dY[i..]/dX[j..] = delta(i..,j..) [X[i..] > 0]", domain="nonzero",
    doc="max(x, 0); the derivative at 0 is taken as 0 (as in JAX and PyTorch).")

_erf_backend = []


def _erf_impl(x):
    """scipy's vectorised erf when installed (imported on first use: it costs ~0.2 s), else math.erf."""
    if not _erf_backend:
        try:
            from scipy.special import erf as f
        except ImportError:  # pragma: no cover - exercised only without scipy
            f = np.vectorize(math.erf, otypes=[np.float64])
        _erf_backend.append(f)
    return _erf_backend[0](x)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

erf = defunary(
    "erf", lambda x: np.asarray(_erf_impl(x), dtype=np.float64),
    lambda ans, x: _TWO_OVER_SQRT_PI * np.exp(-(x * x)),
    "dY[i..]/dX[j..] = delta(i..,j..) 2/sqrt(pi) exp(-X[i..]^2)", doc="Gauss error function.")

_C = math.sqrt(2.0 / math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu(x, approximate=True):
    if approximate:
        return 0.5 * x * (1.0 + np.tanh(_C * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1.0 + _erf_impl(x * _INV_SQRT2))


def _gelu_deriv(ans, x, approximate=True):
    if approximate:
        th = np.tanh(_C * (x + 0.044715 * x * x * x))
        return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * _C * (1.0 + 3 * 0.044715 * x * x)
    return 0.5 * (1.0 + erf.bound(x * _INV_SQRT2)) + x * np.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _bind_gelu(x, approximate=True):
    return (x,), {"approximate": bool(approximate)}


gelu = defunary(
    "gelu", _gelu, _gelu_deriv,
    "dY[i..]/dX[j..] = delta(i..,j..) g'(X[i..]);  erf form g' = Phi(x) + x phi(x), "
    "tanh form g' = (1+t)/2 + x (1-t^2) c (1 + 3*0.044715 x^2)/2, t = tanh(c (x + 0.044715 x^3)), c = sqrt(2/pi)",
    bind=_bind_gelu, params={"approximate": True},
    doc="GELU. approximate=True: the tanh form (jax.nn.gelu's default); False: the exact erf form "
        "x Phi(x) (torch's default).")


# ---- binary (numpy broadcasting) ---------------------------------------------------------
add = defbinary(
    "add", np.add, (lambda ans, a, b: None, lambda ans, a, b: None),
    "dZ[i..]/dA[j..] = delta(i..,j..) (summed over axes A broadcasts along); same for B",
    doc="a + b with numpy broadcasting.")

subtract = defbinary(
    "subtract", np.subtract, (lambda ans, a, b: None, lambda ans, a, b: -1.0),
    "dZ[i..]/dA[j..] = delta(i..,j..);  dZ[i..]/dB[j..] = -delta(i..,j..)",
    doc="a - b with numpy broadcasting.")

multiply = defbinary(
    "multiply", np.multiply, (lambda ans, a, b: b, lambda ans, a, b: a),
    "dZ[i..]/dA[j..] = delta(i..,j..) B[i..];  dZ[i..]/dB[j..] = delta(i..,j..) A[i..]",
    doc="a * b elementwise with numpy broadcasting.")

divide = defbinary(
    "divide", np.divide, (lambda ans, a, b: 1.0 / b, lambda ans, a, b: -ans / b),
    "dZ[i..]/dA[j..] = delta(i..,j..) / B[i..];  dZ[i..]/dB[j..] = -delta(i..,j..) A[i..] / B[i..]^2",
    domains=("real", "nonzero"), doc="a / b elementwise with numpy broadcasting.")

def _power_da(ans, a, b):
    if type(b) in (float, int) and b == 2:  # x ** 2, the common case: 2 x, one operation
        return 2.0 * a
    return b * a ** (b - 1.0)


power = defbinary(
    "power", np.power, (_power_da, lambda ans, a, b: ans * np.log(a)),
    "dZ[i..]/dA[j..] = delta(i..,j..) B A^(B-1);  dZ[i..]/dB[j..] = delta(i..,j..) A^B log(A)",
    domains=("positive", "real"),
    doc="a ** b elementwise. A Python scalar exponent is a constant (power(x, 2)); an array exponent "
        "is differentiated too and needs a > 0.")
