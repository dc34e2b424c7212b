"""Query by index key: "the dominant colours are blue, then white".

The index key of Rachev et al. is the list of an image's colour terms ordered by the share of
pixels they cover. They note its weakness themselves: two images that look alike can have
nearly equal shares of two colours in opposite orders, and so different keys. Matching a key
query exactly would inherit that brittleness, so the score here is tolerant:

Rule. Query position i (0 = most dominant) asks for term t. In an image whose term shares are
h, t can sit at any rank from ``lo`` (the number of terms whose share exceeds h[t] + tolerance)
to ``hi`` (the number of terms whose share is at least h[t] - tolerance, minus one): terms
within `tolerance` of each other may come in either order. Position i scores 1 when i lies in
[lo, hi], 1 / (1 + d) when it is d ranks outside, and 0 when the term covers less than
`min_share` of the image. Positions are weighted 1, 1/2, 1/3, ... (the first colour matters
most) and the score is the weighted mean, in [0, 1]. Only the listed positions are
constrained: "blue then white" says nothing about the third colour. A colour word with several
readings (beige: brown or white) scores its best reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lookalike.errors import QueryError
from lookalike.features.perceptual import N_TERMS, TERM_INDEX, TERMS, index_key_terms
from lookalike.query.colorwords import parse_color, terms_for_word, words_with_positions

DEFAULT_TOLERANCE = 0.05
DEFAULT_MIN_SHARE = 0.01

# Words that carry no meaning for an index key: "the dominant colours are blue then white".
_FILLERS = frozenset(
    """the a an its it image images picture pictures photo photos key index dominant dominating
    predominant predominantly main mainly mostly colour colours color colors tone tones hue hues
    are is be then followed by after next and with first second third fourth fifth most more
    order in of that which has have than""".split()
)
_SEPARATORS = frozenset({",", ";", ".", ">", ":"})


@dataclass(frozen=True)
class IndexKeyQuery:
    """Terms wanted at the first positions of an image's index key, with their alternatives."""

    positions: tuple[tuple[str, ...], ...]
    tolerance: float = DEFAULT_TOLERANCE
    min_share: float = DEFAULT_MIN_SHARE

    @property
    def terms(self) -> tuple[str, ...]:
        """The most likely term of each position."""
        return tuple(alternatives[0] for alternatives in self.positions)

    def describe(self) -> str:
        return ", then ".join(" or ".join(alts) for alts in self.positions)

    def score(self, hists: np.ndarray) -> np.ndarray:
        """Match score in [0, 1] for term histograms (n, 11) (see the module docstring)."""
        return score_index_key(self.positions, hists, self.tolerance, self.min_share)


def parse_index_key(
    query: str | Sequence[str],
    tolerance: float = DEFAULT_TOLERANCE,
    min_share: float = DEFAULT_MIN_SHARE,
) -> IndexKeyQuery:
    """Read "blue then white", "dominant colours are navy, white" or ["blue", "white"]."""
    positions: list[tuple[str, ...]] = []
    where: list[int | None] = []
    if isinstance(query, str):
        tokens = words_with_positions(query)
        words = [w for w, _ in tokens]
        i = 0
        while i < len(tokens):
            word, position = tokens[i]
            if word in _FILLERS or word in _SEPARATORS:
                i += 1
                continue
            parsed = parse_color(words, i)
            if parsed is None:
                raise QueryError(f"did not understand {word!r}: expected a colour", position)
            terms, used = parsed
            positions.append(terms)
            where.append(position)
            i += used
    else:
        for n, item in enumerate(query):
            terms = terms_for_word(str(item))
            if not terms:
                raise QueryError(f"item {n} of the index key, {item!r}, is not a colour")
            positions.append(terms)
            where.append(None)
    if not positions:
        raise QueryError("an index key query needs at least one colour", 0)
    seen: set[str] = set()
    for alternatives, position in zip(positions, where, strict=True):
        if alternatives[0] in seen:
            raise QueryError(f"{alternatives[0]} appears twice in the index key", position)
        seen.add(alternatives[0])
    if not 0.0 <= tolerance < 1.0:
        raise ValueError("tolerance is a share difference in [0, 1)")
    return IndexKeyQuery(tuple(positions), tolerance, min_share)


def score_index_key(
    positions: Sequence[Sequence[str]] | Sequence[str],
    hists: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    min_share: float = DEFAULT_MIN_SHARE,
) -> np.ndarray:
    """Score histograms (n, 11) against wanted terms per position; vectorised over images."""
    hists = np.atleast_2d(np.asarray(hists, dtype=np.float64))
    if hists.shape[1] != N_TERMS:
        raise ValueError(f"expected term histograms (n, {N_TERMS}), got {hists.shape}")
    wanted = [(p,) if isinstance(p, str) else tuple(p) for p in positions]
    if not wanted:
        return np.zeros(len(hists), dtype=np.float64)
    total = np.zeros(len(hists), dtype=np.float64)
    weights = 0.0
    for rank, alternatives in enumerate(wanted):
        best = np.zeros(len(hists), dtype=np.float64)
        for term in alternatives:
            share = hists[:, TERM_INDEX[term]][:, None]
            lo = (hists > share + tolerance).sum(axis=1)
            hi = (hists >= share - tolerance).sum(axis=1) - 1
            off = np.maximum(np.maximum(lo - rank, rank - hi), 0)
            present = share[:, 0] >= max(min_share, 1e-12)
            best = np.maximum(best, np.where(present, 1.0 / (1.0 + off), 0.0))
        weight = 1.0 / (rank + 1)
        total += weight * best
        weights += weight
    return total / weights


def index_key_record(hist: np.ndarray, min_share: float = DEFAULT_MIN_SHARE) -> list[dict]:
    """An image's index key as shown with its record: terms by dominance, with their shares."""
    return index_key_records(np.asarray(hist, np.float64).ravel(), min_share)[0]


def index_key_records(hists: np.ndarray, min_share: float = DEFAULT_MIN_SHARE) -> list[list[dict]]:
    """`index_key_record` of many histograms (n, 11) at once (`index_key_terms`: one sort)."""
    hists = np.atleast_2d(np.asarray(hists, np.float64))
    return [
        [{"term": TERMS[i], "share": round(row[i], 4)} for i in terms]
        for row, terms in zip(hists.tolist(), index_key_terms(hists, min_share), strict=True)
    ]


__all__ = [
    "index_key_record",
    "index_key_records",
    "DEFAULT_MIN_SHARE",
    "DEFAULT_TOLERANCE",
    "TERMS",
    "IndexKeyQuery",
    "parse_index_key",
    "score_index_key",
]
