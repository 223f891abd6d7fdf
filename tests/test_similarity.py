"""critmass.similarity: linear CKA against the naive N x N definitions, invariances, the Gram fast
path for subsets and projections, streaming, and every error path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from critmass.exceptions import ConfigError, FeatureError, SpecError
from critmass.features import load_features, save_arrays_as_entry
from critmass.similarity import (
    CKA_COLUMNS,
    GramAccumulator,
    cka,
    cka_between,
    cka_curve,
    gram_stats,
    projection_cka,
    subset_cka,
)
from critmass.data._splits import train_val_indices
from critmass.probes._base import standard_scale
from critmass.subsets import make_selector

pytestmark = pytest.mark.numeric  # float results compared across code paths: make test-numerics

TOL = 1e-8


def probe_view(name, seed, x_fit, x, k):
    """The k-subset of selector ``name`` as the probes define it, applied to ``x`` (float64): column
    selectors fitted on the raw fit rows; projections fitted on the standardised fit rows, applied to the
    standardised ``x`` (the probe's projected input, without rescaling the projected columns)."""
    sel = make_selector(name, random_state=seed)
    if not sel.is_projection:
        return np.asarray(x, np.float64)[:, sel.fit(x_fit).subset(k)[0]]
    mu, sigma = standard_scale([np.asarray(x_fit, np.float32)], [None])
    sel.fit((np.asarray(x_fit, np.float64) - mu) / sigma)
    return (((np.asarray(x, np.float64) - mu) / sigma) - sel.mean_) @ sel.components_[:, :k]


# ------------------------------------------------------------------------- naive reference values
def _centering(n):
    return np.eye(n) - np.ones((n, n)) / n


def naive_hsic(k, l_):
    """Biased HSIC from N x N Gram matrices: tr(K H L H) / (n - 1)^2."""
    n = k.shape[0]
    h = _centering(n)
    return np.trace(k @ h @ l_ @ h) / (n - 1) ** 2


def naive_cka(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    k, l_ = a @ a.T, b @ b.T
    return naive_hsic(k, l_) / np.sqrt(naive_hsic(k, k) * naive_hsic(l_, l_))


def naive_unbiased_hsic(k, l_):
    """Song et al. (2012) unbiased HSIC, term by term, on Gram matrices with zeroed diagonals:

    HSIC_1 = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1 ] / (n (n-3))
    """
    n = k.shape[0]
    kt, lt = k.copy(), l_.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    trace_term = 0.0
    for i in range(n):
        for j in range(n):
            trace_term += kt[i, j] * lt[j, i]
    sum_k = sum(kt[i, j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i, j] for i in range(n) for j in range(n))
    cross_term = 0.0
    for j in range(n):  # 1^T K~ L~ 1 = sum_j (sum_i K~_ij)(sum_m L~_jm)
        cross_term += kt[:, j].sum() * lt[j, :].sum()
    return (trace_term + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross_term) / (n * (n - 3))


def naive_cka_debiased(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)  # uncentred: the estimator centres itself
    k, l_ = a @ a.T, b @ b.T
    return naive_unbiased_hsic(k, l_) / np.sqrt(naive_unbiased_hsic(k, k) * naive_unbiased_hsic(l_, l_))


def features(n=30, d=12, rank=4, seed=0, offset=2.0):
    """Low-rank structure + noise + a non-zero mean (so centring matters), float32 like real caches."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) + 0.3 * rng.normal(size=(n, d)) + offset
    return x.astype(np.float32)


def orthogonal(d, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# -------------------------------------------------------------------------------- pairwise CKA
@pytest.mark.parametrize("method", ["features", "samples", "auto"])
@pytest.mark.parametrize("seed", [0, 1])
def test_cka_matches_naive_definitions(method, seed):
    x = features(n=25, d=7, seed=seed)
    y = np.tanh(x[:, :3] @ np.random.default_rng(seed + 10).normal(size=(3, 5))) + features(n=25, d=5, seed=seed + 5)
    assert abs(cka(x, y, method=method) - naive_cka(x, y)) < TOL
    assert abs(cka(x, y, debiased=True, method=method) - naive_cka_debiased(x, y)) < TOL


def test_cka_wide_layers_use_the_sample_space_path_with_the_same_value():
    x, y = features(n=12, d=40, seed=2), features(n=12, d=30, seed=3)
    assert abs(cka(x, y) - cka(x, y, method="features")) < TOL
    assert abs(cka(x, y, debiased=True) - naive_cka_debiased(x, y)) < TOL


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_matrix_with_itself_is_one_and_symmetric(debiased):
    x, y = features(seed=4), features(d=5, seed=5)
    assert abs(cka(x, x, debiased=debiased) - 1.0) < 1e-12
    assert abs(cka(x, x.copy(), debiased=debiased) - 1.0) < 1e-12
    assert abs(cka(x, y, debiased=debiased) - cka(y, x, debiased=debiased)) < 1e-12


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(debiased):
    x = features(seed=6).astype(np.float64)
    y = features(d=9, seed=7).astype(np.float64)
    base = cka(x, y, debiased=debiased)
    assert abs(cka(x @ orthogonal(12, 1), y, debiased=debiased) - base) < TOL
    assert abs(cka(x, 7.5 * y @ orthogonal(9, 2), debiased=debiased) - base) < TOL
    assert abs(cka(0.01 * x + 3.0, y, debiased=debiased) - base) < TOL  # scale and translation


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_not_invariant_to_general_invertible_maps(debiased):
    x = features(seed=8).astype(np.float64)
    y = features(d=9, seed=9).astype(np.float64)
    a = np.random.default_rng(3).normal(size=(12, 12)) + np.diag(np.linspace(1, 20, 12))  # invertible, ill-conditioned
    assert np.linalg.matrix_rank(a) == 12
    assert abs(cka(x @ a, y, debiased=debiased) - cka(x, y, debiased=debiased)) > 1e-3


def test_cka_of_unrelated_features_is_below_one():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(200, 10)), rng.normal(size=(200, 10))
    assert cka(x, y) < 0.5
    assert abs(cka(x, y, debiased=True)) < 0.1  # debiased removes the small-n bias towards > 0


# ------------------------------------------------------------------------ subsets from the Gram
@pytest.mark.parametrize("debiased", [False, True])
def test_subset_cka_from_gram_matches_naive_for_random_subsets(debiased):
    x = features(n=28, d=15, seed=12)
    rng = np.random.default_rng(0)
    subsets = [rng.choice(15, size=k, replace=False) for k in (1, 2, 5, 9, 15)]
    subsets.append(np.array([3, 3, 7]))  # a repeated neuron is a duplicated column
    stats = gram_stats(x, debiased=debiased)
    got = subset_cka(stats, subsets, debiased=debiased)
    ref = naive_cka_debiased if debiased else naive_cka
    want = [ref(x[:, s], x) for s in subsets]
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_subset_cka_accepts_boolean_masks():
    x = features(n=30, d=10, seed=13)
    masks = np.random.default_rng(1).random((6, 10)) < 0.5
    masks[:, 0] = True
    stats = gram_stats(x, debiased=True)
    for debiased, ref in ((False, naive_cka), (True, naive_cka_debiased)):
        got = subset_cka(stats, masks, debiased=debiased)
        np.testing.assert_allclose(got, [ref(x[:, m], x) for m in masks], rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["pca", "pca-least", "randproj", "randproj-uniform"])
def test_projection_cka_matches_naive(name):
    x = features(n=30, d=10, seed=14)
    sel = make_selector(name, random_state=3).fit(x)
    assert sel.is_projection
    sizes = [1, 3, 6, 10]
    stats = gram_stats(x)
    reduced = [(x.astype(np.float64) - x.mean(0)) @ sel.components_[:, :k] for k in sizes]
    np.testing.assert_allclose(projection_cka(stats, sel.components_, sizes),
                               [naive_cka(r, x) for r in reduced], rtol=0, atol=TOL)
    np.testing.assert_allclose(projection_cka(stats, sel.components_, sizes, debiased=True, x=x),
                               [naive_cka_debiased(r, x) for r in reduced], rtol=0, atol=TOL)


def test_projection_cka_of_a_rotation_of_the_whole_layer_is_one():
    x = features(seed=15)
    stats = gram_stats(x)
    assert abs(projection_cka(stats, orthogonal(12, 4))[0] - 1.0) < 1e-12


def test_projection_sizes_in_any_order():
    x = features(n=30, d=8, seed=16)
    r = np.random.default_rng(2).normal(size=(8, 8))
    stats = gram_stats(x)
    a = projection_cka(stats, r, [7, 2, 5], debiased=True, x=x)
    b = projection_cka(stats, r, [2, 5, 7], debiased=True, x=x)
    np.testing.assert_allclose(a, b[[2, 0, 1]], rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------------- streaming
def test_streaming_a_memmapped_file_equals_in_memory(tmp_path):
    x = features(n=103, d=9, seed=17, offset=50.0)  # large offset: centring must be exact
    np.save(tmp_path / "features.npy", x)
    mm = np.load(tmp_path / "features.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap)
    whole = gram_stats(x, debiased=True)
    streamed = gram_stats(mm, debiased=True, chunk_size=10)
    np.testing.assert_allclose(streamed.gram, whole.gram, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(streamed.fourth, whole.fourth, rtol=1e-12, atol=1e-6)
    subsets = [np.arange(k) for k in (1, 4, 9)]
    for debiased in (False, True):
        np.testing.assert_allclose(subset_cka(streamed, subsets, debiased=debiased),
                                   subset_cka(whole, subsets, debiased=debiased), rtol=0, atol=TOL)
    y = features(n=103, d=4, seed=18)
    np.save(tmp_path / "y.npy", y)
    my = np.load(tmp_path / "y.npy", mmap_mode="r")
    assert abs(cka(mm, my, chunk_size=8) - cka(x, y)) < 1e-12
    assert abs(cka(mm, my, chunk_size=8, method="samples", debiased=True) - cka(x, y, debiased=True)) < 1e-12
    r = np.random.default_rng(0).normal(size=(9, 9))
    np.testing.assert_allclose(projection_cka(streamed, r, [2, 9], debiased=True, x=mm, chunk_size=7),
                               projection_cka(whole, r, [2, 9], debiased=True, x=x), rtol=0, atol=TOL)


def test_one_pass_accumulator_corrects_its_provisional_shift_exactly():
    x = features(n=90, d=7, seed=19, offset=20.0).astype(np.float64)
    x[:10] += 5.0  # the first chunk's mean is far from the global mean
    acc = GramAccumulator(debiased=True)
    for s in range(0, 90, 10):
        acc.partial_fit(x[s : s + 10])
    stats = acc.stats()
    z = x - x.mean(0)
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(stats.gram, z.T @ z, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(stats.fourth, (z * z).T @ (z * z), rtol=1e-9, atol=1e-6)
    subsets = [np.array([0]), np.array([1, 4]), np.arange(7)]
    np.testing.assert_allclose(subset_cka(stats, subsets, debiased=True),
                               [naive_cka_debiased(x[:, s], x) for s in subsets], rtol=0, atol=TOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_pass_biased_statistics_merge_unlike_chunks_exactly(dtype):
    """gram_stats without fourth moments reads the rows once: each chunk centred at its own mean, the chunks
    merged with Chan et al.'s update. Rows sorted into groups whose means are 10^4 standard deviations apart
    (features cached class by class) and chunks of uneven size must give the two-pass float64 answer."""
    rng = np.random.default_rng(21)
    groups = [rng.normal(size=(n, 6)) + 1e4 * rng.normal(size=6) for n in (37, 50, 13)]
    x = np.concatenate(groups).astype(dtype)
    xf = x.astype(np.float64)
    z = xf - xf.mean(0)
    for chunk in (None, 11, 50, 7):
        stats = gram_stats(x, chunk_size=chunk)
        assert stats.fourth is None and stats.n_samples == 100
        np.testing.assert_allclose(stats.mean, xf.mean(0), rtol=1e-14, atol=1e-11)
        np.testing.assert_allclose(stats.gram, z.T @ z, rtol=1e-11, atol=1e-11 * np.abs(z.T @ z).max())
    acc = GramAccumulator()
    for a, b in ((0, 3), (3, 4), (4, 60), (60, 100)):  # 3 rows, then 1, then the rest
        acc.partial_fit(x[a:b])
    np.testing.assert_allclose(acc.stats().gram, z.T @ z, rtol=1e-11, atol=1e-11 * np.abs(z.T @ z).max())
    subsets = [np.array([0]), np.array([1, 4]), np.arange(6)]
    np.testing.assert_allclose(subset_cka(acc.stats(), subsets), [naive_cka(xf[:, s], xf) for s in subsets],
                               rtol=0, atol=TOL)


def test_values_too_large_for_float64_sums_say_so():
    x = np.full((4, 2), 1e308)
    with pytest.raises(FeatureError, match="too large to sum in float64 .*rescale"):
        gram_stats(x)


def test_accumulator_refuses_a_wrong_mean_and_empty_input():
    x = features(n=40, d=5, seed=20)
    acc = GramAccumulator(debiased=True, mean=x.mean(0) + 1.0)
    acc.partial_fit(x)
    with pytest.raises(FeatureError, match="mean passed to GramAccumulator is off"):
        acc.stats()
    with pytest.raises(FeatureError, match="no rows were accumulated"):
        GramAccumulator().stats()
    acc = GramAccumulator().partial_fit(x)
    with pytest.raises(FeatureError, match="chunk has 3 columns but earlier chunks had 5"):
        acc.partial_fit(x[:, :3])


# ------------------------------------------------------------------------------------ the curve
def test_cka_curve_table_matches_naive_values():
    x = features(n=40, d=10, seed=21)
    df = cka_curve(x, selectors=["random", "pca", "randproj", "all"], fractions=[0.1, 0.5, 1.0], seeds=2,
                   debiased=True)
    assert list(df.columns) == list(CKA_COLUMNS)
    assert len(df) == 3 * 3 * 2 + 2  # 'all' gives one row (fraction 1) per seed
    assert df[["selector", "fraction", "seed"]].drop_duplicates().shape[0] == len(df)
    assert set(df["n_neurons"]) == {1, 5, 10}
    assert (df["n_features"] == 10).all()
    np.testing.assert_allclose(df.loc[df.selector == "all", "cka"], 1.0, atol=1e-12)
    assert (df["n_fit"] == 40).all() and (df["val_fraction"] == 0.0).all()  # an array: fitted on all its rows
    for _, row in df.iterrows():
        # Projections: the probes' definition (fitted on standardised rows), not PCA of the raw features.
        part = probe_view(row.selector, int(row.seed), x, x, int(row.n_neurons))
        assert abs(row.cka - naive_cka(part, x)) < TOL
        assert abs(row.cka_debiased - naive_cka_debiased(part, x)) < TOL


def test_cka_curve_without_debiased_leaves_nan_and_reads_cache_entries(tmp_path):
    x, y = features(n=30, d=8, seed=22), np.arange(30) % 3
    xt = features(n=12, d=8, seed=23)
    entry = save_arrays_as_entry(tmp_path / "entry", {"train": (x, y), "test": (xt, np.arange(12) % 3)},
                                 {"model": "timm:tiny", "dataset": "toy", "layer": "penultimate"})
    df = cka_curve(entry, fractions=[0.25, 1.0], seeds=[1, 2])
    assert df["cka_debiased"].isna().all()
    assert df[["model", "dataset", "layer", "split"]].drop_duplicates().values.tolist() == [
        ["timm:tiny", "toy", "penultimate", "train"]]
    assert df["seed"].tolist() == [1, 1, 2, 2]
    test = cka_curve(load_features(entry), selectors="random,pca", fractions=[0.5], seeds=1, split="test")
    # Fitted on train's fit rows (train minus the probes' carved 10% validation), applied to test.
    fit_rows, _ = train_val_indices(y, 0.1, seed=0)
    want = naive_cka(probe_view("pca", 0, x[fit_rows], xt, 4), xt)
    assert abs(test.loc[test.selector == "pca", "cka"].item() - want) < TOL
    assert (test["n_fit"] == len(fit_rows)).all() and (test["val_fraction"] == 0.1).all()
    assert (test["split"] == "test").all()


# ----------------------------------------------------------------------------------- cross sets
def _entry(tmp_path, name, x, y, dataset="toy", split="train"):
    return save_arrays_as_entry(tmp_path / name, {split: (x, y)}, {"model": f"m:{name}", "dataset": dataset,
                                                                  "layer": "penultimate"})


def test_cka_between_two_feature_sets(tmp_path):
    y = np.arange(20) % 4
    xa, xb = features(n=20, d=6, seed=24), features(n=20, d=9, seed=25)
    a, b = _entry(tmp_path, "a", xa, y), _entry(tmp_path, "b", xb, y)
    assert abs(cka_between(a, b, debiased=True) - naive_cka_debiased(xa, xb)) < TOL
    np.savez(tmp_path / "a.npz", x_train=xa, y_train=y)
    np.savez(tmp_path / "other.npz", x_train=xb, y_train=y)  # a .npz's default dataset is its file stem
    assert abs(cka_between(tmp_path / "a.npz", tmp_path / "other.npz") - naive_cka(xa, xb)) < TOL


def test_cka_between_refuses_different_samples(tmp_path):
    y = np.arange(20) % 4
    xa, xb = features(n=20, d=6, seed=26), features(n=20, d=9, seed=27)
    a = _entry(tmp_path, "a", xa, y)
    with pytest.raises(FeatureError, match="labels of .* differ at .* different order"):
        cka_between(a, _entry(tmp_path, "shuffled", xb, y[::-1].copy()))
    with pytest.raises(FeatureError, match="has 20 train samples but .* has 19"):
        cka_between(a, _entry(tmp_path, "short", xb[:19], y[:19]))
    with pytest.raises(FeatureError, match="dataset 'toy' but .* from 'other'"):
        cka_between(a, _entry(tmp_path, "otherdata", xb, y, dataset="other"))
    with pytest.raises(FeatureError, match="has no 'test' split"):
        cka_between(a, a, split="test")


# ----------------------------------------------------------------------------------- bad input
def test_mismatched_sample_counts_and_bad_arrays():
    x = features(n=20, d=4)
    with pytest.raises(FeatureError, match="x has 20 samples but y has 19"):
        cka(x, x[:19])
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(FeatureError, match="NaN or inf .*row 5"):
        cka(bad, x)
    with pytest.raises(FeatureError, match="NaN or inf .*row 5"):
        gram_stats(bad)
    with pytest.raises(FeatureError, match="must be a 2-D array"):
        cka(x[:, 0], x)
    with pytest.raises(ConfigError, match="method must be one of"):
        cka(x, x, method="fast")


@pytest.mark.parametrize("method", ["features", "samples"])
def test_constant_features_say_so_instead_of_nan(method):
    x = features(n=20, d=4)
    const = np.full((20, 3), 0.1)  # float64 0.1 does not sum exactly: rounding must not fake variance
    with pytest.raises(FeatureError, match="y has zero variance .*constant"):
        cka(x, const, method=method)
    with pytest.raises(FeatureError, match="zero variance .*all 3 neurons are constant"):
        subset_cka(gram_stats(const), [np.arange(2)])


def test_constant_subsets_raise_or_give_nan():
    x = features(n=30, d=6).astype(np.float64)
    x[:, 2] = 3.7  # a dead neuron
    stats = gram_stats(x, debiased=True)
    assert stats.constant.tolist() == [False, False, True, False, False, False]
    with pytest.raises(FeatureError, match=r"subset 1 \(1 neurons\) holds only constant .*on_constant='nan'"):
        subset_cka(stats, [np.array([0]), np.array([2])])
    got = subset_cka(stats, [np.array([0]), np.array([2]), np.array([2, 4])], debiased=True, on_constant="nan")
    assert np.isnan(got[1]) and np.isfinite(got[[0, 2]]).all()
    assert abs(got[2] - naive_cka_debiased(x[:, [2, 4]], x)) < TOL  # a constant neuron adds nothing
    dead_first = x[:, [2, 0, 1, 3, 4, 5]]
    with pytest.raises(FeatureError, match="holds only constant"):
        cka_curve(dead_first, selectors=["prefix"], fractions=[1, 2], seeds=1, on_constant="raise")
    # The default (critmass._defaults.DEFAULT_ON_CONSTANT, shared with the sweep) gives NaN.
    assert np.isnan(cka_curve(dead_first, selectors=["prefix"], fractions=[1, 2], seeds=1)["cka"].iloc[0])
    df = cka_curve(dead_first, selectors=["prefix"], fractions=[1, 2], seeds=1, on_constant="nan", debiased=True)
    assert np.isnan(df["cka"].iloc[0]) and np.isnan(df["cka_debiased"].iloc[0])
    assert abs(df["cka"].iloc[1] - naive_cka(x[:, [2, 0]], x)) < TOL


def test_constant_projection_is_refused():
    x = features(n=30, d=5).astype(np.float64)
    x[:, 4] = 1.0
    basis = np.eye(5)[:, [4, 0]]  # first direction sees only the constant neuron
    with pytest.raises(FeatureError, match="1-dimensional projection has zero variance"):
        projection_cka(gram_stats(x), basis, [1, 2])
    got = projection_cka(gram_stats(x), basis, [1, 2], on_constant="nan")
    assert np.isnan(got[0]) and np.isfinite(got[1])


def test_debiased_needs_four_samples():
    x = features(n=3, d=4)
    with pytest.raises(FeatureError, match="at least 4 samples .*got n=3"):
        cka(x, x, debiased=True)
    with pytest.raises(FeatureError, match="at least 4 samples"):
        subset_cka(gram_stats(x, debiased=True), [np.arange(2)], debiased=True)
    with pytest.raises(FeatureError, match="at least 4 samples"):
        cka_curve(x, fractions=[0.5], seeds=1, debiased=True)
    assert np.isfinite(cka(x, x))  # the biased estimator is fine with 3


def test_api_misuse_is_one_line():
    x = features(n=20, d=6)
    stats = gram_stats(x)
    with pytest.raises(ConfigError, match=r"build them with gram_stats\(x, debiased=True\)"):
        subset_cka(stats, [np.arange(2)], debiased=True)
    with pytest.raises(ConfigError, match="wrap it in a list"):
        subset_cka(stats, np.arange(3))
    with pytest.raises(ConfigError, match="neuron index 6, outside"):
        subset_cka(stats, [np.array([1, 6])])
    with pytest.raises(ConfigError, match="non-empty 1-D array"):
        subset_cka(stats, [np.array([], dtype=int)])
    with pytest.raises(ConfigError, match="needs the features"):
        projection_cka(stats, np.eye(6), debiased=True)
    with pytest.raises(FeatureError, match="not the data these Gram statistics"):
        projection_cka(stats, np.eye(6), debiased=True, x=x + 1.0)
    with pytest.raises(ConfigError, match=r"components must have shape \(6, n_components\)"):
        projection_cka(stats, np.eye(5))
    with pytest.raises(ConfigError, match="outside"):
        projection_cka(stats, np.eye(6), [7])
    with pytest.raises(ConfigError, match="on_constant must be one of"):
        subset_cka(stats, [np.arange(2)], on_constant="zero")
    with pytest.raises(SpecError, match="unknown selector 'randm' .*closest: random"):
        cka_curve(x, selectors=["randm"])
    with pytest.raises(ConfigError, match="seeds must be a count"):
        cka_curve(x, seeds=[])
    with pytest.raises(ConfigError, match=r"fraction must be in \(0, 1\]"):
        cka_curve(x, fractions=[1.5])


def test_curve_output_is_a_dataframe_with_typed_columns():
    df = cka_curve(features(n=20, d=6), fractions=[0.5], seeds=1)
    assert isinstance(df, pd.DataFrame)
    assert df.dtypes["n_neurons"] == np.int64 and df.dtypes["cka"] == np.float64
