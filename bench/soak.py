"""Soak test: `ser-edge serve` fed real-time audio over a serial link for an hour.

    python bench/soak.py [--seconds 3660] [--warmup 300] [--model M.tflite]

The device is the real CLI (`python -m edge_runtime serve`, the shipped model unless ``--model``)
in its own process, on one end of a ``firmware_bridge.ptylink.PtyLink`` (two kernel ptys paced at
921600 baud); the host is ``firmware_bridge.serial_host.DeviceClient`` (pyserial) on the other end.
The host sends AUDIO in 512-sample frames at real time (a clip of speech-like audio with pauses,
regenerated with a new seed every minute, so the content keeps changing) and, in this process,
feeds the same chunks to a reference ``StreamingClassifier`` of the same model.

Every RESULT is compared with the reference window of the same index (label and all int8 scores).
Measured:

* ``soak_seconds``: seconds of audio streamed (wall time, real-time pacing);
* ``errors``: everything that went wrong, summed: RESULTs that differ from the reference, windows
  that never arrived, RESULTs flagged GAP, ERROR frames from the device, frames the host's decoder
  rejected or lost by sequence number, frames the device rejected (STATS), host send failures, and
  a serve process that died (each also reported on its own);
* ``rss_slope_kb_per_min``: least-squares slope of the serve process's resident set size
  (``/proc/PID/status`` VmRSS, sampled every 5 s) after ``--warmup`` seconds; also CPU share.

Writes bench/results/soak.json (with the git commit measured) and bench/results/soak.png (RSS and
CPU over time), and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, ROOT, machine, markdown_table, write_result  # noqa: E402
from edge_runtime.test_signals import speech_with_pauses  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

SR = 16000
CHUNK = 512
GOALS = {"soak_seconds": (">=", 3600), "errors": ("<=", 0), "rss_slope_kb_per_min": ("<=", 1.0)}
DEVICE_DROP_KEYS = ("rx_crc", "rx_cobs", "rx_short", "rx_length", "rx_version", "rx_oversize",
                    "rx_unknown_type", "rx_payload", "rx_seq_lost")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def git_commit() -> str:
    """The commit measured: ``git rev-parse HEAD`` (+ "-dirty"), or ``$SER_EDGE_COMMIT`` when run
    from an exported copy of the tree (so edits to the work tree cannot leak into a long run)."""
    if os.environ.get("SER_EDGE_COMMIT"):
        return os.environ["SER_EDGE_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def proc_sample(pid: int) -> tuple[float, float]:
    """(VmRSS in kB, CPU seconds user+system) of process ``pid``."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = float(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / tick


def slope_per_min(t_s: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``y`` against time, per minute."""
    if len(t_s) < 3:
        return float("nan")
    return float(np.polyfit(t_s / 60.0, y, 1)[0])


def plot(path: Path, t: np.ndarray, rss: np.ndarray, cpu: np.ndarray, warmup: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    a1.plot(t / 60, rss / 1024)
    a1.axvline(warmup / 60, color="gray", ls="--", lw=0.8)
    a1.set_ylabel("serve RSS (MiB)")
    a1.set_title("ser-edge serve, real-time AUDIO at 921600 baud over a pty")
    a2.plot(t / 60, cpu * 100)
    a2.set_ylabel("serve CPU (%)")
    a2.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3660.0, help="audio to stream (default 3660 s)")
    ap.add_argument("--warmup", type=float, default=300.0, help="seconds excluded from the RSS slope")
    ap.add_argument("--model", type=Path, default=None, help=".tflite (default: the shipped model)")
    ap.add_argument("--sample-every", type=float, default=5.0, help="RSS/CPU sampling period (s)")
    ap.add_argument("--out", default="soak", help="result name under bench/results/")
    args = ap.parse_args()

    from tqdm import tqdm

    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.protocol import Mode
    from firmware_bridge.ptylink import PtyLink
    from firmware_bridge.serial_host import DeviceClient

    commit = git_commit()
    ref = StreamingClassifier.from_model(str(args.model) if args.model else None)
    expected: dict[int, tuple[int, tuple[int, ...]]] = {}
    received: dict[int, tuple[int, tuple[int, ...], int]] = {}
    lock = threading.Lock()

    def on_result(r) -> None:
        with lock:
            received[r.msg.window_index] = (r.msg.label_index, tuple(r.msg.scores), r.msg.flags)

    tmp = Path(tempfile.mkdtemp(prefix="ser_edge_soak_"))
    serve_log = tmp / "serve.log"
    samples: list[tuple[float, float, float]] = []  # (t, rss_kb, cpu_s)
    counts = {"send_failures": 0}
    with PtyLink(baud=921600) as link, open(serve_log, "w") as logf:
        cmd = [sys.executable, "-m", "edge_runtime", "serve", "--port", link.port_b, "--baud", "921600"]
        if args.model:
            cmd += ["--model", str(args.model)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, env=env)
        try:
            dev = DeviceClient(link.port_a, 921600, timeout=1.0, retries=60, on_result=on_result).open()
            try:
                stats0 = dev.get_stats()
                dev.start(Mode.AUDIO)
                ref.reset()
                t0 = time.monotonic()
                n_sent = 0
                next_sample = 0.0
                clip = np.zeros(0, np.int16)
                clip_pos = 0
                seed = 100
                total = int(args.seconds * SR)
                bar = tqdm(total=int(args.seconds), unit="s", desc="soak", mininterval=5, file=sys.stderr)
                while n_sent < total:
                    if clip_pos >= clip.size:
                        clip, clip_pos, seed = speech_with_pauses(60.0, seed=seed), 0, seed + 1
                    piece = clip[clip_pos:clip_pos + CHUNK]
                    clip_pos += piece.size
                    time.sleep(max(0.0, t0 + (n_sent + piece.size) / SR - time.monotonic()))
                    if dev.send_audio(piece) == 0:
                        counts["send_failures"] += 1
                    for w in ref.push_audio(piece):
                        expected[w.window_index] = (w.label_index, tuple(int(v) for v in w.scores_int8))
                    n_sent += piece.size
                    now = time.monotonic() - t0
                    if now >= next_sample:
                        if proc.poll() is not None:
                            log(f"serve died with exit code {proc.returncode}")
                            break
                        rss, cpu = proc_sample(proc.pid)
                        samples.append((now, rss, cpu))
                        next_sample += args.sample_every
                        bar.update(int(now) - bar.n)
                        bar.set_postfix(rss_mb=f"{rss / 1024:.1f}", windows=len(received))
                bar.close()
                soak_s = n_sent / SR
                time.sleep(2.0)  # the last windows
                stats1 = dev.get_stats()
                host = dev.counters()
                dev.stop()
                errors_rx = list(dev.errors)
            finally:
                dev.close()
        finally:
            alive = proc.poll() is None
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    with lock:
        got = dict(received)
    mismatched = sum(1 for k, v in got.items() if k in expected and v[:2] != expected[k])
    missing = sum(1 for k in expected if k not in got)
    gap = sum(1 for v in got.values() if v[2] & 0x04)
    unexpected = sum(1 for k in got if k not in expected)
    device_rejected = sum(stats1.get(k, 0) - stats0.get(k, 0) for k in DEVICE_DROP_KEYS)
    host_rejected = host["rx_dropped_total"] + host["rx_seq_lost"]
    serve_text = serve_log.read_text(errors="replace")
    tracebacks = serve_text.count("Traceback")
    parts = {"mismatched_windows": mismatched, "missing_windows": missing, "gap_windows": gap,
             "unexpected_windows": unexpected, "device_error_frames": len(errors_rx),
             "device_rejected_frames": int(device_rejected), "host_rejected_frames": int(host_rejected),
             "send_failures": counts["send_failures"], "serve_tracebacks": tracebacks,
             "serve_died": int(not alive)}
    errors = int(sum(parts.values()))

    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    cpu_s = np.array([s[2] for s in samples])
    cpu_share = np.concatenate([[0.0], np.diff(cpu_s) / np.maximum(np.diff(t), 1e-9)]) if len(t) else t
    after = t >= args.warmup
    res = {
        "soak_seconds": round(float(soak_s), 1), "errors": errors, "error_parts": parts,
        "rss_slope_kb_per_min": round(slope_per_min(t[after], rss[after]), 4),
        "rss_kb_first_after_warmup": float(rss[after][0]) if after.any() else None,
        "rss_kb_last": float(rss[-1]) if len(rss) else None,
        "rss_kb_max": float(rss.max()) if len(rss) else None,
        "serve_cpu_pct_mean": round(float((cpu_s[-1] - cpu_s[0]) / max(t[-1] - t[0], 1e-9) * 100), 2)
        if len(t) > 1 else None,
        "windows_expected": len(expected), "windows_received": len(got), "warmup_s": args.warmup,
        "rss_samples": len(samples), "commit_measured": commit, "link": "PtyLink 921600 baud, AUDIO mode, 512-sample frames, real time",
        "device": " ".join(["python -m edge_runtime serve"] + (["--model", str(args.model)] if args.model else [])),
        "model": str(args.model) if args.model else "edge_runtime/models/default.tflite",
        "machine": machine(), "goals": {k: f"{op} {g}" for k, (op, g) in GOALS.items()},
    }
    if len(t):
        plot(RESULTS / f"{args.out}.png", t, rss, cpu_share, args.warmup)
    path = write_result(args.out, res)
    rows = [(k, res[k], f"{op} {g}") for k, (op, g) in GOALS.items()]
    print(markdown_table(rows, ("metric", "value", "goal")))
    print(f"\nerror parts: {parts}\ncommit {commit}; wrote {path}")


if __name__ == "__main__":
    main()
