"""tests/golden/model_clips.json: the clips searched for the shipped model's int8 scores (ties)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import require_module
from tests.golden import regen_model_clips as R


def test_clips_searched_for_another_model_are_refused_with_the_fix(tmp_path):
    d = json.loads(R.PATH.read_text())
    d["model_hash"] = "0123456789abcdef"
    p = tmp_path / "model_clips.json"
    p.write_text(json.dumps(d))
    with pytest.raises(pytest.fail.Exception) as e:
        R.load(p)
    msg = str(e.value)
    assert "0123456789abcdef" in msg and R.shipped_hash() in msg and "regen_model_clips" in msg


def test_recorded_clips_hold_for_the_shipped_model(capsys):
    """`--check` re-measures every recorded clip's property on the shipped model (what a ship must redo)."""
    require_module("tflite_micro")
    assert R.main(["--check"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert out.count(" ok") == 5


def test_search_keeps_clips_that_still_hold():
    """A re-search starts from the recorded clips and keeps each one whose property still holds."""
    require_module("tflite_micro")
    old = R.load()
    assert R.search(old, limit=1) == old  # limit 1: any real search would run out of candidates
