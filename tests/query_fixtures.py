"""One indexed folder for the query tests (issue 11): images whose right answers are known by
construction, sample photos with near-duplicate copies, a broken file; built once through the
CLI (`lookalike index`, default job count) and shared by test_understand, test_calibration and
test_feedback (read-only)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from PIL import Image
from test_cli import run

from lookalike.samples import write_samples

RGB = {
    "red": (215, 25, 30),
    "blue": (25, 55, 215),
    "green": (30, 165, 45),
    "grey": (128, 128, 130),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "yellow": (240, 220, 30),
}
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "brick", "coins", "camera", "horse")
DUPLICATED = ("chelsea", "coffee", "astronaut")  # each has crop80 and jpeg30 copies


def run_json(*args: str) -> dict:
    return json.loads(run(*args, "--json").stdout)


def canvas(fill: str, size: int = 96, noise: int = 0, seed: int = 0) -> np.ndarray:
    array = np.empty((size, size, 3), np.int16)
    array[:] = RGB[fill]
    if noise:
        array += np.random.default_rng(seed).integers(-noise, noise + 1, array.shape)
    return array


def save(array: np.ndarray, path: Path) -> None:
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)


def constructed(folder: Path) -> dict[str, dict]:
    """Write the constructed images; returns metadata keyed by path."""
    folder.mkdir(parents=True)
    meta: dict[str, dict] = {}
    for i in range(3):
        save(canvas("blue", noise=12, seed=i), folder / f"blue_{i}.png")
    save(canvas("red", noise=10), folder / "red_dress.png")
    meta[str(folder / "red_dress.png")] = {"keywords": ["dress"]}
    save(canvas("blue", noise=10, seed=7), folder / "blue_dress.png")
    meta[str(folder / "blue_dress.png")] = {"keywords": ["dress"]}
    save(canvas("red", noise=10, seed=3), folder / "red_car.png")
    meta[str(folder / "red_car.png")] = {"keywords": ["car"]}
    save(canvas("green"), folder / "green.png")
    save(canvas("yellow"), folder / "yellow.png")
    half = canvas("grey")
    half[:48] = RGB["blue"]
    save(half, folder / "blue_over_grey.png")
    half = canvas("blue")
    half[:48] = RGB["grey"]
    save(half, folder / "grey_over_blue.png")
    mixed = canvas("black")  # top half blue and grey side by side
    mixed[:48, :48] = RGB["blue"]
    mixed[:48, 48:] = RGB["grey"]
    save(mixed, folder / "top_blue_and_grey.png")
    small = canvas("white")  # a small blue patch above a small grey one: relative, not halves
    small[10:30, 50:80] = RGB["blue"]
    small[60:85, 10:40] = RGB["grey"]
    save(small, folder / "blue_patch_above_grey.png")
    sides = canvas("green")
    sides[:, :48] = RGB["red"]
    save(sides, folder / "red_left_green.png")
    sides = canvas("red")
    sides[:, :48] = RGB["green"]
    save(sides, folder / "green_left_red.png")
    return meta


def build(base: Path) -> tuple[Path, Path]:
    images = base / "images"
    meta = constructed(images / "made")
    write_samples(images / "photos", variants=(), names=PHOTOS)
    write_samples(images / "copies", variants=("crop80", "jpeg30"), names=DUPLICATED)
    for stray in (images / "copies" / "photos").glob("*.png"):
        stray.unlink()  # the originals are in photos/ already
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    sidecar = base / "meta.json"
    sidecar.write_text(json.dumps(meta))
    coll = base / "coll"
    attributes = "color,texture,shape,color_location,texture_location,shape_location,perceptual"
    indexed = run("index", str(images), "-c", str(coll), "--attributes", attributes,
                  "--metadata", str(sidecar), check=False)  # fmt: skip
    assert indexed.returncode == 3, indexed.stderr  # 3: finished, broken.png was skipped
    assert "broken.png" in indexed.stderr + indexed.stdout
    return coll, images


_BUILT: dict[str, tuple[Path, Path]] = {}
_LOCK = threading.Lock()


def query_collection(tmp_path_factory) -> tuple[Path, Path]:
    """(collection, image folder), built on first use; treat it as read-only."""
    with _LOCK:
        if "coll" not in _BUILT:
            _BUILT["coll"] = build(tmp_path_factory.mktemp("queries"))
        return _BUILT["coll"]


def names(results: dict) -> list[str]:
    return [Path(hit["path"]).stem for hit in results["results"]]


def ids_by_stem(coll: Path) -> dict[str, int]:
    from lookalike.api import Collection

    with Collection.open(coll) as c:
        rows = c.catalog.query("SELECT id, path FROM images")
    return {Path(path).stem: int(image_id) for image_id, path in rows}
