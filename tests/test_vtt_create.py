"""`medsyn vtt create` and `invite`: stratified draw, identical encoding, the key, seeds, bad input, overlap warning."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsyn.data import load_source
from medsyn.errors import ConfigError, DataError, WriteError
from medsyn.imageio import to_uint, write_image_folder
from medsyn.provenance import Record, image_hashes, write_provenance
from medsyn.vtt.create import create_study, study_counts
from medsyn.vtt.encode import png_chunks
from medsyn.vtt.store import DATABASE, StudyStore, token_digest

CLASSES = ["malignant", "normal, benign"]


def sample_folder(folder: Path, data, run: str, trained_on) -> Path:
    """A folder as `medsyn sample` writes it: class folders, and provenance naming the run and its training images."""
    write_image_folder(folder, data.images, data.labels, data.class_names, stem="syn")
    load = {"manifest": None, "axis": 2, "slices": None, "window": None, "size": 28, "channels": 1,
            "interpolation": "bilinear"}
    record = Record("generator training", "breastmnist.npz", load, "train", image_hashes(trained_on.images), run)
    write_provenance(folder, [record], {"command": "sample", "run": run})
    return folder


@pytest.fixture(scope="module")
def sets(medmnist_dir, tmp_path_factory):
    """real: BreastMNIST test (42/114); val: its val split as a plain class folder (21/57); sample: 60 train images
    as a sample folder of a run trained on the train split; leaky: one whose run trained on the test images."""
    root = tmp_path_factory.mktemp("vtt-sets")
    npz = medmnist_dir / "breastmnist.npz"
    val, train, test = (load_source(f"{npz}:{split}") for split in ("val", "train", "test"))
    write_image_folder(root / "val", val.images, val.labels, val.class_names)
    picked = np.concatenate([np.flatnonzero(train.labels == k)[:30] for k in range(2)])
    sample_folder(root / "sample", train.subset(picked), "/runs/gan-a", train)
    sample_folder(root / "leaky", train.subset(picked), "/runs/gan-leaky", test)
    other = train.subset(picked)
    write_image_folder(root / "other-classes", other.images, other.labels, ["benign", "malignant"])
    (root / "empty").mkdir()
    return {"real": f"{npz}:test", "val": str(root / "val"), "sample": str(root / "sample"),
            "leaky": str(root / "leaky"), "other-classes": str(root / "other-classes"), "empty": str(root / "empty"),
            "test": test}


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_study_counts_split_the_synthetic_share_over_the_sets():
    assert study_counts(20, 0.5, 1) == (10, [10])
    assert study_counts(17, 0.6, 2) == (10, [4, 3])  # 10.2 real -> 10; 7 synthetic, the first set takes the remainder
    assert study_counts(10, 0.6, 3) == (6, [2, 1, 1])
    assert study_counts(5, 0.5, 1) == (3, [2])  # halves round up, not to the even count
    for per_class, share, n_sets in ((1, 0.5, 1), (3, 0.9, 1), (4, 0.5, 3), (10, 0.0, 1), (10, 1.0, 1)):
        with pytest.raises(ConfigError):
            study_counts(per_class, share, n_sets)


def test_draw_is_stratified_and_the_key_matches_the_files(sets, tmp_path):
    out = tmp_path / "study"
    summary = create_study(real=sets["real"], synthetic=[sets["val"], sets["sample"]], per_class=17, out=out,
                           ask_class=True, real_share=0.6, seed=1)
    assert summary.describe() == (f"study {out}: 34 images (20 real, 14 synthetic from 2 generators), 2 classes x 17, "
                                  f"28x28 grey, class question asked")
    warnings = [n for n in summary.notices if n.startswith("warning: ")]
    # BreastMNIST holds one scan in both its train and test splits: the run trained on it
    assert len(warnings) == 1 and "1 of the 156 real images" in warnings[0], summary.notices
    assert "/runs/gan-a" in warnings[0] and "of the 20 drawn for the study" in warnings[0]
    assert any("has no provenance.json" in n and sets["val"] in n for n in summary.notices)
    store = StudyStore(out)
    images = store.images()
    count = Counter((i.class_index, i.is_synthetic, i.source, i.generator) for i in images)
    for k in range(2):
        assert count[(k, False, sets["real"], None)] == 10
        assert count[(k, True, sets["val"], sets["val"])] == 4  # no provenance: the set itself names the generator
        assert count[(k, True, sets["sample"], "/runs/gan-a")] == 3
    assert len(images) == 34 == len({i.origin for i in images}) == len({i.id for i in images})
    settings = store.settings()
    assert settings["class_names"] == CLASSES and settings["ask_class"] is True and settings["mode"] == "L"
    assert (settings["n_real_per_class"], settings["n_synthetic_per_class"], settings["size"]) == (10, 7, 28)
    assert settings["synthetic"] == [sets["val"], sets["sample"]]
    assert settings["generators"] == [sets["val"], "/runs/gan-a"]
    assert settings["real"] == sets["real"] and settings["created"].endswith("+00:00") and settings["medsyn_version"]
    test = sets["test"]
    for image in images:  # each served file holds exactly the drawn image, of the class the key says
        data = (out / "images" / f"{image.id}.png").read_bytes()
        assert hashlib.sha256(data).hexdigest() == image.sha256
        served = np.asarray(Image.open(io.BytesIO(data)))
        if image.is_synthetic:
            origin = Path(image.origin)
            assert origin.is_file() and origin.parents[1] == Path(image.source)
            assert origin.parent.name == ("malignant" if image.class_index == 0 else "normal__benign")
            assert np.array_equal(served, np.asarray(Image.open(origin)))
        else:
            index = int(image.origin.removeprefix("index "))
            assert test.labels[index] == image.class_index
            assert np.array_equal(served, to_uint(test.images[index], 8))


def test_every_file_is_encoded_alike_and_the_folder_holds_nothing_else(sets, tmp_path):
    out = tmp_path / "study"
    create_study(real=sets["real"], synthetic=[sets["sample"]], per_class=12, out=out, seed=0)
    images = StudyStore(out).images()
    assert files_in(out) == {DATABASE} | {f"images/{i.id}.png" for i in images}  # no WAL, no journal, no extras
    times = {(os.stat(out / "images" / f"{i.id}.png").st_mtime, os.stat(out / "images" / f"{i.id}.png").st_atime)
             for i in images}
    assert len(times) == 1  # before reading them: a read may move the access time
    blobs = [(out / "images" / f"{i.id}.png").read_bytes() for i in images]
    assert len({len(b) for b in blobs}) == 1  # stored, not deflated: the size says nothing about the content
    for data in blobs:
        assert set(png_chunks(data)) == {"IHDR", "IDAT", "IEND"}
        assert png_chunks(data)[0] == "IHDR" and png_chunks(data)[-1] == "IEND"
        # IHDR: width, height, bit depth 8, colour type 0 (grey), compression, filter, interlace 0
        assert data[16:29] == (28).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    assert all(len(i.id) == 16 and int(i.id, 16) >= 0 for i in images)
    kinds = [i.is_synthetic for i in images]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)  # rows are in the shuffled order


def test_colour_and_size_are_the_same_for_every_image(tmp_path):
    """A 20x20 RGB real set and a 32x32 grey synthetic one: with --size 24 every file is 24x24 RGB."""
    rng = np.random.default_rng(0)
    for name, side, shape in (("real", 20, (20, 20, 3)), ("syn", 32, (32, 32))):
        for cls in ("a", "b"):
            (tmp_path / name / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / name / cls / f"{i}.png")
    out = tmp_path / "study"
    summary = create_study(real=str(tmp_path / "real"), synthetic=[str(tmp_path / "syn")], per_class=4, out=out,
                           size=24)
    assert summary.describe().endswith("8 images (4 real, 4 synthetic from 1 generator), 2 classes x 4, 24x24 RGB, "
                                       "class not asked")
    opened = [Image.open(p) for p in (out / "images").iterdir()]
    assert {(im.mode, im.size) for im in opened} == {("RGB", (24, 24))} and len(opened) == 8
    assert {im.info.get("dpi") for im in opened} == {None} and not any(im.text for im in opened)
    assert StudyStore(out).settings()["mode"] == "RGB"


def test_the_seed_fixes_the_draw_and_the_order(sets, tmp_path):
    def origins(seed, name):
        create_study(real=sets["real"], synthetic=[sets["val"]], per_class=10, out=tmp_path / name, seed=seed)
        images = StudyStore(tmp_path / name).images()
        return [(i.source, i.origin) for i in images], {i.id for i in images}

    first, ids_first = origins(3, "a")
    again, ids_again = origins(3, "b")
    other, _ = origins(4, "c")
    assert first == again and not ids_first & ids_again  # same images in the same order, under new ids
    assert set(other) != set(first)


def test_training_images_among_the_real_ones_are_warned_about(sets, tmp_path):
    summary = create_study(real=sets["real"], synthetic=[sets["leaky"]], per_class=10, out=tmp_path / "study")
    warnings = [n for n in summary.notices if n.startswith("warning: ")]
    assert len(warnings) == 1, summary.notices
    assert "156 of the 156 real images" in warnings[0] and "(10 of the 10 drawn for the study)" in warnings[0]
    assert "generator training" in warnings[0] and "/runs/gan-leaky" in warnings[0]
    assert StudyStore(tmp_path / "study").settings()["generators"] == ["/runs/gan-leaky"]


def test_a_failed_write_leaves_nothing(sets, tmp_path, monkeypatch):
    from medsyn.vtt import create

    real_encode, calls = create.encode_png, []

    def failing(image):  # the disk fills up at the fifth image
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real_encode(image)

    monkeypatch.setattr(create, "encode_png", failing)
    with pytest.raises(WriteError, match="disk is full"):
        create_study(real=sets["real"], synthetic=[sets["val"]], per_class=4, out=tmp_path / "study")
    assert list(tmp_path.iterdir()) == []  # neither the study nor its temporary folder


def test_synthetic_images_given_as_real_are_warned_about(sets, tmp_path):
    summary = create_study(real=sets["sample"], synthetic=[sets["val"]], per_class=4, out=tmp_path / "study")
    assert any(n.startswith(f"warning: --real {sets['sample']} holds synthetic images") for n in summary.notices)


def test_a_set_given_twice_or_an_empty_one_is_refused(sets, tmp_path):
    with pytest.raises(ConfigError, match="given twice"):
        create_study(real=sets["real"], synthetic=[sets["val"], sets["val"]], per_class=4, out=tmp_path / "s")
    with pytest.raises(DataError, match="holds no images|no class subfolders"):
        create_study(real=sets["real"], synthetic=[sets["empty"]], per_class=4, out=tmp_path / "s")


def medsyn(*args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "medsyn", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("synthetic, options, fragments", [
    ("empty", [], ["empty", "no class subfolders"]),
    ("other-classes", [], ["other-classes", "classes differ", "lacks 'normal, benign'", "has 'benign'"]),
    ("val", ["--per-class", "100"], ["breastmnist.npz:test", "has 42 images of class 'malignant', 50 are needed"]),
    ("val", ["--real-share", "1.0"], ["--real-share must be between 0 and 1"]),
])
def test_bad_input_is_one_line_exit_2_and_leaves_no_folder(sets, tmp_path, synthetic, options, fragments):
    out = tmp_path / "study"
    given = {"--per-class": "10", **dict(zip(options[::2], options[1::2]))}
    result = medsyn("vtt", "create", "--real", sets["real"], "--synthetic", sets[synthetic], "--out", out,
                    *[x for pair in given.items() for x in pair])
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert list(tmp_path.iterdir()) == []


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the `medsyn` entry point in this process (no second import of everything)."""
    from medsyn import cli

    monkeypatch.setattr(sys, "argv", ["medsyn", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def test_create_then_invite_through_the_command_line(sets, tmp_path, monkeypatch, capsys):
    study = tmp_path / "study"
    code, out, err = run_cli(monkeypatch, capsys, "vtt", "create", "--real", sets["real"], "--synthetic",
                             sets["sample"], "--per-class", "6", "--out", study, "--seed", "2")
    assert code in (0, None), err
    assert out.strip() == f"study {study}: 12 images (6 real, 6 synthetic from 1 generator), 2 classes x 6, 28x28 " \
                          f"grey, class not asked"
    assert f"next: medsyn vtt invite {study}" in err and "warning: 1 of the 156 real images" in err

    code, out, err = run_cli(monkeypatch, capsys, "vtt", "invite", study, "--raters", "alice,bob", "--raters", "carol",
                             "--base-url", "http://lab:9000/")
    assert code in (0, None), err
    lines = [line.split() for line in out.strip().splitlines()]  # rich prints the tab as spaces
    assert [name for name, _ in lines] == ["alice", "bob", "carol", "admin"]
    assert all(link.startswith("http://lab:9000/r/") for _, link in lines[:3])
    assert lines[3][1].startswith("http://lab:9000/admin/")
    tokens = {name: link.rsplit("/", 1)[1] for name, link in lines}
    assert len(set(tokens.values())) == 4 and all(len(t) >= 32 for t in tokens.values())
    stored = b"".join(p.read_bytes() for p in study.iterdir() if p.name.startswith(DATABASE))
    assert not any(token.encode() in stored for token in tokens.values())  # only digests, in the file or its WAL
    with contextlib.closing(sqlite3.connect(study / DATABASE)) as db:
        digests = dict(db.execute("SELECT name, token_sha256 FROM raters"))
        admin = db.execute("SELECT token_sha256 FROM admin").fetchall()
        order_of = ("SELECT o.image_id FROM rater_order o JOIN raters r ON r.id=o.rater_id WHERE r.name=? "
                    "ORDER BY o.position")
        orders = {name: [r[0] for r in db.execute(order_of, (name,))] for name in digests}
    assert digests == {n: token_digest(tokens[n]) for n in ("alice", "bob", "carol")}
    assert admin == [(token_digest(tokens["admin"]),)]
    ids = sorted(i.id for i in StudyStore(study).images())
    assert all(sorted(order) == ids for order in orders.values())
    assert len({tuple(order) for order in orders.values()}) == 3

    for raters, fragment in ((["dave,erin", "dave"], "lists a name twice: 'dave'"),
                             (["alice"], "'alice' is already invited")):
        options = [x for r in raters for x in ("--raters", r)]
        code, out, err = run_cli(monkeypatch, capsys, "vtt", "invite", study, *options)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    with contextlib.closing(sqlite3.connect(study / DATABASE)) as db:
        assert db.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 3  # the refused calls added no one
