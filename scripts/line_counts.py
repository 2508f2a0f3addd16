"""How much code the template owns in a generated service: runtime/ and transport/, by part.

Renders each transport at a commit (default: the working tree, HEAD with its uncommitted
changes) with copier, tasks skipped, and prints per part of runtime/ and transport/ the lines
of its modules and, of those, the lines of code (no blank lines, comments or docstrings):

    .venv/bin/python scripts/line_counts.py                  # the working tree
    .venv/bin/python scripts/line_counts.py --ref 240b8b8    # an older release
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
import tempfile
import tokenize
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRANSPORTS = ("fastapi", "grpc", "grpc_aio")
# The part a module belongs to: the first of these its path (under the package) starts with.
PARTS = (
    ("runtime/stall", "stall detection"),
    ("runtime/offload", "offloading"),
    ("runtime/tracing", "tracing"),
    ("runtime/log", "logging"),
    ("runtime/metrics", "metrics"),
    ("runtime/context", "request context"),
    ("runtime/settings", "settings"),
    ("runtime/", "lifecycle, signals, command line"),
    ("transport/", "transport"),
)


def code_lines(text: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Expr) or not isinstance(body, list) or not body:
            continue
        first = body[0]
        if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
            docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines: set[int] = set()
    skipped = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in skipped or token.type == tokenize.ENDMARKER:
            continue
        lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(lines)


def part_of(relative: str) -> str:
    return next(name for prefix, name in PARTS if relative.startswith(prefix))


def count(project: Path) -> dict[str, tuple[int, int]]:
    """(lines, code lines) per part of the rendered ``project``."""
    package = next(p for p in (project / "src").iterdir() if (p / "runtime").is_dir())
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for module in sorted([*package.glob("runtime/**/*.py"), *package.glob("transport/**/*.py")]):
        text = module.read_text()
        part = totals[part_of(module.relative_to(package).as_posix())]
        part[0] += len(text.splitlines())
        part[1] += code_lines(text)
    return {name: (lines, code) for name, (lines, code) in totals.items()}


def render(ref: str, transport: str, into: Path) -> Path:
    target = into / transport
    copier = Path(sys.executable).parent / "copier"  # this interpreter's; PATH may lack it
    command = [str(copier), "copy", "--quiet", "--trust", "--defaults", "--skip-tasks"]
    command += ["--data", f"transport={transport}", "--vcs-ref", ref]
    subprocess.run([*command, str(REPO), str(target)], check=True, capture_output=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ref", default="HEAD", help="a commit of this repository (default: the working tree)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        counts = {t: count(render(args.ref, t, Path(work))) for t in TRANSPORTS}
    print(f"runtime/ + transport/ at {args.ref}: lines / lines of code\n")
    print("| part | " + " | ".join(TRANSPORTS) + " |")
    print("|---|" + "---|" * len(TRANSPORTS))
    names = [name for _, name in PARTS if any(name in c for c in counts.values())]
    for name in [*names, "total"]:
        cells = []
        for transport in TRANSPORTS:
            parts = counts[transport]
            if name == "total":
                lines, code = (sum(v[i] for v in parts.values()) for i in (0, 1))
            else:
                lines, code = parts.get(name, (0, 0))
            cells.append(f"{lines:,} / {code:,}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
