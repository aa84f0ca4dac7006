"""Greedy decoding under a KV cache against the model's full forward."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codemix.core.errors import CodemixError
from codemix.evaluation import generate
from codemix.evaluation.generate import (
    decode_step,
    generate_text,
    greedy,
    greedy_reference,
    prefill,
)
from codemix.models.presets import model_config
from codemix.models.transformer import forward, init_params

V = 300
N = 8  # new tokens in most tests: one shape, one compilation


def _model(vocab=V, seq_len=64, **kw):
    """A tiny random model with sharp logits (weights scaled up), so greedy paths differ."""
    cfg = model_config("test", vocab, seq_len, **{"dtype": "float32", **kw})
    return cfg, jax.tree.map(lambda x: x * 8, init_params(cfg, jax.random.key(1)))


@pytest.fixture(scope="module")
def untied_gqa():
    """Grouped-query (two query heads read one key/value head), untied unembedding."""
    return _model(n_kv_heads=1, tied_embeddings=False)


def _prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, V, n).tolist() for n in lengths]


def test_cached_greedy_gives_the_full_forwards_tokens(untied_gqa):
    cfg, params = untied_gqa
    prompts = _prompts([3, 17, 1, 9, 30, 6])  # two batches of 4, the second half padding
    cached = greedy(cfg, params, prompts, N, batch_size=4)
    assert cached == greedy_reference(cfg, params, prompts, N)
    assert all(len(t) == N for t in cached)
    assert len({tuple(t) for t in cached}) == len(prompts)  # the paths really differ


def test_cached_logits_equal_the_forward_logits(untied_gqa):
    cfg, params = untied_gqa
    prompt, cont = _prompts([11, 8], seed=3)
    full_TV = np.asarray(forward(params, jnp.asarray([prompt + cont]), cfg))[0]
    P, pad = 16, 16 - len(prompt)
    tokens = np.zeros((1, P), np.int32)
    tokens[0, pad:] = prompt
    pad_B = jnp.asarray([pad], jnp.int32)
    logits, cache = prefill(cfg, params, jnp.asarray(tokens), pad_B, P + len(cont))
    got = [np.asarray(logits[0])]
    for j, t in enumerate(cont[:-1]):
        token = jnp.asarray([t], jnp.int32)
        logits, cache = decode_step(cfg, params, token, jnp.int32(P + j), pad_B, cache)
        got.append(np.asarray(logits[0]))
    want = full_TV[len(prompt) - 1 : len(prompt) + len(cont) - 1]
    np.testing.assert_allclose(np.stack(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_bfloat16_cache_with_tied_embeddings_stays_close_to_the_forward():
    cfg, params = _model(dtype="bfloat16")  # and one key/value head per query head
    prompt = _prompts([10])[0]
    full = np.asarray(forward(params, jnp.asarray([prompt]), cfg), np.float32)[0, -1]
    logits, _ = prefill(cfg, params, jnp.asarray([prompt], jnp.int32), jnp.zeros(1, jnp.int32), 16)
    assert logits.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(logits[0], np.float32), full, atol=0.1 * np.abs(full).max()
    )


def test_each_row_decodes_as_if_it_were_alone(untied_gqa):
    cfg, params = untied_gqa
    prompts = _prompts([2, 30, 7, 15], seed=5)
    together = greedy(cfg, params, prompts, N, batch_size=4)
    assert together == [greedy(cfg, params, [p], N)[0] for p in prompts]


def _cut(row: list[int], stops: list[list[int]]) -> list[int]:
    """The row up to where a stop first completes, without the stop."""
    for j in range(len(row)):
        for s in stops:
            if row[max(0, j + 1 - len(s)) : j + 1] == s:
                return row[: j + 1 - len(s)]
    return row


def test_rows_stop_at_their_stop_sequences(untied_gqa):
    cfg, params = untied_gqa
    prompts = _prompts([5, 12, 4, 20], seed=7)
    free = greedy(cfg, params, prompts, N, batch_size=4)
    one, two = free[0][4], free[1][5:7]  # a token of row 0, a pair of row 1
    stopped = greedy(cfg, params, prompts, N, stop_ids=[one, two], batch_size=4)
    assert stopped == [_cut(row, [[one], two]) for row in free]
    assert len(stopped[0]) <= 4 and len(stopped[1]) <= 5
    assert stopped == greedy_reference(cfg, params, prompts, N, stop_ids=[one, two])


def test_a_long_prompt_keeps_its_end(untied_gqa):
    cfg, params = untied_gqa
    (long,) = _prompts([90], seed=9)  # longer than the context of 64
    assert greedy(cfg, params, [long], N) == greedy(cfg, params, [long[-(64 - N) :]], N)


def test_lengths_that_cannot_fit_are_refused(untied_gqa):
    cfg, params = untied_gqa
    with pytest.raises(CodemixError, match="less than the model's context of 64"):
        greedy(cfg, params, [[1, 2]], 64)
    with pytest.raises(CodemixError, match="empty prompt"):
        greedy(cfg, params, [[1], []], 4)


@pytest.fixture(scope="module")
def text_run(small_store):
    from codemix.proxy_train.store import TokenStore
    from codemix.proxy_train.tasks import store_tokenizer

    store = TokenStore(small_store)
    tok = store_tokenizer(store.path, store.manifest)
    cfg, params = _model(vocab=store.vocab_size, seq_len=128)
    return SimpleNamespace(cfg=cfg, params=params, tokenizer=tok)


def test_generate_text_cuts_at_stop_strings_and_stops_early(text_run, monkeypatch):
    prompts = ["The State of the Union", "def main(argv):\n    "]
    free = generate_text(text_run, prompts, 40, stop=(), progress=False)
    # a random model may end a row early with the end-of-document token; the longer row
    # carries the stop string
    r = max(range(len(free)), key=lambda i: len(free[i]))
    assert len(free[r]) > 10
    stop = free[r][6:8]  # two characters well inside that row: a stop string there
    monkeypatch.setattr(generate, "_CHUNK", 4)  # check the text every 4 tokens
    stats = {}
    got = generate_text(text_run, prompts, 40, stop=(stop,), progress=False, stats=stats)
    assert got == [t[: t.find(stop)] if stop in t else t for t in free]
    assert stats["tokens"] < 2 * 40 and stats["seconds"] > 0  # row r stopped early


def test_generate_text_starts_an_empty_prompt_at_the_document_boundary(text_run):
    eos = text_run.tokenizer.eos_id
    (want,) = greedy(text_run.cfg, text_run.params, [[eos]], 12, stop_ids=[eos])
    (got,) = generate_text(text_run, [""], 12, stop=(), progress=False)
    assert got == generate.decode(text_run.tokenizer, want)
