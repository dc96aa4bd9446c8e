"""``jactensor demo``: the worked example of docs/worked-example.md, end to end, on random inputs.

Q (3x2), K (2x3), a constant C: A = Q K, S = softmax(A) (row-wise), B = C S and a
scalar loss L = sum(G * B) whose upstream gradient dL/dB is G. The demo prints the
Jacobians' shapes and index formulas against their closed forms, the 9 x 9 matrix of
dS/dA for whole-matrix and row-wise softmax, dL/dQ and dL/dK by four routes (chain() of
the full Jacobians, the VJP path, finite differences, the closed form), a hand derivation
checked with check_formula, and the bytes each route holds.
"""
import numpy as np

from . import ops
from .formula import check_formula
from .chain import chain
from .jacobian import Jacobian
from .testing import finite_difference_jacobian
from .transforms import grad

__all__ = ["run_demo", "format_matrix"]

WRONG = "dS[i,j]/dQ[c,d] = delta(i,c) * K[d,j] - sum_s(A[i,j] * A[c,s] * K[d,s])"
RIGHT = "dS[i,j]/dQ[c,d] = S[i,j] * (delta(i,c) * K[d,j] - sum_s(S[c,s] * K[d,s]))"
RIGHT_ROW = "dS[i,j]/dQ[c,d] = delta(i,c) * S[i,j] * (K[d,j] - sum_s(S[i,s] * K[d,s]))"
ONLY_S = "dS[i,j]/dQ[c,d] = delta(i,c) * K[d,j] - sum_s(S[i,j] * S[c,s] * K[d,s])"
ONLY_FACTOR = "dS[i,j]/dQ[c,d] = S[i,j] * delta(i,c) * K[d,j] - sum_s(A[i,j] * A[c,s] * K[d,s])"


def format_matrix(M, block=None, width=7, prec=4, zero="."):
    """Aligned rows; exact zeros shown as '.', separators every ``block`` rows/columns."""
    M = np.asarray(M)
    if M.ndim == 1:
        M = M[None, :]
    cells = [[(f"{v:{width}.{prec}f}" if v != 0 else f"{zero:>{width}}") for v in row] for row in M]
    lines = []
    for r, row in enumerate(cells):
        if block and r and r % block == 0:
            lines.append("-" * len(_join(cells[0], block)))
        lines.append(_join(row, block))
    return "\n".join(lines)


def _join(row, block):
    out = ""
    for c, cell in enumerate(row):
        if block and c and c % block == 0:
            out += " |"
        out += " " + cell
    return out


def _indent(text, n=4):
    return "\n".join(" " * n + line for line in text.splitlines())


def _side_by_side(left, right, gap=6):
    a, b = left.splitlines(), right.splitlines()
    w = max(len(x) for x in a)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return "\n".join(f"{x:<{w}}{' ' * gap}{y}" for x, y in zip(a, b))


def run_demo(seed=0, C=0.5, write=print):
    """Print the worked example; returns True when every route and check agrees."""
    rng = np.random.default_rng(seed)
    Q, K = rng.normal(size=(3, 2)), rng.normal(size=(2, 3))
    G = rng.normal(size=(3, 3))  # the upstream gradient dL/dB
    A = Q @ K
    S = ops.softmax(A, axis=-1)
    S_all = ops.softmax(A, axis=None)
    ok = True

    def loss(Q, K):
        return ops.sum(G * (C * ops.softmax(ops.matmul(Q, K), axis=-1)))

    write(f"jactensor demo: the worked example (seed {seed})")
    write(f"  A = Q K (3x3),  S = softmax(A) row-wise,  B = C * S with C = {C},  L = sum(G * B), so dL/dB = G\n")
    write(_indent(_side_by_side("Q (3x2) =\n" + format_matrix(Q), "K (2x3) =\n" + format_matrix(K))))

    # 1. shapes and formulas ---------------------------------------------------------------
    JQ, JK = ops.matmul.jacobian(Q, K)
    (JS,) = ops.softmax.jacobian(A, axis=-1)
    (JB,) = ops.multiply.jacobian(C, S)
    JL = Jacobian.from_dense(G, 0, name="dL/dB")
    write("\n1. A Jacobian has shape out.shape + in.shape (four indices for matrix -> matrix)")
    rows = [("dA/dQ", JQ, "dA[i,j]/dQ[r,s] = delta(i,r) K[s,j]",
             np.einsum("ir,sj->ijrs", np.eye(3), K)),
            ("dA/dK", JK, "dA[i,j]/dK[r,s] = Q[i,r] delta(s,j)",
             np.einsum("ir,sj->ijrs", Q, np.eye(3))),
            ("dS/dA", JS, "dS[i,j]/dA[r,s] = delta(i,r) S[i,j] (delta(j,s) - S[i,s])",
             np.einsum("ir,ij,js->ijrs", np.eye(3), S, np.eye(3)) - np.einsum("ir,ij,is->ijrs", np.eye(3), S, S)),
            ("dB/dS", JB, "dB[i,j]/dS[r,s] = C delta(i,r) delta(j,s)",
             C * np.einsum("ir,js->ijrs", np.eye(3), np.eye(3))),
            ("dL/dB", JL, "dL/dB[r,s] = G[r,s]   (L is a scalar: the shape of B)", G)]
    for name, J, formula, closed in rows:
        err = np.abs(np.asarray(J) - closed).max()
        ok &= err < 1e-12
        verdict = "matches" if err < 1e-12 else "DIFFERS"
        write(f"   {name}  shape {str(J.shape):<14} {formula:<58} closed form {verdict}")

    # 2. the 9 x 9 matrix ------------------------------------------------------------------------
    (JS_all,) = ops.softmax.jacobian(A, axis=None)
    s = S_all.reshape(-1)
    M_all, M_row = JS_all.as_matrix(), JS.as_matrix()
    err_all = np.abs(M_all - (np.diag(s) - np.outer(s, s))).max()
    blocks = [np.diag(S[i]) - np.outer(S[i], S[i]) for i in range(3)]
    M_expect = np.zeros((9, 9))
    for i in range(3):
        M_expect[3 * i:3 * i + 3, 3 * i:3 * i + 3] = blocks[i]
    err_row = np.abs(M_row - M_expect).max()
    ok &= err_all < 1e-12 and err_row < 1e-12
    write("\n2. The 9 x 9 matrix is dS/dA (3x3x3x3) flattened; dL/dA itself has the shape of A (3x3)")
    write(f"   whole-matrix softmax (axis=None): diag(s) - s s^T, dense: {np.count_nonzero(M_all)} of 81 entries "
          f"nonzero; matches closed form: {err_all < 1e-12}")
    write(_indent(format_matrix(M_all, block=3), 3))
    write(f"   row-wise softmax (axis=-1), what attention uses: block-diagonal, one 3x3 block diag(s_i) - s_i s_i^T "
          f"per row: {np.count_nonzero(M_row)} of 81 nonzero; matches closed form: {err_row < 1e-12}")
    write(_indent(format_matrix(M_row, block=3), 3))
    write(f"   stored: the row-wise Jacobian keeps one block per row ({JS.stored_bytes} bytes) instead of the "
          f"{JS.nbytes}-byte tensor; entries are z(1 - z) and -z z' with z = S, not B.")

    # 3. chaining ----------------------------------------------------------------------------------
    write("\n3. Chaining contracts the shared indices back to the shape of Q and K")
    write("   dL/dQ[r,s] = sum_ij dL/dA[i,j] dA[i,j]/dQ[r,s] = sum_j dL/dA[r,j] K[s,j]  =>  dL/dQ = (dL/dA) K^T")
    dQ_chain = chain(JL, JB, JS, JQ)
    dK_chain = chain(JL, JB, JS, JK)
    gQ, gK = grad(loss, argnums=(0, 1))(Q, K)
    fdQ = finite_difference_jacobian(lambda q: loss(q, K), Q)
    fdK = finite_difference_jacobian(lambda k: loss(Q, k), K)
    CG = C * G
    dLdA = S * (CG - np.sum(CG * S, axis=1, keepdims=True))
    routes = [("full Jacobians through chain()", np.asarray(dQ_chain), np.asarray(dK_chain)),
              ("VJP path (jt.grad, no Jacobian)", gQ, gK),
              ("central finite differences", fdQ, fdK),
              ("closed form (dL/dA) K^T, Q^T (dL/dA)", dLdA @ K.T, Q.T @ dLdA)]
    write(f"   {'route':<40} {'max |dL/dQ - VJP|':>18} {'max |dL/dK - VJP|':>18}")
    for name, dq, dk in routes:
        eq, ek = np.abs(dq - gQ).max(), np.abs(dk - gK).max()
        limit = 1e-8 if "finite" in name else 1e-12
        ok &= eq < limit and ek < limit
        write(f"   {name:<40} {eq:>18.2e} {ek:>18.2e}")
    write(_indent(_side_by_side("dL/dQ (3x2) =\n" + format_matrix(gQ), "dL/dK (2x3) =\n" + format_matrix(gK)), 3))
    p = dQ_chain.plan
    write(f"   chain() plan for dL/dQ: {p.chosen.flops} FLOPs chosen; forward accumulation {p.forward.flops}, "
          f"reverse {p.reverse.flops}")

    # 4. a hand derivation ----------------------------------------------------------------------------
    write("\n4. Checking a hand derivation of dS/dQ (whole-matrix softmax) with jt.check_formula")
    env = {"S": S_all, "A": A}
    whole = lambda Q, K: ops.softmax(ops.matmul(Q, K), axis=None)  # noqa: E731
    row = lambda Q, K: ops.softmax(ops.matmul(Q, K), axis=-1)  # noqa: E731
    for label, fn, formula, e, want in [("candidate", whole, WRONG, env, False),
                                        ("corrected", whole, RIGHT, env, True),
                                        ("row-wise ", row, RIGHT_ROW, {"S": S}, True)]:
        rep = check_formula(fn, formula, Q, K, env=e)
        ok &= rep.ok == want
        write(f"   {label}  {formula}")
        write(_indent(str(rep), 6))
        if label == "candidate":  # it is wrong twice: each fix alone still fails
            for what, f1 in [("S in place of A only", ONLY_S), ("the factor S[i,j] only", ONLY_FACTOR)]:
                r1 = check_formula(whole, f1, Q, K, env=env)
                ok &= not r1.ok
                write(f"      fixing {what:<24} -> {'CORRECT' if r1.ok else 'still WRONG'} "
                      f"(max error {r1.max_error:.3g}): both mistakes must go")

    # 5. costs --------------------------------------------------------------------------------------
    write("\n5. Why nobody materialises these tensors: bytes held by each route (float64)")
    write(f"   {'n (A is n x n), d':<20} {'dense per-op Jacobians':>24} {'VJP path arrays':>18}")
    for n, d in [(3, 2), (64, 32), (512, 64)]:
        full = 8 * (n * n * n * d + n ** 4 + n ** 4 + n * n)   # dA/dQ, dS/dA, dB/dS, dL/dB
        vjp = 8 * (n * d + 4 * n * n)                           # dL/dQ and the n x n cotangents
        write(f"   {f'{n}, {d}':<20} {_bytes(full):>24} {_bytes(vjp):>18}")
    write("\nall routes agree" if ok else "\nMISMATCH: see above")
    return bool(ok)


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
