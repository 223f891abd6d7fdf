"""kNN and retrieval probes (critmass.probes.KNNProbe / RetrievalProbe, solvers 'knn' and 'retrieval').

Oracles: scikit-learn's KNeighborsClassifier (brute force, weights='uniform') for kNN accuracy, numpy brute
force in float64 for the DINO vote, recall@k and mAP, and hand-computed values for a tiny gallery.

FAISS scores in float32 and the oracles in float64, so two neighbours whose float64 scores are closer than
the float32 rounding of an inner product (~d * 2^-24 of the norms, below 1e-5 here) may swap. The tests
count such near ties in the oracle and allow only those queries to differ.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from choice_oracle import pick
from sklearn.neighbors import KNeighborsClassifier

from critmass.cli._app import main
from critmass.exceptions import ConfigError
from critmass.probes import RESULT_COLUMNS, KNNProbe, RetrievalProbe, run_probes
from critmass.probes._knn import faiss_threads
from critmass.probes import NEIGHBOUR_COLUMNS

TIE = 1e-5  # float64 score gap below which float32 search may order two neighbours either way

pytestmark = pytest.mark.usefixtures("probe_threads")


def blobs(rng, n, d=12, n_classes=4, spread=2.0, noise=0.0):
    """Gaussian class clusters (continuous: exact distance ties have probability 0); ``noise`` flips labels."""
    centres = rng.normal(size=(n_classes, d)) * spread
    y = rng.integers(0, n_classes, size=n)
    X = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    if noise:
        flip = rng.random(n) < noise
        y = np.where(flip, rng.integers(0, n_classes, size=n), y)
    return X, y


def unit(X):
    X = np.asarray(X, dtype=np.float64)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1)


def scores64(Q, G, metric):
    """Similarities (larger is nearer) in float64: cosine, or minus the squared L2 distance."""
    Q, G = np.asarray(Q, np.float64), np.asarray(G, np.float64)
    if metric == "cosine":
        return unit(Q) @ unit(G).T
    return -((Q[:, None, :] - G[None, :, :]) ** 2).sum(-1)


def near_tie(S, k):
    """Queries whose k-th and (k+1)-th nearest are within TIE (relative to the score scale)."""
    s = -np.sort(-S, axis=1)
    if k >= S.shape[1]:
        return np.zeros(len(S), dtype=bool)
    scale = np.maximum(1.0, np.abs(s[:, :1]))
    return (s[:, k - 1] - s[:, k]) <= TIE * scale[:, 0]


def any_near_tie(S, depth=None):
    """Queries with any two scores within TIE among the first ``depth`` ranked (None: all)."""
    s = -np.sort(-S, axis=1)[:, : (depth or S.shape[1]) + 1]
    scale = np.maximum(1.0, np.abs(s[:, :1]))
    return (np.diff(-s, axis=1) <= TIE * scale).any(1)


# ------------------------------------------------------------------------------------------ kNN vs sklearn
@pytest.mark.numeric
@pytest.mark.parametrize("metric,sk_metric", [("cosine", "cosine"), ("l2", "euclidean")])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_matches_sklearn(rng, metric, sk_metric, k):
    X, y = blobs(rng, 900, noise=0.3)
    Xtr, ytr, Xte = X[:600], y[:600], X[600:]
    cols = [np.array([0, 3, 5, 7, 11]), np.arange(12)]
    probe = KNNProbe(ks=[k], metric=metric, vote="majority", subsets=cols, device="cpu").fit(Xtr, ytr)
    pred = probe.predict_subsets(Xte)
    assert probe.k_.tolist() == [k, k] and probe.votes_ == ["majority"] * 2
    for i, c in enumerate(cols):
        sk = KNeighborsClassifier(n_neighbors=k, metric=sk_metric, algorithm="brute", weights="uniform")
        ref = sk.fit(Xtr[:, c], ytr).predict(Xte[:, c])
        ties = near_tie(scores64(Xte[:, c], Xtr[:, c], metric), k)
        differ = pred[i] != ref
        assert not (differ & ~ties).any(), f"{differ.sum()} predictions differ, {ties.sum()} near ties"
        assert differ.sum() <= 2  # near ties are rare on continuous data


def test_knn_vote_ties_go_to_the_smallest_label():
    # 2 neighbours of each class at k=4: majority tie -> the smaller label, as scikit-learn
    G = np.array([[1, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [-1, 0]], dtype=np.float32)
    yg = np.array([3, 1, 1, 3, 1])
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    probe = KNNProbe(ks=[4], metric="l2", device="cpu").fit(G, yg)
    ref = KNeighborsClassifier(4, algorithm="brute").fit(G, yg).predict(q)
    assert probe.predict(q)[0] == ref[0] == 1


@pytest.mark.numeric
def test_dino_vote_matches_brute_force(rng):
    X, y = blobs(rng, 700, d=10, n_classes=5, spread=1.0, noise=0.2)
    Xtr, ytr, Xte = X[:500], y[:500], X[500:]
    k, T = 10, 0.07
    probe = KNNProbe(ks=[k], device="cpu").fit(Xtr, ytr)  # default: cosine, vote auto -> dino
    assert probe.votes_ == ["dino"] and probe.metric_ == ["cosine"]
    S = scores64(Xte, Xtr, "cosine")
    top = np.argsort(-S, axis=1)[:, :k]
    votes = np.zeros((len(Xte), 5))
    for q in range(len(Xte)):
        for j in top[q]:
            votes[q, ytr[j]] += np.exp(S[q, j] / T)
    ref = votes.argmax(1)
    differ = probe.predict(Xte) != ref
    assert not (differ & ~near_tie(S, k)).any()


@pytest.mark.numeric
def test_torch_backend_equals_faiss(rng):
    X, y = blobs(rng, 500)
    a = KNNProbe(ks=[5], metric="l2", device="cpu").fit(X[:400], y[:400])
    b = KNNProbe(ks=[5], metric="l2", device="cpu", backend="torch").fit(X[:400], y[:400])
    assert a.settings_["backend"] == "faiss" and b.settings_["backend"] == "torch"
    ties = near_tie(scores64(X[400:], X[:400], "l2"), 5)
    assert not ((a.predict(X[400:]) != b.predict(X[400:])) & ~ties).any()


@pytest.mark.numeric
@pytest.mark.parametrize("index,opts", [("ivf", {"nlist": 8, "nprobe": 8}), ("hnsw", {"ef_search": 256})])
def test_approximate_indexes(rng, index, opts):
    X, y = blobs(rng, 1500, d=16, n_classes=6)
    exact = KNNProbe(ks=[5], device="cpu").fit(X[:1200], y[:1200])
    approx = KNNProbe(ks=[5], index=index, device="cpu", **opts).fit(X[:1200], y[:1200])
    (s_e, i_e), = exact.kneighbors_subsets(X[1200:])
    (s_a, i_a), = approx.kneighbors_subsets(X[1200:])
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(i_e, i_a)])
    if index == "ivf":  # every list probed: an exhaustive search, the same neighbours up to near ties
        ties = any_near_tie(scores64(X[1200:], X[:1200], "cosine"), 6)
        assert all(set(a) == set(b) for a, b, t in zip(i_e, i_a, ties) if not t)
    else:
        assert overlap >= 0.95
    assert abs(approx.score(X[1200:], y[1200:]) - exact.score(X[1200:], y[1200:])) <= 0.02


def test_faiss_threads_follow_torch():
    import faiss
    import torch

    before_torch, before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    try:
        with faiss_threads():
            assert faiss.omp_get_max_threads() == 1
    finally:
        torch.set_num_threads(before_torch)
    assert faiss.omp_get_max_threads() == before


# ------------------------------------------------------------------------------------------ k on validation
@pytest.mark.numeric
def test_k_chosen_on_validation(rng):
    # Label noise: more neighbours average it out, so the validation curve peaks at a large k.
    X, y = blobs(rng, 1400, d=8, n_classes=3, spread=1.2, noise=0.4)
    Xtr, ytr, Xv, yv, Xte = X[:800], y[:800], X[800:1100], y[800:1100], X[1100:]
    ks = [1, 5, 10, 20, 50]
    probe = KNNProbe(ks=ks, metric="l2", device="cpu").fit(Xtr, ytr, X_val=Xv, y_val=yv)
    S = scores64(Xv, Xtr, "l2")
    ref = []
    for k in ks:
        pred = KNeighborsClassifier(k, algorithm="brute").fit(Xtr, ytr).predict(Xv)
        ref.append(np.mean(pred == yv))
        assert abs(probe.val_scores_[0, 0, ks.index(k)] - ref[-1]) <= near_tie(S, k).mean() + 1e-12
    correct = list(np.rint(probe.val_scores_[0, 0] * len(yv)))
    best = pick(correct, list(range(len(ks)))[::-1], len(yv))  # the one-SE rule, the larger k preferred
    assert probe.k_[0] == ks[best] and probe.k_[0] >= 10 and probe.n_train_ == 800 and probe.n_val_ == 300
    assert probe.scores_[0] == probe.val_scores_[0, 0, best]
    sk = KNeighborsClassifier(int(probe.k_[0]), algorithm="brute").fit(Xtr, ytr)
    differ = probe.predict(Xte) != sk.predict(Xte)
    assert not (differ & ~near_tie(scores64(Xte, Xtr, "l2"), int(probe.k_[0]))).any()
    # Two metrics: one (metric, k) pair among all ten, the metric listed first preferred within the band.
    both = KNNProbe(ks=ks, metric=["l2", "cosine"], device="cpu").fit(Xtr, ytr, X_val=Xv, y_val=yv)
    assert both.val_scores_.shape == (1, 2, 5)
    np.testing.assert_allclose(both.val_scores_[0, 0], probe.val_scores_[0, 0], atol=1e-12)
    pref = [m * 5 + j for m in range(2) for j in range(4, -1, -1)]
    chosen = pick(list(np.rint(both.val_scores_[0].ravel() * len(yv))), pref, len(yv))
    assert (both.metric_[0], both.k_[0]) == (["l2", "cosine"][chosen // 5], ks[chosen % 5])
    assert both.scores_[0] == both.val_scores_[0].ravel()[chosen]


def test_carved_validation_rows_leave_the_gallery(rng):
    X, y = blobs(rng, 500)
    probe = KNNProbe(ks=[1, 5], device="cpu", val_fraction=0.2).fit(X, y)
    assert probe.n_train_ + probe.n_val_ == 500 and probe.n_val_ == 100
    refit = KNNProbe(ks=[1, 5], device="cpu", val_fraction=0.2, refit=True).fit(X, y)
    assert refit.n_train_ == 500 and refit.k_[0] == probe.k_[0]


# ------------------------------------------------------------------------------------------ normalisation
def test_truncate_renorm_vs_normalize_truncate():
    # Subset = the first two neurons. Truncate-renorm: cosine of the prefixes, g2 = (1, 0 | 10) is parallel to
    # q; normalise-then-truncate: g2's mass sits outside the prefix, so g1 = (1, 1 | 0) is nearer.
    G = np.array([[1, 1, 0], [1, 0, 10], [-1, -1, 0]], dtype=np.float32)
    yg = np.array([0, 1, 2])
    q = np.array([[1, 0, 0]], dtype=np.float32)
    sub = [np.array([0, 1]), np.arange(3)]
    tr = KNNProbe(ks=[1], subsets=sub, device="cpu").fit(G, yg)
    nt = KNNProbe(ks=[1], subsets=sub, normalization="normalize-truncate", device="cpu").fit(G, yg)
    assert tr.normalizations_ == ["truncate-renorm"] * 2 and nt.normalizations_ == ["normalize-truncate"] * 2
    assert tr.predict_subsets(q)[:, 0].tolist() == [1, 0] and nt.predict_subsets(q)[:, 0].tolist() == [0, 0]
    (s_tr, _), _ = tr.kneighbors_subsets(q)
    (s_nt, _), _ = nt.kneighbors_subsets(q)
    np.testing.assert_allclose(s_tr[0, 0], 1.0, atol=1e-6)  # cos((1, 0), (1, 0))
    np.testing.assert_allclose(s_nt[0, 0], 1 / np.sqrt(2), atol=1e-6)  # (1, 0) . (1, 1) / sqrt(2)


@pytest.mark.numeric
def test_normalize_truncate_scores_are_prefix_inner_products(rng):
    X, y = blobs(rng, 300, d=10)
    cols = np.array([1, 2, 4, 8])
    for center in (False, True):
        p = KNNProbe(ks=[7], subsets=[cols, np.arange(10)], normalization="normalize-truncate", center=center,
                     device="cpu").fit(X[:200], y[:200])
        mean = X[:200].astype(np.float64).mean(0) if center else 0.0
        Gn, Qn = unit(X[:200] - mean), unit(X[200:] - mean)
        for (s, i), c in zip(p.kneighbors_subsets(X[200:]), [cols, np.arange(10)]):
            ref = Qn[:, c] @ Gn[:, c].T
            np.testing.assert_allclose(s, np.take_along_axis(ref, i, 1), atol=1e-5)
            np.testing.assert_allclose(s[:, -1], -np.sort(-ref, 1)[:, 6], atol=1e-5)  # the true 7th nearest
    # On the whole layer both variants are the cosine: the same neighbours.
    a = KNNProbe(ks=[7], device="cpu").fit(X[:200], y[:200]).kneighbors_subsets(X[200:])[0]
    b = KNNProbe(ks=[7], normalization="normalize-truncate", device="cpu").fit(X[:200], y[:200]).kneighbors_subsets(
        X[200:])[0]
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)


# ------------------------------------------------------------------------------------------ retrieval
def test_retrieval_hand_checked():
    # 1-D gallery at 1..5 with labels 0 1 0 1 1 (L2). Query 0.9 (label 0) ranks 1,2,3,4,5 -> relevance 1 0 1 0 0:
    # recall@1 = 1, AP = (1/1 + 2/3) / 2 = 5/6, AP@2 = (1/1) / min(2, 2) = 1/2.
    # Query 5.2 (label 0) ranks 5,4,3,2,1 -> 0 0 1 0 1: recall@1 = recall@2 = 0, recall@3 = 1,
    # AP = (1/3 + 2/5) / 2 = 11/30, AP@2 = 0.
    G = np.array([[1], [2], [3], [4], [5]], dtype=np.float32)
    yg = np.array([0, 1, 0, 1, 1])
    Q = np.array([[0.9], [5.2]], dtype=np.float32)
    yq = np.array([0, 0])
    full = RetrievalProbe(ks=[1, 2, 3], map_at=None, metric="l2", device="cpu").fit(G, yg)
    r = full.evaluate_subsets(Q, yq, per_query=True)
    assert r["recall_at_1"][0].tolist() == [1, 0] and r["recall_at_2"][0].tolist() == [1, 0]
    assert r["recall_at_3"][0].tolist() == [1, 1]
    np.testing.assert_allclose(r["map"][0], [5 / 6, 11 / 30], rtol=1e-12)
    cut = RetrievalProbe(ks=[1], map_at=2, metric="l2", device="cpu").fit(G, yg).evaluate_subsets(Q, yq)
    np.testing.assert_allclose(cut["map"], [0.25], rtol=1e-12)
    assert full.score_subsets(Q, yq).tolist() == [0.5]  # recall@1: the 1-NN accuracy


def brute_retrieval(Q, yq, G, yg, metric, ks, cutoff):
    """Recall@k and AP by walking each query's float64 ranking (an independent loop implementation)."""
    S = scores64(Q, G, metric)
    hits = np.zeros((len(Q), len(ks)))
    ap = np.zeros(len(Q))
    for q in range(len(Q)):
        order = np.argsort(-S[q], kind="stable")
        rel = yg[order] == yq[q]
        for j, k in enumerate(ks):
            hits[q, j] = rel[:k].any()
        R = rel.sum()
        c = len(order) if cutoff is None else cutoff
        found, total = 0, 0.0
        for i in range(min(c, len(order))):
            if rel[i]:
                found += 1
                total += found / (i + 1)
        ap[q] = total / (R if cutoff is None else min(R, cutoff))
    return hits, ap, S


@pytest.mark.numeric
@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("cutoff", [None, 10])
def test_retrieval_matches_brute_force(rng, metric, cutoff):
    X, y = blobs(rng, 260, d=4, n_classes=3, spread=1.0, noise=0.1)
    G, yg, Q, yq = X[:200], y[:200], X[200:], y[200:]
    cols = np.array([0, 2, 3])
    probe = RetrievalProbe(ks=[1, 5, 10], map_at=cutoff, metric=metric, subsets=[cols, np.arange(4)],
                           device="cpu").fit(G, yg)
    r = probe.evaluate_subsets(Q, yq, per_query=True)
    means = probe.evaluate_subsets(Q, yq)
    for i, c in enumerate([cols, np.arange(4)]):
        hits, ap, S = brute_retrieval(Q[:, c], yq, G[:, c], yg, metric, [1, 5, 10], cutoff)
        clean = ~any_near_tie(S, None if cutoff is None else 10)
        assert clean.mean() > 0.5  # enough queries without near ties to compare
        for j, k in enumerate([1, 5, 10]):
            np.testing.assert_array_equal(r[f"recall_at_{k}"][i][clean], hits[clean, j])
            np.testing.assert_allclose(means[f"recall_at_{k}"][i], r[f"recall_at_{k}"][i].mean(), rtol=1e-12)
        np.testing.assert_allclose(r["map"][i][clean], ap[clean], rtol=1e-9)
        assert np.all((r["map"][i] >= 0) & (r["map"][i] <= 1))


# ------------------------------------------------------------------------------------------ run_probes and CLI
@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(3)
    X, y = blobs(rng, 1000, d=24, n_classes=5, spread=0.6, noise=0.1)
    path = tmp_path_factory.mktemp("knn") / "feats.npz"
    np.savez(path, x_train=X[:700], y_train=y[:700], x_test=X[700:], y_test=y[700:])
    return path, X, y


@pytest.mark.numeric
def test_run_probes_knn_end_to_end(npz, tmp_path):
    path, X, y = npz
    res = run_probes(path, selectors=["random", "pca", "prefix"], fractions=[0.25, 0.5, 1.0], seeds=2, solver="knn",
                     device="cpu", out=tmp_path / "out", solver_options={"ks": [1, 5, 10, 20]})
    df = res.results
    assert list(df.columns) == RESULT_COLUMNS and list(df.columns[-len(NEIGHBOUR_COLUMNS):]) == NEIGHBOUR_COLUMNS
    assert len(df) == 1 + 3 * 2 + 3 + 3 and (df["solver"] == "knn").all()
    assert set(df["knn_k"]) <= {1, 5, 10, 20} and (df["reg"] == df["knn_k"]).all()
    assert (df["knn_metric"] == "cosine").all() and (df["knn_vote"] == "dino").all()
    assert (df["normalization"] == "truncate-renorm").all() and df["map"].isna().all()
    assert df["train_accuracy"].isna().all() and df["weights_file"].isna().all()
    assert not (tmp_path / "out" / "weights").exists()
    cfg = json.loads(df["config"][0])
    assert cfg["neighbours"]["index"] == "flat" and cfg["neighbours"]["ks"] == [1, 5, 10, 20]
    assert "faiss" in json.loads(df["versions"][0])
    # The full layer: the gallery is train minus the carved 10% validation rows, k chosen on those rows.
    from critmass.data._splits import train_val_indices

    Xtr, ytr, Xte, yte = X[:700], y[:700], X[700:], y[700:]
    fit, val = train_val_indices(ytr, 0.1, seed=0)
    full = df[df["selector"] == "all"].iloc[0]
    ref = KNNProbe(ks=[1, 5, 10, 20], device="cpu").fit(Xtr[fit], ytr[fit], X_val=Xtr[val], y_val=ytr[val])
    assert full["knn_k"] == ref.k_[0] and full["n_train"] == len(fit) and full["n_val"] == len(val)
    assert full["test_accuracy"] == pytest.approx(ref.score(Xte, yte), abs=1e-12)
    # Per-class accuracies average (by support) to the test accuracy.
    pc = res.per_class
    for (sel, f, seed), g in pc.groupby(["selector", "fraction", "seed"]):
        row = df[(df["selector"] == sel) & (df["fraction"] == f) & (df["seed"] == seed)].iloc[0]
        assert np.average(g["accuracy"], weights=g["support"]) == pytest.approx(row["test_accuracy"], abs=1e-12)
        assert np.nanmean(g["accuracy"]) == pytest.approx(row["mean_per_class_recall"], abs=1e-12)
    # Test labels are used for nothing but the test columns: shuffling them leaves every choice unchanged.
    rng = np.random.default_rng(0)
    shuffled = tmp_path / "shuffled.npz"
    np.savez(shuffled, x_train=Xtr, y_train=ytr, x_test=Xte, y_test=rng.permutation(yte))
    res2 = run_probes(shuffled, selectors=["random", "pca", "prefix"], fractions=[0.25, 0.5, 1.0], seeds=2,
                      solver="knn", device="cpu", solver_options={"ks": [1, 5, 10, 20]})
    assert res2.results["knn_k"].tolist() == df["knn_k"].tolist()
    np.testing.assert_array_equal(res2.results["val_accuracy"], df["val_accuracy"])


@pytest.mark.numeric
def test_run_probes_retrieval_end_to_end(npz, tmp_path):
    path, X, y = npz
    res = run_probes(path, selectors=["random"], fractions=[0.25, 1.0], seeds=2, solver="retrieval", device="cpu",
                     solver_options={"map_at": None})
    df = res.results
    assert (df["test_accuracy"] == df["recall_at_1"]).all()
    assert (df["recall_at_1"] <= df["recall_at_5"]).all() and (df["recall_at_5"] <= df["recall_at_10"]).all()
    assert df["knn_k"].isna().all() and df["reg"].isna().all() and df["val_accuracy"].between(0, 1).all()
    from critmass.data._splits import train_val_indices

    fit, _ = train_val_indices(y[:700], 0.1, seed=0)
    ref = RetrievalProbe(map_at=None, device="cpu").fit(X[:700][fit], y[:700][fit]).evaluate_subsets(X[700:], y[700:])
    full = df[df["selector"] == "all"].iloc[0]
    for col in ("recall_at_1", "recall_at_5", "recall_at_10", "map"):
        assert full[col] == pytest.approx(ref[col][0], abs=1e-12)
    pc = res.per_class[res.per_class["selector"] == "all"]
    assert np.average(pc["accuracy"], weights=pc["support"]) == pytest.approx(full["recall_at_1"], abs=1e-12)


def test_old_results_still_load_with_new_ones(npz, tmp_path):
    from critmass.metrics import dr
    from critmass.metrics._common import read_many

    path, _, _ = npz
    run_probes(path, selectors=["random"], fractions=[0.25, 0.5, 1.0], seeds=2, solver="knn", device="cpu",
               out=tmp_path / "knn")
    old = run_probes(path, selectors=["random"], fractions=[0.25, 0.5, 1.0], seeds=2, solver="ridge", device="cpu").results
    assert old[NEIGHBOUR_COLUMNS].isna().all().all()  # the linear solvers leave the neighbour columns empty
    (tmp_path / "old").mkdir()
    old.drop(columns=NEIGHBOUR_COLUMNS).to_parquet(tmp_path / "old" / "results.parquet")  # a table from before
    both = read_many([tmp_path / "knn", tmp_path / "old"])
    assert set(both["solver"]) == {"knn", "ridge"}
    table = dr(both, delta=0.9)
    assert set(table["solver"]) == {"knn", "ridge"} and table["dr"].between(0, 1).all()
    knn_only = dr(both[both["solver"] == "knn"], delta=0.9)
    assert table[table["solver"] == "knn"]["dr"].tolist() == knn_only["dr"].tolist()


def test_cli_probe_knn_then_dr(npz, tmp_path, capsys):
    path, _, _ = npz
    out = tmp_path / "cli"
    rc = main(["probe", str(path), "--out", str(out), "--solver", "knn", "--fractions", "0.25,0.5,1", "--seeds", "2",
               "--k", "1,5,10", "--metric", "cosine,l2", "--normalization", "normalize-truncate", "--center",
               "--no-progress", "--threads", "1"])
    assert rc == 0
    assert "kNN accuracy" in capsys.readouterr().out
    df = pd.read_parquet(out / "results.parquet")
    assert set(df["knn_metric"]) <= {"cosine", "l2"} and (df["normalization"] == "normalize-truncate").all()
    assert json.loads(df["config"][0])["neighbours"]["center"] is True
    assert main(["dr", str(out)]) == 0
    text = capsys.readouterr().out
    assert "DR at delta=0.9" in text and "feats" in text
    rc = main(["probe", str(path), "--out", str(tmp_path / "r"), "--solver", "retrieval", "--fractions", "0.5,1",
               "--seeds", "1", "--map-at", "all", "--index", "hnsw", "--no-progress"])
    assert rc == 0 and "recall@1" in capsys.readouterr().out
    df = pd.read_parquet(tmp_path / "r" / "results.parquet")
    assert json.loads(df["config"][0])["neighbours"]["map_at"] is None and df["map"].notna().all()


@pytest.mark.parametrize("args,match", [
    (["--solver", "knn", "--k", "0"], "ks must be a positive integer"),
    (["--solver", "knn", "--metric", "l2", "--vote", "dino"], "needs metric='cosine'"),
    (["--solver", "knn", "--metric", "cosine", "--normalization", "none"], "needs normalised vectors"),
    (["--solver", "knn", "--map-at", "10"], "--map-at applies to --solver retrieval"),
    (["--solver", "knn", "--alphas", "0.1"], "penalty grid of the linear solvers"),
    (["--solver", "knn", "--penalty-rule", "first-seed"], "applies to the linear solvers"),
    (["--solver", "retrieval", "--index", "ivfpq"], "index must be one of flat, ivf, hnsw"),
    (["--solver", "retrieval", "--k", "3"], "--k applies to --solver knn"),
    (["--solver", "logistic", "--index", "ivf"], "--index applies to --solver knn/retrieval"),
    (["--solver", "retrieval", "--map-at", "x"], "--map-at must be a positive integer or 'all'"),
])
def test_cli_errors_are_one_line(npz, tmp_path, capsys, args, match):
    path, _, _ = npz
    rc = main(["probe", str(path), "--out", str(tmp_path / "x"), "--fractions", "1", "--seeds", "1", "--no-progress",
               *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and match in err, err
    assert not (tmp_path / "x" / "results.parquet").exists()


def test_api_errors():
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    y = np.arange(50) % 2
    with pytest.raises(ConfigError, match="need validation data"):
        KNNProbe(ks=[1, 5], val_fraction=0, device="cpu").fit(X, y)
    with pytest.raises(ConfigError, match="one metric"):
        RetrievalProbe(metric=["cosine", "l2"], device="cpu").fit(X, y)
    with pytest.raises(ConfigError, match="unknown option"):
        run_probes(_tiny_npz(X, y), solver="knn", fractions=[1.0], seeds=1,
                   solver_options={"max_iter": 5}, device="cpu")
    with pytest.raises(ConfigError, match="need validation data"):  # val_fraction=0: no validation, nothing carved
        run_probes(_tiny_npz(X, y), solver="knn", fractions=[1.0], seeds=1, val_fraction=0, device="cpu")
    res = run_probes(_tiny_npz(X, y), solver="knn", fractions=[1.0], seeds=1, val_fraction=0, device="cpu",
                     solver_options={"ks": 3})
    assert (res.results["n_train"] == 50).all() and (res.results["n_val"] == 0).all()
    assert res.results["val_accuracy"].isna().all()
    with pytest.raises(ConfigError, match="ks must be a positive integer"):
        run_probes(_tiny_npz(X, y), solver="knn", fractions=[1.0], seeds=1, solver_options={"ks": [5, -1]})
    from critmass.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        KNNProbe().predict(X)
    with pytest.raises(NotFittedError):
        RetrievalProbe().evaluate_subsets(X, y)


def _tiny_npz(X, y):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "tiny.npz"
    np.savez(path, x_train=X, y_train=y, x_test=X[:10], y_test=y[:10])
    return path


# ------------------------------------------------------------------------------------------ sweeps
def test_sweep_accepts_and_runs_neighbour_solvers(tmp_path):
    from critmass.sweep import load_config, run_sweep

    cfg = {"output": str(tmp_path / "run"), "cache": str(tmp_path / "cache"), "device": "cpu",
           "models": [{"spec": "timm:test_resnet", "pretrained": False, "image_size": 32}],
           "datasets": [{"spec": "digits", "max_samples": {"train": 200, "test": 80}}],
           "selectors": ["random"], "fractions": [0.5, 1.0], "seeds": [0], "solvers": ["knn", "retrieval"],
           "cka": False, "probes": {"device": "cpu"}}
    assert load_config(cfg).solvers == ["knn", "retrieval"]
    res = run_sweep(cfg, workers=1)
    assert res.ok, res.failures
    df = pd.read_parquet(res.run_dir / "results.parquet")
    assert set(df["solver"]) == {"knn", "retrieval"}
    r = df[df["solver"] == "retrieval"]
    assert (r["test_accuracy"] == r["recall_at_1"]).all() and df[df["solver"] == "knn"]["knn_k"].notna().all()
