"""Accelerated soak: the soak's audio through ``ser-edge serve`` as fast as it will take it, to see
how serve's memory evolves with *stream position* in minutes instead of hours.

    python bench/soak_fast.py [--stream-seconds 7200] [--every 30] [--out soak_fast]

Same device (``python -m edge_runtime serve`` on a ``PtyLink``), same host (``DeviceClient``),
same audio (``bench/soak.py``'s ``audio_chunks``, 512-sample AUDIO frames), but the link is
unpaced with flow control (``PtyLink(baud=None, overrun="block")``), so the host sends as fast as
serve reads and nothing is lost. Every ``--every`` seconds of *stream* time it samples serve's
VmRSS and where the resident memory is (``/proc/PID/smaps``: the brk heap, anonymous mappings, the
rest), so a step can be tied to a stream position and an allocator. This is a diagnostic (no
goal): ``bench/soak.py`` is the real-time benchmark. Writes ``bench/results/<out>.json`` (every
sample; the RSS slope after ``--warmup``, over the real soak's 5-61 min window and over the second
hour; heap and anon ranges) and ``<out>.png``.

``--env NAME=VALUE`` and ``--wrap PREFIX`` change how serve runs, e.g. to see which code maps or
extends memory: ``--wrap "strace -f --seccomp-bpf -k -tt -e trace=brk,mmap,munmap -o serve.strace"``
(this is how the 0.9 MB step was traced to CPython's interned-string table; see README).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, ROOT, git_commit, machine, write_result  # noqa: E402
from bench.soak import SR, audio_chunks, proc_sample, slope_per_min  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def smaps_split(pid: int) -> dict[str, int]:
    """Resident kB of serve by kind of mapping: ``heap`` (brk), ``anon`` (anonymous mmaps: large
    malloc blocks, Python's arenas, thread stacks), ``file`` (libraries, the model)."""
    out = {"heap": 0, "anon": 0, "file": 0}
    kind = "file"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=6)
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                name = head[5].strip() if len(head) > 5 else ""
                anon = name in ("", "[stack]") or name.startswith("[anon")
                kind = "heap" if name == "[heap]" else "anon" if anon else "file"
            elif head[0] == "Rss:":
                out[kind] += int(head[1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream-seconds", type=float, default=7200.0, help="audio to stream (default 2 h)")
    ap.add_argument("--every", type=float, default=30.0, help="sample every this many stream seconds")
    ap.add_argument("--warmup", type=float, default=300.0, help="stream seconds excluded from the slope")
    ap.add_argument("--out", default="soak_fast", help="result name under bench/results/")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for serve's environment")
    ap.add_argument("--wrap", default="", help="command prefix for serve (e.g. 'strace -f -tt -e trace=brk -o F')")
    args = ap.parse_args()

    from tqdm import tqdm

    from edge_runtime.protocol import Mode
    from firmware_bridge.ptylink import PtyLink
    from firmware_bridge.serial_host import DeviceClient

    commit = git_commit()  # when the run starts: later edits to the tree are not what was measured
    results = {"n": 0}
    samples: list[dict] = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(dict(kv.split("=", 1) for kv in args.env))
    serve_log = Path(tempfile.mkdtemp(prefix="ser_edge_soak_fast_")) / "serve.log"
    with PtyLink(baud=None, overrun="block") as link, open(serve_log, "w") as logf:
        cmd = shlex.split(args.wrap) + [sys.executable, "-m", "edge_runtime", "serve", "--port", link.port_b,
                                        "--baud", "921600"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, env=env)
        pid = proc.pid
        while args.wrap and pid == proc.pid and proc.poll() is None:  # serve is the wrapper's child
            time.sleep(0.1)
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            pid = int(kids[0]) if kids else pid
        try:
            def on_result(r) -> None:
                results["n"] += 1

            dev = DeviceClient(link.port_a, 921600, timeout=2.0, retries=30, on_result=on_result).open()
            try:
                dev.start(Mode.AUDIO)
                total = int(args.stream_seconds * SR)
                t0 = time.monotonic()
                n_sent, next_at = 0, 0.0
                bar = tqdm(total=int(args.stream_seconds), unit="s", desc="stream", mininterval=5, file=sys.stderr)
                for piece in audio_chunks(total, prefetch=True):
                    dev.send_audio(piece)
                    n_sent += piece.size
                    pos = n_sent / SR
                    if pos >= next_at:
                        rss, cpu = proc_sample(pid)
                        samples.append({"stream_s": round(pos, 2), "wall_s": round(time.monotonic() - t0, 2),
                                        "time": round(time.time(), 3),
                                        "rss_kb": rss, "cpu_s": cpu, "results": results["n"],
                                        **smaps_split(pid)})
                        next_at += args.every
                        bar.update(int(pos) - bar.n)
                        bar.set_postfix(rss_mb=f"{rss / 1024:.2f}", x=f"{pos / max(1e-9, time.monotonic() - t0):.1f}")
                bar.close()
                dev.stop()
            finally:
                dev.close()
        finally:
            if pid != proc.pid:  # stop serve itself, not just its wrapper
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    t = np.array([s["stream_s"] for s in samples])
    rss = np.array([s["rss_kb"] for s in samples])
    after = t >= args.warmup
    heap = np.array([s["heap"] for s in samples])
    anon = np.array([s["anon"] for s in samples])
    soak_window = after & (t <= 3660)  # the span bench/soak.py fits (5 to 61 min)
    late = t >= 3600  # the second hour: does it still grow?
    res = {"stream_seconds": round(float(n_sent / SR), 1), "results": results["n"],
           "rss_slope_kb_per_stream_min": round(slope_per_min(t[after], rss[after]), 4),
           "rss_slope_kb_per_stream_min_5_to_61": round(slope_per_min(t[soak_window], rss[soak_window]), 4),
           "rss_slope_kb_per_stream_min_after_60": round(slope_per_min(t[late], rss[late]), 4)
           if late.sum() >= 3 else None,
           "heap_kb_range_after_warmup": [float(heap[after].min()), float(heap[after].max())] if after.any() else None,
           "anon_kb_range_after_warmup": [float(anon[after].min()), float(anon[after].max())] if after.any() else None,
           "rss_kb_first_after_warmup": float(rss[after][0]) if after.any() else None,
           "rss_kb_last": float(rss[-1]), "rss_kb_max": float(rss.max()), "samples": samples,
           "serve_env": args.env, "commit_measured": commit, "machine": machine()}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for k in ("rss_kb", "heap", "anon"):
        ax.plot(t / 60, np.array([s[k] for s in samples]) / 1024, label=k)
    ax.set_xlabel("stream minutes (accelerated)")
    ax.set_ylabel("MiB")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.out}.png", dpi=100)
    path = write_result(args.out, res)
    print(f"slope after warm-up {res['rss_slope_kb_per_stream_min']} kB/stream-min; "
          f"rss {res['rss_kb_first_after_warmup']} -> {res['rss_kb_last']} kB; wrote {path}")


if __name__ == "__main__":
    main()
