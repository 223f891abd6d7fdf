"""CPU passes keep freed activations in the heap (glibc) instead of page-faulting them in every batch."""

import ctypes
import json
import resource
import sys

import numpy as np
import pytest

from critmass import _alloc
from critmass._alloc import heap_reuse
from critmass.features import extract

glibc = pytest.mark.skipif(not (sys.platform.startswith("linux") and _alloc._glibc() is not None),
                           reason="heap reuse tunes glibc's malloc; this platform has none")

_BLOCK = 96 << 20  # above glibc's largest mmap threshold (32 MiB): mapped afresh on every malloc by default
_PAGES = _BLOCK // 4096


def _faults_per_round(rounds: int = 3, block: int = _BLOCK) -> list[int]:
    """Minor page faults of each malloc + touch + free of one large block."""
    libc = _alloc._glibc()
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    out = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(block)
        assert p
        ctypes.memset(p, 1, block)
        libc.free(p)
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return out


@glibc
def test_a_freed_large_block_is_reused_inside_and_unmapped_again_after(monkeypatch):
    monkeypatch.delenv(_alloc.ENV, raising=False)
    plain = _faults_per_round()
    # Default malloc: every round maps the block afresh and faults every page in (fewer, larger faults where
    # transparent huge pages are always on, so the floor is one fault per 2 MiB).
    assert min(plain) >= _BLOCK // (2 << 20)
    with heap_reuse() as on:
        assert on
        with heap_reuse() as nested:  # nested use shares the setting; the inner exit does not undo it
            assert nested
        inside = _faults_per_round()
    # The first round grows the heap (its faults); the next ones reuse those pages: no new faults.
    assert max(inside[1:]) <= max(0.02 * _PAGES, 8), (plain, inside)
    after = _faults_per_round()  # mmap allowed again on exit: a block over 32 MiB is mapped (and faulted) afresh
    assert min(after) >= _BLOCK // (2 << 20) and min(after) > 10 * max(inside[1:]), (plain, inside, after)
    # ... while a 16 MiB block is reused from the heap, as glibc's dynamic threshold would have it after a
    # forward pass; fixed fresh-process defaults (128 KiB) would map and fault it afresh every round.
    mid = _faults_per_round(block=16 << 20)
    assert max(mid[1:]) <= max(0.02 * (16 << 20) // 4096, 8), mid


@glibc
def test_opt_out_and_inactive_change_nothing(monkeypatch):
    monkeypatch.setenv(_alloc.ENV, "0")
    with heap_reuse() as on:
        assert not on
        off = _faults_per_round()
    assert min(off[1:]) >= _BLOCK // (2 << 20)
    monkeypatch.delenv(_alloc.ENV)
    with heap_reuse(active=False) as on:
        assert not on


def test_cpu_extraction_records_it_and_gives_the_same_features(tmp_path, monkeypatch):
    kw = dict(split=["train", "test"], image_size=32, progress=False, num_workers=0, batch_size=16, pretrained=False)
    monkeypatch.delenv(_alloc.ENV, raising=False)
    fs = extract("timm:test_resnet", "textures", cache=tmp_path / "on", device="cpu", **kw)
    monkeypatch.setenv(_alloc.ENV, "0")
    ref = extract("timm:test_resnet", "textures", cache=tmp_path / "off", device="cpu", **kw)
    np.testing.assert_allclose(fs.x_train, ref.x_train, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fs.x_test, ref.x_test, rtol=1e-5, atol=1e-6)
    on = json.loads(next((tmp_path / "on").glob("*/train/manifest.json")).read_text())
    off = json.loads(next((tmp_path / "off").glob("*/train/manifest.json")).read_text())
    assert on["heap_reuse"] is (_alloc._glibc() is not None)
    assert off["heap_reuse"] is False
    assert _alloc._depth == 0  # released after the pass
