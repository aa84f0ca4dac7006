"""The data-constrained law's terms: the parameter layout, the log-terms with their analytic
Jacobian, and the robust objective L-BFGS-B minimises (see analysis/datalaw.py for the law)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

from codemix.analysis.huber import OPTIONS, huber
from codemix.core.errors import CodemixError

if TYPE_CHECKING:
    from codemix.analysis.datalaw import RunData

R_STAR = 15.4  # Muennighoff et al.'s fitted R* for data: the start, not a prior
BOUNDS = {"alpha": (0.0, 3.0), "beta": (0.0, 3.0), "g": (-20.0, 20.0), "rho": (-2.3, 6.9)}
# log(tau / tokens of a median run): from a twentieth of a run (strong forgetting) to 1000 runs
# (none: the plain data law); the overfitting term from negligible to any size, rising at most
# with the 4th power of the extra epochs
EXTRA_BOUNDS = {
    "lam": (-3.0, 6.9),
    "o": (-20.0, 5.0),
    "kappa": (0.0, 4.0),
    # overfit_linear: log(the rise of log L an extra epoch past the onset), and the onset in
    # extra epochs
    "r0": (0.0, 100.0),
    "f": (-20.0, 3.0),
    "nu": (0.0, 3.0),
    # revert: the most of the way back a domain's loss can go (0-1), the slope in log N of the
    # loss of a model that never saw the domain, log(tau / tokens of a median run) at the
    # median size, tau's exponent in N, and the shape of the approach
    "c": (0.0, 1.0),
    "h1": (-1.0, 1.0),
    "lam_r": (-6.0, 6.9),
    "mu": (-1.0, 2.0),
    "nu_r": (0.2, 4.0),
    # overfit_n: the overfitting term times a logistic in log N, sigmoid(zeta (log N - m)):
    # at matched epochs a larger model memorises more of a small sample, up to a ceiling
    "zeta": (0.0, 5.0),
    "m": (np.log(1e4), np.log(1e10)),
    # overfit_fall: past N_mid the term falls again as (1 + N / N_mid)^-eta: a model large
    # enough generalises from the same sample again
    "eta": (0.0, 5.0),
    # the never-seen log loss's slope in the other domains' extra epochs: a model that never
    # saw code reads its text more often the less code it has, and its code loss rises with
    # that (on codemix's ladder by about 0.012 a text epoch)
    "h2": (-0.1, 0.3),
}
EXTRA_TERMS = (
    "recency",
    "overfit",
    "overfit_linear",
    "forget",
    "revert",
    "overfit_n",
    "overfit_fall",
)
STAGED_TERMS = ("recency", "forget", "revert")  # the terms that need each run's stage tokens
# a law fitted from several starts: its best start then polished with up to this many steps
# more (the forgetting laws' flat valleys take L-BFGS-B far longer than the joint law's)
POLISH_STEPS = 10000


def _phi(ep: np.ndarray, r_star: np.ndarray):
    """phi(ep) and d phi / d rho (rho = log R*), elementwise."""
    x = np.maximum(ep - 1.0, 0.0)
    decay = np.exp(-x / r_star)
    over = ep > 1.0
    safe = np.where(over, ep, 1.0)
    phi = np.where(over, (1.0 + r_star * (1.0 - decay)) / safe, 1.0)
    dphi = np.where(over, r_star * (1.0 - decay - (x / r_star) * decay) / safe, 0.0)
    return phi, dphi


class _Layout:
    """Where each part of theta sits: e (ke), a (ka), alpha, b, beta, g (K-1), rho (1 or K),
    then lam (recency), o, kappa (overfit; log s and r0 for overfit_linear), f (K), nu (forget)
    and c, h0, h1 (K each), lam, mu, nu, h2 (K) (revert), zeta, m (overfit_n) where the law
    has those terms."""

    def __init__(
        self,
        ke: int,
        ka: int,
        k: int,
        shared: bool,
        extra: tuple[str, ...] = (),
        scale=1.0,
        log_n0=0.0,
        past: np.ndarray | None = None,
    ):
        self.ke, self.ka, self.k, self.shared = ke, ka, k, shared
        # each domain's most epochs on the ladder, past which the power overfitting term goes
        # on along its tangent (predictions only); None: the power everywhere, as fits have it
        self.past = past
        self.scale = scale  # the tokens tau is measured in: a median run's
        self.log_n0 = log_n0  # log of the size revert's tau is quoted at: a median run's
        self.extra = tuple(t for t in EXTRA_TERMS if t in extra)
        self.linear = "overfit_linear" in extra  # the overfitting term's other form
        self.recency, self.overfit = "recency" in extra, "overfit" in extra or self.linear
        self.forget, self.revert = "forget" in extra, "revert" in extra
        self.size = "overfit_n" in extra  # the overfitting term grows with N, to a ceiling
        self.fall = "overfit_fall" in extra  # and falls again past it
        self.i_alpha = ke + ka
        self.i_g = ke + ka + 3
        self.i_rho = self.i_g + k - 1
        self.i_lam = self.i_rho + (1 if shared else k)
        self.i_o = self.i_lam + self.recency
        self.i_f = self.i_o + 2 * self.overfit
        self.i_r = self.i_f + (k + 1) * self.forget
        self.i_z = self.i_r + (4 * k + 3) * self.revert
        self.n = self.i_z + 2 * self.size + self.fall

    def split(self, th: np.ndarray):
        e, a = th[: self.ke], th[self.ke : self.i_alpha]
        alpha, b, beta = th[self.i_alpha : self.i_g]
        g = np.r_[0.0, th[self.i_g : self.i_rho]]
        rho = th[self.i_rho : self.i_lam]
        r_star = np.exp(np.broadcast_to(rho, (self.k,)))
        return e, a, alpha, b, beta, g, r_star

    def bounds(self) -> list:
        free = (None, None)
        return (
            [free] * (self.ke + self.ka)
            + [BOUNDS["alpha"], free, BOUNDS["beta"]]
            + [BOUNDS["g"]] * (self.k - 1)
            + [BOUNDS["rho"]] * (self.i_lam - self.i_rho)
            + [EXTRA_BOUNDS["lam"]] * self.recency
            + [EXTRA_BOUNDS["o"], EXTRA_BOUNDS["r0" if self.linear else "kappa"]] * self.overfit
            + ([EXTRA_BOUNDS["f"]] * self.k + [EXTRA_BOUNDS["nu"]]) * self.forget
            + (
                [EXTRA_BOUNDS["c"]] * self.k
                + [free] * self.k
                + [EXTRA_BOUNDS["h1"]] * self.k
                + [EXTRA_BOUNDS["lam_r"], EXTRA_BOUNDS["mu"], EXTRA_BOUNDS["nu_r"]]
                + [EXTRA_BOUNDS["h2"]] * self.k
            )
            * self.revert
            + [EXTRA_BOUNDS["zeta"], EXTRA_BOUNDS["m"]] * self.size
            + [EXTRA_BOUNDS["eta"]] * self.fall
        )


def _absent(data: RunData, scale: float) -> np.ndarray:
    """(runs, K): tokens after the last stage that had each domain, in units of `scale`;
    0 where the last stage has it or no stage does."""
    has = data.stage_tokens > 0  # (runs, stages, K)
    after = np.where(has, data.after[:, :, None], np.inf).min(1)
    return np.where(np.isfinite(after), after, 0.0) / scale


def _other_epochs(data: RunData) -> np.ndarray:
    """(runs, K): the extra epochs (beyond the first) of the domains other than k, their mean
    weighted by their tokens; 0 where there are none."""
    d_ep = data.tokens * data.epochs
    rest_d = data.tokens.sum(1, keepdims=True) - data.tokens
    rest_ep = d_ep.sum(1, keepdims=True) - d_ep
    mean = np.divide(rest_ep, rest_d, out=np.ones_like(rest_d), where=rest_d > 0)
    return np.maximum(mean - 1.0, 0.0)


def _forget(th, lay: _Layout, data: RunData, grad: bool):
    """The forgetting term F (runs,), added to log L, and dF / d theta (runs, params)."""
    a = _absent(data, lay.scale)
    on = a > 0
    f, nu = th[lay.i_f : lay.i_f + lay.k], th[lay.i_f + lay.k]
    log_a = np.log(np.where(on, a, 1.0))
    per = np.where(on, np.exp(f + nu * log_a), 0.0)  # (runs, K)
    if not grad:
        return per.sum(1), None
    d = np.zeros((len(a), lay.n))
    d[:, lay.i_f : lay.i_f + lay.k] = per
    d[:, lay.i_f + lay.k] = (per * log_a).sum(1)
    return per.sum(1), d


def _tangent(o, kappa, rbar, share, epochs, past) -> np.ndarray:
    """log of the power overfitting term C rbar^kappa up to the ladder's most epochs (each
    domain's, `past`), and past them C rc^kappa (1 + kappa (rbar / rc - 1)): the power's
    tangent at rc, the rbar of the epochs clipped to the ladder's. A power fitted below rc
    pins its curvature only there; past it, a first-order continuation assumes least."""
    rc = (share * np.maximum(np.minimum(epochs, past[None, :]) - 1.0, 0.0)).sum(1) + 1e-6
    return o + kappa * np.log(rc) + np.log1p(kappa * np.maximum(rbar / rc - 1.0, 0.0))


def _terms(th, lay: _Layout, xe, xa, log_n, data: RunData, grad: bool = False):
    """The log-terms (3 or 4, runs) and, with `grad`, their Jacobian (terms, runs, params)."""
    e, a, alpha, b, beta, g, r_star = lay.split(th)
    phi, dphi = _phi(data.epochs, r_star)
    if lay.recency:
        tau = lay.scale * np.exp(th[lay.i_lam])
        m = np.exp(-data.after / tau)  # (runs, stages)
        tokens = np.einsum("rsk,rs->rk", data.stage_tokens, m)  # recency-weighted
    else:
        tokens = data.tokens
    dp = tokens * phi  # effective tokens per domain
    wk = np.exp(g)
    s = np.maximum(dp @ wk, 1e-300)
    rows = [xe @ e, xa @ a - alpha * log_n, b - beta * np.log(s)]
    if lay.overfit:
        o, kappa = th[lay.i_o], th[lay.i_o + 1]
        raw = data.tokens * wk  # weights of S, on the tokens trained
        share = raw / np.maximum(raw.sum(1, keepdims=True), 1e-300)
        extra = np.maximum(data.epochs - 1.0, 0.0)
        rbar = (share * extra).sum(1) + 1e-6
        if lay.past is not None and not lay.linear:
            if grad:
                raise ValueError("a fit reads no run past its own ladder: no tangent to fit")
            rows.append(_tangent(o, kappa, rbar, share, data.epochs, lay.past))
        elif not lay.linear:
            rows.append(o + kappa * np.log(rbar))
        if lay.size and not lay.linear:  # times sigmoid(u), u = zeta (log N - m)
            zeta, mid = th[lay.i_z], th[lay.i_z + 1]
            u = zeta * (log_n - mid)
            rows[3] = rows[3] - np.logaddexp(0.0, -u)
            if lay.fall:  # times (1 + N / N_mid)^-eta
                rows[3] = rows[3] - th[lay.i_z + 2] * np.logaddexp(0.0, log_n - mid)
    z = np.stack(rows)
    if lay.linear:  # a factor on L: log L rises by s an extra epoch past the onset kappa
        sp, sig = np.logaddexp(0.0, rbar - kappa), 1.0 / (1.0 + np.exp(kappa - rbar))
        z = z + np.exp(o) * sp
    if lay.forget:  # a factor on L: the same on every term of the logsumexp
        forget, d_forget = _forget(th, lay, data, grad)
        z = z + forget
    if not grad:
        return z, None
    n = len(log_n)
    jac = np.zeros((len(rows), n, lay.n))
    jac[0, :, : lay.ke] = xe
    jac[1, :, lay.ke : lay.i_alpha] = xa
    jac[1, :, lay.i_alpha] = -log_n
    jac[2, :, lay.i_alpha + 1] = 1.0
    jac[2, :, lay.i_alpha + 2] = -np.log(s)
    s_share = dp * wk / s[:, None]  # (runs, K)
    jac[2, :, lay.i_g : lay.i_rho] = -beta * s_share[:, 1:]
    d_rho = -beta * tokens * dphi * wk / s[:, None]
    jac[2, :, lay.i_rho : lay.i_lam] = d_rho.sum(1, keepdims=True) if lay.shared else d_rho
    if lay.recency:
        d_tokens = np.einsum("rsk,rs->rk", data.stage_tokens, m * data.after / tau)
        jac[2, :, lay.i_lam] = -beta * (d_tokens * phi) @ wk / s
    if lay.overfit:
        d_g = share * (extra - (rbar - 1e-6)[:, None])  # d rbar / d g_k
    if lay.linear:
        d_lin = np.zeros((n, lay.n))
        d_lin[:, lay.i_o] = np.exp(o) * sp
        d_lin[:, lay.i_o + 1] = -np.exp(o) * sig
        d_lin[:, lay.i_g : lay.i_rho] = (np.exp(o) * sig)[:, None] * d_g[:, 1:]
        jac += d_lin[None]
    elif lay.overfit:
        jac[3, :, lay.i_o] = 1.0
        jac[3, :, lay.i_o + 1] = np.log(rbar)
        jac[3, :, lay.i_g : lay.i_rho] = kappa * d_g[:, 1:] / rbar[:, None]
    if lay.size:
        rest = 1.0 / (1.0 + np.exp(u))  # 1 - sigmoid(u)
        jac[3, :, lay.i_z] = rest * (log_n - mid)
        jac[3, :, lay.i_z + 1] = -rest * zeta
        if lay.fall:
            eta = th[lay.i_z + 2]
            jac[3, :, lay.i_z + 1] += eta / (1.0 + np.exp(mid - log_n))
            jac[3, :, lay.i_z + 2] = -np.logaddexp(0.0, log_n - mid)
    if lay.forget:
        jac += d_forget[None]
    return z, jac


def _revert(th, lay: _Layout, data: RunData, log_n, grad: bool):
    """phi (runs, K), how far each run's log loss has gone toward that of a model that never
    saw domain k: c_k (1 - exp(-(A_k / tau)^nu)) with A_k the tokens after k's last stage and
    tau = scale e^lam (N / N0)^mu; 1 for a run that never saw k (its loss is the never-seen
    loss, so runs without the domain pin that level; c_k is how much of it forgetting
    reaches). Then the never-seen log loss h0_k + h1_k log(N / N0) + h2_k E_k (runs, K),
    E_k the other domains' extra epochs (`_other_epochs`). With `grad`, both derivatives
    (runs, K, params)."""
    a = _absent(data, lay.scale)
    on = a > 0
    never = data.tokens <= 0
    i, k = lay.i_r, lay.k
    c, h0, h1 = th[i : i + k], th[i + k : i + 2 * k], th[i + 2 * k : i + 3 * k]
    lam, mu, nu = th[i + 3 * k : i + 3 * k + 3]
    h2 = th[i + 3 * k + 3 : i + 4 * k + 3]
    ell = (log_n - lay.log_n0)[:, None]
    v = _other_epochs(data)
    x = np.where(on, np.log(np.where(on, a, 1.0)) - lam - mu * ell, 0.0)
    u = np.where(on, np.exp(np.minimum(nu * x, 50.0)), 0.0)
    gone = -np.expm1(-u)  # 1 - exp(-u)
    phi, level = np.where(never, 1.0, c * gone), h0 + h1 * ell + h2 * v
    if not grad:
        return phi, level, None, None
    d_phi = np.zeros((*a.shape, lay.n))
    ks = np.arange(k)
    d_phi[:, ks, i + ks] = np.where(never, 0.0, gone)
    du = np.where(never, 0.0, c * (1.0 - gone))  # d phi / d u
    j = i + 3 * k
    d_phi[:, :, j] = du * -nu * u
    d_phi[:, :, j + 1] = du * -nu * u * ell
    d_phi[:, :, j + 2] = du * u * x
    d_level = np.zeros_like(d_phi)
    d_level[:, ks, i + k + ks] = 1.0
    d_level[:, ks, i + 2 * k + ks] = ell
    d_level[:, ks, j + 3 + ks] = v
    return phi, level, d_phi, d_level


def _lse(z, jac):
    """logsumexp over the terms (runs,) and its Jacobian (runs, params), by hand: scipy's
    generic one costs more than the rest of the objective."""
    top = z.max(axis=0)
    e = np.exp(z - top)
    total = e.sum(axis=0)
    out = top + np.log(total)
    return out, None if jac is None else np.einsum("kn,knp->np", e / total, jac)


def _log_loss(th, lay, xe, xa, log_n, data, grad=False):
    """log L (runs,) and, with `grad`, d log L / d theta (runs, params). With revert, log L
    moves from the law's value toward the never-seen loss of each domain k by phi_k."""
    z, jac = _terms(th, lay, xe, xa, log_n, data, grad)
    base, d_base = _lse(z, jac)
    if not lay.revert:
        return base, d_base
    phi, level, d_phi, d_level = _revert(th, lay, data, log_n, grad)
    gap = level - base[:, None]  # (runs, K)
    out = base + (phi * gap).sum(1)
    if not grad:
        return out, None
    d = d_base * (1.0 - phi.sum(1))[:, None]
    d += np.einsum("rk,rkp->rp", phi, d_level) + np.einsum("rk,rkp->rp", gap, d_phi)
    return out, d


def _objective(th, lay, xe, xa, log_n, data, log_y, delta):
    if lay.revert:
        log_l, d = _log_loss(th, lay, xe, xa, log_n, data, grad=True)
        r = log_l - log_y
        return float(huber(r, delta).sum()), np.clip(r, -delta, delta) @ d
    # the other laws sum the gradient in this order: their fits (and the held-out contest
    # between laws, whose scores differ by less than the optimiser's path) stay as published
    z, jac = _terms(th, lay, xe, xa, log_n, data, grad=True)
    top = z.max(axis=0)
    e = np.exp(z - top)
    total = e.sum(axis=0)
    r = top + np.log(total) - log_y
    c = np.clip(r, -delta, delta) * (e / total)  # d loss / d z
    return float(huber(r, delta).sum()), np.einsum("kn,knp->p", c, jac)


def _minimise(starts, lay, xe, xa, log_n, data, log_y, delta):
    with threadpool_limits(1):  # BLAS threads only slow down problems this small
        return _minimise_in(starts, lay, xe, xa, log_n, data, log_y, delta)


def _minimise_in(starts, lay, xe, xa, log_n, data, log_y, delta):
    args = (lay, xe, xa, log_n, data, log_y, delta)
    bounds = lay.bounds()
    shift = _centring(lay, xa, log_n, data)
    if lay.revert and len(starts) > 1:
        # the never-seen loss's epochs term is nested: fit without it first, then free it
        # from there, so that the law with it never fits worse than the law without
        i = lay.i_r + 3 * lay.k + 3
        pinned = bounds[:i] + [(0.0, 0.0)] * lay.k + bounds[i + lay.k :]
        first = _best(starts, args, pinned, shift)
        if first.nit >= OPTIONS["maxiter"]:  # a path not yet at its end: which basin the
            # free fit then fell into turned on the order of the table's rows
            first = _best([first.x], args, pinned, shift, first, POLISH_STEPS)
        best = _best([first.x], args, bounds, shift)
    else:
        best = _best(starts, args, bounds, shift)
        if len(starts) == 1:  # a bootstrap refit, from the fit's optimum
            return best
    if best.nit >= OPTIONS["maxiter"]:
        best = _best([best.x], args, bounds, shift, best, POLISH_STEPS)
    return best


def _polish(x, lay, xe, xa, log_n, data, log_y, delta):
    """A fit from the one start `x`, given the polishing steps of a fit from several."""
    args = (lay, xe, xa, log_n, data, log_y, delta)
    shift = _centring(lay, xa, log_n, data)
    with threadpool_limits(1):
        return _best([x], args, lay.bounds(), shift, steps=POLISH_STEPS)


def _centring(lay: _Layout, xa, log_n, data: RunData) -> np.ndarray:
    """E (params, params) with theta = (I + E) phi: the optimiser moves the intercepts of
    a.x - alpha log N and b - beta log S as if log N and log S were measured from their
    medians. Uncentred, log N ~ 14 and log S ~ 16 tie each intercept to its exponent so
    tightly that L-BFGS-B ran out of iterations well short of the optimum."""
    e = np.zeros((lay.n, lay.n))
    v, *_ = np.linalg.lstsq(xa, np.ones(len(xa)), rcond=None)  # a's direction that is 1
    if np.allclose(xa @ v, 1.0):
        e[lay.ke : lay.i_alpha, lay.i_alpha] = np.median(log_n) * v
    e[lay.i_alpha + 1, lay.i_alpha + 2] = np.median(np.log(np.maximum(data.tokens.sum(1), 1.0)))
    return e


def _centred(phi, shift, *args):
    f, g = _objective(phi + shift @ phi, *args)
    return f, g + shift.T @ g


def _best(starts, args, bounds, shift, best=None, steps=OPTIONS["maxiter"]):
    for s in starts:
        r = optimize.minimize(
            _centred,
            s - shift @ s,  # (I + E)^-1 = I - E: E maps exponents to intercepts only
            args=(shift, *args),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,  # the bounded parameters are not moved by E
            options=OPTIONS | {"maxiter": steps},
        )
        r.x = r.x + shift @ r.x
        if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
            best = r
    if best is None:
        raise CodemixError("the data-constrained law could not be fitted from any start")
    return best
