"""Pictures (Agg backend) and the command line."""
import subprocess
import sys

import numpy as np
import pytest

import jactensor as jt
from jactensor.cli import main
from jactensor.demo import RIGHT, WRONG


def test_plot_rowwise_softmax_shows_blocks(rng):
    import matplotlib.pyplot as plt
    from jactensor import plot
    (J,) = jt.softmax.jacobian(rng.normal(size=(3, 3)), axis=-1)
    ax = plot.jacobian(J, out_name="S", in_name="A")
    M = np.asarray(ax.images[0].get_array())
    assert M.shape == (9, 9)
    mask = np.kron(np.eye(3), np.ones((3, 3))).astype(bool)
    assert np.all(M[~mask] == 0) and np.all(M[mask] != 0)
    assert "S[i,j]" in ax.get_ylabel() and "A[r,s]" in ax.get_xlabel()
    assert len(ax.lines) == 4  # grid lines between the 3 row groups and the 3 column groups
    plt.close(ax.figure)
    (Jw,) = jt.softmax.jacobian(rng.normal(size=(3, 3)), axis=None)
    ax = plot.jacobian(Jw)
    assert np.count_nonzero(np.asarray(ax.images[0].get_array())) == 81
    plt.close(ax.figure)
    with pytest.raises(TypeError, match="Jacobian.from_dense"):
        plot.jacobian(np.ones((3, 3)))


def test_cli_explain_primitive_writes_png(tmp_path, capsys):
    png = tmp_path / "out.png"
    assert main(["explain", "softmax", "--shape", "3,3", "--axis", "-1", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "delta(i,j) - S" in out and "(3, 3, 3, 3)" in out and "54 of 81 (66.7%)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["explain", "softmax", "--shape", "3,3", "--axis", "None"]) == 0
    assert "0 of 81 (0.0%)" in capsys.readouterr().out
    assert main(["explain", "matmul", "--shape", "3,2", "--shape", "2,3"]) == 0
    out = capsys.readouterr().out
    assert "argument 1: shape (3, 3, 2, 3)" in out
    assert main(["explain", "einsum", "--spec", "ij,jk->ik", "--shape", "3,2", "--shape", "2,3"]) == 0


def test_cli_explain_program(capsys):
    assert main(["explain", "--program", "attention"]) == 0
    out = capsys.readouterr().out
    assert "softmax" in out and "chain plan" in out and "VJP path" in out


def test_cli_png_without_matplotlib(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["explain", "softmax", "--shape", "2,2", "--png", str(tmp_path / "x.png")]) == 2
    assert "pip install 'jactensor[plot]'" in capsys.readouterr().err


def test_cli_check_formula_exit_codes(capsys):
    assert main(["check-formula", WRONG]) == 1
    assert "WRONG" in capsys.readouterr().out
    assert main(["check-formula", RIGHT]) == 0
    assert "CORRECT" in capsys.readouterr().out
    assert main(["check-formula", "--program", "matmul", "--wrt", "K", "dA[i,j]/dK[r,s] = Q[i,r] * delta(s,j)"]) == 0


def test_check_formula_callable_and_errors(rng):
    Q, K = rng.normal(size=(3, 2)), rng.normal(size=(2, 3))
    f = lambda Q, K: Q @ K  # noqa: E731
    assert jt.check_formula(f, lambda Q, K: np.einsum("ir,sj->ijrs", np.eye(3), K), Q, K).ok
    rep = jt.check_formula(f, lambda Q, K: np.einsum("ir,sj->ijrs", np.eye(3), K.T.T * 1.1), Q, K)
    assert not rep.ok and rep.worst is not None and len(rep.mismatches) == 5
    rep = jt.check_formula(f, lambda Q, K: np.zeros((3, 3)), Q, K)
    assert not rep.ok and "shape (3, 3)" in str(rep)
    with pytest.raises(NameError, match="'Z'"):
        jt.check_formula(f, "dA[i,j]/dQ[r,s] = Z[i,r]", Q, K)
    with pytest.raises(ValueError, match=r"\[.t.\] are neither on the left side nor summed.*sum_t"):
        jt.check_formula(f, "dA[i,j]/dQ[r,s] = delta(i,r) * K[s,j] * K[t,j]", Q, K)


def test_console_script_runs_demo():
    r = subprocess.run([sys.executable, "-m", "jactensor", "demo", "--seed", "2"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "all routes agree" in r.stdout


def test_cli_check_runs_the_three_way_check(capsys):
    assert main(["check", "exp", "softmax", "matmul"]) == 0
    out = capsys.readouterr().out
    assert "softmax" in out and "ok" in out and "FAILED" not in out
    assert main(["check", "nope"]) == 2
    assert "no primitive named nope; registered:" in capsys.readouterr().err


def test_cli_bad_input_is_a_message_not_a_traceback(capsys):
    assert main(["explain", "softmax", "--shape", "3,3", "--axis", "5"]) == 2
    err = capsys.readouterr().err
    assert "AxisError: softmax: axis 5 is out of range" in err and "Traceback" not in err
    assert main(["explain", "softmx"]) == 2
