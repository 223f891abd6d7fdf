"""The neuron rankings (variance, fscore, probe-weight, greedy, attribution, cluster) against independent
computations: scikit-learn, brute-force refits and scipy's tree cuts; and that supervised selectors see only
the fit rows' labels, everywhere a selector is used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from critmass.exceptions import ConfigError
from critmass.subsets import label_stats, make_selector, plan_subsets, size_fractions, supervised_selectors
from critmass.subsets._ranked import DEFAULT_RIDGE, group_lasso


def _data(n=400, d=10, C=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    means = rng.normal(size=(C, d)) * np.linspace(1.5, 0.1, d)  # neurons differ in how much they say
    mix = np.eye(d) + 0.3 * rng.normal(size=(d, d))  # correlated neurons
    X = (means[y] + rng.normal(size=(n, d))) @ mix + rng.normal(size=d)
    return X.astype(np.float64), y


def _standardised(X, y):
    """The statistics by hand: standardised rows and centred one-hot labels (population std, as the probes)."""
    Z = (X - X.mean(0)) / X.std(0)
    Y = np.eye(y.max() + 1)[y]
    return Z, Y - Y.mean(0)


def _ridge_min(Z, Y, cols, lam):
    """min_W ||Y - Z_S W||^2 / n + lam ||W||^2 by a direct solve (the objective greedy and attribution use)."""
    n = len(Z)
    if len(cols) == 0:
        return float((Y ** 2).sum() / n)
    Zs = Z[:, cols]
    W = np.linalg.solve(Zs.T @ Zs / n + lam * np.eye(len(cols)), Zs.T @ Y / n)
    return float(((Y - Zs @ W) ** 2).sum() / n + lam * (W ** 2).sum())


def test_supervised_selectors_are_registered():
    assert set(supervised_selectors()) == {"fscore", "probe-weight", "greedy", "attribution"}
    for name in ("variance", "cluster", *supervised_selectors()):
        assert type(make_selector(name)).deterministic


@pytest.mark.numeric
def test_label_stats_match_the_definitions():
    X, y = _data()
    st = label_stats(X, y)
    Z, Yc = _standardised(X, y)
    np.testing.assert_allclose(st["G"], Z.T @ Z / len(Z), atol=1e-10)
    np.testing.assert_allclose(st["B"], Z.T @ Yc / len(Z), atol=1e-10)


@pytest.mark.numeric
def test_variance_and_fscore_match_numpy_and_sklearn():
    from sklearn.feature_selection import f_classif

    X, y = _data()
    v = make_selector("variance").fit(X)
    np.testing.assert_allclose(v.scores_, X.var(0), rtol=1e-10)
    assert -np.diff(np.sort(X.var(0))[::-1]).min() > 1e-6 * X.var(0).max()  # no float tie in the order
    np.testing.assert_array_equal(v.order_, np.argsort(-X.var(0), kind="stable"))
    f = make_selector("fscore").fit(X, y)
    ref, _ = f_classif(X, y)
    np.testing.assert_allclose(f.scores_, ref, rtol=1e-8)
    gaps = -np.diff(np.sort(ref)[::-1])
    assert gaps.min() > 1e-6 * ref.max()  # the ranking is well separated: same order, not a float tie
    np.testing.assert_array_equal(f.order_, np.argsort(-ref, kind="stable"))


@pytest.mark.numeric
@pytest.mark.numeric
def test_fscore_ranks_a_perfectly_separating_neuron_first():
    """A neuron constant within each class has F = inf (scikit-learn's f_classif says so too): the best, not
    the last, and its within-class spread is summed around the class means (no cancellation)."""
    from sklearn.feature_selection import f_classif

    rng = np.random.default_rng(0)
    y = np.arange(1000) % 3
    X = np.stack([rng.normal(size=1000), y * 1.0 + 7.0, (y % 2) * 1.0, rng.normal(size=1000)], axis=1)
    f = make_selector("fscore").fit(X, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref, _ = f_classif(X, y)
    assert np.isinf(f.scores_[1]) and np.isinf(f.scores_[2]) and np.isinf(ref[1])
    assert list(f.order_[:2]) == [1, 2] and set(f.order_[2:]) == {0, 3}


def test_cka_never_fits_supervised_selectors_on_test_labels(tmp_path):
    from critmass.similarity import cka_curve

    X, y = _data(n=200, d=8)
    Xt, yt = _data(n=100, d=8, seed=1)
    with_train = _entry(tmp_path, {"train": (X, y), "test": (Xt, yt)}, "a")
    test_only = _entry(tmp_path, {"test": (Xt, yt)}, "b")
    df = cka_curve(with_train, selectors=["fscore"], fractions=[0.5], seeds=1, split="test")
    assert int(df["n_fit"].iloc[0]) < 200  # fitted on train's fit rows, never on the compared test rows
    from critmass.features import load_features

    for features in (test_only, load_features(with_train)["test"]):
        with pytest.raises(ConfigError, match="got none"):
            cka_curve(features, selectors=["fscore"], fractions=[0.5], seeds=1, split="test")


def test_attribution_is_the_brute_force_leave_one_out():
    X, y = _data()
    Z, Y = _standardised(X, y)
    a = make_selector("attribution").fit(X, y)
    full = _ridge_min(Z, Y, list(range(Z.shape[1])), DEFAULT_RIDGE)
    brute = np.array([_ridge_min(Z, Y, [i for i in range(Z.shape[1]) if i != j], DEFAULT_RIDGE) - full
                      for j in range(Z.shape[1])])
    np.testing.assert_allclose(a.scores_, brute, rtol=1e-6, atol=1e-12)
    assert -np.diff(np.sort(brute)[::-1]).min() > 1e-6 * brute.max()
    np.testing.assert_array_equal(a.order_, np.argsort(-brute, kind="stable"))


@pytest.mark.numeric
def test_greedy_is_the_brute_force_forward_selection():
    X, y = _data(d=12)
    Z, Y = _standardised(X, y)
    g = make_selector("greedy")
    g.max_steps = 12
    g.fit(X, y)
    chosen = []
    for _ in range(12):
        left = [j for j in range(12) if j not in chosen]
        values = np.array([_ridge_min(Z, Y, chosen + [j], DEFAULT_RIDGE) for j in left])
        best = int(np.argmin(values))
        second = np.partition(values, 1)[1] if len(values) > 1 else np.inf
        before = _ridge_min(Z, Y, chosen, DEFAULT_RIDGE)
        np.testing.assert_allclose(g.scores_[left[best]], before - values[best], rtol=1e-6, atol=1e-12)
        if second - values[best] > 1e-9:  # a clear winner: the greedy step must pick it
            assert g.order_[len(chosen)] == left[best]
        chosen.append(int(g.order_[len(chosen)]))
    assert sorted(g.order_.tolist()) == list(range(12))


@pytest.mark.numeric
def test_group_lasso_matches_sklearn_multitask_lasso():
    from sklearn.linear_model import MultiTaskLasso

    X, y = _data(n=300, d=8)
    Z, Y = _standardised(X, y)
    st = label_stats(X, y)
    lam = 0.3 * float(np.linalg.norm(st["B"], axis=1).max())
    W = group_lasso(st["G"], st["B"], lam, max_iter=20_000, tol=1e-12)
    ref = MultiTaskLasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(Z, Y).coef_.T
    np.testing.assert_allclose(W, ref, atol=1e-6)
    assert 0 < (np.linalg.norm(W, axis=1) > 0).sum() < 8  # a sparse solution: the path is meaningful here


def test_probe_weight_orders_by_entry_into_the_path():
    X, y = _data(d=10)
    st = label_stats(X, y)
    p = make_selector("probe-weight").fit(X, y)
    assert p.order_[0] == int(np.argmax(np.linalg.norm(st["B"], axis=1)))  # the first to enter at lam_max
    assert np.all(np.diff(p.scores_[p.order_]) <= 0)  # earlier entry, higher score


@pytest.mark.numeric
def test_cluster_order_is_one_representative_per_tree_cluster():
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    X, _ = _data(d=14)
    X[:, 5] = 3.0  # a constant neuron: last
    c = make_selector("cluster").fit(X)
    assert c.order_[-1] == 5
    live = [j for j in range(14) if j != 5]
    corr = np.abs(np.corrcoef(X[:, live], rowvar=False))
    Z = linkage(squareform(1 - corr, checks=False), method="average")
    pos = {j: i for i, j in enumerate(live)}
    heights = np.sort(Z[:, 2])
    for k in range(1, 13):
        labels = fcluster(Z, k, criterion="maxclust")
        if len(np.unique(labels)) != k:  # tied merge heights: no cut into exactly k clusters
            continue
        # the k-cut undoes the last k-1 merges: a near-tie at its boundary could order them differently in the
        # selector's own float path (cov / sd rather than np.corrcoef), so such cuts are not compared
        if k > 1 and heights[-(k - 1)] - heights[-k] < 1e-9:
            continue
        reps = [labels[pos[int(j)]] for j in c.order_[:k]]
        assert len(set(reps)) == k  # the first k neurons sit in k different clusters of the k-cut


def test_supervised_selectors_refuse_missing_labels_in_one_line():
    X, y = _data()
    with pytest.raises(ConfigError, match="got none") as err:
        make_selector("greedy").fit(X)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"fscore.*rank neurons by the task's labels"):
        plan_subsets(["random", "fscore"], [0], size_fractions([0.5], X.shape[1]), X)


def _entry(tmp_path, splits, name="entry"):
    from critmass.features import save_arrays_as_entry

    return save_arrays_as_entry(tmp_path / name, {k: (x.astype(np.float32), y) for k, (x, y) in splits.items()},
                                meta={"model": "m", "dataset": "d", "layer": "l"})


def test_order_uses_the_fit_rows_only(tmp_path):
    """Shuffling the validation and test labels changes nothing in the supervised orders (the subsets the probe
    rows use); the orders are the selectors fitted on the train (fit) rows and their labels alone."""
    from critmass.probes import run_probes

    X, y = _data(n=500, d=16, seed=1)
    Xv, yv = _data(n=150, d=16, seed=3)
    Xt, yt = _data(n=200, d=16, seed=2)
    rng = np.random.default_rng(0)
    kw = dict(selectors=["fscore", "greedy", "probe-weight", "attribution"], fractions=[0.25, 0.5], seeds=1,
              solver="ridge", device="cpu")
    a = run_probes(_entry(tmp_path, {"train": (X, y), "val": (Xv, yv), "test": (Xt, yt)}, "a"), out=tmp_path / "ra",
                   **kw)
    run_probes(_entry(tmp_path, {"train": (X, y), "val": (Xv, rng.permutation(yv)), "test": (Xt, rng.permutation(yt))},
                      "b"), out=tmp_path / "rb", **kw)
    for sel in kw["selectors"]:
        wa = np.load(tmp_path / "ra" / "weights" / f"{sel}-seed0.npz")
        wb = np.load(tmp_path / "rb" / "weights" / f"{sel}-seed0.npz")
        for k in (4, 8):
            np.testing.assert_array_equal(wa[f"indices_{k}"], wb[f"indices_{k}"])
        direct = make_selector(sel).fit(X.astype(np.float32), y)
        np.testing.assert_array_equal(wa["indices_8"], direct.order_[:8])
    assert set(a.results["selector"]) == {"all", *kw["selectors"]}


def test_compress_with_fit_labels(tmp_path):
    from critmass.export import compress

    X, y = _data(n=300, d=12)
    emb = tmp_path / "emb.npy"
    np.save(emb, X.astype(np.float32))
    labels = tmp_path / "y.npy"
    np.save(labels, y)
    res = compress(emb, keep=4, selector="greedy", fit_labels=labels, out=tmp_path / "c")
    want = make_selector("greedy").fit(X.astype(np.float32), y).order_[:4]
    np.testing.assert_array_equal(np.load(res.out / "embeddings.npy"), X.astype(np.float32)[:, want])
    with pytest.raises(ConfigError, match="pass --fit-labels"):
        compress(emb, keep=4, selector="fscore", out=tmp_path / "c2")
    with pytest.raises(ConfigError, match="uses none: drop it"):
        compress(emb, keep=4, selector="random", fit_labels=labels, out=tmp_path / "c3")


def test_sweep_with_greedy_uses_the_saved_indices_in_probes_and_cka(tmp_path):
    from critmass.sweep import run_sweep

    cfg = {"output": str(tmp_path / "run"), "cache": str(tmp_path / "cache"), "device": "cpu",
           "models": [{"spec": "timm:test_resnet", "pretrained": False, "image_size": 32}],
           "datasets": [{"spec": "digits", "max_samples": {"train": 200, "test": 80}}],
           "selectors": ["greedy"], "fractions": [0.05, 0.25], "seeds": [0], "solvers": ["ridge"],
           "cka": True, "probes": {"device": "cpu"}}
    res = run_sweep(cfg, workers=1)
    assert res.ok, res.failures
    results = pd.read_parquet(res.run_dir / "results.parquet")
    cka = pd.read_parquet(res.run_dir / "cka.parquet")
    g = results[results["selector"] == "greedy"]
    assert len(g) == 2 and set(cka["selector"]) >= {"greedy"}
    weights = list(res.run_dir.rglob("greedy-seed0.npz"))
    assert weights, "the probe unit saves the greedy indices"
    w = np.load(weights[0])
    # CKA of the same subsets: recompute from the cached features with the saved indices
    from critmass.features import load_features
    from critmass.subsets import probe_fit_rows

    def linear_cka(a, b):  # the naive formula (Kornblith et al. 2019): an independent computation
        a, b = a - a.mean(0), b - b.mean(0)
        return np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))

    entry = next(p for p in (tmp_path / "cache").rglob("entry.json")).parent
    fs = load_features(entry)
    x = np.asarray(fs["train"].x, dtype=np.float64)
    for _, row in cka[cka["selector"] == "greedy"].iterrows():
        idx = w[f"indices_{int(row['n_neurons'])}"]
        np.testing.assert_allclose(row["cka"], linear_cka(x[:, idx], x), rtol=1e-6)
    rows, _ = probe_fit_rows(fs["train"].y, has_val=False)
    direct = make_selector("greedy").fit(np.asarray(fs["train"].x)[rows], np.asarray(fs["train"].y)[rows])
    k = int(g["n_neurons"].max())
    np.testing.assert_array_equal(w[f"indices_{k}"], direct.order_[:k])


def test_profile_and_cka_cli_take_supervised_selectors(tmp_path, capsys):
    from critmass.cli import _main

    out = tmp_path / "profile"
    code = _main(["profile", "timm:test_resnet", "digits", "--out", str(out), "--layers", "penultimate",
                  "--no-pretrained", "--image-size", "32", "--max-samples", "train=150,test=50", "--fractions",
                  "0.1,1", "--seeds", "2", "--solver", "ridge", "--selectors", "greedy,fscore", "--n-boot", "10",
                  "--num-workers", "0", "--quiet", "--cache", str(tmp_path / "cache"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    results = pd.read_parquet(out / "results.parquet")
    assert {"random", "greedy", "fscore", "all"} <= set(results["selector"])
    assert {"random", "greedy", "fscore"} <= set(pd.read_parquet(out / "cka.parquet")["selector"])
    entry = next(p for p in (tmp_path / "cache").rglob("entry.json")).parent
    code = _main(["cka", str(entry), "--selector", "attribution", "--fractions", "0.1,0.5", "--seeds", "1",
                  "--out", str(tmp_path / "cka")])
    assert code == 0, capsys.readouterr().err
