"""Compare two recipes' cross-validations (``bench/accuracy.py`` results), paired by (seed, fold).

Both runs must use the same folds (``--fold-seed``), front end, window policy, gate and evaluation
path; the pairs are the (seed, fold) runs both hold. Per key: each recipe's mean ± sd between seed
means (complete seeds only), and the paired difference (option − base) as the mean ± sd over the
seeds' mean differences, plus in how many seeds and fold runs the option's figure is higher (for
``ece_clip`` lower is better). Fold noise (4 test actors
per fold) is large, so only a difference that holds in every seed is worth reading as one.

    python bench/compare_cv.py bench/results/accuracy_preqat.json bench/results/accuracy_ased.json \\
        --name ased --results bench/results/cv_compare_ased.json

An option whose "seed" stands for a group of base seeds (an ensemble of those seeds' fold models,
``bench/accuracy.py --ensemble-from``) is paired with the mean of its members: ``--groups
"0=0,1,2;1=3,4,5"`` pairs option seed 0 fold f with the mean over base seeds 0, 1, 2 of fold f (each
key averaged over the members), and so on; the base's per-seed sd is then that of the group means.

    python bench/compare_cv.py bench/results/accuracy_qat.json bench/results/accuracy_pi.json \\
        --base-extra bench/results/accuracy_qat_singles.json --name pi --groups "0=0,1,2;1=3,4,5;2=6,7,8" \\
        --results bench/results/cv_compare_pi.json

``--window-row``: the option is the window length itself (``--window``), so the two runs' window policies may
differ in ``window_frames`` / ``hop_frames`` and nothing else. The clip-level keys pair the same clips; the window
agreement counts each run's own windows (fewer, longer ones for a longer window).

``--base-extra`` adds other seeds of the base recipe scored in other runs (their fold records join the
base's; the same checks as between base and option, and no (seed, fold) twice).

Each ``cv_compare_*.json`` in bench/results names its base (``base``, ``base_extra``): the recipe campaign's were
written against the CV of the recipe as it was before the QAT phase joined it (``accuracy_preqat.json``); the QAT Pi
model's (``cv_compare_pi.json``, ``_pi_qat``, ``_pi_vs_qat``) against the QAT recipe's fold models as trained,
window-level temperature (``accuracy_qat.json`` + ``accuracy_qat_singles.json``); the cosine learning-rate decay's
(``cv_compare_lrsched.json``) against the shipped recipe's CV with the clip-level temperature
(``accuracy_clip_calibration_qat.json``).
``accuracy.json`` is the shipped recipe's CV (eight augmented copies per clip since they were adopted; the rows run
on four copies, ``cv_compare_aug6/val8/aug8.json``, name that CV ``accuracy_aug4.json``). ``cv_compare_pi_vs_small.json``
pairs the shipped Pi model's four-copy fold ensembles with the eight-copy small recipe's CV seeds, every group with
the same three seeds (``--groups "0=0,1,2;1=0,1,2;2=0,1,2"``): what the Pi model gains over the small model that ships.

Prints a Markdown table and writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

KEYS = ("uar_int8", "uar_float", "clip_agreement_int8_vs_float", "window_agreement_int8_vs_float_fixed", "uar_peak_m35", "uar_peak_m1", "uar_babble_10db",
        "uar_telephone", "urdu4_uar_int8", "ece_clip")
SAME = ("eval_path", "window_policy", "speech_gate")


def _by_pair(res: dict) -> dict[tuple[int, int], dict]:
    return {(int(f["seed"]), int(f["fold"])): f for f in res["ravdess_folds"]}


def parse_groups(spec: str) -> dict[int, list[int]]:
    """``"0=0,1,2;1=3,4,5"`` -> ``{0: [0, 1, 2], 1: [3, 4, 5]}`` (option seed -> base seeds)."""
    out = {}
    for part in [p for p in spec.split(";") if p.strip()]:
        g, _, seeds = part.partition("=")
        if not seeds:
            raise SystemExit(f"--groups: {part!r} is not OPTION_SEED=BASE_SEED,BASE_SEED,...")
        out[int(g)] = [int(v) for v in seeds.split(",")]
    return out


def group_base(base: dict, groups: dict[int, list[int]]) -> dict:
    """A results dict whose seed ``g`` fold ``f`` holds, per key, the mean of the base's seeds
    ``groups[g]`` at fold f (a pair is only formed where every member seed has that fold)."""
    b = _by_pair(base)
    folds = sorted({f for _, f in b})
    rows = []
    for g, members in sorted(groups.items()):
        for f in folds:
            if not all((s, f) in b for s in members):
                continue
            keys = set.intersection(*(set(b[s, f]) for s in members))
            rows.append({"seed": g, "fold": f, "members": members,
                         **{k: float(np.mean([b[s, f][k] for s in members])) for k in KEYS if k in keys}})
    return {**base, "ravdess_folds": rows}


def load_results(path: str) -> dict:
    """A bench/accuracy.py results file; one line naming it (``SystemExit``) if it is missing or not JSON."""
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read a results file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(res, dict) or "ravdess_folds" not in res:
        raise SystemExit(f"{path}: not a bench/accuracy.py results file (no ravdess_folds)")
    return res


# the window policy's fields a window-length row changes (the model's window and its hop, W // 2)
WINDOW_SHAPE = ("window_frames", "hop_frames")


def check_comparable(a: dict, b: dict, what: str, window_row: bool = False) -> None:
    """Refuse (``SystemExit`` prefixed by ``what``) two results of other folds, front end or evaluation.
    ``window_row``: the option is the window length, so the policy's window and hop may differ (every
    other policy field must not)."""
    for k in SAME:
        va, vb = a.get(k), b.get(k)
        if window_row and k == "window_policy" and isinstance(va, dict) and isinstance(vb, dict):
            va = {f: v for f, v in va.items() if f not in WINDOW_SHAPE}
            vb = {f: v for f, v in vb.items() if f not in WINDOW_SHAPE}
        if va != vb:
            raise SystemExit(f"{what}: differ in {k}, not comparable")
    for k in ("fold_seed", "folds", "frontend"):
        if a["config"].get(k) != b["config"].get(k):
            raise SystemExit(f"{what}: differ in config {k}, not comparable")


def with_extra_seeds(base: dict, extras: list[tuple[str, dict]]) -> dict:
    """``base`` with the fold records of ``extras`` (other seeds of the same recipe, same folds and
    evaluation) added; refuses a (seed, fold) held twice."""
    rows = list(base["ravdess_folds"])
    seen = set(_by_pair(base))
    for name, r in extras:
        check_comparable(base, r, f"--base-extra {name} and the base")
        for key, f in _by_pair(r).items():
            if key in seen:
                raise SystemExit(f"--base-extra {name}: seed {key[0]} fold {key[1]} is already in the base")
            seen.add(key)
            rows.append(f)
    return {**base, "ravdess_folds": rows}


def compare(base: dict, option: dict, groups: dict[int, list[int]] | None = None,
            window_row: bool = False) -> dict:
    """Paired comparison of two results dicts (see the module docstring); ``groups``: option seed ->
    the base seeds it is paired with (their mean), :func:`parse_groups`; ``window_row``: the option is
    the window length (:func:`check_comparable`; clip-level keys pair the same clips, window-level
    ones count each run's own windows)."""
    check_comparable(base, option, "the two runs", window_row)
    if groups:
        base = group_base(base, groups)
    b, o = _by_pair(base), _by_pair(option)
    folds = sorted({f for _, f in b})
    seeds = sorted(s for s in {s for s, _ in b} & {s for s, _ in o}
                   if all((s, f) in b and (s, f) in o for f in folds))
    if not seeds:
        raise SystemExit("no seed has every fold in both runs")
    out: dict = {"seeds": seeds, "folds": folds, "n_pairs": len(seeds) * len(folds), "keys": {}}
    if groups:
        out["groups"] = {str(g): groups[g] for g in seeds}
        out["paired"] = "option seed g fold f vs the mean over base seeds groups[g] of fold f"
    for k in KEYS:
        if not all(k in b[s, f] and k in o[s, f] for s in seeds for f in folds):
            continue
        mb = [float(np.mean([b[s, f][k] for f in folds])) for s in seeds]
        mo = [float(np.mean([o[s, f][k] for f in folds])) for s in seeds]
        d = [y - x for x, y in zip(mb, mo)]
        pair_d = [o[s, f][k] - b[s, f][k] for s in seeds for f in folds]
        sd = (lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else None)  # noqa: E731
        out["keys"][k] = {"base_mean": float(np.mean(mb)), "base_seed_sd": sd(mb),
                          "option_mean": float(np.mean(mo)), "option_seed_sd": sd(mo),
                          "diff_mean": float(np.mean(d)), "diff_seed_sd": sd(d), "diff_per_seed": d,
                          "seeds_higher": int(sum(x > 0 for x in d)),
                          "fold_runs_higher": int(sum(x > 0 for x in pair_d)),
                          "fold_runs_lower": int(sum(x < 0 for x in pair_d))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="bench/accuracy.py results of the reference recipe")
    ap.add_argument("option", help="bench/accuracy.py results of the recipe compared with it")
    ap.add_argument("--name", default="option", help="the option's name in the table and JSON")
    ap.add_argument("--base-extra", nargs="+", default=[], metavar="JSON",
                    help="more seeds of the base recipe scored in other runs (bench/accuracy.py results)")
    ap.add_argument("--groups", default="", metavar="G=S,S,...;...",
                    help="option seed G pairs with the mean of base seeds S,S,... (an ensemble vs its members)")
    ap.add_argument("--window-row", action="store_true",
                    help="the option is the window length: its policy's window_frames/hop_frames may differ")
    ap.add_argument("--results", default=None, help="output JSON (default: none)")
    a = ap.parse_args(argv)
    base = with_extra_seeds(load_results(a.base), [(p, load_results(p)) for p in a.base_extra])
    option = load_results(a.option)
    res = compare(base, option, parse_groups(a.groups) if a.groups else None, window_row=a.window_row)
    if a.window_row:
        res["window_frames"] = {"base": base["window_policy"]["window_frames"],
                                "option": option["window_policy"]["window_frames"]}
    res.update({"base": a.base, "option": a.option, "name": a.name,
                **({"base_extra": a.base_extra} if a.base_extra else {})})
    print(f"| key | base (mean ± seed sd) | {a.name} | Δ {a.name} − base (mean ± sd over seeds) "
          f"| seeds higher | fold runs higher / lower |\n|---|---|---|---|---|---|")
    for k, v in res["keys"].items():
        print(f"| {k} | {v['base_mean']:.3f} ± {v['base_seed_sd'] or 0:.3f} | {v['option_mean']:.3f} ± "
              f"{v['option_seed_sd'] or 0:.3f} | {v['diff_mean']:+.3f} ± {v['diff_seed_sd'] or 0:.3f} | "
              f"{v['seeds_higher']}/{len(res['seeds'])} | {v['fold_runs_higher']} / {v['fold_runs_lower']} |")
    if a.results:
        Path(a.results).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
