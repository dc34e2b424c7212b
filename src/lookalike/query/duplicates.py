"""Near-duplicate groups: a k-nearest-neighbour self-join through the indexes.

Every image asks the planner for its k nearest images (candidates from the indexes, exact
fused scores); pairs scoring at most the threshold are linked, and linked images form a group
(connected components, by union-find). Each pair keeps its exact score.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

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
) -> list[DuplicateGroup]:
    """Groups of images whose fused score to another member is at most `threshold`, largest
    first; `signatures(ids)` yields each image's stored signature."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            parent[i] = parent.get(parent[i], parent[i])
            i = parent[i]
        return i

    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(ids), batch):
        for image_id, signature in signatures([int(i) for i in ids[start : start + batch]]):
            part = planner.image_part(signature, weights, k=k + 1)
            scores = fuse(part.distances, weights)
            for other, score in zip(part.ids, scores, strict=True):
                other = int(other)
                if other != image_id and score <= threshold:
                    key = (min(image_id, other), max(image_id, other))
                    pairs[key] = float(score)
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
