"""Cache safety: concurrent writers of one entry, a full disk, datasets edited in place (issue 11)."""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import namedtuple

import numpy as np
import pytest
from PIL import Image

from critmass.exceptions import CacheError
from critmass.features import extract, load_features
from critmass.features import _store
from critmass.features._store import SplitWriter, split_lock
from critmass.data._fingerprint import dataset_fingerprint
from critmass.models import LayerReader

KW = dict(split=["train", "test"], image_size=32, progress=False, num_workers=0, batch_size=16)


def _count_forwards(monkeypatch):
    calls = {"rows": 0}
    original = LayerReader.__call__

    def counting(self, batch):
        calls["rows"] += len(batch)
        return original(self, batch)

    monkeypatch.setattr(LayerReader, "__call__", counting)
    return calls


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---- 7: concurrent writers of one cache entry ------------------------------------------------------------
# Each child waits for a shared "go" file so both start extracting at the same moment, and sleeps a little
# per batch so the two extractions overlap for over a second.
_CHILD = r"""
import json, os, sys, time
import torch
torch.set_num_threads(1)
from critmass.models import LayerReader
from critmass.features import extract
cache, ready, go = sys.argv[1:4]
rows = [0]
original = LayerReader.__call__
def slow(self, batch):
    rows[0] += len(batch)
    time.sleep(0.03)
    return original(self, batch)
LayerReader.__call__ = slow
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
fs = extract("timm:test_resnet", "textures", pretrained=False, cache=cache, split=["train", "test"], image_size=32,
             progress=False, num_workers=0, batch_size=4)
print(json.dumps({"rows": rows[0], "source": fs.meta["source"]}))
"""


def _run_concurrently(cache, tmp_path, n=2):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    procs = [subprocess.Popen([sys.executable, str(script), str(cache), str(tmp_path / f"ready{i}"), str(tmp_path / "go")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    try:
        deadline = time.monotonic() + 240
        while not all((tmp_path / f"ready{i}").exists() for i in range(n)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.02)
        (tmp_path / "go").touch()
        return [(p.wait(timeout=300), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.slow
def test_two_concurrent_extractions_of_one_entry_both_succeed(tmp_path):
    cache = tmp_path / "shared"
    results = _run_concurrently(cache, tmp_path)
    for rc, out, err in results:
        assert rc == 0, err[-2000:]
    outs = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert outs[0]["source"] == outs[1]["source"]
    # The second writer waited and read the first one's entry: together they ran one extraction's rows.
    assert sum(o["rows"] for o in outs) == 144 + 48, outs

    entry = load_features(outs[0]["source"], verify=True)  # checksums match the manifests
    (tmp_path / "alone").mkdir()
    (rc, out, err), = _run_concurrently(tmp_path / "single", tmp_path / "alone", n=1)  # same settings, alone
    assert rc == 0, err[-2000:]
    single = load_features(json.loads(out.strip().splitlines()[-1])["source"])
    for s in ("train", "test"):
        np.testing.assert_array_equal(entry[s].x, single[s].x)
        np.testing.assert_array_equal(entry[s].y, single[s].y)
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1  # one entry (.requests aside)
    names = {p.name for p in cache.rglob("*") if p.is_file()}
    assert not names & {"features.partial.npy", "labels.partial.npy", "progress.json", "train.lock", "test.lock"}


def test_split_lock_is_exclusive_and_leaves_no_lock_file(tmp_path):
    lock, counter = tmp_path / "x.lock", tmp_path / "counter"
    counter.write_text("0")
    errors = []

    def work():
        try:
            for _ in range(40):
                with split_lock(lock):  # read-modify-write: a lost update means two holders at once
                    v = int(counter.read_text())
                    time.sleep(0.0005)
                    counter.write_text(str(v + 1))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and int(counter.read_text()) == 240
    assert not lock.exists()


def test_second_writer_waits_for_the_lock_then_reads_the_hit(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="critmass._io")  # split_lock logs the wait
    first = extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **KW)
    lock = next(tmp_path.glob("*/entry.json")).parent / "train.lock"
    split = next(tmp_path.glob("*/train"))
    # Make the train split look absent to the fast check, as if another process were still writing it...
    (split / "manifest.json").rename(split / "manifest.hold")
    calls = _count_forwards(monkeypatch)
    done = threading.Event()
    with split_lock(lock):
        t = threading.Thread(target=lambda: (extract("timm:test_resnet", "textures", pretrained=False,
                                                      cache=tmp_path, **KW), done.set()))
        t.start()
        deadline = time.monotonic() + 120
        while "waiting for another process" not in caplog.text:
            assert time.monotonic() < deadline and t.is_alive(), "the second writer must wait for the lock"
            time.sleep(0.02)
        time.sleep(0.2)
        assert not done.is_set()
        (split / "manifest.hold").rename(split / "manifest.json")  # ...which then finishes
    t.join(60)
    assert done.is_set() and calls["rows"] == 0  # it re-read the manifest under the lock: a hit
    np.testing.assert_array_equal(load_features(first.meta["source"])["train"].x, first.x_train)


# ---- 9: disk full ----------------------------------------------------------------------------------------
def test_too_little_disk_space_is_one_error_before_writing(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(_store.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(CacheError) as err:
        extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **KW)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "4,096 bytes are free" in msg and "CRITMASS_CACHE" in msg
    assert _files(tmp_path) == [str(next(tmp_path.glob("*/entry.json")).relative_to(tmp_path))]
    assert not [p for p in tmp_path.rglob("*") if p.is_dir() and p.name in ("train", "test")]


def test_writer_allocates_the_split_up_front_and_cleans_up_on_enospc(tmp_path, monkeypatch):
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate here")
    w = SplitWriter(tmp_path / "a", n_samples=1000, key="k")
    w.write(np.ones((1, 256), np.float32), np.zeros(1, np.int64))
    st = os.stat(tmp_path / "a" / "features.partial.npy")
    assert st.st_blocks * 512 >= st.st_size == 128 + 1000 * 256 * 4  # not sparse: every block is reserved

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    w = SplitWriter(tmp_path / "b", n_samples=1000, key="k")
    with pytest.raises(CacheError, match="not enough disk space for cache split .*b'"):
        w.write(np.ones((1, 256), np.float32), np.zeros(1, np.int64))
    assert not (tmp_path / "b").exists()


# ---- 11: datasets edited in place ------------------------------------------------------------------------
def _write_npz(path, seed):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), y_train=np.arange(40) % 4,
             x_test=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), y_test=np.arange(12) % 4)


def test_editing_an_npz_in_place_re_extracts(tmp_path, monkeypatch):
    path = tmp_path / "d.npz"
    _write_npz(path, 0)
    spec = f"npz:{path}"
    calls = _count_forwards(monkeypatch)
    first = extract("timm:test_resnet", spec, pretrained=False, cache=tmp_path / "c", **KW)
    again = extract("timm:test_resnet", spec, pretrained=False, cache=tmp_path / "c", **KW)
    assert calls["rows"] == 52 and again.meta["source"] == first.meta["source"]  # unchanged file: a hit
    before = os.stat(path)
    _write_npz(path, 1)  # same name, shapes and row count; other pixels
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with the old mtime: keyed by content
    edited = extract("timm:test_resnet", spec, pretrained=False, cache=tmp_path / "c", **KW)
    assert calls["rows"] == 104 and edited.meta["source"] != first.meta["source"]
    assert not np.allclose(edited.x_train, first.x_train)
    fresh = extract("timm:test_resnet", spec, pretrained=False, cache=tmp_path / "fresh", **KW)
    np.testing.assert_array_equal(edited.x_train, fresh.x_train)


def test_replacing_an_image_in_an_image_folder_re_extracts(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    spec = f"imagefolder:{root}"
    calls = _count_forwards(monkeypatch)
    first = extract("timm:test_resnet", spec, pretrained=False, cache=tmp_path / "c", **KW)
    n = calls["rows"]
    assert n == 20
    extract("timm:test_resnet", spec, pretrained=False, cache=tmp_path / "c", **KW)
    assert calls["rows"] == n  # unchanged folder: a hit
    old = os.stat(root / "dog" / "3.png")
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(root / "dog" / "3.png")  # same name, other image
    os.utime(root / "dog" / "3.png", ns=(old.st_atime_ns, old.st_mtime_ns + 1_000_000))
    edited = extract("timm:test_resnet", spec, pretrained=False, cache=tmp_path / "c", **KW)
    assert calls["rows"] == 2 * n and edited.meta["source"] != first.meta["source"]
    both = lambda fs: np.concatenate([fs.x_train, fs.x_test])  # noqa: E731
    assert not np.allclose(both(edited), both(first))


def test_dataset_fingerprint(tmp_path):
    assert dataset_fingerprint("textures") is None and dataset_fingerprint("torchvision:CIFAR10") is None
    _write_npz(tmp_path / "d.npz", 0)
    fp = dataset_fingerprint(f"npz:{tmp_path / 'd.npz'}")
    assert fp["size"] == (tmp_path / "d.npz").stat().st_size and len(fp["sha256"]) == 64
    (tmp_path / "f" / "a").mkdir(parents=True)
    (tmp_path / "f" / "a" / "1.png").write_bytes(b"x")
    rel = dataset_fingerprint("imagefolder:f", root=tmp_path)
    assert rel == dataset_fingerprint(f"imagefolder:{tmp_path / 'f'}") and rel["files"] == 1
    (tmp_path / "f" / "a" / "2.png").write_bytes(b"y")
    assert dataset_fingerprint(f"imagefolder:{tmp_path / 'f'}")["files"] == 2
