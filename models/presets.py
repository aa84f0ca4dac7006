"""Model sizes by name, and counts written the way people write them ("470M", "2.8B").

A preset fixes the shape only (layers, width, heads, MLP width); the vocabulary comes from
the token store and the context length from the study, so `model_config` takes both.

The proxy ladder ("0.5M" ... "124M") follows one rule; its names are non-embedding
parameter counts:
- head dim 64 (n_heads = d_model / 64);
- d_ff = 8/3 * d_model rounded up to a multiple of 64 (SwiGLU's three matrices then hold
  about as many weights as a 4x GELU MLP's two);
- aspect ratio d_model / n_layers between 32 and 64 (GPT-2 small sits at 64; Kaplan et al.
  2020 find the loss nearly flat across such a range);
- depth and width never shrink going up the ladder;
- each non-embedding count within a factor 1.2 of its name; among ladders meeting all these,
  the one with the least summed |log(count / name)|.
"124M" is GPT-2 small (12 layers, d=768, 12 heads): its name counts GPT-2's 50k-token
embedding and learned positions; it has 85M non-embedding parameters, and the rule above
picks exactly this shape for 85M.

"470M" and "2.8B" stand for the models of Aryabumi et al. 2024, whose shapes the paper does
not give. Assumed here: the depth and width of common decoder-only models of those sizes
(24 x 1024 as GPT-2 medium and Pythia-410M; 32 x 2560 as GPT-3 2.7B and Pythia-2.8B),
head dim 64 and the SwiGLU d_ff rule above. Their non-embedding counts are 304M and 2.52B;
the names are reached only with a large vocabulary (and untied embeddings).

"test" is a tiny shape for tests and smoke runs, outside the ladder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from codemix.core.errors import CodemixError
from codemix.core.units import format_count, parse_count
from codemix.models.config import ModelConfig

__all__ = ["LADDER", "PRESETS", "Shape", "format_size", "model_config", "parse_size"]


@dataclass(frozen=True)
class Shape:
    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int


PRESETS: dict[str, Shape] = {
    "test": Shape(2, 64, 2, 192),
    "0.5M": Shape(2, 128, 2, 384),
    "1M": Shape(4, 128, 2, 384),
    "2M": Shape(5, 192, 3, 512),
    "4M": Shape(5, 256, 4, 704),
    "8M": Shape(6, 320, 5, 896),
    "16M": Shape(9, 384, 6, 1024),
    "32M": Shape(10, 512, 8, 1408),
    "64M": Shape(11, 704, 11, 1920),
    "124M": Shape(12, 768, 12, 2048),
    "470M": Shape(24, 1024, 16, 2752),
    "2.8B": Shape(32, 2560, 40, 6848),
}
LADDER: tuple[str, ...] = ("0.5M", "1M", "2M", "4M", "8M", "16M", "32M", "64M", "124M")


def model_config(
    name_or_shape: str | Shape, vocab_size: int, seq_len: int, **overrides
) -> ModelConfig:
    """The `ModelConfig` of a preset (or an explicit `Shape`); `overrides` set other fields."""
    if isinstance(name_or_shape, Shape):
        shape = name_or_shape
    elif name_or_shape in PRESETS:
        shape = PRESETS[name_or_shape]
    else:
        raise CodemixError(f"unknown model size {name_or_shape!r}; known: {', '.join(PRESETS)}")
    fields = dataclasses.asdict(shape) | {"vocab_size": vocab_size, "seq_len": seq_len}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise CodemixError(f"ModelConfig has no field(s) {', '.join(sorted(unknown))}")
    return ModelConfig(**(fields | overrides))


def parse_size(size: str | int | float, what: str = "size") -> float:
    """'470M' -> 4.7e8, '2.8b' -> 2.8e9, '1.5K' -> 1500.0, '3e6' -> 3e6 (suffixes K/M/B/T).

    The one reader of sizes written as counts; `what` names the value in errors. A preset's
    name read this way is its name's number, not its parameters (see `model_config`)."""
    return parse_count(size, what)


format_size = format_count
