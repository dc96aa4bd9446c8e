"""``explain``: shapes, formulas and costs of a traced program as text, without building any Jacobian."""
import inspect

import numpy as np

from .contract import ZERO_COST
from .memory import fmt_bytes as _fmt_bytes, nbytes as _nbytes
from .passes import chain_accumulate, trace
from .plan import ChainPlan
from .transforms import _argnums

__all__ = ["explain", "Explanation"]


class Explanation:
    """Every recorded step with its Jacobian shapes and bytes, the chain plan, and the two routes' totals."""

    def __init__(self, rows, plans, dense_plans, full_bytes, structured_bytes, vjp_bytes, wrt):
        self.rows, self.plans, self.dense_plans = rows, plans, dense_plans
        self.full_bytes, self.structured_bytes, self.vjp_bytes, self.wrt = full_bytes, structured_bytes, vjp_bytes, wrt
        self.notes = []  # what a transform adds: the Hessian route chosen, the structure of the results

    def __str__(self):
        head = ("step", "primitive", "output shape", "Jacobian shape per input", "dense bytes")
        body = [(str(r["step"]), r["prim"], str(r["out"]),
                 ", ".join(f"{n}: {s}" for n, s in r["jacs"]),
                 ", ".join(_fmt_bytes(b) for b in r["bytes"])) for r in self.rows]
        w = [max(len(x[i]) for x in [head] + body) for i in range(5)]
        line = lambda r: "  ".join(c.ljust(w[i]) if i < 4 else c for i, c in enumerate(r)).rstrip()  # noqa: E731
        out = [line(head), "  ".join("-" * x for x in w)] + [line(r) for r in body]
        out.append("")
        out.append(f"chain plan for the full Jacobian w.r.t. {', '.join(self.wrt)} (FLOPs):")
        for (name, p), dp in zip(self.plans.items(), self.dense_plans.values()):
            out.append(f"  {name:<10} chosen {p.chosen.flops:>14,}   forward {p.forward.flops:>14,}   "
                       f"reverse {p.reverse.flops:>14,}   dense per-op route {dp.chosen.flops:>14,}")
        out.append("")
        out.append(f"full-Jacobian path: per-op Jacobians would take {_fmt_bytes(self.full_bytes)} dense "
                   f"({_fmt_bytes(self.structured_bytes)} as structured factors)")
        out.append(f"VJP path: holds {_fmt_bytes(self.vjp_bytes)} (one cotangent per intermediate) and builds "
                   f"no Jacobian")
        if self.notes:
            out.append("")
            out.extend(self.notes)
        return "\n".join(out)

    __repr__ = __str__


def _sum_plans(plans):
    c = f = r = ZERO_COST
    for p in plans:
        c, f, r = c + p.chosen, f + p.forward, r + p.reverse
    return ChainPlan(c, f, r, len(plans), 0)


def explain(f, *args, argnums=None, **kwargs):
    """Table of every recorded step (primitive, output shape, Jacobian shape per input and its bytes),
    the chain plan (chosen vs forward vs reverse FLOPs) and the bytes of the full-Jacobian path
    against the VJP path. Plans only: no dense Jacobian is allocated.

    ``f`` may be a transformed function: for ``jt.hessian(g, method=...)`` the explanation adds the route
    chosen ("chain" or "fwdrev") and the planner's FLOP estimate of both; for ``jt.jacobian(g,
    structured=True)`` (or any jacobian/hessian with structured results) it adds, per result, the stored
    bytes against the dense bytes and the block structure found; for ``jt.jit(...)`` it shows the compiled
    program. A primitive given alone (``jt.explain(jt.softmax)``) gives its signature and index formula. ``argnums`` defaults to the transform's own (0 for a plain function)."""
    from .core import Primitive
    if isinstance(f, Primitive) and not args and not kwargs:
        return _explain_primitive(f)
    info = getattr(f, "_jactensor", None)
    if info is not None and hasattr(f, "explain"):          # a compiled program explains itself
        return f.explain(*args, **kwargs)
    if info is not None and info["kind"] in ("hessian", "jacobian", "grad", "value_and_grad"):
        return _explain_transform(f, info, args, kwargs, argnums)
    return _explain_program(f, args, 0 if argnums is None else argnums, kwargs)


def _explain_primitive(prim):
    """A primitive on its own: its signature, its Jacobians in index notation (the conventions at kinks
    included) and its description. ``jactensor explain NAME --shape ...`` adds shapes, bytes and a picture."""
    sig = prim.__signature__
    lines = [f"{prim.name}{'' if sig is None else sig}"]
    doc = (prim.__doc__ or "").strip()
    if doc:
        lines.append("  " + doc.replace("\n", "\n  "))
    if prim.formula not in doc:
        lines.append(f"  Jacobian: {prim.formula}")
    lines.append(f"  jt.explain(f, *args) of a function f calling {prim.name} gives its step table; the CLI's "
                 f"`jactensor explain {prim.name} --shape ...` shows shapes, bytes and a picture")
    return "\n".join(lines)


def _explain_transform(f, info, args, kwargs, argnums):
    from .transforms import hessian_costs, jacobian as _jacobian
    g = info["f"]
    nums_arg = info.get("argnums", 0) if argnums is None else argnums
    ex = _explain_program(g, args, nums_arg, kwargs)
    kind = info["kind"]
    if kind == "hessian":
        nums, single = _argnums("explain", nums_arg, len(args))
        inner = _jacobian(g, nums[0] if single else nums, has_aux=info.get("has_aux", False), method="rev")
        tr = trace(inner, args, nums, info.get("has_aux", False), "explain", kwargs)
        costs = hessian_costs(tr)
        chosen = info["method"] if info["method"] != "auto" else costs["chosen"]
        ex.notes.append(f"Hessian: method={info['method']!r} -> {chosen!r}; planner's FLOP estimates: chain "
                        f"{costs['chain']:,}, fwdrev {costs['fwdrev']:,} (forward mode over the "
                        f"{sum(1 for n in tr.nodes() if n.prim is not None)}-step gradient program)")
    if info.get("structured"):
        res = f(*args, **kwargs)
        if info.get("has_aux"):
            res = res[0]
        from .pytree import tree_flatten
        from .jacobian import Jacobian
        leaves = [l for l in tree_flatten(res)[0] if isinstance(l, Jacobian)]
        ex.notes.append(f"structured result ({len(leaves)} Jacobian(s)):")
        for k, J in enumerate(leaves):
            ex.notes.append(f"  [{k}] out {J.out_shape}, in {J.in_shape}: {J.structure()}")
    return ex


def _explain_program(f, args, argnums, kwargs):
    nums, _ = _argnums("explain", argnums, len(args))
    tr = trace(f, args, nums, name="explain", kwargs=kwargs)
    try:
        pnames = list(inspect.signature(f).parameters)
    except (TypeError, ValueError):
        pnames = []
    names = {}
    for a, arg in zip(nums, tr.inputs):
        base = pnames[a] if a < len(pnames) else f"arg{a}"
        for i, t in enumerate(arg):
            names[t.seq] = base if len(arg) == 1 else f"{base}[{i}]"
    rows, full, structured, vjp_bytes = [], 0, 0, 0
    step = 0
    for node in tr.nodes():
        if node.prim is None:
            vjp_bytes += _nbytes(np.shape(node.value))
            continue
        step += 1
        names[node.seq] = f"#{step}"
        out_shape = np.shape(node.value)
        jacs, sizes = [], []
        for k, parent in node.parents:
            in_shape = np.shape(node.args[k])
            jacs.append((names.get(parent.seq, "?"), out_shape + in_shape))
            nbytes = _nbytes(out_shape + in_shape)
            sizes.append(nbytes)
            full += nbytes
            J = node.prim.jac_rules[k](node.value, *node.args, **node.params)
            structured += J.stored_bytes
        vjp_bytes += _nbytes(out_shape)
        rows.append({"step": step, "prim": node.prim.name, "out": out_shape, "jacs": jacs, "bytes": sizes})
    plans, dense_plans = {}, {}
    wrt = [pnames[a] if a < len(pnames) else f"arg{a}" for a in nums]
    for o in range(len(tr.outputs)):
        ps, dps = [], []
        chain_accumulate(tr, o, plans=ps, symbolic=True)
        chain_accumulate(tr, o, plans=dps, symbolic=True, dense=True)
        label = f"output {o}" if len(tr.outputs) > 1 else "output"
        plans[label], dense_plans[label] = _sum_plans(ps), _sum_plans(dps)
    return Explanation(rows, plans, dense_plans, full, structured, vjp_bytes, wrt)
