"""Colour-layout query parts (sketch, layout sentence, index key) as 0..100 distances, and
the fusion weights of a hybrid query's parts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.errors import QueryError, WeightsError
from lookalike.query.indexkey import parse_index_key
from lookalike.query.layout import parse_layout
from lookalike.query.sketch import QueryGrid, match_grid
from lookalike.scoring import parse_weights

PART_NAMES = ("image", "text", "sketch", "layout", "colors")
PER_IMAGE = "per_image"  # key of per-image measures in a part's info, moved onto each hit
SCORE_CHUNK = 8192  # images a part scores at once (`PerceptualRows.score`)


def as_grid(sketch: Any) -> QueryGrid:
    """A sketch in any accepted form -> QueryGrid (16x16; coarser grids are scaled up)."""
    if isinstance(sketch, QueryGrid):
        return sketch
    if isinstance(sketch, str):
        stripped = sketch.strip()
        if stripped.startswith("["):
            return QueryGrid.from_json(stripped)
        return QueryGrid.from_text(stripped)
    if isinstance(sketch, list | tuple):
        return QueryGrid.from_json(list(sketch))
    return QueryGrid.from_image(sketch)


def sketch_part(sketch: Any, hists: np.ndarray, matrices: np.ndarray):
    grid = as_grid(sketch)
    if grid.specified_count == 0:
        raise QueryError("the sketch has no coloured cell: colour at least one")
    match = match_grid(grid, matrices)
    info = {
        "grid": grid.to_json(),
        "specified_cells": grid.specified_count,
        "measure": "share of specified cells whose colour term matches the index matrix",
        PER_IMAGE: {
            "simple_matching": match.simple_matching,
            "jaccard": match.jaccard,
            "specified_share": match.specified_share,
        },
    }
    return 100.0 * (1.0 - match.specified_share), info


def layout_part(sentence: str, hists: np.ndarray, matrices: np.ndarray):
    layout = parse_layout(sentence)
    info = {"grid": layout.grid.to_json(), "render": layout.render(), "clauses": layout.explain()}
    return 100.0 * (1.0 - layout.score(matrices)), info


def colors_part(colors: str | Sequence[str], hists: np.ndarray, matrices: np.ndarray):
    key = parse_index_key(colors)
    return 100.0 * (1.0 - key.score(hists)), {"index_key": key.describe()}


PART_SCORERS: dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]] = {
    "sketch": sketch_part,
    "layout": layout_part,
    "colors": colors_part,
}


@dataclass(frozen=True)
class PerceptualRows:
    """Every image's term histogram and index matrix, for the parts that score the whole
    collection (sketch, layout, colours), in blocks as they are stored (an index's main rows
    in map order, its delta's rows), and where each image's row is: no gathered copy of the
    collection in id order, which cost seconds at 1M images after every write.

    `ids` ascending; `order[i]` is the row of `ids[i]` in the blocks one after the other
    (None: the blocks are already in id order). Rows no id points at (an index's dead
    rows) are scored and dropped."""

    ids: np.ndarray
    blocks: tuple[tuple[np.ndarray, np.ndarray], ...]  # (histograms, index matrices)
    order: np.ndarray | None = None

    @classmethod
    def of(cls, ids: np.ndarray, hists: np.ndarray, matrices: np.ndarray) -> PerceptualRows:
        """One block of rows for `ids` in any order."""
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], ((hists, matrices),), order)

    def score(self, part: str, value: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """A part's 0..100 distance per image of `ids`, and its info (per-image measures in
        the same order)."""
        scorer = PART_SCORERS[part]
        chunks = (
            [  # a chunk's temporaries stay in the CPU caches: layout 2-4x, sketch 3.6x
                (hists[start : start + SCORE_CHUNK], matrices[start : start + SCORE_CHUNK])
                for hists, matrices in self.blocks
                for start in range(0, len(hists), SCORE_CHUNK)
            ]
            or list(self.blocks[:1])
        )
        outs = [scorer(value, hists, matrices) for hists, matrices in chunks]
        distances = np.concatenate([d for d, _ in outs])
        info = outs[0][1]
        if PER_IMAGE in info:
            measures = {
                k: np.concatenate([o[1][PER_IMAGE][k] for o in outs]) for k in info[PER_IMAGE]
            }
            if self.order is not None:
                measures = {k: v[self.order] for k, v in measures.items()}
            info[PER_IMAGE] = measures
        return (distances if self.order is None else distances[self.order]), info


def normalise_part_weights(
    spec: str | Mapping[str, float] | None, present: list[str]
) -> dict[str, float]:
    """Weights of the parts present, 0..1, normalised to 1; parts not given weigh equally."""
    if spec is None and present:  # none given (most searches): equal
        return dict.fromkeys(present, 1.0 / len(present))
    given = parse_weights(spec)
    for name, value in given.items():
        if name not in PART_NAMES:
            raise WeightsError(f"unknown query part {name!r}; parts: {', '.join(PART_NAMES)}")
        if not 0.0 <= value <= 1.0:
            raise WeightsError(f"weight for part {name!r} must be between 0 and 1, got {value}")
    raw = {name: given.get(name, 1.0) for name in present}
    total = sum(raw.values())
    if total <= 0:
        raise WeightsError("at least one query part must have a weight above 0")
    return {name: value / total for name, value in raw.items() if value > 0}


def align(ids: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """values (one per id of `ids`) picked at `wanted` (a subset of ids). Parts give their
    ids ascending: sorted again only where they are not (argsort of 1M sorted ids: ~20 ms)."""
    values = np.asarray(values)
    if len(ids) > 1 and not bool(np.all(ids[:-1] < ids[1:])):
        order = np.argsort(ids)
        ids, values = ids[order], values[order]
    return values[np.searchsorted(ids, wanted)]
