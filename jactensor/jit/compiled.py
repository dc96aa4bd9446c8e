"""``jit(f)``: the compiled function -- its call signature, its cache of programs, their variants.

The first call with a new *signature* runs ``f`` once on recording values (``Var``) and keeps the
program it recorded; later calls with that signature replay the program. The signature is the
pytree structure of the arguments, the shape and dtype of every array leaf, the type of every
float leaf (floats are values: they are recorded like 0-d arrays), the value of every other leaf
(ints, strings, None, hashable objects: static, so ``f`` may branch on them) and of the static
arguments, and the ``jt.config`` settings (they change what ``f`` computes).

Variants: a replay whose guard fails traces ``f`` afresh for that call; the new program is kept
as a child of the failed one, keyed by the guard and the value it saw. ``_cache_size()`` counts
every program held. At most ``cache_size`` programs are held (default 64): when one more would
pass the limit, the signatures used least recently are dropped whole; a signature whose variants
alone reach the limit starts again from its newest program.
"""
import functools
import inspect
import itertools
import warnings

import numpy as np

from ..config import _overrides, config
from ..errors import ArgnumError, JactensorError
from ..pytree import tree_flatten, tree_unflatten
from ..tracer import Tracer
from .guards import GuardFailed
from .program import Program, check_same
from .record import _LOCK, Recorder, recording
from .var import Var

__all__ = ["jit", "Compiled", "JitRecompileWarning", "DEFAULT_CACHE_SIZE"]

DEFAULT_CACHE_SIZE = 64
RECOMPILE_WARN = 8   # guard-failure recompilations of one function before it warns (once)


class JitRecompileWarning(UserWarning):
    """A compiled function keeps recompiling because values its Python code inspected keep changing."""


class _Inline(Exception):
    """An argument is already being recorded or differentiated: run ``f`` as it is (no compilation)."""


class _Entry:
    """The programs of one signature: the root variant and its guard-keyed children."""

    __slots__ = ("root", "count", "used")

    def __init__(self, root):
        self.root, self.count, self.used = root, 1, 0


_FLOATS = (float, np.floating)


def _config_key():
    """The jt.config settings in force (they change what a function computes: part of the signature)."""
    try:
        ov = _overrides.get()
        d = config._defaults
        return tuple(d.values()) if not ov else tuple({**d, **ov}.values())
    except AttributeError:  # pragma: no cover - a config without these internals
        return tuple(config.as_dict().values())


def _static_key(x, what):
    try:
        hash(x)
    except TypeError:
        raise ArgnumError(f"jt.jit: {what} is a {type(x).__name__}, which is not hashable; a static value must be "
                          f"hashable (a tuple, not a list; a frozen dataclass). Make it an array argument instead "
                          f"if it holds numbers") from None
    return ("static", type(x), x)


def _leaf_key(x, leaves, what):
    t = type(x)
    if t is np.ndarray:
        leaves.append(x)
        return (x.shape, x.dtype)
    if t is float or isinstance(x, np.floating):
        leaves.append(np.asarray(x))
        return (t,)
    if t is Var or t is Tracer:
        raise _Inline()
    if isinstance(x, np.ndarray):
        leaves.append(x)
        return (t, x.shape, x.dtype)
    return _static_key(x, what)


class Compiled:
    """A function compiled by :func:`jit` (see there). Call it like ``f``; ``explain(*args)`` shows the
    program for those arguments; ``_cache_size()`` counts the programs held."""

    def __init__(self, f, static_argnums=(), static_argnames=(), cache_size=DEFAULT_CACHE_SIZE):
        if not callable(f):
            raise TypeError(f"jt.jit: expected a function, got {type(f).__name__}")
        nums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
        for a in nums:
            if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
                raise ArgnumError(f"jt.jit: static_argnums must be ints; got {static_argnums!r}")
        names = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
        for n in names:
            if not isinstance(n, str):
                raise ArgnumError(f"jt.jit: static_argnames must be strings; got {static_argnames!r}")
        if not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"jt.jit: cache_size must be a positive int; got {cache_size!r}")
        try:  # static names and positions describe the same parameters (as in jax.jit)
            params = list(inspect.signature(f).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        nums = set(int(a) for a in nums) | {positional.index(n) for n in names if n in positional}
        names = set(names) | {positional[a] for a in nums if 0 <= a < len(positional)}
        self.f = f
        self.static_argnums, self.static_argnames = tuple(sorted(nums)), tuple(sorted(names))
        self.cache_size = cache_size
        self._cache = {}
        self._lock = _LOCK  # one lock for every compilation: a compile may call another compiled function
        self._clock = itertools.count()
        self._recompiles = 0
        self._warned = False
        self._stats = {"compiles": 0, "replays": 0, "guard_failures": 0}
        functools.update_wrapper(self, f, updated=())
        self.__name__ = f"jit({getattr(f, '__name__', type(f).__name__)})"
        self._jactensor = {"kind": "jit", "f": f, "static_argnums": self.static_argnums,
                           "static_argnames": self.static_argnames}

    def __repr__(self):
        return f"<jactensor {self.__name__}: {self._cache_size()} program(s)>"

    def __get__(self, obj, objtype=None):  # decorating a method binds like a function
        return self if obj is None else functools.partial(self, obj)

    # ---- the signature --------------------------------------------------------------------------------
    def _signature(self, args, kwargs):
        leaves, parts = [], []
        nargs = len(args)
        static = {a % nargs if nargs else a for a in self.static_argnums if -nargs <= a < nargs}
        for i, a in enumerate(args):
            if i in static:
                parts.append(_static_key(a, f"static argument {i}"))
            elif type(a) is np.ndarray:
                leaves.append(a)
                parts.append((a.shape, a.dtype))
            else:
                tl, d = tree_flatten(a)
                parts.append((d, tuple(_leaf_key(x, leaves, f"argument {i}") for x in tl)))
        for name in sorted(kwargs):
            v = kwargs[name]
            if name in self.static_argnames:
                parts.append((name, _static_key(v, f"static argument {name!r}")))
            else:
                tl, d = tree_flatten(v)
                parts.append((name, d, tuple(_leaf_key(x, leaves, f"argument {name!r}") for x in tl)))
        parts.append(_config_key())
        return tuple(parts), leaves, static

    # ---- calling ------------------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        try:
            key, leaves, static = self._signature(args, kwargs)
        except _Inline:   # inside another compilation or a transform: f runs as it is
            return self.f(*args, **kwargs)
        entry = self._cache.get(key)
        if entry is None:
            return self._compile_new(key, args, kwargs, leaves, static)
        entry.used = next(self._clock)
        prog = entry.root
        while True:
            try:
                vals = prog.fn(*leaves)
            except GuardFailed as e:
                self._stats["guard_failures"] += 1
                child = prog.children.get((e.index, e.key))
                if child is None:
                    return self._compile_variant(key, entry, prog, (e.index, e.key), args, kwargs, leaves, static)
                prog = child
                continue
            self._stats["replays"] += 1
            return prog.outputs(vals, leaves)

    def _trace(self, args, kwargs, leaves, static):
        """Run f once on Vars; returns (program, its outputs for this call)."""
        rec = Recorder(getattr(self.f, "__name__", type(self.f).__name__))
        with recording(rec):
            vs = iter([rec.input(x) for x in leaves])
            vargs = []
            for i, a in enumerate(args):
                if i in static:
                    vargs.append(a)
                elif type(a) is np.ndarray:
                    vargs.append(next(vs))
                else:
                    vargs.append(self._wrap_tree(a, vs))
            vkwargs = {}
            for name in sorted(kwargs):
                vkwargs[name] = kwargs[name] if name in self.static_argnames else self._wrap_tree(kwargs[name], vs)
            out = self.f(*vargs, **vkwargs)
            prog = Program(rec, out)
        self._stats["compiles"] += 1
        try:
            vals = prog.fn(*leaves)
        except GuardFailed as e:   # the values it was recorded with must pass its own guards
            raise JactensorError(
                f"{self.__name__}: the program recorded for these arguments fails its own guard "
                f"({prog.guards[e.index].describe()}) when replayed on them, so f does not compute the same thing "
                f"twice (random numbers? a global it changes?); it cannot be compiled") from None
        result = prog.outputs(vals, leaves)
        if not prog.has_writes:
            check_same(result, out, rec.name)
        return prog, result

    @staticmethod
    def _wrap_tree(a, vs):
        tl, d = tree_flatten(a)
        return tree_unflatten(d, [next(vs) if (isinstance(x, np.ndarray) or isinstance(x, _FLOATS)) else x
                                  for x in tl])

    def _compile_new(self, key, args, kwargs, leaves, static):
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:       # another thread compiled it meanwhile
                return self(*args, **kwargs)
            prog, result = self._trace(args, kwargs, leaves, static)
            entry = _Entry(prog)
            entry.used = next(self._clock)
            self._make_room(1, keep=None)
            self._cache[key] = entry
            return result

    def _compile_variant(self, key, entry, parent, gkey, args, kwargs, leaves, static):
        with self._lock:
            child = parent.children.get(gkey)
            if child is not None:
                return self(*args, **kwargs)
            prog, result = self._trace(args, kwargs, leaves, static)
            self._recompiles += 1
            self._warn(parent, gkey[0])
            if self._cache.get(key) is not entry:
                return result   # the signature was evicted meanwhile: nothing to attach to
            if entry.count + 1 > self.cache_size:
                entry.root, entry.count = prog, 1   # its variants alone fill the cache: start over
            else:
                self._make_room(1, keep=key)
                parent.children[gkey] = prog
                entry.count += 1
            return result

    def _make_room(self, n, keep):
        total = sum(e.count for e in self._cache.values())
        if total + n <= self.cache_size:
            return
        for k in sorted(self._cache, key=lambda k: self._cache[k].used):
            if k == keep:
                continue
            total -= self._cache.pop(k).count
            if total + n <= self.cache_size:
                return

    def _warn(self, prog, gindex):
        if self._recompiles >= RECOMPILE_WARN and not self._warned:
            self._warned = True
            g = prog.guards[gindex]
            warnings.warn(
                f"{self.__name__} has recompiled {self._recompiles} times because values its Python code turned "
                f"into constants keep changing; the latest: guard {g.describe()}. Each change traces the function "
                f"again. Pass such values as static_argnums/static_argnames if they take few values, or compute "
                f"with arrays instead of Python branches (np.where(mask, a, b), x * (x > 0)).",
                JitRecompileWarning, stacklevel=3)

    # ---- introspection ------------------------------------------------------------------------------------
    def _cache_size(self):
        """Number of compiled programs held (every signature, every guard variant)."""
        return sum(e.count for e in list(self._cache.values()))

    def clear_cache(self):
        with self._lock:
            self._cache.clear()

    def program(self, *args, **kwargs):
        """The program a call with these arguments replays (compiling it first if needed)."""
        key, leaves, static = self._signature(args, kwargs)
        entry = self._cache.get(key)
        if entry is None:
            self(*args, **kwargs)
            entry = self._cache.get(key)
            if entry is None:
                raise JactensorError(f"{self.__name__}: the program for these arguments was not kept")
        prog = entry.root
        while True:
            try:
                prog.fn(*leaves)
                return prog
            except GuardFailed as e:
                child = prog.children.get((e.index, e.key))
                if child is None:
                    self(*args, **kwargs)
                    continue
                prog = child

    def explain(self, *args, **kwargs):
        """What a call with these arguments replays: numpy calls, buffers kept for the backward pass, guards,
        compile time (the program is compiled first if needed)."""
        from .report import JitExplanation
        return JitExplanation(self, self.program(*args, **kwargs))


def jit(f=None, static_argnums=(), static_argnames=(), cache_size=DEFAULT_CACHE_SIZE):
    """Compile ``f`` -- or any transform of it: ``jit(grad(f))``, ``jit(value_and_grad(f))``,
    ``jit(jacobian(f, method=...))``, ``jit(hessian(f))``, ``jit(lambda x, g: vjp(f, x)[1](g))`` -- into a
    flat program of numpy calls, replayed without tracing.

    The first call for each signature (pytree structure; shapes and dtypes of array leaves; values of
    static arguments and of leaves that are neither arrays nor floats; ``jt.config``) runs ``f`` once on
    recording values and returns its result; later calls with that signature replay the recorded calls
    (the forward, the VJP/JVP rules, the contractions with their paths searched once) and return fresh
    arrays. ``static_argnums`` / ``static_argnames`` name arguments passed through unchanged and part of
    the signature (they must be hashable). Python floats are values, recorded like 0-d arrays.

    Python control flow on values is guarded: where ``f`` turns a recorded value into a Python value
    (``if x.sum() > 0``, ``int(n)``, ``x.item()``, ``np.asarray(x)`` -- the last guards the whole
    array), the replay re-checks it and traces ``f`` again for a call that differs, keeping each variant.
    Values used without a derivative -- masks (``x > 0``), argmax, index arrays and integer labels
    computed from the inputs -- are recomputed at every replay, never frozen. Arrays captured from the
    enclosing scope are constants fixed when first compiled (pass them as arguments to vary them);
    numpy calls on such constants alone, and Python side effects (``print``), happen at compile time only.

    Inside another transform (``grad(jit(f))``) or another compilation, ``f`` runs uncompiled.
    Replays are thread-safe. ``compiled.explain(*args)`` shows the program; ``compiled._cache_size()``
    counts the programs held (at most ``cache_size``; least recently used signatures are dropped first).

    >>> import numpy as np, jactensor as jt
    >>> g = jt.jit(jt.grad(lambda x: jt.sum(jt.tanh(x) ** 2)))
    >>> x = np.array([0.5, -1.0])
    >>> np.allclose(g(x), 2 * np.tanh(x) * (1 - np.tanh(x) ** 2))
    True
    """
    if f is None:
        return lambda fn: Compiled(fn, static_argnums, static_argnames, cache_size)
    return Compiled(f, static_argnums, static_argnames, cache_size)
