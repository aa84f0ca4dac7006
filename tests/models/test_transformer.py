import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codemix.core.errors import CodemixError
from codemix.models.transformer import (
    ModelConfig,
    forward,
    init_params,
    loss_fn,
    reference_attention,
    token_losses,
)

V, T = 64, 16
CFG = ModelConfig(
    vocab_size=V,
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_ff=64,
    seq_len=T,
    dtype="float32",
)


# Compiled once per config and shared: compilation dominates the run time of these tests.
_init = jax.jit(init_params, static_argnums=0)
_forward = jax.jit(forward, static_argnums=2)
_grad = jax.jit(jax.value_and_grad(loss_fn), static_argnums=2)


def _loss(params, tokens, cfg):
    return _grad(params, tokens, cfg)[0]  # one compiled program serves loss and grads


def _tokens(seed: int, B: int = 2, T: int = T + 1) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (B, T), 0, V)


@pytest.fixture(scope="module", autouse=True)
def _full_precision_matmuls():
    # GPUs and TPUs run float32 matmuls in TF32/bf16 passes by default; the comparisons
    # below need true float32 there (on CPU this changes nothing).
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="module")
def params():
    return _init(CFG, jax.random.key(0))


@pytest.mark.parametrize(
    "dtype, logits_dtype, want",
    [
        ("bfloat16", None, jnp.bfloat16),
        ("bfloat16", "float32", jnp.float32),
        ("float32", None, jnp.float32),
    ],
)
def test_logits_shape_and_dtype(params, dtype, logits_dtype, want):
    cfg = dataclasses.replace(CFG, dtype=dtype, logits_dtype=logits_dtype)
    logits = _forward(params, _tokens(1, B=3, T=T), cfg)
    assert logits.shape == (3, T, V)
    assert logits.dtype == want
    assert bool(jnp.isfinite(logits).all())


def test_bfloat16_logits_give_nearly_the_float32_loss(params):
    toks = _tokens(2, B=3, T=T)
    bf16 = dataclasses.replace(CFG, dtype="bfloat16")
    l16 = token_losses(params, toks, bf16)
    l32 = token_losses(params, toks, dataclasses.replace(bf16, logits_dtype="float32"))
    assert l16.dtype == jnp.float32
    assert float(jnp.abs(l16 - l32).max()) < 0.05


def test_param_tree_is_float32_with_a_layer_axis(params):
    blocks = params["blocks"]
    assert blocks["attn"]["wq"].shape == (2, 32, 4, 8)
    assert blocks["attn"]["wk"].shape == (2, 32, 2, 8)
    assert blocks["mlp"]["w_down"].shape == (2, 64, 32)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def test_layers_get_different_initial_weights(params):
    wq = params["blocks"]["attn"]["wq"]
    assert not np.allclose(wq[0], wq[1])


def test_output_projections_are_scaled_down(params):
    blocks = params["blocks"]
    expected = 0.02 / math.sqrt(2 * CFG.n_layers)
    assert float(jnp.std(blocks["attn"]["wq"])) == pytest.approx(0.02, rel=0.1)
    assert float(jnp.std(blocks["attn"]["wo"])) == pytest.approx(expected, rel=0.1)
    assert float(jnp.std(blocks["mlp"]["w_down"])) == pytest.approx(expected, rel=0.1)
    assert float(jnp.std(params["embed"])) == pytest.approx(0.02, rel=0.1)


def test_tied_and_untied_param_trees():
    tied = jax.eval_shape(lambda r: init_params(CFG, r), jax.random.key(0))
    untied_cfg = dataclasses.replace(CFG, tied_embeddings=False)
    untied = jax.eval_shape(lambda r: init_params(untied_cfg, r), jax.random.key(0))
    assert "unembed" not in tied
    assert untied["unembed"].shape == (32, V)
    assert set(untied) - set(tied) == {"unembed"}


def test_causal_masking(params):
    x = _tokens(2, T=T)
    y = x.at[:, 10].set((x[:, 10] + 1) % V)
    a, b = _forward(params, x, CFG), _forward(params, y, CFG)
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not np.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("impl", [None, "xla"])
def test_fused_attention_matches_reference(params, impl):
    x = _tokens(3, T=T)
    ref = _forward(params, x, dataclasses.replace(CFG, attention_impl="reference"))
    got = _forward(params, x, dataclasses.replace(CFG, attention_impl=impl))
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=2e-5)


def test_cudnn_attention_runs_on_any_backend(params):
    # cuDNN takes bf16/fp16 only; off GPU the same config falls back to XLA.
    cfg = dataclasses.replace(CFG, dtype="bfloat16")
    x = _tokens(3, T=T)
    ref = _forward(params, x, dataclasses.replace(cfg, attention_impl="reference"))
    got = _forward(params, x, dataclasses.replace(cfg, attention_impl="cudnn"))
    np.testing.assert_allclose(got, ref, atol=0.02 * float(jnp.abs(ref).max()))


def test_reference_attention_is_causal_softmax():
    q, k, v = (jax.random.normal(jax.random.key(i), (1, 5, 2, 4)) for i in range(3))
    out = reference_attention(q, k, v)
    # The first position can only attend to itself.
    np.testing.assert_allclose(out[:, 0], v[:, 0], atol=1e-6)
    s = np.einsum("hk,shk->hs", q[0, 4], k[0]) / 2.0
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(out[0, 4], np.einsum("hs,shk->hk", w, v[0]), atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
def test_remat_gives_same_loss_and_grads(params, remat):
    x = _tokens(4)
    loss0, g0 = _grad(params, x, CFG)
    loss1, g1 = _grad(params, x, dataclasses.replace(CFG, remat=remat))
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g1, g0)


@pytest.mark.parametrize("unroll", [2, 1000])
def test_unrolled_layers_give_same_loss_and_grads(params, unroll):
    x = _tokens(6)
    loss0, g0 = _grad(params, x, CFG)
    loss1, g1 = _grad(params, x, dataclasses.replace(CFG, scan_unroll=unroll))
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g1, g0)


@pytest.mark.parametrize(("chunk", "logits_dtype"), [(4, None), (5, None), (4, "bfloat16")])
def test_the_loss_in_chunks_is_the_whole_loss(params, chunk, logits_dtype):
    """Chunks that divide the sequence or not, in float32 or bfloat16 logits: the same
    per-token losses and gradients as the whole (B, T, V) logits."""
    x = _tokens(7, B=3)
    whole = dataclasses.replace(CFG, logits_dtype=logits_dtype)
    chunked = dataclasses.replace(whole, loss_chunk=chunk)
    np.testing.assert_allclose(
        token_losses(params, x, chunked), token_losses(params, x, whole), rtol=1e-6
    )
    loss0, g0 = _grad(params, x, whole)
    loss1, g1 = _grad(params, x, chunked)
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    # bfloat16 logits round the backward's products; summed chunk by chunk, they round apart
    tol = {"atol": 1e-6, "rtol": 1e-5} if logits_dtype is None else {"atol": 5e-4, "rtol": 1e-2}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), g1, g0)


def test_the_chunked_training_loss_scales_and_vmaps_like_the_whole(params):
    """The fused loss's backward takes the upstream cotangent (here 3) and works under the
    population's vmap."""
    x = _tokens(8, B=2)
    chunked = dataclasses.replace(CFG, loss_chunk=5)
    pair = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    xs = jnp.stack([x, x[::-1]])

    def grads(cfg):
        g = jax.vmap(jax.grad(lambda p, t: 3 * loss_fn(p, t, cfg)))
        return jax.jit(g)(pair, xs)

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
        grads(chunked),
        grads(CFG),
    )


def test_a_bad_loss_chunk_is_refused():
    with pytest.raises(CodemixError, match="loss_chunk must be an integer >= 0"):
        dataclasses.replace(CFG, loss_chunk=-1)


def test_token_losses(params):
    x = _tokens(5, B=3)
    losses = jax.jit(token_losses, static_argnums=2)(params, x, CFG)
    assert losses.shape == (3, T) and losses.dtype == jnp.float32
    np.testing.assert_allclose(losses.mean(), _loss(params, x, CFG), rtol=1e-6)
    # Untrained, the model is close to uniform over the vocabulary.
    assert abs(float(losses.mean()) - math.log(V)) < 0.2


def test_adamw_steps_reduce_loss(params):
    opt = optax.adamw(3e-3, weight_decay=0.1)
    state = opt.init(params)

    @jax.jit
    def update(grads, state, params):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    x = _tokens(6)
    losses = []
    for _ in range(8):
        loss, grads = _grad(params, x, CFG)
        params, state = update(grads, state, params)
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.5


def test_vmap_over_a_population_matches_each_member():
    P = 3
    members = [_init(CFG, jax.random.key(10 + i)) for i in range(P)]
    pop = jax.tree.map(lambda *a: jnp.stack(a), *members)
    x = _tokens(8)
    batched = jax.jit(jax.vmap(loss_fn, in_axes=(0, None, None)), static_argnums=2)(pop, x, CFG)
    assert batched.shape == (P,)
    for i in range(P):
        alone = _loss(members[i], x, CFG)
        np.testing.assert_allclose(batched[i], alone, rtol=1e-5)
    assert len(set(np.asarray(batched).tolist())) == P  # members differ


def test_longer_than_seq_len_raises(params):
    with pytest.raises(CodemixError, match="seq_len"):
        forward(params, _tokens(9, T=T + 1), CFG)


def test_bfloat16_logits_stay_close_on_a_trained_model(params):
    """Training sharpens the logits, where bf16's 8-bit mantissa could cost the most."""
    toks = (jnp.arange(4 * (T + 1)).reshape(4, T + 1) * 3 % 11).astype(jnp.int32)
    tx = optax.adam(1e-2)
    opt = tx.init(params)

    @jax.jit
    def step(p, opt):
        loss, g = jax.value_and_grad(lambda p: token_losses(p, toks, CFG).mean())(p)
        u, opt = tx.update(g, opt)
        return optax.apply_updates(p, u), opt, loss

    p = params
    for _ in range(150):
        p, opt, loss = step(p, opt)
    assert float(loss) < 0.1  # a confident model: the pattern is learnt
    bf16 = dataclasses.replace(CFG, dtype="bfloat16")
    l16 = token_losses(p, toks, bf16).mean()
    l32 = token_losses(p, toks, dataclasses.replace(bf16, logits_dtype="float32")).mean()
    assert float(jnp.abs(l16 - l32)) < 1e-4 + 0.05 * float(l32)  # measured: 8e-6 at 1.7e-3
