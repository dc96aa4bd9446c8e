"""The one place where einsum happens: opt_einsum with cached expressions and plans."""
from functools import lru_cache

import numpy as np
import opt_einsum as oe

from . import backends as _backends

__all__ = ["symbols", "contract", "plan", "sequential_path", "PathCost"]


def symbols(labels):
    """Einsum subscript string for integer labels (safe past 52 labels)."""
    return "".join(oe.get_symbol(l) for l in labels)


def _spec(in_labels, out_labels):
    return ",".join(symbols(l) for l in in_labels) + "->" + symbols(out_labels)


@lru_cache(maxsize=4096)
def _expression(spec, shapes, path):
    optimize = list(path) if path is not None else "auto"
    return oe.contract_expression(spec, *shapes, optimize=optimize)


def contract(operands, in_labels, out_labels, path=None):
    """einsum of ``operands`` (arrays with integer labels) to ``out_labels``.

    The expression (parse + path search) is cached per subscripts and shapes,
    because that overhead (20-65 us) dominates small problems.
    """
    spec = _spec(in_labels, out_labels)
    if len(operands) == 1 and tuple(in_labels[0]) == tuple(out_labels):
        return operands[0]
    shapes = tuple(np.shape(o) for o in operands)
    expr = _expression(spec, shapes, None if path is None else tuple(map(tuple, path)))
    lazy = _backends.contract(expr, operands)  # dask or jit-recorded operands: their backend contracts
    return expr(*operands) if lazy is None else lazy


class PathCost:
    """FLOPs and largest intermediate (elements) of one contraction order."""

    __slots__ = ("flops", "largest", "path")

    def __init__(self, flops, largest, path):
        self.flops, self.largest, self.path = int(flops), int(largest), path

    def __add__(self, other):
        return PathCost(self.flops + other.flops, max(self.largest, other.largest), None)

    def __repr__(self):
        return f"PathCost(flops={self.flops}, largest={self.largest})"


ZERO_COST = PathCost(0, 0, None)


def sequential_path(n):
    """Path that absorbs operands one by one in list order: ((0,1), (0,k-1), ...)."""
    if n < 2:
        return [(0,)] if n == 1 else []
    path = [(0, 1)]
    for k in range(n - 1, 1, -1):
        path.append((0, k - 1))
    return path


@lru_cache(maxsize=4096)
def _cost(spec, shapes, path):
    optimize = list(path) if path is not None else "auto"
    _, info = oe.contract_path(spec, *shapes, shapes=True, optimize=optimize)
    return PathCost(info.opt_cost, info.largest_intermediate, info.path)


def plan(shapes, in_labels, out_labels, path=None):
    """PathCost of contracting operands of these shapes with ``path`` (None: opt_einsum's choice)."""
    if len(shapes) == 0:
        return ZERO_COST
    spec = _spec(in_labels, out_labels)
    return _cost(spec, tuple(map(tuple, shapes)), None if path is None else tuple(map(tuple, path)))
