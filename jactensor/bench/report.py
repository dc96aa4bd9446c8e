"""Markdown tables and PNG plots of the benchmark results."""
import io

__all__ = ["markdown", "plots"]


def _us(s):
    if s is None:
        return "-"
    us = s * 1e6
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def _mib(b):
    return "-" if b is None else (f"{b / 2**20:,.2f}" if b < 2**30 else f"{b / 2**20:,.0f}")


def markdown(res):
    m = res["meta"]
    lines = [f"# jactensor benchmarks ({m['mode']})", "",
             f"float64, {m['statistic']}; one core ({m['pinning']}); versions: "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + "."
             + (f" Code measured: commit {m['commit']}." if m.get("commit") else ""), "",
             "A ratio within 10% of its limit is inside this machine's run-to-run spread and is reported as a tie.",
             ""]
    lines += ["## Targets (this run)", ""]
    if res["targets"]:
        lines += ["| target | ratio (ours / theirs) | met |", "|---|---:|---|"]
    else:
        lines.append(f"None: the targets are stated at sizes this {m['mode']} run does not measure (the full run "
                     f"measures them all).")
    for t in res["targets"]:
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        met = ("not measured" if t["met"] is None else "tie" if t["met"] == "tie" else "reported"
               if t["met"] == "reported" else ("yes" if t["met"] else "**no**"))
        lines.append(f"| {t['target']} | {ratio} | {met} |")
    lines += ["", "## Peers side by side (median microseconds per call)", ""]
    recs = res["peers"]["records"]
    for prob in dict.fromkeys(r["problem"] for r in recs):
        sizes = list(dict.fromkeys((r["n"], r["d"]) for r in recs if r["problem"] == prob))
        lines += [f"### {prob}", "", "| method | " + " | ".join(f"({n}, {d})" for n, d in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        for meth in dict.fromkeys(r["method"] for r in recs if r["problem"] == prob):
            cells = []
            for n, d in sizes:
                r = next((r for r in recs if r["problem"] == prob and r["method"] == meth and r["n"] == n), None)
                if r is None:
                    cells.append("")
                elif r.get("status") != "ok":
                    cells.append("refused")
                else:
                    c = _us(r["seconds"])
                    if "compile_seconds" in r:
                        c += f" (+{r['compile_seconds']:.2f} s compile)"
                    cells.append(c)
            lines.append(f"| {meth} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Full Jacobian against VJP: gradient time and peak memory", "",
              "| problem | n | d | route | time (us) | peak memory (MiB) | status |",
              "|---|---:|---:|---|---:|---:|---|"]
    for r in res["full_vs_vjp"]["records"]:
        lines.append(f"| {r['problem']} | {r['n']} | {r['d']} | {r['route']} | {_us(r.get('seconds'))} | "
                     f"{_mib(r.get('peak_bytes'))} | {r.get('status', '')} |")
    lines += ["", "Fitted powers of n (log-log slope over the largest sizes measured):", "",
              "| problem / route | time slope | memory slope |", "|---|---:|---:|"]
    for k, v in res["full_vs_vjp"]["slopes"].items():
        f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        lines.append(f"| {k} | {f(v['time'])} | {f(v['memory'])} |")
    lines += ["", "## Contraction order (dense Jacobian chains)", "",
              "| chain | sizes (input to output) | FLOPs chosen | forward | reverse | time chosen (us) | forward | "
              "reverse |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for o in res["order"]:
        fl, s = o["flops"], o["seconds"]
        lines.append(f"| {o['chain']} | {o['sizes']} | {fl['chosen']:,} | {fl['forward']:,} | {fl['reverse']:,} | "
                     f"{_us(s['chosen'])} | {_us(s['forward'])} | {_us(s['reverse'])} |")
    lines += _structured_md(res) + _jit_md(res) + _chains_md(res) + _vit_md(res)
    for name, prof in res.get("profiles", {}).items():
        lines += ["", f"## Profile of a missed target ({name}): where the time goes", "", "```", prof.strip(), "```"]
    lines.append("")
    return "\n".join(lines)


def _png(fig, plt):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def plots(res):
    """The PNG plots as {file name: PNG bytes} (the caller writes them); None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    written = {}
    recs = [r for r in res["full_vs_vjp"]["records"] if r.get("status") == "ok"]
    slopes = res["full_vs_vjp"]["slopes"]
    for key, label, fname in (("seconds", "seconds per gradient", "full_vs_vjp_time.png"),
                              ("peak_bytes", "peak bytes per gradient", "full_vs_vjp_memory.png")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, prob in zip(axes, ("worked example", "attention")):
            for route in dict.fromkeys(r["route"] for r in recs):
                pts = [(r["n"], r[key]) for r in recs if r["problem"] == prob and r["route"] == route]
                if not pts:
                    continue
                s = slopes.get(f"{prob} | {route}", {}).get("time" if key == "seconds" else "memory")
                ax.loglog(*zip(*pts), "o-", label=f"{route} (slope {s:.1f})" if s is not None else route)
            ax.set_title(f"{prob}: gradient, d = n/2")
            ax.set_xlabel("n")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        written[fname] = _png(fig, plt)
    fig, ax = plt.subplots(figsize=(9, 4))
    names = [o["chain"] for o in res["order"]]
    for k, (which, color) in enumerate((("chosen", "C2"), ("forward", "C0"), ("reverse", "C1"))):
        ax.bar([i + (k - 1) * 0.27 for i in range(len(names))], [o["flops"][which] for o in res["order"]], 0.27,
               label=which, color=color)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("planned FLOPs")
    ax.set_title("chain(): planned FLOPs by contraction order")
    ax.legend()
    fig.tight_layout()
    written["order.png"] = _png(fig, plt)
    precs = [r for r in res["peers"]["records"] if r.get("status") == "ok"]
    probs = list(dict.fromkeys(r["problem"] for r in precs if r["problem"].startswith("attention")))
    if probs:
        fig, axes = plt.subplots(1, len(probs), figsize=(6 * len(probs), 4.5))
        axes = axes if len(probs) > 1 else [axes]
        for ax, prob in zip(axes, probs):
            sizes = list(dict.fromkeys(r["n"] for r in precs if r["problem"] == prob))
            n = sizes[-2] if len(sizes) > 1 and prob.startswith("attention: full") else sizes[-1]
            rows = sorted((r for r in precs if r["problem"] == prob and r["n"] == n), key=lambda r: r["seconds"])
            ax.barh([r["method"] for r in rows], [r["seconds"] * 1e6 for r in rows],
                    color=["C3" if r["method"].startswith("jactensor") else "C7" for r in rows])
            ax.set_xscale("log")
            ax.set_xlabel("median microseconds per call (one core)")
            ax.set_title(f"{prob.replace(': ', ':' + chr(10))}\nat (n, d) = ({n}, {rows[0]['d'] if rows else ''})",
                         fontsize=9)
            ax.tick_params(axis="y", labelsize=8)
        fig.tight_layout()
        written["peers.png"] = _png(fig, plt)
    return written


def _structured_md(res):
    lines = []
    recs = res.get("hessians", {}).get("records", [])
    if recs:
        lines += ["## Structured Hessians (median milliseconds per Hessian; jit JAX compile apart)", ""]
        for prob in dict.fromkeys(r["problem"] for r in recs):
            rows = [r for r in recs if r["problem"] == prob]
            sizes = list(dict.fromkeys(r["size"] for r in rows))
            lines += [f"### {prob}", "", "| method | " + " | ".join(sizes) + " |", "|---|" + "---:|" * len(sizes)]
            for meth in dict.fromkeys(r["method"] for r in rows):
                cells = []
                for size in sizes:
                    r = next((r for r in rows if r["method"] == meth and r["size"] == size), None)
                    if r is None or r.get("status") != "ok":
                        cells.append("" if r is None else "error")
                        continue
                    c = f"{r['seconds'] * 1e3:,.1f}"
                    if "compile_seconds" in r:
                        c += f" (+{r['compile_seconds']:.2f} s)"
                    if r.get("note"):
                        c += f" ({r['note']})"
                    cells.append(c)
                lines.append(f"| {meth} | " + " | ".join(cells) + " |")
            lines.append("")
    for key, title in (("per_example", "Per-example Jacobians of an MLP layer"),
                       ("ntk", "Empirical NTK of a two-layer MLP")):
        rr = res.get(key, {}).get("records", [])
        if rr:
            lines += [f"## {title}", "", "| method | median ms | peak memory (MiB) |", "|---|---:|---:|"]
            for r in rr:
                c = f"{r['seconds'] * 1e3:,.2f}" + (f" (+{r['compile_seconds']:.2f} s)" if "compile_seconds" in r else "")
                lines.append(f"| {r['method']} | {c} | {_mib(r.get('peak_bytes'))} |")
            if key == "per_example":
                r = rr[0]
                lines.append(f"\nB = {r['B']}, in {r['d_in']}, out {r['d_out']}: the per-example result is "
                             f"{_mib(r['result_bytes'])} MiB; the dense Jacobian would be {_mib(r['dense_bytes'])} MiB.")
            lines.append("")
    return lines


def _jit_md(res):
    recs = res.get("jit", {}).get("records", [])
    if not recs:
        return []
    lines = ["## Compiled programs (jt.jit): median microseconds per call, first call (compile included) apart", "",
             "| problem | (n, d) | method | median us | first call ms |", "|---|---|---|---:|---:|"]
    for r in recs:
        first = f"{r['first_call_seconds'] * 1e3:,.1f}" if "first_call_seconds" in r else ""
        lines.append(f"| {r['problem']} | ({r['n']}, {r['d']}) | {r['method']} | {_us(r.get('seconds'))} | {first} |")
    return lines + [""]


def _chains_md(res):
    ch = res.get("long_chain", {})
    if not ch.get("records"):
        return []
    lines = ["## Long programs: jacobian(method='chain') against method='rev' (seconds)", "",
             "| ops | chain | rev | chain / rev |", "|---:|---:|---:|---:|"]
    for r in ch["records"]:
        lines.append(f"| {r['L']:,} | {r['chain_seconds']:.3f} | {r['rev_seconds']:.3f} | {r['ratio']:.2f} |")
    if ch.get("time_slope") is not None:
        lines.append(f"\nFitted power of L for the chain route: {ch['time_slope']:.2f}.")
    return lines + [""]


def _vit_md(res):
    v = res.get("vit")
    if not v:
        return []
    lines = ["", "## The ViT on the digits: training step and epochs", ""]
    if v.get("status") != "ok":
        return lines + [v.get("status", "not measured"), ""]
    lines += [f"{v['config']}, batch {v['batch']}; one training step is value_and_grad of the loss (forward and "
              f"backward), median microseconds:", "", "| method | step (us) |", "|---|---:|"]
    for s in v["steps"]:
        extra = f" (first call {s['first_call_seconds']:.2f} s: compiles)" if "first_call_seconds" in s else ""
        lines.append(f"| {s['method']} | {_us(s['seconds'])}{extra} |")
    ep = v.get("epochs")
    if ep:
        lines += ["", "| training (default settings, seed 0) | epochs | s per epoch (after the first) | first epoch (s) "
                      "| total (s) | test accuracy |", "|---|---:|---:|---:|---:|---:|"]
        for k, r in ep.items():
            lines.append(f"| {k} | {r['epochs']} | {r['seconds_per_epoch']:.3f} | {r['first_epoch_seconds']:.2f} | "
                         f"{r['total_seconds']:.1f} | {r['test_accuracy']:.4f} |")
    lines.append("")
    return lines
