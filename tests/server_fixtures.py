"""Shared helpers for the server tests: a small collection whose rankings are known by
construction, and a real uvicorn server on a free loopback port.

The collection is built once per test session (about 2 s) and copied for tests that write.
"""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageDraw

from lookalike.api import Collection
from lookalike.samples import TRANSFORMS, sample_photo, write_samples

ATTRIBUTES = [
    "color", "texture", "shape", "color_location", "texture_location", "shape_location",
    "perceptual",
]  # fmt: skip
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
API_KEY = "test-key-123"

RGB = {
    "red": (220, 20, 30),
    "blue": (20, 50, 220),
    "green": (30, 170, 40),
    "yellow": (250, 220, 20),
    "grey": (128, 128, 128),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "orange": (250, 140, 0),
    "purple": (120, 30, 140),
}


def solid(color: str, size: tuple[int, int] = (96, 72)) -> Image.Image:
    return Image.new("RGB", size, RGB[color])


def halves(top: str, bottom: str, size: tuple[int, int] = (96, 96)) -> Image.Image:
    image = Image.new("RGB", size, RGB[top])
    ImageDraw.Draw(image).rectangle([0, size[1] // 2, size[0], size[1]], fill=RGB[bottom])
    return image


def quadrants(tl: str, tr: str, bl: str, br: str, size: int = 96) -> Image.Image:
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    h = size // 2
    for (x, y), color in zip(((0, 0), (h, 0), (0, h), (h, h)), (tl, tr, bl, br), strict=True):
        draw.rectangle([x, y, x + h - 1, y + h - 1], fill=RGB[color])
    return image


def synthetic_images() -> dict[str, tuple[Image.Image, dict]]:
    """name -> (image, metadata). Names say what each image is, so rankings can be asserted."""
    out: dict[str, tuple[Image.Image, dict]] = {}
    for i, color in enumerate(("red", "blue", "green", "yellow", "white", "orange")):
        out[f"solid_{color}"] = (
            solid(color),
            {"category": "solid", "price": 10 + i, "keywords": [color]},
        )
    for top, bottom, price in (("blue", "grey", 30), ("grey", "blue", 31), ("red", "green", 32)):
        out[f"halves_{top}_{bottom}"] = (
            halves(top, bottom),
            {"category": "halves", "price": price, "keywords": [top, bottom]},
        )
    out["quad_rbyg"] = (
        quadrants("red", "blue", "yellow", "green"),
        {"category": "quadrants", "price": 40, "keywords": ["red", "blue", "yellow", "green"]},
    )
    out["quad_gybr"] = (
        quadrants("green", "yellow", "blue", "red"),
        {"category": "quadrants", "price": 41, "keywords": ["red", "blue", "yellow", "green"]},
    )
    out["quad_rbyg_shaded"] = (  # same layout as quad_rbyg, colours a little off
        quadrants("orange", "purple", "yellow", "green"),
        {"category": "quadrants", "price": 42, "keywords": ["orange", "purple"]},
    )
    return out


def png_bytes(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo_variant_bytes(name: str = "chelsea", transform: str = "crop80") -> bytes:
    """A transformed copy of a sample photo, as a query whose original is in the collection."""
    return png_bytes(TRANSFORMS[transform](sample_photo(name)), "JPEG", quality=90)


def _build(folder: Path) -> Path:
    images = folder / "images"
    images.mkdir(parents=True)
    metadata: dict[str, dict] = {}
    sources: list[str] = []
    for name, (image, meta) in synthetic_images().items():
        path = images / f"{name}.png"
        image.save(path)
        sources.append(str(path))
        metadata[str(path)] = meta
    originals, _ = write_samples(folder / "samples", variants=(), names=PHOTOS)
    for path in originals:
        sources.append(str(path))
        metadata[str(path)] = {"category": "photo", "price": 100, "keywords": [path.stem]}
    with Collection.create(folder / "coll", attributes=ATTRIBUTES) as coll:
        report = coll.add(sources, metadata=metadata, jobs=1)
        assert not report.failed, report.failed
    return folder / "coll"


_TEMPLATE: dict[str, Path] = {}
_LOCK = threading.Lock()


def template_collection(base: Path) -> Path:
    """The shared collection (built on first use under `base`); treat it as read-only."""
    with _LOCK:
        if "coll" not in _TEMPLATE:
            _TEMPLATE["coll"] = _build(base / "server-template")
        return _TEMPLATE["coll"]


def fresh_collection(base: Path, target: Path) -> Path:
    """A private copy of the shared collection, for tests that write."""
    source = template_collection(base)
    shutil.copytree(source, target)
    return target


def ids_by_name(coll: Collection) -> dict[str, int]:
    """File stem -> id, to assert rankings by name."""
    rows = coll.catalog.query("SELECT id, path FROM images")
    return {Path(path).stem: int(image_id) for image_id, path in rows}


def settings_without_uploads(**options):
    """The default server settings for a test that sends no image: the describe workers (two
    processes that load the CNN, ~15 s of CPU to start; tested through `lookalike serve` in
    test_server_serve.py and over uploads elsewhere) would only start and stop."""
    from lookalike.server.app import ServerSettings

    return ServerSettings(describe_workers=False, **options)


def local_client(app, **options):
    """A test client that talks to `app` as a browser on this machine would: Host localhost
    (the server refuses names it was not configured for)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://localhost", **options)


# -- a real server on loopback ---------------------------------------------------------------


@contextmanager
def live_server(app, *, startup_timeout: float = 15.0) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 and a free port; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def static_http_server(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1 answering fixed (status, headers, body) per path, for
    query-URL tests; unknown paths get 404. Yields the base URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            status, headers, body = routes.get(self.path, (404, {}, b"not found"))
            if callable(body):
                body(self)
                return
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
