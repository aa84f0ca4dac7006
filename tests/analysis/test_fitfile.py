"""FIT.json round trips and refuses what it cannot read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codemix.analysis.fitfile import (
    FitFile,
    atomic_write_text,
    combine_fits,
    load_fit,
    save_fit,
)
from codemix.analysis.surfaces import SurfaceConfig, fit_surface
from codemix.core.errors import CodemixError


def test_round_trip_keeps_predictions(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.dirichlet([1, 1, 1], 40)
    y = 2 + np.exp(w @ [1.0, -0.5, 0.2]) + 0.01 * rng.standard_normal(40)
    s = fit_surface(w, y, "loss", ("a", "b", "c"), SurfaceConfig(families=("linear", "exp")))
    fit = FitFile(("a", "b", "c"), {"loss": s}, data={"n_runs": 40})
    path = tmp_path / "FIT.json"
    save_fit(fit, path)
    back = load_fit(path)
    assert back.metrics == ["loss"] and back.surfaces["loss"].family == s.family
    np.testing.assert_allclose(back.surfaces["loss"].interval(w[:5]), s.interval(w[:5]))
    assert json.loads(path.read_text())["surfaces"]["loss"]["cv"]


def test_size_column_vocabulary_and_code_domains_round_trip(tmp_path):
    fit = FitFile(
        ("mix.init.text", "mix.init.code"),
        {},
        size_col="non_embedding_params",
        vocab_size=4096,
        code_domains=("code",),
    )
    path = tmp_path / "FIT.json"
    save_fit(fit, path)
    d = json.loads(path.read_text())
    assert (d["size_col"], d["vocab_size"], d["code_domains"]) == (
        "non_embedding_params",
        4096,
        ["code"],
    )
    back = load_fit(path)
    assert (back.size_col, back.vocab_size, back.code_domains) == (
        "non_embedding_params",
        4096,
        ("code",),
    )
    # a FIT.json written before vocab_size and code_domains were recorded
    for key in ("vocab_size", "code_domains"):
        del d[key]
    path.write_text(json.dumps(d))
    old = load_fit(path)
    assert (old.size_col, old.vocab_size, old.code_domains) == ("non_embedding_params", None, None)


def test_rejects_other_files_and_newer_versions(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(CodemixError, match="not a codemix fit file"):
        load_fit(p)
    p.write_text(json.dumps({"format": "codemix.fit", "version": 99}))
    with pytest.raises(CodemixError, match="version 99"):
        load_fit(p)
    with pytest.raises(CodemixError, match="does not exist"):
        load_fit(tmp_path / "missing.json")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    p = tmp_path / "out.txt"
    atomic_write_text(p, "one")
    assert p.read_text() == "one"
    assert [q.name for q in tmp_path.iterdir()] == ["out.txt"]
    with pytest.raises(CodemixError, match="does not exist"):
        atomic_write_text(tmp_path / "no" / "out.txt", "x")


def test_an_interrupted_save_keeps_the_old_fit(tmp_path, monkeypatch):
    import os

    rng = np.random.default_rng(1)
    w = rng.dirichlet([1, 1, 1], 30)
    y = 2 + w @ [1.0, -0.5, 0.2] + 0.01 * rng.standard_normal(30)
    s = fit_surface(w, y, "loss", ("a", "b", "c"), SurfaceConfig(families=("linear",)))
    path = tmp_path / "FIT.json"
    save_fit(FitFile(("a", "b", "c"), {"loss": s}, data={"n_runs": 30}), path)
    before = path.read_text()

    def killed(src, dst):  # the writer dies between writing the new file and the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_fit(FitFile(("a", "b", "c"), {"loss": s}, data={"n_runs": 29}), path)
    assert path.read_text() == before
    assert [q.name for q in tmp_path.iterdir()] == ["FIT.json"]


def _surface_fit(metric: str, w: np.ndarray, **data) -> FitFile:
    y = 2 + np.exp(w @ [1.0, -0.5, 0.2])
    s = fit_surface(w, y, metric, ("a", "b", "c"), SurfaceConfig(families=("linear",)))
    summary = {"n_runs": len(w), "weights_min": w.min(0).tolist(), "weights_max": w.max(0).tolist()}
    return FitFile(("a", "b", "c"), {metric: s}, data=summary | data, vocab_size=4096)


def test_combine_takes_each_metric_from_its_fit_and_the_common_range(tmp_path):
    rng = np.random.default_rng(0)
    w1, w2 = rng.dirichlet([1, 1, 1], 30), rng.dirichlet([2, 2, 2], 20)
    text, code = _surface_fit("bpb.text", w1), _surface_fit("bpb.code", w2)
    both = combine_fits({"text.json": text, "code.json": code})
    assert both.metrics == ["bpb.text", "bpb.code"] and both.vocab_size == 4096
    np.testing.assert_allclose(
        both.surfaces["bpb.code"].interval(w1[:3]), code.surfaces["bpb.code"].interval(w1[:3])
    )
    lo, hi = np.maximum(w1.min(0), w2.min(0)), np.minimum(w1.max(0), w2.max(0))
    np.testing.assert_allclose(both.data["weights_min"], lo, atol=1e-6)
    np.testing.assert_allclose(both.data["weights_max"], hi, atol=1e-6)
    assert both.data["n_runs"] == 50
    assert both.data["combined"]["code.json"]["metrics"] == ["bpb.code"]
    save_fit(both, tmp_path / "FIT.json")
    assert load_fit(tmp_path / "FIT.json").metrics == ["bpb.text", "bpb.code"]


def test_combine_refuses_what_does_not_fit_together():
    rng = np.random.default_rng(1)
    w = rng.dirichlet([1, 1, 1], 20)
    text, code = _surface_fit("bpb.text", w), _surface_fit("bpb.code", w)
    with pytest.raises(CodemixError, match="two or more"):
        combine_fits({"text.json": text})
    with pytest.raises(CodemixError, match="'bpb.text' is in both a.json and b.json"):
        combine_fits({"a.json": text, "b.json": _surface_fit("bpb.text", w)})
    other = FitFile(("x", "b", "c"), dict(code.surfaces), data=code.data)
    with pytest.raises(CodemixError, match="differ in mixture_cols"):
        combine_fits({"text.json": text, "other.json": other})
    wide = FitFile(("a", "b", "c"), dict(code.surfaces), data=code.data, vocab_size=50304)
    with pytest.raises(CodemixError, match="different vocabularies"):
        combine_fits({"text.json": text, "wide.json": wide})
    apart = _surface_fit("bpb.code", w, weights_min=[0.9, 0.0, 0.0], weights_max=[1.0, 0.1, 0.1])
    with pytest.raises(CodemixError, match="no common range"):
        combine_fits(
            {"text.json": _surface_fit("bpb.text", w, weights_max=[0.5, 1, 1]), "c": apart}
        )
