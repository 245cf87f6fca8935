"""Every user-facing failure of ``ser-edge``: one line on stderr naming what was wrong, exit code 2
(bad input or usage) or 1 (runtime failure), never a traceback unless --debug.

Each case runs the real command as a subprocess, as a user would type it. They fail before any
heavy import (TensorFlow is never loaded here), so the whole file takes seconds.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_module

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "edge_runtime" / "models" / "default.tflite"


def ser_edge(*argv: str, env: dict | None = None, prelude: str = "", timeout: float = 60,
             stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ``ser-edge ARGV`` from this source tree; ``prelude`` runs first (e.g. to hide a module)."""
    code = f"import sys\n{prelude}\nfrom edge_runtime.cli import main\nsys.exit(main(sys.argv[1:]))"
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    e.pop("SER_EDGE_DEBUG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, timeout=timeout, env=e,
                          input=stdin)


def write_wav(path: Path, seed: int, seconds: float = 1.0, rate: int = 16000) -> Path:
    x = np.random.default_rng(seed).normal(0, 3000, int(seconds * rate)).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad inputs of every kind, made once for the module."""
    d = tmp_path_factory.mktemp("bad")
    model = MODEL.read_bytes()
    f = {"dir": str(d), "model": str(MODEL)}
    (d / "empty.tflite").write_bytes(b"")
    f["empty"] = str(d / "empty.tflite")
    (d / "random.tflite").write_bytes(random.Random(1).randbytes(5000))
    f["random"] = str(d / "random.tflite")
    (d / "truncated.tflite").write_bytes(model[: len(model) // 2])
    f["truncated"] = str(d / "truncated.tflite")
    bad_root = bytearray(model)
    bad_root[0:4] = (len(model) + 1000).to_bytes(4, "little")  # root table offset past the end
    (d / "flipped.tflite").write_bytes(bytes(bad_root))
    f["flipped"] = str(d / "flipped.tflite")
    assert model.count(b"ser_edge\x00") == 1
    (d / "foreign.tflite").write_bytes(model.replace(b"ser_edge\x00", b"xyz_meta\x00"))  # metadata renamed
    f["foreign"] = str(d / "foreign.tflite")
    f["wav"] = str(write_wav(d / "ok.wav", 0, 2.5))
    raw = (d / "ok.wav").read_bytes()
    (d / "truncated.wav").write_bytes(raw[: len(raw) // 2 + 1])
    f["truncated_wav"] = str(d / "truncated.wav")
    (d / "audio_dir").mkdir()
    f["audio_dir"] = str(d / "audio_dir")
    # corpora
    (d / "empty_corpus").mkdir()
    f["empty_corpus"] = str(d / "empty_corpus")
    for i in range(4):
        write_wav(d / "one_label" / "happy" / f"spk{i}_a.wav", i)
    f["one_label"] = str(d / "one_label")
    for j, lab in enumerate(("happy", "sad")):
        for i in range(3):
            write_wav(d / "no_speakers" / lab / f"clip{i}.wav", 10 * j + i)
    f["no_speakers"] = str(d / "no_speakers")
    (d / "build_without_report").mkdir()
    f["no_report"] = str(d / "build_without_report")
    (d / "a_file").write_text("x")
    f["a_file"] = str(d / "a_file")
    master, slave = os.openpty()  # a real terminal device with nobody on the other end
    f["pty"] = os.ttyname(slave)
    yield f
    os.close(master)
    os.close(slave)


# (argv with {placeholders}, exit code, text the one stderr line must contain)
CASES = [
    # check-model on missing, empty, random, truncated, damaged, foreign models; a folder
    ("check-model {dir}/missing.tflite", 2, "missing.tflite: no such file"),
    ("check-model {empty}", 2, "empty.tflite: not a TFLite model (0 bytes"),
    ("check-model {random}", 2, "random.tflite: not a TFLite model (file identifier"),
    ("check-model {truncated}", 2, "truncated.tflite: corrupt TFLite flatbuffer"),
    ("check-model {flipped}", 2, "flipped.tflite: corrupt TFLite flatbuffer"),
    ("check-model {dir}", 2, "is a folder, expected a file"),
    # build on a missing / empty folder, a one-label corpus, files without speakers; bad options
    ("build --corpus {dir}/nope --out {dir}/b", 2, "argument --corpus: "),
    ("build --corpus {empty_corpus} --out {dir}/b", 2, "empty_corpus: no audio files"),
    ("build --corpus {one_label} --out {dir}/b", 2, "one_label: only one label ('happy')"),
    ("build --corpus {no_speakers} --out {dir}/b", 2, "no_speakers: 1 speaker(s)"),
    ("build --corpus {a_file} --out {dir}/b", 2, "is a file, expected a folder"),
    ("build --epochs 0", 2, "argument --epochs: must be a positive integer, got 0"),
    ("build --folds 1", 2, "argument --folds: needs at least 2 folds"),
    ("build --dropout 1.5", 2, "argument --dropout: must be between 0 and 1"),
    ("build --out {a_file}/sub", 2, "argument --out: "),
    # serial commands on a missing port, serve on something that is not a serial port
    ("stream --port /dev/ttyNOPE0 {wav}", 2, "argument --port: /dev/ttyNOPE0: no such serial port"),
    ("listen --port /dev/ttyNOPE0", 2, "argument --port: /dev/ttyNOPE0: no such serial port"),
    ("validate --port /dev/ttyNOPE0 {dir}", 2, "argument --port: /dev/ttyNOPE0: no such serial port"),
    ("serve --port /dev/null", 2, "--port /dev/null: not a serial port"),
    ("serve --port {a_file}", 2, "not a serial port (not a character device)"),
    ("serve --port /dev/ttyNOPE0", 2, "no such serial port"),
    ("stream --port /dev/null --baud 0 {wav}", 2, "argument --baud: must be a positive integer"),
    ("stream --port /dev/null {audio_dir}", 2, "audio_dir: is a folder, expected a file"),
    ("validate --port /dev/null {a_file}", 2, "a_file: is a file, expected a folder"),
    # report without report.json; export to an unwritable place
    ("report {no_report}", 2, "build_without_report: no report.json in this folder"),
    ("report {dir}/nope", 2, "argument build_dir: "),
    ("export --out {a_file}/fw", 2, "argument --out: "),
    ("export --model {truncated} --out {dir}/fw", 2, "truncated.tflite"),
    # --udp: one HOST:PORT convention, checked at parse time
    ("run --udp 127.0.0.1:99999 {wav}", 2, "argument --udp: port must be an integer 1-65535, got '99999'"),
    ("run --udp nohost.invalid:5005 {wav}", 2, "argument --udp: cannot resolve host 'nohost.invalid'"),
    ("run --udp 5005 {wav}", 2, "argument --udp: expected HOST:PORT"),
    ("listen --port /dev/null --udp 127.0.0.1:0", 2, "argument --udp: port must be an integer 1-65535"),
    # run: options validated at parse time
    ("run --chunk-ms 0 {wav}", 2, "argument --chunk-ms: must be > 0, got 0"),
    ("run --chunk-ms -5 {wav}", 2, "argument --chunk-ms: must be > 0, got -5"),
    ("run --smooth 0 {wav}", 2, "argument --smooth: must be a positive integer, got 0"),
    ("run --stdin --rate 0", 2, "argument --rate: must be a positive integer, got 0"),
    ("run --threads 0 {wav}", 2, "argument --threads: must be a positive integer, got 0"),
    ("run --min-confidence 2 {wav}", 2, "argument --min-confidence: must be between 0 and 1"),
    ("run --gate-margin-db -3 {wav}", 2, "argument --gate-margin-db: must be > 0, got -3"),
    ("run --chunk-ms abc {wav}", 2, "argument --chunk-ms: expected a number, got 'abc'"),
    ("run {audio_dir}", 2, "audio_dir: is a folder, expected a file"),
    ("run {dir}/missing.wav", 2, "missing.wav: no such file"),
    ("run {truncated_wav}", 2, "truncated.wav: truncated WAV"),
    ("run --model {truncated} {wav}", 2, "truncated.tflite: corrupt TFLite flatbuffer"),
    ("run --model {foreign} {wav}", 2, "foreign.tflite: no 'ser_edge' metadata, so not a ser-edge model"),
    ("run", 2, "give an audio FILE, --stdin or --mic"),
    ("frontend {audio_dir}", 2, "audio_dir: is a folder, expected a file"),
    ("frontend {truncated_wav}", 2, "truncated.wav: truncated WAV"),
    # more: other commands' options and inputs
    ("run --backend nope {wav}", 2, "argument --backend: invalid choice: 'nope'"),
    ("run --stdin --chunk-ms 1e400", 2, "argument --chunk-ms: must be > 0, got 1e400"),
    ("frontend --save {audio_dir}", 2, "argument --save: "),
    ("convert {model}", 2, "default_float.npz: not found"),
    ("export --prefix 1bad --out {dir}/fw", 2, "prefix '1bad' is not a C identifier"),
    ("demo --epochs 0", 2, "argument --epochs: must be a positive integer, got 0"),
    ("listen --port /dev/null --seconds 0", 2, "argument --seconds: must be > 0"),
    ("stream --port /dev/null --timeout -1 {wav}", 2, "argument --timeout: must be > 0"),
    ("serve --port {pty} --baud 12345", 2, "--baud 12345: baud rate 12345 is not a standard"),
    ("check-model --json {random}", 2, "random.tflite: not a TFLite model"),
    ("firmware build --model {empty} --out {dir}/img", 2, "empty.tflite: not a TFLite model"),
    # usage
    ("nosuchcommand", 2, "invalid choice: 'nosuchcommand'"),
    ("serve", 2, "the following arguments are required: --port"),
]


@pytest.mark.parametrize("argv,code,needle", CASES, ids=[c[0].split(" {")[0][:40] for c in CASES])
def test_one_line_error(files, argv, code, needle):
    args = [a.format(**files) for a in argv.split()]
    r = ser_edge(*args)
    err = r.stderr.decode()
    needle = needle.format(**files)
    assert r.returncode == code, (r.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # exactly one line: the error
    assert lines[0].startswith(f"ser-edge {args[0]}: error: ") or args[0] == "nosuchcommand", lines[0]
    assert needle in lines[0], lines[0]


FIRMWARE_CASES = [  # (argv, the message after "ser-edge firmware <cmd>: error: ")
    ("firmware build --model {dir}/nope.tflite", "argument --model: {dir}/nope.tflite: no such file"),
    ("firmware build --model {dir}", "argument --model: {dir}: is a folder, expected a file"),
    ("firmware build --out {a_file}/img", "argument --out: {a_file}/img: cannot be created ({a_file} is a file)"),
    ("firmware build --out {a_file}", "argument --out: {a_file}: exists and is not a folder"),
    ("firmware run --elf {dir}/nope.elf", "argument --elf: {dir}/nope.elf: no such file"),
    ("firmware run --elf {empty}", "argument --elf: {empty}: not an ELF image (build one with `ser-edge firmware build`)"),
    ("firmware run --model {dir}/nope.tflite", "argument --model: {dir}/nope.tflite: no such file"),
]


@pytest.mark.parametrize("argv,needle", FIRMWARE_CASES, ids=[c[0].replace(" {", "_").split("}")[0] for c in FIRMWARE_CASES])
def test_firmware_path_options_checked_at_parse_time(files, argv, needle):
    """`ser-edge firmware build/run` path options fail when parsed: one line naming the option and the
    path, exit 2, before any compiler or QEMU runs (the error comes from argparse, so from the
    sub-subcommand's parser)."""
    args = [a.format(**files) for a in argv.split()]
    r = ser_edge(*args)
    err = r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines == [f"ser-edge firmware {args[1]}: error: {needle.format(**files)}"], err


def test_firmware_run_rejects_a_model_that_is_not_tflite(files):
    """An existing but empty --model for `firmware run` is refused as bad input before QEMU or gcc."""
    r = ser_edge("firmware", "run", "--model", files["empty"])
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "empty.tflite: not a TFLite model" in err


def test_check_model_foreign_is_a_verdict_not_a_crash(files):
    """A well-formed .tflite without our metadata: the summary prints, the verdict says why (exit 1)."""
    r = ser_edge("check-model", "--no-arena", files["foreign"])
    out = r.stdout.decode()
    assert r.returncode == 1, r.stderr.decode()
    assert "verdict    FAILED" in out and "not a ser-edge model" in out and "ser-edge build" in out
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in out  # the graph part of the summary still shows


def test_check_model_never_crashes_on_bit_flips(files):
    """Random bit flips anywhere in the model: a verdict or ModelFileError, nothing else (in-process)."""
    require_module("ai_edge_litert")
    from edge_runtime.model_metadata import ModelFileError
    from model_build.check import check_model

    data = bytearray(MODEL.read_bytes())
    rng = random.Random(7)
    outcomes = set()
    path = Path(files["dir"]) / "flip.tflite"
    for trial in range(40):
        d = bytearray(data)
        for _ in range(rng.choice((1, 8, 64))):
            i = rng.randrange(len(d))
            d[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(d))
        try:
            r = check_model(path, arena=False)
            outcomes.add("verdict")
            assert isinstance(r["ok"], bool)
        except ModelFileError as e:
            outcomes.add("error")
            assert str(e).startswith(str(path)) and "\n" not in str(e)
    assert outcomes == {"verdict", "error"}  # both kinds of damage occurred


def test_debug_shows_the_traceback(files):
    for argv, env in ((("--debug", "check-model", files["empty"]), None),
                      (("check-model", files["empty"], "--debug"), None),
                      (("check-model", files["empty"]), {"SER_EDGE_DEBUG": "1"})):
        r = ser_edge(*argv, env=env)
        assert r.returncode != 0
        assert "Traceback" in r.stderr.decode() and "ModelFileError" in r.stderr.decode()


def test_runtime_failure_is_exit_1_device_that_does_not_answer(files):
    """A real pty with nobody on the other end: the host gives up with one line, exit code 1."""
    require_module("serial")
    master, slave = os.openpty()
    port = os.ttyname(slave)
    try:
        r = ser_edge("stream", "--port", port, "--timeout", "0.2", files["wav"])
    finally:
        os.close(master)
        os.close(slave)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert port in err and "no answer" in err


HIDE_HOST_EXTRAS = ("for m in ('tensorflow', 'tf_keras', 'librosa', 'matplotlib', 'tflite_micro', 'serial', "
                    "'cobs', 'tqdm', 'sounddevice'):\n    sys.modules[m] = None")


def test_edge_only_install_marks_and_explains_missing_extras(files):
    """With the train and bridge extras hidden, --help marks their commands and each says what to install."""
    r = ser_edge("--help", prelude=HIDE_HOST_EXTRAS)
    out = r.stdout.decode()
    assert r.returncode == 0
    for cmd in ("build", "demo", "stream", "listen"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(cmd + " "))
        assert "[not installed: pip install 'ser-edge[" in line, line
    for cmd in ("run ", "serve ", "check-model"):  # the device commands are whole; check-model needs LiteRT only
        i = next(i for i, ln in enumerate(out.splitlines()) if ln.strip().startswith(cmd))
        assert "not installed" not in " ".join(out.splitlines()[i:i + 2]), cmd
    r = ser_edge("check-model", files["model"], prelude=HIDE_HOST_EXTRAS)
    assert r.returncode == 0, r.stderr.decode()
    assert "arena      not measured: TFLite Micro is not installed" in r.stdout.decode()
    for argv, extra in ((("build", "--out", files["dir"] + "/b"), "train"),
                        (("run", "--mic"), "mic"),
                        (("report", files["no_report"]), "train"),
                        (("listen", "--port", "/dev/null"), "bridge")):
        r = ser_edge(*argv, prelude=HIDE_HOST_EXTRAS)
        err = r.stderr.decode()
        assert r.returncode == 1, err
        assert f"pip install 'ser-edge[{extra}]'" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_broken_pipe_is_not_an_error(files):
    """``ser-edge run clip.wav | head -1``: the reader leaves early; no traceback, exit 0."""
    p = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", files["wav"], "--chunk-ms", "16"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0, err
    assert first.startswith(b"{") and "Traceback" not in err


def test_truncated_wav_in_a_corpus_is_reported_and_skipped(tmp_path):
    """build's corpus loader refuses a truncated WAV the way `run` does: reported by path, skipped."""
    from model_build.corpora import load_corpus

    for i in range(2):
        write_wav(tmp_path / "happy" / f"s{i}_a.wav", 100 + i)
    raw = (tmp_path / "happy" / "s1_a.wav").read_bytes()
    (tmp_path / "happy" / "s1_a.wav").write_bytes(raw[: len(raw) // 2 + 1])
    clips, audios, report = load_corpus(tmp_path)
    assert [Path(c.path).name for c in clips] == ["s0_a.wav"] and audios[0].size == 16000
    assert "s1_a.wav: truncated WAV" in report.summary()
