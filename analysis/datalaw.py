"""The data-constrained mixture law: the joint law plus a term for the tokens each domain gave
the run, counted as effective tokens given its repetitions (Muennighoff et al. 2023).

    log L = logsumexp(e.x_E(r),  a.x_A(r) - alpha log N,  b - beta log S)
    S = sum_k exp(g_k) D'_k,      D'_k = D_k phi(ep_k)
    phi(ep) = 1 for ep <= 1, else (1 + R*(1 - exp(-(ep - 1) / R*))) / ep

D_k is the tokens of domain k the run trained on and ep_k the epochs they took, so D'_k is
U_k + U_k R*(1 - exp(-R/R*)) for U_k = D_k / ep_k unique tokens seen R = ep_k - 1 extra
times: a token seen for the 30th time is worth little. g_k weighs the domains (g of the
first is 0), R* is shared by all domains or fitted per domain. With a ladder at one token
count per parameter, N and D move together and the exponents trade off; what the law adds
is the repetition term, which the mixture changes at fixed N (an all-text run repeats the
text, a balanced one does not), and which a target with more or fewer unique tokens than
the proxies changes again.

Optional terms, chosen like the law itself on held-out runs:
- `recency`: a stage's tokens count m_s = exp(-A_s / tau) times, A_s the tokens trained after
  the stage ended (0 for the last), tau fitted in tokens. Stage lengths enter the law: at a
  larger size the cooldown is longer in tokens, so what the earlier stages taught fades more,
  and a cooldown without a domain costs that domain more than on the ladder.
- `overfit`: a fourth term exp(o) rbar^kappa that lets the loss rise with repetition, rbar the
  mean extra epochs of the domains weighted as in S (kappa >= 0). Effective tokens alone can
  only make repeated tokens worth less, never make more of them hurt. Past the most epochs
  any fitted run read (each domain's), the term goes on along its tangent there
  (`overfit_past`, by default; or as the power): a power fitted below that edge pins its
  curvature only there, and on codemix's ladders it rose far too fast past it (a "4M" rung
  that read the text 40 times against the fitted runs' 22: 30 % off as the power, 6 % along
  the tangent; within the ladder's epochs the two are one).
- `overfit_n` (with `overfit`): that term times sigmoid(zeta (log N - log N_mid)). At matched
  epochs a larger model memorises more of a small sample, up to a ceiling: on codemix's
  repetition-matched ladders a text-only run's loss at 38 epochs rose from 2.0 to 3.36 bpb
  between "0.5M" and "4M", levelling off, which no term falling in N can follow.
- `overfit_fall` (with `overfit_n`; only by `--law`, not in the `auto` contest): that term
  times (1 + N / N_mid)^-eta, so that it falls again past its rise. Matched to "16M"'s
  epochs, the text-only loss went 3.24, 3.85, 3.70, 3.45 bpb from "1M" to "8M"; four sizes
  show the fall only at the top, so the check that holds the largest one out cannot choose
  this form.
- `overfit_linear` (in place of `overfit`; only by `--law`, not in the `auto` contest): a
  factor exp(s softplus(rbar - r0)) on the loss, log L rising by s an extra epoch past an
  onset r0. On codemix's ladders the power fitted the onset better (by about a point where
  the runs one size up read no more than the ladder did), and this form extrapolated past the
  ladder's epochs far better (7 % against 30 % at "4M" from "0.5M"-"2M", 5 % against 24 % at
  "8M" from "0.5M"-"4M"): the loss rose about linearly in the epochs past 10-12, which a
  power fitted to the onset overshoots. Held out at the largest size the power wins, so the
  contest cannot choose between them; a target that reads a domain more than the ladder can.
- `forget`: a factor exp(sum_k exp(f_k) (A_k / scale)^nu) on the loss, A_k the tokens trained
  after the last stage that had domain k (0 while the last stage has it; no term for a
  domain never trained on). A domain left out of the cooldown is forgotten, more the longer
  the cooldown: on codemix's grid ladder a code-free cooldown raised the code loss by
  exp(0.16) at "0.5M" and exp(0.44) at "2M", about as the cooldown's tokens to the 0.65,
  which no count of effective tokens reproduces.
- `revert` (in place of `forget`): log L moves from the law's value toward log H_k + h_k
  log(N / N0) + h2_k E_k, the loss of a model that never saw domain k (E_k the extra epochs
  of the other domains), by phi_k = c_k (1 - exp(-(A_k / tau)^nu)), tau = tau0 (N /
  N0)^mu, and all the way for a run without k. Forgetting then
  saturates: after a long cooldown without code the code loss of codemix's "2M" proxies was
  2.76-2.77 bpb whatever the init's code share (0.2-0.7), between the loss with code and
  that of a model that never saw any (5.2), which a factor on each run's own loss cannot
  reach. The never-seen loss is learnt from runs without the domain (a text-only run's code
  loss), or else, loosely, from how far the forgetting runs went. It rises as the model
  overfits what it did read: on codemix's ladder a text-only "2M" proxy's code loss was 5.20
  bpb after 7 text epochs and 6.31-6.38 after 22, about exp(0.012) an extra epoch; a power
  of the epochs (h2 log E) put the "8M" text-only run 8 % too low, this 2.5 %.

Fitted like every size law here (summed Huber loss on log residuals, L-BFGS-B, bootstrap
over runs), from the joint law's optimum. Intervals: bootstrap draws times resampled
residuals, and beyond the largest fitted size a log-normal extrapolation error whose spread
grows with log(N / N_max), calibrated where the largest size was held out
(`contest.calibrate`); and where a run reads a domain more often than any fitted run did, a
second one growing with the epochs beyond the ladder's most, calibrated where the most-read
fifth of the runs was held out (`contest._calibrate_repetition`). The two add in quadrature.
The terms, their gradients and the objective live in `analysis/_lawterms.py`; the contest
between laws in `analysis/contest.py`; what a target reads against the ladder in
`analysis/regime.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from codemix.analysis._lawterms import (
    EXTRA_BOUNDS,
    EXTRA_TERMS,
    R_STAR,
    STAGED_TERMS,
    _absent,
    _Layout,
    _log_loss,
    _minimise,
    _polish,
)
from codemix.analysis._parallel import pmap
from codemix.analysis.intervals import predictive_band
from codemix.analysis.lawnames import OVERFIT_PAST, TIE_POINTS, is_sub_law
from codemix.analysis.layout import as_groups, check_groups
from codemix.core.errors import CodemixError
from codemix.core.progress import track
from codemix.core.results import SEP

__all__ = [
    "DataLawFit",
    "RunData",
    "TargetData",
    "check_overfit_past",
    "check_tie_point",
    "column_domains",
    "fit_data_law",
    "group_stages",
    "law_from_dict",
    "repetition_beyond",
    "span_tied",
    "tie_point",
    "tie_voters",
    "tied_predictions",
    "tokens_after",
]


@dataclass(frozen=True)
class RunData:
    """Per run and domain: training tokens D_k and their epochs ep_k (the export's columns)."""

    domains: tuple[str, ...]
    tokens: np.ndarray  # (runs, K)
    epochs: np.ndarray  # (runs, K)
    # per mixture group (stage), in the order of the groups: (runs, stages, K) tokens, and
    # (runs, stages) the tokens trained after the stage ended
    stage_tokens: np.ndarray | None = None
    after: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.tokens.shape != self.epochs.shape or self.tokens.shape[1] != len(self.domains):
            raise CodemixError("domain tokens and epochs differ in shape")
        if np.any(self.tokens < 0) or np.any(self.epochs < 0):
            raise CodemixError("domain tokens and epochs must be >= 0")
        if np.any(self.tokens.sum(1) <= 0):
            raise CodemixError("every run needs tokens of some domain")
        if (self.stage_tokens is None) != (self.after is None):
            raise CodemixError("stage tokens and the tokens after each stage come together")
        if self.stage_tokens is not None:
            runs, k = self.tokens.shape
            if self.stage_tokens.shape[::2] != (runs, k) or self.after.shape != (
                runs,
                self.stage_tokens.shape[1],
            ):
                raise CodemixError("stage tokens differ in shape from the domain tokens")

    def take(self, rows) -> RunData:
        staged = self.stage_tokens is not None
        return RunData(
            self.domains,
            self.tokens[rows],
            self.epochs[rows],
            self.stage_tokens[rows] if staged else None,
            self.after[rows] if staged else None,
        )


@dataclass(frozen=True)
class TargetData:
    """What a prediction assumes about the data: the run's tokens (None: the proxies' tokens
    per parameter times N) and the unique tokens per domain (None: the proxies' corpus); or,
    for runs already trained (a confirmation table), each row's tokens and epochs, and its
    tokens per stage where its stages have other lengths than the proxies'."""

    tokens: float | np.ndarray | None = None
    unique: dict[str, float] | None = None
    epochs: np.ndarray | None = None  # (rows, K): each row's own, then `unique` is unused
    stages: np.ndarray | None = None  # (rows, mixture groups): each row's tokens per stage


def column_domains(cols, groups) -> list[tuple[int, str] | None]:
    """(stage index, domain) of every mixture column, None for free stage variables:
    `mix.init.text` is domain text of the first group; a bare `text` is domain text."""
    g = (len(cols),) if groups is None else tuple(groups)
    out, start = [], 0
    for i, size in enumerate(g):
        for c in cols[start : start + size]:
            out.append(None if size == 1 and len(g) > 1 else (i, c.rpartition(SEP)[2]))
        start += size
    return out


def group_stages(cols, groups) -> dict[int, str | None]:
    """The stage each mixture group names (group -> STAGE of its mix.STAGE.DOMAIN columns,
    None where its columns are not named so); free stage variables name none."""
    out: dict[int, str | None] = {}
    for c, cd in zip(cols, column_domains(cols, groups), strict=True):
        if cd is not None:
            parts = c.split(SEP)
            out.setdefault(cd[0], parts[1] if len(parts) == 3 and parts[0] == "mix" else None)
    return out


def tokens_after(stage_totals: np.ndarray) -> np.ndarray:
    """Tokens trained after each stage ended, from (runs, stages) tokens in training order."""
    return stage_totals[:, ::-1].cumsum(1)[:, ::-1] - stage_totals


@dataclass
class DataLawFit:
    """The joint law with a repetition-aware data term (see the module docstring)."""

    mixture_cols: tuple[str, ...]
    domains: tuple[str, ...]
    theta: np.ndarray
    objective: float
    n_runs: int
    sizes: tuple[float, ...]
    unique: dict[str, float]  # the proxies' unique tokens per domain (median over runs)
    tokens_per_param: float  # the proxies' (median)
    stage_fracs: tuple[float, ...]  # each mixture group's share of a run's tokens (median)
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    resid_log: np.ndarray = field(default_factory=lambda: np.empty(0))
    level: float = 0.9
    groups: tuple[int, ...] | None = None
    terms: str = "linear"
    shared_r_star: bool = True
    selection: dict = field(default_factory=dict)
    interval_scale: float = 1.0  # kept 1: the extrapolation error below replaces it
    extrapolation_sd: float = 0.0  # log-loss spread one ladder step beyond the largest size
    extrapolation_step: float = float("nan")  # that step, in log N
    extra: tuple[str, ...] = ()  # the optional terms: recency, overfit, forget
    token_scale: float = 1.0  # the tokens of a median run: tau and forget's A are in these
    stage_order: tuple[int, ...] = ()  # the mixture groups in training order (staged terms)
    # the regimes the fitted runs showed, per domain: the most epochs, and (runs of stages)
    # the most tokens trained after the domain's last stage
    ladder_epochs: dict[str, float] = field(default_factory=dict)
    ladder_absence: dict[str, float] = field(default_factory=dict)
    # log-loss spread per epoch a domain is read beyond the ladder's most, calibrated where
    # the most-read runs were held out
    repetition_sd: float = 0.0
    # past the ladder's most epochs, the power overfitting term goes on as a power or along
    # its tangent there (`_lawterms._tangent`); files written before the choice: the power
    overfit_past: str = "tangent"
    # the laws the held-out contest could not tell from this one (within one standard
    # error), fitted to every run without a bootstrap: the intervals span their predictions
    tied: tuple = ()
    # the least and most unique tokens a run read of each domain: far apart where runs were
    # capped or repetition-matched, and then `unique`, their median, is no target's corpus
    unique_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    tie_point: str = "winner"  # the point of `interval` where there is a tie (`tie_point`)

    form = "joint_data"

    @property
    def name(self) -> str:
        """The law as `--law` names it: joint_data, joint_data+recency, ..."""
        return "+".join((self.form, *self.extra))

    def _layout(self) -> _Layout:
        xe, xa = self._design(np.full((1, len(self.mixture_cols)), 0.5))
        k = len(self.domains)
        return _Layout(
            xe.shape[1],
            xa.shape[1],
            k,
            self.shared_r_star,
            self.extra,
            self.token_scale,
            float(np.log(self.token_scale / self.tokens_per_param)),
            self._past(),
        )

    def _past(self) -> np.ndarray | None:
        if self.overfit_past != "tangent" or "overfit" not in self.extra or not self.ladder_epochs:
            return None
        return np.array([self.ladder_epochs.get(d, np.inf) for d in self.domains], float)

    def _design(self, w):
        from codemix.analysis.scaling import _law_design

        return _law_design(np.atleast_2d(w), self.groups, self.terms)

    @property
    def alpha(self) -> float:
        return float(self.theta[self._layout().i_alpha])

    @property
    def beta(self) -> float:
        """The data term's exponent."""
        return float(self._layout().split(self.theta)[4])

    @property
    def params(self) -> dict:
        lay = self._layout()
        _, _, alpha, b, beta, g, r_star = lay.split(self.theta)
        out = {
            "alpha": float(alpha),
            "B": float(np.exp(b)),
            "beta": float(beta),
            "domain_weight": dict(zip(self.domains, np.exp(g).tolist(), strict=True)),
            "R_star": dict(zip(self.domains, r_star.tolist(), strict=True)),
        }
        if lay.recency:
            out["tau_tokens"] = float(self.token_scale * np.exp(self.theta[lay.i_lam]))
        if lay.linear:
            out["overfit_slope"] = float(np.exp(self.theta[lay.i_o]))
            out["overfit_onset"] = float(self.theta[lay.i_o + 1])
        elif lay.overfit:
            out["overfit_C"] = float(np.exp(self.theta[lay.i_o]))
            out["overfit_kappa"] = float(self.theta[lay.i_o + 1])
        if lay.size:
            out["overfit_n_zeta"] = float(self.theta[lay.i_z])
            out["overfit_n_mid"] = float(np.exp(self.theta[lay.i_z + 1]))
        if lay.fall:
            out["overfit_fall_eta"] = float(self.theta[lay.i_z + 2])
        if lay.forget:
            f = np.exp(self.theta[lay.i_f : lay.i_f + lay.k])
            out["forget_weight"] = dict(zip(self.domains, f.tolist(), strict=True))
            out["forget_nu"] = float(self.theta[lay.i_f + lay.k])
        if lay.revert:
            i, k = lay.i_r, lay.k
            c, h0, h1 = (self.theta[i + j * k : i + (j + 1) * k] for j in range(3))
            lam, mu, nu = self.theta[i + 3 * k : i + 3 * k + 3]
            out["revert_share"] = dict(zip(self.domains, c.tolist(), strict=True))
            out["never_seen_loss"] = dict(zip(self.domains, np.exp(h0).tolist(), strict=True))
            out["never_seen_slope"] = dict(zip(self.domains, h1.tolist(), strict=True))
            out["revert_tau_tokens"] = float(self.token_scale * np.exp(lam))
            out["revert_tau_size"] = float(np.exp(lay.log_n0))
            out["revert_mu"] = float(mu)
            out["revert_nu"] = float(nu)
            h2 = self.theta[i + 3 * k + 3 : i + 4 * k + 3]
            out["never_seen_epoch_slope"] = dict(zip(self.domains, h2.tolist(), strict=True))
        return out

    def run_data(self, w: np.ndarray, n, data: TargetData | None = None) -> RunData:
        """Each candidate's tokens and epochs per domain at size(s) `n` under `data`."""
        w = np.atleast_2d(w)
        data = data or TargetData()
        n = np.broadcast_to(np.asarray(n, float), (len(w),))
        total = n * self.tokens_per_param if data.tokens is None else data.tokens
        total = np.broadcast_to(np.asarray(total, float), (len(w),))
        n_groups = len(self.stage_fracs) or 1
        fracs = np.broadcast_to(np.asarray(self.stage_fracs or (1.0,), float), (len(w), n_groups))
        if data.stages is not None:  # each row's own stage lengths
            st = np.atleast_2d(np.asarray(data.stages, float))
            fracs = st / np.maximum(st.sum(1, keepdims=True), 1e-300)
        share = np.zeros((len(w), n_groups, len(self.domains)))
        for j, cd in enumerate(column_domains(self.mixture_cols, self.groups)):
            if cd is not None:
                share[:, cd[0], self.domains.index(cd[1])] += fracs[:, cd[0]] * w[:, j]
        share /= np.maximum(share.sum((1, 2), keepdims=True), 1e-300)
        stage_tokens = total[:, None, None] * share
        tokens = stage_tokens.sum(1)
        if data.epochs is not None:
            epochs = np.atleast_2d(np.asarray(data.epochs, float))
        else:
            unique = dict(self.unique) | dict(data.unique or {})
            epochs = tokens / np.array([unique[d] for d in self.domains])[None, :]
        if not set(STAGED_TERMS) & set(self.extra):
            return RunData(self.domains, tokens, epochs)
        order = list(self.stage_order)
        after = np.empty(stage_tokens.shape[:2])
        after[:, order] = tokens_after(stage_tokens[:, order].sum(2))
        return RunData(self.domains, tokens, epochs, stage_tokens, after)

    def _draws(self, w, n, thetas, data: TargetData | RunData | None) -> np.ndarray:
        rd = data if isinstance(data, RunData) else self.run_data(w, n, data)
        xe, xa = self._design(w)
        lay = self._layout()
        log_n = np.log(np.broadcast_to(np.asarray(n, float), (len(rd.tokens),)))
        out = [np.exp(np.clip(_log_loss(t, lay, xe, xa, log_n, rd)[0], -50, 50)) for t in thetas]
        return np.stack(out, axis=1) if out else np.empty((len(rd.tokens), 0))  # no bootstrap

    def predict(self, w, n_params, data: TargetData | RunData | None = None) -> np.ndarray:
        return self._draws(np.atleast_2d(w), n_params, self.theta[None, :], data)[:, 0]

    def boot_predictions(self, w, n_params, data: TargetData | RunData | None = None) -> np.ndarray:
        return self._draws(np.atleast_2d(w), n_params, self.boot, data)

    def extrapolation(self, n_params) -> np.ndarray:
        """The log-normal spread of the extrapolation error at size(s) n: zero within the
        fitted sizes, growing linearly in log(N / N_max) beyond them."""
        n = np.asarray(n_params, float)
        if not self.extrapolation_sd or not np.isfinite(self.extrapolation_step):
            return np.zeros_like(n)
        beyond = np.maximum(np.log(n / max(self.sizes)), 0.0)
        return self.extrapolation_sd * beyond / self.extrapolation_step

    def repetition(
        self, w, n_params, data: TargetData | RunData | None = None, sd: float | None = None
    ) -> np.ndarray:
        """The log-normal spread of the error of reading a domain more often than any fitted
        run did: zero within the ladder's epochs, growing linearly in the epochs beyond.
        `sd`: the spread per epoch, where not this law's own (a joint law's, beside it)."""
        w = np.atleast_2d(w)
        sd = self.repetition_sd if sd is None else sd
        if not sd or not self.ladder_epochs:
            return np.zeros(len(w))
        rd = data if isinstance(data, RunData) else self.run_data(w, n_params, data)
        return sd * repetition_beyond(rd.epochs, self.ladder_epochs, rd.domains)

    def interval(
        self, w, n_params, level: float | None = None, data: TargetData | RunData | None = None
    ):
        """Mean and a prediction interval for one new run: bootstrap draws times resampled
        log residuals times the extrapolation errors in size and in repetition. Where a row
        reads a domain past the ladder's most epochs, the power overfitting term's two
        continuations (`overfit_past`) both fit the ladder and the ladder cannot choose:
        the interval there is the union of theirs."""
        level = self.level if level is None else level
        w = np.atleast_2d(w)
        rd = data if isinstance(data, RunData) else self.run_data(w, n_params, data)  # once
        mean = self.predict(w, n_params, rd)
        tied = tied_predictions(self, w, n_params, data)
        point = tie_point(self, mean, tied)
        if len(self.boot) < 2:
            return point, mean * np.nan, mean * np.nan
        lo, hi = self._band(w, n_params, level, rd)
        if "overfit" in self.extra and self.ladder_epochs:
            past = repetition_beyond(rd.epochs, self.ladder_epochs, rd.domains) > 0
            if past.any():
                other = "power" if self.overfit_past == "tangent" else "tangent"
                alt = dataclasses.replace(self, overfit_past=other)
                lo2, hi2 = alt._band(w, n_params, level, rd)  # the same noise, row by row
                lo, hi = (
                    np.where(past, np.minimum(lo, lo2), lo),
                    np.where(past, np.maximum(hi, hi2), hi),
                )
        return point, *span_tied(mean, lo, hi, tied)

    def _band(self, w, n_params, level: float, rd: RunData):
        draws = self.boot_predictions(w, n_params, rd)
        size_sd = np.broadcast_to(self.extrapolation(n_params), (len(w),))
        sd = np.hypot(size_sd, self.repetition(w, n_params, rd))
        return predictive_band(draws, self.resid_log, level, sd)

    def to_dict(self) -> dict:
        return {
            "form": self.form,
            "law": "L = exp(e.x(r)) + exp(a.x(r)) N^-alpha + B (sum_k w_k D'_k)^-beta"
            + (" + C rbar^kappa" if "overfit" in self.extra else "")
            + (" x sigmoid(zeta (log N - log N_mid))" if "overfit_n" in self.extra else "")
            + (" x (1 + N / N_mid)^-eta" if "overfit_fall" in self.extra else "")
            + (
                " (past the ladder's most epochs, its tangent there)"
                if self._past() is not None
                else ""
            )
            + ", D'_k = U_k (1 + R* (1 - exp(-(epochs_k - 1) / R*))) once repeated"
            + (
                ", each stage's tokens times exp(-tokens after it / tau)"
                if "recency" in self.extra
                else ""
            )
            + (
                "; times exp(s softplus(rbar - r0)): log L rising by s an extra epoch past r0"
                if "overfit_linear" in self.extra
                else ""
            )
            + (
                ", rbar: the w-weighted mean extra epochs"
                if {"overfit", "overfit_linear"} & set(self.extra)
                else ""
            )
            + (
                "; times exp(sum_k F_k (tokens after domain k's last stage / scale)^nu)"
                if "forget" in self.extra
                else ""
            )
            + (
                "; log L moved toward log H_k (N / N0)^h_k exp(h2_k E_k), the loss of a model "
                "that never saw domain k (E_k the other domains' extra epochs), by c_k (1 - "
                "exp(-(A_k / tau)^nu)), A_k the tokens after k's last stage (all the way for a "
                "run without k), tau = tau0 (N / N0)^mu"
                if "revert" in self.extra
                else ""
            )
            + f"; x: Scheffe-{self.terms} terms",
            "name": self.name,
            "extra_terms": list(self.extra),
            "token_scale": self.token_scale,
            "stage_order": list(self.stage_order),
            "terms": self.terms,
            "shared_r_star": self.shared_r_star,
            "params": self.params,
            "selection": self.selection,
            "mixture_cols": list(self.mixture_cols),
            "groups": list(self.groups or (len(self.mixture_cols),)),
            "domains": list(self.domains),
            "unique_tokens": self.unique,
            "tokens_per_param": self.tokens_per_param,
            "stage_fracs": list(self.stage_fracs),
            "theta": self.theta.tolist(),
            "objective": self.objective,
            "n_runs": self.n_runs,
            "sizes": list(self.sizes),
            "level": self.level,
            "extrapolation_sd": self.extrapolation_sd,
            "extrapolation_step": self.extrapolation_step,
            "repetition_sd": self.repetition_sd,
            "overfit_past": self.overfit_past,
            "boot": self.boot.tolist(),
            "resid_log": self.resid_log.tolist(),
            "ladder_epochs": self.ladder_epochs,
            "ladder_absence": self.ladder_absence,
            "tied": [t.to_dict() for t in self.tied],
            "unique_tokens_range": {d: list(v) for d, v in self.unique_range.items()},
            "tie_point": self.tie_point,
        }

    @classmethod
    def from_dict(cls, d: dict) -> DataLawFit:
        theta = np.asarray(d["theta"], float)
        boot = np.asarray(d.get("boot", []), float).reshape(-1, len(theta))
        if "revert" in d.get("extra_terms", ()) and "never_seen_epoch_slope" not in d["params"]:
            # written before the never-seen loss had its epochs term: that term is 0
            pad = len(d["domains"])
            theta = np.r_[theta, np.zeros(pad)]
            boot = np.c_[boot, np.zeros((len(boot), pad))]
        return cls(
            tuple(d["mixture_cols"]),
            tuple(d["domains"]),
            theta,
            float(d["objective"]),
            int(d["n_runs"]),
            tuple(d["sizes"]),
            {k: float(v) for k, v in d["unique_tokens"].items()},
            float(d["tokens_per_param"]),
            tuple(float(x) for x in d["stage_fracs"]),
            boot,
            np.asarray(d.get("resid_log", []), float),
            float(d.get("level", 0.9)),
            as_groups(d.get("groups")),
            d.get("terms", "linear"),
            bool(d.get("shared_r_star", True)),
            d.get("selection", {}),
            1.0,
            float(d.get("extrapolation_sd", 0.0)),
            float(d.get("extrapolation_step", float("nan"))),
            tuple(d.get("extra_terms", ())),
            float(d.get("token_scale", 1.0)),
            tuple(int(i) for i in d.get("stage_order", ())),
            {k: float(v) for k, v in d.get("ladder_epochs", {}).items()},
            {k: float(v) for k, v in d.get("ladder_absence", {}).items()},
            float(d.get("repetition_sd", 0.0)),
            check_overfit_past(d.get("overfit_past", "power"), "FIT.json: overfit_past"),
            tuple(law_from_dict(x) for x in d.get("tied", ())),
            {k: (float(a), float(b)) for k, (a, b) in d.get("unique_tokens_range", {}).items()},
            check_tie_point(d.get("tie_point", "winner"), "FIT.json: tie_point"),
        )


def law_from_dict(d: dict):
    """A size law of FIT.json: the data-constrained law or the joint law."""
    from codemix.analysis.scaling import JointLawFit

    return (DataLawFit if d.get("form") == DataLawFit.form else JointLawFit).from_dict(d)


def tied_predictions(law, w, n_params, data) -> list[np.ndarray]:
    """Each tied law's prediction at the rows, in the order of `law.tied`: what the point
    (`tie_point`) and the interval (`span_tied`) of a tie are made of."""
    return [t.predict(w, n_params, data) for t in law.tied]


def span_tied(mean, lo, hi, tied: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) widened to span each tied law's prediction (`tied_predictions`) with this
    law's band around it (its relative width, row by row). The contest could not tell those
    laws from this one held out, and one size up they can differ by more than the band: on
    synthetic staged ladders (`benchmarks/law_transfer.py --synthetic`) the joint law won a
    tie with the true law, missed the next size by 6 %, and covered half its runs."""
    if not tied or not np.all(np.isfinite(lo)):
        return lo, hi
    below, above = lo / mean, hi / mean
    for p in tied:
        lo, hi = np.minimum(lo, p * below), np.maximum(hi, p * above)
    return lo, hi


def tie_point(law, mean: np.ndarray, tied: list[np.ndarray]) -> np.ndarray:
    """The point `law` predicts, given its own prediction `mean` and its tied laws'
    (`tied_predictions`): that, or with `tie_point` "median" and a tie, the median (of the
    logs) of its and the voting tied laws' predictions. A tie is laws the held-out checks
    could not tell apart, and which of them won turned with a seed or a library build; the
    median does not turn with it (`law_transfer.py`)."""
    if law.tie_point != "median":
        return mean
    voters = {id(t) for t in tie_voters(law)}
    votes = [p for t, p in zip(law.tied, tied, strict=True) if id(t) in voters]
    if not votes:
        return mean
    return np.exp(np.median(np.log([mean, *votes]), axis=0))


def tie_voters(law) -> list:
    """The tied laws whose predictions the median takes beside the chosen law's: all but
    those that are the chosen law with terms added and held out no better (to 0.1 %), whose
    added terms the ladder did not pin down (the contest takes the sub-law for that reason),
    so that one size up they can go anywhere."""
    rec = law.selection.get("data_law", {})
    score, chosen = rec.get("geomean_rmse_log", {}), rec.get("chosen", "")

    def unlearnt(x: str) -> bool:
        return is_sub_law(chosen, x) and x in score and score[x] <= score.get(chosen, -1) * 1.001

    return [t for t in law.tied if not unlearnt(getattr(t, "name", "joint"))]


def check_tie_point(v, what: str = "--tie-point") -> str:
    if v not in TIE_POINTS:
        raise CodemixError(f"{what} {v!r} is not one of {', '.join(TIE_POINTS)}")
    return v


def check_overfit_past(v, what: str = "--overfit-past") -> str:
    if v not in OVERFIT_PAST:
        raise CodemixError(f"{what} {v!r} is not one of {', '.join(OVERFIT_PAST)}")
    return v


def fit_data_law(
    w,
    n_params,
    loss,
    data: RunData,
    mixture_cols,
    stage_fracs: tuple[float, ...],
    *,
    start: np.ndarray | None = None,
    delta: float = 1e-3,
    n_boot: int = 0,
    seed: int = 0,
    level: float = 0.9,
    groups: tuple[int, ...] | None = None,
    terms: str = "linear",
    shared_r_star: bool = True,
    extra: tuple[str, ...] = (),
    progress: bool = False,
    jobs: int = 1,
    shared_x: np.ndarray | None = None,
    overfit_past: str = "tangent",
    restarts: int = 0,
) -> DataLawFit:
    """Fit the law on runs with mixtures `w`, sizes N, losses and their domain tokens and
    epochs. `start`: the joint law's (e, a, alpha) optimum on the same runs, if fitted.
    `extra`: the optional terms (`recency` and `forget` need each run's stage tokens).
    `jobs`: processes for the bootstrap (the same draws on one or many). `shared_x`: with
    one R* per domain, the same law's optimum with one R* on the same runs, if fitted.
    `restarts`: fits again from the starts moved by a millionth, keeping the lowest optimum
    (see `contest.RESTARTS`)."""
    from codemix.analysis.scaling import _law_design

    w = np.atleast_2d(np.asarray(w, float))
    if groups is not None:
        groups = check_groups(groups, w.shape[1])
    n = np.asarray(n_params, float)
    y = np.asarray(loss, float)
    if not len(w) == len(n) == len(y) == len(data.tokens):
        raise CodemixError("weights, sizes, losses and domain tokens differ in length")
    if np.any(y <= 0) or np.any(n <= 0):
        raise CodemixError("the data-constrained law needs positive losses and sizes")
    unknown = sorted(set(extra) - set(EXTRA_TERMS))
    if unknown:
        raise CodemixError(
            f"unknown term {unknown[0]!r} of the data law: one of {', '.join(EXTRA_TERMS)}"
        )
    if {"forget", "revert"} <= set(extra):
        raise CodemixError("the forget and revert terms model the same thing: use one")
    if {"overfit", "overfit_linear"} <= set(extra):
        raise CodemixError("overfit and overfit_linear are two forms of one term: use one")
    check_overfit_past(overfit_past)
    if "overfit_n" in extra and "overfit" not in extra:
        raise CodemixError("overfit_n scales the overfit term's power with N: it needs overfit")
    if "overfit_fall" in extra and "overfit_n" not in extra:
        raise CodemixError("overfit_fall bends overfit_n's rise with N back down: it needs it")
    staged = [t for t in STAGED_TERMS if t in extra]
    if staged and (data.stage_tokens is None or data.stage_tokens.shape[1] < 2):
        raise CodemixError(
            f"the {staged[0]} term needs runs of 2+ stages with each stage's tokens (a study "
            "export's mix.STAGE.DOMAIN and tokens.STAGE columns, every stage fitted)"
        )
    extra = tuple(t for t in EXTRA_TERMS if t in extra)
    xe, xa = _law_design(w, groups, terms)
    scale = float(np.median(data.tokens.sum(1)))
    log_n0 = float(np.log(scale / np.median(data.tokens.sum(1) / n)))
    k = len(data.domains)
    lay = _Layout(xe.shape[1], xa.shape[1], k, shared_r_star, extra, scale, log_n0)
    if len(y) <= lay.n:
        raise CodemixError(f"the data-constrained law has {lay.n} parameters; {len(y)} runs")
    log_n, log_y = np.log(n), np.log(y)
    if start is None:
        g0 = (groups or (xa.shape[1],))[0]
        one_e = np.r_[np.ones(g0), np.zeros(xe.shape[1] - g0)]
        one_a = np.r_[np.ones(g0), np.zeros(xa.shape[1] - g0)]
        start = np.r_[np.log(0.8 * y.min()) * one_e, 2.0 * one_a, 0.3]
    s0 = np.log(np.maximum(data.tokens.sum(1), 1.0))
    if lay.forget:  # a domain no run leaves out has nothing to forget: its weight stays 0
        f0 = np.where(_absent(data, scale).max(0) > 0, -3.0, EXTRA_BOUNDS["f"][0])
    if lay.revert:  # halfway back after a median run's tokens, tau growing as sqrt(N)
        lacks = (_absent(data, scale).max(0) > 0) | (data.tokens <= 0).any(0)
        revert = [*np.where(lacks, 0.5, 0.0), *np.full(k, np.log(y.max())), *np.zeros(k)]
        revert += [0.0, 0.5, 1.0, *np.zeros(k)]
    starts = []
    for beta0 in (0.2, 0.5):
        for frac in (0.05, 0.3):
            for lam0 in (0.0, 3.0) if lay.recency else (None,):
                b0 = np.log(frac * y.min()) + beta0 * float(np.median(s0))
                rest = np.r_[b0, beta0, np.zeros(k - 1)]
                rho = np.full(lay.i_lam - lay.i_rho, np.log(R_STAR))
                lam = [lam0] if lay.recency else []
                # overfit_linear: a rise of 0.01 an epoch past 10 extra epochs
                first = [np.log(0.01), 10.0] if lay.linear else [np.log(1e-3 * y.min()), 1.0]
                over = first if lay.overfit else []
                forget = [*f0, 0.5] if lay.forget else []
                tail = revert if lay.revert else []
                # overfit_n: half the ceiling at the median size, or at twice it, steeper
                for size in [[1.0, log_n0], [3.0, log_n0 + 0.7]] if lay.size else [[]]:
                    # overfit_fall: a gentle fall past N_mid, or as steep as the rise
                    for fall in [[0.5], [size[0]]] if lay.fall else [[]]:
                        starts.append(np.r_[start, rest, rho, lam, over, forget, tail, size, fall])
    best = _minimise(starts, lay, xe, xa, log_n, data, log_y, delta)
    for r in range(restarts):
        jitter = np.random.default_rng([seed, r])
        moved = [x * (1.0 + 1e-6 * jitter.standard_normal(len(x))) for x in starts]
        again = _minimise(moved, lay, xe, xa, log_n, data, log_y, delta)
        best = again if again.fun < best.fun else best
    if not shared_r_star and k > 1:
        best = _from_shared(best, starts, lay, shared_x, xe, xa, log_n, data, log_y, delta)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(y), len(y)) for _ in range(n_boot)]
    fits = pmap(
        _refit,
        [([best.x], lay, xe[i], xa[i], log_n[i], data.take(i), log_y[i], delta) for i in draws],
        jobs,
    )
    boot = list(track(fits, n_boot, desc="bootstrap data law", unit="fit", enabled=progress))
    log_fit, _ = _log_loss(best.x, lay, xe, xa, log_n, data)
    seen = data.epochs > 0
    per_run = np.divide(data.tokens, data.epochs, out=np.zeros_like(data.tokens), where=seen)
    unique = {
        d: float(np.median(per_run[seen[:, k], k]))
        for k, d in enumerate(data.domains)
        if seen[:, k].any()
    }
    unique_range = {
        d: (float(per_run[seen[:, k], k].min()), float(per_run[seen[:, k], k].max()))
        for k, d in enumerate(data.domains)
        if seen[:, k].any()
    }
    missing = [d for d in data.domains if d not in unique]
    if missing:
        raise CodemixError(
            f"no run trained on domain {missing[0]!r}: its unique tokens are unknown"
        )
    return DataLawFit(
        tuple(mixture_cols),
        tuple(data.domains),
        best.x,
        float(best.fun),
        len(y),
        tuple(sorted(float(v) for v in np.unique(n))),
        unique,
        float(np.median(data.tokens.sum(1) / n)),
        tuple(stage_fracs),
        np.array(boot).reshape(n_boot, lay.n),
        log_y - log_fit,
        level,
        groups,
        terms,
        shared_r_star,
        extra=extra,
        token_scale=scale,
        stage_order=_stage_order(data),
        ladder_epochs=dict(zip(data.domains, data.epochs.max(0).tolist(), strict=True)),
        ladder_absence=(
            {}
            if data.stage_tokens is None
            else dict(zip(data.domains, _absent(data, 1.0).max(0).tolist(), strict=True))
        ),
        unique_range=unique_range,
        overfit_past=overfit_past,
    )


def _from_shared(best, starts, lay: _Layout, shared, *args):
    """The better of a per-domain-R* fit and one started from the shared-R* law's optimum
    (`shared`, fitted here where None): a law with one R* per domain then never fits worse
    than the law with one for all."""
    one = _Layout(lay.ke, lay.ka, lay.k, True, lay.extra, lay.scale, lay.log_n0)
    if shared is None:
        cut = [np.r_[s[: one.i_lam], s[lay.i_lam :]] for s in starts]
        shared = _minimise(cut, one, *args).x
    x = np.r_[shared[: one.i_rho], np.repeat(shared[one.i_rho], lay.k), shared[one.i_lam :]]
    twin = _polish(x, lay, *args)
    return twin if twin.fun < best.fun else best


def _refit(*args) -> np.ndarray:
    return _minimise(*args).x


def _stage_order(data: RunData) -> tuple[int, ...]:
    """The stages in training order: the earlier a stage, the more tokens came after it."""
    if data.stage_tokens is None:
        return ()
    return tuple(int(i) for i in np.argsort(-np.median(data.after, 0), kind="stable"))


def repetition_beyond(epochs: np.ndarray, most: dict[str, float], domains) -> np.ndarray:
    """How far each row reads a domain beyond `most` (its most epochs on a ladder): the
    largest over domains of the epochs beyond it, 0 within. In epochs, not their log, as
    repetition's cost is counted in Muennighoff et al.'s law, and as the loss of codemix's
    proxies rose past about 10 epochs: about linearly in the epochs, faster than in their log."""
    top = np.array([most.get(d, np.inf) for d in domains], float)
    return np.maximum(np.atleast_2d(epochs) - np.maximum(top, 1.0)[None, :], 0.0).max(1)
