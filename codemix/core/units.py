"""Counts written the way people write them: "470M" parameters, "200B" tokens."""

from __future__ import annotations

import math
import re

from codemix.core.errors import CodemixError

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_PATTERN = re.compile(
    r"^\s*([0-9][0-9_]*(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?|\.[0-9]+)\s*([kmbgt]?)\s*$", re.IGNORECASE
)


def parse_count(value: str | int | float, what: str = "count") -> float:
    """'200B' -> 2e11, '1.5k' -> 1500, '3e6' -> 3e6, 42 -> 42; finite and >= 0."""
    if isinstance(value, bool):
        raise CodemixError(f"{what}: expected a number like 20M or 2.8B, got {value!r}")
    if isinstance(value, int | float):
        x = float(value)
    else:
        m = _PATTERN.match(str(value))
        if not m:
            raise CodemixError(
                f"{what}: cannot read {value!r}; write a number with an optional suffix "
                "k, M, B or T (e.g. 20M, 2.8B)"
            )
        x = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(x) or x < 0:
        raise CodemixError(f"{what}: {value!r} is not a finite number >= 0")
    return x


def format_count(x: float, digits: int = 3) -> str:
    """2.8e9 -> '2.8B', 999_999 -> '1M'; the inverse of parse_count up to rounding."""
    x = float(f"{x:.{digits}g}")  # round first, so 999_999 reads 1M rather than 1e+03k
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{suffix}"
    return f"{x:.{digits}g}"
