"""The noise options of the robustness augmentation (``--p-noise``, ``--p-babble``, ``--snr-db``):
what a generated clip's augmented copies really contain over many draws, and the refusals."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from model_build import augment as A

SR = 16000
SPEECH_HZ = 200  # the "speaker": one tone on an exact FFT bin of a 1 s clip
POOL_HZ = (1000, 1500, 2300, 3100, 4200, 5300, 6100)  # the other "speakers" (babble), also exact bins


def _tone(f: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(SR) / SR  # 1 s: an integer-Hz tone repeats exactly, so babble's looping is seamless
    return np.rint(amp * 32767 * np.sin(2 * np.pi * f * t)).astype(np.int16)


def _bins(spec: np.ndarray, freqs) -> float:
    return float(sum(spec[f - 2:f + 3].sum() for f in freqs))  # 1 Hz per bin for a 1 s clip


def classify(y: np.ndarray) -> tuple[str, float]:
    """("clean" | "babble" | "coloured", measured SNR in dB) of one augmented copy of the 200 Hz clip.

    The clip's power is what sits at 200 Hz; everything else is the added noise (its share at 200 Hz is
    ~1e-4 of it, far below the tolerances used). Babble is made of the pool's tones only, so its power
    sits in their bins; coloured noise spreads over every bin."""
    spec = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
    sig = _bins(spec, [SPEECH_HZ])
    noise = float(spec.sum()) - sig
    snr = 10 * np.log10(sig / max(noise, 1e-12))
    if snr > 60:  # only int16 rounding besides the clip
        return "clean", snr
    return ("babble" if _bins(spec, POOL_HZ) > 0.99 * noise else "coloured"), snr


def draw(cfg: A.AugmentConfig, n: int = 300) -> list[tuple[str, float]]:
    # only the noise step varies: no speed change, reverb, band limit or clipping; peak fixed at -1 dBFS
    # so int16 rounding stays > 60 dB below the clip
    cfg = replace(cfg, speed=0.0, p_reverb=0.0, p_band=0.0, p_clip=0.0, peak_dbfs=(-1.0, -1.0))
    pcm, pool = _tone(SPEECH_HZ), [_tone(f) for f in POOL_HZ]
    return [classify(A.augment_clip(pcm, np.random.default_rng([k, 99]), cfg, pool)) for k in range(n)]


@pytest.mark.parametrize("opts", [
    {},  # the shipped recipe: noise 0.6, babble 0.5 of that, 0-30 dB
    {"p_noise": 0.8, "p_babble": 0.7, "snr_db": "0,20"},  # the noise-heavier variant (README: babble row)
    {"p_noise": 1.0, "p_babble": 1.0, "snr_db": "10,10"},  # the test condition's SNR, every copy
])
def test_noise_draws_follow_the_asked_probabilities_and_snr_range(opts):
    cfg = A.AugmentConfig.from_options(**opts)
    got = draw(cfg)
    kinds = [k for k, _ in got]
    n = len(got)
    want = {"clean": 1 - cfg.p_noise, "babble": cfg.p_noise * cfg.p_babble,
            "coloured": cfg.p_noise * (1 - cfg.p_babble)}
    for kind, p in want.items():  # 300 draws: binomial sd <= 0.029, tolerance ~3.5 sd
        assert kinds.count(kind) / n == pytest.approx(p, abs=0.1), (kind, kinds.count(kind))
    lo, hi = cfg.snr_db
    snrs = np.array([s for k, s in got if k != "clean"])
    assert snrs.size and snrs.min() >= lo - 0.05 and snrs.max() <= hi + 0.05  # measured, not the asked value
    if hi > lo:  # drawn uniformly over [lo, hi] (Kolmogorov-Smirnov against U(lo, hi)), both ends reached
        from scipy.stats import kstest

        assert kstest(snrs, "uniform", args=(lo, hi - lo)).pvalue > 1e-3
        assert snrs.min() < lo + 0.1 * (hi - lo) and snrs.max() > hi - 0.1 * (hi - lo)
        # the KS test has the power to tell the variant's range from the shipped one's
        other = (0.0, 30.0) if hi != 30.0 else (0.0, 20.0)
        assert kstest(snrs, "uniform", args=(other[0], other[1] - other[0])).pvalue < 1e-3
    else:
        assert snrs == pytest.approx(lo, abs=0.05)


def test_augment_config_refuses_bad_values_by_field():
    for kw, field in (({"p_noise": 1.5}, "p_noise"), ({"p_babble": -0.1}, "p_babble"),
                      ({"p_noise": float("nan")}, "p_noise"), ({"snr_db": "20,0"}, "snr_db"),
                      ({"snr_db": "5"}, "snr_db"), ({"snr_db": "x,y"}, "snr_db"), ({"snr_db": "nan,3"}, "snr_db")):
        with pytest.raises(A.AugmentOptionError) as e:
            A.AugmentConfig.from_options(**kw)
        assert e.value.field == field
    with pytest.raises(ValueError, match="p_reverb"):  # the dataclass itself refuses, whoever builds it
        A.AugmentConfig(p_reverb=2.0)
    # a JSON recipe gives the range as a list; the command line as "LO,HI"; no option = the defaults
    assert A.AugmentConfig.from_options(snr_db=[0, 20]) == A.AugmentConfig.from_options(snr_db="0,20")
    assert A.AugmentConfig.from_options(snr_db="0,20").snr_db == (0.0, 20.0)
    assert A.AugmentConfig.from_options() == A.AugmentConfig()


def test_accuracy_bench_noise_options(capsys, tmp_path):
    from bench.accuracy import augment_config, parse_args

    args = parse_args(["--conditions", "--p-noise", "0.8", "--p-babble", "0.7", "--snr-db", "0,20"])
    assert augment_config(args) == replace(A.AugmentConfig(), p_noise=0.8, p_babble=0.7, snr_db=(0.0, 20.0))
    assert augment_config(parse_args(["--conditions"])) == A.AugmentConfig()  # the shipped recipe unchanged
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"conditions": True, "snr_db": [0, 20]}))
    assert augment_config(parse_args(["--recipe", str(recipe)])).snr_db == (0.0, 20.0)
    for argv, msg in ((["--conditions", "--p-noise", "1.5"], "--p-noise 1.5: a probability must be in [0, 1]"),
                      (["--conditions", "--p-babble", "-0.1"], "--p-babble -0.1: a probability must be in [0, 1]"),
                      (["--conditions", "--snr-db", "20,0"], "--snr-db 20,0: need finite LO <= HI (dB)"),
                      (["--conditions", "--snr-db", "ten,20"], "--snr-db ten,20: need two numbers LO,HI (dB)"),
                      (["--p-babble", "0.7"], "--p-babble: only with --conditions"),
                      (["--augment", "-1"], "--augment -1: must be >= 0")):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert msg in err[-1] and "Traceback" not in "\n".join(err)


def test_shipping_recipe_keys_reach_the_same_config():
    # bench/pretrained.py trains the shipped model from RECIPE; the same keys given as bench/accuracy.py
    # flags (what the CV ran) must give the same augmentation
    from bench.accuracy import augment_config, parse_args
    from bench.pretrained import RECIPE, recipe_flags

    r = {**RECIPE, "p_noise": 0.8, "p_babble": 0.7, "snr_db": "0,20"}
    cv = augment_config(parse_args(recipe_flags(r)))
    assert cv == A.AugmentConfig.from_options(r["p_noise"], r["p_babble"], r["snr_db"])
    assert cv.p_noise == 0.8 and cv.snr_db == (0.0, 20.0)
