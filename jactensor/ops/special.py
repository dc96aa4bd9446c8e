"""Special functions (scipy.special's names): logit, erfc, gammaln, digamma/psi, polygamma, xlogy, xlog1py, entr.

``jt.special`` collects these with expit (= jt.sigmoid), erf, softmax, log_softmax and logsumexp. scipy is
optional: when it is installed its ufuncs compute erfc, gammaln, digamma and polygamma (imported on first
use); without it they fall back to vectorised math-module functions (math.erfc, math.lgamma) and to the
series below for digamma and polygamma. No derivative rule needs scipy: d gammaln = digamma,
d digamma = polygamma(1, .), d polygamma(n, .) = polygamma(n + 1, .), all primitives, so derivatives of
any order exist.

Domains and conventions (as scipy and JAX):
- logit(p) = log(p / (1 - p)) for 0 <= p <= 1 (+-inf at the ends, NaN outside);
- gammaln(x) = log|Gamma(x)|: +inf at the poles x = 0, -1, -2, ...; its derivative is digamma(x) everywhere
  else, negative x included;
- digamma(x): -inf at 0, NaN at the negative integers; polygamma(n, x), n >= 1: (-1)^(n+1) inf at the poles;
- xlogy(x, y) = x log(y) and xlog1py(x, y) = x log(1 + y), both 0 where x == 0 (unless y is NaN); their
  derivatives are JAX's: log(y) (resp. log(1 + y)) in x and x / y (resp. x / (1 + y)) in y everywhere;
- entr(x) = -x log(x) for x > 0, 0 at 0, -inf for x < 0; derivative -(1 + log x) for x > 0 (+inf at 0, as
  JAX) and 0 for x < 0, where entr is constant (JAX and PyTorch return NaN there).
"""
import math

import numpy as np

from ..core import defprimitive, unary_jacobian
from ..tracer import Tracer, getval
from ._util import random_shape, unary_shapes
from .elementwise import _erf_impl, as_mask, defbinary, defunary, draw, scipy_special

__all__ = ["logit", "erfc", "gammaln", "digamma", "psi", "polygamma", "xlogy", "xlog1py", "entr"]


def _vectorised(f):
    return np.vectorize(f, otypes=[np.float64])


def _lgamma(v):
    try:
        return math.lgamma(v)
    except ValueError:  # a pole (0, -1, -2, ...): log|Gamma| is +inf there, as scipy returns
        return math.inf


# ---- digamma and polygamma without scipy ----------------------------------------------------------
_B2K = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798, -174611 / 330)
# Bernoulli numbers B_2, B_4, ..., B_20 (the asymptotic series' coefficients)


def _cot_derivative(n):
    """Coefficients (lowest degree first) of P_n with d^n/dz^n cot(z) = P_n(cot z); d cot = -(1 + cot^2)."""
    P = np.polynomial.polynomial
    p = np.array([0.0, 1.0])
    for _ in range(n):
        p = -P.polymul(P.polyder(p), [1.0, 0.0, 1.0])
    return p


def _polygamma_asymptotic(n, z):
    """psi^(n)(z) for z >= 15 + n from the asymptotic series (10 Bernoulli terms: error below 1e-16)."""
    if n == 0:
        out = np.log(z) - 0.5 / z
        z2k = np.ones_like(z)
        for k, b in enumerate(_B2K, start=1):
            z2k = z2k * z * z
            out -= b / (2 * k * z2k)
        return out
    out = math.factorial(n - 1) / z ** n + math.factorial(n) / (2.0 * z ** (n + 1))
    for k, b in enumerate(_B2K, start=1):
        out += b * (math.factorial(2 * k + n - 1) / math.factorial(2 * k)) / z ** (2 * k + n)
    return (-1.0) ** (n + 1) * out


def _polygamma_positive(n, z):
    """psi^(n)(z) for z >= -10 (not a pole): the recurrence psi^(n)(z) = psi^(n)(z + 1) - (-1)^n n! / z^(n+1)
    up to 15 + n, then the asymptotic series."""
    z = np.array(z, dtype=np.float64)
    acc = np.zeros(z.shape)
    step = (-1.0) ** n * math.factorial(n)
    top = 15.0 + n
    while True:
        low = z < top
        if not low.any():
            break
        zl = z[low]
        acc[low] -= step / zl ** (n + 1)
        z[low] = zl + 1.0
    return acc + _polygamma_asymptotic(n, z)


def polygamma_series(n, x):
    """psi^(n)(x) (digamma for n = 0) without scipy, for any real x: for x < -10 the reflection formula
    psi^(n)(x) = (-1)^n psi^(n)(1 - x) - pi d^n/dx^n cot(pi x), then the recurrence up to 15 + n and the
    asymptotic series. Poles and infinities as scipy."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    pole = (x <= 0) & (x == np.floor(x))
    ok = np.isfinite(x) & ~pole
    xv = x[ok]
    refl = xv < -10.0
    val = _polygamma_positive(n, np.where(refl, 1.0 - xv, xv))
    if refl.any():
        xr = xv[refl]
        cot = 1.0 / np.tan(math.pi * (xr - np.round(xr)))  # cot has period pi: reduce exactly first
        val[refl] = (-1.0) ** n * val[refl] - math.pi ** (n + 1) * np.polynomial.polynomial.polyval(
            cot, _cot_derivative(n))
    out[ok] = val
    if n == 0:
        out[pole & (x == 0)] = -np.inf
    else:
        out[pole] = (-1.0) ** (n + 1) * np.inf
    out[x == np.inf] = np.inf if n == 0 else 0.0
    return out


_erfc = scipy_special("erfc", _vectorised(math.erfc))
_gammaln = scipy_special("gammaln", _vectorised(_lgamma))
_psi = scipy_special("psi", lambda x: polygamma_series(0, x))
_polygamma = scipy_special("polygamma", polygamma_series)
SCIPY_BACKED = {"erf": _erf_impl, "erfc": _erfc, "gammaln": _gammaln, "psi": _psi, "polygamma": _polygamma}
# each has .fallback (used without scipy) and .cache (the resolved function; empty until first use)


def _f64(v):
    return np.asarray(v, dtype=np.float64)


# ---- unary special functions ---------------------------------------------------------------------
def _logit(p):
    with np.errstate(divide="ignore", invalid="ignore"):  # +-inf at 0 and 1, NaN outside, silently as scipy
        return np.log(p) - np.log1p(-p)


logit = defunary(
    "logit", _logit, lambda ans, p: 1.0 / (p * (1.0 - p)),
    "dY[i..]/dP[j..] = delta(i..,j..) / (P[i..] (1 - P[i..]))", domain="prob", numpy=("logit",),
    doc="log(p / (1 - p)), the inverse of expit; 0 <= p <= 1.")

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

erfc = defunary(
    "erfc", lambda x: _f64(_erfc(x)), lambda ans, x: -_TWO_OVER_SQRT_PI * np.exp(-(x * x)),
    "dY[i..]/dX[j..] = -delta(i..,j..) 2/sqrt(pi) exp(-X[i..]^2)", numpy=("erfc",),
    doc="Complementary error function 1 - erf(x), accurate where erf(x) is close to 1.")

gammaln = defunary(
    "gammaln", lambda x: _f64(_gammaln(x)), lambda ans, x: digamma.bound(x),
    "dY[i..]/dX[j..] = delta(i..,j..) digamma(X[i..])", domain="gamma", numpy=("gammaln",),
    doc="log|Gamma(x)| (+inf at the poles 0, -1, -2, ...); its derivative is digamma, negative x included.")

digamma = defunary(
    "digamma", lambda x: _f64(_psi(x)), lambda ans, x: polygamma.bound(x, n=1),
    "dY[i..]/dX[j..] = delta(i..,j..) polygamma(1, X[i..])", domain="gamma", numpy=("psi", "digamma"),
    doc="The digamma function psi(x) = d/dx log Gamma(x) (scipy.special.psi and .digamma: one ufunc); "
        "-inf at 0, NaN at the negative integers.")
psi = digamma


def _bind_polygamma(n, x):
    nv = getval(n)
    if type(n) is Tracer or np.ndim(nv) != 0 or isinstance(nv, (bool, np.bool_)) or \
            not float(nv) == int(nv) or int(nv) < 0:
        raise ValueError(f"polygamma: n must be a non-negative integer (the derivative order), one for the whole "
                         f"call; got {n!r}. For several orders call polygamma once per order")
    return (x,), {"n": int(nv)}


def _polygamma_battery(rng, n):
    cases = [((k, draw(rng, s, "gamma", False)), {}) for k, s in zip((0, 1, 2, 3), unary_shapes(n))]
    cases.append(((1, draw(rng, (n, 0), "gamma")), {}))
    cases.append(((2, draw(rng, (n, 3), "gamma", True)), {}))
    return cases


polygamma = defprimitive(
    "polygamma", lambda x, n: _f64(_polygamma(n, x)), bind=_bind_polygamma,
    formula="dY[i..]/dX[j..] = delta(i..,j..) polygamma(n + 1, X[i..])",
    doc="polygamma(n, x): the n-th derivative of digamma (scipy.special.polygamma's signature; n a non-negative "
        "int, a constant). scipy.special.polygamma itself cannot take a traced value (it is a Python function "
        "that converts its arguments): call jt.special.polygamma.",
    jac=[lambda ans, x, n: unary_jacobian(polygamma.bound(x, n=n + 1), np.shape(ans))],
    vjp=[lambda g, ans, x, n: g * polygamma.bound(x, n=n + 1)],
    jvp=[lambda t, ans, x, n: t * polygamma.bound(x, n=n + 1)],
    battery=_polygamma_battery,
    generate=lambda rng: ((int(rng.integers(0, 4)), draw(rng, random_shape(rng), "gamma")), {}))


def _entr(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(x > 0, -x * np.log(np.where(x > 0, x, 1.0)), np.where(x == 0, 0.0, -np.inf))
    return np.where(np.isnan(x), np.nan, out)


def _entr_deriv(ans, x):
    pos = as_mask(getval(x) >= 0)  # x < 0: entr is the constant -inf there, derivative 0
    return -(1.0 + np.log(x * pos + (1.0 - pos))) * pos


entr = defunary(
    "entr", _entr, _entr_deriv,
    "dY[i..]/dX[j..] = -delta(i..,j..) (1 + log X[i..])   (X > 0; +inf at 0, as JAX; 0 for X < 0, where Y = -inf)",
    domain="positive", numpy=("entr",),
    doc="-x log(x) for x > 0, 0 at 0, -inf for x < 0 (the elementwise entropy).")


# ---- xlogy, xlog1py -------------------------------------------------------------------------------
def _with_zeros(rng, s):
    """Normal values with about one in five set to exactly 0 (where xlogy's value is defined as 0)."""
    return rng.normal(size=s) * (rng.random(size=s) > 0.2)


def _xlogy(x, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log(y))


def _xlog1py(x, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log1p(y))


xlogy = defbinary(
    "xlogy", _xlogy, (lambda ans, x, y: np.log(y), lambda ans, x, y: x / y),
    "dZ[i..]/dX[j..] = delta(i..,j..) log(Y[i..]);  dZ[i..]/dY[j..] = delta(i..,j..) X[i..] / Y[i..]",
    domains=(_with_zeros, "positive"), numpy=("xlogy",),
    doc="x * log(y), 0 where x == 0 (even at y = 0); y > 0 elsewhere.")

xlog1py = defbinary(
    "xlog1py", _xlog1py, (lambda ans, x, y: np.log1p(y), lambda ans, x, y: x / (1.0 + y)),
    "dZ[i..]/dX[j..] = delta(i..,j..) log(1 + Y[i..]);  dZ[i..]/dY[j..] = delta(i..,j..) X[i..] / (1 + Y[i..])",
    domains=(_with_zeros, lambda rng, s: rng.uniform(-0.8, 2.0, size=s)), numpy=("xlog1py",),
    doc="x * log(1 + y), 0 where x == 0 (even at y = -1); y > -1 elsewhere.")
