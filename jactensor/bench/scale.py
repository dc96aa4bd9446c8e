"""Jacobians larger than memory, measured: the full Jacobian of single-head attention at n = 512, d = 64.

``softmax(Q K^T / sqrt(d)) V`` with Q, K, V = X Wq, X Wk, X Wv, differentiated w.r.t. X (n x d): the Jacobian has
shape (n, d, n, d), a 32,768 x 32,768 matrix, 8 GiB in float64, while its structured factors take a few MiB.
``run_scale`` writes it to a zarr store through ``J.to_zarr`` (block by block, on dask), reads the store back for
its Frobenius norm, and takes its top singular values with ``dask.array.linalg.svd_compressed`` on
``J.as_matrix_dask()``, once with dask's threaded scheduler and once on a two-worker ``LocalCluster``,
sampling the resident memory of this process and its workers all along. Every number is checked:

- the norm from the store against the norm computed from the factors (``structured_sq_norm``: a sum of
  squares term pair by term pair, through the structure, nothing densified);
- the singular values, at a small size (n = ``check_n``), against numpy's dense SVD, and at full size
  against ARPACK (``scipy.sparse.linalg.svds``) on the operator ``v -> J v``, ``u -> J^T u`` that ``J.jvp`` and
  ``J.vjp`` apply through the factors;
- at the small size, the structured Jacobian against the dense one from reverse mode (``method="rev"``).

The I/O floor is measured in the same run: writing a dask array of zeros of the same shape and chunks to the
same kind of store (uncompressed, every chunk written), the least any dense writer could take.
"""
import json
import math
import os
import shutil
import tempfile
import threading
import time
import warnings

import numpy as np

__all__ = ["RssSampler", "attention_jacobian", "attention_jacobian_formula", "markdown", "run_scale",
           "structured_sq_norm"]

GiB = 2**30


# ---- the problem ---------------------------------------------------------------------------------------------
def _args(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = [rng.standard_normal((d, d)) / math.sqrt(d) for _ in range(3)]  # keeps the softmax away from saturation
    return [X] + W


def attention_jacobian_formula(X, Wq, Wk, Wv):
    """The structured Jacobian of ``attention`` w.r.t. X, written from its closed form (shape (n, e, n, d)).

    With A = Q K^T / sqrt(d), S = softmax(A) row-wise, Y = S V, G = Q Wk^T / sqrt(d), H = K Wq^T / sqrt(d):

        dY[i,j]/dX[p,q] = S[i,p] Wv[q,j]                                   (through V)
                        + S[i,p] G[i,q] (V[p,j] - Y[i,j])                  (through K)
                        + delta(i,p) (sum_b S[i,b] V[b,j] H[b,q] - Y[i,j] (S H)[i,q])   (through Q)

    Five terms whose factors are n x n or n x d; nothing of size n^2 d^2 is formed."""
    from ..jacobian import Jacobian
    scale = 1.0 / math.sqrt(Wq.shape[1])
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    A = Q @ K.T * scale
    S = np.exp(A - A.max(axis=1, keepdims=True))
    S /= S.sum(axis=1, keepdims=True)
    Y = S @ V
    G, H = Q @ Wk.T * scale, K @ Wq.T * scale
    out, inn = Y.shape, X.shape
    parts = [Jacobian.from_labels(out, inn, "ijpq", [(S, "ip"), (Wv, "qj")]),
             Jacobian.from_labels(out, inn, "ijpq", [(S, "ip"), (G, "iq"), (V, "pj")]),
             Jacobian.from_labels(out, inn, "ijpq", [(S, "ip"), (G, "iq"), (Y, "ij")], coef=-1.0),
             Jacobian.from_labels(out, inn, "ijiq", [(S, "ib"), (V, "bj"), (H, "bq")]),
             Jacobian.from_labels(out, inn, "ijiq", [(Y, "ij"), (S @ H, "iq")], coef=-1.0)]
    return Jacobian(out, inn, [t for J in parts for t in J.terms], name="attention w.r.t. X (closed form)")


def attention_jacobian(args, engine_limit=256 * 2**20):
    """(J, how): ``jt.jacobian(attention, structured=True)``, or, where the engine refuses it (it contracts
    some terms into one dense factor, which the memory guard stops), the same Jacobian from its closed form.
    ``engine_limit`` caps what the engine may allocate meanwhile."""
    from ..config import config
    from ..errors import JacobianTooLargeError
    from ..programs import attention
    from ..transforms import jacobian
    try:
        with config.override(max_jacobian_bytes=engine_limit):
            J = jacobian(attention, structured=True)(*args)
        return J, {"source": "jt.jacobian(attention, structured=True)", "engine_refused": None}
    except JacobianTooLargeError as e:
        return attention_jacobian_formula(*args), {
            "source": "closed form (attention_jacobian_formula)",
            "engine_refused": str(e).split("; nothing was allocated")[0]}


def structured_sq_norm(J):
    """sum(J**2) from the factors: sum over term pairs (t, u) of coef_t coef_u <t, u>, each inner product one
    einsum over both terms' factors with their axis labels identified; nothing of J's dense size is formed."""
    total = 0.0
    for t in J.terms:
        for u in J.terms:
            total += t.coef * u.coef * _term_inner(t, u)
    return total


def _term_inner(t, u):
    """sum over all entries of einsum(t's factors) * einsum(u's factors), both laid out on the same axes."""
    from .. import contract as _c
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x
    off = 1 + max(list(t.sizes) + [0])  # u's labels renamed apart from t's, then identified axis by axis
    for a, b in zip(t.labels, u.labels):
        ra, rb = find(a), find(b + off)
        if ra != rb:
            parent[rb] = ra
    ops = [f for f, _ in t.factors] + [f for f, _ in u.factors]
    labels = [tuple(find(l) for l in ls) for _, ls in t.factors] + \
             [tuple(find(l + off) for l in ls) for _, ls in u.factors]
    sizes = {find(l): s for l, s in t.sizes.items()}
    sizes.update({find(l + off): s for l, s in u.sizes.items()})
    carried = {l for ls in labels for l in ls}
    free = math.prod(s for l, s in sizes.items() if l not in carried)  # a label no factor carries: its length
    return free * (float(_c.contract(ops, labels, ())) if ops else 1.0)


def _svds_reference(J, k):
    """Top-k singular values by ARPACK on v -> J v and u -> J^T u through the factors (J.jvp, J.vjp)."""
    from scipy.sparse.linalg import LinearOperator, svds
    m, n = math.prod(J.out_shape), math.prod(J.in_shape)
    op = LinearOperator((m, n), dtype=np.float64,
                        matvec=lambda v: J.jvp(np.reshape(v, J.in_shape)).ravel(),
                        rmatvec=lambda u: J.vjp(np.reshape(u, J.out_shape)).ravel())
    s = svds(op, k=k, return_singular_vectors=False, random_state=0, tol=1e-10)
    return np.sort(s)[::-1]


# ---- measuring ---------------------------------------------------------------------------------------------
class RssSampler:
    """Peak resident memory of this process and of all its child processes (dask workers), sampled in a thread
    every ``interval`` seconds; ``phase(name)`` starts a new named peak."""

    def __init__(self, interval=0.05):
        import psutil
        self.proc, self.interval = psutil.Process(), interval
        self._gone = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)
        self.peak_self = self.peak_total = 0
        self.phases, self._phase = {}, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        own = self.proc.memory_info().rss
        total = own
        for c in self.proc.children(recursive=True):
            try:
                total += c.memory_info().rss
            except self._gone:  # a worker that exited between listing and reading
                continue
        self.peak_self, self.peak_total = max(self.peak_self, own), max(self.peak_total, total)
        if self._phase is not None:
            p = self.phases[self._phase]
            p["self"], p["total"] = max(p["self"], own), max(p["total"], total)
        return own, total

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def phase(self, name):
        self.phases[name] = {"self": 0, "total": 0}
        self._phase = name
        self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def _disk_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.stat(os.path.join(root, f)).st_size
    return total


def _store_kwargs():
    """zarr settings for both stores of a run: no compression (dense floats barely compress) and every chunk
    written (zarr skips chunks equal to the fill value by default, which would make the zeros floor free)."""
    import zarr
    if int(zarr.__version__.split(".")[0]) >= 3:
        return {"compressors": None, "config": {"write_empty_chunks": True}}
    return {"compressor": None, "write_empty_chunks": True}


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _one_scheduler(J, kind, store_dir, sampler, norm_ref, k, power_iter, oversamples, log):
    import dask.array as da

    from ..backends.dask import to_zarr
    rec = {"scheduler": kind}
    chunks = J.to_dask().chunks
    kw = _store_kwargs()
    floor_path = os.path.join(store_dir, f"zeros-{kind}.zarr")
    store = os.path.join(store_dir, f"jacobian-{kind}.zarr")
    try:
        sampler.phase(f"{kind}: I/O floor")
        zeros = da.zeros(J.shape, chunks=chunks, dtype=np.float64)
        _, rec["floor_seconds"] = _timed(lambda: da.to_zarr(zeros, floor_path, mode="w-", **kw))
        rec["floor_disk_bytes"] = _disk_bytes(floor_path)
        shutil.rmtree(floor_path, ignore_errors=True)
        log(f"  {kind}: zeros written in {rec['floor_seconds']:.1f} s ({rec['floor_disk_bytes'] / GiB:.2f} GiB)")

        sampler.phase(f"{kind}: write")
        _, rec["write_seconds"] = _timed(lambda: to_zarr(J, store, **kw))
        rec["write_disk_bytes"] = _disk_bytes(store)
        rec["write_over_floor"] = rec["write_seconds"] / rec["floor_seconds"]
        log(f"  {kind}: Jacobian written in {rec['write_seconds']:.1f} s ({rec['write_disk_bytes'] / GiB:.2f} GiB), "
            f"{rec['write_over_floor']:.2f}x the floor")

        sampler.phase(f"{kind}: norm")
        x = da.from_zarr(store)
        sq, rec["norm_seconds"] = _timed(lambda: float((x * x).sum().compute()))
        rec["norm"] = math.sqrt(sq)
        rec["norm_rel_error"] = abs(rec["norm"] - norm_ref) / norm_ref
        log(f"  {kind}: Frobenius norm from the store {rec['norm']:.12g} in {rec['norm_seconds']:.1f} s "
            f"(rel. diff from the factors {rec['norm_rel_error']:.1e})")

        sampler.phase(f"{kind}: svd")
        m = J.as_matrix_dask()

        def svd():
            _, s, _ = da.linalg.svd_compressed(m, k, n_power_iter=power_iter, n_oversamples=oversamples, seed=0,
                                               compute=True)  # recompute the blocks each pass: never hold J
            return s.compute()
        s, rec["svd_seconds"] = _timed(svd)
        rec["singular_values"] = [float(v) for v in s]
        rec["svd_passes"] = 2 * power_iter + 2
        log(f"  {kind}: top {k} singular values in {rec['svd_seconds']:.1f} s ({rec['svd_passes']} passes): "
            + ", ".join(f"{v:.6g}" for v in s))
    finally:
        for p in (floor_path, store):
            shutil.rmtree(p, ignore_errors=True)
    rec["peak_rss"] = {name: v for name, v in sampler.phases.items() if name.startswith(kind)}
    rec["peak_rss_total"] = max(v["total"] for v in rec["peak_rss"].values())
    rec["peak_rss_self"] = max(v["self"] for v in rec["peak_rss"].values())
    return rec


def _check_small(n, d, k, power_iter, oversamples, seed, log):
    """At a size where the dense Jacobian fits: the structure against reverse mode, the factor norm against
    numpy, svd_compressed against numpy's dense SVD."""
    import dask.array as da

    from ..programs import attention
    from ..transforms import jacobian
    args = _args(n, d, seed)
    dense = jacobian(attention, method="rev")(*args)
    J, how = attention_jacobian(args)
    F = attention_jacobian_formula(*args)
    ref_s = np.linalg.svd(dense.reshape(n * d, n * d), compute_uv=False)[:k]
    _, s, _ = da.linalg.svd_compressed(J.as_matrix_dask(chunks=(n * d // 4, n * d // 4)), k,
                                       n_power_iter=power_iter, n_oversamples=oversamples, seed=0, compute=True)
    s = s.compute()
    norm = math.sqrt(structured_sq_norm(J))
    rec = {"n": n, "d": d, "source": how["source"],
           "engine_vs_reverse_mode": float(np.abs(np.asarray(J) - dense).max()),
           "formula_vs_reverse_mode": float(np.abs(np.asarray(F) - dense).max()),
           "to_dask_vs_dense": float(np.abs(J.to_dask(chunks=(7, 5, 9, 3)).compute() - dense).max()),
           "norm_rel_error": abs(norm - np.linalg.norm(dense)) / np.linalg.norm(dense),
           "svd_rel_error": float(np.max(np.abs(s / ref_s - 1))),
           "svds_rel_error": float(np.max(np.abs(_svds_reference(J, k) / ref_s - 1))),
           "singular_values_dense": [float(v) for v in ref_s], "singular_values_dask": [float(v) for v in s]}
    log(f"check at n = {n}, d = {d}: structure vs reverse mode {rec['engine_vs_reverse_mode']:.1e} (closed form "
        f"{rec['formula_vs_reverse_mode']:.1e}); norm {rec['norm_rel_error']:.1e}; svd_compressed vs numpy "
        f"{rec['svd_rel_error']:.1e}; ARPACK vs numpy {rec['svds_rel_error']:.1e}")
    return rec


# ---- the run ---------------------------------------------------------------------------------------------------
def run_scale(out_dir, n=512, d=64, *, schedulers=("threads", "distributed"), check_n=64,
              check_d=16, k=8, power_iter=2, oversamples=120, store_dir=None, seed=0, log=print):
    """Measure the attention Jacobian past memory; write ``scale.json`` and ``scale.md`` into ``out_dir``
    (atomically) and return the results as a dict.

    ``schedulers``: any of "threads" (dask's default threaded scheduler) and "distributed" (a
    ``LocalCluster(n_workers=2, processes=True, threads_per_worker=1)``). Stores go to a temporary directory
    under ``store_dir`` (default: the system's temporary directory) and are removed afterwards. ``check_n``,
    ``check_d``: the small size where everything is checked against dense numpy (0 skips it)."""
    from ..backends import require
    require("dask.array")
    require("zarr")
    require("distributed")
    require("scipy")  # ARPACK, the cross-check of the singular values
    import dask
    import psutil

    from ..backends.dask import describe_graph
    bad = set(schedulers) - {"threads", "distributed"}
    if bad:
        raise ValueError(f"run_scale: unknown scheduler(s) {sorted(bad)}; use 'threads' and/or 'distributed'")
    t_all = time.perf_counter()
    res = {"problem": "d attention(X)/dX, attention = softmax(Q K^T / sqrt(d)) V, Q, K, V = X Wq, X Wk, X Wv",
           "n": n, "d": d, "k": k, "power_iter": power_iter, "oversamples": oversamples,
           "machine": {"cpus": os.cpu_count(), "ram_bytes": psutil.virtual_memory().total},
           "versions": _versions(), "commit": _measured_commit()}
    if check_n:
        res["check"] = _check_small(check_n, check_d, k, power_iter, oversamples, seed, log)
    args = _args(n, d, seed)
    (J, how), res["structure_seconds"] = _timed(lambda: attention_jacobian(args))
    res.update(how)
    res.update(shape=list(J.shape), dense_bytes=J.nbytes, stored_bytes=J.stored_bytes, terms=len(J.terms),
               chunks=[list(c[:1]) + ([len(c)] if len(c) > 1 else []) for c in J.to_dask().chunks],
               matrix_chunks=[c[0] for c in J.as_matrix_dask().chunks], graph=describe_graph(J.to_dask()))
    log(f"J: shape {J.shape} ({J.nbytes / GiB:.1f} GiB dense, {J.stored_bytes / 2**20:.1f} MiB of factors, "
        f"{len(J.terms)} terms) from {how['source']} in {res['structure_seconds']:.2f} s")
    sq, res["structured_norm_seconds"] = _timed(lambda: structured_sq_norm(J))
    res["structured_norm"] = math.sqrt(sq)
    log(f"Frobenius norm from the factors: {res['structured_norm']:.12g} in {res['structured_norm_seconds']:.2f} s")
    ref, res["svds_seconds"] = _timed(lambda: _svds_reference(J, k))
    res["singular_values_arpack"] = [float(v) for v in ref]
    log(f"ARPACK through J.jvp/J.vjp: {', '.join(f'{v:.6g}' for v in ref)} in {res['svds_seconds']:.1f} s")

    own_tmp = tempfile.mkdtemp(prefix="jactensor-scale-", dir=store_dir)
    res["runs"] = {}
    try:
        with RssSampler() as sampler:
            res["rss_baseline"] = sampler.sample()[0]
            for kind in schedulers:
                if kind == "threads":
                    with dask.config.set(scheduler="threads"):
                        rec = _one_scheduler(J, kind, own_tmp, sampler, res["structured_norm"], k, power_iter,
                                             oversamples, log)
                else:
                    from dask.distributed import Client, LocalCluster
                    sampler.phase("distributed: start")
                    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) \
                            as cluster, Client(cluster), warnings.catch_warnings():
                        # the factors (tens of MiB) travel inside each graph, once per compute, by design
                        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
                        rec = _one_scheduler(J, kind, own_tmp, sampler, res["structured_norm"], k, power_iter,
                                             oversamples, log)
                rec["svd_rel_error_vs_arpack"] = float(np.max(np.abs(np.array(rec["singular_values"]) / ref - 1)))
                res["runs"][kind] = rec
    finally:
        shutil.rmtree(own_tmp, ignore_errors=True)
    res["targets"] = _targets(res)
    res["total_seconds"] = time.perf_counter() - t_all
    _write(out_dir, res)
    log(markdown(res))
    return res


def _targets(res):
    out = []
    for kind, r in res["runs"].items():
        out.append({"target": f"peak RSS under 2 GiB ({kind}; this process and its workers)",
                    "value": r["peak_rss_total"], "met": r["peak_rss_total"] < 2 * GiB})
        out.append({"target": f"writing the store within 3x of writing zeros to the same kind of store ({kind})",
                    "value": r["write_over_floor"], "met": r["write_over_floor"] <= 3.0})
        out.append({"target": f"norm from the store equals the norm from the factors ({kind}, rel. 1e-10)",
                    "value": r["norm_rel_error"], "met": r["norm_rel_error"] < 1e-10})
    return out


def _versions():
    out = {}
    for lib in ("numpy", "opt_einsum", "dask", "distributed", "zarr", "scipy"):
        try:
            out[lib] = getattr(__import__(lib), "__version__", "?")
        except ImportError:
            out[lib] = None
    return out


def _write(out_dir, res):
    """scale.json and scale.md, both or neither (each written under a temporary name, then renamed)."""
    from ..fileio import write_all
    os.makedirs(out_dir, exist_ok=True)
    write_all(os.fspath(out_dir), {"scale.json": json.dumps(res, indent=1, default=float).encode(),
                                   "scale.md": markdown(res).encode()})


def _gib(b):
    return f"{b / GiB:.2f} GiB"


def markdown(res):
    """The results as a markdown section."""
    n, d = res["n"], res["d"]
    lines = [f"# Jacobians larger than memory: attention at n = {n}, d = {d}", "",
             (f"J = d attention(X)/dX, shape {tuple(res['shape'])}: {_gib(res['dense_bytes'])} dense, "
              f"{res['stored_bytes'] / 2**20:.1f} MiB of factors in {res['terms']} terms, from {res['source']} "
              f"in {res['structure_seconds']:.2f} s."), ""]
    if res.get("engine_refused"):
        lines += [f"The engine's route was refused: {res['engine_refused']}.", ""]
    g = res["graph"]
    lines += [(f"Blocks: {g['blocks']} of chunks {res['chunks']} (matrix form {res['matrix_chunks'][0]} x "
               f"{res['matrix_chunks'][1]}), {g['zero_blocks']} structural zeros; one task per block, all reading "
               f"one shared input of {g['factor_arrays']} factor arrays ({g['factor_bytes'] / 2**20:.1f} MiB)."), "",
              (f"Frobenius norm from the factors {res['structured_norm']:.12g} "
               f"({res['structured_norm_seconds']:.2f} s); top {res['k']} singular values by ARPACK through "
               f"J.jvp / J.vjp: " + ", ".join(f"{v:.6g}" for v in res["singular_values_arpack"])
               + f" ({res['svds_seconds']:.1f} s)."), ""]
    if res["runs"]:
        kinds = list(res["runs"])
        lines += ["| | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
        rows = [("write zeros, same store kind (I/O floor)", lambda r: f"{r['floor_seconds']:.1f} s"),
                ("write J.to_zarr", lambda r: f"{r['write_seconds']:.1f} s"),
                ("write / floor (target <= 3)", lambda r: f"{r['write_over_floor']:.2f}"),
                ("bytes on disk", lambda r: _gib(r["write_disk_bytes"])),
                ("Frobenius norm from the store", lambda r: f"{r['norm_seconds']:.1f} s"),
                ("  rel. difference from the factors", lambda r: f"{r['norm_rel_error']:.1e}"),
                (f"svd_compressed, top {res['k']}", lambda r: f"{r['svd_seconds']:.1f} s ({r['svd_passes']} passes)"),
                ("  max rel. difference from ARPACK", lambda r: f"{r['svd_rel_error_vs_arpack']:.1e}"),
                ("peak RSS, this process", lambda r: _gib(r["peak_rss_self"])),
                ("peak RSS, process + workers (target < 2 GiB)", lambda r: _gib(r["peak_rss_total"]))]
        for label, f in rows:
            lines.append(f"| {label} | " + " | ".join(f(res["runs"][k]) for k in kinds) + " |")
        lines.append("")
    c = res.get("check")
    if c:
        lines += [(f"Checked at n = {c['n']}, d = {c['d']} against dense numpy: structure vs reverse mode "
                   f"{c['engine_vs_reverse_mode']:.1e}, closed form {c['formula_vs_reverse_mode']:.1e}, to_dask "
                   f"{c['to_dask_vs_dense']:.1e}; norm rel. {c['norm_rel_error']:.1e}; svd_compressed "
                   f"({res['power_iter']} power iterations, {res['oversamples']} oversamples) vs numpy's SVD rel. "
                   f"{c['svd_rel_error']:.1e}; ARPACK vs numpy rel. {c['svds_rel_error']:.1e}."), ""]
    lines += ["| target | value | met |", "|---|---:|---|"]
    for t in res["targets"]:
        v = t["value"]
        v = _gib(v) if "RSS" in t["target"] else (f"{v:.2f}" if "3x" in t["target"] else f"{v:.1e}")
        lines.append(f"| {t['target']} | {v} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", f"Total {res['total_seconds']:.0f} s; {res['machine']['cpus']} CPUs, "
              f"{res['machine']['ram_bytes'] / GiB:.0f} GiB RAM; "
              + ", ".join(f"{k} {v}" for k, v in res["versions"].items() if v) + "."
              + (f" Code measured: commit {res['commit']}." if res.get("commit") else "")]
    return "\n".join(lines) + "\n"


def _measured_commit():
    from . import _commit
    return _commit()
