"""Counts written the way people write them: "470M" parameters, "200B" tokens."""

from __future__ import annotations

import re

from codemix.errors import CodemixError

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_count(value: str | int | float, what: str = "count") -> float:
    """'200B' -> 2e11, '1.5k' -> 1500, '3e6' -> 3e6, 42 -> 42."""
    if isinstance(value, bool):
        raise CodemixError(f"{what}: expected a number like 20M or 2.8B, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _PATTERN.match(str(value))
    if not m:
        raise CodemixError(
            f"{what}: cannot read {value!r}; write a number with an optional suffix "
            "k, M, B or T (e.g. 20M, 2.8B)"
        )
    return float(m.group(1)) * _SUFFIX[m.group(2).lower()]


def format_count(x: float, digits: int = 3) -> str:
    """2.8e9 -> '2.8B'; the inverse of parse_count up to rounding."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{suffix}"
    return f"{x:.{digits}g}"
