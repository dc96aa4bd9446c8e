"""``jt.special``: scipy.special's names and signatures for differentiable jactensor functions.

    import jactensor as jt
    jt.special.expit(x)          jt.special.logit(p)           jt.special.erf(x)      jt.special.erfc(x)
    jt.special.gammaln(x)        jt.special.digamma(x) = psi   jt.special.polygamma(n, x)
    jt.special.xlogy(x, y)       jt.special.xlog1py(x, y)      jt.special.entr(x)
    jt.special.softmax(x, axis=None)    jt.special.log_softmax(x, axis=None)
    jt.special.logsumexp(a, axis=None, b=None, keepdims=False)

Each is a registered primitive (or, for softmax and log_softmax, calls one), with its full Jacobian, VJP,
JVP and index formula; they work on plain arrays and inside every transform.

scipy.special's ufuncs -- expit, logit, erf, erfc, gammaln, psi (= digamma), xlogy, xlog1py, entr -- called
on a traced value record the same primitives, so code written with scipy.special differentiates as it is.
scipy.special.softmax, log_softmax, logsumexp and polygamma are Python functions that first convert their
argument to a numpy array: on a traced value they raise ConcretizationError (the derivative would be lost);
call jt.special.softmax (and so on) instead, with the same arguments.

As in scipy, jt.special.softmax and log_softmax normalise over the whole array by default (axis=None);
jt.softmax and jt.log_softmax (jax.nn's convention) default to the last axis, axis=-1. scipy is optional:
without it erf, erfc, gammaln, digamma and polygamma use math-module and series implementations
(jactensor.ops.special).
"""
from .ops.elementwise import erf, sigmoid
from .ops.nn import log_softmax as _log_softmax
from .ops.nn import softmax as _softmax
from .ops.reduce import logsumexp
from .ops.special import digamma, entr, erfc, gammaln, logit, polygamma, psi, xlog1py, xlogy

__all__ = ["expit", "logit", "erf", "erfc", "gammaln", "digamma", "psi", "polygamma", "xlogy", "xlog1py", "entr",
           "softmax", "log_softmax", "logsumexp"]

expit = sigmoid


def softmax(x, axis=None):
    """scipy.special.softmax(x, axis=None): exp(x) / sum(exp(x)) over ``axis`` (None: the whole array, scipy's
    default; an int or a tuple of ints). Records the primitive jt.softmax, whose own default is axis=-1.

    Jacobian: dS[k..,i]/dX[k'..,j] = delta(k..,k'..) S[k..,i] (delta(i,j) - S[k..,j])   (i, j along axis)"""
    return _softmax(x, axis=axis)


def log_softmax(x, axis=None):
    """scipy.special.log_softmax(x, axis=None): x - logsumexp(x) over ``axis`` (None: the whole array, scipy's
    default). Records the primitive jt.log_softmax, whose own default is axis=-1.

    Jacobian: dL[k..,i]/dX[k'..,j] = delta(k..,k'..) (delta(i,j) - S[k..,j]),  S = softmax(X)"""
    return _log_softmax(x, axis=axis)
