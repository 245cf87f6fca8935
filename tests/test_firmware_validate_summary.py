"""``validate`` against the real firmware in QEMU: every clip's summary record comes back and agrees.

The firmware (like ``ser-edge serve``) sends a summary record for every session at STOP, before its
ACK, even when no window was speech. ``validate`` used to read a count of records the host expected
(its windows + utterances + 1) and stop there; in FEATURES mode the device does not gate (features
carry no level), so it sends an utterance record the audio-gated host did not expect, and the
summary was left unread: 18 of 24 generated clips of the firmware benchmark reported ``pred
missing`` (host ``no_speech``). Now the host reads all the session's records (the ACK of STOP
follows them) and compares the summary with its own for what the device was sent.
"""
from __future__ import annotations

import pytest

from tests.conftest import require_module, require_tool, write_pcm_wav

pytestmark = pytest.mark.slow


def test_validate_gets_every_summary_from_the_firmware(tmp_path):
    require_module("serial")
    require_module("tflite_micro")
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.protocol import Mode
    from edge_runtime.test_signals import speech_with_pauses, white_noise
    from firmware_bridge.host_commands import validate_corpus, validation_passed
    from firmware_bridge.image import build_image
    from firmware_bridge.qemu import QemuDevice
    from firmware_bridge.serial_host import DeviceClient, HostFeatures

    clips = {  # corpus -> clips; the host's audio gate calls the noise no_speech
        "features": {"angry/noise.wav": white_noise(2.5, level_dbfs=-20.0, seed=4),
                     "sad/speech.wav": speech_with_pauses(2.5, seed=3)},
        "audio": {"happy/noise.wav": white_noise(1.0, level_dbfs=-20.0, seed=5),  # 1 s: QEMU's UART is slow
                  "neutral/short.wav": speech_with_pauses(0.1, seed=6)},  # shorter than a window: too_short
    }
    for corpus, files in clips.items():
        for name, pcm in files.items():
            write_pcm_wav(tmp_path / corpus / name, pcm)
    clf = StreamingClassifier.from_model(None, backend="tflm")  # the interpreter the firmware is bit-exact with
    reps = {}
    with QemuDevice(build_image().elf) as q:
        dev = DeviceClient(q.port, 921600, timeout=30.0, liveness_s=15.0).open()
        try:
            for corpus, mode in (("features", Mode.FEATURES), ("audio", Mode.AUDIO)):
                root = tmp_path / corpus
                feats = HostFeatures(dev.info, None) if mode == Mode.FEATURES else None
                reps[corpus] = validate_corpus(dev, clf, sorted(root.rglob("*.wav")), root, mode=mode, feats=feats)
            link = dev.counters()
            errors = [(e.code, e.ref_seq, e.ref_type, e.message) for e in dev.errors]
        finally:
            dev.close()
    for corpus, rep in reps.items():
        per = {f["file"]: f for f in rep["per_file"]}
        assert set(per) == set(clips[corpus])
        assert all(f["pred"] != "missing" for f in per.values()), (corpus, per)
        assert rep["missing"] == 0 and rep["agreement"] == 1.0, rep
        assert rep["summaries_missing"] == 0 and rep["summary_agreement"] == 1.0, per
        assert all(f["summary_agree"] and f["pred"] == f["host_pred"] for f in per.values()), per
        assert validation_passed(rep)
    labels = set(clf.labels)
    # FEATURES: the device classifies the noise's frames without a gate; so does the host's reference
    assert reps["features"]["per_file"][0]["pred"] in labels
    assert reps["features"]["summaries_no_emotion"] == 0
    # AUDIO: both gates call the noise no_speech; too short for a window travels as silence
    audio = {f["file"]: f["pred"] for f in reps["audio"]["per_file"]}
    assert audio == {"happy/noise.wav": "no_speech", "neutral/short.wav": "silence"}
    assert reps["audio"]["summaries_no_emotion"] == 2

    # no SYNC precedes a START or follows a STOP on the wire (the device answered those NO_SESSION,
    # and the host took that for the loss of its session: 12 errors, 6 recoveries in 8 clips)
    assert link["errors_rx"] == 0 and link["recoveries"] == 0, (errors, {k: v for k, v in link.items() if v})

    # the verdict: a summary on one side only, or another label, fails validation
    rep = reps["audio"]
    assert not validation_passed({**rep, "summaries_missing": 1, "summary_agreement": 0.5})
    assert not validation_passed({**rep, "summary_agreement": 0.5})
