"""`ser-edge export`: the generated header/source pair compiles (C and C++), its tables drive the C
front end to the numpy output, its model array is the .tflite byte for byte."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.frontend import FrontendConfig, compute_features
from firmware_bridge.export import ExportError, export_c, register_export, tables_checksum
from tests.golden.regen_frontend_golden import golden_signal

CFLAGS = ["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion", "-Wfloat-conversion", "-pedantic"]

# A firmware-like main: PCM on stdin -> features on stdout through the exported tables, using the
# streaming API with a callback (mode "fe"); or the model bytes on stdout (mode "model").
MAIN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ser_model.h"

static ser_fe_state_t fe;
static void on_frame(void *ctx, const int32_t *f, uint32_t index) {
    (void)ctx; (void)index;
    fwrite(f, sizeof(int32_t), SER_N_FEATURES, stdout);
}

int main(int argc, char **argv) {
    static int16_t pcm[1 << 20];
    size_t n, off = 0;
    int32_t feats[SER_N_FEATURES];
    if (ser_fe_init(&fe, &ser_fe_tables) != SER_FE_OK) return 2;
    if (ser_fe_tables_checksum(&ser_fe_tables) != SER_TABLES_CHECKSUM) return 3;
    if (ser_fe_tables.n_out != SER_N_FEATURES || ser_fe_tables.frame_length != SER_FRAME_LENGTH) return 4;
    if (argc > 1 && strcmp(argv[1], "model") == 0) {
#if SER_HAS_MODEL
        if (((uintptr_t)ser_model_data) % 16 != 0) return 5;
        if (ser_model_len != SER_MODEL_LEN || ser_model_len != sizeof(ser_model_data)) return 6;
        fwrite(ser_model_data, 1, ser_model_len, stdout);
        fprintf(stderr, "%d %s %s %ld %d %d|", SER_N_LABELS, SER_MODEL_HASH, SER_FRONTEND_HASH,
                (long)SER_INPUT_MULTIPLIER, SER_INPUT_RIGHT_SHIFT, SER_INPUT_ZERO_POINT);
        { int i; for (i = 0; i < SER_N_LABELS; i++) fprintf(stderr, "%s|", ser_labels[i]); }
        return 0;
#else
        return 7;
#endif
    }
    n = fread(pcm, sizeof(int16_t), sizeof(pcm) / sizeof(pcm[0]), stdin);
    while (off < n) { /* odd chunk sizes, as a UART would deliver them */
        size_t k = n - off < 333 ? n - off : 333;
        ser_fe_process(&fe, pcm + off, k, feats, on_frame, NULL);
        off += k;
    }
    return 0;
}
"""


def _compile(out_dir: Path, extra=()) -> Path:
    (out_dir / "main.c").write_text(MAIN_C)
    exe = out_dir / "main"
    srcs = [out_dir / n for n in ("main.c", "ser_model.c", "ser_frontend.c", "ser_protocol.c")]
    r = subprocess.run(["gcc", *CFLAGS, *extra, "-I", str(out_dir), "-o", str(exe), *map(str, srcs)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def _run_features(exe: Path, x: np.ndarray, n_features: int) -> np.ndarray:
    r = subprocess.run([str(exe)], input=x.astype("<i2").tobytes(), capture_output=True)
    assert r.returncode == 0, r.returncode
    return np.frombuffer(r.stdout, "<i4").reshape(-1, n_features)


@pytest.mark.parametrize("cfg", [FrontendConfig(output="logmel"),
                                 FrontendConfig(frame_length=256, hop_length=128, n_mels=24),
                                 FrontendConfig(output="logmel", algorithm_version=1)],
                         ids=["logmel", "n256_m24_mfcc", "v1_logmel"])
def test_frontend_only_export_compiles_and_matches(tmp_path, cfg):
    files = export_c(None, cfg, tmp_path)
    h = files["header"].read_text()
    assert f'#define SER_FRONTEND_HASH "{cfg.hash}"' in h and "SER_HAS_MODEL 0" in h
    assert f"0x{tables_checksum(cfg):08X}u" in h
    assert "float" not in files["source"].read_text().split("*/", 1)[1]  # integers only (after the banner)
    exe = _compile(tmp_path)
    x = np.concatenate([golden_signal(), np.random.default_rng(0).integers(-32768, 32768, 7000)]).astype(np.int16)
    np.testing.assert_array_equal(_run_features(exe, x, cfg.n_features), compute_features(x, cfg))


@pytest.fixture(scope="module")
def model_file(tiny_model_path):
    """The session's tiny int8 model (tests/conftest.py): embedded metadata + .json sidecar."""
    return Path(tiny_model_path)


def test_model_export_compiles_and_embeds_model(tmp_path, model_file):
    from edge_runtime.interpreter import FeatureQuantizer
    from edge_runtime.model_metadata import model_hash, read_metadata

    files = export_c(str(model_file), None, tmp_path, flatbuffer=True)  # the TFLite Micro path
    exe = _compile(tmp_path)
    r = subprocess.run([str(exe), "model"], capture_output=True)
    assert r.returncode == 0, r.returncode
    data = model_file.read_bytes()
    assert r.stdout == data  # the array is the file, byte for byte (so its length is the file size)
    md = read_metadata(str(model_file))
    fq = FeatureQuantizer(2.0 ** -16, md.input_scale, md.input_zero_point)
    head, *labels = r.stderr.decode().rstrip("|").split("|")
    n, mh, fh, m0, rs, zp = head.split()
    assert (int(n), mh, fh) == (len(md.labels), model_hash(data), md.frontend_hash)
    assert (int(m0), int(rs), int(zp)) == (fq.m0, fq.right_shift, md.input_zero_point)
    assert tuple(labels) == md.labels
    assert "_Alignas(16)" in files["source"].read_text()
    # the same pair compiles as C++ too (a TFLite Micro application is C++)
    if shutil.which("g++"):
        r = subprocess.run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-x", "c++", "-c",
                            "-I", str(tmp_path), "-o", str(tmp_path / "m.o"), str(files["source"])],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_sidecar_metadata_and_mismatch_refused(tmp_path, model_file):
    from edge_runtime.model_metadata import read_metadata_json
    from tests.test_runtime_helpers import embed

    md = read_metadata_json(str(model_file))
    raw = embed(model_file.read_bytes(), None)  # the same model without its ser_edge entry
    p = tmp_path / "bare.tflite"
    p.write_bytes(raw)
    with pytest.raises(ExportError, match="bare.tflite: no embedded ser_edge metadata"):
        export_c(str(p), None, tmp_path / "out0")
    p.with_suffix(".json").write_text(json.dumps(md))
    files = export_c(str(p), None, tmp_path / "out1", prefix="kws")
    h = files["header"].read_text()
    assert f"KWS_N_LABELS {len(md['labels'])}" in h and f"KWS_MODEL_LEN {len(raw)}u" in h
    with pytest.raises(ExportError, match=r"n_mels: model 40 vs requested 32"):
        export_c(str(model_file), FrontendConfig(n_mels=32), tmp_path / "out2")


def test_cli_subcommand(tmp_path, capsys):
    ap = argparse.ArgumentParser()
    register_export(ap.add_subparsers())
    args = ap.parse_args(["export", "--output", "logmel", "--out", str(tmp_path), "--prefix", "fe"])
    assert args.func(args) == 0
    assert "FE_N_FEATURES 40" in (tmp_path / "fe_model.h").read_text()
    assert (tmp_path / "ser_frontend.c").exists() and "fe_model.c" in capsys.readouterr().out
