"""The ``jactensor`` command: demo (default), explain, check, check-formula, bench, vit."""
import argparse
import os
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
    unknown = [n for n in names if n not in registry]
    if unknown:
        print(f"jactensor check: no primitive named {', '.join(unknown)}; registered: {', '.join(sorted(registry))}",
              file=sys.stderr)
        return 2
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


def _parse_params(extra):
    """--key value pairs -> params (Python literals; lists become integer/float arrays)."""
    import ast
    import numpy as np
    params, k = {}, 0
    while k < len(extra):
        key = extra[k]
        if not key.startswith("--") or k + 1 >= len(extra):
            raise SystemExit(f"jactensor explain: cannot read parameter {key!r}; use --name value")
        raw = extra[k + 1]
        try:
            val = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            val = raw
        if isinstance(val, list):
            val = np.asarray(val)
        params[key[2:].replace("-", "_")] = val
        k += 2
    return params


def _explain(args, extra):
    import numpy as np
    if args.program:
        from .explain import explain
        from .programs import PROGRAMS, make_args
        if args.program not in PROGRAMS:
            raise SystemExit(f"jactensor explain: unknown program {args.program!r}; choose from {sorted(PROGRAMS)}")
        f = PROGRAMS[args.program]
        fargs = make_args(args.program, n=args.n, d=args.d, seed=args.seed)
        print(f"{args.program}: {' '.join((f.__doc__ or '').split())}")
        print(f"inputs: {', '.join(str(a.shape) for a in fargs)}; Jacobians w.r.t. argument(s) {args.wrt}\n")
        print(explain(f, *fargs, argnums=tuple(args.wrt)))
        return 0
    from .core import registry
    if not args.op:
        raise SystemExit("jactensor explain: name a primitive (e.g. softmax) or --program attention; primitives: "
                         + ", ".join(sorted(registry)))
    if args.op not in registry:
        print(f"jactensor explain: no primitive named {args.op!r}; registered: {', '.join(sorted(registry))}",
              file=sys.stderr)
        return 2
    prim = registry[args.op]
    params = _parse_params(extra)
    rng = np.random.default_rng(args.seed)
    shapes = args.shape or ["3,3"]
    positive = args.op in ("log", "sqrt", "power")
    arrays = []
    for s in shapes:
        shp = tuple(int(v) for v in s.split(",") if v.strip()) if s.strip() not in ("", "()") else ()
        x = rng.normal(size=shp)
        arrays.append(np.abs(x) + 0.5 if positive else x)
    if args.op == "einsum":
        call = ((params.pop("spec"),) + tuple(arrays), params)
    elif args.op == "concatenate":
        call = ((arrays,), params)
    else:
        call = (tuple(arrays), params)
    ans = prim(*call[0], **call[1])
    jacs = prim.jacobian(*call[0], **call[1])
    shown = {k: v for k, v in call[1].items()}
    print(f"{prim.name}({', '.join(f'{k}={v!r}' for k, v in shown.items())})")
    print(f"  formula: {prim.formula}")
    print(f"  input shapes: {', '.join(str(a.shape) for a in arrays)}    output shape: {np.shape(ans)}")
    for k, J in enumerate(jacs):
        M = J.as_matrix()
        zeros = M.size - np.count_nonzero(M)
        print(f"  Jacobian w.r.t. argument {k}: shape {J.shape} = out {J.out_shape} + in {J.in_shape}; as a "
              f"{M.shape[0]} x {M.shape[1]} matrix")
        print(f"    dense {J.nbytes} bytes, stored as factors {J.stored_bytes} bytes; structural zeros: {zeros} of "
              f"{M.size} ({zeros / max(M.size, 1):.1%})")
    if args.png:
        from . import plot
        try:
            plt = plot.require_matplotlib()
        except ImportError as e:
            print(f"jactensor explain: {e}", file=sys.stderr)
            return 2
        import matplotlib
        matplotlib.use("Agg")
        ax = plot.jacobian(jacs[args.arg], out_name="Y", in_name="X")
        ax.figure.savefig(args.png, dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
        print(f"  picture of the Jacobian w.r.t. argument {args.arg} written to {args.png}")
    return 0


def _check_formula(args):
    import numpy as np
    from . import ops
    from .formula import check_formula
    rng = np.random.default_rng(args.seed)
    Q, K = rng.normal(size=(args.n, args.d)), rng.normal(size=(args.d, args.n))
    A = Q @ K
    programs = {
        "matmul": (lambda Q, K: ops.matmul(Q, K), {"A": A}),
        "softmax-row": (lambda Q, K: ops.softmax(ops.matmul(Q, K), axis=-1), {"A": A, "S": ops.softmax(A, axis=-1)}),
        "softmax-whole": (lambda Q, K: ops.softmax(ops.matmul(Q, K), axis=None),
                          {"A": A, "S": ops.softmax(A, axis=None)}),
    }
    f, env = programs[args.program]
    rep = check_formula(f, args.formula, Q, K, argnum={"Q": 0, "K": 1}[args.wrt], env=env)
    print(f"{args.program}: d/d{args.wrt} with Q {Q.shape}, K {K.shape} (seed {args.seed}); names: Q, K, "
          f"{', '.join(sorted(env))}")
    print(f"  {args.formula}")
    print("  " + str(rep).replace("\n", "\n  "))
    return 0 if rep.ok else 1


def _vit(args):
    import time
    from .models.train import DEFAULTS, gradient_check, load_digits_split, train
    from .models.vit import ViTConfig, accuracy, count_params, load_params, save_params
    if args.check:
        return 0 if gradient_check(seed=args.seed or 0, with_torch=not args.no_torch) else 1
    try:
        data = load_digits_split()
    except ImportError as e:
        print(f"jactensor vit: {e}", file=sys.stderr)
        return 2
    defaults = ViTConfig()
    cfg = ViTConfig(patch=args.patch or defaults.patch, width=args.width or defaults.width,
                    depth=defaults.depth if args.depth is None else args.depth, heads=args.heads or defaults.heads)
    try:
        cfg.validate()
        params = None
        if args.load:
            params, cfg_loaded = load_params(args.load)
            if any(v is not None for v in (args.patch, args.width, args.depth, args.heads)) and cfg_loaded != cfg:
                raise ValueError(f"ViT: {args.load!r} holds a {cfg_loaded}; drop the size options or match them")
            cfg = cfg_loaded
    except (ValueError, FileNotFoundError) as e:
        print(f"jactensor vit: {e}", file=sys.stderr)
        return 2
    epochs = args.epochs if args.epochs is not None else (0 if args.load else DEFAULTS["epochs"])
    seed = DEFAULTS["seed"] if args.seed is None else args.seed
    Xtr, Xte, ytr, yte = data
    n = count_params(params) if params is not None else count_params(__import__(
        "jactensor.models.vit", fromlist=["init_params"]).init_params(cfg, seed))
    print(f"ViT {cfg}: {n:,} parameters; digits {len(ytr)} train / {len(yte)} test; {epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr}, seed {seed}", flush=True)
    t0 = time.perf_counter()
    if epochs:
        params, hist = train(cfg, epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, params=params,
                             data=data, progress=not args.no_progress, weight_decay=args.weight_decay)
        print(f"trained in {time.perf_counter() - t0:.1f} s; final train loss {hist['loss'][-1]:.4f}, "
              f"train accuracy {hist['train_acc'][-1]:.4f}", flush=True)
    if args.save:
        save_params(args.save, params, cfg)
        print(f"parameters saved to {args.save}", flush=True)
    print(f"test accuracy: {accuracy(params, Xte, yte, cfg):.4f}")
    return 0


def _bench(args):
    from .bench import run
    mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    res = run(mode, out_dir=args.out, use_peers=not args.no_peers, progress=not args.no_progress)
    bad = [t for t in res["targets"] if t["met"] is False]
    for t in bad:
        print(f"target missed: {t['target']} (ratio {t['ratio']:.2f})", file=sys.stderr)
    return 0


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
    e = sub.add_parser("explain", help="a primitive's formula, shapes, zeros and picture; or a program's step table",
                       description="jactensor explain softmax --shape 3,3 --axis -1 --png out.png | "
                                   "jactensor explain --program attention. Extra --name value pairs are the "
                                   "primitive's parameters (Python literals).")
    e.add_argument("op", nargs="?", help="registered primitive name")
    e.add_argument("--shape", action="append", help="input shape like 3,3 (repeat for several inputs)")
    e.add_argument("--png", help="write the Jacobian heatmap to this PNG (needs matplotlib)")
    e.add_argument("--arg", type=int, default=0, help="which argument's Jacobian to draw")
    e.add_argument("--program", help="explain a named program: attention, worked_example, mlp, ln_block")
    e.add_argument("--wrt", type=int, nargs="+", default=[0, 1], help="argnums for --program (default 0 1)")
    e.add_argument("--n", type=int, default=8)
    e.add_argument("--d", type=int, default=4)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=_explain, takes_extra=True)
    f = sub.add_parser("check-formula", help="check a hand-derived index formula against the true Jacobian",
                       description='jactensor check-formula --program softmax-whole --wrt Q '
                                   '"dS[i,j]/dQ[c,d] = S[i,j] * (delta(i,c) * K[d,j] - sum_s(S[c,s] * K[d,s]))"')
    f.add_argument("formula", help="index formula: dY[..]/dX[..] = ... with Name[i,j], delta(i,j), sum_k(...)")
    f.add_argument("--program", default="softmax-whole", choices=["matmul", "softmax-row", "softmax-whole"],
                   help="the function of Q (n x d) and K (d x n); names A = QK and S = softmax(A) are available")
    f.add_argument("--wrt", default="Q", choices=["Q", "K"])
    f.add_argument("--n", type=int, default=3)
    f.add_argument("--d", type=int, default=2)
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=_check_formula)
    from .models.train import DEFAULTS
    v = sub.add_parser("vit", help="train a vision transformer on scikit-learn's 8x8 digits (VJP path + Adam)")
    v.add_argument("--epochs", type=int, help=f"default {DEFAULTS['epochs']} (0 with --load: just evaluate)")
    v.add_argument("--width", type=int, help="token width (default 48)")
    v.add_argument("--depth", type=int, help="encoder blocks (default 2)")
    v.add_argument("--heads", type=int, help="attention heads (default 4; must divide width)")
    v.add_argument("--patch", type=int, help="patch size (default 4; must divide 8)")
    v.add_argument("--seed", type=int, help=f"default {DEFAULTS['seed']}")
    v.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    v.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    v.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    v.add_argument("--save", help="store the parameters with np.savez")
    v.add_argument("--load", help="read parameters saved with --save")
    v.add_argument("--check", action="store_true", help="gradient check on a tiny configuration, then exit")
    v.add_argument("--no-torch", action="store_true", help="with --check: skip the PyTorch cross-check")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=_vit)
    b = sub.add_parser("bench", help="benchmarks: full Jacobian vs VJP, contraction order, peers (JSON, table, plots)")
    b.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (under two minutes)")
    b.add_argument("--smoke", action="store_true", help="the smallest sizes, for tests (seconds)")
    b.add_argument("--out", default="benchmarks/results", help="output folder (default benchmarks/results)")
    b.add_argument("--no-peers", action="store_true", help="skip jax, torch and autograd even if installed")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_bench)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0].startswith("--seed"):
        argv = ["demo"] + argv
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .errors import JactensorError
    try:
        if getattr(args, "takes_extra", False):
            return args.func(args, extra)
        return args.func(args)
    except BrokenPipeError:  # e.g. `jactensor demo | head`: the reader left; stop quietly
        sys.stderr = open(os.devnull, "w")
        return 0
    except (JactensorError, TypeError) as e:  # bad input from the command line: say it, no traceback
        print(f"jactensor {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
