"""Indexing primitives: getitem (x[idx]) and its adjoint scatter_add, at_set / at_add (out-of-place
updates), take, take_along_axis, and sort / partition through the permutation they apply.

Every Jacobian here is 0/1 and kept per axis: a delta where an axis is carried over, a selection
matrix where a slice picks entries, and one one-hot factor per advanced (integer or boolean array)
index, over the advanced output axes and the input axis it reads; never one dense out x in factor.

An index is parsed once, at the public boundary, into an :class:`Index`: numpy's semantics
exactly (negative ints, slices with any step, None, Ellipsis, integer arrays with repeats, boolean
masks, 0-d booleans), and where numpy places the advanced axes. That placement matters in the
batched rules: when advanced indices are separated by a slice, None or Ellipsis (an int counts as
advanced when an array index is present), numpy puts the broadcast advanced axes first -- in front
of any batch axes prepended to the index -- so the rules move the batch axes back to the front.
"""
import operator

import numpy as np

from ..core import defprimitive, unary_jacobian
from ..errors import AxisError, ConcretizationError, IndexingError, NotDifferentiableError, ShapeError
from ..jacobian import Jacobian
from ..memory import check_bytes, nbytes, numel
from ..numpy_api import implements
from ..tracer import Tracer, getval
from ._util import nbatch, norm_axes, random_array, random_shape, sample, unbroadcast

__all__ = ["getitem", "scatter_add", "at_set", "at_add", "take", "take_along_axis", "sort", "partition",
           "argsort", "argmax", "argmin"]


# ---- the parsed index -------------------------------------------------------------------------------
class Index:
    """A numpy index validated for arrays of shape ``batch + base`` (``nb`` leading batch axes).

    ``key`` is the index as numpy applies it to the base array: Ellipsis and None kept, ints as
    Python ints, slices of Python ints, integer arrays (boolean masks of one or more dimensions
    replaced by their ``nonzero()`` arrays, which numpy treats identically), 0-d boolean arrays.
    ``out`` is ``base[key].shape``. Applied to a batched array the result is always laid out as
    ``batch + out`` (the rules below restore that order where numpy would put advanced axes first).
    """

    __slots__ = ("key", "base", "nb", "out", "fancy", "adv_shape", "consecutive", "_batched", "_pos", "_unique")

    def __init__(self, key, base, out, fancy, adv_shape, consecutive, nb=0):
        self.key, self.base, self.out, self.nb = key, tuple(base), tuple(out), nb
        self.fancy, self.adv_shape, self.consecutive = fancy, tuple(adv_shape), consecutive
        self._batched, self._pos, self._unique = {}, None, None

    def __repr__(self):
        def one(e):
            if e is None:
                return "None"
            if e is Ellipsis:
                return "..."
            if isinstance(e, slice):
                return ":".join("" if v is None else str(v) for v in (e.start, e.stop)) + \
                    ("" if e.step is None else f":{e.step}")
            if isinstance(e, np.ndarray):
                return np.array2string(e, separator=", ", threshold=8) if e.ndim else repr(bool(e))
            return str(e)
        batch = ":, " * self.nb
        return f"[{batch}{', '.join(one(e) for e in self.key)}]"

    @property
    def moves_batch(self):
        """True when numpy would place the advanced axes in front of prepended batch axes."""
        return self.nb > 0 and self.fancy and not self.consecutive

    def full_key(self):
        return (slice(None),) * self.nb + self.key

    def batched(self, k):
        """The same index for arrays with ``k`` more leading batch axes."""
        if k == 0:
            return self
        b = self._batched.get(k)
        if b is None:
            b = Index(self.key, self.base, self.out, self.fancy, self.adv_shape, self.consecutive, self.nb + k)
            b._pos, b._unique = self._pos, self._unique
            self._batched[k] = b
        return b

    def positions(self):
        """Flat (row-major) position in the base array of every entry of ``base[key]`` (shape ``out``)."""
        if self._pos is None:
            self._pos = np.arange(numel(self.base), dtype=np.intp).reshape(self.base)[self.key]
        return self._pos

    def unique(self):
        """Whether no base entry is read twice (basic indices never repeat one)."""
        if self._unique is None:
            if not self.fancy:
                self._unique = True
            else:
                p = self.positions().ravel()
                self._unique = np.unique(p).size == p.size
        return self._unique

    def expanded(self):
        """The key with Ellipsis replaced by the full slices it stands for."""
        used = sum(0 if (e is None or e is Ellipsis or (isinstance(e, np.ndarray) and e.dtype == bool)) else 1
                   for e in self.key)
        out = []
        for e in self.key:
            if e is Ellipsis:
                out += [slice(None)] * (len(self.base) - used)
            else:
                out.append(e)
        return out

    # -- applying it (numpy semantics, output laid out as batch + out) ----------------------------------
    def gather(self, x):
        r = np.asarray(x)[self.full_key()]
        if self.moves_batch:
            na, nb = len(self.adv_shape), self.nb
            r = r.transpose(tuple(range(na, na + nb)) + tuple(range(na)) + tuple(range(na + nb, r.ndim)))
        return np.asarray(r)

    def scatter(self, g, shape):
        """zeros(shape) (= batch + base) with ``g`` (batch + out) added at the indexed entries."""
        if not self.fancy:
            out = np.zeros(shape)
            out[self.full_key()] = g  # basic indices never repeat an entry
            return out
        batch = tuple(shape[:self.nb])
        B, size = numel(batch), numel(self.base)
        pos = self.positions().ravel()
        g2 = np.reshape(g, (B, pos.size))
        if self.unique():
            out = np.zeros((B, size))
            out[:, pos] = g2
            return out.reshape(shape)
        flat = (np.arange(B, dtype=np.intp)[:, None] * size + pos).ravel()
        return np.bincount(flat, weights=g2.ravel(), minlength=B * size).reshape(shape)  # repeats accumulate


def _entry(op, k, e):
    """One index entry -> its normalised form (or a clear error)."""
    if e is None or e is Ellipsis:
        return e
    if isinstance(e, (bool, np.bool_)):
        return np.array(bool(e))
    if isinstance(e, (int, np.integer)):
        return int(e)
    if isinstance(e, slice):
        bounds = (e.start, e.stop, e.step)
        for v in bounds:
            if type(v) is Tracer:
                raise _traced(op, f"a bound of the slice at index position {k}", v)
        try:
            return slice(*(None if v is None else operator.index(v) for v in bounds))
        except TypeError:
            raise IndexingError(f"{op}: slice {e} at index position {k} has a non-integer bound; slice bounds must "
                                f"be ints or None") from None
    if type(e) is Tracer:
        raise _traced(op, f"index position {k} (shape {e.shape})", e)
    if isinstance(e, (list, tuple, np.ndarray)) or hasattr(e, "__array__"):
        a = np.asarray(e)
        if a.dtype.kind == "f" and a.size == 0:
            a = a.astype(np.intp)  # x[[]]: numpy reads an empty list as an empty integer index
        if a.dtype.kind == "b":
            return a
        if a.dtype.kind not in "iu":
            raise IndexingError(f"{op}: index position {k} is an array of dtype {a.dtype} (shape {a.shape}); index "
                                f"arrays must be integers or booleans (use .astype(int))")
        return int(a) if a.ndim == 0 else a.astype(np.intp, copy=False)
    raise IndexingError(f"{op}: unsupported index {e!r} at position {k}; use ints, slices, None, Ellipsis, integer "
                        f"arrays or boolean masks")


def _traced(op, what, t):
    """A traced value used as an index would become a constant and silently lose its derivative: the
    Tracer's own concretization error (it names the function being differentiated and the remedies)."""
    try:
        operator.index(t)
    except ConcretizationError as e:
        return ConcretizationError(f"{op}: {what}: {e}")
    return ConcretizationError(f"{op}: {what} is a traced value; indices must be constants")  # pragma: no cover


def _probe(base):
    return np.broadcast_to(np.empty((), dtype=bool), base)  # no copy of x: validates an index by shape alone


def parse_index(op, idx, base):
    """Validate a user's index against ``base`` (the indexed array's shape) and parse it into an Index."""
    if isinstance(idx, Index):
        if idx.base != tuple(base) or idx.nb:
            raise IndexingError(f"{op}: an index parsed for shape {idx.base} is used on shape {tuple(base)}")
        return idx
    base = tuple(base)
    raw = idx if type(idx) is tuple else (idx,)
    key = tuple(_entry(op, k, e) for k, e in enumerate(raw))
    if sum(e is Ellipsis for e in key) > 1:
        raise IndexingError(f"{op}: an index can only have a single Ellipsis ('...'); got {idx!r}")
    arrays = [e for e in key if isinstance(e, np.ndarray)]
    if not arrays:  # basic indexing: validated by hand (cheap; the common case inside models)
        used = sum(e is not None and e is not Ellipsis for e in key)
        if used > len(base):
            raise IndexingError(f"{op}: too many indices ({used}) for an array of shape {base} ({len(base)}-d)")
        a = 0
        out = []
        for e in key:
            if e is None:
                out.append(1)
            elif e is Ellipsis:
                n_ell = len(base) - used
                out += base[a:a + n_ell]
                a += n_ell
            elif isinstance(e, int):
                if not -base[a] <= e < base[a]:
                    raise IndexingError(f"{op}: index {e} is out of bounds for axis {a} of length {base[a]} (an "
                                        f"array of shape {base}); valid: {-base[a]}..{base[a] - 1}")
                a += 1
            else:
                if e.step == 0:
                    raise IndexingError(f"{op}: slice step cannot be zero (axis {a})")
                out.append(len(range(base[a])[e]))
                a += 1
        out += base[a:]
        return Index(key, base, out, False, (), True)
    try:
        out = _probe(base)[key].shape
    except (IndexError, ValueError, TypeError) as e:
        raise IndexingError(f"{op}: index {_show(idx)} does not fit an array of shape {base}: {e}") from None
    # boolean masks of >= 1 dimension -> their nonzero() integer arrays (numpy's own equivalence)
    conv = []
    for e in key:
        if isinstance(e, np.ndarray) and e.dtype == bool and e.ndim:
            conv += list(np.nonzero(e))
        else:
            conv.append(e)
    key = tuple(conv)
    shapes = []
    for e in key:
        if isinstance(e, np.ndarray):
            shapes.append(((1,) if e else (0,)) if e.dtype == bool else e.shape)
        elif isinstance(e, int):
            shapes.append(())
    adv_shape = np.broadcast_shapes(*shapes)
    # numpy: the advanced block stays in place only if no slice/None/Ellipsis separates its members
    state = 0  # 0 before the first advanced entry, 1 inside the block, 2 after it, 3 separated
    for e in key:
        adv = isinstance(e, (np.ndarray, int))
        if adv and state == 2:
            state = 3
        elif adv and state == 0:
            state = 1
        elif not adv and state == 1:
            state = 2
    return Index(key, base, out, True, adv_shape, state != 3)


def _show(idx):
    return repr(idx) if not isinstance(idx, np.ndarray) else f"array of shape {idx.shape}, dtype {idx.dtype}"


# ---- the structured Jacobian of y = x[index] --------------------------------------------------------------
def _onehot(ids, n, what):
    """(ids[..., None] == arange(n)) as float64, after the memory guard."""
    check_bytes(nbytes(ids.shape + (n,)), what, ids.shape + (n,))
    return (np.asarray(ids)[..., None] % max(n, 1) == np.arange(n)).astype(np.float64)


def gather_labels(index):
    """(out labels, in labels, factors) of y = x[index] for x of shape batch + base."""
    base = index.base
    batch = [("b", k) for k in range(index.nb)]
    adv = [("a", k) for k in range(len(index.adv_shape))]
    in_lab, out_lab, factors = list(batch), [], []
    a = 0
    for e in index.expanded():
        if e is None:
            out_lab.append(("n", len(out_lab)))
        elif isinstance(e, slice):
            n = base[a]
            r = range(n)[e]
            if r == range(n):
                out_lab.append(("d", a))
                in_lab.append(("d", a))
            else:
                check_bytes(nbytes((len(r), n)), "getitem: the selection factor", (len(r), n))
                sel = np.zeros((len(r), n))
                sel[np.arange(len(r)), np.asarray(r, dtype=np.intp)] = 1.0
                out_lab.append(("o", a))
                in_lab.append(("i", a))
                factors.append((sel, [("o", a), ("i", a)]))
            a += 1
        elif index.fancy:
            if "ADV" not in out_lab:
                out_lab.append("ADV")
            if isinstance(e, np.ndarray) and e.dtype == bool:
                continue  # a 0-d boolean adds an advanced axis of length 1 (or 0) and reads no input axis
            ids = np.asarray(e)
            labs = adv[len(adv) - ids.ndim:] + [("i", a)]
            factors.append((_onehot(ids, base[a], "getitem: a one-hot index factor"), labs))
            in_lab.append(("i", a))
            a += 1
        else:  # a basic int: one input entry along this axis, the axis disappears
            factors.append((_onehot(np.asarray(e), base[a], "getitem: a one-hot entry"), [("i", a)]))
            in_lab.append(("i", a))
            a += 1
    for k in range(a, len(base)):
        out_lab.append(("d", k))
        in_lab.append(("d", k))
    if index.fancy:
        k = out_lab.index("ADV")
        rest = out_lab[:k] + out_lab[k + 1:]
        out_lab = adv + rest if not index.consecutive else out_lab[:k] + adv + out_lab[k + 1:]
    return batch + out_lab, in_lab, factors


def gather_jacobian(index, out_shape, in_shape):
    ol, il, factors = gather_labels(index)
    return Jacobian.from_labels(out_shape, in_shape, ol + il, factors)


# ---- getitem ----------------------------------------------------------------------------------------------
def _bind_getitem(x, idx):
    return (x,), {"idx": parse_index("getitem", idx, np.shape(x))}


def _getitem_vjp(g, ans, x, idx):
    nb = nbatch(g, ans)
    return scatter_add.bound(g, idx=idx.batched(nb), shape=np.shape(g)[:nb] + np.shape(x))


def _getitem_jvp(t, ans, x, idx):
    return getitem.bound(t, idx=idx.batched(np.ndim(t) - np.ndim(x)))


def random_index(rng, shape):
    """A random numpy index valid for ``shape``: ints (negative too), slices with random start, stop and
    (negative) step, None and Ellipsis anywhere, integer arrays with repeats and negative entries,
    boolean masks (also over several axes), 0-d booleans; advanced indices adjacent or separated."""
    key, a, ell = [], 0, False
    nd = len(shape)
    if nd >= 2 and rng.random() < 0.2:  # two advanced indices separated by a slice, None or Ellipsis
        def adv(n):
            r = rng.random()
            if r < 0.35 and n:
                return int(rng.integers(-n, n))
            if r < 0.55:
                return rng.random(n) < 0.6
            return rng.integers(-n, n, size=int(rng.integers(1, 4))) if n else np.zeros(0, dtype=int)
        sep = [slice(None), None, Ellipsis, slice(None, None, -2)][int(rng.integers(0, 4))]
        if isinstance(sep, slice) and nd < 3:
            sep = None
        j = 1 if sep is None else (2 if isinstance(sep, slice) else nd - 1)  # the axis the second index reads
        idx = (adv(shape[0]), sep, adv(shape[j]))
        try:
            _probe(shape)[idx]
            return idx
        except (IndexError, ValueError):
            pass  # the two do not broadcast together: draw a general index instead
    while True:
        r = rng.random()
        if a >= nd:
            if r < 0.15:
                key.append(None)
                continue
            if r < 0.25 and not ell:
                key.append(Ellipsis)
                ell = True
                continue
            break
        n = shape[a]
        if r < 0.1:
            key.append(None)
            continue
        if r < 0.17 and not ell:
            key.append(Ellipsis)
            ell = True
            a = max(a, nd - int(rng.integers(0, nd - a + 1)))  # the Ellipsis covers some axes
            continue
        if r < 0.2 and rng.random() < 0.3:
            key.append(bool(rng.random() < 0.8))
            continue
        if r < 0.35 and n:
            key.append(int(rng.integers(-n, n)))
        elif r < 0.6:
            start = None if rng.random() < 0.4 else int(rng.integers(-n - 1, n + 2))
            stop = None if rng.random() < 0.4 else int(rng.integers(-n - 1, n + 2))
            step = None if rng.random() < 0.4 else int(rng.choice([-3, -2, -1, 1, 2, 3]))
            key.append(slice(start, stop, step))
        elif r < 0.8 and n:
            length = 0 if rng.random() < 0.1 else int(rng.integers(1, 5))
            ishape = (length,) if rng.random() < 0.7 else (int(rng.integers(1, 3)), 2)
            key.append(rng.integers(-n, n, size=ishape))
        elif r < 0.9:
            k = 1 if rng.random() < 0.7 or a + 1 >= nd or ell else 2
            key.append(rng.random(size=shape[a:a + k]) < 0.6)
            a += k
            continue
        else:
            key.append(slice(None))
        a += 1
        if rng.random() < 0.25:
            break
    idx = tuple(key)
    try:  # arrays that do not broadcast together: drop to one array index
        _probe(shape)[tuple(np.asarray(e) if isinstance(e, bool) else e for e in idx)]
    except (IndexError, ValueError):
        idx = tuple(slice(None, None, -1) if isinstance(e, np.ndarray) and e.dtype != bool else e for e in idx)
        try:
            _probe(shape)[idx]
        except (IndexError, ValueError):
            idx = (Ellipsis,)
    return idx if len(idx) != 1 or rng.random() < 0.5 else idx[0]


def _getitem_generate(rng):
    shape = random_shape(rng, 0 if rng.random() < 0.1 else 1, 4, max_size=4, zero=0.04)
    return (random_array(rng, shape), random_index(rng, shape)), {}


def _getitem_battery(rng, n):
    s = sample
    return [((s(rng, (n, 4)), (slice(None), 1)), {}),
            ((s(rng, (n + 2, 3)), slice(1, None, 2)), {}),
            ((s(rng, (2, n, 3)), (Ellipsis, None, 0)), {}),
            ((s(rng, (n + 1,)), np.array([0, n, 0, -1])), {}),          # repeats and a negative entry
            ((s(rng, (n, 3)), 0), {}),
            ((s(rng, (n, 2)), -1), {}),                                  # a negative int
            ((s(rng, (n + 3, 2)), slice(-1, None, -2)), {}),             # negative start and step
            ((s(rng, (2, 2)), (1, None, np.array([True, True]))), {}),   # int and mask separated by None
            ((s(rng, (2, 2, 3)), (0, slice(None), np.array([-1]))), {}),  # int and array separated by ':'
            ((s(rng, (3, 2)), (np.array([0, 2]), Ellipsis)), {}),
            ((s(rng, (n, 3)), (Ellipsis, np.array([[0, 2], [1, 1]]))), {}),
            ((s(rng, (2, n, 3)), np.ones((2, n), dtype=bool)), {}),      # a 2-d mask
            ((s(rng, (0, 3)), (slice(None), 1)), {}),                    # empty axis
            ((s(rng, (n, 3)), (np.array([], dtype=int), slice(None))), {}),
            ((s(rng, ()), (None, Ellipsis)), {}),
            ((s(rng, (2, 3, 4)), (np.array([1, 0]), slice(None), np.array([[3], [-1]]))), {}),
            ((s(rng, (3, 4))[::2, ::-1], (np.array(True), 1)), {})]      # non-contiguous input, 0-d bool


getitem = defprimitive(
    "getitem", lambda x, idx: idx.gather(x), bind=_bind_getitem,
    formula="dY[i..]/dX[j..] = [X[j..] is the entry Y[i..] reads]: per axis a delta, a 0/1 selection (slice) or "
            "a one-hot factor over the advanced output axes (integer/boolean array index)",
    doc="x[idx] with numpy's semantics: ints (negative ones too), slices (any start, stop, step), None, Ellipsis, "
        "integer arrays (repeats allowed) and boolean masks, combined freely; advanced axes are placed as numpy "
        "places them (in front when a slice, None or Ellipsis separates the advanced indices). Indices are "
        "constants.",
    jac=[lambda ans, x, idx: gather_jacobian(idx, np.shape(ans), np.shape(x))],
    vjp=[_getitem_vjp], jvp=[_getitem_jvp],
    battery=_getitem_battery, generate=_getitem_generate)


# ---- scatter_add: getitem's adjoint -----------------------------------------------------------------------
def _bind_scatter(g, idx, shape, nb=0):
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    nb = operator.index(nb)
    if not 0 <= nb <= len(shape):
        raise ShapeError(f"scatter_add: nb={nb} batch axes for an output of shape {shape}")
    index = parse_index("scatter_add", idx, shape[nb:]).batched(nb)
    want = shape[:nb] + index.out
    if np.shape(g) != want:
        raise ShapeError(f"scatter_add: values of shape {np.shape(g)} do not fit index {index!r} into shape {shape} "
                         f"(expected values of shape {want})")
    return (g,), {"idx": index, "shape": shape}


def _scatter_jac(ans, g, idx, shape):
    ol, il, factors = gather_labels(idx)
    return Jacobian.from_labels(shape, np.shape(g), il + ol, factors)  # the transpose of gather: roles swapped


def _scatter_generate(rng):
    base = random_shape(rng, 1, 3, max_size=4)
    idx = random_index(rng, base)
    nb = int(rng.integers(0, 2))
    batch = random_shape(rng, nb, nb, max_size=3)
    index = parse_index("scatter_add", idx, base)
    return (random_array(rng, batch + index.out), idx, batch + base), {"nb": nb}


scatter_add = defprimitive(
    "scatter_add", lambda g, idx, shape: idx.scatter(g, shape), bind=_bind_scatter,
    formula="dY[j..]/dG[i..] = [entry j.. is where G[i..] is added]   (the transpose of getitem)",
    doc="zeros(shape) with g added at [(:,)*nb + idx], g shaped batch + zeros(shape[nb:])[idx].shape; "
        "getitem's adjoint. Repeated indices accumulate (like np.add.at).",
    jac=[_scatter_jac],
    vjp=[lambda h, ans, g, idx, shape: getitem.bound(h, idx=idx.batched(nbatch(h, ans)))],
    jvp=[lambda t, ans, g, idx, shape: scatter_add.bound(t, idx=idx.batched(np.ndim(t) - np.ndim(g)),
                                                         shape=np.shape(t)[:np.ndim(t) - np.ndim(g)] + shape)],
    battery=lambda rng, n: [((sample(rng, (n,)), (slice(None), 1), (n, 4)), {}),
                            ((sample(rng, (4,)), (np.array([0, n, 0, -1]),), (n + 1,)), {}),
                            ((sample(rng, (2, 3)), (slice(1, 4),), (2, n + 4)), {"nb": 1}),
                            ((sample(rng, (2, 2, 1)), (1, None, np.array([True, True])), (2, 2, 2)), {"nb": 1}),
                            ((sample(rng, (1, 2)), (0, slice(None), np.array([-1])), (2, 2, 3)), {}),
                            ((sample(rng, (0, 3)), (slice(None), -1), (0, 3, 2)), {"nb": 1})],
    generate=_scatter_generate)


# ---- at_set / at_add: out-of-place updates ------------------------------------------------------------------
def _bind_at_set(x, idx, v):
    index = parse_index("at_set", idx, np.shape(x))
    _check_value("at_set", np.shape(v), index, np.shape(x))
    written, win = _winners(index)
    return (x, v), {"idx": index, "keep": 1.0 - written, "win": win}


def _check_value(op, vs, index, xs):
    """v must broadcast to x[idx].shape (extra leading axes of length 1 allowed, as numpy's assignment does)."""
    sel = index.out
    k = len(vs) - len(sel)
    if (k > 0 and any(d != 1 for d in vs[:k])) or \
            any(a not in (1, b) for a, b in zip(vs[max(k, 0):], sel[max(-k, 0):])):
        raise ShapeError(f"{op}: value of shape {vs} cannot be broadcast to the selection x{index!r} of shape {sel} "
                         f"(x has shape {xs}); give v that shape, or one that broadcasts to it")


def _winners(index):
    """(mask of x's entries written, mask of the index entries whose value lands): with repeated indices
    the last occurrence (in row-major order of x[idx]) wins, as in numpy's x[idx] = v."""
    pos = index.positions().ravel()
    written = np.zeros(numel(index.base))
    written[pos] = 1.0
    win = np.ones(pos.size)
    if not index.unique():
        _, first_from_end = np.unique(pos[::-1], return_index=True)
        win[:] = 0.0
        win[pos.size - 1 - first_from_end] = 1.0
    return written.reshape(index.base), win.reshape(index.out)


def _at_set_impl(x, v, idx, keep, win):
    out = np.array(x, dtype=np.float64, order="C")  # C order: the flat view below writes into it
    vb = np.broadcast_to(v, idx.out) if np.ndim(v) <= len(idx.out) else np.reshape(v, idx.out)
    if idx.unique():
        out[idx.key] = vb
    else:
        flat = out.reshape(-1)
        sel = win.ravel() > 0
        flat[idx.positions().ravel()[sel]] = np.asarray(vb).ravel()[sel]
    return out


def _as_sel(t, nb, v_shape, sel):
    """A tangent of v (batch + v_shape) laid out over batch + the selection's shape."""
    k = len(v_shape) - len(sel)
    if k > 0:  # extra leading length-1 axes of v
        t = t.reshape(np.shape(t)[:nb] + tuple(sel))
        return t
    batch = np.shape(t)[:nb]
    from .shape import broadcast_to
    t = t.reshape(batch + (1,) * -k + tuple(v_shape)) if k < 0 else t
    return t if np.shape(t) == batch + tuple(sel) else broadcast_to.bound(t, shape=batch + tuple(sel))


def _at_set_jac_v(ans, x, v, idx, keep, win):
    ol, il, factors = gather_labels(idx)
    vs, sel = np.shape(v), idx.out
    k = len(vs) - len(sel)
    v_lab = []
    for d, n in enumerate(vs):
        j = d - k
        v_lab.append(ol[j] if j >= 0 and n == sel[j] else ("v", d))
    # the winners' mask (all ones without repeats) comes first: it fixes the length of every selection axis,
    # which are summed here rather than axes of the Jacobian
    return Jacobian.from_labels(np.shape(ans), vs, il + v_lab, [(win, ol)] + factors)


def _at_set_vjp_v(g, ans, x, v, idx, keep, win):
    nb = nbatch(g, ans)
    gs = getitem.bound(g, idx=idx.batched(nb))
    if not idx.unique():
        gs = gs * win
    vs, sel = np.shape(v), idx.out
    if len(vs) > len(sel):
        return gs.reshape(np.shape(gs)[:nb] + tuple(vs))
    return unbroadcast(gs, vs, nb)


def _at_set_jvp_v(t, ans, x, v, idx, keep, win):
    nb = np.ndim(t) - np.ndim(v)
    ts = _as_sel(t, nb, np.shape(v), idx.out)
    if not idx.unique():
        ts = ts * win
    return scatter_add.bound(ts, idx=idx.batched(nb), shape=np.shape(t)[:nb] + np.shape(x))


def _at_set_generate(rng):
    shape = random_shape(rng, 1, 3, max_size=4)
    idx = random_index(rng, shape)
    sel = parse_index("at_set", idx, shape).out
    vshape = tuple(1 if rng.random() < 0.3 else n for n in sel[int(rng.integers(0, len(sel) + 1)):])
    v = random_array(rng, vshape) if rng.random() < 0.85 else float(rng.normal())
    return (random_array(rng, shape), idx, v), {}


at_set = defprimitive(
    "at_set", _at_set_impl, bind=_bind_at_set,
    formula="dY[j..]/dX[j'..] = delta(j..,j'..) [entry j.. not written];  dY[j..]/dV[k..] = [entry j.. is written "
            "by the selection entry that V[k..] broadcasts to, and that entry is the last to write it]",
    doc="A new array equal to x with x[idx] = v (numpy's indexing semantics, v broadcast to x[idx].shape); "
        "differentiable in x and v. With repeated indices the last occurrence wins, as numpy's assignment does.",
    jac=[lambda ans, x, v, idx, keep, win: unary_jacobian(keep, np.shape(ans)), _at_set_jac_v],
    vjp=[lambda g, ans, x, v, idx, keep, win: g * keep, _at_set_vjp_v],
    jvp=[lambda t, ans, x, v, idx, keep, win: t * keep, _at_set_jvp_v],
    battery=lambda rng, n: [((sample(rng, (n, 3)), (slice(None), 1), sample(rng, (n,))), {}),
                            ((sample(rng, (n + 1,)), np.array([0, -1, 0]), sample(rng, (3,))), {}),  # repeats
                            ((sample(rng, (2, n)), -1, 2.5), {}),                                   # constant v
                            ((sample(rng, (3, 2)), (np.array([2, 0]), Ellipsis), sample(rng, (1, 2))), {}),
                            ((sample(rng, (2, 2, 3)), (0, slice(None), np.array([-1])), sample(rng, ())), {}),
                            ((sample(rng, (1, n)), (None, 0), sample(rng, (1, 1, n))), {}),      # leading 1s
                            ((sample(rng, (0, 2)), (slice(None), 1), sample(rng, (0,))), {})],
    generate=_at_set_generate)


def at_add(x, idx, v):
    """A new array equal to x with v added at x[idx] (v broadcast to x[idx].shape); differentiable in x and v.

    Every occurrence of a repeated index adds (like ``np.add.at`` and JAX's ``x.at[idx].add(v)``), unlike
    numpy's ``x[idx] += v``, which adds once per distinct entry.
    Jacobian: dY/dX = identity; dY[j..]/dV[k..] = the number of selection entries at j.. that V[k..] feeds.
    """
    index = parse_index("at_add", idx, np.shape(x))
    _check_value("at_add", np.shape(v), index, np.shape(x))
    if type(v) is not Tracer:
        v = np.asarray(v, dtype=np.float64)
    return x + scatter_add(_as_sel(v, 0, np.shape(v), index.out), index, np.shape(x))


# ---- take ----------------------------------------------------------------------------------------------------
@implements(np.take, methods=("take",))
def take(a, indices, axis=None, out=None, mode="raise"):
    """np.take: entries of ``a`` at integer ``indices`` along ``axis`` (None: of the flattened array).

    mode: 'raise' (out-of-range indices are an error; negative ones count from the end), 'wrap' (indices
    taken modulo the axis length) or 'clip' (clipped to 0..n-1; negative ones become 0, as in numpy).
    The result is getitem's (Jacobian: a one-hot factor on that axis, deltas elsewhere).
    """
    if out is not None:
        raise NotDifferentiableError("take: out= is not supported (jactensor returns new arrays)")
    if mode not in ("raise", "wrap", "clip"):
        raise ValueError(f"take: mode must be 'raise', 'wrap' or 'clip'; got {mode!r}")
    if type(indices) is Tracer:
        raise _traced("take", "indices", indices)
    ids = np.asarray(indices)
    if ids.dtype.kind not in "iu" and not (ids.dtype.kind == "f" and ids.size == 0):
        raise IndexingError(f"take: indices must be integers; got dtype {ids.dtype} (use .astype(int))")
    ids = ids.astype(np.intp)
    if axis is None:
        from .shape import reshape
        a = reshape(a, (-1,))
        ax = 0
    else:
        (ax,) = norm_axes("take", axis, np.ndim(a), allow_none=False)
        ax += np.ndim(a)
    n = np.shape(a)[ax]
    if mode == "raise" and ids.size and (ids.min() < -n or ids.max() >= n):
        bad = ids[(ids < -n) | (ids >= n)].ravel()[0]
        raise IndexingError(f"take: index {bad} is out of bounds for axis {ax} of length {n} (input of shape "
                            f"{np.shape(a)}); valid: {-n}..{n - 1}, or pass mode='wrap' or mode='clip'")
    if mode != "raise":
        if n == 0 and ids.size:
            raise IndexingError(f"take: cannot take {ids.size} entries from an empty axis (mode={mode!r})")
        ids = ids % max(n, 1) if mode == "wrap" else np.clip(ids, 0, max(n - 1, 0))
    key = (slice(None),) * ax + (int(ids) if ids.ndim == 0 else ids,)
    return getitem(a, key)


# ---- take_along_axis -------------------------------------------------------------------------------------------
def _bind_take_along_axis(arr, indices, axis=-1):
    if type(indices) is Tracer:
        raise _traced("take_along_axis", "indices", indices)
    ids = np.asarray(indices)
    if ids.dtype.kind not in "iu":
        raise IndexingError(f"take_along_axis: indices must be an integer array; got dtype {ids.dtype}")
    shape = np.shape(arr)
    if axis is None:
        raise AxisError("take_along_axis: axis=None needs the flattened array; call jt.take_along_axis(arr, indices, "
                        "None) (which flattens) rather than the primitive")
    if ids.ndim != len(shape):
        raise ShapeError(f"take_along_axis: indices (shape {ids.shape}) and arr (shape {shape}) must have the same "
                         f"number of dimensions")
    (ax,) = norm_axes("take_along_axis", axis, len(shape), allow_none=False)
    n = shape[ax]
    try:
        np.broadcast_shapes(ids.shape[:len(shape) + ax] + (1,) + ids.shape[len(shape) + ax + 1:],
                            shape[:len(shape) + ax] + (1,) + shape[len(shape) + ax + 1:])
    except ValueError:
        raise ShapeError(f"take_along_axis: indices of shape {ids.shape} do not broadcast with arr of shape {shape} "
                         f"outside axis {axis}") from None
    if ids.size and (ids.min() < -n or ids.max() >= n):
        bad = ids[(ids < -n) | (ids >= n)].ravel()[0]
        raise IndexingError(f"take_along_axis: index {bad} is out of bounds for axis {axis} of length {n} "
                            f"(arr of shape {shape})")
    ids = np.where(ids < 0, ids + n, ids).astype(np.intp)
    return (arr,), {"indices": ids, "axis": ax}


def _along_out_shape(arr_shape, ids, axis):
    nd = len(arr_shape)
    other = tuple(1 if k == nd + axis else s for k, s in enumerate(arr_shape))
    return np.broadcast_shapes(other, ids.shape)


def _along_index(arr_shape, ids, axis):
    """arr[mesh] == take_along_axis(arr, ids, axis): an open mesh of aranges, ids at ``axis`` (all advanced)."""
    nd = len(arr_shape)
    key = tuple(ids if k == nd + axis else np.arange(s).reshape((1,) * k + (s,) + (1,) * (nd - k - 1))
                for k, s in enumerate(arr_shape))
    return parse_index("take_along_axis", key, arr_shape)


def _along_jac(ans, arr, indices, axis):
    shape, out = np.shape(arr), np.shape(ans)
    nd = len(shape)
    out_lab = [("d", k) for k in range(nd)]
    in_lab = [("d", k) if k != nd + axis and shape[k] == out[k] else ("i", k) for k in range(nd)]
    onehot = _onehot(indices, shape[axis], "take_along_axis: the one-hot factor")
    return Jacobian.from_labels(out, shape, out_lab + in_lab, [(onehot, out_lab + [("i", nd + axis)])])


def _along_vjp(g, ans, arr, indices, axis):
    nb = nbatch(g, ans)
    index = _along_index(np.shape(arr), indices, axis)
    return scatter_add.bound(g, idx=index.batched(nb), shape=np.shape(g)[:nb] + np.shape(arr))


def _along_jvp(t, ans, arr, indices, axis):
    nb = np.ndim(t) - np.ndim(arr)
    return _take_along_axis.bound(t, indices=indices.reshape((1,) * nb + indices.shape), axis=axis)


def _along_generate(rng):
    shape = random_shape(rng, 1, 3, max_size=4)
    nd = len(shape)
    axis = int(rng.integers(-nd, nd))
    n = shape[axis]
    ishape = tuple(int(rng.integers(0, 4)) if k == nd + axis or k == axis else (1 if rng.random() < 0.3 else s)
                   for k, s in enumerate(shape))
    if not n:
        ishape = tuple(0 if k == nd + axis or k == axis else s for k, s in enumerate(ishape))
    ids = rng.integers(-n, n, size=ishape) if n else np.zeros(ishape, dtype=int)
    return (random_array(rng, shape), ids), {"axis": axis}


_take_along_axis = defprimitive(
    "take_along_axis", lambda arr, indices, axis: np.take_along_axis(arr, indices, axis=axis),
    bind=_bind_take_along_axis,
    formula="dY[..,i,..]/dX[..,j,..] = delta(other axes) [I[..,i,..] = j]   (one one-hot factor; arr's length-1 "
            "axes broadcast)",
    doc="np.take_along_axis(arr, indices, axis): indices has arr's number of dimensions and broadcasts with it "
        "outside ``axis``; negative indices count from the end. Indices are constants.",
    jac=[_along_jac], vjp=[_along_vjp], jvp=[_along_jvp],
    battery=lambda rng, n: [((sample(rng, (n, 4)), np.array([[3, 0, -1]] * n)), {"axis": 1}),
                            ((sample(rng, (n, 3)), np.array([[0, 0, 2]])), {"axis": 1}),
                            ((sample(rng, (3, 1)), np.array([[2], [0], [2], [1]]).reshape(2, 2) % 3), {"axis": 0}),
                            ((sample(rng, (2, n, 3)), np.zeros((2, 0, 3), dtype=int)), {"axis": -2}),
                            ((sample(rng, (4,)), np.array([3, 1, 1, 0, 2])), {})],
    generate=_along_generate)


@implements(np.take_along_axis)
def take_along_axis(arr, indices, axis=-1):
    """np.take_along_axis: ``arr`` entries picked by ``indices`` along ``axis`` (None: of the flattened array,
    indices 1-d). Jacobian: one one-hot factor, deltas on the other axes."""
    if axis is None:
        from .shape import reshape
        if np.ndim(indices) != 1:
            raise ShapeError(f"take_along_axis: with axis=None, indices must be 1-d; got shape {np.shape(indices)}")
        return _take_along_axis(reshape(arr, (-1,)), indices, axis=0)
    return _take_along_axis(arr, indices, axis=axis)


# ---- sort and partition: the permutation they apply, taken from the values ---------------------------------
def _flat_axis(op, a, axis):
    from .shape import reshape
    if axis is None:
        return reshape(a, (-1,)), -1
    if np.ndim(a) == 0:
        raise AxisError(f"{op}: axis {axis} given for a 0-d input; use axis=None")
    (ax,) = norm_axes(op, axis, np.ndim(a), allow_none=False)
    return a, ax


@implements(np.sort)
def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """np.sort: a sorted copy along ``axis`` (None: flattened). NaNs go last, as in numpy.

    Derivative: through the permutation that sorts the values (a constant taken from the forward
    values), dY[..,i,..]/dX[..,j,..] = delta(other axes) [p[..,i,..] = j]. With tied values the stable
    sort's permutation is used (tied entries keep their order), as JAX does.
    """
    if order is not None:
        raise NotDifferentiableError("sort: order= (structured arrays) is not supported; sort a float array")
    a, ax = _flat_axis("sort", a, axis)
    perm = np.argsort(getval(a), axis=ax, kind="stable")
    return _take_along_axis(a, perm, axis=ax)


@implements(np.partition)
def partition(a, kth, axis=-1, kind="introselect", order=None):
    """np.partition: the value at each ``kth`` position is where a sort would put it, smaller values
    before, larger after; the values equal numpy's np.partition (same arrangement).

    Derivative: through the permutation p with Y = X[p] (a constant from the forward values): equal
    values are matched in order (stable), so tied entries keep their relative order;
    dY[..,i,..]/dX[..,j,..] = delta(other axes) [p[..,i,..] = j].
    """
    if order is not None:
        raise NotDifferentiableError("partition: order= (structured arrays) is not supported")
    a, ax = _flat_axis("partition", a, axis)
    xv = getval(a)
    if np.ndim(xv) == 0:
        raise AxisError("partition: a 0-d array cannot be partitioned")
    try:
        y = np.partition(xv, kth, axis=ax)
    except (ValueError, IndexError) as e:
        raise IndexingError(f"partition: kth={kth!r} does not fit axis {axis} of length {np.shape(xv)[ax]}: {e}") \
            from None
    s = np.argsort(xv, axis=ax, kind="stable")
    q = np.argsort(y, axis=ax, kind="stable")
    perm = np.empty_like(s)
    np.put_along_axis(perm, q, s, axis=ax)  # y[q] = sorted = x[s]  =>  y = x[perm]
    return _take_along_axis(a, perm, axis=ax)


# ---- integer results: no derivative, plain numpy arrays from the value ------------------------------------
@implements(np.argsort, methods=("argsort",))
def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    """np.argsort of the value (an integer array: no derivative flows through it)."""
    return np.argsort(getval(a), axis=axis, kind=kind, order=order, stable=stable)


@implements(np.argmax, methods=("argmax",))
def argmax(a, axis=None, out=None, *, keepdims=False):
    """np.argmax of the value (an integer array: no derivative flows through it)."""
    return np.argmax(getval(a), axis=axis, out=out, keepdims=bool(keepdims))


@implements(np.argmin, methods=("argmin",))
def argmin(a, axis=None, out=None, *, keepdims=False):
    """np.argmin of the value (an integer array: no derivative flows through it)."""
    return np.argmin(getval(a), axis=axis, out=out, keepdims=bool(keepdims))

