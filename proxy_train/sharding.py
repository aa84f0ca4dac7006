"""Device meshes for the trainer: a population axis for many proxies, data and FSDP axes
for one large model. Works the same on one CPU, many GPUs or a TPU pod (multi-host: call
`init_distributed()` first; every host then builds the same global batch and keeps its
own shards)."""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def init_distributed() -> None:
    """Join a multi-host job (TPU pods, GPU clusters) when the launcher set one up."""
    if os.environ.get("CODEMIX_DISTRIBUTED") == "1" or "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize()


def make_mesh(population: int, devices=None) -> Mesh:
    """Axes (pop, data, fsdp). Members go across devices when they divide evenly; the rest
    of the devices shard a member's batch (data) or, for a single model, its weights too."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    pop = math.gcd(population, n)
    rest = n // pop
    data, fsdp = (rest, 1) if population > 1 else (1, rest)
    return Mesh(np.array(devices).reshape(pop, data, fsdp), ("pop", "data", "fsdp"))


def _param_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """Leading population axis on `pop`; the largest other axis that divides on `fsdp`."""
    spec: list = ["pop"] + [None] * (len(shape) - 1)
    if fsdp > 1 and len(shape) > 1:
        dims = sorted(range(1, len(shape)), key=lambda i: -shape[i])
        for i in dims:
            if shape[i] % fsdp == 0:
                spec[i] = "fsdp"
                break
    return P(*spec)


def state_shardings(abstract_state, mesh: Mesh):
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, _param_spec(x.shape, fsdp) if x.ndim else P()),
        abstract_state,
    )


def batch_sharding(mesh: Mesh, batch_size: int) -> NamedSharding:
    """(P, B, T+1) batches: members on `pop`, sequences on data x fsdp when they divide."""
    inner = mesh.shape["data"] * mesh.shape["fsdp"]
    return NamedSharding(mesh, P("pop", ("data", "fsdp") if batch_size % inner == 0 else None))


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Per-member vectors such as learning rates (P,)."""
    return NamedSharding(mesh, P("pop"))


def put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array (the same on every host) as a global array; each host fills its shards."""
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
