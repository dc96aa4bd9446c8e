"""The vision transformer: stage shapes, gradient check, a short training run, save/load, bad configs."""
import dataclasses
import json
import re

import numpy as np
import pytest

import jactensor as jt
from jactensor.cli import main
from jactensor.models.train import gradient_check, load_digits_split, shift_augment, train
from jactensor.models.vit import (ViTConfig, accuracy, check_shapes, count_params, init_params, load_params,
                                  loss_fn, param_shapes, patchify, save_params)


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


def test_split_is_fixed_and_stratified(data):
    Xtr, Xte, ytr, yte = data
    assert Xtr.shape == (1437, 8, 8) and Xte.shape == (360, 8, 8)
    assert np.array_equal(load_digits_split()[3], yte)
    counts = np.bincount(yte, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_stage_shapes(data):
    cfg = ViTConfig(patch=2, width=16, depth=2, heads=4)
    p = init_params(cfg, 0)
    shapes = check_shapes(p, data[0][:5], cfg)
    assert shapes == {"tokens": (5, 17, 16), "block0": (5, 17, 16), "block1": (5, 17, 16), "cls": (5, 16),
                      "logits": (5, 10)}
    patches = patchify(data[0][:2], 4)
    assert patches.shape == (2, 4, 16)
    np.testing.assert_array_equal(patches[0, 1], data[0][0][:4, 4:].reshape(-1))  # row-major patch order


def test_init_is_seeded_and_documented_counts():
    a, b = init_params(ViTConfig(), 3), init_params(ViTConfig(), 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["embed.W"], init_params(ViTConfig(), 4)["embed.W"])
    P, D, H, T, C = 16, 48, 96, 4, 10  # patch pixels, width, MLP hidden, patches, classes (the defaults)
    block = 4 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * H + H) + (H * D + D)
    expected = (P * D + D) + D + (T + 1) * D + 2 * block + 2 * D + (D * C + C)
    assert count_params(a) == expected


def test_tiny_gradient_check_passes(capsys):
    assert gradient_check(with_torch=True)
    out = capsys.readouterr().out
    assert "max relative error" in out and "MISMATCH" not in out


def test_gradient_check_fails_on_a_wrong_gradient(monkeypatch, capsys):
    import jactensor.models.train as tr
    real = tr.grad
    monkeypatch.setattr(tr, "grad", lambda f: lambda p: {k: v * 1.01 for k, v in real(f)(p).items()})
    assert not gradient_check(with_torch=False)
    assert "MISMATCH" in capsys.readouterr().out


def test_short_training_run_learns(data):
    cfg = ViTConfig(patch=4, width=16, depth=1, heads=2)
    p0 = init_params(cfg, 0)
    loss0 = float(loss_fn(p0, data[0][:256], data[2][:256], cfg))
    params, hist = train(cfg, epochs=3, data=data, progress=False)
    assert hist["loss"][-1] < hist["loss"][0] < loss0
    assert hist["test_acc"][-1] > 0.6  # chance is 0.1


def test_compiled_and_uncompiled_training_give_the_same_model(data):
    cfg = ViTConfig(patch=4, width=16, depth=1, heads=2)
    small = (data[0][:200], data[1][:50], data[2][:200], data[3][:50])  # 4 batches: three of 64, one of 8
    pc, hc = train(cfg, epochs=2, data=small, progress=False, weight_decay=0.1)
    pu, hu = train(cfg, epochs=2, data=small, progress=False, weight_decay=0.1, compiled=False)
    for k in pc:
        np.testing.assert_allclose(pc[k], pu[k], rtol=1e-9, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(hc["loss"], hu["loss"], rtol=1e-12)
    assert hc["test_acc"] == hu["test_acc"]


def test_save_load_round_trip(tmp_path, data):
    cfg = ViTConfig(patch=4, width=8, depth=1, heads=2)
    p = init_params(cfg, 1)
    path = tmp_path / "vit.npz"
    save_params(path, p, cfg)
    q, cfg2 = load_params(path)
    assert cfg2 == cfg and set(q) == set(p) and all(np.array_equal(p[k], q[k]) for k in p)
    assert accuracy(p, data[1], data[3], cfg) == accuracy(q, data[1], data[3], cfg2)


def test_bad_configurations_and_files(tmp_path):
    with pytest.raises(ValueError, match="width 30 is not divisible by heads 4"):
        init_params(ViTConfig(width=30, heads=4))
    with pytest.raises(ValueError, match=r"patch size 3 does not divide the 8x8 image; choose one of \[1, 2, 4, 8\]"):
        init_params(ViTConfig(patch=3))
    for bad, msg in [(dict(width=0), "width must be between 1"), (dict(heads=0), "heads must be between 1"),
                     (dict(depth=100000), "depth must be between 0 and 1,000"), (dict(width=2.5), "whole number"),
                     (dict(width=True), "whole number"), (dict(width=10**6), "above the memory limit")]:
        with pytest.raises(ValueError, match=msg):
            ViTConfig(**bad).validate()
    with pytest.raises(FileNotFoundError, match="no parameter file"):
        load_params(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a numpy file")
    with pytest.raises(ValueError, match="not a parameter file"):
        load_params(bad)
    np.savez(tmp_path / "noconf.npz", a=np.ones(2))
    with pytest.raises(ValueError, match="no __config__"):
        load_params(tmp_path / "noconf.npz")
    cfg = ViTConfig(patch=4, width=8, depth=1, heads=2)
    p = init_params(cfg)
    p["head.W"] = np.ones((3, 3))
    with pytest.raises(ValueError, match=r"save_params.*wrong shapes \[head.W \(3, 3\) \(expected \(8, 10\)\)\]"):
        save_params(tmp_path / "wrong.npz", p, cfg)  # never writes a file that could not be loaded
    assert not (tmp_path / "wrong.npz").exists()
    _savez(tmp_path / "wrong.npz", cfg, p)
    with pytest.raises(ValueError, match=r"wrong shapes \[head.W"):
        load_params(tmp_path / "wrong.npz")
    with pytest.raises(ValueError, match="differs from the requested"):
        save_params(tmp_path / "ok.npz", init_params(cfg), cfg)
        load_params(tmp_path / "ok.npz", ViTConfig())


def test_param_shapes_are_the_arithmetic_of_init_params():
    for cfg in [ViTConfig(), ViTConfig(patch=2, width=12, depth=3, heads=3, mlp_ratio=3, classes=7),
                ViTConfig(patch=8, width=4, depth=0, heads=1, mlp_ratio=1)]:
        p = init_params(cfg, 0)
        assert {k: v.shape for k, v in p.items()} == param_shapes(cfg)
        assert list(p) == list(param_shapes(cfg)) and count_params(p) == cfg.n_params


def _savez(path, cfg, params, config=None):
    """A parameter file written directly with np.savez (to build files save_params refuses to write)."""
    conf = json.dumps(dataclasses.asdict(cfg)) if config is None else config
    np.savez(path, __config__=np.array(conf), **params)


def _small_file(tmp_path, name="p.npz", compressed=False):
    cfg = ViTConfig(patch=4, width=8, depth=1, heads=2)
    p = init_params(cfg, 2)
    path = tmp_path / name
    (np.savez_compressed if compressed else np.savez)(path, __config__=np.array(json.dumps(dataclasses.asdict(cfg))),
                                                      **p)
    return path, cfg, p


@pytest.mark.parametrize("stored, msg", [
    (dict(width=4096, heads=4), "wrong shapes"),          # arrays of width 8 under a width-4096 config
    (dict(width=10 ** 6, heads=4), "above the memory limit"),
    (dict(depth=100000), "depth must be between 0 and 1,000"),
    (dict(width="wide"), "whole number"),
    (dict(colour=3), "unknown settings"),
])
def test_load_refuses_a_stored_config_before_allocating(tmp_path, stored, msg):
    import time
    import tracemalloc
    cfg = ViTConfig(patch=4, width=8, depth=1, heads=2)
    conf = {**dataclasses.asdict(cfg), **stored}
    path = tmp_path / "big.npz"
    _savez(path, cfg, init_params(cfg), config=json.dumps(conf))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=msg) as e:
            load_params(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0 and peak < 5 * 2**20  # refused from the header, not after allocating
    assert len(str(e.value)) < 600 and "\n" not in str(e.value)


def test_load_refuses_array_headers_out_of_proportion(tmp_path):
    """An array whose header claims a huge shape (the data need not even be there) is refused unread."""
    import zipfile
    path, cfg, p = _small_file(tmp_path)
    header = {"descr": "<f8", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)}
    with zipfile.ZipFile(path, "a") as zf:
        with zf.open("head.b.npy.tmp", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
    # rename inside the archive: rebuild it with the fake member in place of head.b
    members = {}
    with zipfile.ZipFile(path) as zf:
        for n in zf.namelist():
            members[n] = zf.read(n)
    members["head.b.npy"] = members.pop("head.b.npy.tmp")
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(ValueError, match=r"wrong shapes \[head.b \(1000000, 1000000\)"):
        load_params(path)


def test_load_refuses_pickles_and_other_arrays(tmp_path):
    cfg = ViTConfig(patch=4, width=8, depth=1, heads=2)
    p = init_params(cfg)
    p["head.b"] = np.array([object()] * 10, dtype=object)
    _savez(tmp_path / "pickled.npz", cfg, p)
    with pytest.raises(ValueError, match=r"not floating point \[head.b \(object\)\].*never loaded"):
        load_params(tmp_path / "pickled.npz")
    np.save(tmp_path / "plain.npy", np.ones(3))
    with pytest.raises(ValueError, match="not a parameter file"):
        load_params(tmp_path / "plain.npy")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="not a parameter file"):
        load_params(tmp_path / "empty.npz")
    with pytest.raises(ValueError, match="not a parameter file"):
        load_params(tmp_path)
    p = init_params(cfg)
    p["head.W"] = p["head.W"] * np.nan
    _savez(tmp_path / "nan.npz", cfg, p)
    with pytest.raises(ValueError, match=r"NaN or Inf in \[head.W\]"):
        load_params(tmp_path / "nan.npz")


@pytest.mark.parametrize("compressed", [False, True])
def test_damaged_files_end_in_one_clear_error(tmp_path, compressed):
    """Truncate the file at many lengths and flip bytes at many offsets: every outcome is either the
    original parameters (a flip in bytes nothing reads) or a one-line ValueError naming the file."""
    path, cfg, p = _small_file(tmp_path, compressed=compressed)
    data = path.read_bytes()
    bad = tmp_path / "damaged.npz"
    cases = [data[:n] for n in np.linspace(1, len(data) - 1, 25).astype(int)]
    for k, off in enumerate(np.linspace(0, len(data) - 1, 40).astype(int)):
        b = bytearray(data)
        b[off] ^= 0xFF if k % 2 else 0x01
        cases.append(bytes(b))
    refused = 0
    for case in cases:
        bad.write_bytes(case)
        try:
            q, c2 = load_params(bad)
        except ValueError as e:
            refused += 1
            assert "ViT:" in str(e) and "damaged.npz" in str(e) and "\n" not in str(e), str(e)
            continue
        assert c2 == cfg and all(np.array_equal(q[k], p[k]) for k in p)
    assert refused >= len(cases) // 2


def test_save_is_atomic_and_uses_the_path_as_given(tmp_path, monkeypatch):
    cfg = ViTConfig(patch=4, width=8, depth=1, heads=2)
    p = init_params(cfg, 1)
    save_params(tmp_path / "noext", p, cfg)
    assert [x.name for x in tmp_path.iterdir()] == ["noext"]
    q, _ = load_params(tmp_path / "noext")
    assert all(np.array_equal(p[k], q[k]) for k in p)
    good = (tmp_path / "noext").read_bytes()
    import jactensor.models.vit as vit

    def interrupted(f, **arrays):  # a Ctrl-C halfway through writing
        f.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt
    monkeypatch.setattr(vit.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_params(tmp_path / "noext", init_params(cfg, 2), cfg)
    assert (tmp_path / "noext").read_bytes() == good and [x.name for x in tmp_path.iterdir()] == ["noext"]


def test_cli_vit_prints_one_accuracy_line(tmp_path, capsys):
    path = str(tmp_path / "params")  # no extension: used exactly as given
    assert main(["vit", "--epochs", "1", "--width", "8", "--depth", "1", "--heads", "2", "--no-progress",
                 "--save", path]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"test accuracy: 0\.\d{4}", out[-1])
    assert sum(line.startswith("test accuracy") for line in out) == 1
    assert f"parameters saved to {path}" in out and [p.name for p in tmp_path.iterdir()] == ["params"]
    assert main(["vit", "--load", path, "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == out[-1]
    assert main(["vit", "--width", "30", "--heads", "4"]) == 2
    assert "not divisible" in capsys.readouterr().err
    assert main(["vit", "--load", str(tmp_path / "nope.npz")]) == 2
    assert "no file at" in capsys.readouterr().err
    assert main(["vit", "--load", path, "--width", "16"]) == 2
    assert "drop the size options" in capsys.readouterr().err


def test_training_stops_when_the_loss_diverges(data):
    cfg = ViTConfig(patch=4, width=8, depth=1, heads=2)
    with pytest.raises(ValueError, match="diverged: the loss is nan"), np.errstate(all="ignore"):
        train(cfg, epochs=1, lr=1e300, data=data, progress=False)
    for bad, msg in [(dict(batch_size=0), "batch_size"), (dict(lr=float("nan")), "learning rate"),
                     (dict(epochs=-1), "epochs"), (dict(weight_decay=-1.0), "weight_decay")]:
        with pytest.raises(ValueError, match=msg):
            train(cfg, data=data, progress=False, **{"epochs": 1, **bad})


# ---- the model explained stage by stage ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def explained():
    from jactensor.models.vit_explain import explain_vit
    return explain_vit()


def test_explain_vit_stage_shapes_follow_the_models_arithmetic(explained):
    from jactensor.models.vit_explain import TINY, stage_shapes
    cfg, B = TINY, 2
    assert (cfg.width, cfg.depth, cfg.heads) == (8, 1, 2) and explained.n_images == B
    N, D, H = (8 // cfg.patch) ** 2 + 1, cfg.width, cfg.heads   # tokens: the patches plus CLS
    expected = [("patch embedding", (B, 8, 8), (B, N, D)), ("block 0: LayerNorm", (B, N, D), (B, N, D)),
                ("block 0: attention scores", (B, N, D), (B, H, N, N)),
                ("block 0: softmax", (B, H, N, N), (B, H, N, N)),
                ("block 0: attention output", (B, H, N, N), (B, N, D)), ("block 0: LayerNorm", (B, N, D), (B, N, D)),
                ("block 0: MLP", (B, N, D), (B, N, D)), ("final LayerNorm (CLS token)", (B, N, D), (B, D)),
                ("head", (B, D), (B, 10)), ("loss (cross-entropy)", (B, 10), ())]
    got = [(r["stage"], r["in_shape"], r["out_shape"]) for r in explained.rows]
    assert got == expected == stage_shapes(cfg, B)
    for r in explained.rows:
        assert r["jacobian_shape"] == r["out_shape"] + r["in_shape"]
        assert r["dense_bytes"] == 8 * int(np.prod(r["out_shape"] + r["in_shape"]))
        assert 0 < r["structured_bytes"] < r["dense_bytes"] or r["stage"].startswith("loss")
    assert stage_shapes(ViTConfig(), 64)[3] == ("block 0: softmax", (64, 4, 5, 5), (64, 4, 5, 5))
    assert stage_shapes(ViTConfig(patch=2), 64)[3] == ("block 0: softmax", (64, 4, 17, 17), (64, 4, 17, 17))


def test_explain_vit_stages_compose_to_the_models_loss(data):
    from jactensor.models.vit import loss_fn
    from jactensor.models.vit_explain import stages
    cfg = ViTConfig(patch=2, width=8, depth=2, heads=2)
    p = init_params(cfg, 3)
    X, y = data[0][:3], data[2][:3]
    v = X
    for _, f, x in stages(p, X, y, cfg):
        np.testing.assert_array_equal(x, v)  # each stage starts from the previous stage's output
        v = f(x)
    np.testing.assert_allclose(v, loss_fn(p, X, y, cfg), rtol=1e-14)


def test_explain_vit_zero_fractions_from_the_structure(explained):
    """Zero fractions that follow from which entries can depend on which (batch, heads, tokens, patches)."""
    z = {r["stage"]: r["zero_fraction"] for r in explained.rows}
    B, H, N, T, P = 2, 2, 5, 4, 16
    assert z["block 0: softmax"] == pytest.approx(1 - 1 / (B * H * N))       # delta on batch, head and row
    assert z["block 0: LayerNorm"] == pytest.approx(1 - 1 / (B * N))         # delta on batch and token
    assert z["head"] == pytest.approx(1 - 1 / B)
    assert z["loss (cross-entropy)"] == 0
    # a patch token depends on its own 16 of the 64 pixels, the CLS token on none
    assert z["patch embedding"] == pytest.approx(1 - (T / N) * (P / 64) / B)
    # scores[b,h,i,j] depend on tokens i and j of h (one token when i == j)
    assert z["block 0: attention scores"] == pytest.approx(1 - (N + 2 * N * (N - 1)) / (N * N) / N / B)


def test_explain_vit_vjp_bytes_and_totals(explained):
    import jactensor as jt
    rows = {r["stage"]: r for r in explained.rows}
    # the loss stage: cotangents for the (2, 10) logits and the scalar loss
    assert rows["loss (cross-entropy)"]["vjp_bytes"] == 8 * (20 + 1)
    # the softmax stage: its input and its output
    assert rows["block 0: softmax"]["vjp_bytes"] == 8 * 2 * (2 * 2 * 5 * 5)
    # structured bytes of the softmax stage: what the softmax primitive's Jacobian rule stores
    s = np.random.default_rng(0).normal(size=(2, 2, 5, 5))
    (J,) = jt.softmax.jacobian(s, axis=-1)
    assert rows["block 0: softmax"]["structured_bytes"] == J.stored_bytes
    t = explained.totals
    assert t["dense_bytes"] == sum(r["dense_bytes"] for r in explained.rows)
    from jactensor.models.vit_explain import stage_shapes
    dense_default = sum(8 * int(np.prod(o + i)) for _, i, o in stage_shapes(ViTConfig(), 64))
    assert explained.default_totals["dense_bytes"] == dense_default > 2 ** 33  # over 8 GiB: never allocated
    assert explained.default_totals["vjp_bytes"] < 2 ** 25
    text = str(explained)
    assert "block 0: softmax" in text and "(2, 2, 5, 5, 2, 2, 5, 5)" in text and "95.0%" in text
    assert "training batch of 64 images" in text


def test_cli_explain_program_vit(tmp_path, capsys):
    png = tmp_path / "bytes.png"
    assert main(["explain", "--program", "vit", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "attention scores" in out and "Default configuration" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["explain", "--program", "vit", "--wrt", "0"]) == 2
    assert "--wrt does not apply" in capsys.readouterr().err


def test_augmentation_shifts_by_at_most_one_pixel(rng):
    x = np.zeros((50, 8, 8))
    x[:, 4, 4] = 1
    y = shift_augment(x, rng, prob=1.0)
    pos = np.argwhere(y == 1)
    assert len(pos) == 50 and np.all(np.abs(pos[:, 1:] - 4) <= 1)


def test_vit_loss_is_differentiable_with_all_three_jacobian_methods(data):
    cfg = ViTConfig(patch=4, width=4, depth=1, heads=2, mlp_ratio=1)
    p = init_params(cfg, 0)
    X, y = data[0][:2], data[2][:2]
    f = lambda W: loss_fn({**p, "head.W": W}, X, y, cfg)  # noqa: E731
    a = jt.jacobian(f, method="chain")(p["head.W"])
    b = jt.jacobian(f, method="fwd")(p["head.W"])
    np.testing.assert_allclose(a, b, atol=1e-14)
