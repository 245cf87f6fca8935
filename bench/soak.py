"""Soak test: `ser-edge serve` fed real-time audio over a serial link for an hour.

    python bench/soak.py [--seconds 3660] [--warmup 300] [--model M.tflite]

The device is the real CLI (`python -m edge_runtime serve`, the shipped model unless ``--model``)
in its own process, on one end of a ``firmware_bridge.ptylink.PtyLink`` (two kernel ptys paced at
921600 baud); the host is ``firmware_bridge.serial_host.DeviceClient`` (pyserial) on the other end.
The host sends AUDIO in 512-sample frames at real time (a clip of speech-like audio with pauses,
regenerated with a new seed every minute, so the content keeps changing). The sending loop does
nothing else (STATS checks run in their own thread); after the run the same chunks go through an
in-process reference ``StreamingClassifier`` of the same model, so the checker's own work cannot
make the host fall behind real time (a late host sends its backlog at wire speed, 2.8x real time,
which a device without flow control may overrun; ``host_late_max_s`` says how late it got).

Every RESULT is compared with the reference record of the same kind and number: window RESULTs
with the reference's window of the same index, utterance records (flag UTTERANCE, numbered by
utterance) with its utterance records, and the summary sent at STOP with its summary; the tail
window, last utterance and summary that STOP flushes are expected from the reference's
``finish()``. Compared: label, flags (GAP counted on its own), start/end times and all int8 scores.
Each error is logged with its context (the device's and the reference's record, when it arrived,
how much audio had been sent) and the first ones are kept in the JSON (``error_details``).
Measured:

* ``soak_seconds``: seconds of audio streamed (wall time, real-time pacing);
* ``errors``: everything that went wrong, summed: RESULTs that differ from the reference, records
  that never arrived or were not expected, RESULTs flagged GAP, ERROR frames from the device, frames
  the host's decoder rejected or lost by sequence number, frames the device rejected (STATS, by
  reason in ``device_rejected_by_reason``), host send failures, and a serve process that died (each
  also reported on its own in ``error_parts``); the pty link's own counters (bytes dropped because
  the receiving tty was full) are in ``link_counters``; both, and the times serve's receive buffer
  filled (STATS ``rx_buffer_full``), are checked every ``--check-every`` seconds and each change is
  logged with when it happened (``incidents``, with how late the host was in that period), and so
  is every time the sender fell > 0.1 s behind real time (``host_late_events``: when, by how much);
  ``device_rx_buffer``: serve's receive-buffer counters at the end (``rx_buffer_full`` times,
  ``rx_buffered_max`` bytes: the most input it held at once);
* ``rss_slope_kb_per_min``: least-squares slope of the serve process's resident set size
  (``/proc/PID/status`` VmRSS, sampled every 5 s) after ``--warmup`` seconds; also CPU share.

Writes bench/results/soak.json (with the git commit measured) and bench/results/soak.png (RSS and
CPU over time), and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, ROOT, git_commit, machine, markdown_table, write_result  # noqa: E402
from edge_runtime.test_signals import speech_with_pauses  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

SR = 16000
CHUNK = 512
GOALS = {"soak_seconds": (">=", 3600), "errors": ("<=", 0), "rss_slope_kb_per_min": ("<=", 1.0)}
GAP_FLAG = 0x04  # ResultFlags.GAP: the window overlapped input lost on the link
UTTERANCE_FLAG = 0x20  # ResultFlags.UTTERANCE: an utterance or summary record, not a window
DEVICE_DROP_KEYS = ("rx_crc", "rx_cobs", "rx_short", "rx_length", "rx_version", "rx_oversize",
                    "rx_unknown_type", "rx_payload", "rx_seq_lost")
# serve's receive buffer (its port-reader thread, STATS r2): times it filled, most bytes it held
RX_BUFFER_KEYS = ("rx_buffer_full", "rx_buffered_max")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def record_fields(msg) -> dict:
    """What a RESULT says about a record, without what legitimately differs between the device and
    the reference (session id, latency) or what is counted on its own (the GAP flag)."""
    return {"label_index": int(msg.label_index), "flags": int(msg.flags) & ~GAP_FLAG,
            "t_start_ms": int(msg.t_start_ms), "t_end_ms": int(msg.t_end_ms),
            "scores": [int(v) for v in msg.scores]}


class Ledger:
    """The records the reference says the device owes, the records the device sent, and how they
    differ. Records are kept per kind -- ``window`` (by window index), ``utterance`` (by utterance
    number) and ``summary`` -- because a RESULT's ``window_index`` field is the window index only for
    a window: an utterance record carries its utterance number there (so utterance 0 and window 0
    share the number 0) and the summary 0xFFFFFFFF (docs/protocol.md, flag UTTERANCE)."""

    KINDS = ("window", "utterance", "summary")

    def __init__(self) -> None:
        self.expected: dict[str, dict[int, dict]] = {k: {} for k in self.KINDS}
        self.received: dict[str, dict[int, dict]] = {k: {} for k in self.KINDS}
        self.gap_windows: list[int] = []
        self.duplicates: list[dict] = []
        self._lock = threading.Lock()  # receive() runs in the host's reader thread

    def expect(self, records) -> None:
        """Reference records (``WindowResult`` / ``UtteranceResult``), converted as the device does."""
        from edge_runtime.serial_device import result_to_message

        for r in records:
            m = result_to_message(r, 0)
            self.expected[record_kind(m)][m.window_index] = record_fields(m)

    def receive(self, msg, **context) -> None:
        """A RESULT from the device; ``context`` (when it came, how much audio had been sent) is
        kept for the error report."""
        fields = {**record_fields(msg), **context}
        kind = record_kind(msg)
        with self._lock:
            table = self.received[kind]
            if msg.window_index in table:
                self.duplicates.append({"record": kind, "number": msg.window_index, "got": fields})
            table[msg.window_index] = fields
            if msg.flags & GAP_FLAG:
                self.gap_windows.append(msg.window_index)

    def compare(self) -> tuple[dict[str, int], list[dict]]:
        """Error counts (mismatched / missing / unexpected per kind, GAP, duplicates) and one
        detail dict per error (number, expected and received record)."""
        parts: dict[str, int] = {}
        details: list[dict] = []
        with self._lock:
            for kind in self.KINDS:
                exp, got = self.expected[kind], self.received[kind]
                counts = {"mismatched": 0, "missing": 0, "unexpected": 0}
                for k in sorted(set(exp) | set(got)):
                    e, g = exp.get(k), got.get(k)
                    if e is not None and g is not None and e == {f: g[f] for f in e}:
                        continue
                    what = "missing" if g is None else "unexpected" if e is None else "mismatched"
                    counts[what] += 1
                    details.append({"error": f"{what}_{kind}", "number": k, "expected": e, "got": g})
                parts.update({f"{what}_{kind}s": n for what, n in counts.items()})
            details += [{"error": "gap_window", "number": k, "got": self.received["window"].get(k)}
                        for k in self.gap_windows]
            details += [{"error": f"duplicate_{d['record']}", **d} for d in self.duplicates]
            parts.update({"gap_windows": len(self.gap_windows), "duplicate_records": len(self.duplicates)})
        return parts, details


def record_kind(msg) -> str:
    """``window``, ``utterance`` or ``summary`` (flag UTTERANCE; the summary's number is 0xFFFFFFFF)."""
    if not msg.flags & UTTERANCE_FLAG:
        return "window"
    return "summary" if msg.window_index == 0xFFFFFFFF else "utterance"


def audio_chunks(n_samples: int, seed: int = 100, prefetch: bool = False):
    """The soak's audio, ``CHUNK`` samples at a time, ``n_samples`` in all: speech-like clips with
    pauses, a new seed every minute (deterministic, so the reference can replay it).

    ``prefetch``: make the next minute's clip in a background thread while this one is sent
    (making one takes a few tenths of a second, which would make a real-time sender late once a
    minute and then burst)."""
    import queue

    clips: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def make(k: int) -> np.ndarray:
        return speech_with_pauses(60.0, seed=seed + k)

    def producer() -> None:
        k = 0
        while not stop.is_set():
            clip = make(k)
            k += 1
            while not stop.is_set():
                try:
                    clips.put(clip, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def chunks():
        sent, k = 0, 0
        try:
            while sent < n_samples:
                clip = clips.get() if prefetch else make(k)
                k += 1
                for i in range(0, clip.size, CHUNK):
                    piece = clip[i:i + CHUNK][:n_samples - sent]
                    if piece.size == 0:
                        return
                    yield piece
                    sent += piece.size
        finally:
            stop.set()

    if prefetch:  # started now, so the first clip is ready before the clock starts
        threading.Thread(target=producer, name="soak-audio", daemon=True).start()
    return chunks()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3660.0, help="audio to stream (default 3660 s)")
    ap.add_argument("--warmup", type=float, default=300.0, help="seconds excluded from the RSS slope")
    ap.add_argument("--model", type=Path, default=None, help=".tflite (default: the shipped model)")
    ap.add_argument("--sample-every", type=float, default=5.0, help="RSS/CPU sampling period (s)")
    ap.add_argument("--check-every", type=float, default=30.0,
                    help="period (s) of the device-STATS / link-counter check that timestamps losses")
    ap.add_argument("--out", default="soak", help="result name under bench/results/")
    args = ap.parse_args()

    from tqdm import tqdm

    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.protocol import Mode
    from firmware_bridge.ptylink import PtyLink
    from firmware_bridge.serial_host import DeviceClient

    commit = git_commit()
    ledger = Ledger()
    clock = {"t0": time.monotonic(), "n_sent": 0, "late_max": 0.0}

    def on_result(r) -> None:  # the host's reader thread
        ledger.receive(r.msg, t_rx_s=round(r.t_rx - clock["t0"], 3),
                       audio_sent_s=round(clock["n_sent"] / SR, 3))

    incidents: list[dict] = []  # when device rejections or link drops happened
    last_seen: dict[str, int] = {}
    late_max = {"all": 0.0}
    late_events: list[tuple[float, float]] = []

    def watch(now: float, stats: dict) -> None:
        seen = {f"device_{k}": int(stats.get(k, 0)) for k in DEVICE_DROP_KEYS}
        seen.update({f"device_{k}": int(stats.get(k, 0)) for k in ("gap_samples", "tx_dropped_results",
                                                                    "tx_dropped", "tx_timeouts", "resend_requests",
                                                                    "rx_buffer_full")})
        for direction, c in link.counters.items():
            seen.update({f"link_{direction}_{k}": int(v) for k, v in c.items() if k != "bytes_in" and k != "bytes_out"})
        new = {k: v - last_seen.get(k, 0) for k, v in seen.items() if v != last_seen.get(k, 0)}
        # how far the sender fell behind real time in this period (then it sends at wire speed)
        late, clock["late_max"] = clock["late_max"], 0.0
        late_max["all"] = max(late_max["all"], late)
        if new and last_seen:
            inc = {"t_s": round(now, 1), "audio_sent_s": round(clock["n_sent"] / SR, 3),
                   "host_late_max_s": round(late, 3), **new}
            incidents.append(inc)
            log(f"INCIDENT {json.dumps(inc, sort_keys=True)}")
        last_seen.update(seen)

    def checker(dev, stop: threading.Event) -> None:
        # its own thread: a slow STATS round trip must not hold up the audio
        while not stop.wait(args.check_every):
            try:
                watch(time.monotonic() - clock["t0"], dev.get_stats())
            except Exception as exc:  # noqa: BLE001 - reported, the final check still runs
                log(f"STATS check failed: {type(exc).__name__}: {exc}")

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
            stop_checker = threading.Event()
            try:
                stats0 = dev.get_stats()
                watch(0.0, stats0)
                total = int(args.seconds * SR)
                audio = audio_chunks(total, prefetch=True)
                time.sleep(1.0)  # the first clip
                dev.start(Mode.AUDIO)
                t0 = clock["t0"] = time.monotonic()
                th = threading.Thread(target=checker, args=(dev, stop_checker), daemon=True)
                th.start()
                n_sent = 0
                next_sample = 0.0
                bar = tqdm(total=int(args.seconds), unit="s", desc="soak", mininterval=5, file=sys.stderr)
                # The sending loop does only what a live host does (the reference runs afterwards
                # on the same audio, the next clip is made in a thread): a late host sends its
                # backlog at wire speed.
                for piece in audio:
                    target = t0 + (n_sent + piece.size) / SR
                    time.sleep(max(0.0, target - time.monotonic()))
                    late = time.monotonic() - target
                    clock["late_max"] = max(clock["late_max"], late)
                    if late > 0.1 and len(late_events) < 1000:  # when the host fell behind, by how much
                        late_events.append((round(target - t0, 3), round(late, 3)))
                    if dev.send_audio(piece) == 0:
                        counts["send_failures"] += 1
                    n_sent += piece.size
                    clock["n_sent"] = n_sent
                    now = time.monotonic() - t0
                    if now >= next_sample:
                        if proc.poll() is not None:
                            log(f"serve died with exit code {proc.returncode}")
                            break
                        rss, cpu = proc_sample(proc.pid)
                        samples.append((now, rss, cpu))
                        next_sample += args.sample_every
                        bar.update(int(now) - bar.n)
                        bar.set_postfix(rss_mb=f"{rss / 1024:.1f}", windows=len(ledger.received["window"]))
                bar.close()
                soak_s = n_sent / SR
                time.sleep(2.0)  # the last windows
                stop_checker.set()
                th.join(timeout=30)
                stats1 = dev.get_stats()
                watch(time.monotonic() - t0, stats1)
                # STOP: the device flushes the tail window, closes the utterance and sends the
                # summary before its ACK
                dev.stop()
                host = dev.counters()
                errors_rx = list(dev.errors)
            finally:
                stop_checker.set()
                dev.close()
        finally:
            alive = proc.poll() is None
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        link_counters = link.counters

    # The reference: the same audio, in the same chunks, through an in-process classifier of the
    # same model, then finish() (STOP's tail window, last utterance and summary).
    log("reference: the same audio through an in-process StreamingClassifier")
    ref = StreamingClassifier.from_model(str(args.model) if args.model else None)
    for piece in audio_chunks(n_sent):
        ledger.expect(ref.push_audio(piece))
        ledger.expect(ref.take_utterances())
    ledger.expect(ref.finish())
    ledger.expect(ref.take_utterances())

    parts, details = ledger.compare()
    details += [{"error": "device_error_frame", "code": int(e.code), "ref_type": int(e.ref_type),
                 "message": e.message} for e in errors_rx]
    rejected_by = {k: int(stats1.get(k, 0) - stats0.get(k, 0)) for k in DEVICE_DROP_KEYS}
    rejected_by = {k: v for k, v in rejected_by.items() if v}
    host_rejected = host["rx_dropped_total"] + host["rx_seq_lost"]
    serve_text = serve_log.read_text(errors="replace")
    tracebacks = serve_text.count("Traceback")
    parts.update({"device_error_frames": len(errors_rx), "device_rejected_frames": sum(rejected_by.values()),
                  "host_rejected_frames": int(host_rejected), "send_failures": counts["send_failures"],
                  "serve_tracebacks": tracebacks, "serve_died": int(not alive)})
    errors = int(sum(parts.values()))
    for d in details:
        log(f"ERROR {json.dumps(d, sort_keys=True)}")
    if tracebacks:
        log(f"serve log ({serve_log}):\n{serve_text[-4000:]}")

    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    cpu_s = np.array([s[2] for s in samples])
    cpu_share = np.concatenate([[0.0], np.diff(cpu_s) / np.maximum(np.diff(t), 1e-9)]) if len(t) else t
    after = t >= args.warmup
    res = {
        "soak_seconds": round(float(soak_s), 1), "errors": errors, "error_parts": parts,
        "error_details": details[:50], "incidents": incidents[:200],
        "host_late_max_s": round(late_max["all"], 3), "host_late_events": late_events[:200],
        "device_rejected_by_reason": rejected_by,
        # None from a serve that does not report them (before STATS had them)
        "device_rx_buffer": {k: stats1.get(k) for k in RX_BUFFER_KEYS},
        "host_counters": {k: v for k, v in host.items() if v}, "link_counters": link_counters,
        "rss_slope_kb_per_min": round(slope_per_min(t[after], rss[after]), 4),
        "rss_kb_first": float(rss[0]) if len(rss) else None,
        "rss_kb_first_after_warmup": float(rss[after][0]) if after.any() else None,
        "rss_kb_last": float(rss[-1]) if len(rss) else None,
        "rss_kb_max": float(rss.max()) if len(rss) else None,
        "serve_cpu_pct_mean": round(float((cpu_s[-1] - cpu_s[0]) / max(t[-1] - t[0], 1e-9) * 100), 2)
        if len(t) > 1 else None,
        "windows_expected": len(ledger.expected["window"]), "windows_received": len(ledger.received["window"]),
        "utterances_expected": len(ledger.expected["utterance"]),
        "utterances_received": len(ledger.received["utterance"]),
        "warmup_s": args.warmup,
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
