"""The staged mixture sampler: batch(step) is a pure function of (seed, step).

Within a stage, sequence slots ("seats", step * B + row) are shared out among domains by
nested rounding of cumulative targets: domain 1 owns round(n * w1) of the first n seats,
domain 2 round(rest * w2 / (1 - w1)) of the remaining ones, and so on. Every count is
monotone in n and within about half a seat per domain of its target, so any window of
consecutive batches has the requested shares, and the owner of any seat is found without
replaying the stages before it. A seat's draw number within its domain picks a window of
T + 1 tokens through a keyed permutation (a Feistel network, cycle-walked) that changes
with every epoch, so repeats come in a fresh order and are counted.
"""

from __future__ import annotations

import warnings
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codemix.core.errors import CodemixError
from codemix.proxy_train.schedule import StagePlan
from codemix.proxy_train.store import TokenStore

MAX_EPOCHS = 4.0
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread hash of uint64 arrays (for round keys)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def permute(i: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed bijection of range(n), evaluated at positions i (random access).

    An unbalanced four-round Feistel network on the b bits that hold n - 1 (so at most
    half its outputs fall outside range(n)), cycle-walked back into range(n)."""
    b = max(2, int(n - 1).bit_length())
    keys = _mix(np.arange(1, 5, dtype=np.uint64) + np.uint64(key & (2**64 - 1)))
    y = np.asarray(i, dtype=np.uint64).copy()
    todo = np.ones(y.shape, bool)
    with np.errstate(over="ignore"):
        while todo.any():
            v = y[todo]
            hi_bits, lo_bits = (b + 1) // 2, b // 2
            for k in keys:
                hi, lo = v >> np.uint64(lo_bits), v & np.uint64((1 << lo_bits) - 1)
                f = ((lo ^ k) * _GOLD) >> np.uint64(64 - hi_bits)  # multiply-shift hash
                v = (lo << np.uint64(hi_bits)) | (hi ^ f)
                hi_bits, lo_bits = lo_bits, hi_bits
            y[todo] = v
            todo[todo] = v >= np.uint64(n)
    return y.astype(np.int64)


def _counts(n: np.ndarray, order: Sequence[int], weights: np.ndarray) -> np.ndarray:
    """Seats of each domain among the first n seats of a stage (nested rounding).

    Returns a (D, len(n)) int64 array; columns sum to n."""
    out = np.zeros((len(weights), len(n)), np.int64)
    rest, rest_w = n.astype(np.int64), 1.0
    for k, d in enumerate(order):
        if k == len(order) - 1:
            out[d] = rest
            break
        share = min(1.0, weights[d] / rest_w) if rest_w > 0 else 0.0
        out[d] = np.floor(rest * share + 0.5).astype(np.int64)
        rest = rest - out[d]
        rest_w -= weights[d]
    return out


@dataclass(frozen=True)
class _StageDraws:
    plan: StagePlan
    weights: np.ndarray  # (D,) requested shares
    order: tuple[int, ...]  # domains with weight > 0, largest first
    prior: np.ndarray  # (D,) draws of each domain in earlier stages


class MixtureSampler:
    """Batches of B sequences of T + 1 tokens for any step of a staged schedule."""

    def __init__(
        self,
        store: TokenStore,
        plans: Sequence[StagePlan],
        batch_size: int,
        seq_len: int,
        seed: int = 0,
        split: str = "train",
        unique_tokens: dict[str, int] | None = None,
    ):
        if batch_size < 1 or seq_len < 1:
            raise CodemixError(f"batch_size {batch_size} and seq_len {seq_len} must be >= 1")
        self.store, self.B, self.T, self.seed = store, batch_size, seq_len, seed
        self.domains = store.domains
        self.split = split
        caps = unique_tokens or {}
        unknown = set(caps) - set(self.domains)
        if unknown:
            raise CodemixError(
                f"train.unique_tokens or unique_share names {sorted(unknown)}, which the token "
                f"store {store.path} does not have (domains: {', '.join(self.domains)})"
            )
        # repetition-matched proxies read a capped sample, shared by a population's samplers
        self._tokens = {d: store.tokens(d, split, cap=caps.get(d)) for d in self.domains}
        self.windows = np.array(
            [max(0, (len(self._tokens[d]) - 1) // seq_len) for d in self.domains], np.int64
        )
        self._stages: list[_StageDraws] = []
        prior = np.zeros(len(self.domains), np.int64)
        for p in plans:
            unknown = set(p.stage.mixture) - set(self.domains)
            if unknown:
                raise CodemixError(
                    f"stage {p.stage.name!r}: mixture names {sorted(unknown)}, which the "
                    f"token store {store.path} does not have (domains: "
                    f"{', '.join(self.domains)})"
                )
            w = np.array([float(p.stage.mixture.get(d, 0.0)) for d in self.domains])
            for d, wd, nw in zip(self.domains, w, self.windows, strict=True):
                if wd > 0 and nw == 0:
                    raise CodemixError(
                        f"stage {p.stage.name!r}: domain {d!r} has weight {wd} but only "
                        f"{len(self._tokens[d])} {split} tokens, less than one sequence of "
                        f"{seq_len + 1}"
                    )
            order = tuple(sorted(np.flatnonzero(w > 0), key=lambda k: (-w[k], k)))
            self._stages.append(_StageDraws(p, w, order, prior.copy()))
            seats = np.array([p.n_steps * batch_size])
            prior += _counts(seats, order, w)[:, 0]
        self._starts = [s.plan.first_step for s in self._stages]
        self.total_steps = plans[-1].end_step if plans else 0
        self.draws = prior  # per domain, over the whole schedule
        for d, e in self.epochs().items():
            if e > MAX_EPOCHS and d not in caps:  # a cap repeats its domain on purpose
                warnings.warn(
                    f"domain {d!r} would be repeated {e:.1f} times (more than "
                    f"{MAX_EPOCHS:g}); add data or lower its weight or the token budget",
                    stacklevel=2,
                )

    def batch(self, step: int) -> np.ndarray:
        """Token ids (B, T + 1) as int32 for one step; inputs [:, :-1], targets [:, 1:]."""
        return self.batches(step, 1)[0]

    def batches(self, first: int, n: int) -> np.ndarray:
        """(n, B, T + 1): the batches of steps first ... first + n - 1, drawn together.

        Every seat is drawn on its own, so this is `batch` stacked; one call for many
        steps pays numpy's per-call overhead once, which for small batches was most of
        the cost (about 0.5 ms a batch, more than a small population's step on a GPU)."""
        if n < 1 or not 0 <= first or first + n > self.total_steps:
            raise IndexError(
                f"steps {first}..{first + n - 1} outside the schedule's {self.total_steps} steps"
            )
        out = np.empty((n * self.B, self.T + 1), np.int32)
        step = first
        while step < first + n:  # one stage at a time
            st = self._stages[bisect_right(self._starts, step) - 1]
            stop = min(first + n, st.plan.end_step)
            self._fill(out[(step - first) * self.B : (stop - first) * self.B], st, step, stop)
            step = stop
        return out.reshape(n, self.B, self.T + 1)

    def _fill(self, out: np.ndarray, st: _StageDraws, start: int, stop: int) -> None:
        """Rows of steps start ... stop - 1, all inside stage `st`, into `out`."""
        seat0 = (start - st.plan.first_step) * self.B
        seats = (stop - start) * self.B
        cum = _counts(np.arange(seat0, seat0 + seats + 1), st.order, st.weights)
        owner = np.argmax(np.diff(cum, axis=1), axis=0)  # domain of each row
        offs = np.arange(self.T + 1)
        for d in np.unique(owner):
            rows = np.flatnonzero(owner == d)
            draw = st.prior[d] + cum[d, rows]  # this domain's draw numbers, schedule-wide
            epoch, pos = np.divmod(draw, self.windows[d])
            win = np.empty_like(pos)
            for e in np.unique(epoch):
                sel = epoch == e
                key = (self.seed * 1_000_003 + int(d)) * 1_000_033 + int(e)
                win[sel] = permute(pos[sel], int(self.windows[d]), key)
            out[rows] = self._tokens[self.domains[d]][(win * self.T)[:, None] + offs]

    def realised_mixture(self) -> list[dict[str, float]]:
        """Share of sequences (= tokens) each domain gets in each stage, as sampled."""
        shares = []
        for st in self._stages:
            seats = st.plan.n_steps * self.B
            c = _counts(np.array([seats]), st.order, st.weights)[:, 0]
            shares.append({d: float(c[k]) / seats for k, d in enumerate(self.domains)})
        return shares

    def epochs(self) -> dict[str, float]:
        """How many times each domain's training tokens are seen over the schedule."""
        return {
            d: float(self.draws[k]) / max(1, int(self.windows[k]))
            for k, d in enumerate(self.domains)
        }
