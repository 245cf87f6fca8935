"""How much does the int8 *input* quantisation cost, per input range rule? (the look behind ``--input-range-percentile``)

For kept CV fold models (``bench/accuracy.py --out`` folders: ``*.tflite`` + ``*_float.npz`` + ``manifest.json``):
the value distribution of each model's calibration windows (the converter's, kept in ``*_float.npz``), and the
**input-only agreement** per rule: the window top-1 of the float model on the front end's features vs on the same
features rounded to the int8 input grid that rule gives and dequantised (every op in float, only the input
quantised), over the runtime's windows (every ``hop_frames``, no speech gate) of the fold's **validation**
actors (``--split validation``, the default: what a range is chosen on) or its test actors (``--split test``:
only to read a result afterwards). Rules: min/max (the converter's own, ``P = 0``) and the ``[P, 100 - P]``
percentiles of :class:`model_build.convert.InputRange`; the int8 grid is TFLite's (range widened to hold 0,
zero point rounded), the saturation the runtime's.

    python bench/input_range.py --models /work/runs/qat/cv_s0,/work/runs/qat/cv_s1,/work/runs/qat/cv_s2 \\
        --pairs 0:0,1:1,2:2,0:3,1:4

Writes ``bench/results/input_range.json`` (``--results``) and prints the table (mean over the models).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "input_range.json"
PERCENTILES = (0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0)
SHOWN = (0, 0.001, 0.01, 0.05, 0.1, 0.5, 1, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rule_key(p: float) -> str:
    """A rule's key in the results (no dot, so bench/fill_readme.py can address it): 0.01 -> ``p0_01``."""
    return "p" + f"{p:g}".replace(".", "_")


def int8_grid(lo: float, hi: float) -> tuple[float, int]:
    """TFLite's asymmetric int8 ``(scale, zero_point)`` for a calibrated range ``[lo, hi]``."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    return scale, int(np.clip(np.round(-128 - lo / scale), -128, 127))


def round_trip(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``x`` quantised to int8 (saturating, as the runtime's quantiser) and dequantised."""
    return ((np.clip(np.round(x / scale) + zero_point, -128, 127) - zero_point) * scale).astype(np.float32)


def fold_windows(models: Path, man: dict, split: str, data: str):
    """The fold's ``split`` actors' runtime windows (float features, log2 units), its float model and calibration
    windows, and the int8 model's metadata."""
    from edge_runtime.model_metadata import read_metadata
    from model_build.corpora import load_corpus, open_corpus
    from model_build.features import fixed_point_features, to_real
    from model_build.pipeline import load_float
    from model_build.windows import make_windows, silence_frame

    meta = read_metadata((models / man["path"]).read_bytes())
    fe = meta.frontend_config()
    keras, _, calib = load_float(models / f"{Path(man['path']).stem}_float.npz")
    idx = open_corpus(Path(data) / "ravdess")
    speakers = set(man[f"{split}_speakers"])
    idx = dataclasses.replace(idx, clips=tuple(c for c in idx.clips if c.speaker in speakers))
    _, audios, _ = load_corpus(idx, progress=False)
    feats = fixed_point_features(audios, fe, progress=False)
    Xq, _, _ = make_windows(feats, meta.window_frames, meta.hop_frames, silence_frame(fe))
    return to_real(Xq, fe).astype(np.float32), keras, calib, meta


def measure(models: Path, man: dict, split: str, data: str, percentiles) -> dict:
    """One fold model's row: calibration percentiles, and per rule its int8 grid, input-only agreement and the
    share of the split's feature values it saturates."""
    from model_build.convert import InputRange

    X, keras, calib, meta = fold_windows(models, man, split, data)
    v = np.asarray(calib, np.float64).ravel()
    zf = keras.predict(X, batch_size=256, verbose=0).argmax(1)
    row = {"name": man["name"], "split": split, "windows": int(len(X)),
           "shipped_input": [meta.input_scale, meta.input_zero_point],
           "calib_percentiles": {str(p): float(np.percentile(v, p)) for p in SHOWN},
           "calib_mean": float(v.mean()), "calib_sd": float(v.std()), "rules": {}}
    for p in percentiles:
        lo, hi = InputRange(p).bounds(calib)
        scale, zp = int8_grid(lo, hi)
        agree = float(np.mean(keras.predict(round_trip(X, scale, zp), batch_size=256, verbose=0).argmax(1) == zf))
        saturated = float(np.mean((X < (-128 - zp) * scale) | (X > (127 - zp) * scale)))
        row["rules"][rule_key(p)] = {"percentile": p, "lo": lo, "hi": hi, "scale": scale, "zero_point": zp,
                                "input_only_agreement": agree, "saturated_fraction": saturated}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma list of bench/accuracy.py --out folders (kept fold models)")
    ap.add_argument("--pairs", default="", help="SEED:FOLD,... of the fold models to look at (default: all listed)")
    ap.add_argument("--split", choices=("validation", "test"), default="validation",
                    help="whose windows: the fold's validation actors (choosing a rule) or its test actors")
    ap.add_argument("--percentiles", default=",".join(map(str, PERCENTILES)), help="P values (0 = min/max)")
    ap.add_argument("--data", default=os.environ.get("SER_EDGE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    from model_build.convert import InputRange

    try:
        percentiles = [InputRange(float(p)).percentile for p in args.percentiles.split(",") if p.strip()]
    except ValueError as e:
        ap.error(f"--percentiles {args.percentiles}: {e}")
    want = {tuple(int(v) for v in p.split(":")) for p in args.pairs.split(",") if p.strip()}
    todo = []
    for d in [Path(p) for p in args.models.split(",") if p.strip()]:
        if not (d / "manifest.json").is_file():
            ap.error(f"--models {d}: no manifest.json (the --out of a bench/accuracy.py run)")
        for m in json.loads((d / "manifest.json").read_text())["models"]:
            if (not want or (m["seed"], m["fold"]) in want) and (d / m["path"]).is_file():
                todo.append((d, m))
    if not todo:
        ap.error("no fold model matches --models/--pairs")
    t0 = time.time()
    rows = []
    for d, m in todo:
        rows.append(measure(d, m, args.split, args.data, percentiles))
        log(f"{m['name']}: {rows[-1]['windows']} {args.split} windows, agreement "
            + ", ".join(f"P={r['percentile']:g}: {r['input_only_agreement']:.4f}" for r in rows[-1]["rules"].values())
            + f" [{time.time() - t0:.0f}s]")
    mean = {p: {k: float(np.mean([r["rules"][p][k] for r in rows]))
                for k in ("scale", "input_only_agreement", "saturated_fraction")} for p in rows[0]["rules"]}
    res = {"models": args.models, "split": args.split, "pairs": [r["name"] for r in rows],
           "windows": [r["windows"] for r in rows], "mean": mean, "per_model": rows, "seconds": round(time.time() - t0)}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(res, indent=1) + "\n")
    print(f"| input range | mean input scale | input-only agreement ({args.split} windows, mean of {len(rows)}) "
          "| values saturated |\n|---|---|---|---|")
    for v, p in zip(mean.values(), percentiles):
        name = "min/max" if p == 0 else f"p{p:g} / p{100 - p:g}"
        print(f"| {name} | {v['scale']:.4f} | {v['input_only_agreement']:.4f} | {100 * v['saturated_fraction']:.3f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
