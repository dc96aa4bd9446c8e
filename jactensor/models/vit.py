"""A vision transformer written only with jactensor primitives.

Patch embedding (image -> patches -> linear map), a learned CLS token and position
embeddings, pre-LayerNorm encoder blocks (multi-head self-attention with heads by
reshape/transpose, then a GELU MLP), residual connections, a final LayerNorm, a linear
classification head and cross-entropy. Parameters are a flat dict of numpy arrays.

Initialisation (seeded): every weight matrix ~ N(0, 1/fan_in); biases 0; LayerNorm
gains 1 and shifts 0; the CLS token and position embeddings ~ N(0, 0.02^2).
"""
import json
import numbers
import os
import zipfile
import zlib
from dataclasses import asdict, dataclass, fields

import numpy as np

from .. import ops
from ..config import config
from ..errors import ShapeError
from ..memory import fmt_bytes

__all__ = ["ViTConfig", "init_params", "patchify", "forward", "loss_fn", "accuracy", "save_params", "load_params",
           "count_params", "param_shapes", "Adam", "check_shapes", "validate_images"]


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
        """Whole numbers in range, patch | image, heads | width, and parameters that fit
        ``jt.config.max_jacobian_bytes`` (counted from the shapes, nothing allocated). Returns self."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"ViT: {f.name} must be a whole number; got {_short(v)}")
            lo, hi = _RANGES[f.name]
            if not lo <= v <= hi:
                raise ValueError(f"ViT: {f.name} must be between {lo} and {hi:,}; got {_short(v)}")
        if self.image % self.patch:
            raise ValueError(f"ViT: patch size {self.patch} does not divide the {self.image}x{self.image} image; "
                             f"choose one of {[p for p in range(1, min(self.image, 64) + 1) if self.image % p == 0]}")
        if self.width % self.heads:
            raise ValueError(f"ViT: width {self.width} is not divisible by heads {self.heads}; choose width as a "
                             f"multiple of heads (e.g. width {self.heads * max(1, self.width // self.heads)})")
        n = self.n_params
        if 8 * n > config.max_jacobian_bytes:
            raise ValueError(f"ViT: {self} has {n:,} parameters ({fmt_bytes(8 * n)} as float64), above the memory "
                             f"limit jt.config.max_jacobian_bytes = {fmt_bytes(config.max_jacobian_bytes)}; choose a "
                             f"smaller width, depth or mlp_ratio")
        return self

    @property
    def tokens(self):
        return (self.image // self.patch) ** 2

    @property
    def n_params(self):
        """The parameter count, from the arithmetic of param_shapes (nothing allocated)."""
        D, P, H, C = self.width, self.patch * self.patch, self.mlp_ratio * self.width, self.classes
        block = 4 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * H + H) + (H * D + D)
        return (P * D + D) + D + (self.tokens + 1) * D + self.depth * block + 2 * D + (D * C + C)


# sane bounds per setting (inclusive); the parameter bytes are bounded by the memory limit on top
_RANGES = {"image": (1, 4096), "patch": (1, 4096), "width": (1, 2**20), "depth": (0, 1000), "heads": (1, 2**20),
           "mlp_ratio": (1, 64), "classes": (2, 2**20)}


def _short(v, width=80):
    r = " ".join(repr(v).split())
    return r if len(r) <= width else r[:width - 20] + f"... ({len(r):,} characters)"


def _names(keys, most=6):
    keys = list(keys)
    shown = ", ".join(keys[:most])
    return f"[{shown}{f', ... ({len(keys) - most:,} more)' if len(keys) > most else ''}]"


def param_shapes(cfg, check=True):
    """Parameter name -> shape, from the configuration's arithmetic alone (what init_params allocates)."""
    if check:
        cfg.validate()
    D, P, H, C = cfg.width, cfg.patch * cfg.patch, cfg.mlp_ratio * cfg.width, cfg.classes
    s = {"embed.W": (P, D), "embed.b": (D,), "cls": (1, D), "pos": (cfg.tokens + 1, D)}
    for l in range(cfg.depth):
        b = f"block{l}."
        s.update({b + "ln1.g": (D,), b + "ln1.b": (D,), b + "attn.Wqkv": (D, 3 * D), b + "attn.bqkv": (3 * D,),
                  b + "attn.Wo": (D, D), b + "attn.bo": (D,), b + "ln2.g": (D,), b + "ln2.b": (D,),
                  b + "mlp.W1": (D, H), b + "mlp.b1": (H,), b + "mlp.W2": (H, D), b + "mlp.b2": (D,)})
    s.update({"ln.g": (D,), "ln.b": (D,), "head.W": (D, C), "head.b": (C,)})
    return s


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


MAX_CONFIG_CHARS = 4096  # the stored configuration is a short JSON string


def save_params(path, params, cfg):
    """Write the parameters and the configuration (a JSON string) in np.savez format to ``path`` exactly as
    given (no '.npz' is added). The file is written to a temporary name in the same folder and renamed over
    ``path`` when complete, so an interruption never leaves a half-written file in place of a good one."""
    _check_params({k: np.shape(v) for k, v in params.items()}, param_shapes(cfg),
                  f"save_params: the parameters for {cfg}")
    from ..fileio import atomic_write
    atomic_write(path, lambda f: np.savez(f, __config__=np.array(json.dumps(asdict(cfg))), **params))


def _check_params(shapes, expected, what):
    """Names and shapes (name -> shape) against the expected ones; a ValueError listing (a few of) the
    missing, unexpected and misshapen entries. An expected shape None checks the name only."""
    missing = [k for k in expected if k not in shapes]
    extra = [k for k in shapes if k not in expected]
    wrong = [k for k in expected if k in shapes and expected[k] is not None and tuple(shapes[k]) != expected[k]]
    if missing or extra or wrong:
        parts = [f"missing {_names(missing)}"] if missing else []
        parts += [f"unexpected {_names(extra)}"] if extra else []
        parts += [f"wrong shapes {_names(f'{k} {tuple(shapes[k])} (expected {expected[k]})' for k in wrong)}"] \
            if wrong else []
        raise ValueError(f"ViT: {what} do not match the configuration: {'; '.join(parts)}")


class _Member:
    """One array in an .npz archive: its header (read without the data) and a reader for the data."""

    def __init__(self, zf, name):
        self.zf, self.name = zf, name
        with zf.open(name) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                self.shape, _, self.dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                self.shape, _, self.dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise ValueError(f"array format version {version} is not one np.savez writes")

    def read(self):
        with self.zf.open(self.name) as fp:
            return np.lib.format.read_array(fp, allow_pickle=False)


_UNREADABLE = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError)


def load_params(path, cfg=None):
    """Read parameters saved by save_params; returns (params, cfg).

    The stored configuration is validated first (sane sizes, parameters within
    ``jt.config.max_jacobian_bytes``), then every array's header is checked against the shapes the
    configuration implies (arithmetically) before any array is read, so a file whose configuration or
    arrays are out of proportion is refused without allocating anything. Missing, truncated, corrupted
    or foreign files, pickled objects and non-finite values end in a FileNotFoundError or a ValueError
    saying which."""
    where = repr(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"ViT: no parameter file at {where}; train with `jactensor vit --save {where}`")
    not_ours = f"ViT: {where} is not a parameter file written by `jactensor vit --save`"
    try:
        zf = zipfile.ZipFile(path)
    except _UNREADABLE as e:
        raise ValueError(f"{not_ours} ({_short(str(e), 120)})") from None
    with zf:
        try:
            names = zf.namelist()
            if "__config__.npy" not in names:
                raise KeyError("__config__")
            conf = _Member(zf, "__config__.npy")
        except KeyError:
            raise ValueError(f"ViT: {where} holds no __config__ entry; it was not written by `jactensor vit --save`") \
                from None
        except _UNREADABLE as e:
            raise ValueError(f"{not_ours}, or it is damaged ({_short(str(e), 120)})") from None
        if conf.shape != () or conf.dtype.kind != "U" or conf.dtype.itemsize > 4 * MAX_CONFIG_CHARS:
            raise ValueError(f"ViT: the __config__ entry of {where} is not a short text ({conf.dtype}, shape "
                             f"{_short(conf.shape)}); the file was not written by `jactensor vit --save`")
        try:
            stored = json.loads(str(conf.read()))
            if not isinstance(stored, dict):
                raise ValueError(f"a JSON {type(stored).__name__}, not an object")
            unknown = sorted(set(stored) - {f.name for f in fields(ViTConfig)})
            if unknown:
                raise ValueError(f"unknown settings {_names(unknown)}")
            saved = ViTConfig(**stored)
        except _UNREADABLE as e:
            raise ValueError(f"ViT: the configuration stored in {where} is malformed ({_short(str(e), 120)})") \
                from None
        try:
            expected = param_shapes(saved)
        except ValueError as e:
            raise ValueError(f"ViT: the configuration stored in {where} is refused: {e}") from None
        if cfg is not None and cfg != saved:
            raise ValueError(f"ViT: {where} was saved with {saved}, which differs from the requested {cfg}")
        arrays = {n[:-4] if n.endswith(".npy") else n: n for n in names if n != "__config__.npy"}
        _check_params(dict.fromkeys(arrays), dict.fromkeys(expected), f"the entries of {where}")
        try:
            members = {k: _Member(zf, arrays[k]) for k in expected}
        except _UNREADABLE as e:
            raise ValueError(f"ViT: {where} is damaged: an array header cannot be read ({_short(str(e), 120)}); "
                             f"save the parameters again") from None
        _check_params({k: m.shape for k, m in members.items()}, expected, f"the arrays in {where}")
        odd = [f"{k} ({m.dtype})" for k, m in members.items() if m.dtype.kind != "f"]
        if odd:
            raise ValueError(f"ViT: {where} holds arrays that are not floating point {_names(odd)}; parameter files "
                             f"hold float arrays only (pickled objects are never loaded)")
        params = {}
        for k in expected:
            try:
                params[k] = np.asarray(members[k].read(), dtype=np.float64)
            except _UNREADABLE as e:
                raise ValueError(f"ViT: {where} is damaged: reading {k!r} failed ({_short(str(e), 120)}); "
                                 f"save the parameters again") from None
    bad = [k for k, v in params.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ValueError(f"ViT: {where} holds NaN or Inf in {_names(bad)}; these parameters cannot be used "
                         f"(did training diverge?)")
    return params, saved


def check_shapes(params, images, cfg):
    """Stage shapes for a batch: tokens (B, T+1, D), each block (B, T+1, D), cls (B, D), logits (B, classes)."""
    stages = {}
    forward(params, images, cfg, stages)
    return {k: np.shape(v) for k, v in stages.items()}


def validate_images(images):
    if np.ndim(images) != 3 or np.shape(images)[1] != np.shape(images)[2]:
        raise ShapeError(f"ViT: images must have shape (batch, S, S); got {np.shape(images)}")
