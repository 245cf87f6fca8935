"""Speaker-grouped evaluation splits: a speaker's clips are never divided between train and test.

Random clip-level splits put the same voice (and, in TESS, the same word) on both sides and report
accuracy that says little about unseen speakers; use these instead.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterator, Sequence

import numpy as np

from .records import Clip


def _groups(clips: Sequence[Clip]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(clips):
        groups[c.speaker_key].append(i)
    return dict(groups)


def speaker_folds(clips: Sequence[Clip], k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds of ``(train_idx, test_idx)`` index arrays into ``clips``, grouped by speaker.

    Speakers (``corpus/speaker``) are shuffled with ``seed`` and dealt, largest first, to the fold
    with the fewest speakers of the same sex (when known; so RAVDESS actor folds mix male and female
    voices evenly), then the fewest clips. Every clip is in exactly one test fold. Raises ``ValueError`` when there are fewer
    speakers than folds.
    """
    groups = _groups(clips)
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if len(groups) < k:
        raise ValueError(f"{len(groups)} speakers cannot make {k} speaker-grouped folds")
    rng = np.random.default_rng(seed)
    speakers = sorted(groups)
    rng.shuffle(speakers)
    sex = {s: clips[groups[s][0]].sex or "?" for s in speakers}
    sizes = np.zeros(k, dtype=int)
    same_sex: Counter[tuple[int, str]] = Counter()
    fold_of: dict[str, int] = {}
    for s in sorted(speakers, key=lambda s: -len(groups[s])):  # stable: shuffled order among equals
        # fewest speakers of this sex first, then fewest clips, then lowest index
        f = min(range(k), key=lambda f: (same_sex[f, sex[s]], sizes[f], f))
        fold_of[s] = f
        sizes[f] += len(groups[s])
        same_sex[f, sex[s]] += 1
    folds = []
    for f in range(k):
        test = np.array(sorted(i for s in speakers if fold_of[s] == f for i in groups[s]), dtype=int)
        mask = np.ones(len(clips), dtype=bool)
        mask[test] = False
        folds.append((np.flatnonzero(mask), test))
    return folds


def leave_one_speaker_out(clips: Sequence[Clip]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(speaker_key, train_idx, test_idx)`` once per speaker, in sorted speaker order."""
    groups = _groups(clips)
    if len(groups) < 2:
        raise ValueError("leave-one-speaker-out needs at least 2 speakers")
    all_idx = np.arange(len(clips))
    for s in sorted(groups):
        test = np.array(groups[s], dtype=int)
        yield s, np.setdiff1d(all_idx, test), test


def speakers_per_label(clips: Sequence[Clip]) -> dict[str, int]:
    """How many distinct speakers each label has (a label with one speaker cannot be tested fairly)."""
    seen = {(c.label, c.speaker_key) for c in clips}
    return dict(sorted(Counter(lab for lab, _ in seen).items()))


def check_trainable(clips: Sequence[Clip], labels: Sequence[str], source) -> None:
    """Raise ``ValueError`` (one line, naming the corpus) unless it can train and test a classifier:
    some clips, at least two labels, at least three speakers (train, validation and test speakers
    never overlap)."""
    if not clips:
        raise ValueError(f"{source}: no usable audio clips (see the skipped files above)")
    if len(labels) < 2:
        only = labels[0] if labels else "none"
        raise ValueError(f"{source}: only one label ({only!r}) in {len(clips)} clips; a classifier "
                         "needs at least two (one <label>/ folder each)")
    speakers = sorted({c.speaker_key for c in clips})
    if len(speakers) < 3:
        raise ValueError(f"{source}: {len(speakers)} speaker(s) ({', '.join(speakers)}); training, "
                         "validation and test need 3 or more disjoint speakers: name files "
                         "<speaker>_*.wav, use <label>/<speaker>/ folders, or add a speakers.csv")
