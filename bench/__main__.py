"""``make bench``: run every benchmark and print one JSON document."""

from __future__ import annotations

import json
import sys

from . import codecs


def main() -> int:
    results = {"codecs": codecs.run()}
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
