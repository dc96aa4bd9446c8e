"""The measuring process of ``jactensor bench``: started by ``bench.measure_pinned`` with its CPU affinity
already set to one core (so every thread it creates stays there), it runs ``bench.measure`` and writes the
results as JSON to the path it was given.

    python -m jactensor.bench.worker MODE OUT.json [peers|no-peers] [progress|no-progress]
"""
import json
import os
import sys


def main(argv):
    mode, path = argv[0], argv[1]
    use_peers = "no-peers" not in argv[2:]
    progress = "no-progress" not in argv[2:]
    cpu = os.environ.get("JACTENSOR_BENCH_CPU", "")
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        pinned = (f"the measuring process was started with its CPU affinity set to core {cpus[0]} before Python "
                  f"imported numpy (os.sched_setaffinity in the parent, before exec), so every thread, BLAS and "
                  f"XLA pools included, runs on that core; thread variables OMP/OPENBLAS/MKL/XLA set to one"
                  if len(cpus) == 1 and cpu != "" else f"not pinned (cores {cpus})")
    else:
        pinned = "not pinned (no os.sched_setaffinity on this platform)"
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    from . import measure
    results = measure(mode, use_peers=use_peers, progress=progress, pinned=pinned)
    from ..fileio import atomic_write
    atomic_write(path, lambda f: f.write(json.dumps(results, default=float).encode()))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
