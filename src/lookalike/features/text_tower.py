"""The text tower of a CLIP-style model: words embedded into the same space as the images.

When a collection's `deep` attribute comes from the image tower of a CLIP-style model, its
text tower lets text queries find images by what they show, not only by their keywords. No
package ships CLIP weights, so this runs only with a user's own files:

- the tower: TorchScript (called as `model(input_ids, attention_mask)`) or ONNX (inputs named
  `input_ids` and, optionally, `attention_mask`); its first output is (n, d), or (n, L, d)
  token vectors that are mean-pooled over the mask;
- the tokenizer: a local Hugging Face tokenizer folder (tokenizer.json / vocab files), loaded
  offline.

The output width must equal the image tower's, and quality comes only from real, matching
weights: a random tower proves the plumbing, not the search.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError

MAX_TOKENS = 77  # CLIP's context length


class TextTowerError(LookalikeError):
    """A text tower or tokenizer that cannot be loaded or used; names the file and the reason."""


class TextTower:
    """Embeds texts with a local tower and tokenizer; loaded once, on first use."""

    def __init__(self, model: str, tokenizer: str):
        self.model_path = Path(model).expanduser()
        self.tokenizer_path = Path(tokenizer).expanduser()
        for path, what in ((self.model_path, "text tower"), (self.tokenizer_path, "tokenizer")):
            if not path.exists():
                raise TextTowerError(f"{path}: {what} not found")
        self._lock = threading.Lock()
        self._run: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(
                str(self.tokenizer_path), local_files_only=True
            )
        except Exception as exc:
            raise TextTowerError(f"{self.tokenizer_path}: not a usable tokenizer ({exc})") from None
        self._run = (
            self._load_onnx() if self.model_path.suffix.lower() == ".onnx" else self._load_script()
        )

    def _load_script(self):
        import torch

        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(self.model_path), map_location="cpu").eval()
        except Exception as exc:
            raise TextTowerError(
                f"{self.model_path}: not a TorchScript text tower ({exc})"
            ) from None

        def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = module(torch.from_numpy(ids), torch.from_numpy(mask))
            if isinstance(out, tuple | list):
                out = out[0]
            return out.float().numpy()

        return run

    def _load_onnx(self):
        try:
            import onnxruntime as ort

            session = ort.InferenceSession(str(self.model_path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise TextTowerError(
                f"{self.model_path}: not a usable ONNX text tower ({exc})"
            ) from None
        names = {i.name for i in session.get_inputs()}
        if "input_ids" not in names:
            raise TextTowerError(f"{self.model_path}: the ONNX tower has no 'input_ids' input")

        def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            feed = {"input_ids": ids}
            if "attention_mask" in names:
                feed["attention_mask"] = mask
            return np.asarray(session.run(None, feed)[0], dtype=np.float32)

        return run

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, d) float32, L2-normalised."""
        with self._lock:
            if self._run is None:
                self._load()
        tokens = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="np"
        )
        ids = np.asarray(tokens["input_ids"], dtype=np.int64)
        mask = np.asarray(tokens.get("attention_mask", np.ones_like(ids)), dtype=np.int64)
        try:
            out = self._run(ids, mask)
        except Exception as exc:
            raise TextTowerError(
                f"{self.model_path}: failed on {len(texts)} texts ({exc})"
            ) from None
        if out.ndim == 3:  # token vectors: mean over the real tokens
            weights = mask[..., None].astype(np.float32)
            out = (out * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        if out.ndim != 2 or len(out) != len(texts):
            raise TextTowerError(f"{self.model_path}: output of shape {out.shape} is not (n, d)")
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
