"""Benchmarks: run the suites, check the targets, write JSON, a markdown table and PNG plots.

``jactensor bench [--quick | --smoke]`` writes into a new folder in the current directory named
after the mode and the time (``jactensor-bench-quick-20261130-101500``), or into ``--out``: a new
folder, or an existing empty one (one that holds files only with ``--overwrite``). Files are
written only when every suite has finished, each to a temporary name renamed into place; an
interrupted run leaves nothing behind (a folder it created is removed again).
``python benchmarks/run.py`` refreshes the committed results in benchmarks/results/.
"""
import _thread
import contextlib
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import signal
import sys
import threading
import time

import numpy as np

__all__ = ["run", "MODES", "prepare_output", "check_targets", "OutputFolderError"]

MODES = {
    "full": dict(sizes_a=[3, 6, 12, 24, 48, 96], guard=512 * 2**20, scale_b=1.0, peers=((8, 8), (32, 16), (64, 32)),
                 worked=((3, 2), (64, 32)), repeats=7, dense_limit_n=32, max_seconds=5.0,
                 chains=(1000, 4000, 16000), jit=dict(grad_sizes=((8, 8), (64, 32)),
                                                      jac_sizes=((8, 8), (32, 16), (64, 32)), hessians=True)),
    "quick": dict(sizes_a=[3, 6, 12, 24, 48], guard=64 * 2**20, scale_b=0.5, peers=((8, 8), (32, 16), (64, 32)),
                  worked=((3, 2), (64, 32)), repeats=3, dense_limit_n=32, max_seconds=1.5,
                  chains=(1000, 4000), jit=dict(grad_sizes=((64, 32),), jac_sizes=((8, 8), (32, 16)),
                                                hessians=True)),
    "smoke": dict(sizes_a=[3, 4], guard=16 * 2**20, scale_b=0.05, peers=((4, 2),), worked=((3, 2),), repeats=1,
                  dense_limit_n=4, max_seconds=1.0, chains=(50, 100),
                  jit=dict(grad_sizes=((4, 2),), jac_sizes=((4, 2),), hessians=False)),
}

TIE = 0.10  # a ratio within 10% of its limit is inside this machine's run-to-run spread: reported as a tie


def _versions():
    """Installed versions, read from the package metadata: importing jax or torch just for this would cost
    seconds and, with jax, a garbage-collection hook that can swallow Ctrl-C."""
    from importlib import metadata
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for lib in ("opt_einsum", "jax", "torch", "autograd"):
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


class _CtrlC:
    """Ctrl-C that cannot be lost. A KeyboardInterrupt raised while Python runs a callback whose errors it
    ignores (jax installs a garbage-collection hook; __del__ methods) would be printed as "Exception ignored"
    and the run would go on to write its results. Here a press that lands in such a callback is signalled
    again from a helper thread a moment later, once ordinary code runs, and it is also recorded, so
    ``check()`` raises at the next step if all else fails."""

    def __init__(self):
        self.pressed, self.old, self.old_hook = False, None, None

    @staticmethod
    def _again():
        t = threading.Timer(0.02, _thread.interrupt_main)
        t.daemon = True
        t.start()

    def _handler(self, signum, frame):
        self.pressed = True
        if frame is not None and any(getattr(cb, "__code__", None) is frame.f_code for cb in gc.callbacks):
            self._again()
            return
        raise KeyboardInterrupt

    def _unraisable(self, unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            self._again()
            return
        self.old_hook(unraisable)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handler)
            self.old_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
            sys.unraisablehook = self.old_hook

    def check(self):
        if self.pressed:
            raise KeyboardInterrupt


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
    """The project's targets, evaluated on this run's medians. A target is reported only when the run
    measured its sizes (jactensor's own method at the target's size, the hourglass chain at full scale);
    ``met`` is None where the peer it compares with was not measured (not installed, or --no-peers)."""
    from .suites import ORDER_CHAINS
    recs = results["peers"]["records"]
    t = []
    for target, prob, n, ours, theirs, limit in SPEED_TARGETS:
        a, b = _time_of(recs, prob, n, ours), _time_of(recs, prob, n, theirs)
        if a is None:  # this run's sizes do not include the target's
            continue
        r = None if b is None else a["seconds"] / b["seconds"]
        t.append({"target": target, "ratio": r, "limit": limit})
    chain_ = _time_of(recs, "attention: full", 32, "jactensor jacobian(method='chain')")
    jj = _time_of(recs, "attention: full", 32, "jax jit(jacrev)")
    if chain_ is not None and jj is not None and "compile_seconds" in jj:
        r = chain_["seconds"] / (jj["seconds"] + jj["compile_seconds"])
        t.append({"target": "jacobian(method='chain') at (32, 16) faster than jax.jacrev with compile included "
                            "(one call)", "ratio": r, "limit": 1.0})
    order = results["order"]
    t.append({"target": "chain() planned FLOPs never above the cheaper of forward and reverse",
              "ratio": max(o["flops"]["chosen"] / min(o["flops"]["forward"], o["flops"]["reverse"]) for o in order),
              "met": all(o["chosen_le_cheaper"] for o in order)})
    hg = [o for o in order if o["chain"] == "hourglass" and list(o["sizes"]) == list(ORDER_CHAINS["hourglass"])]
    if hg:
        t.append({"target": f"hourglass chain {'-'.join(map(str, hg[0]['sizes']))}: planned FLOPs at least 10x "
                            f"below the dearer order",
                  "ratio": 1.0 / hg[0]["dearer_over_chosen"], "met": hg[0]["dearer_over_chosen"] >= 10})
    chains = results.get("long_chain", {}).get("records", [])
    longest = max(chains, key=lambda r: r["L"], default=None)
    if longest is not None and longest["L"] >= 16000:
        t.append({"target": f"jacobian(method='chain') of an elementwise program of {longest['L']:,} ops at most 3x "
                            f"method='rev'", "ratio": longest["ratio"], "limit": 3.0})
    if "jit" in results:
        from .jit_suite import jit_targets
        t += [dict(x, limit=x.get("limit")) for x in jit_targets(results["jit"]["records"])]
    if any(k in results for k in ("hessians", "per_example", "ntk")):
        from .structured import structured_targets
        t += structured_targets(results)
    if "vit" in results:
        from .vit_suite import vit_targets
        t += vit_targets(results["vit"])
    return [_judge(x) for x in t]


def _judge(t):
    """met: True / False from the ratio and the limit, "tie" inside the spread (see TIE), None if unmeasured."""
    if t.get("limit") is None:
        return t
    r, limit = t["ratio"], t["limit"]
    if r is None:
        return dict(t, met=None)
    if abs(r - limit) <= TIE * limit:
        return dict(t, met="tie")
    return dict(t, met=r <= limit)


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


class OutputFolderError(ValueError):
    """The output folder cannot be used (a file, or a folder that already holds files)."""


def default_folder(mode, when=None):
    """``jactensor-bench-MODE-YYYYMMDD-HHMMSS`` in the current directory, made unique with -2, -3, ..."""
    base = f"jactensor-bench-{mode}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}"
    path, k = base, 1
    while os.path.lexists(path):
        k += 1
        path = f"{base}-{k}"
    return path


def prepare_output(out_dir, mode, overwrite=False):
    """Check the output folder before any work: None -> a fresh default folder; an existing file is refused,
    and so is an existing folder that holds files unless ``overwrite``. Creates nothing; returns the path."""
    if mode not in MODES and mode != "scale":
        raise ValueError(f"bench: unknown mode {mode!r}; choose from {sorted(MODES) + ['scale']}")
    if out_dir is None:
        return default_folder(mode)
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise OutputFolderError(f"bench: --out {out_dir!r} is an existing file; name a folder (new, or existing "
                                    f"and empty)")
        held = sorted(os.listdir(out_dir))
        if held and not overwrite:
            shown = ", ".join(held[:4]) + (f", ... ({len(held) - 4} more)" if len(held) > 4 else "")
            raise OutputFolderError(f"bench: the folder {out_dir!r} already holds files ({shown}); name a new or "
                                    f"empty folder, or add --overwrite to replace the results in it")
    return out_dir


def _make_folder(path):
    """os.makedirs, returning the folders it created (outermost first) so they can be removed again."""
    made, p = [], os.path.abspath(path)
    while not os.path.isdir(p):
        made.append(p)
        p = os.path.dirname(p)
    os.makedirs(path, exist_ok=True)
    return made[::-1]


def _remove_made(made):
    """Remove the folders we created, innermost first, if they are still empty."""
    for d in reversed(made):
        with contextlib.suppress(OSError):
            os.rmdir(d)


def run(mode="full", out_dir=None, use_peers=True, progress=True, write=print, overwrite=False):
    """Run all suites in a fresh process pinned to one core (see ``measure_pinned``); write results.json,
    results.md and the plots into ``out_dir`` (see the module docstring; None: a fresh folder). Returns the
    results dict."""
    out_dir = prepare_output(out_dir, mode, overwrite)
    made = _make_folder(out_dir)
    try:
        with _CtrlC() as ctrl_c:
            write(f"jactensor bench ({mode}): the results go to {out_dir} once every suite has finished")
            sys.stdout.flush()
            results = measure_pinned(mode, use_peers, progress)
            ctrl_c.check()
            return _report(results, out_dir, write, ctrl_c.check)
    except BaseException as e:
        _remove_made(made)  # files are written only at the very end, so a folder we made is still empty
        if isinstance(e, KeyboardInterrupt):
            gone = made and not os.path.exists(out_dir)
            raise KeyboardInterrupt(f"removed the unfinished results folder {out_dir}" if gone
                                    else f"no results were written to {out_dir}") from None
        raise


def measure_pinned(mode, use_peers=True, progress=True):
    """``measure()`` in a new Python process whose CPU affinity is set to one core before it starts, so every
    thread it ever creates (numpy's BLAS pool, XLA's, torch's) runs on that core: pinning a running process
    pins only its calling thread. Thread-count variables are set for the libraries too."""
    import subprocess
    import tempfile
    from .timing import THREAD_ENV
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cpu = cpus[0] if cpus else None
    env = dict(os.environ, **THREAD_ENV)
    env["JACTENSOR_BENCH_CPU"] = "" if cpu is None else str(cpu)
    fd, path = tempfile.mkstemp(prefix="jactensor-bench-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, "-m", "jactensor.bench.worker", mode, path, "peers" if use_peers else "no-peers",
           "progress" if progress else "no-progress"]
    pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen(cmd, env=env, preexec_fn=pre)
    try:
        rc = proc.wait()
        if rc != 0:
            raise RuntimeError(f"bench: the measuring process failed (exit {rc}); see the lines above")
        with open(path) as f:
            return json.load(f)
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _commit():
    """The git commit of the code being measured (and whether the tree had local changes), if known."""
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+local changes" if dirty else "")) if head else None


def measure(mode, use_peers=True, progress=True, check=lambda: None, pinned="not pinned"):
    """Run every suite in this process and evaluate the targets; returns the results dict."""
    from . import structured, suites
    from .jit_suite import jit_suite
    from .vit_suite import vit_suite
    cfg = MODES[mode]
    bar = _bar(progress)

    def step(msg):
        check()
        if bar is not None:
            bar.set_description(msg[:60])
            bar.update(1)
    t0 = time.perf_counter()
    libs = [lib for lib in ("jax", "torch", "autograd") if use_peers and suites._available(lib)]
    results = {"meta": {"mode": mode, "pinning": pinned, "versions": _versions(), "machine": platform.machine(),
                        "cpus_visible": os.cpu_count(), "dtype": "float64", "commit": _commit(),
                        "statistic": "median seconds per call over repeats after a warm-up"}}
    try:
        results["full_vs_vjp"] = suites.full_vs_vjp(cfg["sizes_a"], repeats=cfg["repeats"], guard_bytes=cfg["guard"],
                                                    max_seconds=cfg["max_seconds"], progress=step)
        check()
        results["order"] = suites.contraction_order(scale=cfg["scale_b"], repeats=cfg["repeats"])
        check()
        results["peers"] = suites.peers(cfg["peers"], cfg["worked"], repeats=cfg["repeats"], use_peers=use_peers,
                                        dense_limit_n=cfg["dense_limit_n"], progress=step)
        check()
        results["long_chain"] = suites.long_chain(cfg["chains"], repeats=min(cfg["repeats"], 3), progress=step)
        check()
        results["jit"] = jit_suite(repeats=cfg["repeats"], use_peers=use_peers, progress=step, **cfg["jit"])
        check()
        results["hessians"] = structured.hessians(mode, repeats=min(cfg["repeats"], 3), libs=libs, progress=step)
        check()
        results["per_example"] = structured.per_example(mode, repeats=cfg["repeats"], libs=libs, progress=step)
        check()
        results["ntk"] = structured.ntk(mode, repeats=cfg["repeats"], libs=libs, progress=step)
        check()
        results["vit"] = vit_suite(mode, repeats=cfg["repeats"], libs=libs, progress=step)
    finally:
        if bar is not None:
            bar.close()
    check()
    results["targets"] = check_targets(results)
    results["profiles"] = profiles_for_missed(results["targets"]) if mode != "smoke" else {}
    results["meta"]["total_seconds"] = time.perf_counter() - t0
    return results


def _report(results, out_dir, write, check=lambda: None):
    from . import report
    md = report.markdown(results)
    files = {"results.json": json.dumps(results, indent=1, default=float).encode(), "results.md": md.encode()}
    pngs = report.plots(results)
    if pngs is None:
        print("bench: plots skipped: matplotlib is not installed (pip install 'jactensor[bench]')", file=sys.stderr)
    else:
        files.update(pngs)
    check()  # never write the results of a run the user stopped
    _write_all(out_dir, files)
    write(md)
    write(f"\nresults written to {os.path.abspath(out_dir)}: {', '.join(files)}")
    return results


def _write_all(folder, files):
    """All of this run's files or none of them (see fileio.write_all)."""
    from ..fileio import write_all
    write_all(folder, files)


def _bar(enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(desc="benchmarks", unit="step")
