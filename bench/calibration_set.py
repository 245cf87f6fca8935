"""Which clips should the clip-level temperature be fitted on? (not run in CI; ~10 min on 1 core)

The recipe fits each fold model's temperature on its validation actors' clips as recorded (the same
3-4 actors that chose its epochs, ~200 clips). Those actors favour the model (they selected it), so a
temperature fitted there may leave it over-confident on unseen actors. Declared before measuring, one
alternative fit set, nothing tuned on test actors:

* ``val``      -- the validation actors' clips as recorded (the recipe, ``model_build.recalibrate``);
* ``val_aug``  -- the same clips plus ``--copies`` copies of each under the training augmentation
  (``model_build.augment`` defaults: level, noise, babble of the *other validation actors*, band
  limits, reverb, speed), seeded per fold.

For every kept fold model (``--models``: bench/accuracy.py ``--out`` folders with ``manifest.json`` and
``<name>_float.npz``), each set's temperature is fitted like ``model_build.recalibrate`` (float model
through the runtime, mean of the speech windows' probabilities) and scored on the fold's test actors
as recorded, through the runtime with the float model at that temperature: clip ECE per fold model
(mean of the 15), pooled over each seed's 5 folds (mean of the seeds), the sampling floor, and
mean confidence minus accuracy (> 0: over-confident). The float model stands in for the int8 one
(same labels up to int8 rounding; no re-conversion per variant): a paired comparison of the two fit
sets, not the headline figure (that is bench/robustness.py on the int8 models).

    python bench/calibration_set.py --models runs/cv_clip_s0,runs/cv_clip_s1,runs/cv_clip_s2

Writes bench/results/calibration_set.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "calibration_set.json"
FIT_SETS = ("val", "val_aug")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def score(pred, clip_log_probs, y, temperature: float) -> dict:
    """Clip ECE, sampling floor, accuracy and mean confidence of the runtime's clip labels ``pred``
    with the reported probabilities at ``temperature`` (clips without a label left out)."""
    from model_build.calibrate import clip_probabilities, ece_noise_floor
    from model_build.evaluate import clip_ece

    pred, y = np.asarray(pred), np.asarray(y)
    probs = clip_probabilities(clip_log_probs, temperature)
    ok = pred >= 0
    conf = probs[ok, pred[ok]]
    return {"ece": clip_ece(pred, probs, y), "ece_floor": ece_noise_floor(conf),
            "accuracy": float(np.mean(pred[ok] == y[ok])), "confidence": float(np.mean(conf)),
            "n_clips": int(ok.sum())}


def pooled_ece(runs: list[tuple[np.ndarray, list, np.ndarray, float]]) -> float:
    """One clip ECE over several folds' test clips, each fold's probabilities at its own temperature
    (``runs``: ``(pred, clip_log_probs, y, temperature)`` per fold)."""
    from model_build.calibrate import clip_probabilities
    from model_build.evaluate import clip_ece

    pred = np.concatenate([r[0] for r in runs])
    probs = np.concatenate([clip_probabilities(r[1], r[3]) for r in runs])
    y = np.concatenate([r[2] for r in runs])
    return clip_ece(pred, probs, y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma list of CV --out folders (manifest.json + fold models)")
    ap.add_argument("--data", default=os.environ.get("SER_EDGE_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--copies", type=int, default=1, help="augmented copies of each validation clip in val_aug")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.copies < 1:
        ap.error(f"--copies {args.copies}: must be >= 1")
    dirs = [Path(d) for d in args.models.split(",") if d]
    for d in dirs:
        if not (d / "manifest.json").is_file():
            ap.error(f"--models {d}: no manifest.json (the --out of a bench/accuracy.py run)")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # another job owns the cores; timing is not measured
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tqdm.auto import tqdm

    from edge_runtime.model_metadata import read_metadata
    from model_build.augment import AugmentConfig, augmented_copies
    from model_build.calibrate import fit_clip_temperature
    from model_build.corpora import load_corpus, open_corpus
    from model_build.evaluate import KerasWindowModel, runtime_eval
    from model_build.pipeline import load_float

    t0 = time.time()
    idx = open_corpus(Path(args.data) / "ravdess")
    clips, audios, _ = load_corpus(idx, progress=True)
    labels = list(idx.labels)
    y_all = np.array([labels.index(c.label) for c in clips])
    spk = np.array([c.speaker for c in clips])
    models = [(d, m) for d in dirs for m in json.loads((d / "manifest.json").read_text())["models"]]
    folds, by_seed = [], {}
    for d, m in tqdm(models, desc="fold models", unit="model"):
        path = d / m["path"]
        meta = read_metadata(path.read_bytes())
        if meta.labels != tuple(labels) and list(meta.labels) != labels:
            raise SystemExit(f"{path}: labels {meta.labels} are not RAVDESS's {labels}")
        keras, _, _ = load_float(path.with_name(path.stem + "_float.npz"))  # uncalibrated logits
        km = KerasWindowModel(keras, meta)
        va = np.nonzero(np.isin(spk, m["validation_speakers"]))[0]
        te = np.nonzero(np.isin(spk, m["test_speakers"]))[0]
        if set(m["validation_speakers"]) & set(m["test_speakers"]):
            raise SystemExit(f"{path}: validation and test actors overlap")
        aug = augmented_copies([audios[i] for i in va], list(spk[va]), args.copies, AugmentConfig(),
                               seed=1000 + 10 * int(m["seed"]) + int(m["fold"]))
        r_val = runtime_eval(km, [audios[i] for i in va])
        r_aug = runtime_eval(km, [a for cs in aug for a in cs])
        r_test = runtime_eval(km, [audios[i] for i in te])
        y_va, y_te = y_all[va], y_all[te]
        fits = {"val": fit_clip_temperature(r_val.speech_log_probs, y_va),
                "val_aug": fit_clip_temperature(r_val.speech_log_probs + r_aug.speech_log_probs,
                                                np.concatenate([y_va, np.repeat(y_va, args.copies)]))}
        rec = {"name": m["name"], "seed": int(m["seed"]), "fold": int(m["fold"]), "dir": str(d),
               "validation_speakers": m["validation_speakers"], "test_speakers": m["test_speakers"],
               "recorded_temperature": meta.extra.get("calibration", {}).get("temperature"),
               "val_clip_accuracy": float(np.mean(r_val.pred == y_va)),
               "val_aug_clip_accuracy": float(np.mean(r_aug.pred == np.repeat(y_va, args.copies))),
               "test_clip_accuracy": float(np.mean(r_test.pred == y_te))}
        for name, t in fits.items():
            rec[name] = {"temperature": round(float(t), 4), **score(r_test.pred, r_test.speech_log_probs, y_te, t)}
            by_seed.setdefault(name, {}).setdefault(int(m["seed"]), []).append(
                (r_test.pred, r_test.speech_log_probs, y_te, t))
        folds.append(rec)
        log(f"{m['name']}: T val {fits['val']:.3f} (recorded {rec['recorded_temperature']}) val_aug "
            f"{fits['val_aug']:.3f}; test ECE {rec['val']['ece']:.3f} -> {rec['val_aug']['ece']:.3f} "
            f"[{time.time() - t0:.0f}s]")
    res: dict = {"models": [str(d) for d in dirs], "n_models": len(folds), "copies": args.copies,
                 "augment_config": AugmentConfig().to_dict(), "eval": "float model through the runtime "
                 "(StreamingClassifier, window policy, speech gate) at each fit set's temperature; test actors "
                 "as recorded", "folds": folds, "fit_sets": {}}
    for name in FIT_SETS:
        pooled = {str(s): pooled_ece(runs) for s, runs in sorted(by_seed[name].items())}
        res["fit_sets"][name] = {
            "ece": float(np.mean([f[name]["ece"] for f in folds])),
            "ece_floor": float(np.mean([f[name]["ece_floor"] for f in folds])),
            "ece_pooled": float(np.mean(list(pooled.values()))), "ece_pooled_per_seed": pooled,
            "confidence_minus_accuracy": float(np.mean([f[name]["confidence"] - f[name]["accuracy"] for f in folds])),
            "temperature_mean": float(np.mean([f[name]["temperature"] for f in folds])),
            "folds_ece_lower_than_val": int(sum(f[name]["ece"] < f["val"]["ece"] for f in folds)),
        }
    # where the per-fold miscalibration comes from: a temperature matches the confidence to the validation
    # actors' accuracy, and a fold's test actors score higher or lower than those (4 actors each)
    gap = [f["val_clip_accuracy"] - f["test_clip_accuracy"] for f in folds]
    res["val_minus_test_accuracy"] = {"mean": float(np.mean(gap)), "sd": float(np.std(gap, ddof=1)),
                                      "corr_with_test_confidence_minus_accuracy": float(np.corrcoef(
                                          gap, [f["val"]["confidence"] - f["val"]["accuracy"] for f in folds])[0, 1])}
    res["seconds"] = round(time.time() - t0)
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print("| fit set | T (mean) | test clip ECE per fold model | pooled per seed (mean) | floor | "
          "confidence − accuracy |\n|---|---|---|---|---|---|")
    for name, v in res["fit_sets"].items():
        print(f"| {name} | {v['temperature_mean']:.3f} | {v['ece']:.4f} | {v['ece_pooled']:.4f} "
              f"({', '.join(f'{x:.3f}' for x in v['ece_pooled_per_seed'].values())}) | {v['ece_floor']:.4f} | "
              f"{v['confidence_minus_accuracy']:+.4f} |")
    g = res["val_minus_test_accuracy"]
    print(f"\nvalidation − test clip accuracy per fold model: {g['mean']:+.3f} ± {g['sd']:.3f}; its correlation with "
          f"the test confidence − accuracy at the val temperature: {g['corr_with_test_confidence_minus_accuracy']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
