"""``ser-edge demo``: the whole chain, end to end, on the built-in generated corpus.

1. build: generated corpus -> fixed-point features -> LSTM -> full int8 -> validation report (plots)
2. export: C header/source pair for microcontroller firmware, compiled with gcc to prove it builds
3. serial: a linked pair of kernel pseudo-terminals (a null-modem cable); ``ser-edge serve`` runs the
   device side on one end, ``ser-edge stream`` sends a generated utterance from the other end and
   prints the labels that come back (raw audio at 921600 baud, then int8 features at 115200 baud)
4. a summary of where every output went

Each stage runs as its own ``ser-edge`` process, exactly as a user would type it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def add_cli(sub: argparse._SubParsersAction) -> None:
    from edge_runtime.cli_errors import needs
    from edge_runtime.cli_types import output_dir, positive_int

    p = sub.add_parser("demo", help=needs("run the whole chain end to end on the built-in generated corpus",
                                          "tensorflow", "tf_keras", "tflite_micro", "matplotlib", "serial"))
    p.add_argument("--out", default="out/demo", type=output_dir, help="output folder (default out/demo)")
    p.add_argument("--epochs", type=positive_int, default=25, help="training epochs (default 25)")
    p.add_argument("--clips-per-label", type=positive_int, default=40, help="generated clips per label (default 40)")
    p.set_defaults(func=run)


def _ser_edge(argv: list[str], **kw) -> subprocess.CompletedProcess:
    from edge_runtime.cli_errors import Failure

    r = subprocess.run([sys.executable, "-m", "edge_runtime", *argv], **kw)
    if r.returncode:  # the stage printed its own one-line error above
        raise Failure(f"stage 'ser-edge {argv[0]}' failed with exit code {r.returncode}")
    return r


def _banner(n: int, title: str) -> float:
    print(f"\n=== [{n}/4] {title}", flush=True)
    return time.perf_counter()


def _demo_utterance(path: Path) -> list[tuple[str, float, float]]:
    """Three generated utterances of a speaker the model never saw, with pauses: WAV at 16 kHz.

    Returns each utterance's true class and where it lies in the file: ``(label, start s, end s)``.
    """
    import numpy as np

    from edge_runtime.audio_io import write_wav
    from model_build.corpora.synth import generate_corpus

    pairs = generate_corpus(n_speakers=1, clips_per_label=1, labels=("angry", "sad", "happy"), duration=(2.6, 2.6), seed=4242)
    gap = np.zeros(8000, dtype=np.int16)
    audio = np.concatenate([gap] + [x for clip, x in pairs for x in (x, gap)])
    write_wav(path, audio)
    segments, t = [], gap.size
    for clip, x in pairs:
        segments.append((clip.label, t / 16000, (t + x.size) / 16000))
        t += x.size + gap.size
    return segments


def _truth(segments: list[tuple[str, float, float]], t0: float, t1: float) -> str:
    """The true class of the window [t0, t1]: the utterance covering most of it, else 'pause'."""
    best, cover = "pause", 0.0
    for label, a, b in segments:
        c = max(0.0, min(b, t1) - max(a, t0))
        if c > cover:
            best, cover = label, c
    return best if cover >= 0.5 * (t1 - t0) else f"({best})" if cover > 0 else "pause"


def _compile_export(fw: Path) -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return "no C compiler found: export written, not compiled"
    srcs = sorted(str(p) for p in fw.glob("*.c"))
    objs = []
    for s in srcs:
        o = str(Path(s).with_suffix(".o"))
        subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-c", s, "-o", o], check=True)
        objs.append(o)
    size = subprocess.run(["size", *objs], capture_output=True, text=True).stdout if shutil.which("size") else ""
    return f"compiled {len(srcs)} C files with {Path(cc).name} -std=c99 -Werror\n{size}".rstrip()


def _stream(port: str, baud: int, wav: Path, out_jsonl: Path, model: Path, mode: str,
            segments: list[tuple[str, float, float]]) -> list[dict]:
    with open(out_jsonl, "w") as fh:
        _ser_edge(["stream", "--port", port, "--baud", str(baud), "--mode", mode, "--model", str(model), "--realtime",
                   "--quiet", str(wav)], stdout=fh)
    records = [json.loads(line) for line in out_jsonl.read_text().splitlines() if line.strip()]
    return _print_labels(records, segments)


def _print_labels(records: list[dict], segments: list[tuple[str, float, float]]) -> list[dict]:
    """Each window's predicted label next to the true class; then the utterance and whole-input
    labels. Returns the window records."""
    rows = [r for r in records if r.get("record") == "window"]
    print(f"  {'window':>8}  {'time':>11}  {'true class':>10}  {'predicted':>10}  device latency  int8 scores")
    for r in rows:
        truth = _truth(segments, r["t_start"], r["t_end"])
        print(f"  {r['window']:8d}  {r['t_start']:5.2f}-{r['t_end']:5.2f}  {truth:>10}  {r['label']:>10}"
              f"  {r.get('device_latency_ms', float('nan')):11.2f} ms  {r['scores_int8']}")
    for r in records:  # the device's utterance and whole-input labels (window policy: mean log-probability)
        if r.get("record") in ("utterance", "summary"):
            what = f"utterance {r['utterance']}" if r["record"] == "utterance" else "whole input"
            truth = _truth(segments, r["t_start"], r["t_end"]) if r["record"] == "utterance" else \
                ", ".join(lab for lab, _, _ in segments)
            print(f"  {what:>20}  {r['t_start']:5.2f}-{r['t_end']:5.2f}  true {truth}, predicted {r['label']}")
    return rows


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    build_dir, fw_dir = out / "model", out / "firmware"

    t0 = _banner(1, "train -> int8 -> validate (generated corpus: never an emotion-accuracy claim)")
    _ser_edge(["build", "--corpus", "synth", "--out", str(build_dir), "--epochs", str(args.epochs),
               "--clips-per-label", str(args.clips_per_label), "--name", "demo"])
    model = build_dir / "demo.tflite"
    t_build = time.perf_counter() - t0

    t0 = _banner(2, "export model + front-end tables to C for TFLite Micro firmware")
    _ser_edge(["export", "--model", str(model), "--out", str(fw_dir)])
    print(_compile_export(fw_dir))
    t_export = time.perf_counter() - t0

    t0 = _banner(3, "device and host on a linked pair of serial ports (kernel ptys)")
    from firmware_bridge.ptylink import PtyLink

    wav = out / "demo_input.wav"
    segments = _demo_utterance(wav)
    print(f"input: {wav} (a new synthetic speaker: "
          + ", ".join(f"{lab} {a:.1f}-{b:.1f} s" for lab, a, b in segments) + ", with pauses between)")
    print("true class: the utterance covering most of the window; (x) = under half covered; "
          "'pause' = no speech")
    runs = {}
    for baud, mode in ((921600, "audio"), (115200, "features")):
        with PtyLink(baud=baud) as link:
            log = open(out / f"device_{baud}.log", "w")
            device = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "--port", link.port_b, "--baud", str(baud),
                                       "--model", str(model)], stdout=log, stderr=subprocess.STDOUT)
            try:
                time.sleep(1.0)  # let the device open its port and announce itself
                print(f"\n--- {baud} baud, host sends {mode} (device: ser-edge serve --port {link.port_b}; host: ser-edge stream --port {link.port_a})")
                runs[baud] = _stream(link.port_a, baud, wav, out / f"labels_{baud}.jsonl", model, mode, segments)
            finally:
                device.terminate()
                device.wait(timeout=10)
                log.close()
    t_serial = time.perf_counter() - t0

    report = json.loads((build_dir / "report.json").read_text())
    rows = report.get("validation", {}).get("rows", {})
    print("\n=== [4/4] summary")
    for name, row in rows.items():
        print(f"  {name:18s} UAR {row['uar']:.3f}  window agreement vs float {row['window_agreement_vs_float']:.3f}")
    same = [a.get("label") for a in runs.get(921600, [])] == [b.get("label") for b in runs.get(115200, [])]
    print(f"  labels over raw audio (921600 baud) and over host features (115200 baud) identical: {same}")
    total = time.perf_counter() - t_start
    outputs = {
        "int8 model (+ metadata sidecar)": model,
        "validation report (Markdown, PNG plots, JSON)": build_dir / "report.md",
        "C export for firmware": fw_dir,
        "demo input audio": wav,
        "labels received over the serial link (JSON lines)": out / "labels_921600.jsonl",
        "device logs": out / "device_921600.log",
    }
    print("\nWhere everything went:")
    for what, path in outputs.items():
        print(f"  {what:52s} {os.path.relpath(path)}")
    print(f"\nstages: build {t_build:.0f} s, export {t_export:.0f} s, serial {t_serial:.0f} s; total {total:.0f} s")
    (out / "demo_summary.json").write_text(json.dumps({"seconds": round(total, 1), "build_s": round(t_build, 1),
                                                        "labels_identical_audio_vs_features": same,
                                                        "results_921600": len(runs.get(921600, [])),
                                                        "results_115200": len(runs.get(115200, []))}, indent=1))
    return 0
