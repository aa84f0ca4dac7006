"""Downstream tasks scored inside the trainer, for every member of a population at once.

Each request (a context and one answer) becomes a row of at most seq_len + 1 tokens: the
end of the context, then the continuation. Rows go into a few length buckets (powers of two
up to seq_len), so a handful of shapes compile once; the model's per-token losses, masked to
the continuation, sum to the request's negative log-likelihood. From those, per task:
`bpb` of the gold continuation (total bits over total UTF-8 bytes), OLMES's `acc` and
`acc_norm` (per character), and DataDecide's `correct_prob`, `norm_correct_prob`,
`total_prob` and `margin`; per family, the mean over its tasks. Only numpy and JAX here:
the rendered requests travel with the token store (`STORE/evals/`).
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from codemix.core.errors import CodemixError

METRICS = ("bpb", "acc", "acc_norm", "correct_prob", "norm_correct_prob", "total_prob", "margin")
CHOICE_METRICS = ("acc", "acc_norm", "norm_correct_prob", "total_prob", "margin")
_MIN_BUCKET = 32


@dataclass(frozen=True)
class Task:
    """One rendered task, as the trainer needs it."""

    name: str
    family: str
    chance: float
    first: int  # index of its first request among all requests
    item: np.ndarray  # (R,) item of each request
    gold: np.ndarray  # (I,) index of the gold request within each item
    n_choices: np.ndarray  # (I,)
    chars: np.ndarray  # (R,) characters of each continuation


@dataclass(frozen=True)
class TaskSet:
    tasks: tuple[Task, ...]
    rows: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]  # per bucket: ids, mask, request
    cont_bytes: np.ndarray  # (R,) UTF-8 bytes of each (kept) continuation
    n_requests: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)


def load_tasks(store, names: list[str], seq_len: int, batch: int) -> TaskSet:
    """The rendered requests of `names` from the store, bucketed into rows of seq_len + 1
    tokens at most (padded to a multiple of `batch`)."""
    evals = store.manifest.get("evals", {})
    missing = [n for n in names if n not in evals]
    if missing:
        raise CodemixError(
            f"{store.path}: no rendered task {', '.join(missing)}; run `codemix evals prepare "
            f"{store.path} --suite ...` (it renders the tasks with this store's tokenizer)"
        )
    arrays = {}
    for name in names:
        with np.load(store.path / "evals" / f"{name}.npz") as z:
            arrays[name] = {k: z[k] for k in z.files}
    return task_set(arrays, {n: evals[n] for n in names}, seq_len, batch)


def task_set(arrays: dict[str, dict], info: dict[str, dict], seq_len: int, batch: int) -> TaskSet:
    """Tasks from their rendered arrays (`tasks.render`) and their family and chance level
    (`info`, as the store's manifest records them), bucketed as `load_tasks` does."""
    tasks, rows, cont_bytes, first = [], [], [], 0
    for name, a in arrays.items():
        keep, nbytes = _rows(a, seq_len)
        rows += [(ids, first + r) for r, ids in enumerate(keep)]
        cont_bytes.append(nbytes)
        tasks.append(
            Task(
                name,
                info[name]["family"],
                float(info[name]["chance"]),
                first,
                a["item"],
                a["gold"],
                a["n_choices"],
                a["cont_chars"],
            )
        )
        first += len(a["ctx_len"])
    return TaskSet(tuple(tasks), _bucket(rows, seq_len, batch), np.concatenate(cont_bytes), first)


def _rows(a: dict, seq_len: int) -> tuple[list[tuple[np.ndarray, int]], np.ndarray]:
    """Each request as (token ids, index where its continuation starts); continuations
    longer than a window keep their first seq_len tokens, contexts keep their end."""
    starts = np.concatenate([[0], np.cumsum(a["ctx_len"] + a["cont_len"])[:-1]])
    cum_starts = np.concatenate([[0], np.cumsum(a["cont_len"])[:-1]])
    out, nbytes = [], np.zeros(len(starts), np.int64)
    for r, (s, nc, nk) in enumerate(zip(starts, a["ctx_len"], a["cont_len"], strict=True)):
        k = min(int(nk), seq_len)
        c = min(int(nc), seq_len + 1 - k)
        ids = a["tokens"][s + nc - c : s + nc + k].astype(np.int32)
        out.append((ids, c))
        nbytes[r] = a["cont_bytes_cum"][cum_starts[r] + k - 1]
    return out, nbytes


def _bucket(rows: list, seq_len: int, batch: int) -> tuple:
    """Group rows by the smallest power-of-two length (or seq_len) that holds them."""
    lengths = sorted(
        {min(seq_len, max(_MIN_BUCKET, 1 << (len(ids) - 2).bit_length())) for (ids, _), _ in rows}
    )
    out = []
    for L in lengths:
        mine = [(ids, c, r) for (ids, c), r in rows if _fits(len(ids), L, lengths)]
        n = -(-len(mine) // batch) * batch
        ids_NL1 = np.zeros((n, L + 1), np.int32)
        mask_NL = np.zeros((n, L), np.float32)
        req = np.full(n, -1, np.int64)
        for i, (ids, c, r) in enumerate(mine):
            ids_NL1[i, : len(ids)] = ids
            mask_NL[i, c - 1 : len(ids) - 1] = 1.0  # predictions of the continuation tokens
            req[i] = r
        out.append((ids_NL1, mask_NL, req))
    return tuple(out)


def _fits(n_tokens: int, L: int, lengths: list[int]) -> bool:
    """Whether a row of n_tokens (inputs n - 1) goes in bucket L: the smallest that holds it."""
    return L == next(b for b in lengths if b >= n_tokens - 1)


def make_scorer(cfg, batch: int, out_sharding=None):
    """A jitted (params_P, ids (N, L+1), mask (N, L)) -> (P, N) continuation NLL, in chunks
    of `batch` rows, vmapped over the population (replicated, for the host to read)."""
    from codemix.models.transformer import token_losses

    def member(params, ids_NL1, mask_NL):
        chunks = ids_NL1.reshape(-1, batch, ids_NL1.shape[-1])
        masks = mask_NL.reshape(-1, batch, mask_NL.shape[-1])

        def one(xs):
            ids, mask = xs
            return (token_losses(params, ids, cfg) * mask).sum(-1)

        return jax.lax.map(one, (chunks, masks)).reshape(-1)

    return jax.jit(jax.vmap(member, in_axes=(0, None, None)), out_shardings=out_sharding)


def precompile(scorer, params, ts: TaskSet, sharding=None) -> dict[tuple, Future]:
    """Compile the scorer for every bucket's shape in background threads, so the first task
    evaluation does not wait for it: XLA compiles on the host while the accelerator trains
    (a handful of shapes cost seconds each; a small proxy trains for a minute). Returns
    {ids shape: future of the compiled scorer}."""
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), params
    )

    def build(ids_shape: tuple, mask_shape: tuple):
        i = jax.ShapeDtypeStruct(ids_shape, jnp.int32, sharding=sharding)
        m = jax.ShapeDtypeStruct(mask_shape, jnp.float32, sharding=sharding)
        return scorer.lower(abstract, i, m).compile()

    pool = ThreadPoolExecutor(len(ts.rows) or 1, thread_name_prefix="codemix-task-compile")
    futures = {ids.shape: pool.submit(build, ids.shape, mask.shape) for ids, mask, _ in ts.rows}
    pool.shutdown(wait=False)
    return futures


def score(scorer, params, ts: TaskSet, compiled: dict | None = None, sharding=None) -> np.ndarray:
    """(P, R) negative log-likelihood of every request's continuation, per member; with the
    compiled programs of `precompile` where given (then inputs go to `sharding`, as there)."""
    out = None
    put = (lambda a: jax.device_put(a, sharding)) if sharding is not None else jnp.asarray
    for ids, mask, req in ts.rows:
        fn = compiled[ids.shape].result() if compiled else scorer
        nll = np.asarray(fn(params, put(ids), put(mask)))
        if out is None:
            out = np.zeros((nll.shape[0], ts.n_requests), np.float64)
        keep = req >= 0
        out[:, req[keep]] = nll[:, keep]
    return out


def metrics(ts: TaskSet, nll_R: np.ndarray) -> dict[str, dict]:
    """One member's metrics per task and per family (mean over its tasks)."""
    out: dict[str, dict] = {}
    for t in ts.tasks:
        r = slice(t.first, t.first + len(t.item))
        out[t.name] = task_metrics(t, nll_R[r], ts.cont_bytes[r])
    families: dict[str, list[dict]] = {}
    for t in ts.tasks:
        if t.family != "stand_in":  # stand-ins are never mixed into a family's mean
            families.setdefault(t.family, []).append(out[t.name])
    for fam, ms in families.items():
        out[fam] = {m: _mean([x[m] for x in ms]) for m in METRICS}
        out[fam] |= {
            "items": sum(x["items"] for x in ms),
            "tasks": len(ms),
            "chance": _mean([x["chance"] for x in ms]),
        }
    return out


def task_metrics(t: Task, nll: np.ndarray, nbytes: np.ndarray) -> dict:
    """Metrics of one task from its requests' negative log-likelihoods (nats)."""
    offsets = np.concatenate([[0], np.cumsum(t.n_choices)[:-1]])
    gold = offsets + t.gold
    res = {
        "bpb": float(nll[gold].sum() / math.log(2) / max(1, nbytes[gold].sum())),
        "correct_prob": float(np.exp(-nll[gold]).mean()),
        "items": len(t.gold),
        "chance": t.chance,
    }
    if t.n_choices.max() < 2:  # one reference continuation: no choice to score
        return res | dict.fromkeys(CHOICE_METRICS)
    acc, acc_norm, norm, total, margin = [], [], [], [], []
    for o, n, g in zip(offsets, t.n_choices, t.gold, strict=True):
        lp = -nll[o : o + n]
        p = np.exp(lp)
        acc.append(np.argmax(lp) == g)
        acc_norm.append(np.argmax(lp / np.maximum(t.chars[o : o + n], 1)) == g)
        norm.append(np.exp(lp[g] - np.logaddexp.reduce(lp)))
        total.append(p.sum())
        margin.append(p[g] - np.delete(p, g).max())
    return res | {
        "acc": float(np.mean(acc)),
        "acc_norm": float(np.mean(acc_norm)),
        "norm_correct_prob": float(np.mean(norm)),
        "total_prob": float(np.mean(total)),
        "margin": float(np.mean(margin)),
    }


def _mean(values: list) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None
