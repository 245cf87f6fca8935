"""Robustness benchmark: every CV fold's int8 model on its own test actors, through the runtime.

Yardstick for recipe and gate changes. Each fold model that ``bench/accuracy.py`` kept
(``runs/accuracy/manifest.json``; ``--models DIR`` takes a set from elsewhere with the same manifest)
classifies its RAVDESS test actors' clips exactly as ``ser-edge run`` does
(``model_build.evaluate.runtime_eval``: ``StreamingClassifier`` = LiteRT interpreter wrapper, integer
quantiser, window policy, speech gate, mean-log-probability clip label; a clip without a label is a
miss), under each condition:

==================  =========================================================================
``nominal``         the clip as recorded
``peak_m45/m35/m1``  clip peak normalised to -45 / -35 / -1 dBFS
``white_20db/10db``  white noise at 20 / 10 dB below the clip's mean power
``babble_20db/10db`` 4-talker babble of *other* test-fold speakers at 20 / 10 dB
``telephone``        8 kHz, 300-3400 Hz band (and back to 16 kHz)
``reverb``           a synthetic room impulse response, RT60 uniform in 0.3-0.8 s (per clip)
==================  =========================================================================

Plus, model-independent (the gate alone): ``speech_windows_gated_m35`` = share of the windows that
are speech at the nominal level which the gate drops when the same clip's peak is at -35 dBFS;
``nonspeech_emotion_rate`` = share of windows of generated non-speech (white/pink noise, hum,
tones, DC, clicks at -60/-40/-25/-10 dBFS, digital silence, dither:
``edge_runtime.test_signals.nonspeech_signals``) that get an emotion. ``ece`` = expected
calibration error of the nominal clip labels' confidences (15 bins), per fold model, mean;
``ece_floor`` = what a perfectly calibrated model with the same confidences would show on the
same number of clips (sampling noise, ``model_build.calibrate.ece_noise_floor``); ``ece_pooled``
= one ECE over all test clips of a seed's folds (out-of-fold predictions), mean over seeds.

Cheap to rerun: conditions are deterministic (seeded per clip) and their front-end features go
through ``model_build.features``' cache, so a second run (e.g. a new recipe's fold models) only
runs the interpreter: ~1 min per 5 models on 2 cores.

    python bench/robustness.py [--models runs/accuracy] [--data /work/shared/data] [--seeds 0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "robustness.json"
CONDITIONS = ("nominal", "peak_m45", "peak_m35", "peak_m1", "white_20db", "white_10db", "babble_20db",
              "babble_10db", "telephone", "reverb")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def condition_audio(audios, speakers, cond: str, seed: int = 0) -> list[np.ndarray]:
    """The clips under one condition (int16), deterministic per (seed, clip index, condition)."""
    from model_build import augment as A

    if cond == "nominal":
        return [np.asarray(a, np.int16) for a in audios]
    out = []
    for i, a in enumerate(audios):
        x = np.asarray(a, np.float64) / 32768.0
        rng = np.random.default_rng([seed, i, CONDITIONS.index(cond)])
        if cond.startswith("peak_m"):
            x = A.set_peak(x, -float(cond[len("peak_m"):]))
        elif cond.startswith("white_"):
            x = A.add_noise(x, rng.standard_normal(x.size), float(cond[len("white_"):-2]))
        elif cond.startswith("babble_"):
            pool = [b for b, s in zip(audios, speakers) if s != speakers[i]]
            x = A.add_noise(x, A.babble(pool, x.size, 4, rng), float(cond[len("babble_"):-2]))
        elif cond == "telephone":
            x = A.telephone(x)
        elif cond == "reverb":
            x = A.reverberate(x, A.synthetic_rir(float(rng.uniform(0.3, 0.8)), rng))
        else:
            raise ValueError(f"unknown condition {cond!r}; choose from {', '.join(CONDITIONS)}")
        out.append(np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16))
    return out


def nonspeech_rate(model_path: Path) -> dict:
    """Share of generated non-speech windows that get an emotion (the gate alone decides)."""
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.test_signals import nonspeech_signals

    clf = StreamingClassifier.from_model(model_path)
    per, n_win, n_emo = {}, 0, 0
    for name, x in nonspeech_signals(seconds=6.0).items():
        wins = clf.classify(x)
        e = sum(w.label_index is not None for w in wins)
        per[name] = round(e / max(1, len(wins)), 4)
        n_win += len(wins)
        n_emo += e
    return {"nonspeech_emotion_rate": n_emo / max(1, n_win), "nonspeech_windows": n_win,
            "nonspeech_per_signal": per}


def load_manifest(models: Path | list[Path], seeds: list[int] | None) -> list[dict]:
    """The fold models listed in each folder's ``manifest.json`` (``dir`` added to every entry), in
    (seed, fold) order; several folders (e.g. the member groups of ``--ensemble-from`` runs, kept
    in one folder each) are pooled, but a (seed, fold) listed twice is refused."""
    entries: list[dict] = []
    for d in [models] if isinstance(models, Path) else models:
        mf = d / "manifest.json"
        if not mf.exists():
            raise SystemExit(f"{mf}: no manifest; run bench/accuracy.py first (it keeps every fold's model there)")
        here = [dict(e, dir=d) for e in json.loads(mf.read_text())["models"]]
        if seeds is not None:
            here = [e for e in here if e["seed"] in seeds]
        missing = [e["path"] for e in here if not (d / e["path"]).exists()]
        if missing:
            raise SystemExit(f"{d}: models listed in manifest.json are missing: {missing}")
        entries += here
    seen = [(e["seed"], e["fold"]) for e in entries]
    if len(set(seen)) != len(seen):
        raise SystemExit(f"--models: the same (seed, fold) in more than one folder: "
                         f"{sorted({k for k in seen if seen.count(k) > 1})}")
    if not entries:
        raise SystemExit(f"--models: no fold models{' for seeds ' + str(seeds) if seeds else ''}")
    return sorted(entries, key=lambda e: (e["seed"], e["fold"]))


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = [c for c in CONDITIONS if f"uar_{c}" in res]
    vals = [res[f"uar_{c}"] for c in conds]
    sds = [res.get(f"uar_{c}_fold_sd") or 0.0 for c in conds]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.bar(range(len(conds)), vals, yerr=sds, color=["#4c72b0"] + ["#dd8452"] * (len(conds) - 1), capsize=3)
    ax.axhline(1 / 8, color="grey", lw=0.8, ls="--", label="chance (8 classes)")
    ax.set_xticks(range(len(conds)), [c.replace("_", "\n") for c in conds], fontsize=8)
    ax.set_ylabel("RAVDESS-8 UAR (int8, runtime)")
    ax.set_ylim(0, max(0.7, max(vals) + 0.1))
    ax.set_title(f"Robustness: {res['n_models']} fold models on their own test actors "
                 f"(gated -35 dBFS: {res['speech_windows_gated_m35']:.3f}, non-speech emotion: "
                 f"{res['nonspeech_emotion_rate']:.3f})", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=str(ROOT / "runs" / "accuracy"),
                    help="folder with manifest.json + fold models (bench/accuracy.py --out); a comma list "
                         "pools several (e.g. one folder per --ensemble-from member group)")
    ap.add_argument("--data", default=os.environ.get("SER_EDGE_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--seeds", default="", help="only fold models of these training seeds (comma list)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--limit", type=int, default=0, help="at most this many test clips per fold (quick look)")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)

    from edge_runtime.interpreter import IntModel
    from model_build.corpora import load_corpus, open_corpus
    from model_build.calibrate import ece_noise_floor
    from model_build.evaluate import clip_ece, metrics, runtime_eval
    from model_build.features import fixed_point_features

    t0 = time.time()
    models = [Path(v) for v in args.models.split(",") if v]
    entries = load_manifest(models, [int(s) for s in args.seeds.split(",")] if args.seeds else None)
    conds = [c for c in args.conditions.split(",") if c]
    for c in conds:
        if c not in CONDITIONS:
            ap.error(f"--conditions: unknown {c!r}; choose from {', '.join(CONDITIONS)}")
    first = IntModel(entries[0]["dir"] / entries[0]["path"])
    fe, labels = first.frontend_config, list(first.labels)
    clips, audios, _ = load_corpus(open_corpus(Path(args.data) / "ravdess"), progress=False)
    lab = {l: i for i, l in enumerate(labels)}
    res: dict = {"eval_path": "runtime", "models": ",".join(map(str, models)), "conditions": conds,
                 "fold_models": [e["name"] for e in entries], "n_models": len(entries),
                 "seeds": sorted({e["seed"] for e in entries}), "frontend_hash": fe.hash}
    folds: list[dict] = []
    nominal_clips: dict[int, list] = {}  # seed -> per fold (pred, probs, y) at the nominal condition
    n_folds_of = {sd: sum(1 for e in entries if e["seed"] == sd) for sd in {e["seed"] for e in entries}}
    gated_num = gated_den = 0
    cond_cache: dict[tuple, tuple] = {}  # (test speakers, cond) -> (audio, features); shared across seeds
    for e in entries:
        te = [i for i, c in enumerate(clips) if c.speaker in set(e["test_speakers"])]
        if args.limit:
            te = te[:args.limit]
        y = np.array([lab[clips[i].label] for i in te])
        spk = [clips[i].speaker for i in te]
        model = IntModel(e["dir"] / e["path"])
        if model.frontend_config.hash != fe.hash:
            raise SystemExit(f"{e['path']}: front end {model.frontend_config.hash} differs from {fe.hash}")
        fold = {"name": e["name"], "seed": e["seed"], "fold": e["fold"], "test_speakers": e["test_speakers"],
                "clips": len(te)}
        gated_by_cond = {}
        for cond in conds:
            key = (tuple(e["test_speakers"]), cond, len(te))
            if key not in cond_cache:
                ca = condition_audio([audios[i] for i in te], spk, cond)
                cond_cache = {k: v for k, v in cond_cache.items() if k[0] == key[0]}  # keep one fold's audio
                cond_cache[key] = (ca, fixed_point_features(ca, fe, progress=True))
            ca, cf = cond_cache[key]
            r = runtime_eval(model, ca, cf)
            fold[f"uar_{cond}"] = metrics(y, r.pred, labels)["uar"]
            fold[f"clips_without_label_{cond}"] = r.clips_without_label
            if cond == "nominal":
                fold["ece"] = clip_ece(r.pred, r.probs, y)
                ok = r.pred >= 0
                conf = r.probs[ok, r.pred[ok]]
                fold["ece_floor"] = ece_noise_floor(conf)  # what a calibrated model would show here
                nominal_clips.setdefault(e["seed"], []).append((r.pred, r.probs, y))
            gated_by_cond[cond] = r.window_gated
            log(f"{e['name']} {cond:12s} UAR {fold[f'uar_{cond}']:.3f}  no label {r.clips_without_label:3d}  "
                f"[{time.time() - t0:.0f}s]")
        # the gate does not depend on the model: count each clip once (the first seed's folds)
        if "nominal" in gated_by_cond and "peak_m35" in gated_by_cond and e["seed"] == entries[0]["seed"]:
            speech = ~gated_by_cond["nominal"]  # same windows at every level: scaling moves no frame
            gated_num += int((speech & gated_by_cond["peak_m35"]).sum())
            gated_den += int(speech.sum())
        folds.append(fold)
        res["folds"] = folds
        for cond in conds:
            v = [f[f"uar_{cond}"] for f in folds]
            res[f"uar_{cond}"] = float(np.mean(v))
            res[f"uar_{cond}_fold_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else None
            res[f"clips_without_label_{cond}"] = int(sum(f[f"clips_without_label_{cond}"] for f in folds
                                                         if f["seed"] == entries[0]["seed"]))
        if "nominal" in conds:
            res["ece"] = float(np.mean([f["ece"] for f in folds]))
            res["ece_floor"] = float(np.mean([f["ece_floor"] for f in folds]))
            # every test clip of a seed's 5 folds in one ECE (each clip scored by the fold model that
            # never saw its speaker): no fold-to-fold accuracy swing inside, 5x the clips per bin
            pooled = {sd: clip_ece(*(np.concatenate(v) for v in zip(*runs)))
                      for sd, runs in nominal_clips.items() if len(runs) == n_folds_of[sd]}
            if pooled:
                res["ece_pooled_per_seed"] = pooled
                res["ece_pooled"] = float(np.mean(list(pooled.values())))
        if gated_den:
            res["speech_windows_gated_m35"] = gated_num / gated_den
            res["speech_windows_m35_denominator"] = gated_den
        _save(res, args.results)
    res.update(nonspeech_rate(entries[0]["dir"] / entries[0]["path"]))
    res["seconds"] = round(time.time() - t0)
    _save(res, args.results)
    png = Path(args.results).with_suffix(".png")
    if all(k in res for k in ("speech_windows_gated_m35",)):
        plot(res, png)
    print("| metric | value |\n|---|---|")
    for k in [f"uar_{c}" for c in conds] + ["speech_windows_gated_m35", "nonspeech_emotion_rate", "ece",
                                            "ece_floor", "ece_pooled",
                                            "clips_without_label_nominal", "n_models", "seconds"]:
        if k in res:
            v = res[k]
            print(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return 0


def _save(res: dict, path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
