"""Near-duplicate groups: a k-nearest-neighbour self-join through the indexes.

Every image asks the planner for its k nearest images (candidates from the indexes, exact
fused scores); pairs scoring at most the threshold are linked, and linked images form a group
(connected components, by union-find). Each pair keeps its exact score.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lookalike.index.ann import blas_threads
from lookalike.query.plan import Planner
from lookalike.scoring import fuse

DEFAULT_THRESHOLD = 15.0  # fused score at or below which two images count as near-duplicates


@dataclass
class DuplicateGroup:
    ids: list[int]
    pairs: list[tuple[int, int, float]]  # (id, id, score), id < id

    def to_dict(self, paths: Mapping[int, str] | None = None) -> dict:
        out: dict = {
            "ids": self.ids,
            "pairs": [{"a": a, "b": b, "score": round(s, 3)} for a, b, s in self.pairs],
        }
        if paths is not None:
            out["paths"] = [paths.get(i, "") for i in self.ids]
        return out


def find_duplicates(
    planner: Planner,
    ids: np.ndarray,
    signatures: Callable[[list[int]], Iterable[tuple[int, dict[str, np.ndarray]]]],
    weights: Mapping[str, float],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    k: int = 10,
    batch: int = 256,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[DuplicateGroup]:
    """Groups of images whose fused score to another member is at most `threshold`, largest
    first; `signatures(ids)` yields each image's stored signature. `progress(done, total)`
    after each batch of images searched (in order)."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            parent[i] = parent.get(parent[i], parent[i])
            i = parent[i]
        return i

    def near(batch_ids: list[int]) -> list[tuple[int, list[tuple[int, float]]]]:
        """Each image's neighbours within the threshold (one batch, in a worker thread)."""
        out = []
        for image_id, signature in signatures(batch_ids):
            part = planner.image_part(signature, weights, k=k + 1)
            scores = fuse(part.distances, weights)
            keep = (part.ids != image_id) & (scores <= threshold)
            found = zip(part.ids[keep].tolist(), scores[keep].tolist(), strict=True)
            out.append((image_id, list(found)))
        return out

    batches = [[int(i) for i in ids[start : start + batch]] for start in range(0, len(ids), batch)]
    pairs: dict[tuple[int, int], float] = {}
    # every core searches (faiss and numpy's large loops release the GIL), one BLAS thread
    # each; results are taken in batch order, so the groups do not depend on the threads
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool, blas_threads(1):
        done = 0
        for found in pool.map(near, batches):
            done += len(found)
            if progress is not None:
                progress(done, len(ids))
            for image_id, neighbours in found:
                for other, score in neighbours:
                    key = (min(image_id, other), max(image_id, other))
                    pairs[key] = score
                    a, b = root(key[0]), root(key[1])
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in {i for key in pairs for i in key}:
        members.setdefault(root(i), []).append(i)
    by_root: dict[int, list[tuple[int, int, float]]] = {}
    for (a, b), score in sorted(pairs.items()):
        by_root.setdefault(root(a), []).append((a, b, score))
    groups = [DuplicateGroup(sorted(m), by_root.get(r, [])) for r, m in members.items()]
    return sorted(groups, key=lambda g: (-len(g.ids), g.ids[0]))
