"""The attention Jacobian past memory: n = 512, d = 64 (8 GiB dense) written to zarr, its norm and top singular
values on dask, with the threaded scheduler and a two-worker LocalCluster; writes scale.json and scale.md.

    python benchmarks/scale.py                        # full size, about half an hour here, 8 GiB of disk at a time
    python benchmarks/scale.py --n 128 --d 32         # a quick look
    python benchmarks/scale.py --schedulers threads --store-dir /big/disk

Needs the dask extra: pip install -e ".[dask]" (and scipy for the ARPACK cross-check).
"""
import argparse
import os
import sys

from jactensor.bench.scale import run_scale


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                   help="directory for scale.json and scale.md (default: this repository's benchmarks/results)")
    p.add_argument("--n", type=int, default=512, help="sequence length (default 512)")
    p.add_argument("--d", type=int, default=64, help="model width (default 64)")
    p.add_argument("--schedulers", nargs="+", default=["threads", "distributed"], choices=["threads", "distributed"])
    p.add_argument("--store-dir", default=None, help="where the temporary zarr stores go (default: the system's "
                                                     "temporary directory); they are removed afterwards")
    p.add_argument("--check-n", type=int, default=64, help="size of the dense cross-check (0 skips it)")
    p.add_argument("--power-iter", type=int, default=2, help="power iterations of svd_compressed (default 2)")
    a = p.parse_args(argv)
    run_scale(a.out, n=a.n, d=a.d, schedulers=tuple(a.schedulers), store_dir=a.store_dir, check_n=a.check_n,
              power_iter=a.power_iter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
