"""The results contract: what a run reports (`RunSummary`, written by the trainer, kept by
studies) and the names of the results table's columns (written by `codemix study export`,
read by the analysis and the report). Names are defined here and nowhere else.

Columns join their parts with "." (`mix.init.code`, `bpb.text`), which stage and domain
names may not contain (`check_name`), so `mix.init.*` never matches a stage `init_late`, and
a metric is spelled the same in a study spec's objectives and in a table.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

from codemix.core.errors import CodemixError

SEP = "."
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
METRIC_KINDS = ("loss", "bpb")  # per-domain metrics of every run, on the validation split


def check_name(name: str, what: str) -> str:
    """Domain and stage names: letters, digits, '_' and '-', starting with a letter."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise CodemixError(
            f"{what} name {name!r}: use letters, digits, '_' or '-', starting with a letter "
            "('.' separates the parts of --set keys and of result columns)"
        )
    return name


class Final(TypedDict):
    loss: dict[str, float] | None  # per domain
    bpb: dict[str, float] | None
    task: dict[str, dict] | None  # per task and family: bpb, acc, ... (when [evals] is set)
    step: int | None


class RunSummary(TypedDict):
    """summary.json of one run (one member of a population)."""

    status: str  # "completed" or "failed"
    reason: str | None  # why it failed (a NaN loss, say)
    name: str
    seed: int
    steps: int
    tokens: int
    final: Final  # the last evaluation
    realised_mixture: dict[str, dict[str, float]]  # stage -> domain -> share of its tokens
    code_frac: dict[str, float]  # stage -> realised share of the [groups] code domains
    code_domains: list[str]  # the domains [groups] counts as code
    stage_tokens: dict[str, int]
    epochs: dict[str, float]  # domain -> times its training tokens were seen
    model: dict[str, Any]  # shape, vocab_size, seq_len
    params: int
    non_embedding_params: int
    flops_per_token: int
    flops: int  # of the whole schedule
    flops_charged: int  # of the steps this run trained itself: all, or those after its trunk
    trunk: str | None  # the trunk it branched from (a folder of the study's trunks/)
    wall_time_s: float
    timing: dict[str, Any]
    population: int
    # the domains the spec capped, as it asked: unique_tokens (tokens) or unique_share (of
    # the run's tokens); absent from summaries written before, and where nothing was capped
    unique_caps: dict[str, dict[str, float]]


# what a study keeps of each run's summary (the rest stays in the run folder)
STUDY_KEYS = (
    "status",
    "reason",
    "final",
    "realised_mixture",
    "code_frac",
    "code_domains",
    "epochs",
    "stage_tokens",
    "model",
    "params",
    "non_embedding_params",
    "tokens",
    "flops",
    "flops_charged",
    "trunk",
    "wall_time_s",
    "seed",
    "unique_caps",
    "timing",
)


def metric(kind: str, domain: str) -> str:
    """`bpb.text`: a per-domain metric, as study objectives and tables both name it."""
    return f"{kind}{SEP}{domain}"


def task(name: str, what: str) -> str:
    """`task.nl_reasoning.acc`, `task.hellaswag.bpb`, `task.copa.items`: a downstream task's
    (or a family's) metric, as study objectives and tables both name it."""
    return f"task{SEP}{name}{SEP}{what}"


def mix(stage: str, domain: str) -> str:
    """`mix.init.code`: the realised share of a domain in a stage's tokens."""
    return f"mix{SEP}{stage}{SEP}{domain}"


def code_frac(stage: str) -> str:
    """`code_frac.init`: the realised share of the code group in a stage's tokens."""
    return f"code_frac{SEP}{stage}"


def stage_tokens(stage: str) -> str:
    return f"tokens{SEP}{stage}"


def epochs(domain: str) -> str:
    return f"epochs{SEP}{domain}"


# the phases of a population's wall time its summary times (`timing`), in order
PHASES = ("setup_s", "restore_s", "compile_s", "steps_s", "eval_s", "task_eval_s", "checkpoint_s")


def phase_time(phase: str) -> str:
    """`time.compile_s`: seconds the run's population spent in one phase of its wall time."""
    return f"time{SEP}{phase}"


def unique_cap(how: str, domain: str) -> str:
    """`unique_tokens.text`, `unique_share.text`: how the spec capped a domain's sample."""
    return f"{how}{SEP}{domain}"


UNIQUE_CAPS = ("unique_tokens", "unique_share")


def param(key: str) -> str:
    """`param.stages.init.code_frac`: a searched value as it was trained."""
    return f"param{SEP}{key}"


def choice(key: str) -> str:
    """`choice.stages.init.code_frac`: the name of a searched choice (`balanced`, say)."""
    return f"choice{SEP}{key}"


def objective(i: int) -> str:
    return f"objective{SEP}{i}"


CODE_DOMAINS = "code_domains"  # comma-separated: what [groups] counted as code
# one value per row, in this order, before the per-stage and per-domain columns
RUN_COLUMNS = (
    "study",
    "trial",
    "state",
    "reason",
    "retry_of",
    "size",
    "params",
    "non_embedding_params",
    "vocab_size",
    "tokens",
    "flops",
    "flops_charged",
    "trunk",
    "seed",
    "wall_time_s",
    "tokens_per_s",
    "run_status",
    CODE_DOMAINS,
)


def scratch(column: str) -> str:
    """`scratch.bpb.text`: the diagonal check's run of the same trial from scratch."""
    return f"scratch{SEP}{column}"


def versus(column: str) -> str:
    """`vs_control.bpb.text`: a run's metric minus its study's control run's."""
    return f"vs_control{SEP}{column}"


def scratch_columns(summary: dict) -> dict:
    """A from-scratch run's final metrics and FLOPs, to set beside its branched twin's."""
    row = {scratch("flops"): summary["flops"], scratch("run_status"): summary["status"]}
    final = summary["final"] or {}
    for kind in METRIC_KINDS:
        for d, v in (final.get(kind) or {}).items():
            row[scratch(metric(kind, d))] = v
    return row


def run_columns(summary: dict, size: str) -> dict:
    """The columns of one run at one size, from what a study kept of its summary."""
    row = {
        "size": size,
        "params": summary["params"],
        "non_embedding_params": summary["non_embedding_params"],
        "vocab_size": (summary.get("model") or {}).get("vocab_size"),
        "tokens": summary["tokens"],
        "flops": summary["flops"],
        # results kept before branching existed trained every step themselves
        "flops_charged": summary.get("flops_charged", summary["flops"]),
        "trunk": summary.get("trunk"),
        "seed": summary.get("seed"),
        "wall_time_s": summary["wall_time_s"],
        "tokens_per_s": summary.get("tokens_per_s"),
        "run_status": summary["status"],
        CODE_DOMAINS: ",".join(summary.get("code_domains") or []),
    }
    final = summary["final"] or {}
    for kind in METRIC_KINDS:
        for d, v in (final.get(kind) or {}).items():
            row[metric(kind, d)] = v
    for name, values in (final.get("task") or {}).items():
        for what, v in values.items():
            if what != "tasks":
                row[task(name, what)] = v
    for stage, shares in summary["realised_mixture"].items():
        for d, w in shares.items():
            row[mix(stage, d)] = w
    for stage, share in (summary.get("code_frac") or {}).items():
        row[code_frac(stage)] = share
    for stage, n in summary["stage_tokens"].items():
        row[stage_tokens(stage)] = n
    for d, e in summary["epochs"].items():
        row[epochs(d)] = e
    for how, caps in (summary.get("unique_caps") or {}).items():
        for d, v in caps.items():
            row[unique_cap(how, d)] = v
    # where the wall time went (setup, compile, steps, evaluation, checkpoints): the steps'
    # rate alone does not tell a slow study from one that waits on everything else
    timing = summary.get("timing") or {}
    for phase in PHASES:
        if timing.get(phase) is not None:
            row[phase_time(phase)] = timing[phase]
    return row
