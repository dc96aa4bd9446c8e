"""The ``jactensor`` command: demo (default), explain, check, check-formula, bench, vit.

Every argument is read by a validator (whole numbers >= 1, seeds >= 0, finite floats, shapes
within ``jt.config.max_jacobian_bytes``, output paths whose folder is writable) when the
command line is parsed, so a bad invocation fails before any work starts. Whatever goes wrong
ends with one line ``jactensor <command>: <message>`` on stderr and exit status 2 (Ctrl-C:
one line, status 130); ``check-formula`` exits 1 for a WRONG formula, ``check`` for a failed
check. Set JACTENSOR_TRACEBACK=1 to see the Python traceback of an unexpected error.
"""
import argparse
import dataclasses
import inspect
import os
import re
import sys
import tempfile

__all__ = ["main", "build_parser", "EXIT_ERROR", "EXIT_INTERRUPTED"]

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_LINE = 400  # characters of an error line: a message quoting a huge value must still be one readable line
MAX_AXES = 32   # a Jacobian has twice its input's axes, and numpy arrays have at most 64

# programs for `explain --program` (kebab-case; the snake_case spelling is accepted too)
PROGRAMS = ("attention", "worked-example", "mlp", "ln-block", "vit")
FORMULA_PROGRAMS = ("matmul", "softmax-row", "softmax-whole")


class UsageError(Exception):
    """A bad invocation noticed by the command itself; its message is printed as it is."""


def _one_line(text, limit=MAX_LINE):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 25] + f" ... ({len(text):,} characters)"


def _quote(text):
    return repr(_one_line(text, 60))


# ---- argument validators (argparse ``type=``): each names what it wants and gives an example ----------------
def _whole(text, least, what):
    t = str(text).strip()
    if not re.fullmatch(r"[+-]?[0-9]+", t):
        raise argparse.ArgumentTypeError(f"{_quote(text)} is not a whole number; {what}")
    v = int(t)
    if v < least:
        raise argparse.ArgumentTypeError(f"{v} is below {least}; {what}")
    return v


def positive_int(text):
    """A whole number >= 1 (sizes, counts)."""
    return _whole(text, 1, "give a whole number >= 1")


def nonnegative_int(text):
    """A whole number >= 0 (epochs, depth, argument positions)."""
    return _whole(text, 0, "give a whole number >= 0")


def seed(text):
    """A seed for numpy's default_rng, which takes whole numbers >= 0."""
    return _whole(text, 0, "a seed is a whole number >= 0 (numpy's default_rng takes no negative seeds)")


def _float(text):
    try:
        return float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_quote(text)} is not a number; give a decimal like 0.002 or 2e-3") \
            from None


def positive_float(text):
    """A finite number > 0 (learning rates, step sizes)."""
    v = _float(text)
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!s} is not a finite number > 0; give e.g. 2e-3")
    return v


def nonnegative_float(text):
    """A finite number >= 0 (weight decay)."""
    v = _float(text)
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!s} is not a finite number >= 0; give e.g. 0.1 (or 0 for none)")
    return v


def shape(text):
    """Axis lengths separated by commas ('3,3'; '4' for a vector; '()' or '' for a scalar), each a whole
    number >= 0, for an array within ``jt.config.max_jacobian_bytes``."""
    from .config import config
    from .memory import fmt_bytes, nbytes
    t = str(text).strip()
    if t.startswith("(") and t.endswith(")"):
        t = t[1:-1].strip()
    if not t:
        return ()
    parts = [p.strip() for p in t.split(",")]
    if len(parts) > 1 and parts[-1] == "":  # '3,' is the 1-d shape (3,), as in Python
        parts = parts[:-1]
    if re.fullmatch(r"\d+(\s*[xX*]\s*\d+)+", t):
        raise argparse.ArgumentTypeError(f"{_quote(text)} is not a shape; write the axis lengths separated by "
                                         f"commas: --shape {','.join(re.split(r'[xX*]', t.replace(' ', '')))}")
    hint = "write axis lengths separated by commas, e.g. --shape 3,3 (or --shape '()' for a scalar)"
    for p in parts:
        if not re.fullmatch(r"[0-9]+", p):
            what = "an empty axis length" if not p else f"{_quote(p)} is not a whole number >= 0"
            raise argparse.ArgumentTypeError(f"{_quote(text)} is not a shape ({what}); {hint}")
    dims = tuple(int(p) for p in parts)
    if len(dims) > MAX_AXES:
        raise argparse.ArgumentTypeError(f"{_quote(text)} has {len(dims)} axes; at most {MAX_AXES} (a Jacobian has "
                                         f"twice as many axes as its input, and numpy arrays at most 64)")
    if nbytes(dims) > config.max_jacobian_bytes:
        raise argparse.ArgumentTypeError(
            f"an input of shape {_one_line(dims, 80)} would take {fmt_bytes(nbytes(dims))} as float64, above "
            f"jt.config.max_jacobian_bytes = {fmt_bytes(config.max_jacobian_bytes)}; choose smaller axis lengths")
    return dims


def _probe_folder(folder):
    """Raise ArgumentTypeError unless a file can be created in ``folder`` (a real try: as root, os.access says
    yes to read-only file systems)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".jactensor-write-test-")
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot write in the folder {folder!r} ({e.strerror or e}); choose "
                                         f"another place") from None
    os.close(fd)
    os.unlink(tmp)


def output_file(text):
    """A file path (kept exactly as given) whose folder exists and is writable; not a folder itself."""
    path = str(text)
    if not path.strip():
        raise argparse.ArgumentTypeError("an empty path; name the file to write, e.g. out.png")
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path!r} is a folder; name a file inside it, e.g. "
                                         f"{os.path.join(path, 'out.png')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the folder {folder!r} for {path!r} does not exist; create it first "
                                         f"(mkdir -p {folder!r}) or choose another path")
    _probe_folder(folder)
    return path


def input_file(text):
    """An existing, readable file."""
    path = str(text)
    if not os.path.exists(path):
        raise argparse.ArgumentTypeError(f"no file at {path!r}")
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path!r} is a folder, not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {path!r} ({e.strerror or e})") from None
    return path


def output_folder(text):
    """A folder to write into: a new one (created later, parents included) or an existing one; not a file.
    Whether an existing folder may be written into is decided with --overwrite (see ``bench``)."""
    path = str(text)
    if not path.strip():
        raise argparse.ArgumentTypeError("an empty path; name the folder to write into")
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path!r} is an existing file; name a folder (new, or existing and "
                                         f"empty)")
    parent = os.path.abspath(path)
    while not os.path.isdir(parent):
        if os.path.exists(parent):
            raise argparse.ArgumentTypeError(f"{parent!r} is a file, so the folder {path!r} cannot be made")
        parent = os.path.dirname(parent)
    _probe_folder(parent)
    return path


def _choice(names, what):
    def read(text):
        t = str(text).strip().lower().replace("_", "-")
        if t not in names:
            raise argparse.ArgumentTypeError(f"unknown {what} {_quote(text)}; choose from {', '.join(names)}")
        return t
    read.__name__ = what
    return read


program = _choice(PROGRAMS, "program")
formula_program = _choice(FORMULA_PROGRAMS, "program")


# ---- demo and check -----------------------------------------------------------------------------------------
def _demo(args):
    from .demo import run_demo
    return EXIT_OK if run_demo(seed=args.seed) else EXIT_FAILED


def _check(args):
    import numpy as np
    from .registry import registry
    from .testing import check
    names = args.ops or sorted(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise UsageError(f"no primitive named {', '.join(unknown)}; registered: {', '.join(sorted(registry))}")
    rng = np.random.default_rng(args.seed)
    failed = 0
    for name in names:
        prim = registry[name]
        reports = [check(prim, *a, **kw) for a, kw in prim.battery(rng, args.n)]
        worst = max((r.max_error for r in reports), default=0.0)
        bad = [r for r in reports if not r.ok]
        failed += len(bad)
        print(f"{name:<14} {len(reports)} cases  max rel error {worst:.1e}  {'ok' if not bad else 'FAILED'}")
        for r in bad:
            print(r)
    return EXIT_FAILED if failed else EXIT_OK


# ---- explain ------------------------------------------------------------------------------------------------
def _parse_params(extra):
    """--key value pairs -> params (Python literals; lists become arrays; anything else stays a string)."""
    import ast
    import numpy as np
    params, k = {}, 0
    while k < len(extra):
        key = extra[k]
        if not key.startswith("--") or len(key) < 3:
            raise UsageError(f"cannot read {_quote(key)}: primitive parameters are given as --name value "
                             f"(e.g. --axis -1)")
        if k + 1 >= len(extra) or extra[k + 1].startswith("--"):
            raise UsageError(f"parameter {key} has no value; give it as {key} VALUE (a Python literal)")
        raw = extra[k + 1]
        try:
            val = ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            val = raw
        if isinstance(val, list):
            val = np.asarray(val)
        params[key[2:].replace("-", "_")] = val
        k += 2
    return params


def _signature(prim):
    try:
        return inspect.signature(prim.bind)
    except (TypeError, ValueError):
        return None


def _call_of(prim, arrays, params):
    """(args, kwargs) for calling ``prim`` on the drawn arrays, with unknown parameter names refused up front."""
    sig = _signature(prim)
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        named = [p.name for p in sig.parameters.values() if p.kind is not p.VAR_POSITIONAL]
        unknown = sorted(set(params) - set(named))
        if unknown:
            opts = [p for p in sig.parameters.values() if p.default is not p.empty]
            raise UsageError(f"{prim.name} has no parameter {', '.join(unknown)}; its signature is "
                             f"{prim.name}{sig}" + (f" (give {', '.join('--' + p.name for p in opts)} as --name value)"
                                                    if opts else ""))
    if prim.name == "einsum":
        if "spec" not in params:
            raise UsageError("einsum needs its subscripts: add --spec, e.g. jactensor explain einsum --spec "
                             "ij,jk->ik --shape 3,2 --shape 2,3")
        params = dict(params)
        return (params.pop("spec"),) + tuple(arrays), params
    if prim.name == "concatenate":
        return (list(arrays),), params
    return tuple(arrays), params


def _arg_names(prim, n):
    """Names of the first ``n`` array arguments, from the primitive's signature (x, a, b; operand k otherwise)."""
    sig = _signature(prim)
    ps = [] if sig is None else [p for p in sig.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    if prim.name in ("einsum", "concatenate") or len(ps) < n:
        return [f"operand {k}" for k in range(n)]
    return [p.name for p in ps[:n]]


def _explain(args, extra):
    if args.png:
        _pyplot_for_files()  # without matplotlib, say so before any work
    if args.program:
        if args.op:
            raise UsageError(f"give a primitive ({args.op}) or --program {args.program}, not both")
        if extra:
            raise UsageError(f"unrecognized arguments for --program: {_one_line(' '.join(extra), 80)}")
        if args.shape or (args.png and args.program != "vit"):
            raise UsageError("--shape and --png go with a primitive (jactensor explain softmax --shape 3,3 --png "
                             "s.png); with --program, --png only goes with vit")
        return _explain_vit(args) if args.program == "vit" else _explain_program(args)
    if args.wrt is not None:
        raise UsageError("--wrt goes with --program (argument positions of the program)")
    if args.n is not None or args.d is not None:
        raise UsageError("--n and --d go with --program (sizes of the program's inputs); give a primitive's input "
                         "shapes with --shape")
    return _explain_primitive(args, extra)


def _explain_program(args):
    from .explain import explain
    from .programs import PROGRAMS as FUNCS, make_args
    key = args.program.replace("-", "_")
    f = FUNCS[key]
    n, d = args.n or 8, args.d or 4
    fargs = make_args(key, n=n, d=d, seed=args.seed)
    wrt = (0, 1) if args.wrt is None else tuple(args.wrt)
    nargs = len(fargs)
    bad = [a for a in wrt if a >= nargs]
    if bad:
        raise UsageError(f"--wrt {' '.join(map(str, bad))}: {args.program} takes {nargs} arguments, so --wrt takes "
                         f"positions 0 to {nargs - 1}")
    print(f"{args.program}: {' '.join((f.__doc__ or '').split())}")
    print(f"inputs: {', '.join(str(a.shape) for a in fargs)}; Jacobians w.r.t. argument(s) "
          f"{' '.join(map(str, wrt))}\n")
    print(explain(f, *fargs, argnums=wrt))
    return EXIT_OK


def _explain_vit(args):
    from .models.vit_explain import TINY, explain_vit
    if args.wrt is not None:
        raise UsageError("--wrt does not apply to --program vit: each stage is differentiated w.r.t. its input")
    cfg = TINY if args.d is None else dataclasses.replace(TINY, width=args.d)
    cfg.validate()
    expl = explain_vit(cfg, n_images=args.n or 2, seed=args.seed)
    print(expl)
    if args.png:
        from . import plot
        plt = _pyplot_for_files()
        ax = expl.plot()
        plot.save(ax.figure, args.png)
        plt.close(ax.figure)
        print(f"\nbar chart of the bytes per stage written to {args.png}")
    return EXIT_OK


def _pyplot_for_files():
    """pyplot on the Agg backend: the command writes files and never opens a window."""
    from .plot import require_matplotlib
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _explain_primitive(args, extra):
    import numpy as np
    from .memory import check_bytes
    from .registry import registry
    if not args.op:
        raise UsageError("name a primitive (e.g. jactensor explain softmax --shape 3,3) or a program (--program "
                         f"attention); primitives: {', '.join(sorted(registry))}")
    if args.op not in registry:
        raise UsageError(f"no primitive named {args.op!r}; registered: {', '.join(sorted(registry))}")
    prim = registry[args.op]
    params = _parse_params(extra)
    shapes = args.shape or [(3, 3)]
    if args.arg >= len(shapes):
        raise UsageError(f"--arg {args.arg}: there {'is' if len(shapes) == 1 else 'are'} {len(shapes)} input(s) "
                         f"(one per --shape), so --arg takes 0 to {len(shapes) - 1}")
    rng = np.random.default_rng(args.seed)
    positive = args.op in ("log", "sqrt", "power")  # inputs inside the op's domain
    arrays = []
    for s in shapes:
        x = rng.normal(size=s)
        arrays.append(np.abs(x) + 0.5 if positive else x)
    call_args, call_kw = _call_of(prim, arrays, params)
    sig = _signature(prim)
    try:
        ans = prim(*call_args, **call_kw)
    except TypeError as e:
        if "argument" not in str(e):
            raise
        raise UsageError(f"cannot call {prim.name} with {len(arrays)} input(s) of shape(s) "
                         f"{', '.join(str(a.shape) for a in arrays)} and parameters {call_kw or '{}'} ({e}); its "
                         f"signature is {prim.name}{sig}: give one --shape per array input and the other parameters "
                         f"as --name value") from None
    names = _arg_names(prim, len(arrays))
    for a, name in zip(arrays, names):  # refuse before any Jacobian rule allocates its factors
        check_bytes(8 * int(np.size(ans)) * int(a.size), f"{prim.name}: the Jacobian w.r.t. {name}",
                    np.shape(ans) + a.shape, hint="Choose smaller --shape values.")
    if args.png:
        J_shape = np.shape(ans) + arrays[args.arg].shape
        if 0 in J_shape:
            raise UsageError(f"nothing to draw: the Jacobian w.r.t. {names[args.arg]} has shape {J_shape}, with no "
                             f"entries; give --shape values >= 1")
    jacs = prim.jacobian(*call_args, **call_kw)
    print(f"{prim.name}({', '.join(f'{k}={v!r}' for k, v in call_kw.items())})")
    print(f"  formula: {prim.formula}")
    print(f"  input shapes: {', '.join(str(a.shape) for a in arrays)}    output shape: {np.shape(ans)}")
    for k, J in enumerate(jacs):
        rows, cols = int(np.prod(J.out_shape, dtype=np.int64)), int(np.prod(J.in_shape, dtype=np.int64))
        zeros = J.size - J.nnz
        print(f"  Jacobian w.r.t. argument {k} ({names[k]}): shape {J.shape} = out {J.out_shape} + in {J.in_shape}; "
              f"as a {rows} x {cols} matrix")
        print(f"    dense {J.nbytes} bytes, stored as factors {J.stored_bytes} bytes; structural zeros: {zeros} of "
              f"{J.size} ({zeros / max(J.size, 1):.1%})")
    if args.png:
        from . import plot
        plt = _pyplot_for_files()
        ax = plot.jacobian(jacs[args.arg], out_name=prim.name, in_name=names[args.arg])
        plot.save(ax.figure, args.png)
        plt.close(ax.figure)
        print(f"  picture of the Jacobian w.r.t. argument {args.arg} ({names[args.arg]}) written to {args.png}")
    return EXIT_OK


# ---- check-formula ------------------------------------------------------------------------------------------
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
    return EXIT_OK if rep.ok else EXIT_FAILED


# ---- vit ----------------------------------------------------------------------------------------------------
_SIZE_OPTIONS = ("patch", "width", "depth", "heads")


def _vit(args):
    if args.check:
        given = [f"--{k.replace('_', '-')}" for k in _SIZE_OPTIONS + ("epochs", "save", "load", "batch_size", "lr",
                                                                     "weight_decay")
                 if getattr(args, k) is not None]
        if given:
            raise UsageError(f"--check runs a fixed tiny configuration (2 images, width 8, one block, 2 heads) and "
                             f"takes only --seed and --no-torch; drop {', '.join(given)}")
        from .models.train import gradient_check
        return EXIT_OK if gradient_check(seed=args.seed or 0, with_torch=not args.no_torch) else EXIT_FAILED
    return _vit_train(args)


def _vit_train(args):
    import time
    from .models.train import DEFAULTS, load_digits_split, train
    from .models.vit import ViTConfig, accuracy, init_params, load_params, save_params
    defaults = ViTConfig()
    sizes = {k: getattr(args, k) for k in _SIZE_OPTIONS if getattr(args, k) is not None}
    cfg = dataclasses.replace(defaults, **sizes).validate()   # before reading data or training
    params = None
    if args.load:
        params, loaded = load_params(args.load)
        if sizes and any(getattr(loaded, k) != v for k, v in sizes.items()):
            raise UsageError(f"{args.load!r} holds a {loaded}; drop the size options "
                             f"({', '.join('--' + k for k in sizes)}) or match them")
        cfg = loaded
    if cfg.image != 8 or cfg.classes != 10:
        raise UsageError(f"the digits are 8x8 images of 10 classes, but the configuration says image {cfg.image}, "
                         f"classes {cfg.classes}")
    data = load_digits_split()
    epochs = args.epochs if args.epochs is not None else (0 if args.load else DEFAULTS["epochs"])
    seed_ = DEFAULTS["seed"] if args.seed is None else args.seed
    batch = DEFAULTS["batch_size"] if args.batch_size is None else args.batch_size
    lr = DEFAULTS["lr"] if args.lr is None else args.lr
    wd = DEFAULTS["weight_decay"] if args.weight_decay is None else args.weight_decay
    Xtr, Xte, ytr, yte = data
    print(f"ViT {cfg}: {cfg.n_params:,} parameters; digits {len(ytr)} train / {len(yte)} test; {epochs} epochs, "
          f"batch {batch}, lr {lr}, seed {seed_}", flush=True)
    t0 = time.perf_counter()
    if epochs:
        params, hist = train(cfg, epochs=epochs, batch_size=batch, lr=lr, seed=seed_, params=params, data=data,
                             progress=not args.no_progress, weight_decay=wd)
        print(f"trained in {time.perf_counter() - t0:.1f} s; final train loss {hist['loss'][-1]:.4f}, "
              f"train accuracy {hist['train_acc'][-1]:.4f}", flush=True)
    elif params is None:
        params = init_params(cfg, seed_)
    if args.save:
        save_params(args.save, params, cfg)
        print(f"parameters saved to {args.save}", flush=True)
    print(f"test accuracy: {accuracy(params, Xte, yte, cfg):.4f}")
    return EXIT_OK


# ---- bench --------------------------------------------------------------------------------------------------
def _bench(args):
    from .bench import OutputFolderError, run
    if args.scale:
        return _bench_scale(args)
    mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    try:  # the folder is checked before any work: a non-empty one is refused without --overwrite
        res = run(mode, out_dir=args.out, overwrite=args.overwrite, use_peers=not args.no_peers,
                  progress=not args.no_progress)
    except OutputFolderError as e:
        raise UsageError(str(e).removeprefix("bench: ")) from None
    for t in res["targets"]:
        if t["met"] is False:
            print(f"target missed: {t['target']} (ratio {t['ratio']:.2f})", file=sys.stderr)
    return EXIT_OK


def _bench_scale(args):
    """The Jacobian of attention at n = 512, d = 64 (8 GiB dense) on dask: zarr store, norm, top singular
    values, peak memory (minutes; needs the dask extra and scipy)."""
    from .bench import OutputFolderError, _make_folder, _remove_made, prepare_output
    from .bench.scale import run_scale
    try:
        out = prepare_output(args.out, "scale", args.overwrite)
    except OutputFolderError as e:
        raise UsageError(str(e).removeprefix("bench: ")) from None
    made = _make_folder(out)
    try:
        run_scale(out_dir=out)
    except BaseException:
        _remove_made(made)
        raise
    print(f"results written to {os.path.abspath(out)}: scale.json, scale.md")
    return EXIT_OK


# ---- the parser ---------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad invocation in one line (no usage block) and exits 2."""

    def error(self, message):
        raise UsageError(f"{_one_line(message)} (see {self.prog} --help)")


def build_parser():
    from .models.train import DEFAULTS
    from .models.vit import ViTConfig
    vc = ViTConfig()
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="jactensor", description="Explicit Jacobian tensors for tensor programs. Without a command: "
                                              "the demo.", allow_abbrev=False)
    from . import __version__
    p.add_argument("--version", action="version", version=f"jactensor {__version__}")
    sub = p.add_subparsers(dest="command", metavar="command", parser_class=_Parser)

    d = sub.add_parser("demo", help="the worked example: A = QK, softmax, chain rule, VJP, a hand derivation",
                       allow_abbrev=False)
    d.add_argument("--seed", type=seed, default=0, help="seed for Q, K and the upstream gradient (default 0)")
    d.set_defaults(func=_demo)

    c = sub.add_parser("check", help="three-way check (finite differences, VJP, JVP) of registered primitives",
                       allow_abbrev=False, description="Exit status: 0 every case agrees, 1 a case failed, 2 bad "
                                                       "invocation.")
    c.add_argument("ops", nargs="*", help="primitive names (default: all)")
    c.add_argument("--n", type=positive_int, default=2, help="size parameter of the input battery (default 2)")
    c.add_argument("--seed", type=seed, default=0, help="seed for the battery's random inputs (default 0)")
    c.set_defaults(func=_check)

    e = sub.add_parser(
        "explain", help="a primitive's formula, shapes, zeros and picture; or a program's step table",
        allow_abbrev=False, formatter_class=fmt,
        description="jactensor explain softmax --shape 3,3 --axis -1 --png out.png\n"
                    "jactensor explain einsum --spec ij,jk->ik --shape 3,2 --shape 2,3\n"
                    "jactensor explain --program attention\n"
                    "jactensor explain --program vit --png vit-bytes.png\n\n"
                    "Extra --name value pairs are the primitive's parameters (Python literals).")
    e.add_argument("op", nargs="?", help="registered primitive name")
    e.add_argument("--shape", type=shape, action="append",
                   help="an input's shape, axis lengths separated by commas, e.g. 3,3 (repeat per input; default 3,3)")
    e.add_argument("--png", type=output_file, help="write a picture to this PNG (needs matplotlib): the Jacobian "
                                                   "(with a primitive) or the bytes per stage (--program vit)")
    e.add_argument("--arg", type=nonnegative_int, default=0, help="which input's Jacobian to draw (default 0)")
    e.add_argument("--program", type=program, help="explain a named program: " + ", ".join(PROGRAMS))
    e.add_argument("--wrt", type=nonnegative_int, nargs="+",
                   help="argument positions to differentiate for --program (default 0 1)")
    e.add_argument("--n", type=positive_int, help="with --program: rows of X (default 8); for vit the number of "
                                                  "images (default 2)")
    e.add_argument("--d", type=positive_int, help="with --program: the feature width (default 4); for vit the "
                                                  "token width (default 8, a multiple of its 2 heads)")
    e.add_argument("--seed", type=seed, default=0, help="seed for the random inputs (default 0)")
    e.set_defaults(func=_explain, takes_extra=True)

    f = sub.add_parser(
        "check-formula", help="check a hand-derived index formula against the true Jacobian", allow_abbrev=False,
        formatter_class=fmt,
        description='jactensor check-formula --program softmax-whole --wrt Q \\\n'
                    '    "dS[i,j]/dQ[c,d] = S[i,j] * (delta(i,c) * K[d,j] - sum_s(S[c,s] * K[d,s]))"\n\n'
                    "Exit status: 0 CORRECT, 1 WRONG (the report shows where), 2 the formula could not be read or "
                    "evaluated (the message says why) or another bad invocation.",
    )
    f.add_argument("formula", help="index formula: dY[i,j]/dX[r,s] = ... with Name[i,j], delta(i,j), sum_k(...)")
    f.add_argument("--program", type=formula_program, default="softmax-whole",
                   help="the function of Q (n x d) and K (d x n): " + ", ".join(FORMULA_PROGRAMS)
                        + " (default softmax-whole); names A = QK and S = softmax(A) are available")
    f.add_argument("--wrt", default="Q", choices=["Q", "K"], help="differentiate w.r.t. Q or K (default Q)")
    f.add_argument("--n", type=positive_int, default=3, help="rows of Q (default 3)")
    f.add_argument("--d", type=positive_int, default=2, help="columns of Q (default 2)")
    f.add_argument("--seed", type=seed, default=0, help="seed for Q and K (default 0)")
    f.set_defaults(func=_check_formula)

    v = sub.add_parser("vit", help="train a vision transformer on scikit-learn's 8x8 digits (VJP path + Adam)",
                       allow_abbrev=False)
    v.add_argument("--epochs", type=nonnegative_int,
                   help=f"default {DEFAULTS['epochs']} (0 with --load: just evaluate)")
    v.add_argument("--width", type=positive_int, help=f"token width (default {vc.width})")
    v.add_argument("--depth", type=nonnegative_int, help=f"encoder blocks (default {vc.depth})")
    v.add_argument("--heads", type=positive_int, help=f"attention heads (default {vc.heads}; must divide width)")
    v.add_argument("--patch", type=positive_int, help=f"patch size (default {vc.patch}; must divide 8)")
    v.add_argument("--seed", type=seed, help=f"initialisation and batch order (default {DEFAULTS['seed']})")
    v.add_argument("--batch-size", type=positive_int, help=f"default {DEFAULTS['batch_size']}")
    v.add_argument("--lr", type=positive_float, help=f"peak learning rate, cosine decay (default {DEFAULTS['lr']})")
    v.add_argument("--weight-decay", type=nonnegative_float, help=f"AdamW decay (default {DEFAULTS['weight_decay']})")
    v.add_argument("--save", type=output_file, help="store the parameters in this file (np.savez format; the path "
                                                    "is used exactly as given)")
    v.add_argument("--load", type=input_file, help="read parameters saved with --save")
    v.add_argument("--check", action="store_true", help="gradient check on a tiny configuration, then exit")
    v.add_argument("--no-torch", action="store_true", help="with --check: skip the PyTorch cross-check")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=_vit)

    b = sub.add_parser("bench", help="benchmarks: full Jacobian vs VJP, contraction order, peers (JSON, table, plots)",
                       allow_abbrev=False)
    size = b.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (under two minutes)")
    size.add_argument("--smoke", action="store_true", help="the smallest sizes, for tests (seconds); no targets")
    size.add_argument("--scale", action="store_true",
                      help="Jacobians larger than memory: the 8 GiB Jacobian of attention on dask (zarr store, norm, "
                           "top singular values, peak memory); tens of minutes, needs the dask extra and scipy")
    b.add_argument("--out", type=output_folder,
                   help="output folder: new, or existing and empty (default: a new folder "
                        "jactensor-bench-MODE-YYYYMMDD-HHMMSS in the current directory)")
    b.add_argument("--overwrite", action="store_true", help="allow --out to name a folder that already holds files")
    b.add_argument("--no-peers", action="store_true", help="skip jax, torch and autograd even if installed")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_bench)
    return p


def _describe(e):
    """One line for an exception: our own usage errors as they are, others with their type."""
    if isinstance(e, UsageError):
        return _one_line(e)
    from .errors import JactensorError
    text = str(e) or {MemoryError: "out of memory"}.get(type(e), "(no message)")
    line = f"{type(e).__name__}: {text}"
    if not isinstance(e, (JactensorError, ValueError, TypeError, OSError, ImportError, MemoryError)):
        line += " (an unexpected error; set JACTENSOR_TRACEBACK=1 to see the traceback)"
    return _one_line(line)


def main(argv=None):
    """Run the command line; returns the exit status (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("--seed"):
        argv = ["demo"] + argv
    command = argv[0] if argv and not argv[0].startswith("-") else None
    try:
        args, extra = build_parser().parse_known_args(argv)
        command = args.command or command
        if extra and not getattr(args, "takes_extra", False):
            raise UsageError(f"unrecognized arguments: {_one_line(' '.join(extra), 120)} (see jactensor "
                             f"{command} --help)")
        if getattr(args, "takes_extra", False):
            return args.func(args, extra)
        return args.func(args)
    except KeyboardInterrupt as e:
        detail = f"; {e}" if str(e) else ""
        print(f"{_prog(command)}: interrupted{_one_line(detail)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `jactensor demo | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return EXIT_OK
    except SystemExit:  # --help and --version print and exit 0 through argparse
        raise
    except Exception as e:  # noqa: BLE001 - every error is one line and exit 2, never a traceback
        if os.environ.get("JACTENSOR_TRACEBACK"):
            raise
        print(f"{_prog(command)}: {_describe(e)}", file=sys.stderr)
        return EXIT_ERROR


def _prog(command):
    known = ("demo", "check", "explain", "check-formula", "vit", "bench")
    return f"jactensor {command}" if command in known else "jactensor"


if __name__ == "__main__":
    sys.exit(main())
