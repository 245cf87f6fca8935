"""Result records passed between the classifier, the serial link and the CLI.

Two kinds, both printed by ``ser-edge run`` as one JSON object per line (``"record"`` says which):

* ``window``: one classified window (:class:`WindowResult`);
* ``utterance`` / ``summary``: the label of a run of speech windows, or (``summary``, after the end of
  the stream) of all speech windows of the stream (:class:`UtteranceResult`).

A record that carries no emotion has ``index: null`` and a ``reason``: ``silence``, ``no_speech``
(the speech gate closed), ``uncertain`` (top probability below ``min_confidence``, or a tie) or
``too_short`` (summary of a stream shorter than the policy's ``min_frames``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .records import make as make_record

SILENCE_LABEL = "silence"
NO_SPEECH_LABEL = "no_speech"
UNCERTAIN_LABEL = "uncertain"


def _probs_json(probs, labels: list[str] | None):
    if labels is not None:
        return {name: round(float(p), 4) for name, p in zip(labels, probs)}
    return [round(float(p), 4) for p in probs]


@dataclass(frozen=True)
class WindowResult:
    """One classified window of audio.

    ``scores_int8`` are the model's raw int8 outputs (dequantise with the model's output scale and
    zero point); ``probs`` the class probabilities (smoothed if enabled), ``log_probs`` the window's
    unsmoothed log-probabilities (what utterance labels average). ``label`` is a class name with
    ``label_index`` its index, or, with ``label_index = None``, ``"silence"`` / ``"no_speech"``
    (speech gate closed, ``gated`` true) or ``"uncertain"``; ``reason`` names which.
    """

    window_index: int
    t_start_s: float
    t_end_s: float
    label: str
    label_index: int | None
    scores_int8: np.ndarray
    probs: np.ndarray
    latency_ms: float
    gated: bool = False
    reason: str | None = None
    log_probs: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    record = "window"

    @property
    def model_index(self) -> int:
        """The model's top-1 class, whatever the gate said (the serial RESULT's ``label_index``)."""
        return int(np.argmax(self.scores_int8))

    def to_json_dict(self, labels: list[str] | None = None) -> dict:
        """The ``window`` record `run` prints as one JSON line (schema: :mod:`edge_runtime.records`)."""
        d = {
            "time": round(self.t_end_s, 4),
            "window": self.window_index,
            "t_start": round(self.t_start_s, 4),
            "t_end": round(self.t_end_s, 4),
            "label": self.label,
            "index": None if self.label_index is None else int(self.label_index),
            "reason": self.reason,
            "scores_int8": [int(v) for v in np.asarray(self.scores_int8).ravel()],
            "latency_ms": round(self.latency_ms, 3),
            "probs": _probs_json(self.probs, labels),
        }
        d.update(self.extra)
        return make_record("window", d)


@dataclass(frozen=True)
class UtteranceResult:
    """The label of an utterance (``record="utterance"``) or of a whole stream (``"summary"``).

    ``label_index`` = argmax of the mean log-probability over the speech windows
    ``first_window..last_window`` (see :func:`edge_runtime.window_policy.aggregate`); ``probs`` =
    their mean probabilities; ``scores_int8`` = their mean int8 scores, rounded (what the serial
    link sends). ``None`` with a ``reason`` when there is no emotion to report.
    """

    record: str
    utterance_index: int
    t_start_s: float
    t_end_s: float
    label: str
    label_index: int | None
    reason: str | None
    probs: np.ndarray
    scores_int8: np.ndarray
    n_windows: int
    n_speech_windows: int
    first_window: int
    last_window: int

    @property
    def confidence(self) -> float:
        return float(self.probs[self.label_index]) if self.label_index is not None else 0.0

    def with_reason(self, reason: str) -> "UtteranceResult":
        return replace(self, reason=reason, label=reason, label_index=None)

    def with_span(self, t_start_s: float, t_end_s: float) -> "UtteranceResult":
        return replace(self, t_start_s=t_start_s, t_end_s=t_end_s)

    def to_json_dict(self, labels: list[str] | None = None) -> dict:
        """The ``utterance`` / ``summary`` record `run` prints after the window records."""
        d = {
            "time": round(self.t_end_s, 4),
            "t_start": round(self.t_start_s, 4),
            "t_end": round(self.t_end_s, 4),
            "label": self.label,
            "index": self.label_index,
            "reason": self.reason,
            "scores_int8": [int(v) for v in np.asarray(self.scores_int8).ravel()],
            "confidence": round(self.confidence, 4),
            "probs": _probs_json(self.probs, labels),
            "windows": self.n_windows,
            "speech_windows": self.n_speech_windows,
        }
        if self.record == "utterance":
            d["utterance"] = self.utterance_index
            d["first_window"], d["last_window"] = self.first_window, self.last_window
        return make_record(self.record, d)
