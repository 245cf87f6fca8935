"""Accuracy benchmark on the real corpora (not run in CI; tens of minutes on 2 cores).

RAVDESS-8: actor-grouped 5-fold cross-validation over actors 01-20 (each fold: test actors,
validation actors for early stopping on clip UAR, the rest train). Float = Keras float model on
float64-twin features; int8 = the converted model in LiteRT on the fixed-point front end (the
device path). TESS-7: leave-one-speaker-out both ways (OAF -> YAF and YAF -> OAF), int8.

Writes bench/results/accuracy.json (updated after every fold) and prints a Markdown table.

    python bench/accuracy.py [--data ../shared/data] [--epochs 30] [--augment 1] [--folds 0,1,2,3,4]

Recipe options (the shipped model's recipe is ``bench/pretrained.py``'s RECIPE): ``--train-tess``
adds all TESS clips (both speakers, labels mapped to the RAVDESS set) to every RAVDESS fold's
*training* set (never validation or test); ``--time-masks/--freq-masks/--mixup`` switch on the
per-epoch SpecAugment / mixup of the training windows; ``--p-noise/--p-babble/--snr-db`` (with
``--conditions``) change how often an augmented copy gets noise, how often that noise is babble, and
its SNR range (``model_build.augment.AugmentConfig``); ``--results`` writes elsewhere (experiments).
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

from bench.common import rss_mb  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.json"
ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "runs" / "accuracy"  # every fold's int8 model + float weights + manifest.json (gitignored)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load_trained(path: Path):
    """A kept fold model as the bits of ``TrainedModel`` the benchmark reads (no training history)."""
    from types import SimpleNamespace

    from edge_runtime.model_metadata import read_metadata_json
    from model_build.pipeline import load_float

    data = path.read_bytes()
    keras_model, _, _ = load_float(path.with_name(path.stem + "_float.npz"))
    md = read_metadata_json(data, str(path))
    return SimpleNamespace(keras_model=keras_model, model_bytes=data, metadata=md, best_epoch=-1,
                           history={"loss": []}, params=int(md.get("params", 0)), path=path)


def run_split(name, clips, audios, feats, twin, labels, tr, va, te, fe, args, W, H, TH, mcfg, tcfg, extra=None,
              extra_corpora=None, teacher_name=None, teacher_members=None, ensemble=None):
    from model_build.evaluate import EvalInputs, validate
    from model_build.features import augmented_copies, fixed_point_features
    from model_build.pipeline import train_and_convert

    lab = {l: i for i, l in enumerate(labels)}
    y = np.array([lab[c.label] for c in clips])
    tr_feats, tr_y = [feats[i] for i in tr], list(y[tr])
    masks = None
    out_path = Path(args.out) / f"{name}.tflite"
    kept = out_path.exists() and out_path.with_name(out_path.stem + "_float.npz").exists()
    if args.recalibrate_from or ensemble or (args.reuse_models and kept):
        pass  # no training: the training set is not needed
    elif args.conditions:  # robustness augmentation + extra corpora with class masks (model_build.recipe)
        from model_build.recipe import CorpusData, training_set

        rav = CorpusData("ravdess", tuple(clips), tuple(audios), y)
        ts = training_set(rav, feats, tr, extra_corpora, len(labels), fe, copies=args.augment, seed=args.seed,
                          augment=augment_config(args))
        tr_feats, tr_y, masks = ts.feats, ts.y, ts.masks
    elif args.augment:
        copies = augmented_copies([audios[i] for i in tr], args.augment, seed=args.seed)
        tr_feats += fixed_point_features([a for cs in copies for a in cs], fe, progress=True)
        tr_y += [y[i] for i in tr for _ in range(args.augment)]
    if extra is not None:  # (features, labels) of an extra training corpus (TESS)
        tr_feats += list(extra[0])
        tr_y += list(extra[1])
    if ensemble:  # kept fold models of earlier runs, one int8 ensemble (model_build.ensemble), no training
        tm = build_fold_ensemble(ensemble, out_path, name, [audios[i] for i in va], y[va], [feats[i] for i in va], args)
    elif args.recalibrate_from:  # a kept model, its temperature re-fitted on the validation clips (no training)
        from model_build.recalibrate import recalibrate

        src = Path(args.recalibrate_from) / f"{name}.tflite"
        if not src.exists():
            raise SystemExit(f"{src}: no such fold model (--recalibrate-from needs the --out of a CV run)")
        recalibrate(src, [audios[i] for i in va], y[va], out_path, val_feats=[feats[i] for i in va], log=log,
                    input_range=input_range(args))
        tm = _load_trained(out_path)
    elif args.reuse_models and kept:
        tm = _load_trained(out_path)  # evaluation only: the fold's kept model (e.g. a new gate or policy)
        if tm.metadata["frontend_hash"] != fe.hash:
            raise SystemExit(f"{out_path}: trained with front end {tm.metadata['frontend_hash']}, this run computes "
                             f"{fe.hash} (--frontend-version?); the kept model does not fit these features")
        log(f"reusing {out_path}")
    else:
        tm = train_and_convert(tr_feats, tr_y, labels, fe, mcfg, tcfg, window_frames=W, hop_frames=H,
                               train_hop_frames=TH, val_feats=[feats[i] for i in va], val_labels=y[va],
                               out_path=out_path, model_name=name,
                               trained_on=name, n_calib=args.n_calib, log=log, train_masks=masks,
                               calibrate=args.calibrate, distill=distill_config(args),
                               teacher_cache=teacher_path(args, teacher_name or name),
                               teacher_members=teacher_members, start_from=qat_start(args, name, clips, te, va, fe.hash),
                               input_range=input_range(args))
        if args.calibrate_level == "clip":  # re-fit at the level the runtime reports (model_build.recalibrate)
            from model_build.recalibrate import recalibrate_trained

            tm = recalibrate_trained(tm, out_path, [audios[i] for i in va], y[va],
                                     val_feats=[feats[i] for i in va], log=log)
    # every row through the runtime (StreamingClassifier: window policy + speech gate), cached features
    inputs = EvalInputs(audios=[audios[i] for i in te], y_clip=y[te], feats_fixed=[feats[i] for i in te],
                        feats_twin=[twin[i] for i in te])
    val = validate(tm.keras_model, tm.model_bytes, inputs, list(labels), run_tflm=args.tflm, progress=log)
    return tm, val


def input_range(args):
    """How the conversion takes the int8 input range (``--input-range-percentile``)."""
    from model_build.convert import InputRange

    return InputRange(args.input_range_percentile)


def qat_start(args, name: str, clips, te, va, frontend_hash: str) -> Path | None:
    """``--qat-from DIR``: this fold's kept float model (``DIR/<name>_float.npz``) of a CV run of the same
    folds and front end, checked to have the same test and validation actors (so it never saw this
    fold's test actors, and stopped early on the same validation actors)."""
    if not args.qat_from:
        return None
    d = Path(args.qat_from)
    man = json.loads((d / "manifest.json").read_text())
    hit = [m for m in man.get("models", []) if m["name"] == name]
    if man.get("fold_seed") != args.fold_seed or man.get("frontend_hash") != frontend_hash or not hit:
        raise SystemExit(f"--qat-from {d}: no kept model {name} of fold seed {args.fold_seed} and front end "
                         f"{frontend_hash} (it has fold seed {man.get('fold_seed')}, front end {man.get('frontend_hash')})")
    for key, idx in (("test_speakers", te), ("validation_speakers", va)):
        want = sorted({clips[i].speaker for i in idx})
        if sorted(hit[0].get(key, [])) != want:
            raise SystemExit(f"--qat-from {d}/{hit[0]['path']}: {key} {hit[0].get(key)}, this fold {want}")
    p = d / (Path(hit[0]["path"]).stem + "_float.npz")
    if not p.is_file():
        raise SystemExit(f"--qat-from {p}: no such float model")
    return p


def distill_config(args):
    """The :class:`model_build.distill.DistillConfig` of ``--distill-*`` (None when alpha is 0)."""
    if not args.distill_alpha:
        return None
    from model_build.distill import DistillConfig
    from model_build.models import ModelConfig

    teacher = ModelConfig(arch="crnn", conv1=args.distill_teacher_conv1, conv1_kernel=args.conv1_kernel,
                          conv2=args.distill_teacher_conv, lstm=args.distill_teacher_lstm, dropout=args.dropout)
    return DistillConfig(alpha=args.distill_alpha, temperature=args.distill_temperature, teacher=teacher,
                         teacher_seed=args.fold_seed)


def teacher_path(args, name: str) -> Path | None:
    """Where a split's teacher is kept (one per fold, shared by every seed of the student)."""
    if not args.distill_alpha:
        return None
    return Path(args.distill_teachers or Path(args.out) / "teachers") / f"fs{args.fold_seed}_{name}.npz"


def ensemble_members(args, fold: int, test_speakers: list[str], frontend_hash: str) -> list[Path] | None:
    """``--distill-ensemble``: the float fold models kept by earlier CV runs (their ``--out``) for this
    fold. Each run must have used the same folds and front end, and each model the same test
    actors: the ensemble never saw this fold's test actors."""
    if not (args.distill_alpha and args.distill_ensemble):
        return None
    out = []
    for d in [Path(v) for v in args.distill_ensemble.split(",") if v]:
        man = json.loads((d / "manifest.json").read_text())
        if man.get("fold_seed") != args.fold_seed or man.get("frontend_hash") != frontend_hash:
            raise SystemExit(f"--distill-ensemble {d}: other folds or front end (fold_seed {man.get('fold_seed')}, "
                             f"front end {man.get('frontend_hash')})")
        for m in man["models"]:
            if int(m["fold"]) == fold and m["name"].startswith("ravdess_"):
                if sorted(m["test_speakers"]) != sorted(test_speakers):
                    raise SystemExit(f"--distill-ensemble {d}/{m['path']}: test actors {m['test_speakers']}, "
                                     f"this fold {test_speakers}")
                out.append(d / (Path(m["path"]).stem + "_float.npz"))
    if not out:
        raise SystemExit(f"--distill-ensemble: no kept model of fold {fold} in {args.distill_ensemble}")
    return sorted(set(out))


def _ensemble_sources(spec: str) -> list[tuple[Path, int | None]]:
    """``DIR[:SEED],...`` of ``--ensemble-from`` as ``[(dir, seed or None)]``."""
    out = []
    for item in [v for v in spec.split(",") if v]:
        d, _, seed = item.rpartition(":") if ":" in item else (item, "", "")
        out.append((Path(d), int(seed) if seed else None))
    return out


def ensemble_fold_members(args, fold: int, test_speakers: list[str], val_speakers: list[str],
                          frontend_hash: str) -> list[Path] | None:
    """``--ensemble-from DIR[:SEED],...``: this fold's kept float models (``_float.npz``) of the listed CV runs'
    ``--out`` (only seed SEED's where given). Each run must have used the same folds and front end, and
    each member the same test and validation actors as this fold: no member saw the test actors, and the
    ensemble's temperature is fitted on the validation actors every member stopped early on."""
    if not args.ensemble_from:
        return None
    out = []
    for d, seed in _ensemble_sources(args.ensemble_from):
        if d.resolve() == Path(args.out).resolve():
            raise SystemExit(f"--ensemble-from {d}: is --out; the ensembles would overwrite their members")
        man = json.loads((d / "manifest.json").read_text())
        if man.get("fold_seed") != args.fold_seed or man.get("frontend_hash") != frontend_hash:
            raise SystemExit(f"--ensemble-from {d}: other folds or front end (fold_seed {man.get('fold_seed')}, "
                             f"front end {man.get('frontend_hash')})")
        hits = [m for m in man["models"] if int(m["fold"]) == fold and m["name"].startswith("ravdess_")
                and (seed is None or int(m["seed"]) == seed)]
        if not hits:
            raise SystemExit(f"--ensemble-from {d}: no kept model of fold {fold}" + (f", seed {seed}" if seed is not None else ""))
        for m in hits:
            for key, want in (("test_speakers", test_speakers), ("validation_speakers", val_speakers)):
                if sorted(m.get(key, [])) != sorted(want):
                    raise SystemExit(f"--ensemble-from {d}/{m['path']}: {key} {m.get(key)}, this fold {sorted(want)}")
            out.append(d / (Path(m["path"]).stem + "_float.npz"))
    if len(set(out)) != len(out):
        raise SystemExit(f"--ensemble-from {args.ensemble_from}: a member is listed twice")
    return out


def build_fold_ensemble(members: list[Path], out_path: Path, name: str, val_audios, val_y, val_feats, args):
    """The fold's int8 ensemble (:func:`model_build.ensemble.build_ensemble`, temperature fitted on the
    fold's validation clips) as the bits of ``TrainedModel`` the benchmark reads; ``keras_model`` is its
    float twin, so the float rows score the same combination in float."""
    from types import SimpleNamespace

    from model_build.ensemble import build_ensemble

    r = build_ensemble(members, out_path, combine=args.ensemble_combine, val_audios=val_audios, val_y=val_y,
                       val_feats=val_feats, n_calib=args.n_calib, model_name=name, log=log,
                       trained_on=f"ensemble of {', '.join(str(p) for p in members)}")
    return SimpleNamespace(keras_model=r.float_model, model_bytes=r.model_bytes, metadata=r.metadata, best_epoch=-1,
                           history={"loss": []}, params=r.params, path=r.path)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(MODELS),
                    help="where every fold's int8 model (+ _float.npz, + manifest.json) is kept (default runs/accuracy; "
                         "bench/robustness.py reads it)")
    ap.add_argument("--reuse-models", action="store_true",
                    help="evaluate the kept fold models in --out instead of training (same options, no training)")
    ap.add_argument("--recipe", default=None, metavar="FILE.json",
                    help="a training recipe: a JSON object of this script's options (e.g. {\"epochs\": 40, "
                         "\"conditions\": true, \"extra_corpora\": \"tess,ased\"}); command-line options win")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--augment", type=int, default=1)
    ap.add_argument("--feature", default="logmel")
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--train-hop", type=float, default=0.25)
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--n-calib", type=int, default=1000)
    ap.add_argument("--no-tess", action="store_true")
    ap.add_argument("--tflm", action="store_true", help="also run every test window in TFLM (slower)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default="", help="comma list of training seeds, each run on every fold (folds stay "
                                                 "fixed by --fold-seed); overrides --seed")
    ap.add_argument("--fold-seed", type=int, default=0, help="seed of the actor-grouped fold assignment")
    ap.add_argument("--val-folds", type=int, default=5,
                    help="the validation speakers (early stopping, temperature) are one of this many speaker folds of "
                         "a CV fold's 16 training speakers: 5 (3-4 speakers, the shipped recipe), 8 (2 speakers)")
    ap.add_argument("--resummarise", metavar="JSON", help="only recompute the headline keys of a results file "
                                                          "from its per-fold records (complete seeds only)")
    ap.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                    help="only merge results files of the same recipe and folds that hold different seeds into "
                         "--results (headline keys: mean over complete seeds, sd across seeds)")
    ap.add_argument("--train-tess", action="store_true", help="add TESS (both speakers) to RAVDESS training")
    ap.add_argument("--tess-augment", type=int, default=0, help="augmented copies of each TESS training clip")
    ap.add_argument("--time-masks", type=int, default=0)
    ap.add_argument("--freq-masks", type=int, default=0)
    ap.add_argument("--mixup", type=float, default=0.0)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--focal-gamma", type=float, default=0.0)
    ap.add_argument("--margin", type=float, default=0.0,
                    help="additive margin (log-probability units) subtracted from the true class's logit in the "
                         "loss (model_build.train.masked_loss); 0 = none, the shipped recipe")
    from model_build.train import LR_SCHEDULES, TrainConfig as _TC  # numpy only at import

    ap.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                    help="learning rate of the float phase: constant Adam 2e-3 (the shipped recipe), or cosine decay "
                         "per step from 2e-3 to 2e-3 x --lr-floor over --epochs (model_build.train.learning_rate_at); "
                         "the QAT phase keeps its constant --qat-lr")
    ap.add_argument("--lr-floor", type=float, default=_TC.lr_floor,
                    help="with --lr-schedule cosine: the last step's learning rate as a fraction of the first "
                         f"(default {_TC.lr_floor})")
    ap.add_argument("--weight-ema", type=float, default=0.0,
                    help="float phase: exponential moving average of the weights per optimizer step with this "
                         "decay (model_build.weight_average, e.g. 0.999); early stopping and the kept model use "
                         "the averaged weights, QAT starts from them; 0 = off, the shipped recipe")
    ap.add_argument("--qat-epochs", type=int, default=0,
                    help="quantisation-aware fine-tuning epochs after float training (model_build.qat: simulated "
                         "int8 rounding, straight-through gradient); 0 = none, the shipped recipe")
    ap.add_argument("--qat-lr", type=float, default=2e-4, help="learning rate of the QAT fine-tuning")
    ap.add_argument("--qat-control", action="store_true",
                    help="with --qat-epochs: the same fine-tuning with every simulated rounding off (a control for "
                         "what the extra low-learning-rate epochs do without QAT)")
    ap.add_argument("--qat-consistency", type=float, default=0.0,
                    help="with --qat-epochs: weight of KL(float || simulated int8) added to the QAT loss "
                         "(model_build.qat.consistency_kl; asks the two to agree); 0 = none")
    ap.add_argument("--qat-from", metavar="DIR", default=None,
                    help="with --qat-epochs: no float training, start each fold's QAT from the float model a CV run "
                         "of the same folds kept in DIR (its --out; same seed and fold), so the pair differs only "
                         "in QAT")
    ap.add_argument("--conditions", action="store_true",
                    help="robustness augmentation (model_build.augment: level, babble, coloured noise, band "
                         "limits, reverb, speed) instead of the speed/gain/white-noise copy; extra corpora "
                         "(--extra-corpora) enter as augmented copies with their absent classes masked")
    ap.add_argument("--p-noise", type=float, default=None, metavar="P",
                    help="with --conditions: probability that an augmented copy gets noise (default: "
                         "model_build.augment.AugmentConfig's, 0.6, the shipped recipe)")
    ap.add_argument("--p-babble", type=float, default=None, metavar="P",
                    help="with --conditions: probability that this noise is babble of 3-7 other training speakers "
                         "rather than white/pink/brown noise (default 0.5)")
    ap.add_argument("--snr-db", default=None, metavar="LO,HI",
                    help="with --conditions: SNR range of that noise in dB, drawn uniformly (default 0,30)")
    ap.add_argument("--extra-corpora", default="", help="with --conditions: comma list of manifest corpora "
                                                        "added to every fold's training set (tess,ased)")
    ap.add_argument("--no-mask", action="store_true", help="treat a corpus's absent classes as negatives")
    ap.add_argument("--calibrate", action="store_true", help="temperature-scale on the validation actors")
    ap.add_argument("--calibrate-level", choices=("window", "clip"), default="window",
                    help="with --calibrate: fit the temperature on single validation windows, or on the clip "
                         "probabilities the runtime reports (mean over speech windows; model_build.recalibrate)")
    ap.add_argument("--recalibrate-from", metavar="DIR", default=None,
                    help="no training: take each fold model kept in DIR (a CV run's --out), re-fit its temperature "
                         "on the fold's validation clips at the clip level, write it to --out and evaluate it "
                         "(recorded as --calibrate-level clip: the models are then what that option trains)")
    ap.add_argument("--input-range-percentile", type=float, default=0.0, metavar="P",
                    help="int8 input range from the [P, 100-P] percentiles of the calibration windows' values "
                         "(they are clipped to it before conversion; QAT rounds its input the same way; "
                         "model_build.convert.InputRange); 0 = their min/max, the converter's own rule")
    ap.add_argument("--robustness", action="store_true",
                    help="also score every fold's int8 model on its test clips at peak -35 / -1 dBFS, with babble "
                         "of the other test actors at 10 dB SNR and through a telephone band (bench/campaign.py's "
                         "conditions), and the expected calibration error of its clip confidences")
    ap.add_argument("--urdu", action="store_true",
                    help="score every fold's int8 model on all URDU clips (never in training; argmax over "
                         "URDU's 4 classes), peak-normalised to -21 dBFS (urdu4_uar_int8) and as recorded")
    ap.add_argument("--conv1", type=int, default=32, help="filters of the first convolution (32 = the shipped model)")
    ap.add_argument("--conv1-kernel", type=int, default=5, help="frames the first convolution sees per step (5 = shipped)")
    ap.add_argument("--frontend-version", type=int, default=0,
                    help="front-end algorithm_version (0: the runtime's default)")
    ap.add_argument("--lstm", type=int, default=64)
    ap.add_argument("--conv2", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.3)
    from model_build.models import POOLINGS  # numpy only

    ap.add_argument("--pooling", choices=POOLINGS, default="last",
                    help="how the LSTM's time steps are reduced (model_build.models.POOLINGS; last = shipped)")
    ap.add_argument("--distill-alpha", type=float, default=0.0,
                    help="knowledge distillation (model_build.distill): weight of the teacher's soft targets in the "
                         "student's loss (0 = off, the shipped recipe)")
    ap.add_argument("--distill-temperature", type=float, default=2.0, help="softmax temperature of the soft term")
    ap.add_argument("--distill-teacher-conv1", type=int, default=64, help="teacher's first convolution (filters)")
    ap.add_argument("--distill-teacher-conv", type=int, default=128, help="teacher's second convolution (filters)")
    ap.add_argument("--distill-teacher-lstm", type=int, default=128, help="teacher's LSTM units")
    ap.add_argument("--distill-teachers", default=None, metavar="DIR",
                    help="where each fold's float teacher is kept and reused from (default <--out>/teachers); "
                         "give every seed's run the same DIR to train one teacher per fold, not per seed")
    ap.add_argument("--distill-ensemble", default="", metavar="DIR[,DIR...]",
                    help="with --distill-alpha: the teacher is the ensemble (mean probability) of the float fold "
                         "models earlier CV runs of the same folds kept in these --out directories, instead of a "
                         "trained wider teacher")
    ap.add_argument("--ensemble-from", default="", metavar="DIR[:SEED][,DIR[:SEED]...]",
                    help="no training: each fold's model is the int8 ensemble (model_build.ensemble) of the fold "
                         "models these CV runs kept in their --out (only seed SEED's where given), temperature "
                         "fitted on the fold's validation clips; scored exactly like a single model (RAVDESS folds "
                         "only, no TESS). --seeds labels the member group (one group = one seed of the ensemble)")
    from model_build.ensemble import COMBINES  # numpy only at import

    ap.add_argument("--ensemble-combine", choices=COMBINES, default="mean_logits",
                    help="how --ensemble-from combines its members (bench/ensemble_combine.py measures both)")
    ap.add_argument("--results", default=str(RESULTS), help="output JSON (default bench/results/accuracy.json)")
    return ap


SUMMARY_KEYS = {"ravdess8_uar_float": "uar_float", "ravdess8_uar_float_fixed": "uar_float_fixed",
                "ravdess8_uar_int8": "uar_int8", "ravdess8_acc_int8": "acc_int8",
                "int8_float_agreement": "window_agreement_int8_vs_float_fixed",
                "int8_float_agreement_clip": "clip_agreement_int8_vs_float",
                "urdu4_uar_int8": "urdu4_uar_int8", "urdu4_uar_int8_raw": "urdu4_uar_int8_raw",
                "uar_nominal": "uar_nominal", "uar_peak_m35": "uar_peak_m35", "uar_peak_m1": "uar_peak_m1",
                "uar_babble_10db": "uar_babble_10db", "uar_telephone": "uar_telephone", "ece_clip": "ece_clip"}


def summarise_seeds(res: dict, folds: list[int]) -> dict:
    """Headline keys from the per-fold records of the seeds that completed every fold in ``folds``
    (a seed cut short would bias the mean towards its easier or harder folds); its folds stay
    listed under ``ravdess_folds`` and are counted in ``partial_seed_runs``."""
    runs = res.get("ravdess_folds", [])
    by_seed: dict[int, list[dict]] = {}
    for r in runs:
        by_seed.setdefault(int(r.get("seed", 0)), []).append(r)
    done = sorted(s for s, rs in by_seed.items() if sorted(r["fold"] for r in rs) == sorted(folds))
    use = [r for r in runs if int(r.get("seed", 0)) in done]
    # ``seeds`` is the number of complete seeds (what a goal compares); which ones is ``seeds_done``
    out = {"seeds": len(done), "seeds_done": done, "n_seeds": len(done), "partial_seed_runs": len(runs) - len(use)}
    if not use:
        return out
    out["n_folds_done"] = len(folds)
    for key, src in SUMMARY_KEYS.items():
        v = [r[src] for r in use if src in r]
        if v:
            out[key] = float(np.mean(v))
    per_seed = {s: float(np.mean([r["uar_int8"] for r in by_seed[s]])) for s in done}
    out["ravdess8_uar_int8_per_seed"] = per_seed
    # every headline key per seed (mean over its folds) and its sd across seeds (the run-to-run noise)
    out["per_seed"] = {s: {key: float(np.mean([r[src] for r in by_seed[s]])) for key, src in SUMMARY_KEYS.items()
                           if all(src in r for r in by_seed[s])} for s in done}
    if len(done) > 1:
        out["seed_sd"] = {key: float(np.std([out["per_seed"][s][key] for s in done], ddof=1))
                          for key in SUMMARY_KEYS if all(key in out["per_seed"][s] for s in done)}
    out["ravdess8_uar_int8_sd"] = float(np.std(list(per_seed.values()), ddof=1)) if len(done) > 1 else None
    out["ravdess8_uar_int8_fold_sd"] = float(np.std([r["uar_int8"] for r in use], ddof=1)) if len(use) > 1 else None
    return out


def effective_config(config: dict) -> dict:
    """A results file's ``config`` as the recipe its fold models end up with. ``--recalibrate-from``
    re-fits kept fold models' temperature at the clip level from their float weights, which is what
    ``--calibrate-level clip`` does right after training (:func:`run_split`), so such a run counts as
    ``calibrate_level: clip`` whatever it recorded (runs before :func:`parse_args` said so recorded
    the window default). Runs before ``--input-range-percentile`` count as its default (min/max)."""
    # runs before --input-range-percentile took the converter's min/max, which is its default 0
    config = {"input_range_percentile": 0.0, **config}
    if config.get("recalibrate_from"):
        return {**config, "calibrate_level": "clip"}
    return dict(config)


# options that do not change what a fold model is or how it is scored (a merge may differ in these);
# ``qat_from``: where each seed's kept float models of the same float recipe were read (each training
# seed's own CV folder, checked per fold by qat_start), not what was trained
_RUN_ONLY = {"seed", "seeds", "out", "results", "reuse_models", "resummarise", "merge", "recalibrate_from", "data",
             "recipe", "train", "distill_teachers", "ensemble_from", "qat_from"}


def record_fold_model(manifest_path: Path, manifest: dict, entry: dict) -> dict:
    """``manifest`` with ``entry`` listed (replacing an entry of the same name), written to ``manifest_path``.

    Re-reads the file under an exclusive lock first, so entries another process wrote meanwhile stay listed
    (two runs sharing one ``--out``, e.g. one seed's folds split between two processes); the write goes
    through a temporary file and a rename, so a reader never sees half a manifest."""
    import fcntl

    with open(manifest_path.with_name(manifest_path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        models = list(manifest["models"])
        if manifest_path.exists():
            disk = json.loads(manifest_path.read_text())
            if disk.get("fold_seed") == manifest["fold_seed"] and disk.get("frontend_hash") == manifest["frontend_hash"]:
                names = {m["name"] for m in models}
                models += [m for m in disk.get("models", []) if m["name"] not in names]
        out = {**manifest, "models": [m for m in models if m["name"] != entry["name"]] + [entry]}
        tmp = manifest_path.with_name(manifest_path.name + ".tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        tmp.replace(manifest_path)
    return out


def merge_results(paths: list[Path]) -> dict:
    """One results dict from CV runs of the same recipe that covered different seeds (e.g. seed 0
    scored earlier, seeds 1-2 later) or different folds of one seed (two processes sharing a seed's
    folds): their per-fold records side by side, the headline keys recomputed from the seeds that hold
    every fold of the union of the runs' ``--folds`` (:func:`summarise_seeds`). Refuses runs whose
    recipe or evaluation path differ, or that both hold the same (seed, fold)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    base = runs[0]
    res = {k: v for k, v in base.items() if k not in SUMMARY_KEYS}
    res["ravdess_folds"] = []
    seen: dict[tuple, str] = {}
    base_cfg = effective_config(base["config"])
    for p, r in zip(paths, runs):
        cfg = effective_config(r["config"])
        # --folds may differ: which folds a run covered is bookkeeping, the union is the CV (below)
        diff = sorted(k for k in set(base_cfg) | set(cfg)
                      if k not in _RUN_ONLY | {"folds"} and base_cfg.get(k) != cfg.get(k))
        if diff:
            raise SystemExit(f"--merge: {p} differs from {paths[0]} in {', '.join(diff)} (not the same recipe)")
        if bool(r["config"].get("ensemble_from")) != bool(base["config"].get("ensemble_from")):
            raise SystemExit(f"--merge: {p} and {paths[0]}: one holds ensembles (--ensemble-from), the other not")
        for key in ("eval_path", "window_policy", "speech_gate"):
            if r.get(key) != base.get(key):
                raise SystemExit(f"--merge: {p} has another {key} than {paths[0]}")
        for f in r["ravdess_folds"]:
            k = (int(f["seed"]), int(f["fold"]))
            if k in seen:
                raise SystemExit(f"--merge: seed {k[0]} fold {k[1]} is in both {seen[k]} and {p}")
            seen[k] = str(p)
            res["ravdess_folds"].append(f)
    res["ravdess_folds"].sort(key=lambda f: (f["seed"], f["fold"]))
    res["seeds"] = sorted({int(f["seed"]) for f in res["ravdess_folds"]})
    folds = sorted({int(v) for r in runs for v in str(r["config"]["folds"]).split(",")})
    res["config"] = {**base["config"], "seeds": ",".join(map(str, res["seeds"])), "folds": ",".join(map(str, folds))}
    res["merged_from"] = [{"file": str(p), "seeds": r.get("seeds"), "folds": r["config"].get("folds"),
                           "seconds": r.get("seconds"),
                           "reuse_models": r["config"].get("reuse_models"), "out": r["config"].get("out"),
                           **({"note": r["eval_path_note"]} if "eval_path_note" in r else {})}
                          for p, r in zip(paths, runs)]
    for k in ("seconds", "eval_path_note"):  # per run: kept under merged_from
        res.pop(k, None)
    res.update(summarise_seeds(res, folds))
    first_seed = min(int(f["seed"]) for f in res["ravdess_folds"])
    first = [f for f in res["ravdess_folds"] if f["seed"] == first_seed]
    res["clips_without_label_ravdess"] = int(sum(f["clips_without_label"] for f in first))
    res["clips_without_label"] = res["clips_without_label_ravdess"] + res.get("clips_without_label_tess", 0)
    return res


def validation_split(clips, train_all: np.ndarray, fold: int, fold_seed: int, val_folds: int = 5):
    """``(train, validation)`` clip indices of CV fold ``fold``'s training speakers ``train_all``: the validation
    speakers (early stopping, temperature) are the first of ``val_folds`` speaker folds of them, never divided."""
    from model_build.corpora import speaker_folds

    rest = [clips[i] for i in train_all]
    tr_rel, va_rel = speaker_folds(rest, k=val_folds, seed=fold_seed + 1 + fold)[0]
    return train_all[tr_rel], train_all[va_rel]


def parse_args(argv=None) -> argparse.Namespace:
    """Options; ``--recipe FILE.json`` supplies defaults (any option, by its dest name)."""
    ap = build_parser()
    first, _ = ap.parse_known_args(argv)
    if first.recipe:
        recipe = json.loads(Path(first.recipe).read_text())
        unknown = sorted(set(recipe) - set(vars(first)))
        if unknown:
            ap.error(f"--recipe {first.recipe}: unknown options {unknown}")
        ap.set_defaults(**recipe)
    args = ap.parse_args(argv)
    if not args.margin >= 0:  # a negative margin would reward sitting on the decision boundary
        ap.error(f"--margin {args.margin}: must be >= 0")
    if args.augment < 0:
        ap.error(f"--augment {args.augment}: must be >= 0 (augmented copies per clip)")
    noise_opts = [o for o in ("p_noise", "p_babble", "snr_db") if getattr(args, o) is not None]
    if noise_opts and not args.conditions:  # the older speed/gain/white-noise copy has no such knobs
        ap.error(f"--{noise_opts[0].replace('_', '-')}: only with --conditions (the robustness augmentation)")
    from model_build.augment import AugmentOptionError  # numpy only

    try:
        augment_config(args)
    except AugmentOptionError as e:  # name the option as typed, not the dataclass field
        ap.error(f"--{e.field.replace('_', '-')} {e.value}: {e.reason}")
    from model_build.train import check_lr_options

    try:
        check_lr_options(args.lr_schedule, args.lr_floor)
    except ValueError:
        ap.error(f"--lr-floor {args.lr_floor}: must be in [0, 1] (a fraction of the first learning rate)")
    from model_build.weight_average import check_decay

    try:
        check_decay(args.weight_ema)
    except ValueError:
        ap.error(f"--weight-ema {args.weight_ema}: must be 0 (off) or in (0, 1), e.g. 0.999")
    if args.val_folds < 2:
        ap.error(f"--val-folds {args.val_folds}: must be >= 2 (one fold validates, the rest train)")
    if args.qat_epochs < 0:
        ap.error(f"--qat-epochs {args.qat_epochs}: must be >= 0")
    if not (np.isfinite(args.qat_lr) and args.qat_lr > 0):
        ap.error(f"--qat-lr {args.qat_lr}: must be > 0")
    if args.qat_epochs and args.distill_alpha:
        ap.error("--qat-epochs with --distill-alpha: the QAT fine-tuning uses the hard loss only")
    if args.qat_epochs and args.pooling != "last":
        ap.error(f"--qat-epochs with --pooling {args.pooling}: QAT supports the shipped architecture (pooling last)")
    if not (np.isfinite(args.qat_consistency) and args.qat_consistency >= 0):
        ap.error(f"--qat-consistency {args.qat_consistency}: must be >= 0")
    if args.qat_consistency and (not args.qat_epochs or args.qat_control):
        ap.error("--qat-consistency needs --qat-epochs and no --qat-control (it compares float with simulated int8)")
    if args.qat_control and not args.qat_epochs:
        ap.error("--qat-control without --qat-epochs: nothing to fine-tune")
    from model_build.convert import InputRange  # numpy only

    try:
        InputRange(args.input_range_percentile)
    except ValueError as e:
        ap.error(f"--input-range-percentile {args.input_range_percentile}: {e}")
    if args.input_range_percentile and args.ensemble_from:
        ap.error("--input-range-percentile with --ensemble-from: the ensemble conversion keeps min/max")
    if args.recalibrate_from:  # what it does: the clip-level fit (see effective_config)
        args.calibrate_level = "clip"
    if args.qat_from:
        if not args.qat_epochs:
            ap.error("--qat-from without --qat-epochs: nothing to fine-tune")
        if not (Path(args.qat_from) / "manifest.json").is_file():
            ap.error(f"--qat-from {args.qat_from}: no manifest.json (the --out of a bench/accuracy.py run)")
        if Path(args.qat_from).resolve() == Path(args.out).resolve():
            ap.error(f"--qat-from {args.qat_from}: is --out; the fine-tuned models would overwrite their starting points")
    return args


def augment_config(args: argparse.Namespace):
    """The robustness augmentation (``--conditions``) these options ask for: ``AugmentConfig``'s
    defaults (the shipped recipe) with ``--p-noise``, ``--p-babble``, ``--snr-db`` where given."""
    from model_build.augment import AugmentConfig

    return AugmentConfig.from_options(p_noise=getattr(args, "p_noise", None), p_babble=getattr(args, "p_babble", None),
                                      snr_db=getattr(args, "snr_db", None))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.resummarise:  # recompute the headline keys of an existing results file
        path = Path(args.resummarise)
        res = json.loads(path.read_text())
        res.update(summarise_seeds(res, [int(v) for v in res["config"]["folds"].split(",")]))
        path.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps({k: res.get(k) for k in ("seeds_done", "partial_seed_runs", "ravdess8_uar_int8",
                                                  "ravdess8_uar_int8_sd")}))
        return 0

    if args.merge:  # combine runs that covered different seeds (no training, no scoring)
        res = merge_results([Path(p) for p in args.merge])
        Path(args.results).write_text(json.dumps(res, indent=1) + "\n")
        print("| seed | ravdess8_uar_int8 | int8_float_agreement | urdu4_uar_int8 | ece_clip |\n|---|---|---|---|---|")
        for sd, v in res.get("per_seed", {}).items():
            print(f"| {sd} | " + " | ".join(f"{v.get(k, float('nan')):.4f}" for k in
                                             ("ravdess8_uar_int8", "int8_float_agreement", "urdu4_uar_int8",
                                              "ece_clip")) + " |")
        print(f"| mean ± sd | {res['ravdess8_uar_int8']:.4f} ± {res.get('ravdess8_uar_int8_sd') or 0:.4f} | "
              f"{res['int8_float_agreement']:.4f} | {res.get('urdu4_uar_int8', float('nan')):.4f} | "
              f"{res.get('ece_clip', float('nan')):.4f} |")
        return 0

    from edge_runtime.frontend import FrontendConfig
    from model_build.corpora import leave_one_speaker_out, load_corpus, open_corpus, speaker_folds
    from model_build.features import fixed_point_features, float_twin_features
    from model_build.models import ModelConfig
    from edge_runtime.interpreter import min_arena_size
    from model_build.train import TrainConfig

    Path(args.out).mkdir(parents=True, exist_ok=True)
    fe = FrontendConfig(output=args.feature,
                        **({"algorithm_version": args.frontend_version} if args.frontend_version else {}))
    W = int(round(args.window * fe.sample_rate / fe.hop_length))
    H = W // 2
    TH = max(1, int(round(args.train_hop * fe.sample_rate / fe.hop_length)))
    mcfg = ModelConfig(arch="crnn", conv1=args.conv1, conv1_kernel=args.conv1_kernel, conv2=args.conv2, lstm=args.lstm,
                       dropout=args.dropout, pooling=args.pooling)
    tcfg = TrainConfig(epochs=args.epochs, patience=args.patience, seed=args.seed,
                       lr_schedule=args.lr_schedule, lr_floor=args.lr_floor,
                       label_smoothing=args.label_smoothing, focal_gamma=args.focal_gamma, margin=args.margin,
                       qat_epochs=args.qat_epochs, qat_lr=args.qat_lr, qat_control=args.qat_control,
                       qat_consistency=args.qat_consistency, weight_ema=args.weight_ema,
                       time_masks=args.time_masks,
                       freq_masks=args.freq_masks, mixup=args.mixup)
    from edge_runtime.classifier import DEFAULT_GATE
    from edge_runtime.window_policy import WindowPolicy

    res: dict = {"config": {**vars(args), "frontend": fe.to_dict(), "window_frames": W, "hop_frames": H,
                            "model": mcfg.to_dict(), "train": tcfg.to_dict(),
                            **({"augment_config": augment_config(args).to_dict()} if args.conditions else {})},
                 # how the clip labels were made: the runtime's StreamingClassifier (what `ser-edge run` does)
                 "eval_path": "runtime", "window_policy": WindowPolicy().resolve(W, H).to_dict(),
                 "speech_gate": DEFAULT_GATE.to_dict(), "ravdess_folds": []}
    manifest_path = Path(args.out) / "manifest.json"
    # other runs' models kept in --out (same folds, same front end) stay listed: record_fold_model merges them
    manifest = {"corpus": "ravdess", "fold_seed": args.fold_seed, "k": 5, "data": args.data,
                "frontend_hash": fe.hash, "models": []}

    out_json = Path(args.results)

    def save():
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(res, indent=1) + "\n")

    t0 = time.time()
    idx = open_corpus(Path(args.data) / "ravdess")
    clips, audios, _ = load_corpus(idx, progress=True)
    labels = tuple(idx.labels)
    feats = fixed_point_features(audios, fe)
    twin = float_twin_features(audios, fe)
    folds = speaker_folds(clips, k=5, seed=args.fold_seed)
    extra = None
    extra_corpora = None
    if args.conditions and not args.ensemble_from:  # an ensemble trains nothing: no training corpora
        from model_build.recipe import CorpusData, extra_set

        lab = {l: i for i, l in enumerate(labels)}
        corpora = []
        for name in [c for c in args.extra_corpora.split(",") if c]:
            cc, ca, _ = load_corpus(open_corpus(args.data, name), progress=True)
            keep = [i for i, c in enumerate(cc) if c.label in lab]
            corpora.append(CorpusData(name, tuple(cc[i] for i in keep), tuple(ca[i] for i in keep),
                                      np.array([lab[cc[i].label] for i in keep])))
            log(f"{name} in every fold's training set (augmented copies): {len(keep)} clips")
        extra_corpora = corpora  # their augmented copies are made per seed below
    elif args.train_tess:
        from model_build.features import augmented_copies

        tidx = open_corpus(Path(args.data) / "tess")
        tclips, taudios, _ = load_corpus(tidx, progress=True)
        lab = {l: i for i, l in enumerate(labels)}
        keep = [i for i, c in enumerate(tclips) if c.label in lab]
        tx = fixed_point_features([taudios[i] for i in keep], fe)
        ty = [lab[tclips[i].label] for i in keep]
        if args.tess_augment:
            cps = augmented_copies([taudios[i] for i in keep], args.tess_augment, seed=args.seed + 100)
            tx += fixed_point_features([a for cs in cps for a in cs], fe)
            ty += [t for t in ty for _ in range(args.tess_augment)]
        extra = (tx, ty)
        log(f"TESS in every fold's training set: {len(tx)} clips mapped to {sorted({tclips[i].label for i in keep})}")
    urdu = None
    if args.urdu:
        from model_build.augment import set_peak

        uc, ua, _ = load_corpus(open_corpus(args.data, "urdu"), progress=True)
        lab = {l: i for i, l in enumerate(labels)}
        u_m21 = [np.clip(np.rint(set_peak(np.asarray(a, np.float64) / 32768, -21.0) * 32768), -32768, 32767)
                 .astype(np.int16) for a in ua]
        urdu = {"y": np.array([lab[c.label] for c in uc]), "classes": sorted({lab[c.label] for c in uc}),
                "m21": fixed_point_features(u_m21, fe), "raw": fixed_point_features(ua, fe),
                "m21_audio": u_m21, "raw_audio": list(ua)}
    from dataclasses import replace as _replace

    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    res["seeds"] = seeds
    agree, uar_f, uar_fx, uar_q, accs = [], [], [], [], []
    for seed in seeds:
        args.seed = seed
        tcfg = _replace(tcfg, seed=seed)
        extra_s = None
        if args.conditions and extra_corpora and not args.recalibrate_from and not args.ensemble_from:
            # the same augmented copies in every fold (extra corpora never hold test speakers)
            extra_s = extra_set(extra_corpora, len(labels), fe, copies=args.augment, seed=seed,
                                augment=augment_config(args), mask_absent=not args.no_mask)
        for f in [int(v) for v in args.folds.split(",") if v.strip()]:
            train_all, te = folds[f]
            tr, va = validation_split(clips, train_all, f, args.fold_seed, args.val_folds)
            log(f"== seed {seed} RAVDESS fold {f}: test {sorted({clips[i].speaker for i in te})}, "
                f"val {sorted({clips[i].speaker for i in va})} [{time.time() - t0:.0f}s, rss {rss_mb():.0f} MB]")
            name = f"ravdess_s{seed}_fold{f}"
            members = ensemble_fold_members(args, f, sorted({clips[i].speaker for i in te}),
                                            sorted({clips[i].speaker for i in va}), fe.hash)
            tm, val = run_split(name, clips, audios, feats, twin, labels, tr, va, te, fe, args, W, H, TH,
                                mcfg, tcfg, extra=extra, extra_corpora=extra_s, teacher_name=f"ravdess_fold{f}",
                                teacher_members=ensemble_members(args, f, sorted({clips[i].speaker for i in te}),
                                                                 fe.hash), ensemble=members)
            manifest = record_fold_model(manifest_path, manifest, {
                "name": name, "seed": seed, "fold": f, "path": f"{name}.tflite",
                "test_speakers": sorted({clips[i].speaker for i in te}),
                "validation_speakers": sorted({clips[i].speaker for i in va})})
            rows = val["rows"]
            fold = {"seed": seed, "fold": f, "test_speakers": sorted({clips[i].speaker for i in te}),
                    "uar_float": rows["keras_float_twin"]["uar"], "uar_float_fixed": rows["keras_float_fixed"]["uar"],
                    "uar_int8": rows["int8_litert"]["uar"], "acc_int8": rows["int8_litert"]["accuracy"],
                    "window_agreement_int8_vs_float_fixed": rows["int8_litert"]["window_agreement_vs_float_fixed"],
                    "window_agreement_int8_vs_float": rows["int8_litert"]["window_agreement_vs_float"],
                    "clip_agreement_int8_vs_float": rows["int8_litert"]["clip_agreement_vs_float"],
                    "per_class_recall_int8": {k: v["recall"] for k, v in rows["int8_litert"]["per_class"].items()},
                    "best_epoch": tm.best_epoch + 1, "epochs_run": len(tm.history["loss"]),
                    "model_bytes": len(tm.model_bytes),
                    "clips_without_label": rows["int8_litert"]["clips_without_label"],
                    "speech_windows": val["speech_windows"], "windows": val["n_windows"],
                    "ece_clip_int8": val["ece_clip_int8"]}
            if "tflm_vs_litert" in val:
                fold["tflm_vs_litert"] = val["tflm_vs_litert"]
            if members:  # which kept models this fold's ensemble combined, and how
                fold["ensemble"] = {"members": [str(p) for p in members], **{
                    k: tm.metadata["ensemble"][k] for k in ("combine", "members")}}
            if urdu is not None:
                from model_build.evaluate import int8_clip_probs, restricted_uar

                q = {k: tm.metadata[k] for k in ("input_scale", "input_zero_point", "output_scale", "output_zero_point")}
                for key, name in (("m21", "urdu4_uar_int8"), ("raw", "urdu4_uar_int8_raw")):
                    pu = int8_clip_probs(tm.model_bytes, urdu[key], audios=urdu[key + "_audio"])
                    fold[name] = restricted_uar(pu, urdu["y"], urdu["classes"], list(labels))
            if "calibration" in tm.metadata:
                fold["calibration"] = tm.metadata["calibration"]
            if "distillation" in tm.metadata:
                # the teacher's and the student's best validation clip UAR: did the teacher know more?
                fold["teacher"] = tm.metadata["distillation"]["teacher_run"]
                fold["student_val_uar"] = max(tm.history.get("val_uar") or [float("nan")])
            if args.robustness:
                from campaign import CONDITIONS, condition_audio
                from model_build.calibrate import expected_calibration_error
                from model_build.evaluate import int8_clip_probs, metrics

                q = {k: tm.metadata[k] for k in ("input_scale", "input_zero_point", "output_scale", "output_zero_point")}
                te_spk = [clips[i].speaker for i in te]
                yte = np.array([labels.index(clips[i].label) for i in te])
                for cond in CONDITIONS:
                    ca = condition_audio([audios[i] for i in te], te_spk, cond, 0)
                    cf = fixed_point_features(ca, fe, progress=False)
                    pc = int8_clip_probs(tm.model_bytes, cf, audios=ca)
                    fold[f"uar_{cond}"] = metrics(yte, pc.argmax(1), list(labels))["uar"]
                    if cond == "nominal":
                        fold["ece_clip"] = expected_calibration_error(pc, yte)
            res["ravdess_folds"].append(fold)
            uar_f.append(fold["uar_float"]); uar_fx.append(fold["uar_float_fixed"]); uar_q.append(fold["uar_int8"])
            agree.append(fold["window_agreement_int8_vs_float_fixed"]); accs.append(fold["acc_int8"])
            res["clips_without_label_ravdess"] = int(sum(x["clips_without_label"] for x in res["ravdess_folds"]
                                                         if x["seed"] == seeds[0]))
            res["clips_without_label"] = res["clips_without_label_ravdess"] + res.get("clips_without_label_tess", 0)
            res.update({"ravdess8_uar_float": float(np.mean(uar_f)), "ravdess8_uar_float_fixed": float(np.mean(uar_fx)),
                        "ravdess8_uar_int8": float(np.mean(uar_q)), "ravdess8_acc_int8": float(np.mean(accs)),
                        "int8_float_agreement": float(np.mean(agree)),
                        "int8_float_agreement_clip": float(np.mean([x["clip_agreement_int8_vs_float"] for x in res["ravdess_folds"]])),
                        "model_bytes": len(tm.model_bytes), "params": tm.params, "n_folds_done": len(uar_q)})
            if args.robustness:
                from campaign import CONDITIONS

                for k in [f"uar_{c}" for c in CONDITIONS] + ["ece_clip"]:
                    res[k] = float(np.mean([x[k] for x in res["ravdess_folds"]]))
            if urdu is not None:
                res["urdu4_uar_int8"] = float(np.mean([x["urdu4_uar_int8"] for x in res["ravdess_folds"]]))
                res["urdu4_uar_int8_raw"] = float(np.mean([x["urdu4_uar_int8_raw"] for x in res["ravdess_folds"]]))
            # once a seed has run every fold, the headline keys come from complete seeds only
            res.update(summarise_seeds(res, [int(v) for v in args.folds.split(",")]))
            if "tflm_arena_bytes" not in res:
                if members and args.ensemble_combine == "mean_prob":  # int8 EXP/LOG: no TFLite Micro kernels
                    res["tflm_arena_bytes"] = None
                    res["tflm_note"] = "mean_prob ensemble: TFLite Micro has no int8 EXP/LOG kernels (LiteRT only)"
                else:
                    res["tflm_arena_bytes"] = min_arena_size(tm.model_bytes)["arena_bytes"]
            save()
            log(f"fold {f}: UAR float {fold['uar_float']:.3f} float-fixed {fold['uar_float_fixed']:.3f} "
                f"int8 {fold['uar_int8']:.3f}; agreement {fold['window_agreement_int8_vs_float_fixed']:.4f} "
                f"[{time.time() - t0:.0f}s]")

    if not args.no_tess and not args.ensemble_from:  # ensembles of kept RAVDESS fold models: RAVDESS only
        tidx = open_corpus(Path(args.data) / "tess")
        tclips, taudios, _ = load_corpus(tidx, progress=True)
        tlabels = tuple(lab for lab in tidx.labels if lab in {c.label for c in tclips})
        tfeats = fixed_point_features(taudios, fe)
        ttwin = float_twin_features(taudios, fe)
        tess = []
        for spk, tr_all, te in leave_one_speaker_out(tclips):
            # one speaker trains: hold out 20% of its *words* for early stopping (same voice, other words)
            words = sorted({tclips[i].statement for i in tr_all})
            rng = np.random.default_rng(args.seed)
            vw = set(rng.choice(words, max(1, len(words) // 5), replace=False))
            va = np.array([i for i in tr_all if tclips[i].statement in vw])
            tr = np.array([i for i in tr_all if tclips[i].statement not in vw])
            log(f"== TESS: test {spk} [{time.time() - t0:.0f}s]")
            tm, val = run_split(f"tess_test_{spk.split('/')[-1]}", tclips, taudios, tfeats, ttwin, tlabels, tr, va,
                                te, fe, args, W, H, TH, mcfg, tcfg)
            tess.append({"test_speaker": spk, "acc_int8": val["rows"]["int8_litert"]["accuracy"],
                         "acc_float": val["rows"]["keras_float_twin"]["accuracy"],
                         "uar_int8": val["rows"]["int8_litert"]["uar"],
                         "clips": int(len(te)), "clips_without_label": val["rows"]["int8_litert"]["clips_without_label"]})
            res["tess_loso"] = tess
            res["tess7_acc_int8"] = float(np.mean([t["acc_int8"] for t in tess]))
            res["clips_without_label_tess"] = int(sum(t["clips_without_label"] for t in tess))
            res["clips_without_label"] = res.get("clips_without_label_ravdess", 0) + res["clips_without_label_tess"]
            save()
    res["seconds"] = round(time.time() - t0)
    save()
    keys = ("ravdess8_uar_float", "ravdess8_uar_float_fixed", "ravdess8_uar_int8", "ravdess8_uar_int8_sd",
            "tess7_acc_int8", "clips_without_label", "int8_float_agreement", "model_bytes", "tflm_arena_bytes",
            "params")
    print("| metric | value |\n|---|---|")
    for k in keys:
        if k in res:
            v = res[k]
            print(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
