"""Every public method of Jacobian against the dense route, on random structured Jacobians.

A random Jacobian is a list of terms, each ``coef * einsum(factors)`` on random axis labels: repeated
labels (deltas, also between two output or two input axes), labels no factor carries (all-ones couplings),
factors on labels no axis carries (contracted away), 0-d factors, scalar-only terms, rank-one terms (one
factor on output labels times one on input labels) and factors with length-1 axes that broadcast. The
reference dense tensor is built here from the same description with plain ``np.einsum`` and identity
matrices, independently of the engine; every method must agree with the same operation on it.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jactensor as jt
from jactensor import Jacobian

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(0, 2**32 - 1)


# ---- random structured Jacobians and their dense reference ------------------------------------------------
def random_shape(rng, max_ndim=2):
    nd = int(rng.integers(0, max_ndim + 1))
    return tuple(int(rng.choice([0, 1, 2, 3, 4], p=[0.05, 0.2, 0.3, 0.25, 0.2])) for _ in range(nd))


def random_term(rng, shape, n_out, kind=None):
    """(coef, labels, [(array, factor labels)]) with labels drawn for the axes of ``shape``."""
    labels, sizes = [], {}
    for p, n in enumerate(shape):
        same = [l for l in dict.fromkeys(labels) if sizes[l] == n]
        if same and rng.random() < 0.45:
            labels.append(same[int(rng.integers(len(same)))])       # a delta
        else:
            labels.append(len(sizes))
            sizes[len(sizes)] = n
    kind = kind or str(rng.choice(["general", "scalar", "zero-d", "rank-one", "internal", "broadcast"]))
    distinct = list(dict.fromkeys(labels))
    coef = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0))

    def factor(ls, zeros=True):
        a = rng.normal(size=[sizes[l] for l in ls])
        if zeros and a.size > 1 and rng.random() < 0.3:
            a[np.unravel_index(int(rng.integers(a.size)), a.shape)] = 0.0  # a numerical zero (nnz sees it)
        return a, tuple(ls)

    def subset():
        k = int(rng.integers(1, len(distinct) + 1)) if distinct else 0
        return list(rng.permutation(distinct)[:k]) if k else []

    factors = []
    if kind == "general":
        factors = [factor(subset()) for _ in range(int(rng.integers(1, 4)))]
    elif kind == "zero-d":
        factors = [(np.array(rng.normal()), ())] + ([factor(subset())] if rng.random() < 0.5 else [])
    elif kind == "rank-one":
        outs = list(dict.fromkeys(labels[:n_out]))
        ins = [l for l in dict.fromkeys(labels[n_out:]) if l not in outs]
        factors = [factor(outs), factor(ins)]
    elif kind == "internal":
        k = 1000 + len(sizes)
        sizes[k] = int(rng.integers(1, 4))
        a, b = subset(), subset()
        factors = [factor(a + [k]), factor([k] + b)]
    elif kind == "broadcast":
        ls = subset()
        a, ls = factor(ls, zeros=False)
        long = [k for k, l in enumerate(ls) if sizes[l] > 1]
        if long:
            a = a.take([0], axis=long[int(rng.integers(len(long)))])  # length 1 where the label is longer
        factors = [(a, ls)] + ([factor(subset())] if rng.random() < 0.5 else [])
    return coef, tuple(labels), [(np.array(a, dtype=np.float64), ls) for a, ls in factors]


def random_spec(rng, out_shape, in_shape, n_terms=None, kinds=None):
    n_terms = int(rng.integers(0, 5)) if n_terms is None else n_terms
    shape = tuple(out_shape) + tuple(in_shape)
    return [random_term(rng, shape, len(out_shape), None if kinds is None else str(rng.choice(kinds)))
            for _ in range(n_terms)]


def build(out_shape, in_shape, spec):
    terms = []
    for coef, labels, factors in spec:
        terms += Jacobian.from_labels(out_shape, in_shape, labels, factors, coef=coef).terms
    return Jacobian(out_shape, in_shape, terms)


def term_dense(shape, coef, labels, factors):
    """coef * einsum(factors) with a delta (an identity matrix) from each axis to its label."""
    sizes = dict(zip(labels, shape))
    for a, ls in factors:
        for l, n in zip(ls, np.shape(a)):
            if l not in sizes or sizes[l] == 1:
                sizes[l] = max(n, sizes.get(l, 1))
    ids = {l: k for k, l in enumerate(sizes)}
    axes = [len(ids) + p for p in range(len(shape))]
    operands = []
    for a, ls in factors:
        operands += [np.broadcast_to(a, [sizes[l] for l in ls]), [ids[l] for l in ls]]
    for p, l in enumerate(labels):
        operands += [np.eye(sizes[l]), [ids[l], axes[p]]]
    if not operands:
        return np.full(shape, coef)
    return coef * np.einsum(*operands, axes)


def dense(out_shape, in_shape, spec):
    shape = tuple(out_shape) + tuple(in_shape)
    R = np.zeros(shape)
    for coef, labels, factors in spec:
        R = R + term_dense(shape, coef, labels, factors)
    return R


def random_jacobian(rng, out_shape=None, in_shape=None, **kw):
    out_shape = random_shape(rng) if out_shape is None else out_shape
    in_shape = random_shape(rng) if in_shape is None else in_shape
    spec = random_spec(rng, out_shape, in_shape, **kw)
    return build(out_shape, in_shape, spec), dense(out_shape, in_shape, spec), spec


def close(a, b, err_msg=""):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), b, rtol=1e-12, atol=1e-12, err_msg=err_msg)


def test_the_reference_itself():
    """The einsum-with-identities reference against hand-written tensors."""
    K = np.arange(6.0).reshape(2, 3)
    ref = dense((3, 3), (3, 2), [(1.0, (0, 1, 0, 2), [(K, (2, 1))])])
    np.testing.assert_array_equal(ref, np.einsum("ir,sj->ijrs", np.eye(3), K))
    a, b = np.arange(1.0, 4.0), np.arange(4.0, 6.0)
    np.testing.assert_array_equal(dense((3,), (2,), [(2.0, (0, 1), [(a, (0,)), (b, (1,))])]), 2 * np.outer(a, b))
    np.testing.assert_array_equal(dense((2,), (2,), [(3.0, (0, 0), [])]), 3 * np.eye(2))
    np.testing.assert_array_equal(dense((2,), (), [(1.0, (0,), [(np.array(5.0), ())])]), [5.0, 5.0])
    M = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(dense((3,), (), [(1.0, (0,), [(M, (0, 9))])]), M.sum(1))  # contracted label 9


# ---- properties of random Jacobians -------------------------------------------------------------------------------
@SETTINGS
@given(seed=SEEDS)
def test_dense_views_and_sizes(seed):
    rng = np.random.default_rng(seed)
    J, R, spec = random_jacobian(rng)
    close(J.dense(), R)
    close(np.asarray(J), R)
    assert J.shape == R.shape and J.ndim == R.ndim and J.size == R.size and J.nbytes == 8 * R.size
    assert type(J.nbytes) is int and J.dtype == np.float64
    assert J.out_shape + J.in_shape == R.shape
    m, n = int(np.prod(J.out_shape)), int(np.prod(J.in_shape))
    close(J.as_matrix(), R.reshape(m, n))
    assert J.stored_bytes <= sum(a.nbytes for _, _, fs in spec for a, _ in fs)
    close(J.densified().dense(), R)
    assert len(J.densified().terms) == 1
    close(J.compact().dense(), R, "compact")
    assert all(len(t.factors) <= 1 for t in J.compact().terms)
    close(J.merged().dense(), R, "merged")
    assert len(J.merged().terms) <= 1


@SETTINGS
@given(seed=SEEDS)
def test_vjp_and_jvp(seed):
    rng = np.random.default_rng(seed)
    J, R, _ = random_jacobian(rng)
    no = len(J.out_shape)
    u, t = rng.normal(size=J.out_shape), rng.normal(size=J.in_shape)
    close(J.vjp(u), np.tensordot(u, R, axes=(list(range(no)), list(range(no)))), "vjp")
    close(J.jvp(t), np.tensordot(R, t, axes=(list(range(no, R.ndim)), list(range(t.ndim)))), "jvp")
    for op in ("vjp", "jvp"):
        for M in (J.compact(), J.merged()):
            v = u if op == "vjp" else t
            close(getattr(M, op)(v), getattr(J, op)(v), op)
    with pytest.raises(jt.ShapeError):
        J.vjp(np.zeros(J.out_shape + (2,)))
    with pytest.raises(jt.ShapeError):
        J.jvp(np.zeros((2,) + J.in_shape))


def test_rectangular_jacobian_vjp_and_jvp(rng):
    """J v and u J for a (2, 3) x (3,) Jacobian and a square non-symmetric one (J^T t would differ)."""
    A = rng.normal(size=(2, 3, 3))
    J = Jacobian.from_dense(A, 2)
    t, u = rng.normal(size=3), rng.normal(size=(2, 3))
    close(J.jvp(t), A @ t)
    close(J.vjp(u), np.einsum("ij,ijk->k", u, A))
    M = np.triu(rng.normal(size=(4, 4))) + 3 * np.eye(4)
    S = Jacobian.from_dense(M, 1)
    close(S.jvp(np.arange(4.0)), M @ np.arange(4.0))
    close(S.vjp(np.arange(4.0)), np.arange(4.0) @ M)
    K = rng.normal(size=(2, 3))
    D = Jacobian.from_labels((3, 3), (3, 2), "ijis", [(K, "sj")])   # dA/dQ of A = Q K, structured
    T = rng.normal(size=(3, 2))
    close(D.jvp(T), T @ K)
    close(D.vjp(rng.normal(size=(3, 3))).shape, np.zeros((3, 2)).shape)


@SETTINGS
@given(seed=SEEDS)
def test_arithmetic(seed):
    rng = np.random.default_rng(seed)
    J, R, _ = random_jacobian(rng)
    K, S, _ = random_jacobian(rng, J.out_shape, J.in_shape)
    c = float(rng.uniform(0.5, 3.0))
    close((J + K).dense(), R + S, "+")
    close((J - K).dense(), R - S, "-")
    close((-J).dense(), -R, "neg")
    close((+J).dense(), R, "pos")
    close((J * c).dense(), R * c, "J * c")
    close((c * J).dense(), c * R, "c * J")
    close((J * np.float64(c)).dense(), R * c, "J * np.float64")
    close((J / c).dense(), R / c, "/")
    close((J + J + J + J + J + K).dense(), 5 * R + S, "many terms")   # past config.max_terms: compacted
    with jt.config.override(max_terms=1):
        close((J + K + J).dense(), 2 * R + S, "max_terms=1")
    with pytest.raises(jt.ShapeError):
        J + Jacobian.zeros(J.out_shape + (1,), J.in_shape)
    with pytest.raises(TypeError):
        J + 1.0  # a number is not a Jacobian


@SETTINGS
@given(seed=SEEDS, length=st.integers(2, 4))
def test_chain_of_random_jacobians(seed, length):
    rng = np.random.default_rng(seed)
    shapes = [random_shape(rng) for _ in range(length + 1)]
    pairs = [random_jacobian(rng, shapes[k], shapes[k + 1]) for k in range(length)]  # outermost first
    ref = pairs[0][1]
    for k in range(1, length):
        nmid = len(shapes[k])
        ref = np.tensordot(ref, pairs[k][1], axes=(list(range(ref.ndim - nmid, ref.ndim)), list(range(nmid))))
    jacs = [p[0] for p in pairs]
    C = jt.chain(*jacs)
    assert C.out_shape == shapes[0] and C.in_shape == shapes[-1]
    close(C.dense(), ref, "chain")
    close(jt.chain(*jacs, dense=True).dense(), ref, "chain dense=True")
    for order in ("forward", "reverse"):
        close(jt.chain(*jacs, order=order).dense(), ref, order)
    close(jt.chain(*[J.compact() for J in jacs]).dense(), ref, "chain of compacted")
    assert C.plan.chosen.flops <= min(C.plan.forward.flops, C.plan.reverse.flops)
    assert jt.chain_plan(*jacs).chosen.flops == C.plan.chosen.flops


def test_chain_keeps_the_count_of_a_broadcast_summed_away():
    """d/dy sum(broadcast_to(y, (5,))) = 5: the broadcast axis is summed with no factor on it."""
    (Jb,) = jt.broadcast_to.jacobian(np.array(2.0), (5,))
    (Js,) = jt.sum.jacobian(np.ones(5))
    assert float(np.asarray(jt.chain(Js, Jb))) == 5.0
    for m in ("chain", "rev", "fwd"):
        assert jt.jacobian(lambda y: jt.sum(jt.broadcast_to(y, (5,))), method=m)(2.0) == 5.0
    a, b = Jacobian.from_labels((), (3,), (0,)), Jacobian.from_labels((3,), (4,), (0, 1))  # all-ones couplings
    close(jt.chain(a, b).dense(), np.full((4,), 3.0))


@pytest.mark.parametrize("kind", ["zero-d", "scalar"])
def test_compact_sums_terms_with_zero_d_factors(kind):
    """Terms of one pattern whose factors are 0-d (or absent) are folded into one: every value counts."""
    spec = [(2.0, (0, 0), [(np.array(3.0), ())]), (1.0, (0, 0), [(np.array(-0.5), ())] if kind == "zero-d" else []),
            (0.5, (0, 0), [(np.array(4.0), ()), (np.array(2.0), ())])]
    J = build((3,), (3,), spec)
    expected = (6.0 + (-0.5 if kind == "zero-d" else 1.0) + 4.0) * np.eye(3)
    close(dense((3,), (3,), spec), expected)
    close(J.compact().dense(), expected)
    close(J.merged().dense(), expected)
    close((J + J).compact().dense(), 2 * expected)


# ---- constructors ------------------------------------------------------------------------------------------------
def test_constructors(rng):
    A = rng.normal(size=(2, 3, 4))
    for k in range(4):
        J = Jacobian.from_dense(A, k)
        assert J.out_shape == A.shape[:k] and J.in_shape == A.shape[k:]
        np.testing.assert_array_equal(J.dense(), A)
    with pytest.raises(jt.ShapeError):
        Jacobian.from_dense(A, 4)
    I = Jacobian.identity((2, 3))
    np.testing.assert_array_equal(I.as_matrix(), np.eye(6))
    assert I.stored_bytes == 0
    Z = Jacobian.zeros((2,), (3, 1))
    np.testing.assert_array_equal(Z.dense(), np.zeros((2, 3, 1)))
    close(Z.vjp(np.ones(2)), np.zeros((3, 1)))
    close(Z.jvp(np.ones((3, 1))), np.zeros(2))
    K = rng.normal(size=(2, 3))
    J = Jacobian.from_labels((3, 3), (3, 2), "ijis", [(K, "sj")])
    np.testing.assert_array_equal(J.dense(), np.einsum("ir,sj->ijrs", np.eye(3), K))
    with pytest.raises(jt.ShapeError):
        Jacobian.from_labels((3,), (2,), "ii")            # one label on axes of lengths 3 and 2
    with pytest.raises(jt.ShapeError):
        Jacobian.from_labels((3,), (2,), "ij", [(np.ones(4), "i")])


# ---- the structure-preserving algebra (J.T, diagonal, trace, batch_diagonal, nnz, to_sparse) ---------------------
def _algebra():
    return pytest.importorskip("jactensor.algebra", reason="the Jacobian algebra module is not there yet")


@SETTINGS
@given(seed=SEEDS)
def test_transpose(seed):
    _algebra()
    rng = np.random.default_rng(seed)
    J, R, _ = random_jacobian(rng)
    no = len(J.out_shape)
    T = J.T
    assert T.out_shape == J.in_shape and T.in_shape == J.out_shape
    close(T.dense(), np.transpose(R, list(range(no, R.ndim)) + list(range(no))))
    close(T.T.dense(), R)
    v = rng.normal(size=J.out_shape)
    close(T.jvp(v), J.vjp(v))
    M = R.reshape(int(np.prod(J.out_shape)), int(np.prod(J.in_shape)))
    close(jt.chain(J.T, J).as_matrix(), M.T @ M)


@SETTINGS
@given(seed=SEEDS)
def test_diagonal_and_trace(seed):
    _algebra()
    rng = np.random.default_rng(seed)
    shape = random_shape(rng, 3)
    J, R, _ = random_jacobian(rng, shape, shape)
    m = int(np.prod(shape))
    M = R.reshape(m, m)
    close(J.diagonal(), np.diagonal(M).reshape(shape))
    close(J.trace(), np.trace(M))
    with pytest.raises(jt.ShapeError):
        Jacobian.zeros((2,), (3,)).diagonal()
    with pytest.raises(jt.ShapeError):
        Jacobian.zeros((2,), (2, 1)).trace()


@SETTINGS
@given(seed=SEEDS)
def test_algebra_and_materialising_never_write_into_factors(seed):
    """Reading a Jacobian leaves its factors (often the caller's own arrays) as they were: a one-operand
    einsum returns a view (a diagonal), which a scaled copy once multiplied in place."""
    _algebra()
    rng = np.random.default_rng(seed)
    shape = random_shape(rng, 3)
    J, R, _ = random_jacobian(rng, shape, shape)
    J = 1.5 * J
    before = [np.array(a, copy=True) for t in J.terms for a, _ in t.factors]
    m = int(np.prod(shape))
    M = 1.5 * R.reshape(m, m)
    close(J.diagonal(), np.diagonal(M).reshape(shape))
    close(J.trace(), np.trace(M))
    close(J.dense(), 1.5 * R)
    close(jt.chain(J, J.T).dense().reshape(m, m), M @ M.T)
    assert J.nnz >= 0
    after = [a for t in J.terms for a, _ in t.factors]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_diagonal_of_a_scaled_dense_jacobian_leaves_the_array_alone():
    M = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal((2.0 * jt.Jacobian.from_dense(M, 1)).diagonal(), [0.0, 8.0, 16.0])
    np.testing.assert_array_equal(M, np.arange(9.0).reshape(3, 3))


def _batched_spec(rng, out_shape, in_shape, p, q):
    """Terms that all carry a delta between out axis p and in axis q (block-diagonal along them)."""
    spec = random_spec(rng, out_shape, in_shape, n_terms=int(rng.integers(1, 4)))
    no = len(out_shape)
    fixed = []
    for coef, labels, factors in spec:
        labels = list(labels)
        old = labels[no + q]
        labels[no + q] = labels[p]
        factors = [(a, tuple(labels[p] if l == old and old not in labels else l for l in ls)) for a, ls in factors]
        fixed.append((coef, tuple(labels), factors))
    return fixed


@SETTINGS
@given(seed=SEEDS)
def test_batch_diagonal(seed):
    _algebra()
    rng = np.random.default_rng(seed)
    B = int(rng.integers(1, 4))
    out_rest, in_rest = random_shape(rng, 1), random_shape(rng, 1)
    p, q = int(rng.integers(len(out_rest) + 1)), int(rng.integers(len(in_rest) + 1))
    out_shape = out_rest[:p] + (B,) + out_rest[p:]
    in_shape = in_rest[:q] + (B,) + in_rest[q:]
    spec = _batched_spec(rng, out_shape, in_shape, p, q)
    J, R = build(out_shape, in_shape, spec), dense(out_shape, in_shape, spec)
    expected = np.moveaxis(np.diagonal(R, axis1=p, axis2=len(out_shape) + q), -1, 0)
    close(J.batch_diagonal(p, q), expected)
    close(J.batch_diagonal(p - len(out_shape), q - len(in_shape)), expected)  # negative axes


def test_batch_diagonal_refuses_a_coupled_batch(rng):
    _algebra()
    X = rng.normal(size=(3, 2))
    (J,) = jt.softmax.jacobian(X, axis=0)   # softmax over the batch axis couples the examples
    with pytest.raises(jt.ShapeError, match="block-diagonal"):
        J.batch_diagonal(0, 0)
    R = np.asarray(J)
    close(J.batch_diagonal(0, 0, check=False), np.moveaxis(np.diagonal(R, axis1=0, axis2=2), -1, 0))
    (Jrow,) = jt.softmax.jacobian(X, axis=-1)  # row-wise: block-diagonal along the rows
    close(Jrow.batch_diagonal(), np.moveaxis(np.diagonal(np.asarray(Jrow), axis1=0, axis2=2), -1, 0))


@SETTINGS
@given(seed=SEEDS)
def test_nnz_counts_the_union_of_the_terms_supports(seed):
    _algebra()
    rng = np.random.default_rng(seed)
    out_shape, in_shape = random_shape(rng), random_shape(rng)
    spec = random_spec(rng, out_shape, in_shape)
    J = build(out_shape, in_shape, spec)
    shape = out_shape + in_shape
    support = np.zeros(shape, dtype=bool)
    for coef, labels, factors in spec:
        support |= term_dense(shape, coef, labels, factors) != 0
    assert J.nnz == int(support.sum())
    assert J.nnz >= np.count_nonzero(dense(out_shape, in_shape, spec))


@SETTINGS
@given(seed=SEEDS)
def test_to_sparse(seed):
    _algebra()
    pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(seed)
    J, R, _ = random_jacobian(rng)
    S = J.to_sparse()
    m, n = int(np.prod(J.out_shape)), int(np.prod(J.in_shape))
    assert S.shape == (m, n)
    close(S.toarray(), R.reshape(m, n))
    assert S.nnz == J.nnz  # exactly the structural non-zeros


def test_algebra_on_a_known_jacobian(rng):
    """The same methods on dA/dQ for A = Q K (delta(i,r) K[s,j]), by hand."""
    _algebra()
    Q, K = rng.normal(size=(3, 2)), rng.normal(size=(2, 2))
    (JQ, JK) = jt.matmul.jacobian(Q, K)
    R = np.einsum("ir,sj->ijrs", np.eye(3), K)
    close(JQ.T.dense(), R.transpose(2, 3, 0, 1))
    close(JQ.diagonal(), np.broadcast_to(np.diag(K), (3, 2)))   # R[i,j,i,j] = K[j,j]
    close(JQ.trace(), 3 * np.trace(K))
    close(JQ.batch_diagonal(), np.broadcast_to(K.T, (3, 2, 2)))
    assert JQ.nnz == 3 * np.count_nonzero(K)
