"""Atomic writes: all or nothing, with ordinary file permissions."""

import os
import stat

import pytest

from critmass._io import atomic_path, atomic_write_json


def test_atomic_write_replaces_whole_file_with_plain_permissions(tmp_path):
    target = tmp_path / "a" / "r.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert target.read_text().strip().startswith("{") and '"x": 2' in target.read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.json"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "r.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]
