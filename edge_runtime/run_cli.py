"""``ser-edge run``: classify a file, raw PCM on stdin, or the microphone; JSON lines on stdout.

Examples::

    ser-edge run clip.wav
    arecord -q -f S16_LE -r 16000 -c 1 -t raw | ser-edge run --stdin
    ser-edge run --mic --smooth 3 --min-confidence 0.5 --udp 127.0.0.1:5005

Each window prints one JSON object per line (flushed immediately), then each utterance (a run of
speech windows, closed by 2 non-speech windows or the end), then one summary of the whole input::

    {"record": "window", "time": 1.52, "window": 3, "t_start": 0.5, "t_end": 1.52, "label": "happy",
     "index": 2, "reason": null, "probs": {...}, "scores_int8": [...], "latency_ms": 0.61, ...}
    {"record": "window", ..., "label": "no_speech", "index": null, "reason": "no_speech", ...}
    {"record": "utterance", "utterance": 0, "t_start": 0.0, "t_end": 3.5, "label": "happy",
     "index": 2, "reason": null, "confidence": 0.64, "probs": {...}, "windows": 4, "speech_windows": 3, ...}
    {"record": "summary", ..., "label": "happy", "index": 2, ...}

Windows the speech gate closes carry ``index: null`` and ``reason`` ``silence`` or ``no_speech``
(docs/window_policy.md). A line with timing (windows, real-time factor, latency) goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .cli_errors import BadInput, require
from .cli_types import existing_file, fraction, model_spec, positive_float, positive_int, udp_address


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
    p.add_argument("--model", type=model_spec, default="auto", metavar="NAME|PATH",
                   help="a shipped model (small, alias mcu; pi), a .tflite with ser_edge metadata, or auto "
                        "(default: $SER_EDGE_MODEL if set, else pi on a Raspberry Pi when shipped, else small)")
    p.add_argument("--backend", choices=["litert", "tflite_runtime", "tensorflow", "tflm", "c"],
                   help="interpreter (default: $SER_EDGE_BACKEND, else the first installed; "
                        "c = the model compiled to C with gcc, no TFLite needed)")
    p.add_argument("--threads", type=positive_int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--realtime", action="store_true", help="pace a file at real time (simulate a mic)")
    p.add_argument("--rate", type=positive_int, default=None,
                   help="sample rate of --stdin PCM (default: the model's); other rates are resampled")
    p.add_argument("--device", default=None, help="microphone device index or name (--mic)")
    p.add_argument("--chunk-ms", type=positive_float, default=64.0, help="audio chunk size (default 64 ms)")
    p.add_argument("--no-gate", action="store_true",
                   help="disable the speech gate (every window gets an emotion; docs/speech_gate.md)")
    p.add_argument("--gate-margin-db", type=positive_float, default=None, metavar="DB",
                   help="speech frames are this far above the tracked noise floor (default 9)")
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
    if args.mic:  # before the model loads: a missing extra is a one-line answer
        require("ser-edge run --mic", "sounddevice")
    # errors below (bad model, unreadable audio, no backend) are reported by edge_runtime.cli
    from .classifier import DEFAULT_GATE
    from .model_select import ModelChoice, load_choice, resolve_model
    from .speech_gate import GateConfig
    from .window_policy import WindowPolicy

    gate = None if args.no_gate else (
        DEFAULT_GATE if args.gate_margin_db is None else GateConfig(margin_db=args.gate_margin_db))
    choice = args.model if isinstance(args.model, ModelChoice) else resolve_model(args.model)
    choice, clf = load_choice(choice, lambda path: StreamingClassifier.from_model(
        path, backend=args.backend, num_threads=args.threads, gate=gate,
        policy=WindowPolicy(min_confidence=args.min_confidence), smooth=args.smooth,
        smooth_mode=args.smooth_mode,
    ))
    if args.info:
        print(json.dumps({**clf.info(), "model_selection": {"name": choice.name, "path": str(choice.path),
                                                            "reason": choice.reason}}))
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
    # once the model, the input and the outputs opened, so a failure of any is still one line
    print(f"ser-edge run: {choice.describe()}", file=sys.stderr)

    labels = clf.labels
    n, latencies = 0, []
    t0 = time.perf_counter()
    audio_s = 0.0

    def emit(r) -> None:
        d = r.to_json_dict(labels)  # one schema for every record (edge_runtime.records)
        line = json.dumps(d)
        if not args.quiet:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        if send is not None:
            send(line.encode())
        if mqtt is not None:
            mqtt.publish_record(d, line)

    try:
        try:
            for r in clf.stream(source, finish=False):
                emit(r)
                if r.record == "window":
                    n += 1
                    latencies.append(r.latency_ms)
        except KeyboardInterrupt:  # Ctrl-C on a live source: still flush and summarise
            pass
        audio_s = clf._frontend.samples_seen / rate
        for r in clf.finish():  # the tail window (window policy), then the last utterance + summary
            emit(r)
            n += 1
            latencies.append(r.latency_ms)
        for r in clf.take_utterances():
            emit(r)
    finally:
        if mqtt is not None:
            _close_mqtt(mqtt)
    wall = time.perf_counter() - t0
    if latencies:
        lat = sorted(latencies)
        msg = (f"{n} windows, {audio_s:.1f} s audio in {wall:.2f} s, latency p50 "
               f"{lat[len(lat) // 2]:.2f} ms, max {lat[-1]:.2f} ms, backend {clf.model.backend}")
    else:
        msg = f"no window ({audio_s:.2f} s of audio; the shortest input classified is " \
              f"{((clf.policy.min_frames - 1) * clf.cfg.hop_length + clf.cfg.frame_length) / rate:.2f} s)"
    print(f"ser-edge run: {msg}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m edge_runtime.run_cli ...`` (same as ``ser-edge run ...``)."""
    from .cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(argv if argv[:1] == ["run"] else ["run", *argv])


if __name__ == "__main__":
    sys.exit(main())
