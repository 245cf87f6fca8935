"""The build pipeline end to end on a tiny generated corpus: model + report files with expected keys."""
from __future__ import annotations

import json

import pytest

from tests.conftest import require_module, require_tool  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    require_module("tf_keras")
    from model_build.models import ModelConfig
    from model_build.pipeline import BuildConfig, build
    from model_build.train import TrainConfig

    out = tmp_path_factory.mktemp("build")
    cfg = BuildConfig(out_dir=str(out), model_name="m", window_s=1.0, hop_s=0.5, train_hop_s=0.5,
                      model=ModelConfig(conv1=8, conv2=16, lstm=16),
                      train=TrainConfig(epochs=2, batch_size=16, verbose=True),
                      synth_speakers=4, synth_clips_per_label=8, synth_labels=("neutral", "happy", "sad", "angry"),
                      synth_duration=(1.0, 1.8), k_folds=4, n_calib=100,
                      cache_dir=str(tmp_path_factory.mktemp("cache")), progress=False)
    report = build(cfg)
    return out, report


def test_build_writes_model_and_report(tiny_build):
    out, report = tiny_build
    for name in ("m.tflite", "m.json", "m_float.npz", "report.md", "report.json",
                 "confusion_matrices.png", "training_curves.png", "per_class_f1.png"):
        assert (out / name).stat().st_size > 0, name
    r = json.loads((out / "report.json").read_text())
    from model_build.report import REPORT_KEYS

    assert set(REPORT_KEYS) <= set(r)
    rows = r["validation"]["rows"]
    assert list(rows) == ["keras_float_twin", "keras_float_fixed", "int8_litert", "int8_tflm"]
    for row in rows.values():
        for k in ("accuracy", "uar", "macro_f1", "per_class", "confusion", "window_agreement_vs_float",
                  "clip_agreement_vs_float"):
            assert k in row
        assert 0.0 <= row["uar"] <= 1.0
    assert rows["keras_float_twin"]["window_agreement_vs_float"] == 1.0
    assert r["model"]["graph"]["fused_lstm"] is True
    assert r["model"]["arena_bytes"] > 0 and r["model"]["bytes"] == (out / "m.tflite").stat().st_size
    assert r["validation"]["tflm_vs_litert"]["max_abs_lsb"] <= 2
    # speakers never split
    sp = r["speakers"]
    assert not (set(sp["train"]) & set(sp["test"])) and not (set(sp["validation"]) & set(sp["test"]))
    md = (out / "report.md").read_text()
    assert "TFLite Micro" in md and "confusion_matrices.png" in md


def test_cli_convert_and_check_model(tiny_build, capsys):
    import argparse

    from model_build import cli

    out, _ = tiny_build
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.register(sub)
    a = parser.parse_args(["convert", str(out / "m.tflite"), "--out", str(out / "m2.tflite"), "--n-calib", "50"])
    assert a.func(a) == 0
    capsys.readouterr()
    a = parser.parse_args(["check-model", str(out / "m2.tflite"), "--no-arena", "--json"])
    assert a.func(a) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["int8_check"] == "ok" and printed["graph"]["fused_lstm"] is True
    a = parser.parse_args(["report", str(out)])
    assert a.func(a) == 0
