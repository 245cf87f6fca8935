"""Training-audio augmentation that matches the robustness conditions the runtime is tested under.

One call of :func:`augment_clip` draws one random "recording condition" for an int16 clip:

1. speed/pitch: resampled by 1 +- ``speed`` (tempo and pitch move together, like a faster talker);
2. reverberation (p = ``p_reverb``): convolution with a synthetic room impulse response, exponentially
   decaying noise with RT60 drawn from ``rt60_s`` (:func:`synthetic_rir`);
3. noise (p = ``p_noise``) at an SNR drawn from ``snr_db``: babble (p = ``p_babble``; several other
   *training* speakers talking at once, :func:`babble`) or coloured noise (white / pink / brown,
   :func:`coloured_noise`);
4. band limiting (p = ``p_band``): the telephone channel (8 kHz, 300-3400 Hz, :func:`telephone`) or a
   small microphone (high-pass 150-500 Hz, low-pass 3.5-7 kHz, :func:`small_mic`);
5. level: the clip's peak set to a level drawn from ``peak_dbfs`` (default -51 ... -1 dBFS, i.e. a
   50 dB range around typical speech peaks), occasionally (p = ``p_clip``) driven up to +6 dBFS and
   hard-clipped like a hot microphone.

All randomness comes from the ``numpy.random.Generator`` passed in; :func:`augmented_copies` seeds it
from (seed, clip index, copy), so copies are reproducible and their features cache by content.
Babble is drawn only from speakers other than the clip's own, and the caller passes only training
speakers, so test voices never leak into training audio.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

SR = 16000


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation step (see the module docstring)."""

    speed: float = 0.1
    p_reverb: float = 0.3
    rt60_s: tuple[float, float] = (0.3, 0.8)
    p_noise: float = 0.6
    snr_db: tuple[float, float] = (0.0, 30.0)
    p_babble: float = 0.5
    babble_talkers: tuple[int, int] = (3, 7)
    p_band: float = 0.3
    p_telephone: float = 0.5
    peak_dbfs: tuple[float, float] = (-51.0, -1.0)
    p_clip: float = 0.05

    def __post_init__(self) -> None:
        # a bad value would silently train another recipe (e.g. p > 1 acts as 1): refuse it here, once,
        # for every caller (bench/accuracy.py turns the error into a one-line usage error)
        for name in ("p_reverb", "p_noise", "p_babble", "p_band", "p_telephone", "p_clip"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise AugmentOptionError(name, v, "a probability must be in [0, 1]")
        lo, hi = self.snr_db
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise AugmentOptionError("snr_db", f"{lo:g},{hi:g}", "need finite LO <= HI (dB)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_options(cls, p_noise: float | None = None, p_babble: float | None = None,
                     snr_db: str | Sequence[float] | None = None) -> "AugmentConfig":
        """The default config with the noise options a recipe sets (``None`` keeps the default).

        ``snr_db``: ``"LO,HI"`` (a command-line or recipe string) or a pair of numbers. Raises
        :class:`AugmentOptionError` for a value outside its range.
        """
        kw: dict = {}
        if p_noise is not None:
            kw["p_noise"] = float(p_noise)
        if p_babble is not None:
            kw["p_babble"] = float(p_babble)
        if snr_db is not None:
            kw["snr_db"] = parse_snr_range(snr_db)
        return cls(**kw)


class AugmentOptionError(ValueError):
    """An augmentation option out of range; ``field`` names the :class:`AugmentConfig` field."""

    def __init__(self, field: str, value, reason: str):
        super().__init__(f"{field} {value}: {reason}")
        self.field, self.value, self.reason = field, value, reason


def parse_snr_range(spec: str | Sequence[float]) -> tuple[float, float]:
    """``"0,20"`` or ``(0, 20)`` -> ``(0.0, 20.0)``; :class:`AugmentOptionError` unless two numbers."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise AugmentOptionError("snr_db", spec if isinstance(spec, str) else ",".join(map(str, spec)),
                                 "need two numbers LO,HI (dB)") from None
    return lo, hi


def _f(pcm: np.ndarray) -> np.ndarray:
    return np.asarray(pcm, np.float64) / 32768.0


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Resample so the clip plays ``factor`` times faster (pitch rises with it)."""
    from scipy.signal import resample_poly

    r = Fraction(float(factor)).limit_denominator(50)
    return x if r == 1 else resample_poly(x, r.denominator, r.numerator)


def synthetic_rir(rt60_s: float, rng: np.random.Generator, sr: int = SR,
                  direct_to_reverb_db: float = 0.0) -> np.ndarray:
    """A room impulse response: a unit direct path, then Gaussian noise decaying by 60 dB in ``rt60_s``.

    The tail starts after a 2-10 ms pre-delay and is scaled so the direct-to-reverberant energy
    ratio is ``direct_to_reverb_db``. Length: 1.2 x RT60.
    """
    n = max(int(1.2 * rt60_s * sr), 16)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * 10 ** (-3.0 * t / rt60_s)  # amplitude -60 dB at t = RT60
    pre = int(rng.uniform(0.002, 0.010) * sr)
    tail[:pre] = 0.0
    e = float(np.sum(tail ** 2)) or 1.0
    tail *= np.sqrt(10 ** (-direct_to_reverb_db / 10) / e)
    tail[0] += 1.0
    return tail


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir``, keep the original length, and keep the original RMS."""
    from scipy.signal import fftconvolve

    y = fftconvolve(x, rir)[: len(x)]
    rx, ry = np.sqrt(np.mean(x ** 2)), np.sqrt(np.mean(y ** 2))
    return y * (rx / ry) if ry > 0 else y


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    y = np.fft.irfft(spec / f ** (exponent / 2.0), n)
    y -= y.mean()
    rms = np.sqrt(np.mean(y ** 2))
    return y / rms if rms > 0 else y


def babble(pool: Sequence[np.ndarray], n: int, talkers: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS babble: ``talkers`` random clips of ``pool`` (looped to length ``n``), each at equal
    RMS, summed. ``pool`` must hold only other speakers' (training) clips."""
    out = np.zeros(n)
    for k in rng.choice(len(pool), size=min(talkers, len(pool)), replace=False):
        s = _f(pool[int(k)])
        if s.size == 0:
            continue
        s = np.tile(s, int(np.ceil(n / s.size)) + 1)
        off = int(rng.integers(0, s.size - n + 1))
        seg = s[off:off + n]
        r = np.sqrt(np.mean(seg ** 2))
        if r > 0:
            out += seg / r
    rms = np.sqrt(np.mean(out ** 2))
    return out / rms if rms > 0 else out


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled to ``snr_db`` below the signal's mean power."""
    ps = float(np.mean(x ** 2))
    pn = float(np.mean(noise ** 2))
    if ps <= 0 or pn <= 0:
        return x
    return x + noise * np.sqrt(ps / (pn * 10 ** (snr_db / 10)))


def _sos(kind: str, cut, sr: int, order: int = 4):
    from scipy.signal import butter

    return butter(order, cut, btype=kind, fs=sr, output="sos")


def telephone(x: np.ndarray, sr: int = SR) -> np.ndarray:
    """Narrow-band telephone channel: down to 8 kHz, band-pass 300-3400 Hz, back up to ``sr``."""
    from scipy.signal import resample_poly, sosfilt

    nb = resample_poly(x, 1, sr // 8000)
    nb = sosfilt(_sos("bandpass", [300.0, 3400.0], 8000), nb)
    return resample_poly(nb, sr // 8000, 1)[: len(x)]


def small_mic(x: np.ndarray, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """A small/cheap microphone: high-pass at 150-500 Hz and low-pass at 3.5-7 kHz."""
    from scipy.signal import sosfilt

    y = sosfilt(_sos("highpass", float(rng.uniform(150, 500)), sr, 2), x)
    return sosfilt(_sos("lowpass", float(rng.uniform(3500, 7000)), sr, 4), y)


def set_peak(x: np.ndarray, peak_dbfs: float) -> np.ndarray:
    """Scale so the absolute peak is at ``peak_dbfs`` (values above 0 dBFS clip when stored)."""
    p = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (10 ** (peak_dbfs / 20) / p) if p > 0 else x


def augment_clip(pcm: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig(),
                 babble_pool: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """One augmented int16 copy of an int16 clip (steps in the module docstring's order).

    ``babble_pool``: clips of *other training speakers* for babble noise; without it, noise is
    always coloured.
    """
    x = _f(pcm)
    if x.size == 0:
        return np.asarray(pcm, np.int16)
    if cfg.speed > 0:
        x = change_speed(x, rng.uniform(1 - cfg.speed, 1 + cfg.speed))
    if rng.random() < cfg.p_reverb:
        x = reverberate(x, synthetic_rir(rng.uniform(*cfg.rt60_s), rng, direct_to_reverb_db=rng.uniform(-3, 6)))
    if rng.random() < cfg.p_noise:
        snr = rng.uniform(*cfg.snr_db)
        if babble_pool is not None and len(babble_pool) > 0 and rng.random() < cfg.p_babble:
            lo, hi = cfg.babble_talkers
            noise = babble(babble_pool, x.size, int(rng.integers(lo, hi + 1)), rng)
        else:
            noise = coloured_noise(x.size, float(rng.choice([0.0, 1.0, 2.0])), rng)
        x = add_noise(x, noise, snr)
    if rng.random() < cfg.p_band:
        x = telephone(x) if rng.random() < cfg.p_telephone else small_mic(x, rng)
    peak = rng.uniform(*cfg.peak_dbfs)
    if rng.random() < cfg.p_clip:
        peak = rng.uniform(0.0, 6.0)  # hot microphone: hard clipping
    return _to_int16(set_peak(x, peak))


def augmented_copies(audios: Sequence[np.ndarray], speakers: Sequence[str], n_copies: int,
                     cfg: AugmentConfig = AugmentConfig(), seed: int = 0, pool_size: int = 200,
                     progress: bool = False) -> list[list[np.ndarray]]:
    """``n_copies`` augmented versions of each clip, seeded by (seed, clip index, copy).

    Babble for a clip is drawn from up to ``pool_size`` clips of the *other* speakers in ``speakers``
    (pass only training clips here).
    """
    from tqdm.auto import tqdm

    speakers = list(speakers)
    if len(speakers) != len(audios):
        raise ValueError(f"{len(audios)} clips but {len(speakers)} speaker ids")
    prng = np.random.default_rng([seed, 7919])
    order = prng.permutation(len(audios))
    by_spk: dict[str, list[np.ndarray]] = {}
    for s in sorted(set(speakers)):
        others = [i for i in order if speakers[i] != s][:pool_size]
        by_spk[s] = [audios[i] for i in others]
    out = []
    for i in tqdm(range(len(audios)), desc="augmenting", unit="clip", disable=not progress, leave=False):
        out.append([augment_clip(audios[i], np.random.default_rng([seed, i, c]), cfg, by_spk[speakers[i]])
                    for c in range(n_copies)])
    return out
