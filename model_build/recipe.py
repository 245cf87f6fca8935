"""The multi-corpus training set of one RAVDESS fold: which clips, which augmented copies, which masks.

Used by the cross-validation (bench/accuracy.py ``--conditions``) and the shipped model
(bench/pretrained.py), so both train on the same recipe:

* the fold's RAVDESS training actors, as recorded, plus ``copies`` augmented copies of each (babble
  from the *other* RAVDESS training actors of the fold);
* every clip of each extra corpus (TESS, ASED, ...) as ``copies`` augmented copies only (babble from
  the other extra-corpus speakers). Extra corpora are training data in every fold, so their copies do
  not depend on the fold: :func:`extra_set` computes them once per seed;
* augmentation: :mod:`model_build.augment`;
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


def extra_set(extra: Sequence[CorpusData], n_classes: int, fe, *, copies: int = 1, seed: int = 0,
              augment: AugmentConfig = AugmentConfig(), mask_absent: bool = True,
              progress: bool = True) -> TrainingSet:
    """Augmented copies (features), labels and class masks of every clip of the extra corpora."""
    from .features import fixed_point_features

    audios = [a for c in extra for a in c.audios]
    speakers = [x.speaker_key for c in extra for x in c.clips]
    y = [int(v) for c in extra for v in c.y]
    corp = [c.name for c in extra for _ in c.clips]
    masks = {c.name: class_mask(c, n_classes) if mask_absent else np.ones(n_classes, np.float32) for c in extra}
    if not audios or not copies:
        return TrainingSet([], [], np.zeros((0, n_classes), np.float32), [], len(set(speakers)))
    cps = augmented_copies(audios, speakers, copies, augment, seed=seed + 1000, progress=progress)
    feats = fixed_point_features([a for cs in cps for a in cs], fe, progress=progress)
    corp = [c for c in corp for _ in range(copies)]
    return TrainingSet(feats=feats, y=[v for v in y for _ in range(copies)],
                       masks=np.stack([masks[c] for c in corp]), corpora=corp, n_speakers=len(set(speakers)))


def training_set(ravdess: CorpusData, ravdess_feats: Sequence[np.ndarray], train_idx: Sequence[int],
                 extra: TrainingSet | None, n_classes: int, fe, *, copies: int = 1, seed: int = 0,
                 augment: AugmentConfig = AugmentConfig(), progress: bool = True) -> TrainingSet:
    """Features, labels and class masks of one fold's training clips (see the module docstring).

    ``ravdess_feats``: the fixed-point features of every RAVDESS clip (as recorded); the training
    actors' augmented copies are computed (and cached by content) here. ``extra``: from
    :func:`extra_set` (or None).
    """
    from .features import fixed_point_features

    tr = list(train_idx)
    feats = [ravdess_feats[i] for i in tr]
    y = [int(ravdess.y[i]) for i in tr]
    if copies:
        cps = augmented_copies([ravdess.audios[i] for i in tr], [ravdess.clips[i].speaker_key for i in tr],
                               copies, augment, seed=seed, progress=progress)
        feats += fixed_point_features([a for cs in cps for a in cs], fe, progress=progress)
        y += [int(ravdess.y[i]) for i in tr for _ in range(copies)]
    corp = [ravdess.name] * len(feats)
    masks = np.ones((len(feats), n_classes), np.float32)
    n_spk = len({ravdess.clips[i].speaker_key for i in tr})
    if extra is not None and len(extra.feats):
        feats += list(extra.feats)
        y += list(extra.y)
        corp += list(extra.corpora)
        masks = np.concatenate([masks, extra.masks])
        n_spk += extra.n_speakers
    return TrainingSet(feats=feats, y=y, masks=masks, corpora=corp, n_speakers=n_spk)
