"""The report's downstream-task parts: a panel per task family (its bpb, and accuracy where
measured, against a code share at each proxy size and predicted at the target), the
three-way front of the families, and the decision accuracy between sizes.

Runs of one mixture at one size (seeds) are drawn as their mean with the range of the
seeds as error bars: at proxy scale the differences between mixtures are often no larger.
"""

from __future__ import annotations

import html

import numpy as np
import polars as pl

from codemix.analysis.decision import decision_accuracy
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


def families_fig(r, sizes: list[str], rows, x_col: str | None):
    """One subplot per family metric against `x_col`, a line per size, the target's curve."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    df = r.results
    metrics = family_metrics(df)
    if not metrics or x_col is None:
        return None
    n_cols = min(3, len(metrics))
    n_rows = -(-len(metrics) // n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=metrics)
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692"]
    for i, m in enumerate(metrics):
        at = dict(row=i // n_cols + 1, col=i % n_cols + 1)
        for j, size in enumerate(sizes):
            d = _seed_means(rows(df, size), x_col, m)
            if d.height == 0:
                continue
            err = dict(type="data", symmetric=False, array=d["hi"] - d["y"])
            err["arrayminus"] = d["y"] - d["lo"]
            fig.add_trace(
                go.Scatter(
                    x=d[x_col],
                    y=d["y"],
                    error_y=err,
                    mode="lines+markers",
                    name=str(size),
                    legendgroup=str(size),
                    showlegend=i == 0,
                    line=dict(color=palette[j % len(palette)]),
                    text=[f"{n} run(s)" for n in d["n"]],
                ),
                **at,
            )
        c = r.curves.get(m)
        if c is not None:
            band = go.Scatter(
                x=np.concatenate([c["x"], c["x"][::-1]]),
                y=np.concatenate([c["hi"], c["lo"][::-1]]),
                fill="toself",
                opacity=0.2,
                line=dict(width=0),
                name=f"{r.target} interval",
                legendgroup="target",
                showlegend=False,
            )
            fig.add_trace(band, **at)
            line = go.Scatter(
                x=c["x"],
                y=c["y"],
                mode="lines",
                name=f"{r.target} predicted",
                legendgroup="target",
                showlegend=i == 0,
                line=dict(color="black", dash="dash"),
            )
            fig.add_trace(line, **at)
        fig.update_xaxes(title_text=x_col, **at)
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
    label = [f"{key} {v:.3g}" for v in d[key]] if key else None
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
                colorbar=dict(title=cols[2]),
                line=dict(width=np.where(front, 2, 0), color="black"),
            ),
            name=f"{sizes[-1]} proxies",
        )
    )
    fig.update_layout(
        title=f"Three-way front at {sizes[-1]}: ringed mixtures are beaten by none on all three "
        "families (lower is better)",
        xaxis_title=cols[1],
        yaxis_title=cols[0],
    )
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
