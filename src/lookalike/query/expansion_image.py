"""Query expansion for image queries: average query expansion and alpha-QE.

Search once, then search again with the query vector moved towards its most confident
neighbours (Chum et al. 2007; alpha-QE, Radenović et al. 2018): the neighbours see the object
from other sides, and their mean is a better description of what is wanted than the one query
photo. alpha-QE weighs each neighbour by cos(query, neighbour) ** alpha, so a doubtful neighbour
pulls little. The function is self-contained: it takes the query's deep vector and the top
neighbours' vectors (from any index, exact or approximate) and returns the expanded vector.
"""

from __future__ import annotations

import numpy as np

DEFAULT_NEIGHBOURS = 3
DEFAULT_ALPHA = 3.0


def expand_query_vector(
    query: np.ndarray, neighbours: np.ndarray, *, alpha: float = DEFAULT_ALPHA
) -> np.ndarray:
    """L2-normalised weighted mean of the query and its `neighbours` ((n, d), best first).

    `alpha` = 0 is plain average query expansion; larger alphas trust only neighbours whose
    cosine with the query is high. Neighbours with a non-positive cosine are left out."""
    q = np.asarray(query, dtype=np.float64).ravel()
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    rows = np.atleast_2d(np.asarray(neighbours, dtype=np.float64))
    if rows.size == 0:
        return q.astype(np.float32)
    if rows.shape[1] != q.shape[0]:
        raise ValueError(f"neighbours are {rows.shape[1]}-d, the query is {q.shape[0]}-d")
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    cos = rows @ q
    weights = np.where(cos > 0, np.clip(cos, 0.0, 1.0) ** alpha, 0.0)
    expanded = q + weights @ rows
    return (expanded / max(float(np.linalg.norm(expanded)), 1e-12)).astype(np.float32)
