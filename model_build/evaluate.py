"""Classification metrics (numpy only) and the four-row float-vs-int8 validation, through the runtime.

Every row classifies each held-out clip exactly as ``ser-edge run`` does: the clip's audio goes
through :class:`edge_runtime.classifier.StreamingClassifier` (the window policy, the speech gate,
the tail flush and short-clip padding, the mean-log-probability clip label), so a clip the
runtime gives no label (all windows gated) counts as a miss, and the published UAR is what a user
gets. Rows differ only in the model behind the classifier:

1. ``keras_float_twin``   Keras float model on float64-twin features (the "ideal" float system)
2. ``keras_float_fixed``  Keras float model on the fixed-point front end's features
3. ``int8_litert``        the int8 .tflite in LiteRT (``edge_runtime.interpreter.IntModel``) on the
                          fixed-point front end with the runtime's integer quantiser: the device path
4. ``int8_tflm``          the same in TensorFlow Lite Micro (``IntModel(backend="tflm")``)

Row 2 vs 1 isolates the fixed-point front end's cost, 3 vs 2 the quantisation's, 4 vs 3 the
difference between interpreters. Cached front-end features may be passed in; they are what the
runtime's front end computes for the same audio (``tests/test_frontend_streaming.py``), so only the
time to compute them is saved.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NO_LABEL = -1  # a clip the runtime gave no emotion (every window gated, or too short)


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``cm[i, j]`` = clips of true class i predicted as j (predictions ``NO_LABEL`` are left out)."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    ok = y_pred >= 0
    np.add.at(cm, (y_true[ok], y_pred[ok]), 1)
    return cm


def metrics(y_true, y_pred, labels) -> dict:
    """Accuracy, UAR (mean per-class recall over classes present), macro F1, per-class P/R/F1.

    Classes absent from ``y_true`` are excluded from UAR and macro F1 (their recall is undefined);
    precision of a never-predicted class is 0. A prediction of ``NO_LABEL`` (-1) is a miss for its
    true class (counted in ``no_label``).
    """
    n = len(labels)
    y_true = np.asarray(y_true, int)
    y_pred = np.asarray(y_pred, int)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    support = np.bincount(y_true, minlength=n)[:n] if y_true.size else np.zeros(n, np.int64)
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
        "no_label": int(np.sum(y_pred < 0)),
    }


@dataclass
class EvalInputs:
    """What the validation needs: the held-out clips' audio, labels and (optionally) their cached
    front-end features (raw fixed-point, and float64 twin for row 1)."""

    audios: list  # int16 clips at the model's rate
    y_clip: np.ndarray  # (n_clips,) true labels
    feats_fixed: list | None = None  # raw fixed-point features per clip (a cache of the front end)
    feats_twin: list | None = None  # float64-twin features per clip (row 1); computed if absent


def quantize_features(q_fixed: np.ndarray, frac_bits: int, input_scale: float, zero_point: int) -> np.ndarray:
    """Raw fixed-point features -> int8 model input with the runtime's integer quantiser."""
    from edge_runtime.interpreter import FeatureQuantizer

    fq = FeatureQuantizer(2.0 ** -frac_bits, input_scale, zero_point)
    return np.asarray(fq(np.asarray(q_fixed).astype(np.int32)), np.int8)


class KerasWindowModel:
    """A Keras float model behind :class:`~edge_runtime.interpreter.IntModel`'s interface, so the
    float rows run through the same :class:`StreamingClassifier` (policy, gate, labels).

    ``meta`` is the int8 model's metadata (labels, window, front end); features are fed as real
    log2 units (``q / 2**frac_bits``), what the model was trained on.
    """

    backend = "keras"
    model_hash = "keras-float"

    def __init__(self, keras_model, meta) -> None:
        from edge_runtime.interpreter import check_frontend

        self.keras = keras_model
        self.meta = meta
        self.frontend_config = check_frontend(meta)
        self.labels = meta.labels
        self._scale = 2.0 ** -self.frontend_config.frac_bits
        self._x = np.zeros((1, meta.window_frames, meta.n_features), np.float32)
        self._recording: list | None = None
        self._replay: dict | None = None
        probe = np.asarray(self.keras(self._x, training=False))[0]
        self.outputs_probabilities = bool(probe.min() >= 0 and abs(probe.sum() - 1.0) < 1e-3)

    def quantize(self, feats: np.ndarray) -> np.ndarray:
        return (np.asarray(feats, np.float64) * self._scale).astype(np.float32)

    def predict_window(self, window: np.ndarray) -> np.ndarray:
        w = np.asarray(window, np.float32)
        if self._recording is not None:  # pass 1 of a batched evaluation: remember the window
            self._recording.append(np.array(w))
            return np.zeros(len(self.labels))
        if self._replay is not None:  # pass 2: the batched output of the same window, if recorded
            out = self._replay.get(w.tobytes())
            if out is not None:
                return out
        self._x[0] = w  # a window pass 1 did not see (e.g. a short utterance's tie-break window)
        return np.asarray(self.keras(self._x, training=False), np.float64)[0]

    def record(self) -> None:
        """Start pass 1 of a batched run: windows are collected, not classified."""
        self._recording, self._replay = [], None

    def replay(self) -> None:
        """Classify the recorded windows in one batch; pass 2 looks their outputs up by content
        (so a window pass 1 did not produce is still classified, one call)."""
        rec = self._recording or []
        out = (np.asarray(self.keras.predict(np.stack(rec), batch_size=256, verbose=0), np.float64)
               if rec else np.zeros((0, len(self.labels))))
        self._replay = {w.tobytes(): o for w, o in zip(rec, out)}
        self._recording = None

    def stop_replay(self) -> None:
        self._recording = self._replay = None

    def log_probabilities(self, out: np.ndarray) -> np.ndarray:
        from edge_runtime.window_policy import log_softmax

        if self.outputs_probabilities:
            p = np.maximum(np.asarray(out, np.float64), 0.0)
            return np.log(np.maximum(p / max(p.sum(), 1e-12), 1e-12))
        return log_softmax(out)

    def probabilities(self, out: np.ndarray) -> np.ndarray:
        return np.exp(self.log_probabilities(out))


@dataclass
class ClipEval:
    """Per-clip results of one model through the runtime."""

    pred: np.ndarray  # (n_clips,) the summary record's label index, NO_LABEL if none
    probs: np.ndarray  # (n_clips, C) the summary's mean probabilities (zeros if no speech window)
    window_top1: np.ndarray  # (n_windows,) top-1 of every window's model output, gated or not
    window_scores: np.ndarray  # (n_windows, C) every window's raw model output
    window_gated: np.ndarray  # (n_windows,) bool
    reasons: list = field(default_factory=list)  # per clip: None or the summary's reason
    # per clip: (n_speech_windows, C) log-probabilities of the windows the summary averages
    # (what a clip-level temperature is fitted on: model_build.calibrate.fit_clip_temperature)
    speech_log_probs: list = field(default_factory=list)

    @property
    def clips_without_label(self) -> int:
        return int(np.sum(self.pred < 0))


def runtime_eval(model, audios, feats=None, *, gate="default", policy=None, progress: str | None = None) -> ClipEval:
    """Classify each clip with ``StreamingClassifier(model)`` as ``ser-edge run`` does.

    ``model``: an :class:`IntModel`, a :class:`KerasWindowModel`, or .tflite bytes/path (LiteRT,
    1 thread, as ``ser-edge run``). ``feats``: cached raw front-end features per clip (optional).
    ``gate``: ``"default"`` (the runtime's), a ``GateConfig`` or ``None``.
    """
    from edge_runtime.classifier import DEFAULT_GATE, StreamingClassifier
    from edge_runtime.interpreter import IntModel

    if isinstance(model, (bytes, bytearray, str)) or hasattr(model, "__fspath__"):
        model = IntModel(model)
    clf = StreamingClassifier(model, gate=DEFAULT_GATE if gate == "default" else gate, policy=policy)
    if hasattr(model, "record"):  # Keras: collect every window first, classify them in one batch
        model.record()
        for i in range(len(audios)):
            clf.classify_clip(audios[i], features=None if feats is None else feats[i])
        model.replay()
        try:
            return _runtime_pass(clf, audios, feats, progress)
        finally:
            model.stop_replay()
    return _runtime_pass(clf, audios, feats, progress)


def _runtime_pass(clf, audios, feats, progress) -> "ClipEval":
    pred, probs, top, scores, gated, reasons, speech_lp = [], [], [], [], [], [], []
    it = range(len(audios))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=progress, unit="clip", leave=False)
    for i in it:
        wins, _, summary = clf.classify_clip(audios[i], features=None if feats is None else feats[i])
        pred.append(NO_LABEL if summary.label_index is None else summary.label_index)
        probs.append(summary.probs)
        reasons.append(summary.reason)
        C = len(clf.labels)
        speech_lp.append(np.array([w.log_probs for w in wins if not w.gated], np.float64).reshape(-1, C))
        for w in wins:
            if w.extra.get("kind") in ("short_shifted", "tiebreak"):  # model-dependent tie-break windows
                continue
            sc = np.asarray(w.scores_int8, np.float64)
            top.append(int(np.argmax(sc)))
            scores.append(np.asarray(w.scores_int8))
            gated.append(w.gated)
    C = len(clf.labels)
    return ClipEval(np.array(pred, np.int64), np.array(probs).reshape(-1, C), np.array(top, np.int64),
                    np.array(scores).reshape(-1, C), np.array(gated, bool), reasons, speech_lp)


def validate(keras_model, model_bytes: bytes, inputs: EvalInputs, labels, run_tflm: bool = True,
             progress=None) -> dict:
    """Run the four rows through the runtime; return per-row metrics, clip/window agreement, the
    number of clips without a label, and TFLM-vs-LiteRT int8 comparisons."""
    from edge_runtime.interpreter import IntModel, compare_int8
    from edge_runtime.model_metadata import read_metadata

    from .features import float_twin_features

    log = progress or (lambda s: None)
    meta = read_metadata(model_bytes)
    fe = meta.frontend_config()
    twin = inputs.feats_twin
    if twin is None:
        twin = float_twin_features(inputs.audios, fe, progress=False)
    keras = KerasWindowModel(keras_model, meta)
    runs: dict[str, ClipEval] = {}
    log(f"validate: {len(inputs.audios)} clips through the runtime (window policy + speech gate)")
    runs["keras_float_twin"] = runtime_eval(keras, inputs.audios, twin)
    runs["keras_float_fixed"] = runtime_eval(keras, inputs.audios, inputs.feats_fixed)
    runs["int8_litert"] = runtime_eval(IntModel(model_bytes, backend="litert"), inputs.audios, inputs.feats_fixed)
    if run_tflm:
        log("validate: int8 in TensorFlow Lite Micro")
        runs["int8_tflm"] = runtime_eval(IntModel(model_bytes, backend="tflm"), inputs.audios, inputs.feats_fixed)
    rows = {}
    for name, r in runs.items():
        rows[name] = metrics(inputs.y_clip, r.pred, labels)
        rows[name]["clips_without_label"] = r.clips_without_label
    ref, ref_fixed = runs["keras_float_twin"], runs["keras_float_fixed"]
    for name, r in runs.items():
        rows[name]["clip_agreement_vs_float"] = float(np.mean(r.pred == ref.pred))
        rows[name]["clip_agreement_vs_float_fixed"] = float(np.mean(r.pred == ref_fixed.pred))
        rows[name]["window_agreement_vs_float"] = float(np.mean(r.window_top1 == ref.window_top1))
        rows[name]["window_agreement_vs_float_fixed"] = float(np.mean(r.window_top1 == ref_fixed.window_top1))
    lite = runs["int8_litert"]
    out = {"rows": rows, "n_windows": int(len(lite.window_top1)), "n_clips": int(len(inputs.y_clip)),
           "speech_windows": int((~lite.window_gated).sum()), "eval_path": "runtime",
           "ece_clip_int8": clip_ece(lite.pred, lite.probs, inputs.y_clip)}
    if run_tflm:
        out["tflm_vs_litert"] = compare_int8(lite.window_scores.astype(np.int8), runs["int8_tflm"].window_scores.astype(np.int8))
    return out


def clip_ece(pred, probs, y, n_bins: int = 15) -> float:
    """Expected calibration error of clip labels: equal-width bins of the label's confidence (its mean
    probability), |accuracy - mean confidence| weighted by the bin's share; clips without a label
    are left out."""
    pred, probs, y = np.asarray(pred), np.asarray(probs, np.float64), np.asarray(y)
    ok = pred >= 0
    if not ok.any():
        return 0.0
    conf = probs[ok, pred[ok]]
    correct = (pred[ok] == y[ok]).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    return float(sum((bins == b).mean() * abs(correct[bins == b].mean() - conf[bins == b].mean())
                     for b in range(n_bins) if (bins == b).any()))


def int8_clip_probs(model_bytes: bytes, clip_feats, quant=None, fe=None, window_frames=None, hop_frames=None,
                    audios=None) -> np.ndarray:
    """Clip probabilities of an int8 model through the runtime (LiteRT): the summary record's mean
    probabilities; a clip without a label gets a row of zeros. With ``audios`` the speech gate
    runs as in ``ser-edge run``; without, windows are fed as features (no gate). ``quant``, ``fe``,
    ``window_frames``, ``hop_frames`` are read from the model; the arguments are kept for callers.
    """
    from edge_runtime.interpreter import IntModel

    model = IntModel(model_bytes, backend="litert")
    if audios is None:  # features only: audio of the right length, gate off
        hop, L = model.frontend_config.hop_length, model.frontend_config.frame_length
        audios = [np.zeros((len(f) - 1) * hop + L if len(f) else 0, np.int16) for f in clip_feats]
        r = runtime_eval(model, audios, clip_feats, gate=None)
    else:
        r = runtime_eval(model, audios, clip_feats)
    return r.probs


def restricted_uar(clip_probs: np.ndarray, y, classes, labels) -> float:
    """UAR when the decision is restricted to ``classes`` (a corpus with fewer classes than the model)."""
    m = np.zeros(clip_probs.shape[1], bool)
    m[list(classes)] = True
    pred = np.where(m[None, :], clip_probs, -1.0).argmax(1)
    pred[np.asarray(clip_probs).max(1) <= 0] = NO_LABEL  # the runtime gave no label
    return metrics(y, pred, labels)["uar"]
