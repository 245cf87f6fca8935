"""Front-end configuration: one frozen dataclass and its stable hash.

A model carries the hash of the configuration it was trained with; the runtime refuses a model whose
hash differs from the front end it runs (see :mod:`edge_runtime.model_metadata`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

#: Bump when the integer arithmetic changes in a way that changes any output bit.
ALGORITHM_VERSION = 1


@dataclass(frozen=True)
class FrontendConfig:
    """Parameters of the fixed-point MFCC / log-mel front end.

    Features are ``int32`` in log2 units with ``frac_bits`` fractional bits: ``value = q / 2**frac_bits``
    (default Q16: one unit = 1/65536 of a doubling of energy; a full-scale sine's mel band is about +14,
    the floor is ``log_floor``).
    ``output="logmel"`` gives ``n_mels`` log2 mel energies; ``output="mfcc"`` gives ``n_mfcc``
    coefficients of an orthonormal DCT-II of those log2 mel energies.
    """

    sample_rate: int = 16000
    frame_length: int = 512  # samples per frame = FFT size (32 ms)
    hop_length: int = 256  # 16 ms
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 8000.0
    n_mfcc: int = 13
    output: str = "mfcc"  # "mfcc" | "logmel"
    frac_bits: int = 16  # output fixed-point scale (Q16 log2 units, int32)
    log_floor: float = -24.0  # log2 of the smallest mel energy (full-scale sine ~ +14)
    # Internal fixed-point formats (part of the hash: changing them changes output bits).
    window_bits: int = 30  # Hann window in Q30 (int32); Q15 leaks -100 dB sidelobes
    block_bits: int = 21  # per-frame block floating point: max |sample| in [2^20, 2^21]
    twiddle_bits: int = 30  # FFT twiddles in Q30
    mel_bits: int = 15  # triangular mel weights in Q15
    log_table_bits: int = 7  # 2^7 + 1 entry log2(1+x) table, linear interpolation
    dct_bits: int = 20  # DCT-II matrix in Q20
    algorithm_version: int = ALGORITHM_VERSION

    def __post_init__(self) -> None:
        errors = []
        n = self.frame_length
        if self.sample_rate <= 0:
            errors.append("sample_rate must be positive")
        if n < 16 or n > 4096 or n & (n - 1):
            errors.append(f"frame_length must be a power of two in [16, 4096], got {n}")
        if not 0 < self.hop_length <= n:
            errors.append(f"hop_length must be in (0, frame_length], got {self.hop_length}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            errors.append(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin} fmax={self.fmax}")
        if not 1 <= self.n_mels <= 128:
            errors.append(f"n_mels must be in [1, 128], got {self.n_mels}")
        if self.output not in ("mfcc", "logmel"):
            errors.append(f"output must be 'mfcc' or 'logmel', got {self.output!r}")
        if self.output == "mfcc" and not 1 <= self.n_mfcc <= self.n_mels:
            errors.append(f"n_mfcc must be in [1, n_mels], got {self.n_mfcc}")
        if not 0 <= self.frac_bits <= 16:
            errors.append(f"frac_bits must be in [0, 16], got {self.frac_bits}")
        # Range analysis (see docs/frontend.md): an N-point real FFT grows values by at most N, and
        # the FFT data must stay inside int32; block_bits + log2(N) <= 30.
        if self.block_bits + n.bit_length() - 1 > 30:
            errors.append("block_bits + log2(frame_length) must be <= 30 (int32 FFT data)")
        if not 8 <= self.window_bits <= 30:
            errors.append(f"window_bits must be in [8, 30], got {self.window_bits}")
        if errors:
            raise ValueError("invalid FrontendConfig: " + "; ".join(errors))

    @property
    def n_features(self) -> int:
        """Number of feature values per frame."""
        return self.n_mfcc if self.output == "mfcc" else self.n_mels

    @property
    def frame_ms(self) -> float:
        return 1000.0 * self.frame_length / self.sample_rate

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.hop_length / self.sample_rate

    def n_frames(self, n_samples: int) -> int:
        """Frames produced from ``n_samples`` samples (no padding: a clip shorter than a frame gives 0)."""
        if n_samples < self.frame_length:
            return 0
        return 1 + (n_samples - self.frame_length) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FrontendConfig":
        """Build from a dict (e.g. model metadata); unknown keys are an error, not silently ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown front-end parameters {unknown} (is the model from a newer ser-edge?)")
        return cls(**d)

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of every parameter (canonical JSON, SHA-256)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def diff(self, other: "FrontendConfig") -> dict[str, tuple[Any, Any]]:
        """Parameters that differ: ``{name: (self_value, other_value)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


DEFAULT_CONFIG = FrontendConfig()
