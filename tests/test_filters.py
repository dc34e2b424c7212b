"""The metadata filter language: parsing, errors, injection safety, SQL == Python semantics."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike.errors import QueryError
from lookalike.query.filters import (
    compile_filter,
    compile_filter_ids,
    evaluate_filter,
    parse_filter,
)
from lookalike.store.schema import MIGRATIONS, migrate

ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "path": "/photos/beach.jpg",
        "width": 1920,
        "height": 1080,
        "format": "JPEG",
        "metadata": {
            "title": "Beach at dusk",
            "rating": 5,
            "tags": ["Sea", "sunset", 2019],
            "camera": {"make": "Canon", "iso": 200},
            "keywords": ["holiday"],
        },
        "keywords": ["Beach", "sky"],
    },
    {
        "id": 2,
        "path": "/photos/forest.png",
        "width": 800,
        "height": 600,
        "format": "PNG",
        "metadata": {
            "title": "Forest",
            "rating": 3,
            "tags": ["trees"],
            "camera": {"make": "Nikon"},
        },
        "keywords": ["forest"],
    },
    {
        "id": 3,
        "path": "/scans/receipt.tiff",
        "width": 640,
        "height": 480,
        "format": "TIFF",
        "metadata": {"rating": "3", "title": None, "flag": True},
        "keywords": [],
    },
]


def make_db(rows: list[dict[str, Any]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    migrate(conn)
    for row in rows:
        conn.execute(
            "INSERT INTO images (id, path, size, mtime, sha256, width, height, format, metadata,"
            " added_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["id"],
                row["path"],
                row.get("size", 1000 * row["id"]),
                row.get("mtime", 1.5 * row["id"]),
                f"sha{row['id']}",
                row["width"],
                row["height"],
                row["format"],
                json.dumps(row["metadata"]),
                100.0 + row["id"],
                200.0 + row["id"],
            ),
        )
        for keyword in dict.fromkeys(row["keywords"]):
            conn.execute(
                "INSERT INTO keywords (image_id, keyword, source) VALUES (?, ?, 'user')",
                (row["id"], keyword),
            )
    conn.commit()
    return conn


def records(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Rows as evaluate_filter expects them, read back from the database."""
    conn.row_factory = sqlite3.Row
    out = []
    for row in conn.execute("SELECT * FROM images ORDER BY id"):
        record = dict(row)
        record["metadata"] = json.loads(record["metadata"])
        record["keywords"] = [
            k
            for (k,) in conn.execute(
                "SELECT keyword FROM keywords WHERE image_id = ?", (row["id"],)
            )
        ]
        out.append(record)
    conn.row_factory = None
    return out


def sql_ids(conn: sqlite3.Connection, text: str) -> set[int]:
    where, params = compile_filter(text, table="i")
    return {r[0] for r in conn.execute(f"SELECT i.id FROM images AS i WHERE {where}", params)}


def python_ids(conn: sqlite3.Connection, text: str) -> set[int]:
    return {r["id"] for r in records(conn) if evaluate_filter(text, r)}


@pytest.fixture
def db() -> sqlite3.Connection:
    return make_db(ROWS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {1, 2, 3}),
        ("width >= 800", {1, 2}),
        ("width > 600 AND format = 'PNG'", {2}),
        ("format IN ('JPEG', \"TIFF\")", {1, 3}),
        ("format NOT IN ('JPEG')", {2, 3}),
        ("width BETWEEN 700 AND 1000", {2}),
        ("width NOT BETWEEN 700 AND 1000", {1, 3}),
        ("path CONTAINS 'PHOTOS'", {1, 2}),
        ("title CONTAINS 'beach'", {1}),
        ("tags CONTAINS 'sea'", {1}),
        ("tags CONTAINS 2019", {1}),
        ("tags NOT CONTAINS 'trees'", {1}),
        ("keywords CONTAINS 'beach'", {1}),
        ("keywords CONTAINS 'HOLIDAY'", {1}),  # from the metadata list
        ("NOT keywords CONTAINS 'beach'", {2, 3}),
        ("camera.make = 'Canon' OR camera.make = 'Nikon'", {1, 2}),
        ("metadata.camera.iso < 400", {1}),
        ("rating = 3", {2}),  # the text "3" is not the number 3
        ("rating = '3'", {3}),
        ("rating != 3", {1, 3}),  # present and not equal
        ("NOT rating = 3", {1, 3}),
        ("title != 'Forest'", {1}),  # null title: predicate false
        ("NOT title = 'Forest'", {1, 3}),  # plain negation
        ("title IS NULL", {3}),
        ("title IS NOT NULL", {1, 2}),
        ("missing IS NULL", {1, 2, 3}),
        ("missing = 1 OR NOT missing = 1", {1, 2, 3}),
        ("flag = true", {3}),
        ("flag = 1", {3}),
        ("3 < rating", {1}),  # value on the left
        ("(width > 700 OR format = 'TIFF') AND NOT (rating >= 5)", {2, 3}),
        ("width > 700 and not format == 'PNG' or id = 3", {1, 3}),
        ("rating IN (5, '3')", {1, 3}),
        ("rating > -1.5e0", {1, 2}),
    ],
)
def test_filters_select_the_right_images(db, text, expected):
    assert sql_ids(db, text) == expected
    assert python_ids(db, text) == expected


def test_table_alias_default_and_validation(db):
    where, params = compile_filter("width > 700")
    assert "images.width" in where and params == [700]
    rows = db.execute(f"SELECT id FROM images WHERE {where}", params).fetchall()
    assert sorted(r[0] for r in rows) == [1, 2]
    with pytest.raises(ValueError):
        compile_filter("width > 1", table="images; DROP TABLE images")


def test_parse_tree_shape():
    tree = parse_filter("NOT a = 1 AND b = 2 OR c = 3")
    assert type(tree).__name__ == "Or"
    assert type(tree.items[0]).__name__ == "And"
    assert type(tree.items[0].items[0]).__name__ == "Not"


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("width >", 7, "expected a value"),
        ("width > 5 AND", 13, "expected a field name"),
        ("(width > 5", 10, "')'"),
        ("width BETWEEN 1 2", 16, "expected AND"),
        ("title = 'abc", 8, "unterminated"),
        ("keywords = 'x'", 0, "only CONTAINS"),
        ("width IS 5", 9, "expected NULL"),
        ("title = NULL", 8, "IS NULL"),
        ("1 = 1", 4, "expected a field name"),
        ("width 5", 6, "expected a comparison"),
        ("width > 5 width < 3", 10, "expected AND, OR"),
        ("width > 5x", 8, "malformed number"),
        ("camera. make = 1", 0, "malformed field name"),
        ("format IN ()", 11, "expected a value"),
        ("width = 99999999999999999999", 8, "out of range"),
        ("title = 'a' # comment", 12, "unexpected character"),
        ("width NOT = 1", 10, "expected BETWEEN, IN or CONTAINS"),
    ],
)
def test_errors_say_where_and_what_was_expected(text, position, fragment):
    with pytest.raises(QueryError) as error:
        compile_filter(text)
    assert error.value.position == position
    assert fragment in str(error.value)
    with pytest.raises(QueryError):
        evaluate_filter(text, {})


def test_deep_nesting_is_refused_cleanly():
    with pytest.raises(QueryError):
        compile_filter("(" * 500 + "width = 1" + ")" * 500)
    with pytest.raises(QueryError):
        compile_filter("NOT " * 500 + "width = 1")


@pytest.mark.parametrize(
    "text",
    [
        "title = 'x'' OR 1=1 --'",
        'title = "x\\" OR 1=1 --"',
        "title = 'Forest''); DROP TABLE images; --'",
        "path CONTAINS '%' OR path CONTAINS '_'",
        'keywords CONTAINS "x\') OR 1=1 --"',
    ],
)
def test_injection_in_values_is_just_text(db, text):
    assert sql_ids(db, text) == set() == python_ids(db, text)
    assert db.execute("SELECT count(*) FROM images").fetchone() == (3,)


@pytest.mark.parametrize(
    "text",
    [
        '"a) OR 1=1 --" = 1',
        "; DROP TABLE images",
        "title = 'x'; DROP TABLE images",
        'ti"tle = 1',
        'title" = 1 OR "1" = "1',
        "`title` = 1",
        "[title] = 1",
        "metadata.a') = 1",
        "width = 1 -- comment",
        "width = 1 OR 1=1",
        "width = 1 /* */",
        "json_extract(metadata, '$.a') = 1",
    ],
)
def test_injection_in_structure_is_refused(db, text):
    with pytest.raises(QueryError):
        compile_filter(text)
    assert db.execute("SELECT count(*) FROM images").fetchone() == (3,)
    assert db.execute("SELECT count(*) FROM keywords").fetchone() == (3,)


# -- property: SQL and Python agree on random filters over random rows --------------------------

TEXT = st.text(alphabet="aAbB é'\"\\%_", max_size=4)
NUMBER = st.one_of(st.integers(-3, 3), st.integers(-12, 12).map(lambda n: n / 4))
SCALAR = st.one_of(TEXT, NUMBER, st.booleans())
JSON_VALUE = st.one_of(
    st.none(), SCALAR, st.lists(st.one_of(TEXT, NUMBER, st.booleans()), max_size=3)
)


@st.composite
def metadata(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("title", "rating", "tags", "keywords"):
        if draw(st.booleans()):
            out[key] = draw(JSON_VALUE)
    if draw(st.booleans()):
        out["camera"] = draw(st.one_of(st.fixed_dictionaries({"make": JSON_VALUE}), SCALAR))
    if draw(st.integers(0, 3)) == 0:  # a key no filter can name: the index leaves it to JSON
        out[draw(st.sampled_from(["camera.make", "ti tle", "é", ""]))] = draw(SCALAR)
    return out


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 5))
    return [
        {
            "id": n + 1,
            "path": f"/{n}" + draw(st.sampled_from(["/a/x.jpg", "/b/Y.PNG", "/a/%_.gif"])),
            "width": draw(st.integers(-2, 3)),
            "height": 1,
            "format": draw(st.sampled_from(["JPEG", "PNG", "3"])),
            "metadata": draw(metadata()),
            "keywords": draw(st.lists(TEXT, max_size=2)),
        }
        for n in range(count)
    ]


def literal(draw: st.DrawFn, value: Any) -> str:
    if isinstance(value, bool):
        return draw(st.sampled_from(["true", "TRUE", "True"] if value else ["false", "FALSE"]))
    if isinstance(value, int | float):
        return repr(value)
    quote = draw(st.sampled_from(["'", '"']))
    out = []
    for ch in value:
        if ch == quote:
            out.append(draw(st.sampled_from([quote * 2, "\\" + quote])))
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    return quote + "".join(out) + quote


FIELDS = ["width", "format", "path", "title", "rating", "tags", "camera.make", "metadata.camera"]


@st.composite
def predicate(draw: st.DrawFn) -> str:
    field = draw(st.sampled_from(FIELDS + ["keywords"]))
    if field == "keywords":
        op = draw(st.sampled_from(["CONTAINS", "NOT CONTAINS", "contains"]))
        return f"keywords {op} {literal(draw, draw(TEXT))}"
    kind = draw(st.sampled_from(["cmp", "cmp", "flip", "between", "in", "contains", "null"]))
    if kind == "cmp":
        op = draw(st.sampled_from(["=", "==", "!=", "<>", "<", "<=", ">", ">="]))
        return f"{field} {op} {literal(draw, draw(SCALAR))}"
    if kind == "flip":
        op = draw(st.sampled_from(["=", "!=", "<", ">="]))
        return f"{literal(draw, draw(SCALAR))} {op} {field}"
    if kind == "between":
        neg = draw(st.sampled_from(["", "NOT "]))
        low, high = literal(draw, draw(SCALAR)), literal(draw, draw(SCALAR))
        return f"{field} {neg}BETWEEN {low} AND {high}"
    if kind == "in":
        neg = draw(st.sampled_from(["", "not "]))
        values = draw(st.lists(SCALAR, min_size=1, max_size=3))
        return f"{field} {neg}IN ({', '.join(literal(draw, v) for v in values)})"
    if kind == "contains":
        neg = draw(st.sampled_from(["", "NOT "]))
        return f"{field} {neg}CONTAINS {literal(draw, draw(SCALAR))}"
    return f"{field} IS {draw(st.sampled_from(['', 'NOT ']))}NULL"


def filters() -> st.SearchStrategy[str]:
    return st.recursive(
        predicate(),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["AND", "or"]), inner).map(
                lambda t: f"({t[0]}) {t[1]} ({t[2]})"
            ),
            inner.map(lambda t: f"NOT ({t})"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]} AND NOT {t[1]}"),
        ),
        max_leaves=6,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rows(), text=filters())
def test_sql_and_python_agree(data, text):
    conn = make_db(data)
    assert sql_ids(conn, text) == python_ids(conn, text), text


# -- the metadata index (schema migration 5) ----------------------------------------------------


def test_filters_read_the_metadata_index_not_the_json(db):
    """A filter on metadata is answered from `meta_values`: a value changed there behind the
    JSON's back changes the answer (so the index, not json_extract, decides), and the query
    plan searches the index instead of scanning every image."""
    assert sql_ids(db, "rating = 5") == python_ids(db, "rating = 5") != set()
    db.execute("UPDATE meta_values SET value = 6 WHERE key = 'rating' AND value = 5")
    assert sql_ids(db, "rating = 5") == set()
    sql, params = compile_filter_ids("rating = 6")
    plan = " ".join(r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "SEARCH meta_values USING PRIMARY KEY" in plan, plan


def test_index_follows_inserts_updates_and_deletes(db):
    db.execute("UPDATE images SET metadata = ? WHERE id = 1", (json.dumps({"rating": 42}),))
    db.execute("DELETE FROM images WHERE id = 2")
    for text in ("rating = 42", "rating > 0", "title IS NULL", "tags CONTAINS 'sea'"):
        assert sql_ids(db, text) == python_ids(db, text), text
    assert sql_ids(db, "rating = 42") == {1}
    left = {r[0] for r in db.execute("SELECT DISTINCT image_id FROM meta_values")}
    assert 2 not in left


def test_an_existing_catalog_is_indexed_by_the_migration():
    """A schema-4 catalog (no metadata index) gets every image's values on migration."""
    conn = sqlite3.connect(":memory:")
    for number in range(4):
        conn.executescript(MIGRATIONS[number])
    conn.execute("PRAGMA user_version = 4")
    plain = make_db(ROWS)
    columns = "id, path, size, mtime, sha256, width, height, format, metadata, added_at, updated_at"
    for row in plain.execute(f"SELECT {columns} FROM images"):
        conn.execute(f"INSERT INTO images ({columns}) VALUES ({', '.join('?' * 11)})", row)
    odd = {"a.b": 1, "title": "dotted"}
    conn.execute(
        "INSERT INTO images (path, size, mtime, sha256, width, height, format, metadata,"
        " added_at, updated_at) VALUES ('/odd.png', 1, 0, 'h', 1, 1, 'PNG', ?, 0, 0)",
        (json.dumps(odd),),
    )
    conn.executemany(
        "INSERT INTO keywords VALUES (?, ?, ?, ?)", plain.execute("SELECT * FROM keywords")
    )
    assert migrate(conn) == len(MIGRATIONS)
    for text in ("rating >= 4", "title CONTAINS 'dot'", "keywords CONTAINS 'holiday'", "a = 1"):
        assert sql_ids(conn, text) == python_ids(conn, text), text
    assert sql_ids(conn, "title CONTAINS 'dot'")  # the odd image, through the JSON fallback
