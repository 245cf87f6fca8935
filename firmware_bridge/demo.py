"""``ser-edge demo``: the whole chain end to end on the built-in generated corpus (placeholder
until every stage lands: runs the stages that exist)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole chain end to end on the built-in generated corpus")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.set_defaults(func=run)


def _step(title: str, argv: list[str]) -> None:
    print(f"\n=== {title}: ser-edge {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edge_runtime", *argv], check=True)
    print(f"=== {title}: done in {time.perf_counter() - t0:.1f} s", flush=True)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _step("front end on a built-in signal", ["frontend", "--plot", str(out / "frontend.png")])
    print(f"\nOutputs: {out / 'frontend.png'}")
    return 0
