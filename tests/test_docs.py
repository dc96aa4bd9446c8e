"""Docstring examples run, and the one shape convention is checked in debug mode."""
import doctest

import numpy as np
import pytest

import jactensor as jt
import jactensor.transforms


def test_docstring_examples():
    failures, tried = doctest.testmod(jactensor.transforms, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 1 and failures == 0


def test_debug_mode_checks_the_shape_convention():
    bad = jt.Primitive("bad_shape", np.exp, bind=lambda x: ((x,), {}), formula="?", battery=None,
                       jac=[lambda ans, x: jt.Jacobian.identity((2,))], vjp=[], jvp=[])
    bad.jacobian(np.ones(3))  # not checked by default
    with jt.config.override(debug=True):
        with pytest.raises(jt.ShapeError, match=r"bad_shape: Jacobian rule 0 gave \(2, 2\), expected \(3, 3\)"):
            bad.jacobian(np.ones(3))


def test_readme_commands_are_literal():
    text = open("README.md").read()
    assert 'pip install -e ".[test]" && jactensor demo' in text
    assert 'pip install -e ".[test]" && python -m pytest -q' in text
    ci = open(".ci/run").read()
    assert 'pip install -e ".[test]" && python -m pytest -q' in ci


def _readme_blocks():
    import re
    return re.findall(r"```python\n(.*?)```", open("README.md").read(), re.S)


def test_readme_python_blocks_each_run_on_their_own(capsys):
    blocks = _readme_blocks()
    assert len(blocks) >= 3
    spaces = []
    for k, block in enumerate(blocks):
        ns = {}  # a fresh namespace: a block that leans on an earlier one fails here with NameError
        try:
            exec(block, ns)  # noqa: S102 - our own README
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"README Python block {k + 1} fails on its own: {type(e).__name__}: {e}") from None
        spaces.append(ns)
    capsys.readouterr()
    first = spaces[0]
    find = lambda name: next(ns for ns in spaces if name in ns)  # noqa: E731 - the block that defines name
    transforms, formula = find("JX"), find("report")
    assert formula["report"].ok and transforms["JX"].shape == (8, 4, 8, 4)
    structured = find("theta")  # the structured-derivative uses, against independent numpy
    assert structured["G"].shape == (8, 32, 8, 32) and structured["theta"].shape == (64, 10, 64, 10)
    A = structured["A"]
    s = 0.5 * np.ones(500)  # sigmoid(0): the logistic Hessian at w = 0 is A^T diag(s(1-s)/m) A
    np.testing.assert_allclose(structured["diag"], (A * A).T @ (s * (1 - s) / 500), atol=1e-14)
    assert structured["blocks"].shape == (2000, 32, 8)
    assert find("step")["step"]._cache_size() == 1
    # the chain example's loss has a real gradient (not a constant like the sum of a row-wise softmax),
    # and chain() of the full Jacobians gives the same dL/dQ as finite differences
    from jactensor.testing import finite_difference_jacobian
    Q, K, G = first["Q"], first["K"], first["G"]
    fd = finite_difference_jacobian(lambda q: np.sum(G * (0.5 * jt.softmax(q @ K, axis=-1))), Q)
    dLdQ = np.asarray(first["dLdQ"])
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(dLdQ, fd, atol=1e-8)


def test_readme_states_the_conventions_a_newcomer_needs():
    text = " ".join(open("README.md").read().split())
    assert "row-major (C) order" in text                       # how as_matrix flattens
    assert "always as a tuple" in text and "multiply.jacobian(0.5, S)" in text
    assert "float32" in text and "float64" in text             # the dtype policy, with its reason
    assert "finite difference" in text
    assert "docs/worked-example.md" in text


def test_docs_stand_alone():
    import glob
    import re
    files = ["README.md", "jactensor/demo.py", "jactensor/cli.py"] + glob.glob("docs/*.md")
    for path in files:
        text = open(path).read()
        assert "shared/" not in text, path
        assert not re.search(r"\bthe issue\b|\bissue'?s\b", text, re.I), path
        for link in re.findall(r"\]\(([^)#]+)\)", text):  # relative links point at files that exist
            if not link.startswith("http"):
                import os
                assert os.path.exists(os.path.join(os.path.dirname(path), link)), (path, link)


def test_plot_is_reachable_as_jt_plot_without_importing_it():
    import subprocess
    import sys
    code = ("import sys, jactensor as jt\n"
            "assert 'jactensor.plot' not in sys.modules\n"
            "assert callable(jt.plot.jacobian)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_help_shows_a_primitives_signature_with_its_defaults():
    import inspect
    import pydoc
    sig = inspect.signature(jt.softmax)
    assert "axis" in sig.parameters and sig.parameters["axis"].default == -1
    text = pydoc.render_doc(jt.softmax, renderer=pydoc.plaintext)
    assert "axis=-1" in text
    assert "dS[" in text or "Jacobian" in text  # the formula is part of the help


def test_a_wrong_keyword_names_the_primitive_and_its_parameters():
    with pytest.raises(TypeError) as e:
        jt.softmax(np.ones((2, 3)), dim=-1)
    msg = str(e.value)
    assert "softmax" in msg and "dim" in msg and "axis" in msg


def test_readme_vit_table_matches_the_models_shapes():
    """The README's excerpt of `jactensor explain --program vit`: its shapes and dense bytes follow from the
    model's arithmetic (8 * prod(out + in)), and so does the default configuration's dense total."""
    import re
    from jactensor.memory import fmt_bytes
    from jactensor.models.vit import ViTConfig
    from jactensor.models.vit_explain import TINY, stage_shapes
    text = open("README.md").read()
    shapes = {name: (i, o) for name, i, o in stage_shapes(TINY, 2)}
    rows = re.findall(r"^    ((?:block \d+: )?[a-z][\w ()-]*?)\s{2,}(\(.*?\)) -> (\(.*?\))\s+(\(.*?\))\s+([\d.]+ [KMG]?i?B)",
                      text, re.M)
    assert len(rows) >= 3
    for name, i, o, jac, dense in rows:
        assert shapes[name] == (eval(i), eval(o))  # noqa: S307 - tuple literals from our own README
        assert eval(jac) == eval(o) + eval(i)  # noqa: S307
        assert dense == fmt_bytes(8 * int(np.prod(eval(o) + eval(i))))  # noqa: S307
    total = sum(8 * int(np.prod(o + i)) for _, i, o in stage_shapes(ViTConfig(), 64))
    assert f"would take {fmt_bytes(total)} dense" in text


def _support_entries(text):
    """{(name, jactensor function or None)} from the support table's markdown."""
    import re
    out = set()
    for line in text.splitlines():
        if line.startswith("**") and "answered from the value" not in line:
            for name, target in re.findall(r"`([^`]+)`(?: \(([^)]+)\))?", line.split(":", 1)[1]):
                out.add((name, target or None))
    return out


def _exists_here(name):
    """Does the installed numpy (or scipy) have ``name``? ndarray methods always count."""
    import importlib
    if name.startswith("."):
        return True
    mod, _, rest = name.partition(".")
    try:
        obj = importlib.import_module({"np": "numpy", "scipy": "scipy"}[mod])
    except ImportError:
        return False
    for part in rest.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def test_readme_numpy_support_table_matches_the_dispatch():
    """The README's list of numpy names usable on traced values is the generated one: everything the dispatch
    supports here is listed with the right jactensor function, and anything listed beyond it is a name the
    installed numpy lacks (the README is generated under numpy 2)."""
    from jactensor.numpy_api import support_table
    text = open("README.md").read()
    block = text.split("<!-- numpy-support:begin -->")[1].split("<!-- numpy-support:end -->")[0]
    listed, actual = _support_entries(block), _support_entries(support_table())
    assert len(actual) > 150
    missing = actual - listed
    assert not missing, f"regenerate the README table (jactensor.numpy_api.support_table()): missing {missing}"
    extra = {e for e in listed - actual if _exists_here(e[0])}
    assert not extra, f"the README lists names the dispatch does not support: {extra}"


def test_explain_of_a_primitive_alone_gives_its_signature_and_formula():
    text = jt.explain(jt.fmax)
    assert text.startswith("fmax(a, b)")
    assert jt.fmax.formula in text and "tie" in text
    assert "softmax(x, axis=-1)" in jt.explain(jt.softmax)
