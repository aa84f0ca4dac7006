"""The token store on disk: one memory-mapped token array per domain and split.

Layout of DIR:
    manifest.json             what is inside (see `prepare.py`), written last
    tokenizer.json            for BPE and given tokenizers
    DOMAIN/{train,val}.bin    token ids, documents each followed by the end-of-document id
    DOMAIN/{train,val}.idx    int64 offsets of document starts, plus the end
Reading needs only numpy, so the trainer can open a store on a bare accelerator host.

The manifest records every data file's blake2b, so a store can be checked two ways:
`check_store` compares sizes and index ends with the manifest (a stat and two small reads
a file: always done), `verify_store` recomputes the hashes (reads everything: on request).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from codemix.core.errors import CodemixError
from codemix.core.progress import Progress

FORMAT = "codemix-token-store"
VERSION = 1
SPLITS = ("train", "val")
CAP_BLOCK = 8192  # tokens: most documents whole, and a cap of 1M spread over 120 places
HASH_BYTES = 16  # blake2b digest size of the data files, as for the sources
_CHUNK = 1 << 22
_VERIFY_BAR_BYTES = 1 << 26  # smaller stores verify in a blink: no progress display


def read_manifest(path: Path, partial: bool = False) -> dict:
    """The store's manifest; a shard of a store (`prepare --shard`) only when `partial`."""
    path = Path(path)
    file = path / "manifest.json"
    if not file.is_file():
        raise CodemixError(
            f"{path}: not a token store (no manifest.json); build one with `codemix prepare`"
        )
    try:
        manifest = json.loads(file.read_text())
    except ValueError as e:
        raise CodemixError(f"{file}: not valid JSON ({e})") from e
    if manifest.get("format") != FORMAT:
        raise CodemixError(f"{file}: not a codemix token store manifest")
    if manifest.get("version") != VERSION:
        raise CodemixError(
            f"{file}: store format version {manifest.get('version')}, this codemix reads "
            f"{VERSION}; rebuild it with `codemix prepare`"
        )
    if "shard" in manifest and not partial:
        shard = manifest["shard"]
        raise CodemixError(
            f"{path}: shard {shard['index']} of {shard['count']} of a store, not a whole one; "
            "join the shards with `codemix store merge PART... --out DIR`"
        )
    return manifest


def spread_cap(tokens: np.ndarray, cap: int, block: int = CAP_BLOCK) -> np.ndarray:
    """`cap` tokens of a domain as blocks of about `block` tokens spread evenly through it.

    A domain is its files one after another, so a prefix would be its first few sources (on
    the built-in store the first 1M text tokens differ from the whole text by 0.095 nats in
    unigram KL, the spread blocks by 0.002): a capped proxy would learn another
    distribution as well as repeating it. The blocks are the same for every seed."""
    n = len(tokens)
    if cap >= n:
        return tokens
    k = -(-cap // block)
    sizes = np.full(k, cap // k, np.int64)
    sizes[: cap % k] += 1
    # the n - cap tokens left out, shared evenly between the gaps (half a gap at each end)
    gaps = ((2 * np.arange(k) + 1) * (n - cap)) // (2 * k)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) + gaps
    return np.concatenate([tokens[a : a + b] for a, b in zip(starts, sizes, strict=True)])


class TokenStore:
    """Read-only view of a prepared store."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.dtype = np.dtype(self.manifest["dtype"])
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        self.eos_id = int(self.manifest["tokenizer"]["eos_id"])
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        problems = check_store(self.path, self.manifest)
        if problems:
            raise CodemixError(
                f"token store {self.path} is damaged ({describe(problems)}); rebuild it by "
                "running the `codemix prepare` command that built it again"
            )

    @cached_property
    def domains(self) -> tuple[str, ...]:
        return tuple(self.manifest["domains"])

    def info(self, domain: str) -> dict:
        if domain not in self.manifest["domains"]:
            raise CodemixError(
                f"{self.path}: no domain {domain!r} (domains: {', '.join(self.domains)})"
            )
        return self.manifest["domains"][domain]

    def tokens(self, domain: str, split: str = "train", cap: int | None = None) -> np.ndarray:
        """Token ids of one domain and split as a read-only memory map; with `cap`, at most
        that many of them (`spread_cap`, held in memory once per store)."""
        key = (domain, split) if cap is None else (domain, split, int(cap))
        if cap is not None and key not in self._arrays:
            self._arrays[key] = spread_cap(self.tokens(domain, split), int(cap))
        if key not in self._arrays:
            self.info(domain)
            file = self.path / domain / f"{split}.bin"
            n = int(self.info(domain)[f"{split}_tokens"])
            if not file.is_file() or file.stat().st_size != n * self.dtype.itemsize:
                raise CodemixError(  # it changed after the store was opened and checked
                    f"{file}: missing or not {n:,} tokens long as the manifest says; "
                    "the store is damaged, rebuild it with `codemix prepare`"
                )
            self._arrays[key] = (
                np.memmap(file, dtype=self.dtype, mode="r", shape=(n,))
                if n
                else np.zeros(0, self.dtype)
            )
        return self._arrays[key]

    def offsets(self, domain: str, split: str = "train") -> np.ndarray:
        return np.fromfile(self.path / domain / f"{split}.idx", dtype=np.int64)

    def n_tokens(self, domain: str, split: str = "train") -> int:
        return int(self.info(domain)[f"{split}_tokens"])

    def n_bytes(self, domain: str, split: str = "train") -> int:
        return int(self.info(domain)[f"{split}_bytes"])


def _data_files(manifest: dict) -> Iterator[tuple[str, int | None, int]]:
    """(path relative to the store, expected size or None, tokens of the split) of every
    data file."""
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for name, d in manifest["domains"].items():
        for split in SPLITS:
            tokens, docs = int(d[f"{split}_tokens"]), d.get(f"{split}_documents")
            yield f"{name}/{split}.bin", tokens * itemsize, tokens
            # stores from before per-split document counts: only the index ends can be checked
            yield f"{name}/{split}.idx", None if docs is None else (docs + 1) * 8, tokens


def _check_index(file: Path, rel: str, size: int, tokens: int) -> str | None:
    if size < 8 or size % 8:
        return f"{rel}: {size:,} bytes, not a whole number of 8-byte offsets"
    with open(file, "rb") as f:
        first = int(np.frombuffer(f.read(8), np.int64)[0])
        f.seek(size - 8)
        last = int(np.frombuffer(f.read(8), np.int64)[0])
    if (first, last) != (0, tokens):
        return f"{rel}: offsets run from {first:,} to {last:,}, expected 0 to {tokens:,}"
    return None


def check_store(path: str | Path, manifest: dict | None = None) -> list[str]:
    """What is wrong with the store's files by their sizes and index ends, one line each
    ("text/train.bin: 1,234 bytes, expected 5,678"); empty when nothing is."""
    path = Path(path)
    manifest = manifest if manifest is not None else read_manifest(path, partial=True)
    problems = []
    tokenizer = manifest["tokenizer"].get("file")
    if tokenizer and not (path / tokenizer).is_file():
        problems.append(f"{tokenizer}: missing")
    for rel, expected, tokens in _data_files(manifest):
        file = path / rel
        try:
            size = file.stat().st_size
        except OSError:
            problems.append(f"{rel}: missing")
            continue
        if expected is not None and size != expected:
            problems.append(f"{rel}: {size:,} bytes, expected {expected:,}")
        elif rel.endswith(".idx") and (bad := _check_index(file, rel, size, tokens)):
            problems.append(bad)
    return problems


def file_hash(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    h = hashlib.blake2b(digest_size=HASH_BYTES)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return h.hexdigest()


def verify_store(
    path: str | Path, manifest: dict | None = None, progress: bool = True
) -> list[str]:
    """Recompute every data file's hash and list those that differ from the manifest.

    Files that `check_store` finds missing or of the wrong size are left to it, which says
    so more clearly."""
    path = Path(path)
    manifest = manifest if manifest is not None else read_manifest(path, partial=True)
    if not all("blake2b" in d for d in manifest["domains"].values()):
        raise CodemixError(
            f"{path}: built before codemix recorded content hashes, so --verify cannot check "
            "it; rebuild it with `codemix prepare ... --rebuild` to record them"
        )
    recorded = {
        f"{name}/{file}": digest
        for name, d in manifest["domains"].items()
        for file, digest in d["blake2b"].items()
    }
    faulted = {problem.split(":", 1)[0] for problem in check_store(path, manifest)}
    present = {rel: path / rel for rel in recorded if rel not in faulted}
    total = sum(f.stat().st_size for f in present.values())
    problems = []
    with Progress(
        total, desc=f"verifying {path}", unit="B", enabled=progress and total >= _VERIFY_BAR_BYTES
    ) as bar:
        for rel, file in present.items():
            if file_hash(file, bar.update) != recorded[rel]:
                problems.append(f"{rel}: contents differ from the hash recorded when it was built")
    return problems


def describe(problems: list[str]) -> str:
    """The first problem, and how many more: for one-line messages."""
    more = len(problems) - 1
    return problems[0] + (f"; and {more} more problem{'s' * (more > 1)}" if more else "")


def summary_rows(manifest: dict) -> list[dict]:
    rows = []
    for name, d in manifest["domains"].items():
        rows.append(
            {
                "domain": name,
                "documents": d["documents"],
                "train_tokens": d["train_tokens"],
                "val_tokens": d["val_tokens"],
                "train_bytes": d["train_bytes"],
                "val_bytes": d["val_bytes"],
                "bytes_per_token": d["train_bytes"] / max(1, d["train_tokens"]),
                "sources": len(d["sources"]),
                "sampled": d.get("sample", {}).get("fraction", 1.0),
                "available_train": d.get("available_train_tokens", d["train_tokens"]),
            }
        )
    return rows


def format_summary(manifest: dict, path: Path | str = "") -> str:
    from codemix.core.units import format_count

    tok = manifest["tokenizer"]
    head = (
        f"token store {path}\n"
        f"tokenizer: {tok['kind']}, vocab {tok['vocab_size']}, hash {tok['hash']}, "
        f"ids as {manifest['dtype']}; validation share of documents {manifest['val_frac']}\n"
    )
    cols = [
        "domain",
        "documents",
        "train_tokens",
        "val_tokens",
        "train_bytes",
        "val_bytes",
        "bytes_per_token",
        "sources",
    ]
    rows = summary_rows(manifest)
    if any(r["sampled"] < 1.0 for r in rows):  # what a sample left out
        cols += ["sampled", "available_train"]
    cells = [cols] + [
        [
            str(r[c])
            if c in ("domain", "sources", "documents")
            else f"{r[c]:.2f}"
            if c == "bytes_per_token"
            else f"{r[c]:.3g}"
            if c == "sampled"
            else format_count(r[c])
            for c in cols
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = [
        "  ".join(
            v.rjust(w) if i else v.ljust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    return head + "\n".join(lines)
