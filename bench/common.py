"""Shared helpers for the benchmarks: data location, timing, result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
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
    return interleaved_wall_and_cpu_medians(fns, repeats)[0]


def interleaved_wall_and_cpu_medians(fns: dict[str, Callable[[], object]],
                                     repeats: int = 7) -> tuple[dict[str, float], dict[str, float]]:
    """From the same interleaved rounds: the median wall time of each function, and its median
    CPU time of the calling thread (``time.thread_time``).

    For single-threaded code pinned to one core the two agree on an idle machine. On a shared one the
    wall time also counts the time other processes ran; the thread's CPU time does not, so it is the
    better estimate of the idle figure. Medians (not the fastest round) so that one lucky round
    cannot make a figure; the same statistic for every implementation of the run."""
    for fn in fns.values():
        fn()  # warm-up (JIT caches, page faults)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
    return ({k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()})


def rss_mb() -> float:
    """This process's resident memory now (MB), from ``/proc/self/statm``; NaN where there is no procfs."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine() -> dict:
    """The machine a result was measured on, with its load average when the result was written
    (speed ratios are measured within one run, but a busy machine still moves them)."""
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "loadavg_1_5_15min": load}


def git_commit() -> str:
    """The commit a benchmark measures: ``git rev-parse HEAD`` (+ ``-dirty`` when tracked files were
    edited), or ``$SER_EDGE_COMMIT`` when run from an exported copy of the tree (so edits to the
    work tree cannot leak into a long run). Call it when the run starts. Works under sudo too
    (git refuses a repository owned by another user unless it is marked safe)."""
    if os.environ.get("SER_EDGE_COMMIT"):
        return os.environ["SER_EDGE_COMMIT"]
    git = ["git", "-c", f"safe.directory={ROOT}"]
    try:
        head = subprocess.run(git + ["rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def markdown_table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def peer_mfcc_runners(cfg, clips) -> dict[str, Callable[[], object]]:
    """The float peers every speed benchmark compares with, on the same int16 ``clips`` and the same
    framing/mel parameters as ``cfg``: librosa MFCC and kaldi-native-fbank's online MFCC."""
    import kaldi_native_fbank as knf
    import librosa
    import numpy as np

    clips_f = [x.astype(np.float32) / 32768 for x in clips]
    lib_kw = dict(sr=cfg.sample_rate, n_fft=cfg.frame_length, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
                  n_mfcc=cfg.n_mfcc, fmin=cfg.fmin, fmax=cfg.fmax, center=False)
    kopts = knf.MfccOptions()
    kopts.frame_opts.samp_freq = cfg.sample_rate
    kopts.frame_opts.frame_length_ms = cfg.frame_ms
    kopts.frame_opts.frame_shift_ms = cfg.hop_ms
    kopts.frame_opts.dither = 0.0
    kopts.frame_opts.snip_edges = True
    kopts.mel_opts.num_bins = cfg.n_mels
    kopts.mel_opts.low_freq = cfg.fmin
    kopts.mel_opts.high_freq = cfg.fmax
    kopts.num_ceps = cfg.n_mfcc

    def run_kaldi():
        for x in clips_f:
            m = knf.OnlineMfcc(kopts)
            m.accept_waveform(cfg.sample_rate, x * 32768)
            m.input_finished()
            np.array([m.get_frame(i) for i in range(m.num_frames_ready)])

    return {
        "librosa": lambda: [librosa.feature.mfcc(y=x, **lib_kw) for x in clips_f],
        "kaldi_native_fbank": run_kaldi,
    }
