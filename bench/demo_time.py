"""Time the README's main command on a fresh clone: ``make demo`` in a new clone of this repository
(new virtualenv, packages from the local pip cache, so downloads are excluded), and record
``demo_seconds`` (and the split: set-up vs the demo itself) in bench/results/pretrained.json.

    python bench/demo_time.py
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, ROOT, machine  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ser-edge-demo-") as tmp:
        clone = Path(tmp) / "ser-edge"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        t0 = time.perf_counter()
        proc = subprocess.run(["make", "demo"], cwd=clone, capture_output=True, text=True)
        total = time.perf_counter() - t0
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            print(log[-4000:])
            return 1
        m = re.search(r"total (\d+) s", log)
        summary = json.loads((clone / "out" / "demo" / "demo_summary.json").read_text())
    path = RESULTS / "pretrained.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["demo_seconds"] = round(total, 1)
    data["demo"] = {"make_demo_seconds": round(total, 1), "demo_command_seconds": summary["seconds"],
                    "setup_seconds": round(total - summary["seconds"], 1), "build_seconds": summary["build_s"],
                    "labels_identical_audio_vs_features": summary["labels_identical_audio_vs_features"],
                    "note": "fresh clone, new virtualenv, packages from the local pip cache (downloads excluded)",
                    "machine": machine()}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"| make demo on a fresh clone | {total:.0f} s (set-up {total - summary['seconds']:.0f} s, demo {summary['seconds']:.0f} s) |")
    return 0 if m else 1


if __name__ == "__main__":
    sys.exit(main())
