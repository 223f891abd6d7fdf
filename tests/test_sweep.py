"""critmass.sweep and `critmass sweep`: config validation, planning, local / Ray / Submitit execution,
resume after a kill, recomputing only what a config change touches, failures recorded.

Tiny random-init timm test models at 32 px on offline datasets with the ridge solver: the whole
module runs in about a minute on two cores; the feature cache is shared by every test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pause_helpers import wait_for_pause
import yaml

from critmass.cli._app import main
from critmass.exceptions import ConfigError, LayerNotFoundError
from critmass.sweep import load_config, plan_sweep, run_sweep
from critmass.sweep._run import CKA_KEYS, RESULT_KEYS

MODELS = [{"spec": "timm:test_resnet", "pretrained": False, "image_size": 32},
          {"spec": "timm:test_vit", "pretrained": False, "image_size": 32}]
DATASETS = [{"spec": "textures"}, {"spec": "digits", "max_samples": {"train": 300, "test": 100}}]
NUMERIC = ["n_features", "reg", "train_accuracy", "val_accuracy", "test_accuracy", "mean_per_class_recall"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sweep-features")


def make_config(cache, out, **changes) -> dict:
    cfg = {"output": str(out), "cache": str(cache), "device": "cpu", "models": MODELS, "datasets": DATASETS,
           "selectors": ["random", "pca"], "fractions": [0.25, 0.5, 1.0], "seeds": [0, 1], "solvers": ["ridge"],
           "probes": {"device": "cpu"}}
    cfg.update(changes)
    return cfg


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def probe_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[RESULT_KEYS + NUMERIC].reset_index(drop=True)


@pytest.fixture(scope="module")
def first_run(cache, tmp_path_factory):
    """The 2 models x 2 datasets x 2 selectors sweep, once, on two local worker processes."""
    out = tmp_path_factory.mktemp("sweep") / "run"
    return run_sweep(make_config(cache, out), workers=2)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             _node_ip_address="127.0.0.1")  # the local test cluster stays on loopback
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------------------ end to end
def test_small_sweep_end_to_end(first_run):
    res = first_run
    assert res.ok, res.failures
    assert len(res.ran) == 4 + 4 * 3 + 4  # extractions, probe units (random x 2 seeds + pca), CKA units
    run = res.run_dir
    for name in ("results.parquet", "per_class.parquet", "cka.parquet", "config.resolved.yaml", "versions.json",
                 "summary.json", "plan.json", "failures.json", "logs/sweep.log"):
        assert (run / name).is_file(), name
    assert json.loads((run / "failures.json").read_text()) == []
    assert yaml.safe_load((run / "config.resolved.yaml").read_text())["models"][0]["name"] == "timm:test_resnet"

    results = pd.read_parquet(run / "results.parquet")
    # per (model, dataset): one full-layer row, random 3 fractions x 2 seeds, pca 3 fractions x 1
    assert len(results) == 4 * (1 + 6 + 3), results.groupby(["model", "dataset", "selector"]).size()
    assert not results.duplicated(RESULT_KEYS).any()
    assert set(results["model"]) == {"timm:test_resnet", "timm:test_vit"}
    assert set(results["dataset"]) == {"textures", "digits"}
    assert (results.groupby(["model", "dataset"])["selector"].apply(lambda s: (s == "all").sum()) == 1).all()
    assert results["test_accuracy"].between(0, 1).all()
    assert all((run / p).is_file() for p in results["weights_file"])

    per_class = pd.read_parquet(run / "per_class.parquet")
    assert not per_class.duplicated(RESULT_KEYS + ["class"]).any()
    assert len(per_class.drop_duplicates(RESULT_KEYS)) == len(results)

    cka = pd.read_parquet(run / "cka.parquet")
    assert len(cka) == 4 * 2 * 3 * 2 and not cka.duplicated(CKA_KEYS).any()
    full = cka[cka["fraction"] == 1.0]
    assert ((full["cka"] - 1).abs() < 1e-6)[full["selector"] == "random"].all()

    from critmass.metrics import dr

    assert len(dr(results, 0.9, n_boot=0)) == 4  # the merged table feeds the metrics stage as is


def test_progress_in_driver_log_and_extraction_logs(first_run):
    """Issue 11 item 17: units done / total with an ETA in the driver, images/s for each extraction."""
    import re

    text = (first_run.run_dir / "logs" / "sweep.log").read_text()
    total = len(first_run.plan.units)
    done = [int(m) for m in re.findall(rf"\[(\d+)/{total}(?:, ETA [^\]]+)?\] ", text)]
    assert done and max(done) == total and re.search(rf"\[\d+/{total}, ETA \d", text), text[-2000:]
    assert re.search(r"\d+ images/s", text)
    ext_logs = list((first_run.run_dir / "logs" / "extract").glob("*.log"))
    assert ext_logs and all(re.search(r"extracted \w+: \d+ images in [\d.]+ s, [\d.]+ images/s", p.read_text())
                            for p in ext_logs)


def test_rerun_skips_every_unit(first_run):
    before = {p: p.stat().st_mtime_ns for p in first_run.run_dir.glob("shards/*/*/status.json")}
    again = run_sweep(first_run.plan.config, workers=2)
    assert again.ran == [] and len(again.skipped) == len(first_run.plan.units)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    pd.testing.assert_frame_equal(probe_rows(again.results), probe_rows(first_run.results))
    pd.testing.assert_frame_equal(again.cka, first_run.cka)


def test_dry_run_prints_the_plan_and_writes_nothing(cache, tmp_path, capsys):
    path = write_yaml(tmp_path / "sweep.yaml", make_config(cache, tmp_path / "run"))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 extractions: 0 done, 4 to run" in out
    assert "12 probe units (40 probes)" in out
    assert "4 CKA units (48 CKA cells)" in out
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------ resume / change
def test_config_change_recomputes_only_changed_units(first_run, cache, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(first_run.run_dir, run)
    old = plan_sweep(make_config(cache, run))
    assert all(state == "done" for state in old.state.values())
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("shards/*/*/status.json")}

    models = [dict(MODELS[0], name="resnet"), MODELS[1]]  # a new label is not a new computation
    cfg = make_config(cache, run, models=models, selectors=["random", "pca", "randproj"], seeds=[0, 1, 2])
    new = plan_sweep(cfg)
    changed = {u.key for u in new.units} - {u.key for u in old.units}
    # random seed 2 and randproj seeds 0-2 are new probe units; CKA units hold every seed and selector
    assert sorted(u.kind for u in new.units if u.key in changed) == ["cka"] * 4 + ["probe"] * 16
    res = run_sweep(cfg, workers=1)
    assert res.ok, res.failures
    assert set(res.ran) == changed, res.summary()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished shards were not rewritten
    assert set(res.results["model"]) == {"resnet", "timm:test_vit"}
    assert len(res.results) == 4 * (1 + 3 * 3 + 3 + 3 * 3)
    assert not res.results.duplicated(RESULT_KEYS).any()
    kept = res.results[res.results["seed"].isin([0, 1]) & res.results["selector"].isin(["all", "random", "pca"])]
    expected = first_run.results.replace({"model": {"timm:test_resnet": "resnet"}})
    pd.testing.assert_frame_equal(probe_rows(kept), probe_rows(expected))


def test_killed_sweep_resumes_without_loss_or_duplicates(first_run, cache, tmp_path):
    cfg = make_config(cache, tmp_path / "run", seeds=[0, 1, 2, 3, 4, 5])
    path = write_yaml(tmp_path / "sweep.yaml", cfg)
    code = "import sys; from critmass.cli import main; main()"
    # One worker runs the units in the driver, one by one: paused once the first probe unit is done, the
    # driver has the extractions and that unit behind it and every other unit ahead (the sweep's test hook).
    env = {**os.environ, "CRITMASS_SWEEP_PAUSE_AT": "probe"}
    proc = subprocess.Popen([sys.executable, "-c", code, "sweep", str(path), "--workers", "1", "-q"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    paused = tmp_path / "run" / ".paused-probe"
    try:
        wait_for_pause(proc, paused, "after a probe unit")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the whole process group of the sweep we started
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (tmp_path / "run" / "summary.json").exists()
    paused.unlink()

    plan = plan_sweep(cfg)
    done = {k for k, s in plan.state.items() if s == "done"}
    assert 0 < len(done) < len(plan.units)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").glob("shards/*/*/status.json")}
    res = run_sweep(cfg, workers=1)
    assert res.ok, res.failures
    assert set(res.ran) == {u.key for u in plan.units} - done, res.summary()  # nothing ran twice
    assert all(p.stat().st_mtime_ns == s for p, s in stamps.items() if p.parent.name in done)
    assert len(res.results) == 4 * (1 + 6 * 3 + 3) and not res.results.duplicated(RESULT_KEYS).any()
    same = res.results[res.results["seed"].isin([0, 1])]
    pd.testing.assert_frame_equal(probe_rows(same), probe_rows(first_run.results))


# ---------------------------------------------------------------------------------------- backends
@pytest.mark.slow  # a local Ray cluster starts: ~30 s
def test_ray_executor_gives_the_local_results(first_run, cache, tmp_path, ray_local):
    res = run_sweep(make_config(cache, tmp_path / "run"), executor="ray")
    assert res.ok, res.failures
    assert len(res.ran) == len(first_run.plan.units), (len(res.ran), res.summary())
    assert ray_local.is_initialized()  # a Ray instance the sweep did not start is left running
    pd.testing.assert_frame_equal(probe_rows(res.results), probe_rows(first_run.results))
    pd.testing.assert_frame_equal(res.cka.drop(columns="unit"), first_run.cka.drop(columns="unit"))


def test_slurm_executor_runs_job_arrays_with_submitit_local(first_run, cache, tmp_path):
    pytest.importorskip("submitit")
    cfg = make_config(cache, tmp_path / "run", models=MODELS[:1], datasets=DATASETS[:1], selectors=["random"],
                      seeds=[0], executor={"kind": "slurm", "cluster": "local"})
    res = run_sweep(cfg)
    assert res.ok, res.failures
    assert len(res.ran) == 3, res.summary()
    assert any((tmp_path / "run" / "logs" / "submitit").iterdir())
    ref = first_run.results
    ref = ref[(ref["model"] == "timm:test_resnet") & (ref["dataset"] == "textures") & (ref["seed"] == 0)
              & ref["selector"].isin(["all", "random"])]
    pd.testing.assert_frame_equal(probe_rows(res.results), probe_rows(ref))


@pytest.fixture
def toy_executor():
    """A backend defined and registered here, nowhere else: runs each unit in this process, newest first."""
    from critmass.sweep import Executor, execute_unit, register_executor
    from critmass.sweep._backends import EXECUTORS

    @register_executor("toy-inline")
    class ToyExecutor(Executor):
        """Runs units in the driver, last submitted first."""

        def __init__(self, label=None):
            self.label, self.queue, self.ran = label, [], []

        @classmethod
        def from_options(cls, options, *, workers=None, address=None):
            return cls(label=options.address)

        def submit(self, units):
            self.queue.extend(units)

        @property
        def pending(self):
            return len(self.queue)

        def wait(self):
            unit = self.queue.pop()
            self.ran.append(unit.key)
            return [execute_unit(unit, self.run_dir)]

    try:
        yield ToyExecutor
    finally:  # the registry refuses a name twice; the test leaves it as it found it
        EXECUTORS._entries.pop("toy-inline", None)
        EXECUTORS._docs.pop("toy-inline", None)


def test_a_registered_executor_runs_a_sweep_with_nothing_else_edited(first_run, cache, tmp_path, toy_executor):
    from critmass.sweep import list_executors, make_executor

    assert list_executors() == ["local", "ray", "slurm", "toy-inline"]
    cfg = make_config(cache, tmp_path / "run", models=MODELS[:1], datasets=DATASETS[:1], selectors=["random"],
                      seeds=[0], executor={"kind": "toy-inline", "address": "from-the-config"})
    ex = make_executor(None, load_config(cfg).executor)
    assert isinstance(ex, toy_executor) and ex.label == "from-the-config" and ex.name == "toy-inline"
    res = run_sweep(cfg)
    assert res.ok, res.failures
    assert len(res.ran) == 3, res.summary()
    ref = first_run.results
    ref = ref[(ref["model"] == "timm:test_resnet") & (ref["dataset"] == "textures") & (ref["seed"] == 0)
              & ref["selector"].isin(["all", "random"])]
    pd.testing.assert_frame_equal(probe_rows(res.results), probe_rows(ref))
    with pytest.raises(ConfigError, match=r"executor\.kind: Input should be 'local', 'ray', 'slurm' or 'toy-inline'; "
                                          r"got 'toy'"):
        load_config({**cfg, "executor": {"kind": "toy"}})
    with pytest.raises(ConfigError, match=r"unknown executor 'toy-inlin' \(closest: toy-inline\); use local, ray, "
                                          r"slurm or toy-inline"):
        run_sweep(cfg, executor="toy-inlin")


def test_ray_refuses_gpu_units_on_a_cluster_without_gpus(cache, tmp_path, ray_local):
    cfg = make_config(cache, tmp_path / "run", models=MODELS[:1], datasets=DATASETS[:1], device="cuda")
    with pytest.raises(ConfigError, match=r"ask for 1 GPU\(s\) but the Ray cluster has 0"):
        run_sweep(cfg, executor="ray")


def test_gpu_requests_follow_the_device():
    from critmass.sweep._config import Resources
    from critmass.sweep._executors import _wants_gpu

    assert _wants_gpu("cuda", Resources(), cluster_has_gpu=False) == 1
    assert _wants_gpu("auto", Resources(), cluster_has_gpu=True) == 1
    assert _wants_gpu("auto", Resources(), cluster_has_gpu=False) == 0
    assert _wants_gpu("cpu", Resources(), cluster_has_gpu=True) == 0
    assert _wants_gpu("cuda", Resources(gpus=0.25), cluster_has_gpu=True) == 0.25


def test_slurm_without_slurm_says_how_to_test_it(cache, tmp_path):
    pytest.importorskip("submitit")
    if shutil.which("sbatch"):
        pytest.skip("Slurm is installed here")
    with pytest.raises(ConfigError, match="sbatch not found.*executor.cluster: local"):
        run_sweep(make_config(cache, tmp_path / "run"), executor="slurm")


# ---------------------------------------------------------------------------------------- failures
def test_failed_unit_is_recorded_and_the_sweep_goes_on(cache, tmp_path, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not an npz file")
    cfg = make_config(cache, tmp_path / "run", models=MODELS[:1], selectors=["random"], seeds=[0],
                      datasets=[DATASETS[0], {"spec": f"npz:{bad}", "name": "broken"}])
    path = write_yaml(tmp_path / "sweep.yaml", cfg)
    assert main(["sweep", str(path), "--workers", "1"]) == 3
    out = capsys.readouterr().out
    assert "FAILED extract timm:test_resnet | broken | penultimate" in out
    failures = json.loads((tmp_path / "run" / "failures.json").read_text())
    assert sorted(f["kind"] for f in failures) == ["cka", "extract", "probe"]
    assert all("broken" in f["label"] for f in failures)
    assert any("its extraction failed" in (f["error"] or "") for f in failures)
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert set(results["dataset"]) == {"textures"} and len(results) == 1 + 3
    assert set(plan_sweep(cfg).state.values()) == {"done", "failed"}  # failed units run again next time


def test_one_driver_per_run_directory(cache, tmp_path):
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another `critmass sweep` is running"):
            run_sweep(make_config(cache, run, models=MODELS[:1], datasets=DATASETS[:1]), workers=1)


# ------------------------------------------------------------------------------------------ configs
BASE = """\
models:
  - spec: timm:test_resnet
    pretrained: false
datasets:
  - spec: digits
"""

BAD_CONFIGS = {
    "unknown key": (BASE.replace("    pretrained: false\n", "    weigths: x.pth\n"),
                    r"line 3: models\[0\]\.weigths: unknown key \(closest: weights[^)]*\); valid keys: spec, name"),
    "unknown top-level key": (BASE + "fraction: [0.1]\n", r"line 6: fraction: unknown key \(closest: fractions"),
    "fraction above 1": (BASE + "fractions:\n  - 0.1\n  - 2.0\n",
                         r"line 8: fractions\[1\]: fraction must be in \(0, 1\]"),
    "fraction zero": (BASE + "fractions: [0, 0.5]\n", r"line 6: fractions\[0\]: fraction must be in \(0, 1\]"),
    "fraction not a number": (BASE + "fractions: [half]\n", r"line 6: fractions\[0\]: .*number.*got 'half'"),
    "wrong type": (BASE.replace("pretrained: false", "pretrained: maybe"), r"line 3: models\[0\]\.pretrained: .*bool"),
    "seeds": (BASE + "seeds: -1\n", r"line 6: seeds: seeds must be a positive count"),
    "unknown selector": (BASE + "selectors: [random, pcaa]\n",
                         r"line 6: selectors\[1\]: unknown selector 'pcaa' \(closest: pca"),
    "unknown solver": (BASE + "solvers: [lbfgs]\n", r"line 6: solvers\[0\]: unknown solver 'lbfgs'"),
    "unknown split": (BASE + "    splits: [train, tst]\n",
                      r"line 6: datasets\[0\]\.splits\[1\]: .*'train', 'val' or 'test'"),
    "unknown model source": (BASE.replace("timm:test_resnet", "timmm:test_resnet"),
                             r"line 2: .*unknown model source 'timmm'"),
    "unknown dataset alias": (BASE.replace("digits", "digitz"),
                              r"line 5: datasets\[0\]\.spec: unknown dataset 'digitz'"),
    "missing datasets": ("models:\n  - spec: timm:test_resnet\n", r"datasets: missing required key 'datasets'"),
    "missing spec": (BASE.replace("  - spec: digits\n", "  - root: /tmp\n"),
                     r"line 5: datasets\[0\]\.spec: missing required key"),
    "duplicate entry": (BASE.replace("datasets:", "  - spec: timm:test_resnet\ndatasets:"),
                        r"line 4: models\[1\]\.spec: model 'timm:test_resnet' is also entry 0; give each entry a distinct"),
    "same features twice": (BASE.replace("datasets:", "  - {spec: timm:test_resnet, pretrained: false, name: b}\n"
                                                      "datasets:"),
                            r"line 4: models\[1\]: gives the same features as models\[0\]"),
    "duplicate key": (BASE + "models: []\n", r"line 6: models: key given twice \(first on line 1\)"),
    "missing weights": (BASE.replace("pretrained: false", "weights: /nonexistent/w.pth"),
                        r"line 3: models\[0\]\.weights: .*does not exist"),
    "missing root": (BASE + "    root: /nonexistent/data\n",
                     r"line 6: datasets\[0\]\.root: data root '/nonexistent/data' does not exist"),
    "probes need test": (BASE + "    splits: [train]\n",
                         r"line 6: datasets\[0\]\.splits: probes need the train and test splits"),
    "nothing to do": (BASE + "solvers: []\ncka: false\n", r"nothing to compute"),
    "bad executor": (BASE + "executor:\n  kind: dask\n",
                     r"line 7: executor\.kind: .*'local', 'ray' or 'slurm'; got 'dask'"),
    "bad device": (BASE + "device: tpu\n", r"line 6: device: device must be auto, cpu"),
    "not yaml": ("models:\n  - spec: a\n   layers: [b]\n", r"line 3 is not valid YAML"),
    "not a mapping": ("- a\n- b\n", r"must be a mapping of keys"),
    "empty": ("", r"is empty"),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_is_refused_naming_key_and_line(tmp_path, name):
    text, match = BAD_CONFIGS[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        plan_sweep(path)  # loads and validates the config, then checks the grid


def test_bad_config_is_refused_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + f"output: {tmp_path / 'run'}\nfractions: [0.1, 1.5]\n")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("critmass: error: invalid sweep config bad.yaml: line 7: fractions[1]")
    assert err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_unknown_layer_is_refused_with_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE.replace("    pretrained: false\n", "    pretrained: false\n    layers: [layer4, layer9]\n"))
    match = r"line 4: models\[0\]\.layers\[1\]: layer 'layer9' not in .*closest: layer4"
    with pytest.raises(LayerNotFoundError, match=match):
        plan_sweep(path, check_layers=True)


def test_config_defaults_and_paths(tmp_path):
    (tmp_path / "data").mkdir()
    cfg = load_config({"models": [{"spec": "timm:test_resnet"}], "datasets": [{"spec": "digits", "root": "data"}],
                       "seeds": 3, "cka": False}, base_dir=tmp_path)
    assert cfg.seeds == [0, 1, 2] and cfg.solvers == ["logistic"] and not cfg.cka.enabled
    assert cfg.datasets[0].root == tmp_path / "data"
    assert cfg.output == tmp_path / "runs" / "sweep" and cfg.models[0].name == "timm:test_resnet"
    assert len(cfg.fractions) == 15  # the paper's grid by default


def test_example_configs_are_valid():
    examples = Path(__file__).resolve().parents[1] / "examples"
    demo = plan_sweep(examples / "demo.yaml", check_layers=True)  # runnable offline: every check applies
    # one extraction unit per (model, dataset): both layers come from one pass over each dataset
    assert len(demo.of_kind("extract")) == 2 and demo.config.models[0].layers == ["penultimate", "blocks.5"]
    papers = sorted((examples / "paper").glob("*.yaml"))
    assert {p.stem for p in papers} >= {"table1", "resnets", "vits", "adversarial", "imagenet_places", "baselines",
                                        "middle_layers"}
    for path in papers:  # no data or checkpoints here: paths are not checked, layer names are
        plan = plan_sweep(load_config(path, check_paths=False), check_layers=path.stem == "middle_layers")
        assert plan.of_kind("extract") and plan.of_kind("probe"), path.name
