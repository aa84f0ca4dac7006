"""The report: one self-contained HTML file (plotly.js inline, works offline) from a
results table in the export format of `codemix study export`.

Sections appear when the table has what they need: study progress, the NL-versus-code
Pareto front (proxies observed; the target size predicted, when predictions are given),
response curves along a code share with bands, a panel per downstream task family and
their three-way front (`analysis.figures`), a contour over two stage shares, scaling
curves with extrapolation bands out to the target, the realised mixture and epochs per
domain, the prediction table, the decision accuracy between sizes, and the calibration of
predictions against confirmatory runs, under a headline that answers the question first
(`analysis.headline`). Every name from the study is escaped before it reaches the page.

Every figure follows one convention (`analysis.figures`): each axis and colour bar
names its metric and unit, each metric gets a y axis of its own, a size keeps one colour
in every figure (its points and its lines), predictions at the target are drawn in ink,
and every interval drawn names its level (90 %).

Columns are read by the names of a study export (`codemix.core.results`); what counts as a
code share is never guessed from a name (see `analysis.codeshare`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from codemix.analysis import branching
from codemix.analysis.codeshare import (
    observed_share_columns,
    set_shares,
    share_range,
    stage_shares,
)
from codemix.analysis.figures import (
    INK,
    LEVEL,
    NEUTRAL,
    PERCENT,
    axis,
    axis_title,
    band_traces,
    size_colours,
    unit,
)
from codemix.analysis.fit import predict
from codemix.analysis.headline import aims, answers, headline
from codemix.analysis.intervals import coverage
from codemix.analysis.optimum import pareto_front, pareto_indices, weight_ranges
from codemix.analysis.report_tasks import (
    decision_table,
    families_fig,
    family_metrics,
    front3_fig,
)
from codemix.analysis.sizes import Size
from codemix.core.errors import CodemixError
from codemix.core.files import atomic_write_text
from codemix.core.results import SEP, epochs, objective

_CATCH_ERRORS = """<script>
window.__report_errors = [];
window.addEventListener("error", function (e) {
  window.__report_errors.push(String(e.message));
  var el = document.getElementById("js-errors");
  if (el) { el.textContent += String(e.message) + "\\n"; }
});
</script>"""


@dataclass
class ReportInput:
    results: pl.DataFrame
    title: str = "codemix report"
    nl_metric: str = "bpb.text"
    code_metric: str = "bpb.code"
    target: str | None = None  # e.g. "2.8B"
    target_params: float | None = None
    size_col: str = "params"  # the parameter counts the scaling figure plots against
    predictions: pl.DataFrame | None = None  # one row per mixture: metric, _lo, _hi columns
    # lo, hi: the 90 % interval (the figures name that level)
    curves: dict[str, pl.DataFrame] = field(default_factory=dict)  # metric -> x, y, lo, hi
    scaling: dict[str, pl.DataFrame] = field(default_factory=dict)  # metric -> params, y, lo, hi
    notes: list[str] = field(default_factory=list)
    share_col: str | None = None  # x of the response curves (default: the first code share)
    contour: dict | None = None  # predicted NL metric over two stage shares: x, y, z, x_col, y_col
    headline: list[str] = field(default_factory=list)  # the answer, first on the page
    headline_title: str = "The answer"


def from_fit(
    r: ReportInput,
    fit,
    target: Size,
    points: int = 41,
    data=None,
    study_objective: str | None = None,
) -> None:
    """Fill the predicted parts of a report from a FIT.json with size laws: the NL-versus-code
    front at the target, curves along a stage's code share, the contour over two stages'
    code shares (a fit over several stages' mixtures, with code domains) and the scaling
    extrapolation of the best mixture, each with its interval. Mixtures stay within the
    weight ranges the runs covered. `data`: the target's tokens and unique tokens per domain
    (`TargetData`) for a data-constrained law; default the proxies' tokens per parameter and
    corpus. `study_objective` (`min:M`, `weighted:...`): the study's, answered in the
    headline too where it is not the lowest NL metric."""
    nl, code = r.nl_metric, r.code_metric
    cols = list(fit.mixture_cols)
    for m in (nl, code):
        if m not in fit.surfaces:
            raise CodemixError(f"the fit has no metric {m!r} (it has {', '.join(fit.metrics)})")
    size = target.count
    w, _, _ = pareto_front(fit, nl, code, size=size, data=data)
    p = predict(fit, w, size, data=data)
    pred = {c: w[:, i] for i, c in enumerate(cols)}
    for m in (nl, code):
        pred |= {m: p[m][0], f"{m}_lo90": p[m][1], f"{m}_hi90": p[m][2]}
    front = pl.DataFrame(pred)
    step = max(1, front.height // 20)
    r.predictions = front[::step]
    r.target, r.target_params = target.text, size
    if fit.size_col and fit.size_col in r.results.columns:
        r.size_col = fit.size_col
    best = w[int(np.argmin(p[nl][0]))]
    shares = stage_shares(fit)
    r.headline += headline(fit, target, nl, shares, data)
    r.headline += answers(fit, target, shares, aims(fit, nl, study_objective), data)
    lo_w, hi_w = weight_ranges(fit) or (np.zeros(len(cols)), np.ones(len(cols)))
    for s in shares[:1]:
        x = np.linspace(*share_range(s, best, lo_w, hi_w), points)
        p = predict(fit, set_shares(best, {s: x}), size, data=data)
        r.share_col = s.name
        tasks = [m for m in family_metrics(r.results) if m in fit.metrics]
        for m in dict.fromkeys((nl, code, *tasks)):
            r.curves[m] = pl.DataFrame({"x": x, "y": p[m][0], "lo": p[m][1], "hi": p[m][2]})
    if len(shares) >= 2:
        sa, sb = shares[:2]
        xa = np.linspace(*share_range(sa, best, lo_w, hi_w), 25)
        xb = np.linspace(*share_range(sb, best, lo_w, hi_w), 25)
        A, B = np.meshgrid(xa, xb)
        z = predict(fit, set_shares(best, {sa: A.ravel(), sb: B.ravel()}), size, data=data)
        z = z[nl][0]
        r.contour = {"x": xa, "y": xb, "z": z.reshape(A.shape), "x_col": sa.name}
        r.contour["y_col"] = sb.name
    lo = float(r.results[r.size_col].min()) if r.size_col in r.results.columns else size / 1e3
    sizes = np.geomspace(lo, size, 30)
    rows = [predict(fit, best[None, :], float(n))[nl] for n in sizes]
    r.scaling[nl] = pl.DataFrame(
        {
            "params": sizes,
            "y": [float(q[0][0]) for q in rows],
            "lo": [float(q[1][0]) for q in rows],
            "hi": [float(q[2][0]) for q in rows],
        }
    )
    held = " Other stages' mixtures are held at that mixture along the curves." if shares else ""
    law = fit.scaling.get(nl)
    name = getattr(law, "name", getattr(law, "form", "?"))
    name += "" if getattr(law, "shared_r_star", True) else ", R* per domain"
    r.notes.append(
        f"Predictions at {target} come from the fitted mixture-and-size law ({name}, as "
        f"`codemix fit` chose it for {nl}) over {', '.join(cols)}; bands are 90 % intervals. "
        f"The scaling curve follows the mixture with the lowest predicted {nl} at the "
        f"target.{held}"
    )
    if not fit.code_domains:
        r.notes.append(
            "The fit records no code domains (fit a study export, or give codemix fit "
            "--code-domains), so the predicted curves along a code share and the contour "
            "over two stages' code shares are left out."
        )
    elif not shares:
        r.notes.append(
            f"No stage's mixture holds both code ({', '.join(fit.code_domains)}) and other "
            "domains, so there is no code share to draw curves along."
        )


def _share_columns(df: pl.DataFrame) -> list[str]:
    """The table's code-share columns (see `observed_share_columns`), numeric ones only."""
    return observed_share_columns(df.columns, lambda c: df[c].dtype.is_numeric())


def _sizes(df: pl.DataFrame) -> list[str]:
    """Sizes from smallest to largest (by parameters where the table has them)."""
    if "size" not in df.columns:
        return ["all"]
    key = "params" if "params" in df.columns else "size"
    by = df.group_by("size").agg(pl.col(key).max().alias("_k")).sort("_k")
    return [str(s) for s in by["size"].to_list()]


def _rows(df: pl.DataFrame, size: str) -> pl.DataFrame:
    return df if size == "all" else df.filter(pl.col("size").cast(pl.String) == size)


def _objective_title(df: pl.DataFrame, first: str) -> str:
    """The first objective's axis title, naming the metric it reports where its values are
    one metric's at the largest size (a weighted objective matches none)."""
    big = _sizes(df)[-1]
    d = _rows(df, big).drop_nulls(first)
    for m in df.columns:
        if not m.startswith(("bpb.", "loss.", "task.")) or not df[m].dtype.is_numeric():
            continue
        e = d.drop_nulls(m)
        if e.height and np.allclose(e[first].to_numpy(), e[m].to_numpy()):
            return f"{first}: {m} at {big} ({unit(m)})"
    return f"{first} (the study's first objective, in its metric's unit)"


def _progress(r: ReportInput):
    import plotly.graph_objects as go

    df, first = r.results, objective(0)
    if first not in df.columns or "trial" not in df.columns:
        return None
    if "choice.schedule" in df.columns:  # a grid of named schedules: its order is no search
        return None
    t = df.unique("trial").sort("trial").drop_nulls(first)
    if t.height == 0:
        return None
    y = t[first].to_numpy()
    best = np.minimum.accumulate(y)
    fig = go.Figure(
        [
            go.Scatter(x=t["trial"], y=y, mode="markers", name="trial", marker=dict(color=NEUTRAL)),
            go.Scatter(x=t["trial"], y=best, mode="lines", name="best so far", line_color=INK),
        ]
    )
    fig.update_layout(title="Study progress: objective (first) by trial")
    fig.update_xaxes(**axis("trial"))
    fig.update_yaxes(title_text=_objective_title(df, first))
    return fig


def _size_points(d: pl.DataFrame, x: str, y: str, size: str, colour: str, name=None, **kw):
    """A size's observed runs: one colour and one legend entry per size in every figure."""
    import plotly.graph_objects as go

    hover = [f"trial {t}" for t in d["trial"]] if "trial" in d.columns else None
    return go.Scatter(
        x=d[x],
        y=d[y],
        mode="markers",
        name=name or str(size),
        legendgroup=str(size),
        marker=dict(color=colour),
        text=hover,
        **kw,
    )


def _predicted_front(r: ReportInput):
    import plotly.graph_objects as go

    p, nl, code = r.predictions, r.nl_metric, r.code_metric
    if p is None or nl not in p.columns or code not in p.columns:
        return None
    x, y = p[code].to_numpy(), p[nl].to_numpy()
    f = pareto_indices(x, y)
    err, name = {}, f"{r.target} predicted front"
    if f"{nl}_lo90" in p.columns:
        err["error_y"] = dict(
            type="data",
            symmetric=False,
            array=(p[f"{nl}_hi90"] - p[nl]).to_numpy()[f],
            arrayminus=(p[nl] - p[f"{nl}_lo90"]).to_numpy()[f],
        )
        name += f" (bars: {LEVEL} interval of {nl})"
    return go.Scatter(
        x=x[f], y=y[f], mode="lines+markers", name=name, marker_color=INK, line_color=INK, **err
    )


def _pareto_fig(r: ReportInput):
    import plotly.graph_objects as go

    df, nl, code = r.results, r.nl_metric, r.code_metric
    if nl not in df.columns or code not in df.columns:
        return None
    fig = go.Figure()
    colours = size_colours(_sizes(df))
    for size, colour in colours.items():
        d = _rows(df, size).drop_nulls([nl, code])
        if d.height == 0:
            continue
        fig.add_trace(_size_points(d, code, nl, size, colour, f"{size} proxies"))
        x, y = d[code].to_numpy(), d[nl].to_numpy()
        f = pareto_indices(x, y)
        front = go.Scatter(x=x[f], y=y[f], mode="lines", name=f"{size} front", line_color=colour)
        fig.add_trace(front.update(legendgroup=size, showlegend=False))
    front = _predicted_front(r)
    if front is not None:
        fig.add_trace(front)
    fig.update_layout(title=f"NL versus code: {nl} against {code} (lower is better)")
    fig.update_xaxes(**axis(code, "code"))
    fig.update_yaxes(**axis(nl, "NL"))
    return fig


def _response(r: ReportInput):
    """Each metric against the code share in a panel of its own (their scales differ)."""
    from plotly.subplots import make_subplots

    df, shares = r.results, _share_columns(r.results)
    roles = {r.nl_metric: "NL", r.code_metric: "code"}
    metrics = [m for m in roles if m in df.columns]
    if r.share_col and r.share_col in df.columns:
        shares = [r.share_col]
    if not shares or not metrics:
        return None
    x_col, colours = shares[0], size_colours(_sizes(df))
    fig = make_subplots(rows=len(metrics), cols=1, vertical_spacing=0.15)
    for i, m in enumerate(metrics):
        at = dict(row=i + 1, col=1)
        for size, colour in colours.items():
            d = _rows(df, size).drop_nulls([x_col, m]).sort(x_col)
            fig.add_trace(_size_points(d, x_col, m, size, colour, showlegend=i == 0), **at)
        c = r.curves.get(m)
        if c is not None:
            for t in band_traces(c["x"], c["y"], c["lo"], c["hi"], r.target):
                fig.add_trace(t.update(showlegend=i == 0), **at)
        fig.update_xaxes(**axis(x_col), **at)
        fig.update_yaxes(**axis(m, roles[m]), **at)
    fig.update_layout(title=f"Response along {x_col}", height=360 * len(metrics))
    return fig


def _x_share(r: ReportInput) -> str | None:
    shares = _share_columns(r.results)
    if r.share_col and r.share_col in r.results.columns:
        return r.share_col
    return shares[0] if shares else None


def _families(r: ReportInput):
    return families_fig(r, _sizes(r.results), _rows, _x_share(r))


def _front3(r: ReportInput):
    return front3_fig(r, _sizes(r.results), _rows, _x_share(r))


def _contour(r: ReportInput):
    """The NL metric over two stages' code shares: predicted at the target from the fit when
    there is one, else a quadratic response surface (OLS) over the first two searched shares."""
    if r.contour is not None:
        return _predicted_contour(r)
    import statsmodels.api as sm

    df, m = r.results, r.nl_metric
    shares = _share_columns(df)
    if len(shares) < 2 or m not in df.columns:
        return None
    size = _sizes(df)[-1]
    d = _rows(df, size).drop_nulls([shares[0], shares[1], m])
    # six coefficients: on fewer distinct share pairs than 10 (seeds repeat a pair) the
    # surface all but interpolates them, and its R² of 1 says nothing
    if d.select(shares[0], shares[1]).unique().height < 10:
        return None
    a, b, y = (d[c].to_numpy().astype(float) for c in (shares[0], shares[1], m))

    def design(a, b):
        return np.column_stack([np.ones_like(a), a, b, a * a, b * b, a * b])

    fit = sm.OLS(y, design(a, b)).fit()
    ga = np.linspace(a.min(), a.max(), 40)
    gb = np.linspace(b.min(), b.max(), 40)
    A, B = np.meshgrid(ga, gb)
    Z = fit.predict(design(A.ravel(), B.ravel())).reshape(A.shape)
    fig = _contour_fig(r, ga, gb, Z, "quadratic surface", "lowest of the surface")
    fig.add_trace(_proxies(d, shares[0], shares[1], size, _colour(df, size)))
    fig.update_layout(
        title=f"{m} at {size} over two stage shares (quadratic fit, R² {fit.rsquared:.2f})"
    )
    fig.update_xaxes(**axis(shares[0]))
    fig.update_yaxes(**axis(shares[1]))
    return fig


def _predicted_contour(r: ReportInput):
    df, m, c = r.results, r.nl_metric, r.contour
    fig = _contour_fig(r, c["x"], c["y"], c["z"], "predicted", "predicted optimum")
    big = _sizes(df)[-1]
    if {c["x_col"], c["y_col"]} <= set(df.columns):
        d = _rows(df, big).drop_nulls([c["x_col"], c["y_col"]])
        fig.add_trace(_proxies(d, c["x_col"], c["y_col"], big, _colour(df, big)))
    fig.update_layout(
        title=f"{m} predicted at {r.target} over two stages' code shares "
        "(other weights at the best predicted mixture)",
    )
    fig.update_xaxes(**axis(c["x_col"]))
    fig.update_yaxes(**axis(c["y_col"]))
    return fig


def _contour_fig(r: ReportInput, x, y, z, name: str, best: str):
    import plotly.graph_objects as go

    colorbar = dict(title=axis_title(r.nl_metric, "NL"))
    fig = go.Figure(go.Contour(x=x, y=y, z=z, colorbar=colorbar, name=name))
    fig.add_trace(_best_marker(x, y, z, best))
    return fig


def _colour(df: pl.DataFrame, size: str) -> str:
    return size_colours(_sizes(df))[size]


def _proxies(d: pl.DataFrame, x: str, y: str, size: str, colour: str):
    """A size's runs over a contour: its colour, ringed in white to stand out."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=d[x],
        y=d[y],
        mode="markers",
        marker=dict(color=colour, line=dict(width=1, color="white")),
        name=f"{size} proxies",
        legendgroup=size,
    )


def _best_marker(x, y, z, name: str):
    """A star at the lowest point of a contour grid (z[i, j] at x[j], y[i])."""
    import plotly.graph_objects as go

    i, j = np.unravel_index(int(np.nanargmin(z)), np.shape(z))
    return go.Scatter(
        x=[x[j]],
        y=[y[i]],
        mode="markers",
        marker=dict(symbol="star", size=16, color="gold", line=dict(width=1, color="black")),
        name=name,
    )


def _trial_lines(df: pl.DataFrame, m: str, n: str) -> list:
    """Each trial across the sizes, in grey: the points on them carry the sizes' colours."""
    import plotly.graph_objects as go

    out = []
    for trial in df["trial"].unique().sort().to_list():
        d = df.filter(pl.col("trial") == trial).drop_nulls([m, n]).sort(n)
        if d.height:
            line = dict(color=NEUTRAL, width=1)
            out.append(
                go.Scatter(
                    x=d[n], y=d[m], mode="lines", name=f"trial {trial}", showlegend=False, line=line
                )
            )
    return out


def _scaling(r: ReportInput):
    import plotly.graph_objects as go

    df, m, n = r.results, r.nl_metric, r.size_col
    if m not in df.columns or n not in df.columns or "trial" not in df.columns:
        return None
    fig = go.Figure(_trial_lines(df, m, n))
    for size, colour in size_colours(_sizes(df)).items():
        d = _rows(df, size).drop_nulls([m, n])
        if d.height:
            fig.add_trace(_size_points(d, n, m, size, colour))
    s = r.scaling.get(m)
    if s is not None:
        label = f"extrapolation to {r.target}"
        fig.add_traces(band_traces(s["params"], s["y"], s["lo"], s["hi"], r.target, label))
    fig.update_layout(title=f"Scaling: {m} against parameters ({n})")
    fig.update_xaxes(type="log", **axis(n))
    fig.update_yaxes(**axis(m, "NL"))
    return fig


def _mixture(r: ReportInput):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    df, mix_at, epochs_at = r.results, f"mix{SEP}", epochs("")
    mix = [c for c in df.columns if c.startswith(mix_at)]
    reps = [c for c in df.columns if c.startswith(epochs_at)]
    if not mix and not reps:
        return None
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("realised share by stage and domain", "epochs per domain")
    )
    d = df.unique("trial") if "trial" in df.columns else df
    # grey: the boxes gather every size, so no size's colour applies
    box = dict(boxpoints="all", marker_color=NEUTRAL, line_color=NEUTRAL)
    for c in mix:
        fig.add_trace(go.Box(y=d[c], name=c[len(mix_at) :], **box), row=1, col=1)
    for c in reps:
        fig.add_trace(go.Box(y=d[c], name=c[len(epochs_at) :], **box), row=1, col=2)
    fig.update_xaxes(title_text="stage.domain (name)", row=1, col=1)
    fig.update_yaxes(title_text="share of the stage's tokens (%)", **PERCENT, row=1, col=1)
    fig.update_xaxes(title_text="domain (name)", row=1, col=2)
    fig.update_yaxes(title_text="epochs (passes over the domain's tokens)", row=1, col=2)
    fig.update_layout(title="Realised mixture and repetition (all trials)", showlegend=False)
    return fig


def _calibration_points(d: pl.DataFrame, col: str, m: str, pct: str | None) -> list:
    """The confirmatory runs, a trace per size in its colour, with their `pct` % intervals."""
    import plotly.graph_objects as go

    out = []
    for size, colour in size_colours(_sizes(d)).items():
        e, err, name = _rows(d, size), None, "confirmatory runs"
        if pct is not None:
            p = e[col].to_numpy()
            err = dict(type="data", symmetric=False, array=e[f"{col}_hi{pct}"].to_numpy() - p)
            err["arrayminus"] = p - e[f"{col}_lo{pct}"].to_numpy()
            name += f" (bars: {pct} % interval)"
        out.append(
            go.Scatter(
                x=e[col],
                y=e[m],
                error_x=err,
                mode="markers",
                name=name if size == "all" else f"{size} {name}",
                legendgroup=size,
                marker_color=colour,
            )
        )
    return out


def _calibration(r: ReportInput, m: str):
    """Observed against predicted for the runs that carry a prediction of metric `m`."""
    import plotly.graph_objects as go

    df, role = r.results, "NL" if m == r.nl_metric else "code"
    col = f"predicted_{m}"
    if col not in df.columns or m not in df.columns:
        return None
    d = df.drop_nulls([col, m])
    lo, hi = float(min(d[col].min(), d[m].min())), float(max(d[col].max(), d[m].max()))
    # interval bounds as `codemix predict` writes them: predicted_M_loNN, predicted_M_hiNN
    pct = next((c[len(col) + 3 :] for c in d.columns if c.startswith(f"{col}_lo")), None)
    pct = pct if pct is not None and f"{col}_hi{pct}" in d.columns else None
    title = f"Calibration: {m} predicted against observed"
    if pct is not None:
        bounds = (d[f"{col}_lo{pct}"].to_numpy(), d[f"{col}_hi{pct}"].to_numpy())
        c = coverage(d[m].to_numpy(), d[col].to_numpy(), *bounds)
        title += f" ({c.inside} of {c.n} inside their {pct} % interval"
        mre = float(np.mean(np.abs(d[col].to_numpy() / d[m].to_numpy() - 1)))
        title += f"; mean relative error {mre:.1%})"
    fig = go.Figure(_calibration_points(d, col, m, pct))
    diagonal = dict(color=NEUTRAL, dash="dot")
    fig.add_trace(
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="observed = predicted", line=diagonal)
    )
    fig.update_layout(title=title)
    fig.update_xaxes(**axis(col, role))
    fig.update_yaxes(title_text="observed " + axis_title(m, role))
    return fig


def _calibration_nl(r: ReportInput):
    return _calibration(r, r.nl_metric)


def _calibration_code(r: ReportInput):
    return _calibration(r, r.code_metric)


def _table(df: pl.DataFrame, max_rows: int = 50) -> str:
    cols = df.columns
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for row in df.head(max_rows).iter_rows():
        cells = "".join(
            f"<td>{v:.4g}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figures(r: ReportInput) -> list:
    """Every figure the table and the predictions allow, in the page's order."""
    makers = (
        _progress,
        _pareto_fig,
        _response,
        _families,
        _front3,
        _contour,
        _scaling,
        _mixture,
        _calibration_nl,
        _calibration_code,
    )
    return [f for f in (make(r) for make in makers) if f is not None]


def render(r: ReportInput) -> str:
    import plotly.io as pio

    if r.results.height == 0:
        raise CodemixError("the results table is empty: nothing to report")
    figs = _figures(r)
    parts, first = [], True
    for fig in figs:
        fig.update_layout(template="plotly_white", height=fig.layout.height or 460)
        parts.append(
            pio.to_html(fig, include_plotlyjs=first, full_html=False, config={"displaylogo": False})
        )
        first = False
    df = r.results
    counts = ""
    if "state" in df.columns and "trial" in df.columns:
        st = df.unique("trial").group_by("state").len().sort("state")
        counts = ", ".join(f"{n} {html.escape(str(s))}" for s, n in st.iter_rows())
    summary = [f"{df.height} rows"]
    if "trial" in df.columns:
        summary.append(
            f"{df['trial'].n_unique()} trials ({counts})"
            if counts
            else f"{df['trial'].n_unique()} trials"
        )
    if "size" in df.columns:
        summary.append("sizes " + ", ".join(html.escape(s) for s in _sizes(df)))
    if "flops" in df.columns:
        summary.append(f"{df['flops'].sum():.3g} training FLOPs")
    pred = decision_table(df, [r.nl_metric, r.code_metric, *family_metrics(df)], _sizes(df))
    if r.predictions is not None:
        pred += (
            f"<h2>Predictions at {html.escape(str(r.target))}: the predicted Pareto front</h2>"
            f"<p>Mixtures that no other beats on both {html.escape(r.nl_metric)} and "
            f"{html.escape(r.code_metric)} (bits per byte), with 90 % prediction intervals "
            "(_lo90, _hi90).</p>" + _table(r.predictions)
        )
    if "predicted_" + r.nl_metric not in df.columns:
        r.notes.append(
            "No confirmatory runs in this table yet: the calibration plot appears "
            "once runs at the target carry a predicted_<metric> column."
        )
    pred += branching.section(df, [r.nl_metric, r.code_metric], _table)
    notes = "".join(f"<p class=note>{html.escape(n)}</p>" for n in r.notes)
    warn = []
    if "state" in df.columns and "trial" in df.columns:
        trials = df.unique("trial")
        if "retry_of" in df.columns:
            # an interrupted trial whose retry ran is no failure: the retry stands for it
            retry_of = df["retry_of"].cast(df["trial"].dtype, strict=False).drop_nulls()
            retried = trials.filter(pl.col("trial").is_in(retry_of.implode()))
            trials = trials.filter(~pl.col("trial").is_in(retried["trial"].implode()))
            if retried.height:
                notes += (
                    f"<p class=note>{retried.height} trial(s) interrupted and retried: "
                    "their retries stand for them below.</p>"
                )
        states = dict(trials.group_by("state").len().iter_rows())
        bad = {k: v for k, v in states.items() if k in ("fail", "failed", "running", "waiting")}
        if bad:
            warn.append(
                "This study is incomplete or has failed trials ("
                + ", ".join(f"{v} {k}" for k, v in sorted(bad.items()))
                + "): the results below leave those out."
            )
    top = [f"<p class=warn>{html.escape(w)}</p>" for w in warn]
    if r.headline:
        items = "".join(f"<li>{html.escape(h)}</li>" for h in r.headline)
        title = html.escape(r.headline_title)
        top.append(f"<h2>{title}</h2><ul class=headline>{items}</ul>")
    headline = "".join(top)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(r.title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
.note{{color:#555}}.warn{{color:#b00;font-weight:bold}}#js-errors{{color:#b00}}</style>
{_CATCH_ERRORS}</head><body>
<h1>{html.escape(r.title)}</h1>
{headline}
<p>{"; ".join(summary)}. Metrics: {html.escape(r.nl_metric)} (natural language),
{html.escape(r.code_metric)} (code), validation split, bits per byte unless named loss.</p>
{notes}
{"".join(f'<div class="figure">{p}</div>' for p in parts)}
{pred}
<pre id="js-errors"></pre>
</body></html>
"""


def write_report(r: ReportInput, out: Path) -> int:
    """Write atomically; returns the number of figures."""
    page = render(r)
    out = Path(out)
    if not out.parent.is_dir():
        raise CodemixError(f"-o {out}: folder {out.parent} does not exist")
    atomic_write_text(out, page)
    return page.count('class="figure"')
