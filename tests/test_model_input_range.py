"""The int8 input range taken from percentiles of the calibration windows (model_build.convert.InputRange):
the converter sets the input scale from it, the default is the converter's own min/max, the runtime's
integer quantiser saturates the outliers, and QAT rounds its input over the same range."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_module

from model_build.convert import InputRange


def _windows(seed: int = 0, n: int = 60, t: int = 12, f: int = 4) -> np.ndarray:
    """Log-mel-like windows: the bulk around 2 +- 5 log2 units, a few onsets far above and floor values far below."""
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 5.0, size=(n, t, f)).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 6, replace=False)] = np.float32(48.0)
    flat[rng.choice(flat.size, 6, replace=False)] = np.float32(-40.0)
    return x


def _tflite_scale(lo: float, hi: float) -> float:
    """TFLite's asymmetric int8 scale of a calibrated range (bench/input_range.py's grid, checked against the
    converter below)."""
    from bench.input_range import int8_grid

    return int8_grid(lo, hi)[0]


def test_bounds_are_min_max_by_default_and_percentiles_otherwise():
    x = _windows()
    assert InputRange().bounds(x) == (float(x.min()), float(x.max()))
    assert InputRange().clip(x) is x  # min/max: the calibration windows go to the converter untouched
    lo, hi = InputRange(1.0).bounds(x)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(x.astype(np.float64), [1.0, 99.0])))
    assert x.min() < lo < hi < x.max()
    c = InputRange(1.0).clip(x)
    assert c.min() == pytest.approx(lo) and c.max() == pytest.approx(hi)
    inside = (x >= lo) & (x <= hi)
    np.testing.assert_array_equal(c[inside], x[inside])  # only the outliers move
    rec = InputRange(1.0).record(x)
    assert rec["percentile"] == 1.0 and rec["lo"] == pytest.approx(lo, abs=1e-5) and rec["n_windows"] == len(x)
    assert "percentiles 1/99" in rec["method"] and "min/max" in InputRange().record(x)["method"]
    assert InputRange.from_metadata({"input_range": rec}) == InputRange(1.0)
    assert InputRange.from_metadata({}) == InputRange()  # a model from before the option: min/max


@pytest.mark.parametrize("bad", [-0.5, 50, 75.0, float("nan"), float("inf"), True, "1"])
def test_bad_percentile_is_refused(bad):
    with pytest.raises(ValueError, match="input range percentile"):
        InputRange(bad)


def _dense_model(t: int, f: int):
    import tf_keras

    inp = tf_keras.Input((t, f), batch_size=1)
    h = tf_keras.layers.Dense(3)(tf_keras.layers.Flatten()(inp))
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Model(inp, h)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_conversion_takes_the_percentile_range_and_the_default_is_unchanged():
    """Real TensorFlow conversion: the percentile option shrinks the input scale to the percentile range,
    and the default is byte for byte the conversion before the option (the converter's own min/max)."""
    require_module("tensorflow")
    require_module("tf_keras")
    import tensorflow as tf

    from model_build.convert import convert_int8, io_quant, representative_dataset

    x = _windows()
    m = _dense_model(*x.shape[1:])
    default, _ = convert_int8(m, x, n_calib=len(x), check=False)
    # the conversion as it was written before InputRange existed
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative_dataset(x, len(x))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    assert default == conv.convert()
    q0 = io_quant(default)
    assert q0["input_scale"] == pytest.approx(_tflite_scale(x.min(), x.max()), rel=1e-5)

    narrow, _ = convert_int8(m, x, n_calib=len(x), check=False, input_range=InputRange(0.5))
    q1 = io_quant(narrow)
    lo, hi = InputRange(0.5).bounds(x)
    assert q1["input_scale"] == pytest.approx(_tflite_scale(lo, hi), rel=1e-5)
    assert q1["input_scale"] < 0.5 * q0["input_scale"]  # the outliers no longer set the step
    # the zero point still maps 0.0 exactly and the range's ends to the int8 ends; bench/input_range.py's grid
    # (what its input-only agreement rounds to) is the converter's
    from bench.input_range import int8_grid

    assert int8_grid(lo, hi) == pytest.approx((q1["input_scale"], q1["input_zero_point"]), rel=1e-5)
    assert int8_grid(float(x.min()), float(x.max()))[1] == q0["input_zero_point"]
    assert (lo / q1["input_scale"] + q1["input_zero_point"]) == pytest.approx(-128, abs=1.0)
    assert (hi / q1["input_scale"] + q1["input_zero_point"]) == pytest.approx(127, abs=1.0)


def test_runtime_quantiser_saturates_the_outliers_of_a_percentile_range():
    """The device side needs no change: FeatureQuantizer (what the runtime and the C firmware compute)
    clamps features beyond the narrower range to -128/127 and quantises the rest on the finer step."""
    from bench.input_range import int8_grid, round_trip
    from edge_runtime.interpreter import FeatureQuantizer

    x = _windows().astype(np.float64)
    scale, zp = int8_grid(*InputRange(0.5).bounds(x))  # the converter's grid (checked above)
    lo, hi = InputRange(0.5).bounds(x)
    frac_bits = 16
    q16 = np.rint(x * 2 ** frac_bits).astype(np.int32)  # the front end's Q16 log2 units
    codes = FeatureQuantizer(2.0 ** -frac_bits, scale, zp)(q16).astype(int)
    assert set(codes[x >= 48.0]) == {127} and set(codes[x <= -40.0]) == {-128}
    inside = (x > lo + scale) & (x < hi - scale)
    np.testing.assert_array_equal(codes[inside], np.rint(q16[inside] * 2.0 ** -frac_bits / scale) + zp)
    assert np.abs((codes[inside] - zp) * scale - x[inside]).max() <= scale / 2 + 1e-6
    # bench/input_range.py's input-only look rounds and saturates as the runtime does
    np.testing.assert_allclose(round_trip(x, scale, zp), (codes - zp) * scale, atol=1e-5)


@pytest.mark.slow
def test_reconvert_records_the_rule_and_qat_rounds_the_input_over_the_same_range(tiny_model_build, tmp_path):
    """A kept model re-converted with a percentile range: smaller input scale, the rule in its metadata
    (and kept by a later re-conversion that names none), and QATForward's input range is the one the
    converter used (one owner: InputRange.bounds)."""
    import shutil

    from edge_runtime.model_metadata import read_metadata_json
    from model_build.pipeline import load_float, reconvert
    from model_build.qat import QATForward

    src = tiny_model_build.path
    work = tmp_path / "tiny.tflite"
    shutil.copyfile(src, work)
    shutil.copyfile(src.with_name("tiny_float.npz"), tmp_path / "tiny_float.npz")
    before = read_metadata_json(work.read_bytes())
    assert before["input_range"]["percentile"] == 0.0  # a build records its rule (min/max by default)
    out, _ = reconvert(work, tmp_path / "p1.tflite", input_range=InputRange(1.0))
    md = read_metadata_json(out.read_bytes())
    assert md["input_range"]["percentile"] == 1.0
    assert md["input_scale"] < before["input_scale"]
    keras, _, calib = load_float(tmp_path / "tiny_float.npz")
    lo, hi = QATForward(keras, dropout=0.0, input_range=InputRange(1.0)).measure_ranges(calib)["input"]
    assert md["input_scale"] == pytest.approx(_tflite_scale(lo, hi), rel=1e-5)
    again, _ = reconvert(out, tmp_path / "again.tflite")  # no rule given: the recorded one
    md2 = read_metadata_json(again.read_bytes())
    assert md2["input_range"]["percentile"] == 1.0 and md2["input_scale"] == md["input_scale"]


def test_cv_option_is_checked_and_part_of_the_recipe(tmp_path):
    """bench/accuracy.py's --input-range-percentile: a bad value is one usage error, a CV with another
    value is another recipe, and a run from before the option counts as min/max (merges with 0 only)."""
    import json

    from bench.accuracy import effective_config, merge_results, parse_args
    from bench.pretrained import RECIPE, cv_matches, recipe_flags

    with pytest.raises(SystemExit) as ei:
        parse_args(["--input-range-percentile", "60"])
    assert ei.value.code == 2
    assert parse_args(["--input-range-percentile", "0.01"]).input_range_percentile == 0.01
    assert effective_config({})["input_range_percentile"] == 0.0

    cfg = vars(parse_args(recipe_flags(RECIPE) + ["--seeds", "0", "--no-tess"]))
    other = RECIPE.get("input_range_percentile", 0.0) + 0.5
    assert cv_matches({"config": cfg, "n_folds_done": 5}, RECIPE)
    assert not cv_matches({"config": {**cfg, "input_range_percentile": other}, "n_folds_done": 5}, RECIPE)

    def write(name, seed, cfg):
        p = tmp_path / name
        p.write_text(json.dumps({"config": {**cfg, "folds": "0"},
                                 "ravdess_folds": [{"fold": 0, "uar_int8": 0.5, "clips_without_label": 0, "seed": seed}]}))
        return p

    old = write("old.json", 0, {k: v for k, v in cfg.items() if k != "input_range_percentile"})
    assert merge_results([old, write("minmax.json", 1, {**cfg, "input_range_percentile": 0.0})])["seeds_done"] == [0, 1]
    with pytest.raises(SystemExit, match="input_range_percentile"):
        merge_results([old, write("p.json", 2, {**cfg, "input_range_percentile": 0.01})])
