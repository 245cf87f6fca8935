"""Firmware benchmark: C front end bit-exactness on real speech, its speed, Cortex-M4 size and cycle
estimate, and a real int8 model in TFLite Micro vs LiteRT.

    python bench/firmware.py [--clips 120] [--repeats 7] [--no-tflm]

Writes bench/results/firmware.json and prints Markdown tables. Speed: one core, the same clips for
every implementation, interleaved repeats; the front-end ``rtf_*`` / ``ratio_*`` from the median
CPU time of the rounds, ``*_wall_median`` from wall-clock medians of the same rounds (bench/common.py);
the other timings are wall-clock medians. The C front end is called through ctypes once per clip
(ser_fe_compute), so Python overhead is negligible.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, interleaved_medians, interleaved_wall_and_cpu_medians, machine, markdown_table, peer_mfcc_runners, pin_one_core, write_result  # noqa: E402

pin_one_core()

import numpy as np  # noqa: E402

CPU_HZ = 80_000_000

# Cortex-M4 cycle costs assumed by the estimate (ARM Cortex-M4 TRM, 0-wait-state SRAM / flash with
# an ART-style accelerator): SMULL/SMLAL/UMULL 1 cycle, MUL 1, ALU/shift 1, LDR 2 (not counting the
# pipelining of back-to-back loads), STR 1, loop / conditional branch 3 (compare + taken branch).
CYCLES = {"mul64": 1, "mul32": 1, "alu": 1, "shift": 1, "load": 2, "store": 1, "branch": 3}


def op_counts(cfg) -> dict:
    """Operations per frame of ser_frontend.c, from its loop counts (per-iteration tallies read off
    the C: a 64-bit add = 2 ALU ops, a 64-bit shift whose low word is kept = 2 shift ops)."""
    from edge_runtime.frontend import make_tables

    t = make_tables(cfg)
    n, m = cfg.frame_length, cfg.frame_length // 2
    k = t.mel.bin_hi - t.mel.bin_lo
    L, D = cfg.n_mels, cfg.n_features
    stages = max(int(np.log2(m)) - 1, 0)
    lm = int(np.log2(m))

    def per(count, **ops):
        return {"iterations": int(count), **{o: float(v) * count for o, v in ops.items()}}

    rows = {
        # ring copy of the hop's new samples (ser_fe_push)
        "push (hop samples)": per(cfg.hop_length, load=1, store=1, alu=3, branch=1),
        # pass 1: |x w| as int64 and running max
        "window + peak": per(n, load=2, mul64=1, alu=10, branch=1),
        # pass 2: x w again, rounded shift to int32
        "window + shift": per(n, load=2, mul64=1, alu=4, shift=4, store=1, branch=0.5),
        **({
            "fft butterflies (twiddled)": per(stages * m // 2, load=4, store=4, mul64=3, alu=11, shift=4, branch=1),
            "fft twiddle loads": per(m - 2, load=2, alu=3, branch=1),
            "fft last stage (W=1)": per(m // 2, load=4, store=4, alu=4, branch=1),
        } if cfg.algorithm_version == 1 else {
            # v2 radix-4: per butterfly 8 loads + 6 twiddle loads, 16 adds (b, c), 3 x (3 SMULL/SMLAL,
            # 4 adds, two 64-bit shifts kept as 32 bits) ; stages with q > 1 (the n = 0 column is cheaper)
            "fft radix-4 butterflies (twiddled)": per((lm // 2 - (1 - lm % 2)) * m // 4, load=14, store=8, mul64=9,
                                                      alu=34, shift=6, branch=1),
            "fft last stage (W=1)": per(m // 4 if lm % 2 == 0 else m // 2, load=8, store=8, alu=16, branch=1),
            # running-mean subtraction: one 32-bit update and subtraction per mel (division only
            # during the first 2^norm_shift frames)
            "running mean (per mel)": per(L if cfg.norm == "mean" else 0, load=2, store=2, alu=6, shift=3, branch=1),
        }),
        # real split (4 SMULL/SMLAL), power (2), mel split (3), two mel accumulations (int64 RMW)
        "split + power + mel": per(k, load=13, store=4, mul64=8, mul32=1, alu=24, shift=14, branch=3),
        "log2 (per mel)": per(L, load=4, store=3, mul32=1, alu=13, shift=6, branch=3),
        "dct (MACs)" if cfg.output == "mfcc" else "logmel rescale": (
            per(D * L, load=2, mul64=1, branch=1) if cfg.output == "mfcc" else per(L, load=1, store=1, alu=2, branch=1)),
    }
    if cfg.output == "mfcc":
        rows["dct rows"] = per(D, alu=4, shift=2, store=1, branch=1)
    total = {o: sum(r.get(o, 0.0) for r in rows.values()) for o in CYCLES}
    for r in rows.values():
        r["cycles"] = sum(r.get(o, 0.0) * c for o, c in CYCLES.items())
    cycles = sum(r["cycles"] for r in rows.values())
    fps = cfg.sample_rate / cfg.hop_length
    return {"per_frame": rows, "total_ops_per_frame": total, "cycles_per_frame": round(cycles),
            "frames_per_second": fps, "cycles_per_second": round(cycles * fps),
            "cpu_percent_at_80mhz": round(100 * cycles * fps / CPU_HZ, 2), "assumptions": CYCLES}


def m4_sizes(cfg) -> dict | None:
    """arm-none-eabi section sizes: the front-end code, the protocol code, the exported tables of
    ``cfg`` and the caller-owned state (one ser_fe_state_t + one ser_decoder_t as globals)."""
    from firmware_bridge.cbuild import cross_compile_m4
    from firmware_bridge.export import export_c

    tmp = Path(tempfile.mkdtemp(prefix="ser_fw_bench_"))
    export_c(None, cfg, tmp, copy_sources=False)
    (tmp / "state.c").write_text('#include "ser_frontend.h"\n#include "ser_protocol.h"\n'
                                 "ser_fe_state_t g_fe;\nser_decoder_t g_rx;\n")
    res = cross_compile_m4(tmp, sources=("ser_frontend.c", "ser_protocol.c", tmp / "ser_model.c", tmp / "state.c"),
                           include_dirs=(tmp,))
    return res


def synthetic_signals() -> dict[str, np.ndarray]:
    from edge_runtime.test_signals import dithered_silence, harmonic_vowel, quiet_speechlike, tone_sweep, white_noise
    from tests.golden.regen_frontend_golden import golden_signal

    i = np.arange(48000)
    return {
        "white_noise": white_noise(3.0, level_dbfs=-12), "tone_sweep": tone_sweep(3.0),
        "quiet_-40dBFS": quiet_speechlike(3.0, peak_dbfs=-40), "silence_dither": dithered_silence(3.0),
        "vowel": harmonic_vowel(2.0), "golden": golden_signal(),
        "full_scale_square": np.where((i // 20) % 2, 32767, -32768).astype(np.int16),
        "full_scale_noise": np.random.default_rng(0).integers(-32768, 32768, 48000).astype(np.int16),
        "digital_silence": np.zeros(16000, np.int16),
    }


def check_bit_exact(clips: list[np.ndarray], cfgs) -> dict:
    """Every frame of every clip, batch (ser_fe_compute) and streaming (ser_fe_push/pop with random
    chunks) against the numpy front end."""
    from edge_runtime.frontend import compute_features
    from firmware_bridge.cbuild import CFrontend

    rng = np.random.default_rng(1)
    out = {"frames": 0, "mismatched_frames": 0, "clips_mismatched": 0, "streamed_clips": 0}
    for cfg in cfgs:
        fe = CFrontend(cfg)
        for j, x in enumerate(clips):
            want = compute_features(x, cfg)
            got = fe.compute(x)
            bad = int(np.sum(np.any(got != want, axis=1))) if got.shape == want.shape else max(len(want), 1)
            if j % 4 == 0:  # streaming on a quarter of the clips
                s = fe.stream()
                cuts = np.sort(rng.integers(0, x.size, rng.integers(1, 40)))
                parts = [s.push(p) for p in np.split(x, cuts)]
                st = np.concatenate(parts) if parts else np.zeros((0, cfg.n_features), np.int32)
                bad = max(bad, int(not np.array_equal(st, want)))
                out["streamed_clips"] += 1
            out["frames"] += len(want)
            out["mismatched_frames"] += bad
            out["clips_mismatched"] += int(bad > 0)
    out["c_bit_exact"] = out["mismatched_frames"] == 0
    return out


def speed(clips: list[np.ndarray], repeats: int) -> dict:
    from edge_runtime.frontend import FrontendConfig, compute_features_many
    from firmware_bridge.cbuild import CFrontend

    cfg = FrontendConfig()
    fe = CFrontend(cfg)
    seconds = sum(x.size for x in clips) / cfg.sample_rate
    fns = {
        "c": lambda: [fe.compute(x) for x in clips],
        "numpy_batch": lambda: compute_features_many(clips, cfg),
        **peer_mfcc_runners(cfg, clips),
    }
    med_wall, cpu_med = interleaved_wall_and_cpu_medians(fns, repeats)
    frames = sum(cfg.n_frames(x.size) for x in clips)
    return {"rtf": {k: seconds / v for k, v in cpu_med.items()}, "seconds_audio": seconds,
            "rtf_wall_median": {k: seconds / v for k, v in med_wall.items()},
            "c_us_per_frame": 1e6 * cpu_med["c"] / frames}


def _windows(feats: list[np.ndarray], w: int, hop: int, pad_value: int) -> np.ndarray:
    out = []
    for f in feats:
        if len(f) < w:
            f = np.concatenate([f, np.full((w - len(f), f.shape[1]), pad_value, f.dtype)])
        for a in range(0, len(f) - w + 1, hop):
            out.append(f[a:a + w])
    return np.stack(out)


def tflm_section(clips: list[np.ndarray], max_windows: int = 160) -> dict:
    """A real int8 model: the shipped default when present, else the default architecture (crnn,
    2 s of log-mels) with random weights, converted to int8 with real calibration features. Its
    inputs are produced by the C front end and the C quantiser (the device path); TFLM and LiteRT
    run the same int8 windows, each after a state reset."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edge_runtime.frontend import FrontendConfig
    from firmware_bridge.cbuild import CFrontend, quantize
    from firmware_bridge.export import quantize_multiplier
    from edge_runtime import interpreter as tflm  # run_tflm / run_litert / compare_int8 / min_arena_size

    default = ROOT / "edge_runtime" / "models" / "default.tflite"
    if default.exists():
        from edge_runtime.model_metadata import read_metadata

        model = default.read_bytes()
        md = read_metadata(model)
        cfg, w, hop = md.frontend_config(), md.window_frames, md.hop_frames
        scale, zp, source = md.input_scale, md.input_zero_point, str(default.relative_to(ROOT))
        feats = [CFrontend(cfg).compute(x) for x in clips]
    else:
        from model_build.convert import convert_int8, io_quant
        from model_build.models import ModelConfig, build_model

        import tf_keras

        cfg = FrontendConfig(output="logmel")
        w = int(round(2.0 * cfg.sample_rate / cfg.hop_length))
        hop = w // 2
        fe = CFrontend(cfg)
        feats = [fe.compute(x) for x in clips]
        calib = _windows(feats[: len(feats) // 2], w, hop, int(cfg.log_floor * 2**cfg.frac_bits)) / 2.0**cfg.frac_bits
        tf_keras.utils.set_random_seed(0)
        km = build_model(ModelConfig(), w, cfg.n_features, 8, batch_size=1, fold_norm=True, with_softmax=False)
        model, _ = convert_int8(km, calib.astype(np.float32), n_calib=200)
        q = io_quant(model)
        scale, zp = q["input_scale"], q["input_zero_point"]
        source = "default crnn architecture, random weights (no trained model in the tree yet)"
    m0, shift = quantize_multiplier(2.0 ** -cfg.frac_bits / scale)
    wins = _windows(feats[len(feats) // 2:], w, hop, int(cfg.log_floor * 2**cfg.frac_bits))[:max_windows]
    xq = quantize(wins, m0, 31 - shift, zp)  # C quantiser (ser_fe_quantize)
    a_tflm = tflm.run_tflm(model, xq)
    a_lite = tflm.run_litert(model, xq)
    cmp = tflm.compare_int8(a_tflm, a_lite)
    arena = tflm.min_arena_size(model)
    return {"model": source, "model_bytes": len(model), "window_frames": w, "n_features": cfg.n_features,
            "tflm_arena_bytes": arena["arena_bytes"], "tflm_recorded_arena_bytes": arena["recorded_arena_bytes"],
            "compare": cmp,
            # matches: same top-1 on every window and at most 1 LSB apart (see edge_runtime/interpreter.py)
            "tflm_matches_litert": bool(cmp["top1_agreement"] == 1.0 and cmp["max_abs_lsb"] <= 1),
            "tflm_bit_exact_litert": bool(cmp["bit_exact_fraction"] == 1.0)}


def aot_section(clips: list[np.ndarray], repeats: int, max_qemu_windows: int = 240) -> dict:
    """The shipped model compiled ahead of time to C (ser-edge export: ser_nn kernels + ser_net.c).

    Windows: every window of the second half of the speech clips (C front end + C quantiser, the
    device path) plus 16 full-range random windows. Host: the C (gcc -O3, portable path, through
    ctypes) vs the tflite-micro interpreter on every window (bit-exact?) and its speed vs LiteRT
    (default kernels, 1 thread) and tflite-micro, same windows, interleaved medians. Cortex-M4:
    the same kernels built for -mcpu=cortex-m4 -O2 (SMLAD path) in QEMU mps2-an386 with -icount:
    scores of up to ``max_qemu_windows`` windows vs tflite-micro and guest instructions per
    inference (and per operator)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edge_runtime.model_metadata import read_metadata
    from firmware_bridge.cbuild import CFrontend, quantize
    from firmware_bridge.export import DEFAULT_MODEL, quantize_multiplier
    from firmware_bridge.nn_host import CModel
    from firmware_bridge.nn_m4 import run_m4, tools_available
    from edge_runtime import interpreter as tflm  # run_tflm / run_litert / compare_int8 / min_arena_size

    data = DEFAULT_MODEL.read_bytes()
    md = read_metadata(data)
    cfg = md.frontend_config()
    fe = CFrontend(cfg)
    feats = [fe.compute(x) for x in clips[len(clips) // 2:]]
    m0, shift = quantize_multiplier(2.0 ** -cfg.frac_bits / md.input_scale)
    wins = quantize(_windows(feats, md.window_frames, md.hop_frames, int(cfg.log_floor * 2**cfg.frac_bits)),
                    m0, 31 - shift, md.input_zero_point)
    rnd = np.random.default_rng(7).integers(-128, 128, (16,) + wins.shape[1:]).astype(np.int8)
    wins = np.concatenate([wins, rnd])
    cm = CModel(data, str(DEFAULT_MODEL))
    got = cm.invoke_many(wins)
    want = tflm.run_tflm(data, wins)
    exact_rows = np.all(got == want, axis=1)
    sub = wins[: min(len(wins), 64)]
    med = interleaved_medians({
        "c": lambda: cm.invoke_many(sub),
        "litert": lambda: tflm.run_litert(data, sub),
        "tflm": lambda: tflm.run_tflm(data, sub),
    }, repeats)
    out = {
        "aot_model": str(DEFAULT_MODEL.relative_to(ROOT)),
        "aot_c_bit_exact": bool(exact_rows.all()),
        "aot_windows_compared": int(len(wins)),
        "aot_windows_mismatched": int((~exact_rows).sum()),
        "aot_arena_bytes": int(cm.arena_bytes),
        "aot_host_us_per_window": round(1e6 * med["c"] / len(sub), 1),
        "aot_litert_us_per_window": round(1e6 * med["litert"] / len(sub), 1),
        "aot_tflm_us_per_window": round(1e6 * med["tflm"] / len(sub), 1),
        "aot_speedup_vs_litert": round(med["litert"] / med["c"], 2),
        "aot_speedup_vs_tflm": round(med["tflm"] / med["c"], 2),
        "aot_speed_windows": len(sub),
        "aot_m4_toolchain": tools_available(),
    }
    if tools_available():
        q = wins[:max_qemu_windows]
        r = run_m4(data, q, str(DEFAULT_MODEL), opt="-O2")
        rp = run_m4(data, q[:1], str(DEFAULT_MODEL), opt="-O2", profile=True)
        ros = run_m4(data, q[:1], str(DEFAULT_MODEL), opt="-Os")
        n = r.instructions_per_inference
        out.update({
            "aot_m4_bit_exact_qemu": bool(np.array_equal(r.scores, want[: len(q)])),
            "aot_m4_windows_compared": int(len(q)),
            "aot_m4_instructions_per_inference": int(np.median(n)),
            "aot_m4_instructions_min_max": [int(min(n)), int(max(n))],
            "aot_m4_instructions_per_inference_Os": int(ros.instructions_per_inference[0]),
            "aot_m4_instructions_per_op": rp.per_op,
            "aot_m4_goal_instructions": 4_500_000,
            "aot_m4_tflm_cmsis_nn_instructions": 4_570_000,  # issue #12 probe, same model and board
            "aot_m4_tflm_reference_instructions": 17_500_000,
            "aot_m4_flags": ["-mcpu=cortex-m4", "-mthumb", "-O2"],
            **aot_m4_sizes(data),
        })
    return out


def aot_m4_sizes(data: bytes) -> dict:
    """Cortex-M4 -O2 section sizes of the kernels (ser_nn.c) and of the generated model
    (ser_net.c: weights, parameters, LUT as flash; the static arena as .bss)."""
    from firmware_bridge.cbuild import cross_compile_m4
    from firmware_bridge.nn_export import lower, write_net
    from firmware_bridge.tflite_graph import read_graph

    tmp = Path(tempfile.mkdtemp(prefix="ser_aot_sizes_"))
    write_net(lower(read_graph(data)), tmp, "ser")
    r = cross_compile_m4(tmp, sources=("ser_nn.c", tmp / "ser_net.c"), include_dirs=(tmp,), opt="-O2")
    return {"aot_m4_kernels_text_bytes": r["ser_nn.c"]["text"],
            "aot_m4_net_flash_bytes": r["ser_net.c"]["text"] + r["ser_net.c"]["data"],
            "aot_m4_net_bss_bytes": r["ser_net.c"]["bss"]}


def print_aot(a: dict) -> None:
    rows = [("AOT C == tflite-micro (host)", f"{a['aot_c_bit_exact']} ({a['aot_windows_compared']} windows)"),
            ("arena (static plan)", f"{a['aot_arena_bytes']} B"),
            ("host us/window: C / LiteRT / TFLM", f"{a['aot_host_us_per_window']} / {a['aot_litert_us_per_window']} / "
                                                   f"{a['aot_tflm_us_per_window']}")]
    if "aot_m4_instructions_per_inference" in a:
        rows += [("M4 (QEMU) == tflite-micro", f"{a['aot_m4_bit_exact_qemu']} ({a['aot_m4_windows_compared']} windows)"),
                 ("M4 instructions / inference -O2 (-Os)", f"{a['aot_m4_instructions_per_inference']:,} "
                                                           f"({a['aot_m4_instructions_per_inference_Os']:,})")]
        rows += [(f"  {k}", f"{v:,}") for k, v in a["aot_m4_instructions_per_op"].items()]
        rows += [("M4 -O2 kernels .text / model flash / arena .bss",
                  f"{a['aot_m4_kernels_text_bytes']} / {a['aot_m4_net_flash_bytes']} / {a['aot_m4_net_bss_bytes']} B")]
    print()
    print(markdown_table(rows, ("ahead-of-time C model", "value")))
# ------------------------------------------------------------------ firmware image in QEMU (measured)
# The emulated UART moves ~18 KB/s whatever the baud rate, so a device busy draining a queued second of
# AUDIO is silent for seconds: the host's liveness period must allow for it.
QEMU_LIVENESS_S = 15.0

def _generated_clips(n: int) -> list[tuple[str, np.ndarray]]:
    """Deterministic test audio of 3-6 s (speech-like with pauses, vowels, noise, quiet speech)."""
    from edge_runtime.test_signals import harmonic_vowel, quiet_speechlike, speech_with_pauses, white_noise

    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        sec = float(rng.uniform(3.0, 6.0))
        kind = i % 4
        x = (speech_with_pauses(sec, seed=i) if kind == 0 else
             harmonic_vowel(sec, f0=float(rng.uniform(90, 260)), level_dbfs=float(rng.uniform(-30, -6)), seed=i)
             if kind == 1 else white_noise(sec, level_dbfs=float(rng.uniform(-40, -15)), seed=i) if kind == 2
             else quiet_speechlike(sec, peak_dbfs=float(rng.uniform(-45, -20)), seed=i))
        out.append((("neutral", "happy", "sad", "angry")[i % 4], x))
    return out


def _reference_messages(ref, chunks, session: int, features: bool) -> list:
    """The RESULT messages the Python device (``SerialDevice`` over the same engine) sends for a
    session fed ``chunks`` and then STOP: windows, utterance records, the flushed tail, the summary."""
    from edge_runtime.serial_device import result_to_message

    ref.reset()
    out = []
    for c in [*chunks, None]:
        wins = ref.finish() if c is None else ref.push_features(c) if features else ref.push_audio(c)
        out += [result_to_message(r, session) for r in wins]
        out += [result_to_message(u, session) for u in ref.take_utterances()]
    return out


def qemu_windows(clips: list[np.ndarray], min_windows: int, audio_clips: int) -> dict:
    """Stream clips to the firmware in QEMU (AUDIO for the first ``audio_clips``, then FEATURES
    until ``min_windows`` FEATURES windows), STOP each session, and compare every RESULT the
    firmware sends (windows, utterance and summary records) with what the Python device sends for
    the same session on the tflite-micro interpreter (``StreamingClassifier``, ``tflm`` backend):
    scores, label, flags, times must all be equal."""
    from tqdm import tqdm

    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.frontend import compute_features
    from edge_runtime.protocol import Audio, Features, Mode, MsgType, ResultFlags, Start, Stop
    from firmware_bridge.image import build_image
    from firmware_bridge.qemu import QemuDevice, RawHost, firmware_result

    def fields(m):
        # the firmware's view: exact window ties stay the lower index there (docs/window_policy.md)
        m = firmware_result(m)
        return (m.window_index, m.session, m.label_index, m.flags, m.t_start_ms, m.t_end_ms, tuple(m.scores))

    ref = StreamingClassifier.from_model(None, backend="tflm")
    res = {"features_windows": 0, "audio_windows": 0, "records": 0, "mismatched": 0, "missing": 0, "clips": 0}
    todo = [(Mode.AUDIO, x) for x in clips[:audio_clips]] + [(Mode.FEATURES, x) for x in clips[audio_clips:]]
    with QemuDevice(build_image().elf, start_paused=True) as q, RawHost(q.port) as host:
        q.resume()
        host.recv(1, timeout=10.0)  # boot INFO
        for session, (mode, x) in enumerate(tqdm(todo, desc="firmware in QEMU", unit="clip", file=sys.stderr), 1):
            if mode == Mode.FEATURES and res["features_windows"] >= min_windows:
                break
            if mode == Mode.AUDIO:
                chunks = [x[i:i + 510] for i in range(0, x.size, 510)]  # 1 KB payloads (max_payload)
                n_bytes = 2 * x.size
            else:
                fr = ref.model.quantize(compute_features(x, ref.cfg))
                chunks = [fr[i:i + 20] for i in range(0, len(fr), 20)]
                n_bytes = fr.size
            want = _reference_messages(ref, chunks, session, mode == Mode.FEATURES)
            host.send(Start(mode, session))
            host.recv(1, types={MsgType.ACK}, timeout=10.0)
            pos = 0
            for c in chunks:
                host.send(Audio(pos, c) if mode == Mode.AUDIO else Features(pos, c))
                pos += len(c)
            seq = host.send(Stop())
            got = []
            for m in host.recv(len(want) + 1, timeout=20.0 + 5 * n_bytes / 18000, types={MsgType.RESULT, MsgType.ACK}):
                if m.TYPE == MsgType.ACK and m.ref_seq == seq:
                    break
                if m.TYPE == MsgType.RESULT:
                    got.append(m)
            res["clips"] += 1
            n_win = sum(not m.flags & ResultFlags.UTTERANCE for m in want)
            res["audio_windows" if mode == Mode.AUDIO else "features_windows"] += n_win
            res["records"] += len(want) - n_win
            res["missing"] += max(0, len(want) - len(got))
            res["mismatched"] += sum(fields(a) != fields(b) for a, b in zip(got, want)) + abs(len(got) - len(want))
    res["windows"] = res["features_windows"] + res["audio_windows"]
    res["bit_exact"] = res["windows"] > 0 and res["mismatched"] == 0 and res["missing"] == 0
    return res


def qemu_validate(n_clips: int) -> dict:
    """``ser-edge validate`` (the CLI, as a user runs it) against the firmware in QEMU over its pty,
    FEATURES mode, on generated clips in label folders; the host reference is the tflite-micro
    interpreter (``SER_EDGE_BACKEND=tflm``)."""
    import json
    import os
    import subprocess

    import soundfile as sf

    from firmware_bridge.image import build_image
    from firmware_bridge.qemu import QemuDevice

    tmp = Path(tempfile.mkdtemp(prefix="ser_fw_validate_"))
    for i, (label, x) in enumerate(_generated_clips(n_clips)):
        (tmp / "corpus" / label).mkdir(parents=True, exist_ok=True)
        sf.write(str(tmp / "corpus" / label / f"clip{i:03d}.wav"), x, 16000, subtype="PCM_16")
    env = {**os.environ, "SER_EDGE_BACKEND": "tflm", "PYTHONPATH": str(ROOT)}
    with QemuDevice(build_image().elf) as q:
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "validate", "--port", q.port, "--mode", "features",
                            "--timeout", "20", "--liveness", str(QEMU_LIVENESS_S),
                            "--model", str(ROOT / "edge_runtime" / "models" / "default.tflite"), "--out", str(tmp / "report.json"), str(tmp / "corpus")],
                           capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=1800)
    if not (tmp / "report.json").exists():
        raise RuntimeError(f"ser-edge validate failed: {r.stderr[-800:]}")
    rep = json.loads((tmp / "report.json").read_text())
    return {"exit_code": r.returncode, "files": rep["files"], "windows": rep["windows"], "missing": rep["missing"],
            "agreement": rep["agreement"], "scores_identical": rep["scores_identical"],
            # each clip's summary record vs the host's summary of the frames it sent (validate used to
            # stop reading before the summary of 18 of these 24 clips: tests/test_firmware_validate_summary.py)
            "summaries_missing": rep["summaries_missing"], "summary_agreement": rep["summary_agreement"],
            "summaries_no_emotion": rep["summaries_no_emotion"],
            "device_latency_ms": rep["device_latency_ms"],
            # link recoveries during the run: a session restarted mid-clip is classified from other
            # frames than the host's (the 0.978 of b75c445 came with 5 restarts on a stale INFO)
            # errors_rx/stale_errors: NO_SESSION answers to SYNCs that went out before a START or after
            # a STOP (6 recoveries per 8 clips until the host sent SYNCs only inside a session)
            "link": {k: rep["link"].get(k) for k in ("recoveries", "session_restarts", "stale_infos",
                                                     "errors_rx", "stale_errors", "resend_requests",
                                                     "gap_results")}}


def _validate_keys(val: dict) -> dict:
    """The top-level keys of a :func:`qemu_validate` run (README markers)."""
    return {"qemu_validate_agreement": val["agreement"],
            "qemu_validate_scores_identical": val["scores_identical"],
            "qemu_validate_summary_agreement": val["summary_agreement"],
            "qemu_validate_summaries_missing": val["summaries_missing"]}


def main_validate_only(n_clips: int = 24) -> None:
    """Re-run only ``ser-edge validate`` against the firmware in QEMU (~30 s), keeping the rest of
    bench/results/firmware.json."""
    import json

    path = ROOT / "bench" / "results" / "firmware.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    val = qemu_validate(n_clips)
    old.update(_validate_keys(val))
    old.setdefault("qemu", {})["validate"] = val
    old["machine"] = machine()
    out = write_result("firmware", old)
    print(markdown_table([(k, str(v)) for k, v in val.items() if k not in ("link", "device_latency_ms")]
                         + [(f"link.{k}", str(v)) for k, v in val["link"].items()],
                         ("ser-edge validate vs firmware in QEMU", "value")))
    print(f"\nwrote {out}")


def _model_with_frontend_version(version: int, out_dir: Path) -> tuple[Path, object]:
    """The shipped model with its front end switched to ``algorithm_version=version`` (same frame,
    hop, mels and output; the version's own defaults for block_bits and normalisation). The weights
    are unchanged, so only the front-end figures of its image mean anything."""
    import dataclasses

    from edge_runtime.frontend import FrontendConfig
    from edge_runtime.model_metadata import read_metadata_json
    from model_build.embed_metadata import embed

    data = (ROOT / "edge_runtime" / "models" / "default.tflite").read_bytes()
    md = read_metadata_json(data)
    d = dataclasses.asdict(FrontendConfig.from_dict(md["frontend"]))
    for k in ("algorithm_version", "block_bits", "norm", "norm_shift"):
        d.pop(k)
    cfg = FrontendConfig.for_version(version, **d)
    path = out_dir / f"shipped_frontend_v{version}.tflite"
    path.write_bytes(embed(data, {**md, "frontend": cfg.to_dict(), "frontend_hash": cfg.hash}))
    return path, cfg


def qemu_frontend_versions(versions: tuple[int, ...] = (1, 2)) -> dict:
    """Front-end instructions per frame on the M4 (QEMU self-test, ``-icount shift=0``) for each
    front-end version, on the shipped model's frame/mel settings; the self-test's FNV hash of every
    feature of its 300 frames must equal numpy's (``m4_frontend_bit_exact_v<N>``)."""
    from edge_runtime.frontend import compute_features
    from firmware_bridge.image import run_selftest
    from tests.test_firmware_image import _fnv, _selftest_signal

    out: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="ser_fw_fe_versions_"))
    for v in versions:
        model, cfg = _model_with_frontend_version(v, tmp)
        st = run_selftest(model)
        t = st["ticks"]
        x = _selftest_signal(t["frames"] + cfg.frame_length // cfg.hop_length - 1, cfg.hop_length)
        out[f"m4_instructions_per_frame_v{v}"] = int(round(st["fe_instructions_per_frame"]))
        out[f"m4_frontend_bit_exact_v{v}"] = t["fe_hash"] == _fnv(compute_features(x, cfg)[: t["frames"]])
    out["m4_frontend_versions_method"] = (
        "mps2/selftest.c on the shipped model with its front end set to each algorithm_version "
        "(FrontendConfig.for_version defaults), -O2, 300 frames of the self-test signal; "
        "bit-exact = FNV-1a of every feature equals numpy's")
    return out


def qemu_section(speech: list[np.ndarray], min_windows: int = 200) -> dict:
    """Everything measured on the firmware image: sizes from the ELF (production build, no
    semihosting), instruction counts from the self-test image under ``-icount shift=0``, bit-exact
    windows and ``ser-edge validate`` through QEMU's pty."""
    from firmware_bridge.image import build_image, run_selftest

    img = build_image(semihosting=False)
    st = run_selftest()
    win = qemu_windows(speech, min_windows, audio_clips=6)
    val = qemu_validate(24)
    ipt = st["instructions_per_tick"]
    from edge_runtime.model_metadata import read_metadata

    md = read_metadata(ROOT / "edge_runtime" / "models" / "default.tflite")
    return {
        **qemu_frontend_versions(),
        "m4_frontend_algorithm_version": md.frontend_config().algorithm_version,
        "qemu_bit_exact": win["bit_exact"],
        "qemu_windows_compared": win["windows"],
        **_validate_keys(val),
        **_selftest_instructions(st, md),
        "m4_image_flash_bytes": img.flash_bytes,
        "m4_image_ram_bytes": img.ram_bytes,
        "m4_image_sections": img.sections,
        "m4_arena_bytes": st["arena_bytes"],
        "m4_selftest_stack_used_bytes": st["stack_used_bytes"],
        "m4_engine": img.engine,
        "m4_opt": img.opt,
        "qemu": {"windows": win, "validate": val, "selftest_ticks": st["ticks"],
                 "instructions_per_tick": ipt,
                 "method": "qemu-system-arm -M mps2-an386 -icount shift=0: 1 guest instruction = 1 ns of "
                           "virtual time; SysTick at 25 MHz; ticks -> instructions with a calibration loop "
                           "of known length in the same image"},
    }


def print_qemu(q: dict) -> None:
    print(markdown_table([
        ("firmware scores == tflite-micro on every window (qemu_bit_exact)",
         f"{q['qemu_bit_exact']} ({q['qemu_windows_compared']} windows)"),
        ("ser-edge validate vs firmware, agreement", f"{q['qemu_validate_agreement']}"),
        ("ser-edge validate vs firmware, summary records agreeing (missing)",
         f"{q.get('qemu_validate_summary_agreement')} ({q.get('qemu_validate_summaries_missing')})"),
        ("instructions per inference (M4, measured)", f"{q['m4_instructions_per_inference']:,}"),
        ("instructions per front-end frame (M4, measured, shipped model)", f"{q['m4_instructions_per_frame']:,}"),
        *[(f"instructions per front-end frame, v{v} (M4, bit-exact {q[f'm4_frontend_bit_exact_v{v}']})",
           f"{q[f'm4_instructions_per_frame_v{v}']:,}") for v in (1, 2) if f"m4_instructions_per_frame_v{v}" in q],
        ("image flash / RAM", f"{q['m4_image_flash_bytes']:,} / {q['m4_image_ram_bytes']:,} B"),
        ("model arena", f"{q['m4_arena_bytes']:,} B"),
    ], ("firmware in QEMU", "value")))


def main_qemu_only(n_clips: int) -> None:
    """Re-measure only the QEMU keys, keeping the rest of bench/results/firmware.json."""
    import json

    from bench.frontend import load_speech

    path = ROOT / "bench" / "results" / "firmware.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    q = qemu_section([x for _, x in load_speech(n_clips)])
    old.update(q)
    old["machine"] = machine()
    out = write_result("firmware", old)
    print_qemu(q)
    print(f"\nwrote {out}")


def _selftest_instructions(st: dict, md) -> dict:
    """The M4 instruction counts of a firmware self-test (``run_selftest``) for the model ``md``,
    and what they add up to per second of audio."""
    fps = md.frontend_config().sample_rate / md.frontend_config().hop_length
    return {
        "m4_instructions_per_inference": int(round(st["nn_instructions_per_inference"])),
        "m4_instructions_per_frame": int(round(st["fe_instructions_per_frame"])),
        "m4_quantize_instructions_per_frame": int(round(st["quantize_instructions_per_frame"])),
        "m4_instructions_per_second_of_audio": int(round(
            fps * (st["fe_instructions_per_frame"] + st["quantize_instructions_per_frame"])
            + st["nn_instructions_per_inference"] * fps / md.hop_frames)),
    }


def selftest_section() -> dict:
    """Only the self-test figures of the firmware image (instruction counts; no streamed windows,
    no validate run): the keys of :func:`qemu_section` that come from ``run_selftest``."""
    from edge_runtime.model_metadata import read_metadata
    from firmware_bridge.image import build_image, run_selftest

    img = build_image(semihosting=False)
    st = run_selftest()
    md = read_metadata(ROOT / "edge_runtime" / "models" / "default.tflite")
    return {
        **qemu_frontend_versions(),
        "m4_image_flash_bytes": img.flash_bytes,
        "m4_image_ram_bytes": img.ram_bytes,
        "m4_image_sections": img.sections,
        "m4_frontend_algorithm_version": md.frontend_config().algorithm_version,
        **_selftest_instructions(st, md),
        "m4_selftest_stack_used_bytes": st["stack_used_bytes"],
    }


def main_selftest_only() -> None:
    """Re-measure only the self-test keys, keeping the rest of bench/results/firmware.json."""
    import json

    path = ROOT / "bench" / "results" / "firmware.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    q = selftest_section()
    old.update(q)
    old["machine"] = machine()
    out = write_result("firmware", old)
    print(markdown_table([(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
                          for k, v in q.items() if k not in ("m4_frontend_versions_method", "m4_image_sections")],
                         ("firmware self-test in QEMU", "value")))
    print(f"\nwrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-tflm", action="store_true")
    ap.add_argument("--no-aot", action="store_true", help="skip the ahead-of-time C model section")
    ap.add_argument("--only-aot", action="store_true",
                    help="run only the ahead-of-time C model section and update its keys in firmware.json")
    ap.add_argument("--only-tflm", action="store_true",
                    help="run only the TFLite Micro vs LiteRT section (the shipped model) and update its keys "
                         "in firmware.json")
    ap.add_argument("--only-frontend", action="store_true",
                    help="run only the C front-end sections (bit-exactness, speed, M4 size/estimate) and "
                         "update their keys in firmware.json")
    ap.add_argument("--no-qemu", action="store_true", help="skip the firmware image in QEMU")
    ap.add_argument("--qemu-only", action="store_true",
                    help="only the QEMU section; other keys are kept from bench/results/firmware.json")
    ap.add_argument("--validate-only", action="store_true",
                    help="only `ser-edge validate` against the firmware in QEMU (24 generated clips, ~30 s); "
                         "other keys are kept from bench/results/firmware.json")
    ap.add_argument("--selftest-only", action="store_true",
                    help="only the QEMU self-test instruction counts (shipped model, front end v1 and v2); "
                         "other keys are kept from bench/results/firmware.json")
    args = ap.parse_args()
    if args.selftest_only:
        main_selftest_only()
        return
    if args.validate_only:
        main_validate_only()
        return
    if args.qemu_only:
        main_qemu_only(args.clips)
        return

    from bench.frontend import load_speech
    from edge_runtime.frontend import FrontendConfig

    speech = load_speech(args.clips)
    clips = [x for _, x in speech]
    if args.only_tflm:  # a new shipped model: its own section only, the front-end timings stay
        import json

        prev = ROOT / "bench" / "results" / "firmware.json"
        result = json.loads(prev.read_text()) if prev.exists() else {}
        tfl = tflm_section(clips)
        result.update(tflm=tfl, tflm_arena_bytes=tfl["tflm_arena_bytes"], tflm_matches_litert=tfl["tflm_matches_litert"])
        print(markdown_table([(k, str(v)) for k, v in tfl.items() if k != "compare"] +
                             [(f"compare.{k}", str(v)) for k, v in tfl["compare"].items()],
                             ("TFLite Micro vs LiteRT", "value")))
        print(f"\nwrote {write_result('firmware', result)}")
        return
    if args.only_aot:
        import json

        prev = ROOT / "bench" / "results" / "firmware.json"
        result = json.loads(prev.read_text()) if prev.exists() else {}
        aot = aot_section(clips, args.repeats)
        result.update(aot)
        print_aot(aot)
        print(f"\nwrote {write_result('firmware', result)}")
        return
    synth = synthetic_signals()
    print(f"{len(clips)} speech clips ({sum(x.size for x in clips) / 16000:.1f} s) + {len(synth)} synthetic",
          file=sys.stderr)

    # front end v2 (the default) and v1 (the shipped model's), plus a small v2 configuration
    cfgs = [FrontendConfig(), FrontendConfig(output="logmel"),
            FrontendConfig(frame_length=256, hop_length=128, n_mels=24),
            FrontendConfig(algorithm_version=1), FrontendConfig(algorithm_version=1, output="logmel")]
    exact = check_bit_exact(clips + list(synth.values()), cfgs)
    sp = speed(clips, args.repeats)
    cfg = FrontendConfig()
    ops = op_counts(cfg)
    sizes = m4_sizes(cfg)
    only_fe = args.only_frontend
    tfl = None if (args.no_tflm or only_fe) else tflm_section(clips)
    aot = None if (args.no_aot or only_fe) else aot_section(clips, args.repeats)
    qemu = {} if (args.no_qemu or only_fe) else qemu_section(clips)

    from firmware_bridge.cbuild import load_library

    lib = load_library()
    result = {
        "c_bit_exact": exact["c_bit_exact"],
        "clips_tested": len(clips) + len(synth),
        "speech_clips": len(clips),
        "synthetic_signals": sorted(synth),
        "configs_tested": [c.hash for c in cfgs],
        "frames_compared": exact["frames"],
        "mismatched_frames": exact["mismatched_frames"],
        "streamed_clips": exact["streamed_clips"],
        "rtf_c": round(sp["rtf"]["c"], 1),
        "rtf_numpy": round(sp["rtf"]["numpy_batch"], 1),
        "rtf_librosa": round(sp["rtf"]["librosa"], 1),
        "rtf_kaldi_native_fbank": round(sp["rtf"]["kaldi_native_fbank"], 1),
        "ratio_c_vs_librosa": round(sp["rtf"]["c"] / sp["rtf"]["librosa"], 2),
        "ratio_c_vs_kaldi": round(sp["rtf"]["c"] / sp["rtf"]["kaldi_native_fbank"], 2),
        # the same rounds by wall-clock medians (what a busy machine does to them)
        "ratio_c_vs_librosa_wall_median": round(sp["rtf_wall_median"]["c"] / sp["rtf_wall_median"]["librosa"], 2),
        "ratio_numpy_vs_librosa": round(sp["rtf"]["numpy_batch"] / sp["rtf"]["librosa"], 3),
        "speed_timing": "rtf_* / ratio_*: median thread CPU time of the interleaved rounds, one core; "
                        "*_wall_median: wall-clock medians of the same rounds",
        "c_us_per_frame_host": round(sp["c_us_per_frame"], 2),
        "speech_seconds": round(sp["seconds_audio"], 1),
        "m4_toolchain": sizes is not None,
        "m4_text_bytes": sizes["ser_frontend.c"]["text"] if sizes else None,
        "m4_protocol_text_bytes": sizes["ser_protocol.c"]["text"] if sizes else None,
        "m4_tables_bytes": sizes["ser_model.c"]["text"] + sizes["ser_model.c"]["data"] if sizes else None,
        "m4_bss_bytes": sizes["state.c"]["bss"] if sizes else None,
        "m4_frontend_bss_data_bytes": (sizes["ser_frontend.c"]["bss"] + sizes["ser_frontend.c"]["data"]) if sizes else None,
        "m4_undefined_symbols": sizes["undefined"] if sizes else None,
        "m4_flags": sizes["flags"] if sizes else None,
        "host_state_bytes_max_config": int(lib.ser_fe_state_size()),
        "m4_cycles_per_frame_est": ops["cycles_per_frame"],
        "m4_cycles_per_second_est": ops["cycles_per_second"],
        "m4_cpu_percent_at_80mhz_est": ops["cpu_percent_at_80mhz"],
        "op_counts": ops,
        "tflm_arena_bytes": tfl["tflm_arena_bytes"] if tfl else None,
        "tflm_matches_litert": tfl["tflm_matches_litert"] if tfl else None,
        "tflm": tfl,
        **qemu,
        "repeats": args.repeats,
        "frontend_hash": cfg.hash,
        "frontend_algorithm_version": cfg.algorithm_version,
        "machine": machine(),
        **(aot or {}),
    }
    if only_fe:  # keep the other sections' keys from the previous run
        import json

        prev = ROOT / "bench" / "results" / "firmware.json"
        old = json.loads(prev.read_text()) if prev.exists() else {}
        for k in ("tflm_arena_bytes", "tflm_matches_litert", "tflm"):
            result[k] = old.get(k)
        result = {**old, **result}
    path = write_result("firmware", result)
    print(markdown_table([
        ("C bit-exact vs numpy", f"{result['c_bit_exact']} ({exact['frames']} frames, {result['clips_tested']} clips, {len(cfgs)} configs, v1 + v2)"),
        ("RTF C front end (1 core)", f"{result['rtf_c']}x"),
        ("RTF numpy / librosa / kaldi-native-fbank", f"{result['rtf_numpy']}x / {result['rtf_librosa']}x / {result['rtf_kaldi_native_fbank']}x"),
        ("M4 .text front end / protocol (-Os)", f"{result['m4_text_bytes']} / {result['m4_protocol_text_bytes']} B"),
        ("M4 tables (const) / state .bss", f"{result['m4_tables_bytes']} / {result['m4_bss_bytes']} B"),
        ("M4 cycles per s of audio (est.)", f"{result['m4_cycles_per_second_est']:,} ({result['m4_cpu_percent_at_80mhz_est']}% of 80 MHz)"),
        ("TFLM arena", f"{result['tflm_arena_bytes']} B" if tfl else "not run now"),
        ("TFLM matches LiteRT", f"{result['tflm_matches_litert']} ({tfl['compare']})" if tfl else "not run now"),
    ], ("metric", "value")))
    print()
    print(markdown_table([(k, r["iterations"], f"{r['cycles']:.0f}") for k, r in ops["per_frame"].items()],
                         ("M4 stage (per frame)", "iterations", "est. cycles")))
    if aot:
        print_aot(aot)
    if qemu:
        print_qemu(qemu)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
