"""Classification metrics (numpy only) and the four-row float-vs-int8 validation.

Rows, all on the same held-out speakers' clips (window scores aggregated per clip):

1. ``keras_float_twin``   Keras float model on float64-twin features (the "ideal" float system)
2. ``keras_float_fixed``  Keras float model on the fixed-point front end's features
3. ``int8_litert``        int8 .tflite in LiteRT on fixed-point features
4. ``int8_tflm``          int8 .tflite in TensorFlow Lite Micro on fixed-point features

Row 2 vs 1 isolates the fixed-point front end's cost, 3 vs 2 the quantisation's, 4 vs 3 the
difference between interpreters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .windows import aggregate, softmax


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``cm[i, j]`` = clips of true class i predicted as j."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def metrics(y_true, y_pred, labels) -> dict:
    """Accuracy, UAR (mean per-class recall over classes present), macro F1, per-class P/R/F1.

    Classes absent from ``y_true`` are excluded from UAR and macro F1 (their recall is undefined);
    precision of a never-predicted class is 0.
    """
    n = len(labels)
    y_true = np.asarray(y_true, int)
    y_pred = np.asarray(y_pred, int)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n),
                   where=(precision + recall) > 0)
    present = support > 0
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {lab: {"precision": float(precision[i]), "recall": float(recall[i]),
                            "f1": float(f1[i]), "support": int(support[i])}
                      for i, lab in enumerate(labels)},
        "confusion": cm.tolist(),
    }


@dataclass
class EvalInputs:
    """What the validation needs: the test clips' windows under both front ends."""

    X_twin: np.ndarray  # (N, T, F) float log2 units from the float64 twin
    X_fixed: np.ndarray  # (N, T, F) float log2 units from the fixed-point front end (q / 2**frac)
    Q_fixed: np.ndarray  # (N, T, F) raw fixed-point integers (what the device quantises to int8)
    clip_index: np.ndarray  # (N,) window -> clip
    y_clip: np.ndarray  # (n_clips,) true labels


def quantize_features(q_fixed: np.ndarray, frac_bits: int, input_scale: float, zero_point: int) -> np.ndarray:
    """Raw fixed-point features -> int8 model input, via the device's own quantiser when available."""
    try:
        from edge_runtime.interpreter import FeatureQuantizer

        fq = FeatureQuantizer(2.0 ** -frac_bits, input_scale, zero_point)
        return np.asarray(fq(np.asarray(q_fixed).astype(np.int32)), np.int8)
    except (ImportError, AttributeError, TypeError):
        from .tflm import quantize_input

        return quantize_input(np.asarray(q_fixed, np.float64) / 2.0 ** frac_bits, input_scale, zero_point)


def validate(keras_model, model_bytes: bytes, inputs: EvalInputs, labels, quant: dict, frac_bits: int,
             run_tflm: bool = True, progress=None) -> dict:
    """Run the four rows; return per-row metrics, window/clip agreement and raw int8 comparisons."""
    from .tflm import compare_int8, dequantize
    from .tflm import run_litert as _litert
    from .tflm import run_tflm as _tflm

    log = progress or (lambda s: None)
    n_clips = len(inputs.y_clip)
    win_probs: dict[str, np.ndarray] = {}
    log("validate: Keras float on float64-twin and fixed-point features")
    win_probs["keras_float_twin"] = keras_model.predict(inputs.X_twin.astype(np.float32), batch_size=256, verbose=0)
    win_probs["keras_float_fixed"] = keras_model.predict(inputs.X_fixed.astype(np.float32), batch_size=256, verbose=0)
    Xq = quantize_features(inputs.Q_fixed, frac_bits, quant["input_scale"], quant["input_zero_point"])
    log(f"validate: int8 in LiteRT ({len(Xq)} windows)")
    s_lite = _litert(model_bytes, Xq)
    win_probs["int8_litert"] = softmax(dequantize(s_lite, quant["output_scale"], quant["output_zero_point"]))
    s_tflm = None
    if run_tflm:
        log(f"validate: int8 in TFLite Micro ({len(Xq)} windows)")
        s_tflm = _tflm(model_bytes, Xq)
        win_probs["int8_tflm"] = softmax(dequantize(s_tflm, quant["output_scale"], quant["output_zero_point"]))
    rows = {}
    clip_pred = {}
    for name, p in win_probs.items():
        clip_pred[name] = aggregate(p, inputs.clip_index, n_clips).argmax(1)
        rows[name] = metrics(inputs.y_clip, clip_pred[name], labels)
    ref = "keras_float_twin"
    for name in rows:
        rows[name]["clip_agreement_vs_float"] = float(np.mean(clip_pred[name] == clip_pred[ref]))
        rows[name]["window_agreement_vs_float"] = float(np.mean(win_probs[name].argmax(1) == win_probs[ref].argmax(1)))
        rows[name]["window_agreement_vs_float_fixed"] = float(
            np.mean(win_probs[name].argmax(1) == win_probs["keras_float_fixed"].argmax(1)))
        rows[name]["clip_agreement_vs_float_fixed"] = float(np.mean(clip_pred[name] == clip_pred["keras_float_fixed"]))
    out = {"rows": rows, "n_windows": int(len(Xq)), "n_clips": int(n_clips)}
    if s_tflm is not None:
        out["tflm_vs_litert"] = compare_int8(s_lite, s_tflm)
        out["tflm_vs_litert_builtin"] = compare_int8(_litert(model_bytes, Xq, kernels="builtin"), s_tflm)
    return out


def int8_clip_probs(model_bytes: bytes, clip_feats, quant: dict, fe, window_frames: int, hop_frames: int) -> np.ndarray:
    """Clip probabilities (mean of window softmax) of an int8 model in LiteRT on raw fixed-point
    features ``clip_feats`` (list of (n_frames, F) arrays), windows as in the validation."""
    from .tflm import dequantize, run_litert
    from .windows import make_windows, silence_frame

    Q, ci, _ = make_windows(clip_feats, window_frames, hop_frames, silence_frame(fe))
    Xq = quantize_features(Q, fe.frac_bits, quant["input_scale"], quant["input_zero_point"])
    p = softmax(dequantize(run_litert(model_bytes, Xq), quant["output_scale"], quant["output_zero_point"]))
    return aggregate(p, ci, len(clip_feats))


def restricted_uar(clip_probs: np.ndarray, y, classes, labels) -> float:
    """UAR when the decision is restricted to ``classes`` (a corpus with fewer classes than the model)."""
    m = np.zeros(clip_probs.shape[1], bool)
    m[list(classes)] = True
    pred = np.where(m[None, :], clip_probs, -1.0).argmax(1)
    return metrics(y, pred, labels)["uar"]
