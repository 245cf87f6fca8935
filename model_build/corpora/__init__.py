"""Corpus layer: read emotional-speech corpora (and users' own folders) into labelled clips.

    from model_build.corpora import open_corpus, load_corpus, speaker_folds
    index = open_corpus("../shared/data/ravdess")          # layout auto-detected, audio not decoded
    clips, audios, report = load_corpus(index)             # int16 mono 16 kHz; bad files reported
    folds = speaker_folds(clips, k=5, seed=0)              # speakers never split

Layouts, label mapping and quirks: docs/corpora.md. ``synth`` generates a built-in corpus.
"""
from .catalog import describe, detect_corpus, load_corpus, open_corpus
from .labels import COMMON7, CREMAD6, RAVDESS8, label_set, to_common
from .records import Clip, LoadReport, SkippedItem, label_counts
from .scan import CorpusIndex
from .splits import leave_one_speaker_out, speaker_folds, speakers_per_label

__all__ = [
    "COMMON7", "CREMAD6", "RAVDESS8", "Clip", "CorpusIndex", "LoadReport", "SkippedItem", "describe",
    "detect_corpus", "label_counts", "label_set", "leave_one_speaker_out", "load_corpus", "open_corpus",
    "speaker_folds", "speakers_per_label", "to_common",
]
