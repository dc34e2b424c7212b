"""Exact search: every stored vector is compared, vectorised with numpy.

Right for small and medium collections (tens of thousands of images answer in milliseconds)
and the reference an approximate index is measured against. An index is a snapshot of the
catalog at `token`; the collection rebuilds it when the catalog changes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np

DistanceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ExactIndex:
    def __init__(self, ids: np.ndarray, matrix: np.ndarray, distance: DistanceFn, token: Hashable):
        order = np.argsort(ids)
        self.ids = ids[order]
        self.matrix = matrix[order]
        self.distance = distance
        self.token = token

    def __len__(self) -> int:
        return len(self.ids)

    def distances(self, query: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Distances (0..100) to the images `ids` (sorted, all present), or to all of them."""
        if ids is None or len(ids) == len(self.ids):
            rows = self.matrix
        else:
            rows = self.matrix[np.searchsorted(self.ids, ids)]
        if len(rows) == 0:
            return np.zeros(0)
        return np.asarray(self.distance(np.asarray(query, np.float32), rows), dtype=np.float64)
