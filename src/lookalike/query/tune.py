"""Tuning the ANN effort: recall@k of the fused ranking against exact search, per effort level.

The measure is the one users feel: for sampled stored images as queries, the share of the
exact top-k (every image scored, same weights) that the candidate plan also returns. The
cheapest level that reaches the target is kept in the collection's index settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from lookalike.index.ann import EFFORT_LEVELS
from lookalike.index.attribute import AttributeIndex
from lookalike.query.plan import Planner, top_order
from lookalike.scoring import fuse


@dataclass
class EffortPoint:
    level: dict[str, int]  # index kind -> efSearch / nprobe
    recall: float
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict:
        return {
            "effort": self.level,
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
) -> tuple[float, list[float]]:
    """(mean recall@k against `exact`, latencies in ms) at the indexes' current effort."""
    recalls, latencies = [], []
    for signature, truth in zip(signatures, exact, strict=True):
        start = time.perf_counter()
        part = planner.image_part(signature, weights, k=k)
        scores = fuse(part.distances, weights)
        found = part.ids[top_order(part.ids, scores, k)]
        latencies.append(1000 * (time.perf_counter() - start))
        recalls.append(len(np.intersect1d(found, truth)) / max(1, min(k, len(truth))))
    return float(np.mean(recalls)), latencies


def tune(
    planner: Planner,
    index: Callable[[str], AttributeIndex],
    signatures: list[dict[str, np.ndarray]],
    weights: Mapping[str, float],
    *,
    target: float,
    k: int = 10,
) -> TuneReport:
    """Walk the effort ladder from cheap to dear; stop at the first level reaching `target`."""
    indexes = {name: index(name) for name in weights}
    report = TuneReport(target, k, len(signatures))
    exact = []
    for signature in signatures:
        part = planner.image_part(signature, weights, k=k, exact=True)
        scores = fuse(part.distances, weights)
        exact.append(part.ids[top_order(part.ids, scores, k)])
    kinds = sorted({ix.spec.kind for ix in indexes.values() if ix.ann is not None})
    if not kinds:
        report.note = "every weighted attribute has an exact index: recall is 1 at any effort"
        recall, lat = measure(planner, indexes, signatures, weights, k, exact)
        report.chosen = EffortPoint({}, recall, *_percentiles(lat))
        report.curve.append(report.chosen)
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
            recall, lat = measure(planner, indexes, signatures, weights, k, exact)
            point = EffortPoint(level, recall, *_percentiles(lat))
            report.curve.append(point)
            if recall >= target:
                report.chosen = point
                break
    finally:
        for name, ix in indexes.items():
            ix.effort = saved[name]
    if report.chosen is None:
        report.note = "no effort level reached the target: the dearest one is kept"
        report.chosen = report.curve[-1]
    return report


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))
