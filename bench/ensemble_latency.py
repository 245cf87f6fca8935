"""Size and per-window latency of an int8 ensemble against one of its members, same run, LiteRT.

    python bench/ensemble_latency.py --ensemble runs/cv_pi_g0/ravdess_s0_fold0.tflite \\
        --small ../model2/runs/cv_seeds/ravdess_s0_fold0.tflite

Measured on one core (affinity pinned, interpreter threads = 1, as ``ser-edge run``), on the same
speech-like audio, in interleaved rounds (medians of ``--repeats``):

* ``inference_ms_per_window``: requantised int8 window -> state reset + invoke (``IntModel.predict_window``),
  wall time and the thread's CPU time (the better estimate on a shared machine);
* ``window_latency_ms_p50``: what a streaming caller waits per 2 s window (front end for the hop's new
  audio + requantise + reset + inference, ``StreamingClassifier.push_audio`` in 64 ms chunks, gate off),
  the median over repeats of each repeat's median window.

Writes ``bench/results/ensemble_latency.json`` and prints a Markdown table. Goal for a Raspberry Pi
model (issue #11): <= 1 MB and <= 5 ms per window on this machine.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (git_commit, interleaved_wall_and_cpu_medians, machine, markdown_table,  # noqa: E402
                          pin_one_core, write_result)
from bench.runtime import window_latencies  # noqa: E402
from edge_runtime.test_signals import speech_with_pauses  # noqa: E402

pin_one_core()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

GOALS = {"model_bytes": 1 << 20, "window_latency_ms_p50": 5.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ensemble", type=Path, required=True, help="the int8 ensemble (.tflite)")
    ap.add_argument("--small", type=Path, required=True, help="the single small model to compare with")
    ap.add_argument("--seconds", type=float, default=30.0, help="audio per repeat")
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)
    for p in (a.ensemble, a.small):
        if not p.is_file():
            print(f"error: {p}: no such file", file=sys.stderr)
            return 2
    commit = git_commit()
    from edge_runtime.frontend import compute_features
    from edge_runtime.interpreter import IntModel

    pcm = speech_with_pauses(a.seconds)
    paths = {"small": a.small, "ensemble": a.ensemble}
    models = {k: IntModel(p, backend="litert", num_threads=1) for k, p in paths.items()}
    meta = models["small"].meta
    if (models["ensemble"].meta.window_frames, models["ensemble"].meta.hop_frames) != (meta.window_frames, meta.hop_frames):
        print("error: the two models have different windows", file=sys.stderr)
        return 2
    feats = compute_features(pcm, models["small"].frontend_config)
    W, H = meta.window_frames, meta.hop_frames
    wins = {k: [m.quantize(feats[s:s + W]) for s in range(0, len(feats) - W + 1, H)] for k, m in models.items()}
    n = len(wins["small"])
    wall, cpu = interleaved_wall_and_cpu_medians(
        {k: (lambda m=m, w=wins[k]: [m.predict_window(x) for x in w]) for k, m in models.items()}, repeats=a.repeats)
    lat = {k: [] for k in paths}
    for _ in range(a.repeats):  # interleaved, as above
        for k, p in paths.items():
            lat[k].append(float(np.median(window_latencies(str(p), "litert", pcm))))
    res = {"models": {k: {"path": str(p), "bytes": p.stat().st_size, "arch": models[k].meta.arch,
                          "params": models[k].meta.params,
                          "members": models[k].meta.extra.get("members", 1),
                          "inference_ms_per_window_wall": round(1000 * wall[k] / n, 4),
                          "inference_ms_per_window_cpu": round(1000 * cpu[k] / n, 4),
                          "window_latency_ms_p50": round(float(np.median(lat[k])), 4)} for k, p in paths.items()},
           "windows_per_repeat": n, "repeats": a.repeats, "window_s": W * meta.frontend_config().hop_length / 16000,
           "backend": "litert", "threads": 1, "commit": commit, "machine": machine(), "goals": GOALS}
    e, s = res["models"]["ensemble"], res["models"]["small"]
    res["model_bytes"] = e["bytes"]
    res["window_latency_ms_p50"] = e["window_latency_ms_p50"]
    res["inference_ratio_ensemble_vs_small_cpu"] = round(e["inference_ms_per_window_cpu"] / s["inference_ms_per_window_cpu"], 3)
    res["goals_met"] = {"model_bytes": e["bytes"] <= GOALS["model_bytes"],
                        "window_latency_ms_p50": e["window_latency_ms_p50"] <= GOALS["window_latency_ms_p50"]}
    path = write_result("ensemble_latency", res)
    print(markdown_table([(k, v["bytes"], v["members"], v["inference_ms_per_window_wall"],
                           v["inference_ms_per_window_cpu"], v["window_latency_ms_p50"]) for k, v in res["models"].items()],
                         ("model", "bytes", "members", "inference ms/window (wall)", "inference ms/window (cpu)",
                          "window latency p50 ms (front end + inference)")))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
