"""How good were the distillation teachers? Each fold's float teacher on that fold's test actors.

A distilled student can only learn what its teacher knows. ``bench/accuracy.py --distill-*`` keeps
one float teacher per fold (``--distill-teachers DIR``), or takes an ensemble of the fold models
earlier CV runs kept (``--distill-ensemble DIR``: here ``--ensemble DIR``, their mean probability,
:class:`model_build.distill.MeanProbabilityEnsemble`); this scores each fold's teacher on its fold's
RAVDESS test actors through the runtime path (``model_build.evaluate.runtime_eval`` with the
Keras model behind :class:`~model_build.evaluate.KerasWindowModel`: the same window policy, speech
gate and clip rule as ``ser-edge run``, fixed-point front-end features), next to the float and
int8 clip UAR of the distilled students (``--distill``, a ``bench/accuracy.py`` results file) and
of the shipped recipe (``--base``) on the same folds, mean over the seeds each file holds. The
teachers are float models, never converted: their row is a ceiling for the student, not a device
figure.

    python bench/distill_teachers.py --models runs/cv_distill_s0 --teachers runs/teachers \\
        --distill bench/results/accuracy_distill.json --base bench/results/accuracy_preqat.json
    python bench/distill_teachers.py --models runs/cv_distill_ens_s0 --ensemble runs/ensemble_base \\
        --distill bench/results/accuracy_distill_ens.json --base bench/results/accuracy_preqat.json \\
        --results bench/results/distill_teachers_ens.json

Prints a Markdown table and writes ``bench/results/distill_teachers.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "distill_teachers.json"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fold_means(results: dict, key: str) -> dict[int, float]:
    """``{fold: mean of key over the seeds}`` from a ``bench/accuracy.py`` results dict."""
    by: dict[int, list[float]] = {}
    for r in results.get("ravdess_folds", []):
        if key in r:
            by.setdefault(int(r["fold"]), []).append(float(r[key]))
    return {f: float(np.mean(v)) for f, v in by.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="a distillation CV run's --out (manifest.json + fold models)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--teachers", help="the run's --distill-teachers directory (one trained teacher per fold)")
    src.add_argument("--ensemble", help="the run's --distill-ensemble directory (a CV run's --out: the teacher of "
                                        "a fold is the mean probability of its kept models of that fold)")
    ap.add_argument("--distill", required=True, help="bench/accuracy.py results of the distilled students")
    ap.add_argument("--base", required=True, help="bench/accuracy.py results of the shipped recipe")
    ap.add_argument("--data", default=os.environ.get("SER_EDGE_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--results", default=str(RESULTS))
    a = ap.parse_args(argv)

    from edge_runtime.model_metadata import read_metadata
    from model_build.corpora import load_corpus, open_corpus
    from model_build.distill import MeanProbabilityEnsemble, load_teacher
    from model_build.pipeline import load_float
    from model_build.evaluate import KerasWindowModel, metrics, runtime_eval
    from model_build.features import fixed_point_features
    from model_build.models import count_params

    manifest_path = Path(a.models) / "manifest.json"
    if not manifest_path.exists():
        raise SystemExit(f"{manifest_path}: no such file (--models must be a bench/accuracy.py --out)")
    manifest = json.loads(manifest_path.read_text())
    first = {}  # one student model per fold: its metadata fixes labels, window and front end
    for m in sorted(manifest["models"], key=lambda m: (m["seed"], m["fold"])):
        first.setdefault(int(m["fold"]), m)
    idx = open_corpus(Path(a.data) / "ravdess")
    clips, audios, _ = load_corpus(idx, progress=True)
    fe = None
    feats = None
    rows = []
    for f, m in sorted(first.items()):
        meta = read_metadata((Path(a.models) / m["path"]).read_bytes())
        if fe is None:
            fe = meta.frontend_config()
            feats = fixed_point_features(audios, fe)
        if a.teachers:
            tpath = Path(a.teachers) / f"fs{manifest['fold_seed']}_ravdess_fold{f}.npz"
            teacher = load_teacher(tpath)
            if teacher is None:
                raise SystemExit(f"{tpath}: no kept teacher for fold {f}")
            info = json.loads(tpath.with_suffix(".json").read_text())
            params = count_params(teacher)
        else:
            ens = json.loads((Path(a.ensemble) / "manifest.json").read_text())
            members = [Path(a.ensemble) / (Path(e["path"]).stem + "_float.npz") for e in ens["models"]
                       if int(e["fold"]) == f and sorted(e["test_speakers"]) == sorted(m["test_speakers"])]
            if not members:
                raise SystemExit(f"{a.ensemble}: no kept model of fold {f} with test actors {m['test_speakers']}")
            keras_members = [load_float(p)[0] for p in members]
            teacher = MeanProbabilityEnsemble(keras_members)
            info = {"teacher": {"kind": "ensemble", "members": [str(p) for p in members]}}
            params = sum(count_params(k) for k in keras_members)
        te = [i for i, c in enumerate(clips) if c.speaker in set(m["test_speakers"])]
        y = np.array([list(meta.labels).index(clips[i].label) for i in te])
        r = runtime_eval(KerasWindowModel(teacher, meta), [audios[i] for i in te], [feats[i] for i in te],
                         progress=f"teacher fold {f}")
        uar = metrics(y, r.pred, list(meta.labels))["uar"]
        rows.append({"fold": f, "test_speakers": m["test_speakers"], "teacher_uar_float_fixed": uar,
                     "teacher_val_uar": info.get("val_uar"), "teacher_best_epoch": info.get("best_epoch"),
                     "teacher_params": params, "teacher": info["teacher"]})
        log(f"fold {f}: teacher float UAR {uar:.3f} on {m['test_speakers']}")
    dist, base = json.loads(Path(a.distill).read_text()), json.loads(Path(a.base).read_text())
    seeds = sorted({int(r["seed"]) for r in dist["ravdess_folds"]})
    for name, res in (("student", dist), ("base", base)):
        for key in ("uar_float_fixed", "uar_int8"):
            fm = fold_means({"ravdess_folds": [r for r in res["ravdess_folds"] if int(r["seed"]) in seeds]}, key)
            for row in rows:
                row[f"{name}_{key}"] = fm.get(row["fold"])
    out = {"teachers": a.teachers or a.ensemble, "teacher_kind": "trained" if a.teachers else "ensemble",
           "models": a.models, "distill": a.distill, "base": a.base,
           "seeds_of_students": seeds, "eval_path": "runtime (float Keras teacher, fixed-point features)",
           "folds": rows}
    for key in ("teacher_uar_float_fixed", "student_uar_float_fixed", "student_uar_int8", "base_uar_float_fixed",
                "base_uar_int8"):
        v = [r[key] for r in rows if r.get(key) is not None]
        if v:
            out[key] = float(np.mean(v))
    Path(a.results).write_text(json.dumps(out, indent=1) + "\n")
    print("| fold | teacher float | student float / int8 | base float / int8 |\n|---|---|---|---|")
    for r in rows + [{"fold": "mean", **{k: out.get(k) for k in out if k.endswith(("float_fixed", "int8"))}}]:
        g = lambda k: f"{r[k]:.3f}" if r.get(k) is not None else "—"  # noqa: E731
        print(f"| {r['fold']} | {g('teacher_uar_float_fixed')} | {g('student_uar_float_fixed')} / "
              f"{g('student_uar_int8')} | {g('base_uar_float_fixed')} / {g('base_uar_int8')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
