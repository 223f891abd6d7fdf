"""critmass.train: the factor losses against their formulas, PGD through torchattacks, and the harness
(determinism, resume after a kill, checkpoints that load by name, config errors with key and line)."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from pause_helpers import wait_for_pause
import torch
from torch import nn

from critmass.exceptions import ConfigError, WeightsError
from critmass.train import (DeCov, MatryoshkaLoss, Penultimate, PenultimateDropout, PGD, WidthProjection,
                            load_train_config, nested_dims, train)

timm = pytest.importorskip("timm")


# ---------------------------------------------------------------------------------------------- DeCov
def _decov_by_hand(h: np.ndarray, alpha: float) -> float:
    """Cogswell et al.: C_ij = 1/N sum_n (h_i - mu_i)(h_j - mu_j); L = alpha/2 (||C||_F^2 - ||diag C||^2)."""
    n, d = h.shape
    mu = [sum(h[k, i] for k in range(n)) / n for i in range(d)]
    total = 0.0
    for i in range(d):
        for j in range(d):
            if i != j:
                c_ij = sum((h[k, i] - mu[i]) * (h[k, j] - mu[j]) for k in range(n)) / n
                total += c_ij ** 2
    return alpha * 0.5 * total


def test_decov_equals_its_formula_on_a_hand_made_batch():
    h = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0], [2.0, 1.0, 5.0], [0.0, 4.0, 2.0]])
    # N=4 >= D=3: the D x D covariance path; cross-check with numpy's biased covariance as well
    c = np.cov(h, rowvar=False, bias=True)
    expected = 0.5 * 0.3 * ((c ** 2).sum() - (np.diag(c) ** 2).sum())
    assert _decov_by_hand(h, 0.3) == pytest.approx(expected, rel=1e-12)
    got = DeCov(0.3)(torch.tensor(h, dtype=torch.float64))
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # N=2 < D=3: the N x N Gram path gives the same number
    assert float(DeCov(2.0)(torch.tensor(h[:2], dtype=torch.float64))) == pytest.approx(_decov_by_hand(h[:2], 2.0),
                                                                                       rel=1e-12)
    # float32 input, a wider random batch: both paths within float32 rounding of the float64 value
    rng = np.random.default_rng(0)
    for n, d in ((7, 20), (40, 6)):
        x = rng.normal(size=(n, d))
        assert float(DeCov(1.0)(torch.tensor(x, dtype=torch.float32))) == pytest.approx(_decov_by_hand(x, 1.0), rel=1e-4)


def test_decov_zero_for_uncorrelated_features_and_single_samples_and_has_gradient():
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # diagonal covariance
    assert float(DeCov(1.0)(h)) == 0.0
    assert float(DeCov(1.0)(torch.ones(1, 4))) == 0.0
    x = torch.randn(8, 5, requires_grad=True, generator=torch.Generator().manual_seed(0))
    DeCov(1.0)(x).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ConfigError, match="alpha must be"):
        DeCov(-1.0)
    with pytest.raises(ConfigError, match=r"shape \(batch, neurons\)"):
        DeCov(1.0)(torch.zeros(2, 3, 4))


# ---------------------------------------------------------------------------------------------- Matryoshka
def _ce_by_hand(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def test_matryoshka_loss_is_the_weighted_sum_of_prefix_cross_entropies():
    torch.manual_seed(0)
    h, y = torch.randn(16, 12, dtype=torch.float64), torch.randint(0, 4, (16,))
    loss = MatryoshkaLoss(12, 4, dims=[3, 6, 12], weights=[1.0, 0.5, 2.0]).double()
    expected = 0.0
    for d, w, head in zip([3, 6, 12], [1.0, 0.5, 2.0], loss.heads):
        W, b = head.weight.detach().numpy(), head.bias.detach().numpy()
        expected += w * _ce_by_hand(h.numpy()[:, :d] @ W.T + b, y.numpy())
    assert loss(h, y).item() == pytest.approx(expected, rel=1e-10)
    # default: prefixes 8, 16, ..., D and unit weights
    assert nested_dims(128) == [8, 16, 32, 64, 128] and nested_dims(100) == [8, 16, 32, 64, 100]
    default = MatryoshkaLoss(12, 4).double()
    assert default.dims == [8, 12]
    plain = sum(_ce_by_hand(h.numpy()[:, :d] @ hd.weight.detach().numpy().T + hd.bias.detach().numpy(), y.numpy())
                for d, hd in zip(default.dims, default.heads))
    assert default(h, y).item() == pytest.approx(plain, rel=1e-10)


def test_matryoshka_can_share_the_model_classifier_and_refuses_bad_dims():
    fc = nn.Linear(12, 4)
    loss = MatryoshkaLoss(12, 4, dims=[4, 12], full_head=fc)
    assert loss.heads[-1] is fc and loss.shares_full_head
    with pytest.raises(ConfigError, match="strictly increasing"):
        MatryoshkaLoss(12, 4, dims=[6, 4])
    with pytest.raises(ConfigError, match="strictly increasing"):
        MatryoshkaLoss(12, 4, dims=[4, 16])
    with pytest.raises(ConfigError, match="weights must be 2"):
        MatryoshkaLoss(12, 4, dims=[4, 12], weights=[1.0])
    with pytest.raises(ConfigError, match="full_head"):
        MatryoshkaLoss(12, 4, dims=[4, 8], full_head=fc)


def test_dropout_and_width_projection_match_timm():
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        PenultimateDropout(1.0)
    d = PenultimateDropout(0.5).eval()
    x = torch.randn(4, 6)
    assert torch.equal(d(x), x)
    # model.width is timm's head_hidden_size: Linear + GELU before the classifier, as WidthProjection
    m = timm.create_model("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), head_hidden_size=24,
                          num_classes=3).eval()
    proj = WidthProjection(16, 24)
    proj.fc.load_state_dict(m.head.pre_logits.fc.state_dict())
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(img)
        head_in = m.head.flatten(m.head.norm(m.head.global_pool(feats)))
        torch.testing.assert_close(proj(head_in), m.forward_head(feats, pre_logits=True), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- PGD
class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv((x - 0.5) / 0.25)).mean(dim=(2, 3)))


@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 0.5)])
def test_pgd_examples_stay_in_the_ball_and_raise_the_loss(norm, eps):
    torch.manual_seed(0)
    model = _TinyNet()
    x, y = torch.rand(32, 3, 8, 8), torch.randint(0, 4, (32,))
    model.train()
    adv = PGD(norm, eps, steps=5)(model, x, y)
    assert model.training  # given back in the mode it was in
    delta = (adv - x).flatten(1)
    size = delta.abs().max(dim=1).values if norm == "Linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5) + 1e-7
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float(size.max()) > 0.5 * eps  # the attack moved
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        assert float(ce(model(adv), y)) > float(ce(model(x), y)) + 1e-3
    # the same seed gives the same examples (random start from torch's global RNG)
    torch.manual_seed(1)
    a1 = PGD(norm, eps, steps=2)(model, x, y)
    torch.manual_seed(1)
    assert torch.equal(a1, PGD(norm, eps, steps=2)(model, x, y))


def test_pgd_refuses_unnormalised_inputs_and_bad_options():
    with pytest.raises(ConfigError, match=r"images in \[0, 1\]"):
        PGD("Linf", 0.1)(_TinyNet(), torch.randn(2, 3, 8, 8) * 3, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="norm must be one of"):
        PGD("L1", 0.1)
    with pytest.raises(ConfigError, match="eps must be a positive"):
        PGD("L2", 0.0)


# ---------------------------------------------------------------------------------------------- harness
@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """96 train / 48 test 8x8 grey images of 3 classes (a bright vertical bar at a class-dependent place)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.permutation(np.arange(n) % 3)  # n / 3 of each class
        x = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, :, 2 * c: 2 * c + 3] += 150
        return x, y

    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    (xtr, ytr), (xte, yte) = make(96), make(48)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


def _config(npz, **over):
    cfg = {
        "model": {"arch": "convnext_atto", "kwargs": {"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 16]}, "width": 16,
                  "image_size": 32},
        "data": {"spec": f"npz:{npz}", "classes": [0, 2]},
        "optim": {"epochs": 2, "batch_size": 16, "lr": 0.05},
        "dropout": 0.2, "decov": 0.01, "matryoshka": {"dims": [4, 8, 16]},
        "checkpoint_every": 3, "threads": 1, "seed": 0,
    }
    for k, v in over.items():
        cfg[k] = v
    return cfg


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


PGD_CFG = {"eps": 0.03, "steps": 1, "eval_samples": 0}  # random starts: one more RNG stream to replay


def test_tiny_training_is_bit_for_bit_deterministic_and_resumes_after_a_stop(tiny_npz, tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    ref = train(_config(tiny_npz, adversarial=PGD_CFG), output=tmp_path / "ref", progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    assert ref.done and ref.step == ref.total_steps == 2 * (64 // 16)  # classes 0 and 2: 64 of 96 images
    assert [h["epoch"] for h in ref.history] == [1, 2]
    again = train(_config(tiny_npz, adversarial=PGD_CFG), output=tmp_path / "again", progress=False)
    assert _same_weights(ref.model_path, again.model_path)
    from safetensors import safe_open

    def meta(path):
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata()

    assert meta(ref.model_path) == meta(again.model_path)  # the metadata holds no paths or times either
    other = train(_config(tiny_npz, seed=1, adversarial=PGD_CFG), output=tmp_path / "other", progress=False)
    assert not _same_weights(ref.model_path, other.model_path)
    # stopped after 5 steps (mid-epoch, between checkpoints at 3 and 4), then resumed: the same weights
    part = train(_config(tiny_npz, adversarial=PGD_CFG), output=tmp_path / "stop", progress=False, stop_after=5)
    assert not part.done and part.step == 5 and not (tmp_path / "stop" / "model.safetensors").exists()
    done = train(_config(tiny_npz, adversarial=PGD_CFG), output=tmp_path / "stop", progress=False)
    assert done.done and _same_weights(ref.model_path, done.model_path)
    assert done.history == ref.history
    # a finished run is not trained again; a changed config in the same directory is refused
    assert train(_config(tiny_npz, adversarial=PGD_CFG), output=tmp_path / "stop", progress=False).history == ref.history
    with pytest.raises(ConfigError, match=r"different config \(changed: optim.lr\)"):
        train(_config(tiny_npz, adversarial=PGD_CFG, optim={"epochs": 2, "batch_size": 16, "lr": 0.1}),
              output=tmp_path / "stop")


def test_training_resumes_after_sigkill_to_the_same_weights(tiny_npz, tmp_path):
    import yaml

    cfg = _config(tiny_npz, optim={"epochs": 10, "batch_size": 16, "lr": 0.02}, checkpoint_every=2)
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from critmass.cli import main; main()", "train", str(path), "--out", str(out), "-q"]
    # The harness's test hook: once step 4's checkpoint is written the run writes the marker and sleeps.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "CRITMASS_TRAIN_PAUSE_AT_STEP": "4"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    paused, state = out / ".paused-step-4", out / "checkpoint" / "state.json"
    killed_at = None
    try:
        wait_for_pause(proc, paused, "at step 4")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = json.loads(state.read_text())["step"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-500:]
    assert killed_at == 4
    paused.unlink()
    assert not (out / "train.json").exists()
    resumed = train(path, output=out, progress=False)
    assert resumed.done and resumed.step == resumed.total_steps == 40 and killed_at < 40
    ref = train(path, output=tmp_path / "ref", progress=False)
    assert _same_weights(ref.model_path, resumed.model_path)


def test_checkpoint_loads_through_load_model_and_extracts_the_trained_features(tiny_npz, tmp_path):
    import critmass
    from critmass.models import load_model
    from critmass.train._data import load_images, split_transform

    res = train(_config(tiny_npz, matryoshka=None, adversarial={"eps": 0.02, "steps": 1, "eval_samples": 16}),
                output=tmp_path / "run", progress=False)
    assert 0 <= res.final["robust_test_accuracy"] <= 1 and res.final["robust_eval_samples"] == 16
    backbone = load_model(res.spec, weights=res.model_path)  # no num_classes, no image size: from the metadata
    assert backbone.weights_id.startswith("sha256:")
    assert backbone.preprocessing["input_size"][-1] == 32
    sd = _weights(res.model_path)
    assert all(torch.equal(backbone.module.state_dict()[k], v) for k, v in sd.items())
    # the features `critmass extract` writes are the training model's penultimate on the same images
    fs = critmass.extract(res.spec, f"npz:{tiny_npz}", weights=res.model_path, split=["test"], batch_size=16,
                          num_workers=0, progress=False)
    feats = np.asarray(fs.splits["test"].x)
    assert feats.shape == (48, 16)
    pil_tf, mean, std = split_transform(timm.data.resolve_model_data_config(backbone.module))
    data = load_images(f"npz:{tiny_npz}", "test", pil_transform=pil_tf, classes=[0, 1, 2])
    net = Penultimate(backbone.module, mean=mean, std=std).eval()
    with torch.no_grad():
        x, _ = data.batch(torch.arange(len(data)))
        mine = net.penultimate(x).numpy()
    np.testing.assert_allclose(feats, mine, rtol=0, atol=1e-5)
    with pytest.raises(WeightsError, match="trained as timm:convnext_atto"):
        load_model("timm:resnet18", weights=res.model_path)


# ---------------------------------------------------------------------------------------------- configs
def _write(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


def test_bad_configs_are_refused_with_key_and_line(tiny_npz, tmp_path):
    head = f"data:\n  spec: npz:{tiny_npz}\n"
    cases = [
        (head + "optim:\n  lrr: 0.1\n", r"bad.yaml: line 4: optim.lrr: unknown key \(closest: lr\)"),
        (head + "optim:\n  lr: -1\n", r"line 4: optim.lr: Input should be greater than 0; got -1"),
        (head + "model:\n  arch: resnett18\n", r"line 4: model.arch: unknown timm architecture 'resnett18' \(closest: "),
        (head + "dropout: 1.5\n", r"line 3: dropout: .*less than 1"),
        (head + "model:\n  kwargs: {num_classes: 3}\n", r"line 4: model.kwargs: 'num_classes' is set by critmass train"),
        (head + "matryoshka: {dims: [8, 4]}\n", r"line 3: matryoshka: .*strictly increasing"),
        ("data:\n  spec: nope:x\n", r"line 2: data.spec: .*unknown dataset source 'nope'"),
        (head + "seed: 1\nseed: 2\n", r"invalid train config bad.yaml line 4: seed: key given twice"),
        ("optim: {lr: 0.1}\n", r"\(top level\)\.data|data: missing required key 'data'"),
    ]
    for text, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            load_train_config(_write(tmp_path, text))
    # errors found when the model is built still name the key and its line
    p = _write(tmp_path, head + "model:\n  arch: resnet18\n  width: 64\noptim: {epochs: 1, batch_size: 8}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line 5: model.width: .*head_hidden_size"):
        train(p, output=tmp_path / "w", progress=False)
    p = _write(tmp_path, head + "model:\n  kwargs: {depths: [1, 1, 1, 1], dims: [8, 8, 16, 16]}\n  image_size: 32\n"
               "optim: {epochs: 1, batch_size: 500}\n")
    with pytest.raises(ConfigError, match=r"line 6: optim.batch_size: batch_size 500 is larger than the 96"):
        train(p, output=tmp_path / "b", progress=False)


def test_cli_train_dry_run_and_one_line_errors(tiny_npz, tmp_path, capsys):
    from critmass.cli._app import main

    p = _write(tmp_path, f"data:\n  spec: npz:{tiny_npz}\nseed: 4\n")
    assert main(["train", str(p), "--dry-run", "--seed", "7"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["seed"] == 7 and shown["output"].endswith("bad-seed7")
    p = _write(tmp_path, f"data:\n  spec: npz:{tiny_npz}\noptim:\n  epochs: 0\n")
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 4: optim.epochs" in err
