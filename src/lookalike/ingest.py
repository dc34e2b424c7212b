"""Scan -> decode -> extract -> store, in parallel, resumable, with progress.

Work is planned first: each source is compared with the catalog by path, size and mtime (and,
when those changed, by content hash), so a re-run only processes what is new, changed, or whose
signature an extractor update made stale. Decoding and the classic features run in worker
processes; extractors that work in batches (the CNN) run in this process on what the workers
prepared. Each image is committed on its own, so an interrupted run keeps all finished work.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.decode import (
    IMAGE_SUFFIXES,
    Preprocess,
    decode_bytes,
    is_url,
    prepare,
    read_source_bytes,
)
from lookalike.errors import DecodeError
from lookalike.features.base import Extractor, PreparedImage
from lookalike.features.registry import create_extractor

ProgressCallback = Callable[[int, int, str], None]  # (done, total, current source)
POOL_THRESHOLD = 12  # below this many images a process pool costs more than it saves


@dataclass
class IngestReport:
    """What a run did; `failed` keeps every skipped source with its reason."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, "
            f"{len(self.failed)} skipped"
        )


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to turn a source into signatures; picklable."""

    preprocess: dict[str, Any]
    attributes: dict[str, dict[str, Any]]  # per-image attributes: name -> extractor options
    max_pixels: int
    keep_prepared: bool = False  # batch attributes (the CNN) will need the prepared image


@dataclass
class Extracted:
    """A decoded, described image, ready for the batch stage and the catalog."""

    source: str
    size: int
    mtime: float
    sha256: str
    width: int
    height: int
    format: str
    signatures: dict[str, tuple[str, np.ndarray]]
    prepared: np.ndarray | None = None  # kept only when a batch extractor still needs it
    auto_keywords: list[tuple[str, float]] | None = None  # model tags, when a classifier ran


def scan(
    sources: Iterable[str | os.PathLike[str]], *, recursive: bool = True
) -> tuple[list[str], list[str]]:
    """Expand folders into image files; return (sources, scanned folders).

    Files inside a folder are picked by suffix (a README beside the photos is not an error);
    files named explicitly are always tried, so a mislabelled image is reported, not ignored.
    """
    found: list[str] = []
    roots: list[str] = []
    for source in sources:
        text = os.fspath(source)
        if is_url(text):
            found.append(text)
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            root = path.resolve()
            roots.append(str(root))
            pattern = root.rglob("*") if recursive else root.glob("*")
            found.extend(
                str(p)
                for p in sorted(pattern)
                if p.suffix.lower() in IMAGE_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
        else:
            found.append(str(path.resolve()) if path.exists() else text)
    return list(dict.fromkeys(found)), roots


@dataclass
class Plan:
    """What a run must do: sources to describe, and known images to keep as they are.

    `unchanged` holds (source, image id, new (size, mtime) or None): a file whose size or
    mtime moved but whose content hash did not only needs its facts refreshed."""

    todo: list[str] = field(default_factory=list)
    unchanged: list[tuple[str, int, tuple[int, float] | None]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def plan(
    found: Iterable[str],
    states: Mapping[str, tuple[int, int, float, str]],
    is_current: Callable[[int], bool],
) -> Plan:
    """Compare sources with the catalog (path -> (id, size, mtime, sha256)).

    Unchanged = same size and mtime, or same content hash; and every signature current
    (`is_current(id)`), else the image is described again. URLs are always fetched again."""
    result = Plan()
    for source in found:
        known = states.get(source)
        if is_url(source) or known is None:
            result.todo.append(source)
            continue
        image_id, size, mtime, sha = known
        try:
            stat = os.stat(source)
        except OSError as exc:
            result.failed.append((source, f"cannot read: {exc.strerror or exc}"))
            continue
        if not is_current(image_id):
            result.todo.append(source)
        elif stat.st_size == size and stat.st_mtime == mtime:
            result.unchanged.append((source, image_id, None))
        elif _content_hash(source) == sha:
            result.unchanged.append((source, image_id, (stat.st_size, stat.st_mtime)))
        else:
            result.todo.append(source)
    return result


def _content_hash(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


_WORKER_EXTRACTORS: dict[tuple, dict[str, Extractor]] = {}


def build_extractors(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, Extractor]:
    """Extractors for a settings dict, cached per process (models load once)."""
    key = tuple(sorted((name, tuple(sorted(opts.items()))) for name, opts in attributes.items()))
    if key not in _WORKER_EXTRACTORS:
        _WORKER_EXTRACTORS[key] = {
            name: create_extractor(name, **dict(opts)) for name, opts in attributes.items()
        }
    return _WORKER_EXTRACTORS[key]


def describe_bytes(
    data: bytes, label: str, settings: Settings, *, size: int | None = None, mtime: float = 0.0
) -> Extracted:
    """Decode and extract every per-image attribute; batch attributes are left for
    `finish_batch`, in the parent process, so workers never load the CNN."""
    preprocess = Preprocess.from_dict(settings.preprocess)
    decoded = decode_bytes(data, label, max_pixels=settings.max_pixels, draft=2 * preprocess.frame)
    prepared = prepare(decoded.rgb, preprocess)
    image = PreparedImage(prepared)
    signatures: dict[str, tuple[str, np.ndarray]] = {}
    for name, extractor in build_extractors(settings.attributes).items():
        signatures[name] = (extractor.version, np.asarray(extractor.extract(image), np.float32))
    return Extracted(
        source=label,
        size=decoded.size if size is None else size,
        mtime=mtime,
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        signatures=signatures,
        prepared=prepared if settings.keep_prepared else None,
    )


def describe_source(source: str, settings: Settings) -> Extracted | DecodeError:
    """Worker entry point: never raises for a bad image, returns the error instead."""
    try:
        data = read_source_bytes(source)
        mtime = 0.0 if is_url(source) else os.stat(source).st_mtime
        return describe_bytes(data, source, settings, mtime=mtime)
    except DecodeError as exc:
        return exc
    except Exception as exc:  # a bug in an extractor must not stop the batch
        return DecodeError(source, f"could not be described: {type(exc).__name__}: {exc}")


def describe_many(
    sources: list[str], settings: Settings, jobs: int
) -> Iterator[Extracted | DecodeError]:
    """Yield results in order, in worker processes when the batch is large enough."""
    if jobs <= 1 or len(sources) < POOL_THRESHOLD:
        for source in sources:
            yield describe_source(source, settings)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # torch and threads do not survive fork
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        yield from pool.map(describe_source, sources, [settings] * len(sources), chunksize=2)


TAG_FLOOR = 0.1  # a model tag is kept when the classifier gives it at least this probability


def finish_batch(
    items: list[Extracted],
    extractors: Mapping[str, Extractor],
    *,
    tags: bool = True,
    tag_floor: float = TAG_FLOOR,
) -> None:
    """Run batch extractors (the CNN) on items that still carry their prepared image; where
    the model has a classifier, the same forward pass gives the images' automatic tags."""
    pending = [item for item in items if item.prepared is not None]
    if not pending:
        return
    images = [PreparedImage(item.prepared) for item in pending]  # type: ignore[arg-type]
    for name, extractor in extractors.items():
        if not hasattr(extractor, "extract_batch"):
            continue
        if tags and getattr(extractor, "has_classifier", False):
            from lookalike.query.zeroshot import CLASSES_SIGNATURE, classes_version
            from lookalike.tags import keywords_from_predictions

            vectors, labels, classes = extractor.extract_classify_rank(  # type: ignore[attr-defined]
                images, top_k=10, min_prob=0.01
            )
            for item, predictions, ranked in zip(pending, labels, classes, strict=True):
                keywords = keywords_from_predictions(predictions, floor=tag_floor)
                item.auto_keywords = [(k.text, k.score) for k in keywords]
                item.signatures[CLASSES_SIGNATURE] = (classes_version(extractor.version), ranked)
        else:
            vectors = extractor.extract_batch(images)  # type: ignore[attr-defined]
        for item, vector in zip(pending, vectors, strict=True):
            item.signatures[name] = (extractor.version, np.asarray(vector, np.float32))
    for item in pending:
        item.prepared = None
