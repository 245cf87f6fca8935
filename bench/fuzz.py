"""Fuzz the parsers that read untrusted bytes: serial frames (Python and C), audio files, .tflite metadata.

    python bench/fuzz.py [--frames 120000] [--wavs 6000] [--tflite 12000] [--seed 1]

* **frames**: valid frames of every message type (random payloads), then mutated -- bit flips,
  inserted/deleted bytes, truncations, splices, random bytes, and CRC-*valid* frames with random
  headers and payloads (what exercises the payload decoders) -- concatenated into one stream and
  fed to ``edge_runtime.protocol.FrameDecoder`` and to the C decoder
  (``firmware_bridge/firmware/ser_protocol.c``, plus ``ser_message_check`` and the message parsers on
  every accepted frame) compiled with AddressSanitizer + UndefinedBehaviorSanitizer (gcc, and clang
  when installed), ``-fno-sanitize-recover``. A crash is a Python exception out of ``feed`` or a
  sanitizer report / non-zero exit of the C driver; the two decoders must also agree on every
  frame-level verdict (counts per drop reason).
* **wav**: 16-bit PCM (mono/stereo, 8/16/44.1 kHz), float32 WAV and FLAC files, with mutated headers
  (sample rate, channels, bit depth, chunk sizes set to extreme values, random header bytes,
  truncations, appended junk) read with ``edge_runtime.audio_io.load_audio`` (what ``ser-edge run``
  and training use) in worker processes limited to 2 GiB of address space. Anything but success or
  ``AudioInputError`` naming the file is *uncaught*; each worker's peak RSS (VmHWM) is recorded.
* **tflite**: the shipped model with bytes flipped/overwritten (anywhere, or in its metadata and
  flatbuffer tables), truncated or extended, read with ``edge_runtime.model_metadata.read_metadata``;
  anything but success or ``ModelFileError`` is *uncaught*.

Writes bench/results/fuzz.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, machine, markdown_table, write_result  # noqa: E402

import numpy as np  # noqa: E402

GOALS = {"frames_fuzzed": (">=", 100000), "frame_crashes": ("<=", 0), "wav_fuzzed": (">=", 5000),
         "wav_uncaught": ("<=", 0), "wav_peak_rss_mb_max": ("<=", 200), "tflite_fuzzed": (">=", 10000),
         "tflite_uncaught": ("<=", 0)}
FIRMWARE = ROOT / "firmware_bridge" / "firmware"
FRAME_REASONS = ("cobs", "short", "crc", "version", "length", "oversize", "unknown_type")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- frames
def _valid_messages(rng: random.Random, n: int) -> list:
    from edge_runtime.protocol import (Ack, Audio, Error, Features, GetStats, Hello, Info, Ping,
                                       Pong, Resend, Result, Start, Stats, Stop)

    out = []
    for _ in range(n):
        k = rng.randrange(14)
        r = rng.randrange
        if k == 0:
            out.append(Hello(r(1, 3), r(65536), "h" * r(0, 65)))
        elif k == 1:
            labels = tuple(f"l{i}" for i in range(r(1, 9)))
            out.append(Info(r(1, 3), r(2), 3, r(4), 1024, r(65536), 16000, 125, 62, 40, 256, 0.1, r(-128, 128),
                            -128, 1 / 256, "v", "0123456789abcdef", "fedcba9876543210", labels,
                            frame_length_samples=400, ext_flags=r(8), session=r(65536)))
        elif k == 2:
            out.append(Audio(r(1 << 32), np.array([r(-32768, 32768) for _ in range(r(0, 300))], np.int16)))
        elif k == 3:
            nf = r(1, 41)
            out.append(Features(r(1 << 32), np.array([[r(-128, 128) for _ in range(nf)] for _ in range(r(0, 6))],
                                                     np.int8).reshape(-1, nf)))
        elif k == 4:
            sc = tuple(r(-128, 128) for _ in range(r(1, 9)))
            out.append(Result(r(1 << 32), r(65536), r(len(sc)), r(64), r(1 << 32), r(1 << 32), r(1 << 32), sc))
        elif k == 5:
            out.append(Error(r(1, 12), r(65536), r(256), "e" * r(0, 201)))
        elif k in (6, 7):
            out.append((Ping if k == 6 else Pong)(bytes(r(256) for _ in range(r(0, 65)))))
        elif k == 8:
            out.append(Start(r(0, 4), r(65536), r(1 << 32)))
        elif k == 9:
            out.append(Stop() if r(2) else GetStats())
        elif k == 10:
            out.append(Ack(r(65536), r(256), r(2)))
        elif k == 11:
            out.append(Stats(r(65536), {"rx_frames": r(1 << 32), "tx_frames": r(1 << 32)}))
        else:
            out.append(Resend(r(65536), tuple((r(1 << 32), r(1, 1 << 32)) for _ in range(r(1, 9)))))
    return out


def mutate_frame(wire: bytes, rng: random.Random) -> bytes:
    """One damaged or hostile frame (always ending in a delimiter)."""
    from edge_runtime.protocol import build_raw_frame, cobs_encode

    b = bytearray(wire[:-1])
    kind = rng.randrange(9)
    if kind == 0 and b:
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1 and b:
        del b[rng.randrange(len(b))]
    elif kind == 2:
        b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
    elif kind == 3 and b:
        b = b[:rng.randrange(len(b))]
    elif kind == 4:
        b = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
    elif kind == 5:  # CRC-valid hostile frame: random type/version/length field/payload
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 3, 4, 5, 8, 21, 32, 70, 300])))
        raw = bytearray(build_raw_frame(rng.randrange(256), rng.randrange(65536), payload))
        if rng.random() < 0.2:
            raw[0] = rng.randrange(256)
        if rng.random() < 0.2:
            raw[4:6] = struct.pack("<H", rng.randrange(65536))
        import zlib
        raw[-4:] = struct.pack("<I", zlib.crc32(bytes(raw[:-4])) & 0xFFFFFFFF)
        b = bytearray(cobs_encode(bytes(raw)))
    elif kind == 6:  # CRC-valid frame of a real type with a mangled payload (truncate / extend / flip)
        from edge_runtime.protocol import cobs_decode
        import zlib
        try:
            raw = bytearray(cobs_decode(bytes(b)))
        except Exception:
            raw = bytearray()
        if len(raw) >= 10:
            body = raw[:-4]
            op = rng.randrange(3)
            if op == 0 and len(body) > 6:
                body = body[:rng.randrange(6, len(body))]
            elif op == 1:
                body += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
            elif len(body) > 6:
                body[rng.randrange(6, len(body))] ^= 1 << rng.randrange(8)
            if rng.random() < 0.8:
                body[4:6] = struct.pack("<H", len(body) - 6)
            raw = body + struct.pack("<I", zlib.crc32(bytes(body)) & 0xFFFFFFFF)
            b = bytearray(cobs_encode(bytes(raw)))
    elif kind == 7:  # oversize: no delimiter for a long while
        b = bytearray(rng.randrange(1, 256) for _ in range(rng.choice([4200, 5000])))
    else:  # a valid frame, untouched (keeps the decoders' sequence tracking busy)
        pass
    if rng.random() < 0.03:
        b += b"\x00"  # an extra empty segment
    return bytes(b) + b"\x00"


def build_c_driver(out_dir: Path, compiler: str) -> Path | None:
    """The C decoder + message parsers in a stdin-driven program, with ASan + UBSan."""
    cc = shutil.which(compiler)
    if cc is None:
        return None
    driver = out_dir / "fuzz_driver.c"
    driver.write_text(r'''
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include "ser_protocol.h"
int ser_message_check(uint8_t type, const uint8_t *p, size_t len);
int main(void) {
    static ser_decoder_t d;
    ser_frame_t f;
    unsigned long ok = 0, payload_bad = 0, drops[SER_DROP_N] = {0};
    int c;
    ser_decoder_init(&d, 0);
    while ((c = getchar()) != EOF) {
        int rc = ser_decoder_feed(&d, (uint8_t)c, &f);
        if (rc == 1) {
            uint32_t off, first[8], count[8]; uint16_t sess; uint8_t mode;
            ok++;
            if (ser_message_check(f.type, f.payload, f.length)) payload_bad++;
            if (f.type == SER_MSG_AUDIO && ser_audio_parse(f.payload, f.length, &off) > 0)
                (void)ser_audio_sample(f.payload, 0);
            if (f.type == SER_MSG_START) (void)ser_start_parse(f.payload, f.length, &mode, &sess, &off);
            if (f.type == SER_MSG_RESEND) (void)ser_resend_parse(f.payload, f.length, &sess, first, count, 8);
        } else if (rc < 0) {
            drops[-rc - 1]++;
        }
    }
    printf("{\"ok\": %lu, \"payload_bad\": %lu, \"drops\": [", ok, payload_bad);
    for (c = 0; c < SER_DROP_N; c++) printf("%s%lu", c ? ", " : "", drops[c]);
    printf("], \"seq_lost\": %lu}\n", (unsigned long)ser_decoder_stats(&d)->seq_lost);
    return 0;
}
''')
    exe = out_dir / f"fuzz_driver_{compiler}"
    cmd = [cc, "-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           "-fno-omit-frame-pointer", f"-I{FIRMWARE}", "-DSER_MAX_PAYLOAD=4096", str(driver),
           str(FIRMWARE / "ser_protocol.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def fuzz_frames(n: int, seed: int, compilers=("gcc", "clang"), log=log) -> dict:
    from edge_runtime.protocol import FrameDecoder, encode_message

    rng = random.Random(seed)
    base = [encode_message(m, i & 0xFFFF) for i, m in enumerate(_valid_messages(rng, 2000))]
    chunks, sent = [], 0
    while sent < n:
        chunks.append(mutate_frame(rng.choice(base), rng))
        sent += 1
    stream = b"".join(chunks)
    t0 = time.monotonic()
    crashes, py_errors = 0, []
    dec = FrameDecoder()
    step = 4093
    for i in range(0, len(stream), step):  # odd chunk size: frames straddle feeds
        try:
            dec.feed(stream[i:i + step])
        except Exception as e:  # any exception out of feed() is a crash
            crashes += 1
            py_errors.append(f"{type(e).__name__}: {e}")
    py_s = time.monotonic() - t0
    ps = dec.stats
    res = {"frames_fuzzed": n, "stream_bytes": len(stream), "python_frames_ok": ps.frames_ok,
           "python_drops": {k: v for k, v in ps.dropped.items() if v}, "python_seconds": round(py_s, 1),
           "python_exceptions": py_errors[:5]}
    agree = True
    with tempfile.TemporaryDirectory() as tmp:
        for cc in compilers:
            try:
                exe = build_c_driver(Path(tmp), cc)
            except subprocess.CalledProcessError as e:
                log(f"  {cc}: build failed: {e.stderr[-500:]}")
                res[f"c_{cc}"] = {"built": False}
                continue
            if exe is None:
                res[f"c_{cc}"] = {"built": False, "why": f"{cc} not installed"}
                continue
            env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
                       UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
            p = subprocess.run([str(exe)], input=stream, capture_output=True, env=env)
            crashed = p.returncode != 0 or b"runtime error" in p.stderr or b"AddressSanitizer" in p.stderr
            crashes += crashed
            entry = {"built": True, "exit_code": p.returncode, "sanitizer_report": p.stderr.decode(errors="replace")[-800:]
                     if crashed else ""}
            if not crashed:
                out = json.loads(p.stdout)
                drops = dict(zip(FRAME_REASONS + ("payload",), out["drops"]))
                # frame-level verdicts must be identical; Python's "payload" drops are frames the C
                # decoder hands on (its message check rejects them: payload_bad)
                same = all(drops[r] == ps.dropped[r] for r in FRAME_REASONS)
                same = same and out["ok"] == ps.frames_ok + ps.dropped["payload"]
                same = same and out["payload_bad"] == ps.dropped["payload"]
                agree = agree and same
                entry.update({"frames_ok": out["ok"], "payload_rejected": out["payload_bad"],
                              "verdicts_equal_python": same})
            res[f"c_{cc}"] = entry
            log(f"  C ({cc}, ASan+UBSan): exit {p.returncode}, verdicts equal to Python: {entry.get('verdicts_equal_python')}")
    res["frame_crashes"] = crashes
    res["frame_verdicts_agree"] = agree
    res["c_compilers"] = [cc for cc in compilers if res.get(f"c_{cc}", {}).get("built")]
    return res


# ---------------------------------------------------------------------------------- wav
def _base_audio_files(d: Path, rng: np.random.Generator) -> list[Path]:
    import soundfile as sf

    from edge_runtime.audio_io import write_wav

    files = []
    for i, (sr, secs) in enumerate(((16000, 1.0), (8000, 0.5), (44100, 0.3))):
        x = (rng.standard_normal(int(sr * secs)) * 3000).astype(np.int16)
        files.append(write_wav(d / f"pcm{i}.wav", x, sr))
    st = (rng.standard_normal((8000, 2)) * 2000).astype(np.int16)
    sf.write(d / "stereo.wav", st, 16000, subtype="PCM_16")
    sf.write(d / "float.wav", rng.standard_normal(8000).astype(np.float32) * 0.1, 16000, subtype="FLOAT")
    sf.write(d / "pcm24.wav", rng.standard_normal(8000) * 0.1, 22050, subtype="PCM_24")
    sf.write(d / "clip.flac", (rng.standard_normal(8000) * 2000).astype(np.int16), 16000)
    files += [d / "stereo.wav", d / "float.wav", d / "pcm24.wav", d / "clip.flac"]
    return files


_EXTREMES = (0, 1, 2, 3, 16, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
             0xFFFFFFF0, 44100, 16000)


def mutate_audio(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(7)
    head = min(len(b), 80)
    if kind == 0:  # a 32-bit header field to an extreme value (rate, sizes, byte rate, ...)
        off = rng.randrange(0, max(1, head - 4))
        b[off:off + 4] = struct.pack("<I", rng.choice(_EXTREMES) & 0xFFFFFFFF)
    elif kind == 1:  # a 16-bit field (channels, bits, format, block align)
        off = rng.randrange(0, max(1, head - 2))
        b[off:off + 2] = struct.pack("<H", rng.choice(_EXTREMES) & 0xFFFF)
    elif kind == 2:  # random header bytes
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(head)] = rng.randrange(256)
    elif kind == 3:  # truncated
        b = b[:rng.randrange(len(b))]
    elif kind == 4:  # junk appended / a fake chunk
        b += b"junk" + struct.pack("<I", rng.choice(_EXTREMES)) + bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    elif kind == 5:  # bytes flipped anywhere
        for _ in range(rng.randrange(1, 20)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    else:  # several header fields at once
        for _ in range(3):
            off = rng.randrange(0, max(1, head - 4))
            b[off:off + 4] = struct.pack("<I", rng.choice(_EXTREMES) & 0xFFFFFFFF)
    return bytes(b)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux keeps that across
    ``execve``, so a worker would report the RSS of the parent it was forked from."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _wav_worker(paths: list[str], out_path: str, mem_limit: int) -> None:
    """Read each file; record ok / AudioInputError (must name the file) / uncaught."""
    resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))
    from edge_runtime.audio_io import AudioInputError, load_audio

    res = {"ok": 0, "rejected": 0, "uncaught": 0, "unnamed": 0, "examples": [], "peak_rss_mb": 0.0}
    for p in paths:
        try:
            load_audio(p)
            res["ok"] += 1
        except AudioInputError as e:
            res["rejected"] += 1
            if p not in str(e):
                res["unnamed"] += 1
                res["examples"].append(f"unnamed: {e}")
        except BaseException as e:  # noqa: BLE001 - the point is to catch anything else
            res["uncaught"] += 1
            if len(res["examples"]) < 10:
                res["examples"].append(f"{Path(p).name}: {type(e).__name__}: {e}"[:300])
    res["peak_rss_mb"] = peak_rss_mb()
    Path(out_path).write_text(json.dumps(res))


def fuzz_wav(n: int, seed: int, workers: int = 2, mem_limit_mb: int = 2048) -> dict:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="ser_edge_fuzz_wav_"))
    try:
        bases = [p.read_bytes() for p in _base_audio_files(tmp, np.random.default_rng(seed))]
        names = ["pcm16k", "pcm8k", "pcm44k", "stereo", "float", "pcm24", "flac"]
        paths = []
        for i in range(n):
            k = rng.randrange(len(bases))
            ext = ".flac" if names[k] == "flac" else ".wav"
            p = tmp / f"m{i:05d}_{names[k]}{ext}"
            p.write_bytes(mutate_audio(bases[k], rng))
            paths.append(str(p))
        procs, outs = [], []
        code = ("import sys, json; sys.path.insert(0, %r); from bench.fuzz import _wav_worker; "
                "_wav_worker(json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]))") % str(ROOT)
        for w in range(workers):
            lst, out = tmp / f"list{w}.json", tmp / f"out{w}.json"
            lst.write_text(json.dumps(paths[w::workers]))
            procs.append(subprocess.Popen([sys.executable, "-c", code, str(lst), str(out), str(mem_limit_mb << 20)]))
            outs.append(out)
        died = 0
        for p in procs:
            died += p.wait() != 0
        parts = [json.loads(o.read_text()) for o in outs if o.exists()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tot = {k: sum(x[k] for x in parts) for k in ("ok", "rejected", "uncaught", "unnamed")}
    return {"wav_fuzzed": n, "wav_read_ok": tot["ok"], "wav_rejected_audio_input_error": tot["rejected"],
            "wav_uncaught": tot["uncaught"] + tot["unnamed"] + died, "wav_workers_died": died,
            "wav_peak_rss_mb_max": round(max((x["peak_rss_mb"] for x in parts), default=float("nan")), 1),
            "wav_examples": sum((x["examples"] for x in parts), [])[:10],
            "wav_address_space_limit_mb": mem_limit_mb}


# ---------------------------------------------------------------------------------- tflite
def mutate_tflite(data: bytes, rng: random.Random, hot: list[int]) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # flips anywhere
        for _ in range(rng.randrange(1, 10)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # 32-bit offsets/lengths in the flatbuffer tables to extreme values
        for _ in range(rng.randrange(1, 4)):
            off = rng.randrange(0, min(len(b), 4096) - 4) & ~3 if rng.random() < 0.5 else rng.choice(hot)
            b[off:off + 4] = struct.pack("<I", rng.choice(_EXTREMES) & 0xFFFFFFFF)
    elif kind == 2:  # the metadata JSON / its buffer entries
        for _ in range(rng.randrange(1, 6)):
            i = min(len(b) - 1, rng.choice(hot) + rng.randrange(-64, 64))
            b[max(0, i)] = rng.randrange(256)
    elif kind == 3:
        b = b[:rng.randrange(len(b))]
    elif kind == 4:
        b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))
    else:  # the root offset / file identifier
        for _ in range(rng.randrange(1, 3)):
            b[rng.randrange(8)] = rng.randrange(256)
    return bytes(b)


def fuzz_tflite(n: int, seed: int, mem_limit_mb: int = 2048) -> dict:
    code = ("import sys, json; sys.path.insert(0, %r); from bench.fuzz import _tflite_worker; "
            "print(json.dumps(_tflite_worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))") % str(ROOT)
    p = subprocess.run([sys.executable, "-c", code, str(n), str(seed), str(mem_limit_mb << 20)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return {"tflite_fuzzed": n, "tflite_uncaught": n, "tflite_worker_error": p.stderr[-800:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _tflite_worker(n: int, seed: int, mem_limit: int) -> dict:
    resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))
    from edge_runtime.model_metadata import ModelFileError, read_metadata

    data = (ROOT / "edge_runtime" / "models" / "default.tflite").read_bytes()
    rng = random.Random(seed)
    meta = data.find(b"ser_edge")
    js = data.find(b'{"')
    hot = [x for x in (meta, js, 4, 8, 12, 16, 20, 24, 28) if x >= 0]
    hot += [i for i in range(0, min(len(data), 512), 4)]
    ok = rejected = uncaught = 0
    examples = []
    t0 = time.monotonic()
    for _ in range(n):
        m = mutate_tflite(data, rng, hot)
        try:
            read_metadata(m, "fuzzed.tflite")
            ok += 1
        except ModelFileError:
            rejected += 1
        except BaseException as e:  # noqa: BLE001
            uncaught += 1
            if len(examples) < 10:
                examples.append(f"{type(e).__name__}: {e}"[:300])
    return {"tflite_fuzzed": n, "tflite_read_ok": ok, "tflite_rejected_model_file_error": rejected,
            "tflite_uncaught": uncaught, "tflite_examples": examples,
            "tflite_seconds": round(time.monotonic() - t0, 1),
            "tflite_peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120000)
    ap.add_argument("--wavs", type=int, default=6000)
    ap.add_argument("--tflite", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    res: dict = {"machine": machine(), "seed": args.seed}
    log(f"frames: {args.frames} mutated frames through the Python and C (ASan+UBSan) decoders ...")
    res.update(fuzz_frames(args.frames, args.seed))
    log(f"wav: {args.wavs} mutated audio files through audio_io.load_audio ...")
    res.update(fuzz_wav(args.wavs, args.seed))
    log(f"tflite: {args.tflite} mutated models through model_metadata.read_metadata ...")
    res.update(fuzz_tflite(args.tflite, args.seed))
    res["goals"] = {k: f"{op} {g}" for k, (op, g) in GOALS.items()}
    path = write_result("fuzz", res)
    print(markdown_table([(k, res.get(k), f"{op} {g}") for k, (op, g) in GOALS.items()], ("metric", "value", "goal")))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
