"""The token store on disk: one memory-mapped token array per domain and split.

Layout of DIR:
    manifest.json             what is inside (see `prepare.py`), written last
    tokenizer.json            for BPE and given tokenizers
    DOMAIN/{train,val}.bin    token ids, documents each followed by the end-of-document id
    DOMAIN/{train,val}.idx    int64 offsets of document starts, plus the end
Reading needs only numpy, so the trainer can open a store on a bare accelerator host.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from codemix.errors import CodemixError

FORMAT = "codemix-token-store"
VERSION = 1
SPLITS = ("train", "val")


def read_manifest(path: Path) -> dict:
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
    return manifest


class TokenStore:
    """Read-only view of a prepared store."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.dtype = np.dtype(self.manifest["dtype"])
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        self.eos_id = int(self.manifest["tokenizer"]["eos_id"])
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    @cached_property
    def domains(self) -> tuple[str, ...]:
        return tuple(self.manifest["domains"])

    def info(self, domain: str) -> dict:
        if domain not in self.manifest["domains"]:
            raise CodemixError(
                f"{self.path}: no domain {domain!r} (domains: {', '.join(self.domains)})"
            )
        return self.manifest["domains"][domain]

    def tokens(self, domain: str, split: str = "train") -> np.ndarray:
        """Token ids of one domain and split as a read-only memory map."""
        key = (domain, split)
        if key not in self._arrays:
            self.info(domain)
            file = self.path / domain / f"{split}.bin"
            n = int(self.info(domain)[f"{split}_tokens"])
            if not file.is_file() or file.stat().st_size != n * self.dtype.itemsize:
                raise CodemixError(
                    f"{file}: missing or not {n} tokens long as the manifest says; "
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
            }
        )
    return rows


def format_summary(manifest: dict, path: Path | str = "") -> str:
    from codemix.units import format_count

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
    cells = [cols] + [
        [
            str(r[c])
            if c in ("domain", "sources", "documents")
            else f"{r[c]:.2f}"
            if c == "bytes_per_token"
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
