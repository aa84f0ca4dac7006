"""Confirmation studies: the predicted optimum, schedules spread over the predicted range, and
baselines, trained one size up and scored against what the fit predicted for them.

`schedules` turns a fit into named schedules (each a set of run-spec settings), `study_raw`
writes them into a grid study at the confirmation size, and `calibration` compares the
confirmation runs with their predictions (each at its own size, tokens and epochs).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from scipy.stats import spearmanr

from codemix.analysis.datalaw import TargetData
from codemix.analysis.fit import predict
from codemix.analysis.fitfile import FitFile
from codemix.analysis.intervals import coverage
from codemix.analysis.optimum import Objective, _search_space, find_optimum
from codemix.core.errors import CodemixError
from codemix.core.results import SEP

__all__ = ["calibration", "parse_baseline", "planned_data", "schedules", "study_raw"]

KEY = "schedule"  # the confirmation study's one search key


def _stage_settings(fit: FitFile, w: np.ndarray, stages: dict[str, dict]) -> dict[str, float]:
    """Run-spec settings that train the stage mixtures `w` (one row of the fit's columns):
    `stages.S.code_frac` where the spec's stage S gives a code share, else its mixture."""
    code = set(fit.code_domains or ("code",))
    out: dict[str, float] = {}
    start = 0
    for cols in fit.mixture_groups:
        part = w[start : start + len(cols)]
        start += len(cols)
        names = [c.split(SEP) for c in cols]
        if len(cols) == 1 or any(len(n) != 3 or n[0] != "mix" for n in names):
            raise CodemixError(
                f"codemix confirm needs mixture columns mix.STAGE.DOMAIN; the fit has "
                f"{', '.join(cols)}"
            )
        stage = names[0][1]
        if stage not in stages:
            raise CodemixError(f"the fit's stage {stage!r} is not a stage of the study spec")
        if "code_frac" in stages[stage]:
            share = sum(float(x) for n, x in zip(names, part, strict=True) if n[2] in code)
            out[f"stages.{stage}.code_frac"] = round(share, 4)
        else:
            for n, x in zip(names, part, strict=True):
                out[f"stages.{stage}.mixture.{n[2]}"] = round(float(x), 4)
    return out


def _text_only(fit: FitFile, w: np.ndarray) -> np.ndarray | None:
    """`w` with every code domain's weight set to 0 (the rest rescaled); None if a stage has
    nothing but code."""
    code = set(fit.code_domains or ("code",))
    out = w.copy()
    start = 0
    for cols in fit.mixture_groups:
        sl = slice(start, start + len(cols))
        start += len(cols)
        is_code = np.array([c.rpartition(SEP)[2] in code for c in cols])
        rest = out[sl][~is_code]
        if rest.sum() <= 0:
            rest = np.ones_like(rest)
        if not len(rest):
            return None
        part = np.zeros(len(cols))
        part[~is_code] = rest / rest.sum()
        out[sl] = part
    return out


def _settings_row(fit: FitFile, settings: dict, stages: dict[str, dict]) -> np.ndarray | None:
    """The fit's mixture row that run-spec `settings` train (the spec's stages fill in what
    they leave out), or None where that is not known before training: a stage given by a
    code share whose group is not one code and one other domain (the share's split is then
    the store's), or a stage given neither way."""
    code = set(fit.code_domains or ("code",))
    row: list[float] = []
    for cols in fit.mixture_groups:
        stage, domains = cols[0].split(SEP)[1], [c.split(SEP)[2] for c in cols]
        mix = [settings.get(f"stages.{stage}.mixture.{d}") for d in domains]
        share = settings.get(f"stages.{stage}.code_frac", stages.get(stage, {}).get("code_frac"))
        if all(m is not None for m in mix) and sum(mix) > 0:
            row += [float(m) / sum(mix) for m in mix]
        elif share is not None and sorted(d in code for d in domains) == [False, True]:
            row += [float(share) if d in code else 1.0 - float(share) for d in domains]
        else:
            return None
    return np.array(row)


def _plan(fit: FitFile, spec, preset: str):
    """(run spec, model config, stage plans, tokens a step) of a run at `preset` under the
    ladder's study spec `spec`, at the fit's vocabulary; None where the fit has none."""
    from codemix.models.accounting import param_count
    from codemix.models.presets import Shape, model_config

    if fit.vocab_size is None:
        return None
    run = spec.run_spec([])
    # only the shape counts parameters; dtype and kernel choices ("auto") are the trainer's
    shape = {f.name for f in dataclasses.fields(Shape)} | {"n_kv_heads", "tied_embeddings"}
    arch = {k: v for k, v in run.model.items() if k in shape}
    cfg = model_config(preset, fit.vocab_size, run.train.seq_len, **arch)
    step = run.train.batch_size * run.train.seq_len
    plans = run.schedule.plan(step, param_count(cfg).non_embedding, spec.max_tokens)
    return run, cfg, plans, step


def planned_budget(fit: FitFile, spec, preset: str) -> tuple[int, float, float] | None:
    """(non-embedding parameters, tokens, FLOPs at 6N + 12 L d T a token) of one
    confirmation run at `preset`, trained from scratch; None without the fit's vocabulary."""
    from codemix.models.accounting import flops_per_token, param_count

    plan = _plan(fit, spec, preset)
    if plan is None:
        return None
    _, cfg, plans, step = plan
    tokens = float(sum(p.n_steps for p in plans) * step)
    flops = flops_per_token(cfg) * tokens  # cfg has the spec's context length
    return param_count(cfg).non_embedding, tokens, float(flops)


def planned_data(fit: FitFile, spec, preset: str) -> TargetData | None:
    """What a confirmation run at `preset` trains under the ladder's study spec `spec`: its
    tokens in whole steps (capped by `[study] max_tokens`, the stages keeping their
    proportions), per mixture group, and each domain's unique tokens: the cap where `[train]`
    caps it, else the spec's store as its manifest says. The proxies' tokens per parameter
    would miss a cap, and so would the optimum chosen at them; the proxies' unique tokens
    would miss a store other than theirs, or the whole store after a repetition-matched
    ladder (whose runs each read a share of it). None where the fit has no data-constrained
    law or names no stages."""
    from codemix.analysis.datalaw import group_stages
    from codemix.analysis.regime import regime_law

    laws = [r for law in fit.scaling.values() if (r := regime_law(law)) is not None]
    plan = _plan(fit, spec, preset)
    if not laws or plan is None:
        return None
    run, _, plans, step = plan
    tokens = {p.stage.name: float(p.n_steps * step) for p in plans}
    total = sum(tokens.values())
    named = group_stages(laws[0].mixture_cols, laws[0].groups)
    if any(named.get(i) not in tokens for i in range(len(laws[0].groups or (1,)))):
        return None
    stages = np.array([[tokens[named[i]] for i in range(len(named))]])
    unique = {}
    manifest = run.store / "manifest.json"
    if manifest.is_file():  # else the proxies' corpus, as for predict
        # the split the runs read: of a sampled store, not the whole sources it stands for
        domains = json.loads(manifest.read_text()).get("domains") or {}
        unique = {d: float(v["train_tokens"]) for d, v in domains.items()}
    unique |= {d: float(c) for d, c in run.train.caps(int(total)).items()}
    unique = {d: v for d, v in unique.items() if d in laws[0].domains}
    return TargetData(total, unique or None, stages=stages)


def parse_baseline(text: str, stages: dict[str, dict]) -> tuple[str, dict]:
    """'paper=init.code_frac=0.25,cooldown.code_frac=0.25' -> (name, run-spec settings)."""
    name, eq, rest = text.partition("=")
    name = name.strip()
    if not eq or not name or not rest.strip():
        raise CodemixError(
            f"--baseline {text!r}: write NAME=STAGE.KEY=VALUE,... (e.g. "
            "paper=init.code_frac=0.25,cooldown.code_frac=0.25)"
        )
    settings = {}
    for part in rest.split(","):
        key, eq, value = part.partition("=")
        stage = key.strip().split(".")[0]
        if not eq or stage not in stages:
            raise CodemixError(
                f"--baseline {name}: {part!r} is not STAGE.KEY=VALUE for a stage of the spec "
                f"({', '.join(stages)})"
            )
        if f"stages.{key.strip()}" in settings:
            raise CodemixError(f"--baseline {name}: {key.strip()!r} is given twice")
        try:
            settings[f"stages.{key.strip()}"] = json.loads(value)
        except ValueError:
            raise CodemixError(f"--baseline {name}: {value!r} is not a number") from None
    return name, settings


def schedules(
    fit: FitFile,
    objective: Objective,
    size: float,
    stages: dict[str, dict],
    compare: int = 3,
    baselines: list[tuple[str, dict]] = (),
    data=None,
    seed: int = 0,
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """({name: run-spec settings}, {name: mixture row}): the optimum at `size`, `compare`
    schedules at evenly spaced quantiles of the predicted objective (searched within the
    runs' ranges), text only, and the user's baselines (with a mixture row where their
    settings fix one before training, see `_settings_row`; else predicted from their runs)."""
    opt = find_optimum(fit, objective, size, seed=seed, data=data)
    rows = {"optimum": opt.mixture}
    if compare:
        w = _search_space(fit, 4000, seed, True)
        pred = {m: v[0] for m, v in predict(fit, w, size, data=data).items()}
        score = objective.score(pred)
        ok = np.flatnonzero(np.isfinite(score))
        order = ok[np.argsort(score[ok])]
        for i, q in enumerate(np.linspace(0, 1, compare + 2)[1:-1]):
            rows[f"compare-{i + 1}"] = w[order[int(round(q * (len(order) - 1)))]]
    text = _text_only(fit, opt.mixture)
    if text is not None:
        rows["text-only"] = text
    out = {name: _stage_settings(fit, w, stages) for name, w in rows.items()}
    for name, settings in baselines:
        if name in out:
            raise CodemixError(f"--baseline {name}: the name is taken; choose another")
        out[name] = settings
        row = _settings_row(fit, settings, stages)
        if row is not None:
            rows[name] = row
    seen: dict[str, str] = {}
    for name, settings in list(out.items()):  # identical settings train once
        key = json.dumps(settings, sort_keys=True)
        if key in seen:
            del out[name]
            rows.pop(name, None)
        seen.setdefault(key, name)
    return out, rows


def study_raw(
    raw: dict, named: dict[str, dict], size: str, name: str, out: str, seeds: int = 1
) -> dict:
    """The study spec `raw` turned into the confirmation study: a grid over `named`
    schedules at `size` alone, each trained with `seeds` paired seeds."""
    study = {
        k: v
        for k, v in raw["study"].items()
        if k not in ("start_trials", "wave_size", "promotion", "halving_keep", "seeds")
    }
    study |= {
        "name": name,
        "sampler": "grid",
        "n_trials": len(named),
        "sizes": [size],
        "out": out,
    }
    if seeds != 1:
        study["seeds"] = seeds
    return raw | {"study": study, "search": {KEY: {"schedules": named}}}


def spec_objectives(objective: Objective) -> list[dict]:
    """A study spec's `objectives` for `objective`: its metric and direction (a bound on
    another metric is not a study objective), or the weighted sum's terms."""
    if objective.text.startswith("weighted:"):
        return [
            {"metric": m, "direction": "minimize", "weight": w}
            for m, w in objective.weights.items()
        ]
    ((m, sign),) = objective.weights.items()
    return [{"metric": m, "direction": "minimize" if sign > 0 else "maximize"}]


def _by_schedule(names: list[str], y: np.ndarray) -> dict[str, np.ndarray]:
    """{schedule: its runs' values (one per seed)}, in the order schedules first appear."""
    out: dict[str, list[float]] = {}
    for name, v in zip(names, y, strict=True):
        out.setdefault(name, []).append(float(v))
    return {k: np.array(v) for k, v in out.items()}


def calibration(
    table,
    metrics: list[str],
    chosen: str = "optimum",
    level: float = 0.9,
    maximize: tuple[str, ...] = (),
) -> dict:
    """Observed against predicted for every confirmation run (a polars table: a study
    export with predictions `predicted_M`, `predicted_M_loP`, `predicted_M_hiP`): per
    metric the runs inside their intervals and the mean relative error, run by run; and,
    per schedule (its seeds averaged), the mean relative error, rank correlation and the
    regret of the chosen schedule (how far its observed mean is from the best observed;
    metrics in `maximize` are better higher). With several seeds a schedule, the seeds'
    spread (range over mean) and the regret's standard error say which differences the
    seeds can resolve."""
    pct = f"{round(level * 100):d}"
    names = table[f"choice.{KEY}"].to_list() if f"choice.{KEY}" in table.columns else None
    names = names or [str(i) for i in range(table.height)]
    out: dict = {}
    for m in metrics:
        y = table[m].cast(float).to_numpy()
        mean = table[f"predicted_{m}"].to_numpy()
        lo, hi = table[f"predicted_{m}_lo{pct}"].to_numpy(), table[f"predicted_{m}_hi{pct}"]
        c = coverage(y, mean, lo, hi.to_numpy())
        obs, pred = _by_schedule(names, y), _by_schedule(names, mean)
        y_s = np.array([v.mean() for v in obs.values()])
        mu_s = np.array([v.mean() for v in pred.values()])
        seeds = min(len(v) for v in obs.values())
        ranked = len(y_s) > 2 and np.ptp(mu_s) > 0 and np.ptp(y_s) > 0
        rho = spearmanr(mu_s, y_s).statistic if ranked else float("nan")
        rec = {
            "runs": c.n,
            "inside": c.inside,
            "mean_relative_error": float(np.mean(np.abs(mean - y) / np.abs(y))),
            "schedules": len(obs),
            "seeds": seeds,
            "mean_relative_error_of_means": float(np.mean(np.abs(mu_s - y_s) / np.abs(y_s))),
            "spearman": float(rho),
        }
        if seeds > 1:
            spread = np.array([np.ptp(v) / abs(v.mean()) for v in obs.values()])
            rec["seed_spread_mean"] = float(spread.mean())
            rec["seed_spread_max"] = float(spread.max())
        if chosen in obs:
            keys = list(obs)
            best = keys[int(np.nanargmax(y_s) if m in maximize else np.nanargmin(y_s))]
            at = float(obs[chosen].mean())
            rec["regret"] = float(abs(y_s[keys.index(best)] - at))
            if seeds > 1 and best != chosen:  # the standard error of a difference of means
                se2 = [np.var(obs[k], ddof=1) / len(obs[k]) for k in (chosen, best)]
                rec["regret_se"] = float(np.sqrt(sum(se2)))
        out[m] = rec
    return out
