"""The `codemix` command. Each area registers its subcommands from a module of this
package; those modules import only argparse at load time so `codemix --help` stays instant."""

from __future__ import annotations

import argparse
import sys

from codemix.core.errors import CodemixError
from codemix.core.interrupt import Interrupted

_AREAS = (
    "prepare",
    "evals",
    "presets",
    "train",
    "study",
    "analysis",
    "confirm",
    "report",
    "evaluate",
    "judge",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="codemix",
        description="Find how much code, of what kind, at which stage belongs in a "
        "pretraining mixture, from small proxy runs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in _AREAS:
        try:
            module = importlib.import_module(f"codemix.cli.{area}")
        except ModuleNotFoundError as e:
            if e.name != f"codemix.cli.{area}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CodemixError as e:
        print(f"codemix: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        detail = f": {e.detail}" if e.detail else ""
        print(f"codemix: stopped by {e.signal}{detail}", file=sys.stderr)
        print(f"resume with: {resume_command(argv)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("codemix: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `codemix ... | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that was run, to run again (storage passwords hidden)."""
    import shlex

    from codemix.core.secrets import redact

    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["codemix", *(redact(a) if "://" in a else a for a in args)])
