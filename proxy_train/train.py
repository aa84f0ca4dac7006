"""The proxy trainer: P models of one shape, each with its own schedule and seed, trained
together in one jitted step (vmap over a population axis). `codemix train` is P = 1.

Per step the host draws each member's batch (a pure function of its seed and the step,
prepared one step ahead in a thread), computes each member's learning rate from its
schedule, and the device runs clip -> Adam -> decoupled weight decay -> p -= lr * u for
all members at once. fp32 master weights, bf16 compute (fp32 on CPU), donated buffers.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codemix.errors import CodemixError
from codemix.files import atomic_write_text
from models.accounting import flops_per_token, param_count
from models.config import ModelConfig
from models.transformer import init_params, token_losses
from proxy_train import sharding as shd
from proxy_train._progress import Progress
from proxy_train.evaluate import bits_per_byte, domain_losses, val_sample
from proxy_train.sampler import MixtureSampler
from proxy_train.schedule import Schedule, StagePlan, learning_rate, stage_at
from proxy_train.spec import TrainSettings
from proxy_train.store import TokenStore

SQUEEZE_SINGLE = True  # benchmarks/train_throughput.py compares with the vmapped path
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


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def _is_finite(tree) -> jax.Array:
    """(P,) whether every parameter of each member is finite."""
    leaves = [jnp.isfinite(x).reshape(x.shape[0], -1).all(-1) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all(0)


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
) -> list[dict]:
    """Train every member to the end of its schedule; returns each member's summary."""
    import orbax.checkpoint as ocp

    t_start = time.time()
    P, B, T = len(members), settings.batch_size, settings.seq_len
    counts = param_count(cfg)
    budget_params = n_params_for_budget or counts.non_embedding
    plans: list[list[StagePlan]] = [
        m.schedule.plan(B * T, budget_params, max_tokens) for m in members
    ]
    total = plans[0][-1].end_step
    if any(p[-1].end_step != total for p in plans):
        raise ValueError("members of one population must run the same number of steps")
    samplers = [MixtureSampler(store, p, B, T, m.seed) for p, m in zip(plans, members, strict=True)]
    val = val_sample(store, T, settings.eval_tokens, B)
    D = len(store.domains)

    mesh = shd.make_mesh(P, devices)
    tx = optimizer(settings)

    def init_member(seed):
        params = init_params(cfg, jax.random.key(seed))
        return {"params": params, "opt": tx.init(params)}

    seeds = jnp.array([m.seed for m in members], jnp.uint32)
    abstract = jax.eval_shape(jax.vmap(init_member), seeds)
    state_sh = shd.state_shardings(abstract, mesh)
    batch_sh, vec_sh = shd.batch_sharding(mesh, B), shd.member_sharding(mesh)

    def member_step(state, tokens_BT1, lr):
        loss, grads = jax.value_and_grad(lambda p: token_losses(p, tokens_BT1, cfg).mean())(
            state["params"]
        )
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = jax.tree.map(lambda p, u: p - lr * u, state["params"], updates)
        return {"params": params, "opt": opt}, loss

    if P == 1 and SQUEEZE_SINGLE:  # one model: no population axis inside the step

        def single_step(state, tokens_PBT1, lr_P):
            one = jax.tree.map(lambda x: x[0], state)
            new, loss = member_step(one, tokens_PBT1[0], lr_P[0])
            return jax.tree.map(lambda x: x[None], new), loss[None]

        stepper = single_step
    else:
        stepper = jax.vmap(member_step)
    step_fn = jax.jit(stepper, donate_argnums=0, out_shardings=(state_sh, vec_sh))

    def reset_opt(state, mask_P):
        fresh = jax.vmap(tx.init)(state["params"])
        opt = jax.tree.map(
            lambda f, o: jnp.where(mask_P.reshape((-1,) + (1,) * (o.ndim - 1)), f, o),
            fresh,
            state["opt"],
        )
        return {"params": state["params"], "opt": opt}

    reset_fn = jax.jit(reset_opt, donate_argnums=0, out_shardings=state_sh)

    def seq_losses(params, t):
        return token_losses(params, t, cfg)

    eval_fn = jax.jit(
        jax.vmap(
            lambda p, toks, dom: domain_losses(seq_losses, p, toks, dom, D, B),
            in_axes=(0, None, None),
        )
    )
    val_tokens, val_domain = jnp.asarray(val.tokens_NT1), jnp.asarray(val.domain_N)

    # Resume: the newest checkpoint, else a fresh start (members initialise from their seeds)
    mngr = ocp.CheckpointManager(
        ckpt_dir.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    )
    start, meta = 0, {"failed": {}}
    if mngr.latest_step() is not None:
        start = mngr.latest_step()
        saved = mngr.restore(start, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        if saved["meta"].get("members") != [m.name for m in members]:
            raise CodemixError(
                f"{ckpt_dir}: holds checkpoints of another population "
                f"({saved['meta'].get('members')}); use another folder"
            )
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh
        )
        restored = mngr.restore(
            start,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
        state, meta = restored["state"], restored["meta"]
    else:
        state = jax.jit(jax.vmap(init_member), out_shardings=state_sh)(
            shd.put(np.asarray(seeds), vec_sh)
        )
    for m in members:
        m.out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(m.out / "metrics.jsonl", start)
    failed: dict[str, str] = dict(meta["failed"])
    alive = np.array([m.name not in failed for m in members])

    fpt = flops_per_token(cfg, T)
    peak = peak_flops()
    ends = {p.end_step for pl in plans for p in pl}
    starts = {p.first_step for pl in plans for p in pl if p.first_step > 0}
    last_ckpt = t_mark = time.time()
    step_mark = start
    losses_window: list[np.ndarray] = []
    pending = None
    prefetch = _Prefetch(samplers, start, total)
    bar = Progress(total, start, f"{P} x {cfg.n_layers}L{cfg.d_model}d", progress)
    tok_s = 0.0

    def evaluate(step_done: int):
        loss_PD = np.asarray(eval_fn(state["params"], val_tokens, val_domain))
        for i, m in enumerate(members):
            if not alive[i]:
                continue
            stage = plans[i][stage_at(plans[i], step_done - 1)].stage.name
            bpb = bits_per_byte(loss_PD[i], val.tokens_per_byte)
            rec = {
                "step": step_done,
                "tokens": step_done * B * T,
                "stage": stage,
                "lr": learning_rate(plans[i], step_done - 1, settings.lr_peak),
                "train_loss": float(np.mean([w[i] for w in losses_window]))
                if losses_window
                else None,
                "loss": {d: float(loss_PD[i, j]) for j, d in enumerate(store.domains)},
                "bpb": {d: float(bpb[j]) for j, d in enumerate(store.domains)},
                "tokens_per_s": tok_s,
            }
            with open(m.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
        losses_window.clear()

    def check(loss_P: np.ndarray, step_done: int):
        nonlocal state
        bad = alive & ~np.isfinite(loss_P)
        for i in np.flatnonzero(bad):
            failed[members[i].name] = f"loss became {loss_P[i]} at step {step_done}"
            alive[i] = False
        if bad.any():  # zero the failed members so no checkpoint ever holds NaN weights
            keep = shd.put(alive, vec_sh)
            state = jax.jit(
                lambda s, k: jax.tree.map(
                    lambda x: jnp.where(k.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0), s
                ),
                donate_argnums=0,
                out_shardings=state_sh,
            )(state, keep)
        losses_window.append(np.where(alive, loss_P, np.nan))

    timing = {"compile_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0}
    t_loop, t_first, first_step = time.time(), None, start
    try:
        for step in range(start, total):
            if not alive.any():
                break
            if not settings.carry_optimizer_state and step in starts:
                mask = np.array([any(p.first_step == step for p in pl) for pl in plans])
                state = reset_fn(state, shd.put(mask, vec_sh))
            tokens = shd.put(prefetch.get(), batch_sh)
            lr = np.array(
                [
                    learning_rate(pl, step, settings.lr_peak) if a else 0.0
                    for pl, a in zip(plans, alive, strict=True)
                ],
                np.float32,
            )
            state, loss = step_fn(state, tokens, shd.put(lr, vec_sh))
            if pending is not None:  # read last step's loss while this one runs
                check(np.asarray(pending), step)
            pending = loss
            done = step + 1
            if t_first is None:  # the first step carries the compilation
                jax.block_until_ready(loss)
                t_first = time.time()
                timing["compile_s"] = t_first - t_loop
            eval_now = done in ends or (settings.eval_every and done % settings.eval_every == 0)
            if eval_now or done % settings.log_every == 0:
                check(np.asarray(pending), done)
                pending = None
                dt = time.time() - t_mark
                tok_s = (done - step_mark) * B * T * int(alive.sum()) / max(dt, 1e-9)
                post = {
                    "loss": f"{np.nanmean(losses_window[-1]):.3f}" if alive.any() else "nan",
                    "tok/s": f"{tok_s:,.0f}",
                }
                if peak:
                    post["MFU"] = f"{tok_s * fpt / peak / jax.device_count():.1%}"
                bar.set_postfix(post)
            if eval_now and alive.any():
                t0 = time.time()
                evaluate(done)
                timing["eval_s"] += time.time() - t0
            if (
                settings.checkpoints
                and alive.any()
                and (
                    done in ends or time.time() - last_ckpt > 60 * settings.checkpoint_every_minutes
                )
            ):
                t0 = time.time()
                if not bool(np.asarray(_is_finite(state["params"]))[alive].all()):
                    raise FloatingPointError("non-finite weights in a live member")
                meta = {"failed": failed, "members": [m.name for m in members]}
                mngr.save(
                    done,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                    ),
                )
                last_ckpt = t_mark = time.time()
                step_mark = done
                timing["checkpoint_s"] += time.time() - t0
            bar.update(1)
        if pending is not None:
            check(np.asarray(pending), total)
        if t_first is not None and total - first_step > 1:
            steady = time.time() - t_first - timing["eval_s"] - timing["checkpoint_s"]
            timing["step_tokens_per_s"] = (total - first_step - 1) * B * T * P / max(steady, 1e-9)
            timing["step_mfu"] = (
                timing["step_tokens_per_s"] * fpt / peak / jax.device_count() if peak else None
            )
    finally:
        bar.close()
        mngr.wait_until_finished()
        mngr.close()

    wall = time.time() - t_start
    summaries = []
    for i, m in enumerate(members):
        records = _read_metrics(m.out / "metrics.jsonl")
        last = records[-1] if records else {}
        tokens = total * B * T
        summary = {
            "status": "failed" if m.name in failed else "completed",
            "reason": failed.get(m.name),
            "name": m.name,
            "seed": m.seed,
            "steps": total,
            "tokens": tokens,
            "final": {"loss": last.get("loss"), "bpb": last.get("bpb"), "step": last.get("step")},
            "realised_mixture": {
                p.stage.name: mix
                for p, mix in zip(plans[i], samplers[i].realised_mixture(), strict=True)
            },
            "stage_tokens": {p.stage.name: p.n_steps * B * T for p in plans[i]},
            "epochs": samplers[i].epochs(),
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
            "flops": fpt * tokens,
            "wall_time_s": wall,
            "timing": timing,
            "population": P,
        }
        _write_json(m.out / "summary.json", summary)
        summaries.append(summary)
    return summaries


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    os.replace(tmp, path)


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
