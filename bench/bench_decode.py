"""A big, cheap-to-send query image: decode + prepare time and peak memory, reduced decode
(what lookalike does) against the full decode (the baseline), each in a fresh process.

The image is the issue's case: a 7071x7071 PNG (under the 100-megapixel limit) of ~150 KB.
Run: .venv/bin/python bench/bench_decode.py
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from lookalike.decode import Preprocess, decode_bytes, prepare
data = open(sys.argv[1], "rb").read()
draft = int(sys.argv[2]) or None
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
decoded = decode_bytes(data, "big.png", draft=draft)
prepared = prepare(decoded.rgb, Preprocess())
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"s": elapsed, "mb": peak / 1024, "base": base / 1024,
                  "shape": list(decoded.rgb.shape)}))
"""


def big_png(side: int = 7071) -> bytes:
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((side, side))
    image = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def measure(path: Path, draft: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(draft)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.png"
        # written by another process: a child inherits its parent's peak RSS at fork
        subprocess.run([sys.executable, __file__, "--write", str(path)], check=True)
        print(f"7071x7071 PNG of {path.stat().st_size / 1024:.0f} KB")
        full = measure(path, 0)
        reduced = measure(path, 512)  # what ingest and queries pass for a 256-pixel frame
    for name, row in (("full decode (baseline)", full), ("reduced decode", reduced)):
        print(
            f"{name:24} {row['s']:6.2f} s  peak RSS {row['mb']:5.0f} MB (after imports "
            f"{row['base']:.0f} MB)  decoded {row['shape']}"
        )
    grown = {name: row["mb"] - row["base"] for name, row in (("full", full), ("red", reduced))}
    print(
        f"reduced / full: time x{reduced['s'] / full['s']:.2f}, "
        f"peak memory above imports x{grown['red'] / max(grown['full'], 1):.2f}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        Path(sys.argv[2]).write_bytes(big_png())
    else:
        main()
