import math

import pytest

from codemix.core.errors import CodemixError
from codemix.proxy_train.schedule import LRShape, Schedule, Stage, learning_rate, stage_at

MIX = {"text": 0.75, "code": 0.25}


def test_budgets_scale_with_the_model():
    s = Schedule((Stage("init", MIX, tokens_per_param=20), Stage("cool", MIX, tokens="1M")))
    assert s.stage_tokens(n_params=1e6) == [20e6, 1e6]
    assert s.stage_tokens(n_params=2e6) == [40e6, 1e6]


def test_fractions_of_the_run():
    s = Schedule((Stage("a", MIX, fraction=0.8), Stage("b", MIX, fraction=0.2)), run_tokens="10M")
    assert s.stage_tokens() == pytest.approx([8e6, 2e6])


def test_max_tokens_keeps_stage_proportions():
    s = Schedule(
        (
            Stage("init", MIX, tokens="200B"),
            Stage("cont", MIX, tokens="200B"),
            Stage("cool", MIX, tokens="40B"),
        )
    )
    small = s.stage_tokens(max_tokens=44_000)
    assert small == pytest.approx([20_000, 20_000, 4_000])


def test_plan_to_steps():
    s = Schedule((Stage("a", MIX, tokens=10_000), Stage("b", MIX, tokens=1_000)))
    plans = s.plan(tokens_per_step=1_000)
    assert [(p.first_step, p.n_steps) for p in plans] == [(0, 10), (10, 1)]
    assert stage_at(plans, 9) == 0 and stage_at(plans, 10) == 1
    with pytest.raises(IndexError):
        stage_at(plans, 11)


def test_cosine_with_warmup():
    lr = LRShape("cosine", warmup=0.1, start=1.0, end=0.1)
    values = [lr.value(i, 100, 3e-3, 0.0) for i in range(100)]
    assert values[0] == pytest.approx(3e-4)  # (0 + 1) / 10 of the peak
    assert max(values) == pytest.approx(3e-3)
    assert values[-1] == pytest.approx(3e-4)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))


def test_cooldown_decays_linearly_to_an_absolute_floor():
    s = Schedule(
        (
            Stage("main", MIX, tokens=1000, lr=LRShape("cosine", warmup=0.1, end=0.1)),
            Stage("cool", MIX, tokens=200, lr=LRShape("linear", start="continue", end_lr=1e-6)),
        )
    )
    plans = s.plan(tokens_per_step=10)
    peak = 1e-3
    assert learning_rate(plans, 100, peak) == pytest.approx(1e-4)  # where main ended
    assert learning_rate(plans, 119, peak) == pytest.approx(1e-6)
    mid = learning_rate(plans, 109, peak)
    assert 1e-6 < mid < 1e-4


def test_constant():
    assert LRShape("constant", start=0.5).value(7, 10, 2.0, 0.0) == 1.0


@pytest.mark.parametrize(
    ("shape", "half"),
    [
        ("linear", 0.55),  # halfway from 1.0 to 0.1
        ("cosine", 0.55),
        ("1-sqrt", 0.1 + 0.9 * (1 - math.sqrt(0.5))),
        ("exponential", math.sqrt(0.1)),  # geometric: halfway in log
    ],
)
def test_decay_shapes_run_from_start_to_end(shape, half):
    lr = LRShape(shape, start=1.0, end=0.1)
    values = [lr.value(i, 101, 1.0, 0.0) for i in range(101)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    assert values[50] == pytest.approx(half)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert lr.final(1.0, 0.0) == pytest.approx(0.1)


def test_wsd_holds_then_decays_over_its_last_share():
    lr = LRShape("wsd", warmup=0.1, decay=0.2, end=0.0)
    values = [lr.value(i, 100, 2.0, 0.0) for i in range(100)]
    assert values[0] == pytest.approx(0.2)  # warm-up
    assert values[10:80] == [2.0] * 70  # stable
    assert values[-1] == pytest.approx(0.0)
    assert values[90] == pytest.approx(2.0 * (1 - math.sqrt(10 / 19)))  # 1-sqrt by default
    cos = LRShape("wsd", decay=0.5, decay_shape="cosine", end=0.1)
    assert cos.value(74, 99, 1.0, 0.0) == pytest.approx(0.55, abs=0.02)


def test_a_stable_trunk_then_decays_as_stages():
    s = Schedule(
        (
            Stage("stable", MIX, tokens=800, lr=LRShape("constant", warmup=0.05)),
            Stage("decay", MIX, tokens=200, lr=LRShape("1-sqrt", start="continue", end=0.0)),
        )
    )
    plans = s.plan(tokens_per_step=10)
    assert learning_rate(plans, 79, 1e-3) == pytest.approx(1e-3)
    assert learning_rate(plans, 80, 1e-3) == pytest.approx(1e-3)  # the decay continues it
    assert learning_rate(plans, 99, 1e-3) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Stage("s", {"text": 0.5, "code": 0.4}, tokens=10), r"sum to 0\.9, not 1"),
        (lambda: Stage("s", {"text": 1.2, "code": -0.2}, tokens=10), r"'code' is -0\.2"),
        (lambda: Stage("s", MIX, tokens=0), "a stage needs a budget > 0"),
        (lambda: Stage("s", MIX, tokens="0B"), "a stage needs a budget > 0"),
        (lambda: Stage("s", MIX), "give exactly one budget"),
        (lambda: Stage("s", MIX, tokens=1, fraction=0.5), "give exactly one budget"),
        (lambda: Stage("s", {}, tokens=10), "empty mixture"),
        (lambda: Stage("s", {"text": "lots"}, tokens=10), "not a number"),
        (lambda: Stage("s", MIX, tokens="lots"), "cannot read 'lots'"),
        (lambda: LRShape("exp"), "lr.shape 'exp'"),
        (lambda: LRShape(warmup=1.5), "lr.warmup 1.5"),
        (lambda: LRShape("cosine", decay=0.2), "belong to shape 'wsd', not 'cosine'"),
        (lambda: LRShape("wsd", decay=0.0), r"lr.decay 0.0: expected a share"),
        (lambda: LRShape("wsd", decay_shape="step"), "lr.decay_shape 'step'"),
        (lambda: LRShape("exponential", end=0.0), "never reaches 0"),
        (lambda: LRShape("wsd", decay_shape="exponential", end_lr=0.0), "never reaches 0"),
        (lambda: Schedule(()), "at least one stage"),
        (lambda: Schedule((Stage("a", MIX, fraction=0.5),), run_tokens=10), "sum to 0.5"),
        (lambda: Schedule((Stage("a", MIX, fraction=1.0),)), "needs a total"),
        (lambda: Schedule((Stage("a", MIX, tokens=9), Stage("a", MIX, tokens=9))), "repeat"),
    ],
)
def test_bad_schedules(make, message):
    with pytest.raises(CodemixError, match=message):
        make()


def test_learning_rate_is_finite_everywhere():
    s = Schedule((Stage("a", MIX, tokens=30, lr=LRShape("cosine", warmup=0.5)),))
    plans = s.plan(tokens_per_step=10)
    assert all(math.isfinite(learning_rate(plans, i, 1.0)) for i in range(3))
