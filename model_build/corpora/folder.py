"""Folder-per-label layout for your own recordings: ``root/<label>/...``.

Speaker, first match wins:
1. ``root/speakers.csv`` with columns ``path`` (relative to root, or just the file name) and
   ``speaker`` (optional ``sex``);
2. a sub-folder: ``root/<label>/<speaker>/x.wav``;
3. the file name's part before the first ``_``: ``root/<label>/<speaker>_x.wav``;
4. otherwise ``"unknown"`` (then speaker-grouped splits are impossible; add speakers.csv).
Label folder names are mapped through the common aliases (``fear`` -> ``fearful``, ``ps`` ->
``surprised`` ...); other names are kept lower-cased as your own classes.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from .labels import to_common
from .records import Clip
from .scan import Skip


@lru_cache(maxsize=8)
def _speakers_csv(root: Path) -> dict[str, tuple[str, str | None]]:
    f = root / "speakers.csv"
    if not f.is_file():
        return {}
    with open(f, newline="", encoding="utf-8-sig") as fh:
        return {row["path"].strip(): (row["speaker"].strip(), (row.get("sex") or "").strip() or None)
                for row in csv.DictReader(fh)}


def parse(path: Path, root: Path, merge_calm: bool) -> Clip:
    rel = path.relative_to(root)
    if len(rel.parts) < 2:
        raise Skip("not inside a <label>/ folder")
    label_dir = rel.parts[0]
    table = _speakers_csv(root)
    sex = None
    if (hit := table.get(rel.as_posix()) or table.get(path.name)) is not None:
        speaker, sex = hit
    elif len(rel.parts) >= 3:
        speaker = rel.parts[1]
    elif "_" in path.stem:
        speaker = path.stem.split("_", 1)[0]
    else:
        speaker = "unknown"
    return Clip(path=str(path), corpus="folder", speaker=speaker, emotion=label_dir,
                label=to_common("folder", label_dir, merge_calm=merge_calm), sex=sex)
