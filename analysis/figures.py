"""Conventions every figure of the report follows: an axis title names its metric and its
unit, a size keeps one colour in every figure (its points and its lines), predictions at
the target are drawn in ink, a colour no proxy size gets, and every interval drawn names
its level (90 %).
"""

from __future__ import annotations

import numpy as np

INK = "#222222"  # the target: what the fit predicts there
NEUTRAL = "#7f7f7f"  # what belongs to no size (trials, domains)
LEVEL = "90 %"  # the level of every interval the fit draws
PERCENT = {"tickformat": ".0%", "hoverformat": ".1%"}  # shares are stored as fractions
_UNITS = {
    "bpb": "bits per byte",
    "loss": "nats per token",
    "acc": "fraction correct",
    "acc_norm": "fraction correct",
    "correct_prob": "probability",
    "norm_correct_prob": "probability",
    "total_prob": "probability",
    "margin": "probability difference",
    "items": "count",
    "chance": "fraction correct",
}
_RUN_COLUMNS = {
    "params": "parameters (total, with embeddings)",
    "non_embedding_params": "parameters (non-embedding)",
    "tokens": "training tokens (count)",
    "flops": "training compute (FLOPs)",
    "trial": "trial (number)",
}


def size_colours(sizes: list[str]) -> dict[str, str]:
    """A fixed colour per size, from the sizes sorted smallest first: the same sizes get
    the same colours in every figure."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + [c for c in qualitative.D3 if c.lower() != NEUTRAL]
    return {s: palette[i % len(palette)] for i, s in enumerate(sizes)}


def _share_title(col: str) -> str | None:
    parts = col.split(".")
    if len(parts) == 2 and parts[0] == "code_frac":
        return f"code share of stage {parts[1]} (%)"
    if len(parts) == 4 and parts[:2] == ["param", "stages"] and parts[3] == "code_frac":
        return f"searched code share of stage {parts[2]} (%)"
    if len(parts) == 3 and parts[0] == "mix":
        return f"share of {parts[2]} in stage {parts[1]} (%)"
    if col.startswith("code share of "):  # a fit's stage without a study export's names
        return f"{col} (%)"
    return None


def is_share(col: str) -> bool:
    return _share_title(col) is not None


def axis_title(col: str, role: str | None = None) -> str:
    """What a column's axis shows and its unit: 'NL bpb.text (bits per byte)',
    'code share of stage init (%)'. `role` names the metric's part in the report."""
    if col.startswith("predicted_"):
        return "predicted " + axis_title(col[len("predicted_") :], role)
    share = _share_title(col)
    if share is not None:
        return share
    if col in _RUN_COLUMNS:
        return _RUN_COLUMNS[col]
    if col.startswith("epochs."):
        return f"epochs of {col.partition('.')[2]} (passes over its tokens)"
    return f"{role} {col} ({unit(col)})" if role else f"{col} ({unit(col)})"


def unit(metric: str) -> str:
    """A metric column's unit: bpb.text and task.code.bpb in bits per byte, loss.text in
    nats per token, task.F.acc as the fraction correct."""
    kind, _, what = metric.rpartition(".")
    key = what if kind.startswith("task.") else metric.partition(".")[0]
    return _UNITS.get(key, "unit as in the table")


def axis(col: str, role: str | None = None) -> dict:
    """Keyword arguments of `update_xaxes`/`update_yaxes` for an axis showing `col`."""
    return {"title_text": axis_title(col, role)} | (PERCENT if is_share(col) else {})


def band_traces(x, y, lo, hi, target, label: str | None = None) -> list:
    """The prediction at the target and its interval, in ink: [band, line]."""
    import plotly.graph_objects as go

    band = go.Scatter(
        x=np.concatenate([x, x[::-1]]),
        y=np.concatenate([hi, lo[::-1]]),
        fill="toself",
        fillcolor="rgba(34, 34, 34, 0.15)",
        line=dict(width=0),
        name=f"{target} {LEVEL} interval",
        legendgroup="target",
        hoverinfo="name",
    )
    line = go.Scatter(
        x=x,
        y=y,
        mode="lines",
        name=label or f"{target} predicted",
        legendgroup="target",
        line=dict(color=INK, dash="dash"),
    )
    return [band, line]
