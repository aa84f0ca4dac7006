"""The proxy trainer: P models of one shape, each with its own schedule and seed, trained
together in one jitted step (vmap over a population axis). `codemix train` is P = 1.

Per step the host draws each member's batch (a pure function of its seed and the step,
prepared one step ahead in a thread), computes each member's learning rate from its
schedule, and the device runs clip -> Adam -> decoupled weight decay -> p -= lr * u for
all members at once. fp32 master weights, bf16 compute (fp32 on CPU), donated buffers.

A killed run resumes exactly from its last checkpoint (the data of any step is a pure
function of the step, and the checkpoint holds the train losses since the last
evaluation). On SIGINT/SIGTERM (see `codemix.interrupt`) it writes a checkpoint when that
fits in the time a preemption leaves, then raises `Interrupted`.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codemix import interrupt
from codemix.errors import CodemixError
from codemix.files import atomic_write_text
from codemix.lock import folder_lock
from codemix.progress import Progress
from models.accounting import flops_per_token, param_count
from models.config import ModelConfig
from models.transformer import init_params, token_losses
from proxy_train import sharding as shd
from proxy_train.evaluate import ValSample, bits_per_byte, domain_losses, val_sample
from proxy_train.sampler import MixtureSampler
from proxy_train.schedule import Schedule, StagePlan, learning_rate, stage_at
from proxy_train.spec import TrainSettings
from proxy_train.store import TokenStore

PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v4": 275e12,
}


@dataclass(frozen=True)
class Member:
    """One proxy run: its schedule, seed and folder (metrics.jsonl, summary.json)."""

    name: str
    schedule: Schedule
    seed: int
    out: Path


def enable_compilation_cache() -> None:
    path = os.environ.get("CODEMIX_JAX_CACHE", str(Path.home() / ".cache" / "codemix" / "jax"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def peak_flops() -> float | None:
    kind = jax.devices()[0].device_kind
    return next((v for k, v in PEAK_FLOPS.items() if k in kind), None)


def resolve_dtype(dtype: str) -> str:
    """'auto': bf16 on accelerators, fp32 on CPU (where bf16 matmuls are emulated and slow)."""
    if dtype != "auto":
        return dtype
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def optimizer(s: TrainSettings) -> optax.GradientTransformation:
    """AdamW without the learning rate, which each member applies itself (p -= lr * u)."""

    def decay_mask(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: not any("norm" in str(k) for k in path), params
        )

    return optax.chain(
        optax.clip_by_global_norm(s.grad_clip),
        optax.scale_by_adam(b1=s.beta1, b2=s.beta2, eps=1e-8),
        optax.add_decayed_weights(s.weight_decay, mask=decay_mask),
    )


def population_size(cfg: ModelConfig, batch_size: int, wanted: int) -> int:
    """How many members fit in device memory at once (all of them on CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if not limit:
        return wanted
    n = param_count(cfg).total
    T, V, D, L = cfg.seq_len, cfg.vocab_size, cfg.d_model, cfg.n_layers
    act = batch_size * T * (L * D * 34 + V * 10)  # rough bytes of activations and logits
    per_member = 16 * n + act
    return max(1, min(wanted, int(0.6 * limit // per_member) * jax.device_count()))


def _by_member(mask_P, x):
    """Broadcast a (P,) mask against a leaf with a leading population axis."""
    return mask_P.reshape((-1,) + (1,) * (x.ndim - 1))


@dataclass(frozen=True)
class _Programs:
    """The jitted pieces of a population's training, all sharded over the population."""

    init: Any  # seeds (P,) -> state
    step: Any  # (state, tokens (P, B, T+1), lr (P,)) -> (state, loss (P,))
    reset_opt: Any  # (state, mask (P,)) -> state with fresh Adam moments where mask
    zero: Any  # (state, keep (P,)) -> state with the members not kept zeroed
    finite: Any  # state -> (P,) whether every weight of a member is finite
    eval: Any  # (params, tokens, domain) -> (P, D) validation loss per domain
    abstract: Any  # shapes of the state
    state_sh: Any
    batch_sh: Any
    vec_sh: Any


def make_programs(
    cfg: ModelConfig, settings: TrainSettings, P: int, n_domains: int, mesh, squeeze_single=True
) -> _Programs:
    """Build (lazily compiled) init, step, evaluation and bookkeeping programs."""
    tx = optimizer(settings)
    B = settings.batch_size

    def init_member(seed):
        params = init_params(cfg, jax.random.key(seed))
        return {"params": params, "opt": tx.init(params)}

    abstract = jax.eval_shape(jax.vmap(init_member), jnp.zeros(P, jnp.uint32))
    state_sh = shd.state_shardings(abstract, mesh)
    batch_sh, vec_sh = shd.batch_sharding(mesh, B), shd.member_sharding(mesh)

    def member_step(state, tokens_BT1, lr):
        loss, grads = jax.value_and_grad(lambda p: token_losses(p, tokens_BT1, cfg).mean())(
            state["params"]
        )
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = jax.tree.map(lambda p, u: p - lr * u, state["params"], updates)
        return {"params": params, "opt": opt}, loss

    def single_step(state, tokens_PBT1, lr_P):  # one model: no population axis inside
        new, loss = member_step(jax.tree.map(lambda x: x[0], state), tokens_PBT1[0], lr_P[0])
        return jax.tree.map(lambda x: x[None], new), loss[None]

    def reset_opt(state, mask_P):
        fresh = jax.vmap(tx.init)(state["params"])
        opt = jax.tree.map(lambda f, o: jnp.where(_by_member(mask_P, o), f, o), fresh, state["opt"])
        return {"params": state["params"], "opt": opt}

    def zero(state, keep_P):
        return jax.tree.map(lambda x: jnp.where(_by_member(keep_P, x), x, 0), state)

    def finite(state):
        leaves = [jnp.isfinite(x).reshape(x.shape[0], -1).all(-1) for x in jax.tree.leaves(state)]
        return jnp.stack(leaves).all(0)

    def evaluate(params, tokens, domain):
        def seq_losses(p, t):
            return token_losses(p, t, cfg)

        return jax.vmap(lambda p: domain_losses(seq_losses, p, tokens, domain, n_domains, B))(
            params
        )

    stepper = single_step if P == 1 and squeeze_single else jax.vmap(member_step)
    return _Programs(
        init=jax.jit(jax.vmap(init_member), out_shardings=state_sh),
        step=jax.jit(stepper, donate_argnums=0, out_shardings=(state_sh, vec_sh)),
        reset_opt=jax.jit(reset_opt, donate_argnums=0, out_shardings=state_sh),
        zero=jax.jit(zero, donate_argnums=0, out_shardings=state_sh),
        finite=jax.jit(finite),
        eval=jax.jit(evaluate),
        abstract=abstract,
        state_sh=state_sh,
        batch_sh=batch_sh,
        vec_sh=vec_sh,
    )


class _Prefetch:
    """Draws batches one step ahead in a thread; numpy gathers release the GIL."""

    def __init__(self, samplers, first: int, last: int):
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.samplers = samplers
        self.t = threading.Thread(target=self._run, args=(first, last), daemon=True)
        self.t.start()

    def _run(self, first, last):
        for step in range(first, last):
            self.q.put(np.stack([s.batch(step) for s in self.samplers]))

    def get(self) -> np.ndarray:
        return self.q.get()


@dataclass
class _Loop:
    """What the training loop carries from step to step (and into checkpoints)."""

    state: Any
    alive: np.ndarray  # (P,) members still training
    failed: dict[str, str]  # member name -> why it stopped
    window: list[np.ndarray] = field(default_factory=list)  # train losses since last eval
    timing: dict = field(
        default_factory=lambda: {"compile_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0}
    )
    tok_s: float = 0.0
    last_save_s: float | None = None

    def meta(self, members: list[Member]) -> dict:
        window = [[None if np.isnan(x) else float(x) for x in w] for w in self.window]
        return {"failed": self.failed, "members": [m.name for m in members], "window": window}


def _checkpointer(ckpt_dir: Path):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        ckpt_dir.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    )


def _init_or_restore(mngr, progs: _Programs, members: list[Member], ckpt_dir: Path):
    """(state, first step, meta): the newest checkpoint, else members fresh from their seeds."""
    import orbax.checkpoint as ocp

    start = mngr.latest_step()
    if start is None:
        seeds = np.array([m.seed for m in members], np.uint32)
        return progs.init(shd.put(seeds, progs.vec_sh)), 0, {"failed": {}, "window": []}
    saved = mngr.restore(start, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if saved.get("members") != [m.name for m in members]:
        raise CodemixError(
            f"{ckpt_dir}: holds checkpoints of another population "
            f"({saved.get('members')}); use another folder"
        )
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        progs.abstract,
        progs.state_sh,
    )
    restored = mngr.restore(
        start,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], start, restored["meta"]


def _save(mngr, progs: _Programs, loop: _Loop, members: list[Member], step: int) -> None:
    import orbax.checkpoint as ocp

    t0 = time.time()
    if not bool(np.asarray(progs.finite(loop.state["params"]))[loop.alive].all()):
        raise FloatingPointError("non-finite weights in a live member")
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(loop.state), meta=ocp.args.JsonSave(loop.meta(members))
        ),
    )
    mngr.wait_until_finished()
    loop.last_save_s = time.time() - t0
    loop.timing["checkpoint_s"] += loop.last_save_s


def _save_before_stopping(mngr, progs, loop: _Loop, members, step: int, state_bytes: int) -> bool:
    """Checkpoint at `step` if it is new and should fit in the seconds a preemption leaves."""
    if step == 0 or mngr.latest_step() == step or not loop.alive.any():
        return False
    expected = loop.last_save_s if loop.last_save_s is not None else 1 + state_bytes / 200e6
    if expected > interrupt.STOP_SECONDS:
        return False
    _save(mngr, progs, loop, members, step)
    return True


def _mark_failed(progs: _Programs, loop: _Loop, members, loss_P: np.ndarray, step: int) -> None:
    """Stop members whose loss is not finite; zero them so no checkpoint ever holds NaN."""
    bad = loop.alive & ~np.isfinite(loss_P)
    for i in np.flatnonzero(bad):
        loop.failed[members[i].name] = f"loss became {loss_P[i]} at step {step}"
        loop.alive[i] = False
    if bad.any():
        loop.state = progs.zero(loop.state, shd.put(loop.alive, progs.vec_sh))
    loop.window.append(np.where(loop.alive, loss_P, np.nan))


def _write_eval(members, plans, loop: _Loop, loss_PD, val: ValSample, step: int, settings, BT):
    bpb_PD = bits_per_byte(loss_PD, val.tokens_per_byte)
    for i, m in enumerate(members):
        if not loop.alive[i]:
            continue
        window = [w[i] for w in loop.window]
        rec = {
            "step": step,
            "tokens": step * BT,
            "stage": plans[i][stage_at(plans[i], step - 1)].stage.name,
            "lr": learning_rate(plans[i], step - 1, settings.lr_peak),
            "train_loss": float(np.mean(window)) if window else None,
            "loss": {d: float(loss_PD[i, j]) for j, d in enumerate(val.domains)},
            "bpb": {d: float(bpb_PD[i, j]) for j, d in enumerate(val.domains)},
            "tokens_per_s": loop.tok_s,
        }
        with open(m.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
    loop.window.clear()


def train_population(
    store: TokenStore,
    cfg: ModelConfig,
    settings: TrainSettings,
    members: list[Member],
    ckpt_dir: Path,
    n_params_for_budget: float | None = None,
    max_tokens: float | None = None,
    progress: bool = True,
    devices=None,
    label: str | None = None,
    squeeze_single: bool = True,
) -> list[dict]:
    """Train every member to the end of its schedule; returns each member's summary.

    `label` names the population in progress lines (default: its shape); `squeeze_single`
    drops the population axis from the step of a lone model (benchmarks compare both)."""
    t_start = time.time()
    P, B, T = len(members), settings.batch_size, settings.seq_len
    budget_params = n_params_for_budget or param_count(cfg).non_embedding
    plans = [m.schedule.plan(B * T, budget_params, max_tokens) for m in members]
    total = plans[0][-1].end_step
    if any(p[-1].end_step != total for p in plans):
        raise ValueError("members of one population must run the same number of steps")
    samplers = [MixtureSampler(store, p, B, T, m.seed) for p, m in zip(plans, members, strict=True)]
    val = val_sample(store, T, settings.eval_tokens, B)
    progs = make_programs(
        cfg, settings, P, len(store.domains), shd.make_mesh(P, devices), squeeze_single
    )
    with ExitStack() as locks:
        for folder in [ckpt_dir] + [m.out for m in members]:
            locks.enter_context(folder_lock(folder, "folder"))
        mngr = _checkpointer(ckpt_dir)
        try:
            state, start, meta = _init_or_restore(mngr, progs, members, ckpt_dir)
            for m in members:
                m.out.mkdir(parents=True, exist_ok=True)
                _truncate_metrics(m.out / "metrics.jsonl", start)
            loop = _Loop(
                state,
                np.array([m.name not in meta["failed"] for m in members]),
                dict(meta["failed"]),
                [
                    np.array([np.nan if x is None else x for x in w], np.float32)  # as computed
                    for w in meta.get("window", [])
                ],
            )
            pop = _Population(progs, mngr, members, plans, samplers, val, settings, cfg)
            _loop(pop, loop, start, label or f"{P} x {cfg.n_layers}L{cfg.d_model}d", progress)
        finally:
            mngr.close()
    return [
        _summary(m, plans[i], samplers[i], loop, cfg, settings, time.time() - t_start)
        for i, m in enumerate(members)
    ]


@dataclass(frozen=True)
class _Population:
    """What stays fixed while a population trains."""

    progs: _Programs
    mngr: Any  # orbax CheckpointManager
    members: list[Member]
    plans: list[list[StagePlan]]
    samplers: list[MixtureSampler]
    val: ValSample
    settings: TrainSettings
    cfg: ModelConfig


def _loop(pop: _Population, loop: _Loop, start: int, desc: str, progress: bool) -> None:
    """Steps from `start` to the end of the schedule, evaluating and checkpointing."""
    progs, mngr, members, plans = pop.progs, pop.mngr, pop.members, pop.plans
    samplers, val, settings, cfg = pop.samplers, pop.val, pop.settings, pop.cfg
    P, B, T = len(members), settings.batch_size, settings.seq_len
    total = plans[0][-1].end_step
    ends = {p.end_step for pl in plans for p in pl}
    starts = {p.first_step for pl in plans for p in pl if p.first_step > 0}
    fpt, peak = flops_per_token(cfg, T), peak_flops()
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(progs.abstract))
    val_tokens, val_domain = jnp.asarray(val.tokens_NT1), jnp.asarray(val.domain_N)
    prefetch = _Prefetch(samplers, start, total)
    bar = Progress(total, start, desc, progress)
    last_ckpt = t_mark = time.time()
    step_mark, pending, t_first = start, None, None
    t_loop = time.time()
    try:
        for step in range(start, total):
            if interrupt.requested():
                if pending is not None:
                    _mark_failed(progs, loop, members, np.asarray(pending), step)
                saved = _save_before_stopping(mngr, progs, loop, members, step, state_bytes)
                at = mngr.latest_step()
                raise interrupt.Interrupted(
                    interrupt.requested() or "SIGINT",
                    f"stopped after step {step} of {total}; "
                    + (f"checkpoint at step {at}" if at is not None else "no checkpoint yet")
                    + (" (written now)" if saved else ""),
                )
            if not loop.alive.any():
                break
            if not settings.carry_optimizer_state and step in starts:
                mask = np.array([any(p.first_step == step for p in pl) for pl in plans])
                loop.state = progs.reset_opt(loop.state, shd.put(mask, progs.vec_sh))
            tokens = shd.put(prefetch.get(), progs.batch_sh)
            lr = np.array(
                [
                    learning_rate(pl, step, settings.lr_peak) if a else 0.0
                    for pl, a in zip(plans, loop.alive, strict=True)
                ],
                np.float32,
            )
            loop.state, loss = progs.step(loop.state, tokens, shd.put(lr, progs.vec_sh))
            if pending is not None:  # read last step's loss while this one runs
                _mark_failed(progs, loop, members, np.asarray(pending), step)
            pending, done = loss, step + 1
            if t_first is None:  # the first step carries the compilation
                jax.block_until_ready(loss)
                t_first = time.time()
                loop.timing["compile_s"] = t_first - t_loop
            eval_now = done in ends or (settings.eval_every and done % settings.eval_every == 0)
            if eval_now or done % settings.log_every == 0:
                _mark_failed(progs, loop, members, np.asarray(pending), done)
                pending = None
                dt = time.time() - t_mark
                loop.tok_s = (done - step_mark) * B * T * int(loop.alive.sum()) / max(dt, 1e-9)
                post = {
                    "loss": f"{np.nanmean(loop.window[-1]):.3f}" if loop.alive.any() else "nan",
                    "tok/s": f"{loop.tok_s:,.0f}",
                }
                if peak:
                    post["MFU"] = f"{loop.tok_s * fpt / peak / jax.device_count():.1%}"
                bar.set_postfix(post)
            if eval_now and loop.alive.any():
                t0 = time.time()
                loss_PD = np.asarray(progs.eval(loop.state["params"], val_tokens, val_domain))
                _write_eval(members, plans, loop, loss_PD, val, done, settings, B * T)
                loop.timing["eval_s"] += time.time() - t0
            due = time.time() - last_ckpt > 60 * settings.checkpoint_every_minutes
            if settings.checkpoints and loop.alive.any() and (done in ends or due):
                if pending is not None:  # the checkpoint carries every loss up to `done`
                    _mark_failed(progs, loop, members, np.asarray(pending), done)
                    pending = None
                _save(mngr, progs, loop, members, done)
                last_ckpt = t_mark = time.time()
                step_mark = done
            bar.update(1)
        if pending is not None:
            _mark_failed(progs, loop, members, np.asarray(pending), total)
        if t_first is not None and total - start > 1:
            t = loop.timing
            steady = time.time() - t_first - t["eval_s"] - t["checkpoint_s"]
            t["step_tokens_per_s"] = (total - start - 1) * B * T * P / max(steady, 1e-9)
            t["step_mfu"] = (
                t["step_tokens_per_s"] * fpt / peak / jax.device_count() if peak else None
            )
    finally:
        bar.close()


def _summary(
    m: Member, plans: list[StagePlan], sampler, loop: _Loop, cfg, settings, wall: float
) -> dict:
    """Write and return summary.json of one member."""
    B, T = settings.batch_size, settings.seq_len
    records = _read_metrics(m.out / "metrics.jsonl")
    last = records[-1] if records else {}
    total = plans[-1].end_step
    counts, fpt = param_count(cfg), flops_per_token(cfg, T)
    summary = {
        "status": "failed" if m.name in loop.failed else "completed",
        "reason": loop.failed.get(m.name),
        "name": m.name,
        "seed": m.seed,
        "steps": total,
        "tokens": total * B * T,
        "final": {"loss": last.get("loss"), "bpb": last.get("bpb"), "step": last.get("step")},
        "realised_mixture": {
            p.stage.name: mix for p, mix in zip(plans, sampler.realised_mixture(), strict=True)
        },
        "stage_tokens": {p.stage.name: p.n_steps * B * T for p in plans},
        "epochs": sampler.epochs(),
        "model": {
            "d_model": cfg.d_model,
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "d_ff": cfg.d_ff,
            "vocab_size": cfg.vocab_size,
            "seq_len": T,
        },
        "params": counts.total,
        "non_embedding_params": counts.non_embedding,
        "flops_per_token": fpt,
        "flops": fpt * total * B * T,
        "wall_time_s": wall,
        "timing": loop.timing,
        "population": len(loop.alive),
    }
    atomic_write_text(m.out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records written after the checkpoint we resume from, so the file matches an
    uninterrupted run."""
    if not path.is_file():
        return
    keep = [r for r in _read_metrics(path) if r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def model_config_for(
    spec_model: dict, vocab_size: int, seq_len: int, size: str | None = None
) -> ModelConfig:
    from models.presets import model_config

    overrides = {k: v for k, v in spec_model.items() if k != "size"}
    overrides["dtype"] = resolve_dtype(overrides.get("dtype", "auto"))
    on_accelerator = jax.default_backend() != "cpu"
    if overrides.get("scan_unroll", "auto") == "auto":
        # unrolling the layer loop let XLA schedule across layers: 35.8 -> 42.4 % MFU at 124M
        # on an H100 (benchmarks/RESULTS.md); on CPU it only lengthens compilation
        overrides["scan_unroll"] = 1_000 if on_accelerator else 1
    if overrides.get("attention_impl", "auto") == "auto":
        # XLA does not pick cuDNN's fused attention by itself; ask for it on GPUs
        overrides["attention_impl"] = "cudnn" if jax.default_backend() == "gpu" else None
    return model_config(size or spec_model["size"], vocab_size, seq_len, **overrides)
