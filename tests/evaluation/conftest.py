"""Tiny `codemix train` runs for the evaluation tests: one spec, one way to train it, and a
run trained once per session (per xdist worker) for the tests that only read a run."""

from __future__ import annotations

from pathlib import Path

import pytest

SPEC = """
[data]
store = "{store}"
[model]
size = "test"
[train]
seq_len = 64
batch_size = 4
eval_tokens = 256
seed = {seed}
{evals}
[[stages]]
name = "init"
tokens = {tokens}
mixture = {{ text = 0.75, code = 0.25 }}
lr = {{ shape = "cosine", warmup = 0.1, end = 0.5 }}
{cooldown}"""

COOLDOWN = """
[[stages]]
name = "cooldown"
tokens = {tokens}
mixture = {{ text = 0.5, code = 0.5 }}
lr = {{ shape = "linear", start = "continue", end_lr = 1e-5 }}
"""


def _spec_text(store, *, tokens=1280, cooldown=1280, seed=0, suite=None) -> str:
    """4 x 64 tokens a step: the default is 5 steps of init, then 5 of cooldown."""
    return SPEC.format(
        store=store,
        seed=seed,
        evals=f'[evals]\nsuite = "{suite}"' if suite else "",
        tokens=tokens,
        cooldown=COOLDOWN.format(tokens=cooldown) if cooldown else "",
    )


@pytest.fixture(scope="session")
def write_spec():
    """write_spec(folder, store, tokens=1280, cooldown=1280, seed=0, suite=None) -> the spec's
    path: an init stage of `tokens`, a cooldown of `cooldown` (0: none), [evals] `suite`."""

    def write(folder: Path, store, *, name="spec.toml", **kw) -> Path:
        path = Path(folder) / name
        path.write_text(_spec_text(store, **kw))
        return path

    return write


@pytest.fixture(scope="session")
def train_tiny(write_spec, tmp_path_factory):
    """train_tiny(store, **spec) -> the folder of a finished `codemix train` run, in a folder
    of its own (the keywords are write_spec's)."""
    from codemix.cli import main

    def train(store, **kw) -> Path:
        folder = tmp_path_factory.mktemp("run")
        spec = write_spec(folder, store, **kw)
        assert main(["train", str(spec), "--out", str(folder / "run"), "--quiet"]) == 0
        return folder / "run"

    return train


@pytest.fixture(scope="session")
def tiny_run(small_store, train_tiny) -> Path:
    """10 steps on the small store in two stages, checkpoints at steps 5 and 10. Shared by
    the tests of several files: read it only; copy it (shutil.copytree) to change it."""
    return train_tiny(small_store)
