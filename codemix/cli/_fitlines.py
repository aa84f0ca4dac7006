"""The lines `codemix fit` prints of a size law's contest: the laws' held-out scores, the
tie and the point it predicts, R*, and the calibrated extrapolation errors."""

from __future__ import annotations

from codemix.analysis.lawnames import LAWS as SIZE_LAWS


def tie_point_words(law, chosen: str) -> str:
    """Which point a law with a tie predicts, in words."""
    from codemix.analysis.datalaw import tie_voters

    if law.tie_point != "median":
        return f"{chosen}'s prediction; --tie-point median: the tie's median"
    voters, left, same = tie_voters(law), "", "add terms to it and held out no better"
    if len(voters) < len(law.tied):
        left = f", leaving out {len(law.tied) - len(voters)} that {same}"
    if not voters:
        return f"{chosen}'s prediction: the laws tied with it {same}"
    return f"the median of {chosen}'s and {len(voters)} tied laws' predictions{left}"


def data_law_lines(law, metric: str) -> list[str]:
    """What fit prints of the choice between the joint and the data-constrained law."""
    import math

    rec = law.selection.get("data_law")
    if not rec:
        return []
    scores = rec["scores"]
    names = [k for k in SIZE_LAWS if k in scores]
    parts = []
    for split in scores.get("joint", {}):
        each = ", ".join(f"{k} {scores[k].get(split, float('nan')):.4g}" for k in names)
        parts.append(f"{split}: {each}")
    if parts:
        lines = [f"held-out RMSE of log {metric}: " + "; ".join(parts) + f" -> {rec['chosen']}"]
        near = rec.get("within_one_se", [])
        if len(near) > 1:
            lines.append(
                f"a tie: within one standard error of {rec['best']}'s held-out error: "
                f"{', '.join(x for x in near if x != rec['best'])} (which of them wins can turn "
                "with a seed; the intervals span their predictions, each with the chosen law's "
                f"band; the point is {tie_point_words(law, rec['chosen'])})"
            )
    else:
        lines = [f"size law {rec['chosen']}, as --law asked"]
    check = rec.get("r_star", {})
    if "per-domain" in check:
        lines.append(
            f"R* one per domain ({check['law']}): held-out RMSE {check['per-domain']:.4g} "
            f"against {check['best_shared']:.4g} with one shared -> {check['chosen']}"
        )
    if law.form == "joint_data":
        p = law.params
        if law.shared_r_star:
            r_star = f"{next(iter(p['R_star'].values())):.3g}"
        else:
            r_star = ", ".join(f"{d} {v:.3g}" for d, v in p["R_star"].items())
        lines.append(
            f"data term: beta {p['beta']:.3f}, R* {r_star}, "
            "domain weights "
            + ", ".join(f"{d} {v:.3g}" for d, v in p["domain_weight"].items())
            + "; unique tokens "
            + ", ".join(f"{d} {v:.3g}" for d, v in law.unique.items())
        )
        if "tau_tokens" in p:
            lines.append(
                f"recency: a stage's tokens fade as exp(-tokens after it / {p['tau_tokens']:.3g})"
            )
        if "overfit_kappa" in p:
            lines.append(
                f"overfitting term: {p['overfit_C']:.3g} x (mean extra epochs)^"
                f"{p['overfit_kappa']:.3g}"
                + (
                    ", along its tangent past the ladder's most epochs ("
                    + ", ".join(f"{d} {v:.3g}" for d, v in law.ladder_epochs.items())
                    + ")"
                    if law.overfit_past == "tangent"
                    else ", as the power past the ladder's most epochs too"
                )
            )
        if "overfit_n_zeta" in p:
            lines.append(
                f"  times sigmoid({p['overfit_n_zeta']:.3g} log(N / {p['overfit_n_mid']:.3g})): "
                "growing with the model's size, to a ceiling"
            )
        if "overfit_fall_eta" in p:
            lines.append(
                f"  times (1 + N / {p['overfit_n_mid']:.3g})^-{p['overfit_fall_eta']:.3g}: "
                "falling again past it"
            )
        if "overfit_slope" in p:
            lines.append(
                f"overfitting term: the log loss rising by {p['overfit_slope']:.3g} an extra "
                f"epoch past {p['overfit_onset']:.3g} (mean extra epochs)"
            )
            most = max(law.ladder_epochs.values(), default=0.0) - 1.0
            if p["overfit_onset"] >= most:
                lines.append(
                    f"warning: no run read past that onset (at most {max(most, 0.0):.3g} extra "
                    "epochs): its slope was not learnt from the ladder; add runs that read the "
                    "domains as often as the target will (repetition-matched proxies)"
                )
        if "forget_nu" in p:
            lines.append(
                "forgetting: the loss times exp(F x (tokens after the domain's last stage / "
                f"{law.token_scale:.3g})^{p['forget_nu']:.3g}), F "
                + ", ".join(
                    f"{d} {v:.3g}" if v > 1e-8 else f"{d} 0 (no run leaves it out)"
                    for d, v in p["forget_weight"].items()
                )
            )
        if "revert_nu" in p:
            lines.append(
                "forgetting: the log loss goes toward that of a model that never saw the domain "
                "by c (1 - exp(-(tokens after its last stage / tau)^nu)), tau "
                f"{p['revert_tau_tokens']:.3g} (N / {p['revert_tau_size']:.3g})^"
                f"{p['revert_mu']:.3g}, nu {p['revert_nu']:.3g}; c, never-seen loss, its "
                "rise an extra epoch of the other domains: "
                + ", ".join(
                    f"{d} {c:.2f}, {p['never_seen_loss'][d]:.3g}, "
                    f"x{math.exp(p.get('never_seen_epoch_slope', {}).get(d, 0.0)):.3g}"
                    if law.ladder_absence.get(d, 1.0) > 0
                    else f"{d} - (no run leaves it out)"
                    for d, c in p["revert_share"].items()
                )
            )
        if law.extrapolation_sd:
            step = math.exp(law.extrapolation_step)
            lines.append(
                f"extrapolation error calibrated on the largest size held out: log-sd "
                f"{law.extrapolation_sd:.3g} per ladder step (x{step:.2f} in parameters), "
                "growing with the distance beyond the largest size"
            )
        elif "extrapolation" in law.selection:
            lines.append(
                "extrapolation error: none needed where the largest size was held out (its runs "
                "fell inside the intervals of the law fitted below it)"
            )
    return lines + repetition_lines(law)


def repetition_lines(law) -> list[str]:
    """How the law's intervals widen where a row reads a domain beyond the ladder's most."""
    rep = law.selection.get("repetition", {})
    if law.repetition_sd:
        # a joint law counts the epochs through the data law fitted beside it
        how = " (epochs counted by the data law beside it)" if law.form == "joint" else ""
        return [
            f"repetition error calibrated on the most-read runs held out ({rep['held_out']}, "
            f"{rep['runs']} runs): log-sd {law.repetition_sd:.3g} per epoch a domain is read "
            f"beyond the ladder's most{how}"
        ]
    if "held_out" in rep:
        return [
            f"repetition error: none needed where the most-read runs were held out "
            f"({rep['held_out']}, {rep['runs']} runs)"
        ]
    if "skipped" in rep:
        return [f"repetition error: not calibrated ({rep['skipped']})"]
    return []
