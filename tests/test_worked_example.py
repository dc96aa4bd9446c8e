"""The worked example (docs/worked-example.md and `jactensor demo`), checked against the engine.

The document's `formula` blocks go through jt.check_formula (CORRECT or, where the block says
expect=wrong, WRONG); its Python blocks run, each on its own, and their results are compared with
jactensor's gradient, chain() and finite differences; its tables are compared with the shapes and
byte counts of the engine's own Jacobians and cotangents.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import jactensor as jt
from jactensor.demo import RIGHT, RIGHT_ROW, WRONG, run_demo
from jactensor.testing import finite_difference_jacobian

DOC = Path(__file__).resolve().parents[1] / "docs" / "worked-example.md"
C = 0.5
ORDER = ["A", "S", "B", "L"]  # the forward pass: Q, K -> A -> S -> B -> L


def _blocks(lang):
    """(info dict, body) of each fenced block of the given language in the document."""
    out = []
    for m in re.finditer(r"^```(\w+)([^\n]*)\n(.*?)^```", DOC.read_text(), re.S | re.M):
        if m.group(1) == lang:
            out.append((dict(kv.split("=", 1) for kv in m.group(2).split()), m.group(3)))
    return out


def _formulas():
    return [(line.strip(), info.get("softmax", "row"), info.get("expect", "correct"))
            for info, body in _blocks("formula") for line in body.splitlines() if line.strip()]


FORMULAS = _formulas()


def _table(header_start):
    """Rows (lists of cells) of the markdown table whose header line starts with ``header_start``."""
    lines = DOC.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[k + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.fixture
def QK(rng):
    return rng.normal(size=(3, 2)), rng.normal(size=(2, 3))


def test_document_has_the_whole_example():
    assert len(FORMULAS) >= 14 and len(_blocks("python")) == 2
    kinds = {(s, e) for _, s, e in FORMULAS}
    assert {("row", "correct"), ("whole", "correct"), ("whole", "wrong")} <= kinds
    text = DOC.read_text()
    assert "shared/" not in text and "issue" not in text.lower()


@pytest.mark.parametrize("formula,softmax,expect", FORMULAS, ids=[f[0][:40] for f in FORMULAS])
def test_document_formula(formula, softmax, expect, rng):
    Q, K, G = rng.normal(size=(3, 2)), rng.normal(size=(2, 3)), rng.normal(size=(3, 3))
    axis = None if softmax == "whole" else -1
    step = {"S": lambda A: jt.softmax(A, axis=axis), "B": lambda S: C * S, "L": lambda B: jt.sum(G * B)}

    def up(Y, start, v):
        for name in ORDER[ORDER.index(start) + 1:ORDER.index(Y) + 1]:
            v = step[name](v)
        return v
    A = Q @ K
    S = np.asarray(jt.softmax(A, axis=axis))
    values = {"A": A, "S": S, "B": C * S}
    Y, X = re.match(r"d(\w+)(?:\[[^\]]*\])?/d(\w+)", formula).groups()
    if X in ("Q", "K"):
        f, args, argnum = (lambda Q, K: up(Y, "A", Q @ K)), (Q, K), "QK".index(X)
    else:
        f = {"A": lambda A: up(Y, "A", A), "S": lambda S: up(Y, "S", S), "B": lambda B: up(Y, "B", B)}[X]
        args, argnum = (values[X],), 0
    # dL/dA from the engine's reverse pass, for the chain formulas that use it
    dLdA = jt.grad(lambda A: up("L", "A", A))(A)
    env = {"Q": Q, "K": K, "A": A, "S": S, "C": C, "G": G, "dLdA": dLdA}
    for name in ("Q", "K") if X in ("Q", "K") else (X,):
        env.pop(name, None)
    rep = jt.check_formula(f, formula, *args, argnum=argnum, env=env)
    assert rep.ok == (expect == "correct"), str(rep)


def test_document_python_blocks_run_alone_and_agree(capsys):
    (_, matrices), (_, chaining) = _blocks("python")
    ns = {}
    exec(matrices, ns)  # noqa: S102 - our own document
    assert np.count_nonzero(ns["J_row"].as_matrix()) == 27 and np.count_nonzero(ns["M_row"]) == 27
    np.testing.assert_allclose(ns["J_whole"].as_matrix(), ns["M_whole"], atol=1e-15)
    np.testing.assert_allclose(ns["J_row"].as_matrix(), ns["M_row"], atol=1e-15)
    ns = {}
    exec(chaining, ns)  # noqa: S102
    Q, K, loss = ns["Q"], ns["K"], ns["loss"]
    fd_Q = finite_difference_jacobian(lambda q: loss(q, K), Q)
    fd_K = finite_difference_jacobian(lambda k: loss(Q, k), K)
    np.testing.assert_allclose(ns["dLdQ"], fd_Q, atol=1e-8)
    np.testing.assert_allclose(ns["dLdK"], fd_K, atol=1e-8)
    np.testing.assert_allclose(ns["dLdQ"], ns["gQ"], atol=1e-14)
    np.testing.assert_allclose(ns["dLdK"], ns["gK"], atol=1e-14)
    np.testing.assert_allclose(ns["chain_Q"], ns["gQ"], atol=1e-14)
    assert ns["dLdQ"].shape == (3, 2) and ns["dLdK"].shape == (2, 3)
    capsys.readouterr()


def test_document_shape_table_matches_the_engine(QK, rng):
    Q, K = QK
    G = rng.normal(size=(3, 3))
    S = jt.softmax(Q @ K, axis=-1)
    JQ, JK = jt.matmul.jacobian(Q, K)
    (JS,) = jt.softmax.jacobian(Q @ K, axis=-1)
    (JB,) = jt.multiply.jacobian(C, S)
    JL = jt.jacobian(lambda B: jt.sum(G * B))(C * S)
    engine = {"dA/dQ": JQ.shape, "dA/dK": JK.shape, "dS/dA": JS.shape, "dB/dS": JB.shape, "dL/dB": JL.shape}
    rows = _table("| Jacobian")
    assert {r[0] for r in rows} == set(engine)
    for name, out_in, shape in rows:
        assert eval(shape) == engine[name]  # noqa: S307 - a tuple literal from our own document
        out, inp = (eval(s) for s in out_in.split(" + "))  # noqa: S307
        assert out + inp == engine[name]


def _engine_bytes(n, d, rng):
    """Dense bytes of the four per-op Jacobians of section 3, and the bytes of the VJP path's cotangents."""
    Q, K, G = rng.normal(size=(n, d)), rng.normal(size=(d, n)), rng.normal(size=(n, n))
    A = Q @ K
    S = jt.softmax(A, axis=-1)
    JQ, _ = jt.matmul.jacobian(Q, K)
    (JS,) = jt.softmax.jacobian(A, axis=-1)
    (JB,) = jt.multiply.jacobian(C, S)
    JL = jt.Jacobian.from_dense(G, 0)
    dense = JQ.nbytes + JS.nbytes + JB.nbytes + JL.nbytes
    gB = G
    (gS,) = jt.multiply.vjp(gB, C, S)
    (gA,) = jt.softmax.vjp(gS, A, axis=-1)
    gQ, _ = jt.matmul.vjp(gA, Q, K)
    return dense, gB.nbytes + gS.nbytes + gA.nbytes + gQ.nbytes


def test_document_byte_table_matches_formula_and_engine(rng):
    rows = _table("| n | d |")
    assert len(rows) == 3
    for n, d, dense, vjp in rows:
        n, d, dense, vjp = (int(x.replace(",", "")) for x in (n, d, dense, vjp))
        assert dense == 8 * (n ** 3 * d + 2 * n ** 4 + n ** 2)
        assert vjp == 8 * (3 * n ** 2 + n * d)
        if n <= 64:  # the engine's own Jacobians (sizes known without building them) and cotangents
            assert _engine_bytes(n, d, rng) == (dense, vjp)


def test_dA_dQ_and_dA_dK(QK):
    Q, K = QK
    JQ, JK = jt.matmul.jacobian(Q, K)
    d = np.eye(3)
    np.testing.assert_array_equal(np.asarray(JQ), np.einsum("ir,sj->ijrs", d, K))
    np.testing.assert_array_equal(np.asarray(JK), np.einsum("ir,sj->ijrs", Q, d))
    assert JQ.shape == (3, 3, 3, 2) and JK.shape == (3, 3, 2, 3)


def test_softmax_jacobians_whole_and_rowwise(QK):
    Q, K = QK
    A = Q @ K
    (Jall,) = jt.softmax.jacobian(A, axis=None)
    s = jt.softmax(A, axis=None).reshape(-1)
    np.testing.assert_allclose(Jall.as_matrix(), np.diag(s) - np.outer(s, s), atol=1e-15)
    (Jrow,) = jt.softmax.jacobian(A, axis=-1)
    S = np.exp(A) / np.exp(A).sum(1, keepdims=True)
    expected = np.einsum("ir,ij,js->ijrs", np.eye(3), S, np.eye(3)) - np.einsum("ir,ij,is->ijrs", np.eye(3), S, S)
    np.testing.assert_allclose(np.asarray(Jrow), expected, atol=1e-15)
    M = Jrow.as_matrix()
    assert np.count_nonzero(M) == 27  # three 3 x 3 blocks
    for i in range(3):
        np.testing.assert_allclose(M[3 * i:3 * i + 3, 3 * i:3 * i + 3], np.diag(S[i]) - np.outer(S[i], S[i]),
                                   atol=1e-15)


def test_chain_rule_back_to_shapes_of_Q_and_K(QK, rng):
    Q, K = QK
    C_, G = 0.7, rng.normal(size=(3, 3))
    A = Q @ K
    S = jt.softmax(A, axis=-1)
    dLdA = S * (C_ * G - np.sum(C_ * G * S, axis=1, keepdims=True))
    JQ, JK = jt.matmul.jacobian(Q, K)
    (JS,) = jt.softmax.jacobian(A, axis=-1)
    (JB,) = jt.multiply.jacobian(C_, S)
    JL = jt.Jacobian.from_dense(G, 0)
    np.testing.assert_allclose(np.asarray(jt.chain(JL, JB, JS)), dLdA, atol=1e-14)
    np.testing.assert_allclose(np.asarray(jt.chain(JL, JB, JS, JQ)), dLdA @ K.T, atol=1e-14)
    np.testing.assert_allclose(np.asarray(jt.chain(JL, JB, JS, JK)), Q.T @ dLdA, atol=1e-14)
    gQ, gK = jt.grad(lambda Q, K: jt.sum(G * (C_ * jt.softmax(Q @ K, axis=-1))), argnums=(0, 1))(Q, K)
    np.testing.assert_allclose(gQ, dLdA @ K.T, atol=1e-14)
    np.testing.assert_allclose(gK, Q.T @ dLdA, atol=1e-14)


def test_demo_formulas_are_the_documents():
    lines = {f for f, _, _ in FORMULAS}
    assert {WRONG, RIGHT, RIGHT_ROW} <= {" ".join(f.split()) for f in lines} | lines


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_demo_runs_and_agrees(seed, capsys):
    assert run_demo(seed=seed)
    out = capsys.readouterr().out
    assert "block-diagonal" in out and "WRONG" in out and "CORRECT" in out and "all routes agree" in out


def test_cli_demo_exit_code(capsys):
    from jactensor.cli import main
    assert main(["demo", "--seed", "3"]) == 0
    assert main([]) == 0
    capsys.readouterr()
