"""Refresh the numbers quoted in README.md from bench/results/*.json (the README quotes nothing else).

    python bench/fill_readme.py        # rewrites the <!-- bench:KEY -->value<!-- /bench --> spans
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def value(key: str):
    name, _, path = key.partition(".")
    data = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
    for part in path.split("."):
        data = data[part]
    return data


def fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}".replace(",", " ")
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    if isinstance(v, int) and abs(v) >= 10000:
        return f"{v:,}".replace(",", " ")
    return str(v)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    pat = re.compile(r"<!-- bench:([\w.]+) -->(.*?)<!-- /bench -->")
    missing = []

    def sub(m: re.Match) -> str:
        try:
            return f"<!-- bench:{m.group(1)} -->{fmt(value(m.group(1)))}<!-- /bench -->"
        except (FileNotFoundError, KeyError) as exc:
            missing.append(f"{m.group(1)} ({exc})")
            return m.group(0)

    readme.write_text(pat.sub(sub, text))
    for m in missing:
        print("missing:", m, file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
