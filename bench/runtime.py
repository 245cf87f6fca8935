"""Runtime benchmark: per-window latency, streaming real-time factor, and memory of the Pi runtime.

    python bench/runtime.py [--model M.tflite] [--seconds 60] [--repeats 7]

Model: ``--model``, else ``edge_runtime/models/default.tflite``, else a freshly converted model of
the shipped architecture (model_build crnn, 2 s window = 125 frames x 13 MFCC, 1 s hop; random
weights: speed does not depend on the weights).

Measured on one core (affinity pinned, interpreter threads = 1), in one process, medians of
interleaved repeats:

* ``window_latency_ms_p50/p99``: front end for the window's new audio (one hop) + int8 requantise +
  state reset + inference, LiteRT, audio pushed in 64 ms chunks (the live-mic path);
* ``rtf_stream``: seconds of audio per second of compute for the whole streaming path
  (``StreamingClassifier.push_audio`` over 64 ms chunks, gate on);
* the same two numbers for the peer interpreters (tf.lite, TFLite Micro) on the same windows;
* ``rss_mb``: peak RSS of a fresh subprocess that imports only ``edge_runtime`` (numpy + LiteRT) and
  streams the audio: what the Pi service costs.

Writes bench/results/runtime.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, interleaved_medians, machine, markdown_table, pin_one_core, write_result  # noqa: E402
from edge_runtime.test_signals import speech_with_pauses as speech_like  # noqa: E402

pin_one_core()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

DEFAULT_MODEL = ROOT / "edge_runtime" / "models" / "default.tflite"

# Run in a fresh process: numpy + edge_runtime + LiteRT only, like the Pi service.
_RSS_CHILD = r"""
import resource, sys, numpy as np
from edge_runtime.classifier import StreamingClassifier
clf = StreamingClassifier.from_model(sys.argv[1], backend="litert")
pcm = np.load(sys.argv[2])
for i in range(0, pcm.size, 1024):
    clf.push_audio(pcm[i:i + 1024])
heavy = sorted(m for m in ("tensorflow", "librosa", "scipy", "soundfile", "serial") if m in sys.modules)
# VmHWM (peak RSS of this address space), not ru_maxrss: Linux carries ru_maxrss over from the
# (TensorFlow-sized) parent across fork+exec.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
peak = int(hwm[0].split()[1]) / 1024.0 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(peak, ",".join(heavy))
"""


def build_reference_model(path: Path) -> None:
    """Convert the shipped architecture (random weights) with model_build and embed metadata."""
    from edge_runtime.frontend import FrontendConfig
    from model_build.convert import convert_int8, io_quant
    from model_build.embed_metadata import make_metadata, write_model
    from model_build.models import ModelConfig, build_model, count_params

    fe = FrontendConfig()
    W, H, labels = 125, 62, ["angry", "happy", "neutral", "sad", "fearful", "disgust"]
    mcfg = ModelConfig(arch="crnn")
    m = build_model(mcfg, W, fe.n_features, len(labels), batch_size=1, fold_norm=True)
    rng = np.random.default_rng(0)
    calib = rng.normal(-4, 6, (64, W, fe.n_features)).astype(np.float32)
    model_bytes, _ = convert_int8(m, calib, n_calib=64)
    md = make_metadata(labels=labels, frontend_cfg=fe, window_frames=W, hop_frames=H,
                       quant=io_quant(model_bytes), model_name="bench-crnn-random", arch="crnn",
                       params=count_params(m), trained_on="random weights (benchmark only)",
                       feature_norm={})
    write_model(path, model_bytes, md)




def window_latencies(model_path: str, backend: str, pcm: np.ndarray, chunk: int = 1024) -> np.ndarray:
    from edge_runtime.classifier import StreamingClassifier

    clf = StreamingClassifier.from_model(model_path, backend=backend, gate=None)
    lat = []
    for i in range(0, pcm.size, chunk):
        lat += [r.latency_ms for r in clf.push_audio(pcm[i:i + chunk])]
    return np.array(lat[1:])  # the first window pays for a whole window of front end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length per run")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ser_edge_bench_"))
    model_path = args.model or (DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None)
    if model_path is None:
        model_path = tmp / "bench_crnn.tflite"
        print("building a reference crnn model (random weights) ...", file=sys.stderr)
        build_reference_model(model_path)
    model_path = str(model_path)

    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.interpreter import IntModel, available_backends

    backends = [b for b in ("litert", "tensorflow", "tflm") if b in available_backends()]
    pcm = speech_like(args.seconds)
    audio_s = pcm.size / 16000
    meta = IntModel(model_path, backend=backends[0]).meta

    # --- latency per window (median of repeats of each percentile) ---------------------------------
    lat: dict[str, dict[str, float]] = {}
    for b in backends:
        p50s, p99s, nn = [], [], []
        for _ in range(max(3, args.repeats // 2)):
            la = window_latencies(model_path, b, pcm)
            p50s.append(np.percentile(la, 50))
            p99s.append(np.percentile(la, 99))
        lat[b] = {"p50": float(np.median(p50s)), "p99": float(np.median(p99s))}

    # --- inference only, same windows, every backend: and bit-parity ---------------------------------
    models = {b: IntModel(model_path, backend=b) for b in backends}
    fe_clf = StreamingClassifier.from_model(model_path, backend=backends[0], gate=None)
    from edge_runtime.frontend import compute_features

    q = models[backends[0]].quantize(compute_features(pcm[: 16000 * 20], fe_clf.cfg))
    W, H = meta.window_frames, meta.hop_frames
    wins = [q[k:k + W] for k in range(0, len(q) - W + 1, H)]
    outs = {b: np.stack([m.predict_window(w) for w in wins]).astype(int) for b, m in models.items()}
    parity = {b: int(np.abs(outs[b] - outs[backends[0]]).max()) for b in backends}
    infer = interleaved_medians({b: (lambda m=m: [m.predict_window(w) for w in wins]) for b, m in models.items()},
                                repeats=args.repeats)
    infer_ms = {b: 1000 * t / len(wins) for b, t in infer.items()}

    # --- whole streaming path, real-time factor ------------------------------------------------------
    clfs = {b: StreamingClassifier.from_model(model_path, backend=b) for b in backends}

    def stream(clf):
        clf.reset()
        for i in range(0, pcm.size, 1024):
            clf.push_audio(pcm[i:i + 1024])

    rtf_t = interleaved_medians({b: (lambda c=c: stream(c)) for b, c in clfs.items()}, repeats=args.repeats)
    rtf = {b: audio_s / t for b, t in rtf_t.items()}

    # front end alone (for the breakdown)
    from edge_runtime.frontend import StreamingFrontend

    sf = StreamingFrontend(fe_clf.cfg)

    def fe_only():
        sf.reset()
        for i in range(0, pcm.size, 1024):
            sf.push(pcm[i:i + 1024])

    fe_t = interleaved_medians({"fe": fe_only}, repeats=args.repeats)["fe"]

    # --- peak RSS of a numpy + edge_runtime + LiteRT process ---------------------------------------
    np.save(tmp / "pcm.npy", pcm)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _RSS_CHILD, model_path, str(tmp / "pcm.npy")],
                       capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    rss_s, heavy = (r.stdout.strip().split(" ") + [""])[:2]
    rss_mb = float(rss_s)

    lit = backends[0]
    res = {
        "window_latency_ms_p50": round(lat[lit]["p50"], 4),
        "window_latency_ms_p99": round(lat[lit]["p99"], 4),
        "rtf_stream": round(rtf[lit], 1),
        "rss_mb": round(rss_mb, 1),
        "rss_heavy_modules_loaded": heavy.split(",") if heavy else [],
        "backend": lit,
        "peers": {b: {"window_latency_ms_p50": round(lat[b]["p50"], 4),
                      "window_latency_ms_p99": round(lat[b]["p99"], 4),
                      "inference_ms_per_window": round(infer_ms[b], 4),
                      "rtf_stream": round(rtf[b], 1),
                      "max_abs_diff_vs_litert_lsb": parity[b]} for b in backends},
        "frontend_rtf": round(audio_s / fe_t, 1),
        # everything but the front end (gate energies, requantise, ring, reset + inference, results)
        "rtf_excluding_frontend": round(audio_s / max(rtf_t[lit] - fe_t, 1e-9), 1),
        "frontend_share_of_stream": round(fe_t / rtf_t[lit], 3),
        "frontend_ms_per_hop": round(1000 * fe_t / (len(pcm) / 16000) * H * fe_clf.cfg.hop_length / 16000, 4),
        "goals": {"window_latency_ms_p50": "<= 2", "rtf_stream": ">= 100", "rss_mb": "<= 80"},
        "model": {"path": model_path if args.model or DEFAULT_MODEL.is_file() else "reference crnn (random weights)",
                  "arch": meta.arch, "window_frames": W, "hop_frames": H, "n_features": meta.n_features,
                  "labels": len(meta.labels), "bytes": os.path.getsize(model_path)},
        "audio_seconds": audio_s,
        "chunk_samples": 1024,
        "threads": 1,
        "machine": machine(),
    }
    res["goals_met"] = {"window_latency_ms_p50": res["window_latency_ms_p50"] <= 2.0,
                        "rtf_stream": res["rtf_stream"] >= 100, "rss_mb": res["rss_mb"] <= 80}
    path = write_result("runtime", res)

    rows = [(b, f"{lat[b]['p50']:.3f}", f"{lat[b]['p99']:.3f}", f"{infer_ms[b]:.3f}", f"{rtf[b]:.0f}",
             parity[b]) for b in backends]
    print(f"Model: {res['model']['path']} ({meta.arch}, {W}x{meta.n_features} window, hop {H}); "
          f"{audio_s:.0f} s audio, 1 core, {machine()['processor']}\n")
    print(markdown_table(rows, ("backend", "window p50 ms", "window p99 ms", "inference ms", "RTF stream",
                                "max |diff| vs LiteRT (LSB)")))
    print()
    print(markdown_table([
        ("window latency p50 (LiteRT)", f"{res['window_latency_ms_p50']:.3f} ms", "<= 2 ms"),
        ("window latency p99 (LiteRT)", f"{res['window_latency_ms_p99']:.3f} ms", ""),
        ("RTF, whole streaming path", f"{res['rtf_stream']:.0f}x", ">= 100x"),
        ("front end alone RTF", f"{res['frontend_rtf']:.0f}x", ""),
        ("RTF of the rest (gate, requantise, ring, inference)", f"{res['rtf_excluding_frontend']:.0f}x", ""),
        ("peak RSS (numpy + edge_runtime + LiteRT)", f"{rss_mb:.1f} MB", "<= 80 MB"),
    ], ("metric", "value", "goal")))
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
