"""Benchmark functions at tiny sizes: every method agrees (checked inside), outputs are written."""
import json
import os
import re
import sys

import numpy as np
import pytest

from jactensor.bench import check_targets, suites
from jactensor.bench import problems as P
from jactensor.cli import main


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One real smoke run with the default output folder, in a fresh current directory."""
    import contextlib
    import io
    import os
    cwd = tmp_path_factory.mktemp("bench-cwd")
    old = os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["bench", "--smoke"])  # with the progress bar
    finally:
        os.chdir(old)
    return code, cwd, out.getvalue(), err.getvalue()


def test_bench_smoke_writes_json_table_and_plots(smoke):
    code, cwd, out, err = smoke
    assert code == 0
    folders = [p for p in cwd.iterdir()]
    assert len(folders) == 1 and re.fullmatch(r"jactensor-bench-smoke-\d{8}-\d{6}", folders[0].name)
    folder = folders[0]
    assert f"results written to {folder}" in out
    res = json.loads((folder / "results.json").read_text())
    assert {"meta", "full_vs_vjp", "order", "peers", "targets"} <= set(res)
    assert all(r["status"] == "ok" or r["status"].startswith(("refused", "skipped"))
               for r in res["full_vs_vjp"]["records"] + res["peers"]["records"])
    methods = {r["method"] for r in res["peers"]["records"]}
    assert {"jactensor grad (VJP path)", "numpy hand-written reverse pass",
            "jactensor jacobian(method='chain')"} <= methods
    md = (folder / "results.md").read_text()
    assert "## Targets" in md and "## Contraction order" in md
    for png in ("full_vs_vjp_time.png", "full_vs_vjp_memory.png", "order.png", "peers.png"):
        assert (folder / png).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["results.json", "results.md", "full_vs_vjp_time.png", "full_vs_vjp_memory.png", "order.png", "peers.png"])
    assert "sched_setaffinity" in res["meta"]["pinning"]
    if hasattr(os, "sched_getaffinity"):  # measured in a process that started pinned, not pinned afterwards
        assert res["meta"]["pinning"].startswith("the measuring process was started with its CPU affinity set")
    assert {"long_chain", "jit", "hessians", "per_example", "ntk"} <= set(res)
    assert "## Structured Hessians" in md and "## Compiled programs" in md and "## Long programs" in md
    for r in res["hessians"]["records"]:  # every method's Hessian was checked against the closed form
        assert r["status"] == "ok", r
    vit = res["vit"]  # the ViT step, compiled and not (scikit-learn is in the test extra); no epochs in smoke
    assert vit["status"] == "ok" and "epochs" not in vit
    assert [s["method"] for s in vit["steps"]][:2] == ["jactensor value_and_grad (uncompiled)",
                                                       "jactensor jit(value_and_grad)"]
    assert all(s["seconds"] > 0 for s in vit["steps"]) and "## The ViT on the digits" in md


def test_smoke_run_reports_no_target_its_sizes_do_not_define(smoke):
    code, cwd, out, err = smoke
    res = json.loads(next(cwd.iterdir()).joinpath("results.json").read_text())
    assert "target missed" not in err
    assert [t["target"] for t in res["targets"]] == [
        "chain() planned FLOPs never above the cheaper of forward and reverse"]  # holds at any size


@pytest.fixture
def canned(smoke, monkeypatch):
    """The measuring process replaced by the smoke run's results, so output handling is tested in a fraction
    of a second; the list records each measurement started."""
    from jactensor import bench
    _, cwd, _, _ = smoke
    res = json.loads(next(cwd.iterdir()).joinpath("results.json").read_text())
    calls = []

    def fake(*a, **k):
        calls.append("measure")
        return res
    monkeypatch.setattr(bench, "measure_pinned", fake)
    return calls


FILES = {"results.json", "results.md", "full_vs_vjp_time.png", "full_vs_vjp_memory.png", "order.png", "peers.png"}


def test_bench_out_new_nested_or_existing_empty_folder(canned, tmp_path, capsys):
    assert main(["bench", "--smoke", "--no-progress", "--out", str(tmp_path / "a" / "b")]) == 0
    assert {p.name for p in (tmp_path / "a" / "b").iterdir()} == FILES
    (tmp_path / "empty").mkdir()
    assert main(["bench", "--smoke", "--no-progress", "--out", str(tmp_path / "empty")]) == 0
    assert {p.name for p in (tmp_path / "empty").iterdir()} == FILES
    assert f"results written to {tmp_path / 'empty'}" in capsys.readouterr().out


def test_bench_refuses_a_folder_with_files_before_any_work(canned, tmp_path, capsys):
    held = tmp_path / "results"
    held.mkdir()
    (held / "results.json").write_text("the committed full run")
    assert main(["bench", "--smoke", "--no-progress", "--out", str(held)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds files (results.json)" in err and "--overwrite" in err
    assert canned == [] and (held / "results.json").read_text() == "the committed full run"
    assert main(["bench", "--smoke", "--no-progress", "--out", str(held), "--overwrite"]) == 0
    assert json.loads((held / "results.json").read_text())["meta"]["mode"] == "smoke"
    (tmp_path / "file").write_text("x")
    assert main(["bench", "--smoke", "--out", str(tmp_path / "file")]) == 2
    assert "is an existing file" in capsys.readouterr().err and canned == ["measure"]


def test_bench_interrupted_leaves_nothing(canned, tmp_path, monkeypatch, capsys):
    from jactensor import bench

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(bench, "measure_pinned", interrupted)
    assert main(["bench", "--smoke", "--no-progress", "--out", str(tmp_path / "new" / "deeper")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted; removed the unfinished results folder" in err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "old.md").write_text("old")
    assert main(["bench", "--smoke", "--no-progress", "--out", str(tmp_path / "kept"), "--overwrite"]) == 130
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["old.md"]
    assert "no results were written" in capsys.readouterr().err


def test_bench_files_are_all_written_or_none(tmp_path, monkeypatch):
    from jactensor import bench
    (tmp_path / "results.md").write_text("old")
    real = os.replace

    def failing(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(bench.os, "replace", failing)
    with pytest.raises(OSError):
        bench._write_all(str(tmp_path), {"results.json": b"{}", "results.md": b"new"})
    monkeypatch.setattr(bench.os, "replace", real)
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"] and (tmp_path / "results.md").read_text() == "old"
    bench._write_all(str(tmp_path), {"results.json": b"{}", "results.md": b"new"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.md"]


def test_bench_without_matplotlib_says_the_plots_were_skipped(canned, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", "--smoke", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    assert "plots skipped: matplotlib is not installed (pip install 'jactensor[bench]')" in capsys.readouterr().err
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"results.json", "results.md"}


def test_memory_guard_stops_the_dense_route():
    out = suites.full_vs_vjp([3, 12], repeats=1, guard_bytes=100_000)
    dense12 = [r for r in out["records"] if r["n"] == 12 and r["route"].startswith("dense")]
    assert dense12 and all(r["status"].startswith("refused") for r in dense12)
    vjp12 = [r for r in out["records"] if r["n"] == 12 and r["route"].startswith("VJP")]
    assert all(r["status"] == "ok" for r in vjp12)


def test_contraction_order_plan_never_above_cheaper():
    for rec in suites.contraction_order(scale=0.1, repeats=1):
        assert rec["chosen_le_cheaper"], rec


def test_hand_written_references_match_jactensor():
    import jactensor as jt
    args = P.attention_args(5, 3)
    for a, b in zip(P.hand_attention_grad(*args), jt.grad(P.attention_loss, argnums=(0, 1, 2, 3))(*args)):
        np.testing.assert_allclose(a, b, atol=1e-12)
    w = P.worked_args(4, 2)
    for a, b in zip(P.hand_worked_grad(*w), jt.grad(P.worked_loss, argnums=(0, 1))(*w)):
        np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("lib", ["jax", "torch", "autograd"])
def test_peer_implementations_agree(lib):
    """Every method of the peer suite, the peer's included, passed the numbers check (each result against the
    reference within tolerance) before it was timed; a peer computing something else is caught, not timed."""
    pytest.importorskip(lib)
    out = suites.peers(sizes=((4, 2),), worked_sizes=((3, 2),), repeats=1)
    assert lib in out["libraries"]
    prefix = {"jax": "jax", "torch": "torch", "autograd": "hips"}[lib]
    theirs = [r for r in out["records"] if r["method"].lower().startswith(prefix)]
    assert {r["problem"] for r in theirs} == {r["problem"] for r in out["records"]}
    assert all(r["status"] == "ok" and r["seconds"] > 0 for r in out["records"]), out["records"]
    real = P.peer_impls

    def off_by_a_little(name):
        att, loss, wl = real(name)
        if name != lib:
            return att, loss, wl
        return (lambda *a: 1.001 * att(*a)), (lambda *a: 1.001 * loss(*a)), wl
    mp = pytest.MonkeyPatch()
    mp.setattr(P, "peer_impls", off_by_a_little)
    try:
        with pytest.raises(AssertionError, match="disagrees on attention"):
            suites.peers(sizes=((4, 2),), worked_sizes=(), repeats=1)
    finally:
        mp.undo()


def test_targets_report_missing_peers_as_not_measured():
    ours = [{"problem": "attention: gradient (X, Wq, Wk, Wv)", "n": 64, "d": 32, "method": "jactensor grad (VJP path)",
             "status": "ok", "seconds": 2e-4},
            {"problem": "attention: full Jacobian", "n": 32, "d": 16, "method": "jactensor jacobian(method='chain')",
             "status": "ok", "seconds": 5e-3}]
    full = {"chain": "hourglass", "sizes": [256, 256, 4, 256, 256], "dearer_over_chosen": 30.0,
            "flops": {"chosen": 1, "forward": 20, "reverse": 30}, "chosen_le_cheaper": True}
    t = check_targets({"peers": {"records": ours}, "order": [full]})
    assert [x["met"] for x in t if "torch" in x["target"]] == [None, None]  # measured ours, not the peer
    assert [x["met"] for x in t if "FLOPs" in x["target"]] == [True, True]
    # a run whose sizes do not include the targets' reports only the size-free one
    small = dict(full, sizes=[13, 13, 4, 13, 13], dearer_over_chosen=1.7)
    t = check_targets({"peers": {"records": []}, "order": [small]})
    assert [x["target"] for x in t] == ["chain() planned FLOPs never above the cheaper of forward and reverse"]


def test_ctrl_c_inside_a_garbage_collection_callback_is_not_lost(capsys):
    """jax's gc hook made Ctrl-C vanish ("Exception ignored ...") and the run write its results anyway."""
    import gc
    import signal
    import time
    from jactensor.bench import _CtrlC
    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)  # the handler runs inside this callback

    with pytest.raises(KeyboardInterrupt):
        with _CtrlC() as ctrl_c:
            gc.callbacks.append(callback)
            try:
                gc.collect()
                time.sleep(2.0)  # the interrupt is raised again here, in ordinary code
            finally:
                gc.callbacks.remove(callback)
    assert fired and ctrl_c.pressed and "Exception ignored" not in capsys.readouterr().err


def test_vit_targets_from_a_run():
    from jactensor.bench.vit_suite import STEP_METHODS, vit_targets
    steps = [{"method": m, "seconds": s} for m, s in zip(STEP_METHODS, (0.02, 0.01, 0.008))]
    ep = {"compiled": {"epochs": 40, "seconds_per_epoch": 0.3, "test_accuracy": 0.9861},
          "uncompiled": {"epochs": 40, "seconds_per_epoch": 0.6, "test_accuracy": 0.9833}}
    t = check_targets_for_vit(vit_targets({"status": "ok", "steps": steps, "epochs": ep}))
    assert [x["met"] for x in t] == [True, True, "reported"]
    assert t[0]["ratio"] == pytest.approx(0.5) and t[1]["ratio"] == pytest.approx(0.0028)
    assert t[2]["ratio"] == pytest.approx(1.25)
    slow = dict(ep, compiled=dict(ep["compiled"], seconds_per_epoch=0.5, test_accuracy=0.97))
    t = check_targets_for_vit(vit_targets({"status": "ok", "steps": steps[:2], "epochs": slow}))
    assert [x["met"] for x in t] == [False, False]  # 0.83 > 0.667; accuracy differs by 0.013; no torch row
    short = {k: dict(v, epochs=3) for k, v in ep.items()}  # a quick run: speed only, accuracy not comparable
    assert len(vit_targets({"status": "ok", "steps": steps[:2], "epochs": short})) == 1
    assert vit_targets({"status": "ok", "steps": steps}) == []  # smoke: no epochs, no targets
    assert vit_targets({"status": "not measured: no scikit-learn"}) == []


def check_targets_for_vit(targets):
    from jactensor.bench import _judge
    return [_judge(x) for x in targets]


def test_vit_suite_refuses_a_variant_with_other_numbers(monkeypatch):
    pytest.importorskip("sklearn")
    from jactensor.bench import vit_suite as V
    from jactensor.models import train as T
    real = T.load_digits_split

    def few():
        Xtr, Xte, ytr, yte = real()
        return Xtr[:64], Xte[:32], ytr[:64], yte[:32]
    monkeypatch.setattr(T, "load_digits_split", few)
    import jactensor.models.vit as vit
    real_loss = vit.loss_fn
    calls = []

    def uncompiled_drifts(params, images, labels, cfg):  # only the uncompiled variant sees the drift
        calls.append(1)
        return real_loss(params, images, labels, cfg) * (1.0 + 1e-6 * (len(calls) > 1))
    monkeypatch.setattr(vit, "loss_fn", uncompiled_drifts)
    with pytest.raises(AssertionError, match="disagrees"):
        V.vit_suite("smoke", repeats=1)
