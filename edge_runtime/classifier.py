"""Streaming speech-emotion classifier: int16 audio in, one :class:`WindowResult` per hop out.

Data path (every stage incremental, nothing recomputed)::

    int16 chunks -> StreamingFrontend (each frame computed once) -> fixed-point features -> int8
                 (integer requantisation)
                 -> ring of the last window_frames int8 frames -> every hop_frames: IntModel

Results do not depend on how the audio is chunked: a window fires when its last frame completes,
and frames, per-frame energies and the model are all functions of absolute sample positions.

Gate: each frame's energy (sum of squares of its ``frame_length`` samples, int64) is computed once
from the audio. A window is ``silence`` when its mean-square level is below ``gate_dbfs`` (compared
in integers against a threshold precomputed at start-up; 0 dBFS = a full-scale square wave, so a
full-scale sine is -3 dBFS), and optionally when fewer than ``min_voiced`` of its frames are above
``frame_gate_dbfs``. Windows fed as features (:meth:`push_features`) have no audio and are never gated.

Smoothing (optional): ``smooth=N`` averages probabilities over the last N un-gated windows
(``smooth_mode="ema"``: exponential, alpha = 2/(N+1); ``"majority"``: the most frequent top-1 of the
last N, probabilities averaged); a silence window clears the history. A top probability below
``min_confidence`` gives ``uncertain``.
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .interpreter import IntModel
from .results import SILENCE_LABEL, UNCERTAIN_LABEL, WindowResult

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.tflite"
_FULL_SCALE_SQ = 32768 * 32768


def _version() -> str:
    from . import __version__

    return __version__


def _sumsq_threshold(n_samples: int, dbfs: float) -> int:
    """Smallest int64 sum of squares of ``n_samples`` samples whose mean square is >= ``dbfs``."""
    return int(math.ceil(n_samples * _FULL_SCALE_SQ * 10.0 ** (dbfs / 10.0)))


class StreamingClassifier:
    """Classify a live int16 audio stream window by window (also the serial Engine interface).

    Options: ``gate_dbfs`` (None disables the window gate), ``frame_gate_dbfs`` and ``min_voiced``
    (fraction of frames in a window that must pass the frame gate), ``smooth`` / ``smooth_mode``,
    ``min_confidence``, ``hop_frames`` (default: the model's).
    """

    def __init__(self, model: IntModel, *, gate_dbfs: float | None = -45.0,
                 frame_gate_dbfs: float | None = None, min_voiced: float = 0.2,
                 smooth: int = 1, smooth_mode: str = "ema", min_confidence: float = 0.0,
                 hop_frames: int | None = None) -> None:
        from .frontend import StreamingFrontend

        if smooth_mode not in ("ema", "majority"):
            raise ValueError(f"smooth_mode must be 'ema' or 'majority', got {smooth_mode!r}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.model = model
        self.cfg = model.frontend_config
        m = model.meta
        self.labels = list(m.labels)
        self.window_frames = W = m.window_frames
        self.hop_frames = int(hop_frames or m.hop_frames)
        if not 0 < self.hop_frames:
            raise ValueError(f"hop_frames must be positive, got {self.hop_frames}")
        self.n_features = F = m.n_features
        self.gate_dbfs = gate_dbfs
        self.frame_gate_dbfs = frame_gate_dbfs
        self.min_voiced = float(min_voiced)
        self.smooth = max(1, int(smooth))
        self.smooth_mode = smooth_mode
        self.min_confidence = float(min_confidence)
        L = self.cfg.frame_length
        self._win_thr = None if gate_dbfs is None else _sumsq_threshold(W * L, gate_dbfs)
        self._frame_thr = None if frame_gate_dbfs is None else _sumsq_threshold(L, frame_gate_dbfs)
        self._min_voiced_frames = int(math.ceil(self.min_voiced * W))
        self._frontend = StreamingFrontend(self.cfg)
        # Rings are stored twice (index i and i + W) so the last W frames are always one contiguous slice.
        self._frames = np.zeros((2 * W, F), np.int8)
        self._energy = np.zeros(2 * W, np.int64)  # -1 = unknown (frame came from push_features)
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
            "frame_hop_samples": self.cfg.hop_length,
            "backend": self.model.backend,
            "model_name": m.model_name,
        }

    def reset(self) -> None:
        """Start a new stream: forget audio, frames, smoothing history and window numbering."""
        self._frontend.reset()
        self._frames[:] = 0
        self._energy[:] = 0
        self._fe_ns[:] = 0
        self._tail = np.zeros(0, np.int16)  # mirrors the front end's carried-over samples
        self.frames_total = 0
        self._push_first_frame = 0
        self.windows_emitted = 0
        self._history: deque[np.ndarray] = deque(maxlen=self.smooth)
        self._ema: np.ndarray | None = None

    def push_audio(self, pcm: np.ndarray) -> list[WindowResult]:
        """Add int16 mono samples (at the model's sample rate); return the windows they complete."""
        from .frontend import ensure_pcm16

        a = np.asarray(pcm)
        if a.size == 0:
            return []
        a = ensure_pcm16(a, name="audio chunk")
        t0 = time.perf_counter_ns()
        feats = self._frontend.push(a)
        q = self.model.quantize(feats) if len(feats) else np.zeros((0, self.n_features), np.int8)
        dt = time.perf_counter_ns() - t0
        energy = self._frame_energies(a)
        if len(energy) != len(q):  # would mean the mirror of the front end's framing is wrong
            raise RuntimeError(f"internal: {len(q)} frames but {len(energy)} energies")
        fe = np.full(len(q), dt // max(1, len(q)), np.int64)
        return self._add_frames(q, energy, fe)

    def push_features(self, frames_int8: np.ndarray) -> list[WindowResult]:
        """Add already-quantised int8 frames ``(n, n_features)`` (bypasses the front end and the gate)."""
        f = np.asarray(frames_int8)
        if f.ndim == 1 and f.size == self.n_features:
            f = f.reshape(1, -1)
        if f.dtype != np.int8 or f.ndim != 2 or f.shape[1] != self.n_features:
            raise ValueError(f"features must be int8 of shape (n, {self.n_features}), got {f.dtype} {f.shape}")
        n = len(f)
        return self._add_frames(f, np.full(n, -1, np.int64), np.zeros(n, np.int64))

    # ------------------------------------------------------------------ Python API for robots
    def stream(self, source: Iterable[np.ndarray]) -> Iterator[WindowResult]:
        """Iterate over results of an audio source (any iterable of int16 chunks)::

            for r in clf.stream(FileSource("x.wav")):
                robot.show(r.label)
        """
        for chunk in source:
            yield from self.push_audio(chunk)

    def run(self, source: Iterable[np.ndarray], callback: Callable[[WindowResult], object]) -> int:
        """Callback form of :meth:`stream`: call ``callback(result)`` per window; returns the count."""
        n = 0
        for r in self.stream(source):
            callback(r)
            n += 1
        return n

    def classify(self, pcm: np.ndarray, chunk: int | None = None) -> list[WindowResult]:
        """All windows of one clip (from a fresh state); ``chunk`` samples per push (default: all)."""
        self.reset()
        a = np.asarray(pcm)
        if chunk is None:
            return self.push_audio(a)
        out: list[WindowResult] = []
        for i in range(0, a.size, chunk):
            out.extend(self.push_audio(a[i:i + chunk]))
        return out

    # ------------------------------------------------------------------ internals
    def _frame_energies(self, a: np.ndarray) -> np.ndarray:
        """Sum of squares of each frame completed by chunk ``a`` (same framing as the front end)."""
        L, H = self.cfg.frame_length, self.cfg.hop_length
        buf = np.concatenate([self._tail, a]) if self._tail.size else a
        nf = self.cfg.n_frames(buf.size)
        if nf == 0:
            self._tail = buf.copy()
            return np.zeros(0, np.int64)
        x = buf.astype(np.int64)
        cs = np.zeros(x.size + 1, np.int64)
        np.cumsum(x * x, out=cs[1:])
        starts = np.arange(nf, dtype=np.int64) * H
        self._tail = buf[nf * H:].copy()
        return cs[starts + L] - cs[starts]

    def _add_frames(self, q: np.ndarray, energy: np.ndarray, fe_ns: np.ndarray) -> list[WindowResult]:
        W, H = self.window_frames, self.hop_frames
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
            for ring, vals in ((self._frames, q), (self._energy, energy), (self._fe_ns, fe_ns)):
                ring[pos] = vals[i:i + take]
                ring[pos + W] = vals[i:i + take]
            self.frames_total += take
            i += take
            if self.frames_total == end:
                out.append(self._classify_window(k))
                self.windows_emitted += 1
            elif self.frames_total > end:  # hop > window with a caller-set hop: skip ahead
                self.windows_emitted = -(-(self.frames_total - W) // H)
        return out

    def _classify_window(self, k: int) -> WindowResult:
        W = self.window_frames
        s = self.frames_total % W
        window = self._frames[s:s + W]
        energy = self._energy[s:s + W]
        # Latency = what the caller waits for after handing in the audio that completes this window:
        # the front end of this window's frames that arrived in the same push, plus inference.
        # (Earlier frames were computed when their audio arrived.)
        new = max(0, min(W, self.frames_total - self._push_first_frame))
        fe_ns = int(self._fe_ns[s + W - new:s + W].sum())
        t0 = time.perf_counter_ns()
        scores = self.model.predict_window(window)
        probs = self.model.probabilities(scores)
        nn_ns = time.perf_counter_ns() - t0

        gated, dbfs = False, None
        if energy.min() >= 0:  # audio-derived frames
            total = int(energy.sum())
            dbfs = 10.0 * math.log10(max(total, 1) / (W * self.cfg.frame_length * _FULL_SCALE_SQ))
            if self._win_thr is not None and total < self._win_thr:
                gated = True
            if self._frame_thr is not None and int((energy >= self._frame_thr).sum()) < self._min_voiced_frames:
                gated = True

        raw_index = int(np.argmax(scores))
        if gated:
            self._history.clear()
            self._ema = None
            label, index, out_probs = SILENCE_LABEL, raw_index, probs
        else:
            out_probs, index = self._smooth(probs)
            label = self.labels[index]
            if out_probs[index] < self.min_confidence:
                label = UNCERTAIN_LABEL
        hop = self.cfg.hop_length
        first = k * self.hop_frames
        extra = {"confidence": round(float(out_probs[index]), 4),
                 "fe_ms": round(fe_ns / 1e6, 3), "nn_ms": round(nn_ns / 1e6, 3)}
        if dbfs is not None:
            extra["dbfs"] = round(dbfs, 1)
        if index != raw_index:
            extra["raw_index"] = raw_index
        return WindowResult(
            window_index=k,
            t_start_s=first * hop / self.cfg.sample_rate,
            t_end_s=((first + W - 1) * hop + self.cfg.frame_length) / self.cfg.sample_rate,
            label=label, label_index=index, scores_int8=scores.copy(), probs=out_probs,
            latency_ms=(fe_ns + nn_ns) / 1e6, gated=gated, extra=extra,
        )

    def _smooth(self, probs: np.ndarray) -> tuple[np.ndarray, int]:
        if self.smooth <= 1:
            return probs, int(np.argmax(probs))
        if self.smooth_mode == "ema":
            a = 2.0 / (self.smooth + 1)
            self._ema = probs.copy() if self._ema is None else a * probs + (1 - a) * self._ema
            return self._ema, int(np.argmax(self._ema))
        self._history.append(probs)
        mean = np.mean(self._history, axis=0)
        votes = np.bincount([int(np.argmax(p)) for p in self._history], minlength=len(probs))
        best = np.flatnonzero(votes == votes.max())
        index = int(best[np.argmax(mean[best])])  # ties broken by mean probability
        return mean, index

    def __repr__(self) -> str:
        return (f"StreamingClassifier({self.model!r}, gate_dbfs={self.gate_dbfs}, smooth={self.smooth}"
                f"/{self.smooth_mode}, min_confidence={self.min_confidence})")
