"""Shared helpers for the benchmarks: data location, timing, result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = Path(os.environ.get("SER_EDGE_DATA", ROOT.parent / "shared" / "data"))


def pin_one_core() -> None:
    """Measure on one core: numpy/BLAS threads and the process affinity (where the OS allows)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 7) -> dict[str, float]:
    """Median wall time of each function, run in interleaved rounds so that machine noise hits all alike."""
    for fn in fns.values():
        fn()  # warm-up (JIT caches, page faults)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def markdown_table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)
