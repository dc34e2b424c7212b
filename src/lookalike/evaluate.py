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


# -- a report a person can read ------------------------------------------------------------------

RECALL_LEVELS = np.linspace(0.0, 1.0, 11)
EXAMPLE_QUERIES = 6
THUMBNAIL = 96


def precision_recall_curve(
    distances: np.ndarray, labels: Sequence[Any], queries: Sequence[int] | None = None
) -> np.ndarray:
    """Mean interpolated precision at recall 0, 0.1, ..., 1 (the 11-point curve), leave-one-out:
    at each level, the best precision reached at that recall or beyond."""
    labels_arr = np.asarray(labels)
    n = len(labels_arr)
    curves = []
    for q in range(n) if queries is None else queries:
        d = distances[q].astype(np.float64).copy()
        d[q] = np.inf
        order = np.argsort(d, kind="stable")[: n - 1]
        relevant = labels_arr[order] == labels_arr[q]
        if not relevant.any():
            continue
        hits = np.cumsum(relevant)
        precision = hits / np.arange(1, len(relevant) + 1)
        recall = hits / hits[-1]
        best_after = np.maximum.accumulate(precision[::-1])[::-1]
        positions = np.searchsorted(recall, RECALL_LEVELS, side="left")
        curves.append(best_after[np.minimum(positions, len(best_after) - 1)])
    return np.mean(curves, axis=0) if curves else np.zeros_like(RECALL_LEVELS)


def write_report(
    folder: str | Path,
    *,
    matrices: Mapping[str, np.ndarray],
    fused: Mapping[str, float],
    ids: Sequence[int],
    paths: Sequence[str],
    labels: Sequence[Any],
    k: int = 10,
    title: str = "lookalike retrieval quality",
) -> dict[str, Path]:
    """Write report.json, pr.png and report.html (plot and example results embedded, so the
    HTML file alone can be mailed) into `folder`; returns the three paths."""
    import base64
    import html
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    named = {**matrices, "fused": fuse_matrices(matrices, fused)}
    qualities = {name: quality_from_distances(d, labels, k) for name, d in named.items()}
    curves = {name: precision_recall_curve(d, labels) for name, d in named.items()}
    data = {
        "images": len(ids),
        "classes": len(set(labels)),
        "k": k,
        "fused_weights": dict(fused),
        "quality": {name: q.to_dict() for name, q in qualities.items()},
        "precision_recall": {
            "recall": RECALL_LEVELS.round(2).tolist(),
            **{name: c.round(4).tolist() for name, c in curves.items()},
        },
    }
    json_path = folder / "report.json"
    json_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    png_path = folder / "pr.png"
    png_path.write_bytes(_plot_curves(curves, title))
    examples = _example_rows(named["fused"], ids, paths, labels, k)
    rows = "\n".join(
        f"<tr><td>{html.escape(name)}</td><td>{q.precision_at_k:.3f}</td>"
        f"<td>{q.recall_at_k:.3f}</td><td>{q.mean_average_precision:.3f}</td></tr>"
        for name, q in qualities.items()
    )
    weights = ", ".join(f"{html.escape(a)}={w:.2f}" for a, w in fused.items())
    plot = base64.b64encode(png_path.read_bytes()).decode("ascii")
    page = _HTML.format(
        title=html.escape(title),
        summary=f"{len(ids)} images, {len(set(labels))} classes, every image a query "
        f"(leave-one-out); fused = {weights}",
        k=k,
        rows=rows,
        plot=plot,
        examples=examples,
    )
    html_path = folder / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return {"json": json_path, "png": png_path, "html": html_path}


def _plot_curves(curves: Mapping[str, np.ndarray], title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display: the CLI and servers have none
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for name, curve in curves.items():
        axes.plot(RECALL_LEVELS, curve, marker="o", markersize=3, label=name,
                  linewidth=2.5 if name == "fused" else 1.2)  # fmt: skip
    axes.set(xlabel="recall", ylabel="interpolated precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _thumbnail(path: str) -> str:
    """A small JPEG data URI of the image at `path`, or '' when it cannot be read (imported
    vectors have no file; a file may have moved since indexing)."""
    import base64
    import io

    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (THUMBNAIL * 2, THUMBNAIL * 2))
            small = img.convert("RGB")
            small.thumbnail((THUMBNAIL, THUMBNAIL))
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _example_rows(
    distances: np.ndarray, ids: Sequence[int], paths: Sequence[str], labels: Sequence[Any], k: int
) -> str:
    """For one query of each of the first few classes: the query beside its top k, each result
    marked right (same label) or wrong."""
    import html

    labels_arr = np.asarray(labels)
    queries = [int(np.flatnonzero(labels_arr == c)[0]) for c in dict.fromkeys(labels)]
    out = []
    for q in queries[:EXAMPLE_QUERIES]:
        d = distances[q].astype(np.float64).copy()
        d[q] = np.inf
        order = np.argsort(d, kind="stable")[: min(k, len(d) - 1)]
        cells = []
        for r in order:
            right = labels_arr[r] == labels_arr[q]
            mark = "right" if right else "wrong"
            caption = f"{'✓' if right else '✗'} {html.escape(str(labels_arr[r]))}"
            cells.append(
                f'<figure class="{mark}">{_img(paths[r])}<figcaption>{caption} · id {ids[r]}'
                f" · {d[r]:.1f}</figcaption></figure>"
            )
        out.append(
            f'<div class="row"><figure class="query">{_img(paths[q])}<figcaption>query '
            f"{html.escape(str(labels_arr[q]))} · id {ids[q]}</figcaption></figure>"
            + "".join(cells)
            + "</div>"
        )
    return "\n".join(out)


def _img(path: str) -> str:
    import html

    uri = _thumbnail(path)
    if not uri:
        return f'<div class="missing">{html.escape(Path(path).name)}</div>'
    return f'<img src="{uri}" alt="{html.escape(Path(path).name)}">'


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: .2em .8em; border-bottom: 1px solid #ddd; }}
td:not(:first-child), th:not(:first-child) {{ text-align: right; }}
.row {{ display: flex; gap: .4em; margin: .6em 0; align-items: flex-start; }}
figure {{ margin: 0; width: 104px; font-size: 11px; text-align: center; }}
figure img, .missing {{ width: 96px; height: 96px; object-fit: contain; border: 4px solid #ccc; }}
.missing {{ display: flex; align-items: center; justify-content: center; overflow: hidden; }}
.query img {{ border-color: #333; }} .right img {{ border-color: #2a2; }}
.wrong img {{ border-color: #d22; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<table><tr><th>attribute</th><th>P@{k}</th><th>R@{k}</th><th>mAP</th></tr>
{rows}
</table>
<h2>Precision and recall</h2>
<img src="data:image/png;base64,{plot}" alt="precision-recall curves">
<h2>Example queries (fused ranking): green = same label, red = another label</h2>
{examples}
</body></html>
"""
