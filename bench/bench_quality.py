"""Retrieval quality on Fashion-MNIST (Debian's dataset-fashion-mnist, 10 labelled classes).

Prints precision@10 and mAP for each attribute alone, for the best fused weighting (tuned on
half of the queries, reported on the other half), and for a raw-pixel baseline; plus indexing
speed and, when the deep attribute is present, deep extraction against the bare forward pass.

    .venv/bin/python bench/bench_quality.py [--per-class 100] [--no-deep]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.api import Collection
from lookalike.evaluate import (
    attribute_distance_matrices,
    best_weights,
    fuse_matrices,
    quality_from_distances,
)
from lookalike.features.registry import CLASSIC_ATTRIBUTES, is_available

DATA = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot"]  # fmt: skip


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--no-deep", action="store_true")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument(
        "--queries", type=int, default=200, help="queries for calibration and feedback figures"
    )
    args = parser.parse_args()
    ensure_dataset()
    images, labels = load_test_set()
    chosen = np.concatenate([np.flatnonzero(labels == c)[: args.per_class] for c in range(10)])
    attributes = list(CLASSIC_ATTRIBUTES)
    if not args.no_deep and is_available("deep"):
        attributes.append("deep")

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in chosen:
            folder = Path(tmp) / "images" / CLASSES[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{i:05d}.png"
            Image.fromarray(images[i]).save(path)
            paths.append(str(path))
        with Collection.create(Path(tmp) / "coll", attributes=attributes) as coll:
            start = time.perf_counter()
            report = coll.add(paths)
            seconds = time.perf_counter() - start
            ids = [report.ids[p] for p in paths]
            matrices = attribute_distance_matrices(coll, ids, attributes)
            deep_speed = measure_deep(coll, paths[:128]) if "deep" in attributes else None
            query_lines = query_sections(coll, ids, [int(labels[i]) for i in chosen], args)

    label_list = [int(labels[i]) for i in chosen]
    pixels = images[chosen].reshape(len(chosen), -1).astype(np.float32)
    squared = (pixels**2).sum(1)
    raw = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * pixels @ pixels.T, 0))
    tune = list(range(0, len(chosen), 2))
    report_on = list(range(1, len(chosen), 2))
    best = best_weights(matrices, label_list, args.k, tune)

    print(
        f"Fashion-MNIST test set: {len(chosen)} images ({args.per_class} per class), "
        f"leave-one-out, reported on {len(report_on)} queries"
    )
    print(f"indexing: {len(chosen) / seconds:.1f} images/s ({', '.join(attributes)})")
    print(f"{'attribute':<28} {'P@' + str(args.k):>8} {'mAP':>8}")
    rows = [("raw pixels (baseline)", raw)] + [(a, m) for a, m in matrices.items()]
    rows.append(
        ("fused " + ",".join(f"{a}={w:g}" for a, w in best.items()), fuse_matrices(matrices, best))
    )
    base = None
    for name, distances in rows:
        q = quality_from_distances(distances, label_list, args.k, report_on)
        base = base or q.mean_average_precision
        print(
            f"{name:<28} {q.precision_at_k:8.3f} {q.mean_average_precision:8.3f}"
            f"   (mAP x{q.mean_average_precision / base:.2f} vs raw pixels)"
        )
    for line in query_lines:
        print(line)
    if deep_speed:
        full, bare = deep_speed
        print(
            f"deep extraction: {full:.1f} images/s; bare forward pass: {bare:.1f} images/s; "
            f"ratio {full / bare:.2f}"
        )


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


def measure_deep(coll: Collection, paths: list[str]) -> tuple[float, float]:
    """Images/s of the deep extractor (preprocessing + forward + pooling) and of the bare
    forward pass on an already prepared tensor batch of the same size."""
    import torch

    from lookalike.decode import load_image, prepare
    from lookalike.features.base import PreparedImage

    extractor = coll.extractors["deep"]
    prepared = [PreparedImage(prepare(load_image(p).rgb, coll.preprocess)) for p in paths]
    extractor.extract_batch(prepared[:8])  # load the model before timing
    start = time.perf_counter()
    extractor.extract_batch(prepared)
    full = len(prepared) / (time.perf_counter() - start)
    batch = extractor.preprocess(prepared)
    run = extractor._loaded().run  # the bare network, for the baseline
    with torch.inference_mode():
        start = time.perf_counter()
        for chunk in torch.split(batch, 32):
            run(chunk)
        bare = len(prepared) / (time.perf_counter() - start)
    return full, bare


if __name__ == "__main__":
    main()
