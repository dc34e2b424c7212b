"""The `lookalike` command: index, search, remove, info, demo.

Errors a user can act on are printed as one line on stderr with exit code 1, never a traceback.
Exit codes: 0 done; 1 error (nothing more was done); 3 `index` finished but skipped some files
(listed with their reasons); 130 interrupted (what was committed is kept).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lookalike.cli_output import (
    header_lines,
    hit_lines,
    is_likely,
    likely_cut_lines,
    shown_path,
)
from lookalike.errors import LookalikeError
from lookalike.ingest import FILE_BUDGET_S
from lookalike.server.command import serve
from lookalike.store.backend import is_store_uri

app = typer.Typer(
    help="lookalike: find the images that look like this one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# A terminal's own width (or COLUMNS); a pipe or file gets 160 columns unless COLUMNS says.
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
err = Console(stderr=True, soft_wrap=True)

EXIT_SKIPPED = 3  # `index` finished, but some files were skipped (each reported with a reason)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"lookalike {version('lookalike')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """lookalike: find the images that look like this one."""


CollectionOption = Annotated[
    Path, typer.Option("--collection", "-c", help="Collection folder (created by `index`).")
]


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one clear line and exit code 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LookalikeError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted: everything committed so far is kept")
            raise typer.Exit(130) from None

    return wrapper


def _on_a_terminal() -> bool:
    return err.is_terminal or sys.stderr.isatty()


def _build_notice(attribute: str, kind: str, images: int) -> Any:
    """What a search waits for when an index must be built first (minutes at 1M images)."""
    return err.status(f"building the {attribute} index ({images:,} images; {kind}), once")


@contextmanager
def _opened(collection: Path | str) -> Iterator[Any]:
    """The collection, with index builds shown on a terminal (a search after `import` at 1M
    builds for minutes and printed nothing meanwhile)."""
    from lookalike.api import Collection

    with Collection.open(collection) as coll:
        if _on_a_terminal() and isinstance(coll, Collection):  # Milvus builds its own
            coll.indexes.on_build = _build_notice
        yield coll


@contextmanager
def _progress(description: str, *, redraw: bool = False) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr when it is a terminal (nothing when piped), and its reporter
    `report(done, total=None, current="")`. `redraw`: draw each report at once (a job of a
    few long steps can finish them all between two of the bar's own refreshes)."""
    bar = Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
        console=err,
        transient=True,
        disable=not _on_a_terminal(),
    )
    with bar:
        task = bar.add_task(description, total=None, current="")

        def report(done: int, total: int | None = None, current: str = "") -> None:
            bar.update(task, completed=done, total=total, current=current, refresh=redraw)

        yield report


def run_index(
    collection: Path,
    sources: list[str],
    attributes: str | None = None,
    deep_options: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    **options: Any,
):
    from lookalike.api import Collection
    from lookalike.decode import Preprocess
    from lookalike.features.registry import CLASSIC_ATTRIBUTES

    create: dict[str, Any] = {}
    if preprocess:
        create["preprocess"] = Preprocess.from_dict(preprocess)
    if attributes or deep_options:
        if attributes:
            names = [a.strip() for a in attributes.split(",")]
        else:
            names = [*CLASSIC_ATTRIBUTES, "deep"]
        specs: dict[str, dict[str, Any]] = {name: {} for name in names}
        if deep_options and "deep" in specs:
            specs["deep"] = deep_options
        create["attributes"] = specs
    if create and (collection / "catalog.sqlite").exists():
        err.print(
            "note: attributes and preprocessing are fixed when a collection is created; "
            f"{collection} keeps its own (see `lookalike info`)"
        )
    with (
        Collection.open_or_create(collection, **create) as coll,
        _progress("indexing") as report,
    ):
        return coll.add(
            sources,
            progress=lambda done, total, current: report(done, total, Path(current).name),
            **options,
        )


def write_json(data: Any) -> None:
    """A JSON document on stdout, as is (no highlighting, no wrapping: made for programs)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def check_sources_exist(sources: list[str]) -> None:
    """A named folder or file that does not exist is a mistake to stop at (before a collection
    is created), not a skipped image."""
    from lookalike.decode import is_url
    from lookalike.ingest import printable_path

    for source in sources:
        if not is_url(source) and not os.path.lexists(Path(source).expanduser()):
            raise LookalikeError(f"no such file or folder: {printable_path(source)}")


@app.command(
    epilog="Exit status: 0 all files indexed; 3 finished, but some files were skipped (each "
    "listed with its reason); 1 error (the run stopped; finished images are kept); "
    "130 interrupted (finished images kept)."
)
@friendly_errors
def index(
    sources: Annotated[list[str], typer.Argument(help="Folders, image files or http(s) URLs.")],
    collection: CollectionOption,
    prune: Annotated[bool, typer.Option(help="Remove images whose files are gone.")] = False,
    recursive: Annotated[bool, typer.Option(help="Descend into sub-folders.")] = True,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Worker processes (0 = all cores).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    file_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds allowed to read and describe one file; a file over it is skipped."
        ),
    ] = FILE_BUDGET_S,
    retry_failed: Annotated[
        bool,
        typer.Option(
            help="Read again the files that failed before and have not changed since "
            "(by default they are reported from the last run's record, not read)."
        ),
    ] = False,
    attributes: Annotated[
        str | None,
        typer.Option(help="For a new collection: attributes to extract, e.g. color,texture."),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(help="JSON or CSV sidecar with metadata keyed by image path."),
    ] = None,
    deep_model: Annotated[
        str | None,
        typer.Option(
            help="For a new collection: the CNN for `deep`, a TorchScript, ONNX or checkpoint "
            "file (default: the packaged EfficientNet-Lite0)."
        ),
    ] = None,
    deep_pooling: Annotated[
        str | None,
        typer.Option(help="For a new collection: pooling of `deep`: rmac, rgem, gem or gap."),
    ] = None,
    frame: Annotated[
        int | None,
        typer.Option(help="For a new collection: longest side of the common frame (pixels)."),
    ] = None,
    normalize: Annotated[
        str | None,
        typer.Option(help="For a new collection: colour normalisation, none or stretch."),
    ] = None,
    denoise: Annotated[
        int | None,
        typer.Option(help="For a new collection: median filter size (0 = off, 3, 5)."),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(help="Describe images on a Dask cluster: tcp://host:8786, or local:N."),
    ] = None,
    cnn_runtime: Annotated[
        str | None,
        typer.Option(
            help="How the packaged CNN runs: auto (ONNX Runtime when installed), onnxruntime "
            "or torch; the same vectors either way (default: LOOKALIKE_CNN_RUNTIME, else auto)."
        ),
    ] = None,
) -> None:
    """Add images to a collection (creating it if needed); only new or changed files are read.

    Every file that cannot be indexed (not an image, damaged, too big, not a regular file, a
    name that is not UTF-8, over the time budget) is skipped with its reason; the rest goes on.
    """
    from lookalike.sidecar import load_sidecar

    check_sources_exist(sources)
    if file_timeout <= 0:
        raise LookalikeError("--file-timeout must be a positive number of seconds")
    if cnn_runtime is not None:  # read by the deep extractor when the collection opens
        os.environ["LOOKALIKE_CNN_RUNTIME"] = cnn_runtime

    deep_options: dict[str, Any] = {}
    if deep_model:
        model = Path(deep_model).expanduser()
        deep_options["model"] = str(model.resolve()) if model.exists() else deep_model
    if deep_pooling:
        deep_options["pooling"] = deep_pooling
    preprocess = {
        k: v
        for k, v in {"frame": frame, "normalize": normalize, "denoise": denoise}.items()
        if v is not None
    }
    report = run_index(
        collection,
        sources,
        attributes,
        deep_options,
        preprocess,
        prune=prune,
        recursive=recursive,
        jobs=jobs or None,
        metadata=load_sidecar(metadata) if metadata else None,
        file_budget_s=file_timeout,
        cluster=cluster,
        retry_failed=retry_failed,
    )
    if as_json:  # plain json: rich's print_json took 4 s for a report of 10k files
        write_json(
            {
                "added": report.added,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "removed": report.removed,
                "skipped": [
                    {"path": p, "reason": r, "unchanged_since_failed": p in report.not_retried}
                    for p, r in report.failed
                ],
            }
        )
    else:
        out.print(report.summary(), soft_wrap=True)  # one line per fact, for grep and logs
        for path, reason in report.failed:
            again = " (unchanged since it failed)" if path in report.not_retried else ""
            out.print(f"  skipped {path}: {reason}{again}", highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(EXIT_SKIPPED)


SEARCH_EXAMPLES = """Examples:

  lookalike search query.jpg -c photos.lookalike -k 5

  lookalike search id:42 -c photos.lookalike --details

  lookalike search -c photos.lookalike --text "red car" --where "price < 50"

  lookalike search query.jpg -c photos.lookalike --paths-only | xargs ls -l

  lookalike search query.jpg -c photos.lookalike --json
"""


def search_slip(image: str | None, collection: Path) -> str | None:
    """A likely mistake in how `search` was called, said as a hint; None when none is seen."""
    if not is_store_uri(collection) and not (collection / "catalog.sqlite").exists():
        hint = f"no collection at {collection}"
        if image and (Path(image) / "catalog.sqlite").exists():
            return f"{hint}; {image} is one: give it with -c {image}"
        return f"{hint}; make one with: lookalike index FOLDER -c {collection}"
    if image is None or "://" in image or image.startswith("id:") or Path(image).exists():
        if image and Path(image).is_dir():
            if (Path(image) / "catalog.sqlite").exists():
                return f"{image} is a collection, not a query image: give it with -c {image}"
            return (
                f"{image} is a folder; search takes one query image "
                f"(to add a folder: lookalike index {image} -c {collection})"
            )
        return None
    if image.strip().isdigit():
        return f"{image}: no such file; did you mean id:{image.strip()} (a stored image)?"
    return None


@app.command(epilog=SEARCH_EXAMPLES)
@friendly_errors
def search(
    collection: CollectionOption,
    image: Annotated[
        str | None,
        typer.Argument(help="Query image: a path, an http(s) URL, or id:N for a stored image."),
    ] = None,
    text: Annotated[
        str | None, typer.Option("--text", "-t", help="Words to match in keywords, tags, metadata.")
    ] = None,
    sketch: Annotated[
        Path | None,
        typer.Option(help="A colour sketch: a grid of colour terms (text or JSON) or a drawing."),
    ] = None,
    layout: Annotated[
        str | None, typer.Option(help='A layout sentence, e.g. "top blue and bottom grey".')
    ] = None,
    colors: Annotated[
        str | None, typer.Option(help='Dominant colours in order, e.g. "blue then white".')
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(help="Metadata filter, e.g. \"category = 'shirt' AND price < 50\"."),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option("--weights", "-w", help="e.g. color=0.7,texture=0.2,shape=0.1,location=0.3"),
    ] = None,
    parts: Annotated[
        str | None,
        typer.Option(help="Weights of combined query parts, e.g. image=0.7,text=0.3."),
    ] = None,
    top: Annotated[int, typer.Option("--top", "-k", help="How many results.")] = 10,
    threshold: Annotated[
        str | None,
        typer.Option(help="Only images scoring at most this (0..100), or 'auto': likely matches."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    more: Annotated[
        list[str] | None, typer.Option(help="An answer you want more like, e.g. id:3 (repeat).")
    ] = None,
    less: Annotated[
        list[str] | None, typer.Option(help="An answer you want less like, e.g. id:7 (repeat).")
    ] = None,
    calibrated: Annotated[
        bool,
        typer.Option(
            "--calibrated/--raw",
            help="Fuse calibrated distances, or raw 0..100 ones (interMedia, the default).",
        ),
    ] = False,
    understand: Annotated[
        bool, typer.Option(help="Read colour and layout words in --text as those parts.")
    ] = True,
    windows: Annotated[
        bool,
        typer.Option(
            "--windows",
            help="Also find a query image inside other pictures (insets, crops on a "
            "background): the CNN looks at it twice, ~3x slower.",
        ),
    ] = False,
    details: Annotated[
        bool, typer.Option("--details", help="Show each hit's distance per attribute.")
    ] = False,
    paths_only: Annotated[
        bool, typer.Option("--paths-only", help="Print only the paths, one per line (for pipes).")
    ] = False,
) -> None:
    """Find images by example, words, sketch, layout or colours (combinable), with a filter.

    One line per hit: rank, score (0 = identical, 100 = nothing alike), id, path."""

    slip = search_slip(image, collection)
    if slip:
        raise LookalikeError(slip)

    sketch_value: object = None
    if sketch is not None:
        if sketch.suffix.lower() in (".txt", ".json", ".grid", ""):
            sketch_value = sketch.read_text()
        else:
            sketch_value = sketch
    with _opened(collection) as coll:
        results = coll.query(
            image=image,
            text=text,
            sketch=sketch_value,
            layout=layout,
            colors=colors,
            where=where,
            weights=weights,
            part_weights=parts,
            top_k=top,
            threshold=_threshold(threshold),
            more=more,
            less=less,
            calibrated=calibrated,
            understand=understand,
            windows=windows,
        )
    if not (as_json or paths_only):
        for name in ("layout", "sketch"):
            if name in results.explain and "render" in results.explain[name]:
                out.print(f"{name} grid:\n{results.explain[name]['render']}", highlight=False)
        if "text" in results.explain:
            added = results.explain["text"]["expanded"]
            if added:
                out.print(
                    "expanded: " + "; ".join(f"{a['term']} ({a['reason']})" for a in added),
                    highlight=False,
                )
    print_results(results, as_json, details=details, paths_only=paths_only)


@app.command()
@friendly_errors
def update(
    image: Annotated[str, typer.Argument(help="Image id (41 or id:41) or path.")],
    collection: CollectionOption,
    metadata: Annotated[
        str | None, typer.Option(help="JSON object merged into the metadata, e.g. '{\"price\": 9}'")
    ] = None,
    replace: Annotated[bool, typer.Option(help="Replace the metadata instead of merging.")] = False,
    reindex: Annotated[bool, typer.Option(help="Re-read the image and its signature.")] = False,
) -> None:
    """Change an image's metadata, or re-read it from its file."""

    data = None
    if metadata is not None:
        try:
            data = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise LookalikeError(f"--metadata is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise LookalikeError("--metadata must be a JSON object")
    if data is None and not reindex:
        raise LookalikeError("nothing to update: give --metadata and/or --reindex")
    with _opened(collection) as coll:
        target = coll.get(image)
        if reindex:
            coll.update(target.id)
        if data is not None:
            record = coll.update(target.id, metadata=data, merge_metadata=not replace)
        else:
            record = coll.get(target.id)
    out.print_json(data=record.to_dict())


@app.command()
@friendly_errors
def tags(
    image: Annotated[str, typer.Argument(help="An image file or URL.")],
    top: Annotated[int, typer.Option("--top", "-k")] = 5,
) -> None:
    """What the packaged CNN sees in an image: ImageNet classes and the keywords they give."""
    from lookalike.decode import Preprocess, load_image, prepare
    from lookalike.features.base import PreparedImage
    from lookalike.features.deep import DeepExtractor
    from lookalike.tags import keywords_from_predictions

    prepared = PreparedImage(prepare(load_image(image).rgb, Preprocess()))
    predictions = DeepExtractor().classify([prepared], top_k=max(top, 10), min_prob=0.01)[0]
    for label, prob in predictions[:top]:
        out.print(f"{prob:6.1%}  {label}", highlight=False)
    keywords = keywords_from_predictions(predictions)
    out.print("keywords: " + ", ".join(f"{k.text} ({k.score:.2f})" for k in keywords))


def _threshold(value: str | None) -> float | str | None:
    if value is None or value.strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        return float(value)
    except ValueError:
        raise LookalikeError(
            f"--threshold takes a number 0..100 or 'auto', got {value!r}"
        ) from None


def print_results(
    results: Any, as_json: bool, details: bool = False, paths_only: bool = False
) -> None:
    """Hits as JSON, as bare paths (for pipes), or one line each that fits the terminal."""
    if as_json:
        out.print_json(json.dumps(results.to_dict()))
        return
    if paths_only:
        for hit in results.hits:  # print(), not Rich: nothing but the path on each line
            print(hit.path)
        return
    if not results.hits:
        out.print("no results")
        return
    width = out.width
    marked = any(is_likely(hit) for hit in results.hits)
    lines = header_lines(results.weights, results.threshold, marked, width, results.likely_cut)
    lines += hit_lines(results.hits, width, details=details)
    lines += likely_cut_lines(results, width)
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def remove(
    images: Annotated[list[str], typer.Argument(help="Image ids (41 or id:41) or paths.")],
    collection: CollectionOption,
) -> None:
    """Remove images from a collection (the files themselves are not touched)."""

    with _opened(collection) as coll:
        count = coll.remove(images)
    out.print(f"{count} removed")


@app.command()
@friendly_errors
def info(
    collection: CollectionOption,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    image: Annotated[
        str | None, typer.Option(help="Show one image's record and index key (id or path).")
    ] = None,
) -> None:
    """What a collection holds: images, attributes, preprocessing, default weights."""

    with _opened(collection) as coll:
        data = coll.image_info(image.removeprefix("id:")) if image else coll.info()
    if image:
        if as_json:
            out.print_json(data=data)
            return
        key = ", ".join(f"{k['term']} {k['share']:.0%}" for k in data["index_key"] or [])
        out.print(f"image {data['id']}: {data['path']}", highlight=False)
        out.print(f"  index key: {key or '(no perceptual attribute)'}", highlight=False)
        out.print(f"  metadata: {data['metadata']}", highlight=False)
        return
    if as_json:
        out.print_json(data=data)
        return
    out.print(f"collection {data['path']}: {data['images']} images ({data['stale']} stale)")
    for name, attr in data["attributes"].items():
        out.print(f"  {name:<17} v{attr['version']:<12} {attr['dim']:>5} dims")
    out.print(f"  preprocess: {data['preprocess']}")
    out.print(f"  default weights: {data['default_weights']}")


@app.command()
@friendly_errors
def demo(
    folder: Annotated[
        Path, typer.Option(help="Where to put sample images and the collection.")
    ] = Path("demo"),
    top: Annotated[int, typer.Option("--top", "-k")] = 5,
) -> None:
    """Index the bundled sample photos and their transformed copies, then search by example."""
    from lookalike.samples import write_samples

    originals, copies = write_samples(folder / "images")
    query_folder = folder / "query"
    _, queries = write_samples(query_folder, variants=("rotate5",), names=("chelsea",))
    out.print(f"sample images: {len(originals)} photos + {len(copies)} transformed copies")
    report = run_index(folder / "collection", [str(folder / "images")])
    out.print(f"collection {folder / 'collection'}: {report.summary()}")
    from lookalike.api import Collection

    with Collection.open(folder / "collection") as coll:
        results = coll.search(str(queries[0]), top_k=top)
    out.print(f"query: {queries[0]} (chelsea.png rotated by 5 degrees, not in the collection)")
    print_results(results, as_json=False)


@app.command()
@friendly_errors
def evaluate(
    collection: CollectionOption,
    k: Annotated[int, typer.Option("-k", help="Cut-off for precision@k and recall@k.")] = 10,
    weights: Annotated[
        str | None, typer.Option("--weights", "-w", help="Also score this fused weighting.")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write report.json, pr.png and report.html into this folder."),
    ] = None,
) -> None:
    """Retrieval quality of a labelled collection (label = the folder holding each image):
    precision@k, recall@k and mAP for each attribute alone and fused, leave-one-out; with
    --report also a JSON file and an HTML page with a precision/recall plot and examples."""
    from lookalike.evaluate import (
        attribute_distance_matrices,
        fuse_matrices,
        labels_from_folders,
        quality_from_distances,
    )
    from lookalike.scoring import normalise_weights

    with _opened(collection) as coll:
        rows = coll.catalog.query("SELECT id, path FROM images ORDER BY id")
        if len(rows) < 2:
            raise LookalikeError("evaluation needs at least two labelled images")
        ids, paths = [r[0] for r in rows], [r[1] for r in rows]
        labels = labels_from_folders(paths)
        fused = normalise_weights(weights, coll.attributes, coll.default_weights)
        matrices = attribute_distance_matrices(coll, ids, sorted(set(coll.attributes) | set(fused)))
    table = Table(title=f"{len(ids)} images, {len(set(labels))} classes, leave-one-out")
    for column in ("attribute", f"P@{k}", f"R@{k}", "mAP"):
        table.add_column(column, justify="left" if column == "attribute" else "right")
    named = list(matrices.items())
    named.append(
        (
            "fused " + ",".join(f"{a}={w:.2f}" for a, w in fused.items()),
            fuse_matrices(matrices, fused),
        )
    )
    for name, distances in named:
        q = quality_from_distances(distances, labels, k)
        table.add_row(
            name,
            f"{q.precision_at_k:.3f}",
            f"{q.recall_at_k:.3f}",
            f"{q.mean_average_precision:.3f}",
        )
    out.print(table)
    if report is not None:
        from lookalike.evaluate import write_report

        written = write_report(
            report, matrices=matrices, fused=fused, ids=ids, paths=paths, labels=labels, k=k
        )
        out.print(  # soft wrap: a long path stays one line a user can copy
            f"report: {written['html']} (and {written['json'].name}, {written['png'].name})",
            soft_wrap=True,
        )


@app.command()
@friendly_errors
def whiten(
    collection: CollectionOption,
    attribute: Annotated[str, typer.Option(help="The embedding to whiten.")] = "deep",
    dim: Annotated[int | None, typer.Option(help="Keep this many dimensions.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop whitening.")] = False,
) -> None:
    """Learn PCA-whitening of an embedding from the collection itself and use it in searches."""

    with _opened(collection) as coll:
        if off:
            out.print(
                "whitening removed" if coll.clear_whitening(attribute) else "was not whitened"
            )
            return
        info_ = coll.fit_whitening(attribute, dim=dim)
    out.print(
        f"{attribute}: whitened to {info_['dim']} of {info_['input_dim']} dimensions, "
        f"learned from {info_['images']} images"
    )


@app.command()
@friendly_errors
def adapt(
    collection: CollectionOption,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Labelled examples: a folder of class folders, or a CSV with "
            "'label' and 'path' or 'id' columns."
        ),  # fmt: skip
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Forget what adapt learned.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Learn from labelled examples a projection of the deep vectors and the attribute weights
    that separate your classes; reports precision on a held-out part of the labels."""
    import json

    if reset == (labels is not None):
        raise LookalikeError("give either --labels FOLDER_OR_CSV or --reset")
    with _opened(collection) as coll:
        if reset:
            out.print("adaptation removed" if coll.reset_adaptation() else "was not adapted")
            return
        assert labels is not None
        report = coll.adapt(labels)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    before = report["before"]["deep"]
    after = report["after"]
    out.print(
        f"learned from {report['trained_on']} of {report['examples']} labelled images "
        f"({report['classes']} classes); held out {report['held_out']}:"
    )
    for name, values in (("deep before", before), ("deep after", after["deep"]),
                         ("fused after", after["fused"])):  # fmt: skip
        out.print(f"  {name:<12} " + "  ".join(f"{m} {v}" for m, v in values.items()))
    out.print("weights: " + ", ".join(f"{a}={w:g}" for a, w in report["weights"].items()))


@app.command("text-tower")
@friendly_errors
def text_tower(
    collection: CollectionOption,
    model: Annotated[
        Path | None, typer.Option(help="The text tower: a TorchScript or ONNX file.")
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Its tokenizer: a local Hugging Face tokenizer folder.")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop using a text tower.")] = False,
) -> None:
    """Let text queries use a CLIP-style text tower that matches the collection's deep model."""

    with _opened(collection) as coll:
        if off:
            out.print("text tower removed" if coll.clear_text_tower() else "none was set")
            return
        if model is None or tokenizer is None:
            raise LookalikeError("give --model and --tokenizer (or --off)")
        coll.set_text_tower(model, tokenizer)
    out.print(f"text queries now also use {model}")


CHECK_PROBLEMS_EXIT = 2  # `check`: problems found (or, with --repair, left); 1 = could not run


@app.command()
@friendly_errors
def check(
    collection: CollectionOption,
    repair: Annotated[
        bool, typer.Option(help="Repair what can be: re-extract, rebuild, drop orphans.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify a collection: the SQLite file, signatures, full text, uploads, settings, derived
    files. Exit code 0: healthy; 2: problems found (with --repair: problems that remain)."""
    import sqlite3

    try:
        with _opened(collection) as coll, _progress("checking", redraw=True) as progress:
            report = coll.check(
                repair=repair, progress=lambda name, done, total: progress(done, total, name)
            )
    except sqlite3.DatabaseError as exc:
        err.print(f"[red]error:[/red] {collection}: catalog too damaged to open ({exc})")
        raise typer.Exit(CHECK_PROBLEMS_EXIT) from None
    if as_json:
        out.print_json(data=report.to_dict())
    else:
        print_check_report(report)
    if not report.healthy:
        raise typer.Exit(CHECK_PROBLEMS_EXIT)


def print_check_report(report: Any) -> None:
    for finding in report.found:
        line = f"  {finding.check:<10} {finding.subject}: {finding.problem}"
        if finding.action:
            line += f"\n  {'':<10} -> {finding.action}"
        out.print(line, highlight=False, soft_wrap=True)
    summary = f"{len(report.found)} problem(s) found"
    if report.repaired:
        fixed = sum(f.repaired for f in report.found)
        summary += f", {fixed} repaired, {len(report.remaining)} remain"
    out.print(f"checked {', '.join(report.checks)}: {summary}", highlight=False, soft_wrap=True)
    if report.repaired and report.remaining:
        for finding in report.remaining:
            out.print(
                f"  still: {finding.subject}: {finding.problem}", highlight=False, soft_wrap=True
            )


@app.command("import")
@friendly_errors
def import_vectors(
    file: Annotated[Path, typer.Argument(help=".npz or .parquet: path, one column per attribute.")],
    collection: CollectionOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new ids as JSON.")] = False,
) -> None:
    """Add precomputed signatures without decoding images; all rows or none. A missing
    collection is created with the file's attributes."""
    from lookalike.api import Collection
    from lookalike.bulk import check_versions, read_vector_file

    found = read_vector_file(file)
    created = not (collection / "catalog.sqlite").exists()
    folder_existed = collection.exists()
    try:
        with (
            Collection.open_or_create(collection, attributes=list(found.vectors)) as coll,
            _progress("importing") as report,
        ):
            check_versions(found, coll.extractors)
            ids = coll.add_vectors(found.paths, found.vectors, found.metadata, progress=report)
    except BaseException:
        if created:  # a refused import leaves no empty collection behind
            _remove_new_collection(collection, keep_folder=folder_existed)
        raise
    if as_json:
        out.print_json(data={"added": len(ids), "ids": ids})
    else:
        out.print(f"{len(ids)} added (ids {ids[0]}..{ids[-1]})")


def _remove_new_collection(collection: Path, *, keep_folder: bool) -> None:
    import shutil

    if keep_folder:
        for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
            (collection / name).unlink(missing_ok=True)
    else:
        shutil.rmtree(collection, ignore_errors=True)


@app.command()
@friendly_errors
def export(
    file: Annotated[Path, typer.Argument(help="Where to write: .npz or .parquet.")],
    collection: CollectionOption,
) -> None:
    """Write every image's signatures, path and metadata, for `lookalike import` elsewhere."""
    from lookalike.bulk import export_vectors

    with _opened(collection) as coll, _progress("exporting", redraw=True) as report:
        count = export_vectors(
            coll.catalog,
            coll.extractors,
            file,
            progress=lambda step, done, total: report(done, total, step),
        )
    out.print(f"{count} images exported to {file}")


@app.command()
@friendly_errors
def tune(
    collection: CollectionOption,
    recall: Annotated[float, typer.Option(help="Target recall@k against exact search.")] = 0.95,
    queries: Annotated[int, typer.Option(help="Stored images sampled as queries.")] = 50,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
    weights: Annotated[str | None, typer.Option(help="Weights to tune for.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="First set the index kind: auto, flat, hnsw or ivfpq.")
    ] = None,
    attribute: Annotated[
        str | None, typer.Option(help="... of this attribute only (default: all).")
    ] = None,
    pca: Annotated[int | None, typer.Option(help="... with PCA to this width (IVF-PQ).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find the cheapest index effort (efSearch / nprobe), then the fewest candidates per
    attribute, whose ranking reaches a recall."""

    with _opened(collection) as coll, _progress("tuning") as progress:
        if kind or pca:
            coll.configure_index(attribute, kind=kind, pca=pca)
        report = coll.tune(
            recall,
            queries=queries,
            k=k,
            weights=weights,
            progress=lambda stage, done, total: progress(done, total, stage),
        )
        indexes = coll.indexes.describe()
    if as_json:
        out.print_json(data={**report.to_dict(), "indexes": indexes})
        return
    table = Table("effort", "candidates", f"recall@{k}", "p50 ms", "p99 ms")
    for point in report.curve:
        effort = ", ".join(f"{kind_}={v}" for kind_, v in point.level.items()) or "exact"
        table.add_row(
            effort,
            f"{point.candidates} x k",
            f"{point.recall:.3f}",
            f"{point.p50_ms:.1f}",
            f"{point.p99_ms:.1f}",
        )
    out.print(table)
    for name, index in indexes.items():
        out.print(f"  {name:<17} {index['kind']:<6} {index['images']:>9} images")
    if report.note:
        out.print(report.note)
    chosen = report.chosen
    if chosen is not None:
        effort = ", ".join(f"{kind_}={v}" for kind_, v in chosen.level.items()) or "exact"
        out.print(
            f"kept effort {effort} with {chosen.candidates} x k candidates per attribute: "
            f"recall@{k} {chosen.recall:.3f} on {report.queries} queries"
        )


@app.command()
@friendly_errors
def duplicates(
    collection: CollectionOption,
    threshold: Annotated[
        float | None, typer.Option(help="Highest fused score of a near-duplicate pair (0-100).")
    ] = None,
    weights: Annotated[str | None, typer.Option(help="Attribute weights.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Groups of near-duplicate images in a collection, with each pair's score."""

    with _opened(collection) as coll, _progress("finding duplicates") as report:
        groups = coll.duplicates(threshold=threshold, weights=weights, progress=report)
        records = coll.catalog.get_many({i for g in groups for i in g.ids})
    paths = {i: r.path for i, r in records.items()}
    if as_json:
        out.print_json(data={"groups": [g.to_dict(paths) for g in groups]})
        return
    if not groups:
        out.print("no near-duplicates")
        return
    for number, group in enumerate(groups, start=1):
        out.print(f"group {number}: {len(group.ids)} images", highlight=False)
        for image_id in group.ids:
            out.print(f"  {image_id:>8}  {shown_path(paths.get(image_id, ''))}", highlight=False)
        for a, b, score in group.pairs:
            out.print(f"    {a} ~ {b}: {score:.2f}", highlight=False)


@app.command()
@friendly_errors
def copy(
    source: Annotated[str, typer.Argument(help="Collection to copy: a folder or milvus://…")],
    target: Annotated[
        str, typer.Argument(help="Where to: a folder or milvus://host:19530/name (created).")
    ],
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Images per write.")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Copy a collection between a folder and a Milvus server (either way), signatures and
    metadata as they are: no image is decoded again. Re-running finishes an interrupted copy."""
    from lookalike.migrate import copy_collection

    with _progress("copying") as progress:
        report = copy_collection(source, target, batch=batch, progress=progress)
    if as_json:
        out.print_json(data={"copied": report.copied, "skipped": report.skipped})
    else:
        out.print(f"{report.copied} copied, {report.skipped} already there", highlight=False)


app.command()(friendly_errors(serve))


def main() -> None:  # pragma: no cover - console entry point
    app()
