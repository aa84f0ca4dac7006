import numpy as np
import pytest

from codemix.core.errors import CodemixError
from codemix.proxy_train.tokenizer import (
    ByteTokenizer,
    TokenizerSpec,
    load_file,
    token_dtype,
    train_bpe,
)

TEXT = ["the quick brown fox jumps over the lazy dog " * 20, "def f(x):\n    return x + 1\n" * 20]


def test_spec_parsing(tmp_path):
    assert TokenizerSpec.parse("bpe:4096") == TokenizerSpec("bpe", 4096)
    assert TokenizerSpec.parse("bytes").kind == "bytes"
    with pytest.raises(CodemixError, match="bpe:VOCAB with an integer"):
        TokenizerSpec.parse("bpe:lots")
    with pytest.raises(CodemixError, match="vocabulary must be between"):
        TokenizerSpec.parse("bpe:10")
    with pytest.raises(CodemixError, match="not 'bytes', 'bpe:VOCAB', or an existing"):
        TokenizerSpec.parse(str(tmp_path / "missing.json"))


def test_bytes_round_trip():
    tok = ByteTokenizer()
    (ids,) = tok.encode_batch(["héllo"])
    assert bytes(ids.tolist()).decode() == "héllo"
    assert tok.eos_id == 256 and tok.vocab_size == 257


def test_bpe_trains_saves_and_reloads(tmp_path):
    tok = train_bpe(TEXT, 300)
    assert tok.vocab_size <= 300 and tok.eos_id == 0
    ids = tok.encode_batch(TEXT)
    assert sum(map(len, ids)) < sum(len(t.encode()) for t in TEXT) / 2  # it does compress
    tok.save(tmp_path / "tokenizer.json")
    again = load_file(tmp_path / "tokenizer.json")
    assert again.hash == tok.hash
    assert all(np.array_equal(a, b) for a, b in zip(again.encode_batch(TEXT), ids, strict=True))
    assert again.tok.decode(ids[1].tolist()) == TEXT[1]


def test_bad_tokenizer_file(tmp_path):
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(CodemixError, match="not a tokenizers JSON file"):
        load_file(tmp_path / "t.json")


def test_dtype_choice():
    assert token_dtype(50_000) == np.uint16
    assert token_dtype(70_000) == np.uint32
    with pytest.raises(CodemixError, match="vocabulary has 70000 tokens; use --dtype uint32"):
        token_dtype(70_000, "uint16")
