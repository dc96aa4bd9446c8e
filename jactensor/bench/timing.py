"""Timing and memory measurement: medians of repeats after a warm-up, each repeat long enough to time."""
import gc
import os
import time
import tracemalloc

import numpy as np

__all__ = ["pinned_to_one_core", "pin_one_core", "measure_time", "measure_interleaved", "measure_peak", "fit_slope",
           "check_then_time", "THREAD_ENV"]

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
              "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}


def pin_one_core():
    """Pin the calling thread (and every thread created after this call) to one core, and ask the libraries
    for one thread. Threads that already exist -- a BLAS pool started when numpy was imported -- keep their
    affinity, so this does not pin a running process as a whole: ``jactensor bench`` measures in a fresh
    process started with its affinity already set (bench.measure_pinned). Returns a description."""
    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)
    how = ["thread env vars (OMP/OPENBLAS/MKL/XLA)"]
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        how.append(f"os.sched_setaffinity to core {cpu} (this thread and threads created from now on)")
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
        how.append("threadpoolctl limit 1")
    except ImportError:
        pass
    return ", ".join(how)


class pinned_to_one_core:
    """Context manager: pin_one_core() inside, the previous CPU affinity restored after."""

    def __enter__(self):
        self.old = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        return pin_one_core()

    def __exit__(self, *exc):
        if self.old is not None:
            os.sched_setaffinity(0, self.old)


def measure_time(fn, repeats=7, min_time=0.02, max_loops=10_000):
    """Median seconds per call: one warm-up call, then ``repeats`` repeats of enough loops to last min_time."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    loops = int(min(max_loops, max(1, min_time / once)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        times.append((time.perf_counter() - t0) / loops)
    return float(np.median(times))


def measure_interleaved(fns, repeats=7, min_time=0.02, max_loops=10_000):
    """Median seconds per call for several functions measured in alternating rounds, so a slow spell of
    a noisy machine hits all of them alike (ratios from one run are what the benchmarks quote)."""
    loops = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        loops[name] = int(min(max_loops, max(1, min_time / once)))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            times[name].append((time.perf_counter() - t0) / loops[name])
    return {name: float(np.median(ts)) for name, ts in times.items()}


def check_then_time(methods, agrees, what, repeats=7, min_time=0.02, compiles=lambda name: False, peak=False):
    """The numbers first, then the clock: each of ``methods`` ({name: fn}) is called and its result checked
    with ``agrees(out)`` (an AssertionError names the method and ``what``), then all are timed in
    interleaved rounds. A method that ``compiles(name)`` has its first call timed apart
    (``first_call_seconds``; ``compile_seconds`` is that minus the median) and its replay checked.
    ``peak``: also each method's peak allocation (``peak_bytes``). Returns one record per method."""
    records = []
    for name, fn in methods.items():
        rec = {"method": name, "status": "ok"}
        if compiles(name):
            t0 = time.perf_counter()
            fn()
            rec["first_call_seconds"] = time.perf_counter() - t0
        if not agrees(fn()):
            raise AssertionError(f"{name} disagrees on {what}")
        if peak:
            rec["peak_bytes"] = measure_peak(fn)
        records.append(rec)
    times = measure_interleaved(methods, repeats=repeats, min_time=min_time)
    for rec in records:
        rec["seconds"] = times[rec["method"]]
        if "first_call_seconds" in rec:
            rec["compile_seconds"] = max(rec["first_call_seconds"] - rec["seconds"], 0.0)
    return records


def measure_peak(fn):
    """Peak bytes allocated by numpy/Python during one call (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return int(peak)


def fit_slope(ns, values, last=3):
    """Slope of log(value) against log(n) over the last ``last`` points (the asymptotic power of n)."""
    pts = [(n, v) for n, v in zip(ns, values) if v and v > 0][-last:]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])
