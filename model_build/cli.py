"""``ser-edge`` subcommands of the host-side model builder (registered via ``register``).

    ser-edge build [--corpus DIR|synth] [--out DIR] [--epochs N] ...   train -> int8 -> validate -> report
    ser-edge convert BUILD_DIR/model.tflite [--n-calib N]               redo int8 conversion from saved float weights
    ser-edge check-model MODEL.tflite                                   op list, int8 check, metadata, TFLM arena
    ser-edge report BUILD_DIR                                           re-render report.md / PNGs from report.json

TensorFlow and friends are imported inside the handlers only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _quiet_tf() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _cmd_build(a: argparse.Namespace) -> int:
    _quiet_tf()
    from .models import ModelConfig
    from .pipeline import BuildConfig, build
    from .train import TrainConfig

    mc = ModelConfig(arch=a.arch, conv1=a.conv1, conv2=a.conv2, lstm=a.lstm, dense=a.dense, dropout=a.dropout)
    tc = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, patience=a.patience, seed=a.seed,
                     class_weight=not a.no_class_weight)
    kw = {}
    if a.clips_per_label:
        kw["synth_clips_per_label"] = a.clips_per_label
    cfg = BuildConfig(corpus=a.corpus, out_dir=a.out, model_name=a.name, feature=a.feature, window_s=a.window,
                      hop_s=a.hop, model=mc, train=tc, k_folds=a.folds, test_fold=a.test_fold,
                      augment_copies=a.augment, merge_calm=a.merge_calm, tflm=not a.no_tflm, seed=a.seed,
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
    _quiet_tf()
    from .convert import GraphCheckError, convert_int8, io_quant
    from .embed_metadata import read_metadata, write_model
    from .models import count_params, export_model
    from .pipeline import load_float

    model = Path(a.model)
    float_npz = model.with_name(model.stem + "_float.npz")
    if not float_npz.exists():
        sys.exit(f"{float_npz}: not found (convert needs the float weights a build saves next to the model)")
    md = read_metadata(model)
    keras, mcfg, calib = load_float(float_npz)
    exp = export_model(keras, mcfg, calib.shape[1], calib.shape[2], len(md["labels"]))
    try:
        raw, graph = convert_int8(exp, calib, n_calib=a.n_calib)
    except GraphCheckError as e:
        sys.exit(str(e))
    md.update(io_quant(raw))
    md["params"] = count_params(keras)
    md["ops"] = graph.op_counts
    out = write_model(a.out or model, raw, md)
    print(f"{out}: {out.stat().st_size} bytes; ops {graph.op_counts}")
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    _quiet_tf()
    from .convert import GraphCheckError, check_int8_graph
    from .embed_metadata import read_metadata

    data = Path(a.model).read_bytes()
    try:
        rep = check_int8_graph(data)
        ok = True
    except GraphCheckError as e:
        print(str(e))
        rep, ok = None, False
    out = {"model": a.model, "bytes": len(data), "int8_check": "ok" if ok else "FAILED"}
    if rep:
        out["graph"] = rep.to_dict()
    try:
        out["metadata"] = read_metadata(data)
    except KeyError as e:
        out["metadata"] = f"missing: {e}"
    if ok and not a.no_arena:
        from .tflm import min_arena_size

        out.update(min_arena_size(data))
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


def _cmd_report(a: argparse.Namespace) -> int:
    from .report import write_report

    r = json.loads((Path(a.build_dir) / "report.json").read_text())
    paths = write_report(r, a.build_dir)
    print(paths["md"])
    return 0


def register(subparsers) -> None:
    """Add ``build``, ``convert``, ``check-model`` and ``report`` to the ``ser-edge`` CLI."""
    p = subparsers.add_parser("build", help="train -> int8 -> validate (LiteRT + TFLite Micro) -> report",
                              description="Train a model on a corpus (default: the built-in synthetic one), "
                                          "convert to full int8, check it, validate float vs int8 on held-out "
                                          "speakers and write a report directory.")
    p.add_argument("--corpus", default="synth", help="corpus directory (RAVDESS, TESS, CREMA-D, SAVEE, folder "
                                                     "per label) or 'synth' (default: built-in generated corpus)")
    p.add_argument("--out", default="runs/build", help="output directory (model, report)")
    p.add_argument("--name", default="ser_edge", help="model file name stem")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience on validation-speaker UAR")
    p.add_argument("--arch", choices=("crnn", "lstm", "mlp"), default="crnn")
    p.add_argument("--conv1", type=int, default=32)
    p.add_argument("--conv2", type=int, default=64)
    p.add_argument("--lstm", type=int, default=64)
    p.add_argument("--dense", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--feature", choices=("logmel", "mfcc"), default="logmel")
    p.add_argument("--window", type=float, default=2.0, help="window length, seconds")
    p.add_argument("--hop", type=float, default=1.0, help="window stride at inference, seconds")
    p.add_argument("--folds", type=int, default=4, help="speaker-grouped folds; one is the test set")
    p.add_argument("--test-fold", type=int, default=0)
    p.add_argument("--augment", type=int, default=0, help="augmented copies per training clip")
    p.add_argument("--merge-calm", action="store_true", help="merge RAVDESS calm into neutral")
    p.add_argument("--clips-per-label", type=int, default=0, help="synthetic corpus size per label (default 64)")
    p.add_argument("--no-class-weight", action="store_true")
    p.add_argument("--no-tflm", action="store_true", help="skip the TFLite Micro row and arena measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="feature cache dir (default ~/.cache/ser-edge/features)")
    p.add_argument("--no-cache", action="store_true")
    p.set_defaults(func=_cmd_build)

    p = subparsers.add_parser("convert", help="redo the int8 conversion of a built model from its float weights")
    p.add_argument("model", help="a .tflite written by 'build' (its _float.npz must be next to it)")
    p.add_argument("--out", default=None, help="output .tflite (default: overwrite)")
    p.add_argument("--n-calib", type=int, default=500, help="calibration windows")
    p.set_defaults(func=_cmd_convert)

    p = subparsers.add_parser("check-model", help="check a .tflite is pure int8 builtins; ops, metadata, arena")
    p.add_argument("model")
    p.add_argument("--no-arena", action="store_true")
    p.set_defaults(func=_cmd_check)

    p = subparsers.add_parser("report", help="re-render report.md and plots from a build's report.json")
    p.add_argument("build_dir")
    p.set_defaults(func=_cmd_report)
