"""Greedy decoding with a key/value cache, in plain JAX (CPU, GPU and TPU alike).

A batch of prompts is left-padded to one length P, so every row writes its cache at the same
slot; each row keeps its own positions (slot - padding), which index the model's rotary
tables, and its padding is masked out of every attention. The prompts go through the model
at once (prefill), then one token a step inside a `lax.while_loop` over a fixed-size cache
(B, S, G, K) per layer, until every row has met a stop or N new tokens. Shapes are rounded so
that few programs compile: P to a power of two (at least 32), the cache's room for new
tokens to a power of two of at least 256 (N itself is a runtime limit), B fixed per call.

The layers are the model's own pieces: its rotary tables and `apply_rope`, flax's RMSNorm,
its `Mlp`, the attention projections and grouped-query layout of `Attention` (query head h
reads key/value head h // (H / G)) and its tied or untied unembedding, in the model's
compute dtype; so the cached logits equal `forward`'s to float tolerance. `greedy_reference`
runs the full forward at every step without a cache, as the yardstick.

Stops: token-id sequences are checked on the device after every token; `generate_text`
also stops a row at any token whose text holds a stop string, and checks the decoded text
on the host every `_CHUNK` tokens for stop strings split across tokens.

Letters as in `models/transformer.py`: B batch, T time, S cache slots, D width, H query
heads, G key/value heads, R = H / G, K head dim, V vocabulary, N new tokens.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from codemix.core.errors import CodemixError
from codemix.core.progress import Progress
from codemix.models.config import ModelConfig
from codemix.models.transformer import Mlp, apply_rope, forward, rope_tables

__all__ = [
    "decode",
    "decode_step",
    "generate_text",
    "greedy",
    "greedy_reference",
    "init_cache",
    "prefill",
]

_CHUNK = 32  # tokens between host-side checks of stop strings
_MIN_PROMPT = 32  # prompts are left-padded to a power of two from this (few compilations)
_MIN_ROOM = 256  # room for new tokens: a power of two from this, whatever max_new_tokens

Cache = tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]  # (k per layer, v per layer)


def _compute_params(cfg: ModelConfig, params: dict) -> dict:
    """Matrices cast to the compute dtype once (the model casts them at every use), norm
    scales left in float32 as flax's RMSNorm reads them, and the stacked blocks split into
    one tree per layer (taken once, outside any decoding loop)."""
    dt = jnp.dtype(cfg.dtype)
    p = jax.tree_util.tree_map_with_path(
        lambda path, x: x if "norm" in jax.tree_util.keystr(path) else x.astype(dt), params
    )
    blocks = p.pop("blocks")
    p["layers"] = tuple(jax.tree.map(operator.itemgetter(i), blocks) for i in range(cfg.n_layers))
    return p


def _rms(scale_D: jax.Array, x_BTD: jax.Array, cfg: ModelConfig) -> jax.Array:
    return nn.RMSNorm(dtype=jnp.dtype(cfg.dtype)).apply({"params": {"scale": scale_D}}, x_BTD)


def _rope(x_BTHK: jax.Array, cos_BTK2: jax.Array, sin_BTK2: jax.Array) -> jax.Array:
    """The model's `apply_rope`, with a table row per batch row (positions differ by row)."""
    return jax.vmap(lambda x, c, s: apply_rope(x[None], c, s)[0])(x_BTHK, cos_BTK2, sin_BTK2)


def _attend(
    q_BTHK: jax.Array, k_BSGK: jax.Array, v_BSGK: jax.Array, mask_BTS: jax.Array
) -> jax.Array:
    """Masked attention as `reference_attention` computes it, grouped-query without repeats."""
    B, T, H, K = q_BTHK.shape
    G = k_BSGK.shape[2]
    q_BTGRK = q_BTHK.reshape(B, T, G, H // G, K)
    s_BGRTS = jnp.einsum(
        "BTGRK,BSGK->BGRTS", q_BTGRK, k_BSGK, preferred_element_type=jnp.float32
    ) / math.sqrt(K)
    s_BGRTS = jnp.where(mask_BTS[:, None, None], s_BGRTS, jnp.finfo(jnp.float32).min)
    p_BGRTS = jax.nn.softmax(s_BGRTS, axis=-1).astype(v_BSGK.dtype)
    return jnp.einsum("BGRTS,BSGK->BTGRK", p_BGRTS, v_BSGK).reshape(B, T, H, K)


def _forward_cached(
    cfg: ModelConfig,
    p: dict,
    tokens_BT: jax.Array,
    slot: jax.Array,
    pad_B: jax.Array,
    cache: Cache,
) -> tuple[jax.Array, Cache]:
    """Run tokens at cache slots [slot, slot + T): (last position's logits (B, V), cache)."""
    ks, vs = cache
    S = ks[0].shape[1]
    B, T = tokens_BT.shape
    slots_T = slot + jnp.arange(T)
    pos_BT = jnp.maximum(slots_T[None, :] - pad_B[:, None], 0)  # padding sits at position 0
    cos_SK2, sin_SK2 = rope_tables(S, cfg.head_dim, cfg.rope_theta)
    cos_BTK2, sin_BTK2 = cos_SK2[pos_BT], sin_SK2[pos_BT]
    s_S = jnp.arange(S)
    mask_BTS = (s_S[None, None, :] <= slots_T[None, :, None]) & (
        s_S[None, None, :] >= pad_B[:, None, None]
    )
    x_BTD = jnp.take(p["embed"], tokens_BT, axis=0)
    new_k, new_v = [], []
    for i, layer in enumerate(p["layers"]):
        a = layer["attn"]
        h_BTD = _rms(layer["norm_attn"]["scale"], x_BTD, cfg)
        q_BTHK = _rope(jnp.einsum("BTD,DHK->BTHK", h_BTD, a["wq"]), cos_BTK2, sin_BTK2)
        k_BTGK = _rope(jnp.einsum("BTD,DGK->BTGK", h_BTD, a["wk"]), cos_BTK2, sin_BTK2)
        v_BTGK = jnp.einsum("BTD,DGK->BTGK", h_BTD, a["wv"])
        k_BSGK = jax.lax.dynamic_update_slice(ks[i], k_BTGK.astype(ks[i].dtype), (0, slot, 0, 0))
        v_BSGK = jax.lax.dynamic_update_slice(vs[i], v_BTGK.astype(vs[i].dtype), (0, slot, 0, 0))
        new_k.append(k_BSGK)
        new_v.append(v_BSGK)
        o_BTHK = _attend(q_BTHK, k_BSGK, v_BSGK, mask_BTS)
        x_BTD = x_BTD + jnp.einsum("BTHK,HKD->BTD", o_BTHK, a["wo"])
        h_BTD = _rms(layer["norm_mlp"]["scale"], x_BTD, cfg)
        x_BTD = x_BTD + Mlp(cfg).apply({"params": layer["mlp"]}, h_BTD)
    x_BD = _rms(p["norm_out"]["scale"], x_BTD[:, -1:], cfg)[:, 0]
    w_DV = p["embed"].T if cfg.tied_embeddings else p["unembed"]
    out = jnp.dtype(cfg.logits_dtype or cfg.dtype)
    logits_BV = jnp.einsum("BD,DV->BV", x_BD, w_DV, preferred_element_type=out)
    return logits_BV, (tuple(new_k), tuple(new_v))


def init_cache(cfg: ModelConfig, B: int, S: int) -> Cache:
    """Zeroed keys and values, (B, S, G, K) per layer, in the compute dtype."""
    shape = (B, S, cfg.kv_heads, cfg.head_dim)
    z = tuple(jnp.zeros(shape, jnp.dtype(cfg.dtype)) for _ in range(cfg.n_layers))
    return z, z


@partial(jax.jit, static_argnames=("cfg", "S"))
def prefill(
    cfg: ModelConfig, params: dict, tokens_BP: jax.Array, pad_B: jax.Array, S: int
) -> tuple[jax.Array, Cache]:
    """Left-padded prompts (B, P) (row b has pad_B[b] padding tokens first) into a fresh
    cache of S slots: (next-token logits (B, V), cache)."""
    p = _compute_params(cfg, params)
    return _forward_cached(cfg, p, tokens_BP, jnp.int32(0), pad_B, init_cache(cfg, *pad_B.shape, S))


@partial(jax.jit, static_argnames=("cfg",))
def decode_step(
    cfg: ModelConfig,
    params: dict,
    token_B: jax.Array,
    slot: jax.Array,
    pad_B: jax.Array,
    cache: Cache,
) -> tuple[jax.Array, Cache]:
    """One token per row at cache slot `slot`: (next-token logits (B, V), cache)."""
    p = _compute_params(cfg, params)
    return _forward_cached(cfg, p, token_B[:, None], slot, pad_B, cache)


def _emit(state: dict, tok_B: jax.Array, stop_mask_V: jax.Array, stop_NM: jax.Array) -> dict:
    """Append a token to every live row, then mark the rows it stops."""
    M = stop_NM.shape[1]
    done_B, i = state["done"], state["i"]
    tok_B = jnp.where(done_B, 0, tok_B).astype(jnp.int32)
    out = jax.lax.dynamic_update_slice(state["out"], tok_B[:, None], (0, M - 1 + i))
    win_BM = jax.lax.dynamic_slice(out, (0, i), (out.shape[0], M))  # the last M tokens
    hit_BN = ((stop_NM[None] == -1) | (stop_NM[None] == win_BM[:, None])).all(-1)
    stopped_B = stop_mask_V[tok_B] | hit_BN.any(-1)
    return state | {
        "out": out,
        "i": i + 1,
        "length": state["length"] + ~done_B,
        "done": done_B | stopped_B,
        "last": tok_B,
    }


@partial(jax.jit, static_argnames=("cfg", "C"))
def _start(
    cfg: ModelConfig,
    params: dict,
    tokens_BP: jax.Array,
    pad_B: jax.Array,
    live_B: jax.Array,
    stop_mask_V: jax.Array,
    stop_NM: jax.Array,
    C: int,
) -> tuple[dict, Cache]:
    """Prefill into a cache with room for C new tokens, then the first new token of every
    live row: (state, cache)."""
    P = tokens_BP.shape[1]
    B, M = tokens_BP.shape[0], stop_NM.shape[1]
    logits_BV, cache = prefill(cfg, params, tokens_BP, pad_B, P + C)
    state = {
        "out": jnp.full((B, M - 1 + C), -2, jnp.int32),  # -2: before the first new token
        "i": jnp.int32(0),
        "length": jnp.zeros(B, jnp.int32),
        "done": ~live_B,
        "last": jnp.zeros(B, jnp.int32),
    }
    return _emit(state, jnp.argmax(logits_BV, -1), stop_mask_V, stop_NM), cache


@partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def _continue(
    cfg: ModelConfig,
    params: dict,
    state: dict,
    cache: Cache,
    P: int,
    pad_B: jax.Array,
    stop_mask_V: jax.Array,
    stop_NM: jax.Array,
    limit: jax.Array,
) -> tuple[dict, Cache]:
    """Decode until `limit` tokens a row or every row is done."""
    p = _compute_params(cfg, params)

    def cond(carry):
        state, _ = carry
        return (state["i"] < limit) & ~state["done"].all()

    def body(carry):
        state, cache = carry
        slot = P + state["i"] - 1  # the last token's slot
        logits_BV, cache = _forward_cached(cfg, p, state["last"][:, None], slot, pad_B, cache)
        return _emit(state, jnp.argmax(logits_BV, -1), stop_mask_V, stop_NM), cache

    return jax.lax.while_loop(cond, body, (state, cache))


def _stop_array(stop_ids: Sequence[Sequence[int] | int]) -> np.ndarray:
    """Stop sequences as rows of one length, left-padded with -1 (matches anything); rows
    and length are rounded up to multiples of 4 (rows of -3 never match), so a different
    set of stops rarely means a new compilation."""
    seqs = [[s] if isinstance(s, int | np.integer) else list(s) for s in stop_ids]
    seqs = [s for s in seqs if s]
    M = -(-max([len(s) for s in seqs], default=1) // 4) * 4
    arr = np.full((max(4, -(-len(seqs) // 4) * 4), M), -3, np.int32)
    for r, s in enumerate(seqs):
        arr[r] = -1
        arr[r, M - len(s) :] = s
    return arr


def _prompts(cfg: ModelConfig, prompts: list[list[int]], N: int) -> list[list[int]]:
    """Check the lengths; keep the last seq_len - N tokens of a longer prompt."""
    if not 1 <= N < cfg.seq_len:
        raise CodemixError(
            f"max_new_tokens = {N}: must be at least 1 and less than the model's context "
            f"of {cfg.seq_len} tokens (the prompt needs room)"
        )
    if any(len(p) == 0 for p in prompts):
        raise CodemixError("an empty prompt: every prompt needs at least one token")
    return [list(p)[-(cfg.seq_len - N) :] for p in prompts]


def _run(
    cfg: ModelConfig,
    params: dict,
    prompts: list[list[int]],
    N: int,
    stop_ids: Sequence[Sequence[int] | int],
    stop_mask_V: np.ndarray | None = None,
    host_stop: Callable[[list[int]], bool] | None = None,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "generating",
) -> list[list[int]]:
    """Generated tokens of every prompt (with whatever stop ended them), in prompt order;
    prompts are batched in buckets of similar length. A progress display (`progress`) shows
    for jobs of more than a few batches."""
    prompts = _prompts(cfg, prompts, N)
    params = jax.device_put(params)  # once, not at every call of a jitted piece
    C = max(_MIN_ROOM, 1 << (N - 1).bit_length())  # cache room: N is a runtime limit below it
    stop_NM = jnp.asarray(_stop_array(stop_ids))
    mask = np.zeros(cfg.vocab_size, bool) if stop_mask_V is None else stop_mask_V
    mask_V = jnp.asarray(mask)
    order = sorted(range(len(prompts)), key=lambda r: len(prompts[r]))
    results: list[list[int]] = [[] for _ in prompts]
    B = min(batch_size, 1 << max(0, len(prompts) - 1).bit_length())  # one B for all batches
    long_job = progress and len(prompts) > 2 * B  # a few batches go by without a display
    with Progress(len(prompts), 0, desc, long_job, unit="prompt") as bar:
        for first in range(0, len(order), B):
            rows = order[first : first + B]
            longest = max(len(prompts[r]) for r in rows)
            P = min(max(_MIN_PROMPT, 1 << (longest - 1).bit_length()), cfg.seq_len - N)
            tokens_BP = np.zeros((B, P), np.int32)
            pad_B = np.full(B, P - 1, np.int32)
            for b, r in enumerate(rows):
                tokens_BP[b, P - len(prompts[r]) :] = prompts[r]
                pad_B[b] = P - len(prompts[r])
            live_B = np.arange(B) < len(rows)
            args = (jnp.asarray(pad_B), mask_V, stop_NM)
            state, cache = _start(
                cfg, params, jnp.asarray(tokens_BP), args[0], jnp.asarray(live_B), *args[1:], C
            )
            while True:
                i, done = int(state["i"]), np.asarray(state["done"])
                if i >= N or done.all():
                    break
                if host_stop is not None:
                    out, length = np.asarray(state["out"]), np.asarray(state["length"])
                    M = stop_NM.shape[1]
                    hit = [
                        not d and host_stop(out[b, M - 1 : M - 1 + length[b]].tolist())
                        for b, d in enumerate(done)
                    ]
                    if any(hit):
                        state["done"] = jnp.asarray(done | np.array(hit))
                        continue
                limit = N if host_stop is None else min(N, i + _CHUNK)
                state, cache = _continue(cfg, params, state, cache, P, *args, jnp.int32(limit))
            out, length = np.asarray(state["out"]), np.asarray(state["length"])
            M = stop_NM.shape[1]
            for b, r in enumerate(rows):
                results[r] = out[b, M - 1 : M - 1 + length[b]].tolist()
            bar.update(len(rows))
    return results


def _strip_stop(tokens: list[int], stop_ids: Sequence[Sequence[int] | int]) -> list[int]:
    for s in stop_ids:
        s = [s] if isinstance(s, int | np.integer) else list(s)
        if s and tokens[-len(s) :] == s:
            return tokens[: -len(s)]
    return tokens


def greedy(
    cfg: ModelConfig,
    params: dict,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop_ids: Sequence[Sequence[int] | int] = (),
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy continuations of token-id prompts under a KV cache. A row stops after any of
    `stop_ids` (token ids or sequences of them; not included in what is returned) or after
    `max_new_tokens`. A prompt longer than seq_len - max_new_tokens keeps its end."""
    out = _run(
        cfg, params, prompts, max_new_tokens, stop_ids, batch_size=batch_size, progress=progress
    )
    return [_strip_stop(t, stop_ids) for t in out]


@partial(jax.jit, static_argnames=("cfg",))
def _reference_next(
    cfg: ModelConfig, params: dict, tokens_BW: jax.Array, last_B: jax.Array
) -> jax.Array:
    """The full forward's greedy token after position last_B[b] of every row."""
    logits_BWV = forward(params, tokens_BW, cfg)
    return jnp.argmax(jnp.take_along_axis(logits_BWV, last_B[:, None, None], axis=1)[:, 0], -1)


def greedy_reference(
    cfg: ModelConfig,
    params: dict,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop_ids: Sequence[Sequence[int] | int] = (),
) -> list[list[int]]:
    """`greedy` without a cache: the model's full forward over the whole sequence at every
    step (rows right-padded, which a causal model never sees). The yardstick for tests."""
    N = max_new_tokens
    prompts = _prompts(cfg, prompts, N)
    W = min(cfg.seq_len, -(-(max(map(len, prompts)) + N) // 64) * 64)  # one width per call
    params = jax.device_put(params)
    seqs = [list(p) for p in prompts]
    done = [False] * len(seqs)
    stops = [[s] if isinstance(s, int | np.integer) else list(s) for s in stop_ids]
    for _ in range(N):
        if all(done):
            break
        tokens_BW = np.zeros((len(seqs), W), np.int32)
        for b, s in enumerate(seqs):
            tokens_BW[b, : len(s)] = s
        last_B = jnp.asarray([len(s) - 1 for s in seqs], jnp.int32)
        next_B = np.asarray(_reference_next(cfg, params, jnp.asarray(tokens_BW), last_B))
        for b, s in enumerate(seqs):
            if done[b]:
                continue
            s.append(int(next_B[b]))
            new = s[len(prompts[b]) :]
            done[b] = any(x and new[-len(x) :] == x for x in stops)
    return [_strip_stop(s[len(p) :], stop_ids) for s, p in zip(seqs, prompts, strict=True)]


# ---- text --------------------------------------------------------------------------------

_VOCAB_TEXT: dict[str, list[str]] = {}


def decode(tok: Any, ids: Sequence[int]) -> str:
    """Text of token ids under a store's tokenizer (bytes or a `tokenizers` one)."""
    if getattr(tok, "kind", None) == "bytes":
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
    return tok.tok.decode(list(map(int, ids)), skip_special_tokens=False)


def _vocab_text(tok: Any, V: int) -> list[str]:
    key = f"{tok.hash}/{V}"
    if key not in _VOCAB_TEXT:
        if getattr(tok, "kind", None) == "bytes":
            _VOCAB_TEXT[key] = [bytes([i]).decode("latin-1") if i < 256 else "" for i in range(V)]
        else:
            _VOCAB_TEXT[key] = tok.tok.decode_batch([[i] for i in range(V)], False)
    return _VOCAB_TEXT[key]


def _cut(text: str, stop: Sequence[str]) -> str:
    at = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:at]


def generate_text(
    run: Any,
    prompts: list[str],
    max_new_tokens: int = 256,
    stop: Sequence[str] = ("\n\n",),
    *,
    batch_size: int = 32,
    progress: bool = True,
    stats: dict | None = None,
    desc: str = "generating",
) -> list[str]:
    """Greedy continuations of text prompts by a loaded run (`checkpoint.load_run`), each
    cut before the first of `stop` and at the end-of-document token. An empty prompt starts
    from the end-of-document token, as every training document does. `stats`, when given,
    receives the tokens generated, the seconds it took (compilation included) and how many
    prompts lost their beginning to fit the context."""
    tok, cfg = run.tokenizer, run.cfg
    eos = int(tok.eos_id)
    ids = [[eos] if len(x) == 0 else x.tolist() for x in tok.encode_batch(list(prompts))]
    vocab = _vocab_text(tok, cfg.vocab_size)
    mask_V = np.array([any(s in t for s in stop) for t in vocab], bool) if stop else None
    mask_V = np.zeros(cfg.vocab_size, bool) if mask_V is None else mask_V
    mask_V[eos] = True

    def host_stop(tokens: list[int]) -> bool:
        return any(s in decode(tok, tokens) for s in stop)

    t0 = time.perf_counter()
    check = host_stop if stop else None
    out = _run(
        cfg, run.params, ids, max_new_tokens, (eos,), mask_V, check, batch_size, progress, desc
    )
    if stats is not None:
        cut = sum(len(x) > cfg.seq_len - max_new_tokens for x in ids)
        stats["tokens"] = stats.get("tokens", 0) + sum(len(t) for t in out)
        stats["seconds"] = stats.get("seconds", 0.0) + time.perf_counter() - t0
        stats["truncated_prompts"] = stats.get("truncated_prompts", 0) + cut
    texts = []
    for t in out:
        t = t[: t.index(eos)] if eos in t else t
        texts.append(_cut(decode(tok, t), stop))
    return texts
