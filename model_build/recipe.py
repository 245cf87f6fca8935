"""The multi-corpus training set of one RAVDESS fold: which clips, which augmented copies, which masks.

One function builds it for the campaign (bench/campaign.py), the cross-validation
(bench/accuracy.py) and the shipped model (bench/pretrained.py), so all three train on the same
recipe:

* the fold's RAVDESS training actors, as recorded, plus ``copies`` augmented copies of each;
* every clip of each extra corpus (TESS, ASED, ...) as ``copies`` augmented copies only (their
  studio/home recordings are not the condition we test on; the copies cover the conditions);
* augmentation (:mod:`model_build.augment`) with babble drawn only from the training speakers;
* a class mask per clip: the classes the clip's corpus has. Absent classes are masked out of the
  loss (:func:`model_build.train.masked_loss`), never treated as negatives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .augment import AugmentConfig, augmented_copies


@dataclass(frozen=True)
class CorpusData:
    """A loaded corpus: clips (``model_build.corpora.Clip``), int16 audio, labels as class indices."""

    name: str
    clips: tuple
    audios: tuple
    y: np.ndarray


@dataclass(frozen=True)
class TrainingSet:
    feats: list  # features (fixed point) of every training clip
    y: list[int]
    masks: np.ndarray  # (n_clips, n_classes) 0/1
    corpora: list[str]  # corpus of each clip
    n_speakers: int


def class_mask(corpus: CorpusData, n_classes: int) -> np.ndarray:
    """0/1 vector of the classes ``corpus`` has."""
    m = np.zeros(n_classes, np.float32)
    m[np.unique(corpus.y)] = 1
    return m


def training_set(ravdess: CorpusData, ravdess_feats: Sequence[np.ndarray], train_idx: Sequence[int],
                 extra: Sequence[CorpusData], n_classes: int, fe, *, copies: int = 1, seed: int = 0,
                 augment: AugmentConfig = AugmentConfig(), mask_absent: bool = True,
                 progress: bool = True) -> TrainingSet:
    """Features, labels and class masks of one fold's training clips (see the module docstring).

    ``ravdess_feats``: the fixed-point features of every RAVDESS clip (as recorded); augmented
    copies are computed (and cached by content) here.
    """
    from .features import fixed_point_features

    tr = list(train_idx)
    pool_a = [ravdess.audios[i] for i in tr]
    pool_s = [ravdess.clips[i].speaker_key for i in tr]
    pool_y = [int(ravdess.y[i]) for i in tr]
    pool_c = [ravdess.name] * len(tr)
    masks = {ravdess.name: np.ones(n_classes, np.float32)}
    for c in extra:
        pool_a += list(c.audios)
        pool_s += [x.speaker_key for x in c.clips]
        pool_y += [int(v) for v in c.y]
        pool_c += [c.name] * len(c.clips)
        masks[c.name] = class_mask(c, n_classes) if mask_absent else np.ones(n_classes, np.float32)
    feats = [ravdess_feats[i] for i in tr]
    y = [int(ravdess.y[i]) for i in tr]
    corp = [ravdess.name] * len(tr)
    if copies:
        cps = augmented_copies(pool_a, pool_s, copies, augment, seed=seed, progress=progress)
        feats += fixed_point_features([a for cs in cps for a in cs], fe, progress=progress)
        y += [v for v in pool_y for _ in range(copies)]
        corp += [c for c in pool_c for _ in range(copies)]
    return TrainingSet(feats=feats, y=y, masks=np.stack([masks[c] for c in corp]), corpora=corp,
                       n_speakers=len(set(pool_s)))
