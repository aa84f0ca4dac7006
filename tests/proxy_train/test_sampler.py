import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codemix.core.errors import CodemixError
from codemix.proxy_train.prepare import PrepareConfig, prepare
from codemix.proxy_train.sampler import MixtureSampler, permute
from codemix.proxy_train.schedule import Schedule, Stage
from codemix.proxy_train.store import TokenStore, spread_cap
from codemix.proxy_train.tokenizer import TokenizerSpec

T = 16
ALPHABETS = {"prose": "abcdefgh ", "code": "0123456789", "math": "+-*/=<>()"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TokenStore:
    """Three byte-level domains whose bytes do not overlap, so a row tells its domain."""
    root = tmp_path_factory.mktemp("sampler")
    rng = np.random.default_rng(0)
    domains = {}
    for name, alphabet in ALPHABETS.items():
        (root / name).mkdir()
        for i in range(30):
            text = "".join(rng.choice(list(alphabet), size=int(rng.integers(100, 600))))
            (root / name / f"{i}.txt").write_text(text)
        domains[name] = (str(root / name / "*.txt"),)
    domains["tiny"] = (str(root / "tiny*.txt"),)
    (root / "tiny1.txt").write_text("~~~")
    (root / "tiny2.txt").write_text("~~")
    prepare(
        PrepareConfig(domains=domains, out=root / "s", tokenizer=TokenizerSpec("bytes")), quiet=True
    )
    return TokenStore(root / "s")


def _owner(rows: np.ndarray) -> list[str]:
    lookup = {ord(c): name for name, a in ALPHABETS.items() for c in a}
    return [lookup[int(next(t for t in row if t != 256))] for row in rows]


def _sampler(store, mixtures, steps=50, B=8, seed=0):
    stages = tuple(Stage(f"s{i}", m, tokens=steps * B * T) for i, m in enumerate(mixtures))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixtureSampler(store, Schedule(stages).plan(B * T), B, T, seed)


weights = st.lists(st.integers(0, 20), min_size=3, max_size=3).filter(lambda w: sum(w) > 0)


def _mix(w):
    total = sum(w)
    return {name: x / total for name, x in zip(ALPHABETS, w, strict=True)}


@settings(max_examples=25, deadline=None)
@given(w=weights, B=st.integers(8, 48), start=st.integers(0, 400))
def test_any_100_batches_have_the_requested_shares(store, w, B, start):
    mix = _mix(w)
    s = _sampler(store, [mix], steps=600, B=B)
    rows = np.concatenate([s.batch(i) for i in range(start, start + 100)])
    owners = _owner(rows)
    for name, share in mix.items():
        assert abs(owners.count(name) / len(owners) - share) <= 0.01


@settings(max_examples=25, deadline=None)
@given(w=weights, start=st.integers(0, 2000), n=st.integers(1, 300))
def test_any_window_of_sequences_is_within_three_of_its_target(store, w, start, n):
    """The nested rounding bound for three domains: a window of n sequences holds each
    domain's n * share within 3 sequences, however small the batches."""
    mix = _mix(w)
    s = _sampler(store, [mix], steps=2400, B=1)
    owners = _owner(np.concatenate([s.batch(i) for i in range(start, start + n)]))
    for name, share in mix.items():
        assert abs(owners.count(name) - n * share) <= 3


@settings(max_examples=15, deadline=None)
@given(w=weights, seed=st.integers(0, 2**31), steps=st.lists(st.integers(0, 149), max_size=6))
def test_random_access_and_resume_equal_a_straight_run(store, w, seed, steps):
    mixes = [_mix(w), {"prose": 0.5, "code": 0.5}]
    straight = _sampler(store, mixes, steps=75, seed=seed)
    by_step = [straight.batch(i) for i in range(150)]
    resumed = _sampler(store, mixes, steps=75, seed=seed)  # a fresh process after a kill
    for i in steps:
        np.testing.assert_array_equal(resumed.batch(i), by_step[i])


@settings(max_examples=15, deadline=None)
@given(w=weights, first=st.integers(0, 149), n=st.integers(1, 150))
def test_a_block_of_steps_is_the_steps_one_by_one(store, w, first, n):
    """`batches` draws many steps in one call (the trainer's prefetch): across stage
    boundaries and epochs it is `batch` stacked, bit for bit."""
    s = _sampler(store, [_mix(w), {"prose": 0.2, "code": 0.8}], steps=75, B=3)
    n = min(n, 150 - first)
    block = s.batches(first, n)
    assert block.shape == (n, 3, T + 1)
    np.testing.assert_array_equal(block, np.stack([s.batch(i) for i in range(first, first + n)]))
    with pytest.raises(IndexError):
        s.batches(first, 151 - first)


def test_seeds_give_different_data(store):
    mix = [{"prose": 0.5, "code": 0.3, "math": 0.2}]
    a, b = _sampler(store, mix, seed=1), _sampler(store, mix, seed=2)
    assert not np.array_equal(a.batch(3), b.batch(3))
    assert _owner(a.batch(3)) == _owner(b.batch(3))  # the mixture is the seed's business only


def test_stage_switch_changes_the_mixture(store):
    s = _sampler(store, [{"prose": 1.0}, {"code": 1.0}], steps=10)
    assert set(_owner(s.batch(9))) == {"prose"}
    assert set(_owner(s.batch(10))) == {"code"}
    assert s.realised_mixture()[1]["code"] == 1.0


def test_every_window_once_per_epoch(store):
    s = _sampler(store, [{"math": 1.0}], steps=1000, B=4)
    W = int(s.windows[s.domains.index("math")])
    rows = np.concatenate([s.batch(i) for i in range(-(-2 * W // 4))])
    first = [r.tobytes() for r in rows[:W]]
    second = [r.tobytes() for r in rows[W : 2 * W]]
    assert len(set(first)) == W and set(first) == set(second)
    assert first != second  # a new epoch comes in a new order


def test_epochs_and_repeat_warning(store):
    W = int(TokenStore(store.path).n_tokens("code") - 1) // T
    with pytest.warns(UserWarning, match=r"'code' would be repeated 6.0 times \(more than 4\)"):
        s = MixtureSampler(
            store, Schedule((Stage("x", {"code": 1.0}, tokens=6 * W * T),)).plan(4 * T), 4, T
        )
    assert s.epochs()["code"] == pytest.approx(6, rel=0.01)
    assert s.epochs()["prose"] == 0


def test_permute_is_a_bijection():
    for n in (1, 2, 3, 17, 1000, 4097):
        p = permute(np.arange(n), n, key=n)
        assert sorted(p.tolist()) == list(range(n))


def test_unknown_domain(store):
    with pytest.raises(CodemixError, match=r"mixture names \['web'\].*domains: prose"):
        _sampler(store, [{"prose": 0.5, "web": 0.5}])


def test_domain_with_weight_and_no_tokens(store):
    with pytest.raises(CodemixError, match="'tiny' has weight 0.1 but only"):
        _sampler(store, [{"prose": 0.9, "tiny": 0.1}])


def test_steps_outside_the_schedule(store):
    s = _sampler(store, [{"prose": 1.0}], steps=5)
    with pytest.raises(IndexError):
        s.batch(5)


def test_unique_tokens_cap_draws_only_its_sample_and_counts_its_repeats(store):
    cap = 40 * T + 1
    plan = Schedule((Stage("x", {"code": 1.0}, tokens=80 * T),)).plan(4 * T)
    s = MixtureSampler(store, plan, 4, T, unique_tokens={"code": cap})
    assert int(s.windows[s.domains.index("code")]) == 40
    assert s.epochs()["code"] == pytest.approx(2.0)
    sample = spread_cap(store.tokens("code"), cap).astype(np.int32).tobytes()
    for row in np.concatenate([s.batch(i) for i in range(20)]):
        assert row.tobytes() in sample  # every sequence comes from the capped sample
    again = MixtureSampler(store, plan, 4, T, seed=1, unique_tokens={"code": cap})
    assert again._tokens["code"] is s._tokens["code"]  # one copy for a population
    with pytest.raises(CodemixError, match=r"train.unique_tokens or unique_share names \['web'\]"):
        MixtureSampler(store, plan, 4, T, unique_tokens={"web": 100})
    # a capped domain read past the repetition warning's limit: the cap meant it, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MixtureSampler(store, plan, 4, T, unique_tokens={"code": 10 * T + 1})
