"""Pictures of Jacobians (matplotlib, the optional `plot` extra).

``jacobian(J)`` draws a Jacobian (a :class:`~jactensor.Jacobian`, or the ndarray that
``jt.jacobian`` returns, with ``out_ndim``) as its prod(out) x prod(in) matrix; ``save(fig,
path)`` writes a figure without clipping its labels and without ever leaving a half-written
file.
"""
import re

import numpy as np

__all__ = ["jacobian", "save", "require_matplotlib"]

INSTALL_HINT = "pictures need matplotlib: pip install 'jactensor[plot]' (or pip install matplotlib)"


def require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    import matplotlib.pyplot as plt
    return plt


def _index_labels(shape):
    if not shape:
        return [""]
    grids = np.indices(shape).reshape(len(shape), -1).T
    return [",".join(str(int(v)) for v in row) for row in grids]


def _names_from(J):
    """(op, argument name) from a primitive's Jacobian name 'softmax w.r.t. argument 0' (x for softmax)."""
    m = re.fullmatch(r"(\w+) w\.r\.t\. argument (\d+)", J.name or "")
    if not m:
        return None, None
    op, k = m.group(1), int(m.group(2))
    from .registry import registry
    arg = f"argument {k}"
    if op in registry and op not in ("einsum", "concatenate"):
        import inspect
        try:
            ps = [p.name for p in inspect.signature(registry[op].bind).parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD]
            arg = ps[k] if k < len(ps) else arg
        except (TypeError, ValueError):
            pass
    return op, arg


def _as_jacobian(J, out_ndim):
    from .jacobian import Jacobian
    if isinstance(J, Jacobian):
        if out_ndim is not None and out_ndim != len(J.out_shape):
            raise ValueError(f"plot.jacobian: out_ndim={out_ndim}, but the Jacobian has {len(J.out_shape)} output "
                             f"axes (out {J.out_shape}, in {J.in_shape}); leave out_ndim out for a Jacobian")
        return J
    if isinstance(J, np.ndarray) or np.isscalar(J):
        a = np.asarray(J)
        if out_ndim is None:
            raise TypeError(f"plot.jacobian: got an array of shape {a.shape}; say how many of its leading axes are "
                            f"the output with out_ndim (jt.jacobian(f)(x) has out_ndim = f(x).ndim), or wrap it with "
                            f"Jacobian.from_dense(array, out_ndim)")
        if isinstance(out_ndim, bool) or not isinstance(out_ndim, (int, np.integer)) or not 0 <= out_ndim <= a.ndim:
            raise ValueError(f"plot.jacobian: out_ndim must be a whole number from 0 to {a.ndim} for an array of "
                             f"shape {a.shape}; got {out_ndim!r}")
        if a.dtype.kind not in "fiub":
            raise TypeError(f"plot.jacobian: the array has dtype {a.dtype}; a Jacobian is real (float)")
        return Jacobian.from_dense(a.astype(np.float64), int(out_ndim))
    raise TypeError(f"plot.jacobian: expected a jactensor Jacobian (e.g. jt.softmax.jacobian(x)[0]) or the ndarray "
                    f"jt.jacobian returns (with out_ndim); got {type(J).__name__}. Wrap a dense tensor with "
                    f"Jacobian.from_dense(array, out_ndim)")


def jacobian(J, ax=None, out_ndim=None, out_name=None, in_name=None, out_indices=None, in_indices=None,
             cmap="RdBu_r", title=None, annotate=None):
    """Draw a Jacobian as its prod(out) x prod(in) matrix; returns the Axes.

    ``J``: a :class:`~jactensor.Jacobian` of shape ``out_shape + in_shape``, or an ndarray of that shape
    (what ``jt.jacobian`` returns) together with ``out_ndim``, the number of output axes. Row ``i`` of
    the picture is output entry ``i`` and column ``r`` input entry ``r``, each flattened in row-major
    (C) order, so the entry drawn at (row, column) is ``dY[i..]/dX[r..]``. Grid lines separate index
    groups (one group per value of every index but the last), so row-wise softmax shows its diagonal
    blocks; zero is white. The names in the title and labels come from ``out_name`` and ``in_name``,
    else from the primitive and argument a Jacobian came from (``jt.softmax.jacobian(A)[0]``: softmax and
    x), else Y and X. Save with :func:`save` so the colour-bar label is not clipped.
    """
    plt = require_matplotlib()
    J = _as_jacobian(J, out_ndim)
    op, arg = _names_from(J)
    out_name = out_name or op or "Y"
    in_name = in_name or arg or "X"
    if J.size == 0:
        raise ValueError(f"plot.jacobian: the Jacobian has shape {J.shape}, with no entries to draw")
    M = J.as_matrix()
    if ax is None:
        side = min(10.0, 2.0 + 0.35 * max(M.shape))
        _, ax = plt.subplots(figsize=(max(side * M.shape[1] / max(M.shape), 2.5), side))
    lim = float(np.max(np.abs(M))) or 1.0
    im = ax.imshow(M, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    letters_o = out_indices or "ijklmn"[:len(J.out_shape)]
    letters_i = in_indices or "rstuvw"[:len(J.in_shape)]
    for shape, along in ((J.out_shape, "rows"), (J.in_shape, "cols")):
        step = int(shape[-1]) if len(shape) >= 2 else 0
        n = M.shape[0] if along == "rows" else M.shape[1]
        if step and step < n:
            for k in range(step, n, step):
                (ax.axhline if along == "rows" else ax.axvline)(k - 0.5, color="0.3", lw=0.8)
    if max(M.shape) <= 36:
        ax.set_yticks(range(M.shape[0]))
        ax.set_yticklabels(_index_labels(J.out_shape), fontsize=7)
        ax.set_xticks(range(M.shape[1]))
        ax.set_xticklabels(_index_labels(J.in_shape), fontsize=7, rotation=90)
    out_ix, in_ix = ",".join(letters_o), ",".join(letters_i)
    ax.set_ylabel(f"output {out_name}[{out_ix}]  shape {J.out_shape}")
    ax.set_xlabel(f"input {in_name}[{in_ix}]  shape {J.in_shape}")
    zeros = 1.0 - J.nnz / J.size
    ax.set_title(title or f"{out_name} w.r.t. {in_name}: the Jacobian as a {M.shape[0]} x {M.shape[1]} matrix "
                          f"({zeros:.0%} structural zeros)", fontsize=9)
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label(f"d{out_name}[{out_ix}] / d{in_name}[{in_ix}]", fontsize=8)
    if annotate is None:
        annotate = M.size <= 100
    if annotate:
        for (r, c), v in np.ndenumerate(M):
            if v != 0:
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6)
    return ax


def save(fig, path, dpi=120, format="png"):
    """Write ``fig`` to ``path`` (exactly as given) with bbox_inches="tight", so labels outside the axes
    (the colour-bar label) are inside the picture. The image goes to a temporary file in the same folder
    first and is renamed over ``path`` when complete."""
    from .fileio import atomic_write
    return atomic_write(path, lambda f: fig.savefig(f, format=format, dpi=dpi, bbox_inches="tight"))
