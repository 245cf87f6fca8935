"""Recipe campaign: training options compared on RAVDESS actor folds, several seeds, paired by fold.

A *screening* protocol, cheaper than the 5-fold int8 CV of bench/accuracy.py so that several options
fit the machine's time: each run trains the float model (tf-keras) of one option on one fold with one
seed and scores the held-out actors' clips (mean of window probabilities, no gate) as recorded and
under the robustness conditions (peak at -35 / -1 dBFS, babble of the other test actors at 10 dB SNR,
telephone band), plus URDU-4 (every URDU clip peak-normalised to -21 dBFS, never in training; argmax
over URDU's 4 classes). Folds are fixed (``speaker_folds(seed=0)``, the validation actors as in
bench/accuracy.py); the seed changes initialisation, shuffling and the augmentation draw. The
option that wins here is then cross-validated on all 5 folds with >= 3 seeds, int8 through the
runtime (bench/accuracy.py), before it ships.

    python bench/campaign.py --options base,ased,ased_ls,ased_k9 --folds 0,1 --seeds 0,1,2

Results: bench/results/campaign.json (one entry per run, written after each run; finished runs
are skipped on restart) and a Markdown table of mean +- sd per option, with paired differences to
the first option.
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

RESULTS = ROOT / "bench" / "results" / "campaign.json"

# option name -> recipe overrides (see Recipe below)
OPTIONS: dict[str, dict] = {
    "base": {},  # RAVDESS + TESS, robustness augmentation, plain cross-entropy
    "ased": {"ased": True},  # + ASED, its absent classes masked out of the loss
    "ased_ls": {"ased": True, "label_smoothing": 0.1},
    "ased_focal": {"ased": True, "focal_gamma": 2.0},
    "ased_k9": {"ased": True, "conv1_kernel": 9},  # wider first convolution (9 frames, 144 ms)
    "ased_nomask": {"ased": True, "mask": False},  # ASED's absent classes act as negatives
}
CONDITIONS = ("nominal", "peak_m35", "peak_m1", "babble_10db", "telephone")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def recipe(name: str) -> dict:
    base = {"ased": False, "mask": True, "label_smoothing": 0.0, "focal_gamma": 0.0, "conv1_kernel": 5,
            "conv1": 32, "conv2": 64, "lstm": 64, "dropout": 0.3}
    return {**base, **OPTIONS[name]}


def condition_audio(audios, speakers, cond: str, seed: int):
    """The test clips under one robustness condition (int16)."""
    from model_build import augment as A

    if cond == "nominal":
        return list(audios)
    out = []
    for i, a in enumerate(audios):
        x = np.asarray(a, np.float64) / 32768.0
        rng = np.random.default_rng([seed, i, 17])
        if cond == "peak_m35":
            x = A.set_peak(x, -35.0)
        elif cond == "peak_m1":
            x = A.set_peak(x, -1.0)
        elif cond == "telephone":
            x = A.telephone(x)
        elif cond == "babble_10db":
            pool = [b for b, s in zip(audios, speakers) if s != speakers[i]]
            x = A.add_noise(x, A.babble(pool, x.size, 4, rng), 10.0)
        else:
            raise ValueError(cond)
        out.append(np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16))
    return out


def clip_uar(model, feats, y, fe, W, H, classes=None) -> float:
    from model_build.evaluate import metrics
    from model_build.features import to_real
    from model_build.windows import aggregate, make_windows, silence_frame

    Q, ci, _ = make_windows(feats, W, H, silence_frame(fe))
    p = aggregate(model.predict(to_real(Q, fe), batch_size=256, verbose=0), ci, len(feats))
    if classes is not None:  # restrict the decision to a corpus's own classes
        m = np.zeros(p.shape[1], bool)
        m[list(classes)] = True
        p = np.where(m[None, :], p, -1.0)
    return metrics(y, p.argmax(1), list(range(p.shape[1])))["uar"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parents[1] / "shared" / "data"))
    ap.add_argument("--options", default="base,ased,ased_ls,ased_k9")
    ap.add_argument("--folds", default="0,1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--train-hop", type=float, default=0.5)
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)

    from edge_runtime.frontend import FrontendConfig
    from model_build.augment import AugmentConfig, augmented_copies, set_peak
    from model_build.corpora import RAVDESS8, load_corpus, open_corpus, speaker_folds
    from model_build.features import fixed_point_features
    from model_build.models import ModelConfig
    from model_build.train import TrainConfig, train
    from model_build.windows import make_windows, silence_frame
    from model_build.features import to_real

    out = Path(args.results)
    res = json.loads(out.read_text()) if out.exists() else {"runs": []}
    done = {(r["option"], r["fold"], r["seed"]) for r in res["runs"]}
    fe = FrontendConfig()
    W = int(round(2.0 * fe.sample_rate / fe.hop_length))
    H = W // 2
    TH = max(1, int(round(args.train_hop * fe.sample_rate / fe.hop_length)))
    res["protocol"] = {
        "what": "float tf-keras model, clip UAR (mean of window probabilities, no gate) of the fold's test actors",
        "folds": args.folds, "seeds": args.seeds, "epochs": args.epochs, "patience": args.patience,
        "train_hop_s": args.train_hop, "window_frames": W, "hop_frames": H, "frontend": fe.to_dict(),
        "frontend_hash": fe.hash, "augment": AugmentConfig().to_dict(),
        "training_set": "RAVDESS train actors (raw + 1 augmented copy) + TESS (1 augmented copy) "
                        "[+ ASED (1 augmented copy)]; early stopping on the validation actors' clip UAR"}
    labels = RAVDESS8
    lab = {l: i for i, l in enumerate(labels)}
    t0 = time.time()
    data = Path(args.data)
    corp = {}
    for name in ("ravdess", "tess", "ased", "urdu"):
        clips, audios, _ = load_corpus(open_corpus(data, name), progress=True)
        keep = [i for i, c in enumerate(clips) if c.label in lab]
        corp[name] = ([clips[i] for i in keep], [audios[i] for i in keep])
        log(f"{name}: {len(keep)} clips [{time.time() - t0:.0f}s]")
    rclips, raud = corp["ravdess"]
    ry = np.array([lab[c.label] for c in rclips])
    rfeats = fixed_point_features(raud, fe)
    folds = speaker_folds(rclips, k=5, seed=0)
    uclips, uaud = corp["urdu"]
    uy = np.array([lab[c.label] for c in uclips])
    ufeats = fixed_point_features([(np.clip(np.rint(set_peak(np.asarray(a, np.float64) / 32768, -21.0) * 32768),
                                            -32768, 32767)).astype(np.int16) for a in uaud], fe)
    urdu_classes = sorted({lab[c.label] for c in uclips})

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")

    options = args.options.split(",")
    for f in [int(v) for v in args.folds.split(",")]:
        train_all, te = folds[f]
        rest = [rclips[i] for i in train_all]
        tr_rel, va_rel = speaker_folds(rest, k=5, seed=1 + f)[0]
        tr, va = train_all[tr_rel], train_all[va_rel]
        te_spk = [rclips[i].speaker for i in te]
        cond_feats = {c: fixed_point_features(condition_audio([raud[i] for i in te], te_spk, c, 0), fe,
                                              progress=False) for c in CONDITIONS}
        Vq, vci, _ = make_windows([rfeats[i] for i in va], W, H, silence_frame(fe))
        for seed in [int(v) for v in args.seeds.split(",")]:
            memo: dict = {}  # augmented training features per extra-corpus set, shared by options
            for opt in options:
                if (opt, f, seed) in done:
                    continue
                rc = recipe(opt)
                t1 = time.time()
                extra = ("tess",) + (("ased",) if rc["ased"] else ())
                if extra not in memo:
                    # RAVDESS train actors raw, + one augmented copy of every training clip; babble
                    # only from training speakers
                    pool_a = [raud[i] for i in tr]
                    pool_s = [rclips[i].speaker_key for i in tr]
                    pool_y = list(ry[tr])
                    pool_c = ["ravdess"] * len(tr)
                    for name in extra:
                        cl, au = corp[name]
                        pool_a += au
                        pool_s += [c.speaker_key for c in cl]
                        pool_y += [lab[c.label] for c in cl]
                        pool_c += [name] * len(cl)
                    copies = augmented_copies(pool_a, pool_s, 1, seed=seed, progress=True)
                    feats = [rfeats[i] for i in tr] + fixed_point_features([c[0] for c in copies], fe)
                    memo[extra] = (feats, list(ry[tr]) + pool_y, ["ravdess"] * len(tr) + pool_c)
                feats, ys, cs = memo[extra]
                present = {n: np.isin(np.arange(len(labels)), [lab[c.label] for c in corp[n][0]]).astype(np.float32)
                           if (n != "ravdess" and rc["mask"]) else np.ones(len(labels), np.float32)
                           for n in set(cs)}
                ms = [present[c] for c in cs]
                Xq, tci, yw = make_windows(feats, W, TH, silence_frame(fe), labels=ys)
                X = to_real(Xq, fe)
                mcfg = ModelConfig(conv1=rc["conv1"], conv1_kernel=rc["conv1_kernel"], conv2=rc["conv2"],
                                   lstm=rc["lstm"], dropout=rc["dropout"])
                tcfg = TrainConfig(epochs=args.epochs, patience=args.patience, seed=seed,
                                   label_smoothing=rc["label_smoothing"], focal_gamma=rc["focal_gamma"],
                                   verbose=False)
                log(f"== {opt} fold {f} seed {seed}: {len(X)} training windows [{time.time() - t0:.0f}s]")
                r = train(X, yw, len(labels), mcfg, tcfg, val=(to_real(Vq, fe), vci, ry[va]), log=log,
                          class_mask=np.asarray(ms, np.float32)[tci])
                run = {"option": opt, "fold": f, "seed": seed, "recipe": rc, "best_epoch": r.best_epoch + 1,
                       "epochs_run": len(r.history["loss"]), "train_windows": int(len(X)),
                       "seconds": round(time.time() - t1, 1)}
                for c in CONDITIONS:
                    run[f"uar_{c}"] = clip_uar(r.model, cond_feats[c], ry[te], fe, W, H)
                run["urdu4_uar_m21"] = clip_uar(r.model, ufeats, uy, fe, W, H, classes=urdu_classes)
                res["runs"].append(run)
                save()
                log(f"   {opt} f{f} s{seed}: " + " ".join(f"{c} {run[f'uar_{c}']:.3f}" for c in CONDITIONS)
                    + f" urdu {run['urdu4_uar_m21']:.3f} (best epoch {run['best_epoch']}, {run['seconds']:.0f}s)")
    res["summary"] = summarise(res["runs"], options)
    save()
    print(table(res["summary"]))
    return 0


def summarise(runs: list[dict], options: list[str]) -> dict:
    """Mean +- sd per option and key, and the paired (same fold and seed) difference to options[0]."""
    keys = [f"uar_{c}" for c in CONDITIONS] + ["urdu4_uar_m21"]
    by = {(r["option"], r["fold"], r["seed"]): r for r in runs}
    out = {}
    for o in options:
        mine = [r for r in runs if r["option"] == o]
        if not mine:
            continue
        s = {"n_runs": len(mine), "folds": sorted({r["fold"] for r in mine}), "seeds": sorted({r["seed"] for r in mine})}
        for k in keys:
            v = np.array([r[k] for r in mine])
            s[k] = float(v.mean())
            s[k + "_sd"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        pairs = [(r["uar_nominal"], by[(options[0], r["fold"], r["seed"])]["uar_nominal"]) for r in mine
                 if (options[0], r["fold"], r["seed"]) in by]
        if pairs and o != options[0]:
            d = np.array([a - b for a, b in pairs])
            s["paired_delta_nominal"] = float(d.mean())
            s["paired_delta_nominal_sd"] = float(d.std(ddof=1)) if len(d) > 1 else 0.0
            s["paired_wins"] = f"{int((d > 0).sum())}/{len(d)}"
        out[o] = s
    return out


def table(summary: dict) -> str:
    rows = ["| option | runs | nominal | peak −35 | peak −1 | babble 10 dB | telephone | URDU-4 (−21 dBFS) | Δ nominal (paired) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for o, s in summary.items():
        f = lambda k: f"{s[k]:.3f} ± {s[k + '_sd']:.3f}"  # noqa: E731
        d = (f"{s['paired_delta_nominal']:+.3f} ± {s['paired_delta_nominal_sd']:.3f} ({s['paired_wins']})"
             if "paired_delta_nominal" in s else "—")
        rows.append(f"| {o} | {s['n_runs']} | {f('uar_nominal')} | {f('uar_peak_m35')} | {f('uar_peak_m1')} | "
                    f"{f('uar_babble_10db')} | {f('uar_telephone')} | {f('urdu4_uar_m21')} | {d} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
