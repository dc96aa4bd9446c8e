"""The vision transformer stage by stage: how large each Jacobian is, and what backpropagation holds instead.

``explain_vit(cfg)`` runs ``jactensor/models/vit.py`` on a few random 8x8 images and reports, for
every stage (patch embedding; per block LayerNorm, attention scores, softmax, attention output,
LayerNorm, MLP; final LayerNorm, head, loss):

- the shape of the stage's Jacobian w.r.t. its input, ``out.shape + in.shape``;
- its dense bytes, ``8 * prod(out.shape + in.shape)`` (float64), from the shapes alone;
- its structured bytes: the factors that the primitives' Jacobian rules store for the ops inside
  the stage (``prim.jac_rules[k](ans, *args, **params).stored_bytes``, summed);
- its fraction of structural zeros, from the structured Jacobian's delta patterns and factors
  (``J.nnz``), never from a dense tensor;
- the bytes of the VJP path: one cotangent per intermediate, each the size of that intermediate.

The same totals follow for the default configuration at the training batch size, with the dense
bytes again computed from shapes only, so the reader sees why backpropagation never forms these
tensors. ``jactensor explain --program vit [--png bytes.png]`` prints (and draws) it.
"""
import dataclasses

import numpy as np

from .. import ops
from ..explain import explain
from ..memory import ITEMSIZE, fmt_bytes, numel
from ..transforms import jacobian
from .train import DEFAULTS
from .vit import ViTConfig, init_params, patchify

__all__ = ["explain_vit", "stages", "stage_shapes", "ViTExplanation", "TINY"]

TINY = ViTConfig(patch=4, width=8, depth=1, heads=2, mlp_ratio=2)  # the configuration `vit --check` uses


def stages(params, images, labels, cfg):
    """The forward pass of vit.forward + vit.loss_fn cut into stages: a list of (name, f, x) where f maps
    the stage's input x to its output, the next stage's input. What else a stage reads (weights, the
    residual stream, the attention values V) is held fixed. The last stage's output is the loss."""
    p, B, D, H = params, np.shape(images)[0], cfg.width, cfg.heads
    N, dh = cfg.tokens + 1, D // H
    out = []

    def stage(name, f, x):
        out.append((name, f, x))
        return f(x)

    cls = ops.broadcast_to(p["cls"], (B, 1, D))
    x = stage("patch embedding", lambda im: ops.concatenate(
        [cls, patchify(im, cfg.patch) @ p["embed.W"] + p["embed.b"]], axis=1) + p["pos"], images)
    for blk in range(cfg.depth):
        b = f"block{blk}."

        def qkv_of(h, b=b):  # (3, B, H, N, dh), as in vit.attention
            qkv = h @ p[b + "attn.Wqkv"] + p[b + "attn.bqkv"]
            return ops.transpose(ops.reshape(qkv, (B, N, 3, H, dh)), (2, 0, 3, 1, 4))

        def scores_of(h, qkv_of=qkv_of):
            qkv = qkv_of(h)
            return qkv[0] @ ops.transpose(qkv[1], (0, 1, 3, 2)) * (1.0 / np.sqrt(dh))

        def attended(P, x=x, v=None, b=b):
            o = ops.reshape(ops.transpose(P @ v, (0, 2, 1, 3)), (B, N, D))
            return x + (o @ p[b + "attn.Wo"] + p[b + "attn.bo"])

        h = stage(f"block {blk}: LayerNorm", lambda x, b=b: ops.layer_norm(x, p[b + "ln1.g"], p[b + "ln1.b"]), x)
        s = stage(f"block {blk}: attention scores", scores_of, h)
        P = stage(f"block {blk}: softmax", lambda s: ops.softmax(s, axis=-1), s)
        v = qkv_of(h)[2]
        x = stage(f"block {blk}: attention output", lambda P, x=x, v=v, b=b: attended(P, x, v, b), P)
        h = stage(f"block {blk}: LayerNorm", lambda x, b=b: ops.layer_norm(x, p[b + "ln2.g"], p[b + "ln2.b"]), x)
        x = stage(f"block {blk}: MLP", lambda h, x=x, b=b: x + ops.gelu(h @ p[b + "mlp.W1"] + p[b + "mlp.b1"])
                  @ p[b + "mlp.W2"] + p[b + "mlp.b2"], h)
    c = stage("final LayerNorm (CLS token)", lambda x: ops.layer_norm(x[:, 0], p["ln.g"], p["ln.b"]), x)
    logits = stage("head", lambda c: c @ p["head.W"] + p["head.b"], c)
    stage("loss (cross-entropy)", lambda z: ops.cross_entropy(z, labels), logits)
    return out


def stage_shapes(cfg, batch):
    """(name, input shape, output shape) of every stage, from the configuration's arithmetic alone."""
    B, S, N, D, H, C = batch, cfg.image, cfg.tokens + 1, cfg.width, cfg.heads, cfg.classes
    rows = [("patch embedding", (B, S, S), (B, N, D))]
    for blk in range(cfg.depth):
        rows += [(f"block {blk}: LayerNorm", (B, N, D), (B, N, D)),
                 (f"block {blk}: attention scores", (B, N, D), (B, H, N, N)),
                 (f"block {blk}: softmax", (B, H, N, N), (B, H, N, N)),
                 (f"block {blk}: attention output", (B, H, N, N), (B, N, D)),
                 (f"block {blk}: LayerNorm", (B, N, D), (B, N, D)),
                 (f"block {blk}: MLP", (B, N, D), (B, N, D))]
    rows += [("final LayerNorm (CLS token)", (B, N, D), (B, D)), ("head", (B, D), (B, C)),
             ("loss (cross-entropy)", (B, C), ())]
    return rows


def _inputs(cfg, batch, seed):
    rng = np.random.default_rng(seed)
    params = init_params(cfg, seed)
    images = rng.random((batch, cfg.image, cfg.image))
    labels = rng.integers(0, cfg.classes, size=batch)
    return params, images, labels


def _rows(cfg, batch, seed, zeros):
    rows = []
    for name, f, x in stages(*_inputs(cfg, batch, seed), cfg):
        e = explain(f, x)
        out_shape, in_shape = np.shape(f(x)), np.shape(x)
        row = {"stage": name, "in_shape": in_shape, "out_shape": out_shape, "jacobian_shape": out_shape + in_shape,
               "dense_bytes": ITEMSIZE * numel(out_shape + in_shape), "structured_bytes": e.structured_bytes,
               "vjp_bytes": e.vjp_bytes, "zero_fraction": None}
        if zeros:
            J = jacobian(f, structured=True)(x)
            row["zero_fraction"] = 1.0 - J.nnz / J.size
        rows.append(row)
    return rows


def _totals(rows):
    return {k: sum(r[k] for r in rows) for k in ("dense_bytes", "structured_bytes", "vjp_bytes")}


class ViTExplanation:
    """Per-stage rows (``rows``: dicts with stage, in_shape, out_shape, jacobian_shape, dense_bytes,
    structured_bytes, zero_fraction, vjp_bytes), their ``totals``, and the totals of the default
    configuration (``default_totals``, at ``default_batch`` images). ``str()`` is the table; ``plot()``
    draws the bytes per stage."""

    def __init__(self, cfg, n_images, rows, default_cfg, default_batch, default_totals):
        self.cfg, self.n_images, self.rows = cfg, n_images, rows
        self.totals = _totals(rows)
        self.default_cfg, self.default_batch, self.default_totals = default_cfg, default_batch, default_totals

    def __str__(self):
        c, d = self.cfg, self.default_cfg
        head = ("stage", "input -> output", "Jacobian shape (out + in)", "dense", "structured", "zeros", "VJP")
        body = [(r["stage"], f"{r['in_shape']} -> {r['out_shape']}", str(r["jacobian_shape"]),
                 fmt_bytes(r["dense_bytes"]), fmt_bytes(r["structured_bytes"]),
                 "-" if r["zero_fraction"] is None else f"{r['zero_fraction']:.1%}", fmt_bytes(r["vjp_bytes"]))
                for r in self.rows]
        t = self.totals
        total = ("total", "", "", fmt_bytes(t["dense_bytes"]), fmt_bytes(t["structured_bytes"]), "",
                 fmt_bytes(t["vjp_bytes"]))
        w = [max(len(x[i]) for x in [head, total] + body) for i in range(len(head))]
        right = {3, 4, 5, 6}

        def line(cells):
            return "  ".join(x.rjust(w[i]) if i in right else x.ljust(w[i]) for i, x in enumerate(cells)).rstrip()
        out = [f"ViT stage by stage: {self.n_images} images of {c.image}x{c.image}, patch {c.patch} "
               f"({c.tokens} patches + CLS = {c.tokens + 1} tokens), width {c.width}, {c.depth} block(s), "
               f"{c.heads} heads, MLP {c.mlp_ratio * c.width}",
               "Each stage's Jacobian w.r.t. its input (what else it reads held fixed): dense = 8 * prod(out + in) "
               "bytes; structured = the factors its ops' Jacobian rules store; zeros = structural zeros; VJP = the "
               "cotangents backpropagation holds (one per intermediate).", "",
               line(head), "  ".join("-" * x for x in w)] + [line(r) for r in body]
        out += ["  ".join("-" * x for x in w), line(total), ""]
        dt = self.default_totals
        out.append(f"Default configuration (width {d.width}, {d.depth} blocks, {d.heads} heads, patch {d.patch}) on a "
                   f"training batch of {self.default_batch} images, from the shapes: the stage Jacobians would take "
                   f"{fmt_bytes(dt['dense_bytes'])} dense, {fmt_bytes(dt['structured_bytes'])} as structured "
                   f"factors; the VJP path holds {fmt_bytes(dt['vjp_bytes'])}.")
        out.append(f"That is {dt['dense_bytes'] / max(dt['vjp_bytes'], 1):,.0f} times what backpropagation holds: "
                   f"it passes one cotangent per intermediate and never forms a Jacobian.")
        return "\n".join(out)

    __repr__ = __str__

    def plot(self, ax=None):
        """Grouped bars per stage: dense, structured and VJP bytes on a log scale; returns the Axes."""
        from ..plot import require_matplotlib
        plt = require_matplotlib()
        if ax is None:
            _, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(self.rows) + 2), 4.8))
        x = np.arange(len(self.rows))
        for k, (key, label, color) in enumerate((("dense_bytes", "dense Jacobian", "C3"),
                                                 ("structured_bytes", "structured factors", "C0"),
                                                 ("vjp_bytes", "VJP cotangents", "C2"))):
            ax.bar(x + (k - 1) * 0.27, [max(r[key], 1) for r in self.rows], 0.27, label=label, color=color)
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels([r["stage"] for r in self.rows], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("bytes (float64, log scale)")
        ax.set_title(f"ViT per stage, {self.n_images} images, width {self.cfg.width}: what each route would hold",
                     fontsize=10)
        ax.grid(True, axis="y", which="major", alpha=0.3)
        ax.legend(fontsize=8)
        return ax


def explain_vit(cfg=TINY, n_images=2, seed=0, default_cfg=None, default_batch=None):
    """Explain the ViT stage by stage (see the module docstring); returns a :class:`ViTExplanation`.

    ``cfg`` (default: 2 images, width 8, one block, 2 heads) is run on ``n_images`` random images, and the
    zero fractions come from its structured stage Jacobians; ``default_cfg`` (default ``ViTConfig()``) at
    ``default_batch`` images (default: the training batch size) gives the totals without zero fractions."""
    cfg = cfg.validate()
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"explain_vit: n_images must be a whole number >= 1; got {n_images!r}")
    default_cfg = (ViTConfig() if default_cfg is None else default_cfg).validate()
    default_batch = DEFAULTS["batch_size"] if default_batch is None else default_batch
    rows = _rows(cfg, int(n_images), seed, zeros=True)
    default_totals = _totals(_rows(default_cfg, default_batch, seed, zeros=False))
    return ViTExplanation(dataclasses.replace(cfg), int(n_images), rows, default_cfg, default_batch, default_totals)
