"""Validation: per-domain loss and bits per byte on a fixed sample of each domain's
validation split, the same for every run on a store, so runs compare."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from codemix.core.errors import CodemixError
from codemix.proxy_train.spec import val_windows
from codemix.proxy_train.store import TokenStore


@dataclass(frozen=True)
class ValSample:
    domains: tuple[str, ...]
    tokens_NT1: np.ndarray  # (N, T+1): every domain's windows, padded to a multiple of B
    domain_N: np.ndarray  # (N,) domain index of each window, -1 for padding
    tokens_per_byte: np.ndarray  # (D,) of each domain's validation split, for bits per byte


def val_sample(store: TokenStore, seq_len: int, tokens_per_domain: int, batch: int) -> ValSample:
    """The first windows of T+1 tokens (stride T) of each domain's validation split."""
    rows, owner, ratio = [], [], []
    for d, name in enumerate(store.domains):
        toks = store.tokens(name, "val")
        k = val_windows(len(toks), seq_len, tokens_per_domain)
        if k < 1:  # `spec.check_val_windows` says so before any work; never score it as 0
            raise CodemixError(f"domain {name!r}: no validation window of {seq_len + 1} tokens")
        starts = np.arange(k) * seq_len
        rows.append(np.asarray(toks[starts[:, None] + np.arange(seq_len + 1)], np.int32))
        owner.append(np.full(k, d))
        ratio.append(store.n_tokens(name, "val") / max(1, store.n_bytes(name, "val")))
    tokens = np.concatenate(rows) if rows else np.zeros((0, seq_len + 1), np.int32)
    domain = np.concatenate(owner) if owner else np.zeros(0, np.int64)
    pad = -len(tokens) % batch
    tokens = np.concatenate([tokens, np.zeros((pad, seq_len + 1), np.int32)])
    domain = np.concatenate([domain, np.full(pad, -1)])
    return ValSample(store.domains, tokens, domain, np.array(ratio))


def domain_losses(seq_loss_fn, params, sample_tokens, sample_domain, n_domains: int, batch: int):
    """Mean next-token loss per domain (D,) for one member, in chunks of `batch` windows."""
    chunks_CBT1 = sample_tokens.reshape(-1, batch, sample_tokens.shape[-1])
    per_seq_CB = jax.lax.map(lambda t: seq_loss_fn(params, t).mean(-1), chunks_CBT1)
    onehot_ND = jax.nn.one_hot(sample_domain, n_domains)  # padding rows are all zero
    sums_D = per_seq_CB.reshape(-1) @ onehot_ND
    return sums_D / jnp.maximum(onehot_ND.sum(0), 1)


def bits_per_byte(loss_D: np.ndarray, tokens_per_byte: np.ndarray) -> np.ndarray:
    return loss_D / math.log(2) * tokens_per_byte
