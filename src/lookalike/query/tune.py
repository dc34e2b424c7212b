"""Tuning the ANN effort: recall@k of the fused ranking against exact search, per effort level
and per number of candidates.

The measure is the one users feel: for sampled stored images as queries, the share of the
exact top-k (every image scored, same weights) that the candidate plan also returns. The
cheapest effort level that reaches the target is found first; then fewer candidates per
attribute are tried at that level (each attribute's candidates are gathered and rescored in
every weighted attribute, so they are most of a search's cost: 10 -> 4 per k took a search by
id at 100k from 16 to 11 ms of CPU), and the fewest that still reach the target are kept with
the effort in the collection's index settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from lookalike.index.ann import EFFORT_LEVELS
from lookalike.index.attribute import AttributeIndex
from lookalike.index.manager import DEFAULT_CANDIDATES
from lookalike.query.plan import Planner, top_order
from lookalike.scoring import fuse

# candidates per attribute (a multiple of k) tried below the collection's, in this order
CANDIDATE_LADDER = (8, 6, 5, 4, 3, 2)


@dataclass
class EffortPoint:
    level: dict[str, int]  # index kind -> efSearch / nprobe
    recall: float
    p50_ms: float
    p99_ms: float
    candidates: int  # per attribute, a multiple of k

    def to_dict(self) -> dict:
        return {
            "effort": self.level,
            "candidates": self.candidates,
            "recall": round(self.recall, 4),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
        }


@dataclass
class TuneReport:
    target: float
    k: int
    queries: int
    curve: list[EffortPoint] = field(default_factory=list)
    chosen: EffortPoint | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "k": self.k,
            "queries": self.queries,
            "curve": [p.to_dict() for p in self.curve],
            "chosen": None if self.chosen is None else self.chosen.to_dict(),
            "note": self.note,
        }


def measure(
    planner: Planner,
    indexes: Mapping[str, AttributeIndex],
    signatures: list[dict[str, np.ndarray]],
    weights: Mapping[str, float],
    k: int,
    exact: list[np.ndarray],
    progress: Callable[[int], None] | None = None,
) -> tuple[float, list[float]]:
    """(mean recall@k against `exact`, latencies in ms) at the indexes' current effort;
    `progress(done)` after each query (outside its timing)."""
    recalls, latencies = [], []
    for signature, truth in zip(signatures, exact, strict=True):
        start = time.perf_counter()
        part = planner.image_part(signature, weights, k=k)
        scores = fuse(part.distances, weights)
        found = part.ids[top_order(part.ids, scores, k)]
        latencies.append(1000 * (time.perf_counter() - start))
        recalls.append(len(np.intersect1d(found, truth)) / max(1, min(k, len(truth))))
        if progress is not None:
            progress(len(recalls))
    return float(np.mean(recalls)), latencies


def tune(
    planner: Planner,
    index: Callable[[str], AttributeIndex],
    signatures: list[dict[str, np.ndarray]],
    weights: Mapping[str, float],
    *,
    target: float,
    k: int = 10,
    progress: Callable[[str, int, int], None] | None = None,
) -> TuneReport:
    """Walk the effort ladder from cheap to dear and stop at the first level reaching
    `target`; then, at that level, lower the candidates while the target still holds.
    `progress(stage, done, total)`: queries done in the current stage (the exact ranking
    first, minutes at 1M; then each point of the curve)."""

    def reporter(stage: str) -> Callable[[int], None] | None:
        if progress is None:
            return None
        return lambda done: progress(stage, done, len(signatures))

    indexes = {name: index(name) for name in weights}
    report = TuneReport(target, k, len(signatures))
    # from the default up (or the collection's own, if more): a collection tuned to few
    # candidates for a lower target can reach a higher one again
    candidates = max(planner.sources.candidates(), DEFAULT_CANDIDATES)
    exact = []
    exact_done = reporter("exact ranking")
    for signature in signatures:
        part = planner.image_part(signature, weights, k=k, exact=True)
        scores = fuse(part.distances, weights)
        exact.append(part.ids[top_order(part.ids, scores, k)])
        if exact_done is not None:
            exact_done(len(exact))

    def point(level: dict[str, int], per_k: int) -> EffortPoint:
        with_candidates = Planner(replace(planner.sources, candidates=lambda: per_k))
        effort = ", ".join(f"{kind}={value}" for kind, value in level.items()) or "exact"
        done = reporter(f"effort {effort}, {per_k} x k candidates")
        recall, lat = measure(with_candidates, indexes, signatures, weights, k, exact, done)
        found = EffortPoint(level, recall, *_percentiles(lat), candidates=per_k)
        report.curve.append(found)
        return found

    kinds = sorted({ix.spec.kind for ix in indexes.values() if ix.ann is not None})
    if not kinds:
        report.note = "every weighted attribute has an exact index: recall is 1 at any effort"
        report.chosen = point({}, candidates)
        return report
    saved = {name: ix.effort for name, ix in indexes.items()}
    steps = max(len(EFFORT_LEVELS[kind]) for kind in kinds)
    try:
        for step in range(steps):
            level = {
                kind: EFFORT_LEVELS[kind][min(step, len(EFFORT_LEVELS[kind]) - 1)] for kind in kinds
            }
            for ix in indexes.values():
                if ix.ann is not None:
                    ix.effort = level[ix.spec.kind]
            found = point(level, candidates)
            if found.recall >= target:
                report.chosen = found
                break
        if report.chosen is not None:
            for fewer in (c for c in CANDIDATE_LADDER if c < candidates):
                found = point(report.chosen.level, fewer)
                if found.recall < target:
                    break
                report.chosen = found
    finally:
        for name, ix in indexes.items():
            ix.effort = saved[name]
    if report.chosen is None:
        report.note = "no effort level reached the target: the dearest one is kept"
        report.chosen = report.curve[-1]
    return report


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))
