"""Attribute name -> extractor, built lazily so that optional ones (deep) cost nothing unused.

Adding an attribute is adding a module and one line in `_FACTORIES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from lookalike.errors import CollectionError
from lookalike.features.base import Extractor

# name -> "module:factory"; the factory takes keyword options and returns an Extractor.
_FACTORIES: dict[str, str] = {
    "color": "lookalike.features.color:ColorExtractor",
    "color_location": "lookalike.features.location:ColorLocationExtractor",
    "texture": "lookalike.features.texture:TextureExtractor",
    "texture_location": "lookalike.features.location:TextureLocationExtractor",
    "shape": "lookalike.features.shape:ShapeExtractor",
    "shape_location": "lookalike.features.location:ShapeLocationExtractor",
    "perceptual": "lookalike.features.perceptual:PerceptualColorExtractor",
    "deep": "lookalike.features.deep:DeepExtractor",
}

# name -> "module:function" saying whether its dependencies are installed, without importing
# them (deep's torch costs seconds; `lookalike info` or a search must not pay them).
_AVAILABILITY: dict[str, str] = {
    "deep": "lookalike.features.deep:dependencies_installed",
}

# The classic signature; every collection has it.
CLASSIC_ATTRIBUTES = (
    "color",
    "texture",
    "shape",
    "color_location",
    "texture_location",
    "shape_location",
    "perceptual",
)
# The location variants that a user's plain "location" weight is spread over.
LOCATION_OF = {
    "color": "color_location",
    "texture": "texture_location",
    "shape": "shape_location",
}


def _factory(name: str) -> Callable[..., Extractor]:
    try:
        module_name, attr = _FACTORIES[name].split(":")
    except KeyError:
        raise CollectionError(
            f"unknown attribute {name!r}; known: {', '.join(_FACTORIES)}"
        ) from None
    return getattr(importlib.import_module(module_name), attr)


def create_extractor(name: str, **options: Any) -> Extractor:
    """Build the extractor for `name` with the collection's recorded options."""
    return _factory(name)(**options)


def is_available(name: str) -> bool:
    """Whether the attribute's dependencies are installed (deep: its weights, and ONNX Runtime
    or torch), found without importing the heavy ones."""
    try:
        _factory(name)
    except (ImportError, CollectionError):
        return False
    check = _AVAILABILITY.get(name)
    if check is None:
        return True
    module_name, attr = check.split(":")
    return bool(getattr(importlib.import_module(module_name), attr)())
