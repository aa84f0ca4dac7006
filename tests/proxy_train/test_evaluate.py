"""Bits per byte on a store small enough to work out by hand.

Six one-letter documents, byte tokenizer, val_frac 0.2. By their hashes, one document of
each domain is held out: "z" * 20 of text (20 bytes, 21 tokens with the end-of-document
id) and "q" * 13 of code (13 bytes, 14 tokens)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from codemix.core.errors import CodemixError
from codemix.proxy_train.evaluate import bits_per_byte, domain_losses, val_sample
from codemix.proxy_train.prepare import PrepareConfig, prepare
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.tokenizer import TokenizerSpec

Z, Q = ord("z"), ord("q")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TokenStore:
    root = tmp_path_factory.mktemp("tiny")
    for i, n in enumerate((10, 20, 30)):
        (root / f"z{i}.txt").write_text("z" * n)
    for i, n in enumerate((13, 26, 39)):
        (root / f"q{i}.txt").write_text("q" * n)
    domains = {"text": (str(root / "z*.txt"),), "code": (str(root / "q*.txt"),)}
    cfg = PrepareConfig(domains, root / "store", tokenizer=TokenizerSpec("bytes"), val_frac=0.2)
    prepare(cfg, quiet=True)
    return TokenStore(root / "store")


def test_the_held_out_documents_are_the_ones_worked_out_by_hand(store):
    text, code = store.info("text"), store.info("code")
    assert (text["val_documents"], text["val_bytes"], text["val_tokens"]) == (1, 20, 21)
    assert (code["val_documents"], code["val_bytes"], code["val_tokens"]) == (1, 13, 14)
    assert bytes(store.tokens("text", "val")[:-1].astype(np.uint8)) == b"z" * 20
    assert store.tokens("text", "val")[-1] == store.eos_id


def test_val_sample_takes_the_first_windows_of_each_domain(store):
    val = val_sample(store, seq_len=4, tokens_per_domain=8, batch=3)
    assert val.domains == ("text", "code")
    # two windows of 4 + 1 tokens a domain, padded from 4 rows to 6 for batches of 3
    assert val.tokens_NT1.shape == (6, 5)
    assert val.domain_N.tolist() == [0, 0, 1, 1, -1, -1]
    assert (val.tokens_NT1[:2] == Z).all() and (val.tokens_NT1[2:4] == Q).all()
    assert (val.tokens_NT1[4:] == 0).all()
    np.testing.assert_allclose(val.tokens_per_byte, [21 / 20, 14 / 13])


def test_a_domain_without_one_whole_window_is_refused_not_scored_zero(store):
    # code holds 14 validation tokens: no window of 14 + 1
    with pytest.raises(CodemixError, match="domain 'code': no validation window of 15"):
        val_sample(store, seq_len=14, tokens_per_domain=28, batch=1)


def _seq_loss(params, tokens_BT1):
    """2 nats a token on text windows, 3 on code, 100 on padding (which must not count)."""
    per_seq = jnp.where(
        (tokens_BT1 == Z).any(-1), 2.0, jnp.where((tokens_BT1 == Q).any(-1), 3.0, 100.0)
    )
    return jnp.broadcast_to(per_seq[:, None], tokens_BT1[:, 1:].shape)


def test_bits_per_byte_matches_the_hand_computation(store):
    val = val_sample(store, seq_len=4, tokens_per_domain=8, batch=3)
    loss_D = np.asarray(domain_losses(_seq_loss, None, val.tokens_NT1, val.domain_N, 2, 3))
    np.testing.assert_allclose(loss_D, [2.0, 3.0], rtol=1e-6)
    bpb = bits_per_byte(loss_D, val.tokens_per_byte)
    # nats per token / ln 2 = bits per token; times tokens per byte of the validation split
    np.testing.assert_allclose(
        bpb, [2.0 / math.log(2) * 21 / 20, 3.0 / math.log(2) * 14 / 13], rtol=1e-6
    )
    np.testing.assert_allclose(bpb, [3.0297, 4.6610], atol=1e-4)
