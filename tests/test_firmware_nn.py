"""The model compiled ahead of time to C (firmware_bridge.nn_export + firmware/ser_nn.c), built with
the host gcc, against the tflite-micro interpreter (TFLM's reference kernels): identical int8
scores on every window of generated audio, for the shipped model and the tiny test model; an
unsupported operator is refused at export naming the operator."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.frontend import compute_features
from edge_runtime.interpreter import FeatureQuantizer
from edge_runtime.model_metadata import read_metadata
from edge_runtime.test_signals import harmonic_vowel, quiet_speechlike, speech_with_pauses, tone_sweep, white_noise
from firmware_bridge.export import DEFAULT_MODEL, ExportError, export_c
from tests.conftest import FULL_ENV, require_module, require_tool

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def audio_windows(model_path: Path, seconds: float = 20.0) -> np.ndarray:
    """int8 windows of generated audio through the model's own front end and input quantiser (the
    device path: integer features -> FeatureQuantizer -> windows of window_frames, hop_frames)."""
    md = read_metadata(str(model_path))
    cfg = md.frontend_config()
    fq = FeatureQuantizer(2.0 ** -cfg.frac_bits, md.input_scale, md.input_zero_point)
    out = []
    for x in (speech_with_pauses(seconds), harmonic_vowel(6.0), white_noise(6.0, level_dbfs=-3),
              quiet_speechlike(6.0), tone_sweep(6.0)):
        q = fq(compute_features(x, cfg))
        for a in range(0, len(q) - md.window_frames + 1, md.hop_frames):
            out.append(q[a:a + md.window_frames])
    return np.stack(out)


def _compare(model_path: Path, extra: int = 8) -> tuple[int, float]:
    from firmware_bridge.nn_host import CModel

    require_module("tflite_micro")
    from edge_runtime.interpreter import run_tflm

    data = model_path.read_bytes()
    wins = audio_windows(model_path)
    rng = np.random.default_rng(0)  # plus full-range random windows: saturating accumulators, LUT ends
    wins = np.concatenate([wins, rng.integers(-128, 128, (extra,) + wins.shape[1:]).astype(np.int8)])
    m = CModel(data, str(model_path))
    got = m.invoke_many(wins)
    want = run_tflm(data, wins)
    np.testing.assert_array_equal(got, want)
    return len(wins), float(np.mean(np.argmax(got, 1) == np.argmax(want, 1)))


def test_shipped_model_bit_exact_with_tflite_micro():
    n, top1 = _compare(DEFAULT_MODEL)
    assert n >= 30 and top1 == 1.0


def test_shipped_model_bit_exact_on_lstm_rounding_window():
    """A speech window (int8 features of a corpus clip, tests/golden/aot_lstm_window.npy) on which
    the C once differed from tflite-micro by 1 LSB in two scores: the LSTM gate FC multipliers were
    computed from the float32 product of input and weight scale, tflite-micro uses the double
    product (forget gate: 2060795520 vs 2060795554). An accumulator of 2886 then gave 2769.49996
    (-> 2769) instead of 2769.50001 (-> 2770) at step 12, and the cell state stayed 1 off."""
    from firmware_bridge.nn_host import CModel

    require_module("tflite_micro")
    from edge_runtime.interpreter import run_tflm

    data = DEFAULT_MODEL.read_bytes()
    w = np.load(Path(__file__).parent / "golden" / "aot_lstm_window.npy")
    assert w.dtype == np.int8 and w.shape == tuple(CModel(data).input_shape[1:])
    np.testing.assert_array_equal(CModel(data, str(DEFAULT_MODEL)).invoke(w), run_tflm(data, w[None])[0])


def test_tiny_model_bit_exact_with_tflite_micro(tiny_model_path):
    n, _ = _compare(Path(tiny_model_path))
    assert n >= 30


def test_export_writes_net_that_compiles_standalone(tmp_path):
    files = export_c(str(DEFAULT_MODEL), None, tmp_path)
    assert {"net_header", "net_source", "ser_nn.c", "ser_nn.h"} <= set(files)
    h = files["net_header"].read_text()
    assert "void ser_model_invoke(const int8_t *in, int8_t *out);" in h
    arena = int(h.split("SER_NET_ARENA_BYTES ")[1].split()[0])
    assert 0 < arena < 16 * 1024  # every activation + scratch, planned on the host
    assert '#include "ser_net.h"' in files["header"].read_text()
    assert "ser_model_data" not in files["source"].read_text()  # no flatbuffer unless --flatbuffer
    main = tmp_path / "main.c"
    main.write_text('#include <stdio.h>\n#include "ser_model.h"\nint main(void) {\n'
                    "  static int8_t in[SER_NET_INPUT_SIZE]; int8_t out[SER_NET_OUTPUT_SIZE]; int i;\n"
                    "  if (fread(in, 1, sizeof in, stdin) != sizeof in) return 3;\n"
                    "  ser_model_invoke(in, out);\n"
                    "  for (i = 0; i < SER_NET_OUTPUT_SIZE; i++) printf(\"%d \", out[i]);\n"
                    "  return SER_N_LABELS == SER_NET_OUTPUT_SIZE ? 0 : 4;\n}\n")
    exe = tmp_path / "main"
    r = subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(tmp_path),
                        "-o", str(exe), str(main), str(files["net_source"]), str(tmp_path / "ser_nn.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    w = audio_windows(DEFAULT_MODEL)[3]
    r = subprocess.run([str(exe)], input=w.tobytes(), capture_output=True)
    assert r.returncode == 0
    from firmware_bridge.nn_host import CModel

    assert [int(v) for v in r.stdout.split()] == CModel.from_file(DEFAULT_MODEL).invoke(w).tolist()


@pytest.fixture(scope="module")
def tanh_model(tmp_path_factory):
    """A real int8 model with an operator the C export does not implement (TANH)."""
    tf = require_module("tensorflow")
    keras = require_module("tf_keras")  # the Keras the project's converter uses (model_build)

    inp = keras.Input((16,), batch_size=1)
    out = keras.layers.Activation("tanh")(keras.layers.Dense(4)(inp))
    km = keras.Model(inp, out)
    conv = tf.lite.TFLiteConverter.from_keras_model(km)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.normal(size=(1, 16)).astype(np.float32)] for _ in range(20))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    p = tmp_path_factory.mktemp("tanh") / "tanh.tflite"
    p.write_bytes(conv.convert())
    return p


def test_unsupported_operator_refused_with_its_name(tanh_model, tmp_path, capsys):
    from firmware_bridge.nn_export import NetExportError, lower
    from firmware_bridge.tflite_graph import read_graph

    with pytest.raises(NetExportError, match=r"tanh\.tflite: operator \d+ TANH is not supported by the C export"):
        lower(read_graph(tanh_model.read_bytes(), str(tanh_model)), str(tanh_model))
    # through the CLI: one line, exit code 2 (the model has no ser_edge metadata: give it a sidecar)
    tanh_model.with_suffix(".json").write_text(
        '{"labels": ["a", "b", "c", "d"], "frontend": {}, "input_scale": 0.1, "input_zero_point": 0}')
    from edge_runtime.cli import main

    assert main(["export", "--model", str(tanh_model), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "operator" in err and "TANH is not supported" in err
    with pytest.raises(ExportError, match="TANH"):
        export_c(str(tanh_model), None, tmp_path / "o2")


def test_cortex_m4_kernels_bit_exact_under_qemu():
    """The shipping code path (Cortex-M4 build: SMLAD / SXTB16 / SSAT) in QEMU mps2-an386, every
    window's scores == tflite-micro; instructions per inference counted with -icount."""
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        require_tool(tool)
    require_module("tflite_micro")
    from firmware_bridge.nn_m4 import run_m4
    from edge_runtime.interpreter import run_tflm

    data = DEFAULT_MODEL.read_bytes()
    wins = audio_windows(DEFAULT_MODEL, seconds=8.0)
    wins = np.concatenate([wins, np.random.default_rng(1).integers(-128, 128, (4,) + wins.shape[1:]).astype(np.int8)])
    r = run_m4(data, wins, str(DEFAULT_MODEL), profile=True)
    np.testing.assert_array_equal(r.scores, run_tflm(data, wins))
    n = r.instructions_per_inference
    assert len(n) == len(wins) and max(n) - min(n) < 0.01 * min(n)  # data-independent cost
    assert 1e6 < min(n) < 6e6  # regression guard (bench/firmware.py records the exact figure)
    assert set(r.per_op) >= {"1 CONV_2D", "6 UNIDIRECTIONAL_SEQUENCE_LSTM"}


def test_c_backend_of_edge_runtime_matches_tflm(tmp_path, capsys):
    """`ser-edge run --backend c` (no TFLite package involved) prints exactly what the tflite-micro
    backend prints for the same clip: same windows, same probabilities."""
    require_module("tflite_micro")
    sf = require_module("soundfile")
    from edge_runtime.cli import main
    from edge_runtime.interpreter import available_backends

    assert "c" in available_backends()
    wav = tmp_path / "clip.wav"
    sf.write(str(wav), speech_with_pauses(6.0), 16000)
    outs = {}
    for backend in ("c", "tflm"):
        assert main(["run", "--backend", backend, str(wav)]) == 0
        recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
        outs[backend] = [{k: v for k, v in r.items() if not k.endswith("_ms") and k != "time"} for r in recs]
    assert len(outs["c"]) >= 4 and outs["c"] == outs["tflm"]  # labels, int8 scores, probabilities


def _mbqm_reference(x: int, m: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier written out literally (Python integers)."""
    left, right = max(shift, 0), max(-shift, 0)
    x = ((x << left) + 2**31) % 2**32 - 2**31  # int32 wrap, as the C shifts an unsigned value
    ab = x * m
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    v = ab + nudge
    hi = (abs(v) // 2**31) * (1 if v >= 0 else -1)  # C++ integer division truncates toward zero
    mask = (1 << right) - 1
    rem, thr = hi & mask, (mask >> 1) + (1 if hi < 0 else 0)
    return (hi >> right) + (1 if rem > thr else 0)


def test_requantize_matches_tflite_definition_on_edge_values():
    """ser_nn_requantize (one add + shift instead of gemmlowp's remainder/threshold form) equals
    the literal definition, including accumulators near INT32_MIN / INT32_MAX (its slow path)."""
    import ctypes

    from firmware_bridge.nn_host import CModel

    f = CModel.from_file(DEFAULT_MODEL).lib.ser_nn_requantize
    f.restype, f.argtypes = ctypes.c_int32, [ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]
    rng = np.random.default_rng(3)
    edge = [-2**31, -2**31 + 1, -1, 0, 1, 2**31 - 1, 2**31 - 2, 2**30, -2**30]
    xs = list(rng.integers(-2**31, 2**31, 4000)) + list(rng.integers(-70000, 70000, 4000)) + edge * 40
    for i, x in enumerate(xs):
        m = int(rng.integers(2**30, 2**31))
        shift = int(rng.integers(-31, 1)) if i % 5 else int(rng.integers(0, 3))
        x = int(x) if shift <= 0 else int(x) >> 3
        assert f(x, m, shift) == _mbqm_reference(x, m, shift), (x, m, shift)


def test_memory_plan_never_overlaps_live_buffers():
    from firmware_bridge.nn_export import ALIGN, Buffer, plan_memory

    rng = np.random.default_rng(5)
    for _ in range(200):
        bufs = []
        for i in range(int(rng.integers(1, 25))):
            a = int(rng.integers(0, 30))
            bufs.append(Buffer(f"b{i}", int(rng.integers(1, 5000)), a, a + int(rng.integers(0, 6))))
        total = plan_memory(bufs)
        for b in bufs:
            assert b.offset % ALIGN == 0 and b.offset + b.size <= total
        for i, p in enumerate(bufs):
            for q in bufs[i + 1:]:
                if not (p.last < q.first or q.last < p.first):  # both alive at some operator
                    assert p.offset + p.size <= q.offset or q.offset + q.size <= p.offset, (p, q)
        assert total <= sum((b.size + ALIGN - 1) // ALIGN * ALIGN for b in bufs)


def _convert_int8(km, input_shape, path):
    tf = require_module("tensorflow")
    conv = tf.lite.TFLiteConverter.from_keras_model(km)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.normal(size=(1, *input_shape)).astype(np.float32)] for _ in range(30))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def generated_models(tmp_path_factory):
    """Real int8 models (tf-keras -> TFLite converter) that exercise the other kernels:
    "addcat": ADD, SUB, CONCATENATION, bias-free and 3-D FULLY_CONNECTED;
    "odd": sizes that are not multiples of 4 (remainder rows, padded columns), dilated SAME conv
    with RELU6, AVERAGE_POOL_2D with SAME padding, strided conv, 5 outputs."""
    keras = require_module("tf_keras")
    L = keras.layers
    d = tmp_path_factory.mktemp("generated")
    inp = keras.Input((6, 16), batch_size=1)
    d1, d2 = L.Dense(16)(inp), L.Dense(16, activation="relu")(inp)
    cat = L.Concatenate(axis=-1)([L.Add()([d1, d2]), L.Subtract()([d1, d2]), d1])
    addcat = keras.Model(inp, L.Dense(4)(L.Flatten()(cat)))
    inp = keras.Input((9, 7), batch_size=1)
    c = L.Conv1D(6, 3, padding="same", activation="relu6", dilation_rate=2)(inp)
    c = L.Conv1D(5, 2, strides=2, padding="same")(L.AveragePooling1D(2, padding="same")(c))
    odd = keras.Model(inp, L.Dense(5)(L.Flatten()(c)))
    return {"addcat": (_convert_int8(addcat, (6, 16), d / "addcat.tflite"), {"ADD", "SUB", "CONCATENATION"}),
            "odd": (_convert_int8(odd, (9, 7), d / "odd.tflite"), {"AVERAGE_POOL_2D", "CONV_2D"})}


@pytest.mark.parametrize("which", ["addcat", "odd"])
def test_generated_models_bit_exact(generated_models, which):
    require_module("tflite_micro")
    from firmware_bridge.nn_host import CModel
    from firmware_bridge.tflite_graph import read_graph
    from edge_runtime.interpreter import run_tflm

    path, ops = generated_models[which]
    data = path.read_bytes()
    assert ops <= {o.name for o in read_graph(data).operators}
    m = CModel(data, which)
    wins = np.random.default_rng(2).integers(-128, 128, (300, *m.input_shape[1:])).astype(np.int8)
    want = run_tflm(data, wins)
    np.testing.assert_array_equal(m.invoke_many(wins), want)
    if which == "odd" and (FULL_ENV or (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc"))):
        from firmware_bridge.nn_m4 import run_m4  # the DSP build's remainder paths too

        require_tool("qemu-system-arm")
        require_tool("arm-none-eabi-gcc")
        np.testing.assert_array_equal(run_m4(data, wins[:40], which).scores, want[:40])
