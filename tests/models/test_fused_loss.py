"""The Pallas loss kernels, run through the interpreter on CPU: the same loss and gradients
as the XLA path, alone, in the model, and under a population's vmap."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codemix.core.errors import CodemixError
from codemix.models import fused_loss
from codemix.models.transformer import ModelConfig, chunked_mean_loss, init_params, loss_fn

B, T, D, V = 2, 64, 128, 256


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setattr(fused_loss, "INTERPRET", True)


def _inputs(seed=0, dtype=jnp.bfloat16):
    kx, kw, ky = jax.random.split(jax.random.key(seed), 3)
    x_BTD = jax.random.normal(kx, (B, T, D)).astype(dtype)
    w_DV = (0.3 * jax.random.normal(kw, (D, V))).astype(dtype)
    return x_BTD, w_DV, jax.random.randint(ky, (B, T), 0, V)


def _value_and_grads(f, x_BTD, w_DV):
    return jax.jit(jax.value_and_grad(lambda x, w: 3 * f(x, w), argnums=(0, 1)))(x_BTD, w_DV)


@pytest.mark.parametrize(("dw_kernel", "split"), [(True, 1), (True, 2), (False, 1)])
@pytest.mark.parametrize(
    ("logits_dtype", "dtype"),
    [("bfloat16", jnp.bfloat16), ("float32", jnp.float32), ("float32", jnp.bfloat16)],
)
def test_the_kernels_give_the_xla_paths_loss_and_gradients(
    monkeypatch, dw_kernel, split, logits_dtype, dtype
):
    """Both ways of taking dw (a second kernel, its rows whole or split in two, or a matmul
    of the softmax), the softmax in bfloat16 or float32 (also against bfloat16 weights), and
    an upstream cotangent of 3. The kernels keep the logits in float32, so the XLA path
    they match is the one with float32 logits."""
    monkeypatch.setattr(fused_loss, "DW_KERNEL", dw_kernel)
    monkeypatch.setattr(fused_loss, "SPLIT", split)
    x_BTD, w_DV, y_BT = _inputs(dtype=dtype)
    loss0, (dx0, dw0) = _value_and_grads(
        lambda x, w: chunked_mean_loss(x, w, y_BT, 16, "float32"), x_BTD, w_DV
    )
    loss1, (dx1, dw1) = _value_and_grads(
        lambda x, w: fused_loss.fused_mean_loss(x, w, y_BT, logits_dtype, True), x_BTD, w_DV
    )
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    for a, b in ((dx1, dx0), (dw1, dw0)):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        # the kernels sum over V (and dw over rows) in other orders than the chunks do
        assert np.abs(a - b).max() <= 1e-2 * np.abs(b).max()


def test_the_kernels_tell_each_member_of_a_population_apart():
    x_BTD, w_DV, y_BT = _inputs(1)
    xs, ws, ys = jnp.stack([x_BTD, -x_BTD]), jnp.stack([w_DV, 2 * w_DV]), jnp.stack([y_BT, y_BT])

    def grads(f):
        return jax.jit(jax.vmap(jax.grad(f, argnums=(0, 1))))(xs, ws, ys)

    fused = grads(lambda x, w, y: fused_loss.fused_mean_loss(x, w, y, "bfloat16", True))
    xla = grads(lambda x, w, y: chunked_mean_loss(x, w, y, 32, "float32"))
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(xla), strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.abs(a - b).max() <= 1e-2 * np.abs(b).max()


def test_loss_impl_pallas_trains_the_model_as_xla_does():
    cfg = ModelConfig(
        vocab_size=V, d_model=D, n_layers=1, n_heads=2, d_ff=128, seq_len=T, dtype="float32"
    )
    params = init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (B, T + 1), 0, V)
    grad = jax.jit(jax.value_and_grad(loss_fn), static_argnums=2)
    loss0, g0 = grad(params, tokens, cfg)
    loss1, g1 = grad(params, tokens, dataclasses.replace(cfg, loss_impl="pallas"))
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-3), g1, g0)


def test_shapes_the_kernels_do_not_take_keep_the_xla_path(monkeypatch):
    assert fused_loss.usable(B * T, D, V)
    assert not fused_loss.usable(B * T, 256, V)  # slower than XLA there, unless asked for
    assert fused_loss.usable(B * T, 256, V, wide=True)
    assert not fused_loss.usable(B * T, 64, V)  # not measured
    assert fused_loss.usable(B * T, 64, V, wide=True)
    assert not fused_loss.usable(B * T, 192, V, wide=True)  # not a power of two
    assert not fused_loss.usable(B * T, D, V + 1)  # not whole vocabulary tiles
    assert not fused_loss.usable(B * T + 1, D, V)
    monkeypatch.setattr(fused_loss, "INTERPRET", False)
    assert fused_loss.usable(B * T, D, V) == (jax.default_backend() == "gpu")


def test_asking_for_the_kernels_where_they_do_not_apply_says_why(monkeypatch):
    from codemix.proxy_train.train import model_config_for

    monkeypatch.setattr(fused_loss, "INTERPRET", False)
    if jax.default_backend() != "gpu":
        with pytest.warns(UserWarning, match="the XLA loss is used, because they need a GPU"):
            model_config_for({"size": "1M", "loss_impl": "pallas"}, 8192, 256)
    monkeypatch.setattr(fused_loss, "INTERPRET", True)
    with pytest.warns(UserWarning, match=r"d_model = 192 is not 64 or 128 or 256"):
        model_config_for({"size": "2M", "loss_impl": "pallas"}, 8192, 256)
    with pytest.warns(UserWarning, match=r"vocabulary \(8,000\) is not a multiple of 128"):
        model_config_for({"size": "1M", "loss_impl": "pallas"}, 8000, 256)


def test_a_bad_loss_impl_is_refused():
    with pytest.raises(CodemixError, match="loss_impl must be one of"):
        ModelConfig(
            vocab_size=V, d_model=D, n_layers=1, n_heads=2, d_ff=128, seq_len=T, loss_impl="triton"
        )
