"""Loading a run's model from its checkpoint: train runs, study trials, and what is refused."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from codemix.core.errors import CodemixError
from codemix.evaluation.checkpoint import load_run


def _val_loss(loaded):
    from codemix.models.transformer import token_losses
    from codemix.proxy_train.evaluate import domain_losses, val_sample

    s = val_sample(loaded.store, loaded.cfg.seq_len, 256, 4)
    losses = domain_losses(
        lambda p, t: token_losses(p, t, loaded.cfg),
        loaded.params,
        s.tokens_NT1,
        s.domain_N,
        len(s.domains),
        4,
    )
    return dict(zip(s.domains, np.asarray(losses).tolist(), strict=True))


def test_a_train_run_loads_at_its_latest_step_with_the_trainers_numbers(tiny_run):
    from codemix.proxy_train.train import model_config_for

    loaded = load_run(tiny_run)
    assert (loaded.kind, loaded.member, loaded.step, loaded.batch_size) == ("train", "run", 10, 4)
    assert loaded.cfg == model_config_for({"size": "test"}, loaded.store.vocab_size, 64)
    assert loaded.tokenizer.vocab_size == loaded.cfg.vocab_size
    leaves = jax.tree.leaves(loaded.params)
    assert all(x.dtype == np.float32 for x in leaves)
    assert loaded.params["embed"].shape == (loaded.cfg.vocab_size, loaded.cfg.d_model)
    final = json.loads((tiny_run / "summary.json").read_text())["final"]["loss"]
    got = _val_loss(loaded)
    assert got == pytest.approx(final, rel=1e-5)  # the trainer's last validation


def test_an_earlier_step_is_another_model(tiny_run):
    early = load_run(tiny_run, step=5)
    late = load_run(tiny_run)
    assert early.step == 5
    assert not np.array_equal(early.params["embed"], late.params["embed"])


def test_what_is_not_a_loadable_run_is_named(tiny_run, tmp_path):
    with pytest.raises(CodemixError, match="no such folder"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(CodemixError, match="not a run folder"):
        load_run(tmp_path)
    with pytest.raises(CodemixError, match=r"no checkpoint at step 7; available: 5, 10"):
        load_run(tiny_run, step=7)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_run / "run.json", bare / "run.json")
    with pytest.raises(CodemixError, match="no checkpoint in"):
        load_run(bare)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved, ignore=shutil.ignore_patterns(".lock"))
    record = json.loads((moved / "run.json").read_text())
    (moved / "run.json").write_text(json.dumps(record | {"store": str(tmp_path / "gone")}))
    with pytest.raises(CodemixError, match="its token store .*gone cannot be opened"):
        load_run(moved)


def test_a_study_trial_is_read_from_its_populations_checkpoint(small_store, write_spec, tmp_path):
    """Two trials trained together as optimizer/wave.py lays them out."""
    from codemix.proxy_train.spec import load_spec
    from codemix.proxy_train.store import TokenStore
    from codemix.proxy_train.train import Member, model_config_for, train_population

    spec = load_spec(write_spec(tmp_path, small_store))
    store = TokenStore(small_store)
    cfg = model_config_for(spec.model, store.vocab_size, 64, "test")
    study = tmp_path / "study"
    members = [
        Member(f"trial-{r}", spec.schedule, r, study / f"trial-{r:04d}" / "test") for r in (0, 3)
    ]
    train_population(
        store, cfg, spec.train, members, study / "populations" / "0123456789-test", progress=False
    )
    trial = study / "trial-0003" / "test"
    loaded = load_run(trial, store=small_store)
    assert (loaded.kind, loaded.member, loaded.step, loaded.batch_size) == (
        "trial",
        "trial-3",
        10,
        4,
    )
    assert loaded.cfg == cfg
    final = json.loads((trial / "summary.json").read_text())["final"]["loss"]
    assert _val_loss(loaded) == pytest.approx(final, rel=1e-5)  # member 1's slice, not member 0's
    with pytest.raises(CodemixError, match="does not record its token store"):
        load_run(trial)
    # a study records its store in study.json: then none needs giving
    (study / "study.json").write_text(json.dumps({"study": "s", "store": str(small_store)}))
    assert load_run(trial).store.path.resolve() == Path(small_store).resolve()
