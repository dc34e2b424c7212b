"""Metadata filters at catalog scale: the ids of a filter from the metadata index (schema 5)
against the JSON SQL it replaced (json_extract over every image's metadata), same process.

    .venv/bin/python bench/bench_filters.py --images 1000000 --db /tmp/filters.sqlite

Builds a catalog of N image rows with realistic metadata straight through SQL (no vectors:
filters read only `images`, `keywords` and `meta_values`) as a schema-4 catalog, times the
JSON SQL, migrates it (the backfill an existing collection pays once on open) and times the
same filters from the index; then inserts more rows to show the write cost of the triggers.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import time
from pathlib import Path

from lookalike.query.filters import _node_sql, compile_filter_ids, parse_filter
from lookalike.store.schema import MIGRATIONS, migrate

FILTERS = [
    ("1%", "shard = 0"),
    ("10%", "shard < 10"),
    ("category", "category IN ('shoes', 'bags')"),
    ("range+text", "price BETWEEN 10 AND 20 AND camera.make = 'Canon'"),
    ("list", "tags CONTAINS 'summer'"),
    ("keywords", "keywords CONTAINS 'sale'"),
    ("substring", "title CONTAINS 'red'"),
    ("negation", "NOT (shard < 50) AND sold = true"),
]
CATEGORIES = ["shoes", "bags", "shirts", "hats", "coats", "socks", "belts", "dresses"]
WORDS = ["summer", "winter", "sale", "new", "red", "blue", "leather", "cotton", "kids"]
MAKES = ["Canon", "Nikon", "Sony", "Fujifilm", "Apple"]
COLUMNS = "path, size, mtime, sha256, width, height, format, metadata, added_at, updated_at"


def rows(start: int, stop: int, rng: random.Random):
    for i in range(start, stop):
        meta = {
            "shard": i % 100,
            "category": rng.choice(CATEGORIES),
            "price": round(rng.uniform(1, 200), 2),
            "sold": rng.random() < 0.3,
            "title": f"{rng.choice(WORDS)} {rng.choice(CATEGORIES)} {i}",
            "tags": rng.sample(WORDS, 3),
            "camera": {"make": rng.choice(MAKES), "iso": rng.choice([100, 200, 400, 800])},
        }
        yield (f"/shop/{i}.jpg", 1000, 0.0, "h", 800, 600, "JPEG", json.dumps(meta), 0.0, 0.0)


def insert(conn: sqlite3.Connection, start: int, stop: int, rng: random.Random) -> None:
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO images ({COLUMNS}) VALUES ({', '.join('?' * 10)})", rows(start, stop, rng)
    )
    conn.executemany(
        "INSERT INTO keywords (image_id, keyword, source) VALUES (?, 'sale', 'user')",
        [(i,) for i in range(start + 1, stop + 1, 20)],
    )
    conn.execute("COMMIT")


def timed_ids(conn: sqlite3.Connection, sql: str, params: list) -> tuple[float, int]:
    start = time.perf_counter()
    count = len(conn.execute(sql, params).fetchall())
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/lookalike-bench-filters.sqlite"))
    args = parser.parse_args()
    args.db.unlink(missing_ok=True)
    conn = sqlite3.connect(args.db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for number in range(4):  # a collection as it was before the metadata index
        conn.executescript(MIGRATIONS[number])
    conn.execute("PRAGMA user_version = 4")
    rng = random.Random(0)
    start = time.perf_counter()
    for first in range(0, args.images, 50_000):
        insert(conn, first, min(first + 50_000, args.images), rng)
    print(f"{args.images} rows written (schema 4) in {time.perf_counter() - start:.1f} s")

    before = {}
    for label, text in FILTERS:
        sql = "SELECT images.id FROM images WHERE " + _node_sql(parse_filter(text), "images").text
        params = _node_sql(parse_filter(text), "images").params
        before[label] = timed_ids(conn, sql, params)
    start = time.perf_counter()
    migrate(conn)
    took = time.perf_counter() - start
    entries = conn.execute("SELECT count(*) FROM meta_values").fetchone()[0]
    print(f"migration 5 (metadata index backfill): {took:.1f} s, {entries} index rows")
    print(f"{'filter':<11} {'matches':>8} {'JSON SQL s':>11} {'index s':>9} {'speed-up':>9}")
    for label, text in FILTERS:
        sql, params = compile_filter_ids(text)
        seconds, count = timed_ids(conn, sql, params)
        old, old_count = before[label]
        assert count == old_count, (label, count, old_count)
        print(f"{label:<11} {count:>8} {old:>11.3f} {seconds:>9.4f} {old / seconds:>8.0f}x")
    start = time.perf_counter()
    insert(conn, args.images, args.images + 10_000, rng)
    print(f"10,000 more rows with the index triggers: {time.perf_counter() - start:.2f} s")
    conn.close()
    size = args.db.stat().st_size
    print(f"catalog file {size / args.images:.0f} B per image (images + keywords + index)")


if __name__ == "__main__":
    main()
