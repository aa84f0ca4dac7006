"""Argument types the commands share: values out of range refused by argparse, naming the
flag, before any work."""

from __future__ import annotations

import argparse


def at_least(k: int):
    """An argparse type: an integer of at least k."""

    def read(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < k:
            raise argparse.ArgumentTypeError(f"must be at least {k}, got {v}")
        return v

    return read
