"""Benchmarks: run the suites, check the targets, write JSON, a markdown table and PNG plots.

``jactensor bench [--quick]`` (or ``python benchmarks/run.py``) writes under benchmarks/results/.
"""
import cProfile
import io
import json
import os
import platform
import pstats
import time

import numpy as np

__all__ = ["run", "MODES"]

MODES = {
    "full": dict(sizes_a=[3, 6, 12, 24, 48, 96], guard=512 * 2**20, scale_b=1.0, peers=((8, 8), (32, 16), (64, 32)),
                 worked=((3, 2), (64, 32)), repeats=7, dense_limit_n=32, max_seconds=5.0),
    "quick": dict(sizes_a=[3, 6, 12, 24, 48], guard=64 * 2**20, scale_b=0.5, peers=((8, 8), (32, 16), (64, 32)),
                  worked=((3, 2), (64, 32)), repeats=3, dense_limit_n=32, max_seconds=1.5),
    "smoke": dict(sizes_a=[3, 4], guard=16 * 2**20, scale_b=0.05, peers=((4, 2),), worked=((3, 2),), repeats=1,
                  dense_limit_n=4, max_seconds=1.0),
}


def _versions():
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for lib in ("opt_einsum", "jax", "torch", "autograd"):
        try:
            out[lib] = getattr(__import__(lib), "__version__", "?")
        except ImportError:
            out[lib] = None
    return out


def _time_of(peer_records, problem, n, method):
    for r in peer_records:
        if r["problem"].startswith(problem) and r["n"] == n and r["method"] == method and r.get("status") == "ok":
            return r
    return None


SPEED_TARGETS = [  # (target, problem prefix, n, our method, their method, limit on ours / theirs)
    ("VJP gradient of attention at (64, 32) faster than torch backward",
     "attention: gradient", 64, "jactensor grad (VJP path)", "torch backward", 1.0),
    ("VJP gradient of attention at (64, 32) within 1.5x of the hand-written numpy pass",
     "attention: gradient", 64, "jactensor grad (VJP path)", "numpy hand-written reverse pass", 1.5),
    ("jacobian(method='chain') at (32, 16) faster than torch.func.jacrev",
     "attention: full", 32, "jactensor jacobian(method='chain')", "torch.func.jacrev", 1.0),
    ("jacobian(method='chain') at (32, 16) within 1.5x of jit jax.jacrev (compile excluded)",
     "attention: full", 32, "jactensor jacobian(method='chain')", "jax jit(jacrev)", 1.5),
]


def check_targets(results):
    """The issue's targets, evaluated on this run's medians (None where a peer was not measured)."""
    recs = results["peers"]["records"]
    t = []
    for target, prob, n, ours, theirs, limit in SPEED_TARGETS:
        a, b = _time_of(recs, prob, n, ours), _time_of(recs, prob, n, theirs)
        r = None if a is None or b is None else a["seconds"] / b["seconds"]
        met = None if r is None else (r < limit if limit == 1.0 else r <= limit)
        t.append({"target": target, "ratio": r, "met": met})
    chain_ = _time_of(recs, "attention: full", 32, "jactensor jacobian(method='chain')")
    jj = _time_of(recs, "attention: full", 32, "jax jit(jacrev)")
    if chain_ is not None and jj is not None and "compile_seconds" in jj:
        r = chain_["seconds"] / (jj["seconds"] + jj["compile_seconds"])
        t.append({"target": "jacobian(method='chain') at (32, 16) faster than jax.jacrev with compile included "
                            "(one call)", "ratio": r, "met": r < 1.0})
    order = results["order"]
    t.append({"target": "chain() planned FLOPs never above the cheaper of forward and reverse",
              "ratio": max(o["flops"]["chosen"] / min(o["flops"]["forward"], o["flops"]["reverse"]) for o in order),
              "met": all(o["chosen_le_cheaper"] for o in order)})
    hg = [o for o in order if o["chain"] == "hourglass"][0]
    t.append({"target": "hourglass chain: planned FLOPs at least 10x below the dearer order",
              "ratio": 1.0 / hg["dearer_over_chosen"], "met": hg["dearer_over_chosen"] >= 10})
    return t


def _profile(fn, top=14):
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(20):
        fn()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    return s.getvalue()


def profiles_for_missed(targets):
    """cProfile of the jactensor side of each missed speed target: where the time goes."""
    from ..programs import attention
    from ..transforms import grad, jacobian
    from . import problems as P
    out = {}
    for t in targets:
        if t["met"] is False and "VJP gradient" in t["target"] and "vjp" not in out:
            args = P.attention_args(64, 32)
            g = grad(P.attention_loss, argnums=(0, 1, 2, 3))
            out["vjp"] = _profile(lambda: g(*args))
        if t["met"] is False and "method='chain'" in t["target"] and "chain" not in out:
            args = P.attention_args(32, 16)
            J = jacobian(attention, argnums=(0, 1))
            out["chain"] = _profile(lambda: J(*args))
    return out


def run(mode="full", out_dir="benchmarks/results", use_peers=True, progress=True, write=print):
    """Run all suites in one process pinned to one core; write results.json, results.md and plots."""
    from .timing import pinned_to_one_core
    with pinned_to_one_core() as pinned:
        return _run(mode, out_dir, use_peers, progress, write, pinned)


def _run(mode, out_dir, use_peers, progress, write, pinned):
    from . import report, suites
    cfg = MODES[mode]
    os.makedirs(out_dir, exist_ok=True)
    bar = _bar(progress)
    step = (lambda msg: (bar.set_description(msg[:60]), bar.update(1))) if bar is not None else None
    t0 = time.perf_counter()
    results = {"meta": {"mode": mode, "pinning": pinned, "versions": _versions(), "machine": platform.machine(),
                        "cpus_visible": os.cpu_count(), "dtype": "float64",
                        "statistic": "median seconds per call over repeats after a warm-up"}}
    results["full_vs_vjp"] = suites.full_vs_vjp(cfg["sizes_a"], repeats=cfg["repeats"], guard_bytes=cfg["guard"],
                                                max_seconds=cfg["max_seconds"], progress=step)
    results["order"] = suites.contraction_order(scale=cfg["scale_b"], repeats=cfg["repeats"])
    results["peers"] = suites.peers(cfg["peers"], cfg["worked"], repeats=cfg["repeats"], use_peers=use_peers,
                                    dense_limit_n=cfg["dense_limit_n"], progress=step)
    if bar is not None:
        bar.close()
    results["targets"] = check_targets(results)
    results["profiles"] = profiles_for_missed(results["targets"]) if mode != "smoke" else {}
    results["meta"]["total_seconds"] = time.perf_counter() - t0
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    md = report.markdown(results)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    pngs = report.plots(results, out_dir)
    write(md)
    write(f"\nwrote {out_dir}/results.json, {out_dir}/results.md" + "".join(f", {p}" for p in pngs))
    return results


def _bar(enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(desc="benchmarks", unit="step")
