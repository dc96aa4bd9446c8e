"""``explain``: shapes, formulas and costs of a traced program as text, without building any Jacobian."""
import inspect

import numpy as np

from .contract import ZERO_COST
from .memory import ITEMSIZE, fmt_bytes as _fmt_bytes
from .passes import chain_accumulate, trace
from .plan import ChainPlan
from .transforms import _argnums

__all__ = ["explain", "Explanation"]


class Explanation:
    """Every recorded step with its Jacobian shapes and bytes, the chain plan, and the two routes' totals."""

    def __init__(self, rows, plans, dense_plans, full_bytes, structured_bytes, vjp_bytes, wrt):
        self.rows, self.plans, self.dense_plans = rows, plans, dense_plans
        self.full_bytes, self.structured_bytes, self.vjp_bytes, self.wrt = full_bytes, structured_bytes, vjp_bytes, wrt

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
        return "\n".join(out)

    __repr__ = __str__


def _sum_plans(plans):
    c = f = r = ZERO_COST
    for p in plans:
        c, f, r = c + p.chosen, f + p.forward, r + p.reverse
    return ChainPlan(c, f, r, len(plans), 0)


def explain(f, *args, argnums=0):
    """Table of every recorded step (primitive, output shape, Jacobian shape per input and its bytes),
    the chain plan (chosen vs forward vs reverse FLOPs) and the bytes of the full-Jacobian path
    against the VJP path. Plans only: no Jacobian is allocated."""
    nums, _ = _argnums("explain", argnums, len(args))
    tr = trace(f, args, nums, name="explain")
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
            vjp_bytes += int(np.size(node.value)) * ITEMSIZE
            continue
        step += 1
        names[node.seq] = f"#{step}"
        out_shape = np.shape(node.value)
        jacs, sizes = [], []
        for k, parent in node.parents:
            in_shape = np.shape(node.args[k])
            jacs.append((names.get(parent.seq, "?"), out_shape + in_shape))
            nbytes = int(np.prod(out_shape + in_shape, dtype=np.int64)) * ITEMSIZE
            sizes.append(nbytes)
            full += nbytes
            J = node.prim.jac_rules[k](node.value, *node.args, **node.params)
            structured += J.stored_bytes
        vjp_bytes += int(np.prod(out_shape, dtype=np.int64)) * ITEMSIZE
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
