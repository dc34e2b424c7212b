"""`lookalike serve`: the REST API and the web page on one port.

Only the standard library and typer are imported at module level, so registering the command
costs nothing for users who never serve; FastAPI and uvicorn are imported when it runs.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from lookalike.errors import LookalikeError

DEMO_FOLDER = Path("demo")


def build_demo(folder: Path) -> Path:
    """The demo collection of the bundled sample photos and transformed copies, under `folder`
    (the same layout as `lookalike demo`); an existing one is reused, only new files are read."""
    from lookalike.api import Collection
    from lookalike.samples import write_samples

    write_samples(folder / "images")
    with Collection.open_or_create(folder / "collection") as coll:
        report = coll.add([str(folder / "images")])
    print(f"demo collection {folder / 'collection'}: {report.summary()}", file=sys.stderr)
    return folder / "collection"


def serve(
    collection: Annotated[
        Path | None,
        typer.Option("--collection", "-c", help="Collection folder to serve."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (127.0.0.1 = this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    demo: Annotated[
        bool, typer.Option("--demo", help="Build (or reuse) a demo collection and serve it.")
    ] = False,
    demo_folder: Annotated[
        Path, typer.Option(help="Where --demo keeps its images and collection.")
    ] = DEMO_FOLDER,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Key for uploads, replacements and deletions. Prefer $LOOKALIKE_API_KEY or "
            "--api-key-file: a key on the command line shows in the process list. Without one, "
            "writes are disabled; with --demo a random key is made and printed.",
            show_default=False,
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="Read the API key from this file (first line).", show_default=False),
    ] = None,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            help="Host names the server answers to, comma-separated (default: loopback names "
            "and the bind address; $LOOKALIKE_ALLOWED_HOSTS).",
            show_default=False,
        ),
    ] = None,
    read_key_required: Annotated[
        bool, typer.Option(help="Searches and reads need the key too.")
    ] = False,
    allow_private_urls: Annotated[
        bool,
        typer.Option(help="Let query URLs reach loopback, private and link-local addresses."),
    ] = False,
    max_upload_mb: Annotated[
        float | None, typer.Option(help="Largest upload in MiB (default 20).", show_default=False)
    ] = None,
    request_timeout: Annotated[
        float | None, typer.Option(help="Longest search in seconds (default 30).")
    ] = None,
) -> None:
    """Serve the REST API (OpenAPI at /api/openapi.json) and the search page at /."""
    from lookalike.server.admission import budget_threads_env

    budget_threads_env()  # before numerical libraries start their pools, where still possible
    try:
        import uvicorn

        from lookalike.server.app import ServerSettings, create_app
    except ImportError as exc:
        raise LookalikeError(
            f"serving needs the server extras ({exc.name} is missing): "
            "pip install 'lookalike[server]'"
        ) from None
    if demo and collection is not None:
        raise LookalikeError("give either --collection or --demo, not both")
    if collection is None and not demo:
        raise LookalikeError("give a collection (-c FOLDER), or --demo for the sample collection")
    key = resolve_api_key(api_key, api_key_file)
    made_key = False
    if demo:
        collection = build_demo(demo_folder)
        if key is None:
            key, made_key = secrets.token_urlsafe(16), True
    settings = ServerSettings.from_env(
        api_key=key,
        read_key_required=read_key_required or None,
        allow_private_urls=allow_private_urls or None,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024) if max_upload_mb else None,
        request_timeout_s=request_timeout,
        allowed_hosts=allowed_hosts,
        bind_host=host,
    )
    assert collection is not None
    app = create_app(collection, settings)
    shown = f"[{host}]" if ":" in host else host
    print(f"lookalike: serving {collection} on http://{shown}:{port}/", file=sys.stderr)
    if made_key:
        print(f"lookalike: demo API key for uploads: {key}", file=sys.stderr)
    elif not settings.api_key:
        print("lookalike: no API key set: uploads and deletions are disabled", file=sys.stderr)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"lookalike: listening on {host}: reachable from other machines", file=sys.stderr)
    show_start_up_log()
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=5)


def show_start_up_log() -> None:
    """Print lookalike's own log lines (info and up) as the lines above: what start-up does
    (indexes built, a few minutes at 1M after an import; threads; page cache) was silent,
    uvicorn configures only its own loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lookalike: %(message)s"))
    logger = logging.getLogger("lookalike")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a root handler someone configured would print them twice


def resolve_api_key(option: str | None, key_file: Path | None) -> str | None:
    """The API key from --api-key-file, $LOOKALIKE_API_KEY or --api-key (with a warning: the
    command line is visible to every user of the machine in the process list)."""
    if option and key_file:
        raise LookalikeError("give --api-key or --api-key-file, not both")
    if key_file is not None:
        try:
            lines = key_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LookalikeError(f"cannot read the API key file {key_file}: {exc}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise LookalikeError(f"the API key file {key_file} is empty")
        return key
    if option:
        print(
            "lookalike: warning: --api-key is visible to other users in the process list; "
            "use $LOOKALIKE_API_KEY or --api-key-file instead",
            file=sys.stderr,
        )
        return option
    return os.environ.get("LOOKALIKE_API_KEY") or None
