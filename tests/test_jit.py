"""jt.jit: compiled programs agree with the uncompiled transforms, replay without tracing, re-check guards,
recompute masks and labels, and return fresh arrays (also from several threads at once)."""
import gc
import threading
import tracemalloc

import numpy as np
import pytest

import jactensor as jt
from jactensor import programs as P
from jactensor.jit import Compiled, JitRecompileWarning, jit
from jactensor.pytree import tree_flatten

from .programs import inputs, random_program


def leaves(tree):
    out = []
    for x in tree_flatten(tree)[0]:
        out.append(x.dense() if isinstance(x, jt.Jacobian) else x if isinstance(x, str) else np.asarray(x))
    return out


def assert_same(got, want, atol=1e-12):
    g, w = leaves(got), leaves(want)
    assert len(g) == len(w)
    for a, b in zip(g, w):
        if isinstance(b, str):
            assert a == b
            continue
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-12)


def compiled_matches(f, arg_sets, atol=1e-12, programs=1):
    """jit(f) on each argument set (same signature) equals f uncompiled; the first call compiles, the others
    replay the one program."""
    cf = jit(f)
    for args in arg_sets:
        assert_same(cf(*args), f(*args), atol)
    assert cf._cache_size() == programs
    return cf


def _transforms(f, out_shape, seed):
    """Every transform of a 3-argument program, as functions of (x, y, z) and extra arrays."""
    W = np.random.default_rng(seed).normal(size=out_shape)
    loss = lambda *a: jt.sum(f(*a) * W)  # noqa: E731
    scalar = lambda *a: jt.sum(f(*a))  # noqa: E731
    yield "grad", jt.grad(loss, argnums=(0, 1, 2))
    yield "value_and_grad", jt.value_and_grad(loss, argnums=(0, 1, 2))
    for m in ("chain", "rev", "fwd"):
        yield f"jacobian {m}", jt.jacobian(f, argnums=(0, 1, 2), method=m)
    yield "jacobian structured", jt.jacobian(f, argnums=(0, 1, 2), structured=True)
    yield "hessian chain", jt.hessian(scalar, method="chain")
    yield "hessian fwdrev", jt.hessian(scalar, method="fwdrev")
    yield "hessian structured", jt.hessian(scalar, method="chain", structured=True)
    yield "vjp", lambda x, y, z: jt.vjp(f, x, y, z)[1](W)
    yield "jvp", lambda x, y, z: jt.jvp(f, (x, y, z), (W.sum() * x, y, 0.5 * z))


@pytest.mark.parametrize("seed", range(16))
def test_random_programs_compiled_equal_uncompiled(seed):
    f = random_program(seed, n_steps=3 + seed % 6)
    a1 = inputs(seed)
    a2 = [x + 0.3 * np.random.default_rng(seed + 7).normal(size=x.shape) for x in a1]  # other values, same shapes
    out_shape = np.shape(f(*a1))
    for name, t in _transforms(f, out_shape, seed):
        cf = jit(t)
        for args in (a1, a2, a1):
            assert_same(cf(*args), t(*args))
        assert cf._cache_size() == 1, name


@pytest.mark.parametrize("name", sorted(P.PROGRAMS))
def test_named_programs_every_transform(name):
    f = P.PROGRAMS[name]
    a1, a2 = P.make_args(name, n=5, d=3, seed=0), P.make_args(name, n=5, d=3, seed=1)
    nums = tuple(range(len(a1)))
    loss = lambda *a: jt.sum(f(*a) ** 2)  # noqa: E731
    cases = [jt.grad(loss, argnums=nums), jt.value_and_grad(loss, argnums=nums),
             jt.jacobian(f, argnums=(0, 1)), jt.jacobian(f, argnums=(0, 1), method="rev"),
             jt.jacobian(f, argnums=(0, 1), method="fwd"), jt.jacobian(f, argnums=(0, 1), structured=True),
             jt.hessian(lambda x, *rest: loss(x, *rest), method="chain"),
             jt.hessian(lambda x, *rest: loss(x, *rest), method="fwdrev")]
    for t in cases:
        compiled_matches(t, [a1, a2])


def test_second_call_replays_without_tracing(monkeypatch):
    args = P.make_args("attention", n=6, d=4)
    fns = [jit(jt.grad(lambda *a: jt.sum(P.attention(*a) ** 2), argnums=(0, 1, 2, 3))),
           jit(jt.jacobian(P.attention, argnums=(0, 1))), jit(jt.hessian(lambda x: jt.sum(jt.tanh(x) ** 3)))]
    firsts = [fns[0](*args), fns[1](*args), fns[2](args[0])]

    def boom(*a, **k):
        raise AssertionError("traced at replay")
    import jactensor.contract as C
    import jactensor.passes as passes
    import jactensor.transforms as T
    monkeypatch.setattr(passes, "trace", boom)
    monkeypatch.setattr(T, "trace", boom)
    monkeypatch.setattr(jt.Primitive, "__call__", boom)
    monkeypatch.setattr(jt.Primitive, "forward", boom)
    monkeypatch.setattr(C, "_expression", boom)   # no einsum parsing or path search either
    monkeypatch.setattr(C, "_cost", boom)
    again = [fns[0](*args), fns[1](*args), fns[2](args[0])]
    for a, b in zip(firsts, again):
        assert_same(a, b, 0)


def test_new_shape_recompiles_and_cache_counts():
    g = jit(jt.grad(lambda x: jt.sum(jt.tanh(x) ** 2)))
    rng = np.random.default_rng(0)
    for shape in [(3,), (3,), (4,), (2, 3), (4,)]:
        x = rng.normal(size=shape)
        np.testing.assert_allclose(g(x), 2 * np.tanh(x) * (1 - np.tanh(x) ** 2), atol=1e-14)
    assert g._cache_size() == 3
    g(rng.normal(size=3).astype(np.float32))   # a new dtype is a new signature
    assert g._cache_size() == 4
    with jt.config.override(max_terms=2):         # so are other config settings
        g(rng.normal(size=3))
    assert g._cache_size() == 5


def test_cache_is_bounded_least_recently_used_first():
    f = jit(lambda x: x * 2.0, cache_size=3)
    for n in (1, 2, 3):
        f(np.ones(n))
    f(np.ones(1))          # 1 is now the most recent; 2 the least
    f(np.ones(4))          # evicts 2
    assert f._cache_size() == 3
    keys = {k[0][0] for k in f._cache}
    assert keys == {(1,), (3,), (4,)}
    with pytest.raises(ValueError, match="cache_size must be a positive int"):
        jit(lambda x: x, cache_size=0)


def test_static_argnums_and_argnames():
    def f(x, power, scale=1.0):
        return jt.sum(x ** power) * scale
    x = np.array([1.0, 2.0, 3.0])
    g = jit(jt.grad(f), static_argnums=1)
    np.testing.assert_allclose(g(x, 2), 2 * x)
    np.testing.assert_allclose(g(x, 3), 3 * x ** 2)
    np.testing.assert_allclose(g(x * 2, 3), 3 * (2 * x) ** 2)
    assert g._cache_size() == 2
    h = jit(f, static_argnames="power")
    assert h.static_argnums == (1,) and h(x, power=2) == 14.0 and h(x, 2) == 14.0
    # a Python float is a value (recorded as a 0-d array): changing it replays the same program
    s = jit(jt.grad(f))
    for scale in (1.0, 2.5, -3.0):
        np.testing.assert_allclose(s(x, 2, scale), 2 * scale * x)
    assert s._cache_size() == 1
    # ints are static by value (f may use them for shapes or branches)
    s(x, 3, 1.0)
    assert s._cache_size() == 2
    with pytest.raises(jt.ArgnumError, match=r"static argument 1 is a list, which is not hashable.*tuple"):
        jit(lambda x, axes: x.sum(axis=axes), static_argnums=1)(x, [0])
    with pytest.raises(jt.ArgnumError, match="static_argnums must be ints"):
        jit(f, static_argnums="power")


# ---- guards ----------------------------------------------------------------------------------------
def _branchy(x):
    return x * 2 if (x.sum() > 0) else x * 3


def test_python_branch_on_values_is_guarded():
    g = jit(jt.grad(lambda x: jt.sum(_branchy(x) ** 2)))
    pos, neg = np.array([0.5, 1.0, 2.0]), np.array([-1.0, 0.2, -0.4])
    np.testing.assert_allclose(g(pos), 8 * pos)         # d/dx (2x)^2 = 8x
    np.testing.assert_allclose(g(neg), 18 * neg)        # d/dx (3x)^2 = 18x: the other branch, recompiled
    np.testing.assert_allclose(g(2 * pos), 16 * pos)    # back to the first program: replayed
    np.testing.assert_allclose(g(3 * neg), 54 * neg)
    assert g._cache_size() == 2 and g._stats["compiles"] == 2
    text = str(g.explain(pos))
    assert "guards: 1" in text and "bool == True" in text and "test_jit.py" in text


def test_int_float_and_item_conversions_are_guarded():
    def f(x):
        n = int(x[0] > 0) + 1          # int() of a recorded value
        return jt.sum(x[:n] ** 2) * float(x[1] > 1.0) + jt.getval(x)[2].item() * x[2] + jt.sum(x)
    g = jit(jt.grad(f))
    for x in ([1.0, 2.0, 0.5], [-1.0, 2.0, 0.5], [1.0, 0.5, 0.5], [1.0, 2.0, 0.7], [2.0, 3.0, 0.7]):
        x = np.array(x)
        np.testing.assert_allclose(g(x), jt.grad(f)(x), atol=1e-15)
    assert g._cache_size() >= 3


def test_whole_value_guard_on_asarray_recompiles_and_warns():
    def f(x):
        c = np.asarray(jt.getval(x))   # leaves the recording: the whole value is guarded
        return jt.sum(x * c)
    g = jit(jt.grad(f))
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(g(x), x)
    np.testing.assert_allclose(g(x), x)
    assert g._cache_size() == 1
    with pytest.warns(JitRecompileWarning, match=r"recompiled 8 times.*np.asarray.*static_argnums"):
        for k in range(1, 10):
            np.testing.assert_allclose(g(x + k), x + k)
    assert "value == array of shape (2,)" in str(g.explain(x))


# ---- values without a derivative are recomputed --------------------------------------------------------
def _signs(rng, shape):
    a = rng.normal(size=shape)
    return a, -a  # every mask entry flips between the two


@pytest.mark.parametrize("kind", ["relu", "mask", "where", "np.where", "max", "np.max"])
def test_masks_are_recomputed_not_frozen(kind, rng):
    f = {"relu": lambda x: jt.relu(x),
         "mask": lambda x: x * (x > 0),
         "where": lambda x: jt.where(x > 0, x, 0.1 * x),
         "np.where": lambda x: np.where(x > 0, x, 0.1 * x),
         "max": lambda x: jt.max(x, axis=1, keepdims=True) * x,
         "np.max": lambda x: np.max(x, axis=1, keepdims=True) * x}[kind]
    g = jit(jt.grad(lambda x: jt.sum(f(x) ** 2)))
    for x in _signs(rng, (4, 5)):
        if kind in ("relu", "mask"):
            expect = 2 * x * (x > 0)
        elif kind.endswith("where"):
            expect = 2 * np.where(x > 0, x, 0.01 * x)
        else:   # y = m x with m = max over the row: dy/dx = m + x * [argmax]
            m = x.max(axis=1, keepdims=True)
            y = m * x
            hit = (x == m)
            expect = 2 * y * m + hit * np.sum(2 * y * x, axis=1, keepdims=True)
        np.testing.assert_allclose(g(x), expect, atol=1e-13)
    assert g._cache_size() == 1   # one program serves both sign patterns


def test_argmax_derived_indices_are_recomputed(rng):
    def f(x):
        i = np.argmax(jt.getval(x), axis=1)     # an integer index array computed from the values
        return jt.sum(x[np.arange(x.shape[0]), i] ** 2)
    g = jit(jt.grad(f))
    for _ in range(3):
        x = rng.normal(size=(4, 6))
        expect = np.zeros_like(x)
        i = np.argmax(x, axis=1)
        expect[np.arange(4), i] = 2 * x[np.arange(4), i]
        np.testing.assert_allclose(g(x), expect, atol=1e-14)


def test_integer_labels_change_every_call(rng):
    def loss(z, y):
        return jt.cross_entropy(z, y)
    vg = jit(jt.value_and_grad(loss))
    for _ in range(4):
        z, y = rng.normal(size=(6, 5)), rng.integers(0, 5, size=6)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        value, g = vg(z, y)
        np.testing.assert_allclose(value, -np.mean(np.log(p[np.arange(6), y])), rtol=1e-13)
        np.testing.assert_allclose(g, (p - np.eye(5)[y]) / 6, atol=1e-15)
    assert vg._cache_size() == 1
    with pytest.raises(jt.LabelError, match=r"label -1 at index \(2,\) is out of range for 5 classes"):
        vg(z, np.array([0, 1, -1, 2, 3, 4]))   # validated at replay too: never a silent wrap-around
    with pytest.raises(jt.LabelError, match="label 5"):
        vg(z, np.array([0, 1, 5, 2, 3, 4]))


# ---- results -----------------------------------------------------------------------------------------
def test_no_aliasing_between_calls_inputs_and_outputs(rng):
    C = rng.normal(size=3)
    f = jit(lambda x, y: (x, y * 2.0, C, x.T, jt.getval(y)))
    x, y = rng.normal(size=(2, 3)), rng.normal(size=3)
    for _ in range(2):
        a, b, c, d, e = f(x, y)
        assert not any(np.shares_memory(u, v) for u in (a, b, c, d, e) for v in (x, y, C))
        assert not np.shares_memory(a, d)
        a[...] = 0.0
        b[...] = 0.0
        c[...] = 0.0
        np.testing.assert_array_equal(f(x, y)[0], x)
        np.testing.assert_array_equal(f(x, y)[1], 2 * y)
        np.testing.assert_array_equal(f(x, y)[2], C)
    g = jit(jt.grad(lambda x: jt.sum(x * 3.0)))   # a constant gradient: a fresh array every time
    r1 = g(y)
    r1[...] = -1.0
    np.testing.assert_array_equal(g(y), np.full(3, 3.0))
    J = jit(jt.jacobian(lambda A, B: A @ B, structured=True))
    A, B = rng.normal(size=(2, 3)), rng.normal(size=(3, 4))
    for _ in range(2):
        JA = J(A, B)
        for t in JA.terms:
            for factor, _ in t.factors:
                assert not np.shares_memory(factor, B)
        np.testing.assert_allclose(JA.dense(), jt.jacobian(lambda A, B: A @ B)(A, B), atol=1e-15)


def test_captured_arrays_are_fixed_when_recorded(rng):
    def f(x):
        buf = np.zeros(3)
        y = x * buf          # records a multiply by buf as it is now (zeros) ...
        buf[0] = 1.0         # ... so this later change must not leak into it
        return y + x * buf
    cf = jit(f)
    for _ in range(2):
        x = rng.normal(size=3)
        np.testing.assert_array_equal(cf(x), [x[0], 0.0, 0.0])
    C = np.ones(3)
    g = jit(lambda x: x * C)
    x = rng.normal(size=3)
    g(x)
    C[...] = 2.0            # an enclosing-scope array is a constant of the compiled program (as in jax.jit)
    np.testing.assert_array_equal(g(x), x)


def test_threads_replay_concurrently(rng):
    args = P.make_args("attention", n=6, d=4)
    loss = lambda *a: jt.sum(P.attention(*a) ** 2)  # noqa: E731
    g = jit(jt.grad(loss, argnums=(0, 1)))
    sets = [[a + 0.1 * k for a in args] for k in range(8)]
    want = [jt.grad(loss, argnums=(0, 1))(*s) for s in sets]
    errors = []

    def worker(offset):
        try:
            for i in range(40):
                k = (i + offset) % len(sets)
                assert_same(g(*sets[k]), want[k], 0)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(o,)) for o in (0, 3, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert g._cache_size() == 1


def test_replay_peak_memory_not_above_uncompiled():
    args = P.make_args("attention", n=48, d=24)
    loss = lambda *a: jt.sum(P.attention(*a) ** 2)  # noqa: E731
    for t in (jt.grad(loss, argnums=(0, 1, 2, 3)), jt.jacobian(P.attention, argnums=(0,), method="rev"),
              jt.jacobian(P.attention, argnums=(0,))):
        c = jit(t)
        c(*args)

        def peak(fn):
            gc.collect()
            tracemalloc.start()
            tracemalloc.reset_peak()
            fn(*args)
            p = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            return p
        assert peak(c) <= peak(t)


@pytest.mark.parametrize("method", ["rev", "fwd"])
def test_chunked_basis_is_recorded_not_stored_as_constants(method, rng):
    """Under a memory limit rev/fwd push the identity through the program in chunks. Compiled, the chunks
    are recorded values: what is computed from them is neither computed into the program's constants (the
    whole (30, 30, 30, 30) basis cotangent, 6.5 MB, used to stay alive with the program) nor above the limit
    while recording, and each replay stays within the limit too."""
    x = rng.normal(size=30)
    f = lambda x: jt.sum(jt.tanh(x[:, None, None] * x[None, :, None] * x[None, None, :]), axis=(1, 2))  # noqa: E731
    with jt.config.override(max_jacobian_bytes=1_000_000):
        ref = jt.jacobian(f, method=method)(x)
        c = jit(jt.jacobian(f, method=method))
        gc.collect()
        tracemalloc.start()
        J = c(x)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert held < 1_000_000, held  # the program and its result, no basis-sized constants
        for _ in range(2):
            gc.collect()
            tracemalloc.start()
            J2 = c(x)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < 1_500_000, peak
    np.testing.assert_allclose(J, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(J2, ref, rtol=1e-12, atol=1e-12)


# ---- interplay with the rest of jactensor ----------------------------------------------------------------
def test_pytrees_kwargs_and_aux(rng):
    params = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}

    def loss(p, x, scale=1.0):
        h = jt.tanh(x @ p["W"] + p["b"])
        return jt.sum(h * h) * scale, {"h": h, "tag": "hidden"}
    vg = jit(jt.value_and_grad(loss, has_aux=True))
    for k in range(3):
        x = rng.normal(size=(4, 3))
        assert_same(vg(params, x, scale=0.5 + k), jt.value_and_grad(loss, has_aux=True)(params, x, scale=0.5 + k))
    (_, aux), _ = vg(params, x, scale=1.0)
    assert aux["tag"] == "hidden"
    assert vg._cache_size() == 1


def test_jit_inside_a_transform_and_nested_jit(rng):
    inner = jit(lambda x: jt.tanh(x) * x)
    outer = jit(lambda x: jt.sum(inner(x) ** 2))
    x = rng.normal(size=4)
    ref = lambda x: jt.sum((jt.tanh(x) * x) ** 2)  # noqa: E731
    np.testing.assert_allclose(outer(x), ref(x), rtol=1e-14)                     # inner is recorded into outer
    np.testing.assert_allclose(jt.grad(outer)(x), jt.grad(ref)(x), rtol=1e-13)   # grad of jit: runs uncompiled
    assert inner._cache_size() == 0 and outer._cache_size() == 1


def test_plain_numpy_functions_and_in_place_writes(rng):
    def f(x, i):
        y = x.copy()
        y[0] = y[0] * 2.0
        y += 1.0
        np.exp(y, out=y)
        return y.sum(axis=0), y[i]
    cf = jit(f, static_argnums=1)
    for _ in range(3):
        x = rng.normal(size=(3, 2))
        assert_same(cf(x, 1), f(x, 1))


def test_clear_errors(rng):
    x = rng.normal(size=3)
    with pytest.raises(jt.NotDifferentiableError, match=r"output leaf 1 is a function.*jt.vjp\(f, x\)\[1\]\(g\)"):
        jit(lambda x: jt.vjp(jt.tanh, x))(x)
    kept = []

    def leak(x):
        kept.append(x)
        return x * 2.0
    jit(leak)(x)
    with pytest.raises(jt.JactensorError, match="used after its function finished compiling"):
        kept[0] + 1.0
    with pytest.raises(TypeError, match="expected a function"):
        jit(3)
    assert isinstance(jit(jt.tanh), Compiled)


def test_explain_shows_the_program():
    args = P.make_args("attention", n=6, d=4)
    g = jit(jt.grad(lambda *a: jt.sum(P.attention(*a) ** 2), argnums=(0, 1, 2, 3)))
    e = g.explain(*args)
    text = str(e)
    assert "numpy calls per replay:" in text and "buffers kept for the backward pass" in text
    assert "compile time:" in text and "guards: 0" in text and "def _program(v0, v1, v2, v3):" in text
    assert 20 <= e.n_calls <= 60 and e.saved_buffers >= 3 and e.saved_bytes > 0
    assert e.n_primitive_calls >= 8    # matmuls, softmax, ... each one call
    J = jit(jt.jacobian(P.attention, argnums=(0, 1)))
    assert J.explain(*args).n_contractions >= 1 and J.explain(*args).n_embeds >= 1


def test_vit_training_step(rng):
    pytest.importorskip("sklearn")
    from jactensor.models.vit import ViTConfig, init_params, loss_fn
    cfg = ViTConfig(patch=4, width=8, depth=1, heads=2, mlp_ratio=2)
    params = init_params(cfg, 0)
    step = jit(jt.value_and_grad(loss_fn), static_argnums=3)   # as models/train.py compiles it
    ref = jt.value_and_grad(loss_fn)
    for n in (5, 5, 3):   # the last batch is smaller: a second signature
        xb, yb = rng.random(size=(n, 8, 8)), rng.integers(0, 10, size=n)
        assert_same(step(params, xb, yb, cfg), ref(params, xb, yb, cfg))
    assert step._cache_size() == 2
