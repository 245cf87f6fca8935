"""``bench/accuracy.py``'s validation speakers inside a CV fold: never divided, never test speakers, and
``--val-folds`` moves speakers from validation to training without touching the test fold."""
from __future__ import annotations

import numpy as np
import pytest

from model_build.corpora import Clip, speaker_folds


def ravdess_like() -> list[Clip]:
    return [Clip(f"{s}/{i}.wav", "ravdess", f"{s + 1:02d}", "happy", "happy", sex="MF"[s % 2])
            for s in range(20) for i in range(60)]


def test_validation_split_takes_whole_training_speakers():
    from bench.accuracy import validation_split

    clips = ravdess_like()
    spk = lambda idx: {clips[i].speaker for i in idx}  # noqa: E731
    for f, (train_all, te) in enumerate(speaker_folds(clips, k=5, seed=0)):
        n_val = {}
        for k in (5, 8):
            tr, va = validation_split(clips, train_all, f, 0, k)
            assert sorted(np.concatenate([tr, va]).tolist()) == sorted(train_all.tolist())
            assert not spk(tr) & spk(va) and not (spk(tr) | spk(va)) & spk(te)
            n_val[k] = len(spk(va))
        assert 3 <= n_val[5] <= 4 and n_val[8] == 2  # 16 training speakers: 3-4 or 2 validate
        # the default is the split every committed CV result was made with
        assert [a.tolist() for a in validation_split(clips, train_all, f, 0)] == \
            [a.tolist() for a in validation_split(clips, train_all, f, 0, 5)]


def test_val_folds_below_two_is_refused(capsys):
    from bench.accuracy import parse_args

    assert parse_args([]).val_folds == 5
    assert parse_args(["--val-folds", "8"]).val_folds == 8
    with pytest.raises(SystemExit) as e:
        parse_args(["--val-folds", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--val-folds 1: must be >= 2" in err and "Traceback" not in err
