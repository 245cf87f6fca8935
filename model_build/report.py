"""Write a build's report directory: report.json, report.md and PNG plots (matplotlib, Agg)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROW_TITLES = {
    "keras_float_twin": "Keras float, float64-twin features",
    "keras_float_fixed": "Keras float, fixed-point features",
    "int8_litert": "int8 LiteRT, fixed-point features",
    "int8_tflm": "int8 TFLite Micro, fixed-point features",
}
REPORT_KEYS = ("config", "labels", "frontend", "speakers", "model", "training", "validation", "metadata")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusions(rows: dict, labels: list[str], path: Path) -> Path:
    """All rows' confusion matrices side by side: colour = share of the true class (each row sums
    to 1, so classes of different sizes compare), the number in a cell = clips; one colour bar."""
    plt = _plt()
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 1.2, 4.1), squeeze=False, constrained_layout=True)
    im = None
    for ax, (name, r) in zip(axes[0], rows.items()):
        cm = np.asarray(r["confusion"], float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels if ax is axes[0][0] else [], fontsize=7)
        ax.set_title(f"{ROW_TITLES.get(name, name)}\nUAR {r['uar']:.3f}", fontsize=8)
        ax.set_xlabel("predicted class", fontsize=7)
    axes[0][0].set_ylabel("true class", fontsize=7)
    cb = fig.colorbar(im, ax=list(axes[0]), shrink=0.8, fraction=0.03)
    cb.set_label("share of the true class (row-normalised)", fontsize=7)
    cb.ax.tick_params(labelsize=7)
    fig.suptitle("Confusion matrices on the held-out test speakers (numbers: clips)", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training(history: dict, best_epoch: int, path: Path) -> Path:
    """Loss and accuracy/UAR per epoch; the dotted line marks ``best_epoch`` (1-based, as in
    report.json), the epoch whose weights the model keeps."""
    plt = _plt()
    best = best_epoch
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.4), constrained_layout=True)
    ep = np.arange(1, len(history.get("loss", [])) + 1)
    a.plot(ep, history.get("loss", []), label="training loss")
    if history.get("val_loss"):
        a.plot(ep, history["val_loss"], label="validation loss")
    a.set_ylabel("cross-entropy loss")
    a.set_title("Loss per epoch")
    b.plot(ep, history.get("accuracy", []), label="training accuracy (windows)")
    if history.get("val_uar"):
        b.plot(ep, history["val_uar"], label="validation UAR (clips)")
    b.set_ylabel("accuracy / UAR")
    b.set_ylim(0, 1)
    b.set_title("Accuracy per epoch")
    for ax in (a, b):
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.axvline(best, color="grey", ls=":", lw=1.2, label=f"best epoch ({best}): weights kept")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_per_class(rows: dict, labels: list[str], path: Path) -> Path:
    """Per-class F1 of each row, grouped bars."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 3.2))
    w = 0.8 / max(len(rows), 1)
    for k, (name, r) in enumerate(rows.items()):
        ax.bar(np.arange(len(labels)) + k * w, [r["per_class"][lab]["f1"] for lab in labels], w,
               label=ROW_TITLES.get(name, name))
    ax.set_xticks(np.arange(len(labels)) + 0.4 - w / 2, labels, rotation=30, fontsize=8)
    ax.set_ylabel("F1")
    ax.set_xlabel("true class")
    ax.set_ylim(0, 1)
    ax.set_title("Per-class F1 on the held-out test speakers", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _pct(v) -> str:
    return f"{100 * v:.1f}%"


def render_markdown(r: dict) -> str:
    """The human-readable report."""
    val = r["validation"]
    rows = val["rows"]
    m = r["model"]
    labels = r["labels"]
    L = []
    L.append(f"# ser-edge build report: `{r['metadata']['model_name']}`\n")
    L.append(f"Corpus **{r.get('corpus', '?')}**; labels: {', '.join(labels)}. Speakers never split: "
             f"train {len(r['speakers']['train'])}, validation {r['speakers']['validation']}, "
             f"test {r['speakers']['test']} ({val['n_clips']} test clips, {val['n_windows']} windows).")
    if r.get("corpus") == "synth":
        L.append("\n> The built-in corpus is synthetic prosody, not emotional speech: these numbers check "
                 "the pipeline end to end, they do not measure emotion recognition.")
    L.append(f"\nFront end: `{r['frontend']['output']}` x{r['metadata']['n_features']}, hash "
             f"`{r['frontend_hash']}`; window {m['window_frames']} frames, hop {m['hop_frames']} frames.\n")
    L.append("## Float vs int8 on the same held-out speakers\n")
    L.append("| system | accuracy | UAR | macro F1 | clip top-1 agreement vs float | window top-1 agreement vs float | window agreement vs float (fixed-point) |")
    L.append("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        L.append(f"| {ROW_TITLES.get(name, name)} | {row['accuracy']:.3f} | {row['uar']:.3f} | "
                 f"{row['macro_f1']:.3f} | {_pct(row['clip_agreement_vs_float'])} | "
                 f"{_pct(row['window_agreement_vs_float'])} | {_pct(row['window_agreement_vs_float_fixed'])} |")
    L.append("\n'float' = Keras float on float64-twin features (first row); the last column compares with "
             "the Keras float model on the same fixed-point features, i.e. the cost of int8 alone.\n")
    if val.get("eval_path") == "runtime":
        L.append(f"Every row labels each clip as `ser-edge run` does (edge_runtime's window policy and speech "
                 f"gate; clip label = mean log-probability over speech windows): {val.get('speech_windows')} of "
                 f"{val['n_windows']} windows were speech; clips the runtime gave no label count as misses "
                 f"(int8: {rows['int8_litert'].get('clips_without_label', 0)}).\n")
    if "tflm_vs_litert" in val:
        t = val["tflm_vs_litert"]
        L.append("## TFLite Micro vs LiteRT (int8 scores, same inputs)\n")
        L.append(f"- windows bit-exact: {_pct(t['bit_exact_fraction'])}; max difference {t['max_abs_lsb']} LSB; "
                 f"scores differing: {_pct(t['fraction_scores_differing'])}; top-1 agreement {_pct(t['top1_agreement'])}.")
        if "tflm_vs_litert_builtin" in val:
            b = val["tflm_vs_litert_builtin"]
            L.append(f"- vs LiteRT without the XNNPACK delegate: bit-exact windows {_pct(b['bit_exact_fraction'])}, "
                     f"max {b['max_abs_lsb']} LSB, scores differing {_pct(b['fraction_scores_differing'])}.")
        L.append("- Why not bit-exact: TFLM's integer LSTM evaluates the gate sigmoid/tanh and the int16 cell/hidden "
                 "rescales with its own fixed-point routines, rounding differently from LiteRT's LSTM kernel "
                 "(<= 1 LSB vs LiteRT's builtin kernels); LiteRT's default XNNPACK delegate also requantises "
                 "conv/fully-connected with an fp32 multiplier instead of TFLite's Q31 fixed-point one, which can "
                 "stack to 2 LSB. A top-1 decision moves only when two logits are within an LSB or two.\n")
    L.append("## Model\n")
    L.append(f"- `{m['path']}`: **{m['bytes']} bytes** int8, {m['params']} parameters, arch `{m['arch']}`")
    if "arena_bytes" in m:
        L.append(f"- TFLite Micro tensor arena: **{m['arena_bytes']} bytes** minimum (bisection); "
                 f"allocator's recorded total {m.get('recorded_arena_bytes')}")
    g = m["graph"]
    L.append(f"- ops: {', '.join(f'{k} x{v}' for k, v in g['op_counts'].items())}; fused LSTM: {g['fused_lstm']}; "
             f"tensor types: {g['tensor_types']}")
    q = m["quant"]
    L.append(f"- input int8 scale {q['input_scale']:.6g}, zero point {q['input_zero_point']}; output (logits) "
             f"scale {q['output_scale']:.6g}, zero point {q['output_zero_point']}")
    L.append(f"- feature normalisation: {r['metadata']['feature_norm']['kind']} "
             f"(folded into `{r['metadata']['feature_norm']['folded_into']}`)\n")
    tr = r["training"]
    L.append("## Training\n")
    L.append(f"{len(tr['history']['loss'])} epochs in {tr['seconds']} s; weights restored from epoch "
             f"{tr['best_epoch']} (best validation-speaker UAR; the dotted line in the curves).\n")
    L.append("![training curves](training_curves.png)\n")
    L.append("## Confusion matrices (test clips)\n")
    L.append("![confusion matrices](confusion_matrices.png)\n")
    L.append("## Per class (test clips)\n")
    L.append("| class | " + " | ".join(f"{ROW_TITLES.get(n, n)} P / R / F1" for n in rows) + " | support |")
    L.append("|---|" + "---|" * (len(rows) + 1))
    for lab in labels:
        cells = [f"{rw['per_class'][lab]['precision']:.2f} / {rw['per_class'][lab]['recall']:.2f} / "
                 f"{rw['per_class'][lab]['f1']:.2f}" for rw in rows.values()]
        sup = next(iter(rows.values()))["per_class"][lab]["support"]
        L.append(f"| {lab} | " + " | ".join(cells) + f" | {sup} |")
    L.append("\n![per-class F1](per_class_f1.png)\n")
    L.append(f"Trained on: {r['metadata']['trained_on']}. Licence: {r['metadata'].get('licence', '')}.\n")
    return "\n".join(L) + "\n"


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return o


def write_report(r: dict, out_dir) -> dict[str, Path]:
    """Write report.json, report.md and the PNGs into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = r["validation"]["rows"]
    paths = {
        "confusion": plot_confusions(rows, r["labels"], out / "confusion_matrices.png"),
        "training": plot_training(r["training"]["history"], r["training"]["best_epoch"], out / "training_curves.png"),
        "per_class": plot_per_class(rows, r["labels"], out / "per_class_f1.png"),
    }
    r = dict(r)
    r["files"] = {k: p.name for k, p in paths.items()}
    (out / "report.json").write_text(json.dumps(_jsonable(r), indent=1) + "\n")
    (out / "report.md").write_text(render_markdown(r))
    paths["json"] = out / "report.json"
    paths["md"] = out / "report.md"
    return paths
