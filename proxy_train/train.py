"""The proxy trainer: P models of one shape, each with its own schedule and seed, trained
together in one jitted step (vmap over a population axis). `codemix train` is P = 1.

Per step the host draws each member's batch (a pure function of its seed and the step,
prepared one step ahead in a thread), computes each member's learning rate from its
schedule, and the device runs clip -> Adam -> decoupled weight decay -> p -= lr * u for
all members at once. fp32 master weights, bf16 compute (fp32 on CPU), donated buffers.

A member may start from a trunk (see `trunks.py`): the saved state of the first steps it
shares with other runs, trained once; a population may stop early (at a stage boundary, or
inside a stable phase) and save each member's state as a trunk.

A killed run resumes exactly from its last checkpoint (the data of any step is a pure
function of the step, and the checkpoint holds the train losses since the last
evaluation). On SIGINT/SIGTERM (see `codemix.interrupt`) it writes a checkpoint when that
fits in the time a preemption leaves, then raises `Interrupted`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import threading
import time
import warnings
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codemix.core import interrupt
from codemix.core.errors import CodemixError
from codemix.core.files import atomic_write_text
from codemix.core.lock import folder_lock
from codemix.core.progress import Progress
from codemix.core.results import UNIQUE_CAPS, RunSummary
from codemix.models import fused_loss
from codemix.models.accounting import flops_per_token, param_count
from codemix.models.config import ModelConfig
from codemix.models.transformer import init_params, loss_fn, token_losses
from codemix.proxy_train import sharding as shd
from codemix.proxy_train import trunks
from codemix.proxy_train.evaluate import ValSample, bits_per_byte, domain_losses, val_sample
from codemix.proxy_train.sampler import MixtureSampler
from codemix.proxy_train.schedule import Schedule, StagePlan, learning_rate, stage_at
from codemix.proxy_train.spec import TrainSettings
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.task_eval import TaskSet, make_scorer, precompile, score
from codemix.proxy_train.task_eval import metrics as task_metrics

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
    """One proxy run: its schedule, seed and folder (metrics.jsonl, summary.json), which
    domains count as code in its report (the spec's [groups]), and the trunk folder it
    starts from, if any."""

    name: str
    schedule: Schedule
    seed: int
    out: Path
    code_domains: tuple[str, ...] = ("code",)
    trunk: Path | None = None


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
    logit_positions = min(T, cfg.loss_chunk or T)  # a chunked loss holds one chunk's logits
    act = batch_size * (T * L * D * 34 + logit_positions * V * 10)  # rough bytes
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


def loss_impl_for(cfg: ModelConfig, P: int, n_devices: int = 1) -> ModelConfig:
    """`loss_impl = "auto"` means the Pallas kernels only for populations on one device:
    they pay off across members, but for one "1M" model the XLA path was faster on an H200
    (5.08M against 4.64M tokens/s at 32 x 512); and XLA cannot split a kernel over a mesh,
    so across devices it would gather every member's inputs to each device first."""
    if cfg.loss_impl == "auto" and (P == 1 or n_devices > 1):
        return dataclasses.replace(cfg, loss_impl="xla")
    return cfg


def make_programs(
    cfg: ModelConfig, settings: TrainSettings, P: int, n_domains: int, mesh, squeeze_single=True
) -> _Programs:
    """Build (lazily compiled) init, step, evaluation and bookkeeping programs."""
    cfg = loss_impl_for(cfg, P, mesh.devices.size)
    tx = optimizer(settings)
    B = settings.batch_size

    def init_member(seed):
        params = init_params(cfg, jax.random.key(seed))
        return {"params": params, "opt": tx.init(params)}

    abstract = jax.eval_shape(jax.vmap(init_member), jnp.zeros(P, jnp.uint32))
    state_sh = shd.state_shardings(abstract, mesh)
    batch_sh, vec_sh = shd.batch_sharding(mesh, B), shd.member_sharding(mesh)
    host = shd.replicated(mesh)  # what the host reads: every process holds all of it

    def member_step(state, tokens_BT1, lr):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(p, tokens_BT1, cfg))(state["params"])
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
        step=jax.jit(stepper, donate_argnums=0, out_shardings=(state_sh, host)),
        reset_opt=jax.jit(reset_opt, donate_argnums=0, out_shardings=state_sh),
        zero=jax.jit(zero, donate_argnums=0, out_shardings=state_sh),
        finite=jax.jit(finite, out_shardings=host),
        eval=jax.jit(evaluate, out_shardings=host),
        abstract=abstract,
        state_sh=state_sh,
        batch_sh=batch_sh,
        vec_sh=vec_sh,
    )


PREFETCH_BLOCK = 32  # steps a prefetch call draws (benchmarks set 1 to compare)


class _Prefetch:
    """Draws batches ahead in a thread, several steps a call: one call per member for a
    block of steps costs numpy's per-call overhead once, which for small batches took
    longer than a small population's step on a GPU."""

    def __init__(self, samplers, first: int, last: int, block: int | None = None):
        block = block or PREFETCH_BLOCK
        row = len(samplers) * samplers[0].B * (samplers[0].T + 1) * 4  # bytes a step
        self.block = max(1, min(block, (64 << 20) // row))  # at most 64 MiB a block
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.samplers, self.ready = samplers, iter(())
        self.closed = threading.Event()
        self.t = threading.Thread(target=self._run, args=(first, last), daemon=True)
        self.t.start()

    def _run(self, first, last):
        try:
            for s0 in range(first, last, self.block):
                if self.closed.is_set():
                    return
                n = min(self.block, last - s0)
                self._put(np.stack([s.batches(s0, n) for s in self.samplers], axis=1))
        except Exception as e:  # the training loop raises it, rather than waiting forever
            self._put(e)

    def _put(self, item) -> None:
        while not self.closed.is_set():  # a loop that stopped early takes no more
            try:
                return self.q.put(item, timeout=0.1)
            except queue.Full:
                continue

    def close(self) -> None:
        """Stop drawing and wait for the thread: one left running at interpreter exit is
        torn down inside numpy's C++ and aborts the process (SIGABRT instead of 143)."""
        self.closed.set()
        self.t.join()

    def get(self) -> np.ndarray:
        """The next step's (P, B, T + 1) tokens."""
        nxt = next(self.ready, None)
        if nxt is None:
            block = self.q.get()
            if isinstance(block, Exception):
                raise block
            self.ready = iter(block)
            nxt = next(self.ready)
        return nxt


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
    primary: bool  # the process that writes files (the only one, unless multi-host)
    stop: int  # the step training ends at: the schedule's end, or a trunk's last step
    first: int  # the step this population's members began at: 0, or their trunk's end
    tasks: TaskSet | None = None  # downstream tasks scored at some evaluations
    tasks_every: int = 1  # every K-th evaluation, and at every stage end
    scorer: Any = None
    compiled: Any = None  # the scorer compiled per bucket in the background: shape -> Future
    task_sh: Any = None  # where task rows go: replicated, as the compiled scorer expects


@dataclass
class _Run:
    """What the training loop carries from step to step (and into checkpoints)."""

    state: Any
    alive: np.ndarray  # (P,) members still training
    failed: dict[str, str]  # member name -> why it stopped
    window: list[np.ndarray] = field(default_factory=list)  # train losses since last eval
    pending: Any = None  # the last step's loss, read while the next step runs
    timing: dict = field(
        default_factory=lambda: {"compile_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0}
    )
    tok_s: float = 0.0
    last_save_s: float | None = None
    evals: int = 0  # evaluations so far (task scores go with every tasks_every-th)

    def meta(self, members: list[Member]) -> dict:
        window = [[None if np.isnan(x) else float(x) for x in w] for w in self.window]
        names = [m.name for m in members]
        return {"failed": self.failed, "members": names, "window": window, "evals": self.evals}


def _checkpointer(ckpt_dir: Path):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        ckpt_dir.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    )


def _init_or_restore(mngr, progs: _Programs, members: list[Member], ckpt_dir: Path, host):
    """(run, first step): the newest checkpoint, else the members' trunks, else members
    fresh from their seeds."""
    import orbax.checkpoint as ocp

    start = mngr.latest_step()
    if start is None and members[0].trunk is not None:
        infos = [trunks.read(m.trunk) for m in members]
        state = trunks.load_members(
            [m.trunk for m in members], progs.abstract, progs.state_sh, host
        )
        run = _Run(state, np.ones(len(members), bool), {})
        run.evals = int(infos[0]["evals"])
        # a trunk that ends between evaluations hands on its train losses since the last one
        windows = [info.get("window") or [] for info in infos]
        run.window = [
            np.array([np.nan if w[t] is None else w[t] for w in windows], np.float32)
            for t in range(len(windows[0]))
        ]
        return run, int(infos[0]["step"])
    if start is None:
        seeds = np.array([m.seed for m in members], np.uint32)
        state = progs.init(shd.put(seeds, progs.vec_sh))
        return _Run(state, np.ones(len(members), bool), {}), 0
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
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
    restored = mngr.restore(start, args=args)
    meta = restored["meta"]
    window = [  # float32, as the losses were computed, so a resumed mean matches to the bit
        np.array([np.nan if x is None else x for x in w], np.float32) for w in meta["window"]
    ]
    alive = np.array([m.name not in meta["failed"] for m in members])
    run = _Run(restored["state"], alive, dict(meta["failed"]), window)
    run.evals = int(meta.get("evals", 0))
    return run, start


def _save(pop: _Population, run: _Run, step: int) -> None:
    import orbax.checkpoint as ocp

    t0 = time.time()
    if not bool(np.asarray(pop.progs.finite(run.state["params"]))[run.alive].all()):
        raise FloatingPointError("non-finite weights in a live member")
    meta = ocp.args.JsonSave(run.meta(pop.members))
    pop.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(run.state), meta=meta))
    pop.mngr.wait_until_finished()
    run.last_save_s = time.time() - t0
    run.timing["checkpoint_s"] += run.last_save_s


def _flush(pop: _Population, run: _Run, step: int) -> None:
    """Read the pending loss: members whose loss is not finite stop, and are zeroed so no
    checkpoint ever holds NaN; the others' losses join the window of the next evaluation."""
    if run.pending is None:
        return
    loss_P, run.pending = np.asarray(run.pending), None
    bad = run.alive & ~np.isfinite(loss_P)
    for i in np.flatnonzero(bad):
        run.failed[pop.members[i].name] = f"loss became {loss_P[i]} at step {step}"
        run.alive[i] = False
    if bad.any():
        run.state = pop.progs.zero(run.state, shd.put(run.alive, pop.progs.vec_sh))
    run.window.append(np.where(run.alive, loss_P, np.nan))


def _evaluate(pop: _Population, run: _Run, step: int, val_tokens, val_domain) -> None:
    """Validation loss and bits per byte of every live member, appended to metrics.jsonl."""
    t0 = time.time()
    loss_PD = np.asarray(pop.progs.eval(run.state["params"], val_tokens, val_domain))
    bpb_PD = bits_per_byte(loss_PD, pop.val.tokens_per_byte)
    run.evals += 1
    stage_end = step in {p.end_step for p in pop.plans[0]}
    nll_PR = None
    if pop.tasks is not None and (stage_end or run.evals % pop.tasks_every == 0):
        t1 = time.time()
        nll_PR = score(pop.scorer, run.state["params"], pop.tasks, pop.compiled, pop.task_sh)
        run.timing["task_eval_s"] = run.timing.get("task_eval_s", 0.0) + time.time() - t1
    BT = pop.settings.batch_size * pop.settings.seq_len
    for i, m in enumerate(pop.members):
        if not run.alive[i] or not pop.primary:
            continue
        plans, window = pop.plans[i], [w[i] for w in run.window]
        rec = {
            "step": step,
            "tokens": step * BT,
            "stage": plans[stage_at(plans, step - 1)].stage.name,
            "lr": learning_rate(plans, step - 1, pop.settings.lr_peak),
            "train_loss": float(np.mean(window)) if window else None,
            "loss": {d: float(loss_PD[i, j]) for j, d in enumerate(pop.val.domains)},
            "bpb": {d: float(bpb_PD[i, j]) for j, d in enumerate(pop.val.domains)},
            "tokens_per_s": run.tok_s,
        }
        if nll_PR is not None:
            rec["task"] = task_metrics(pop.tasks, nll_PR[i])
        with open(m.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
    run.window.clear()
    run.timing["eval_s"] += time.time() - t0


def _stop(pop: _Population, run: _Run, step: int, state_bytes: int) -> None:
    """Checkpoint at `step` if that fits in the seconds a preemption leaves, then raise."""
    _flush(pop, run, step)
    latest = pop.mngr.latest_step()
    expected = 1 + state_bytes / 200e6  # every process decides alike: saving is collective
    if jax.process_count() == 1 and run.last_save_s is not None:
        expected = run.last_save_s
    saved = bool(step and latest != step and run.alive.any() and expected <= interrupt.STOP_SECONDS)
    if saved:
        _save(pop, run, step)
        latest = step
    total = pop.stop
    at = f"checkpoint at step {latest}" if latest is not None else "no checkpoint yet"
    raise interrupt.Interrupted(
        interrupt.requested() or "SIGTERM",
        f"stopped after step {step} of {total}; {at}" + (" (written now)" if saved else ""),
    )


def _stop_requested(step: int, every: int) -> bool:
    """A signal arrived here, or (multi-host) on any process: all stop at the same step."""
    if jax.process_count() == 1:
        return interrupt.requested() is not None
    return step % every == 0 and shd.any_process(interrupt.requested() is not None)


def _learning_rates(pop: _Population, run: _Run, step: int) -> jax.Array:
    lr = [
        learning_rate(plans, step, pop.settings.lr_peak) if alive else 0.0
        for plans, alive in zip(pop.plans, run.alive, strict=True)
    ]
    return shd.put(np.array(lr, np.float32), pop.progs.vec_sh)


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
    tasks: TaskSet | None = None,
    tasks_every: int = 1,
    stop_step: int | None = None,
) -> list[RunSummary]:
    """Train every member to the end of its schedule; returns each member's summary.

    With `stop_step` the members are trunks: they stop there (a stage boundary, or inside a
    stable phase that every run branching from them shares), and each one's state and
    trunk.json go to its folder instead of a summary.

    `label` names the population in progress lines (default: its shape); `squeeze_single`
    drops the population axis from the step of a lone model (benchmarks compare both);
    `tasks` are scored at every `tasks_every`-th evaluation and at every stage end.
    Multi-host (after `sharding.init_distributed()`), every process calls this with the same
    arguments; the first writes the files."""
    t_start = time.time()
    P, B, T = len(members), settings.batch_size, settings.seq_len
    budget_params = n_params_for_budget or param_count(cfg).non_embedding
    plans = [m.schedule.plan(B * T, budget_params, max_tokens) for m in members]
    if len({p[-1].end_step for p in plans}) != 1:
        raise ValueError("members of one population must run the same number of steps")
    stop = plans[0][-1].end_step if stop_step is None else stop_step
    if any(not 0 < stop <= pl[-1].end_step for pl in plans):
        raise ValueError(f"a trunk must end inside every member's schedule (step {stop})")
    firsts = {int(trunks.read(m.trunk)["step"]) if m.trunk else 0 for m in members}
    if len(firsts) != 1:
        raise ValueError("members of one population start from trunks of one step, or none")
    (first,) = firsts
    # a share caps each run at its whole schedule's tokens, so a trunk reads its branches' sample
    samplers = [
        MixtureSampler(store, p, B, T, m.seed, unique_tokens=settings.caps(p[-1].end_step * B * T))
        for p, m in zip(plans, members, strict=True)
    ]
    mesh = shd.make_mesh(P, devices)
    progs = make_programs(cfg, settings, P, len(store.domains), mesh, squeeze_single)
    val = val_sample(store, T, settings.eval_tokens, B)
    primary = jax.process_index() == 0
    with ExitStack() as stack:
        owned = [ckpt_dir, *(m.out for m in members)] if primary else []
        for folder in owned:  # one writer per folder: the primary process of this run
            stack.enter_context(folder_lock(folder, "folder"))
        mngr = _checkpointer(ckpt_dir)
        stack.callback(mngr.close)
        fresh = mngr.latest_step() is None
        t0 = time.time()
        run, start = _init_or_restore(mngr, progs, members, ckpt_dir, shd.replicated(mesh))
        run.timing["setup_s"] = t0 - t_start  # the samplers, programs, validation sample
        run.timing["restore_s"] = time.time() - t0  # a checkpoint, the trunks, or init
        scorer = compiled = None
        if tasks is not None:
            scorer = make_scorer(cfg, B, shd.replicated(mesh))
            compiled = precompile(scorer, run.state["params"], tasks, shd.replicated(mesh))
        pop = _Population(
            progs,
            mngr,
            members,
            plans,
            samplers,
            val,
            settings,
            cfg,
            primary,
            stop,
            first,
            tasks,
            tasks_every,
            scorer,
            compiled,
            shd.replicated(mesh),
        )
        for m in members if primary else []:
            m.out.mkdir(parents=True, exist_ok=True)
            if fresh and m.trunk is not None:  # the branch's record begins with its trunk's
                _copy_metrics(m.trunk / "metrics.jsonl", m.out / "metrics.jsonl", start)
            else:
                _truncate_metrics(m.out / "metrics.jsonl", start)
        desc = label or f"{P} x {cfg.n_layers}L{cfg.d_model}d"
        _loop(pop, run, start, Progress(stop, start, desc, progress and primary))
        if stop_step is not None:
            _save_trunks(pop, run, shd.replicated(mesh), t_start)
            return []
    return [_summary(pop, run, i, time.time() - t_start) for i in range(P)]


def _save_trunks(pop: _Population, run: _Run, host, t_start: float) -> None:
    """Each member's state and trunk.json, in its folder: the trunks are ready to branch."""
    B, T = pop.settings.batch_size, pop.settings.seq_len
    flops = flops_per_token(pop.cfg, T) * (pop.stop - pop.first) * B * T
    t0 = time.time()
    for i, m in enumerate(pop.members):
        if run.alive[i]:
            trunks.save_member(run.state, i, m.out, host)
    timing = run.timing | {"trunk_save_s": time.time() - t0, "wall_s": time.time() - t_start}
    for i, m in enumerate(pop.members):
        if pop.primary:
            status = "completed" if run.alive[i] else "failed"
            trunks.write(
                m.out,
                status=status,
                reason=run.failed.get(m.name),
                step=pop.stop,
                evals=run.evals,
                flops=flops,
                window=[None if np.isnan(w[i]) else float(w[i]) for w in run.window],
                timing=timing,
            )


def _loop(pop: _Population, run: _Run, start: int, bar: Progress) -> None:
    """Steps from `start` to the end of the schedule, evaluating and checkpointing."""
    progs, plans, settings = pop.progs, pop.plans, pop.settings
    total, tokens_per_step = pop.stop, settings.batch_size * settings.seq_len
    ends = {p.end_step for pl in plans for p in pl}
    firsts = {p.first_step for pl in plans for p in pl if p.first_step > 0}
    fpt, peak = flops_per_token(pop.cfg, settings.seq_len), peak_flops()
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(progs.abstract))
    val_tokens, val_domain = jnp.asarray(pop.val.tokens_NT1), jnp.asarray(pop.val.domain_N)
    prefetch = _Prefetch(pop.samplers, start, total)
    t_loop = last_ckpt = t_mark = time.time()
    step_mark, t_first = start, None
    with bar, closing(prefetch):
        for step in range(start, total):
            if _stop_requested(step, settings.log_every):
                _stop(pop, run, step, state_bytes)
            if not run.alive.any():
                break
            if not settings.carry_optimizer_state and step in firsts:
                mask = np.array([any(p.first_step == step for p in pl) for pl in plans])
                run.state = progs.reset_opt(run.state, shd.put(mask, progs.vec_sh))
            tokens = shd.put(prefetch.get(), progs.batch_sh)
            run.state, loss = progs.step(run.state, tokens, _learning_rates(pop, run, step))
            _flush(pop, run, step)  # the previous step's loss, read while this one runs
            run.pending, done = loss, step + 1
            if t_first is None:  # the first step carries the compilation
                jax.block_until_ready(loss)
                t_first = time.time()
                run.timing["compile_s"] = t_first - t_loop
            eval_now = done in ends or (settings.eval_every and done % settings.eval_every == 0)
            if eval_now or done % settings.log_every == 0:
                _flush(pop, run, done)
                live = int(run.alive.sum())
                run.tok_s = (done - step_mark) * tokens_per_step * live / (time.time() - t_mark)
                bar.set_postfix(_postfix(run, fpt, peak))
            if eval_now and run.alive.any():
                _evaluate(pop, run, done, val_tokens, val_domain)
            due = time.time() - last_ckpt > 60 * settings.checkpoint_every_minutes
            if settings.checkpoints and run.alive.any() and (done in ends or due):
                _flush(pop, run, done)  # the checkpoint carries every loss up to `done`
                _save(pop, run, done)
                last_ckpt = t_mark = time.time()
                step_mark = done
            bar.update(1)
        _flush(pop, run, total)
    if t_first is not None and total - start > 1:
        t = run.timing
        steady = time.time() - t_first - t["eval_s"] - t["checkpoint_s"]
        t["steps_s"] = steady  # after the first (compiling) step
        t["step_tokens_per_s"] = (total - start - 1) * tokens_per_step * len(run.alive) / steady
        t["step_mfu"] = t["step_tokens_per_s"] * fpt / peak / jax.device_count() if peak else None


def _postfix(run: _Run, fpt: int, peak: float | None) -> dict:
    post = {
        "loss": f"{np.nanmean(run.window[-1]):.3f}" if run.alive.any() else "nan",
        "tok/s": f"{run.tok_s:,.0f}",
    }
    if peak:
        post["MFU"] = f"{run.tok_s * fpt / peak / jax.device_count():.1%}"
    return post


def _summary(pop: _Population, run: _Run, i: int, wall: float) -> RunSummary:
    """The summary of member i (written to its summary.json by the primary process)."""
    m, plans, cfg = pop.members[i], pop.plans[i], pop.cfg
    B, T = pop.settings.batch_size, pop.settings.seq_len
    last = (_read_metrics(m.out / "metrics.jsonl") or [{}])[-1] if pop.primary else {}
    total = plans[-1].end_step
    counts, fpt = param_count(cfg), flops_per_token(cfg, T)
    mixture = {
        p.stage.name: mix for p, mix in zip(plans, pop.samplers[i].realised_mixture(), strict=True)
    }
    summary = RunSummary(
        status="failed" if m.name in run.failed else "completed",
        reason=run.failed.get(m.name),
        name=m.name,
        seed=m.seed,
        steps=total,
        tokens=total * B * T,
        final={
            "loss": last.get("loss"),
            "bpb": last.get("bpb"),
            "task": last.get("task"),
            "step": last.get("step"),
        },
        realised_mixture=mixture,
        code_frac={s: sum(w.get(d, 0.0) for d in m.code_domains) for s, w in mixture.items()},
        code_domains=list(m.code_domains),
        stage_tokens={p.stage.name: p.n_steps * B * T for p in plans},
        epochs=pop.samplers[i].epochs(),
        trunk=m.trunk.name if m.trunk is not None else None,
        flops_charged=fpt * (total - pop.first) * B * T,
        model={
            "d_model": cfg.d_model,
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "d_ff": cfg.d_ff,
            "vocab_size": cfg.vocab_size,
            "seq_len": T,
        },
        params=counts.total,
        non_embedding_params=counts.non_embedding,
        flops_per_token=fpt,
        flops=fpt * total * B * T,
        wall_time_s=wall,
        timing=run.timing,
        population=len(pop.members),
        unique_caps={
            how: dict(caps)
            for how in UNIQUE_CAPS
            if (caps := getattr(pop.settings, how)) is not None
        },
    )
    if pop.primary:
        atomic_write_text(m.out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _copy_metrics(src: Path, dst: Path, step: int) -> None:
    keep = [r for r in _read_metrics(src) if r["step"] <= step]
    atomic_write_text(dst, "".join(json.dumps(r) + "\n" for r in keep))


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
    from codemix.models.presets import model_config

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
    cfg = model_config(size or spec_model["size"], vocab_size, seq_len, **overrides)
    if cfg.loss_impl == "pallas" and (why := fused_loss.why_not(cfg.d_model, vocab_size)):
        warnings.warn(f"loss_impl = 'pallas': the XLA loss is used, because {why}", stacklevel=2)
    return cfg
