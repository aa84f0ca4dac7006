"""Exact parameter counts and training FLOPs per token, from the config alone.

FLOPs follow nanoGPT's accounting: 6N + 12*L*d*T per token, where N counts the parameters
that take part in matmuls (all non-embedding parameters plus the output projection V*d;
the input-embedding lookup is free) and 12*L*d*T covers attention scores and the weighted
sum of values over a context of T tokens (forward 2*2*L*d*T, backward twice that; causal
masking is not discounted). Norm scales are counted in N although they are not matmuls;
they are < 0.1 % of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from codemix.models.config import ModelConfig

__all__ = ["ParamCount", "flops_per_token", "param_count"]


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int  # input embedding, plus the output projection when untied
    non_embedding: int


def param_count(cfg: ModelConfig) -> ParamCount:
    """The number of parameters `init_params(cfg, rng)` creates, split as in Kaplan et al."""
    D, F, L, V = cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.vocab_size
    HK, GK = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    attn = D * HK + 2 * D * GK + HK * D  # wq, wk, wv, wo
    mlp = 3 * D * F  # w_gate, w_up, w_down
    norms = 2 * D
    non_embedding = L * (attn + mlp + norms) + D  # + the final norm
    embedding = V * D * (1 if cfg.tied_embeddings else 2)
    return ParamCount(non_embedding + embedding, embedding, non_embedding)


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> int:
    """Training FLOPs (forward + backward) per token at context `seq_len` (default cfg's)."""
    T = cfg.seq_len if seq_len is None else seq_len
    N = param_count(cfg).non_embedding + cfg.vocab_size * cfg.d_model
    return 6 * N + 12 * cfg.n_layers * cfg.d_model * T
