"""Benchmarks of ``jt.jit``: compiled programs against the hand-written numpy pass and jit JAX.

``jit_suite()`` returns records in the format of ``suites.peers`` (problem, n, d, method, status, seconds;
``first_call_seconds`` and ``compile_seconds`` for methods that compile) plus the targets evaluated on
this run's medians. Every method's numbers are checked against the others before anything is timed, and
the methods of one problem are timed in interleaved rounds (``measure_interleaved``). The caller pins
the process to one core (``bench.run`` does; so does ``python -m jactensor.bench.jit_suite``).

Compile time is reported apart from the steady state: ``first_call_seconds`` is the first call with a
new signature (recording, code generation and one replay for ours; tracing and XLA compilation for
JAX), ``compile_seconds`` that minus the steady-state median.
"""

import numpy as np

from ..transforms import grad, hessian, jacobian
from . import problems as P
from .timing import check_then_time

__all__ = ["jit_suite", "HESSIAN_PROBLEMS", "JIT_TARGETS", "main"]

OURS_JIT = "jactensor jit"
UNCOMPILED = "jactensor uncompiled"


def _allclose(a, b, rtol=1e-8, atol=1e-10):
    a = a if isinstance(a, (tuple, list)) else [a]
    b = b if isinstance(b, (tuple, list)) else [b]
    return len(a) == len(b) and all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
                                    for x, y in zip(a, b))


# ---- the Hessian problems: (arguments, jactensor function, jax function of jax.numpy) -------------------
def _quadratic(jnp=None, n=100, seed=0):
    rng = np.random.default_rng(seed)
    A, x = rng.normal(size=(n, n)) / np.sqrt(n), rng.normal(size=n)
    if jnp is None:
        return (x,), lambda x: x @ A @ x
    Aj = jnp.asarray(A)
    return (jnp.asarray(x),), lambda x: x @ Aj @ x


def _logistic(jnp=None, n=100, m=200, seed=0):
    """Mean logistic loss log(1 + exp(-s_i x_i . w)) with labels s_i = +-1, w.r.t. w."""
    from .. import ops
    rng = np.random.default_rng(seed)
    X, w = rng.normal(size=(m, n)) / np.sqrt(n), rng.normal(size=n)
    s = np.where(rng.random(m) < 0.5, -1.0, 1.0)
    if jnp is None:
        return (w,), lambda w: ops.mean(ops.log(1.0 + ops.exp(-s * (X @ w))))
    Xj, sj = jnp.asarray(X), jnp.asarray(s)
    return (jnp.asarray(w),), lambda w: jnp.mean(jnp.log(1.0 + jnp.exp(-sj * (Xj @ w))))


def _factorisation(jnp=None, m=30, n=30, r=5, seed=0):
    """||T - U V^T||^2 w.r.t. U (m, r)."""
    from .. import ops
    rng = np.random.default_rng(seed)
    T, U, V = rng.normal(size=(m, n)), rng.normal(size=(m, r)), rng.normal(size=(n, r))
    if jnp is None:
        return (U,), lambda U: ops.sum((T - U @ V.T) ** 2)
    Tj, Vj = jnp.asarray(T), jnp.asarray(V)
    return (jnp.asarray(U),), lambda U: jnp.sum((Tj - U @ Vj.T) ** 2)


def _mlp(jnp=None, b=32, d=8, h=16, seed=0):
    """Squared error of a two-layer tanh MLP sum((tanh(X W1) W2 - Y)^2) w.r.t. W1 (d, h)."""
    from .. import ops
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(b, d)), rng.normal(size=(b, 1))
    W1, W2 = rng.normal(size=(d, h)) / np.sqrt(d), rng.normal(size=(h, 1)) / np.sqrt(h)
    if jnp is None:
        return (W1,), lambda W1: ops.sum((ops.tanh(X @ W1) @ W2 - Y) ** 2)
    Xj, Yj, W2j = jnp.asarray(X), jnp.asarray(Y), jnp.asarray(W2)
    return (jnp.asarray(W1),), lambda W1: jnp.sum((jnp.tanh(Xj @ W1) @ W2j - Yj) ** 2)


HESSIAN_PROBLEMS = {  # name -> (maker, n, d) with n, d the sizes reported in the records
    "hessian: x^T A x": (_quadratic, 100, 1),
    "hessian: logistic regression": (_logistic, 100, 200),
    "hessian: matrix factorisation ||T - U V^T||^2 w.r.t. U": (_factorisation, 30, 5),
    "hessian: two-layer tanh MLP w.r.t. W1": (_mlp, 8, 16),
}

GRAD = "attention: gradient of sum(out**2) w.r.t. X, Wq, Wk, Wv"
JAC = "attention: full Jacobians w.r.t. X, Wq"

# (target, problem prefix, n, ours, theirs, limit on ours / theirs); "first call" compares first calls
JIT_TARGETS = [
    ("compiled VJP gradient of attention at (64, 32) within 1.25x of the hand-written numpy pass",
     GRAD, 64, f"{OURS_JIT}(grad)", "numpy hand-written reverse pass", 1.25),
    ("compiled VJP gradient of attention at (64, 32) no slower than jit jax.grad",
     GRAD, 64, f"{OURS_JIT}(grad)", "jax jit(grad)", 1.0),
    ("compiled jacobian(method='chain') at (8, 8) within 2x of jit jax.jacrev",
     JAC, 8, f"{OURS_JIT}(jacobian(method='chain'))", "jax jit(jacrev)", 2.0),
    ("compiled jacobian(method='chain') at (32, 16) no slower than jit jax.jacrev",
     JAC, 32, f"{OURS_JIT}(jacobian(method='chain'))", "jax jit(jacrev)", 1.0),
    ("compiled jacobian(method='chain') at (64, 32) no slower than jit jax.jacrev",
     JAC, 64, f"{OURS_JIT}(jacobian(method='chain'))", "jax jit(jacrev)", 1.0),
] + [(f"compiled {name} within 1.5x of jit jax.hessian", name, n, f"{OURS_JIT}(hessian)", "jax jit(hessian)", 1.5)
     for name, (_, n, _d) in HESSIAN_PROBLEMS.items()]


def _available(lib):
    try:
        __import__(lib)
        return True
    except ImportError:
        return False


def jit_suite(grad_sizes=((8, 8), (64, 32)), jac_sizes=((8, 8), (32, 16), (64, 32)), hessians=True, repeats=7,
              use_peers=True, progress=None):
    """Compiled jactensor against the uncompiled path, the hand-written numpy pass and jit JAX.

    Problems: the attention gradient (VJP path) at ``grad_sizes``; the attention block's full Jacobians
    w.r.t. X and Wq by ``jacobian(method='chain')`` at ``jac_sizes``; and, with ``hessians``, the Hessians
    of HESSIAN_PROBLEMS. Returns {"records", "targets", "libraries"}.
    """
    from ..jit import jit
    libs = ["jax"] if use_peers and _available("jax") else []
    if libs:
        import jax
        jax.config.update("jax_enable_x64", True)
    records = []

    def group(problem, n, d, methods, ref):
        """methods: {name: (fn, compiles)}; each checked against ref, then all timed interleaved."""
        fns = {name: fn for name, (fn, _) in methods.items()}
        recs = check_then_time(fns, lambda out: _allclose(out, ref), f"{problem} at ({n}, {d})", repeats=repeats,
                               compiles=lambda name: methods[name][1])
        for rec in recs:
            records.append({"problem": problem, "n": n, "d": d, **rec})
            if progress:
                progress(f"{problem[:30]} ({n},{d}) {rec['method']}")

    for n, d in grad_sizes:
        args = P.attention_args(n, d)
        g = grad(P.attention_loss, argnums=(0, 1, 2, 3))
        cg = jit(g)
        methods = {f"{OURS_JIT}(grad)": (lambda: cg(*args), True),
                   f"{UNCOMPILED} grad (VJP path)": (lambda: g(*args), False),
                   "numpy hand-written reverse pass": (lambda: P.hand_attention_grad(*args), False)}
        if libs:
            _, jloss, _ = P.peer_impls("jax")
            ja = [jax.numpy.asarray(a) for a in args]
            jg = jax.jit(jax.grad(jloss, argnums=(0, 1, 2, 3)))
            methods["jax jit(grad)"] = (lambda: jax.block_until_ready(jg(*ja)), True)
        group(GRAD, n, d, methods, P.hand_attention_grad(*args))

    for n, d in jac_sizes:
        args = P.attention_args(n, d)
        J = jacobian(P.attention, argnums=(0, 1))
        cJ = jit(J)
        ref = jacobian(P.attention, argnums=(0, 1), method="rev")(*args)
        methods = {f"{OURS_JIT}(jacobian(method='chain'))": (lambda: cJ(*args), True),
                   f"{UNCOMPILED} jacobian(method='chain')": (lambda: J(*args), False)}
        if libs:
            att, _, _ = P.peer_impls("jax")
            ja = [jax.numpy.asarray(a) for a in args]
            jr = jax.jit(jax.jacrev(att, argnums=(0, 1)))
            methods["jax jit(jacrev)"] = (lambda: jax.block_until_ready(jr(*ja)), True)
        group(JAC, n, d, methods, ref)

    if hessians:
        for name, (make, n, d) in HESSIAN_PROBLEMS.items():
            args, f = make()
            H = hessian(f)
            cH = jit(H)
            methods = {f"{OURS_JIT}(hessian)": (lambda: cH(*args), True),
                       f"{UNCOMPILED} hessian": (lambda: H(*args), False)}
            if libs:
                jargs, jf = make(jax.numpy)
                jh = jax.jit(jax.hessian(jf))
                methods["jax jit(hessian)"] = (lambda: jax.block_until_ready(jh(*jargs)), True)
            group(name, n, d, methods, H(*args))
    return {"records": records, "targets": jit_targets(records), "libraries": libs}


def _find(records, problem, n, method):
    for r in records:
        if r["problem"].startswith(problem) and r["n"] == n and r["method"] == method and r.get("status") == "ok":
            return r
    return None


def jit_targets(records):
    """The targets on this run's medians (steady state), plus each compiled method's first call against the
    peer's first call (compile included on both sides); ``met`` is None where the peer was not measured."""
    out = []
    for target, prob, n, ours, theirs, limit in JIT_TARGETS:
        a, b = _find(records, prob, n, ours), _find(records, prob, n, theirs)
        if a is None:
            continue
        r = None if b is None else a["seconds"] / b["seconds"]
        met = None if r is None else r <= limit
        out.append({"target": target, "ratio": r, "met": met, "limit": limit})
        if b is not None and "first_call_seconds" in a and "first_call_seconds" in b:
            rf = a["first_call_seconds"] / b["first_call_seconds"]
            out.append({"target": f"{target.split(' within')[0].split(' no slower')[0]}: first call (compile "
                                  f"included) against {theirs}'s first call", "ratio": rf, "met": None})
    return out


def format_table(result):
    """The records and targets as plain text (microseconds per call)."""
    lines = [f"{'problem':<58} {'(n, d)':<10} {'method':<44} {'median us':>11} {'first call ms':>14}"]
    for r in result["records"]:
        first = f"{r['first_call_seconds'] * 1e3:14.1f}" if "first_call_seconds" in r else " " * 14
        lines.append(f"{r['problem'][:58]:<58} {str((r['n'], r['d'])):<10} {r['method'][:44]:<44} "
                     f"{r['seconds'] * 1e6:11.1f} {first}")
    lines.append("")
    for t in result["targets"]:
        ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f}"
        met = "" if t["met"] is None else ("  met" if t["met"] else "  MISSED")
        lines.append(f"{ratio:>6}  {t['target']}{met}")
    return "\n".join(lines)


def main(argv=None):
    """``python -m jactensor.bench.jit_suite [--quick]``: the suite pinned to one core, printed."""
    import sys
    from .timing import pinned_to_one_core
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    with pinned_to_one_core():
        res = jit_suite(repeats=3 if quick else 7, hessians=True)
    print(format_table(res))
    return res


if __name__ == "__main__":
    main()
