"""Neuron selectors against independent computations (numpy, scikit-learn, brute-force loops)."""

import numpy as np
import pytest

from critmass._validation import resolve_sizes
from critmass.exceptions import ConfigError, FeatureError, NotFittedError, SpecError
from critmass.subsets import covariance, list_selectors, make_selector


@pytest.fixture
def X(rng):
    return (rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + rng.normal(size=12)).astype(np.float32)


def fitted(name, X, **kw):
    """A fitted selector; supervised ones get labels that depend on the features (3 classes)."""
    sel = make_selector(name, **kw)
    if sel.requires_y:
        return sel.fit(X, np.digitize(X[:, 0] + X[:, 1], np.quantile(X[:, 0] + X[:, 1], [1 / 3, 2 / 3])))
    return sel.fit(X)


@pytest.mark.numeric
@pytest.mark.parametrize("name", sorted(list_selectors()))
def test_every_selector_is_nested_seeded_and_shaped(name, X):
    a = fitted(name, X, random_state=3)
    b = fitted(name, X, random_state=3)
    for k in (1, 5, 12):
        za, zb = a.transform(X, k), b.transform(X, k)
        assert za.shape == (300, k) and za.dtype == np.float32
        np.testing.assert_array_equal(za, zb)  # same seed, same subset
    # Nested: the k-subset's view is the first k columns of the full view.
    np.testing.assert_allclose(a.transform(X, 5), a.transform(X, 12)[:, :5], rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="outside \\[1, 12\\]"):
        a.subset(13)


def test_random_is_the_papers_seeded_permutation(X):
    sel = make_selector("random", random_state=7).fit(X)
    perm = np.random.default_rng(7).permutation(12)
    np.testing.assert_array_equal(sel.subset(4)[0], perm[:4])
    np.testing.assert_array_equal(sel.transform(X, 4), X[:, perm[:4]])
    other = make_selector("random", random_state=8).fit(X)
    assert not np.array_equal(other.order_, sel.order_)


@pytest.mark.numeric
def test_pca_matches_sklearn(X):
    from sklearn.decomposition import PCA

    ref = PCA().fit(X)
    top = make_selector("pca").fit(X)
    np.testing.assert_allclose(np.abs(top.components_.T), np.abs(ref.components_), atol=1e-5)
    np.testing.assert_allclose(top.explained_variance_ * 300 / 299, ref.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(np.abs(top.transform(X, 3)), np.abs(ref.transform(X)[:, :3]), rtol=1e-4, atol=1e-4)
    least = make_selector("pca-least").fit(X)
    np.testing.assert_allclose(np.abs(least.transform(X, 2)), np.abs(ref.transform(X)[:, ::-1][:, :2]), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.numeric
def test_random_projections(X):
    g = make_selector("randproj", random_state=0).fit(X)
    R = np.random.default_rng(0).standard_normal((12, 12)) / np.sqrt(12)
    np.testing.assert_allclose(g.components_, R)
    np.testing.assert_allclose(g.transform(X, 4), X.astype(np.float64) @ R[:, :4], rtol=1e-5, atol=1e-5)
    u = make_selector("randproj-uniform", random_state=0).fit(X)
    raw = np.random.default_rng(0).random((12, 12))
    np.testing.assert_allclose(u.components_, raw / np.sqrt((raw**2).sum(0)))
    np.testing.assert_allclose(np.linalg.norm(u.components_, axis=0), 1.0)


@pytest.mark.numeric
def test_norm_selectors_against_a_loop(X):
    norms = [np.sqrt(sum(float(X[i, j]) ** 2 for i in range(X.shape[0]))) for j in range(X.shape[1])]
    top3 = sorted(range(12), key=lambda j: -norms[j])[:3]
    bottom3 = sorted(range(12), key=lambda j: norms[j])[:3]
    assert list(make_selector("norm-max").fit(X).subset(3)[0]) == top3
    assert list(make_selector("norm-min").fit(X).subset(3)[0]) == bottom3


def test_prefix_and_all(X):
    np.testing.assert_array_equal(make_selector("prefix").fit(X).transform(X, 5), X[:, :5])
    np.testing.assert_array_equal(make_selector("all").fit(X).transform(X, 12), X)


@pytest.mark.numeric
def test_covariance_streams_over_chunks(X):
    mean, cov = covariance(X, chunk=37)
    np.testing.assert_allclose(mean, X.astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(X.astype(np.float64), rowvar=False, bias=True), rtol=1e-9, atol=1e-9)


def test_resolve_sizes():
    assert resolve_sizes([0.0005, 0.1, 0.5, 1.0], 2048) == [1, 205, 1024, 2048]
    assert resolve_sizes([3, 0.25], 8) == [3, 2]
    for bad in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
            resolve_sizes([bad], 10)
    with pytest.raises(ConfigError, match="outside \\[1, 10\\]"):
        resolve_sizes([11], 10)


def test_selector_errors(X):
    with pytest.raises(SpecError, match="unknown selector 'pcaa'.*closest: pca"):
        make_selector("pcaa")
    with pytest.raises(NotFittedError, match="call fit"):
        make_selector("random").subset(2)
    bad = X.copy()
    bad[5, 2] = np.nan
    with pytest.raises(FeatureError, match="NaN or inf.*row 5"):
        make_selector("random").fit(bad)


@pytest.mark.parametrize("name", sorted(list_selectors()))
def test_deterministic_flag_matches_behaviour(name, X):
    a, b = fitted(name, X, random_state=1), fitted(name, X, random_state=2)
    same = np.array_equal(a.transform(X, 6), b.transform(X, 6))
    assert same == make_selector(name).deterministic
