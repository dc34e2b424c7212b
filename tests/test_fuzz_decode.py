"""Mutation fuzz of valid image bytes: bit flips, truncations, splices across formats, zeroed
and repeated ranges. Every case decodes or raises DecodeError (no other exception, no hang),
through the decoder and once through `lookalike index` of a folder of mutants.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest
from conftest import CLASSIC
from hostile import FORMATS, encode, small_photo

from lookalike.decode import Preprocess, decode_bytes, prepare
from lookalike.errors import DecodeError

CASES = 400
SLOWEST_S = 10.0  # far above any real decode of these small images: a hang, not slowness


def valid_images() -> dict[str, bytes]:
    photo = small_photo()
    return {suffix: encode(photo, fmt) for suffix, fmt in FORMATS.items()}


def mutate(data: bytes, other: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of `data` (`other`: another format's bytes, for splices)."""
    kind = rng.choice(["flip", "truncate", "splice", "zero", "repeat", "insert"])
    out = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(out))
            out[at] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        out = out[: rng.randrange(1, len(out))]
    elif kind == "splice":
        out = out[: rng.randrange(1, len(out))] + other[rng.randrange(len(other)) :]
    elif kind == "zero":
        at = rng.randrange(len(out))
        out[at : at + rng.randint(1, 64)] = bytes(len(out[at : at + 64]))
    elif kind == "repeat":
        at = rng.randrange(len(out))
        out = out[:at] + out[at : at + rng.randint(1, 256)] * rng.randint(2, 50) + out[at:]
    else:
        at = rng.randrange(len(out))
        out = out[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))) + out[at:]
    return kind, bytes(out)


def mutants(count: int, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """(suffix, mutation kind, bytes), cycling through every format."""
    rng = random.Random(seed)
    images = valid_images()
    suffixes = list(images)
    out = []
    for i in range(count):
        suffix = suffixes[i % len(suffixes)]
        kind, data = mutate(images[suffix], images[rng.choice(suffixes)], rng)
        out.append((suffix, kind, data))
    return out


def test_every_mutant_decodes_or_raises_decode_error():
    outcomes = {"decoded": 0, "refused": 0}
    for number, (suffix, kind, data) in enumerate(mutants(CASES)):
        started = time.monotonic()
        try:
            decoded = decode_bytes(data, f"m{number}.{suffix}", draft=512)
            prepare(decoded.rgb, Preprocess())
            outcomes["decoded"] += 1
        except DecodeError:
            outcomes["refused"] += 1
        except Exception as exc:  # pragma: no cover - the failure this test exists to catch
            pytest.fail(f"case {number} ({kind} of .{suffix}) raised {type(exc).__name__}: {exc}")
        assert time.monotonic() - started < SLOWEST_S, f"case {number} ({kind}) took too long"
    assert sum(outcomes.values()) == CASES and outcomes["refused"] > 0
    print(f"{CASES} mutants: {outcomes}")


def test_a_folder_of_mutants_indexes_through_the_cli(tmp_path):
    folder = tmp_path / "mutants"
    folder.mkdir()
    cases = mutants(60, seed=1)
    for number, (suffix, _, data) in enumerate(cases):
        (folder / f"m{number:02d}.{suffix}").write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike", "index", str(folder), "-c", str(tmp_path / "c")]
        + ["--attributes", ",".join(CLASSIC), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode in (0, 3), proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    seen = len(report["added"]) + len(report["skipped"])
    assert seen == len(cases)
    assert all(item["reason"] for item in report["skipped"])
