"""Progress display for long loops.

In a terminal: a tqdm bar. Anywhere else (a cluster job's log, CI, a pipe) or without
tqdm (bare accelerator hosts carry only the JAX stack): plain lines, no carriage returns,
at most one every CODEMIX_PROGRESS_INTERVAL seconds (default 30) or at each further 10 %
of the total, whichever comes first (but not within a second of the last), and a last one
when done, so a day-long run writes a log a person can read rather than megabytes of
redrawn bars.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

DEFAULT_INTERVAL = 30.0
_MIN_GAP = 1.0  # seconds between lines written for tenths of the total
_now = time.monotonic  # tests replace it rather than sleep


def _interval() -> float:
    try:
        return float(os.environ.get("CODEMIX_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False


def _bytes(x: float) -> str:
    if abs(x) < 1024:
        return f"{x:.0f} B"
    for suffix in ("KiB", "MiB", "GiB"):
        x /= 1024
        if abs(x) < 1024:
            return f"{x:.1f} {suffix}"
    return f"{x / 1024:.1f} TiB"


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """A progress display; `unit="B"` counts bytes (shown as KiB, MiB, ...).

    `interval` (seconds between plain lines) defaults to CODEMIX_PROGRESS_INTERVAL or 30;
    `file` defaults to stderr. Usable as a context manager."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "",
        enabled: bool = True,
        unit: str = "step",
        *,
        file: TextIO | None = None,
        interval: float | None = None,
    ):
        self.enabled, self.n, self.total, self.desc, self.unit = enabled, initial, total, desc, unit
        self.postfix: dict = {}
        self._postfix_str = ""
        self.file = file if file is not None else sys.stderr
        self.interval = _interval() if interval is None else interval
        self._bar = None
        self._start_n, self._t0 = initial, _now()
        self._last_n, self._last_t = initial, self._t0
        self._closed = not enabled
        if not enabled:
            return
        if _is_terminal(self.file):
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
                self._bar = tqdm(
                    total=total,
                    initial=initial,
                    desc=desc,
                    unit=unit,
                    dynamic_ncols=True,
                    file=self.file,
                    **scale,
                )
                return
        self._write()  # the first line says what has started

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, postfix: dict) -> None:
        self.postfix, self._postfix_str = dict(postfix), ""
        if self._bar is not None:
            self._bar.set_postfix(postfix)

    def set_postfix_str(self, text: str) -> None:
        self.postfix, self._postfix_str = {}, text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif not self._closed and self._due():
            self._write()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.n != self._last_n:
            self._write()

    def _due(self) -> bool:
        since = _now() - self._last_t
        if since >= self.interval:
            return True
        # a further tenth of the total, unless the loop is so fast its tenths would flood
        # the log (a quick job then writes its first and last lines only)
        if self.total and self.total > 0 and since >= min(_MIN_GAP, self.interval):
            return 10 * self.n // self.total > 10 * self._last_n // self.total
        return False

    def _fmt(self, x: float) -> str:
        return _bytes(x) if self.unit == "B" else f"{x:,.0f}"

    def line(self) -> str:
        """What a plain progress line says now: desc, n/total, rate, ETA, postfix."""
        elapsed = max(_now() - self._t0, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        parts = [f"{self._fmt(self.n)}/{self._fmt(self.total)}"]
        if self.unit != "B":
            parts[0] += f" {self.unit}"
        if self.total and self.total > 0:
            parts[0] += f" ({100 * self.n // self.total}%)"  # 99.6 % is not done
        if self.n > self._start_n:
            per_s = f"{self._fmt(rate)}/s" if self.unit == "B" else f"{_num(rate)} {self.unit}/s"
            parts.append(per_s)
            if self.total and self.n < self.total:
                parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
            parts.append(f"elapsed {_clock(elapsed)}")
        extra = self._postfix_str or " ".join(f"{k}={v}" for k, v in self.postfix.items())
        if extra:
            parts.append(extra)
        return f"{self.desc or 'progress'}: " + ", ".join(parts)

    def _write(self) -> None:
        self._last_n, self._last_t = self.n, _now()
        print(self.line(), file=self.file, flush=True)


def track(iterable, total: int | None = None, desc: str = "", unit: str = "it", enabled=True):
    """Iterate with a Progress display (a bar in a terminal, bounded plain lines elsewhere)."""
    items = list(iterable) if total is None else iterable
    with Progress(len(items) if total is None else total, 0, desc, enabled, unit) as bar:
        for x in items:
            yield x
            bar.update(1)
