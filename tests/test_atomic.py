"""One way to write: a failed write keeps the previous complete file or folder, leaves no temporary
behind, and reaches the user as one line naming the path (tests run as root, so failures are patched in)."""
from __future__ import annotations

import errno
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsyn import atomic
from medsyn.errors import RunError, WriteError

real_replace = os.replace


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def half_then_disk_full(tmp: Path) -> None:
    tmp.write_bytes(b"half a fi")
    disk_full()


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---- files ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["writer", "rename", "fsync"])
def test_a_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch, failure):
    path = tmp_path / "results.json"
    atomic.write_json(path, {"auc": 0.9})
    before = path.read_bytes()
    writer = half_then_disk_full if failure == "writer" else (lambda tmp: tmp.write_bytes(b"new and complete"))
    if failure == "rename":
        monkeypatch.setattr(atomic.os, "replace", disk_full)
    if failure == "fsync":
        monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(WriteError) as info:
        atomic.write_with(path, writer, sync=True)
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["results.json"]
    assert str(info.value) == f"{path}: cannot write (the disk is full; free space or choose another --out)"


def test_an_interrupted_write_keeps_the_previous_file_and_is_not_a_write_error(tmp_path):
    path = atomic.write_text(tmp_path / "table.csv", "a,b\r\n1,2\r\n")

    def interrupted(tmp: Path) -> None:
        tmp.write_text("a,b\r\n")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_with(path, interrupted)
    assert path.read_bytes() == b"a,b\r\n1,2\r\n" and listing(tmp_path) == ["table.csv"]


def test_text_is_utf8_and_untranslated_and_folders_are_made(tmp_path):
    path = atomic.write_text(tmp_path / "new" / "report.html", "ΔAUC – ok\r\n")
    assert path.read_bytes() == "ΔAUC – ok\r\n".encode("utf-8")
    assert json.loads(atomic.write_json(tmp_path / "x.json", {"p": float("nan")}).read_text())["p"] != 0


def test_permission_problems_say_what_to_do(tmp_path):
    with pytest.raises(WriteError, match="permission denied; choose a folder you can write to"):
        atomic.write_with(tmp_path / "a.png", lambda tmp: (_ for _ in ()).throw(OSError(errno.EACCES, "denied")))


# ---- folders --------------------------------------------------------------------------------------

def test_a_failure_inside_atomic_dir_leaves_neither_the_folder_nor_a_temporary(tmp_path):
    out = tmp_path / "synthetic"
    with pytest.raises(WriteError) as info:
        with atomic.atomic_dir(out) as tmp:
            (tmp / "a.png").write_bytes(b"png")
            disk_full()
    assert listing(tmp_path) == []
    assert str(info.value).startswith(f"{out}: cannot write (the disk is full")
    with pytest.raises(ValueError):  # not a write problem: passes through unchanged, still cleaned up
        with atomic.atomic_dir(out) as tmp:
            (tmp / "a.png").write_bytes(b"png")
            raise ValueError("bad label")
    assert listing(tmp_path) == []


def test_a_file_failing_inside_atomic_dir_is_named_under_the_folder_not_the_temporary(tmp_path, monkeypatch):
    from medsyn.imageio import save_grid

    monkeypatch.setattr(Image.Image, "save", lambda *a, **k: disk_full())
    out = tmp_path / "set"
    with pytest.raises(WriteError) as info:
        with atomic.atomic_dir(out) as tmp:
            save_grid(tmp / "grid_cyst.png", np.zeros((2, 1, 8, 8), np.float32))
    assert info.value.path == str(out / "grid_cyst.png") and listing(tmp_path) == []


def test_atomic_dir_folder_has_the_mode_of_any_new_folder(tmp_path):
    with atomic.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    (tmp_path / "plain").mkdir()
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_atomic_dir_replaces_an_old_folder_only_whole(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(WriteError, match="already exists"):
        with atomic.atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
    assert listing(tmp_path) == ["out", "out/old.txt"]

    def second_rename_fails(src, dst):  # moving the old folder aside works, moving the new one in does not
        if Path(src).name.startswith(".out.tmp-"):
            disk_full()
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", second_rename_fails)
    with pytest.raises(WriteError, match="disk is full"):
        with atomic.atomic_dir(out, replace_existing=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert listing(tmp_path) == ["out", "out/old.txt"]
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    with atomic.atomic_dir(out, replace_existing=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert listing(tmp_path) == ["out", "out/new.txt"]


def test_image_folder_writer_threads_failing_is_a_write_error_naming_the_folder(tmp_path, monkeypatch):
    from medsyn.imageio import atomic_dir, write_image_folder

    calls = []

    def fails_after_some(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) > 20:
            disk_full()
        Path(fp).write_bytes(b"png")

    monkeypatch.setattr(Image.Image, "save", fails_after_some)
    out = tmp_path / "set"
    images = np.zeros((300, 1, 4, 4), np.float32)
    with pytest.raises(WriteError) as info:
        with atomic_dir(out) as tmp:
            write_image_folder(tmp, images, np.arange(300) % 2, ["a", "b"])
    assert info.value.path == str(out) and "disk is full" in str(info.value)
    assert listing(tmp_path) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RunError, match="already exists"):  # refused before any work, as before
        with atomic_dir(tmp_path / "full"):
            pytest.fail("the block must not run")


# ---- the feature cache ----------------------------------------------------------------------------

def test_a_failed_cache_write_warns_and_leaves_no_temporary(tmp_path, monkeypatch):
    from medsyn.metrics.cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    monkeypatch.setattr(atomic.os, "replace", disk_full)
    with pytest.warns(UserWarning, match="feature cache: .*abcd.npy: cannot write .*disk is full.*continuing"):
        assert cache.save("abcd", np.ones((3, 2), np.float32)) is None
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert cache.save("abcd", np.ones((3, 2), np.float32)) == cache.path("abcd")
    np.testing.assert_array_equal(cache.load("abcd", 3), np.ones((3, 2)))


# ---- through the command line ---------------------------------------------------------------------

def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """The console script's main() in this process (a subprocess costs seconds of imports)."""
    from medsyn.cli import main

    monkeypatch.setattr(sys, "argv", ["medsyn", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def assert_write_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2 and one error line, the last (progress lines of work done before it may precede it)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2 and errors == lines[-1:], (code, err)
    assert "Traceback" not in err and "cannot write (the disk is full" in errors[0]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def test_data_phantoms_with_a_full_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image.Image, "save", lambda *a, **k: disk_full())
    out = tmp_path / "phantoms"
    code, err = run_cli(monkeypatch, capsys, "data", "phantoms", "--out", out, "--size", "28", "--per-class", "40")
    assert_write_error(code, err, str(out))
    assert listing(tmp_path) == []


def test_augment_with_a_full_disk_when_renaming(tmp_path, monkeypatch, capsys):
    from medsyn.data.phantoms import write_phantoms

    source = write_phantoms(tmp_path / "real", size=28, per_class=4)
    monkeypatch.setattr(atomic.os, "replace", disk_full)
    out = tmp_path / "augmented"
    code, err = run_cli(monkeypatch, capsys, "augment", source, "--preset", "liver-lesion", "--copies", "1", "--out", out)
    assert_write_error(code, err, str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, medmnist_dir) -> Path:
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    run = tmp_path_factory.mktemp("atomic") / "run"
    prepared = prepare_run(run, [{"model": "dcgan", "width": 0.0625, "batch": 8, "steps": 1, "device": "cpu"}],
                           DataOptions(str(medmnist_dir / "breastmnist.npz")), resume=False)
    execute_run(prepared, lambda *a: None)
    return run


@pytest.mark.parametrize("fmt, target", [("png", (Image.Image, "save")), ("npz", (np, "savez_compressed"))])
def test_sample_with_a_full_disk(tiny_run, tmp_path, monkeypatch, capsys, fmt, target):
    monkeypatch.setattr(*target, lambda *a, **k: disk_full())
    out = tmp_path / "synthetic"
    code, err = run_cli(monkeypatch, capsys, "sample", tiny_run, "--n-per-class", "3", "--out", out, "--format", fmt,
                        "--device", "cpu")
    assert_write_error(code, err, str(out))
    assert listing(tmp_path) == []


def test_study_report_with_a_full_disk_keeps_the_previous_report(tmp_path, monkeypatch, capsys):
    import yaml

    import medsyn.study.results

    monkeypatch.setattr(medsyn.study.results, "BOOTSTRAP", 20)  # the CIs' 1000 resamples are most of the time here
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"source": "phantoms", "size": 28, "per_class": 10, "seed": 0},
        "split": {"kind": "patient", "seed": 0}, "arms": ["real"], "tsne": False,
        "classifiers": [{"name": "lesion-cnn", "epochs": 1}], "seeds": [0], "fid": {"enabled": False},
        "device": "cpu"}))
    out = tmp_path / "study"
    code, err = run_cli(monkeypatch, capsys, "study", config, "--out", out)
    assert code == 0, err
    before = {name: (out / name).read_bytes() for name in ("report.html", "results.json", "table_arms.csv")}

    def report_fails(src, dst):
        if Path(dst).name == "report.html":
            disk_full()
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", report_fails)
    code, err = run_cli(monkeypatch, capsys, "study", config, "--out", out)
    assert_write_error(code, err, str(out / "report.html"))
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
