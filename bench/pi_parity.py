"""Compute the device-side outputs whose bits must not depend on the CPU (run on x86 and on ARM).

    python bench/pi_parity.py OUT.npz [--model M.tflite] [--seconds 6]

For a fixed set of generated signals (edge_runtime.test_signals: speech with pauses, a sweep, white
noise, a quiet vowel, dithered silence, and a full-scale square wave), this writes to ``OUT.npz``:

* ``feat_<name>``: the fixed-point front end's features (``edge_runtime.frontend.compute_features``);
* ``q8_<name>``: the same features quantised to the model's int8 input (``FeatureQuantizer``);
* ``scores_<name>`` / ``labels_<name>``: the int8 scores and top-1 of every window, through
  ``StreamingClassifier`` (the code path of ``ser-edge run``/``serve``) on the installed interpreter;
* ``meta``: a JSON string with the machine, numpy and interpreter versions.

Only numpy and a TFLite interpreter are needed (this runs inside the Pi userlands of
``bench/pi_check.py``); ``compare(a, b)`` says whether two such files are bit-identical.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def signals(seconds: float) -> dict[str, np.ndarray]:
    from edge_runtime import test_signals as ts

    n = int(seconds * 16000)
    square = np.where((np.arange(n) // 40) % 2 == 0, 32767, -32768).astype(np.int16)
    return {"speech": ts.speech_with_pauses(seconds, seed=3), "sweep": ts.tone_sweep(seconds),
            "noise": ts.white_noise(seconds, seed=4), "quiet": ts.quiet_speechlike(seconds),
            "silence": ts.dithered_silence(seconds), "square": square}


def compute(model: str | None, seconds: float) -> dict[str, np.ndarray]:
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.frontend import compute_features

    clf = StreamingClassifier.from_model(model)
    model_obj = clf.model
    cfg = model_obj.frontend_config
    out: dict[str, np.ndarray] = {}
    for name, pcm in signals(seconds).items():
        feats = compute_features(pcm, cfg)
        out[f"feat_{name}"] = np.asarray(feats)
        out[f"q8_{name}"] = np.asarray(model_obj.quantize(feats))
        res = clf.classify(pcm)
        out[f"scores_{name}"] = np.array([r.scores_int8 for r in res], dtype=np.int8).reshape(len(res), -1)
        out[f"labels_{name}"] = np.array([-1 if r.label_index is None else r.label_index for r in res],
                                         dtype=np.int64)  # None: no emotion (silence/no speech)
    info = clf.info()
    meta = {"machine": platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__, "backend": getattr(model_obj, "backend", None),
            "model_hash": info.get("model_hash"), "frontend_hash": info.get("frontend_hash")}
    out["meta"] = np.array(json.dumps(meta))
    return out


def compare(a: dict, b: dict) -> dict:
    """Bit-exact comparison of two parity outputs: per array, and the totals."""
    keys = sorted(k for k in a if k != "meta")
    diff = [k for k in keys if k not in b or a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
            or not np.array_equal(a[k], b[k])]
    feats = sum(int(a[k].shape[0]) for k in keys if k.startswith("feat_"))
    windows = sum(int(a[k].shape[0]) for k in keys if k.startswith("scores_"))
    return {"bit_exact": not diff, "arrays_compared": len(keys), "arrays_differing": diff,
            "feature_frames_compared": feats, "windows_compared": windows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    res = compute(args.model, args.seconds)
    np.savez(args.out, **res)
    print(str(res["meta"]))


if __name__ == "__main__":
    main()
