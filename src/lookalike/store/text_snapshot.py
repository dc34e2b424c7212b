"""The catalog's full-text side, rebuilt in memory from image records, for a store that has no
catalog.sqlite (the Milvus backend).

Text queries (`query.text.text_match`) rank by FTS5's BM25 over one text row per image (its
keywords and metadata strings, `catalog.search_text_of`). BM25 depends on every row of the
collection (document count, average length, how many rows hold a term), so a store that keeps
the same records gives the same relevance only over the same rows: this builds them as the
catalog does (same FTS5 table and tokenizer, the same keywords and metadata strings, keywords
in the order `index` writes them) in an in-memory SQLite database, and answers the few reads
`text_match` makes. Only a quoted phrase that spans two items of a row (the end of one keyword
and the start of the next) can tell the orders apart; the catalog's own order depends on how
an image was written (`import` keeps the metadata's order of keywords).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lookalike.store.catalog import search_text_of

# As catalog.sqlite's `search_text` (store/schema.py): one text column, rowid = image id.
SEARCH_TEXT_TABLE = (
    "CREATE VIRTUAL TABLE search_text USING fts5(text, tokenize = 'porter unicode61')"
)

Keyword = tuple[str, str, float]  # (keyword, source, score)


def catalog_words(keywords: Iterable[Keyword]) -> list[str]:
    """An image's keywords as `index` writes its catalog text row: one per (keyword, source),
    in the keywords table's primary-key order (keyword, then source). The order matters only
    to a quoted phrase spanning two keywords, which are adjacent tokens of the row."""
    return [word for word, _source in sorted({(k, s) for k, s, _score in keywords})]


class TextSnapshot:
    """What `text_match` reads from a catalog (images, full text, keyword vocabulary, sentence
    vectors), over records read once; `vectors` is the caller's cache of sentence vectors,
    kept across snapshots so the vocabulary is embedded once per process."""

    def __init__(
        self,
        records: Iterable[tuple[int, Mapping[str, Any], Sequence[Keyword]]],
        vectors: dict[tuple[str, str], np.ndarray] | None = None,
    ):
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        self._conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY)")
        self._conn.execute(SEARCH_TEXT_TABLE)
        vocabulary: set[str] = set()
        images, texts = [], []
        for image_id, metadata, keywords in records:
            words = catalog_words(keywords)
            vocabulary.update(words)
            images.append((int(image_id),))
            texts.append((int(image_id), search_text_of(words, metadata)))
        with self._conn:
            self._conn.executemany("INSERT INTO images(id) VALUES (?)", images)
            self._conn.executemany("INSERT INTO search_text(rowid, text) VALUES (?, ?)", texts)
        self._vocabulary = sorted(vocabulary)
        self._vectors = {} if vectors is None else vectors

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM images").fetchone()[0])

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def keyword_vocabulary(self) -> list[str]:
        return list(self._vocabulary)

    def text_vectors(self, texts: Iterable[str], model: str) -> dict[str, np.ndarray]:
        return {t: self._vectors[(t, model)] for t in texts if (t, model) in self._vectors}

    def put_text_vectors(self, vectors: Mapping[str, np.ndarray], model: str) -> None:
        self._vectors.update({(t, model): np.asarray(v, np.float32) for t, v in vectors.items()})

    def close(self) -> None:
        self._conn.close()
