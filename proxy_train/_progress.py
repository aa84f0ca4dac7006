"""Progress display for long loops: tqdm where it is installed, else a plain line every
ten seconds (bare accelerator hosts carry only the JAX stack)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(
        self, total: int, initial: int = 0, desc: str = "", enabled: bool = True, unit: str = "step"
    ):
        self.enabled, self.n, self.total, self.desc = enabled, initial, total, desc
        self.postfix: dict = {}
        self._bar = None
        self._last = time.time()
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr
        )

    def set_postfix(self, postfix: dict) -> None:
        self.postfix = postfix
        if self._bar is not None:
            self._bar.set_postfix(postfix)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and (time.time() - self._last > 10 or self.n == self.total):
            self._last = time.time()
            extra = " ".join(f"{k}={v}" for k, v in self.postfix.items())
            print(f"{self.desc} {self.n}/{self.total} {extra}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
