"""Render every Graphviz source in assets/ to SVG, stamping the source's sha256 into the output.

Run with ``make diagrams`` (needs Graphviz's ``dot``: apt-get install graphviz).  The test suite
checks each SVG's stamp against its source, so a diagram can never silently drift from it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent
STAMP = "<!-- source-sha256: {} -->\n"


def source_digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def render(source: Path) -> Path:
    svg = subprocess.run(
        ["dot", "-Tsvg", str(source)], check=True, capture_output=True, text=True
    ).stdout
    head, _, body = svg.partition("\n")  # keep the XML declaration first
    out = source.with_suffix(".svg")
    out.write_text(head + "\n" + STAMP.format(source_digest(source)) + body)
    return out


def main() -> int:
    if shutil.which("dot") is None:
        print(
            "render: Graphviz 'dot' not found (Debian: apt-get install graphviz)", file=sys.stderr
        )
        return 1
    for source in sorted(ASSETS.glob("*.dot")):
        print(f"rendered {render(source).relative_to(ASSETS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
