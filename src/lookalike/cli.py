"""The `lookalike` command: index, search, remove, info, demo.

Errors a user can act on are printed as one line on stderr with exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lookalike.errors import LookalikeError

app = typer.Typer(
    help="lookalike: find the images that look like this one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

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


def _progress_bar(description: str) -> Progress:
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
        console=err,
        transient=True,
        disable=not err.is_terminal and not sys.stderr.isatty(),
    )


def run_index(collection: Path, sources: list[str], attributes: str | None = None, **options: Any):
    from lookalike.api import Collection

    create = {"attributes": [a.strip() for a in attributes.split(",")]} if attributes else {}
    with (
        Collection.open_or_create(collection, **create) as coll,
        _progress_bar("indexing") as bar,
    ):
        task = bar.add_task("indexing", total=None, current="")

        def progress(done: int, total: int, current: str) -> None:
            bar.update(task, completed=done, total=total, current=Path(current).name)

        return coll.add(sources, progress=progress, **options)


@app.command()
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
    attributes: Annotated[
        str | None,
        typer.Option(help="For a new collection: attributes to extract, e.g. color,texture."),
    ] = None,
) -> None:
    """Add images to a collection (creating it if needed); only new or changed files are read."""
    report = run_index(
        collection, sources, attributes, prune=prune, recursive=recursive, jobs=jobs or None
    )
    if as_json:
        out.print_json(
            data={
                "added": report.added,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "removed": report.removed,
                "skipped": [{"path": p, "reason": r} for p, r in report.failed],
            }
        )
        return
    out.print(report.summary())
    for path, reason in report.failed:
        out.print(f"  skipped {path}: {reason}", highlight=False)


@app.command()
@friendly_errors
def search(
    collection: CollectionOption,
    image: Annotated[
        str | None,
        typer.Argument(help="Query image: a path, an http(s) URL, or id:N for a stored image."),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option("--weights", "-w", help="e.g. color=0.7,texture=0.2,shape=0.1,location=0.3"),
    ] = None,
    top: Annotated[int, typer.Option("--top", "-k", help="How many results.")] = 10,
    threshold: Annotated[
        float | None, typer.Option(help="Only images scoring at most this (0..100).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Find the images most like a query image; lower score = more alike (0..100)."""
    from lookalike.api import Collection

    if image is None:
        raise LookalikeError("give a query image (path, URL or id:N)")
    with Collection.open(collection) as coll:
        results = coll.search(image, weights=weights, top_k=top, threshold=threshold)
    print_results(results, as_json)


def print_results(results: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(results.to_dict()))
        return
    if not results.hits:
        out.print("no results")
        return
    attributes = list(results.weights)
    table = Table(title="weights: " + ", ".join(f"{k}={v:.2f}" for k, v in results.weights.items()))
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    for name in attributes:
        table.add_column(name, justify="right", style="dim")
    table.add_column("id", justify="right")
    table.add_column("path", overflow="fold")
    for rank, hit in enumerate(results.hits, start=1):
        mark = "" if hit.similar is None else (" *" if hit.similar else "")
        table.add_row(
            str(rank),
            f"{hit.score:.2f}{mark}",
            *[f"{hit.breakdown[name]:.1f}" for name in attributes],
            str(hit.id),
            hit.path,
        )
    out.print(table)


@app.command()
@friendly_errors
def remove(
    images: Annotated[list[str], typer.Argument(help="Image ids or paths.")],
    collection: CollectionOption,
) -> None:
    """Remove images from a collection (the files themselves are not touched)."""
    from lookalike.api import Collection

    with Collection.open(collection) as coll:
        count = coll.remove(images)
    out.print(f"{count} removed")


@app.command()
@friendly_errors
def info(
    collection: CollectionOption,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What a collection holds: images, attributes, preprocessing, default weights."""
    from lookalike.api import Collection

    with Collection.open(collection) as coll:
        data = coll.info()
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


def main() -> None:  # pragma: no cover - console entry point
    app()
