"""Ingest workers keep freed memory for reuse (`pool.tune_allocator`): it must change where
memory comes from, never a signature. Indexing through the CLI runs every worker with it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

DESCRIBE = """
import sys
import numpy as np
from lookalike import pool
if sys.argv[1] == "tuned":
    assert pool.tune_allocator() is True  # glibc: the thresholds were accepted
from lookalike.decode import Preprocess, prepare
from lookalike.features.base import PreparedImage
from lookalike.features.registry import CLASSIC_ATTRIBUTES, create_extractor
from lookalike.samples import PHOTO_NAMES, sample_photo
vectors = []
for name in PHOTO_NAMES[:4]:
    image = PreparedImage(prepare(np.asarray(sample_photo(name).convert("RGB")), Preprocess()))
    vectors += [create_extractor(a).extract(image) for a in CLASSIC_ATTRIBUTES]
sys.stdout.buffer.write(np.concatenate(vectors).astype(np.float32).tobytes())
"""


def describe(mode: str) -> np.ndarray:
    done = subprocess.run(
        [sys.executable, "-c", DESCRIBE, mode], capture_output=True, timeout=300, check=True
    )
    return np.frombuffer(done.stdout, np.float32)


def test_tuned_allocator_gives_the_same_signatures_bit_for_bit():
    tuned, default = describe("tuned"), describe("default")
    assert tuned.size > 1000 and np.array_equal(tuned, default)
