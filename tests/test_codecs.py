"""critmass.codecs and the codec axis: every codec's search against a brute-force oracle over what its codes
store, bytes per vector against the index's own code size, quantisers trained on the gallery only, the
codec as a row key (probes, sweeps, dr, report), recall against bytes, rank agreement, compress --codec."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

faiss = pytest.importorskip("faiss")

from critmass.cli._app import main  # noqa: E402
from critmass.codecs import list_codecs, make_codec, pack_bits, parse_codecs  # noqa: E402
from critmass.exceptions import ConfigError  # noqa: E402
from critmass.metrics import bytes_frontier, bytes_points, critical_bytes, dr, read_results  # noqa: E402
from critmass.probes import RetrievalProbe, run_probes  # noqa: E402
from critmass.probes._retrieval import rank_agreement  # noqa: E402

FLOAT_CODECS = ["float32", "float16", "int8", "pq", "opq", "pq4x6"]


@pytest.fixture(autouse=True)
def _faiss_threads(probe_threads):
    """FAISS follows the probes' torch threads (1, or CRITMASS_TEST_THREADS), as in a run."""
    from critmass.codecs import faiss_threads

    with faiss_threads():
        yield


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((700, 24)).astype(np.float32)
    Q = rng.standard_normal((60, 24)).astype(np.float32)
    return G / np.linalg.norm(G, axis=1, keepdims=True), Q / np.linalg.norm(Q, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def features(tmp_path_factory, digits):
    x_tr, y_tr, x_te, y_te = digits
    path = tmp_path_factory.mktemp("codec-features") / "digits.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


def _brute(q, g, metric):
    s = q.astype(np.float64) @ g.astype(np.float64).T
    if metric == "l2":
        s = 2 * s - (g.astype(np.float64) ** 2).sum(1)[None] - (q.astype(np.float64) ** 2).sum(1)[:, None]
    return s


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("spec", FLOAT_CODECS)
def test_search_equals_numpy_over_the_decoded_gallery(vectors, spec, metric):
    """FAISS's search over the codes = a numpy search of the float queries over the dequantised gallery."""
    G, Q = vectors
    fitted = make_codec(spec).fit(G, metric)
    scores, ids = fitted.search(Q, 10)
    oracle = _brute(fitted.query_vectors(Q), fitted.reconstruct(), fitted.score_metric)
    ranked = np.sort(oracle, axis=1)[:, ::-1][:, :11]
    np.testing.assert_allclose(scores, ranked[:, :10], atol=2e-5)
    # the same ids wherever the order is not a near tie (the margin exceeds the float noise of both paths)
    clear = np.ones_like(ids, dtype=bool)
    clear[:, :] = np.minimum(ranked[:, :10] - ranked[:, 1:11],
                             np.concatenate([np.full((len(Q), 1), np.inf), ranked[:, :9] - ranked[:, 1:10]], 1)) > 1e-4
    expect = np.argsort(-oracle, axis=1, kind="stable")[:, :10]
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(ids[clear], expect[clear])


@pytest.mark.parametrize("k", [1, 7, 8, 13, 24])
def test_binary_hamming_search_equals_a_numpy_popcount(vectors, k):
    G, Q = vectors[0][:, :k], vectors[1][:, :k]
    fitted = make_codec("binary").fit(G)
    codes_q = pack_bits(Q, G.mean(0))
    np.testing.assert_array_equal(fitted.codes, pack_bits(G, G.mean(0)))
    ham = np.unpackbits(codes_q[:, None, :] ^ fitted.codes[None, :, :], axis=2).sum(2)  # (n_q, n_g) popcount
    dist, ids = fitted.hamming_search(Q, 15)
    np.testing.assert_array_equal(dist, np.sort(ham, axis=1)[:, :15])
    for i in range(len(Q)):  # ties aside: every row strictly nearer than the 15th distance is returned
        strict = set(np.nonzero(ham[i] < dist[i, -1])[0])
        assert strict <= set(ids[i]) and all(ham[i, j] == d for j, d in zip(ids[i], dist[i]))
    scores, _ = fitted.search(Q, 15)
    np.testing.assert_allclose(scores, 1 - 2 * dist / k)
    assert fitted.bytes_per_vector == math.ceil(k / 8) == fitted.index.code_size


@pytest.mark.parametrize("k", [1, 7, 8, 13, 24])
def test_bytes_per_vector_is_k_bits_over_8_and_the_index_code_size(vectors, k):
    G = vectors[0][:, :k]
    expect = {"float32": 4 * k, "float16": 2 * k, "int8": k, "binary": math.ceil(k / 8),
              "binary-rerank": math.ceil(k / 8) + 4 * k, "pq": math.ceil(k / 4), "opq": math.ceil(k / 4),
              f"pq{k}x6": math.ceil(6 * k / 8), "pq1": 1}
    for spec, nbytes in expect.items():
        fitted = make_codec(spec).fit(G)
        assert fitted.bytes_per_vector == nbytes == fitted.codes.shape[1], spec
        if hasattr(fitted, "index"):
            size = fitted.index.sa_code_size() if hasattr(fitted.index, "sa_code_size") else fitted.index.code_size
            assert size == (nbytes if spec != "binary-rerank" else math.ceil(k / 8)), spec


def test_binary_rerank_with_every_candidate_is_the_float_search(vectors):
    G, Q = vectors
    rerank = make_codec("binary-rerank100").fit(G)  # 100 x 10 candidates >= the 700 gallery rows
    s, ids = rerank.search(Q, 10)
    s32, ids32 = make_codec("float32").fit(G).search(Q, 10)
    np.testing.assert_allclose(s, s32, atol=1e-5)
    assert (ids == ids32).mean() > 0.99  # ties aside


def test_codec_specs_and_one_line_errors(vectors, monkeypatch):
    assert {"float32", "float16", "int8", "binary", "binary-rerank", "pq", "opq"} <= set(list_codecs())
    assert parse_codecs("float32,int8, binary") == ["float32", "int8", "binary"]
    assert parse_codecs(None) == ["float32"]
    for bad, match in [("int4", "unknown codec 'int4'"), ("pq0", "pqM or pqMxNBITS"), ("pq8x20", "NBITS in 1..12"),
                       ("binary-rerank0", "re-rank factor"), ("binary3", "takes no parameters")]:
        with pytest.raises(ConfigError, match=match):
            make_codec(bad).check_width(24)
    with pytest.raises(ConfigError, match=r"7 sub-quantisers do not divide k = 24.*pq6 or pq8"):
        make_codec("pq7").check_width(24)
    with pytest.raises(ConfigError, match=r"need at least 256 gallery rows.*pq4x6"):
        make_codec("pq4x8").fit(vectors[0][:100])
    monkeypatch.delattr(faiss, "IndexBinaryFlat")
    with pytest.raises(ConfigError, match=r"needs faiss.IndexBinaryFlat.*valid here: .*float32.*int8"):
        parse_codecs(["float32", "binary"])


def test_no_query_or_test_row_trains_a_quantiser(features, digits, monkeypatch):
    """Shuffling the test rows, or replacing them with other values, leaves every codebook unchanged, and every
    quantiser sees gallery rows only."""
    import critmass.probes._knn as knn

    seen = []
    original = knn.NeighbourIndex.__init__

    def spy(self, gallery, *args, **kwargs):
        original(self, gallery, *args, **kwargs)
        if self.coded is not None:
            seen.append((gallery.shape[0], {k: np.asarray(v).tobytes() for k, v in
                                            self.coded.codebook_arrays().items()}))

    monkeypatch.setattr(knn.NeighbourIndex, "__init__", spy)
    x_tr, y_tr, x_te, y_te = digits
    runs = []
    noise = np.random.default_rng(2).uniform(0, 16, size=x_te.shape).astype(np.float32)
    perm = np.random.default_rng(1).permutation(len(y_te))
    for name, x_test, y_test in (("original", x_te, y_te), ("shuffled", x_te[perm], y_te[perm]),
                                 ("replaced", noise, y_te)):
        seen.clear()
        path = features.parent / f"{name}.npz"
        np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_test, y_test=y_test)
        res = run_probes(path, solver="retrieval", selectors=["random"], fractions=[0.25], seeds=1,
                         codecs="int8,pq,binary", progress=False)
        runs.append((list(seen), res.results))
    (books_a, res_a), (books_b, res_b), (books_c, _) = runs
    assert books_c == books_a  # test rows replaced by other values: the same codebooks
    assert len(books_a) == len(books_b) == 6  # 2 subsets (full layer, random 25%) x 3 codecs
    # every quantiser saw the gallery only: the run's fit rows (n_train < the training set, none a query)
    assert {n for n, _ in books_a} == {int(res_a["n_train"].iloc[0])} and res_a["n_train"].iloc[0] <= len(y_tr)
    assert books_a == books_b
    key = ["codec", "selector", "n_neurons", "seed"]
    a, b = res_a.sort_values(key).reset_index(drop=True), res_b.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["recall_at_10"], b["recall_at_10"])


def test_run_probes_codec_axis_rows_and_config(features):
    res = run_probes(features, solver="knn", selectors=["random"], fractions=[0.25, 1.0], seeds=2,
                     codecs=["float32", "int8", "binary"], progress=False).results
    single = run_probes(features, solver="knn", selectors=["random"], fractions=[0.25, 1.0], seeds=2,
                        progress=False).results
    assert len(res) == 3 * len(single)
    assert list(dict.fromkeys(res["codec"])) == ["float32", "int8", "binary"]
    f32 = res[res["codec"] == "float32"].reset_index(drop=True)
    pd.testing.assert_frame_equal(f32.drop(columns=["config"]), single.drop(columns=["config"]))
    k = res["n_neurons"].to_numpy()
    expect = np.select([res["codec"] == "float32", res["codec"] == "int8"], [4 * k, k], -(-k // 8))
    np.testing.assert_array_equal(res["bytes_per_vector"], expect)
    cfg = json.loads(res[res["codec"] == "int8"]["config"].iloc[0])
    assert cfg["codecs"] == ["float32", "int8", "binary"] and cfg["codec"]["spec"] == "int8"
    assert cfg["codec"]["codebook_bytes"] == 8 * int(res[res["codec"] == "int8"]["n_neurons"].iloc[0])
    # dr never averages across codecs: one row per codec
    out = dr(res)
    assert sorted(out["codec"]) == ["binary", "float32", "int8"]
    assert out.set_index("codec").loc["binary", "full_accuracy"] == pytest.approx(
        res[(res["codec"] == "binary") & (res["selector"] == "all")]["test_accuracy"].mean())


def test_codec_errors_before_any_work(features):
    with pytest.raises(ConfigError, match="apply to the neighbour solvers"):
        run_probes(features, solver="ridge", codecs="int8", progress=False)
    with pytest.raises(ConfigError, match=r"pq5.*do not divide k = 16"):
        run_probes(features, solver="retrieval", fractions=[0.25], seeds=1, codecs="pq5", progress=False)
    with pytest.raises(ConfigError, match="index='flat'"):
        run_probes(features, solver="knn", codecs="int8", solver_options={"index": "hnsw"}, progress=False)
    with pytest.raises(ConfigError, match="pass codecs with codecs="):
        run_probes(features, solver="knn", solver_options={"codec": "int8"}, progress=False)


def test_rank_agreement_against_scipy(digits):
    x_tr, y_tr, x_te, y_te = digits
    subsets = [np.arange(64), np.arange(0, 64, 3)]
    probe = RetrievalProbe(device="cpu", subsets=subsets, codec="int8").fit(x_tr, y_tr)
    table = probe.evaluate_subsets(x_te, y_te, per_query=True)
    # oracle: the full float32 cosine ranking vs this subset's int8 scores, naively per query
    from critmass.probes._knn import NeighbourIndex, SubsetVectors

    gv, qv = SubsetVectors(x_tr, "truncate-renorm"), SubsetVectors(x_te, "truncate-renorm")
    full = _brute(qv.get(np.arange(64)), gv.get(np.arange(64)), "cosine")
    cols = subsets[1]
    idx = NeighbourIndex(gv.get(cols), "cosine", codec=make_codec("int8"))
    here_all = _brute(idx.coded.query_vectors(qv.get(cols)), idx.coded.reconstruct(), "cosine")
    ref_ids = np.argsort(-full, axis=1, kind="stable")[:, :100]
    here_sorted = np.sort(here_all, axis=1)[:, ::-1]
    full_sorted = np.sort(full, axis=1)[:, ::-1]
    _, here_ids = idx.search(qv.get(cols), 100)
    checked = 0
    for i in range(0, len(y_te), 20):
        # a top-10 list is only comparable where rank 10 and 11 are apart by more than the float noise of the
        # two paths, in the full vector and in this subset's codes
        if min(full_sorted[i, 9] - full_sorted[i, 10], here_sorted[i, 9] - here_sorted[i, 10]) < 1e-5:
            continue
        checked += 1
        top_full = set(ref_ids[i, :10])
        assert table["overlap_at_10"][1, i] == pytest.approx(len(top_full & set(here_ids[i, :10])) / 10)
        rho = spearmanr(full[i, ref_ids[i]], here_all[i, ref_ids[i]]).statistic
        assert table["spearman_top100"][1, i] == pytest.approx(rho, abs=0.02)  # near-ties in the full ranking
    assert checked >= 5
    assert table["overlap_at_10"][0].mean() > 0.95 and table["spearman_top100"][0].mean() > 0.99
    # overlap@10 stays 10 deep when the recall cutoffs and mAP ask for less (map_at=None ranks with ks only)
    shallow = RetrievalProbe(ks=(1, 5), map_at=None, device="cpu", subsets=subsets, codec="int8").fit(x_tr, y_tr)
    np.testing.assert_allclose(shallow.evaluate_subsets(x_te, y_te, per_query=True)["overlap_at_10"],
                               table["overlap_at_10"])
    exact = rank_agreement((np.array([[3.0, 2.0, 1.0]]), np.array([[5, 6, 7]])), np.array([[6, 5, 7]]),
                           np.array([[1.0, 2.0, 3.0]]))
    assert exact["overlap"][0] == 1.0 and exact["spearman"][0] == pytest.approx(-1.0)


def test_critical_bytes_and_frontier_against_brute_force():
    rows = []
    for codec, per_k in {"float32": 4, "int8": 1, "binary": 1 / 8}.items():
        for sel, k, seeds in [("all", 64, [0]), ("random", 8, [0, 1]), ("random", 32, [0, 1])]:
            for seed in seeds:
                value = {64: 0.9, 32: 0.85, 8: 0.6}[k] - {"float32": 0, "int8": 0.01, "binary": 0.1}[codec] + 0.01 * seed
                rows.append({"model": "m", "dataset": "d", "layer": "l", "solver": "retrieval", "codec": codec,
                             "selector": sel, "fraction": k / 64, "n_neurons": k, "n_features": 64, "seed": seed,
                             "test_accuracy": value, "recall_at_10": value,
                             "bytes_per_vector": int(math.ceil(k * per_k))})
    # a tie: prefix at k=32 in int8 stores as much as random's and reaches the same mean; another at more bytes
    for seed, value in ((0, 0.84), (1, 0.85)):
        rows.append({**rows[-1], "selector": "prefix", "n_neurons": 32, "fraction": 0.5, "seed": seed, "codec": "int8",
                     "test_accuracy": value, "recall_at_10": value, "bytes_per_vector": 32})
    rows.append({**rows[-1], "selector": "prefix", "n_neurons": 40, "fraction": 40 / 64, "seed": 0, "codec": "int8",
                 "test_accuracy": 0.845, "recall_at_10": 0.845, "bytes_per_vector": 40})
    df = pd.DataFrame(rows)
    pts = bytes_points(df, "recall_at_10")
    tol = 1e-9
    for r in pts.itertuples():  # brute force: dominated iff a point at the same bytes is better, or one at fewer
        same = (pts["bytes_per_vector"] == r.bytes_per_vector) & (pts["value"] > r.value + tol)  # bytes is as good
        fewer = (pts["bytes_per_vector"] < r.bytes_per_vector) & (pts["value"] >= r.value - tol)
        assert r.on_frontier == (not (same | fewer).any()), r
    both = pts[(pts["bytes_per_vector"] == 32) & pts["on_frontier"]]
    assert set(both["selector"]) == {"random", "prefix"}  # equal means at equal bytes: both stay
    assert not pts[pts["bytes_per_vector"] == 40]["on_frontier"].any()  # equal value at more bytes: dominated
    assert len(bytes_frontier(df, "recall_at_10")) == int(pts["on_frontier"].sum())
    cb = critical_bytes(df, 0.9, metric="recall_at_10").iloc[0]
    # threshold 0.81: random k=32 int8 (0.845 mean, 32 B) beats binary k=64 (0.80 < 0.81) and float32 k=32 (128 B)
    assert (cb["critical_bytes"], cb["codec"], cb["n_neurons"]) == (32, "int8", 32)
    assert cb["selector"] in {"random", "prefix"}  # the two tie at 32 bytes
    assert cb["full_bytes"] == 256 and cb["saving"] == 8 and cb["reached"]
    within = critical_bytes(df, metric="recall_at_10", within=0.01).iloc[0]
    assert (within["critical_bytes"], within["codec"], within["selector"]) == (64, "int8", "all")


def test_three_codec_sweep_triples_the_rows(tmp_path):
    from critmass.sweep import run_sweep

    base = {"output": str(tmp_path / "a"), "cache": str(tmp_path / "cache"), "device": "cpu",
            "models": [{"spec": "timm:test_resnet", "pretrained": False, "image_size": 32}],
            "datasets": [{"spec": "digits", "max_samples": {"train": 300, "test": 100}}],
            "selectors": ["random"], "fractions": [0.5, 1.0], "seeds": [0, 1], "solvers": ["retrieval", "ridge"],
            "cka": False, "probes": {"device": "cpu"}}
    one = run_sweep(base, workers=1).results
    three = run_sweep({**base, "output": str(tmp_path / "b"), "codecs": ["float32", "int8", "binary"]},
                      workers=1).results
    ret1, ret3 = one[one["solver"] == "retrieval"], three[three["solver"] == "retrieval"]
    assert len(ret3) == 3 * len(ret1) and sorted(ret3["codec"].unique()) == ["binary", "float32", "int8"]
    assert (three[three["solver"] == "ridge"]["codec"] == "float32").all()
    assert len(three[three["solver"] == "ridge"]) == len(one[one["solver"] == "ridge"])
    assert not three.duplicated(["model", "dataset", "layer", "selector", "fraction", "seed", "solver", "codec"]).any()
    with pytest.raises(ConfigError, match="apply to the neighbour solvers"):
        run_sweep({**base, "solvers": ["ridge"], "codecs": ["int8"]}, workers=1)


def test_probe_dr_report_and_compress_on_the_command_line(features, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["probe", str(features), "--solver", "retrieval", "--codec", "float32,int8,binary",
                 "--fractions", "0.25,0.5,1", "--seeds", "2", "--out", str(out), "--no-progress"]) == 0
    res = read_results(out)
    assert set(res["codec"]) == {"float32", "int8", "binary"}
    capsys.readouterr()
    assert main(["dr", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Critical bytes at delta=0.9" in text and "| binary" in text
    assert main(["report", str(out), "--out", str(tmp_path / "report"), "--formats", "png"]) == 0
    tables = tmp_path / "report" / "tables"
    front, crit = pd.read_csv(tables / "bytes_frontier.csv"), pd.read_csv(tables / "critical_bytes.csv")
    assert (tmp_path / "report" / "figures" / "bytes_frontier.png").is_file()
    assert set(front["metric"]) == {"recall_at_1", "recall_at_10", "map"} and front["on_frontier"].any()
    assert len(crit) == 9  # 3 metrics x (delta, within 1 pt, within 5 pt)
    # compress --codec: codes and codebook; --apply encodes queries as the codec encodes the reduced queries
    rng = np.random.default_rng(0)
    gallery, queries = rng.standard_normal((600, 40)).astype(np.float32), rng.standard_normal((9, 40)).astype(np.float32)
    np.save(tmp_path / "g.npy", gallery)
    np.save(tmp_path / "q.npy", queries)
    for codec in ("int8", "binary", "pq", "opq", "float16", "binary-rerank"):
        red_dir = tmp_path / f"red-{codec}"
        assert main(["compress", str(tmp_path / "g.npy"), "--keep", "20", "--codec", codec, "--out", str(red_dir)]) == 0
        meta = json.loads((red_dir / "reducer.json").read_text())
        codes = np.load(red_dir / "codes.npy")
        assert codes.dtype == np.uint8 and codes.shape == (600, meta["codec"]["code_size"])
        assert not (red_dir / "embeddings.npy").exists() and (red_dir / "codebook.npz").is_file()
        assert main(["compress", str(tmp_path / "q.npy"), "--apply", str(red_dir), "--out", str(tmp_path / "qc.npy")]) == 0
        idx = np.load(red_dir / "reducer.npz")["indices"]
        expect = make_codec(codec).fit(gallery[:, idx], "cosine").encode(queries[:, idx])
        np.testing.assert_array_equal(np.load(tmp_path / "qc.npy"), expect)
    assert main(["compress", str(tmp_path / "g.npy"), "--keep", "20", "--codec", "pq3",
                 "--out", str(tmp_path / "bad")]) != 0
    assert "do not divide k = 20" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_old_results_and_mixed_solver_runs(features, tmp_path, capsys):
    """Tables written before the codec axis read as float32 at 4 k bytes; a run mixing retrieval (codecs) with
    a linear solver gets critical bytes and frontier panels per solver (recall for retrieval, accuracy else)."""
    from critmass.metrics import read_many
    from critmass.report import build_report

    ret = run_probes(features, solver="retrieval", selectors=["random"], fractions=[0.25, 1.0], seeds=2,
                     codecs="float32,int8", progress=False).results
    ridge = run_probes(features, solver="ridge", selectors=["random"], fractions=[0.25, 1.0], seeds=2,
                       progress=False).results
    old = ridge.drop(columns=["codec", "bytes_per_vector"])
    (tmp_path / "old").mkdir()
    old.to_parquet(tmp_path / "old" / "results.parquet")
    got = read_many([tmp_path / "old"])
    cb = critical_bytes(got, 0.9, metric="test_accuracy").iloc[0]
    assert cb["full_bytes"] == 4 * 64 and cb["reference_codec"] == "float32"
    assert len(dr(got)) == 1
    # old and new files of the same float32 probes are one group, not two
    (tmp_path / "new").mkdir()
    ridge.to_parquet(tmp_path / "new" / "results.parquet")
    both = read_many([tmp_path / "old", tmp_path / "new"])
    assert set(both["codec"]) == {"float32"} and len(both) == len(ridge)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pd.concat([ret, ridge], ignore_index=True).to_parquet(mixed / "results.parquet")
    capsys.readouterr()
    assert main(["dr", str(mixed)]) == 0
    text = capsys.readouterr().out
    assert "recall_at_10 / test_accuracy" in text and "| ridge" in text and "| retrieval" in text
    rep = build_report(mixed, formats=("png",), n_boot=0)
    crit = pd.read_csv(rep.tables["critical_bytes.csv"])
    assert set(crit["metric"]) == {"recall_at_1", "recall_at_10", "map", "test_accuracy"}
    assert set(crit[crit["metric"] == "test_accuracy"]["solver"]) == {"ridge"}


def test_rank_agreement_is_with_the_raw_layer_for_projections(features, digits, monkeypatch):
    """A projection selector's probe sees (X - mean) @ components; its rank agreement is still with the layer."""
    from critmass.probes._retrieval import RetrievalProbe as Probe
    from critmass.subsets import probe_fit_rows

    galleries = []
    original = Probe._reference

    def spy(self, G, Q, *args):
        galleries.append((np.asarray(G).copy(), np.asarray(Q).copy()))
        return original(self, G, Q, *args)

    monkeypatch.setattr(Probe, "_reference", spy)
    res = run_probes(features, solver="retrieval", selectors=["pca"], fractions=[0.1, 1.0], seeds=1,
                     progress=False).results
    x_tr, y_tr, x_te, _ = digits
    rows, _ = probe_fit_rows(y_tr, has_val=False)
    assert galleries and all(np.array_equal(g, x_tr[rows]) and np.array_equal(q, x_te) for g, q in galleries)
    full = res[res["selector"] == "all"].iloc[0]
    assert full["overlap_at_10"] > 0.99 and full["spearman_top100"] > 0.99
    assert (res[res["selector"] == "pca"]["overlap_at_10"] < 1).all()


def test_gap_and_heatmap_keep_codecs_apart(features):
    from critmass.metrics import gap_table, selector_gap
    from critmass.report import plot_dr_heatmap

    res = run_probes(features, solver="retrieval", selectors=["random", "variance"], fractions=[0.25, 1.0], seeds=2,
                     codecs="float32,binary", progress=False).results
    gap = selector_gap(res, selectors=["variance"], n_boot=0)
    assert set(gap["codec"]) == {"float32", "binary"}
    table = gap_table(gap)
    assert "codec" in table.columns and set(table["codec"]) == {"float32", "binary"}
    fig = plot_dr_heatmap(res, selector="random")
    labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    assert any("binary" in t for t in labels) and any("float32" in t for t in labels)
