"""Built-in synthetic "emotional speech" corpus: no download, deterministic, fast.

What it is: a source-filter speech-like synthesizer. A Rosenberg glottal pulse train (with jitter,
shimmer, open quotient and aspiration noise) feeds a cascade of five 2nd-order formant resonators whose
frequencies glide between vowel targets, shaped into syllables with fricative onsets. Each emotion
class sets the prosody the acted-speech literature associates with it (pitch level and range,
speaking rate, loudness, spectral tilt, jitter/shimmer, breathiness, tremor, final rise), scaled per
clip by a random intensity and perturbed at random, over several synthetic speakers with their own F0
and vocal-tract length.

What it is NOT: emotional speech. There are no words, and the classes differ only by the prosody
rules below. Accuracy on this corpus tests that the pipeline (features, training, quantisation,
on-device inference) works end to end; it never measures emotion-recognition accuracy. Use RAVDESS
with speaker-grouped folds for that.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

from .labels import RAVDESS8
from .records import Clip

SR = 16000
_BLOCK = 160  # formants are updated every 10 ms


@dataclass(frozen=True)
class Prosody:
    """Prosody of one emotion class, as factors/offsets relative to the speaker's neutral voice."""

    f0_scale: float  # mean pitch x speaker F0
    f0_range_st: float  # pitch movement (declination + accents), semitones
    rate: float  # syllables per second
    level_db: float  # loudness vs neutral
    tilt: float  # one-pole low-pass on the source: higher = darker, softer voice
    open_quotient: float  # glottal open phase fraction: higher = breathier, weaker harmonics
    jitter: float  # cycle-to-cycle period perturbation (relative std)
    shimmer: float  # cycle-to-cycle amplitude perturbation (relative std)
    breath: float  # aspiration noise relative to voicing
    tremor_st: float = 0.0  # 5-8 Hz pitch tremor depth, semitones
    final_st: float = 0.0  # pitch movement over the last quarter (surprise rises, sadness falls)
    f1_shift: float = 1.0  # F1 scale (wider mouth opening when aroused)


# Directions from Murray & Arnott (1993), Scherer (2003), Banse & Scherer (1996); magnitudes are
# chosen so classes overlap once per-clip randomness is added.
PROFILES: dict[str, Prosody] = {
    "neutral": Prosody(1.00, 3.0, 4.2, 0.0, 0.70, 0.60, 0.006, 0.04, 0.06),
    "calm": Prosody(0.95, 2.0, 3.6, -3.0, 0.78, 0.66, 0.005, 0.03, 0.12, f1_shift=0.97),
    "happy": Prosody(1.22, 7.0, 4.8, 3.0, 0.60, 0.55, 0.008, 0.05, 0.05, final_st=1.0, f1_shift=1.06),
    "sad": Prosody(0.90, 1.5, 3.0, -5.0, 0.85, 0.70, 0.012, 0.06, 0.18, final_st=-2.0, f1_shift=0.94),
    "angry": Prosody(1.18, 6.0, 5.2, 7.0, 0.40, 0.45, 0.015, 0.08, 0.04, final_st=-1.5, f1_shift=1.10),
    "fearful": Prosody(1.38, 4.0, 5.6, 1.0, 0.65, 0.60, 0.025, 0.07, 0.14, tremor_st=0.8, f1_shift=1.02),
    "disgust": Prosody(0.92, 4.0, 3.2, 1.0, 0.65, 0.55, 0.020, 0.09, 0.08, final_st=-3.0, f1_shift=0.98),
    "surprised": Prosody(1.30, 9.0, 4.4, 4.0, 0.55, 0.55, 0.008, 0.05, 0.06, final_st=5.0, f1_shift=1.05),
}

# Peterson & Barney (1952) adult-male vowel formants F1-F3 (Hz); F4, F5 fixed.
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
                    [570, 840, 2410], [660, 1720, 2410], [490, 1350, 1690], [440, 1020, 2240]], float)
_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0, 260.0])
_FRIC_SOS = butter(4, [2500, 6500], btype="bandpass", fs=SR, output="sos")
_ASPIRATION_B, _ASPIRATION_A = butter(2, 1000, btype="highpass", fs=SR)


@dataclass(frozen=True)
class SynthSpeaker:
    id: str
    sex: str
    f0: float  # neutral mean F0, Hz
    formant_scale: float  # shorter vocal tract -> higher formants
    rate_scale: float
    level_db: float


def make_speakers(n: int, seed: int = 0) -> list[SynthSpeaker]:
    """``n`` synthetic speakers alternating male/female, with their own pitch, formants, rate, level."""
    rng = np.random.default_rng([seed, 7919])
    out = []
    for i in range(n):
        male = i % 2 == 0
        out.append(SynthSpeaker(
            id=f"S{i + 1:02d}", sex="M" if male else "F",
            f0=float(rng.uniform(95, 140) if male else rng.uniform(175, 240)),
            formant_scale=float(rng.uniform(0.94, 1.06) if male else rng.uniform(1.10, 1.22)),
            rate_scale=float(rng.uniform(0.88, 1.12)), level_db=float(rng.uniform(-2.5, 2.5))))
    return out


def _clip_prosody(label: str, strength: float, rng: np.random.Generator) -> Prosody:
    """Interpolate from neutral towards the class profile by ``strength``, then perturb every field."""
    neu, emo = PROFILES["neutral"], PROFILES[label]
    fields = {f: getattr(neu, f) + strength * (getattr(emo, f) - getattr(neu, f)) for f in emo.__dataclass_fields__}
    noise = {"f0_scale": 0.05, "f0_range_st": 0.25, "rate": 0.10, "tilt": 0.06, "open_quotient": 0.05,
             "jitter": 0.3, "shimmer": 0.3, "breath": 0.3, "f1_shift": 0.02}
    for f, rel in noise.items():
        fields[f] *= float(np.exp(rng.normal(0.0, rel)))
    fields["level_db"] += float(rng.normal(0.0, 1.5))
    fields["final_st"] += float(rng.normal(0.0, 1.0))
    fields["tilt"] = min(fields["tilt"], 0.95)
    fields["open_quotient"] = float(np.clip(fields["open_quotient"], 0.3, 0.85))
    return Prosody(**fields)


def synthesize(p: Prosody, spk: SynthSpeaker, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """One utterance of ``duration_s`` seconds at 16 kHz as float32 in [-1, 1)."""
    sr = SR
    n = int(round(duration_s * sr))
    t = np.arange(n) / sr
    lead, tail = rng.uniform(0.08, 0.25, size=2)
    speech = max(duration_s - lead - tail, 0.4)
    n_syl = max(2, int(round(p.rate * spk.rate_scale * speech * rng.uniform(0.85, 1.15))))
    w = rng.gamma(4.0, size=n_syl)
    bounds = lead + np.concatenate([[0.0], np.cumsum(w / w.sum() * speech)])
    syl = np.clip(np.searchsorted(bounds, t, side="right") - 1, 0, n_syl - 1)
    inside = (t >= bounds[0]) & (t < bounds[-1])
    u = np.clip((t - bounds[syl]) / (bounds[syl + 1] - bounds[syl]), 0.0, 1.0)  # position in syllable

    # Syllable structure: optional fricative onset, voiced nucleus, short gap at the end.
    cons = np.where(rng.random(n_syl) < 0.6, rng.uniform(0.12, 0.28, n_syl), 0.0)
    gap = rng.uniform(0.04, 0.15, n_syl)
    stress = rng.uniform(0.55, 1.0, n_syl)
    stress[rng.integers(n_syl)] = 1.0
    v_pos = np.clip((u - cons[syl]) / (1.0 - cons[syl] - gap[syl]), 0.0, 1.0)
    env_v = np.where(inside, np.sin(np.pi * v_pos) ** 0.6 * stress[syl], 0.0)
    env_u = np.where(inside & (u < cons[syl]), np.sin(np.pi * u / np.maximum(cons[syl], 1e-3)) ** 2, 0.0)

    # Pitch contour in semitones: declination + syllable accents + final movement + tremor + drift.
    t_rel = np.clip((t - bounds[0]) / speech, 0.0, 1.0)
    accents = rng.uniform(0.0, 0.8, n_syl) * p.f0_range_st * (stress > 0.8)
    st = p.f0_range_st * (0.3 - 0.6 * t_rel) + accents[syl] * np.sin(np.pi * u)
    st += p.final_st * np.clip((t_rel - 0.75) / 0.25, 0.0, 1.0) ** 2
    st += p.tremor_st * np.sin(2 * np.pi * rng.uniform(5.0, 8.0) * t + rng.uniform(0, 2 * np.pi))
    drift = lfilter([0.002], [1.0, -0.998], rng.normal(0.0, 1.0, n))
    st += 8.0 * drift
    f0 = spk.f0 * p.f0_scale * 2.0 ** (st / 12.0)

    # Glottal source: jitter per cycle, Rosenberg pulse on the cycle phase, shimmer per cycle.
    n_cyc = int(f0.sum() / sr) + 2
    cycle0 = np.floor(np.cumsum(f0) / sr).astype(int)
    phase = np.cumsum(f0 * (1.0 + p.jitter * rng.standard_normal(n_cyc + 2))[cycle0] / sr)
    cycle = np.floor(phase).astype(int)
    frac = phase - cycle
    tp, tn = 0.6 * p.open_quotient, 0.4 * p.open_quotient
    g = np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                 np.where(frac < tp + tn, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0))
    g *= np.exp(p.shimmer * rng.standard_normal(cycle.max() + 1))[cycle]
    src = np.diff(g, prepend=0.0) * (SR / spk.f0)  # lip radiation = derivative; keep level F0-independent
    asp = lfilter(_ASPIRATION_B, _ASPIRATION_A, rng.standard_normal(n)) * (0.4 + g)
    src = src + p.breath * np.std(src) * asp  # aspiration rides on the glottal cycle
    src = lfilter([1.0 - p.tilt], [1.0, -p.tilt], src) * env_v  # tilt darkens voicing and breath alike

    # Vocal tract: five resonators, formants gliding between syllable vowel targets.
    vowels = _VOWELS[rng.integers(len(_VOWELS), size=n_syl)]
    mids = 0.5 * (bounds[:-1] + bounds[1:])
    tb = (np.arange(0, n, _BLOCK) + _BLOCK / 2) / sr
    F = np.stack([np.interp(tb, mids, vowels[:, j]) for j in range(3)]
                 + [np.full(tb.size, 3400.0), np.full(tb.size, 4300.0)], axis=1)
    F[:, 0] *= p.f1_shift
    F *= spk.formant_scale
    F = np.minimum(F, 0.45 * sr)
    r = np.exp(-np.pi * _BANDWIDTHS * spk.formant_scale / sr)
    a1 = -2.0 * r * np.cos(2 * np.pi * F / sr)
    a2 = np.broadcast_to(r * r, a1.shape)
    sos = np.zeros((tb.size, 5, 6))
    sos[..., 0] = 1.0 + a1 + a2  # unity gain at DC, as in Klatt's cascade resonators
    sos[..., 3], sos[..., 4], sos[..., 5] = 1.0, a1, a2
    voiced = np.empty(n)
    zi = np.zeros((5, 2))
    for b in range(tb.size):
        seg = slice(b * _BLOCK, min((b + 1) * _BLOCK, n))
        voiced[seg], zi = sosfilt(sos[b], src[seg], zi=zi)

    fric = sosfilt(_FRIC_SOS, rng.standard_normal(n)) * env_u * rng.uniform(0.15, 0.35)
    y = voiced / (np.std(voiced[env_v > 0.2]) + 1e-9) + fric / 0.35
    level_db = -26.0 + p.level_db + spk.level_db
    active = (env_v > 0.2) | (env_u > 0.2)
    y *= 10 ** (level_db / 20) / (np.sqrt(np.mean(y[active] ** 2)) + 1e-12)
    peak = np.max(np.abs(y))
    if peak > 0.95:  # soft limit instead of hard clipping
        y = 0.95 * np.tanh(y / 0.95)
    y += 10 ** (rng.uniform(-66, -56) / 20) * rng.standard_normal(n)  # room noise floor
    return y.astype(np.float32)


def generate_corpus(n_speakers: int = 6, clips_per_label: int = 48, labels: tuple[str, ...] = RAVDESS8,
                    duration: tuple[float, float] = (1.5, 3.5), seed: int = 0,
                    sr: int = SR) -> list[tuple[Clip, np.ndarray]]:
    """Synthesize ``clips_per_label`` clips per label, spread evenly over ``n_speakers`` speakers.

    Returns ``[(Clip, int16 audio), ...]`` ordered by label, then clip number. Clip paths are the
    relative paths :func:`write_corpus` uses (``<label>/<speaker>_<label>_<NNN>.wav``). Every clip's
    random stream depends only on (seed, label, speaker, clip number), so a label subset reproduces
    the same clips. Odd-numbered repetitions are "strong" (1.5x further from neutral).
    Not emotional speech: see the module docstring.
    """
    from edge_runtime.audio_io import resample, to_int16

    unknown = [lab for lab in labels if lab not in PROFILES]
    if unknown:
        raise ValueError(f"no synth profile for {unknown}; available: {list(PROFILES)}")
    if n_speakers < 1 or clips_per_label < 1:
        raise ValueError("n_speakers and clips_per_label must be >= 1")
    speakers = make_speakers(n_speakers, seed)
    out = []
    for label in labels:
        li = RAVDESS8.index(label)
        for k in range(clips_per_label):
            spk, rep = speakers[k % n_speakers], k // n_speakers
            rng = np.random.default_rng([seed, li, k % n_speakers, rep])
            strong = label != "neutral" and rep % 2 == 1
            strength = (1.5 if strong else 1.0) * rng.uniform(0.7, 1.15)
            dur = rng.uniform(*duration)
            y = synthesize(_clip_prosody(label, strength, rng), spk, dur, rng)
            audio = to_int16(resample(y, SR, sr))  # filters are designed at 16 kHz
            clip = Clip(path=f"{label}/{spk.id}_{label}_{k:03d}.wav", corpus="synth", speaker=spk.id,
                        emotion=label, label=label, sex=spk.sex, intensity="strong" if strong else "normal",
                        repetition=f"{rep + 1:02d}")
            out.append((clip, audio))
    return out


def write_corpus(root: str | os.PathLike, **kwargs) -> list[Clip]:
    """Generate (``kwargs`` as :func:`generate_corpus`) and write 16-bit WAVs in the folder-per-label
    layout ``root/<label>/<speaker>_<label>_<NNN>.wav``, which :func:`open_corpus` reads back.
    Returns the clips with their written paths."""
    from edge_runtime.audio_io import write_wav

    root = Path(root)
    sr = kwargs.get("sr", SR)
    clips = []
    for clip, audio in generate_corpus(**kwargs):
        path = root / clip.path
        write_wav(path, audio, sr)
        clips.append(replace(clip, path=str(path)))
    return clips
