"""Speaker-grouped folds: a speaker is never on both sides; every clip is tested exactly once."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_build.corpora import Clip, leave_one_speaker_out, speaker_folds, speakers_per_label


def make_clips(sizes: list[int], corpus: str = "ravdess") -> list[Clip]:
    clips = []
    for s, n in enumerate(sizes):
        clips += [Clip(f"{s}/{i}.wav", corpus, f"A{s + 1:02d}", "happy", "happy", sex="MF"[s % 2]) for i in range(n)]
    return clips


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=2, max_size=25), st.integers(2, 6), st.integers(0, 1000))
def test_folds_never_split_a_speaker(sizes, k, seed):
    clips = make_clips(sizes)
    if len(sizes) < k:
        with pytest.raises(ValueError):
            speaker_folds(clips, k, seed)
        return
    folds = speaker_folds(clips, k, seed)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(clips)))  # each clip tested once
    for tr, te in folds:
        assert len(te) and not {clips[i].speaker for i in tr} & {clips[i].speaker for i in te}
        assert len(tr) + len(te) == len(clips)


def test_ravdess_like_folds_balanced_by_sex_and_seeded():
    clips = make_clips([60] * 20)
    folds = speaker_folds(clips, 5, seed=0)
    for _, te in folds:
        spk = {clips[i].speaker: clips[i].sex for i in te}
        assert len(te) == 240 and sorted(spk.values()) == ["F", "F", "M", "M"]
    assert [te.tolist() for _, te in folds] == [te.tolist() for _, te in speaker_folds(clips, 5, seed=0)]
    assert [te.tolist() for _, te in folds] != [te.tolist() for _, te in speaker_folds(clips, 5, seed=1)]


def test_same_speaker_id_in_two_corpora_is_two_speakers():
    clips = make_clips([3, 3]) + make_clips([3, 3], corpus="tess")
    assert len(list(leave_one_speaker_out(clips))) == 4


def test_leave_one_speaker_out():
    clips = make_clips([2, 3, 4])
    out = list(leave_one_speaker_out(clips))
    assert [s for s, _, _ in out] == ["ravdess/A01", "ravdess/A02", "ravdess/A03"]
    assert [len(te) for _, _, te in out] == [2, 3, 4]
    assert all(not set(tr) & set(te) for _, tr, te in out)
    assert speakers_per_label(clips) == {"happy": 3}
