"""Pictures (Agg backend) and the explain / check / check-formula commands doing their job."""
import subprocess
import sys

import numpy as np
import pytest

import jactensor as jt
from jactensor import plot
from jactensor.cli import main
from jactensor.demo import RIGHT, WRONG


def test_plot_rowwise_softmax_shows_blocks(rng):
    import matplotlib.pyplot as plt
    (J,) = jt.softmax.jacobian(rng.normal(size=(3, 3)), axis=-1)
    ax = plot.jacobian(J, out_name="S", in_name="A")
    M = np.asarray(ax.images[0].get_array())
    assert M.shape == (9, 9)
    mask = np.kron(np.eye(3), np.ones((3, 3))).astype(bool)
    assert np.all(M[~mask] == 0) and np.all(M[mask] != 0)
    assert "S[i,j]" in ax.get_ylabel() and "A[r,s]" in ax.get_xlabel()
    assert len(ax.lines) == 4  # grid lines between the 3 row groups and the 3 column groups
    assert "67% structural zeros" in ax.get_title()
    plt.close(ax.figure)
    (Jw,) = jt.softmax.jacobian(rng.normal(size=(3, 3)), axis=None)
    ax = plot.jacobian(Jw)
    assert np.count_nonzero(np.asarray(ax.images[0].get_array())) == 81
    plt.close(ax.figure)


def test_plot_titles_name_the_op_and_the_argument(rng):
    import matplotlib.pyplot as plt
    Q, K = rng.normal(size=(3, 2)), rng.normal(size=(2, 3))
    _, JK = jt.matmul.jacobian(Q, K)
    ax = plot.jacobian(JK)
    assert ax.get_title().startswith("matmul w.r.t. b") and "dY/dX" not in ax.get_title()
    assert "output matmul[i,j]" in ax.get_ylabel() and "input b[r,s]" in ax.get_xlabel()
    plt.close(ax.figure)


def test_plot_takes_the_ndarray_jt_jacobian_returns(rng):
    import matplotlib.pyplot as plt
    x = rng.normal(size=(2, 3))
    f = lambda x: jt.softmax(x, axis=-1)  # noqa: E731
    Jd = jt.jacobian(f)(x)  # an ndarray of shape (2, 3, 2, 3)
    ax = plot.jacobian(Jd, out_ndim=2, out_name="S", in_name="x")
    np.testing.assert_allclose(ax.images[0].get_array(), Jd.reshape(6, 6))
    assert ax.get_title().startswith("S w.r.t. x")
    plt.close(ax.figure)
    with pytest.raises(TypeError, match="out_ndim"):
        plot.jacobian(Jd)
    with pytest.raises(ValueError, match="out_ndim must be a whole number from 0 to 4"):
        plot.jacobian(Jd, out_ndim=5)
    with pytest.raises(TypeError, match="Jacobian.from_dense"):
        plot.jacobian([[1.0]])


def test_saved_picture_keeps_the_colour_bar_label(rng, tmp_path):
    """Draw the colour-bar label in pure red, save, and find all of it inside the image: the red pixels
    span the label's full rendered length and stay clear of the image's edges."""
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    (J,) = jt.softmax.jacobian(rng.normal(size=(4, 4)), axis=-1)
    ax = plot.jacobian(J, annotate=False)
    fig = ax.figure
    cax = fig.axes[-1]
    label = cax.yaxis.label
    assert label.get_text()  # the colour bar is labelled
    label.set_color((1.0, 0.0, 0.0))
    fig.canvas.draw()
    dpi = 120
    length_px = label.get_window_extent().height * dpi / fig.dpi  # the label is vertical
    path = tmp_path / "j.png"
    assert plot.save(fig, path, dpi=dpi) == str(path)
    plt.close(fig)
    img = mpimg.imread(path)
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.2) & (img[..., 2] < 0.2)
    rows, cols = np.nonzero(red)
    assert rows.size, "the colour-bar label is not in the saved picture"
    h, w = red.shape
    assert cols.max() < w - 2 and cols.min() > 1 and rows.min() > 1 and rows.max() < h - 2
    assert rows.max() - rows.min() + 1 >= 0.9 * length_px
    assert [p.name for p in tmp_path.iterdir()] == ["j.png"]  # no temporary file left behind


def test_save_never_leaves_a_half_written_file(rng, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    (J,) = jt.softmax.jacobian(rng.normal(size=(2, 2)))
    ax = plot.jacobian(J)
    path = tmp_path / "good.png"
    path.write_bytes(b"the good picture")

    def interrupted(self, f, **kw):
        f.write(b"\x89PNG half")
        raise KeyboardInterrupt
    monkeypatch.setattr(type(ax.figure), "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plot.save(ax.figure, path)
    assert path.read_bytes() == b"the good picture" and [p.name for p in tmp_path.iterdir()] == ["good.png"]
    plt.close(ax.figure)


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
    assert "argument 1 (b): shape (3, 3, 2, 3)" in out
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
    with pytest.raises(jt.FormulaError, match="'Z'"):
        jt.check_formula(f, "dA[i,j]/dQ[r,s] = Z[i,r]", Q, K)
    with pytest.raises(ValueError, match=r"sum_t"):
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
