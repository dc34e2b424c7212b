"""Sample images for the demo, the tests and the benchmarks, made from scikit-image's photos.

No download is needed: scikit-image ships these photographs and textures. Transformed copies
(crop, resize, JPEG quality, rotation, brightness, mirror) are the near-duplicates a search
should find: each copy's original must come back first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

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


def _jpeg(quality: int) -> Callable[[Image.Image], Image.Image]:
    def compress(img: Image.Image) -> Image.Image:
        import io

        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    return compress


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop80": _crop80,
    "half": lambda img: img.resize((max(1, img.width // 2), max(1, img.height // 2))),
    "jpeg30": _jpeg(30),
    "rotate5": lambda img: img.rotate(5, resample=Image.Resampling.BICUBIC, expand=False),
    "bright120": lambda img: ImageEnhance.Brightness(img).enhance(1.2),
    "hflip": ImageOps.mirror,
}


def _crop30(img: Image.Image) -> Image.Image:
    """30% of the area, off centre (towards the top right)."""
    w, h = img.size
    cw, ch = max(1, round(w * 0.3**0.5)), max(1, round(h * 0.3**0.5))
    left, top = round((w - cw) * 0.7), round((h - ch) * 0.3)
    return img.crop((left, top, left + cw, top + ch))


def _hue_shift(img: Image.Image) -> Image.Image:
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + 43) % 256  # about 60 degrees
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _inset(img: Image.Image) -> Image.Image:
    """The image at half size on a background of blurred colour noise."""
    w, h = img.size
    rng = np.random.default_rng(7)
    coarse = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    background = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    background.paste(img.resize((max(1, w // 2), max(1, h // 2))), (w // 8, h // 3))
    return background


def _shear(img: Image.Image) -> Image.Image:
    w, h = img.size
    matrix = (1, 0.3, -0.15 * h, 0, 1, 0)
    return img.transform((w, h), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR)


def _blur_noise(img: Image.Image) -> Image.Image:
    pixels = np.asarray(img.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)
    pixels += np.random.default_rng(3).normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# Harder copies for copy-detection benchmarks (issue 12): what people do to images they reuse.
COPY_TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop30": _crop30,
    "rot90": lambda img: img.rotate(90, expand=True),
    "hue": _hue_shift,
    "inset": _inset,
    "shear": _shear,
    "blur_noise": _blur_noise,
    "grey": lambda img: img.convert("L").convert("RGB"),
    "jpeg20": _jpeg(20),
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
