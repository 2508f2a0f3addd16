"""Write the seed's heavy document: a clean JSON object of about SIZE bytes; print its cost.

Runs with the generated project's interpreter and times the project's own ``check_document``
(parse and validate) on it, three times, and prints ``{"bytes": ..., "cpu_seconds": median}``.

    <project>/.venv/bin/python heavy_document.py PACKAGE OUT.json [--size 900000]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

SENTENCE = "Invoice 2024-117 for ACME Corp, delivered to 12 Main Street, paid in full."
ITEM = {
    "title": " ".join([SENTENCE] * 8),
    "notes": [" ".join([SENTENCE] * 4)] * 2,
    "billing_email": "billing@example.com",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package")
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=900_000)
    args = parser.parse_args()
    check_document = importlib.import_module(f"{args.package}.documents").check_document
    per_item = len(json.dumps(ITEM)) + 2
    raw = json.dumps({"items": [ITEM] * max(1, args.size // per_item)}).encode()
    costs = []
    for _ in range(3):
        started = time.process_time()
        if check_document(raw):
            raise SystemExit("the heavy document must be clean: a problem ends a check early")
        costs.append(time.process_time() - started)
    args.out.write_bytes(raw)
    print(json.dumps({"bytes": len(raw), "cpu_seconds": statistics.median(costs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
