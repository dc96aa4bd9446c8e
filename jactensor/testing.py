"""The derivative checker: analytic Jacobian vs central finite differences, and VJP/JVP vs the Jacobian."""
import numpy as np

from .core import Primitive, registry

__all__ = ["check", "check_all", "CheckReport", "finite_difference_jacobian"]


def finite_difference_jacobian(f, x, eps=1e-6):
    """Central differences of ``f`` at float64 array ``x``: shape f(x).shape + x.shape."""
    x = np.array(x, dtype=np.float64)
    y0 = np.asarray(f(x))
    J = np.zeros(y0.shape + (x.size,))
    flat = x.reshape(-1)
    for i in range(x.size):
        h = eps * max(1.0, abs(flat[i]))
        xp, xm = flat.copy(), flat.copy()
        xp[i] += h
        xm[i] -= h
        J[..., i] = (np.asarray(f(xp.reshape(x.shape))) - np.asarray(f(xm.reshape(x.shape)))) / (2 * h)
    return J.reshape(y0.shape + x.shape)


def _err(a, b):
    """Max absolute error, its index, and the error relative to the scale of b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return np.inf, None, np.inf
    if a.size == 0:
        return 0.0, None, 0.0
    d = np.abs(a - b)
    d = np.where(np.isnan(a) & np.isnan(b), 0.0, d)
    d = np.where(np.isnan(d), np.inf, d)
    k = int(np.argmax(d))
    idx = tuple(int(i) for i in np.unravel_index(k, d.shape))
    scale = max(1.0, float(np.max(np.abs(b[np.isfinite(b)]))) if np.any(np.isfinite(b)) else 1.0)
    return float(d.flat[k]), idx, float(d.flat[k]) / scale


class CheckReport:
    """One row per (argument, check): max error, worst index and whether it passed."""

    def __init__(self, name, rows):
        self.name, self.rows = name, rows

    @property
    def ok(self):
        return all(r["ok"] for r in self.rows)

    def __bool__(self):
        return self.ok

    @property
    def max_error(self):
        return max((r["rel"] for r in self.rows), default=0.0)

    def failures(self):
        return [r for r in self.rows if not r["ok"]]

    def __str__(self):
        lines = [f"check {self.name}: {'ok' if self.ok else 'FAILED'}"]
        for r in self.rows:
            where = "" if r["index"] is None else f"  {r['index']}" if isinstance(r["index"], str) else \
                f" worst at {r['index']}"
            lines.append(f"  arg {r['arg']}  {r['check']:<22} max err {r['abs']:.2e} (rel {r['rel']:.2e})"
                         f"{where}  {'ok' if r['ok'] else 'FAIL'}")
        return "\n".join(lines)

    __repr__ = __str__

    def raise_if_failed(self):
        if not self.ok:
            raise AssertionError(str(self))
        return self


def check(op, *args, fd_eps=1e-6, fd_tol=1e-6, tol=1e-9, seed=0, **kwargs):
    """Three-way check of one primitive call, for every array argument.

    - Jacobian vs central finite differences (float64), relative tolerance ``fd_tol``;
    - VJP vs the Jacobian contracted with a random cotangent (also with a batch axis);
    - JVP vs the Jacobian contracted with a random tangent (also with a batch axis);
    - the projection <u, J v> against <vjp(u), v>;
    - the structured Jacobian's own ``J.vjp(u)`` and ``J.jvp(v)`` against its dense form.
    Returns a CheckReport (``report.ok``, ``str(report)``).
    """
    if isinstance(op, str):
        op = registry[op]
    if not isinstance(op, Primitive):
        raise TypeError(f"check: expected a jactensor primitive or its name; got {op!r}")
    rng = np.random.default_rng(seed)
    inputs, params = op._bind(args, kwargs)
    ans = np.asarray(op.forward(inputs, params))
    argnums = op.array_argnums(inputs)
    structured = op.jacobian(*args, **kwargs)
    jacs = [np.asarray(J) for J in structured]
    rows = []
    for k in argnums:
        if not np.all(np.isfinite(inputs[k])):
            rows.append({"arg": k, "check": "finite input", "abs": np.inf, "rel": np.inf, "ok": False,
                         "index": tuple(int(i) for i in np.argwhere(~np.isfinite(inputs[k]))[0])})

    def row(k, what, got, want, limit):
        a, idx, rel = _err(got, want)
        rows.append({"arg": k, "check": what, "abs": a, "rel": rel, "index": idx, "ok": rel <= limit})

    u = rng.normal(size=ans.shape)
    ub = rng.normal(size=(2,) + ans.shape)
    vjps = op.vjp(u, *args, **kwargs)
    vjps_b = op.vjp(ub, *args, **kwargs)
    nout = ans.ndim
    for j, (k, J) in enumerate(zip(argnums, jacs)):
        x = inputs[k]
        row(k, "jacobian shape", np.zeros(J.shape), np.zeros(ans.shape + np.shape(x)), 0)

        def f(xk, k=k):
            ins = list(inputs)
            ins[k] = xk
            return op.forward(tuple(ins), params)

        row(k, "jacobian vs finite diff", J, finite_difference_jacobian(f, x, fd_eps), fd_tol)
        in_axes = list(range(nout, J.ndim))
        row(k, "vjp vs jacobian", vjps[j], np.tensordot(u, J, axes=(list(range(nout)), list(range(nout)))), tol)
        row(k, "batched vjp", vjps_b[j], np.tensordot(ub, J, axes=(list(range(1, nout + 1)), list(range(nout)))), tol)
        v = rng.normal(size=np.shape(x))
        vb = rng.normal(size=(2,) + np.shape(x))
        tangents = [None] * len(argnums)
        tangents[j] = v
        jv = op.jvp(tuple(tangents), *args, **kwargs)
        row(k, "jvp vs jacobian", jv, np.tensordot(J, v, axes=(in_axes, list(range(v.ndim)))), tol)
        tangents[j] = vb
        row(k, "batched jvp", op.jvp(tuple(tangents), *args, **kwargs),
            np.moveaxis(np.tensordot(J, vb, axes=(in_axes, list(range(1, vb.ndim)))), -1, 0), tol)
        same = np.shape(jv) == np.shape(u) and np.shape(vjps[j]) == np.shape(v)
        row(k, "<u, J v> = <vjp(u), v>", np.vdot(u, jv) if same else np.inf, np.vdot(vjps[j], v) if same else 0.0,
            tol)
        # the structured Jacobian's own contractions (no dense form) against its dense form
        for what, method, vec, want in (
                ("Jacobian.vjp vs dense", "vjp", u, np.tensordot(u, J, axes=(list(range(nout)), list(range(nout))))),
                ("Jacobian.jvp vs dense", "jvp", v, np.tensordot(J, v, axes=(in_axes, list(range(v.ndim)))))):
            try:
                got = getattr(structured[j], method)(vec)
            except Exception as e:  # a wrong contraction may not even fit: report it as this row failing
                rows.append({"arg": k, "check": what, "abs": np.inf, "rel": np.inf, "ok": False,
                             "index": f"{type(e).__name__}: {e}"})
                continue
            row(k, what, got, want, tol)
    return CheckReport(op.name, rows)


def check_all(n=2, seed=0):
    """Run ``check`` on every registered primitive's battery; returns {name: [reports]}."""
    rng = np.random.default_rng(seed)
    return {name: [check(p, *a, **kw) for a, kw in p.battery(rng, n)] for name, p in sorted(registry.items())}
