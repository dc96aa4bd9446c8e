"""Matrix functions and decompositions: inv, det, logabsdet (slogdet), solve, cholesky, eigvalsh and
eigvecsh (eigh), svdvals, svd_u and svd_vh (svd), pinv. All act on the last two axes; leading axes
are a batch, as in numpy.

Each rule is a few matrix products (dY = -Y dA Y for the inverse, the standard Phi formula for
Cholesky, the eigenvector and singular-vector perturbation formulas with F[i,j] = 1/(w_j - w_i)),
written with primitives so the rules differentiate again; the Jacobians are sums of terms of
matrix-sized factors with deltas on the batch axes (nothing of size n^4 is allocated until the
dense tensor is asked for). A batch of cotangents or tangents is folded into a matrix
dimension, so it costs one batched product or one solve, not one per vector.

Multi-output numpy functions are one primitive per output, computed from one decomposition
(kept for the last input): eigh = (eigvalsh, eigvecsh), svd = (svd_u, svdvals, svd_vh),
slogdet = (a constant sign, logabsdet).

Conventions: cholesky and eigh read the symmetric part (A + A^T)/2 of their input, as JAX does
(numpy reads one triangle; the same for symmetric input), so their derivatives are those of
the symmetrised input. Eigenvectors and singular vectors are returned with the largest-magnitude
entry of each eigenvector, and of each left singular vector, positive (numpy's signs are
arbitrary; this makes them a smooth function of the input away from ties in that entry).
"""
import numpy as np

from ..core import defprimitive
from ..errors import JactensorError, NotDifferentiableError, ShapeError
from ..jacobian import Jacobian
from ..tracer import getval
from ._util import random_array, random_shape, unbroadcast
from .linalg import _fold_left, _fold_right

__all__ = ["LinAlgError", "inv", "det", "logabsdet", "solve", "cholesky", "eigvalsh", "eigvecsh", "svdvals",
           "svd_u", "svd_vh", "pinv"]


class LinAlgError(JactensorError, np.linalg.LinAlgError):
    """A matrix is singular or not positive definite where the op needs it to be (also numpy's LinAlgError)."""


def _mT(x):
    return x.swapaxes(-1, -2)


def _sym(x):
    return (x + _mT(x)) * 0.5


def _nb(g, ans):
    return g.ndim - np.ndim(ans)


def _batch_labels(n):
    return tuple(("b", q) for q in range(n))


# ---- validation and the decomposition cache -----------------------------------------------------
def _square(op, a):
    s = np.shape(a)
    if len(s) < 2 or s[-1] != s[-2]:
        raise ShapeError(f"{op}: the input has shape {s}; it must be a square matrix or a stack of them "
                         f"(..., M, M)")
    return (a,), {}


def _matrix(op, a):
    s = np.shape(a)
    if len(s) < 2:
        raise ShapeError(f"{op}: the input has shape {s}; it must be a matrix or a stack of them (..., M, N)")
    return (a,), {}


def _guard(op, fn, a, what="singular"):
    """Run a numpy.linalg call; its LinAlgError becomes one that names the op, the shape and the matrix."""
    try:
        return fn()
    except np.linalg.LinAlgError:
        pass
    test = (lambda m: np.linalg.cholesky(_sym(m))) if what == "not positive definite" else np.linalg.inv
    where = ""
    for idx in np.ndindex(*np.shape(a)[:-2]) if np.ndim(a) > 2 else ():
        try:
            test(a[idx])
        except np.linalg.LinAlgError:
            where = f" (the matrix at batch index {idx})"
            break
    hint = {"singular": "it has no inverse; use jt.linalg.pinv, or regularise (a + eps * I)",
            "not positive definite": "cholesky needs a symmetric positive definite matrix; check the input or "
                                     "add a small multiple of the identity"}[what]
    raise LinAlgError(f"{op}: the input of shape {np.shape(a)} is {what}{where}; {hint}") from None


_CACHE = {}


def _decomposed(kind, a, compute):
    """compute(a), reused while the same matrix comes back (eigh's and svd's outputs are separate primitives
    and the rules of one need the others: one decomposition serves them all)."""
    if type(a) is not np.ndarray:
        return compute(a)
    hit = _CACHE.get(kind)
    if hit is not None and hit[0].shape == a.shape and np.array_equal(hit[0], a):
        return hit[1]
    value = compute(a)
    _CACHE[kind] = (a.copy(), value)
    return value


def _fix_signs(V, other=None, side=-2):
    """Flip columns of V (and the matching rows of ``other``) so each column's largest-magnitude entry is
    positive."""
    if V.size == 0:
        return V, other
    idx = np.argmax(np.abs(V), axis=side)
    top = np.take_along_axis(V, np.expand_dims(idx, side), axis=side)
    sign = np.where(top < 0, -1.0, 1.0)
    V = V * sign
    if other is not None:
        other = other * np.swapaxes(sign, -1, -2)
    return V, other


def _eigh(a):
    def compute(a):
        w, V = np.linalg.eigh(_sym(a))
        return w, _fix_signs(V)[0]
    return _decomposed("eigh", a, compute)


def _svd(a):
    def compute(a):
        U, s, Vh = np.linalg.svd(a, full_matrices=False)
        U, Vh = _fix_signs(U, Vh)
        return U, s, Vh
    return _decomposed("svd", a, compute)


def _gap_matrix(w, op, squared=False):
    """F[.., i, j] = 1 / (w_j - w_i) off the diagonal, 0 on it (w_i^2 for singular values), with primitives."""
    wv = getval(w)
    k = np.shape(wv)[-1]
    v = w * w if squared else w
    batch = np.shape(wv)[:-1]
    diff = v.reshape(batch + (1, k)) - v.reshape(batch + (k, 1))
    dv = getval(diff)
    off = ~np.eye(k, dtype=bool)
    if np.any((dv == 0) & off):
        what = "singular values" if squared else "eigenvalues"
        raise NotDifferentiableError(f"{op}: the input has repeated {what} ({np.sort(wv, axis=-1)}); the "
                                     f"{'singular vectors' if squared else 'eigenvectors'} are not unique there and "
                                     f"have no derivative. Differentiate a function of the invariant subspace, or "
                                     f"perturb the input")
    eye = np.eye(k)
    return (1.0 - eye) / (diff + eye)


def _bilinear_jac(ans_shape, in_shape, out_lab, in_lab, terms):
    """Sum of structured terms [(coef, [(factor, labels), ...]), ...] on the given axis labels."""
    J = None
    for coef, factors in terms:
        t = Jacobian.from_labels(ans_shape, in_shape, tuple(out_lab) + tuple(in_lab), factors, coef=coef)
        J = t if J is None else J + t
    return J


# ---- inv -----------------------------------------------------------------------------------------
def _inv_impl(a):
    return _guard("inv", lambda: np.linalg.inv(a), a)


def _inv_jac(ans, a):
    b = _batch_labels(np.ndim(a) - 2)
    return Jacobian.from_labels(np.shape(ans), np.shape(a), b + ("i", "j") + b + ("r", "s"),
                                [(ans, b + ("i", "r")), (ans, b + ("s", "j"))], coef=-1.0)


def _inv_vjp(g, ans, a):
    nb = _nb(g, ans)
    Yt = _mT(ans)
    return -_fold_left(_fold_right(Yt, g, nb), Yt, nb)


def _inv_jvp(t, ans, a):
    nb = _nb(t, a)
    return -_fold_left(_fold_right(ans, t, nb), ans, nb)


def _well_conditioned(rng, batch, n, spd=False):
    """batch + (n, n) matrices Q diag(s) Q^T (+ a random skew part unless spd) with s in [1, 3]."""
    out = np.empty(batch + (n, n))
    for idx in np.ndindex(*batch):
        Q = np.linalg.qr(rng.normal(size=(n, n)))[0] if n else np.zeros((0, 0))
        s = rng.uniform(1.0, 3.0, size=n) * (1.0 if spd or rng.random() < 0.5 else rng.choice([-1.0, 1.0], n))
        m = (Q * s) @ Q.T
        if not spd:
            k = rng.normal(size=(n, n)) * 0.2
            m = m + (k - k.T)
        out[idx] = m
    return out


def _gen_square(rng, spd=False):
    batch = random_shape(rng, 0, 2, 3)
    n = int(rng.integers(0 if rng.random() < 0.05 else 1, 5))
    a = _well_conditioned(rng, batch, n, spd)
    if rng.random() < 0.2 and a.ndim:
        a = np.asfortranarray(a)
    return (a,), {}


def _square_battery(spd=False):
    def battery(rng, n):
        return [((_well_conditioned(rng, b, m, spd),), {}) for b, m in
                [((), n), ((), 1), ((2,), n + 1), ((2, 1), 2), ((), 0), ((0,), 2)]]
    return battery


inv = defprimitive(
    "inv", _inv_impl, bind=lambda a: _square("inv", a), numpy=(np.linalg.inv,),
    formula="dY[..,i,j]/dA[..,r,s] = -Y[..,i,r] Y[..,s,j]   (Y = inv(A))",
    doc="numpy.linalg.inv(a) for (..., M, M); a singular matrix raises jt.linalg.LinAlgError (also numpy's).",
    jac=[_inv_jac], vjp=[_inv_vjp], jvp=[_inv_jvp],
    battery=_square_battery(), generate=_gen_square)


# ---- det, logabsdet ---------------------------------------------------------------------------------------
def _inv_transposed(op, a):
    """inv(A)^T for the derivatives of det and logabsdet; a singular matrix has none here."""
    try:
        return _mT(inv.bound(a))
    except (LinAlgError, ShapeError) as e:
        raise NotDifferentiableError(f"{op}: the derivative needs inv(A), but the input is singular ({e}); the "
                                     f"derivative of det at a singular matrix is its adjugate, which is not computed "
                                     f"here") from None


def _det_deriv(ans, a):
    b = np.shape(getval(ans))
    return ans.reshape(b + (1, 1)) * _inv_transposed("det", a)


def _defdetlike(name, impl, deriv, formula, doc, numpy=()):
    def jac(ans, a):
        b = _batch_labels(np.ndim(a) - 2)
        D = np.asarray(deriv(ans, a), dtype=np.float64)
        return Jacobian.from_labels(np.shape(ans), np.shape(a), b + b + ("r", "s"), [(D, b + ("r", "s"))])

    def vjp(g, ans, a):
        return g.reshape(g.shape + (1, 1)) * deriv(ans, a)

    def jvp(t, ans, a):
        return (t * deriv(ans, a)).sum(axis=(-2, -1))

    return defprimitive(name, impl, bind=lambda a: _square(name, a), formula=formula, doc=doc, jac=[jac],
                        vjp=[vjp], jvp=[jvp], battery=_square_battery(), generate=_gen_square, numpy=numpy)


det = _defdetlike(
    "det", lambda a: np.asarray(np.linalg.det(a), dtype=np.float64), _det_deriv,
    formula="dY[..]/dA[..,r,s] = Y[..] inv(A)[..,s,r]",
    doc="numpy.linalg.det(a) for (..., M, M). Its derivative det(A) inv(A)^T needs a nonsingular matrix.",
    numpy=(np.linalg.det,))


def _slogdet(a):
    return _decomposed("slogdet", a, lambda a: tuple(np.asarray(v, dtype=np.float64) for v in np.linalg.slogdet(a)))


logabsdet = _defdetlike(
    "logabsdet", lambda a: _slogdet(a)[1], lambda ans, a: _inv_transposed("logabsdet", a),
    formula="dY[..]/dA[..,r,s] = inv(A)[..,s,r]   (Y = log|det A|)",
    doc="log|det(a)| for (..., M, M): the second output of numpy.linalg.slogdet (jt.linalg.slogdet returns "
        "(sign, logabsdet) with the sign a constant). A singular matrix gives -inf and has no derivative.")


def slogdet_sign(a):
    """The sign of det(a) (a constant: its derivative is zero wherever it is defined)."""
    return _slogdet(np.asarray(getval(a), dtype=np.float64))[0]


# ---- solve ---------------------------------------------------------------------------------------------
def _bind_solve(a, b):
    sa, sb = np.shape(a), np.shape(b)
    _square("solve (a)", a)
    M = sa[-1]
    if len(sb) == 1:
        if sb[0] != M:
            raise ShapeError(f"solve: a has shape {sa} and b has shape {sb}; b must have length {M}")
        return (a, b), {"vec": True}
    if len(sb) < 2 or sb[-2] != M:
        raise ShapeError(f"solve: a has shape {sa} and b has shape {sb}; numpy 2 reads b as one vector (M,) or "
                         f"as matrices (..., M, K), with M = {M}. For a stack of vectors (..., M) solve "
                         f"b[..., None] and take [..., 0]")
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise ShapeError(f"solve: the batch axes of a {sa[:-2]} and b {sb[:-2]} (shapes {sa}, {sb}) do not "
                         f"broadcast") from None
    return (a, b), {"vec": False}


def _solve_impl(a, b, vec):
    return _guard("solve", lambda: np.linalg.solve(a, b), a)


def _solve2(A, B):
    return solve.bound(A, B, vec=False)


def _as_cols(x, vec):
    return x.reshape(x.shape + (1,)) if vec else x


def _from_cols(x, vec):
    return x.reshape(x.shape[:-1]) if vec else x


def _aligned(shape, out_batch, tag):
    """Batch labels of an operand aligned right with the output's batch; broadcast axes get their own."""
    off = len(out_batch) - len(shape)
    return tuple(("b", off + q) if n == out_batch[off + q] else (tag, q) for q, n in enumerate(shape))


def _solve_jac(k):
    def rule(ans, a, b, vec):
        sa, sb, so = np.shape(a), np.shape(b), np.shape(ans)
        ob = so[:len(so) - (1 if vec else 2)]
        tail = () if vec else ("k",)
        out_lab = _batch_labels(len(ob)) + ("i",) + tail
        la = _aligned(sa[:-2], ob, "ab")
        Ainv = np.linalg.inv(a)
        if k == 1:
            lb = (() if vec else _aligned(sb[:-2], ob, "bb")) + ("r",) + tail
            return Jacobian.from_labels(so, sb, out_lab + lb, [(Ainv, la + ("i", "r"))])
        return Jacobian.from_labels(so, sa, out_lab + la + ("r", "s"),
                                    [(Ainv, la + ("i", "r")), (ans, _batch_labels(len(ob)) + ("s",) + tail)],
                                    coef=-1.0)
    return rule


def _solve_vjp_b(g, ans, a, b, vec):
    nb = _nb(g, ans)
    gb = _from_cols(_fold_right(_mT(a), _as_cols(g, vec), nb, _solve2), vec)
    return unbroadcast(gb, np.shape(b), nb)


def _solve_vjp_a(g, ans, a, b, vec):
    nb = _nb(g, ans)
    gb = _fold_right(_mT(a), _as_cols(g, vec), nb, _solve2)        # batch + (.., M, K)
    ga = -_fold_left(gb, _mT(_as_cols(ans, vec)), nb)              # -gb X^T
    return unbroadcast(ga, np.shape(a), nb)


def _solve_jvp_b(t, ans, a, b, vec):
    nb = _nb(t, b)
    return _from_cols(_fold_right(a, _as_cols(t, vec), nb, _solve2), vec)


def _solve_jvp_a(t, ans, a, b, vec):
    nb = _nb(t, a)
    tx = _fold_left(t, _as_cols(ans, vec), nb)
    return -_from_cols(_fold_right(a, tx, nb, _solve2), vec)


def _gen_solve(rng):
    (a,), _ = _gen_square(rng)
    M = a.shape[-1]
    r = rng.random()
    if r < 0.4:
        b = random_array(rng, (M,))
    else:
        bb = a.shape[:-2][int(rng.integers(0, a.ndim - 1)):] if rng.random() < 0.7 else \
            random_shape(rng, 0, 2, 3) + a.shape[:-2]
        b = random_array(rng, bb + (M, int(rng.integers(1, 4))))
    return (a, b), {}


solve = defprimitive(
    "solve", _solve_impl, bind=_bind_solve, numpy=(np.linalg.solve,),
    formula="X = inv(A) B:  dX[..,i,k]/dB[..,r,k'] = inv(A)[..,i,r] delta(k,k');  "
            "dX[..,i,k]/dA[..,r,s] = -inv(A)[..,i,r] X[..,s,k]",
    doc="numpy.linalg.solve(a, b), numpy 2 semantics: b is one vector (M,) or matrices (..., M, K), batch axes "
        "broadcast. The rules solve with a (or a^T) once for a whole batch of tangents or cotangents.",
    jac=[_solve_jac(0), _solve_jac(1)], vjp=[_solve_vjp_a, _solve_vjp_b], jvp=[_solve_jvp_a, _solve_jvp_b],
    battery=lambda rng, n: [((_well_conditioned(rng, ba, n), random_array(rng, sb)), {}) for ba, sb in
                            [((), (n,)), ((), (n, 2)), ((2,), (n,)), ((2,), (n, 1)), ((), (3, n, 2)),
                             ((2, 1), (3, n, 2)), ((), (n, 0))]] + [
        ((_well_conditioned(rng, (), 0), np.zeros((0,))), {})],
    generate=_gen_solve)


# ---- cholesky ----------------------------------------------------------------------------------------
def _chol_impl(a, upper):
    L = _guard("cholesky", lambda: np.linalg.cholesky(_sym(a)), a, "not positive definite")
    return _mT(L).copy() if upper else L


def _phi_mask(n):
    """Phi(X) = P * X: the strictly lower triangle and half the diagonal."""
    return np.tril(np.ones((n, n)), -1) + 0.5 * np.eye(n)


def _chol_jac(ans, a, upper):
    L = _mT(ans) if upper else ans
    n = np.shape(a)[-1]
    b = _batch_labels(np.ndim(a) - 2)
    Li = np.linalg.inv(L)
    P = _phi_mask(n)
    out = b + (("j", "i") if upper else ("i", "j"))
    # dL_ij = sum_k L_ik P_kj (Linv_kr Linv_js + Linv_ks Linv_jr) / 2
    terms = [(0.5, [(L, b + ("i", "k")), (P, ("k", "j")), (Li, b + ("k", "r")), (Li, b + ("j", "s"))]),
             (0.5, [(L, b + ("i", "k")), (P, ("k", "j")), (Li, b + ("k", "s")), (Li, b + ("j", "r"))])]
    return _bilinear_jac(np.shape(ans), np.shape(a), out, b + ("r", "s"), terms)


def _chol_jvp(t, ans, a, upper):
    nb = _nb(t, a)
    L = _mT(ans) if upper else ans
    Li = inv.bound(L)
    M = _fold_left(_fold_right(Li, _sym(t), nb), _mT(Li), nb)
    dL = _fold_right(L, M * _phi_mask(np.shape(a)[-1]), nb)
    return _mT(dL) if upper else dL


def _chol_vjp(g, ans, a, upper):
    nb = _nb(g, ans)
    L = _mT(ans) if upper else ans
    G = _mT(g) if upper else g
    Li = inv.bound(L)
    X = _fold_right(_mT(L), G, nb) * _phi_mask(np.shape(a)[-1])
    return _sym(_fold_left(_fold_right(_mT(Li), X, nb), Li, nb))


def _bind_cholesky(a, upper=False):
    _square("cholesky", a)
    return (a,), {"upper": bool(upper)}


cholesky = defprimitive(
    "cholesky", _chol_impl, bind=_bind_cholesky, numpy=(np.linalg.cholesky,),
    formula="dL = L Phi(Li sym(dA) Li^T), Li = inv(L), Phi = P o (.): strict lower triangle + half the diagonal, "
            "sym(dA) = (dA + dA^T)/2:  dL[..,i,j]/dA[..,r,s] = sum_k L[i,k] P[k,j] (Li[k,r] Li[j,s] + Li[k,s] "
            "Li[j,r]) / 2",
    doc="numpy.linalg.cholesky(a, upper=False) for symmetric positive definite (..., M, M): lower L with "
        "L L^T = a (upper=True: L^T). The input is symmetrised, (a + a^T)/2, as JAX does (numpy reads the lower "
        "triangle: the same for symmetric input), so the derivative splits each off-diagonal pair equally. Not "
        "positive definite: jt.linalg.LinAlgError.",
    jac=[_chol_jac], vjp=[_chol_vjp], jvp=[_chol_jvp],
    battery=lambda rng, n: [((_well_conditioned(rng, b, m, spd=True),), kw) for b, m, kw in
                            [((), n, {}), ((), 1, {}), ((2,), n + 1, {}), ((), n + 1, {"upper": True}),
                             ((), 0, {})]],
    generate=lambda rng: (_gen_square(rng, spd=True)[0], {"upper": bool(rng.random() < 0.3)}))


# ---- eigh: eigvalsh and eigvecsh ------------------------------------------------------------------------------
def _bind_eigh(name):
    def bind(a, UPLO="L"):
        if UPLO not in ("L", "U"):
            raise ValueError(f"{name}: UPLO must be 'L' or 'U'; got {UPLO!r}")
        _square(name, a)
        return (a,), {}
    return bind


def _distinct_spectrum(rng, batch, n, values=None):
    """Symmetric batch + (n, n) with eigenvalues at least 0.5 apart (random orthogonal eigenvectors)."""
    out = np.empty(batch + (n, n))
    for idx in np.ndindex(*batch):
        Q = np.linalg.qr(rng.normal(size=(n, n)))[0] if n else np.zeros((0, 0))
        w = np.cumsum(rng.uniform(0.5, 1.5, size=n)) - n * 0.6 if values is None else values
        out[idx] = (Q * w) @ Q.T
    return out


def _gen_eigh(rng):
    batch = random_shape(rng, 0, 2, 3)
    n = int(rng.integers(0 if rng.random() < 0.05 else 1, 5))
    a = _distinct_spectrum(rng, batch, n)
    if rng.random() < 0.3 and n:  # a non-symmetric input: its symmetric part is decomposed
        k = rng.normal(size=a.shape) * 0.3
        a = a + (k - np.swapaxes(k, -1, -2))
    return (a,), {}


def _eigh_battery(rng, n):
    return [((_distinct_spectrum(rng, b, m),), {}) for b, m in [((), n), ((), 1), ((2,), n + 1), ((), 0)]] + \
        [((_distinct_spectrum(rng, (), n + 1) + np.triu(np.ones((n + 1, n + 1)), 1),), {})]


def _eigvalsh_jac(ans, a):
    _, V = _eigh(np.asarray(a))
    b = _batch_labels(np.ndim(a) - 2)
    return Jacobian.from_labels(np.shape(ans), np.shape(a), b + ("k",) + b + ("r", "s"),
                                [(V, b + ("r", "k")), (V, b + ("s", "k"))])


def _eigvalsh_vjp(g, ans, a):
    nb = _nb(g, ans)
    V = eigvecsh.bound(a)
    gw = g.reshape(g.shape[:-1] + (1, g.shape[-1]))
    return _fold_left(V * gw, _mT(V), nb)          # V diag(g) V^T (already symmetric)


def _eigvalsh_jvp(t, ans, a):
    nb = _nb(t, a)
    V = eigvecsh.bound(a)
    return (_fold_left(t, V, nb) * V).sum(axis=-2)   # diag(V^T T V)


eigvalsh = defprimitive(
    "eigvalsh", lambda a: _eigh(a)[0], bind=_bind_eigh("eigvalsh"), numpy=(np.linalg.eigvalsh,),
    formula="dW[..,k]/dA[..,r,s] = V[..,r,k] V[..,s,k]   (V: the eigenvectors)",
    doc="numpy.linalg.eigvalsh(a, UPLO='L'): eigenvalues in ascending order of the symmetric part (a + a^T)/2 "
        "of (..., M, M) (UPLO is accepted; the symmetric part is used either way).",
    jac=[_eigvalsh_jac], vjp=[_eigvalsh_vjp], jvp=[_eigvalsh_jvp],
    battery=_eigh_battery, generate=_gen_eigh)


def _eigvecsh_jac(ans, a):
    w, V = _eigh(np.asarray(a))
    F = np.asarray(_gap_matrix(w, "eigh (eigenvectors)"))
    b = _batch_labels(np.ndim(a) - 2)
    # dV_ij = sum_k V_ik F_kj (V_rk V_sj + V_sk V_rj) / 2
    terms = [(0.5, [(V, b + ("i", "k")), (F, b + ("k", "j")), (V, b + ("r", "k")), (V, b + ("s", "j"))]),
             (0.5, [(V, b + ("i", "k")), (F, b + ("k", "j")), (V, b + ("s", "k")), (V, b + ("r", "j"))])]
    return _bilinear_jac(np.shape(ans), np.shape(a), b + ("i", "j"), b + ("r", "s"), terms)


def _eigvecsh_jvp(t, ans, a):
    nb = _nb(t, a)
    F = _gap_matrix(eigvalsh.bound(a), "eigh (eigenvectors)")
    M = _fold_left(_fold_right(_mT(ans), _sym(t), nb), ans, nb)
    return _fold_right(ans, F * M, nb)


def _eigvecsh_vjp(g, ans, a):
    nb = _nb(g, ans)
    F = _gap_matrix(eigvalsh.bound(a), "eigh (eigenvectors)")
    inner = F * _fold_right(_mT(ans), g, nb)
    return _sym(_fold_left(_fold_right(ans, inner, nb), _mT(ans), nb))


eigvecsh = defprimitive(
    "eigvecsh", lambda a: _eigh(a)[1], bind=_bind_eigh("eigvecsh"),
    formula="dV = V (F o (V^T sym(dA) V)), F[k,j] = 1/(w_j - w_k) (0 on the diagonal):  "
            "dV[..,i,j]/dA[..,r,s] = sum_k V[i,k] F[k,j] (V[r,k] V[s,j] + V[s,k] V[r,j]) / 2",
    doc="The eigenvectors of numpy.linalg.eigh(a) (columns, matching eigvalsh's ascending eigenvalues) of the "
        "symmetric part of (..., M, M); each column's largest-magnitude entry is positive. The derivative needs "
        "distinct eigenvalues (repeated ones raise NotDifferentiableError).",
    jac=[_eigvecsh_jac], vjp=[_eigvecsh_vjp], jvp=[_eigvecsh_jvp],
    battery=_eigh_battery, generate=_gen_eigh)


# ---- svd: svdvals, svd_u, svd_vh --------------------------------------------------------------------------------
def _bind_svd_part(name):
    def bind(a, full_matrices=False):
        _matrix(name, a)
        m, n = np.shape(a)[-2:]
        if full_matrices and m != n:
            raise NotDifferentiableError(
                f"{name}: full_matrices=True for a {m} x {n} input: the extra {abs(m - n)} singular vectors are not "
                f"unique and have no derivative; pass full_matrices=False (the reduced SVD)")
        return (a,), {}
    return bind


def _separated_singular(rng, batch, m, n):
    """batch + (m, n) with singular values at least 0.5 apart and at least 0.5."""
    k = min(m, n)
    out = np.empty(batch + (m, n))
    for idx in np.ndindex(*batch):
        U = np.linalg.qr(rng.normal(size=(m, m)))[0][:, :k] if m else np.zeros((0, k))
        V = np.linalg.qr(rng.normal(size=(n, n)))[0][:, :k] if n else np.zeros((0, k))
        s = np.cumsum(rng.uniform(0.5, 1.5, size=k))[::-1]
        out[idx] = (U * s) @ V.T
    return out


def _gen_svd(rng):
    batch = random_shape(rng, 0, 2, 3)
    m, n = (int(rng.integers(0 if rng.random() < 0.05 else 1, 5)) for _ in range(2))
    return (_separated_singular(rng, batch, m, n),), {}


def _svd_battery(rng, n):
    return [((_separated_singular(rng, b, p, q),), {}) for b, p, q in
            [((), n, n), ((), n + 1, 2), ((), 2, n + 2), ((2,), n, n + 1), ((), 1, 1), ((), 0, 2)]]


def _svd_parts(a):
    """U, s, V (not Vh) of the reduced SVD, as primitives of a (so rules differentiate again)."""
    return svd_u.bound(a), svdvals.bound(a), _mT(svd_vh.bound(a))


def _svdvals_jac(ans, a):
    U, s, Vh = _svd(np.asarray(a))
    b = _batch_labels(np.ndim(a) - 2)
    return Jacobian.from_labels(np.shape(ans), np.shape(a), b + ("k",) + b + ("r", "s"),
                                [(U, b + ("r", "k")), (_mT(Vh), b + ("s", "k"))])


def _svdvals_vjp(g, ans, a):
    nb = _nb(g, ans)
    U, Vh = svd_u.bound(a), svd_vh.bound(a)
    return _fold_left(U * g.reshape(g.shape[:-1] + (1, g.shape[-1])), Vh, nb)     # U diag(g) V^T


def _svdvals_jvp(t, ans, a):
    nb = _nb(t, a)
    U, V = svd_u.bound(a), _mT(svd_vh.bound(a))
    return (_fold_left(t, V, nb) * U).sum(axis=-2)                                   # diag(U^T T V)


svdvals = defprimitive(
    "svdvals", lambda a: _svd(a)[1], bind=lambda a: _matrix("svdvals", a), numpy=(np.linalg.svdvals,),
    formula="dS[..,k]/dA[..,r,s] = U[..,r,k] V[..,s,k]",
    doc="Singular values of (..., M, N) in descending order (numpy.linalg.svdvals; svd(a, compute_uv=False)).",
    jac=[_svdvals_jac], vjp=[_svdvals_vjp], jvp=[_svdvals_jvp],
    battery=_svd_battery, generate=_gen_svd)


def _recip(s, op):
    if np.any(getval(s) == 0):
        raise NotDifferentiableError(f"{op}: the input is rank deficient (a zero singular value); the singular "
                                     f"vectors of a non-square matrix have no derivative there")
    return 1.0 / s


def _svd_u_jac(ans, a):
    U, s, Vh = _svd(np.asarray(a))
    V = _mT(Vh)
    F = np.asarray(_gap_matrix(s, "svd (U)", squared=True))
    m, k = U.shape[-2:]
    b = _batch_labels(np.ndim(a) - 2)
    sr = s[..., None, :]
    # dU_ij = sum_k U_ik F_kj (U_rk V_sj s_j + s_k U_rj V_sk) + (I - U U^T)_ir V_sj / s_j
    terms = [(1.0, [(U, b + ("i", "k")), (F * sr, b + ("k", "j")), (U, b + ("r", "k")), (V, b + ("s", "j"))]),
             (1.0, [(U, b + ("i", "k")), (F * _mT(sr), b + ("k", "j")), (U, b + ("r", "j")), (V, b + ("s", "k"))])]
    if m > k:   # (I - U U^T)[i,r] V[s,j] / s_j, the identity kept as a delta (no m x m factor)
        Vs = V * np.asarray(_recip(s, "svd (U)"))[..., None, :]
        terms.append((1.0, [(Vs, b + ("s", "j"))]))
        terms.append((-1.0, [(U, b + ("i", "q")), (U, b + ("r", "q")), (Vs, b + ("s", "j"))]))
        J = _bilinear_jac(np.shape(ans), np.shape(a), b + ("i", "j"), b + ("r", "s"), terms[:2] + terms[3:])
        return J + Jacobian.from_labels(np.shape(ans), np.shape(a), b + ("i", "j") + b + ("i", "s"), terms[2][1])
    return _bilinear_jac(np.shape(ans), np.shape(a), b + ("i", "j"), b + ("r", "s"), terms)


def _svd_u_jvp(t, ans, a):
    nb = _nb(t, a)
    U, s, V = _svd_parts(a)
    F = _gap_matrix(s, "svd (U)", squared=True)
    k = np.shape(getval(s))[-1]
    sr = s.reshape(s.shape[:-1] + (1, k))
    TV = _fold_left(t, V, nb)
    dP = _fold_right(_mT(U), TV, nb)
    dU = _fold_right(U, F * (dP * sr + _mT(sr) * _mT(dP)), nb)
    if np.shape(a)[-2] > k:
        dU = dU + (TV - _fold_right(U, dP, nb)) * _recip(s, "svd (U)").reshape(s.shape[:-1] + (1, k))
    return dU


def _svd_u_vjp(g, ans, a):
    nb = _nb(g, ans)
    U, s, V = _svd_parts(a)
    F = _gap_matrix(s, "svd (U)", squared=True)
    k = np.shape(getval(s))[-1]
    sr = s.reshape(s.shape[:-1] + (1, k))
    UtG = _fold_right(_mT(U), g, nb)
    H = F * UtG
    inner = (H + _mT(H)) * sr
    if np.shape(a)[-2] > k:   # the part of g outside U's columns
        inner_out = (g - _fold_right(U, UtG, nb)) * _recip(s, "svd (U)").reshape(s.shape[:-1] + (1, k))
        return _fold_left(_fold_right(U, inner, nb) + inner_out, _mT(V), nb)
    return _fold_left(_fold_right(U, inner, nb), _mT(V), nb)


svd_u = defprimitive(
    "svd_u", lambda a: _svd(a)[0], bind=_bind_svd_part("svd_u"),
    formula="dU = U (F o (dP S + S dP^T)) + (I - U U^T) dA V S^-1, dP = U^T dA V, F[k,j] = 1/(s_j^2 - s_k^2):  "
            "dU[..,i,j]/dA[..,r,s] = sum_k U[i,k] F[k,j] (U[r,k] V[s,j] s_j + s_k U[r,j] V[s,k]) "
            "+ (I - U U^T)[i,r] V[s,j] / s_j",
    doc="U of the reduced SVD a = U diag(s) Vh of (..., M, N) (numpy.linalg.svd(a, full_matrices=False)[0]); each "
        "column's largest-magnitude entry is positive (the matching row of Vh flips with it). The derivative needs "
        "distinct singular values, and nonzero ones when M > N.",
    jac=[_svd_u_jac], vjp=[_svd_u_vjp], jvp=[_svd_u_jvp],
    battery=_svd_battery, generate=_gen_svd)


def _svd_vh_jac(ans, a):
    U, s, Vh = _svd(np.asarray(a))
    V = _mT(Vh)
    F = np.asarray(_gap_matrix(s, "svd (Vh)", squared=True))
    n, k = V.shape[-2:]
    b = _batch_labels(np.ndim(a) - 2)
    sr = s[..., None, :]
    # dV_ij = sum_k V_ik F_kj (s_k U_rk V_sj + s_j U_rj V_sk) + (I - V V^T)_is U_rj / s_j;  Vh[j, i] = V[i, j]
    terms = [(1.0, [(V, b + ("i", "k")), (F * _mT(sr), b + ("k", "j")), (U, b + ("r", "k")), (V, b + ("s", "j"))]),
             (1.0, [(V, b + ("i", "k")), (F * sr, b + ("k", "j")), (U, b + ("r", "j")), (V, b + ("s", "k"))])]
    if n > k:   # (I - V V^T)[i,s] U[r,j] / s_j, the identity kept as a delta (no n x n factor)
        Us = U * np.asarray(_recip(s, "svd (Vh)"))[..., None, :]
        terms.append((-1.0, [(V, b + ("i", "q")), (V, b + ("s", "q")), (Us, b + ("r", "j"))]))
        J = _bilinear_jac(np.shape(ans), np.shape(a), b + ("j", "i"), b + ("r", "s"), terms)
        return J + Jacobian.from_labels(np.shape(ans), np.shape(a), b + ("j", "i") + b + ("r", "i"),
                                        [(Us, b + ("r", "j"))])
    return _bilinear_jac(np.shape(ans), np.shape(a), b + ("j", "i"), b + ("r", "s"), terms)


def _svd_vh_jvp(t, ans, a):
    nb = _nb(t, a)
    U, s, V = _svd_parts(a)
    F = _gap_matrix(s, "svd (Vh)", squared=True)
    k = np.shape(getval(s))[-1]
    sr = s.reshape(s.shape[:-1] + (1, k))
    dP = _fold_right(_mT(U), _fold_left(t, V, nb), nb)
    dV = _fold_right(V, F * (_mT(sr) * dP + _mT(dP) * sr), nb)
    if np.shape(a)[-1] > k:
        TtU = _fold_left(_mT(t), U, nb)
        dV = dV + (TtU - _fold_right(V, _mT(dP), nb)) * _recip(s, "svd (Vh)").reshape(s.shape[:-1] + (1, k))
    return _mT(dV)


def _svd_vh_vjp(g, ans, a):
    nb = _nb(g, ans)
    U, s, V = _svd_parts(a)
    F = _gap_matrix(s, "svd (Vh)", squared=True)
    k = np.shape(getval(s))[-1]
    sc = s.reshape(s.shape[:-1] + (k, 1))
    GV = _fold_left(g, V, nb)            # (Vh-cotangent) V = (V^T Gv)^T
    K = F * _mT(GV)
    inner = sc * (K + _mT(K))
    if np.shape(a)[-1] > k:
        inner_out = (g - _fold_left(GV, _mT(V), nb)) * _recip(s, "svd (Vh)").reshape(s.shape[:-1] + (k, 1))
        return _fold_right(U, _fold_left(inner, _mT(V), nb) + inner_out, nb)
    return _fold_right(U, _fold_left(inner, _mT(V), nb), nb)


svd_vh = defprimitive(
    "svd_vh", lambda a: _svd(a)[2], bind=_bind_svd_part("svd_vh"),
    formula="dV = V (F o (S dP + dP^T S)) + (I - V V^T) dA^T U S^-1 (Vh = V^T), F[k,j] = 1/(s_j^2 - s_k^2):  "
            "dVh[..,j,i]/dA[..,r,s] = sum_k V[i,k] F[k,j] (s_k U[r,k] V[s,j] + s_j U[r,j] V[s,k]) "
            "+ (I - V V^T)[i,s] U[r,j] / s_j",
    doc="Vh of the reduced SVD of (..., M, N) (numpy.linalg.svd(a, full_matrices=False)[2]), signs matching "
        "svd_u. The derivative needs distinct singular values, and nonzero ones when N > M.",
    jac=[_svd_vh_jac], vjp=[_svd_vh_vjp], jvp=[_svd_vh_jvp],
    battery=_svd_battery, generate=_gen_svd)


# ---- pinv -----------------------------------------------------------------------------------------------
def _bind_pinv(a, rcond=None, hermitian=False, *, rtol=np._NoValue):
    _matrix("pinv", a)
    kw = {"hermitian": bool(hermitian)}
    if rcond is not None:
        kw["rcond"] = float(rcond)
    if rtol is not np._NoValue and rtol is not None:
        kw["rtol"] = float(rtol)
    return (a,), {"opts": tuple(sorted(kw.items()))}


def _pinv_impl(a, opts):
    return np.linalg.pinv(a, **dict(opts))


def _full_rank(a, opts):
    av = np.asarray(getval(a))
    if av.size == 0:
        return
    s = _svd(av)[1]
    o = dict(opts)
    tol = o.get("rcond", o.get("rtol", max(av.shape[-2:]) * np.finfo(np.float64).eps))
    if np.any(s[..., -1] <= tol * s[..., 0]):
        raise NotDifferentiableError(f"pinv: the input of shape {av.shape} is rank deficient (smallest singular "
                                     f"value {s[..., -1].min():.3g} against the cut-off); pinv is not "
                                     f"differentiable where the rank can change. Its derivative is defined for "
                                     f"full-rank inputs only")


def _pinv_jac(ans, a, opts):
    _full_rank(a, opts)
    X = ans
    A = np.asarray(a)
    b = _batch_labels(A.ndim - 2)
    m, n = A.shape[-2:]
    out, inn = b + ("i", "j"), b + ("r", "s")
    J = Jacobian.from_labels(np.shape(ans), A.shape, out + inn, [(X, b + ("i", "r")), (X, b + ("s", "j"))], coef=-1.0)
    # full rank: X A = I when m >= n, A X = I when m <= n, so one projector term is left; it is written as the
    # identity (a delta) minus a product, never as an m x m or n x n factor
    if m > n:    # + (X X^T)[i,s] (I - A X)[r,j]
        XXt = X @ _mT(X)
        J = J + Jacobian.from_labels(np.shape(ans), A.shape, out + b + ("j", "s"), [(XXt, b + ("i", "s"))])
        J = J + Jacobian.from_labels(np.shape(ans), A.shape, out + inn,
                                     [(XXt, b + ("i", "s")), (A, b + ("r", "q")), (X, b + ("q", "j"))], coef=-1.0)
    elif n > m:  # + (I - X A)[i,s] (X^T X)[r,j]
        XtX = _mT(X) @ X
        J = J + Jacobian.from_labels(np.shape(ans), A.shape, out + b + ("r", "i"), [(XtX, b + ("r", "j"))])
        J = J + Jacobian.from_labels(np.shape(ans), A.shape, out + inn,
                                     [(X, b + ("i", "q")), (A, b + ("q", "s")), (XtX, b + ("r", "j"))], coef=-1.0)
    return J


def _pinv_jvp(t, ans, a, opts):
    """-X T X + (X X^T) T^T (I - A X)  (M > N)  or  + (I - X A) T^T (X^T X)  (M < N)."""
    _full_rank(a, opts)
    nb = _nb(t, a)
    X = ans
    m, n = np.shape(getval(a))[-2:]
    dX = -_fold_left(_fold_right(X, t, nb), X, nb)
    if m > n:
        P = _fold_right(X @ _mT(X), _mT(t), nb)                    # (n, m) per tangent
        dX = dX + P - _fold_left(_fold_left(P, a, nb), X, nb)
    elif n > m:
        Y = _fold_left(_mT(t), _mT(X) @ X, nb)                     # (n, m) per tangent
        dX = dX + Y - _fold_right(X, _fold_right(a, Y, nb), nb)
    return dX


def _pinv_vjp(g, ans, a, opts):
    """-X^T G X^T + (I - A X) G^T (X X^T)  (M > N)  or  + (X^T X) G^T (I - X A)  (M < N)."""
    _full_rank(a, opts)
    nb = _nb(g, ans)
    X = ans
    m, n = np.shape(getval(a))[-2:]
    gA = -_fold_left(_fold_right(_mT(X), g, nb), _mT(X), nb)
    if m > n:
        W = _fold_left(_mT(g), X @ _mT(X), nb)                     # (m, n) per cotangent
        gA = gA + W - _fold_right(a, _fold_right(X, W, nb), nb)
    elif n > m:
        Z = _fold_right(_mT(X) @ X, _mT(g), nb)                    # (m, n) per cotangent
        gA = gA + Z - _fold_left(_fold_left(Z, X, nb), a, nb)
    return gA


pinv = defprimitive(
    "pinv", _pinv_impl, bind=_bind_pinv, numpy=(np.linalg.pinv,),
    formula="dX = -X dA X + X X^T dA^T (I - A X) + (I - X A) dA^T X^T X   (X = pinv(A), A of full rank, so one "
            "of the last two terms is 0):  dX[..,i,j]/dA[..,r,s] = -X[i,r] X[s,j] + (X X^T)[i,s] (I - A X)[r,j] "
            "+ (I - X A)[i,s] (X^T X)[r,j]",
    doc="numpy.linalg.pinv(a, rcond=None, hermitian=False, rtol=...) for (..., M, N). Differentiable where a has "
        "full rank (min(M, N)); a rank-deficient input raises NotDifferentiableError when a derivative is asked.",
    jac=[_pinv_jac], vjp=[_pinv_vjp], jvp=[_pinv_jvp],
    battery=lambda rng, n: [((_separated_singular(rng, b, p, q),), {}) for b, p, q in
                            [((), n, n), ((), n + 1, 2), ((), 2, n + 2), ((2,), n, n + 1), ((), 0, 2)]],
    generate=_gen_svd)
