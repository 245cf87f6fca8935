"""bench/calibration_set.py: the clip ECE of a fit set's temperature on test clips, per fold and pooled."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_build.calibrate import clip_probabilities

ROOT = Path(__file__).resolve().parent.parent


def _clips(rng, n, scale=1.5, n_classes=8):
    """Clips of 1-3 windows around a clip logit vector; labels drawn from the reported probability at
    T = 1 (calibrated at T = 1 by construction)."""
    lp = [rng.normal(0, scale, n_classes) + rng.normal(0, 0.3, (int(rng.integers(1, 4)), n_classes))
          for _ in range(n)]
    p = clip_probabilities(lp)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), n_classes - 1)
    pred = np.array([int(np.argmax(c.mean(0))) for c in lp])
    return pred, lp, y


def test_score_reads_over_and_under_confidence():
    from bench.calibration_set import score

    pred, lp, y = _clips(np.random.default_rng(0), 3000)
    right = score(pred, lp, y, 1.0)
    hot, cold = score(pred, lp, y, 0.5), score(pred, lp, y, 2.0)
    assert right["ece"] < 0.03 and right["ece_floor"] < 0.03  # 3000 clips: little sampling noise
    assert hot["confidence"] - hot["accuracy"] > 0.05 and hot["ece"] > 3 * right["ece"]
    assert cold["confidence"] - cold["accuracy"] < -0.05 and cold["ece"] > 3 * right["ece"]
    assert right["accuracy"] == hot["accuracy"] == cold["accuracy"]  # a temperature moves no label
    # a clip without a label is left out
    pred2 = pred.copy()
    pred2[:10] = -1
    assert score(pred2, lp, y, 1.0)["n_clips"] == len(pred) - 10


def test_pooled_ece_uses_each_folds_own_temperature():
    from bench.calibration_set import pooled_ece, score

    rng = np.random.default_rng(1)
    a, b = _clips(rng, 400), _clips(rng, 400)
    one = pooled_ece([(*a, 1.0)])
    assert one == pytest.approx(score(*a, 1.0)["ece"])
    # fold b's logits doubled and its temperature doubled: the same probabilities, the same pooled ECE
    b2 = (b[0], [2 * c for c in b[1]], b[2])
    assert pooled_ece([(*a, 1.0), (*b2, 2.0)]) == pytest.approx(pooled_ece([(*a, 1.0), (*b, 1.0)]))
    assert pooled_ece([(*a, 1.0), (*b2, 1.0)]) > pooled_ece([(*a, 1.0), (*b, 1.0)]) + 0.02


def test_models_without_manifest_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "calibration_set.py"), "--models", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert f"--models {tmp_path}: no manifest.json" in r.stderr and "Traceback" not in r.stderr
