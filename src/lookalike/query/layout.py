"""A limited English for colour layouts, turned into a query grid ("top mostly blue, ...").

Rachev et al. let users type "the up part is predominantly blue and the down part is
predominantly gray" and turn it into a query matrix. This module is that preprocessor: it reads
a sentence into clauses, each clause into a region, a quantity and a colour, and paints the
clauses in order onto a 16 x 16 grid (later clauses override earlier ones where they overlap).
The grid is shown back (`render_grid`) so the user sees what was understood.

Sentence = clauses joined by "and", "with", "but", "while", "plus", ",", ";" or ".".
Clause = in any order and with filler words ("the", "part", "is", "of", "in", "image", ...):

* a region (default: the whole image). top / up / upper, bottom / down / lower, left, right
  (halves); top/bottom/left/right third; centre / center / middle (the middle half both
  ways); corners: "top left corner" (a third by a third), "corners" (all four); border /
  edges / frame (a ring an eighth wide); whole / entire / everywhere / anywhere / overall /
  throughout / all over / background. Several regions in one clause intersect: "top left" is
  the top-left quarter, "the top half of the left third" what it says.
* a quantity. predominantly, mostly, mainly, entirely, all, ... (or nothing): every cell of
  the region. some, a little, a bit, partly, patches, ...: part of the region, shown as its
  middle half by rows and columns (every other cell where that misses the region, as for the
  border ring); when scoring, the colour may be anywhere in the region, as long as it covers
  as many cells as that part. no, not, without: a negative constraint, kept beside the grid.
* one colour, any word or phrase of `colorwords` ("navy", "light blue", "off-white"). A word
  with several readings (beige: brown or white) is drawn with its first reading, and a cell
  counts as matching for any of them.

A clause without a colour lends its region to the next clause ("top and bottom blue",
"the centre with some white"); at the end of a sentence it borrows the previous clause's
colour ("blue top and bottom"). A clause with only a colour (no region, no quantity) after a
clause with a colour shares that clause's region: "the top is blue and grey" is a *mixed*
region, its cells shared out between the colours (drawn interleaved; when scoring, each colour
may be anywhere in the region, as long as it covers its share of cells).

Relative positions: "blue above grey", "red left of green" (also over, below, under,
beneath, right of, to the left of, beside, next to) say where colours sit against each other,
not where in the frame: an image scores by the share of (A cell, B cell) pairs in that order,
times how present each colour is (fully from 8 of the 256 cells).

"or" gives alternatives: between colours of one clause ("top blue or grey": either counts),
or between whole sentences ("top blue and bottom grey or left red"), scored by the best
alternative. Anything else raises QueryError naming the word, its position and the words the
language knows.

Score (`LayoutQuery.score`): the share of specified cells whose term matches, minus the share
of negative cells that hold a forbidden term, clipped to [0, 1]. A query with only negative
clauses starts from 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.errors import QueryError
from lookalike.features.base import LOADED_KERNELS, lazy_njit
from lookalike.features.perceptual import MATRIX_SIZE, TERM_INDEX, TERMS
from lookalike.query.colorwords import parse_color, words_with_positions
from lookalike.query.sketch import CODES, UNSPECIFIED, QueryGrid

ALL, SOME, NONE = "all", "some", "none"

_Mask = Callable[[int], np.ndarray]


def _rows(size: int, start: int, stop: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[start:stop, :] = True
    return mask


def _thirds(size: int) -> tuple[int, int]:
    edges = np.linspace(0, size, 4).round().astype(int)
    return int(edges[1]), int(edges[2])


def _top(size: int) -> np.ndarray:
    return _rows(size, 0, size // 2)


def _bottom(size: int) -> np.ndarray:
    return _rows(size, size - size // 2, size)


def _left(size: int) -> np.ndarray:
    return _top(size).T.copy()


def _right(size: int) -> np.ndarray:
    return _bottom(size).T.copy()


def _top_third(size: int) -> np.ndarray:
    return _rows(size, 0, _thirds(size)[0])


def _bottom_third(size: int) -> np.ndarray:
    return _rows(size, _thirds(size)[1], size)


def _left_third(size: int) -> np.ndarray:
    return _top_third(size).T.copy()


def _right_third(size: int) -> np.ndarray:
    return _bottom_third(size).T.copy()


def _centre(size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    q = size // 4
    mask[q : size - q, q : size - q] = True
    return mask


def _whole(size: int) -> np.ndarray:
    return np.ones((size, size), dtype=bool)


def _border(size: int) -> np.ndarray:
    width = max(1, round(size / 8))
    mask = np.ones((size, size), dtype=bool)
    mask[width : size - width, width : size - width] = False
    return mask


def _corner(vertical: _Mask, horizontal: _Mask) -> _Mask:
    return lambda size: vertical(size) & horizontal(size)


def _corners(size: int) -> np.ndarray:
    return (_top_third(size) | _bottom_third(size)) & (_left_third(size) | _right_third(size))


_UP = ("top", "upper", "up")
_DOWN = ("bottom", "lower", "down")

# Region phrases (tuples of words) -> (name shown back, mask builder).
REGIONS: dict[tuple[str, ...], tuple[str, _Mask]] = {}
for _word in _UP:
    REGIONS[(_word,)] = ("top half", _top)
    REGIONS[(_word, "half")] = ("top half", _top)
    REGIONS[(_word, "third")] = ("top third", _top_third)
for _word in _DOWN:
    REGIONS[(_word,)] = ("bottom half", _bottom)
    REGIONS[(_word, "half")] = ("bottom half", _bottom)
    REGIONS[(_word, "third")] = ("bottom third", _bottom_third)
for _word, _half, _third in (("left", _left, _left_third), ("right", _right, _right_third)):
    REGIONS[(_word,)] = (f"{_word} half", _half)
    REGIONS[(_word, "half")] = (f"{_word} half", _half)
    REGIONS[(_word, "third")] = (f"{_word} third", _third)
for _words, _vertical in ((_UP, _top_third), (_DOWN, _bottom_third)):
    for _word in _words:
        for _side, _horizontal in (("left", _left_third), ("right", _right_third)):
            _name = f"{_words[0]}-{_side} corner"
            REGIONS[(_word, _side, "corner")] = (_name, _corner(_vertical, _horizontal))
            REGIONS[(_side, _word, "corner")] = (_name, _corner(_vertical, _horizontal))
for _word in ("centre", "center", "middle", "central", "centrally"):
    REGIONS[(_word,)] = ("centre", _centre)
for _word in ("border", "borders", "edge", "edges", "frame", "margins", "periphery"):
    REGIONS[(_word,)] = ("border", _border)
REGIONS[("corners",)] = ("corners", _corners)
REGIONS[("four", "corners")] = ("corners", _corners)
for _words in (
    ("whole",),
    ("entire",),
    ("everywhere",),
    ("anywhere",),
    ("overall",),
    ("throughout",),
    ("background",),
    ("all", "over"),
    ("all", "around"),
):
    REGIONS[_words] = ("whole image", _whole)

_QUANTITIES: dict[tuple[str, ...], str] = {
    (w,): ALL
    for w in """predominantly predominately predominant mostly mainly largely entirely all
    completely fully totally wholly primarily chiefly dominantly dominated mostly almost
    uniformly solid solidly plain""".split()
}
_QUANTITIES.update(
    {
        (w,): SOME
        for w in """some little bit bits partly partially patch patches spot spots touch hint
        dash splash somewhat slightly few speck specks traces trace""".split()
    }
)
_QUANTITIES.update({(w,): NONE for w in "no not none never lacks lacking free".split()})

_FILLERS = frozenset(
    """the a an is are be being was of in on at to image images picture pictures photo photos
    part parts area areas region regions side sides portion section sections has have having
    there it its colour colours color colors coloured colored should must which that select
    find show me give where whose half way from towards toward by one ones just""".split()
) | {":", "!"}
_JOINERS = frozenset({"and", "with", "but", "while", "whereas", "plus", "also", ",", ";", "."})

_PHRASES: dict[tuple[str, ...], tuple[str, object]] = {}
_PHRASES.update({k: ("quantity", v) for k, v in _QUANTITIES.items()})
_PHRASES.update({k: ("region", v) for k, v in REGIONS.items()})  # regions win on overlap
_LONGEST = max(len(k) for k in _PHRASES)

ABOVE, LEFT_OF, BESIDE = "above", "left of", "beside"
# Relation phrase -> (relation, whether the sides swap): "A below B" is "B above A".
RELATIONS: dict[tuple[str, ...], tuple[str, bool]] = {
    ("above",): (ABOVE, False),
    ("over",): (ABOVE, False),
    ("below",): (ABOVE, True),
    ("under",): (ABOVE, True),
    ("beneath",): (ABOVE, True),
    ("underneath",): (ABOVE, True),
    ("left", "of"): (LEFT_OF, False),
    ("to", "the", "left", "of"): (LEFT_OF, False),
    ("right", "of"): (LEFT_OF, True),
    ("to", "the", "right", "of"): (LEFT_OF, True),
    ("beside",): (BESIDE, False),
    ("next", "to"): (BESIDE, False),
}
PRESENT_CELLS = 8  # a colour is fully present in a relation from 8 of the 256 cells
_OR = "or"

LAYOUT_WORDS: frozenset[str] = frozenset(
    w for phrase in [*_PHRASES, *RELATIONS] for w in phrase if w not in _FILLERS
) | {"without", _OR}
"""Words that make a text a layout sentence (for the one query box)."""


def known_words() -> str:
    """The vocabulary, for error messages: what the user may type instead."""
    regions = sorted({w for k in REGIONS for w in k})
    quantities = sorted({w for k in _QUANTITIES for w in k})
    relations = sorted({" ".join(k) for k in RELATIONS})
    return (
        "regions: " + ", ".join(regions)
        + "; amounts: " + ", ".join(quantities)
        + "; relations: " + ", ".join(relations)
        + "; joiners: and, with, or, without, ','"
        + "; colours: " + ", ".join(TERMS)
        + " and their shades and synonyms (navy, crimson, beige, ...)"
    )  # fmt: skip


@dataclass(frozen=True, eq=False)
class Clause:
    """One understood piece of the sentence, for explaining the query back."""

    text: str  # the words of the sentence this clause came from
    position: int  # character offset of its first word
    region: str  # e.g. "top half", "top half & left half", "whole image"
    quantity: str  # ALL, SOME or NONE
    terms: tuple[str, ...]  # the colour's readings, most likely first
    mask: np.ndarray = field(repr=False)  # (size, size) bool: the region
    share: tuple[int, int] | None = None  # (j, m): the j-th of m colours of a mixed region

    def describe(self) -> str:
        colour = " or ".join(self.terms)
        amount = {ALL: "", SOME: "some ", NONE: "no "}[self.quantity]
        if self.share is not None:
            amount = f"1/{self.share[1]} (mixed) "
        return f"{self.region}: {amount}{colour}"


@dataclass(frozen=True)
class Relation:
    """ "A above B" / "A left of B" / "A beside B": colours placed against each other."""

    text: str
    first: tuple[str, ...]
    kind: str  # ABOVE, LEFT_OF or BESIDE
    second: tuple[str, ...]

    def describe(self) -> str:
        return f"{' or '.join(self.first)} {self.kind} {' or '.join(self.second)} (anywhere)"

    def score(self, stack: np.ndarray) -> np.ndarray:
        """(n, size, size) matrices -> [0, 1]: ordered share of cell pairs x presence of both."""
        if _compiled(stack):
            first = _lookup([TERM_INDEX[t] for t in self.first])
            second = _lookup([TERM_INDEX[t] for t in self.second])
            kind = _RELATION_KIND[self.kind]
            return _relation_scores(stack, first, second, kind, float(PRESENT_CELLS))
        a = _member(stack, [TERM_INDEX[t] for t in self.first])
        b = _member(stack, [TERM_INDEX[t] for t in self.second])
        if self.kind == BESIDE:
            order = np.maximum(_order(a, b, axis=1), _order(b, a, axis=1))
        else:
            order = _order(a, b, axis=2 if self.kind == ABOVE else 1)
        present = np.minimum(1.0, a.sum(axis=(1, 2)) / PRESENT_CELLS) * np.minimum(
            1.0, b.sum(axis=(1, 2)) / PRESENT_CELLS
        )
        return order * present


_RELATION_KIND = {ABOVE: 0, LEFT_OF: 1, BESIDE: 2}


def load_layout_kernels() -> None:
    """Compile (or load from numba's cache) the layout kernels now and score with them from
    then on: at 1M images they score a relation in ~0.1 s against numpy's 1.2-1.9 s, and a
    clause in ~0.05 s against ~0.2 s. A one-off process keeps numpy: loading numba costs it
    1.3 s, more than a search of 100k images gains."""
    stack = np.zeros((1, 2, 2), np.int8)
    lookup = np.zeros(256, np.bool_)
    _masked_counts(stack, lookup, np.arange(4))
    _relation_scores(stack, lookup, lookup, 0, float(PRESENT_CELLS))
    LOADED_KERNELS["layout"] = True


def _compiled(stack: np.ndarray) -> bool:
    return LOADED_KERNELS["layout"] and stack.dtype == np.int8 and stack.flags.c_contiguous


def _lookup(terms: Any) -> np.ndarray:
    """A bool per int8 value (as uint8: 0..255) saying whether it is one of `terms`."""
    table = np.zeros(256, np.bool_)
    table[np.asarray(terms, np.int64) & 0xFF] = True
    return table


def _count_in(stack: np.ndarray, terms: Any, mask: np.ndarray) -> np.ndarray:
    """Per matrix, the cells inside `mask` that hold one of `terms` (int64)."""
    if _compiled(stack):
        return _masked_counts(stack, _lookup(terms), np.flatnonzero(mask))
    return (_member(stack, terms) & mask).sum(axis=(1, 2))


@lazy_njit(cache=True, nogil=True)
def _masked_counts(stack: np.ndarray, lookup: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """`_count_in` in one pass over the mask's cells (`cells`: their flat positions) of
    every matrix (numpy: a comparison per term, an and, and a sum of bools over two axes,
    each a pass of its own over all 256 cells)."""
    count = stack.shape[0]
    flat = stack.reshape(count, -1)
    out = np.zeros(count, np.int64)
    for i in range(count):
        found = 0
        for cell in cells:
            found += lookup[np.uint8(flat[i, cell])]
        out[i] = found
    return out


@lazy_njit(cache=True, nogil=True)
def _ordered_share(a_lines: np.ndarray, b_lines: np.ndarray) -> float:
    """`_order` of one matrix from its per-line counts (whole numbers: every sum is exact,
    as numpy's are, so the share is the same float)."""
    after = 0.0
    ordered = 0.0
    a_total = 0.0
    b_total = 0.0
    for line in range(len(a_lines) - 1, -1, -1):
        ordered += a_lines[line] * after
        after += b_lines[line]
        a_total += a_lines[line]
        b_total += b_lines[line]
    total = a_total * b_total
    return ordered / total if total > 0 else 0.0


@lazy_njit(cache=True, nogil=True)
def _relation_scores(
    stack: np.ndarray, first: np.ndarray, second: np.ndarray, kind: int, present_cells: float
) -> np.ndarray:
    """`Relation.score` in one pass over the matrices: per-row (kind 0: above) or per-column
    (1: left of, 2: beside, both ways) counts of both colours, then the ordered share and
    the presence. The same values as numpy's, bit for bit: all sums are of whole numbers."""
    count, rows, cols = stack.shape
    out = np.empty(count, np.float64)
    lines = rows if kind == 0 else cols
    a_lines, b_lines = np.empty(lines), np.empty(lines)
    for i in range(count):
        a_lines[:] = 0.0
        b_lines[:] = 0.0
        for r in range(rows):
            a_row = 0
            b_row = 0
            for c in range(cols):
                value = np.uint8(stack[i, r, c])
                a_here = first[value]
                b_here = second[value]
                if kind != 0:
                    a_lines[c] += a_here
                    b_lines[c] += b_here
                a_row += a_here
                b_row += b_here
            if kind == 0:
                a_lines[r] = a_row
                b_lines[r] = b_row
        if kind == 2:
            order = max(_ordered_share(a_lines, b_lines), _ordered_share(b_lines, a_lines))
        else:
            order = _ordered_share(a_lines, b_lines)
        a_count = a_lines.sum()
        b_count = b_lines.sum()
        out[i] = order * (min(1.0, a_count / present_cells) * min(1.0, b_count / present_cells))
    return out


def _member(stack: np.ndarray, terms: Any) -> np.ndarray:
    """Which cells of `stack` hold one of `terms`: for int8 matrices and a few terms, one
    comparison per term (np.isin took a sort-based path on them: 88% of a layout query's
    time at 1M images)."""
    values = np.unique(np.asarray(terms, np.int64))
    if stack.dtype != np.int8 or len(values) > 4:
        return np.isin(stack, values)
    hit = stack == values[0]  # a few vectorised comparisons: ~10x a table look-up's speed
    for value in values[1:]:
        hit |= stack == value
    return hit


def _order(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """Share of (a cell, b cell) pairs whose a cell comes strictly first along rows (axis=2:
    counts per row, so 'first' = higher up) or columns (axis=1: further left)."""
    a_lines = a.sum(axis=axis).astype(np.float64)  # (n, size) per row (or column)
    b_lines = b.sum(axis=axis).astype(np.float64)
    b_after = b_lines[:, ::-1].cumsum(axis=1)[:, ::-1] - b_lines  # b strictly after each line
    ordered = (a_lines * b_after).sum(axis=1)
    total = a_lines.sum(axis=1) * b_lines.sum(axis=1)
    return np.divide(ordered, total, out=np.zeros_like(ordered), where=total > 0)


@dataclass(frozen=True, eq=False)
class LayoutQuery:
    """A parsed layout sentence: the grid to match, its negative constraints and its clauses."""

    text: str
    grid: QueryGrid
    negatives: list[tuple[str, np.ndarray]]  # (forbidden term, cell mask), one per term
    clauses: tuple[Clause, ...]
    # Per positive clause: (term indices, cells it pins, cells where its colour may count,
    # whether it is partial); per negative clause: (term indices, mask).
    _positive: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, bool], ...] = field(repr=False)
    _negative: tuple[tuple[np.ndarray, np.ndarray], ...] = field(repr=False)
    relations: tuple[Relation, ...] = ()
    alternatives: tuple[LayoutQuery, ...] = ()  # "... or ...": the best one counts

    def score(self, matrices: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] for index matrices (n, size, size) (or one (size, size))."""
        if self.alternatives:
            return np.max([alt.score(matrices) for alt in self.alternatives], axis=0)
        stack = np.asarray(matrices)
        if stack.ndim == 2:
            stack = stack[None]
        if stack.shape[1:] != self.grid.cells.shape:
            raise ValueError(
                f"index matrices {stack.shape[1:]} and the layout grid "
                f"{self.grid.cells.shape} differ in size"
            )
        n = len(stack)
        matched = np.zeros(n, dtype=np.float64)
        pinned = 0
        for terms, cells, region, partial in self._positive:
            count = int(cells.sum())
            if count == 0:
                continue
            pinned += count
            if partial:
                matched += np.minimum(count, _count_in(stack, terms, region))
            else:
                matched += _count_in(stack, terms, cells)
        positive = matched / pinned if pinned else np.ones(n, dtype=np.float64)
        forbidden = 0
        hits = np.zeros(n, dtype=np.float64)
        for terms, mask in self._negative:
            forbidden += int(mask.sum())
            hits += _count_in(stack, terms, mask)
        penalty = hits / forbidden if forbidden else 0.0
        parts = [np.clip(positive - penalty, 0.0, 1.0)] if self.clauses else []
        parts += [relation.score(stack) for relation in self.relations]
        return np.mean(parts, axis=0)

    def render(self, legend: bool = True) -> str:
        if self.alternatives:
            return "\nor\n".join(alt.render(legend) for alt in self.alternatives)
        lines = [render_grid(self.grid, self.negatives, legend=legend)] if self.clauses else []
        lines += [relation.describe() for relation in self.relations]
        return "\n".join(lines)

    def explain(self) -> list[str]:
        if self.alternatives:
            return [" | ".join(alt.explain()) for alt in self.alternatives]
        return [clause.describe() for clause in self.clauses] + [
            relation.describe() for relation in self.relations
        ]


def render_grid(
    grid: QueryGrid | np.ndarray,
    negatives: Sequence[tuple[str, np.ndarray]] = (),
    legend: bool = True,
) -> str:
    """The grid as text: one code letter per cell (CODES), '.' for cells left open.

    Open cells under a negative constraint show the forbidden term's letter in lower case
    ('r' = no red here), or 'x' where several terms are forbidden; cells that ask for a colour
    show that colour even where another one is ruled out. A legend of the letters (and of every
    ruled-out colour) follows unless `legend` is False.
    """
    cells = grid.cells if isinstance(grid, QueryGrid) else np.asarray(grid)
    letters = np.full(cells.shape, ".", dtype="<U1")
    forbidden: dict[str, None] = {}
    for term, mask in negatives:
        spot = np.asarray(mask, dtype=bool) & (cells < 0)
        letter = CODES[term].lower()
        current = letters[spot]
        letters[spot] = np.where((current == ".") | (current == letter), letter, "x")
        forbidden[term] = None
    used: dict[str, None] = {}
    for index in np.unique(cells[cells >= 0]):
        used[TERMS[int(index)]] = None
    for r, c in zip(*np.nonzero(cells >= 0), strict=True):
        letters[r, c] = CODES[TERMS[int(cells[r, c])]]
    lines = [" ".join(row) for row in letters]
    if legend:
        parts = [f"{CODES[t]} = {t}" for t in TERMS if t in used]
        parts += [f"{CODES[t].lower()} = not {t}" for t in TERMS if t in forbidden]
        if (letters == "x").any():
            parts.append("x = several colours ruled out")
        parts.append(". = any colour")
        lines.append(", ".join(parts))
    return "\n".join(lines)


@dataclass
class _Part:
    """A clause while it is being read."""

    position: int
    end: int
    masks: list[tuple[str, np.ndarray]] = field(default_factory=list)
    quantity: str | None = None
    terms: tuple[str, ...] | None = None
    relation: Relation | None = None

    def region(self, size: int) -> tuple[str, np.ndarray] | None:
        if not self.masks:
            return None
        mask = np.logical_and.reduce([m for _, m in self.masks])
        names = " & ".join(dict.fromkeys(name for name, _ in self.masks))
        if not mask.any():
            raise QueryError(f"the regions {names} do not overlap", self.position)
        return names, mask


_Tokens = list[tuple[str, int]]


def _split(tokens: _Tokens) -> list[_Tokens]:
    """Words grouped into clauses; 'without' ends a clause and starts a negative one."""
    groups: list[_Tokens] = [[]]
    for word, position in tokens:
        if word in _JOINERS:
            groups.append([])
        elif word == "without":
            groups.append([("no", position)])
        else:
            groups[-1].append((word, position))
    return [g for g in groups if g]


def _alternatives(tokens: _Tokens) -> list[_Tokens]:
    """Split at each 'or' that is not between two colours of one clause ("blue or grey")."""
    words = [w for w, _ in tokens]
    out: list[_Tokens] = [[]]
    for i, token in enumerate(tokens):
        if token[0] == _OR and not _colour_alternative(words, i):
            out.append([])
        else:
            out[-1].append(token)
    return out


def _colour_alternative(words: list[str], i: int) -> bool:
    """Whether the 'or' at words[i] joins a colour to the colour just before it."""
    j = i + 1
    while j < len(words) and words[j] in _FILLERS:
        j += 1
    parsed = parse_color(words, j)
    if parsed is None or i == 0:
        return False
    after = j + parsed[1]
    return after == len(words) or words[after] in _JOINERS or words[after] == _OR


def _unknown(word: str, position: int) -> QueryError:
    return QueryError(f"did not understand {word!r}; the layout language knows {known_words()}",
                      position)  # fmt: skip


def _relation_at(words: list[str]) -> tuple[int, int, tuple[str, bool]] | None:
    """(start, length, relation) of a relation phrase with a colour on each side, if any."""
    for i in range(1, len(words)):
        for length in (4, 2, 1):
            meaning = RELATIONS.get(tuple(words[i : i + length]))
            if meaning is None:
                continue
            before = any(parse_color(words, j) for j in range(i))
            after = any(parse_color(words, j) for j in range(i + length, len(words)))
            if before and after:
                return i, length, meaning
    return None


def _read_relation(tokens: _Tokens, text: str, size: int) -> _Part | None:
    words = [w for w, _ in tokens]
    found = _relation_at(words)
    if found is None:
        return None
    start, length, (kind, swap) = found
    sides = [tokens[:start], tokens[start + length :]]
    colours = []
    for side in sides:
        part = _read_clause(side, text, size)
        if part.masks or part.relation is not None or part.terms is None:
            raise QueryError(
                "a relative position takes one colour on each side and no region "
                "(e.g. 'blue above grey')",
                side[0][1],
            )
        colours.append(part.terms)
    if set(colours[0]) & set(colours[1]):
        raise QueryError("a relative position needs two different colours", tokens[0][1])
    first, second = (colours[1], colours[0]) if swap else (colours[0], colours[1])
    end = tokens[-1][1] + len(tokens[-1][0])
    relation = Relation(text[tokens[0][1] : end], first, kind, second)
    return _Part(position=tokens[0][1], end=end, relation=relation)


def _read_clause(tokens: _Tokens, text: str, size: int) -> _Part:
    relation = _read_relation(tokens, text, size)
    if relation is not None:
        return relation
    words = [w for w, _ in tokens]
    part = _Part(position=tokens[0][1], end=tokens[-1][1] + len(tokens[-1][0]))
    i = 0
    alternative = False
    while i < len(tokens):
        word, position = tokens[i]
        for length in range(min(_LONGEST, len(words) - i), 0, -1):
            meaning = _PHRASES.get(tuple(words[i : i + length]))
            if meaning is not None:
                break
        else:
            meaning, length = None, 1
        if meaning is not None:
            kind, value = meaning
            if kind == "region":
                name, build = value  # type: ignore[misc]
                part.masks.append((name, build(size)))
            else:  # "not mostly red" is a ban; "almost all" stays all
                rank = {None: 0, ALL: 1, SOME: 2, NONE: 3}
                if rank[value] > rank[part.quantity]:  # type: ignore[index]
                    part.quantity = value  # type: ignore[assignment]
            i += length
            continue
        if word == _OR and part.terms is not None:
            alternative = True
            i += 1
            continue
        if word in _FILLERS:
            i += 1
            continue
        colour = parse_color(words, i)
        if colour is None and any(word in phrase for phrase in RELATIONS):
            raise QueryError(
                f"{word!r} places one colour against another: say e.g. 'blue {word} grey'",
                position,
            )
        if colour is None:
            raise _unknown(word, position)
        if part.terms is not None and not alternative:
            raise QueryError(
                f"a second colour {word!r} in one clause: say 'blue and {word}' for a mixed "
                f"region, 'blue or {word}' for either, or give each colour its region",
                position,
            )
        terms, used = colour
        part.terms = terms if part.terms is None else (*part.terms, *terms)
        alternative = False
        i += used
    return part


def _centre_part(mask: np.ndarray) -> np.ndarray:
    """The middle half (by rows and columns) of a region; every other cell if that misses it."""
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    height = rows[-1] - rows[0] + 1
    width = cols[-1] - cols[0] + 1
    r0 = rows[0] + height // 4
    c0 = cols[0] + width // 4
    sub = np.zeros_like(mask)
    sub[r0 : r0 + max(1, -(-height // 2)), c0 : c0 + max(1, -(-width // 2))] = True
    sub &= mask
    if sub.sum() * 4 < mask.sum() * 0.5:  # a ring or a sliver: spread the part instead
        r, c = np.indices(mask.shape)
        sub = mask & ((r + c) % 2 == 0)
    return sub


def parse_layout(text: str, size: int = MATRIX_SIZE) -> LayoutQuery:
    """Parse a layout sentence into a LayoutQuery (see the module docstring for the language)."""
    tokens = words_with_positions(text)
    alternatives = [alt for alt in _alternatives(tokens)]
    if len(alternatives) > 1:
        if not all(alternatives):
            raise QueryError("'or' needs something on each side", tokens[0][1] if tokens else 0)
        queries = tuple(_parse_tokens(text, alt, size) for alt in alternatives)
        first = queries[0]
        return LayoutQuery(
            text=text,
            grid=first.grid,
            negatives=first.negatives,
            clauses=tuple(c for q in queries for c in q.clauses),
            _positive=(),
            _negative=(),
            relations=tuple(r for q in queries for r in q.relations),
            alternatives=queries,
        )
    return _parse_tokens(text, tokens, size)


def _parse_tokens(text: str, tokens: _Tokens, size: int) -> LayoutQuery:
    parts = [_read_clause(group, text, size) for group in _split(tokens)]
    relations = tuple(p.relation for p in parts if p.relation is not None)
    parts = [p for p in parts if p.relation is None]
    if not any(p.terms for p in parts) and not relations:
        if parts:
            raise QueryError("no colour given: say which colour goes where", parts[0].position)
        raise QueryError("empty layout query: describe where which colours are", 0)

    # Colourless clauses lend their region to the next clause, or borrow the previous colour.
    resolved: list[_Part] = []
    pending: _Part | None = None
    for part in parts:
        if part.terms is None:
            if not part.masks and part.quantity is None:
                continue  # only filler words
            if pending is None:
                pending = part
            else:
                pending.masks = _union(pending, part, size)
                pending.quantity = part.quantity or pending.quantity
                pending.end = part.end
            continue
        if pending is not None:
            if pending.masks:
                part.masks = _union(pending, part, size) if part.masks else pending.masks
            part.quantity = part.quantity or pending.quantity
            part.position = pending.position
            pending = None
        resolved.append(part)
    if pending is not None:
        if not resolved:
            raise QueryError("no colour given: say which colour goes where", pending.position)
        previous = resolved[-1]
        pending.terms = previous.terms
        pending.quantity = pending.quantity or previous.quantity
        resolved.append(pending)

    # A bare colour after a coloured clause shares that clause's region: a mixed region.
    groups: list[list[_Part]] = []
    for part in resolved:
        bare = not part.masks and part.quantity is None
        if bare and groups and (groups[-1][0].quantity or ALL) == ALL:
            groups[-1].append(part)
        else:
            groups.append([part])

    clauses: list[Clause] = []
    for group in groups:
        head = group[0]
        region = head.region(size) or ("whole image", _whole(size))
        for j, part in enumerate(group):
            assert part.terms is not None
            clauses.append(
                Clause(
                    text=text[part.position : part.end],
                    position=part.position,
                    region=region[0],
                    quantity=head.quantity or ALL,
                    terms=part.terms,
                    mask=region[1],
                    share=(j, len(group)) if len(group) > 1 else None,
                )
            )
    return _paint(text, clauses, size, relations)


def _union(first: _Part, second: _Part, size: int) -> list[tuple[str, np.ndarray]]:
    """Regions of two clauses joined by 'and': either one (a clause's own regions intersect)."""
    a = first.region(size) or ("whole image", _whole(size))
    b = second.region(size) or ("whole image", _whole(size))
    return [(f"{a[0]} + {b[0]}", a[1] | b[1])]


def _mixed_share(clause: Clause) -> np.ndarray:
    """The cells of a mixed region drawn with this clause's colour: diagonal stripes."""
    assert clause.share is not None
    j, m = clause.share
    r, c = np.indices(clause.mask.shape)
    return clause.mask & ((r + c) % m == j)


def _paint(
    text: str, clauses: list[Clause], size: int, relations: tuple[Relation, ...] = ()
) -> LayoutQuery:
    """Paint clauses in order; later ones override earlier ones where they overlap."""
    cells = np.full((size, size), UNSPECIFIED, dtype=np.int8)
    owner = np.full((size, size), -1, dtype=np.int64)
    shown: list[np.ndarray | None] = []
    negatives: list[list] = []  # [term indices, mask, clause number]
    for number, clause in enumerate(clauses):
        indices = np.array([TERM_INDEX[t] for t in clause.terms], dtype=np.int8)
        if clause.quantity == NONE:
            clear = clause.mask & np.isin(cells, indices)
            cells[clear] = UNSPECIFIED
            owner[clear] = -1
            negatives.append([indices, clause.mask.copy(), number])
            shown.append(None)
            continue
        if clause.share is not None:
            part = _mixed_share(clause)
        else:
            part = clause.mask if clause.quantity == ALL else _centre_part(clause.mask)
        if clause.quantity == SOME:
            # "some white in the centre" says the centre is partly white and no longer vouches
            # for what an earlier clause put there: the rest of the region is left open.
            release = clause.mask & ~part & (owner >= 0)
            cells[release] = UNSPECIFIED
            owner[release] = -1
        cells[part] = indices[0]
        owner[part] = number
        for negative in negatives:  # asking for a colour lifts an earlier ban on it there
            if np.isin(negative[0], indices).any():
                negative[1] &= ~part
        shown.append(part)

    positive = []
    for number, clause in enumerate(clauses):
        if clause.quantity == NONE:
            continue
        later = np.zeros((size, size), dtype=bool)
        for other in range(number + 1, len(clauses)):
            if clauses[other].share is not None and clauses[other].mask is clause.mask:
                continue  # colours of one mixed region share it, none overrides another
            if shown[other] is not None:
                later |= shown[other]  # type: ignore[operator]
        for indices, mask, at in negatives:
            if at > number and np.isin(indices, TERM_INDEX[clause.terms[0]]).any():
                later |= mask
        indices = np.array([TERM_INDEX[t] for t in clause.terms], dtype=np.int8)
        partial = clause.quantity == SOME or clause.share is not None
        positive.append((indices, owner == number, clause.mask & ~later, partial))
    negative_masks = tuple((n[0], n[1]) for n in negatives if n[1].any())
    listed = [(TERMS[int(i)], mask.copy()) for indices, mask in negative_masks for i in indices]
    return LayoutQuery(
        text=text,
        grid=QueryGrid(cells),
        negatives=listed,
        clauses=tuple(clauses),
        _positive=tuple(positive),
        _negative=negative_masks,
        relations=relations,
    )


__all__ = [
    "ALL",
    "NONE",
    "REGIONS",
    "SOME",
    "LAYOUT_WORDS",
    "RELATIONS",
    "Clause",
    "LayoutQuery",
    "Relation",
    "known_words",
    "parse_layout",
    "render_grid",
]
