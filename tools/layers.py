"""Lines of code per layer and the longest functions: ``python tools/layers.py [ROOT] [--top N]``.

The layers are the ones docs/architecture.md describes (lib's core, storage kernel wrappers, caches,
domain operations, VM disks, network, lab, CLI; bench; sim). Lines are non-blank, non-comment lines
of the ``.py`` files; a function's length is its lines from ``def`` to its last statement.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

LAYERS = (
    ("lib: storage/kernel", "lib/skycache/storage/kernel"),
    ("lib: storage/caches", "lib/skycache/storage/caches"),
    ("lib: storage/vmdisk", "lib/skycache/storage/vmdisk"),
    ("lib: storage (domain)", "lib/skycache/storage"),
    ("lib: net", "lib/skycache/net"),
    ("lib: lab", "lib/skycache/lab"),
    ("lib: cli", "lib/skycache/cli"),
    ("lib: core", "lib/skycache"),
    ("bench", "bench/skycache/bench"),
    ("sim", "sim/skycache/sim"),
)


def layer_of(rel: str) -> str:
    for name, prefix in LAYERS:
        if rel.startswith(prefix + "/"):
            return name
    return "other"


def code_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    root = Path(args.root)
    per_layer: dict[str, tuple[int, int]] = {}
    functions: list[tuple[int, str]] = []
    for base in ("lib", "bench", "sim"):
        for f in sorted((root / base).rglob("*.py")):
            rel = str(f.relative_to(root))
            text = f.read_text()
            files, lines = per_layer.get(layer_of(rel), (0, 0))
            per_layer[layer_of(rel)] = (files + 1, lines + code_lines(text))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
                    functions.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
    print(f"{'layer':24s} {'files':>5s} {'lines':>6s}")
    for name, _ in LAYERS:
        if name in per_layer:
            files, lines = per_layer[name]
            print(f"{name:24s} {files:5d} {lines:6d}")
    total = sum(v[1] for v in per_layer.values())
    print(f"{'total':24s} {sum(v[0] for v in per_layer.values()):5d} {total:6d}")
    print(f"\nthe {args.top} longest functions (lines):")
    for length, where in sorted(functions, reverse=True)[: args.top]:
        print(f"  {length:4d}  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
