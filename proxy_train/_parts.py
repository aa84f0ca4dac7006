"""The per-file work of `prepare` and the assembly of its parts into a store.

Each source file is read, routed, sampled, split and tokenised on its own into a *part*
(one token file and one length file per domain and split it feeds), by one process of a
pool or in-process. A store's domain is its parts concatenated in file order, so the store
does not depend on how many workers made the parts or in which order they finished, and a
build that dies keeps every finished file.

Every per-document decision is a hash of the document's bytes, never of its position:
the split (`split_hash`), whether a domain's sample keeps it (`sample_hash`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codemix.core.errors import CodemixError
from codemix.core.files import atomic_write_text
from codemix.proxy_train import sources as src
from codemix.proxy_train.store import HASH_BYTES, SPLITS

_BATCH_BYTES = 1 << 21
COUNT_DTYPE = np.dtype([("hash", "f8"), ("tokens", "i8"), ("train", "?")])
_COPY = 1 << 22


def split_hash(data: bytes) -> float:
    """A document's place in [0, 1): below the validation share it is held out."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") / 2**64


def sample_hash(data: bytes) -> float:
    """A document's place in [0, 1) for `--sample`, independent of `split_hash`."""
    digest = hashlib.blake2b(data, digest_size=8, person=b"codemix-sample").digest()
    return int.from_bytes(digest, "little") / 2**64


@dataclass(frozen=True)
class FileTask:
    index: int  # place in the build's file order
    source: src.SourceFile
    route: src.Route
    key: str = ""  # names the part: a hash of everything that decides its contents
    keep: tuple[tuple[str, float], ...] = ()  # domain -> sample threshold; absent keeps all


@dataclass(frozen=True)
class Context:
    """What every worker needs besides its task."""

    read: src.ReadOptions
    tokenizer: str  # "bytes" or the path of a tokenizers JSON file
    dtype: str
    val_frac: float


_ctx: Context | None = None
_tok = None


def init_worker(ctx: Context, in_pool: bool = False) -> None:
    global _ctx, _tok
    if in_pool:
        # one process a core already: the tokenizer's own threads would oversubscribe
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        # Ctrl-C reaches the whole process group: the parent stops the workers itself
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _ctx, _tok = ctx, None


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent was killed outright (SIGKILL) must not run on alone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _tokenizer():
    """Loaded at first use: sources are checked before the tokenizer is trained."""
    global _tok
    if _tok is None:
        from codemix.proxy_train.tokenizer import ByteTokenizer, load_file

        bytes_ = _ctx.tokenizer == "bytes"
        _tok = ByteTokenizer() if bytes_ else load_file(Path(_ctx.tokenizer))
    return _tok


def check_file(task: FileTask) -> str:
    return src.check(task.source, _ctx.read, task.route.field)


def _documents(task: FileTask, keep_all: bool = False):
    """(document bytes, document, domain, split) of a file's kept documents, and at the end
    the bytes read per domain and split (kept or not) as a dict."""
    keep = dict(task.keep)
    path = task.source.path
    read: dict[str, dict[str, int]] = {}
    for text, value, line in src.iter_records(task.source, _ctx.read, task.route.field):
        domain = task.route.domain_of(value, path, line)
        if domain is None:
            continue
        data = text.encode("utf-8")
        split = "val" if split_hash(data) < _ctx.val_frac else "train"
        counts = read.setdefault(domain, {"train": 0, "val": 0})
        counts[split] += len(data)
        if keep_all or domain not in keep or sample_hash(data) < keep[domain]:
            yield data, text, domain, split, value
    yield read


def count_file(task: FileTask) -> dict[str, np.ndarray]:
    """For choosing a sample's threshold: per domain, each document's sample hash, tokens
    (end-of-document included) and whether it is a training document."""
    rows: dict[str, list[tuple[float, int, bool]]] = {}
    batch: list[tuple[bytes, str, str, str]] = []

    def flush():
        encoded = _tokenizer().encode_batch([text for _, text, _, _ in batch])
        for (data, _, domain, split), ids in zip(batch, encoded, strict=True):
            rows.setdefault(domain, []).append((sample_hash(data), len(ids) + 1, split == "train"))
        batch.clear()

    size = 0
    for item in _documents(task, keep_all=True):
        if isinstance(item, dict):
            break
        data, text, domain, split, _ = item
        batch.append((data, text, domain, split))
        size += len(data)
        if size >= _BATCH_BYTES:
            flush()
            size = 0
    flush()
    return {d: np.array(r, dtype=COUNT_DTYPE) for d, r in rows.items()}


def tokenize_file(task: FileTask, part: Path) -> dict:
    """Write the file's part into the folder `part` and return its summary (also written
    last, as `part/done.json`, which is what marks the part finished)."""
    from codemix.proxy_train.tokenizer import token_dtype

    dtype = np.dtype(_ctx.dtype)
    tok = _tokenizer()
    token_dtype(tok.vocab_size, _ctx.dtype)  # ids must fit
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    outs: dict[tuple[str, str], object] = {}
    lengths: dict[tuple[str, str], list[int]] = {}
    doc_bytes: dict[tuple[str, str], list[int]] = {}
    stats: dict[str, dict] = {}
    batch: list[tuple[str, str, str, int, object]] = []

    def flush():
        for (_, domain, split, n_bytes, value), ids in zip(
            batch, tok.encode_batch([t for t, *_ in batch]), strict=True
        ):
            doc = np.empty(len(ids) + 1, dtype=dtype)
            doc[:-1], doc[-1] = ids, tok.eos_id
            key = (domain, split)
            if key not in outs:
                outs[key] = open(part / f"{domain}.{split}.bin", "wb")
                lengths[key], doc_bytes[key] = [], []
            outs[key].write(doc.tobytes())
            lengths[key].append(len(doc))
            doc_bytes[key].append(n_bytes)
            s = stats.setdefault(domain, {"documents": 0, "text_bytes": 0, "values": {}})
            s["documents"] += 1
            s["text_bytes"] += n_bytes
            if task.route.field:
                v = value if isinstance(value, str) else json.dumps(value)
                vs = s["values"].setdefault(v, {"documents": 0, "bytes": 0})
                vs["documents"] += 1
                vs["bytes"] += n_bytes
        batch.clear()

    size, read = 0, {}
    for item in _documents(task):
        if isinstance(item, dict):
            read = item
            break
        data, text, domain, split, value = item
        batch.append((text, domain, split, len(data), value))
        size += len(data)
        if size >= _BATCH_BYTES:
            flush()
            size = 0
    flush()
    for key, f in outs.items():
        f.close()
        rows = np.column_stack([lengths[key], doc_bytes[key]]).astype(np.int64)
        rows.tofile(part / f"{key[0]}.{key[1]}.len")  # tokens and text bytes of each document
    summary = {
        "index": task.index,
        "path": str(task.source.path),
        "domains": {
            d: {
                **stats.get(d, {"documents": 0, "text_bytes": 0, "values": {}}),
                **{f"{s}_documents": len(lengths.get((d, s), [])) for s in SPLITS},
                **{f"{s}_tokens": int(sum(lengths.get((d, s), []))) for s in SPLITS},
                **{f"read_{s}_bytes": read.get(d, {}).get(s, 0) for s in SPLITS},
            }
            for d in sorted(set(read) | set(stats))
        },
    }
    atomic_write_text(part / "done.json", json.dumps(summary))
    return summary


# -- assembly ---------------------------------------------------------------------------


@dataclass
class Segment:
    """Documents of one domain and split in one token file (a part's, or a shard's)."""

    path: Path
    lengths: np.ndarray  # tokens of each document, end-of-document included
    n_bytes: int  # text bytes of its documents
    last_bytes: int  # text bytes of its last document (which may have to move)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


def assemble(
    name: str,
    segments: dict[str, list[Segment]],
    out: Path,
    dtype: np.dtype,
    whole: bool = True,
) -> dict:
    """Concatenate each split's segments into out/{train,val}.{bin,idx}, hashing as it goes;
    returns the token, document and hash entries of the domain's manifest.

    For a `whole` domain (not one shard of it), a split left empty takes the other split's
    last document, so a tiny domain still has both; fewer than 2 documents is an error."""
    segments = {s: [g for g in segments.get(s, []) if len(g.lengths)] for s in SPLITS}
    docs = {s: sum(len(g.lengths) for g in segments[s]) for s in SPLITS}
    moved = None  # (from split, to split)
    if whole:
        if docs["train"] + docs["val"] < 2:
            raise CodemixError(
                f"domain {name!r}: {docs['train'] + docs['val']} document(s); a domain needs "
                "at least 2 to split into train and validation (a plain file is one document "
                "unless --doc-separator LINE splits it)"
            )
        if docs["val"] == 0:
            moved = ("train", "val")
        elif docs["train"] == 0:
            moved = ("val", "train")
    out.mkdir(parents=True, exist_ok=True)
    itemsize = np.dtype(dtype).itemsize
    tail: tuple[Path, int, int] | None = None  # the moved document: file, start, tokens
    if moved:
        last = segments[moved[0]][-1]
        n = int(last.lengths[-1])
        tail = (last.path, last.tokens - n, n)
        segments[moved[0]][-1] = Segment(
            last.path, last.lengths[:-1], last.n_bytes - last.last_bytes, -1
        )
    info: dict = {"blake2b": {}}
    for split in SPLITS:
        h = hashlib.blake2b(digest_size=HASH_BYTES)
        pieces = [(g.path, 0, g.tokens) for g in segments[split]]
        lens = [g.lengths for g in segments[split]]
        if moved and moved[1] == split:
            pieces.append(tail)
            lens.append(np.array([tail[2]], dtype=np.int64))
        with open(out / f"{split}.bin", "wb") as f:
            for path, start, n in pieces:
                with open(path, "rb") as g:
                    g.seek(start * itemsize)
                    left = n * itemsize
                    while left:
                        chunk = g.read(min(_COPY, left))
                        if not chunk:
                            raise CodemixError(f"{path}: shorter than its lengths say")
                        f.write(chunk)
                        h.update(chunk)
                        left -= len(chunk)
            f.flush()
            os.fsync(f.fileno())
        all_lens = np.concatenate(lens) if lens else np.zeros(0, np.int64)
        idx = np.concatenate([[0], np.cumsum(all_lens)]).astype(np.int64).tobytes()
        (out / f"{split}.idx").write_bytes(idx)
        info[f"{split}_tokens"] = int(all_lens.sum())
        info[f"{split}_documents"] = len(all_lens)
        info[f"{split}_bytes"] = sum(g.n_bytes for g in segments[split]) + (
            last.last_bytes if moved and moved[1] == split else 0
        )
        if not whole:  # a shard's last document may have to move when the shards are merged
            info[f"last_{split}_bytes"] = segments[split][-1].last_bytes if segments[split] else 0
        info["blake2b"][f"{split}.bin"] = h.hexdigest()
        info["blake2b"][f"{split}.idx"] = hashlib.blake2b(idx, digest_size=HASH_BYTES).hexdigest()
    return info


def part_segments(part: Path, domain: str) -> dict[str, list[Segment]]:
    out = {}
    for split in SPLITS:
        lens = part / f"{domain}.{split}.len"
        if lens.is_file():
            rows = np.fromfile(lens, np.int64).reshape(-1, 2)
            out[split] = [
                Segment(
                    part / f"{domain}.{split}.bin",
                    rows[:, 0],
                    int(rows[:, 1].sum()),
                    int(rows[-1, 1]),
                )
            ]
    return out
