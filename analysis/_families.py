"""Model families for response surfaces from mixture weights to one metric.

Each family fits on (weights W, metric y), predicts a mean and a prediction interval, and
round-trips through a plain dict (`to_dict` / `family_from_dict`) so FIT.json can rebuild
predictions without the original table.

- `linear`:    Scheffe first-degree polynomial, y = sum_j b_j r_j (statsmodels OLS).
- `quadratic`: Scheffe second-degree, + sum_{j<k} b_jk r_j r_k (statsmodels OLS).
- `exp`:       Data Mixing Laws, y = c + s exp(sum_j t_j r_j), s = +-1 (scipy, soft-L1 loss).
               DML's k is absorbed into t: with sum_j r_j = 1, k exp(t.r) = exp((t + log k).r).
- `exp_log`:   as `exp` with log(r_j + eps) terms in the exponent too, i.e. a power law in
               each share times DML's exponential: y = c + s exp(t.r) prod_j (r_j + eps)^u_j.
- `gp`:        Gaussian process (ARD squared-exponential + noise) on log(r_j + eps), through
               scikit-learn's GaussianProcessRegressor.
- `gp_exp`:    `exp_log` as the mean, a Gaussian process on its residuals.

With several stages' mixtures side by side (`groups`, see `analysis.layout`), the polynomial
and exponential terms use the Scheffe design of all groups (one column per later group
dropped), and the Gaussian processes see every column.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats

from codemix.analysis.intervals import central
from codemix.analysis.layout import as_groups, is_free, linear_design, quadratic_design

LOG_EPS = 1e-3
FAMILIES = ("linear", "quadratic", "exp", "exp_log", "gp", "gp_exp")


class _Family:
    """What every family shares: the mixture groups and their round trip through a dict."""

    name = ""

    def __init__(self, groups: tuple[int, ...] | None = None):
        self.groups = None if groups is None else tuple(groups)

    def _centre(self, d: int) -> np.ndarray:
        g = self.groups or (d,)
        return np.concatenate([np.full(k, 1.0 / k) for k in g])[None, :]

    def _groups_dict(self) -> dict:
        return {} if self.groups is None else {"groups": list(self.groups)}

    def _load_groups(self, d: dict) -> None:
        self.groups = as_groups(d.get("groups"))

    def _logs(self, w: np.ndarray) -> np.ndarray:
        """log(w + eps) of the mixture weights; free stage variables as they are."""
        free = is_free(self.groups, w.shape[1])
        return np.where(free, w, np.log(np.clip(w, 0, None) + LOG_EPS))


class _Linear(_Family):
    """Scheffe polynomial through statsmodels OLS; intervals from its covariance."""

    name = "linear"

    def design(self, w: np.ndarray) -> np.ndarray:
        return linear_design(w, self.groups)

    def n_params(self, d: int) -> int:
        return self.design(self._centre(d)).shape[1]

    def fit(self, w: np.ndarray, y: np.ndarray):
        import statsmodels.api as sm

        x = self.design(w)
        if x.shape[0] <= x.shape[1] + 1:
            raise ValueError(f"{self.name}: {x.shape[1]} terms need more than {x.shape[0]} runs")
        res = sm.OLS(y, x).fit()
        self.params = np.asarray(res.params)
        self.cov = np.asarray(res.cov_params())
        self.scale = float(res.scale)
        self.df_resid = float(res.df_resid)
        self._res = res
        return self

    def predict(self, w: np.ndarray) -> np.ndarray:
        return self.design(w) @ self.params

    def interval(self, w: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = self.design(w)
        mean = x @ self.params
        se = np.sqrt(np.einsum("ij,jk,ik->i", x, self.cov, x) + self.scale)
        q = stats.t.ppf(0.5 + level / 2, self.df_resid)
        return mean, mean - q * se, mean + q * se

    def to_dict(self) -> dict:
        return {
            "family": self.name,
            **self._groups_dict(),
            "params": self.params.tolist(),
            "cov_params": self.cov.tolist(),
            "scale": self.scale,
            "df_resid": self.df_resid,
        }

    def load(self, d: dict):
        self._load_groups(d)
        self.params = np.asarray(d["params"], float)
        self.cov = np.asarray(d["cov_params"], float)
        self.scale = float(d["scale"])
        self.df_resid = float(d["df_resid"])
        return self


class _Quadratic(_Linear):
    name = "quadratic"

    def design(self, w: np.ndarray) -> np.ndarray:
        return quadratic_design(w, self.groups)


class _Exp(_Family):
    """y = c + s exp(F(w) @ t), fitted with a soft-L1 loss; delta-method intervals."""

    name = "exp"

    def features(self, w: np.ndarray) -> np.ndarray:
        return linear_design(w, self.groups)

    def n_params(self, d: int) -> int:
        return 1 + self.features(self._centre(d)).shape[1]

    def _f(self, p: np.ndarray, f: np.ndarray) -> np.ndarray:
        return p[0] + self.sign * np.exp(np.clip(f @ p[1:], -50, 50))

    def _jac(self, p: np.ndarray, f: np.ndarray) -> np.ndarray:
        e = self.sign * np.exp(np.clip(f @ p[1:], -50, 50))
        return np.hstack([np.ones((len(f), 1)), e[:, None] * f])

    def fit(self, w: np.ndarray, y: np.ndarray):
        f = self.features(w)
        n, m = f.shape
        if n <= m + 2:
            raise ValueError(f"{self.name}: {m + 1} parameters need more than {n} runs")
        sd = float(np.std(y)) or 1.0
        starts = []
        for sign in (1.0, -1.0):
            for q in (0.1, 0.5, 2.0):
                c0 = (y.min() - q * sd) if sign > 0 else (y.max() + q * sd)
                t0 = np.linalg.lstsq(f, np.log(sign * (y - c0)), rcond=None)[0]
                starts.append((sign, np.r_[c0, t0]))
        # one robust scale for all starts, from the best log-linear start
        self.sign = starts[0][0]
        r0 = [np.median(np.abs(y - self._with_sign(s, p, f))) for s, p in starts]
        f_scale = max(1.4826 * min(r0), 1e-6 * sd)
        # least squares from the 3 starts of lowest robust cost
        f_cost = [
            np.sum(f_scale**2 * (np.sqrt(1 + ((y - self._with_sign(s, p, f)) / f_scale) ** 2) - 1))
            for s, p in starts
        ]
        starts = [starts[i] for i in np.argsort(f_cost)[:3]]
        best = None
        for sign, p0 in starts:
            self.sign = sign
            r = optimize.least_squares(
                lambda p: self._f(p, f) - y,
                p0,
                jac=lambda p: self._jac(p, f),
                loss="soft_l1",
                f_scale=f_scale,
                x_scale="jac",
                max_nfev=2000,
            )
            if best is None or r.cost < best[1].cost:
                best = (sign, r)
        self.sign, res = best[0], best[1]
        self.params = res.x
        resid = self._f(self.params, f) - y
        self.df_resid = float(max(n - len(self.params), 1))
        self.scale = float(resid @ resid / self.df_resid)
        j = self._jac(self.params, f)
        self.cov = self.scale * np.linalg.pinv(j.T @ j)
        return self

    def _with_sign(self, sign: float, p: np.ndarray, f: np.ndarray) -> np.ndarray:
        return p[0] + sign * np.exp(np.clip(f @ p[1:], -50, 50))

    def predict(self, w: np.ndarray) -> np.ndarray:
        return self._f(self.params, self.features(w))

    def interval(self, w: np.ndarray, level: float):
        f = self.features(w)
        mean = self._f(self.params, f)
        j = self._jac(self.params, f)
        se = np.sqrt(np.einsum("ij,jk,ik->i", j, self.cov, j) + self.scale)
        q = stats.t.ppf(0.5 + level / 2, self.df_resid)
        return mean, mean - q * se, mean + q * se

    def to_dict(self) -> dict:
        return {
            "family": self.name,
            **self._groups_dict(),
            "sign": self.sign,
            "params": self.params.tolist(),
            "param_names": ["c"] + [f"t{j}" for j in range(len(self.params) - 1)],
            "cov_params": self.cov.tolist(),
            "scale": self.scale,
            "df_resid": self.df_resid,
        }

    def load(self, d: dict):
        self._load_groups(d)
        self.sign = float(d["sign"])
        self.params = np.asarray(d["params"], float)
        self.cov = np.asarray(d["cov_params"], float)
        self.scale = float(d["scale"])
        self.df_resid = float(d["df_resid"])
        return self


class _ExpLog(_Exp):
    name = "exp_log"

    def features(self, w: np.ndarray) -> np.ndarray:
        keep = ~is_free(self.groups, w.shape[1])  # free variables enter through the linear terms
        return np.hstack([linear_design(w, self.groups), self._logs(w)[:, keep]])


def _gp_kernel(d: int, ls, sf: float, sn: float, fixed: bool = False):
    """sf^2 * ARD squared-exponential(ls) + white noise sn^2 (scikit-learn kernels)."""
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    def bounds(lo: float, hi: float):
        return "fixed" if fixed else (np.exp(lo), np.exp(hi))

    ls = np.broadcast_to(np.asarray(ls, float), (d,)).copy()
    return ConstantKernel(sf**2, bounds(-8, 8)) * RBF(ls, bounds(-3, 7)) + WhiteKernel(
        sn**2, bounds(-14, 2)
    )


def _gp_regressor(kernel, optimise: bool):
    from sklearn.gaussian_process import GaussianProcessRegressor

    return GaussianProcessRegressor(
        kernel, alpha=1e-8, optimizer="fmin_l_bfgs_b" if optimise else None, copy_X_train=False
    )


class _GP(_Family):
    """GP on standardised log(r + eps); the target is standardised too. scikit-learn's
    GaussianProcessRegressor, hyperparameters by marginal likelihood from two starts."""

    name = "gp"

    def n_params(self, d: int) -> int:
        return d + 2

    def _feat(self, w: np.ndarray) -> np.ndarray:
        return self._logs(w)

    def _mean(self, w: np.ndarray) -> np.ndarray:
        return np.zeros(len(w))

    def fit(self, w: np.ndarray, y: np.ndarray):
        r = y - self._mean(w)
        f = self._feat(w)
        self.f_mu, self.f_sd = f.mean(0), f.std(0) + 1e-12
        self.y_mu, self.y_sd = float(r.mean()), float(r.std()) or 1.0
        x = (f - self.f_mu) / self.f_sd
        t = (r - self.y_mu) / self.y_sd
        d = x.shape[1]
        fits = []
        for sn0 in (0.1, 0.5):  # a low- and a high-noise start: the likelihood can be bimodal
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # hyperparameters at their bounds
                g = _gp_regressor(_gp_kernel(d, np.sqrt(d), 1.0, sn0), True).fit(x, t)
            fits.append(g)
        self.gp = max(fits, key=lambda g: g.log_marginal_likelihood_value_)
        return self

    @property
    def ls(self) -> np.ndarray:
        return np.atleast_1d(self.gp.kernel_.k1.k2.length_scale).astype(float)

    @property
    def sf(self) -> float:
        return float(np.sqrt(self.gp.kernel_.k1.k1.constant_value))

    @property
    def sn(self) -> float:
        return float(np.sqrt(self.gp.kernel_.k2.noise_level))

    def _z(self, w: np.ndarray) -> np.ndarray:
        return (self._feat(w) - self.f_mu) / self.f_sd

    def _gp_predict(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, s = self.gp.predict(self._z(w), return_std=True)  # s includes the white noise
        return self._mean(w) + m * self.y_sd + self.y_mu, s * self.y_sd

    def latent(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint posterior mean and covariance of the noise-free surface at mixtures `w`."""
        m, cov = self.gp.predict(self._z(w), return_cov=True)
        cov = cov - self.sn**2 * np.eye(len(w))
        return self._mean(w) + m * self.y_sd + self.y_mu, cov * self.y_sd**2

    def predict(self, w: np.ndarray) -> np.ndarray:
        return self._gp_predict(w)[0]

    def interval(self, w: np.ndarray, level: float):
        mean, sd = self._gp_predict(w)
        q = stats.norm.ppf(0.5 + level / 2)
        return mean, mean - q * sd, mean + q * sd

    def to_dict(self) -> dict:
        return {
            "family": self.name,
            **self._groups_dict(),
            "feature": f"log(w + {LOG_EPS})",
            "f_mu": self.f_mu.tolist(),
            "f_sd": self.f_sd.tolist(),
            "y_mu": self.y_mu,
            "y_sd": self.y_sd,
            "length_scales": self.ls.tolist(),
            "signal_sd": self.sf,
            "noise_sd": self.sn,
            "train_x": np.asarray(self.gp.X_train_).tolist(),
            "train_t": np.asarray(self.gp.y_train_).tolist(),
        }

    def load(self, d: dict):
        self._load_groups(d)
        self.f_mu = np.asarray(d["f_mu"], float)
        self.f_sd = np.asarray(d["f_sd"], float)
        self.y_mu, self.y_sd = float(d["y_mu"]), float(d["y_sd"])
        x = np.asarray(d["train_x"], float)
        ls, sf, sn = d["length_scales"], float(d["signal_sd"]), float(d["noise_sd"])
        kernel = _gp_kernel(x.shape[1], ls, sf, sn, fixed=True)
        self.gp = _gp_regressor(kernel, False).fit(x, np.asarray(d["train_t"], float))
        return self


class _GPExp(_GP):
    """`exp_log` mean plus a GP on its residuals."""

    name = "gp_exp"

    def n_params(self, d: int) -> int:
        return _ExpLog(self.groups).n_params(d) + d + 2

    def _mean(self, w: np.ndarray) -> np.ndarray:
        return self.base.predict(w)

    def fit(self, w: np.ndarray, y: np.ndarray):
        self.base = _ExpLog(self.groups).fit(w, y)
        return super().fit(w, y)

    def to_dict(self) -> dict:
        return super().to_dict() | {"mean": self.base.to_dict()}

    def load(self, d: dict):
        self.base = _ExpLog().load(d["mean"])
        return super().load(d)


_CLASSES = {c.name: c for c in (_Linear, _Quadratic, _Exp, _ExpLog, _GP, _GPExp)}


def make_family(name: str, groups: tuple[int, ...] | None = None):
    """A fresh, unfitted model of family `name` (mixture `groups`: see `analysis.layout`)."""
    return _CLASSES[name](groups)


def family_from_dict(d: dict):
    """Rebuild a fitted model from its `to_dict()`."""
    return _CLASSES[d["family"]]().load(d)


class Stack:
    """Convex combination of fitted families; intervals from out-of-fold residual quantiles.

    The weights minimise the out-of-fold squared error of the combination; the interval at
    level q is mean + [quantile (1-q)/2, quantile (1+q)/2] of the stack's out-of-fold
    residuals (split-conformal style), stored as a sorted residual sample.
    """

    name = "stack"

    def __init__(self, members: list | None = None, weights=None, residuals=None):
        self.members = members or []
        self.weights = np.asarray(weights if weights is not None else [], float)
        self.residuals = np.sort(np.asarray(residuals if residuals is not None else [], float))

    def predict(self, w: np.ndarray) -> np.ndarray:
        return sum(a * m.predict(w) for a, m in zip(self.weights, self.members, strict=True))

    def interval(self, w: np.ndarray, level: float):
        mean = self.predict(w)
        lo, hi = central(self.residuals, level)
        return mean, mean + lo, mean + hi

    def to_dict(self) -> dict:
        return {
            "family": self.name,
            "weights": self.weights.tolist(),
            "members": [m.to_dict() for m in self.members],
            "oof_residuals": self.residuals.tolist(),
        }

    def load(self, d: dict):
        self.members = [family_from_dict(m) for m in d["members"]]
        self.weights = np.asarray(d["weights"], float)
        self.residuals = np.sort(np.asarray(d["oof_residuals"], float))
        return self


_CLASSES["stack"] = Stack


def stack_weights(preds: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 minimising |preds @ a - y|^2 (preds: runs x models)."""
    k = preds.shape[1]
    r = optimize.minimize(
        lambda a: np.mean((preds @ a - y) ** 2),
        np.full(k, 1.0 / k),
        jac=lambda a: 2 * preds.T @ (preds @ a - y) / len(y),
        bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0}],
        method="SLSQP",
    )
    a = np.clip(r.x, 0, None)
    return a / a.sum()
