"""Indexing against numpy's own indexing applied to a basis, and against jax.numpy.

The Jacobian of x -> x[idx] is eye(x.size)[positions], with positions = arange(x.size).reshape(x.shape)[idx]:
numpy itself says which entry each output reads, independently of jactensor's rules.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jactensor as jt

from .test_ops_shape import METHODS, SETTINGS, arrays, axis_of, check_jax, check_numpy, close, make_array


# ---- random numpy index expressions ----------------------------------------------------------------------
@st.composite
def index_for(draw, shape):
    """A numpy index for ``shape``: ints (negative too), slices with any start/stop/step, None and Ellipsis
    anywhere, integer arrays (repeats, negative entries, lists too), boolean masks over one or two axes,
    0-d booleans; advanced indices adjacent or separated."""
    nd = len(shape)
    adv = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))  # shape the arrays broadcast to
    key, a, ell = [], 0, False
    for _ in range(draw(st.integers(0, 5))):
        kinds = ["none", "bool0"] + ([] if ell else ["ellipsis"]) + (["slice", "array", "mask"] if a < nd else [])
        if a < nd and shape[a]:
            kinds.append("int")
        kind = draw(st.sampled_from(kinds))
        if kind == "none":
            key.append(None)
        elif kind == "bool0":
            key.append(draw(st.booleans()))
        elif kind == "ellipsis":
            key.append(Ellipsis)
            ell = True
            a += draw(st.integers(0, nd - a))  # the axes the Ellipsis stands for
        elif kind == "int":
            key.append(draw(st.integers(-shape[a], shape[a] - 1)))
            a += 1
        elif kind == "slice":
            n = shape[a]
            bound = st.none() | st.integers(-n - 2, n + 2)
            key.append(slice(draw(bound), draw(bound), draw(st.none() | st.sampled_from([-3, -2, -1, 1, 2, 3]))))
            a += 1
        elif kind == "array":
            n = shape[a]
            s = tuple(1 if draw(st.booleans()) else d for d in adv[draw(st.integers(0, len(adv))):])
            ids = np.array(draw(st.lists(st.integers(-n, n - 1), min_size=int(np.prod(s)), max_size=int(np.prod(s))))
                           if n else [], dtype=int).reshape(s if n or not np.prod(s) else (0,))
            key.append(ids.tolist() if ids.ndim == 1 and draw(st.booleans()) else ids)
            a += 1
        else:
            k = 2 if a + 1 < nd and not ell and draw(st.booleans()) else 1
            key.append(np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(shape[a:a + k])),
                                              max_size=int(np.prod(shape[a:a + k]))))).reshape(shape[a:a + k]))
            a += k
    if ell:  # the entries after an Ellipsis read the last axes: consume them all, so the draw stays aligned
        key += [slice(None)] * (nd - a)
    try:
        np.broadcast_to(np.empty((), dtype=bool), shape)[tuple(key)]
    except (IndexError, ValueError):
        assume(False)  # arrays that do not broadcast together
    return key[0] if len(key) == 1 and draw(st.booleans()) else tuple(key)


@st.composite
def indexed(draw):
    x = draw(arrays(max_dims=4, max_side=4))
    return x, draw(index_for(x.shape))


def basis_reference(x, idx):
    """(value, Jacobian) of x -> x[idx] from numpy's indexing alone."""
    pos = np.arange(x.size).reshape(x.shape)[idx]
    J = np.eye(x.size)[pos.reshape(-1)].reshape(pos.shape + x.shape)
    return x[idx], J, pos


@settings(max_examples=250, **SETTINGS)
@given(case=indexed())
def test_getitem_against_numpy_on_a_basis(case):
    x, idx = case
    want, J, pos = basis_reference(x, idx)
    close(jt.getitem(x, idx), want, "value", atol=0)
    for m in METHODS:
        close(jt.jacobian(lambda x: x[idx], method=m)(x), J, f"jacobian method={m}", atol=0)
    w = np.random.default_rng(0).normal(size=want.shape)
    g = np.zeros(x.size)
    np.add.at(g, pos.reshape(-1), w.reshape(-1))  # repeated entries accumulate
    close(jt.grad(lambda x: jt.sum(w * jt.getitem(x, idx)))(x), g.reshape(x.shape), "grad")
    Jm = J.reshape(w.size, x.size)
    H = jt.hessian(lambda x: jt.sum(w * x[idx] ** 2))(x)
    close(H, (2 * (Jm.T * w.reshape(-1)) @ Jm).reshape(x.shape * 2), "hessian")


@settings(max_examples=30, **SETTINGS)
@given(case=indexed())
def test_getitem_against_jax(case):
    x, idx = case
    jidx = tuple(np.asarray(e) if isinstance(e, list) else e for e in (idx if isinstance(idx, tuple) else (idx,)))
    if any(isinstance(e, bool) for e in jidx):
        return  # jax.numpy does not take 0-d boolean indices; numpy is the reference for those
    check_jax(lambda lib, x: jt.getitem(x, jidx) if lib is jt else x[jidx], x)


# ---- the reported failures, pinned ------------------------------------------------------------------------
def test_integer_and_mask_separated_by_none():
    x = np.random.default_rng(3).random((2, 2))
    idx = (1, None, np.array([True, True]))
    _, J, _ = basis_reference(x, idx)
    for m in METHODS:
        np.testing.assert_array_equal(jt.jacobian(lambda x: jt.getitem(x, idx), method=m)(x), J)
    H = jt.hessian(lambda x: jt.sum(jt.getitem(x, idx) ** 2))(x)
    np.testing.assert_array_equal(H.reshape(4, 4), np.diag([0, 0, 2.0, 2.0]))


def test_integer_and_array_separated_by_a_slice():
    x = np.random.default_rng(4).random((2, 2, 3))
    idx = (0, slice(None), np.array([-1]))
    _, J, _ = basis_reference(x, idx)
    for m in METHODS:
        np.testing.assert_array_equal(jt.jacobian(lambda x: jt.getitem(x, idx), method=m)(x), J)


def test_array_before_ellipsis():
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(jt.getitem(x, (np.array([0, 2]), Ellipsis)), x[[0, 2], ...])


def test_negative_index_gradient_lands_in_the_last_row():
    g = jt.grad(lambda x: jt.sum(x[-1] * np.array([1.0, 2.0])))(np.zeros((3, 2)))
    np.testing.assert_array_equal(g, [[0, 0], [0, 0], [1, 2]])


def test_repeated_indices_accumulate():
    x = np.arange(4.0)
    g = jt.grad(lambda x: jt.sum(x[np.array([1, 1, -1, 1])]))(x)
    np.testing.assert_array_equal(g, [0, 3, 0, 1])


def test_jacobian_of_an_advanced_index_is_per_axis():
    """x[:, ids] on a (200, 100) input: one (len(ids), 100) one-hot factor, not a dense out x in tensor."""
    x = np.ones((200, 100))
    (J,) = jt.getitem.jacobian(x, (slice(None), np.arange(50)))
    assert J.stored_bytes <= 8 * 50 * 100 < J.nbytes
    (J,) = jt.getitem.jacobian(x, (np.arange(10) % 3, np.arange(10)))  # two arrays: one factor per axis
    assert J.stored_bytes <= 8 * 10 * (200 + 100)


def test_iteration_and_len_on_traced_values():
    x = np.random.default_rng(5).normal(size=(3, 2))
    J = jt.jacobian(lambda x: jt.stack([r * (k + 1.0) for k, r in enumerate(x)]) * len(x))(x)
    np.testing.assert_array_equal(J.reshape(6, 6), np.diag(np.repeat([3.0, 6.0, 9.0], 2)))


# ---- scatter_add, at_set, at_add ------------------------------------------------------------------------------
@st.composite
def update_case(draw):
    x = draw(arrays(min_dims=1, max_dims=3, max_side=4))
    idx = draw(index_for(x.shape))
    sel = np.broadcast_to(np.empty((), dtype=bool), x.shape)[idx].shape
    k = draw(st.integers(0, len(sel)))
    v = draw(arrays(shape=tuple(1 if draw(st.booleans()) else n for n in sel[len(sel) - k:])))
    return x, idx, v


def _numpy_set(x, idx, v):
    out = x.copy()
    out[idx] = v
    return out


@settings(max_examples=40, **SETTINGS)
@given(case=update_case(), op=st.sampled_from(["at_set", "at_add", "scatter_add"]))
def test_updates_against_numpy(case, op):
    x, idx, v = case
    if op == "at_set":
        check_numpy(lambda lib, x, v: (jt.at_set if lib is not np else _numpy_set)(x, idx, v), x, v, libs=(jt,))
    elif op == "at_add":
        check_numpy(lambda lib, x, v: (jt.at_add if lib is not np else _numpy_add)(x, idx, v), x, v, libs=(jt,))
    else:
        sel = x[idx].shape
        g = np.broadcast_to(v, sel).copy()

        def np_scatter(g):
            out = np.zeros(x.shape)
            np.add.at(out, idx, g)
            return out
        check_numpy(lambda lib, g: (np_scatter(g) if lib is np else jt.scatter_add(g, idx, x.shape)), g, libs=(jt,))


def _numpy_add(x, idx, v):
    out = x.copy()
    np.add.at(out, idx, v)
    return out


@settings(max_examples=8, **SETTINGS)
@given(case=update_case())
def test_updates_against_jax(case):
    x, idx, v = case
    key = tuple(np.asarray(e) if isinstance(e, list) else e for e in (idx if isinstance(idx, tuple) else (idx,)))
    if any(isinstance(e, bool) for e in key):
        return
    lib_of = {jt: jt.at_add, np: _numpy_add}
    check_jax(lambda lib, x, v: lib_of[lib](x, idx, v) if lib in lib_of else x.at[key].add(v), x, v, libs=(jt,))
    pos = np.arange(x.size).reshape(x.shape)[idx]
    if np.unique(pos).size == pos.size:  # jax leaves the winner among repeated writes unspecified
        lib_of = {jt: jt.at_set, np: _numpy_set}
        check_jax(lambda lib, x, v: lib_of[lib](x, idx, v) if lib in lib_of else x.at[key].set(v), x, v, libs=(jt,))


def test_at_set_last_write_wins_like_numpy():
    x, v = np.zeros(3), np.array([1.0, 2.0, 3.0])
    idx = np.array([0, 2, 0])
    np.testing.assert_array_equal(jt.at_set(x, idx, v), _numpy_set(x, idx, v))  # [3, 0, 2]
    Jx, Jv = jt.jacobian(lambda x, v: jt.at_set(x, idx, v), argnums=(0, 1))(x, v)
    np.testing.assert_array_equal(Jx, np.diag([0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(Jv, [[0, 0, 1], [0, 0, 0], [0, 1, 0]])
    g = jt.grad(lambda v: jt.sum(jt.at_add(x, idx, v)))(v)  # at_add: every occurrence adds
    np.testing.assert_array_equal(g, [1, 1, 1])


def test_item_assignment_message_names_at_set():
    with pytest.raises(jt.NotDifferentiableError, match=r"jt\.at_set\(x, idx, v\)"):
        def f(x):
            x[0] = 0.0
            return x
        jt.grad(f)(np.ones(2))


# ---- take, take_along_axis, sort, partition ------------------------------------------------------------------
@st.composite
def take_case(draw):
    x = draw(arrays(max_dims=3, max_side=4))
    axis = None if x.ndim == 0 or draw(st.booleans()) else axis_of(draw, x.ndim)
    n = x.size if axis is None else x.shape[axis]
    mode = draw(st.sampled_from(["raise", "wrap", "clip"])) if n else "raise"
    lo, hi = (-n, n - 1) if mode == "raise" else (-2 * n - 1, 2 * n + 1)
    ids = draw(st.integers(lo, hi)) if n and draw(st.booleans()) else \
        np.array(draw(st.lists(st.integers(lo, hi), max_size=5)) if n else [], dtype=int)
    if draw(st.booleans()):
        return (lambda lib, x: x.take(ids, axis=axis, mode=mode)), (x,), (ids, axis, mode)
    return (lambda lib, x: lib.take(x, ids, axis=axis, mode=mode)), (x,), (ids, axis, mode)


@settings(max_examples=40, **SETTINGS)
@given(case=take_case())
def test_take_against_numpy(case):
    f, xs, _ = case
    check_numpy(f, *xs)


@settings(max_examples=5, **SETTINGS)
@given(case=take_case())
def test_take_against_jax(case):
    _, xs, (ids, axis, mode) = case
    n = xs[0].size if axis is None else xs[0].shape[axis]
    j = np.clip(ids, 0, max(n - 1, 0)) if mode == "clip" else np.asarray(ids) % max(n, 1)  # in range for jax
    check_jax(lambda lib, x: jt.take(x, ids, axis=axis, mode=mode) if lib is jt else lib.take(x, j, axis=axis), *xs)


@st.composite
def along_case(draw):
    x = draw(arrays(min_dims=1, max_dims=3, max_side=4))
    if draw(st.booleans()) and x.ndim == 1:
        ids = np.array(draw(st.lists(st.integers(-x.size, x.size - 1), max_size=5)) if x.size else [], dtype=int)
        return x, ids, None
    axis = axis_of(draw, x.ndim)
    n = x.shape[axis]
    shape = tuple(draw(st.integers(0, 4)) if k == x.ndim + axis or k == axis else
                  (1 if draw(st.booleans()) else s) for k, s in enumerate(x.shape))
    if not n:
        shape = tuple(0 if k == x.ndim + axis or k == axis else s for k, s in enumerate(shape))
    ids = np.array(draw(st.lists(st.integers(-n, n - 1), min_size=int(np.prod(shape)),
                                 max_size=int(np.prod(shape)))) if n else np.zeros(0), dtype=int).reshape(shape)
    return x, ids, axis


@settings(max_examples=40, **SETTINGS)
@given(case=along_case())
def test_take_along_axis_against_numpy(case):
    x, ids, axis = case
    check_numpy(lambda lib, x: lib.take_along_axis(x, ids, axis), x)


@settings(max_examples=5, **SETTINGS)
@given(case=along_case())
def test_take_along_axis_against_jax(case):
    x, ids, axis = case
    n = x.size if axis is None else x.shape[axis]
    check_jax(lambda lib, x: lib.take_along_axis(x, ids % max(n, 1) if lib is not jt else ids, axis), x)


@st.composite
def sorted_case(draw):
    x = draw(arrays(max_dims=3, max_side=5))
    axis = None if x.ndim == 0 or draw(st.booleans()) else axis_of(draw, x.ndim)
    if draw(st.booleans()):
        return (lambda lib, x: lib.sort(x, axis=axis)), (x,), ("sort", axis, None)
    n = x.size if axis is None else x.shape[axis]
    assume(n > 0)
    kth = draw(st.integers(-n, n - 1)) if draw(st.booleans()) else \
        draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True))
    return (lambda lib, x: lib.partition(x, kth, axis=axis)), (x,), ("partition", axis, kth)


@settings(max_examples=40, **SETTINGS)
@given(case=sorted_case())
def test_sort_and_partition_against_numpy(case):
    f, xs, _ = case
    check_numpy(f, *xs)  # distinct values: locally a fixed permutation, so differences are exact


@settings(max_examples=6, **SETTINGS)
@given(case=sorted_case())
def test_sort_and_partition_against_jax(case):
    f, xs, (op, axis, kth) = case
    if op == "sort":
        check_jax(f, *xs)
        return
    # jax.numpy.partition arranges each side of kth differently from numpy (both are valid partitions):
    # compare what is defined, the kth value and functions symmetric within each side
    k = kth if np.ndim(kth) == 0 else kth[0]

    def sides(lib, x):  # (jax.numpy.partition has no axis=None: flatten first)
        y = lib.partition(x, k, axis=axis) if axis is not None else lib.partition(lib.ravel(x), k)
        y = lib.moveaxis(y, -1 if axis is None else axis, -1)
        kk = k % y.shape[-1]
        return [lib.sum(y[..., :kk] ** 2, axis=-1), y[..., kk], lib.sum(y[..., kk + 1:] ** 3, axis=-1)]

    check_jax(sides, *xs)


def test_sort_ties_follow_the_stable_permutation_like_jax():
    x = np.array([2.0, 1.0, 2.0, 1.0])
    J = jt.jacobian(jt.sort)(x)
    np.testing.assert_array_equal(J, np.eye(4)[[1, 3, 0, 2]])  # tied entries keep their order
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    np.testing.assert_array_equal(J, jax.jacfwd(jax.numpy.sort)(x))


def test_partition_equals_numpy_and_reads_its_own_values():
    x = make_array(11, (4, 7))
    for kth in (0, 3, -1, [1, 5]):
        y = jt.partition(x, kth, axis=1)
        np.testing.assert_array_equal(y, np.partition(x, kth, axis=1))
        J = jt.jacobian(lambda x: jt.partition(x, kth, axis=1), method="rev")(x)
        np.testing.assert_array_equal(J, (y[:, :, None, None] == x[None, None]).astype(float))


def test_integer_results_are_plain_constants():
    x = make_array(12, (3, 4))

    def f(x):
        v = jt.getval(x)
        ints = [np.argsort(x, axis=0), x.argsort(), x.argmax(axis=1), np.argmin(x), jt.argsort(x, axis=None),
                np.argmax(x, axis=0, keepdims=True)]
        want = [np.argsort(v, axis=0), v.argsort(), v.argmax(axis=1), np.argmin(v), np.argsort(v, axis=None),
                np.argmax(v, axis=0, keepdims=True)]
        for a, b in zip(ints, want):
            assert not isinstance(a, jt.tracer.Tracer)
            np.testing.assert_array_equal(a, b)
        return jt.take_along_axis(x, np.argsort(x, axis=1)[:, :1], 1)

    J = jt.jacobian(f)(x)
    np.testing.assert_array_equal(J.reshape(3, 12), np.eye(12)[np.arange(3) * 4 + np.argmin(x, axis=1)])


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: jt.getitem(np.ones(3), 5), jt.IndexingError, r"getitem: index 5 is out of bounds for axis 0 of length 3"),
    (lambda: jt.getitem(np.ones((2, 3)), (0, 0, 0)), jt.IndexingError, r"too many indices \(3\).*\(2, 3\)"),
    (lambda: jt.getitem(np.ones(3), (Ellipsis, Ellipsis)), jt.IndexingError, r"single Ellipsis"),
    (lambda: jt.getitem(np.ones(3), np.array([0.5])), jt.IndexingError, r"index arrays must be integers or booleans"),
    (lambda: jt.getitem(np.ones(3), np.array([True, False])), jt.IndexingError, r"does not fit an array of shape"),
    (lambda: jt.getitem(np.ones((2, 3)), (np.array([0, 1]), np.array([0, 1, 2]))), jt.IndexingError,
     r"getitem: index .* does not fit"),
    (lambda: jt.getitem(np.ones(3), slice(None, None, 0)), jt.IndexingError, r"slice step cannot be zero"),
    (lambda: jt.getitem(np.ones(3), "a"), jt.IndexingError, r"unsupported index 'a'"),
    (lambda: jt.grad(lambda x: jt.sum(x[x]))(np.zeros(1)), jt.ConcretizationError,
     r"getitem: index position 0 \(shape \(1,\)\): use as an index .*derivative would be silently lost"),
    (lambda: jt.grad(lambda x: jt.sum(x[:x[0]]))(np.zeros(2)), jt.ConcretizationError,
     r"getitem: a bound of the slice at index position 0: use as an index"),
    (lambda: jt.grad(lambda x: jt.sum(jt.take(np.ones(3), x)))(np.zeros(1)), jt.ConcretizationError,
     r"take: indices: .*jt.getval"),
    (lambda: jt.at_set(np.ones((2, 3)), 0, np.ones(2)), jt.ShapeError, r"at_set: value of shape \(2,\) cannot be "
                                                                       r"broadcast to the selection"),
    (lambda: jt.scatter_add(np.ones(3), (slice(None), 0), (2, 4)), jt.ShapeError,
     r"scatter_add: values of shape \(3,\) do not fit .*expected values of shape \(2,\)"),
    (lambda: jt.take(np.ones(3), [3]), jt.IndexingError, r"take: index 3 is out of bounds for axis 0 of "
                                                             r"length 3.*mode='wrap'"),
    (lambda: jt.take(np.ones(3), [0], mode="fill"), ValueError, r"take: mode must be"),
    (lambda: jt.take_along_axis(np.ones((2, 3)), np.array([0, 1]), 1), jt.ShapeError, r"same number of dimensions"),
    (lambda: jt.take_along_axis(np.ones((2, 3)), np.array([[3]]), 1), jt.IndexingError, r"index 3 is out of bounds"),
    (lambda: jt.partition(np.ones(3), 5), jt.IndexingError, r"partition: kth=5"),
])
def test_errors_name_the_op_and_a_remedy(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
