"""The reader study's one database: settings, answer key, provenance, raters, their orders and answers.

A study folder holds ``study.sqlite`` and ``images/<id>.png``. The database is never served; the
server reads it to decide what a rater may see and to store answers. Every answer is committed
(WAL, synchronous=FULL) before the server replies, so killing the server loses no answer it
acknowledged. Tokens are stored as SHA-256 digests and compared in constant time.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from medsyn.errors import DataError

DATABASE = "study.sqlite"
IMAGES = "images"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id TEXT PRIMARY KEY,              -- opaque random id: the served file is images/<id>.png
    is_synthetic INTEGER NOT NULL,    -- the answer key
    class_index INTEGER NOT NULL,
    generator TEXT,                   -- synthetic images: the run or sample set they came from; NULL when real
    source TEXT NOT NULL,             -- the set they were drawn from, as given on the command line
    origin TEXT NOT NULL,             -- where in that set: a file path, or "index 17"
    sha256 TEXT NOT NULL              -- of the served PNG bytes
);
CREATE TABLE raters (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    token_sha256 TEXT UNIQUE NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE admin (token_sha256 TEXT NOT NULL);
CREATE TABLE rater_order (            -- each rater's own random order of every image
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,
    image_id TEXT NOT NULL REFERENCES images(id),
    shown_at REAL,                    -- last time the image was handed to the rater (time per image)
    PRIMARY KEY (rater_id, position),
    UNIQUE (rater_id, image_id)
);
CREATE TABLE answers (
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    image_id TEXT NOT NULL REFERENCES images(id),
    says_synthetic INTEGER NOT NULL,
    class_answer INTEGER,             -- NULL when the study does not ask the class
    confidence INTEGER,               -- 1-5, optional
    seconds REAL,                     -- from the image being handed out to the answer
    answered_at REAL NOT NULL,
    PRIMARY KEY (rater_id, image_id)  -- an answered image cannot be answered again
);
"""


@dataclass(frozen=True)
class StudyImage:
    """One image of the study as ``create`` records it (the answer key and where it came from)."""

    id: str
    is_synthetic: bool
    class_index: int
    generator: str | None
    source: str
    origin: str
    sha256: str


@dataclass(frozen=True)
class Rater:
    id: int
    name: str


@dataclass(frozen=True)
class NextImage:
    """What a rater is shown next: 0-based ``position`` in their order of ``total`` images."""

    image_id: str
    position: int
    total: int


@dataclass(frozen=True)
class Answer:
    """One stored answer joined with the key: what the report works from."""

    rater: str
    image_id: str
    is_synthetic: bool
    says_synthetic: bool
    class_index: int
    class_answer: int | None
    confidence: int | None
    seconds: float | None
    generator: str | None
    source: str
    origin: str
    answered_at: float


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


def new_image_id() -> str:
    return secrets.token_hex(8)


def create_database(path: Path, settings: dict[str, Any], images: list[StudyImage]) -> None:
    """Write a new database at ``path`` (a temporary file the caller renames into place)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        db.execute("INSERT INTO meta VALUES ('settings', ?)", (json.dumps(settings),))
        db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(i.id, int(i.is_synthetic), i.class_index, i.generator, i.source, i.origin, i.sha256)
                        for i in images])
        db.commit()


class StudyStore:
    """Access to one study folder's database; safe to use from many threads (a connection per call)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / DATABASE
        if not self.path.is_file():
            raise DataError(self.folder, f"not a reader study folder (no {DATABASE}); make one with `medsyn vtt create`")
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise DataError(self.path, f"study database of another medsyn version (schema {version and version[0]})")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")  # an acknowledged answer survives kill -9 and power loss
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    def image_file(self, image_id: str) -> Path:
        return self.folder / IMAGES / f"{image_id}.png"

    def settings(self) -> dict[str, Any]:
        with self._connect() as db:
            return json.loads(db.execute("SELECT value FROM meta WHERE key='settings'").fetchone()[0])

    def images(self) -> list[StudyImage]:
        with self._connect() as db:
            rows = db.execute("SELECT id, is_synthetic, class_index, generator, source, origin, sha256 "
                              "FROM images ORDER BY rowid").fetchall()
        return [StudyImage(r[0], bool(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def add_raters(self, names: list[str], seed: int) -> dict[str, str]:
        """New raters, each with a secret token (returned once, stored hashed) and their own random order.

        The order is drawn from (``seed``, rater id), so a study made again from the same inputs gives
        every rater the same order.
        """
        tokens = {name: new_token() for name in names}
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                taken = {r[0] for r in db.execute("SELECT name FROM raters")}
                clash = sorted(taken.intersection(names))
                if clash:
                    raise DataError(self.folder, f"rater {clash[0]!r} is already invited; choose another name")
                ids = [r[0] for r in db.execute("SELECT id FROM images ORDER BY rowid")]
                for name in names:
                    cur = db.execute("INSERT INTO raters (name, token_sha256, created) VALUES (?, ?, ?)",
                                     (name, token_digest(tokens[name]), time.time()))
                    order = np.random.default_rng([seed, cur.lastrowid]).permutation(len(ids))
                    db.executemany("INSERT INTO rater_order (rater_id, position, image_id) VALUES (?, ?, ?)",
                                   [(cur.lastrowid, pos, ids[i]) for pos, i in enumerate(order)])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return tokens

    def new_admin_token(self) -> str:
        """A new admin token; it replaces any earlier one."""
        token = new_token()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM admin")
            db.execute("INSERT INTO admin VALUES (?)", (token_digest(token),))
            db.execute("COMMIT")
        return token

    def rater_for(self, token: str | None) -> Rater | None:
        """The rater whose token this is, compared in constant time against every stored digest."""
        if not token:
            return None
        digest = token_digest(token)
        with self._connect() as db:
            rows = db.execute("SELECT id, name, token_sha256 FROM raters").fetchall()
        found = None
        for rater_id, name, stored in rows:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(digest, stored):
                found = Rater(rater_id, name)
        return found

    def is_admin(self, token: str | None) -> bool:
        if not token:
            return False
        digest = token_digest(token)
        with self._connect() as db:
            rows = db.execute("SELECT token_sha256 FROM admin").fetchall()
        return any([hmac.compare_digest(digest, r[0]) for r in rows])

    def next_for(self, rater: Rater) -> NextImage | None:
        """The first image in the rater's order they have not answered (None when done); marks it shown."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            total = db.execute("SELECT COUNT(*) FROM rater_order WHERE rater_id=?", (rater.id,)).fetchone()[0]
            row = db.execute(
                "SELECT o.position, o.image_id FROM rater_order o LEFT JOIN answers a "
                "ON a.rater_id=o.rater_id AND a.image_id=o.image_id "
                "WHERE o.rater_id=? AND a.image_id IS NULL ORDER BY o.position LIMIT 1", (rater.id,)).fetchone()
            if row is not None:
                db.execute("UPDATE rater_order SET shown_at=? WHERE rater_id=? AND position=?",
                           (time.time(), rater.id, row[0]))
            db.execute("COMMIT")
        return None if row is None else NextImage(row[1], row[0], total)

    def answered_count(self, rater: Rater) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM answers WHERE rater_id=?", (rater.id,)).fetchone()[0]

    def handed_out(self, rater: Rater, image_id: str) -> tuple[bool, bool] | None:
        """(handed out, answered) for an image of the rater's order; None when it is not in their order.

        Read-only, unlike ``next_for``, which marks the image shown (restarting its answer clock).
        """
        with self._connect() as db:
            row = db.execute(
                "SELECT o.shown_at IS NOT NULL, a.image_id IS NOT NULL FROM rater_order o LEFT JOIN answers a "
                "ON a.rater_id=o.rater_id AND a.image_id=o.image_id WHERE o.rater_id=? AND o.image_id=?",
                (rater.id, image_id)).fetchone()
        return None if row is None else (bool(row[0]), bool(row[1]))

    def record_answer(self, rater: Rater, image_id: str, says_synthetic: bool, class_answer: int | None,
                      confidence: int | None) -> bool:
        """Store an answer, committed before returning. False when the rater already answered that image."""
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            shown = db.execute("SELECT shown_at FROM rater_order WHERE rater_id=? AND image_id=?",
                               (rater.id, image_id)).fetchone()
            if shown is None:
                db.execute("ROLLBACK")
                raise KeyError(image_id)
            seconds = None if shown[0] is None else max(0.0, now - shown[0])
            try:
                db.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (rater.id, image_id, int(says_synthetic), class_answer, confidence, seconds, now))
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                return False
            db.execute("COMMIT")
        return True

    def progress(self) -> list[dict[str, Any]]:
        """Per rater: name, answered, total (no answers or key: for the admin's progress view)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT r.name, (SELECT COUNT(*) FROM answers a WHERE a.rater_id=r.id), "
                "(SELECT COUNT(*) FROM rater_order o WHERE o.rater_id=r.id) FROM raters r ORDER BY r.id").fetchall()
        return [{"rater": name, "answered": answered, "total": total} for name, answered, total in rows]

    def answers(self) -> list[Answer]:
        """Every answer joined with the answer key and provenance, by rater then time."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT r.name, a.image_id, i.is_synthetic, a.says_synthetic, i.class_index, a.class_answer, "
                "a.confidence, a.seconds, i.generator, i.source, i.origin, a.answered_at "
                "FROM answers a JOIN raters r ON r.id=a.rater_id JOIN images i ON i.id=a.image_id "
                "ORDER BY r.id, a.answered_at").fetchall()
        return [Answer(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11])
                for r in rows]
