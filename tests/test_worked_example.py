"""The worked example's closed forms (shared/worked-example.md), checked against jactensor."""
import numpy as np
import pytest

import jactensor as jt
from jactensor.demo import RIGHT, RIGHT_ROW, WRONG, run_demo


@pytest.fixture
def QK(rng):
    return rng.normal(size=(3, 2)), rng.normal(size=(2, 3))


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
    C, G = 0.7, rng.normal(size=(3, 3))
    A = Q @ K
    S = jt.softmax(A, axis=-1)
    dLdA = S * (C * G - np.sum(C * G * S, axis=1, keepdims=True))
    JQ, JK = jt.matmul.jacobian(Q, K)
    (JS,) = jt.softmax.jacobian(A, axis=-1)
    (JB,) = jt.multiply.jacobian(C, S)
    JL = jt.Jacobian.from_dense(G, 0)
    np.testing.assert_allclose(np.asarray(jt.chain(JL, JB, JS)), dLdA, atol=1e-14)
    np.testing.assert_allclose(np.asarray(jt.chain(JL, JB, JS, JQ)), dLdA @ K.T, atol=1e-14)
    np.testing.assert_allclose(np.asarray(jt.chain(JL, JB, JS, JK)), Q.T @ dLdA, atol=1e-14)
    gQ, gK = jt.grad(lambda Q, K: jt.sum(G * (C * jt.softmax(Q @ K, axis=-1))), argnums=(0, 1))(Q, K)
    np.testing.assert_allclose(gQ, dLdA @ K.T, atol=1e-14)
    np.testing.assert_allclose(gK, Q.T @ dLdA, atol=1e-14)


def test_hand_derivation_flagged_and_corrections_pass(QK):
    Q, K = QK
    A = Q @ K
    whole = lambda Q, K: jt.softmax(Q @ K, axis=None)  # noqa: E731
    env = {"A": A, "S": jt.softmax(A, axis=None)}
    bad = jt.check_formula(whole, WRONG, Q, K, env=env)
    assert not bad.ok and bad.mismatches and "WRONG" in str(bad)
    assert jt.check_formula(whole, RIGHT, Q, K, env=env).ok
    row = lambda Q, K: jt.softmax(Q @ K, axis=-1)  # noqa: E731
    assert jt.check_formula(row, RIGHT_ROW, Q, K, env={"S": jt.softmax(A, axis=-1)}).ok
    # each of the two mistakes alone is still caught
    only_A = "dS[i,j]/dQ[c,d] = S[i,j] * (delta(i,c) * K[d,j] - sum_s(A[c,s] * K[d,s]))"
    only_factor = "dS[i,j]/dQ[c,d] = delta(i,c) * K[d,j] - sum_s(S[i,j] * S[c,s] * K[d,s])"
    assert not jt.check_formula(whole, only_A, Q, K, env=env).ok
    assert not jt.check_formula(whole, only_factor, Q, K, env=env).ok


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_demo_runs_and_agrees(seed, capsys):
    assert run_demo(seed=seed)
    out = capsys.readouterr().out
    assert "block-diagonal" in out and "WRONG" in out and "CORRECT" in out and "all routes agree" in out


def test_cli_demo_exit_code():
    from jactensor.cli import main
    assert main(["demo", "--seed", "3"]) == 0
    assert main([]) == 0
