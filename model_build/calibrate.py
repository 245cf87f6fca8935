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
