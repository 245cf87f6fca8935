"""``ser-edge frontend``: run the fixed-point front end on a file or a built-in signal."""
from __future__ import annotations

import argparse
import json
import time

from .cli_types import existing_file, output_file


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("frontend", help="compute fixed-point features of a WAV/FLAC file or a built-in signal")
    p.add_argument("audio", nargs="?", type=existing_file, help="WAV (or FLAC with soundfile), resampled to 16 kHz; default: a built-in vowel")
    p.add_argument("--output", choices=["mfcc", "logmel"], default="mfcc")
    p.add_argument("--save", type=output_file, help="write the int32 features to this .npy file")
    p.add_argument("--plot", type=output_file, help="write a PNG of fixed-point vs float-twin features (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from .frontend import FrontendConfig, compute_features, compute_features_float

    cfg = FrontendConfig(output=args.output)
    if args.audio:
        from .audio_sources import read_audio, resample

        pcm, sr = read_audio(args.audio)  # AudioInputError -> one line, exit 2 (edge_runtime.cli)
        if sr != cfg.sample_rate:
            pcm = resample(pcm, sr, cfg.sample_rate)
        name = args.audio
    else:
        from .test_signals import harmonic_vowel

        pcm, name = harmonic_vowel(2.0), "built-in harmonic vowel (2 s)"
    t0 = time.perf_counter()
    feats = compute_features(pcm, cfg)
    dt = time.perf_counter() - t0
    twin = compute_features_float(pcm, cfg)
    err = feats - twin
    snr = 10 * np.log10(np.sum(twin**2) / max(np.sum(err**2), 1e-30))
    summary = {
        "input": name,
        "samples": int(pcm.size),
        "frames": int(feats.shape[0]),
        "features_per_frame": int(feats.shape[1]) if feats.ndim == 2 else 0,
        "dtype": str(feats.dtype),
        "scale": f"value = q / 2^{cfg.frac_bits} (log2 units)",
        "frontend_hash": cfg.hash,
        "snr_vs_float_twin_db": round(float(snr), 2),
        "max_abs_error_log2": round(float(np.max(np.abs(err)) / 2**cfg.frac_bits), 6) if feats.size else 0.0,
        "realtime_factor": round(pcm.size / cfg.sample_rate / max(dt, 1e-9), 1),
    }
    if args.save:
        np.save(args.save, feats)
        summary["saved"] = args.save
    if args.plot:
        _plot(feats / 2**cfg.frac_bits, twin / 2**cfg.frac_bits, cfg, args.plot)
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>24}: {v}")
        if feats.size:
            print("first frame:", " ".join(f"{v / 2**cfg.frac_bits:.3f}" for v in feats[0]))
    return 0


def _plot(fixed, twin, cfg, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.5), constrained_layout=True)
    for a, data, title in ((ax[0], fixed, "fixed point"), (ax[1], twin, "float64 twin")):
        im = a.imshow(data.T, aspect="auto", origin="lower", cmap="magma")
        a.set_title(f"{title} ({cfg.output}, log2 units)")
        a.set_xlabel(f"frame ({cfg.hop_ms:.0f} ms hop)")
        fig.colorbar(im, ax=a)
    im = ax[2].imshow((fixed - twin).T, aspect="auto", origin="lower", cmap="coolwarm")
    ax[2].set_title("difference")
    fig.colorbar(im, ax=ax[2])
    fig.savefig(path, dpi=110)
    plt.close(fig)
