"""``jt.jit``: compiled programs that replay without tracing overhead.

- ``var.py``: ``Var``, the recording value (numpy protocols, operators, guards);
- ``record.py``: the recorder -- instructions, argument templates, constants;
- ``hooks.py``: the engine's lazy-backend hooks (primitives, contractions, dense Jacobians);
- ``guards.py``: the checks a replay makes before trusting a program;
- ``program.py``: optimisation, code generation and replay of one program;
- ``compiled.py``: ``jit`` itself -- signatures, the cache, guard variants;
- ``report.py``: ``compiled.explain(*args)``.
"""
from . import hooks as _hooks
from .compiled import DEFAULT_CACHE_SIZE, Compiled, JitRecompileWarning, jit
from .var import Var

__all__ = ["jit", "Compiled", "JitRecompileWarning", "Var", "DEFAULT_CACHE_SIZE"]

_hooks.register()
