"""Cross-checks against PyTorch and JAX (the `peers` extra); skipped cleanly when they are not installed."""
import numpy as np
import pytest

import jactensor as jt

TOL = dict(rtol=1e-10, atol=1e-10)


def attention(X, Wq, Wk, Wv, np_=jt):
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    return np_.softmax(Q @ K.T / np.sqrt(Q.shape[-1]), axis=-1) @ V


def ln_block(X, W, g, b):
    """A pre-LayerNorm residual block: X + gelu(layer_norm(X) W)."""
    return X + jt.gelu(jt.layer_norm(X, g, b) @ W, approximate=False)


def mlp(X, W1, b1, W2, b2):
    return jt.tanh(X @ W1 + b1) @ W2 + b2


@pytest.fixture
def problems(rng):
    n, d, h = 5, 4, 6
    return {
        "attention": (attention, [rng.normal(size=s) for s in [(n, d), (d, d), (d, d), (d, d)]]),
        "ln_block": (ln_block, [rng.normal(size=s) for s in [(n, d), (d, d), (d,), (d,)]]),
        "mlp": (mlp, [rng.normal(size=s) for s in [(n, d), (d, h), (h,), (h, 3), (3,)]]),
    }


def _torch_fn(name, torch):
    F = torch.nn.functional

    def attn(X, Wq, Wk, Wv):
        Q, K, V = X @ Wq, X @ Wk, X @ Wv
        return torch.softmax(Q @ K.T / np.sqrt(Q.shape[-1]), dim=-1) @ V

    def ln(X, W, g, b):
        return X + F.gelu(F.layer_norm(X, (X.shape[-1],), g, b, eps=1e-5) @ W)

    def mlp_t(X, W1, b1, W2, b2):
        return torch.tanh(X @ W1 + b1) @ W2 + b2
    return {"attention": attn, "ln_block": ln, "mlp": mlp_t}[name]


def _jax_fn(name, jax):
    jnp = jax.numpy

    def attn(X, Wq, Wk, Wv):
        Q, K, V = X @ Wq, X @ Wk, X @ Wv
        return jax.nn.softmax(Q @ K.T / np.sqrt(Q.shape[-1]), axis=-1) @ V

    def ln(X, W, g, b):
        mu = X.mean(-1, keepdims=True)
        var = ((X - mu) ** 2).mean(-1, keepdims=True)
        return X + jax.nn.gelu(((X - mu) / jnp.sqrt(var + 1e-5) * g + b) @ W, approximate=False)

    def mlp_j(X, W1, b1, W2, b2):
        return jnp.tanh(X @ W1 + b1) @ W2 + b2
    return {"attention": attn, "ln_block": ln, "mlp": mlp_j}[name]


@pytest.mark.parametrize("name", ["attention", "ln_block", "mlp"])
def test_against_torch(name, problems):
    torch = pytest.importorskip("torch")
    from torch.func import jacrev
    f, args = problems[name]
    tf = _torch_fn(name, torch)
    targs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in args]
    argnums = tuple(range(len(args)))
    ours = jt.jacobian(f, argnums=argnums)(*args)
    theirs = jacrev(tf, argnums=argnums)(*[t.detach() for t in targs])
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.numpy(), **TOL)
    np.testing.assert_allclose(f(*args), tf(*targs).detach().numpy(), **TOL)
    (tf(*targs) ** 2).sum().backward()
    grads = jt.grad(lambda *a: jt.sum(f(*a) ** 2), argnums=argnums)(*args)
    for g, t in zip(grads, targs):
        np.testing.assert_allclose(g, t.grad.numpy(), **TOL)


@pytest.mark.parametrize("name", ["attention", "ln_block", "mlp"])
def test_against_jax(name, problems):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    f, args = problems[name]
    jf = _jax_fn(name, jax)
    argnums = tuple(range(len(args)))
    ours = jt.jacobian(f, argnums=argnums)(*args)
    theirs = jax.jacrev(jf, argnums=argnums)(*args)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, np.asarray(b), **TOL)
    loss = lambda *a: jt.sum(f(*a) ** 2)  # noqa: E731
    jloss = lambda *a: (jf(*a) ** 2).sum()  # noqa: E731
    for g, t in zip(jt.grad(loss, argnums=argnums)(*args), jax.grad(jloss, argnums=argnums)(*args)):
        np.testing.assert_allclose(g, np.asarray(t), **TOL)
    # hessian w.r.t. the first weight matrix
    H = jt.hessian(loss, argnums=1)(*args)
    Hj = jax.hessian(jloss, argnums=1)(*args)
    np.testing.assert_allclose(H, np.asarray(Hj), rtol=1e-9, atol=1e-9)
