"""Clip-level temperature: calibrate the probability the runtime *reports*, after training.

:func:`model_build.pipeline.train_and_convert` fits its temperature on single validation windows.
What ``ser-edge run`` reports for a clip (and what ``--min-confidence`` and the clip ECE read) is
the mean of the clip's speech-window probabilities (:func:`edge_runtime.window_policy.aggregate`),
a different quantity: averaging windows that mostly agree makes a clip label more often right than
its mean window probability says. :func:`recalibrate` re-fits the temperature on the validation
speakers' clips at that level, through the runtime (window policy and speech gate, float model),
folds it into the logits and redoes the int8 conversion from the float weights kept next to the
model (:func:`model_build.pipeline.reconvert`). The clip label never changes (a temperature does
not move the argmax of a mean log-probability); the int8 rounding of the new logits may move a
window's top-1 where two classes were within one step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def recalibrate(model_path, val_audios, val_y, out_path, *, val_feats=None, log=print, input_range=None) -> dict:
    """Fit the clip-level temperature of the model at ``model_path`` on validation clips
    (``val_audios``: int16 PCM, ``val_y``: label indices, ``val_feats``: their cached raw
    front-end features, optional) and write the recalibrated model to ``out_path``; ``input_range``:
    how its re-conversion takes the int8 input range (:class:`model_build.convert.InputRange`; default:
    the rule its metadata records, min/max if none).
    Returns the metadata's new ``calibration`` record (validation clip ECE/NLL before and after).
    """
    from edge_runtime.model_metadata import read_metadata

    from .calibrate import clip_nll, clip_probabilities, fit_clip_temperature
    from .evaluate import KerasWindowModel, clip_ece, runtime_eval
    from .pipeline import load_float, reconvert

    model_path = Path(model_path)
    meta = read_metadata(model_path.read_bytes())
    keras, _, _ = load_float(model_path.with_name(model_path.stem + "_float.npz"))  # uncalibrated logits
    r = runtime_eval(KerasWindowModel(keras, meta), val_audios, val_feats)
    y = np.asarray(val_y, int)
    t = fit_clip_temperature(r.speech_log_probs, y)
    t_window = meta.extra.get("calibration", {}).get("temperature")  # the window-level fit, if any
    before = clip_probabilities(r.speech_log_probs, t_window or 1.0)
    after = clip_probabilities(r.speech_log_probs, t)
    cal = {"method": "temperature scaling of the runtime's clip probabilities (mean over speech windows) on "
                     "the validation speakers' clips, folded into the logits layer",
           "level": "clip", "temperature": round(t, 4), "n_clips": int(len(y)),
           "n_windows": int(sum(len(c) for c in r.speech_log_probs)),
           "window_level_temperature": t_window,
           "val_clip_ece_before": round(clip_ece(r.pred, before, y), 4),
           "val_clip_ece_after": round(clip_ece(r.pred, after, y), 4),
           "val_clip_nll_before": round(clip_nll(r.speech_log_probs, y, t_window or 1.0), 4),
           "val_clip_nll_after": round(clip_nll(r.speech_log_probs, y, t), 4)}
    log(f"{model_path.name}: clip-level temperature {t:.3f} (window-level {t_window}): validation clip ECE "
        f"{cal['val_clip_ece_before']:.3f} -> {cal['val_clip_ece_after']:.3f}")
    reconvert(model_path, out_path, temperature=t, calibration=cal, input_range=input_range)
    return cal



def recalibrate_trained(tm, path, val_audios, val_y, *, val_feats=None, log=print):
    """:func:`recalibrate` in place for a model just trained and written to ``path``
    (``train_and_convert``'s ``TrainedModel`` ``tm``): the clip-level fit the recipe's
    ``calibrate_level: clip`` adds after training (bench/pretrained.py for the shipped model,
    bench/accuracy.py for every fold model). Returns ``tm`` with the re-converted model's bytes,
    metadata and graph; its float model and training record are unchanged."""
    from dataclasses import replace

    from edge_runtime.model_metadata import read_metadata_json

    from .convert import inspect_graph

    path = Path(path)
    recalibrate(path, val_audios, val_y, path, val_feats=val_feats, log=log)
    data = path.read_bytes()
    return replace(tm, model_bytes=data, metadata=read_metadata_json(data, str(path)), graph=inspect_graph(data))

# What the shipped model must keep through a recalibration (edge_runtime.interpreter checks the front
# end and its tables at load; the firmware limits are docs/model_card.md's).
MAX_MODEL_BYTES = 65536
MAX_ARENA_BYTES = 32768
_CHANGED_KEYS = {"calibration", "output_scale", "output_zero_point", "input_scale", "input_zero_point", "ops",
                 "params", "input_range"}  # what a re-conversion may rewrite; every other metadata key must survive as is


def recalibrate_shipped(model_path, float_npz, data_root, out_path, *, report_path=None, log=print) -> dict:
    """Recalibrate an installed model (``model_path``, its float weights ``float_npz``) on its own
    validation speakers (metadata ``validation_speakers``, RAVDESS under ``data_root``), check the
    result and only then write it to ``out_path`` (+ ``.json`` sidecar).

    Checks (any failure raises :class:`RuntimeError` and writes nothing): the validation clips' int8
    labels through the runtime are unchanged, every metadata key but the re-conversion's own
    (:data:`_CHANGED_KEYS`) is kept verbatim (``frontend_hash``, ``frontend_tables_checksum``...),
    size <= :data:`MAX_MODEL_BYTES`, TFLM arena <= :data:`MAX_ARENA_BYTES`. ``report_path``: a build
    report.json (``ser-edge build`` / bench/pretrained.py) whose metadata, model and four-row validation
    are rewritten for the new model. Returns a summary dict.
    """
    import dataclasses
    import shutil
    import tempfile

    from edge_runtime.interpreter import IntModel, min_arena_size
    from edge_runtime.model_metadata import read_metadata

    from .corpora import load_corpus, open_corpus
    from .embed_metadata import read_metadata as read_metadata_dict
    from .evaluate import clip_ece, runtime_eval
    from .features import fixed_point_features

    model_path, out_path = Path(model_path), Path(out_path)
    old_bytes = model_path.read_bytes()
    old_md = read_metadata_dict(model_path)
    meta = read_metadata(old_bytes)
    speakers = set(old_md.get("validation_speakers") or ())
    if not speakers:
        raise RuntimeError(f"{model_path}: metadata names no validation_speakers to calibrate on")
    idx = open_corpus(Path(data_root) / "ravdess")
    keep = tuple(c for c in idx.clips if c.speaker in speakers)
    if {c.speaker for c in keep} != speakers:
        raise RuntimeError(f"{data_root}: RAVDESS lacks validation speakers {sorted(speakers - {c.speaker for c in keep})}")
    clips, audios, _ = load_corpus(dataclasses.replace(idx, clips=keep), progress=True)
    lab = {name: i for i, name in enumerate(meta.labels)}
    y = np.array([lab[c.label] for c in clips])
    feats = fixed_point_features(audios, meta.frontend_config())
    log(f"validation speakers {sorted(speakers)}: {len(clips)} clips")

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src" / "default.tflite"
        src.parent.mkdir()
        shutil.copyfile(model_path, src)
        shutil.copyfile(float_npz, src.with_name("default_float.npz"))
        new = Path(tmp) / "out" / "default.tflite"
        cal = recalibrate(src, audios, y, new, val_feats=feats, log=log)
        new_bytes, new_md = new.read_bytes(), read_metadata_dict(new)
        before = runtime_eval(IntModel(old_bytes), audios, feats)
        after = runtime_eval(IntModel(new_bytes), audios, feats)
        changed = np.nonzero(before.pred != after.pred)[0]
        # A temperature never moves a clip label (the mean log-probability's argmax), but the
        # re-conversion re-rounds every int8 logit (its output scale changes: measured, it does so even
        # at the old T), so a clip whose two best classes were within one int8 step may flip. Only such
        # ties are tolerated; any other change means the wrong model or weights.
        step = float(old_md["output_scale"])
        margin = [float(np.diff(np.sort(before.speech_log_probs[i].mean(0))[-2:])[0])
                  if len(before.speech_log_probs[i]) else np.inf for i in changed]
        ties = [int(i) for i, m in zip(changed, margin) if m < step]
        flips = [int(i) for i, m in zip(changed, margin) if m >= step]
        lost = sorted(k for k in old_md if k not in _CHANGED_KEYS and new_md.get(k) != old_md[k])
        arena = min_arena_size(new_bytes)
        problems = ([f"{len(flips)} validation clip labels changed: {[clips[i].path for i in flips]}"] if flips else []) \
            + ([f"metadata keys not kept: {lost}"] if lost else []) \
            + ([f"model {len(new_bytes)} bytes > {MAX_MODEL_BYTES}"] if len(new_bytes) > MAX_MODEL_BYTES else []) \
            + ([f"arena {arena['arena_bytes']} > {MAX_ARENA_BYTES}"] if arena["arena_bytes"] > MAX_ARENA_BYTES else [])
        if problems:
            raise RuntimeError(f"{model_path}: recalibrated model refused (nothing written): " + "; ".join(problems))
        IntModel(new_bytes)  # loads through the runtime's checks (front end, tables checksum)
        summary = {
            "temperature_before": old_md.get("calibration", {}).get("temperature"), "temperature_after": cal["temperature"],
            "calibration": cal, "n_clips": len(clips), "clip_labels_changed": len(changed),
            "clip_labels_changed_at_int8_ties": [{"clip": Path(clips[i].path).name, "label": clips[i].label,
                                                  "old": meta.labels[before.pred[i]], "new": meta.labels[after.pred[i]],
                                                  "old_top2_margin": round(m, 5)} for i, m in zip(changed, margin)],
            "val_clip_accuracy_int8_before": float(np.mean(before.pred == y)),
            "val_clip_accuracy_int8_after": float(np.mean(after.pred == y)),
            "val_clip_ece_int8_before": round(clip_ece(before.pred, before.probs, y), 4),
            "val_clip_ece_int8_after": round(clip_ece(after.pred, after.probs, y), 4),
            "window_top1_agreement_old_vs_new": float(np.mean(before.window_top1 == after.window_top1)),
            "model_bytes": len(new_bytes), **arena,
        }
        if report_path:
            _update_report(Path(report_path), new, new_md, arena, clips, audios, feats, y, log)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(new, out_path)
        shutil.copyfile(new.with_suffix(".json"), out_path.with_suffix(".json"))
    log(f"wrote {out_path}: T {summary['temperature_before']} -> {summary['temperature_after']}, int8 validation "
        f"clip ECE {summary['val_clip_ece_int8_before']:.3f} -> {summary['val_clip_ece_int8_after']:.3f}, "
        f"{len(new_bytes)} bytes, arena {arena['arena_bytes']}")
    return summary


def _update_report(report_path: Path, model: Path, md: dict, arena: dict, clips, audios, feats, y, log) -> None:
    """Rewrite a build report's metadata, model and validation rows for the recalibrated ``model``."""
    import json

    from .evaluate import EvalInputs, validate
    from .pipeline import load_float

    rep = json.loads(report_path.read_text())
    keras, _, _ = load_float(model.with_name(model.stem + "_float.npz"))
    if sorted({c.speaker for c in clips}) != sorted(rep["speakers"]["validation"]):
        raise RuntimeError(f"{report_path}: its validation speakers are not the model's")
    val = validate(keras, model.read_bytes(), EvalInputs(audios=audios, y_clip=y, feats_fixed=feats),
                   list(md["labels"]), run_tflm=True, progress=log)
    rep["validation"], rep["metadata"] = val, md
    rep["model"].update(bytes=model.stat().st_size, **arena,
                        quant={k: md[k] for k in ("input_scale", "input_zero_point", "output_scale", "output_zero_point")})
    report_path.write_text(json.dumps(rep, indent=1, default=float) + "\n")


def main(argv=None) -> int:
    """``python -m model_build.recalibrate``: clip-level temperature for an installed model."""
    import argparse
    import json
    import os
    import sys

    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(prog="python -m model_build.recalibrate", description=recalibrate_shipped.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(here / "edge_runtime" / "models" / "default.tflite"))
    ap.add_argument("--float", dest="float_npz", required=True,
                    help="the model's float weights (<stem>_float.npz of its build, e.g. runs/pretrained/default_float.npz)")
    ap.add_argument("--data", default=os.environ.get("SER_EDGE_DATA", str(here.parent / "shared" / "data")),
                    help="folder holding ravdess/ (default: $SER_EDGE_DATA, else ../shared/data)")
    ap.add_argument("--out", default=None, help="output .tflite (default: --model, in place)")
    ap.add_argument("--report", default=None, help="build report.json to update (then: bench/pretrained.py --json-only)")
    ap.add_argument("--summary", default=None, help="write the summary JSON here")
    args = ap.parse_args(argv)
    for p in (args.model, args.float_npz):
        if not Path(p).is_file():
            print(f"error: {p}: no such file", file=sys.stderr)
            return 2
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        summary = recalibrate_shipped(args.model, args.float_npz, args.data, args.out or args.model,
                                      report_path=args.report, log=log)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(summary, indent=1) + "\n"
    if args.summary:
        Path(args.summary).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
