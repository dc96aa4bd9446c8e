"""The registry of primitives: name -> Primitive, filled at import by the op families.

Tests, docs, ``explain`` and the CLI iterate over it; the tracer looks operators up in it.
"""
import difflib

__all__ = ["Registry", "registry"]


class Registry(dict):
    """name -> Primitive; duplicates refused, unknown names list the closest valid ones."""

    def add(self, prim):
        if prim.name in self:
            raise ValueError(f"a primitive named {prim.name!r} is already registered")
        self[prim.name] = prim
        return prim

    def __missing__(self, name):
        close = difflib.get_close_matches(str(name), list(self), n=5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise KeyError(f"no primitive named {name!r}{hint}; registered: {', '.join(sorted(self))}")


registry = Registry()
