"""`codemix prepare` and `codemix store info`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="read per-domain sources and write a token store",
        description="Tokenize per-domain sources into a token store: one memory-mapped "
        "token array per domain and split, and DIR/manifest.json.",
    )
    p.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="NAME=PATH_OR_GLOB",
        help="a domain and its sources (.txt, .jsonl, .jsonl.zst, .json.gz, "
        ".parquet, or a directory of source files); repeat for more domains "
        "or more sources of one domain",
    )
    p.add_argument(
        "--source",
        action="extend",
        nargs="+",
        default=[],
        metavar="GLOB",
        help="sources whose documents are routed to domains by a field (--domain-from, "
        "--map): globs, paths or directories (a glob the shell expanded works too); "
        "repeatable",
    )
    p.add_argument(
        "--domain-from",
        metavar="FIELD",
        help="the field that names a --source document's origin: a dotted path into each "
        "JSON record (meta.redpajama_set_name) or a parquet column",
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="VALUE=DOMAIN",
        help="documents whose --domain-from field is VALUE go to DOMAIN; VALUE=- drops "
        "them, '*=DOMAIN' takes every value not named; repeatable",
    )
    p.add_argument(
        "--sample",
        action="append",
        default=[],
        metavar="DOMAIN=TOKENS",
        help="keep a uniform random share of DOMAIN's documents (chosen by a hash of each "
        "document) worth TOKENS training tokens, e.g. text=20B; repeatable",
    )
    p.add_argument(
        "--sample-fraction",
        action="append",
        default=[],
        metavar="DOMAIN=F",
        help="keep the share F of DOMAIN's documents (by hash), without estimating its size",
    )
    p.add_argument(
        "--sample-pilot",
        type=float,
        default=0.05,
        metavar="F",
        help="share of a sampled domain's source bytes read first to estimate its size; "
        "domains under 256 MB are counted whole, which makes the sample exact "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that read and tokenise files (default: every core)",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="prepare only the K-th of N shards (K from 0) into a partial store; join the "
        "shards with `codemix store merge`",
    )
    p.add_argument(
        "--builtin",
        action="store_true",
        help="the embedded corpus: State of the Union addresses (text) and the "
        "Python standard library (code)",
    )
    p.add_argument("--out", metavar="DIR", help="where the token store goes")
    p.add_argument(
        "--tokenizer",
        default="bpe:8192",
        help="bpe:VOCAB (train byte-level BPE here), PATH/tokenizer.json, or bytes "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--val-frac",
        type=float,
        default=0.05,
        help="share of documents held out for validation (default: %(default)s)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "uint16", "uint32"],
        help="token id type on disk (default: uint16 when the vocabulary fits)",
    )
    p.add_argument("--text-field", default="text", help="JSON field holding the text")
    p.add_argument(
        "--content-field",
        default="content",
        help="parquet column holding the text (The Stack: content)",
    )
    p.add_argument(
        "--extensions",
        default=None,
        help="comma-separated suffixes read from directories (default: common "
        "source-code and text suffixes)",
    )
    p.add_argument(
        "--doc-separator",
        metavar="LINE",
        help="a line that ends one document and begins the next in plain files, such as "
        "'%%' in fortune files (default: one document per plain file)",
    )
    p.add_argument(
        "--tokenizer-sample",
        default="8M",
        help="bytes of text the BPE is trained on, drawn from all domains in "
        "proportion (default: %(default)s)",
    )
    p.add_argument("--summary", metavar="DIR", help="print the manifest of the store DIR and exit")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="build the store even if its inputs are unchanged (after `codemix store info "
        "--verify` reports damage)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_prepare)

    store = sub.add_parser("store", help="inspect a token store")
    store_sub = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    info = store_sub.add_parser(
        "info",
        help="print a token store's manifest as a table and check its files",
        description="Print a token store's manifest as a table and check every data file's "
        "size against it; exits with status 2 when the store is damaged.",
    )
    info.add_argument("dir", metavar="DIR")
    info.add_argument(
        "--verify",
        action="store_true",
        help="also recompute every data file's hash and compare it with the manifest "
        "(reads the whole store)",
    )
    info.set_defaults(func=_info)
    merge = store_sub.add_parser(
        "merge",
        help="join the shards of one build (prepare --shard K/N) into one store",
        description="Join partial stores made by `codemix prepare --shard K/N` with one "
        "command and tokenizer into the store a one-machine build would make.",
    )
    merge.add_argument("parts", nargs="+", metavar="PART")
    merge.add_argument("--out", required=True, metavar="DIR")
    merge.set_defaults(func=_merge)


def _merge(args) -> int:
    import time

    from codemix.proxy_train.merge import merge_stores
    from codemix.proxy_train.store import format_summary

    t0 = time.time()
    status, manifest = merge_stores(args.parts, args.out)
    if status == "up-to-date":
        print(f"{args.out} already holds these shards merged, nothing to do")
    else:
        print(f"merged {len(args.parts)} shards into {args.out} in {time.time() - t0:.1f} s")
    print(format_summary(manifest, args.out))
    return 0


def _pairs(items: list[str], flag: str, example: str) -> list[tuple[str, str]]:
    from codemix.core.errors import CodemixError

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise CodemixError(f"{flag} {item!r}: expected {example}")
        out.append((key, value))
    return out


def _shard(text: str | None) -> tuple[int, int] | None:
    from codemix.core.errors import CodemixError

    if text is None:
        return None
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise CodemixError(f"--shard {text!r}: expected K/N, e.g. 0/8 (shards count from 0)")
    return int(k), int(n)


def _info(args) -> int:
    from codemix.proxy_train.store import check_store, format_summary, read_manifest, verify_store

    verify = getattr(args, "verify", False)  # `prepare --summary DIR` comes here too
    manifest = read_manifest(args.dir, partial=True)
    print(format_summary(manifest, args.dir))
    if shard := manifest.get("shard"):
        print(f"shard {shard['index']} of {shard['count']} (join them with `codemix store merge`)")
    damaged = check_store(args.dir, manifest)  # prepare rebuilds such a store by itself
    changed = verify_store(args.dir, manifest) if verify else []
    if not damaged and not changed:
        if verify:
            print("verified: every data file matches the hash recorded when it was built")
        return 0
    print(f"\nstore {args.dir} is damaged:")
    for problem in damaged + changed:
        print(f"  {problem}")
    print(
        "rebuild it: run the `codemix prepare` command that built it again"
        + ("" if damaged else ", adding --rebuild")
    )
    return 2


def _prepare(args) -> int:
    from pathlib import Path

    from codemix.core.errors import CodemixError
    from codemix.core.units import parse_count

    if args.summary:
        args.dir = args.summary
        return _info(args)
    if not args.out:
        raise CodemixError("--out DIR is required (where the token store goes)")
    import os

    from codemix.proxy_train import prepare as prep
    from codemix.proxy_train.sources import CODE_EXTENSIONS, ReadOptions
    from codemix.proxy_train.store import format_summary
    from codemix.proxy_train.tokenizer import TokenizerSpec

    domains: dict[str, tuple[str, ...]] = prep.builtin_domains() if args.builtin else {}
    for item in args.domain:
        name, sep, pattern = item.partition("=")
        if not sep or not name or not pattern:
            raise CodemixError(f"--domain {item!r}: expected NAME=PATH_OR_GLOB")
        domains[name] = domains.get(name, ()) + (pattern,)
    exts = (
        tuple(e.strip() for e in args.extensions.split(",") if e.strip())
        if args.extensions
        else tuple(CODE_EXTENSIONS)
    )
    cfg = prep.PrepareConfig(
        domains=domains,
        out=Path(args.out),
        tokenizer=TokenizerSpec.parse(args.tokenizer),
        val_frac=args.val_frac,
        dtype=args.dtype,
        read=ReadOptions(args.text_field, args.content_field, exts, args.doc_separator),
        tokenizer_sample_bytes=int(parse_count(args.tokenizer_sample, "--tokenizer-sample")),
        routed=tuple(args.source),
        domain_from=args.domain_from,
        mapping=tuple(_pairs(args.map, "--map", "VALUE=DOMAIN or VALUE=-")),
        sample={
            d: int(parse_count(v, f"--sample {d}"))
            for d, v in _pairs(args.sample, "--sample", "DOMAIN=TOKENS (e.g. text=20B)")
        },
        sample_fraction={
            d: _fraction(v, d)
            for d, v in _pairs(args.sample_fraction, "--sample-fraction", "DOMAIN=F")
        },
        sample_pilot=args.sample_pilot,
        workers=len(os.sched_getaffinity(0)) if args.workers is None else args.workers,
        shard=_shard(args.shard),
    )
    result = prep.prepare(cfg, quiet=args.quiet, rebuild=args.rebuild)
    what = f"shard {args.shard} of " if args.shard else ""
    if result.status == "up-to-date":
        print(f"{what}{args.out} is up to date: inputs and options unchanged, nothing to do")
    elif result.damage:
        print(f"rebuilt the damaged store {args.out} in {result.seconds:.1f} s")
    else:
        print(f"built {what}{args.out} in {result.seconds:.1f} s")
    print(format_summary(result.manifest, args.out))
    return 0


def _fraction(text: str, domain: str) -> float:
    from codemix.core.errors import CodemixError

    try:
        return float(text)
    except ValueError:
        what = f"--sample-fraction {domain}={text}"
        raise CodemixError(f"{what}: expected a share like 0.1") from None
