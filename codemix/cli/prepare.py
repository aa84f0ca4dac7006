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


def _info(args) -> int:
    from codemix.proxy_train.store import check_store, format_summary, read_manifest, verify_store

    verify = getattr(args, "verify", False)  # `prepare --summary DIR` comes here too
    manifest = read_manifest(args.dir)
    print(format_summary(manifest, args.dir))
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
        read=ReadOptions(args.text_field, args.content_field, exts),
        tokenizer_sample_bytes=int(parse_count(args.tokenizer_sample, "--tokenizer-sample")),
    )
    result = prep.prepare(cfg, quiet=args.quiet, rebuild=args.rebuild)
    if result.status == "up-to-date":
        print(f"{args.out} is up to date: inputs and options unchanged, nothing to do")
    elif result.damage:
        print(f"rebuilt the damaged store {args.out} in {result.seconds:.1f} s")
    else:
        print(f"built {args.out} in {result.seconds:.1f} s")
    print(format_summary(result.manifest, args.out))
    return 0
