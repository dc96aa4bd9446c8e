"""The same vision transformer in PyTorch (float64), for the cross-check in `jactensor vit --check` and the
training-step comparison in the benchmarks."""
import numpy as np

__all__ = ["torch_loss_and_grads", "torch_step"]


def torch_loss_and_grads(params, images, labels, cfg):
    import torch
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    loss = _loss(p, torch.tensor(images, dtype=torch.float64), torch.tensor(labels, dtype=torch.long), cfg)
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in p.items()}


def torch_step(params, images, labels, cfg):
    """A function running one eager training step's forward and backward on tensors made once (what a PyTorch
    training loop does per batch); returns (loss, {name: gradient as numpy})."""
    import torch
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    x, y = torch.tensor(images, dtype=torch.float64), torch.tensor(labels, dtype=torch.long)

    def step():
        for v in p.values():
            v.grad = None
        loss = _loss(p, x, y, cfg)
        loss.backward()
        return float(loss.detach()), {k: v.grad.numpy() for k, v in p.items()}
    return step


def _loss(p, x, labels, cfg):
    import torch
    F = torch.nn.functional
    B, S = x.shape[0], x.shape[-1]
    g, P, D = S // cfg.patch, cfg.patch, cfg.width
    x = x.reshape(B, g, P, g, P).permute(0, 1, 3, 2, 4).reshape(B, g * g, P * P)
    x = x @ p["embed.W"] + p["embed.b"]
    x = torch.cat([p["cls"].expand(B, 1, D), x], dim=1) + p["pos"]
    N, H, dh = x.shape[1], cfg.heads, D // cfg.heads
    for l in range(cfg.depth):
        b = f"block{l}."
        h = F.layer_norm(x, (D,), p[b + "ln1.g"], p[b + "ln1.b"], eps=1e-5)
        qkv = (h @ p[b + "attn.Wqkv"] + p[b + "attn.bqkv"]).reshape(B, N, 3, H, dh).permute(2, 0, 3, 1, 4)
        att = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) / np.sqrt(dh), dim=-1) @ qkv[2]
        x = x + att.permute(0, 2, 1, 3).reshape(B, N, D) @ p[b + "attn.Wo"] + p[b + "attn.bo"]
        h = F.layer_norm(x, (D,), p[b + "ln2.g"], p[b + "ln2.b"], eps=1e-5)
        x = x + F.gelu(h @ p[b + "mlp.W1"] + p[b + "mlp.b1"], approximate="tanh") @ p[b + "mlp.W2"] + p[b + "mlp.b2"]
    x = F.layer_norm(x[:, 0], (D,), p["ln.g"], p["ln.b"], eps=1e-5)
    return F.cross_entropy(x @ p["head.W"] + p["head.b"], labels)
