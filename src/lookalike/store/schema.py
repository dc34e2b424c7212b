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
        # executescript runs outside Python's implicit transactions: BEGIN/COMMIT make each
        # migration and its version bump one atomic step.
        conn.executescript(
            f"BEGIN; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;"
        )
    return len(MIGRATIONS)
