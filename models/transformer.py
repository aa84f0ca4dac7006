"""Decoder-only transformer in flax.linen: pre-norm RMSNorm, rotary positions, SwiGLU, no biases.

Parameters are a plain pytree stored in float32; the blocks are stacked with `nn.scan`, so
each block parameter carries a leading layer axis L (one compiled layer, whatever the depth):

    embed                          (V, D)
    blocks/norm_attn/scale         (L, D)
    blocks/attn/wq                 (L, D, H, K)
    blocks/attn/wk, wv             (L, D, G, K)
    blocks/attn/wo                 (L, H, K, D)
    blocks/norm_mlp/scale          (L, D)
    blocks/mlp/w_gate, w_up        (L, D, F)
    blocks/mlp/w_down              (L, F, D)
    norm_out/scale                 (D,)
    unembed                        (D, V)   untied embeddings only

Letters: B batch, T time, S key time, D width, H query heads, G key/value heads, K head dim,
F MLP width, V vocabulary, L layers.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from codemix.core.errors import CodemixError
from codemix.models import fused_loss
from codemix.models.config import ModelConfig

__all__ = [
    "ModelConfig",
    "Transformer",
    "forward",
    "init_params",
    "loss_fn",
    "reference_attention",
    "token_losses",
]

_REMAT_POLICY = {"full": None, "dots_saveable": jax.checkpoint_policies.dots_saveable}


def _init(cfg: ModelConfig, out: bool = False) -> nn.initializers.Initializer:
    # GPT-2: projections writing into the residual stream are scaled by 1/sqrt(2L) so the
    # stream's variance at init does not grow with depth.
    return nn.initializers.normal(0.02 / math.sqrt(2 * cfg.n_layers) if out else 0.02)


def rope_tables(T: int, K: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin of the rotation angles, each (T, K/2), float32."""
    inv_freq_K2 = theta ** (-jnp.arange(0, K, 2, dtype=jnp.float32) / K)
    angle_TK2 = jnp.arange(T, dtype=jnp.float32)[:, None] * inv_freq_K2[None, :]
    return jnp.cos(angle_TK2), jnp.sin(angle_TK2)


def apply_rope(x_BTHK: jax.Array, cos_TK2: jax.Array, sin_TK2: jax.Array) -> jax.Array:
    """Rotate channel pairs (i, i + K/2) by position-dependent angles (in float32)."""
    x1, x2 = jnp.split(x_BTHK.astype(jnp.float32), 2, axis=-1)
    c, s = cos_TK2[None, :, None, :], sin_TK2[None, :, None, :]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x_BTHK.dtype)


def reference_attention(q_BTHK: jax.Array, k_BSGK: jax.Array, v_BSGK: jax.Array) -> jax.Array:
    """Causal attention as an explicit softmax; the yardstick for the fused paths."""
    H, G, K = q_BTHK.shape[2], k_BSGK.shape[2], q_BTHK.shape[3]
    # Query head h reads key/value head h // (H/G), as jax.nn.dot_product_attention does.
    k_BSHK = jnp.repeat(k_BSGK, H // G, axis=2)
    v_BSHK = jnp.repeat(v_BSGK, H // G, axis=2)
    s_BHTS = jnp.einsum("BTHK,BSHK->BHTS", q_BTHK, k_BSHK, preferred_element_type=jnp.float32)
    s_BHTS = s_BHTS / math.sqrt(K)
    T, S = s_BHTS.shape[-2:]
    causal_TS = jnp.tril(jnp.ones((T, S), dtype=bool))
    s_BHTS = jnp.where(causal_TS, s_BHTS, jnp.finfo(jnp.float32).min)
    p_BHTS = jax.nn.softmax(s_BHTS, axis=-1).astype(v_BSHK.dtype)
    return jnp.einsum("BHTS,BSHK->BTHK", p_BHTS, v_BSHK)


def attention(
    q_BTHK: jax.Array, k_BSGK: jax.Array, v_BSGK: jax.Array, impl: str | None
) -> jax.Array:
    """Causal attention through the implementation `impl` (see ModelConfig)."""
    if impl == "reference":
        return reference_attention(q_BTHK, k_BSGK, v_BSGK)
    if impl == "cudnn" and jax.default_backend() != "gpu":
        impl = "xla"  # the same config must run on CPU and TPU hosts
    return jax.nn.dot_product_attention(q_BTHK, k_BSGK, v_BSGK, is_causal=True, implementation=impl)


class Attention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD: jax.Array, cos_TK2: jax.Array, sin_TK2: jax.Array) -> jax.Array:
        cfg = self.cfg
        D, H, G, K = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.head_dim
        dt = jnp.dtype(cfg.dtype)
        wq_DHK = self.param("wq", _init(cfg), (D, H, K), jnp.float32).astype(dt)
        wk_DGK = self.param("wk", _init(cfg), (D, G, K), jnp.float32).astype(dt)
        wv_DGK = self.param("wv", _init(cfg), (D, G, K), jnp.float32).astype(dt)
        wo_HKD = self.param("wo", _init(cfg, out=True), (H, K, D), jnp.float32).astype(dt)
        q_BTHK = jnp.einsum("BTD,DHK->BTHK", x_BTD, wq_DHK)
        k_BTGK = jnp.einsum("BTD,DGK->BTGK", x_BTD, wk_DGK)
        v_BTGK = jnp.einsum("BTD,DGK->BTGK", x_BTD, wv_DGK)
        q_BTHK = apply_rope(q_BTHK, cos_TK2, sin_TK2)
        k_BTGK = apply_rope(k_BTGK, cos_TK2, sin_TK2)
        o_BTHK = attention(q_BTHK, k_BTGK, v_BTGK, cfg.attention_impl)
        return jnp.einsum("BTHK,HKD->BTD", o_BTHK, wo_HKD)


class Mlp(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        cfg = self.cfg
        D, F = cfg.d_model, cfg.d_ff
        dt = jnp.dtype(cfg.dtype)
        w_gate_DF = self.param("w_gate", _init(cfg), (D, F), jnp.float32).astype(dt)
        w_up_DF = self.param("w_up", _init(cfg), (D, F), jnp.float32).astype(dt)
        w_down_FD = self.param("w_down", _init(cfg, out=True), (F, D), jnp.float32).astype(dt)
        h_BTF = jax.nn.silu(x_BTD @ w_gate_DF) * (x_BTD @ w_up_DF)
        return h_BTF @ w_down_FD


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD: jax.Array, cos_TK2: jax.Array, sin_TK2: jax.Array):
        dt = jnp.dtype(self.cfg.dtype)
        h_BTD = nn.RMSNorm(dtype=dt, name="norm_attn")(x_BTD)
        x_BTD = x_BTD + Attention(self.cfg, name="attn")(h_BTD, cos_TK2, sin_TK2)
        h_BTD = nn.RMSNorm(dtype=dt, name="norm_mlp")(x_BTD)
        x_BTD = x_BTD + Mlp(self.cfg, name="mlp")(h_BTD)
        return x_BTD, None  # (carry, per-layer output) for nn.scan


class Transformer(nn.Module):
    """tokens (B, T) int -> next-token logits (B, T, V), by default in the compute dtype."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BT: jax.Array, hidden: bool = False):
        """Logits (B, T, V); with `hidden`, the final hidden states (B, T, D) and the output
        projection (D, V), both in the compute dtype, for a loss taken in chunks."""
        cfg = self.cfg
        V, D = cfg.vocab_size, cfg.d_model
        T = tokens_BT.shape[1]
        if T > cfg.seq_len:
            raise CodemixError(f"sequence of {T} tokens is longer than seq_len={cfg.seq_len}")
        dt = jnp.dtype(cfg.dtype)
        embed_VD = self.param("embed", _init(cfg), (V, D), jnp.float32)
        x_BTD = jnp.take(embed_VD, tokens_BT, axis=0).astype(dt)
        cos_TK2, sin_TK2 = rope_tables(T, cfg.head_dim, cfg.rope_theta)

        block = Block
        if cfg.remat != "none":
            # prevent_cse=False is safe (and faster) inside scan.
            block = nn.remat(Block, prevent_cse=False, policy=_REMAT_POLICY[cfg.remat])
        blocks = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast),
            length=cfg.n_layers,
            unroll=min(cfg.scan_unroll, cfg.n_layers),
        )(cfg, name="blocks")
        x_BTD, _ = blocks(x_BTD, cos_TK2, sin_TK2)
        x_BTD = nn.RMSNorm(dtype=dt, name="norm_out")(x_BTD)

        if cfg.tied_embeddings:
            w_DV = embed_VD.T
        else:
            w_DV = self.param("unembed", _init(cfg), (D, V), jnp.float32)
        # The matmul accumulates in float32 whatever it writes; bfloat16 logits halve the bytes
        # that the softmax reads and writes, which upcasts them (see token_losses).
        if hidden:
            return x_BTD, w_DV.astype(dt)
        return _project(x_BTD, w_DV.astype(dt), cfg)


def _project(x_BTD: jax.Array, w_DV: jax.Array, cfg: ModelConfig) -> jax.Array:
    out = jnp.dtype(cfg.logits_dtype or cfg.dtype)
    return jnp.einsum("BTD,DV->BTV", x_BTD, w_DV, preferred_element_type=out)


def init_params(cfg: ModelConfig, rng: jax.Array) -> dict:
    """Fresh float32 parameters (see the module docstring for the tree)."""
    return Transformer(cfg).init(rng, jnp.zeros((1, 1), jnp.int32))["params"]


def forward(params: dict, tokens_BT: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Logits (B, T, V) in `cfg.logits_dtype` (default: the compute dtype)."""
    return Transformer(cfg).apply({"params": params}, tokens_BT)


def _chunks(x_BTD: jax.Array, labels_BT: jax.Array, C: int):
    """(K, B, C, D) hidden states, (K, B, C) labels and (K, B, C) weights (0 on padding)."""
    B, T = labels_BT.shape
    pad = -T % C
    ok_BT = jnp.ones((B, T), jnp.float32)
    if pad:  # padded positions carry weight 0
        x_BTD = jnp.pad(x_BTD, ((0, 0), (0, pad), (0, 0)))
        labels_BT = jnp.pad(labels_BT, ((0, 0), (0, pad)))
        ok_BT = jnp.pad(ok_BT, ((0, 0), (0, pad)))
    K = (T + pad) // C
    return (
        x_BTD.reshape(B, K, C, -1).swapaxes(0, 1),
        labels_BT.reshape(B, K, C).swapaxes(0, 1),
        ok_BT.reshape(B, K, C).swapaxes(0, 1),
    )


def token_losses(params: dict, tokens_BT1: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Next-token cross-entropy (B, T) in float32 for B sequences of T + 1 tokens.

    With `cfg.chunk` positions at a time, the logits of one chunk exist at once, forward
    and backward (each chunk's are recomputed for its gradient): the same loss without the
    (B, T, V) float32 array that a large vocabulary makes the largest in the step. Training
    takes `loss_fn`, which does not recompute."""
    C, T = cfg.chunk, tokens_BT1.shape[1] - 1
    if not C or C >= T:
        return token_losses_reference(params, tokens_BT1, cfg)
    x_BTD, w_DV = Transformer(cfg).apply({"params": params}, tokens_BT1[:, :-1], hidden=True)
    x_KBCD, labels_KBC, _ = _chunks(x_BTD, tokens_BT1[:, 1:], C)

    @jax.checkpoint
    def chunk(x_BCD, labels_BC):
        logits_BCV = _project(x_BCD, w_DV, cfg).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits_BCV, labels_BC)

    losses_KBC = jax.lax.map(lambda a: chunk(*a), (x_KBCD, labels_KBC))
    B, K = x_BTD.shape[0], x_KBCD.shape[0]
    return losses_KBC.swapaxes(0, 1).reshape(B, K * C)[:, :T]


def token_losses_reference(params: dict, tokens_BT1: jax.Array, cfg: ModelConfig) -> jax.Array:
    """The whole (B, T, V) logits at once: the simple path, and the fast one for small
    vocabularies."""
    logits_BTV = forward(params, tokens_BT1[:, :-1], cfg).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BTV, tokens_BT1[:, 1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def chunked_mean_loss(x_BTD, w_DV, labels_BT, C: int, logits_dtype: str) -> jax.Array:
    """Mean cross-entropy of the projection x_BTD @ w_DV, C positions at a time.

    The gradients are taken in the same pass as the loss (the softmax minus the one-hot
    labels is known as soon as a chunk's logits are), so unlike `jax.checkpoint` over
    chunks nothing is recomputed and no (B, T, V) array exists, forward or backward."""
    return _chunked_mean_loss_fwd(x_BTD, w_DV, labels_BT, C, logits_dtype)[0]


def _chunked_mean_loss_fwd(x_BTD, w_DV, labels_BT, C, logits_dtype):
    B, T = labels_BT.shape
    V = w_DV.shape[1]
    x_KBCD, labels_KBC, ok_KBC = _chunks(x_BTD, labels_BT, C)

    def body(dw_DV, chunk):
        x_BCD, labels_BC, ok_BC = chunk
        logits_BCV = jnp.einsum(
            "BCD,DV->BCV", x_BCD, w_DV, preferred_element_type=jnp.dtype(logits_dtype)
        ).astype(jnp.float32)
        lse_BC = jax.nn.logsumexp(logits_BCV, axis=-1)
        picked_BC = jnp.take_along_axis(logits_BCV, labels_BC[..., None], axis=-1)[..., 0]
        # d loss / d logits, rounded to the logits' dtype as the whole-logits backward does
        hot_BCV = labels_BC[..., None] == jnp.arange(V)
        d_BCV = (jnp.exp(logits_BCV - lse_BC[..., None]) - hot_BCV) * ok_BC[..., None]
        d_BCV = d_BCV.astype(logits_dtype)
        dx_BCD = jnp.einsum("BCV,DV->BCD", d_BCV, w_DV, preferred_element_type=jnp.float32)
        dw_DV = dw_DV + jnp.einsum("BCD,BCV->DV", x_BCD, d_BCV, preferred_element_type=jnp.float32)
        return dw_DV, (((lse_BC - picked_BC) * ok_BC).sum(), dx_BCD.astype(x_BTD.dtype))

    dw_DV, (loss_K, dx_KBCD) = jax.lax.scan(
        body, jnp.zeros(w_DV.shape, jnp.float32), (x_KBCD, labels_KBC, ok_KBC)
    )
    dx_BTD = dx_KBCD.swapaxes(0, 1).reshape(B, -1, x_BTD.shape[-1])[:, :T]
    return loss_K.sum() / (B * T), (dx_BTD, (dw_DV / (B * T)).astype(w_DV.dtype))


def _chunked_mean_loss_bwd(C, logits_dtype, res, g):
    dx_BTD, dw_DV = res
    B, T = dx_BTD.shape[:2]
    gx_BTD = (dx_BTD.astype(jnp.float32) * (g / (B * T))).astype(dx_BTD.dtype)
    gw_DV = (dw_DV.astype(jnp.float32) * g).astype(dw_DV.dtype)
    return gx_BTD, gw_DV, np.zeros((B, T), jax.dtypes.float0)  # labels: no gradient


chunked_mean_loss.defvjp(_chunked_mean_loss_fwd, _chunked_mean_loss_bwd)


def loss_fn(params: dict, tokens_BT1: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Mean next-token cross-entropy over a batch of B sequences of T + 1 tokens (the
    training loss; with `cfg.chunk`, `chunked_mean_loss`, or on GPUs the Pallas kernels of
    `fused_loss` as `cfg.loss_impl` says)."""
    C, T = cfg.chunk, tokens_BT1.shape[1] - 1
    if not C:
        return token_losses_reference(params, tokens_BT1, cfg).mean()
    C = min(C, T)
    x_BTD, w_DV = Transformer(cfg).apply({"params": params}, tokens_BT1[:, :-1], hidden=True)
    logits_dtype = cfg.logits_dtype or cfg.dtype
    B, _, D = x_BTD.shape
    wide = cfg.loss_impl == "pallas"
    if cfg.loss_impl != "xla" and fused_loss.usable(B * T, D, cfg.vocab_size, wide):
        return fused_loss.fused_mean_loss(
            x_BTD, w_DV, tokens_BT1[:, 1:], logits_dtype, fused_loss.INTERPRET
        )
    return chunked_mean_loss(x_BTD, w_DV, tokens_BT1[:, 1:], C, logits_dtype)
