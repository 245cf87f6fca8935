"""Result records passed between the classifier, the serial link and the CLI."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SILENCE_LABEL = "silence"
UNCERTAIN_LABEL = "uncertain"


@dataclass(frozen=True)
class WindowResult:
    """One classified window of audio.

    ``scores_int8`` are the model's raw int8 outputs (dequantise with the model's output scale and
    zero point); ``probs`` the dequantised, softmaxed (and, if enabled, smoothed) scores. ``label`` is a
    class name, or ``"silence"`` when the voice-activity gate closed, or ``"uncertain"`` when the top
    score fell below the confidence threshold. ``label_index`` is the model's top-1 index either way.
    """

    window_index: int
    t_start_s: float
    t_end_s: float
    label: str
    label_index: int
    scores_int8: np.ndarray
    probs: np.ndarray
    latency_ms: float
    gated: bool = False
    extra: dict = field(default_factory=dict)

    def to_json_dict(self, labels: list[str] | None = None) -> dict:
        """A JSON-serialisable dict (what `run` prints as one JSON line)."""
        d = {
            "window": self.window_index,
            "t_start": round(self.t_start_s, 4),
            "t_end": round(self.t_end_s, 4),
            "label": self.label,
            "index": int(self.label_index),
            "scores_int8": [int(v) for v in np.asarray(self.scores_int8).ravel()],
            "latency_ms": round(self.latency_ms, 3),
        }
        if labels is not None:
            d["probs"] = {name: round(float(p), 4) for name, p in zip(labels, self.probs)}
        else:
            d["probs"] = [round(float(p), 4) for p in self.probs]
        d.update(self.extra)
        return d
