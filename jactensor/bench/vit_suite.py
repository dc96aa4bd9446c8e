"""The vision transformer on the digits: one training step and whole epochs, compiled (``jt.jit``) against
uncompiled (every step traced afresh), and one training step against the same model in eager PyTorch.

The step is the default model's ``value_and_grad`` of the loss on one batch of 64 training images (forward
and backward; the optimiser's update is the same numpy code in both jactensor variants and is left out).
The PyTorch twin runs the same forward and ``loss.backward()`` on tensors made once, in float64 on one
thread, as a PyTorch training loop would per batch. Before timing, the three agree on the loss and every
gradient. The epochs are ``models.train.train`` with the command's defaults: seconds per epoch exclude the
first epoch (which holds the compilation), and in the full run both variants train the whole 40 epochs so
the test accuracies can be compared.
"""

import numpy as np

from .timing import check_then_time

__all__ = ["vit_suite", "vit_targets"]

STEP_METHODS = ("jactensor value_and_grad (uncompiled)", "jactensor jit(value_and_grad)", "torch eager (one thread)")


def vit_suite(mode, repeats=5, libs=(), progress=None):
    from ..models.train import DEFAULTS, load_digits_split, train
    from ..models.vit import ViTConfig, init_params, loss_fn
    from ..transforms import value_and_grad
    from ..jit import jit
    try:
        data = load_digits_split()
    except ImportError as e:
        return {"status": f"not measured: {e}"}
    cfg = ViTConfig()
    Xtr, _, ytr, _ = data
    xb, yb = Xtr[:DEFAULTS["batch_size"]], ytr[:DEFAULTS["batch_size"]]
    params = init_params(cfg, DEFAULTS["seed"])
    eager = value_and_grad(loss_fn)
    compiled = jit(value_and_grad(loss_fn), static_argnums=3)
    ref = eager(params, xb, yb, cfg)
    fns = {STEP_METHODS[0]: lambda: eager(params, xb, yb, cfg), STEP_METHODS[1]: lambda: compiled(params, xb, yb, cfg)}
    if "torch" in libs:
        import torch
        from ..models.torch_vit import torch_step
        torch.set_num_threads(1)
        fns[STEP_METHODS[2]] = torch_step(params, xb, yb, cfg)

    def agrees(out):  # the same loss and gradients from every variant
        loss, grads = out
        return abs(float(loss) - float(ref[0])) <= 1e-10 * max(1.0, abs(float(ref[0]))) and \
            all(np.allclose(grads[k], ref[1][k], rtol=1e-8, atol=1e-10) for k in ref[1])
    steps = check_then_time(fns, agrees, "the ViT training step", repeats=repeats,
                            compiles=lambda name: name == STEP_METHODS[1])
    if progress:
        progress("ViT training step")
    out = {"status": "ok", "config": str(cfg), "batch": int(len(yb)), "steps": steps}
    if mode == "smoke":
        return out
    epochs = DEFAULTS["epochs"] if mode == "full" else 3
    runs = {}
    for label, flag in (("compiled", True), ("uncompiled", False)):
        _, hist = train(cfg, epochs=epochs, batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"],
                        seed=DEFAULTS["seed"], data=data, progress=False, weight_decay=DEFAULTS["weight_decay"],
                        compiled=flag)
        s = hist["seconds"]
        runs[label] = {"epochs": epochs, "total_seconds": s[-1], "first_epoch_seconds": s[0],
                       "seconds_per_epoch": (s[-1] - s[0]) / max(len(s) - 1, 1),
                       "test_accuracy": hist["test_acc"][-1]}
        if progress:
            progress(f"ViT {epochs} epochs, {label}")
    out["epochs"] = runs
    return out


def vit_targets(res):
    """Compiled epochs at least 1.5x faster than uncompiled; the same test accuracy (default seed, full run)
    within 0.005; the step against PyTorch eager reported (no target). Only for runs that trained epochs."""
    if res.get("status") != "ok":
        return []
    t = []
    ep = res.get("epochs")
    if ep:
        t.append({"target": "ViT seconds per epoch: jt.jit at least 1.5x faster than uncompiled (compiled / "
                            "uncompiled at most 0.667)",
                  "ratio": ep["compiled"]["seconds_per_epoch"] / ep["uncompiled"]["seconds_per_epoch"],
                  "limit": 1 / 1.5})
        if ep["compiled"]["epochs"] >= 40:
            diff = abs(ep["compiled"]["test_accuracy"] - ep["uncompiled"]["test_accuracy"])
            t.append({"target": "ViT test accuracy after the default 40 epochs: compiled equals uncompiled within "
                                "0.005 (the ratio column is the difference)", "ratio": diff, "met": diff <= 0.005})
    by = {s["method"]: s["seconds"] for s in res["steps"]}
    if ep and STEP_METHODS[2] in by:  # (a smoke run, which trains no epochs, reports no target)
        t.append({"target": "ViT training step, jt.jit against the PyTorch eager twin (one thread): reported, "
                            "no target", "ratio": by[STEP_METHODS[1]] / by[STEP_METHODS[2]], "met": "reported"})
    return t
