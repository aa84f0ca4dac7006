import dataclasses

import pytest

from codemix.core.errors import CodemixError
from codemix.models.config import ModelConfig

GOOD = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, seq_len=16)


def test_defaults():
    cfg = ModelConfig(**GOOD)
    assert cfg.head_dim == 8 and cfg.kv_heads == 4
    assert cfg.tied_embeddings and cfg.dtype == "bfloat16" and cfg.remat == "none"
    assert cfg.attention_impl is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 64


def test_is_hashable_for_jit_static_args():
    assert hash(ModelConfig(**GOOD)) == hash(ModelConfig(**GOOD))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vocab_size", 0),
        ("d_model", -8),
        ("n_layers", 1.5),
        ("n_heads", True),
        ("d_ff", "64"),
        ("seq_len", None),
        ("d_model", 30),  # not a multiple of n_heads
        ("d_model", 20),  # head dim 5 is odd: no rotary pairs
        ("n_kv_heads", 3),  # does not divide n_heads
        ("n_kv_heads", 0),
        ("tied_embeddings", 1),
        ("rope_theta", 0.0),
        ("dtype", "fp8"),
        ("remat", "some"),
        ("attention_impl", "flash"),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(CodemixError, match=f"ModelConfig.{field}"):
        ModelConfig(**(GOOD | {field: value}))


def test_message_says_what_was_expected():
    with pytest.raises(CodemixError, match="one of 'none', 'full', 'dots_saveable'"):
        ModelConfig(**GOOD, remat="all")
    with pytest.raises(CodemixError, match="multiple of n_heads=4"):
        ModelConfig(**(GOOD | {"d_model": 30}))


def test_grouped_query_attention():
    assert ModelConfig(**GOOD, n_kv_heads=2).kv_heads == 2
