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
#: 1: radix-2 FFT, block_bits 21, no normalisation (the shipped model's front end).
#: 2: radix-4 FFT with a late down-shift, block_bits 23, per-channel running-mean subtraction.
ALGORITHM_VERSION = 2
#: Versions this runtime computes bit for bit (a model built on any of them keeps working).
SUPPORTED_VERSIONS = (1, 2)
#: Version of ``FrontendConfig()`` without an explicit ``algorithm_version`` (new models use it;
#: a model records its own version, so models built on version 1 keep getting version 1).
DEFAULT_ALGORITHM_VERSION = 2

# Defaults that depend on the version (None in the dataclass = "the version's default").
_VERSION_DEFAULTS = {
    1: {"block_bits": 21, "norm": "none", "norm_shift": 0},
    2: {"block_bits": 23, "norm": "mean", "norm_shift": 7},
}
# Parameters that do not exist in version 1: left out of its dict so that a v1 configuration keeps
# the hash it had before they were added (models built on v1 record that hash).
_V2_ONLY = ("norm", "norm_shift")


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
    block_bits: int | None = None  # block floating point: peak |sample| in [2^(b-1), 2^b]; v1 21, v2 23
    twiddle_bits: int = 30  # FFT twiddles in Q30
    mel_bits: int = 15  # triangular mel weights in Q15
    log_table_bits: int = 7  # 2^7 + 1 entry log2(1+x) table, linear interpolation
    dct_bits: int = 20  # DCT-II matrix in Q20
    algorithm_version: int = DEFAULT_ALGORITHM_VERSION
    # Version 2 only: per-channel gain normalisation of the log-mel energies (before the DCT).
    # "mean": subtract a running mean (cumulative mean over the first 2^norm_shift frames, then an
    # exponential smoother with time constant 2^norm_shift frames: 7 -> 128 frames = 2.05 s).
    # A gain g is +log2(g^2) on every log-mel value, so it cancels exactly. "none": no normalisation.
    norm: str | None = None
    norm_shift: int | None = None

    def __post_init__(self) -> None:
        errors = []
        v = self.algorithm_version
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(
                f"invalid FrontendConfig: algorithm_version {v!r} is not supported by this ser-edge "
                f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); is the model from a newer ser-edge?"
            )
        for name, value in _VERSION_DEFAULTS[v].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: resolve the version default once
        if v == 1 and (self.norm != "none" or self.norm_shift != 0):
            errors.append("norm/norm_shift need algorithm_version 2 (version 1 has no normalisation)")
        if self.norm not in ("none", "mean"):
            errors.append(f"norm must be 'none' or 'mean', got {self.norm!r}")
        if v >= 2 and self.norm == "mean" and not 0 <= self.norm_shift <= 12:
            errors.append(f"norm_shift must be in [0, 12] (time constant 2^norm_shift frames), got {self.norm_shift}")
        if v >= 2 and self.norm == "none" and self.norm_shift != 0:
            object.__setattr__(self, "norm_shift", 0)  # meaningless without norm: one canonical value
        if not -64 <= self.log_floor <= 0:
            errors.append(f"log_floor must be in [-64, 0], got {self.log_floor}")
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
        # the FFT data must stay inside int32. v1: block_bits + log2(N) <= 30. v2 shifts right by
        # fft_shift bits at its last twiddled stage; before that shift the values may reach
        # 2^(block_bits + log2(N/2) - r + 0.5) (r = log2 of the growth of the stage after it) and
        # the sums dr + di of their components 2^(block_bits + log2(N/2) - r + 1), below 2^31.
        lg = n.bit_length() - 1
        if v == 1 and self.block_bits + lg > 30:
            errors.append("block_bits + log2(frame_length) must be <= 30 (int32 FFT data)")
        if v >= 2 and (self.block_bits < 8 or self.block_bits + lg - 1 - (2 if (lg - 1) % 2 == 0 else 1) > 29):
            errors.append("block_bits must be >= 8 and block_bits + log2(frame_length/2) - r <= 29 "
                          "(int32 FFT data before the down-shift; r = 2 if log2(frame_length/2) is even else 1)")
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

    @property
    def fft_shift(self) -> int:
        """v2: bits the FFT shifts right at its last twiddled stage so that |X_k| <= 2^30."""
        if self.algorithm_version == 1:
            return 0
        return max(0, self.block_bits + self.frame_length.bit_length() - 1 - 30)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.algorithm_version == 1:
            for k in _V2_ONLY:
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FrontendConfig":
        """Build from a dict (e.g. model metadata); unknown keys are an error, not silently ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown front-end parameters {unknown} (is the model from a newer ser-edge?)")
        return cls(**d)

    @classmethod
    def for_version(cls, version: int, **kw: Any) -> "FrontendConfig":
        """The defaults of ``algorithm_version=version`` with ``kw`` overridden."""
        return cls(algorithm_version=version, **kw)

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of every parameter (canonical JSON, SHA-256)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def diff(self, other: "FrontendConfig") -> dict[str, tuple[Any, Any]]:
        """Parameters that differ: ``{name: (self_value, other_value)}``."""
        a, b = self.to_dict(), other.to_dict()
        keys = list(a) + [k for k in b if k not in a]
        return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in keys if a.get(k, "<absent>") != b.get(k, "<absent>")}


DEFAULT_CONFIG = FrontendConfig()
