"""Reading per-domain sources as a stream of documents.

Formats by suffix: .jsonl / .jsonl.zst / .json.gz (one JSON object per line, a text field),
.parquet (a text column), anything else one document per file (.txt, source code), or one per
stretch between `separator` lines (fortune files, `%`). A directory is a source tree: every
file below it whose suffix is in `extensions`.
Nothing here holds a whole file in memory; parquet is read in row batches through polars.

A `Route` says which domain a file's documents go to: one named domain (`--domain`), or the
value of a field of each document mapped to a domain (`--source` with `--domain-from` and
`--map`), as SlimPajama names its sources in `meta.redpajama_set_name`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from codemix.core.errors import CodemixError

CODE_EXTENSIONS = (
    ".py .pyi .ipynb .c .h .cc .cpp .hpp .cu .java .kt .scala .go .rs .js .jsx .ts .tsx .rb "
    ".php .cs .swift .m .mm .r .jl .lua .pl .sh .bash .sql .hs .ml .ex .erl .clj .dart .f90 "
    ".html .css .xml .json .yaml .yml .toml .md .rst .tex .txt"
).split()
_CHUNK = 1 << 20


def source_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in (
        (".jsonl.zst", "jsonl.zst"),
        (".json.zst", "jsonl.zst"),
        (".jsonl.gz", "json.gz"),
        (".json.gz", "json.gz"),
        (".jsonl", "jsonl"),
        (".parquet", "parquet"),
    ):
        if name.endswith(suffix):
            return fmt
    return "file"


@dataclass(frozen=True)
class SourceFile:
    path: Path
    size: int
    mtime_ns: int

    @property
    def format(self) -> str:
        return source_format(self.path)


@dataclass(frozen=True)
class ReadOptions:
    text_field: str = "text"  # JSON lines (SlimPajama, Dolma)
    content_field: str = "content"  # parquet (The Stack)
    extensions: tuple[str, ...] = field(default=tuple(CODE_EXTENSIONS))
    separator: str | None = None  # a plain file's line that ends one document, begins the next

    def __post_init__(self):
        sep = self.separator
        if sep is not None and (not sep.strip() or "\n" in sep or "\r" in sep):
            raise CodemixError(
                f"--doc-separator {sep!r}: expected one line of visible text, such as '%'"
            )


DROP = "-"  # --map VALUE=- drops the documents with that value
ANY = "*"  # --map *=DOMAIN takes every value not named


@dataclass(frozen=True)
class Route:
    """Where a file's documents go: `domain`, or the domain `mapping` gives the value of
    `field` (a dotted path into a JSON record, or a parquet column)."""

    domain: str | None = None
    field: str | None = None
    mapping: tuple[tuple[str, str], ...] = ()  # (value, domain or DROP); ANY catches the rest

    def __post_init__(self):
        if (self.domain is None) == (self.field is None):
            raise CodemixError("a source needs a domain or a field to route its documents by")

    @cached_property
    def _table(self) -> dict[str, str]:  # asked once per document: built once per route
        return dict(self.mapping)

    @property
    def domains(self) -> tuple[str, ...]:
        """The domains this route can feed, in order of first mention."""
        if self.domain is not None:
            return (self.domain,)
        return tuple(dict.fromkeys(d for _, d in self.mapping if d != DROP))

    def domain_of(self, value, path: Path | str, line: int = 0) -> str | None:
        """The domain of a document whose field holds `value` (read at `path`, `line`);
        None drops it."""
        if self.domain is not None:
            return self.domain
        key = value if isinstance(value, str) else json.dumps(value)
        target = self._table.get(key, self._table.get(ANY))
        if target is None:
            where = f"{path}:{line}" if line else str(path)
            raise CodemixError(
                f"{where}: {self.field} is {key!r}, which no --map names (add --map "
                f"'{key}=DOMAIN', or --map '*=DOMAIN' or '*=-' for every value not named)"
            )
        return None if target == DROP else target


def field_value(record: dict, path: str, where: str):
    """The value at a dotted path (`meta.redpajama_set_name`) of a JSON record."""
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise CodemixError(f"{where}: no field {path!r} (see --domain-from)")
        value = value[part]
    return value


def resolve(domain: str, pattern: str, options: ReadOptions) -> list[SourceFile]:
    """Expand a path, glob or directory into files, sorted, or fail naming the pattern."""
    p = Path(os.path.expanduser(pattern))
    if p.is_dir():
        exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in options.extensions}
        paths = [
            Path(root) / f
            for root, dirs, files in os.walk(p)
            if not dirs.sort()  # sorted, deterministic walk
            for f in sorted(files)
            if Path(f).suffix.lower() in exts and "__pycache__" not in root
        ]
        if not paths:
            if not any(files for _, _, files in os.walk(p)):
                raise CodemixError(f"domain {domain!r}: directory {pattern} holds no file")
            raise CodemixError(
                f"domain {domain!r}: directory {pattern} holds no file with a suffix in "
                f"{sorted(exts)}{_suffixes_held(p)} (see --extensions, or name the files "
                "with a glob)"
            )
    else:
        paths = sorted(Path(x) for x in glob.glob(os.path.expanduser(pattern), recursive=True))
        paths = [x for x in paths if x.is_file()]
        if not paths:
            raise CodemixError(f"domain {domain!r}: no file matches {pattern!r}")
    files = []
    for path in paths:
        try:
            st = path.stat()
        except OSError as e:
            raise CodemixError(f"domain {domain!r}: cannot read {path}: {e.strerror}") from e
        files.append(SourceFile(path, st.st_size, st.st_mtime_ns))
    if sum(f.size for f in files) == 0:
        raise CodemixError(f"domain {domain!r}: every file matching {pattern!r} is empty")
    return files


def _suffixes_held(directory: Path) -> str:
    """`; it holds .u8 (28), no suffix (29), ...`: what a user could pass instead."""
    counts: dict[str, int] = {}
    for _, _, files in os.walk(directory):
        for f in files:
            suffix = Path(f).suffix.lower() or "no suffix"
            counts[suffix] = counts.get(suffix, 0) + 1
    common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    held = ", ".join(f"{s} ({n})" for s, n in common[:6])
    return f"; it holds {held}" + (f" and {len(common) - 6} more suffixes" if common[6:] else "")


def _raw_chunks(
    path: Path, fmt: str, on_raw: Callable[[int], None] = lambda n: None
) -> Iterator[bytes]:
    """Decompressed bytes of a file, failing on a truncated or corrupt stream; `on_raw` is
    told how many bytes of the file itself were read (for progress)."""
    import zstandard

    with open(path, "rb") as f:
        if fmt == "jsonl":
            while chunk := f.read(_CHUNK):
                on_raw(len(chunk))
                yield chunk
            return
        if fmt == "json.gz":
            d = zlib.decompressobj(wbits=47)  # gzip header, possibly several members
            fed = False
            while raw := f.read(_CHUNK):
                on_raw(len(raw))
                while raw:
                    fed = True
                    try:
                        yield d.decompress(raw)
                    except zlib.error as e:
                        raise CodemixError(f"{path}: corrupt gzip data ({e})") from e
                    raw = d.unused_data if d.eof else b""
                    if d.eof:
                        d, fed = zlib.decompressobj(wbits=47), False
            if fed and not d.eof:
                raise CodemixError(f"{path}: gzip stream ends early (truncated file?)")
            return
        # zstd: one or more frames; a frame that has begun must end, else truncated
        d, fed = zstandard.ZstdDecompressor().decompressobj(), False
        while raw := f.read(_CHUNK):
            on_raw(len(raw))
            while raw:
                fed = True
                try:
                    yield d.decompress(raw)
                except zstandard.ZstdError as e:
                    raise CodemixError(f"{path}: corrupt zstd data ({e})") from e
                raw = d.unused_data if d.eof else b""
                if d.eof:
                    d, fed = zstandard.ZstdDecompressor().decompressobj(), False
        if fed and not d.eof:
            raise CodemixError(f"{path}: zstd stream ends early (truncated file?)")


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    tail = b""
    for chunk in chunks:
        buf = tail + chunk
        lines = buf.split(b"\n")
        tail = lines.pop()
        yield from lines
    if tail:
        yield tail


def _json_record(
    line: bytes, path: Path, lineno: int, key: str, field: str | None
) -> tuple[str | None, object]:
    """(text, value of `field` or None) of one JSON line."""
    try:
        record = json.loads(line)
    except ValueError as e:
        raise CodemixError(f"{path}:{lineno}: not valid JSON ({e})") from e
    if not isinstance(record, dict) or key not in record:
        raise CodemixError(f"{path}:{lineno}: no {key!r} field (see --text-field)")
    text = record[key]
    if text is not None and not isinstance(text, str):
        raise CodemixError(f"{path}:{lineno}: field {key!r} is {type(text).__name__}, not text")
    return text, field_value(record, field, f"{path}:{lineno}") if field else None


def _parquet_column(path: Path, key: str, field: str | None = None) -> None:
    import polars as pl

    try:
        schema = pl.scan_parquet(path).collect_schema()
    except Exception as e:  # polars raises several types for a bad footer
        raise CodemixError(f"{path}: not a readable parquet file ({e})") from e
    if key not in schema:
        raise CodemixError(
            f"{path}: no column {key!r} (columns: {', '.join(schema.names())}; see --content-field)"
        )
    if schema[key] not in (pl.String, pl.Binary):
        raise CodemixError(f"{path}: column {key!r} is {schema[key]}, not text")
    if field and field not in schema:
        raise CodemixError(
            f"{path}: no column {field!r} (columns: {', '.join(schema.names())}; see --domain-from)"
        )


def check(source: SourceFile, options: ReadOptions, field: str | None = None) -> str:
    """Validate a file before any work and return its content hash (blake2b of raw bytes);
    `field` is the one documents are routed by, checked in the first record.

    Compressed files are decompressed to the end here, so a truncated one fails now rather
    than halfway through tokenisation."""
    fmt = source.format
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(source.path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if fmt == "parquet":
            _parquet_column(source.path, options.content_field, field)
        elif fmt == "file" and field:
            raise CodemixError(
                f"{source.path}: a plain file has no field {field!r} to route by; give it "
                "with --domain NAME=PATH, or use JSON lines or parquet with --domain-from"
            )
        elif fmt != "file":
            first = None
            for chunk_lines in _lines(_raw_chunks(source.path, fmt)):
                if first is None and chunk_lines.strip():
                    first = chunk_lines
            if first is not None:
                _json_record(first, source.path, 1, options.text_field, field)
    except OSError as e:
        raise CodemixError(f"cannot read {source.path}: {e.strerror or e}") from e
    return h.hexdigest()


def iter_documents(
    source: SourceFile, options: ReadOptions, on_bytes: Callable[[int], None] | None = None
) -> Iterator[str]:
    """Documents of one file, in order; `on_bytes` gets how many raw bytes were consumed."""
    for text, _, _ in iter_records(source, options, None, on_bytes):
        yield text


def iter_records(
    source: SourceFile,
    options: ReadOptions,
    field: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, object, int]]:
    """(document, value of `field` or None, line or row number from 1) of one file, in
    order; `on_bytes` gets how many raw bytes were consumed. Empty documents are skipped."""
    fmt = source.format
    report = on_bytes or (lambda n: None)
    if fmt == "file":
        with open(source.path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        report(source.size)
        if options.separator is None:
            if text.strip():
                yield text, None, 0
            return
        yield from _separated(text, options.separator.strip())
        return
    if fmt == "parquet":
        yield from _parquet_records(source, options.content_field, field, report)
        return
    for lineno, line in enumerate(_lines(_raw_chunks(source.path, fmt, report)), start=1):
        if line.strip():
            text, value = _json_record(line, source.path, lineno, options.text_field, field)
            if text and text.strip():
                yield text, value, lineno


def _separated(text: str, separator: str) -> Iterator[tuple[str, None, int]]:
    """(document, None, first line) of a plain file split at lines that are `separator`
    (surrounding blanks aside); the separator lines belong to no document."""
    start, lines = 1, []
    for lineno, line in enumerate([*text.splitlines(keepends=True), separator], start=1):
        if line.strip() != separator:
            lines.append(line)
            continue
        if (doc := "".join(lines)).strip():
            yield doc, None, start
        start, lines = lineno + 1, []


def _parquet_records(source: SourceFile, key: str, field: str | None, report):
    import polars as pl

    total = max(1, int(pl.scan_parquet(source.path).select(pl.len()).collect().item()))
    columns = [key] + ([field] if field and field != key else [])
    seen, done = 0, 0
    for batch in pl.scan_parquet(source.path).select(columns).collect_batches(chunk_size=4096):
        texts = batch.get_column(key).to_list()
        values = batch.get_column(field).to_list() if field else [None] * len(texts)
        if field and None in values:
            row = seen + values.index(None)
            raise CodemixError(f"{source.path}: row {row}: column {field!r} is null")
        for row, (text, value) in enumerate(zip(texts, values, strict=True), start=seen + 1):
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            if text and text.strip():
                yield text, value, row
        seen += batch.height
        step = source.size * seen // total - done
        done += step
        report(step)
