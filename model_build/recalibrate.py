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


def recalibrate(model_path, val_audios, val_y, out_path, *, val_feats=None, log=print) -> dict:
    """Fit the clip-level temperature of the model at ``model_path`` on validation clips
    (``val_audios``: int16 PCM, ``val_y``: label indices, ``val_feats``: their cached raw
    front-end features, optional) and write the recalibrated model to ``out_path``.
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
    reconvert(model_path, out_path, temperature=t, calibration=cal)
    return cal
