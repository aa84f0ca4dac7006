"""A run's trained model from its orbax checkpoint: config, float32 params, tokenizer, store.

Two kinds of folder are read:
- a `codemix train` run (RUN_DIR with run.json and checkpoints/): the config is rebuilt
  from the spec recorded in run.json, exactly as the trainer built it;
- a study trial at one size (runs/STUDY/trial-NNNN/SIZE, with summary.json): its weights
  live in the checkpoint of the population it trained in (runs/STUDY/populations/KEY-SIZE,
  whose meta lists the members); the config is read off the checkpoint's array shapes and
  summary.json's context length, and the token store from the study's study.json (studies
  older than that record none: then `store=` gives it).

Checkpoints hold `{"params", "opt"}` with a leading population axis; only `params` is
read (orbax partial restore, as numpy, whatever devices wrote it) and the member's slice
taken.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codemix.core.errors import CodemixError
from codemix.models.config import ModelConfig
from codemix.proxy_train.store import TokenStore

__all__ = ["LoadedRun", "checkpoint_steps", "load_run"]


@dataclass(frozen=True)
class LoadedRun:
    """One member's model at one checkpoint step."""

    path: Path  # the run folder given
    kind: str  # "train" or "trial"
    member: str  # its name in the checkpoint
    step: int
    cfg: ModelConfig
    params: dict  # float32 arrays, no population axis
    tokenizer: Any  # the store's (ByteTokenizer or HFTokenizer)
    store: TokenStore
    batch_size: int  # sequences a training step (scoring batches default to it)
    checkpoint: Path  # the checkpoint folder the params came from

    @property
    def seq_len(self) -> int:
        return self.cfg.seq_len


def checkpoint_steps(ckpt_dir: Path) -> list[int]:
    """Finished checkpoint steps in an orbax folder (unfinished ones carry a tmp suffix)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in ckpt_dir.iterdir()
        if p.name.isdigit() and (p / "state").is_dir() and (p / "meta").is_dir()
    )


def load_run(run_dir: Path, step: int | None = None, store: Path | None = None) -> LoadedRun:
    """The model of a run folder at `step` (default: its latest checkpoint)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CodemixError(f"{run_dir}: no such folder")
    if (run_dir / "run.json").is_file():
        return _train_run(run_dir, step, store)
    if (run_dir / "summary.json").is_file() and run_dir.parent.name.startswith("trial-"):
        return _trial_run(run_dir, step, store)
    raise CodemixError(
        f"{run_dir}: not a run folder (no run.json of `codemix train`, nor a study trial's "
        "trial-NNNN/SIZE folder with summary.json)"
    )


def _open_store(path: Path, run_dir: Path) -> TokenStore:
    try:
        return TokenStore(path)
    except CodemixError as e:
        raise CodemixError(f"{run_dir}: its token store {path} cannot be opened: {e}") from None


def _train_run(run_dir: Path, step: int | None, store_path: Path | None) -> LoadedRun:
    from codemix.proxy_train.spec import build_spec
    from codemix.proxy_train.train import model_config_for

    record = json.loads((run_dir / "run.json").read_text())
    spec = build_spec(record["spec"], str(run_dir / "run.json"))
    store = _open_store(Path(store_path or record["store"]), run_dir)
    cfg = model_config_for(spec.model, store.vocab_size, spec.train.seq_len, record["size"])
    ckpt = run_dir / "checkpoints"
    step = _pick_step(ckpt, step, run_dir)
    members = _members(ckpt, step)
    member = run_dir.name if run_dir.name in members else members[0]
    params = _restore_params(ckpt, step, members.index(member))
    _check_shapes(params, cfg, run_dir)
    return LoadedRun(
        run_dir,
        "train",
        member,
        step,
        cfg,
        params,
        _tokenizer(store),
        store,
        spec.train.batch_size,
        ckpt,
    )


def _trial_run(run_dir: Path, step: int | None, store_path: Path | None) -> LoadedRun:
    from codemix.models.presets import Shape
    from codemix.proxy_train.train import model_config_for

    study = run_dir.parent.parent
    record = study / "study.json"  # studies since 2026-12 record their store there
    if store_path is None and record.is_file():
        store_path = json.loads(record.read_text()).get("store")
    if store_path is None:
        raise CodemixError(
            f"{run_dir}: its study does not record its token store; give it "
            "(--store STORE, the study's [data] store)"
        )
    summary = json.loads((run_dir / "summary.json").read_text())
    name = summary.get("name") or f"trial-{int(run_dir.parent.name.split('-')[1])}"
    size = re.sub(r"-(seed-\d+|scratch)$", "", run_dir.name)  # a replicate's, the diagonal's
    found = []
    for ckpt in sorted((study / "populations").glob(f"*-{size}")):
        steps = checkpoint_steps(ckpt)
        if steps and name in _members(ckpt, steps[-1]):
            found.append(ckpt)
    if not found:
        raise CodemixError(
            f"{run_dir}: no checkpoint of member {name} in {study / 'populations'} "
            f"(looked in every *-{size} population folder)"
        )
    ckpt = max(found, key=lambda p: p.stat().st_mtime)  # a retried trial: its newest
    step = _pick_step(ckpt, step, run_dir)
    members = _members(ckpt, step)
    if name not in members:
        raise CodemixError(f"{ckpt}: step {step} does not hold member {name}")
    store = _open_store(Path(store_path), run_dir)
    params = _restore_params(ckpt, step, members.index(name))
    L, D, H, K = params["blocks"]["attn"]["wq"].shape
    G, F = params["blocks"]["attn"]["wk"].shape[2], params["blocks"]["mlp"]["w_gate"].shape[-1]
    V = params["embed"].shape[0]
    if store.vocab_size != V:
        raise CodemixError(
            f"{run_dir}: the model has a vocabulary of {V} tokens, the store {store.path} "
            f"{store.vocab_size}; give the store the study trained on"
        )
    model = {
        "size": Shape(L, D, H, F),
        "n_kv_heads": None if G == H else G,
        "tied_embeddings": "unembed" not in params,
    }
    cfg = model_config_for(model, V, int(summary["model"]["seq_len"]))
    batch = int(summary["tokens"]) // max(1, int(summary["steps"])) // cfg.seq_len
    return LoadedRun(
        run_dir, "trial", name, step, cfg, params, _tokenizer(store), store, max(1, batch), ckpt
    )


def _pick_step(ckpt: Path, step: int | None, run_dir: Path) -> int:
    steps = checkpoint_steps(ckpt)
    if not steps:
        raise CodemixError(f"{run_dir}: no checkpoint in {ckpt} (has the run saved one yet?)")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CodemixError(
            f"{run_dir}: no checkpoint at step {step}; available: {', '.join(map(str, steps))}"
        )
    return step


def _members(ckpt: Path, step: int) -> list[str]:
    meta = json.loads((ckpt / str(step) / "meta" / "metadata").read_text())
    return list(meta.get("members") or [])


def _restore_params(ckpt: Path, step: int, member: int) -> dict:
    """Member `member`'s float32 params at `step`, as numpy, without the population axis."""
    import jax
    import orbax.checkpoint as ocp

    path = (ckpt / str(step) / "state").absolute()
    absl = logging.getLogger("absl")  # orbax notes that "state" has no step metadata of its own
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with ocp.PyTreeCheckpointer() as ckptr:
            tree = ckptr.metadata(path).item_metadata.tree
            if "params" not in tree:
                raise CodemixError(f"{path}: no params in this checkpoint")
            item = {"params": jax.tree.map(lambda _: 0, tree["params"])}
            as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
            args = ocp.args.PyTreeRestore(item=item, restore_args=as_numpy, partial_restore=True)
            params = ckptr.restore(path, args=args)["params"]
    finally:
        absl.setLevel(level)
    return jax.tree.map(lambda x: np.asarray(x[member], np.float32), params)


def _check_shapes(params: dict, cfg: ModelConfig, run_dir: Path) -> None:
    import jax

    from codemix.models.transformer import init_params

    want = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    got = jax.tree.map(lambda x: x.shape, params)
    if jax.tree.map(lambda x: x.shape, want) != got:
        raise CodemixError(
            f"{run_dir}: the checkpoint's arrays do not fit the model its run.json describes"
        )


def _tokenizer(store: TokenStore):
    from codemix.proxy_train.tasks import store_tokenizer

    return store_tokenizer(store.path, store.manifest)
