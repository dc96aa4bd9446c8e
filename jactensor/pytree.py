"""Pytrees: nested tuples, lists, dicts and namedtuples of arrays, flattened to leaves and rebuilt.

As in JAX: dict keys are sorted (insertion order when they cannot be sorted), a
namedtuple keeps its type and fields, and ``None`` is an empty node (no leaves).
"""
__all__ = ["tree_flatten", "tree_unflatten", "tree_map", "TreeDef"]


def _is_namedtuple(x):
    return isinstance(x, tuple) and hasattr(type(x), "_fields") and hasattr(x, "_asdict")


def _dict_keys(d):
    try:
        return sorted(d)
    except TypeError:  # keys of mixed types: keep insertion order
        return list(d)


class TreeDef:
    """The structure of a pytree; equal structures compare equal (for caching and checks)."""

    __slots__ = ("kind", "meta", "children")

    def __init__(self, kind, meta, children):
        self.kind, self.meta, self.children = kind, meta, children

    def _key(self):
        return (self.kind, self.meta, tuple(c._key() if c is not None else None for c in self.children))

    def __eq__(self, other):
        return isinstance(other, TreeDef) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"TreeDef({self.kind.__name__ if isinstance(self.kind, type) else self.kind}, {self.meta!r})"

    @property
    def num_leaves(self):
        return sum(1 if c is None else c.num_leaves for c in self.children)


def tree_flatten(tree):
    """(leaves, treedef): leaves depth first; a bare leaf has treedef None."""
    leaves = []
    d = _flatten(tree, leaves)
    return leaves, d


def _flatten(tree, leaves):
    if tree is None:
        return TreeDef("none", None, ())
    if isinstance(tree, (tuple, list)):
        kind = type(tree) if (_is_namedtuple(tree) or type(tree) in (tuple, list)) else (
            tuple if isinstance(tree, tuple) else list)
        return TreeDef(kind, None, tuple(_flatten(t, leaves) for t in tree))
    if isinstance(tree, dict):
        keys = _dict_keys(tree)
        return TreeDef(dict, tuple(keys), tuple(_flatten(tree[k], leaves) for k in keys))
    leaves.append(tree)
    return None


def tree_unflatten(treedef, leaves):
    if treedef is None:  # a single array, the common case
        return leaves[0]
    return _build(treedef, iter(leaves))


def _build(d, it):
    if d is None:
        return next(it)
    if d.kind == "none":
        return None
    if d.kind is dict:
        return {k: _build(s, it) for k, s in zip(d.meta, d.children)}
    items = [_build(s, it) for s in d.children]
    if d.kind not in (tuple, list):  # a namedtuple
        return d.kind(*items)
    return d.kind(items)


def tree_map(fn, tree):
    leaves, d = tree_flatten(tree)
    return tree_unflatten(d, [fn(l) for l in leaves])
