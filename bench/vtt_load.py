"""Reader-study server under load: many raters answering at once against one rater alone, same server.

Makes a study from BreastMNIST-64 test images (the real PNG sizes a study serves), starts
``python -m medsyn vtt serve`` on 127.0.0.1 as a user would, and plays raters over HTTP (httpx, one
thread and one keep-alive connection per rater): each asks ``next``, loads the image, and answers.
First one rater alone (the baseline), then ``--raters`` at once, each through their whole order.

    python bench/vtt_load.py --raters 20 --per-class 20

prints answers/s and the p50/p95 latency of an answer (the POST, committed with fsync before the reply)
and of a whole image cycle (next + image + answer), with the ratios to the lone rater.

The helpers (`ServerProcess`, `rate_all`, `run_load`) are also what tests/test_vtt_server.py and
tests/test_vtt_browser.py use to run a real server.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
import numpy as np

READY_TIMEOUT_S = 60.0  # the server subprocess imports the CLI (about 1 s; far longer on a loaded machine)


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it; another process could take it before we do, rarely)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m medsyn vtt serve STUDY`` on 127.0.0.1 in a subprocess, its output in ``log``."""

    def __init__(self, study: Path, log: Path, port: int | None = None):
        self.study, self.log_path = Path(study), Path(log)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "medsyn", "vtt", "serve", str(self.study), "--host", "127.0.0.1",
                 "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base}/static/rater.css", timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server not ready after {READY_TIMEOUT_S:.0f} s:\n{self.output()}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a clean stop, as Ctrl-C); SIGKILL if it has not ended within ``timeout``."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(15)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.stop()


@dataclass(frozen=True)
class Given:
    """One answer a rater gave and the server acknowledged, with its latencies."""

    image: str
    number: int
    synthetic: bool
    class_index: int | None
    confidence: int | None
    answer_s: float  # the POST alone
    cycle_s: float  # next + image + answer


def default_choice(shown: dict) -> tuple[bool, int | None, int | None]:
    """A deterministic answer per image (synthetic, class, confidence), so a test can check what was stored."""
    digest = hashlib.sha256(shown["image"].encode()).digest()
    cls = digest[1] % len(shown["classes"]) if shown["ask_class"] else None
    confidence = None if digest[2] % 4 == 0 else 1 + digest[2] % 5  # some answers leave it out
    return bool(digest[0] % 2), cls, confidence


def rate_all(base: str, token: str, choose: Callable[[dict], tuple] = default_choice,
             given: list[Given] | None = None, limit: int | None = None) -> list[Given]:
    """Answer the rater's images in order until done (or ``limit`` answers), appending each acknowledged
    answer to ``given`` as it comes (a caller whose server dies keeps what was acknowledged)."""
    given = [] if given is None else given
    with httpx.Client(base_url=base, timeout=60.0) as client:
        total = None
        for _ in range(100_000):  # bounded: the order is finite, and ``total`` stops it first
            started = time.perf_counter()
            shown = client.get(f"/api/r/{token}/next").raise_for_status().json()
            if shown.get("done") or (limit is not None and len(given) >= limit):
                break
            total = total or shown["total"]
            client.get(f"/api/r/{token}/image/{shown['image']}").raise_for_status()
            synthetic, cls, confidence = choose(shown)
            posted = time.perf_counter()
            reply = client.post(f"/api/r/{token}/answer", json={"image": shown["image"], "synthetic": synthetic,
                                                                "class": cls, "confidence": confidence})
            done = time.perf_counter()
            reply.raise_for_status()
            given.append(Given(shown["image"], shown["number"], synthetic, cls, confidence, done - posted,
                               done - started))
    return given


@dataclass(frozen=True)
class Load:
    """What ``run_load`` measured: every rater's answers and the wall time of the whole run."""

    given: dict[str, list[Given]]
    seconds: float

    @property
    def answers(self) -> int:
        return sum(len(g) for g in self.given.values())

    def percentile(self, q: float, field: str = "answer_s") -> float:
        values = sorted(getattr(g, field) for answers in self.given.values() for g in answers)
        return float(np.percentile(values, q)) if values else float("nan")

    def describe(self, label: str, baseline: "Load | None" = None) -> str:
        rate = self.answers / self.seconds
        parts = [f"{label}: {self.answers} answers in {self.seconds:.2f} s = {rate:.0f} answers/s"]
        for field, name in (("answer_s", "answer"), ("cycle_s", "image cycle")):
            p50, p95 = self.percentile(50, field), self.percentile(95, field)
            text = f"{name} p50 {1e3 * p50:.1f} ms, p95 {1e3 * p95:.1f} ms"
            if baseline is not None:
                text += (f" ({p50 / baseline.percentile(50, field):.1f}x, "
                         f"{p95 / baseline.percentile(95, field):.1f}x the lone rater's)")
            parts.append(text)
        if baseline is not None:
            parts[0] += f" ({rate / (baseline.answers / baseline.seconds):.1f}x the lone rater's rate)"
        return "; ".join(parts)


def run_load(base: str, tokens: dict[str, str], choose: Callable[[dict], tuple] = default_choice) -> Load:
    """All raters at once, one thread each, released together; errors are raised after all threads end."""
    given: dict[str, list[Given]] = {name: [] for name in tokens}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(tokens))

    def rater(name: str) -> None:
        try:
            barrier.wait(timeout=60)
            rate_all(base, tokens[name], choose, given[name])
        except BaseException as err:  # noqa: BLE001 - reported by the caller, after every thread ended
            errors.append(err)

    threads = [threading.Thread(target=rater, args=(name,), daemon=True) for name in tokens]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    seconds = time.perf_counter() - started
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"{len(errors)} raters failed; first: {errors[0] if errors else 'timed out'!r}")
    return Load(given, seconds)


def study_from_arrays(folder: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                      synthetic: np.ndarray, ask_class: bool = True, seed: int = 0):
    """A study folder from uint8 images, as `medsyn vtt create` lays it out, for benchmarks and screenshots.

    ``synthetic`` marks which images the key calls synthetic; benchmarks pass real images for both halves
    (the server never looks at the key, so its speed and looks do not depend on it).
    """
    from PIL import Image

    from medsyn.vtt.store import DATABASE, IMAGES, StudyImage, StudyStore, create_database, new_image_id

    (folder / IMAGES).mkdir(parents=True)
    rows = []
    for index in np.random.default_rng(seed).permutation(len(images)):
        buffer = io.BytesIO()
        Image.fromarray(images[index]).save(buffer, format="PNG")
        data, image_id = buffer.getvalue(), new_image_id()
        (folder / IMAGES / f"{image_id}.png").write_bytes(data)
        fake = bool(synthetic[index])
        rows.append(StudyImage(image_id, fake, int(labels[index]), "bench" if fake else None,
                               "bench" if fake else "breastmnist_64.npz:test", f"index {index}",
                               hashlib.sha256(data).hexdigest()))
    settings = {"class_names": class_names, "ask_class": ask_class, "per_class": 0, "real_share": 0.5,
                "seed": seed, "size": int(images.shape[1]), "mode": "L", "real": "breastmnist_64.npz:test",
                "synthetic": ["bench"], "generators": ["bench"]}
    create_database(folder / DATABASE, settings, rows)
    return StudyStore(folder)


def breastmnist_study(folder: Path, per_class: int, ask_class: bool = True):
    """``per_class`` BreastMNIST-64 test images of each class, half of them keyed "synthetic"."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_data import medmnist_file

    with np.load(medmnist_file("breastmnist_64.npz")) as data:
        images, labels = data["test_images"], data["test_labels"].ravel()
    picked = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in (0, 1)])
    marks = np.arange(len(picked)) % 2 == 1
    return study_from_arrays(folder, images[picked], labels[picked], ["malignant", "normal or benign"], marks,
                             ask_class=ask_class)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raters", type=int, default=20, help="raters answering at once")
    parser.add_argument("--per-class", type=int, default=20, help="images per class (2 classes) in every order")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        study_dir = Path(tmp) / "study"
        store = breastmnist_study(study_dir, args.per_class)
        solo = store.add_raters(["alone"], seed=0)
        crowd = store.add_raters([f"rater{i:02d}" for i in range(args.raters)], seed=0)
        with ServerProcess(study_dir, Path(tmp) / "server.log") as server:
            print(f"study: {2 * args.per_class} BreastMNIST-64 PNGs per rater; server: one `medsyn vtt serve` "
                  f"process on 127.0.0.1, {os.cpu_count()} CPU cores shared with the clients")
            baseline = run_load(server.base, solo)
            print(baseline.describe("1 rater alone"))
            crowded = run_load(server.base, crowd)
            print(crowded.describe(f"{args.raters} raters at once", baseline))
        stored = len(store.answers())
        expected = (1 + args.raters) * 2 * args.per_class
        print(f"stored answers: {stored} of {expected} given" + ("" if stored == expected else "  MISMATCH"))


if __name__ == "__main__":
    main()
