"""Trials in a study's storage: which count towards n_trials, asking within the budget,
heartbeats for the trials being trained, and setting back the trials a signal stopped.

A trial takes one of the n_trials when it is trained or training, or failed in training.
Trials lost with their worker (Optuna retries them after the grace period) or stopped by a
signal (set back here, and enqueued again) do not; nor do surplus trials, asked past the
budget by a racing worker and never trained.
"""

from __future__ import annotations

import threading
from collections import Counter

from optuna.trial import TrialState

from codemix.core import interrupt
from codemix.optimizer import _optuna
from codemix.optimizer.space import StudySpec

RESULT_ATTR = "codemix/result/"  # + size: the run's summary at that size
REASON_ATTR = "codemix/reason"  # why a trial failed in training (counts as a trial)
SURPLUS_ATTR = "codemix/surplus"  # asked past the budget by a racing worker; never trained
INTERRUPTED_ATTR = "codemix/interrupted"  # stopped by a signal; retried as a new trial
RETRY_OF_ATTR = "codemix/retry_of"  # the first trial of the ones this one repeats
OVERRIDES_ATTR = "codemix/overrides"  # the run spec overrides a trial trained with


def tell(study, trial, **kw) -> None:
    """study.tell, minus the grid sampler's study.stop() once the grid is used up, which
    Optuna allows only inside optimize(); the trial itself is stored either way."""
    try:
        study.tell(trial, **kw)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def counted(t) -> bool:
    """Whether a trial takes one of the n_trials: trained or training, or failed in training.
    Trials lost with their worker or stopped by a signal are retried as new trials."""
    if t.user_attrs.get(SURPLUS_ATTR):
        return False
    if t.state == TrialState.FAIL:
        return REASON_ATTR in t.user_attrs
    return t.state != TrialState.WAITING


def tally(study) -> Counter:
    c: Counter = Counter()
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS_ATTR):
            continue
        if t.state == TrialState.FAIL and not counted(t):
            c["retried"] += 1
            continue
        c[t.state.name.lower()] += 1
    c["finished"] = c["complete"] + c["pruned"] + c["fail"]
    c["budget"] = c["finished"] + c["running"]
    return c


def over_budget(study, trial, n_trials: int) -> bool:
    """Whether `trial` was asked past n_trials by racing workers. Trials waiting for a retry
    count here, so of two workers racing for the last place the later trial gives way."""
    return (
        sum(
            1
            for t in study.get_trials(deepcopy=False)
            if t.number <= trial.number and (counted(t) or t.state == TrialState.WAITING)
        )
        > n_trials
    )


def seed_attr(size: str, k: int) -> str:
    """The trial's user attribute that keeps its result at `size` with seed replicate k."""
    return RESULT_ATTR + size + (f"/seed-{k}" if k else "")


def root(trial) -> int:
    """The number of the first trial of the ones this trial repeats (its run folder)."""
    return int(trial.user_attrs.get(RETRY_OF_ATTR, trial.number))


def ask(study, spec: StudySpec, n_trials: int, want: int) -> list:
    """Ask up to `want` trials within the budget (retries first: Optuna pops them)."""
    trials: list = []
    try:
        for _ in range(want):
            interrupt.check()
            if tally(study)["budget"] >= n_trials:
                break
            t = study.ask()
            _optuna.beat(study, t)  # stale-detectable from now on
            frozen = next(x for x in study.get_trials(deepcopy=False) if x.number == t.number)
            history = frozen.system_attrs.get("retry_history")  # a dead worker's trial again
            if history and RETRY_OF_ATTR not in t.user_attrs:
                t.set_user_attr(RETRY_OF_ATTR, history[0])
            if over_budget(study, t, n_trials):  # another worker took the last place
                t.set_user_attr(SURPLUS_ATTR, True)
                tell(study, t, state=TrialState.FAIL)
                break
            trials.append(t)
    except interrupt.Interrupted as e:
        set_back(study, trials, e.signal)
        raise
    return trials


def set_back(study, trials: list, signal_name: str) -> None:
    """Fail trials stopped by a signal and enqueue each again, with its parameters and the
    results of the sizes it finished, so a resumed study trains only what is missing."""
    for t in trials:
        carried = {k: v for k, v in t.user_attrs.items() if k.startswith(RESULT_ATTR)}
        t.set_user_attr(INTERRUPTED_ATTR, signal_name)
        tell(study, t, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={RETRY_OF_ATTR: root(t), **carried})


def finish_waiting(study) -> None:
    """Retries left waiting once the study is complete (a lowered --n-trials) are closed as
    surplus, so no trial stays WAITING."""
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        t = study.ask()
        t.set_user_attr(SURPLUS_ATTR, True)
        tell(study, t, state=TrialState.FAIL)


class Heartbeat:
    """Beats for the trials being trained, so another worker can tell a dead one."""

    def __init__(self, study, trials, seconds: int):
        self.study, self.trials = study, list(trials)
        self.seconds, self.stop = seconds, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:  # beat at once: Optuna only fails a trial that has beaten at least once
            for t in self.trials:
                _optuna.beat(self.study, t)
            if self.stop.wait(self.seconds):
                break

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()


def label(numbers: list[int]) -> str:
    numbers = sorted(numbers)
    if not numbers:  # the others finished between the look and the message
        return "no trials"
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 2:
        return f"trials {numbers[0]}-{numbers[-1]}"
    shown = ",".join(map(str, numbers[:6])) + ("..." if len(numbers) > 6 else "")
    return f"trial{'s' if len(numbers) > 1 else ''} {shown}"
