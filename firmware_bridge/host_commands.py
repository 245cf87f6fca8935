"""Host subcommands for the serial link: ``stream``, ``listen``, ``validate``.

``register_commands(subparsers)`` adds them (wired into ``firmware_bridge/cli.py``). Heavy imports
(pyserial, soundfile, sounddevice, the classifier) happen inside the handlers.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edge_runtime.cli_errors import BadInput, needs, require
from edge_runtime.cli_types import (baud_rate, existing_dir, existing_file, model_file, nonnegative_float,
                                   nonnegative_int, output_file, positive_float, serial_port, udp_address)

AUDIO_EXTS = (".wav", ".flac", ".ogg")


# ---------------------------------------------------------------------------------- helpers
def load_pcm(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono int16 audio of a WAV/FLAC file at ``sample_rate`` (resampled if needed)."""
    from edge_runtime.audio_io import AudioInputError, load_audio

    try:
        return load_audio(path, sample_rate)
    except AudioInputError as exc:
        raise ValueError(str(exc)) from None


def _live_line(r, labels) -> str:
    m = r.msg
    bar = "#" * max(0, min(20, (int(max(m.scores)) + 128) * 20 // 255)) if m.scores else ""
    flags = " gap" if not r.reliable else ""
    t = r.stream_offset_s + m.t_end_ms / 1000
    return f"\r[{t:8.2f} s] window {m.window_index:5d}  {r.label:<12s} {bar:<20s} {m.latency_us / 1000:6.2f} ms{flags}  "


def _open_client(args, **kw):
    from .serial_host import DeviceClient

    if getattr(args, "liveness", None) is not None and "liveness_s" not in kw:
        kw["liveness_s"] = args.liveness
    return DeviceClient(args.port, args.baud, timeout=args.timeout, **kw).open()


def _choose_mode(args, dev):
    """Mode + host feature pipeline for this link (prints the decision to stderr)."""
    from edge_runtime.protocol import Mode

    from .serial_host import HostFeatures, plan_link

    plan = plan_link(args.baud, dev.info, prefer=args.mode)
    print(f"link: {plan.reason}", file=sys.stderr)
    feats = HostFeatures(dev.info, getattr(args, "model", None)) if plan.mode == Mode.FEATURES else None
    return plan.mode, feats


class _Sender:
    """Send audio (or host-computed features) in ``chunk`` sample pieces, optionally in real time;
    remembers when each window's last input left the host (for latency)."""

    def __init__(self, dev, mode, feats, chunk: int, realtime: bool):
        self.dev, self.mode, self.feats, self.chunk, self.realtime = dev, mode, feats, chunk, realtime
        self.sent_at: list[tuple[int, float]] = []  # (samples sent so far, time.monotonic())
        self.frames: list[np.ndarray] = []  # FEATURES mode: the int8 frames sent, in order

    def send(self, pcm: np.ndarray, t0: float | None = None, base: int = 0) -> None:
        from edge_runtime.protocol import Mode

        sr = self.dev.info.sample_rate
        t0 = time.monotonic() if t0 is None else t0
        for i in range(0, pcm.size, self.chunk):
            piece = pcm[i:i + self.chunk]
            if self.realtime:
                time.sleep(max(0.0, t0 + (base + i + piece.size) / sr - time.monotonic()))
            if self.mode == Mode.AUDIO:
                self.dev.send_audio(piece)
            else:
                fr = self.feats.push(piece)
                if len(fr):
                    self.dev.send_features(fr)
                    self.frames.append(fr)
            self.sent_at.append((base + i + piece.size, time.monotonic()))

    def time_sent(self, sample: int) -> float | None:
        """When the chunk containing stream sample ``sample - 1`` was handed to the port."""
        for n, t in self.sent_at:
            if n >= sample:
                return t
        return None


def _audio_or_mic(text: str) -> str:
    """argparse type of ``stream``'s input: ``mic`` or an existing audio file."""
    return text if text == "mic" else existing_file(text)


def _add_link_args(p, mode=True) -> None:
    p.add_argument("--port", required=True, type=serial_port, help="serial port of the device (e.g. /dev/ttyUSB0)")
    p.add_argument("--baud", type=baud_rate, default=921600, help="baud rate (default 921600)")
    p.add_argument("--timeout", type=positive_float, default=1.0, help="seconds to wait for each reply")
    if mode:
        p.add_argument("--liveness", type=positive_float, default=1.0,
                       help="seconds of device silence while streaming before the host PINGs and, after 3, "
                            "re-handshakes (default 1; raise it for links slower than their baud rate, e.g. "
                            "the firmware in QEMU, whose emulated UART moves ~18 KB/s)")
        p.add_argument("--mode", choices=("auto", "audio", "features"), default="auto",
                       help="send raw AUDIO or host-computed FEATURES (auto: AUDIO if the baud rate "
                            "carries it, else FEATURES)")
        p.add_argument("--model", default=None, type=model_file, metavar="NAME|PATH",
                       help="the device's model: a shipped name (small, alias mcu; pi) or a .tflite (host front "
                            "end for FEATURES mode / reference; default: the small model, the firmware's)")


# ---------------------------------------------------------------------------------- stream
def _device_stats(dev, missing) -> dict | None:
    """The device's STATS counters after the session (its receive buffer's ``rx_buffered_max`` /
    ``rx_buffer_full`` included, when it reports them); None when the device stopped answering."""
    if "stop" in missing:  # STOP went unanswered: do not wait out the retries again
        return None
    try:
        return dev.get_stats()
    except Exception:  # noqa: BLE001 - the session's labels are out already; the counters are extra
        return None


def _cmd_stream(args) -> int:
    require("ser-edge stream", "serial")
    from edge_runtime.protocol import Mode

    done = threading.Event()
    labels = []

    def on_result(r):
        print(json.dumps(r.to_json_dict()), flush=True)
        if not args.quiet:
            print(_live_line(r, labels), end="", file=sys.stderr, flush=True)

    dev = _open_client(args, on_result=on_result)
    try:
        labels[:] = dev.info.labels
        print(f"device: {dev.info.version} model {dev.info.model_hash} labels {list(dev.info.labels)}",
              file=sys.stderr)
        mode, feats = _choose_mode(args, dev)
        dev.start(mode)
        sr = dev.info.sample_rate
        chunk = args.chunk or (512 if mode == Mode.AUDIO else dev.info.frame_hop_samples or 256)
        sender = _Sender(dev, mode, feats, chunk, realtime=args.realtime or args.input == "mic")
        try:
            if args.input == "mic":
                from edge_runtime.audio_sources import MicSource

                t0, n = time.monotonic(), 0
                for block in MicSource(sr, chunk_ms=1000 * chunk / sr):
                    sender.send(block, t0, n)
                    n += block.size
            else:
                sender.send(load_pcm(args.input, sr))
                # the last windows, and any asked for again (RESEND) after losses on the link
                t_end = time.monotonic() + max(args.tail, 1.0 + (dev.info.resend_hold_ms or 0) / 1000)
                time.sleep(min(args.tail, 0.2))
                while time.monotonic() < t_end and dev.missing_windows():
                    time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        owed, missing = dev.expected_windows(), dev.missing_windows()
        try:
            dev.stop()
        except Exception as exc:  # noqa: BLE001 - the device is gone: say so below
            print(f"\nstream: WARNING: STOP not answered ({exc})", file=sys.stderr)
            missing = missing or ["stop"]
        c = dev.counters()
        if not args.quiet:
            print("\n" + json.dumps({"host": c, "device": _device_stats(dev, missing)}), file=sys.stderr)
        if c["gap_results"]:
            print(f"stream: WARNING: {c['gap_results']} window(s) overlap input lost on the link "
                  "(printed as label \"gap\")", file=sys.stderr)
        if missing:
            got = (owed or 0) - len([m for m in missing if m != "stop"])
            print(f"stream: WARNING: the link delivered {max(got, 0)} of {owed} windows owed "
                  f"({len(missing)} missing): the device or the link stopped delivering", file=sys.stderr)
            return 1
    finally:
        done.set()
        dev.close()
    return 0


# ---------------------------------------------------------------------------------- listen
def _cmd_listen(args) -> int:
    require("ser-edge listen", "serial")
    from edge_runtime.protocol import Mode

    from edge_runtime.mqtt import default_device_id, publisher_from_args

    # before the port opens, so no pushed record arrives before it can be published
    pub = publisher_from_args(args, default_id=lambda: default_device_id(Path(args.port).name))
    send = args.udp.sender() if args.udp else None

    def on_result(r):
        rec = r.to_json_dict()
        line = json.dumps(rec)
        if send is not None:
            send(line.encode())
        if pub is not None:
            pub.publish_record(rec, line)
        if not args.quiet or (send is None and pub is None):
            print(line, flush=True)

    try:
        dev = _open_client(args, on_result=on_result, accept_push=True, liveness_s=0)
    except BaseException:
        if pub is not None:
            pub.close(timeout_s=0)
        raise
    try:
        print(f"listening to {args.port}: labels {list(dev.info.labels)}"
              + (f", forwarding to {args.udp}" if send else "")
              + (f", publishing to {pub.target} as ser-edge/{pub.device_id}/" if pub else ""), file=sys.stderr)
        if args.start:
            dev.start(Mode.MIC_PUSH)
        t_end = None if args.seconds is None else time.monotonic() + args.seconds
        while t_end is None or time.monotonic() < t_end:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        dev.close()
        if send is not None:
            send.close()
        if pub is not None:
            pub.close()
    return 0


# ---------------------------------------------------------------------------------- validate
def _percentiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    a = np.asarray(xs)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99)} | {"max": round(float(a.max()), 3)}


def _clip_label(path: Path, root: Path, labels) -> str | None:
    """Ground truth from the folder structure: the first directory name below ``root`` that is a label."""
    for part in path.relative_to(root).parts[:-1]:
        if part in labels:
            return part
    stem = path.stem.lower()
    hits = [lab for lab in labels if lab.lower() in stem.split("_") or stem.startswith(lab.lower())]
    return hits[0] if len(hits) == 1 else None


def _host_reference(clf, mode, pcm: np.ndarray, frames: list[np.ndarray]):
    """The host's ``(windows, summary)`` for what the device was given: the clip's audio in AUDIO
    mode; in FEATURES mode the int8 frames sent, which the device classifies without its speech gate
    (features carry no level), so the host must not gate them either for the summaries to compare."""
    from edge_runtime.protocol import Mode

    if mode == Mode.AUDIO:
        wins, _, summary = clf.classify_clip(pcm)
        return wins, summary
    clf.reset()
    wins = clf.push_features(np.concatenate(frames)) if frames else []
    wins += clf.finish()
    return wins, clf.take_utterances()[-1]


def _summary_label(summary, labels) -> str:
    """A host summary's label as the device's summary record carries it (``too_short`` travels as
    ``silence``: the wire has no flag for it), by the rule the host reads RESULTs with."""
    from edge_runtime.serial_device import result_to_message

    from .serial_host import result_label

    return result_label(result_to_message(summary, 0), labels)


NO_EMOTION = ("silence", "no_speech", "uncertain")  # summary labels that are not emotions


def validate_corpus(dev, clf, files: list[Path], root: Path, *, mode, feats=None,
                    realtime: bool = False, log=None) -> dict:
    """Send each file through the device and compare every RESULT with the host's int8 prediction:
    every window (top-1 and int8 scores) and each clip's summary record (its label)."""
    from edge_runtime.protocol import Mode

    labels = list(dev.info.labels)
    sr = dev.info.sample_rate
    n_win = n_agree = n_scores_equal = n_missing = n_gap = 0
    n_sum_missing = n_sum_agree = n_sum_no_emotion = 0
    clip_ok = clip_total = 0
    dev_lat, link_lat = [], []
    per_file = []
    chunk = 512 if mode == Mode.AUDIO else (dev.info.frame_hop_samples or 256)
    for path in files:
        try:
            pcm = load_pcm(path, sr)
        except ValueError as exc:
            if log:
                log(f"skip: {exc}")
            continue
        if feats is not None:
            feats.reset()
        dev.drain_results()
        dev.start(mode)
        sender = _Sender(dev, mode, feats, chunk, realtime)
        sender.send(pcm)
        dev.stop()  # the device flushes its tail window and sends utterance + summary records
        # The device sends its summary (after the tail window and the last utterance) before the
        # ACK of STOP, and the reader thread queues RESULTs in arrival order: once stop() returned,
        # all the device sent for this clip is queued. (Reading a count of records the host expected
        # stopped before the summary whenever the device sent more utterance records than the host's
        # reference: FEATURES mode, whose windows the device does not gate.)
        got, summary = {}, None
        for r in dev.drain_results():
            if r.record == "window":
                got[r.window_index] = r
            elif r.record == "summary":
                summary = r
        ref, ref_summary = _host_reference(clf, mode, pcm, sender.frames)
        f_agree = 0
        for w in ref:
            r = got.get(w.window_index)
            n_win += 1
            if r is None:
                n_missing += 1
                continue
            if not r.reliable:
                n_gap += 1
            same = r.msg.label_index == w.model_index  # the model's top-1 (gates differ in FEATURES mode)
            n_agree += same
            f_agree += same
            n_scores_equal += tuple(r.msg.scores) == tuple(int(v) for v in w.scores_int8)
            dev_lat.append(r.msg.latency_us / 1000)
            ts = sender.time_sent(int(round(r.msg.t_end_ms * sr / 1000)))
            if ts is not None:
                link_lat.append((r.t_rx - ts) * 1000)
        truth = _clip_label(path, root, labels)
        # the clip's label is the device's summary record (window policy: mean log-probability over
        # speech windows), not a vote; a device always sends one, so none is a failure
        pred = summary.label if summary is not None else "missing"
        host_pred = _summary_label(ref_summary, labels)
        n_sum_missing += summary is None
        n_sum_agree += pred == host_pred
        n_sum_no_emotion += pred == host_pred and pred in NO_EMOTION
        if truth is not None:
            clip_total += 1
            clip_ok += pred == truth
        per_file.append({"file": str(path.relative_to(root)), "windows": len(ref), "received": len(got),
                         "agree": f_agree, "truth": truth, "pred": pred, "host_pred": host_pred,
                         "summary_agree": pred == host_pred})
        if log:
            log(f"{path.relative_to(root)}: {f_agree}/{len(ref)} windows agree, pred {pred}"
                + ("" if pred == host_pred else f" (host {host_pred})") + (f" (truth {truth})" if truth else ""))
    n_files = len(per_file)
    return {
        "files": n_files, "windows": n_win, "missing": n_missing, "gap_flagged": n_gap,
        "agreement": round(n_agree / n_win, 4) if n_win else None,
        "scores_identical": round(n_scores_equal / n_win, 4) if n_win else None,
        "summaries_missing": n_sum_missing,
        "summary_agreement": round(n_sum_agree / n_files, 4) if n_files else None,
        "summaries_no_emotion": n_sum_no_emotion,
        "clip_accuracy": round(clip_ok / clip_total, 4) if clip_total else None,
        "labelled_clips": clip_total,
        "device_latency_ms": _percentiles(dev_lat), "label_latency_ms": _percentiles(link_lat),
        "mode": Mode(mode).name.lower(), "baud": dev.baud, "realtime": realtime,
        # without real-time pacing the host queues audio faster than the link drains it, so the
        # label latency then includes that queueing; use --realtime for a live-stream figure
        "label_latency_includes_queueing": not realtime, "per_file": per_file,
    }


def validation_passed(rep: dict) -> bool:
    """``validate``'s verdict: every window came back with the host's top-1, and every clip's
    summary record came back with the host's summary label (a clip both sides call ``no_speech``
    agrees; a summary on one side only does not)."""
    return (rep["agreement"] == 1.0 and rep["missing"] == 0 and rep["summaries_missing"] == 0
            and rep["summary_agreement"] == 1.0)


def _cmd_validate(args) -> int:
    require("ser-edge validate", "serial")
    from edge_runtime.classifier import StreamingClassifier

    root = Path(args.corpus)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS)
    if not files:
        raise BadInput(f"{root}: no {'/'.join(AUDIO_EXTS)} files in this folder")
    if args.limit:
        files = files[:args.limit]
    clf = StreamingClassifier.from_model(args.model)
    dev = _open_client(args)
    try:
        host_hash = clf.info()["model_hash"]
        if dev.info.model_hash != host_hash:
            print(f"validate: WARNING device model {dev.info.model_hash} != host model {host_hash}; "
                  "disagreement is expected", file=sys.stderr)
        mode, feats = _choose_mode(args, dev)
        rep = validate_corpus(dev, clf, files, root, mode=mode, feats=feats, realtime=args.realtime,
                              log=lambda s: print(s, file=sys.stderr))
        rep["link"] = dev.counters()
    finally:
        dev.close()
    # JSON lines in the one record schema (edge_runtime.records): a file record per clip, then totals
    from edge_runtime.records import make as make_record

    for pf in rep["per_file"]:
        print(json.dumps(make_record("file", pf)))
    print(json.dumps(make_record("validation", {k: v for k, v in rep.items() if k != "per_file"})), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rep, indent=2))
    print("\n| metric | value |\n|---|---|", file=sys.stderr)
    for k in ("files", "windows", "missing", "agreement", "scores_identical", "summaries_missing",
              "summary_agreement", "summaries_no_emotion", "clip_accuracy"):
        print(f"| {k} | {rep[k]} |", file=sys.stderr)
    for k in ("device_latency_ms", "label_latency_ms"):
        print(f"| {k} p50/p90 | {rep[k].get('p50')} / {rep[k].get('p90')} |", file=sys.stderr)
    return 0 if validation_passed(rep) else 1


# ---------------------------------------------------------------------------------- registration
def register_commands(subparsers) -> None:
    """Add ``stream``, ``listen`` and ``validate`` to the ``ser-edge`` CLI."""
    p = subparsers.add_parser("stream", help=needs("stream a file or the host mic to a serial device", "serial"),
                              description="Send audio (or host-computed features, on slow links) to a "
                                          "device running `ser-edge serve`/firmware; print one JSON "
                                          "line per RESULT on stdout and a live view on stderr.")
    _add_link_args(p)
    p.add_argument("input", type=_audio_or_mic, help="WAV/FLAC file, or 'mic' for the host microphone")
    p.add_argument("--realtime", action="store_true", help="pace a file at real time")
    p.add_argument("--chunk", type=nonnegative_int, default=0, help="samples per send (default 512 / one hop)")
    p.add_argument("--tail", type=nonnegative_float, default=1.0, help="seconds to wait for the last results")
    p.add_argument("--quiet", action="store_true", help="JSON lines only (no live view)")
    p.set_defaults(func=_cmd_stream)

    p = subparsers.add_parser("listen", help=needs("print/forward labels a device pushes on its own", "serial"),
                              description="Receive RESULTs a device sends unasked (serve --push-mic, "
                                          "robot mode); JSON lines on stdout, UDP and/or MQTT.")
    _add_link_args(p, mode=False)
    p.add_argument("--udp", metavar="HOST:PORT", type=udp_address, default=None,
                   help="also send each JSON line as a UDP datagram to HOST:PORT")
    p.add_argument("--start", action="store_true", help="send START MIC_PUSH first")
    p.add_argument("--seconds", type=positive_float, default=None, help="stop after this long")
    p.add_argument("--quiet", action="store_true", help="with --udp/--mqtt: do not print to stdout")
    from edge_runtime.mqtt import add_mqtt_args

    add_mqtt_args(p, device_id_help="topic level for this device (default: <host name>-<port name>)")
    p.set_defaults(func=_cmd_listen)

    p = subparsers.add_parser("validate", help=needs("compare device RESULTs with host int8 predictions", "serial"),
                              description="Send every audio file of a corpus folder through the device "
                                          "and compare each RESULT with the host's prediction of the same "
                                          "int8 model on the same input: every window and each clip's "
                                          "summary record; agreement, accuracy (labels from folder names), "
                                          "latency percentiles. Exit 0 only if all came back and agreed.")
    _add_link_args(p)
    p.add_argument("corpus", type=existing_dir, help="folder of WAV/FLAC files (label = a folder name that is a label)")
    p.add_argument("--realtime", action="store_true",
                   help="pace audio at real time (label latency is then the live-stream latency)")
    p.add_argument("--limit", type=nonnegative_int, default=0, help="at most this many files")
    p.add_argument("--out", default=None, type=output_file, help="write the full report (per file) as JSON")
    p.set_defaults(func=_cmd_validate)
