"""Jacobians past memory on dask: to_dask (tensor and matrix forms), dask-backed factors through chain(), zarr
stores written atomically, a two-worker cluster, and the message without the extra; each against the dense
Jacobian that np.asarray(J) builds (itself checked against finite differences by the primitive tests)."""
import os
import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import jactensor as jt  # noqa: E402
from jactensor import backends  # noqa: E402
from jactensor.backends import dask as jdask  # noqa: E402
from jactensor.programs import attention  # noqa: E402

from .programs import inputs, random_program  # noqa: E402


def _rng(seed=0):
    return np.random.default_rng(seed)


def _structures():
    """(name, Jacobian) for every structure the engine produces."""
    rng = _rng(0)
    X, W, b = rng.normal(size=(6, 4)), rng.normal(size=(4, 5)), rng.normal(size=5)
    out = {
        "elementwise": jt.exp.jacobian(X)[0],                                       # delta on every axis
        "matmul_left": jt.matmul.jacobian(X, W)[0],                                 # delta(i,r) W[s,j]
        "matmul_right": jt.matmul.jacobian(X, W)[1],                                # X[i,r] delta(s,j)
        "softmax_rows": jt.softmax.jacobian(X, axis=-1)[0],                         # row blocks, two terms
        "softmax_whole": jt.softmax.jacobian(X, axis=None)[0],                      # dense
        "broadcast": jt.add.jacobian(X @ W, b)[1],                                  # (6,5) <- (5,): no factor
        "broadcast_to": jt.broadcast_to.jacobian(b, shape=(3, 5))[0],
        "reshape": jt.reshape.jacobian(X, (3, 8))[0],
        "transpose": jt.transpose.jacobian(X)[0],
        "getitem_slice": jt.getitem.jacobian(X, (slice(1, 5), slice(None, None, 2)))[0],
        "getitem_fancy": jt.getitem.jacobian(X, np.array([4, 0, 4]))[0],
        "sum_axis": jt.sum.jacobian(X, axis=0)[0],
        "sum_all": jt.sum.jacobian(X)[0],                                           # 0-d output
        "layer_norm": jt.layer_norm.jacobian(X, rng.normal(size=4), 0.3)[0],
        "multi_term": jt.multiply.jacobian(X, X)[0] + 2.0 * jt.exp.jacobian(X)[0] - jt.softmax.jacobian(X)[0],
        "attention": jt.jacobian(attention, structured=True)(rng.normal(size=(7, 3)),
                                                             *rng.normal(size=(3, 3, 3)) / 2),
        "identity": jt.Jacobian.identity((4, 3)),
        "zeros": jt.Jacobian.zeros((3, 2), (4,)),
    }
    return out


STRUCTURES = _structures()
TENSOR_CHUNKS = ["auto", 1, 2, 3, 5]  # 2 aligns with some deltas, 3 and 5 cut across them


@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("chunks", TENSOR_CHUNKS)
def test_to_dask_equals_the_dense_tensor(name, chunks):
    J = STRUCTURES[name]
    dense = np.asarray(J)
    x = J.to_dask(chunks=chunks)
    assert isinstance(x, da.Array) and x.shape == J.shape and x.dtype == np.float64
    np.testing.assert_allclose(x.compute(), dense, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("chunks", ["auto", 1, 4, 7, ((5, 7, 100), (3, 2, 4, 6, 50))])
def test_matrix_form_equals_as_matrix(name, chunks):
    J = STRUCTURES[name]
    rows, cols = int(np.prod(J.out_shape)), int(np.prod(J.in_shape))
    if isinstance(chunks, tuple):  # explicit row and column chunks that cut across the tensor axes
        chunks = tuple(_fit(c, n) for c, n in zip(chunks, (rows, cols)))
    m = J.to_dask(chunks=chunks, matrix=True)
    assert m.shape == (rows, cols)
    np.testing.assert_allclose(m.compute(), np.asarray(J).reshape(rows, cols), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(J.as_matrix_dask().compute(), np.asarray(J).reshape(rows, cols), rtol=1e-13,
                               atol=1e-14)


def _fit(sizes, n):
    out, left = [], n
    for s in sizes:
        if left == 0:
            break
        out.append(min(s, left))
        left -= out[-1]
    return tuple(out) if left == 0 else tuple(out) + (left,)


def test_irregular_tensor_chunks_and_generated_programs():
    for seed in range(12):
        f = random_program(seed, n_steps=2 + seed % 5)
        args = inputs(seed)
        for J in jt.jacobian(f, argnums=(0, 1, 2), structured=True)(*args):
            chunks = tuple(tuple(_fit((1 + (seed + k) % 3, 2, 5), n)) for k, n in enumerate(J.shape))
            np.testing.assert_allclose(J.to_dask(chunks=chunks).compute(), np.asarray(J), rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(J.as_matrix_dask(chunks=3).compute(), np.asarray(J).reshape(
                int(np.prod(J.out_shape)), int(np.prod(J.in_shape))), rtol=1e-12, atol=1e-13)


def test_auto_chunks_make_the_matrix_reshape_free():
    """"auto" splits only leading axes, so each tensor block is one rectangle of the matrix form."""
    J = jt.jacobian(attention, structured=True)(_rng(1).normal(size=(64, 16)), *_rng(2).normal(size=(3, 16, 16)))
    c = jdask.auto_chunks(J.out_shape, J.in_shape, block_bytes=2**20)
    assert c[1] == 16 and c[3] == 16  # trailing axes whole
    m = J.as_matrix_dask(chunks="auto")
    x = J.to_dask(chunks="auto")
    assert m.numblocks[0] == x.numblocks[0] and m.numblocks[1] == x.numblocks[2]
    # every matrix block is computed from a single box (no assembly of pieces)
    layer = dict(m.__dask_graph__().layers[m.name])
    plans = [v[1] for k, v in layer.items() if k[0] == m.name and v[0] is jdask._block]
    assert plans and all(len(p.parts) == 1 and p.parts[0].dest is None for p in plans)
    assert 0 < m.chunks[0][0] * m.chunks[1][0] * 8 <= jdask.AUTO_BLOCK_BYTES


def test_structural_zero_blocks_have_no_dependencies():
    from dask.core import get_dependencies
    J = jt.exp.jacobian(_rng().normal(size=(8, 4)))[0]  # delta(i,r) delta(j,s)
    x = J.to_dask(chunks=(2, 4, 2, 4))
    graph = dict(x.__dask_graph__())
    blocks = [k for k in graph if k[0] == x.name]
    factors = [k for k in graph if k[0] != x.name]
    assert len(blocks) == 16 and len(factors) == 1   # one task per block plus the factor, shared
    for k in blocks:
        deps = get_dependencies(graph, k)
        if k[1] != k[3]:  # out rows and in rows do not overlap: a zero block
            assert deps == set() and graph[k][0] is np.zeros
        else:
            assert deps == set(factors)
    np.testing.assert_array_equal(x.compute(), np.asarray(J))
    # cut unevenly: a block is a structural zero exactly where its out-row range misses its in-row range
    for rows_out, rows_in in [((3, 5), (5, 3)), ((3, 5), (2, 1, 5)), ((1, 1, 6), (4, 4))]:
        y = J.to_dask(chunks=(rows_out, 4, rows_in, 4))
        g = dict(y.__dask_graph__())
        zero = {k[1:] for k in g if k[0] == y.name and not get_dependencies(g, k)}
        lo_o, lo_i = np.cumsum((0,) + rows_out), np.cumsum((0,) + rows_in)
        expected = {(a, 0, b, 0) for a in range(len(rows_out)) for b in range(len(rows_in))
                    if min(lo_o[a + 1], lo_i[b + 1]) <= max(lo_o[a], lo_i[b])}
        assert zero == expected and expected
        np.testing.assert_array_equal(y.compute(), np.asarray(J))


def test_matrix_blocks_across_tensor_axes_assemble_pieces():
    J = jt.softmax.jacobian(_rng().normal(size=(5, 4)), axis=-1)[0]
    m = J.to_dask(chunks=(7, 6), matrix=True)  # 7 rows: cuts the (5, 4) out axes mid-row
    np.testing.assert_allclose(m.compute(), np.asarray(J).reshape(20, 20), atol=1e-15)
    assert jdask._boxes((5, 4), 7, 14) == [(0, ((1, 2), (3, 4))), (1, ((2, 3), (0, 4))), (5, ((3, 4), (0, 2)))]
    for shape in [(5, 4), (2, 3, 4), (7,), ()]:
        n = int(np.prod(shape))
        for lo in range(n + 1):
            for hi in range(lo, n + 1):
                covered = []
                for off, box in jdask._boxes(shape, lo, hi):
                    idx = np.arange(n).reshape(shape)[tuple(slice(a, b) for a, b in box)].ravel()
                    assert idx[0] == lo + off
                    covered += list(idx)
                assert covered == list(range(lo, hi))


def test_dask_factor_stays_lazy_through_chain():
    rng = _rng(3)
    X = rng.normal(size=(6, 3))
    JS = jt.softmax.jacobian(X, axis=-1)[0]
    D = rng.normal(size=(4, 6, 3))
    user = jt.Jacobian.from_dense(da.from_array(D, chunks=(2, 3, 3)), 1)  # the user's own dense Jacobian
    assert isinstance(user.terms[0].factors[0][0], da.Array)
    out = jt.chain(user, JS)
    assert all(isinstance(a, da.Array) for t in out.terms for a, _ in t.factors)
    expected = np.tensordot(D, np.asarray(JS), axes=2)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.to_dask(chunks=2).compute(), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.as_matrix_dask(chunks=5).compute(), expected.reshape(4, 18), rtol=1e-12,
                               atol=1e-14)
    # a dask factor on the right, with a delta passing through
    E = rng.normal(size=(6, 3, 5))
    right = jt.chain(jt.exp.jacobian(X)[0], jt.Jacobian.from_dense(da.from_array(E, chunks=2), 2))
    expected = np.exp(X)[:, :, None] * E
    np.testing.assert_allclose(right.to_dask(chunks=(4, 2, 3)).compute(), expected, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(right), expected, rtol=1e-12)
    # integer dask arrays are cast; complex ones refused
    ints = jt.Jacobian.from_dense(da.from_array(np.arange(6).reshape(2, 3), chunks=2), 1)
    assert ints.terms[0].factors[0][0].dtype == np.float64
    with pytest.raises(jt.DTypeError, match="complex128"):
        jt.Jacobian.from_dense(da.from_array(np.ones((2, 2), complex)), 1)


def test_np_asarray_of_a_dask_backed_jacobian_is_guarded():
    calls = []

    def boom(block):
        calls.append(1)
        raise AssertionError("computed")
    lazy = da.from_array(np.ones((64, 64, 64)), chunks=32).map_blocks(boom, dtype=np.float64,
                                                                     meta=np.empty((0, 0, 0)))
    J = jt.Jacobian.from_dense(lazy, 1)
    with jt.config.override(max_jacobian_bytes=2**20):
        with pytest.raises(jt.JacobianTooLargeError, match="2.0 MiB"):
            np.asarray(J)
        x = J.to_dask(chunks=16)      # blocks of 32 KiB fit: lazy, nothing computed
        with pytest.raises(jt.JacobianTooLargeError, match="one block"):
            J.to_dask(chunks=64)      # one 2 MiB block does not
    assert x.shape == (64, 64, 64) and calls == []


def test_block_guard_and_bad_chunks():
    J = jt.exp.jacobian(np.ones((16, 16)))[0]
    with jt.config.override(max_jacobian_bytes=10_000):
        with pytest.raises(jt.JacobianTooLargeError, match=r"one block.*smaller chunks"):
            J.to_dask(chunks=16)
        x = J.to_dask()  # "auto" sizes its blocks to the limit
        assert max(x.chunks[0]) * max(x.chunks[1]) * max(x.chunks[2]) * max(x.chunks[3]) * 8 <= 10_000
        computed = x.compute()
    np.testing.assert_array_equal(computed, np.asarray(J))
    with pytest.raises(jt.ShapeError, match=r"chunks=\(1, 2\)"):
        J.to_dask(chunks=(1, 2))
    with pytest.raises(jt.ShapeError, match="chunks"):
        J.to_dask(chunks=(1, 2, 3), matrix=True)


def test_zarr_round_trip(tmp_path):
    J = STRUCTURES["attention"]
    path = J.to_zarr(tmp_path / "attention.zarr", chunks=(3, 3, 2, 3))
    assert path == str(tmp_path / "attention.zarr")
    back = da.from_zarr(path)
    assert back.shape == J.shape and back.chunks == J.to_dask(chunks=(3, 3, 2, 3)).chunks
    np.testing.assert_allclose(back.compute(), np.asarray(J), rtol=1e-13, atol=1e-15)
    assert sorted(os.listdir(tmp_path)) == ["attention.zarr"]  # no temporary left next to it
    # an existing store is refused, and kept, unless overwrite=True
    with pytest.raises(FileExistsError, match="overwrite=True"):
        STRUCTURES["elementwise"].to_zarr(path)
    np.testing.assert_allclose(da.from_zarr(path).compute(), np.asarray(J), rtol=1e-13, atol=1e-15)
    J2 = STRUCTURES["softmax_rows"]
    J2.to_zarr(path, overwrite=True)
    np.testing.assert_allclose(da.from_zarr(path).compute(), np.asarray(J2), rtol=1e-13, atol=1e-15)
    assert sorted(os.listdir(tmp_path)) == ["attention.zarr"]
    with pytest.raises(ValueError, match="local directory"):
        J.to_zarr("s3://bucket/j.zarr")


def test_zarr_write_interrupted_mid_way_leaves_no_store(tmp_path, monkeypatch):
    J = STRUCTURES["softmax_rows"]
    real, calls = jdask._block, []

    def failing(plan, *arrays):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk on fire")
        return real(plan, *arrays)
    monkeypatch.setattr(jdask, "_block", failing)
    target = tmp_path / "j.zarr"
    with pytest.raises(RuntimeError, match="disk on fire"):
        J.to_zarr(target, chunks=2)
    assert len(calls) >= 5
    assert not target.exists() and os.listdir(tmp_path) == []  # the partial store is gone too
    # over an existing store: the old one survives a failed overwrite untouched
    monkeypatch.setattr(jdask, "_block", real)
    J.to_zarr(target, chunks=2)
    monkeypatch.setattr(jdask, "_block", failing)
    calls.clear()
    with pytest.raises(RuntimeError, match="disk on fire"):
        STRUCTURES["elementwise"].to_zarr(target, chunks=2, overwrite=True)
    assert os.listdir(tmp_path) == ["j.zarr"]
    np.testing.assert_allclose(da.from_zarr(str(target)).compute(), np.asarray(J), atol=1e-15)


def test_zarr_partial_store_is_never_at_the_target_name(tmp_path, monkeypatch):
    """While chunks are being written, the store lives under a hidden temporary name."""
    seen = []
    real = da.to_zarr

    def spy(x, url, *a, **k):
        seen.append(url)
        assert not os.path.exists(tmp_path / "j.zarr")
        return real(x, url, *a, **k)
    monkeypatch.setattr(da, "to_zarr", spy)
    STRUCTURES["elementwise"].to_zarr(tmp_path / "j.zarr")
    assert len(seen) == 1 and os.path.basename(seen[0]).startswith(".j.zarr.partial-")
    assert os.listdir(tmp_path) == ["j.zarr"]


def test_distributed_cluster_gives_the_same_numbers(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    J = STRUCTURES["attention"]
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) \
            as cluster, distributed.Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        x = J.to_dask(chunks=2)
        np.testing.assert_allclose(x.compute(), np.asarray(J), rtol=1e-13, atol=1e-15)
        m = J.as_matrix_dask(chunks=5)
        np.testing.assert_allclose(m.compute(), np.asarray(J).reshape(m.shape), rtol=1e-13, atol=1e-15)
        path = J.to_zarr(tmp_path / "j.zarr", chunks=3)
        np.testing.assert_allclose(da.from_zarr(path).compute(), np.asarray(J), rtol=1e-13, atol=1e-15)
        pids = set(client.run(os.getpid).values())
    assert os.getpid() not in pids and len(pids) == 2
    assert cluster.status.name == "closed"


def test_without_the_extra_the_methods_name_it(monkeypatch):
    for mod in ("dask", "dask.array", "zarr"):
        monkeypatch.setitem(sys.modules, mod, None)  # "not installed": import raises ImportError
    J = STRUCTURES["elementwise"]
    for call in (lambda: J.to_dask(), lambda: J.as_matrix_dask(), lambda: J.to_zarr("/nonexistent/j.zarr")):
        with pytest.raises(ImportError, match=r"pip install 'jactensor\[dask\]'"):
            call()
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"needs distributed, which is not installed: pip install 'jactensor\[dask\]"):
        backends.require("distributed")


def test_import_jactensor_never_imports_dask():
    code = ("import sys, numpy as np, jactensor as jt; "
            "J = jt.chain(jt.exp.jacobian(np.ones(3))[0], jt.tanh.jacobian(np.ones(3))[0]); np.asarray(J); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'zarr', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_scale_benchmark_smoke(tmp_path):
    """run_scale end to end at a toy size (threaded scheduler): JSON and markdown written, checks pass."""
    import json

    from jactensor.bench.scale import attention_jacobian_formula, run_scale, structured_sq_norm
    res = run_scale(tmp_path / "out", n=12, d=4, schedulers=("threads",), check_n=8, check_d=3, k=4,
                    store_dir=tmp_path, log=lambda *a: None)
    assert sorted(os.listdir(tmp_path / "out")) == ["scale.json", "scale.md"]
    assert json.loads((tmp_path / "out" / "scale.json").read_text())["n"] == 12
    assert res["check"]["svd_rel_error"] < 1e-6 and res["check"]["norm_rel_error"] < 1e-12
    assert res["check"]["formula_vs_reverse_mode"] < 1e-12
    assert res["runs"]["threads"]["norm_rel_error"] < 1e-12
    assert [p for p in os.listdir(tmp_path) if p != "out"] == []  # stores removed
    args = [_rng(5).normal(size=(5, 3))] + list(_rng(6).normal(size=(3, 3, 3)))
    F = attention_jacobian_formula(*args)
    np.testing.assert_allclose(np.sqrt(structured_sq_norm(F)), np.linalg.norm(jt.jacobian(attention)(*args)))
