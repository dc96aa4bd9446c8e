"""The `jactensor` console script: every bad invocation is one line on stderr and exit status 2, before any
work starts; WRONG formulas exit 1; Ctrl-C exits 130 with one line and leaves nothing half-done.

The invocations run through the installed console script in subprocesses (several at a time), from a
scratch directory, so nothing here can write into the repository.
"""
import concurrent.futures
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

from jactensor.demo import RIGHT, WRONG


def _command():
    script = os.path.join(sysconfig.get_path("scripts"), "jactensor")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "jactensor"]


def _env(**extra):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    env.pop("JACTENSOR_TRACEBACK", None)
    env.update(extra)
    return env


def _run(args, cwd, env=None, timeout=180):
    return subprocess.run(_command() + list(args), cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)


# (id, arguments, text the one error line must contain); "nosk" in the id: scikit-learn hidden
BAD = [
    ("shape-3x3", ["explain", "softmax", "--shape", "3x3"], "--shape 3,3"),
    ("shape-negative", ["explain", "softmax", "--shape", "-1"], "'-1' is not a whole number >= 0"),
    ("shape-1e9", ["explain", "softmax", "--shape", "1e9,1e9"], "'1e9' is not a whole number >= 0"),
    ("shape-abc", ["explain", "softmax", "--shape", "abc"], "'abc' is not a shape"),
    ("shape-empty-axis", ["explain", "softmax", "--shape", "3,,3"], "an empty axis length"),
    ("shape-over-memory", ["explain", "softmax", "--shape", "100000,100000"], "74.5 GiB as float64, above"),
    ("jacobian-over-memory", ["explain", "softmax", "--shape", "2000,2000"], "nothing was allocated"),
    ("shape-zero-png", ["explain", "softmax", "--shape", "0,3", "--png", "z.png"], "nothing to draw"),
    ("png-missing-folder", ["explain", "softmax", "--png", "/nonexistent/x.png"], "'/nonexistent' for"),
    ("png-unwritable", ["explain", "softmax", "--png", "/proc/x.png"], "cannot write in the folder"),
    ("png-is-folder", ["explain", "softmax", "--png", "."], "is a folder"),
    ("einsum-without-spec", ["explain", "einsum", "--shape", "3,2", "--shape", "2,3"], "add --spec"),
    ("arg-out-of-range", ["explain", "softmax", "--arg", "5"], "--arg takes 0 to 0"),
    ("arg-negative", ["explain", "softmax", "--arg", "-1"], "below 0"),
    ("eps-negative", ["explain", "layer_norm", "--eps", "-1"], "eps must be positive"),
    ("unknown-parameter", ["explain", "softmax", "--eps", "3"], "softmax has no parameter eps"),
    ("parameter-without-value", ["explain", "softmax", "--axis"], "has no value"),
    ("axis-out-of-range", ["explain", "softmax", "--shape", "3,3", "--axis", "5"], "AxisError"),
    ("wrong-input-count", ["explain", "matmul", "--shape", "3,3"], "one --shape per array input"),
    ("unknown-primitive", ["explain", "softmx"], "no primitive named 'softmx'"),
    ("unknown-program", ["explain", "--program", "nope"], "unknown program 'nope'"),
    ("program-and-primitive", ["explain", "softmax", "--program", "mlp"], "not both"),
    ("wrt-out-of-range", ["explain", "--program", "mlp", "--wrt", "9"], "--wrt takes positions 0 to 4"),
    ("n-without-program", ["explain", "softmax", "--n", "3"], "--n and --d go with --program"),
    ("check-n-negative", ["check", "--n", "-1"], "below 1"),
    ("check-unknown", ["check", "nope"], "no primitive named nope"),
    ("check-seed-text", ["check", "--seed", "x"], "'x' is not a whole number"),
    ("formula-readme-placeholder", ["check-formula", "--program", "softmax-whole", "--wrt", "Q",
                                    "dS[i,j]/dQ[c,d] = ..."], "placeholder"),
    ("formula-unclosed", ["check-formula", "dS[i,j]/dQ[c,d] = (S[i,j]"], "FormulaError"),
    ("formula-unknown-name", ["check-formula", "dS[i,j]/dQ[c,d] = Z[i,c]"], "'Z'"),
    ("formula-python", ["check-formula", "dS[i,j]/dQ[c,d] = __import__('os').getcwd()"], "not allowed"),
    ("formula-no-left-side", ["check-formula", "S[i,j]"], "FormulaError"),
    ("formula-unknown-program", ["check-formula", "--program", "nope", "x"], "unknown program 'nope'"),
    ("formula-n-zero", ["check-formula", "--n", "0", RIGHT], "below 1"),
    ("demo-seed", ["demo", "--seed", "-1"], "a seed is a whole number >= 0"),
    ("demo-unknown-option", ["demo", "--bogus"], "unrecognized arguments: --bogus"),
    ("unknown-command", ["nonsense"], "invalid choice: 'nonsense'"),
    ("vit-seed", ["vit", "--seed", "-1"], "a seed is a whole number >= 0"),
    ("vit-check-seed", ["vit", "--check", "--seed", "-1"], "a seed is a whole number >= 0"),
    ("vit-epochs", ["vit", "--epochs", "-1"], "-1 is below 0"),
    ("vit-batch-size-0", ["vit", "--batch-size", "0"], "0 is below 1"),
    ("vit-batch-size-negative", ["vit", "--batch-size", "-5"], "-5 is below 1"),
    ("vit-width-0", ["vit", "--width", "0"], "0 is below 1"),
    ("vit-heads-0", ["vit", "--heads", "0"], "0 is below 1"),
    ("vit-patch-0", ["vit", "--patch", "0"], "0 is below 1"),
    ("vit-lr-nan", ["vit", "--lr", "nan"], "not a finite number > 0"),
    ("vit-lr-negative", ["vit", "--lr", "-1"], "not a finite number > 0"),
    ("vit-weight-decay-inf", ["vit", "--weight-decay", "inf"], "not a finite number >= 0"),
    ("vit-depth-huge", ["vit", "--depth", "100000"], "depth must be between 0 and 1,000"),
    ("vit-width-huge", ["vit", "--width", "1000000", "--heads", "4"], "above the memory limit"),
    ("vit-heads-not-dividing", ["vit", "--width", "30", "--heads", "4"], "not divisible by heads 4"),
    ("vit-load-deep-config", ["vit", "--load", "deep.npz"], "depth must be between 0 and 1,000"),
    ("vit-load-missing", ["vit", "--load", "missing.npz"], "no file at 'missing.npz'"),
    ("vit-load-not-ours", ["vit", "--load", "afile"], "not a parameter file"),
    ("vit-save-missing-folder", ["vit", "--save", "nodir/p.npz"], "does not exist"),
    ("vit-save-unwritable", ["vit", "--save", "/proc/p.npz"], "cannot write in the folder"),
    ("vit-check-with-sizes", ["vit", "--check", "--width", "8"], "takes only --seed and --no-torch"),
    ("vit-check-nosk", ["vit", "--check"], "pip install 'jactensor[vit]'"),
    ("vit-nosk", ["vit", "--epochs", "1"], "pip install 'jactensor[vit]'"),
    ("bench-out-file", ["bench", "--smoke", "--out", "afile"], "is an existing file"),
    ("bench-out-not-empty", ["bench", "--smoke", "--out", "full"], "already holds files"),
    ("bench-two-modes", ["bench", "--smoke", "--quick"], "not allowed with argument --smoke"),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "afile").write_text("not a parameter file")
    (d / "full").mkdir()
    (d / "full" / "results.json").write_text("{}")
    from jactensor.models.vit import ViTConfig, init_params
    cfg = ViTConfig(width=8, depth=1, heads=2)
    deep = json.dumps({**dataclasses.asdict(cfg), "depth": 100000})
    np.savez(d / "deep.npz", __config__=np.array(deep), **init_params(cfg))
    nosk = d / "nosk" / "sklearn"
    nosk.mkdir(parents=True)
    (nosk / "__init__.py").write_text("raise ImportError('No module named sklearn (hidden by the test)')\n")
    return d


@pytest.fixture(scope="module")
def bad_results(scratch):
    def one(case):
        name, args, _ = case
        env = _env(PYTHONPATH=str(scratch / "nosk")) if "nosk" in name else None
        return name, _run(args, scratch, env)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, BAD))


@pytest.mark.parametrize("name,args,expected", BAD, ids=[c[0] for c in BAD])
def test_bad_invocation_is_one_line_and_exit_2(bad_results, scratch, name, args, expected):
    r = bad_results[name]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jactensor"), r.stderr[-2000:]
    assert expected in lines[0] and len(lines[0]) < 500, lines[0]
    assert r.stdout == ""  # refused before any work started
    assert sorted(p.name for p in scratch.iterdir()) == ["afile", "deep.npz", "full", "nosk"]  # nothing written


def test_check_formula_exit_codes_correct_wrong_error(scratch):
    ok = _run(["check-formula", "--program", "softmax_whole", RIGHT], scratch)   # snake_case accepted too
    wrong = _run(["check-formula", WRONG], scratch)
    broken = _run(["check-formula", "dS[i,j]/dQ[c,d] = S[i,j] *"], scratch)
    assert (ok.returncode, wrong.returncode, broken.returncode) == (0, 1, 2)
    assert "CORRECT" in ok.stdout and "WRONG" in wrong.stdout and wrong.stderr == ""
    assert len(broken.stderr.splitlines()) == 1 and "Traceback" not in broken.stderr
    help_text = _run(["check-formula", "--help"], scratch).stdout
    help_text = " ".join(help_text.split())
    assert "0 CORRECT, 1 WRONG" in help_text and "2 the formula could not be read" in help_text


def test_empty_shapes_are_explained_not_refused(scratch):
    r = _run(["explain", "softmax", "--shape", "0,3"], scratch)
    assert r.returncode == 0 and "0 of 0" in r.stdout and r.stderr == ""


def test_program_names_are_kebab_case_and_snake_case_is_accepted(scratch):
    for name in ("worked-example", "ln_block"):
        r = _run(["explain", "--program", name, "--n", "3", "--d", "2"], scratch)
        assert r.returncode == 0 and "chain plan" in r.stdout, (name, r.stderr)
    help_text = _run(["explain", "--help"], scratch).stdout
    assert "worked-example" in help_text and "worked_example" not in help_text


def test_every_option_has_help_text():
    import argparse
    from jactensor.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{cmd} {a.dest}" for cmd, p in sub.choices.items() for a in p._actions if not a.help]
    assert missing == []


def _start(args, cwd, wait_for, timeout=120):
    """Start the command and return it once a stdout line containing ``wait_for`` appeared."""
    p = subprocess.Popen(_command() + args, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stdout], [], [], 1.0)
        if ready:
            line = p.stdout.readline()
            seen += line
            if wait_for in line:
                return p
            if not line and p.poll() is not None:
                break
    p.kill()
    raise AssertionError(f"{args} did not print {wait_for!r}: {seen[-500:]} {p.stderr.read()[-500:]}")


def test_ctrl_c_during_vit_training_keeps_the_saved_file(tmp_path):
    good = tmp_path / "params.npz"
    good.write_bytes(b"a good file from an earlier run")
    p = _start(["vit", "--epochs", "500", "--width", "8", "--depth", "1", "--heads", "2", "--no-progress",
                "--save", "params.npz"], tmp_path, wait_for="parameters; digits")
    time.sleep(1.0)  # into the training loop
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    assert err.splitlines() == ["jactensor vit: interrupted"] and "Traceback" not in err
    assert good.read_bytes() == b"a good file from an earlier run"
    assert [x.name for x in tmp_path.iterdir()] == ["params.npz"]  # no temporary file left either


def test_ctrl_c_during_bench_removes_the_folder_it_made(tmp_path):
    p = _start(["bench", "--quick", "--no-peers", "--no-progress", "--out", "res"], tmp_path,
               wait_for="the results go to res")
    assert (tmp_path / "res").is_dir()
    time.sleep(1.0)  # into the suites
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    assert err.splitlines() == ["jactensor bench: interrupted; removed the unfinished results folder res"]
    assert list(tmp_path.iterdir()) == []
