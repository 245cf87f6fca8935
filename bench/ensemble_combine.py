"""How should an ensemble's members be combined? Mean probability vs mean logits, in float, per CV fold.

For every fold of a ``bench/accuracy.py`` CV whose ``--out`` kept several seeds' fold models, the
members of that fold (``--seeds``) are combined by each rule of :data:`model_build.ensemble.COMBINES`
with the same graph :func:`model_build.ensemble.ensemble_graph` converts to int8, here its float
twin, and scored through the runtime path (:func:`model_build.evaluate.runtime_eval`: window policy,
speech gate, mean-log-probability clip label; fixed-point front-end features) on the fold's
**validation** actors (the ones every seed used for early stopping: the choice is made there) and
its **test** actors (reported), next to the members alone (mean over members). A temperature does
not move a clip label, so none is fitted here.

    python bench/ensemble_combine.py --members ../model2/runs/cv_seeds --seeds 0,1,2

Prints a Markdown table and writes ``bench/results/ensemble_combine.json``.
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
RESULTS = ROOT / "bench" / "results" / "ensemble_combine.json"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", required=True, help="a CV run's --out holding several seeds' fold models")
    ap.add_argument("--seeds", default="0,1,2", help="the member seeds (one member per seed and fold)")
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--data", default=os.environ.get("SER_EDGE_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--results", default=str(RESULTS))
    a = ap.parse_args(argv)

    from edge_runtime.model_metadata import read_metadata
    from model_build.corpora import load_corpus, open_corpus
    from model_build.ensemble import COMBINES, _float_members, _members, ensemble_graph
    from model_build.evaluate import KerasWindowModel, metrics, runtime_eval
    from model_build.features import fixed_point_features

    d = Path(a.members)
    manifest = json.loads((d / "manifest.json").read_text())
    seeds = [int(s) for s in a.seeds.split(",")]
    idx = open_corpus(Path(a.data) / "ravdess")
    clips, audios, _ = load_corpus(idx, progress=True)
    feats = None
    rows = []
    for f in [int(v) for v in a.folds.split(",")]:
        ents = sorted((m for m in manifest["models"] if int(m["fold"]) == f and int(m["seed"]) in seeds),
                      key=lambda m: m["seed"])
        if sorted(int(m["seed"]) for m in ents) != sorted(seeds):
            raise SystemExit(f"{d}: fold {f} lacks seeds {sorted(set(seeds) - {int(m['seed']) for m in ents})}")
        for key in ("test_speakers", "validation_speakers"):
            if len({tuple(sorted(m[key])) for m in ents}) != 1:
                raise SystemExit(f"{d}: fold {f} members have different {key}")
        meta = read_metadata((d / ents[0]["path"]).read_bytes())
        if feats is None:
            feats = fixed_point_features(audios, meta.frontend_config())
        members = _members([d / (Path(m["path"]).stem + "_float.npz") for m in ents])
        row = {"fold": f, "test_speakers": ents[0]["test_speakers"],
               "validation_speakers": ents[0]["validation_speakers"], "members": [m["name"] for m in ents]}
        models = {c: ensemble_graph(_float_members(members), c) for c in COMBINES}
        singles = [KerasWindowModel(k, meta) for k, _, _, _ in members]
        for split in ("validation", "test"):
            spk = set(ents[0][f"{split}_speakers"])
            sel = [i for i, c in enumerate(clips) if c.speaker in spk]
            y = np.array([list(meta.labels).index(clips[i].label) for i in sel])
            A, F = [audios[i] for i in sel], [feats[i] for i in sel]
            for c, m in models.items():
                r = runtime_eval(KerasWindowModel(m, meta), A, F)
                row[f"{split}_uar_{c}"] = metrics(y, r.pred, list(meta.labels))["uar"]
            row[f"{split}_uar_single"] = float(np.mean([metrics(y, runtime_eval(s, A, F).pred, list(meta.labels))["uar"]
                                                        for s in singles]))
        rows.append(row)
        log(f"fold {f}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith(("_single",) + COMBINES)))
    out = {"members": str(d), "seeds": seeds, "eval_path": "runtime (float Keras, fixed-point features, gate on)",
           "folds": rows}
    for split in ("validation", "test"):
        for c in (*COMBINES, "single"):
            out[f"{split}_uar_{c}"] = float(np.mean([r[f"{split}_uar_{c}"] for r in rows]))
    out["chosen_on_validation"] = max(COMBINES, key=lambda c: out[f"validation_uar_{c}"])
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    Path(a.results).write_text(json.dumps(out, indent=1) + "\n")
    print("| fold | split | " + " | ".join(COMBINES) + " | single (mean of members) |\n|---|---|" + "---|" * (len(COMBINES) + 1))
    for r in rows + [{"fold": "mean", **out}]:
        for split in ("validation", "test"):
            print(f"| {r['fold']} | {split} | " + " | ".join(f"{r[f'{split}_uar_{c}']:.3f}" for c in (*COMBINES, "single"))
                  + " |")
    print(f"chosen on the validation actors: {out['chosen_on_validation']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
