"""run_probes(n_jobs=...): the logistic fits split over forked worker processes give the same probes
(the same rows, penalties and, to the solver's tolerance, objectives) as one process."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from choice_oracle import assert_same_choice, chosen_shift
from scipy.special import logsumexp

from critmass.data._splits import train_val_indices
from critmass.exceptions import ConfigError
from critmass.probes import run_probes
from critmass.probes._base import standard_scale
from critmass.probes._parallel import AUTO_MIN_WORK, resolve_n_jobs, split_even

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
KEYS = ["selector", "seed", "fraction", "n_neurons"]


def _data(n=1200, d=48, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, 6)) @ rng.normal(size=(6, d)) * 0.15  # overlapping classes
    y = rng.integers(0, classes, n + n // 3)
    x = (means[y] + rng.normal(size=(len(y), d))).astype(np.float32)
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}


def _npz(tmp_path, data):
    path = tmp_path / "f.npz"
    np.savez(path, **data)
    return path


def _objective(data, weights_file, k, fit_rows, mean, scale):
    """Mean cross-entropy + alpha/2 ||W||^2 (W in standardised units) of a saved probe, in float64."""
    w = np.load(weights_file)
    cols, coef, b, alpha = w[f"indices_{k}"], w[f"coef_{k}"].astype(np.float64), w[f"intercept_{k}"], float(w[f"reg_{k}"])
    x, y = data["x_train"][fit_rows][:, cols].astype(np.float64), data["y_train"][fit_rows]
    logits = x @ coef.T + b
    pos = np.searchsorted(w["classes"], y)
    ce = np.mean(logsumexp(logits, 1) - logits[np.arange(len(y)), pos])
    return ce + 0.5 * alpha * np.sum((coef * scale[cols][None, :]) ** 2)


def test_split_even_is_contiguous_and_as_balanced_as_a_brute_force_cut():
    rng = np.random.default_rng(1)
    for trial in range(60):
        m, n = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        costs = rng.integers(1, 50, m).tolist()
        runs = split_even(costs, n)
        assert runs[0][0] == 0 and runs[-1][1] == m
        assert all(a < b for a, b in runs) and all(r[1] == s[0] for r, s in zip(runs, runs[1:]))
        assert len(runs) <= n
        got = max(sum(costs[a:b]) for a, b in runs)
        # The best contiguous cut into at most n runs (brute force): the nearest-boundary rule is within one
        # item of its share, so at most the optimum plus the largest item.
        best = min(max(sum(costs[a:b]) for a, b in zip((0, *cut), (*cut, m)))
                   for r in range(min(n, m)) for cut in itertools.combinations(range(1, m), r))
        assert got <= best + max(costs), (costs, n, runs)
    assert split_even([5, 5, 5, 5], 2) == [(0, 2), (2, 4)]
    assert split_even([1, 1, 100], 3) == [(0, 1), (1, 2), (2, 3)]


def test_auto_uses_one_process_unless_the_run_is_large_and_logistic_on_a_cpu(monkeypatch):
    monkeypatch.setattr("critmass.probes._parallel.usable_cores", lambda: 2)
    big = 10 * AUTO_MIN_WORK
    on_linux = 2 if sys.platform.startswith("linux") else 1
    assert resolve_n_jobs("auto", solver="logistic", device="cpu", work=big, pieces=30) == on_linux
    assert resolve_n_jobs(None, solver="logistic", device="cpu", work=big, pieces=30) == on_linux
    assert resolve_n_jobs("auto", solver="logistic", device="cpu", work=AUTO_MIN_WORK / 10, pieces=30) == 1
    assert resolve_n_jobs("auto", solver="logistic", device="cuda", work=big, pieces=30) == 1
    assert resolve_n_jobs("auto", solver="ridge", device="cpu", work=big, pieces=30) == 1
    assert resolve_n_jobs("auto", solver="logistic", device="cpu", work=big, pieces=1) == 1
    assert resolve_n_jobs(3, solver="logistic", device="cpu", work=1, pieces=2) == on_linux
    for bad in (0, -1, 1.5, True, "two"):
        with pytest.raises(ConfigError, match="n_jobs must be a positive integer or 'auto'"):
            resolve_n_jobs(bad, solver="logistic", device="cpu", work=1, pieces=2)


def test_bad_n_jobs_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="n_jobs must be a positive integer or 'auto'; got 0"):
        run_probes(_npz(tmp_path, _data(n=200)), n_jobs=0, device="cpu")


@pytest.mark.numeric
@linux
@pytest.mark.parametrize("penalty_rule", ["per-probe", "first-seed"])
def test_two_processes_fit_the_same_probes_as_one(tmp_path, penalty_rule):
    data = _data()
    path = _npz(tmp_path, data)
    kw = dict(selectors=["random", "pca"], fractions=[0.05, 0.1, 0.25, 0.5, 1.0], seeds=[0, 1, 2], device="cpu",
              penalty_rule=penalty_rule)
    one = run_probes(path, n_jobs=1, out=tmp_path / "one", **kw)
    two = run_probes(path, n_jobs=2, out=tmp_path / "two", **kw)
    a = one.results.sort_values(KEYS).reset_index(drop=True)
    b = two.results.sort_values(KEYS).reset_index(drop=True)
    assert a[KEYS].equals(b[KEYS]) and len(a) == 1 + 5 + 3 * 5
    assert (a.weights_file == b.weights_file).all()
    assert sorted(p.name for p in (tmp_path / "one" / "weights").iterdir()) == \
        sorted(p.name for p in (tmp_path / "two" / "weights").iterdir())
    # Both minimise the same alpha-strongly convex objective until the max-abs gradient is below tol=1e-5 (or
    # an iteration gains less than ftol=1e-7 of it): each is within m tol^2 / (2 alpha) of the optimum (m
    # parameters), so the two agree to that sum, plus 1e-4 relative for the ftol stop; a penalty choice can
    # differ only on a near tie.
    fit_rows, _ = train_val_indices(data["y_train"], 0.1, seed=0)
    mean, scale = standard_scale([data["x_train"]], [fit_rows])
    # A penalty choice may differ only where its choice_margin is within what the shift of validation counts
    # between the two float orders can cross (choice_oracle), and then within the tie band.
    n_val = int(a.n_val.iloc[0])
    same = (a.reg == b.reg).to_numpy()
    shift = chosen_shift(a.val_accuracy, b.val_accuracy, same, n_val)
    asserted = 0
    for (_, ra), (_, rb) in zip(a.iterrows(), b.iterrows()):
        asserted += assert_same_choice(ra.reg, rb.reg, ra.choice_margin, rb.choice_margin, shift=shift, val_a=ra.val_accuracy,
                           val_b=rb.val_accuracy, n_val=n_val, what=f"{ra.selector} {ra.seed} {ra.n_neurons}")
        if ra.selector == "pca":
            continue  # projected features: the weights index the projection's outputs
        if ra.reg == rb.reg:
            oa = _objective(data, tmp_path / "one" / ra.weights_file, ra.n_neurons, fit_rows, mean, scale)
            ob = _objective(data, tmp_path / "two" / rb.weights_file, rb.n_neurons, fit_rows, mean, scale)
            m = (ra.n_neurons + 1) * 4
            assert abs(oa - ob) <= 1e-4 * abs(oa) + m * 1e-10 / ra.reg, (ra.selector, ra.seed, ra.n_neurons, oa, ob)
    assert asserted >= len(a) // 2  # not vacuous: most choices agree (asserted equal), few are knife edges
    assert np.abs(a.test_accuracy - b.test_accuracy)[same].max() <= 0.02
    assert len(one.per_class) == len(two.per_class)


# ------------------------------------------------------------------------- repeated sets, the full layer
@pytest.mark.numeric
@pytest.mark.parametrize("solver", ["logistic", "ridge"])
def test_a_repeated_column_set_is_fitted_once_and_reordered(solver, monkeypatch):
    from critmass.probes import LogisticProbe, RidgeProbe

    data = _data(n=600, d=20)
    X, y = data["x_train"], data["y_train"]
    perm = np.random.default_rng(3).permutation(20)
    cls = LogisticProbe if solver == "logistic" else RidgeProbe
    fitted = []
    original = cls._fit_all

    def counting(self, data_, subsets, alphas):
        fitted.append(len(subsets))
        return original(self, data_, subsets, alphas)

    monkeypatch.setattr(cls, "_fit_all", counting)
    both = cls(subsets=[np.arange(20), perm, perm[:5]], device="cpu").fit(X, y)
    assert fitted == [2]  # the permuted full set is the same problem as the full set
    np.testing.assert_array_equal(both.coefs_[1], both.coefs_[0][:, perm])  # its weights in its own order
    np.testing.assert_allclose(both.intercepts_[1], both.intercepts_[0], rtol=1e-12, atol=1e-15)  # summed in its order
    assert both.regs_[1] == both.regs_[0] and both.n_iter_[1] == both.n_iter_[0]
    pred = both.predict_subsets(data["x_test"])
    np.testing.assert_array_equal(pred[1], pred[0])
    alone = cls(subsets=[perm, perm[:5]], device="cpu").fit(X, y)  # fitted in the permuted order: same optimum
    np.testing.assert_allclose(both.decision_function_subsets(data["x_test"])[1],
                               alone.decision_function_subsets(data["x_test"])[0], atol=2e-3)
    np.testing.assert_array_equal(pred[2], alone.predict_subsets(data["x_test"])[1])


def test_full_layer_false_leaves_the_reference_to_another_run(tmp_path):
    path = _npz(tmp_path, _data(n=300, d=16))
    res = run_probes(path, fractions=[0.5, 1.0], seeds=[0], full_layer=False, device="cpu", solver="ridge")
    assert set(res.results.selector) == {"random"}
    res = run_probes(path, selectors=["all"], fractions=[1.0], seeds=[0], full_layer=False, device="cpu",
                     solver="ridge")
    assert list(res.results.selector) == ["all"]
    with pytest.raises(ConfigError, match="no selectors"):
        run_probes(path, selectors=[], full_layer=False, device="cpu")


def test_a_sweep_fits_the_full_layer_once_per_model_dataset_and_solver(tmp_path):
    from critmass.sweep import plan_sweep, run_sweep

    cfg = {"output": str(tmp_path / "run"), "cache": str(tmp_path / "cache"), "device": "cpu", "batch_size": 16,
           "num_workers": 0, "models": [{"spec": "timm:test_resnet", "pretrained": False, "image_size": 32}],
           "datasets": [{"spec": "textures"}], "selectors": ["random", "pca"], "fractions": [0.25, 1.0],
           "seeds": [0, 1, 2], "solvers": ["ridge", "logistic"], "cka": False, "probes": {"device": "cpu"}}
    probes = plan_sweep(cfg).of_kind("probe")
    assert len(probes) == 2 * 4
    for solver in ("ridge", "logistic"):
        mine = [u for u in probes if u.params["solver"] == solver]
        assert [u.params.get("full_layer", True) for u in mine] == [True, False, False, False]
    res = run_sweep(cfg, workers=1)
    assert res.ok, res.failures
    full = res.results[res.results.selector == "all"]
    assert sorted(full.solver) == ["logistic", "ridge"]


def test_cli_n_jobs(tmp_path, capsys):
    from critmass.cli._app import main

    path = _npz(tmp_path, _data(n=300, d=16))
    rc = main(["probe", str(path), "--fractions", "0.5,1", "--seeds", "2", "--n-jobs", "2", "--device", "cpu",
               "--out", str(tmp_path / "out")])
    assert rc == 0 and "wrote 5 probe rows" in capsys.readouterr().out
    for bad in ("two", "0"):
        rc = main(["probe", str(path), "--n-jobs", bad, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert rc != 0 and "n-jobs" in err.replace("n_jobs", "n-jobs") and "Traceback" not in err
        assert not (tmp_path / "bad" / "results.parquet").exists()


@linux
def test_warnings_of_the_workers_reach_the_caller(tmp_path):
    from critmass.probes._base import ConstantSubsetWarning

    data = _data(n=400, d=16)
    data["x_train"][:, 1:] = 1.0  # 15 of the 16 neurons constant: most 1-neuron subsets see nothing
    data["x_test"][:, 1:] = 1.0
    with pytest.warns(ConstantSubsetWarning, match="hold only constant"):
        run_probes(_npz(tmp_path, data), fractions=[1 / 16, 1.0], seeds=[0, 1, 2, 3], n_jobs=2, device="cpu")
