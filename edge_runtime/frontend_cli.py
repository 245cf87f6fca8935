"""``ser-edge frontend``: run the fixed-point front end on a file or a built-in signal."""
from __future__ import annotations

import argparse
import json
import time

from .cli_types import existing_file, output_file


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("frontend", help="compute fixed-point features of a WAV/FLAC file or a built-in signal")
    p.add_argument("audio", nargs="?", type=existing_file, help="WAV (or FLAC with soundfile), resampled to 16 kHz; default: a built-in vowel")
    p.add_argument("--output", choices=["mfcc", "logmel"], default=None,
                   help="front-end output (default: the shipped model's front end)")
    p.add_argument("--frontend-version", type=int, choices=[1, 2], default=None,
                   help="front-end algorithm_version (default: the shipped model's front end)")
    p.add_argument("--save", type=output_file, help="write the int32 features to this .npy file")
    p.add_argument("--plot", type=output_file, help="write a PNG of fixed-point vs float-twin features (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from .frontend import FrontendConfig, compute_features, compute_features_float

    from .classifier import shipped_frontend

    shipped = shipped_frontend()
    if args.output is None and args.frontend_version is None:  # default: the shipped model's front end
        cfg = shipped or FrontendConfig(output="logmel")
    else:
        kw = {} if args.frontend_version is None else {"algorithm_version": args.frontend_version}
        cfg = FrontendConfig(output=args.output or (shipped.output if shipped else "logmel"), **kw)
    if args.audio:
        from .audio_io import load_audio

        pcm = load_audio(args.audio, cfg.sample_rate)  # AudioInputError -> one line, exit 2 (edge_runtime.cli)
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
    """Fixed point | float64 twin | difference, in log2 units, frames on x.

    MFCC c0 (the frame energy) spans a far larger range than c1-c12, so it gets its own line plot
    above the c1-c12 images; otherwise one colour scale would turn c1-c12 into a flat band. Fixed
    point and twin share one colour scale; the difference is centred on zero (diverging colours).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    frames = np.arange(fixed.shape[0])
    hop = f"frame ({cfg.hop_ms:.0f} ms hop)"
    diff = fixed - twin
    mfcc = cfg.output == "mfcc"
    if mfcc:
        fig, ax = plt.subplots(2, 3, figsize=(14, 5.6), height_ratios=[1, 2.4], constrained_layout=True)
        top, img = ax[0], ax[1]
        for a, data, title in ((top[0], fixed, "fixed point"), (top[1], twin, "float64 twin")):
            a.plot(frames, data[:, 0], lw=1)
            a.set_title(f"{title}: c0 (frame energy)")
            a.set_ylabel("c0 (log2 units)")
        top[1].sharey(top[0])
        top[2].plot(frames, diff[:, 0], lw=1, color="tab:red")
        lim = max(float(np.abs(diff[:, 0]).max()), 1e-9)
        top[2].set_ylim(-1.1 * lim, 1.1 * lim)
        top[2].axhline(0, color="grey", lw=0.5)
        top[2].set_title("difference c0 (fixed - twin)")
        fixed, twin, diff, first, what = fixed[:, 1:], twin[:, 1:], diff[:, 1:], 1, "MFCC"
    else:
        fig, img = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
        first, what = 0, "mel band"
    if mfcc:  # signed coefficients: diverging colours centred on 0; c1 (spectral tilt) can dwarf c2-c12,
        # so the range comes from c2-c12 and c1 may saturate (the colour bar's arrows say so)
        rest = np.concatenate([fixed[:, 1:], twin[:, 1:]]) if fixed.shape[1] > 1 else fixed
        lim = max(float(np.percentile(np.abs(rest), 98)), 1e-9)
        lo, hi, cmap, extend = -lim, lim, "coolwarm", "both"
    else:
        lo, hi = float(min(fixed.min(), twin.min())), float(max(fixed.max(), twin.max()))
        cmap, extend = "magma", "neither"
    extent = (-0.5, frames.size - 0.5, first - 0.5, first + fixed.shape[1] - 0.5)
    for a, data, title in ((img[0], fixed, "fixed point"), (img[1], twin, "float64 twin")):
        im = a.imshow(data.T, aspect="auto", origin="lower", cmap=cmap, vmin=lo, vmax=hi, extent=extent)
        a.set_title(f"{title}: {cfg.output}" + (" c1-c%d" % (first + fixed.shape[1] - 1) if mfcc else ""))
        a.set_xlabel(hop)
        a.set_ylabel(what)
    fig.colorbar(im, ax=img[1], label="log2 units" + (" (98th pct of |c2-c12|)" if mfcc else ""), extend=extend)
    lim = max(float(np.abs(diff).max()), 1e-9)
    im = img[2].imshow(diff.T, aspect="auto", origin="lower", cmap="PuOr_r", vmin=-lim, vmax=lim, extent=extent)
    img[2].set_title(f"difference (fixed - twin), max |d| {lim:.1e}")
    img[2].set_xlabel(hop)
    img[2].set_ylabel(what)
    fig.colorbar(im, ax=img[2], label="log2 units")
    fig.savefig(path, dpi=110)
    plt.close(fig)
