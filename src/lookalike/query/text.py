"""Search by words: keywords, model tags and metadata text, with visible query expansion.

The query is expanded (colour synonyms; semantic neighbours among the collection's own
keywords, found with the packaged sentence model) and every term is looked up in the FTS5
index with BM25 ranking. An image's text similarity is its best term: the term's weight (1 for
the user's own words, the expansion's strength for added ones) times its BM25 relevance
relative to the best image for that term. Distance = 100 x (1 - similarity); images that match
no term are 100 away, unless the collection's classifier gives them a zero-shot distance
(`query/zeroshot.py`): then the nearer of the two counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.query.colorwords import synonyms_of_term, terms_for_word
from lookalike.query.expansion import TEMPLATE, Embedder, Expansion, colour_expander, expand
from lookalike.query.zeroshot import ZeroShot
from lookalike.store.catalog import Catalog

COLOUR_SYNONYM_WEIGHT = 0.9  # a synonym is nearly, not exactly, what was asked
RELEVANCE_FLOOR = 0.6  # any match at all is worth more than BM25's spread between matches
_QUOTED = re.compile(r'"([^"]+)"')
_PREFIX = re.compile(r"\b(\w{2,})\*")


@dataclass
class TextMatch:
    ids: np.ndarray
    distances: np.ndarray
    explain: dict[str, Any] = field(default_factory=dict)


def fts_phrase(term: str, prefix: bool = False) -> str:
    """One FTS5 phrase with quotes escaped: user text never becomes FTS5 syntax."""
    return '"' + term.replace('"', '""') + '"' + ("*" if prefix else "")


def stored_embedder(catalog: Catalog, vocabulary: list[str]) -> Embedder:
    """Sentence embeddings that keep the vocabulary's vectors in the catalog: a collection's
    keywords are embedded once, not by every process that searches it. Query texts are embedded
    fresh and not stored (they would grow the table without bound)."""
    keep = {TEMPLATE.format(v.lower()) for v in vocabulary}

    def embed(texts: Sequence[str]) -> np.ndarray:
        from lookalike import semantic

        model = semantic.MODEL_NAME
        found = catalog.text_vectors([t for t in texts if t in keep], model)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            fresh = dict(zip(missing, semantic.embed(missing), strict=True))
            found.update(fresh)
            to_store = {t: v for t, v in fresh.items() if t in keep}
            if to_store:
                catalog.put_text_vectors(to_store, model)
        return (
            np.stack([found[t] for t in texts])
            if texts
            else np.zeros((0, semantic.DIM), np.float32)
        )

    return embed


def text_match(
    catalog: Catalog, text: str, *, semantic: bool = True, zero_shot: ZeroShot | None = None
) -> TextMatch:
    """Distances (0..100) from `text` to every image in the catalog; with `zero_shot`, an
    image's distance is the nearer of its keyword match and its ConSE distance."""
    phrases = _QUOTED.findall(text)
    prefixes = _PREFIX.findall(text)
    plain = _PREFIX.sub(" ", _QUOTED.sub(" ", text))
    vocabulary = catalog.keyword_vocabulary() if semantic else []
    expansion: Expansion = (
        expand(
            plain,
            vocabulary,
            colour_expander(terms_for_word, synonyms_of_term),
            embed=stored_embedder(catalog, vocabulary),
        )
        if plain.strip()
        else Expansion(text, ())
    )
    weighted: list[tuple[str, str, float]] = [(fts_phrase(p), p, 1.0) for p in phrases]
    weighted += [(fts_phrase(p, prefix=True), p + "*", 1.0) for p in prefixes]
    weighted += [(fts_phrase(t), t, 1.0) for t in expansion.original]
    for added in expansion.added:
        weight = COLOUR_SYNONYM_WEIGHT if added.source == "colour" else float(added.score)
        weighted.append((fts_phrase(added.term), added.term, weight))

    all_ids = np.array(
        [i for (i,) in catalog.query("SELECT id FROM images ORDER BY id")], dtype=np.int64
    )
    similarity = np.zeros(len(all_ids))
    matched_terms: dict[str, int] = {}
    for fts, label, weight in weighted:
        rows = catalog.query(
            "SELECT rowid, -bm25(search_text) FROM search_text WHERE search_text MATCH ?", (fts,)
        )
        matched_terms[label] = len(rows)
        if not rows:
            continue
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        relevance = np.array([max(r[1], 0.0) for r in rows])
        best = relevance.max() or 1.0
        value = weight * (RELEVANCE_FLOOR + (1 - RELEVANCE_FLOOR) * relevance / best)
        positions = np.searchsorted(all_ids, ids)
        valid = (positions < len(all_ids)) & (
            all_ids[np.minimum(positions, len(all_ids) - 1)] == ids
        )
        np.maximum.at(similarity, positions[valid], value[valid])
    distances = 100.0 * (1.0 - np.clip(similarity, 0.0, 1.0))
    zero_shot_info = None
    if zero_shot is not None and plain.strip():
        embed = stored_embedder(catalog, zero_shot.used_phrases())
        visual = np.full(len(all_ids), 100.0)
        positions = np.searchsorted(all_ids, zero_shot.ids)
        known = positions < len(all_ids)
        known[known] = all_ids[positions[known]] == zero_shot.ids[known]
        visual[positions[known]] = zero_shot.distances(plain.strip(), embed)[known]
        distances = np.minimum(distances, visual)
        zero_shot_info = {"images": int(known.sum()), "method": "ConSE over the CNN's classes"}
    explain = {
        "query": text,
        "terms": list(expansion.original) + phrases + [p + "*" for p in prefixes],
        "expanded": [{"term": a.term, "reason": a.reason} for a in expansion.added],
        "matches": matched_terms,
        "notes": list(expansion.notes),
    }
    if zero_shot_info:
        explain["zero_shot"] = zero_shot_info
    return TextMatch(all_ids, distances, explain)
