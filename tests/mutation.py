"""Mutation testing: plant one known bug at a time in a copy of the package and check that the tests catch it.

    python tests/mutation.py              # every mutant
    python tests/mutation.py --list       # names and descriptions
    python tests/mutation.py relu-kink chain-coefficient   # some of them

The repository (jactensor/, tests/ and the pytest configuration) is copied to a temporary directory; the
tests run there with ``PYTHONPATH=<copy>`` (checked: the copy's jactensor is the one imported). First the
selected tests run on the unmodified copy: tests that already fail there are deselected in the mutant runs
(a failure must be caused by the mutant to count). Then, for each mutant, its file is restored, the exact old
text replaced by the new one, and its test selections run until one fails ("caught") or all pass
("SURVIVED"). A mutant whose old text no longer occurs exactly once says so ("no longer applies"): the code
moved, and the mutant must be rewritten to match it.

Exit status: 1 if any mutant survived, 2 if none survived but some no longer apply, 0 otherwise.
This file is not collected by pytest (its name does not start with test_).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PRIMS = "tests/test_primitives.py"
SAFETY = "tests/test_safety.py"
MEMORY = "tests/test_memory_guard.py"
ALGEBRA = "tests/test_jacobian_algebra.py"
TRANSFORMS = "tests/test_transforms.py"

# (name, description, file, exact old text, new text, test selections: each a list of pytest arguments)
MUTANTS = [
    ("chain-coupled-outputs", "chain()'s fast path for elementwise maps also takes a B whose outputs share a label",
     "jactensor/chain.py", "            len(set(tb.labels[:n_mid])) == n_mid:\n", "            True:\n",
     [["tests/test_chain.py", "-k", "coupled"], [ALGEBRA, "-k", "never_write"]]),
    ("einsum-view-aliased", "a one-operand contraction returns numpy's view (a diagonal) of the caller's factor",
     "jactensor/plan.py", "        value = value.copy()  # einsum of one operand",
     "        value = value  # einsum of one operand",
     [[ALGEBRA, "-k", "never_write or scaled_dense"]]),
    ("chain-coefficient", "chain() drops the count of a label summed with nothing depending on it",
     "jactensor/chain.py", "            coef *= s\n", "            coef *= 1\n",
     [[ALGEBRA, "-k", "count"], [TRANSFORMS, "-k", "broadcast or random_programs"], [ALGEBRA, "-k", "chain"]]),
    ("getitem-negative-index", "getitem's VJP reads a negative integer index one place off",
     "jactensor/ops/indexing.py",
     "    return scatter_add.bound(g, idx=idx.batched(nb), shape=np.shape(g)[:nb] + np.shape(x))\n",
     "    idx = Index(tuple(e + 1 if isinstance(e, int) and e < 0 else e for e in idx.key), idx.base, idx.out, "
     "idx.fancy, idx.adv_shape, idx.consecutive)\n"
     "    return scatter_add.bound(g, idx=idx.batched(nb), shape=np.shape(g)[:nb] + np.shape(x))\n",
     [[PRIMS, "-k", "negative"], [TRANSFORMS, "-k", "random_programs"]]),
    ("relu-kink", "relu'(0) = 1 instead of the documented 0",
     "jactensor/ops/elementwise.py", "return as_mask(getval(x) > 0)", "return as_mask(getval(x) >= 0)",
     [[PRIMS, "-k", "kink"], [TRANSFORMS, "-k", "kinks"]]),
    ("jacobian-jvp-transposed", "Jacobian.jvp computes J^T t instead of J t",
     "jactensor/jacobian.py", 'return self._contract_with(t, self.in_shape, len(self.out_shape), "jvp", "tangent")',
     'return self._contract_with(t, self.out_shape, 0, "jvp", "tangent")',
     [[ALGEBRA, "-k", "vjp_and_jvp"], [PRIMS, "-k", "checker or battery"]]),
    ("guard-at-the-limit", "the memory guard refuses a Jacobian exactly at the limit (>= for >)",
     "jactensor/memory.py", "    if n > limit:\n", "    if n >= limit:\n",
     [[MEMORY, "-k", "limit or boundary"]]),
    ("explain-bytes", "explain counts 4 bytes per entry",
     "jactensor/explain.py", "nbytes = _nbytes(out_shape + in_shape)",
     "nbytes = _nbytes(out_shape + in_shape) // 2",
     [[TRANSFORMS, "-k", "explain"], [MEMORY, "-k", "explain"]]),
    ("vjp-sign", "log_softmax's VJP adds the softmax term instead of subtracting it",
     "jactensor/ops/nn.py", "vjp=[lambda g, ans, x, axis: g - np.exp(ans) * g.sum(axis=axis, keepdims=True)],",
     "vjp=[lambda g, ans, x, axis: g + np.exp(ans) * g.sum(axis=axis, keepdims=True)],",
     [[PRIMS, "-k", "log_softmax"]]),
    ("matmul-jvp-transposed", "matmul's JVP for b uses the tangent transposed",
     "jactensor/ops/linalg.py", "    t2 = t if b.ndim >= 2 else t.reshape(batch + (b.shape[0], 1))\n",
     "    t2 = t.swapaxes(-1, -2) if b.ndim >= 2 else t.reshape(batch + (b.shape[0], 1))\n",
     [[PRIMS, "-k", "matmul"], ["tests/test_differential.py", "-k", "matmul"]]),
    ("softmax-blocks-rank-one", "softmax's per-row blocks lose their rank-one term",
     "jactensor/ops/nn.py", "    B = S2[..., :, None] * (np.eye(m) - S2[..., None, :])\n",
     "    B = S2[..., :, None] * np.eye(m)\n",
     [[PRIMS, "-k", "softmax"]]),
    ("softmax-terms-rank-one", "softmax's two-term Jacobian (long rows) loses its rank-one term",
     "jactensor/ops/nn.py",
     "        return diag + Jacobian.from_labels(S.shape, S.shape, out + inn, [(S, out), (S, inn)], coef=-1.0)\n",
     "        return diag\n",
     [[MEMORY, "-k", "softmax"], [PRIMS, "-k", "softmax"]]),
    ("unbroadcast-max", "unbroadcast takes the max over a broadcast axis instead of summing it",
     "jactensor/ops/_util.py", "        x = x.sum(axis=axes, keepdims=True)\n",
     "        x = x.max(axis=axes, keepdims=True)\n",
     [[PRIMS, "-k", "battery_three_way and (add or multiply or subtract or divide)"]]),
    ("unbroadcast-leading", "unbroadcast keeps the first entry of the leading broadcast axes instead of summing",
     "jactensor/ops/_util.py", "        x = x.sum(axis=tuple(range(nb, nb + extra)))\n",
     "        x = x[(slice(None),) * nb + (0,) * extra]\n",
     [[PRIMS, "-k", "battery_three_way and (add or multiply or subtract or divide)"]]),
    ("reshape-dropped-delta", "reshape's Jacobian drops the delta of an axis that carries over",
     "jactensor/ops/shape.py", '            out_lab[bo[0]] = in_lab[bi[0]] = ("d", bo[0])\n',
     '            out_lab[bo[0]], in_lab[bi[0]] = ("d", bo[0]), ("e", bi[0])\n',
     [[PRIMS, "-k", "reshape"]]),
    ("max-ties", "max gives every tied maximum the full derivative",
     "jactensor/ops/reduce.py", "    return hit / np.sum(hit, axis=axis, keepdims=True)\n\n\ndef _bind_extreme(name):",
     "    return hit\n\n\ndef _bind_extreme(name):",
     [[PRIMS, "-k", "kink"], [TRANSFORMS, "-k", "kinks"]]),
    ("check-nan-backward", "config.check_nan ignores the reverse pass",
     "jactensor/passes.py", "    cot = {}\n    check = config.check_nan\n", "    cot = {}\n    check = False\n",
     [[SAFETY, "-k", "nan or inf or finite"]]),
    ("check-nan-forward-pass", "config.check_nan ignores the forward (JVP) pass",
     "jactensor/passes.py", "    tan = {}\n    check = config.check_nan\n", "    tan = {}\n    check = False\n",
     [[SAFETY, "-k", "nan or inf or finite"]]),
    ("check-nan-values", "config.check_nan ignores values computed inside a traced function",
     "jactensor/core.py", "            if not nested:\n                check_finite(ans,", "            if False:\n                check_finite(ans,",
     [[SAFETY, "-k", "nan or inf or finite"]]),
    ("float-concretizes", "float(x) of a traced value silently returns its value",
     "jactensor/tracer.py", '    def __float__(self):\n        raise _concrete(self, "float()")\n',
     '    def __float__(self):\n        return float(getval(self))\n',
     [[SAFETY, "-k", "concretiz or silent"]]),
    ("index-concretizes", "a traced value used as an index silently becomes an int",
     "jactensor/tracer.py", '    def __index__(self):\n        raise _concrete(self, "use as an index or size")\n',
     '    def __index__(self):\n        return int(getval(self))\n',
     [[SAFETY, "-k", "concretiz"]]),
    ("results-alias-inputs", "transforms return the caller's own arrays",
     "jactensor/transforms.py", "if r in self.seen or not x.flags.writeable:", "if not x.flags.writeable:",
     [[SAFETY, "-k", "memory or cotangent or writing or factors"]]),
    ("masked-accepted", "masked arrays are accepted (their mask silently dropped)",
     "jactensor/core.py", "if not lazy and isinstance(x, np.ma.MaskedArray):", "if False:",
     [[SAFETY, "-k", "masked"]]),
    ("compact-zero-d", "compact() drops 0-d factors when it sums scalar terms",
     "jactensor/jacobian.py", "float(np.prod([np.asarray(a).reshape(()) for a, _ in t.factors]))", "1.0",
     [[ALGEBRA, "-k", "compact or zero_d or dense_views"]]),
    ("jacobian-truediv", "J / c multiplies by c",
     "jactensor/jacobian.py", "return self.scaled(1.0 / float(c))", "return self.scaled(float(c))",
     [[ALGEBRA, "-k", "arithmetic"]]),
    ("tangents-kept", "the forward pass keeps every tangent (never releases one after its last use)",
     "jactensor/passes.py",
     "                tan.pop(parent.seq, None)\n", "                tan.get(parent.seq, None)\n",
     [[MEMORY, "-k", "long_chain"], [TRANSFORMS, "-k", "chunk"]]),
    ("basis-unchunked", "the batched passes carry the whole basis at once, whatever the budget",
     "jactensor/passes.py", "    chunk = min(m, limit // per_vector)\n", "    chunk = m\n",
     [[MEMORY, "-k", "long_chain or limit"], [TRANSFORMS, "-k", "chunk"]]),
    ("config-global", "config.override is process-global (threads see each other's limits)",
     "jactensor/config.py",
     '_overrides = contextvars.ContextVar("jactensor_config_overrides", default=None)\n',
     "class _Shared:\n"
     "    value = None\n\n"
     "    def get(self):\n        return self.value\n\n"
     "    def set(self, v):\n        old, self.value = self.value, v\n        return old\n\n"
     "    def reset(self, token):\n        self.value = token\n\n\n"
     "_overrides = _Shared()\n",
     [[MEMORY, "-k", "thread"]]),
]

_PLUGIN = '''
import os


def pytest_runtest_logreport(report):
    if report.failed:
        with open(os.environ["MUTATION_FAILURES"], "a") as f:
            f.write(report.nodeid + "\\n")


def pytest_collection_modifyitems(config, items):
    # exact node ids (pytest's own --deselect matches prefixes: test_x would also drop test_x_y and [a-1-10])
    with open(os.environ["MUTATION_DESELECT"]) as f:
        skip = set(f.read().splitlines())
    dropped = [i for i in items if i.nodeid in skip]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if i.nodeid not in skip]


def pytest_collectreport(report):
    if report.failed:
        with open(os.environ["MUTATION_FAILURES"], "a") as f:
            f.write("collection error: " + report.nodeid + "\\n")
'''


def _copy(dest):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for d in ("jactensor", "tests"):
        shutil.copytree(REPO / d, dest / d, ignore=ignore)
    for f in ("setup.cfg", "pyproject.toml", "pytest.ini", "conftest.py"):
        if (REPO / f).exists():
            shutil.copy2(REPO / f, dest / f)
    (dest / "_mutation_report.py").write_text(_PLUGIN)


def _env(copy, **extra):
    """The copy first on the path (so its jactensor is imported), then whatever PYTHONPATH held."""
    path = os.pathsep.join([str(copy)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1", **extra)


def _run(copy, args, deselect, timeout, extra=()):
    """Run pytest in the copy; returns (exit code, failed node ids, seconds)."""
    out, skip = copy / "_failures.txt", copy / "_deselect.txt"
    out.write_text("")
    skip.write_text("\n".join(deselect))
    env = _env(copy, MUTATION_FAILURES=str(out), MUTATION_DESELECT=str(skip))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "_mutation_report",
           "--no-header", "-rN", *extra, *args]
    t = time.time()
    try:
        rc = subprocess.run(cmd, cwd=copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    failed = [l for l in out.read_text().splitlines() if l]
    return rc, failed, time.time() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (default 900)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    ap.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                    help="an extra argument for every pytest run (repeatable), e.g. --pytest-arg=-pmyplugin")
    a = ap.parse_args(argv)
    if a.list:
        for name, desc, path, *_ in MUTANTS:
            print(f"{name:<26} {path:<30} {desc}")
        return 0
    known = {m[0] for m in MUTANTS}
    unknown = [n for n in a.names if n not in known]
    if unknown:
        print(f"unknown mutant(s) {unknown}; see --list", file=sys.stderr)
        return 2
    mutants = [m for m in MUTANTS if not a.names or m[0] in a.names]
    tmp = Path(tempfile.mkdtemp(prefix="jactensor-mutation-"))
    try:
        copy = tmp / "repo"
        copy.mkdir()
        _copy(copy)
        where = subprocess.run([sys.executable, "-c", "import jactensor; print(jactensor.__file__)"], cwd=copy,
                               env=_env(copy), capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(copy)):
            print(f"the copy's jactensor is not the one imported ({where!r}); aborting", file=sys.stderr)
            return 2
        # baseline: tests that fail without any mutant are not evidence against one
        selections = list(dict.fromkeys(tuple(s) for m in mutants for s in m[5]))
        baseline = []
        print(f"baseline: {len(selections)} test selection(s) on the unmodified copy ...", flush=True)
        for sel in selections:
            for _ in range(50):  # -x stops at the first failure: repeat, deselecting, until the rest pass
                rc, failed, _ = _run(copy, list(sel) + ["--maxfail=1000"], baseline, a.timeout, a.pytest_arg)
                new = [f for f in failed if f not in baseline]
                baseline += new
                if not new or rc in (0, 5):
                    break
        bad_collect = [f for f in baseline if f.startswith("collection error")]
        if bad_collect:
            print("baseline collection errors (fix these first):", *bad_collect, sep="\n  ", file=sys.stderr)
            return 2
        if baseline:
            print(f"  {len(baseline)} test(s) already fail and are deselected:")
            for f in baseline:
                print(f"    {f}")
        results = []
        for name, desc, path, old, new, sels in mutants:
            target = copy / path
            original = target.read_text() if target.exists() else None
            count = original.count(old) if original is not None else 0
            if count != 1:
                status = "no longer applies" + ("" if count == 0 else f" (old text found {count} times)")
                results.append((name, path, status, "", 0.0))
                print(f"{name:<26} {status}", flush=True)
                continue
            target.write_text(original.replace(old, new))
            status, by, spent, ran = "SURVIVED", "", 0.0, 0
            try:
                for sel in sels:
                    rc, failed, t = _run(copy, list(sel), baseline, a.timeout, a.pytest_arg)
                    spent += t
                    if rc == "timeout":
                        status, by = "caught", f"timeout after {a.timeout:.0f} s in {' '.join(sel)}"
                        break
                    if rc == 5:  # every test of this selection fails without the mutant: nothing to learn here
                        continue
                    ran += 1
                    if rc != 0:
                        status = "caught"
                        by = failed[0] if failed else f"pytest exit {rc} in {' '.join(sel)}"
                        break
            finally:
                target.write_text(original)
            if status == "SURVIVED" and not ran:
                status, by = "ERROR", "no test ran (all deselected as failing without the mutant, or none selected)"
            results.append((name, path, status, by, spent))
            print(f"{name:<26} {status:<9} {spent:6.1f} s  {by}", flush=True)
        caught = sum(r[2] == "caught" for r in results)
        survived = [r[0] for r in results if r[2] in ("SURVIVED", "ERROR")]
        stale = [r[0] for r in results if r[2].startswith("no longer")]
        print(f"\nmutation score: {caught} of {len(results) - len(stale)} applicable mutants caught"
              + (f"; survived: {', '.join(survived)}" if survived else "")
              + (f"; no longer apply: {', '.join(stale)}" if stale else ""))
        return 1 if survived else (2 if stale else 0)
    finally:
        if a.keep:
            print(f"copy kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
