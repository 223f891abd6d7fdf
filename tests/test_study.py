"""`critmass study`: one command plans the paper's study as a sweep, runs it and writes one report.

The study's numbers are checked against the individual commands' Python functions on the same features
(run_probes, profile, top_neurons, invert, export_run, dr), a killed study resumes to the same tables, the plan
is an ordinary sweep config, and bad input (an unknown dataset, inversion forced on a text encoder, a budget
that cannot be met) is a one-line error naming the fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from critmass.exceptions import ConfigError
from critmass.study import BUDGET_STEPS, fit_budget, parse_budget, run_study, study_config
from critmass.sweep import load_config, plan_sweep

from pause_helpers import wait_for_pause

MODEL = "timm:test_resnet"
DATASETS = "textures,digits"
# Small and fast: 32 px random-init ResNet, two fractions, two seeds, three inversion steps.
OPTIONS = dict(quick=True, image_size=32, fractions=[0.25, 1.0], seeds=2, inversion_steps=3, pretrained=False,
               max_samples={"train": 300, "test": 100}, device="cpu", selectors=["pca", "fscore"])


def _config(tmp, out):
    return study_config(MODEL, DATASETS, out=out, cache=tmp / "cache", **OPTIONS)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    res = run_study(MODEL, DATASETS, out=tmp / "run", cache=tmp / "cache", workers=1, n_boot=50, **OPTIONS)
    assert res.ok, res.sweep.summary()
    return tmp, res


def _shard(res, kind, dataset, **params):
    """The shard directory of the study's unit of ``kind`` on ``dataset`` whose params match."""
    plan = res.sweep.plan
    units = [u for u in plan.of_kind(kind) if u.dataset == dataset
             and all(u.params.get(k) == v for k, v in params.items())]
    assert len(units) == 1, [u.label for u in units]
    return units[0].shard_dir(res.run_dir)


def _entry(res, dataset, layer="penultimate"):
    plan = res.sweep.plan
    ext = next(u for u in plan.of_kind("extract") if u.dataset == dataset)
    entry = plan.entries[ext.key]
    return entry[layer] if isinstance(entry, dict) else entry


@pytest.mark.slow  # one small study (36 units in one process) and the same numbers from each command: ~40 s
def test_study_numbers_equal_the_individual_commands(study):
    from critmass.export import export_run
    from critmass.features import load_features
    from critmass.invert import invert, load_images
    from critmass.metrics import dr, top_neurons
    from critmass.models import load_model
    from critmass.probes import run_probes
    from critmass.profile import profile

    tmp, res = study
    run = res.run_dir
    fractions, seeds = OPTIONS["fractions"], [0, 1]
    # Everything the study promises is in the run directory and the report.
    for name in ("results.parquet", "per_class.parquet", "cka.parquet", "profile.parquet", "layer_cka.parquet",
                 "neurons.parquet", "neuron_overlap.parquet", "invert.parquet", "export.parquet", "study.json",
                 "report/report.html", "report/tables/study.csv", "report/tables/table1.md",
                 "report/tables/export.csv", "report/tables/neurons.csv"):
        assert (run / name).is_file(), name
    html = (run / "report" / "report.html").read_text()
    for section in ("Which neurons", "Spending it", "Partial inversion", "DR and full accuracy across depth"):
        assert section in html, section

    # Probe curves: run_probes on the cached features (what `critmass probe` runs).
    fs = load_features(_entry(res, "textures"))
    ref = run_probes(fs, selectors=["random"], fractions=fractions, seeds=seeds, solver="logistic", n_jobs=1,
                     progress=False).results
    got = res.sweep.results
    got = got[(got["dataset"] == "textures") & got["selector"].isin(["random", "all"])]
    keys = ["selector", "n_neurons", "seed"]
    a = got.sort_values(keys)[keys + ["test_accuracy", "reg"]].reset_index(drop=True)
    b = ref.sort_values(keys)[keys + ["test_accuracy", "reg"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)

    # Study table: dr() of the same rows.
    d = dr(res.sweep.results, 0.9, selector="random", n_boot=0)
    row = res.table.set_index("dataset").loc["textures"]
    assert row["dr_random"] == pytest.approx(float(d.loc[d["dataset"] == "textures", "dr"].iloc[0]))
    assert row["k_random"] == float(d.loc[d["dataset"] == "textures", "critical_n_neurons"].iloc[0])
    assert row["best_selector"] == "fscore"

    # Depth: `critmass profile` with the same settings, from the same cache.
    unit = next(u for u in res.sweep.plan.of_kind("profile") if u.dataset == "textures")
    p = unit.params
    prof = profile(MODEL, "textures", out=tmp / "profile", layers=p["layers"], fractions=p["fractions"],
                   seeds=p["seeds"], n_boot=p["n_boot"], split=p["split"], pretrained=False, image_size=32,
                   cache=tmp / "cache", max_width=None, device="cpu", progress=False).profile
    mine = pd.read_parquet(run / "profile.parquet")
    mine = mine[mine["dataset"] == "textures"].set_index("layer")
    ref_prof = prof.set_index("layer")
    for col in ("full_accuracy", "dr", "critical_n_neurons", "width"):
        np.testing.assert_allclose(mine.loc[ref_prof.index, col].to_numpy(float), ref_prof[col].to_numpy(float),
                                   err_msg=col)

    # Which neurons: `critmass neurons` on the fscore probe's shard.
    shard = _shard(res, "probe", "textures", selector="fscore")
    top = top_neurons(shard, "fscore", 8)
    mine = pd.read_parquet(run / "neurons.parquet")
    mine = mine[(mine["dataset"] == "textures") & (mine["selector"] == "fscore")]
    assert mine["neuron"].tolist() == top["neuron"].tolist()

    # Partial inversion: `critmass invert` on the same images with the same settings.
    unit = next(u for u in res.sweep.plan.of_kind("inversion") if u.dataset == "textures")
    p = unit.params
    bb = load_model(MODEL, pretrained=False, image_size=32)
    images, _ = load_images("textures", index=list(range(p["n_images"])), split=p["split"])
    inv = invert(bb, images, selectors=p["selectors"], fractions=p["fractions"], seeds=p["seeds"], steps=p["steps"],
                 device="cpu", progress=False).table
    mine = pd.read_parquet(run / "invert.parquet")
    mine = mine[mine["dataset"] == "textures"]
    keys = ["target", "selector", "fraction", "seed", "inversion"]
    for col in ("subset_error_end", "rest_error_end", "cosine_end"):
        np.testing.assert_allclose(mine.sort_values(keys)[col].to_numpy(float), inv.sort_values(keys)[col].to_numpy(float),
                                   rtol=1e-5, atol=1e-7, err_msg=col)

    # Export: k* of random neurons, exported from the probe run like `critmass export` does.
    ex = pd.read_parquet(run / "export.parquet").set_index("dataset").loc["textures"]
    assert ex["k"] == row["k_random"]
    shard = _shard(res, "probe", "textures", selector="random", seeds=[0])
    again = export_run(shard, selector="random", fraction=float(ex["fraction"]), seed=0, out=tmp / "export",
                       prune=True, onnx=False, torchscript=False, n_boot=0)
    assert ex["bytes_reduced"] == again.savings["storage"]["bytes_per_vector"]["reduced"] == 4 * ex["k"]
    assert ex["params_exported"] == again.savings["backbone"]["params"]["exported"] < ex["params_full"]
    assert ex["accuracy_cost"] == pytest.approx(again.savings["accuracy"]["cost"])


def test_study_config_is_an_ordinary_sweep_and_a_rerun_does_nothing(study, tmp_path):
    tmp, res = study
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(res.config, sort_keys=False))
    plan = plan_sweep(load_config(path), out=res.run_dir)
    assert plan.todo == []  # the sweep the file describes is the one the study ran: every unit is done
    assert {u.kind for u in plan.units} == {"extract", "probe", "cka", "profile", "neurons", "inversion", "export"}
    again = run_study(MODEL, DATASETS, out=res.run_dir, cache=tmp / "cache", workers=1, n_boot=50, **OPTIONS)
    assert again.ok and again.sweep.ran == []
    pd.testing.assert_frame_equal(again.table, res.table)


def test_quick_and_default_settings_are_stated(tmp_path):
    from critmass._defaults import DEFAULT_FRACTIONS

    cfg = study_config("efficientnet-lite0", "fashion-mnist,digits,textures", out=tmp_path)
    assert cfg["fractions"] == list(DEFAULT_FRACTIONS) and cfg["seeds"] == 5  # the paper's 15 and 5
    assert all("max_samples" not in d for d in cfg["datasets"])  # the full train and test splits
    assert "image_size" not in cfg["models"][0]  # the model's own size
    assert cfg["inversion"]["n_images"] == 3 and cfg["inversion"]["steps"] == 200
    assert {"profile", "neurons", "inversion", "export"} <= set(cfg)
    assert study_config("efficientnet-lite0", "digits", out=tmp_path, inversion_steps=5000)["inversion"]["steps"] == 5000
    quick = study_config("efficientnet-lite0", "digits", out=tmp_path, quick=True)
    assert quick["seeds"] == 2 and len(quick["fractions"]) == 5 and quick["datasets"][0]["max_samples"]
    load_config(quick)  # both validate as sweep configs
    load_config(cfg)


def test_example_study_configs_are_the_studys_plans():
    root = Path(__file__).resolve().parents[1] / "examples"
    for name, model, datasets in (("study-lite0", "efficientnet-lite0", "fashion-mnist,digits,textures"),
                                  ("study-minilm", "all-minilm-l6-v2", "bbc-news,spam-assassin")):
        plan = plan_sweep(root / f"{name}.yaml", check_layers=True)
        expect = plan_sweep(study_config(model, datasets, out=plan.run_dir, name=name))
        assert [u.key for u in plan.units] == [u.key for u in expect.units], name  # written by --config-out
        assert {u.kind for u in plan.units} >= {"profile", "neurons", "export"}


def test_text_models_leave_inversion_out_and_refuse_it_forced(tmp_path):
    cfg = study_config("all-minilm-l6-v2", "bbc-news,spam-assassin", out=tmp_path)
    assert "inversion" not in cfg and {"profile", "neurons", "export"} <= set(cfg)
    with pytest.raises(ConfigError, match="text encoder; drop inversion from --parts"):
        study_config("all-minilm-l6-v2", "bbc-news", out=tmp_path, parts="inversion,export")
    with pytest.raises(ConfigError, match="unknown study part 'inverson' .*closest: inversion"):
        study_config(MODEL, "digits", out=tmp_path, parts="inverson")


def test_bad_input_is_one_line(tmp_path, capsys):
    from critmass.cli._app import main

    out = tmp_path / "r"
    base = ["study", MODEL, "--out", str(out), "--no-pretrained", "--dry-run"]
    for args, expect in (
        (["--datasets", "digits,fashon-mnist"], "unknown dataset 'fashon-mnist' (closest: fashion-mnist"),
        (["--datasets", "digits", "--budget", "soon"], "--budget must be a duration such as 1h"),
        (["--datasets", "digits", "--budget", "1s"], "raise --budget to at least"),
        (["--datasets", "digits", "--parts", "export,inverson"], "unknown study part 'inverson'"),
    ):
        assert main(base + args) == 2, args
        err = capsys.readouterr().err.strip()
        assert expect in err and "\n" not in err and "Traceback" not in err, err
    assert main(["study", "all-minilm-l6-v2", "--datasets", "bbc-news", "--out", str(out), "--parts",
                 "inversion", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "text encoder; drop inversion from --parts" in err and "\n" not in err
    assert not out.exists()  # nothing written for bad input


def test_budget_cuts_in_order_and_says_what_it_cut(tmp_path):
    assert parse_budget("1h") == 3600 and parse_budget("1h30m") == 5400 and parse_budget("45min") == 2700
    assert parse_budget("90") == 90 and parse_budget(None) is None
    cfg = study_config("efficientnet-lite0", "fashion-mnist,digits", out=tmp_path)

    def price(c):  # a stand-in estimate: proportional to the work the settings ask for
        n = sum((d.get("max_samples") or {}).get("train", 60000) for d in c["datasets"])
        return n * len(c["fractions"]) * c["seeds"] * 1e-3 + c["inversion"]["steps"]

    cut_cfg, cut, secs = fit_budget(cfg, 1500, price=price)
    assert secs <= 1500 and secs == price(cut_cfg)
    names = [what for what, _ in BUDGET_STEPS]
    assert cut == names[:len(cut)] or all(c in names for c in cut)
    assert [names.index(c) for c in cut] == sorted(names.index(c) for c in cut)  # applied in the stated order
    assert cut_cfg["seeds"] < cfg["seeds"] and cfg["seeds"] == 5  # the input config is left as it was
    with pytest.raises(ConfigError, match=r"cannot fit --budget 1s .*raise --budget to at least"):
        fit_budget(cfg, 1, price=price)

    # Steps only lower settings: a quick study (already below most steps) is never made bigger.
    quick = study_config("efficientnet-lite0", "fashion-mnist,digits", out=tmp_path, quick=True,
                         max_samples={"train": 50000, "test": 1000})
    small, cut, secs = fit_budget(quick, 0.5 * price(quick), price=price)
    assert secs < price(quick)
    assert small["inversion"]["steps"] <= quick["inversion"]["steps"] and small["seeds"] <= quick["seeds"]
    assert len(small["fractions"]) <= len(quick["fractions"])
    assert all(d["max_samples"]["test"] <= 1000 for d in small["datasets"])  # a smaller cap is never raised


def test_dry_run_prints_units_and_an_estimate_and_writes_only_the_config(tmp_path):
    lines = []
    res = run_study(MODEL, "textures", out=tmp_path / "run", cache=tmp_path / "cache", dry_run=True,
                    config_out=tmp_path / "plan.yaml", echo=lines.append, **OPTIONS)
    text = "\n".join(lines)
    assert res.dry_run and not (tmp_path / "run").exists()
    assert "depth-profile units" in text and "partial-inversion units" in text and "estimated time" in text
    assert set(res.estimate.seconds) == {"extract", "probe", "cka", "profile", "neurons", "inversion", "export"}
    assert all(v >= 0 for v in res.estimate.seconds.values()) and res.estimate.total > 0
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["inversion"]["steps"] == 3


# The driver: `critmass study` in its own session; spawned workers import this file as __mp_main__, so the
# inversion inside them pauses after its optimisation and before its shard is written (killed midway).
DRIVER = """\
import critmass.invert as _inv
from critmass._testhooks import pause_here

_invert = _inv.invert


def invert(*args, **kwargs):
    out = _invert(*args, **kwargs)
    pause_here("CRITMASS_SWEEP_PAUSE_AT", "inversion-midway", {run!r}, seconds_env="CRITMASS_SWEEP_PAUSE_S")
    return out


_inv.invert = invert

if __name__ == "__main__":
    from critmass.cli import main

    main()
"""


@pytest.mark.slow  # a one-dataset study killed inside an inversion unit, then resumed: ~30 s
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a process group")
def test_killed_study_resumes_to_the_same_tables(study, tmp_path):
    tmp, ref = study
    run = tmp_path / "run"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(run=str(run)))
    # One dataset (its units and keys are the reference's for that dataset): the reference's rows of it.
    args = [sys.executable, str(script), "study", MODEL, "--datasets", "textures", "--out", str(run), "--cache",
            str(tmp / "cache"), "--quick", "--image-size", "32", "--fractions", "0.25,1.0", "--seeds", "2",
            "--inversion-steps", "3", "--selectors", "pca,fscore", "--no-pretrained", "--max-samples",
            "train=300,test=100", "--device", "cpu",
            "--workers", "1", "--n-boot", "50", "-q"]
    import torch

    threads = str(torch.get_num_threads())  # the reference's: the same float paths
    for point in ("inversion-midway",):  # kills between units and in the merge: tests/test_sweep_crash.py
        proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "CRITMASS_SWEEP_PAUSE_AT": point, "OMP_NUM_THREADS": threads,
                                     "MKL_NUM_THREADS": threads})
        try:
            wait_for_pause(proc, run / f".paused-{point}", f"at {point}")
            if point == "inversion-midway":  # the unit has its images but wrote nothing: it is not done
                assert not list(run.glob("shards/inversion/*/status.json"))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
        for marker in run.glob(".paused-*"):
            marker.unlink()
        assert not (run / "study.json").exists()
    res = run_study(MODEL, "textures", out=run, cache=tmp / "cache", workers=1, n_boot=50, **OPTIONS)
    assert res.ok, res.sweep.summary()
    inversions = {u.key for u in res.sweep.plan.of_kind("inversion")}
    assert inversions and inversions <= set(res.sweep.ran)  # the inversion killed midway ran again
    assert inversions <= {u.key for u in ref.sweep.plan.of_kind("inversion")}  # the same units as the reference's
    assert json.loads((run / "failures.json").read_text()) == []
    pd.testing.assert_frame_equal(res.table, ref.table[ref.table["dataset"] == "textures"].reset_index(drop=True))
    for name, keys in (("results.parquet", ["dataset", "selector", "n_neurons", "seed"]),
                       ("profile.parquet", ["dataset", "layer"]), ("export.parquet", ["dataset"]),
                       ("invert.parquet", ["dataset", "target", "selector", "fraction", "seed", "inversion"])):
        a, b = pd.read_parquet(run / name), pd.read_parquet(ref.run_dir / name)
        b = b[b["dataset"] == "textures"]
        num = [c for c in a.columns if c in b.columns and pd.api.types.is_float_dtype(a[c]) and "second" not in c
               and "latency" not in c and c != "elapsed_s"]
        a = a.sort_values(keys).reset_index(drop=True)[keys + num]
        b = b.sort_values(keys).reset_index(drop=True)[keys + num]
        pd.testing.assert_frame_equal(a, b, rtol=1e-6, obj=name)


def test_report_leaves_out_cka_cells_without_a_value(tmp_path):
    """A sweep records a subset of only constant neurons as NaN CKA (`on_constant: nan`); the report used to
    refuse the whole cka.parquet for it."""
    from critmass.report import build_report, load_run

    from test_report import make_run

    run = make_run(tmp_path / "run")
    cka = pd.read_parquet(run / "cka.parquet")
    n = len(cka)
    cka.loc[cka.index[:2], "cka"] = np.nan
    cka.to_parquet(run / "cka.parquet", index=False)
    assert len(load_run(run).cka) == n - 2
    rep = build_report(run, formats=["png"], n_boot=0)
    assert (rep.out / "figures" / "cka_vs_fraction.png").is_file()
