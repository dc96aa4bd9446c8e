"""A vision transformer written only with jactensor primitives.

Patch embedding (image -> patches -> linear map), a learned CLS token and position
embeddings, pre-LayerNorm encoder blocks (multi-head self-attention with heads by
reshape/transpose, then a GELU MLP), residual connections, a final LayerNorm, a linear
classification head and cross-entropy. Parameters are a flat dict of numpy arrays.

Initialisation (seeded): every weight matrix ~ N(0, 1/fan_in); biases 0; LayerNorm
gains 1 and shifts 0; the CLS token and position embeddings ~ N(0, 0.02^2).
"""
import json
from dataclasses import asdict, dataclass

import numpy as np

from .. import ops
from ..errors import ShapeError

__all__ = ["ViTConfig", "init_params", "patchify", "forward", "loss_fn", "accuracy", "save_params", "load_params",
           "count_params", "Adam", "check_shapes", "validate_images"]


@dataclass(frozen=True)
class ViTConfig:
    image: int = 8          # images are image x image, one channel
    patch: int = 4          # patch side; must divide image
    width: int = 48         # token width D
    depth: int = 2          # encoder blocks
    heads: int = 4          # attention heads; must divide width
    mlp_ratio: int = 2      # MLP hidden = mlp_ratio * width
    classes: int = 10

    def validate(self):
        if self.patch <= 0 or self.image % self.patch:
            raise ValueError(f"ViT: patch size {self.patch} does not divide the {self.image}x{self.image} image; "
                             f"choose one of {[p for p in range(1, self.image + 1) if self.image % p == 0]}")
        if self.heads <= 0 or self.width % self.heads:
            raise ValueError(f"ViT: width {self.width} is not divisible by heads {self.heads}; choose width as a "
                             f"multiple of heads (e.g. width {self.heads * max(1, self.width // self.heads)})")
        if min(self.width, self.depth + 1, self.mlp_ratio, self.classes) <= 0:
            raise ValueError(f"ViT: width, mlp_ratio and classes must be positive and depth >= 0; got {self}")
        return self

    @property
    def tokens(self):
        return (self.image // self.patch) ** 2


def init_params(cfg, seed=0):
    """Seeded parameters as a flat dict name -> float64 array (see the module docstring)."""
    cfg.validate()
    rng = np.random.default_rng(seed)
    D, P, H = cfg.width, cfg.patch * cfg.patch, cfg.mlp_ratio * cfg.width

    def dense(n_in, n_out):
        return rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)

    p = {"embed.W": dense(P, D), "embed.b": np.zeros(D),
         "cls": 0.02 * rng.normal(size=(1, D)), "pos": 0.02 * rng.normal(size=(cfg.tokens + 1, D))}
    for l in range(cfg.depth):
        b = f"block{l}."
        p.update({b + "ln1.g": np.ones(D), b + "ln1.b": np.zeros(D),
                  b + "attn.Wqkv": dense(D, 3 * D), b + "attn.bqkv": np.zeros(3 * D),
                  b + "attn.Wo": dense(D, D), b + "attn.bo": np.zeros(D),
                  b + "ln2.g": np.ones(D), b + "ln2.b": np.zeros(D),
                  b + "mlp.W1": dense(D, H), b + "mlp.b1": np.zeros(H),
                  b + "mlp.W2": dense(H, D), b + "mlp.b2": np.zeros(D)})
    p.update({"ln.g": np.ones(D), "ln.b": np.zeros(D), "head.W": dense(D, cfg.classes), "head.b": np.zeros(cfg.classes)})
    return p


def count_params(params):
    return int(sum(np.size(v) for v in params.values()))


def patchify(images, patch):
    """(B, S, S) images -> (B, T, patch*patch) patches in row-major patch order, with primitives."""
    B, S = np.shape(images)[0], np.shape(images)[-1]
    g = S // patch
    x = ops.reshape(images, (B, g, patch, g, patch))
    x = ops.transpose(x, (0, 1, 3, 2, 4))
    return ops.reshape(x, (B, g * g, patch * patch))


def attention(x, p, b, heads):
    """Multi-head self-attention; x: (B, N, D) -> (B, N, D). Heads by reshape and transpose."""
    B, N, D = np.shape(x)
    dh = D // heads
    qkv = x @ p[b + "attn.Wqkv"] + p[b + "attn.bqkv"]                          # (B, N, 3D)
    qkv = ops.transpose(ops.reshape(qkv, (B, N, 3, heads, dh)), (2, 0, 3, 1, 4))  # (3, B, H, N, dh)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ ops.transpose(k, (0, 1, 3, 2)) * (1.0 / np.sqrt(dh))          # (B, H, N, N)
    out = ops.softmax(scores, axis=-1) @ v                                       # (B, H, N, dh)
    out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (B, N, D))
    return out @ p[b + "attn.Wo"] + p[b + "attn.bo"]


def forward(params, images, cfg, stages=None):
    """Logits (B, classes) for images (B, S, S). ``stages``: a dict that receives each stage's output."""
    B = np.shape(images)[0]
    x = patchify(images, cfg.patch) @ params["embed.W"] + params["embed.b"]     # (B, T, D)
    cls = ops.broadcast_to(params["cls"], (B, 1, cfg.width))
    x = ops.concatenate([cls, x], axis=1) + params["pos"]                        # (B, T+1, D)
    if stages is not None:
        stages["tokens"] = x
    for l in range(cfg.depth):
        b = f"block{l}."
        x = x + attention(ops.layer_norm(x, params[b + "ln1.g"], params[b + "ln1.b"]), params, b, cfg.heads)
        h = ops.layer_norm(x, params[b + "ln2.g"], params[b + "ln2.b"])
        x = x + ops.gelu(h @ params[b + "mlp.W1"] + params[b + "mlp.b1"]) @ params[b + "mlp.W2"] + params[b + "mlp.b2"]
        if stages is not None:
            stages[f"block{l}"] = x
    x = ops.layer_norm(x[:, 0], params["ln.g"], params["ln.b"])                 # the CLS token, (B, D)
    logits = x @ params["head.W"] + params["head.b"]
    if stages is not None:
        stages["cls"], stages["logits"] = x, logits
    return logits


def loss_fn(params, images, labels, cfg):
    """Mean cross-entropy of the logits against integer labels."""
    return ops.cross_entropy(forward(params, images, cfg), labels)


def accuracy(params, images, labels, cfg, batch=512):
    correct = 0
    for s in range(0, len(labels), batch):
        logits = forward(params, images[s:s + batch], cfg)
        correct += int(np.sum(np.argmax(logits, axis=-1) == labels[s:s + batch]))
    return correct / max(len(labels), 1)


class Adam:
    """Adam (Kingma & Ba): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr m_hat / (sqrt(v_hat) + eps);
    with weight_decay, also p -= lr wd p on weight matrices (AdamW, Loshchilov & Hutter)."""

    def __init__(self, params, lr=3e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.weight_decay = weight_decay  # decoupled (AdamW), on weight matrices only
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads, lr=None):
        self.t += 1
        lr = self.lr if lr is None else lr
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            decay = lr * self.weight_decay * params[k] if self.weight_decay and params[k].ndim == 2 else 0.0
            params[k] = params[k] - lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps) - decay
        return params


def save_params(path, params, cfg):
    """np.savez of the parameters plus the configuration as a JSON string."""
    np.savez(path, __config__=np.array(json.dumps(asdict(cfg))), **params)


def load_params(path, cfg=None):
    """Read parameters saved by save_params (allow_pickle=False); returns (params, cfg). Clear errors for
    a missing, malformed or mismatching file."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"ViT: no parameter file at {path!r}; train with `jactensor vit --save {path}`") \
            from None
    except (ValueError, OSError) as e:
        raise ValueError(f"ViT: {path!r} is not a parameter file written by `jactensor vit --save` ({e})") from None
    if not hasattr(data, "files") or "__config__" not in data.files:
        raise ValueError(f"ViT: {path!r} holds no __config__ entry; it was not written by `jactensor vit --save`")
    try:
        saved = ViTConfig(**json.loads(str(data["__config__"])))
    except (TypeError, ValueError) as e:
        raise ValueError(f"ViT: the configuration stored in {path!r} is malformed ({e})") from None
    if cfg is not None and cfg != saved:
        raise ValueError(f"ViT: {path!r} was saved with {saved}, which differs from the requested {cfg}")
    params = {k: np.asarray(data[k], dtype=np.float64) for k in data.files if k != "__config__"}
    expected = init_params(saved, 0)
    missing = sorted(set(expected) - set(params))
    wrong = sorted(k for k in expected if k in params and params[k].shape != expected[k].shape)
    if missing or wrong:
        raise ValueError(f"ViT: {path!r} does not match its configuration: missing {missing}, wrong shapes {wrong}")
    return params, saved


def check_shapes(params, images, cfg):
    """Stage shapes for a batch: tokens (B, T+1, D), each block (B, T+1, D), cls (B, D), logits (B, classes)."""
    stages = {}
    forward(params, images, cfg, stages)
    return {k: np.shape(v) for k, v in stages.items()}


def validate_images(images):
    if np.ndim(images) != 3 or np.shape(images)[1] != np.shape(images)[2]:
        raise ShapeError(f"ViT: images must have shape (batch, S, S); got {np.shape(images)}")
