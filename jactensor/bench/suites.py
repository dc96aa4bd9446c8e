"""The three benchmark suites: full Jacobian vs VJP, contraction order, and the peers side by side."""
import time

import numpy as np

from ..config import config
from ..errors import JacobianTooLargeError
from ..chain import chain, chain_plan
from ..jacobian import Jacobian
from ..transforms import grad, jacobian
from . import problems as P
from .timing import fit_slope, measure_interleaved, measure_peak, measure_time

__all__ = ["full_vs_vjp", "contraction_order", "peers", "long_chain", "ORDER_CHAINS"]


def _allclose(a, b, rtol=1e-8, atol=1e-10):
    a = a if isinstance(a, (tuple, list)) else [a]
    b = b if isinstance(b, (tuple, list)) else [b]
    return len(a) == len(b) and all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
                                    for x, y in zip(a, b))


# ---- (a) full Jacobian against VJP ---------------------------------------------------------------
def full_vs_vjp(sizes, repeats=5, guard_bytes=256 * 2**20, max_seconds=3.0, progress=None):
    """Gradient of the worked example's chain and of the attention block by three routes:
    dense per-op Jacobians chained, structured Jacobians through chain(), and the VJP path.
    A route stops at the first n whose Jacobians exceed ``guard_bytes`` (the memory guard) or whose
    single call took longer than ``max_seconds``. Returns records and fitted log-log slopes."""
    records, slopes = [], {}
    for prob, loss, make in (("worked example", P.worked_loss, P.worked_args),
                             ("attention", P.attention_loss, P.attention_args)):
        argnums = (0, 1) if prob == "worked example" else (0, 1, 2, 3)
        routes = {"dense per-op Jacobians": lambda a: jacobian(loss, argnums=argnums, method="chain", dense=True)(*a),
                  "structured chain()": lambda a: jacobian(loss, argnums=argnums, method="chain")(*a),
                  "VJP (grad)": lambda a: grad(loss, argnums=argnums)(*a)}
        stopped = {}
        for n in sizes:
            d = max(2, n // 2)
            args = make(n, d)
            ref = grad(loss, argnums=argnums)(*args)
            for route, fn in routes.items():
                rec = {"problem": prob, "n": n, "d": d, "route": route}
                if route in stopped:
                    rec["status"] = stopped[route]
                    records.append(rec)
                    continue
                try:
                    with config.override(max_jacobian_bytes=guard_bytes):
                        t0 = time.perf_counter()
                        out = fn(args)
                        once = time.perf_counter() - t0
                        if not _allclose(out, ref):
                            raise AssertionError(f"{route} disagrees with the VJP path at n={n}")
                        rec["seconds"] = once if once > 0.5 else measure_time(lambda: fn(args), repeats=repeats)
                        rec["peak_bytes"] = measure_peak(lambda: fn(args))
                        rec["status"] = "ok"
                        if once > max_seconds:
                            stopped[route] = f"skipped: n={n} took {once:.1f} s"
                except JacobianTooLargeError:
                    rec["status"] = stopped[route] = f"refused by the memory guard ({guard_bytes // 2**20} MiB)"
                records.append(rec)
                if progress:
                    progress(f"{prob} n={n} {route}")
        for route in routes:
            pts = [r for r in records if r["problem"] == prob and r["route"] == route and r.get("status") == "ok"]
            slopes[f"{prob} | {route}"] = {
                "time": fit_slope([r["n"] for r in pts], [r["seconds"] for r in pts]),
                "memory": fit_slope([r["n"] for r in pts], [r["peak_bytes"] for r in pts])}
    return {"records": records, "slopes": slopes}


# ---- (b) contraction order -------------------------------------------------------------------------
ORDER_CHAINS = {  # vector sizes from the input to the output; len - 1 Jacobians
    "wide to narrow": [512, 256, 128, 16, 1],
    "narrow to wide": [1, 16, 128, 256, 512],
    "hourglass": [256, 256, 4, 256, 256],
    "mixed (8 Jacobians)": [64, 8, 128, 4, 96, 16, 200, 2, 50],
    "short (3 Jacobians)": [200, 20, 200, 20],
}


def contraction_order(scale=1.0, repeats=5, seed=0):
    """FLOPs (from the plan) and measured time of forward order, reverse order and chain()'s choice."""
    rng = np.random.default_rng(seed)
    out = []
    for name, sizes in ORDER_CHAINS.items():
        sizes = [max(1, int(round(s * scale))) if s > 4 else s for s in sizes]
        jacs = [Jacobian.from_dense(rng.normal(size=(sizes[k + 1], sizes[k])), 1)
                for k in range(len(sizes) - 1)][::-1]   # outermost first
        plan = chain_plan(*jacs)
        ref = chain(*jacs).dense()
        rec = {"chain": name, "sizes": sizes, "n_jacobians": len(jacs),
               "flops": {"chosen": plan.chosen.flops, "forward": plan.forward.flops, "reverse": plan.reverse.flops}}
        times = {}
        for order in ("best", "forward", "reverse"):
            if not np.allclose(chain(*jacs, order=order).dense(), ref, rtol=1e-9, atol=1e-9):
                raise AssertionError(f"chain order {order} disagrees on {name}")
            times["chosen" if order == "best" else order] = measure_time(lambda: chain(*jacs, order=order),
                                                                         repeats=repeats)
        rec["seconds"] = times
        rec["chosen_le_cheaper"] = plan.chosen.flops <= min(plan.forward.flops, plan.reverse.flops)
        rec["dearer_over_chosen"] = max(plan.forward.flops, plan.reverse.flops) / max(plan.chosen.flops, 1)
        out.append(rec)
    return out


# ---- (c) peers -------------------------------------------------------------------------------------
def _available(lib):
    try:
        __import__(lib)
        return True
    except ImportError:
        return False


def peers(sizes=((8, 8), (32, 16), (64, 32)), worked_sizes=((3, 2), (64, 32)), repeats=5, use_peers=True,
          dense_limit_n=32, progress=None):
    """Every method on the same problems in one run, single-threaded, float64; numbers checked first.

    Problems: the attention block's full Jacobians w.r.t. X and Wq; the gradient of sum(out**2) w.r.t.
    X, Wq, Wk, Wv; the gradient of the worked example's chain. JAX compile time is reported apart.
    """
    libs = [l for l in ("jax", "torch", "autograd") if use_peers and _available(l)]
    if "jax" in libs:
        import jax
        jax.config.update("jax_enable_x64", True)
    if "torch" in libs:
        import torch
        torch.set_num_threads(1)
    records, pending = [], []

    def run(problem, n, d, method, fn, ref, compile_fn=None):
        """Check one method's numbers now; its timing happens in flush(), interleaved with its group."""
        rec = {"problem": problem, "n": n, "d": d, "method": method}
        try:
            if compile_fn is not None:
                t0 = time.perf_counter()
                compile_fn()
                rec["first_call_seconds"] = time.perf_counter() - t0
            out = fn()
            if not _allclose(out, ref):
                raise AssertionError(f"{method} disagrees on {problem} at ({n}, {d})")
            rec["status"] = "ok"
            pending.append((rec, fn))
        except JacobianTooLargeError as e:
            rec["status"] = f"refused: {str(e)[:80]}"
        records.append(rec)

    def flush():
        for prob in dict.fromkeys(r["problem"] for r, _ in pending):
            group = [(r, fn) for r, fn in pending if r["problem"] == prob]
            times = measure_interleaved({r["method"]: fn for r, fn in group}, repeats=repeats)
            for r, _ in group:
                r["seconds"] = times[r["method"]]
                if "first_call_seconds" in r:
                    r["compile_seconds"] = max(r["first_call_seconds"] - r["seconds"], 0.0)
                if progress:
                    progress(f"{prob[:30]} ({r['n']},{r['d']}) {r['method']}")
        pending.clear()

    for n, d in sizes:
        args = P.attention_args(n, d)
        # full Jacobians w.r.t. X and Wq
        prob = "attention: full Jacobians w.r.t. X, Wq"
        att = P.attention
        ref = jacobian(att, argnums=(0, 1), method="rev")(*args)
        run(prob, n, d, "jactensor jacobian(method='chain')", lambda: jacobian(att, argnums=(0, 1))(*args), ref)
        run(prob, n, d, "jactensor jacobian(method='rev')",
            lambda: jacobian(att, argnums=(0, 1), method="rev")(*args), ref)
        run(prob, n, d, "jactensor jacobian(method='fwd')",
            lambda: jacobian(att, argnums=(0, 1), method="fwd")(*args), ref)
        if n <= dense_limit_n:
            run(prob, n, d, "jactensor dense per-op chain",
                lambda: jacobian(att, argnums=(0, 1), dense=True)(*args), ref)
        # gradient
        gprob = "attention: gradient of sum(out**2) w.r.t. X, Wq, Wk, Wv"
        gref = P.hand_attention_grad(*args)
        run(gprob, n, d, "jactensor grad (VJP path)", lambda: grad(P.attention_loss, argnums=(0, 1, 2, 3))(*args), gref)
        run(gprob, n, d, "numpy hand-written reverse pass", lambda: P.hand_attention_grad(*args), gref)
        _peer_runs(libs, run, prob, gprob, n, d, args, ref, gref)
        flush()
    for n, d in worked_sizes:
        args = P.worked_args(n, d)
        wprob = "worked example: gradient w.r.t. Q, K"
        wref = P.hand_worked_grad(*args)
        run(wprob, n, d, "jactensor grad (VJP path)", lambda: grad(P.worked_loss, argnums=(0, 1))(*args), wref)
        run(wprob, n, d, "jactensor jacobian(method='chain')",
            lambda: jacobian(P.worked_loss, argnums=(0, 1))(*args), wref)
        run(wprob, n, d, "numpy closed form", lambda: P.hand_worked_grad(*args), wref)
        _peer_worked(libs, run, wprob, n, d, args, wref)
        flush()
    return {"records": records, "libraries": libs}


def _peer_runs(libs, run, prob, gprob, n, d, args, ref, gref):
    # one function per library: each keeps its own closures (timing runs later, interleaved)
    for lib in libs:
        {"jax": _jax_runs, "torch": _torch_runs, "autograd": _autograd_runs}[lib](run, prob, gprob, n, d, args,
                                                                                   ref, gref)


def _jax_runs(run, prob, gprob, n, d, args, ref, gref):
    import jax
    att, loss, _ = P.peer_impls("jax")
    ja = [jax.numpy.asarray(a) for a in args]
    jr = jax.jit(jax.jacrev(att, argnums=(0, 1)))
    jf = jax.jit(jax.jacfwd(att, argnums=(0, 1)))
    jg = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    block = jax.block_until_ready
    run(prob, n, d, "jax jit(jacrev)", lambda: block(jr(*ja)), ref, compile_fn=lambda: block(jr(*ja)))
    run(prob, n, d, "jax jit(jacfwd)", lambda: block(jf(*ja)), ref, compile_fn=lambda: block(jf(*ja)))
    run(gprob, n, d, "jax jit(grad)", lambda: block(jg(*ja)), gref, compile_fn=lambda: block(jg(*ja)))


def _torch_runs(run, prob, gprob, n, d, args, ref, gref):
    import torch
    from torch.func import jacfwd, jacrev
    att, loss, _ = P.peer_impls("torch")
    ta = [torch.tensor(a, dtype=torch.float64) for a in args]
    run(prob, n, d, "torch.func.jacrev", lambda: [t.numpy() for t in jacrev(att, argnums=(0, 1))(*ta)], ref)
    run(prob, n, d, "torch.func.jacfwd", lambda: [t.numpy() for t in jacfwd(att, argnums=(0, 1))(*ta)], ref)
    leaves = [t.clone().requires_grad_(True) for t in ta]

    def backward():
        for t in leaves:
            t.grad = None
        loss(*leaves).backward()
        return [t.grad.numpy() for t in leaves]
    run(gprob, n, d, "torch backward", backward, gref)


def _autograd_runs(run, prob, gprob, n, d, args, ref, gref):
    import autograd
    att, loss, _ = P.peer_impls("autograd")
    run(prob, n, d, "HIPS autograd jacobian", lambda: [autograd.jacobian(att, k)(*args) for k in (0, 1)], ref)
    run(gprob, n, d, "HIPS autograd grad", lambda: autograd.grad(loss, (0, 1, 2, 3))(*args), gref)


def _peer_worked(libs, run, wprob, n, d, args, wref):
    for lib in libs:
        {"jax": _jax_worked, "torch": _torch_worked, "autograd": _autograd_worked}[lib](run, wprob, n, d, args, wref)


def _jax_worked(run, wprob, n, d, args, wref):
    import jax
    _, _, wl = P.peer_impls("jax")
    ja = [jax.numpy.asarray(a) for a in args]
    jg = jax.jit(jax.grad(wl, argnums=(0, 1)))
    run(wprob, n, d, "jax jit(grad)", lambda: jax.block_until_ready(jg(*ja)), wref,
        compile_fn=lambda: jax.block_until_ready(jg(*ja)))


def _torch_worked(run, wprob, n, d, args, wref):
    import torch
    _, _, wl = P.peer_impls("torch")
    leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=k < 2) for k, a in enumerate(args)]

    def backward():
        for t in leaves[:2]:
            t.grad = None
        wl(*leaves).backward()
        return [t.grad.numpy() for t in leaves[:2]]
    run(wprob, n, d, "torch backward", backward, wref)


def _autograd_worked(run, wprob, n, d, args, wref):
    import autograd
    _, _, wl = P.peer_impls("autograd")
    run(wprob, n, d, "HIPS autograd grad", lambda: autograd.grad(wl, (0, 1))(*args), wref)


# ---- (d) long programs: chain accumulation is linear in the program's length --------------------------
def long_chain(lengths=(1000, 4000, 16000), repeats=3, progress=None):
    """Full Jacobian of an elementwise program of L ops (alternating sigmoid and tanh) on x of size 10 by
    method="chain" and method="rev"
    (the same numbers, checked), median of repeats; the ratio chain / rev per length."""
    from .. import ops

    def program(L):  # exactly L recorded primitive calls
        def f(x):
            for k in range(L):
                x = ops.tanh(x) if k % 2 else ops.sigmoid(x)
            return x
        return f

    x = np.random.default_rng(0).normal(size=10)
    records = []
    for L in lengths:
        f = program(L)
        a, b = jacobian(f, method="chain")(x), jacobian(f, method="rev")(x)
        if not _allclose(a, b, rtol=1e-9, atol=1e-12):
            raise AssertionError(f"chain and rev disagree on the {L}-op program")
        times = measure_interleaved({"chain": lambda: jacobian(f, method="chain")(x),
                                     "rev": lambda: jacobian(f, method="rev")(x)}, repeats=repeats, min_time=0.0)
        records.append({"L": L, "chain_seconds": times["chain"], "rev_seconds": times["rev"],
                        "ratio": times["chain"] / times["rev"]})
        if progress:
            progress(f"long chain L={L}")
    slope = fit_slope([r["L"] for r in records], [r["chain_seconds"] for r in records], last=len(records))
    return {"records": records, "time_slope": slope}
