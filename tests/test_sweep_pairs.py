"""Sweep configs that pair models with datasets (`models[i].datasets`): image models on image tasks, text
encoders on text tasks, in one sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from critmass.exceptions import ConfigError
from critmass.sweep import plan_sweep

IMAGE = {"spec": "timm:test_resnet", "pretrained": False, "image_size": 32, "datasets": ["digits"]}
TEXT = {"spec": "all-minilm-l6-v2", "datasets": ["bbc-news"]}
DATASETS = [{"spec": "digits"}, {"spec": "bbc-news", "max_samples": {"train": 100}}]


def _config(tmp_path, models, datasets=DATASETS):
    return {"output": str(tmp_path / "run"), "cache": str(tmp_path / "cache"), "models": models,
            "datasets": datasets, "selectors": ["random"], "fractions": [0.5, 1.0], "seeds": [0, 1],
            "solvers": ["logistic"], "cka": True}


def test_each_model_runs_only_on_the_datasets_it_lists(tmp_path):
    plan = plan_sweep(_config(tmp_path, [IMAGE, TEXT]))
    pairs = {(u.model, u.dataset) for u in plan.units}
    assert pairs == {("timm:test_resnet", "digits"), ("all-minilm-l6-v2", "bbc-news")}
    for kind in ("extract", "probe", "cka"):
        assert {(u.model, u.dataset) for u in plan.of_kind(kind)} == pairs
    assert "paired as each model lists" in plan.describe()
    # 2 feature sets x (2 sizes x 2 seeds + 1 full-layer probe)
    assert plan.count_cells()["probes"] == 2 * (2 * 2 + 1)


def test_without_datasets_a_model_runs_on_every_dataset(tmp_path):
    crossed = dict(IMAGE)
    del crossed["datasets"]
    plan = plan_sweep(_config(tmp_path, [crossed], [{"spec": "digits"}, {"spec": "textures"}]))
    assert {u.dataset for u in plan.of_kind("extract")} == {"digits", "textures"}


def test_an_unknown_dataset_name_is_refused_with_its_key_and_line(tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(
        "models:\n"
        "  - spec: timm:test_resnet\n"
        "    pretrained: false\n"
        "    datasets: [digitz]\n"
        "datasets:\n"
        "  - spec: digits\n")
    with pytest.raises(ConfigError, match=r"line 4: models\[0\]\.datasets: dataset 'digitz' is not one of "
                                          r"this sweep's datasets \(digits\).*closest: digits") as err:
        plan_sweep(cfg)
    assert "\n" not in str(err.value)


def test_the_offline_table1_example_pairs_vision_and_text(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "offline_table1.yaml"
    plan = plan_sweep(example, out=tmp_path / "run")
    pairs = {(u.model, u.dataset) for u in plan.of_kind("extract")}
    vision = {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "open-nsfw"}
    assert pairs == ({(m, d) for m in vision for d in ("fashion-mnist", "digits", "textures")}
                     | {(m, d) for m in ("all-minilm-l6-v2", "all-mpnet-base-v2") for d in ("bbc-news", "spam-assassin")})


def test_report_reads_a_run_whose_cka_table_is_empty(tmp_path, digits, probe_threads):
    """A sweep with `cka: false` writes an empty cka.parquet; the report must treat it as absent (it failed
    with 'cka.parquet is empty')."""
    import pandas as pd

    from critmass.features import FeatureSet, FeatureSplit
    from critmass.probes import run_probes
    from critmass.report._run import load_run
    from critmass.sweep._run import CKA_KEYS

    X, y, Xt, yt = digits
    fs = FeatureSet({"train": FeatureSplit(X[:400], y[:400]), "test": FeatureSplit(Xt, yt)},
                    {"model": "m", "dataset": "digits", "layer": "penultimate"})
    run_probes(fs, fractions=[0.5, 1.0], seeds=[0], solver="ridge", device="cpu", out=tmp_path)
    pd.DataFrame(columns=CKA_KEYS).to_parquet(tmp_path / "cka.parquet", index=False)
    run = load_run(tmp_path)
    assert run.cka is None and len(run.results) == 3
