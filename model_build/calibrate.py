"""Confidence calibration: temperature scaling fitted on validation speakers, and its error (ECE).

A model's softmax outputs are over-confident after training with early stopping on accuracy; the
runtime's ``--min-confidence`` threshold only means what it says if a window reported at 0.7 is right
about 70 % of the time. Temperature scaling divides the logits by one scalar ``T`` fitted to minimise
the negative log-likelihood of held-out (validation-speaker) windows; it never changes the argmax.

Shipping it needs no runtime change: :func:`fold_temperature` divides the final ``logits`` Dense
layer's kernel and bias by ``T`` before int8 conversion, so every interpreter (LiteRT, TFLite Micro,
the firmware) emits calibrated logits; ``T`` is recorded in the model metadata for reference.
"""
from __future__ import annotations

import numpy as np


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels ``y`` under ``softmax(logits / temperature)``."""
    lp = _log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-lp[np.arange(len(y)), np.asarray(y, int)].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising :func:`nll` on ``(logits, y)`` (bounded search in log T)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, np.float64)
    if len(logits) == 0:
        raise ValueError("cannot fit a temperature on zero examples")
    r = minimize_scalar(lambda lt: nll(logits, y, float(np.exp(lt))), bounds=tuple(np.log(bounds)),
                        method="bounded", options={"xatol": 1e-4})
    return float(np.exp(r.x))


def clip_probabilities(clip_log_probs, temperature: float = 1.0) -> np.ndarray:
    """Each clip's reported probabilities at ``temperature``: the runtime's summary rule
    (:func:`edge_runtime.window_policy.aggregate`: mean over the clip's speech windows of
    ``softmax(log_probs / temperature)``); a clip without speech windows gets a row of zeros.

    ``clip_log_probs``: per clip, its speech windows' log-probabilities (or logits: a per-window
    constant does not change a softmax), e.g. :attr:`model_build.evaluate.ClipEval.speech_log_probs`.
    """
    from edge_runtime.window_policy import aggregate, log_softmax

    rows = []
    for lp in clip_log_probs:
        lp = np.asarray(lp, np.float64)
        rows.append(aggregate(log_softmax(lp / temperature))[1] if len(lp) else None)
    c = next((len(r) for r in rows if r is not None), 0)
    return np.array([r if r is not None else np.zeros(c) for r in rows], np.float64).reshape(len(rows), c)


def clip_nll(clip_log_probs, y, temperature: float = 1.0) -> float:
    """Mean negative log of the label's reported clip probability (:func:`clip_probabilities`),
    over the clips with speech windows."""
    p = clip_probabilities(clip_log_probs, temperature)
    y = np.asarray(y, int)
    ok = p.sum(axis=1) > 0
    return float(-np.log(np.maximum(p[ok, y[ok]], 1e-12)).mean())


def fit_clip_temperature(clip_log_probs, y, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising :func:`clip_nll`: calibrates the probability the runtime reports
    for a clip (the mean over its windows, what ``--min-confidence`` and the clip ECE read), not
    single windows. The clip label (argmax of the mean log-probability) does not depend on it."""
    from scipy.optimize import minimize_scalar

    if not any(len(c) for c in clip_log_probs):
        raise ValueError("cannot fit a temperature on zero clips with speech windows")
    r = minimize_scalar(lambda lt: clip_nll(clip_log_probs, y, float(np.exp(lt))), bounds=tuple(np.log(bounds)),
                        method="bounded", options={"xatol": 1e-4})
    return float(np.exp(r.x))


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - mean confidence| x bin share."""
    p = np.asarray(probs, np.float64)
    if len(p) == 0:
        return 0.0
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == np.asarray(y, int)).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def ece_noise_floor(confidences: np.ndarray, n_bins: int = 15, n_sim: int = 200, seed: int = 0) -> float:
    """Expected :func:`expected_calibration_error` of a *perfectly calibrated* model with these
    top-label confidences on this many examples (each right with probability = its confidence;
    Monte Carlo): the ECE that sampling noise alone gives, the floor to read a measured ECE against
    (about 0.04-0.06 for 240 clips, 15 bins)."""
    conf = np.asarray(confidences, np.float64)
    if conf.size == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    members = [bins == b for b in range(n_bins) if (bins == b).any()]
    out = []
    for _ in range(n_sim):
        correct = rng.random(conf.size) < conf
        out.append(sum(m.mean() * abs(correct[m].mean() - conf[m].mean()) for m in members))
    return float(np.mean(out))


def reliability_curve(probs: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per confidence bin: count, mean confidence and accuracy (for a reliability plot/table)."""
    p = np.asarray(probs, np.float64)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(y, int)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    return [{"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int((bins == b).sum()),
             "confidence": float(conf[bins == b].mean()) if (bins == b).any() else None,
             "accuracy": float(correct[bins == b].mean()) if (bins == b).any() else None}
            for b in range(n_bins)]


def fold_temperature(keras_model, temperature: float, layer: str = "logits") -> None:
    """Divide the ``layer`` Dense kernel and bias by ``temperature`` in place (logits / T)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    d = keras_model.get_layer(layer)
    d.set_weights([w / np.float32(temperature) for w in d.get_weights()])
