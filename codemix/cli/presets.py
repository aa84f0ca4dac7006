"""`codemix presets`: the model sizes, their parameter counts and FLOPs per token."""

from __future__ import annotations

import argparse

from codemix.cli._args import at_least


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets",
        help="list the model size presets with parameter counts and FLOPs per token",
        description="List the model size presets (the proxy ladder, the 470M and 2.8B "
        "targets, and a tiny test shape). Counts depend on the vocabulary, FLOPs on the "
        "context length too.",
    )
    p.add_argument(
        "--vocab",
        type=at_least(1),
        default=8192,
        metavar="V",
        help="vocabulary size (default: %(default)s)",
    )
    p.add_argument(
        "--seq-len",
        type=at_least(1),
        default=1024,
        metavar="T",
        help="context length in tokens (default: %(default)s)",
    )
    p.add_argument(
        "--untied", action="store_true", help="separate input and output embeddings (default: tied)"
    )
    p.set_defaults(func=_presets)


def _presets(args: argparse.Namespace) -> int:
    from codemix.models.accounting import flops_per_token, param_count
    from codemix.models.presets import PRESETS, format_size, model_config

    header = ("name", "layers", "width", "heads", "d_ff", "params", "non-emb", "FLOPs/token")
    rows = [header]
    for name, shape in PRESETS.items():
        cfg = model_config(name, args.vocab, args.seq_len, tied_embeddings=not args.untied)
        count = param_count(cfg)
        sizes = (format_size(count.total), format_size(count.non_embedding))
        flops = f"{flops_per_token(cfg):.3g}"
        shape_cells = (shape.n_layers, shape.d_model, shape.n_heads, shape.d_ff)
        rows.append((name, *map(str, shape_cells), *sizes, flops))
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    for row in rows:
        cells = [c.rjust(w) for c, w in zip(row, widths, strict=True)]
        cells[0] = row[0].ljust(widths[0])
        print("  ".join(cells))
    tied = "untied" if args.untied else "tied"
    print(
        f"\nvocab {args.vocab}, {tied} embeddings, context {args.seq_len} tokens.\n"
        "FLOPs/token (training) = 6N + 12*L*d*T, N = non-embedding + output projection."
    )
    return 0
