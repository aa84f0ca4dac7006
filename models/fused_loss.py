"""The training loss as Pallas kernels: projection, log-sum-exp and softmax on chip.

For small proxies the loss is bound by memory traffic and elementwise work, not by its
matmuls: with d = 128 the output projection does 256 FLOPs per logit it writes, and XLA's
path (`chunked_mean_loss`) then reads those logits for the log-sum-exp, again for the
softmax's gradient, and both gradient matmuls read that. Here each block of rows and
vocabulary is projected, reduced and differentiated where it is computed:

- `_rows_kernel`, one program per BN rows: a pass over V for the online log-sum-exp, then a
  second that recomputes each block's logits and accumulates dx = softmax @ w.T (and, with
  `DW_KERNEL` off, writes the softmax for one matmul to take dw from).
- `_cols_kernel`, one program per BV vocabulary entries: recomputes the logits of every row
  block against them and accumulates dw = x.T @ softmax. With it no (N, V) array reaches
  HBM, at the price of five matmuls of the logits' size instead of three.

The one-hot part of the gradient (the label's column of w for dx, x in the label's column
of dw) and the label's logit are a gather and a scatter outside, so the kernels' inner
loops hold no comparisons. The logits stay in float32 (the XLA path rounds them to
`logits_dtype` first); the softmax that meets the matmuls is in `logits_dtype`.
Exponentials are base 2: Triton's exp2 is one instruction, its exp a libdevice call.

Written for the Triton backend of Pallas (GPUs); `interpret=True` runs the same kernels on
any backend, which is how the tests check them. Elsewhere `chunked_mean_loss` is the path.
Letters: N rows (batch x time), D width, V vocabulary.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

__all__ = ["fused_mean_loss", "usable", "why_not"]

# Tiles: the fastest of those tried on an H200 ("1M" heads, 16 x 32 x 1024 rows; see
# benchmarks/RESULTS.md), and dw from its own kernel (11.9 ms against 12.7 with a matmul).
BN, BV = 64, 128  # rows and vocabulary entries a program holds at once
NUM_WARPS, NUM_STAGES = 4, 2
# True: dw in a second kernel that recomputes the logits (no (N, V) array at all); False:
# the rows kernel writes the softmax and a matmul reads it for dw
DW_KERNEL = True
SPLIT = 4  # row blocks of the dw kernel's grid (see _loss_and_grads)
_LOG2E = 1.4426950408889634  # exp(s) = exp2(s * log2(e)); Triton's exp2 is one instruction
_NEG = -1e30  # a finite minus infinity: exp(_NEG - m) is 0 without inf - inf
INTERPRET = False  # tests set it to run the kernels through the interpreter on CPU


def usable(N: int, D: int, V: int, wide: bool = False) -> bool:
    """Whether the kernels take this loss here: on a GPU (or interpreted), with shapes in
    whole power-of-two tiles, and d of 128, where they were measured faster (or 64 and 256
    too if `wide`). At d = 256 the XLA path was faster on an H200 (32.7 against 24.0 % MFU
    for "4M" populations): there the loss is no longer the bottleneck, and a program's
    (BN, d) accumulator crowds the registers."""
    return N % BN == 0 and why_not(D, V, wide) is None


def why_not(D: int, V: int, wide: bool = True) -> str | None:
    """Why the kernels would not take a model of width D and vocabulary V here (None if
    they would)."""
    if not (INTERPRET or jax.default_backend() == "gpu"):
        return f"they need a GPU (this is {jax.default_backend()})"
    widths = (64, 128, 256) if wide else (128,)
    if D not in widths:
        return f"d_model = {D} is not {' or '.join(map(str, widths))}"
    if V % BV:
        return f"the vocabulary ({V:,}) is not a multiple of {BV}"
    return None


def _dot(a, b, dims):
    """A float32-accumulating matmul; operands of two dtypes (a float32 softmax against
    bfloat16 weights) meet in the wider one, as Triton's dot wants one dtype."""
    dt = jnp.promote_types(a.dtype, b.dtype)
    return jax.lax.dot_general(
        a.astype(dt), b.astype(dt), (dims, ((), ())), preferred_element_type=jnp.float32
    )


def _logits(x_RD, w_DC):
    """Logits in base-2 units (times log2 e), float32."""
    return _dot(x_RD, w_DC, ((1,), (0,))) * _LOG2E


def _rows_kernel(x_ref, w_ref, lse_ref, dx_ref, *p_ref, V, dtype):
    x_RD = x_ref[...]

    def reduce(v, carry):
        m_R, l_R = carry
        s_RC = _logits(x_RD, w_ref[:, pl.ds(v * BV, BV)])
        m_new_R = jnp.maximum(m_R, s_RC.max(axis=1))
        l_R = l_R * jnp.exp2(m_R - m_new_R) + jnp.exp2(s_RC - m_new_R[:, None]).sum(axis=1)
        return m_new_R, l_R

    zeros_R = jnp.zeros(x_RD.shape[:1], jnp.float32)
    m_R, l_R = jax.lax.fori_loop(0, V // BV, reduce, (zeros_R + _NEG, zeros_R))
    lse_R = m_R + jnp.log2(l_R)  # base 2

    def grad(v, dx_RD):
        w_DC = w_ref[:, pl.ds(v * BV, BV)]
        p_RC = jnp.exp2(_logits(x_RD, w_DC) - lse_R[:, None]).astype(dtype)
        if p_ref:
            p_ref[0][:, pl.ds(v * BV, BV)] = p_RC
        return dx_RD + _dot(p_RC, w_DC, ((1,), (1,)))  # p_RC @ w_DC.T

    dx_RD = jax.lax.fori_loop(0, V // BV, grad, jnp.zeros(x_RD.shape, jnp.float32))
    lse_ref[...] = lse_R
    dx_ref[...] = dx_RD


def _cols_kernel(x_ref, w_ref, lse_ref, dw_ref, *, N, dtype):
    w_DC = w_ref[...]

    def grad(n, dw_DC):
        rows = pl.ds(n * BN, BN)
        x_RD, lse_R = x_ref[rows, :], lse_ref[rows]
        p_RC = jnp.exp2(_logits(x_RD, w_DC) - lse_R[:, None]).astype(dtype)
        return dw_DC + _dot(x_RD, p_RC, ((0,), (0,)))  # x_RD.T @ p_RC

    dw_ref[...] = jax.lax.fori_loop(0, N // BN, grad, jnp.zeros(w_DC.shape, jnp.float32))


def _compiler_params():
    from jax.experimental.pallas import triton as plt

    return plt.CompilerParams(num_warps=NUM_WARPS, num_stages=NUM_STAGES)


def _loss_and_grads(x_ND, w_DV, y_N, dtype, interpret):
    """Per-row losses and the gradients of their sum."""
    N, D = x_ND.shape
    V = w_DV.shape[1]
    params = None if interpret else _compiler_params()
    row_block = pl.BlockSpec((BN, D), lambda i: (i, 0))
    out_shape = [jax.ShapeDtypeStruct((N,), jnp.float32), jax.ShapeDtypeStruct((N, D), jnp.float32)]
    out_specs = [pl.BlockSpec((BN,), lambda i: (i,)), row_block]
    if not DW_KERNEL:
        out_shape.append(jax.ShapeDtypeStruct((N, V), dtype))
        out_specs.append(pl.BlockSpec((BN, V), lambda i: (i, 0)))
    lse_N, dx_ND, *p_NV = pl.pallas_call(
        functools.partial(_rows_kernel, V=V, dtype=dtype),
        out_shape=tuple(out_shape),
        grid=(N // BN,),
        in_specs=[row_block, pl.BlockSpec((D, V), lambda i: (0, 0))],
        out_specs=tuple(out_specs),
        interpret=interpret,
        compiler_params=params,
        name="loss_rows",
    )(x_ND, w_DV)
    if p_NV:
        dw_DV = jnp.einsum("ND,NV->DV", x_ND, p_NV[0], preferred_element_type=jnp.float32)
    else:
        # V / BV programs are too few to fill a GPU for one model (64 at V = 8192), so the
        # rows are split S ways too and the partial sums added after
        S = SPLIT if N % (BN * SPLIT) == 0 else 1
        dw_SDV = pl.pallas_call(
            functools.partial(_cols_kernel, N=N // S, dtype=dtype),
            out_shape=jax.ShapeDtypeStruct((S, D, V), jnp.float32),
            grid=(V // BV, S),
            in_specs=[
                pl.BlockSpec((N // S, D), lambda j, k: (k, 0)),
                pl.BlockSpec((D, BV), lambda j, k: (0, j)),
                pl.BlockSpec((N // S,), lambda j, k: (k,)),
            ],
            out_specs=pl.BlockSpec((None, D, BV), lambda j, k: (k, 0, j)),
            interpret=interpret,
            compiler_params=params,
            name="loss_cols",
        )(x_ND, w_DV, lse_N)
        dw_DV = dw_SDV.sum(axis=0)
    # the one-hot part: the label's logit, and its column of w (for dx) and x (for dw)
    wy_ND = w_DV.T[y_N].astype(jnp.float32)
    x32_ND = x_ND.astype(jnp.float32)
    loss_N = lse_N / _LOG2E - (x32_ND * wy_ND).sum(axis=1)
    dw_DV = dw_DV - jnp.zeros((V, D), jnp.float32).at[y_N].add(x32_ND).T
    return loss_N, dx_ND - wy_ND, dw_DV


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def fused_mean_loss(x_BTD, w_DV, labels_BT, logits_dtype: str, interpret: bool):
    """Mean cross-entropy of x_BTD @ w_DV, as `chunked_mean_loss` computes it (with the
    logits in float32), the gradients taken in the same pass."""
    return _fused_fwd(x_BTD, w_DV, labels_BT, logits_dtype, interpret)[0]


def _fused_fwd(x_BTD, w_DV, labels_BT, logits_dtype, interpret):
    B, T, D = x_BTD.shape
    dtype = jnp.dtype(logits_dtype)
    loss_N, dx_ND, dw_DV = _loss_and_grads(
        x_BTD.reshape(B * T, D), w_DV, labels_BT.reshape(B * T).astype(jnp.int32), dtype, interpret
    )
    dx_BTD = (dx_ND / (B * T)).astype(x_BTD.dtype).reshape(B, T, D)
    return loss_N.mean(), (dx_BTD, (dw_DV / (B * T)).astype(w_DV.dtype))


def _fused_bwd(logits_dtype, interpret, res, g):
    dx_BTD, dw_DV = res
    B, T = dx_BTD.shape[:2]
    gx_BTD = (dx_BTD.astype(jnp.float32) * g).astype(dx_BTD.dtype)
    gw_DV = (dw_DV.astype(jnp.float32) * g).astype(dw_DV.dtype)
    return gx_BTD, gw_DV, np.zeros((B, T), jax.dtypes.float0)  # labels: no gradient


fused_mean_loss.defvjp(_fused_fwd, _fused_bwd)
