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


def init_distributed() -> bool:
    """Join a multi-host job when asked to (`CODEMIX_DISTRIBUTED=1`); True if joined.

    `jax.distributed.initialize()` finds the coordinator, the number of processes and this
    process's index by itself on TPU pods, SLURM, Open MPI and Kubernetes; elsewhere give
    them as `JAX_COORDINATOR_ADDRESS=host:port`, `CODEMIX_NUM_PROCESSES` and
    `CODEMIX_PROCESS_ID`. Call it before anything touches a device."""
    if os.environ.get("CODEMIX_DISTRIBUTED") != "1" or jax.distributed.is_initialized():
        return jax.distributed.is_initialized()
    n, i = os.environ.get("CODEMIX_NUM_PROCESSES"), os.environ.get("CODEMIX_PROCESS_ID")
    jax.distributed.initialize(
        num_processes=int(n) if n else None, process_id=int(i) if i else None
    )
    from jax.experimental import multihost_utils

    # set the collectives up now, while every process is here: CPU (gloo) collectives give
    # their first meeting 30 s, which one process's start-up (a study's storage) can exceed
    multihost_utils.sync_global_devices("codemix: joined")
    return True


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process of a multi-host job (a collective: every
    process must call it at the same point)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.array([flag]))).any())


def broadcast_json(obj=None):
    """The primary process's `obj` (any JSON value), on every process (a collective)."""
    if jax.process_count() == 1:
        return obj
    import json

    from jax.experimental import multihost_utils

    data = json.dumps(obj).encode() if jax.process_index() == 0 else b""
    n = int(multihost_utils.broadcast_one_to_all(np.array(len(data), np.int64)))
    buf = np.zeros(n, np.uint8)
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(buf)).tobytes())


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


def replicated(mesh: Mesh) -> NamedSharding:
    """Whole on every device: what the host reads (losses), so every process can."""
    return NamedSharding(mesh, P())


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Per-member vectors such as learning rates (P,)."""
    return NamedSharding(mesh, P("pop"))


def put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array (the same on every host) as a global array; each host fills its shards."""
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
