"""The fixed-point front end: int16 PCM in, int32 log-mel or MFCC frames out (Q16 log2 units).

Every run-time step is integer arithmetic that a C compiler on a Cortex-M4 reproduces bit for bit
(``firmware_bridge/firmware/ser_frontend.c`` does, and the tests check it):

1. frame (``frame_length`` samples, hop ``hop_length``; no padding),
2. periodic Hann window in Q30: ``int16 * int32 -> int64`` (exact, <= 2^45; a Q15 window would
   leak sidelobes at -100 dB that the float twin does not have),
3. block floating point: shift each frame so its peak magnitude lies in ``[2^20, 2^21]``
   (round half up when shifting right) and remember the shift ``s``,
4. an ``N/2``-point complex radix-2 decimation-in-frequency FFT of the even/odd samples packed as
   real/imag (data int32, twiddles Q30, products int64, one rounding per output component),
5. the real-FFT split step (one rounding per output component),
6. power ``re^2 + im^2`` (int64, <= 2^61),
7. triangular mel filters: each bin splits its power between two neighbouring filters with Q15
   weights that sum to exactly 2^15 (int64 accumulators, no overflow by Parseval),
8. log2 via leading-bit position + a 129-entry table with linear interpolation (Q16 result),
   minus the frame's shift, floored at ``log_floor``,
9. output: log-mel in Q(frac_bits) (Q16 by default: the log value itself), or an orthonormal DCT-II
   with a Q20 matrix rounded to Q(frac_bits); int32.

All values stay within the bounds given in comments (see ``docs/frontend.md`` for the range analysis).
numpy computes in int64 arrays for speed; the bounds guarantee the C int32 variables never overflow.
"""
from __future__ import annotations

import numpy as np

from .config import FrontendConfig
from .tables import FrontendTables, make_tables

# Frames processed per vectorised block: large enough to amortise numpy call overhead, small enough
# that the int64 work arrays stay in cache and below malloc's mmap threshold (512 frames made every
# temporary a fresh mmap: 2x slower overall).
CHUNK_FRAMES = 256


class FixedPointFrontend:
    """Vectorised integer front end for one configuration (tables built once).

    Work arrays are laid out ``(bins, frames)``: every numpy operation then runs over long contiguous
    rows of frames, whatever the FFT stage, which is what makes the integer path fast in numpy.
    """

    def __init__(self, cfg: FrontendConfig) -> None:
        self.cfg = cfg
        self.t: FrontendTables = make_tables(cfg)
        t = self.t
        n = cfg.frame_length
        self.m = n // 2  # complex FFT size
        col = lambda a: np.asarray(a, dtype=np.int64)[:, None]  # noqa: E731 - broadcast over frames
        self._win_even = col(t.window_q[0::2])
        self._win_odd = col(t.window_q[1::2])
        # Decimation-in-frequency stages (h = M/2 .. 1), twiddles W_{2h}^k = cos - j sin, from the
        # length-M/2 table; stored pre-combined for the 3-multiply complex product.
        self._stages = []
        h = self.m // 2
        while h >= 1:
            k = np.arange(h) * (self.m // (2 * h))
            c = t.fft_cos_q[k].astype(np.int64)
            sn = t.fft_sin_q[k].astype(np.int64)
            self._stages.append((h, col(c), col(sn - c), col(c + sn)))
            h //= 2
        mel = t.mel
        kk = np.arange(mel.bin_lo, mel.bin_hi)
        rev = t.bitrev
        self._kz = rev[kk % self.m]  # DIF output is bit-reversed: fold the reordering into the gather
        self._kc = rev[(self.m - kk) % self.m]  # partner bin Z_{M-k} for the real-FFT split
        self._rc = col(t.rfft_cos_q[kk])
        self._rs = col(t.rfft_sin_q[kk])
        self._rise = col(mel.rise_q)
        self._seg_start = mel.seg_start
        self._seg_empty = mel.seg_len == 0
        self._log_table = t.log_table_q.astype(np.int64)
        self._pow2 = np.int64(1) << np.arange(63, dtype=np.int64)
        self._dct = t.dct_q.astype(np.int64)

    # -- stages: pure functions of their inputs, sharing the tables --

    def window_and_normalise(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps 2-3: windowed, block-normalised frames packed as complex ``z[n] = v[2n] + j v[2n+1]``,
        returned as (re, im) arrays of shape (M, F), and the per-frame shift ``s`` (v = (x w) << s)."""
        cfg = self.cfg
        # (M, F) C-ordered: a transposed view would give every later row operation a 2 KB stride.
        re = np.empty((self.m, frames.shape[0]), dtype=np.int64)
        im = np.empty_like(re)
        np.multiply(frames[:, 0::2].T, self._win_even, out=re)  # |x w| <= 2^15 * 2^30 = 2^45
        np.multiply(frames[:, 1::2].T, self._win_odd, out=im)
        peak = np.maximum(np.maximum(re.max(axis=0), -re.min(axis=0)), np.maximum(im.max(axis=0), -im.min(axis=0)))
        s = cfg.block_bits - _bit_length(peak, self._pow2)  # peak 0 -> shift block_bits, frame stays 0
        ls = np.maximum(s, 0)
        rs = np.maximum(-s, 0)
        rnd = (np.int64(1) << rs) >> 1
        # Speech frames almost all shift right, digital silence left: skip passes that are no-ops.
        left, right = bool(ls.any()), bool(rs.any())
        for a in (re, im):
            if left:
                a <<= ls
            if right:
                a += rnd
                a >>= rs
        return re, im, s

    def fft(self, re: np.ndarray, im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step 4: in-place radix-2 decimation-in-frequency FFT over axis 0 (M points, output in
        bit-reversed order).

        Bound: after the stage with half-size h, |component| <= (M/h) * sqrt(2) * 2^21 (+ rounding):
        below 2^29.5 at the end for M = 256, so int32 holds the data; products stay < 2^62.
        """
        q = self.cfg.twiddle_bits
        rnd = np.int64(1) << (q - 1)
        f = re.shape[1]
        # Scratch rows reused by every stage (large temporaries would cost page faults each time).
        scratch = np.empty((3, self.m // 2, f), dtype=np.int64)
        for h, c, s_c, c_s in self._stages:
            shape = (self.m // (2 * h), 2, h, f)
            xr, xi = re.reshape(shape), im.reshape(shape)
            ar, ai, br, bi = xr[:, 0], xi[:, 0], xr[:, 1], xi[:, 1]
            dr, di, acc = (a.reshape(shape[0], h, f) for a in scratch)
            np.subtract(ar, br, out=dr)
            np.subtract(ai, bi, out=di)
            ar += br
            ai += bi
            if h == 1:  # W = 1: exact
                br[...] = dr
                bi[...] = di
                continue
            if h == 2:  # W in {1, -j}: the general formula gives exactly (dr, di) and (di, -dr)
                br[:, 0], bi[:, 0] = dr[:, 0], di[:, 0]
                br[:, 1] = di[:, 1]
                np.negative(dr[:, 1], out=bi[:, 1])
                continue
            # (dr + j di)(c - j s) with one rounding per component, 3 multiplies:
            # A = c (dr + di); re = A + di (s - c); im = A - dr (c + s).
            np.add(dr, di, out=acc)
            acc *= c
            acc += rnd
            np.multiply(di, s_c, out=br)
            br += acc
            br >>= q
            np.multiply(dr, c_s, out=bi)
            np.subtract(acc, bi, out=bi)
            bi >>= q
        return re, im

    def real_split(self, zr: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step 5: N-point real spectrum, bins ``bin_lo..bin_hi-1`` (rows), from the M-point complex one.

        X_k = (E_k - j W_N^k O_k) / 2 with E = Z_k + conj(Z_{M-k}), O = Z_k - conj(Z_{M-k}).
        |X_k| <= N * 2^21 = 2^30 (int32); the int64 sums below stay under 2^62.2.
        """
        q = self.cfg.twiddle_bits
        a_r, a_i = zr[self._kz], zi[self._kz]
        b_r, b_i = zr[self._kc], zi[self._kc]
        er = a_r + b_r
        ei = a_i - b_i
        o_r = a_r - b_r
        o_i = a_i + b_i
        rnd = np.int64(1) << q
        c, s = self._rc, self._rs
        er <<= q
        er += rnd
        ei <<= q
        ei += rnd
        xr = c * o_i
        xr -= s * o_r
        xr += er
        xr >>= q + 1
        xi = c * o_r
        xi += s * o_i
        np.subtract(ei, xi, out=xi)
        xi >>= q + 1
        return xr, xi

    def mel_energies(self, xr: np.ndarray, xi: np.ndarray) -> np.ndarray:
        """Steps 6-7: power into triangular mel filters, int64, shape (n_mels, F).

        Each bin's power P <= 2^61 is split between its two filters as ``rise = round(P * r / 2^15)``
        (computed as ``(P >> 15) * r + (((P & 0x7FFF) * r + 2^14) >> 15)`` so that no product
        exceeds 2^61) and ``fall = P - rise``: the two parts sum to P exactly and every bin keeps its
        full precision, however weak. Filter sums <= sum of P <= N * sum(x^2) <= 2^60 (Parseval).
        """
        mb = self.cfg.mel_bits
        p = xr * xr
        p += xi * xi
        rise = p >> mb
        rise *= self._rise
        lo = p & ((1 << mb) - 1)
        lo *= self._rise
        lo += np.int64(1) << (mb - 1)
        lo >>= mb
        rise += lo
        p -= rise  # the falling-edge share
        sr = np.add.reduceat(rise, self._seg_start, axis=0)
        sf = np.add.reduceat(p, self._seg_start, axis=0)
        if self._seg_empty.any():  # reduceat returns the element itself for an empty segment
            sr[self._seg_empty] = 0
            sf[self._seg_empty] = 0
        sr = sr[:-1]
        sr += sf[1:]
        return sr

    def log2_q16(self, mel: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Step 8: log2 of the true mel energy in Q16, floored. Result |.| < 2^23."""
        cfg = self.cfg
        tb = cfg.log_table_bits
        e = _bit_length(mel, self._pow2) - 1  # floor(log2), -1 for zero
        ez = np.maximum(e, 0)
        mant = (mel >> np.maximum(ez - 30, 0)) << np.maximum(30 - ez, 0)  # in [2^30, 2^31)
        idx = (mant >> (30 - tb)) - (1 << tb)
        frac15 = (mant >> (15 - tb)) & 0x7FFF
        np.clip(idx, 0, (1 << tb) - 1, out=idx)  # only zero energies fall outside; floored below
        lo = self._log_table[idx]
        hi = self._log_table[idx + 1]
        hi -= lo
        hi *= frac15
        hi += 1 << 14
        hi >>= 15
        lo += hi
        offset = 2 * (15 + cfg.window_bits)
        val = ez - offset
        val -= 2 * s
        val <<= 16
        val += lo
        floor = self.t.log_floor_q16
        np.maximum(val, floor, out=val)
        val[mel <= 0] = floor
        return val

    def output(self, logmel_q16: np.ndarray) -> np.ndarray:
        """Step 9: Q16 log2 (n_mels, F) -> int32 features (F, n_features) in Q(frac_bits)."""
        cfg = self.cfg
        if cfg.output == "logmel":
            sh = 16 - cfg.frac_bits
            out = logmel_q16 if sh == 0 else (logmel_q16 + (1 << (sh - 1))) >> sh
        else:
            sh = cfg.dct_bits + 16 - cfg.frac_bits
            out = self._dct @ logmel_q16  # |acc| < 2^23 * 2^18 * n_mels <= 2^48
            out += np.int64(1) << (sh - 1)
            out >>= sh
        return out.T.astype(np.int32)  # |out| < 2^23 * sqrt(n_mels): always fits

    def process_frames(self, frames: np.ndarray) -> np.ndarray:
        """int32 features (F, n_features) of a (F, frame_length) int16 array of frames."""
        out = np.empty((frames.shape[0], self.cfg.n_features), dtype=np.int32)
        for a in range(0, frames.shape[0], CHUNK_FRAMES):
            blk = frames[a : a + CHUNK_FRAMES]
            re, im, s = self.window_and_normalise(blk)
            re, im = self.fft(re, im)
            xr, xi = self.real_split(re, im)
            mel = self.mel_energies(xr, xi)
            out[a : a + CHUNK_FRAMES] = self.output(self.log2_q16(mel, s))
        return out


def _bit_length(x: np.ndarray, pow2: np.ndarray) -> np.ndarray:
    """Significant bits of non-negative int64 values (0 -> 0), C's ``64 - clz``: the number of
    powers of two ``<= x``, by binary search in the table ``pow2 = [1, 2, 4, ..., 2^62]``."""
    return np.searchsorted(pow2, x, side="right").astype(np.int64)


_ENGINES: dict[FrontendConfig, FixedPointFrontend] = {}


def engine_for(cfg: FrontendConfig) -> FixedPointFrontend:
    """The cached :class:`FixedPointFrontend` for ``cfg``."""
    eng = _ENGINES.get(cfg)
    if eng is None:
        eng = _ENGINES[cfg] = FixedPointFrontend(cfg)
    return eng


def frame_signal(pcm: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """(F, frame_length) read-only view of the frames of ``pcm`` (no copy, no padding)."""
    nf = cfg.n_frames(len(pcm))
    if nf == 0:
        return np.zeros((0, cfg.frame_length), dtype=np.int16)
    win = np.lib.stride_tricks.sliding_window_view(pcm, cfg.frame_length)
    return win[:: cfg.hop_length][:nf]
