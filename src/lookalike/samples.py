"""Sample images for the demo, the tests and the benchmarks, made from scikit-image's photos.

No download is needed: scikit-image ships these photographs and textures. Transformed copies
(crop, resize, JPEG quality, rotation, brightness, mirror) are the near-duplicates a search
should find: each copy's original must come back first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

PHOTO_NAMES = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon",
    "page", "retina", "rocket", "text", "cell",
)  # fmt: skip


def sample_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photos as an RGB Pillow image."""
    from skimage import data

    array = getattr(data, name)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(array)
    return image.convert("RGB")


def sample_photos() -> dict[str, Image.Image]:
    return {name: sample_photo(name) for name in PHOTO_NAMES}


def _crop80(img: Image.Image) -> Image.Image:
    w, h = img.size
    dx, dy = round(w * 0.1), round(h * 0.1)
    return img.crop((dx, dy, w - dx, h - dy))


def _jpeg30(img: Image.Image) -> Image.Image:
    import io

    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=30)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop80": _crop80,
    "half": lambda img: img.resize((max(1, img.width // 2), max(1, img.height // 2))),
    "jpeg30": _jpeg30,
    "rotate5": lambda img: img.rotate(5, resample=Image.Resampling.BICUBIC, expand=False),
    "bright120": lambda img: ImageEnhance.Brightness(img).enhance(1.2),
    "hflip": ImageOps.mirror,
}


def write_samples(
    folder: str | Path, *, variants: tuple[str, ...] = ("crop80", "hflip"), names=PHOTO_NAMES
) -> tuple[list[Path], list[Path]]:
    """Write originals to folder/photos and chosen transformed copies to folder/variants.

    Returns (original paths, variant paths); a variant is named `<photo>__<transform>.jpg`.
    """
    folder = Path(folder)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    originals, copies = [], []
    for name in names:
        image = sample_photo(name)
        path = folder / "photos" / f"{name}.png"
        if not path.exists():
            image.save(path)
        originals.append(path)
        if variants:
            (folder / "variants").mkdir(exist_ok=True)
        for transform in variants:
            vpath = folder / "variants" / f"{name}__{transform}.jpg"
            if not vpath.exists():
                TRANSFORMS[transform](image).save(vpath, quality=92)
            copies.append(vpath)
    return originals, copies
