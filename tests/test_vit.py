"""The vision transformer: stage shapes, gradient check, a short training run, save/load, bad configs."""
import re

import numpy as np
import pytest

import jactensor as jt
from jactensor.cli import main
from jactensor.models.train import gradient_check, load_digits_split, shift_augment, train
from jactensor.models.vit import (ViTConfig, accuracy, check_shapes, count_params, init_params, load_params,
                                  loss_fn, patchify, save_params)


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
    save_params(tmp_path / "wrong.npz", p, cfg)
    with pytest.raises(ValueError, match=r"wrong shapes \['head.W'\]"):
        load_params(tmp_path / "wrong.npz")
    with pytest.raises(ValueError, match="differs from the requested"):
        save_params(tmp_path / "ok.npz", init_params(cfg), cfg)
        load_params(tmp_path / "ok.npz", ViTConfig())


def test_cli_vit_prints_one_accuracy_line(tmp_path, capsys):
    path = str(tmp_path / "p.npz")
    assert main(["vit", "--epochs", "1", "--width", "8", "--depth", "1", "--heads", "2", "--no-progress",
                 "--save", path]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"test accuracy: 0\.\d{4}", out[-1])
    assert sum(line.startswith("test accuracy") for line in out) == 1
    assert main(["vit", "--load", path, "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == out[-1]
    assert main(["vit", "--width", "30", "--heads", "4"]) == 2
    assert "not divisible" in capsys.readouterr().err
    assert main(["vit", "--load", str(tmp_path / "nope.npz")]) == 2


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
