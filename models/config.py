"""`ModelConfig`: the shape and numerics of one transformer, validated on construction.

Kept free of JAX so presets, accounting and the CLI load instantly and analysis can count
parameters without the accelerator stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from codemix.core.errors import CodemixError

DTYPES = ("bfloat16", "float32", "float16")
REMAT_POLICIES = ("none", "full", "dots_saveable")
ATTENTION_IMPLS = (None, "xla", "cudnn", "reference")
LOSS_IMPLS = ("auto", "xla", "pallas")


@dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer. `seq_len` is the longest context the model accepts.

    `n_kv_heads=None` means one key/value head per query head (multi-head attention);
    fewer gives grouped-query attention. `dtype` is the compute dtype; parameters are
    always stored in float32. `attention_impl`: None lets XLA choose, "xla" is the portable
    fused path, "cudnn" asks for cuDNN flash attention (falls back to "xla" off GPU),
    "reference" is an explicit softmax einsum kept for tests. `logits_dtype` is what the
    output projection writes (None: `dtype`; bfloat16 logits halve the bytes the softmax
    moves and keep the projection's backward matmuls in bfloat16); the softmax itself is
    always taken in float32. `loss_chunk` is how many positions of each sequence the loss
    takes at once (0 or None: all of them, the whole (B, T, V) logits in one piece). Chunked,
    the training loss takes its gradient in the same pass (`chunked_mean_loss`): the same
    loss (tested), no float32 (B, T, V) array, and on an H200 as fast or faster at every
    size measured (+3 MFU points for "1M" and "4M" populations, +2 at 124M with 50k tokens,
    +2.5 at 470M with 256k), so 256 is the default. `loss_impl` says who computes that
    loss: "xla" the portable path; "pallas" Triton kernels that keep the logits on chip
    (`models/fused_loss.py`) wherever they apply (GPUs; widths of 64, 128 or 256); "auto",
    the default, the kernels for populations on one GPU at width 128, where they were
    measured faster on an H200 ("1M" populations 22.6 -> 26.1 % MFU), XLA elsewhere (one
    model, several devices, TPUs, CPUs, wider models).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int
    n_kv_heads: int | None = None
    tied_embeddings: bool = True
    rope_theta: float = 10000.0
    dtype: str = "bfloat16"
    remat: str = "none"
    attention_impl: str | None = None
    scan_unroll: int = 1  # layers per scan iteration; n_layers unrolls the stack fully
    logits_dtype: str | None = None  # None: the compute dtype; the loss upcasts to float32
    loss_chunk: int | None = 256  # positions a loss chunk takes; 0 or None: all at once
    loss_impl: str = "auto"  # "auto", "xla" or "pallas": see above

    def __post_init__(self) -> None:
        for field in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "seq_len"):
            _check_positive_int(field, getattr(self, field))
        if self.n_kv_heads is not None:
            _check_positive_int("n_kv_heads", self.n_kv_heads)
            if self.n_heads % self.n_kv_heads:
                raise CodemixError(
                    f"ModelConfig.n_kv_heads must divide n_heads={self.n_heads}, "
                    f"got {self.n_kv_heads}"
                )
        if self.d_model % self.n_heads:
            raise CodemixError(
                f"ModelConfig.d_model must be a multiple of n_heads={self.n_heads}, "
                f"got {self.d_model}"
            )
        if self.head_dim % 2:
            # Rotary embeddings rotate pairs of channels.
            raise CodemixError(
                f"ModelConfig.d_model / n_heads (the head dim) must be even, got {self.head_dim}"
            )
        if not isinstance(self.tied_embeddings, bool):
            raise CodemixError(
                f"ModelConfig.tied_embeddings must be true or false, got {self.tied_embeddings!r}"
            )
        if isinstance(self.rope_theta, bool) or not (
            isinstance(self.rope_theta, int | float) and self.rope_theta > 0
        ):
            raise CodemixError(
                f"ModelConfig.rope_theta must be a positive number, got {self.rope_theta!r}"
            )
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("logits_dtype", self.logits_dtype, (None, *DTYPES))
        _check_choice("remat", self.remat, REMAT_POLICIES)
        _check_choice("attention_impl", self.attention_impl, ATTENTION_IMPLS)
        _check_choice("loss_impl", self.loss_impl, LOSS_IMPLS)
        _check_positive_int("scan_unroll", self.scan_unroll)
        if self.loss_chunk is not None and (
            isinstance(self.loss_chunk, bool)
            or not isinstance(self.loss_chunk, int)
            or self.loss_chunk < 0
        ):
            raise CodemixError(
                f"ModelConfig.loss_chunk must be an integer >= 0 (0: no chunks), "
                f"got {self.loss_chunk!r}"
            )

    @property
    def chunk(self) -> int:
        """Positions per loss chunk; 0 for the whole sequence at once."""
        return self.loss_chunk or 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads


def _check_positive_int(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CodemixError(f"ModelConfig.{field} must be a positive integer, got {value!r}")


def _check_choice(field: str, value: object, choices: tuple) -> None:
    if value not in choices:
        names = ", ".join(repr(c) for c in choices)
        raise CodemixError(f"ModelConfig.{field} must be one of {names}, got {value!r}")
