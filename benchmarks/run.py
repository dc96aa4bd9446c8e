"""Run every benchmark suite and refresh this repository's benchmarks/results/ (results.json, results.md,
the PNG plots): the one command that is told to overwrite the committed results.

    python benchmarks/run.py            # full run (what the README's figures come from)
    python benchmarks/run.py --quick    # a shorter run

`jactensor bench [--quick]` runs the same suites but writes to a fresh folder unless given --out.
"""
import os
import sys

from jactensor.cli import main

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

if __name__ == "__main__":
    sys.exit(main(["bench", "--out", RESULTS, "--overwrite"] + sys.argv[1:]))
