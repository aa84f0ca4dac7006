"""The few places codemix reaches past Optuna's public API, kept together.

Heartbeats: `Study.optimize` records them itself; a study driven by ask and tell, as codemix
drives it, has no public call for them, so `beat` uses the storage's own method.
"""

from __future__ import annotations

import optuna
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled


def has_heartbeats(study: optuna.Study) -> bool:
    """Whether the storage detects dead workers (RDB storages with a heartbeat interval)."""
    return is_heartbeat_enabled(study._storage)


def beat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record that the worker training `trial` is alive."""
    storage = study._storage
    if isinstance(storage, BaseHeartbeat):
        storage.record_heartbeat(trial._trial_id)
