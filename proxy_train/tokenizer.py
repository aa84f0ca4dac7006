"""Tokenizers for the token store: byte-level BPE trained here, a given tokenizer.json, or
raw bytes. All expose `encode_batch(list[str]) -> list[np.ndarray]` and an end-of-document id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codemix.core.errors import CodemixError

EOS = "<|endoftext|>"
_EOS_CANDIDATES = (EOS, "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[SEP]")


@dataclass(frozen=True)
class TokenizerSpec:
    """What the user asked for: `bpe:VOCAB`, `bytes`, or a path to a tokenizer.json."""

    kind: str  # "bpe" | "bytes" | "file"
    vocab_size: int = 0
    path: Path | None = None

    def __post_init__(self):
        if self.kind == "bpe" and not 258 <= self.vocab_size <= 1 << 20:
            raise CodemixError(
                f"--tokenizer bpe:{self.vocab_size}: vocabulary must be between 258 and 2^20"
            )

    @classmethod
    def parse(cls, text: str) -> TokenizerSpec:
        if text == "bytes":
            return cls("bytes", 257)
        if text.startswith("bpe:") or text == "bpe":
            try:
                vocab = int(text[4:] or 8192)
            except ValueError:
                raise CodemixError(
                    f"--tokenizer {text!r}: expected bpe:VOCAB with an integer VOCAB"
                ) from None
            return cls("bpe", vocab)
        path = Path(text)
        if not path.is_file():
            raise CodemixError(
                f"--tokenizer {text!r}: not 'bytes', 'bpe:VOCAB', or an existing tokenizer.json"
            )
        return cls("file", 0, path)


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, end of document 256."""

    kind = "bytes"
    vocab_size = 257
    eos_id = 256
    hash = hashlib.sha256(b"codemix-bytes-v1").hexdigest()[:16]

    def encode_batch(self, docs: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(d.encode("utf-8"), dtype=np.uint8) for d in docs]

    def save(self, path: Path) -> None:
        pass


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer with a known end-of-document token."""

    def __init__(self, tok, kind: str, eos_id: int):
        self.tok, self.kind, self.eos_id = tok, kind, eos_id
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.hash = hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]

    def encode_batch(self, docs: list[str]) -> list[np.ndarray]:
        encs = self.tok.encode_batch_fast(docs, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encs]

    def save(self, path: Path) -> None:
        self.tok.save(str(path))


def load_file(path: Path) -> HFTokenizer:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise CodemixError(f"{path}: not a tokenizers JSON file ({e})") from e
    for name in _EOS_CANDIDATES:
        if (i := tok.token_to_id(name)) is not None:
            return HFTokenizer(tok, "file", i)
    raise CodemixError(
        f"{path}: no end-of-document token (looked for {', '.join(_EOS_CANDIDATES)})"
    )


def train_bpe(docs: Iterable[str], vocab_size: int) -> HFTokenizer:
    """Byte-level BPE, so every string encodes without unknown tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    return HFTokenizer(tok, "bpe", tok.token_to_id(EOS))


def token_dtype(vocab_size: int, requested: str = "auto") -> np.dtype:
    if requested not in ("auto", "uint16", "uint32"):
        raise CodemixError(f"--dtype {requested!r}: expected auto, uint16 or uint32")
    if requested == "auto":
        return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)
    if requested == "uint16" and vocab_size > 1 << 16:
        raise CodemixError(
            f"--dtype uint16 holds ids below 65536, but the vocabulary has {vocab_size} "
            "tokens; use --dtype uint32 or auto"
        )
    return np.dtype(requested)


def encode_pairs(
    tok, pairs: list[tuple[str, str]]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(context ids, continuation ids, cumulative UTF-8 bytes of the continuation at each of
    its tokens) for (context, continuation) pairs, as lm-evaluation-harness splits them:
    trailing whitespace of the context moves to the continuation, the pair is encoded
    whole, and the continuation is what follows the context's own encoding."""
    moved = []
    for ctx, cont in pairs:
        stripped = ctx.rstrip()
        moved.append((stripped, ctx[len(stripped) :] + cont))
    ctx_ids = tok.encode_batch([c for c, _ in moved])
    if isinstance(tok, ByteTokenizer):
        out = []
        for (_, k), ids in zip(moved, ctx_ids, strict=True):
            cont = np.frombuffer(k.encode("utf-8"), dtype=np.uint8)
            out.append((ids, cont, np.arange(1, len(cont) + 1)))
        return out
    wholes = tok.tok.encode_batch([c + k for c, k in moved], add_special_tokens=False)  # offsets
    out = []
    for (c, k), ids, enc in zip(moved, ctx_ids, wholes, strict=True):
        text = c + k
        byte_at = np.cumsum([0] + [len(ch.encode("utf-8")) for ch in text])  # char -> bytes
        n = len(ids)
        ends = np.array([byte_at[e] for _, e in enc.offsets[n:]], dtype=np.int64)
        ends = np.maximum.accumulate(ends - byte_at[len(c)]) if len(ends) else ends
        out.append((ids, np.asarray(enc.ids[n:], dtype=np.uint32), ends))
    return out
