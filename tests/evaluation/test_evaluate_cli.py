"""`codemix evaluate` end to end on a tiny trained run."""

import json
import sys
import types
from dataclasses import dataclass

import pytest

import codemix.evaluation
from codemix.cli import main


@pytest.fixture(scope="module")
def run(task_store, train_tiny):
    """10 steps on the store with rendered tasks; the trainer scores boolq and triviaqa."""
    return train_tiny(task_store, tokens=2560, cooldown=0, suite="boolq,triviaqa")


def _evaluate(tmp_path, *args):
    out = tmp_path / "eval.json"
    assert main(["evaluate", *map(str, args), "--quiet", "-o", str(out)]) == 0
    return json.loads(out.read_text())


def test_likelihood_metrics_are_the_trainers_on_the_same_params(run, tmp_path):
    res = _evaluate(tmp_path, run, "--tasks", "boolq,triviaqa")
    trainer = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["task"]
    assert (res["step"], res["tasks"]) == (10, ["boolq", "triviaqa"])
    assert res["task_source"] == {"boolq": "store", "triviaqa": "store"}
    for name in ("boolq", "triviaqa"):
        for metric, value in trainer[name].items():
            if isinstance(value, float):
                assert res["metrics"][name][metric] == pytest.approx(value, rel=1e-5), metric
            else:
                assert res["metrics"][name][metric] == value, metric
    assert res["families"]["nl_reasoning"]["acc"] == pytest.approx(trainer["boolq"]["acc"])
    assert res["families"]["world_knowledge"]["bpb"] == pytest.approx(trainer["triviaqa"]["bpb"])
    assert set(res["wall_s"]) == {"load", "likelihood", "total"} and "generation" not in res


def test_tasks_the_store_lacks_are_rendered_in_memory_with_the_same_numbers(
    run, small_store, tmp_path, capsys
):
    bare = _evaluate(tmp_path, run, "--store", small_store, "--tasks", "copa", "--max-items", 6)
    assert "rendered in memory" in capsys.readouterr().out
    assert bare["task_source"] == {"copa": "rendered in memory"}
    stored = _evaluate(tmp_path, run, "--tasks", "copa", "--max-items", 6)  # first 6 of 150
    assert stored["task_source"] == {"copa": "store"}
    assert bare["metrics"]["copa"]["items"] == 6
    assert bare["metrics"] == stored["metrics"]


@dataclass
class _Outcome:
    status: str
    detail: str = ""


def _stand_ins(monkeypatch, available=None):
    """Small local stand-ins for evaluation/code_tasks.py and evaluation/sandbox.py."""
    ct = types.ModuleType("codemix.evaluation.code_tasks")
    problems = [
        {"task_id": f"T/{i}", "prompt": f"def f{i}(x):\n    ", "test": f"assert f{i}(1) == {i}"}
        for i in range(5)
    ]
    ct.humaneval_problems = ct.mbpp_problems = lambda n: problems[:n]
    ct.humaneval_program = ct.mbpp_program = lambda p, c: p["prompt"] + c + "\n" + p["test"]
    ct.stop_sequences = lambda task: ("\ndef ", "\nclass ", "\nprint(")
    sb = types.ModuleType("codemix.evaluation.sandbox")
    sb.available = lambda: available
    calls = []

    def run_many(sources, *, timeout_s=10.0, memory_mb=1024, workers=None):
        calls.append(sources)
        return [_Outcome("failed" if "assert" in s else "error") for s in sources]

    sb.run_many = run_many
    for name, mod in (("code_tasks", ct), ("sandbox", sb)):
        monkeypatch.setitem(sys.modules, f"codemix.evaluation.{name}", mod)
        monkeypatch.setattr(codemix.evaluation, name, mod, raising=False)
    return calls


def test_generate_scores_exact_match_and_pass_at_1(run, tmp_path, monkeypatch):
    calls = _stand_ins(monkeypatch)
    tasks = "triviaqa,nq_open,humaneval,mbpp"
    res = _evaluate(tmp_path, run, "--generate", "--tasks", tasks, "--max-items", 3, "--batch", 4)
    gen = res["generation"]
    for name in ("triviaqa", "nq_open"):
        assert gen[name]["items"] == 3 and 0 <= gen[name]["exact_match"] <= 1
        assert len(gen[name]["examples"]) == 3
    for name in ("humaneval", "mbpp"):
        assert gen[name]["items"] == 3 and gen[name]["pass@1"] == 0.0
        assert sum(gen[name]["status"].values()) == 3
    assert [len(c) for c in calls] == [3, 3]
    assert all(src.startswith("def f0(x):\n    ") for src in (calls[0][0], calls[1][0]))
    assert res["generated_tokens"] > 0 and res["generated_tokens_per_s"] > 0
    assert {"load", "likelihood", "generation", "execution", "total"} <= set(res["wall_s"])
    assert set(res["metrics"]) == set(tasks.split(","))  # the likelihood metrics as well


def test_arguments_are_checked_before_any_work(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "e.json"

    def refused(*args):
        assert main(["evaluate", str(run), *map(str, args)]) == 2
        assert not out.exists()
        return capsys.readouterr().err

    assert "unknown task(s) nope" in refused("--tasks", "boolq,nope", "-o", out)
    assert "--max-items -1: must be >= 0" in refused("--max-items", -1, "-o", out)
    assert "does not exist" in refused("-o", tmp_path / "missing" / "e.json")
    assert "has a generative form" in refused("--generate", "--tasks", "boolq", "-o", out)
    _stand_ins(monkeypatch, available="bwrap cannot create namespaces here")
    assert "bwrap cannot create namespaces here" in refused("--generate", "-o", out)
    assert "no checkpoint at step 3; available: 10" in refused("--step", 3, "-o", out)


def test_the_real_sandbox_runs_the_code_tasks(run, tmp_path):
    try:
        from codemix.evaluation import code_tasks, sandbox
    except ImportError as e:
        pytest.skip(f"evaluation/code_tasks.py or sandbox.py not here yet ({e})")
    if (reason := sandbox.available()) is not None:
        pytest.skip(reason)
    assert code_tasks.stop_sequences("humaneval")
    res = _evaluate(tmp_path, run, "--generate", "--tasks", "humaneval,mbpp", "--max-items", 2)
    for name in ("humaneval", "mbpp"):
        g = res["generation"][name]
        assert g["items"] == 2 and 0 <= g["pass@1"] <= 1 and sum(g["status"].values()) == 2
