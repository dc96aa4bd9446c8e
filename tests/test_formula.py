"""Index formulas: the checker reads them with its own grammar (never runs them) and gets the numbers right.

Hostile formulas must raise FormulaError quoting the offending piece, both from
jt.check_formula and from the console script (exit 2, one line on stderr, nothing
executed). Correct and wrong hand derivations are compared against numpy constructions
and central finite differences written here, independent of jactensor.
"""
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import jactensor as jt
from jactensor.demo import RIGHT, RIGHT_ROW, WRONG
from jactensor.errors import FormulaError
from jactensor.formula import MAX_CHARS, evaluate_formula

LHS = "dS[i,j]/dQ[c,d] = "
ESCAPE = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__.endswith('wrap_close')][0]"
          ".__init__.__globals__.get('system')('touch pwned') * S[i,j]")

# (name, right side, a piece of the formula the error message must quote or a phrase it must contain)
ATTACKS = [
    ("escape", ESCAPE, "'[c for c in ().__class__.__base__"),
    ("import", "__import__('os').system('touch pwned')", "'__import__('os').system'"),
    ("class", "().__class__", "'().__class__'"),
    ("attr_chain", "S[i,j].__class__.__mro__", "'S[i,j].__class__.__mro__'"),
    ("attr_dunder", "S.__array__", "'S.__array__'"),
    ("listcomp", "[open('pwned', 'w') for k in (1,)]", "'[open('pwned', 'w') for k in (1,)]'"),
    ("genexp", "sum_s((open('pwned', 'w') for k in (1,)))", "'(open('pwned', 'w') for k in (1,))'"),
    ("format", "'{0.__class__}'.format(S)", "''{0.__class__}'.format'"),
    ("fstring", "f'{__import__(\"os\").system(\"touch pwned\")}'", "f-string"),
    ("percent", "'%s' % S", "'%'"),
    ("walrus", "(p := 1) * S[i,j]", "'p := 1'"),
    ("lambda", "(lambda: __import__('os').system('touch pwned'))()",
     "'lambda: __import__('os').system('touch pwned')'"),
    ("starred", "exp(*S)", "'*S'"),
    ("keyword", "exp(S[i,j], out=S)", "'out=S'"),
    ("getattr", "getattr(S, 'x')", "'getattr'"),
    ("eval", "eval('1')", "'eval'"),
    ("exec", "exec('import os')", "'exec'"),
    ("open", "open('pwned', 'w')", "'open'"),
    ("breakpoint", "breakpoint()", "'breakpoint'"),
    ("globals", "globals()['__builtins__']", "'globals()['__builtins__']'"),
    ("subscript_call", "exp(S[i,j])[i]", "'exp(S[i,j])[i]'"),
    ("builtins", "__builtins__", "'__builtins__'"),
    ("dunder_tensor", "__S__[i,j]", "'__S__'"),
    ("call_tensor", "S(i, j)", "'S(i, j)'"),
    ("call_entry", "K[d,j](1)", "'K[d,j]'"),
    ("string", "'touch pwned'", "''touch pwned''"),
    ("bytes", "b'touch pwned'", "'b'touch pwned''"),
    ("compare", "S[i,j] < 1", "'S[i,j] < 1'"),
    ("boolop", "S[i,j] and S[c,d]", "'S[i,j] and S[c,d]'"),
    ("ifexp", "S[i,j] if S[i,j] else 0", "'S[i,j] if S[i,j] else 0'"),
    ("dict", "{1: S}", "'{1: S}'"),
    ("number_index", "S[0,j]", "'0'"),
    ("statement", "S[i,j]; import os", "'; import os'"),
    ("unknown", "Z[i,j]", "'Z'"),
    ("placeholder", "...", "placeholder"),
    ("long", "S[i,j]" + " + S[i,j]" * (MAX_CHARS // 9), f"{MAX_CHARS:,}"),
    ("parens", "(" * 500 + "S[i,j]" + ")" * 500, "nested parentheses"),
    ("unary_deep", "-" * 5000 + "S[i,j]", "nested too deeply"),
    ("call_deep", "exp(" * 150 + "S[i,j]" + ")" * 150, "nests more than"),
]


@pytest.fixture(scope="module")
def softmax_case():
    rng = np.random.default_rng(11)
    Q, K = rng.normal(size=(3, 2)), rng.normal(size=(2, 3))
    A = Q @ K
    E = np.exp(A - A.max())
    return Q, K, {"A": A, "S": E / E.sum()}


def _whole(Q, K):
    return jt.softmax(Q @ K, axis=None)


def _fd(fun, x, h=1e-6):
    """Central differences of a numpy function: J[out..., in...]."""
    x = np.asarray(x, dtype=np.float64)
    y0 = np.asarray(fun(x))
    J = np.zeros(y0.shape + x.shape)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        J[(Ellipsis,) + idx] = (np.asarray(fun(x + e)) - np.asarray(fun(x - e))) / (2 * h)
    return J


def _np_softmax(A, axis=None):
    E = np.exp(A - A.max(axis=axis, keepdims=True))
    return E / E.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------
# hostile formulas


# the console script is checked on one of each kind (each run starts an interpreter)
CLI_ATTACKS = ["escape", "import", "class", "attr_chain", "listcomp", "genexp", "format", "fstring", "walrus",
               "lambda", "starred", "keyword", "getattr", "eval", "exec", "open", "subscript_call", "builtins",
               "call_tensor", "string", "long", "parens", "unary_deep"]
BY_NAME = {name: (rhs, piece) for name, rhs, piece in ATTACKS}


@pytest.mark.parametrize("name, rhs, piece", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_refused_with_the_piece_quoted(name, rhs, piece, softmax_case, tmp_path, monkeypatch):
    Q, K, env = softmax_case
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FormulaError) as info:
        jt.check_formula(_whole, LHS + rhs, Q, K, env=env)
    msg = str(info.value)
    assert piece in msg, msg
    assert "\n" not in msg and len(msg) < 400  # one readable line
    assert list(tmp_path.iterdir()) == []


def _run_cli(rhs, cwd):
    cwd.mkdir()
    r = subprocess.run([sys.executable, "-m", "jactensor", "check-formula", LHS + rhs], cwd=cwd, capture_output=True,
                       text=True, timeout=120, check=False)
    return r, sorted(p.name for p in cwd.iterdir())


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    # one interpreter per attack, started a few at a time: each must fail on its own
    root = tmp_path_factory.mktemp("cli_attacks")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run_cli, BY_NAME[name][0], root / name) for name in CLI_ATTACKS}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", CLI_ATTACKS)
def test_attack_through_the_console_script(name, cli_results):
    r, files = cli_results[name]
    piece = BY_NAME[name][1]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert files == []  # nothing written: no "pwned"
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jactensor check-formula: FormulaError:"), r.stderr
    assert piece in lines[0]
    assert r.stdout == ""


def test_readme_placeholder_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "jactensor", "check-formula", "--program", "softmax-whole", "--wrt", "Q",
                        "dS[i,j]/dQ[c,d] = ..."], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 2
    assert "'...'" in r.stderr and "placeholder, not a formula" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_quote_points_at_the_character(softmax_case):
    Q, K, env = softmax_case
    formula = "dS[i,j]/dQ[c,d] = S[i,j] * (delta(i,c) * K[d,j] - sum_s(S[c,s] * K[d,s].T))"
    with pytest.raises(FormulaError, match=r"'K\[d,s\]\.T' \(at character (\d+)\)") as info:
        jt.check_formula(_whole, formula, Q, K, env=env)
    at = int(re.search(r"at character (\d+)", str(info.value)).group(1))
    assert at == formula.index("K[d,s].T") + 1
    # non-ASCII before the piece: positions count characters, not bytes
    formula = "dS[i,j]/dQ[c,d] = Sé[i,j] * K[d,j] + S[i,j].x"
    with pytest.raises(FormulaError) as info:
        jt.check_formula(_whole, formula, Q, K, env={**env, "Sé": env["S"]})
    at = int(re.search(r"'S\[i,j\]\.x' \(at character (\d+)\)", str(info.value)).group(1))
    assert at == formula.index("S[i,j].x") + 1
    with pytest.raises(FormulaError, match="'δ'"):
        jt.check_formula(_whole, "dS[i,j]/dQ[c,d] = δ(i,c) * K[d,j]", Q, K, env=env)


# ---------------------------------------------------------------------------------------------
# malformed formulas that are not attacks: each says what is wrong


@pytest.mark.parametrize("formula, pattern", [
    ("dS[i,j]/dQ[c,d] = S[i,j] * K[d,t]", r"\['t'\] are neither on the left side nor summed.*'K\[d,t\]'.*sum_t"),
    ("dS[i,j]/dQ[c,d] = S[i,j,c]", r"S has shape \(3, 3\) \(2 axes\) but 'S\[i,j,c\]'.* 3 index"),
    ("dS[i,j]/dQ[c,d] = S[i,d] * K[d,j]", r"index d has length 3 from 'S\[i,d\]'.* but length 2 in 'K\[d,j\]'"),
    ("dS[i,j]/dQ[c,d] = delta(i,c) * Q[d,j]", r"index j has length 3 in the Jacobian .* but length 2 in 'Q\[d,j\]'"),
    ("dS[i,j]/dQ[c,d] = W[i,j]", r"'W'.*known names: A, K, Q, S"),
    ("dS[i,j]/dQ[c,d] = S[i,j] * i", r"index i stands alone at 'i'"),
    ("dS[i,j]/dQ[c,d] = S", r"S at 'S' .* is a tensor of shape \(3, 3\); index it"),
    ("dS[i,j]/dQ[c,d] = sum_i(S[i,j])", r"'sum_i'.*i is an index of the left side"),
    ("dS[i,j]/dQ[c,d] = sum_ss(S[s,j])", r"'sum_ss'.*names s twice"),
    ("dS[i,j]/dQ[c,d] = sum_s(sum_s(S[s,j]))", r"enclosing sum already sums over s"),
    ("dS[i,j]/dQ[c,d] = sum_(S[i,j])", r"'sum_'.*name the summed indices"),
    ("dS[i,j]/dQ[c,d] = sum_s(S[i,s], K[d,s])", r"sum_s with 2 arguments"),
    ("dS[i,j]/dQ[c,d] = delta(i)", r"'delta\(i\)'.*two indices"),
    ("dS[i,j]/dQ[c,d] = delta(i, 1)", r"delta argument '1'"),
    ("dS[i,j]/dQ[c,d] = exp(S[i,j], S[i,j])", r"exp with 2 arguments"),
    ("dS[i,j]/dQ[c,d] = exp * S[i,j]", r"exp without parentheses"),
    ("dS[i,j]/dQ[c,d] = S[i,j] ** K[d,j]", r"exponent 'K\[d,j\]'"),
    ("dS[i,j]/dQ[c,d] = S[i,j] @ K[d,j]", r"operator '@'"),
    ("dS[i,j]/dQ[c,d] = ~S[i,j]", r"operator '~'"),
    ("dS[i,j]/dQ[c,d] = True * S[i,j]", r"'True'"),
    ("dS[i,j]/dQ[c,d] = 1j * S[i,j]", r"'1j'"),
    ("dS[i,j]/dQ[c,d] = ", r"right side after '=' is empty"),
    ("dS[i,j]/dQ[c,d] = sum_t(delta(t,c))", r"cannot tell the length of index/indices \['t'\]"),
    ("dS[i,j] = S[i,j]", r"left side 'dS\[i,j\]' must look like dY\[i,j\]/dX\[r,s\]"),
    ("dS[i,j]/Q[c,d] = S[i,j]", r"must look like dY\[i,j\]/dX\[r,s\]"),
    ("dS[i,i]/dQ[c,d] = S[i,i]", r"uses index i more than once"),
    ("dS[i,j]/dQ[c,0] = S[i,j]", r"'0'.* where an index belongs"),
    ("dS[i,j]/dQ[c] = S[i,j]", r"gives dS 2 index/indices and dQ 1.*\(3, 3\).*\(3, 2\)"),
    ("dS[i,j]/dK[c,d] = S[i,j]", r"with respect to K \(argument 1 of f\), but argnum=0 is Q; pass argnum=1"),
    ("= S[i,j]", r"left side before '=' is empty"),
    ("S[i,j] * K[d,j]", r"give the output indices"),
    ("dS[i,j]/dQ[c,d] = S[i,j] +", r"cannot read the right side 'S\[i,j\] \+'"),
    ("dS[i,j]/dQ[c,d] = " + "9" * 5000, r"cannot read the right side"),
])
def test_malformed_formula_says_what_is_wrong(formula, pattern, softmax_case):
    Q, K, env = softmax_case
    with pytest.raises(FormulaError, match=pattern) as info:
        jt.check_formula(_whole, formula, Q, K, env=env)
    assert "\n" not in str(info.value)


def test_formula_errors_are_value_errors_and_bad_arguments(softmax_case):
    Q, K, env = softmax_case
    with pytest.raises(ValueError, match="neither on the left side nor summed"):
        jt.check_formula(_whole, "dS[i,j]/dQ[c,d] = S[i,t]", Q, K, env=env)
    with pytest.raises(FormulaError, match="env must be a dict"):
        jt.check_formula(_whole, RIGHT, Q, K, env=[("S", env["S"])])
    with pytest.raises(FormulaError, match="index formula .* or a function"):
        jt.check_formula(_whole, 3.0, Q, K, env=env)
    with pytest.raises(FormulaError, match="indices='ij rs'|indices=.*must name"):
        jt.check_formula(_whole, "S[i,j]", Q, K, env=env, indices="i+j")
    with pytest.raises(FormulaError, match="repeats an index"):
        jt.check_formula(_whole, "S[i,j]", Q, K, env=env, indices="iijj")
    with pytest.raises(FormulaError, match="'S'.*dtype complex128"):
        jt.check_formula(_whole, RIGHT, Q, K, env={"S": env["S"] + 0j})
    with pytest.raises(FormulaError, match="must be a string"):
        evaluate_formula(b"dA[i]/dB[j] = 1", {})
    with jt.config.override(max_jacobian_bytes=1024), \
            pytest.raises(FormulaError, match="162 float64 entries, over config.max_jacobian_bytes"):
        evaluate_formula("dS[i,j]/dQ[c,d] = sum_s(S[i,j] * S[c,s] * K[d,s])", {**env, "K": K}, shape=(3, 3, 3, 2))


# ---------------------------------------------------------------------------------------------
# the numbers


def _softmax_whole_truth(Q, K):
    return _fd(lambda q: _np_softmax(q @ K), Q)


def test_worked_example_whole_softmax_right_and_wrong(softmax_case):
    Q, K, env = softmax_case
    A, S = env["A"], env["S"]
    truth = _softmax_whole_truth(Q, K)
    # S[i,j] (delta(i,c) K[d,j] - sum_s S[c,s] K[d,s]), built with einsum
    right = (np.einsum("ij,ic,dj->ijcd", S, np.eye(3), K) - np.einsum("ij,cs,ds->ijcd", S, S, K))
    np.testing.assert_allclose(right, truth, atol=1e-8)
    np.testing.assert_allclose(evaluate_formula(RIGHT, {**env, "K": K}), right, atol=1e-14)
    rep = jt.check_formula(_whole, RIGHT, Q, K, env=env)
    assert rep.ok and rep.max_error < 1e-12 and "CORRECT" in str(rep)
    # the wrong derivation: delta(i,c) K[d,j] - sum_s A[i,j] A[c,s] K[d,s]
    wrong = np.einsum("ic,dj->ijcd", np.eye(3), K) - np.einsum("ij,cs,ds->ijcd", A, A, K)
    np.testing.assert_allclose(evaluate_formula(WRONG, {**env, "K": K}), wrong, atol=1e-13)
    rep = jt.check_formula(_whole, WRONG, Q, K, env=env)
    diff = np.abs(wrong - right)
    assert not rep.ok
    assert rep.worst == np.unravel_index(np.argmax(diff), diff.shape)
    assert rep.max_error == pytest.approx(diff.max(), rel=1e-9)
    bad = np.argwhere(diff > 1e-8 * max(1.0, np.abs(right).max()))
    assert rep.n_bad == len(bad)
    assert [m[0] for m in rep.mismatches] == [tuple(b) for b in bad[:5]]
    for idx, e, g in rep.mismatches:
        assert e == pytest.approx(right[idx], abs=1e-12) and g == pytest.approx(wrong[idx], abs=1e-12)
    assert f"at index {rep.worst}" in str(rep)


def test_worked_example_rowwise_softmax(softmax_case):
    Q, K, _ = softmax_case
    A = Q @ K
    S = _np_softmax(A, axis=1)
    row = lambda Q, K: jt.softmax(Q @ K, axis=-1)  # noqa: E731
    truth = _fd(lambda q: _np_softmax(q @ K, axis=1), Q)
    np.testing.assert_allclose(evaluate_formula(RIGHT_ROW, {"S": S, "K": K}, shape=(3, 3, 3, 2)), truth, atol=1e-8)
    assert jt.check_formula(row, RIGHT_ROW, Q, K, env={"S": S}).ok
    # the whole-matrix formula is wrong for the row-wise softmax, off the block diagonal first
    rep = jt.check_formula(row, RIGHT, Q, K, env={"S": S})
    assert not rep.ok


def test_matmul_both_arguments(softmax_case):
    Q, K, _ = softmax_case
    f = lambda Q, K: Q @ K  # noqa: E731
    dQ = np.einsum("ir,sj->ijrs", np.eye(3), K)
    dK = np.einsum("ir,sj->ijrs", Q, np.eye(3))
    np.testing.assert_array_equal(evaluate_formula("dA[i,j]/dQ[r,s] = delta(i,r) * K[s,j]", {"K": K},
                                                   shape=(3, 3, 3, 2)), dQ)
    np.testing.assert_array_equal(evaluate_formula("dA[i,j]/dK[r,s] = Q[i,r] * delta(s,j)", {"Q": Q},
                                                   shape=(3, 3, 2, 3)), dK)
    assert jt.check_formula(f, "dA[i,j]/dQ[r,s] = delta(i,r) * K[s,j]", Q, K).ok
    assert jt.check_formula(f, "dA[i,j]/dK[r,s] = Q[i,r] * delta(s,j)", Q, K, argnum=1).ok
    # transposed by mistake: WRONG, and the report's worst entry is where the two differ most
    rep = jt.check_formula(f, "dA[i,j]/dQ[r,s] = delta(j,r) * K[s,i]", Q, K)
    given = np.einsum("jr,si->ijrs", np.eye(3), K)
    diff = np.abs(given - dQ)
    assert not rep.ok and rep.worst == np.unravel_index(np.argmax(diff), diff.shape)


def test_scalar_constant_from_env():
    rng = np.random.default_rng(3)
    S = rng.normal(size=(3, 3))
    C = 0.5
    f = lambda S: C * S  # noqa: E731
    truth = C * np.einsum("ir,js->ijrs", np.eye(3), np.eye(3))
    formula = "dB[i,j]/dS[r,s] = C * delta(i,r) * delta(j,s)"
    np.testing.assert_array_equal(evaluate_formula(formula, {"C": C}, shape=(3, 3, 3, 3)), truth)
    assert jt.check_formula(f, formula, S, env={"C": C}).ok
    rep = jt.check_formula(f, formula, S, env={"C": 0.7})
    assert not rep.ok and rep.n_bad == 9 and rep.worst == (0, 0, 0, 0)
    assert rep.mismatches[0] == ((0, 0, 0, 0), 0.5, 0.7)
    assert jt.check_formula(f, "dB[i,j]/dS[r,s] = 0.5 * delta(i,r) * delta(j,s)", S).ok


def test_repeated_letter_takes_the_diagonal():
    rng = np.random.default_rng(4)
    M = rng.normal(size=(3, 3))
    T = rng.normal(size=(3, 3, 2))
    np.testing.assert_array_equal(evaluate_formula("M[a,a]", {"M": M}, indices="a"), np.diag(M))
    np.testing.assert_array_equal(evaluate_formula("T[a,a,b]", {"T": T}, indices="ab"),
                                  np.stack([T[k, k] for k in range(3)]))
    np.testing.assert_array_equal(evaluate_formula("T[a,a,b]", {"T": T}, indices="ba"),
                                  np.stack([T[k, k] for k in range(3)]).T)
    # d/dM of sum_a M[a,a]^2 is 2 M[b,b] delta(b,c)
    f = lambda M: jt.sum(jt.einsum("aa->a", M) ** 2)  # noqa: E731
    formula = "dL/dM[b,c] = 2 * M[b,b] * delta(b,c)"
    np.testing.assert_allclose(evaluate_formula(formula, {"M": M}, shape=(3, 3)), np.diag(2 * np.diag(M)), atol=0)
    np.testing.assert_allclose(_fd(lambda m: np.sum(np.diag(m) ** 2), M), np.diag(2 * np.diag(M)), atol=1e-8)
    assert jt.check_formula(f, formula, M).ok
    assert not jt.check_formula(f, "dL/dM[b,c] = 2 * M[b,c] * delta(b,c) + M[b,c]", M).ok


def test_sum_over_two_letters():
    rng = np.random.default_rng(5)
    x, W = rng.normal(size=4), rng.normal(size=(4, 4))
    f = lambda x, W: x * (x @ W @ x)  # noqa: E731
    # Y[i] = x[i] sum_st W[s,t] x[s] x[t]
    formula = ("dY[i]/dx[c] = delta(i,c) * sum_st(W[s,t] * x[s] * x[t]) "
               "+ x[i] * (sum_t(W[c,t] * x[t]) + sum_s(W[s,c] * x[s]))")
    truth = _fd(lambda v: v * (v @ W @ v), x)
    np.testing.assert_allclose(evaluate_formula(formula, {"x": x, "W": W}), truth, atol=1e-7)
    assert jt.check_formula(f, formula, x, W).ok
    # forgetting the transpose term: WRONG
    assert not jt.check_formula(f, formula.replace(" + sum_s(W[s,c] * x[s])", ""), x, W).ok
    # a sum over a letter the summand lacks counts each term once per value of that letter
    np.testing.assert_allclose(evaluate_formula("sum_t(W[s,i]) + 0 * sum_t(x[t])", {"W": W, "x": x}, indices="is"),
                               4 * W.T)


def test_functions_and_powers():
    rng = np.random.default_rng(6)
    x = np.abs(rng.normal(size=5)) + 0.3
    names = {"x": x}
    for fn, ref in [("exp", np.exp), ("log", np.log), ("sqrt", np.sqrt), ("tanh", np.tanh), ("abs", np.abs),
                    ("sin", np.sin), ("cos", np.cos)]:
        np.testing.assert_array_equal(evaluate_formula(f"{fn}(-x[i]) * 1", {"x": -x}, indices="i"), ref(x))
    np.testing.assert_allclose(evaluate_formula("x[i] ** 2.5 + x[i] ** -1 - (x[i]) ** (1/2)", names, indices="i"),
                               x ** 2.5 + 1 / x - np.sqrt(x))
    f = lambda x: jt.exp(x) * jt.tanh(x) + jt.log(x) / jt.sqrt(x)  # noqa: E731
    # d/dx of exp(x) tanh(x) + log(x) x^(-1/2), elementwise
    formula = ("dY[i]/dx[c] = delta(i,c) * (exp(x[i]) * tanh(x[i]) + exp(x[i]) * (1 - tanh(x[i]) ** 2)"
               " + 1 / (x[i] * sqrt(x[i])) - log(x[i]) / (2 * x[i] ** 1.5))")
    truth = _fd(lambda v: np.exp(v) * np.tanh(v) + np.log(v) / np.sqrt(v), x)
    np.testing.assert_allclose(evaluate_formula(formula, names, shape=(5, 5)), truth, atol=1e-7)
    assert jt.check_formula(f, formula, x).ok
    assert not jt.check_formula(f, formula.replace("2 * x[i]", "x[i]"), x).ok
    g = lambda x: x ** 3  # noqa: E731
    assert jt.check_formula(g, "dY[i]/dx[c] = 3 * x[i] ** 2 * delta(i,c)", x).ok
    assert jt.check_formula(g, "dY[i]/dx[c] = -3 * -x[i] ** 2 * delta(i,c)", x).ok  # ** binds tighter than -


def test_nan_and_inf_count_as_mismatches(softmax_case):
    Q, K, _ = softmax_case
    rep = jt.check_formula(lambda Q, K: Q @ K, "dA[i,j]/dQ[r,s] = delta(i,r) * K[s,j] * sqrt(-1)", Q, K)
    assert not rep.ok and rep.n_bad == 54 and np.isnan(rep.mismatches[0][2])
    rep = jt.check_formula(lambda Q, K: Q @ K, "dA[i,j]/dQ[r,s] = delta(i,r) * K[s,j] / delta(i,j)", Q, K)
    assert not rep.ok


def test_rectangular_delta_and_scalar_sides():
    x = np.arange(5.0) + 1
    f = lambda x: x[:3]  # noqa: E731
    np.testing.assert_array_equal(evaluate_formula("delta(i,c)", {}, indices="ic", shape=(3, 5)), np.eye(3, 5))
    assert jt.check_formula(f, "dY[i]/dx[c] = delta(i,c)", x).ok
    # a scalar output takes no brackets
    L = lambda x: jt.sum(x ** 2)  # noqa: E731
    assert jt.check_formula(L, "dL/dx[c] = 2 * x[c]", x).ok
    assert not jt.check_formula(L, "dL/dx[c] = x[c]", x).ok


def test_indices_argument_and_multiline_formula(softmax_case):
    Q, K, env = softmax_case
    rhs = RIGHT.split("=", 1)[1]
    assert jt.check_formula(_whole, rhs, Q, K, env=env, indices="ijcd").ok
    assert jt.check_formula(_whole, rhs, Q, K, env=env, indices=["i", "j", "c", "d"]).ok
    assert jt.check_formula(_whole, rhs, Q, K, env=env, indices="i,j,c,d").ok
    # other axis order: the formula is then a different tensor
    assert not jt.check_formula(_whole, rhs, Q, K, env=env, indices="jicd").ok
    multiline = "dS[i,j]/dQ[c,d] = S[i,j] * (delta(i,c) * K[d,j]\n    - sum_s(S[c,s] * K[d,s]))"
    assert jt.check_formula(_whole, multiline, Q, K, env=env).ok
    # index names may carry digits
    assert jt.check_formula(_whole, "dS[i1,j1]/dQ[c1,d1] = S[i1,j1] * (delta(i1,c1) * K[d1,j1] "
                                    "- sum_s1(S[c1,s1] * K[d1,s1]))", Q, K, env=env).ok


def test_function_arguments_are_names(softmax_case):
    Q, K, _ = softmax_case

    def f(Q, K, *rest):
        return Q @ K

    # *rest is not a name; Q and K are
    assert jt.check_formula(f, "dA[i,j]/dQ[r,s] = delta(i,r) * K[s,j]", Q, K).ok
    with pytest.raises(FormulaError, match="'rest'"):
        jt.check_formula(f, "dA[i,j]/dQ[r,s] = rest[i,r]", Q, K)
