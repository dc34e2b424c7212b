"""Retrieval quality on labelled images: precision@k, recall@k, mean average precision.

A labelled set is a folder with one sub-folder per class (`shoes/…`, `bags/…`), or any mapping
image id -> label. Every image is used as a query against all the others (leave-one-out), so
the numbers say how often a collection's nearest neighbours share the query's class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Quality:
    """Mean retrieval quality over a set of queries."""

    precision_at_k: float
    recall_at_k: float
    mean_average_precision: float
    k: int
    queries: int

    def to_dict(self) -> dict[str, Any]:
        return {
            f"precision@{self.k}": round(self.precision_at_k, 4),
            f"recall@{self.k}": round(self.recall_at_k, 4),
            "mAP": round(self.mean_average_precision, 4),
            "queries": self.queries,
        }


def average_precision(relevant: np.ndarray) -> float:
    """AP of one ranked list given as booleans (True = same class), over all relevant items."""
    relevant = np.asarray(relevant, dtype=bool)
    hits = np.cumsum(relevant)
    total = hits[-1] if len(hits) else 0
    if total == 0:
        return 0.0
    ranks = np.arange(1, len(relevant) + 1)
    return float((hits[relevant] / ranks[relevant]).sum() / total)


def quality_from_distances(
    distances: np.ndarray, labels: Sequence[Any], k: int = 10, queries: Sequence[int] | None = None
) -> Quality:
    """Leave-one-out quality from a square distance matrix (row = query) and one label per row."""
    labels_arr = np.asarray(labels)
    n = len(labels_arr)
    if distances.shape != (n, n):
        raise ValueError(f"distances must be {n}x{n}, got {distances.shape}")
    rows = range(n) if queries is None else queries
    precisions, recalls, aps = [], [], []
    for q in rows:
        d = distances[q].astype(np.float64).copy()
        d[q] = np.inf  # the query itself is not an answer
        order = np.argsort(d, kind="stable")[: n - 1]
        relevant = labels_arr[order] == labels_arr[q]
        total = int(relevant.sum())
        precisions.append(relevant[:k].mean())
        recalls.append(relevant[:k].sum() / total if total else 0.0)
        aps.append(average_precision(relevant))
    return Quality(
        float(np.mean(precisions)), float(np.mean(recalls)), float(np.mean(aps)), k, len(precisions)
    )


def labels_from_folders(paths: Sequence[str]) -> list[str]:
    """Class label of each image = the name of the folder that holds it."""
    return [Path(p).parent.name for p in paths]


def attribute_distance_matrices(collection: Any, ids: Sequence[int], attributes: Sequence[str]):
    """{attribute: (n, n) distances} between stored images, from their stored signatures."""
    ids = np.asarray(ids, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for attribute in attributes:
        index = collection.index_for(attribute)
        rows = index.matrix[np.searchsorted(index.ids, ids)]
        extractor = collection.extractors[attribute]
        out[attribute] = np.stack([extractor.distance(row, rows) for row in rows])
    return out


def fuse_matrices(matrices: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    total = sum(weights.values())
    return sum(matrices[a] * (w / total) for a, w in weights.items() if w > 0)  # type: ignore[return-value]


def best_weights(
    matrices: Mapping[str, np.ndarray],
    labels: Sequence[Any],
    k: int,
    tune_queries: Sequence[int],
    steps: Sequence[float] = (0.0, 0.25, 0.5, 1.0),
    rounds: int = 2,
) -> dict[str, float]:
    """Coordinate search for the fused weighting with the best mAP on `tune_queries`.

    Tune on one half of the queries and report on the other: weights picked and judged on the
    same queries flatter themselves.
    """
    names = list(matrices)
    alone = {
        a: quality_from_distances(matrices[a], labels, k, tune_queries).mean_average_precision
        for a in names
    }
    weights = {a: 0.0 for a in names}
    weights[max(alone, key=alone.get)] = 1.0  # type: ignore[arg-type]
    best = alone[max(alone, key=alone.get)]  # type: ignore[arg-type]
    for _ in range(rounds):
        for a in names:
            for step in steps:
                trial = {**weights, a: step}
                if not any(trial.values()):
                    continue
                score = quality_from_distances(
                    fuse_matrices(matrices, trial), labels, k, tune_queries
                ).mean_average_precision
                if score > best + 1e-9:
                    best, weights = score, trial
    return {a: w for a, w in weights.items() if w > 0}
