"""Training and checking the vision transformer on scikit-learn's 8x8 digits (the `vit` extra)."""
import math
import numbers
import time

import numpy as np

from ..jit import jit
from ..transforms import grad, jacobian, value_and_grad
from .vit import Adam, ViTConfig, accuracy, count_params, init_params, loss_fn

__all__ = ["load_digits_split", "train", "gradient_check", "DEFAULTS"]

# the default run: reaches >= 0.95 test accuracy in well under 3 minutes on 2 cores (see README)
DEFAULTS = dict(epochs=40, batch_size=64, lr=2e-3, seed=0, weight_decay=0.1)


def load_digits_split(seed=0, test_size=0.2):
    """The 1,797 8x8 digits shipped inside scikit-learn, scaled to [0, 1], with a fixed stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError("the ViT needs scikit-learn's digits: pip install 'jactensor[vit]'") from None
    d = load_digits()
    X, y = d.images / 16.0, d.target.astype(np.int64)
    return train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)


def shift_augment(images, rng, max_shift=1, prob=1.0):
    """Each image (with probability ``prob``) moved by a random whole-pixel offset in
    [-max_shift, max_shift]^2; zeros fill in."""
    B, S, _ = images.shape
    m = max_shift
    padded = np.pad(images, ((0, 0), (m, m), (m, m)))
    dy, dx = rng.integers(0, 2 * m + 1, size=(2, B))
    keep = rng.random(B) >= prob
    dy[keep], dx[keep] = m, m
    rows = dy[:, None] + np.arange(S)[None, :]
    cols = dx[:, None] + np.arange(S)[None, :]
    return padded[np.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]]


def train(cfg, epochs=30, batch_size=64, lr=3e-3, seed=0, params=None, data=None, progress=True, log=None,
          augment=False, weight_decay=0.0, aug_prob=0.5, compiled=True):
    """Adam with a cosine learning-rate decay on a compiled value_and_grad (the VJP path; ``compiled=False``
    traces every step instead, same numbers); training images are shifted by up to one pixel at random
    (``augment``), the only regulariser the small data set needs.
    Returns (params, history) where history has per-epoch loss, train and test accuracy and time."""
    _check_settings(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay)
    Xtr, Xte, ytr, yte = data if data is not None else load_digits_split()
    params = init_params(cfg, seed) if params is None else params
    opt = Adam(params, lr=lr, weight_decay=weight_decay)
    # compiled: the first batch of each shape records forward, VJP rules and label checks; later batches
    # replay that program (labels are read afresh; the smaller last batch is a second program)
    vg = jit(value_and_grad(loss_fn), static_argnums=3) if compiled else value_and_grad(loss_fn)
    rng = np.random.default_rng(seed)
    steps = max(1, math.ceil(len(ytr) / batch_size)) * max(epochs, 1)
    history = {"loss": [], "train_acc": [], "test_acc": [], "seconds": []}
    bar = _progress(epochs, progress)
    t0 = time.perf_counter()
    try:  # the bar closes (ending its line) even when training is interrupted
        for epoch in range(epochs):
            order = rng.permutation(len(ytr))
            losses = []
            for s in range(0, len(ytr), batch_size):
                idx = order[s:s + batch_size]
                xb = shift_augment(Xtr[idx], rng, prob=aug_prob) if augment else Xtr[idx]
                loss, g = vg(params, xb, ytr[idx], cfg)
                if not math.isfinite(float(loss)):  # stop at once: the accuracy of a NaN model means nothing
                    raise ValueError(f"ViT training diverged: the loss is {float(loss)} at epoch {epoch + 1}, "
                                     f"step {opt.t + 1}; learning rate {lr} is too large for this model, choose a "
                                     f"smaller one")
                lr_t = lr * 0.5 * (1 + math.cos(math.pi * opt.t / steps))
                params = opt.step(params, g, lr_t)
                losses.append(float(loss) * len(idx))
            history["loss"].append(sum(losses) / len(ytr))
            history["train_acc"].append(accuracy(params, Xtr, ytr, cfg))
            history["test_acc"].append(accuracy(params, Xte, yte, cfg))
            history["seconds"].append(time.perf_counter() - t0)
            if bar is not None:
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", train_acc=f"{history['train_acc'][-1]:.3f}",
                                test_acc=f"{history['test_acc'][-1]:.3f}")
                bar.update(1)
            if log is not None:
                log(epoch, history)
    finally:
        if bar is not None:
            bar.close()
    return params, history


def _check_settings(epochs, batch_size, lr, weight_decay):
    def whole(v, least):
        return not isinstance(v, bool) and isinstance(v, numbers.Integral) and v >= least

    def real(v):
        return not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)
    if not whole(epochs, 0):
        raise ValueError(f"ViT training: epochs must be a whole number >= 0; got {epochs!r}")
    if not whole(batch_size, 1):
        raise ValueError(f"ViT training: batch_size must be a whole number >= 1; got {batch_size!r}")
    if not (real(lr) and lr > 0):
        raise ValueError(f"ViT training: the learning rate must be a finite number > 0; got {lr!r}")
    if not (real(weight_decay) and weight_decay >= 0):
        raise ValueError(f"ViT training: weight_decay must be a finite number >= 0; got {weight_decay!r}")


def _progress(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="training ViT", unit="epoch")


def _fd_grad(f, params, key, eps=1e-5):
    p = params[key]
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        old = p[i]
        p[i] = old + eps
        fp = float(f(params))
        p[i] = old - eps
        fm = float(f(params))
        p[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def gradient_check(seed=0, n_images=2, with_torch=True, write=print):
    """Tiny ViT (2 images, width 8, one block, two heads): the full-Jacobian path, the VJP path and
    central finite differences agree on every parameter (relative error < 1e-7); with torch installed,
    the same model in PyTorch gives the same loss and gradients (to 1e-10). Returns True on success."""
    cfg = ViTConfig(patch=4, width=8, depth=1, heads=2, mlp_ratio=2)
    Xtr, _, ytr, _ = load_digits_split()
    X, y = Xtr[:n_images], ytr[:n_images]
    rng = np.random.default_rng(seed)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in init_params(cfg, seed).items()}
    f = lambda p: loss_fn(p, X, y, cfg)  # noqa: E731
    g_vjp = grad(f)(params)
    g_chain = jacobian(f, method="chain")(params)
    ok = True
    write(f"ViT gradient check: {n_images} images, {count_params(params)} parameters, config {cfg}")
    write(f"  {'parameter':<18} {'shape':<10} {'chain vs VJP':>13} {'FD vs VJP':>11}")
    worst = 0.0
    for k in sorted(params):
        scale = max(float(np.max(np.abs(g_vjp[k]))), 1e-12)
        e_chain = float(np.max(np.abs(g_chain[k] - g_vjp[k]))) / scale
        e_fd = float(np.max(np.abs(_fd_grad(f, params, k) - g_vjp[k]))) / scale
        worst = max(worst, e_chain, e_fd)
        bad = e_chain > 1e-7 or e_fd > 1e-7
        ok &= not bad
        write(f"  {k:<18} {str(params[k].shape):<10} {e_chain:>13.1e} {e_fd:>11.1e}{'  MISMATCH' if bad else ''}")
    write(f"  max relative error {worst:.1e} (limit 1e-7): {'ok' if ok else 'FAILED'}")
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            write("  PyTorch not installed: cross-check skipped (pip install 'jactensor[peers]')")
            return ok
        from .torch_vit import torch_loss_and_grads
        loss_t, grads_t = torch_loss_and_grads(params, X, y, cfg)
        e_loss = abs(float(f(params)) - loss_t)
        e_grad = max(float(np.max(np.abs(grads_t[k] - g_vjp[k]))) for k in params)
        t_ok = e_loss < 1e-10 and e_grad < 1e-10
        ok &= t_ok
        write(f"  PyTorch (same weights, float64): |loss diff| {e_loss:.1e}, max |grad diff| {e_grad:.1e}: "
              f"{'ok' if t_ok else 'MISMATCH'}")
    return ok
