"""Elementwise primitives: numpy's real ufuncs and their relatives (clip, where, round, sinc, nan_to_num).

A unary op y = f(x) has the diagonal Jacobian dY[i..]/dX[j..] = delta(i..,j..) f'(X[i..]); an op
z = f(a, b, ..) with numpy broadcasting has dZ[i..]/dA[j..] = delta(i..,j..) df/da[i..] on the axes A
has, and a free index on the axes A is broadcast along (the VJP sums over them). Each op states its
derivative once, written with primitives, and its Jacobian, VJP and JVP all use it, so every rule
differentiates again (hessian).

Where the derivative is undefined the conventions are JAX's unless noted, stated in each formula:

- ``abs'(0) = 0`` (sign(0), as PyTorch; JAX 0.10 returns 1); ``relu'(0) = 0``; ``sign``, ``floor``, ``ceil``,
  ``round``, ``rint``, ``trunc``: derivative 0 everywhere, the jumps included (what JAX returns);
- ``maximum``/``minimum``: a tie gives each argument half (0.5/0.5); ``fmax``/``fmin``: a tie goes to the
  second argument, and where one argument is NaN the derivative goes to the other;
- ``clip(a, lo, hi) = minimum(maximum(a, lo), hi)``, ties split as in maximum/minimum;
- ``hypot``: 0 at the origin (the subgradient symmetric in both arguments; JAX gives 0.5, PyTorch NaN);
  ``arctan2``: NaN at the origin (0/0), as JAX;
- ``power``: ``d(a**b)/da = 0`` where ``b == 0``, ``d(a**b)/db = 0`` where ``a == 0``;
- ``nan_to_num``: 1 where x is finite, 0 where a value was replaced;
- ``remainder(a, b) = a - floor(a/b) b``: 1 and ``-floor(a/b)`` (the jumps at multiples of b are ignored).
"""
import math

import numpy as np

from .. import backends as _backends
from ..core import broadcast_jacobian, defprimitive, unary_jacobian
from ..errors import DTypeError, NotDifferentiableError, ShapeError
from ..jacobian import Jacobian
from ..tracer import Tracer, getval
from ._util import (bcast, binary_shapes, broadcast_partner, expand_to, random_array, random_shape, unary_shapes,
                    unbroadcast)

__all__ = ["negative", "positive", "abs", "absolute", "sign", "exp", "exp2", "expm1", "log", "log2", "log10",
           "log1p", "sqrt", "square", "reciprocal", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh",
           "tanh", "arcsinh", "arccosh", "arctanh", "deg2rad", "rad2deg", "sinc", "floor", "ceil", "round", "rint",
           "trunc", "nan_to_num", "sigmoid", "relu", "gelu", "erf",
           "add", "subtract", "multiply", "divide", "true_divide", "power", "float_power", "remainder", "mod",
           "arctan2", "hypot", "logaddexp", "logaddexp2", "maximum", "minimum", "fmax", "fmin", "clip", "where"]

# ---- values for batteries and random cases --------------------------------------------------
def _grid(rng, s, offset):
    """Quarter-integers (plus ``offset``): two grids with different offsets never tie."""
    return rng.integers(-8, 9, size=s) / 4.0 + offset


VALUES = {  # domain -> (rng, shape) -> values; each stays a margin away from the op's poles and jumps
    "real": lambda rng, s: rng.normal(size=s),
    "positive": lambda rng, s: rng.uniform(0.5, 2.0, size=s),
    "nonzero": lambda rng, s: rng.choice([-1.0, 1.0], size=s) * rng.uniform(0.2, 2.0, size=s),
    "unit": lambda rng, s: rng.uniform(-0.9, 0.9, size=s),           # arcsin, arccos, arctanh
    "above1": lambda rng, s: rng.uniform(1.2, 3.0, size=s),          # arccosh
    "prob": lambda rng, s: rng.uniform(0.05, 0.95, size=s),          # logit
    "tan": lambda rng, s: rng.uniform(-1.3, 1.3, size=s),            # tan: away from +-pi/2
    "offint": lambda rng, s: rng.integers(-3, 4, size=s) + rng.choice([-1.0, 1.0], size=s) * rng.uniform(
        0.1, 0.4, size=s),                                           # rounding: away from integers and halves
    "halfint": lambda rng, s: rng.integers(-4, 4, size=s) + 0.5 + rng.uniform(-0.05, 0.05, size=s),
    "smallint": lambda rng, s: rng.choice([-1.0, 1.0], size=s) * rng.integers(1, 4, size=s),
    "grid": lambda rng, s: _grid(rng, s, 0.0),
    "halfgrid": lambda rng, s: _grid(rng, s, 0.125),
    "gamma": lambda rng, s: np.where(rng.random(size=s) < 0.8, rng.uniform(0.2, 6.0, size=s),
                                     -rng.integers(0, 4, size=s) - rng.uniform(0.2, 0.8, size=s)),
}


def values(rng, shape, domain="real"):
    """float64 values of ``shape`` drawn from ``domain`` (a name in VALUES or a function (rng, shape))."""
    f = domain if callable(domain) else VALUES[domain]
    return np.asarray(f(rng, tuple(shape)), dtype=np.float64)


def draw(rng, shape, domain="real", noncontiguous=None):
    """An array of ``shape`` with values from ``domain``; sometimes (or when asked) a non-contiguous view."""
    x = random_array(rng, tuple(shape), "real", noncontiguous)  # the memory layout only
    x[...] = values(rng, np.shape(x), domain)
    return x


def scalar(rng, domain="real"):
    """A Python float from ``domain`` (a constant when passed to a primitive)."""
    return float(values(rng, (), domain))


def _params(rng, params):
    return {k: (v(rng) if callable(v) else v) for k, v in (params or {}).items()}


def unary_battery(domain="real", params=None, extra=()):
    """Fixed cases: 0-d, 1-d, 2-d, batched, a zero-length axis, a non-contiguous view, then ``extra``
    ((args, kwargs) pairs, e.g. the kinks)."""
    def battery(rng, n):
        p = dict(params or {})
        cases = [((draw(rng, s, domain, False),), dict(p)) for s in unary_shapes(n)]
        cases.append(((draw(rng, (n, 0), domain, False),), dict(p)))
        cases.append(((draw(rng, (n, 3), domain, True),), dict(p)))
        return cases + [(tuple(np.array(a, dtype=np.float64) for a in args), dict(p, **kw)) for args, kw in extra]
    return battery


def unary_generate(domain="real", params=None):
    """One random case: a random shape (0-d to 3-d, sometimes empty or non-contiguous) from ``domain``;
    ``params`` values may be functions of rng."""
    def generate(rng):
        return (draw(rng, random_shape(rng), domain),), _params(rng, params)
    return generate


def binary_battery(domains=("real", "real"), extra=()):
    """Fixed broadcasting cases, Python scalars on either side, a zero-length axis, non-contiguous views."""
    da, db = domains

    def battery(rng, n):
        cases = [((draw(rng, a, da, False), draw(rng, b, db, False)), {}) for a, b in binary_shapes(n)]
        cases.append(((draw(rng, (n, 2), da, False), scalar(rng, db)), {}))
        cases.append(((scalar(rng, da), draw(rng, (n,), db, False)), {}))
        cases.append(((draw(rng, (0, n), da, False), draw(rng, (n,), db, False)), {}))
        cases.append(((draw(rng, (n, 3), da, True), draw(rng, (3,), db, True)), {}))
        return cases + [(tuple(np.array(a, dtype=np.float64) for a in args), dict(kw)) for args, kw in extra]
    return battery


def binary_generate(domains=("real", "real")):
    """One random broadcasting case; now and then one operand is a Python scalar (a constant)."""
    def generate(rng):
        sa = random_shape(rng)
        sb = broadcast_partner(rng, sa)
        if rng.random() < 0.5:
            sa, sb = sb, sa
        a, b = draw(rng, sa, domains[0]), draw(rng, sb, domains[1])
        r = rng.random()
        if r < 0.1:
            a = scalar(rng, domains[0])
        elif r < 0.2:
            b = scalar(rng, domains[1])
        return (a, b), {}
    return generate


# ---- rules for broadcasting ops ------------------------------------------------------------------
# A derivative function returns the local derivative d(out)/d(input k) as an array (or Tracer)
# broadcastable to the output, a Python float (a constant), None (exactly 1) or ZERO.
ZERO = object()


def _shape(x):
    """The shape of an array, a numpy scalar or a Tracer (their attribute: cheaper than np.shape)."""
    return x.shape if type(x) in _HAS_SHAPE else np.shape(x)


_HAS_SHAPE = {np.ndarray, Tracer, np.float64}


def broadcast_rules(derivs):
    """(jac, vjp, jvp) rule lists for z = f(*inputs) with numpy broadcasting, from ``derivs[k](ans, *inputs,
    **params)``. The differentiated input (args[k]) is an array or a Tracer; so are g, t and ans."""
    def jac(k):
        def rule(ans, *args, **p):
            d = derivs[k](ans, *args, **p)
            if d is ZERO:
                return Jacobian.zeros(_shape(ans), _shape(args[k]))
            if d is None or isinstance(d, (float, int)):
                return broadcast_jacobian(None, _shape(ans), _shape(args[k]), coef=1.0 if d is None else float(d))
            return broadcast_jacobian(d, _shape(ans), _shape(args[k]))
        return rule

    def vjp(k):
        def rule(g, ans, *args, **p):
            d = derivs[k](ans, *args, **p)
            y = g if d is None else (np.zeros(_shape(g)) if d is ZERO else g * d)
            shape = args[k].shape
            ys = _shape(y)
            if ys == shape:  # no broadcasting and no batch: nothing to sum
                return y
            return unbroadcast(y, shape, len(_shape(g)) - len(_shape(ans)))
        return rule

    def jvp(k):
        def rule(t, ans, *args, **p):
            x = args[k]
            d = derivs[k](ans, *args, **p)
            out, ts = _shape(ans), _shape(t)
            full = ts[:len(ts) - x.ndim] + out
            if d is ZERO:
                return np.zeros(full)
            y = expand_to(t, x.shape, len(out))
            y = y if d is None else y * d
            return y if _shape(y) == full else bcast(y, full)
        return rule

    n = len(derivs)
    return [jac(k) for k in range(n)], [vjp(k) for k in range(n)], [jvp(k) for k in range(n)]


def _check_broadcast(name, named):
    """numpy broadcasting of the named operands, or a ShapeError naming them and their shapes."""
    shapes = [(n, np.shape(getval(x))) for n, x in named]
    try:
        return np.broadcast_shapes(*(s for _, s in shapes))
    except ValueError:
        desc = " and ".join(f"{n} has shape {s}" for n, s in shapes)
        raise ShapeError(f"{name}: {desc}, which do not broadcast (numpy rules: align from the right, each axis "
                         f"equal or 1); reshape or transpose an operand, e.g. b[:, None]") from None


def _binder(name):
    def bind(a, b):
        if not (isinstance(a, (int, float)) or isinstance(b, (int, float))) and _shape(a) != _shape(b):
            _check_broadcast(name, (("a", a), ("b", b)))
        return (a, b), {}
    return bind


def _bind_unary(x):
    return (x,), {}


def _ufunc_names(name):
    """The numpy ufunc of the same name, if there is one (np.exp on a traced value records exp)."""
    return (name,) if isinstance(getattr(np, name, None), np.ufunc) else ()


def defunary(name, impl, deriv, formula, domain="real", doc="", bind=_bind_unary, params=None, numpy=None,
             methods=(), extra=()):
    """Register y = f(x) from its derivative ``deriv(ans, x, **params)`` (written with primitives).

    ``domain`` names the values the battery and ``generate`` draw (see VALUES); ``params`` their keyword
    arguments (values may be functions of rng); ``extra`` adds battery cases (kinks)."""
    return defprimitive(
        name, impl, bind=bind, formula=formula, doc=doc,
        jac=[lambda ans, x, **p: unary_jacobian(deriv(ans, x, **p), np.shape(ans))],
        vjp=[lambda g, ans, x, **p: g * deriv(ans, x, **p)],
        jvp=[lambda t, ans, x, **p: t * deriv(ans, x, **p)],
        battery=unary_battery(domain, {k: v for k, v in (params or {}).items() if not callable(v)}, extra),
        generate=unary_generate(domain, params),
        numpy=_ufunc_names(name) if numpy is None else numpy, methods=methods)


def defstep(name, impl, doc, bind=_bind_unary, domain="offint", params=None, numpy=None, methods=()):
    """Register a piecewise-constant y = f(x): its derivative is 0 everywhere (the jumps included, as in JAX)."""
    return defprimitive(
        name, impl, bind=bind, doc=doc,
        formula="dY[i..]/dX[j..] = 0   (piecewise constant; 0 at the jumps too)",
        jac=[lambda ans, x, **p: Jacobian.zeros(np.shape(ans), _shape(x))],
        vjp=[lambda g, ans, x, **p: np.zeros(g.shape[:g.ndim - len(_shape(ans))] + x.shape)],
        jvp=[lambda t, ans, x, **p: np.zeros(t.shape[:t.ndim - x.ndim] + _shape(ans))],
        battery=unary_battery(domain, {k: v for k, v in (params or {}).items() if not callable(v)}),
        generate=unary_generate(domain, params),
        numpy=_ufunc_names(name) if numpy is None else numpy, methods=methods)


def defbinary(name, impl, derivs, formula, domains=("real", "real"), doc="", numpy=None, extra=(), bind=None):
    """Register z = f(a, b) with numpy broadcasting from ``derivs[k](ans, a, b)`` (see broadcast_rules)."""
    jac, vjp, jvp = broadcast_rules(derivs)
    return defprimitive(name, impl, bind=bind or _binder(name), formula=formula, doc=doc, jac=jac, vjp=vjp, jvp=jvp,
                        battery=binary_battery(domains, extra), generate=binary_generate(domains),
                        numpy=_ufunc_names(name) if numpy is None else numpy)


def as_mask(cond):
    """A boolean condition on values as a float64 0/1 array: a constant (its derivative is zero)."""
    if type(cond) in _backends.LAZY_TYPES:  # a lazy (jt.jit) value: the mask is recorded, recomputed at replay
        return cond.astype(np.float64)
    return np.asarray(cond, dtype=np.float64)


# ---- unary: arithmetic, exponentials and logarithms -------------------------------------------
negative = defunary(
    "negative", np.negative, lambda ans, x: -1.0,
    "dY[i..]/dX[j..] = -delta(i..,j..)", doc="y = -x, any shape.")

positive = defunary(
    "positive", np.positive, lambda ans, x: 1.0,
    "dY[i..]/dX[j..] = delta(i..,j..)", doc="y = +x (a copy), any shape.")

abs = defunary(
    "abs", np.absolute, lambda ans, x: as_mask(np.sign(getval(x))),
    "dY[i..]/dX[j..] = delta(i..,j..) sign(X[i..])   (0 at X = 0)", domain="nonzero",
    numpy=("absolute",), extra=[(([0.0, -1.5, 2.0],), {})],
    doc="|x| elementwise (np.abs, np.absolute, abs(x)); the derivative at 0 is sign(0) = 0 (as PyTorch; "
        "central differences agree; JAX 0.10 returns 1).")
absolute = abs

sign = defstep(
    "sign", np.sign, domain="nonzero",
    doc="-1, 0 or 1 by the sign of x (NaN stays NaN); derivative 0 everywhere, at 0 too.")

exp = defunary(
    "exp", np.exp, lambda ans, x: ans,
    "dY[i..]/dX[j..] = delta(i..,j..) exp(X[i..])", doc="y = e**x elementwise, any shape.")

_LN2, _LN10 = math.log(2.0), math.log(10.0)

exp2 = defunary(
    "exp2", np.exp2, lambda ans, x: ans * _LN2,
    "dY[i..]/dX[j..] = delta(i..,j..) 2^X[i..] log(2)", doc="y = 2**x elementwise.")

expm1 = defunary(
    "expm1", np.expm1, lambda ans, x: ans + 1.0,
    "dY[i..]/dX[j..] = delta(i..,j..) exp(X[i..])", doc="y = e**x - 1, accurate for small x.")

log = defunary(
    "log", np.log, lambda ans, x: 1.0 / x,
    "dY[i..]/dX[j..] = delta(i..,j..) / X[i..]", domain="positive", doc="Natural log elementwise; x > 0.")

log2 = defunary(
    "log2", np.log2, lambda ans, x: 1.0 / (x * _LN2),
    "dY[i..]/dX[j..] = delta(i..,j..) / (X[i..] log(2))", domain="positive", doc="Base-2 log; x > 0.")

log10 = defunary(
    "log10", np.log10, lambda ans, x: 1.0 / (x * _LN10),
    "dY[i..]/dX[j..] = delta(i..,j..) / (X[i..] log(10))", domain="positive", doc="Base-10 log; x > 0.")

log1p = defunary(
    "log1p", np.log1p, lambda ans, x: 1.0 / (1.0 + x),
    "dY[i..]/dX[j..] = delta(i..,j..) / (1 + X[i..])", domain="unit", doc="log(1 + x), accurate for small x; x > -1.")

sqrt = defunary(
    "sqrt", np.sqrt, lambda ans, x: 0.5 / ans,
    "dY[i..]/dX[j..] = delta(i..,j..) / (2 sqrt(X[i..]))", domain="positive", doc="Square root; x > 0.")

square = defunary(
    "square", np.square, lambda ans, x: 2.0 * x,
    "dY[i..]/dX[j..] = delta(i..,j..) 2 X[i..]", doc="x * x elementwise.")

reciprocal = defunary(
    "reciprocal", np.reciprocal, lambda ans, x: -(ans * ans),
    "dY[i..]/dX[j..] = -delta(i..,j..) / X[i..]^2", domain="nonzero", doc="1 / x elementwise; x != 0.")

# ---- unary: trigonometric and hyperbolic ---------------------------------------------------------
sin = defunary(
    "sin", np.sin, lambda ans, x: np.cos(x),
    "dY[i..]/dX[j..] = delta(i..,j..) cos(X[i..])", doc="Sine (radians).")

cos = defunary(
    "cos", np.cos, lambda ans, x: -np.sin(x),
    "dY[i..]/dX[j..] = -delta(i..,j..) sin(X[i..])", doc="Cosine (radians).")

tan = defunary(
    "tan", np.tan, lambda ans, x: 1.0 + ans * ans,
    "dY[i..]/dX[j..] = delta(i..,j..) (1 + tan(X[i..])^2)", domain="tan",
    doc="Tangent (radians); poles at pi/2 + k pi.")

arcsin = defunary(
    "arcsin", np.arcsin, lambda ans, x: 1.0 / np.sqrt(1.0 - x * x),
    "dY[i..]/dX[j..] = delta(i..,j..) / sqrt(1 - X[i..]^2)", domain="unit",
    doc="Inverse sine; -1 <= x <= 1 (derivative infinite at +-1).")

arccos = defunary(
    "arccos", np.arccos, lambda ans, x: -1.0 / np.sqrt(1.0 - x * x),
    "dY[i..]/dX[j..] = -delta(i..,j..) / sqrt(1 - X[i..]^2)", domain="unit",
    doc="Inverse cosine; -1 <= x <= 1 (derivative infinite at +-1).")

arctan = defunary(
    "arctan", np.arctan, lambda ans, x: 1.0 / (1.0 + x * x),
    "dY[i..]/dX[j..] = delta(i..,j..) / (1 + X[i..]^2)", doc="Inverse tangent.")

sinh = defunary(
    "sinh", np.sinh, lambda ans, x: np.cosh(x),
    "dY[i..]/dX[j..] = delta(i..,j..) cosh(X[i..])", doc="Hyperbolic sine.")

cosh = defunary(
    "cosh", np.cosh, lambda ans, x: np.sinh(x),
    "dY[i..]/dX[j..] = delta(i..,j..) sinh(X[i..])", doc="Hyperbolic cosine.")

tanh = defunary(
    "tanh", np.tanh, lambda ans, x: 1.0 - ans * ans,
    "dY[i..]/dX[j..] = delta(i..,j..) (1 - tanh(X[i..])^2)", doc="Hyperbolic tangent elementwise.")

arcsinh = defunary(
    "arcsinh", np.arcsinh, lambda ans, x: 1.0 / np.sqrt(x * x + 1.0),
    "dY[i..]/dX[j..] = delta(i..,j..) / sqrt(X[i..]^2 + 1)", doc="Inverse hyperbolic sine.")

arccosh = defunary(
    "arccosh", np.arccosh, lambda ans, x: 1.0 / np.sqrt(x * x - 1.0),
    "dY[i..]/dX[j..] = delta(i..,j..) / sqrt(X[i..]^2 - 1)", domain="above1",
    doc="Inverse hyperbolic cosine; x >= 1 (derivative infinite at 1).")

arctanh = defunary(
    "arctanh", np.arctanh, lambda ans, x: 1.0 / (1.0 - x * x),
    "dY[i..]/dX[j..] = delta(i..,j..) / (1 - X[i..]^2)", domain="unit", doc="Inverse hyperbolic tangent; |x| < 1.")

deg2rad = defunary(
    "deg2rad", np.deg2rad, lambda ans, x: math.pi / 180.0,
    "dY[i..]/dX[j..] = delta(i..,j..) pi / 180", numpy=("deg2rad", "radians"),
    doc="Degrees to radians (np.deg2rad, np.radians).")

rad2deg = defunary(
    "rad2deg", np.rad2deg, lambda ans, x: 180.0 / math.pi,
    "dY[i..]/dX[j..] = delta(i..,j..) 180 / pi", numpy=("rad2deg", "degrees"),
    doc="Radians to degrees (np.rad2deg, np.degrees).")


# ---- sinc and its derivatives of every order -------------------------------------------------------
def _sinc_u(u, k):
    """The k-th derivative of sin(u)/u (k >= 1): Taylor series near 0, Leibniz's rule elsewhere."""
    u = np.asarray(u, dtype=np.float64)
    out = np.empty(u.shape)
    small = np.abs(u) < 2.0
    us = u[small]
    acc = np.zeros(us.shape)
    n0 = (k + 1) // 2
    for n in range(n0 + 40, n0 - 1, -1):  # sum_n (-1)^n (2n)! / ((2n-k)! (2n+1)!) u^(2n-k), smallest terms first
        c = (-1) ** n * math.factorial(2 * n) / (math.factorial(2 * n - k) * math.factorial(2 * n + 1))
        acc += c * us ** (2 * n - k)
    out[small] = acc
    ul = u[~small]
    s, c = np.sin(ul), np.cos(ul)
    sin_derivs = (s, c, -s, -c)
    acc = np.zeros(ul.shape)
    for j in range(k + 1):  # d^k/du^k [sin(u) u^-1] = sum_j C(k,j) sin^(k-j)(u) (-1)^j j! u^-(j+1)
        acc += math.comb(k, j) * sin_derivs[(k - j) % 4] * ((-1) ** j * math.factorial(j)) / ul ** (j + 1)
    out[~small] = acc
    return out


def _sinc(x, order=0):
    if order == 0:
        return np.sinc(x)
    return math.pi ** order * _sinc_u(math.pi * np.asarray(x, dtype=np.float64), order)


def _bind_sinc(x, order=0):
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"sinc: order must be a non-negative int (the derivative order); got {order!r}")
    return (x,), {"order": int(order)}


sinc = defunary(
    "sinc", _sinc, lambda ans, x, order: sinc.bound(x, order=order + 1),
    "dY[i..]/dX[j..] = delta(i..,j..) sinc'(X[i..]),  sinc'(x) = (cos(pi x) - sinc(x)) / x,  sinc'(0) = 0",
    bind=_bind_sinc, numpy=(np.sinc,), extra=[(([0.0, 1.0, -2.0, 0.3],), {}), (([0.0, 0.4, -3.0],), {"order": 1}),
                            (([0.0, 0.7, 2.5],), {"order": 2})],
    doc="sin(pi x) / (pi x), 1 at x = 0 (numpy's normalised sinc). order=k (a jactensor extension, what the "
        "derivative rules call) gives the k-th derivative, smooth at 0 (Maclaurin series there).")


floor = defstep("floor", np.floor, "The largest integer <= x (as float); derivative 0 everywhere.")
ceil = defstep("ceil", np.ceil, "The smallest integer >= x (as float); derivative 0 everywhere.")
rint = defstep("rint", np.rint, "Round to the nearest integer, halves to even; derivative 0 everywhere.")
trunc = defstep("trunc", np.trunc, "Round towards zero; derivative 0 everywhere.")


def _bind_round(a, decimals=0):
    if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)):
        raise ValueError(f"round: decimals must be an int; got {decimals!r}")
    return (a,), {"decimals": int(decimals)}


def _round_generate(rng):
    d = int(rng.integers(-1, 3))
    x = draw(rng, random_shape(rng), "offint")
    x *= 10.0 ** -d  # in place: keeps a non-contiguous layout; still a margin away from the rounding jumps
    return (x,), {"decimals": d}


round = defstep(
    "round", lambda a, decimals: np.round(a, decimals), bind=_bind_round, methods=("round",),
    numpy=tuple(f for f in (np.round, getattr(np, "around", None)) if f is not None),
    doc="np.round(a, decimals=0): halves to even; derivative 0 everywhere. Also the method x.round().")
round.generate = _round_generate


def _bind_nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    if not copy:
        raise ValueError("nan_to_num: copy=False asks numpy to overwrite x in place; jactensor never writes "
                         "into its inputs. Drop copy=False and use the returned array")
    for k, v in (("nan", nan), ("posinf", posinf), ("neginf", neginf)):
        bad = type(v) is Tracer or np.ndim(v) != 0 or isinstance(v, (complex, str)) if v is not None else k == "nan"
        if bad:
            raise ValueError(f"nan_to_num: {k} must be a real scalar{'' if k == 'nan' else ' or None'} (a constant "
                             f"replacement value); got {v!r}")
    return (x,), {"nan": float(nan), "posinf": None if posinf is None else float(posinf),
                  "neginf": None if neginf is None else float(neginf)}


def _nan_to_num_generate(rng):
    p = {k: (None if rng.random() < 0.5 else float(rng.normal())) for k in ("posinf", "neginf")}
    if rng.random() < 0.5:
        p["nan"] = float(rng.normal())
    return (draw(rng, random_shape(rng)),), p


nan_to_num = defunary(
    "nan_to_num", lambda x, nan, posinf, neginf: np.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf),
    lambda ans, x, **p: as_mask(np.isfinite(getval(x))),
    "dY[i..]/dX[j..] = delta(i..,j..) [X[i..] finite]   (0 where NaN/Inf was replaced)",
    bind=_bind_nan_to_num, numpy=(np.nan_to_num,),
    doc="NaN -> nan (0.0), +Inf -> posinf (the largest float), -Inf -> neginf (the most negative float); "
        "the derivative is 1 where x is finite and 0 where a value was replaced.")
nan_to_num.generate = _nan_to_num_generate


# ---- activations and the error function ----------------------------------------------------------
def _sigmoid(x):
    e = np.exp(-np.abs(x))  # never overflows: stable at |x| = 1e3
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


sigmoid = defunary(
    "sigmoid", _sigmoid, lambda ans, x: ans * (1.0 - ans),
    "dY[i..]/dX[j..] = delta(i..,j..) s(X[i..]) (1 - s(X[i..])),  s = sigmoid",
    numpy=("expit",),
    doc="Logistic sigmoid 1 / (1 + e**-x), evaluated without overflow (scipy.special.expit, jt.special.expit).")


def _reluas_mask(x):
    return as_mask(getval(x) > 0)  # a constant: the derivative of the mask is zero


relu = defunary(
    "relu", lambda x: np.maximum(x, 0.0), lambda ans, x: _reluas_mask(x),
    "dY[i..]/dX[j..] = delta(i..,j..) [X[i..] > 0]   (0 at X = 0, as in JAX and PyTorch)", domain="nonzero",
    # the kink: central differences see the mean of the one-sided slopes (0.5) there, so this case admits
    # that in the finite-difference row alone; the VJP and JVP must still match the Jacobian's 0 exactly
    # (tests/test_ops_elementwise.py pins the value 0 itself)
    extra=[(([0.0],), {"fd_tol": 0.5 + 1e-6})],
    numpy=(),
    doc="max(x, 0); the derivative at 0 is taken as 0 (as in JAX and PyTorch).")


def scipy_special(name, fallback):
    """scipy.special.<name> when scipy is installed (imported on first use: it costs ~0.2 s), else
    ``fallback`` (a vectorised math-module function)."""
    cache = []

    def f(*args):
        if not cache:
            try:
                import scipy.special as sp
                cache.append(getattr(sp, name))
            except ImportError:
                cache.append(fallback)
        return cache[0](*args)
    f.__name__ = name
    f.fallback = fallback
    f.cache = cache  # tests clear it to exercise the fallback
    return f


_erf_impl = scipy_special("erf", np.vectorize(math.erf, otypes=[np.float64]))
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

erf = defunary(
    "erf", lambda x: np.asarray(_erf_impl(x), dtype=np.float64),
    lambda ans, x: _TWO_OVER_SQRT_PI * np.exp(-(x * x)),
    "dY[i..]/dX[j..] = delta(i..,j..) 2/sqrt(pi) exp(-X[i..]^2)", numpy=("erf",),
    doc="Gauss error function (scipy.special.erf when scipy is installed, else math.erf).")

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
    bind=_bind_gelu, params={"approximate": lambda rng: bool(rng.random() < 0.5)},
    extra=[(([-1.0, 0.5, 2.0],), {"approximate": False})],
    doc="GELU. approximate=True: the tanh form (jax.nn.gelu's default); False: the exact erf form "
        "x Phi(x) (torch's default).")


# ---- binary (numpy broadcasting) ---------------------------------------------------------------
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
    domains=("real", "nonzero"),
    doc="a / b elementwise with numpy broadcasting (np.divide, np.true_divide: the same ufunc).")
true_divide = divide


def _is_const(v):
    return type(v) is not Tracer and not isinstance(v, np.ndarray)


def _power_da(ans, a, b):
    if _is_const(b):
        if b == 2:  # x ** 2, the common case: 2 x, one operation
            return 2.0 * a
        if b == 0:
            return ZERO
        return b * a ** (b - 1.0)
    zb = as_mask(getval(b) == 0)  # b == 0: the derivative is 0; the exponent b - 1 + 1 keeps a ** . finite there
    return b * a ** (b - 1.0 + zb)


def _power_db(ans, a, b):
    if _is_const(a):
        if a == 0:
            return ZERO
        with np.errstate(invalid="ignore"):  # a < 0: NaN, as numpy's a ** b is for non-integer b
            return ans * np.log(np.float64(a))
    za = as_mask(getval(a) == 0)  # a == 0: the derivative is 0 (log(1) there), as in JAX
    return ans * np.log(a + za)


def _power_generate(rng):
    r = rng.random()
    sa = random_shape(rng)
    if r < 0.2:  # a constant integer exponent: any base (away from 0, where x ** -1 has its pole)
        return (draw(rng, sa, "nonzero"), int(rng.choice([2, 3, -1, 0]))), {}
    if r < 0.3:  # a constant fractional exponent: a positive base
        return (draw(rng, sa, "positive"), float(rng.choice([0.5, -1.5, 2.5]))), {}
    sb = broadcast_partner(rng, sa)
    if rng.random() < 0.5:
        sa, sb = sb, sa
    base = scalar(rng, "positive") if r > 0.9 else draw(rng, sa, "positive")
    return (base, draw(rng, sb)), {}


power = defbinary(
    "power", np.power, (_power_da, _power_db),
    "dZ[i..]/dA[j..] = delta(i..,j..) B A^(B-1)  (0 where B = 0);  "
    "dZ[i..]/dB[j..] = delta(i..,j..) A^B log(A)  (0 where A = 0)",
    domains=("positive", "real"), numpy=("power", "float_power"),
    extra=[(([0.0, 2.0], [2.0, 0.0]), {})],  # a = 0 and b = 0, where the conventions apply
    doc="a ** b elementwise (np.power, np.float_power, the ** operator with either side traced). A Python "
        "scalar exponent is a constant (power(x, 2)); an array exponent is differentiated too and needs a > 0 "
        "(or a == 0, where its derivative is taken as 0, as in JAX).")
power.generate = _power_generate
float_power = power


def _remainder_db(ans, a, b):
    return -np.floor(getval(a) / getval(b))  # piecewise constant in a and b: a constant


remainder = defbinary(
    "remainder", np.remainder, (lambda ans, a, b: None, _remainder_db),
    "dZ[i..]/dA[j..] = delta(i..,j..);  dZ[i..]/dB[j..] = -delta(i..,j..) floor(A[i..] / B[i..])   "
    "(the jumps at multiples of B are ignored)",
    domains=("halfint", "smallint"), numpy=("remainder",),
    doc="a - floor(a / b) * b (np.remainder, np.mod, Python's %: the sign of b); b != 0.")
mod = remainder


def _arctan2_d(k):
    def d(ans, y, x):
        r2 = x * x + y * y
        return x / r2 if k == 0 else -y / r2
    return d


arctan2 = defbinary(
    "arctan2", np.arctan2, (_arctan2_d(0), _arctan2_d(1)),
    "dZ[i..]/dY[j..] = delta(i..,j..) X / (X^2 + Y^2);  dZ[i..]/dX[j..] = -delta(i..,j..) Y / (X^2 + Y^2)   "
    "(NaN at the origin, as in JAX)",
    domains=("nonzero", "nonzero"),
    doc="arctan2(a, b): the angle of the point (b, a), in [-pi, pi]; numpy's argument order (y first).")


def _hypot_d(k):
    def d(ans, a, b):
        zero = as_mask(getval(ans) == 0)  # the origin: derivative 0 (a / 1 with a = 0)
        return (a, b)[k] / (ans + zero)
    return d


hypot = defbinary(
    "hypot", np.hypot, (_hypot_d(0), _hypot_d(1)),
    "dZ[i..]/dA[j..] = delta(i..,j..) A / Z;  dZ[i..]/dB[j..] = delta(i..,j..) B / Z   (0 at the origin)",
    domains=("nonzero", "nonzero"), extra=[(([0.0, 3.0], [0.0, 4.0]), {})],
    doc="sqrt(a**2 + b**2) without overflow; the derivative at the origin is taken as 0, a subgradient and the "
        "only one symmetric in a and b (JAX returns 0.5, PyTorch NaN).")


def _no_posinf(v):
    """+Inf replaced by 0 (as JAX's logaddexp rule does), so inf - inf never makes the derivative NaN."""
    inf = getval(v) == np.inf
    return where.bound(v, 0.0, condition=~inf) if np.any(inf) else v


def _logaddexp_d(k, base_exp):
    def d(ans, a, b):
        return base_exp(_no_posinf((a, b)[k]) - _no_posinf(ans))
    return d


logaddexp = defbinary(
    "logaddexp", np.logaddexp, (_logaddexp_d(0, lambda v: np.exp(v)), _logaddexp_d(1, lambda v: np.exp(v))),
    "dZ[i..]/dA[j..] = delta(i..,j..) exp(A[i..] - Z[i..]);  dZ[i..]/dB[j..] = delta(i..,j..) exp(B[i..] - Z[i..])",
    doc="log(exp(a) + exp(b)) without overflow.")

logaddexp2 = defbinary(
    "logaddexp2", np.logaddexp2,
    (_logaddexp_d(0, lambda v: np.exp2(v)), _logaddexp_d(1, lambda v: np.exp2(v))),
    "dZ[i..]/dA[j..] = delta(i..,j..) 2^(A[i..] - Z[i..]);  dZ[i..]/dB[j..] = delta(i..,j..) 2^(B[i..] - Z[i..])",
    doc="log2(2**a + 2**b) without overflow.")


def _pick(k, first_wins):
    """Derivative of a selection between a and b: ``first_wins(a, b)`` is where a is taken (values)."""
    def d(ans, a, b):
        m = as_mask(first_wins(getval(a), getval(b)))
        return m if k == 0 else 1.0 - m
    return d


def _balanced(k):
    """maximum/minimum: the argument equal to the result gets 1, or 0.5 each on a tie (NaN: 0 both)."""
    def d(ans, a, b):
        av, bv, z = getval(a), getval(b), getval(ans)
        mine, other = (av, bv) if k == 0 else (bv, av)
        return as_mask(mine == z) * (1.0 - 0.5 * as_mask(other == z))
    return d


_TIES = [(([0.5, 1.0, -2.0], [0.5, -1.0, -2.0]), {})]  # ties: central differences see the 0.5/0.5 split too

maximum = defbinary(
    "maximum", np.maximum, (_balanced(0), _balanced(1)),
    "dZ[i..]/dA[j..] = delta(i..,j..) ([A > B] + [A = B] / 2);  dZ[i..]/dB[j..] = delta(i..,j..) ([B > A] + "
    "[A = B] / 2)   (ties split equally, as in JAX)",
    domains=("grid", "halfgrid"), extra=_TIES,
    doc="Elementwise maximum with numpy broadcasting (NaN propagates); a tie gives each argument half.")

minimum = defbinary(
    "minimum", np.minimum, (_balanced(0), _balanced(1)),
    "dZ[i..]/dA[j..] = delta(i..,j..) ([A < B] + [A = B] / 2);  dZ[i..]/dB[j..] = delta(i..,j..) ([B < A] + "
    "[A = B] / 2)   (ties split equally, as in JAX)",
    domains=("grid", "halfgrid"), extra=_TIES,
    doc="Elementwise minimum with numpy broadcasting (NaN propagates); a tie gives each argument half.")

# fmax/fmin at a tie: the derivative goes to b (JAX's where(a > b | isnan(b), a, b)); central differences
# see 0.5 there, so the tie case admits that in the finite-difference row alone
_TIES_TO_B = [(([0.5, 1.0], [0.5, -1.0]), {"fd_tol": 0.5 + 1e-6})]

fmax = defbinary(
    "fmax", np.fmax, (_pick(0, lambda a, b: (a > b) | np.isnan(b)), _pick(1, lambda a, b: (a > b) | np.isnan(b))),
    "dZ[i..]/dA[j..] = delta(i..,j..) [A > B or B is NaN];  dZ[i..]/dB[j..] = delta(i..,j..) (1 - [A > B or B is "
    "NaN])   (a tie goes to B, as in JAX)",
    domains=("grid", "halfgrid"), extra=_TIES_TO_B,
    doc="Elementwise maximum ignoring NaN (the other argument is taken); a tie's derivative goes to b.")

fmin = defbinary(
    "fmin", np.fmin, (_pick(0, lambda a, b: (a < b) | np.isnan(b)), _pick(1, lambda a, b: (a < b) | np.isnan(b))),
    "dZ[i..]/dA[j..] = delta(i..,j..) [A < B or B is NaN];  dZ[i..]/dB[j..] = delta(i..,j..) (1 - [A < B or B is "
    "NaN])   (a tie goes to B, as in JAX)",
    domains=("grid", "halfgrid"), extra=_TIES_TO_B,
    doc="Elementwise minimum ignoring NaN (the other argument is taken); a tie's derivative goes to b.")


# ---- clip ---------------------------------------------------------------------------------------
def _bind_clip(a, a_min=None, a_max=None, out=None, *, min=None, max=None):
    if out is not None:
        raise ValueError("clip: out= is not supported (jactensor returns a new array); drop it")
    for alias, pos, name in ((min, a_min, "a_min"), (max, a_max, "a_max")):
        if alias is not None and pos is not None:
            raise ValueError(f"clip: both {name} and its alias {'min' if name == 'a_min' else 'max'} were given; "
                             f"pass one")
    lo = a_min if min is None else min
    hi = a_max if max is None else max
    named = [("a", a)] + [(n, v) for n, v in (("a_min", lo), ("a_max", hi)) if v is not None]
    _check_broadcast("clip", named)
    bounds = tuple(n for n, v in (("min", lo), ("max", hi)) if v is not None)
    return tuple(v for _, v in named), {"bounds": bounds}


def _clip(a, *lims, bounds):
    lim = dict(zip(bounds, lims))
    y = a if "min" not in lim else np.maximum(a, lim["min"])
    y = y if "max" not in lim else np.minimum(y, lim["max"])
    return np.array(y, dtype=np.float64)  # a copy even without bounds, as np.clip


def _clip_masks(ans, a, lims, bounds):
    """(dY/dA, dY/dmin, dY/dmax) as 0/0.5/1 arrays: clip = minimum(maximum(a, lo), hi), JAX's split ties."""
    lim = {k: getval(v) for k, v in zip(bounds, lims)}
    av = getval(a)
    if "min" in lim:
        m = np.maximum(av, lim["min"])
        dm_da, dm_dlo = as_mask(av == m) * (1.0 - 0.5 * as_mask(lim["min"] == m)), \
            as_mask(lim["min"] == m) * (1.0 - 0.5 * as_mask(av == m))
    else:
        m, dm_da, dm_dlo = av, 1.0, 0.0
    if "max" in lim:
        y = getval(ans)
        dy_dm = as_mask(m == y) * (1.0 - 0.5 * as_mask(lim["max"] == y))
        dy_dhi = as_mask(lim["max"] == y) * (1.0 - 0.5 * as_mask(m == y))
    else:
        dy_dm, dy_dhi = 1.0, 0.0
    return {"a": dy_dm * dm_da, "min": dy_dm * dm_dlo, "max": dy_dhi}


def _clip_d(k):
    def d(ans, a, *lims, bounds):
        role = ("a",) + bounds
        v = _clip_masks(ans, a, lims, bounds)[role[k]]
        return float(v) if np.ndim(v) == 0 else v
    return d


def _clip_generate(rng):
    s = random_shape(rng)
    a = draw(rng, s, "grid")
    args = [a]
    r = rng.random()
    for use in (r < 0.8, r > 0.3):  # min, max: at least one
        if use:
            args.append(draw(rng, broadcast_partner(rng, s), "halfgrid") if rng.random() < 0.7 else
                        scalar(rng, "halfgrid"))
        else:
            args.append(None)
    return tuple(args), {}


def _clip_battery(rng, n):
    a = draw(rng, (n, 3), "grid", False)
    return [((a, -0.375, 0.625), {}), ((a, draw(rng, (3,), "halfgrid"), None), {}),
            ((a, None, draw(rng, (n, 1), "halfgrid")), {}),
            ((draw(rng, (), "grid", False), draw(rng, (n,), "halfgrid"), draw(rng, (2, 1), "halfgrid")), {}),
            ((draw(rng, (n, 0), "grid", False), -0.5, 0.5), {}),
            ((draw(rng, (n, 3), "grid", True), -0.375, None), {}),
            ((np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), np.array(0.0), np.array(1.0)), {}),  # ties at both bounds
            ((np.array([0.0, 2.0]), np.array([0.5, 0.5]), np.array([-1.0, -1.0])), {})]  # lo > hi: y = hi


_clip_jac, _clip_vjp, _clip_jvp = broadcast_rules([_clip_d(0), _clip_d(1), _clip_d(2)])

clip = defprimitive(
    "clip", _clip, bind=_bind_clip,
    formula="dY[i..]/dA[j..] = delta(i..,j..) [lo < A < hi] (1/2 at A = lo or A = hi);  dY[i..]/dLo[j..] = "
            "delta(i..,j..) [A < lo, lo < hi];  dY[i..]/dHi[j..] = delta(i..,j..) [hi < max(A, lo)]   "
            "(Y = minimum(maximum(A, lo), hi) with maximum/minimum's split ties, as in JAX)",
    doc="np.clip(a, a_min, a_max) (also min=/max= and the method x.clip): either bound may be None, any "
        "bound may be an array (broadcasting) and is differentiated. As numpy: minimum(maximum(a, a_min), a_max), "
        "so a_min > a_max gives a_max. At a tie the derivative is split equally, as in JAX.",
    jac=_clip_jac, vjp=_clip_vjp, jvp=_clip_jvp, battery=_clip_battery, generate=_clip_generate,
    numpy=(np.clip,), methods=("clip",))


# ---- where --------------------------------------------------------------------------------------
_MISSING = object()


def _bind_where(condition, x=_MISSING, y=_MISSING):
    if x is _MISSING or y is _MISSING:
        raise NotDifferentiableError(
            "where: the one-argument form where(condition) returns the indices of the true entries, which have no "
            "derivative; use np.nonzero(jt.getval(condition)) for the indices, or the three-argument form "
            "where(condition, x, y) to select values")
    c = getval(condition)
    c = c if type(c) in _backends.LAZY_TYPES else np.asarray(c)  # a lazy (jt.jit) condition stays recorded
    if c.dtype.kind not in "biuf":
        raise DTypeError(f"where: condition has dtype {c.dtype} (shape {c.shape}); pass a boolean array "
                         f"(e.g. x > 0)")
    _check_broadcast("where", (("condition", c), ("x", x), ("y", y)))
    return (x, y), {"condition": c.astype(bool)}


def _where_generate(rng):
    s = random_shape(rng)
    cond = rng.random(size=broadcast_partner(rng, s)) < 0.5
    x = draw(rng, broadcast_partner(rng, s)) if rng.random() < 0.85 else scalar(rng)
    y = draw(rng, s if rng.random() < 0.5 else broadcast_partner(rng, s)) if rng.random() < 0.85 else scalar(rng)
    return (cond, x, y), {}


def _where_battery(rng, n):
    c = rng.random(size=(n, 3)) < 0.5
    return [((c, draw(rng, (n, 3)), draw(rng, (n, 3))), {}),
            ((c, draw(rng, (3,)), 2.5), {}),
            ((c[0], draw(rng, (n, 1)), draw(rng, ())), {}),
            ((np.array(True), draw(rng, ()), draw(rng, (n,))), {}),
            ((c.astype(np.float64), draw(rng, (n, 3), noncontiguous=True), draw(rng, (3,))), {}),
            ((np.zeros((0, n), dtype=bool), draw(rng, (n,)), draw(rng, (0, 1))), {})]


_where_rules = broadcast_rules([lambda ans, x, y, condition: as_mask(condition),
                                lambda ans, x, y, condition: as_mask(~condition)])

where = defprimitive(
    "where", lambda x, y, condition: np.where(condition, x, y), bind=_bind_where,
    formula="dZ[i..]/dX[j..] = delta(i..,j..) [C[i..]];  dZ[i..]/dY[j..] = delta(i..,j..) [not C[i..]]   "
            "(C broadcast; X and Y summed over the axes they broadcast along)",
    doc="np.where(condition, x, y): x where the condition holds, else y, with numpy broadcasting of all three. "
        "The condition is a constant boolean array (a comparison of traced values, x > 0, already is one); "
        "the one-argument form where(condition) returns indices and is not differentiable.",
    jac=_where_rules[0], vjp=_where_rules[1], jvp=_where_rules[2],
    battery=_where_battery, generate=_where_generate, numpy=(np.where,))
