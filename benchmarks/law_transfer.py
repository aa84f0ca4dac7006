# One size up: how well the joint mixture-and-size law and the data-constrained law predict
# runs at a size above the ladder they were fitted on.
#
# Fits both laws (`--law joint`, and `--law auto`: the data-constrained law where it predicts
# held-out runs better) on the runs of a study export below --held-out parameters (or on a
# ladder table), predicts the runs at or above it (or the confirmation table's runs) at each
# run's own size, tokens and epochs, and prints per metric the mean relative error, the runs
# inside their 90 % intervals (and those intervals' mean relative width, what the coverage
# cost) and the Spearman correlation. Also a synthetic check: ladders
# drawn from a known data-constrained law (analysis/_synthetic.py; --synthetic-kind: one
# stage, or two with recency and overfitting, and forgetting or overfitting that grows with
# N), 4 sizes fitted, the 5th (2x) predicted: coverage of the 90 % intervals.
# Compute: CPU only; about 2 minutes per metric of a 48-run export with --n-boot 100 on a
# 2-core CPU, and 0.5-1 minute per synthetic ladder (--n-boot 30, --jobs 2).
#
# Usage: .venv/bin/python benchmarks/law_transfer.py EXPORT.csv [EXPORT.csv ...]
#            --mixture-cols 'mix.main.*' [--held-out 7e6 | --confirm CONFIRM.csv ...]
#            [--metric M ...] [--size-col COL] [--min-size N] [--max-size N]
#            [--law LAW] [--r-star auto|shared|per-domain] [--overfit-past tangent|power]
#            [--by-schedule]
#        .venv/bin/python benchmarks/law_transfer.py --synthetic 8 [--synthetic-law auto]
#            [--synthetic-kind plain|staged|forget|revert|overfit_n]
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codemix.analysis import _synthetic  # noqa: E402
from codemix.analysis._parallel import cpu_count  # noqa: E402
from codemix.analysis.confirm import KEY, calibration  # noqa: E402
from codemix.analysis.contest import choose_size_law  # noqa: E402
from codemix.analysis.datalaw import DataLawFit, tie_voters  # noqa: E402
from codemix.analysis.intervals import coverage  # noqa: E402
from codemix.analysis.lawnames import LAWS, OVERFIT_PAST, R_STAR_MODES  # noqa: E402
from codemix.analysis.scaling import ScalingConfig  # noqa: E402
from codemix.analysis.surfaces import quiet_numerics  # noqa: E402
from codemix.analysis.tables import load_results  # noqa: E402


def _score(law, w, n, y, data):
    inside = ""
    if isinstance(law, DataLawFit):
        mean, lo, hi = law.interval(w, n, data=data)
        said = []
        if law.repetition_sd and law.repetition(w, n, data).any():  # what that error added
            _, lo0, hi0 = dataclasses.replace(law, repetition_sd=0.0).interval(w, n, data=data)
            said.append(f"{coverage(y, mean, lo0, hi0).inside} without the repetition error")
        _, lo0, hi0 = dataclasses.replace(law, tied=()).interval(w, n, data=data)
        if law.tied:  # what spanning the tied laws' predictions added
            said.append(
                f"{coverage(y, mean, lo0, hi0).inside} without the tied laws, mean width "
                f"{np.mean((hi0 - lo0) / mean):.1%} -> {np.mean((hi - lo) / mean):.1%}"
            )
        if not np.array_equal(law._band(w, n, law.level, data), np.array([lo0, hi0])):
            lo1, hi1 = law._band(w, n, law.level, data)  # the point's continuation alone
            said.append(f"{coverage(y, mean, lo1, hi1).inside} with its {law.overfit_past} alone")
        inside = f" ({'; '.join(said)})" if said else ""
    else:  # a tied data law predicts each row at its own tokens and epochs
        mean, lo, hi = law.interval(w, n, data=data)
    c = coverage(y, mean, lo, hi)
    mre = float(np.mean(np.abs(mean - y) / y))
    rho = float(stats.spearmanr(mean, y).statistic)
    width = f"; width {np.mean((hi - lo) / mean):.1%}"  # what the coverage cost
    return mre, c.inside, c.n, rho, _on_means(w, n, y, mean), width + inside, mean


def _schedules(w, n) -> np.ndarray:
    """Each run's schedule: runs of equal mixture and size are one schedule's seeds."""
    _, group = np.unique(np.round(np.c_[w, n / n.max()], 6), axis=0, return_inverse=True)
    return group.ravel()


def _tie_points(law, w, n, y, data) -> str:
    """The mean relative error and Spearman of two point predictions from the chosen law and
    the laws tied with it that `fit --tie-point median` takes (`tie_voters`), which do not
    turn on which law of a tie won: their median (the default point) and their geometric
    mean; '' without a tie."""
    if not law.tied:
        return ""
    voters = tie_voters(law)
    logs = np.log([law.predict(w, n, data)] + [t.predict(w, n, data) for t in voters])
    said = []
    for what, point in (("median", np.median(logs, 0)), ("mean", logs.mean(0))):
        mre = float(np.mean(np.abs(np.exp(point) - y) / y))
        rho = float(stats.spearmanr(np.exp(point), y).statistic)
        said.append(f"{what} {mre:.2%} (Spearman {rho:.2f})")
    left = len(law.tied) + 1 - len(logs)
    out = f" ({left} left out: the chosen law with terms it did not learn)" if left else ""
    return f"the {len(logs)} tied laws{out}: " + ", ".join(said)


def _by_schedule(cols, w, n, y, mean) -> list[str]:
    """One line a schedule: its mixture, seeds, observed and predicted seed means, the signed
    relative error and the seeds' range over their mean."""
    group = _schedules(w, n)
    lines = []
    for g in np.unique(group):
        at = group == g
        obs, pred = float(y[at].mean()), float(mean[at].mean())
        mix = " ".join(f"{c}={v:.2f}" for c, v in zip(cols, w[at][0], strict=True) if v > 0)
        spread = float(np.ptp(y[at]) / obs)
        lines.append(
            f"    {mix} N={n[at][0]:.3g}: {at.sum()} seeds, observed {obs:.4f}, predicted "
            f"{pred:.4f}, {pred / obs - 1:+.2%} (seeds' range {spread:.1%})"
        )
    return lines


def _on_means(w, n, y, mean) -> str:
    """The mean relative error on each schedule's seed mean (runs of equal mixture and size
    are one schedule's seeds) and the seeds' spread, range over mean: '1.2 % (6; spread 2.3 %
    mean, 5.2 % max)'; '-' unless every schedule ran 2+ times."""
    import polars as pl

    table = pl.DataFrame(
        {
            f"choice.{KEY}": [str(g) for g in _schedules(w, n)],
            "y": y,
            "predicted_y": mean,
            "predicted_y_lo90": mean,  # intervals are scored run by run, in _score
            "predicted_y_hi90": mean,
        }
    )
    c = calibration(table, ["y"])["y"]
    if c["seeds"] < 2:
        return "-"
    err, lo, hi = c["mean_relative_error_of_means"], c["seed_spread_mean"], c["seed_spread_max"]
    return f"{err:.2%} ({c['schedules']}; spread {lo:.1%} mean, {hi:.1%} max)"


def _one_table(paths: list[str]) -> str:
    """Several exports (a ladder and its extra arms) as one table, in a temporary file."""
    if len(paths) == 1:
        return paths[0]
    import tempfile

    import polars as pl

    table = pl.concat([pl.read_csv(p) for p in paths], how="diagonal_relaxed")
    out = Path(tempfile.mkdtemp()) / "ladder.csv"
    table.write_csv(out)
    return str(out)


@quiet_numerics()
def transfer(args) -> None:
    cols = args.mixture_cols
    load = dict(size_col=args.size_col, tokens_col="tokens")
    train = load_results(_one_table(args.export), cols, args.metric, **load)
    if args.confirm:  # one fit scored on each confirmation table
        tests = [(Path(c).stem, load_results(c, cols, args.metric, **load)) for c in args.confirm]
        tests = [(name, t, np.ones(t.n_runs, bool)) for name, t in tests]
        fit_rows = (train.size >= args.min_size) & (train.size < args.max_size)
    else:
        fit_rows = (train.size < args.held_out) & (train.size >= args.min_size)
        tests = [("held out", train, train.size >= args.held_out)]
    fracs = tuple(np.median(train.stage_fracs, 0))
    cfg = ScalingConfig(n_boot=args.n_boot, seed=args.seed, jobs=args.jobs)
    sizes_tr = ", ".join(f"{v:.3g}" for v in np.unique(train.size[fit_rows]))
    print(f"fitted on {fit_rows.sum()} runs at sizes {sizes_tr}")
    for name, test, held in tests:
        sizes_te = ", ".join(f"{v:.3g}" for v in np.unique(test.size[held]))
        print(f"  {name}: {held.sum()} runs at {sizes_te}")
    print(
        "| metric | law | chosen by auto | predicted | mean rel. error | inside 90 % PI | Spearman "
        "| on seed means (schedules; seed spread) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for m in args.metric:
        y_tr, w_tr = train.metric(m)[fit_rows], train.weights[fit_rows]
        n_tr, d_tr = train.size[fit_rows], train.run_data.take(fit_rows)
        t0 = time.time()
        for law_name in args.law or ("joint", "auto"):
            law = choose_size_law(
                w_tr,
                n_tr,
                y_tr,
                d_tr,
                train.mixture_cols,
                fracs,
                cfg,
                groups=train.groups,
                law=law_name,
                r_star=args.r_star,
                overfit_past=args.overfit_past,
            )
            chosen = getattr(law, "name", law.form)
            if getattr(law, "shared_r_star", True) is False:
                chosen += " (R* per domain)"
            contest = law.selection.get("data_law", {})
            if contest.get("by") == "held-out error":
                ranked = sorted(contest["geomean_rmse_log"].items(), key=lambda kv: kv[1])
                print(f"  held out: {contest['held_out']}", file=sys.stderr)
                near = ", ".join(contest.get("within_one_se", []))
                print(f"  best {contest.get('best')}; within one s.e.: {near}", file=sys.stderr)
                for name, score in ranked:
                    each = ", ".join(f"{v:.4f}" for v in contest["scores"][name].values())
                    print(f"    {name}: {score:.4f} ({each})", file=sys.stderr)
                check = contest.get("r_star", {})
                if "per-domain" in check:
                    print(
                        f"  R*: best shared {check['best_shared']:.4f}, per domain "
                        f"{check['per-domain']:.4f}: {check['chosen']}",
                        file=sys.stderr,
                    )
            for what in ("extrapolation", "repetition"):
                if what in getattr(law, "selection", {}):
                    print(f"  {what}: {law.selection[what]}", file=sys.stderr)
            for name, test, held in tests:
                y_te, w_te = test.metric(m)[held], test.weights[held]
                n_te, d_te = test.size[held], test.run_data.take(held)
                mre, inside, k, rho, means, note, mean = _score(law, w_te, n_te, y_te, d_te)
                if args.by_schedule:
                    print(f"  {name}, by schedule:", file=sys.stderr)
                    for line in _by_schedule(train.mixture_cols, w_te, n_te, y_te, mean):
                        print(line, file=sys.stderr)
                if tie := _tie_points(law, w_te, n_te, y_te, d_te):
                    print(f"  {name}, {m}: {tie}", file=sys.stderr)
                row = f"{mre:.2%} | {inside} of {k}{note} | {rho:.2f} | {means}"
                print(f"| {m} | {law_name} | {chosen} | {name} | {row} |", flush=True)
        print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)


STAGED_COLS = ("mix.init.text", "mix.init.code", "mix.cooldown.text", "mix.cooldown.code")


def _synthetic_ladder(kind: str, seed: int):
    """(w, n, loss, RunData, mixture columns, stage fractions, groups) of a ladder of five
    sizes drawn from a known law: `plain` one stage (`_synthetic.ladder`); `staged` two
    stages with recency and overfitting; `forget`, `revert` and `overfit_n` that plus the
    term (with code-free cooldowns for the two that forget), 1 % noise."""
    sizes = (1e6, 2e6, 4e6, 8e6, 1.6e7)
    if kind == "plain":
        w, n, y, rd = _synthetic.ladder(sizes=sizes, seed=seed)
        return w, n, y, rd, ("mix.main.text", "mix.main.code"), (1.0,), None
    shares = (0.0, 0.2, 0.4, 0.6) if kind in ("forget", "revert") else (0.05, 0.3, 0.55, 0.8)
    term = {kind: True} if kind != "staged" else {}
    w, n, y, rd = _synthetic.staged_ladder(sizes, shares, noise=0.01, seed=seed, **term)
    return w, n, y, rd, STAGED_COLS, (0.8, 0.2), (2, 2)


@quiet_numerics()
def synthetic(args) -> None:
    print(f"ladders: {args.synthetic_kind}; law: {args.synthetic_law}")
    print("| ladder seed | law chosen | mean rel. error at 2x | inside 90 % PI |")
    print("|---|---|---|---|")
    inside = total = 0
    for seed in range(args.synthetic):
        w, n, y, rd, cols, fracs, groups = _synthetic_ladder(args.synthetic_kind, seed)
        tr = n < 1.6e7
        law = choose_size_law(
            w[tr],
            n[tr],
            y[tr],
            rd.take(tr),
            cols,
            fracs,
            ScalingConfig(n_boot=args.n_boot, seed=seed, jobs=args.jobs),
            groups=groups,
            law=args.synthetic_law,
        )
        mre, k_in, k, _, _, note, _ = _score(law, w[~tr], n[~tr], y[~tr], rd.take(~tr))
        inside, total = inside + k_in, total + k
        tie = _tie_points(law, w[~tr], n[~tr], y[~tr], rd.take(~tr)) or "no tie"
        note += f"; {tie}"
        name = getattr(law, "name", law.form)
        print(f"| {seed} | {name} | {mre:.2%} | {k_in} of {k}{note} |", flush=True)
    print(f"all: {inside} of {total} inside ({inside / total:.0%})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("export", nargs="*", help="study exports fitted together (one ladder)")
    p.add_argument("--mixture-cols", action="append")
    p.add_argument("--metric", action="append")
    p.add_argument("--size-col", default="non_embedding_params")
    p.add_argument("--held-out", type=float, help="predict the runs at or above this size")
    p.add_argument(
        "--confirm", action="append", help="predict this table's runs instead (repeat: each)"
    )
    p.add_argument("--min-size", type=float, default=0.0, help="fit only runs this size or larger")
    p.add_argument("--max-size", type=float, default=np.inf, help="fit only runs below this size")
    p.add_argument("--n-boot", type=int, default=100)
    p.add_argument(
        "--law", action="append", choices=LAWS, help="laws to compare (default: joint, auto)"
    )
    p.add_argument("--r-star", default="auto", choices=R_STAR_MODES)
    p.add_argument("--overfit-past", default="tangent", choices=OVERFIT_PAST)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--by-schedule", action="store_true", help="each confirmed schedule's error on its seeds"
    )
    p.add_argument("--jobs", type=int, default=cpu_count(), help="processes for the fits")
    p.add_argument("--synthetic", type=int, default=0, metavar="K", help="K synthetic ladders")
    p.add_argument("--synthetic-law", default="joint_data", choices=LAWS)
    p.add_argument(
        "--synthetic-kind",
        default="plain",
        choices=("plain", "staged", "forget", "revert", "overfit_n"),
        help="the known law the ladders are drawn from",
    )
    args = p.parse_args()
    if args.synthetic:
        synthetic(args)
    if args.export:
        if not (args.held_out or args.confirm) or not args.mixture_cols or not args.metric:
            p.error("give --mixture-cols, --metric, and --held-out or --confirm")
        transfer(args)


if __name__ == "__main__":
    main()
