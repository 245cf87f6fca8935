"""Front-end benchmark: fixed-point vs float64 twin (SNR), vs librosa (correlation), and speed.

    python bench/frontend.py [--clips 120] [--repeats 7]

Writes bench/results/frontend.json (+ frontend.png) and prints a Markdown table. Speed is measured
on one core, the same audio for every implementation, interleaved repeats: ``rtf_*`` and
``ratio_*`` from the median CPU time of each implementation's rounds (robust on a shared machine,
= wall time on an idle one), ``*_wall_median`` from the wall-clock medians of the same rounds; the
load average is recorded with them (bench/common.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import DATA, interleaved_wall_and_cpu_medians, machine, markdown_table, peer_mfcc_runners, pin_one_core, write_result  # noqa: E402

pin_one_core()

import numpy as np  # noqa: E402


def load_speech(n_clips: int) -> list[tuple[str, np.ndarray]]:
    import soundfile as sf

    rav = sorted((DATA / "ravdess").glob("Actor_*/*.flac"))
    tess = sorted((DATA / "tess").glob("*/*.flac"))
    if not rav or not tess:
        raise SystemExit(f"speech corpora not found under {DATA} (set SER_EDGE_DATA)")
    rng = np.random.default_rng(0)
    half = n_clips // 2
    pick = [rav[i] for i in rng.choice(len(rav), half, replace=False)] + [tess[i] for i in rng.choice(len(tess), n_clips - half, replace=False)]
    out = []
    for p in pick:
        x, sr = sf.read(str(p), dtype="int16")
        assert sr == 16000 and x.ndim == 1, p
        out.append((str(p.relative_to(DATA)), x))
    return out


def snr_db(fixed: np.ndarray, twin: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(twin**2) / max(np.sum((fixed - twin) ** 2), 1e-300)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    import librosa

    from edge_runtime.frontend import FrontendConfig, StreamingFrontend, compute_features, compute_features_float, compute_features_many
    from edge_runtime.test_signals import dithered_silence, quiet_speechlike, tone_sweep, white_noise

    cfg = FrontendConfig()
    speech = load_speech(args.clips)
    print(f"{len(speech)} speech clips, {sum(x.size for _, x in speech) / 16000:.1f} s", file=sys.stderr)

    # --- accuracy: fixed vs float64 twin ---------------------------------------------------------
    synthetic = {
        "white_noise": white_noise(5.0, level_dbfs=-12),
        "tone_sweep": tone_sweep(5.0),
        "quiet_-40dBFS": quiet_speechlike(5.0, peak_dbfs=-40),
        "silence_dither": dithered_silence(5.0),
    }
    snr = {}
    for name, x in synthetic.items():
        snr[name] = snr_db(compute_features(x, cfg), compute_features_float(x, cfg))
    speech_snr = [snr_db(compute_features(x, cfg), compute_features_float(x, cfg)) for _, x in speech]
    snr["speech_min"] = float(np.min(speech_snr))
    snr["speech_median"] = float(np.median(speech_snr))
    logmel_cfg = FrontendConfig(output="logmel")
    snr["speech_logmel_min"] = float(np.min([snr_db(compute_features(x, logmel_cfg), compute_features_float(x, logmel_cfg)) for _, x in speech[:40]]))
    # version 1 (the shipped model's front end), for comparison: worst synthetic and speech
    v1 = FrontendConfig(algorithm_version=1)
    snr_v1 = {name: snr_db(compute_features(x, v1), compute_features_float(x, v1)) for name, x in synthetic.items()}
    snr_v1["speech_min"] = float(np.min([snr_db(compute_features(x, v1), compute_features_float(x, v1)) for _, x in speech[:40]]))
    # gain invariance on real speech: log-mel of x and of x at -20 dB (rounded to int16), median
    # |difference| per clip, v2 against v1. What v2 leaves is the int16 rounding of the quieter copy:
    # weak bands and near-silent stretches of the studio recordings fall to the quantisation noise.
    gain_diff, gain_diff_v1 = [], []
    v1_logmel = FrontendConfig(algorithm_version=1, output="logmel")
    for _, x in speech[::3]:
        y = np.round(x * 0.1).astype(np.int16)
        for cfg_, out in ((logmel_cfg, gain_diff), (v1_logmel, gain_diff_v1)):
            out.append(np.median(np.abs(compute_features(x, cfg_) - compute_features(y, cfg_))) / 2**16)

    # --- agreement with librosa (different conventions: correlation, not equality) ---------------
    lib_kw = dict(sr=cfg.sample_rate, n_fft=cfg.frame_length, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
                  n_mfcc=cfg.n_mfcc, fmin=cfg.fmin, fmax=cfg.fmax, center=False)
    corrs = []
    for _, x in speech:
        ours = compute_features(x, cfg).astype(np.float64)
        ref = librosa.feature.mfcc(y=x.astype(np.float32) / 32768, **lib_kw).T
        n = min(len(ours), len(ref))
        for c in range(cfg.n_mfcc):
            a, b = ours[:n, c], ref[:n, c]
            if a.std() > 0 and b.std() > 0:
                corrs.append(np.corrcoef(a, b)[0, 1])
    corr_librosa = float(np.mean(corrs))

    # --- speed: one core, same audio ---------------------------------------------------------------
    clips = [x for _, x in speech]
    seconds = sum(x.size for x in clips) / cfg.sample_rate
    fns = {
        "numpy_batch": lambda: compute_features_many(clips, cfg),
        "numpy_per_clip": lambda: [compute_features(x, cfg) for x in clips],
        **peer_mfcc_runners(cfg, clips),
    }
    med_wall, cpu_med = interleaved_wall_and_cpu_medians(fns, args.repeats)
    rtf = {k: seconds / v for k, v in cpu_med.items()}

    # --- streaming == batch ----------------------------------------------------------------------
    rng = np.random.default_rng(1)
    stream_ok = True
    for x in clips[:20]:
        sf_ = StreamingFrontend(cfg)
        cuts = np.sort(rng.integers(0, x.size, rng.integers(1, 30)))
        parts = [sf_.push(p) for p in np.split(x, cuts)]
        stream_ok &= bool(np.array_equal(np.concatenate(parts), compute_features(x, cfg)))

    result = {
        "snr_db_min": round(min(snr.values()), 2),
        "snr_db_quiet": round(snr["quiet_-40dBFS"], 2),
        "snr_db": {k: round(v, 2) for k, v in snr.items()},
        "snr_db_min_v1": round(min(snr_v1.values()), 2),
        "snr_db_v1": {k: round(v, 2) for k, v in snr_v1.items()},
        "gain_minus20db_median_abs_diff_log2": round(float(np.median(gain_diff)), 4),
        "gain_minus20db_median_abs_diff_log2_v1": round(float(np.median(gain_diff_v1)), 4),
        "corr_librosa": round(corr_librosa, 4),
        "rtf_numpy": round(rtf["numpy_batch"], 1),
        "rtf_numpy_per_clip": round(rtf["numpy_per_clip"], 1),
        "rtf_librosa": round(rtf["librosa"], 1),
        "rtf_kaldi_native_fbank": round(rtf["kaldi_native_fbank"], 1),
        "ratio_vs_librosa": round(rtf["numpy_batch"] / rtf["librosa"], 3),
        "ratio_vs_kaldi": round(rtf["numpy_batch"] / rtf["kaldi_native_fbank"], 3),
        # the same rounds by wall-clock medians (what a busy machine does to them)
        "ratio_vs_librosa_wall_median": round(med_wall["librosa"] / med_wall["numpy_batch"], 3),
        "ratio_vs_kaldi_wall_median": round(med_wall["kaldi_native_fbank"] / med_wall["numpy_batch"], 3),
        "timing": "rtf_* / ratio_*: median thread CPU time of the interleaved rounds, one core; "
                  "*_wall_median: wall-clock medians of the same rounds",
        "streaming_equals_batch": stream_ok,
        "speech_clips": len(speech),
        "speech_seconds": round(seconds, 1),
        "repeats": args.repeats,
        "frontend_hash": cfg.hash,
        "frontend_algorithm_version": cfg.algorithm_version,
        "frontend": cfg.to_dict(),
        "machine": machine(),
        "goals": {"snr_db_min": ">= 66", "rtf_numpy": ">= 0.5 x rtf_librosa and >= 1 x rtf_kaldi_native_fbank"},
    }
    path = write_result("frontend", result)
    _plot(snr, speech_snr, speech[0][1], cfg, path.with_suffix(".png"))
    rows = [(k, f"{v:.1f}") for k, v in snr.items()]
    print(markdown_table(rows, ("input", "SNR fixed vs float64 twin (dB)")))
    print()
    print(markdown_table([(k, f"{v:.0f}x") for k, v in rtf.items()], ("implementation (1 core)", "real-time factor")))
    print()
    print(f"corr_librosa = {corr_librosa:.4f}; streaming_equals_batch = {stream_ok}; wrote {path}")


def _plot(snr, speech_snr, clip, cfg, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_runtime.frontend import FrontendConfig, compute_features, compute_features_float

    lm = FrontendConfig(output="logmel")
    fixed, twin = compute_features(clip, lm) / 2**16, compute_features_float(clip, lm) / 2**16
    fig, ax = plt.subplots(1, 3, figsize=(15, 3.8), constrained_layout=True)
    ax[0].barh(list(snr), list(snr.values()), color="tab:blue")
    ax[0].axvline(66, color="r", ls="--", label="goal 66 dB")
    ax[0].set_xlabel("SNR fixed vs float64 twin (dB)")
    ax[0].set_title("worst-case SNR per test input")
    ax[0].legend()
    ax[1].hist(speech_snr, bins=30)
    ax[1].set_xlabel("SNR per speech clip (dB)")
    ax[1].set_ylabel("clips")
    ax[1].set_title(f"SNR over {len(speech_snr)} speech clips")
    im = ax[2].imshow(fixed.T, aspect="auto", origin="lower", cmap="magma")
    ax[2].set_title(f"fixed-point log-mel (max |err| {np.abs(fixed - twin).max():.1e} log2)")
    ax[2].set_xlabel(f"frame ({lm.hop_ms:.0f} ms hop)")
    ax[2].set_ylabel("mel band")
    fig.colorbar(im, ax=ax[2], label="log2 units")
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
