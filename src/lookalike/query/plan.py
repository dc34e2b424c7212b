"""The query planner: from a query's parts to ranked hits, below the `Collection` façade.

Two stages for the image part. Stage one asks each attribute that carries weight for
candidates near the query (`candidates` x k from its index, exact or approximate); stage two
computes the exact 0..100 distance of every attribute on the union of candidates only (exact
vectors from the memory-mapped store) and fuses them with the weights. The result equals the
exact ranking whenever the true neighbours are among the candidates, which `lookalike tune`
measures. The exact plan (every image) is used when every weighted attribute has an exact
index, when all results are asked for (no top-k), or when a filter admits so few images that
scoring them all is cheaper than searching around the filter.

Other parts (text, sketch, layout, colours) give a distance for every image; in a hybrid their
own best images join the candidates, and all parts are fused by part weights here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.calibration import Calibration, likely_cut
from lookalike.errors import LookalikeError
from lookalike.features.base import within_kth
from lookalike.features.deep import best_through_windows
from lookalike.index.attribute import AttributeIndex, in_sorted
from lookalike.query import parts as query_parts
from lookalike.scoring import check_threshold, fuse, is_similar
from lookalike.store.catalog import Catalog

WINDOWS_SUFFIX = ":windows"  # signature key of an attribute's query windows (features/deep.py)


def window_key(attribute: str) -> str:
    """Where a query signature keeps an attribute's sub-window vectors, if it has any."""
    return attribute + WINDOWS_SUFFIX


SELECTIVE_SHARE = 0.002  # a filter admitting at most this share of images: score them all
SELECTIVE_MIN = 500  # ... or at most this many
FILTER_CANDIDATES_POWER = 0.75  # more candidates under a filter (`filtered_candidates`)
FILTER_CANDIDATES_CAP = 6.0
FILTER_EFFORT_GAIN = 32  # a filter admitting 1/x of the images searches up to x times wider


@dataclass(frozen=True)
class SearchHit:
    """One result: lower score = more alike; `breakdown` holds each attribute's distance."""

    id: int
    path: str
    score: float
    breakdown: dict[str, float]
    similar: bool | None
    metadata: dict[str, Any] = field(default_factory=dict)
    details: dict[str, dict[str, float]] = field(default_factory=dict)  # e.g. sketch Jaccard
    likely: bool | None = None  # below the likely-matches cut (None: no cut drawn)
    is_query: bool = False  # the query image itself (same id or same bytes), not a match
    keys: PageKeys | None = field(default=None, repr=False, compare=False)  # of its page
    slot: int = field(default=0, repr=False, compare=False)  # its place in that page

    @property
    def index_key(self) -> list[dict[str, Any]] | None:
        """Its colours by dominance (seed 004), None where it has none."""
        return None if self.keys is None else self.keys[self.slot]

    def to_dict(self) -> dict[str, Any]:
        shown = _shown(self.score, self.similar, self.likely, self.is_query, self.breakdown)
        out = {"id": self.id, "path": self.path, **shown, "metadata": self.metadata}
        key = self.index_key
        if key is not None:
            out["index_key"] = key
        if self.details:
            out["details"] = self.details
        return out


def _shown(
    score: float,
    similar: bool | None,
    likely: bool | None,
    is_query: bool,
    breakdown: Mapping[str, float],
) -> dict[str, Any]:
    """A result's fields as REST and the CLI show them, its record aside (rounded)."""
    return {
        "score": round(score, 3),
        "similar": similar,
        "likely": likely,
        "is_query": is_query,
        "breakdown": {name: round(value, 3) for name, value in breakdown.items()},
    }


class PageKeys:
    """The index keys of a page of hits. Their rows are those of search time (`read` gives
    them whatever is written after: `AttributeIndex.rows_later`), but they are read and made
    into terms and shares (Python over every row: ~0.2 ms a page, a twentieth of a deep
    search) only when a caller first reads one: REST and the CLI show them, a caller after
    ids and scores does not."""

    def __init__(
        self,
        read: Callable[[], Any],
        slots: np.ndarray,
        size: int,
        make: Callable[[Any], list[list[dict[str, Any]]]],
    ):
        self._read, self._slots, self._size, self._make = read, slots, size, make
        self._keys: list[list[dict[str, Any]] | None] | None = None

    def __getitem__(self, slot: int) -> list[dict[str, Any]] | None:
        if self._keys is None:  # two threads may both make them: the same values
            keys: list[list[dict[str, Any]] | None] = [None] * self._size
            if len(self._slots):
                made = self._make(self._read())
                for at, key in zip(self._slots.tolist(), made, strict=True):
                    keys[at] = key
            self._keys = keys
        return self._keys[slot]


@dataclass
class SearchResults:
    """Ranked hits plus what was asked: normalised weights, threshold, how many were compared."""

    hits: list[SearchHit]
    weights: dict[str, float]
    threshold: float | None
    considered: int
    explain: dict[str, Any] = field(default_factory=dict)
    likely_cut: float | None = None  # scores below it are likely matches (calibration.py)
    calibrated: bool = False  # image attributes fused on the calibrated scale

    def __iter__(self):
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, index: int) -> SearchHit:
        return self.hits[index]

    def to_dict(self) -> dict[str, Any]:
        return {**_summary(self), "results": [hit.to_dict() for hit in self.hits]}


@dataclass
class Ranking:
    """A query's answer before any record is read: ids best first, their fused scores and
    each attribute's (and part's) distances, as arrays. `Collection.nearest` returns it to
    callers that keep their own records (a shop's product table): no catalog read and no hit
    objects, a fifth of a deep search by id at 1M images (bench/README.md). `Planner.results`
    turns it into `SearchResults`."""

    ids: np.ndarray  # int64, best first
    scores: np.ndarray  # float64, 0..100, ascending
    breakdown: dict[str, np.ndarray]  # name -> distances, aligned with `ids`
    weights: dict[str, float]
    threshold: float | None
    considered: int
    explain: dict[str, Any] = field(default_factory=dict)
    likely_cut: float | None = None
    calibrated: bool = False
    query_ids: frozenset[int] = frozenset()  # stored images that are the query itself
    details: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # per part, aligned

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_query(self) -> np.ndarray:
        """Per answer: the query image itself (same id or same bytes), not a match."""
        own = self.query_ids
        return np.fromiter((i in own for i in self.ids.tolist()), bool, len(self.ids))

    @property
    def likely(self) -> np.ndarray | None:
        """Per answer: below the likely-matches cut (None: no cut drawn)."""
        if self.likely_cut is None:
            return None
        return (self.scores < self.likely_cut) & ~self.is_query

    def details_at(self, row: int) -> dict[str, dict[str, float]]:
        """One answer's per-part measures (e.g. sketch Jaccard), rounded as they are shown."""
        return {
            part: {m: round(float(v[row]), 4) for m, v in measures.items()}
            for part, measures in self.details.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of `SearchResults.to_dict`, each result without its record."""
        likely = self.likely
        marks = [None] * len(self.ids) if likely is None else likely.tolist()
        own = self.is_query.tolist()
        breakdown = {name: d.tolist() for name, d in self.breakdown.items()}
        scores = self.scores.tolist()
        results = []
        for row, image_id in enumerate(self.ids.tolist()):
            score, similar = scores[row], is_similar(scores[row], self.threshold)
            distances = {name: values[row] for name, values in breakdown.items()}
            result = {"id": image_id, **_shown(score, similar, marks[row], own[row], distances)}
            details = self.details_at(row)
            if details:
                result["details"] = details
            results.append(result)
        return {**_summary(self), "results": results}


def _summary(answer: SearchResults | Ranking) -> dict[str, Any]:
    """What an answer says besides its results (weights, threshold, cut, explain)."""
    return {
        "weights": {k: round(v, 4) for k, v in answer.weights.items()},
        "threshold": answer.threshold,
        "considered": answer.considered,
        "likely_cut": None if answer.likely_cut is None else round(answer.likely_cut, 3),
        "calibrated": answer.calibrated,
        "explain": answer.explain,
    }


@dataclass
class PlanSources:
    """What the planner reads, handed down by the façade."""

    catalog: Catalog
    index: Callable[[str], AttributeIndex]  # caught-up index of an attribute
    prepare_query: Callable[[str, np.ndarray], np.ndarray]  # e.g. whitening of a query vector
    candidates: Callable[[], int]  # candidates per attribute, as a multiple of k
    perceptual: Callable[[], query_parts.PerceptualRows]  # every image, for sketch/layout/colours
    text_distances: Callable[[str], tuple[np.ndarray, np.ndarray, dict[str, Any]]]
    calibration: Callable[[Sequence[str]], Calibration | None] | None = None
    # the index keys of a page of hits (colour terms by dominance, seed 004), made when read
    index_keys: Callable[[np.ndarray], PageKeys | None] | None = None
    # id -> (path, metadata) of the hits in one read; default: whole records (`get_many`)
    hit_fields: Callable[[list[int]], Mapping[int, tuple[str, dict[str, Any]]]] | None = None

    def fields_of(self, ids: list[int]) -> Mapping[int, tuple[str, dict[str, Any]]]:
        if self.hit_fields is not None:
            return self.hit_fields(ids)
        return {i: (r.path, r.metadata) for i, r in self.catalog.get_many(ids).items()}


@dataclass(frozen=True)
class RoughScores:
    """An attribute's candidates scored in float32 (`distances` holds those), and what it
    takes to score any of them exactly: the bound between both, a reader of candidates'
    exact rows (by their place among the candidates), the query."""

    bound: float
    rows_of: Callable[[np.ndarray], np.ndarray]
    query: np.ndarray
    exact: Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class ImagePart:
    ids: np.ndarray
    distances: dict[str, np.ndarray]
    exact: bool
    windows: dict[str, int] = field(default_factory=dict)  # query windows per attribute
    rough: dict[str, RoughScores] = field(default_factory=dict)  # not yet exact: `settle`
    scores: np.ndarray | None = None  # fused, where `settle` has them without fusing

    def settle(self, weights: Mapping[str, float], k: int) -> None:
        """Make the distances of every candidate that can be among the k best exact (float64,
        as the exact plan computes them). A rough fused score is within `band` of the exact
        one, so a candidate whose rough score is above the k-th rough score + 2 x band is
        beaten by at least k others whatever the exact values: its rough distances stay (they
        rank it below the k best, and it is never shown). Same hits and scores as scoring all
        candidates exactly, at the float32 cost plus ~k rows in float64. One attribute at
        full weight (e.g. "deep=1") is its own score, rough and exact both 0..100: `scores`
        is its distances, with no fusion before or after."""
        if not self.rough:
            return
        only = next(iter(weights)) if len(weights) == 1 else None
        alone = only if only in self.rough and weights[only] == 1.0 else None
        if len(self.ids) > k:
            rough = self.distances[alone] if alone else fuse(self.distances, weights)
            band = sum(abs(weights[name]) * r.bound for name, r in self.rough.items())
            doubt = within_kth(rough, k, 2.0 * band + 1e-9)  # + fuse's own rounding
        else:
            doubt = np.arange(len(self.ids))
        for name, r in self.rough.items():
            self.distances[name][doubt] = r.exact(r.query, r.rows_of(doubt))
        self.rough = {}
        if alone:
            self.scores = self.distances[alone]


class Planner:
    def __init__(self, sources: PlanSources):
        self.sources = sources
        self._cut: tuple[Any, Calibration, float | None] | None = None  # the last image cut

    # -- the image part ------------------------------------------------------------------------

    def image_part(
        self,
        signature: Mapping[str, np.ndarray],
        weights: Mapping[str, float],
        *,
        k: int | None,
        allowed: np.ndarray | None = None,
        extra: Sequence[np.ndarray] = (),
        effort: int | None = None,
        exact: bool = False,
        rough: bool = False,
    ) -> ImagePart:
        """Per-attribute exact distances on the candidates (or on every image when exact).
        `rough`: where an attribute has a cheaper float32 distance, candidates get that, and
        the caller calls `ImagePart.settle` before reading them (the fused top-k alone)."""
        indexes = {name: self.sources.index(name) for name in weights}
        query = {name: self.sources.prepare_query(name, signature[name]) for name in weights}
        windows = {
            name: [self.sources.prepare_query(name, w) for w in signature[window_key(name)]]
            for name in weights
            if window_key(name) in signature
        }
        size = min((len(ix) for ix in indexes.values()), default=0)
        exact = (
            exact
            or k is None
            or all(ix.ann is None for ix in indexes.values())
            or (allowed is not None and len(allowed) <= max(SELECTIVE_MIN, SELECTIVE_SHARE * size))
        )
        if exact:
            ids = None
            for index in indexes.values():
                ids = index.ids if ids is None else np.intersect1d(ids, index.ids, True)
            assert ids is not None
        else:
            assert k is not None
            wanted = k * self.sources.candidates()
            if allowed is not None and size:  # a filter leaves neighbours that agree less
                wanted = filtered_candidates(wanted, len(allowed), size)

            # one attribute ranks alone (no windows, no other part's images): its delta gives
            # only the images that can be among the k best, not `wanted` of them
            alone = k if rough and len(indexes) == 1 and not windows and not extra else None
            if alone is not None and allowed is None:
                part = self._alone(indexes, query, wanted, effort)
                if part is not None:
                    return part

            def near(name: str, vector: np.ndarray) -> np.ndarray:
                index = indexes[name]
                base = index.effort if effort is None else effort
                return index.search(
                    vector, wanted, allowed_ids=allowed,
                    effort=filtered_effort(base, allowed, size), alone=alone,
                )  # fmt: skip

            found = [near(name, query[name]) for name in indexes]
            # an inset's source may be far from the whole query but near one of its windows
            found += [near(name, w) for name, vectors in windows.items() for w in vectors]
            ids = np.unique(np.concatenate([*found, *extra]))
            if len(found) > 1 or extra:  # one index's own candidates are all in it
                for index in indexes.values():
                    ids = ids[index.contains(ids)]
        if allowed is not None:
            ids = ids[in_sorted(allowed, ids)]  # never a filtered-out image, whatever the index
        part = ImagePart(ids, {}, exact, {n: len(v) for n, v in windows.items()})
        for name, index in indexes.items():
            found = None
            if rough and not exact and name not in windows:
                found = index.rough_distances(query[name], ids)
            if found is None:  # every image: one pass over its map instead of a gather
                part.distances[name] = index.distances(query[name], ids)
            else:
                part.distances[name] = found.distances
                part.rough[name] = RoughScores(
                    found.bound, found.rows_of, query[name], index.spec.distance
                )
        for name, vectors in windows.items():  # per image, the best of the query's windows
            through = [indexes[name].distances(w, ids) for w in vectors]
            part.distances[name] = best_through_windows(part.distances[name], through)
        return part

    @staticmethod
    def _alone(
        indexes: Mapping[str, AttributeIndex],
        query: Mapping[str, np.ndarray],
        wanted: int,
        effort: int | None,
    ) -> ImagePart | None:
        """One attribute with an ANN structure and a rough distance ranks alone, unfiltered
        (e.g. weights "deep=1"): its index gives the candidates already roughly scored, in
        one pass (`AttributeIndex.rough_nearest`); `settle` makes the k best exact. None:
        not such an attribute."""
        ((name, index),) = indexes.items()
        if index.ann is None or index.spec.rough is None:
            return None
        found = index.rough_nearest(query[name], wanted, index.effort if effort is None else effort)
        rough = RoughScores(found.bound, found.rows_of, query[name], index.spec.distance)
        return ImagePart(found.ids, {name: found.distances}, False, rough={name: rough})

    # -- a whole query ---------------------------------------------------------------------

    def ranking(
        self,
        *,
        signature: Callable[[list[str]], dict[str, np.ndarray]] | None,
        attribute_weights: Mapping[str, float],
        text: str | None = None,
        sketch: Any = None,
        layout: str | None = None,
        colors: str | Sequence[str] | None = None,
        allowed: np.ndarray | None = None,
        where: str | None = None,
        part_weights: str | Mapping[str, float] | None = None,
        top_k: int | None = 10,
        threshold: float | str | None = None,
        exact: bool = False,
        calibrated: bool = False,
        query_ids: Sequence[int] = (),
    ) -> Ranking:
        """Rank images for every part given; `signature(attributes)` describes the query image
        for just the attributes that carry weight. `threshold="auto"` keeps the likely
        matches; `calibrated` fuses calibrated attribute scores (calibration.py). `allowed`:
        the ids a filter admits, ascending and unique (`in_sorted` looks them up)."""
        auto = threshold == "auto"
        if not auto:
            check_threshold(threshold)  # type: ignore[arg-type]
        if top_k is not None and top_k < 1:
            raise LookalikeError("top_k must be at least 1")
        explain: dict[str, Any] = {}
        other: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        per_image: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        if text is not None and text.strip():
            ids, distances, info = self.sources.text_distances(text)
            other["text"] = (ids, distances)
            explain["text"] = info
        visual = {"sketch": sketch, "layout": layout, "colors": colors}
        if any(v is not None and v != "" for v in visual.values()):
            rows = self.sources.perceptual()
            for name, value in visual.items():
                if value is None or value == "":
                    continue
                distances, info = rows.score(name, value)
                other[name] = (rows.ids, distances)
                if query_parts.PER_IMAGE in info:
                    per_image[name] = (rows.ids, info.pop(query_parts.PER_IMAGE))
                explain[name] = info
        if where:
            explain["where"] = where
        if signature is None and not other:
            if allowed is None:
                raise LookalikeError(
                    "nothing to search for: give an image, text, a sketch, a layout, colours "
                    "or a filter"
                )
            explain["parts"] = {}
            ids = np.sort(allowed)
            return self.select(ids, np.zeros(len(ids)), {}, {}, top_k, None, explain)
        names = (["image"] if signature is not None else []) + list(other)
        mix = query_parts.normalise_part_weights(part_weights, names)
        explain["parts"] = mix
        # every part's ids are ascending (the catalog's or an index's), as `allowed` is: ids in
        # all of them by binary search (intersect1d sorts both again: ~0.1 s at 1M images)
        aligned_ids = None
        for part_ids, _ in other.values():
            if aligned_ids is None:
                aligned_ids = part_ids
            else:
                aligned_ids = aligned_ids[in_sorted(part_ids, aligned_ids)]
        if allowed is not None and aligned_ids is not None:
            aligned_ids = aligned_ids[in_sorted(allowed, aligned_ids)]
        if list(other) == ["text"] and signature is None:  # words alone: no match, no answer
            text_ids, text_distances = other["text"]
            assert aligned_ids is not None
            aligned_ids = aligned_ids[in_sorted(text_ids[text_distances < 100.0], aligned_ids)]
        breakdown: dict[str, np.ndarray] = {}
        part_distances: dict[str, tuple[np.ndarray, np.ndarray]] = dict(other)
        calibration = None
        if signature is not None and self.sources.calibration is not None:
            calibration = self.sources.calibration(list(attribute_weights))
        if signature is not None:
            k = None if top_k is None else top_k
            extra = [self._best(pid, d, allowed, k) for pid, d in other.values()] if k else []
            # the image part alone, fused raw: only its k best need exact scores (`settle`)
            rough = k is not None and not other and not calibrated
            image = self.image_part(
                signature(list(attribute_weights)),
                attribute_weights,
                k=k,
                allowed=allowed,
                extra=extra,
                exact=exact,
                rough=rough,
            )
            if rough:
                assert k is not None
                image.settle(attribute_weights, k)
            image_distances = image.distances  # calibration hook: calibration.py
            image_scores = (
                fuse(image.distances, attribute_weights) if image.scores is None else image.scores
            )
            if calibration is not None and calibrated:
                image_distances = calibration.apply(image.distances)
                image_scores = calibration.fuse(image.distances, attribute_weights)
            part_distances["image"] = (image.ids, image_scores)
            ids = image.ids if aligned_ids is None else image.ids[in_sorted(aligned_ids, image.ids)]
            breakdown = {
                name: d if ids is image.ids else query_parts.align(image.ids, d, ids)
                for name, d in image_distances.items()
            }
            explain["plan"] = "exact" if image.exact else "candidates"
            if image.windows:
                explain["windows"] = image.windows
        else:
            assert aligned_ids is not None
            ids = aligned_ids
        aligned = {
            name: d if pid is ids else query_parts.align(pid, d, ids)  # the image part alone
            for name, (pid, d) in part_distances.items()
        }
        # the image part alone at full weight: its scores are already fused and clipped
        scores = part_distances["image"][1] if mix == {"image": 1.0} else fuse(aligned, mix)
        breakdown.update({name: d for name, d in aligned.items() if name != "image"})
        weights_out = {name: w * mix.get("image", 0.0) for name, w in attribute_weights.items()}
        weights_out.update({name: w for name, w in mix.items() if name != "image"})
        details = {
            part: {
                m: values if pid is ids else query_parts.align(pid, values, ids)
                for m, values in measures.items()
            }
            for part, (pid, measures) in per_image.items()
        }
        cut = self._likely_cut(calibration, attribute_weights, calibrated, other, mix)
        threshold = cut if auto else threshold
        ranking = self.select(
            ids, scores, breakdown, weights_out, top_k, threshold, explain, details,
            cut=cut, query_ids=query_ids,
        )  # fmt: skip
        ranking.calibrated = calibration is not None and calibrated
        return ranking

    def _likely_cut(
        self,
        calibration: Calibration | None,
        weights: Mapping[str, float],
        calibrated: bool,
        other: Mapping[str, tuple[np.ndarray, np.ndarray]],
        mix: Mapping[str, float],
    ) -> float | None:
        """The likely-matches cut; for an image part alone it depends only on the calibration
        and the weights, so it is kept (its quantiles cost more than a deep search)."""
        key = None
        if not other and calibration is not None:
            key = (id(calibration), tuple(sorted(weights.items())), calibrated)
            if self._cut is not None and self._cut[0] == key and self._cut[1] is calibration:
                return self._cut[2]
        null = None
        if calibration is not None:
            null = (
                calibration.null_image(weights, calibrated),
                calibration.null_image(weights, False),
            )
        cut = likely_cut(null, {n: d for n, (_, d) in other.items()}, mix)
        if key is not None:
            self._cut = (key, calibration, cut)
        return cut

    def _best(
        self, ids: np.ndarray, distances: np.ndarray, allowed: np.ndarray | None, k: int
    ) -> np.ndarray:
        """A part's own best images, so a hybrid's answers are among the candidates."""
        if allowed is not None:
            keep = in_sorted(allowed, ids)
            ids, distances = ids[keep], distances[keep]
        wanted = min(len(ids), k * self.sources.candidates())
        if wanted == 0:
            return np.zeros(0, np.int64)
        return ids[np.argpartition(distances, wanted - 1)[:wanted]]

    # -- ranking -------------------------------------------------------------------------------

    def select(
        self,
        ids: np.ndarray,
        scores: np.ndarray,
        distances: Mapping[str, np.ndarray],
        weights: dict[str, float],
        top_k: int | None,
        threshold: float | None,
        explain: dict[str, Any] | None = None,
        details: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        *,
        cut: float | None = None,
        query_ids: Sequence[int] = (),
    ) -> Ranking:
        """Top-k (`top_order`), then the threshold: no record read."""
        order = top_order(ids, scores, top_k)
        if threshold is not None:
            order = order[scores[order] <= threshold]
        return Ranking(
            ids[order],
            np.asarray(scores, np.float64)[order],
            {name: np.asarray(d)[order] for name, d in distances.items()},
            weights,
            threshold,
            len(ids),
            explain or {},
            likely_cut=cut,
            query_ids=frozenset(int(i) for i in query_ids),
            details={
                part: {m: np.asarray(v)[order] for m, v in measures.items()}
                for part, measures in (details or {}).items()
            },
        )

    def results(self, ranking: Ranking) -> SearchResults:
        """A ranking's hits with their records (path, metadata) in one read, those removed
        since ranking left out; each hit is built once, with the ranking's own marks
        (`likely`, `is_query`). Index keys are made only when a caller reads one (`PageKeys`)."""
        ids = ranking.ids
        records = self.sources.fields_of(ids.tolist())
        rows = np.arange(len(ids))
        if len(records) < len(ids):  # removed since ranking
            rows = rows[np.fromiter((i in records for i in ids.tolist()), bool, len(ids))]
        found = ids[rows]
        keys = self.sources.index_keys(found) if self.sources.index_keys else None
        likely = ranking.likely
        marks = [None] * len(rows) if likely is None else likely[rows].tolist()
        own = ranking.is_query[rows].tolist()
        hit_scores = ranking.scores[rows].tolist()  # each hit's values in one gather per array
        hit_distances = {name: d[rows].tolist() for name, d in ranking.breakdown.items()}
        hits = []
        for slot, (row, image_id) in enumerate(zip(rows.tolist(), found.tolist(), strict=True)):
            score = hit_scores[slot]
            path, metadata = records[image_id]
            hits.append(
                SearchHit(
                    id=image_id,
                    path=path,
                    score=score,
                    breakdown={name: d[slot] for name, d in hit_distances.items()},
                    similar=is_similar(score, ranking.threshold),
                    metadata=metadata,
                    details=ranking.details_at(row),
                    likely=marks[slot],
                    is_query=own[slot],
                    keys=keys,
                    slot=slot,
                )
            )
        return SearchResults(
            hits,
            ranking.weights,
            ranking.threshold,
            ranking.considered,
            ranking.explain,
            likely_cut=ranking.likely_cut,
            calibrated=ranking.calibrated,
        )


def filtered_effort(effort: int, allowed: np.ndarray | None, size: int) -> int:
    """Effort under a filter: the index skips what the filter rejects, so it must look
    further (more inverted lists, a wider beam) to gather as many allowed candidates."""
    if allowed is None or size == 0:
        return effort
    share = max(len(allowed) / size, 1e-9)
    return int(effort * min(FILTER_EFFORT_GAIN, max(1.0, 1.0 / share)))


def filtered_candidates(wanted: int, allowed: int, size: int) -> int:
    """Candidates per attribute under a filter admitting `allowed` of `size` images: the k
    best allowed images rank ~size/allowed times further down each attribute's own list, and
    the lists agree less there, so more are gathered: (size/allowed) ** 0.75, at most 6x.
    Measured at 1M images (bench_ann's collection), recall@10 of the fused ranking against
    exact, 40 queries: 10% admitted, 0.935 at 35 ms with the square root before (x3.2), 0.963
    at 44 ms with this (x5.6), 0.982 at 87 ms at x12.6; 1% admitted, 0.997 (x6, was x4)."""
    factor = (size / max(allowed, 1)) ** FILTER_CANDIDATES_POWER
    return int(wanted * min(FILTER_CANDIDATES_CAP, max(1.0, factor)))


SORT_WHOLE = 1024  # up to this many scores, `top_order` sorts them all: 2 numpy calls, not 6


def top_order(ids: np.ndarray, scores: np.ndarray, k: int | None) -> np.ndarray:
    """Positions of the k best scores, ties broken by id (so every plan orders alike)."""
    if len(scores) <= SORT_WHOLE:  # a search's ~100 candidates, right after the ANN scan
        order = np.lexsort((ids, scores))
        return order if k is None else order[:k]
    if k is not None and k < len(scores):
        cut = np.partition(scores, k - 1)[k - 1]
        keep = np.flatnonzero(scores <= cut)
    else:
        keep = np.arange(len(scores))
    order = keep[np.lexsort((ids[keep], scores[keep]))]
    return order if k is None else order[:k]
