"""Robustness augmentation (level, babble, coloured noise, band limits, reverb, speed) and calibration."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_module, require_tool  # noqa: F401

from model_build import augment as A
from model_build.calibrate import expected_calibration_error, fit_temperature, nll


def tone(seconds=1.0, f=440.0, amp=0.3):
    t = np.arange(int(16000 * seconds)) / 16000
    return amp * np.sin(2 * np.pi * f * t)


def band_power(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return spec[(f >= lo) & (f < hi)].sum()


def test_coloured_noise_slopes():
    rng = np.random.default_rng(0)
    white, pink, brown = (A.coloured_noise(32000, e, rng) for e in (0.0, 1.0, 2.0))
    for x in (white, pink, brown):
        assert np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0)
    ratio = [band_power(x, 50, 500) / band_power(x, 4000, 7950) for x in (white, pink, brown)]
    assert ratio[0] < 0.3 < ratio[1] < ratio[2]  # low/high band power grows with the exponent


def test_add_noise_hits_snr():
    rng = np.random.default_rng(1)
    x = tone()
    n = A.coloured_noise(x.size, 1.0, rng)
    y = A.add_noise(x, n, 10.0)
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(10.0, abs=1e-6)


def test_babble_uses_only_the_pool():
    rng = np.random.default_rng(2)
    pool = [(tone(0.5, f) * 32767).astype(np.int16) for f in (300.0, 700.0, 1100.0)]
    b = A.babble(pool, 16000, 2, rng)
    assert np.sqrt(np.mean(b ** 2)) == pytest.approx(1.0)
    spec = np.abs(np.fft.rfft(b))
    f = np.fft.rfftfreq(16000, 1 / 16000)
    top = set(np.round(f[np.argsort(spec)[-2:]]).astype(int))
    assert top <= {300, 700, 1100}  # the babble is made of the pool's voices and nothing else


def test_telephone_and_small_mic_band_limit():
    rng = np.random.default_rng(3)
    x = A.coloured_noise(32000, 0.0, rng)
    y = A.telephone(x)
    assert len(y) == len(x)
    assert band_power(y, 4200, 8000) < 1e-4 * band_power(y, 500, 3000)
    assert band_power(y, 20, 150) < 0.05 * band_power(y, 500, 3000) * (130 / 2500)
    z = A.small_mic(x, rng)
    assert band_power(z, 7500, 8000) < 0.05 * band_power(x, 7500, 8000)


def test_rir_decay_matches_rt60():
    rng = np.random.default_rng(4)
    h = A.synthetic_rir(0.5, rng)
    assert h[0] >= 1.0 and len(h) == int(1.2 * 0.5 * 16000)
    e = np.cumsum(h[::-1][:-1] ** 2)[::-1]  # Schroeder backward integral of the tail
    edc = 10 * np.log10(e / e[0])
    t = np.arange(len(edc)) / 16000
    sel = (edc < -5) & (edc > -35)
    slope = np.polyfit(t[sel], edc[sel], 1)[0]  # dB per second
    assert -60 / slope == pytest.approx(0.5, rel=0.15)
    y = A.reverberate(tone(), h)
    assert len(y) == 16000 and np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(tone() ** 2)))


def test_augment_clip_levels_and_determinism():
    pcm = (tone(1.0) * 32767).astype(np.int16)
    cfg = A.AugmentConfig(p_clip=0.0)
    peaks = []
    for i in range(40):
        y = A.augment_clip(pcm, np.random.default_rng(i), cfg)
        assert y.dtype == np.int16 and abs(len(y) - len(pcm)) <= 0.12 * len(pcm)
        peaks.append(20 * np.log10(max(np.abs(y.astype(np.float64)).max(), 1) / 32768))
    assert min(peaks) < -35 and max(peaks) > -10  # a wide level range: >= +-30 dB around -21
    assert all(-52 <= p <= -0.9 for p in peaks)
    np.testing.assert_array_equal(A.augment_clip(pcm, np.random.default_rng(5), cfg),
                                  A.augment_clip(pcm, np.random.default_rng(5), cfg))


def test_augmented_copies_babble_excludes_own_speaker():
    # speaker "a" is a 300 Hz tone, "b" 2 kHz: a's babble-only copies may only contain b's energy
    a = (tone(0.5, 300.0) * 20000).astype(np.int16)
    b = (tone(0.5, 2000.0) * 20000).astype(np.int16)
    cfg = A.AugmentConfig(speed=0.0, p_reverb=0.0, p_noise=1.0, snr_db=(0.0, 0.0), p_babble=1.0,
                          babble_talkers=(1, 1), p_band=0.0, p_clip=0.0)
    copies = A.augmented_copies([a, b], ["a", "b"], 2, cfg, seed=0)
    y = copies[0][0].astype(np.float64)
    assert band_power(y, 1900, 2100) > 0.3 * band_power(y, 250, 350)  # b's voice was mixed in
    with pytest.raises(ValueError, match="speaker ids"):
        A.augmented_copies([a, b], ["a"], 1, cfg)


def test_temperature_scaling_reduces_ece():
    rng = np.random.default_rng(0)
    n, c = 4000, 5
    from model_build.windows import softmax

    true_logits = rng.normal(0, 1.5, (n, c))
    p = softmax(true_logits)  # labels drawn from these probabilities: calibrated at T = 1
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    over = 4.0 * true_logits  # an over-confident model: same argmax, logits 4x too large
    t = fit_temperature(over, y)
    assert t == pytest.approx(4.0, rel=0.15)
    assert nll(over, y, t) < nll(over, y, 1.0)
    before = expected_calibration_error(softmax(over), y)
    after = expected_calibration_error(softmax(over / t), y)
    assert before > 0.15 and after < 0.03


def test_masked_loss_treats_absent_classes_as_absent():
    require_module("tf_keras")  # tf is a hard dependency of model_build's training
    import tensorflow as tf

    from model_build.train import masked_loss

    loss = masked_loss(3)
    p = tf.constant([[0.2, 0.6, 0.2]])
    full = float(loss(tf.constant([[0, 1, 0, 1, 1, 1]], tf.float32), p)[0])
    masked = float(loss(tf.constant([[0, 1, 0, 0, 1, 1]], tf.float32), p)[0])  # class 0 absent
    assert full == pytest.approx(-np.log(0.6))
    assert masked == pytest.approx(-np.log(0.6 / 0.8))  # renormalised over the present classes
    smooth = float(masked_loss(3, label_smoothing=0.2)(tf.constant([[0, 1, 0, 0, 1, 1]], tf.float32), p)[0])
    assert smooth == pytest.approx(-(0.9 * np.log(0.75) + 0.1 * np.log(0.25)))  # nothing on class 0


def test_focal_term_weights_by_the_present_class_probability():
    require_module("tf_keras")
    import tensorflow as tf

    from model_build.train import masked_loss

    y = tf.constant([[0, 1, 0, 0, 1, 1], [0, 1, 0, 1, 1, 1]], tf.float32)  # row 0: class 0 absent
    p = tf.constant([[0.2, 0.6, 0.2], [0.05, 0.9, 0.05]])
    plain = masked_loss(3)(y, p).numpy()
    focal = masked_loss(3, focal_gamma=2.0)(y, p).numpy()
    # (1 - p)**gamma of the probability renormalised over the present classes (0.75, not 0.6)
    assert focal[0] == pytest.approx((1 - 0.75) ** 2 * -np.log(0.75), rel=1e-5)
    assert focal[1] == pytest.approx((1 - 0.9) ** 2 * -np.log(0.9), rel=1e-5)
    # the confident window's share of the loss shrinks: that is what the focal term is for
    assert focal[1] / focal[0] < plain[1] / plain[0]
    assert masked_loss(3, focal_gamma=0.0)(y, p).numpy() == pytest.approx(plain)


def test_margin_subtracts_from_the_true_class_logit():
    require_module("tf_keras")
    import tensorflow as tf

    from model_build.train import masked_loss

    y = tf.constant([[0, 1, 0, 0, 1, 1], [0, 1, 0, 1, 1, 1]], tf.float32)  # row 0: class 0 absent
    p = tf.constant([[0.2, 0.6, 0.2], [0.05, 0.9, 0.05]])
    plain = masked_loss(3)(y, p).numpy()
    assert np.array_equal(masked_loss(3, margin=0.0)(y, p).numpy(), plain)  # 0: the same code path
    am = masked_loss(3, margin=1.0)(y, p).numpy()
    # logits log p, true class's minus 1, softmax over the present classes: e^-1 * 0.6 vs the rest
    e = np.exp(-1.0)
    assert am[0] == pytest.approx(-np.log(0.6 * e / (0.6 * e + 0.2)), rel=1e-5)
    assert am[1] == pytest.approx(-np.log(0.9 * e / (0.9 * e + 0.1)), rel=1e-5)
    assert np.all(am > plain)  # the same prediction costs more until the true class clears the margin
    wider = masked_loss(3, margin=2.0)(y, p).numpy()
    assert np.all(wider > am)
    # a prediction whose true logit is far more than the margin above the others costs ~nothing
    sure = masked_loss(3, margin=1.0)(y[1:], tf.constant([[1e-4, 1 - 2e-4, 1e-4]])).numpy()
    assert sure[0] < 1e-2


def test_accuracy_bench_refuses_a_negative_margin(capsys):
    from bench.accuracy import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["--margin", "-1"])
    assert e.value.code == 2
    assert "--margin -1.0: must be >= 0" in capsys.readouterr().err
    assert parse_args(["--margin", "1"]).margin == 1.0 and parse_args([]).margin == 0.0


def test_train_and_convert_with_masks_and_calibration(tmp_path):
    require_module("tf_keras")
    from edge_runtime.frontend import DEFAULT_CONFIG

    from model_build.corpora.synth import generate_corpus
    from model_build.features import fixed_point_features
    from model_build.models import ModelConfig
    from model_build.pipeline import train_and_convert
    from model_build.train import TrainConfig

    labels = ("neutral", "happy", "sad", "angry")
    pairs = generate_corpus(n_speakers=3, clips_per_label=8, labels=labels, duration=(0.8, 1.2), seed=0)
    feats = fixed_point_features([a for _, a in pairs], DEFAULT_CONFIG, cache_dir=None, progress=False)
    y = [labels.index(c.label) for c, _ in pairs]
    spk = [c.speaker for c, _ in pairs]
    val_spk = spk[0]
    tr = [i for i in range(len(y)) if spk[i] != val_spk]
    va = [i for i in range(len(y)) if spk[i] == val_spk]
    # the second training speaker's "corpus" has no sad: its clips must not be sad-labelled
    other = sorted(set(spk) - {val_spk})[1]
    tr = [i for i in tr if not (spk[i] == other and labels[y[i]] == "sad")]
    masks = [[1, 1, 0, 1] if spk[i] == other else [1, 1, 1, 1] for i in tr]
    tm = train_and_convert([feats[i] for i in tr], [y[i] for i in tr], labels, DEFAULT_CONFIG,
                           ModelConfig(conv1=8, conv2=8, lstm=8, dropout=0.0),
                           TrainConfig(epochs=2, batch_size=16, verbose=False), window_frames=62, hop_frames=31,
                           train_hop_frames=16, val_feats=[feats[i] for i in va], val_labels=[y[i] for i in va],
                           train_masks=masks, calibrate=True, log=lambda s: None)
    cal = tm.metadata["calibration"]
    assert cal["temperature"] > 0 and cal["n_windows"] > 0
    assert cal["val_window_nll_after"] <= cal["val_window_nll_before"] + 1e-4  # T minimises the NLL
    assert 0 <= cal["val_window_ece_after"] <= 1
    assert tm.graph.fused_lstm


def test_training_set_masks_and_copies():
    from edge_runtime.frontend import DEFAULT_CONFIG

    from model_build.corpora.synth import generate_corpus
    from model_build.features import fixed_point_features
    from model_build.recipe import CorpusData, extra_set, training_set

    labels = ("neutral", "happy", "sad", "angry")
    a = generate_corpus(n_speakers=2, clips_per_label=2, labels=labels, duration=(0.5, 0.7), seed=0)
    b = generate_corpus(n_speakers=2, clips_per_label=2, labels=labels[:2], duration=(0.5, 0.7), seed=1)
    main = CorpusData("ravdess", tuple(c for c, _ in a), tuple(x for _, x in a),
                      np.array([labels.index(c.label) for c, _ in a]))
    other = CorpusData("ased", tuple(c for c, _ in b), tuple(x for _, x in b),
                       np.array([labels.index(c.label) for c, _ in b]))
    feats = fixed_point_features(list(main.audios), DEFAULT_CONFIG, cache_dir=None, progress=False)
    tr = [i for i, c in enumerate(main.clips) if c.speaker == main.clips[0].speaker]
    ex = extra_set([other], 4, DEFAULT_CONFIG, copies=2, seed=0, progress=False)
    ts = training_set(main, feats, tr, ex, 4, DEFAULT_CONFIG, copies=2, seed=0, progress=False)
    # train actors as recorded + 2 copies of each, + 2 copies of every extra clip
    assert len(ts.feats) == len(ts.y) == len(ts.masks) == len(tr) * 3 + len(b) * 2
    assert ts.corpora.count("ased") == 2 * len(b)
    for m, c, y in zip(ts.masks, ts.corpora, ts.y):
        assert m[y] == 1
        np.testing.assert_array_equal(m, [1, 1, 0, 0] if c == "ased" else [1, 1, 1, 1])
    np.testing.assert_array_equal(ts.feats[0], feats[tr[0]])  # the recorded clip comes first, unchanged
    flat = extra_set([other], 4, DEFAULT_CONFIG, copies=1, mask_absent=False, progress=False)
    assert flat.masks.min() == 1 and len(flat.feats) == len(b)
    assert ts.n_speakers == 1 + 2


def test_cv_summary_uses_complete_seeds_only():
    from bench.accuracy import summarise_seeds

    runs = [{"seed": s, "fold": f, "uar_int8": u, "uar_float": u, "uar_nominal": u}
            for s, f, u in ((0, 0, 0.4), (0, 1, 0.6), (1, 0, 0.5), (1, 1, 0.7), (2, 0, 0.9))]
    out = summarise_seeds({"ravdess_folds": runs}, [0, 1])
    assert out["seeds_done"] == [0, 1] and out["partial_seed_runs"] == 1
    assert out["ravdess8_uar_int8"] == pytest.approx(0.55)  # seed 2's lone (easy) fold left out
    assert out["ravdess8_uar_int8_per_seed"] == {0: pytest.approx(0.5), 1: pytest.approx(0.6)}
    assert out["ravdess8_uar_int8_sd"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert summarise_seeds({"ravdess_folds": runs[:1]}, [0, 1]) == {"seeds": 0, "seeds_done": [], "n_seeds": 0, "partial_seed_runs": 1}
