"""Parallel studies on a local Ray cluster: the same results.json as a serial run, resumes after Ctrl-C
and after a worker is killed, reruns only what is missing; bad --jobs and --address are one-line errors."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from medsyn.study import StudyInterrupted, StudyRunner
from medsyn.study.config import study_from_dict
from medsyn.study.parallel import plan_tasks, run_parallel

from test_study import TINY, _units

ray = pytest.importorskip("ray")

# A sweep of classic copies (its units come before the classic arms that use its choice), a generator
# whose samples feed the real arm's diagnostics and the classic+synthetic arm: 12 units on 2 folds.
RAW = {**TINY, "arms": ["real", "classic", "classic+synthetic"], "volumes": [1], "tsne": False,
       "classic": {"preset": "liver-lesion", "copies": [1, 2]}}
TIMINGS = ("seconds",)  # results.json's only wall-clock field: the sum of the units' seconds


@pytest.fixture(scope="module", autouse=True)
def fewer_bootstrap_resamples():
    """As tests/test_study.py's, for the module: the serial reference is a module fixture."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("medsyn.study.results.BOOTSTRAP", 50)
        yield


@contextmanager
def threads(n: int):
    """The threads each task of the test cluster gets (2 CPUs // --jobs 2): torch's float32 kernels
    round differently with another number of threads, so the serial reference runs with the same."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster of 2 CPUs for the module (starting one takes seconds)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=128 * 2**20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    base = tmp_path_factory.mktemp("serial")
    cfg = study_from_dict(RAW, base)
    with threads(1):
        results = StudyRunner(cfg, base / "out").run()
    return cfg, _plain(results)


def _plain(results: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(results)).items() if k not in TIMINGS}


def _parallel(cfg, out: Path, **kwargs) -> tuple[list[str], dict]:
    runner = StudyRunner(cfg, out)
    runner.prepare()
    ran = run_parallel(runner, jobs=2, **kwargs)
    return ran, _plain(runner.run())


def _kill_a_generator_worker(killed: list[int]) -> None:
    """kill -9 the first Ray worker seen running a generator task (Ray names the process after its task)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::medsyn generators"):
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(int(proc.name))
                    return
            except OSError:
                continue
        time.sleep(0.01)


def test_parallel_study_survives_a_killed_worker_writes_the_serial_results_and_reruns_only_what_is_missing(
        cluster, serial, tmp_path):
    cfg, expected = serial
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_generator_worker, args=(killed,), daemon=True)
    killer.start()
    ran, results = _parallel(cfg, tmp_path / "p")  # Ray runs the killed task again; it resumes
    killer.join()
    assert killed, "no generator task was seen running"
    assert results == expected
    assert len(ran) == 12 and len(_units(tmp_path / "p")) == 8  # train and sample units are folders, not JSON

    again, results = _parallel(cfg, tmp_path / "p")
    assert again == [] and results == expected, "a rerun skips every unit"

    (tmp_path / "p" / "units" / "cls" / "lesion-cnn" / "seed0" / "fold1" / "real.json").unlink()
    again, results = _parallel(cfg, tmp_path / "p")
    assert again == ["lesion-cnn seed 0 fold 1: real"] and results == expected


def test_ctrl_c_stops_the_tasks_and_keeps_finished_units(cluster, serial, tmp_path):
    cfg, expected = serial

    def ctrl_c_after_the_first_task(task, result, done):
        raise KeyboardInterrupt

    with pytest.raises(StudyInterrupted):
        _parallel(cfg, tmp_path / "cut", on_done=ctrl_c_after_the_first_task)
    # whichever task ended first (a fold's generator, a sweep or a classifier unit) is on disk
    finished = [*_units(tmp_path / "cut"), *sorted((tmp_path / "cut").glob("generators/*/*/samples/samples.npz"))]
    kept = {unit: unit.read_bytes() for unit in finished}
    assert 1 <= len(kept) < 8 + 2, "finished units are kept, the others were stopped"
    ran, results = _parallel(cfg, tmp_path / "cut")
    assert results == expected and len(_units(tmp_path / "cut")) == 8
    assert all(unit.read_bytes() == text for unit, text in kept.items()), "a finished unit ran again"


def test_tasks_cover_every_unit_and_share_a_trained_generator(tmp_path):
    """A refiner entry refines the samples of the entry that trains its generator: one task for both,
    and every classifier task waits for the generator tasks and sweep units it reads."""
    pggan = {"model": "pggan", "per_class": True, "steps": 2, "set": {"width": 0.05, "batch": 4}}
    raw = {**RAW, "generators": [{"name": "pg", **pggan}, {"name": "two", **pggan, "refiner": "simgan"},
                                 {"name": "dc", "model": "dcgan", "steps": 2}]}
    runner = StudyRunner(study_from_dict(raw, tmp_path), tmp_path / "out")
    runner.prepare()
    tasks = plan_tasks(runner)
    assert sum(t.units for t in tasks) == runner.units_total()
    assert [t.args[0] for t in tasks if t.kind == "generators" and t.fold == 0] == [("pg", "two"), ("dc",)]
    for i, task in enumerate(tasks):
        assert all(j < i for j in task.needs)
        kinds = sorted(tasks[j].kind for j in task.needs)
        if task.kind == "classifier":  # the real arm's diagnostics read every synthetic set of the fold
            assert kinds == ["generators"] * (2 if task.args[2].arm == "real" else 1) + ["sweep", "sweep"]
        else:
            assert kinds == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("flags, message", [
    (["--jobs", "0"], "--jobs takes a whole number of 1 or more, got 0"),
    (["--jobs", "-2"], "got -2"),
    (["--jobs", "2", "--address", "127.0.0.1:PORT"], "no Ray cluster reachable there"),
])
def test_bad_jobs_or_address_is_one_line(tmp_path, flags, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(RAW))
    flags = [f.replace("PORT", str(_free_port())) for f in flags]
    proc = subprocess.run([sys.executable, "-m", "medsyn", "study", str(path), "--out", str(tmp_path / "o"), *flags],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
