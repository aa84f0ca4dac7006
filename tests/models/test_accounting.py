import dataclasses
import math

import jax
import pytest

from codemix.models.accounting import flops_per_token, param_count
from codemix.models.config import ModelConfig
from codemix.models.presets import model_config
from codemix.models.transformer import init_params

TINY = ModelConfig(vocab_size=96, d_model=32, n_layers=3, n_heads=4, d_ff=80, seq_len=16)


def _tree_count(cfg: ModelConfig) -> int:
    # eval_shape: shapes only, so even 2.8B parameters allocate nothing.
    shapes = jax.eval_shape(lambda r: init_params(cfg, r), jax.random.key(0))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_count_matches_initialised_tree(tied, n_kv_heads):
    cfg = dataclasses.replace(TINY, tied_embeddings=tied, n_kv_heads=n_kv_heads)
    count = param_count(cfg)
    assert count.total == _tree_count(cfg)
    assert count.embedding == 96 * 32 * (1 if tied else 2)
    assert count.total == count.embedding + count.non_embedding


@pytest.mark.parametrize("name", ["2.8B"])
def test_count_matches_tree_for_a_large_preset(name):
    cfg = model_config(name, vocab_size=8192, seq_len=1024, tied_embeddings=False)
    assert param_count(cfg).total == _tree_count(cfg)


def test_124m_by_hand():
    cfg = model_config("124M", vocab_size=8192, seq_len=1024)
    d, L, f, V, T = 768, 12, 2048, 8192, 1024
    per_layer = 4 * d * d + 3 * d * f + 2 * d  # attention, SwiGLU, two norms
    non_embedding = L * per_layer + d  # + final norm
    assert non_embedding == 84_953_856
    assert param_count(cfg).non_embedding == non_embedding
    assert param_count(cfg).total == non_embedding + V * d
    N = non_embedding + V * d  # the tied output projection is a matmul
    assert flops_per_token(cfg) == 6 * N + 12 * L * d * T == 660_718_080


def test_flops_depend_on_context_and_not_on_tying():
    cfg = model_config("1M", vocab_size=8192, seq_len=512)
    untied = dataclasses.replace(cfg, tied_embeddings=False)
    assert flops_per_token(cfg) == flops_per_token(untied)
    assert flops_per_token(cfg, seq_len=1024) - flops_per_token(cfg) == 12 * 4 * 128 * 512
