"""`medsyn curate`: clusters per class, k-NN scores against real images, discard decisions, the two-pass command."""
from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from medsyn.curate import cluster_per_class, discard_reasons, knn_scores, parse_cluster_ids, read_id_tokens
from medsyn.curate.features import PixelExtractor
from medsyn.data import load_source
from medsyn.errors import ConfigError, DataError
from medsyn.imageio import write_image_folder
from medsyn.metrics.features import extract_features

SIDE = 16


def flat(value: float) -> np.ndarray:
    return np.full((1, SIDE, SIDE), value, dtype=np.float32)


def checkerboard(phase: int, contrast: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[:SIDE, :SIDE]
    board = ((y // 2 + x // 2 + phase) % 2).astype(np.float32)
    return (0.5 + contrast * (board - 0.5))[None]


def blob(rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[:SIDE, :SIDE]
    cy, cx = rng.uniform(6, 10, size=2)
    return (0.2 + 0.6 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 3.0 ** 2))).astype(np.float32)[None]


def noise(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 1, size=(1, SIDE, SIDE)).astype(np.float32)


def pixel_features(images: np.ndarray) -> np.ndarray:
    return extract_features(PixelExtractor(), images)


def write_set(folder, images, labels, names=("healthy", "tumour"), sample_like=True):
    """A class-folder set; with sample_like, a manifest like `medsyn sample` writes (checkpoint, seed, index)."""
    rows = [{"model": "dcgan", "checkpoint_sha256": "ab" * 32, "step": 100, "seed": 0, "index": i}
            for i in range(len(labels))] if sample_like else None
    write_image_folder(folder, np.stack(images), np.asarray(labels), list(names), rows=rows, stem="syn")
    return folder


# tumour: 6 flat greys and 6 checkerboards; healthy: 6 smooth blobs and 2 noise images
def synthetic_images():
    rng = np.random.default_rng(1)
    tumour = [flat(0.3 + 0.04 * i) for i in range(6)] + [checkerboard(0, 0.8 + 0.04 * i) for i in range(6)]
    healthy = [blob(rng) for _ in range(6)] + [noise(rng) for _ in range(2)]
    return healthy + tumour, [0] * 8 + [1] * 12


def real_images(n_per_class=12):
    rng = np.random.default_rng(2)
    return [blob(rng) for _ in range(2 * n_per_class)], [0] * n_per_class + [1] * n_per_class


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate")
    syn = write_set(root / "syn", *synthetic_images())
    real = write_set(root / "real", *real_images(), sample_like=False)
    return syn, real


# ---- pure stages ---------------------------------------------------------------------------------

def test_kmeans_puts_flat_and_checkerboard_images_in_different_clusters_deterministically():
    images, labels = synthetic_images()
    feats, labels = pixel_features(np.stack(images)), np.asarray(labels)
    clusters, centre_distance, notices = cluster_per_class(feats, labels, ["healthy", "tumour"], 2, seed=0)
    tumour = clusters[labels == 1]
    assert len(set(tumour[:6])) == 1 and len(set(tumour[6:])) == 1 and tumour[0] != tumour[6]
    assert notices == [] and (centre_distance >= 0).all()
    again, _, _ = cluster_per_class(feats, labels, ["healthy", "tumour"], 2, seed=0)
    assert np.array_equal(clusters, again)


def test_clusters_are_numbered_by_size_and_capped_at_distinct_images():
    feats = np.array([[0.0], [0.0], [0.0], [5.0], [5.0], [9.0]])
    clusters, _, notices = cluster_per_class(feats, np.zeros(6, dtype=np.int64), ["only"], 10, seed=0)
    assert clusters.tolist() == [0, 0, 0, 1, 1, 2]
    assert notices == ["class only: 6 images (3 distinct) allow 3 clusters, not 10"]
    with pytest.raises(ConfigError, match="at least 1"):
        cluster_per_class(feats, np.zeros(6, dtype=np.int64), ["only"], 0)


def test_knn_score_ranks_noise_above_smooth_images():
    rng = np.random.default_rng(3)
    real = np.stack([blob(rng) for _ in range(30)])
    inliers, outliers = np.stack([blob(rng) for _ in range(10)]), np.stack([noise(rng) for _ in range(5)])
    candidates = np.concatenate([inliers, outliers])
    scores, reference = knn_scores(pixel_features(candidates), np.zeros(15, dtype=np.int64), pixel_features(real),
                                   np.zeros(30, dtype=np.int64), ["blobs"])
    assert scores[10:].min() > 3 * scores[:10].max()
    assert 1 <= reference["blobs"] < scores[10:].min()  # real images' own 95th percentile: above the median, below noise
    assert 0.3 < np.median(scores[:10]) < 3  # inliers sit about as close as real images to each other
    with pytest.raises(DataError, match="at least 2"):
        knn_scores(pixel_features(candidates), np.zeros(15, dtype=np.int64), pixel_features(real[:1]),
                   np.zeros(1, dtype=np.int64), ["blobs"])


def test_discard_reasons_name_the_cluster_or_the_score():
    labels, clusters = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 1, 0, 0, 1])
    scores = np.array([0.5, 3.0, 1.0, 0.9, 1.1, 5.0])
    reasons = discard_reasons(labels, clusters, ["a b", "c"], scores, discard={(0, 1)}, max_score=2.0)
    assert reasons == ["", "cluster a_b/1 discarded by reviewer; score 3.00 above threshold 2.00",
                       "cluster a_b/1 discarded by reviewer", "", "", "score 5.00 above threshold 2.00"]
    by_fraction = discard_reasons(labels, clusters, ["a b", "c"], scores, discard_fraction=0.34)
    assert [bool(r) for r in by_fraction] == [False, True, False, False, False, True]
    assert by_fraction[1] == "score 3.00 in the highest 34% of class a b"


def test_cluster_ids_must_name_a_known_class_and_cluster(tmp_path):
    labels, clusters = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 0])
    names = ["normal, benign", "malignant"]
    tokens = read_id_tokens("normal__benign/1, malignant/0", None)
    assert parse_cluster_ids(tokens, labels, clusters, names) == {(0, 1), (1, 0)}
    assert parse_cluster_ids([("x", "normal, benign/0")], labels, clusters, names) == {(0, 0)}
    ids = tmp_path / "ids.txt"
    ids.write_text("# weird ones\nmalignant/0\n\nmalignant/4  # typo\n")
    with pytest.raises(DataError, match=r"ids.txt line 4: no cluster 'malignant/4': class malignant has clusters 0 to 0"):
        parse_cluster_ids(read_id_tokens(None, ids), labels, clusters, names)
    with pytest.raises(DataError, match="needs its class"):
        parse_cluster_ids([("--discard-clusters", "1")], labels, clusters, names)
    with pytest.raises(DataError, match="unknown class 'tumor'"):
        parse_cluster_ids([("--discard-clusters", "tumor/0")], labels, clusters, names)
    assert parse_cluster_ids([("x", "1")], np.zeros(2, int), np.array([0, 1]), ["all"]) == {(0, 1)}


# ---- the command ---------------------------------------------------------------------------------

def medsyn(monkeypatch, capsys, *args):
    """Run the CLI in this process (a subprocess would pay ~5 s of imports per call): (exit code, stdout, stderr)."""
    from medsyn.cli import main

    monkeypatch.setattr(sys, "argv", ["medsyn", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_review_then_apply_discards_exactly_the_chosen_cluster(sets, tmp_path, monkeypatch, capsys):
    syn, real = sets
    review = tmp_path / "review"
    code, out, err = medsyn(monkeypatch, capsys, "curate", syn, "--clusters", 2, "--features", "pixels", "--real", real,
                            "--out", review, "--cache", tmp_path / "cache")
    assert code == 0, err
    rows = read_csv(review / "clusters.csv")
    assert len(rows) == 20 and {r["class_name"] for r in rows} == {"healthy", "tumour"}
    checker_cluster = rows[-1]["cluster"]  # the last tumour image is a checkerboard
    assert {r["cluster"] for r in rows[8:14]} != {checker_cluster} and {r["cluster"] for r in rows[14:]} == {checker_cluster}
    page = (review / "clusters" / "index.html").read_text()
    assert f"id='{checker_cluster}'" in page and "mean score" in page
    assert (review / "clusters" / "tumour" / "cluster_001.png").is_file()
    assert not (review / "kept").exists()

    again = tmp_path / "again"
    medsyn(monkeypatch, capsys, "curate", syn, "--clusters", 2, "--features", "pixels", "--real", real, "--out", again,
           "--cache", tmp_path / "cache")
    assert (again / "clusters.csv").read_text() == (review / "clusters.csv").read_text()  # seeded: same clusters, scores

    ids = tmp_path / "discard.txt"
    ids.write_text(f"{checker_cluster}\n")
    applied = tmp_path / "applied"
    code, out, err = medsyn(monkeypatch, capsys, "curate", syn, "--review", review, "--discard-file", ids,
                            "--out", applied)
    assert code == 0, err
    discarded = read_csv(applied / "discarded.csv")
    assert [r["image"] for r in discarded] == [r["image"] for r in rows[14:]]
    assert {r["reason"] for r in discarded} == {f"cluster {checker_cluster} discarded by reviewer"}
    kept = load_source(str(applied / "kept"))
    assert kept.class_names == ["healthy", "tumour"] and kept.class_counts() == [8, 6]
    manifest = read_csv(applied / "kept" / "manifest.csv")
    assert manifest[0]["checkpoint_sha256"] == "ab" * 32 and manifest[-1]["curated_from"] == rows[13]["image"]
    assert json.loads((applied / "curate.json").read_text())["discarded"] == 6
    assert "kept 14 images" in out


def test_automatic_score_discards_the_noise_images(sets, tmp_path, monkeypatch, capsys):
    syn, real = sets
    out_dir = tmp_path / "auto"
    code, out, err = medsyn(monkeypatch, capsys, "curate", syn, "--clusters", 2, "--features", "pixels", "--real", real,
                            "--discard-fraction", 0.25, "--out", out_dir, "--cache", tmp_path / "cache")
    assert code == 0, err
    healthy_discarded = [r for r in read_csv(out_dir / "discarded.csv") if r["class_name"] == "healthy"]
    assert sorted(r["image"] for r in healthy_discarded) == ["healthy/syn_00006.png", "healthy/syn_00007.png"]
    assert all("in the highest 25% of class healthy" in r["reason"] for r in healthy_discarded)
    assert (out_dir / "clusters" / "index.html").is_file() and (out_dir / "kept" / "classes.txt").is_file()


@pytest.mark.parametrize("args, fragment", [
    (["{missing}", "--out", "{out}"], "no such file or folder"),
    (["{syn}", "--clusters", 0, "--out", "{out}"], "--clusters must be at least 1"),
    (["{syn}", "--features", "densenet121", "--out", "{out}"], "needs --weights FILE"),
    (["{syn}", "--features", "pixel", "--out", "{out}"], "unknown --features 'pixel'"),
    (["{syn}", "--features", "pixels", "--max-score", 2, "--out", "{out}"], "need scores: pass --real"),
    (["{syn}", "--features", "pixels", "--real", "{other}", "--out", "{out}"], "differ from the real data"),
    (["{syn}", "--features", "pixels", "--discard-file", "{missing}", "--out", "{out}"], "cannot read the discard file"),
    (["{syn}", "--features", "pixels", "--clusters", 2, "--discard-clusters", "tumour/2", "--out", "{out}"],
     "no cluster 'tumour/2'"),
    (["{syn}", "--review", "{syn}", "--clusters", 3, "--discard-clusters", "tumour/0", "--out", "{out}"],
     "--clusters belong to that run"),
    (["{syn}", "--review", "{syn}", "--discard-clusters", "tumour/0", "--out", "{out}"], "not a curate review folder"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(sets, tmp_path, monkeypatch, capsys, args, fragment):
    syn, real = sets
    other = write_set(tmp_path / "other", *real_images(3), names=("a", "b"), sample_like=False)
    paths = {"missing": tmp_path / "missing", "out": tmp_path / "out", "syn": syn, "other": other}
    code, out, err = medsyn(monkeypatch, capsys, "curate", *(str(a).format(**paths) for a in args),
                            "--cache", tmp_path / "cache")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    # progress lines may come first: a bad cluster id is only known once the clusters are
    assert code == 2 and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert fragment in errors[0] and "Traceback" not in err, errors[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
