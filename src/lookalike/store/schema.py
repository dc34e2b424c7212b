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

# Migration 5's pieces: the statements that index one metadata document `{m}` of image `{i}`
# (`{images}` names the images table for the backfill, empty in a trigger). A document is
# indexed only when every key in it is a plain name the filter language can spell; any other
# (a key like "a.b" or "", a duplicate key, not an object, not JSON) gets one 'odd' row
# instead, and a filter evaluates those few with json_extract as before. Indexed: each scalar
# or container reached through object keys only (element 0), and each number or text directly
# inside such a list (element 1; text ASCII-lower-cased, as CONTAINS compares list elements).
# json_tree quotes some keys in `fullkey` (newer SQLite quotes any key with "_"); dropping the
# quotes is exact because every key of an indexed document is a plain name.
_JSON = "iif(json_valid({m}), {m}, NULL)"
_ODD = f"""(NOT json_valid({{m}})
    OR json_type(iif(json_valid({{m}}), {{m}}, '{{{{}}}}')) != 'object'
    OR (SELECT coalesce(max(t.key = '' OR t.key GLOB '*[^A-Za-z0-9_]*' OR t.key GLOB '[0-9]*'), 0)
               OR count(*) != count(DISTINCT t.parent || '.' || t.key)
          FROM json_tree({_JSON}) AS t WHERE typeof(t.key) = 'text'))"""
_NOT_ODD = (
    "NOT EXISTS (SELECT 1 FROM meta_values WHERE key = '' AND element = 0 AND kind = 'odd'"
    " AND value = '' AND image_id = {i})"
)
# One pass over the tree: a row reached through keys only is a value (element 0); a number or
# text whose parent is such a list is an element (element 1, keyed by the list's path).
_META_STATEMENTS = f"""
    INSERT OR IGNORE INTO meta_values(key, element, kind, value, image_id)
        SELECT '', 0, 'odd', '', {{i}} {{odd_from}}WHERE {_ODD};
    INSERT OR IGNORE INTO meta_values(key, element, kind, value, image_id)
        SELECT replace(substr(iif(typeof(t.key) = 'integer', t.path, t.fullkey), 3), '"', ''),
               typeof(t.key) = 'integer',
               CASE WHEN t.type IN ('integer', 'real', 'true', 'false') THEN 'n'
                    WHEN t.type = 'text' THEN 't' ELSE 'o' END,
               CASE WHEN t.type != 'text' THEN coalesce(t.atom, '')
                    WHEN typeof(t.key) = 'integer' THEN lower(t.atom) ELSE t.atom END, {{i}}
          FROM {{images}}json_tree({_JSON}) AS t
         WHERE t.type != 'null' AND (
               (typeof(t.key) = 'text' AND instr(t.fullkey, '[') = 0)
            OR (typeof(t.key) = 'integer' AND t.path != '$' AND instr(t.path, '[') = 0
                AND t.type IN ('integer', 'real', 'true', 'false', 'text')))
           AND {_NOT_ODD};"""
_NEW_ROW = {"m": "new.metadata", "i": "new.id", "images": "", "odd_from": ""}
_EVERY_ROW = {
    "m": "img.metadata",
    "i": "img.id",
    "images": "images AS img, ",
    "odd_from": "FROM images AS img ",
}

MIGRATIONS.append(
    # 5: an index of metadata values, so a filter on metadata reads an index instead of
    # parsing every image's JSON (json_extract over 1M rows ran past the statement budget).
    # One row per (field path, value, image), kept by triggers with every write to `images`;
    # `kind` is 'n' (number; JSON true/false are 1/0), 't' (text), 'o' (object or list) or
    # 'odd' (see above); JSON null has no row. Keywords get an index on their folded text.
    f"""
    CREATE TABLE meta_values (
        key      TEXT NOT NULL,     -- the filter's field path, e.g. 'camera.make'
        element  INTEGER NOT NULL,  -- 0: the value at key; 1: an element of the list at key
        kind     TEXT NOT NULL,
        value    NOT NULL,          -- no type: numbers and text keep their SQLite type
        image_id INTEGER NOT NULL,
        PRIMARY KEY (key, element, kind, value, image_id)
    ) WITHOUT ROWID;
    CREATE INDEX meta_values_image ON meta_values(image_id);
    CREATE INDEX keywords_folded ON keywords(lower(keyword));
    {_META_STATEMENTS.format(**_EVERY_ROW)}
    CREATE TRIGGER meta_values_insert AFTER INSERT ON images BEGIN
        {_META_STATEMENTS.format(**_NEW_ROW)}
    END;
    CREATE TRIGGER meta_values_update AFTER UPDATE OF metadata ON images BEGIN
        DELETE FROM meta_values WHERE image_id = old.id;
        {_META_STATEMENTS.format(**_NEW_ROW)}
    END;
    CREATE TRIGGER meta_values_delete AFTER DELETE ON images
        BEGIN DELETE FROM meta_values WHERE image_id = old.id; END;
    """
)


MIGRATIONS.append(
    # 6: files that could not be indexed, so a re-run does not hand an unchanged broken file
    # to a worker again (starting the workers and the CNN for nothing). A record holds while
    # the file keeps its size and mtime and the collection reads files the same way (`setup`:
    # a fingerprint of the settings and versions that read it); indexing the file, deleting
    # it or `index --retry-failed` drops it. No image refers to it: `check` ignores it.
    # (IF NOT EXISTS: a catalog whose version was set back, as tests of older schemas do,
    # keeps the table it already has.)
    """
    CREATE TABLE IF NOT EXISTS failures (
        path      TEXT PRIMARY KEY,  -- absolute file path
        size      INTEGER NOT NULL,  -- the file's size and mtime when it failed
        mtime     REAL NOT NULL,
        setup     TEXT NOT NULL,     -- fingerprint of what read it (see ingest.reading_setup)
        reason    TEXT NOT NULL,     -- why it was skipped, as reported then
        failed_at REAL NOT NULL
    );
    """
)


MIGRATIONS.append(
    # 7: which images need describing again (a signature missing, or made by another version
    # of its extractor) read from an index of (attribute, version, image): `lookalike index`
    # and `info` read every signature row's version before, a scan of the whole table that
    # ran past the statement budget at 1M images (the table holds the vectors too).
    """
    CREATE INDEX IF NOT EXISTS signatures_version ON signatures(attribute, version, image_id);
    """
)


def expected_meta_values_sql(table: str) -> str:
    """Migration 5's backfill writing into `table` (same columns as `meta_values`) instead:
    what the metadata index should hold, for `lookalike check` to compare with what it does."""
    return _META_STATEMENTS.format(**_EVERY_ROW).replace("meta_values", table)


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
