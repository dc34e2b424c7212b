"""The embedded catalog: one SQLite file (WAL) holding images, metadata, keywords, signatures.

Every write is one transaction, so a process killed at any moment leaves a catalog that opens
with every committed image whole: an image row never exists without its signatures.
Writes go through one connection under a lock; reads go through a read-only connection per
thread (WAL lets them run beside a write and beside each other), so a search never waits for an
upload's transaction nor for another thread's slow read. Every read statement has a time budget
(a progress handler aborts it past `statement_budget_s`), so no one query holds a worker forever.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import CollectionError, LookalikeError
from lookalike.store.schema import expected_meta_values_sql, migrate

CATALOG_FILE = "catalog.sqlite"
SIGNATURE_CHUNK = 20_000  # signatures read per statement when reading them all
PROGRESS_ROWS = 5_000  # rows between two progress reports of a bulk import
STATEMENT_BUDGET_S = 10.0  # longest a read statement may run before it is aborted
BUSY_TIMEOUT_S = 30.0  # longest the write connection waits for another process's write lock
PROGRESS_STEPS = 2_000  # SQLite VM steps between two looks at the clock
IN_CHUNK = 500  # values in one `IN (...)` list, well under SQLite's host-parameter limit


class StatementTimeout(LookalikeError):
    """A read took longer than the catalog's statement budget and was aborted."""


@dataclass(frozen=True)
class ImageRecord:
    """One image as the catalog knows it."""

    id: int
    path: str
    size: int
    mtime: float
    sha256: str
    width: int
    height: int
    format: str
    metadata: dict[str, Any]
    added_at: float
    updated_at: float
    keywords: list[tuple[str, str, float]] = field(default_factory=list)  # (keyword, source, score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "size": self.size,
            "mtime": self.mtime,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "metadata": self.metadata,
            "keywords": [
                {"keyword": k, "source": s, "score": round(c, 4)} for k, s, c in self.keywords
            ],
            "added_at": self.added_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class FailureRecord:
    """A file that could not be indexed: its size and mtime then, how it was read, why."""

    size: int
    mtime: float
    setup: str
    reason: str


@dataclass(frozen=True)
class NewImage:
    """What ingest hands the catalog for one image: facts, signature vectors, keywords."""

    path: str
    size: int
    mtime: float
    sha256: str
    width: int
    height: int
    format: str
    signatures: Mapping[str, tuple[str, np.ndarray]]  # attribute -> (version, vector)
    metadata: Mapping[str, Any] | None = None  # None keeps stored metadata on update
    auto_keywords: Iterable[tuple[str, float]] | None = None  # None keeps stored model tags


_IMAGE_COLUMNS = (
    "id, path, size, mtime, sha256, width, height, format, metadata, added_at, updated_at"
)


# json.loads without its per-call checks (type, byte-order mark): for text we wrote by json.dumps
_decode_json = json.JSONDecoder().decode


def in_chunks(values: list[Any]) -> Iterator[tuple[list[Any], str]]:
    """`values` in slices for `... IN ({marks})` statements, each with its "?,?,..." marks."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        yield chunk, ",".join("?" * len(chunk))


def _user_keywords(metadata: Mapping[str, Any]) -> list[str]:
    """Keywords a user supplied: metadata['keywords'] as a list or a comma-separated string."""
    value = metadata.get("keywords", [])
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple):
        return []
    return [str(v).strip() for v in value if str(v).strip()]


def _metadata_text(metadata: Mapping[str, Any]) -> list[str]:
    """Every string in the metadata (nested included), for the full-text index."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(metadata)
    return out


def search_text_of(keywords: Iterable[str], metadata: Mapping[str, Any]) -> str:
    """The full-text row of one image: its keywords (user and model) and metadata strings."""
    return " ; ".join(
        [*keywords, *_metadata_text({k: v for k, v in metadata.items() if k != "keywords"})]
    )


class _Reader:
    """A read-only connection and the deadline its progress handler enforces."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.deadline: float | None = None
        self.expired = False
        self.depth = 0

    def start(self, budget_s: float | None) -> None:
        self.depth += 1
        self.expired = False
        self.deadline = None if budget_s is None else time.monotonic() + budget_s

    def stop(self) -> None:
        self.depth -= 1
        self.deadline = None

    def over_budget(self) -> int:
        """SQLite's progress handler: non-zero aborts the running statement."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.expired = True
            return 1
        return 0


class _PinnedToken:
    """`Catalog.one_change_token`: a class, not a generator (a search enters one each time)."""

    __slots__ = ("catalog", "outer")

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.outer: tuple[int, int] | None = None

    def __enter__(self) -> None:
        local = self.catalog._local
        self.outer = getattr(local, "token", None)
        local.token = None
        local.token = self.catalog.change_token()

    def __exit__(self, *exc: object) -> None:
        self.catalog._local.token = self.outer


class Catalog:
    """Typed access to catalog.sqlite."""

    def __init__(
        self,
        directory: Path,
        *,
        create: bool = False,
        statement_budget_s: float | None = STATEMENT_BUDGET_S,
    ):
        self.directory = directory
        self.file = directory / CATALOG_FILE
        if not self.file.exists() and not create:
            raise CollectionError(f"no collection at {directory} (missing {CATALOG_FILE})")
        self.statement_budget_s = statement_budget_s
        try:
            self._conn = sqlite3.connect(
                self.file, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            migrate(self._conn)
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc):  # another process's long write, e.g. a first-open migration
                raise CollectionError(
                    f"{self.file}: busy for {BUSY_TIMEOUT_S:g} s: another process is writing it "
                    "(a large collection's first open by a new version migrates it); try again"
                ) from None
            raise CollectionError(f"{self.file}: not a usable catalog ({exc})") from None
        self._lock = threading.RLock()  # the write connection and its transactions
        self._writes = 0
        self._local = threading.local()  # this thread's read connection, and its open writes
        self._readers: list[_Reader] = []
        self._readers_lock = threading.Lock()
        self._watch = self._open_reader()  # change_token's own connection: never the write lock
        self._watch_lock = threading.Lock()

    def close(self) -> None:
        with self._lock, self._readers_lock:
            for reader in self._readers:
                reader.conn.close()
            self._readers.clear()
            self._conn.close()

    # -- connections -------------------------------------------------------------------------

    def _open_reader(self) -> _Reader:
        conn = sqlite3.connect(
            self.file, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        conn.execute("PRAGMA query_only = ON")
        reader = _Reader(conn)
        conn.set_progress_handler(reader.over_budget, PROGRESS_STEPS)
        with self._readers_lock:
            self._readers.append(reader)
        return reader

    def _reader(self) -> _Reader:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = self._open_reader()
        return reader

    @contextmanager
    def unbudgeted(self) -> Iterator[None]:
        """This thread's reads run without the statement budget meanwhile: for a job a user
        asked for that must read everything (`lookalike check`'s integrity check alone takes
        minutes at 1M images), not for searches, which the budget protects a server from."""
        outer = getattr(self._local, "unbudgeted", False)
        self._local.unbudgeted = True
        try:
            yield
        finally:
            self._local.unbudgeted = outer

    @contextmanager
    def reading(self, *, snapshot: bool = True) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several read statements, on this thread's read
        connection, within the statement budget. Inside `transaction()` on the same thread
        it reads through the write connection (so a transaction sees its own writes).
        `snapshot=False` is for a single statement, which SQLite already reads from one
        snapshot: no BEGIN/ROLLBACK around it (two statements less per read)."""
        if getattr(self._local, "writing", 0):
            yield self._conn
            return
        reader = self._reader()
        if reader.depth:  # nested: already inside this thread's snapshot
            yield reader.conn
            return
        reader.start(None if getattr(self._local, "unbudgeted", False) else self.statement_budget_s)
        if snapshot:
            reader.conn.execute("BEGIN")
        try:
            yield reader.conn
        except sqlite3.OperationalError as exc:
            if reader.expired:
                raise StatementTimeout(
                    f"a catalog read took longer than the budget of {self.statement_budget_s:g} s"
                    " and was stopped"
                ) from None
            raise exc
        finally:
            reader.stop()
            if reader.conn.in_transaction:
                reader.conn.execute("ROLLBACK")

    # -- transactions and change tracking ---------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._local.writing = getattr(self._local, "writing", 0) + 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._local.writing -= 1
            self._conn.execute("COMMIT")
            self._writes += 1

    def change_token(self) -> tuple[int, int]:
        """Changes whenever this or another process commits: for cache invalidation. Read on a
        connection of its own, so it never waits for a write or a slow read. Inside
        `one_change_token()` this thread gets the token read on entry (until it writes)."""
        pinned = getattr(self._local, "token", None)
        if pinned is not None and pinned[0] == self._writes:
            return pinned
        with self._watch_lock:
            return self._writes, self._watch.conn.execute("PRAGMA data_version").fetchone()[0]

    def one_change_token(self) -> _PinnedToken:
        """Read the change token once for a whole search: its caches (indexes, settings,
        calibration, whitening) each ask, and one answer is as fresh as several."""
        return _PinnedToken(self)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Rows of one read statement (this thread's read connection, within the budget)."""
        with self.reading(snapshot=False) as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    # -- collection settings ------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def set_meta(self, key: str, value: Any) -> None:
        self.set_meta_many({key: value})

    def set_meta_many(self, values: Mapping[str, Any]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(key, json.dumps(value)) for key, value in values.items()],
            )

    def delete_meta(self, key: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- images ---------------------------------------------------------------------------------

    def _records(self, where: str, params: list[Any]) -> list[ImageRecord]:
        """Images matching `where`, with their keywords fetched in one more query (not one per
        image), both in one read snapshot so no write lands between them."""
        with self.reading():
            rows = self.query(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE {where}", params)
            keywords: dict[int, list[tuple[str, str, float]]] = {r[0]: [] for r in rows}
            if rows:
                marks = ",".join("?" * len(rows))
                for image_id, keyword, source, score in self.query(
                    "SELECT image_id, keyword, source, score FROM keywords"
                    f" WHERE image_id IN ({marks}) ORDER BY source DESC, score DESC, keyword",
                    list(keywords),
                ):
                    keywords[image_id].append((keyword, source, float(score)))
        return [
            ImageRecord(
                id=row[0],
                path=row[1],
                size=row[2],
                mtime=row[3],
                sha256=row[4],
                width=row[5],
                height=row[6],
                format=row[7],
                metadata=json.loads(row[8]),
                added_at=row[9],
                updated_at=row[10],
                keywords=keywords[row[0]],
            )
            for row in rows
        ]

    def get(self, image_id: int) -> ImageRecord | None:
        found = self._records("id = ?", [image_id])
        return found[0] if found else None

    def get_by_path(self, path: str) -> ImageRecord | None:
        found = self._records("path = ?", [path])
        return found[0] if found else None

    def get_many(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        out: dict[int, ImageRecord] = {}
        for chunk, marks in in_chunks(list(ids)):
            out.update((r.id, r) for r in self._records(f"id IN ({marks})", chunk))
        return out

    def paths_and_metadata(self, ids: Iterable[int]) -> dict[int, tuple[str, dict[str, Any]]]:
        """id -> (path, metadata) of many images in one statement: what a search hit shows
        (a whole record also reads its keywords, a second statement)."""
        out: dict[int, tuple[str, dict[str, Any]]] = {}
        for chunk, marks in in_chunks(list(ids)):
            for image_id, path, metadata in self.query(
                f"SELECT id, path, metadata FROM images WHERE id IN ({marks})", chunk
            ):
                out[image_id] = (path, _decode_json(metadata))
        return out

    def count(self) -> int:
        return self.query("SELECT count(*) FROM images")[0][0]

    def file_states(self) -> dict[str, tuple[int, int, float, str]]:
        """path -> (id, size, mtime, sha256), for deciding what changed since the last run."""
        return {
            path: (i, size, mtime, sha)
            for i, path, size, mtime, sha in self.query(
                "SELECT id, path, size, mtime, sha256 FROM images"
            )
        }

    def current_signatures(self, attribute: str, version: str) -> int:
        """How many images have a signature of `attribute` made by `version` (an index count)."""
        return self.query(
            "SELECT count(*) FROM signatures WHERE attribute = ? AND version = ?",
            (attribute, version),
        )[0][0]

    def stale_images(self, versions: Mapping[str, str]) -> set[int]:
        """Ids of images lacking a signature of the given version (attribute -> version) for
        some attribute: missing, or made by another version. Through the index of (attribute,
        version, image): the current signatures of each attribute are counted, and only
        where they are fewer than the images are the others listed; the usual answer (none)
        costs a count per attribute, not a read of every signature row with its vector."""
        stale: set[int] = set()
        with self.reading():
            images = self.count()
            for attribute, version in versions.items():
                if self.current_signatures(attribute, version) < images:
                    stale.update(
                        row[0]
                        for row in self.query(
                            "SELECT id FROM images WHERE id NOT IN (SELECT image_id FROM"
                            " signatures WHERE attribute = ? AND version = ?)",
                            (attribute, version),
                        )
                    )
        return stale

    def signature_versions(self) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {}
        for image_id, attribute, version in self.query(
            "SELECT image_id, attribute, version FROM signatures"
        ):
            out.setdefault(image_id, {})[attribute] = version
        return out

    def put_image(
        self, image: NewImage, *, image_id: int | None = None, only_if_new: bool = False
    ) -> tuple[int, bool]:
        """Insert or replace the image at `image.path` with its signatures; (id, was_new).

        With `image_id`, that image is replaced in place (same id, possibly a new path).
        With `only_if_new`, an image already at `image.path` is left untouched (decided in the
        same transaction, so two identical uploads at once cannot both write)."""
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT id, metadata FROM images WHERE path = ?", (image.path,)
            ).fetchone()
            if only_if_new and row is not None:
                return int(row[0]), False
            if image_id is not None:
                if row is not None and row[0] != image_id:
                    raise CollectionError(f"{image.path} is already image {row[0]}")
                row = conn.execute(
                    "SELECT id, metadata FROM images WHERE id = ?", (image_id,)
                ).fetchone()
                if row is None:
                    raise CollectionError(f"no image with id {image_id}")
            if image.metadata is not None:
                metadata = dict(image.metadata)
            else:
                metadata = json.loads(row[1]) if row else {}
            metadata_json = json.dumps(metadata, ensure_ascii=False, sort_keys=True)
            facts = (image.size, image.mtime, image.sha256, image.width, image.height, image.format)
            if row is None:
                image_id = conn.execute(
                    "INSERT INTO images(path, size, mtime, sha256, width, height, format, metadata,"
                    " added_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (image.path, *facts, metadata_json, now, now),
                ).lastrowid
            else:
                image_id = row[0]
                conn.execute(
                    "UPDATE images SET path = ?, size = ?, mtime = ?, sha256 = ?, width = ?,"
                    " height = ?, format = ?, metadata = ?, updated_at = ?, origin = 'decoded'"
                    " WHERE id = ?",
                    (image.path, *facts, metadata_json, now, image_id),
                )
            for attribute, (version, vector) in image.signatures.items():
                conn.execute(
                    "INSERT OR REPLACE INTO signatures(image_id, attribute, version, vector)"
                    " VALUES (?, ?, ?, ?)",
                    (image_id, attribute, version, np.asarray(vector, "<f4").tobytes()),
                )
            self._write_keywords(conn, image_id, metadata, image.auto_keywords)
            conn.execute("DELETE FROM failures WHERE path = ?", (image.path,))  # it reads now
        return int(image_id), row is None

    # -- files that failed ----------------------------------------------------------------------

    def failures(self) -> dict[str, FailureRecord]:
        """path -> what is known of its last failure, for the plan of the next run."""
        return {
            path: FailureRecord(size, mtime, setup, reason)
            for path, size, mtime, setup, reason in self.query(
                "SELECT path, size, mtime, setup, reason FROM failures"
            )
        }

    def record_failures(self, failures: Iterable[tuple[str, FailureRecord]]) -> None:
        """Remember files that could not be indexed (replacing an older record of each)."""
        now = time.time()
        rows = [(path, f.size, f.mtime, f.setup, f.reason, now) for path, f in failures]
        if rows:
            with self.transaction() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO failures(path, size, mtime, setup, reason, failed_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )

    def forget_failures(self, paths: Iterable[str]) -> None:
        rows = [(path,) for path in paths]
        if rows:
            with self.transaction() as conn:
                conn.executemany("DELETE FROM failures WHERE path = ?", rows)

    def touch(self, image_id: int, size: int, mtime: float) -> None:
        """Record a new size/mtime for a file whose content (hash) did not change."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE images SET size = ?, mtime = ? WHERE id = ?", (size, mtime, image_id)
            )

    def set_metadata(self, image_id: int, metadata: Mapping[str, Any], *, merge: bool) -> None:
        with self.transaction() as conn:
            row = conn.execute("SELECT metadata FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None:
                raise CollectionError(f"no image with id {image_id}")
            new = {**json.loads(row[0]), **metadata} if merge else dict(metadata)
            conn.execute(
                "UPDATE images SET metadata = ?, updated_at = ? WHERE id = ?",
                (json.dumps(new, ensure_ascii=False, sort_keys=True), time.time(), image_id),
            )
            self._write_keywords(conn, image_id, new, None)

    def _write_keywords(
        self,
        conn: sqlite3.Connection,
        image_id: int,
        metadata: Mapping[str, Any],
        auto_keywords: Iterable[tuple[str, float]] | None,
    ) -> None:
        """Replace user keywords (from metadata) and, if given, model tags; refresh full text."""
        conn.execute("DELETE FROM keywords WHERE image_id = ? AND source = 'user'", (image_id,))
        conn.executemany(
            "INSERT OR IGNORE INTO keywords(image_id, keyword, source, score)"
            " VALUES (?, ?, 'user', 1)",
            [(image_id, k) for k in _user_keywords(metadata)],
        )
        if auto_keywords is not None:
            conn.execute("DELETE FROM keywords WHERE image_id = ? AND source = 'auto'", (image_id,))
            conn.executemany(
                "INSERT OR IGNORE INTO keywords(image_id, keyword, source, score)"
                " VALUES (?, ?, 'auto', ?)",
                [(image_id, k, float(s)) for k, s in auto_keywords],
            )
        words = [
            k
            for (k,) in conn.execute("SELECT keyword FROM keywords WHERE image_id = ?", (image_id,))
        ]
        text = search_text_of(words, metadata)
        conn.execute("DELETE FROM search_text WHERE rowid = ?", (image_id,))
        conn.execute("INSERT INTO search_text(rowid, text) VALUES (?, ?)", (image_id, text))

    def path_in_use(self, path: str) -> bool:
        return bool(self.query("SELECT 1 FROM images WHERE path = ? LIMIT 1", (path,)))

    def delete(self, image_ids: Iterable[int]) -> int:
        ids = list(image_ids)
        if not ids:
            return 0
        with self.transaction() as conn:
            removed = 0
            for image_id in ids:
                conn.execute("DELETE FROM search_text WHERE rowid = ?", (image_id,))
                removed += conn.execute("DELETE FROM images WHERE id = ?", (image_id,)).rowcount
        return removed

    # -- signatures -----------------------------------------------------------------------------

    def signature(self, image_id: int, attribute: str) -> tuple[str, np.ndarray] | None:
        rows = self.query(
            "SELECT version, vector FROM signatures WHERE image_id = ? AND attribute = ?",
            (image_id, attribute),
        )
        if not rows:
            return None
        return rows[0][0], np.frombuffer(rows[0][1], dtype="<f4").copy()

    def signature_matrix(
        self, attribute: str, version: str, dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every image whose `attribute` signature is current, read in
        chunks (one statement for all of deep took 9.8 s of the 10 s statement budget at 1M
        images with the page cache warm)."""
        chunks = list(self.signature_chunks(attribute, version, dim))
        if not chunks:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return (
            np.concatenate([ids for ids, _ in chunks]),
            np.concatenate([matrix for _, matrix in chunks]),
        )

    def signature_chunks(
        self, attribute: str, version: str, dim: int, rows: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 matrix) chunks of every current signature of `attribute`, by id,
        each its own statement well within the statement budget however large the
        collection (a write between chunks shows in the chunks read after it)."""
        last, rows = -1, rows or SIGNATURE_CHUNK
        while True:
            found = self.query(
                "SELECT image_id, vector FROM signatures WHERE attribute = ? AND version = ?"
                " AND image_id > ? ORDER BY image_id LIMIT ?",
                (attribute, version, last, rows),
            )
            if not found:
                return
            ids = np.fromiter((r[0] for r in found), np.int64, count=len(found))
            matrix = np.frombuffer(b"".join(r[1] for r in found), "<f4").reshape(len(found), dim)
            yield ids, matrix
            last = int(ids[-1])

    def text_vectors(self, texts: Iterable[str], model: str) -> dict[str, np.ndarray]:
        """Stored sentence vectors of `texts` (those that have one)."""
        out: dict[str, np.ndarray] = {}
        for chunk, marks in in_chunks(list(dict.fromkeys(texts))):
            for text, blob in self.query(
                f"SELECT text, vector FROM text_vectors WHERE model = ? AND text IN ({marks})",
                [model, *chunk],
            ):
                out[text] = np.frombuffer(blob, dtype="<f4").copy()
        return out

    def put_text_vectors(self, vectors: Mapping[str, np.ndarray], model: str) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO text_vectors(text, model, vector) VALUES (?, ?, ?)",
                [(t, model, np.asarray(v, "<f4").tobytes()) for t, v in vectors.items()],
            )

    def keyword_vocabulary(self) -> list[str]:
        return [k for (k,) in self.query("SELECT DISTINCT keyword FROM keywords ORDER BY keyword")]

    # -- bulk import ------------------------------------------------------------------------------

    def put_imported(
        self,
        paths: list[str],
        signatures: Mapping[str, tuple[str, np.ndarray]],
        metadata: list[dict[str, Any]],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[int]:
        """Insert images whose signatures were computed elsewhere (attribute -> (version,
        matrix), one row per path): all of them or, on any error, none (one transaction).
        `progress(done, total)`: rows written of all (an image and each of its signatures).

        Ids are assigned above the high-water mark inside the transaction, so the rows go in
        with `executemany` instead of one statement and one id lookup per image."""
        now = time.time()
        total = len(paths) * (1 + len(signatures))
        written = 0

        def counted(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
            nonlocal written
            for row in rows:
                yield row
                written += 1
                if progress is not None and written % PROGRESS_ROWS == 0:
                    progress(written, total)

        with self.transaction() as conn:
            for chunk, marks in in_chunks(paths):
                taken = conn.execute(
                    f"SELECT path FROM images WHERE path IN ({marks}) LIMIT 1", chunk
                ).fetchone()
                if taken is not None:
                    raise CollectionError(f"{taken[0]} is already in the collection")
            first = 1 + max(
                conn.execute("SELECT coalesce(max(id), 0) FROM images").fetchone()[0],
                conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'images'"
                ).fetchone()[0],
            )
            ids = list(range(first, first + len(paths)))
            texts = [json.dumps(m, ensure_ascii=False, sort_keys=True) for m in metadata]
            conn.executemany(
                "INSERT INTO images(id, path, size, mtime, sha256, width, height, format,"
                " metadata, added_at, updated_at, origin)"
                " VALUES (?, ?, 0, 0, '', 0, 0, '', ?, ?, ?, 'imported')",
                counted(zip(ids, paths, texts, [now] * len(ids), [now] * len(ids), strict=True)),
            )
            for attribute, (version, matrix) in signatures.items():
                rows = np.ascontiguousarray(matrix, dtype="<f4")
                conn.executemany(
                    "INSERT INTO signatures(image_id, attribute, version, vector)"
                    " VALUES (?, ?, ?, ?)",
                    counted(
                        (image_id, attribute, version, rows[i].tobytes())
                        for i, image_id in enumerate(ids)
                    ),
                )
            conn.executemany(
                "INSERT INTO keywords(image_id, keyword, source, score) VALUES (?, ?, 'user', 1)",
                (
                    (image_id, keyword)
                    for image_id, meta in zip(ids, metadata, strict=True)
                    for keyword in dict.fromkeys(_user_keywords(meta))
                ),
            )
            conn.executemany(
                "INSERT INTO search_text(rowid, text) VALUES (?, ?)",
                (
                    (image_id, search_text_of(dict.fromkeys(_user_keywords(meta)), meta))
                    for image_id, meta in zip(ids, metadata, strict=True)
                ),
            )
        if progress is not None:
            progress(total, total)
        return ids

    # -- checking and repair (see lookalike.check) -------------------------------------------------

    def integrity_problems(self) -> list[str]:
        """SQLite's own verdict on the file, then rows whose image is gone; [] when sound."""
        found = [r[0] for r in self.query("PRAGMA integrity_check") if r[0] != "ok"]
        found += [
            f"{table} row {rowid} points at missing {parent}"
            for table, rowid, parent, _ in self.query("PRAGMA foreign_key_check")
        ]
        return found

    def reindex_and_drop_dangling(self) -> None:
        """Rebuild every index (corrupt index pages are the repairable kind of damage) and
        delete signature and keyword rows whose image is gone."""
        with self.transaction() as conn:
            conn.execute("REINDEX")
            for table in ("signatures", "keywords"):
                conn.execute(f"DELETE FROM {table} WHERE image_id NOT IN (SELECT id FROM images)")

    def signature_facts(self, after_id: int, limit: int) -> list[tuple[int, str, str, bytes]]:
        """(image id, attribute, version, vector) of images with ids in (after_id, ...], in id
        order, `limit` images at most: a check streams the signatures instead of loading all."""
        return self.query(
            "SELECT s.image_id, s.attribute, s.version, s.vector FROM signatures s"
            " WHERE s.image_id IN (SELECT id FROM images WHERE id > ? ORDER BY id LIMIT ?)"
            " ORDER BY s.image_id",
            (after_id, limit),
        )

    def image_ids_after(self, after_id: int, limit: int) -> list[tuple[int, str, str]]:
        """(id, path, origin) of the next `limit` images after `after_id`, in id order."""
        return self.query(
            "SELECT id, path, origin FROM images WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )

    def search_text_problems(self) -> tuple[dict[int, str], list[int], bool]:
        """(expected text of images whose full-text row is missing or differs, rowids with no
        image, whether FTS5's own integrity-check passes)."""
        expected: dict[int, list[str]] = {}
        with self._lock:
            for image_id, metadata in self.query("SELECT id, metadata FROM images"):
                expected[image_id] = [metadata]
            for image_id, keyword in self.query(
                "SELECT image_id, keyword FROM keywords ORDER BY image_id"
            ):
                if image_id in expected:
                    expected[image_id].append(keyword)
            stored = dict(self.query("SELECT rowid, text FROM search_text"))
        wrong: dict[int, str] = {}
        for image_id, (metadata, *keywords) in expected.items():
            text = search_text_of(keywords, json.loads(metadata))
            have = stored.get(image_id)
            if have is None or sorted(have.split(" ; ")) != sorted(text.split(" ; ")):
                wrong[image_id] = text
        extra = sorted(set(stored) - set(expected))
        try:  # a command written as an INSERT: it needs the write connection
            with self.transaction() as conn:
                conn.execute("INSERT INTO search_text(search_text) VALUES ('integrity-check')")
            sound = True
        except sqlite3.DatabaseError:
            sound = False
        return wrong, extra, sound

    def rewrite_search_text(self, texts: Mapping[int, str], extra: Iterable[int]) -> None:
        """Put the given full-text rows in place, delete rows of no image, rebuild FTS5's index."""
        with self.transaction() as conn:
            conn.executemany("DELETE FROM search_text WHERE rowid = ?", [(i,) for i in extra])
            conn.executemany("DELETE FROM search_text WHERE rowid = ?", [(i,) for i in texts])
            conn.executemany(
                "INSERT INTO search_text(rowid, text) VALUES (?, ?)", list(texts.items())
            )
            conn.execute("INSERT INTO search_text(search_text) VALUES ('rebuild')")

    def meta_index_problems(self) -> list[int]:
        """Ids of the images whose rows in the metadata index (`meta_values`) differ from what
        their metadata gives, or that are gone but still have rows: the index is built again
        into a temporary table and the two are compared both ways."""
        with self.transaction() as conn:  # a temp table lives on the connection that makes it
            conn.execute("DROP TABLE IF EXISTS temp.meta_expected")
            conn.execute(
                """CREATE TEMP TABLE meta_expected (
                       key TEXT NOT NULL, element INTEGER NOT NULL, kind TEXT NOT NULL,
                       value NOT NULL, image_id INTEGER NOT NULL,
                       PRIMARY KEY (key, element, kind, value, image_id)) WITHOUT ROWID"""
            )
            for statement in expected_meta_values_sql("temp.meta_expected").split(";"):
                if statement.strip():  # (no literal in these statements holds a ';')
                    conn.execute(statement)
            rows = conn.execute(
                """SELECT DISTINCT image_id FROM (
                       SELECT * FROM (SELECT * FROM main.meta_values
                                      EXCEPT SELECT * FROM temp.meta_expected)
                       UNION ALL
                       SELECT * FROM (SELECT * FROM temp.meta_expected
                                      EXCEPT SELECT * FROM main.meta_values))
                   ORDER BY image_id"""
            ).fetchall()
            conn.execute("DROP TABLE temp.meta_expected")
        return [r[0] for r in rows]

    def rewrite_meta_index(self, image_ids: Iterable[int]) -> None:
        """Rebuild the metadata-index rows of these images (through the same trigger every
        metadata write fires) and drop rows of images that no longer exist."""
        ids = [(int(i),) for i in image_ids]
        with self.transaction() as conn:
            conn.executemany("DELETE FROM meta_values WHERE image_id = ?", ids)
            conn.executemany("UPDATE images SET metadata = metadata WHERE id = ?", ids)

    def upload_images(self) -> list[tuple[int, str]]:
        """(id, path) of images whose file lies in a folder named `uploads` (the collection's,
        or, for a collection that was moved, the one it was in)."""
        return [
            (image_id, path)
            for image_id, path in self.query(
                "SELECT id, path FROM images WHERE instr(path, '/uploads/') > 0"
            )
            if Path(path).parent.name == "uploads"
        ]

    def images_with_hash(self, sha256: str) -> list[tuple[int, str]]:
        """(id, path) of images whose source bytes hash to `sha256`."""
        return self.query("SELECT id, path FROM images WHERE sha256 = ?", (sha256,))

    def origin_of(self, image_id: int) -> str | None:
        """'decoded' (signatures extracted from its pixels) or 'imported' (given as vectors)."""
        rows = self.query("SELECT origin FROM images WHERE id = ?", (image_id,))
        return rows[0][0] if rows else None
