"""Training on CPU with the "test" preset (2 layers, d=64) on a small real store."""

import dataclasses
import json
import os
from contextlib import nullcontext

import jax
import numpy as np
import pytest

from codemix.cli import main
from codemix.core.errors import CodemixError
from codemix.proxy_train import train as train_mod
from codemix.proxy_train.schedule import LRShape, Schedule, Stage
from codemix.proxy_train.spec import TrainSettings
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.train import (
    Member,
    loss_impl_for,
    model_config_for,
    train_population,
)

S = TrainSettings(
    seq_len=32, batch_size=4, lr_peak=3e-3, eval_every=10, eval_tokens=256, log_every=5
)
THREE = Schedule(
    (
        Stage("init", {"text": 0.5, "code": 0.5}, tokens=1280, lr=LRShape("cosine", warmup=0.1)),
        Stage(
            "continual",
            {"text": 0.9, "code": 0.1},
            tokens=1280,
            lr=LRShape("constant", start="continue"),
        ),
        Stage(
            "cooldown",
            {"text": 0.8, "code": 0.2},
            tokens=512,
            lr=LRShape("linear", start="continue", end_lr=1e-6),
        ),
    )
)

SHORT = Schedule((Stage("only", {"text": 0.5, "code": 0.5}, tokens=640),))


def _cfg(store):
    return model_config_for({"size": "test", "dtype": "float32"}, store.vocab_size, S.seq_len)


def _run(store, tmp, members, settings=S, **kw):
    return train_population(
        store, _cfg(store), settings, members, tmp / "ckpt", progress=False, **kw
    )


def _losses(path):
    with open(path) as f:
        return [(r["step"], r["loss"], r["bpb"]) for r in map(json.loads, f)]


def test_three_stage_run_end_to_end(small_store, tmp_path):
    store = TokenStore(small_store)
    (s,) = _run(store, tmp_path, [Member("a", THREE, 0, tmp_path / "a")])
    assert s["status"] == "completed" and s["steps"] == 10 + 10 + 4
    assert (
        s["realised_mixture"]["continual"] == {"text": 0.9, "code": 0.1}
        or abs(s["realised_mixture"]["continual"]["code"] - 0.1) < 0.02
    )
    assert set(s["epochs"]) == {"text", "code"}
    assert s["flops"] == s["flops_per_token"] * s["tokens"]
    recs = [json.loads(x) for x in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["step"] for r in recs] == [10, 20, 24]  # every 10 steps and at stage ends
    assert [r["stage"] for r in recs] == ["init", "continual", "cooldown"]
    assert recs[-1]["lr"] == pytest.approx(1e-6)
    assert recs[-1]["loss"]["text"] < recs[0]["loss"]["text"] < np.log(store.vocab_size)
    assert all(r["bpb"]["code"] > 0 for r in recs)
    assert s["final"]["loss"] == recs[-1]["loss"]


def test_resume_after_a_kill_mid_stage_is_exact(small_store, tmp_path, monkeypatch):
    store = TokenStore(small_store)
    _run(store, tmp_path / "full", [Member("a", THREE, 1, tmp_path / "full" / "a")])

    real = train_mod.learning_rate

    class Killed(BaseException):
        pass

    def dies_at_step_15(plans, step, peak):
        if step == 15:
            raise Killed
        return real(plans, step, peak)

    monkeypatch.setattr(train_mod, "learning_rate", dies_at_step_15)
    run = tmp_path / "killed"
    with pytest.raises(Killed):  # after the checkpoint at the end of stage 1 (step 10)
        _run(store, run, [Member("a", THREE, 1, run / "a")])
    monkeypatch.setattr(train_mod, "learning_rate", real)
    (s,) = _run(store, run, [Member("a", THREE, 1, run / "a")])
    assert s["status"] == "completed"
    assert _losses(run / "a" / "metrics.jsonl") == _losses(
        tmp_path / "full" / "a" / "metrics.jsonl"
    )


def test_nan_loss_fails_the_run_cleanly(small_store, tmp_path):
    import orbax.checkpoint as ocp

    store = TokenStore(small_store)
    wild = TrainSettings(**{**S.__dict__, "lr_peak": 1e30, "grad_clip": 1e30})
    (s,) = _run(store, tmp_path, [Member("a", THREE, 0, tmp_path / "a")], wild)
    assert s["status"] == "failed" and "loss became" in s["reason"]
    mngr = ocp.CheckpointManager((tmp_path / "ckpt").absolute())
    for step in mngr.all_steps():  # whatever was saved holds no NaN
        state = mngr.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )["state"]
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def test_population_member_equals_the_run_alone(small_store, tmp_path):
    store = TokenStore(small_store)
    other = Schedule(
        tuple(
            Stage(s.name, {"text": 0.3, "code": 0.7}, tokens=s.tokens, lr=s.lr)
            for s in THREE.stages
        )
    )
    pop = [
        Member("a", THREE, 3, tmp_path / "pop" / "a"),
        Member("b", other, 4, tmp_path / "pop" / "b"),
    ]
    _run(store, tmp_path / "pop", pop)
    _run(store, tmp_path / "alone", [Member("b", other, 4, tmp_path / "alone" / "b")])
    together = _losses(tmp_path / "pop" / "b" / "metrics.jsonl")
    alone = _losses(tmp_path / "alone" / "b" / "metrics.jsonl")
    for (s1, l1, _), (s2, l2, _) in zip(together, alone, strict=True):
        assert s1 == s2
        for d in l1:
            assert l1[d] == pytest.approx(l2[d], rel=1e-4)
    a = _losses(tmp_path / "pop" / "a" / "metrics.jsonl")
    assert a[-1][1] != together[-1][1]  # the members really differ


def test_optimizer_state_reset_between_stages(small_store, tmp_path):
    store = TokenStore(small_store)
    fresh = TrainSettings(**{**S.__dict__, "carry_optimizer_state": False})
    (s,) = _run(store, tmp_path, [Member("a", THREE, 0, tmp_path / "a")], fresh)
    (c,) = _run(store, tmp_path / "c", [Member("a", THREE, 0, tmp_path / "c" / "a")])
    assert s["status"] == "completed"
    assert s["final"]["loss"] != c["final"]["loss"]


SPEC = """
[data]
store = "{store}"
[model]
size = "test"
[train]
seq_len = 32
batch_size = 4
eval_tokens = 256
[[stages]]
name = "init"
tokens = 2560
mixture = {{ text = 0.75, code = 0.25 }}
"""


def test_cli_train(small_store, tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SPEC.format(store=small_store))
    argv = [
        "train",
        str(tmp_path / "s.toml"),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        "--max-tokens",
        "1280",
    ]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["tokens"] == 1280 and summary["status"] == "completed"
    assert "validation loss" in capsys.readouterr().out
    assert main(argv) == 0  # a finished run is not redone
    assert "already completed" in capsys.readouterr().out
    # the same folder with another spec is refused, nothing touched
    assert main(argv + ["--set", "train.seed=5"]) == 2
    assert "holds a run of another spec" in capsys.readouterr().err
    bad = main(
        [
            "train",
            str(tmp_path / "s.toml"),
            "--out",
            str(tmp_path / "r2"),
            "--set",
            "stages.init.mixture.web=0.1",
            "--quiet",
        ]
    )
    assert bad == 2
    assert "sum to 1.1" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


def test_a_nan_member_is_zeroed_and_the_others_finish(small_store, tmp_path):
    import orbax.checkpoint as ocp

    store = TokenStore(small_store)
    wild = Schedule(
        tuple(
            Stage(s.name, s.mixture, tokens=s.tokens, lr=LRShape("constant", start=1e30))
            for s in THREE.stages
        )
    )
    pop = [
        Member("a", THREE, 3, tmp_path / "pop" / "a"),
        Member("b", wild, 4, tmp_path / "pop" / "b"),
    ]
    a, b = _run(store, tmp_path / "pop", pop)
    assert a["status"] == "completed" and b["status"] == "failed"
    assert "loss became" in b["reason"]
    mngr = ocp.CheckpointManager((tmp_path / "pop" / "ckpt").absolute())
    assert mngr.all_steps()  # the live member kept checkpointing
    for step in mngr.all_steps():
        state = mngr.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )["state"]
        leaves = jax.tree.leaves(state)
        assert all(np.isfinite(x).all() for x in leaves)
        assert all((np.asarray(x)[1] == 0).all() for x in jax.tree.leaves(state["params"]))
    _run(store, tmp_path / "alone", [Member("a", THREE, 3, tmp_path / "alone" / "a")])
    together = _losses(tmp_path / "pop" / "a" / "metrics.jsonl")
    alone = _losses(tmp_path / "alone" / "a" / "metrics.jsonl")
    for (s1, l1, _), (s2, l2, _) in zip(together, alone, strict=True):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-4)


def test_a_failed_summary_write_keeps_the_old_file(small_store, tmp_path, monkeypatch):
    store = TokenStore(small_store)
    member = Member("a", SHORT, 0, tmp_path / "a")
    _run(store, tmp_path, [member])
    before = (tmp_path / "a" / "summary.json").read_text()

    real = os.replace

    def broken(src, dst):  # the rename of summary.json fails, after its contents were written
        if str(dst).endswith("summary.json"):
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        _run(store, tmp_path / "again", [Member("a", SHORT, 0, tmp_path / "a")])
    assert (tmp_path / "a" / "summary.json").read_text() == before
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")] == [".lock"]


def _cooldown(code: float) -> Schedule:
    last = THREE.stages[-1]
    return Schedule(
        (
            *THREE.stages[:2],
            Stage(last.name, {"text": 1 - code, "code": code}, tokens=512, lr=last.lr),
        )
    )


def test_a_branch_from_a_trunk_ends_as_the_run_from_scratch(small_store, tmp_path):
    store = TokenStore(small_store)
    scratch = [
        Member(f"c{k}", _cooldown(c), 5, tmp_path / "scratch" / f"c{k}")
        for k, c in enumerate((0.0, 0.3))
    ]
    for m in scratch:  # each alone, as each branch trains
        (s,) = _run(store, tmp_path / "scratch" / m.name, [m])
        assert s["flops_charged"] == s["flops"] and s["trunk"] is None
    trunk = tmp_path / "trunks" / "t"
    assert _run(store, tmp_path / "trunk", [Member("t", THREE, 5, trunk)], stop_step=20) == []
    info = json.loads((trunk / "trunk.json").read_text())
    assert info["status"] == "completed" and info["step"] == 20 and info["evals"] == 2
    for k, c in enumerate((0.0, 0.3)):
        out = tmp_path / "branch" / f"c{k}"
        (s,) = _run(store, out, [Member(f"c{k}", _cooldown(c), 5, out, trunk=trunk)])
        assert s["trunk"] == "t" and s["flops_charged"] == s["flops"] * 4 // 24
        assert _losses(out / "metrics.jsonl") == _losses(
            tmp_path / "scratch" / f"c{k}" / "metrics.jsonl"
        )
        assert (
            s["final"]
            == json.loads((tmp_path / "scratch" / f"c{k}" / "summary.json").read_text())["final"]
        )


def test_branches_train_as_a_population_from_their_trunks(small_store, tmp_path):
    store = TokenStore(small_store)
    trunks = [
        Member(f"t{k}", _cooldown(0.0), 6 + k, tmp_path / "trunks" / f"t{k}") for k in range(2)
    ]
    _run(store, tmp_path / "tp", trunks, stop_step=20)
    branches = [
        Member(f"b{k}", _cooldown(0.2), 6 + k, tmp_path / f"b{k}", trunk=t.out)
        for k, t in enumerate(trunks)
    ]
    got = _run(store, tmp_path / "bp", branches)
    alone = _run(store, tmp_path / "alone", [Member("x", _cooldown(0.2), 7, tmp_path / "x")])
    assert [s["steps"] for s in got] == [24, 24]
    for (s1, l1, _), (s2, l2, _) in zip(
        _losses(tmp_path / "b1" / "metrics.jsonl"),
        _losses(tmp_path / "x" / "metrics.jsonl"),
        strict=True,
    ):
        assert s1 == s2 and all(l1[d] == pytest.approx(l2[d], rel=1e-4) for d in l1)
    assert got[0]["final"] != got[1]["final"]  # seeds 6 and 7: the trunks differ
    assert alone[0]["flops_charged"] == 6 * got[0]["flops_charged"]


def test_branches_of_one_trunk_read_it_once_and_say_where_time_went(
    small_store, tmp_path, monkeypatch
):
    import orbax.checkpoint as ocp

    from codemix.proxy_train import trunks as trunks_mod

    store = TokenStore(small_store)
    trunk = Member("t", _cooldown(0.0), 6, tmp_path / "trunk")
    _run(store, tmp_path / "tp", [trunk], stop_step=20)
    timing = trunks_mod.read(trunk.out)["timing"]
    assert {"setup_s", "restore_s", "compile_s", "steps_s", "trunk_save_s", "wall_s"} <= set(timing)
    reads = []
    restore = ocp.StandardCheckpointer.restore
    monkeypatch.setattr(
        ocp.StandardCheckpointer,
        "restore",
        lambda self, path, *a, **k: reads.append(path) or restore(self, path, *a, **k),
    )
    branches = [
        Member(f"b{k}", _cooldown(share), 6, tmp_path / f"b{k}", trunk=trunk.out)
        for k, share in enumerate((0.2, 0.5))
    ]
    got = _run(store, tmp_path / "bp", branches)
    assert len(reads) == 1  # one trunk, two branches
    first = [_losses(tmp_path / f"b{k}" / "metrics.jsonl")[0] for k in range(2)]
    assert first[0] == first[1]  # both begin with the trunk's record
    assert got[0]["final"] != got[1]["final"]
    assert {"setup_s", "restore_s", "steps_s"} <= set(got[0]["timing"])


def test_prefetch_hands_on_blocks_in_order_and_raises_what_the_sampler_raised():
    class Steps:
        B, T = 1, 1

        def batches(self, first, n):
            if first >= 8:
                raise OSError("store gone")
            return np.arange(first, first + n).reshape(n, 1, 1)

    fetch = train_mod._Prefetch([Steps(), Steps()], 3, 12, block=2)
    assert [int(fetch.get()[1, 0, 0]) for _ in range(6)] == [3, 4, 5, 6, 7, 8]
    with pytest.raises(OSError, match="store gone"):
        fetch.get()
    stopped = train_mod._Prefetch([Steps()], 0, 8, block=1)  # a loop that ended early
    stopped.close()
    stopped.t.join(timeout=5)
    assert not stopped.t.is_alive()  # the thread does not wait forever on a full queue


def _wsd(decay: float) -> Schedule:
    lr = LRShape("wsd", warmup=0.1, decay=decay, end_lr=1e-6)
    return Schedule((Stage("main", {"text": 0.7, "code": 0.3}, tokens=2560, lr=lr),))


def test_a_trunk_inside_a_stable_phase_branches_into_a_later_decay(small_store, tmp_path):
    """Decays of 40 % and 20 % share 12 stable steps of 20; the trunk ends between the
    evaluations at 10 and 20, so it hands its train losses on."""
    store = TokenStore(small_store)
    trunk = tmp_path / "trunk"
    _run(store, tmp_path / "tp", [Member("t", _wsd(0.4), 2, trunk)], stop_step=12)
    assert len(json.loads((trunk / "trunk.json").read_text())["window"]) == 2
    for decay in (0.4, 0.2):
        out, ref = tmp_path / f"b{decay}", tmp_path / f"s{decay}"
        (b,) = _run(store, out, [Member("b", _wsd(decay), 2, out, trunk=trunk)])
        (s,) = _run(store, ref, [Member("s", _wsd(decay), 2, ref)])
        assert _losses(out / "metrics.jsonl") == _losses(ref / "metrics.jsonl")
        train = [json.loads(x)["train_loss"] for x in open(out / "metrics.jsonl")]
        assert train == [json.loads(x)["train_loss"] for x in open(ref / "metrics.jsonl")]
        assert b["flops_charged"] == s["flops"] * 8 // 20


def test_population_size_counts_one_chunk_of_logits(monkeypatch):
    class Card:
        def memory_stats(self):
            return {"bytes_limit": 80 * 2**30}

    monkeypatch.setattr(train_mod.jax, "devices", lambda: [Card()])
    monkeypatch.setattr(train_mod.jax, "device_count", lambda: 1)
    whole = model_config_for({"size": "1M", "loss_chunk": 0}, 50304, 1024)
    chunked = model_config_for({"size": "1M", "loss_chunk": 128}, 50304, 1024)
    P_whole = train_mod.population_size(whole, 32, 64)
    P_chunked = train_mod.population_size(chunked, 32, 64)
    assert 1 <= P_whole < 4 < P_chunked <= 64


def test_the_loss_kernels_are_for_populations():
    """With loss_impl "auto", one model and populations across devices take the XLA loss;
    asked for, the kernels stay."""
    cfg = model_config_for({"size": "1M"}, 8192, 1024)
    assert cfg.loss_impl == "auto"
    assert loss_impl_for(cfg, 1).loss_impl == "xla"
    assert loss_impl_for(cfg, 16) is cfg
    assert loss_impl_for(cfg, 16, n_devices=2).loss_impl == "xla"
    no_gpu = jax.default_backend() != "gpu"
    warns = pytest.warns(UserWarning, match="because they need a GPU") if no_gpu else nullcontext()
    with warns:
        forced = model_config_for({"size": "1M", "loss_impl": "pallas"}, 8192, 1024)
    assert loss_impl_for(forced, 1) is forced


def test_a_population_trains_the_same_with_the_loss_kernels(small_store, tmp_path, monkeypatch):
    """The trainer's population step (vmap, jit, the mesh) with the Pallas loss, run by the
    interpreter here: the same evaluations as with the XLA loss."""
    from codemix.models import fused_loss

    monkeypatch.setattr(fused_loss, "INTERPRET", True)
    traced, kernels = [], fused_loss.fused_mean_loss
    monkeypatch.setattr(fused_loss, "fused_mean_loss", lambda *a: traced.append(1) or kernels(*a))
    store = TokenStore(small_store)
    losses = {}
    for impl in ("xla", "pallas"):
        cfg = model_config_for(
            {"size": "test", "dtype": "float32", "loss_impl": impl}, store.vocab_size, S.seq_len
        )
        out = tmp_path / impl
        pop = [Member(m, SHORT, i, out / m) for i, m in enumerate("ab")]
        train_population(store, cfg, S, pop, out / "ckpt", progress=False)
        losses[impl] = [_losses(out / m / "metrics.jsonl") for m in "ab"]
    for xla, fused in zip(losses["xla"], losses["pallas"], strict=True):
        for (s1, l1, _), (s2, l2, _) in zip(xla, fused, strict=True):
            assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-4)
    assert losses["pallas"][0][-1][1] != losses["pallas"][1][-1][1]
    assert traced  # the kernels took the loss


def test_unique_share_reads_a_domain_as_often_at_every_run_length(small_store, tmp_path):
    """A cap of a share of each run's tokens: a run twice as long draws a sample twice as
    large, so both read the capped text about as many times (a fixed cap: twice as many)."""
    store = TokenStore(small_store)
    short, long = (
        Schedule((Stage("only", {"text": 0.5, "code": 0.5}, tokens=t),)) for t in (1280, 2560)
    )
    epochs = {}
    for name, settings in (
        ("share", dataclasses.replace(S, unique_share={"text": 0.1})),
        ("fixed", dataclasses.replace(S, unique_tokens={"text": 128})),
    ):
        for i, sched in enumerate((short, long)):
            out = tmp_path / f"{name}{i}"
            (s,) = _run(store, out, [Member("a", sched, 0, out / "a")], settings)
            epochs[name, i] = s["epochs"]["text"]
            caps = s["unique_caps"]  # as the spec asked, so that an export tells the arms apart
            assert caps == ({"unique_share": {"text": 0.1}} if name == "share" else caps)
    # 640 text tokens of 128 unique, 1280 of 256: 5 times each, counted in whole windows of
    # 33 tokens (3 and 7 of them: 6.7 and 5.7 times); the fixed cap 6.7 and 13.3 times
    assert epochs["share", 0] == pytest.approx(6.7, rel=0.05)
    assert epochs["share", 1] == pytest.approx(epochs["share", 0], rel=0.2)
    assert epochs["fixed", 1] == pytest.approx(2 * epochs["fixed", 0], rel=0.05)
    assert caps == {"unique_tokens": {"text": 128}}
    bad = dataclasses.replace(S, unique_share={"web": 0.1})
    with pytest.raises(CodemixError, match=r"unique_tokens or unique_share names \['web'\]"):
        _run(store, tmp_path / "bad", [Member("b", SHORT, 0, tmp_path / "bad" / "b")], bad)
