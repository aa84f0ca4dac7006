"""What branching saved and what it changed: the compute a study spent against the compute
of every schedule from step zero, and the diagonal check (trials trained both ways) set
beside the seed-to-seed spread, which is the yardstick for any difference between runs."""

from __future__ import annotations

import html
import math

import polars as pl

from codemix.core.results import scratch


def seed_spread(df: pl.DataFrame, metric: str) -> tuple[float, int] | None:
    """Pooled standard deviation of `metric` between the seeds of one trial and size, and
    the number of trials it pools; None without replicates."""
    if "seed" not in df.columns or metric not in df.columns:
        return None
    groups = (
        df.filter(pl.col(metric).is_not_null())
        .group_by("trial", "size")
        .agg(pl.col(metric).var().alias("var"), pl.len().alias("n"))
        .filter(pl.col("n") > 1)
    )
    if groups.height == 0:
        return None
    dof = (groups["n"] - 1).sum()
    pooled = float((groups["var"] * (groups["n"] - 1)).sum() / dof)
    return math.sqrt(pooled), groups.height


def diagonal(df: pl.DataFrame, metrics: list[str]) -> pl.DataFrame | None:
    """The diagonal check's rows: each metric branched, from scratch, and their difference."""
    have = [m for m in metrics if scratch(m) in df.columns]
    if not have:
        return None
    rows = df.filter(pl.col(scratch(have[0])).is_not_null())
    if rows.height == 0:
        return None
    cols = [c for c in ("trial", "size", "seed") if c in df.columns]
    for m in have:
        cols += [
            pl.col(m).alias(f"{m} branched"),
            pl.col(scratch(m)).alias(f"{m} from scratch"),
            (pl.col(m) - pl.col(scratch(m))).alias(f"{m} difference"),
        ]
    return rows.select(cols)


def section(df: pl.DataFrame, metrics: list[str], table) -> str:
    """The report's HTML about branching ("" when the study did not branch)."""
    parts = []
    if {"flops", "flops_charged"} <= set(df.columns) and df["flops_charged"].null_count() == 0:
        whole, spent = float(df["flops"].sum()), float(df["flops_charged"].sum())
        check_flops = scratch("flops")
        extra = float(df[check_flops].sum()) if check_flops in df.columns else 0.0
        if spent < whole:
            also = f", and {extra:.3g} for the diagonal check's runs from scratch" if extra else ""
            parts.append(
                f"<p>Training compute: {spent + extra:.3g} FLOPs, against {whole:.3g} to train "
                f"every run from step zero ({(spent + extra) / whole:.0%}): {spent:.3g} for the "
                f"runs, which branched from shared trunks where their first stages agree{also}."
                "</p>"
            )
    check = diagonal(df, metrics)
    if check is not None:
        lines = []
        for m in metrics:
            if f"{m} difference" not in check.columns:
                continue
            diff = check[f"{m} difference"]
            spread = seed_spread(df, m)
            yardstick = (
                f"seed-to-seed spread {spread[0]:.4f} (standard deviation, {spread[1]} trials)"
                if spread
                else "no seed spread to compare with: set [study] seeds = 2 to measure it"
            )
            lines.append(
                f"{html.escape(m)}: mean difference {diff.mean():+.4f}, largest "
                f"{diff.abs().max():.4f} bits per byte; {yardstick}"
            )
        parts.append(
            "<h2>The diagonal check: branched against from scratch</h2>"
            "<p>The same trials trained from step zero as well ([study] diagonal). A "
            "difference within the seed-to-seed spread means branching changed nothing that "
            "matters.</p><ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>" + table(check)
        )
    versus = against_control(df, metrics)
    if versus is not None:
        parts.append(
            "<h2>Against the control</h2><p>Each branch's metric minus the control branch's "
            "of the same seed and size (bits per byte; negative: better than the control), "
            "averaged over seeds, with the spread between seeds (standard deviation of the "
            "difference; a mean within about two of them is not resolved).</p>" + table(versus)
        )
    return "".join(parts)


def against_control(df: pl.DataFrame, metrics: list[str]) -> pl.DataFrame | None:
    """Mean and seed spread of each branch's vs_control.* difference, per choice and size."""
    have = [m for m in metrics if f"vs_control.{m}" in df.columns]
    named = [c for c in df.columns if c.startswith("choice.")]
    if not have or not named:
        return None
    keys = [*named, "size"] if "size" in df.columns else named
    aggs = [pl.len().alias("seeds")]
    for m in have:
        col = pl.col(f"vs_control.{m}")
        aggs += [col.mean().alias(f"{m} vs control"), col.std().alias(f"{m} seed sd")]
    return df.group_by(keys).agg(aggs).sort(keys)
