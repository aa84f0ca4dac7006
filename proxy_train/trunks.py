"""Trunks: the first stages that several runs share, trained once and branched from.

A trunk folder holds one member's training state at the trunk's last step (`state/`,
orbax), its evaluations up to that step (`metrics.jsonl`) and `trunk.json`: what decides
it (`identity`), and once it is finished, `status`, `step`, the evaluations done (task
scores go with every K-th one, so a branch must go on counting) and the FLOPs it took.

The sampler draws any step's batch from (seed, step) alone and the learning rate of a
step depends only on the stages up to it, so a run that starts from a trunk's state trains
exactly what it would have trained from step zero.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import numpy as np

from codemix.core.files import atomic_write_text

TRUNK_FILE = "trunk.json"


def read(folder: Path) -> dict:
    """trunk.json of a trunk folder ({} before it exists)."""
    path = Path(folder) / TRUNK_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def completed(folder: Path, info: dict | None = None) -> bool:
    """Trained, with its state still there (a state deleted by hand is trained, or restored
    from its population's checkpoint, again)."""
    info = read(folder) if info is None else info
    return info.get("status") == "completed" and (Path(folder) / "state").is_dir()


def finished(folder: Path) -> bool:
    """Completed, or failed: nothing more to train."""
    info = read(folder)
    return info.get("status") == "failed" or completed(folder, info)


def write(folder: Path, **fields) -> None:
    """Update trunk.json with `fields` (the identity first, the outcome when trained)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(folder) / TRUNK_FILE, json.dumps(read(folder) | fields, indent=1))


def save_member(state_P, i: int, folder: Path, host_sharding) -> None:
    """Write member i's slice of a population's state to FOLDER/state (a collective: every
    process of a multi-host job calls it)."""
    import orbax.checkpoint as ocp

    state = _taker(host_sharding)(state_P, np.int32(i))
    ckptr = ocp.StandardCheckpointer()
    ckptr.save((Path(folder) / "state").absolute(), state, force=True)
    ckptr.wait_until_finished()
    ckptr.close()


@functools.cache
def _taker(host_sharding):
    """One compiled slice for every member (the index is an argument, not a constant)."""
    return jax.jit(
        lambda s, k: jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, k, 0, False), s),
        out_shardings=host_sharding,
    )


def load_members(folders: list[Path], abstract_P, state_sharding, host_sharding):
    """The population state whose member k is the state saved in folders[k]."""
    import orbax.checkpoint as ocp

    from codemix.proxy_train import sharding as shd

    one = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype, sharding=host_sharding), abstract_P
    )
    ckptr = ocp.StandardCheckpointer()
    # the branches of one trunk share its state: read each trunk once, not once a branch
    states = {
        f: jax.tree.map(np.asarray, ckptr.restore((Path(f) / "state").absolute(), one))
        for f in dict.fromkeys(folders)
    }
    ckptr.close()
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *[states[f] for f in folders])
    return jax.tree.map(lambda x, s: shd.put(x, s), stacked, state_sharding)
