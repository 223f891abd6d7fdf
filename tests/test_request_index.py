"""Issue 12: a repeated extraction is answered from the request index without importing torch."""

import json
import os
import subprocess
import sys
import time

import numpy as np

from critmass.features import extract
from critmass.features._requests import REQUESTS, request_key

KW = dict(split=["train", "test"], image_size=32, progress=False, num_workers=0, batch_size=64, pretrained=False)
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from critmass.features import extract
fs = extract("timm:test_resnet", "textures", cache=sys.argv[1], split=["train", "test"], image_size=32,
             progress=False, num_workers=0, batch_size=64, pretrained=False)
print(json.dumps({"torch": "torch" in sys.modules, "timm": "timm" in sys.modules, "source": fs.meta["source"],
                  "sum": float(fs.x_train[:].sum()), "seconds": time.perf_counter() - t0}))
"""


def _child(cache):
    out = subprocess.run([sys.executable, "-c", CHILD, str(cache)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_repeated_request_is_served_without_torch(tmp_path):
    first = _child(tmp_path)
    assert first["torch"]  # the first request extracts
    assert len(list((tmp_path / REQUESTS).glob("*.json"))) == 1
    again = _child(tmp_path)
    assert not again["torch"] and not again["timm"], again
    assert again["source"] == first["source"] and again["sum"] == first["sum"]


def test_index_never_serves_a_changed_entry_or_request(tmp_path, monkeypatch):
    fs = extract("timm:test_resnet", "textures", cache=tmp_path, **KW)
    calls = {"n": 0}
    from critmass.models import LayerReader

    original = LayerReader.__call__

    def counting(self, batch):
        calls["n"] += 1
        return original(self, batch)

    monkeypatch.setattr(LayerReader, "__call__", counting)
    assert extract("timm:test_resnet", "textures", cache=tmp_path, **KW).meta["source"] == fs.meta["source"]
    assert calls["n"] == 0
    # Another request (a different sub-sample) is not the indexed one: a new entry is extracted.
    other = extract("timm:test_resnet", "textures", cache=tmp_path, max_samples=30, **{k: v for k, v in KW.items()})
    assert other.meta["source"] != fs.meta["source"] and calls["n"] > 0
    # The entry rewritten behind the index's back (its split key changed): the index steps aside.
    man_path = tmp_path / fs.meta["source"].rsplit("/", 1)[-1] / "train" / "manifest.json"
    man = json.loads(man_path.read_text())
    man["key"] = "something-else"
    man_path.write_text(json.dumps(man))
    n = calls["n"]
    again = extract("timm:test_resnet", "textures", cache=tmp_path, **KW)
    assert calls["n"] > n  # re-extracted through the full key
    np.testing.assert_array_equal(again.x_train, fs.x_train)


def test_request_key_covers_weights_files_and_refuses_hub_weights(tmp_path):
    w = tmp_path / "w.safetensors"
    w.write_bytes(b"x" * 10)
    k1 = request_key("timm:resnet18", "textures", weights=w, layer="penultimate")
    os.utime(w, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert request_key("timm:resnet18", "textures", weights=w, layer="penultimate") != k1
    assert request_key("timm:resnet18", "textures", weights=tmp_path / "missing.pt") is None
    assert request_key("timm:resnet18", "textures", pretrained=True) is None  # hub revision may move
    assert request_key("timm:resnet18", "textures", pretrained=False) is not None
    assert request_key("efficientnet-lite0", "textures") is not None  # versioned by its package
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros((4, 2, 2)), y=np.arange(4))
    k2 = request_key("timm:resnet18", f"npz:{npz}", pretrained=False)
    np.savez(npz, x=np.ones((4, 2, 2)), y=np.arange(4))
    assert request_key("timm:resnet18", f"npz:{npz}", pretrained=False) != k2
