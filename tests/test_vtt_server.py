"""`medsyn vtt serve`: the rater API in-process (TestClient), then a real server subprocess for many raters at
once, kill -9 and the command's own errors."""
from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its TestClient; httpx works the same
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

from medsyn.vtt.server import INVALID_JSON, INVALID_PAGE, build_app
from medsyn.vtt.store import StudyStore
from vtt_helpers import make_study

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from vtt_load import ServerProcess, default_choice, rate_all, run_load  # noqa: E402

NEXT_KEYS = {"image", "number", "total", "ask_class", "classes"}


@pytest.fixture
def study(tmp_path) -> SimpleNamespace:
    folder = tmp_path / "study"
    store = make_study(folder, generators=("runs/gen-a", "runs/gen-b"))
    tokens = store.add_raters(["ann", "bob"], seed=0)
    return SimpleNamespace(folder=folder, store=store, ann=tokens["ann"], bob=tokens["bob"],
                           admin=store.new_admin_token(), n=len(store.images()))


@pytest.fixture
def client(study) -> TestClient:
    return TestClient(build_app(study.folder))


def order_of(study, name: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(study.store.path)) as db:
        return [r[0] for r in db.execute("SELECT o.image_id FROM rater_order o JOIN raters r ON r.id=o.rater_id "
                                         "WHERE r.name=? ORDER BY o.position", (name,))]


def snapshot(study) -> list[str]:
    """Everything the server may write (orders with their shown times, answers), to compare before/after."""
    with contextlib.closing(sqlite3.connect(study.store.path)) as db:
        return [line for line in db.iterdump() if "rater_order" in line or "answers" in line]


def answer(client, token, image, synthetic=True, cls=0, confidence=None):
    return client.post(f"/api/r/{token}/answer",
                       json={"image": image, "synthetic": synthetic, "class": cls, "confidence": confidence})


def stored(study, name: str) -> dict[str, tuple]:
    return {a.image_id: (a.says_synthetic, a.class_answer, a.confidence) for a in study.store.answers()
            if a.rater == name}


def test_a_whole_session_answers_every_image_in_the_raters_order(study, client):
    order, given = order_of(study, "ann"), {}
    for number in range(1, study.n + 1):
        shown = client.get(f"/api/r/{study.ann}/next").json()
        assert shown == {"image": order[number - 1], "number": number, "total": study.n, "ask_class": True,
                         "classes": ["benign", "malignant"]}
        image = client.get(f"/api/r/{study.ann}/image/{shown['image']}")
        assert image.content == study.store.image_file(shown["image"]).read_bytes()
        assert image.headers["content-type"] == "image/png"
        given[shown["image"]] = default_choice(shown)
        reply = answer(client, study.ann, shown["image"], *given[shown["image"]])
        assert (reply.status_code, reply.json()) == (200, {"saved": True})
    assert client.get(f"/api/r/{study.ann}/next").json() == {"done": True, "total": study.n}
    assert stored(study, "ann") == given
    assert client.get(f"/api/admin/{study.admin}/progress").json() == {"raters": [
        {"rater": "ann", "answered": study.n, "total": study.n}, {"rater": "bob", "answered": 0, "total": study.n}]}


def test_a_new_client_resumes_at_the_first_unanswered_image_and_a_reload_shows_the_same_one(study, client):
    for _ in range(3):
        assert answer(client, study.ann, client.get(f"/api/r/{study.ann}/next").json()["image"]).status_code == 200
    again = TestClient(build_app(study.folder))  # a restarted server, a reconnecting browser
    first, reload = (again.get(f"/api/r/{study.ann}/next").json() for _ in range(2))
    assert first == reload and first["number"] == 4 and first["image"] == order_of(study, "ann")[3]


def test_a_second_answer_is_refused_and_the_first_kept(study, client):
    image = client.get(f"/api/r/{study.ann}/next").json()["image"]
    assert answer(client, study.ann, image, synthetic=True, cls=1, confidence=4).status_code == 200
    for synthetic, cls in ((False, 0), (True, 1)):  # a different answer, and the same one again
        reply = answer(client, study.ann, image, synthetic=synthetic, cls=cls)
        assert reply.status_code == 409 and "already answered" in reply.json()["error"]
    assert stored(study, "ann") == {image: (True, 1, 4)}


def test_only_the_current_image_is_answered_or_served_no_skipping_ahead(study, client):
    order = order_of(study, "ann")
    assert client.get(f"/api/r/{study.ann}/next").json()["image"] == order[0]
    before = snapshot(study)
    reply = answer(client, study.ann, order[1])
    assert reply.status_code == 409 and "not the current image" in reply.json()["error"]
    assert client.get(f"/api/r/{study.ann}/image/{order[1]}").status_code == 403  # no prefetching either
    assert snapshot(study) == before


@pytest.mark.parametrize("body, field", [
    ({"synthetic": True, "class": None}, "class is required"),
    ({"synthetic": True, "class": 2}, "class must be"),
    ({"synthetic": True, "class": -1}, "class must be"),
    ({"synthetic": True, "class": "0"}, "class"),
    ({"synthetic": True, "class": 1.0}, "class"),
    ({"synthetic": True, "class": 0, "confidence": 0}, "confidence"),
    ({"synthetic": True, "class": 0, "confidence": 6}, "confidence"),
    ({"synthetic": True, "class": 0, "confidence": 2.5}, "confidence"),
    ({"synthetic": "yes", "class": 0}, "synthetic"),
    ({"synthetic": 1, "class": 0}, "synthetic"),
    ({"class": 0}, "synthetic"),
    ({"synthetic": True, "class": 0, "is_synthetic": True}, "is_synthetic"),
])
def test_bad_answers_are_refused_with_422_and_store_nothing(study, client, body, field):
    image = client.get(f"/api/r/{study.ann}/next").json()["image"]
    before = snapshot(study)
    reply = client.post(f"/api/r/{study.ann}/answer", json={"image": image, **body})
    assert reply.status_code == 422 and field in reply.json()["error"]
    assert snapshot(study) == before


@pytest.mark.parametrize("content", [b"{not json", b"[]", b"", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_refused(study, client, content):
    client.get(f"/api/r/{study.ann}/next")
    assert client.post(f"/api/r/{study.ann}/answer", content=content).status_code == 422


def test_a_huge_body_is_refused_before_it_is_read_whole(study, client):
    client.get(f"/api/r/{study.ann}/next")
    assert client.post(f"/api/r/{study.ann}/answer", content=b" " * 100_000).status_code == 413
    assert client.post(f"/api/r/{study.ann}x/answer", content=b" " * 100_000).status_code == 403


def test_a_study_that_does_not_ask_the_class_takes_none(tmp_path):
    store = make_study(tmp_path / "s", ask_class=False)
    token = store.add_raters(["ann"], seed=0)["ann"]
    client = TestClient(build_app(tmp_path / "s"))
    shown = client.get(f"/api/r/{token}/next").json()
    assert shown["ask_class"] is False
    assert answer(client, token, shown["image"], cls=0).status_code == 422
    assert answer(client, token, shown["image"], cls=None, confidence=2).status_code == 200


def test_nothing_a_rater_loads_carries_the_key_provenance_or_another_token(study, client):
    responses = [client.get(f"/r/{study.ann}")]
    responses += [client.get(f"/static/{name}") for name in ("rater.js", "rater.css")]
    for _ in range(study.n + 1):  # a whole session, every response kept
        shown = client.get(f"/api/r/{study.ann}/next")
        responses.append(shown)
        if shown.json().get("done"):
            break
        assert set(shown.json()) == NEXT_KEYS  # no truth field, whatever its name
        image = shown.json()["image"]
        responses.append(client.get(f"/api/r/{study.ann}/image/{image}"))
        assert responses[-1].content == study.store.image_file(image).read_bytes()
        responses += [client.post(f"/api/r/{study.ann}/answer", json={"image": image, "synthetic": False, "class": 5}),
                      answer(client, study.ann, image), answer(client, study.ann, image)]  # 422, 200, 409
    responses.append(client.get(f"/api/r/{study.bob}x/next"))  # a refusal too
    assert [r.status_code for r in responses].count(409) == study.n and responses[-2].json()["done"]

    secrets = {"is_synthetic", "class_index", "says_synthetic", "runs/gen", study.bob, study.admin}
    for image in study.store.images():
        secrets |= {image.source, image.origin, image.sha256} | ({image.generator} if image.generator else set())
    settings = study.store.settings()
    secrets |= {settings["real"], *settings["synthetic"], *settings["generators"]}
    for response in responses:
        assert not response.headers.get("last-modified") and not response.headers.get("etag")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        text = response.content.decode("latin-1") + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        leaked = sorted(s for s in secrets if s in text)
        assert not leaked, (response.request.url.path, leaked)
    page = responses[0].content
    assert page == client.get(f"/r/{study.bob}").content and study.ann.encode() not in page  # one page for all
    assert "self" in responses[0].headers["content-security-policy"]


def endpoints(token: str, image: str) -> list[tuple[str, str]]:
    return [("GET", f"/r/{token}"), ("GET", f"/api/r/{token}/next"), ("GET", f"/api/r/{token}/image/{image}"),
            ("POST", f"/api/r/{token}/answer"), ("GET", f"/admin/{token}"), ("GET", f"/api/admin/{token}/progress")]


def test_wrong_or_missing_tokens_get_the_fixed_403_everywhere_and_change_nothing(study, client):
    image = order_of(study, "ann")[0]
    before = snapshot(study)
    for token in ["", "x", study.ann[:-1], study.ann + "x", study.ann.upper(), "..%2F..", "%00"]:
        for method, path in endpoints(token, image):
            reply = client.request(method, path, json={"image": image, "synthetic": True, "class": 0})
            assert reply.status_code == 403, (method, path)
            assert reply.content == (INVALID_JSON if path.startswith("/api/") else INVALID_PAGE)
    for path in ("/", "/r", "/admin/", "/api/r//next", "/docs", "/openapi.json", "/static/server.py"):
        assert client.get(path).status_code == 403, path
    assert snapshot(study) == before


def test_admin_and_rater_tokens_reach_only_their_own_endpoints(study, client):
    rater_only, admin_only = endpoints(study.admin, "x")[:4], endpoints(study.ann, "x")[4:]
    for method, path in rater_only + admin_only:
        assert client.request(method, path, json={}).status_code == 403, (method, path)
    assert client.get(f"/admin/{study.admin}").status_code == 200
    assert b"/static/admin.js" in client.get(f"/admin/{study.admin}").content


def test_a_token_reaches_only_its_own_hand_outs_and_answers(study, client):
    """Every rater rates every image, in their own order: what bob was handed is not ann's until her turn."""
    bobs = client.get(f"/api/r/{study.bob}/next").json()["image"]
    anns = client.get(f"/api/r/{study.ann}/next").json()["image"]
    before = snapshot(study)
    if bobs != anns:  # the same image may come first in both orders; then it is also ann's to see
        assert client.get(f"/api/r/{study.ann}/image/{bobs}").status_code == 403
        assert answer(client, study.ann, bobs).status_code == 409  # in her order, not handed out yet
    for image in ("not-an-id", "../study.sqlite", "%2e%2e"):
        assert client.get(f"/api/r/{study.ann}/image/{image}").status_code == 403
        assert answer(client, study.ann, image).status_code == 403
    assert snapshot(study) == before
    assert answer(client, study.ann, anns).status_code == 200
    assert stored(study, "bob") == {} and set(stored(study, "ann")) == {anns}


def test_twenty_raters_at_once_store_every_answer_exactly_once(tmp_path):
    store = make_study(tmp_path / "study")
    tokens = store.add_raters([f"r{i:02d}" for i in range(20)], seed=0)
    n = len(store.images())
    with ServerProcess(tmp_path / "study", tmp_path / "server.log") as server:
        load = run_load(server.base, tokens)
        code = server.stop()
    assert code == 0 and "stopped" in server.output(), server.output()
    answers = store.answers()
    assert len(answers) == 20 * n == load.answers
    assert len({(a.rater, a.image_id) for a in answers}) == 20 * n  # none twice (the key forbids it anyway)
    for name, given in load.given.items():
        assert {g.image: (g.synthetic, g.class_index, g.confidence) for g in given} == {
            a.image_id: (a.says_synthetic, a.class_answer, a.confidence) for a in answers if a.rater == name}
        assert [g.number for g in given] == list(range(1, n + 1))
    print(f"\n{load.describe('20 raters at once')}")


def test_kill_9_loses_no_acknowledged_answer_and_the_rater_resumes(tmp_path):
    store = make_study(tmp_path / "study", real_per_class=10, synthetic_per_class=10)
    token = store.add_raters(["ann"], seed=0)["ann"]
    server = ServerProcess(tmp_path / "study", tmp_path / "server.log").start()
    acknowledged, failed = [], []

    def rater():
        try:
            rate_all(server.base, token, given=acknowledged)
        except Exception as err:  # noqa: BLE001 - the connection dies with the server: expected
            failed.append(err)

    thread = threading.Thread(target=rater, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 8 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    server.kill()
    thread.join(60)
    assert failed and 8 <= len(acknowledged) < 40, (len(acknowledged), failed)

    saved = stored(SimpleNamespace(store=StudyStore(tmp_path / "study")), "ann")
    assert {g.image: (g.synthetic, g.class_index, g.confidence) for g in acknowledged}.items() <= saved.items()
    assert len(saved) - len(acknowledged) in (0, 1)  # the answer in flight may have been committed, unacknowledged
    with ServerProcess(tmp_path / "study", tmp_path / "server2.log", port=server.port) as again:
        import httpx

        shown = httpx.get(f"{again.base}/api/r/{token}/next").json()
        assert shown["number"] == len(saved) + 1 and shown["image"] not in saved
        rest = rate_all(again.base, token)
    assert len(saved) + len(rest) == 40 == len(store.answers())


def medsyn(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medsyn", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_serve_refuses_a_folder_that_is_not_a_study_in_one_line(tmp_path):
    result = medsyn("vtt", "serve", tmp_path, "--port", "0")
    assert result.returncode == 2 and "not a reader study folder" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_serve_names_a_port_in_use_in_one_line(study):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = medsyn("vtt", "serve", study.folder, "--port", port)
    assert result.returncode == 2 and f"port {port}" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
