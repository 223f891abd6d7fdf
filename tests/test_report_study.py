"""`critmass report` shows what a `critmass study` sweep leaves in the run directory: top neurons, their overlap
and stability, the exported critical-mass subset, inversion per dataset and depth profiles of several datasets."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from critmass.exceptions import DataError
from critmass.invert import METRICS
from critmass.metrics import chance_jaccard, dr
from critmass.report import build_report, load_run
from critmass.report._profile import profile_figures, profile_notes

from test_report import MODELS, make_run
from test_report_invert import make_inversion

STUDY_FILES = ("neurons.parquet", "neuron_overlap.parquet", "neuron_stability.parquet", "export.parquet",
               "study_table.parquet")
MODEL, D = "timm:resnet18", MODELS["timm:resnet18"]
DATASETS = ("cifar10", "flowers")
K_TOP = 32


# ------------------------------------------------------------------------------------------ synthetic tables
def make_neurons() -> pd.DataFrame:
    """What concatenated `critmass.metrics.top_neurons` outputs look like (its columns, in its order)."""
    rng = np.random.default_rng(1)
    shared = rng.choice(D, 4, replace=False)  # the first four neurons of every dataset's list
    rows = []
    for sel in ("fscore", "greedy"):
        for ds in DATASETS:
            rest = rng.permutation(np.setdiff1d(np.arange(D), shared))[: K_TOP - len(shared)]
            order = np.concatenate([shared, rest])
            scores = np.sort(rng.gamma(2.0, 3.0, K_TOP))[::-1] if sel == "fscore" else np.full(K_TOP, np.nan)
            for r, (n, s) in enumerate(zip(order, scores), start=1):
                rows.append({"run": "/runs/study", "model": MODEL, "weights": "", "dataset": ds, "layer": "penultimate",
                             "pooling": "auto", "selector": sel, "n_features": D, "rank": r, "neuron": int(n),
                             "score": float(s)})
    return pd.DataFrame(rows)


def make_overlap(neurons: pd.DataFrame) -> pd.DataFrame:
    """`neuron_overlap`'s table of the synthetic top lists (k = 8 and 32)."""
    rows = []
    for sel, g in neurons.groupby("selector", sort=False):
        a, b = (g[g["dataset"] == ds].sort_values("rank")["neuron"].to_numpy() for ds in DATASETS)
        for k in (8, 32):
            sa, sb = set(a[:k]), set(b[:k])
            rows.append({"model": MODEL, "weights": "", "layer": "penultimate", "n_features": D, "selector": sel,
                         "k": k, "run_a": "/runs/study", "dataset_a": DATASETS[0], "pooling_a": "auto",
                         "run_b": "/runs/study", "dataset_b": DATASETS[1], "pooling_b": "auto",
                         "n_shared": len(sa & sb), "jaccard": len(sa & sb) / len(sa | sb),
                         "chance": chance_jaccard(k, D)})
    return pd.DataFrame(rows)


def make_stability() -> pd.DataFrame:
    rows = []
    for i, ds in enumerate(DATASETS):
        for k in (8, 32):
            j = 0.8 - 0.2 * i - 0.001 * k
            rows.append({"run": "/runs/study", "model": MODEL, "weights": "", "dataset": ds, "layer": "penultimate",
                         "pooling": "auto", "selector": "fscore", "n_features": D, "k": k, "n_fit": 900, "n_boot": 20,
                         "jaccard": j, "jaccard_low": j - 0.1, "jaccard_high": j + 0.05, "pairwise": j - 0.05,
                         "pairwise_low": j - 0.15, "pairwise_high": j, "n_core": k // 2 - i,
                         "chance": chance_jaccard(k, D)})
    return pd.DataFrame(rows)


def make_export() -> pd.DataFrame:
    """Two exports, a pruned full model (FLOPs counted, CI) and a head-only one (no backbone, no CI), and a layer whose
    critical mass is the whole layer (nothing exported: the sweep writes the key columns only)."""
    nan = np.nan
    return pd.DataFrame([
        {"model": MODEL, "dataset": "cifar10", "layer": "penultimate", "solver": "logistic", "selector": "random",
         "fraction": 0.05, "k": 26, "n_features": D, "seed": 0, "delta": 0.9, "kind": "pruned", "bytes_full": 4 * D,
         "bytes_reduced": 4 * 26, "params_full": 11_689_512.0, "params_exported": 10_512_000.0,
         "flops_full": 1_819_066_368.0, "flops_exported": 1_700_000_000.0, "head_params_full": 5130.0,
         "head_params_reduced": 270.0, "full_test_accuracy": 0.91, "subset_test_accuracy": 0.893,
         "accuracy_cost": 0.017, "accuracy_cost_low": 0.009, "accuracy_cost_high": 0.025, "latency_full_ms": 12.5,
         "latency_exported_ms": 11.0, "export_dir": "exports/resnet18-cifar10"},
        {"model": "timm:vit_small_patch16_224", "dataset": "flowers", "layer": "penultimate", "solver": "logistic",
         "selector": "random", "fraction": 0.1, "k": 38, "n_features": 384, "seed": 0, "delta": 0.9,
         "kind": "head-only", "bytes_full": 4 * 384, "bytes_reduced": 4 * 38, "params_full": nan,
         "params_exported": nan, "flops_full": nan, "flops_exported": nan, "head_params_full": 3080.0,
         "head_params_reduced": 312.0, "full_test_accuracy": 0.8, "subset_test_accuracy": 0.77,
         "accuracy_cost": 0.03, "accuracy_cost_low": nan, "accuracy_cost_high": nan, "latency_full_ms": nan,
         "latency_exported_ms": nan, "export_dir": "exports/vit-flowers"},
        {"model": "timm:vit_small_patch16_224", "dataset": "cifar10", "layer": "penultimate", "solver": "logistic",
         "selector": "random", "delta": 0.99, "k": 384, "n_features": 384, "seed": 0, "full_test_accuracy": 0.7,
         "kind": "not-reached", "fraction": nan},
    ])


def make_study_table() -> pd.DataFrame:
    """What `critmass study` writes as study_table.parquet (critmass.study.study_table plus its delta): cifar10 with
    every selector, flowers without PCA and with a diffuseness the grid only bounds from below."""
    nan = np.nan
    return pd.DataFrame([
        {"model": MODEL, "dataset": "cifar10", "layer": "penultimate", "n_features": D, "full_accuracy": 0.912,
         "dr_random": 1 - 64 / D, "dr_random_low": 0.86, "dr_random_high": 0.89, "k_random": 64.0,
         "dr_pca": 1 - 8 / D, "dr_pca_low": 0.98, "dr_pca_high": 0.99, "k_pca": 8.0, "best_selector": "fscore",
         "dr_best": 1 - 16 / D, "dr_best_low": 0.96, "dr_best_high": 0.97, "k_best": 16.0, "diffuseness": 4.0,
         "diffuseness_bound": "", "delta": 0.95},
        {"model": MODEL, "dataset": "flowers", "layer": "penultimate", "n_features": D, "full_accuracy": 0.801,
         "dr_random": 0.75, "dr_random_low": nan, "dr_random_high": nan, "k_random": 128.0, "dr_pca": nan,
         "dr_pca_low": nan, "dr_pca_high": nan, "k_pca": nan, "best_selector": "greedy", "dr_best": 1 - 5 / D,
         "dr_best_low": nan, "dr_best_high": nan, "k_best": 5.0, "diffuseness": 25.6, "diffuseness_bound": "lower",
         "delta": 0.95},
    ])


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A probe run (test_report.make_run, one of its models: half the figures to draw) and its report without any
    study table."""
    path = make_run(tmp_path_factory.mktemp("base") / "run", per_class=False, cka=False)
    res = pd.read_parquet(path / "results.parquet")
    res[res["model"] == MODEL].to_parquet(path / "results.parquet", index=False)
    return path, build_report(path, formats="png", n_boot=0)


@pytest.fixture(scope="module")
def study(base, tmp_path_factory):
    """The same run with the five study tables beside results.parquet, and its report."""
    path = tmp_path_factory.mktemp("study") / "run"
    shutil.copytree(base[0], path, ignore=shutil.ignore_patterns("report"))
    neurons = make_neurons()
    tabs = {"neurons.parquet": neurons, "neuron_overlap.parquet": make_overlap(neurons),
            "neuron_stability.parquet": make_stability(), "export.parquet": make_export(),
            "study_table.parquet": make_study_table()}
    for name, df in tabs.items():
        df.to_parquet(path / name, index=False)
    return path, tabs, build_report(path, formats="png", n_boot=0)


def _section(page: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.DOTALL)
    assert m, anchor
    return m.group(1)


def _normalise(page: str, path: Path) -> str:
    page = re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "generated T", page)
    return page.replace(str(path.resolve()), "RUN")


# ------------------------------------------------------------------------------------------------ neurons
def test_neuron_tables_are_the_inputs(study):
    _, tabs, rep = study
    for name in ("neurons", "neuron_overlap", "neuron_stability"):
        csv = pd.read_csv(rep.tables[f"{name}.csv"], keep_default_na=False, na_values=[""])
        src = tabs[f"{name}.parquet"]
        assert list(csv.columns) == list(src.columns) and len(csv) == len(src)
        for c in src.columns:
            if pd.api.types.is_numeric_dtype(src[c]):
                np.testing.assert_allclose(csv[c].to_numpy(float), src[c].to_numpy(float), rtol=1e-12, err_msg=c)
            else:
                assert list(csv[c].astype(object).where(csv[c].notna(), "").astype(str)) == list(src[c].astype(str)), c


def test_which_neurons_section_lists_the_top_ten_and_the_overlap(study):
    _, tabs, rep = study
    page = rep.html.read_text()
    sec = _section(page, "sec-neurons")
    assert "<h2>Which neurons</h2>" in sec and '<a href="#sec-neurons">Which neurons</a>' in page
    assert page.index('id="sec-neurons"') < page.index('id="sec-config"')
    neurons = tabs["neurons.parquet"]
    table = re.search(r'<table class="cm-table" id="neurons">(.*?)</table>', sec, re.DOTALL).group(1)
    assert len(re.findall(r"<tr><td>", table)) == 4  # 2 selectors x 2 datasets
    g = neurons[(neurons["selector"] == "fscore") & (neurons["dataset"] == "flowers")].sort_values("rank")
    cell = ", ".join(f"#{n} ({s:.3g})" for n, s in zip(g["neuron"][:10], g["score"][:10]))
    assert f"<td>{MODEL}</td><td>penultimate</td><td>fscore</td><td>flowers</td><td>{D}</td><td>{cell}</td>" in table
    assert f"#{g['neuron'].iloc[10]} (" not in cell  # ten only
    g = neurons[(neurons["selector"] == "greedy") & (neurons["dataset"] == "cifar10")].sort_values("rank")
    assert "<td>" + ", ".join(f"#{n}" for n in g["neuron"][:10]) + "</td>" in table  # no score: index only
    # Notes: best neuron per dataset, the shared ones among the top 10.
    shared = neurons[neurons["rank"] <= 4]["neuron"].unique()
    assert f"4 of the top 10 are in every dataset&#x27;s list (#{shared[0]}" in sec
    # Overlap: shared / k, Jaccard next to chance.
    ov = tabs["neuron_overlap.parquet"]
    r = ov[(ov["selector"] == "fscore") & (ov["k"] == 32)].iloc[0]
    assert (f"<td>32</td><td>cifar10 vs flowers</td><td>{r['n_shared']} / 32</td><td>{r['jaccard']:.3f}</td>"
            f"<td>{r['chance']:.3g}</td><td>{r['jaccard'] / r['chance']:.1f}×</td>") in sec
    assert (f"At k = 32 the top-k sets of cifar10 and flowers share {r['n_shared']} of 32 neurons (Jaccard "
            f"{r['jaccard']:.3f}, chance {r['chance']:.3g}: {r['jaccard'] / r['chance']:.1f}× chance)") in sec
    # Stability.
    st = tabs["neuron_stability.parquet"]
    r = st[(st["dataset"] == "flowers") & (st["k"] == 32)].iloc[0]
    assert (f"<td>{r['jaccard']:.3f} [{r['jaccard_low']:.3f}, {r['jaccard_high']:.3f}]</td>" in sec
            and f"<td>{r['n_core']} / 32</td>" in sec)
    assert f"{int(r['n_core'])} of the 32 neurons are in every resample" in sec


# ------------------------------------------------------------------------------------------------- export
def test_export_csv_holds_the_numbers_and_ratios(study):
    _, tabs, rep = study
    src = tabs["export.parquet"]
    csv = pd.read_csv(rep.tables["export.csv"])
    assert len(csv) == len(src)
    for c in src.columns:
        if pd.api.types.is_numeric_dtype(src[c]):
            np.testing.assert_allclose(csv[c].to_numpy(float), src[c].to_numpy(float), rtol=1e-12, err_msg=c)
    np.testing.assert_allclose(csv["bytes_ratio"], src["bytes_reduced"] / src["bytes_full"], rtol=1e-12)
    np.testing.assert_allclose(csv["flops_ratio"], src["flops_exported"] / src["flops_full"], rtol=1e-12)
    np.testing.assert_allclose(csv["params_ratio"], src["params_exported"] / src["params_full"], rtol=1e-12)
    assert np.isnan(csv["flops_ratio"].iloc[1])  # head-only: no backbone
    assert csv["kind"].iloc[2] == "not-reached" and csv.iloc[2][["bytes_ratio", "accuracy_cost"]].isna().all()


def test_export_section_has_a_row_and_a_sentence_per_export(study):
    _, tabs, rep = study
    page = rep.html.read_text()
    sec = _section(page, "sec-export")
    assert "<h2>Spending it: the exported critical-mass subset</h2>" in sec
    src = tabs["export.parquet"]
    r = src.iloc[0]
    b = r["bytes_full"] / r["bytes_reduced"]
    assert f"<td>{int(r['bytes_full']):,} → {int(r['bytes_reduced']):,} ({b:.3g}× fewer)</td>" in sec
    assert "<td>1.82G → 1.7G (−6.5%)</td>" in sec and "<td>11.7M → 10.5M (−10.1%)</td>" in sec
    assert "<td>0.910 → 0.893</td><td>1.70 [0.90, 2.50]</td>" in sec
    saved = 100 * (1 - r["flops_exported"] / r["flops_full"])
    assert (f"Keeping the critical mass k* = 26 of {D} neurons of penultimate (fraction 0.05) cuts bytes per vector "
            f"{b:.3g}× and backbone FLOPs by {saved:.1f}% at an accuracy cost of 1.70 pt [0.90, 2.50].") in sec
    assert ("Keeping the critical mass k* = 38 of 384 neurons of penultimate (fraction 0.1) cuts bytes per vector "
            "10.1× (head-only export: the backbone is not part of it) at an accuracy cost of 3.00 pt.") in sec
    assert ("No subset of random neurons of penultimate smaller than the whole layer reaches 0.99 × full (k* = 384 of "
            "384), so nothing smaller was exported.") in sec
    assert "<td>not-reached</td><td>384 / 384</td><td>–</td>" in sec
    assert "exported critical-mass subsets: 3 (pruned, head-only, not-reached)" in page


# ----------------------------------------------------------------------------------------- the study's Table 1
def test_study_table_is_the_first_section_with_the_input_numbers(study):
    _, tabs, rep = study
    page = rep.html.read_text()
    sec = _section(page, "study-table")
    assert "<h2>The study: Table 1</h2>" in sec and '<a href="#study-table">Study table</a>' in page
    assert page.index("</header>") < page.index('<section id="study-table">') < page.index('id="sec-table1"')
    assert page.index('<a href="#study-table">') < page.index('<a href="#sec-table1">')  # first in the navigation
    table = re.search(r'<table class="cm-table" id="study">(.*?)</table>', sec, re.DOTALL).group(1)
    heads = re.findall(r'<th scope="col">([^<]*)</th>', table)
    assert heads == ["dataset", "neurons", "full accuracy", "DR(0.95) random [95% CI]", "k* random",
                     "DR(0.95) PCA [95% CI]", "k* PCA", "best ranking", "DR(0.95) best [95% CI]", "k* best",
                     "diffuseness"]  # the table's delta, not the report's; model and layer do not vary
    src = tabs["study_table.parquet"]
    c, f = src.iloc[0], src.iloc[1]
    assert (f"<tr><td>cifar10</td><td>{D}</td><td>0.912</td><td>{c['dr_random']:.2f} [0.86, 0.89]</td><td>64</td>"
            f"<td>{c['dr_pca']:.2f} [0.98, 0.99]</td><td>8</td><td>fscore</td><td>{c['dr_best']:.2f} [0.96, 0.97]"
            "</td><td>16</td><td>4.00</td></tr>") in table
    assert (f"<tr><td>flowers</td><td>{D}</td><td>0.801</td><td>0.75</td><td>128</td><td>–</td><td>–</td>"
            f"<td>greedy</td><td>{f['dr_best']:.2f}</td><td>5</td><td>25.60 (lower bound)</td></tr>") in table
    assert (f"<b>cifar10</b>: random neurons reach 95% of the full layer&#x27;s accuracy (0.912) with k* = 64 of {D} "
            f"(DR {c['dr_random']:.2f} [0.86, 0.89]); the best ranking, fscore, needs 16 (diffuseness 4.0).") in sec
    assert (f"<b>flowers</b>: random neurons reach 95% of the full layer&#x27;s accuracy (0.801) with k* = 128 of "
            f"{D} (DR 0.75); the best ranking, greedy, needs 5 (diffuseness 25.6, a lower bound).") in sec


def test_study_table_csv_is_the_input_and_the_required_columns_are_the_studys(study):
    from critmass.report._study import STUDY_TABLE_REQUIRED, interpret_study_table, study_table_display
    from critmass.study import STUDY_COLUMNS

    assert STUDY_TABLE_REQUIRED == STUDY_COLUMNS  # the report may not import the study: the two must agree
    _, tabs, rep = study
    src = tabs["study_table.parquet"]
    csv = pd.read_csv(rep.tables["study_table.csv"], keep_default_na=False, na_values=[""])
    assert rep.tables["study_table.csv"] == rep.out / "tables" / "study_table.csv"
    assert list(csv.columns) == list(src.columns) and len(csv) == len(src)
    for col in src.columns:
        if pd.api.types.is_numeric_dtype(src[col]):
            np.testing.assert_allclose(csv[col].to_numpy(float), src[col].to_numpy(float), rtol=1e-12, err_msg=col)
        else:
            assert list(csv[col].astype(object).where(csv[col].notna(), "").astype(str)) == list(src[col]), col
    # Without a delta column: DR(0.9); no supervised ranking: said so; varying layers become a column.
    bare = src.drop(columns="delta").assign(best_selector=[None, "fscore"], layer=["penultimate", "layer3"])
    bare.loc[0, ["dr_best", "k_best", "diffuseness"]] = np.nan
    disp = study_table_display(bare)
    assert list(disp.columns[:2]) == ["dataset", "layer"] and "DR(0.9) random [95% CI]" in disp.columns
    assert list(disp["best ranking"]) == ["–", "fscore"] and disp["diffuseness"].iloc[0] == "–"
    notes = interpret_study_table(bare)
    assert notes[0][0] == "cifar10 | penultimate"
    assert notes[0][1].startswith("random neurons reach 90% of the full layer's accuracy (0.912)")
    assert notes[0][1].endswith("; no supervised ranking was run.")


# ------------------------------------------------------------------------------------------------ absence
def test_without_study_tables_the_report_is_unchanged(base, study):
    (bpath, brep), (spath, _, srep) = base, study
    added = {"neurons.csv", "neuron_overlap.csv", "neuron_stability.csv", "export.csv", "study_table.csv"}
    assert not set(brep.tables) & added
    assert set(srep.tables) - set(brep.tables) == added
    assert brep.figures.keys() == srep.figures.keys()
    before = _normalise(brep.html.read_text(), bpath)
    assert 'id="sec-neurons"' not in before and 'id="sec-export"' not in before and 'id="study-table"' not in before
    after = _normalise(srep.html.read_text(), spath)
    for anchor in ("sec-neurons", "sec-export", "study-table"):  # take the study's sections, links and summaries out
        after = re.sub(rf'\n<section id="{anchor}">.*?</section>(?=\n)', "", after, flags=re.DOTALL)
        after = re.sub(rf'<a href="#{anchor}">[^<]*</a>', "", after)
    after = re.sub(r"<li>(top neurons|exported critical-mass subsets): [^<]*</li>", "", after)
    assert after == before


def test_bad_study_tables_are_one_line_errors(base, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(base[0], path, ignore=shutil.ignore_patterns("report"))
    make_neurons().drop(columns=["neuron", "rank"]).to_parquet(path / "neurons.parquet")
    with pytest.raises(DataError, match=r"neurons.parquet lacks column\(s\) rank, neuron; pass the concatenated "
                                        r"outputs of critmass.metrics.top_neurons") as e:
        build_report(path, formats="png", n_boot=0)
    assert "\n" not in str(e.value) and "critmass study" in str(e.value)
    assert not (path / "report").exists()  # checked before anything is written
    (path / "neurons.parquet").unlink()
    make_export().assign(kind="quantised").to_parquet(path / "export.parquet")
    with pytest.raises(DataError, match="kind value.*'quantised'; expected pruned, full, head-only"):
        build_report(path, formats="png", n_boot=0)
    (path / "export.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read .*export.parquet as Parquet"):
        build_report(path, formats="png", n_boot=0)
    (path / "export.parquet").unlink()
    make_study_table().drop(columns=["k_best", "diffuseness"]).to_parquet(path / "study_table.parquet")
    with pytest.raises(DataError, match=r"study_table.parquet lacks column\(s\) k_best, diffuseness; pass the output "
                                        r"of critmass.study.study_table") as e:
        build_report(path, formats="png", n_boot=0)
    assert "\n" not in str(e.value) and "critmass study" in str(e.value)
    assert not (path / "report").exists()


# -------------------------------------------------------------------------------------- inversion per dataset
def test_inversion_per_dataset_groups_by_dataset(tmp_path):
    src = make_inversion(tmp_path / "one")
    one = pd.read_parquet(src / "invert.parquet")
    other = one.copy()
    for m in ("rest_error_end", "subset_error_end"):
        other[m] = other[m] + 0.1
    table = pd.concat([one.assign(dataset="digits"), other.assign(dataset="hf:org/pets")], ignore_index=True)
    run = tmp_path / "study"
    run.mkdir()
    table.to_parquet(run / "invert.parquet", index=False)
    for ds in ("digits", "hf-org-pets"):
        for sel in ("random", "norm-max"):
            shutil.copy(src / f"invert_grid_{sel}.png", run / f"invert_grid_{ds}__{sel}.png")
    rep = build_report(run, formats="png")
    csv = pd.read_csv(rep.tables["invert.csv"])
    assert list(csv.columns[:3]) == ["model", "dataset", "layer"]
    assert len(csv) == 2 * one.groupby(["selector", "fraction", "inversion"]).ngroups
    for _, r in csv.iterrows():
        g = table[(table["dataset"] == r["dataset"]) & (table["selector"] == r["selector"])
                  & np.isclose(table["fraction"], r["fraction"]) & (table["inversion"] == r["inversion"])]
        assert r["n_targets"] == 2
        for m in METRICS:
            if not g[m].isna().all():
                assert r[m] == pytest.approx(g[m].mean(), abs=1e-12), (r["dataset"], m)
    page = rep.html.read_text()
    assert list(rep.figures) == ["invert_grid_digits__random", "invert_grid_digits__norm-max",
                                 "invert_grid_hf-org-pets__random", "invert_grid_hf-org-pets__norm-max",
                                 "invert_rest_error_digits", "invert_rest_error_hf-org-pets"]
    assert "Partial inversion: images (digits, random)" in page
    assert "Partial inversion: images (hf:org/pets, norm-max)" in page
    assert "Partial inversion: rest-of-layer error vs fraction (hf:org/pets)" in page
    table_html = re.search(r'<table class="cm-table" id="invert">(.*?)</table>', page, re.DOTALL).group(1)
    assert "<th scope=\"col\">dataset</th>" in table_html and "<td>hf:org/pets</td><td>random</td>" in table_html
    notes = re.findall(r'<p class="cm-note">([^<]+?): at fraction', page)
    assert notes == ["digits, random", "digits, norm-max", "hf:org/pets, random", "hf:org/pets, norm-max"]
    assert 'targets: {"digits": ["img0.png", "img1.png"]' in page.replace("&quot;", '"')
    assert "2 target(s) of each of 2 dataset(s)" in page
    assert "partial inversion: timm:test_resnet on digits, hf:org/pets, layer penultimate" in page


# ---------------------------------------------------------------------------------- depth, several datasets
def make_profile_run(path: Path, *, study: bool = False) -> Path:
    """One model profiled at three layers on two datasets, with probes that differ by dataset: on 'easy' random
    subsets saturate early in every layer, on 'hard' late, so a mixed line would be visible.

    ``study``: as a study writes it, the profiles' probes in profile_results.parquet and results.parquet holding
    the main sweep's (here: another layer); profile.parquet stores DR 0.5 at every layer (the fallback)."""
    rng = np.random.default_rng(3)
    layers = {"layer1": 16, "layer2": 32, "layer3": 64}
    res, prof, lc = [], [], []
    for ds, speed, full0 in (("easy", 0.05, 0.9), ("hard", 0.6, 0.6)):
        for depth, (layer, d) in enumerate(layers.items()):
            full = full0 + 0.02 * depth
            for sel, seeds, fracs in (("all", (0,), (1.0,)), ("random", (0, 1), (0.0625, 0.125, 0.25, 0.5, 1.0))):
                for seed in seeds:
                    for f in fracs:
                        k = max(1, round(f * d))
                        acc = full * (1 - np.exp(-k / (speed * d))) if sel == "random" else full
                        res.append({"model": "m", "dataset": ds, "layer": layer, "solver": "ridge", "selector": sel,
                                    "fraction": f, "n_neurons": k, "n_features": d, "seed": seed,
                                    "test_accuracy": float(acc + (rng.normal(0, 0.003) if sel == "random" else 0))})
            prof.append({"model": "m", "dataset": ds, "layer": layer, "depth": depth, "width": d, "solver": "ridge",
                         "full_accuracy": full, "dr": 0.5, "dr_ci_low": 0.4, "dr_ci_high": 0.6,
                         "cka_at_critical": 0.9 - 0.1 * depth})
        for i, a in enumerate(layers):
            for j, b in enumerate(layers):
                lc.append({"model": "m", "dataset": ds, "split": "train", "layer_a": a, "layer_b": b, "depth_a": i,
                           "depth_b": j, "cka": 1.0 if i == j else (0.9 if ds == "easy" else 0.5) - 0.1 * abs(i - j)})
    path.mkdir(parents=True)
    res = pd.DataFrame(res)
    if study:
        res.to_parquet(path / "profile_results.parquet", index=False)
        res = res[res["layer"] == "layer3"].assign(layer="penultimate")
    res.to_parquet(path / "results.parquet", index=False)
    pd.DataFrame(prof).to_parquet(path / "profile.parquet", index=False)
    pd.DataFrame(lc).to_parquet(path / "layer_cka.parquet", index=False)
    return path


@pytest.mark.parametrize("study", [False, True], ids=["results", "profile_results"])
def test_profile_of_several_datasets_draws_one_panel_per_dataset(tmp_path, study):
    path = make_profile_run(tmp_path / "prof", study=study)
    run = load_run(path)
    res = pd.read_parquet(path / ("profile_results.parquet" if study else "results.parquet"))
    figs = profile_figures(run, n_boot=0)
    panels = {ax.get_title(): ax for ax in figs["profile_depth"].axes if ax.get_visible()}
    assert set(panels) == {"m | easy", "m | hard"}
    for ds in ("easy", "hard"):
        want = dr(res[res["dataset"] == ds], 0.9, selector="random", n_boot=0).set_index("layer")
        lines = {line.get_gid(): line for line in panels[f"m | {ds}"].get_lines() if line.get_gid()}
        np.testing.assert_allclose(lines["dr"].get_ydata(), want.loc[["layer1", "layer2", "layer3"], "dr"])
        np.testing.assert_allclose(lines["full_accuracy"].get_ydata(),
                                   want.loc[["layer1", "layer2", "layer3"], "full_accuracy"])
        assert len(lines["dr"].get_xdata()) == 3  # one point per layer, not per (dataset, layer)
    easy = next(ln for ln in panels["m | easy"].get_lines() if ln.get_gid() == "dr").get_ydata()
    hard = next(ln for ln in panels["m | hard"].get_lines() if ln.get_gid() == "dr").get_ydata()
    assert (np.asarray(easy) > np.asarray(hard)).all()
    heat = {ax.get_title(): ax for ax in figs["layer_cka"].axes if ax.images}
    assert set(heat) == {"m | easy", "m | hard"}
    lc = pd.read_parquet(path / "layer_cka.parquet")
    for ds in ("easy", "hard"):
        want = lc[lc["dataset"] == ds].pivot(index="layer_a", columns="layer_b", values="cka")
        np.testing.assert_allclose(np.asarray(heat[f"m | {ds}"].images[0].get_array()), want.to_numpy())
    notes = profile_notes(run)
    assert [t for t, _ in notes["profile_depth"]] == ["m | easy", "m | hard"]
    assert [t for t, _ in notes["layer_cka"]] == ["m | easy", "m | hard"]
    assert "Adjacent layers: CKA 0.40 to 0.40" in notes["layer_cka"][1][1]


def test_profile_layers_without_probes_show_the_stored_dr(tmp_path):
    path = make_profile_run(tmp_path / "prof", study=True)
    (path / "profile_results.parquet").unlink()  # results.parquet has none of the profiled layers
    figs = profile_figures(load_run(path), n_boot=0)
    for ax in figs["profile_depth"].axes:
        lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
        np.testing.assert_allclose(lines["dr"].get_ydata(), [0.5, 0.5, 0.5])
