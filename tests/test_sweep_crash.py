"""A sweep driver killed with SIGKILL (during extraction, during probes, in the middle of the merge) takes its
workers with it and resumes with no failure, no duplicate and no lost row; unreadable shards are re-run;
one extraction unit per feature-cache entry; the local executor runs one extraction at a time without a GPU.

The driver runs as a subprocess (a script calling `critmass sweep`) in its own session, so every process it
starts (pool workers, their DataLoader workers, the resource tracker) shares its process group: after the
driver alone is killed, none of them may remain. Each kill lands at a pause point (a test hook that writes a
marker file and sleeps), never at a time, so how far the sweep got does not depend on the machine's speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from critmass.sweep import plan_sweep, run_sweep
from critmass.sweep._run import CKA_KEYS, RESULT_KEYS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

MODEL = {"spec": "timm:test_resnet", "pretrained": False, "image_size": 32}
DATASETS = [{"spec": "digits", "max_samples": {"train": 300, "test": 100}}, {"spec": "textures"}]
NUMERIC = ["n_features", "reg", "train_accuracy", "val_accuracy", "test_accuracy", "mean_per_class_recall"]


def make_config(cache, out, **changes) -> dict:
    # Small batches: the extraction pauses after its first with more to come. One DataLoader worker: a
    # grandchild process of the driver that must die too.
    cfg = {"output": str(out), "cache": str(cache), "device": "cpu", "batch_size": 8, "num_workers": 1,
           "models": [MODEL], "datasets": DATASETS, "selectors": ["random", "pca"], "fractions": [0.25, 1.0],
           "seeds": [0, 1, 2], "solvers": ["ridge"], "probes": {"device": "cpu"}}
    cfg.update(changes)
    return cfg


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


# The driver's script. `CRITMASS_SWEEP_PAUSE_AT=extraction` pauses an extraction once its first rows are durable
# and more remain, its DataLoader worker running: the sweep's own pause points are in the driver, after units.
# The spawned pool workers run this file too (as __mp_main__: the spawn start method imports the parent's main
# script), so the extraction inside them has the pause point as well.
DRIVER_SCRIPT = """\
from critmass._testhooks import pause_here
from critmass.features import _store

_write = _store.SplitWriter.write


def write(self, feats, labels):
    _write(self, feats, labels)
    if 0 < self.rows_done < self.n:
        pause_here("CRITMASS_SWEEP_PAUSE_AT", "extraction", {run!r}, seconds_env="CRITMASS_SWEEP_PAUSE_S")


_store.SplitWriter.write = write

if __name__ == "__main__":
    from critmass.cli import main

    main()
"""


class Driver:
    """A `critmass sweep` subprocess in its own session (its pid is its process group)."""

    def __init__(self, config: Path, run: Path, *, env: dict | None = None, workers: int = 2):
        script = config.with_name("driver.py")
        script.write_text(DRIVER_SCRIPT.format(run=str(run)))
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "sweep", str(config), "--out", str(run), "--workers", str(workers), "-q"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})})

    def wait_for(self, found, what: str, timeout: float = 300) -> None:
        """Wait until ``found()``; ``timeout`` fails a hung sweep (the kill point is a pause, not a time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the sweep exited ({self.proc.returncode}) before {what}: "
                                     f"{self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}")

    def kill(self) -> list[int]:
        """SIGKILL the driver alone; return the other processes of its group that were alive then."""
        others = [p for p in group_pids(self.proc.pid) if p != self.proc.pid]
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return others

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:  # whatever a failed test left: the group of the driver we started
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc.stderr.close()


def assert_group_dies(driver: Driver, others: list[int], timeout: float = 15) -> None:
    """Every process the killed driver started exits (DataLoader workers check their parent every 5 s)."""
    deadline = time.monotonic() + timeout
    while (alive := group_pids(driver.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"processes of the killed driver still running: {alive} (of {others})"


def stamps(run: Path, done: set[str]) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in run.glob("shards/*/*/status.json") if p.parent.name in done}


def done_keys(cfg: dict) -> set[str]:
    return {k for k, s in plan_sweep(cfg).state.items() if s == "done"}


def rows(df: pd.DataFrame, keys: list[str], numeric: list[str]) -> pd.DataFrame:
    return df[keys + numeric].sort_values(keys).reset_index(drop=True)


@pytest.mark.slow  # three killed and resumed sweeps: ~40-55 s
def test_killed_driver_takes_its_workers_and_resumes_without_loss_or_duplicates(tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    cfg = make_config(cache, run, datasets=DATASETS[:1])
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    units = plan_sweep(cfg).units
    paused = lambda at: lambda: (run / f".paused-{at}").is_file()  # noqa: E731 - the test hooks' markers

    before: set[str] = set()
    for point, found, env in (("extraction", paused("extraction"), {"CRITMASS_SWEEP_PAUSE_AT": "extraction"}),
                              ("probes", paused("probe"), {"CRITMASS_SWEEP_PAUSE_AT": "probe"}),
                              ("merge", paused("merge"), {"CRITMASS_SWEEP_PAUSE_AT": "merge"})):
        kept = stamps(run, before)
        driver = Driver(config, run, env=env)
        try:
            driver.wait_for(found, f"the {point}")
            others = driver.kill()
            if point != "merge":
                assert others, f"no worker process was running during the {point}"
            assert_group_dies(driver, others)
        finally:
            driver.cleanup()
        assert not (run / "summary.json").exists()
        if point == "extraction":  # paused inside the sweep's one extraction: nothing had finished
            assert not done_keys(cfg)
        if point == "probes":
            assert not (run / "results.parquet").exists()
        assert all(p.stat().st_mtime_ns == t for p, t in kept.items()), f"finished units ran again ({point})"
        now = done_keys(cfg)
        assert before <= now, f"units done before the {point} kill are not done any more"
        before = now
    assert before == {u.key for u in units}  # killed in the merge: every unit had finished
    for marker in run.glob(".paused-*"):
        marker.unlink()
    kept = stamps(run, before)
    res = run_sweep(cfg, workers=2)
    assert res.ok and res.ran == [], res.summary()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # the resume only merged
    assert json.loads((run / "failures.json").read_text()) == []

    ref = run_sweep(make_config(cache, tmp_path / "ref", datasets=DATASETS[:1]), workers=1)  # uninterrupted, from the cached features
    assert ref.ok, ref.failures
    results = pd.read_parquet(run / "results.parquet")
    assert not results.duplicated(RESULT_KEYS).any()
    pd.testing.assert_frame_equal(rows(results, RESULT_KEYS, NUMERIC), rows(ref.results, RESULT_KEYS, NUMERIC))
    per_class = pd.read_parquet(run / "per_class.parquet")
    assert not per_class.duplicated(RESULT_KEYS + ["class"]).any()
    pd.testing.assert_frame_equal(rows(per_class, RESULT_KEYS + ["class"], ["accuracy"]),
                                  rows(ref.per_class, RESULT_KEYS + ["class"], ["accuracy"]))
    cka = pd.read_parquet(run / "cka.parquet")
    assert not cka.duplicated(CKA_KEYS).any() and len(cka) == len(ref.cka) > 0
    pd.testing.assert_frame_equal(rows(cka, CKA_KEYS, ["cka"]), rows(ref.cka, CKA_KEYS, ["cka"]))


# ------------------------------------------------------------------------------------ unreadable shards
def test_unreadable_shard_is_run_again_not_fatal_nor_dropped(tmp_path):
    cfg = make_config(tmp_path / "cache", tmp_path / "run", datasets=DATASETS[1:], selectors=["random"],
                      seeds=[0, 1], batch_size=64, num_workers=0)
    first = run_sweep(cfg, workers=1)
    assert first.ok, first.failures
    probe = next(u for u in first.plan.units if u.kind == "probe")
    cka = next(u for u in first.plan.units if u.kind == "cka")
    (probe.shard_dir(first.run_dir) / "results.parquet").write_bytes(b"PAR1 torn by a crash")
    (cka.shard_dir(first.run_dir) / "cka.parquet").write_bytes(b"")

    again = run_sweep(cfg, workers=1)
    assert again.ok, again.failures
    assert sorted(again.ran) == sorted([probe.key, cka.key])
    assert (probe.shard_dir(first.run_dir) / "status.unreadable.json").is_file()
    pd.testing.assert_frame_equal(again.results.drop(columns="unit"), first.results.drop(columns="unit"))
    pd.testing.assert_frame_equal(again.cka.drop(columns="unit"), first.cka.drop(columns="unit"))


# ---------------------------------------------------------------------------------- units per cache entry
def test_one_extraction_unit_per_cache_entry(tmp_path):
    datasets = [{"spec": "textures", "splits": ["train"]}, {"spec": "textures", "name": "tx", "splits": ["test", "train"]},
                {"spec": "textures", "name": "tx-val", "splits": ["train", "val", "test"]}]
    cfg = make_config(tmp_path / "cache", tmp_path / "run", datasets=datasets, solvers=[], cka={"split": "train"})
    plan = plan_sweep(cfg)
    ext = plan.of_kind("extract")
    # train / test only: one entry, one unit with the union of the splits; a carved val changes train: another
    assert [u.params["split"] for u in ext] == [["train", "test"], ["train", "val", "test"]]
    assert ext[0].dataset == "textures, tx"
    cka = plan.of_kind("cka")
    assert len({u.key for u in cka}) == 3 and [u.extract_key for u in cka] == [ext[0].key, ext[0].key, ext[1].key]

    res = run_sweep(cfg, workers=1)
    assert res.ok, res.failures
    assert len(res.ran) == 2 + 3
    assert set(res.cka["dataset"]) == {"textures", "tx", "tx-val"}
    full = res.cka[res.cka["fraction"] == 1.0]
    assert ((full["cka"] - 1).abs() < 1e-6)[full["selector"] == "random"].all()


# -------------------------------------------------------------------------------------- local placement
def test_local_executor_shares_the_cores_and_runs_extractions_on_any_worker_without_a_gpu(tmp_path, monkeypatch):
    from critmass.sweep import _executors
    from critmass.sweep._plan import Unit

    calls = []

    class Pool:  # records what is submitted, runs nothing
        def submit(self, fn, unit, run_dir, threads):
            from concurrent.futures import Future

            calls.append((unit, threads))
            return Future()

        def shutdown(self, **kw):
            pass

    ex = _executors.LocalExecutor(workers=3)
    ex.start(tmp_path, device="cpu")
    monkeypatch.setattr(ex, "_get_pool", lambda: Pool())
    ext = [Unit(kind="extract", key=f"e{i}", label="", params={"device": "cpu"}) for i in range(3)]
    ana = [Unit(kind="probe", key=f"p{i}", label="", extract_key="e9") for i in range(3)]
    ex.submit(ana[:1])
    ex.submit(ext)
    ex.submit(ana[1:])
    # A unit submitted alone gets every core; then the free workers take extractions first, each with its
    # share of the cores, so the three workers' torch threads add up to at most the cores (one each when
    # there are fewer cores than workers). The old rule gave the one CPU extraction every core next to
    # the analysis units: 2 + 1 + 1 threads on 2 cores.
    cores = os.cpu_count() or 1
    share = max(1, cores // 3)
    assert [(u.key, t) for u, t in calls] == [("p0", cores), ("e0", share), ("e1", share)]
    assert ex.pending == 6

    gpu = _executors.LocalExecutor(workers=4)
    gpu._gpus = ["cuda:0", "cuda:1"]
    gpu.run_dir = tmp_path
    calls.clear()
    monkeypatch.setattr(gpu, "_get_pool", lambda: Pool())
    gpu.submit([Unit(kind="extract", key=f"e{i}", label="", params={"device": "auto"}) for i in range(3)] + ana)
    # one extraction per GPU, each pinned to its device; analysis units on the other workers
    assert [(u.key, u.params.get("device")) for u, _ in calls] == [("e0", "cuda:0"), ("e1", "cuda:1"),
                                                                  ("p0", None), ("p1", None)]
    assert [t for _, t in calls] == [max(1, cores // 4)] * 4  # analysis units too: no inherited thread count
