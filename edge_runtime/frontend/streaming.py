"""Streaming front end: push audio in chunks of any size, get frames as soon as they complete.

Version 1 frames are independent of each other (block floating point is per frame); version 2's
running-mean normalisation carries a small state (per-channel mean, frame count) from frame to
frame. Either way streaming output is bit-identical to :func:`compute_features` on the concatenated
audio, whatever the chunking; :meth:`StreamingFrontend.reset` starts a new stream.
"""
from __future__ import annotations

import numpy as np

from .config import DEFAULT_CONFIG, FrontendConfig
from .fixed_point import NormState, engine_for, frame_signal
from .pcm import ensure_pcm16


class StreamingFrontend:
    """Keeps the last ``frame_length - hop_length`` samples between pushes; never recomputes a frame."""

    def __init__(self, cfg: FrontendConfig = DEFAULT_CONFIG) -> None:
        self.cfg = cfg
        self._engine = engine_for(cfg)
        self._buf = np.zeros(0, dtype=np.int16)
        self._norm = NormState.new(cfg)
        self.frames_emitted = 0
        self.samples_seen = 0

    def reset(self) -> None:
        """Forget buffered audio and the normalisation state (start of a new stream)."""
        self._buf = np.zeros(0, dtype=np.int16)
        self._norm = NormState.new(self.cfg)
        self.frames_emitted = 0
        self.samples_seen = 0

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Add int16 samples; return the (k, n_features) int32 frames completed by them (k may be 0)."""
        a = np.asarray(pcm)
        if a.size == 0:
            return np.zeros((0, self.cfg.n_features), dtype=np.int32)
        a = ensure_pcm16(a, name="stream chunk")
        self.samples_seen += a.size
        buf = np.concatenate([self._buf, a]) if self._buf.size else a
        nf = self.cfg.n_frames(buf.size)
        if nf == 0:
            self._buf = buf.copy()
            return np.zeros((0, self.cfg.n_features), dtype=np.int32)
        out = self._engine.process_frames(frame_signal(buf, self.cfg), self._norm)
        self._buf = buf[nf * self.cfg.hop_length :].copy()
        self.frames_emitted += nf
        return out

    @property
    def pending_samples(self) -> int:
        """Samples buffered towards the next frame."""
        return int(self._buf.size)
