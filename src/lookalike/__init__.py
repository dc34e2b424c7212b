"""lookalike: content-based image retrieval ("find the images that look like this one")."""

from lookalike.errors import LookalikeError

__all__ = ["LookalikeError", "__version__"]
__version__ = "0.1.0"
