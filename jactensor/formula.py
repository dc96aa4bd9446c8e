"""Checking a hand derivation: a candidate Jacobian (a function or an index formula) against the truth.

An index formula is written the way it is derived by hand::

    "dS[i,j]/dQ[c,d] = S[i,j] * (delta(i,c) * K[d,j] - sum_s(S[c,s] * K[d,s]))"

Names are the function's argument names plus anything in ``env`` (intermediates such
as S = softmax(QK)); ``delta(a,b)`` is the identity; ``sum_s(...)`` sums over index s.
"""
import inspect
import re

import numpy as np

__all__ = ["check_formula", "FormulaReport", "evaluate_formula"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def _split_lhs(formula):
    """'dS[i,j]/dQ[c,d] = rhs' -> (['i','j','c','d'], rhs); no lhs -> (None, formula)."""
    if "=" not in formula:
        return None, formula
    lhs, rhs = formula.split("=", 1)
    groups = re.findall(r"\[([^\]]*)\]", lhs)
    if len(groups) != 2:
        raise ValueError(f"check_formula: the left side {lhs.strip()!r} must look like dY[i,j]/dX[r,s]")
    idx = [s.strip() for g in groups for s in g.split(",") if s.strip()]
    return idx, rhs


def evaluate_formula(formula, names, indices=None, shape=None):
    """Evaluate an index formula to a tensor whose axes are ``indices`` (the left side's, by default)."""
    lhs_idx, rhs = _split_lhs(formula)
    out_idx = list(indices) if indices is not None else lhs_idx
    if out_idx is None:
        raise ValueError("check_formula: give the output indices, either as a left side 'dY[i,j]/dX[r,s] = ...' "
                         "or with indices='ijrs'")
    tensors = re.findall(rf"({_IDENT})\[([^\]]*)\]", rhs)
    sums = re.findall(rf"sum_({_IDENT})\s*\(", rhs)
    deltas = re.findall(rf"delta\(\s*({_IDENT})\s*,\s*({_IDENT})\s*\)", rhs)
    letters = list(dict.fromkeys(out_idx + [s.strip() for _, g in tensors for s in g.split(",")] + sums
                                 + [x for d in deltas for x in d]))
    axis = {l: k for k, l in enumerate(letters)}
    sizes = {}
    if shape is not None:
        if len(shape) != len(out_idx):
            raise ValueError(f"check_formula: {len(out_idx)} output indices {out_idx} for a Jacobian of shape {shape}")
        for l, n in zip(out_idx, shape):
            sizes[l] = n
    for name, g in tensors:
        if name not in names:
            raise NameError(f"check_formula: the formula uses {name!r}, which is neither an argument of f nor in env "
                            f"(known: {sorted(names)})")
        ls = [s.strip() for s in g.split(",")]
        arr = np.asarray(names[name], dtype=np.float64)
        if arr.ndim != len(ls):
            raise ValueError(f"check_formula: {name} has shape {arr.shape} but is indexed as {name}[{g}]")
        for l, n in zip(ls, arr.shape):
            if sizes.setdefault(l, n) != n:
                raise ValueError(f"check_formula: index {l!r} has length {sizes[l]} and {n} ({name}[{g}])")
    missing = [l for l in letters if l not in sizes]
    if missing:
        raise ValueError(f"check_formula: cannot tell the length of index/indices {missing}")
    nd = len(letters)

    def place(arr, ls):
        # repeated letters in one tensor take its diagonal; then put each letter on its own axis
        uniq = list(dict.fromkeys(ls))
        if len(uniq) != len(ls):
            arr = np.einsum("".join(chr(97 + uniq.index(l)) for l in ls) + "->" +
                            "".join(chr(97 + k) for k in range(len(uniq))), arr)
        arr = np.transpose(arr, np.argsort([axis[l] for l in uniq]))
        shp = [1] * nd
        for l in uniq:
            shp[axis[l]] = sizes[l]
        return arr.reshape(shp)

    def T(name, *ls):
        return place(np.asarray(names[name], dtype=np.float64), ls)

    def delta(a, b):
        if a == b:
            return np.ones([1] * nd)
        return place(np.eye(sizes[a]), (a, b)) if sizes[a] == sizes[b] else np.zeros([1] * nd)

    def summed(l, x):
        return np.sum(np.broadcast_to(x, np.broadcast_shapes(np.shape(x), [1] * nd)), axis=axis[l], keepdims=True)

    code = re.sub(rf"({_IDENT})\[([^\]]*)\]",
                  lambda m: "_T(%r, %s)" % (m.group(1), ", ".join(repr(s.strip()) for s in m.group(2).split(","))), rhs)
    code = re.sub(rf"delta\(\s*({_IDENT})\s*,\s*({_IDENT})\s*\)", lambda m: f"_delta({m.group(1)!r}, {m.group(2)!r})",
                  code)
    code = re.sub(rf"sum_({_IDENT})\s*\(", lambda m: f"_sum({m.group(1)!r}, ", code)
    if re.search(r"[^\s\w\d\.\(\)\[\]\+\-\*/,'_]", code):
        raise ValueError(f"check_formula: unsupported characters in {rhs.strip()!r}; use + - * / ( ) Name[i,j] "
                         f"delta(i,j) sum_k(...)")
    value = eval(code, {"__builtins__": {}}, {"_T": T, "_delta": delta, "_sum": summed, "exp": np.exp,
                                              "log": np.log, "sqrt": np.sqrt})  # noqa: S307 - vetted characters
    value = np.broadcast_to(value, np.broadcast_shapes(np.shape(value), [1] * nd))
    extra = [axis[l] for l in letters if l not in out_idx]
    if any(value.shape[a] != 1 for a in extra):
        free = [l for l in letters if l not in out_idx and value.shape[axis[l]] != 1]
        raise ValueError(f"check_formula: index/indices {free} are neither on the left side nor summed; wrap the "
                         f"product in sum_{free[0]}(...)")
    value = value.reshape([value.shape[axis[l]] for l in letters if l in out_idx] or [])
    order = [l for l in letters if l in out_idx]
    value = np.transpose(value, [order.index(l) for l in out_idx]) if out_idx else value
    return np.broadcast_to(value, [sizes[l] for l in out_idx]).copy()


class FormulaReport:
    """Result of check_formula: ok, max error, worst index and the first mismatching entries."""

    def __init__(self, ok, max_error, worst, mismatches, shape, message=""):
        self.ok, self.max_error, self.worst, self.mismatches = ok, max_error, worst, mismatches
        self.shape, self.message = shape, message

    def __bool__(self):
        return self.ok

    def __str__(self):
        if self.message:
            return f"WRONG: {self.message}"
        head = (f"{'CORRECT' if self.ok else 'WRONG'}: max |given - expected| = {self.max_error:.3g}"
                + ("" if self.ok else f" at index {self.worst}; {self.n_bad} of {int(np.prod(self.shape))} "
                                      f"entries differ"))
        rows = [f"  at {idx}: expected {e: .6g}, given {g: .6g}" for idx, e, g in self.mismatches]
        return "\n".join([head] + rows)

    __repr__ = __str__


def check_formula(f, candidate, *args, argnum=0, env=None, indices=None, tol=1e-8, max_show=5):
    """Compare a hand-derived Jacobian of ``f`` w.r.t. argument ``argnum`` with the true one.

    ``candidate`` is a function of the same arguments returning the tensor, or an index
    formula (see module doc). The truth is jactensor's chained full Jacobian. Returns a
    FormulaReport listing the worst index and the first mismatching entries.
    """
    from .transforms import jacobian
    expected = np.asarray(jacobian(f, argnums=argnum)(*args))
    if callable(candidate):
        given = np.asarray(candidate(*args), dtype=np.float64)
    else:
        try:
            params = list(inspect.signature(f).parameters)
        except (TypeError, ValueError):
            params = []
        names = dict(zip(params, args))
        names.update(env or {})
        given = evaluate_formula(candidate, names, indices, expected.shape)
    if given.shape != expected.shape:
        return FormulaReport(False, np.inf, None, [], expected.shape,
                             f"the candidate has shape {given.shape}, the Jacobian has shape {expected.shape} "
                             f"(out.shape + in.shape)")
    diff = np.abs(given - expected)
    bad = np.argwhere(diff > tol * max(1.0, float(np.max(np.abs(expected)))))
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)) if diff.size else ()
    shown = [(tuple(int(i) for i in b), float(expected[tuple(b)]), float(given[tuple(b)])) for b in bad[:max_show]]
    rep = FormulaReport(len(bad) == 0, float(diff.max()) if diff.size else 0.0, worst, shown, expected.shape)
    rep.n_bad = len(bad)
    return rep
