"""Pictures of Jacobians (matplotlib, the optional `plot` extra)."""
import numpy as np

__all__ = ["jacobian", "require_matplotlib"]

INSTALL_HINT = "pictures need matplotlib: pip install 'jactensor[plot]' (or pip install matplotlib)"


def require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    import matplotlib.pyplot as plt
    return plt


def _index_labels(shape, names):
    if not shape:
        return [""]
    grids = np.indices(shape).reshape(len(shape), -1).T
    return [",".join(str(int(v)) for v in row) for row in grids]


def jacobian(J, ax=None, out_name="Y", in_name="X", out_indices=None, in_indices=None, cmap="RdBu_r",
             title=None, annotate=None):
    """Draw ``J.as_matrix()`` as a heatmap: rows are output entries, columns input entries.

    Grid lines separate index groups (one group per value of every index but the last),
    so row-wise softmax shows its diagonal blocks. Axis labels name the indices, e.g.
    ``output S[i,j]`` and ``input A[r,s]``. Zero is white. Returns the Axes.
    """
    plt = require_matplotlib()
    from .jacobian import Jacobian
    if not isinstance(J, Jacobian):
        raise TypeError(f"plot.jacobian: expected a jactensor Jacobian (e.g. jt.softmax.jacobian(x)[0]); got "
                        f"{type(J).__name__}. Wrap a dense tensor with Jacobian.from_dense(array, out_ndim)")
    M = J.as_matrix()
    if ax is None:
        side = min(10.0, 2.0 + 0.35 * max(M.shape))
        _, ax = plt.subplots(figsize=(side * max(M.shape[1], 1) / max(M.shape), side))
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
        ax.set_yticklabels(_index_labels(J.out_shape, letters_o), fontsize=7)
        ax.set_xticks(range(M.shape[1]))
        ax.set_xticklabels(_index_labels(J.in_shape, letters_i), fontsize=7, rotation=90)
    ax.set_ylabel(f"output {out_name}[{','.join(letters_o)}]  shape {J.out_shape}")
    ax.set_xlabel(f"input {in_name}[{','.join(letters_i)}]  shape {J.in_shape}")
    zeros = 1.0 - np.count_nonzero(M) / max(M.size, 1)
    ax.set_title(title or f"d{out_name}/d{in_name} as a {M.shape[0]} x {M.shape[1]} matrix ({zeros:.0%} zeros)",
                 fontsize=9)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if annotate is None:
        annotate = M.size <= 100
    if annotate:
        for (r, c), v in np.ndenumerate(M):
            if v != 0:
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6)
    return ax
