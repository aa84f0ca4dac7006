"""One run from a spec file: what `codemix train` calls."""

from __future__ import annotations

import json
from pathlib import Path

from codemix.errors import CodemixError
from proxy_train.spec import RunSpec, load_spec
from proxy_train.store import TokenStore


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
    elif out.exists() and any(out.iterdir()):
        raise CodemixError(f"--out {out}: exists and is not a codemix run folder")
    return None


def run_single(
    spec_path: Path,
    out: Path,
    size: str | None = None,
    overrides: list[str] | None = None,
    max_tokens: float | None = None,
    progress: bool = True,
) -> dict:
    spec: RunSpec = load_spec(spec_path, overrides)
    store = TokenStore(spec.store)  # a missing or damaged store fails here, before any work
    from proxy_train.train import (
        Member,
        enable_compilation_cache,
        model_config_for,
        train_population,
    )

    size = size or spec.size
    cfg = model_config_for(spec.model, store.vocab_size, spec.train.seq_len, size)
    identity = {
        "spec": spec.raw,
        "size": size,
        "max_tokens": max_tokens,
        "store": str(spec.store.absolute()),
    }
    done = _guard(out, identity)
    if done is not None:
        print(f"{out} already completed; nothing to do")
        return done
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(identity, indent=1))
    enable_compilation_cache()
    member = Member(out.name, spec.schedule, spec.train.seed, out)
    (summary,) = train_population(
        store,
        cfg,
        spec.train,
        [member],
        out / "checkpoints",
        max_tokens=max_tokens,
        progress=progress,
    )
    return summary
