"""The ``jactensor`` command: demo (default), explain, check, check-formula, bench, vit."""
import argparse
import sys

__all__ = ["main"]


def _demo(args):
    from .demo import run_demo
    return 0 if run_demo(seed=args.seed) else 1


def _check(args):
    from .core import registry
    from .testing import check
    import numpy as np
    names = args.ops or sorted(registry)
    rng = np.random.default_rng(args.seed)
    failed = 0
    for name in names:
        prim = registry[name]
        reports = [check(prim, *a, **kw) for a, kw in prim.battery(rng, args.n)]
        worst = max(r.max_error for r in reports)
        bad = [r for r in reports if not r.ok]
        failed += len(bad)
        print(f"{name:<14} {len(reports)} cases  max rel error {worst:.1e}  {'ok' if not bad else 'FAILED'}")
        for r in bad:
            print(r)
    return 1 if failed else 0


def build_parser():
    p = argparse.ArgumentParser(prog="jactensor", description="Explicit Jacobian tensors for tensor programs.")
    sub = p.add_subparsers(dest="command")
    d = sub.add_parser("demo", help="the worked example: A = QK, softmax, chain rule, VJP, a hand derivation")
    d.add_argument("--seed", type=int, default=0, help="seed for Q, K and the upstream gradient (default 0)")
    d.set_defaults(func=_demo)
    c = sub.add_parser("check", help="three-way check (finite differences, VJP, JVP) of registered primitives")
    c.add_argument("ops", nargs="*", help="primitive names (default: all)")
    c.add_argument("--n", type=int, default=2, help="size parameter of the input battery")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_check)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv or ["demo"])
    if not getattr(args, "func", None):
        args = parser.parse_args(["demo"] + argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
