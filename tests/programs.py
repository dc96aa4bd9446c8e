"""Random programs of primitives (generated, not hand-picked) with fan-out, fan-in and broadcasting."""
import numpy as np

import jactensor as jt

INPUT_SHAPES = [(3, 4), (4,), (3, 1)]


def _unary(rng):
    return [lambda v: jt.tanh(v), lambda v: jt.sigmoid(v), lambda v: jt.exp(0.2 * v), lambda v: v * v,
            lambda v: jt.gelu(v), lambda v: jt.gelu(v, approximate=False), lambda v: -v][rng.integers(7)]


def random_program(seed, n_steps=6):
    """Returns f(x, y, z) built from ``n_steps`` random primitive steps."""
    rng = np.random.default_rng(seed)
    vals = [rng.normal(size=s) for s in INPUT_SHAPES]
    steps = []

    def add_step(fn, idx):
        out = fn(*[vals[i] for i in idx])
        steps.append((fn, idx))
        vals.append(np.asarray(out))

    for _ in range(n_steps):
        k = rng.integers(9)
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
    # fan-in: the output mixes the last value with a scalar summary of an earlier one
    j = int(rng.integers(len(vals)))

    def f(x, y, z):
        env = [x, y, z]
        for fn, idx in steps:
            env.append(fn(*[env[q] for q in idx]))
        return env[-1] + 0.1 * jt.sum(env[j] * env[j])
    return f


def _broadcasts(a, b):
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def inputs(seed):
    rng = np.random.default_rng(seed + 1000)
    return [rng.normal(size=s) for s in INPUT_SHAPES]
