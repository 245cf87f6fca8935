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
from .tables import FrontendTables, fft_radices, make_tables

# Frames processed per vectorised block: large enough to amortise numpy call overhead (~400 calls
# per block), small enough that the int64 work arrays (768 KB at 384 frames) stay in a 2 MB L2 cache.
# Measured by CPU time over 120 clips: 256 -> 384 frames 4.6 % faster, 512 3.3 %, 128 14 % slower.
CHUNK_FRAMES = 384


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
        self.version = cfg.algorithm_version
        self.fft_shift = cfg.fft_shift
        self._stages = []
        if self.version == 1:
            # Radix-2 decimation-in-frequency stages (h = M/2 .. 1), twiddles W_{2h}^k = cos - j sin,
            # from the length-M/2 table; stored pre-combined for the 3-multiply complex product.
            h = self.m // 2
            while h >= 1:
                k = np.arange(h) * (self.m // (2 * h))
                c = t.fft_cos_q[k].astype(np.int64)
                sn = t.fft_sin_q[k].astype(np.int64)
                self._stages.append((h, col(c), col(sn - c), col(c + sn)))
                h //= 2
        else:
            # v2: radix-4 DIF stages (quarter size q = M/4, M/16, ...), then radix-2 if log2 M is odd.
            # Output l of a radix-4 butterfly at offset n is multiplied by W_{4q}^(n l) = W_M^(n l M/4q).
            size = self.m
            for r in fft_radices(self.m):
                q = size // r
                tw = []
                if r == 4 and q > 1:
                    for ell in (1, 2, 3):
                        k = np.arange(q) * ell * (self.m // size)
                        c = t.fft_cos_q[k].astype(np.int64)
                        sn = t.fft_sin_q[k].astype(np.int64)
                        tw.append((col(c), col(sn - c), col(c + sn)))
                self._stages.append((r, q, tw))
                size = q
            # The last twiddled stage shifts right by fft_shift (its products are int64 anyway).
            self._shift_stage = max(i for i, (r, q, tw) in enumerate(self._stages) if tw)
        mel = t.mel
        kk = np.arange(mel.bin_lo, mel.bin_hi)
        rev = t.bitrev
        self._kz = rev[kk % self.m]  # DIF output is bit-reversed: fold the reordering into the gather
        self._kc = rev[(self.m - kk) % self.m]  # partner bin Z_{M-k} for the real-FFT split
        # Many bins: gathering all M + 1 rows once is cheaper than gathering Z_k and Z_{M-k} apart.
        self._nat = np.concatenate([rev, rev[:1]]) if 2 * kk.size > self.m + 1 and mel.bin_lo >= 1 else None
        self._rc = col(t.rfft_cos_q[kk])
        self._rs = col(t.rfft_sin_q[kk])
        self._rise = col(mel.rise_q)
        self._seg_start = mel.seg_start.astype(np.intp)  # index arrays as intp: int32 on armv7
        self._segments = [(int(a), int(a + n)) for a, n in zip(mel.seg_start, mel.seg_len)]
        # [start, end) rows of each of the n_mels + 1 segments, as intp (int32 on armv7)
        self._seg_bounds = (mel.seg_start.astype(np.intp), (mel.seg_start + mel.seg_len).astype(np.intp))
        self._seg_empty = mel.seg_len == 0
        self._log_table = t.log_table_q.astype(np.int64)
        self._log_step = np.diff(self._log_table)  # interpolation steps, < 2^16
        self._pow2 = np.int64(1) << np.arange(63, dtype=np.int64)
        self._dct = t.dct_q.astype(np.int64)
        self._dct_f = t.dct_q.astype(np.float64)

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
        if self.version >= 2:  # |v| <= 2^block_bits: int32, as the C port stores it
            out = []
            for a in (re, im):
                a32 = np.empty(a.shape, dtype=np.int32)
                if right:
                    a += rnd
                    np.right_shift(a, rs, out=a32, casting="unsafe")
                    if left:
                        a32 <<= ls.astype(np.int32)  # a frame shifts one way only: one pass is a no-op
                elif left:
                    np.left_shift(a, ls, out=a32, casting="unsafe")
                else:
                    a32[...] = a
                out.append(a32)
            return out[0], out[1], s
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

    def fft_v2(self, re: np.ndarray, im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step 4 (v2): in-place radix-4 decimation-in-frequency FFT over axis 0 of int32 data (as in
        C: half the memory traffic of int64, and every value fits; M points, output in
        digit-reversed order, ``tables.bitrev[k]`` = position of bin k), radix-2 last if log2 M is odd.

        Butterfly on a0..a3 (offsets n, n+q, n+2q, n+3q): b0 = a0+a2, b1 = a0-a2, b2 = a1+a3,
        b3 = a1-a3; outputs c0 = b0+b2, c1 = b1 - j b3, c2 = b0-b2, c3 = b1 + j b3, and c_l is
        multiplied by W^(n l) with the 3-multiply product of v1 (one rounding per component). The
        last twiddled stage rounds every output (c0 included) ``fft_shift`` bits further right, so the
        spectrum ends at |X_k| <= 2^30 although the input has block_bits = 23 significant bits.
        Bounds (B = block_bits): magnitude <= 2^(B + 0.5) * (growth so far), growth 4 per radix-4
        stage; before the shift <= 2^(B + 0.5 + log2 M - r) <= 2^29.5 (r = log2 of the last stage's
        growth), component sums <= 2^30, products < 2^61.
        """
        q_bits = self.cfg.twiddle_bits
        f = re.shape[1]
        # int64 products of one twiddled leg (M/4 rows), reused by every leg and stage
        scratch = np.empty((2, self.m // 4 * f), dtype=np.int64)
        for i, (r, q, tw) in enumerate(self._stages):
            g = self.m // (r * q)
            xr, xi = re.reshape(g, r, q, f), im.reshape(g, r, q, f)
            if r == 2:  # W = 1: exact
                ar, ai, br, bi = xr[:, 0], xi[:, 0], xr[:, 1], xi[:, 1]
                dr = ar - br
                di = ai - bi
                ar += br
                ai += bi
                br[...] = dr
                bi[...] = di
                continue
            sh = self.fft_shift if i == self._shift_stage else 0
            a0r, a1r, a2r, a3r = (xr[:, j] for j in range(4))
            a0i, a1i, a2i, a3i = (xi[:, j] for j in range(4))
            b1r = a0r - a2r
            b1i = a0i - a2i
            b3r = a1r - a3r
            b3i = a1i - a3i
            a0r += a2r  # b0
            a0i += a2i
            a1r += a3r  # b2
            a1i += a3i
            if not tw:  # q == 1: every twiddle is W^0 = 1: write c0..c3 straight into place
                np.subtract(a0r, a1r, out=a2r)  # c2 (a2 is consumed)
                np.subtract(a0i, a1i, out=a2i)
                a0r += a1r  # c0
                a0i += a1i
                np.add(b1r, b3i, out=a1r)  # c1 (b2 in a1 is consumed)
                np.subtract(b1i, b3r, out=a1i)
                np.subtract(b1r, b3i, out=a3r)  # c3
                np.add(b1i, b3r, out=a3i)
                if sh:
                    for a in (xr, xi):
                        a += 1 << (sh - 1)
                        a >>= sh
                continue
            c2r = a0r - a1r
            c2i = a0i - a1i
            a0r += a1r  # c0
            a0i += a1i
            c1r = b1r + b3i
            c1i = b1i - b3r
            c3r = b1r - b3i
            c3i = b1i + b3r
            if sh:
                a0r += 1 << (sh - 1)
                a0r >>= sh
                a0i += 1 << (sh - 1)
                a0i >>= sh
            qs = q_bits + sh
            rnd = np.int64(1) << (qs - 1)
            acc, t = (a.reshape(g, q, f) for a in scratch)
            for (dr, di), (c, s_c, c_s), (outr, outi) in zip(((c1r, c1i), (c2r, c2i), (c3r, c3i)), tw,
                                                           ((a1r, a1i), (a2r, a2i), (a3r, a3i))):
                # (dr + j di)(c - j s): A = c (dr + di); re = A + di (s - c); im = A - dr (c + s);
                # the data are int32 (as in C), the products int64.
                np.add(dr, di, out=acc)  # dr + di <= 2^30: an int32 sum (as in C), widened on output
                acc *= c
                acc += rnd
                np.multiply(di, s_c, out=t)
                t += acc
                np.right_shift(t, qs, out=outr, casting="unsafe")  # |.| < 2^31 by the bounds above
                np.multiply(dr, c_s, out=t)
                np.subtract(acc, t, out=t)
                np.right_shift(t, qs, out=outi, casting="unsafe")
        return re, im

    def real_split(self, zr: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step 5: N-point real spectrum, bins ``bin_lo..bin_hi-1`` (rows), from the M-point complex one.

        X_k = (E_k - j W_N^k O_k) / 2 with E = Z_k + conj(Z_{M-k}), O = Z_k - conj(Z_{M-k}).
        |X_k| <= N * 2^21 = 2^30 (int32); the int64 sums below stay under 2^62.2.
        """
        q = self.cfg.twiddle_bits
        if self._nat is not None:
            # One gather per component into natural order (row M = Z_0 again): Z_k is row k and
            # Z_{M-k} row k of the reversed view, so no second gather is needed.
            gr, gi = zr[self._nat], zi[self._nat]
            lo, hi = self.t.mel.bin_lo, self.t.mel.bin_hi
            a_r, a_i = gr[lo:hi], gi[lo:hi]
            b_r, b_i = gr[::-1][lo:hi], gi[::-1][lo:hi]
        else:
            a_r, a_i = zr[self._kz], zi[self._kz]
            b_r, b_i = zr[self._kc], zi[self._kc]
        # E, O components < 2^30.5: sums of int32 inputs (v2) stay int32 (as in C) and are widened
        # on output, so that every product below is int64 x int64 (no input casts)
        k, f = a_r.shape
        w = np.empty((4, k, f), dtype=np.int64)
        er, ei, o_r, o_i = w
        np.add(a_r, b_r, out=er)
        np.subtract(a_i, b_i, out=ei)
        np.subtract(a_r, b_r, out=o_r)
        np.add(a_i, b_i, out=o_i)
        c, s = self._rc, self._rs
        e = w[:2]
        e += 1  # (E + 1) 2^Q = E 2^Q + the rounding constant 2^Q
        e <<= q
        xr = c * o_i
        t = s * o_r
        xr -= t
        xr += er
        xr >>= q + 1
        xi = np.multiply(c, o_r, out=o_r)
        np.multiply(s, o_i, out=t)
        xi += t
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
        # Filter j = rising shares of segment j + falling shares of segment j + 1; exact int64 sums
        # (every partial sum <= sum of P <= 2^60). Two equivalent ways, chosen by speed only:
        n_mels = self.cfg.n_mels
        f = rise.shape[1]
        if f >= 64:
            # many frames (batch): one reduction over contiguous rows per segment and edge, written
            # in place (numpy reduces axis 0 of a C-ordered block row by row, vectorised over
            # frames; reduceat was 3x slower); two-bin segments (a third of them) as one add
            r = np.empty((n_mels + 1, f), dtype=np.int64)
            fl = np.empty_like(r)
            for j, (a, b) in enumerate(self._segments):
                if b - a == 2:
                    np.add(rise[a], rise[a + 1], out=r[j])
                    np.add(p[a], p[a + 1], out=fl[j])
                else:  # an empty segment reduces to 0
                    np.add.reduce(rise[a:b], axis=0, out=r[j])
                    np.add.reduce(p[a:b], axis=0, out=fl[j])
            r[:n_mels] += fl[1:]
            return r[:n_mels]
        # few frames (streaming pushes): differences of running sums over bins, a fixed number of
        # numpy calls instead of ~80 per push
        seg_a, seg_b = self._seg_bounds
        # np.add.accumulate, not np.cumsum: cumsum looks ``accumulate`` up by a C string on every
        # call, and CPython 3.11's type method cache pins each such name (see frame_signal)
        zero = np.zeros((1, f), dtype=np.int64)
        cr = np.concatenate([zero, np.add.accumulate(rise, axis=0, dtype=np.int64)])
        cp = np.concatenate([zero, np.add.accumulate(p, axis=0, dtype=np.int64)])
        out = cr[seg_b[:n_mels]] - cr[seg_a[:n_mels]]
        out += cp[seg_b[1:n_mels + 1]]
        out -= cp[seg_a[1:n_mels + 1]]
        return out

    def log2_q16(self, mel: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Step 8: log2 of the true mel energy in Q16, floored. Result |.| < 2^23."""
        cfg = self.cfg
        tb = cfg.log_table_bits
        ez = _bit_length(mel, self._pow2)
        ez -= 1  # floor(log2), -1 for zero
        np.maximum(ez, 0, out=ez)
        # mantissa in [2^30, 2^31): floor(mel 2^(30 - ez)) for either sign of 30 - ez, as one left
        # shift to bit 62 (mel < 2^(ez+1): no overflow) and one right shift; 0 for a zero energy
        mant = 62 - ez
        np.left_shift(mel, mant, out=mant)
        mant >>= 32
        idx = (mant >> (30 - tb)) & ((1 << tb) - 1)  # top bits minus 2^tb; a zero energy gives 0 (floored below)
        frac15 = mant
        frac15 >>= 15 - tb
        frac15 &= 0x7FFF
        lo = self._log_table[idx]
        hi = self._log_step[idx]  # table[idx + 1] - table[idx]
        hi *= frac15
        hi += 1 << 14
        hi >>= 15
        lo += hi
        offset = 2 * (15 + cfg.window_bits) - 2 * self.fft_shift  # v2's FFT divided X by 2^fft_shift
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
            # The sum of products is computed by a float64 matrix product, which is exact here: every
            # operand, product (< 2^20 * 2^23) and partial sum (< 2^43 * n_mels <= 2^50) is an integer
            # below 2^53, so any summation order gives the same integer as C's int64 sum.
            out = (self._dct_f @ logmel_q16.astype(np.float64)).astype(np.int64)
            out += np.int64(1) << (sh - 1)
            out >>= sh
        return out.T.astype(np.int32)  # |out| < 2^23 * sqrt(n_mels): always fits

    def logmel_frames(self, frames: np.ndarray) -> np.ndarray:
        """Steps 2-8 for independent frames: Q16 log2 mel energies, int64 ``(n_mels, F)``."""
        out = np.empty((self.cfg.n_mels, frames.shape[0]), dtype=np.int64)
        fft = self.fft if self.version == 1 else self.fft_v2
        for a in range(0, frames.shape[0], CHUNK_FRAMES):
            blk = frames[a : a + CHUNK_FRAMES]
            re, im, s = self.window_and_normalise(blk)
            re, im = fft(re, im)
            xr, xi = self.real_split(re, im)
            out[:, a : a + CHUNK_FRAMES] = self.log2_q16(self.mel_energies(xr, xi), s)
        return out

    @property
    def normalises(self) -> bool:
        """True when frames depend on earlier frames of the same stream (v2 ``norm='mean'``)."""
        return self.version >= 2 and self.cfg.norm == "mean"

    def process_frames(self, frames: np.ndarray, state: "NormState | None" = None) -> np.ndarray:
        """int32 features (F, n_features) of a (F, frame_length) int16 array of consecutive frames
        of one stream. ``state`` carries the normalisation across calls (streaming); None = a new
        stream."""
        logmel = self.logmel_frames(frames)
        if self.normalises:
            logmel = normalise_mean(logmel, state if state is not None else NormState.new(self.cfg), self.cfg)
        return self.output(logmel)

    def process_streams(self, frames: np.ndarray, counts: list[int]) -> list[np.ndarray]:
        """Features of several independent streams whose frames are stacked in ``frames``
        (``counts[i]`` frames each): the same as :meth:`process_frames` on each, in one pass."""
        logmel = self.logmel_frames(frames)
        if self.normalises:
            logmel = normalise_mean_many(logmel, counts, self.cfg)
        return np.split(self.output(logmel), np.add.accumulate(np.asarray(counts, np.int64))[:-1])


#: Fractional bits the running mean keeps below Q16 (its state is Q(16 + NORM_FRAC_BITS)): the
#: exponential smoother's dead zone is then 2^(norm_shift - 1) units of Q23, ~1e-5 log2.
NORM_FRAC_BITS = 7


class NormState:
    """Running-mean state of one stream: ``acc`` (n_mels,) int64 in Q(16 + NORM_FRAC_BITS) and the
    number of frames seen (saturating at 2^norm_shift)."""

    __slots__ = ("acc", "count")

    def __init__(self, acc: np.ndarray, count: int) -> None:
        self.acc = acc
        self.count = count

    @classmethod
    def new(cls, cfg: FrontendConfig) -> "NormState":
        return cls(np.zeros(cfg.n_mels, dtype=np.int64), 0)


def normalise_mean(logmel: np.ndarray, state: NormState, cfg: FrontendConfig) -> np.ndarray:
    """v2 per-channel running-mean subtraction of Q16 log2 mel energies ``(n_mels, F)`` (one stream).

    For frame t (1-based) with n = min(t, 2^k), k = norm_shift, per channel::

        acc += floor((L * 2^7 - acc + floor(n / 2)) / n)     # Q23; for n = 2^k: (d + 2^(k-1)) >> k
        y = L - ((acc + 2^6) >> 7)

    i.e. the cumulative mean of the first 2^k frames, then an exponential smoother with time
    constant 2^k frames. A constant offset G on L (a gain) moves acc by exactly G * 2^7, so y does
    not change. Bounds: |L| <= 2^22 (log2 in [-64, 18]), acc and d < 2^30 (int32 in C), |y| < 2^23.
    Updates ``state`` in place; returns y as int64 ``(n_mels, F)``.
    """
    k = cfg.norm_shift
    cap = 1 << k
    lx = logmel << NORM_FRAC_BITS
    hist = np.empty_like(lx)
    acc = state.acc.copy()
    n = state.count
    half = np.int64(1 << (k - 1)) if k else np.int64(0)
    d = np.empty_like(acc)
    for t in range(lx.shape[1]):
        np.subtract(lx[:, t], acc, out=d)
        if n < cap:
            n += 1
            d += n // 2
            d //= n  # floor division, as C's floor_div
        else:
            d += half
            d >>= k
        acc += d
        hist[:, t] = acc
    state.acc, state.count = acc, n
    hist += 1 << (NORM_FRAC_BITS - 1)
    hist >>= NORM_FRAC_BITS
    return logmel - hist


def normalise_mean_many(logmel: np.ndarray, counts: list[int], cfg: FrontendConfig) -> np.ndarray:
    """:func:`normalise_mean` of several streams stacked along axis 1, each from a fresh state; the
    recursion runs once per frame index across all streams (vectorised over streams), in int32 as
    in C (|L| <= 2^22, |acc| < 2^30)."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size == 0 or counts.max(initial=0) == 0:
        return logmel.copy()
    order = np.argsort(-counts, kind="stable")  # longest first: the active streams are a prefix
    starts = np.concatenate([[0], np.add.accumulate(counts)[:-1]])
    cs = counts[order]
    tmax = int(cs[0])
    active = np.searchsorted(-cs, -np.arange(tmax), side="left")  # streams with count > t
    # (t, stream, channel) by one row gather: frame t of the j-th longest stream; past a stream's end
    # (or in a stream without frames) the longest stream's first frame stands in (never read: only
    # the active prefix is updated and returned)
    t = np.arange(tmax)[:, None]
    so = starts[order]
    src = np.where(t < cs[None, :], so[None, :] + t, so[0])
    lq = logmel.T.astype(np.int32)[src]
    k = cfg.norm_shift
    cap = 1 << k
    half = np.int32(1 << (k - 1)) if k else np.int32(0)
    # acc[t] = the state after frame t, in place of L[t] 2^7: acc_0 = L_0 2^7 (n = 1), then
    # acc_t = acc_{t-1} + floor((L_t 2^7 - acc_{t-1} + floor(n/2)) / n), n = min(t + 1, 2^k)
    acc = lq << NORM_FRAC_BITS
    for t in range(1, tmax):
        a = int(active[t])
        cur, prev = acc[t, :a], acc[t - 1, :a]
        cur -= prev
        if t < cap:
            n = t + 1
            cur += n // 2
            cur //= n  # floor division, as C's floor_div
        else:
            cur += half
            cur >>= k
        cur += prev
    acc += 1 << (NORM_FRAC_BITS - 1)
    acc >>= NORM_FRAC_BITS
    lq -= acc
    # back to (channel, frame) in the input's order: frame f of stream i is row f - starts[i] of
    # column rank[i]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    stream = np.repeat(np.arange(counts.size), counts)
    out = np.empty(logmel.shape, dtype=np.int64)
    out.T[...] = lq[np.arange(stream.size) - starts[stream], rank[stream]]
    return out


def _bit_length(x: np.ndarray, pow2: np.ndarray) -> np.ndarray:
    """Significant bits of int64 values in [0, 2^62] (0 -> 0), C's ``64 - clz``, exactly (mel
    energies are <= 2^60, window peaks <= 2^45).

    Read off the exponent of ``x`` converted to float64 (8x faster than a binary search in numpy),
    then corrected with integers: the conversion rounds to 53 bits, which can only carry ``x`` up to
    the next power of two, so the exponent gives ``b = bit_length(x)`` or ``b + 1``; where
    ``2^(b-1) > x`` (``pow2 = [1, 2, 4, ..., 2^62]``) it was ``b + 1``. x = 0 has exponent field 0
    and ends at 0 the same way. The float is only a container: every result is the integer one
    (tests/test_frontend_fixed.py checks every power of two and its neighbours)."""
    b = (x.astype(np.float64).view(np.int64) >> 52) - 1022  # biased exponent - 1023 + 1
    np.maximum(b, 1, out=b)
    b -= pow2[b - 1] > x
    return b


_ENGINES: dict[FrontendConfig, FixedPointFrontend] = {}


def engine_for(cfg: FrontendConfig) -> FixedPointFrontend:
    """The cached :class:`FixedPointFrontend` for ``cfg``."""
    eng = _ENGINES.get(cfg)
    if eng is None:
        eng = _ENGINES[cfg] = FixedPointFrontend(cfg)
    return eng


def frame_signal(pcm: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """(F, frame_length) read-only view of the frames of ``pcm`` (no copy, no padding).

    The view is made with the ndarray constructor over ``pcm``'s buffer, not with
    ``sliding_window_view``: that goes through ``as_strided`` and ``__array_interface__``, whose
    dict keys CPython 3.11 interns and frees again on every call. Streaming calls this once per
    chunk (31 times a second for 512-sample AUDIO frames), and that churn made the interpreter's
    table of interned strings resize every ~15 minutes of audio -- a new ~0.9 MB block each time,
    which glibc took from the heap once its mmap threshold had risen: the one-off 0.9 MB RSS step
    at 42.5 minutes of every hour-long `serve` soak (found with bench/soak_fast.py and strace).
    It is made read-only with ``setflags``, not ``flags.writeable = False``: numpy's flags setter
    looks ``setflags`` up by a C string, a new str object per call, and CPython 3.11's type
    method cache keeps a reference to the name of each lookup in one of its 4096 slots -- ~57 B
    pinned per slot, a slow growth seen in tracemalloc snapshots of bench/soak_fast.py (the larger
    ~0.2 MB ramp was the tuple free list: see serial_device.result_to_message).
    """
    nf = cfg.n_frames(len(pcm))
    if nf == 0:
        return np.zeros((0, cfg.frame_length), dtype=np.int16)
    a = np.ascontiguousarray(pcm)
    out = np.ndarray((nf, cfg.frame_length), a.dtype, a, 0, (cfg.hop_length * a.itemsize, a.itemsize))
    out.setflags(write=False)
    return out
