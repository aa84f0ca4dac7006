"""Synthetic corpora like SlimPajama (JSON lines naming their source in
meta.redpajama_set_name, zstd-compressed) and The Stack (parquet with content and lang)."""

import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import zstandard

from codemix.proxy_train.prepare import PrepareConfig
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.tokenizer import TokenizerSpec

SETS = ["RedPajamaCommonCrawl", "RedPajamaC4", "RedPajamaGithub", "RedPajamaStackExchange"]
PAPER_MAP = (
    ("RedPajamaGithub", "-"),
    ("RedPajamaStackExchange", "-"),
    ("*", "text"),
)


def _doc(rng: random.Random, i: int, origin: str) -> str:
    words = ["river", "lamp", "orbit", "quiet", "maple", "vector", "stone", "glass"]
    n = rng.randint(5, 60)
    return f"[{origin} {i}] " + " ".join(rng.choice(words) for _ in range(n))


def _slim(root: Path, files: int = 4, per_file: int = 60, seed: int = 0) -> list[dict]:
    """SlimPajama-like chunks: JSON lines with meta.redpajama_set_name, zstd-compressed."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for f in range(files):
        lines = []
        for i in range(per_file):
            origin = rng.choice(SETS)
            rec = {
                "text": _doc(rng, f * per_file + i, origin),
                "meta": {"redpajama_set_name": origin},
            }
            records.append(rec)
            lines.append(json.dumps(rec))
        data = ("\n".join(lines) + "\n").encode()
        (root / f"chunk_{f}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    return records


def _stack(root: Path, files: int = 3, per_file: int = 40) -> None:
    """The Stack-like parquet files: a content column and a language column."""
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        content = [f"def f{f}_{i}(x):\n    return x + {i}\n" * (1 + i % 5) for i in range(per_file)]
        lang = ["python" if i % 3 else "go" for i in range(per_file)]
        pl.DataFrame({"content": content, "lang": lang}).write_parquet(root / f"p{f}.parquet")


def _cfg(tmp_path: Path, out: str, **kw) -> PrepareConfig:
    base = {
        "domains": {"code": (str(tmp_path / "stack" / "*.parquet"),)},
        "out": tmp_path / out,
        "tokenizer": TokenizerSpec("bytes", 257),
        "routed": (str(tmp_path / "slim" / "*.jsonl.zst"),),
        "domain_from": "meta.redpajama_set_name",
        "mapping": PAPER_MAP,
    }
    return PrepareConfig(**(base | kw))


def _docs(store: TokenStore, domain: str, split: str = "train") -> list[bytes]:
    toks, offsets = store.tokens(domain, split), store.offsets(domain, split)
    return [
        bytes(toks[a : b - 1].astype(np.uint8))
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]


def _same_store(a: Path, b: Path) -> None:
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    ma.pop("created"), mb.pop("created")
    assert ma == mb
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        # the manifest is compared above but for its date; the lock file names its process
        if rel.name not in ("manifest.json", ".lock"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
