"""Downstream tasks scored in the trainer: log-likelihoods against a direct computation,
metrics against hand computations, an untrained model at chance, and the trainer's records."""

import json
import math

import jax
import numpy as np
import pytest

from codemix.models.transformer import init_params, token_losses
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.task_eval import (
    Task,
    load_tasks,
    make_scorer,
    metrics,
    precompile,
    score,
    task_metrics,
)
from codemix.proxy_train.tasks import select
from codemix.proxy_train.train import model_config_for

T, B = 64, 8


def _model(store):
    cfg = model_config_for({"size": "test"}, store.vocab_size, T)
    return cfg, jax.tree.map(lambda x: x[None], init_params(cfg, jax.random.key(0)))


def _direct(cfg, params, ctx, cont):
    """Sum of -log p(continuation | context), by one forward pass over the whole request."""
    ids = np.concatenate([ctx, cont]).astype(np.int32)[None]
    losses = np.asarray(token_losses(jax.tree.map(lambda x: x[0], params), ids, cfg))[0]
    return float(losses[len(ctx) - 1 :].sum())


def test_scores_equal_a_direct_computation_for_every_formulation(task_store):
    store = TokenStore(task_store)
    names = ["copa", "winogrande", "triviaqa", "humaneval"]  # shared and varying contexts,
    ts = load_tasks(store, names, T, B)  # a reference answer, long code truncated to a window
    cfg, params = _model(store)
    scorer = make_scorer(cfg, B)
    nll = score(scorer, params, ts)[0]
    # the programs compiled in the background, as the trainer uses them, give the same
    compiled = precompile(scorer, params, ts)
    assert set(compiled) == {ids.shape for ids, _, _ in ts.rows}
    np.testing.assert_allclose(score(scorer, params, ts, compiled)[0], nll, rtol=1e-6)
    checked = {"fits": 0, "cut": 0}
    for task in ts.tasks:
        with np.load(task_store / "evals" / f"{task.name}.npz") as z:
            a = {k: z[k] for k in z.files}
        start = 0
        for r in range(4):  # the first requests of each task
            nc, nk = int(a["ctx_len"][r]), int(a["cont_len"][r])
            ctx, cont = a["tokens"][start : start + nc], a["tokens"][start + nc : start + nc + nk]
            start += nc + nk
            k = min(nk, T)  # the window keeps the continuation's start and the context's end
            ctx, cont = ctx[len(ctx) - min(nc, T + 1 - k) :], cont[:k]
            checked["fits" if nc + nk <= T + 1 else "cut"] += 1
            assert nll[task.first + r] == pytest.approx(_direct(cfg, params, ctx, cont), rel=1e-4)
    assert checked["fits"] and checked["cut"]


def test_metrics_by_hand():
    # two items: three choices (gold 1), then two (gold 0); nll in nats
    t = Task(
        "toy",
        "nl_reasoning",
        0.4167,
        0,
        np.array([0, 0, 0, 1, 1]),
        np.array([1, 0]),
        np.array([3, 2]),
        np.array([4, 10, 2, 5, 5]),
    )
    nll = np.array([2.0, 1.0, 1.5, 3.0, 0.5])
    nbytes = np.array([4, 10, 2, 5, 5])
    m = task_metrics(t, nll, nbytes)
    p = np.exp(-nll)
    assert m["acc"] == 0.5  # item 1: choice 1 has the lowest nll; item 2: choice 1, not gold 0
    # per character: 2/4, 1/10, 1.5/2 -> choice 1 wins; 3/5 against 0.5/5 -> choice 1
    assert m["acc_norm"] == 0.5
    assert m["bpb"] == pytest.approx((1.0 + 3.0) / math.log(2) / (10 + 5))
    assert m["correct_prob"] == pytest.approx((p[1] + p[3]) / 2)
    assert m["norm_correct_prob"] == pytest.approx((p[1] / p[:3].sum() + p[3] / p[3:].sum()) / 2)
    assert m["total_prob"] == pytest.approx((p[:3].sum() + p[3:].sum()) / 2)
    assert m["margin"] == pytest.approx(((p[1] - p[2]) + (p[3] - p[4])) / 2)
    one = Task("ref", "code", 0.0, 0, np.array([0]), np.array([0]), np.array([1]), np.array([9]))
    r = task_metrics(one, np.array([2.0]), np.array([9]))
    assert r["acc"] is None and r["bpb"] == pytest.approx(2 / math.log(2) / 9)


def test_an_untrained_model_scores_at_chance_or_as_a_constant_guess(task_store):
    """Within 3 standard errors of chance, or of the range between chance and a constant
    answer's share: an untrained model that nearly always says " no" to BoolQ (62 % yes)
    scores near 38 %, not one half."""
    store = TokenStore(task_store)
    names = [t.name for t in select("paper")]
    ts = load_tasks(store, names, T, B)
    cfg, params = _model(store)
    m = metrics(ts, score(make_scorer(cfg, B), params, ts)[0])
    for t in ts.tasks:
        if t.n_choices.max() < 2:
            continue
        se = math.sqrt(t.chance * (1 - t.chance) / len(t.gold))
        constant = [float(np.mean(t.gold == k)) for k in range(t.n_choices.max())]
        acc = m[t.name]["acc"]
        near = [min(t.chance, c) - 3 * se <= acc <= max(t.chance, c) + 3 * se for c in constant]
        assert any(near), (t.name, acc, constant)
    assert set(m) >= {"nl_reasoning", "world_knowledge", "code"}
    assert m["nl_reasoning"]["tasks"] == 9 and m["code"]["acc"] is None


def test_the_trainer_scores_tasks_at_stage_ends_and_every_kth_evaluation(task_store, tmp_path):
    from codemix.proxy_train.schedule import LRShape, Schedule, Stage
    from codemix.proxy_train.spec import TrainSettings
    from codemix.proxy_train.train import Member, train_population

    store = TokenStore(task_store)
    ts = load_tasks(store, ["copa", "triviaqa"], 32, 4)
    s = TrainSettings(seq_len=32, batch_size=4, eval_every=2, eval_tokens=128)
    sched = Schedule(
        (
            Stage("a", {"text": 0.5, "code": 0.5}, tokens=1024),
            Stage("b", {"text": 1.0}, tokens=512, lr=LRShape("linear", start="continue")),
        )
    )
    cfg = model_config_for({"size": "test"}, store.vocab_size, 32)
    (summary,) = train_population(
        store,
        cfg,
        s,
        [Member("m", sched, 0, tmp_path / "m")],
        tmp_path / "ck",
        progress=False,
        tasks=ts,
        tasks_every=3,
    )
    recs = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    scored = [r["step"] for r in recs if "task" in r]
    assert [r["step"] for r in recs] == [2, 4, 6, 8, 10, 12]  # stages of 8 and 4 steps
    assert scored == [6, 8, 12]  # the 3rd and 6th evaluations, and the stage ends (8, 12)
    task = summary["final"]["task"]
    assert set(task) == {"copa", "triviaqa", "nl_reasoning", "world_knowledge"}
    assert 0 <= task["copa"]["acc"] <= 1 and task["triviaqa"]["bpb"] > 0
