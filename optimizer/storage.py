"""Study storage: an SQLite file beside the spec by default, a PostgreSQL URL for workers
on many machines, or `journal:PATH` (Optuna's journal file) for shared file systems. Plain
Optuna storage throughout, so `optuna-dashboard URL` opens it."""

from __future__ import annotations

from pathlib import Path

from codemix.core.errors import CodemixError
from codemix.core.secrets import normalise, redact, scrub

__all__ = ["default_url", "open_storage", "redact"]


def default_url(spec_path: Path) -> str:
    return f"sqlite:///{spec_path.with_suffix('.db').absolute()}"


def open_storage(
    url: str,
    heartbeat_seconds: int = 30,
    grace_seconds: int = 120,
    max_retries: int = 2,
    existing: bool = False,
):
    """An Optuna storage with heartbeats (RDB only), failing clearly if unreachable.

    `existing`: for readers (export, report), whose mistyped path must not leave an empty
    database behind."""
    import warnings

    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :])
        if not path.parent.is_dir():
            raise CodemixError(f"storage {url}: folder {path.parent} does not exist")
        if existing and not path.is_file():
            raise CodemixError(f"storage {url}: no file {path} to read")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if not url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg2://", "mysql")):
        raise CodemixError(
            f"storage {redact(url)}: expected sqlite:///PATH, postgresql://USER@HOST/DB or "
            "journal:PATH"
        )
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if not path.parent.is_dir():
            raise CodemixError(f"storage {url}: folder {path.parent} does not exist")
        if existing and not path.is_file():
            raise CodemixError(f"storage {url}: no file {path} to read")
    engine = (
        {"connect_args": {"timeout": 60}}
        if url.startswith("sqlite")
        else {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    )
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(
                normalise(url) if not url.startswith("sqlite") else url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat_seconds,
                grace_period=grace_seconds,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retries),
            )
    except Exception as e:  # sqlalchemy raises many kinds; none may leak the password
        reason = scrub(redact(str(e).splitlines()[0]), url) if str(e) else type(e).__name__
        raise CodemixError(f"storage {redact(url)} is unreachable or invalid: {reason}") from None
