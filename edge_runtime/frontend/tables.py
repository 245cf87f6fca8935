"""Integer tables of the fixed-point front end, generated once from a :class:`FrontendConfig`.

Floats appear only here, at table-generation time; the run-time path uses the integer arrays.
The same tables are exported to C by ``firmware_bridge`` so that both implementations agree bit for bit.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .config import FrontendConfig


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def _bit_reverse(n: int) -> np.ndarray:
    bits = n.bit_length() - 1
    idx = np.arange(n)
    rev = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    return rev


def fft_radices(m: int) -> list[int]:
    """Stage radices of the v2 M-point FFT: radix-4 stages, then one radix-2 stage if log2 M is odd."""
    lg = m.bit_length() - 1
    return [4] * (lg // 2) + [2] * (lg % 2)


def fft_output_position(m: int, radices: list[int]) -> np.ndarray:
    """Where a decimation-in-frequency FFT with these stage radices leaves bin k: ``pos[k]``.

    A radix-R stage on a block of L points leaves, in sub-block l (of L/R points), the bins
    ``R k' + l`` of the sub-FFT that follows (digit reversal; bit reversal when every R is 2).
    """
    order = np.zeros(1, dtype=np.int64)  # order[position] = bin, built from the last stage outwards
    for r in reversed(radices):
        order = np.concatenate([r * order + ell for ell in range(r)])
    assert order.size == m
    pos = np.empty(m, dtype=np.int64)
    pos[order] = np.arange(m)
    return pos


@dataclass(frozen=True)
class MelLayout:
    """Triangular mel filters in the 'segment' form used by the integer path.

    Bins ``bin_lo .. bin_hi-1`` lie inside the filterbank. Bin ``b`` belongs to segment ``seg[b]``
    (between mel points ``seg`` and ``seg+1``); it adds ``rise[b]`` (Q15) of its power to filter ``seg``
    (0-based; the rising edge) and ``2^15 - rise[b]`` to filter ``seg-1`` (the falling edge).
    Segments ``0..n_mels``; segment 0 only rises into filter 0, segment ``n_mels`` only falls from
    filter ``n_mels-1``.
    """

    bin_lo: int
    bin_hi: int
    seg_start: np.ndarray  # (n_mels + 1,) first bin of each segment, relative to bin_lo
    seg_len: np.ndarray  # (n_mels + 1,) bins in each segment (may be 0)
    rise_q: np.ndarray  # (bin_hi - bin_lo,) int32 rise weights, Q(mel_bits)
    rise_f: np.ndarray  # float64 exact rise weights (float twin)


@dataclass(frozen=True)
class FrontendTables:
    """All integer tables, plus the float originals the float64 twin uses."""

    config: FrontendConfig
    window_q: np.ndarray  # (N,) int32 periodic Hann, Q(window_bits)
    window_f: np.ndarray  # (N,) float64
    bitrev: np.ndarray  # (N/2,) FFT output position of bin k: bit reversal (v1), digit reversal (v2)
    fft_cos_q: np.ndarray  # int32 cos(2*pi*k/(N/2)), Q30, k < N/4 (v1) or k < 3N/8 (v2): FFT twiddles
    fft_sin_q: np.ndarray  # (N/4,) int32 sin(...)
    rfft_cos_q: np.ndarray  # (N/2 + 1,) int32 cos(2*pi*k/N), Q30 (real-FFT split twiddles)
    rfft_sin_q: np.ndarray  # (N/2 + 1,) int32 sin(2*pi*k/N), Q30
    mel: MelLayout
    log_table_q: np.ndarray  # (2^T + 1,) int32 round(log2(1 + i/2^T) * 2^16)
    dct_q: np.ndarray  # (n_mfcc, n_mels) int32 orthonormal DCT-II, Q(dct_bits)
    dct_f: np.ndarray  # float64 original
    log_floor_q16: int  # log floor in Q16 log2 units


def _mel_layout(cfg: FrontendConfig) -> MelLayout:
    n = cfg.frame_length
    freqs = np.arange(n // 2 + 1) * cfg.sample_rate / n
    pts = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    inside = (freqs >= pts[0]) & (freqs < pts[-1])
    bins = np.nonzero(inside)[0]
    if bins.size == 0:
        raise ValueError(f"no FFT bin falls between fmin={cfg.fmin} and fmax={cfg.fmax}")
    seg = np.searchsorted(pts, freqs[bins], side="right") - 1  # pts[seg] <= f < pts[seg+1]
    rise_f = (freqs[bins] - pts[seg]) / (pts[seg + 1] - pts[seg])
    one = 1 << cfg.mel_bits
    rise_q = np.clip(np.round(rise_f * one), 0, one).astype(np.int32)
    counts = np.bincount(seg, minlength=cfg.n_mels + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # Filter j collects segment j (rising) and segment j+1 (falling): both empty = a dead filter.
    dead = [j for j in range(cfg.n_mels) if counts[j] == 0 and counts[j + 1] == 0]
    if dead:
        raise ValueError(
            f"mel filters {dead} contain no FFT bin: use fewer mels, a larger frame_length or a higher fmin"
        )
    return MelLayout(int(bins[0]), int(bins[-1]) + 1, starts.astype(np.int64), counts.astype(np.int64), rise_q, rise_f)


def _dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (scipy's ``dct(type=2, norm='ortho')``)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    d[0] /= np.sqrt(2.0)
    return d


def _q(x: np.ndarray, bits: int, dtype=np.int32) -> np.ndarray:
    one = 1 << bits
    return np.clip(np.round(np.asarray(x) * one), -one, one).astype(dtype)


@functools.lru_cache(maxsize=16)
def make_tables(cfg: FrontendConfig) -> FrontendTables:
    """Generate (and cache) every table for ``cfg``."""
    n = cfg.frame_length
    half = n // 2
    window_f = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann, as librosa
    window_q = np.clip(np.round(window_f * (1 << cfg.window_bits)), 0, 1 << cfg.window_bits).astype(np.int32)
    # v1 (radix-2) needs W_M^k for k < M/2; v2 (radix-4) W_M^(n l) for n < M/4, l <= 3: k < 3M/4.
    k4 = np.arange(max(half // 2, 1) if cfg.algorithm_version == 1 else 3 * half // 4)
    order = _bit_reverse(half) if cfg.algorithm_version == 1 else fft_output_position(half, fft_radices(half))
    kr = np.arange(half + 1)
    t = 1 << cfg.log_table_bits
    log_table = np.round(np.log2(1 + np.arange(t + 1) / t) * 65536).astype(np.int32)
    n_mfcc = cfg.n_mfcc if cfg.output == "mfcc" else cfg.n_mels
    dct_f = _dct_matrix(n_mfcc, cfg.n_mels)
    return FrontendTables(
        config=cfg,
        window_q=window_q,
        window_f=window_f,
        bitrev=order,
        fft_cos_q=_q(np.cos(2 * np.pi * k4 / half), cfg.twiddle_bits),
        fft_sin_q=_q(np.sin(2 * np.pi * k4 / half), cfg.twiddle_bits),
        rfft_cos_q=_q(np.cos(2 * np.pi * kr / n), cfg.twiddle_bits),
        rfft_sin_q=_q(np.sin(2 * np.pi * kr / n), cfg.twiddle_bits),
        mel=_mel_layout(cfg),
        log_table_q=log_table,
        dct_q=_q(dct_f, cfg.dct_bits),
        dct_f=dct_f,
        log_floor_q16=int(round(cfg.log_floor * 65536)),
    )


#: The integer tables covered by :func:`tables_checksum`, in order (their int32 values, little endian).
CHECKSUM_TABLES = ("window_q", "bitrev", "fft_cos_q", "fft_sin_q", "rfft_cos_q", "rfft_sin_q",
                   "mel.seg_start", "mel.seg_len", "mel.rise_q", "log_table_q", "dct_q")


def tables_checksum(cfg: FrontendConfig) -> str:
    """FNV-1a 32 (8 hex digits) over every integer table this runtime generates for ``cfg``.

    Recorded in a model's metadata (``frontend_tables_checksum``) when it is built and compared at
    load (``edge_runtime.interpreter.check_frontend``): the front-end *hash* covers the parameters
    and the algorithm version, this covers the numbers actually generated from them (a numpy or
    libm that rounded one table entry differently would otherwise pass unnoticed).
    """
    t = make_tables(cfg)
    parts = [np.asarray([t.mel.bin_lo, t.mel.bin_hi, t.log_floor_q16], np.int64)]
    for name in CHECKSUM_TABLES:
        obj = t
        for attr in name.split("."):
            obj = getattr(obj, attr)
        parts.append(np.asarray(obj, np.int64).ravel())
    data = np.concatenate(parts).astype("<i4").tobytes()
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"
