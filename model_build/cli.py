"""``ser-edge`` subcommands of the host-side model builder (registered via ``register``).

    ser-edge build [--corpus DIR|synth] [--out DIR] [--epochs N] ...   train -> int8 -> validate -> report
    ser-edge convert BUILD_DIR/model.tflite [--n-calib N] [--input-range-percentile P]
                                                                        redo int8 conversion from saved float weights
    ser-edge check-model MODEL.tflite                                   op list, int8 check, metadata, TFLM arena
    ser-edge report BUILD_DIR                                           re-render report.md / PNGs from report.json

TensorFlow and friends are imported inside the handlers only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_runtime.cli_errors import BadInput, Failure, needs, require
from edge_runtime.cli_types import (existing_dir, existing_file, fraction, nonnegative_int, output_dir,
                                    output_file, positive_float, positive_int)

TRAIN_MODULES = ("tensorflow", "tf_keras", "matplotlib", "tqdm", "soxr")


def _quiet_tf() -> None:
    """Keep TensorFlow's start-up chatter (CUDA/cuInit probes, oneDNN notices, converter logs) off
    stderr in normal runs; ``--debug`` leaves it on."""
    from edge_runtime.native_log import import_tensorflow_quietly

    import_tensorflow_quietly()


def _corpus(text: str) -> str:
    """argparse type of ``--corpus``: ``synth`` or an existing folder."""
    return text if text == "synth" else existing_dir(text)


def _percentile(text: str) -> float:
    """argparse type of ``--input-range-percentile``: a number in [0, 50) (0 = min/max)."""
    from .convert import InputRange  # numpy only

    try:
        return InputRange(float(text)).percentile
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 50) (0 = min/max), got {text}") from None


def _cmd_build(a: argparse.Namespace) -> int:
    require("ser-edge build", *TRAIN_MODULES, "tflite_micro" if not a.no_tflm else "tensorflow")
    if a.corpus != "synth":  # an unusable corpus fails in a second, before TensorFlow loads
        from .corpora import open_corpus
        from .corpora.splits import check_trainable

        index = open_corpus(a.corpus, merge_calm=a.merge_calm)
        present = {c.label for c in index.clips}
        check_trainable(index.clips, [lab for lab in index.labels if lab in present], a.corpus)
    _quiet_tf()
    from .models import ModelConfig
    from .pipeline import BuildConfig, build
    from .train import TrainConfig

    mc = ModelConfig(arch=a.arch, conv1=a.conv1, conv2=a.conv2, lstm=a.lstm, dense=a.dense, dropout=a.dropout,
                     pooling=a.pooling)
    tc = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, patience=a.patience, seed=a.seed,
                     class_weight=not a.no_class_weight)
    kw = {}
    if a.clips_per_label:
        kw["synth_clips_per_label"] = a.clips_per_label
    cfg = BuildConfig(corpus=a.corpus, out_dir=a.out, model_name=a.name, feature=a.feature, window_s=a.window,
                      hop_s=a.hop, model=mc, train=tc, k_folds=a.folds, test_fold=a.test_fold,
                      augment_copies=a.augment, merge_calm=a.merge_calm, tflm=not a.no_tflm, seed=a.seed,
                      input_range_percentile=a.input_range_percentile,
                      cache_dir=None if a.no_cache else (a.cache or "default"), **kw)
    r = build(cfg)
    rows = r["validation"]["rows"]
    print(f"model: {r['model']['path']} ({r['model']['bytes']} bytes, {r['model']['params']} params, "
          f"TFLM arena {r['model'].get('arena_bytes', '-')} bytes)")
    for name, row in rows.items():
        print(f"  {name:18s} acc {row['accuracy']:.3f}  UAR {row['uar']:.3f}  macro-F1 {row['macro_f1']:.3f}  "
              f"window agreement vs float {row['window_agreement_vs_float']:.3f}")
    print(f"report: {Path(a.out) / 'report.md'}")
    return 0


def _cmd_convert(a: argparse.Namespace) -> int:
    require("ser-edge convert", "tensorflow", "tf_keras")
    _quiet_tf()
    from .convert import GraphCheckError
    from .pipeline import reconvert

    model = Path(a.model)
    float_npz = model.with_name(model.stem + "_float.npz")
    if not float_npz.exists():
        raise BadInput(f"{float_npz}: not found (convert needs the float weights a build saves next to the model)")
    from .convert import InputRange

    rng = None if a.input_range_percentile is None else InputRange(a.input_range_percentile)
    try:  # the recorded temperature is folded in again: the float weights are saved uncalibrated
        out, graph = reconvert(model, a.out or model, n_calib=a.n_calib, input_range=rng)
    except GraphCheckError as e:
        raise Failure(str(e)) from None
    print(f"{out}: {out.stat().st_size} bytes; ops {graph.op_counts}")
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    from .check import check_model, summary_lines

    r = check_model(a.model, arena=not a.no_arena)
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print("\n".join(summary_lines(r)))
    return 0 if r["ok"] else 1


def _cmd_report(a: argparse.Namespace) -> int:
    require("ser-edge report", "matplotlib")
    from .report import write_report

    src = Path(a.build_dir) / "report.json"
    if not src.is_file():
        raise BadInput(f"{a.build_dir}: no report.json in this folder (give the --out folder of a `ser-edge build`)")
    try:
        r = json.loads(src.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"{src}: not valid JSON ({e})") from None
    paths = write_report(r, a.build_dir)
    print(paths["md"])
    return 0


def _folds(text: str) -> int:
    """argparse type of ``--folds``: speaker-grouped folds need at least 2."""
    k = positive_int(text)
    if k < 2:
        raise argparse.ArgumentTypeError(f"needs at least 2 folds (one is the test set), got {text}")
    return k


def register(subparsers) -> None:
    """Add ``build``, ``convert``, ``check-model`` and ``report`` to the ``ser-edge`` CLI."""
    p = subparsers.add_parser("build", help=needs("train -> int8 -> validate (LiteRT + TFLite Micro) -> report",
                                                 *TRAIN_MODULES, "tflite_micro"),
                              description="Train a model on a corpus (default: the built-in synthetic one), "
                                          "convert to full int8, check it, validate float vs int8 on held-out "
                                          "speakers and write a report directory.")
    p.add_argument("--corpus", default="synth", type=_corpus, help="corpus directory (RAVDESS, TESS, CREMA-D, SAVEE, folder "
                                                     "per label) or 'synth' (default: built-in generated corpus)")
    p.add_argument("--out", default="runs/build", type=output_dir, help="output directory (model, report)")
    p.add_argument("--name", default="ser_edge", help="model file name stem")
    p.add_argument("--epochs", type=positive_int, default=40)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--patience", type=positive_int, default=10, help="early-stopping patience on validation-speaker UAR")
    p.add_argument("--arch", choices=("crnn", "lstm", "mlp"), default="crnn")
    p.add_argument("--conv1", type=positive_int, default=32)
    p.add_argument("--conv2", type=positive_int, default=64)
    p.add_argument("--lstm", type=positive_int, default=64)
    p.add_argument("--dense", type=positive_int, default=64)
    p.add_argument("--dropout", type=fraction, default=0.3)
    from .models import POOLINGS  # numpy only

    p.add_argument("--pooling", choices=POOLINGS, default="last",
                   help="how the LSTM's time steps are reduced: last hidden state (default), mean, "
                        "mean+std (stats) or attention-weighted sum")
    p.add_argument("--feature", choices=("logmel", "mfcc"), default="logmel")
    p.add_argument("--window", type=positive_float, default=2.0, help="window length, seconds")
    p.add_argument("--hop", type=positive_float, default=1.0, help="window stride at inference, seconds")
    p.add_argument("--folds", type=_folds, default=4, help="speaker-grouped folds; one is the test set")
    p.add_argument("--test-fold", type=nonnegative_int, default=0)
    p.add_argument("--augment", type=nonnegative_int, default=0, help="augmented copies per training clip")
    p.add_argument("--merge-calm", action="store_true", help="merge RAVDESS calm into neutral")
    p.add_argument("--clips-per-label", type=nonnegative_int, default=0, help="synthetic corpus size per label (default 64)")
    p.add_argument("--no-class-weight", action="store_true")
    p.add_argument("--no-tflm", action="store_true", help="skip the TFLite Micro row and arena measurement")
    p.add_argument("--input-range-percentile", type=_percentile, default=0.0, metavar="P",
                   help="int8 input range from the [P, 100-P] percentiles of the calibration windows' values "
                        "(outliers saturate; a finer input step), 0 = their min/max (default)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--cache", default=None, help="feature cache dir (default ~/.cache/ser-edge/features)")
    p.add_argument("--no-cache", action="store_true")
    p.set_defaults(func=_cmd_build)

    p = subparsers.add_parser("convert", help=needs("redo the int8 conversion of a built model from its float weights",
                                                   "tensorflow", "tf_keras"))
    p.add_argument("model", type=existing_file, help="a .tflite written by 'build' (its _float.npz must be next to it)")
    p.add_argument("--out", default=None, type=output_file, help="output .tflite (default: overwrite)")
    p.add_argument("--n-calib", type=positive_int, default=500, help="calibration windows")
    p.add_argument("--input-range-percentile", type=_percentile, default=None, metavar="P",
                   help="int8 input range from the [P, 100-P] percentiles of the calibration windows' values, "
                        "0 = their min/max (default: the rule the model's metadata records, min/max if none)")
    p.set_defaults(func=_cmd_convert)

    p = subparsers.add_parser("check-model", help=needs("check a .tflite is pure int8 builtins; ops, metadata, arena",
                                                       "ai_edge_litert"),
                              description="Summarise a .tflite (ops, tensor types, size, TFLite Micro arena, "
                                          "front end, labels) and give a verdict: exit 0 when ser-edge run and "
                                          "TFLite Micro can use it, 1 when not, 2 when it is not a TFLite file.")
    p.add_argument("model", type=existing_file)
    p.add_argument("--no-arena", action="store_true", help="skip the TFLite Micro arena measurement")
    p.add_argument("--json", action="store_true", help="print everything as one JSON object")
    p.set_defaults(func=_cmd_check)

    p = subparsers.add_parser("report", help=needs("re-render report.md and plots from a build's report.json",
                                                  "matplotlib"))
    p.add_argument("build_dir", type=existing_dir)
    p.set_defaults(func=_cmd_report)
