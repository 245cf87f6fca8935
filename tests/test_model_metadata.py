"""Model metadata: embedded in the .tflite, read back by both readers, sidecar identical."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_metadata_round_trip(tiny_model_path):
    from edge_runtime.frontend import DEFAULT_CONFIG
    from model_build.embed_metadata import REQUIRED_KEYS, read_metadata

    md = read_metadata(tiny_model_path)
    assert set(REQUIRED_KEYS) <= set(md)
    assert md["format"] == "ser-edge-model/1"
    assert md["labels"] == ["neutral", "happy", "sad", "angry"]
    assert md["frontend_hash"] == DEFAULT_CONFIG.hash
    assert md["n_features"] == DEFAULT_CONFIG.n_features
    assert md["output_kind"] == "logits"
    assert md["feature_norm"]["kind"] == "global_affine_folded"
    sidecar = json.loads(tiny_model_path.with_suffix(".json").read_text())
    assert sidecar == md


def test_metadata_matches_graph_quantisation(tiny_model_path):
    """The scales/zero points in the metadata are the ones in the graph (the device relies on it)."""
    from model_build.convert import io_quant
    from model_build.embed_metadata import read_metadata

    data = tiny_model_path.read_bytes()
    md = read_metadata(data)
    q = io_quant(data)
    for k, v in q.items():
        assert md[k] == pytest.approx(v, rel=1e-7), k


def test_runtime_reader_agrees(tiny_model_path):
    import edge_runtime.model_metadata as mm
    from model_build.embed_metadata import read_metadata

    ours = read_metadata(tiny_model_path)
    theirs = mm.read_metadata(tiny_model_path)
    assert list(theirs.labels) == ours["labels"]
    assert theirs.window_frames == ours["window_frames"] and theirs.hop_frames == ours["hop_frames"]
    assert theirs.input_scale == pytest.approx(ours["input_scale"])
    assert theirs.frontend_hash == ours["frontend_hash"]


def test_embed_replaces_and_validates(tiny_model_path):
    from model_build.embed_metadata import embed, read_metadata

    data = tiny_model_path.read_bytes()
    md = read_metadata(data)
    md2 = dict(md, model_name="renamed")
    again = embed(data, md2)
    assert read_metadata(again)["model_name"] == "renamed"
    assert abs(len(again) - len(data)) < 64  # replaced in place, not appended
    with pytest.raises(ValueError, match="missing required keys"):
        embed(data, {k: v for k, v in md.items() if k != "labels"})


def test_model_with_metadata_still_runs(tiny_model_path):
    import numpy as np

    from model_build.embed_metadata import read_metadata
    from edge_runtime.interpreter import run_litert, run_tflm

    md = read_metadata(tiny_model_path)
    x = np.zeros((1, md["window_frames"], md["n_features"]), np.int8)
    data = tiny_model_path.read_bytes()
    assert run_litert(data, x).shape == (1, 4)
    assert run_tflm(data, x).shape == (1, 4)
