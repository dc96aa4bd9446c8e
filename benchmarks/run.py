"""Run every benchmark suite and write benchmarks/results/{results.json,results.md,*.png}.

    python benchmarks/run.py            # full run (what the README's figures come from)
    python benchmarks/run.py --quick    # under two minutes

Same as `jactensor bench [--quick]`.
"""
import sys

from jactensor.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench"] + sys.argv[1:]))
