"""The window policy: which windows of a stream are classified, and how windows become a label.

One frozen :class:`WindowPolicy` is used by ``ser-edge run``, ``serve`` (and the serial device's
STOP), ``validate``, the Python API (:class:`~edge_runtime.classifier.StreamingClassifier`), the
training/evaluation windows of ``model_build`` and every benchmark. Everything is counted in
front-end frames (16 ms at the default 256-sample hop), so the policy is the same for audio and for
feature streams, and a microcontroller can mirror it with integer counters.

Windows of a stream of ``n`` frames (window ``W`` frames, hop ``H`` frames):

1. **While streaming**: window ``k`` covers frames ``[k*H, k*H + W)`` and fires as soon as frame
   ``k*H + W - 1`` exists.
2. **Tail flush** (:meth:`StreamingClassifier.finish`, also the serial link's STOP): if at least
   ``flush_min_frames`` frames after the last window's end were never classified, one more window
   ``[n - W, n)`` (aligned to the end of the stream) is classified.
3. **Short streams**: if the stream ended before the first window was complete but holds at least
   ``min_frames`` frames (≈ 0.5 s), one window of its ``n`` frames followed by ``W - n`` copies of
   the front end's *digital-silence frame* (what the front end outputs for all-zero audio) is
   classified. Shorter streams get no window; their summary record says ``reason: "too_short"``.
4. **Exact ties** (which only the class index would break): at :meth:`finish`, if the stream's
   speech windows tie, more views of the same audio are classified until they decide: a short
   stream's frames centred in the window, then at its end; a longer stream's end-aligned window
   (if its last frames were never the end of a window). All of them count.

Windows to labels (:func:`aggregate`): an utterance's label is the class with the highest **mean
log-probability** over its speech windows (windows the speech gate passed). For a model with logit
outputs this is the class with the highest sum of int8 scores (log-softmax subtracts one constant
per window), so a microcontroller can do it in integers. Ties are broken by the mean probability; a
tie in both is ``uncertain``, never the lowest index; a window's label follows the same rule
(:func:`window_label`: a window whose top classes tie exactly is ``uncertain``). A window or utterance
whose top probability is below ``min_confidence`` is ``uncertain`` too. Windows the gate closed carry no emotion
(``index: null``) and a ``reason``: ``silence`` or ``no_speech`` (see :mod:`edge_runtime.speech_gate`).

Utterances in a live stream: an utterance starts at the first speech window and ends after
``utterance_gap_windows`` consecutive non-speech windows (or at :meth:`finish`); then its record is
emitted. :meth:`finish` also emits a **summary** record over all speech windows of the whole stream
(for a file: the clip's label; this is what the accuracy benchmarks score).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

#: reasons a window or utterance carries no emotion label
SILENCE = "silence"  # nothing above the absolute audibility floor
NO_SPEECH = "no_speech"  # audible, but not speech (stationary noise, hum, tones, DC, clicks)
UNCERTAIN = "uncertain"  # speech, but the top probability is below min_confidence (or an exact tie)
TOO_SHORT = "too_short"  # a stream shorter than min_frames: nothing was classified
REASONS = (SILENCE, NO_SPEECH, UNCERTAIN, TOO_SHORT)
_TIE = 1e-9  # mean log-probabilities (and probabilities) this close are a tie


@dataclass(frozen=True)
class WindowPolicy:
    """How a stream is cut into windows and how windows become labels (see the module docstring).

    ``window_frames`` / ``hop_frames``: ``None`` = the model's (its metadata). The other fields are
    in frames of the front end (16 ms each by default).
    """

    window_frames: int | None = None
    hop_frames: int | None = None
    flush_min_frames: int = 16  # ≈ 0.26 s of unclassified tail -> one end-aligned window at finish()
    min_frames: int = 28  # ≈ 0.46 s: the shortest stream that is classified (padded to one window)
    utterance_gap_windows: int = 2  # consecutive non-speech windows that close a live utterance
    min_confidence: float = 0.0  # top probability below this -> "uncertain" (0 = off)

    def __post_init__(self) -> None:
        for k in ("window_frames", "hop_frames"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, (int, np.integer)) or v <= 0):
                raise ValueError(f"{k} must be a positive integer or None, got {v!r}")
        if self.flush_min_frames < 1:
            raise ValueError(f"flush_min_frames must be >= 1, got {self.flush_min_frames}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
        if self.utterance_gap_windows < 1:
            raise ValueError(f"utterance_gap_windows must be >= 1, got {self.utterance_gap_windows}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")

    def resolve(self, window_frames: int, hop_frames: int) -> "WindowPolicy":
        """This policy with ``None`` window/hop filled from a model's metadata."""
        w = int(self.window_frames or window_frames)
        h = int(self.hop_frames or hop_frames)
        if h > w:
            raise ValueError(f"hop_frames {h} > window_frames {w}: frames between windows would never be classified")
        return replace(self, window_frames=w, hop_frames=h, min_frames=min(self.min_frames, w))

    def to_dict(self) -> dict:
        """Plain dict (JSON) of the options."""
        return asdict(self)


@dataclass(frozen=True)
class PlannedWindow:
    """One window of an offline clip: frames ``[start, start + n_real)`` then ``W - n_real`` pad frames."""

    start: int
    n_real: int
    kind: str  # "hop" (while streaming), "flush" (end-aligned tail), "short" (padded)


def plan_windows(n_frames: int, policy: WindowPolicy) -> list[PlannedWindow]:
    """The windows a stream of ``n_frames`` frames gets under ``policy`` (resolved), in order.

    Exactly the windows :class:`~edge_runtime.classifier.StreamingClassifier` emits for the same
    stream followed by :meth:`finish`; used for training windows and offline evaluation.
    """
    W, H = policy.window_frames, policy.hop_frames
    if W is None or H is None:
        raise ValueError("plan_windows needs a resolved policy (policy.resolve(window_frames, hop_frames))")
    if n_frames < W:
        return [PlannedWindow(0, n_frames, "short")] if n_frames >= policy.min_frames else []
    out = [PlannedWindow(k * H, W, "hop") for k in range((n_frames - W) // H + 1)]
    last_end = out[-1].start + W
    if n_frames - last_end >= policy.flush_min_frames:
        out.append(PlannedWindow(n_frames - W, W, "flush"))
    return out


def cut_windows(feats: np.ndarray, policy: WindowPolicy, pad_frame: np.ndarray) -> np.ndarray:
    """``(n_windows, W, F)`` windows of one clip's ``(n_frames, F)`` features (short clips padded
    with ``pad_frame``, the front end's digital-silence frame); ``(0, W, F)`` if none."""
    f = np.asarray(feats)
    W = policy.window_frames
    plan = plan_windows(f.shape[0], policy)
    out = np.empty((len(plan), W, f.shape[1]), f.dtype)
    for i, p in enumerate(plan):
        out[i, :p.n_real] = f[p.start:p.start + p.n_real]
        out[i, p.n_real:] = np.asarray(pad_frame, f.dtype)
    return out


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Numerically safe log-softmax over the last axis."""
    z = np.asarray(z, np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def score_log_probabilities(scores_int8: np.ndarray, output_scale: float, output_zero_point: int,
                            scores_are_probs: bool = False) -> np.ndarray:
    """Class log-probabilities of a model's int8 outputs ``(..., n_classes)``: the one rule every
    consumer uses (``run`` through :meth:`IntModel.log_probabilities`, ``stream``/``listen`` from a
    device's RESULT scores and INFO, docs/protocol.md §4.2 *Scores*).

    ``real = (q - output_zero_point) * output_scale``; logits (the shipped models, with their
    temperature calibration folded into the last layer) give ``log_softmax(real)``; a model ending in
    softmax (``scores_are_probs``) gives the log of its normalised outputs, floored at 1e-6 so an
    output quantised to 0 stays finite.
    """
    v = (np.asarray(scores_int8, np.float64) - output_zero_point) * output_scale
    if scores_are_probs:
        v = np.maximum(v, 0.0)
        return np.log(np.maximum(v / np.maximum(v.sum(axis=-1, keepdims=True), 1e-12), 1e-6))
    return log_softmax(v)


def aggregate(log_probs: np.ndarray, min_confidence: float = 0.0) -> tuple[int | None, np.ndarray, str | None]:
    """Label of a group of windows from their log-probabilities ``(n_windows, n_classes)``.

    Returns ``(index, mean_probs, reason)``: ``index`` = argmax of the mean log-probability, ties
    broken by mean probability; ``None`` with reason ``"uncertain"`` for a tie in both or a mean
    probability of the winner below ``min_confidence``; ``None`` with reason ``None`` when there
    are no windows (the caller supplies why).
    """
    lp = np.asarray(log_probs, np.float64)
    if lp.ndim != 2 or lp.shape[0] == 0:
        n = lp.shape[-1] if lp.ndim == 2 else 0
        return None, np.zeros(n), None
    return aggregate_means(lp.mean(axis=0), np.exp(lp).mean(axis=0), min_confidence)


def window_label(log_probs: np.ndarray, probs: np.ndarray,
                 min_confidence: float = 0.0) -> tuple[int | None, str | None]:
    """Label of one window (its own or its smoothed probabilities): the same rule as an utterance's
    (:func:`aggregate_means` of a group of one), so an exact tie for the top class is ``uncertain``,
    never the lower index. Returns ``(index, None)`` or ``(None, "uncertain")``."""
    index, _, reason = aggregate_means(np.asarray(log_probs, np.float64), np.asarray(probs, np.float64),
                                       min_confidence)
    return index, reason


def aggregate_means(mean_lp: np.ndarray, mean_p: np.ndarray,
                    min_confidence: float = 0.0) -> tuple[int | None, np.ndarray, str | None]:
    """:func:`aggregate` from the group's mean log-probability and mean probability per class
    (what a stream keeps as running sums instead of every window)."""
    best = np.flatnonzero(mean_lp >= mean_lp.max() - _TIE)
    if best.size > 1:
        by_p = best[mean_p[best] >= mean_p[best].max() - _TIE]
        if by_p.size > 1:
            return None, mean_p, UNCERTAIN
        best = by_p
    index = int(best[0])
    if mean_p[index] < min_confidence:
        return None, mean_p, UNCERTAIN
    return index, mean_p, None
