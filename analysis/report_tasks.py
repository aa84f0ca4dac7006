"""The report's downstream-task parts: a panel per task family (its bpb, and accuracy where
measured, against a code share at each proxy size and predicted at the target), the
three-way front of the families, and the decision accuracy between sizes. The figures
follow the report's conventions (`analysis.figures`).

Runs of one mixture at one size (seeds) are drawn as their mean with the range of the
seeds as error bars: at proxy scale the differences between mixtures are often no larger.
"""

from __future__ import annotations

import html

import numpy as np
import polars as pl

from codemix.analysis.decision import decision_accuracy
from codemix.analysis.figures import (
    axis,
    axis_title,
    band_traces,
    is_share,
    size_colours,
)
from codemix.analysis.tables import trial_keys
from codemix.core.results import task

FAMILIES = ("nl_reasoning", "world_knowledge", "code")


def family_metrics(df: pl.DataFrame) -> list[str]:
    """The family columns a table has: task.F.bpb, then task.F.acc where measured."""
    out = []
    for what in ("bpb", "acc"):
        for f in FAMILIES:
            c = task(f, what)
            if c in df.columns and df[c].dtype.is_numeric() and df[c].drop_nulls().len():
                out.append(c)
    return out


def _seed_means(df: pl.DataFrame, x_col: str, m: str) -> pl.DataFrame:
    return (
        df.drop_nulls([x_col, m])
        .group_by(x_col)
        .agg(
            pl.col(m).mean().alias("y"),
            pl.col(m).min().alias("lo"),
            pl.col(m).max().alias("hi"),
            pl.len().alias("n"),
        )
        .sort(x_col)
    )


def _seed_trace(d: pl.DataFrame, x_col: str, size: str, colour: str, first: bool):
    import plotly.graph_objects as go

    err = dict(type="data", symmetric=False, array=d["hi"] - d["y"])
    err["arrayminus"] = d["y"] - d["lo"]
    return go.Scatter(
        x=d[x_col],
        y=d["y"],
        error_y=err,
        mode="lines+markers",
        name=str(size),
        legendgroup=str(size),
        showlegend=first,
        marker=dict(color=colour),
        line=dict(color=colour),
        text=[f"{n} run(s); bars: range of seeds" for n in d["n"]],
    )


def families_fig(r, sizes: list[str], rows, x_col: str | None):
    """One subplot per family metric against `x_col`, a line per size, the target's curve."""
    from plotly.subplots import make_subplots

    df = r.results
    metrics = family_metrics(df)
    if not metrics or x_col is None:
        return None
    n_cols = min(3, len(metrics))
    n_rows = -(-len(metrics) // n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=metrics)
    colours = size_colours(sizes)
    for i, m in enumerate(metrics):
        at = dict(row=i // n_cols + 1, col=i % n_cols + 1)
        for size in sizes:
            d = _seed_means(rows(df, size), x_col, m)
            if d.height:
                fig.add_trace(_seed_trace(d, x_col, size, colours[size], i == 0), **at)
        c = r.curves.get(m)
        if c is not None:
            for t in band_traces(c["x"], c["y"], c["lo"], c["hi"], r.target):
                fig.add_trace(t.update(showlegend=i == 0), **at)
        fig.update_xaxes(**axis(x_col), **at)
        fig.update_yaxes(**axis(m), **at)
    fig.update_layout(
        title="Task families against the code share (mean of seeds; bars: their range)",
        height=360 * n_rows,
    )
    return fig


def front3_fig(r, sizes: list[str], rows, x_col: str | None):
    """The three families' bpb at the largest size: NL reasoning against world knowledge,
    coloured by code; mixtures no other beats on all three are ringed."""
    import plotly.graph_objects as go

    df = r.results
    cols = [task(f, "bpb") for f in FAMILIES]
    if any(c not in df.columns for c in cols) or not sizes:
        return None
    d = rows(df, sizes[-1]).drop_nulls(cols)
    key = x_col if x_col in d.columns else None
    if key is not None:
        d = d.group_by(key).agg(pl.col(c).mean() for c in cols).sort(key)
    if d.height == 0:
        return None
    y = d.select(cols).to_numpy()
    front = np.array([not np.any(np.all(y <= p, 1) & np.any(y < p, 1)) for p in y])
    label = [f"{v:.0%}" if is_share(key) else f"{v:.3g}" for v in d[key]] if key else None
    # colour encodes the code bpb here (the colour bar says so), not the size
    fig = go.Figure(
        go.Scatter(
            x=y[:, 1],
            y=y[:, 0],
            mode="markers+text",
            text=label,
            textposition="top center",
            marker=dict(
                size=np.where(front, 16, 9),
                color=y[:, 2],
                colorscale="Viridis",
                colorbar=dict(title=axis_title(cols[2])),
                line=dict(width=np.where(front, 2, 0), color="black"),
            ),
            name=f"{sizes[-1]} proxies",
        )
    )
    what = f"; labels: {axis_title(key)}" if key else ""
    fig.update_layout(
        title=f"Three-way front at {sizes[-1]}: ringed mixtures are beaten by none on all three "
        f"families (lower is better{what})",
    )
    fig.update_xaxes(**axis(cols[1]))
    fig.update_yaxes(**axis(cols[0]))
    return fig


def decision_table(df: pl.DataFrame, metrics: list[str], sizes: list[str]) -> str:
    """HTML: per metric, the share of mixture pairs each pair of sizes ranks alike, and the
    seed-against-seed agreement where mixtures were run twice."""
    if "size" not in df.columns or len(sizes) < 2:
        return ""
    if trial_keys(df.head(0)) is None:
        return ""
    order = {s: i for i, s in enumerate(sizes)}
    body = []
    for m in metrics:
        d = df.drop_nulls(m).filter(pl.col("size").cast(pl.String).is_in(sizes))
        if d.height == 0:
            continue
        keys = trial_keys(d)
        rank = np.array([order[str(s)] for s in d["size"]], float)
        for rec in decision_accuracy(np.zeros((d.height, 1)), rank, d[m].to_numpy(), keys):
            a, b = sizes[int(rec["small"])], sizes[int(rec["large"])]
            pair = f"{a}, seed vs seed" if a == b else f"{a} vs {b}"
            body.append(
                f"<tr><td>{html.escape(m)}</td><td>{html.escape(pair)}</td>"
                f"<td>{rec['accuracy']:.0%}</td><td>{rec['pairs']}</td></tr>"
            )
    if not body:
        return ""
    return (
        "<h2>Decision accuracy</h2><p>Of all pairs of mixtures, the share that the smaller "
        "size ranks as the larger one does (ties at the larger size left out). Seed against "
        "seed is the noise ceiling.</p><table><thead><tr><th>metric</th><th>sizes</th>"
        f"<th>agree</th><th>pairs</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
