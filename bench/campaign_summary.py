"""The recipe campaign on one page: every compared row's paired CV difference, as a table and a plot.

Each row of issue #11's campaign was cross-validated (``bench/accuracy.py``, RAVDESS 5 folds, 3 seeds,
int8 through the runtime) and paired by (seed, fold) with the recipe it was meant to replace
(``bench/compare_cv.py`` -> ``bench/results/cv_compare_<row>.json``). The recipe moved five times during the
campaign (the QAT phase, then two, four and eight augmented copies per clip, then the noise-heavier mix of those
copies were adopted), so rows have different bases;
``ROWS`` below names each row's base, and the base's UAR is read from the comparison itself.

For every row: the mean paired difference in RAVDESS-8 clip UAR (int8) with its sd over seeds and the
per-seed differences, how many seeds were higher, and the paired differences in babble at 10 dB SNR
and int8/float window agreement; whether the row passes the campaign's decision rule (fixed before the
runs: mean dUAR >= +0.010 with every seed higher, dbabble >= -0.01, dagreement >= -0.003; a row with its
own rule says so in ``note``); and what was decided (docs/model_card.md has each row's section).

    python bench/campaign_summary.py   # table to stdout, bench/results/campaign_summary.json + .png

The plot: one line per row, the per-seed differences as dots and the mean as a bar, one panel per key,
with the rule's thresholds drawn in.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"

UAR_KEY = "uar_int8"
BABBLE_KEY = "uar_babble_10db"
AGREEMENT_KEY = "window_agreement_int8_vs_float_fixed"


@dataclass(frozen=True)
class Rule:
    """The campaign's decision rule (docs/model_card.md, written down before the first row ran); a row
    aimed at one key (``BABBLE_RULE``) fixed its own before it ran."""

    min_uar_gain: float = 0.010
    min_babble: float = -0.01
    min_agreement: float = -0.003
    uar_every_seed: bool = True  # every seed's UAR higher
    babble_every_seed: bool = False  # every seed's babble 10 dB higher

    def passes(self, row: dict) -> bool:
        """True iff ``row`` (see :func:`summarise`) clears every condition."""
        return (row["uar_diff"] >= self.min_uar_gain
                and (not self.uar_every_seed or row["uar_seeds_higher"] == row["n_seeds"])
                and row["babble_diff"] >= self.min_babble
                and (not self.babble_every_seed or all(d > 0 for d in row["babble_diff_per_seed"]))
                and row["agreement_diff"] >= self.min_agreement)


# the babble row's rule (session 19, before its CV ran): babble 10 dB up >= +0.02 in every seed, UAR not
# down by more than 0.005, agreement as the campaign's; plus peak/telephone inside their goals, which
# bench/robustness.py measures (robustness_babble8.json), not this comparison
BABBLE_RULE = Rule(min_uar_gain=-0.005, min_babble=0.02, min_agreement=-0.003, uar_every_seed=False,
                   babble_every_seed=True)


@dataclass(frozen=True)
class Row:
    """One campaign row: its comparison file's name, a label, its base recipe and what was decided."""

    name: str
    label: str
    base: str
    decision: str
    note: str = ""
    rule: Rule | None = None  # its own rule, fixed before it ran; None: the campaign's


PREQAT = "pre-QAT recipe"
ONE_COPY = "one copy + QAT"
TWO_COPY = "two copies + QAT"
FOUR_COPY = "four copies + QAT"
EIGHT_COPY = "eight copies + QAT"

# in the order they ran; cv_compare_<name>.json each
ROWS: tuple[Row, ...] = (
    Row("ased", "+ ASED corpus (masked loss)", PREQAT, "not adopted"),
    Row("pool", "attention pooling", PREQAT, "not adopted"),
    Row("pool_stats", "statistics pooling", PREQAT, "not adopted"),
    Row("smooth", "label smoothing 0.1", PREQAT, "not adopted"),
    Row("focal", "focal loss gamma 2", PREQAT, "not adopted"),
    Row("margin", "margin loss M 1.0", PREQAT, "not adopted"),
    Row("distill", "distillation, float teacher", PREQAT, "not adopted"),
    Row("distill_ens", "distillation, 3-seed ensemble", PREQAT, "not adopted"),
    Row("babble", "noise-heavier augmentation", PREQAT, "not adopted"),
    Row("qat", "QAT fine-tuning, 3 epochs", PREQAT, "adopted"),
    Row("qat_consistency", "QAT + float/int8 consistency", PREQAT, "not adopted",
        "no gain over the QAT row or its no-rounding control"),
    Row("lrsched", "cosine LR decay", ONE_COPY, "not adopted"),
    Row("aug2", "two augmented copies", ONE_COPY, "adopted"),
    Row("specaug", "SpecAugment", ONE_COPY, "not adopted"),
    Row("conv7", "conv1 kernel 7", ONE_COPY, "not adopted"),
    Row("inrange", "int8 input range 0.01 % pct (conversion)", ONE_COPY, "not adopted",
        "agreement row, conversion only on the kept fold models; own rule: dagreement >= +0.002 in 2 of 3 seeds, dUAR >= -0.005; fails"),
    Row("aug3", "three augmented copies", TWO_COPY, "not adopted"),
    Row("conv1w40", "conv1 40 filters", TWO_COPY, "not adopted"),
    Row("cos2", "cosine LR decay", TWO_COPY, "not adopted"),
    Row("mix", "mixup 0.2", TWO_COPY, "not adopted"),
    Row("qin", "QAT + int8 input range 0.01 % pct", TWO_COPY, "not adopted",
        "agreement row, own rule: dagreement >= +0.002 in every seed, dUAR >= -0.005; fails"),
    Row("win3", "3 s windows (hop 1.5 s)", TWO_COPY, "not adopted"),
    Row("win15", "1.5 s windows (hop 0.75 s)", TWO_COPY, "not adopted"),
    Row("hop25", "training hop 0.25 s", TWO_COPY, "not adopted"),
    Row("ema", "weight EMA 0.999 (float phase)", TWO_COPY, "not adopted"),
    Row("aug4", "four augmented copies", TWO_COPY, "adopted"),
    Row("aug6", "six augmented copies", FOUR_COPY, "not adopted"),
    Row("val8", "2 validation speakers, 14 training", FOUR_COPY, "not adopted"),
    Row("aug8", "eight augmented copies", FOUR_COPY, "adopted",
        "shipped in default.tflite until babble8 on it; the Pi model kept its four-copy members while it shipped "
        "(cv_compare_pi_vs_small.json then: +0.034)"),
    Row("babble8", "noise-heavier copies (p_noise 0.8, p_babble 0.7, 0-20 dB)", EIGHT_COPY, "adopted",
        "babble row, own rule fixed before the run (BABBLE_RULE; peak/telephone inside their goals: "
        "robustness_babble8.json, babble gap 0.088); shipped in default.tflite; the four-copy Pi model gains "
        "+0.026 against it (cv_compare_pi_vs_small.json), under +0.03: withdrawn", BABBLE_RULE),
)


def summarise(row: Row, cmp: dict, rule: Rule = Rule()) -> dict:
    """One row's figures from its ``cv_compare`` JSON (``bench/compare_cv.py``'s output)."""
    keys = cmp["keys"]

    def get(key: str, field: str):
        if key not in keys:
            raise ValueError(f"cv_compare_{row.name}.json: no key {key!r}")
        return keys[key][field]

    out = {
        "name": row.name, "label": row.label, "base": row.base, "decision": row.decision, "note": row.note,
        "n_seeds": len(cmp["seeds"]), "n_pairs": cmp["n_pairs"],
        "base_uar": get(UAR_KEY, "base_mean"), "option_uar": get(UAR_KEY, "option_mean"),
        "uar_diff": get(UAR_KEY, "diff_mean"), "uar_diff_sd": get(UAR_KEY, "diff_seed_sd"),
        "uar_diff_per_seed": get(UAR_KEY, "diff_per_seed"), "uar_seeds_higher": get(UAR_KEY, "seeds_higher"),
        "babble_diff": get(BABBLE_KEY, "diff_mean"), "babble_diff_per_seed": get(BABBLE_KEY, "diff_per_seed"),
        "agreement_diff": get(AGREEMENT_KEY, "diff_mean"),
        "agreement_diff_per_seed": get(AGREEMENT_KEY, "diff_per_seed"),
    }
    own = row.rule is not None
    out["rule"] = asdict(row.rule) if own else None
    out["passes_rule"] = (row.rule if own else rule).passes(out)
    return out


def load_rows(results_dir: Path, rows: tuple[Row, ...] = ROWS, rule: Rule = Rule()) -> list[dict]:
    """Every row whose comparison file exists, in ``rows`` order; rows not yet compared are skipped."""
    out = []
    for row in rows:
        path = results_dir / f"cv_compare_{row.name}.json"
        if path.exists():
            out.append(summarise(row, json.loads(path.read_text()), rule))
    return out


def table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    lines = ["| row | base (UAR int8) | Δ UAR int8 (mean ± sd) | per seed | seeds higher | Δ babble 10 dB "
             "| Δ window agreement | rule | decision |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"{d:+.3f}" for d in r["uar_diff_per_seed"])
        decision = r["decision"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(
            f"| {r['label']} | {r['base']} ({r['base_uar']:.3f}) | {r['uar_diff']:+.4f} ± {r['uar_diff_sd']:.3f} "
            f"| {per_seed} | {r['uar_seeds_higher']}/{r['n_seeds']} | {r['babble_diff']:+.3f} "
            f"| {r['agreement_diff']:+.4f} | {'pass' if r['passes_rule'] else 'fail'}{' (own rule)' if r.get('rule') else ''} "
            f"| {decision} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, rule: Rule = Rule()) -> None:
    """Forest plot: per-seed paired differences (dots) and their mean (bar) per row, three keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("uar", "Δ RAVDESS-8 UAR int8", rule.min_uar_gain),
              ("babble", "Δ UAR babble 10 dB", rule.min_babble),
              ("agreement", "Δ int8/float window agreement", rule.min_agreement))
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.42 * len(rows) + 1.6), sharey=True)
    ys = list(range(len(rows)))[::-1]
    colours = {PREQAT: "tab:gray", ONE_COPY: "tab:blue", TWO_COPY: "tab:green"}
    for ax, (key, title, threshold) in zip(axes, panels):
        for y, r in zip(ys, rows):
            c = colours.get(r["base"], "tab:purple")
            seeds = r[f"{key}_diff_per_seed"]
            ax.scatter(seeds, [y] * len(seeds), s=14, color=c, alpha=0.6, zorder=3)
            ax.plot([r[f"{key}_diff"]] * 2, [y - 0.3, y + 0.3], color=c, lw=2.5, zorder=4)
            if r["decision"] == "adopted":
                ax.scatter([r[f"{key}_diff"]], [y], marker="*", s=90, color="black", zorder=5)
            elif r["passes_rule"]:  # passed, not (yet) adopted: hollow star
                ax.scatter([r[f"{key}_diff"]], [y], marker="*", s=90, facecolors="none", edgecolors="black",
                           zorder=5)
        ax.axvline(0, color="black", lw=0.8)
        ax.axvline(threshold, color="tab:red", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([r["label"] for r in rows], fontsize=8)
    handles = [plt.Line2D([], [], color=c, lw=2.5, label=f"base: {b}") for b, c in colours.items()]
    handles += [plt.Line2D([], [], color="tab:red", ls="--", label="rule threshold"),
                plt.Line2D([], [], marker="*", color="black", ls="", label="adopted"),
                plt.Line2D([], [], marker="*", color="black", markerfacecolor="none", ls="",
                           label="passes the rule, not adopted")]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.suptitle("Recipe campaign: paired differences vs each row's base (dots: seeds, bar: mean), 5-fold RAVDESS CV",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                    help="where the cv_compare_*.json files are (default bench/results)")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR / "campaign_summary.json",
                    help="JSON to write; the plot goes next to it as .png")
    args = ap.parse_args(argv)
    rows = load_rows(args.results_dir, ROWS)
    if not rows:
        print(f"campaign_summary: no cv_compare_*.json of the campaign's rows in {args.results_dir}",
              file=sys.stderr)
        return 2
    rule = Rule()
    print(table(rows))
    args.results.write_text(json.dumps({"rule": asdict(rule),
                                        "rows": rows, "n_rows": len(rows),
                                        "n_adopted": sum(r["decision"] == "adopted" for r in rows),
                                        "n_pass_rule": sum(r["passes_rule"] for r in rows)}, indent=1) + "\n")
    plot(rows, args.results.with_suffix(".png"), rule)
    print(f"wrote {args.results} and {args.results.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
