"""``ser-edge run``: classify a file, raw PCM on stdin, or the microphone; JSON lines on stdout.

Examples::

    ser-edge run clip.wav
    arecord -q -f S16_LE -r 16000 -c 1 -t raw | ser-edge run --stdin
    ser-edge run --mic --smooth 3 --min-confidence 0.5 --udp 127.0.0.1:5005

Each window prints one JSON object per line (flushed immediately), e.g.::

    {"time": 1.52, "label": "happy", "index": 2, "probs": {...}, "scores_int8": [...],
     "latency_ms": 0.61, "window": 3, "t_start": 0.5, "t_end": 1.52, "confidence": 0.71, ...}

A summary (windows, real-time factor, latency) goes to stderr at the end.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .cli_errors import BadInput
from .cli_types import dbfs, existing_file, fraction, positive_float, positive_int, udp_address


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register the ``run`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "run", help="classify audio in real time (file, stdin or microphone) -> JSON lines",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("file", nargs="?", type=existing_file, help="WAV (or FLAC with soundfile) file to classify")
    src.add_argument("--stdin", action="store_true", help="read raw S16_LE mono PCM from stdin")
    src.add_argument("--mic", action="store_true", help="record from the microphone (needs sounddevice)")
    p.add_argument("--model", type=existing_file, help="model .tflite with ser_edge metadata (default: the shipped model)")
    p.add_argument("--backend", choices=["litert", "tflite_runtime", "tensorflow", "tflm"],
                   help="interpreter (default: $SER_EDGE_BACKEND, else the first installed)")
    p.add_argument("--threads", type=positive_int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--realtime", action="store_true", help="pace a file at real time (simulate a mic)")
    p.add_argument("--rate", type=positive_int, default=None,
                   help="sample rate of --stdin PCM (default: the model's); other rates are resampled")
    p.add_argument("--device", default=None, help="microphone device index or name (--mic)")
    p.add_argument("--chunk-ms", type=positive_float, default=64.0, help="audio chunk size (default 64 ms)")
    p.add_argument("--gate-dbfs", type=dbfs, default=-45.0,
                   help="windows quieter than this RMS level are 'silence' (default -45; 'off' via --no-gate)")
    p.add_argument("--no-gate", action="store_true", help="disable the energy gate")
    p.add_argument("--frame-gate-dbfs", type=dbfs, default=None,
                   help="also require --min-voiced of a window's frames above this level")
    p.add_argument("--min-voiced", type=fraction, default=0.2, help="fraction of voiced frames (default 0.2)")
    p.add_argument("--smooth", type=positive_int, default=1, metavar="N", help="smooth over the last N windows (default off)")
    p.add_argument("--smooth-mode", choices=["ema", "majority"], default="ema")
    p.add_argument("--min-confidence", type=fraction, default=0.0, metavar="P",
                   help="label 'uncertain' when the top probability is below P")
    p.add_argument("--udp", metavar="HOST:PORT", type=udp_address, help="also send each JSON line as a UDP datagram")
    p.add_argument("--quiet", action="store_true", help="no JSON on stdout (use with --udp)")
    p.add_argument("--info", action="store_true", help="print the model/engine info as JSON and exit")
    from .mqtt import add_mqtt_args

    add_mqtt_args(p)
    p.set_defaults(func=run_command)
    return p


def _close_mqtt(pub) -> None:
    st = pub.close()
    lost = st["waiting"] + st["unacked"]
    print(f"ser-edge run: mqtt {pub.target} as {pub.device_id}: {st['records']} records, {st['acked']} "
          f"messages acknowledged, {st['dropped']} dropped (queue full)"
          + (f", {lost} not delivered (broker unreachable)" if lost else ""), file=sys.stderr)


def run_command(args: argparse.Namespace) -> int:
    """Handler of ``ser-edge run``; returns the process exit code."""
    from .audio_sources import FileSource, MicSource, StdinSource
    from .classifier import StreamingClassifier

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                            stream=sys.stderr, format="ser-edge: %(message)s")
    if not (args.file or args.stdin or args.mic or args.info):
        raise BadInput("give an audio FILE, --stdin or --mic (see ser-edge run --help)")
    # errors below (bad model, unreadable audio, no backend) are reported by edge_runtime.cli
    clf = StreamingClassifier.from_model(
        args.model, backend=args.backend, num_threads=args.threads,
        gate_dbfs=None if args.no_gate else args.gate_dbfs, frame_gate_dbfs=args.frame_gate_dbfs,
        min_voiced=args.min_voiced, smooth=args.smooth, smooth_mode=args.smooth_mode,
        min_confidence=args.min_confidence,
    )
    if args.info:
        print(json.dumps(clf.info()))
        return 0
    rate = clf.cfg.sample_rate
    if args.stdin:
        source = StdinSource(rate=args.rate or rate, sample_rate=rate, chunk_ms=args.chunk_ms)
    elif args.mic:
        dev = int(args.device) if args.device and args.device.isdigit() else args.device
        source = MicSource(sample_rate=rate, device=dev, chunk_ms=args.chunk_ms)
    else:
        source = FileSource(args.file, sample_rate=rate, chunk_ms=args.chunk_ms, realtime=args.realtime)
    send = args.udp.sender() if args.udp else None
    from .mqtt import publisher_from_args

    info = clf.info()
    mqtt = publisher_from_args(args, labels=info["labels"], model=info.get("model_name") or info["model_hash"])

    labels = clf.labels
    n, latencies = 0, []
    t0 = time.perf_counter()
    try:
        for r in clf.stream(source):
            d = {"time": round(r.t_end_s, 4), **r.to_json_dict(labels)}
            line = json.dumps(d)
            if not args.quiet:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            if send is not None:
                send(line.encode())
            if mqtt is not None:
                mqtt.publish_record(d, line)
            n += 1
            latencies.append(r.latency_ms)
    except KeyboardInterrupt:
        pass
    finally:
        if mqtt is not None:
            _close_mqtt(mqtt)
    wall = time.perf_counter() - t0
    audio_s = clf._frontend.samples_seen / rate
    if latencies:
        lat = sorted(latencies)
        msg = (f"{n} windows, {audio_s:.1f} s audio in {wall:.2f} s, latency p50 "
               f"{lat[len(lat) // 2]:.2f} ms, max {lat[-1]:.2f} ms, backend {clf.model.backend}")
    else:
        msg = f"no complete window ({audio_s:.2f} s of audio; a window needs " \
              f"{((clf.window_frames - 1) * clf.cfg.hop_length + clf.cfg.frame_length) / rate:.2f} s)"
    print(f"ser-edge run: {msg}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m edge_runtime.run_cli ...`` (same as ``ser-edge run ...``)."""
    from .cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(argv if argv[:1] == ["run"] else ["run", *argv])


if __name__ == "__main__":
    sys.exit(main())
