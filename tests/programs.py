"""Random programs of primitives (generated, not hand-picked) with fan-out, fan-in and broadcasting.

Besides elementwise maps, matmuls, softmax and reductions, the steps include the shapes of code that
hand-picked tests tend to miss:

- broadcast-then-reduce: ``sum(broadcast_to(v, (r,) + v.shape), axis=0)`` and friends, whose
  Jacobian is a pure count (r) with no factor carrying it;
- indexing with negative ints, negative and repeated integer arrays, reversed and negative-start
  slices, and mixed basic + advanced indices;
- with ``kinks=True``: ops evaluated exactly at their kinks, where the derivative is a convention
  (relu'(0) = 0; tied maxima share the derivative equally). Finite differences cannot check those,
  so ``Program.reference(*args)`` gives the same program with every kink op replaced by its
  linearisation under the documented convention, frozen at ``args``: the same value there, smooth
  around it, so its finite differences are the derivative the convention defines.
"""
import numpy as np

import jactensor as jt

INPUT_SHAPES = [(3, 4), (4,), (3, 1)]


def _unary(rng):
    return [lambda v: jt.tanh(v), lambda v: jt.sigmoid(v), lambda v: jt.exp(0.2 * v), lambda v: v * v,
            lambda v: jt.gelu(v), lambda v: jt.gelu(v, approximate=False), lambda v: -v][rng.integers(7)]


# ---- broadcast-then-reduce ------------------------------------------------------------------------
def _broadcast_reduce(rng, shape):
    """A step that broadcasts its input along a new or length-1 axis and reduces that axis again."""
    r = int(rng.integers(2, 5))
    kind = int(rng.integers(4))
    if kind == 0:    # d/dv = r: the count is the whole derivative
        return lambda a: jt.sum(jt.broadcast_to(a, (r,) + tuple(shape)), axis=0)
    if kind == 1:    # the same through add's broadcasting
        return lambda a: jt.sum(a + np.zeros((r,) + tuple(shape)), axis=0) * 0.5
    if kind == 2:    # a trailing new axis, averaged away
        return lambda a: jt.mean(jt.broadcast_to(a[..., None], tuple(shape) + (r,)), axis=-1) + a
    return lambda a: jt.sum(jt.broadcast_to(a, (r,) + tuple(shape))) + 0.1 * a  # everything at once


# ---- indexing ------------------------------------------------------------------------------------------
def _index(rng, shape):
    """An index valid for ``shape`` drawn from negative, reversed, repeated and mixed forms (or None)."""
    nd = len(shape)
    cands = []
    if nd >= 1 and shape[-1] >= 1:
        cands.append((Ellipsis, -1))
        cands.append((Ellipsis, slice(None, None, -1)))
    if nd >= 1 and shape[0] >= 2:
        cands += [-2, slice(-2, None), np.array([-1, 0, -1]), np.array([-shape[0], shape[0] - 1])]
    if nd >= 1 and shape[0] >= 1:
        cands += [(None, -1), np.array([-1])]
    if nd >= 2 and shape[1] >= 2:
        cands += [(slice(None), np.array([0, -1])),        # slice + integer array
                  (np.array([-1, 0]), -1),                 # integer array + negative int
                  (-1, slice(None, None, -2)),             # negative int + negative step
                  (slice(None, None, -1), np.array([[1, -1], [0, -2]]))]
    if not cands:
        return None
    return cands[int(rng.integers(len(cands)))]


# ---- kinks at their documented convention ----------------------------------------------------------------
def _kink(rng, shape, kind=None):
    """(fn, freeze): an op evaluated exactly at its kink, and ``freeze(a0)`` giving its linearisation
    at a0 under the documented convention (same value at a0, smooth)."""
    kind = int(rng.integers(3)) if kind is None else kind
    if kind == 0:
        # relu at exactly 0 where m == 1 (the input is v - v0 there); relu'(0) = 0 by convention
        m = (rng.random(shape) < 0.5).astype(np.float64)
        m.reshape(-1)[:1] = 1.0

        def fn(a):
            return jt.relu(a - jt.getval(a) * m)

        def freeze(a0):
            c = a0 * m
            mask = ((a0 - c) > 0).astype(np.float64)
            return lambda a: (a - c) * mask
        return fn, freeze
    if kind == 1:
        # max of v and a constant equal to it: every entry a tie; each of the two gets half
        def fn(a):
            return jt.max(jt.concatenate([a[None], jt.getval(a)[None]], axis=0), axis=0)

        def freeze(a0):
            return lambda a: 0.5 * a + 0.5 * a0
        return fn, freeze
    # max over the last axis of [v, v]: each maximum appears twice, both share the derivative
    # (together 1); smooth, so no linearisation is needed (kept here: it needs a tie to mean anything)
    if len(shape) == 0:
        return (lambda a: jt.max(jt.concatenate([a[None], a[None]], axis=0), axis=0)), None
    return (lambda a: jt.max(jt.concatenate([a, a], axis=-1), axis=-1, keepdims=True)), None


class Program:
    """f(x, y, z): the recorded steps replayed on any arguments (numpy arrays or traced values)."""

    __name__ = "random_program"

    def __init__(self, steps, j):
        self.steps, self.j = steps, j

    def _run(self, args, fns):
        env = list(args)
        for fn, idx in zip(fns, (i for _, i, _ in self.steps)):
            env.append(fn(*[env[q] for q in idx]))
        return env[-1] + 0.1 * jt.sum(env[self.j] * env[self.j])

    def __call__(self, x, y, z):
        return self._run((x, y, z), [fn for fn, _, _ in self.steps])

    @property
    def has_kinks(self):
        return any(freeze is not None for _, _, freeze in self.steps)

    def reference(self, *args):
        """The program with every kink op replaced by its convention's linearisation frozen at ``args``."""
        env = [np.asarray(a, dtype=np.float64) for a in args]
        fns = []
        for fn, idx, freeze in self.steps:
            vals = [env[q] for q in idx]
            fns.append(fn if freeze is None else freeze(*vals))
            env.append(np.asarray(fn(*vals)))
        return lambda x, y, z: self._run((x, y, z), fns)


def random_program(seed, n_steps=6, kinks=False):
    """A Program f(x, y, z) (inputs shaped like INPUT_SHAPES) of ``n_steps`` random primitive steps.

    Steps: elementwise maps, broadcasting binary ops (fan-out when an operand is reused), matmuls,
    softmax / log_softmax, reductions, transposes, layer_norm, broadcast-then-reduce and negative /
    mixed indexing; with ``kinks=True`` also relu and max evaluated exactly at their kinks.
    """
    rng = np.random.default_rng(seed)
    vals = [rng.normal(size=s) for s in INPUT_SHAPES]
    steps = []

    def add_step(fn, idx, freeze=None):
        out = fn(*[vals[i] for i in idx])
        steps.append((fn, idx, freeze))
        vals.append(np.asarray(out))

    n_kinds = 12 if kinks else 11
    for _ in range(n_steps):
        k = rng.integers(n_kinds)
        i = int(rng.integers(len(vals)))
        v = vals[i]
        if k <= 1:
            add_step(_unary(rng), (i,))
        elif k == 2:  # binary with broadcasting against another pool value (fan-out when j == i)
            cands = [j for j, w in enumerate(vals) if _broadcasts(v.shape, w.shape)]
            j = int(rng.choice(cands))
            op = [jt.add, jt.multiply, jt.subtract, lambda a, b: a / (1.5 + jt.sigmoid(b))][rng.integers(4)]
            add_step(op, (i, j))
        elif k == 3 and v.ndim >= 1:
            W = rng.normal(size=(v.shape[-1], int(rng.integers(1, 5)))) * 0.5
            add_step(lambda a, W=W: a @ W if a.ndim >= 1 else a * W.sum(), (i,))
        elif k == 4 and v.ndim >= 1:
            cands = [j for j, w in enumerate(vals) if w.ndim >= 1 and v.ndim >= 1 and w.shape[0] == v.shape[-1]]
            if cands:
                add_step(jt.matmul, (i, int(rng.choice(cands))))
        elif k == 5 and v.ndim >= 1:
            add_step([lambda a: jt.softmax(a, axis=-1), lambda a: jt.log_softmax(a, axis=-1)][rng.integers(2)], (i,))
        elif k == 6 and v.ndim >= 1:
            add_step(lambda a: jt.sum(a, axis=-1, keepdims=True) if a.ndim > 1 else jt.mean(a), (i,))
        elif k == 7 and v.ndim == 2:
            add_step(lambda a: a.T, (i,))
        elif k == 8 and v.ndim >= 1 and v.shape[-1] > 1:
            g = rng.normal(size=v.shape[-1])
            add_step(lambda a, g=g: jt.layer_norm(a, g, 0.3), (i,))
        elif k == 9:
            add_step(_broadcast_reduce(rng, v.shape), (i,))
        elif k == 10:
            idx = _index(rng, v.shape)
            if idx is not None:
                add_step(lambda a, idx=idx: a[idx], (i,))
        elif k == 11:
            fn, freeze = _kink(rng, v.shape)
            add_step(fn, (i,), freeze)
    if kinks and not any(fr is not None for _, _, fr in steps):  # make sure a kinked program has a kink
        i = len(vals) - 1
        fn, freeze = _kink(rng, vals[i].shape, kind=int(rng.integers(2)))
        add_step(fn, (i,), freeze)
    # fan-in: the output mixes the last value with a scalar summary of an earlier one
    j = int(rng.integers(len(vals)))
    return Program(steps, j)


def _broadcasts(a, b):
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def inputs(seed):
    rng = np.random.default_rng(seed + 1000)
    return [rng.normal(size=s) for s in INPUT_SHAPES]
