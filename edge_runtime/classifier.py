"""Streaming speech-emotion classifier: int16 audio in, one record per window and per utterance out.

Data path (every stage incremental, nothing recomputed)::

    int16 chunks -> StreamingFrontend (each frame computed once) -> fixed-point features -> int8
                 (integer requantisation)
                 -> ring of the last window_frames int8 frames -> every hop_frames: IntModel
    int16 chunks -> per-frame level (integer) -> SpeechGate (noise floor, active frames)
    windows -> utterance records (mean log-probability over speech windows) -> summary at finish()

Which windows are classified, the tail flush, short streams and how windows become an utterance
label are the :class:`~edge_runtime.window_policy.WindowPolicy` (one policy for the runtime, the
serial link, evaluation and training). Whether a window is speech is the
:class:`~edge_runtime.speech_gate.SpeechGate`: windows it closes carry no emotion (``label_index``
``None``) and a ``reason`` (``silence`` / ``no_speech``). Windows fed as features
(:meth:`push_features`) have no audio and are never gated.

Results do not depend on how the audio is chunked: a window fires when its last frame completes,
and frames, per-frame levels, the gate and the model are all functions of absolute frame positions.

Smoothing (optional, window labels only; utterance labels always use the raw windows):
``smooth=N`` averages probabilities over the last N speech windows (``smooth_mode="ema"``:
exponential, alpha = 2/(N+1); ``"majority"``: the most frequent top-1 of the last N, probabilities
averaged); a non-speech window clears the history.
"""
from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .interpreter import IntModel
from .results import SILENCE_LABEL, UNCERTAIN_LABEL, UtteranceResult, WindowResult
from .speech_gate import GateConfig, SpeechGate, frame_stats
from .window_policy import NO_SPEECH, SILENCE, TOO_SHORT, UNCERTAIN, WindowPolicy, aggregate_means, window_label

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.tflite"
DEFAULT_GATE = GateConfig()
_NO_LEVEL = -1  # frame level of a frame that came without audio (push_features): never gated


def _version() -> str:
    from . import __version__

    return __version__


def shipped_frontend():
    """The front end of the shipped model (``edge_runtime/models/default.tflite``), or None if absent."""
    from .model_metadata import ModelFileError, read_metadata

    try:
        return read_metadata(DEFAULT_MODEL).frontend_config()
    except (ModelFileError, OSError, ValueError):
        return None


def frontend_for_hash(frontend_hash: str, model_path: str | os.PathLike | None = None):
    """The :class:`FrontendConfig` whose hash a device announced (INFO ``frontend_hash``).

    Candidates, in order: ``model_path``'s front end, the shipped model's, and the defaults of every
    supported front-end version for each output (log-mel, MFCC). ``ValueError`` names the hash when
    none matches (then pass the device's model file).
    """
    from .frontend import FrontendConfig
    from .frontend.config import SUPPORTED_VERSIONS
    from .model_metadata import read_metadata

    cands = []
    if model_path is not None:
        cands.append(read_metadata(model_path).frontend_config())
    shipped = shipped_frontend()
    if shipped is not None:
        cands.append(shipped)
    cands += [FrontendConfig.for_version(v, output=o) for v in SUPPORTED_VERSIONS for o in ("logmel", "mfcc")]
    for c in cands:
        if c.hash == frontend_hash:
            return c
    raise ValueError(f"the device's front end {frontend_hash} is not the shipped model's, nor a default "
                     "front end of this ser-edge; pass --model with the device's model file")


def silence_features(cfg) -> np.ndarray:
    """The front end's raw output for one frame of digital silence (the short-stream padding frame)."""
    from .frontend import compute_features

    return np.asarray(compute_features(np.zeros(cfg.frame_length, np.int16), cfg)[0])


class _Utterance:
    """Windows of one utterance (or of the whole stream) being accumulated."""

    # Running sums, not lists of windows: a session summary spans the whole stream, and `serve`
    # may stream for days (the 1 h soak saw ~25 kB/min of growth from keeping every window).
    def __init__(self) -> None:
        self.n_speech = 0
        self.sum_log_probs: np.ndarray | None = None  # float64 (n_classes,)
        self.sum_probs: np.ndarray | None = None
        self.sum_scores: np.ndarray | None = None  # int64 (n_classes,)
        self.first = self.last = -1
        self.t_start = self.t_end = 0.0
        self.n_windows = 0
        self.reasons: dict[str, int] = {}

    def add(self, r: WindowResult, log_probs: np.ndarray | None) -> None:
        if self.first < 0:
            self.first, self.t_start = r.window_index, r.t_start_s
        self.last, self.t_end = r.window_index, max(self.t_end, r.t_end_s)
        self.n_windows += 1
        if log_probs is not None:
            lp = np.asarray(log_probs, np.float64)
            sc = np.asarray(r.scores_int8).astype(np.int64)
            if self.n_speech == 0:
                self.sum_log_probs, self.sum_probs, self.sum_scores = lp.copy(), np.exp(lp), sc.copy()
            else:
                self.sum_log_probs += lp
                self.sum_probs += np.exp(lp)
                self.sum_scores += sc
            self.n_speech += 1
        elif r.reason:
            self.reasons[r.reason] = self.reasons.get(r.reason, 0) + 1


class StreamingClassifier:
    """Classify a live int16 audio stream window by window (also the serial Engine interface).

    Options: ``policy`` (:class:`WindowPolicy`; window/hop default to the model's), ``gate``
    (:class:`GateConfig`; ``None`` disables the speech gate), ``smooth`` / ``smooth_mode`` (window
    labels only), ``min_confidence`` (shortcut for ``policy.min_confidence``), ``hop_frames``
    (shortcut for ``policy.hop_frames``).

    ``model`` is an :class:`IntModel`, or anything with the same ``meta``, ``frontend_config``,
    ``labels``, ``quantize``, ``predict_window``, ``log_probabilities`` and ``probabilities`` (the
    float evaluation in ``model_build`` wraps a Keras model this way, so it shares this policy).
    """

    def __init__(self, model: IntModel, *, policy: WindowPolicy | None = None,
                 gate: GateConfig | None = DEFAULT_GATE, smooth: int = 1, smooth_mode: str = "ema",
                 min_confidence: float | None = None, hop_frames: int | None = None) -> None:
        from .frontend import StreamingFrontend

        if smooth_mode not in ("ema", "majority"):
            raise ValueError(f"smooth_mode must be 'ema' or 'majority', got {smooth_mode!r}")
        policy = policy or WindowPolicy()
        if min_confidence is not None:
            policy = WindowPolicy(**{**policy.to_dict(), "min_confidence": float(min_confidence)})
        if hop_frames is not None:
            policy = WindowPolicy(**{**policy.to_dict(), "hop_frames": int(hop_frames)})
        self.model = model
        self.cfg = model.frontend_config
        m = model.meta
        self.labels = list(m.labels)
        self.policy = policy.resolve(m.window_frames, m.hop_frames)
        if self.policy.window_frames != m.window_frames:
            raise ValueError(f"the model takes windows of {m.window_frames} frames, the policy asks for "
                             f"{self.policy.window_frames}")
        self.window_frames = W = self.policy.window_frames
        self.hop_frames = self.policy.hop_frames
        self.n_features = F = m.n_features
        self.gate_config = gate
        self.gate = SpeechGate(gate, self.cfg.frame_length) if gate is not None else None
        self.smooth = max(1, int(smooth))
        self.smooth_mode = smooth_mode
        self.min_confidence = self.policy.min_confidence
        self._frontend = StreamingFrontend(self.cfg)
        pad = model.quantize(silence_features(self.cfg)[None])
        self._pad = np.asarray(pad)[0]
        # Rings are stored twice (index i and i + W) so the last W frames are always one contiguous slice.
        self._frames = np.zeros((2 * W, F), self._pad.dtype)
        self._level = np.zeros(2 * W, np.int32)  # Q8 log2 frame level; _NO_LEVEL = no audio
        self._active = np.zeros(2 * W, np.int8)
        self._fe_ns = np.zeros(2 * W, np.int64)  # front-end time attributed to each frame
        self.reset()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, path: str | os.PathLike | bytes | None = None, backend: str | None = None,
                   expected_frontend=None, num_threads: int | None = 1, **options) -> "StreamingClassifier":
        """Load a model (``None``: the shipped ``edge_runtime/models/default.tflite``) and build a classifier."""
        if path is None:
            if not DEFAULT_MODEL.is_file():
                raise FileNotFoundError(
                    f"no model given and no default model at {DEFAULT_MODEL}. Pass --model PATH, or build "
                    "one on a host machine (`pip install 'ser-edge[train]'`, then `ser-edge build ...`) and "
                    f"copy the .tflite to {DEFAULT_MODEL}"
                )
            path = DEFAULT_MODEL
        model = IntModel(path, backend=backend, expected_frontend=expected_frontend, num_threads=num_threads)
        return cls(model, **options)

    # ------------------------------------------------------------------ Engine interface
    def info(self) -> dict:
        """What a host needs to talk to this engine (also sent over the serial link)."""
        m = self.model.meta
        return {
            "model_hash": self.model.model_hash,
            "frontend_hash": m.frontend_hash,
            "labels": list(m.labels),
            "sample_rate": self.cfg.sample_rate,
            "window_frames": m.window_frames,
            "hop_frames": self.hop_frames,
            "n_features": m.n_features,
            "input_scale": m.input_scale,
            "input_zero_point": m.input_zero_point,
            "version": _version(),
            "output_scale": m.output_scale,
            "output_zero_point": m.output_zero_point,
            "scores_are_probs": self.model.outputs_probabilities,
            "frame_hop_samples": self.cfg.hop_length,
            "backend": self.model.backend,
            "model_name": m.model_name,
            "window_policy": self.policy.to_dict(),
            "gate": None if self.gate_config is None else self.gate_config.to_dict(),
        }

    def reset(self) -> None:
        """Start a new stream: forget audio, frames, gate state, utterances and window numbering."""
        self._frontend.reset()
        if self.gate is not None:
            self.gate.reset()
        self._frames[:] = 0
        self._level[:] = 0
        self._active[:] = 0
        self._fe_ns[:] = 0
        self._tail = np.zeros(0, np.int16)  # mirrors the front end's carried-over samples
        self.frames_total = 0
        self._push_first_frame = 0
        self.windows_emitted = 0
        self._last_end = 0  # frame index (exclusive) of the last classified window's end
        self._history: deque[np.ndarray] = deque(maxlen=self.smooth)
        self._ema: np.ndarray | None = None
        self._utt: _Utterance | None = None
        self._utt_gap = 0
        self.utterances_emitted = 0
        self._all = _Utterance()
        self._pending: list[UtteranceResult] = []

    def push_audio(self, pcm: np.ndarray) -> list[WindowResult]:
        """Add int16 mono samples (at the model's sample rate); return the windows they complete.

        Utterance records completed on the way are queued: :meth:`take_utterances`.
        """
        from .frontend import ensure_pcm16

        a = np.asarray(pcm)
        if a.size == 0:
            return []
        a = ensure_pcm16(a, name="audio chunk")
        t0 = time.perf_counter_ns()
        feats = self._frontend.push(a)
        q = self.model.quantize(feats) if len(feats) else np.zeros((0, self.n_features), self._pad.dtype)
        dt = time.perf_counter_ns() - t0
        levels = self._frame_levels(a)
        if len(levels) != len(q):  # would mean the mirror of the front end's framing is wrong
            raise RuntimeError(f"internal: {len(q)} frames but {len(levels)} levels")
        fe = np.full(len(q), dt // max(1, len(q)), np.int64)
        return self._add_frames(q, levels, fe)

    def push_features(self, frames_int8: np.ndarray) -> list[WindowResult]:
        """Add already-quantised int8 frames ``(n, n_features)`` (bypasses the front end and the gate)."""
        f = np.asarray(frames_int8)
        if f.ndim == 1 and f.size == self.n_features:
            f = f.reshape(1, -1)
        if f.dtype != self._pad.dtype or f.ndim != 2 or f.shape[1] != self.n_features:
            raise ValueError(f"features must be {self._pad.dtype} of shape (n, {self.n_features}), "
                             f"got {f.dtype} {f.shape}")
        n = len(f)
        return self._add_frames(f, np.full(n, _NO_LEVEL, np.int32), np.zeros(n, np.int64))

    def finish(self) -> list[WindowResult]:
        """End of the stream (end of file, serial STOP): flush the tail window per the policy, close
        the open utterance and queue the stream's summary record; then start a new stream.

        Returns the flushed windows (0 or 1); :meth:`take_utterances` has the utterance and
        summary records.
        """
        p, W, n = self.policy, self.window_frames, self.frames_total
        out: list[WindowResult] = []
        if self.windows_emitted == 0 and 0 < n < W:
            if n >= p.min_frames:
                out.append(self._classify_window(self.windows_emitted, 0, n, "short"))
        elif self.windows_emitted > 0 and n - self._last_end >= p.flush_min_frames:
            out.append(self._classify_window(self.windows_emitted, n - W, W, "flush"))
        for r in out:
            self._account(r)
        # An exact tie (which only the class index would break) is broken with more views of the
        # same audio: a short stream's frames centred, then at the window's end; a longer stream's
        # end-aligned window if its last frames were never the end of a window.
        if self._tied():
            if n < W and out:
                views = [("short_shifted", 0, n, (W - n) // 2), ("short_shifted", 0, n, W - n)]
            elif n >= W and n > self._last_end:
                views = [("tiebreak", n - W, W, 0)]
            else:
                views = []
            for kind, first, n_real, before in views:
                r = self._classify_window(self.windows_emitted, first, n_real, kind, before)
                self._account(r)
                out.append(r)
                if not self._tied():
                    break
        self._close_utterance()
        self._pending.append(self._summary(n))
        pending = self._pending
        self.reset()
        self._pending = pending
        return out

    def _tied(self) -> bool:
        """The stream's speech windows so far tie exactly (no label without the class index)."""
        u = self._all
        return u.n_speech > 0 and aggregate_means(u.sum_log_probs / u.n_speech, u.sum_probs / u.n_speech)[0] is None

    def take_utterances(self) -> list[UtteranceResult]:
        """Utterance (and, after :meth:`finish`, summary) records produced since the last call."""
        out, self._pending = self._pending, []
        return out

    # ------------------------------------------------------------------ Python API for robots
    def stream(self, source: Iterable[np.ndarray], finish: bool = True) -> Iterator[WindowResult | UtteranceResult]:
        """Iterate over the records of an audio source (any iterable of int16 chunks): windows as
        they complete, utterance records when an utterance ends, and (``finish=True``) the flushed
        tail window, the last utterance and the summary at the end::

            for r in clf.stream(FileSource("x.wav")):
                if r.record == "utterance":
                    robot.show(r.label)
        """
        for chunk in source:
            yield from self.push_audio(chunk)
            yield from self.take_utterances()
        if finish:
            yield from self.finish()
            yield from self.take_utterances()

    def run(self, source: Iterable[np.ndarray], callback: Callable[[WindowResult | UtteranceResult], object]) -> int:
        """Callback form of :meth:`stream`: call ``callback(record)`` per record; returns the count."""
        n = 0
        for r in self.stream(source):
            callback(r)
            n += 1
        return n

    def classify(self, pcm: np.ndarray, chunk: int | None = None) -> list[WindowResult]:
        """All windows of one clip (from a fresh state, tail flushed); ``chunk`` samples per push."""
        return self.classify_clip(pcm, chunk=chunk)[0]

    def classify_clip(self, pcm: np.ndarray, chunk: int | None = None, features: np.ndarray | None = None
                      ) -> tuple[list[WindowResult], list[UtteranceResult], UtteranceResult]:
        """One clip as ``ser-edge run`` sees it: ``(windows, utterances, summary)``.

        ``features``: the clip's raw front-end output, if already computed (a cache); it must be
        what the front end gives for ``pcm`` (same shape), and skips only the front end.
        """
        self.reset()
        a = np.asarray(pcm)
        wins: list[WindowResult] = []
        if features is not None:
            from .frontend import ensure_pcm16

            a = ensure_pcm16(a, name="clip")
            f = np.asarray(features)
            if f.shape != (self.cfg.n_frames(a.size), self.n_features):
                raise ValueError(f"features of shape {f.shape} do not belong to {a.size} samples "
                                 f"({self.cfg.n_frames(a.size)} frames of {self.n_features})")
            levels = self._frame_levels(a)
            wins += self._add_frames(self.model.quantize(f), levels, np.zeros(len(f), np.int64))
        elif chunk is None:
            wins += self.push_audio(a)
        else:
            for i in range(0, a.size, chunk):
                wins.extend(self.push_audio(a[i:i + chunk]))
        wins += self.finish()
        recs = self.take_utterances()
        return wins, [r for r in recs if r.record == "utterance"], recs[-1]

    # ------------------------------------------------------------------ internals
    def _frame_levels(self, a: np.ndarray) -> np.ndarray:
        """Gate state update for the frames completed by chunk ``a`` (same framing as the front
        end); returns their Q8 levels and stores nothing (see _add_frames)."""
        L, H = self.cfg.frame_length, self.cfg.hop_length
        buf = np.concatenate([self._tail, a]) if self._tail.size else a
        nf = self.cfg.n_frames(buf.size)
        if nf == 0:
            self._tail = buf.copy()
            return np.zeros(0, np.int32)
        x = buf.astype(np.int64)
        # np.add.accumulate, not np.cumsum(out=...): the latter looks ``accumulate`` up by a C
        # string, and CPython 3.11's type method cache pins each such fresh name (see frame_signal)
        cs = np.zeros(x.size + 1, np.int64)
        np.add.accumulate(x, out=cs[1:])
        cq = np.zeros(x.size + 1, np.int64)
        np.add.accumulate(x * x, out=cq[1:])
        starts = np.arange(nf, dtype=np.int64) * H
        self._tail = buf[nf * H:].copy()
        return frame_stats(cs[starts + L] - cs[starts], cq[starts + L] - cq[starts], L)

    def _add_frames(self, q: np.ndarray, levels: np.ndarray, fe_ns: np.ndarray) -> list[WindowResult]:
        W, H = self.window_frames, self.hop_frames
        if self.gate is not None and len(levels) and levels[0] != _NO_LEVEL:
            active = self.gate.push(levels)
        else:
            active = np.zeros(len(levels), np.int8)
        self._push_first_frame = self.frames_total
        out: list[WindowResult] = []
        i = 0
        n = len(q)
        while i < n:
            # next window ends at frame index (exclusive) k*H + W
            k = self.windows_emitted
            end = k * H + W
            take = min(n - i, max(1, end - self.frames_total), W)
            pos = (self.frames_total + np.arange(take)) % W
            for ring, vals in ((self._frames, q), (self._level, levels), (self._active, active),
                               (self._fe_ns, fe_ns)):
                ring[pos] = vals[i:i + take]
                ring[pos + W] = vals[i:i + take]
            self.frames_total += take
            i += take
            if self.frames_total == end:
                r = self._classify_window(k, end - W, W, "hop")
                self._account(r)
                out.append(r)
            elif self.frames_total > end:  # hop > window with a caller-set hop: skip ahead
                self.windows_emitted = -(-(self.frames_total - W) // H)
        return out

    def _classify_window(self, k: int, first: int, n_real: int, kind: str, before: int = 0) -> WindowResult:
        W = self.window_frames
        s = self.frames_total % W  # ring slice [s, s + W) = the last W frames
        if kind in ("short", "short_shifted"):  # frames [0, n) are at ring positions [0, n): pad the rest
            window = np.concatenate([np.broadcast_to(self._pad, (before, self.n_features)), self._frames[:n_real],
                                     np.broadcast_to(self._pad, (W - n_real - before, self.n_features))])
            levels, active = self._level[:n_real], self._active[:n_real]
            fe_ns = int(self._fe_ns[:n_real].sum())
        else:
            window = self._frames[s:s + W]
            levels, active = self._level[s:s + W], self._active[s:s + W]
            # Latency = what the caller waits for after handing in the audio that completes this window:
            # the front end of this window's frames that arrived in the same push, plus inference.
            new = max(0, min(W, self.frames_total - self._push_first_frame))
            fe_ns = int(self._fe_ns[s + W - new:s + W].sum())
        t0 = time.perf_counter_ns()
        scores = self.model.predict_window(window)
        log_probs = self.model.log_probabilities(scores)
        probs = np.exp(log_probs)
        nn_ns = time.perf_counter_ns() - t0

        reason = None
        audio = levels.size > 0 and int(levels.min()) != _NO_LEVEL
        if audio and self.gate is not None:
            reason = self.gate.window_reason(levels, active)
        if reason is not None:
            self._history.clear()
            self._ema = None
            label, index, out_probs = SILENCE_LABEL if reason == SILENCE else NO_SPEECH, None, probs
        else:
            out_probs, index, reason = self._smooth(probs, log_probs)
            label = self.labels[index] if index is not None else UNCERTAIN_LABEL
        hop = self.cfg.hop_length
        last = first + n_real - 1  # last real frame
        extra = {"confidence": round(float(out_probs.max()), 4),
                 "fe_ms": round(fe_ns / 1e6, 3), "nn_ms": round(nn_ns / 1e6, 3)}
        if audio:
            extra["active_frames"] = int(active.sum())
        if kind != "hop":
            extra["kind"] = kind
        self._last_end = first + n_real
        self.windows_emitted = k + 1
        return WindowResult(
            window_index=k,
            t_start_s=first * hop / self.cfg.sample_rate,
            t_end_s=(last * hop + self.cfg.frame_length) / self.cfg.sample_rate,
            label=label, label_index=index, scores_int8=np.array(scores, copy=True), probs=out_probs,
            latency_ms=(fe_ns + nn_ns) / 1e6, gated=reason in (SILENCE, NO_SPEECH), reason=reason,
            log_probs=log_probs, extra=extra,
        )

    def _account(self, r: WindowResult) -> None:
        """Add a window to the open utterance and the stream summary; close an utterance after
        ``utterance_gap_windows`` non-speech windows."""
        speech = not r.gated
        self._all.add(r, r.log_probs if speech else None)
        if speech:
            if self._utt is None:
                self._utt = _Utterance()
            self._utt.add(r, r.log_probs)
            self._utt_gap = 0
        elif self._utt is not None:
            self._utt_gap += 1
            if self._utt_gap >= self.policy.utterance_gap_windows:
                self._close_utterance()

    def _close_utterance(self) -> None:
        u = self._utt
        if u is None:
            return
        self._utt, self._utt_gap = None, 0
        self._pending.append(self._record(u, "utterance", self.utterances_emitted))
        self.utterances_emitted += 1

    def _summary(self, n_frames: int) -> UtteranceResult:
        u = self._all
        rec = self._record(u, "summary", 0)
        if rec.label_index is None and rec.reason is None:
            if u.n_windows == 0:
                reason = TOO_SHORT if n_frames < self.window_frames else SILENCE
            else:
                reason = NO_SPEECH if u.reasons.get(NO_SPEECH) else SILENCE
            rec = rec.with_reason(reason)
        if u.n_windows == 0:
            rec = rec.with_span(0.0, self._frontend.samples_seen / self.cfg.sample_rate)
        return rec

    def _record(self, u: _Utterance, kind: str, number: int) -> UtteranceResult:
        if u.n_speech:
            index, mean_p, reason = aggregate_means(u.sum_log_probs / u.n_speech, u.sum_probs / u.n_speech,
                                                    self.min_confidence)
            mean_scores = np.clip(np.rint(u.sum_scores / u.n_speech), -128, 127).astype(np.int8)
        else:
            index, mean_p, reason = None, np.zeros(len(self.labels)), None
            mean_scores = np.zeros(len(self.labels), np.int8)
        label = self.labels[index] if index is not None else (reason or "")
        return UtteranceResult(
            record=kind, utterance_index=number, t_start_s=u.t_start, t_end_s=u.t_end, label=label,
            label_index=index, reason=reason, probs=mean_p, scores_int8=mean_scores,
            n_windows=u.n_windows, n_speech_windows=u.n_speech, first_window=u.first,
            last_window=u.last)

    def _smooth(self, probs: np.ndarray, log_probs: np.ndarray) -> tuple[np.ndarray, int | None, str | None]:
        """(probabilities shown, index, reason) of a speech window, after ``--smooth``. The label
        follows :func:`window_label` (an exact tie is ``uncertain``, never the lower index)."""
        def logs(p: np.ndarray) -> np.ndarray:
            return np.log(np.maximum(p, 1e-300))

        if self.smooth <= 1:
            return (probs, *window_label(log_probs, probs, self.min_confidence))
        if self.smooth_mode == "ema":
            a = 2.0 / (self.smooth + 1)
            self._ema = probs.copy() if self._ema is None else a * probs + (1 - a) * self._ema
            return (self._ema, *window_label(logs(self._ema), self._ema, self.min_confidence))
        self._history.append(probs)
        mean = np.mean(self._history, axis=0)
        votes = np.bincount([int(np.argmax(p)) for p in self._history], minlength=len(probs))
        best = np.flatnonzero(votes == votes.max())
        # a tie in votes goes by mean probability (then uncertain), as the window rule says
        sub, reason = window_label(logs(mean[best]), mean[best])
        if sub is None:
            return mean, None, reason
        index = int(best[sub])
        if mean[index] < self.min_confidence:
            return mean, None, UNCERTAIN
        return mean, index, None

    def __repr__(self) -> str:
        return (f"StreamingClassifier({self.model!r}, policy={self.policy}, gate={self.gate_config}, "
                f"smooth={self.smooth}/{self.smooth_mode})")
