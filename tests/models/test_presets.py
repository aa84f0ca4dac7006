import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codemix.core.errors import CodemixError
from codemix.models.accounting import param_count
from codemix.models.presets import LADDER, PRESETS, Shape, format_size, model_config, parse_size


def _d_ff(d: int) -> int:
    return 64 * math.ceil(8 * d / 3 / 64)


@pytest.mark.parametrize("name", [*LADDER, "470M", "2.8B"])
def test_shapes_follow_the_rule(name):
    s = PRESETS[name]
    assert s.d_model == 64 * s.n_heads  # head dim 64
    assert s.d_ff == _d_ff(s.d_model)
    model_config(name, vocab_size=8192, seq_len=1024)  # passes validation


@pytest.mark.parametrize("name", LADDER)
def test_ladder_counts_match_names(name):
    s = PRESETS[name]
    assert 32 <= s.d_model / s.n_layers <= 64
    n = param_count(model_config(name, vocab_size=8192, seq_len=1024)).non_embedding
    target = 85e6 if name == "124M" else parse_size(name)  # GPT-2 small: 85M non-embedding
    assert abs(math.log(n / target)) < math.log(1.2)


def test_ladder_never_shrinks():
    shapes = [PRESETS[n] for n in LADDER]
    sizes = [parse_size(n) for n in LADDER]
    assert sizes == sorted(sizes)
    for a, b in zip(shapes, shapes[1:], strict=False):
        assert b.n_layers >= a.n_layers and b.d_model >= a.d_model


def test_124m_is_gpt2_small():
    assert PRESETS["124M"] == Shape(n_layers=12, d_model=768, n_heads=12, d_ff=2048)
    # With GPT-2's vocabulary (and its 1024 learned positions, which rotary replaces)
    # the total is GPT-2's 124M.
    total = param_count(model_config("124M", vocab_size=50257, seq_len=1024)).total
    assert format_size(total + 1024 * 768) == "124M"


def test_model_config_sets_vocab_seq_len_and_overrides():
    cfg = model_config("1M", vocab_size=4096, seq_len=256, dtype="float32", remat="full")
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff) == (4, 128, 2, 384)
    assert (cfg.vocab_size, cfg.seq_len, cfg.dtype, cfg.remat) == (4096, 256, "float32", "full")
    cfg = model_config(Shape(1, 64, 1, 128), vocab_size=100, seq_len=8)
    assert cfg.d_ff == 128


def test_unknown_preset_lists_known_names():
    with pytest.raises(CodemixError, match="known: test, 0.5M, 1M"):
        model_config("3M", vocab_size=8192, seq_len=1024)


def test_unknown_override_is_an_error():
    with pytest.raises(CodemixError, match="no field"):
        model_config("1M", vocab_size=8192, seq_len=1024, width=3)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("470M", 470e6),
        ("2.8B", 2.8e9),
        ("2.8b", 2.8e9),
        ("1.5k", 1500.0),
        ("200B", 200e9),
        ("3T", 3e12),
        ("0.5M", 5e5),
        (" 42 ", 42.0),
        ("3e6", 3e6),
        ("1_000k", 1e6),
        (124, 124.0),
        (2.5e9, 2.5e9),
    ],
)
def test_parse_size(text, value):
    assert parse_size(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["", "M", "12X", "1.2.3M", "-5M", "nan", "inf", True, "5 MB"])
def test_parse_size_rejects(bad):
    with pytest.raises(CodemixError):
        parse_size(bad)


def test_parse_size_names_the_value_in_errors():
    with pytest.raises(CodemixError, match="--target: cannot read 'big'"):
        parse_size("big", "--target")
    # a preset's name read as a size is its name's number, not its parameters
    assert parse_size("2.8B") == 2.8e9


@given(st.floats(min_value=1.0, max_value=1e14))
def test_format_parse_round_trip(x):
    assert parse_size(format_size(x)) == pytest.approx(x, rel=5e-3)
