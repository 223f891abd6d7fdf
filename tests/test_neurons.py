"""Which neurons a ranking picks and whether they are the same (critmass.metrics top_neurons, neuron_stability,
neuron_overlap; `critmass neurons`): on tiny feature sets where a few known neurons carry the labels, against
naive loops and a full enumeration of the chance overlap."""

from __future__ import annotations

import shutil
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from critmass.cli._app import main
from critmass.exceptions import CacheError, ConfigError, DataError
from critmass.metrics import (
    chance_jaccard,
    neuron_overlap,
    neuron_stability,
    top_neurons,
)
from critmass.subsets import make_selector, probe_fit_rows

D = 40
STRONG = [3, 7, 11, 20]
OTHER = [30, 31, 32, 33]


def _split(rng, n, informative, shift, d=D):
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, d))
    X[:, informative] += shift * y[:, None]
    return X.astype(np.float32), y


def _run(root, name, informative, *, shift=3.0, d=D, layer="l", seed=0, save_weights=True, selectors=("fscore",)):
    """A feature entry of dataset ``name`` whose ``informative`` neurons carry the labels, probed into a run."""
    from critmass.features import save_arrays_as_entry
    from critmass.probes import run_probes

    rng = np.random.default_rng(seed)
    entry = save_arrays_as_entry(root / f"entry-{name}", {"train": _split(rng, 300, informative, shift, d),
                                                          "test": _split(rng, 60, informative, shift, d)},
                                 meta={"model": "m", "dataset": name, "layer": layer})
    out = root / f"run-{name}"
    run_probes(entry, selectors=list(selectors), fractions=[0.1, 0.5], seeds=1, solver="ridge", device="cpu", out=out,
               save_weights=save_weights)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("neurons")
    r = {
        "a": _run(root, "a", STRONG, selectors=("fscore", "greedy", "pca")),
        "b": _run(root, "b", STRONG, seed=1),  # another dataset using the same neurons
        "c": _run(root, "c", OTHER, seed=2),  # one using other neurons
        # the labels spread thinly over many neurons: no small set stands out
        "weak": _run(root, "weak", list(range(0, 40, 2)), shift=0.12, seed=3),
        "l2": _run(root, "l2", STRONG, layer="l2", seed=4),
        "narrow": _run(root, "narrow", STRONG, d=30, seed=5),
        "noweights": _run(root, "noweights", STRONG, seed=6, save_weights=False),
        "gone": _run(root, "gone", STRONG, seed=7),
    }
    shutil.rmtree(root / "entry-gone")
    # a sweep-like run directory: two feature sets' probe shards merged into one results table
    sweep = root / "sweep"
    tables = []
    for name in ("a", "c"):
        shutil.copytree(r[name] / "weights", sweep / "shards" / "probe" / name / "weights")
        t = pd.read_parquet(r[name] / "results.parquet")
        t["weights_file"] = [f"shards/probe/{name}/{p}" for p in t["weights_file"]]
        tables.append(t)
    pd.concat(tables, ignore_index=True).to_parquet(sweep / "results.parquet", index=False)
    r["sweep"] = sweep
    return r


def _fit_rows(run):
    """The run's fit rows recomputed here: train minus the default carved 10% validation."""
    from critmass.features import load_features

    fs = load_features(run.parent / f"entry-{run.name[len('run-'):]}")
    y = np.asarray(fs["train"].y)
    rows, _ = probe_fit_rows(y, has_val=False)
    return np.asarray(fs["train"].x, dtype=np.float32)[rows], y[rows]


def test_top_neurons_lists_the_informative_neurons_first_with_the_refit_scores(runs):
    top = top_neurons(runs["a"], "fscore")
    assert len(top) == 20  # default: 32 capped at the largest probed size (0.5 * 40)
    assert list(top["rank"]) == list(range(1, 21))
    assert set(top["neuron"][:4]) == set(STRONG)
    saved = np.load(runs["a"] / "weights" / "fscore-seed0.npz")["indices_20"]
    np.testing.assert_array_equal(top["neuron"], saved)
    X, y = _fit_rows(runs["a"])
    np.testing.assert_allclose(top["score"], make_selector("fscore").fit(X, y).scores_[saved])
    assert top["score"].is_monotonic_decreasing
    # greedy skips redundancy: its first pick is informative, later ones need not be (the 4 say the same)
    assert top_neurons(runs["a"], "greedy", 4)["neuron"].iloc[0] in STRONG
    # k between probed sizes: the first k of a larger nested subset; no scores: no features read
    bare = top_neurons(runs["gone"], "fscore", 6, scores=False)
    assert len(bare) == 6 and bare["score"].isna().all()


def test_stability_is_the_naive_bootstrap_loop(runs):
    got = neuron_stability(runs["a"], "fscore", [4, 8], n_boot=6, random_state=np.random.default_rng(5))
    X, y = _fit_rows(runs["a"])
    saved = np.load(runs["a"] / "weights" / "fscore-seed0.npz")["indices_20"]
    rng = np.random.default_rng(5)
    orders = []
    for _ in range(6):
        b = rng.integers(0, len(y), len(y))
        orders.append(make_selector("fscore").fit(X[b], y[b]).order_)

    def jac(a, b):
        return len(set(a) & set(b)) / len(set(a) | set(b))

    for k, row in zip((4, 8), got.itertuples()):
        to_run = [jac(o[:k], saved[:k]) for o in orders]
        pairs = [jac(p[:k], q[:k]) for p, q in combinations(orders, 2)]
        assert row.k == k and row.n_boot == 6 and row.n_fit == len(y)
        np.testing.assert_allclose([row.jaccard, row.jaccard_low, row.jaccard_high],
                                   [np.mean(to_run), *np.quantile(to_run, [0.025, 0.975])])
        np.testing.assert_allclose([row.pairwise, row.pairwise_low, row.pairwise_high],
                                   [np.mean(pairs), *np.quantile(pairs, [0.025, 0.975])])
        assert row.n_core == len(set(saved[:k]).intersection(*(set(o[:k]) for o in orders)))
        assert row.chance == pytest.approx(chance_jaccard(k, D))
    # an int seed: reproducible
    a = neuron_stability(runs["a"], "fscore", 4, n_boot=3, random_state=1)
    pd.testing.assert_frame_equal(a, neuron_stability(runs["a"], "fscore", 4, n_boot=3, random_state=1))


def test_stability_is_high_for_a_strong_set_and_lower_for_a_diffuse_one(runs):
    strong = neuron_stability(runs["a"], "fscore", 4, n_boot=10).iloc[0]
    weak = neuron_stability(runs["weak"], "fscore", 4, n_boot=10).iloc[0]
    assert strong.jaccard == 1.0 and strong.pairwise == 1.0 and strong.n_core == 4
    assert weak.jaccard < 0.6 and weak.pairwise < 0.6, (weak.jaccard, weak.pairwise)
    assert weak.jaccard > weak.chance  # still better than random neurons


def test_chance_jaccard_is_the_mean_over_every_pair_of_subsets():
    for d, k in ((6, 2), (7, 3), (5, 5), (4, 1)):
        subsets = [set(s) for s in combinations(range(d), k)]
        naive = np.mean([len(a & b) / len(a | b) for a in subsets for b in subsets])
        assert chance_jaccard(k, d) == pytest.approx(naive)
    with pytest.raises(ConfigError, match=r"k must be in \[1, 4\]"):
        chance_jaccard(5, 4)


def test_overlap_across_datasets(runs):
    ov = neuron_overlap([runs["a"], runs["b"], runs["c"]], "fscore", [4, 20])
    assert len(ov) == 6
    np.testing.assert_allclose(ov["chance"], [chance_jaccard(k, D) for k in ov["k"]])
    at4 = ov[ov["k"] == 4].set_index(["dataset_a", "dataset_b"])
    assert at4.loc[("a", "b"), "jaccard"] == 1.0 and at4.loc[("a", "b"), "n_shared"] == 4
    # disjoint informative neurons: no more overlap than two random sets
    assert at4.loc[("a", "c"), "jaccard"] <= at4.loc[("a", "c"), "chance"]
    # one sweep-like run directory holding two datasets: compared with each other; a run given twice counts once
    sweep = neuron_overlap([runs["sweep"], runs["sweep"]], "fscore", 4)
    assert list(zip(sweep["dataset_a"], sweep["dataset_b"])) == [("a", "c")]
    assert set(top_neurons(runs["sweep"], "fscore", 4, scores=False)["dataset"]) == {"a", "c"}
    # the entry is gone: the overlap needs only the saved indices
    assert len(neuron_overlap([runs["a"], runs["gone"]], "fscore", 4)) == 1


def test_cli_prints_and_writes(runs, tmp_path, capsys):
    out = tmp_path / "n.csv"
    code = main(["neurons", str(runs["a"]), str(runs["b"]), "--selector", "fscore", "--k", "4,8", "--n-boot", "3",
                 "--top", "4", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "Top fscore neurons" in text and "Stability over 3 bootstrap resamples" in text and "Overlap" in text
    first = next(line for line in text.splitlines() if "m / a / l" in line)
    assert {int(tok.split()[0]) for tok in first.split(": ")[-1].split(", ")[:4]} == set(STRONG)
    top = pd.read_csv(out)
    assert len(top) == 16 and set(top["dataset"]) == {"a", "b"}  # the top 8 of each run
    assert len(pd.read_csv(tmp_path / "n.stability.csv")) == 4
    assert len(pd.read_csv(tmp_path / "n.overlap.csv")) == 2
    code = main(["neurons", str(runs["a"]), "--selector", "greedy", "--n-boot", "0",
                 "--out", str(tmp_path / "g.parquet")])
    text = capsys.readouterr().out
    assert code == 0 and "Stability" not in text and "Overlap" not in text
    assert len(pd.read_parquet(tmp_path / "g.parquet")) == 20


@pytest.mark.parametrize("call, error, match", [
    (lambda r: top_neurons(r["a"], "pca"), ConfigError, "is a projection"),
    (lambda r: neuron_stability(r["a"], "random", 4), ConfigError, "ignores the data"),
    (lambda r: top_neurons(r["b"], "greedy"), DataError, "has no 'greedy' subsets; it has: all, fscore"),
    (lambda r: top_neurons(r["noweights"], "fscore"), DataError, "without --no-weights"),
    (lambda r: top_neurons(r["a"], "fscore", 30), ConfigError, "at most 20 neurons"),
    (lambda r: neuron_stability(r["a"], "fscore", 4, n_boot=0), ConfigError, "n_boot must be a positive"),
    (lambda r: neuron_stability(r["gone"], "fscore", 4), CacheError,
     "entry-gone' of run .* is not there; the selector's scores and the bootstrap stability"),
    (lambda r: top_neurons(r["gone"], "fscore"), CacheError, "--no-scores"),
    (lambda r: neuron_overlap([r["a"], r["l2"]], "fscore", 4), DataError, "share none .* m / l2 / l"),
    (lambda r: neuron_overlap([r["a"], r["narrow"]], "fscore", 4), DataError, "differ in width"),
    (lambda r: neuron_overlap(r["a"], "fscore", 4), DataError, "share none"),
])
def test_one_line_errors(runs, call, error, match):
    with pytest.raises(error, match=match) as info:
        call(runs)
    assert "\n" not in str(info.value)


def test_cli_errors_are_one_line(runs, capsys):
    for args, match in (([str(runs["a"]), "--selector", "pca"], "is a projection"),
                        ([str(runs["a"]), str(runs["l2"]), "--selector", "fscore", "--n-boot", "0"], "share none"),
                        ([str(runs["gone"]), "--selector", "fscore"], "is not there"),
                        ([str(runs["a"]), "--out", "x.txt"], "--out must end in .csv or .parquet")):
        assert main(["neurons", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("critmass: error:") and match in err and "\n" not in err
