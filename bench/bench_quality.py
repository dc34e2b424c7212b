"""Retrieval quality: today's descriptors and fusion beside each new one, on the same queries.

Fashion-MNIST (Debian's dataset-fashion-mnist, 10 labelled classes):
  * image queries, leave-one-out: each attribute alone, a raw-pixel baseline, fused weights
    (tuned on half of the queries, reported on the other half) with the deep attribute pooled
    as before (GAP) and as now (R-MAC), GeM and regional GeM, and average query expansion;
  * text queries (the ten class names) over all images: keywords only (before), zero-shot
    ConSE alone, and both joined (the text part of `Collection.query` now);
  * after adapt: LDA + weights learned from half of the images (their labels), reported on the
    other half, leave-one-out among them.
Copy detection on scikit-image's photos: transformed copies (30% crops, 90-degree rotations,
hue shifts, insets, shear, blur with noise, grey, JPEG 20) as queries against the 20 originals:
P@1 and mAP for the default fused search and the deep attribute alone, per pooling.
Deep extraction speed per pooling against the bare forward pass (the indexing cost budget).
`--weights-sweep`: candidate default weights on both sets in one run, the deep query windows
off and on, and the CPU time of a search by a new image with and without them.

    .venv/bin/python bench/bench_quality.py [--per-class 100] [--cache /tmp/lookalike-bench]
    .venv/bin/python bench/bench_quality.py --weights-sweep   # default weights, query windows

Feature maps, collections and query signatures are cached under --cache between runs.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.adapt import fit_projection
from lookalike.api import DEEP_DEFAULT_WEIGHT, DEFAULT_WEIGHTS, Collection
from lookalike.decode import Preprocess, load_image, prepare
from lookalike.evaluate import (
    attribute_distance_matrices,
    best_weights,
    fuse_matrices,
    quality_from_distances,
)
from lookalike.features.base import PreparedImage
from lookalike.features.deep import DeepExtractor, l2_normalise, pool_features
from lookalike.features.registry import CLASSIC_ATTRIBUTES
from lookalike.features.whitening import whitened_distance
from lookalike.query.expansion_image import expand_query_vector
from lookalike.query.text import text_match
from lookalike.query.zeroshot import labelled_zero_shot
from lookalike.samples import COPY_TRANSFORMS, sample_photos
from lookalike.scoring import normalise_weights

DATA = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot"]  # fmt: skip
TEXT_QUERIES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                "bag", "ankle boot"]  # fmt: skip
POOLINGS = ("gap", "gem", "rmac", "rgem")  # gap: before this change; rmac: the new default
BEFORE, NOW = "gap", "rmac"


def ensure_dataset() -> None:
    if (DATA / "t10k-images-idx3-ubyte.gz").exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("install Debian's dataset-fashion-mnist first (apt-get install ...)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True, env=env
    )


def load_test_set() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(DATA / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(DATA / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


# -- deep variants from one forward pass ----------------------------------------------------------


def deep_variants(paths: list[str], cache: Path) -> dict[str, np.ndarray]:
    """{pooling: (n, 1280) L2-normalised vectors} from one forward pass per image (cached)."""
    if cache.exists():
        with np.load(cache) as z:
            if "paths" in z and list(z["paths"]) == list(paths):  # rows in the order asked
                return {p: z[p] for p in POOLINGS}
    extractor = DeepExtractor()
    run = extractor._loaded().run
    out: dict[str, list[np.ndarray]] = {p: [] for p in POOLINGS}
    for start in range(0, len(paths), 32):
        prepared = [prepared_image(p) for p in paths[start : start + 32]]
        fmap, _ = run(extractor.preprocess(prepared), False)
        for pooling in POOLINGS:
            out[pooling].append(l2_normalise(pool_features(fmap, pooling)))
    vectors = {p: np.concatenate(v) for p, v in out.items()}
    np.savez(cache, **vectors, paths=np.array(paths))
    return vectors


def prepared_image(path: str) -> PreparedImage:
    return PreparedImage(prepare(load_image(path).rgb, Preprocess()))


def cosine_distances(queries: np.ndarray, stored: np.ndarray) -> np.ndarray:
    return np.clip(100.0 * (1.0 - queries @ stored.T), 0.0, 100.0)


def expanded(vectors: np.ndarray, distances: np.ndarray, neighbours: int = 3) -> np.ndarray:
    """alpha-QE of every row against the others (the query itself left out)."""
    d = distances.copy()
    np.fill_diagonal(d, np.inf)
    top = np.argsort(d, axis=1)[:, :neighbours]
    return np.stack([expand_query_vector(v, vectors[t]) for v, t in zip(vectors, top, strict=True)])


def line(name: str, q, base: float | None = None) -> str:
    ratio = f"   (mAP x{q.mean_average_precision / base:.2f})" if base else ""
    return f"  {name:<44} {q.precision_at_k:8.3f} {q.mean_average_precision:8.3f}{ratio}"


# -- Fashion-MNIST ------------------------------------------------------------------------------


def fashion_images(per_class: int, cache: Path):
    """(images, labels, chosen test indices, their PNG paths): the first per_class per class."""
    ensure_dataset()
    images, labels = load_test_set()
    chosen = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    paths = []
    for i in chosen:
        path = cache / f"fashion{per_class}" / "images" / CLASSES[labels[i]] / f"{i:05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(path)
        paths.append(str(path))
    return images, labels, chosen, paths


def fashion(per_class: int, k: int, cache: Path, queries: int = 200) -> None:
    images, labels, chosen, paths = fashion_images(per_class, cache)
    folder = cache / f"fashion{per_class}"
    label_list = [int(labels[i]) for i in chosen]
    attributes = {**{a: {} for a in CLASSIC_ATTRIBUTES}, "deep": {"pooling": NOW}}
    with Collection.open_or_create(folder / "coll", attributes=attributes) as coll:
        start = time.perf_counter()
        report = coll.add(paths)
        seconds = time.perf_counter() - start
        ids = [report.ids[p] for p in paths]
        classic = attribute_distance_matrices(coll, ids, list(CLASSIC_ATTRIBUTES))
        text_before, text_now, zero_only = text_runs(coll, ids)
        feedback_args = argparse.Namespace(queries=queries, k=k)
        query_lines = query_sections(coll, ids, label_list, feedback_args)
    deep = deep_variants(paths, folder / "deep.npz")
    n = len(chosen)
    print(f"Fashion-MNIST: {n} test images ({per_class} per class), leave-one-out")
    if report.added:
        print(f"  indexing: {len(report.added) / seconds:.1f} images/s ({', '.join(attributes)})")
    tune, report_on = list(range(0, n, 2)), list(range(1, n, 2))
    print(f"image queries (reported on {len(report_on)}; fused weights tuned on the others)")
    print(f"  {'descriptor':<44} {'P@' + str(k):>8} {'mAP':>8}")
    pixels = images[chosen].reshape(n, -1).astype(np.float32)
    squared = (pixels**2).sum(1)
    raw = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * pixels @ pixels.T, 0))

    def judged(distances: np.ndarray):
        return quality_from_distances(distances, label_list, k, report_on)

    base = judged(raw).mean_average_precision
    print(line("raw pixels (baseline)", judged(raw), base))
    for name, m in classic.items():
        print(line(name, judged(m), base))
    for pooling in POOLINGS:
        d = cosine_distances(deep[pooling], deep[pooling])
        tag = " (before)" if pooling == BEFORE else " (default now)" if pooling == NOW else ""
        print(line(f"deep {pooling}{tag}", judged(d), base))
        dq = cosine_distances(expanded(deep[pooling], d), deep[pooling])
        print(line(f"deep {pooling} + alpha-QE (3 neighbours)", judged(dq), base))
    for pooling in (BEFORE, NOW):
        matrices = {**classic, "deep": cosine_distances(deep[pooling], deep[pooling])}
        weights = best_weights(matrices, label_list, k, tune)
        print(line(f"fused best, deep {pooling}", judged(fuse_matrices(matrices, weights)), base))
        print("    " + ",".join(f"{a}={w:g}" for a, w in weights.items()))
        default = normalise_weights(None, {a: {} for a in attributes},
                                    {**DEFAULT_WEIGHTS, "deep": DEEP_DEFAULT_WEIGHT})  # fmt: skip
        q = judged(fuse_matrices(matrices, default))
        print(line(f"fused default weights, deep {pooling}", q, base))

    print(f"text queries: the {len(TEXT_QUERIES)} class names over all {n} images")
    print(f"  {'text part':<44} {'P@' + str(k):>8} {'mAP':>8}")
    for name, distances in (
        ("keywords and tags only (before)", text_before),
        ("zero-shot ConSE alone", zero_only),
        ("keywords + zero-shot (now)", text_now),
    ):
        q = text_quality(distances, label_list, k)
        print(f"  {name:<44} {q[0]:8.3f} {q[1]:8.3f}")

    print("after adapt: learned on half the images (their labels), reported on the other half")
    print(f"  {'descriptor':<44} {'P@' + str(k):>8} {'mAP':>8}")
    learn = np.array(tune)
    held = np.array(report_on)
    held_labels = [label_list[i] for i in held]
    for pooling in (BEFORE, NOW):
        vectors = deep[pooling]
        before = cosine_distances(vectors[held], vectors[held])
        projection = fit_projection(vectors[learn], [str(label_list[i]) for i in learn])
        p = projection.apply(vectors[held])
        after = np.stack([whitened_distance(v, p) for v in p])
        print(line(f"deep {pooling}, not adapted", quality_from_distances(before, held_labels, k)))
        print(line(f"deep {pooling}, adapted ({len(learn)} labels)",
                   quality_from_distances(after, held_labels, k)))  # fmt: skip
        if pooling == NOW:
            learned = projection.apply(vectors[learn])
            learn_labels = np.array([label_list[i] for i in learn])
            centroids = np.stack([learned[learn_labels == c].mean(0) for c in range(10)])
            scorer = labelled_zero_shot(held, p, centroids, CLASSES)
            text = np.array([scorer.distances(t, cached_embed) for t in TEXT_QUERIES])
            q = text_quality(text, held_labels, k)
            name = f"text: ConSE over the {len(CLASSES)} learned classes"
            print(f"  {name:<44} {q[0]:8.3f} {q[1]:8.3f}")
    for text in query_lines:
        print(text)


def _precision_ap(ranked: list[int], label: int, labels: dict[int, int], k: int):
    relevant = np.array([labels[i] == label for i in ranked])
    from lookalike.evaluate import average_precision

    return float(relevant[:k].mean()), average_precision(relevant)


def query_sections(coll: Collection, ids: list[int], labels_list: list[int], args) -> list[str]:
    """Calibrated against raw fusion (the engine's default weights, same queries), and one
    round of more/less feedback on the top 10 (a simulated user marks same-class answers
    'more' and the others 'less'), through Collection.query as users run it."""
    labels = dict(zip(ids, labels_list, strict=True))
    rng = np.random.default_rng(0)
    queries = rng.choice(ids, min(args.queries, len(ids)), replace=False)
    k = args.k
    lines = [f"query sections: {len(queries)} queries, default weights, P@{k} and mAP"]
    figures: dict[str, list[tuple[float, float]]] = {}
    rounds: dict[str, list[float]] = {"none": [], "feedback": [], "feedback (unjudged)": []}
    start = time.perf_counter()
    for q in map(int, queries):
        for mode in (True, False):
            results = coll.query(image=q, top_k=None, calibrated=mode)
            ranked = [h.id for h in results if not h.is_query]
            figures.setdefault("calibrated" if mode else "raw", []).append(
                _precision_ap(ranked, labels[q], labels, k)
            )
            if mode:
                first = ranked[:k]
                more = [i for i in first if labels[i] == labels[q]]
                less = [i for i in first if labels[i] != labels[q]]
                again = coll.query(image=q, top_k=len(ids), more=more, less=less)
                after = [h.id for h in again if not h.is_query]
                rounds["none"].append(_precision_ap(ranked, labels[q], labels, k)[0])
                rounds["feedback"].append(_precision_ap(after, labels[q], labels, k)[0])
                judged = set(first)
                rest_before = [i for i in ranked if i not in judged]
                rest_after = [i for i in after if i not in judged]
                rounds["feedback (unjudged)"].append(
                    _precision_ap(rest_after, labels[q], labels, k)[0]
                    - _precision_ap(rest_before, labels[q], labels, k)[0]
                )
    base = None
    for name, values in figures.items():
        p, ap = np.mean([v[0] for v in values]), np.mean([v[1] for v in values])
        base = base or ap
        lines.append(f"  fusion {name:<11} P@{k} {p:.3f}  mAP {ap:.3f}  (mAP x{ap / base:.2f})")
    before, after = np.mean(rounds["none"]), np.mean(rounds["feedback"])
    lines.append(
        f"  feedback, one round on the top {k}: P@{k} {before:.3f} -> {after:.3f} "
        f"(x{after / before:.2f}); next {k} unjudged answers: P@{k} change "
        f"{np.mean(rounds['feedback (unjudged)']):+.3f}"
    )
    lines.append(f"  ({time.perf_counter() - start:.1f} s for these queries)")
    return lines


def text_runs(coll: Collection, ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(queries, n) text distances: keywords only, keywords + zero-shot, zero-shot only."""
    from lookalike.query.text import stored_embedder

    order = np.asarray(ids)
    scorer = coll._zero_shot()
    before, now, zero = [], [], []
    for text in TEXT_QUERIES:
        keywords = text_match(coll.catalog, text)
        joined = text_match(coll.catalog, text, zero_shot=scorer)
        position = np.searchsorted(keywords.ids, order)
        before.append(keywords.distances[position])
        now.append(joined.distances[position])
        alone = scorer.distances(text, stored_embedder(coll.catalog, scorer.used_phrases()))
        zero.append(alone[np.searchsorted(scorer.ids, order)])
    return np.array(before), np.array(now), np.array(zero)


_EMBEDDED: dict[str, np.ndarray] = {}


def cached_embed(texts):
    from lookalike import semantic

    missing = [t for t in dict.fromkeys(texts) if t not in _EMBEDDED]
    if missing:
        _EMBEDDED.update(zip(missing, semantic.embed(missing), strict=True))
    return np.stack([_EMBEDDED[t] for t in texts])


def text_quality(distances: np.ndarray, labels: list[int], k: int) -> tuple[float, float]:
    from lookalike.evaluate import average_precision

    labels_arr = np.asarray(labels)
    shuffle = np.random.default_rng(0).permutation(len(labels_arr))  # ties in no class order
    precisions, aps = [], []
    for c, row in enumerate(distances):
        order = shuffle[np.argsort(row[shuffle], kind="stable")]
        relevant = labels_arr[order] == c
        precisions.append(relevant[:k].mean())
        aps.append(average_precision(relevant))
    return float(np.mean(precisions)), float(np.mean(aps))


# -- copy detection -----------------------------------------------------------------------------


def copy_set(cache: Path) -> dict:
    """The copy-detection set: originals indexed, transformed copies as queries, their
    classic distances to the originals (signatures cached)."""
    folder = cache / "copies"
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    (folder / "queries").mkdir(exist_ok=True)
    photos = sample_photos()
    names = list(photos)
    originals, queries, truth, kinds = [], [], [], []
    for i, name in enumerate(names):
        path = folder / "photos" / f"{name}.png"
        if not path.exists():
            photos[name].save(path)
        originals.append(str(path))
        for transform, apply in COPY_TRANSFORMS.items():
            qpath = folder / "queries" / f"{name}__{transform}.jpg"
            if not qpath.exists():
                apply(photos[name]).save(qpath, quality=92)
            queries.append(str(qpath))
            truth.append(i)
            kinds.append(transform)
    attributes = {**{a: {} for a in CLASSIC_ATTRIBUTES}, "deep": {"pooling": NOW}}
    with Collection.open_or_create(folder / "coll", attributes=attributes) as coll:
        report = coll.add(originals)
        ids = [report.ids[p] for p in originals]
        signatures = query_signatures(coll, queries, folder / "query_classic.npz")
        stored = {a: coll.index_for(a) for a in CLASSIC_ATTRIBUTES}
        classic = {}
        for a in CLASSIC_ATTRIBUTES:
            rows = stored[a].matrix[np.searchsorted(stored[a].ids, ids)]
            classic[a] = np.stack([coll.extractors[a].distance(s, rows) for s in signatures[a]])
    return {"originals": originals, "queries": queries, "truth": np.array(truth),
            "kinds": np.array(kinds), "names": names, "ids": ids, "classic": classic}  # fmt: skip


def copies(cache: Path) -> None:
    folder = cache / "copies"
    copy = copy_set(cache)
    originals, queries, truth, classic = (copy["originals"], copy["queries"], copy["truth"],
                                          copy["classic"])  # fmt: skip
    kinds, names = copy["kinds"], copy["names"]
    weights = normalise_weights(None, [*CLASSIC_ATTRIBUTES, "deep"], DEFAULT_WEIGHTS | {
        "deep": DEEP_DEFAULT_WEIGHT})  # fmt: skip
    db = deep_variants(originals, folder / "deep_db.npz")
    dq = deep_variants(queries, folder / "deep_queries.npz")
    print(f"copy detection: {len(queries)} copies of {len(names)} scikit-image photos "
          f"({', '.join(COPY_TRANSFORMS)}) against the originals")  # fmt: skip
    print(f"  {'search':<44} {'P@1':>8} {'mAP':>8}   misses by transform")
    rows = []
    for pooling in POOLINGS:
        rows.append((f"deep {pooling} alone", cosine_distances(dq[pooling], db[pooling])))
    for pooling in (BEFORE, NOW):
        matrices = {**classic, "deep": cosine_distances(dq[pooling], db[pooling])}
        rows.append((f"default fused weights, deep {pooling}", fuse_matrices(matrices, weights)))
    for name, distances in rows:
        p1, m, miss_text = copy_quality(distances, truth, kinds)
        print(f"  {name:<44} {p1:8.3f} {m:8.3f}   {miss_text}")


def query_signatures(
    coll: Collection, queries: list[str], cache: Path, attributes=CLASSIC_ATTRIBUTES
) -> dict[str, np.ndarray]:
    if cache.exists():
        with np.load(cache) as z:
            if all(a in z for a in attributes):
                return {a: z[a] for a in attributes}
    described = [coll.describe(q) for q in queries]
    out = {a: np.stack([d[a] for d in described]) for a in (*CLASSIC_ATTRIBUTES, "deep")}
    np.savez(cache, **out)
    return out


# -- default weights and query windows, both benches ---------------------------------------------

# Candidate default weights (each 0..1, normalised to sum 1 as the engine does). The first is
# the default before issue 12's last change; DEFAULT_WEIGHTS + DEEP_DEFAULT_WEIGHT is now's.
SWEEP = {
    "before (deep 0.5)": {"color": 0.3, "texture": 0.35, "shape": 0.15, "location": 0.2,
                          "deep": 0.5},
    "classic as before, deep 0.75": {"color": 0.3, "texture": 0.35, "shape": 0.15,
                                     "location": 0.2, "deep": 0.75},
    "classic as before, deep 1": {"color": 0.3, "texture": 0.35, "shape": 0.15,
                                  "location": 0.2, "deep": 1.0},
    "classic x2/3, deep 1": {"color": 0.2, "texture": 0.233, "shape": 0.1, "location": 0.133,
                             "deep": 1.0},
    "now": {**DEFAULT_WEIGHTS, "deep": DEEP_DEFAULT_WEIGHT},
    "classic x1/2, deep 1": {"color": 0.15, "texture": 0.175, "shape": 0.075, "location": 0.1,
                             "deep": 1.0},
    "fashion-tuned classic, deep 1": {"texture_location": 0.25, "shape_location": 0.5,
                                      "deep": 1.0},
    "deep alone": {"deep": 1.0},
}  # fmt: skip
SWEPT = [a for a in CLASSIC_ATTRIBUTES if a != "perceptual"]


def query_windows(coll: Collection, paths: list[str], cache: Path) -> np.ndarray:
    """(n, windows, dim) deep query windows of image files, as a search makes them (cached)."""
    if cache.exists():
        with np.load(cache) as z:
            if list(z["paths"]) == list(paths):
                return z["windows"].astype(np.float32)
    deep = coll.extractors["deep"]
    windows = np.stack([
        deep.windows_from_bytes(Path(p).read_bytes(), p, coll.preprocess, coll.max_pixels)
        for p in paths
    ])  # fmt: skip
    np.savez(cache, windows=windows.astype(np.float16), paths=np.array(paths))
    return windows


def deep_both_ways(coll: Collection, whole: np.ndarray, windows: np.ndarray, stored: np.ndarray):
    """{"off": whole-query deep distances, "on": best of whole and windows}, (queries, stored)."""
    deep = coll.extractors["deep"]
    pairs = zip(whole, windows, strict=True)
    return {
        "off": np.stack([deep.distance(q, stored) for q in whole]),
        "on": np.stack([deep.windowed_distance(q, w, stored) for q, w in pairs]),
    }


def copy_quality(distances: np.ndarray, truth: np.ndarray, kinds: np.ndarray):
    """P@1, mAP (one relevant image per query) and misses per transform."""
    rank = (distances < distances[np.arange(len(truth)), truth][:, None]).sum(1)
    hit = rank == 0
    misses = {t: int((~hit[kinds == t]).sum()) for t in COPY_TRANSFORMS}
    text = ", ".join(f"{t} {m}" for t, m in misses.items() if m) or "none"
    return float(hit.mean()), float(np.mean(1 / (rank + 1))), text


def weights_sweep(per_class: int, k: int, cache: Path) -> None:
    """Every SWEEP candidate on both benches in one run, deep query windows off and on."""
    copy = copy_set(cache)
    with Collection.open(cache / "copies" / "coll") as coll:
        index = coll.index_for("deep")
        stored = index.matrix[np.searchsorted(index.ids, copy["ids"])]
        whole = query_signatures(coll, copy["queries"], cache / "copies" / "query_classic.npz",
                                 ("deep",))["deep"]  # fmt: skip
        windows = query_windows(coll, copy["queries"], cache / "copies" / "query_windows.npz")
        copy_deep = deep_both_ways(coll, whole, windows, stored)
        timing = window_cost(coll, copy["queries"][::8])
    _, labels, chosen, paths = fashion_images(per_class, cache)
    label_list = [int(labels[i]) for i in chosen]
    with Collection.open(cache / f"fashion{per_class}" / "coll") as coll:
        ids = _ids_of(coll, paths)
        classic = attribute_distance_matrices(coll, ids, SWEPT)
        index = coll.index_for("deep")
        stored = index.matrix[np.searchsorted(index.ids, ids)]
        windows = query_windows(coll, paths, cache / f"fashion{per_class}" / "query_windows.npz")
        fashion_deep = deep_both_ways(coll, stored, windows, stored)
    report_on = list(range(1, len(paths), 2))
    print(f"default weights: copy detection ({len(copy['queries'])} copies, P@1 / mAP) and "
          f"Fashion-MNIST ({len(report_on)} queries of {len(paths)}, P@{k} / mAP), "
          "deep query windows off | on")  # fmt: skip
    for name, weights in SWEEP.items():
        normal = normalise_weights(weights, [*SWEPT, "deep"], {})
        cells = []
        for mode in ("off", "on"):
            c = copy_quality(fuse_matrices({**copy["classic"], "deep": copy_deep[mode]}, normal),
                             copy["truth"], copy["kinds"])  # fmt: skip
            f = quality_from_distances(
                fuse_matrices({**classic, "deep": fashion_deep[mode]}, normal), label_list, k,
                report_on,
            )  # fmt: skip
            cells.append((c, f))
        print(f"  {name:<30}" + " |".join(
            f" copy {c[0]:.3f} {c[1]:.3f}  fashion {f.precision_at_k:.3f} "
            f"{f.mean_average_precision:.3f}" for c, f in cells))  # fmt: skip
        print(f"  {'':<30} copy misses: off {cells[0][0][2]}; on {cells[1][0][2]}")
    print(timing)


def _ids_of(coll: Collection, paths: list[str]) -> list[int]:
    by_path = {r.path: i for i, r in coll.catalog.get_many(
        [int(i) for i in coll.index_for("deep").ids]).items()}  # fmt: skip
    return [by_path[p] for p in paths]


def window_cost(coll: Collection, queries: list[str]) -> str:
    """Process time of a default search by a new image with query windows off and on."""
    times = {}
    coll.query(image=queries[0], windows=False)  # models loaded before timing
    coll.query(image=queries[0])
    for mode in (False, True):
        start = time.process_time()
        for q in queries:
            coll.query(image=q, windows=mode)
        times[mode] = (time.process_time() - start) / len(queries)
    return (f"cost per search by a new image ({len(queries)} copies, CPU time): windows off "
            f"{times[False] * 1000:.0f} ms, on {times[True] * 1000:.0f} ms "
            f"(x{times[True] / times[False]:.2f})")  # fmt: skip


# -- extraction cost ----------------------------------------------------------------------------


def extraction_speed(paths: list[str]) -> None:
    """Images/s of the deep extractor per pooling and of the bare forward pass, same batch."""
    prepared = [prepared_image(p) for p in paths]
    extractors = {p: DeepExtractor(pooling=p) for p in (BEFORE, NOW)}
    extractors[BEFORE].extract_batch(prepared[:8])  # load the model before timing
    timings = {}
    for pooling, extractor in extractors.items():
        start = time.perf_counter()
        extractor.extract_batch(prepared)
        timings[pooling] = len(prepared) / (time.perf_counter() - start)
    batch = extractors[BEFORE].preprocess(prepared)
    run = extractors[BEFORE]._loaded().run
    start = time.perf_counter()
    for first in range(0, len(batch), 32):
        run(batch[first : first + 32], False)
    bare = len(prepared) / (time.perf_counter() - start)
    print(f"deep extraction ({len(prepared)} images): bare forward pass {bare:.1f} images/s; "
          + "; ".join(f"{p} {s:.1f} images/s (cost x{bare / s:.2f} of the bare pass)"
                      for p, s in timings.items()))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument(
        "--queries", type=int, default=200, help="queries for calibration and feedback figures"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-bench-quality"))
    parser.add_argument("--skip", choices=["fashion", "copies", "speed"], action="append",
                        default=[])  # fmt: skip
    parser.add_argument("--weights-sweep", action="store_true",
                        help="only the candidate default weights on both benches, query "
                             "windows off and on, and their cost per search")  # fmt: skip
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.weights_sweep:
        weights_sweep(args.per_class, args.k, args.cache)
        return
    if "fashion" not in args.skip:
        fashion(args.per_class, args.k, args.cache, args.queries)
    if "copies" not in args.skip:
        copies(args.cache)
    if "speed" not in args.skip:
        photos = sorted(str(p) for p in (args.cache / "copies" / "queries").glob("*.jpg"))
        extraction_speed(photos[:64])


if __name__ == "__main__":
    main()
