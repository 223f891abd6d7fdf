"""The one choice rule of every probe (``critmass.probes._choice``) against its naive statement, its margin
against brute-force perturbations of the counts, and the rule as the probes apply it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from choice_oracle import TableProbe, band, pick, pick_penalty

from critmass._defaults import CHOICE_RULE
from critmass.probes import KNNProbe, LogisticProbe, RidgeProbe
from critmass.probes._choice import choose, tie_band


def test_band_is_one_standard_error_and_at_least_one_sample():
    assert tie_band(96, 100) == pytest.approx(math.sqrt(100 * 0.96 * 0.04))
    assert tie_band(100, 100) == 1.0 and tie_band(0, 100) == 1.0  # no spread: one sample
    assert tie_band(50, 400) == pytest.approx(math.sqrt(400 * 0.125 * 0.875))
    assert tie_band(92, 280, 0.5) == pytest.approx(0.5 * math.sqrt(280 * (92 / 280) * (188 / 280)))
    assert CHOICE_RULE == {"name": "one-se", "version": 2, "band_se": 1.0}


def test_worked_example():
    # strongest first: 80, 90, 95, 96, 94 of 100; band 1.96 below 96 -> 94.04: the third (95) is chosen,
    # 0.96 samples inside the band; the second is 4.04 samples outside it.
    i, margin = choose([80, 90, 95, 96, 94], [0, 1, 2, 3, 4], 100)
    assert i == 2 and margin == pytest.approx(95 - (96 - math.sqrt(100 * 0.96 * 0.04)))
    # the preference order, not the position, says which is the most regularised
    assert choose([94, 96, 95, 90, 80], [4, 3, 2, 1, 0], 100)[0] == 2
    i, margin = choose([np.nan, 96, np.nan], [0, 1, 2], 100)  # not fitted: never chosen
    assert i == 1 and math.isnan(margin)
    assert math.isnan(choose([7], [0], 10)[1])  # one candidate: nothing chosen, no margin


def test_choice_equals_the_naive_rule_and_the_margin_is_the_distance_to_a_flip():
    """Random count vectors: the choice is the naive rule's; no change of one count by +-1 changes the choice
    when the margin exceeds 1.5 samples (the band moves by at most 1/2 per sample), and some change of one
    count by +-1 does when the margin is below 1."""
    rng = np.random.default_rng(0)
    seen_small = seen_large = 0
    for _ in range(3000):
        n = int(rng.integers(20, 400))
        m = int(rng.integers(2, 7))
        peak = rng.uniform(0.3, 1.0)
        counts = np.clip(np.round(peak * n - np.abs(rng.normal(0, 0.05 * n, m))), 0, n).astype(float)
        pref = list(rng.permutation(m))
        i, margin = choose(counts, pref, n)
        assert i == pick(list(counts), pref, n)
        flips = False
        for j in range(m):
            for d in (-1, 1):
                c = counts.copy()
                c[j] = min(max(c[j] + d, 0), n)
                flips |= pick(list(c), pref, n) != i
        if margin > 1.5:
            assert not flips, (counts, pref, n, margin)
            seen_large += 1
        elif margin < 1:
            assert flips, (counts, pref, n, margin)
            seen_small += 1
    assert seen_small > 100 and seen_large > 100


@pytest.mark.numeric
def test_logistic_and_ridge_choose_by_the_rule(digits, probe_threads):
    X, y, _, _ = digits
    Xf, yf, Xv, yv = X[:300], y[:300], X[300:700], y[300:700]
    subsets = [np.arange(k) for k in (4, 8, 16, 64)]
    for probe in (LogisticProbe(subsets=subsets, device="cpu", path=False),
                  RidgeProbe(subsets=subsets, device="cpu")):
        probe.fit(Xf, yf, X_val=Xv, y_val=yv)
        for i in range(len(subsets)):
            assert probe.regs_[i] == pick_penalty(probe.val_scores_[i], list(probe.alphas_), len(yv))
            assert np.isfinite(probe.choice_margins_[i]) and probe.choice_margins_[i] >= 0
    one = LogisticProbe(alphas=1e-3, device="cpu").fit(Xf, yf)
    assert math.isnan(one.choice_margins_[0])  # one penalty: nothing chosen


def test_knn_prefers_the_first_metric_then_the_largest_k_within_the_band(digits):
    X, y, _, _ = digits
    Xf, yf, Xv, yv = X[:300], y[:300], X[300:700], y[300:700]
    probe = KNNProbe(ks=[1, 3, 5, 10, 20], metric=["cosine", "l2"], subsets=[np.arange(64), np.arange(8)],
                     device="cpu").fit(Xf, yf, X_val=Xv, y_val=yv)
    n = len(yv)
    for i in range(2):
        counts = np.rint(probe.val_scores_[i] * n).ravel()
        n_k = len(probe.ks_)
        pref = [m * n_k + j for m in range(2) for j in range(n_k - 1, -1, -1)]
        chosen = pick(list(counts), pref, n)
        assert probe.metric_[i] == ["cosine", "l2"][chosen // n_k] and probe.k_[i] == probe.ks_[chosen % n_k]
        assert probe.scores_[i] * n >= counts.max() - band(counts.max(), n)
        assert np.isfinite(probe.choice_margins_[i])


# ------------------------------------------------------------------------------- recorded, and what reads it
def _digits_set():
    from sklearn.datasets import load_digits

    from critmass.features import FeatureSet, FeatureSplit

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    return FeatureSet({"train": FeatureSplit(X[:1000], y[:1000]), "test": FeatureSplit(X[1000:], y[1000:])},
                      {"model": "toy", "dataset": "digits", "layer": "pixels"})


def test_rows_carry_the_margin_and_the_config_the_rule(tmp_path):
    import json

    from critmass.probes import RESULT_COLUMNS, run_probes

    res = run_probes(_digits_set(), selectors=["random"], fractions=[0.1, 0.5], seeds=2, device="cpu",
                     out=tmp_path / "run")
    t = res.results
    assert RESULT_COLUMNS[RESULT_COLUMNS.index("penalty_rule") + 1] == "choice_margin"
    assert (t.choice_margin >= 0).all()  # five penalties: every probe chose
    assert json.loads(t.config.iloc[0])["choice_rule"] == CHOICE_RULE
    knn = run_probes(_digits_set(), selectors=["random"], fractions=[0.5], seeds=1, solver="knn", device="cpu")
    assert knn.results.choice_margin.notna().all()
    one = run_probes(_digits_set(), selectors=["random"], fractions=[0.5], seeds=1, alphas=[1e-3], device="cpu")
    assert one.results.choice_margin.isna().all()  # one penalty: nothing chosen


def test_dr_and_report_read_run_directories_from_before_the_rule(tmp_path, capsys):
    """A run written before choice_margin existed (no column, no choice_rule in its config) still goes through
    `critmass dr` and `critmass report`, alone and beside a new run."""
    import json
    import shutil

    import pandas as pd

    from critmass.cli._app import main
    from critmass.probes import run_probes

    new = tmp_path / "new"
    run_probes(_digits_set(), selectors=["random"], fractions=[0.1, 0.5, 1.0], seeds=2, device="cpu", out=new)
    old = tmp_path / "old"
    shutil.copytree(new, old)
    t = pd.read_parquet(old / "results.parquet").drop(columns=["choice_margin"])
    t["config"] = [json.dumps({k: v for k, v in json.loads(c).items() if k != "choice_rule"}) for c in t.config]
    t.to_parquet(old / "results.parquet")
    assert main(["dr", str(old)]) == 0
    assert main(["dr", str(old), str(new)]) == 0
    assert main(["report", str(old), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report").is_dir() and any((tmp_path / "report").iterdir())
    capsys.readouterr()


def test_a_new_rule_version_changes_the_probe_unit_keys_only(tmp_path, monkeypatch):
    from critmass.sweep import _plan, load_config, plan_sweep

    cfg = {"output": str(tmp_path / "run"), "cache": str(tmp_path / "cache"), "device": "cpu",
           "models": [{"spec": "timm:test_resnet", "pretrained": False, "image_size": 32}],
           "datasets": [{"spec": "digits", "max_samples": {"train": 300, "test": 100}}],
           "selectors": ["random", "pca"], "fractions": [0.25, 1.0], "seeds": [0, 1], "solvers": ["ridge"],
           "probes": {"device": "cpu"}}
    (tmp_path / "sweep.yaml").write_text(__import__("yaml").safe_dump(cfg))
    before = {u.key: u.kind for u in plan_sweep(load_config(tmp_path / "sweep.yaml")).units}
    monkeypatch.setattr(_plan, "CHOICE_RULE", {**CHOICE_RULE, "version": CHOICE_RULE["version"] + 1})
    after = {u.key: u.kind for u in plan_sweep(load_config(tmp_path / "sweep.yaml")).units}
    assert {k for k, kind in before.items() if kind != "probe"} == {k for k, kind in after.items() if kind != "probe"}
    probes = {k for k, kind in before.items() if kind == "probe"}
    assert probes and not probes & set(after)  # a resumed sweep refits every probe unit under the new rule


def test_a_one_sample_flip_changes_a_choice_only_where_its_margin_says_so():
    """The failure CI saw across CPUs: two float orders whose validation counts differ by one sample chose
    different penalties, and nothing said the choice was a coin toss. Every probe now carries its margin: a
    one-sample move of any count changes the choice only where that margin is below 1.5 samples."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 4)), np.repeat(np.arange(2), 100)  # val_fraction 0.25: 50 validation rows

    def fit(counts):  # counts of correct validation samples, strongest penalty first
        table = {a: (lambda n_val, c=c: c / n_val) for a, c in zip((10.0, 1.0, 0.1), counts)}
        return TableProbe(sorted(table), table).fit(X, y)

    for counts in ([42, 44, 45], [30, 44, 45], [40, 41, 46], [45, 45, 45], [35, 40, 47]):
        base = fit(counts)
        for j in range(3):
            for d in (-1, 1):
                moved = list(counts)
                moved[j] += d
                other = fit(moved)
                if other.reg_ != base.reg_:
                    # the moved count shifts the other's boundaries by at most 1.5 samples as well
                    assert base.choice_margins_[0] <= 1.5 and other.choice_margins_[0] <= 1.5, (counts, moved)
    assert fit([42, 44, 45]).reg_ != fit([42, 44, 44]).reg_  # a knife edge exists, and its margin shows it
    assert fit([42, 44, 45]).choice_margins_[0] < 1


def test_margins_of_repeated_subsets_and_of_a_refit_are_those_of_the_choice(digits, probe_threads):
    X, y, _, _ = digits
    subsets = [np.arange(8), np.arange(8)[::-1], np.arange(16)]  # the first two are one set: fitted once
    kw = dict(subsets=subsets, device="cpu", random_state=0)
    probe = LogisticProbe(**kw).fit(X[:600], y[:600])
    assert probe.choice_margins_.shape == (3,) and np.isfinite(probe.choice_margins_).all()
    assert probe.choice_margins_[0] == probe.choice_margins_[1] and probe.regs_[0] == probe.regs_[1]
    refit = LogisticProbe(refit=True, **kw).fit(X[:600], y[:600])  # refitted at the chosen penalties
    np.testing.assert_array_equal(refit.regs_, probe.regs_)
    np.testing.assert_array_equal(refit.choice_margins_, probe.choice_margins_)
