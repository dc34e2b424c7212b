"""Felzenszwalb's graph segmentation: the same labels as scikit-image's, several times faster.

scikit-image's `felzenszwalb` (0.22-0.26) spends most of its time finding roots in its
union-find, which never shortens a path, through a function call per edge. This module keeps
its arithmetic step for step (the smoothing, the edge costs, their order, the float32
thresholds, the merge order, the small-region pass, the numbering of the regions by their
first pixel) and runs the edges through one compiled loop (numba) whose root lookups halve the
paths; only equal costs are taken in edge order (`stable_order`, a faster sort). A tree's
root is its smallest pixel whatever the shape of the tree, so that changes no decision. Tests
hold the labels equal to scikit-image's on real photos.
"""

from __future__ import annotations

import numpy as np

from lookalike.features.base import lazy_njit
from lookalike.features.filters import gaussian_blur


def felzenszwalb(rgb: np.ndarray, scale: float, sigma: float, min_size: int) -> np.ndarray:
    """`skimage.segmentation.felzenszwalb(rgb, scale, sigma, min_size, channel_axis=-1)`:
    (height, width) int labels 0..n-1, numbered in order of each region's first pixel."""
    planes = np.asarray(rgb, dtype=np.float64)  # scipy's gaussian_filter(sigma=[s, s, 0]):
    image = np.stack(  # each colour plane blurred alone, compiled, bit for bit
        [gaussian_blur(planes[..., c], sigma) for c in range(planes.shape[2])], axis=-1
    )
    ends, costs = _edges(image)
    n = image.shape[0] * image.shape[1]
    merge_scale = float(scale) / 255.0
    labels, ties_matter = _merge(ends, costs, stable_order(costs), n, merge_scale, min_size)
    if ties_matter:  # equal costs whose order could change a region: numpy's order, as there
        labels, _ = _merge(ends, costs, np.argsort(costs), n, merge_scale, min_size)
    return labels.reshape(image.shape[:2])


@lazy_njit(cache=True, nogil=True)
def _edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every edge of the 8-connected grid in scikit-image's order (right, down, down-right,
    up-right neighbours, each block row-major): (its two pixels as flat indices, its colour
    distance)."""
    height, width, channels = image.shape
    steps = ((0, 1, 0, 0), (1, 0, 0, 0), (1, 1, 0, 0), (0, 1, 1, 0))  # (row, col) of each end
    n = height * (width - 1) + (height - 1) * width + 2 * (height - 1) * (width - 1)
    ends = np.empty((n, 2), dtype=np.int32)  # frames stay far below 2**31 pixels
    costs = np.empty(n)
    e = 0
    for ra, ca, rb, cb in steps:
        for row in range(height - max(ra, rb)):
            for col in range(width - max(ca, cb)):
                total = 0.0
                for c in range(channels):
                    step = image[row + ra, col + ca, c] - image[row + rb, col + cb, c]
                    total += step * step
                costs[e] = np.sqrt(total)
                ends[e, 0] = (row + ra) * width + col + ca
                ends[e, 1] = (row + rb) * width + col + cb
                e += 1
    return ends, costs


def stable_order(costs: np.ndarray) -> np.ndarray:
    """`np.argsort(costs, kind="stable")` of non-negative costs, ~2x faster than numpy's
    default (unstable) argsort of them: each cost's bits, its lowest bits replaced by the
    edge's number, make one unique uint64 key (the bits of a non-negative float order as the
    float does); numpy sorts those keys, and an insertion pass then orders by the whole cost
    the few edges whose costs differ only in the dropped bits (already nearly in order).

    scikit-image takes equal costs in the unstable sort's order, this in edge order. The
    greedy pass cannot tell: an edge of cost c joins two regions when both thresholds exceed
    c, a join leaves the region a threshold above c (c + scale / size, whenever that sum is
    above c in float32, as it is for shape's scale and frame), so the regions that edges of
    cost c join are the same in any order. Only the small-region pass could, when two edges
    of exactly equal cost reach one small region; tests hold the labels to scikit-image's.
    """
    costs = np.ascontiguousarray(costs, dtype=np.float64) + 0.0  # -0.0 as 0.0
    if len(costs) and not costs.min() >= 0:  # negative or NaN: no order in the bits
        return np.argsort(costs, kind="stable")
    keys, number_bits = _numbered_keys(costs)
    keys.sort()
    return _order_by_cost(keys, number_bits, costs)


@lazy_njit(cache=True, nogil=True)
def _numbered_keys(costs: np.ndarray) -> tuple[np.ndarray, int]:
    """Each cost's bits with the lowest `number_bits` replaced by its index."""
    number_bits = 1
    while (1 << number_bits) < len(costs):
        number_bits += 1
    bits = costs.view(np.uint64)
    high = ~np.uint64((1 << number_bits) - 1)
    keys = np.empty(len(costs), dtype=np.uint64)
    for i in range(len(costs)):
        keys[i] = (bits[i] & high) | np.uint64(i)
    return keys, number_bits


@lazy_njit(cache=True, nogil=True)
def _order_by_cost(keys: np.ndarray, number_bits: int, costs: np.ndarray) -> np.ndarray:
    """The edge numbers of sorted `_numbered_keys`, then a stable insertion pass by the whole
    cost (it moves only edges whose costs differ in the dropped bits)."""
    number = np.uint64((1 << number_bits) - 1)
    order = np.empty(len(keys), dtype=np.intp)
    ordered = np.empty(len(keys))
    for i in range(len(keys)):
        order[i] = np.intp(keys[i] & number)
        ordered[i] = costs[order[i]]
    for j in range(1, len(keys)):
        cost, edge = ordered[j], order[j]
        k = j
        while k > 0 and ordered[k - 1] > cost:
            ordered[k], order[k] = ordered[k - 1], order[k - 1]
            k -= 1
        ordered[k], order[k] = cost, edge
    return order


@lazy_njit(cache=True, nogil=True)
def _find_root(forest: np.ndarray, node: int) -> int:
    while forest[node] < node:
        forest[node] = forest[forest[node]]  # path halving: the root stays the same
        node = forest[node]
    return node


@lazy_njit(cache=True, nogil=True, inline="always")
def _join(forest: np.ndarray, a: int, b: int) -> int:
    """Hang root `b` under root `a` or the other way round, whichever is smaller (what
    scikit-image's join_trees does to two roots); return the new root."""
    root, other = min(a, b), max(a, b)
    forest[other] = root
    return root


@lazy_njit(cache=True, nogil=True)
def _gathered(ends: np.ndarray, costs: np.ndarray, order: np.ndarray):
    """`ends[order], costs[order]` in one pass."""
    sorted_ends = np.empty_like(ends)
    sorted_costs = np.empty_like(costs)
    for i in range(len(order)):
        e = order[i]
        sorted_ends[i, 0], sorted_ends[i, 1], sorted_costs[i] = ends[e, 0], ends[e, 1], costs[e]
    return sorted_ends, sorted_costs


@lazy_njit(cache=True, nogil=True)
def _merge(ends, costs, order, n: int, scale: float, min_size: int) -> tuple[np.ndarray, bool]:
    """The greedy merge over edges by increasing cost, the small-region pass, then labels;
    and whether the order of equal costs could have changed them (see `stable_order`): a
    join whose region's threshold is not above its cost in float32, or, in the small-region
    pass, two edges of one cost that could each join a small region when the first of them
    is reached (edges between large regions never join, whatever comes before them).

    Roots are each tree's smallest pixel, so numbering roots in order of first appearance is
    scikit-image's `np.unique(roots, return_inverse=True)` numbering.
    """
    forest = np.arange(n)
    size = np.ones(n, dtype=np.intp)
    inner = np.zeros(n)
    ties_matter = False
    ends, costs = _gathered(ends, costs, order)  # then both passes read memory in order
    for e in range(len(costs)):
        a, b = _find_root(forest, ends[e, 0]), _find_root(forest, ends[e, 1])
        if a == b:
            continue
        inner_a = np.float32(inner[a] + scale / size[a])  # float32 there too
        inner_b = np.float32(inner[b] + scale / size[b])
        if costs[e] < min(inner_a, inner_b):
            merged = _join(forest, a, b)
            size[merged] = size[a] + size[b]
            inner[merged] = costs[e]
            ties_matter |= not np.float32(costs[e] + scale / size[merged]) > costs[e]
    for e in range(len(costs)):
        first_of_ties = (e == 0 or costs[e] != costs[e - 1]) and (
            e + 1 < len(costs) and costs[e + 1] == costs[e]
        )
        if first_of_ties and not ties_matter:
            ties_matter = _joins_of_one_cost(forest, size, ends, costs, e, min_size) > 1
        a, b = _find_root(forest, ends[e, 0]), _find_root(forest, ends[e, 1])
        if a != b and (size[a] < min_size or size[b] < min_size):
            merged = _join(forest, a, b)
            size[merged] = size[a] + size[b]
    labels = np.empty(n, dtype=np.intp)
    number = np.full(n, -1, dtype=np.intp)
    count = 0
    for pixel in range(n):
        root = _find_root(forest, pixel)
        if number[root] < 0:
            number[root] = count
            count += 1
        labels[pixel] = number[root]
    return labels, ties_matter


@lazy_njit(cache=True, nogil=True)
def _joins_of_one_cost(forest, size, ends, costs, start: int, min_size: int) -> int:
    """How many edges from `start` on, of the cost of `start`, join a small region now."""
    joins = 0
    e = start
    while e < len(costs) and costs[e] == costs[start]:
        a, b = _find_root(forest, ends[e, 0]), _find_root(forest, ends[e, 1])
        joins += a != b and (size[a] < min_size or size[b] < min_size)
        e += 1
    return joins
