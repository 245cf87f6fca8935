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
* ``models``: the shipped models side by side, ``small`` (``default.tflite``) and ``pi`` (``--pi-model``,
  default ``edge_runtime/models/pi.tflite``, else the last ``bench/pretrained.py --pi`` build under
  ``runs/pretrained/pi/``): ms per 2 s window (front end of the hop + inference, p50/p99, and
  inference alone) in LiteRT and in tflite-runtime (a separate interpreter with numpy + tflite-runtime
  only: ``--tflite-runtime-python``, default ``$SER_EDGE_DEVICE_PYTHON``, ``.venv-device`` or
  ``bench/pi_check.py``'s x86 venv), medians over interleaved repeats, plus peak RSS. Goal for the
  Pi model: <= 5 ms per window, <= 1 MB.

Writes bench/results/runtime.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (ROOT, git_commit, interleaved_medians, machine, markdown_table, pin_one_core,  # noqa: E402
                          write_result)  # noqa: E402
from edge_runtime.test_signals import speech_with_pauses as speech_like  # noqa: E402

pin_one_core()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

DEFAULT_MODEL = ROOT / "edge_runtime" / "models" / "default.tflite"
RESULTS_JSON = ROOT / "bench" / "results" / "runtime.json"

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


# ms per window of each model, in a fresh interpreter (numpy + edge_runtime + one TFLite package):
# repeats interleaved over the models, the median of each repeat's p50/p99 and of inference alone.
_MODELS_CHILD = r"""
import json, sys, time, numpy as np
from edge_runtime.classifier import StreamingClassifier
from edge_runtime.frontend import compute_features
backend, pcm_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
models = dict(a.split("=", 1) for a in sys.argv[4:])
pcm = np.load(pcm_path)
runs = {n: {"p50": [], "p99": [], "infer": [], "cpu_window": [], "cpu_infer": []} for n in models}
errors = {}
for r in range(repeats + 1):  # round 0 warms up and is dropped
    for n, path in models.items():
        if n in errors:
            continue
        try:
            clf = StreamingClassifier.from_model(path, backend=backend, gate=None)
        except ValueError as e:  # e.g. an op this interpreter lacks
            errors[n] = " ".join(str(e).split())
            continue
        lat = []
        c0 = time.thread_time()
        for i in range(0, pcm.size, 1024):
            lat += [w.latency_ms for w in clf.push_audio(pcm[i:i + 1024])]
        cpu_stream = time.thread_time() - c0
        n_win = len(lat)
        lat = np.array(lat[1:])  # the first window pays for a whole window of front end
        m = clf.model
        q = m.quantize(compute_features(pcm[:16000 * 20], clf.cfg))
        W, H = m.meta.window_frames, m.meta.hop_frames
        wins = [q[k:k + W] for k in range(0, len(q) - W + 1, H)]
        c0, t0 = time.thread_time(), time.perf_counter()
        for w in wins:
            m.predict_window(w)
        if r:
            runs[n]["infer"].append(1000 * (time.perf_counter() - t0) / len(wins))
            runs[n]["cpu_infer"].append(1000 * (time.thread_time() - c0) / len(wins))
            runs[n]["p50"].append(float(np.percentile(lat, 50)))
            runs[n]["p99"].append(float(np.percentile(lat, 99)))
            runs[n]["cpu_window"].append(1000 * cpu_stream / n_win)
out = {n: {"window_latency_ms_p50": float(np.median(v["p50"])), "window_latency_ms_p99": float(np.median(v["p99"])),
           "inference_ms_per_window": float(np.median(v["infer"])),
           "stream_cpu_ms_per_window": float(np.median(v["cpu_window"])),
           "inference_cpu_ms_per_window": float(np.median(v["cpu_infer"]))}
       for n, v in runs.items() if n not in errors}
out.update({n: {"error": e} for n, e in errors.items()})
print(json.dumps({"backend": backend, "models": out}))
"""


def default_pi_model() -> Path | None:
    """The shipped Pi model, else the last ``bench/pretrained.py --pi`` build (not installed)."""
    for p in (ROOT / "edge_runtime" / "models" / "pi.tflite", ROOT / "runs" / "pretrained" / "pi" / "pi.tflite"):
        if p.is_file():
            return p
    return None


def tflite_runtime_python(arg: str | None) -> str | None:
    """A Python that has tflite-runtime and numpy (no TensorFlow): the device install's."""
    cands = [arg, os.environ.get("SER_EDGE_DEVICE_PYTHON"), str(ROOT / ".venv-device" / "bin" / "python"),
             "/var/tmp/ser-edge-pi/x86-tflite/bin/python"]
    for c in cands:
        if c and Path(c).is_file():
            r = subprocess.run([c, "-c", "import tflite_runtime.interpreter"], capture_output=True)
            if r.returncode == 0:
                return c
    return None


def compare_models(models: dict[str, str], pcm_path: Path, repeats: int, tfl_python: str | None) -> dict:
    """``{name: {bytes, model_hash, litert: {...}, tflite_runtime: {...}, rss_mb}}`` for ``models``."""
    from edge_runtime.model_metadata import model_hash

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [f"{n}={p}" for n, p in models.items()]
    out = {n: {"path": str(Path(p).resolve().relative_to(ROOT)) if Path(p).resolve().is_relative_to(ROOT) else p,
               "bytes": os.path.getsize(p), "model_hash": model_hash(Path(p).read_bytes())}
           for n, p in models.items()}
    pythons = {"litert": sys.executable, **({"tflite_runtime": tfl_python} if tfl_python else {})}
    for backend, py in pythons.items():
        r = subprocess.run([py, "-c", _MODELS_CHILD, backend, str(pcm_path), str(repeats), *args],
                           capture_output=True, text=True, env=env, cwd=ROOT)
        if r.returncode != 0:
            for n in models:
                out[n][backend] = {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
            continue
        for n, v in json.loads(r.stdout.strip().splitlines()[-1])["models"].items():
            out[n][backend] = {k: round(x, 4) if isinstance(x, float) else x for k, x in v.items()}
    for n, p in models.items():
        r = subprocess.run([sys.executable, "-c", _RSS_CHILD, p, str(pcm_path)], capture_output=True, text=True,
                           env=env, cwd=ROOT)
        out[n]["rss_mb"] = round(float(r.stdout.split()[0]), 1) if r.returncode == 0 else None
        lit = out[n].get("litert", {})
        out[n]["window_latency_ms_p50"] = lit.get("window_latency_ms_p50")
        out[n]["inference_cpu_ms_per_window"] = lit.get("inference_cpu_ms_per_window")
    return out


def models_section(args, tmp: Path) -> dict:
    """The ``models`` part of runtime.json: the shipped small model and the Pi model side by side, the
    same audio, every interpreter (see the module docstring), with its goals."""
    pi_model = args.pi_model or default_pi_model()
    side = {"small": str(DEFAULT_MODEL)} if DEFAULT_MODEL.is_file() else {}
    if pi_model is not None and side:
        side["pi"] = str(pi_model)
    if len(side) < 2:
        return {}
    pcm_path = tmp / "pcm_models.npy"
    np.save(pcm_path, speech_like(args.seconds))
    tfl_py = tflite_runtime_python(args.tflite_runtime_python)
    models_cmp = compare_models(side, pcm_path, max(3, args.repeats), tfl_py)
    out = {"models": models_cmp,
           "models_note": ("window_latency_ms_p50/p99: the runtime's latency_ms per 2 s window (front end of the new "
                           "hop + requantise + inference), percentiles over the windows of the audio; "
                           "inference_ms_per_window: inference alone (wall), inference_cpu_ms_per_window: the same in "
                           "thread CPU time (the idle figure on a shared machine); stream_cpu_ms_per_window: CPU time "
                           "of the whole streaming path (front end of every sample included) per window; medians over "
                           "interleaved repeats in a fresh process per interpreter (1 thread, 1 core); tflite_runtime "
                           "in " + (tfl_py or "(not found)")),
           "models_measured": {"commit": git_commit(), "machine": machine(), "audio_seconds": args.seconds},
           "models_goals": {"pi_window_latency_ms_p50": "<= 5 in every interpreter",
                            "pi_inference_cpu_ms_per_window": "<= 5 in every interpreter",
                            "pi_model_bytes": "<= 1048576"},
           "models_goals_met": {}}
    pi = models_cmp.get("pi", {})
    # ms per 2 s window as the runtime reports it (latency_ms: front end of the hop + inference, wall
    # clock: the figure of the small model's <= 2 ms goal), and the model's own cost in CPU time (what
    # a busy machine does not inflate); every interpreter must run the model
    for b in ("litert", "tflite_runtime"):
        d = pi.get(b)
        if isinstance(d, dict):
            for k in ("window_latency_ms_p50", "inference_cpu_ms_per_window"):
                out["models_goals_met"][f"pi_{k}_{b}"] = d.get(k, float("inf")) <= 5.0
    out["models_goals_met"]["pi_model_bytes"] = pi.get("bytes", 1 << 30) <= 1 << 20
    return out


def print_models(res: dict) -> None:
    """The side-by-side table of the ``models`` part."""
    models_cmp = res.get("models") or {}
    if not models_cmp:
        return
    print()
    cols = [b for b in ("litert", "tflite_runtime") if any(isinstance(v.get(b), dict) for v in models_cmp.values())]
    rows = []
    for n, v in models_cmp.items():
        row = [n, f"{v['bytes']:,}"]
        for b in cols:
            d = v.get(b, {})
            row += ([f"{d['window_latency_ms_p50']:.3f}", f"{d['inference_ms_per_window']:.3f}",
                     f"{d['inference_cpu_ms_per_window']:.3f}"] if "window_latency_ms_p50" in d
                    else [f"does not load: {d.get('error', '-')[:60]}", "-", "-"])
        rows.append(tuple(row + [f"{v['rss_mb']} MB" if v.get("rss_mb") is not None else "-"]))
    hdr = ["model", "bytes"] + [h for b in cols for h in (f"{b} ms/window p50", f"{b} inference ms",
                                                             f"{b} inference CPU ms")] + ["peak RSS"]
    print(markdown_table(rows, tuple(hdr)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length per run")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--pi-model", type=Path, default=None,
                    help="the Raspberry Pi model to measure next to the small one (default: shipped pi.tflite, "
                         "else runs/pretrained/pi/pi.tflite)")
    ap.add_argument("--tflite-runtime-python", default=None,
                    help="a python with tflite-runtime + numpy for the tflite-runtime column")
    ap.add_argument("--models-only", action="store_true",
                    help="measure only the small vs Pi model comparison and update the models part of "
                         "bench/results/runtime.json (the rest keeps its earlier run)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ser_edge_bench_"))
    if args.models_only:
        path = RESULTS_JSON
        res = json.loads(path.read_text()) if path.exists() else {}
        for k in ("models", "models_note", "models_measured", "models_goals", "models_goals_met"):
            res.pop(k, None)
        res.update(models_section(args, tmp))
        write_result("runtime", res)
        print_models(res)
        print(f"\nwrote {path} (models only)", file=sys.stderr)
        return
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
    res.update(models_section(args, tmp))
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
    print_models(res)
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
