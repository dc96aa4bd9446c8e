"""The engine's lazy-backend hooks, answered for Vars: one instruction per primitive, contraction and
dense materialisation.

- ``call_primitive(prim, inputs, params)``: a primitive applied to recorded values (its inputs, or
  its parameters: integer labels, index arrays) records one call of ``prim.impl``; the numpy calls
  inside the implementation are not recorded.
- ``contract(expr, operands)``: the cached ``opt_einsum`` expression's pairwise steps (its path was
  searched once, at compile time), each recorded as the numpy calls opt_einsum would make -- a BLAS
  step as numpy's tensordot does it (transpose, reshape, one ``np.dot``), any other step as one
  ``np.einsum`` -- without opt_einsum's per-call dispatch; a step on constants alone is done once.
- ``embed(terms, pattern, sizes, what)``: a structured Jacobian made dense. Each term's factors are
  contracted (recorded contractions) and laid out on the term's distinct labels; one instruction
  then writes every term into a zero array through strided views (a delta is a stride that is the
  sum of the strides of the axes it couples).
- ``as_factor(x)``: a recorded value as a float64 Jacobian factor (still recorded).
- ``basis(make, args, like)``: the identity rows a batched rev/fwd pass pushes through the program, as
  one recorded call. Left plain, everything the pass computes from them before meeting a recorded value
  would be computed at compile time and stored in the program as a constant (the whole basis chunk by
  chunk: the memory the pass's chunking exists to avoid, held for the program's lifetime).
"""
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided
from opt_einsum.parser import convert_to_valid_einsum_chars, find_output_str, has_valid_einsum_chars_only

from .. import backends as _backends
from .record import Instr, _vars_of_kind, owner
from .var import Var

__all__ = ["register", "write_terms"]

_ITEMSIZE = np.dtype(np.float64).itemsize


def as_factor(x):
    return x if x.dtype == np.float64 else x.astype(np.float64)


def call_primitive(prim, inputs, params):
    rec = owner(inputs, params)
    ta, ca, tk, ck = rec.args(inputs, params)
    value = prim.forward(ca, ck)  # plain values: the primitive's own error handling applies
    ins = Instr("call", fn=prim.impl, args=ta, kwargs=tk, label=prim.name)
    return rec._result(ins, value, _vars_of_kind(inputs, params, "b"))  # a mask sets the shape


def contract(expr, operands):
    """The expression's pairwise steps, each recorded as plain numpy calls (its path was searched once)."""
    steps = getattr(expr, "contraction_list", None)
    if steps is None:
        rec = owner(operands)
        return rec.call(expr, operands, None, label=f"contract[{expr.contraction}]")
    ops = list(operands)
    for inds, removed, spec, _, blas in steps:
        tmp = [ops.pop(x) for x in inds]
        if blas and "EINSUM" not in blas:
            ops.append(_tensordot_step(spec, removed, *tmp))
        else:
            if not has_valid_einsum_chars_only(spec):
                if "->" not in spec:
                    spec += "->" + find_output_str(spec)
                spec = convert_to_valid_einsum_chars(spec)
            ops.append(np.einsum(spec, *tmp))
    return ops[0]


def _tensordot_step(spec, removed, a, b):
    """One BLAS step as numpy's tensordot computes it: both operands transposed and reshaped to matrices,
    one dot, the result reshaped and (if the step's output order differs) transposed."""
    inputs, result = spec.split("->")
    left, right = inputs.split(",")
    kept = "".join(c for c in left + right if c not in removed)
    pairs = sorted((left.find(c), right.find(c)) for c in removed)
    ax_a, ax_b = [p[0] for p in pairs], [p[1] for p in pairs]
    sa, sb = a.shape, b.shape
    free_a = [k for k in range(len(sa)) if k not in ax_a]
    free_b = [k for k in range(len(sb)) if k not in ax_b]
    n = math.prod(sa[k] for k in ax_a)
    at = a.transpose(free_a + ax_a).reshape((math.prod(sa[k] for k in free_a), n))
    bt = b.transpose(ax_b + free_b).reshape((n, math.prod(sb[k] for k in free_b)))
    out = np.dot(at, bt).reshape(tuple(sa[k] for k in free_a) + tuple(sb[k] for k in free_b))
    if kept != result:
        out = out.transpose(tuple(kept.index(c) for c in result))
    return out


def write_terms(shape, specs, *arrays):
    """A zero float64 array of ``shape`` with each term added through its strided view:
    ``specs[k] = (view shape, view strides in bytes, coef)`` and ``arrays[k]`` shaped like the view."""
    target = np.zeros(shape)
    for (vshape, vstrides, coef), a in zip(specs, arrays):
        view = as_strided(target, shape=vshape, strides=vstrides, writeable=True)
        view += coef * a
    return target


def embed(terms, pattern, sizes, what):
    from ..jacobian import _arrange
    from ..plan import contract_term
    rec = owner([a for t in terms for a, _ in t.factors])
    groups = tuple(dict.fromkeys(pattern))
    shape = tuple(int(sizes[g]) for g in groups)
    step, acc = {}, 1
    for g in reversed(groups):  # C-order element strides of the target
        step[g] = acc
        acc *= shape[groups.index(g)]
    specs, arrays = [], []
    for t in terms:
        t = contract_term(t, what)[0]
        distinct = t.distinct()
        spans = {l: set() for l in distinct}
        for p, l in enumerate(t.labels):
            spans[l].add(pattern[p])
        specs.append((tuple(int(t.sizes[l]) for l in distinct),
                      tuple(_ITEMSIZE * sum(step[g] for g in spans[l]) for l in distinct), float(t.coef)))
        arrays.append(_arrange(t, distinct))
    full = tuple(_ITEMSIZE * step[g] for g in groups)
    if len(specs) == 1 and specs[0][0] == shape and specs[0][1] == full and type(arrays[0]) is Var and \
            arrays[0].shape == shape:
        coef = specs[0][2]   # one term over every axis, no delta: a scaled C-ordered copy, no zeros
        return np.copy(arrays[0], order="C") if coef == 1.0 else np.multiply(coef, arrays[0], order="C")
    return rec.call(write_terms, (shape, tuple(specs)) + tuple(arrays), None, label="embed")


def basis(make, args, like):
    return owner(like).call(make, args, None, label="basis")


def register():
    """Make the engine route Vars here (Var joins the engine's lazy types only while compiling)."""
    _backends.register_lazy("jit", _claims, as_factor=as_factor, contract=contract, embed=embed,
                            call_primitive=call_primitive, basis=basis)


def _claims(x):
    """A Var, or a parameter holding one (an index tuple, a list of labels)."""
    return type(x) is Var or (type(x) in (tuple, list, dict, slice) and owner(x) is not None)
