"""Speech gate: integer-only speech-activity decision that tracks the noise floor (docs/speech_gate.md).

Per front-end frame (``L`` samples every ``hop`` samples, the front end's own framing):

1. **Level.** ``E = L·Σx² − (Σx)²`` (int64; ``L²`` times the frame's variance, so a DC offset
   contributes nothing), and ``level = log2(E)`` in Q8 fixed point (:func:`ilog2_q8`: position of
   the top bit ·256 plus the next 8 bits, linear between powers of two; ``E = 0`` gives 0).
2. **Noise floor.** The minimum level over the last ``floor_blocks × floor_block_frames`` frames
   (6 × 32 = 192 frames ≈ 3.1 s), kept as one running minimum per 32-frame block, so it follows
   the background (a quieter room, a louder fan) within 3 s, and a talker's own level never
   raises it while they pause at least once in 3 s.
3. **Active frame.** ``level ≥ max(floor + margin, abs_floor)``: 9 dB above the floor and above an
   absolute floor of −75 dBFS (≈ 6 LSB rms), for ``min_run`` (3) frames in a row. Stationary
   sounds (white/pink noise, hum, tones, DC) sit at the floor; a click lasts 1–2 frames and fails
   the run; quiet speech is still far above its own floor.
4. **Window decision** over the window's real (not padded) frames: ``silence`` if no frame reaches
   ``abs_floor``; ``no_speech`` if fewer than ``min_active`` (12, ≈ 0.2 s) frames are active;
   otherwise speech.

Every constant is an integer computed once (:class:`GateConstants`); the per-frame work is
additions, one multiply, a count-leading-zeros and comparisons, so the same decision runs in C on
the microcontroller (bit-exact: same integers). Thresholds in dB convert to Q8 log2 units as
``round(dB / 10·log10(2) · 256)`` (1 dB ≈ 85 units).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .window_policy import NO_SPEECH, SILENCE

_FULL_SCALE = 32768
_NEG = (1 << 31) - 1  # "no minimum yet"


@dataclass(frozen=True)
class GateConfig:
    """Options of the speech gate (dB values are converted to integers once)."""

    margin_db: float = 9.0  # an active frame is this far above the noise floor
    abs_floor_dbfs: float = -75.0  # ... and above this absolute level (frame variance vs full scale)
    min_run: int = 3  # consecutive frames above the threshold before they count (clicks fail)
    min_active: int = 12  # active frames a window needs to be speech (≈ 0.2 s)
    floor_block_frames: int = 32  # noise-floor minimum is kept per block of this many frames
    floor_blocks: int = 6  # ... over this many past blocks (+ the current one)

    def __post_init__(self) -> None:
        for k in ("min_run", "min_active", "floor_block_frames", "floor_blocks"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.margin_db < 0:
            raise ValueError(f"margin_db must be >= 0, got {self.margin_db}")

    def to_dict(self) -> dict:
        return asdict(self)

    def constants(self, frame_length: int) -> "GateConstants":
        """The integer constants for frames of ``frame_length`` samples."""
        return GateConstants.from_config(self, frame_length)


def db_to_q8(db: float) -> int:
    """A level difference in dB (power) as Q8 log2 units: ``round(db / (10·log10 2) · 256)``."""
    return int(round(db / (10.0 * math.log10(2.0)) * 256.0))


@dataclass(frozen=True)
class GateConstants:
    """Integers the per-frame decision uses (what the C port hard-codes or receives)."""

    frame_length: int
    margin_q8: int
    abs_floor_q8: int
    min_run: int
    min_active: int
    floor_block_frames: int
    floor_blocks: int

    @classmethod
    def from_config(cls, cfg: GateConfig, frame_length: int) -> "GateConstants":
        L = int(frame_length)
        # E of a full-scale frame variance: L * (L * 32768^2) -> the dBFS reference in E units
        ref_q8 = db_to_q8(10.0 * math.log10(float(L) * L * _FULL_SCALE * _FULL_SCALE))
        return cls(frame_length=L, margin_q8=db_to_q8(cfg.margin_db),
                   abs_floor_q8=ref_q8 + db_to_q8(cfg.abs_floor_dbfs), min_run=int(cfg.min_run),
                   min_active=int(cfg.min_active), floor_block_frames=int(cfg.floor_block_frames),
                   floor_blocks=int(cfg.floor_blocks))

    def to_dict(self) -> dict:
        return asdict(self)


def ilog2_q8(e: np.ndarray) -> np.ndarray:
    """``log2(e)`` in Q8 for non-negative int64 ``e < 2**55`` (0 -> 0), integer-exact.

    ``msb = floor(log2 e)``; ``frac = ((e << 8) >> msb) - 256`` (the 8 bits after the top bit);
    result ``msb * 256 + frac``. In C: ``msb = 63 - __builtin_clzll(e)``.
    """
    e = np.asarray(e, np.int64)
    out = np.zeros(e.shape, np.int32)
    pos = e > 0
    if pos.any():
        v = e[pos]
        # exact for v < 2**53 (float64 mantissa); frame energies are < 2**49
        msb = (np.frexp(v.astype(np.float64))[1] - 1).astype(np.int64)
        frac = np.right_shift(np.left_shift(v, 8), msb) - 256
        out[pos] = (msb * 256 + frac).astype(np.int32)
    return out


def frame_stats(sums: np.ndarray, sumsq: np.ndarray, frame_length: int) -> np.ndarray:
    """Q8 log2 levels of frames from their sample sums and sums of squares (int64)."""
    s = np.asarray(sums, np.int64)
    e = int(frame_length) * np.asarray(sumsq, np.int64) - s * s
    return ilog2_q8(np.maximum(e, 0))


class SpeechGate:
    """Streaming per-frame state: noise floor, run length. ``push(levels)`` -> active flags (int8)."""

    def __init__(self, cfg: GateConfig, frame_length: int) -> None:
        self.cfg = cfg
        self.k = cfg.constants(frame_length)
        self.reset()

    def reset(self) -> None:
        """A new stream: no floor history."""
        self._blocks = [_NEG] * self.k.floor_blocks  # minimum of each past block, oldest first
        self._blocks_min = _NEG
        self._cur_min = _NEG
        self._cur_n = 0
        self._run = 0

    @property
    def floor_q8(self) -> int:
        """The current noise floor (Q8 log2 of E); ``2**31 - 1`` before the first frame."""
        return min(self._cur_min, self._blocks_min)

    def push(self, levels: np.ndarray) -> np.ndarray:
        """Update with frame levels (Q8); return each frame's active flag (1 = speech-like)."""
        k = self.k
        lv = np.asarray(levels, np.int64).tolist()
        out = np.zeros(len(lv), np.int8)
        margin, abs_floor, min_run, block = k.margin_q8, k.abs_floor_q8, k.min_run, k.floor_block_frames
        cur_min, cur_n, run, bmin = self._cur_min, self._cur_n, self._run, self._blocks_min
        for i, x in enumerate(lv):
            if x < cur_min:
                cur_min = x
            floor = cur_min if cur_min < bmin else bmin
            thr = floor + margin
            if thr < abs_floor:
                thr = abs_floor
            run = run + 1 if x >= thr else 0
            if run >= min_run:
                out[i] = 1
            cur_n += 1
            if cur_n == block:  # close the block: drop the oldest block minimum
                self._blocks.pop(0)
                self._blocks.append(cur_min)
                bmin = min(self._blocks)
                cur_min, cur_n = _NEG, 0
        self._cur_min, self._cur_n, self._run, self._blocks_min = cur_min, cur_n, run, bmin
        return out

    def window_reason(self, levels: np.ndarray, active: np.ndarray) -> str | None:
        """``None`` (speech), ``"silence"`` or ``"no_speech"`` for one window's real frames."""
        if len(levels) == 0 or int(np.max(levels)) < self.k.abs_floor_q8:
            return SILENCE
        if int(np.sum(active)) < self.k.min_active:
            return NO_SPEECH
        return None
