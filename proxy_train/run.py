"""One run from a spec file: what `codemix train` calls.

Everything is checked before the run folder is touched (spec, store, domains, size, steps
per stage); then the folder is locked for this process, claimed by `run.json`, and trained.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from codemix.core.errors import CodemixError
from codemix.core.files import atomic_write_text
from codemix.core.lock import folder_lock
from codemix.proxy_train.schedule import describe_plan
from codemix.proxy_train.spec import RunSpec, load_spec, open_store

_OURS = {"run.json", "summary.json", "metrics.jsonl", "checkpoints", ".lock"}


def _guard(out: Path, identity: dict) -> dict | None:
    """RUN_DIR belongs to one spec: refuse another's, return the summary of a finished one."""
    record = out / "run.json"
    if record.is_file():
        if json.loads(record.read_text()) != identity:
            raise CodemixError(
                f"--out {out}: holds a run of another spec, size or override set; "
                "use a new folder (nothing was changed)"
            )
        summary = out / "summary.json"
        if summary.is_file():
            done = json.loads(summary.read_text())
            if done.get("status") == "completed":
                return done
    _check_not_foreign(out)
    return None


def _check_not_foreign(out: Path) -> None:
    if out.exists() and not (out / "run.json").is_file():
        if not out.is_dir() or any(p.name not in _OURS for p in out.iterdir()):
            raise CodemixError(f"--out {out}: exists and is not a codemix run folder")


def run_single(
    spec_path: Path,
    out: Path,
    size: str | None = None,
    overrides: list[str] | None = None,
    max_tokens: float | None = None,
    progress: bool = True,
) -> dict:
    spec: RunSpec = load_spec(spec_path, overrides)
    store = open_store(spec)  # a missing or damaged store fails here, before any work
    import jax

    from codemix.models.accounting import param_count
    from codemix.proxy_train import sharding as shd
    from codemix.proxy_train.train import (
        Member,
        enable_compilation_cache,
        model_config_for,
        train_population,
    )

    size = size or spec.size
    cfg = model_config_for(spec.model, store.vocab_size, spec.train.seq_len, size)
    tokens_per_step = spec.train.batch_size * spec.train.seq_len
    try:
        plans = spec.schedule.plan(tokens_per_step, param_count(cfg).non_embedding, max_tokens)
    except CodemixError as e:
        raise CodemixError(f"{spec_path}: {e}") from None
    identity = {
        "spec": spec.raw,
        "size": size,
        "max_tokens": max_tokens,
        "store": str(spec.store.absolute()),
    }
    primary = jax.process_index() == 0  # multi-host: the first process writes the files
    with ExitStack() as stack:
        # Only the primary looks at the folder, and tells the others what it found: a
        # follower looking for itself could catch run.json half-written, give up, and leave
        # the primary waiting for it in the first collective.
        verdict = None
        if primary:
            try:
                _check_not_foreign(out)  # before the lock file lands in someone else's folder
                stack.enter_context(folder_lock(out, "--out"))
                verdict = {"done": _guard(out, identity), "error": None}
            except CodemixError as e:
                verdict = {"done": None, "error": str(e)}
        verdict = shd.broadcast_json(verdict)
        if verdict["error"] is not None:
            raise CodemixError(verdict["error"])
        if verdict["done"] is not None:
            if primary:
                print(f"{out} already completed; nothing to do")
            return verdict["done"]
        if primary:
            atomic_write_text(out / "run.json", json.dumps(identity, indent=1))
            print(f"{size}: {describe_plan(plans, tokens_per_step)}")
        enable_compilation_cache()
        member = Member(out.name, spec.schedule, spec.train.seed, out, spec.code_domains)
        (summary,) = train_population(
            store,
            cfg,
            spec.train,
            [member],
            out / "checkpoints",
            max_tokens=max_tokens,
            progress=progress,
            label=f"train {out.name}, size {size}",
            **task_args(spec, store),
        )
    return summary


def task_args(spec: RunSpec, store) -> dict:
    """train_population's task arguments for a spec with [evals] (else none)."""
    if spec.evals is None:
        return {}
    from codemix.proxy_train.task_eval import load_tasks

    s = spec.train
    return {
        "tasks": load_tasks(store, spec.evals.tasks, s.seq_len, s.batch_size),
        "tasks_every": spec.evals.every,
    }
