"""What the CLI prints when things go right: check-model's summary and JSON, the demo's truth
column, the plots (written, readable PNGs of the expected layout)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import require_module

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "edge_runtime" / "models" / "default.tflite"


def _ser_edge(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_check_model_summary_and_json():
    require_module("ai_edge_litert")
    require_module("tflite_micro")
    r = _ser_edge("check-model", str(MODEL))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # nothing but the summary: no TensorFlow or LiteRT chatter
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.strip()}
    for key in ("model", "ops", "tensors", "input", "arena", "front", "window", "labels", "checked", "verdict"):
        assert key in lines, (key, r.stdout)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in lines["ops"]
    assert lines["verdict"].startswith("verdict    OK")
    md = json.loads(MODEL.with_suffix(".json").read_text())
    assert ", ".join(md["labels"]) in lines["labels"]
    r = _ser_edge("check-model", "--json", str(MODEL))
    d = json.loads(r.stdout)
    assert d["ok"] is True and d["bytes"] == MODEL.stat().st_size
    assert d["metadata"]["labels"] == md["labels"]
    assert 1024 < d["arena_bytes"] < 64 * 1024
    assert d["graph"]["input_dtype"] == "INT8" and d["graph"]["fused_lstm"] is True
    assert d["check_ms"] < 1000  # the check's own work, TensorFlow never loaded


def test_check_model_does_not_import_tensorflow():
    require_module("ai_edge_litert")
    code = ("import sys; from model_build.check import check_model; r = check_model(sys.argv[1], arena=False); "
            "print(r['ok'], 'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(MODEL)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.split() == ["True", "False"], r.stderr


def test_demo_truth_column():
    from firmware_bridge.demo import _truth

    segs = [("angry", 0.5, 3.1), ("sad", 3.6, 6.2)]
    assert _truth(segs, 0.0, 2.0) == "angry"  # 1.5 s of 2 s covered
    assert _truth(segs, 2.0, 4.0) == "angry"  # 1.1 s angry, 0.4 s sad
    assert _truth(segs, 2.5, 4.5) == "(sad)"  # 0.6 s angry, 0.9 s sad: most, but under half
    assert _truth(segs, 3.0, 5.0) == "sad"
    assert _truth(segs, 6.5, 8.5) == "pause"


def test_demo_prints_truth_next_to_labels(capsys):
    from firmware_bridge.demo import _print_labels

    segs = [("angry", 0.5, 3.1), ("sad", 3.6, 6.2)]
    recs = [{"record": "window", "window": 0, "t_start": 0.0, "t_end": 2.016, "label": "happy", "scores_int8": [1]},
            {"record": "window", "window": 1, "t_start": 4.0, "t_end": 6.016, "label": "sad", "scores_int8": [2]},
            {"record": "utterance", "utterance": 0, "t_start": 0.0, "t_end": 6.0, "label": "sad"},
            {"record": "summary", "t_start": 0.0, "t_end": 7.0, "label": "sad"}]
    rows = _print_labels(recs, segs)
    out = capsys.readouterr().out.splitlines()
    assert [r["window"] for r in rows] == [0, 1]
    assert "true class" in out[0] and "predicted" in out[0]
    assert out[1].split()[-5:-3] == ["angry", "happy"] and out[2].split()[-5:-3] == ["sad", "sad"]
    assert out[-1].strip().startswith("whole input") and "true angry, sad, predicted sad" in out[-1]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_frontend_plots(tmp_path):
    require_module("matplotlib")
    for kind in ("mfcc", "logmel"):
        out = tmp_path / f"{kind}.png"
        r = _ser_edge("frontend", "--output", kind, "--plot", str(out), "--json")
        assert r.returncode == 0, r.stderr
        w, h = _png_size(out)
        # MFCC: a c0 row above the c1-c12 images, so taller than the one-row log-mel figure
        assert w > 1000 and (h > 550 if kind == "mfcc" else 350 < h < 500), (kind, w, h)


def test_report_plots(tmp_path):
    require_module("matplotlib")
    from model_build.report import plot_confusions, plot_training

    labels = ["a", "b", "c"]
    cm = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 9]])
    rows = {"keras_float_twin": {"confusion": cm.tolist(), "uar": 0.7}, "int8_litert": {"confusion": cm.tolist(), "uar": 0.7}}
    w, h = _png_size(plot_confusions(rows, labels, tmp_path / "cm.png"))
    assert w > h > 200
    hist = {"loss": [2.0, 1.5, 1.2], "val_loss": [2.1, 1.9, 2.0], "accuracy": [0.3, 0.5, 0.6], "val_uar": [0.2, 0.4, 0.35]}
    assert _png_size(plot_training(hist, 2, tmp_path / "tr.png"))[0] > 600


def _documented_command_lines() -> list[tuple[str, str]]:
    """Every ``ser-edge SUBCOMMAND ...`` line in a code block of README.md / docs/*.md and the
    systemd unit's ExecStart, as (source, command line)."""
    import re

    out = []
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
               *sorted((ROOT / "edge_runtime" / "systemd").glob("*.service"))]
    for path in sources:
        text = path.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) if path.suffix == ".md" else [text]
        for block in blocks:
            block = re.sub(r"\\\n\s*", " ", block)  # join continuation lines
            for line in block.splitlines():
                for part in line.split("|"):  # a pipeline: the segment that runs ser-edge
                    m = re.match(r"\s*(?:ExecStart=)?(?:\S*/bin/)?ser-edge ([a-z][a-z-]*\b.*)", part.split(" #")[0])
                    if m:
                        out.append((path.name, m.group(1).strip()))
    return out


def test_documented_command_lines_use_real_options():
    """Each documented command names a real subcommand and only options it has (catches docs and
    the systemd unit drifting when an option is renamed or removed)."""
    import argparse
    import shlex

    from edge_runtime.cli import build_parser

    lines = _documented_command_lines()
    assert len(lines) > 20
    root = build_parser()
    problems = []
    for source, line in lines:
        words = shlex.split(line)
        parser = root
        while words and not words[0].startswith("-"):  # walk subcommands (firmware build, ...)
            subs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            if subs is None or words[0] not in subs.choices:
                break
            parser, words = subs.choices[words.pop(0)], words
        if parser is root:
            problems.append(f"{source}: {line!r}: no such subcommand")
            continue
        known = {s for a in parser._actions for s in a.option_strings}
        problems += [f"{source}: {line!r}: {w.split('=')[0]} is not an option of {parser.prog}"
                     for w in words if w.startswith("--") and w.split("=")[0] not in known]
    assert problems == []
