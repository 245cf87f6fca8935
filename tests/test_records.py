"""The JSON-lines records of run, stream, listen and validate follow one schema
(edge_runtime.records), checked two ways: by records.check and by a JSON Schema validator
(jsonschema) against records.json_schema(). The producers run for real: `ser-edge run` on generated
speech with pauses, and `stream`, `listen`, `validate` against a device (the shipped model in a
SerialDevice) over a linked pair of kernel ptys. SER_EDGE_DEBUG=1 makes every producer check each
record it builds as well."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import records
from tests.conftest import require_module, write_pcm_wav

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "SER_EDGE_DEBUG": "1"}


def _validator():
    require_module("jsonschema")
    import jsonschema

    schema = records.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid(lines: list[dict]) -> None:
    v = _validator()
    for d in lines:
        assert records.check(d) == [], d
        errors = [e.message for e in v.iter_errors(d)]
        assert errors == [], (d, errors)
        assert d["schema"] == records.SCHEMA_VERSION




@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    from edge_runtime.test_signals import dithered_silence, speech_with_pauses

    pcm = np.concatenate([speech_with_pauses(7.0), dithered_silence(3.5)])
    return write_pcm_wav(tmp_path_factory.mktemp("rec") / "speech.wav", pcm)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def test_run_records(speech_wav):
    out = []
    for extra in ([], ["--min-confidence", "0.99"]):  # the second run makes 'uncertain' windows
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(speech_wav), *extra],
                           capture_output=True, text=True, timeout=120, env=ENV)
        assert r.returncode == 0, r.stderr
        lines = _json_lines(r.stdout)
        assert_valid(lines)
        assert lines[-1]["record"] == "summary"
        out += lines
    kinds = {d["record"] for d in out}
    assert kinds == {"window", "utterance", "summary"}
    reasons = {d["reason"] for d in out if d["record"] == "window"}
    assert None in reasons and "uncertain" in reasons and reasons & {"silence", "no_speech"}, reasons
    wins = [d for d in out if d["record"] == "window"]
    assert all(d["time"] == d["t_end"] for d in out)
    assert all(abs(d["latency_ms"] - d["fe_ms"] - d["nn_ms"]) < 0.01 for d in wins)


@contextlib.contextmanager
def _device(port: str, **kw):
    """The shipped model answering on ``port`` (a SerialDevice thread in this process)."""
    from edge_runtime.classifier import StreamingClassifier
    from tests.test_serial_helpers import running_device

    with running_device(port, StreamingClassifier.from_model(), baud=921600, **kw) as dev:
        yield dev


def test_stream_listen_validate_records(speech_wav, tmp_path):
    require_module("serial")
    from edge_runtime.audio_sources import FileSource
    from edge_runtime.serial_device import looped
    from firmware_bridge.ptylink import PtyLink

    corpus = tmp_path / "corpus"
    for name in ("angry/a_1.wav", "sad/b_1.wav"):
        (corpus / name).parent.mkdir(parents=True)
        (corpus / name).write_bytes(speech_wav.read_bytes())
    with PtyLink(baud=921600) as link, _device(link.port_b):
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "stream", "--port", link.port_a, "--quiet",
                            str(speech_wav)], capture_output=True, text=True, timeout=120, env=ENV)
        assert r.returncode == 0, r.stderr
        streamed = _json_lines(r.stdout)
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "validate", "--port", link.port_a,
                            str(corpus)], capture_output=True, text=True, timeout=180, env=ENV)
        assert r.returncode in (0, 1), r.stderr
        validated = _json_lines(r.stdout)
    assert_valid(streamed)
    assert {d["record"] for d in streamed} >= {"window", "summary"}
    # stream's probabilities follow run's rule: the same audio and model give the same confidences
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(speech_wav)],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr
    ran = _json_lines(r.stdout)
    key = lambda d: (d["record"], d.get("window", d.get("utterance")))  # noqa: E731
    by_key = {key(d): d for d in ran}
    for d in streamed:
        want = by_key[key(d)]
        assert (d["label"], d["scores_int8"]) == (want["label"], want["scores_int8"]), (d, want)
        assert d["confidence"] == pytest.approx(want["confidence"], abs=2e-4), (d, want)
        assert list(d["probs"]) == list(want["probs"])
        assert list(d["probs"].values()) == pytest.approx(list(want["probs"].values()), abs=2e-4)
    assert {d["record"] for d in streamed} == {d["record"] for d in ran}
    assert any(d["confidence"] > 0 for d in streamed if d["record"] != "window")
    assert any(d["index"] is None and d["reason"] for d in streamed if d["record"] == "window")
    assert_valid(validated)
    assert [d["record"] for d in validated] == ["file", "file", "validation"]
    assert {d["truth"] for d in validated[:2]} == {"angry", "sad"}

    source = looped(FileSource(str(speech_wav), 16000, chunk_ms=32, realtime=True))
    with PtyLink(baud=921600) as link, _device(link.port_b, audio_source=source, push_on_boot=True):
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "listen", "--port", link.port_a,
                            "--seconds", "4"], capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 0, r.stderr
    listened = _json_lines(r.stdout)
    assert listened and all(d["record"] == "window" and "push" in d["flags"] for d in listened)
    assert_valid(listened)
    assert all(d["confidence"] == pytest.approx(max(d["probs"].values()), abs=1e-4) for d in listened)


def test_schema_rejects_what_it_should():
    v = _validator()
    good = records.make("window", {"time": 2.0, "window": 0, "t_start": 0.0, "t_end": 2.0, "label": "happy",
                                   "index": 2, "reason": None, "scores_int8": [1, -3], "latency_ms": 1.0})
    assert records.check(good) == [] and v.is_valid(good)
    bad = [
        {**good, "colour": "red"},  # an undocumented key
        {**good, "index": None},  # no emotion but no reason
        {**good, "index": None, "reason": "silence"},  # label and reason disagree
        {**good, "scores_int8": [200]},  # not int8
        {**good, "time": -1.0},
        {**good, "record": "frame"},
        {k: v_ for k, v_ in good.items() if k != "t_end"},  # a required key missing
        {**good, "schema": 99},
    ]
    for b in bad:
        assert records.check(b), b
    # the JSON Schema agrees on everything it can express (cross-key rules are records.check's)
    for b in bad[:1] + bad[3:]:
        assert not v.is_valid(b), b
    with pytest.raises(records.RecordError, match="colour: not a key of a window record"):
        os.environ["SER_EDGE_DEBUG"] = "1"
        try:
            records.make("window", {**good, "colour": "red"})
        finally:
            del os.environ["SER_EDGE_DEBUG"]


def test_readme_documents_every_key():
    """README's record table is records.markdown_table() verbatim: no key undocumented, none stale."""
    readme = (ROOT / "README.md").read_text()
    assert records.markdown_table() in readme, "regenerate with: python -m edge_runtime.records"


def test_udp_datagrams_are_the_same_records(speech_wav):
    """`run --udp HOST:PORT --quiet`: each record arrives as one datagram, byte-identical to a line."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(30)
    port = sock.getsockname()[1]
    try:
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(speech_wav), "--quiet",
                            "--udp", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120, env=ENV)
        assert r.returncode == 0 and r.stdout == "", r.stderr
        got = []
        while not got or got[-1]["record"] != "summary":
            got.append(json.loads(sock.recv(65536)))
    finally:
        sock.close()
    assert_valid(got)
    assert [d["record"] for d in got].count("window") >= 8
