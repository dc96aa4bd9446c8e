"""One term of a structured Jacobian: ``coef * einsum(factors)`` laid out on axis labels.

Each factor is an array with one label per axis; the term has one label per axis of
``out + in``, and the same label at several axes is a delta (identity coupling).
"""
import numpy as np

from .backends import as_factor
from .errors import ShapeError

__all__ = ["Term", "normalise_factor"]


class Term:
    """coef * einsum(factors) laid out on axis ``labels``; ``sizes`` maps every label to its length.

    ``owned``: the factors are arrays the engine made for this term (a contraction, a sum), referenced by
    nothing the caller holds, so a transform about to discard the Jacobian may hand one out uncopied."""

    __slots__ = ("coef", "factors", "labels", "sizes", "owned")

    def __init__(self, coef, factors, labels, sizes, owned=False):
        self.coef, self.factors, self.labels, self.sizes = coef, tuple(factors), tuple(labels), sizes
        self.owned = owned

    def present(self):
        """Labels carried by some factor."""
        return {l for _, ls in self.factors for l in ls}

    def distinct(self):
        return tuple(dict.fromkeys(self.labels))

    def canonical(self):
        """Relabel to 0..k-1 (axis labels first), so equal structures give equal einsum specs."""
        order = dict.fromkeys(self.labels)
        for _, ls in self.factors:
            order.update(dict.fromkeys(ls))
        m = {l: i for i, l in enumerate(order)}
        return Term(self.coef, [(a, tuple(m[l] for l in ls)) for a, ls in self.factors],
                    tuple(m[l] for l in self.labels), {m[l]: s for l, s in self.sizes.items() if l in m}, self.owned)

    def scaled(self, c):
        return Term(self.coef * c, self.factors, self.labels, self.sizes, self.owned)

    @property
    def stored_bytes(self):
        return sum(int(getattr(a, "nbytes", 0)) for a, _ in self.factors)


def normalise_factor(arr, labels, sizes):
    """Squeeze broadcast (length-1) axes whose label is longer, so einsum sees true sizes."""
    arr = as_factor(arr)  # float64 numpy, or a lazy array (dask, jit) kept as its backend wants
    labels = tuple(labels)
    if arr.ndim != len(labels):
        raise ShapeError(f"factor of shape {arr.shape} given {len(labels)} labels {labels}")
    squeeze = tuple(k for k, (n, l) in enumerate(zip(arr.shape, labels)) if n == 1 and sizes.get(l, 1) != 1)
    if squeeze:
        arr = arr.reshape([n for k, n in enumerate(arr.shape) if k not in squeeze])
        labels = tuple(l for k, l in enumerate(labels) if k not in squeeze)
    if len(set(labels)) != len(labels):  # a repeated label inside one factor: take its diagonal
        uniq = tuple(dict.fromkeys(labels))
        ids = {l: k for k, l in enumerate(uniq)}
        arr = np.einsum(arr, [ids[l] for l in labels], list(range(len(uniq))))
        labels = uniq
    for n, l in zip(arr.shape, labels):
        if sizes.setdefault(l, n) != n:
            raise ShapeError(f"label {l!r}: factor axis of length {n} against length {sizes[l]}")
    return arr, labels
