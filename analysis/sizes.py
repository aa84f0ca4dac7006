"""Target sizes: what `--size 2.8B` means to a fit.

A preset's name is not its parameter count: "2.8B" has 2.53e9 parameters at a vocabulary of
4,096 (tied embeddings), and "470M" 3.08e8. A size law counts parameters the way its size
column did, so a preset resolves to the preset's model at the vocabulary of the fitted runs,
counted as that column counts: `params` is the total, `non_embedding_params` leaves the
embeddings out. A fit on another column (RegMix's, say), or one that records no vocabulary,
cannot place a preset and refuses it; a count ("3e8", "300M" when no preset has that name)
is always taken as written.
"""

from __future__ import annotations

from dataclasses import dataclass

from codemix.analysis.fitfile import FitFile
from codemix.core.errors import CodemixError
from codemix.models.accounting import param_count
from codemix.models.presets import PRESETS, model_config, parse_size

__all__ = ["COUNTED_BY", "Size", "resolve_size", "sci"]

# size columns of a study export -> which part of the preset's parameters they count
COUNTED_BY = {"params": "total", "non_embedding_params": "non_embedding"}


def sci(x: float) -> str:
    """2.53e9, 3.08e8: three significant digits, exponent without '+' or zeros."""
    mantissa, _, exp = f"{x:.3g}".partition("e")
    return f"{mantissa}e{int(exp)}" if exp else mantissa


@dataclass(frozen=True)
class Size:
    """A target size as given and as the fit's size law counts it."""

    text: str
    count: float  # parameters, counted as the fit's size column counts them
    preset: str | None = None  # the preset it named, if any
    vocab_size: int | None = None  # the vocabulary the preset was counted at
    counted: str = ""  # "total" or "non_embedding"

    @property
    def short(self) -> str:
        """'2.8B' for a preset, '2.5e9 parameters' for a count."""
        return self.text if self.preset else f"{self.text} parameters"

    def __str__(self) -> str:
        """'2.8B (2.53e9 parameters: the preset at vocabulary 4096, total)', or '3e8
        parameters' for a count."""
        if self.preset is None:
            return f"{self.text} parameters"
        part = self.counted.replace("_", "-")
        return (
            f"{self.text} ({sci(self.count)} parameters: the preset at vocabulary "
            f"{self.vocab_size}, {part})"
        )


def _preset(text: str) -> str | None:
    """The preset `text` names (any case: '2.8b' is the preset too), or None."""
    by_lower = {name.lower(): name for name in PRESETS}
    return by_lower.get(str(text).strip().lower())


def resolve_size(text: str | float, fit: FitFile, what: str = "size") -> Size:
    """The parameter count that `text` (a preset or a count) means to the size laws of `fit`.

    A preset counts as the fit's size column does (`COUNTED_BY`) at the fit's vocabulary;
    without either it is refused, saying what to give instead. `what` names the flag in
    errors."""
    name = _preset(text) if isinstance(text, str) else None
    if name is None:
        count = parse_size(text, what)
        if count <= 0:  # the laws take log N: caught here, not as a fit's error far below
            raise CodemixError(f"{what} {text}: a model size must be more than 0 parameters")
        return Size(str(text).strip(), count)
    counted = COUNTED_BY.get(fit.size_col or "")
    if fit.size_col is None:
        why = "the fit has no size column"
    elif counted is None:
        why = f"the fit's sizes come from column {fit.size_col!r}, which counts no preset"
    elif fit.vocab_size is None:
        why = "FIT.json records no vocabulary (its table had no single vocab_size)"
    else:
        why = ""
    if why:
        raise CodemixError(
            f"{what} {text} names a preset, whose parameter count depends on the vocabulary and "
            f"on what the fit's sizes count, but {why}; give a count (e.g. {what} 2.5e9) or "
            "refit on params or non_embedding_params of a study export"
        )
    # the count does not depend on the context length (rotary positions): any will do
    counts = param_count(model_config(name, vocab_size=fit.vocab_size, seq_len=1))
    return Size(name, float(getattr(counts, counted)), name, fit.vocab_size, counted)
