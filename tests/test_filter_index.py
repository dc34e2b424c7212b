"""Metadata filters through the CLI on a folder of real photos, answered from the catalog's
metadata index (schema migration 5), including a collection made before the index existed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import CLASSIC
from PIL import Image
from test_cli import run

from lookalike.api import Collection
from lookalike.query.filters import evaluate_filter
from lookalike.samples import write_samples
from lookalike.store.schema import MIGRATIONS

MAKES = ["Canon", "Nikon", "Sony", "canon"]
FILTERS = [
    "rating = 3",
    "rating IN (1, 4) AND price < 30",
    "price BETWEEN 10.5 AND 40",
    "camera.make = 'Canon'",
    "camera.make IN ('Nikon', 'Sony') OR rating >= 5",
    "tags CONTAINS 'SEA'",
    "tags NOT CONTAINS 'sea'",
    "title CONTAINS 'astro'",
    "keywords CONTAINS 'Macro'",
    "NOT (rating < 3) AND title IS NOT NULL",
    "sold = true",
    "lens IS NULL",
    "camera.iso > 400",
    "width > 300 AND rating != 2",
]


def photo_metadata(n: int, name: str) -> dict:
    """Varied realistic metadata; two photos carry a key no filter can name ("lens.mm")."""
    meta: dict = {
        "title": name.replace("_", " "),
        "rating": n % 6,
        "price": round(5 + 3.25 * n, 2),
        "camera": {"make": MAKES[n % 4], "iso": 100 * (n % 8)},
        "tags": ["sea", "sky"] if n % 3 == 0 else ["Studio", n],
        "keywords": ["macro"] if n % 5 == 0 else [],
        "sold": n % 2 == 0,
    }
    if n % 7 == 0:
        meta["lens.mm"] = 35
    if n % 4 == 1:
        del meta["title"]
    return meta


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    base = tmp_path_factory.mktemp("filters")
    originals, _ = write_samples(base, variants=())
    (base / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    sidecar = {str(p): photo_metadata(n, p.stem) for n, p in enumerate(originals)}
    (base / "meta.json").write_text(json.dumps(sidecar))
    coll = base / "coll"
    Collection.create(coll, attributes=CLASSIC).close()
    proc = run("index", str(base / "photos"), "-c", str(coll), "--metadata",
               str(base / "meta.json"), check=False)  # fmt: skip
    assert proc.returncode == 3, proc.stderr  # every photo added, the broken file skipped
    return coll, sidecar


def searched(coll: Path, query: str, where: str) -> set[str]:
    """The names `lookalike search --where` finds."""
    proc = run("search", query, "-c", str(coll), "--where", where, "--top", "100", "--json")
    return {Path(hit["path"]).name for hit in json.loads(proc.stdout)["results"]}


def found(coll: Path, query: str, wheres: list[str]) -> list[set[str]]:
    """The names each filter admits, in this process (the CLI passes --where on unchanged, so
    a few filters through it are enough; one collection opened for many filters)."""
    with Collection.open(coll) as c:
        return [{Path(h.path).name for h in c.search(query, top_k=100, where=w)} for w in wheres]


def expected(sidecar: dict[str, dict], where: str) -> set[str]:
    """The filter evaluated in Python over the metadata given (and the photo's width)."""
    out = set()
    for path, meta in sidecar.items():
        with Image.open(path) as image:
            width = image.size[0]
        record = {"path": path, "width": width, "metadata": meta, "keywords": meta["keywords"]}
        if evaluate_filter(where, record):
            out.add(Path(path).name)
    return out


def test_search_where_gives_the_filters_answers(shop):
    coll, sidecar = shop
    query = next(iter(sidecar))
    for where, got in zip(FILTERS, found(coll, query, FILTERS), strict=True):
        assert got == expected(sidecar, where), where
    for where in (FILTERS[1], FILTERS[4], FILTERS[9]):  # numbers, nested keys, NOT and NULL
        assert searched(coll, query, where) == expected(sidecar, where), where
    assert expected(sidecar, "camera.make = 'Canon'") != set()


def test_a_collection_from_before_the_index_is_migrated_on_open(shop, tmp_path):
    coll, sidecar = shop
    old = tmp_path / "old"
    with sqlite3.connect(coll / "catalog.sqlite") as src, sqlite3.connect(old) as dst:
        src.backup(dst)
    copy = tmp_path / "coll"
    copy.mkdir()
    for item in coll.iterdir():
        if item.is_file() and item.name != "catalog.sqlite":
            (copy / item.name).write_bytes(item.read_bytes())
    conn = sqlite3.connect(old)
    for name in ("meta_values_insert", "meta_values_update", "meta_values_delete"):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP INDEX keywords_folded")
    conn.execute("DROP TABLE meta_values")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    old.rename(copy / "catalog.sqlite")
    query = next(iter(sidecar))
    assert searched(copy, query, FILTERS[4]) == expected(sidecar, FILTERS[4])  # migrates on open
    for where, got in zip(FILTERS, found(copy, query, FILTERS), strict=True):
        assert got == expected(sidecar, where), where
    with sqlite3.connect(copy / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("SELECT count(DISTINCT image_id) FROM meta_values").fetchone()[0] == 20


def test_metadata_update_through_the_cli_moves_the_image_between_filters(shop):
    coll, sidecar = shop
    query = next(iter(sidecar))
    target = searched(coll, query, "rating = 3")
    assert target
    name = sorted(target)[0]
    path = next(p for p in sidecar if Path(p).name == name)
    run("update", path, "-c", str(coll), "--metadata", '{"rating": 77}')
    assert searched(coll, query, "rating = 77") == {name}
    assert name not in found(coll, query, ["rating = 3"])[0]
    run("update", path, "-c", str(coll), "--metadata", json.dumps({"rating": 3}))
    assert name in found(coll, query, ["rating = 3"])[0]
