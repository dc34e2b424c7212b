"""The catalog's SQL schema and its migrations.

SQLite is the source of truth of a collection: every vector index is derived from it and can be
rebuilt. Migrations are numbered; `user_version` records the last one applied.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: images, their signatures, keywords and the full-text index over keywords and metadata.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL               -- JSON
    );
    CREATE TABLE images (
        id         INTEGER PRIMARY KEY,
        path       TEXT NOT NULL UNIQUE,  -- absolute file path, URL, or 'upload:<name>'
        size       INTEGER NOT NULL,      -- bytes of the source file
        mtime      REAL NOT NULL,         -- source modification time (0 for URLs and uploads)
        sha256     TEXT NOT NULL,         -- content hash of the source bytes
        width      INTEGER NOT NULL,      -- pixels after EXIF orientation
        height     INTEGER NOT NULL,
        format     TEXT NOT NULL,         -- Pillow's format name, e.g. 'JPEG'
        metadata   TEXT NOT NULL DEFAULT '{}',  -- JSON object given by the user
        added_at   REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX images_sha256 ON images(sha256);
    CREATE TABLE signatures (
        image_id  INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        attribute TEXT NOT NULL,
        version   TEXT NOT NULL,          -- extractor version that produced the vector
        vector    BLOB NOT NULL,          -- float32, little-endian
        PRIMARY KEY (image_id, attribute)
    );
    CREATE TABLE keywords (
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        keyword  TEXT NOT NULL,
        source   TEXT NOT NULL,           -- 'user' or 'auto' (model tags)
        score    REAL NOT NULL DEFAULT 1.0,
        PRIMARY KEY (image_id, keyword, source)
    );
    CREATE VIRTUAL TABLE search_text USING fts5(
        text,                             -- keywords and metadata text of one image
        tokenize = 'porter unicode61'
    );                                    -- rowid = images.id
    """,
    # 2: sentence-model vectors of keywords, so text search does not re-embed the vocabulary
    # in every process.
    """
    CREATE TABLE text_vectors (
        text   TEXT NOT NULL,
        model  TEXT NOT NULL,             -- which sentence model made the vector
        vector BLOB NOT NULL,             -- float32, little-endian, unit length
        PRIMARY KEY (text, model)
    );
    """,
    # 3: ids are never reused (AUTOINCREMENT: a deleted id is not handed to the next image, so
    # a stale bookmark or DELETE cannot reach another image), and each image records where its
    # signatures came from: 'decoded' (extracted here from its pixels) or 'imported' (vectors
    # given by the user, no pixels to re-read). SQLite cannot add AUTOINCREMENT to a table, so
    # `images` is rebuilt with the same ids (signatures, keywords and the full-text rowids keep
    # pointing at them); foreign keys are off meanwhile (see `migrate`).
    """
    CREATE TABLE images_v3 (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        path       TEXT NOT NULL UNIQUE,  -- absolute file path, URL, or a file under uploads/
        size       INTEGER NOT NULL,      -- bytes of the source file (0 when imported)
        mtime      REAL NOT NULL,         -- source modification time (0 for URLs and uploads)
        sha256     TEXT NOT NULL,         -- content hash of the source bytes ('' when imported)
        width      INTEGER NOT NULL,      -- pixels after EXIF orientation (0 when imported)
        height     INTEGER NOT NULL,
        format     TEXT NOT NULL,         -- Pillow's format name, e.g. 'JPEG'
        metadata   TEXT NOT NULL DEFAULT '{}',  -- JSON object given by the user
        added_at   REAL NOT NULL,
        updated_at REAL NOT NULL,
        origin     TEXT NOT NULL DEFAULT 'decoded'  -- 'decoded' or 'imported'
    );
    INSERT INTO images_v3(id, path, size, mtime, sha256, width, height, format, metadata,
                          added_at, updated_at)
        SELECT id, path, size, mtime, sha256, width, height, format, metadata,
               added_at, updated_at FROM images;
    -- the high-water mark: the largest id ever seen, the full-text rowids included (an image
    -- deleted before this migration may have left the newest id behind nowhere else)
    DELETE FROM sqlite_sequence WHERE name = 'images_v3';
    INSERT INTO sqlite_sequence(name, seq) SELECT 'images_v3', max(
        coalesce((SELECT max(id) FROM images), 0),
        coalesce((SELECT max(rowid) FROM search_text), 0));
    DROP TABLE images;
    ALTER TABLE images_v3 RENAME TO images;
    CREATE INDEX images_sha256 ON images(sha256);
    """,
    # 4: a change log for the derived vector indexes: every write to an image or its
    # signatures appends the image's id, so an index catches up by reading only what changed
    # since the sequence number it was built at (AUTOINCREMENT: numbers are never reused).
    """
    CREATE TABLE index_changes (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        image_id INTEGER NOT NULL
    );
    CREATE TRIGGER index_changes_image_insert AFTER INSERT ON images
        BEGIN INSERT INTO index_changes(image_id) VALUES (new.id); END;
    CREATE TRIGGER index_changes_image_update AFTER UPDATE ON images
        BEGIN INSERT INTO index_changes(image_id) VALUES (new.id); END;
    CREATE TRIGGER index_changes_image_delete AFTER DELETE ON images
        BEGIN INSERT INTO index_changes(image_id) VALUES (old.id); END;
    CREATE TRIGGER index_changes_signature_insert AFTER INSERT ON signatures
        BEGIN INSERT INTO index_changes(image_id) VALUES (new.image_id); END;
    CREATE TRIGGER index_changes_signature_delete AFTER DELETE ON signatures
        BEGIN INSERT INTO index_changes(image_id) VALUES (old.image_id); END;
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database's; return the resulting version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(MIGRATIONS):
        from lookalike.errors import CollectionError

        raise CollectionError(
            f"collection schema version {current} is newer than this lookalike "
            f"({len(MIGRATIONS)}): upgrade lookalike"
        )
    for number in range(current, len(MIGRATIONS)):
        _apply(conn, number)
    return len(MIGRATIONS)


def _apply(conn: sqlite3.Connection, number: int) -> None:
    """Apply migration `number` (0-based) as one atomic step; if another process applied it
    meanwhile, this one's attempt fails on the existing tables and is rolled back.

    Foreign keys are switched off meanwhile (rebuilding a table would otherwise cascade-delete
    every signature; the pragma is a no-op inside a transaction)."""
    enforced = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        # executescript runs outside Python's implicit transactions: BEGIN/COMMIT make each
        # migration and its version bump one atomic step.
        conn.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;"
        )
    except sqlite3.DatabaseError:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if conn.execute("PRAGMA user_version").fetchone()[0] <= number:
            raise
    finally:
        conn.execute(f"PRAGMA foreign_keys = {'ON' if enforced else 'OFF'}")
