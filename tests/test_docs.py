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


def test_readme_python_blocks_run(capsys):
    import re
    blocks = re.findall(r"```python\n(.*?)```", open("README.md").read(), re.S)
    assert len(blocks) >= 3
    ns = {}
    for block in blocks:
        exec(block, ns)  # noqa: S102 - our own README
    assert ns["report"].ok and ns["JX"].shape == (8, 4, 8, 4)
